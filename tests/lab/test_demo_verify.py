"""Lab: ``podnet demo`` runs the whole story (short perf runs), exits 0 and writes its report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from podnet.lab import state as st

pytestmark = [pytest.mark.lab, pytest.mark.slow]  # slow: a tier of its own (README, "daily work")
PODNET = str(Path(sys.executable).with_name("podnet"))


@pytest.mark.timeout(900)  # the whole main job (13 labs, up to 600 s) and the teardown of what it left
def test_demo_writes_report_and_cleans_up(tmp_path: Path) -> None:
    res = subprocess.run(
        [PODNET, "demo", "--report-dir", str(tmp_path), "--repetitions", "1", "--seconds", "1", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    try:
        assert res.returncode == 0, f"{res.stdout[-3000:]}\n{res.stderr[-2000:]}"
        doc = json.loads(res.stdout)
        assert Path(doc["report"]).read_text().startswith("# podnet demo")
        parts = {p["title"][:2]: p for p in doc["parts"]}
        bgp_steps = {step["title"]: step for step in parts["3."]["steps"]}
        learned = bgp_steps["r1 learned both pod CIDRs by BGP (proto bird)"]
        assert learned["ok"] and "10.244.2.0/24 via 172.16.0.2" in learned["detail"]
        assert bgp_steps["capture on r1:to-r2 shows plain pod addresses"]["ok"]
        perf = parts["4."]["data"]["perf"]
        assert [r["label"] for r in perf["results"]] == ["host", "vxlan", "geneve", "native"]
        assert all(r["ratioToHost"] > 0 for r in perf["results"])
        assert (tmp_path / "perf.png").exists() and (tmp_path / "demo-tunnel.svg").exists()
        diag = parts["2."]["data"]["diagnose"]
        assert diag["verdict"]["host"] == "r1"
        ipam = parts["5."]["data"]["ipam"]  # each mode's pods, with where their addresses came from
        assert set(ipam) == {"cluster-pool", "kubernetes", "crd", "multi-pool"}
        blue = next(p for p in ipam["multi-pool"] if p["pod"] == "blue-1")
        assert blue["address"].startswith("10.250.") and blue["source"].startswith("pool blue")
        enis = parts["6."]["data"]["eni"]  # node -> its ENIs, with each address's owner
        assert any(owner == "default/pod1" for e in enis["node1"] for owner in e["addresses"].values())
        dual = {step["title"]: step for step in parts["7."]["steps"]}  # both families, BGP in each
        assert all(step["ok"] for step in dual.values()), dual
        assert "no encapsulation" in parts["7."]["data"]["dualStack"]["capture"]
        real = {step["title"]: step for step in parts["8."]["steps"]}  # a Deployment on real kubelets
        assert all(step["ok"] for step in real.values()), real
        rows = parts["8."]["data"]["kubelets"]["pods"]
        assert {r["node"] for r in rows} == {"node1", "node2"} and all(r["source"] for r in rows), rows
        assert not [lab for lab in st.known_labs() if lab.startswith("demo-")]
    finally:
        for lab in ("demo-tun", "demo-nat", "demo-bgp", "demo-l2v", "demo-l2g", "demo-l2n", "demo-ipc",
                    "demo-ipk", "demo-ipr", "demo-ipm", "demo-eni", "demo-dual", "demo-kubelet"):  # fmt: skip
            subprocess.run([PODNET, "lab", "down", lab], capture_output=True, timeout=60)
