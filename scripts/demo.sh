#!/usr/bin/env bash
# The main job from nothing: install (scripts/setup.sh), then `podnet demo` on the built-in lab.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
bash scripts/setup.sh
# the IPAM-modes part (and --datastore kubernetes) needs the API server built (once, cached)
bash scripts/build-kube.sh
bash scripts/runtime-tools.sh  # containerd (unpacked) and busybox-static for the real kubelets' part
exec .venv/bin/podnet demo "$@"
