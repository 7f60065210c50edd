"""Small shared helpers (namespaces, processes) with no podnet policy in them."""
