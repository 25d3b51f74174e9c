"""The client filters, the two check fields they need (if_skipped, affected), the action plan's per-user rows and
the Bearer share after the switch (HMA-VAL-010)."""

from __future__ import annotations

import copy
import csv
import io

import pytest

from hma_check.commands.pipeline import load_all_checks
from hma_check.contract.findings import ERROR, NOT_APPLICABLE, PASS, WARN
from hma_check.contract.snapshot import SourceResult
from hma_check.errors import ChecksError
from hma_check.evaluate.checks import load_checks
from hma_check.evaluate.engine import evaluate
from hma_check.evaluate.filters.client_impact import bearer_share, client_users, server_row
from hma_check.render import action_plan
from hma_check.render.model import build_report
from tests.support import baseline


def group(protocol, authentication, people=(), applications=(), *, client="Outlook for Windows 16.0.1"):
    rows = lambda names: [{"user": n, "requests": 2, "last_seen": "2026-11-19T10:00:00Z"} for n in names]  # noqa: E731
    return {"Protocol": protocol, "AuthenticationType": authentication, "client": client, "users": len(people),
            "requests": 2 * (len(people) + len(applications)), "people": rows(people), "applications": rows(applications)}


def test_client_users_one_row_per_user_with_every_client_and_the_exclusions():
    groups = [group("Mapi", "NTLM", ["CONTOSO\\bob", "CONTOSO\\alice"]), group("Ews", "NTLM", ["CONTOSO\\alice"]),
              group("Ews", "Basic", applications=["CONTOSO\\svc-crm"])]
    rows = client_users(groups, "all", excluding=[group("Mapi", "Bearer", ["CONTOSO\\bob"])])
    assert [r["user"] for r in rows] == ["CONTOSO\\alice", "CONTOSO\\svc-crm"]
    assert rows[0]["found"] == ("Outlook for Windows 16.0.1 over Ews with NTLM (2 requests); Outlook for Windows 16.0.1 "
                                "over Mapi with NTLM (2 requests); last seen 2026-11-19T10:00:00Z")
    assert rows[1]["kind"] == "application or service account"
    assert [r["user"] for r in client_users(groups, "applications")] == ["CONTOSO\\svc-crm"]
    with pytest.raises(ValueError):
        client_users(groups, "everyone")


def test_server_row_matches_names_in_any_case_and_fqdns():
    rows = [{"server": "ex01.contoso.com"}, {"server": "EX02"}]
    assert server_row(rows, "EX01") is rows[0] and server_row(rows, "ex02") is rows[1]
    assert server_row(rows, "EX03") is None


def test_bearer_share_counts_from_the_first_bearer_day_and_only_signed_in_requests():
    daily = [
        {"date": "2026-11-10", "Protocol": "Mapi", "authenticated": True, "modern_authentication": False, "requests": 900},
        {"date": "2026-11-12", "Protocol": "Mapi", "authenticated": True, "modern_authentication": True, "requests": 75},
        {"date": "2026-11-12", "Protocol": "Mapi", "authenticated": True, "modern_authentication": False, "requests": 25},
        {"date": "2026-11-12", "Protocol": "Mapi", "authenticated": False, "modern_authentication": True, "requests": 500},
        {"date": "2026-11-13", "Protocol": "Eas", "authenticated": True, "modern_authentication": False, "requests": 10},
        {"date": "2026-11-13", "Protocol": "RpcHttp", "authenticated": True, "modern_authentication": False,
         "requests": 10},
    ]
    shares = {row["Protocol"]: row for row in bearer_share(daily)}
    assert set(shares) == {"Mapi", "Eas"}                              # RPC over HTTP cannot carry a token
    assert shares["Mapi"] == {"Protocol": "Mapi", "since": "2026-11-12", "authenticated": 100, "modern": 75,
                              "share": 75.0}
    assert shares["Eas"]["share"] == 0.0
    nothing = bearer_share([dict(daily[0])])
    assert nothing == [{"Protocol": "Mapi", "since": None, "authenticated": 900, "modern": 0, "share": 0.0}]


def _validation(snapshot):
    checks = load_all_checks(validation=True)
    return [f for f in evaluate(checks, snapshot).findings if f.check_id == "HMA-VAL-010"]


def test_after_the_switch_the_bearer_share_is_evidence_and_zero_is_a_warning():
    snapshot = baseline.build()
    findings = {f.subject: f for f in _validation(snapshot)}
    assert {s: f.status for s, f in findings.items()} == {"Mapi": PASS, "Ews": PASS, "Autodiscover": PASS, "Eas": PASS}
    assert findings["Mapi"].actual.startswith("100.0 % Bearer: 840 of 840 signed-in Mapi requests since 2026-11-19")
    for row in snapshot.sources["logs.httpproxy"].data["daily"]:
        if row["Protocol"] == "Eas":
            row["AuthenticationType"], row["modern_authentication"] = "Basic", False
    findings = {f.subject: f for f in _validation(snapshot)}
    assert findings["Eas"].status == WARN and findings["Eas"].actual.startswith("0.0 % Bearer: 0 of 310")
    snapshot.sources["logs.httpproxy"] = SourceResult.skipped_result("logs.httpproxy", "no logs: section")
    assert {f.status for f in _validation(snapshot)} == {NOT_APPLICABLE}


def test_the_action_plan_has_one_row_per_affected_user(catalogue):
    snapshot = baseline.build()
    clients = snapshot.sources["logs.httpproxy"].data["clients"]
    legacy = copy.deepcopy(clients[0])
    legacy.update(AuthenticationType="NTLM", modern_authentication=False, Protocol="RpcHttp",
                  family="Outlook for Windows (RPC over HTTP)", client="Outlook for Windows (RPC over HTTP)")
    clients.append(legacy)
    evaluation = evaluate(catalogue, snapshot)
    report = build_report(evaluation, exit_code=0, evidence_sha256="0" * 64)
    rows = list(csv.reader(io.StringIO(action_plan.render(report).decode("utf-8-sig"))))
    rpc = [row for row in rows if row[0] == "HMA-CLIENT-004"]
    assert [row[4] for row in rpc] == ["organization", "CONTOSO\\alice", "CONTOSO\\bob"]
    assert rpc[1][5] == ("person: Outlook for Windows (RPC over HTTP) over RpcHttp with NTLM (420 requests); last seen "
                         "2026-11-19T16:40:00.000Z")
    assert {row[3] for row in rpc} == {WARN}


def _check(tmp_path, extra: str) -> str:
    path = tmp_path / "site.yaml"
    path.write_text(f"""version: 1
checks:
  - id: SITE-LOG-001
    title: t
    area: clients
    severity: warning
    requires: [logs.httpproxy]
    assert: "false"
    expect: e
    actual: a
    why: w
    references: [https://learn.microsoft.com/x]
{extra}""", encoding="utf-8")
    return str(path)


def test_if_skipped_and_affected_are_validated_when_the_checks_load(tmp_path):
    with pytest.raises(ChecksError, match="if_skipped: must be one of: error, not_applicable"):
        load_checks([_check(tmp_path, "    if_skipped: pass\n")])
    with pytest.raises(ChecksError, match="'affected' does not compile"):
        load_checks([_check(tmp_path, "    affected: \"logs.httpproxy.clients |\"\n")])


def test_an_affected_expression_that_gives_no_list_is_an_error_and_a_failed_source_stays_error(tmp_path):
    checks = load_checks([_check(tmp_path, "    if_skipped: not_applicable\n    affected: \"'alice'\"\n")])
    snapshot = baseline.build()
    [finding] = evaluate(checks, snapshot).findings
    assert finding.status == ERROR and "gave str, not a list" in finding.reason
    snapshot.sources["logs.httpproxy"].status, snapshot.sources["logs.httpproxy"].error = "error", "Access is denied"
    [finding] = evaluate(checks, snapshot).findings
    assert finding.status == ERROR and "Access is denied" in finding.reason     # asked for but unreadable: ERROR
