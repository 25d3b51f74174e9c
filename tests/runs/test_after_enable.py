"""--after-enable: the validation checks (PASS, FAIL and ERROR per check), the validated report, its link to the
readiness run it follows, and a real scan of the lab's 'ready' and 'enabled' organisations."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from tests.support import baseline
from tests.support.baseline import apply_ops
from hma_check.evaluate.checks import CheckSet
from hma_check.cli import cli
from hma_check.evaluate.engine import evaluate
from hma_check.contract.findings import ERROR, FAIL, NOT_APPLICABLE, PASS, WARN
from hma_check.runs.manifest import verify_folder
from hma_check.commands.pipeline import load_all_checks, run_report

AUTHORIZE = "https://login.windows.net/common/oauth2/authorize"
AUDIENCE = ('2000003;reason="The hostname component of the audience claim value is invalid. Expected '
            "'https://mail.contoso.com'. Actual 'http://mail.contoso.com'.\";error_category=\"invalid_resource\"")
MAPI = "https://mail.contoso.com/mapi/"


def enabled_snapshot():
    """The baseline after the enable runbook: both switches on, and Exchange's answers changed accordingly."""
    snapshot = apply_ops(baseline.build(), [
        {"set": ["exchange.organization_config", "OAuth2ClientProfileEnabled"], "to": True},
        {"set": ["exchange.auth_servers", 0, "IsDefaultAuthorizationEndpoint"], "to": True}])
    for result in snapshot.results("probe.bearer"):
        result.data["bearer"]["authorization_uri"] = AUTHORIZE
        result.data["www_authenticate"][0] += f', authorization_uri="{AUTHORIZE}"'
        result.data["x_ms_diagnostics"] = None
    return snapshot


CASES = {
    "HMA-VAL-001": [([{"set": ["exchange.organization_config", "OAuth2ClientProfileEnabled"], "to": False}], FAIL)],
    "HMA-VAL-002": [
        ([{"set": ["exchange.auth_servers", 0, "IsDefaultAuthorizationEndpoint"], "to": False}], FAIL),
        ([{"set": ["exchange.auth_servers", 1, "IsDefaultAuthorizationEndpoint"], "to": True}], FAIL),
        ([{"set": ["exchange.auth_servers", 0, "IsDefaultAuthorizationEndpoint"], "to": False},
          {"set": ["exchange.auth_servers", 1, "IsDefaultAuthorizationEndpoint"], "to": True}], FAIL),
        ([{"set": ["exchange.auth_servers", 0, "Enabled"], "to": False}], FAIL),
    ],
    "HMA-VAL-003": [
        ([{"set": [f"probe.bearer@{MAPI}", "bearer", "authorization_uri"], "to": None}], {MAPI: FAIL}),
        ([{"set": [f"probe.bearer@{MAPI}", "bearer", "authorization_uri"],
           "to": "https://adfs.contoso.com/adfs/oauth2/authorize"}], {MAPI: FAIL}),
        ([{"set": [f"probe.bearer@{MAPI}", "bearer"], "to": None}], {MAPI: FAIL}),
    ],
    "HMA-VAL-004": [([{"set": [f"probe.bearer@{MAPI}", "x_ms_diagnostics"],
                       "to": '4000000;reason="Flighting is not enabled";error_category="oauth_not_available"'}],
                     {MAPI: FAIL})],
    "HMA-VAL-005": [([{"set": [f"probe.bearer@{MAPI}", "x_ms_diagnostics"], "to": AUDIENCE}], {MAPI: FAIL})],
    "HMA-VAL-006": [([{"set": ["os.iis_ssl_flags@EX02", "/mapi", "RequireSsl"], "to": False}],
                     {"EX01": PASS, "EX02": FAIL}),
                    # Outlook Anywhere's flag (true by default before Exchange 2019 CU14) is no offloading
                    ([{"set": ["exchange.outlook_anywhere@EX02", 0, "SSLOffloading"], "to": True}],
                     {"EX01": PASS, "EX02": PASS})],
    # The baseline's logs: every signed-in client on Bearer; the mobile accounts still on Basic are 0 %.
    "HMA-VAL-010": [([{"set": ["logs.httpproxy", "daily", 3, "modern_authentication"], "to": False}],
                     {"Eas": WARN, "Mapi": PASS})],
}
# Evidence of what clients do, which follows the switch by each client's next sign-in: a warning, never a gate.
EVIDENCE = {"HMA-VAL-010"}


@pytest.fixture(scope="module")
def validation_checks():
    return load_all_checks(validation=True)


def findings_of(checks, snapshot, check_id):
    only = CheckSet(checks=[c for c in checks.checks if c.id == check_id], areas=checks.areas)
    return evaluate(only, snapshot).findings


def test_every_validation_check_has_cases(validation_checks):
    assert sorted(c.id for c in validation_checks.checks) == sorted(CASES)
    assert all(c.severity == "blocker" for c in validation_checks.checks if c.id not in EVIDENCE), \
        "a validation failure must block"
    assert {c.severity for c in validation_checks.checks if c.id in EVIDENCE} == {"warning"}


def test_the_switched_state_passes_every_validation_check(validation_checks):
    findings = evaluate(validation_checks, enabled_snapshot()).findings
    assert findings and {f.status for f in findings} == {PASS}
    assert len([f for f in findings if f.check_id == "HMA-VAL-003"]) == len(enabled_snapshot().results("probe.bearer"))


def test_the_not_yet_switched_baseline_fails_validation(validation_checks):
    failed = {f.check_id for f in evaluate(validation_checks, baseline.build()).findings if f.status == FAIL}
    assert failed == {"HMA-VAL-001", "HMA-VAL-002", "HMA-VAL-003", "HMA-VAL-004"}


@pytest.mark.parametrize("check_id,ops,expect", [pytest.param(c, ops, e, id=f"{c}-fail{i}")
                                                 for c, cases in CASES.items() for i, (ops, e) in enumerate(cases)])
def test_fail_case(validation_checks, check_id, ops, expect):
    findings = findings_of(validation_checks, apply_ops(enabled_snapshot(), ops), check_id)
    by_subject = {f.subject: f.status for f in findings}
    if isinstance(expect, str):
        assert set(by_subject.values()) == {expect}, by_subject
    else:
        assert {s: by_subject[s] for s in expect} == expect
        failing = {s for s, status in expect.items() if status != PASS}
        assert {s for s, status in by_subject.items() if status != PASS} == failing, "only that subject fails"


@pytest.mark.parametrize("check_id", sorted(CASES))
def test_missing_facts_are_error_never_pass(validation_checks, check_id):
    check = next(c for c in validation_checks.checks if c.id == check_id)
    for source in check.requires:
        findings = findings_of(validation_checks, apply_ops(enabled_snapshot(), [{"fail": source}]), check_id)
        assert findings and {f.status for f in findings} == {ERROR}
    if check.requires == ("probe.bearer",):   # no probe at all (none configured, or an offline import)
        snapshot = enabled_snapshot()
        for key in [k for k, r in snapshot.sources.items() if r.name == "probe.bearer"]:
            del snapshot.sources[key]
        assert {f.status for f in findings_of(validation_checks, snapshot, check_id)} == {ERROR}


# ------------------------------------------------------------------------------------------- the validated report

@pytest.fixture(scope="module")
def readiness_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("validation")
    baseline.build().save(root / "before.json")
    run_report(root / "before.json", root / "readiness")
    enabled_snapshot().save(root / "after.json")
    return root


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_the_validated_report_links_the_readiness_run_and_shows_what_changed(readiness_run):
    root = readiness_run
    result = invoke("report", "--evidence", root / "after.json", "--out", root / "validated", "--after-enable",
                    "--baseline", root / "readiness")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("VALIDATED (READY): ")
    out = root / "validated"
    assert not (out / "enable.ps1").exists() and not (out / "rollback.ps1").exists()
    readiness_manifest = verify_folder(root / "readiness").manifest_sha256
    html = (out / "report.html").read_text(encoding="utf-8")
    assert '<div class="verdict">VALIDATED</div>' in html
    assert '<a href="../readiness/report.html">' in html and '<a href="../readiness/rollback.ps1">' in html
    assert readiness_manifest in html
    assert "OAuth2ClientProfileEnabled: false -&gt; true" in html
    assert f"bearer.authorization_uri: null -&gt; &#34;{AUTHORIZE}&#34;" in html
    document = json.loads((out / "findings.json").read_text(encoding="utf-8"))
    assert document["kind"] == "validation" and document["baseline"]["manifest_sha256"] == readiness_manifest
    assert any(c["path"] == "OAuth2ClientProfileEnabled" and c["old"] is False and c["new"] is True
               for c in document["changes_since_baseline"]["fact_changes"])
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["run"]["kind"] == "validation"
    assert manifest["run"]["baseline"]["manifest_sha256"] == readiness_manifest
    assert manifest["run"]["checks"][0] == {"role": "builtin", "name": "validation.yaml",
                                            "sha256": manifest["run"]["checks"][0]["sha256"]}
    verified = invoke("verify", out)
    assert verified.exit_code == 0 and "built-in validation.yaml: identical" in verified.output
    markdown = (out / "report.md").read_text(encoding="utf-8")
    assert markdown.startswith("# HMA post-change validation: VALIDATED") and readiness_manifest in markdown


def test_validation_of_an_unswitched_organization_fails_with_an_action_plan(readiness_run):
    root = readiness_run
    result = invoke("report", "--evidence", root / "before.json", "--out", root / "not-switched", "--after-enable",
                    "--baseline", root / "readiness")
    assert result.exit_code == 1 and result.output.startswith("NOT VALIDATED (NOT_READY)")
    plan = (root / "not-switched" / "action-plan.csv").read_text(encoding="utf-8-sig")
    assert "HMA-VAL-001" in plan and "HMA-VAL-003" in plan


def test_a_baseline_must_verify_be_a_readiness_run_and_not_be_overwritten(readiness_run, tmp_path):
    root = readiness_run
    tampered = tmp_path / "tampered"
    shutil.copytree(root / "readiness", tampered)
    (tampered / "report.md").write_text("# READY\n", encoding="utf-8")
    result = invoke("report", "--evidence", root / "after.json", "--out", tmp_path / "v1", "--after-enable",
                    "--baseline", tampered)
    assert result.exit_code == 2 and "--baseline does not verify against its manifest" in result.output
    assert "first: modified report.md" in result.output and not (tmp_path / "v1").exists()

    run_report(root / "after.json", tmp_path / "validation", after_enable=True)
    not_readiness = invoke("report", "--evidence", root / "after.json", "--out", tmp_path / "v2", "--after-enable",
                           "--baseline", tmp_path / "validation")
    assert not_readiness.exit_code == 2 and "must be a readiness run" in not_readiness.output

    same = invoke("report", "--evidence", root / "after.json", "--out", root / "readiness", "--after-enable",
                  "--baseline", root / "readiness")
    assert same.exit_code == 2 and "write the validation to a folder of its own" in same.output
    assert verify_folder(root / "readiness").ok

    alone = invoke("report", "--evidence", root / "after.json", "--out", tmp_path / "v3", "--baseline",
                   root / "readiness")
    assert alone.exit_code == 2 and "--baseline is for --after-enable" in alone.output


def test_what_the_baseline_folder_says_about_itself_is_escaped_in_markdown(readiness_run, tmp_path):
    """findings.json of the readiness run is read from disk: its dates are text to escape, even in a folder that
    verifies (anyone can rewrite a manifest; only a signature says who)."""
    from tests.support.common import copy_of
    from hma_check.runs.manifest import build_manifest

    folder = copy_of(readiness_run / "readiness", tmp_path)
    findings = json.loads((folder / "findings.json").read_text(encoding="utf-8"))
    findings["metadata"]["generated_at"] = "<img src=x onerror=alert(1)>"
    (folder / "findings.json").write_text(json.dumps(findings), encoding="utf-8")
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    (folder / "manifest.json").write_bytes(build_manifest(
        {name: (folder / name).read_bytes() for name in manifest["files"]},
        {name: entry["role"] for name, entry in manifest["files"].items()}, manifest["run"]))
    run_report(readiness_run / "after.json", tmp_path / "v", after_enable=True, baseline=folder)
    markdown = (tmp_path / "v" / "report.md").read_text(encoding="utf-8")
    assert "generated \\<img src=x onerror=alert(1)\\>," in markdown and "<img" not in markdown.replace("\\<img", "")


def test_without_a_baseline_the_report_says_none_is_named(readiness_run, tmp_path):
    outcome = run_report(readiness_run / "after.json", tmp_path / "v", after_enable=True)
    assert outcome.exit_code == 0 and outcome.report.baseline is None
    assert "No readiness run is named" in (tmp_path / "v" / "report.html").read_text(encoding="utf-8")


# ------------------------------------------------------------------------------- through the real scan of the lab

@pytest.mark.xdist_group("validation-lab")
def test_real_scan_of_the_lab_validates_enabled_and_fails_ready(tmp_path):
    """'ready' is the organisation before the switch, 'enabled' after it: hma-check demo scans each through the
    real clients; the readiness run of 'ready' is the baseline of both validations."""
    readiness = invoke("demo", "--scenario", "ready", "--out", tmp_path / "readiness")
    assert readiness.exit_code in (0, 3), readiness.output
    assert invoke("verify", tmp_path / "readiness").exit_code == 0, "the demo's scan-config.yaml is in the manifest"
    runs = {}
    for name in ("ready", "enabled"):
        result = invoke("demo", "--scenario", name, "--out", tmp_path / name, "--after-enable", "--baseline",
                        tmp_path / "readiness")
        document = json.loads((tmp_path / name / "findings.json").read_text(encoding="utf-8"))
        runs[name] = result, document, {f["check_id"]: f for f in document["findings"]}
    result, document, ready = runs["ready"]
    assert result.exit_code == 1 and "NOT VALIDATED (NOT_READY)" in result.output
    statuses = {(f["check_id"], f["status"]) for f in document["findings"]}
    # Before the switch: both settings off, and Exchange's own answers say so on every URL probed.
    assert {s for s in statuses if s[1] == FAIL} == {("HMA-VAL-001", FAIL), ("HMA-VAL-002", FAIL),
                                                      ("HMA-VAL-003", FAIL), ("HMA-VAL-004", FAIL)}
    result, document, enabled = runs["enabled"]
    assert result.exit_code == 0 and "VALIDATED (READY)" in result.output, result.output
    probed = [f for f in document["findings"] if f["check_id"] == "HMA-VAL-003"]
    assert len(probed) >= 10 and all(f["status"] == PASS for f in document["findings"] if f["check_id"] not in EVIDENCE)
    assert {f["status"] for f in document["findings"] if f["check_id"] in EVIDENCE} == {NOT_APPLICABLE}  # no logs:
    assert all("authorization_uri https://login." in f["actual"] for f in probed)
    assert document["baseline"]["manifest_sha256"] == verify_folder(tmp_path / "readiness").manifest_sha256
    assert any(c["source"] == "exchange.organization_config" and c["path"] == "OAuth2ClientProfileEnabled"
               and (c["old"], c["new"]) == (False, True) for c in document["changes_since_baseline"]["fact_changes"])
    assert invoke("verify", tmp_path / "enabled").exit_code == 0


@pytest.mark.xdist_group("validation-lab")
def test_real_scan_catches_ssl_offloading_that_no_anonymous_probe_can_see(tmp_path):
    """HMA switched on behind a TLS-offloading load balancer: the empty-Bearer probes look fine (only a real token
    gets the 2000003 answer), so the server setting is what fails the validation."""
    scenario = tmp_path / "enabled-ssl-offload.yaml"
    scenario.write_text("""\
extends: enabled
name: enabled-ssl-offload
description: HMA switched on, but the load balancer offloads TLS.
expect: {verdict: NOT_READY}
server_defaults:
  virtual_directories:
    outlook_anywhere: {SSLOffloading: true, InternalClientsRequireSsl: false, ExternalClientsRequireSsl: false}
  iis:
    ssl_flags: {mapi: None, EWS: None, Autodiscover: None, OAB: None, Microsoft-Server-ActiveSync: None}
""", encoding="utf-8")
    result = invoke("demo", "--scenario-file", scenario, "--out", tmp_path / "out", "--after-enable")
    assert result.exit_code == 1, result.output
    findings = json.loads((tmp_path / "out" / "findings.json").read_text(encoding="utf-8"))["findings"]
    failed = {(f["check_id"], f["subject"]) for f in findings if f["status"] != PASS and f["check_id"] not in EVIDENCE}
    assert failed == {("HMA-VAL-006", "EX01"), ("HMA-VAL-006", "EX02")}
