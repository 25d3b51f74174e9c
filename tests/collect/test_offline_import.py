"""hma-check import: folders and zips of real captures and of the collection script's output become a Snapshot."""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from hma_check.collect.exchange.objects import EDGE_OS_SKIPPED
from hma_check.collect.offline.importer import MAX_COMPRESSION_RATIO, ImportPathError, import_path
from hma_check.contract.snapshot import load_snapshot
from hma_check.contract.sources import SOURCES
from tests.support.offline_fixtures import all_captures, clixml_document, e19_dir, realdata_dir, utf16

E19_SET = ["Exchange/GetExchangeServer.xml", "Exchange/GetOrganizationConfig.xml",
           "Exchange/GetWebServicesVirtualDirectory.xml", "Exchange/GetOwaVirtualDirectory.xml",
           "Exchange/GetAuthConfig.xml", "Exchange/GetExchangeCertificate.xml", "Exchange/GetPartnerApplication.xml",
           "Exchange/GetSettingOverride2.xml", "Exchange/GetHybridConfiguration.xml", "OS/GetAllTlsSettings.xml"]
TENANT = "6f1c2a9e-3b7d-4c11-9a2e-5d8f0b4c7e21"
SP_ID = "00000002-0000-0ff1-ce00-000000000000"


def copy_e19(folder: Path) -> Path:
    for index, name in enumerate(E19_SET):
        # Names that say nothing: recognition is by the type names inside.
        shutil.copy(e19_dir() / name, folder / f"capture{index:02}.xml")
    return folder


def tls_registry() -> dict:
    sides = lambda enabled, dbd: {"Enabled": enabled, "DisabledByDefault": dbd}  # noqa: E731
    return {
        "Protocols": {"TLS 1.0": {"Server": sides(0, 1), "Client": sides(0, 1)},
                      "TLS 1.1": {"Server": sides(0, 1), "Client": sides(0, 1)},
                      "TLS 1.2": {"Server": sides(1, 0), "Client": sides(1, 0)},
                      "TLS 1.3": {"Server": sides(None, None), "Client": sides(None, None)}},
        "NETFramework": {"v2.0.50727": {"SystemDefaultTlsVersions": 1, "SchUseStrongCrypto": 1},
                         "v4.0.30319": {"SystemDefaultTlsVersions": 1, "SchUseStrongCrypto": -1}},
        "NETFrameworkWow6432Node": {"v2.0.50727": {"SystemDefaultTlsVersions": None, "SchUseStrongCrypto": None},
                                    "v4.0.30319": {"SystemDefaultTlsVersions": 1, "SchUseStrongCrypto": 1}},
    }


def script_folder(folder: Path) -> Path:
    """A folder shaped like Collect-HmaReadiness.ps1's output: real captures where they exist, synthetic otherwise."""
    exchange, server = folder / "exchange", folder / "servers" / "SOLO-E19A"
    for directory in (exchange, server, folder / "graph"):
        directory.mkdir(parents=True)
    entries = []

    def add(path: Path | None, source: str, command: str, server_name: str | None = None, status: str = "ok",
            error: str | None = None) -> None:
        # The keys Save-HmaClixml writes (test_collector_script checks the script still writes these).
        entries.append({"file": path.relative_to(folder).as_posix() if path and status == "ok" else None,
                        "source": source, "server": server_name, "command": command,
                        "startedAt": "2026-03-02T10:00:01Z", "durationMs": 812, "status": status, "error": error,
                        "count": 0 if path is None else 1})

    for name, source, command in [("GetExchangeServer.xml", "exchange.servers", "Get-ExchangeServer"),
                                  ("GetOrganizationConfig.xml", "exchange.organization_config", "Get-OrganizationConfig"),
                                  ("GetPartnerApplication.xml", "exchange.partner_applications", "Get-PartnerApplication")]:
        shutil.copy(e19_dir() / "Exchange" / name, exchange / f"{command}.xml")
        add(exchange / f"{command}.xml", source, command)
    (exchange / "Get-HybridConfiguration.xml").write_bytes(utf16(clixml_document([])))  # the cmdlet returned nothing
    add(exchange / "Get-HybridConfiguration.xml", "exchange.hybrid_configuration", "Get-HybridConfiguration")
    add(None, "exchange.intra_organization_connectors", "Get-IntraOrganizationConnector")  # nothing came back
    add(exchange / "Get-AcceptedDomain.xml", "exchange.accepted_domains", "Get-AcceptedDomain")  # lost on the way
    add(None, "exchange.auth_config", "Get-AuthConfig")  # a single-object source cannot be empty: an error
    add(exchange / "Get-AuthServer.xml", "exchange.auth_servers", "Get-AuthServer", status="error",
        error="The term 'Get-AuthServer' is not recognized as the name of a cmdlet")
    for name, source, command in [
            ("GetWebServicesVirtualDirectory.xml", "exchange.web_services_virtual_directories", "Get-WebServicesVirtualDirectory"),
            ("GetExchangeCertificate.xml", "exchange.exchange_certificates", "Get-ExchangeCertificate"),
            ("ExSetup.xml", "os.exsetup_version", "Get-Command -Name ExSetup.exe")]:
        shutil.copy(e19_dir() / "Exchange" / name, server / f"{command.split()[0]}.xml")
        add(server / f"{command.split()[0]}.xml", source, f"{command} -Server 'SOLO-E19A'", "SOLO-E19A")
    # Synthetic (no real capture of these exists anywhere): labelled as such.
    mapi = {"Server": "SOLO-E19A", "Identity": "SOLO-E19A\\mapi (Default Web Site)", "Name": "mapi (Default Web Site)",
            "InternalUrl": "https://solo-e19a.solo.com/mapi", "ExternalUrl": None,
            "InternalAuthenticationMethods": ["Ntlm", "OAuth", "Negotiate"],
            "ExternalAuthenticationMethods": ["Ntlm", "OAuth", "Negotiate"],
            "IISAuthenticationMethods": ["Ntlm", "OAuth", "Negotiate"]}
    (server / "Get-MapiVirtualDirectory.xml").write_bytes(utf16(clixml_document(
        [(["Deserialized.Microsoft.Exchange.Data.Directory.SystemConfiguration.ADMapiVirtualDirectory"], mapi)])))
    add(server / "Get-MapiVirtualDirectory.xml", "exchange.mapi_virtual_directories",
        "Get-MapiVirtualDirectory -Server 'SOLO-E19A'", "SOLO-E19A")
    (server / "TlsRegistry.xml").write_bytes(utf16(clixml_document(
        [(["HmaCheck.TlsRegistry", "System.Management.Automation.PSCustomObject", "System.Object"], tls_registry())])))
    add(server / "TlsRegistry.xml", "os.tls_registry", "Get-ItemProperty HKLM:\\... (Invoke-Command -ComputerName 'Solo-E19A.Solo.com')",
        "SOLO-E19A")
    records = [("OperatingSystem.xml", "os.operating_system", "HmaCheck.OperatingSystem",
                {"Caption": "Microsoft Windows Server 2019 Datacenter", "Version": "10.0.17763", "BuildNumber": "17763"}),
               ("AuthCertificate.xml", "os.auth_certificate", "HmaCheck.AuthCertificate",
                {"Thumbprint": "C3EDCF181EF4F9B53D01768ECA99564014BCA6E7", "InStore": True,
                 "Subject": "CN=Microsoft Exchange Server Auth Certificate", "HasPrivateKey": True,
                 "NotAfter": datetime(2024, 11, 6, 14, 47, 32, tzinfo=timezone(timedelta(hours=-8)))})]
    for file, source, type_name, props in records:
        (server / file).write_bytes(utf16(clixml_document(
            [([type_name, "System.Management.Automation.PSCustomObject", "System.Object"], props)])))
        add(server / file, source, f"{source} (Invoke-Command -ComputerName 'Solo-E19A.Solo.com')", "SOLO-E19A")
    (folder / "graph" / "exo_service_principal.json").write_text(json.dumps({
        "hmaCheckGraph": 1, "source": "graph.exo_service_principal", "tenantId": TENANT,
        "command": f"Get-MgServicePrincipal -Filter \"appId eq '{SP_ID}'\"", "status": "ok",
        "data": {"id": "9b0c", "appId": SP_ID, "displayName": "Office 365 Exchange Online",
                 "servicePrincipalNames": ["https://mail.contoso.com/", SP_ID], "replyUrls": [], "keyCredentials": []}}))
    (folder / "graph" / "users.json").write_text(json.dumps({
        "hmaCheckGraph": 1, "source": "graph.users", "tenantId": TENANT, "command": "Get-MgUser -All", "status": "error",
        "error": "Insufficient privileges to complete the operation."}))
    (folder / "manifest.json").write_text(json.dumps({
        "hmaCheckManifest": 1, "scriptVersion": "0.1.0", "startedAt": "2026-03-02T10:00:00Z",
        "finishedAt": "2026-03-02T10:04:00Z", "computerName": "ADMIN01", "userName": "SOLO\\exadmin",
        "exchangeServer": "solo-e19a.solo.com", "organization": "SoloORG", "psVersion": "5.1.17763.1",
        "entries": entries}, indent=1), encoding="utf-8-sig")
    return folder


@pytest.mark.parametrize("path", all_captures(), ids=lambda p: p.name)
def test_every_real_capture_imports_alone(tmp_path, path):
    shutil.copy(path, tmp_path / "x.xml")
    outcome = import_path(tmp_path)
    assert outcome.malformed == []
    assert len(outcome.recognised) + len(outcome.unrecognised) >= 1
    outcome.snapshot.save(tmp_path / "evidence.json")
    load_snapshot(tmp_path / "evidence.json")


def test_the_whole_realdata_tree_imports_and_reports_conflicts(tmp_path):
    outcome = import_path(realdata_dir())
    sources = outcome.snapshot.sources
    assert outcome.malformed == []
    assert {"LICENSE", "MANIFEST.md"} <= {item["file"] for item in outcome.unrecognised}
    # Three different Get-OwaVirtualDirectory captures of one server cannot all be true: an error naming them.
    owa = sources["exchange.owa_virtual_directories@SOLO-E19A"]
    assert owa.status == "error" and "3 files hold different" in owa.error
    assert sources["exchange.servers"].ok


def test_e19_set_yields_the_facts(tmp_path):
    outcome = import_path(copy_e19(tmp_path))
    sources = outcome.snapshot.sources
    server, = sources["exchange.servers"].data
    assert server["AdminDisplayVersion"] == "Version 15.2 (Build 986.5)" and server["Name"] == "SOLO-E19A"
    assert sources["exchange.organization_config"].data["OAuth2ClientProfileEnabled"] is False
    ews, = sources["exchange.web_services_virtual_directories@SOLO-E19A"].data
    assert ews["OAuthAuthentication"] is True and "OAuth" in ews["InternalAuthenticationMethods"]
    thumbprint = sources["exchange.auth_config"].data["CurrentCertificateThumbprint"]
    certificates = sources["exchange.exchange_certificates@SOLO-E19A"].data  # placed by PSComputerName = Fqdn
    auth, = [c for c in certificates if c["Thumbprint"] == thumbprint]
    assert auth["NotAfter"] == "2024-11-06T22:47:32Z"
    assert sources["exchange.hybrid_configuration"].data["OnPremisesSmartHost"] == "mail.contoso.com"
    # Nothing supplied these: skipped with the reason, never a default.
    for key in ("exchange.auth_servers", "exchange.mapi_virtual_directories@SOLO-E19A", "os.tls_registry@SOLO-E19A",
                "graph.exo_service_principal", "probe.bearer"):
        assert sources[key].status == "skipped" and sources[key].error, key
    assert {s.name for s in sources.values()} == {s.name for s in SOURCES}
    assert "GetAllTlsSettings" not in json.dumps(outcome.recognised)
    assert any(i["file"] == "capture09.xml" for i in outcome.unrecognised)
    evidence = tmp_path / "out" / "evidence.json"
    outcome.snapshot.save(evidence)
    assert load_snapshot(evidence).sources["exchange.servers"].data == [server]


def test_zip_gives_the_same_snapshot_as_the_folder(tmp_path):
    (tmp_path / "f").mkdir()
    folder = copy_e19(tmp_path / "f")
    archive = tmp_path / "c.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for file in sorted(folder.iterdir()):
            zf.write(file, f"HmaReadiness/{file.name}")
    from_zip, from_folder = import_path(archive).snapshot, import_path(folder).snapshot
    assert {k: (r.status, r.data) for k, r in from_zip.sources.items()} == \
           {k: (r.status, r.data) for k, r in from_folder.sources.items()}


def test_script_output_with_manifest(tmp_path):
    outcome = import_path(script_folder(tmp_path))
    snapshot, sources = outcome.snapshot, outcome.snapshot.sources
    assert outcome.malformed == [] and outcome.unrecognised == []
    assert snapshot.collected_at == "2026-03-02T10:04:00Z"
    assert snapshot.collected_by["user"] == "SOLO\\exadmin" and snapshot.collected_by["host"] == "ADMIN01"
    assert snapshot.target["scriptVersion"] == "0.1.0" and snapshot.target["mode"] == "offline import"
    assert sources["exchange.hybrid_configuration"].ok and sources["exchange.hybrid_configuration"].data is None
    failed = sources["exchange.auth_servers"]
    assert failed.status == "error" and "not recognized" in failed.error and failed.command.startswith("Get-AuthServer")
    assert sources["exchange.intra_organization_connectors"].data == []
    assert "the manifest lists exchange/Get-AcceptedDomain.xml but the import has no such file" in \
        sources["exchange.accepted_domains"].error
    assert sources["exchange.auth_config"].status == "error" and "no object came back" in sources["exchange.auth_config"].error
    mapi, = sources["exchange.mapi_virtual_directories@SOLO-E19A"].data
    assert mapi["IISAuthenticationMethods"] == ["Ntlm", "OAuth", "Negotiate"]
    assert sources["os.tls_registry@SOLO-E19A"].data == tls_registry()
    assert sources["os.exsetup_version@SOLO-E19A"].data["FileVersion"] == "15.02.0986.005"
    certificates = sources["exchange.exchange_certificates@SOLO-E19A"]
    assert certificates.command.startswith("Get-ExchangeCertificate -Server 'SOLO-E19A' (imported from servers/SOLO-E19A/")
    assert certificates.started == "2026-03-02T10:00:01Z" and certificates.duration_ms == 812
    sp = sources[f"graph.exo_service_principal@{TENANT}"]
    assert sp.ok and sp.data["appId"] == SP_ID
    assert sources[f"graph.users@{TENANT}"].status == "error"
    assert sources[f"graph.domains@{TENANT}"].status == "skipped"
    assert sources["os.operating_system@SOLO-E19A"].data["BuildNumber"] == "17763"
    assert sources["os.auth_certificate@SOLO-E19A"].data == {
        "Thumbprint": "C3EDCF181EF4F9B53D01768ECA99564014BCA6E7", "Subject": "CN=Microsoft Exchange Server Auth Certificate",
        "NotAfter": "2024-11-06T22:47:32Z", "HasPrivateKey": True}
    assert sources["exchange.oab_virtual_directories@SOLO-E19A"].status == "skipped"


def test_an_edge_server_gets_what_a_live_scan_gives_it(tmp_path):
    # The live collectors read no per-server exchange source on an Edge Transport server and skip its os sources;
    # an import recorded them as "not supplied", which made every check iterating such a source ERROR.
    servers = [(["Deserialized.Microsoft.Exchange.Data.Directory.Management.ExchangeServer"],
                {"Name": name, "Fqdn": f"{name.lower()}.contoso.com", "AdminDisplayVersion": "Version 15.2 (Build 1544.4)",
                 "IsEdgeServer": edge}) for name, edge in (("EX01", False), ("EDGE01", True))]
    (tmp_path / "Get-ExchangeServer.xml").write_bytes(utf16(clixml_document(servers)))
    sources = import_path(tmp_path).snapshot.sources
    per_server = [spec for spec in SOURCES if spec.scope == "server"]
    assert {spec.collector for spec in per_server} == {"exchange", "os"}
    for spec in per_server:
        assert sources[f"{spec.name}@EX01"].status == "skipped"
        edge = sources.get(f"{spec.name}@EDGE01")
        if spec.collector == "exchange":
            assert edge is None, spec.name
        else:
            assert edge.status == "skipped" and edge.error == EDGE_OS_SKIPPED, spec.name


def test_malformed_and_unknown_files_never_stop_the_import(tmp_path):
    copy_e19(tmp_path)
    (tmp_path / "broken.xml").write_bytes((e19_dir() / "Exchange/GetAuthConfig.xml").read_bytes()[:5000])
    (tmp_path / "evil.xml").write_text('<!DOCTYPE x [<!ENTITY a "b">]><Objs>&a;</Objs>')
    (tmp_path / "notes.json").write_text('{"hello": 1}')
    (tmp_path / "bad.json").write_text('{"hmaCheckGraph": 1, "source": "graph.users", ')
    # json reads 1e999 as infinity, which evidence.json cannot hold: refused here, not when the evidence is saved.
    (tmp_path / "huge.json").write_text('{"hmaCheckGraph": 1, "source": "graph.organization", "tenantId": "t", '
                                        '"status": "ok", "data": [{"id": "o", "n": 1e999}]}')
    (tmp_path / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    outcome = import_path(tmp_path)
    malformed = {item["file"]: item["reason"] for item in outcome.malformed}
    assert "truncated" in malformed["broken.xml"] and "DTD" in malformed["evil.xml"]
    assert "not valid JSON" in malformed["bad.json"]
    assert malformed["huge.json"] == "not valid JSON: 1e999 is not a finite number"
    outcome.snapshot.dumps()
    assert {"notes.json", "image.png"} <= {item["file"] for item in outcome.unrecognised}
    assert outcome.snapshot.sources["exchange.auth_config"].ok  # the intact copy still counts


def test_zip_hardening(tmp_path):
    archive = tmp_path / "hostile.zip"
    auth = (e19_dir() / "Exchange/GetAuthConfig.xml").read_bytes()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("../../etc/evil.xml", auth)
        zf.writestr("/abs.xml", auth)
        zf.writestr("C:/windows.xml", auth)
        zf.writestr("bomb.xml", b"<" + b" " * (4 * 1024 * 1024))
        zf.writestr("ok/GetAuthConfig.xml", auth)
    outcome = import_path(archive)
    reasons = {item["file"]: item["reason"] for item in outcome.malformed}
    assert "unsafe member name" in reasons["../../etc/evil.xml"] and "unsafe" in reasons["/abs.xml"]
    assert "unsafe" in reasons["C:/windows.xml"]
    assert f"above {MAX_COMPRESSION_RATIO}:1" in reasons["bomb.xml"]
    assert outcome.snapshot.sources["exchange.auth_config"].ok
    assert not (tmp_path.parent / "etc").exists()


def test_zip_member_larger_than_its_header_says(tmp_path, monkeypatch):
    from hma_check.collect.offline import importer as offline
    monkeypatch.setattr(offline, "MAX_CLIXML_BYTES", 1000)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("big.xml", b"x" * 2000)
    (tmp_path / "big.zip").write_bytes(buffer.getvalue())
    reasons = {item["file"]: item["reason"] for item in import_path(tmp_path / "big.zip").malformed}
    assert "limit for one file" in reasons["big.xml"]


def test_unreadable_paths(tmp_path):
    with pytest.raises(ImportPathError, match="no such file or folder"):
        import_path(tmp_path / "missing")
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(ImportPathError, match="not a folder or a zip"):
        import_path(tmp_path / "x.txt")
    good = io.BytesIO()
    with zipfile.ZipFile(good, "w") as zf:
        zf.writestr("a.xml", "<Objs/>")
    (tmp_path / "cut.zip").write_bytes(good.getvalue()[:-10])
    with pytest.raises(ImportPathError):
        import_path(tmp_path / "cut.zip")


def test_import_command_exit_codes(tmp_path, capsys):
    from hma_check.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["import", str(tmp_path / "missing"), "--out", str(tmp_path / "out")])
    assert exited.value.code == 2 and "no such file or folder" in capsys.readouterr().err
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("not evidence")
    with pytest.raises(SystemExit) as exited:
        main(["import", str(tmp_path / "junk"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert exited.value.code == 4 and "skipped: notes.txt: neither CLIXML nor JSON" in err
    assert load_snapshot(tmp_path / "out" / "evidence.json").target["mode"] == "offline import"


def test_import_command_writes_the_report(tmp_path, capsys):
    from hma_check.cli import main

    (tmp_path / "in").mkdir()
    copy_e19(tmp_path / "in")
    with pytest.raises(SystemExit) as exited:
        main(["import", str(tmp_path / "in"), "--out", str(tmp_path / "out")])
    captured = capsys.readouterr()
    # The lab's Auth certificate expired on 2024-11-06 (a real FAIL); the sources no file supplied are ERROR.
    assert exited.value.code == 1 and captured.out.startswith("NOT_READY")
    for name in ("report.html", "report.md", "junit.xml", "findings.json", "enable.ps1", "rollback.ps1", "evidence.json"):
        assert (tmp_path / "out" / name).is_file(), name
    findings = json.loads((tmp_path / "out" / "findings.json").read_text())["findings"]
    status = {(f["check_id"], f["subject"]): f["status"] for f in findings}
    assert status[("HMA-AUTH-009", "organization")] == "FAIL" and status[("HMA-VDIR-002", "SOLO-E19A")] == "PASS"
    assert "Exchange 2019 CU11" in json.dumps(findings)
    errors = [f for f in findings if f["status"] == "ERROR"]
    assert errors and all(f["reason"] for f in errors)
    assert "skipped: capture09.xml" in captured.err
