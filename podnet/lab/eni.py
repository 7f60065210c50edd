"""The lab's part in running the ENI operator: the lab's EC2 (``lab.cloud``: moto behind
``lab.ec2front``) as its endpoint, the cloud's region, and the credentials moto accepts
(``lab.cluster.OperatorLab``, named by the mode's spec)."""

from __future__ import annotations

from typing import Any

from podnet.lab.cloud import CREDENTIALS, front_endpoint
from podnet.lab.topology import Topology


class Ec2Lab:
    def settings(self, topo: Topology) -> dict[str, Any]:
        region = {"awsRegion": topo.cloud.region} if topo.cloud else {}
        return {"eni": {"ec2APIEndpoint": front_endpoint(), **region}}

    def env(self, topo: Topology) -> dict[str, str] | None:
        return dict(CREDENTIALS)


OPERATOR_LAB = Ec2Lab()
