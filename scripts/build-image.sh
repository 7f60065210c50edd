#!/usr/bin/env bash
# Builds podnet's container image podnet:<version> (what deploy/kubernetes/ names) offline, as a
# docker-archive tarball under ${PODNET_CACHE:-/var/cache/podnet}/images/, and prints its name and
# path: Debian packages (python3, iproute2, nftables, bpftool) resolved by the machine's apt for an
# empty system and unpacked, podnet and its runtime dependencies from pip, the compiled CNI plugin
# and the eBPF objects (podnet/lab/podnetimage.py). Cached by a digest of its inputs: a second run
# only finds it. Import it with `ctr -n k8s.io images import <tarball>`.
# Needs scripts/setup.sh first (the venv, the compiled plugin, clang).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
[ -x .venv/bin/python ] || { echo "build-image: run scripts/setup.sh first (no .venv)" >&2; exit 1; }
exec .venv/bin/python -m podnet.lab.podnetimage "$@"
