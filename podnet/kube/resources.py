"""podnet's custom resources as lightkube types (deploy/kubernetes/crds.yaml defines them)."""

from __future__ import annotations

from lightkube.generic_resource import create_global_resource

GROUP = "podnet.io"
VERSION = "v1"

PodnetNode = create_global_resource(group=GROUP, version=VERSION, kind="PodnetNode", plural="podnetnodes")
PodnetIPPool = create_global_resource(
    group=GROUP, version=VERSION, kind="PodnetIPPool", plural="podnetippools"
)
