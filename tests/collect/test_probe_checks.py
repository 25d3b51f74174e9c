"""End to end: lab probes, saved as evidence and reported by run_report, make the HMA-PROBE checks PASS/FAIL/ERROR."""

from __future__ import annotations

import pytest

from hma_check.collect.probes.config import parse_probe_settings
from hma_check.collect.probes.collector import collect_probes
from hma_lab.endpoint_server import EndpointServer
from hma_check.commands.pipeline import run_report
from hma_check.contract.snapshot import Snapshot, SourceResult
from tests.support.probe_lab import EXTRA_HOSTS, TENANT, exchange_snapshot, lab_spec

OTHER_TENANT = "0b0b0b0b-1111-4222-8333-444444444444"


def _org_facts(snapshot: Snapshot, *, tenant: str = TENANT, evosts_default: bool = True,
               oauth2_client_profile_enabled: bool = True, spns: tuple[str, ...] = ("mail.contoso.com",)) -> None:
    """What the Exchange and Graph collectors would add: the facts the probe checks compare the wire with."""
    def add(name: str, data: object, scope: str | None = None) -> None:
        snapshot.add(SourceResult.ok_result(name, data, command="(test)", scope=scope))

    add("exchange.auth_servers", [{"Name": f"EvoSts - {tenant}", "Type": "AzureAD", "Enabled": True,
                                   "IsDefaultAuthorizationEndpoint": evosts_default, "Realm": tenant}])
    add("exchange.organization_config", {"Name": "Contoso", "OAuth2ClientProfileEnabled": oauth2_client_profile_enabled})
    add("graph.organization", [{"id": tenant, "displayName": "Contoso"}], scope=tenant)
    add("graph.exo_service_principal", {"appId": "00000002-0000-0ff1-ce00-000000000000",
                                        "servicePrincipalNames": [f"https://{host}/" for host in spns]}, scope=tenant)


def _evaluate(server: EndpointServer, tmp_path, hosts=EXTRA_HOSTS, **facts) -> dict[tuple[str, str], str]:
    snapshot = exchange_snapshot()
    settings = parse_probe_settings({"hosts": list(hosts), "connect_to": server.connect_to,
                                     "ca_bundle": str(server.ca_bundle), "timeout": 1})
    for result in collect_probes(snapshot, settings):
        snapshot.add(result)
    _org_facts(snapshot, **facts)
    snapshot.save(tmp_path / "evidence.json")  # evaluation reads the saved evidence, as every command does
    outcome = run_report(tmp_path / "evidence.json", tmp_path / "report")
    assert (tmp_path / "report" / "report.html").is_file()
    return {(f.check_id, f.subject): f.status for f in outcome.report.findings if f.check_id.startswith("HMA-PROBE")}


@pytest.fixture(scope="module")
def lab():
    with EndpointServer(lab_spec()) as server:
        yield server


@pytest.fixture(scope="module")
def statuses(lab, tmp_path_factory):
    return _evaluate(lab, tmp_path_factory.mktemp("evidence"))


def _of(statuses: dict[tuple[str, str], str], check: str) -> dict[str, str]:
    return {subject: status for (check_id, subject), status in statuses.items() if check_id == check}


# The hosts whose HTTP probes cannot complete (TLS 1.0 only, expired, untrusted, a name missing, no answer): their
# Bearer and Autodiscover findings are ERROR, the TLS checks say why.
UNREACHABLE_OVER_HTTPS = ("legacy.", "old.", "untrusted.", "extra.", "silent.")


def _reachable(found: dict[str, str]) -> set[str]:
    errors = {subject for subject, status in found.items() if status == "ERROR"}
    assert all(subject.split("//")[-1].startswith(UNREACHABLE_OVER_HTTPS) for subject in errors), errors
    return {status for subject, status in found.items() if subject not in errors}


def test_bearer_challenge_check(statuses, lab):
    found = _of(statuses, "HMA-PROBE-001")
    assert found[f"https://mail.contoso.com/EWS/Exchange.asmx via 127.0.1.2:{lab.port}"] == "FAIL"  # OAuth off
    assert found["https://ex02.contoso.com/EWS/Exchange.asmx"] == "FAIL"
    assert found[f"https://mail.contoso.com/EWS/Exchange.asmx via 127.0.1.1:{lab.port}"] == "PASS"
    assert found["https://ex02.contoso.com/mapi/"] == "PASS"
    assert found["https://old.contoso.com/mapi/"] == "ERROR"  # could not be asked: the certificate has expired
    assert "https://webmail.contoso.com/mapi/" not in found  # no challenge at all: HMA-PROBE-002's finding


def test_pre_authenticating_proxy_check(statuses):
    found = _of(statuses, "HMA-PROBE-002")
    assert found["https://webmail.contoso.com/Microsoft-Server-ActiveSync"] == "FAIL"
    assert found["https://ex01.contoso.com/Microsoft-Server-ActiveSync"] == "PASS"
    assert found["https://silent.contoso.com/mapi/"] == "ERROR"


def test_tenant_evosts_and_client_profile_checks_pass_when_the_wire_agrees(statuses):
    for check in ("HMA-PROBE-003", "HMA-PROBE-004", "HMA-PROBE-005"):
        assert _reachable(_of(statuses, check)) == {"PASS"}, check


def test_autodiscover_v2_check(statuses, lab):
    found = _of(statuses, "HMA-PROBE-010")
    scope = "https://autodiscover.contoso.com/autodiscover/autodiscover.json?Protocol=ActiveSync via 127.0.1.1:"
    assert found[f"{scope}{lab.port}"] == "PASS"
    assert _reachable(found) == {"PASS"}


def test_tls_checks(statuses):
    assert _of(statuses, "HMA-PROBE-020")["legacy.contoso.com:443"] == "FAIL"
    assert _of(statuses, "HMA-PROBE-020")["modern.contoso.com:443"] == "PASS"
    assert _of(statuses, "HMA-PROBE-020")["silent.contoso.com:443"] == "ERROR"
    assert _of(statuses, "HMA-PROBE-021")["legacy.contoso.com:443"] == "WARN"
    assert _of(statuses, "HMA-PROBE-021")["ex01.contoso.com:443"] == "PASS"
    trusted = _of(statuses, "HMA-PROBE-022")
    assert (trusted["old.contoso.com:443"], trusted["untrusted.contoso.com:443"], trusted["ex02.contoso.com:443"]) == (
        "FAIL", "FAIL", "PASS")
    names = _of(statuses, "HMA-PROBE-023")
    assert (names["extra.contoso.com:443"], names["old.contoso.com:443"]) == ("FAIL", "PASS")
    lifetime = _of(statuses, "HMA-PROBE-024")
    assert (lifetime["old.contoso.com:443"], lifetime["ex01.contoso.com:443"]) == ("WARN", "PASS")


def test_the_wire_disagreeing_with_the_configuration_fails(tmp_path):
    """Graph reports another tenant, the configuration says EvoSts is the default and OAuth2ClientProfileEnabled is
    on, but the servers answer without authorization_uri and with oauth_not_available; the SPNs miss the host."""
    with EndpointServer(lab_spec(evosts_default=False, oauth2_client_profile_enabled=False)) as server:
        statuses = _evaluate(server, tmp_path, hosts=(), tenant=OTHER_TENANT, spns=("autodiscover.contoso.com",))
    assert set(_of(statuses, "HMA-PROBE-003").values()) == {"FAIL"}  # blocker
    for check in ("HMA-PROBE-004", "HMA-PROBE-005", "HMA-PROBE-010"):  # warnings
        assert set(_of(statuses, check).values()) == {"WARN"}, check
