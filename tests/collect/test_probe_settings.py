"""The probes: configuration section, curl's --resolve/--connect-to syntax, and the target list (no I/O)."""

from __future__ import annotations

import pytest
import trustme

from hma_check.collect.probes.config import (ConnectTo, ResolveRule, parse_connect_to, parse_probe_settings,
                                              parse_resolve)
from hma_check.collect.probes.targets import plan_probes
from hma_check.errors import ConfigError
from hma_check.contract.snapshot import Snapshot, SourceResult
from tests.support.probe_lab import exchange_snapshot


def test_defaults():
    settings = parse_probe_settings(None)
    assert settings.enabled and settings.timeout == 10.0 and settings.concurrency == 8
    assert settings.ca_bundle is None and settings.hosts == () and settings.autodiscover_email is None


def test_full_section(tmp_path):
    bundle = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(bundle))
    settings = parse_probe_settings({
        "hosts": ["Mail.Contoso.com.", "autodiscover.contoso.com:8443"],
        "resolve": ["mail.contoso.com:443:10.0.0.11,10.0.0.12", "v6.contoso.com:443:[::1]"],
        "connect_to": ["mail.contoso.com:443:127.0.1.1:8443", "::lb.contoso.com:", ":443:[::1]:"],
        "ca_bundle": str(bundle), "timeout": 2.5, "concurrency": 3, "autodiscover_email": "alice@contoso.com"})
    assert settings.hosts == (("mail.contoso.com", 443), ("autodiscover.contoso.com", 8443))
    assert settings.resolve == (ResolveRule("mail.contoso.com", 443, ("10.0.0.11", "10.0.0.12")),
                                ResolveRule("v6.contoso.com", 443, ("::1",)))
    assert settings.connect_to == (ConnectTo("mail.contoso.com", 443, "127.0.1.1", 8443),
                                   ConnectTo(None, None, "lb.contoso.com", None), ConnectTo(None, 443, "::1", None))
    assert settings.connect_to[1].matches("anything.contoso.com", 1234)
    assert not settings.connect_to[0].matches("mail.contoso.com", 444)


@pytest.mark.parametrize("raw, message", [
    ([], "probes: must be a mapping"),
    ({"hostz": []}, "probes.hostz: unknown key"),
    ({"hosts": "mail.contoso.com"}, "probes.hosts: must be a list of strings"),
    ({"hosts": ["mail.contoso.com\r\nX-Evil: 1"]}, "probes.hosts[0]: 'mail.contoso.com\\r\\nX-Evil' is not a host name"),
    ({"hosts": ["mail.contoso.com:99999"]}, "probes.hosts[0]: '99999' is not a port number"),
    ({"resolve": ["mail.contoso.com:443"]}, "probes.resolve[0]: must be HOST:PORT:ADDRESS"),
    ({"resolve": ["mail.contoso.com:443:not-an-ip"]}, "probes.resolve[0]: 'not-an-ip' is not an IP address"),
    ({"connect_to": ["a:1:b"]}, "probes.connect_to[0]: must be HOST:PORT:CONNECT-TO-HOST:CONNECT-TO-PORT"),
    ({"timeout": 0}, "probes.timeout: must be more than 0"),
    ({"timeout": "10"}, "probes.timeout: must be a number"),
    ({"timeout": float("nan")}, "probes.timeout: must be a number"),
    ({"concurrency": True}, "probes.concurrency: must be a whole number"),
    ({"concurrency": 65}, "probes.concurrency: must be a whole number from 1 to 64"),
    ({"enabled": "yes"}, "probes.enabled: must be true or false"),
    ({"ca_bundle": "/nonexistent/ca.pem"}, "probes.ca_bundle: cannot read"),
    ({"autodiscover_email": "not an address"}, "probes.autodiscover_email: must be one SMTP address"),
])
def test_bad_values_name_the_file_and_key(raw, message):
    with pytest.raises(ConfigError) as caught:
        parse_probe_settings(raw, path="scan.yaml")
    assert str(caught.value).startswith("scan.yaml: " + message)
    assert "\n" not in str(caught.value)


def test_a_ca_bundle_that_is_not_pem_is_refused(tmp_path):
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n")
    with pytest.raises(ConfigError, match=r"probes.ca_bundle: .* holds no PEM certificate"):
        parse_probe_settings({"ca_bundle": str(bundle)})


def test_command_line_forms():
    assert parse_resolve("mail.contoso.com:443:127.0.1.1,127.0.1.2").addresses == ("127.0.1.1", "127.0.1.2")
    assert parse_connect_to("mail.contoso.com:443:127.0.1.1:8443").to_port == 8443
    with pytest.raises(ConfigError, match="--resolve 'x': must be"):
        parse_resolve("x")


# ---------------------------------------------------------------------------------------------- targets
def test_plan_reads_every_url_source_and_skips_edge_and_empty_urls():
    snapshot = exchange_snapshot()
    plan = plan_probes(snapshot, parse_probe_settings({"hosts": ["extra.contoso.com"]}))
    assert [t.host for t in plan.targets] == ["ex01.contoso.com", "mail.contoso.com", "ex02.contoso.com",
                                              "autodiscover.contoso.com", "extra.contoso.com"]
    assert plan.unknown == [] and plan.ignored == []
    autodiscover = {t.host: t.autodiscover for t in plan.targets}
    assert autodiscover == {"ex01.contoso.com": False, "mail.contoso.com": False, "ex02.contoso.com": False,
                            "autodiscover.contoso.com": True, "extra.contoso.com": True}


def test_plan_records_unknown_sources_and_odd_values():
    snapshot = exchange_snapshot(failed={"exchange.oab_virtual_directories@EX01": "cmdlet failed"})
    del snapshot.sources["exchange.client_access_services"]
    snapshot.add(SourceResult.ok_result("exchange.mapi_virtual_directories", [
        {"InternalUrl": "https://ex02.contoso.com:8443/mapi", "ExternalUrl": "ftp://x/"},
        {"InternalUrl": "http://plain.contoso.com/mapi", "ExternalUrl": "https://bad host/mapi"}, "junk"],
        command="", scope="EX02"))
    plan = plan_probes(snapshot, parse_probe_settings(None))
    assert [(u.source, u.reason) for u in plan.unknown] == [
        ("exchange.oab_virtual_directories@EX01", "error: cmdlet failed"),
        ("exchange.client_access_services", "not collected")]
    ports = {(t.host, t.port) for t in plan.targets}
    assert ("ex02.contoso.com", 8443) in ports and ("plain.contoso.com", 443) in ports
    assert [i["value"] for i in plan.ignored] == ["ftp://x/", "https://bad host/mapi"]


def test_plan_when_exchange_failed_or_did_not_run():
    failed = exchange_snapshot(failed={"exchange.servers": "WinRM refused"})
    plan = plan_probes(failed, parse_probe_settings(None))
    assert [(u.source, u.reason) for u in plan.unknown] == [("exchange.servers", "error: WinRM refused")]
    assert [t.host for t in plan.targets] == ["autodiscover.contoso.com"]  # client access services still told us
    plan = plan_probes(Snapshot.new(), parse_probe_settings({"hosts": ["mail.contoso.com"]}))
    assert plan.unknown == [] and [t.host for t in plan.targets] == ["mail.contoso.com"]  # the named host only
