"""The lab's HTTPS endpoints: the endpoints: section loader, the ClientHello SNI reader, and answers a client sees."""

from __future__ import annotations

import ssl
import time

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hma_check.errors import ConfigError
from hma_lab.endpoint_server import EndpointServer, sni_from_client_hello
from hma_lab.endpoints import CertificateSpec, apply_endpoints_section
from tests.support.probe_lab import TENANT, lab_spec


def test_section_overrides_and_adds():
    spec = apply_endpoints_section(lab_spec(), {
        "evosts_default": False,
        "tenant_ids": [TENANT.upper(), "11111111-2222-3333-4444-555555555555"],
        "nodes": [{"name": "EX01", "oauth": {"MAPI": False}, "tls_versions": ["TLSv1.0", "TLSv1.1", "TLSv1.2"],
                   "ssl_offloading": True},
                  {"name": "EX03", "address": "127.0.1.3", "challenges": {"EWS": ["Basic"]}}],
        "hosts": [{"name": "mail.contoso.com", "front": "preauth", "preauth": {"status": 401,
                                                                              "challenges": ['Basic realm="x"']}},
                  {"name": "Legacy2.Contoso.com.", "nodes": ["EX03"], "certificate": {"validity": "expired"}}],
    }, path="scenario.yaml")
    assert spec.evosts_default is False and spec.oauth2_client_profile_enabled is True
    assert spec.tenant_ids == (TENANT, "11111111-2222-3333-4444-555555555555")
    ex01 = spec.node("EX01")
    assert ex01.virtual_directories["MAPI"].oauth is False and ex01.virtual_directories["EWS"].oauth is True
    assert ex01.tls_versions == ("TLSv1.0", "TLSv1.1", "TLSv1.2") and ex01.ssl_offloading
    assert ex01.autodiscover_urls == lab_spec().node("EX01").autodiscover_urls  # untouched fields stay
    assert spec.node("EX03").virtual_directories["EWS"].challenges == ("Basic",)
    mail = spec.host("mail.contoso.com")
    assert (mail.front, mail.preauth.status, mail.nodes) == ("preauth", 401, ("EX01", "EX02"))
    added = spec.host("legacy2.contoso.com")
    assert added.nodes == ("EX03",)
    assert added.certificate == CertificateSpec(("legacy2.contoso.com",), validity="expired")


@pytest.mark.parametrize("raw, message", [
    ([], "endpoints: must be a mapping"),
    ({"node": []}, "endpoints.node: unknown key"),
    ({"tenant_ids": ["contoso"]}, "endpoints.tenant_ids[0]: 'contoso' is not a tenant id"),
    ({"nodes": [{"name": "EX09"}]}, "endpoints.nodes[0].address: a new node 'EX09' needs a loopback address"),
    ({"nodes": [{"name": "EX09", "address": "10.0.0.1"}]}, "endpoints.nodes[0].address: '10.0.0.1' is not a loopback"),
    ({"nodes": [{"name": "EX01", "oauth": {"IMAP": False}}]}, "endpoints.nodes[0].oauth.IMAP: unknown key"),
    ({"nodes": [{"name": "EX03", "address": "127.0.1.1"}]}, "endpoints.nodes: EX03 and EX01 share the address"),
    ({"nodes": [{"name": "EX01", "tls_versions": ["TLSv1.0", "TLSv1.2"]}]},
     "endpoints.nodes[0].tls_versions: must be a non-empty, contiguous range"),
    ({"nodes": [{"name": "EX01", "tls_versions": ["SSLv3"]}]}, "endpoints.nodes[0].tls_versions[0]: must be one of"),
    ({"hosts": [{"name": "bad host"}]}, "endpoints.hosts[0].name: 'bad host' is not a host name"),
    ({"hosts": [{"name": "x.contoso.com", "nodes": ["EX07"]}]}, "endpoints.hosts[0].nodes[0]: unknown node 'EX07'"),
    ({"hosts": [{"name": "x.contoso.com", "front": "cdn"}]}, "endpoints.hosts[0].front: must be one of"),
    ({"hosts": [{"name": "x.contoso.com", "preauth": {"status": 200}}]}, "endpoints.hosts[0].preauth.status: must be"),
    ({"hosts": [{"name": "x.contoso.com", "certificate": {"names": []}}]},
     "endpoints.hosts[0].certificate.names: a certificate needs at least one name"),
    ({"hosts": [{"name": "x.contoso.com", "certificate": {"validity": "revoked"}}]},
     "endpoints.hosts[0].certificate.validity: must be one of"),
])
def test_section_errors_name_the_key(raw, message):
    with pytest.raises(ConfigError) as caught:
        apply_endpoints_section(lab_spec(), raw, path="scenario.yaml")
    assert str(caught.value).startswith("scenario.yaml: " + message)


# ------------------------------------------------------------------------------------------- ClientHello
def _client_hello(server_name: str | None) -> bytes:
    """A real ClientHello from Python's ssl, taken from a memory BIO before any server answers."""
    context = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    if server_name is None:
        context.check_hostname = False
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def test_sni_from_a_real_client_hello():
    assert sni_from_client_hello(_client_hello("Mail.Contoso.com")) == "mail.contoso.com"
    assert sni_from_client_hello(_client_hello(None)) is None
    hello = _client_hello("mail.contoso.com")
    assert all(sni_from_client_hello(hello[:cut]) in (None, "mail.contoso.com") for cut in range(len(hello)))


@given(st.binary(max_size=600))
def test_sni_reader_never_raises(data):
    result = sni_from_client_hello(b"\x16\x03\x01" + data)
    assert result is None or isinstance(result, str)


# ------------------------------------------------------------------------------------------ seen by a client
@pytest.fixture(scope="module")
def offloading_lab():
    spec = apply_endpoints_section(lab_spec(), {"nodes": [{"name": "EX01", "ssl_offloading": True}]})
    with EndpointServer(spec) as server:
        yield server


def _client(server: EndpointServer, node_address: str) -> httpx.Client:
    context = ssl.create_default_context(cafile=str(server.ca_bundle))
    return httpx.Client(base_url=f"https://{node_address}:{server.port}", verify=context, trust_env=False)


def test_ssl_offloading_shows_as_exchange_receiving_http(offloading_lab):
    """A token on an offloaded node gets seed 003's 2000003 audience error (Actual 'http://…')."""
    with _client(offloading_lab, "127.0.1.1") as client:
        response = client.get("/EWS/Exchange.asmx", headers={"Host": "mail.contoso.com",
                                                             "Authorization": "Bearer eyJ0eXAiOiJKV1QifQ.e30.x"},
                              extensions={"sni_hostname": "mail.contoso.com"})
    assert response.status_code == 401
    assert response.headers["x-ms-diagnostics"] == (
        "2000003;reason=\"The hostname component of the audience claim value is invalid. Expected "
        "'https://mail.contoso.com'. Actual 'http://mail.contoso.com'.\";error_category=\"invalid_resource\"")
    assert response.headers.get_list("www-authenticate")[-1].endswith('error="invalid_token"')


def test_no_bearer_challenge_without_the_bearer_hint_and_404_elsewhere(offloading_lab):
    with _client(offloading_lab, "127.0.1.2") as client:
        plain = client.get("/mapi/", headers={"Host": "mail.contoso.com"},
                           extensions={"sni_hostname": "mail.contoso.com"})
        other = client.get("/owa/", headers={"Host": "mail.contoso.com"},
                           extensions={"sni_hostname": "mail.contoso.com"})
        bad = client.get("/autodiscover/autodiscover.json?Email=a@contoso.com&Protocol=imap",
                         headers={"Host": "mail.contoso.com"}, extensions={"sni_hostname": "mail.contoso.com"})
    assert plain.status_code == 401 and not any(v.startswith("Bearer") for v in plain.headers.get_list("www-authenticate"))
    assert plain.headers["x-feserver"] == "EX02"
    assert other.status_code == 404
    assert bad.status_code == 400 and bad.json()["ErrorCode"] == "ProtocolNotSupported"


def test_tls_context_per_host_by_sni(offloading_lab):
    """The same address serves the legacy host over TLS 1.0 only and the others over TLS 1.2."""
    modern = ssl.create_default_context(cafile=str(offloading_lab.ca_bundle))
    with pytest.raises(httpx.ConnectError, match="PROTOCOL_VERSION"):
        with httpx.Client(verify=modern, trust_env=False) as client:
            client.get(f"https://127.0.1.1:{offloading_lab.port}/mapi/", headers={"Host": "legacy.contoso.com"},
                       extensions={"sni_hostname": "legacy.contoso.com"})
    deadline = time.monotonic() + 2  # the server logs its side of the failed handshake just after the alert
    while not offloading_lab.tls_failures and time.monotonic() < deadline:
        time.sleep(0.01)
    assert offloading_lab.tls_failures[-1]["sni"] == "legacy.contoso.com"
