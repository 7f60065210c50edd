#!/usr/bin/env bash
# Installs and builds the CNI runtime tools that podnet's runtime test tier needs, idempotently,
# and prints where they are. Run as root on Debian 12 (bookworm).
#
#   1. Debian packages: golang-go podman runc busybox-static containernetworking-plugins,
#      plus golang-github-appc-cni-dev (libcni, to build cnitool) and dpkg-dev (dpkg-source).
#      conmon comes in as a hard dependency of podman; podman's Recommends (uidmap,
#      slirp4netns, fuse-overlayfs, catatonit, iptables, ...) are not needed by the rootful,
#      --rootfs, CNI-backend use in docs/runtime-recipe.md, so --no-install-recommends is fine.
#   2. cnitool, built offline in GOPATH mode from Debian's source package golang-github-appc-cni
#      (the same version as the installed golang-github-appc-cni-dev) against Debian's Go
#      library packages. The source is fetched with `apt-get source` through a private apt
#      state (scripts/lib/debsrc.sh: deb-src entries derived at run time from the machine's
#      enabled deb entries); the machine's /etc/apt is never changed. Everything is cached
#      outside the repository in ${PODNET_CACHE:-/var/cache/podnet}/cnitool-<debian version>/
#      (src/, bin/cnitool) and reused: a second run neither downloads nor builds.
#      The build adds one file to cnitool (cachedir.go): CNI_CACHE_DIR=<dir> replaces cnitool's
#      fixed result cache /var/lib/cni (libcni.CacheDir), so tests never write /var/lib/cni.
#   3. containerd for the lab's real Kubernetes nodes, from Debian's `containerd` package but NOT
#      installed: `apt-get download` + `dpkg-deb -x` into ${PODNET_CACHE}/containerd-<version>/
#      (no postinst, no service, nothing in /etc or /usr); each lab node runs it with a config of
#      its own (podnet/lab/kubenode.py).
#   4. Prints one line per tool: cnitool= podman= runc= busybox= cni-plugins= containerd=.
#
# Env: PODNET_CACHE (default /var/cache/podnet).
set -euo pipefail

prog=runtime-tools
die() { echo "$prog: error: $*" >&2; exit 1; }
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/lib/debsrc.sh
. "$here/lib/debsrc.sh"

[ "$(id -u)" = 0 ] || die "must run as root (it installs Debian packages): sudo $0"
command -v apt-get >/dev/null && command -v dpkg-query >/dev/null \
  || die "needs a Debian-based machine (apt-get, dpkg-query not found)"

export DEBIAN_FRONTEND=noninteractive
apt_lock=(-o DPkg::Lock::Timeout=300)
# podman's package ships /etc/cni/net.d/87-podman-bridge.conflist: the machine's own CNI config
# directory is never written, so dpkg leaves /etc/cni out (podnet points podman at its own dirs).
no_etc_cni=(-o 'DPkg::Options::=--path-exclude=/etc/cni*')

# run LOG CMD... comes from scripts/lib/debsrc.sh

# cnitool with no arguments prints its usage (and exits 1): that shows the binary runs.
cnitool_ok() { local out; out=$("$1" 2>&1 || true); case "$out" in *" add "*"<netns>"*) return 0;; esac; return 1; }
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

# ---- 1. Debian packages -----------------------------------------------------------------------
pkgs=(golang-go podman runc busybox-static containernetworking-plugins
      golang-github-appc-cni-dev dpkg-dev)
missing=()
for p in "${pkgs[@]}"; do installed "$p" || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  aptlog=$(mktemp /tmp/$prog-apt.XXXXXX.log)
  echo "$prog: installing Debian packages: ${missing[*]} (log: $aptlog)" >&2
  run "$aptlog" apt-get -q "${apt_lock[@]}" update
  run "$aptlog" apt-get -q -y "${apt_lock[@]}" "${no_etc_cni[@]}" install --no-install-recommends "${missing[@]}"
  rm -f "$aptlog"
fi

# ---- 2. cnitool from Debian's source package --------------------------------------------------
srcpkg=golang-github-appc-cni
ver=$(dpkg-query -W -f='${Version}' golang-github-appc-cni-dev)
[ -n "$ver" ] || die "cannot read the version of golang-github-appc-cni-dev"
cache=${PODNET_CACHE:-/var/cache/podnet}
case "$cache" in /*) ;; *) die "PODNET_CACHE must be an absolute path, not '$cache'";; esac
dir=$cache/cnitool-${ver//:/_}
cnitool=$dir/bin/cnitool
mkdir -p "$cache" || die "cannot create cache directory $cache (set PODNET_CACHE)"

exec 9>"$cache/.cnitool.lock"
flock 9   # two runs at once: the second waits, then finds the cache

if [ -x "$cnitool" ] && cnitool_ok "$cnitool"; then
  echo "cnitool: cached ($dir)"
else
  rm -rf "$dir"
  mkdir -p "$dir/src" "$dir/work"
  log=$dir/work/build.log
  : >"$log"

  # 2a. apt-get source with a private apt state, cache and deb-src list derived from the
  #     machine's enabled deb entries (scripts/lib/debsrc.sh), then dpkg-source -x.
  srcdir=$(debsrc_fetch "$srcpkg" "$ver" "$dir/work" "$dir/src" "$log") \
    || die "could not fetch source package $srcpkg=$ver (see $log)"
  tool_src=$srcdir/cnitool/cnitool.go
  [ -f "$tool_src" ] || die "$tool_src is missing from the source package"

  # 2b. GOPATH-mode build: only cnitool's main package lives in the private GOPATH; libcni and
  #     pkg/* resolve to golang-github-appc-cni-dev in /usr/share/gocode.
  gopath=$dir/work/gopath
  pkgdir=$gopath/src/github.com/containernetworking/cni/cnitool
  mkdir -p "$pkgdir" "$dir/bin"
  cp "$tool_src" "$pkgdir/"
  cat >"$pkgdir/cachedir.go" <<'EOF'
package main

// Added by podnet's scripts/runtime-tools.sh (not upstream): cnitool 1.1.2 always keeps
// its result cache in libcni.CacheDir (/var/lib/cni); CNI_CACHE_DIR=<dir> redirects it.

import (
	"os"

	"github.com/containernetworking/cni/libcni"
)

func init() {
	if d := os.Getenv("CNI_CACHE_DIR"); d != "" {
		libcni.CacheDir = d
	}
}
EOF
  cp "$pkgdir/cachedir.go" "$dir/src/cachedir.go"
  (cd "$pkgdir" && run "$log" env GO111MODULE=off GOENV=off GOFLAGS= CGO_ENABLED=0 \
     GOPATH="$gopath:/usr/share/gocode" GOCACHE="$dir/work/gocache" \
     nice go build -trimpath -o "$dir/bin/cnitool.new" .) \
    || die "building cnitool failed (see $log)"
  cnitool_ok "$dir/bin/cnitool.new" || die "the built cnitool does not run (see $log)"
  mv "$dir/bin/cnitool.new" "$cnitool"
  mv "$log" "$dir/build.log"
  rm -rf "$dir/work"     # private apt lists, GOPATH copy, Go build cache
  echo "cnitool: built $ver ($dir)"
fi

# ---- 3. containerd, unpacked only -------------------------------------------------------------
ctrd_ok() { "$1/usr/bin/containerd" --version >/dev/null 2>&1 && [ -x "$1/usr/bin/ctr" ] \
  && [ -x "$1/usr/bin/containerd-shim-runc-v2" ]; }
ctrd_ver=$(apt-cache policy containerd 2>/dev/null | sed -n 's/^  Candidate: //p')
[ -n "$ctrd_ver" ] && [ "$ctrd_ver" != "(none)" ] || { run "$cache/.containerd-apt.log" apt-get -q "${apt_lock[@]}" update;
  ctrd_ver=$(apt-cache policy containerd | sed -n 's/^  Candidate: //p'); }
[ -n "$ctrd_ver" ] && [ "$ctrd_ver" != "(none)" ] || die "Debian has no containerd package for this machine"
ctrd=$cache/containerd-${ctrd_ver//:/_}
exec 8>"$cache/.containerd.lock"
flock 8
if ctrd_ok "$ctrd"; then
  echo "containerd: cached ($ctrd)"
else
  rm -rf "$ctrd.part" && mkdir -p "$ctrd.part/deb"
  chown _apt "$ctrd.part/deb" 2>/dev/null || true   # apt-get download drops to the _apt user
  (cd "$ctrd.part/deb" && run "$ctrd.part/download.log" apt-get -q download "containerd=$ctrd_ver") \
    || die "apt-get download containerd=$ctrd_ver failed (see $ctrd.part/download.log)"
  dpkg-deb -x "$ctrd.part"/deb/containerd_*.deb "$ctrd.part" || die "dpkg-deb -x of containerd failed"
  rm -rf "$ctrd.part/deb" "$ctrd"
  ctrd_ok "$ctrd.part" || die "the unpacked containerd does not run"
  mv "$ctrd.part" "$ctrd"
  echo "containerd: unpacked $ctrd_ver ($ctrd)"
fi

# ---- 4. Summary -------------------------------------------------------------------------------
find_bin() { # first existing path of a package's file that ends in /NAME
  dpkg-query -L "$1" 2>/dev/null | grep -E "/$2\$" | while read -r f; do
    [ -x "$f" ] && { echo "$f"; break; }; done || true
}
podman=$(command -v podman) || die "podman is not on PATH after installing it"
runc=$(find_bin runc runc); [ -n "$runc" ] || runc=$(command -v runc) || die "runc not found"
busybox=$(find_bin busybox-static busybox)
[ -n "$busybox" ] || die "busybox-static's /bin/busybox not found"
bridge=$(find_bin containernetworking-plugins bridge)
plugins=$(dirname "${bridge:-/nonexistent/x}")
[ -x "$plugins/bridge" ] && [ -x "$plugins/host-local" ] \
  || die "containernetworking-plugins: no directory with bridge and host-local found"
"$podman" --version >/dev/null 2>&1 || die "'$podman --version' fails"

echo "cnitool=$cnitool"
echo "podman=$podman"
echo "runc=$runc"
echo "busybox=$busybox"
echo "cni-plugins=$plugins"
echo "containerd=$ctrd/usr/bin/containerd"
