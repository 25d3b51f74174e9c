"""The WSMan transport of the lab: HTTP(S) on loopback, Basic and Negotiate (NTLM, Kerberos) auth, message encryption.

Enough of MS-WSMV for pypsrp's RunspacePool and PowerShell to work unchanged: Create, Command, Send, Receive (long
poll, OperationTimeout fault), Signal, Delete and Get. Negotiate is accepted by pyspnego per TCP connection, as IIS
does: NTLM, and Kerberos (SPNEGO-wrapped or a bare Kerberos token) when the lab has a realm (kdc.Realm), whose keytab
the acceptor finds through KRB5_CONFIG. The encrypted multipart bodies are unwrapped with pypsrp's own WinRMEncryption
helper on the server side.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import re
import ssl
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import urlsplit

from hma_lab.httpd import LabHTTPServer, LeanRequestHandler
from hma_lab.psrp import Configuration, Shell, ShellGone

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "wsa": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "wsman": "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd",
    "wsmv": "http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd",
    "rsp": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell",
    "wst": "http://schemas.xmlsoap.org/ws/2004/09/transfer",
    "pwsh": "http://schemas.microsoft.com/powershell",
    "f": "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault",
    "cfg": "http://schemas.microsoft.com/wbem/wsman/1/config",
    "xml": "http://www.w3.org/XML/1998/namespace",
}
for _prefix, _uri in NS.items():
    if _prefix != "xml":
        ET.register_namespace(_prefix, _uri)

ACTION = "http://schemas.xmlsoap.org/ws/2004/09/transfer/"
SHELL_ACTION = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/"
POWERSHELL_URI = "http://schemas.microsoft.com/powershell/"
SHELL_URI = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
ENCRYPTED_PROTOCOL = "application/HTTP-SPNEGO-session-encrypted"

# Fault codes from winerror.h (ERROR_WSMAN_*): pypsrp retries a Receive on OPERATION_TIMEDOUT and treats
# SHELL_NOT_FOUND as a closed pool.
OPERATION_TIMEDOUT = 0x80338029
SHELL_NOT_FOUND = 0x8033805B
INVALID_CONFIGURATION = 0x80338012
QUOTA_MAX_SHELLS = 0x803381A4


class WSManFault(Exception):
    def __init__(self, code: int, message: str, subcode: str = "w:InternalError", status: int = 500) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.subcode = subcode
        self.status = status


@dataclass
class Credentials:
    """The accounts the lab accepts. Names compare case-insensitively, as DOMAIN\\user or user@domain."""

    accounts: dict[str, str] = field(default_factory=dict)

    def check(self, username: str, password: str) -> str | None:
        wanted = self.accounts.get(username.lower())
        return username if wanted is not None and wanted == password else None

    def known(self, username: str) -> bool:
        return username.lower() in self.accounts


@dataclass
class Listener:
    """One port of the lab endpoint. ``encryption_required``: refuse plaintext bodies (WinRM AllowUnencrypted=false)."""

    tls: ssl.SSLContext | None = None
    basic: bool = True
    negotiate: bool = True
    encryption_required: bool = False
    cert_der: bytes | None = None


class Endpoint:
    """The shared state behind every listener: shells, accounts, configurations, logs and HTTP-level faults."""

    def __init__(self, credentials: Credentials, configurations: dict[str, Configuration], *,
                 max_shells_per_user: int = 18, paths: tuple[str, ...] = ("/powershell", "/wsman"),
                 realm: str = "lab") -> None:
        self.credentials = credentials
        self.configurations = {name.lower(): conf for name, conf in configurations.items()}
        self.max_shells_per_user = max_shells_per_user
        self.paths = paths
        self.realm = realm
        self.shells: dict[str, Shell] = {}
        self.lock = threading.Lock()
        self.request_log: list[dict[str, Any]] = []
        self.command_log: list[dict[str, Any]] = []
        self.peak_shells = 0
        # WSMan action ("*": any request, asked before the body is read) -> HTTP status to answer instead; set by
        # fault injection (401 for everyone, 500...).
        self.http_fault: Callable[[str], int | None] = lambda action: None

    def log_command(self, user: str, configuration: str, command: Any) -> None:
        with self.lock:
            self.command_log.append({"time": time.time(), "user": user, "configuration": configuration,
                                     "command": command.name, "is_script": command.is_script,
                                     "parameters": [[name, _loggable(value)] for name, value in command.parameters]})

    def close_all(self) -> None:
        with self.lock:
            shells = list(self.shells.values())
            self.shells.clear()
        for shell in shells:
            shell.close()


def _loggable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, list):
        return [_loggable(item) for item in value]
    return str(value)


class _Server(LabHTTPServer):
    def __init__(self, address: tuple[str, int], endpoint: Endpoint, listener: Listener) -> None:
        self.endpoint = endpoint
        self.listener = listener
        if listener.negotiate:
            # Loaded with the listener, as IIS loads its authentication modules when it starts: otherwise the first
            # client's sign-in waited for pyspnego's import (~50-150 ms) on top of the handshake.
            import spnego.channel_bindings  # noqa: F401
        super().__init__(address, _Handler, listener.tls)


class _Handler(LeanRequestHandler):
    protocol_version = "HTTP/1.1"
    # http.server writes headers and body in separate send() calls; without TCP_NODELAY, Nagle plus delayed ACK add
    # about 40 ms to every WSMan round trip (measured in the feasibility study).
    disable_nagle_algorithm = True
    # An answer's status line and headers go out with its body in one write (one TLS record, one segment) when the
    # body is small (Command, Signal, a short Receive): http.server writes them separately, and the client then
    # waits for, reads and decrypts two. A larger body still follows its headers in a write of its own.
    wbufsize = 16 * 1024
    server_version = "Microsoft-HTTPAPI/2.0"
    sys_version = ""
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.auth_context: Any = None
        self.connection_user: str | None = None
        self.connection_mech: str | None = None     # how this connection signed in: basic, ntlm or kerberos
        self.encryption: Any = None
        self.pending_challenge: str | None = None

    def log_message(self, format: str, *args: Any) -> None:
        pass

    _date: tuple[int, str] = (0, "")

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The Date header, formatted once a second (email.utils.formatdate was 2 % of the lab's CPU per call)."""
        if timestamp is not None:
            return super().date_time_string(timestamp)
        now = int(time.time())
        second, text = _Handler._date
        if second != now:
            text = super().date_time_string(now)
            _Handler._date = (now, text)
        return text

    # ---------------------------------------------------------------------------------------------- HTTP

    def do_GET(self) -> None:
        self._reply(405, b"", {"Allow": "POST"})

    def do_POST(self) -> None:
        endpoint, listener = self.server.endpoint, self.server.listener
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if urlsplit(self.path).path.rstrip("/").lower() not in endpoint.paths:
            self._reply(404, b"")
            return
        user = self._authenticate(listener, endpoint)
        if user is None:
            return
        forced = endpoint.http_fault("*")
        if forced:
            self._status_only(forced, user)
            return
        content_type = self.headers.get("Content-Type", "")
        if content_type.startswith("multipart/encrypted"):
            if self.auth_context is None:
                self._challenge(listener, endpoint)
                return
            from pypsrp.encryption import WinRMEncryption

            self.encryption = WinRMEncryption(self.auth_context, WinRMEncryption.SPNEGO)
            boundary = re.search(r'boundary="?([^";]+)"?', content_type)
            body = self.encryption.unwrap_message(body, boundary.group(1) if boundary else "Encrypted Boundary")
            encrypted = True
        else:
            encrypted = False
            if not body:  # the blank POST pypsrp sends to set up message encryption
                self._reply(200, b"")
                return
            if listener.encryption_required and listener.tls is None:
                self._log("refused", None, user, 401)
                self._challenge(listener, endpoint)
                return
        status, payload = self._dispatch(body, user, encrypted)
        if encrypted:
            content, wrapped = self.encryption.wrap_message(payload)
            headers = {"Content-Type": f'{content};protocol="{ENCRYPTED_PROTOCOL}";boundary="Encrypted Boundary"'}
            self._reply(status, wrapped, headers)
        else:
            self._reply(status, payload, {"Content-Type": "application/soap+xml;charset=UTF-8"})

    def _reply(self, status: int, body: bytes, headers: dict[str, str] | None = None,
               challenges: list[str] | None = None) -> None:
        try:
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            if self.pending_challenge and status < 400:
                challenges = [*(challenges or []), self.pending_challenge]
                self.pending_challenge = None
            for challenge in challenges or []:
                self.send_header("WWW-Authenticate", challenge)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
        except OSError:
            self.close_connection = True

    def _status_only(self, status: int, user: str | None) -> None:
        self._log("forced", None, user, status)
        if status == 401:
            self.auth_context = None
            self.connection_user = None
            self._reply(401, b"", challenges=self._challenges(self.server.listener, self.server.endpoint))
        else:
            page = (b"<html><head><title>Runtime Error</title></head><body><h1>Server Error in '/PowerShell' "
                    b"Application.</h1></body></html>")
            self._reply(status, page, {"Content-Type": "text/html; charset=utf-8"})

    # ---------------------------------------------------------------------------------------------- auth

    def _challenges(self, listener: Listener, endpoint: Endpoint) -> list[str]:
        offered = []
        if listener.negotiate:
            offered += ["Negotiate", "NTLM"]
        if listener.basic and (listener.tls is not None or not listener.encryption_required):
            offered.append(f'Basic realm="{endpoint.realm}"')
        return offered

    def _challenge(self, listener: Listener, endpoint: Endpoint) -> None:
        self._reply(401, b"", challenges=self._challenges(listener, endpoint))

    def _authenticate(self, listener: Listener, endpoint: Endpoint) -> str | None:
        header = self.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        scheme = scheme.lower()
        if scheme == "basic" and listener.basic and (listener.tls is not None or not listener.encryption_required):
            try:
                username, _, password = base64.b64decode(token).decode("utf-8").partition(":")
            except (ValueError, UnicodeDecodeError):
                username = password = ""
            user = endpoint.credentials.check(username, password)
            if user is None:
                self._log("auth", None, username or None, 401)
                self._challenge(listener, endpoint)
            self.connection_mech = "basic"
            return user
        if scheme in ("negotiate", "ntlm") and listener.negotiate:
            return self._step_negotiate(listener, endpoint, scheme, token)
        if self.connection_user is not None:
            return self.connection_user
        self._challenge(listener, endpoint)
        return None

    def _step_negotiate(self, listener: Listener, endpoint: Endpoint, scheme: str, token: str) -> str | None:
        import spnego
        import spnego.channel_bindings
        from spnego.exceptions import SpnegoError

        if self.auth_context is None or self.auth_context.complete:
            bindings = None
            if listener.cert_der is not None:
                # Channel binding (Extended Protection): the hash of our certificate, as the client computes it.
                bindings = spnego.channel_bindings.GssChannelBindings(
                    application_data=b"tls-server-end-point:" + hashlib.sha256(listener.cert_der).digest())
            self.auth_context = spnego.server(protocol="negotiate", channel_bindings=bindings,
                                              options=spnego.NegotiateOptions.wrapping_winrm)
            self.connection_user = None
        try:
            out = self.auth_context.step(base64.b64decode(token))
        except (SpnegoError, ValueError, Exception) as exc:  # noqa: BLE001 - any bad token is a refused login
            self.auth_context = None
            self._log("auth", None, None, 401, note=type(exc).__name__)
            self._challenge(listener, endpoint)
            return None
        title = "Negotiate" if scheme == "negotiate" else "NTLM"
        if not self.auth_context.complete:
            self._reply(401, b"", challenges=[f"{title} {base64.b64encode(out).decode()}"])
            return None
        user = str(self.auth_context.client_principal or "")
        if not endpoint.credentials.known(user):
            self.auth_context = None
            self._log("auth", None, user, 401)
            self._challenge(listener, endpoint)
            return None
        self.connection_user = user
        self.connection_mech = self.auth_context.negotiated_protocol
        # SPNEGO may finish with a mechListMIC token: it rides on the response to this request.
        self.pending_challenge = f"{title} {base64.b64encode(out).decode()}" if out else None
        return user

    # ---------------------------------------------------------------------------------------------- WSMan

    def _log(self, action: str, resource: str | None, user: str | None, status: int, note: str | None = None,
             encrypted: bool | None = None) -> None:
        endpoint = self.server.endpoint
        with endpoint.lock:
            endpoint.request_log.append({"time": time.time(), "action": action, "resource": resource, "user": user,
                                         "status": status, "note": note, "mech": self.connection_mech,
                                         "tls": self.server.listener.tls is not None, "encrypted": encrypted})

    def _dispatch(self, body: bytes, user: str, encrypted: bool) -> tuple[int, bytes]:
        endpoint = self.server.endpoint
        try:
            envelope = ET.fromstring(body)
        except ET.ParseError:
            return 400, b""
        header = _find(envelope, "s:Header")
        soap_body = _find(envelope, "s:Body")
        action = _text(header, "wsa:Action")
        message_id = _text(header, "wsa:MessageID") or f"uuid:{uuid.uuid4()}"
        resource = _text(header, "wsman:ResourceURI") or ""
        shell_id = None
        selectors = _find(header, "wsman:SelectorSet") if header is not None else None
        if selectors is not None:
            for selector in selectors:
                if selector.get("Name") == "ShellId":
                    shell_id = selector.text
        timeout = _duration(_text(header, "wsman:OperationTimeout"), 20.0)
        max_envelope = int(_text(header, "wsman:MaxEnvelopeSize") or 153600)
        short = action.rsplit("/", 1)[-1]
        forced = endpoint.http_fault(short)
        if forced:
            self._log(short, resource, user, forced, note="injected", encrypted=encrypted)
            return forced, b""
        try:
            response_action, content = self._operation(short, action, resource, shell_id, soap_body, user, timeout,
                                                       max_envelope)
            status = 200
        except WSManFault as fault:
            response_action = "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault"
            content = _fault_body(fault)
            status = fault.status
        self._log(short, resource, user, status, encrypted=encrypted)
        return status, _envelope(response_action, message_id, content)

    def _operation(self, short: str, action: str, resource: str, shell_id: str | None, body: ET.Element | None,
                   user: str, timeout: float, max_envelope: int) -> tuple[str, list[ET.Element]]:
        endpoint = self.server.endpoint
        if action == ACTION + "Create":
            return action + "Response", self._create(resource, body, user)
        if action == ACTION + "Get" and resource.startswith("http://schemas.microsoft.com/wbem/wsman/1/config"):
            config = ET.Element(f"{{{NS['cfg']}}}Config")
            ET.SubElement(config, f"{{{NS['cfg']}}}MaxEnvelopeSizekb").text = "500"
            return action + "Response", [config]
        shell = self._shell(shell_id, user)
        if action == ACTION + "Delete":
            with endpoint.lock:
                endpoint.shells.pop(shell.id, None)
            shell.close()
            return action + "Response", []
        if action == ACTION + "Get":
            return action + "Response", [_shell_element(shell, resource, self.client_address[0])]
        try:
            if action == SHELL_ACTION + "Command":
                line = _find(body, "rsp:CommandLine")
                command_id = (line.get("CommandId") if line is not None else None) or str(uuid.uuid4()).upper()
                arguments = _find(line, "rsp:Arguments") if line is not None else None
                shell.command(command_id, base64.b64decode(arguments.text or "") if arguments is not None else b"")
                response = ET.Element(f"{{{NS['rsp']}}}CommandResponse")
                ET.SubElement(response, f"{{{NS['rsp']}}}CommandId").text = command_id
                return action + "Response", [response]
            if action == SHELL_ACTION + "Send":
                for stream in _find(body, "rsp:Send") or []:
                    shell.send(stream.get("CommandId"), base64.b64decode(stream.text or ""))
                return action + "Response", [ET.Element(f"{{{NS['rsp']}}}SendResponse")]
            if action == SHELL_ACTION + "Receive":
                desired = _find(body, "rsp:Receive/rsp:DesiredStream")
                command_id = desired.get("CommandId") if desired is not None else None
                # Base64 inflates by 4/3, and the envelope around the streams needs room too.
                budget = max((max_envelope - 2048) * 3 // 4, 4096)
                try:
                    chunks, done = shell.receive(command_id, budget, timeout)
                except TimeoutError:
                    raise WSManFault(OPERATION_TIMEDOUT, "The WS-Management service cannot complete the operation "
                                     "within the time specified in OperationTimeout.", "w:TimedOut") from None
                return action + "Response", [_receive_element(chunks, command_id, done)]
            if action == SHELL_ACTION + "Signal":
                signal = _find(body, "rsp:Signal")
                shell.signal(signal.get("CommandId") if signal is not None else None,
                             _text(signal, "rsp:Code") if signal is not None else "")
                return action + "Response", [ET.Element(f"{{{NS['rsp']}}}SignalResponse")]
        except ShellGone as gone:
            raise _shell_not_found(shell.id, str(gone)) from None
        raise WSManFault(0x80338115, f"The WS-Management service does not support the action {short}.",
                         "w:ActionNotSupported")

    def _create(self, resource: str, body: ET.Element | None, user: str) -> list[ET.Element]:
        endpoint = self.server.endpoint
        name = resource[len(POWERSHELL_URI):] if resource.lower().startswith(POWERSHELL_URI.lower()) else ""
        configuration = endpoint.configurations.get(name.lower())
        if configuration is None:
            raise WSManFault(INVALID_CONFIGURATION, "The WS-Management service cannot process the request. Cannot "
                             f"find the {name or resource} session configuration in the WSMan: drive on the "
                             "localhost computer.", "w:InvalidResourceURI")
        shell_element = _find(body, "rsp:Shell") if body is not None else None
        creation = _find(shell_element, "pwsh:creationXml") if shell_element is not None else None
        if creation is None or not creation.text:
            raise WSManFault(0x8033805D, "The WS-Management service cannot process the request: no creationXml.",
                             "w:InvalidParameter", status=400)
        shell_id = (shell_element.get("ShellId") or str(uuid.uuid4())).upper()
        with endpoint.lock:   # count and add in one step, or two concurrent Creates could both squeeze in
            mine = sum(1 for shell in endpoint.shells.values() if shell.user.lower() == user.lower())
            if mine >= endpoint.max_shells_per_user:
                # Exchange's PowerShellMaxConcurrency (ThrottlingPolicy, default 18) surfaces as this WSMan quota fault.
                raise WSManFault(QUOTA_MAX_SHELLS, "The WS-Management service cannot process the request. This user "
                                 f"is allowed a maximum of {endpoint.max_shells_per_user} concurrent shells, which has "
                                 "been exceeded. Close existing shells or raise the quota for this user.",
                                 "w:QuotaLimit")
            shell = Shell(shell_id, user, configuration, base64.b64decode(creation.text), endpoint.log_command)
            endpoint.shells[shell_id] = shell
            endpoint.peak_shells = max(endpoint.peak_shells, len(endpoint.shells))
        created = ET.Element(f"{{{NS['wst']}}}ResourceCreated")
        ET.SubElement(created, f"{{{NS['wsa']}}}Address").text = "http://localhost/PowerShell"
        parameters = ET.SubElement(created, f"{{{NS['wsa']}}}ReferenceParameters")
        ET.SubElement(parameters, f"{{{NS['wsman']}}}ResourceURI").text = resource
        selector_set = ET.SubElement(parameters, f"{{{NS['wsman']}}}SelectorSet")
        ET.SubElement(selector_set, f"{{{NS['wsman']}}}Selector", Name="ShellId").text = shell_id
        return [created, _shell_element(shell, resource, self.client_address[0])]

    def _shell(self, shell_id: str | None, user: str) -> Shell:
        endpoint = self.server.endpoint
        with endpoint.lock:
            shell = endpoint.shells.get((shell_id or "").upper())
        if shell is None or shell.user.lower() != user.lower():
            raise _shell_not_found(shell_id or "", "not found")
        return shell


def _shell_not_found(shell_id: str, why: str) -> WSManFault:
    return WSManFault(SHELL_NOT_FOUND, f"The request for the Windows Remote Shell with ShellId {shell_id} failed "
                      "because the shell was not found on the server. Possible causes are: the specified ShellId is "
                      "incorrect or the shell no longer exists on the server. Provide the correct ShellId or create a "
                      f"new shell and try again. ({why})", "w:InvalidSelectors")


@functools.lru_cache(maxsize=None)
def _clark(path: str) -> tuple[str, ...]:
    """ "wsa:Action" -> ("{http://schemas.xmlsoap.org/ws/2004/08/addressing}Action",), one name per step."""
    steps = []
    for step in path.split("/"):
        prefix, _, local = step.rpartition(":")
        steps.append(f"{{{NS[prefix]}}}{local}")
    return tuple(steps)


def _find(parent: ET.Element, path: str) -> ET.Element | None:
    """``parent.find(path, NS)`` for paths of prefixed names: each step is a plain name, which ElementTree looks up
    in C; with a namespace map every find went through ElementPath in Python (sorting the map for its cache key),
    a dozen times per request."""
    first, *rest = _clark(path)
    if not rest:
        return parent.find(first)
    for child in parent.findall(first):
        found = _find_steps(child, rest)
        if found is not None:
            return found
    return None


def _find_steps(parent: ET.Element, steps: list[str]) -> ET.Element | None:
    first, *rest = steps
    for child in parent.findall(first):
        found = _find_steps(child, rest) if rest else child
        if found is not None:
            return found
    return None


def _text(parent: ET.Element | None, path: str) -> str | None:
    if parent is None:
        return None
    node = _find(parent, path)
    return node.text if node is not None else None


def _duration(text: str | None, default: float) -> float:
    match = re.fullmatch(r"PT([0-9.]+)S", text or "")
    return min(float(match.group(1)), 600.0) if match else default


def _shell_element(shell: Shell, resource: str, client_ip: str) -> ET.Element:
    rsp = NS["rsp"]
    element = ET.Element(f"{{{rsp}}}Shell")
    for name, value in (("ShellId", shell.id), ("ResourceUri", resource), ("Owner", shell.user),
                        ("ClientIP", client_ip), ("IdleTimeOut", "PT7200.000S"), ("InputStreams", "stdin pr"),
                        ("OutputStreams", "stdout"), ("State", "Connected"),
                        ("ShellRunTime", "P0DT0H0M0S"), ("ShellInactivity", "P0DT0H0M0S")):
        ET.SubElement(element, f"{{{rsp}}}{name}").text = value
    return element


def _receive_element(chunks: list[bytes], command_id: str | None, done: bool) -> ET.Element:
    rsp = NS["rsp"]
    response = ET.Element(f"{{{rsp}}}ReceiveResponse")
    for chunk in chunks:
        stream = ET.SubElement(response, f"{{{rsp}}}Stream", Name="stdout")
        if command_id:
            stream.set("CommandId", command_id)
        stream.text = StreamText(binascii.b2a_base64(chunk, newline=False))  # type: ignore[assignment]  # b64encode's
    if command_id:
        state = "Done" if done else "Running"
        ET.SubElement(response, f"{{{rsp}}}CommandState", CommandId=command_id,
                      State=f"{SHELL_URI}/CommandState/{state}")
    return response


def _fault_body(fault: WSManFault) -> list[ET.Element]:
    s, f = NS["s"], NS["f"]
    element = ET.Element(f"{{{s}}}Fault")
    code = ET.SubElement(element, f"{{{s}}}Code")
    ET.SubElement(code, f"{{{s}}}Value").text = "s:Receiver"
    sub = ET.SubElement(code, f"{{{s}}}Subcode")
    ET.SubElement(sub, f"{{{s}}}Value").text = fault.subcode
    reason = ET.SubElement(element, f"{{{s}}}Reason")
    ET.SubElement(reason, f"{{{s}}}Text", {f"{{{NS['xml']}}}lang": "en-US"}).text = fault.message
    detail = ET.SubElement(element, f"{{{s}}}Detail")
    wsman_fault = ET.SubElement(detail, f"{{{f}}}WSManFault", Code=str(fault.code), Machine="localhost")
    ET.SubElement(wsman_fault, f"{{{f}}}Message").text = fault.message
    return [element]


def _envelope(action: str, relates_to: str, content: list[ET.Element]) -> bytes:
    """The response envelope, the bytes ``ET.tostring`` writes for it (tests/lab/test_lab_protocol.py compares them).

    Written as text: ElementTree's serialiser walks the tree twice in Python (once to collect the namespaces), and
    with three envelopes per cmdlet call that was a tenth of the lab's CPU time, which a scan's client shares the
    machine with. An element in a namespace the lab does not register still goes through ElementTree. A Stream's
    base64 (``StreamText``, 40-160 KB a Receive) goes in as the bytes it was encoded to: decoding it to text, joining
    it into the envelope's text and encoding that again were three more passes over it."""
    used = {"s", "wsa"}
    out: list[str | bytes] = ["", "<s:Body>"]   # the root's start tag goes first once the namespaces used are known
    try:
        for element in content:
            _write(element, used, out)
    except _Unregistered:
        return _envelope_tree(action, relates_to, content)
    declarations = "".join(f' xmlns:{prefix}="{_attribute(NS[prefix])}"' for prefix in sorted(used))
    out[0] = (f"<s:Envelope{declarations}><s:Header><wsa:Action>{_cdata(action)}</wsa:Action>"
              f"<wsa:MessageID>uuid:{uuid.uuid4()}</wsa:MessageID><wsa:RelatesTo>{_cdata(relates_to)}</wsa:RelatesTo>"
              f"<wsa:To>{_ANONYMOUS}</wsa:To></s:Header>")
    if len(out) == 2:
        out[1] = "<s:Body />"
    else:
        out.append("</s:Body>")
    out.append("</s:Envelope>")
    # the text between two streams joined and encoded once; a stream's bytes go in as they are
    pieces: list[bytes] = []
    text: list[str] = []
    for part in out:
        if isinstance(part, str):
            text.append(part)
        else:
            pieces.append("".join(text).encode("utf-8", "xmlcharrefreplace"))
            pieces.append(part)
            text.clear()
    pieces.append("".join(text).encode("utf-8", "xmlcharrefreplace"))
    return b"".join(pieces)


class StreamText:
    """An element's text that is base64 already (ASCII, nothing to escape): the envelope writer puts these bytes in
    as they are (ElementTree, which the lab falls back to and the tests compare with, gets the same text as str)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __bool__(self) -> bool:
        return bool(self.data)


_ANONYMOUS = "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous"
_PREFIXES = {uri: prefix for prefix, uri in NS.items()}


class _Unregistered(Exception):
    """A namespace without a prefix of the lab's: ElementTree invents one (ns0), so it writes the envelope."""


def _qname(name: str, used: set[str]) -> str:
    if name[:1] != "{":
        return name
    uri, local = name[1:].split("}", 1)
    prefix = _PREFIXES.get(uri)
    if prefix is None:
        raise _Unregistered(uri)
    if prefix != "xml":   # ElementTree never declares the xml prefix
        used.add(prefix)
    return f"{prefix}:{local}"


_CDATA = (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"))
_ATTRIBUTE = (*_CDATA, ('"', "&quot;"), ("\r", "&#13;"), ("\n", "&#10;"), ("\t", "&#09;"))


def _cdata(text: str, entities: tuple[tuple[str, str], ...] = _CDATA) -> str:
    """Text as ElementTree escapes it. Each character is looked for before it is replaced, as ElementTree does:
    str.replace scans and copies a 40 KB stream even when the character is not there, ``in`` only scans."""
    for character, entity in entities:
        if character in text:
            text = text.replace(character, entity)
    return text


def _attribute(text: str) -> str:
    """An attribute value as ElementTree escapes it."""
    return _cdata(text, _ATTRIBUTE)


def _write(element: ET.Element, used: set[str], out: list[str | bytes]) -> None:
    """``element`` as ElementTree's serialiser writes it inside a root that declares ``used``.

    The client's writer (hma_check.collect.psrp_wire.write_element) has the same shape, on purpose not shared: the
    lab imports nothing of the product (an import contract), so a mistake in one writer shows up as bytes the other
    side does not accept instead of being mirrored by both."""
    tag = _qname(element.tag, used)
    out.append("<" + tag)
    for key, value in element.attrib.items():
        out.append(f' {_qname(key, used)}="{_attribute(value)}"')
    if element.text or len(element):
        out.append(">")
        if isinstance(element.text, StreamText):
            out.append(element.text.data)
        elif element.text:
            out.append(_cdata(element.text))
        for child in element:
            _write(child, used, out)
        out.append(f"</{tag}>")
    else:
        out.append(" />")
    if element.tail:
        out.append(_cdata(element.tail))


def _envelope_tree(action: str, relates_to: str, content: list[ET.Element]) -> bytes:
    s, wsa = NS["s"], NS["wsa"]
    envelope = ET.Element(f"{{{s}}}Envelope")
    header = ET.SubElement(envelope, f"{{{s}}}Header")
    ET.SubElement(header, f"{{{wsa}}}Action").text = action
    ET.SubElement(header, f"{{{wsa}}}MessageID").text = f"uuid:{uuid.uuid4()}"
    ET.SubElement(header, f"{{{wsa}}}RelatesTo").text = relates_to
    ET.SubElement(header, f"{{{wsa}}}To").text = _ANONYMOUS
    body = ET.SubElement(envelope, f"{{{s}}}Body")
    body.extend(_with_text(element) for element in content)
    return ET.tostring(envelope, encoding="utf-8", xml_declaration=False)


def _with_text(element: ET.Element) -> ET.Element:
    """``element`` with every StreamText as the str ElementTree writes (a copy where there is one)."""
    if not any(isinstance(node.text, StreamText) for node in element.iter()):
        return element
    copy = ET.Element(element.tag, element.attrib)
    copy.text = element.text.data.decode("ascii") if isinstance(element.text, StreamText) else element.text
    copy.tail = element.tail
    copy.extend(_with_text(child) for child in element)
    return copy


class ListenerGroup:
    """Listeners (HTTP or HTTPS, each for an Endpoint) on 127.0.0.1, served by one accept thread.

    A lab with hundreds of Exchange servers has one WinRM port per server; a serve_forever thread each would keep
    hundreds of threads polling. Accepted connections are still handled on their own threads.
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        import selectors

        self.host = host
        self._selector = selectors.DefaultSelector()
        self._servers: list[_Server] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True, name="lab-wsman-group")

    def add(self, endpoint: Endpoint, listener: Listener) -> int:
        """Bind a listener for ``endpoint`` on a free loopback port and return the port."""
        import selectors

        server = _Server((self.host, 0), endpoint, listener)
        self._servers.append(server)
        self._selector.register(server.socket, selectors.EVENT_READ, server)
        return server.server_address[1]

    def start(self) -> "ListenerGroup":
        self._thread.start()
        return self

    def _serve(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._selector.select(timeout=0.2):
                key.data._handle_request_noblock()   # accept, then a handler thread (ThreadingMixIn)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._selector.close()
        for server in self._servers:
            server.server_close()
        self._servers.clear()
