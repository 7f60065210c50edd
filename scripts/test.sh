#!/usr/bin/env bash
# The whole test suite, set up from nothing: Debian packages + .venv (scripts/setup.sh),
# ruff, then pytest (unit, kernel and lab tiers). Run as root. Exit status: pytest's, where
# "no tests collected" (5) counts as a failure.
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
bash scripts/setup.sh || exit 1
echo "== ruff"
.venv/bin/ruff check podnet tests bench || exit 1
echo "== pytest"
.venv/bin/pytest -q -p no:cacheprovider "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure" >&2
  exit 1
fi
# whatever a failed test might have left: the lab's own namespaces only (prefix pn-/pnt-)
leftover=$(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^(pn|pnt)-' || true)
if [ -n "$leftover" ]; then
  echo "tests left namespaces behind: $leftover" >&2
  .venv/bin/podnet lab down --all >/dev/null 2>&1 || true
  [ "$rc" -eq 0 ] && rc=1
fi
exit "$rc"
