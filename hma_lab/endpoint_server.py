"""The lab's HTTPS endpoints: one port on each node's loopback address, hosts told apart by SNI and Host, answers
shaped like Exchange's (as the Exchange team's HMA announcement shows them), per-host TLS versions and certificates, a
log of every request, and Exchange's HttpProxy log of every request a virtual directory answers
(hma_lab/httpproxy_log.py). Clients the lab knows (hma_lab/clients.py) sign in with Basic, NTLM or Negotiate (a real
NTLM exchange, pyspnego) or a Bearer token."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import shutil
import socket
import selectors
import ssl
import tempfile
import threading
import time
import uuid
import warnings
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import trustme

from hma_lab.endpoints import BALANCER_ADDRESS, EXO_APP_ID, CertificateSpec, EndpointsSpec, HostSpec, NodeSpec
from hma_lab.httpproxy_log import PROTOCOL_FOLDERS, SCHEMES, HttpProxyLogs

ACS_PRINCIPAL = "00000001-0000-0000-c000-000000000000"
AUTHORIZATION_URI = "https://login.windows.net/common/oauth2/authorize"
TOKEN_TYPES = "app_asserted_user_v1 service_asserted_app_v1"
IIS_SERVER = "Microsoft-IIS/10.0 Microsoft-HTTPAPI/2.0"
# OpenSSL 3 negotiates TLS 1.0/1.1 only at security level 0, on the server side as on the client side; found by
# experiment on OpenSSL 3.0 (docs/probes.md). Only a host configured with a legacy version gets it.
LEGACY_CIPHERS = "DEFAULT:@SECLEVEL=0"
_VERSIONS = {"TLSv1.0": "TLSv1", "TLSv1.1": "TLSv1_1", "TLSv1.2": "TLSv1_2", "TLSv1.3": "TLSv1_3"}
_PATH_PROTOCOLS = {"mapi": "MAPI", "ews": "EWS", "oab": "OAB", "autodiscover": "Autodiscover",
                   "microsoft-server-activesync": "ActiveSync", "rpc": "RPC"}
CONNECTION_IDLE_SECONDS = 5.0
PER_NODE_LIMIT = 16
MAX_HELLO = 16 * 1024


class EndpointServer:
    """Start with ``start()``, stop with ``stop()`` (or use it as a context manager). ``connect_to`` lists the
    curl-style routes that send each host to its nodes; ``ca_bundle`` is the lab CA to verify against.

    Besides one address per node, a load balancer listens on BALANCER_ADDRESS: it hands each connection to the next
    node serving the SNI host, as a round-robin virtual IP does. Hosts with more than ``per_node_limit`` nodes are
    routed there (what DNS would give a client); smaller pools are routed to every node (per-node probing).
    """

    def __init__(self, spec: EndpointsSpec, *, port: int = 0, per_node_limit: int = PER_NODE_LIMIT,
                 httpproxy: HttpProxyLogs | None = None, fqdns: dict[str, str] | None = None) -> None:
        self.spec = spec
        self.httpproxy = httpproxy          # Exchange's HttpProxy log of what the virtual directories answer
        self.fqdns = fqdns or {}            # node name -> the server's FQDN (TargetServer in the log)
        self.authenticator: Any = None      # lab.clients: accepts the lab's client accounts and their tokens
        self.per_node_limit = per_node_limit
        self._next_node: dict[str | None, int] = {}
        self.requested_port = port
        self.port = 0
        self.requests: list[dict[str, Any]] = []
        self.tls_failures: list[dict[str, Any]] = []
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._listeners: list[tuple[socket.socket, NodeSpec | None]] = []  # None: the load balancer
        self._acceptor: threading.Thread | None = None
        self._contexts: dict[tuple, ssl.SSLContext] = {}
        self._certs: dict[CertificateSpec, trustme.LeafCert] = {}
        self._workdir: Path | None = None
        self.ca = trustme.CA(organization_name="hma-check lab")
        self._untrusted_ca: trustme.CA | None = None

    # --------------------------------------------------------------------------------------------- lifecycle
    def start(self) -> "EndpointServer":
        addresses = [node.address for node in self.spec.nodes]
        if len(set(addresses)) != len(addresses):
            raise ValueError(f"two nodes share a loopback address: {addresses}")
        self._workdir = Path(tempfile.mkdtemp(prefix="hma-lab-endpoints-"))
        try:
            self.ca.cert_pem.write_to_path(str(self.ca_bundle))
            # Every context is built now, in this thread: a bad spec fails at start, not mid-request, and the
            # DeprecationWarning of a legacy version is silenced without racing on the process-wide filters.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                for node, host in itertools.product(self.spec.nodes, (*self.spec.hosts, None)):
                    self.context_for(node, host)
            self._bind()
        except BaseException:
            self.stop()
            raise
        self._acceptor = threading.Thread(target=self._accept_loop, daemon=True, name="lab-https-accept")
        self._acceptor.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        if self._acceptor is not None:
            self._acceptor.join(timeout=5)
            self._acceptor = None
        for sock, _ in self._listeners:
            sock.close()
        self._listeners.clear()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)

    def __enter__(self) -> "EndpointServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def ca_bundle(self) -> Path:
        assert self._workdir is not None, "start() the server first"
        return self._workdir / "lab-ca.pem"

    @property
    def connect_to(self) -> list[str]:
        """``HOST:443:ADDRESS:PORT`` (curl's --connect-to) for each node of every host, or for the load balancer
        when the host's pool is larger than per_node_limit."""
        routes = []
        for host in self.spec.hosts:
            if len(host.nodes) > self.per_node_limit:
                routes.append(f"{host.name}:443:{BALANCER_ADDRESS}:{self.port}")
            else:
                routes.extend(f"{host.name}:443:{self.spec.node(node).address}:{self.port}" for node in host.nodes)
        return routes

    def balance(self, host: HostSpec | None) -> NodeSpec:
        """The next node for a connection to the load balancer (round-robin per host)."""
        names = host.nodes if host is not None and host.nodes else tuple(node.name for node in self.spec.nodes)
        key = host.name if host is not None else None
        with self._lock:
            turn = self._next_node.get(key, 0)
            self._next_node[key] = turn + 1
        return self.spec.node(names[turn % len(names)])

    def _bind(self) -> None:
        """One port number on every node address, so a route differs only in its address."""
        for attempt in range(20):
            port, listeners = self.requested_port, []
            try:
                for node in (*self.spec.nodes, None):
                    address = node.address if node is not None else BALANCER_ADDRESS
                    sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET)
                    listeners.append((sock, node))
                    sock.bind((address, port))
                    sock.listen(64)
                    sock.setblocking(False)
                    port = sock.getsockname()[1]
            except OSError:
                for sock, _ in listeners:
                    sock.close()
                if self.requested_port or attempt == 19:
                    raise
                continue
            self._listeners, self.port = listeners, port
            return

    def _accept_loop(self) -> None:
        """One thread accepts on every node's socket (a lab may have hundreds); a thread per connection serves it."""
        with selectors.DefaultSelector() as selector:
            for sock, node in self._listeners:
                selector.register(sock, selectors.EVENT_READ, node)
            while not self.stopping.is_set():
                for key, _ in selector.select(timeout=0.1):
                    try:
                        conn, _ = key.fileobj.accept()  # type: ignore[union-attr]
                    except (BlockingIOError, OSError):
                        continue
                    conn.setblocking(True)
                    threading.Thread(target=_serve_connection, args=(self, key.data, conn), daemon=True,
                                     name="lab-https-connection").start()

    # ---------------------------------------------------------------------------------------------- lookups
    def context_for(self, node: NodeSpec, host: HostSpec | None) -> ssl.SSLContext:
        versions = (host.tls_versions if host and host.tls_versions else None) or node.tls_versions
        certificate = (host.certificate if host else None) or node.certificate or self._shared_certificate()
        key = (versions, certificate)
        with self._lock:
            if key not in self._contexts:
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                if versions[0] in ("TLSv1.0", "TLSv1.1"):
                    context.set_ciphers(LEGACY_CIPHERS)
                context.minimum_version = getattr(ssl.TLSVersion, _VERSIONS[versions[0]])
                context.maximum_version = getattr(ssl.TLSVersion, _VERSIONS[versions[-1]])
                self._leaf(certificate).configure_cert(context)
                self._contexts[key] = context
            return self._contexts[key]

    def _shared_certificate(self) -> CertificateSpec:
        """Exchange's usual one SAN certificate naming every namespace."""
        return CertificateSpec(names=tuple(host.name for host in self.spec.hosts) or ("localhost",))

    def _leaf(self, spec: CertificateSpec) -> trustme.LeafCert:
        if spec not in self._certs:
            now = dt.datetime.now(dt.timezone.utc)
            not_before, not_after = {
                "valid": (now - dt.timedelta(days=30), now + dt.timedelta(days=365)),
                "expired": (now - dt.timedelta(days=400), now - dt.timedelta(days=5)),
                "not_yet_valid": (now + dt.timedelta(days=10), now + dt.timedelta(days=400)),
            }[spec.validity]
            not_before, not_after = spec.not_before or not_before, spec.not_after or not_after
            if spec.issuer == "lab":
                issuer = self.ca
            else:
                issuer = self._untrusted_ca = self._untrusted_ca or trustme.CA(organization_name="not trusted")
            self._certs[spec] = issuer.issue_cert(*spec.names, common_name=spec.names[0],
                                                  not_before=not_before, not_after=not_after)
        return self._certs[spec]

    def log(self, entry: dict[str, Any], *, tls_failure: bool = False) -> None:
        with self._lock:
            (self.tls_failures if tls_failure else self.requests).append(entry)


def _serve_connection(lab: EndpointServer, node: NodeSpec | None, sock: socket.socket) -> None:
    """One TCP connection: read the SNI from the ClientHello without consuming it, pick that host's TLS context
    (and, behind the load balancer, its next node), then serve HTTP/1.1 over it."""
    try:
        sock.settimeout(CONNECTION_IDLE_SECONDS)
        sni = sni_from_client_hello(_peek_client_hello(sock))
        host = lab.spec.host(sni)
        node = node or lab.balance(host)
        if host is not None and host.front == "silent":
            lab.stopping.wait()  # a host that accepts TCP and never answers
            return
        try:
            tls = lab.context_for(node, host).wrap_socket(sock, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            lab.log({"node": node.name, "sni": sni, "tls_error": getattr(exc, "reason", None) or str(exc)},
                    tls_failure=True)
            return
        try:
            _ExchangeHandler(tls, node, lab, sni=sni, version=tls.version())
        except (ssl.SSLError, OSError):
            pass  # the client went away mid-request
        finally:
            tls.close()
    finally:
        sock.close()


class _ExchangeHandler(BaseHTTPRequestHandler):
    """Answers as Exchange's front end does (or as the device in front of it)."""

    protocol_version = "HTTP/1.1"
    server_version = "Microsoft-IIS/10.0"
    disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms delayed-ACK stall between

    def __init__(self, request: ssl.SSLSocket, node: NodeSpec, lab: EndpointServer, *, sni: str | None,
                 version: str | None) -> None:
        self.lab, self.node, self.sni, self.tls_version = lab, node, sni, version
        super().__init__(request, request.getpeername(), lab)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass  # the lab keeps its own structured log

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._answer()

    # RPC over HTTP (Outlook Anywhere) uses its own methods.
    do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_RPC_IN_DATA = do_RPC_OUT_DATA = do_GET

    def _answer(self) -> None:
        self._started = dt.datetime.now(dt.timezone.utc)
        self._proxied: dict[str, Any] | None = None
        self._read_body()
        host_name = (self.headers.get("Host") or self.sni or "").rsplit(":", 1)[0].lower()
        if host_name.startswith("["):
            host_name = self.headers.get("Host", "")
        host = self.lab.spec.host(host_name)
        self.lab.log({
            "node": self.node.name, "address": self.node.address, "sni": self.sni, "tls_version": self.tls_version,
            "method": self.command, "path": self.path, "host": host_name,
            "headers": [(name, value) for name, value in self.headers.items()],
        })
        if host is not None and host.front == "preauth":
            self._preauth(host)
            return
        url = urlsplit(self.path)
        segments = [part for part in url.path.lower().split("/") if part]
        if segments[:2] == ["autodiscover", "autodiscover.json"]:
            self._proxied = {"protocol": "Autodiscover", "host": host_name, "url": url}
            self._autodiscover_v2(url.query, segments)
            return
        protocol = _PATH_PROTOCOLS.get(segments[0]) if segments else None
        if protocol is None or protocol not in self.node.virtual_directories:  # no such virtual directory here
            self._send(404, [("Content-Type", "text/html")], b"<h1>404 - Not Found</h1>")
            return
        if self.node.virtual_directories[protocol].hung:
            self.lab.stopping.wait()   # a hung application pool: no answer until the lab stops
            self.close_connection = True
            return
        self._proxied = {"protocol": PROTOCOL_FOLDERS[segments[0]], "host": host_name, "url": url}
        if self._signed_in(host_name, protocol):
            return
        self._unauthorized(host_name, protocol)

    def _read_body(self) -> None:
        """Read a request body (clients POST) so the next request on the connection starts where it should."""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        self._request_bytes = length
        if 0 < length <= 1024 * 1024:
            self.rfile.read(length)

    # ---------------------------------------------------------------------------------------------- sign-in
    def _signed_in(self, host_name: str, protocol: str) -> bool:
        """A client the lab knows, with a scheme this virtual directory offers: answer 200 (or the next NTLM leg)
        and return True. Anything else falls through to Exchange's 401."""
        authenticator = self.lab.authenticator
        scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
        scheme, token = scheme.lower(), token.strip()
        if authenticator is None or not token:
            return False
        vdir = self.node.virtual_directories[protocol]
        offered = {challenge.lower() for challenge in vdir.challenges}
        user: str | None = None
        if scheme == "basic" and "basic" in offered:
            user = authenticator.basic(token)
        elif scheme in ("ntlm", "negotiate") and scheme in offered:
            return self._windows_sign_in(scheme, token, protocol)
        elif scheme == "bearer" and vdir.oauth and self.lab.spec.evosts_default \
                and self.lab.spec.oauth2_client_profile_enabled:
            user = authenticator.bearer(token, host_name)
        if user is None:
            return False
        self._accepted(user)
        return True

    def _windows_sign_in(self, scheme: str, token: str, protocol: str) -> bool:
        """NTLM or Negotiate on this connection, as IIS does: the challenge leg, then the user (pyspnego's acceptor
        reads the lab's accounts from NTLM_USER_FILE)."""
        import base64

        import spnego
        from spnego.exceptions import SpnegoError

        context = getattr(self, "_auth_context", None)
        try:
            if context is None or context.complete:
                # NTLM inside Negotiate, in pyspnego's own code: these endpoints join no Kerberos realm, and with
                # python-gssapi installed pyspnego would otherwise reach for a keytab the lab does not have.
                context = self._auth_context = spnego.server(protocol=scheme if scheme == "ntlm" else "negotiate",
                                                             options=spnego.NegotiateOptions.use_ntlm)
            out = context.step(base64.b64decode(token))
        except (SpnegoError, ValueError, Exception):  # noqa: BLE001 - a bad token is a refused sign-in
            self._auth_context = None
            return False
        title = SCHEMES[scheme]
        if not context.complete:
            self._send(401, [("Server", IIS_SERVER), ("WWW-Authenticate", f"{title} {base64.b64encode(out).decode()}"),
                             ("X-FEServer", self.node.name), ("Date", formatdate(usegmt=True))], b"")
            return True
        self._accepted(str(context.client_principal or ""))
        return True

    def _accepted(self, user: str) -> None:
        assert self._proxied is not None
        self._proxied["user"] = user
        body = b"ok"
        self._send(200, [("Content-Type", "text/plain"), ("Server", IIS_SERVER), ("request-id", str(uuid.uuid4())),
                         ("X-FEServer", self.node.name), ("X-BEServer", self.node.name),
                         ("Date", formatdate(usegmt=True))], body)

    # ---------------------------------------------------------------------------------------------- answers
    def _unauthorized(self, host_name: str, protocol: str) -> None:
        """The 401 of the Exchange team's HMA announcement (https://blogs.technet.microsoft.com/exchange/2017/12/06/announcing-hybrid-modern-authentication-for-exchange-on-premises/), header for header: IIS schemes, X-FEServer, x-ms-diagnostics,
        then the Bearer challenge Exchange adds when the client sent (an empty) Bearer and OAuth is on."""
        spec, vdir = self.lab.spec, self.node.virtual_directories[protocol]
        authorization = self.headers.get("Authorization", "")
        scheme, _, token = authorization.partition(" ")
        wants_bearer = scheme.lower() == "bearer"
        headers: list[tuple[str, str]] = [("Server", IIS_SERVER), ("request-id", str(uuid.uuid4()))]
        for challenge in vdir.challenges:
            headers.append(("Www-Authenticate", f'Basic realm="{host_name}"' if challenge == "Basic" else challenge))
        headers.append(("X-FEServer", self.node.name))
        oauth = vdir.oauth and wants_bearer
        if oauth and token.strip() and self.node.ssl_offloading:
            # SSL offloading: Exchange receives http, so the token's https audience does not match (x-ms-diagnostics 2000003).
            headers.append(("x-ms-diagnostics", '2000003;reason="The hostname component of the audience claim '
                            f"value is invalid. Expected 'https://{host_name}'. Actual 'http://{host_name}'.\";"
                            'error_category="invalid_resource"'))
        elif oauth and not spec.oauth2_client_profile_enabled:
            domain = host_name.split(".", 1)[-1]
            headers.append(("x-ms-diagnostics", f"4000000;reason=\"Flighting is not enabled for domain '{domain}'.\";"
                                                'error_category="oauth_not_available"'))
        headers.append(("X-Powered-By", "ASP.NET"))
        if oauth:
            issuers = ",".join(f"{ACS_PRINCIPAL}@{tenant}" for tenant in spec.tenant_ids)
            bearer = f'Bearer client_id="{EXO_APP_ID}", trusted_issuers="{issuers}", token_types="{TOKEN_TYPES}"'
            uri = spec.authorization_uri or (AUTHORIZATION_URI if spec.evosts_default else None)
            if uri:
                bearer += f', authorization_uri="{uri}"'
            if token.strip():
                bearer += ', error="invalid_token"'
            headers.append(("WWW-Authenticate", bearer))
        headers.append(("Date", formatdate(usegmt=True)))
        if {"Negotiate", "NTLM"} & set(vdir.challenges):
            headers.append(("Proxy-Support", "Session-Based-Authentication"))
        self._send(401, headers, b"")

    def _autodiscover_v2(self, query: str, segments: list[str]) -> None:
        """Autodiscover v2 (autodiscover.json?Email=…&Protocol=…, or …/v1.0/<email>?Protocol=…): anonymous JSON."""
        params = {key.lower(): values[-1] for key, values in parse_qs(query).items()}
        protocol = params.get("protocol", "")
        canonical = {"activesync": "ActiveSync", "ews": "EWS"}.get(protocol.lower())
        email = params.get("email") or (segments[3] if len(segments) > 3 and segments[2] == "v1.0" else None)
        headers = [("Content-Type", "application/json; charset=utf-8"), ("Server", IIS_SERVER),
                   ("request-id", str(uuid.uuid4())), ("X-FEServer", self.node.name)]
        if canonical is None or not email:
            body = {"ErrorCode": "InvalidRequest" if canonical else "ProtocolNotSupported",
                    "ErrorMessage": "An email address is required." if canonical else
                    f"The given protocol value '{protocol}' is invalid."}
            self._send(400, headers, json.dumps(body).encode())
            return
        url = self.node.autodiscover_urls.get(canonical)
        if url is None:
            self._send(404, headers, json.dumps({"ErrorCode": "NotFound", "ErrorMessage": canonical}).encode())
            return
        self._send(200, headers, json.dumps({"Protocol": canonical, "Url": url}).encode())

    def _preauth(self, host: HostSpec) -> None:
        """A pre-authenticating proxy: its own 302 or 401, a session cookie, and none of Exchange's headers."""
        headers = [("Set-Cookie", f"PreAuthSession={uuid.uuid4().hex}; path=/; secure; HttpOnly"),
                   ("Cache-Control", "no-cache")]
        if host.preauth.status == 302:
            location = host.preauth.location or f"https://sts.{host.name.split('.', 1)[-1]}/adfs/ls/?wa=wsignin1.0"
            headers.append(("Location", location))
        headers.extend(("WWW-Authenticate", challenge) for challenge in host.preauth.challenges)
        self._send(host.preauth.status, headers, b"")

    def _send(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response_only(status)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        # Logged before a byte of the answer leaves (end_headers flushes): a client that has its answer finds the
        # line in the log, so logs exported right after a client's last request hold all of them (they did not,
        # now and then, on a loaded machine).
        self._log_httpproxy(status, len(body))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _log_httpproxy(self, status: int, response_bytes: int) -> None:
        """The line Exchange's front end writes for this request (only requests that reached a virtual directory)."""
        proxied, logs = getattr(self, "_proxied", None), self.lab.httpproxy
        if proxied is None or logs is None:
            return
        ended = dt.datetime.now(dt.timezone.utc)
        scheme = (self.headers.get("Authorization") or "").partition(" ")[0].lower()
        user = proxied.get("user")
        url = proxied["url"]
        values: dict[str, Any] = {
            "RequestId": str(uuid.uuid4()), "ClientRequestId": self.headers.get("client-request-id") or "",
            "UrlHost": proxied["host"], "UrlStem": url.path, "AuthenticationType": SCHEMES.get(scheme, ""),
            "IsAuthenticated": "true" if user else "false", "AuthenticatedUser": user or "",
            "UserAgent": self.headers.get("User-Agent") or "", "ClientIpAddress": self.client_address[0],
            "HttpStatus": status, "Method": self.command, "RequestBytes": self._request_bytes,
            "ActivityContextLifeTime": int((ended - self._started).total_seconds() * 1000),
            "TotalRequestTime": int((ended - self._started).total_seconds() * 1000), "CoreLatency": 0,
            "HttpProxyOverhead": 0, "UrlQuery": f"?{url.query}" if url.query else "",
        }
        if user:
            major, minor, build, _ = logs.version(self.node.name)
            values.update(BackEndStatus=status, ProxyAction="Proxy", TargetServer=self.lab.fqdns.get(
                self.node.name, self.node.name), TargetServerVersion=f"{major}.{minor:02d}.{build}.000",
                RoutingType="IntraForest", RoutingHint="WindowsIdentity" if scheme != "bearer" else "OAuth",
                ResponseBytes=response_bytes, RoutingStatus="CafeV1")
        logs.write(self.node.name, proxied["protocol"], self._started, ended, values)


# -------------------------------------------------------------------------------------------- ClientHello
def _peek_client_hello(sock: socket.socket) -> bytes:
    """The first TLS record, read with MSG_PEEK so the TLS layer still sees it; b'' on a timeout or non-TLS."""
    deadline = time.monotonic() + CONNECTION_IDLE_SECONDS
    data = b""
    while time.monotonic() < deadline:
        try:
            data = sock.recv(MAX_HELLO, socket.MSG_PEEK)
        except OSError:
            return b""
        if not data or data[0] != 0x16:
            return data
        if len(data) >= 5 and len(data) >= 5 + int.from_bytes(data[3:5], "big"):
            return data
        if len(data) >= MAX_HELLO:
            return data
        time.sleep(0.005)  # the rest of the record is still in flight
    return data


def sni_from_client_hello(data: bytes) -> str | None:
    """The server_name of a ClientHello record (RFC 8446 §4.1.2, RFC 6066 §3), or None. Never raises."""
    try:
        if len(data) < 9 or data[0] != 0x16 or data[5] != 0x01:
            return None
        record_end = min(len(data), 5 + int.from_bytes(data[3:5], "big"))
        pos = 9 + 2 + 32  # record header, handshake header, client_version, random
        pos += 1 + data[pos]  # session_id
        pos += 2 + int.from_bytes(data[pos:pos + 2], "big")  # cipher_suites
        pos += 1 + data[pos]  # compression_methods
        end = min(record_end, pos + 2 + int.from_bytes(data[pos:pos + 2], "big"))
        pos += 2
        while pos + 4 <= end:
            kind, length = int.from_bytes(data[pos:pos + 2], "big"), int.from_bytes(data[pos + 2:pos + 4], "big")
            pos += 4
            if kind == 0:  # server_name: list length, name_type 0 (host_name), name length, name
                name_length = int.from_bytes(data[pos + 3:pos + 5], "big")
                if data[pos + 2] != 0 or pos + 5 + name_length > end:
                    return None
                return data[pos + 5:pos + 5 + name_length].decode("ascii").lower()
            pos += length
    except (IndexError, UnicodeDecodeError):
        return None
    return None
