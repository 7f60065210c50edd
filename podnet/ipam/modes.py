"""The built-in IPAM modes: importing this module registers them (see ``podnet.registry``)."""

from podnet.ipam import cluster_pool, crd, eni, kubernetes, multi_pool  # noqa: F401
