"""The per-call wire shortcuts (hma_check/collect/psrp_wire.py) send the bytes pypsrp itself would send.

These pin the pypsrp behaviour the shortcuts copy (pyproject: pypsrp>=0.9.1,<1.0): a pypsrp release that changes its
CreatePipeline message, its envelopes or the way Message.pack treats bytes fails here, not in a customer's scan.
"""

from __future__ import annotations

import http.client
import struct
import types
import uuid
import xml.etree.ElementTree as ET

import pytest
from pypsrp.complex_objects import ApartmentState
from pypsrp.messages import CreatePipeline, Message
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.serializer import Serializer
from pypsrp.wsman import NAMESPACES, OptionSet, SelectorSet, WSMan, WSManAction

from hma_check.collect import psrp_wire
from hma_check.collect.psrp_client import _keep_output_raw
from hma_check.collect.psrp_wire import PipelineTemplates, PrebuiltMessage, lean_wsman

SHAPES = [
    (("Get-ExchangeServer", ()),),
    (("Get-MapiVirtualDirectory", (("Server", "EX001"),)),),
    (("Get-Mailbox", (("ResultSize", "Unlimited"),)),),
    (("Get-User", (("ResultSize", "Unlimited"), ("Filter", "AuthenticationPolicy -ne $null"))),),
    (("Get-User", (("Identity", "O'Brien & <Sons> \"quoted\"\ttab\nnew line_x000A_ \u00e9\U0001F600"),)),),
    (("Get-Content", (("LiteralPath", "C:\\Windows\\System32\\inetsrv\\config\\applicationHost.config"),
                      ("Raw", True))),),
    (("Get-ChildItem", (("Path", "C:\\x"), ("Recurse", False), ("Depth", 2), ("Filter", ""), ("Name", None))),),
    (("Import-Csv", (("LiteralPath", "C:\\a.log"),)), ("Where-Object", (("Property", "x"), ("Match", "y"))),
     ("Group-Object", (("Property", "x"), ("NoElement", True)))),
]


def _pool(protocol: str = "2.3", apartment: int = ApartmentState.UNKNOWN) -> RunspacePool:
    wsman = WSMan("127.0.0.1", port=1, ssl=True, auth="ntlm", username="u", password="p")
    pool = RunspacePool(wsman, configuration_name="Microsoft.Exchange", apartment_state=apartment)
    pool.protocol_version = protocol
    return pool


def _begin_invoke_message(pool: RunspacePool, commands) -> bytes:
    """What pypsrp's own PowerShell.begin_invoke packs for these commands (its _invoke intercepted)."""
    ps = PowerShell(pool)
    for cmdlet, params in commands:
        ps.add_cmdlet(cmdlet)
        for name, value in params:
            ps.add_parameter(name, value)
    sent: list = []
    ps._invoke = sent.append
    ps.begin_invoke()
    assert isinstance(sent[0], CreatePipeline)
    return Message(2, pool.id, ps.id, sent[0], Serializer()).pack()[40:]


@pytest.mark.parametrize("protocol", ["2.1", "2.3"])
@pytest.mark.parametrize("commands", SHAPES)
def test_a_templated_create_pipeline_message_is_the_one_pypsrp_sends(commands, protocol):
    pool = _pool(protocol)
    templates = PipelineTemplates()
    for _ in range(2):   # the first call makes the template, the second fills it in
        message = templates.message(pool, commands)
        assert message is not None
        assert message.xml == _begin_invoke_message(pool, commands)


def test_values_outside_the_templates_are_left_to_pypsrp():
    pool = _pool()
    assert PipelineTemplates().message(pool, (("Get-ChildItem", (("Path", ["a", "b"]),)),)) is None
    pool.host = object()
    assert PipelineTemplates().message(pool, SHAPES[1]) is None


def test_one_shape_serves_every_value():
    pool = _pool()
    templates = PipelineTemplates()
    for name in ("EX001", "ex-02.contoso.local", "<&>"):
        commands = (("Get-OwaVirtualDirectory", (("Server", name),)),)
        assert templates.message(pool, commands).xml == _begin_invoke_message(pool, commands)
    assert len(templates._shapes) == 1


def test_message_pack_sends_a_prebuilt_message_as_it_is():
    pool = _pool()
    assert _keep_output_raw(pool)   # the session's serializer, which hands PrebuiltMessage through
    pid = "11111111-2222-3333-4444-555555555555"
    message = PipelineTemplates().message(pool, SHAPES[3])
    packed = Message(2, pool.id, pid, message, pool._fragmenter.serializer).pack()
    from pypsrp.messages import MessageType

    assert PrebuiltMessage.MESSAGE_TYPE == MessageType.CREATE_PIPELINE
    assert packed == (struct.pack("<II", 2, MessageType.CREATE_PIPELINE) + uuid.UUID(pool.id).bytes_le
                      + uuid.UUID(pid).bytes_le + message.xml)
    (fragment,) = pool._fragmenter.fragment(message, pool.id, pid)
    object_id, fragment_id, flags, length = struct.unpack(">QQBI", fragment[:21])
    assert (fragment_id, flags, length, fragment[21:]) == (0, 3, len(packed), packed)   # start and end, whole
    parsed = ET.fromstring(message.xml)
    assert [e.text for e in parsed.iter("S")][:3] == ["Get-User", "ResultSize", "Unlimited"]


# ------------------------------------------------------------------------------------------------ envelopes

class _Sent(Exception):
    pass


def _sent(wsman, call) -> bytes:
    messages: list[bytes] = []

    def capture(message, **kwargs):
        messages.append(message)
        raise _Sent

    wsman.transport.send = capture
    with pytest.raises(_Sent):
        call()
    return messages[0]


def _bodies():
    rsp = NAMESPACES["rsp"]
    command = ET.Element("{%s}CommandLine" % rsp, CommandId="ABC-1")
    ET.SubElement(command, "{%s}Command" % rsp).text = ""
    ET.SubElement(command, "{%s}Arguments" % rsp).text = "AAAA+/=="
    receive = ET.Element("{%s}Receive" % rsp)
    ET.SubElement(receive, "{%s}DesiredStream" % rsp, CommandId="ABC-1").text = "stdout"
    signal = ET.Element("{%s}Signal" % rsp, attrib={"CommandId": "ABC-1"})
    ET.SubElement(signal, "{%s}Code" % rsp).text = "powershell/signal/crtl_c"
    odd = ET.Element("{%s}Receive" % rsp, attrib={"A": "x&y<z>\"q\"\r\n\t"})
    ET.SubElement(odd, "{%s}DesiredStream" % rsp).text = "a & b < c > d"
    return [(WSManAction.COMMAND, command), (WSManAction.RECEIVE, receive), (WSManAction.SIGNAL, signal),
            (WSManAction.RECEIVE, odd), (WSManAction.SIGNAL, None)]


@pytest.mark.parametrize("timeout", [None, 20])
@pytest.mark.parametrize("case", range(5))
def test_the_written_envelopes_are_the_ones_pypsrp_writes(case, timeout, monkeypatch):
    fixed = uuid.UUID("0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9")
    monkeypatch.setattr(uuid, "uuid4", lambda: fixed)
    kwargs = dict(port=5986, path="PowerShell", ssl=True, auth="ntlm", username="u", password="p")
    lean, plain = lean_wsman("ex01.contoso.local", **kwargs), WSMan("ex01.contoso.local", **kwargs)
    plain.session_id = lean.session_id
    options, selectors = OptionSet(), SelectorSet()
    options.add_option("WINRS_SKIP_CMD_SHELL", "False")
    options.add_option("WSMAN_CMDSHELL_OPTION_KEEPALIVE", "True")
    selectors.add_option("ShellId", "SHELL-1")
    uri = "http://schemas.microsoft.com/powershell/Microsoft.Exchange"
    for option_set in (None, options):
        action, body = _bodies()[case]
        args = (action, uri, body, option_set, selectors, timeout)
        ours = _sent(lean, lambda args=args: lean.invoke(*args))
        theirs = _sent(plain, lambda args=args: plain.invoke(*args))
        assert ours == theirs
        assert b"0F1E2D3C-4B5A-4978-8695-A4B3C2D1E0F9" in ours


def test_other_actions_and_unknown_namespaces_go_through_pypsrp(monkeypatch):
    lean = lean_wsman("ex01", port=5986, ssl=True, auth="ntlm", username="u", password="p")
    calls = []
    monkeypatch.setattr(WSMan, "invoke", lambda self, *a, **k: calls.append(a[0]) or "pypsrp")
    assert lean.invoke(WSManAction.CREATE, "uri", ET.Element("x")) == "pypsrp"
    assert lean.invoke(WSManAction.RECEIVE, "uri", ET.Element("{urn:unknown}x")) == "pypsrp"
    assert calls == [WSManAction.CREATE, WSManAction.RECEIVE]


class _Transport:
    def __init__(self, *, wrap: bool = False, session=None):
        self.wrap_required = wrap
        self.session = session
        self.sent: list = []

    def send(self, message, **kwargs):
        self.sent.append(message)
        return b"pypsrp"


def test_requests_that_need_more_than_a_copy_go_through_pypsrp():
    import requests

    assert psrp_wire.send(_Transport(wrap=True, session=requests.Session()), b"m", 0, None) == b"pypsrp"
    assert psrp_wire.send(_Transport(), b"m", 0, None) == b"pypsrp"       # no session yet
    with_cookie = requests.Session()
    with_cookie.cookies.set("affinity", "ex01")                           # a load balancer's, for one
    assert psrp_wire.send(_Transport(session=with_cookie), b"m", 5, None) == b"pypsrp"


class _Adapter:
    """A connection adapter answering with canned responses."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.sent: list = []
        self.requests: list = []
        self.settings: list = []     # what requests would pass along: TLS verification, client certificate, timeouts

    def send(self, request, **kwargs):
        import io

        import requests
        from urllib3 import HTTPResponse

        status, headers, body = self.answers.pop(0)
        self.sent.append(request.body)
        self.requests.append(request)
        self.settings.append(kwargs)
        response = requests.Response()
        response.status_code = status
        response.headers = requests.structures.CaseInsensitiveDict(headers)
        response.raw = HTTPResponse(body=io.BytesIO(body), headers=headers, status=status, preload_content=False)
        # what requests reads cookies from: http.client's own response, as urllib3 keeps it
        lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items()) + "\r\n"
        response.raw._original_response = types.SimpleNamespace(
            msg=http.client.parse_headers(io.BytesIO(lines.encode("latin-1"))))
        response._content = body
        response.request = request
        response.url = request.url
        return response


def _session_with(adapter, *, auth: bool = True):
    """pypsrp's own HTTPS transport and session (NTLM auth, its headers), the connections answered by ``adapter``;
    ``auth=False``: a session without the auth hook, so a 401 is the answer rather than a sign-in."""
    import requests

    transport = WSMan("ex01.contoso.local", port=443, path="PowerShell", ssl=True, auth="ntlm", username="u",
                      password="p", connection_timeout=30, read_timeout=30).transport
    session = transport._build_session() if auth else requests.Session()
    session.trust_env = False
    session.mount("https://", adapter)
    transport.session = session
    return transport


def test_a_request_is_a_copy_of_one_prepared_and_goes_through_session_send():
    adapter = _Adapter((200, {}, b"answer"), (200, {}, b"again"))
    transport = _session_with(adapter)
    assert psrp_wire.send(transport, b"first", 0, None) == b"answer"
    assert psrp_wire.send(transport, b"second", 0, None) == b"again"
    assert adapter.sent == [b"first", b"second"]
    first, second = adapter.requests
    assert first is not second and first.headers == {**second.headers, "Content-Length": "5"}
    assert first.headers["Content-Type"] == "application/soap+xml;charset=UTF-8"
    assert first.headers["Accept-Encoding"] == "identity" and first.url == transport.endpoint
    # what Session.send passes: certificate verification on (the session's CA bundle), the session's timeouts
    verify = adapter.settings[0]["verify"]
    assert verify not in (False, None) and verify == transport.session.verify
    assert adapter.settings[0]["timeout"] == (30, 30)


def test_a_request_carries_what_pypsrps_own_path_sends():
    ours, theirs = _Adapter((200, {}, b"answer")), _Adapter((200, {}, b"answer"))
    psrp_wire.send(_session_with(ours), b"<s:Envelope/>", 0, 20)
    _session_with(theirs).send(b"<s:Envelope/>", timeout=20)
    (mine,), (pypsrps,) = ours.requests, theirs.requests
    assert (mine.method, mine.url, mine.body, dict(mine.headers)) == \
        (pypsrps.method, pypsrps.url, pypsrps.body, dict(pypsrps.headers))
    assert ours.settings == theirs.settings


def test_a_sessions_ca_file_reaches_the_adapter():
    adapter = _Adapter((200, {}, b"answer"))
    transport = _session_with(adapter)
    transport.session.verify = "/etc/hma-check/contoso-ca.pem"
    assert psrp_wire.send(transport, b"m", 0, 12) == b"answer"
    assert adapter.settings[0]["verify"] == "/etc/hma-check/contoso-ca.pem" and adapter.settings[0]["timeout"] == 12


def test_a_cookie_the_server_sets_is_kept_and_sent_back():
    adapter = _Adapter((200, {"Set-Cookie": "X-BackEndCookie=ex01; path=/"}, b"answer"), (200, {}, b"again"))
    transport = _session_with(adapter)
    assert psrp_wire.send(transport, b"first", 0, None) == b"answer"
    assert transport.session.cookies.get("X-BackEndCookie") == "ex01"
    assert psrp_wire.send(transport, b"second", 0, None) == b"again"
    assert adapter.requests[1].headers["Cookie"] == "X-BackEndCookie=ex01"


@pytest.mark.parametrize("status,error", [(500, "WinRMTransportError"), (401, "AuthenticationError")])
def test_an_http_error_is_the_one_pypsrp_raises(status, error):
    body = b"<html>boom</html>" if status == 500 else b""
    raised = []
    for sender in (lambda t: psrp_wire.send(t, b"m", 0, None), lambda t: t.send(b"m")):
        transport = _session_with(_Adapter((status, {}, body)), auth=False)
        with pytest.raises(Exception) as caught:
            sender(transport)
        raised.append((type(caught.value).__name__, str(caught.value), getattr(caught.value, "code", None)))
    assert raised[0] == raised[1] and raised[0][0] == error


def test_a_connection_the_server_dropped_is_signed_in_again_by_requests_auth_hook():
    """Against the lab over loopback: the lab, as IIS, signs in each TCP connection. Once the session's connection
    is gone, the next Command goes out on a new one, is answered 401, and requests' Session.send runs the auth
    hook, which signs the new connection in and sends the request again: the call succeeds."""
    from hma_check.collect.psrp_client import RemoteSession
    from hma_lab.runtime import Lab
    from tests.support.lab import exchange_settings

    with Lab("ready") as lab:
        session = RemoteSession(exchange_settings(lab.scan_config()), lab.credentials.password).open()
        try:
            assert session.run("Get-AcceptedDomain", (), 30)
            http = session._wsman.transport.session
            signed_in = dict(http.auth.contexts)              # pypsrp's security context per host
            http.close()    # every pooled connection closed, as a server that drops them would
            assert session.run("Get-AcceptedDomain", (), 30)
            assert http.auth.contexts.keys() == signed_in.keys()
            assert all(http.auth.contexts[host] is not context for host, context in signed_in.items())   # anew
        finally:
            session.close()
