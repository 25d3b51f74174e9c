"""The collector runner: a crashing collector costs only its own sources, and unconfigured sections say why."""

from __future__ import annotations

from hma_check.collect import runner
from hma_check.config import ScanConfig
from hma_check.engine import evaluate
from hma_check.findings import ERROR, PASS
from hma_check.sources import SOURCES


def crashing(settings, context):
    yield from ()
    raise RuntimeError("bug in the collector")


def working(settings, context):
    from hma_check.snapshot import SourceResult

    yield SourceResult.ok_result("exchange.organization_config", {"MapiHttpEnabled": True}, command="Get-OrganizationConfig")


def test_a_crashing_collector_marks_all_its_sources_error_and_keeps_the_others(monkeypatch, catalogue):
    monkeypatch.setitem(runner.COLLECTORS, "exchange", f"{__name__}:working")
    monkeypatch.setitem(runner.COLLECTORS, "graph", f"{__name__}:crashing")
    snapshot = runner.run_collectors(ScanConfig(source="scan.yaml", sections={"exchange": object(), "graph": object()}))
    assert snapshot.sources["exchange.organization_config"].ok
    graph = [r for r in snapshot.sources.values() if r.name.startswith("graph.")]
    assert {r.name for r in graph} == {s.name for s in SOURCES if s.collector == "graph"}   # scoped ones included
    assert all(r.status == "error" and "bug in the collector" in r.error for r in graph)
    findings = {f.check_id: f for f in evaluate(catalogue, snapshot).findings}
    assert findings["HMA-ORG-001"].status == PASS
    assert findings["HMA-SPN-001"].status == ERROR and "bug in the collector" in findings["HMA-SPN-001"].reason


def test_sections_left_out_of_the_configuration_are_skipped_with_the_reason(monkeypatch):
    monkeypatch.setitem(runner.COLLECTORS, "exchange", f"{__name__}:working")
    snapshot = runner.run_collectors(ScanConfig(source="scan.yaml", sections={"exchange": object()}))
    probes = [r for r in snapshot.sources.values() if r.name.startswith("probe.")]
    assert probes and all(r.status == "skipped" and "no 'probes:' section" in r.error for r in probes)
    assert all(r.status == "skipped" for r in snapshot.sources.values() if r.name.startswith(("graph.", "os.")))
