"""What ``podnet diagnose`` says about the control plane beside a path's verdict: BIRD routers that
do not answer, BGP sessions down, agents that cannot reach their store or API server. Not the
path's verdict (pods keep their traffic while the store is away), but why new pods, nodes or
routes do not appear."""

from __future__ import annotations

from podnet.bgp.birdc import parse_protocols
from podnet.verify import explain
from podnet.verify.view import PathView, ViewError, agent_document

BIRD_START = "in a lab, `podnet lab up` with the lab's topology file starts it again"


class ControlPlane:
    def __init__(self, view: PathView) -> None:
        self.view = view
        self._birds_down: list[tuple[str, str]] | None = None

    def birds_down(self) -> list[tuple[str, str]]:
        """(router, what failed) for each router a node peers with whose BIRD does not answer."""
        if self._birds_down is None:
            by_address = self.view.routers_by_address()
            peered = {
                by_address[peer.peer_address]
                for node in self.view.nodes
                for peer in agent_document(self.view, node).bgp.peers
                if peer.peer_address in by_address
            }
            answering = {r.name: r for r in self.view.bgp_routers()}
            found = []
            for router in sorted(peered):
                if router not in answering:
                    found.append((router, "its control socket is gone"))
                    continue
                try:
                    answering[router].birdc("show", "status")
                except ViewError as e:
                    found.append((router, str(e).split(" (is BGP")[0]))
            self._birds_down = found
        return self._birds_down

    def router_sessions_down(self) -> list[str]:
        """``r1 -> r2 (172.16.9.2, AS64513) is active`` for each BGP session a router's BIRD
        has that is not established (the sessions between routers carry pod CIDRs too)."""
        names = self.view.routers_by_address()
        found = []
        down = {router for router, _ in self.birds_down()}
        for router in self.view.bgp_routers():
            if router.name in down:
                continue
            try:
                sessions = parse_protocols(router.birdc("show", "protocols", "all"))
            except ViewError:
                continue
            for s in sessions:
                if s.get("state") == "established":
                    continue
                address = str(s.get("peerAddress"))
                peer = names.get(address) or s.get("description") or s.get("name")
                found.append(f"{router.name} -> {peer} ({address}, AS{s.get('peerASN')}) is {s.get('state')}")
        return found

    def warnings(self) -> list[str]:
        """What the agents say about their store and BGP: not the path's verdict (pods keep their
        traffic while the store is away), but why new pods, nodes or routes do not appear."""
        found = [
            "; ".join(explain.bird_down(router, detail, BIRD_START)) for router, detail in self.birds_down()
        ]
        found += [
            f"BGP session {s}: the pod CIDRs it carries are withdrawn" for s in self.router_sessions_down()
        ]
        for node in self.view.nodes:
            doc = agent_document(self.view, node)
            if doc.unanswered:
                found.append(
                    f"the agent on {node} does not answer ({doc.unanswered}): start it (`podnet status`)"
                )
                continue
            store = doc.kvstore
            if store.unreachable:
                where = store.active or ", ".join(store.endpoints)
                found.append(
                    f"the agent on {node} cannot reach etcd ({where}): {store.error}; pods keep their "
                    "traffic, but new pods, nodes and routes do not propagate: bring etcd back or fix its "
                    "address/certificates (etcd.endpoints)"
                )
            kube = doc.kubernetes
            if kube.unreachable:
                found.append(
                    f"the agent on {node} cannot reach the Kubernetes API server: {kube.error}; "
                    "new pods and nodes do not propagate until it answers"
                )
            for peer in doc.bgp.down():
                found.append(
                    f"BGP session {node} -> {peer.peer_address} (AS{peer.peer_asn}) is "
                    f"{peer.state}: the routers do not learn {node}'s pod CIDRs from it"
                )
        return found
