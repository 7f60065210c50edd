"""The agent's one frozen, validated configuration, read from YAML, environment and CLI flags.

Cilium's names are accepted as they are (camelCase Helm values such as ``routingMode`` or nested
``ipam.operator.clusterPoolIPv4PodCIDRList``, kebab-case agent flags such as ``routing-mode``,
the old ``tunnel: disabled|<tunnelProtocol>``), and so are ``PODNET_<NAME>`` environment variables.
Precedence: CLI overrides > environment > YAML mapping > defaults. Every error is a
``ConfigError`` that names the key, the bad value and what to use instead; unknown keys are
refused with a "did you mean" suggestion, because a typo that silently falls back to a default is
the worst kind of misconfiguration. Nothing here reads a global: pass the ``AgentConfig`` along.
"""

from __future__ import annotations

import difflib
import functools
import ipaddress
import os
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from podnet.config.bgp import BgpPeer, BgpSettingError, parse_advertise, parse_asn, parse_peers
from podnet.config.errors import ConfigError
from podnet.config.families import family_conflicts
from podnet.config.modesettings import Setting
from podnet.config.values import (
    as_bool,
    as_choice,
    as_cidr,
    as_cidr6,
    as_duration,
    as_ifname,
    as_int,
    as_list,
    as_text,
    yaml_text,
)
from podnet.registry import IPAM_MODES, ROUTING_MODES, TUNNEL_PROTOCOLS
from podnet.specs import tunnel as tunnel_spec

MTU_MIN, MTU_MAX = 576, 65535
ENV_PREFIX = "PODNET_"


@dataclass(frozen=True)
class AgentConfig:
    """Everything the agent needs to know, validated once. ``tunnel_port`` is already resolved
    (0 in the input becomes the protocol's default port) and ``mtu`` 0 means "from the device"."""

    node_name: str
    routing_mode: str = "tunnel"
    tunnel_protocol: str = field(default_factory=tunnel_spec.default_name)
    tunnel_port: int = field(default_factory=tunnel_spec.default_port)  # load_config: the chosen protocol's
    auto_direct_node_routes: bool = False
    direct_routing_skip_unreachable: bool = False
    ipv4_native_routing_cidr: ipaddress.IPv4Network | None = None
    ipv6_native_routing_cidr: ipaddress.IPv6Network | None = None
    tunnel_fallback: bool = False  # native routing, tunnel to peers it cannot route (configuration.md)
    mtu: int = 0
    ipam_mode: str = "cluster-pool"
    cluster_pool_ipv4_cidrs: tuple[ipaddress.IPv4Network, ...] = (ipaddress.IPv4Network("10.0.0.0/8"),)
    cluster_pool_ipv4_mask_size: int = 24
    cluster_pool_ipv6_cidrs: tuple[ipaddress.IPv6Network, ...] = (ipaddress.IPv6Network("fd00::/104"),)
    cluster_pool_ipv6_mask_size: int = 120
    enable_ipv4: bool = True  # ipv4.enabled
    enable_ipv6: bool = False  # ipv6.enabled: dual stack (pods get an address of each family)
    underlay_protocol: str = "ipv4"  # underlayProtocol: the family node-to-node traffic uses
    datastore: str = "etcd"  # where node records live: the embedded etcd, or "kubernetes" (CRDs)
    k8s_kubeconfig_path: Path | None = None  # datastore: kubernetes; none: the pod's service account
    etcd_endpoints: tuple[str, ...] = ()
    etcd_trusted_ca_file: Path | None = None  # mutual TLS to etcd (Cilium's etcd config names)
    etcd_cert_file: Path | None = None
    etcd_key_file: Path | None = None
    enable_ipv4_masquerade: bool = True
    enable_ipv6_masquerade: bool = True
    egress_masquerade_interfaces: tuple[
        str, ...
    ] = ()  # where pod traffic is masqueraded (default: devices[0])
    enable_source_ip_verification: bool = True  # a pod sends only from its own addresses
    pod_guard: bool = True  # pods reach neither the store, BGP, tunnel ports nor the node's services
    # bpf.hostLegacyRouting: false routes pod packets in eBPF past the node's IP stack (falling back to
    # the kernel where the program cannot run; the default, as in Cilium); true: the kernel routes
    bpf_host_legacy_routing: bool = False
    # enableIPv4BIGTCP / enableIPv6BIGTCP: pods and the underlay device send 192 KiB TCP packets
    # (datapath.bigtcp; native routing only, as in Cilium)
    enable_ipv4_big_tcp: bool = False
    enable_ipv6_big_tcp: bool = False
    drop_events: bool = True  # bpf.events.drop.enabled: the guard's drops reported one by one
    pod_guard_node_ports: tuple[tuple[str, int], ...] = ()  # ("tcp", 9100): node ports pods may use
    endpoint_gc_interval: float = 300.0  # seconds between sweeps for pods whose namespace is gone; 0: off
    agent_socket: Path = Path("/var/run/podnet/agent.sock")
    state_dir: Path = Path("/var/lib/podnet")
    devices: tuple[str, ...] = field(default=())
    # --- bgp (Cilium's BGP control plane names; see docs/bgp.md) ---
    bgp_enabled: bool = False
    bgp_local_asn: int | None = None
    bgp_peers: tuple[BgpPeer, ...] = ()
    bgp_advertise: tuple[str, ...] = ("PodCIDR",)
    # the IPAM modes' own settings given (``config.modesettings``), by name; read with ``setting``
    ipam_settings: tuple[tuple[str, Any], ...] = ()

    def setting(self, name: str) -> Any:
        """An IPAM mode's setting (``IpamSpec.settings``): its value, or its default."""
        for key, value in self.ipam_settings:
            if key == name:
                return value
        return _mode_fields()[name].default

    def mode_settings(self) -> dict[str, Any]:
        """The configured IPAM mode's own settings, by name (what its allocator is given)."""
        own = IPAM_MODES.spec(self.ipam_mode).part("settings")
        return {name: self.setting(name) for name in (own.fields if own else ())}

    @property
    def underlay_device(self) -> str | None:
        """The device that carries node-to-node traffic (Cilium's first ``devices`` entry)."""
        return self.devices[0] if self.devices else None


# ---------------------------------------------------------------------------------------------
# Key spellings. Matching ignores case, "-", "_" and "." so that routingMode, routing-mode,
# ROUTING_MODE (env) and routing_mode all land on the same field.

_ALIASES: dict[str, tuple[str, ...]] = {
    "node_name": ("nodeName", "node-name", "k8s-node-name"),
    "routing_mode": ("routingMode", "routing-mode"),
    "tunnel_protocol": ("tunnelProtocol", "tunnel-protocol"),
    "tunnel_port": ("tunnelPort", "tunnel-port"),
    "auto_direct_node_routes": ("autoDirectNodeRoutes", "auto-direct-node-routes"),
    "direct_routing_skip_unreachable": ("directRoutingSkipUnreachable", "direct-routing-skip-unreachable"),
    "ipv4_native_routing_cidr": ("ipv4NativeRoutingCIDR", "ipv4-native-routing-cidr", "native-routing-cidr"),
    "ipv6_native_routing_cidr": ("ipv6NativeRoutingCIDR", "ipv6-native-routing-cidr"),
    "tunnel_fallback": ("tunnelFallback", "tunnel-fallback"),
    "mtu": ("MTU", "mtu"),
    "ipam_mode": ("ipam.mode", "ipam"),
    "cluster_pool_ipv4_cidrs": (
        "ipam.operator.clusterPoolIPv4PodCIDRList",
        "ipam.operator.clusterPoolIPv4PodCIDR",
        "cluster-pool-ipv4-cidr",
    ),
    "cluster_pool_ipv4_mask_size": ("ipam.operator.clusterPoolIPv4MaskSize", "cluster-pool-ipv4-mask-size"),
    "cluster_pool_ipv6_cidrs": ("ipam.operator.clusterPoolIPv6PodCIDRList", "cluster-pool-ipv6-cidr"),
    "cluster_pool_ipv6_mask_size": ("ipam.operator.clusterPoolIPv6MaskSize", "cluster-pool-ipv6-mask-size"),
    "enable_ipv4": ("ipv4.enabled", "enable-ipv4"),
    "enable_ipv6": ("ipv6.enabled", "enable-ipv6"),
    "underlay_protocol": ("underlayProtocol", "underlay-protocol"),
    "datastore": ("datastore", "podnet-datastore"),
    "k8s_kubeconfig_path": ("k8sKubeconfigPath", "k8s-kubeconfig-path"),
    "etcd_endpoints": ("etcd.endpoints", "etcd-endpoints"),
    "etcd_trusted_ca_file": (
        "etcd.trustedCAFile",
        "etcd.caFile",
        "etcd.trusted-ca-file",
        "etcd-trusted-ca-file",
    ),
    "etcd_cert_file": ("etcd.certFile", "etcd.cert-file", "etcd-cert-file"),
    "etcd_key_file": ("etcd.keyFile", "etcd.key-file", "etcd-key-file"),
    "enable_ipv4_masquerade": ("enableIPv4Masquerade", "enable-ipv4-masquerade"),
    "enable_ipv6_masquerade": ("enableIPv6Masquerade", "enable-ipv6-masquerade"),
    "egress_masquerade_interfaces": ("egressMasqueradeInterfaces", "egress-masquerade-interfaces"),
    "enable_source_ip_verification": ("enableSourceIPVerification", "enable-source-ip-verification"),
    "pod_guard": ("podGuard.enabled", "pod-guard"),
    "bpf_host_legacy_routing": ("bpf.hostLegacyRouting", "enable-host-legacy-routing"),
    "enable_ipv4_big_tcp": ("enableIPv4BIGTCP", "enable-ipv4-big-tcp"),
    "enable_ipv6_big_tcp": ("enableIPv6BIGTCP", "enable-ipv6-big-tcp"),
    "drop_events": ("bpf.events.drop.enabled", "bpf-events-drop-enabled"),
    "pod_guard_node_ports": ("podGuard.nodePorts", "pod-guard-node-ports"),
    "endpoint_gc_interval": ("endpointGCInterval", "endpoint-gc-interval"),
    "agent_socket": ("agentSocket", "agent-socket"),
    "state_dir": ("stateDir", "state-dir"),
    "devices": ("devices", "device"),
    # --- bgp ---
    "bgp_enabled": ("bgp.enabled", "bgpControlPlane.enabled", "enable-bgp-control-plane"),
    "bgp_local_asn": ("bgp.localASN", "bgp-local-asn"),
    "bgp_peers": ("bgp.peers", "bgp-peers"),
    "bgp_advertise": ("bgp.advertise", "bgp-advertise"),
}
# Legacy spellings that are translated rather than stored as they are.
_LEGACY = {
    "tunnel": "tunnel",  # tunnel: disabled | <a tunnelProtocol>  (Cilium < 1.14)
    "enable_ipv4_native_routing": "enable-ipv4-native-routing",
    "kvstore": "kvstore",
    "kvstore_opt": "kvstore-opt",
}


def _norm(key: str) -> str:
    return key.lower().replace("-", "").replace("_", "").replace(".", "")


@functools.cache
def _mode_fields() -> dict[str, Setting]:
    """Every IPAM mode's own settings (``IpamSpec.settings``), by name."""
    found: dict[str, Setting] = {}
    for spec in IPAM_MODES.specs():
        own = spec.part("settings")
        found.update(own.fields if own else {})
    return found


def ipam_setting_names() -> tuple[str, ...]:
    return tuple(sorted(_mode_fields()))


def _aliases() -> dict[str, tuple[str, ...]]:
    return {**_ALIASES, **{name: s.aliases for name, s in _mode_fields().items()}}


@functools.cache
def _key_index() -> dict[str, str]:
    index = {_norm(k): f for f, names in _aliases().items() for k in (f, *names)}
    index.update({_norm(k): f"legacy:{f}" for f, k in _LEGACY.items()})
    return index


def _spellings() -> tuple[str, ...]:
    return tuple(n for names in _aliases().values() for n in names) + tuple(_LEGACY.values())


# keys whose value is a mapping (not flattened further)
def _map_valued() -> tuple[str, ...]:
    return ("legacy:kvstore_opt", *(name for name, s in _mode_fields().items() if s.mapping))


def _flatten(mapping: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    """Nested YAML (``ipam: {operator: {...}}``) as dotted keys; known leaf keys stay whole."""
    for key, value in mapping.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and _key_index().get(_norm(dotted)) not in _map_valued():
            yield from _flatten(value, f"{dotted}.")
        else:
            yield dotted, value


def _resolve_key(key: str, source: str) -> str:
    found = _key_index().get(_norm(key))
    if found is None:
        close = difflib.get_close_matches(key, _spellings(), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(sorted(_aliases()))}"
        raise ConfigError(key, f"unknown key (from {source}){hint}")
    return found


def _collect(
    mapping: Mapping[str, Any] | None, env: Mapping[str, str] | None, overrides: Mapping[str, Any] | None
) -> dict[str, tuple[str, Any]]:
    """field -> (key as the user spelled it, raw value), later sources winning."""
    raw: dict[str, tuple[str, Any]] = {}
    for key, value in _flatten(mapping or {}):
        raw[_resolve_key(key, "config file")] = (key, value)
    for name, value in (env or {}).items():
        # Unknown PODNET_* variables are ignored: other podnet programs read their own.
        if name.startswith(ENV_PREFIX) and _norm(name[len(ENV_PREFIX) :]) in _key_index():
            raw[_key_index()[_norm(name[len(ENV_PREFIX) :])]] = (name, value)
    for key, value in (overrides or {}).items():
        if value is not None:
            raw[_resolve_key(key, "command line")] = (key, value)
    return raw


_PARSERS: dict[str, Callable[[str, Any], Any]] = {
    "node_name": as_text,
    "routing_mode": lambda k, v: as_choice(k, v, _routing_modes()),
    "tunnel_protocol": lambda k, v: as_choice(k, v, TUNNEL_PROTOCOLS.names()),
    "tunnel_port": lambda k, v: as_int(k, v, 1, 65535, zero_ok=True),
    "auto_direct_node_routes": as_bool,
    "direct_routing_skip_unreachable": as_bool,
    "ipv4_native_routing_cidr": lambda k, v: as_cidr(k, v) if str(v).strip() else None,
    "ipv6_native_routing_cidr": lambda k, v: as_cidr6(k, v) if str(v).strip() else None,
    "tunnel_fallback": as_bool,
    "mtu": lambda k, v: as_int(k, v, MTU_MIN, MTU_MAX, zero_ok=True),
    "ipam_mode": lambda k, v: as_choice(k, v, IPAM_MODES.names()),
    "cluster_pool_ipv4_cidrs": lambda k, v: tuple(as_cidr(k, c) for c in as_list(v)),
    "cluster_pool_ipv4_mask_size": lambda k, v: as_int(k, v, 1, 32),
    "cluster_pool_ipv6_cidrs": lambda k, v: tuple(as_cidr6(k, c) for c in as_list(v)),
    "cluster_pool_ipv6_mask_size": lambda k, v: as_int(k, v, 1, 128),
    "enable_ipv4": as_bool,
    "enable_ipv6": as_bool,
    "underlay_protocol": lambda k, v: as_choice(k, v, ("ipv4", "ipv6")),
    "datastore": lambda k, v: as_choice(k, v, ("etcd", "kubernetes")),
    "k8s_kubeconfig_path": lambda k, v: _file(k, v),
    "etcd_endpoints": lambda k, v: as_list(v),
    "etcd_trusted_ca_file": lambda k, v: _file(k, v),
    "etcd_cert_file": lambda k, v: _file(k, v),
    "etcd_key_file": lambda k, v: _file(k, v),
    "enable_ipv4_masquerade": as_bool,
    "enable_ipv6_masquerade": as_bool,
    "egress_masquerade_interfaces": lambda k, v: tuple(as_ifname(k, i) for i in as_list(v)),
    "enable_source_ip_verification": as_bool,
    "pod_guard": as_bool,
    "bpf_host_legacy_routing": as_bool,
    "enable_ipv4_big_tcp": as_bool,
    "enable_ipv6_big_tcp": as_bool,
    "drop_events": as_bool,
    "pod_guard_node_ports": lambda k, v: tuple(_port(k, p) for p in as_list(v)),
    "endpoint_gc_interval": as_duration,
    "agent_socket": lambda k, v: Path(as_text(k, v)),
    "state_dir": lambda k, v: Path(as_text(k, v)),
    "devices": lambda k, v: as_list(v),
    # --- bgp ---
    "bgp_enabled": as_bool,
    "bgp_local_asn": lambda k, v: _bgp(parse_asn, k, v),
    "bgp_peers": lambda k, v: _bgp(parse_peers, k, yaml_text(v)),
    "bgp_advertise": lambda k, v: _bgp(parse_advertise, k, v),
}


def _routing_modes() -> set[str]:
    """The routingMode values the registered modes serve (the hybrid serves "native" too)."""
    return {spec.routing_mode for spec in ROUTING_MODES.specs()}


def _file(key: str, value: Any) -> Path | None:
    text = str(value).strip()
    return Path(text) if text else None


def _port(key: str, value: str) -> tuple[str, int]:
    """``9100/tcp`` (or ``53/udp``; a bare number means TCP) as ("tcp", 9100)."""
    number, _, proto = value.partition("/")
    proto = (proto or "tcp").lower()
    if proto not in ("tcp", "udp"):
        raise ConfigError(key, f"{value!r}: the protocol must be tcp or udp, e.g. 9100/tcp")
    return proto, as_int(key, number, 1, 65535)


def _bgp(parser: Callable[[str, Any], Any], key: str, value: Any) -> Any:
    """The bgp section's parsers live in podnet.config.bgp; their errors become ConfigErrors."""
    try:
        return parser(key, value)
    except BgpSettingError as exc:
        raise ConfigError(exc.key, str(exc)) from None


def _apply_legacy(raw: dict[str, tuple[str, Any]], values: dict[str, Any]) -> None:
    """Translate Cilium's older spellings into the current fields, refusing contradictions."""

    def put(fld: str, value: Any, key: str) -> None:
        if fld in values and values[fld] != value:
            raise ConfigError(
                key,
                f"means {_aliases()[fld][0]}={value!r}, which contradicts {raw[fld][0]}={values[fld]!r}; "
                f"drop {key} (the old spelling) and keep {raw[fld][0]}",
            )
        values[fld] = value

    if "legacy:tunnel" in raw:
        key, value = raw["legacy:tunnel"]
        choice = as_choice(key, value, ("disabled", *TUNNEL_PROTOCOLS.names()))
        if choice == "disabled":
            put("routing_mode", "native", key)
        else:
            put("routing_mode", "tunnel", key)
            put("tunnel_protocol", choice, key)
    if "legacy:enable_ipv4_native_routing" in raw:
        key, value = raw["legacy:enable_ipv4_native_routing"]
        put("routing_mode", "native" if as_bool(key, value) else "tunnel", key)
    if "legacy:kvstore" in raw:
        key, value = raw["legacy:kvstore"]
        as_choice(key, value, ("etcd",))
    if "legacy:kvstore_opt" in raw:
        key, value = raw["legacy:kvstore_opt"]
        opts = dict(value) if isinstance(value, Mapping) else _kv_pairs(key, value)
        endpoints = opts.get("etcd.endpoints")
        if endpoints is None:
            raise ConfigError(key, f"{value!r} has no etcd.endpoints; use etcd.endpoints=http://HOST:2379")
        put("etcd_endpoints", as_list(endpoints), key)


def _kv_pairs(key: str, value: Any) -> dict[str, str]:
    """``etcd.endpoints=http://a:2379,http://b:2379`` (Cilium's kvstore-opt) as a dict."""
    text = str(value).strip()
    if "=" not in text:
        raise ConfigError(key, f"{value!r} is not KEY=VALUE; use etcd.endpoints=http://HOST:2379")
    name, _, rest = text.partition("=")
    return {name.strip(): rest.strip()}


def _validate(cfg: AgentConfig, raw: Mapping[str, tuple[str, Any]]) -> None:
    """Rules that involve more than one key (Cilium refuses the same combinations)."""

    def name(fld: str) -> str:
        return raw[fld][0] if fld in raw else _aliases()[fld][0]

    if cfg.routing_mode == "tunnel" and cfg.auto_direct_node_routes:
        raise ConfigError(
            name("auto_direct_node_routes"),
            "true cannot be used with routingMode=tunnel (packets must go through the tunnel "
            "device); use routingMode=native with autoDirectNodeRoutes=true, or set it to false",
        )
    if cfg.direct_routing_skip_unreachable and not cfg.auto_direct_node_routes:
        raise ConfigError(
            name("direct_routing_skip_unreachable"),
            "true requires autoDirectNodeRoutes=true (it only decides what direct routes to skip)",
        )
    if cfg.tunnel_fallback and cfg.routing_mode != "native":
        raise ConfigError(
            name("tunnel_fallback"),
            "true only makes sense with routingMode=native (tunnel mode encapsulates everything already)",
        )
    masquerade4 = cfg.enable_ipv4 and cfg.enable_ipv4_masquerade
    if cfg.routing_mode == "native" and masquerade4 and cfg.ipv4_native_routing_cidr is None:
        raise ConfigError(
            name("ipv4_native_routing_cidr"),
            "must be set when routingMode=native and enableIPv4Masquerade=true (the CIDR that is routed "
            "without masquerading, e.g. 10.244.0.0/16); or set enableIPv4Masquerade=false",
        )
    for pool in cfg.cluster_pool_ipv4_cidrs:
        if cfg.cluster_pool_ipv4_mask_size < pool.prefixlen:
            raise ConfigError(
                name("cluster_pool_ipv4_mask_size"),
                f"{cfg.cluster_pool_ipv4_mask_size} is shorter than the pool {pool}; use a mask size "
                f"between {pool.prefixlen} and 30",
            )
    if cfg.cluster_pool_ipv4_mask_size > 30:
        raise ConfigError(
            name("cluster_pool_ipv4_mask_size"),
            f"{cfg.cluster_pool_ipv4_mask_size} leaves no room for pods; use 30 or less (24 is usual)",
        )
    needs_kube = IPAM_MODES.spec(cfg.ipam_mode).needs_kubernetes
    if needs_kube and cfg.datastore != "kubernetes":
        on_etcd = " or ".join(s.name for s in IPAM_MODES.specs() if not s.needs_kubernetes and s.operator)
        raise ConfigError(
            name("ipam_mode"),
            f"{cfg.ipam_mode} ({needs_kube}) needs datastore: kubernetes; set it, or use ipam.mode "
            f"{on_etcd} with etcd",
        )
    if cfg.ipam_mode == "cluster-pool" and not cfg.cluster_pool_ipv4_cidrs:
        raise ConfigError(name("cluster_pool_ipv4_cidrs"), "is empty; give at least one IPv4 CIDR")
    tls = (cfg.etcd_trusted_ca_file, cfg.etcd_cert_file, cfg.etcd_key_file)
    if any(tls) and not all(tls):
        raise ConfigError(
            name("etcd_trusted_ca_file"),
            "etcd's mutual TLS needs all three of etcd.trustedCAFile, etcd.certFile and etcd.keyFile",
        )
    if any(e.startswith("https://") for e in cfg.etcd_endpoints) and not all(tls):
        raise ConfigError(
            name("etcd_endpoints"),
            "https endpoints need etcd.trustedCAFile, etcd.certFile and etcd.keyFile (mutual TLS)",
        )
    _validate_bgp(cfg, name)
    _validate_big_tcp(cfg, name)
    for fld, message in family_conflicts(
        cfg.enable_ipv4, cfg.enable_ipv6, cfg.underlay_protocol, cfg.routing_mode, cfg.enable_ipv6_masquerade,
        cfg.ipv6_native_routing_cidr, cfg.cluster_pool_ipv6_cidrs, cfg.cluster_pool_ipv6_mask_size,
    ):  # fmt: skip
        raise ConfigError(name(fld), message)
    problem = tunnel_spec.spec(cfg.tunnel_protocol).underlay_problem(
        6 if cfg.underlay_protocol == "ipv6" else 4
    )
    if problem:
        raise ConfigError(name("tunnel_protocol"), problem)
    own = IPAM_MODES.spec(cfg.ipam_mode).part("settings")
    for fld, message in own.conflicts(cfg) if own else ():
        raise ConfigError(name(fld), message)


def _validate_big_tcp(cfg: AgentConfig, name: Callable[[str], str]) -> None:
    """BIG TCP needs native routing (Cilium's rule: an encapsulated packet's outer length has 16
    bits) and the family it is for."""
    for fld, on, family, family_on in (
        ("enable_ipv4_big_tcp", cfg.enable_ipv4_big_tcp, "IPv4", cfg.enable_ipv4),
        ("enable_ipv6_big_tcp", cfg.enable_ipv6_big_tcp, "IPv6", cfg.enable_ipv6),
    ):
        if not on:
            continue
        if cfg.routing_mode != "native" or cfg.tunnel_fallback:
            raise ConfigError(
                name(fld),
                "true needs routingMode=native without tunnelFallback (a tunnel cannot carry packets "
                "above 64 KiB); set routingMode=native or turn BIG TCP off",
            )
        if not family_on:
            raise ConfigError(name(fld), f"true needs {family} on ({family.lower()}.enabled=true)")


def _validate_bgp(cfg: AgentConfig, name: Callable[[str], str]) -> None:
    """bgp.enabled needs a local ASN, at least one peer and something to advertise."""
    if not cfg.bgp_enabled:
        return
    if cfg.bgp_local_asn is None:
        raise ConfigError(name("bgp_local_asn"), "missing; bgp.enabled=true needs the node's AS number")
    if not cfg.bgp_peers:
        raise ConfigError(
            name("bgp_peers"), "is empty; bgp.enabled=true needs at least one {peerAddress, peerASN}"
        )
    if not cfg.bgp_advertise:
        raise ConfigError(name("bgp_advertise"), "is empty; advertise PodCIDR (or set bgp.enabled=false)")


def load_config(
    mapping: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> AgentConfig:
    """Build and validate the agent's config. ``env`` defaults to nothing (pass ``os.environ``
    explicitly); ``overrides`` are CLI flags, ``None`` values meaning "flag not given"."""
    raw = _collect(mapping, env, overrides)
    values: dict[str, Any] = {}
    own: dict[str, Any] = {}
    for fld, (key, value) in raw.items():
        if fld in _mode_fields():
            own[fld] = _mode_fields()[fld].parse(key, value)
        elif not fld.startswith("legacy:"):
            values[fld] = _PARSERS[fld](key, value)
    values["ipam_settings"] = tuple(sorted(own.items()))
    _apply_legacy(raw, values)
    if "node_name" not in values:
        values["node_name"] = (env or {}).get("K8S_NODE_NAME") or socket.gethostname()
    protocol = tunnel_spec.spec(values.get("tunnel_protocol") or tunnel_spec.default_name())
    if not values.get("tunnel_port"):
        values["tunnel_port"] = protocol.default_port
    cfg = AgentConfig(**values)
    _validate(cfg, raw)
    return cfg


def one_setting(mapping: Mapping[str, Any], fld: str) -> Any:
    """One setting of a settings mapping, parsed (its default when the mapping names it not),
    without validating the rest: for checks that run before the whole config is (the lab's
    topology). Raises ``ConfigError`` when that one setting is bad."""
    raw = _collect(mapping, None, None)
    own = _mode_fields().get(fld)
    if fld not in raw:
        if own is not None:
            return own.default
        field_ = AgentConfig.__dataclass_fields__[fld]
        return field_.default_factory() if callable(field_.default_factory) else field_.default
    key, value = raw[fld]
    return own.parse(key, value) if own is not None else _PARSERS[fld](key, value)


def load_config_file(
    path: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> AgentConfig:
    """``load_config`` over a YAML file (an empty file means all defaults; a key given twice is
    refused)."""
    import yaml

    from podnet.config.yamlfile import load_yaml

    try:
        data = load_yaml(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(str(path), f"cannot read the config file: {exc}") from None
    if not isinstance(data, Mapping):
        raise ConfigError(str(path), "the config file must hold a YAML mapping (key: value lines)")
    return load_config(data, env, overrides)
