"""hma-check diff: status changes per (check, subject), the verdict, the facts behind them, and the exit code."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from tests.support import baseline
from tests.support.common import SITE_CHECKS
from tests.support.baseline import apply_ops
from hma_check.cli import cli
from hma_check.runs.factdiff import diff_snapshots
from hma_check.commands.pipeline import run_report
from hma_check.contract.findings import PASS
from hma_check.runs.diff import compare, load_run

SP = f"graph.exo_service_principal@{baseline.TENANT}"
HOSTILE = "EX9\n<img src=x onerror=alert(1)>"


def changed_snapshot(server_names=("EX01", "EX02", "EX03")):
    """A week later: a server added, OAuth removed from one MAPI vdir, an SPN removed, a switch flipped."""
    snapshot = baseline.build(server_names=server_names)
    spns = snapshot.sources[SP].data["servicePrincipalNames"]
    return apply_ops(snapshot, [
        {"set": ["exchange.organization_config", "MapiHttpEnabled"], "to": False},
        {"set": ["exchange.mapi_virtual_directories@EX02", 0, "IISAuthenticationMethods"], "to": ["Ntlm", "Negotiate"]},
        {"set": [SP, "servicePrincipalNames"], "to": [s for s in spns if s != "https://mail.contoso.com/"]},
        {"fail": "os.tls_registry@EX01"},
    ])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("diff")
    folders = {}
    for name, snapshot in (("before", baseline.build()), ("after", changed_snapshot())):
        snapshot.save(root / f"{name}.json")
        run_report(root / f"{name}.json", root / name)
        folders[name] = root / name
    return folders


def invoke(*args):
    return CliRunner().invoke(cli, ["diff", *[str(a) for a in args]])


def test_facts_name_the_server_spn_setting_and_vdir_that_changed():
    changes = {(c.source, c.text()) for c in diff_snapshots(baseline.build(), changed_snapshot())}
    assert ("exchange.servers", "+ EX03") in changes
    assert ("exchange.organization_config", "MapiHttpEnabled: true -> false") in changes
    assert (SP, 'servicePrincipalNames: - "https://mail.contoso.com/"') in changes
    assert ("exchange.mapi_virtual_directories@EX02",
            '[EX02\\mapi (Default Web Site)] IISAuthenticationMethods: - "OAuth"') in changes
    assert ("os.tls_registry@EX01", "status ok -> error: TimeoutError: simulated collection failure") in changes
    assert ("exchange.mapi_virtual_directories@EX03", "source added (ok)") in changes


def test_facts_that_change_on_every_run_are_not_changes_and_order_is_not_a_fact():
    old, new = baseline.build(), baseline.build()
    org = f"graph.organization@{baseline.TENANT}"
    new.sources[org].data[0]["onPremisesLastSyncDateTime"] = "2026-11-21T08:00:00Z"
    new.sources[SP].data["servicePrincipalNames"].reverse()
    new.sources["exchange.servers"].data.reverse()
    assert diff_snapshots(old, new) == []


def test_lists_without_an_identity_compare_whole_items_and_nested_lists_keep_their_parent():
    old, new = baseline.build(), baseline.build()
    new.sources[SP].data["keyCredentials"] = [{"type": "AsymmetricX509Cert", "usage": "Verify"}]
    auth = new.sources["exchange.auth_servers"].data[0]
    auth["DomainName"] = auth["DomainName"] + ["fabrikam.com"]
    texts = {c.text() for c in diff_snapshots(old, new)}
    assert 'keyCredentials: + {"type": "AsymmetricX509Cert", "usage": "Verify"}' in texts
    assert f'[{auth["Name"]}] DomainName: + "fabrikam.com"' in texts


def test_status_changes_worse_new_and_gone(runs):
    diff = compare(load_run(runs["before"]), load_run(runs["after"]))
    by_key = {(c.check_id, c.subject): c for c in diff.statuses}
    assert by_key[("HMA-VDIR-001", "EX02")].direction == "worse"
    assert (by_key[("HMA-VDIR-001", "EX02")].old, by_key[("HMA-VDIR-001", "EX02")].new) == ("PASS", "FAIL")
    assert by_key[("HMA-TLS-001", "EX01")].new == "ERROR" and by_key[("HMA-TLS-001", "EX01")].direction == "worse"
    assert by_key[("HMA-TOPO-001", "EX03")].old is None and by_key[("HMA-TOPO-001", "EX03")].direction == "new"
    assert diff.verdict_direction == "worse" and diff.worse
    back = compare(load_run(runs["after"]), load_run(runs["before"]))
    assert not back.worse and back.verdict_direction == "better"
    assert {c.direction for c in back.statuses} == {"better", "gone"}


def test_the_command_prints_one_line_per_change_and_exits_on_worse(runs, tmp_path):
    worse = invoke(runs["before"], runs["after"], "--html", tmp_path / "d.html", "--json", tmp_path / "d.json")
    assert worse.exit_code == 1, worse.output
    assert "verdict: READY -> NOT_READY (worse)" in worse.output
    assert "WORSE HMA-VDIR-001 [EX02] PASS -> FAIL" in worse.output
    assert "exchange.servers: + EX03" in worse.output and worse.output.rstrip().endswith("something got worse")
    document = json.loads((tmp_path / "d.json").read_text(encoding="utf-8"))
    assert document["worse"] is True and document["verdict"]["direction"] == "worse"
    assert any(c["check_id"] == "HMA-SPN-001" and c["new"] == "FAIL" for c in document["status_changes"])
    html = (tmp_path / "d.html").read_text(encoding="utf-8")
    assert "Something got worse." in html and "EX02\\mapi (Default Web Site)" in html
    better = invoke(runs["after"] / "findings.json", runs["before"] / "findings.json")
    assert better.exit_code == 0 and better.output.rstrip().endswith("nothing got worse")
    assert invoke(runs["before"], runs["before"]).exit_code == 0


def test_findings_without_evidence_compare_statuses_and_say_why_facts_are_not(runs, tmp_path):
    alone = tmp_path / "findings.json"
    shutil.copyfile(runs["after"] / "findings.json", alone)
    result = invoke(runs["before"], alone)
    assert result.exit_code == 1
    assert "facts not compared: " in result.output and "no evidence.json beside its findings.json" in result.output


def test_bad_paths_are_usage_errors(runs, tmp_path):
    assert invoke(tmp_path, runs["after"]).exit_code == 2
    evidence = invoke(runs["before"] / "evidence.json", runs["after"])
    assert evidence.exit_code == 2 and "this is evidence, not findings" in evidence.output
    (tmp_path / "broken.json").write_text('{"verdict": "READY", "findings": [{"check_id": 1}]}', encoding="utf-8")
    broken = invoke(runs["before"], tmp_path / "broken.json")
    assert broken.exit_code == 2 and "not an hma-check findings.json" in broken.output
    (tmp_path / "odd.json").write_text('{"verdict": "READY", "findings": [], "metadata": {"target": "x"}}',
                                       encoding="utf-8")
    odd = invoke(runs["before"], tmp_path / "odd.json")
    assert odd.exit_code == 0 and odd.exception is None and "different organizations: 'Contoso' and None" in odd.output


def test_hostile_subjects_stay_one_line_and_escaped(tmp_path):
    root = tmp_path
    baseline.build().save(root / "a.json")
    baseline.build(server_names=("EX01", HOSTILE)).save(root / "b.json")
    run_report(root / "a.json", root / "a")
    run_report(root / "b.json", root / "b")
    result = invoke(root / "a", root / "b", "--html", root / "d.html")
    assert "<img" not in (root / "d.html").read_text(encoding="utf-8").replace("&lt;img", "")
    lines = result.output.splitlines()
    assert not any(line.startswith("<img") for line in lines), "a newline in a subject must not start a line"
    assert any("EX9 <img src=x onerror=alert(1)>" in line for line in lines)


def test_a_different_catalogue_is_noted(runs, tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text(SITE_CHECKS, encoding="utf-8")
    run_report(runs["before"] / "evidence.json", tmp_path / "site-run", [site])
    diff = compare(load_run(runs["before"]), load_run(tmp_path / "site-run"))
    assert any("different checks files" in note for note in diff.notes)
    assert [c.check_id for c in diff.statuses] == ["SITE-ORG-001"] and diff.statuses[0].direction == "new"
    assert diff.statuses[0].new == PASS
