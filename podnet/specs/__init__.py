"""What podnet's pluggable parts are, as plain facts: the specs of the routing modes
(``routing.py``), tunnel protocols (``tunnel.py``; one module per protocol, listed in
``tunnels.py``) and IPAM modes (``ipam.py``), registered in ``podnet.registry``.

Importing a spec costs nothing: no kernel, datastore or third-party code. Config validates
against specs, and status, capture, diagnose and the pod guard read them, so none of those names
a protocol or a mode; the implementations (``podnet.datapath``, ``podnet.ipam``) are loaded only
where something plans or touches the kernel.
"""
