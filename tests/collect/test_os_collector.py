"""The OS collector against the lab's per-server WinRM endpoints, through pypsrp: facts, faults, read-only proof."""

from __future__ import annotations

import base64
import re
from dataclasses import replace

import pytest
import yaml

from hma_check.collect.psrp_client import ALLOWLISTS, ReadOnlyViolation, RemoteSession
from hma_check.collect.runner import run_collectors
from hma_check.collect.os.collector import CONFIGURATION, blob_properties, collect_os
from hma_check.collect.config import load_config_text
from hma_lab.runtime import Lab
from hma_lab.scenario import load_scenario_file
from hma_lab.windows import certificate_blob
from hma_check.contract.snapshot import Snapshot

pytestmark = pytest.mark.xdist_group("os-lab")

SCENARIO = r"""
extends: ready
name: os-faults
description: One server per way reading a server's OS facts can go.
expect: {}
certificates:
  old:
    subject: CN=old.contoso.com
    not_after: +30d
faults:
  - {cmdlet: Get-CimInstance, server: EX08, hang: true}
servers:
  - name: EX01                      # everything readable
  - name: EX02                      # WinRM not listening (firewall, service stopped)
    winrm: {listening: false}
  - name: EX03                      # the account is not accepted there
    winrm: {http_status: 401}
  - name: EX04                      # accepted, but refused
    winrm: {http_status: 403}
  - name: EX05                      # keys and values absent, a scripted 0xffffffff
    registry:
      Protocols:
        TLS 1.0: {Server: {Enabled: 0xffffffff, DisabledByDefault: null}, Client: null}
        TLS 1.3: null
      NETFramework:
        v2.0.50727: null
  - name: EX06                      # the 32-bit .NET keys are not readable for this account
    winrm: {denied: ['HKLM:\SOFTWARE\Wow6432Node\*']}
  - name: EX07                      # ExSetup.exe not on PATH; the Auth certificate without its private key
    exsetup_version: null
    winrm: {keyless_certificates: [auth]}
  - name: EX08                      # Get-CimInstance hangs
  - name: EX09                      # the Auth certificate is not in this server's store
    certificates: [mail, self, old]
  - name: EDGE01
    roles: [Edge]
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    path = tmp_path_factory.mktemp("os") / "os-faults.yaml"
    path.write_text(SCENARIO, encoding="utf-8")
    with Lab(load_scenario_file(path)) as running:
        yield running


@pytest.fixture(scope="module")
def windows(lab):
    return next(service for service in lab.services if hasattr(service, "http_ports"))


@pytest.fixture(scope="module")
def snapshot(lab):
    raw = lab.scan_config()
    raw["os"]["timeout"] = 2
    config = load_config_text(yaml.safe_dump(raw))
    return run_collectors(config, secrets=lab.secrets(), environ={})


def _source(snapshot: Snapshot, name: str, server: str):
    return snapshot.sources[f"{name}@{server}"]


def test_a_readable_server_gives_every_fact_in_the_contracts_shape(lab, snapshot):
    registry = _source(snapshot, "os.tls_registry", "EX01")
    assert registry.ok and registry.command.startswith("Get-ItemProperty -Path 'HKLM:\\SYSTEM\\")
    assert registry.data["Protocols"]["TLS 1.2"] == {"Server": {"Enabled": 1, "DisabledByDefault": 0},
                                                     "Client": {"Enabled": 1, "DisabledByDefault": 0}}
    assert registry.data["Protocols"]["TLS 1.3"]["Client"] == {"Enabled": None, "DisabledByDefault": None}
    for view in ("NETFramework", "NETFrameworkWow6432Node"):
        assert registry.data[view] == {f: {"SystemDefaultTlsVersions": 1, "SchUseStrongCrypto": 1}
                                       for f in ("v2.0.50727", "v4.0.30319")}
    assert _source(snapshot, "os.exsetup_version", "EX01").data == {
        "FileVersion": "15.02.2562.037", "Path": "C:\\Program Files\\Microsoft\\Exchange Server\\V15\\Bin\\ExSetup.exe"}
    assert _source(snapshot, "os.operating_system", "EX01").data == {
        "Caption": "Microsoft Windows Server 2022 Standard", "Version": "10.0.20348", "BuildNumber": "20348"}
    certificate = _source(snapshot, "os.auth_certificate", "EX01")
    thumbprint = snapshot.sources["exchange.auth_config"].data["CurrentCertificateThumbprint"]
    assert certificate.data["Thumbprint"] == thumbprint and certificate.data["HasPrivateKey"] is True
    assert certificate.data["Subject"] == "CN=Microsoft Exchange Server Auth Certificate"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", certificate.data["NotAfter"])
    assert "SystemCertificates\\MY\\Certificates" in certificate.command


def test_absent_keys_and_values_are_null_and_0xffffffff_reads_as_minus_one(snapshot):
    data = _source(snapshot, "os.tls_registry", "EX05").data
    assert data["Protocols"]["TLS 1.0"] == {"Server": {"Enabled": -1, "DisabledByDefault": None},
                                            "Client": {"Enabled": None, "DisabledByDefault": None}}
    assert data["Protocols"]["TLS 1.3"] == {s: {"Enabled": None, "DisabledByDefault": None} for s in ("Server", "Client")}
    assert data["NETFramework"]["v2.0.50727"] == {"SystemDefaultTlsVersions": None, "SchUseStrongCrypto": None}
    assert data["NETFramework"]["v4.0.30319"] == {"SystemDefaultTlsVersions": 1, "SchUseStrongCrypto": 1}


@pytest.mark.parametrize("server,reason", [
    ("EX02", r"cannot reach the endpoint"),
    ("EX03", r"authentication failed|HTTP 401"),
    ("EX04", r"HTTP 403"),
])
def test_an_unreachable_server_fails_only_its_own_os_sources(snapshot, server, reason):
    for name in ("os.tls_registry", "os.exsetup_version", "os.operating_system", "os.auth_certificate"):
        result = _source(snapshot, name, server)
        assert result.status == "error" and re.search(reason, result.error), (name, result.error)
        assert "Microsoft.PowerShell remote PowerShell session on 127.0.0.1" in result.error
    assert _source(snapshot, "exchange.mapi_virtual_directories", server).ok
    assert _source(snapshot, "exchange.exchange_certificates", server).ok


def test_a_denied_read_is_an_error_not_a_null(snapshot):
    registry = _source(snapshot, "os.tls_registry", "EX06")
    assert registry.status == "error" and "Requested registry access is not allowed" in registry.error
    assert "Wow6432Node" in registry.error
    assert _source(snapshot, "os.exsetup_version", "EX06").ok


def test_missing_exsetup_is_an_error_and_a_keyless_certificate_says_so(snapshot):
    exsetup = _source(snapshot, "os.exsetup_version", "EX07")
    assert exsetup.status == "error" and "ExSetup.exe was not found" in exsetup.error
    assert "CommandNotFoundException" in exsetup.error
    assert _source(snapshot, "os.auth_certificate", "EX07").data["HasPrivateKey"] is False


def test_a_hanging_call_times_out_alone_and_the_next_one_still_runs(snapshot):
    hung = _source(snapshot, "os.operating_system", "EX08")
    assert hung.status == "error" and "no answer within 2 s" in hung.error
    assert _source(snapshot, "os.auth_certificate", "EX08").data["HasPrivateKey"] is True


def test_a_certificate_missing_from_the_store_is_null(snapshot):
    result = _source(snapshot, "os.auth_certificate", "EX09")
    assert result.ok and result.data is None


def test_without_the_server_list_every_os_source_says_why(lab):
    settings = load_config_text(yaml.safe_dump({"os": lab.scan_config()["os"]})).sections["os"]
    empty = Snapshot.new()
    results = collect_os(settings, lab.credentials.password, empty)
    assert {r.name for r in results} == {"os.tls_registry", "os.exsetup_version", "os.operating_system",
                                         "os.auth_certificate"}
    assert all(r.status == "error" and r.scope is None and "exchange.servers was not collected" in r.error
               for r in results)


def test_edge_servers_are_skipped_and_the_scan_records_its_options(snapshot):
    assert _source(snapshot, "os.tls_registry", "EDGE01").status == "skipped"
    assert snapshot.sources["scan.options"].data == {"owa_ecp": False}


def test_only_the_four_read_cmdlets_reached_any_server(lab, windows, snapshot):
    log = windows.command_log
    assert {entry["server"] for entry in log} >= {"EX01", "EX05", "EX06", "EX07", "EX08", "EX09"}
    assert {entry["command"] for entry in log} == {"Get-ItemProperty", "Get-ChildItem", "Get-Command", "Get-CimInstance"}
    assert all(ALLOWLISTS[CONFIGURATION].fullmatch(entry["command"]) and not entry["is_script"] for entry in log), log
    assert {entry["configuration"] for entry in log} == {"Microsoft.PowerShell"}
    assert all(re.fullmatch(r"(Get|Test)-\w+", entry["command"]) for entry in lab.command_log)


def test_the_allowlist_refuses_anything_else_before_sending(lab, windows):
    settings = load_config_text(yaml.safe_dump(lab.scan_config())).sections["os"].for_server("EX01", None)
    before = len(windows.command_log)
    # The endpoint picks the list: a session on the standard endpoint cannot be given the Exchange one's Get-/Test-.
    session = RemoteSession(settings, lab.credentials.password, configuration="Microsoft.PowerShell").open()
    try:
        for cmdlet in ("Set-ItemProperty", "Get-Content", "Invoke-Expression", "Get-ItemPropertyValue", "Get-Item",
                       "Test-Path", "Get-ChildItem; Remove-Item"):
            with pytest.raises(ReadOnlyViolation):
                session.invoke(cmdlet, (("Path", "HKLM:\\SOFTWARE"),), 5)
    finally:
        session.close()
    with pytest.raises(ReadOnlyViolation, match="no read-only allowlist"):
        RemoteSession(settings, lab.credentials.password, configuration="Microsoft.PowerShell.Workflow")
    assert len(windows.command_log) == before


def _only(snapshot: Snapshot, *names: str) -> Snapshot:
    """The exchange sources the OS collector reads, with exchange.servers cut down to ``names``."""
    servers = snapshot.sources["exchange.servers"]
    cut = Snapshot.new()
    cut.add(replace(servers, data=[s for s in servers.data if s["Name"] in names]))
    cut.add(snapshot.sources["exchange.auth_config"])
    return cut


def test_a_bug_reading_one_answer_fails_only_that_source(lab, snapshot, monkeypatch):
    # Before, the exception left collect_os and the runner marked every os source of every server as failed.
    from hma_check.collect.os import collector as server_os

    def file_version(obj):
        raise KeyError("FileVersionInfo")

    monkeypatch.setattr(server_os, "_file_version", file_version)
    settings = load_config_text(yaml.safe_dump({"os": lab.scan_config()["os"]})).sections["os"]
    results = {r.key: r for r in collect_os(settings, lab.credentials.password, _only(snapshot, "EX01", "EX05"))}
    assert len(results) == 8
    for server in ("EX01", "EX05"):
        broken = results.pop(f"os.exsetup_version@{server}")
        assert broken.status == "error" and "KeyError: 'FileVersionInfo'" in broken.error
    assert all(r.ok for r in results.values()), results


def test_https_with_the_listeners_ca_and_without_it(lab, windows, snapshot):
    raw = lab.scan_config()["os"]
    raw.update(ssl=True, hosts={"EX01": f"127.0.0.1:{windows.https_ports['EX01']}"})
    settings = load_config_text(yaml.safe_dump({"os": raw})).sections["os"]
    only_ex01 = _only(snapshot, "EX01")
    results = {r.key: r for r in collect_os(settings, lab.credentials.password, only_ex01)}
    assert all(r.ok for r in results.values()) and len(results) == 4
    assert results["os.tls_registry@EX01"].data == _source(snapshot, "os.tls_registry", "EX01").data
    untrusted = replace(settings, ca_file=None)
    refused = collect_os(untrusted, lab.credentials.password, only_ex01)
    assert all(r.status == "error" and "TLS failure" in r.error for r in refused)


# ------------------------------------------------------------------------------------------ the wire, as pypsrp sees it

@pytest.fixture(scope="module")
def pool(lab, windows):
    from pypsrp.powershell import RunspacePool
    from pypsrp.wsman import WSMan

    wsman = WSMan("127.0.0.1", port=windows.http_ports["EX01"], path="wsman", ssl=False, auth="ntlm",
                  username=lab.credentials.username, password=lab.credentials.password, encryption="auto")
    with wsman, RunspacePool(wsman, configuration_name="Microsoft.PowerShell") as opened:
        yield opened


def _run(pool, cmdlet=None, script=None, **params):
    from pypsrp.powershell import PowerShell

    ps = PowerShell(pool)
    if script:
        ps.add_script(script)
    else:
        ps.add_cmdlet(cmdlet)
        for name, value in params.items():
            ps.add_parameter(name, value)
    ps.invoke()
    return ps


def test_get_item_property_sends_values_with_the_ps_note_properties(pool):
    ps = _run(pool, "Get-ItemProperty",
              Path="HKLM:\\SYSTEM\\CurrentControlSet\\Control\\SecurityProviders\\SCHANNEL\\Protocols\\TLS 1.[0-2]\\*")
    assert not ps.had_errors and len(ps.output) == 6
    first = ps.output[0]
    assert first.types == ["System.Management.Automation.PSCustomObject", "System.Object"]
    notes = first.extended_properties
    assert notes["Enabled"] == 0 and notes["DisabledByDefault"] == 1 and notes["PSChildName"] == "Client"
    assert notes["PSPath"] == ("Microsoft.PowerShell.Core\\Registry::HKEY_LOCAL_MACHINE\\SYSTEM\\CurrentControlSet\\"
                               "Control\\SecurityProviders\\SCHANNEL\\Protocols\\TLS 1.0\\Client")
    assert notes["PSDrive"] == "HKLM" and notes["PSProvider"] == "Microsoft.PowerShell.Core\\Registry"


def test_a_missing_key_or_value_is_a_non_terminating_powershell_error(pool):
    ps = _run(pool, "Get-ItemProperty", Path=["HKLM:\\SOFTWARE\\Nowhere", "HKLM:\\SOFTWARE\\Microsoft\\.NETFramework\\v4.0.30319"])
    assert ps.state == 4 and len(ps.output) == 1   # Completed: the second path was still read
    [error] = ps.streams.error
    assert error.fq_error == "PathNotFound,Microsoft.PowerShell.Commands.GetItemPropertyCommand"
    assert str(error) == "Cannot find path 'HKLM:\\SOFTWARE\\Nowhere' because it does not exist."
    ps = _run(pool, "Get-ItemProperty", Path="HKLM:\\SOFTWARE\\Microsoft\\.NETFramework\\v4.0.30319", Name="Release")
    assert not ps.output and ps.streams.error[0].fq_error.startswith("System.Management.Automation.PSArgumentException")


def test_certificates_travel_as_raw_data_and_exsetup_as_application_info(pool):
    cert = _run(pool, "Get-ChildItem", Path="Cert:\\LocalMachine\\My").output[0]
    assert list(cert.adapted_properties) == ["RawData"]
    assert cert.extended_properties["PSParentPath"] == "Microsoft.PowerShell.Security\\Certificate::LocalMachine\\My"
    application = _run(pool, "Get-Command", Name="ExSetup.exe", CommandType="Application").output[0]
    assert application.adapted_properties["Version"] == "15.2.2562.37"
    assert "FileVersion:      15.02.2562.037\r\n" in application.extended_properties["FileVersionInfo"]


def test_scripts_and_other_cmdlets_are_refused(pool):
    script = _run(pool, script="Get-Date")
    assert script.had_errors and script.streams.error[0].fq_error == "ScriptsNotAllowed"
    write = _run(pool, "Set-ItemProperty", Path="HKLM:\\SOFTWARE", Name="x", Value=1)
    assert write.had_errors and write.streams.error[0].fq_error == "CommandNotFoundException"


def test_the_certificate_blob_carries_the_key_provider_only_with_a_key():
    der = b"\x30\x03\x02\x01\x01"
    with_key = blob_properties(certificate_blob(der, True))
    without = blob_properties(certificate_blob(der, False))
    assert 2 in with_key and with_key[32] == der
    assert 2 not in without and without[32] == der
    encoded = base64.b64encode(certificate_blob(der, True)[:-1]).decode()
    from hma_check.collect.exchange.objects import ShapeError, decode_base64
    with pytest.raises(ShapeError, match="truncated"):
        blob_properties(decode_base64(encoded))
