"""The per-call wire work of a remote PowerShell session, done once per shape instead of once per call.

Each cmdlet call costs three WSMan round trips (Command, Receive, Signal terminate). pypsrp builds every one from
scratch: the CreatePipeline message by deep-copying the commands into an object tree serialised through ElementTree,
each SOAP envelope by building and serialising an ElementTree, each HTTP request by merging the session's settings
again. Together that was two thirds of the collector's CPU time per call, for messages that differ from one call
to the next in a server name and a few identifiers. Here:

- ``PipelineTemplates``: pypsrp serialises a pipeline's shape once, with markers for its string values; later calls
  fill in the values, escaped as pypsrp escapes them. The bytes are the ones pypsrp would send;
- ``lean_wsman``: a pypsrp WSMan whose Command, Receive and Signal envelopes are written as text (the header once
  per action, the small body elements by a writer that emits what ElementTree would), and whose requests are copies
  of one prepared per session, sent through requests' Session.send as pypsrp sends them until requests has signed
  a connection in, then written straight to that connection (psrp_http). Every other action, and every request
  that needs more (message encryption, a session holding a cookie), goes through pypsrp unchanged;
- ``parse_answer`` and ``receive`` (``lean_receive``): a Receive answer read without the XML parser going over its
  streams' base64, each stream decoded once (the tree and the errors are ElementTree's, the result pypsrp's).

tests/collect/test_psrp_wire.py compares the bytes, trees and errors with pypsrp's and ElementTree's own for the
pinned pypsrp (>=0.9.1,<1.0).
"""

from __future__ import annotations

import re
import sys
import threading
import time
import uuid
from typing import Any

from hma_check.collect.psrp_http import KeptConnection
from hma_check.util.xml_escape import xml_attribute, xml_text

Commands = tuple[tuple[str, tuple[tuple[str, Any], ...]], ...]


class PrebuiltMessage:
    """A PSRP message whose XML is already made; the session's serializer hands it to pypsrp's Message as is."""

    __slots__ = ("xml",)
    MESSAGE_TYPE = 0x00021006   # pypsrp.messages.MessageType.CREATE_PIPELINE

    def __init__(self, xml: bytes) -> None:
        self.xml = xml


class PipelineTemplates:
    """CreatePipeline messages for cmdlet pipelines, made once per shape by pypsrp itself, then filled in.

    A shape is the cmdlets, each parameter's name, every value but non-empty strings, the protocol version and the
    apartment state. The first time one is seen, pypsrp serialises it with a marker in place of each string value;
    later calls put each value, escaped as pypsrp escapes it (each distinct value is serialised by pypsrp once), in
    its marker's place. Anything else (a list, a pool with a host) is left to pypsrp (``message`` returns None).
    """

    _MARK = "hmaValue{}Xq"
    _LIMIT = 4096   # distinct shapes or values kept; past that a cache starts over

    def __init__(self) -> None:
        self._shapes: dict[Any, list[bytes] | None] = {}
        self._escaped: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def message(self, pool: Any, commands: Commands) -> PrebuiltMessage | None:
        if getattr(pool, "host", None) is not None:
            return None
        strings: list[str] = []
        shape: list[Any] = [pool.protocol_version, pool.apartment_state]
        for cmdlet, params in commands:
            shape.append(cmdlet)
            for name, value in params:
                if type(value) is str and value:
                    strings.append(value)
                    shape.append((name,))
                elif value is None or type(value) in (bool, int, str):   # an empty string as it is
                    shape.append((name, type(value).__name__, value))
                else:
                    return None
        key = tuple(shape)
        try:   # one read: another thread may clear the dict between a test and a read
            parts = self._shapes[key]
        except KeyError:
            parts = self._made(pool, commands)
            with self._lock:
                if len(self._shapes) >= self._LIMIT:
                    self._shapes.clear()
                self._shapes[key] = parts
        if parts is None:
            return None
        pieces = [parts[0]]
        for value, part in zip(strings, parts[1:], strict=True):
            pieces.append(self._escape(value))
            pieces.append(part)
        return PrebuiltMessage(b"".join(pieces))

    def _made(self, pool: Any, commands: Commands) -> list[bytes] | None:
        """pypsrp's serialisation of the shape, split at the markers (None when a marker is not there exactly once)."""
        marked = []
        count = 0
        for cmdlet, params in commands:
            new_params = []
            for name, value in params:
                if type(value) is str and value:
                    value = self._MARK.format(count)
                    count += 1
                new_params.append((name, value))
            marked.append((cmdlet, tuple(new_params)))
        text = pypsrp_create_pipeline(pool, tuple(marked))
        parts = []
        for index in range(count):
            mark = self._MARK.format(index).encode()
            if text.count(mark) != 1:
                return None
            head, text = text.split(mark)
            parts.append(head)
        parts.append(text)
        return parts

    def _escape(self, value: str) -> bytes:
        escaped = self._escaped.get(value)
        if escaped is None:
            import xml.etree.ElementTree as ET

            from pypsrp.serializer import Serializer

            element = ET.tostring(_element(Serializer().serialize(value)), encoding="utf-8", method="xml")
            if not (element.startswith(b"<S>") and element.endswith(b"</S>")):
                raise ValueError(f"pypsrp serialised a string as {element[:40]!r}")
            escaped = element[3:-4]
            with self._lock:
                if len(self._escaped) >= self._LIMIT:
                    self._escaped.clear()
                self._escaped[value] = escaped
        return escaped


def pypsrp_create_pipeline(pool: Any, commands: Commands) -> bytes:
    """The XML of the CreatePipeline message pypsrp's ``PowerShell.begin_invoke()`` (no input, no history, the pool's
    apartment state, invocation info on the streams) sends for these cmdlets, as ``Message.pack`` serialises it."""
    import xml.etree.ElementTree as ET

    from pypsrp.complex_objects import ApartmentState, HostInfo, Pipeline, RemoteStreamOptions
    from pypsrp.messages import CreatePipeline
    from pypsrp.powershell import PowerShell
    from pypsrp.serializer import Serializer

    ps = PowerShell(pool)
    for cmdlet, params in commands:
        ps.add_cmdlet(cmdlet)
        for name, value in params:
            ps.add_parameter(name, value)
    pipeline = Pipeline(is_nested=False, cmds=ps.commands, history=None, redirect_err_to_out=False)
    message = CreatePipeline(True, ApartmentState(value=pool.apartment_state),
                             RemoteStreamOptions(value=RemoteStreamOptions.ADD_INVOCATION_INFO), False,
                             HostInfo(host=pool.host), pipeline, False)
    return ET.tostring(_element(Serializer().serialize(message)), encoding="utf-8", method="xml")


def _element(element: Any) -> Any:
    if element is None:
        raise ValueError("pypsrp serialised nothing")
    return element


# ------------------------------------------------------------------------------------------------ envelopes

class _Unwritable(Exception):
    """An element the envelope writer does not handle (a namespace pypsrp does not register): ElementTree writes it."""


def _qname(name: str, prefixes: dict[str, str], used: set[str]) -> str:
    if name[:1] != "{":
        return name
    uri, local = name[1:].split("}", 1)
    prefix = prefixes.get(uri)
    if prefix is None:
        raise _Unwritable(uri)
    if prefix != "xml":
        used.add(prefix)
    return f"{prefix}:{local}"


def write_element(element: Any, prefixes: dict[str, str], used: set[str], out: list[str]) -> None:
    """``element`` as ElementTree's serialiser writes it inside a document whose root declares ``used`` (pypsrp
    writes its envelopes with ElementTree; xml_text and xml_attribute escape as it does)."""
    tag = _qname(element.tag, prefixes, used)
    out.append("<" + tag)
    for key, value in element.attrib.items():
        out.append(f' {_qname(key, prefixes, used)}="{xml_attribute(value)}"')
    if element.text or len(element):
        out.append(">")
        if element.text:
            out.append(xml_text(element.text))
        for child in element:
            write_element(child, prefixes, used, out)
        out.append(f"</{tag}>")
    else:
        out.append(" />")
    if element.tail:
        out.append(xml_text(element.tail))


# ------------------------------------------------------------------------------------------------ answers

# A Stream element's start tag, whole: an optional prefix, attributes with plain quoted values, nothing else.
# (no "<", "&" or ">" in a value; searched for, never anchored by hand around a text match: a scan that looked back
# and forward from every "Stream" was quadratic on a hostile answer full of them)
_STREAM_TAG = re.compile(rb"""<(?:[A-Za-z_][\w.-]*:)?Stream(?:\s+[A-Za-z_][\w.:-]*\s*=\s*(?:"[^"<&>]*"|'[^'<&>]*'))*\s*>""")
_SMALLEST_CUT = 256   # shorter texts are left to the parser: cutting them saves less than it costs


def parse_answer(data: bytes) -> tuple[Any, dict[Any, bytes]]:
    """``ET.fromstring(data)`` for a Receive answer without running the XML parser over its streams' base64, and
    the streams' bytes, decoded once (element -> bytes).

    Nearly all of a Receive answer is the base64 text of its Stream elements (40 to 160 KB a call), which expat
    scans twice (tokens, then line and column) before pypsrp decodes it. Here each such text is decoded and cut
    out, the rest (a few hundred bytes) is parsed, and the texts are put back into their elements, so the tree is
    ElementTree's. A text is cut only where nothing can differ: it follows a whole <...Stream ...> start tag and
    runs to the next "</", it is canonical base64 (which XML passes through unchanged, and which is decoded here
    exactly as pypsrp's b64decode decodes it), and what is left holds no comment, CDATA section, processing
    instruction or DTD, so every "<" in it is a tag. Each element is found again by its place in document order
    (the start tags before it) and must be a Stream without text or children. Anything else, and any parse error,
    is ``ET.fromstring(data)`` itself, so the tree and every error are ElementTree's own."""
    import xml.etree.ElementTree as ET

    cuts: list[tuple[int, int, int, bytes]] = []   # (element's place in document order, text start, end, bytes)
    position = counted = tags = 0
    while (tag := _STREAM_TAG.search(data, position)) is not None:
        start, close = tag.start(), tag.end() - 1
        end = data.find(b"<", close)   # one byte: memchr, several times faster than looking for "</"
        if end - close - 1 >= _SMALLEST_CUT and data[end + 1:end + 2] == b"/":
            decoded = _canonical_base64(data[close + 1:end])
            if decoded is not None:
                # start tags before this one: every "<" but end tags (a text cut holds none)
                tags += data.count(b"<", counted, start) - data.count(b"</", counted, start)
                cuts.append((tags, close + 1, end, decoded))
                tags += 1
                position = counted = end
                continue
        position = tag.end()
    if not cuts:
        return ET.fromstring(data), {}
    pieces, last = [], 0
    for _, begin, end, _ in cuts:
        pieces.append(data[last:begin])
        last = end
    pieces.append(data[last:])
    skeleton = b"".join(pieces)
    if b"<!" in skeleton or b"<?" in skeleton:
        return ET.fromstring(data), {}
    try:
        root = ET.fromstring(skeleton)
    except ET.ParseError:
        return ET.fromstring(data), {}
    elements = list(root.iter())
    streams: dict[Any, bytes] = {}
    for index, begin, end, decoded in cuts:
        element = elements[index] if index < len(elements) else None
        if element is None or element.tag.rpartition("}")[2] != "Stream" or element.text is not None or len(element):
            return ET.fromstring(data), {}
        element.text = data[begin:end].decode("ascii")
        streams[element] = decoded
    return root, streams


_BASE64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _canonical_base64(text: bytes) -> bytes | None:
    """The bytes of ``text`` when it is canonical base64 (the alphabet only, padded at the end to a multiple of
    four): then pypsrp's non-validating b64decode gives the same bytes. None for anything else."""
    import binascii

    if sys.version_info >= (3, 11):
        try:
            return binascii.a2b_base64(text, strict_mode=True)   # one pass: checks while it decodes
        except binascii.Error:
            return None
    rest = text.translate(None, _BASE64)
    if len(text) % 4 or not (not rest or (rest in (b"=", b"==") and text.endswith(rest))):
        return None
    return binascii.a2b_base64(text)


def receive(shell: Any, stream: str = "stdout stderr", command_id: str | None = None,
            timeout: int | None = None) -> tuple[str, int | None, dict[str, bytes]]:
    """pypsrp's ``WinRS.receive`` (the same request, the same result and errors), taking each stream's bytes from
    the lean WSMan's ``parse_answer`` instead of decoding the base64 again."""
    import base64
    import xml.etree.ElementTree as ET

    from pypsrp.shell import CommandState
    from pypsrp.wsman import NAMESPACES, OptionSet

    rsp = NAMESPACES["rsp"]
    receive_element = ET.Element("{%s}Receive" % rsp)
    stream_xml = ET.SubElement(receive_element, "{%s}DesiredStream" % rsp)
    stream_xml.text = stream
    if command_id is not None:
        stream_xml.attrib["CommandId"] = command_id
    options = OptionSet()
    options.add_option("WSMAN_CMDSHELL_OPTION_KEEPALIVE", str(True))
    response = shell.wsman.receive(shell.resource_uri, receive_element, option_set=options,
                                   selector_set=shell._selector_set, timeout=timeout)
    decoded = shell.wsman.__dict__.pop("_hma_streams", {})
    # pypsrp's finds, written in Clark notation step by step (ElementTree finds each step in C; a path with a
    # namespace map goes through ElementPath's Python, sorting the map for its cache key, on every call)
    response_et = f"{{{rsp}}}ReceiveResponse"
    command_state_et = _first(response, (response_et, f"{{{rsp}}}CommandState"))
    command_state = CommandState.PENDING
    if command_state_et is not None:
        command_state = command_state_et.attrib["State"]
    rc_et = _first(response, (response_et, f"{{{rsp}}}CommandState", f"{{{rsp}}}ExitCode"))
    rc = None
    if rc_et is not None:
        rc = int(rc_et.text or "0")
    buffer = {name: b"" for name in stream.split()}
    for s in (found for parent in response.findall(response_et) for found in parent.findall(f"{{{rsp}}}Stream")):
        if s.text is None:
            continue
        value = decoded.get(s)
        if value is None:
            value = base64.b64decode(s.text.encode("utf-8"))
        buffer[s.attrib["Name"]] += value
    return command_state, rc, buffer


def _first(element: Any, steps: tuple[str, ...]) -> Any:
    """``element.find("a/b/c")`` for names in Clark notation: the first match in document order, or None. The lab
    has one of the same shape (hma_lab.wsman), on purpose not shared: the lab never borrows the product's code."""
    first, rest = steps[0], steps[1:]
    if not rest:
        return element.find(first)
    for child in element.findall(first):
        found = _first(child, rest)
        if found is not None:
            return found
    return None


def lean_receive(pool: Any) -> bool:
    """Give the pool's shell ``receive`` above when its WSMan is a lean one (``lean_wsman``)."""
    import functools

    shell = getattr(pool, "shell", None)
    if _WSMAN_CLASS is None or shell is None or type(getattr(shell, "wsman", None)) is not _WSMAN_CLASS:
        return False
    shell.receive = functools.partial(receive, shell)
    return True


_WSMAN_CLASS: Any = None
_WSMAN_LOCK = threading.Lock()


def lean_wsman(*args: Any, **kwargs: Any) -> Any:
    """A pypsrp ``WSMan(*args, **kwargs)`` that writes its per-call envelopes and requests cheaply (see the module)."""
    global _WSMAN_CLASS
    with _WSMAN_LOCK:
        if _WSMAN_CLASS is None:
            _WSMAN_CLASS = _make_wsman_class()
    return _WSMAN_CLASS(*args, **kwargs)


def _make_wsman_class() -> Any:
    import xml.etree.ElementTree as ET

    from pypsrp.exceptions import WinRMError, WinRMTransportError
    from pypsrp.wsman import NAMESPACES, WSMan, WSManAction

    prefixes = {uri: prefix for prefix, uri in NAMESPACES.items()}
    prefixes["http://www.w3.org/XML/1998/namespace"] = "xml"
    lean_actions = frozenset({WSManAction.COMMAND, WSManAction.RECEIVE, WSManAction.SIGNAL})
    header_prefixes = {"s", "wsa", "wsman", "wsmv"}
    relates_to_path = (f"{{{NAMESPACES['s']}}}Header", f"{{{NAMESPACES['wsa']}}}RelatesTo")
    written_sets: dict[Any, tuple[str, frozenset[str]]] = {}   # an option or selector set's text, by its content

    class LeanWSMan(WSMan):
        _headers: dict[Any, tuple[str, str]]

        def envelope(self, action: str, resource_uri: str, resource: Any, option_set: Any, selector_set: Any,
                     timeout: int | None, message_id: str) -> bytes:
            """The SOAP envelope pypsrp's ``invoke`` sends (``message_id`` in upper case, as pypsrp makes it)."""
            key = (action, resource_uri, timeout or self.operation_timeout, self.max_envelope_size, self.locale,
                   self.data_locale, self.transport.endpoint, self.session_id)
            headers = self.__dict__.setdefault("_headers", {})
            parts = headers.get(key)
            if parts is None:
                parts = headers[key] = self._header_parts(action, resource_uri, timeout)
            used = set(header_prefixes)
            out = [parts[0], message_id, parts[1]]
            for wsman_set in (option_set, selector_set):
                if wsman_set is not None:
                    text, needed = self._written_set(wsman_set)
                    out.append(text)
                    used.update(needed)
            out.append("</s:Header><s:Body>")
            if resource is not None:
                write_element(resource, prefixes, used, out)
                out.append("</s:Body></s:Envelope>")
            else:
                out[-1] = "</s:Header><s:Body /></s:Envelope>"
            declarations = "".join(f' xmlns:{prefix}="{NAMESPACES[prefix]}"' for prefix in sorted(used))
            return ("<s:Envelope" + declarations + ">" + "".join(out)).encode("utf-8")

        def _written_set(self, wsman_set: Any) -> tuple[str, frozenset[str]]:
            """An OptionSet or SelectorSet as write_element writes what its ``pack()`` gives, and the prefixes it
            uses; kept by content (the same few per session: the shell's id, Receive's keep-alive), so the elements
            are not built and written again for every request."""
            key = _set_key(wsman_set)
            found = written_sets.get(key) if key is not None else None
            if found is None:
                used: set[str] = set()
                out: list[str] = []
                write_element(wsman_set.pack(), prefixes, used, out)
                found = ("".join(out), frozenset(used))
                if key is not None:
                    if len(written_sets) >= 256:   # shells come and go: a long scan does not keep every one
                        written_sets.clear()
                    written_sets[key] = found
            return found

        def _header_parts(self, action: str, resource_uri: str, timeout: int | None) -> tuple[str, str]:
            """pypsrp's own header for this action, split around the message id."""
            marker = "00000000-0000-4000-8000-00000000CAFE"
            _, header = self._create_header(action, resource_uri, None, None, timeout)
            found = header.find("wsa:MessageID", NAMESPACES)
            assert found is not None
            found.text = f"uuid:{marker}"
            out: list[str] = []
            write_element(header, prefixes, set(), out)
            text = "".join(out)
            assert text.endswith("</s:Header>") and text.count(marker) == 1
            head, tail = text[:-len("</s:Header>")].split(marker)
            return head, tail

        def invoke(self, action: str, resource_uri: str, resource: Any, option_set: Any = None,
                   selector_set: Any = None, timeout: int | None = None, *, retries_on_read_timeout: int = 0) -> Any:
            if action not in lean_actions:
                return super().invoke(action, resource_uri, resource, option_set, selector_set, timeout,
                                      retries_on_read_timeout=retries_on_read_timeout)
            message_id = str(uuid.uuid4()).upper()
            try:
                xml = self.envelope(action, resource_uri, resource, option_set, selector_set, timeout, message_id)
            except _Unwritable:
                return super().invoke(action, resource_uri, resource, option_set, selector_set, timeout,
                                      retries_on_read_timeout=retries_on_read_timeout)
            http_timeout = timeout + 2 if timeout else None   # as pypsrp: the HTTP wait outlasts the WSMan one
            try:
                response = send(self.transport, xml, retries_on_read_timeout, http_timeout)
            except WinRMTransportError as err:
                try:
                    raise self._parse_wsman_fault(err.response_text) from None
                except ET.ParseError:
                    raise err from None
            if action == WSManAction.RECEIVE:
                response_xml, self.__dict__["_hma_streams"] = parse_answer(response)
            else:
                response_xml = ET.fromstring(response)
            relates_to_et = _first(response_xml, relates_to_path)   # "s:Header/wsa:RelatesTo"
            relates_to = relates_to_et.text if relates_to_et is not None else ""
            if f"uuid:{message_id}" != relates_to:
                raise WinRMError("Received related id does not match related expected message id: "
                                 f"Sent: uuid:{message_id}, Received: {relates_to}")
            return response_xml

    return LeanWSMan


def _set_key(wsman_set: Any) -> Any:
    """What pypsrp's OptionSet or SelectorSet ``pack()`` writes, as a key: its class, names and values (strings
    only, attributes in order); None for anything else, which is then packed every time."""
    from pypsrp.wsman import OptionSet, SelectorSet

    if type(wsman_set) not in (OptionSet, SelectorSet):
        return None
    values = []
    for name, value, attributes in wsman_set.values:
        if type(name) is not str or type(value) is not str or type(attributes) is not dict \
                or not all(type(k) is str and type(v) is str for k, v in attributes.items()):
            return None
        values.append((name, value, tuple(attributes.items())))
    return (type(wsman_set), wsman_set.element_name, wsman_set.child_element_name, wsman_set.must_understand,
            tuple(values))


def send(transport: Any, message: bytes, retries_on_read_timeout: int, timeout: Any) -> bytes:
    """POST one envelope as pypsrp's ``transport.send`` does, but with a copy of a request prepared once per session:
    preparing it again for every call (merging the session's headers, cookies, auth and hooks) is what pypsrp's own
    path spends on top. The copy goes through requests' ``Session.send`` as pypsrp's does, so the auth hook signs a
    connection in on a 401, redirects are followed and cookies kept. The answer is checked as pypsrp's
    ``_send_request`` checks it, without what that also does: decode the whole body to text and format it into a
    debug message that is not logged (100 us for a 150 KB Receive answer, 2 % of a call). Message encryption, and a
    session holding a cookie (the request prepared once has no Cookie header), take ``transport.send`` itself.

    Once requests has answered 200 on a connection it signed in, the session's later requests are written straight
    to that connection (``_send_direct``): requests, urllib3 and http.client cost as much CPU per request as all the
    rest of a call. A request that connection cannot carry goes on through requests as above."""
    import requests
    from pypsrp.exceptions import AuthenticationError, WinRMTransportError

    session = transport.session
    if transport.wrap_required or session is None or session.cookies:
        return transport.send(message, retries_on_read_timeout=retries_on_read_timeout, timeout=timeout)
    prepared = getattr(transport, "_hma_prepared", None)
    if prepared is None or prepared[0] is not session:
        prepared = transport._hma_prepared = (session, _prepare(session, transport.endpoint))
    wait = timeout if timeout is not None else (transport.connection_timeout, transport.read_timeout)
    kept = getattr(transport, "_hma_kept", None)
    try:
        if isinstance(kept, KeptConnection) and kept.session is session:
            content = _send_direct(kept, transport, prepared[1], message, wait)
            if content is not None:
                return content
            if session.cookies:   # set by that answer: the request prepared once has no Cookie header
                return transport.send(message, retries_on_read_timeout=retries_on_read_timeout, timeout=timeout)
        request = prepared[1].copy()
        request.body = message
        request.headers["Content-Length"] = str(len(message))
        response = session.send(request, stream=True, timeout=wait)
        content = _read_body(response)
    except (requests.ReadTimeout, requests.ConnectTimeout):
        if not retries_on_read_timeout:
            raise
        # pypsrp's own loop from its second attempt on (Receive may be sent again: the answer is the same)
        time.sleep(transport.reconnection_backoff)
        return transport.send(message, retries_on_read_timeout=retries_on_read_timeout - 1, timeout=timeout)
    if 400 <= response.status_code < 600:   # what raise_for_status refuses, as pypsrp reports it
        if response.status_code == 401:
            raise AuthenticationError(f"Failed to authenticate the user {transport.username} with {transport.auth}")
        raise WinRMTransportError("http", response.status_code, response.text if content else "")
    # urllib3's pool of the connection requests has signed in: only when the answer came from the endpoint itself,
    # not from where a redirect led (the request prepared once is for the endpoint, with its Authorization)
    pool = getattr(response.raw, "_pool", None)
    if getattr(transport, "_hma_kept", None) is not False and response.status_code == 200 and pool is not None \
            and not response.history and response.url == prepared[1].url:   # (False: signed out once, see below)
        transport._hma_kept = KeptConnection(session, pool, prepared[1])
    return content


def _send_direct(kept: KeptConnection, transport: Any, request: Any, message: bytes, wait: Any) -> bytes | None:
    """The answer to ``message`` sent on the session's signed-in connection (psrp_http), checked as ``send`` checks
    requests' answers; None when requests is to send it: there is no signed-in connection, or the server did not
    act on it and requests would send it again (a 401: the connection must be signed in again, and this session's
    requests all go through requests from now on; a redirect, which requests follows). urllib3 retries no POST,
    so a 425, 429 or 503 fails here as it fails through requests."""
    reply = kept.post(message, wait[1] if isinstance(wait, tuple) else wait)
    if reply is None:
        return None
    if reply.set_cookies:
        _keep_cookies(transport.session, request, reply.set_cookies)
    if reply.status == 401:
        transport._hma_kept = False
        return None
    if 300 <= reply.status < 400:
        return None
    if 400 <= reply.status < 600:
        from pypsrp.exceptions import WinRMTransportError

        raise WinRMTransportError("http", reply.status, _text(reply.body, reply.headers))
    return reply.body


def _text(body: bytes, headers: dict[str, str]) -> str:
    """The body as requests' ``Response.text`` decodes it: the Content-Type's charset (as its adapter sets the
    encoding), else a guess."""
    import requests

    response = requests.Response()
    response._content = body
    response.headers = requests.structures.CaseInsensitiveDict(headers)
    response.encoding = requests.utils.get_encoding_from_headers(response.headers)
    return response.text if body else ""


def _keep_cookies(session: Any, request: Any, set_cookies: list[str]) -> None:
    """Put the cookies of a directly read answer in the session's jar, as requests does for its own answers (the
    session's next request then goes through pypsrp's path, which sends them)."""
    import http.client
    import types

    from requests.cookies import extract_cookies_to_jar

    message = http.client.HTTPMessage()
    for value in set_cookies:
        message["Set-Cookie"] = value
    extract_cookies_to_jar(session.cookies, request, types.SimpleNamespace(_original_response=types.SimpleNamespace(
        msg=message)))


def _read_body(response: Any) -> bytes:
    """What requests' ``Response.content`` returns, in one read: it reads the body 10 KB at a time, each chunk
    through urllib3's and http.client's layers (a Receive answer is 40-160 KB). The errors are the ones requests
    maps urllib3's to (``Response.iter_content``); the connection goes back to the pool as the body ends, as there."""
    import requests
    from requests import models   # the urllib3 exceptions as requests imports them, for its own mapping

    if response._content is not False or response._content_consumed:   # read already (an auth hook's answer)
        return bytes(response.content or b"")
    try:
        content: bytes = response.raw.read(decode_content=True) or b""
    except models.ProtocolError as exc:
        raise requests.exceptions.ChunkedEncodingError(exc) from None
    except models.DecodeError as exc:
        raise requests.exceptions.ContentDecodingError(exc) from None
    except models.ReadTimeoutError as exc:
        raise requests.exceptions.ConnectionError(exc) from None
    except models.SSLError as exc:  # type: ignore[attr-defined]  # urllib3's, in requests.models (not in the stubs)
        raise requests.exceptions.SSLError(exc) from None
    response._content = content
    response._content_consumed = True
    return content


def _prepare(session: Any, endpoint: str) -> Any:
    """The session's POST to the endpoint with the headers pypsrp's ``transport.send`` gives it, prepared once."""
    import requests

    headers = session.headers.copy()
    headers["Content-Type"] = "application/soap+xml;charset=UTF-8"
    return session.prepare_request(requests.Request("POST", endpoint, headers=headers))
