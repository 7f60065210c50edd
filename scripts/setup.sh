#!/usr/bin/env bash
# Installs what podnet needs on a Debian machine, idempotently: the Debian packages
# (iproute2, etcd-server, iperf3, tcpdump, nftables, bird2, CNI reference plugins, graphviz,
# golang-go, clang, libbpf-dev and bpftool for the eBPF programs), a virtualenv in .venv with podnet and its dev tools, and the compiled CNI plugin
# (scripts/build-plugin.sh, cached outside the repository). Run as root.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

apt_pkgs=(iproute2 etcd-server etcd-client iperf3 sockperf tcpdump nftables bird2 openssl
          containernetworking-plugins graphviz procps iputils-ping ethtool python3-venv golang-go
          clang libbpf-dev bpftool)
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

py=${PODNET_PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$py" -m venv .venv
fi
stamp=.venv/.podnet-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing podnet into .venv"
  .venv/bin/pip install -q -e ".[dev,lab]"
  touch "$stamp"
fi
bash scripts/build-plugin.sh
echo "setup: ready (.venv/bin/podnet)"
