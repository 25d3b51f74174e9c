"""What the lab says as real Exchange says it: whole objects at real size, local times, a 2010 CAS's directories,
each server's own Autodiscover SCP, the AD FS endpoint a default ADFS AuthServer advertises."""

from __future__ import annotations

import re

import pytest

from hma_check.collect.psrp_client import RemoteSession
from hma_lab.endpoint_derivation import node_address
from hma_lab.exchange_types import KINDS
from hma_lab.psrp import FRAGMENT_BYTES
from hma_lab.runtime import Lab
from tests.support.lab import exchange_settings, scan, variant

SCENARIO = """\
extends: ready
name: realism
auth_config:
  current_certificate: auth
  NextCertificateEffectiveDate: "2031-01-01T16:00:00Z"
servers:
  - name: EX01
  - name: EX02
    autodiscover_service_internal_uri: https://ex02.contoso.local/Autodiscover/Autodiscover.xml
  - name: EX03
    autodiscover_service_internal_uri: null
  - name: LEGACY01
    build: 14.3.513.0
    roles: [Mailbox, ClientAccess, HubTransport]
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with Lab(variant(tmp_path_factory.mktemp("realism"), SCENARIO)) as running:
        yield running


def raw_objects(lab, cmdlet, params=()):
    """The objects exactly as the endpoint wrote them (before any parsing)."""
    session = RemoteSession(exchange_settings(lab.scan_config()), lab.credentials.password).open()
    try:
        from pypsrp.powershell import PowerShell

        ps = PowerShell(session._pool)
        ps.add_cmdlet(cmdlet)
        for name, value in params:
            ps.add_parameter(name, value)
        ps.invoke()
        return [obj._xml for obj in ps.output]
    finally:
        session.close()


def test_objects_carry_every_property_of_their_type_and_span_fragments(lab):
    """Exchange sends every property (unset ones as Nil) and its SerializationData blob: an OWA virtual directory is
    over 100 KB on the wire, so it crosses PSRP fragments as a real one does, and still reads back whole."""
    owa, = raw_objects(lab, "Get-OwaVirtualDirectory", (("Server", "EX01"),))
    assert len(owa.encode()) > 3 * FRAGMENT_BYTES
    for prop in KINDS["owa"].properties:
        assert re.search(rf'N="{prop}"', owa), prop
    assert '<BA N="SerializationData">' in owa
    # a property the object has but nobody set arrives as Nil, not missing (Get-User's AuthenticationPolicy)
    admin, = raw_objects(lab, "Get-User", (("Identity", "Jane Admin"),))
    for prop in KINDS["User"].properties:
        assert re.search(rf'N="{prop}"', admin), prop
    assert '<Nil N="AuthenticationPolicy" />' in admin
    snapshot = scan(lab, sections=("exchange",))
    assert snapshot.sources["exchange.owa_virtual_directories@EX01"].ok


def test_local_times_carry_the_servers_offset_and_read_back_in_utc(lab):
    config, = raw_objects(lab, "Get-AuthConfig")
    assert '<DT N="NextCertificateEffectiveDate">2031-01-01T08:00:00-08:00</DT>' in config
    assert re.search(r'<DT N="WhenChangedUTC">[^<]+Z</DT>', config)
    snapshot = scan(lab, sections=("exchange",))
    assert snapshot.sources["exchange.auth_config"].data["NextCertificateEffectiveDate"] == "2031-01-01T16:00:00Z"


def test_an_exchange_2010_client_access_server_has_its_directories_but_no_mapi_and_no_oauth(lab):
    ews, = raw_objects(lab, "Get-WebServicesVirtualDirectory", (("Server", "LEGACY01"),))
    assert 'N="OAuthAuthentication"' not in ews and "legacy01.contoso.local/EWS/Exchange.asmx" in ews
    assert raw_objects(lab, "Get-MapiVirtualDirectory", (("Server", "LEGACY01"),)) == []
    everything = raw_objects(lab, "Get-OwaVirtualDirectory")
    assert sum("LEGACY01" in xml for xml in everything) == 1


def test_each_server_publishes_its_own_autodiscover_service_connection_point(lab):
    snapshot = scan(lab, sections=("exchange",))
    uris = {s["Name"]: s["AutodiscoverServiceInternalUri"] for s in snapshot.sources["exchange.client_access_services"].data}
    assert uris == {"EX01": "https://autodiscover.contoso.com/Autodiscover/Autodiscover.xml",
                    "EX02": "https://ex02.contoso.local/Autodiscover/Autodiscover.xml", "EX03": None}


def test_an_adfs_default_authorization_endpoint_is_what_the_bearer_challenge_advertises(tmp_path):
    with Lab("adfs-default") as running:
        snapshot = scan(running, sections=("exchange", "probes"))
    uris = {r.data["bearer"]["authorization_uri"] for r in snapshot.sources.values()
            if r.name == "probe.bearer" and r.ok and r.data.get("bearer")}
    assert uris == {"https://adfs.contoso.com/adfs/oauth2/authorize/"}


def test_one_hung_path_on_one_node_is_said_in_the_scenario(tmp_path):
    """endpoints.nodes[].hung: EX02's /mapi/ never answers; EX01's /mapi/ and EX02's other paths do."""
    scenario = variant(tmp_path, "extends: ready\nname: hung\nendpoints:\n  nodes:\n    - {name: EX02, hung: [MAPI]}\n")
    with Lab(scenario) as running:
        snapshot = scan(running, sections=("exchange", "probes"))
    ex02 = node_address(1)   # the second Exchange server's own loopback address
    bearer = [r for r in snapshot.sources.values() if r.name == "probe.bearer"]
    failed = {r.scope for r in bearer if not r.ok}
    assert failed and all("/mapi/ via " + ex02 in scope for scope in failed)
    assert all("no answer within" in r.error for r in bearer if not r.ok)
    assert any(r.ok and "/mapi/ via " in r.scope and ex02 not in r.scope for r in bearer)
    assert any(r.ok and "/EWS/" in r.scope and ex02 in r.scope for r in bearer)
