"""Outside-in probes: the empty Bearer challenge per protocol, Autodiscover v2 and TLS, anonymous and read-only."""

from __future__ import annotations

import http.cookiejar
import ipaddress
import json
import socket
import ssl
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from hma_check import __version__
from hma_check.collect.probes.config import ProbeSettings, is_host_name
from hma_check.collect.probes.targets import PROTOCOL_PATHS, HostTarget, ProbePlan, plan_probes
from hma_check.collect.probes.tls import TlsContexts, Unreachable, probe_tls
from hma_check.collect.probes.www_authenticate import bearer_challenge, parse_challenges
from hma_check.contract.snapshot import SourceResult, Snapshot, timed

AUTODISCOVER_V2_PROTOCOLS = ("ActiveSync", "EWS")
USER_AGENT = f"hma-check/{__version__} (read-only readiness probe)"
# The empty Bearer header is Outlook's "I can do OAuth, where do I get a token?" (seed 003; hma-checks.md P1).
# h11 refuses a header value with trailing whitespace, so it goes on the wire as "Bearer", which Exchange reads
# as an empty token exactly like Outlook's.
EMPTY_BEARER = "Bearer"
MAX_BODY = 64 * 1024  # an Autodiscover answer is a few hundred bytes; never download more than this


class NotAttempted(Exception):
    """A probe skipped because an earlier one to the same node already failed to connect or timed out."""


@dataclass(frozen=True)
class Node:
    """One place a host:port is reached: the address (and port) the TCP connection goes to."""

    host: str
    port: int
    address: str
    connect_port: int
    per_node: bool  # the host has several nodes: the scope names the address

    def url(self, path: str) -> str:
        return f"https://{self.host}{'' if self.port == 443 else f':{self.port}'}{path}"

    @property
    def via(self) -> str:
        address = f"[{self.address}]" if ":" in self.address else self.address
        return f"{address}:{self.connect_port}"

    def scope(self, name: str) -> str:
        return f"{name} via {self.via}" if self.per_node else name


@dataclass
class _Route:
    target: HostTarget
    nodes: list[Node] = field(default_factory=list)
    error: str | None = None


def run_probes(settings: ProbeSettings, context: Any) -> list[SourceResult]:
    """The collector runner's entry (hma_check.collect.runner.COLLECTORS): it runs after the Exchange collector,
    whose virtual directory URLs are in ``context.snapshot``."""
    progress = context.progress("probes")
    try:
        return collect_probes(context.snapshot, settings, progress=progress)
    finally:
        progress.finish()


def collect_probes(snapshot: Snapshot, settings: ProbeSettings, *, progress: Any = None) -> list[SourceResult]:
    """Run every probe for the hosts the snapshot's Exchange sources (and the user) name; never raises for a
    network fault: each unreachable or failing probe is an error result with its reason. ``progress`` (the
    runner's) hears of every node probed."""
    if not settings.enabled:
        return [SourceResult.skipped_result("probe.targets", "probes are disabled in the configuration")]
    plan = plan_probes(snapshot, settings)
    results: list[SourceResult] = [_targets_result(plan), *_unknown_results(plan)]
    if not plan.targets:
        return results
    email = settings.autodiscover_email or _mailbox_address(snapshot)
    prober = _Prober(settings)
    with ThreadPoolExecutor(max_workers=settings.concurrency, thread_name_prefix="probe") as pool:
        routes = list(pool.map(lambda target: _route(target, settings), plan.targets))
        jobs = []
        if progress is not None:
            progress.start(sum(len(route.nodes) for route in routes))
        for route in routes:
            if route.error is not None:
                results.extend(_failed_results(route.target, None, route.error))
                continue
            jobs.extend((route.target, node, pool.submit(prober.probe_node, node, route.target, email))
                        for node in route.nodes)
        for target, node, job in jobs:
            try:
                node_results = job.result()
            except Exception as exc:  # noqa: BLE001 - a bug on one node must not cost the other nodes' evidence
                node_results = _failed_results(target, node, f"the probe failed: {type(exc).__name__}: {exc}")
            results.extend(node_results)
            if progress is not None:
                progress.advance(node.scope(f"{node.host}:{node.port}"), all(r.ok for r in node_results))
    return results


# ----------------------------------------------------------------------------------------------- routing
def _route(target: HostTarget, settings: ProbeSettings) -> _Route:
    """Where target's connections go: --connect-to first (the first matching HOST:PORT wins, repeats of it add
    nodes), then --resolve for the name connected to (every address is a node), then DNS (its first address)."""
    route = _Route(target)
    hops: list[tuple[str, int]] = []
    rules = [rule for rule in settings.connect_to if rule.matches(target.host, target.port)]
    if rules:
        pattern = (rules[0].host, rules[0].port)
        hops = [(rule.to_host or target.host, rule.to_port or target.port) for rule in rules
                if (rule.host, rule.port) == pattern]
    else:
        hops = [(target.host, target.port)]
    addresses: list[tuple[str, int]] = []
    for name, port in hops:
        try:
            addresses.extend((address, port) for address in _resolve(name, port, settings))
        except (OSError, UnicodeError) as exc:
            route.error = f"cannot resolve {name}: {getattr(exc, 'strerror', None) or exc}"
            return route
    per_node = len(addresses) > 1
    route.nodes = [Node(target.host, target.port, address, port, per_node) for address, port in addresses]
    return route


def _resolve(name: str, port: int, settings: ProbeSettings) -> list[str]:
    try:
        return [str(ipaddress.ip_address(name))]
    except ValueError:
        pass
    for rule in settings.resolve:
        if (rule.host, rule.port) == (name, port):
            return list(rule.addresses)
    infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)
    return [str(infos[0][4][0])]


# ----------------------------------------------------------------------------------------------- probing
class _Prober:
    def __init__(self, settings: ProbeSettings) -> None:
        self.settings = settings
        # One context for every request: TLS 1.2 or newer, certificates verified against the CA bundle (or the
        # system store); the legacy versions live only in probes.tls's one-version test contexts.
        context = ssl.create_default_context(cafile=settings.ca_bundle)  # None: the system store
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.context = context
        self.tls_contexts = TlsContexts(settings.ca_bundle)

    def probe_node(self, node: Node, target: HostTarget, email: str | None) -> list[SourceResult]:
        results: list[SourceResult] = []
        with _NodeClient(node, self.context, self.settings.timeout) as client:
            for protocol, path in PROTOCOL_PATHS.items():
                results.append(self._bearer(client, node, protocol, path))
            if target.autodiscover:
                for protocol in AUTODISCOVER_V2_PROTOCOLS:
                    results.append(self._autodiscover(client, node, protocol, email))
            # A node that never answered is not asked again for four handshakes; a TLS failure is exactly what
            # the TLS probe explains, so that one still runs.
            unreachable = client.failure if client.failure and not client.failed_in_tls else None
        results.append(self._tls(node, unreachable))
        return results

    def _bearer(self, client: "_NodeClient", node: Node, protocol: str, path: str) -> SourceResult:
        url = node.url(path)
        command = f"GET {url} with 'Authorization: Bearer' (empty), anonymous, connected to {node.via}"
        with timed("probe.bearer", command, scope=node.scope(url)) as box:
            response, _ = client.get(path, bearer=True)
            challenges = parse_challenges(response.headers.get_list("www-authenticate"))
            box["data"] = {
                "url": url, "host": node.host, "path": path, "protocol": protocol, "address": node.address,
                "status": response.status_code,
                "www_authenticate": [challenge.raw for challenge in challenges],
                "bearer": bearer_challenge(challenges),
                "x_ms_diagnostics": response.headers.get("x-ms-diagnostics"),
                "x_feserver": response.headers.get("x-feserver"),
                "request_id": response.headers.get("request-id"),
                "location": response.headers.get("location"),
            }
        return box["result"]

    def _autodiscover(self, client: "_NodeClient", node: Node, protocol: str, email: str | None) -> SourceResult:
        # https://learn.microsoft.com/exchange/clients/outlook-for-ios-and-android/use-hybrid-modern-auth: the
        # Autodiscover v2 answer names the ActiveSync (and EWS) URL a token will be requested for.
        path = f"/autodiscover/autodiscover.json?Email={quote(email or '', safe='@')}&Protocol={protocol}" \
               "&RedirectCount=1"
        url = node.url(path)
        command = f"GET {url}, anonymous, connected to {node.via}"
        with timed("probe.autodiscover_v2", command, scope=node.scope(node.url(
                f"/autodiscover/autodiscover.json?Protocol={protocol}"))) as box:
            if email is None:
                raise LookupError("no mailbox address to ask for: exchange.mailboxes holds none and "
                                  "probes.autodiscover_email is not set")
            response, body = client.get(path, bearer=False)
            returned = _autodiscover_url(response, body)
            box["data"] = {
                "url": url, "host": node.host, "protocol": protocol, "address": node.address,
                "status": response.status_code, "returned_url": returned,
                "returned_host": _url_host(returned), "location": response.headers.get("location"),
            }
        return box["result"]

    def _tls(self, node: Node, unreachable: str | None) -> SourceResult:
        name = f"{node.host}:{node.port}"
        command = f"TLS 1.0, 1.1, 1.2 and 1.3 handshakes to {name} at {node.via}, then the certificate"
        with timed("probe.tls", command, scope=node.scope(name)) as box:
            if unreachable is not None:
                raise NotAttempted(f"an earlier request to this node failed: {unreachable}")
            try:
                record = probe_tls(node.host, node.address, node.connect_port, timeout=self.settings.timeout,
                                   contexts=self.tls_contexts)
            except Unreachable as exc:
                raise ConnectionError(str(exc)) from None
            if record["certificate"] is None and all(v is None for v in record["versions"].values()):
                raise ConnectionError("no handshake completed: " + "; ".join(
                    f"{version}: {reason}" for version, reason in record["version_errors"].items()))
            # Each name gets its own handshake with its own SNI, so the certificate to judge for a name is the one
            # served for that name: a server with SNI bindings may legitimately serve others elsewhere.
            box["data"] = {"host": node.host, "port": node.port, "address": node.address, **record,
                           "names_in_scope": [node.host]}
        return box["result"]


class _NodeClient:
    """httpx pinned to one node: the TCP connection goes to the node's address, SNI and Host carry the name (as
    curl --resolve does). Anonymous by construction: no auth, no cookies kept, no proxy or netrc from the
    environment, GET only. After a connection or TLS failure the node's remaining probes are not attempted; a
    path that connects but does not answer (a hung application pool) costs only that path, unless a second one
    times out too: then the host is silent and the rest is skipped, so a dead node costs two timeouts at most."""

    def __init__(self, node: Node, context: ssl.SSLContext, timeout: float) -> None:
        self.node = node
        self.timeout = timeout
        self.failure: str | None = None
        self.failed_in_tls = False
        self.timeouts = 0
        self.client = httpx.Client(
            verify=context, timeout=httpx.Timeout(timeout), trust_env=False, follow_redirects=False,
            cookies=_no_cookies(), headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            event_hooks={"request": [_assert_anonymous]},
        )
        host = f"[{node.address}]" if ":" in node.address else node.address
        self.base = f"https://{host}:{node.connect_port}"
        self.host_header = node.host if node.port == 443 else f"{node.host}:{node.port}"

    def __enter__(self) -> "_NodeClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()

    def get(self, path: str, *, bearer: bool) -> tuple[httpx.Response, bytes]:
        if self.failure is not None:
            raise NotAttempted(f"an earlier request to this node failed: {self.failure}")
        headers = {"Host": self.host_header}
        if bearer:
            headers["Authorization"] = EMPTY_BEARER
        request = self.client.build_request("GET", self.base + path, headers=headers,
                                            extensions={"sni_hostname": self.node.host})
        try:
            response = self.client.send(request, stream=True)
            try:
                body = _read_limited(response)
            finally:
                response.close()
        except httpx.TransportError as exc:
            self.failed_in_tls = _tls_cause(exc) is not None
            message = f"{type(exc).__name__} on {self.node.url(path)} at {self.node.via}: {_describe(exc, self.timeout)}"
            self.timeouts += isinstance(exc, httpx.TimeoutException)
            if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)) or self.failed_in_tls or self.timeouts >= 2:
                self.failure = message   # the node itself is unreachable: its other probes would only wait too
            raise ConnectionError(message) from None
        return response, body


def _assert_anonymous(request: httpx.Request) -> None:
    """The read-only promise in code, at the transport (after any auth flow, for every request the client sends):
    a GET, and the only Authorization ever sent is the empty Bearer."""
    if request.method != "GET":
        raise AssertionError(f"probes send GET only, not {request.method}")
    if request.headers.get("authorization", EMPTY_BEARER) != EMPTY_BEARER or "cookie" in request.headers \
            or "proxy-authorization" in request.headers:
        raise AssertionError("probes are anonymous: a credential was about to be sent")


def _no_cookies() -> http.cookiejar.CookieJar:
    """A jar that refuses every cookie, so a pre-authenticating proxy's session cookie is never sent back."""
    return http.cookiejar.CookieJar(policy=http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))


def _read_limited(response: httpx.Response) -> bytes:
    body = bytearray()
    for chunk in response.iter_bytes():
        body.extend(chunk)
        if len(body) >= MAX_BODY:
            break
    return bytes(body[:MAX_BODY])


def _tls_cause(exc: BaseException) -> ssl.SSLError | None:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLError):
            return cause
        cause = cause.__cause__ or cause.__context__
    return None


def _describe(exc: Exception, timeout: float) -> str:
    """The root cause in one line: 'TLS certificate verification failed: certificate has expired', 'no answer…'."""
    if isinstance(exc, httpx.TimeoutException):
        return f"no answer within {timeout:g} s"
    cause = _tls_cause(exc)
    if isinstance(cause, ssl.SSLCertVerificationError):
        return f"TLS certificate verification failed: {cause.verify_message}"
    if cause is not None:
        return f"TLS handshake failed: {cause.reason or cause}"
    return str(exc) or type(exc).__name__


def _autodiscover_url(response: httpx.Response, body: bytes) -> str | None:
    """The Url of a 200 JSON answer ({"Protocol": "ActiveSync", "Url": "https://…"}), else None."""
    if response.status_code != 200:
        return None
    try:
        document = json.loads(body.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError):
        return None
    url = document.get("Url") if isinstance(document, dict) else None
    return url if isinstance(url, str) else None


def _url_host(url: str | None) -> str | None:
    if url is None:
        return None
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return None
    return host if host and is_host_name(host) else None


def _mailbox_address(snapshot: Snapshot) -> str | None:
    """A real mailbox to ask Autodiscover about: the first user mailbox of exchange.mailboxes."""
    result = snapshot.sources.get("exchange.mailboxes")
    if result is None or not result.ok or not isinstance(result.data, list):
        return None
    for mailbox in result.data:
        if isinstance(mailbox, dict) and mailbox.get("RecipientTypeDetails") == "UserMailbox" \
                and isinstance(mailbox.get("PrimarySmtpAddress"), str):
            return mailbox["PrimarySmtpAddress"]
    return None


# ------------------------------------------------------------------------------------------------- records
def _targets_result(plan: ProbePlan) -> SourceResult:
    return SourceResult.ok_result("probe.targets", {
        "targets": [target.to_json() for target in plan.targets],
        "unknown": [unknown.to_json() for unknown in plan.unknown],
        "ignored": plan.ignored,
    }, command="host names from the InternalUrl/ExternalUrl of the MAPI, EWS, OAB, Autodiscover and ActiveSync "
               "virtual directories, AutodiscoverServiceInternalUri and probes.hosts")


def _unknown_results(plan: ProbePlan) -> list[SourceResult]:
    """Error results where the probes' own checks look: the hosts a failed source holds were not probed."""
    results = []
    for unknown in plan.unknown:
        scope = f"hosts of {unknown.source}"
        error = f"not probed: the host names in {unknown.source} are unknown ({unknown.reason})"
        names = ["probe.bearer", "probe.tls"] + (["probe.autodiscover_v2"] if unknown.autodiscover else [])
        results.extend(SourceResult.error_result(name, error, command="", scope=scope) for name in names)
    return results


def _failed_results(target: HostTarget, node: Node | None, error: str) -> list[SourceResult]:
    """Error results for every probe of a target (or one node of it) that could not run at all."""
    node = node or Node(target.host, target.port, "", target.port, False)
    command = f"probes of {target.host}:{target.port}"

    def failed(name: str, scope: str) -> SourceResult:
        return SourceResult.error_result(name, error, command=command, scope=node.scope(scope))

    results = [failed("probe.bearer", node.url(path)) for path in PROTOCOL_PATHS.values()]
    if target.autodiscover:
        results.extend(failed("probe.autodiscover_v2", node.url(f"/autodiscover/autodiscover.json?Protocol={p}"))
                       for p in AUTODISCOVER_V2_PROTOCOLS)
    results.append(failed("probe.tls", f"{target.host}:{target.port}"))
    return results
