"""Kubernetes NetworkPolicy: the model and its validation (``model``), what it allows as address
pairs (``resolve``, pure) and the node's nft table that enforces it (``nft``)."""
