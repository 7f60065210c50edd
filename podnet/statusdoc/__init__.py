"""The typed status documents: what the agent serves on its API (``{"op": "status"}``, ``drops``,
``policy``) and what ``podnet status``, ``diagnose`` and the rest of ``podnet.verify`` read, one
frozen dataclass per part with ``to_json`` (the document's keys, unchanged for ``-o json``
readers) and a tolerant ``from_json`` (a field an older agent does not send gets its default).
``document.StatusDocument`` holds the sections: the node (``node``), the datastore lines
(``datastore``), routing, MTU and the last round (``routing``), peers and routes (``peers``),
masquerading, the pod guard, endpoints, IPAM and failed ADDs, path MTU, BGP, host routing, drops,
policy, and the IPAM mode's own section (``modesection``: opaque fields plus the rows status
prints, so readers never name the mode). This package imports only the standard library."""
