"""The collector runner: a crashing collector costs only its own sources, and unconfigured sections say why."""

from __future__ import annotations

from hma_check.collect import runner
from hma_check.collect.config import ScanConfig
from hma_check.evaluate.engine import evaluate
from hma_check.contract.findings import ERROR, PASS
from hma_check.contract.sources import SOURCES


def crashing(settings, context):
    yield from ()
    raise RuntimeError("bug in the collector")


def working(settings, context):
    from hma_check.contract.snapshot import SourceResult

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


def leaking(settings, context):
    password = runner.section_password("exchange", settings, context, "ex01")
    yield from ()
    raise RuntimeError(f"connection string user=x;password={password};secret={context.environ['SITE_SECRET']}")


class _Settings:
    def __init__(self) -> None:
        self.auth, self.username = "ntlm", "CONTOSO\\reader"
        self.password_env, self.client_secret_env = "EX_PASSWORD", "SITE_SECRET"


def test_a_crash_text_never_carries_a_secret_into_the_evidence(monkeypatch):
    """The runner's last resort scrubs what it knows: passwords it handed out and values of *_env variables."""
    monkeypatch.setitem(runner.COLLECTORS, "exchange", f"{__name__}:leaking")
    snapshot = runner.run_collectors(ScanConfig(source="scan.yaml", sections={"exchange": _Settings()}),
                                     environ={"EX_PASSWORD": "Pa55-word!", "SITE_SECRET": "s3cr3t-value"})
    text = snapshot.dumps().decode()
    assert "the exchange collector failed: RuntimeError" in text
    assert "Pa55-word!" not in text and "s3cr3t-value" not in text and "password=***" in text


def test_a_prompted_password_is_scrubbed_too(monkeypatch):
    monkeypatch.setitem(runner.COLLECTORS, "exchange", f"{__name__}:leaking")
    settings = _Settings()
    snapshot = runner.run_collectors(ScanConfig(source="scan.yaml", sections={"exchange": settings}),
                                     environ={"SITE_SECRET": "s3cr3t-value"}, prompt=lambda question: "typed-Secret9")
    assert "typed-Secret9" not in snapshot.dumps().decode()
