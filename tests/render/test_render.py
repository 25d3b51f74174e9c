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
        {"set": ["exchange.outlook_anywhere@EX02", 0, "SSLOffloading"], "to": True},
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
    enable = (out / "enable.ps1").read_text(encoding="utf-8")
    rollback = (out / "rollback.ps1").read_text(encoding="utf-8")
    assert enable.index("Phase 1") < enable.index("Phase 2") < enable.index("Phase 3")
    assert enable.index("IsDefaultAuthorizationEndpoint $true") < enable.index("OAuth2ClientProfileEnabled = $true")
    # rollback: the client switch goes off first, then EvoSts, then the preparation is restored
    assert rollback.index("OAuth2ClientProfileEnabled = $false") < rollback.index("IsDefaultAuthorizationEndpoint $false")
    assert rollback.index("IsDefaultAuthorizationEndpoint $false") < rollback.index("Undo phase 1")
    for text in (enable, rollback):
        first_command = next(line for line in text.splitlines() if line and not line.startswith("#"))
        assert first_command.startswith("throw "), "a runbook must stop if someone runs it as a script"
    assert "WARNING: do not run phase 2" in enable


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
                                            {"set": ["exchange.outlook_anywhere@EX02", 0, "SSLOffloading"], "to": True}])
    snapshot.save(tmp_path / "evidence.json")
    run_report(tmp_path / "evidence.json", tmp_path / "out")
    root = ET.parse(tmp_path / "out" / "junit.xml").getroot()
    failures = root.findall(".//failure")
    errors = root.findall(".//error")
    assert any("SSLOffloading True" in (f.get("message") or "") for f in failures)
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
    assert report.hma_state.startswith("HMA is enabled")
    phase2 = next(p for p in report.enable_phases if p["phase"] == 2)["entries"]
    assert all(e.note and "already in place" in e.note for e in phase2)
    assert all(line.startswith("#") for e in phase2 for line in e.enable.splitlines())
    rollback = render_all(report)["rollback.ps1"].decode()
    assert "$organizationChange = @{ OAuth2ClientProfileEnabled = $false }" in rollback


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
        {"set": ["exchange.outlook_anywhere@EX02", 0, "SSLOffloading"], "to": True},
        {"set": ["os.tls_registry@EX01", "Protocols", "TLS 1.0"],
         "to": {"Server": {"Enabled": 1, "DisabledByDefault": 0}, "Client": {"Enabled": 1, "DisabledByDefault": 0}}}])
    evaluation = evaluate(catalogue, snapshot)
    apply_exemptions(evaluation.findings, [Exemption("HMA-VDIR-008", "EX02", "r", "a", date(2099, 1, 1), "x", 1)],
                     date(2026, 11, 20))
    report = build_report(evaluation, exit_code=0, evidence_sha256="0" * 64)
    assert [(f.check_id, f.status) for f in report.attention] == [("HMA-VDIR-008", "EXEMPT"), ("HMA-TLS-004", "WARN")]
    outputs = render_all(report)
    for name in ("report.md", "report.html"):
        text = outputs[name].decode("utf-8")
        assert text.index("HMA-VDIR-008") < text.index("HMA-TLS-004"), name
