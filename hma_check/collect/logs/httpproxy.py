"""Exchange's HttpProxy logs, streamed: who used which client, protocol and authentication type (logs.httpproxy).

Exchange's front end writes one line per client request to ``<install path>\\Logging\\HttpProxy\\<Protocol>\\
HttpProxy_<yyyyMMddHH>-<n>.LOG``: a CSV header line, ``#Software``, ``#Version``, ``#Log-type: HttpProxy Logs``,
``#Date`` and ``#Fields`` lines, then CSV rows. Columns are found by name from ``#Fields`` (or the plain header line),
never by position, so a build that adds fields still reads. Only DateTime, Protocol, AuthenticationType,
IsAuthenticated, AuthenticatedUser, UserAgent and ServerHostName are read: ClientIpAddress, AnchorMailbox, UrlQuery
and the rest never leave the CSV reader, so client IP addresses are not kept anywhere.

Files are read line by line (plain or gzip), never whole; a malformed line is counted (with the first few named by
file and line) and never stops the import. Memory is bounded: distinct user agents, client groups and user-in-group
pairs beyond the caps below are counted as not tracked instead of growing without limit.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import hmac
import io
import os
import zlib
from dataclasses import dataclass, field
from typing import IO, Any, Iterable

from hma_check.collect.logs import user_agents
from hma_check.collect.logs.user_agents import Client

# The HttpProxy log of Exchange 2016 CU23 and Exchange 2019 CU12 and later, Exchange SE (74 fields, in this order),
# as published with real lines at https://artefacts.help/microsoft_exchange.html (docs/clients.md).
FIELDS: tuple[str, ...] = (
    "DateTime", "RequestId", "MajorVersion", "MinorVersion", "BuildVersion", "RevisionVersion", "ClientRequestId",
    "Protocol", "UrlHost", "UrlStem", "ProtocolAction", "AuthenticationType", "IsAuthenticated", "AuthenticatedUser",
    "Organization", "AnchorMailbox", "UserAgent", "ClientIpAddress", "ServerHostName", "HttpStatus", "BackEndStatus",
    "ErrorCode", "Method", "ProxyAction", "TargetServer", "TargetServerVersion", "RoutingType", "RoutingHint",
    "BackEndCookie", "ServerLocatorHost", "ServerLocatorLatency", "RequestBytes", "ResponseBytes",
    "TargetOutstandingRequests", "AuthModulePerfContext", "HttpPipelineLatency", "CalculateTargetBackEndLatency",
    "GlsLatencyBreakup", "TotalGlsLatency", "AccountForestLatencyBreakup", "TotalAccountForestLatency",
    "ResourceForestLatencyBreakup", "TotalResourceForestLatency", "ADLatency", "SharedCacheLatencyBreakup",
    "TotalSharedCacheLatency", "ActivityContextLifeTime", "ModuleToHandlerSwitchingLatency", "ClientReqStreamLatency",
    "BackendReqInitLatency", "BackendReqStreamLatency", "BackendProcessingLatency", "BackendRespInitLatency",
    "BackendRespStreamLatency", "ClientRespStreamLatency", "KerberosAuthHeaderLatency", "HandlerCompletionLatency",
    "RequestHandlerLatency", "HandlerToModuleSwitchingLatency", "ProxyTime", "CoreLatency", "RoutingLatency",
    "HttpProxyOverhead", "TotalRequestTime", "RouteRefresherLatency", "UrlQuery", "BackEndGenericInfo", "GenericInfo",
    "GenericErrors", "EdgeTraceId", "DatabaseGuid", "UserADObjectGuid", "PartitionEndpointLookupLatency",
    "RoutingStatus",
)
READ = ("DateTime", "Protocol", "AuthenticationType", "IsAuthenticated", "AuthenticatedUser", "UserAgent",
        "ServerHostName")
LOG_TYPE = "#Log-type: HttpProxy Logs"
# Protocols Exchange 2019's authentication policies can block legacy authentication for (BlockLegacyAuth*), by the
# name the HttpProxy log gives them (https://learn.microsoft.com/exchange/hybrid-deployment/block-legacy-auth-2019-hybrid).
BLOCKABLE = {"Eas": "ActiveSync", "Autodiscover": "Autodiscover", "Mapi": "Mapi", "Oab": "OfflineAddressBook",
             "RpcHttp": "Rpc", "Ews": "WebServices"}

# Bounds: far above a real organisation (tens of thousands of users, a few thousand distinct user agents), small
# enough that a hostile file cannot exhaust memory.
MAX_AGENTS = 20_000          # distinct UserAgent strings classified and counted one by one
MAX_GROUPS = 20_000          # Protocol x AuthenticationType x client groups
MAX_PAIRS = 1_000_000        # (group, user) pairs tracked for distinct users and per-user rows
MAX_EXAMPLES = 20            # malformed lines named in the evidence
TOP_AGENTS = 25
MAX_FILE_BYTES = 4 * 1024 ** 3      # one log file, after inflation
MAX_RATIO = 200                     # gzip members inflating more than this are refused
_TRUE = frozenset({"true", "True", "TRUE"})
OTHER_AGENTS = "(other user agents: more than the tracked limit)"


class LogFormatError(Exception):
    """A file that cannot be read as an HttpProxy log at all (it is listed as malformed, the import goes on)."""


def looks_like_httpproxy(head: bytes) -> bool:
    """Whether the first bytes of a file are an HttpProxy log's header (plain or gzip)."""
    if head[:2] == b"\x1f\x8b":
        try:
            head = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head, 64 * 1024)
        except zlib.error:
            return False
    text = head[:64 * 1024].decode("utf-8-sig", errors="replace")
    lines = text.splitlines()[:8]
    if any(line.strip() == LOG_TYPE for line in lines):
        return True
    return bool(lines) and lines[0].startswith("DateTime,RequestId,") and ",AuthenticationType," in lines[0] \
        and ",UserAgent," in lines[0]


def other_exchange_log(head: bytes) -> str | None:
    """'EWS Logs', 'Message Tracking Log'...: the log type of another Exchange log, to say why it is skipped."""
    text = head[:8192].decode("utf-8-sig", errors="replace")
    for line in text.splitlines()[:8]:
        if line.startswith("#Log-type: "):
            return line[len("#Log-type: "):].strip()[:60]
    return None


@dataclass
class _Group:
    requests: int = 0
    first: str = "\uffff"
    last: str = ""
    users: dict[str, list[Any]] = field(default_factory=dict)   # user -> [requests, last seen]


@dataclass
class Malformed:
    lines: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)

    def add(self, file: str, line: int, reason: str, count: int = 1) -> None:
        self.lines += count
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append({"file": file, "line": line, "reason": reason})


class _Limited(io.RawIOBase):
    """A read-only stream that refuses to give more than ``limit`` bytes (a log that inflates without end)."""

    def __init__(self, inner: IO[bytes], limit: int) -> None:
        self.inner = inner
        self.left = limit
        self.exceeded = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.left <= 0:
            self.exceeded = True
            return 0
        view = memoryview(buffer)[:min(len(buffer), self.left)]
        data = self.inner.read(len(view))
        view[:len(data)] = data
        self.left -= len(data)
        return len(data)


class ClientLogs:
    """Aggregates HttpProxy log lines into the logs.httpproxy facts. ``add_file`` streams one file; ``add_counts``
    takes pre-grouped counts (the live summary); ``result`` gives the source data."""

    def __init__(self) -> None:
        self.groups: dict[tuple[str, str, bool, int], _Group] = {}
        self.clients: list[Client] = []
        self._client_ids: dict[Client, int] = {}
        self._agent_ids: dict[str, int] = {}
        self.agent_requests: dict[str, list[int]] = {}     # UserAgent -> [requests, client id]
        self.untracked_agents = 0
        self.daily: dict[tuple[str, str, str, bool, int], int] = {}   # (date, protocol, type, signed in, client)
        self.servers: dict[str, list[Any]] = {}            # ServerHostName -> [requests, first, last]
        self.malformed = Malformed()
        self.files = 0
        self.lines = 0
        self.requests = 0
        self.pairs = 0
        self.untracked_pairs = 0
        self.untracked_groups = 0
        self.granularity = "request"

    # --------------------------------------------------------------------------------------------- clients
    def _client_id(self, agent: str) -> int:
        found = self._agent_ids.get(agent)
        if found is not None:
            return found
        client = user_agents.classify(agent)
        cid = self._client_ids.get(client)
        if cid is None:
            cid = self._client_ids[client] = len(self.clients)
            self.clients.append(client)
        if len(self._agent_ids) < MAX_AGENTS:
            self._agent_ids[agent] = cid
        return cid

    # ------------------------------------------------------------------------------------------- reading
    def add_file(self, name: str, stream: IO[bytes], *, compressed_size: int | None = None) -> None:
        """Stream one log file (plain or gzip). LogFormatError when it is not an HttpProxy log at all."""
        head = stream.read(2)
        rest: IO[bytes] = Prefixed(head, stream)
        if head == b"\x1f\x8b":
            limit = MAX_FILE_BYTES
            if compressed_size:
                limit = min(limit, MAX_RATIO * compressed_size + 1024 * 1024)
            rest = gzip.GzipFile(fileobj=rest, mode="rb")   # type: ignore[assignment]
        else:
            limit = MAX_FILE_BYTES
        limited = _Limited(rest, limit)
        text = io.TextIOWrapper(io.BufferedReader(limited, 256 * 1024), encoding="utf-8-sig", errors="replace",
                                newline="")
        self.files += 1
        try:
            self._rows(name, csv.reader(text))
        except LogFormatError:
            raise
        except (OSError, EOFError, zlib.error, UnicodeError) as exc:
            self.malformed.add(name, 0, f"the file could not be read to its end: {exc}")
        if limited.exceeded:
            self.malformed.add(name, 0, f"inflates past {limit} bytes; the rest was not read")

    def _rows(self, name: str, reader: Any) -> None:
        """The hot loop: one pass, a handful of dict operations per line (benchmarks/httpproxy_import.py)."""
        groups, daily, servers, agent_ids = self.groups, self.daily, self.servers, self._agent_ids
        client_id, agent_requests = self._client_id, self.agent_requests
        width = -1
        i_dt = i_proto = i_auth = i_isauth = i_user = i_ua = i_srv = 0
        seen_header = False
        lines = requests = 0
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                lines += 1
                self.malformed.add(name, reader.line_num, f"not CSV: {exc}")
                continue
            lines += 1
            if len(row) != width:
                first = row[0] if row else ""
                if first.startswith("#"):
                    if first.startswith("#Fields:"):
                        fields = [first[len("#Fields:"):].strip(), *row[1:]]
                        width, indexes = _indexes(fields, name, reader.line_num)
                        i_dt, i_proto, i_auth, i_isauth, i_user, i_ua, i_srv = indexes
                        seen_header = True
                    continue
                if not row or (len(row) == 1 and not first.strip()):
                    continue
                if first == "DateTime" and "AuthenticationType" in row:      # the plain header line
                    width, indexes = _indexes(row, name, reader.line_num)
                    i_dt, i_proto, i_auth, i_isauth, i_user, i_ua, i_srv = indexes
                    seen_header = True
                    continue
                reason = (f"{len(row)} fields where the header has {width}" if seen_header
                          else "a data line before any #Fields header")
                self.malformed.add(name, reader.line_num, reason)
                continue
            moment = row[i_dt]
            if len(moment) < 19 or moment[4] != "-" or moment[10] != "T":
                first = row[0]
                if first.startswith("#Fields:"):     # a #Fields line as wide as the plain header before it
                    width, indexes = _indexes([first[len("#Fields:"):].strip(), *row[1:]], name, reader.line_num)
                    i_dt, i_proto, i_auth, i_isauth, i_user, i_ua, i_srv = indexes
                elif not first.startswith("#") and first != "DateTime":
                    self.malformed.add(name, reader.line_num, f"DateTime {moment[:40]!r} is not an ISO 8601 time")
                continue
            requests += 1
            protocol = row[i_proto]
            authentication = row[i_auth]
            authenticated = row[i_isauth] in _TRUE
            agent = row[i_ua]
            cid = agent_ids.get(agent)
            if cid is None:
                cid = client_id(agent)
            counted = agent_requests.get(agent)
            if counted is not None:
                counted[0] += 1
            elif len(agent_requests) < MAX_AGENTS:
                agent_requests[agent] = [1, cid]
            else:
                self.untracked_agents += 1
            key = (protocol, authentication, authenticated, cid)
            group = groups.get(key)
            if group is None:
                group = self._group(key)
            group.requests += 1
            if moment < group.first:
                group.first = moment
            if moment > group.last:
                group.last = moment
            if authenticated:
                user = row[i_user]
                if user:
                    entry = group.users.get(user)
                    if entry is not None:
                        entry[0] += 1
                        if moment > entry[1]:
                            entry[1] = moment
                    elif self.pairs < MAX_PAIRS:
                        group.users[user] = [1, moment]
                        self.pairs += 1
                    else:
                        self.untracked_pairs += 1
            day = (moment[:10], protocol, authentication, authenticated, cid)
            daily[day] = daily.get(day, 0) + 1
            server = servers.get(row[i_srv])
            if server is None:
                servers[row[i_srv]] = [1, moment, moment]
            else:
                server[0] += 1
                if moment < server[1]:
                    server[1] = moment
                if moment > server[2]:
                    server[2] = moment
        self.lines += lines
        self.requests += requests

    def _group(self, key: tuple[str, str, bool, int]) -> _Group:
        if len(self.groups) >= MAX_GROUPS:
            self.untracked_groups += 1
            key = ("(other)", "(other)", key[2], self._client_id(""))
            found = self.groups.get(key)
            if found is not None:
                return found
        group = self.groups[key] = _Group()
        return group

    def add_counts(self, *, server: str, protocol: str, authentication: str, authenticated: bool, agent: str,
                   user: str, requests: int, first: str, last: str) -> None:
        """Counts already grouped on the server (the live summary: first and last seen to the day of the log file)."""
        self.granularity = "day"
        self.requests += requests
        cid = self._client_id(agent)
        counted = self.agent_requests.get(agent)
        if counted is not None:
            counted[0] += requests
        elif len(self.agent_requests) < MAX_AGENTS:
            self.agent_requests[agent] = [requests, cid]
        key = (protocol, authentication, authenticated, cid)
        group = self.groups.get(key) or self._group(key)
        group.requests += requests
        group.first, group.last = min(group.first, first), max(group.last, last)
        if authenticated and user:
            entry = group.users.get(user)
            if entry is not None:
                entry[0] += requests
                entry[1] = max(entry[1], last)
            elif self.pairs < MAX_PAIRS:
                group.users[user] = [requests, last]
                self.pairs += 1
            else:
                self.untracked_pairs += 1
        day = (first[:10], protocol, authentication, authenticated, cid)
        self.daily[day] = self.daily.get(day, 0) + requests
        known = self.servers.get(server)
        if known is None:
            self.servers[server] = [requests, first, last]
        else:
            known[0] += requests
            known[1], known[2] = min(known[1], first), max(known[2], last)

    # -------------------------------------------------------------------------------------------- result
    def result(self, *, pseudonymise: bool = False, coverage: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """The logs.httpproxy data (docs/sources.md). ``pseudonymise``: user names become a keyed hash whose key
        exists only in this process (HMAC-SHA256), so names cannot be recovered and differ between runs."""
        key = os.urandom(32) if pseudonymise else b""

        def name(user: str) -> str:
            if not pseudonymise:
                return user
            return "user-" + hmac.new(key, user.casefold().encode("utf-8"), hashlib.sha256).hexdigest()[:16]

        clients = []
        for (protocol, authentication, authenticated, cid), group in self.groups.items():
            client = self.clients[cid]
            people, applications, exchange_accounts = [], [], 0
            for user, (count, last) in group.users.items():
                if user_agents.is_exchange_internal(user) or client.modern == "n/a":
                    exchange_accounts += 1
                    continue
                row = {"user": name(user), "requests": count, "last_seen": last}
                if client.application or user_agents.looks_like_service_account(user):
                    applications.append(row)
                else:
                    people.append(row)
            people.sort(key=lambda r: r["user"].casefold())
            applications.sort(key=lambda r: r["user"].casefold())
            clients.append({
                "Protocol": protocol, "AuthenticationType": authentication, "authenticated": authenticated,
                "modern_authentication": user_agents.is_modern(authentication), "family": client.family,
                "version": client.version, "client": client.label, "modern": client.modern,
                "modern_note": client.note, "requests": group.requests,
                "users": len(people) + len(applications), "people": people, "applications": applications,
                "exchange_accounts": exchange_accounts,
                "first_seen": group.first if group.requests else None, "last_seen": group.last or None,
            })
        clients.sort(key=lambda c: (-c["requests"], c["Protocol"], c["AuthenticationType"], c["client"]))
        firsts = [c["first_seen"] for c in clients if c["first_seen"]]
        lasts = [c["last_seen"] for c in clients if c["last_seen"]]
        agents = sorted(self.agent_requests.items(), key=lambda kv: (-kv[1][0], kv[0]))[:TOP_AGENTS]
        return {
            "granularity": self.granularity,
            "window": {"first": min(firsts) if firsts else None, "last": max(lasts) if lasts else None},
            "files": self.files, "lines": self.lines, "requests": self.requests,
            "malformed": {"lines": self.malformed.lines, "examples": list(self.malformed.examples)},
            "pseudonymised": pseudonymise,
            "servers": coverage if coverage is not None else [
                {"server": server, "status": "ok", "requests": n, "first_seen": first, "last_seen": last}
                for server, (n, first, last) in sorted(self.servers.items(), key=lambda kv: kv[0].casefold())],
            "clients": clients,
            "user_agents": [{"UserAgent": agent, "client": self.clients[cid].label,
                             "family": self.clients[cid].family, "modern": self.clients[cid].modern,
                             "requests": n} for agent, (n, cid) in agents],
            "daily": self._daily(),
            "untracked": {"user_agents": self.untracked_agents, "groups": self.untracked_groups,
                          "user_pairs": self.untracked_pairs},
        }


    def _daily(self) -> list[dict[str, Any]]:
        """Requests per day, protocol and authentication type; Exchange's own monitoring apart (it never switches)."""
        days: dict[tuple[str, str, str, bool, bool], int] = {}
        for (date, protocol, authentication, authenticated, cid), n in self.daily.items():
            key = (date, protocol, authentication, authenticated, self.clients[cid].modern == "n/a")
            days[key] = days.get(key, 0) + n
        return [{"date": date, "Protocol": protocol, "AuthenticationType": authentication,
                 "authenticated": authenticated, "modern_authentication": user_agents.is_modern(authentication),
                 "exchange_monitoring": monitoring, "requests": n}
                for (date, protocol, authentication, authenticated, monitoring), n in sorted(days.items())]


def _indexes(fields: list[str], name: str, line: int) -> tuple[int, tuple[int, ...]]:
    missing = [f for f in READ if f not in fields]
    if missing:
        raise LogFormatError(f"{name}: the header at line {line} has no {', '.join(missing)} field")
    return len(fields), tuple(fields.index(f) for f in READ)


class Prefixed(io.RawIOBase):
    """A stream whose first bytes were already read (to sniff gzip), served again before the rest."""

    def __init__(self, prefix: bytes, inner: IO[bytes]) -> None:
        self.prefix = prefix
        self.inner = inner

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer)
        if self.prefix:
            n = min(len(view), len(self.prefix))
            view[:n] = self.prefix[:n]
            self.prefix = self.prefix[n:]
            return n
        data = self.inner.read(len(view))
        view[:len(data)] = data
        return len(data)


def summarise_files(paths: Iterable[str]) -> dict[str, Any]:
    """Read plain or gzip log files from disk (tests and benchmarks): the logs.httpproxy data."""
    logs = ClientLogs()
    for path in paths:
        with open(path, "rb") as handle:
            logs.add_file(path, handle, compressed_size=os.path.getsize(path))
    return logs.result()
