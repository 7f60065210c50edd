"""A pod's servers for the NetworkPolicy tier: TCP and UDP on each port given, in the namespace
it is started in (``ip netns exec``). TCP: accept, send one byte, close; UDP: echo. Runs until
killed (the test that started it kills it by PID)."""

from __future__ import annotations

import selectors
import socket
import sys


def main(ports: list[int]) -> None:
    sel = selectors.DefaultSelector()
    for port in ports:
        for family, any_addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
            tcp = socket.socket(family, socket.SOCK_STREAM)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                tcp.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            tcp.bind((any_addr, port))
            tcp.listen(64)
            sel.register(tcp, selectors.EVENT_READ, "tcp")
            udp = socket.socket(family, socket.SOCK_DGRAM)
            if family == socket.AF_INET6:
                udp.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            udp.bind((any_addr, port))
            sel.register(udp, selectors.EVENT_READ, "udp")
    print("ready", flush=True)
    while True:
        for key, _ in sel.select():
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            try:
                if key.data == "tcp":
                    conn, _ = sock.accept()
                    with conn:
                        conn.sendall(b"k")
                else:
                    data, peer = sock.recvfrom(2048)
                    sock.sendto(data, peer)
            except OSError:
                continue


if __name__ == "__main__":
    main([int(p) for p in sys.argv[1:]])
