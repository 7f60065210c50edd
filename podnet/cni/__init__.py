"""The CNI plugin side of podnet: the spec types (``spec``), the shim binary and its installer.

Nothing here imports pyroute2 or YAML: the shim runs once per pod and must start fast.
"""
