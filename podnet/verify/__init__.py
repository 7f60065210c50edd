"""Verification: probes, status, connectivity tests, diagnose, captures, throughput and ``podnet
bgp``, all reading a cluster through the cluster view (``view``: a lab's or a real host's)."""
