"""The probe collector with real httpx and ssl against the lab's HTTPS endpoints over loopback."""

from __future__ import annotations

import itertools

import pytest

from hma_check.collect.probes.config import parse_probe_settings
from hma_check.collect.probes.collector import collect_probes
from hma_lab.endpoint_server import EndpointServer
from hma_check.contract.snapshot import Snapshot, SourceResult, iso_utc, utc_now
from tests.support.probe_lab import EXTRA_HOSTS, TENANT, exchange_snapshot, lab_spec

ACS = "00000001-0000-0000-c000-000000000000"
TIMEOUT = 1.0


@pytest.fixture(scope="module")
def lab():
    with EndpointServer(lab_spec()) as server:
        yield server


def _settings(lab: EndpointServer, **extra):
    raw = {"hosts": list(EXTRA_HOSTS), "connect_to": lab.connect_to, "ca_bundle": str(lab.ca_bundle),
           "timeout": TIMEOUT, "concurrency": 4}
    raw.update(extra)
    return parse_probe_settings(raw)


@pytest.fixture(scope="module")
def scan(lab, tmp_path_factory):
    """One collection, with a hostile environment: a proxy that does not exist and a netrc holding credentials
    for the lab's hosts. Neither may be used: the probes go direct and anonymous."""
    netrc = tmp_path_factory.mktemp("home") / ".netrc"
    netrc.write_text("machine mail.contoso.com login alice password Secret123!\n")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
        env.setenv("ALL_PROXY", "http://127.0.0.1:9")
        env.setenv("NETRC", str(netrc))
        started = len(lab.requests)
        results = collect_probes(exchange_snapshot(), _settings(lab))
    return {result.key: result for result in results}, lab.requests[started:]


def _one(results: dict[str, SourceResult], key: str) -> dict:
    result = results[key]
    assert result.ok, result.error
    return result.data


def _via(lab: EndpointServer, address: str) -> str:
    return f" via {address}:{lab.port}"


# ------------------------------------------------------------------------------------------ what is probed
def test_targets_are_the_exchange_url_hosts_plus_the_named_ones(scan):
    results, _ = scan
    targets = {t["host"]: t for t in _one(results, "probe.targets")["targets"]}
    assert set(targets) == {"mail.contoso.com", "ex01.contoso.com", "ex02.contoso.com", "autodiscover.contoso.com",
                            *EXTRA_HOSTS}
    assert "exchange.mapi_virtual_directories@EX01 ExternalUrl" in targets["mail.contoso.com"]["origins"]
    assert targets["autodiscover.contoso.com"]["autodiscover"] is True
    assert targets["ex01.contoso.com"]["autodiscover"] is False
    assert _one(results, "probe.targets")["unknown"] == []


def test_every_protocol_path_is_probed_on_every_node(scan, lab):
    results, _ = scan
    for node, path in itertools.product(("127.0.1.1", "127.0.1.2"), ("/mapi/", "/EWS/Exchange.asmx", "/OAB/",
                                        "/Autodiscover/Autodiscover.xml", "/Microsoft-Server-ActiveSync")):
        assert f"probe.bearer@https://mail.contoso.com{path}{_via(lab, node)}" in results
    # a host on one node only keeps the plain URL as its scope
    assert "probe.bearer@https://ex01.contoso.com/mapi/" in results


# ------------------------------------------------------------------------------------------ Bearer challenge
def test_bearer_challenge_as_exchange_sends_it(scan, lab):
    results, _ = scan
    data = _one(results, f"probe.bearer@https://mail.contoso.com/Microsoft-Server-ActiveSync{_via(lab, '127.0.1.1')}")
    assert data["status"] == 401
    assert data["protocol"] == "ActiveSync" and data["address"] == "127.0.1.1"
    assert data["bearer"] == {
        "client_id": "00000002-0000-0ff1-ce00-000000000000", "trusted_issuers": [f"{ACS}@{TENANT}"],
        "token_types": "app_asserted_user_v1 service_asserted_app_v1",
        "authorization_uri": "https://login.windows.net/common/oauth2/authorize", "error": None}
    assert data["www_authenticate"][:2] == ["Negotiate", "NTLM"]
    assert data["x_feserver"] == "EX01"
    assert len(data["request_id"]) == 36
    assert data["x_ms_diagnostics"] is None


def test_oauth_off_on_one_virtual_directory_of_one_server(scan, lab):
    results, _ = scan
    off = _one(results, f"probe.bearer@https://mail.contoso.com/EWS/Exchange.asmx{_via(lab, '127.0.1.2')}")
    on = _one(results, f"probe.bearer@https://mail.contoso.com/EWS/Exchange.asmx{_via(lab, '127.0.1.1')}")
    assert off["bearer"] is None and off["x_feserver"] == "EX02"
    assert off["www_authenticate"] == ["Negotiate", "NTLM", 'Basic realm="mail.contoso.com"']
    assert on["bearer"] is not None and on["x_feserver"] == "EX01"
    assert _one(results, "probe.bearer@https://ex02.contoso.com/EWS/Exchange.asmx")["bearer"] is None
    assert _one(results, "probe.bearer@https://ex02.contoso.com/OAB/")["bearer"] is not None


def test_pre_authenticating_proxy_answers_without_exchange_headers(scan):
    results, _ = scan
    data = _one(results, "probe.bearer@https://webmail.contoso.com/mapi/")
    assert data["status"] == 302
    assert data["location"].startswith("https://sts.contoso.com/adfs/ls/")
    assert (data["www_authenticate"], data["bearer"], data["x_feserver"], data["request_id"]) == ([], None, None, None)


def test_no_authorization_uri_and_oauth_not_available():
    """EvoSts not the default endpoint: Bearer without authorization_uri; OAuth2ClientProfileEnabled false:
    x-ms-diagnostics 4000000 oauth_not_available (seed 003)."""
    spec = lab_spec(evosts_default=False, oauth2_client_profile_enabled=False)
    with EndpointServer(spec) as server:
        settings = parse_probe_settings({"connect_to": server.connect_to, "ca_bundle": str(server.ca_bundle),
                                         "timeout": TIMEOUT})
        snapshot = exchange_snapshot()
        results = {r.key: r for r in collect_probes(snapshot, settings)}
    data = _one(results, "probe.bearer@https://ex01.contoso.com/mapi/")
    assert data["bearer"]["authorization_uri"] is None
    assert data["bearer"]["trusted_issuers"] == [f"{ACS}@{TENANT}"]
    assert data["x_ms_diagnostics"].startswith("4000000;")
    assert data["x_ms_diagnostics"].endswith('error_category="oauth_not_available"')


# ------------------------------------------------------------------------------------------ Autodiscover v2
def test_autodiscover_v2_returns_the_activesync_and_ews_urls(scan, lab):
    results, _ = scan
    scope = "https://autodiscover.contoso.com/autodiscover/autodiscover.json?Protocol="
    eas = _one(results, f"probe.autodiscover_v2@{scope}ActiveSync{_via(lab, '127.0.1.2')}")
    ews = _one(results, f"probe.autodiscover_v2@{scope}EWS{_via(lab, '127.0.1.1')}")
    assert (eas["status"], eas["returned_url"], eas["returned_host"]) == (
        200, "https://mail.contoso.com/Microsoft-Server-ActiveSync", "mail.contoso.com")
    assert ews["returned_url"] == "https://mail.contoso.com/EWS/Exchange.asmx"
    assert "Email=alice@contoso.com" in eas["url"]  # the first user mailbox of exchange.mailboxes
    assert not any(key.startswith("probe.autodiscover_v2@https://ex01.") for key in results)


def test_autodiscover_v2_behind_the_proxy_returns_no_url(scan):
    results, _ = scan
    data = _one(results, "probe.autodiscover_v2@https://webmail.contoso.com/autodiscover/autodiscover.json"
                         "?Protocol=ActiveSync")
    assert (data["status"], data["returned_url"], data["returned_host"]) == (302, None, None)


# ------------------------------------------------------------------------------------------------------ TLS
def test_tls_versions_per_host(scan, lab):
    results, _ = scan
    legacy = _one(results, "probe.tls@legacy.contoso.com:443")
    modern = _one(results, "probe.tls@modern.contoso.com:443")
    default = _one(results, f"probe.tls@mail.contoso.com:443{_via(lab, '127.0.1.2')}")
    assert legacy["versions"] == {"TLSv1.0": True, "TLSv1.1": False, "TLSv1.2": False, "TLSv1.3": False}
    assert modern["versions"] == {"TLSv1.0": False, "TLSv1.1": False, "TLSv1.2": True, "TLSv1.3": True}
    assert default["versions"] == {"TLSv1.0": False, "TLSv1.1": False, "TLSv1.2": True, "TLSv1.3": False}
    assert legacy["version_errors"] == {} and legacy["certificate"]["chain_verified"] is True
    # the HTTP probes never offer TLS 1.0: they fail with the reason, and the TLS probe explains it
    bearer = results["probe.bearer@https://legacy.contoso.com/mapi/"]
    assert bearer.status == "error" and "TLS handshake failed" in bearer.error


def test_certificate_good_expired_untrusted_and_names_missing(scan):
    results, _ = scan
    good = _one(results, "probe.tls@ex01.contoso.com:443")["certificate"]
    assert good["chain_verified"] is True and good["verify_error"] is None
    assert "ex01.contoso.com" in good["dns_names"] and len(good["thumbprint"]) == 40
    expired = _one(results, "probe.tls@old.contoso.com:443")
    assert expired["certificate"]["chain_verified"] is False
    assert expired["certificate"]["verify_error"] == "certificate has expired"
    assert expired["certificate"]["not_after"] < iso_utc(utc_now())
    extra = _one(results, "probe.tls@extra.contoso.com:443")
    assert extra["names_in_scope"] == ["extra.contoso.com"]
    assert extra["certificate"]["dns_names"] == ["mail.contoso.com", "*.mail.contoso.com"]
    assert extra["certificate"]["chain_verified"] is True  # trust and names are separate findings
    untrusted = _one(results, "probe.tls@untrusted.contoso.com:443")["certificate"]
    assert untrusted["chain_verified"] is False and untrusted["verify_error"]
    assert results["probe.bearer@https://old.contoso.com/OAB/"].status == "error"
    assert "certificate has expired" in results["probe.bearer@https://old.contoso.com/OAB/"].error


# ---------------------------------------------------------------------------------------------- faults
def test_a_host_that_never_answers_is_error_not_a_hang(scan):
    results, _ = scan
    first = results["probe.bearer@https://silent.contoso.com/mapi/"]
    assert first.status == "error" and f"no answer within {TIMEOUT:g} s" in first.error
    assert first.duration_ms < 5000
    for key in ("probe.bearer@https://silent.contoso.com/OAB/", "probe.tls@silent.contoso.com:443"):
        assert results[key].status == "error" and "an earlier request to this node failed" in results[key].error


def test_one_hung_path_costs_only_that_path():
    """A hung application pool on /mapi/ of one node: that probe is ERROR, the node's other paths and its TLS are
    still probed (evidence is not lost because one path did not answer)."""
    from dataclasses import replace

    from hma_lab.endpoints import PROTOCOLS, VirtualDirectorySpec

    spec = lab_spec()
    hung = {protocol: VirtualDirectorySpec(hung=protocol == "MAPI") for protocol in PROTOCOLS}
    spec = replace(spec, nodes=tuple(replace(node, virtual_directories=hung) if node.name == "EX01" else node
                                     for node in spec.nodes), hosts=tuple(h for h in spec.hosts if h.name == "ex01.contoso.com"))
    with EndpointServer(spec) as server:
        settings = parse_probe_settings({"connect_to": server.connect_to, "ca_bundle": str(server.ca_bundle),
                                         "timeout": TIMEOUT, "concurrency": 1, "hosts": ["ex01.contoso.com"]})
        results = {r.key: r for r in collect_probes(Snapshot.new(), settings)}
    mapi = results["probe.bearer@https://ex01.contoso.com/mapi/"]
    assert mapi.status == "error" and f"no answer within {TIMEOUT:g} s" in mapi.error
    ews = results["probe.bearer@https://ex01.contoso.com/EWS/Exchange.asmx"]
    assert ews.ok and ews.data["bearer"] is not None
    assert results["probe.tls@ex01.contoso.com:443"].ok


def test_nothing_listening_and_unknown_sources_are_errors_with_reasons(lab):
    snapshot = exchange_snapshot(failed={"exchange.web_services_virtual_directories@EX02": "WinRM timeout"})
    settings = parse_probe_settings({"hosts": ["closed.contoso.com"], "resolve": ["closed.contoso.com:443:127.0.9.9"],
                                     "connect_to": [r for r in lab.connect_to if r.startswith("ex02.")],
                                     "ca_bundle": str(lab.ca_bundle), "timeout": TIMEOUT})
    results = {r.key: r for r in collect_probes(snapshot, settings)}
    closed = results["probe.tls@closed.contoso.com:443"]
    assert closed.status == "error" and "127.0.9.9:443" in closed.error
    unknown = results["probe.bearer@hosts of exchange.web_services_virtual_directories@EX02"]
    assert unknown.status == "error" and "WinRM timeout" in unknown.error
    assert results["probe.tls@hosts of exchange.web_services_virtual_directories@EX02"].status == "error"
    assert "probe.autodiscover_v2@hosts of exchange.web_services_virtual_directories@EX02" not in results
    assert _one(results, "probe.targets")["unknown"] == [
        {"source": "exchange.web_services_virtual_directories@EX02", "reason": "error: WinRM timeout"}]
    assert results["probe.bearer@https://ex02.contoso.com/OAB/"].ok  # the rest of the scan went on


# ------------------------------------------------------------------------------------ anonymous, read-only
def test_probes_are_anonymous_and_read_only(scan):
    _, requests = scan
    assert len(requests) > 40
    for request in requests:
        headers = {name.lower(): value for name, value in request["headers"]}
        assert request["method"] == "GET"
        assert headers.get("authorization", "Bearer") == "Bearer", request
        assert "cookie" not in headers and "proxy-authorization" not in headers
    # the pre-authenticating proxy set a cookie on every answer; it never came back
    assert any(r["host"] == "webmail.contoso.com" for r in requests)


def test_the_node_client_refuses_a_credential_or_a_write_before_it_leaves(lab):
    """The guard sits on the client's transport hook, so it holds for any request sent through it, auth flow included."""
    import ssl

    from hma_check.collect.probes.collector import Node, _NodeClient

    node = Node("ex01.contoso.com", 443, "127.0.1.1", lab.port, False)
    started = len(lab.requests)
    with _NodeClient(node, ssl.create_default_context(cafile=str(lab.ca_bundle)), TIMEOUT) as client:
        url = client.base + "/mapi/"
        extensions = {"sni_hostname": node.host}
        for attempt in (lambda: client.client.get(url, auth=("alice", "Secret123!"), extensions=extensions),
                        lambda: client.client.get(url, headers={"Authorization": "Bearer eyJ.x.y"}, extensions=extensions),
                        lambda: client.client.get(url, headers={"Cookie": "session=1"}, extensions=extensions),
                        lambda: client.client.post(url, content=b"{}", extensions=extensions)):
            with pytest.raises(AssertionError, match="probes are anonymous|GET only"):
                attempt()
        assert lab.requests[started:] == []
        response, _ = client.get("/mapi/", bearer=True)  # the probe's own request still goes
    assert response.status_code == 401 and len(lab.requests) == started + 1


def test_no_credential_anywhere_in_the_evidence(scan):
    results, _ = scan
    text = repr([r.to_json() for r in results.values()])
    assert "Secret123!" not in text and "alice password" not in text


# ------------------------------------------------------------------------------------ routing and limits
def test_resolve_and_connect_to_reach_each_node(lab):
    """curl's pair: --connect-to moves the port, --resolve gives the name both nodes' addresses."""
    settings = parse_probe_settings({
        "connect_to": [f"mail.contoso.com:443:mail.contoso.com:{lab.port}"],
        "resolve": [f"mail.contoso.com:{lab.port}:127.0.1.1,127.0.1.2"],
        "hosts": ["mail.contoso.com"], "ca_bundle": str(lab.ca_bundle), "timeout": TIMEOUT})
    results = collect_probes(exchange_snapshot(failed={"exchange.servers": "stopped"}), settings)
    servers = {r.data["x_feserver"] for r in results if r.name == "probe.bearer" and r.ok}
    assert servers == {"EX01", "EX02"}
    assert {r.scope for r in results if r.name == "probe.tls" and r.ok} == {
        f"mail.contoso.com:443{_via(lab, '127.0.1.1')}", f"mail.contoso.com:443{_via(lab, '127.0.1.2')}"}


def test_concurrency_one_probes_one_node_at_a_time(lab):
    hosts = ["ex01.contoso.com", "ex02.contoso.com", "modern.contoso.com"]
    settings = parse_probe_settings({"hosts": hosts, "connect_to": lab.connect_to, "ca_bundle": str(lab.ca_bundle),
                                     "timeout": TIMEOUT, "concurrency": 1})
    started = len(lab.requests)
    collect_probes(Snapshot.new(), settings)  # no Exchange collector: the named hosts only
    sequence = [request["host"] for request in lab.requests[started:]]
    assert [host for host, _ in itertools.groupby(sequence)] == hosts  # no interleaving: one worker


def test_disabled_probes_are_skipped():
    results = collect_probes(exchange_snapshot(), parse_probe_settings({"enabled": False}))
    assert [(r.name, r.status) for r in results] == [("probe.targets", "skipped")]
