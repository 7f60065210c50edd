"""BGP for native routing: the node's speaker (a real BGP implementation, never a home-made one).

``settings`` parses Cilium-style settings, ``speaker`` runs the node's speaker under the agent
(registry of implementations keyed by name; ExaBGP today), ``birdc`` reads BIRD's answers for
the lab's routers. ``podnet bgp peers|routes`` is a verification command (``podnet.verify.bgp``):
this package sits below the agent and imports neither the agent nor the lab.
"""
