"""The typed status documents: what the agent serves on its API (``{"op": "status"}``) and what
``podnet status``, ``diagnose`` and the rest of ``podnet.verify`` read, one dataclass per part with
``to_json`` (the document's keys, unchanged for ``-o json`` readers) and a tolerant ``from_json``
(a field an older agent does not send gets its default). Parts typed so far: the datastore lines
(``datastore.StoreHealth``), the BGP section (``bgp.BgpStatus``) and the policy section
(``policy.PolicyStatus``)."""
