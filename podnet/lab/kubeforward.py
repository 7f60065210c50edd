"""A TCP forwarder from the machine's 127.0.0.1 into a lab namespace: how tools outside the lab
(podnet's lab commands, tests, a user's ``kubectl --kubeconfig <lab>/kubeconfig``) reach the lab's
API server, which listens only on the control-plane host's underlay address.

Design fact: the process binds its listener on 127.0.0.1 first (the machine's loopback; no
address, route or rule is added anywhere), then moves itself into the lab namespace, so every
connection it opens is made there. TLS goes end to end (the API server's certificate names
127.0.0.1). The lab starts it, records its PID and stops it with the lab.

    python -m podnet.lab.kubeforward --netns pn-lab-cp --target 172.16.0.10:6443 --port-file F
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import sys
from pathlib import Path

from podnet.util.netns import NETNS_DIR, enter_for_good

CHUNK = 65536


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            writer.close()


async def _serve(listener: socket.socket, host: str, port: int) -> None:
    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
        except (OSError, TimeoutError):
            client_w.close()
            return
        await asyncio.gather(_pump(client_r, up_w), _pump(up_r, client_w))

    server = await asyncio.start_server(handle, sock=listener)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--netns", required=True, help="the lab namespace to connect from")
    ap.add_argument("--target", required=True, help="ADDRESS:PORT inside that namespace")
    ap.add_argument("--port-file", required=True, type=Path, help="where to write the local port")
    ap.add_argument("--port", type=int, default=0, help="local port to try first (0: any free one)")
    args = ap.parse_args(argv)
    host, _, port = args.target.rpartition(":")
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:  # in the namespace we were started in: loopback only
        listener.bind(("127.0.0.1", args.port))
    except OSError:  # the earlier port is taken now: any free one (the lab rewrites its kubeconfig)
        listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    enter_for_good(NETNS_DIR / args.netns)  # from here on, every socket is made in the lab
    tmp = args.port_file.with_suffix(".tmp")
    tmp.write_text(f"{listener.getsockname()[1]}\n")
    os.replace(tmp, args.port_file)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(listener, host.strip("[]"), int(port)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
