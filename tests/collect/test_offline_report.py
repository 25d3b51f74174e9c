"""Imported real captures evaluated by the shipped checks: right facts, and never a PASS on data that is not there."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from hma_check.evaluate.checks import load_checks
from hma_check.evaluate.engine import evaluate
from hma_check.evaluate.filters.exchange_builds import describe
from hma_check.contract.findings import ERROR, PASS, verdict_of
from hma_check.util.resources import checks_file
from hma_check.contract.snapshot import load_snapshot
from tests.collect.test_offline_import import copy_e19, script_folder

from hma_check.collect.offline.importer import import_path


@pytest.fixture(scope="module")
def checks():
    return load_checks([checks_file()])


def evaluate_import(folder, tmp_path, checks):
    evidence = tmp_path / "evidence.json"
    import_path(folder).snapshot.save(evidence)
    snapshot = load_snapshot(evidence)  # evaluation always reads the saved evidence
    return snapshot, evaluate(checks, snapshot, as_of=datetime(2024, 6, 1, tzinfo=timezone.utc)).findings


def assert_no_pass_without_data(snapshot, findings, checks):
    requires = {check.id: check.requires for check in checks.checks}
    for finding in findings:
        if finding.status == PASS:
            for name in requires[finding.check_id]:
                results = snapshot.results(name)
                assert results and all(r.ok for r in results), (finding.check_id, name)
            assert all(s["status"] == "ok" for s in finding.sources), finding.check_id


def test_e19_captures_evaluate_with_the_right_facts(tmp_path, checks):
    (tmp_path / "in").mkdir()
    snapshot, findings = evaluate_import(copy_e19(tmp_path / "in"), tmp_path, checks)
    server, = snapshot.sources["exchange.servers"].data
    assert describe(server["AdminDisplayVersion"]).name.startswith("Exchange 2019 CU11")
    by_id = {}
    for finding in findings:
        by_id.setdefault(finding.check_id, []).append(finding)
    assert [f.status for f in by_id["HMA-VDIR-002"]] == [PASS]  # OAuth on for EWS
    assert by_id["HMA-VDIR-002"][0].subject == "SOLO-E19A"
    # exchange.auth_servers and the MAPI virtual directories were never supplied: ERROR, never PASS.
    requires = {check.id: check.requires for check in checks.checks}
    lacking = [f for f in findings if {"exchange.auth_servers", "exchange.mapi_virtual_directories"}
               & set(requires[f.check_id])]
    assert lacking and all(f.status == ERROR and f.reason for f in lacking)
    assert all(f.status == ERROR for f in by_id["HMA-ORG-003"])  # OAuth2ClientProfileEnabled vs EvoSts: half the facts
    assert_no_pass_without_data(snapshot, findings, checks)
    assert verdict_of(findings) != "READY"


def test_script_output_evaluates_without_passing_missing_facts(tmp_path, checks):
    (tmp_path / "in").mkdir()
    snapshot, findings = evaluate_import(script_folder(tmp_path / "in"), tmp_path, checks)
    assert_no_pass_without_data(snapshot, findings, checks)
    statuses = {f.status for f in findings}
    assert PASS in statuses and ERROR in statuses
