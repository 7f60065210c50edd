"""Verification: probes, status, connectivity tests, captures and throughput."""
