"""The optional OWA/ECP area: opted in through scan.options, its ordered switch and rollback.

Its scenarios (owa-ecp-not-ready, tls-legacy) are scanned through the real clients with every expected finding,
source status and the verdict asserted by test_exchange_collector's test_scenario_verdict_and_key_findings.
"""

from __future__ import annotations

import json
import shutil

import pytest

from tests.support import baseline
from tests.support.baseline import apply_ops
from hma_check.evaluate.engine import evaluate
from hma_check.contract.findings import NOT_APPLICABLE
from tests.support.offline_fixtures import e19_dir

OWA_CHECKS = ("HMA-OWA-001", "HMA-OWA-002", "HMA-OWA-003", "HMA-OWA-004")


def _step(evaluation, step_id="HMA-STEP-004"):
    return next((entry for entry in evaluation.runbook if entry.origin == step_id), None)


def test_not_asking_for_owa_ecp_makes_the_area_not_applicable_and_leaves_the_switch_out(catalogue):
    snapshot = apply_ops(baseline.build(), [{"set": ["scan.options", "owa_ecp"], "to": False}])
    evaluation = evaluate(catalogue, snapshot)
    owa = [f for f in evaluation.findings if f.check_id in OWA_CHECKS]
    assert {f.check_id for f in owa} == set(OWA_CHECKS) and {f.status for f in owa} == {NOT_APPLICABLE}
    assert _step(evaluation) is None
    assert _step(evaluate(catalogue, baseline.build())) is not None


def test_the_switch_turns_everything_else_off_before_oauth_and_rolls_back_in_reverse(catalogue):
    entry = _step(evaluate(catalogue, baseline.build()))
    assert entry.phase == 3 and entry.note is None
    enable, rollback = entry.enable.splitlines(), entry.rollback.splitlines()
    last_off = max(i for i, line in enumerate(enable) if "-FormsAuthentication $false" in line)
    first_oauth = min(i for i, line in enumerate(enable) if "-OAuthAuthentication $true" in line)
    assert last_off < first_oauth
    assert sum("-OAuthAuthentication $true" in line for line in enable) == 4   # two servers, OWA and ECP
    assert enable[first_oauth].startswith("Set-EcpVirtualDirectory")
    last_oauth_back = max(i for i, line in enumerate(rollback) if "-OAuthAuthentication $false" in line)
    first_restore = min(i for i, line in enumerate(rollback) if "-FormsAuthentication $true" in line)
    assert last_oauth_back < first_restore    # OAuth off first, then Forms and Basic back as captured
    assert "-BasicAuthentication $true" in rollback[first_restore]


def test_a_switch_already_made_is_shown_commented_out(catalogue):
    ops = []
    for kind in ("owa", "ecp"):
        for server in baseline.SERVERS:
            key = f"exchange.{kind}_virtual_directories@{server}"
            ops += [{"set": [key, 0, "OAuthAuthentication"], "to": True},
                    {"set": [key, 0, "BasicAuthentication"], "to": False},
                    {"set": [key, 0, "FormsAuthentication"], "to": False}]
    entry = _step(evaluate(catalogue, apply_ops(baseline.build(), ops)))
    assert entry.note and all(line.startswith("#") for line in entry.enable.splitlines())


def test_an_import_can_ask_for_the_area_too(tmp_path, capsys):
    from hma_check.cli import main

    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(e19_dir() / "Exchange" / "GetOrganizationConfig.xml", folder)
    with pytest.raises(SystemExit):
        main(["import", str(folder), "--out", str(tmp_path / "out"), "--owa-ecp"])
    capsys.readouterr()
    evidence = json.loads((tmp_path / "out" / "evidence.json").read_text())
    options = evidence["sources"]["scan.options"]
    assert options["data"] == {"owa_ecp": True} and "--owa-ecp" in options["command"]
    findings = json.loads((tmp_path / "out" / "findings.json").read_text())["findings"]
    owa = {f["check_id"]: f["status"] for f in findings if f["check_id"] in OWA_CHECKS}
    assert owa and NOT_APPLICABLE not in owa.values()   # asked for: decided, or ERROR for what the import lacks
