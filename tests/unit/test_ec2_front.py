"""The lab's EC2 front against moto in-process: AWS's limits and errors where moto has none, and
the topology's ``cloud:`` section."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from podnet.lab.cloudtopo import VPC_MTU
from podnet.lab.ec2front import Ec2Front, Refused
from podnet.lab.topology import TopologyError, load_topology, parse_topology


@pytest.fixture
def ec2(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    import boto3
    from moto import mock_aws

    for key, value in {"AWS_ACCESS_KEY_ID": "t", "AWS_SECRET_ACCESS_KEY": "t"}.items():
        monkeypatch.setenv(key, value)
    with mock_aws():
        yield boto3.client("ec2", region_name="us-east-1")


@pytest.fixture
def instance(ec2: Any) -> dict[str, str]:
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.8.0/28", AvailabilityZone="us-east-1a")["Subnet"]
    nic = {"DeviceIndex": 0, "SubnetId": subnet["SubnetId"], "PrivateIpAddress": "10.0.8.10"}
    inst = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1, InstanceType="m5.large",
                             NetworkInterfaces=[nic])["Instances"][0]  # fmt: skip
    return {"subnet": subnet["SubnetId"], "instance": inst["InstanceId"]}


def front(ec2: Any, tmp_path: Path) -> Ec2Front:
    return Ec2Front(ec2, tmp_path / "calls.jsonl", lambda: None)


def call(ec2: Any, f: Ec2Front, action: str, **params: Any) -> Any:
    """What the front passes on, performed on moto (as the server does)."""
    flat = [("Action", action), *((k, str(v)) for k, v in params.items())]
    checked = dict(f.check(action, flat))
    if action == "CreateNetworkInterface":
        return ec2.create_network_interface(
            SubnetId=checked["SubnetId"], PrivateIpAddress=checked["PrivateIpAddress"]
        )
    if action == "AssignPrivateIpAddresses":
        explicit = [v for k, v in checked.items() if k.startswith("PrivateIpAddress.")]
        return ec2.assign_private_ip_addresses(NetworkInterfaceId=checked["NetworkInterfaceId"],
                                               PrivateIpAddresses=explicit)  # fmt: skip
    if action == "AttachNetworkInterface":
        index = int(checked["DeviceIndex"])
        eni_id, instance_id = checked["NetworkInterfaceId"], checked["InstanceId"]
        return ec2.attach_network_interface(
            NetworkInterfaceId=eni_id, InstanceId=instance_id, DeviceIndex=index
        )
    raise AssertionError(action)


def test_addresses_are_free_and_outside_the_reserved_ones(
    ec2: Any, instance: dict[str, str], tmp_path: Path
) -> None:
    f = front(ec2, tmp_path)
    eni = call(ec2, f, "CreateNetworkInterface", SubnetId=instance["subnet"])["NetworkInterface"]
    assert eni["PrivateIpAddress"] == "10.0.8.4"  # .0-.3 are AWS's; .10 is the instance's
    call(ec2, f, "AttachNetworkInterface", NetworkInterfaceId=eni["NetworkInterfaceId"],
         InstanceId=instance["instance"], DeviceIndex=1)  # fmt: skip
    call(ec2, f, "AssignPrivateIpAddresses", NetworkInterfaceId=eni["NetworkInterfaceId"],
         SecondaryPrivateIpAddressCount=6)  # fmt: skip
    got = ec2.describe_network_interfaces(NetworkInterfaceIds=[eni["NetworkInterfaceId"]])[
        "NetworkInterfaces"
    ][0]
    addresses = sorted(ipaddress.ip_address(p["PrivateIpAddress"]) for p in got["PrivateIpAddresses"])
    assert [str(a) for a in addresses] == ["10.0.8.4", "10.0.8.5", "10.0.8.6", "10.0.8.7", "10.0.8.8",
                                           "10.0.8.9", "10.0.8.11"]  # fmt: skip
    with pytest.raises(Refused) as full:  # 7 on the ENI + 4 > 10 per ENI of an m5.large
        call(ec2, f, "AssignPrivateIpAddresses", NetworkInterfaceId=eni["NetworkInterfaceId"],
             SecondaryPrivateIpAddressCount=4)  # fmt: skip
    assert full.value.code == "PrivateIpAddressLimitExceeded"
    spare = ec2.create_network_interface(SubnetId=instance["subnet"], PrivateIpAddress="10.0.8.12")
    spare_id = spare["NetworkInterface"]["NetworkInterfaceId"]
    with pytest.raises(Refused) as subnet:  # a /28 has 16 - 5 reserved = 11 usable: 2 are left
        call(
            ec2, f, "AssignPrivateIpAddresses", NetworkInterfaceId=spare_id, SecondaryPrivateIpAddressCount=3
        )
    assert subnet.value.code == "InsufficientFreeAddressesInSubnet"


def test_limits_of_the_instance_type(ec2: Any, instance: dict[str, str], tmp_path: Path) -> None:
    f = front(ec2, tmp_path)
    enis = [
        ec2.create_network_interface(SubnetId=instance["subnet"], PrivateIpAddress=f"10.0.8.{4 + i}")[
            "NetworkInterface"
        ]
        for i in range(3)
    ]
    for index, eni in enumerate(enis[:2], start=1):
        call(ec2, f, "AttachNetworkInterface", NetworkInterfaceId=eni["NetworkInterfaceId"],
             InstanceId=instance["instance"], DeviceIndex=index)  # fmt: skip
    with pytest.raises(Refused, match=r"exceeds the limit for m5\.large") as third:
        call(ec2, f, "AttachNetworkInterface", NetworkInterfaceId=enis[2]["NetworkInterfaceId"],
             InstanceId=instance["instance"], DeviceIndex=3)  # fmt: skip
    assert third.value.code == "AttachmentLimitExceeded"
    with pytest.raises(Refused, match="already has an interface attached at device index '1'"):
        call(ec2, f, "AttachNetworkInterface", NetworkInterfaceId=enis[2]["NetworkInterfaceId"],
             InstanceId=instance["instance"], DeviceIndex=1)  # fmt: skip
    params = [("NetworkInterfaceId", enis[0]["NetworkInterfaceId"]), ("SecondaryPrivateIpAddressCount", "10")]
    with pytest.raises(Refused) as over:
        f.check("AssignPrivateIpAddresses", params)  # 1 + 10 > 10 per ENI
    assert over.value.code == "PrivateIpAddressLimitExceeded"


def test_refusals_moto_does_not_make(ec2: Any, instance: dict[str, str], tmp_path: Path) -> None:
    f = front(ec2, tmp_path)
    eni = ec2.create_network_interface(SubnetId=instance["subnet"], PrivateIpAddress="10.0.8.4")[
        "NetworkInterface"
    ]
    with pytest.raises(Refused, match="primary IP address of an interface cannot be unassigned"):
        f.check("UnassignPrivateIpAddresses", [("NetworkInterfaceId", eni["NetworkInterfaceId"]),
                                               ("PrivateIpAddress.1", "10.0.8.4")])  # fmt: skip
    with pytest.raises(Refused, match="prefix delegation") as prefix:
        f.check("AssignPrivateIpAddresses", [("NetworkInterfaceId", eni["NetworkInterfaceId"]),
                                             ("Ipv4PrefixCount", "1")])  # fmt: skip
    assert prefix.value.code == "UnsupportedOperation"


def test_the_eni_example_as_a_topology() -> None:
    topo = load_topology("eni")
    assert topo.cloud is not None and str(topo.cloud.vpc_cidr) == "10.0.0.0/16"
    subnets = [n for n in topo.networks if n.vpc]
    assert [n.mtu for n in subnets] == [VPC_MTU] * 4
    assert {i.host for i in topo.cloud.instances} == {"node1", "node2", "cp"}
    assert topo.host("node1").gateway == ipaddress.IPv4Address("10.0.1.1")
    assert topo.host("world").gateway == ipaddress.IPv4Address("203.0.113.1")


BASE = {
    "cloud": {"vpc": {"cidr": "10.0.0.0/16", "subnets": [{"name": "a", "cidr": "10.0.1.0/24"}]}},
    "nodes": [{"name": "node1", "subnet": "a"}],
}


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"cloud": {"vpc": {"cidr": "10.0.0.0/16", "subnets": [{"name": "a", "cidr": "10.9.0.0/24"}]}}},
         "outside the VPC"),
        ({"nodes": [{"name": "node1", "subnet": "zz"}]}, "unknown subnet 'zz'"),
        ({"nodes": [{"name": "node1", "securityGroups": ["web"]}]}, "unknown group 'web'"),
        ({"networks": [{"name": "x", "cidr": "10.1.0.0/24"}]}, "makes its own"),
        ({"cloud": {"provider": "gcp", "vpc": BASE["cloud"]["vpc"]}}, "only aws"),
    ],
)  # fmt: skip
def test_cloud_errors_name_the_key(change: dict[str, Any], fragment: str) -> None:
    with pytest.raises(TopologyError, match=fragment):
        parse_topology({**BASE, **change})
