"""The lab adapter: a running lab as the cluster view of the verification commands, read-only.

``LabView`` is a ``podnet.verify.view.PathView``: every host of the lab (underlay hosts, segments,
pods) with its namespace, links and addresses, each node's agent, and the BIRD routers. It reads
the live kernel of each lab namespace (one netlink socket per namespace, opened on first use) and
never changes anything. The topology file supplies roles and segments; the lab's state supplies
the cluster settings it was brought up with (``--set`` overrides included). ``open_lab`` is what
``podnet.cli`` hands the commands when they are asked about a lab; ``lab_agents`` is the same for
``podnet config set``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute

from podnet.configcmd import RunningAgent, TargetError
from podnet.lab import state as st
from podnet.lab.bird import RouterBgpError, bird_dir, birdc
from podnet.lab.cluster import agent_request, agent_socket, node_dir
from podnet.lab.controlplane import lab_store
from podnet.lab.kubeapi import kubeconfig_path
from podnet.lab.topology import Topology, TopologyError, load_topology
from podnet.model import IPAddress
from podnet.store.client import Store
from podnet.verify.view import Link, NoLabUpError, Place, UnderlayPort, ViewError


class LabViewError(ViewError):
    """The lab cannot be read; the message says which lab and what to do."""


def pick_lab(name: str | None) -> str:
    """The lab to use: the one named, else the only lab that is up."""
    if name:
        return name
    labs = [lab for lab in st.known_labs() if st.LabState.load(lab) is not None]
    if len(labs) == 1:
        return labs[0]
    if not labs:
        raise NoLabUpError("no lab is up: start one with `podnet lab up two-subnets`")
    raise LabViewError(f"several labs are up ({', '.join(labs)}): choose one with --lab NAME")


def open_lab(name: str | None) -> LabView:
    """The lab named, or with None the only lab that is up (a ``podnet.verify.view.LabOpener``)."""
    return LabView(pick_lab(name))


@dataclass(frozen=True)
class LabRouter:
    """A lab router running BIRD, asked through its control socket."""

    lab: str
    name: str

    def birdc(self, *command: str) -> str:
        try:
            return birdc(self.lab, self.name, *command)
        except RouterBgpError as e:
            raise LabViewError(str(e)) from e


class LabView:
    """The live lab ``name``; use as a context manager so the netlink sockets get closed."""

    def __init__(self, name: str) -> None:
        state = st.LabState.load(name)
        if state is None:
            raise LabViewError(f"lab {name!r} is not up (podnet lab list shows the labs on this machine)")
        self.name = name
        self.state = state
        try:
            topo = load_topology(state.source)
        except TopologyError as e:
            raise LabViewError(f"lab {name}: cannot read its topology {state.source}: {e}") from e
        # the cluster settings the lab was brought up with (the file's plus any --set overrides)
        settings = state.info.get("cluster")
        cluster = dict(settings) if isinstance(settings, dict) else topo.cluster
        self.topology: Topology = dataclasses.replace(topo, name=name, cluster=cluster)
        self._sockets: dict[str, IPRoute] = {}
        self._addresses: dict[IPAddress, tuple[str, str]] | None = None
        self._links: dict[str, dict[str, Link]] = {}
        self._status: dict[str, dict[str, Any]] = {}
        self._real_pods: dict[str, dict[str, Any]] | None = None
        self.real_pods_error = ""

    def __enter__(self) -> LabView:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for ipr in self._sockets.values():
            ipr.close()
        self._sockets.clear()

    # ---- hosts ---------------------------------------------------------------------------------

    @property
    def lab(self) -> str:
        return self.name

    @property
    def pods(self) -> dict[str, dict[str, Any]]:
        """``{pod: {"node": ..., "ips": [...]}}``: the lab's own pods as it wired them (CNI ADD
        results), and on real nodes the running pods kubelet made (``podnet.lab.kubenode``)."""
        if self._real_pods is None:
            self._real_pods = {}
            if self.topology.real_kubelets:
                from podnet.lab.kubenode import attach_real_pods

                try:
                    self._real_pods = attach_real_pods(self.topology, self.state)
                except Exception as e:  # the API server away: the lab's own pods still show
                    self._real_pods = {}
                    self.real_pods_error = f"cannot list the real nodes' pods: {e}"
        return {**self.state.info.get("podIPs", {}), **self._real_pods}

    @property
    def nodes(self) -> list[str]:
        return [h.name for h in self.topology.nodes]

    def role(self, host: str) -> str:
        if host in self.pods:
            return "pod"
        if host.startswith("sw-"):
            return "segment"
        try:
            return self.topology.host(host).role
        except KeyError:
            return "unknown"

    def hosts(self) -> list[str]:
        """Every host with a namespace: underlay hosts, segments and pods."""
        names = [h.name for h in self.topology.hosts]
        names += [self.segment_host(n.name) for n in self.topology.networks]
        names += sorted(self.pods)
        return [h for h in names if os.path.exists(f"/run/netns/{self.ns(h)}")]

    def segment_host(self, segment: str) -> str:
        return f"sw-{segment}"

    def external_hosts(self) -> list[str]:
        return [h.name for h in self.topology.by_role("external")]

    def cluster_setting(self, key: str, default: Any = None) -> Any:
        return self.topology.cluster.get(key, default)

    def ns(self, host: str) -> str:
        return st.ns_name(self.name, host)

    def ipr(self, host: str) -> IPRoute:
        if host not in self._sockets:
            self._sockets[host] = IPRoute(netns=self.ns(host))
        return self._sockets[host]

    def pods_on(self, node: str) -> list[str]:
        return sorted(p for p, info in self.pods.items() if info.get("node") == node)

    def pod_ip(self, pod: str, family: int | None = None) -> IPAddress:
        """The pod's first address, or its address of ``family``."""
        ips = [ipaddress.ip_address(t) for t in self.pods[pod].get("ips") or []]
        if not ips:
            raise LabViewError(f"pod {pod} of lab {self.name} has no address (CNI ADD gave none)")
        found = [ip for ip in ips if family in (None, ip.version)]
        if not found:
            raise LabViewError(f"pod {pod} of lab {self.name} has no IPv{family} address (it has {ips[0]})")
        return found[0]

    def node_ip(self, host: str, family: int = 4) -> IPAddress:
        """The host's primary address of ``family`` (LabViewError when it has none)."""
        found = self.topology.host(host).primary.address_of(family)
        if found is None:
            raise LabViewError(f"{host} has no IPv{family} address in lab {self.name}'s topology")
        return found.ip

    def underlay_port(self, host: str, dev: str) -> UnderlayPort | None:
        try:
            h = self.topology.host(host)
        except KeyError:
            return None
        return next((UnderlayPort(i.name, i.network) for i in h.interfaces if i.name == dev), None)

    # ---- routers -------------------------------------------------------------------------------

    def routers_by_address(self) -> dict[str, str]:
        return {str(ip): h.name for h in self.topology.routers for i in h.interfaces for ip in i.ips}

    def bgp_routers(self) -> list[LabRouter]:
        """The routers whose BIRD has a control socket."""
        return [LabRouter(self.name, p.stem) for p in sorted(bird_dir(self.name).glob("*.ctl"))]

    def cluster_store(self) -> contextlib.AbstractContextManager[Store]:
        if self.topology.cluster.get("datastore") == "kubernetes":
            raise LabViewError(
                f"lab {self.name} keeps its cluster in the API server (datastore: kubernetes): use kubectl "
                f"--kubeconfig {kubeconfig_path(self.name)} apply -f FILE"
            )
        return lab_store(self.topology)

    def supervised(self) -> list[dict[str, Any]]:
        """The lab's own processes (not the agents: status shows those per node), running or not;
        one that is down says what starts it again (``lab up`` keeps what runs)."""
        found = []
        for rec in self.state.processes:
            if rec.name.startswith("agent-"):
                continue
            running = rec.running()
            row: dict[str, Any] = {"name": rec.name, "pid": rec.pid, "running": running, "log": rec.log}
            if not running:
                row["restart"] = f"podnet lab up {self.name}"
            found.append(row)
        return found

    # ---- kernel state --------------------------------------------------------------------------

    def links(self, host: str) -> dict[str, Link]:
        if host not in self._links:
            found: dict[str, Link] = {}
            for msg in self.ipr(host).get_links():
                info = msg.get_attr("IFLA_LINKINFO")
                kind = info.get_attr("IFLA_INFO_KIND") if info is not None else ""
                name = str(msg.get_attr("IFLA_IFNAME"))
                peer = msg.get_attr("IFLA_LINK")
                found[name] = Link(
                    name,
                    int(msg["index"]),
                    int(msg.get_attr("IFLA_MTU")),
                    kind or "",
                    bool(msg["flags"] & 1),
                    str(msg.get_attr("IFLA_ADDRESS") or "").lower(),
                    int(peer) if kind == "veth" and peer else None,
                )
            self._links[host] = found
        return self._links[host]

    def addresses(self) -> dict[IPAddress, tuple[str, str]]:
        """Every address in the lab: ``ip -> (host, device)`` (loopback excluded)."""
        if self._addresses is None:
            found: dict[IPAddress, tuple[str, str]] = {}
            for host in self.hosts():
                names = {link.index: link.name for link in self.links(host).values()}
                for msg in self.ipr(host).get_addr():
                    ip = ipaddress.ip_address(msg.get_attr("IFA_ADDRESS"))
                    if ip.is_loopback or ip.is_link_local:
                        continue
                    found.setdefault(ip, (host, names.get(int(msg["index"]), "?")))
            self._addresses = found
        return self._addresses

    def owner(self, ip: IPAddress) -> tuple[str, str] | None:
        return self.addresses().get(ip)

    # ---- agents --------------------------------------------------------------------------------

    def agent_socket(self, node: str) -> Path:
        return agent_socket(self.name, node)

    def agent_status(self, node: str) -> dict[str, Any]:
        """The node agent's status document, or ``{"error": ...}`` when the agent does not answer."""
        if node not in self._status:
            try:
                self._status[node] = agent_request(self.name, node, {"op": "status"}, timeout=5.0)
            except (OSError, ValueError) as e:
                self._status[node] = {"error": f"agent of {node} does not answer: {e}"}
        return self._status[node]

    # ---- names to places -----------------------------------------------------------------------

    def resolve(self, target: str, family: int | None = None) -> Place:
        """A pod, host or address as a place: ``pod1``, ``node2``, ``world``, ``10.244.2.2``; a
        pod or host by its address of ``family`` when one is asked for (IPv4 by default)."""
        if target in self.pods:
            return Place(target, self.pod_ip(target, family), "pod")
        try:
            host = self.topology.host(target)
        except KeyError:
            pass
        else:
            return Place(host.name, self.node_ip(host.name, family or 4), host.role)
        try:
            ip = ipaddress.ip_address(target)
        except ValueError:
            known = ", ".join([*self.pods, *(h.name for h in self.topology.hosts)])
            raise LabViewError(
                f"{target!r} is no pod, host or address of lab {self.name} ({known})"
            ) from None
        owner = self.owner(ip)
        return Place(owner[0], ip, self.role(owner[0])) if owner else Place(str(ip), ip, "address")


def lab_agents(lab: str, node: str | None) -> list[RunningAgent]:
    """The lab's agents (``node``'s only, if given) for ``podnet config set``: each one's file under
    the lab's node directory, SIGHUP to its recorded PID while it runs, its socket to watch."""
    state = st.LabState.load(lab)
    if state is None:
        raise TargetError(f"no lab named {lab} (podnet lab list)")
    found: list[RunningAgent] = []
    for rec in state.processes:
        name = rec.name.removeprefix("agent-")
        if rec.name == name or (node and name != node):
            continue
        pid = rec.pid if rec.running() else None
        found.append(RunningAgent(name, node_dir(lab, name) / "agent.yaml", pid, agent_socket(lab, name)))
    if not found:
        raise TargetError(f"lab {lab} has no agent{' on ' + node if node else ''}")
    return found
