#!/usr/bin/env bash
# End-to-end proof of docs/runtime-recipe.md: podman 4.3 with the CNI backend, configured only
# through private files, runs a busybox --rootfs container on a CNI network inside a network
# namespace (pnrt-node); the CNI reference bridge + host-local plugins stand in for podnet's.
# Then cnitool (scripts/runtime-tools.sh's build) does ADD/CHECK/DEL on the same conflist.
# No image registry, no network outside the pnrt-* namespaces. Cleans up after itself.
#
# Usage (root): scripts/podman-cni-demo.sh [RUNS]   RUNS: timing samples (default 20, 0 = none)
# Needs: scripts/runtime-tools.sh run first (podman, runc, busybox-static, CNI plugins, cnitool).
# Env: PODNET_CACHE (where runtime-tools.sh cached cnitool), CNITOOL (path, overrides).
set -euo pipefail

prog=podman-cni-demo
runs=${1:-20}
case "$runs" in ''|*[!0-9]*) echo "usage: $0 [RUNS]" >&2; exit 2;; esac
die() { echo "$prog: FAIL: $*" >&2; exit 1; }
say() { echo "== $*"; }

[ "$(id -u)" = 0 ] || die "run as root"
NODE=pnrt-node POD=pnrt-pod
SUBNET_PREFIX=10.244.77 GW=10.244.77.1
plugins=/usr/lib/cni
for t in podman runc conmon nsenter ip; do
  command -v "$t" >/dev/null || die "$t not found: run scripts/runtime-tools.sh first"
done
[ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1 \
  || die "/bin/busybox is missing or not static: run scripts/runtime-tools.sh (busybox-static)"
[ -x $plugins/bridge ] && [ -x $plugins/host-local ] || die "no CNI plugins in $plugins"
cnitool=${CNITOOL:-$(ls -d "${PODNET_CACHE:-/var/cache/podnet}"/cnitool-*/bin/cnitool 2>/dev/null | tail -n1 || true)}
[ -x "$cnitool" ] || die "cnitool not found: run scripts/runtime-tools.sh first"
for ns in $NODE $POD; do
  [ ! -e /run/netns/$ns ] || die "netns $ns exists already (another demo running? else: ip netns del $ns)"
done

W=$(mktemp -d /tmp/pnrt-demo.XXXXXX)
had_varlibcni=0; [ -e /var/lib/cni ] && had_varlibcni=1
ctr_ids=() sandboxes=()

cleanup() {
  local rc=$? id p m
  set +e
  if [ -e /run/netns/$NODE ]; then
    for id in $(pm ps -aq --no-trunc 2>/dev/null); do ctr_ids+=("$id"); done
    pm rm -f -t 0 --all >/dev/null 2>&1
  fi
  [ -e /run/netns/$POD ] && [ -e "$W/cni/net.d" ] && cnt del rtnet /run/netns/$POD >/dev/null 2>&1
  # Backstop: processes whose command line names this demo's private dir (conmon, the
  # container) -- only ours, by PID.
  for p in $(grep -alsF -- "$W/" /proc/[0-9]*/cmdline | cut -d/ -f3); do
    [ "$p" = $$ ] || kill -9 "$p" 2>/dev/null
  done
  # podman's per-container netns files (we recorded their paths) and libcni result files.
  for p in "${sandboxes[@]}"; do
    case "$p" in /run/netns/netns-*) umount "$p" 2>/dev/null; rm -f "$p";; esac
  done
  for id in "${ctr_ids[@]}"; do rm -f "/var/lib/cni/results/rtnet-$id-eth0"; done
  if [ $had_varlibcni = 0 ]; then rmdir /var/lib/cni/results /var/lib/cni 2>/dev/null; fi
  grep -F " $W/" /proc/mounts | awk '{print $2}' | sort -r | while read -r m; do umount -l "$m"; done
  ip netns del $POD 2>/dev/null
  ip netns del $NODE 2>/dev/null
  rm -rf --one-file-system "$W"
  if [ $rc = 0 ]; then say "PASS (cleaned up)"; else echo "$prog: cleaned up after failure (rc=$rc)" >&2; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

touch "$W/stamp"; sleep 1   # find -newer resolution

# ---- private files ----------------------------------------------------------------------------
mkdir -p "$W"/{cni/net.d,cni/bin,cni/ipam,cni/direct,cnitool-cache,root,runroot,tmp,volumes,runc,bin}
mkdir -p "$W"/rootfs/{bin,proc,sys,dev,etc,tmp}
cp /bin/busybox "$W/rootfs/bin/busybox"
for a in sh ip ping sleep cat ls ps kill; do ln -s busybox "$W/rootfs/bin/$a"; done

cat >"$W/cni/net.d/rtnet.conflist" <<EOF
{ "cniVersion": "1.0.0", "name": "rtnet", "plugins": [
  { "type": "bridge", "bridge": "pnrtbr0", "isGateway": true, "ipMasq": false,
    "ipam": { "type": "host-local", "subnet": "$SUBNET_PREFIX.0/24", "dataDir": "$W/cni/ipam" } } ] }
EOF
# A logging wrapper per plugin: records each call, then runs the real plugin.
cat >"$W/cni/wrap" <<EOF
#!/bin/sh
n=\${0##*/}
by=\$(tr '\\0' ' ' </proc/\$PPID/cmdline | awk '{ s=\$1; sub(/.*\\//, "", s); for (i = 2; i <= NF && i <= 4; i++) if (\$i !~ /^-/) s = s " " \$i; print s }')
echo "\$n \$CNI_COMMAND ctr=\$(echo "\$CNI_CONTAINERID" | cut -c1-12) netns=\$CNI_NETNS by=[\$by]" >>"$W/cni/calls.log"
exec $plugins/\$n "\$@"
EOF
chmod +x "$W/cni/wrap"
for p in "$plugins"/*; do
  ln -s ../wrap "$W/cni/bin/${p##*/}"
  ln -s "$p" "$W/cni/direct/${p##*/}"
done
: >"$W/cni/calls.log"

# runc keeps container state in /run/runc unless given --root; containers.conf cannot pass
# runtime flags to the exit command (`podman container cleanup`), so wrap the binary instead.
cat >"$W/bin/runc" <<EOF
#!/bin/sh
exec $(command -v runc) --root "$W/runc" "\$@"
EOF
chmod +x "$W/bin/runc"

write_conf() { # FILE PLUGIN_DIR
  cat >"$1" <<EOF
[network]
network_backend = "cni"
cni_plugin_dirs = ["$2"]
network_config_dir = "$W/cni/net.d"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"
tmp_dir = "$W/tmp"
volume_path = "$W/volumes"
# no static_dir: it must stay under graphroot (see docs/runtime-recipe.md, pitfalls)

[engine.runtimes]
runc = ["$W/bin/runc"]
EOF
}
write_conf "$W/containers.conf" "$W/cni/bin"
write_conf "$W/containers-direct.conf" "$W/cni/direct"
cat >"$W/storage.conf" <<EOF
[storage]
driver = "vfs"
graphroot = "$W/root"
runroot = "$W/runroot"
EOF
export CONTAINERS_CONF=$W/containers.conf CONTAINERS_STORAGE_CONF=$W/storage.conf

ip netns add $NODE
ip -n $NODE link set lo up

pm()  { nsenter --net=/run/netns/$NODE -- podman "$@"; }
cnt() { ip netns exec $NODE env CNI_PATH="${CNT_PATH:-$W/cni/bin}" NETCONFPATH="$W/cni/net.d" \
          CNI_CACHE_DIR="$W/cnitool-cache" "$cnitool" "$@"; }
mark() { echo "# $*" >>"$W/cni/calls.log"; }
run_args=(--runtime runc --ulimit nofile=1024:1024 --ulimit nproc=1024:1024
          --network rtnet --rootfs "$W/rootfs")
record() { # NAME: remember the container's id and netns path (sets $id, $sb) for the cleanup
  id=$(pm inspect -f '{{.Id}}' "$1"); sb=$(pm inspect -f '{{.NetworkSettings.SandboxKey}}' "$1")
  ctr_ids+=("$id"); if [ -n "$sb" ]; then sandboxes+=("$sb"); fi
}
check_ctr() { # NAME RUNNER...: address from the subnet, gateway reachable
  local name=$1; shift
  local addr
  addr=$("$@" exec "$name" /bin/busybox ip -4 -o addr show eth0 | grep -o "inet $SUBNET_PREFIX\.[0-9]*" | cut -d' ' -f2) \
    || die "$name has no address from $SUBNET_PREFIX.0/24"
  "$@" exec "$name" /bin/busybox ping -c 1 -W 2 $GW >/dev/null || die "$name cannot ping $GW"
  echo "$addr"
}
check_released() { # ADDR
  [ ! -e "$W/cni/ipam/rtnet/$1" ] || die "host-local still holds $1 after stop"
  ! ip -n $NODE -o link show | grep -q 'veth' || die "a veth is left in $NODE: $(ip -n $NODE -br link)"
  ! ls /var/lib/cni/results 2>/dev/null | grep -q . || die "libcni result cache left in /var/lib/cni/results"
}

# ---- A. podman via nsenter --net (host mount namespace) ---------------------------------------
say "A: podman via nsenter --net=/run/netns/$NODE"
mark "A podman run"
pm run -d --name c1 "${run_args[@]}" /bin/busybox sleep 300 >/dev/null
record c1
addr=$(check_ctr c1 pm)
echo "c1: eth0 $addr/24, ping $GW ok, netns $sb"
grep -q " $sb nsfs" /proc/mounts && echo "c1: its netns mount $sb is visible in the host mount namespace"
[ -e "/var/lib/cni/results/rtnet-$id-eth0" ] && echo "c1: podman's libcni cached the result in /var/lib/cni/results/ (not configurable in podman 4.3)"
say "files written outside $W while c1 runs (/etc /var /run; /tmp depth 1):"
{ find /etc /var /run -xdev -newer "$W/stamp" 2>/dev/null | grep -vE '^/run/netns/pnt-' || true
  find /tmp -maxdepth 1 -xdev -newer "$W/stamp" 2>/dev/null | grep -vxF -e "$W" -e /tmp || true; } | sed 's/^/   /'
mark "A podman stop"
pm stop -t 0 c1 >/dev/null 2>&1
check_released "$addr"
mark "A podman rm"
pm rm c1 >/dev/null
[ ! -e "$sb" ] || die "podman left $sb"
echo "c1: stop released $addr (host-local), removed the veth, the result cache and $sb"

# ---- B. podman via ip netns exec (private mount namespace, /sys remounted) --------------------
# ip netns exec remounts /sys, so runc finds no cgroup mount: remount them first. And every
# podman call for a container must share ONE such mount namespace (one shell), or later calls
# cannot see the netns bind mount podman made and silently skip CNI DEL (leaking the address).
say "B: podman via ip netns exec $NODE (one shell, cgroups remounted)"
if [ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ]; then cgspec=cgroup2; else
  cgspec=$(awk '$5 ~ "^/sys/fs/cgroup/" { split($0, a, " - "); split(a[2], b, " ");
    d = substr($5, 16); if (b[1] == "cgroup2") o = "cgroup2"; else { n = split(b[3], x, ","); o = "";
    for (i = 1; i <= n; i++) if (x[i] != "rw" && x[i] != "ro") o = o (o == "" ? "" : ",") x[i] }
    print d ":" o }' /proc/self/mountinfo | tr '\n' ' ')
fi
cat >"$W/in-ipnetns.sh" <<'EOF'
#!/bin/sh
# Runs inside `ip netns exec`: remount the cgroup hierarchies (this mount namespace only).
set -e
if [ -z "$(ls -A /sys/fs/cgroup 2>/dev/null)" ]; then
  if [ "$CGSPEC" = cgroup2 ]; then mount -t cgroup2 cgroup2 /sys/fs/cgroup; else
    mount -t tmpfs -o mode=755 cgroup /sys/fs/cgroup
    for s in $CGSPEC; do d=${s%%:*} o=${s#*:}; mkdir -p /sys/fs/cgroup/$d
      if [ "$o" = cgroup2 ]; then mount -t cgroup2 cgroup2 /sys/fs/cgroup/$d
      else mount -t cgroup -o "$o" cgroup /sys/fs/cgroup/$d; fi
    done
  fi
fi
podman run -d --name c2 "$@" /bin/busybox sleep 300 >/dev/null
echo "ID $(podman inspect -f '{{.Id}}' c2)"
echo "SB $(podman inspect -f '{{.NetworkSettings.SandboxKey}}' c2)"
echo "ADDR $(podman exec c2 /bin/busybox ip -4 -o addr show eth0 | grep -o 'inet [0-9.]*' | cut -d' ' -f2)"
podman exec c2 /bin/busybox ping -c 1 -W 2 "$GW" >/dev/null && echo "PING ok"
echo "# B podman stop" >>"$CALLS"
podman stop -t 0 c2 >/dev/null 2>&1
echo "# B podman rm" >>"$CALLS"
podman rm c2 >/dev/null
EOF
chmod +x "$W/in-ipnetns.sh"
mark "B podman run"
out=$(ip netns exec $NODE env CGSPEC="$cgspec" GW=$GW CALLS="$W/cni/calls.log" "$W/in-ipnetns.sh" "${run_args[@]}") \
  || die "podman under ip netns exec failed: $out"
id=$(sed -n 's/^ID //p' <<<"$out"); sb=$(sed -n 's/^SB //p' <<<"$out"); addr=$(sed -n 's/^ADDR //p' <<<"$out")
ctr_ids+=("$id"); sandboxes+=("$sb")
grep -q '^PING ok' <<<"$out" || die "c2 cannot ping $GW"
case "$addr" in $SUBNET_PREFIX.*) ;; *) die "c2 has no address from $SUBNET_PREFIX.0/24";; esac
check_released "$addr"
echo "c2: eth0 $addr/24, ping $GW ok; stop released it (DEL ran in the same mount namespace)"

# ---- C. cnitool ADD / CHECK / DEL into pnrt-pod -----------------------------------------------
say "C: cnitool add/check/del rtnet /run/netns/$POD (CNI_CACHE_DIR=$W/cnitool-cache)"
ip netns add $POD
ip -n $POD link set lo up
mark "C cnitool add"
cnt add rtnet /run/netns/$POD >"$W/add.json"
addr=$(ip -n $POD -4 -o addr show eth0 | grep -o "inet $SUBNET_PREFIX\.[0-9]*" | cut -d' ' -f2) \
  || die "cnitool add gave $POD no address"
ip netns exec $POD ping -c 1 -W 2 $GW >/dev/null || die "$POD cannot ping $GW"
ls "$W/cnitool-cache/results/" | grep -q '^rtnet-cnitool-' || die "cnitool did not cache in CNI_CACHE_DIR"
mark "C cnitool check"
cnt check rtnet /run/netns/$POD
mark "C cnitool del"
cnt del rtnet /run/netns/$POD
check_released "$addr"
! ls "$W/cnitool-cache/results/" | grep -q . || die "cnitool del left its cache entry"
echo "$POD: eth0 $addr/24, ping ok, check ok, del released it; cache only in CNI_CACHE_DIR"

say "CNI calls (plugin command container netns caller):"
sed 's/^/   /' "$W/cni/calls.log"

# ---- D. timings (no logging wrappers) ---------------------------------------------------------
p50() { sort -n | awk '{ v[NR] = $1 } END { if (NR) printf "%.1f ms (min %.1f, max %.1f, n=%d)", v[int((NR + 1) / 2)], v[1], v[NR], NR }'; }
now() { echo "${EPOCHREALTIME/./}"; }   # microseconds
if [ "$runs" -gt 0 ]; then
  say "D: timings over $runs runs (plugins unwrapped)"
  export CONTAINERS_CONF=$W/containers-direct.conf
  : >"$W/t.run"; : >"$W/t.stoprm"; : >"$W/t.add"; : >"$W/t.del"
  for i in $(seq "$runs"); do
    t0=$(now); pm run -d --name t "${run_args[@]}" /bin/busybox sleep 300 >/dev/null; t1=$(now)
    ctr_ids+=("$(pm inspect -f '{{.Id}}' t)")
    t2=$(now); pm stop -t 0 t >/dev/null 2>&1; pm rm t >/dev/null; t3=$(now)
    echo "$(( (t1 - t0) ))" | awk '{print $1/1000}' >>"$W/t.run"
    echo "$(( (t3 - t2) ))" | awk '{print $1/1000}' >>"$W/t.stoprm"
  done
  for i in $(seq "$runs"); do
    t0=$(now); CNT_PATH=$W/cni/direct cnt add rtnet /run/netns/$POD >/dev/null; t1=$(now)
    CNT_PATH=$W/cni/direct cnt del rtnet /run/netns/$POD; t2=$(now)
    echo "$(( (t1 - t0) ))" | awk '{print $1/1000}' >>"$W/t.add"
    echo "$(( (t2 - t1) ))" | awk '{print $1/1000}' >>"$W/t.del"
  done
  echo "   podman run -d (bridge+host-local ADD included): p50 $(p50 <"$W/t.run")"
  echo "   podman stop -t 0 + rm (DEL included):          p50 $(p50 <"$W/t.stoprm")"
  echo "   cnitool add (bridge+host-local):               p50 $(p50 <"$W/t.add")"
  echo "   cnitool del (bridge+host-local):               p50 $(p50 <"$W/t.del")"
  export CONTAINERS_CONF=$W/containers.conf
fi

say "files written outside $W since the start (after teardown; /etc /var /run, /tmp depth 1):"
{ find /etc /var /run -xdev -newer "$W/stamp" 2>/dev/null | grep -vE "^/run/netns/(pnt-|$NODE$|$POD$)" || true
  find /tmp -maxdepth 1 -xdev -newer "$W/stamp" 2>/dev/null | grep -vxF -e "$W" -e /tmp || true; } | sed 's/^/   /'
for d in /etc/cni/net.d /etc/containers /var/lib/containers /opt/cni; do
  [ -z "$(find "$d" -xdev -newer "$W/stamp" 2>/dev/null | head -n1)" ] || die "something wrote into $d"
done
echo "   (nothing new in /etc/cni/net.d, /etc/containers, /var/lib/containers, /opt/cni)"
