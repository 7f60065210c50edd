"""The node's kernel datapath: a pure planner (``plan``), a reconciler that applies its output
(``reconcile``), node-level devices (``nodesetup``), per-pod veths (``endpoint``), MTU maths
(``mtu``), routing modes and tunnel protocols (``modes``) and netlink helpers (``kernel``).

Importing this package imports nothing else, so light callers (the CNI shim) stay light.
"""
