"""The lab's Exchange endpoint through pypsrp's own classes: auth, encryption, NoLanguage fidelity, wire shapes."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid

import pytest
import requests
from pypsrp.complex_objects import GenericComplexObject
from pypsrp.exceptions import AuthenticationError, WinRMTransportError, WSManFaultError
from pypsrp.powershell import PowerShell, PSInvocationState, RunspacePool
from pypsrp.wsman import WSMan

from hma_lab.runtime import Lab
from tests.support.lab import variant

SCENARIO = """\
extends: ready
name: protocol
mailboxes: {count: 1001}
latency:
  cmdlets: {Get-AcceptedDomain: 2.5s, Get-ActiveSyncDeviceAccessRule: 300ms}
throttling: {max_concurrency: 4}
servers:
  - name: EX{n:02}
    count: 2
  - name: EX03
    virtual_directories:
      mapi:
        IISAuthenticationMethods: [Ntlm, Negotiate]
        ad: {IISAuthenticationMethods: [Ntlm, OAuth, Negotiate]}
faults:
  - {cmdlet: Get-IntraOrganizationConnector, break_pool: true}
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with Lab(variant(tmp_path_factory.mktemp("protocol"), SCENARIO)) as running:
        yield running


def wsman(lab, *, ssl=True, auth="ntlm", password=None, **kwargs):
    endpoint = lab.exchange_endpoint
    if ssl:
        kwargs.setdefault("cert_validation", str(lab.ca_file))
    return WSMan(endpoint.host, port=endpoint.https_port if ssl else endpoint.http_port, path="PowerShell", ssl=ssl,
                 auth=auth, username=lab.credentials.username,
                 password=password if password is not None else lab.credentials.password, **kwargs)


def run(pool, cmdlet, **params):
    ps = PowerShell(pool)
    ps.add_cmdlet(cmdlet)
    for name, value in params.items():
        ps.add_parameter(name, value)
    ps.invoke()
    return ps


@pytest.fixture(scope="module")
def pool(lab):
    with wsman(lab) as connection, RunspacePool(connection, configuration_name="Microsoft.Exchange") as opened:
        yield opened


# ------------------------------------------------------------------------------------------------ authentication

@pytest.mark.parametrize("auth", ["basic", "ntlm", "negotiate"])
def test_https_accepts_basic_ntlm_and_negotiate(lab, auth):
    with wsman(lab, auth=auth) as connection, RunspacePool(connection, configuration_name="Microsoft.Exchange") as p:
        ps = run(p, "Get-OrganizationConfig")
    assert ps.state == PSInvocationState.COMPLETED
    assert ps.output[0].adapted_properties["Name"] == "Contoso"


def test_ntlm_over_http_uses_winrm_message_encryption(lab):
    before = len(lab.request_log)
    with wsman(lab, ssl=False, encryption="auto") as connection, \
            RunspacePool(connection, configuration_name="Microsoft.Exchange") as p:
        ps = run(p, "Get-AuthConfig")
    assert ps.state == PSInvocationState.COMPLETED
    wsman_requests = [r for r in lab.request_log[before:] if r["resource"] and not r["tls"]]
    assert wsman_requests and all(r["encrypted"] for r in wsman_requests)


def test_plaintext_and_basic_are_refused_over_http(lab):
    with pytest.raises(AuthenticationError):
        with wsman(lab, ssl=False, encryption="never") as connection:
            RunspacePool(connection, configuration_name="Microsoft.Exchange").open()
    with pytest.raises(AuthenticationError):
        with wsman(lab, ssl=False, auth="basic", encryption="never") as connection:
            RunspacePool(connection, configuration_name="Microsoft.Exchange").open()


@pytest.mark.parametrize("auth", ["basic", "ntlm"])
def test_a_wrong_password_is_refused(lab, auth):
    with pytest.raises(AuthenticationError):
        with wsman(lab, auth=auth, password="not-the-password") as connection:
            RunspacePool(connection, configuration_name="Microsoft.Exchange").open()


def test_the_lab_certificate_is_not_trusted_without_its_ca(lab):
    with pytest.raises(requests.exceptions.SSLError):
        with wsman(lab, cert_validation=True) as connection:
            RunspacePool(connection, configuration_name="Microsoft.Exchange").open()


def test_an_unknown_session_configuration_is_a_wsman_fault(lab):
    with pytest.raises(WSManFaultError) as caught:
        with wsman(lab) as connection:
            RunspacePool(connection, configuration_name="Microsoft.Nothing").open()
    assert "Microsoft.Nothing" in str(caught.value.reason)


# ------------------------------------------------------------------------------------------------ NoLanguage fidelity

def test_a_script_is_refused_as_a_no_language_runspace_does(lab, pool):
    ps = PowerShell(pool)
    ps.add_script("Get-ExchangeServer | Set-ExchangeServer -InternetWebProxy $null")
    ps.invoke()
    assert ps.state == PSInvocationState.FAILED and ps.had_errors
    error = ps.streams.error[0]
    assert error.fq_error == "ScriptsNotAllowed"
    assert "no-language mode" in str(error)
    assert error.message.startswith("ParserError:")
    logged = lab.command_log[-1]
    assert logged["is_script"] and logged["command"].startswith("Get-ExchangeServer | Set-")


def test_an_unknown_cmdlet_is_command_not_found(pool):
    ps = run(pool, "Invoke-Expression", Command="Get-Date")
    assert ps.state == PSInvocationState.FAILED
    assert ps.streams.error[0].fq_error == "CommandNotFoundException"
    assert "'Invoke-Expression' is not recognized" in str(ps.streams.error[0])


def test_an_unknown_parameter_is_named_parameter_not_found(pool):
    ps = run(pool, "Get-ExchangeServer", NoSuchThing="x")
    assert ps.state == PSInvocationState.FAILED
    assert ps.streams.error[0].fq_error == "NamedParameterNotFound,Get-ExchangeServer"


def test_parameters_bind_case_insensitively_and_by_unique_prefix(pool):
    ps = run(pool, "Get-MapiVirtualDirectory", server="EX02", ADProp=True)
    assert ps.state == PSInvocationState.COMPLETED
    assert [o.adapted_properties["Server"] for o in ps.output] == ["EX02"]


def test_an_object_that_is_not_found_is_a_non_terminating_error(pool):
    ps = run(pool, "Get-MapiVirtualDirectory", Server="EX99")
    # had_errors stays False for a non-terminating error: a client must read streams.error as well.
    assert ps.state == PSInvocationState.COMPLETED and not ps.had_errors
    assert ps.output == [] and len(ps.streams.error) == 1
    assert "ManagementObjectNotFoundException" in ps.streams.error[0].fq_error
    assert "'EX99' couldn't be found" in str(ps.streams.error[0])


# ------------------------------------------------------------------------------------------------ wire shapes

def test_objects_arrive_as_a_remote_session_sends_them(pool):
    server = run(pool, "Get-ExchangeServer", Identity="EX01").output[0]
    assert server.types[0] == "Microsoft.Exchange.Data.Directory.Management.ExchangeServer"
    assert not any(t.startswith("Deserialized.") for t in server.types)
    assert str(server) == "EX01"
    props = server.adapted_properties
    assert props["AdminDisplayVersion"] == "Version 15.2 (Build 2562.17)"      # ServerVersion as its ToString
    assert props["Site"].endswith("/Configuration/Sites/Default-First-Site-Name")  # ADObjectId as a string
    assert isinstance(props["Guid"], uuid.UUID)
    assert isinstance(props["WhenChangedUTC"], str) and props["WhenChangedUTC"].endswith("Z")  # <DT> stays raw

    mapi = run(pool, "Get-MapiVirtualDirectory", Server="EX01").output[0].adapted_properties
    methods = mapi["IISAuthenticationMethods"]
    # pypsrp cannot read Exchange's MultiValuedProperty: it keeps the raw <LST> (the normaliser unwraps it).
    assert isinstance(methods, GenericComplexObject)
    assert any("MultiValuedProperty" in t for t in methods.types)
    assert methods.property_sets == ["<LST><S>Ntlm</S><S>OAuth</S><S>Negotiate</S></LST>"]
    assert mapi["InternalUrl"] == "https://mail.contoso.com/mapi"


def test_exchange_certificates_carry_only_raw_data(pool):
    certificates = run(pool, "Get-ExchangeCertificate", Server="EX02").output
    assert len(certificates) == 3
    for certificate in certificates:
        assert list(certificate.adapted_properties) == ["RawData"]
        assert isinstance(certificate.adapted_properties["RawData"], bytes)
        assert str(certificate).startswith("[Subject]")


def test_ad_properties_only_reads_ad_and_the_default_reads_iis(pool):
    iis = run(pool, "Get-MapiVirtualDirectory", Server="EX03").output[0]
    ad = run(pool, "Get-MapiVirtualDirectory", Server="EX03", ADPropertiesOnly=True).output[0]
    assert "OAuth" not in iis.adapted_properties["IISAuthenticationMethods"].property_sets[0]
    assert "OAuth" in ad.adapted_properties["IISAuthenticationMethods"].property_sets[0]
    ews = run(pool, "Get-WebServicesVirtualDirectory", Server="EX01", ADPropertiesOnly=True).output[0]
    assert ews.adapted_properties["OAuthAuthentication"] is False   # IIS-derived booleans are not filled from AD


def test_result_size_defaults_to_1000_with_exchanges_warning(pool):
    truncated = run(pool, "Get-Mailbox")
    assert len(truncated.output) == 1000
    assert "only the first 1000 items" in truncated.streams.warning[0].message
    some = run(pool, "Get-Mailbox", ResultSize=5)
    assert len(some.output) == 5 and not some.streams.warning


def test_filter_and_version_dependent_cmdlets(pool):
    filtered = run(pool, "Get-CASMailbox", ResultSize="Unlimited", Filter="MapiHttpEnabled -eq $false")
    assert filtered.state == PSInvocationState.COMPLETED and filtered.output == []
    assert run(pool, "Get-ClientAccessServer").streams.error[0].fq_error == "CommandNotFoundException"  # gone in 2019
    assert run(pool, "Get-ClientAccessService").state == PSInvocationState.COMPLETED


# ------------------------------------------------------------------------------------------------ behaviour

def test_pipelines_run_concurrently_in_one_pool(lab):
    with wsman(lab) as connection, RunspacePool(connection, configuration_name="Microsoft.Exchange",
                                               max_runspaces=4) as p:
        started = time.monotonic()
        shells = []
        for _ in range(4):
            ps = PowerShell(p)
            ps.add_cmdlet("Get-ActiveSyncDeviceAccessRule")   # 300 ms each in this scenario
            ps.begin_invoke()
            shells.append(ps)
        for ps in shells:
            ps.end_invoke()
        elapsed = time.monotonic() - started
    assert all(ps.state == PSInvocationState.COMPLETED for ps in shells)
    assert elapsed < 0.9   # four 300 ms calls, not 1.2 s in a row


def test_a_slow_cmdlet_outlives_the_operation_timeout(lab):
    with wsman(lab, operation_timeout=1) as connection, \
            RunspacePool(connection, configuration_name="Microsoft.Exchange") as p:
        ps = run(p, "Get-AcceptedDomain")       # 2.5 s: two Receive timeouts (fault 0x80338029), then the answer
    assert ps.state == PSInvocationState.COMPLETED and len(ps.output) == 2
    assert sum(1 for r in lab.request_log if r["action"] == "Receive" and r["status"] == 500) >= 2


def test_the_per_user_shell_limit_answers_with_exchanges_quota_fault(lab, pool):
    opened = []
    try:
        with pytest.raises(WSManFaultError) as caught:
            for _ in range(6):
                connection = wsman(lab)
                opened.append(connection)
                extra = RunspacePool(connection, configuration_name="Microsoft.Exchange")
                extra.open()
                opened.append(extra)
        assert caught.value.code == 0x803381A4
        assert "maximum of 4 concurrent shells" in caught.value.reason
    finally:
        for item in reversed(opened):
            item.close()


def test_a_broken_runspace_pool_fails_the_call(lab):
    with wsman(lab) as connection:
        p = RunspacePool(connection, configuration_name="Microsoft.Exchange")
        p.open()
        ps = PowerShell(p)
        ps.add_cmdlet("Get-IntraOrganizationConnector")
        with pytest.raises(WSManFaultError) as caught:
            ps.invoke()
        assert caught.value.code == 0x8033805B


def test_every_command_is_logged_with_its_parameters(lab, pool):
    run(pool, "Get-OabVirtualDirectory", Server="EX02", ADPropertiesOnly=False)
    entry = lab.command_log[-1]
    assert entry["command"] == "Get-OabVirtualDirectory"
    assert entry["parameters"] == [["Server", "EX02"], ["ADPropertiesOnly", False]]
    assert entry["user"].lower() == lab.credentials.username.lower() and not entry["is_script"]


def test_http_faults_answer_401_or_500(tmp_path):
    scenario = variant(tmp_path, "extends: ready\nname: http-faults\nfaults:\n"
                                 "  - {http_status: 500, action: Command, times: 1}\n")
    with Lab(scenario) as running:
        with wsman(running) as connection, RunspacePool(connection, configuration_name="Microsoft.Exchange") as p:
            ps = PowerShell(p)
            ps.add_cmdlet("Get-AuthConfig")
            with pytest.raises(WinRMTransportError) as caught:
                ps.invoke()
            assert caught.value.code == 500
            assert run(p, "Get-AuthConfig").state == PSInvocationState.COMPLETED   # only once
    refusing = variant(tmp_path, "extends: ready\nname: refusing\nfaults:\n  - {http_status: 401}\n", "refusing")
    with Lab(refusing) as running:
        with pytest.raises(AuthenticationError):
            with wsman(running, auth="basic") as connection:
                RunspacePool(connection, configuration_name="Microsoft.Exchange").open()


def test_a_client_that_never_starts_tls_stalls_no_other_listener(lab):
    # One thread accepts for every server's WinRM listeners (hundreds of ports in a large lab): a TLS handshake run
    # there would hold all of them for its timeout.
    winrm = next(service for service in lab.services if hasattr(service, "https_ports"))
    with socket.create_connection(("127.0.0.1", winrm.https_ports["EX01"])):   # never sends a ClientHello
        time.sleep(0.3)
        started = time.monotonic()
        response = requests.post(f"http://127.0.0.1:{winrm.http_ports['EX02']}/wsman", data=b"", timeout=15)
        elapsed = time.monotonic() - started
    assert response.status_code == 401 and elapsed < 2


def test_stopping_the_lab_closes_the_connections_still_open():
    with Lab("ready") as running:
        endpoint = running.exchange_endpoint
        client = socket.create_connection((endpoint.host, endpoint.http_port), timeout=5)
        client.sendall(b"POST /PowerShell HTTP/1.1\r\nHost: lab\r\nContent-Length: 0\r\n\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += client.recv(4096)
        assert answer.startswith(b"HTTP/1.1 401")   # answered; the connection stays open for the next request
    with client:
        assert client.recv(1) == b""                 # closed by the lab's stop, not left waiting for the client


def test_no_lab_password_stays_on_disk_once_the_last_lab_stops():
    # pyspnego reads NTLM accounts from the file NTLM_USER_FILE names (the password's hashes, as a domain
    # controller keeps them, not the password); a fresh process, so no other lab holds it.
    code = ("import os\nfrom hma_lab.runtime import Lab\nfrom spnego._ntlm_raw.crypto import ntowfv1\n"
            "with Lab('ready') as lab:\n"
            "    path = os.environ['NTLM_USER_FILE']\n"
            "    text = open(path, encoding='utf-8').read()\n"
            "    assert ntowfv1(lab.credentials.password).hex() in text and lab.credentials.password not in text\n"
            "print(os.path.exists(os.path.dirname(path)), 'NTLM_USER_FILE' in os.environ)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120).stdout
    assert out.split() == ["False", "False"]


def _envelope_contents():
    import xml.etree.ElementTree as ET
    from types import SimpleNamespace

    from hma_lab import wsman

    rsp, cfg = wsman.NS["rsp"], wsman.NS["cfg"]
    command = ET.Element(f"{{{rsp}}}CommandResponse")
    ET.SubElement(command, f"{{{rsp}}}CommandId").text = "0F1E2D3C-4B5A-4978-8695-A4B3C2D1E0F9"
    config = ET.Element(f"{{{cfg}}}Config")
    ET.SubElement(config, f"{{{cfg}}}MaxEnvelopeSizekb").text = "500"
    shell = SimpleNamespace(id="SHELL-1", user="CONTOSO\\admin & <ops> \"quoted\"\r\n\t\u00e9")
    fault = wsman.WSManFault(wsman.SHELL_NOT_FOUND, "no such shell: <x> & \"y\" \u00e9 \ud800 \U0001F600")
    odd = ET.Element("{urn:not-the-labs}Thing", {"{urn:not-the-labs}a": "1"})
    return [
        [], [command], [ET.Element(f"{{{rsp}}}SignalResponse")], [config],
        [wsman._receive_element([b"\x00" * 40, bytes(range(256)) * 200], "CMD-1", True)],
        [wsman._receive_element([], "CMD-1", False)], [wsman._receive_element([b"pool data"], None, False)],
        [wsman._shell_element(shell, "http://schemas.microsoft.com/powershell/Microsoft.Exchange", "127.0.0.1")],
        wsman._fault_body(fault), [odd],
    ]


@pytest.mark.parametrize("case", range(10))
def test_the_envelopes_written_as_text_are_the_ones_elementtree_writes(case, monkeypatch):
    from hma_lab import wsman

    import xml.etree.ElementTree as ET

    fixed = uuid.UUID("0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9")
    monkeypatch.setattr(uuid, "uuid4", lambda: fixed)
    # ElementTree's prefixes are global: a pypsrp WSMan made in this process registers its own ("wsmanfault" for
    # the fault namespace). The lab's process has only the lab's, which the text writer always uses (as WinRM: f:).
    labs = {uri: prefix for prefix, uri in wsman.NS.items() if prefix != "xml"}
    registered = {uri: prefix for uri, prefix in ET._namespace_map.items() if prefix not in labs.values()}
    monkeypatch.setattr(ET, "_namespace_map", {**registered, **labs})
    content = _envelope_contents()[case]
    action = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/ReceiveResponse"
    tree = wsman._envelope_tree
    if case != 9:   # only the element in a namespace of no prefix of the lab's goes through ElementTree
        monkeypatch.setattr(wsman, "_envelope_tree", None)
    for relates_to in ("uuid:0F1E2D3C-4B5A-4978-8695-A4B3C2D1E0F9", "uuid:<odd> & \"id\""):
        assert wsman._envelope(action, relates_to, content) == tree(action, relates_to, content)


def test_a_plain_pipeline_state_is_the_message_psrpcore_writes():
    """The lab writes a PipelineState without an error record once per state (psrp._ServerPool._plain_state)."""
    import xml.etree.ElementTree as ET

    from psrpcore.types import PipelineState, PSInvocationState, serialize

    from hma_lab.psrp import _ServerPool

    pool = _ServerPool(application_private_data={})
    for state in (PSInvocationState.Completed, PSInvocationState.Running, PSInvocationState.Stopped):
        message = PipelineState(PipelineState=int(state))
        expected = ET.tostring(serialize(message, None), encoding="utf-8", method="xml")
        assert bytes(pool._plain_state(message)) == expected == bytes(pool._plain_state(message))


def test_a_pipeline_that_completes_sends_the_plain_state(pool, monkeypatch):
    from psrpcore.types import PSInvocationState as ServerState

    from hma_lab.psrp import _ServerPool

    monkeypatch.setattr(_ServerPool, "_plain_states", {})   # filled by earlier pipelines: only this one counts
    ps = PowerShell(pool)
    ps.add_cmdlet("Get-AcceptedDomain")
    ps.invoke()
    assert ps.state == PSInvocationState.COMPLETED and ps.output
    assert int(ServerState.Completed) in _ServerPool._plain_states


def test_a_queued_pipelines_latency_runs_from_when_it_gets_the_runspace(lab):
    """A pool runs as many pipelines at once as its runspaces (pypsrp's: one); a second pipeline waits for the
    first, and its own latency (300 ms here) counts from then, not from its Command."""
    with wsman(lab) as connection, RunspacePool(connection, configuration_name="Microsoft.Exchange") as pool:
        assert pool.max_runspaces == 1
        first, second = PowerShell(pool), PowerShell(pool)
        for ps in (first, second):
            ps.add_cmdlet("Get-ActiveSyncDeviceAccessRule")
        started = time.monotonic()
        first.begin_invoke()
        second.begin_invoke()
        second.end_invoke()
        first.end_invoke()
        both = time.monotonic() - started
    assert first.state == second.state == PSInvocationState.COMPLETED
    assert both >= 0.6 - 0.05      # one latency after the other (a lower bound: the lab cannot answer sooner)
