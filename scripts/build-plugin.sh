#!/usr/bin/env bash
# Builds podnet's compiled CNI plugin (cniplugin/, Go standard library only) with Debian's
# golang-go, offline, and installs it as .venv/lib/podnet-plugin/podnet. Builds are cached
# outside the repository, in ${PODNET_CACHE:-/var/cache/podnet}/plugin/<hash of the sources>,
# and reused. Run by scripts/setup.sh after the venv exists.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
cache=${PODNET_CACHE:-/var/cache/podnet}
if ! command -v go >/dev/null; then
  echo "build-plugin: go is missing; install Debian's golang-go (scripts/setup.sh does)" >&2
  exit 1
fi
gen=$(mktemp -d)
trap 'rm -rf "$gen"' EXIT
cp cniplugin/go.mod cniplugin/*.go "$gen/"
.venv/bin/python -m podnet.cni.gospec > "$gen/zz_spec.go"
key=$( (cd "$gen" && cat go.mod ./*.go; go version) | sha256sum | cut -c1-16)
out="$cache/plugin/$key"
if [ ! -x "$out/podnet" ]; then
  mkdir -p "$out" "$cache/go-build"
  (cd "$gen" && GOCACHE="$cache/go-build" GOPROXY=off GOFLAGS=-mod=mod CGO_ENABLED=0 \
     go build -trimpath -ldflags "-s -w" -o "$out/podnet.tmp" .)
  mv "$out/podnet.tmp" "$out/podnet"
  echo "build-plugin: built $out/podnet"
fi
dest=.venv/lib/podnet-plugin
mkdir -p "$dest"
install -m 0755 "$out/podnet" "$dest/.podnet.tmp"
mv "$dest/.podnet.tmp" "$dest/podnet"
