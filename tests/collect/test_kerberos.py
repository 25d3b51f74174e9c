"""Kerberos and Negotiate to Exchange and WinRM, end to end against a real MIT KDC on loopback.

The lab's WSMan endpoints accept Kerberos through pyspnego's acceptor with the realm's keytab, over HTTP with WinRM
message encryption; hma-check scan signs in through pypsrp with a ticket from a password or from a credential cache.
Every failure a person can meet is one line, ERROR for the sources it costs, and nothing is sent to the lab.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from hma_check.cli import cli
from hma_check.collect.runner import run_collectors
from hma_check.collect.os.config import OsSettings
from hma_check.collect.config import load_config_text
from hma_lab.runtime import Lab
from tests.support.kdc import kdc_log, kerberos_env, krb5kdc_children, libfaketime, realm, require  # noqa: F401

pytestmark = pytest.mark.xdist_group("kerberos")

ENV = "HMA_CHECK_EXCHANGE_PASSWORD"
TRACEBACK = re.compile(r"Traceback|File \"")


@pytest.fixture(scope="module")
def lab(realm):  # noqa: F811 - the session's realm fixture
    with realm.activated(), Lab("ready", realm=realm) as running:
        yield running


def write_config(lab: Lab, tmp_path: Path, auth: str, **exchange: object) -> Path:
    raw = lab.scan_config(auth=auth)
    config = {"exchange": {**raw["exchange"], **exchange}, "os": raw["os"]}
    path = tmp_path / "scan.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def scan_cli(config: Path, out: Path, env: dict[str, str] | None = None):
    return CliRunner().invoke(cli, ["scan", "--config", str(config), "--out", str(out)], env=env or {},
                              catch_exceptions=False)


def collect(lab: Lab, auth: str, password: str | None, **exchange: object):
    raw = lab.scan_config(auth=auth)
    config = load_config_text(yaml.safe_dump({"exchange": {**raw["exchange"], **exchange}, "os": raw["os"]}))
    secrets = {f"{section}.password": password for section in ("exchange", "os")} if password else {}
    return run_collectors(config, secrets=secrets, environ={})


def statuses(snapshot, prefix: str) -> set[str]:
    return {r.status for r in snapshot.sources.values() if r.name.startswith(prefix)}


def errors(snapshot, prefix: str = "exchange.") -> set[str]:
    return {r.error for r in snapshot.sources.values() if r.name.startswith(prefix) and r.status == "error"}


def signed_in(lab: Lab, since: int = 0, os_since: int = 0) -> set[tuple[str | None, bool | None]]:
    """How every request that reached a command signed in and whether its body was encrypted, Exchange and WinRM."""
    windows = next(s for s in lab.services if hasattr(s, "servers"))
    entries = lab.request_log[since:] + windows.request_log[os_since:]
    return {(e["mech"], e["encrypted"]) for e in entries if e["action"] not in ("auth", "refused")}


def assert_no_secret(password: str, *texts: str, folder: Path | None = None) -> None:
    found = [text[:80] for text in texts if password in text]
    if folder is not None:
        found += [str(p) for p in folder.rglob("*") if p.is_file() and password in p.read_text("utf-8", "replace")]
    assert not found


def as_requests(realm, principal: str, outcome: str) -> int:  # noqa: F811
    """AS exchanges the KDC logged for this principal with this outcome (ISSUE, PREAUTH_FAILED...)."""
    return len(re.findall(rf"AS_REQ .*: {outcome}: .*{re.escape(principal)} for krbtgt/", kdc_log(realm)))


# ------------------------------------------------------------------------------------------------ the real client

@pytest.mark.parametrize("auth", ["kerberos", "negotiate"])
def test_scan_signs_in_with_a_ticket_from_the_password(lab, kerberos_env, tmp_path, auth, caplog):  # noqa: F811
    caplog.set_level(logging.DEBUG)
    password = lab.credentials.password
    before = as_requests(kerberos_env, lab.principal, "ISSUE")
    log_at, os_log_at = len(lab.request_log), len(next(s for s in lab.services if hasattr(s, "servers")).request_log)
    result = scan_cli(write_config(lab, tmp_path, auth), tmp_path / "out", {ENV: password})
    assert result.exit_code in (0, 1, 3), result.stderr
    evidence = json.loads((tmp_path / "out" / "evidence.json").read_text(encoding="utf-8"))["sources"]
    for section in ("exchange.", "os."):
        found = {s["status"] for s in evidence.values() if s["name"].startswith(section)}
        assert "error" not in found and "ok" in found, section
    # Kerberos, not a fallback to NTLM, on every request, each body encrypted (HTTP, as Exchange is reached)...
    assert signed_in(lab, log_at, os_log_at) == {("kerberos", True)}
    # ...from one ticket-granting ticket per section: the password went to the KDC twice, not once per session.
    assert as_requests(kerberos_env, lab.principal, "ISSUE") - before == 2
    assert_no_secret(password, result.stdout, result.stderr, caplog.text, folder=tmp_path / "out")


@pytest.mark.parametrize("auth", ["kerberos", "negotiate"])
def test_scan_signs_in_with_the_ticket_in_the_credential_cache(lab, kerberos_env, tmp_path, auth):  # noqa: F811
    require("kdc", "kinit")
    done = subprocess.run(["kinit", lab.principal], input=lab.credentials.password + "\n", text=True,
                          capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr
    before = as_requests(kerberos_env, lab.principal, "ISSUE")
    log_at = len(lab.request_log)
    result = scan_cli(write_config(lab, tmp_path, auth), tmp_path / "out")      # no password anywhere
    assert result.exit_code in (0, 1, 3), result.stderr
    evidence = json.loads((tmp_path / "out" / "evidence.json").read_text(encoding="utf-8"))["sources"]
    assert {s["status"] for s in evidence.values() if s["name"].startswith(("exchange.", "os."))} <= {"ok", "skipped"}
    assert {m for m, _ in signed_in(lab, log_at)} == {"kerberos"}
    assert as_requests(kerberos_env, lab.principal, "ISSUE") == before      # no new sign-in with a password


def test_demo_runs_with_kerberos_and_leaves_no_kdc_running(tmp_path, monkeypatch):
    require("kdc")
    from hma_lab.kdc import Realm

    started: list[Path] = []
    real_start = Realm.start

    def recording_start(self):
        real_start(self)
        started.append(self.folder)
        return self

    monkeypatch.setattr(Realm, "start", recording_start)
    kdcs = krb5kdc_children()
    result = CliRunner().invoke(cli, ["demo", "--auth", "kerberos", "--scenario", "one-server-mapi-no-oauth",
                                      "--out", str(tmp_path / "demo")], catch_exceptions=False)
    assert result.exit_code == 1, result.stderr                   # the scenario's verdict: NOT_READY
    assert "Kerberos realm CONTOSO.LOCAL" in result.stderr
    config = yaml.safe_load((tmp_path / "demo" / "scan-config.yaml").read_text(encoding="utf-8"))
    assert config["exchange"]["auth"] == config["os"]["auth"] == "kerberos"
    evidence = json.loads((tmp_path / "demo" / "evidence.json").read_text(encoding="utf-8"))["sources"]
    assert {s["status"] for s in evidence.values() if s["name"].startswith("exchange.")} == {"ok"}
    # The demo's realm is gone: its KDC process ended, its folder (database, keytab, krb5.conf) removed.
    assert krb5kdc_children() == kdcs
    assert len(started) == 1 and not started[0].exists()


# ------------------------------------------------------------------------------------------------ what goes wrong

@pytest.mark.parametrize("auth", ["kerberos", "negotiate"])
def test_no_ticket_and_no_password_is_one_line_and_nothing_is_sent(lab, kerberos_env, tmp_path, auth):  # noqa: F811
    sent = len(lab.command_log)
    result = scan_cli(write_config(lab, tmp_path, auth), tmp_path / "out")
    assert result.exit_code == 4 and not TRACEBACK.search(result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.startswith("exchange: ")]
    assert lines and all(f"exchange: no Kerberos ticket for {lab.principal} in the credential cache FILE:" in line
                         and f"run kinit {lab.principal} first" in line and ENV in line for line in lines)
    evidence = json.loads((tmp_path / "out" / "evidence.json").read_text(encoding="utf-8"))["sources"]
    assert {s["status"] for s in evidence.values() if s["name"].startswith(("exchange.", "os."))} == {"error"}
    assert len(lab.command_log) == sent


def test_a_wrong_password_is_one_attempt_at_the_kdc_and_stops_the_section(lab, kerberos_env):  # noqa: F811
    before = as_requests(kerberos_env, lab.principal, "PREAUTH_FAILED")
    sent = len(lab.command_log)
    snapshot = collect(lab, "kerberos", "Not-the-Lab-Passw0rd")
    assert errors(snapshot) == {f"exchange: Kerberos: the KDC refused the password of {lab.principal} (wrong "
                                "password): check the password variable; repeated attempts can lock the account"}
    assert statuses(snapshot, "exchange.") == statuses(snapshot, "os.") == {"error"}
    assert as_requests(kerberos_env, lab.principal, "PREAUTH_FAILED") - before == 1
    assert len(lab.command_log) == sent


def test_a_wrong_os_password_stops_the_os_and_logs_sections_before_any_server_is_tried(lab, kerberos_env):  # noqa: F811
    windows = next(s for s in lab.services if hasattr(s, "servers"))
    raw = lab.scan_config(auth="kerberos")
    config = load_config_text(yaml.safe_dump({"exchange": raw["exchange"],
                                              "os": {**raw["os"], "password_env": "OS_PASSWORD"}, "logs": {}}))
    before = as_requests(kerberos_env, lab.principal, "PREAUTH_FAILED")
    asked = len(windows.request_log)
    snapshot = run_collectors(config, environ={ENV: lab.credentials.password, "OS_PASSWORD": "wrong-os-Passw0rd"})
    assert statuses(snapshot, "exchange.") <= {"ok", "skipped"}
    refused = (f"Kerberos: the KDC refused the password of {lab.principal} (wrong password): check the password "
               "variable; repeated attempts can lock the account")
    assert errors(snapshot, "os.") == {f"os: {refused}"}
    assert errors(snapshot, "logs.") == {f"logs: {refused}"}     # the logs are read with the OS account
    assert len(windows.request_log) == asked                   # no server was tried
    assert as_requests(kerberos_env, lab.principal, "PREAUTH_FAILED") - before == 2   # once per section


@pytest.mark.parametrize("override,why", [
    ("mail.contoso.com", "a load-balanced name or DNS alias has none"),      # the namespace, not a server
    (None, "an IP address has no Kerberos SPN"),                              # the SPN would be HTTP/127.0.0.1
], ids=["load-balanced-name", "ip-address"])
def test_an_spn_the_kdc_does_not_know_names_the_server_fqdn_rule(lab, kerberos_env, override, why):  # noqa: F811
    sent = len(lab.command_log)
    snapshot = collect(lab, "kerberos", lab.credentials.password, negotiate_hostname_override=override)
    [text] = errors(snapshot)
    spn = f"HTTP/{override or '127.0.0.1'}"
    assert text.startswith(f"Kerberos: the KDC knows no service principal {spn} (")
    assert "connect to the server's own FQDN as Get-ExchangeServer shows it" in text and why in text
    assert "\n" not in text and statuses(snapshot, "exchange.") == {"error"}
    assert len(lab.command_log) == sent


def test_an_unreachable_kdc_is_one_line(lab, kerberos_env, tmp_path, monkeypatch):  # noqa: F811
    from hma_lab.kdc import free_port

    monkeypatch.setenv("KRB5_CONFIG", str(kerberos_env.client_conf(tmp_path / "krb5.conf", kdc_port=free_port())))
    snapshot = collect(lab, "kerberos", lab.credentials.password)
    [text] = errors(snapshot)
    assert text.startswith("exchange: Kerberos: the KDC is unreachable (Cannot contact any KDC for realm "
                           "'CONTOSO.LOCAL'): check krb5.conf's [realms] kdc entry")
    assert statuses(snapshot, "os.") == {"error"}


def test_negotiate_falls_back_to_ntlm_when_no_kdc_answers(lab, kerberos_env, tmp_path, monkeypatch):  # noqa: F811
    from hma_lab.kdc import free_port

    monkeypatch.setenv("KRB5_CONFIG", str(kerberos_env.client_conf(tmp_path / "krb5.conf", kdc_port=free_port())))
    log_at, os_log_at = len(lab.request_log), len(next(s for s in lab.services if hasattr(s, "servers")).request_log)
    snapshot = collect(lab, "negotiate", lab.credentials.password)
    assert statuses(snapshot, "exchange.") <= {"ok", "skipped"} and statuses(snapshot, "os.") <= {"ok", "skipped"}
    assert signed_in(lab, log_at, os_log_at) == {("ntlm", True)}     # as Windows does without a KDC


@pytest.mark.parametrize("timesync,clocks", [
    # A client that does not correct for the KDC's time (Heimdal, Windows, kdc_timesync = 0): the KDC refuses it.
    (False, "this machine's clock and the KDC's do not agree"),
    # MIT's default follows the KDC's clock; then the server (in step with this machine) refuses the ticket.
    (True, "the clocks of this machine, the KDC and ex01.contoso.local do not agree"),
], ids=["client-and-kdc", "kdc-and-server"])
def test_clock_skew_is_one_line(lab, kerberos_env, tmp_path, monkeypatch, timesync, clocks):  # noqa: F811
    require("kdc", "faketime")
    from hma_lab.kdc import stop_process

    skewed, port = kerberos_env.second_kdc(extra_env={"LD_PRELOAD": str(libfaketime()), "FAKETIME": "+1h"})
    try:
        conf = kerberos_env.client_conf(tmp_path / "krb5.conf", kdc_port=port, timesync=timesync)
        monkeypatch.setenv("KRB5_CONFIG", str(conf))
        sent = len(lab.command_log)
        snapshot = collect(lab, "kerberos", lab.credentials.password)
    finally:
        stop_process(skewed)
    [text] = errors(snapshot)
    assert f"Kerberos: clock skew: {clocks} within the realm's tolerance (5 minutes by default)" in text
    assert "set the clock" in text and statuses(snapshot, "os.") == {"error"}
    assert len(lab.command_log) == sent


@pytest.mark.parametrize("auth,password", [("kerberos", True), ("negotiate", False)])
def test_without_the_kerberos_extra_it_says_what_to_install(lab, kerberos_env, tmp_path, monkeypatch, auth,  # noqa: F811
                                                            password):
    for module in ("gssapi", "krb5"):
        monkeypatch.setitem(sys.modules, module, None)      # import gssapi raises ImportError, as when not installed
    result = scan_cli(write_config(lab, tmp_path, auth), tmp_path / "out",
                      {ENV: lab.credentials.password} if password else {})
    assert result.exit_code == 4 and not TRACEBACK.search(result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.startswith("exchange: ")]
    assert len(lines) == 1 and "needs python-gssapi" in lines[0] and "pip install 'hma-check[kerberos]'" in lines[0]
    assert "libkrb5-dev" in lines[0]


def test_kerberos_with_a_windows_user_name_is_a_configuration_error(tmp_path):
    config = tmp_path / "scan.yaml"
    config.write_text("exchange:\n  server: ex01.contoso.com\n  auth: kerberos\n  username: CONTOSO\\hma-reader\n",
                      encoding="utf-8")
    result = scan_cli(config, tmp_path / "out")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"hma-check: error: {config}:4: exchange.username: Kerberos names the user as user@REALM (for example "
        "hma-reader@CONTOSO.COM), not DOMAIN\\user"]


def test_a_server_reached_through_os_hosts_keeps_its_own_spn():
    settings = load_config_text("os:\n  hosts: {EX01: '10.0.0.11:5985'}\n").sections["os"]
    assert isinstance(settings, OsSettings)
    routed = settings.for_server("EX01", "ex01.contoso.local")
    assert (routed.server, routed.port, routed.negotiate_hostname_override) == ("10.0.0.11", 5985,
                                                                                 "ex01.contoso.local")
    direct = settings.for_server("EX02", "ex02.contoso.local")
    assert (direct.server, direct.negotiate_hostname_override) == ("ex02.contoso.local", None)


def test_kerberos_over_https_signs_in_once_then_sends_directly(lab, kerberos_env, monkeypatch):  # noqa: F811
    """Exchange's PowerShell over HTTPS with Kerberos (TLS protects the bodies: no message encryption). requests'
    auth hook signs each session's connection in; the calls after that go out on it directly (psrp_http), and the
    lab still sees every one of them from the Kerberos-signed-in user."""
    import requests

    through_requests: list[str] = []
    session_send = requests.Session.send
    monkeypatch.setattr(requests.Session, "send", lambda self, request, **kwargs: through_requests.append(
        request.method) or session_send(self, request, **kwargs))
    raw = lab.scan_config(auth="kerberos")["exchange"]
    exchange = {**raw, "port": lab.exchange_endpoint.https_port, "ssl": True, "ca_file": str(lab.ca_file)}
    log_at = len(lab.request_log)
    config = load_config_text(yaml.safe_dump({"exchange": exchange}))
    snapshot = run_collectors(config, secrets={"exchange.password": lab.credentials.password}, environ={})
    found = statuses(snapshot, "exchange.")
    assert "error" not in found and "ok" in found
    entries = [e for e in lab.request_log[log_at:] if e["action"] not in ("auth", "refused")]
    assert {(e["mech"], e["encrypted"]) for e in entries} == {("kerberos", False)}
    assert len(through_requests) < len(entries) / 2     # most calls went out directly
