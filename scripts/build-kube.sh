#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and kubectl v1.20.2 from
# Debian bookworm's `kubernetes` source package with Debian's golang-go, and the pod sandbox's
# `pause` from the same tree with gcc -static, once, idempotently, and prints where they are.
# Run as root on Debian 12 (bookworm). See docs/kubernetes-build.md.
#
#   1. Debian packages: golang-go (the compiler) and dpkg-dev (dpkg-source,
#      dpkg-parsechangelog); installed with --no-install-recommends if missing.
#   2. The source: `apt-get source kubernetes` through a private apt state (scripts/lib/debsrc.sh:
#      deb-src entries derived at run time from the machine's enabled deb entries; the
#      machine's /etc/apt is never changed), unpacked with Debian's patches. Bookworm has
#      1.20.5+really1.20.2-1.1+deb12u1 (upstream v1.20.2; Debian itself ships only kubectl from
#      it). The tree vendors all its dependencies (vendor/, vendor/modules.txt).
#   3. The build, offline: GOPATH mode (GO111MODULE=off) against the tree's own vendor/, as
#      upstream's `make` (which debian/rules calls) builds 1.20, with GOPROXY=off. Of make's
#      generated_files step only what the binaries lack is done: openapi-gen writes
#      pkg/generated/openapi/zz_generated.openapi.go (not in the release tarball). Then only
#      k8s.io/kubernetes/cmd/{kube-apiserver,kube-controller-manager,kube-scheduler,kubelet,
#      kubectl} are built (kubelet ~3-10 minutes on 2 cores), with
#      make's flags: CGO_ENABLED=0, -tags selinux,notest, trimmed paths, -ldflags "-s -w
#      -buildid=" plus the version -X flags of hack/lib/version.sh (gitVersion v1.20.2,
#      gitCommit, gitTreeState=archive, gitMajor/Minor; buildDate from debian/changelog).
#   4. The cache, outside the repository: ${PODNET_CACHE:-/var/cache/podnet}/kubernetes-<debian
#      version>/bin/{kube-apiserver,kube-controller-manager,kube-scheduler,kubelet,kubectl,pause}
#      (+ build.log, BUILD-INFO). The build
#      runs in kubernetes.build/ and is renamed into place only when every binary prints
#      `Kubernetes v1.20.2`; a half-build is thrown away and redone. The source tree and Go's
#      build cache are removed afterwards. A later run finds the cache and neither downloads
#      nor builds; concurrent runs are serialised with flock.
#   5. Prints `<binary>=<path>`, one line each.
#
# Env: PODNET_CACHE (default /var/cache/podnet); PODNET_KUBE_DEB_VERSION (a Debian version of
# the source package to use instead of the newest the archive has).
set -euo pipefail

prog="build-kube"
die() { echo "$prog: error: $*" >&2; exit 1; }
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/lib/debsrc.sh
. "$here/lib/debsrc.sh"

[ "$(id -u)" = 0 ] || die "must run as root (it installs Debian packages): sudo $0"
if ! command -v apt-get >/dev/null || ! command -v dpkg-query >/dev/null; then
  die "needs a Debian-based machine (apt-get, dpkg-query not found)"
fi

export DEBIAN_FRONTEND=noninteractive
apt_lock=(-o DPkg::Lock::Timeout=300)
kube_want=v1.20.2
bins=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl)
# The build recipe: a cache made by an older recipe is rebuilt. 2: vendor/github.com/modern-go/
# reflect2 1.0.1 replaced by Debian's 1.0.2 (1.0.1 crashes under Go 1.19 with "fatal error:
# fault" in mapiterinit on the first custom-resource create). 3: kube-scheduler, kubelet, kubectl
# and pause too (the lab's real Kubernetes nodes).
recipe=3

# run LOG CMD... comes from scripts/lib/debsrc.sh
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

# bin_ok PATH: the binary runs and reports the version it was built for.
bin_ok() {
  local out
  [ -x "$1" ] || return 1
  case "$1" in
    */kubectl) out=$("$1" version --client --short 2>&1) && [ "$out" = "Client Version: $kube_want" ] ;;
    *) out=$("$1" --version 2>&1) && [ "$out" = "Kubernetes $kube_want" ] ;;
  esac
}
# dir_ok DIR: a finished build (stamp written last) whose binaries both work.
dir_ok() {
  local b; [ -f "$1/.complete" ] && grep -qx "recipe $recipe" "$1/.complete" || return 1
  for b in "${bins[@]}"; do bin_ok "$1/bin/$b" || return 1; done
  [ -x "$1/bin/pause" ]
}

cache=${PODNET_CACHE:-/var/cache/podnet}
case "$cache" in /*) ;; *) die "PODNET_CACHE must be an absolute path, not '$cache'";; esac
mkdir -p "$cache" || die "cannot create cache directory $cache (set PODNET_CACHE)"
pin=${PODNET_KUBE_DEB_VERSION:-}

exec 9>"$cache/.kubernetes.lock"
flock 9   # two runs at once: the second waits, then finds the cache

# ---- cache lookup (no network) ----------------------------------------------------------------
dir=
if [ -n "$pin" ]; then
  dir_ok "$cache/kubernetes-${pin//:/_}" && dir=$cache/kubernetes-${pin//:/_}
else
  while read -r d; do
    if dir_ok "$d"; then dir=$d; break; fi
  done < <(find "$cache" -mindepth 1 -maxdepth 1 -type d -name 'kubernetes-*' | sort -rV)
fi

if [ -n "$dir" ]; then
  echo "kubernetes: cached ($dir)"
else
  # ---- 1. Debian packages ---------------------------------------------------------------------
  pkgs=(golang-go dpkg-dev golang-github-modern-go-reflect2-dev gcc libc6-dev)
  missing=()
  for p in "${pkgs[@]}"; do installed "$p" || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    aptlog=$(mktemp "/tmp/$prog-apt.XXXXXX.log")
    echo "$prog: installing Debian packages: ${missing[*]} (log: $aptlog)" >&2
    run "$aptlog" apt-get -q "${apt_lock[@]}" update
    run "$aptlog" apt-get -q -y "${apt_lock[@]}" install --no-install-recommends "${missing[@]}"
    rm -f "$aptlog"
  fi

  # ---- 2. the source package ------------------------------------------------------------------
  build=$cache/kubernetes.build     # only ever a build in progress or a broken one: redone
  rm -rf "$build"
  mkdir -p "$build/work" "$build/bin"
  log=$build/build.log
  : >"$log"
  echo "$prog: fetching Debian's kubernetes source package (log: $log)" >&2
  t0=$(now)
  src=$(debsrc_fetch kubernetes "$pin" "$build/work" "$build/work/src" "$log") \
    || die "could not fetch and unpack Debian's kubernetes source package (see $log)"
  t_fetch=$(secs "$t0" "$(now)")
  ver=$(dpkg-parsechangelog -l "$src/debian/changelog" -SVersion)
  [ -n "$ver" ] || die "cannot read the version from $src/debian/changelog"
  dl_bytes=$(find "$build/work/src" -maxdepth 1 -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')
  if [ ! -f "$src/go.mod" ] || [ ! -f "$src/vendor/modules.txt" ]; then
    die "$src has no go.mod + vendor/modules.txt: expected a tree that vendors its dependencies"
  fi
  for b in "${bins[@]}"; do [ -d "$src/cmd/$b" ] || die "$src/cmd/$b is missing"; done

  # Version stamps exactly as upstream's make computes them (hack/lib/version.sh): the release
  # tarball is a `git archive` with the commit and tag filled in, so no git is needed; buildDate
  # comes from debian/changelog (SOURCE_DATE_EPOCH, as dpkg-buildpackage sets it).
  epoch=$(dpkg-parsechangelog -l "$src/debian/changelog" -STimestamp)
  vars=$(cd "$src" && KUBE_ROOT=$src KUBE_GO_PACKAGE=k8s.io/kubernetes SOURCE_DATE_EPOCH=$epoch \
           bash -c 'set -eu; . hack/lib/version.sh
             kube::version::get_version_vars; echo "${KUBE_GIT_VERSION:-}"; kube::version::ldflags' 2>>"$log") \
    || die "hack/lib/version.sh could not tell the version (see $log)"
  gitversion=$(sed -n 1p <<<"$vars")
  [ "$gitversion" = "$kube_want" ] \
    || die "Debian's kubernetes $ver is upstream ${gitversion:-?}, not $kube_want (set PODNET_KUBE_DEB_VERSION)"
  ldflags="-s -w -buildid= $(sed -n 2p <<<"$vars")"

  # reflect2 1.0.1 (vendored) reads Go's map internals in a way Go 1.18+ changed: the API server
  # dies on the first custom resource it stores. Debian's 1.0.2 (same API) fixes it.
  reflect2=/usr/share/gocode/src/github.com/modern-go/reflect2
  [ -f "$reflect2/reflect2.go" ] || die "$reflect2 is missing (golang-github-modern-go-reflect2-dev)"
  reflect2_ver=$(dpkg-query -W -f='${Version}' golang-github-modern-go-reflect2-dev)
  rm -rf "$src/vendor/github.com/modern-go/reflect2"
  mkdir -p "$src/vendor/github.com/modern-go/reflect2"
  find "$reflect2" -maxdepth 1 -type f \( -name '*.go' -o -name '*.s' \) ! -name '*_test.go' \
    -exec cp -t "$src/vendor/github.com/modern-go/reflect2" {} +
  sed -i 's|^# github.com/modern-go/reflect2 v1.0.1$|# github.com/modern-go/reflect2 v1.0.2|' "$src/vendor/modules.txt"

  # ---- 3. the build (offline, GOPATH mode with the tree's own vendor/) ------------------------
  # Kubernetes 1.20 builds in GOPATH mode (hack/lib/init.sh: GO111MODULE=off; debian/rules
  # links the tree to $GOPATH/src/k8s.io/kubernetes and runs make). Module mode with
  # -mod=vendor stops with Go 1.19: "go: updates to go.mod needed, disabled by -mod=vendor".
  gopath=$build/work/gopath
  mkdir -p "$gopath/src/k8s.io"
  ln -s "$src" "$gopath/src/k8s.io/kubernetes"
  gobuild=(env GOENV=off GO111MODULE=off GOFLAGS= GOPROXY=off GOTOOLCHAIN=local CGO_ENABLED=0
           GOPATH="$gopath" GOCACHE="$build/work/gocache" HOME="$build/work"
           nice -n 19 go build -trimpath -tags "selinux,notest" -ldflags "$ldflags")
  goversion=$(GOENV=off go version)
  {
    echo "source: kubernetes $ver ($gitversion), download $dl_bytes bytes in ${t_fetch}s"
    echo "compiler: $goversion"
    echo "ldflags: $ldflags"
  } >>"$log"
  kroot=$gopath/src/k8s.io/kubernetes

  # 3a. pkg/generated/openapi/zz_generated.openapi.go (kube-apiserver's OpenAPI definitions) is
  #     not in the release tarball (.gitignore); make's gen_openapi target generates it. The same
  #     here: openapi-gen from vendor/, input = the packages tagged +k8s:openapi-gen= found the way
  #     Makefile.generated_files finds them (staging/src seen as vendor/), and the API-rule report
  #     must equal api/api-rules/violation_exceptions.list as make requires. (grep -l exits 1 for
  #     a batch without a match, hence no pipefail in the listing.)
  echo "$prog: generating kube-apiserver's OpenAPI definitions (log: $log)" >&2
  t0=$(now)
  (cd "$kroot" && run "$log" "${gobuild[@]}" -o "$build/work/openapi-gen" \
     k8s.io/kubernetes/vendor/k8s.io/kube-openapi/cmd/openapi-gen) \
    || die "building openapi-gen failed (see $log)"
  openapi_dirs=$(set +o pipefail; cd "$kroot" && find -H . \( -path './_*' -o -path './.*' -o -path ./vendor \) -prune \
                   -o -type f -name '*.go' -print \
                 | sed 's|^\./staging/src/|vendor/|; s|^\./||' \
                 | grep -v -e '^vendor/k8s.io/code-generator/' -e '^vendor/k8s.io/sample-apiserver/' \
                 | xargs -r grep -l '^// *+k8s:' | xargs -r grep -l '+k8s:openapi-gen=' \
                 | xargs -r -n1 dirname | LC_ALL=C sort -u | sed 's|^|k8s.io/kubernetes/|' | paste -sd,)
  [ -n "$openapi_dirs" ] || die "found no packages tagged +k8s:openapi-gen= in $src"
  report=$build/work/KUBE_violations.report
  # GOROOT explicitly: a -trimpath binary has no GOROOT of its own, and without the standard
  # library's source openapi-gen fails on time.Duration ("invalid type").
  (cd "$kroot" && run "$log" env GOENV=off GO111MODULE=off GOPATH="$gopath" \
     GOROOT="$(GOENV=off go env GOROOT)" nice -n 19 \
     "$build/work/openapi-gen" --v 1 --logtostderr -i "$openapi_dirs" \
     -p k8s.io/kubernetes/pkg/generated/openapi -O zz_generated.openapi \
     -h vendor/k8s.io/code-generator/hack/boilerplate.go.txt -r "$report") \
    || die "openapi-gen failed (see $log)"
  [ -s "$src/pkg/generated/openapi/zz_generated.openapi.go" ] \
    || die "openapi-gen wrote no $src/pkg/generated/openapi/zz_generated.openapi.go (see $log)"
  diff "$report" "$src/api/api-rules/violation_exceptions.list" >>"$log" 2>&1 \
    || die "openapi-gen's API rule report differs from api/api-rules/violation_exceptions.list (see $log)"
  t=$(secs "$t0" "$(now)")
  info=("openapi-gen: built and run in ${t}s")
  echo "$prog: OpenAPI definitions generated in ${t}s" >&2

  # 3b. the binaries
  for b in "${bins[@]}"; do
    echo "$prog: building $b $gitversion with $goversion (log: $log)" >&2
    t0=$(now)
    (cd "$kroot" && run "$log" "${gobuild[@]}" -o "$build/bin/$b" "k8s.io/kubernetes/cmd/$b") \
      || die "building $b failed (see $log)"
    t=$(secs "$t0" "$(now)")
    bin_ok "$build/bin/$b" \
      || die "the built $b does not print 'Kubernetes $kube_want' for --version (see $log)"
    size=$(stat -c %s "$build/bin/$b")
    info+=("$b: built in ${t}s, $size bytes")
    echo "$prog: $b built in ${t}s ($size bytes)" >&2
  done

  # 3c. pause, the pod sandbox's one process, as upstream's build/pause/Makefile builds it
  t0=$(now)
  run "$log" gcc -Os -static -Wall -Werror -DVERSION="$gitversion-debian" -o "$build/bin/pause" \
    "$src/build/pause/linux/pause.c" || die "building pause failed (see $log)"
  strip "$build/bin/pause"
  info+=("pause: built in $(secs "$t0" "$(now)")s, $(stat -c %s "$build/bin/pause") bytes (gcc -static)")

  # ---- 4. into the cache -----------------------------------------------------------------------
  {
    echo "kubernetes $ver from Debian's source package (upstream $gitversion)"
    echo "download: $dl_bytes bytes ($(cd "$build/work/src" && echo ./*.dsc ./*.tar.* | xargs -n1 basename | tr '\n' ' '))"
    echo "compiler: $goversion"
    echo "GOPATH mode (GO111MODULE=off, vendor/), GOPROXY=off, CGO_ENABLED=0: go build -trimpath -tags selinux,notest"
    echo "vendor/github.com/modern-go/reflect2: Debian's golang-github-modern-go-reflect2-dev $reflect2_ver"
    echo "ldflags: $ldflags"
    printf '%s\n' "${info[@]}"
  } >"$build/BUILD-INFO"
  rm -rf "$build/work"    # private apt lists, source tree (~280 MB), Go build cache
  printf '%s\nrecipe %s\n' "$ver" "$recipe" >"$build/.complete"
  dir=$cache/kubernetes-${ver//:/_}
  rm -rf "$dir"
  mv "$build" "$dir"
  dir_ok "$dir" || die "$dir is not usable after the build"
  echo "kubernetes: built $ver ($dir)"
fi

# ---- 5. summary ---------------------------------------------------------------------------------
for b in "${bins[@]}" pause; do echo "$b=$dir/bin/$b"; done
