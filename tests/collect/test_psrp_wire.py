"""The per-call wire shortcuts (hma_check/collect/psrp_wire.py) send the bytes pypsrp itself would send.

These pin the pypsrp behaviour the shortcuts copy (pyproject: pypsrp>=0.9.1,<1.0): a pypsrp release that changes its
CreatePipeline message, its envelopes or the way Message.pack treats bytes fails here, not in a customer's scan.
"""

from __future__ import annotations

import http.client
import socket
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


def test_option_and_selector_sets_written_once_are_what_pypsrp_packs(monkeypatch):
    """A set's text is kept by content (LeanWSMan._written_set): a second envelope with an equal set, a set that
    differs in one value or attribute, one whose values are not strings and a subclass all give pypsrp's bytes."""
    fixed = uuid.UUID("0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9")
    monkeypatch.setattr(uuid, "uuid4", lambda: fixed)
    kwargs = dict(port=5986, path="PowerShell", ssl=True, auth="ntlm", username="u", password="p")
    lean, plain = lean_wsman("ex01", **kwargs), WSMan("ex01", **kwargs)
    plain.session_id = lean.session_id

    class Odd(SelectorSet):
        def pack(self):
            element = super().pack()
            element.set("Odd", "yes")
            return element

    def made(kind, *values):
        made_set = kind()
        for value in values:
            made_set.add_option(*value)
        return made_set
    sets = [made(OptionSet, ("WSMAN_CMDSHELL_OPTION_KEEPALIVE", "True")),
            made(OptionSet, ("WSMAN_CMDSHELL_OPTION_KEEPALIVE", "True")),
            made(OptionSet, ("WSMAN_CMDSHELL_OPTION_KEEPALIVE", "False")),
            made(OptionSet, ("A", "1", {"MustComply": "true"}), ("B", "x&<y>\"")),
            made(OptionSet, ("A", "1", {"MustComply": "false"}), ("B", "x&<y>\"")),
            made(OptionSet, ("A", 1)), made(SelectorSet, ("ShellId", "SHELL-1")), made(SelectorSet, ("ShellId", "S2")),
            made(Odd, ("ShellId", "SHELL-1")), made(SelectorSet, ("ShellId", "SHELL-1"))]
    uri = "http://schemas.microsoft.com/powershell/Microsoft.Exchange"
    for wsman_set in sets:
        selectors = wsman_set if isinstance(wsman_set, SelectorSet) else sets[6]
        options = wsman_set if isinstance(wsman_set, OptionSet) else None
        args = (WSManAction.SIGNAL, uri, None, options, selectors, 20)
        assert _sent(lean, lambda args=args: lean.invoke(*args)) == _sent(plain, lambda args=args: plain.invoke(*args))


def test_a_path_found_step_by_step_is_the_one_elementpath_finds():
    root = ET.fromstring('<s:E xmlns:s="urn:s" xmlns:r="urn:r"><s:H /><s:H><r:R><r:C n="1" /></r:R><r:R><r:C n="2">'
                         '<r:X>3</r:X></r:C></r:R></s:H><r:R><r:C n="4"><r:X>5</r:X></r:C></r:R></s:E>')
    namespaces = {"s": "urn:s", "r": "urn:r"}
    for path in ("s:H/r:R/r:C", "s:H/r:R/r:C/r:X", "r:R/r:C/r:X", "s:H", "s:H/r:Z", "r:R"):
        steps = tuple("{urn:%s}%s" % tuple(step.split(":")) for step in path.split("/"))
        assert psrp_wire._first(root, steps) is root.find(path, namespaces)


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
            msg=http.client.parse_headers(io.BytesIO(lines.encode("latin-1"))), isclosed=lambda: True)
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
    # the same settings but for when the body is read: in one read right after, instead of 10 KB at a time inside
    (mine_settings,), (their_settings,) = ours.settings, theirs.settings
    assert mine_settings.pop("stream") is True and their_settings.pop("stream") is False
    assert mine_settings == their_settings


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
            manager = http.get_adapter(session._wsman.transport.endpoint).poolmanager
            for pool in list(manager.pools._container.values()):    # each pooled connection ended, as by the server
                pooled = [pool.pool.get_nowait() for _ in range(pool.pool.qsize())]
                for conn in pooled:
                    if conn is not None and conn.sock is not None:
                        conn.sock.shutdown(socket.SHUT_RDWR)
                    pool.pool.put_nowait(conn)
            assert session.run("Get-AcceptedDomain", (), 30)
            assert http.auth.contexts.keys() == signed_in.keys()
            assert all(http.auth.contexts[host] is not context for host, context in signed_in.items())   # anew
        finally:
            session.close()


# ------------------------------------------------------------------------------------------------ answers

def _tree(element) -> tuple:
    return (element.tag, dict(element.attrib), element.text, element.tail, [_tree(child) for child in element])


_B64 = "QUJD" * 200      # 800 base64 characters: long enough to be cut
_RECEIVE = ('<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" '
            'xmlns:rsp="http://schemas.microsoft.com/wbem/wsman/1/windows/shell" '
            'xmlns:wsa="http://schemas.xmlsoap.org/ws/2004/08/addressing"><s:Header>'
            '<wsa:RelatesTo>uuid:0F1E2D3C-4B5A-4978-8695-A4B3C2D1E0F9</wsa:RelatesTo></s:Header><s:Body>'
            '<rsp:ReceiveResponse>{streams}<rsp:CommandState CommandId="C" State="http://schemas.microsoft.com/wbem/'
            'wsman/1/windows/shell/CommandState/Done" /></rsp:ReceiveResponse></s:Body></s:Envelope>')
ANSWERS = {
    "two streams": _RECEIVE.format(streams=f'<rsp:Stream Name="stdout" CommandId="C">{_B64}</rsp:Stream>' * 2),
    "other prefix": _RECEIVE.replace("rsp:", "w:").replace("xmlns:rsp", "xmlns:w").format(
        streams=f'<w:Stream Name="stdout">{_B64}</w:Stream>'),
    "default namespace": _RECEIVE.format(
        streams=f'<Stream xmlns="http://schemas.microsoft.com/wbem/wsman/1/windows/shell" Name="stdout">{_B64}</Stream>'),
    "single quotes, spaces": _RECEIVE.format(streams=f"<rsp:Stream  Name = 'stdout'\n CommandId='C' >{_B64}</rsp:Stream >"),
    "an attribute with >": _RECEIVE.format(streams=f'<rsp:Stream Name="a>b">{_B64}</rsp:Stream>'),
    "an entity in an attribute": _RECEIVE.format(streams=f'<rsp:Stream Name="a&amp;b">{_B64}</rsp:Stream>'),
    "short and empty streams": _RECEIVE.format(streams='<rsp:Stream Name="stdout">QUJD</rsp:Stream>'
                                                       '<rsp:Stream Name="stdout"></rsp:Stream><rsp:Stream />'),
    "whitespace in the text": _RECEIVE.format(streams=f'<rsp:Stream Name="stdout">{_B64}\r\n{_B64}</rsp:Stream>'),
    "an entity in the text": _RECEIVE.format(streams=f'<rsp:Stream Name="stdout">{_B64}&#65;{_B64}</rsp:Stream>'),
    "a child": _RECEIVE.format(streams=f'<rsp:Stream Name="stdout">{_B64}<x/>{_B64}</rsp:Stream>'),
    "a comment": _RECEIVE.format(streams=f'<!-- <rsp:Stream>{_B64}</rsp:Stream> --><rsp:Stream>{_B64}</rsp:Stream>'),
    "CDATA": _RECEIVE.format(streams=f'<rsp:Stream><![CDATA[{_B64}]]></rsp:Stream>'),
    "a declaration": '<?xml version="1.0" encoding="utf-8"?>' + _RECEIVE.format(streams=f'<rsp:Stream>{_B64}</rsp:Stream>'),
    "Stream in the text of another element": _RECEIVE.format(streams=f'<rsp:Other>Stream{_B64}</rsp:Other>'),
    "Stream elsewhere in a name": _RECEIVE.format(streams=f'<rsp:StreamX>{_B64}</rsp:StreamX><rsp:MyStream>{_B64}</rsp:MyStream>'),
    "Stream in the base64": _RECEIVE.format(streams=f'<rsp:Stream>{_B64}Stream{_B64}</rsp:Stream><rsp:Stream>{_B64}</rsp:Stream>'),
    "a tail after the stream": _RECEIVE.format(streams=f'<rsp:Stream>{_B64}</rsp:Stream>tail text'),
    "UTF-8 elsewhere": _RECEIVE.format(streams=f'<rsp:Stream Name="\u00e9t\u00e9">{_B64}</rsp:Stream><a>\u00e9</a>'),
    "UTF-16": _RECEIVE.format(streams=f'<rsp:Stream>{_B64}</rsp:Stream>'),
}
MALFORMED = {
    "mismatched end tag": _RECEIVE.format(streams=f'<rsp:Stream>{_B64}</rsp:Strean>'),
    "unclosed": _RECEIVE.format(streams=f'<rsp:Stream>{_B64}')[:-60],
    "junk after the root": _RECEIVE.format(streams="") + f"<rsp:Stream>{_B64}</rsp:Stream>",
    "an undeclared prefix": _RECEIVE.format(streams=f'<q:Stream>{_B64}</q:Stream>'),
    "a control character": _RECEIVE.format(streams=f'<rsp:Stream>{_B64}\x01</rsp:Stream>'),
    "a lone ampersand": _RECEIVE.format(streams=f'<rsp:Stream Name="a&b">{_B64}</rsp:Stream>'),
    "invalid UTF-8": _RECEIVE.format(streams=f'<rsp:Stream>{_B64}</rsp:Stream>').encode() + b"\xff",
    "empty": b"",
}


@pytest.mark.parametrize("name", ANSWERS)
def test_an_answer_parses_to_the_tree_elementtree_gives(name):
    import base64

    text = ANSWERS[name]
    data = text.encode("utf-16") if name == "UTF-16" else text.encode("utf-8")
    tree, streams = psrp_wire.parse_answer(data)
    assert _tree(tree) == _tree(ET.fromstring(data))
    for element, decoded in streams.items():   # each stream's bytes are what pypsrp decodes from its text
        assert element.tag.endswith("}Stream") and decoded == base64.b64decode(element.text.encode("utf-8"))
    cut = {"two streams": 2, "other prefix": 1, "default namespace": 1, "single quotes, spaces": 1,
           "an attribute with >": 0, "an entity in an attribute": 0, "Stream in the base64": 1,
           "a tail after the stream": 1, "UTF-8 elsewhere": 1}
    assert len(streams) == cut.get(name, 0)


@pytest.mark.parametrize("padding", ["", "=", "==", "x", "===", "A=B=", " "])
def test_only_canonical_base64_is_decoded_here(padding):
    import base64
    import binascii

    text = ("QUJD" * 100)[:-len(padding) or None] + padding if padding else "QUJD" * 100
    if padding in ("=", "=="):
        text = "QUJD" * 99 + ("QUI=" if padding == "=" else "QQ==")
    decoded = psrp_wire._canonical_base64(text.encode())
    try:
        strict = base64.b64decode(text, validate=True)
    except binascii.Error:
        strict = None
    assert decoded == strict
    if decoded is not None:
        assert decoded == base64.b64decode(text.encode())   # what pypsrp decodes


def test_receive_is_pypsrps_winrs_receive(monkeypatch):
    """Each stream's bytes, the command state and the exit code as pypsrp's own WinRS.receive gives them, for the
    same answer, and the same request sent."""
    from pypsrp.shell import WinRS

    answer = _RECEIVE.format(streams=f'<rsp:Stream Name="stdout" CommandId="C">{_B64}</rsp:Stream>'
                                     '<rsp:Stream Name="stdout" CommandId="C">QUJD</rsp:Stream>'
                                     f'<rsp:Stream Name="stderr" CommandId="C">{_B64[:-4]}QQ==</rsp:Stream>')
    answer = answer.replace(' /></rsp:ReceiveResponse>', '><rsp:ExitCode>3</rsp:ExitCode></rsp:CommandState>'
                                                         '</rsp:ReceiveResponse>').encode()
    results, requests_sent = [], []
    for lean in (True, False):
        monkeypatch.setattr(uuid, "uuid4", lambda: uuid.UUID("0F1E2D3C-4B5A-4978-8695-A4B3C2D1E0F9"))
        wsman = lean_wsman("ex01", port=5986, ssl=True, auth="ntlm", username="u", password="p")
        monkeypatch.setattr(psrp_wire, "send", lambda transport, message, *a: requests_sent.append(message) or answer)
        shell = WinRS(wsman, "http://schemas.microsoft.com/powershell/Microsoft.Exchange")
        shell._selector_set = SelectorSet()
        shell._selector_set.add_option("ShellId", "SHELL-1")
        kwargs = dict(stream="stdout stderr", command_id="C", timeout=20)
        results.append(psrp_wire.receive(shell, **kwargs) if lean else shell.receive(**kwargs))
    assert results[0] == results[1] and results[0][1] == 3 and len(results[0][2]["stdout"]) == 603
    assert requests_sent[0] == requests_sent[1]


@pytest.mark.parametrize("name", MALFORMED)
def test_a_malformed_answer_fails_as_elementtree_fails(name):
    data = MALFORMED[name] if isinstance(MALFORMED[name], bytes) else MALFORMED[name].encode("utf-8")
    with pytest.raises(ET.ParseError) as theirs:
        ET.fromstring(data)
    with pytest.raises(ET.ParseError) as ours:
        psrp_wire.parse_answer(data)
    assert (str(ours.value), ours.value.position) == (str(theirs.value), theirs.value.position)


def test_the_streams_of_a_real_answer_are_cut_out_before_parsing(monkeypatch):
    """What the lab (as Exchange) answers to Get-OwaVirtualDirectory: every stream's text is cut, the rest parsed."""
    from hma_check.collect.psrp_client import RemoteSession
    from hma_lab.runtime import Lab
    from tests.support.lab import exchange_settings

    answers: list[bytes] = []
    real_send = psrp_wire.send
    monkeypatch.setattr(psrp_wire, "send", lambda *args: answers.append(real_send(*args)) or answers[-1])
    with Lab("ready") as lab:
        session = RemoteSession(exchange_settings(lab.scan_config()), lab.credentials.password).open()
        try:
            assert session._pool.shell.receive.func is psrp_wire.receive   # the session receives through it
            objects = session.run("Get-OwaVirtualDirectory", (), 30)
        finally:
            session.close()
    assert objects and objects[0].get("Name", "").startswith("owa")
    receive = max(answers, key=len)
    assert len(receive) > 100_000
    parsed: list[bytes] = []
    real_fromstring = ET.fromstring
    monkeypatch.setattr(ET, "fromstring", lambda data: parsed.append(data) or real_fromstring(data))
    tree, streams = psrp_wire.parse_answer(receive)
    assert len(parsed) == 1 and len(parsed[0]) < 2000    # only the skeleton went through the parser
    assert _tree(tree) == _tree(real_fromstring(receive)) and len(streams) >= 2


@pytest.mark.parametrize("filler", ["BA", "Stream", "<BA", "<Stream x=\"1\""])
def test_a_text_full_of_tag_names_is_read_in_one_pass(filler):
    """The cutters looked back and forward from every 'BA' or 'Stream' they met: a hostile answer of a few MB full
    of them took minutes (quadratic). They now search for whole start tags; the trees are ElementTree's still."""
    from hma_check.collect import clixml
    from tests.support.hostile import deadline

    text = filler * (4_000_000 // len(filler))
    answer = f"<a><b>{text.replace('<', '&lt;')}</b><rsp:Stream xmlns:rsp='urn:x'>{'QUJD' * 100}</rsp:Stream></a>"
    with deadline(20):       # minutes before; milliseconds now
        root, streams = psrp_wire.parse_answer(answer.encode())
        cut = clixml._cut_byte_arrays(f"<Obj><S>{text.replace('<', '&lt;')}</S><BA>{'QUJD' * 400}</BA></Obj>")
    assert ET.tostring(root) == ET.tostring(ET.fromstring(answer.encode()))
    assert list(streams.values()) == [b"ABC" * 100]
    assert cut is not None and cut[1] == [(2, "QUJD" * 400)]     # Obj, S, BA: the third element
