"""The ``clients:`` section of a lab scenario: the organisation's users and their mail clients.

When the lab starts, every user's client signs in to the lab's HTTPS endpoints with its own UserAgent and scheme
(Basic, NTLM or Negotiate through a real NTLM exchange, or a Bearer token), over TLS to the servers' own addresses,
so the servers' HttpProxy logs hold exactly these requests: a demo scan then has logs to read (live, over WinRM) and
to export for ``hma-check import``. The expected counts follow from this section alone (``expected_requests``).

    clients:
      - name: "user{n:02}"        # {n} counts from 1
        count: 12
        agent: "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17928; Pro)"
        protocols: [Mapi, Ews, Autodiscover, Oab]     # Mapi Ews Autodiscover Oab Eas RpcHttp
        auth: Negotiate          # Basic | NTLM | Negotiate | Bearer
        requests: 2              # signed-in requests per protocol and user
"""

from __future__ import annotations

import base64
import secrets
import socket
import ssl
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.client import HTTPSConnection
from typing import Any

from hma_check.util.yaml_schema import Schema

PROTOCOLS = ("Mapi", "Ews", "Autodiscover", "Oab", "Eas", "RpcHttp")
SCHEMES = ("Basic", "NTLM", "Negotiate", "Bearer")
_KEYS = ("name", "count", "agent", "protocols", "auth", "requests")
MAX_USERS = 2000   # a lab, not a load test
TIMEOUT = 10.0


@dataclass(frozen=True)
class Population:
    name: str
    count: int
    agent: str
    protocols: tuple[str, ...]
    auth: str
    requests: int

    def users(self) -> list[str]:
        return [self.name.format(n=n) for n in range(1, self.count + 1)] if "{n" in self.name else [self.name]


@dataclass(frozen=True)
class ClientsSection:
    populations: tuple[Population, ...]


def load_section(raw: Any, context: Any) -> ClientsSection:
    """The scenario loader's hook (hma_lab.scenario.SECTION_MODULES): validated with file and line."""
    fail = context.error
    schema = Schema(fail)
    schema.list_of(raw, (), what="client populations (name, count, agent, protocols, auth, requests)", non_empty=True)
    populations: list[Population] = []
    names: set[str] = set()
    for index, entry in enumerate(raw):
        schema.mapping(entry, (index,), keys=_KEYS)
        name, agent = entry.get("name"), entry.get("agent")
        count, requests = entry.get("count", 1), entry.get("requests", 1)
        protocols, auth = entry.get("protocols"), entry.get("auth")
        if not isinstance(name, str) or not name.strip():
            raise fail((index, "name"), "must be a user name, or a template like user{n:02}")
        if not isinstance(agent, str):
            raise fail((index, "agent"), "must be the client's User-Agent (it may be empty)")
        for key, value in (("count", count), ("requests", requests)):
            schema.integer(value, (index, key), 1, MAX_USERS)
        if not isinstance(protocols, list) or not protocols or any(p not in PROTOCOLS for p in protocols):
            raise fail((index, "protocols"), f"must list some of: {', '.join(PROTOCOLS)}")
        schema.one_of(auth, (index, "auth"), SCHEMES)
        population = Population(name.strip(), count, agent, tuple(protocols), auth, requests)
        try:
            users = population.users()
        except (ValueError, KeyError, IndexError):
            raise fail((index, "name"), "is not a valid template ({n} or {n:02})") from None
        if any(c in user for user in users for c in "\\@:,{} "):
            raise fail((index, "name"), "gives user names with \\ @ : , braces or spaces")
        names |= set(users)   # one user may have several clients (Outlook and a phone): several populations
        populations.append(population)
    if len(names) > MAX_USERS:
        raise fail((), f"more than {MAX_USERS} users in all")
    return ClientsSection(tuple(populations))


def expected_requests(section: ClientsSection) -> dict[tuple[str, str, str, bool], int]:
    """(Protocol, AuthenticationType, UserAgent, authenticated) -> the requests the lab's servers log for this
    section: each signed-in request, plus the challenge leg (401, not authenticated) of every NTLM or Negotiate one."""
    out: dict[tuple[str, str, str, bool], int] = {}
    for population in section.populations:
        for protocol in population.protocols:
            n = len(population.users()) * population.requests
            key = (protocol, population.auth, population.agent.replace(",", " "), True)
            out[key] = out.get(key, 0) + n
            if population.auth in ("NTLM", "Negotiate"):
                challenge = (protocol, population.auth, population.agent.replace(",", " "), False)
                out[challenge] = out.get(challenge, 0) + n
    return out


# ------------------------------------------------------------------------------------------------ the service

class Authenticator:
    """What the endpoint server accepts: the lab's client accounts (Basic) and tokens signed by the lab's own Entra
    key for the host they are sent to (Bearer). NTLM and Negotiate go through pyspnego and NTLM_USER_FILE."""

    def __init__(self, domain: str, upn_suffix: str, password: str, users: set[str], tenant: str) -> None:
        from cryptography.hazmat.primitives.asymmetric import rsa

        self.domain, self.upn_suffix, self.password = domain, upn_suffix, password
        self.users = {u.lower(): u for u in users}
        self.tenant = tenant
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def account(self, user: str) -> str:
        return f"{self.domain}\\{user}"

    def basic(self, token: str) -> str | None:
        try:
            name, _, password = base64.b64decode(token).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        user = name.rpartition("\\")[2].lower()
        if user in self.users and secrets.compare_digest(password, self.password):
            return self.account(self.users[user])
        return None

    def issue(self, user: str, host: str) -> str:
        import jwt

        now = int(time.time())
        claims = {"aud": f"https://{host}/", "iss": f"https://sts.windows.net/{self.tenant}/", "tid": self.tenant,
                  "upn": f"{user}@{self.upn_suffix}", "nbf": now - 60, "iat": now - 60, "exp": now + 3600}
        return jwt.encode(claims, self.key, algorithm="RS256")

    def bearer(self, token: str, host: str) -> str | None:
        import jwt

        try:
            claims = jwt.decode(token, self.key.public_key(), algorithms=["RS256"], audience=f"https://{host}/",
                                issuer=f"https://sts.windows.net/{self.tenant}/")
        except jwt.PyJWTError:
            return None
        user = str(claims.get("upn", "")).partition("@")[0].lower()
        return self.account(self.users[user]) if user in self.users else None


class ClientsService:
    """What the Lab sees: nothing to print, the logs: section of the scan configuration, and stop()."""

    def __init__(self, server: Any, accounts: list[str], scan_config: dict[str, Any]) -> None:
        self.server = server
        self.accounts = accounts
        self.endpoints: dict[str, Any] = {}
        self.secrets: dict[str, str] = {}
        self.scan_config = scan_config

    def stop(self) -> None:
        from hma_lab.runtime import NTLM_ACCOUNTS

        self.server.authenticator = None
        for account in self.accounts:
            NTLM_ACCOUNTS.release(account)
        self.accounts = []


def start_service(lab: Any) -> ClientsService | None:
    """The Lab's hook (runtime.SERVICE_MODULES, after the endpoints): sign every user in, so the logs hold them."""
    from hma_lab.runtime import NTLM_ACCOUNTS

    section: ClientsSection | None = lab.scenario.sections.get("clients")
    server = next((s.server for s in lab.services if hasattr(s, "server") and hasattr(s.server, "httpproxy")), None)
    if section is None or server is None:
        return None
    organization = lab.scenario.organization
    domain = lab.scenario.username.rpartition("\\")[0] or organization.get("netbios_name") or "CONTOSO"
    suffix = str(organization.get("namespace") or "contoso.com").split(".", 1)[-1]
    users = {user for population in section.populations for user in population.users()}
    password = secrets.token_urlsafe(18)
    tenant = (server.spec.tenant_ids or ("00000000-0000-0000-0000-000000000000",))[0]
    authenticator = Authenticator(domain, suffix, password, users, tenant)
    accounts = []
    service = ClientsService(server, accounts, {"logs": {"days": 7}})
    try:
        for user in sorted(users):
            NTLM_ACCOUNTS.acquire(authenticator.account(user), password)
            accounts.append(authenticator.account(user))
        server.authenticator = authenticator
        _play(section, server, authenticator, organization)
    except BaseException:
        service.stop()
        raise
    return service


def _play(section: ClientsSection, server: Any, authenticator: Authenticator, organization: dict[str, Any]) -> None:
    namespace = str(organization.get("namespace") or "")
    autodiscover = str(organization.get("autodiscover_namespace") or namespace)
    context = ssl.create_default_context(cafile=str(server.ca_bundle))
    turn = iter(range(1_000_000))
    lock = threading.Lock()
    jobs = []
    for population in section.populations:
        for user in population.users():
            for protocol in population.protocols:
                jobs.append((population, user, protocol))

    def one(job: tuple[Population, str, str]) -> None:
        population, user, protocol = job
        host_name = autodiscover if protocol == "Autodiscover" else namespace
        host = server.spec.host(host_name)
        if host is None or not host.nodes:
            raise RuntimeError(f"the lab publishes no host {host_name!r} for the clients: section")
        with lock:
            node = server.spec.node(host.nodes[next(turn) % len(host.nodes)])
        connection = _Connection(node.address, server.port, host_name, context)
        try:
            for _ in range(population.requests):
                _request(connection, population, user, protocol, host_name, authenticator)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="lab-clients") as pool:
        for _ in pool.map(one, jobs):
            pass


class _Connection(HTTPSConnection):
    """HTTPS to a node's own address, with the published host name as SNI and Host (what DNS would route)."""

    def __init__(self, address: str, port: int, host: str, context: ssl.SSLContext) -> None:
        super().__init__(host, port, timeout=TIMEOUT, context=context)
        self.address = address

    def connect(self) -> None:
        sock = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


_REQUESTS = {
    "Mapi": ("POST", "/mapi/emsmdb/?MailboxId={mailbox}@{suffix}", [("X-RequestType", "Connect"),
                                                                     ("Content-Type", "application/mapi-http")]),
    "Ews": ("POST", "/EWS/Exchange.asmx", [("Content-Type", "text/xml; charset=utf-8")]),
    "Autodiscover": ("POST", "/Autodiscover/Autodiscover.xml", [("Content-Type", "text/xml")]),
    "Oab": ("GET", "/OAB/{mailbox}/oab.xml", []),
    "Eas": ("POST", "/Microsoft-Server-ActiveSync?Cmd=Sync&User={user}&DeviceId={device}&DeviceType=Phone",
            [("Content-Type", "application/vnd.ms-sync.wbxml"), ("MS-ASProtocolVersion", "16.1")]),
    "RpcHttp": ("RPC_IN_DATA", "/rpc/rpcproxy.dll?{host}:6001", [("Content-Type", "application/rpc")]),
}


def _request(connection: _Connection, population: Population, user: str, protocol: str, host: str,
             authenticator: Authenticator) -> None:
    method, path, extra = _REQUESTS[protocol]
    path = path.format(mailbox=uuid.uuid5(uuid.NAMESPACE_DNS, user), suffix=authenticator.upn_suffix, user=user,
                       device=uuid.uuid5(uuid.NAMESPACE_URL, user).hex[:16].upper(), host=host)
    body = b"<lab/>" if method != "GET" else b""
    headers = dict(extra, **{"User-Agent": population.agent, "client-request-id": str(uuid.uuid4())})
    if population.auth == "Basic":
        credentials = f"{authenticator.account(user)}:{authenticator.password}".encode("utf-8")
        headers["Authorization"] = "Basic " + base64.b64encode(credentials).decode()
        _expect(connection, method, path, body, headers, 200)
    elif population.auth == "Bearer":
        headers["Authorization"] = "Bearer " + authenticator.issue(user, host)
        _expect(connection, method, path, body, headers, 200)
    else:
        import spnego

        # NTLM inside Negotiate (the lab's endpoints join no Kerberos realm), whether or not python-gssapi is there
        client = spnego.client(authenticator.account(user), authenticator.password, hostname=host, service="HTTP",
                               protocol=population.auth.lower(), options=spnego.NegotiateOptions.use_ntlm)
        headers["Authorization"] = f"{population.auth} {base64.b64encode(client.step() or b'').decode()}"
        challenge = _expect(connection, method, path, body, headers, 401)
        scheme, _, token = challenge.partition(" ")
        headers["Authorization"] = f"{population.auth} {base64.b64encode(client.step(base64.b64decode(token)) or b'').decode()}"
        _expect(connection, method, path, body, headers, 200)


def _expect(connection: _Connection, method: str, path: str, body: bytes, headers: dict[str, str],
            status: int) -> str:
    """Send one request; the status it must get (the lab's clients are known, so anything else is a lab bug)."""
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    response.read()
    if response.status != status:
        raise RuntimeError(f"lab client {headers.get('User-Agent')!r}: {method} {path} answered {response.status}, "
                           f"expected {status}")
    return response.getheader("WWW-Authenticate") or ""
