"""The upstream e2e netpol cases (kubernetes test/e2e/network/netpol), as policy objects on the
world of namespaces x, y, z and pods a, b, c: shared by the pure test (resolve against the
oracle) and the lab's conformance tier (the kernel against the oracle)."""

from __future__ import annotations

from typing import Any


def pol(name: str, spec: dict[str, Any], ns: str = "x") -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"namespace": ns, "name": name},
        "spec": spec,
    }


A = {"matchLabels": {"pod": "a"}}
UPSTREAM = {
    "default-deny-ingress": [pol("deny", {"podSelector": {}, "policyTypes": ["Ingress"]})],
    "default-deny-egress": [pol("deny", {"podSelector": {}, "policyTypes": ["Egress"]})],
    "default-deny-all": [pol("deny", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})],
    "allow-from-same-namespace": [
        pol("same", {"podSelector": A, "ingress": [{"from": [{"podSelector": {}}]}]})
    ],
    "allow-from-namespace-y": [
        pol(
            "ns-y",
            {"podSelector": A, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]},
        )
    ],
    "pod-and-namespace-AND": [
        pol(
            "and",
            {
                "podSelector": A,
                "ingress": [
                    {
                        "from": [
                            {
                                "namespaceSelector": {"matchLabels": {"ns": "y"}},
                                "podSelector": {"matchLabels": {"pod": "b"}},
                            }
                        ]
                    }
                ],
            },
        )
    ],
    "pod-or-namespace-OR": [
        pol(
            "or",
            {
                "podSelector": A,
                "ingress": [
                    {
                        "from": [
                            {"namespaceSelector": {"matchLabels": {"ns": "y"}}},
                            {"podSelector": {"matchLabels": {"pod": "b"}}},
                        ]
                    }
                ],
            },
        )
    ],
    "match-expressions": [
        pol(
            "expr",
            {
                "podSelector": A,
                "ingress": [
                    {
                        "from": [
                            {
                                "namespaceSelector": {
                                    "matchExpressions": [{"key": "ns", "operator": "NotIn", "values": ["y"]}]
                                }
                            }
                        ]
                    }
                ],
            },
        )
    ],
    "port-80-only": [pol("p80", {"podSelector": A, "ingress": [{"ports": [{"port": 80}]}]})],
    "named-port-udp-81": [
        pol(
            "named", {"podSelector": A, "ingress": [{"ports": [{"port": "serve-81-udp", "protocol": "UDP"}]}]}
        )
    ],
    "stacked": [
        pol(
            "one", {"podSelector": A, "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]}
        ),
        pol("two", {"podSelector": A, "ingress": [{"ports": [{"port": 81}]}]}),
    ],
    "ip-block-except": [
        pol(
            "block",
            {
                "podSelector": A,
                "ingress": [{"from": [{"ipBlock": {"cidr": "10.1.0.0/16", "except": ["10.1.1.0/24"]}}]}],
            },
        )
    ],
    "egress-to-namespace-z-port-81": [
        pol(
            "out",
            {
                "podSelector": A,
                "egress": [
                    {
                        "to": [{"namespaceSelector": {"matchLabels": {"ns": "z"}}}],
                        "ports": [{"port": 81, "protocol": "UDP"}],
                    }
                ],
            },
        )
    ],
    "egress-named-port": [
        pol(
            "outn",
            {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"ports": [{"port": "serve-80-tcp"}]}]},
        )
    ],
    "deny-all-but-allow-in-y": [
        pol("deny", {"podSelector": {}, "policyTypes": ["Ingress"]}, "y"),
        pol("in-y", {"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]}, "y"),
    ],
}
