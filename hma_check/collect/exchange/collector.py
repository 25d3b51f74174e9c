"""The live Exchange collector: every ``exchange.*`` source, read through remote PowerShell, fanned out per server.

The first session opens alone (a refused password costs one attempt, not one per session). Get-ExchangeServer then
runs on it while the other workers open their sessions and take the organisation-wide queries that do not depend on
the server list; each server's queries join the queue as its object arrives (a long list comes in several Receives),
and once the list is complete, the organisation-wide queries that need the servers' builds. If Get-ExchangeServer
fails after all, the per-server queries are withdrawn and their results dropped, as if none had been sent.
``concurrency`` worker threads each hold their own session (a pypsrp RunspacePool is never shared between threads).
A throttled call backs off and retries; a timed-out or broken call, or one whose answer cannot be read, fails only
its own source, which always gets a result; a server whose calls fail leaves every other server's evidence intact.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from hma_check.collect.clixml import ClixmlObject
from hma_check.collect.exchange.config import ExchangeSettings
from hma_check.collect.exchange.objects import ShapeError, shape
from hma_check.collect.kerberos import KerberosFailure, sign_in
from hma_check.collect.psrp_client import CallFailed, RemoteSession, given_up_reason, powershell_text, redact
from hma_check.collect.context import Progress, RunContext, section_password
from hma_check.errors import ClixmlError
from hma_check.contract.snapshot import SourceResult, iso_utc, utc_now
from hma_check.contract.sources import BY_NAME

Params = tuple[tuple[str, Any], ...]
ALL = (("ResultSize", "Unlimited"),)


@dataclass(frozen=True)
class Query:
    source: str
    cmdlet: str
    params: Params = ()
    scope: str | None = None
    fallback: str | None = None        # an older cmdlet name to try when this one does not exist (2013)
    absent_means_skipped: str | None = None   # why a missing cmdlet is "not applicable", not an error

    @property
    def command(self) -> str:
        return powershell_text(self.cmdlet, self.params)


# Organisation-wide sources, in the contract's order (hma_check/contract/sources.py).
ORG_QUERIES: tuple[Query, ...] = (
    Query("exchange.organization_config", "Get-OrganizationConfig"),
    Query("exchange.auth_servers", "Get-AuthServer"),
    Query("exchange.partner_applications", "Get-PartnerApplication"),
    Query("exchange.auth_config", "Get-AuthConfig"),
    Query("exchange.hybrid_configuration", "Get-HybridConfiguration"),
    Query("exchange.intra_organization_connectors", "Get-IntraOrganizationConnector"),
    Query("exchange.setting_overrides", "Get-SettingOverride"),
    Query("exchange.client_access_services", "Get-ClientAccessService", fallback="Get-ClientAccessServer"),
    Query("exchange.accepted_domains", "Get-AcceptedDomain"),
    Query("exchange.mailboxes", "Get-Mailbox", ALL),
    Query("exchange.admin_users", "Get-RoleGroupMember", (("Identity", "Organization Management"),)),
    Query("exchange.authentication_policies", "Get-AuthenticationPolicy",
          absent_means_skipped="Get-AuthenticationPolicy does not exist on this Exchange version "
                               "(authentication policies arrived in Exchange 2019 CU2)"),
    Query("exchange.user_authentication_policies", "Get-User",
          (("ResultSize", "Unlimited"), ("Filter", "AuthenticationPolicy -ne $null"))),
    Query("exchange.cas_mailboxes_mapi_disabled", "Get-CASMailbox",
          (("ResultSize", "Unlimited"), ("Filter", "MapiHttpEnabled -eq $false"))),
    Query("exchange.activesync_organization_settings", "Get-ActiveSyncOrganizationSettings"),
    Query("exchange.activesync_device_access_rules", "Get-ActiveSyncDeviceAccessRule"),
)

# Per-server sources. Virtual directories are read without -ADPropertiesOnly: the IIS truth matters, and Active
# Directory alone can disagree with it (the Exchange team's HMA announcement, https://blogs.technet.microsoft.com/exchange/2017/12/06/announcing-hybrid-modern-authentication-for-exchange-on-premises/). The certificate list is per server because the
# Auth certificate must be on every one of them.
SERVER_CMDLETS: tuple[tuple[str, str], ...] = (
    ("exchange.mapi_virtual_directories", "Get-MapiVirtualDirectory"),
    ("exchange.web_services_virtual_directories", "Get-WebServicesVirtualDirectory"),
    ("exchange.oab_virtual_directories", "Get-OabVirtualDirectory"),
    ("exchange.autodiscover_virtual_directories", "Get-AutodiscoverVirtualDirectory"),
    ("exchange.activesync_virtual_directories", "Get-ActiveSyncVirtualDirectory"),
    ("exchange.owa_virtual_directories", "Get-OwaVirtualDirectory"),
    ("exchange.ecp_virtual_directories", "Get-EcpVirtualDirectory"),
    ("exchange.outlook_anywhere", "Get-OutlookAnywhere"),
    ("exchange.exchange_certificates", "Get-ExchangeCertificate"),
)
SERVERS_QUERY = Query("exchange.servers", "Get-ExchangeServer")
# The organisation-wide queries whose sending does not depend on Get-ExchangeServer's answer: every one without a
# minimum build (one with a minimum build is skipped when no server runs that build, _org_queries).
UNGATED_QUERIES: tuple[Query, ...] = tuple(q for q in ORG_QUERIES if BY_NAME[q.source].minimum_build is None)
GATED_QUERIES: tuple[Query, ...] = tuple(q for q in ORG_QUERIES if q not in UNGATED_QUERIES)


@dataclass
class _Shared:
    settings: ExchangeSettings
    password: str | None
    login: Any          # kerberos.Login for auth kerberos/negotiate, made once for every session
    secrets: tuple[str, ...]
    progress: Progress
    results: list[SourceResult]
    lock: threading.Lock
    open_sessions: int = 0
    fatal: str | None = None
    pending: deque[Query] = field(default_factory=deque)   # guarded by ``more`` (whose lock is ``lock``)
    withdrawn: set[tuple[str, str | None]] = field(default_factory=set)   # (source, scope) whose results are dropped
    queued: bool = False          # every query of the scan is in ``pending`` (or taken): an empty queue means done
    unresponsive: dict[str, str] = field(default_factory=dict)   # the scan's given-up servers (runner.RunContext)
    more: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self.more = threading.Condition(self.lock)

    def give(self, queries: Iterable[Query], *, last: bool = False) -> None:
        """Queue ``queries``; ``last``: nothing more will come, so a worker finding the queue empty can stop."""
        with self.more:
            self.pending.extend(queries)
            self.queued = self.queued or last
            self.more.notify_all()

    def take(self) -> Query | None:
        """The next query, waiting while the queue is empty and more may come; None when the work is done."""
        with self.more:
            while not self.pending and not self.queued:
                self.more.wait()
            return self.pending.popleft() if self.pending else None


def collect_exchange(settings: ExchangeSettings, password: str | None, *, progress: Progress | None = None,
                     sleep: Callable[[float], None] = time.sleep,
                     unresponsive: dict[str, str] | None = None) -> list[SourceResult]:
    """Every exchange.* source (organisation-wide once, per-server once per server); never raises for a fault.

    A per-server call that gets no answer in time gives that server up: its queries not yet sent are errors saying
    so, and ``unresponsive`` (shared with the OS collector) records it, so a hung server costs one timeout.
    """
    progress = progress or Progress()
    secrets = tuple(s for s in (password,) if s)
    try:
        login = sign_in(settings, password, section="exchange")
    except KerberosFailure as failure:
        # No ticket, a refused password, no KDC, a skewed clock: the same for every query, so none is sent.
        text = redact(failure.message, secrets)
        return [_error(q, text, utc_now(), 0) for q in (SERVERS_QUERY, *ORG_QUERIES)]
    shared = _Shared(settings, password, login, secrets, progress, [], threading.Lock(),
                     unresponsive=unresponsive if unresponsive is not None else {})
    first = RemoteSession(settings, password, login=login)
    try:
        try:
            first.open()
        except CallFailed as failure:
            # Nothing can be read: every organisation-wide source carries the reason, so the report says why.
            text = redact(failure.message, secrets)
            return [_error(q, text, utc_now(), 0) for q in (SERVERS_QUERY, *ORG_QUERIES)]
        shared.open_sessions = 1
        # Get-ExchangeServer has to come first for the per-server queries (it names the servers), but not for most
        # organisation-wide ones: the other workers open their sessions while it runs and take those meanwhile, so
        # neither the session opens nor that wave of queries waits for it. No more of them start than there are
        # such queries, so none of their sessions is opened for nothing.
        early = max(0, min(settings.concurrency, len(UNGATED_QUERIES)) - 1)
        workers: list[threading.Thread] = []
        queries: list[Query] = []
        skipped: list[SourceResult] = []
        stream = _ServerStream(shared)
        # They are started by a thread of their own: each start waits until the new thread runs, while those
        # already started are busy signing in, so starting them all here held Get-ExchangeServer back (~0.1 s).
        starter = threading.Thread(target=_start_early, args=(workers, shared, sleep, early),
                                   name="exchange-collector-start", daemon=True)
        try:   # whatever fails in here, the finally tells the workers already started that no more work comes
            progress.start(1 + len(UNGATED_QUERIES))
            shared.give(UNGATED_QUERIES)
            starter.start()
            servers_result = _run_query(first, SERVERS_QUERY, shared, sleep, on_output=stream.tell)
            queries = list(_org_queries(servers_result, skipped, GATED_QUERIES))
            # Which per-server queries the scan has is decided on the whole list, as before: the ones streamed
            # that it has are not queued again, any other is withdrawn.
            queries += stream.settle(list(_server_queries(servers_result.data, skipped)) if servers_result.ok else [])
            with shared.lock:
                shared.results.append(servers_result)
                shared.results.extend(skipped)
            progress.start(1 + len(UNGATED_QUERIES) + len(stream.sent) + len(queries))   # announced again, in all
            progress.advance(SERVERS_QUERY.command, servers_result.ok)
        finally:
            stream.settle(None)
            shared.give(queries, last=True)
            if starter.ident is not None:
                starter.join()
        total = len(UNGATED_QUERIES) + len(stream.sent) + len(queries)
        workers.append(_start(shared, first, sleep, 0, open_first=False))
        workers += [_start(shared, None, sleep, index, open_first=False)
                    for index in range(early + 1, min(settings.concurrency, total))]
        for worker in workers:
            worker.join()
        if shared.pending:
            _worker(shared, None, sleep)   # queries handed back by workers that retired late
        if shared.withdrawn:     # the answers of withdrawn queries, not the skips decided on the whole list
            kept = {id(r) for r in skipped}
            shared.results[:] = [r for r in shared.results
                                 if (r.name, r.scope) not in shared.withdrawn or id(r) in kept]
    finally:
        first.close()
    return shared.results


class _ServerStream:
    """Each server's queries queued as Get-ExchangeServer's object for it arrives, before the list is complete.

    ``tell`` runs on the thread that runs Get-ExchangeServer, while it runs (RemoteSession.invoke_pipeline's
    ``on_output``); a retried call tells the same positions again, which are passed over. Skips are not decided here
    (``_org_queries`` and ``_server_queries`` on the whole list do that): only which queries may start early.
    """

    def __init__(self, shared: _Shared) -> None:
        self.shared = shared
        self.told = 0
        self.sent: set[tuple[str, str | None]] = set()   # (source, scope) of every query queued early
        self.open = True

    def tell(self, position: int, obj: ClixmlObject) -> None:
        if not self.open or position < self.told:
            return
        self.told = position + 1
        try:
            fresh = [q for q in _server_queries(shape(SERVERS_QUERY.source, [obj]), [])
                     if (q.source, q.scope) not in self.sent]
        except Exception:  # noqa: BLE001 - an object this cannot read waits for the whole answer, as before
            self.open = False
            return
        self.sent.update((q.source, q.scope) for q in fresh)
        self.shared.give(fresh)

    def settle(self, final: list[Query] | None) -> list[Query]:
        """Of ``final`` (the scan's per-server queries, from the whole list), those not queued yet; every query
        queued early that ``final`` does not have is withdrawn. ``None``: nothing more is known (an error while
        Get-ExchangeServer's answer was read), so the early queries stand. Once settled, nothing changes."""
        if not self.open and final is None:
            return []
        self.open = False
        if final is None:
            return []
        keys = {(q.source, q.scope) for q in final}
        withdrawn = self.sent - keys
        if withdrawn:
            with self.shared.more:
                self.shared.withdrawn |= withdrawn
                kept = [q for q in self.shared.pending if (q.source, q.scope) not in withdrawn]
                self.shared.pending.clear()
                self.shared.pending.extend(kept)
            self.sent -= withdrawn
        return [q for q in final if (q.source, q.scope) not in self.sent]


def _org_queries(servers: SourceResult, results: list[SourceResult],
                 candidates: Iterable[Query] = ORG_QUERIES) -> Iterable[Query]:
    """The organisation-wide queries among ``candidates``; one whose cmdlet or property no server's build has
    (authentication policies before Exchange 2019 CU2) is recorded as skipped with the contract's reason instead of
    failing."""
    for query in candidates:
        spec = BY_NAME[query.source]
        reason = None
        if servers.ok and isinstance(servers.data, list):
            reason = spec.absent_everywhere([s for s in servers.data if isinstance(s, dict)])
        if reason:
            results.append(SourceResult.skipped_result(query.source, reason, command=query.command))
        else:
            yield query


def _server_queries(servers: Any, results: list[SourceResult]) -> Iterable[Query]:
    """One query per server and per-server source; a server the source contract leaves out (an Edge Transport or
    Exchange 2010 server, a 2013 server without the Client Access role) is recorded as skipped with the reason."""
    for server in servers or []:
        name = server.get("Name") if isinstance(server, dict) else None
        if not isinstance(name, str) or not name:
            continue
        for source, cmdlet in SERVER_CMDLETS:
            query = Query(source, cmdlet, (("Server", name),), scope=name)
            reason = BY_NAME[source].excluded(server)
            if reason:
                results.append(SourceResult.skipped_result(source, reason, command=query.command, scope=name))
            else:
                yield query


def _start_early(workers: list[threading.Thread], shared: _Shared, sleep: Callable[[float], None],
                 early: int) -> None:
    """Start the workers that sign in while Get-ExchangeServer runs; one the system refuses to start leaves its
    share of the queue to the others."""
    for index in range(1, early + 1):
        try:
            workers.append(_start(shared, None, sleep, index, open_first=True))
        except RuntimeError:   # "can't start new thread"
            return


def _start(shared: _Shared, session: RemoteSession | None, sleep: Callable[[float], None], index: int, *,
           open_first: bool) -> threading.Thread:
    worker = threading.Thread(target=_worker, args=(shared, session, sleep, open_first),
                              name=f"exchange-collector-{index}", daemon=True)
    worker.start()
    return worker


def _worker(shared: _Shared, session: RemoteSession | None, sleep: Callable[[float], None],
            open_first: bool = False) -> None:
    """Take queries until none is left. ``open_sessions`` counts workers that hold a session right now.
    ``open_first``: open the session before taking a query, while Get-ExchangeServer runs (a worker refused one
    leaves the work to the others); otherwise a session is opened for a query taken."""
    try:
        if open_first:
            session = _open_with_backoff(shared, sleep)
            if session is None:
                return
        while True:
            query = shared.take()
            if query is None:
                return
            if shared.fatal is not None:
                _record(shared, _error(query, shared.fatal, utc_now(), 0))
                continue
            given_up = shared.unresponsive.get(query.scope.casefold()) if query.scope else None
            if given_up is not None:
                _record(shared, _error(query, f"not read: {given_up}", utc_now(), 0))
                continue
            if session is None:
                session = _open_with_backoff(shared, sleep)
                if session is None:
                    if shared.fatal is None:
                        shared.give((query,))   # Exchange allows fewer sessions: a worker that has one takes it
                        return
                    _record(shared, _error(query, shared.fatal, utc_now(), 0))
                    continue
            result = _run_query(session, query, shared, sleep)
            _record(shared, result)
            if session.discard:
                # A timed-out, broken or garbled session may still be busy on the server: start a fresh one.
                session.close()
                session = None
                with shared.lock:
                    shared.open_sessions -= 1
    finally:
        if session is not None:
            session.close()
            with shared.lock:
                shared.open_sessions -= 1


def _open_with_backoff(shared: _Shared, sleep: Callable[[float], None]) -> RemoteSession | None:
    """Open a session; when the throttling policy refuses one more, retire if others are working, else wait."""
    for attempt in range(shared.settings.retries + 1):
        try:
            session = RemoteSession(shared.settings, shared.password, login=shared.login).open()
        except CallFailed as failure:
            if failure.kind != "throttled":
                with shared.lock:
                    if shared.open_sessions == 0 or failure.kind == "credential":
                        shared.fatal = redact(failure.message, shared.secrets)
                return None
            with shared.lock:
                others = shared.open_sessions
            if others > 0:
                return None   # Exchange allows fewer sessions than configured: carry on with the ones we have
            sleep(_backoff(attempt, failure.retry_after))
            continue
        with shared.lock:
            shared.open_sessions += 1
        return session
    with shared.lock:
        if shared.open_sessions == 0:
            shared.fatal = "Exchange refused every session (throttling policy); try again later or lower concurrency"
    return None


def _run_query(session: RemoteSession, query: Query, shared: _Shared, sleep: Callable[[float], None], *,
               on_output: Callable[[int, ClixmlObject], None] | None = None) -> SourceResult:
    started = utc_now()
    t0 = time.perf_counter()
    settings = shared.settings
    cmdlet = query.cmdlet
    attempt = 0
    while True:
        try:
            objects = session.run(cmdlet, query.params, settings.timeout, on_output=on_output)
            data = _data(query, session, objects, settings)
            return SourceResult.ok_result(query.source, data, command=powershell_text(cmdlet, query.params),
                                          scope=query.scope, started=iso_utc(started), duration_ms=_ms(t0))
        except CallFailed as failure:
            if failure.kind == "throttled" and attempt < settings.retries:
                sleep(_backoff(attempt, failure.retry_after))
                attempt += 1
                continue
            if failure.kind == "missing_command" and query.fallback and cmdlet != query.fallback:
                cmdlet = query.fallback
                continue
            if failure.kind == "missing_command" and query.absent_means_skipped:
                return SourceResult.skipped_result(query.source, query.absent_means_skipped,
                                                   command=query.command, scope=query.scope)
            if failure.kind in ("timeout", "broken", "transport", "protocol"):
                session.discard = True
            if failure.kind == "timeout" and query.scope and (query.source, query.scope) not in shared.withdrawn:
                with shared.lock:
                    shared.unresponsive.setdefault(query.scope.casefold(), given_up_reason(
                        query.scope, powershell_text(cmdlet, query.params), settings.timeout))
            text = failure.message
            if failure.kind == "throttled":
                text = f"still throttled after {attempt} retries: {text}"
            return _error(query, redact(text, shared.secrets), started, _ms(t0),
                          command=powershell_text(cmdlet, query.params))
        except (ShapeError, ClixmlError) as exc:
            return _error(query, redact(f"unexpected answer: {exc}", shared.secrets), started, _ms(t0))
        except Exception as exc:  # noqa: BLE001 - a worker that died here would leave its source with no record at all
            session.discard = True
            text = f"hma-check failed reading the answer: {type(exc).__name__}: {exc}"
            return _error(query, redact(text, shared.secrets), started, _ms(t0))


def _data(query: Query, session: RemoteSession, objects: list[ClixmlObject], settings: ExchangeSettings) -> Any:
    if query.source != "exchange.admin_users":
        return shape(query.source, objects)
    # Organization Management members come back as reduced recipients; Get-User gives the properties checks need.
    users: list[ClixmlObject] = []
    for member in objects:
        identity = member.get("Identity") or member.get("Name")
        if not isinstance(identity, str) or not identity:
            raise CallFailed("protocol", "a role group member has no Identity")
        if "group" in str(member.get("RecipientType") or "").lower():
            # Its members are administrators too, and hma-check does not expand nested groups: a list without them
            # could pass HMA-ID-004 on missing data, so the source is an error that says what to check by hand.
            raise CallFailed("cmdlet", f"Organization Management contains the group {identity!r}: nested groups are "
                                       "not expanded, so the administrator list is incomplete; check its members "
                                       "by hand")
        found = session.run("Get-User", (("Identity", identity),), settings.timeout)
        users.extend(found)
    return shape(query.source, users)


def _backoff(attempt: int, retry_after: float | None) -> float:
    base = min(30.0, 0.25 * (2 ** attempt))
    wait = max(base, min(retry_after or 0.0, 60.0))
    return wait * random.uniform(1.0, 1.5)


def _record(shared: _Shared, result: SourceResult) -> None:
    with shared.lock:
        if (result.name, result.scope) in shared.withdrawn:
            return      # a query withdrawn while it ran: as if it had not been sent
        shared.results.append(result)
    shared.progress.advance(result.command, result.ok)


def _error(query: Query, text: str, started: Any, duration_ms: int, command: str | None = None) -> SourceResult:
    return SourceResult.error_result(query.source, text, command=command or query.command, scope=query.scope,
                                     started=iso_utc(started), duration_ms=duration_ms)


def _ms(t0: float) -> int:
    return int((time.perf_counter() - t0) * 1000)


def run_exchange(settings: ExchangeSettings, context: RunContext) -> list[SourceResult]:
    """The registry's runner for the exchange: section."""
    password = exchange_password(settings, context)
    progress = context.progress("exchange")
    try:
        return collect_exchange(settings, password, progress=progress, unresponsive=context.unresponsive)
    finally:
        progress.finish()


def exchange_password(settings: ExchangeSettings, context: RunContext) -> str | None:
    return section_password("exchange", settings, context, settings.server)
