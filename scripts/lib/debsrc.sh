# shellcheck shell=bash
# Debian source packages through a PRIVATE apt state, for podnet's build scripts (sourced by
# scripts/runtime-tools.sh and scripts/build-kube.sh; not run on its own).
#
# The machine's apt configuration usually has only `deb` entries, so `apt-get source` finds
# nothing. debsrc_fetch derives deb-src entries at run time from the machine's enabled `deb`
# entries (one-line .list files and deb822 .sources files) into a private list, and runs
# `apt-get update` / `apt-get source --download-only` with private Dir::State, Dir::Cache and
# source list under a work directory of the caller's. The machine's /etc/apt, its package lists
# and its archive cache are never changed.
#
#   debsrc_fetch PKG VERSION-OR-EMPTY WORKDIR DESTDIR LOG
#       Downloads source package PKG (=VERSION, or the newest the archive has if VERSION is
#       empty) into DESTDIR, unpacks it with dpkg-source -x (Debian's patches applied) to
#       DESTDIR/PKG-VERSION and prints that path on stdout (nothing else). WORKDIR holds the
#       private apt state (WORKDIR/apt, WORKDIR/deb-src.sources); the caller removes it when
#       done. apt's and dpkg-source's output is appended to LOG. On failure it prints an error
#       and LOG's last lines to stderr and returns 1.
#   debsrc_sources_list OUT
#       Writes the derived deb822 deb-src list to OUT; returns 1 if there is no enabled deb entry.
#   debsrc_apt WORKDIR ARGS...
#       Runs apt-get ARGS with the private state under WORKDIR (after debsrc_fetch or
#       debsrc_sources_list + `debsrc_apt WORKDIR update`), e.g. `debsrc_apt W source --download-only P`.
#   debsrc_cache_showsrc WORKDIR PKG
#       apt-cache showsrc PKG against the private lists (which versions the archive has).
#   run LOG CMD...
#       Runs CMD with its output appended to LOG; on failure shows LOG's tail and exits 1 (the
#       build scripts' one way of running a step).
#
# Needs: root (apt), apt-get, apt-config, awk, dpkg-source (package dpkg-dev).
# Messages are prefixed with $prog if the caller set it.

_debsrc_err() { echo "${prog:-debsrc}: error: $*" >&2; }

run() {
  local log=$1; shift
  if ! "$@" >>"$log" 2>&1; then
    echo "${prog:-debsrc}: error: '$*' failed; last lines of $log:" >&2
    tail -n 25 "$log" >&2
    exit 1
  fi
}

# _debsrc_run LOG CMD...: CMD's output goes to LOG; on failure shows LOG's tail and returns 1.
_debsrc_run() {
  local log=$1; shift
  if ! "$@" >>"$log" 2>&1; then
    _debsrc_err "'$*' failed; last lines of $log:"
    tail -n 25 "$log" >&2
    return 1
  fi
}

# One-line format (sources.list, *.list) -> deb822 deb-src stanzas.
# shellcheck disable=SC2016  # an awk program
_debsrc_list_to_822='
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

# deb822 (*.sources) -> the same stanzas with Types: deb-src, for enabled stanzas that have deb.
# shellcheck disable=SC2016  # an awk program
_debsrc_sources_to_822='
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

# debsrc_sources_list OUT: the private deb-src list (deb822; apt picks the format by .sources).
# Files named *.disabled* are skipped, as apt itself does.
debsrc_sources_list() {
  local out=$1 main_list=/etc/apt/sources.list parts_dir=/etc/apt/sources.list.d/ f
  eval "$(apt-config shell main_list Dir::Etc::sourcelist/f parts_dir Dir::Etc::sourceparts/d)"
  : >"$out" || return 1
  if [ -f "$main_list" ]; then awk "$_debsrc_list_to_822" "$main_list" >>"$out" || return 1; fi
  for f in "$parts_dir"*.list "$parts_dir"*.sources; do
    [ -f "$f" ] || continue
    case "$(basename "$f")" in *.disabled*) continue;; esac
    case "$f" in
      *.list) awk "$_debsrc_list_to_822" "$f" >>"$out" || return 1;;
      *.sources) awk "$_debsrc_sources_to_822" "$f" >>"$out" || return 1;;
    esac
  done
  if ! grep -q '^Types: deb-src' "$out"; then
    _debsrc_err "no enabled 'deb' entries found in $main_list or $parts_dir*.list|*.sources to derive deb-src entries from"
    return 1
  fi
}

_debsrc_opts() { # WORKDIR -> the private apt options, one per line (apt needs absolute paths)
  case "$1" in /*) ;; *) set -- "$PWD/$1";; esac
  printf '%s\n' -o "Dir::State=$1/apt/state" -o "Dir::Cache=$1/apt/cache" \
    -o "Dir::Etc::SourceList=$1/deb-src.sources" -o Dir::Etc::SourceParts=/dev/null
}

debsrc_apt() {
  local work=$1; shift
  local -a opts; mapfile -t opts < <(_debsrc_opts "$work")
  apt-get -q -o DPkg::Lock::Timeout=300 "${opts[@]}" "$@"
}

debsrc_cache_showsrc() {
  local -a opts; mapfile -t opts < <(_debsrc_opts "$1")
  apt-cache "${opts[@]}" showsrc --only-source "$2"
}

debsrc_fetch() {
  local pkg=$1 ver=$2 work=$3 dest=$4 log=$5 want dsc n srcdir
  mkdir -p "$work/apt/state/lists/partial" "$work/apt/cache/archives/partial" "$dest" || return 1
  debsrc_sources_list "$work/deb-src.sources" || return 1
  _debsrc_run "$log" debsrc_apt "$work" update || return 1
  want=$pkg; [ -z "$ver" ] || want=$pkg=$ver
  # apt downloads as the unprivileged _apt user where it exists: let it write the target dir.
  if id _apt >/dev/null 2>&1; then chown _apt "$dest" || return 1; fi
  if ! (cd "$dest" && _debsrc_run "$log" debsrc_apt "$work" source --download-only "$want"); then
    _debsrc_err "could not download source package $want (see $log)"
    return 1
  fi
  chown -R root:root "$dest" || return 1
  n=0
  for dsc in "$dest/${pkg}_"*.dsc; do [ -f "$dsc" ] && n=$((n + 1)); done
  if [ "$n" != 1 ]; then
    _debsrc_err "apt-get source left $n .dsc files for $pkg in $dest, expected 1 (see $log)"
    return 1
  fi
  dsc=$(ls "$dest/${pkg}_"*.dsc)
  [ -n "$ver" ] || ver=$(sed -n 's/^Version:[ \t]*//p' "$dsc" | head -n1)
  [ -n "$ver" ] || { _debsrc_err "no Version: in $dsc"; return 1; }
  srcdir=$dest/$pkg-$ver
  # apt already checked the files against the signed Sources index; dpkg-source checks the
  # checksums in the .dsc again and applies Debian's patches.
  _debsrc_run "$log" dpkg-source -x "$dsc" "$srcdir" || return 1
  echo "$srcdir"
}
