"""The lab's cloud: one process on the control-plane host that is the lab's EC2 and its network.

``python -m podnet.lab.cloud <lab>`` (started by ``lab up`` for a topology with ``cloud:``):
1. moto's EC2 server on the control plane's loopback (``MOTO_PORT``);
2. the VPC, its subnets, security groups and one instance per node and control-plane host, with
   the topology's addresses (``bootstrap``; the IDs go to ``cloud.json`` in the lab's directory);
3. the EC2 front (``lab.ec2front``) on ``127.0.0.1:FRONT_PORT``: the endpoint podnet's operator
   is given;
4. the hypervisor (``lab.vpc``): after every change through the front, and every
   ``SYNC_INTERVAL`` for changes made to moto behind its back, EC2's state becomes kernel state.

``ready`` appears in the lab's directory once the first sync has wired every instance's eth0.
``ec2_call`` runs one EC2 call inside the control plane's namespace (for tests and benches).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from podnet.lab import state as st
from podnet.lab.cloudtopo import DEFAULT_GROUP, VPC_ROUTER, Cloud
from podnet.lab.topology import CONTROL_PLANE, Topology
from podnet.util.proc import spawn

log = logging.getLogger("podnet.lab.cloud")

MOTO_PORT = 5000
FRONT_PORT = 8773
SYNC_INTERVAL = 2.0  # changes made through the front are applied at once; this catches the rest
READY_TIMEOUT = 60.0
AMI = "ami-12c6146b"  # one of moto's built-in images
HOST_TAG = "podnet-lab/host"
CREDENTIALS = {  # moto accepts any; the SDK wants some
    "AWS_ACCESS_KEY_ID": "podnet-lab",
    "AWS_SECRET_ACCESS_KEY": "podnet-lab",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def front_endpoint() -> str:
    """The EC2 endpoint inside the control plane's namespace."""
    return f"http://127.0.0.1:{FRONT_PORT}"


def ids_path(lab: str) -> Path:
    return st.lab_dir(lab) / "cloud.json"


def calls_path(lab: str) -> Path:
    return st.lab_dir(lab) / "logs" / "ec2-calls.jsonl"


def client(endpoint: str, region: str) -> Any:
    import boto3

    return boto3.client(
        "ec2", region_name=region, endpoint_url=endpoint,
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )  # fmt: skip


def bootstrap(ec2: Any, cloud: Cloud) -> dict[str, Any]:
    """The topology's VPC in EC2; returns the IDs by name."""
    vpc = ec2.create_vpc(CidrBlock=str(cloud.vpc_cidr))["Vpc"]["VpcId"]
    subnets = {}
    for s in cloud.subnets:
        tags = [{"Key": "Name", "Value": s.name}, *({"Key": k, "Value": v} for k, v in s.tags)]
        subnets[s.name] = ec2.create_subnet(
            VpcId=vpc, CidrBlock=str(s.cidr), AvailabilityZone=s.az,
            TagSpecifications=[{"ResourceType": "subnet", "Tags": tags}],
        )["Subnet"]["SubnetId"]  # fmt: skip
    groups = {}
    for g in cloud.security_groups:
        tags = [{"Key": "Name", "Value": g.name}, *({"Key": k, "Value": v} for k, v in g.tags)]
        groups[g.name] = ec2.create_security_group(
            GroupName=g.name, Description=f"lab group {g.name}", VpcId=vpc,
            TagSpecifications=[{"ResourceType": "security-group", "Tags": tags}],
        )["GroupId"]  # fmt: skip
    groups[DEFAULT_GROUP] = ec2.create_security_group(
        GroupName=DEFAULT_GROUP, Description="all traffic from inside the VPC", VpcId=vpc
    )["GroupId"]
    ec2.authorize_security_group_ingress(
        GroupId=groups[DEFAULT_GROUP],
        IpPermissions=[{"IpProtocol": "-1", "IpRanges": [{"CidrIp": str(cloud.vpc_cidr)}]}],
    )
    for g in cloud.security_groups:
        if g.ingress:
            ec2.authorize_security_group_ingress(
                GroupId=groups[g.name], IpPermissions=[r.permission(groups) for r in g.ingress]
            )
    instances = {}
    for inst in cloud.instances:
        nic = {"DeviceIndex": 0, "SubnetId": subnets[inst.subnet], "PrivateIpAddress": str(inst.address),
               "Groups": [groups[g] for g in inst.security_groups]}  # fmt: skip
        answer = ec2.run_instances(
            ImageId=AMI, MinCount=1, MaxCount=1, InstanceType=inst.instance_type, NetworkInterfaces=[nic],
            TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": HOST_TAG, "Value": inst.host},
                                                                      {"Key": "Name", "Value": inst.host}]}],
        )  # fmt: skip
        instances[inst.host] = answer["Instances"][0]["InstanceId"]
    return {"vpc": vpc, "subnets": subnets, "securityGroups": groups, "instances": instances}


class LabCloud:
    """The running cloud: EC2 (moto), the front, the hypervisor loop."""

    def __init__(self, topo: Topology) -> None:
        from podnet.lab.vpc import Hypervisor

        assert topo.cloud is not None
        self.topo, self.cloud = topo, topo.cloud
        self.changed = threading.Event()
        hosts = {h.name: st.ns_name(topo.name, h.name) for h in topo.hosts}
        self.hypervisor = Hypervisor(st.ns_name(topo.name, VPC_ROUTER), hosts)

    def run(self) -> None:
        from moto.server import ThreadedMotoServer

        from podnet.lab.ec2front import Ec2Front, serve

        server = ThreadedMotoServer(ip_address="127.0.0.1", port=MOTO_PORT, verbose=False)
        server.start()
        moto = client(f"http://127.0.0.1:{MOTO_PORT}", self.cloud.region)
        ids = bootstrap(moto, self.cloud)
        ids_path(self.topo.name).write_text(json.dumps(ids, indent=2, sort_keys=True))
        calls_path(self.topo.name).parent.mkdir(parents=True, exist_ok=True)
        front = Ec2Front(moto, calls_path(self.topo.name), self.changed.set)
        serve(front, f"http://127.0.0.1:{MOTO_PORT}", ("127.0.0.1", FRONT_PORT))
        self.hypervisor.setup_router([s.gateway for s in self.cloud.subnets])
        hosts = {v: k for k, v in ids["instances"].items()}
        first = True
        while True:
            self.changed.clear()  # a change from here on is seen by the next pass
            try:
                with front.lock:  # a consistent picture: no call is half done
                    ports, nft = self._desired(moto, hosts)
                self.hypervisor.apply(ports, nft)
                if first:
                    (st.lab_dir(self.topo.name) / "cloud.ready").write_text(str(os.getpid()))
                    log.info("cloud ready: %d ports", len(ports))
                    first = False
            except Exception as exc:  # the next round tries again
                log.exception("sync failed: %s", exc)
            self.changed.wait(SYNC_INTERVAL)

    def _desired(self, moto: Any, hosts: dict[str, str]) -> tuple[list[Any], str]:
        from podnet.lab.vpc import plan_ports, render_nft

        subnets = {
            s["SubnetId"]: ipaddress.IPv4Network(s["CidrBlock"]) for s in moto.describe_subnets()["Subnets"]
        }
        enis = moto.describe_network_interfaces()["NetworkInterfaces"]
        ports = plan_ports(enis, hosts, subnets)
        groups = {
            g["GroupId"]: g.get("IpPermissions") or []
            for g in moto.describe_security_groups()["SecurityGroups"]
        }
        return ports, render_nft(ports, groups, self.cloud.vpc_cidr, self.cloud.igw_ifname)


def main(argv: list[str]) -> int:
    import pickle

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    path = topology_path(argv[0])
    if not path.exists():
        print(f"no cloud topology for lab {argv[0]} ({path})", file=sys.stderr)
        return 2
    LabCloud(pickle.loads(path.read_bytes())).run()  # written by ensure_cloud, root's own file
    return 0


def topology_path(lab: str) -> Path:
    return st.lab_dir(lab) / "cloud-topology.pickle"


# ---- used by lab up --------------------------------------------------------------------------


def ensure_cloud(topo: Topology, state: st.LabState) -> int:
    """Start the lab's cloud unless it runs; wait until every instance is wired. Returns changes."""
    if topo.cloud is None:
        return 0
    rec = state.process("cloud")
    if rec is not None and rec.running():
        return 0
    import pickle

    ready = st.lab_dir(topo.name) / "cloud.ready"
    ready.unlink(missing_ok=True)
    saved = topology_path(topo.name)
    saved.parent.mkdir(parents=True, exist_ok=True)
    saved.write_bytes(pickle.dumps(topo))
    saved.chmod(0o600)
    cp_ns = st.ns_name(topo.name, topo.control_plane.name)
    argv = [sys.executable, "-m", "podnet.lab.cloud", topo.name]
    logfile = st.lab_dir(topo.name) / "logs" / "cloud.log"
    proc = spawn(argv, cp_ns, logfile, env=CREDENTIALS)
    state.add_process(st.ProcessRecord("cloud", proc.pid, cp_ns, argv, str(logfile)))
    deadline = time.monotonic() + READY_TIMEOUT
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            why = (
                f"exited ({proc.returncode})"
                if proc.poll() is not None
                else f"not ready after {READY_TIMEOUT:g}s"
            )
            tail = "\n    | ".join(["", *logfile.read_text(errors="replace").splitlines()[-30:]])
            raise RuntimeError(f"the lab's cloud (moto + VPC) {why}:{tail}")
        time.sleep(0.1)
    return 1


def ec2_call(lab: str, action: str, **params: Any) -> dict[str, Any]:
    """One EC2 call through the lab's front, made inside the control plane's namespace."""
    topo_ns = st.ns_name(lab, CONTROL_PLANE)  # the first control-plane host, where the cloud runs
    code = (
        "import json,sys; from podnet.lab.cloud import client, front_endpoint; "
        "c = client(front_endpoint(), sys.argv[3]); "
        "name = ''.join('_' + ch.lower() if ch.isupper() else ch for ch in sys.argv[1]).lstrip('_'); "
        "fn = getattr(c, name); "
        "print(json.dumps(fn(**json.loads(sys.argv[2])), default=str))"
    )
    region = params.pop("_region", "us-east-1")
    res = subprocess.run(
        ["ip", "netns", "exec", topo_ns, sys.executable, "-c", code, action, json.dumps(params), region],
        capture_output=True, text=True, timeout=60, env={**os.environ, **CREDENTIALS},
    )  # fmt: skip
    if res.returncode != 0:
        raise RuntimeError(
            f"EC2 {action} failed: {res.stderr.strip().splitlines()[-1] if res.stderr else '?'}"
        )
    return json.loads(res.stdout)  # type: ignore[no-any-return]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
