"""Real captures from microsoft/CSS-Exchange (tests/data/css-exchange, MIT: see MANIFEST.md there), read as they are
and fed through the checks they decide."""

from __future__ import annotations

import shutil
from datetime import datetime, timezone
from pathlib import Path

import pytest

from hma_check.collect.offline.importer import import_path
from hma_check.commands.pipeline import load_all_checks
from hma_check.contract.findings import ERROR, FAIL, PASS
from hma_check.evaluate.checks import CheckSet
from hma_check.evaluate.engine import evaluate
from tests.support import baseline
from tests.support.offline_fixtures import clixml_document, realdata_dir, utf16

HC = "Diagnostics/HealthChecker/DataCollection/ExchangeInformation/Tests/DataCollection"
MEAC = "Admin/MonitorExchangeAuthCertificate/DataCollection/Tests/Data"
SERVER_TYPE = ["Deserialized.Microsoft.Exchange.Data.Directory.Management.ExchangeServer"]


def folder_of(tmp_path: Path, *captures: str, servers: list[tuple[str, str, str]] = ()) -> Path:
    """The captures under names that say nothing (recognition is by content), plus a server list when given."""
    for index, capture in enumerate(captures):
        shutil.copy(realdata_dir() / capture, tmp_path / f"capture{index:02}.xml")
    if servers:
        records = [(SERVER_TYPE, {"Name": name, "Fqdn": fqdn, "AdminDisplayVersion": version, "IsEdgeServer": False,
                                  "IsClientAccessServer": True}) for name, fqdn, version in servers]
        (tmp_path / "servers.xml").write_bytes(utf16(clixml_document(records)))
    return tmp_path


def findings(snapshot, check_id: str, as_of: datetime | None = None):
    check = next(c for c in load_all_checks().checks if c.id == check_id)
    return {f.subject: f for f in evaluate(CheckSet(checks=[check]), snapshot, as_of=as_of).findings}


# ---------------------------------------------------------------------------------------------------- certificates

@pytest.mark.parametrize("capture", ["GetExchangeCertificateOnAzure.xml", "GetExchangeCertificateMultipleMatches.xml",
                                     "GetExchangeCertificateWithoutAuth.xml", "GetExchangeCertificateIncomplete.xml"])
def test_certificates_without_their_server_list_are_reported_as_not_placed(tmp_path, capture):
    outcome = import_path(folder_of(tmp_path, f"{HC}/{capture}"))
    assert outcome.recognised == [] and outcome.unrecognised == []
    unplaced, = outcome.unplaced
    assert unplaced["source"] == "exchange.exchange_certificates"
    assert "exchange.servers (Get-ExchangeServer) is not in the import" in unplaced["reason"]


@pytest.mark.parametrize("capture,status", [("GetExchangeCertificateMultipleMatches.xml", PASS),
                                            ("GetExchangeCertificate.xml", PASS),
                                            ("GetExchangeCertificateWithoutAuth.xml", FAIL),
                                            ("GetExchangeCertificateIncomplete.xml", FAIL)])
def test_the_auth_certificate_is_found_on_the_server_or_not(tmp_path, capture, status):
    """HealthChecker's variants of one server's store beside its Get-AuthConfig (current 2D10A746...)."""
    snapshot = import_path(folder_of(
        tmp_path, f"{HC}/{capture}", f"{HC}/GetAuthConfig.xml",
        servers=[("WIN-CTD3L0RGEN4", "win-ctd3l0rgen4.exlab.dom", "Version 15.2 (Build 986.5)")])).snapshot
    certificates = snapshot.sources["exchange.exchange_certificates@WIN-CTD3L0RGEN4"]
    assert certificates.ok and all(len(c["Thumbprint"]) == 40 for c in certificates.data)
    assert findings(snapshot, "HMA-AUTH-008")["WIN-CTD3L0RGEN4"].status == status


def test_an_azure_vm_certificate_without_a_common_name_is_read(tmp_path):
    snapshot = import_path(folder_of(
        tmp_path, f"{HC}/GetExchangeCertificateOnAzure.xml",
        servers=[("E2K16-1", "e2k16-1.contoso.lab", "Version 15.1 (Build 2507.6)")])).snapshot
    azure, = [c for c in snapshot.sources["exchange.exchange_certificates@E2K16-1"].data
              if c["Subject"].startswith("DC=Windows Azure CRP Certificate Generator")]
    assert azure["DnsNameList"] == []   # no SAN and no CN: no name a client could use, nothing for HMA-SPN-002


def test_monitor_exchange_auth_certificate_current_certificate_on_no_server(tmp_path):
    """MonitorExchangeAuthCertificate's capture: five Auth certificates left in the store, none of them the current one
    (B22BD738...), and no next one staged: the current one is missing, so nothing can pass."""
    snapshot = import_path(folder_of(
        tmp_path, f"{MEAC}/GetExchangeCertificate.xml", f"{MEAC}/GetAuthConfigNoNextCert.xml",
        servers=[("E2k16-1", "e2k16-1.contoso.lab", "Version 15.1 (Build 2507.6)")])).snapshot
    assert snapshot.sources["exchange.auth_config"].data["NextCertificateThumbprint"] == ""
    assert len(snapshot.sources["exchange.exchange_certificates@E2k16-1"].data) == 8
    as_of = datetime(2026, 1, 15, tzinfo=timezone.utc)
    assert findings(snapshot, "HMA-AUTH-008", as_of)["E2k16-1"].status == FAIL
    for check_id in ("HMA-AUTH-009", "HMA-AUTH-010"):
        finding, = findings(snapshot, check_id, as_of).values()
        assert finding.status == ERROR and "on none of the servers" in finding.reason


# ---------------------------------------------------------------------------------------------------- OS captures

def test_healthchecker_os_captures_are_placed_on_their_server(tmp_path):
    """Get-WmiObject's Win32_OperatingSystem names its computer; ExSetup's FileVersionInfo names none, and goes to
    the only server that could have answered it."""
    outcome = import_path(folder_of(tmp_path, "Diagnostics/HealthChecker/Tests/DataCollection/E19/OS/Win32_OperatingSystem.xml",
                                    "Diagnostics/HealthChecker/Tests/DataCollection/E19/Exchange/ExSetup.xml",
                                    "Diagnostics/HealthChecker/Tests/DataCollection/E19/Exchange/GetExchangeServer.xml"))
    sources = outcome.snapshot.sources
    assert sources["os.operating_system@SOLO-E19A"].data == {
        "Caption": "Microsoft Windows Server 2019 Datacenter", "Version": "10.0.17763", "BuildNumber": "17763"}
    assert sources["os.exsetup_version@SOLO-E19A"].data["FileVersion"] == "15.02.0986.005"
    assert any("the only server" in record.get("note", "") for record in outcome.recognised)
    assert outcome.unplaced == []


def test_a_capture_naming_no_computer_is_not_placed_among_several_servers(tmp_path):
    outcome = import_path(folder_of(tmp_path, "Diagnostics/HealthChecker/Tests/DataCollection/E19/Exchange/ExSetup.xml",
                                    servers=[("EX01", "ex01.contoso.com", "Version 15.2 (Build 986.5)"),
                                             ("EX02", "ex02.contoso.com", "Version 15.2 (Build 986.5)")]))
    unplaced, = outcome.unplaced
    assert unplaced["source"] == "os.exsetup_version" and "2 servers could have answered it" in unplaced["reason"]


# ---------------------------------------------------------------------------------------------------- accepted domains

@pytest.mark.parametrize("capture", ["GetAcceptedDomain.xml", "GetAcceptedDomain_Bad.xml", "GetAcceptedDomain_Problem.xml"])
def test_accepted_domains_decide_which_autodiscover_names_need_an_spn(tmp_path, capture):
    """Solo.com is authoritative, *.contoso.local and *.com are wildcards, '*' (the _Bad and _Problem variants) relays
    everything: a mailbox in solo.com needs autodiscover.solo.com; '*' makes no domain an accepted one by itself."""
    domains = import_path(folder_of(tmp_path, f"Diagnostics/HealthChecker/Tests/DataCollection/E19/Exchange/{capture}"))
    accepted = domains.snapshot.sources["exchange.accepted_domains"].data
    snapshot = baseline.build()
    snapshot.sources["exchange.accepted_domains"].data = accepted
    mailboxes = snapshot.sources["exchange.mailboxes"].data
    mailboxes[0]["PrimarySmtpAddress"] = "ada@Solo.com"
    mailboxes[1]["PrimarySmtpAddress"] = "bob@eu.contoso.local"   # under the *.contoso.local wildcard
    finding, = findings(snapshot, "HMA-SPN-001").values()
    assert finding.status == FAIL
    assert "autodiscover.solo.com" in finding.actual and "autodiscover.eu.contoso.local" in finding.actual
    assert "autodiscover.contoso.com" not in finding.actual.split("missing: ")[1]   # still registered


# ---------------------------------------------------------------------------------------------------- setting overrides

@pytest.mark.parametrize("capture,servers", [("GetSettingOverrideDisabledOnSrv.xml", [["WIN-CTD3L0RGEN4"]]),
                                             ("GetSettingOverridePSSigningEnabledOnSrv.xml", [["E2k16-1"]]),
                                             ("GetSettingOverrideMultiConfigs.xml", [None, ["WIN-CTD3L0RGEN4"]])])
def test_server_scoped_overrides_keep_the_server_they_apply_to(tmp_path, capture, servers):
    overrides = import_path(folder_of(tmp_path, f"{HC}/{capture}")).snapshot.sources["exchange.setting_overrides"].data
    assert [o["Server"] for o in overrides] == servers


def test_an_override_for_one_server_does_not_configure_the_organization(tmp_path):
    """The dedicated hybrid app's override applies where it is scoped: one server's does not count (HMA-HYG-002)."""
    scoped = import_path(folder_of(tmp_path, f"{HC}/GetSettingOverrideDisabledOnSrv.xml")).snapshot
    snapshot = baseline.build()
    override = snapshot.sources["exchange.setting_overrides"].data[0]
    override["Server"] = scoped.sources["exchange.setting_overrides"].data[0]["Server"]   # as Exchange sends it
    assert findings(snapshot, "HMA-HYG-002")["organization"].status == "WARN"
