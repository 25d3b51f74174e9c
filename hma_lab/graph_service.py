"""The lab's Entra token endpoint and Microsoft Graph v1.0 slice: one loopback HTTPS server for every tenant."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import ssl
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, urlsplit

from hma_lab.httpd import LabHTTPServer
from hma_lab.tenants import EXO_APP_ID, ROUTES, Fault, Tenant

if TYPE_CHECKING:
    import trustme

# Resource ids a Graph token may be issued for: the global and national-cloud Graph hosts and Graph's app id.
# https://learn.microsoft.com/graph/deployments#microsoft-graph-and-graph-explorer-service-root-endpoints
GRAPH_RESOURCES = ("https://graph.microsoft.com", "https://graph.microsoft.us", "https://dod-graph.microsoft.us",
                   "https://microsoftgraph.chinacloudapi.cn", "00000003-0000-0000-c000-000000000000")
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"

# The application permissions that open each route: the least-privileged one first, then the broader ones
# Graph also accepts (each API page's permissions table on learn.microsoft.com/graph/api).
ROUTE_ROLES: dict[str, tuple[str, ...]] = {
    "service_principals": ("Application.Read.All", "Application.ReadWrite.OwnedBy", "Application.ReadWrite.All",
                           "Directory.Read.All", "Directory.ReadWrite.All"),
    "organization": ("Organization.Read.All", "Organization.ReadWrite.All", "Directory.Read.All",
                     "Directory.ReadWrite.All"),
    "domains": ("Domain.Read.All", "Domain.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All"),
    "users": ("User.Read.All", "User.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All"),
    "security_defaults": ("Policy.Read.All", "Policy.ReadWrite.SecurityDefaults"),
    "conditional_access": ("Policy.Read.All", "Policy.ReadWrite.ConditionalAccess"),
    "subscribed_skus": ("LicenseAssignment.Read.All", "Organization.Read.All", "Organization.ReadWrite.All",
                        "Directory.Read.All", "Directory.ReadWrite.All"),
}
# Graph's own page-size limit for /users ($top 1..999).
MAX_TOP = 999
DEFAULT_USERS_PAGE = 100
GRAPH_JSON = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8"


@dataclass(frozen=True)
class LoggedRequest:
    """One request the service received. Never holds a secret, an assertion or a token: only what was asked."""

    method: str
    path: str
    raw_path: str
    route: str | None
    tenant: str | None
    status: int
    client_id: str | None = None
    grant_type: str | None = None
    client_auth: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _AppKeys:
    """A tenant's scan app: its secret, and its certificate once a test or the demo asks for one."""

    secret: str
    key: Any = None                                           # RSA private key
    cert: Any = None                                          # x509.Certificate
    thumbprints: set[str] = field(default_factory=set)        # base64url SHA-1 (x5t) and SHA-256 (x5t#S256)
    files: dict[str, Path] = field(default_factory=dict)      # "pem:<password>" -> written file

    @property
    def public_key(self) -> Any:
        return self.key.public_key() if self.key is not None else None


class GraphService:
    """Serve tokens and Graph for ``tenants`` on https://127.0.0.1:<port>; use as a context manager or start()/stop().

    The token endpoint is ``<url>/<tenant>/oauth2/v2.0/token`` (authority = ``url``), Graph is ``<url>/v1.0``.
    Tokens name their tenant (``tid``), so one Graph host answers for every tenant, as the real one does.
    """

    def __init__(self, tenants: list[Tenant], *, ca: "trustme.CA | None" = None, host: str = "127.0.0.1",
                 port: int = 0, max_page_size: int = MAX_TOP, workdir: str | Path | None = None) -> None:
        import trustme
        from cryptography.hazmat.primitives.asymmetric import rsa

        self.tenants = {t.id: t for t in tenants}
        self._by_domain = {d["id"].lower(): t for t in tenants for d in t.domains}
        self.ca = ca or trustme.CA()
        self.max_page_size = max_page_size
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="hma-lab-graph-")
        self.workdir = Path(workdir or self._tmp.name)
        self.ca_path = self.workdir / "graph-ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_path))
        self._signing_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._kid = secrets.token_hex(8)
        self._keys = {t.id: _AppKeys(secret=secrets.token_urlsafe(32)) for t in tenants}
        # App Service's managed identity endpoint wants this header (IDENTITY_HEADER); see managed_identity_env().
        self.identity_header = secrets.token_urlsafe(16)
        self._lock = threading.Lock()
        self._log: list[LoggedRequest] = []
        self._faults: dict[tuple[str, str], list[Fault]] = {}
        for tenant in tenants:
            for fault in tenant.faults:
                self.inject(tenant.id, fault.route, fault.status, times=fault.times, retry_after=fault.retry_after)
        self._device_codes: dict[str, tuple[str, str, float]] = {}  # code -> (tenant, resource, expiry)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
        self._server = _Server((host, port), _Handler, self, context)
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------------------------------------- lifecycle
    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"https://{host}:{port}"

    @property
    def authority(self) -> str:
        """What a credential takes as ``authority``: the host only; the tenant is appended per request."""
        return self.url

    @property
    def graph_url(self) -> str:
        return f"{self.url}/v1.0"

    def start(self) -> "GraphService":
        if self._thread is None:
            # A short poll interval: stop() (shutdown) waits for the loop to notice, 0.5 s by default.
            self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                            name="lab-graph", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> "GraphService":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --------------------------------------------------------------------------------------- test and lab API
    @property
    def requests(self) -> list[LoggedRequest]:
        with self._lock:
            return list(self._log)

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()

    def client_id(self, tenant_id: str) -> str:
        return self.tenants[tenant_id].app.client_id

    def secret(self, tenant_id: str) -> str:
        """The client secret of the tenant's scan app, made when the service was created (never written to disk)."""
        return self._keys[tenant_id].secret

    def certificate(self, tenant_id: str, kind: str = "pem", password: str | None = None) -> Path:
        """The scan app's certificate with its key: ``pem`` (key + certificate) or ``pfx`` (PKCS#12)."""
        keys = self._keys[tenant_id]
        with self._lock:
            if keys.key is None:
                self._make_app_certificate(tenant_id, keys)
            cache_key = f"{kind}:{password or ''}"
            if cache_key not in keys.files:
                keys.files[cache_key] = self._write_certificate(tenant_id, keys, kind, password)
            return keys.files[cache_key]

    def graph_section(self, env_prefix: str = "HMA_LAB_GRAPH_SECRET") -> tuple[dict[str, Any], dict[str, str]]:
        """The ``graph:`` configuration section that scans this lab, and the environment holding its secrets.

        The section names environment variables only, so it can be written to disk; the secrets stay in memory.
        """
        entries, environ = [], {}
        for index, tenant in enumerate(self.tenants.values()):
            name = f"{env_prefix}_{index}"
            entries.append({"tenant_id": tenant.id, "client_id": tenant.app.client_id, "client_secret_env": name})
            environ[name] = self.secret(tenant.id)
        section = {"credential": "client_secret", "authority": self.authority, "graph_url": self.graph_url,
                   "ca_bundle": str(self.ca_path), "tenants": entries}
        return section, environ

    # What the lab runtime (hma_lab.runtime.LabService) reads from a started service.
    @property
    def endpoints(self) -> dict[str, Any]:
        """What ``hma-check lab`` prints: where to sign in and read Graph, and the lab's own demo secrets (generated
        at start, like the lab's Exchange password, so a scan in another terminal can use them)."""
        exports = " ".join(f"{name}='{value}'" for name, value in self.graph_section()[1].items())
        return {"graph authority": f"{self.authority}  (tenants: {', '.join(self.tenants)})",
                "graph": self.graph_url,
                "graph CA certificate": str(self.ca_path),
                "graph client secrets": f"export {exports}"}

    @property
    def scan_config(self) -> dict[str, Any]:
        return {"graph": self.graph_section()[0]}

    @property
    def secrets(self) -> dict[str, str]:
        """Client secrets by the environment variable name the ``graph:`` section gives them (in-process only)."""
        return self.graph_section()[1]

    def managed_identity_env(self, tenant_id: str) -> dict[str, str]:
        """The environment App Service gives a process with a managed identity, pointing at this lab's tenant."""
        return {"IDENTITY_ENDPOINT": f"{self.url}/{tenant_id}/msi/token", "IDENTITY_HEADER": self.identity_header}

    def inject(self, tenant_id: str, route: str, status: int, *, times: int | None = None,
               retry_after: int | None = None) -> None:
        """Answer ``status`` on ``route`` for ``tenant_id``: the next ``times`` requests, or all (None)."""
        if route not in ROUTES:
            raise ValueError(f"unknown route {route!r}; one of {', '.join(ROUTES)}")
        with self._lock:
            self._faults.setdefault((tenant_id, route), []).append(
                Fault(route=route, status=status, times=times, retry_after=retry_after))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def issue_token(self, tenant_id: str, roles: set[str] | frozenset[str] | None = None, *,
                    lifetime: int = 3599, resource: str = "https://graph.microsoft.com") -> str:
        """An application access token as the token endpoint would sign it (for tests that bypass sign-in)."""
        tenant = self.tenants[tenant_id]
        now = int(time.time())
        claims = {
            "aud": resource, "iss": f"https://sts.windows.net/{tenant_id}/", "iat": now, "nbf": now,
            "exp": now + lifetime, "appid": tenant.app.client_id, "idtyp": "app", "tid": tenant_id,
            "oid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"sp/{tenant_id}/{tenant.app.client_id}")),
            "roles": sorted(tenant.app.roles if roles is None else roles), "ver": "1.0",
        }
        return self._sign(claims)

    # -------------------------------------------------------------------------------------------- internals
    def _sign(self, claims: dict[str, Any]) -> str:
        import jwt

        return jwt.encode(claims, self._signing_key, algorithm="RS256", headers={"kid": self._kid, "typ": "JWT"})

    def _make_app_certificate(self, tenant_id: str, keys: _AppKeys) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"hma-check scan {tenant_id}")])
        now = datetime.now(timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
                .not_valid_after(now + timedelta(days=365)).sign(key, hashes.SHA256()))
        der = cert.public_bytes(serialization.Encoding.DER)
        keys.key, keys.cert = key, cert
        keys.thumbprints = {_b64url(hashlib.sha1(der).digest()),  # noqa: S324 - x5t is SHA-1 by definition
                            _b64url(hashlib.sha256(der).digest())}

    def _write_certificate(self, tenant_id: str, keys: _AppKeys, kind: str, password: str | None) -> Path:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.serialization import pkcs12

        encryption = (serialization.BestAvailableEncryption(password.encode()) if password
                      else serialization.NoEncryption())
        if kind == "pem":
            payload = keys.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
            payload += keys.cert.public_bytes(serialization.Encoding.PEM)
        elif kind == "pfx":
            payload = pkcs12.serialize_key_and_certificates(b"hma-check", keys.key, keys.cert, None, encryption)
        else:
            raise ValueError("kind must be pem or pfx")
        path = self.workdir / f"app-{tenant_id}-{secrets.token_hex(4)}.{kind}"
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as handle:
            handle.write(payload)
        return path

    def _tenant(self, segment: str) -> Tenant | None:
        return self.tenants.get(segment.lower()) or self._by_domain.get(segment.lower())

    def _take_fault(self, tenant_id: str | None, route: str) -> Fault | None:
        if tenant_id is None:
            return None
        with self._lock:
            queue = self._faults.get((tenant_id, route))
            if not queue:
                return None
            fault = queue[0]
            if fault.times is not None:
                remaining = fault.times - 1
                if remaining <= 0:
                    queue.pop(0)
                else:
                    queue[0] = Fault(fault.route, fault.status, remaining, fault.retry_after)
            return fault

    def _record(self, entry: LoggedRequest) -> None:
        with self._lock:
            self._log.append(entry)


class _Server(LabHTTPServer):
    handshake_timeout = 30.0

    def __init__(self, address: tuple[str, int], handler: type, service: GraphService,
                 context: ssl.SSLContext) -> None:
        self.service = service
        super().__init__(address, handler, context)


class _Reply(Exception):
    """Stop handling and answer ``status`` with a JSON body (raised from deep inside a route)."""

    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.status, self.body, self.headers = status, body, headers or {}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "hma-check-lab-graph"
    timeout = 30   # an idle keep-alive connection is closed after this many seconds
    # http.server writes headers and body as separate TLS records; with Nagle on, each reply waits ~40 ms for the
    # client's delayed ACK (graph-and-identity.md, pitfall 6).
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    # ------------------------------------------------------------------------------------------- dispatch
    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_PATCH(self) -> None:  # noqa: N802
        self._dispatch("PATCH")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        service = self.server.service
        raw_path = self.path
        parts = urlsplit(raw_path)
        # The SDK's URL templates give ``/v1.0//domains`` when the base URL ends in '/'; real Graph tolerates it.
        path = "/" + "/".join(p for p in parts.path.split("/") if p)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        self._request_id = str(uuid.uuid4())
        self._meta: dict[str, Any] = {"route": None, "tenant": None}
        body = self._read_body()
        try:
            if path == "/v1.0" or path.startswith("/v1.0/"):
                status, payload, headers = self._graph(method, path[len("/v1.0"):] or "/", query)
            else:
                status, payload, headers = self._identity(method, path, query, body)
        except _Reply as reply:
            status, payload, headers = reply.status, reply.body, reply.headers
        # Logged before the answer leaves, so a client that has its response always finds the request in the log.
        wanted = ("Retry-Attempt", "client-request-id", "User-Agent", "ConsistencyLevel")
        service._record(LoggedRequest(
            method=method, path=path, raw_path=raw_path, route=self._meta["route"], tenant=self._meta["tenant"],
            status=status, client_id=self._meta.get("client_id"), grant_type=self._meta.get("grant_type"),
            client_auth=self._meta.get("client_auth"),
            headers={k: self.headers[k] for k in wanted if self.headers.get(k) is not None}))
        self._send(status, payload, headers, graph=path.startswith("/v1.0"))

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(min(length, 1_000_000)) if length > 0 else b""

    def _send(self, status: int, payload: Any, headers: dict[str, str], *, graph: bool) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", GRAPH_JSON if graph else "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store, no-cache" if not graph else "no-cache")
        self.send_header("request-id", self._request_id)
        if self.headers.get("client-request-id"):
            self.send_header("client-request-id", self.headers["client-request-id"][:64])
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    # ---------------------------------------------------------------------------------------------- errors
    def _graph_error(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> _Reply:
        return _Reply(status, {"error": {"code": code, "message": message, "innerError": {
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"), "request-id": self._request_id,
            "client-request-id": self.headers.get("client-request-id") or self._request_id}}}, headers)

    def _fault_reply(self, fault: Fault, *, graph: bool) -> _Reply:
        headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
        if not graph:
            return _Reply(fault.status, {"error": "temporarily_unavailable" if fault.status >= 500 else "invalid_request",
                                         "error_description": f"AADSTS90033: injected lab fault {fault.status}.",
                                         "error_codes": [90033]}, headers)
        code, message = {
            401: ("InvalidAuthenticationToken", "Access token validation failure."),
            403: ("Authorization_RequestDenied", "Insufficient privileges to complete the operation."),
            404: ("Request_ResourceNotFound", "Resource does not exist."),
            429: ("TooManyRequests", "Too many requests."),
            503: ("ServiceUnavailable", "Service is unavailable."),
        }.get(fault.status, ("UnknownError", "An internal server error occurred."))
        return self._graph_error(fault.status, code, message, headers)

    # ------------------------------------------------------------------------------------- identity (STS)
    def _identity(self, method: str, path: str, query: dict[str, str], body: bytes) -> tuple[int, Any, dict[str, str]]:
        service = self.server.service
        segments = path.strip("/").split("/")
        tenant = service._tenant(segments[0]) if segments and segments[0] else None
        rest = "/".join(segments[1:])
        self._meta["tenant"] = tenant.id if tenant else None
        if tenant is None:
            raise _Reply(400, _sts_error("invalid_tenant", 90002,
                                         f"Tenant '{segments[0][:64]}' not found. Check to make sure you have the "
                                         "correct tenant ID and are signing into the correct cloud."))
        base = f"{service.url}/{segments[0]}"
        if method == "GET" and rest == "v2.0/.well-known/openid-configuration":
            self._meta["route"] = "discovery"
            return 200, {
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                "jwks_uri": f"{base}/discovery/v2.0/keys",
                "issuer": f"{service.url}/{tenant.id}/v2.0",
                "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt",
                                                          "client_secret_basic"],
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "tenant_region_scope": "WW",
            }, {}
        if method == "GET" and rest == "discovery/v2.0/keys":
            self._meta["route"] = "keys"
            return 200, {"keys": [_jwk(service._signing_key.public_key(), service._kid)]}, {}
        if method == "GET" and rest == "msi/token":
            self._meta["route"] = "token"
            return self._managed_identity_token(tenant, query)
        if method == "POST" and rest == "oauth2/v2.0/devicecode":
            self._meta["route"] = "devicecode"
            return self._device_code(tenant, body)
        if method == "POST" and rest == "oauth2/v2.0/token":
            self._meta["route"] = "token"
            return self._token(tenant, body, f"{base}/oauth2/v2.0/token")
        raise _Reply(404, _sts_error("invalid_request", 900561, "The endpoint only accepts POST requests."
                                     if rest.startswith("oauth2") else "Not found."))

    def _token(self, tenant: Tenant, body: bytes, token_url: str) -> tuple[int, Any, dict[str, str]]:
        service = self.server.service
        form = {k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items()}
        grant, client_id = form.get("grant_type", ""), form.get("client_id", "")
        self._meta.update(grant_type=grant, client_id=client_id[:64])
        fault = service._take_fault(tenant.id, "token")
        if fault:
            raise self._fault_reply(fault, graph=False)
        if client_id.lower() != tenant.app.client_id:
            raise _Reply(400, _sts_error("unauthorized_client", 700016,
                                         f"Application with identifier '{client_id[:64]}' was not found in the "
                                         f"directory '{tenant.display_name}'."))
        if grant == "client_credentials":
            resource = _requested_resource(form.get("scope", ""))
            self._authenticate_client(tenant, form, token_url)
            claims_roles = tenant.app.roles
            token = service.issue_token(tenant.id, claims_roles, resource=resource)
            return 200, {"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599,
                         "access_token": token}, {}
        if grant == DEVICE_CODE_GRANT:
            self._meta["client_auth"] = "device_code"
            return self._device_code_token(tenant, form)
        raise _Reply(400, _sts_error("unsupported_grant_type", 70003,
                                     f"The app requested an unsupported grant type '{grant[:40]}'."))

    def _authenticate_client(self, tenant: Tenant, form: dict[str, str], token_url: str) -> None:
        import jwt

        keys = self.server.service._keys[tenant.id]
        if "client_secret" in form:
            self._meta["client_auth"] = "client_secret"
            if not hmac.compare_digest(form["client_secret"].encode(), keys.secret.encode()):
                raise _Reply(401, _sts_error("invalid_client", 7000215,
                                             "Invalid client secret provided. Ensure the secret being sent in the "
                                             "request is the client secret value, not the client secret ID, for a "
                                             f"secret added to app '{tenant.app.client_id}'."))
            return
        if form.get("client_assertion_type") == ASSERTION_TYPE and form.get("client_assertion"):
            self._meta["client_auth"] = "client_assertion"
            assertion = form["client_assertion"]
            try:
                header = jwt.get_unverified_header(assertion)
            except jwt.PyJWTError:
                raise _Reply(401, _sts_error("invalid_client", 50027, "JWT token is invalid or malformed.")) from None
            # MSAL sends x5t in standard base64 with padding, azure-identity's aio client x5t#S256 in base64url.
            thumbprint = str(header.get("x5t#S256") or header.get("x5t") or "")
            thumbprint = thumbprint.rstrip("=").replace("+", "-").replace("/", "_")
            if keys.key is None or thumbprint not in keys.thumbprints:
                raise _Reply(401, _sts_error("invalid_client", 700027,
                                             "The certificate with identifier used to sign the client assertion is "
                                             f"not registered on application. [Reason - The key was not found., "
                                             f"Thumbprint of key used by client: '{str(thumbprint)[:64]}']"))
            try:
                claims = jwt.decode(assertion, keys.public_key, algorithms=["RS256", "PS256"], audience=token_url,
                                    options={"require": ["exp", "iss", "sub", "aud"]}, leeway=300)
            except jwt.ExpiredSignatureError:
                raise _Reply(401, _sts_error("invalid_client", 700024,
                                             "Client assertion is not within its valid time range.")) from None
            except jwt.InvalidAudienceError:
                raise _Reply(401, _sts_error("invalid_client", 700021,
                                             "Client assertion audience claim does not match Realm issuer.")) from None
            except jwt.PyJWTError:
                raise _Reply(401, _sts_error("invalid_client", 700027,
                                             "Client assertion failed signature validation.")) from None
            if claims["iss"] != claims["sub"] or claims["iss"].lower() != tenant.app.client_id:
                raise _Reply(401, _sts_error("invalid_client", 700023,
                                             "Client assertion contains an invalid issuer or subject."))
            return
        raise _Reply(401, _sts_error("invalid_client", 7000218,
                                     "The request body must contain the following parameter: 'client_assertion' "
                                     "or 'client_secret'."))

    def _managed_identity_token(self, tenant: Tenant, query: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        """App Service's managed identity endpoint (IDENTITY_ENDPOINT + X-IDENTITY-HEADER, api-version 2019-08-01):
        the lab's identity is the tenant's scan app, so a managed-identity scan gets the same roles."""
        service = self.server.service
        self._meta.update(grant_type="managed_identity", client_auth="identity_header",
                          client_id=tenant.app.client_id)
        fault = service._take_fault(tenant.id, "token")
        if fault:
            raise self._fault_reply(fault, graph=False)
        if not hmac.compare_digest((self.headers.get("X-IDENTITY-HEADER") or "").encode(),
                                   service.identity_header.encode()):
            raise _Reply(401, {"statusCode": 401, "message": "Unauthorized: the X-IDENTITY-HEADER is missing or wrong"})
        resource = _requested_resource(f"{query.get('resource', '').rstrip('/')}/.default")
        token = service.issue_token(tenant.id, resource=resource)
        return 200, {"access_token": token, "expires_on": str(int(time.time()) + 3599), "resource": resource,
                     "token_type": "Bearer", "client_id": tenant.app.client_id}, {}

    def _device_code(self, tenant: Tenant, body: bytes) -> tuple[int, Any, dict[str, str]]:
        service = self.server.service
        form = {k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
        client_id = form.get("client_id", "")
        self._meta["client_id"] = client_id[:64]
        if client_id.lower() != tenant.app.client_id:
            raise _Reply(400, _sts_error("unauthorized_client", 700016,
                                         f"Application with identifier '{client_id[:64]}' was not found."))
        resource = _requested_resource(form.get("scope", ""))
        device_code = secrets.token_urlsafe(24)
        user_code = secrets.token_hex(4).upper()
        with service._lock:
            service._device_codes[device_code] = (tenant.id, resource, time.time() + 900)
        # The lab's simulated administrator signs in at once, so the first poll already gets a token.
        return 200, {"user_code": user_code, "device_code": device_code, "verification_uri":
                     f"{service.url}/devicelogin", "expires_in": 900, "interval": 1,
                     "message": f"To sign in, use a web browser to open the page {service.url}/devicelogin and "
                                f"enter the code {user_code} to authenticate."}, {}

    def _device_code_token(self, tenant: Tenant, form: dict[str, str]) -> tuple[int, Any, dict]:
        service = self.server.service
        with service._lock:
            entry = service._device_codes.pop(form.get("device_code", ""), None)
        if entry is None or entry[0] != tenant.id or entry[2] < time.time():
            raise _Reply(400, _sts_error("expired_token", 70020, "The provided value for the input parameter "
                                         "'device_code' is not valid."))
        resource = entry[1]
        now = int(time.time())
        user_oid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"admin/{tenant.id}"))
        upn = f"admin@{tenant.initial_domain}"
        access = service._sign({
            "aud": resource, "iss": f"https://sts.windows.net/{tenant.id}/", "iat": now, "nbf": now,
            "exp": now + 3599, "appid": tenant.app.client_id, "idtyp": "user", "tid": tenant.id, "oid": user_oid,
            "upn": upn, "scp": " ".join(sorted(tenant.app.roles)), "ver": "1.0"})
        id_token = service._sign({
            "aud": tenant.app.client_id, "iss": f"{service.url}/{tenant.id}/v2.0", "iat": now, "nbf": now,
            "exp": now + 3599, "sub": user_oid, "oid": user_oid, "tid": tenant.id, "preferred_username": upn,
            "name": "Lab administrator", "ver": "2.0"})
        client_info = _b64url(json.dumps({"uid": user_oid, "utid": tenant.id}).encode())
        return 200, {"token_type": "Bearer", "scope": f"{resource}/.default", "expires_in": 3599,
                     "ext_expires_in": 3599, "access_token": access, "id_token": id_token,
                     "client_info": client_info}, {}

    # --------------------------------------------------------------------------------------------- Graph
    def _graph(self, method: str, path: str, query: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        service = self.server.service
        route, handler = _route(path, query)
        self._meta["route"] = route
        tenant, roles = self._authorize()
        if method != "GET":
            # The tool is read-only: anything but GET is logged (so tests can prove it never happens) and refused.
            raise self._graph_error(405, "Request_BadRequest", f"The HTTP method '{method}' is not allowed here.")
        if route is None:
            raise self._graph_error(400, "BadRequest", f"Resource not found for the segment '{path.strip('/')[:80]}'.")
        fault = service._take_fault(tenant.id, route)
        if fault:
            raise self._fault_reply(fault, graph=True)
        if not roles & set(ROUTE_ROLES[route]):
            if route == "conditional_access":
                raise self._graph_error(403, "AccessDenied", "You cannot perform the requested operation, required "
                                        "scopes are missing in the token.")
            raise self._graph_error(403, "Authorization_RequestDenied",
                                    "Insufficient privileges to complete the operation.")
        return 200, handler(self, tenant, query), {}

    def _authorize(self) -> tuple[Tenant, set[str]]:
        import jwt

        service = self.server.service
        header = self.headers.get("Authorization") or ""
        if not header.startswith("Bearer ") or not header[7:].strip():
            raise self._graph_error(401, "InvalidAuthenticationToken", "Access token is empty.")
        try:
            claims = jwt.decode(header[7:].strip(), service._signing_key.public_key(), algorithms=["RS256"],
                                audience=list(GRAPH_RESOURCES), options={"require": ["exp", "tid", "aud"]})
        except jwt.ExpiredSignatureError:
            raise self._graph_error(401, "InvalidAuthenticationToken", "Lifetime validation failed, the token is "
                                    "expired.") from None
        except jwt.PyJWTError:
            raise self._graph_error(401, "InvalidAuthenticationToken", "Access token validation failure. Invalid "
                                    "audience or signature.") from None
        tenant = service.tenants.get(claims["tid"])
        if tenant is None:
            raise self._graph_error(401, "InvalidAuthenticationToken", "Access token validation failure.")
        self._meta.update(tenant=tenant.id, client_id=claims.get("appid"))
        roles = set(claims.get("roles") or []) | set((claims.get("scp") or "").split())
        return tenant, roles

    def _next_link(self, path: str, query: dict[str, str], skiptoken: str) -> str:
        # Graph keeps the caller's query options in @odata.nextLink, so $select survives paging.
        kept = [(k, v) for k, v in query.items() if k != "$skiptoken"] + [("$skiptoken", skiptoken)]
        encoded = "&".join(f"{k}={quote(v, safe=',()$=')}" for k, v in kept)
        return f"{self.server.service.url}/v1.0{path}?{encoded}"

    def _context(self, fragment: str) -> str:
        return f"{self.server.service.url}/v1.0/$metadata#{fragment}"

    # Route handlers: (handler, tenant, query) -> JSON body.
    def _service_principal_by_app_id(self, tenant: Tenant, query: dict[str, str]) -> dict[str, Any]:
        app_id = self._meta["app_id"]
        sp = tenant.exo_service_principal if app_id.lower() == EXO_APP_ID else None
        if sp is None:
            raise self._graph_error(404, "Request_ResourceNotFound", f"Resource '{app_id[:64]}' does not exist or "
                                    "one of its queried reference-property objects are not present.")
        return {"@odata.context": self._context("servicePrincipals/$entity"), **_select(sp, query)}

    def _service_principals(self, tenant: Tenant, query: dict[str, str]) -> dict[str, Any]:
        wanted = self._meta.get("app_id")
        sps = [tenant.exo_service_principal] if tenant.exo_service_principal else []
        if wanted is not None:
            sps = [sp for sp in sps if sp["appId"] == wanted.lower()]
        return {"@odata.context": self._context("servicePrincipals"), "value": [_select(sp, query) for sp in sps]}

    def _organization(self, tenant: Tenant, query: dict[str, str]) -> dict[str, Any]:
        return {"@odata.context": self._context("organization"), "value": [_select(tenant.organization(), query)]}

    def _domains(self, tenant: Tenant, query: dict[str, str]) -> dict[str, Any]:
        domains = [{**d, "isInitial": d["id"] == tenant.initial_domain, "isRoot": True,
                    "supportedServices": ["Email"]} for d in tenant.domains]
        return {"@odata.context": self._context("domains"), "value": [_select(d, query) for d in domains]}

    def _users(self, tenant: Tenant, query: dict[str, str]) -> dict[str, Any]:
        top_text = query.get("$top")
        top = DEFAULT_USERS_PAGE
        if top_text is not None:
            if not top_text.isdigit() or not 1 <= int(top_text) <= MAX_TOP:
                raise self._graph_error(400, "Request_UnsupportedQuery", f"Invalid page size specified: "
                                        f"'{top_text[:12]}'. Must be between 1 and {MAX_TOP} inclusive.")
            top = int(top_text)
        page = min(top, self.server.service.max_page_size)
        start = _decode_skiptoken(query.get("$skiptoken"))
        if start is None:
            raise self._graph_error(400, "Directory_ExpiredPageToken", "The specified page token value has expired "
                                    "and can no longer be included in your request.")
        users = tenant.users_between(start, start + page)
        select = _select_fields(query)
        fields = select or ("businessPhones", "displayName", "givenName", "jobTitle", "mail", "mobilePhone",
                            "officeLocation", "preferredLanguage", "surname", "userPrincipalName", "id")
        body: dict[str, Any] = {"@odata.context": self._context("users" + (f"({','.join(select)})" if select else "")),
                                "value": [{f: u.get(f) for f in fields} for u in users]}
        if start + page < tenant.user_count:
            body["@odata.nextLink"] = self._next_link("/users", query, _encode_skiptoken(start + page))
        return body

    def _security_defaults(self, tenant: Tenant, query: dict[str, str]) -> dict[str, Any]:
        return {"@odata.context": self._context("policies/identitySecurityDefaultsEnforcementPolicy/$entity"),
                **_select(tenant.security_defaults_policy(), query)}

    def _conditional_access(self, tenant: Tenant, query: dict[str, str]) -> dict[str, Any]:
        return {"@odata.context": self._context("identity/conditionalAccess/policies"),
                "value": [_select(p, query) for p in tenant.conditional_access_policies]}

    def _subscribed_skus(self, tenant: Tenant, query: dict[str, str]) -> dict[str, Any]:
        return {"@odata.context": self._context("subscribedSkus"),
                "value": [_select(s, query) for s in tenant.subscribed_skus]}


_SP_BY_APP_ID = "/servicePrincipals(appId='"


def _route(path: str, query: dict[str, str]) -> tuple[str | None, Any]:
    """Map a Graph path to (route name, handler); unknown paths give (None, None)."""
    h = _Handler
    simple = {
        "/organization": ("organization", h._organization),
        "/domains": ("domains", h._domains),
        "/users": ("users", h._users),
        "/policies/identitySecurityDefaultsEnforcementPolicy": ("security_defaults", h._security_defaults),
        "/identity/conditionalAccess/policies": ("conditional_access", h._conditional_access),
        "/subscribedSkus": ("subscribed_skus", h._subscribed_skus),
    }
    if path in simple:
        return simple[path]
    if path.startswith(_SP_BY_APP_ID) and path.endswith("')"):
        app_id = path[len(_SP_BY_APP_ID):-2]

        def by_app_id(handler: _Handler, tenant: Tenant, q: dict[str, str]) -> dict[str, Any]:
            handler._meta["app_id"] = app_id
            return handler._service_principal_by_app_id(tenant, q)

        return "service_principals", by_app_id
    if path == "/servicePrincipals":
        wanted = None
        if "$filter" in query:
            text = query["$filter"].strip()
            prefix = "appId eq '"
            if not (text.startswith(prefix) and text.endswith("'")):
                return "service_principals", _unsupported_filter
            wanted = text[len(prefix):-1]

        def listing(handler: _Handler, tenant: Tenant, q: dict[str, str]) -> dict[str, Any]:
            handler._meta["app_id"] = wanted
            return handler._service_principals(tenant, q)

        return "service_principals", listing
    return None, None


def _unsupported_filter(handler: _Handler, tenant: Tenant, query: dict[str, str]) -> dict[str, Any]:
    raise handler._graph_error(400, "Request_UnsupportedQuery", "Unsupported or invalid query filter clause "
                               "specified for property 'appId' of resource 'ServicePrincipal'.")


def _select_fields(query: dict[str, str]) -> tuple[str, ...]:
    text = query.get("$select", "")
    return tuple(f.strip() for f in text.split(",") if f.strip())


def _select(obj: dict[str, Any], query: dict[str, str]) -> dict[str, Any]:
    """Apply $select: only the named properties, null when the object does not have one (as Graph answers)."""
    fields = _select_fields(query)
    return {f: obj.get(f) for f in fields} if fields else dict(obj)


def _encode_skiptoken(offset: int) -> str:
    return "RFNwdAIAAQAAA" + _b64url(f"lab:{offset}".encode())


def _decode_skiptoken(token: str | None) -> int | None:
    if token is None:
        return 0
    try:
        text = base64.urlsafe_b64decode(token[13:] + "=" * (-len(token[13:]) % 4)).decode()
        return int(text.split(":", 1)[1]) if text.startswith("lab:") else None
    except (ValueError, UnicodeDecodeError):
        return None


def _requested_resource(scope: str) -> str:
    """The resource of a ``<resource>/.default`` scope; Entra refuses anything but a known resource."""
    for item in scope.split():
        if item.endswith("/.default"):
            resource = item[: -len("/.default")].rstrip("/")
            if resource in GRAPH_RESOURCES:
                return resource
            raise _Reply(400, _sts_error("invalid_resource", 500011,
                                         f"The resource principal named {resource[:80]} was not found in the tenant."))
    raise _Reply(400, _sts_error("invalid_scope", 1002012,
                                 f"The provided value for scope {scope[:80]} is not valid. Client credential flows "
                                 "must have a scope value with /.default suffixed to the resource identifier "
                                 "(application ID URI)."))


def _sts_error(error: str, code: int, description: str) -> dict[str, Any]:
    trace = str(uuid.uuid4())
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
    return {"error": error, "error_description": f"AADSTS{code}: {description} Trace ID: {trace} Timestamp: {stamp}",
            "error_codes": [code], "timestamp": stamp, "trace_id": trace, "correlation_id": str(uuid.uuid4())}


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwk(public_key: Any, kid: str) -> dict[str, str]:
    numbers = public_key.public_numbers()

    def encode(value: int) -> str:
        return _b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))

    return {"kty": "RSA", "use": "sig", "kid": kid, "n": encode(numbers.n), "e": encode(numbers.e)}

