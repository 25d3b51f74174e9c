"""Shipped lab scenarios scanned end to end: the lab's Exchange and Graph services, the scan configuration the demo
writes, the collector runner, evidence.json, run_report(). The scenario's own expectations decide, for every check that
reads Graph."""

from __future__ import annotations

import json

import pytest

from hma_check.collect.runner import run_collectors
from hma_lab.commands import demo_config
from hma_lab.graph_service import GraphService
from hma_lab.runtime import Lab
from hma_check.commands.pipeline import load_all_checks, run_report

pytestmark = pytest.mark.xdist_group("graph-scenarios")


@pytest.fixture(scope="module")
def graph_checks():
    """Every check that reads a Graph source: its severity, and whether Exchange and Graph alone decide it."""
    return {c.id: (c.severity, all(r.split(".")[0] in ("exchange", "graph") for r in c.requires))
            for c in load_all_checks().checks if any(r.startswith("graph.") for r in c.requires)}


@pytest.mark.parametrize("name", ["ready", "missing-spn", "multi-tenant"])
def test_scenario_graph_expectations_hold_on_a_real_scan(name, graph_checks, tmp_path):
    with Lab(name) as lab:
        [graph] = [s for s in lab.services if isinstance(s, GraphService)]
        config = demo_config(lab, tmp_path, None)
        snapshot = run_collectors(config, secrets=lab.secrets())
        snapshot.save(tmp_path / "evidence.json")
        outcome = run_report(tmp_path / "evidence.json", tmp_path)
        requests = graph.requests
        secrets = list(graph.secrets.values())
    expect = lab.scenario.expect

    graph_sources = [r for r in snapshot.sources.values() if r.name.startswith("graph.")]
    assert len(graph_sources) == 7 * len(lab.scenario.sections["tenants"])
    assert all(r.ok for r in graph_sources), [r.error for r in graph_sources if not r.ok]
    for key, status in expect["sources"].items():
        if key.startswith("graph."):
            assert snapshot.sources[key].status == status, key

    findings = json.loads((tmp_path / "findings.json").read_text())["findings"]
    checked = 0
    for check_id, expected in expect["findings"].items():
        if check_id not in graph_checks:
            continue
        got = {f["subject"]: f["status"] for f in findings if f["check_id"] == check_id}
        if isinstance(expected, str):
            assert set(got.values()) == {expected}, (check_id, got)
        else:
            assert {s: got.get(s) for s in expected} == expected, (check_id, got)
        checked += 1
    assert checked or expect.get("verdict") == "READY"
    if expect.get("verdict") == "READY":  # a ready tenant: every blocker and warning decided by Exchange and Graph passes
        assert {f["check_id"]: f["status"] for f in findings if graph_checks.get(f["check_id"]) in
                (("blocker", True), ("warning", True)) and f["status"] != "PASS"} == {}
    for finding in findings:  # with every Graph source collected, no Graph-fed check lacks its facts
        if finding["check_id"] in graph_checks and finding["status"] == "ERROR":
            assert "graph." not in (finding["reason"] or ""), finding
    if expect.get("verdict") == "NOT_READY":
        assert outcome.verdict == "NOT_READY"

    # Read-only, provably: the Graph service saw token requests and GETs, nothing else.
    assert {(r.method, r.route) for r in requests if r.method != "GET"} == {("POST", "token")}
    # The demo's configuration names the secret's variable; no secret reaches any file.
    assert "client_secret_env: HMA_LAB_GRAPH_SECRET_0" in (tmp_path / "scan-config.yaml").read_text()
    for path in tmp_path.iterdir():
        text = path.read_text(errors="replace")
        assert not any(secret in text for secret in secrets), path.name
