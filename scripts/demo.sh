#!/usr/bin/env bash
# The main job from nothing: install (scripts/setup.sh), then `podnet demo` on the built-in lab.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
bash scripts/setup.sh
case " $* " in  # the demo on the Kubernetes datastore needs the API server built (once, cached)
  *" --datastore kubernetes "*|*" --datastore=kubernetes "*) bash scripts/build-kube.sh ;;
esac
exec .venv/bin/podnet demo "$@"
