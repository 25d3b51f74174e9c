"""The live Exchange collector against the lab, through the real pypsrp client: every shipped scenario, faults,
read-only proof and secrets."""

from __future__ import annotations

import base64
import json
import logging
import time
from pathlib import Path

import pytest

from hma_check.collect.exchange.collector import ORG_QUERIES, SERVER_CMDLETS, collect_exchange
from hma_check.collect.kerberos import ntlm_login
from hma_check.collect.psrp_client import ReadOnlyViolation, RemoteSession
from hma_lab.runtime import Lab
from hma_lab.scenario import load_scenario, scenario_names
from hma_check.commands.pipeline import run_report
from tests.support.runbook_proof import check_runbooks
from tests.support.lab import (assert_read_only, build_verdict, counts, exchange_settings, scan,
                               scan_large_once, variant)

ORG_SOURCES = 1 + len(ORG_QUERIES)          # Get-ExchangeServer and the other organisation-wide queries
PER_SERVER = len(SERVER_CMDLETS)
OUTCOME_ORDER = ("FAIL", "WARN", "ERROR", "NOTE", "PASS", "NOT_APPLICABLE")
EXCHANGE = ("exchange",)


def evaluate(snapshot, out: Path) -> tuple[object, list[dict]]:
    evidence = out / "evidence.json"
    snapshot.save(evidence)
    outcome = run_report(evidence, out)
    return outcome, json.loads((out / "findings.json").read_text(encoding="utf-8"))["findings"]


def assert_expectations(scenario, snapshot, out: Path, left_out: tuple[str, ...] = ()) -> None:
    """The scenario's own expect block: source statuses, key findings (per subject where given), the verdict; and
    the scenario's enable.ps1 and rollback.ps1 pass every runbook proof (tests/support/runbook_proof.py)."""
    for key, status in scenario.expect["sources"].items():
        assert key in snapshot.sources, key
        assert snapshot.sources[key].status == status, (key, snapshot.sources[key].error)
    outcome, findings = evaluate(snapshot, out)
    check_runbooks(out)
    for check_id, expected in scenario.expect["findings"].items():
        found = [f for f in findings if f["check_id"] == check_id]
        assert found, f"{check_id} produced no finding"
        if isinstance(expected, str):
            # A plain status is the check's outcome as a whole: its most severe finding.
            status = min((f["status"] for f in found), key=OUTCOME_ORDER.index)
            assert status == expected, (check_id, [(f["subject"], f["status"], f["reason"]) for f in found])
        else:
            by_subject = {f["subject"]: f["status"] for f in found}
            for subject, status in expected.items():
                assert by_subject.get(subject) == status, (check_id, subject, by_subject)
    if left_out:
        verdict, _ = build_verdict(findings, left_out)
    else:
        verdict = outcome.verdict     # the report's own verdict when every collector ran
    assert verdict == scenario.expect["verdict"]


# ------------------------------------------------------------------------------------------------ every scenario

@pytest.mark.parametrize("name", [n for n in scenario_names() if n != "large"])
def test_scenario_verdict_and_key_findings(name, tmp_path):
    scenario = load_scenario(name)
    with Lab(scenario) as lab:
        snapshot = scan(lab)
        log = lab.command_log
    assert_read_only(log)
    assert snapshot.target["exchange"]["auth"] == "ntlm"
    assert_expectations(scenario, snapshot, tmp_path)


@pytest.mark.xdist_group("large")
def test_large_organisation_in_one_scan(tmp_path):
    # One scan of 200 servers through every collector, shared with the report's browser tests (one scan per suite).
    scenario = load_scenario("large")
    snapshot, info = scan_large_once()
    assert counts(snapshot) == {"ok": ORG_SOURCES + 200 * PER_SERVER, "error": 0, "skipped": 0}
    assert counts(snapshot, "graph.")["error"] == 0 and counts(snapshot, "probe.")["error"] == 0
    assert counts(snapshot, "os.")["error"] == 0
    assert info["stats"]["peak_shells"] <= 12
    assert_expectations(scenario, snapshot, tmp_path)


# ------------------------------------------------------------------------------------------------ read-only

def test_the_allowlist_refuses_every_cmdlet_it_does_not_name_before_sending(tmp_path):
    """Before: any Test-* cmdlet was admitted (Test-Mailflow sends test messages), and any Get-* name."""
    with Lab("ready") as lab:
        settings = exchange_settings(lab.scan_config())
        session = RemoteSession(settings, lab.credentials.password).open()
        try:
            for cmdlet in ("Set-OrganizationConfig", "New-AuthServer", "Remove-PartnerApplication",
                           "Invoke-Expression", "Get-Mailbox; Remove-Mailbox", "get-mailbox | set-mailbox",
                           "Test-Mailflow", "Test-OAuthConnectivity", "Test-ServiceHealth", "Get-MailboxExportRequest",
                           "get-mailbox"):
                with pytest.raises(ReadOnlyViolation):
                    session.run(cmdlet, (), 10)
        finally:
            session.close()
        assert lab.command_log == []


def test_every_cmdlet_the_collector_sends_is_named_in_the_allowlist():
    from hma_check.collect.exchange.collector import ORG_QUERIES, SERVER_CMDLETS, SERVERS_QUERY
    from hma_check.collect.psrp_client import ALLOWLISTS

    sent = {q.cmdlet for q in (SERVERS_QUERY, *ORG_QUERIES)} | {q.fallback for q in ORG_QUERIES if q.fallback}
    sent |= {cmdlet for _, cmdlet in SERVER_CMDLETS} | {"Get-User"}   # Get-User: the administrators' properties
    allowed = ALLOWLISTS["Microsoft.Exchange"]
    assert sent <= allowed, sorted(sent - allowed)
    assert all(name.startswith("Get-") for name in allowed), "a Test- cmdlet needs a reason to be here"


# ------------------------------------------------------------------------------------------------ faults

FAULT_BASE = """\
extends: ready
name: {name}
servers:
  - name: EX{{n:02}}
    count: 3
hybrid_configuration: {{ReceivingTransportServers: [EX01], SendingTransportServers: [EX01]}}
faults:
{faults}
"""


def fault_lab(tmp_path, name: str, faults: str, extra: str = "") -> Lab:
    return Lab(variant(tmp_path, FAULT_BASE.format(name=name, faults=faults) + extra, name))


def test_a_group_among_the_administrators_makes_the_list_an_error_not_a_pass(tmp_path):
    """Nested groups are not expanded: the administrator list would be incomplete, so the source says so."""
    admins = """
admins:
  - {Name: Jane Admin, UserPrincipalName: jane.admin@contoso.com, SamAccountName: jadmin,
     Sid: S-1-5-21-3623811015-3361044348-30300820-1104, RecipientTypeDetails: UserMailbox}
  - {Name: Exchange Operators, SamAccountName: exops, RecipientType: MailUniversalSecurityGroup,
     RecipientTypeDetails: MailUniversalSecurityGroup}
"""
    with Lab(variant(tmp_path, "extends: ready\nname: admin-group\n" + admins, "admin-group")) as lab:
        snapshot = scan(lab, sections=EXCHANGE)
    admins_source = snapshot.sources["exchange.admin_users"]
    assert admins_source.status == "error" and "contains the group 'Exchange Operators'" in admins_source.error
    _, findings = evaluate(snapshot, tmp_path)
    assert {f["status"] for f in findings if f["check_id"] == "HMA-ID-004"} == {"ERROR"}


def test_a_hanging_call_times_out_alone(tmp_path):
    with fault_lab(tmp_path, "hang", "  - {cmdlet: Get-OabVirtualDirectory, server: EX02, hang: true}") as lab:
        snapshot = scan(lab, sections=EXCHANGE, timeout=2.0)
    hung = snapshot.sources["exchange.oab_virtual_directories@EX02"]
    assert hung.status == "error" and "no answer within 2 s" in hung.error
    assert counts(snapshot) == {"ok": ORG_SOURCES + 3 * PER_SERVER - 1, "error": 1, "skipped": 0}


def test_throttling_backs_off_and_retries(tmp_path):
    faults = "  - {cmdlet: Get-AuthServer, throttle: true, times: 2}"
    with fault_lab(tmp_path, "throttled", faults, "throttling: {max_concurrency: 3}\n") as lab:
        snapshot = scan(lab, sections=EXCHANGE, concurrency=8)
        log, peak = lab.command_log, lab.endpoint.peak_shells
    # Two refusals, then the answer; the shell limit of 3 holds although 8 sessions were allowed.
    assert sum(1 for entry in log if entry["command"] == "Get-AuthServer") == 3
    assert snapshot.sources["exchange.auth_servers"].status == "ok"
    assert counts(snapshot) == {"ok": ORG_SOURCES + 3 * PER_SERVER, "error": 0, "skipped": 0}
    assert peak <= 3


def test_permanent_throttling_gives_up_with_the_reason(tmp_path):
    with fault_lab(tmp_path, "throttled-forever", "  - {cmdlet: Get-AuthConfig, throttle: true}") as lab:
        snapshot = scan(lab, sections=EXCHANGE, retries=2)
    failed = snapshot.sources["exchange.auth_config"]
    assert failed.status == "error" and "still throttled after 2 retries" in failed.error
    assert "user load quota" in failed.error
    assert counts(snapshot)["error"] == 1


def test_one_failing_server_loses_only_its_own_sources(tmp_path):
    faults = ("  - {cmdlet: '*', server: EX02, error: 'An IIS directory entry couldn''t be created. "
              "The error message is The RPC server is unavailable.'}")
    with fault_lab(tmp_path, "one-server-down", faults) as lab:
        snapshot = scan(lab, sections=EXCHANGE)
    for source, _ in SERVER_CMDLETS:
        down = snapshot.sources[f"{source}@EX02"]
        assert down.status == "error" and "RPC server is unavailable" in down.error
        assert "DataSourceOperationException" in down.error
        assert snapshot.sources[f"{source}@EX01"].ok and snapshot.sources[f"{source}@EX03"].ok
    assert counts(snapshot) == {"ok": ORG_SOURCES + 2 * PER_SERVER, "error": PER_SERVER, "skipped": 0}
    outcome, findings = evaluate(snapshot, tmp_path)
    mapi = {f["subject"]: f["status"] for f in findings if f["check_id"] == "HMA-VDIR-001"}
    assert mapi == {"EX01": "PASS", "EX02": "ERROR", "EX03": "PASS"}
    assert outcome.verdict == "INCOMPLETE"


def test_a_bug_reading_one_answer_fails_only_that_source(tmp_path, monkeypatch):
    # Before, the worker thread died with the exception and the source had no result at all: a server silently
    # missing from a scoped source, which a check iterating it would not notice.
    from hma_check.collect.exchange import collector as exchange

    def shape(source, objects):
        objects = list(objects)
        if source == "exchange.mapi_virtual_directories" and any(o.get("Server") == "EX02" for o in objects):
            raise KeyError("IISAuthenticationMethods")
        return real(source, objects)

    real = exchange.shape
    monkeypatch.setattr(exchange, "shape", shape)
    with fault_lab(tmp_path, "bug", "  - {cmdlet: none, delay: 0}") as lab:
        snapshot = scan(lab, sections=EXCHANGE)
    broken = snapshot.sources["exchange.mapi_virtual_directories@EX02"]
    assert broken.status == "error" and "KeyError: 'IISAuthenticationMethods'" in broken.error
    assert counts(snapshot) == {"ok": ORG_SOURCES + 3 * PER_SERVER - 1, "error": 1, "skipped": 0}


def test_a_broken_pool_fails_one_call_and_the_scan_goes_on(tmp_path):
    faults = ("  - {cmdlet: Get-EcpVirtualDirectory, server: EX03, break_pool: true}\n"
              "  - {cmdlet: Get-SettingOverride, not_found: true}\n"
              "  - {http_status: 500, action: Command, after: 20, times: 1}")
    with fault_lab(tmp_path, "broken", faults) as lab:
        snapshot = scan(lab, sections=EXCHANGE, concurrency=2)
    errors = {key: result.error for key, result in snapshot.sources.items() if result.status == "error"}
    assert "exchange.ecp_virtual_directories@EX03" in errors
    assert "shell was not found" in errors["exchange.ecp_virtual_directories@EX03"]
    assert "couldn't be found" in errors["exchange.setting_overrides"]
    assert any("HTTP 500" in text for text in errors.values())
    assert len(errors) == 3
    assert counts(snapshot)["ok"] == ORG_SOURCES + 3 * PER_SERVER - 3


@pytest.mark.parametrize("fault,wrong_password", [("  - {http_status: 401}", False),
                                                  ("  - {cmdlet: none, delay: 0}", True)], ids=["401", "password"])
def test_an_endpoint_that_refuses_authentication(tmp_path, fault, wrong_password):
    with fault_lab(tmp_path, "refused", fault) as lab:
        settings = exchange_settings(lab.scan_config())
        results = collect_exchange(settings, "wrong" if wrong_password else lab.credentials.password)
        assert lab.command_log == []
    assert {r.status for r in results} == {"error"}
    assert {r.name for r in results} == {"exchange.servers", *(q.source for q in ORG_QUERIES)}
    assert all("authentication failed" in r.error and "CONTOSO\\hma-reader" in r.error for r in results)


def test_an_unreachable_endpoint_is_an_error_per_source(tmp_path):
    with Lab("ready") as lab:
        settings = exchange_settings(lab.scan_config(), connect_timeout=2.0, cert_validation=False, ca_file=None)
    results = collect_exchange(settings, "x")       # the lab has stopped: nothing listens on its port any more
    assert results and all(r.status == "error" and "cannot reach the endpoint" in r.error for r in results)


# ------------------------------------------------------------------------------------------------ order on the wire

def test_organisation_wide_queries_do_not_wait_for_get_exchangeserver(tmp_path):
    """Before, the other sessions opened while Get-ExchangeServer ran, then waited for its answer before sending
    anything: the organisation-wide queries that need no server list were a wave in front of the per-server ones."""
    from hma_check.collect.exchange.collector import UNGATED_QUERIES

    text = FAULT_BASE.format(name="slow-server-list", faults="  []") + "latency: {cmdlets: {Get-ExchangeServer: 3s}}\n"
    with Lab(variant(tmp_path, text, "slow-server-list")) as lab:
        snapshot = scan(lab, sections=EXCHANGE)
        log = lab.command_log
    assert counts(snapshot) == {"ok": ORG_SOURCES + 3 * PER_SERVER, "error": 0, "skipped": 0}
    servers_at = next(e["time"] for e in log if e["command"] == "Get-ExchangeServer")
    answered = servers_at + 3.0      # the lab logs a command, then spends its latency
    ungated = {q.cmdlet for q in UNGATED_QUERIES}
    assert len(ungated) < len(ORG_QUERIES)   # the ones with a minimum build wait for the servers' builds
    early = {e["command"] for e in log if e["command"] in ungated and e["time"] < answered}
    assert early == ungated
    per_server = {cmdlet for _, cmdlet in SERVER_CMDLETS}
    assert all(e["time"] >= answered for e in log if e["command"] in per_server)
    gated = [(q.cmdlet, [name for name, _ in q.params]) for q in ORG_QUERIES if q not in UNGATED_QUERIES]
    sent = [e for e in log if (e["command"], [name for name, _ in e["parameters"]]) in gated]
    assert len(sent) == len(gated) and all(e["time"] >= answered for e in sent)


# twelve servers, so Get-ExchangeServer's answer comes in more than one Receive
LONG_LIST = FAULT_BASE.replace("count: 3", "count: 12").replace("{faults}", "  []")


def _hold_the_server_list(monkeypatch, lab) -> list[float]:
    """Get-ExchangeServer's reading waits, after its first object, until the lab has run a per-server command (at
    most 30 s); the returned list gets the time its answer was read."""
    from hma_check.collect.exchange import collector as exchange

    per_server = {cmdlet for _, cmdlet in SERVER_CMDLETS}
    real_tell, real_run = exchange._ServerStream.tell, exchange._run_query
    answered: list[float] = []

    def tell(self, position, obj):
        real_tell(self, position, obj)
        deadline = time.monotonic() + 30
        while position == 0 and time.monotonic() < deadline and \
                not any(e["command"] in per_server for e in list(lab.command_log)):
            time.sleep(0.01)

    def run_query(session, query, *args, **kwargs):
        result = real_run(session, query, *args, **kwargs)
        if query is exchange.SERVERS_QUERY:
            answered.append(time.time())
        return result

    monkeypatch.setattr(exchange._ServerStream, "tell", tell)
    monkeypatch.setattr(exchange, "_run_query", run_query)
    return answered


def test_a_servers_queries_start_as_its_object_arrives(tmp_path, monkeypatch):
    """Before, no per-server query was sent until Get-ExchangeServer's whole answer was in (12 servers: several
    Receives)."""
    with Lab(variant(tmp_path, LONG_LIST.format(name="long-list"), "long-list")) as lab:
        answered = _hold_the_server_list(monkeypatch, lab)
        snapshot = scan(lab, sections=EXCHANGE)
        log = lab.command_log
    assert counts(snapshot) == {"ok": ORG_SOURCES + 12 * PER_SERVER, "error": 0, "skipped": 0}
    per_server = [e for e in log if e["command"] in {cmdlet for _, cmdlet in SERVER_CMDLETS}]
    assert len(per_server) == 12 * PER_SERVER               # none twice: the ones streamed are not queued again
    assert per_server[0]["time"] < answered[0]
    assert per_server[0]["parameters"] == [["Server", "EX01"]]


def test_per_server_results_are_dropped_when_get_exchangeserver_fails_after_all(tmp_path, monkeypatch):
    """A server list that fails after its first objects came counts as no server list, as before streaming: the
    per-server queries already sent are withdrawn, their results dropped, the rest never sent."""
    from hma_check.collect.exchange import collector as exchange

    with Lab(variant(tmp_path, LONG_LIST.format(name="list-fails"), "list-fails")) as lab:
        _hold_the_server_list(monkeypatch, lab)
        held = exchange._run_query

        def failing(session, query, *args, **kwargs):
            result = held(session, query, *args, **kwargs)
            if query is exchange.SERVERS_QUERY:
                return exchange._error(query, "the list broke off", exchange.utc_now(), 0)
            return result

        monkeypatch.setattr(exchange, "_run_query", failing)
        snapshot = scan(lab, sections=EXCHANGE)
        log = lab.command_log
    assert any(e["command"] in {cmdlet for _, cmdlet in SERVER_CMDLETS} for e in log)   # some had gone
    assert snapshot.sources["exchange.servers"].error == "the list broke off"
    assert not [r for r in snapshot.sources.values() if r.scope]
    assert counts(snapshot) == {"ok": ORG_SOURCES - 1, "error": 1, "skipped": 0}


def test_a_pipelines_signal_follows_the_next_command():
    """Before, every call ended with its Signal terminate before the session's next Command could go, a round trip
    in which that session's server had nothing to run. Every pipeline is still closed, the last one by close()."""
    wanted = {"Command", "Receive", "Signal", "Delete"}
    with Lab("ready") as lab:
        session = RemoteSession(exchange_settings(lab.scan_config()), lab.credentials.password).open()
        start = len(lab.request_log)
        session.run("Get-AuthConfig", (), 30)
        session.run("Get-AcceptedDomain", (), 30)
        during = [r["action"] for r in lab.request_log[start:] if r["action"] in wanted]
        session.close()
        after = [r["action"] for r in lab.request_log[start:] if r["action"] in wanted]
        statuses = {r["status"] for r in lab.request_log[start:] if r["action"] in wanted}
        signed_in_again = [r for r in lab.request_log[start:] if r["status"] == 401]
    assert during == ["Command", "Receive", "Command", "Signal", "Receive"]
    assert signed_in_again == []      # one connection, signed in once: each answer's body read to its end
    assert after == during + ["Signal", "Delete"]
    assert statuses == {200}


# ------------------------------------------------------------------------------------------------ secrets

def test_ntlm_signs_in_with_hashes_made_once_and_never_printed():
    """MS-NLMP 4.2.2.1.1 and 4.2.3.1.1: the LM and NT one-way functions of the password "Password"."""
    login = ntlm_login("Domain\\User", "Password")
    assert login is not None and login.password is None
    [credential] = login.username
    assert (credential.username, credential.lm_hash, credential.nt_hash) == (
        "Domain\\User", "e52cac67419a9a224a3b108f3fa6cb6d", "a4f49c406510bdcab6824ee7c30fd852")
    for text in (str(login), repr(login), str(login.username), repr(credential), f"{login.username!r}"):
        assert "a4f49c" not in text.lower() and "e52cac" not in text.lower()
    assert str(login.username) == "Domain\\User"
    assert ntlm_login("Domain\\User", None) is None      # no password: pypsrp's own (and a refused sign-in)


def test_the_password_never_reaches_evidence_reports_or_logs(tmp_path, caplog):
    password = "Zq7!unique-Lab-Passw0rd"
    caplog.set_level(logging.DEBUG)
    with Lab(variant(tmp_path, "extends: ready\nname: secret\nfaults:\n"
                               "  - {cmdlet: Get-AuthConfig, error: 'failed'}\n"), password=password) as lab:
        good = scan(lab)
        basic = scan(lab, sections=EXCHANGE, auth="basic")
        settings = exchange_settings(lab.scan_config())
        refused = collect_exchange(settings, password + "-wrong")
    out = tmp_path / "out"
    evaluate(good, out)
    basic.save(out / "basic-evidence.json")
    texts = [path.read_bytes().decode("utf-8", "replace") for path in out.rglob("*") if path.is_file()]
    texts += [r.error or "" for r in refused] + [caplog.text]
    encoded = base64.b64encode(f"{settings.username}:{password}".encode()).decode()
    nt_hash = ntlm_login(settings.username, password).username[0].nt_hash   # what NTLM signs in with (auth ntlm)
    for text in texts:
        assert password not in text and encoded not in text
        assert nt_hash not in text.lower() and nt_hash.upper() not in text
    assert good.sources["exchange.servers"].ok and basic.sources["exchange.servers"].ok
