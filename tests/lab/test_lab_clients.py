"""The lab's users sign in, its servers write Exchange's HttpProxy logs, and hma-check reads them back right.

The expected counts come from the scenario's clients: section alone (hma_lab.clients.expected_requests); the logs are
written by the lab's endpoints for the requests they really answered and read by the product's own reader, offline
(import of the exported files) and live (each server's Import-Csv | Where-Object | Group-Object over WinRM).
"""

from __future__ import annotations

import html
import json
import re
from collections import Counter

import pytest
import yaml
from click.testing import CliRunner

from hma_check.cli import cli
from hma_check.collect.config import load_config_text
from hma_check.collect.logs.collector import collect_logs
from hma_check.collect.offline.importer import import_path
from hma_check.collect.psrp_client import ALLOWLISTS
from hma_check.contract.snapshot import Snapshot, SourceResult
from hma_lab.clients import expected_requests
from hma_lab.runtime import Lab
from hma_lab.scenario import load_scenario

pytestmark = pytest.mark.slow


def _by_key(clients: list[dict], *, agents: dict[str, str]) -> Counter:
    """(Protocol, AuthenticationType, UserAgent, authenticated) -> requests, from logs.httpproxy's client groups (the
    UserAgent back from the client label through the top user agents)."""
    out: Counter = Counter()
    for group in clients:
        out[(group["Protocol"], group["AuthenticationType"], agents[group["client"]], group["authenticated"])] += \
            group["requests"]
    return out


def _agents(data: dict) -> dict[str, str]:
    return {row["client"]: row["UserAgent"] for row in data["user_agents"]}


@pytest.fixture(scope="module")
def running():
    with Lab("clients") as lab:
        yield lab


def test_the_servers_log_every_request_of_the_clients_section_and_the_import_counts_them(running, tmp_path):
    section = running.scenario.sections["clients"]
    expected = expected_requests(section)
    files = running.export_httpproxy_logs(tmp_path / "logs")
    # One folder per server, Exchange's layout; both servers answered (the lab spreads users over the nodes).
    assert {f.relative_to(tmp_path / "logs").parts[0] for f in files} == {"EX01", "EX02"}
    assert all(f.relative_to(tmp_path / "logs").parts[1:3] == ("Logging", "HttpProxy") for f in files)
    data = import_path(tmp_path / "logs").snapshot.sources["logs.httpproxy"].data
    assert data["malformed"]["lines"] == 0
    assert _by_key(data["clients"], agents=_agents(data)) == Counter(expected)
    assert data["requests"] == sum(expected.values())
    outlook = next(c for c in data["clients"] if c["Protocol"] == "Mapi" and c["AuthenticationType"] == "Negotiate"
                   and c["authenticated"] and c["family"] == "Outlook for Windows" and c["version"] == "16.0.17928")
    assert outlook["users"] == 12 and outlook["requests"] == 24
    crm = next(c for c in data["clients"] if c["family"] == "EWS Managed API application" and c["authenticated"])
    assert [r["user"] for r in crm["applications"]] == ["CONTOSO\\svc-crm"] and crm["people"] == []
    assert not re.search(r"127\.0\.\d+\.\d+", json.dumps(data))        # the lab logged client IPs; none is kept


def test_the_live_summary_over_winrm_gives_the_same_counts_read_only(running):
    section = running.scenario.sections["clients"]
    raw = running.scan_config()
    config = load_config_text(yaml.safe_dump({"os": raw["os"], "logs": raw["logs"]}))
    servers = [{"Name": s.name, "Fqdn": s.fqdn, "AdminDisplayVersion": s.version_text,
                "IsEdgeServer": s.is_edge} for s in running.scenario.servers]
    snapshot = Snapshot.new()
    snapshot.add(SourceResult.ok_result("exchange.servers", servers, command="Get-ExchangeServer"))
    windows = next(s for s in running.services if hasattr(s, "command_log") and hasattr(s, "http_ports"))
    before = len(windows.command_log)
    [result] = collect_logs(config.sections["logs"], config.sections["os"], running.credentials.password, snapshot)
    assert result.ok, result.error
    data = result.data
    assert data["granularity"] == "day" and data["malformed"]["lines"] is None
    assert {row["server"]: row["status"] for row in data["servers"]} == {"EX01": "ok", "EX02": "ok"}
    assert _by_key(data["clients"], agents=_agents(data)) == Counter(expected_requests(section))
    log = windows.command_log[before:]
    assert {entry["command"] for entry in log} == {"Get-ItemProperty", "Get-ChildItem", "Import-Csv", "Where-Object",
                                                   "Group-Object"}
    assert all(e["command"] in ALLOWLISTS["Microsoft.PowerShell"] and not e["is_script"] for e in log)


def test_a_server_that_cannot_be_read_is_named_and_the_others_still_count(running):
    raw = running.scan_config()
    raw["os"]["hosts"]["EX02"] = "127.0.0.1:1"       # nothing listens there
    config = load_config_text(yaml.safe_dump({"os": raw["os"], "logs": {"timeout": 10}}))
    servers = [{"Name": s.name, "Fqdn": s.fqdn, "AdminDisplayVersion": s.version_text,
                "IsEdgeServer": s.is_edge} for s in running.scenario.servers]
    snapshot = Snapshot.new()
    snapshot.add(SourceResult.ok_result("exchange.servers", servers, command="Get-ExchangeServer"))
    [result] = collect_logs(config.sections["logs"], config.sections["os"], running.credentials.password, snapshot,
                            pseudonymise_users=True)
    rows = {row["server"]: row for row in result.data["servers"]}
    assert result.ok and rows["EX01"]["status"] == "ok" and rows["EX02"]["status"] == "error"
    assert rows["EX02"]["error"] and running.credentials.password not in json.dumps(result.data)
    assert result.data["pseudonymised"] and "CONTOSO\\\\user" not in json.dumps(result.data)


def test_a_demo_scan_then_an_import_of_the_lab_logs_shows_the_clients_section_with_the_right_counts(tmp_path):
    runner = CliRunner()
    demo = runner.invoke(cli, ["demo", "--scenario", "clients", "--out", str(tmp_path / "demo")])
    assert demo.exit_code == 0, demo.output
    logs = tmp_path / "demo" / "lab-logs"
    assert any(logs.rglob("HttpProxy_*.LOG"))
    manifest = json.loads((tmp_path / "demo" / "manifest.json").read_text(encoding="utf-8"))
    assert any(name.startswith("lab-logs/") for name in manifest["files"])          # part of the run's record
    assert runner.invoke(cli, ["verify", str(tmp_path / "demo")]).exit_code == 0
    # The demo's own report read the same logs live, over WinRM.
    live = json.loads((tmp_path / "demo" / "evidence.json").read_text(encoding="utf-8"))["sources"]["logs.httpproxy"]
    assert live["status"] == "ok" and live["data"]["granularity"] == "day"

    imported = runner.invoke(cli, ["import", str(logs), "--out", str(tmp_path / "clients")])
    assert imported.exit_code in (1, 3), imported.output       # only logs imported: the rest is not supplied
    assert "malformed line(s) counted" in imported.output
    page = (tmp_path / "clients" / "report.html").read_text(encoding="utf-8")
    section = html.unescape(page[page.index('<section id="clients"'):page.index("</section>",
                                                                              page.index('<section id="clients"'))])
    rows = {tuple(cell.strip() for cell in re.findall(r"<td[^>]*>(.*?)</td>", row))
            for row in re.findall(r"<tr>(.*?)</tr>", section, re.S)}
    expected = load_scenario("clients").sections["clients"]
    outlook = next(p for p in expected.populations if "16.0.17928" in p.agent)
    for protocol in outlook.protocols:
        wanted = (protocol, outlook.auth, "Outlook for Windows 16.0.17928", "yes",
                  str(outlook.count * outlook.requests), str(outlook.count))
        assert any(row[:6] == wanted for row in rows), (wanted, sorted(rows))
    assert any(row[:6] == ("RpcHttp", "NTLM", "Outlook for Windows (RPC over HTTP)", "no", "6", "2") for row in rows)
    assert any(row[:6] == ("Eas", "Basic", "Mail for iOS (ActiveSync) iOS 16 (build 20E47)", "profile", "6", "3")
               for row in rows)
    # 12 + 2 + 2 + 3 + 2 people; svc-crm (the EWS Managed API) and scanner01 (a script) are the applications.
    assert "21 people and 2 applications or service accounts" in " ".join(section.split())
    plan = (tmp_path / "clients" / "action-plan.csv").read_text(encoding="utf-8-sig")
    assert "HMA-CLIENT-004" in plan and "CONTOSO\\legacy2010-1" in plan and "CONTOSO\\legacy2010-2" in plan
