"""``podnet operator --ipam eni``: the only EC2 caller of ENI IPAM.

Per node that published an ENI spec (``store.eni``): find its instance (``instanceID``, else by
the node's address), the instance type's limits (DescribeInstanceTypes), its ENIs
(DescribeNetworkInterfaces), plan (``operator.eni_plan``), make at most one change, and publish
the node's status: ENIs and addresses, limits, what it needs, the release marks, and its last
EC2 calls and errors. Everything it decides from comes from EC2 and etcd, so a restarted
operator picks up where the last one stopped (only the excess timers start again).
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from podnet.config.eni import EniSettingError, EniSettings, parse_eni
from podnet.ipam.enimodel import Eni, Limits
from podnet.operator import eni_plan as ep
from podnet.store import eni as keys
from podnet.store.eni import EniState

log = logging.getLogger("podnet.operator.eni")

KEPT_CALLS = 20
MAX_BACKOFF = 30.0  # seconds between tries at most while EC2 keeps failing for a node
RESYNC_INTERVAL = 5.0  # seconds between looks at EC2 for a node whose etcd keys did not change
KEPT_ERRORS = 10
MANAGED_TAG = "podnet.io/node"


class Ec2Error(RuntimeError):
    """An EC2 call that failed: ``code`` is AWS's error code."""

    def __init__(self, action: str, code: str, message: str) -> None:
        super().__init__(f"{action}: {code}: {message}")
        self.action, self.code, self.message = action, code, message


def ec2_client(endpoint: str, region: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "ec2",
        region_name=region,
        endpoint_url=endpoint or None,
        config=Config(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=3, read_timeout=15),
    )


@dataclass
class _NodeMemory:
    instance: ep.Instance | None = None
    excess_since: float | None = None
    calls: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    vpc_cidrs: list[str] = field(default_factory=list)
    synced: float = 0.0  # when EC2 was last read for the node
    marks: dict[str, dict[str, Any]] | None = None  # address -> {"eni", "epoch"}; None: not read yet
    epoch: int = 0  # the last release mark's epoch
    swept: bool = False  # orphan ENIs of this node looked for since start
    failures: int = 0  # EC2 failures in a row
    backoff_until: float = 0.0
    pending: bool = True  # the last plan left work for the next round (an action, a shortfall, a timer)


class EniOperator:
    def __init__(
        self, state: EniState, ec2: Any, defaults: EniSettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        """``state``: the datastore's ENI documents (etcd keys or PodnetNode fields): the one
        operator serves both."""
        self.state = state
        self.ec2 = ec2
        self.defaults = defaults  # the operator's release settings (awsReleaseExcessIPs, the delay)
        self.clock = clock
        self._wake = threading.Event()
        self._view = state.view(None, self._wake.set)
        self._nodes: dict[str, _NodeMemory] = {}
        self._limits: dict[str, Limits] = {}

    # ---- EC2 -----------------------------------------------------------------------------------

    def _call(self, memory: _NodeMemory | None, action: str, **params: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        fn = getattr(self.ec2, _snake(action))
        mutating = not action.startswith("Describe")
        try:
            answer = fn(**params)
        except ClientError as exc:
            err = exc.response.get("Error", {})
            failure = Ec2Error(action, str(err.get("Code", "?")), str(err.get("Message", exc)))
        except BotoCoreError as exc:
            failure = Ec2Error(action, type(exc).__name__, str(exc))
        else:
            if mutating and memory is not None:
                memory.calls.append({"time": time.time(), "action": action, **_brief(params)})
                del memory.calls[:-KEPT_CALLS]
                log.info("EC2 %s %s", action, _brief(params))
            return answer
        if memory is not None:
            memory.errors.append({"time": time.time(), "action": action, "code": failure.code,
                                  "message": failure.message})  # fmt: skip
            del memory.errors[:-KEPT_ERRORS]
        log.warning("EC2 %s failed: %s %s", action, failure.code, failure.message)
        raise failure

    def _instance(self, node: str, spec: EniSettings, node_ip: str, memory: _NodeMemory) -> ep.Instance:
        if memory.instance is not None:
            return memory.instance
        filters = (
            [{"Name": "instance-id", "Values": [spec.instance_id]}]
            if spec.instance_id
            else [{"Name": "private-ip-address", "Values": [node_ip]}]
        )
        found = [
            i
            for r in self._call(memory, "DescribeInstances", Filters=filters)["Reservations"]
            for i in r["Instances"]
        ]
        if not found:
            how = (
                f"instance {spec.instance_id}" if spec.instance_id else f"an instance with address {node_ip}"
            )
            error = Ec2Error(
                "DescribeInstances",
                "NotFound",
                f"node {node}: no {how} in EC2; set eni.instanceID in its config",
            )
            memory.errors.append({"time": time.time(), "action": error.action, "code": error.code,
                                  "message": error.message})  # fmt: skip
            del memory.errors[:-KEPT_ERRORS]
            raise error
        inst = found[0]
        eth0 = next((n for n in inst.get("NetworkInterfaces", []) if n["Attachment"]["DeviceIndex"] == 0), {})
        memory.instance = ep.Instance(
            id=inst["InstanceId"],
            type=inst["InstanceType"],
            az=inst["Placement"]["AvailabilityZone"],
            vpc_id=inst.get("VpcId", ""),
            subnet_id=inst.get("SubnetId", ""),
            security_groups=tuple(g["GroupId"] for g in eth0.get("Groups", inst.get("SecurityGroups", []))),
        )
        return memory.instance

    def _limits_of(self, type_: str, memory: _NodeMemory) -> Limits:
        if type_ not in self._limits:
            info = self._call(memory, "DescribeInstanceTypes", InstanceTypes=[type_])["InstanceTypes"][0]
            net = info["NetworkInfo"]
            self._limits[type_] = Limits(
                int(net["MaximumNetworkInterfaces"]), int(net["Ipv4AddressesPerInterface"])
            )
        return self._limits[type_]

    def _enis(self, instance: ep.Instance, subnets: list[ep.Subnet], memory: _NodeMemory) -> tuple[Eni, ...]:
        answer = self._call(
            memory,
            "DescribeNetworkInterfaces",
            Filters=[{"Name": "attachment.instance-id", "Values": [instance.id]}],
        )
        cidrs = {s.id: s.cidr for s in subnets}
        found = []
        for n in answer["NetworkInterfaces"]:
            primary = ipaddress.IPv4Address(n["PrivateIpAddress"])
            secondary = sorted(
                ipaddress.IPv4Address(p["PrivateIpAddress"])
                for p in n.get("PrivateIpAddresses", [])
                if p["PrivateIpAddress"] != n["PrivateIpAddress"]
            )
            found.append(
                Eni(
                    id=n["NetworkInterfaceId"],
                    index=int(n["Attachment"]["DeviceIndex"]),
                    mac=n["MacAddress"].lower(),
                    subnet_id=n["SubnetId"],
                    subnet_cidr=cidrs.get(n["SubnetId"], ipaddress.IPv4Network(f"{primary}/32")),
                    primary=primary,
                    addresses=tuple(secondary),
                    security_groups=tuple(g["GroupId"] for g in n.get("Groups", [])),
                )
            )
        return tuple(sorted(found, key=lambda e: e.index))

    def _subnets(self, instance: ep.Instance, memory: _NodeMemory) -> list[ep.Subnet]:
        answer = self._call(
            memory, "DescribeSubnets", Filters=[{"Name": "vpc-id", "Values": [instance.vpc_id]}]
        )
        return [
            ep.Subnet(
                id=s["SubnetId"],
                cidr=ipaddress.IPv4Network(s["CidrBlock"]),
                az=s["AvailabilityZone"],
                vpc_id=s["VpcId"],
                available=int(s.get("AvailableIpAddressCount", 0)),
                tags=tuple(sorted((t["Key"], t["Value"]) for t in s.get("Tags", []))),
            )
            for s in answer["Subnets"]
        ]

    def _tagged_groups(self, spec: EniSettings, instance: ep.Instance, memory: _NodeMemory) -> list[str]:
        if not spec.security_group_tags or spec.security_groups:
            return []
        filters = [{"Name": "vpc-id", "Values": [instance.vpc_id]}]
        filters += [{"Name": f"tag:{k}", "Values": [v]} for k, v in spec.security_group_tags]
        return sorted(
            g["GroupId"]
            for g in self._call(memory, "DescribeSecurityGroups", Filters=filters)["SecurityGroups"]
        )

    def _vpc_cidrs(self, instance: ep.Instance, memory: _NodeMemory) -> list[str]:
        if not memory.vpc_cidrs:
            vpc = self._call(memory, "DescribeVpcs", VpcIds=[instance.vpc_id])["Vpcs"][0]
            blocks = [b["CidrBlock"] for b in vpc.get("CidrBlockAssociationSet", []) if b.get("CidrBlock")]
            memory.vpc_cidrs = blocks or [vpc["CidrBlock"]]
        return memory.vpc_cidrs

    # ---- one node ------------------------------------------------------------------------------

    def sync_node(self, node: str) -> None:
        memory = self._nodes.setdefault(node, _NodeMemory())
        memory.synced, memory.pending = self.clock(), True
        spec_doc = self._view.get_doc(node, keys.SPEC)
        node_ip = str(spec_doc.pop("nodeIP", "") or "")
        status = self._view.get_doc(node, keys.STATUS)
        if memory.marks is None:  # the first look since start: etcd has what the last run marked
            memory.marks = {
                a: dict(m) for a, m in (status.get("release") or {}).items() if isinstance(m, dict)
            }
            memory.epoch = max([int(m.get("epoch", 0)) for m in memory.marks.values()] + [0])
        try:
            spec = parse_eni(f"node {node} ENI spec", spec_doc)
        except EniSettingError as exc:  # keep what the node has; say what is wrong
            self._publish(node, memory, {**status, "problem": f"{exc.key}: {exc}"})
            return
        spec = _with_release(spec, self.defaults)
        try:
            instance = self._instance(node, spec, node_ip, memory)
            if not memory.swept:
                self._sweep_orphans(node, memory)
            limits = self._limits_of(instance.type, memory)
            subnets = self._subnets(instance, memory)
            enis = self._enis(instance, subnets, memory)
            state = self._state(spec, instance, limits, enis, self._view.get_doc(node, keys.USED), memory)
            plan = ep.plan_node(state, subnets, self._tagged_groups(spec, instance, memory))
            self._apply(node, plan, instance, memory)
            if any(not isinstance(a, ep.Mark | ep.Unmark) for a in plan.actions):
                enis = self._enis(instance, subnets, memory)
            on_enis = {str(a) for e in enis for a in e.addresses}
            memory.marks = {a: m for a, m in memory.marks.items() if a in on_enis}  # gone: no mark
            vpc = self._vpc_cidrs(instance, memory)
            self._publish(node, memory, _status(instance, limits, enis, plan, memory.marks, vpc))
            memory.pending = (
                bool(plan.actions) or plan.needed > 0 or memory.excess_since is not None or bool(memory.marks)
            )
            memory.failures = 0
        except Ec2Error as exc:
            memory.failures += 1
            memory.backoff_until = self.clock() + min(MAX_BACKOFF, 2.0**memory.failures)
            self._publish(node, memory, {**status, "release": dict(sorted(memory.marks.items()))})
            log.debug("node %s: %s", node, exc)

    def _sweep_orphans(self, node: str, memory: _NodeMemory) -> None:
        """ENIs this operator created for ``node`` that are attached nowhere (it was killed between
        CreateNetworkInterface and AttachNetworkInterface): deleted once per start."""
        filters = [
            {"Name": f"tag:{MANAGED_TAG}", "Values": [node]},
            {"Name": "status", "Values": ["available"]},
        ]
        for eni in self._call(memory, "DescribeNetworkInterfaces", Filters=filters)["NetworkInterfaces"]:
            if not (eni.get("Attachment") or {}).get("InstanceId"):
                self._call(memory, "DeleteNetworkInterface", NetworkInterfaceId=eni["NetworkInterfaceId"])
        memory.swept = True

    def _state(
        self, spec: EniSettings, instance: ep.Instance, limits: Limits, enis: tuple[Eni, ...],
        used_doc: dict[str, Any], memory: _NodeMemory,
    ) -> ep.NodeState:  # fmt: skip
        """The plan's input. Marks come from this operator's memory (it is their only writer; the
        watch may lag); an agent's "ready" counts only for the epoch of the current mark."""
        assert memory.marks is not None
        used = frozenset(ipaddress.IPv4Address(a) for a in (used_doc.get("used") or {}))
        marked = {ipaddress.IPv4Address(a): str(m.get("eni", "")) for a, m in memory.marks.items()}
        answers = used_doc.get("releaseReady") or {}
        ready = frozenset(
            ipaddress.IPv4Address(a)
            for a, epoch in (answers.items() if isinstance(answers, dict) else ())
            if a in memory.marks and int(memory.marks[a].get("epoch", -1)) == int(epoch)
        )
        probe = ep.NodeState(spec, instance, limits, enis, used, marked, ready)
        excess = ep.plan_node(probe, ()).excess
        now = self.clock()
        if excess > 0 and memory.excess_since is None:
            memory.excess_since = now
        elif excess <= 0:
            memory.excess_since = None
        held = now - memory.excess_since if memory.excess_since is not None else 0.0
        return ep.NodeState(spec, instance, limits, enis, used, marked, ready, held)

    def _apply(self, node: str, plan: ep.NodePlan, instance: ep.Instance, memory: _NodeMemory) -> None:
        """Run the plan's actions; the release marks change in ``memory`` as they go."""
        assert memory.marks is not None
        for action in plan.actions:
            if isinstance(action, ep.Assign):
                self._call(memory, "AssignPrivateIpAddresses", NetworkInterfaceId=action.eni_id,
                           SecondaryPrivateIpAddressCount=action.count)  # fmt: skip
            elif isinstance(action, ep.Create):
                self._create_attach(node, action, instance, memory)
            elif isinstance(action, ep.Mark):
                memory.epoch += 1
                memory.marks.update({str(a): {"eni": e, "epoch": memory.epoch} for a, e in action.addresses})
                memory.excess_since = None
            elif isinstance(action, ep.Unmark):
                for a in action.addresses:
                    memory.marks.pop(str(a), None)
            elif isinstance(action, ep.Unassign):
                self._call(memory, "UnassignPrivateIpAddresses", NetworkInterfaceId=action.eni_id,
                           PrivateIpAddresses=[str(a) for a in action.addresses])  # fmt: skip
                for a in action.addresses:
                    memory.marks.pop(str(a), None)

    def _create_attach(
        self, node: str, action: ep.Create, instance: ep.Instance, memory: _NodeMemory
    ) -> None:
        """Create, attach, assign: three calls (a failed attach deletes the new ENI again)."""
        created = self._call(
            memory, "CreateNetworkInterface", SubnetId=action.subnet_id, Groups=list(action.groups),
            Description=f"podnet: node {node}",
            TagSpecifications=[{"ResourceType": "network-interface",
                                "Tags": [{"Key": MANAGED_TAG, "Value": node}]}],
        )["NetworkInterface"]  # fmt: skip
        eni_id = created["NetworkInterfaceId"]
        try:
            self._call(memory, "AttachNetworkInterface", NetworkInterfaceId=eni_id, InstanceId=instance.id,
                       DeviceIndex=action.index)  # fmt: skip
        except Ec2Error:
            self._call(memory, "DeleteNetworkInterface", NetworkInterfaceId=eni_id)
            raise
        if action.count > 0:
            self._call(memory, "AssignPrivateIpAddresses", NetworkInterfaceId=eni_id,
                       SecondaryPrivateIpAddressCount=action.count)  # fmt: skip

    def _publish(self, node: str, memory: _NodeMemory, status: dict[str, Any]) -> None:
        status = {**status, "errors": list(memory.errors), "calls": list(memory.calls)}
        if self._view.get_doc(node, keys.STATUS) != status:
            self.state.write_status(node, status)

    # ---- the loop ------------------------------------------------------------------------------

    def run(self, stop: threading.Event, tick: float = 1.0, lead: Callable[[], bool] = lambda: True) -> None:
        """Until ``stop``; only while ``lead()`` says this operator may act (on Kubernetes, the
        holder of the operator's Lease: two would both call EC2 for the same node)."""
        self._view.start()
        if not self._view.wait_synced(30.0):
            log.warning("the watch of ENI nodes did not sync yet; going on")
        log.info("ENI operator running")
        woken = True
        while not stop.is_set():
            self._wake.clear()
            if not _leading(lead):
                woken = True  # when it leads again, every node is synced at once
                self._wake.wait(tick)
                continue
            for node in self._view.nodes():
                memory = self._nodes.get(node)
                now = self.clock()
                if memory is not None and now < memory.backoff_until:
                    continue  # EC2 kept failing for this node: wait (the status says why)
                if woken or memory is None or memory.pending or now - memory.synced >= RESYNC_INTERVAL:
                    try:
                        self.sync_node(node)
                    except Exception as exc:  # one node's trouble never stops the others
                        log.exception("node %s: %s", node, exc)
            woken = self._wake.wait(tick)
        self._view.stop()


def _leading(lead: Callable[[], bool]) -> bool:
    try:
        return lead()
    except Exception as exc:  # the API server away: do nothing rather than act beside another
        log.warning("cannot tell whether this operator leads: %s", exc)
        return False


def _with_release(spec: EniSettings, defaults: EniSettings) -> EniSettings:
    import dataclasses

    return dataclasses.replace(
        spec, release_excess=defaults.release_excess, release_delay=defaults.release_delay
    )


def _status(
    instance: ep.Instance, limits: Limits, enis: tuple[Eni, ...], plan: ep.NodePlan, marked: dict[str, Any],
    vpc_cidrs: list[str],
) -> dict[str, Any]:  # fmt: skip
    return {
        "instanceID": instance.id,
        "instanceType": instance.type,
        "availabilityZone": instance.az,
        "vpc": {"id": instance.vpc_id, "cidrs": vpc_cidrs},
        "limits": limits.to_json(),
        "enis": {e.id: e.to_json() for e in enis},
        "release": dict(sorted(marked.items())),
        "available": plan.available,
        "used": plan.used,
        "needed": max(0, plan.needed),
        "excess": max(0, plan.excess),
        "limitReached": plan.limit_reached,
        "problem": plan.problem,
    }


def _snake(action: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in action).lstrip("_")


def _brief(params: dict[str, Any]) -> dict[str, Any]:
    """A call's parameters for the status (no tags or descriptions)."""
    return {k: v for k, v in params.items() if k not in ("TagSpecifications", "Description", "Filters")}
