"""Renderers: golden report.md, JUnit, findings.json, hostile values escaped in HTML and one literal in PowerShell."""

from __future__ import annotations

import hashlib
import json
import os
import re
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path

import pytest

from tests.support import baseline
from tests.support.common import SAMPLE, TESTS
from tests.support.baseline import apply_ops
from tests.support.runbook_proof import check_runbooks
from hma_check.evaluate.checks import SWITCH
from hma_check.evaluate.engine import evaluate
from hma_check.commands.pipeline import OUTPUTS, run_report
from hma_check.render import render_all
from hma_check.render.model import build_report

HOSTILE_SERVER = "EX1<script>alert(1)</script>"
HOSTILE_IDENTITY = "x'; Remove-Item C:\\ -Recurse; '"


def hostile_snapshot():
    snapshot = baseline.build(server_names=(HOSTILE_SERVER, "EX02"))
    return apply_ops(snapshot, [
        {"set": ["exchange.outlook_anywhere@EX02", 0, "Identity"], "to": HOSTILE_IDENTITY},
        {"set": ["os.iis_ssl_flags@EX02", "/mapi", "RequireSsl"], "to": False},
        {"set": [f"exchange.mapi_virtual_directories@{HOSTILE_SERVER}", 0, "Identity"], "to": HOSTILE_IDENTITY},
        {"set": [f"exchange.mapi_virtual_directories@{HOSTILE_SERVER}", 0, "IISAuthenticationMethods"],
         "to": ["Ntlm", "Negotiate\r\nRemove-Item C:\\"]},
    ])


@pytest.fixture(scope="module")
def hostile_outputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    hostile_snapshot().save(folder / "evidence.json")
    outcome = run_report(folder / "evidence.json", folder / "out")
    return outcome, folder / "out"


def test_every_output_is_written(hostile_outputs):
    outcome, out = hostile_outputs
    for name in OUTPUTS + ("evidence.json",):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert outcome.verdict == "NOT_READY" and outcome.exit_code == 1


def test_hostile_values_are_escaped_in_html(hostile_outputs):
    _, out = hostile_outputs
    html = (out / "report.html").read_text(encoding="utf-8")
    assert HOSTILE_SERVER not in html
    assert "EX1&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert html.count("<script>") == 1   # the report's own copy-button script, nothing else


def test_hostile_values_are_escaped_in_markdown_and_junit(hostile_outputs):
    _, out = hostile_outputs
    markdown = (out / "report.md").read_text(encoding="utf-8")
    # Inside a fenced code block (runbook PowerShell naming the server) text is literal: only the prose must be escaped.
    prose = re.sub(r"^(`{3,})[a-z]*\n.*?^\1$", "", markdown, flags=re.M | re.S)
    assert "<script>" not in prose and "EX1\\<script\\>alert(1)\\</script\\>" in prose
    ET.parse(out / "junit.xml")   # parses: control characters and markup did not break the XML


def _powershell_tree(path: Path):
    import tree_sitter_powershell
    from tree_sitter import Language, Parser

    source = path.read_bytes()
    return source, Parser(Language(tree_sitter_powershell.language())).parse(source)


def _walk(node):
    yield node
    for child in node.children:
        yield from _walk(child)


@pytest.mark.parametrize("name", ["enable.ps1", "rollback.ps1"])
def test_hostile_values_stay_one_string_literal_in_powershell(hostile_outputs, name):
    _, out = hostile_outputs
    source, tree = _powershell_tree(out / name)
    nodes = list(_walk(tree.root_node))
    errors = [source[n.start_byte:n.end_byte][:80] for n in nodes if n.type == "ERROR" or n.is_missing]
    assert not errors and not tree.root_node.has_error, errors
    literals = [source[n.start_byte:n.end_byte].decode() for n in nodes if n.type == "verbatim_string_characters"]
    expected = "'" + HOSTILE_IDENTITY.replace("'", "''") + "'"
    assert expected in literals, "the hostile identity is not a single verbatim string token"
    commands = [source[n.start_byte:n.end_byte].decode() for n in nodes if n.type == "command_name"]
    assert "Remove-Item" not in commands
    # the CR LF inside IISAuthenticationMethods, spliced in as characters (enable adds OAuth, rollback restores)
    assert "[char]13 + [char]10" in source.decode()


def test_the_runbooks_are_ordered_and_guarded(hostile_outputs):
    _, out = hostile_outputs
    enable_book, rollback_book = check_runbooks(out)   # guard first, phases, inverses, no list overwrite, order
    enable = (out / "enable.ps1").read_text(encoding="utf-8")
    rollback = (out / "rollback.ps1").read_text(encoding="utf-8")
    assert enable.index("Phase 1") < enable.index("Phase 3")
    assert enable.index("IsDefaultAuthorizationEndpoint $true") < enable.index("OAuth2ClientProfileEnabled = $true")
    # rollback: the client switch goes off first, then EvoSts, then the preparation is restored
    assert rollback.index("OAuth2ClientProfileEnabled = $false") < rollback.index("IsDefaultAuthorizationEndpoint $false")
    assert rollback.index("IsDefaultAuthorizationEndpoint $false") < rollback.index("Undo phase 1")
    for book in (enable_book, rollback_book):
        statements = [n for n in next(c for c in book.tree.root_node.children if c.type == "statement_list").children]
        second = book.source[statements[1].start_byte:statements[1].end_byte].decode()
        assert second.startswith("throw "), "after the shell guard, a runbook stops if someone runs it as a script"
    assert "WARNING: the switch and every later phase are BLOCKED" in enable


def test_findings_json_carries_the_hashes_a_change_board_verifies(hostile_outputs):
    _, out = hostile_outputs
    document = json.loads((out / "findings.json").read_text(encoding="utf-8"))
    evidence_hash = hashlib.sha256((out.parent / "evidence.json").read_bytes()).hexdigest()
    assert document["metadata"]["evidence_sha256"] == evidence_hash
    assert document["metadata"]["checks_files"][0]["sha256"] == hashlib.sha256(
        Path(document["metadata"]["checks_files"][0]["path"]).read_bytes()).hexdigest()
    assert document["verdict"] == "NOT_READY"
    assert {"check_id", "status", "subject", "expected", "actual", "sources", "excerpt"} <= set(document["findings"][0])


def test_junit_maps_statuses(tmp_path):
    snapshot = apply_ops(baseline.build(), [{"fail": "os.tls_registry@EX02"},
                                            {"set": ["os.iis_ssl_flags@EX02", "/mapi", "RequireSsl"], "to": False}])
    snapshot.save(tmp_path / "evidence.json")
    run_report(tmp_path / "evidence.json", tmp_path / "out")
    root = ET.parse(tmp_path / "out" / "junit.xml").getroot()
    failures = root.findall(".//failure")
    errors = root.findall(".//error")
    assert any("Require SSL is off on /mapi" in (f.get("message") or "") for f in failures)
    assert errors and all("os.tls_registry@EX02" in (e.get("message") or "") for e in errors)
    assert int(root.get("tests")) == len(root.findall(".//testcase"))


def test_nothing_is_half_written_when_rendering_fails(tmp_path, monkeypatch):
    baseline.build().save(tmp_path / "evidence.json")
    out = tmp_path / "out"

    def broken(report):
        raise RuntimeError("renderer crashed")

    import hma_check.render as render_package

    monkeypatch.setattr(render_package, "render_all", broken)
    with pytest.raises(RuntimeError):
        run_report(tmp_path / "evidence.json", out)
    assert not out.exists() or not any(out.iterdir())


def test_golden_report_md(catalogue):
    """The sample's report.md, byte for byte (regenerate with UPDATE_GOLDEN=1 after a deliberate change)."""
    from hma_check.contract.snapshot import load_snapshot

    snapshot = load_snapshot(SAMPLE)
    evaluation = evaluate(catalogue, snapshot)
    report = build_report(evaluation, exit_code=1, evidence_sha256="0" * 64,
                          generated_at=datetime(2026, 11, 20, 10, 0, tzinfo=timezone.utc))
    # the checkout's absolute path would differ per machine (a copy: the session's catalogue stays as loaded)
    report.metadata["checks_files"] = [dict(entry, path="checks.yaml") for entry in report.metadata["checks_files"]]
    rendered = render_all(report)["report.md"].decode("utf-8")
    golden = TESTS / "golden" / "report.md"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(rendered, encoding="utf-8")
    assert rendered == golden.read_text(encoding="utf-8")


def test_the_shipped_sample_matches_its_generator():
    from tests.support.make_sample import build_sample

    assert SAMPLE.read_bytes() == build_sample().dumps(), "run: python -m tests.support.make_sample"


def test_report_of_an_enabled_organization_marks_the_switches_done(catalogue):
    snapshot = apply_ops(baseline.build(), [
        {"set": ["exchange.organization_config", "OAuth2ClientProfileEnabled"], "to": True},
        {"set": ["exchange.auth_servers", 0, "IsDefaultAuthorizationEndpoint"], "to": True}])
    evaluation = evaluate(catalogue, snapshot)
    report = build_report(evaluation, exit_code=0, evidence_sha256="0" * 64)
    assert report.hma_state.startswith("HMA is enabled") and report.hma_switches == "enabled"
    switch = next(p for p in report.enable_phases if p["phase"] == SWITCH)["entries"]
    assert [e.label for e in switch] == ["DONE", "DONE"] and all("already in place" in e.note for e in switch)
    assert all(line.startswith("#") for e in switch for line in e.enable.splitlines())
    # the rollback undoes only what the enable runbook changes: the switch was on before it, so it is a comment
    rollback = render_all(report)["rollback.ps1"].decode()
    assert "# $organizationChange = @{ OAuth2ClientProfileEnabled = $false }" in rollback
    assert "# DONE: nothing to undo: this was in place before the enable runbook" in rollback


def test_the_hma_state_is_unknown_when_the_switch_is_not_in_the_evidence(catalogue):
    snapshot = baseline.build()
    del snapshot.sources["exchange.organization_config"].data["OAuth2ClientProfileEnabled"]
    report = build_report(evaluate(catalogue, snapshot), exit_code=3, evidence_sha256="0" * 64)
    assert report.hma_state.startswith("unknown: ")


def test_what_needs_attention_lists_blockers_first_in_html_and_markdown(catalogue):
    """An exempted blocker still heads the list, before a warning: the order is the report model's, for both."""
    from datetime import date

    from hma_check.evaluate.exemptions import Exemption, apply_exemptions

    snapshot = apply_ops(baseline.build(), [
        {"set": ["os.iis_ssl_flags@EX02", "/mapi", "RequireSsl"], "to": False},
        {"set": ["os.tls_registry@EX01", "Protocols", "TLS 1.0"],
         "to": {"Server": {"Enabled": 1, "DisabledByDefault": 0}, "Client": {"Enabled": 1, "DisabledByDefault": 0}}}])
    evaluation = evaluate(catalogue, snapshot)
    apply_exemptions(evaluation.findings, [Exemption("HMA-VDIR-008", "EX02", "r", "a", date(2099, 1, 1), "x", 1)],
                     date(2026, 11, 20))
    report = build_report(evaluation, exit_code=0, evidence_sha256="0" * 64)
    assert [(f.check_id, f.status) for f in report.attention] == [("HMA-VDIR-008", "EXEMPT"), ("HMA-TLS-004", "WARN")]
    outputs = render_all(report)
    markdown = outputs["report.md"].decode("utf-8")
    html = outputs["report.html"].decode("utf-8")
    # the list itself (the first screen's "start here" names the first runbook step, which may be the warning's)
    for name, text in (("report.md", markdown), ("report.html", html[html.index('<section id="attention">'):])):
        assert text.index("HMA-VDIR-008") < text.index("HMA-TLS-004"), name


def test_junit_stays_well_formed_for_any_character(tmp_path):
    """Before: U+FFFE, U+FFFF (and the noncharacters) went into junit.xml as they were: no XML parser reads it."""
    from hma_check.render import junit
    from hma_check.render.model import build_report

    odd = "EX\ufffe\uffff\ufdd0\U0001ffff\x00\x1b\x85-01"
    snapshot = apply_ops(baseline.build(server_names=(odd, "EX02")), [
        {"set": [f"exchange.mapi_virtual_directories@{odd}", 0, "IISAuthenticationMethods"], "to": ["Ntlm"]}])
    from hma_check.commands.pipeline import load_all_checks
    from hma_check.evaluate.engine import evaluate

    report = build_report(evaluate(load_all_checks(), snapshot), exit_code=1, evidence_sha256="0" * 64)
    root = ET.fromstring(junit.render(report))   # expat: strict about XML's characters
    names = [case.get("name") for case in root.iter("testcase")]
    assert any("EX\ufffd\ufffd\ufffd\ufffd\ufffd\ufffd\ufffd-01" in name for name in names)


def test_junit_cleans_ascii_text_as_it_cleans_any_text():
    """ASCII text takes a smaller character class (the full one is slow): both give the same result on any text."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from hma_check.render import junit
    from tests.support.fuzz import FUZZ, examples

    special = st.sampled_from(["\x00", "\x08", "\t", "\n", "\x0b", "\r", "\x1f", "\x7f", "\x85", "\x9f", "\ud800",
                               "\ufdd0", "\ufffe", "\uffff", "\U0001fffe", "\U0010ffff", "a", " ", "é"])
    texts = st.lists(special | st.characters(), max_size=20).map("".join)

    @settings(FUZZ, max_examples=examples(300))
    @given(text=texts)
    def one(text):
        assert junit._clean(text) == junit._NOT_XML.sub("\ufffd", text)

    one()
    assert junit._clean("EX\x0001\x7f") == "EX\ufffd01\ufffd" and junit._clean(None) == ""


def attention_snapshot():
    """Four servers: EX02 without OAuth on /mapi (its node's Bearer probe fails too: an effect), TLS 1.0 on two
    servers (one row for both), WinRM refused on EX04 (errors grouped), Basic on every ActiveSync (a note)."""
    snapshot = baseline.build(server_names=("EX01", "EX02", "EX03", "EX04"))
    legacy = {"Server": {"Enabled": 1, "DisabledByDefault": 0}, "Client": {"Enabled": 1, "DisabledByDefault": 0}}
    ops = [
        {"set": ["exchange.mapi_virtual_directories@EX02", 0, "IISAuthenticationMethods"], "to": ["Ntlm", "Negotiate"]},
        {"set": ["exchange.mapi_virtual_directories@EX02", 0, "InternalAuthenticationMethods"], "to": ["Ntlm"]},
        {"set": ["os.tls_registry@EX01", "Protocols", "TLS 1.0"], "to": legacy},
        {"set": ["os.tls_registry@EX03", "Protocols", "TLS 1.0"], "to": legacy},
        {"fail": "os.tls_registry@EX04"},
        *({"set": [f"exchange.activesync_virtual_directories@{s}", 0, "BasicAuthEnabled"], "to": True}
          for s in ("EX01", "EX02", "EX03", "EX04")),
    ]
    apply_ops(snapshot, ops)
    mapi = snapshot.sources["probe.bearer@https://mail.contoso.com/mapi/"].data
    mapi.update(bearer=None, x_feserver="EX02", www_authenticate=["Negotiate", "NTLM"])
    return snapshot


def test_golden_grouped_attention_table(catalogue):
    """What needs attention, byte for byte in HTML and Markdown (regenerate with UPDATE_GOLDEN=1): one row per
    check and result, the probe failure and the authentication drift under the MAPI row they follow from, one row
    for TLS 1.0 on two servers and one for the server whose facts were not collected, the notes apart."""
    evaluation = evaluate(catalogue, attention_snapshot())
    report = build_report(evaluation, exit_code=1, evidence_sha256="0" * 64,
                          generated_at=datetime(2026, 11, 20, 10, 0, tzinfo=timezone.utc))
    rows = {(row.check_id, row.status): row for row in report.rows}
    mapi = rows[("HMA-VDIR-001", "FAIL")]
    assert [(e.check_id, e.status) for e in mapi.effects] == [("HMA-PROBE-001", "FAIL"), ("HMA-VDIR-007", "WARN")]
    assert rows[("HMA-TLS-004", "WARN")].subject_summary == "EX01, EX03 (2 servers)"
    assert [(r.check_id, r.subject_summary) for r in report.note_rows] == [("HMA-VDIR-005", "EX01–EX04 (4 servers)")]
    outputs = render_all(report)
    html = outputs["report.html"].decode("utf-8")
    markdown = outputs["report.md"].decode("utf-8")
    sections = {
        "attention.html": html[html.index('<section id="attention">'):html.index('<section id="enable"')],
        "attention.md": markdown[markdown.index("## Blockers"):markdown.index("## Enable runbook")],
    }
    for name, text in sections.items():
        golden = TESTS / "golden" / name
        if os.environ.get("UPDATE_GOLDEN"):
            golden.write_text(text, encoding="utf-8")
        assert text == golden.read_text(encoding="utf-8"), name


def test_a_note_is_grey_never_a_warning_in_any_output(tmp_path):
    snapshot = apply_ops(baseline.build(), [{"set": ["exchange.activesync_virtual_directories@EX01", 0,
                                                     "BasicAuthEnabled"], "to": True}])
    snapshot.save(tmp_path / "evidence.json")
    outcome = run_report(tmp_path / "evidence.json", tmp_path / "out")
    assert outcome.verdict == "READY" and outcome.counts["NOTE"] == 1 and outcome.counts["WARN"] == 0
    root = ET.parse(tmp_path / "out" / "junit.xml").getroot()
    [case] = [c for c in root.iter("testcase") if "HMA-VDIR-005" in c.get("name") and "EX01" in c.get("name")]
    assert case.find("failure") is None and case.find("system-out").text.startswith("NOTE (info)")
    html = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert '<span class="badge note">NOTE</span>' in html and "No blocker" in html
    assert "HMA-VDIR-005" not in (tmp_path / "out" / "action-plan.csv").read_text(encoding="utf-8-sig")


def test_subjects_are_compacted_into_runs_of_numbered_names():
    """'EX001–EX200' for a run; a run needs the same prefix, consecutive numbers and the same number of digits;
    other names stand alone, in natural order; more than the limit ends in 'and N more'."""
    from hma_check.render.attention import compact

    assert compact([f"EX{i:03d}" for i in range(200, 0, -1)]) == "EX001–EX200"
    assert compact(["EX01", "EX02", "EX03", "EX05", "EX1", "EX2", "A"], limit=10) == "A, EX01, EX1, EX02, EX2, EX03, EX05"
    assert compact(["EX09", "EX10", "EX11", "ex12", "EX13"], limit=10) == "EX09–EX11, ex12, EX13"
    assert compact(["EX008", "EX009", "EX010", "EX10"], limit=10) == "EX008–EX010, EX10"
    assert compact([f"S{i}" for i in range(1, 20, 2)], limit=3) == "S1, S3 and 8 more"


def test_a_damaged_httpproxy_summary_renders_what_is_there():
    """Evidence that loads can hold a damaged logs.httpproxy summary (a fuzz run dropped a client group's
    AuthenticationType: the report ended in a traceback). Every output renders; a missing field reads as missing."""
    from hma_check.commands.pipeline import load_all_checks

    snapshot = baseline.build()
    data = snapshot.sources["logs.httpproxy"].data
    del data["clients"][0]["AuthenticationType"]
    del data["clients"][1]["first_seen"]
    data["clients"][2]["requests"] = "many"
    data["clients"][2]["people"] = [{"no user": 1}, "text"]
    data["user_agents"] = [{"UserAgent": "x"}, "not a row"]
    data["servers"].append({"requests": 3})
    data["window"] = ["not", "a", "mapping"]
    data["malformed"] = {"lines": 2, "examples": ["not a row"]}
    report = build_report(evaluate(load_all_checks(), snapshot), exit_code=1, evidence_sha256="0" * 64)
    files = render_all(report)
    page = files["report.html"].decode("utf-8")
    assert "(not in the evidence)" in page and "2 malformed log line(s)" in page
    assert "(not in the evidence)" in files["report.md"].decode("utf-8")


def _junit_by_elementtree(report):
    """junit.xml as ElementTree writes it: the oracle render() is held to, byte for byte."""
    from hma_check.contract.findings import ERROR, EXEMPT, FAIL, NOT_APPLICABLE, NOTE, WARN
    from hma_check.render.junit import _clean

    suites = ET.Element("testsuites", name="hma-check", tests=str(len(report.findings)),
                        failures=str(report.counts[FAIL]), errors=str(report.counts[ERROR]))
    for area in report.areas:
        suite = ET.SubElement(suites, "testsuite", name=_clean(area.title), tests=str(len(area.findings)),
                              failures=str(area.counts[FAIL]), errors=str(area.counts[ERROR]),
                              skipped=str(area.counts[NOT_APPLICABLE] + area.counts[EXEMPT]))
        for finding in area.findings:
            case = ET.SubElement(suite, "testcase", classname=_clean(f"hma-check.{area.id}.{finding.check_id}"),
                                 name=_clean(f"{finding.check_id} {finding.title} [{finding.subject}]"))
            if finding.status == FAIL:
                node = ET.SubElement(case, "failure", message=_clean(finding.actual), type=finding.severity)
                node.text = _clean(f"expected: {finding.expected}\nactual: {finding.actual}\nwhy: {finding.why}")
            elif finding.status == ERROR:
                node = ET.SubElement(case, "error", message=_clean(finding.reason), type="could-not-evaluate")
                node.text = _clean(finding.reason)
            elif finding.status == NOT_APPLICABLE:
                ET.SubElement(case, "skipped", message=_clean(finding.reason))
            elif finding.status == EXEMPT:
                exemption = finding.exemption or {}
                ET.SubElement(case, "skipped", message=_clean(
                    f"exempt ({finding.original_status}): {exemption.get('reason')} - approved by "
                    f"{exemption.get('approved_by')} until {exemption.get('expires')}"))
            elif finding.status in (WARN, NOTE):
                ET.SubElement(case, "system-out").text = _clean(f"{finding.status} ({finding.severity}): {finding.actual}")
    ET.indent(suites)
    return ET.tostring(suites, encoding="utf-8", xml_declaration=True) + b"\n"


def test_junit_is_what_elementtree_writes(tmp_path):
    """junit.xml is built as text: byte for byte what ElementTree wrote, on a report with every status, markup and
    line ends in its values, an exemption, and an empty report."""
    from hma_check.commands.pipeline import load_all_checks
    from hma_check.evaluate.engine import evaluate
    from hma_check.evaluate.exemptions import apply_exemptions, parse_exemptions
    from hma_check.render import junit
    from hma_check.render.model import build_report

    odd = 'EX<&>"\t\r\n\x00-01'
    snapshot = apply_ops(baseline.build(server_names=(odd, "EX02")), [
        {"set": [f"exchange.mapi_virtual_directories@{odd}", 0, "IISAuthenticationMethods"], "to": ["Ntlm"]},
        {"set": ["exchange.mapi_virtual_directories@EX02", 0, "IISAuthenticationMethods"], "to": ["Ntlm"]},
        {"fail": "os.tls_registry@EX02"}])
    checks = load_all_checks()
    evaluation = evaluate(checks, snapshot)
    exemptions = parse_exemptions(
        b"version: 1\nexemptions:\n  - check: HMA-VDIR-001\n    subject: EX02\n    reason: 'accepted <risk> & \"more\"'\n"
        b"    approved_by: CAB\n    expires: 2099-01-01\n", "exemptions.yaml", {c.id for c in checks.checks})
    apply_exemptions(evaluation.findings, exemptions, evaluation.as_of.date())
    report = build_report(evaluation, exit_code=1, evidence_sha256="0" * 64)
    statuses = {finding.status for finding in report.findings}
    assert {"PASS", "FAIL", "ERROR", "EXEMPT", "NOT_APPLICABLE"} <= statuses, statuses
    assert junit.render(report) == _junit_by_elementtree(report)
    report.findings, report.areas = [], []
    assert junit.render(report) == _junit_by_elementtree(report)
