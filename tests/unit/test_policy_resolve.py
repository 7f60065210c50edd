"""NetworkPolicy (issue 28), pure: validation as the API server does it, and what podnet's
resolved entries allow compared with an independent oracle (tests/policyoracle.py) on the
upstream e2e world (namespaces x, y, z; pods a, b, c; TCP and UDP on 80 and 81), for the
upstream cases and for random policies."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from policycases import UPSTREAM, pol
from policyoracle import allowed as oracle

from podnet.policy import nft
from podnet.policy.model import PolicyError, parse_policies, parse_policy
from podnet.policy.resolve import PodInfo, allowed, resolve

NAMESPACES = ("x", "y", "z")
PODS = ("a", "b", "c")
PROBES = [(proto, port) for proto in ("TCP", "UDP") for port in (80, 81)]


def world() -> tuple[list[dict[str, Any]], dict[str, dict[str, str]]]:
    pods = []
    for i, ns in enumerate(NAMESPACES):
        for j, name in enumerate(PODS):
            named = {(f"serve-{p}-{proto.lower()}", proto): p for proto, p in PROBES}
            pods.append(
                {
                    "namespace": ns,
                    "name": name,
                    "labels": {"pod": name},
                    "ip": f"10.{i}.{j}.2",
                    "namedPorts": named,
                }
            )
    return pods, {ns: {"ns": ns} for ns in NAMESPACES}


def infos(pods: list[dict[str, Any]]) -> list[PodInfo]:
    return [
        PodInfo(
            p["namespace"],
            p["name"],
            p["labels"],
            (ipaddress.ip_address(p["ip"]),),
            tuple((n, proto, port) for (n, proto), port in p["namedPorts"].items()),
        )
        for p in pods
    ]


def compare(policies: list[dict[str, Any]]) -> None:
    pods, ns_labels = world()
    parsed, bad = parse_policies(policies)
    assert not bad, bad
    resolved = resolve(parsed, infos(pods), ns_labels)
    for node in ({"10.0.0.2", "10.0.1.3"}, {p["ip"] for p in pods[::2]}):  # what one node resolves
        local = {ipaddress.ip_address(ip) for ip in node}
        mine, whole = resolve(parsed, infos(pods), ns_labels, local), resolved.for_node(local)
        assert (mine.ingress, mine.egress) == (whole.ingress, whole.egress)
        assert mine.ingress_isolated == whole.ingress_isolated
        assert mine.egress_isolated == whole.egress_isolated
    wrong = []
    for src in pods:
        for dst in pods:
            for proto, port in PROBES:
                want = oracle(policies, src, dst, proto, port, ns_labels)
                got, _ = allowed(
                    resolved, ipaddress.ip_address(src["ip"]), ipaddress.ip_address(dst["ip"]), proto, port
                )
                if got != want:
                    wrong.append(
                        f"{src['namespace']}/{src['name']} -> {dst['namespace']}/{dst['name']} "
                        f"{proto}/{port}: podnet {got}, truth {want}"
                    )
    assert not wrong, "\n".join(wrong[:20])


@pytest.mark.parametrize("case", sorted(UPSTREAM))
def test_upstream_cases_agree_with_the_oracle(case: str) -> None:
    compare(UPSTREAM[case])


def test_no_policy_allows_everything_and_names_who_denies() -> None:
    pods, ns_labels = world()
    resolved = resolve([], infos(pods), ns_labels)
    assert (
        not resolved.ingress_isolated
        and allowed(resolved, *map(ipaddress.ip_address, ("10.0.0.2", "10.1.1.2")), "TCP", 80)[0]
    )
    parsed = [parse_policy(p) for p in UPSTREAM["default-deny-ingress"]]
    resolved = resolve(parsed, infos(pods), ns_labels)
    ok, why = allowed(resolved, ipaddress.ip_address("10.1.0.2"), ipaddress.ip_address("10.0.0.2"), "TCP", 80)
    assert not ok and why == "ingress: x/deny"


@pytest.mark.parametrize(
    "spec,message",
    [
        ({"ingress": [{"ports": [{"protocol": "ICMP", "port": 1}]}]}, "protocol: Unsupported value: 'ICMP'"),
        ({"ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]}]}, "cidr: Invalid value"),
        (
            {"ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.1.0.0/24"]}}]}]},
            "strict subset of `cidr`",
        ),
        (
            {"ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/16"}, "podSelector": {}}]}]},
            "more than 1 peer type",
        ),
        ({"ingress": [{"ports": [{"port": 70000}]}]}, "between 1 and 65535"),
        ({"ingress": [{"ports": [{"port": "Not_A_Name"}]}]}, "IANA_SVC_NAME"),
        ({"policyTypes": ["Sideways"]}, "policyTypes[0]: Unsupported value"),
        ({"podSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}, "values: Required value"),
    ],
)
def test_invalid_policies_are_refused_as_the_api_server_refuses_them(
    spec: dict[str, Any], message: str
) -> None:
    with pytest.raises(PolicyError, match=None) as err:
        parse_policy(pol("bad", {"podSelector": {}, **spec}))
    assert message in str(err.value)


def test_the_table_is_one_transaction_and_holds_the_entries() -> None:
    pods, ns_labels = world()
    parsed = [parse_policy(p) for p in UPSTREAM["stacked"] + UPSTREAM["ip-block-except"]]
    text = nft.render(resolve(parsed, infos(pods), ns_labels))
    assert text.startswith("table inet podnet_policy\ndelete table inet podnet_policy\n")
    assert "10.0.0.2 : jump in_check4" in text  # x/a is isolated for ingress
    assert "10.1.0.0/24 . 10.0.0.2" in text and "10.1.1.0/24 . 10.0.0.2" not in text  # the except cut out
    assert "0.0.0.0/0 . 10.0.0.2 . tcp . 81" in text  # policy two: any source, port 81
    assert "ct state established,related accept" in text.split("chain forward")[1].split("vmap")[0]


# ---- random policies ------------------------------------------------------------------------

labels_sel = st.sampled_from(
    [
        {},
        {"matchLabels": {"pod": "a"}},
        {"matchLabels": {"pod": "b"}},
        {"matchExpressions": [{"key": "pod", "operator": "In", "values": ["a", "c"]}]},
        {"matchExpressions": [{"key": "pod", "operator": "NotIn", "values": ["b"]}]},
    ]
)
ns_sel = st.sampled_from(
    [
        {},
        {"matchLabels": {"ns": "y"}},
        {"matchExpressions": [{"key": "ns", "operator": "In", "values": ["x", "z"]}]},
    ]
)
peer = st.one_of(
    st.builds(lambda p: {"podSelector": p}, labels_sel),
    st.builds(lambda n: {"namespaceSelector": n}, ns_sel),
    st.builds(lambda p, n: {"podSelector": p, "namespaceSelector": n}, labels_sel, ns_sel),
    st.sampled_from(
        [
            {"ipBlock": {"cidr": "10.1.0.0/16"}},
            {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.2.0.0/16"]}},
            {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.1.2/32"]}},
        ]
    ),
)
port = st.sampled_from(
    [
        {"port": 80},
        {"port": 81, "protocol": "UDP"},
        {"protocol": "UDP"},
        {"port": "serve-81-tcp"},
        {"port": "serve-80-udp", "protocol": "UDP"},
        {"port": "nope"},
    ]
)
rule = st.fixed_dictionaries(
    {}, optional={"peers": st.lists(peer, max_size=2), "ports": st.lists(port, max_size=2)}
)


@st.composite
def policy(draw: st.DrawFn, index: int = 0) -> dict[str, Any]:
    spec: dict[str, Any] = {"podSelector": draw(labels_sel)}
    types = draw(st.sampled_from([None, ["Ingress"], ["Egress"], ["Ingress", "Egress"]]))
    if types is not None:
        spec["policyTypes"] = types
    for field, key in (("ingress", "from"), ("egress", "to")):
        if draw(st.booleans()):
            rules = draw(st.lists(rule, max_size=2))
            spec[field] = [
                {
                    **({key: r["peers"]} if "peers" in r else {}),
                    **({"ports": r["ports"]} if "ports" in r else {}),
                }
                for r in rules
            ]
    return pol(f"p{draw(st.integers(0, 99))}", spec, draw(st.sampled_from(NAMESPACES)))


@settings(max_examples=150, deadline=None)
@given(
    st.lists(policy(), max_size=3, unique_by=lambda p: (p["metadata"]["namespace"], p["metadata"]["name"]))
)
def test_random_policies_agree_with_the_oracle(policies: list[dict[str, Any]]) -> None:
    compare(policies)


def test_policy_show_and_status_lines() -> None:
    from podnet.statusdoc.policy import PolicyStatus
    from podnet.verify.policy import render
    from podnet.verify.render import policy_line

    doc = {
        "node": "node1",
        "ingressIsolatedBy": ["x/deny"],
        "ingress": ["10.0.1.2/32 -> 10.0.0.2/32 TCP/80"],
        "egressIsolatedBy": [],
        "egress": [],
        "unresolved": ["x/p: no selected pod has a TCP port named 'web'"],
    }
    lines = render("x-a", doc)
    assert lines[0] == "x-a on node1" and "Ingress: isolated by x/deny; 1 allowed entry" in lines[1]
    assert "allow 10.0.1.2/32 -> 10.0.0.2/32 TCP/80" in lines[2] and "Egress: not isolated" in lines[3]
    assert "note: x/p: no selected pod" in lines[-1]
    assert policy_line(PolicyStatus.from_json({"enabled": False})).startswith("Disabled")
    doc = {
        "enabled": True,
        "policies": 2,
        "source": "etcd",
        "isolatedIngress": 3,
        "entries": 9,
        "invalid": ["y/bad: x"],
    }
    line = policy_line(PolicyStatus.from_json(doc))
    assert PolicyStatus.from_json(PolicyStatus.from_json(doc).to_json()) == PolicyStatus.from_json(doc)
    assert line.startswith("2 policies (etcd), in 3 / out 0") and "REFUSED 1: y/bad: x" in line


def test_a_local_pod_is_known_by_its_record_before_its_pod_object_shows_an_address() -> None:
    from podnet.agent.policy import merge_local
    from podnet.model import Endpoint
    from podnet.policy.sources import pod_info

    seen = pod_info(
        {
            "metadata": {"namespace": "x", "name": "a", "labels": {"pod": "a"}},
            "spec": {"containers": [{"ports": [{"name": "web", "containerPort": 8080}]}]},
            "status": {},
        }
    )
    assert seen is not None and seen.ips == () and seen.ports == (("web", "TCP", 8080),)
    assert pod_info({"metadata": {"name": "h"}, "spec": {"hostNetwork": True}}) is None
    record = Endpoint(
        "c1",
        "eth0",
        "/n",
        "lxc1",
        (ipaddress.ip_interface("10.0.0.9/32"),),
        pod_name="a",
        pod_namespace="x",
        pod_labels=(("pod", "old"),),
    )
    merged = {p.key: p for p in merge_local([seen], [record])}
    assert merged["x/a"].ips == (ipaddress.ip_address("10.0.0.9"),)
    assert merged["x/a"].labels == {"pod": "a"} and merged["x/a"].ports == (("web", "TCP", 8080),)
    alone = {p.key: p for p in merge_local([], [record])}
    assert alone["x/a"].labels == {"pod": "old"}  # as recorded at ADD until the object is seen


# ---- datastore etcd: documents, endpoints, CNI labels ------------------------------------------


def test_policy_documents_are_checked_whole_before_anything_is_written() -> None:
    from podnet.policy.documents import DocumentError, parse_documents

    good = pol("deny", {"podSelector": {}})
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x", "labels": {"ns": "x"}}}
    docs = parse_documents([{"kind": "List", "items": [good, ns]}, None])
    assert [d.ref for d in docs] == ["networkpolicy x/deny", "namespace x"]
    assert docs[0].key == "/podnet/v1/policy/networkpolicies/x/deny"
    assert json.loads(docs[1].value) == {"labels": {"ns": "x"}}
    bad = pol("bad", {"podSelector": {}, "ingress": [{"ports": [{"protocol": "ICMP"}]}]})
    with pytest.raises(DocumentError, match=r"document 2 .*protocol: Unsupported value: 'ICMP'"):
        parse_documents([good, bad])
    with pytest.raises(DocumentError, match=r"NetworkPolicy is networking\.k8s\.io/v1"):
        parse_documents([{**good, "apiVersion": "extensions/v1beta1"}])
    with pytest.raises(DocumentError, match="apply other kinds to an API server"):
        parse_documents([{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}])
    with pytest.raises(DocumentError, match="not an object"):
        parse_documents(["text"])
    with pytest.raises(DocumentError, match=r"metadata\.name"):
        parse_documents([{**ns, "metadata": {"name": "a/b"}}])


def test_a_nodes_endpoints_document_round_trips_and_a_broken_one_selects_nothing() -> None:
    from podnet.policy.sources import endpoints_document, pods_of_document

    pods = [
        PodInfo("x", "a", {"pod": "a"}, (ipaddress.ip_address("10.0.0.2"), ipaddress.ip_address("fd00::2")))
    ]
    back = pods_of_document("node1", endpoints_document(pods))
    assert [(p.key, dict(p.labels), p.ips, p.node) for p in back] == [
        ("x/a", {"pod": "a"}, pods[0].ips, "node1")
    ]
    assert pods_of_document("node1", b"{not json") == []
    assert pods_of_document("node1", json.dumps({"pods": [{"name": "no-namespace"}]})) == []


def test_the_runtimes_labels_come_from_args_cni_labels_and_nothing_else() -> None:
    from podnet.agent.cni_call import Call

    def call(config: dict[str, Any]) -> Call:
        return Call("ADD", "c1", "/run/netns/x", "eth0", {}, config)

    labels = [{"key": "pod", "value": "a"}, {"key": "ns", "value": "x"}, {"key": 1, "value": "z"}, "junk"]
    assert call({"args": {"cni": {"labels": labels}}}).labels() == (("ns", "x"), ("pod", "a"))
    assert call({}).labels() == () and call({"args": "x"}).labels() == ()
    assert call({"args": {"cni": {"labels": {"pod": "a"}}}}).labels() == ()


def test_an_sctp_port_is_an_entry_of_its_own_in_the_table() -> None:
    """The kernel here has no SCTP to probe with: the entry and its set element are checked."""
    a = PodInfo("x", "a", {"pod": "a"}, (ipaddress.ip_address("10.0.0.2"),))
    b = PodInfo("x", "b", {"pod": "b"}, (ipaddress.ip_address("10.0.0.3"),))
    spec = {
        "podSelector": {"matchLabels": {"pod": "a"}},
        "ingress": [{"ports": [{"port": 80, "protocol": "SCTP"}]}],
    }
    resolved = resolve(parse_policies([pol("sctp", spec)])[0], [a, b], {"x": {}})
    assert allowed(resolved, b.ips[0], a.ips[0], "SCTP", 80) == (True, "")
    assert allowed(resolved, b.ips[0], a.ips[0], "TCP", 80)[0] is False
    text = nft.render(resolved)
    assert "0.0.0.0/0 . 10.0.0.2 . sctp . 80" in text, text
