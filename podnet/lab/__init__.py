"""The lab: whole clusters out of network namespaces on one machine (topology, underlay, BIRD
routers, the cluster layer), and the lab's adapters for the commands above the product packages
(``view``: the cluster view of ``podnet status``, ``diagnose``, ...). Nothing below this package
imports it; ``podnet.cli`` chooses the lab adapter when ``--lab`` is given."""
