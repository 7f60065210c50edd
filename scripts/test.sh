#!/usr/bin/env bash
# The whole test suite, set up from nothing: Debian packages + .venv + the compiled plugin
# (scripts/setup.sh), the runtime tier's CNI clients (scripts/runtime-tools.sh), kube-apiserver
# and kube-controller-manager v1.20.2 from Debian's source (scripts/build-kube.sh, ~4 minutes
# once, then cached), podnet's container image (scripts/build-image.sh, cached), ruff, the layer contracts (lint-imports, pyproject.toml
# [tool.importlinter]), then pytest
# (unit, kernel and lab tiers). Run as root. Exit status: 1 when ruff or a contract fails, else
# pytest's, where "no tests collected" (5) counts as a failure.
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
bash scripts/setup.sh || exit 1
echo "== runtime tools (cnitool from Debian's source, podman, runc, busybox)"
bash scripts/runtime-tools.sh || exit 1
echo "== Kubernetes control plane (kube-apiserver, kube-controller-manager from Debian's source)"
bash scripts/build-kube.sh || exit 1
echo "== podnet's image (podnet:<version> for the DaemonSet tier, from Debian packages + this checkout)"
bash scripts/build-image.sh || exit 1
echo "== ruff"
.venv/bin/ruff check podnet tests bench || exit 1
echo "== lint-imports"
.venv/bin/lint-imports --no-cache || exit 1  # no cache: a stale one can hide a new upward import
echo "== pytest"
# namespaces that exist before the run (e.g. a lab someone has up) are never counted or touched
netns_before=$(ip netns list 2>/dev/null | awk '{print $1}' | LC_ALL=C sort)
# four workers (PODNET_TEST_WORKERS; labs mostly wait: on 2 cores three took 23:09, four 21:50),
# each taking whole files: a file's module-scoped lab stays on one worker, and every lab, namespace
# and etcd a test makes has a name of its own
workers=${PODNET_TEST_WORKERS:-4}
parallel=()
if [ "$workers" -gt 1 ]; then parallel=(-n "$workers" --dist loadfile); fi
# the JUnit XML gives each file's seconds (scripts/test-weights.py -> tests/file_seconds.json: the
# order tests/conftest.py starts files in)
.venv/bin/pytest -q -p no:cacheprovider --durations=25 --junitxml="${PODNET_JUNIT:-/tmp/podnet-test-junit.xml}" \
  "${parallel[@]}" "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure" >&2
  exit 1
fi
# whatever a failed test might have left: namespaces NEW since the run began, with the
# lab's or the tests' prefix (pn-/pnt-); exactly those are removed, and the run fails
netns_after=$(ip netns list 2>/dev/null | awk '{print $1}' | LC_ALL=C sort)
leftover=$(LC_ALL=C comm -13 <(echo "$netns_before") <(echo "$netns_after") | grep -E '^(pn|pnt)-' || true)
if [ -n "$leftover" ]; then
  echo "tests left namespaces behind: ${leftover//$'\n'/ }" >&2
  # shellcheck disable=SC2086 # one argument per namespace name
  .venv/bin/python -c 'import sys
from podnet.util import netns
for name in sys.argv[1:]:
    netns.remove(name)' $leftover || true
  [ "$rc" -eq 0 ] && rc=1
fi
exit "$rc"
