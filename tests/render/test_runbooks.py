"""enable.ps1 and rollback.ps1 as a change board runs them: every step safe, in the right phase, exactly reversible.

Each test changes the baseline organisation the way a real one differs and reads the rendered runbooks through
tree-sitter-powershell (runbook_proof). Every shipped lab scenario goes through the same proofs in
test_exchange_collector's test_scenario_verdict_and_key_findings.
"""

from __future__ import annotations

import re
import textwrap

import pytest

from hma_check.evaluate.engine import evaluate
from hma_check.render import render_all
from hma_check.render.model import build_report
from tests.support import baseline
from tests.support.baseline import apply_ops
from tests.support.common import SAMPLE
from tests.support.runbook_proof import (HARDEN, PREPARE, PREPARE_CLIENTS, SWITCH, VALIDATE, Runbook, assert_every_change_is_undone,
                           assert_no_whole_list_overwrite, assert_phases_hold, assert_rollback_header_matches,
                           assert_shell_guard_first, check_runbooks, parse_runbook)

SPN = f"graph.exo_service_principal@{baseline.TENANT}"
OWA_EX01 = "exchange.owa_virtual_directories@EX01"


def runbooks(catalogue, tmp_path, ops=(), snapshot=None):
    snapshot = snapshot if snapshot is not None else apply_ops(baseline.build(), list(ops))
    report = build_report(evaluate(catalogue, snapshot), exit_code=0, evidence_sha256="0" * 64)
    outputs = render_all(report)
    for name in ("enable.ps1", "rollback.ps1"):
        (tmp_path / name).write_bytes(outputs[name])
    return report, parse_runbook(tmp_path / "enable.ps1"), parse_runbook(tmp_path / "rollback.ps1")


def entries(book: Runbook, origin: str):
    found = [e for e in book.entries if e.origin == origin]
    assert found, f"{origin} is not in {book.name}"
    return found


# ------------------------------------------------------------------------------------------------ 1 never half-enable

def test_oauth2clientprofile_waits_when_evosts_cannot_be_made_the_default(catalogue, tmp_path):
    """No enabled EvoSts (the no-evosts lab scenario): the first switch cannot be prepared, so the second stays a
    comment naming the first and its reason, in enable.ps1 and in rollback.ps1."""
    _, enable, rollback = runbooks(catalogue, tmp_path, [{"set": ["exchange.auth_servers", 0, "Enabled"], "to": False}])
    [first], [second] = entries(enable, "HMA-STEP-001"), entries(enable, "HMA-STEP-002")
    assert not first.commands and first.state == "NOT PREPARED" and "no enabled EvoSts AuthServer" in first.text
    assert not second.commands and second.state == "BLOCKED"
    assert "HMA-STEP-001" in second.text and "no enabled EvoSts AuthServer" in second.text
    assert not [c for c in rollback.live() if "oauth2clientprofileenabled" in c[1].text.lower()
                or c[0].origin == "HMA-STEP-002"]
    assert_phases_hold(enable, rollback)


def test_even_with_a_ready_verdict_the_second_switch_waits_for_the_first():
    """An exemption can make the verdict READY while EvoSts is still missing: the rule holds on its own."""
    from hma_check.contract.findings import RunbookEntry
    from hma_check.evaluate.settle import settle

    first = RunbookEntry(phase=SWITCH, origin="HMA-STEP-001", title="first", subject=None,
                         enable="# NOT PREPARED: there is no enabled EvoSts AuthServer", rollback=None,
                         state="not_prepared")
    second = RunbookEntry(phase=SWITCH, origin="HMA-STEP-002", title="second", subject=None,
                          enable="$c = @{ OAuth2ClientProfileEnabled = $true }\nSet-OrganizationConfig @c",
                          rollback="$c = @{ OAuth2ClientProfileEnabled = $false }\nSet-OrganizationConfig @c")
    settled = settle([first, second], verdict="READY", needs={"HMA-STEP-002": ("HMA-STEP-001",)})
    assert settled[1].state == "blocked" and "HMA-STEP-001" in settled[1].note and "EvoSts" in settled[1].note
    assert all(line.startswith("#") for text in (settled[1].enable, settled[1].rollback) for line in text.splitlines())


def test_a_change_whose_rollback_cannot_be_prepared_is_not_live():
    from hma_check.contract.findings import RunbookEntry
    from hma_check.evaluate.settle import settle

    entry = RunbookEntry(phase=PREPARE, origin="SITE-ORG-001", title="t", subject=None,
                         enable="Set-OrganizationConfig -MapiHttpEnabled $true",
                         rollback="# NOT PREPARED (rollback): missing fact in 'rollback': MapiHttpEnabled")
    [settled] = settle([entry], verdict="READY", needs={})
    assert settled.state == "not_prepared" and "MapiHttpEnabled" in settled.note
    assert settled.enable == "# Set-OrganizationConfig -MapiHttpEnabled $true" and settled.rollback is None


def test_an_exempted_blockers_fix_is_never_live(catalogue, tmp_path):
    """Before: an approved exemption for EX02's MAPI virtual directory left its Set-MapiVirtualDirectory live in
    enable.ps1, so pasting the runbook changed the object the change board had decided to leave alone."""
    from datetime import date

    from hma_check.evaluate.exemptions import Exemption, apply_exemptions

    snapshot = apply_ops(baseline.build(), [
        {"set": ["exchange.mapi_virtual_directories@EX02", 0, "IISAuthenticationMethods"], "to": ["Ntlm", "Negotiate"]}])
    evaluation = evaluate(catalogue, snapshot)
    apply_exemptions(evaluation.findings, [Exemption("HMA-VDIR-001", "EX02", "r", "a", date(2099, 1, 1), "x", 1)],
                     date(2026, 11, 20))
    report = build_report(evaluation, exit_code=0, evidence_sha256="0" * 64)
    [entry] = [e for phase in report.enable_phases for e in phase["entries"] if e.origin == "HMA-VDIR-001"]
    assert entry.state == "suggestion" and "exempted" in entry.note
    assert all(line.startswith("#") for line in entry.enable.splitlines() if line.strip())
    (tmp_path / "enable.ps1").write_bytes(render_all(report)["enable.ps1"])
    assert not [c for c in parse_runbook(tmp_path / "enable.ps1").live() if "Set-MapiVirtualDirectory" in c[1].text]


# ------------------------------------------------------------------------------------------ 2 phases tell the truth

def test_changes_clients_notice_are_not_in_phase_1_and_say_their_impact(catalogue, tmp_path):
    adfs = {"Name": "ADFS", "Type": "ADFS", "Enabled": True, "IsDefaultAuthorizationEndpoint": True, "Realm": None,
            "DomainName": [], "AuthMetadataUrl": "https://adfs.contoso.com/FederationMetadata/2007-06/FederationMetadata.xml",
            "ApplicationIdentifier": None, "IssuerIdentifier": None, "TokenIssuingEndpoint": None}
    _, enable, rollback = runbooks(catalogue, tmp_path, [
        {"set": ["exchange.organization_config", "MapiHttpEnabled"], "to": False},
        {"append": ["exchange.auth_servers"], "value": adfs},
        {"set": ["exchange.cas_mailboxes_mapi_disabled"], "to": [
            {"Name": "User 1", "PrimarySmtpAddress": "user1@contoso.com", "MapiHttpEnabled": False}]}])
    for origin in ("HMA-ORG-001", "HMA-AUTH-004", "HMA-ORG-002"):
        for entry in entries(enable, origin):
            assert entry.phase == PREPARE_CLIENTS, (origin, entry.phase)
            assert "Impact:" in entry.text, origin
    [mapi] = entries(enable, "HMA-ORG-001")
    assert any(c.key == "set-organizationconfig" for c in mapi.commands) and "restart Outlook" in mapi.text
    [adfs_off] = entries(enable, "HMA-AUTH-004")
    assert "Stop unless phase 3 follows" in adfs_off.text
    header = next(line for line in enable.lines if line.startswith(f"# Phase {PREPARE_CLIENTS}: "))
    assert "client impact" in header
    assert_phases_hold(enable, rollback)


def test_moving_off_ssl_offloading_is_not_a_phase_1_step(catalogue):
    check = catalogue.by_id("HMA-VDIR-008")
    assert check.phase == PREPARE_CLIENTS and "Changes the path clients take" in check.enable.source


# --------------------------------------------------------------------------- 3 deltas, not overwrites, on shared objects

def test_spns_and_reply_urls_change_by_their_delta_read_at_run_time(catalogue, tmp_path):
    names = [n for n in baseline.build().sources[SPN].data["servicePrincipalNames"] if n != "https://mail.contoso.com/"]
    _, enable, rollback = runbooks(catalogue, tmp_path, [
        {"set": [SPN, "servicePrincipalNames"], "to": names},
        {"set": [SPN, "replyUrls"], "to": []}])     # nothing registered: the old rollback wrote -ReplyUrls @()
    for book in (enable, rollback):
        assert_no_whole_list_overwrite(book)
        assert "-ReplyUrls @()" not in book.source.decode()
    [spn] = entries(rollback, "HMA-SPN-001")
    assert "$added = @('https://mail.contoso.com/')" in spn.text
    assert "Where-Object { $added -notcontains $_ }" in spn.text            # removes only what the enable step added
    [reply] = entries(enable, "HMA-OWA-004")
    assert "@('https://mail.contoso.com/ecp','https://mail.contoso.com/owa')" in reply.text
    assert_phases_hold(enable, rollback)    # every Graph step connects to the tenant and checks it first


# ---------------------------------------------------------------------------------------- 4 warnings are suggestions

def test_a_warning_step_is_a_commented_suggestion(catalogue, tmp_path):
    certificates = baseline.build().sources["exchange.exchange_certificates@EX01"].data
    certificates[1]["DnsNameList"] = ["mail.contoso.com", "autodiscover.contoso.com", "sts.contoso.com"]
    _, enable, rollback = runbooks(catalogue, tmp_path, [
        {"set": ["exchange.exchange_certificates@EX01"], "to": certificates}])
    [suggestion] = entries(enable, "HMA-SPN-002")
    assert suggestion.state == "SUGGESTION" and not suggestion.commands
    assert "# Update-MgServicePrincipal" in suggestion.text and "sts." in suggestion.text
    assert all(not e.commands for e in entries(rollback, "HMA-SPN-002"))


# --------------------------------------------------------------------------------------------- 5 legacy-auth phase

def test_blocking_legacy_authentication_is_a_pilot_after_validation(catalogue, tmp_path):
    _, enable, rollback = runbooks(catalogue, tmp_path, [
        {"set": ["exchange.organization_config", "DefaultAuthenticationPolicy"], "to": None}])
    [pilot] = entries(enable, "HMA-ORG-004")
    assert pilot.phase > VALIDATE and pilot.phase == HARDEN
    commands = [line[2:] for line in pilot.lines if re.match(r"# [A-Z][a-z]+-[A-Za-z]+ ", line)]
    assert commands[0].startswith("New-AuthenticationPolicy -Name ")
    assert "Set-User -Identity $_.DistinguishedName -AuthenticationPolicy" in commands[1]
    assert "Get-DistributionGroupMember -Identity 'HMA legacy authentication pilot'" in commands[1]
    assert not any("DefaultAuthenticationPolicy" in c for c in commands), "no organisation-wide default"
    for breaks in ("Basic", "NTLM", "Kerberos", "service accounts", "IMAP", "POP", "EWS"):
        assert breaks in pilot.text, breaks
    [undo] = entries(rollback, "HMA-ORG-004")
    assert "-AuthenticationPolicy $null" in undo.text and "Remove-AuthenticationPolicy" in undo.text


# --------------------------------------------------------------------------------------------------- 6 right shell

def test_both_runbooks_refuse_anything_but_the_on_premises_exchange_shell(catalogue, tmp_path):
    names = [n for n in baseline.build().sources[SPN].data["servicePrincipalNames"] if n != "https://mail.contoso.com/"]
    _, enable, rollback = runbooks(catalogue, tmp_path, [{"set": [SPN, "servicePrincipalNames"], "to": names}])
    for book in (enable, rollback):
        assert_shell_guard_first(book)
        guard = book.source.decode()
        assert "ModuleName" in guard and "'Set-OrganizationConfig'" in guard   # Exchange Online cmdlets refused
        for entry, command in book.live():
            if command.key == "connect-mggraph":
                assert command.arg("tenantid", book.source) == f"'{baseline.TENANT}'"
                assert f"if ((Get-MgContext).TenantId -ne '{baseline.TENANT}') {{ throw" in entry.text


# ------------------------------------------------------------------------------------------------ 7 exact rollback

def test_the_owa_switch_rolls_back_every_property_it_and_forms_authentication_change(catalogue, tmp_path):
    report, enable, rollback = runbooks(catalogue, tmp_path, [
        {"set": [OWA_EX01, 0, "WindowsAuthentication"], "to": True}])
    assert report.verdict == "READY"
    assert_every_change_is_undone(enable, rollback)
    [owa] = entries(rollback, "HMA-STEP-004")
    assert "Set-OwaVirtualDirectory -Identity 'EX01\\owa (Default Web Site)' -BasicAuthentication $true " \
           "-DigestAuthentication $false -WindowsAuthentication $true" in owa.text


def test_the_rollback_header_names_the_order_it_has(catalogue, tmp_path):
    _, enable, rollback = runbooks(catalogue, tmp_path)
    assert rollback.phases == sorted(rollback.phases, reverse=True) and rollback.phases[0] > SWITCH
    assert_rollback_header_matches(rollback)
    assert "Phase 2 first" not in rollback.source.decode()


# -------------------------------------------------------------------------------------------- 8 reviewable text

@pytest.mark.parametrize("hidden", ["\u202e", "\u200b", "\u2066", "\ufeff", "\u061c", "\U000e0041"])
def test_invisible_and_bidirectional_characters_are_spelled_out(catalogue, tmp_path, hidden):
    identity = f"EX01\\mapi{hidden} (Default Web Site)"
    _, enable, rollback = runbooks(catalogue, tmp_path, [
        {"set": ["exchange.mapi_virtual_directories@EX01", 0, "Identity"], "to": identity},
        {"set": ["exchange.mapi_virtual_directories@EX01", 0, "IISAuthenticationMethods"], "to": ["Ntlm", "Negotiate"]}])
    for book in (enable, rollback):
        text = book.source.decode()
        assert hidden not in text
        code = ord(hidden)
        assert (f"[char]{code}" if code <= 0xFFFF else f"[char]::ConvertFromUtf32({code})") in text


def test_a_newline_in_the_collection_time_stays_in_its_comment(catalogue, tmp_path):
    snapshot = baseline.build()
    report = build_report(evaluate(catalogue, snapshot), exit_code=0, evidence_sha256="0" * 64)
    report.metadata["collected_at"] = "2026-11-20T09:00:00Z\nRemove-Item -Path 'C:\\' -Recurse"   # an imported finishedAt
    outputs = render_all(report)
    for name in ("enable.ps1", "rollback.ps1"):
        (tmp_path / name).write_bytes(outputs[name])
        text = outputs[name].decode()
        assert "\nRemove-Item" not in text and "# Generated by" in text.split("Remove-Item")[0].splitlines()[-1]
        assert_shell_guard_first(parse_runbook(tmp_path / name))    # nothing but comments before the guard


def test_the_runbook_templates_print_evidence_only_through_ps_comment():
    from hma_check.render.powershell import unquoted_outputs, unquoted_outputs_in

    assert unquoted_outputs("enable.ps1.j2") == [] and unquoted_outputs("rollback.ps1.j2") == []
    assert unquoted_outputs_in("# collected {{ report.metadata.collected_at }}") == ["report.metadata.collected_at"]
    assert unquoted_outputs_in("# {% filter upper %}{{ entry.title | ps_comment }}{% endfilter %}")
    assert unquoted_outputs_in("# {{ entry.title | ps_comment | upper }}") == ["Filter"]


@pytest.mark.parametrize("template", [
    """{% filter replace("''", "'") %}Set-X -Identity {{ item.Name | ps_quote }}{% endfilter %}""",
    """{% set name | replace("''", "'") %}{{ item.Name | ps_quote }}{% endset %}Set-X -Identity {{ name | ps_quote }}""",
    """Write-Host "{{ item.Name | ps_quote }}\"""",
    """Write-Host \u201c{{ item.Name | ps_quote }}\u201d""",
])
def test_the_loader_refuses_templates_that_can_unquote_a_value(tmp_path, template):
    from hma_check.evaluate.checks import load_checks
    from hma_check.errors import ChecksError

    checks = tmp_path / "site.yaml"
    checks.write_text(textwrap.dedent(f"""\
        version: 1
        checks:
          - id: SITE-ORG-001
            title: t
            area: site
            severity: blocker
            requires: [exchange.servers]
            for_each: exchange.servers
            assert: "false"
            expect: e
            actual: a
            why: w
            references: [https://learn.microsoft.com/x]
            phase: 1
            enable: '{template.replace("'", "''")}'
        """), encoding="utf-8")
    with pytest.raises(ChecksError):
        load_checks([checks])


# ---------------------------------------------------------------------------------------------- 9 state-aware text

def test_an_organization_with_hma_on_reads_so_and_its_switch_is_done(catalogue, tmp_path):
    report, enable, rollback = runbooks(catalogue, tmp_path, [
        {"set": ["exchange.organization_config", "OAuth2ClientProfileEnabled"], "to": True},
        {"set": ["exchange.auth_servers", 0, "IsDefaultAuthorizationEndpoint"], "to": True}])
    assert report.verdict == "READY" and "already enabled" in report.verdict_text
    assert "Ready to enable" not in report.verdict_text
    markdown = render_all(report)["report.md"].decode()
    assert "already enabled" in markdown.splitlines()[2]
    assert any("already enabled" in line for line in enable.lines[:6])
    for origin in ("HMA-STEP-001", "HMA-STEP-002"):
        [done] = entries(enable, origin)
        assert done.state == "DONE" and not done.commands
        assert all(not e.commands for e in entries(rollback, origin))


# ------------------------------------------------------------------------------------------------- done when

@pytest.mark.parametrize("ops", [
    [],
    [{"set": ["exchange.auth_servers", 0, "Enabled"], "to": False}],
    [{"set": ["exchange.organization_config", "OAuth2ClientProfileEnabled"], "to": True},
     {"set": ["exchange.auth_servers", 0, "IsDefaultAuthorizationEndpoint"], "to": True}],
    [{"set": ["exchange.organization_config", "MapiHttpEnabled"], "to": False}],
    [{"set": ["exchange.outlook_anywhere@EX02", 0, "SSLOffloading"], "to": True}],
    [{"set": [OWA_EX01, 0, "WindowsAuthentication"], "to": True},
     {"set": ["exchange.organization_config", "DefaultAuthenticationPolicy"], "to": None}],
], ids=["ready", "no-evosts", "enabled", "mapi-off", "ssl-offload", "owa-windows"])
def test_every_runbook_passes_every_proof(catalogue, tmp_path, ops):
    runbooks(catalogue, tmp_path, ops)
    check_runbooks(tmp_path)


def test_the_shipped_sample_passes_every_proof(catalogue, tmp_path):
    from hma_check.contract.snapshot import load_snapshot

    runbooks(catalogue, tmp_path, snapshot=load_snapshot(SAMPLE))
    enable, _ = check_runbooks(tmp_path)
    assert enable.verdict == "NOT_READY" and enable.phases[0] == PREPARE
    assert [e.state for e in enable.entries if e.origin in ("HMA-STEP-001", "HMA-STEP-002")] == ["BLOCKED", "BLOCKED"]
