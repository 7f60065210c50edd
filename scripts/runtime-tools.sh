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
#      state (deb-src entries derived at run time from the machine's enabled deb entries);
#      the machine's /etc/apt is never changed. Everything is cached outside the repository in
#      ${PODNET_CACHE:-/var/cache/podnet}/cnitool-<debian version>/ (src/, bin/cnitool) and
#      reused: a second run neither downloads nor builds.
#      The build adds one file to cnitool (cachedir.go): CNI_CACHE_DIR=<dir> replaces cnitool's
#      fixed result cache /var/lib/cni (libcni.CacheDir), so tests never write /var/lib/cni.
#   3. Prints one line per tool: cnitool= podman= runc= busybox= cni-plugins=.
#
# Env: PODNET_CACHE (default /var/cache/podnet).
set -euo pipefail

prog=runtime-tools
die() { echo "$prog: error: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (it installs Debian packages): sudo $0"
command -v apt-get >/dev/null && command -v dpkg-query >/dev/null \
  || die "needs a Debian-based machine (apt-get, dpkg-query not found)"

export DEBIAN_FRONTEND=noninteractive
apt_lock=(-o DPkg::Lock::Timeout=300)
# podman's package ships /etc/cni/net.d/87-podman-bridge.conflist: the machine's own CNI config
# directory is never written, so dpkg leaves /etc/cni out (podnet points podman at its own dirs).
no_etc_cni=(-o 'DPkg::Options::=--path-exclude=/etc/cni*')

# run LOG CMD...: runs CMD with its output in LOG; on failure shows the log's tail and stops.
run() {
  local log=$1; shift
  if ! "$@" >>"$log" 2>&1; then
    echo "$prog: error: '$*' failed; last lines of $log:" >&2
    tail -n 25 "$log" >&2
    exit 1
  fi
}

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

  # 2a. Private deb-src list from the machine's enabled deb entries (one-line .list files and
  #     deb822 .sources files; files named *.disabled* are skipped, as apt itself does).
  main_list=/etc/apt/sources.list parts_dir=/etc/apt/sources.list.d/
  eval "$(apt-config shell main_list Dir::Etc::sourcelist/f parts_dir Dir::Etc::sourceparts/d)"
  srclist=$dir/work/deb-src.sources     # deb822 (apt picks the format by the .sources suffix)
  : >"$srclist"
  list_to_822='
    /^[ \t]*(#|$)/ { next }
    $1 != "deb" { next }
    {
      line = $0; sub(/^[ \t]*deb[ \t]+/, "", line); opts = ""
      if (line ~ /^\[/) { opts = line; sub(/\].*/, "", opts); sub(/^\[/, "", opts); sub(/^[^\]]*\][ \t]*/, "", line) }
      nf = split(line, F, /[ \t]+/); if (nf < 2) next
      print "Types: deb-src"; print "URIs: " F[1]; print "Suites: " F[2]
      c = ""; for (i = 3; i <= nf; i++) c = c (c == "" ? "" : " ") F[i]
      if (c != "") print "Components: " c
      no = split(opts, O, /[ \t]+/)
      for (i = 1; i <= no; i++) {
        if (O[i] ~ /^signed-by=/) { sub(/^signed-by=/, "", O[i]); print "Signed-By: " O[i] }
        else if (O[i] ~ /^trusted=/) { sub(/^trusted=/, "", O[i]); print "Trusted: " O[i] }
        else if (O[i] ~ /^check-valid-until=/) { sub(/^check-valid-until=/, "", O[i]); print "Check-Valid-Until: " O[i] }
      }
      print ""
    }'
  sources_to_822='
    function flush(   i) {
      if (n > 0 && enabled && isdeb) { print "Types: deb-src"; for (i = 1; i <= n; i++) print L[i]; print "" }
      n = 0; enabled = 1; isdeb = 0; drop = 0
    }
    BEGIN { n = 0; enabled = 1; isdeb = 0; drop = 0 }
    /^#/ { next }
    /^[ \t]*$/ { flush(); next }
    /^[ \t]/ { if (!drop) L[++n] = $0; next }
    {
      k = tolower($0); sub(/[ \t]*:.*/, "", k); v = $0; sub(/^[^:]*:[ \t]*/, "", v); drop = 0
      if (k == "types") { if (v ~ /(^|[ \t])deb([ \t]|$)/) isdeb = 1; drop = 1; next }
      if (k == "enabled") { if (tolower(v) == "no") enabled = 0; drop = 1; next }
      if (k == "architectures") { drop = 1; next }
      L[++n] = $0
    }
    END { flush() }'
  [ -f "$main_list" ] && awk "$list_to_822" "$main_list" >>"$srclist"
  for f in "$parts_dir"*.list "$parts_dir"*.sources; do
    [ -f "$f" ] || continue
    case "$(basename "$f")" in *.disabled*) continue;; esac
    case "$f" in
      *.list) awk "$list_to_822" "$f" >>"$srclist";;
      *.sources) awk "$sources_to_822" "$f" >>"$srclist";;
    esac
  done
  grep -q '^Types: deb-src' "$srclist" \
    || die "no enabled 'deb' entries found in $main_list or $parts_dir*.list|*.sources to derive deb-src entries from"

  # 2b. apt-get update + apt-get source with private state, cache and source list.
  mkdir -p "$dir/work/apt/state/lists/partial" "$dir/work/apt/cache/archives/partial"
  papt=(apt-get -q "${apt_lock[@]}"
        -o Dir::State="$dir/work/apt/state" -o Dir::Cache="$dir/work/apt/cache"
        -o Dir::Etc::SourceList="$srclist" -o Dir::Etc::SourceParts=/dev/null)
  run "$log" "${papt[@]}" update
  # apt downloads as the unprivileged _apt user where it exists: let it write the target dir.
  if id _apt >/dev/null 2>&1; then chown _apt "$dir/src"; fi
  (cd "$dir/src" && run "$log" "${papt[@]}" source --download-only "$srcpkg=$ver") \
    || die "could not download source package $srcpkg=$ver (see $log)"
  chown -R root:root "$dir/src"
  dsc=$(ls "$dir/src/"*.dsc 2>/dev/null | head -n1 || true)
  [ -n "$dsc" ] || die "apt-get source left no .dsc in $dir/src (see $log)"
  # apt already checked the files against the signed Sources index; dpkg-source checks the
  # checksums in the .dsc again and applies Debian's patches.
  run "$log" dpkg-source -x "$dsc" "$dir/src/$srcpkg-$ver"
  tool_src=$dir/src/$srcpkg-$ver/cnitool/cnitool.go
  [ -f "$tool_src" ] || die "$tool_src is missing from the source package"

  # 2c. GOPATH-mode build: only cnitool's main package lives in the private GOPATH; libcni and
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

# ---- 3. Summary -------------------------------------------------------------------------------
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
