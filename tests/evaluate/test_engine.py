"""The engine's contracts: statuses, per-scope errors, requires, when, on_empty, verdict, exemptions, sandbox."""

from __future__ import annotations

import textwrap
from datetime import date, datetime, timezone

import pytest

from tests.support.baseline import apply_ops
from tests.support import baseline
from hma_check.evaluate.checks import load_checks
from hma_check.evaluate.engine import evaluate
from hma_check.evaluate.exemptions import apply_exemptions, load_exemptions
from hma_check.errors import ExemptionsError
from hma_check.contract.findings import (ERROR, EXEMPT, FAIL, INCOMPLETE, NOT_APPLICABLE, NOT_READY, NOTE, PASS, READY,
                                         WARN, counts, exit_code, verdict_of)

HEADER = "version: 1\nchecks:\n"
COMMON = """    expect: x
    actual: "{{ 'ok' }}"
    why: because
    references: [https://learn.microsoft.com/x]
"""


def one_check(tmp_path, body: str, name: str = "c.yaml"):
    """Checks from YAML snippets; the fields every check needs but these tests do not vary are added to each."""
    path = tmp_path / name
    checks = textwrap.dedent(body).strip().split("- id: ")[1:]
    text = HEADER + "".join(textwrap.indent("- id: " + c.rstrip() + "\n", "  ") + COMMON for c in checks)
    path.write_text(text, encoding="utf-8")
    return load_checks([path])


def findings_of(checks, snapshot):
    return evaluate(checks, snapshot).findings


def test_per_server_failure_is_error_for_that_server_only(tmp_path, snapshot):
    checks = one_check(tmp_path, """\
        - id: TST-VDIR-001
          title: t
          area: a
          severity: blocker
          requires: [exchange.mapi_virtual_directories]
          for_each: exchange.mapi_virtual_directories
          subject: "{{ item.Server }}"
          assert: "item.IISAuthenticationMethods is contains_ci('OAuth')"
        """)
    apply_ops(snapshot, [{"fail": "exchange.mapi_virtual_directories@EX02"}])
    found = {f.subject: f for f in findings_of(checks, snapshot)}
    assert found["EX01"].status == PASS
    assert found["EX02"].status == ERROR
    assert "exchange.mapi_virtual_directories@EX02" in found["EX02"].reason
    assert "TimeoutError" in found["EX02"].reason


def test_requires_names_the_source_and_its_error(tmp_path, snapshot):
    checks = one_check(tmp_path, """\
        - id: TST-ORG-001
          title: t
          area: a
          severity: blocker
          requires: [exchange.organization_config]
          assert: "exchange.organization_config.MapiHttpEnabled is true"
        """)
    apply_ops(snapshot, [{"fail": "exchange.organization_config"}])
    [finding] = findings_of(checks, snapshot)
    assert finding.status == ERROR
    assert "exchange.organization_config" in finding.reason and "simulated collection failure" in finding.reason
    assert verdict_of([finding]) == INCOMPLETE


def test_a_missing_property_is_error_not_pass(tmp_path, snapshot):
    checks = one_check(tmp_path, """\
        - id: TST-ORG-002
          title: t
          area: a
          severity: blocker
          requires: [exchange.organization_config]
          assert: "not exchange.organization_config.NoSuchProperty"
        """)
    [finding] = findings_of(checks, snapshot)
    assert finding.status == ERROR and "NoSuchProperty" in finding.reason


def test_a_non_boolean_assertion_is_error(tmp_path, snapshot):
    checks = one_check(tmp_path, """\
        - id: TST-ORG-003
          title: t
          area: a
          severity: warning
          requires: [exchange.servers]
          assert: "exchange.servers | length"
        """)
    [finding] = findings_of(checks, snapshot)
    assert finding.status == ERROR and "not true or false" in finding.reason


def test_when_false_is_not_applicable_and_warning_severity_warns(tmp_path, snapshot):
    checks = one_check(tmp_path, """\
        - id: TST-ORG-004
          title: t
          area: a
          severity: warning
          requires: [exchange.organization_config]
          when: "exchange.organization_config.MapiHttpEnabled is false"
          assert: "false"
        - id: TST-ORG-005
          title: t
          area: a
          severity: warning
          requires: [exchange.organization_config]
          assert: "false"
        """)
    first, second = findings_of(checks, snapshot)
    assert first.status == NOT_APPLICABLE and "when" in first.reason
    assert second.status == WARN


def test_an_info_check_notes_and_never_warns_or_blocks(tmp_path, snapshot):
    checks = one_check(tmp_path, """\
        - id: TST-ORG-006
          title: t
          area: a
          severity: info
          requires: [exchange.organization_config]
          assert: "false"
        """)
    [note] = findings_of(checks, snapshot)
    assert note.status == NOTE
    assert counts([note])[WARN] == 0 and counts([note])[NOTE] == 1
    assert verdict_of([note]) == READY


def test_on_empty_default_is_error_and_can_be_not_applicable(tmp_path, snapshot):
    checks = one_check(tmp_path, """\
        - id: TST-AUTH-001
          title: t
          area: a
          severity: blocker
          requires: [exchange.auth_servers]
          for_each: "exchange.auth_servers | selectattr('Type', 'eq', 'ADFS') | list"
          assert: "true"
        - id: TST-AUTH-002
          title: t
          area: a
          severity: blocker
          requires: [exchange.auth_servers]
          for_each: "exchange.auth_servers | selectattr('Type', 'eq', 'ADFS') | list"
          on_empty: not_applicable
          assert: "true"
        """)
    first, second = findings_of(checks, snapshot)
    assert first.status == ERROR and "nothing to evaluate" in first.reason
    assert second.status == NOT_APPLICABLE


def test_iterating_a_partly_collected_source_is_error(tmp_path, snapshot):
    """An aggregate over every server cannot pass when one server's part is missing."""
    checks = one_check(tmp_path, """\
        - id: TST-VDIR-002
          title: t
          area: a
          severity: blocker
          requires: [exchange.oab_virtual_directories]
          assert: "exchange.oab_virtual_directories | selectattr('OAuthAuthentication') | list | length > 0"
        """)
    apply_ops(snapshot, [{"fail": "exchange.oab_virtual_directories@EX01"}])
    [finding] = findings_of(checks, snapshot)
    assert finding.status == ERROR and "1 of 2 scopes" in finding.reason


def test_findings_cite_the_exact_sources_they_read(catalogue, snapshot):
    findings = [f for f in evaluate(catalogue, snapshot).findings if f.check_id == "HMA-AUTH-008"]
    ex01 = next(f for f in findings if f.subject == "EX01")
    keys = [s["key"] for s in ex01.sources]
    assert "exchange.exchange_certificates@EX01" in keys and "exchange.auth_config" in keys
    assert "exchange.exchange_certificates@EX02" not in keys
    assert all(s["command"] for s in ex01.sources)


def test_findings_over_an_organisation_wide_list_cite_it(catalogue, snapshot):
    finding = next(f for f in evaluate(catalogue, snapshot).findings if f.check_id == "HMA-TOPO-001")
    assert [s["key"] for s in finding.sources] == ["exchange.servers"]


def _finding(catalogue, snapshot, check_id, subject):
    return next(f for f in evaluate(catalogue, snapshot).findings if f.check_id == check_id and f.subject == subject)


def test_evidence_excerpt_shows_the_properties_the_assertion_tested(catalogue, snapshot):
    finding = _finding(catalogue, snapshot, "HMA-VDIR-001", "EX01")
    assert finding.status == PASS and finding.failing == []
    assert set(finding.excerpt) == {"IISAuthenticationMethods", "InternalAuthenticationMethods", "ExternalUrl",
                                    "ExternalAuthenticationMethods"}      # not Server or Identity: not tested


def test_a_failed_and_marks_only_the_false_parts(catalogue):
    snapshot = apply_ops(baseline.build(), [
        {"set": ["exchange.mapi_virtual_directories@EX02", 0, "IISAuthenticationMethods"], "to": ["Ntlm", "Negotiate"]}])
    finding = _finding(catalogue, snapshot, "HMA-VDIR-001", "EX02")
    assert finding.status == FAIL
    assert finding.excerpt["IISAuthenticationMethods"] == ["Ntlm", "Negotiate"]
    assert finding.failing == ["IISAuthenticationMethods"]     # internal and external still have OAuth
    assert "OAuth" in finding.excerpt["InternalAuthenticationMethods"]   # read, shown, not marked


def test_a_filter_s_reads_are_the_excerpt_tls_registry_values_not_the_server_entry(catalogue):
    """HMA-TLS-001 iterates the server list but tests SCHANNEL values through tls_state: those are the evidence."""
    snapshot = apply_ops(baseline.build(), [
        {"set": ["os.tls_registry@EX01", "Protocols", "TLS 1.2", "Server", "Enabled"], "to": 0},
        {"set": ["os.tls_registry@EX01", "Protocols", "TLS 1.2", "Client", "Enabled"], "to": 0}])
    finding = _finding(catalogue, snapshot, "HMA-TLS-001", "EX01")
    assert finding.status == FAIL
    prefix = "os.tls_registry['EX01'].Protocols['TLS 1.2']"
    assert finding.excerpt[f"{prefix}.Server.Enabled"] == 0 and finding.excerpt[f"{prefix}.Client.Enabled"] == 0
    assert all(path.startswith(prefix) for path in finding.excerpt)       # TLS 1.0/1.1 only feed 'actual'
    assert f"{prefix}.Server.Enabled" in finding.failing


def test_an_error_excerpt_names_the_property_that_is_not_in_the_evidence(catalogue):
    snapshot = apply_ops(baseline.build(), [{"remove": ["exchange.web_services_virtual_directories@EX01", 0,
                                                        "OAuthAuthentication"]}])
    finding = _finding(catalogue, snapshot, "HMA-VDIR-002", "EX01")
    assert finding.status == ERROR
    assert finding.excerpt == {"OAuthAuthentication": "(not in the evidence)"}
    assert finding.failing == ["OAuthAuthentication"]


def test_the_sandbox_refuses_python_internals(tmp_path, snapshot):
    checks = one_check(tmp_path, """\
        - id: TST-SEC-001
          title: t
          area: a
          severity: blocker
          requires: [exchange.servers]
          assert: "exchange.servers.__class__.__mro__ | length > 0"
        """)
    [finding] = findings_of(checks, snapshot)
    assert finding.status == ERROR and "the sandbox forbids" in finding.reason and "__class__" in finding.reason


def test_verdicts_and_exit_codes(catalogue):
    ready = evaluate(catalogue, baseline.build()).findings
    assert verdict_of(ready) == READY and exit_code(READY) == 0
    broken = evaluate(catalogue, apply_ops(baseline.build(), [
        {"set": ["exchange.servers", 0, "AdminDisplayVersion"], "to": "Version 14.3 (Build 123.4)"}])).findings
    assert verdict_of(broken) == NOT_READY and exit_code(NOT_READY) == 1
    partial = evaluate(catalogue, apply_ops(baseline.build(), [{"fail": "graph.exo_service_principal"}])).findings
    assert verdict_of(partial) == INCOMPLETE and exit_code(INCOMPLETE) == 3
    assert exit_code(READY, anything_collected=False) == 4
    # a warning never blocks
    warned = evaluate(catalogue, apply_ops(baseline.build(), [
        {"set": ["exchange.servers", 0, "AdminDisplayVersion"], "to": "Version 15.2 (Build 1748.10)"}])).findings
    assert WARN in {f.status for f in warned} and verdict_of(warned) == READY


def test_dates_are_evaluated_as_of_the_collection_time(catalogue):
    """Reproducible: the same evidence gives the same result whenever the report is rendered."""
    snapshot = apply_ops(baseline.build(), [
        {"set": ["exchange.exchange_certificates@EX01", 0, "NotAfter"], "to": "2026-12-30T00:00:00Z"},
        {"set": ["exchange.exchange_certificates@EX02", 0, "NotAfter"], "to": "2026-12-30T00:00:00Z"}])
    at_collection = {f.check_id: f.status for f in evaluate(catalogue, snapshot).findings}
    later = {f.check_id: f.status for f in evaluate(catalogue, snapshot,
                                                     as_of=datetime(2026, 12, 15, tzinfo=timezone.utc)).findings}
    assert at_collection["HMA-AUTH-009"] == PASS and at_collection["HMA-AUTH-010"] == WARN
    assert later["HMA-AUTH-009"] == FAIL


# ---------------------------------------------------------------------------------------------------- exemptions

def _exemptions(tmp_path, text, known):
    path = tmp_path / "exemptions.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return load_exemptions(path, known)


def test_exemption_makes_a_failure_exempt_with_its_approval(tmp_path, catalogue):
    snapshot = apply_ops(baseline.build(), [{"set": ["os.iis_ssl_flags@EX02", "/mapi", "RequireSsl"], "to": False}])
    evaluation = evaluate(catalogue, snapshot)
    exemptions = _exemptions(tmp_path, """\
        version: 1
        exemptions:
          - check: HMA-VDIR-008
            subject: ex02
            reason: load balancer re-encrypts from 2027-01; offloading only on the test VIP
            approved_by: Jane Doe (CAB-2291)
            expires: 2027-03-31
          - check: HMA-TLS-004
            reason: nothing fails this
            approved_by: Jane Doe
            expires: 2027-03-31
        """, {c.id for c in catalogue.checks})
    unused = apply_exemptions(evaluation.findings, exemptions, date(2026, 11, 20))
    finding = next(f for f in evaluation.findings if f.check_id == "HMA-VDIR-008" and f.subject == "EX02")
    assert finding.status == EXEMPT and finding.original_status == FAIL
    assert finding.exemption["approved_by"] == "Jane Doe (CAB-2291)" and finding.exemption["expires"] == "2027-03-31"
    assert verdict_of(evaluation.findings) == READY
    assert [u["check"] for u in unused] == ["HMA-TLS-004"]


def test_an_expired_exemption_no_longer_applies(tmp_path, catalogue):
    snapshot = apply_ops(baseline.build(), [{"set": ["os.iis_ssl_flags@EX02", "/mapi", "RequireSsl"], "to": False}])
    evaluation = evaluate(catalogue, snapshot)
    exemptions = _exemptions(tmp_path, """\
        version: 1
        exemptions:
          - {check: HMA-VDIR-008, reason: r, approved_by: a, expires: 2026-10-31}
        """, {c.id for c in catalogue.checks})
    apply_exemptions(evaluation.findings, exemptions, date(2026, 11, 20))
    finding = next(f for f in evaluation.findings if f.check_id == "HMA-VDIR-008" and f.subject == "EX02")
    assert finding.status == FAIL and finding.exemption["expired"] is True
    assert verdict_of(evaluation.findings) == NOT_READY


@pytest.mark.parametrize("body,message", [
    ("exemptions:\n  - {check: HMA-VDIR-008, reason: r, approved_by: a, expires: 2027-01-01}", "version"),
    ("version: 1\nexemptions:\n  - {check: HMA-NOPE-001, reason: r, approved_by: a, expires: 2027-01-01}", "unknown check"),
    ("version: 1\nexemptions:\n  - {check: HMA-VDIR-008, reason: r, expires: 2027-01-01}", "missing required key 'approved_by'"),
    ("version: 1\nexemptions:\n  - {check: HMA-VDIR-008, reason: r, approved_by: a, expires: soon}", "'expires' must be a date"),
    ("version: 1\nexemptions:\n  - {check: HMA-VDIR-008, reason: '', approved_by: a, expires: 2027-01-01}", "exemptions[0].reason: must be non-empty text"),
    ("version: 1\nexemptions:\n  - {check: HMA-VDIR-008, reason: r, approved_by: a, expires: 2027-01-01, ok: 1}", "unknown key"),
    ("version: 1\nexemptions:\n  - {check: HMA-VDIR-08, reason: r, approved_by: a, expires: 2027-01-01}",
     "unknown check 'HMA-VDIR-08' (did you mean 'HMA-VDIR-008'?)"),
    ("version: 1\nexemptions:\n  - {check: HMA-VDIR-008, reasn: r, approved_by: a, expires: 2027-01-01}",
     "exemptions[0].reasn: unknown key (did you mean 'reason'?)"),
])
def test_bad_exemptions_are_one_line_errors_with_file_and_line(tmp_path, catalogue, body, message):
    path = tmp_path / "ex.yaml"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(ExemptionsError) as info:
        load_exemptions(path, {c.id for c in catalogue.checks})
    text = str(info.value)
    assert message in text and str(path) in text and "\n" not in text


def test_a_step_that_cannot_be_prepared_is_one_printable_comment_line(catalogue):
    """The reason quotes the collector's error text, which comes from the environment."""
    snapshot = apply_ops(baseline.build(), [{"fail": "exchange.auth_servers"}])
    snapshot.sources["exchange.auth_servers"].error = "TimeoutError: gone\r\nSet-AuthServer -Identity x\x1b[2K"
    entry = next(e for e in evaluate(catalogue, snapshot).runbook if e.origin == "HMA-STEP-001")
    assert entry.enable.startswith("# NOT PREPARED: required source exchange.auth_servers")
    assert entry.enable.isprintable() and "gone Set-AuthServer" in entry.enable


def test_a_subject_that_cannot_be_rendered_is_never_filed_under_organization(tmp_path, snapshot):
    """Each item keeps a name of its own (its scope, Identity or Name) and is ERROR with the template's reason."""
    checks = one_check(tmp_path, """\
        - id: TST-SUBJ-001
          title: t
          area: a
          severity: blocker
          requires: [exchange.servers]
          for_each: exchange.servers
          subject: "{{ item.NoSuchProperty }}"
          assert: "true"
        """)
    found = findings_of(checks, snapshot)
    assert [f.subject for f in found] == ["EX01", "EX02", "EDGE01"]
    assert all(f.status == ERROR and "subject" in f.reason and "NoSuchProperty" in f.reason for f in found)


def test_a_server_missing_from_the_evidence_cannot_turn_not_ready_into_ready(catalogue, snapshot):
    """Deleting the failing server's per-server source from evidence.json leaves that server ERROR, not READY."""
    apply_ops(snapshot, [{"set": ["exchange.mapi_virtual_directories@EX02", 0, "IISAuthenticationMethods"],
                          "to": ["Ntlm", "Negotiate"]}])
    assert verdict_of(evaluate(catalogue, snapshot).findings) == NOT_READY
    apply_ops(snapshot, [{"drop": "exchange.mapi_virtual_directories@EX02"}])
    findings = evaluate(catalogue, snapshot).findings
    assert verdict_of(findings) == INCOMPLETE
    [ex02] = [f for f in findings if f.check_id == "HMA-VDIR-001" and f.subject == "EX02"]
    assert ex02.status == ERROR and "exchange.mapi_virtual_directories@EX02" in ex02.reason


def test_without_the_server_list_a_per_server_source_cannot_be_covered(tmp_path, snapshot):
    checks = one_check(tmp_path, """\
        - id: TST-VDIR-003
          title: t
          area: a
          severity: blocker
          requires: [exchange.mapi_virtual_directories]
          for_each: exchange.mapi_virtual_directories
          subject: "{{ item.Server }}"
          assert: "true"
        """)
    apply_ops(snapshot, [{"fail": "exchange.servers"}])
    [finding] = findings_of(checks, snapshot)
    assert finding.status == ERROR and "exchange.servers" in finding.reason


def test_a_source_every_server_lacks_by_design_makes_the_check_not_applicable(tmp_path, snapshot):
    """Only Edge and Exchange 2010 servers: the virtual directory checks do not apply, with the reason."""
    checks = one_check(tmp_path, """\
        - id: TST-VDIR-004
          title: t
          area: a
          severity: blocker
          requires: [exchange.mapi_virtual_directories]
          assert: "exchange.mapi_virtual_directories | list | length > 0"
        """)
    for server in snapshot.sources["exchange.servers"].data[:2]:
        server["AdminDisplayVersion"] = "Version 14.3 (Build 123.4)"
    [finding] = findings_of(checks, snapshot)
    assert finding.status == NOT_APPLICABLE and "Exchange 2010" in finding.reason


def test_a_for_each_that_cannot_be_enumerated_is_error_with_its_reason(tmp_path, snapshot):
    checks = one_check(tmp_path, """\
        - id: TST-ORG-090
          title: t
          area: a
          severity: blocker
          requires: [exchange.organization_config]
          for_each: "exchange.organization_config.NoSuchList"
          assert: "true"
        """)
    [finding] = findings_of(checks, snapshot)
    assert finding.status == ERROR and finding.subject == "organization"
    assert "for_each" in finding.reason and "NoSuchList" in finding.reason


def test_a_namespace_reads_as_through_the_sandbox_and_its_internals_stay_forbidden(snapshot):
    """CheckEnvironment reads exchange.<source> directly: the same value the sandbox gives, an undefined for a name
    that is no source, and the sandbox's refusal for a Namespace's own attributes (which a checks file cannot even
    name: the loader refuses exchange._facts as an unknown source)."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    from hma_check.evaluate.expr import ENVIRONMENT
    from hma_check.evaluate.facts import Facts

    exchange = Facts(snapshot).namespaces["exchange"]
    sandbox = ImmutableSandboxedEnvironment()
    assert ENVIRONMENT.getattr(exchange, "organization_config") == sandbox.getattr(exchange, "organization_config")
    assert ENVIRONMENT.getattr(exchange, "no_such_source").__class__.__name__ == "StrictUndefined"
    for internal in ("_facts", "__class__", "__init__"):
        refused = ENVIRONMENT.getattr(exchange, internal)
        assert refused.__class__.__name__ == "StrictUndefined" and "unsafe" in refused._undefined_hint
