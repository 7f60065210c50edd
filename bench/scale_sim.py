"""Simulated nodes for bench/scale.py: node registrations written into a lab's etcd, no namespaces.

Runs inside the lab's control-plane namespace (``ip netns exec pn-<lab>-cp``) and talks to etcd on
127.0.0.1 there. Reads commands from stdin, one per line, and answers one JSON line each:

    add COUNT      register COUNT more simulated nodes as fast as it can -> {"added", "seconds"}
    metrics        etcd's put and txn counters                        -> {"puts", "txns"}
    quit           revoke the simulator's lease (every simulated node goes) and exit

Every simulated node is a complete registration (pod CIDR, VTEP MAC, router IP), as a real agent
publishes it, on one shared lease; its node address is ``--node-ip`` (an address that exists in
the lab), so whatever a real agent sends to a simulated peer stays inside the lab.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
import time
import urllib.request

from podnet.model import NodeInfo
from podnet.store import keys
from podnet.store.client import LeaseKeeper, Store, TlsFiles
from podnet.store.nodes import NodeRecord

SIM_POOL = ipaddress.ip_network("10.100.0.0/14")  # simulated nodes' pod CIDRs (/24s), inside the lab pool
MAX_NODES = 1 << (24 - SIM_POOL.prefixlen)


def sim_node(i: int, node_ip: ipaddress.IPv4Address) -> NodeRecord:
    """Simulated node ``i``: it asks the operator for its /24 (honoured: inside the pool), and
    publishes it as an agent does once the operator answered."""
    if i >= MAX_NODES:
        raise ValueError(f"at most {MAX_NODES} simulated nodes")
    cidr = ipaddress.IPv4Network((int(SIM_POOL.network_address) + (i << 8), 24))
    mac = f"02:5e:{(i >> 16) & 0xFF:02x}:{(i >> 8) & 0xFF:02x}:{i & 0xFF:02x}:01"
    node = NodeInfo(
        name=f"sim{i:05d}",
        ipv4=node_ip,
        vtep_mac=mac,
        pod_cidrs=(cidr,),
        router_ips=(cidr.network_address + 1,),
        labels=(("podnet.io/tunnel", "vxlan"),),
    )
    return NodeRecord(node, (cidr,))


def metrics(endpoint: str, tls: TlsFiles | None) -> dict[str, float]:
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
    if tls is not None:
        handlers.append(urllib.request.HTTPSHandler(context=tls.ssl_context()))
    text = urllib.request.build_opener(*handlers).open(f"{endpoint}/metrics", timeout=5)
    found = {"puts": 0.0, "txns": 0.0}
    for line in text.read().decode().splitlines():
        if line.startswith("etcd_mvcc_put_total "):
            found["puts"] = float(line.split()[1])
        elif line.startswith("etcd_mvcc_txn_total "):
            found["txns"] = float(line.split()[1])
    return found


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", default="http://127.0.0.1:2379")
    parser.add_argument("--node-ip", required=True)
    parser.add_argument("--tls", nargs=3, metavar=("CA", "CERT", "KEY"), help="mutual TLS files")
    args = parser.parse_args()
    node_ip = ipaddress.IPv4Address(args.node_ip)
    tls = TlsFiles(*args.tls) if args.tls else None
    store = Store(args.endpoint, timeout=10.0, tls=tls)
    lease = LeaseKeeper(store, ttl=60)
    count = 0
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "add":
            started = time.monotonic()
            for i in range(count, count + int(words[1])):
                record = sim_node(i, node_ip)
                store.put(keys.node_key(record.node.name), json.dumps(record.to_json()), lease=lease.lease_id)
            count += int(words[1])
            answer: dict[str, float] = {"added": count, "seconds": time.monotonic() - started}
        elif words[0] == "metrics":
            answer = metrics(args.endpoint, tls)
        elif words[0] == "quit":
            lease.close(revoke=True)
            store.close()
            print(json.dumps({"quit": True}), flush=True)
            return 0
        else:
            answer = {"error": f"unknown command {words[0]!r}"}  # type: ignore[dict-item]
        print(json.dumps(answer), flush=True)
    lease.close(revoke=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
