#!/usr/bin/env bash
# The main job from nothing: install (scripts/setup.sh), then `podnet demo` on the built-in lab.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
bash scripts/setup.sh
exec .venv/bin/podnet demo "$@"
