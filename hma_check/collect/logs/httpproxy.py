"""Exchange's HttpProxy logs, streamed: who used which client, protocol and authentication type (logs.httpproxy).

Exchange's front end writes one line per client request to ``<install path>\\Logging\\HttpProxy\\<Protocol>\\
HttpProxy_<yyyyMMddHH>-<n>.LOG``: a CSV header line, ``#Software``, ``#Version``, ``#Log-type: HttpProxy Logs``,
``#Date`` and ``#Fields`` lines, then CSV rows. Columns are found by name from ``#Fields`` (or the plain header line),
never by position, so a build that adds fields still reads. Only DateTime, Protocol, AuthenticationType,
IsAuthenticated, AuthenticatedUser, UserAgent and ServerHostName are read: ClientIpAddress, AnchorMailbox, UrlQuery
and the rest never leave the CSV reader, so client IP addresses are not kept anywhere.

Files are read line by line (plain or gzip), never whole; a malformed line is counted (with the first few named by
file and line) and never stops the import. Memory is bounded: distinct user agents, combinations and user-in-group
pairs beyond the caps below are counted as not tracked instead of growing without limit.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import hmac
import io
import operator
import os
import zlib
from dataclasses import dataclass, field
from typing import IO, Any, Iterable

from hma_check.collect.logs import user_agents
from hma_check.errors import HmaCheckError
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
MAX_KEYS = 200_000           # distinct (server, protocol, authentication, signed in, user agent) combinations
MAX_PAIRS = 1_000_000        # (group, user) pairs tracked for distinct users and per-user rows
MAX_EXAMPLES = 20            # malformed lines named in the evidence
TOP_AGENTS = 25
MAX_FILE_BYTES = 4 * 1024 ** 3      # one log file, after inflation
MAX_RATIO = 200                     # gzip members inflating more than this are refused
_TRUE = frozenset({"true", "True", "TRUE"})
OTHER_AGENTS = "(other user agents: more than the tracked limit)"
OTHER_CLIENT = Client("Other", "", "unknown", "a user agent beyond the tracked limit: not classified one by one")


class LogFormatError(HmaCheckError):
    """A file that cannot be read as an HttpProxy log at all (it is listed as malformed, the import goes on)."""


def looks_like_httpproxy(head: bytes) -> bool:
    """Whether the first bytes of a file are an HttpProxy log's header (plain or gzip)."""
    if head[:2] == b"\x1f\x8b":
        try:
            head = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head, 64 * 1024)
        except zlib.error:
            return False
    text = head[:16 * 1024].decode("utf-8-sig", errors="replace")     # the header lines are in the first 8 KB
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


# One entry per distinct (ServerHostName, Protocol, AuthenticationType, IsAuthenticated, UserAgent), a list for speed:
REQUESTS, FIRST, LAST, USERS, DAYS, SIGNED_IN = range(6)   # USERS: user -> [requests, last seen]; DAYS: date -> n


class ClientLogs:
    """Aggregates HttpProxy log lines into the logs.httpproxy facts. ``add_file`` streams one file; ``add_counts``
    takes pre-grouped counts (the live summary); ``result`` gives the source data.

    Lines are counted under their raw values (one dict lookup per line); clients are classified, and servers, user
    agents and client groups summed, once per distinct combination when the result is built."""

    def __init__(self) -> None:
        self.lines_by_key: dict[tuple[str, str, str, str, str], list[Any]] = {}
        self.malformed = Malformed()
        self.files = 0
        self.lines = 0
        self.pairs = 0
        self.untracked_pairs = 0
        self.untracked_agents = 0
        self.untracked_combinations = 0
        self.granularity = "request"
        self._agents: set[str] = set()

    @property
    def requests(self) -> int:
        """Requests counted (every line with a time, whether or not it was signed in)."""
        return sum(entry[REQUESTS] for entry in self.lines_by_key.values())

    # ------------------------------------------------------------------------------------------- reading
    def add_file(self, name: str, stream: Any, *, compressed_size: int | None = None) -> None:
        """Stream one log file (plain or gzip; any binary stream). LogFormatError when it is not an HttpProxy log."""
        rest: Any
        if isinstance(stream, Prefixed) and len(stream.prefix) >= 2:    # already sniffed by the importer
            head, rest = stream.prefix[:2], stream
        else:
            head = stream.read(2)
            rest = Prefixed(head, stream)
        limit = MAX_FILE_BYTES
        if head == b"\x1f\x8b":
            if compressed_size:
                limit = min(limit, MAX_RATIO * compressed_size + 1024 * 1024)
            rest = gzip.GzipFile(fileobj=rest, mode="rb")
        limited = _Limited(rest, limit)
        # Large buffers: the layers above are Python code, called once per buffer (benchmarks/httpproxy_import.py).
        text = io.TextIOWrapper(io.BufferedReader(limited, 1024 * 1024), encoding="utf-8-sig", errors="replace",
                                newline="")
        text._CHUNK_SIZE = 256 * 1024   # type: ignore[attr-defined]  # bytes decoded at a time (CPython's default: 8 KB)
        self.files += 1
        reader = csv.reader(text)
        state = _Header(name)
        while True:
            try:
                self._rows(state, reader)
                break
            except csv.Error as exc:     # one broken record: count it and go on with the next line
                self.lines += 1
                self.malformed.add(name, reader.line_num, f"not CSV: {exc}")
            except LogFormatError:
                raise
            except (OSError, EOFError, zlib.error, UnicodeError) as exc:
                self.malformed.add(name, 0, f"the file could not be read to its end: {exc}")
                break
        if limited.exceeded:
            self.malformed.add(name, 0, f"inflates past {limit} bytes; the rest was not read")

    def _rows(self, state: "_Header", reader: Any) -> None:
        """The hot loop: per line one C-level key extraction and two dict operations, three with a user
        (benchmarks/httpproxy_import.py). Requests are counted per combination, summed once at the end."""
        table = self.lines_by_key
        width, i_dt, i_user, key_of = state.width, state.i_dt, state.i_user, state.key_of
        pairs, lines = self.pairs, 0
        try:
            for lines, row in enumerate(reader, 1):  # noqa: B007 - the count is read in finally
                if len(row) != width:
                    if state.header_or_malformed(row, reader.line_num, self.malformed):
                        width, i_dt, i_user, key_of = state.width, state.i_dt, state.i_user, state.key_of
                    continue
                moment = row[i_dt]
                if moment[10:11] != "T" or moment[4:5] != "-":
                    if state.directive_or_malformed(row, moment, reader.line_num, self.malformed):
                        width, i_dt, i_user, key_of = state.width, state.i_dt, state.i_user, state.key_of
                    continue
                key = key_of(row)
                entry = table.get(key)
                if entry is None:
                    entry = self._entry(key, moment)
                entry[REQUESTS] += 1
                if moment < entry[FIRST]:
                    entry[FIRST] = moment
                elif moment > entry[LAST]:
                    entry[LAST] = moment
                days = entry[DAYS]
                day = moment[:10]
                days[day] = days.get(day, 0) + 1
                if entry[SIGNED_IN]:
                    user = row[i_user]
                    if user:
                        seen = entry[USERS].get(user)
                        if seen is not None:
                            seen[0] += 1
                            if moment > seen[1]:
                                seen[1] = moment
                        elif pairs < MAX_PAIRS:
                            entry[USERS][user] = [1, moment]
                            pairs += 1
                        else:
                            self.untracked_pairs += 1
        finally:
            self.lines += lines
            self.pairs = pairs

    def _entry(self, key: tuple[str, str, str, str, str], moment: str) -> list[Any]:
        """A new combination. Past MAX_AGENTS distinct user agents the agent is folded into OTHER_AGENTS, past
        MAX_KEYS combinations everything but IsAuthenticated: counted, not itemised."""
        agent = key[4]
        if len(self.lines_by_key) >= MAX_KEYS:
            self.untracked_combinations += 1
            key = ("(other)", "(other)", "(other)", key[3], OTHER_AGENTS)
        elif agent not in self._agents:
            if len(self._agents) >= MAX_AGENTS:
                self.untracked_agents += 1
                key = (*key[:4], OTHER_AGENTS)
            else:
                self._agents.add(agent)
        found = self.lines_by_key.get(key)
        if found is not None:
            return found
        entry = self.lines_by_key[key] = [0, moment, moment, {}, {}, key[3] in _TRUE]
        return entry

    def add_counts(self, *, server: str, protocol: str, authentication: str, authenticated: bool, agent: str,
                   user: str, requests: int, first: str, last: str) -> None:
        """Counts already grouped on the server (the live summary: first and last seen from the files' times)."""
        self.granularity = "day"
        key = (server, protocol, authentication, "true" if authenticated else "false", agent)
        entry = self.lines_by_key.get(key) or self._entry(key, first)
        entry[REQUESTS] += requests
        entry[FIRST], entry[LAST] = min(entry[FIRST], first), max(entry[LAST], last)
        entry[DAYS][first[:10]] = entry[DAYS].get(first[:10], 0) + requests
        if entry[SIGNED_IN] and user:
            seen = entry[USERS].get(user)
            if seen is not None:
                seen[0] += requests
                seen[1] = max(seen[1], last)
            elif self.pairs < MAX_PAIRS:
                entry[USERS][user] = [requests, last]
                self.pairs += 1
            else:
                self.untracked_pairs += 1

    # -------------------------------------------------------------------------------------------- result
    def result(self, *, pseudonymise: bool = False, coverage: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """The logs.httpproxy data (docs/sources.md). ``pseudonymise``: user names become a keyed hash whose key
        exists only in this process (HMAC-SHA256), so names cannot be recovered and differ between runs."""
        key = os.urandom(32) if pseudonymise else b""
        classified: dict[str, Client] = {}
        groups: dict[tuple[str, str, bool, Client], dict[str, Any]] = {}
        agents: dict[str, list[Any]] = {}
        servers: dict[str, list[Any]] = {}
        days: dict[tuple[str, str, str, bool, bool], int] = {}
        for (server, protocol, authentication, _signed_in, agent), entry in self.lines_by_key.items():
            client = classified.get(agent)
            if client is None:
                client = classified[agent] = OTHER_CLIENT if agent == OTHER_AGENTS else user_agents.classify(agent)
            authenticated = entry[SIGNED_IN]
            group = groups.setdefault((protocol, authentication, authenticated, client),
                                      {"requests": 0, "first": entry[FIRST], "last": entry[LAST], "users": {}})
            group["requests"] += entry[REQUESTS]
            group["first"], group["last"] = min(group["first"], entry[FIRST]), max(group["last"], entry[LAST])
            for user, (count, last) in entry[USERS].items():
                seen = group["users"].get(user)
                group["users"][user] = [count, last] if seen is None else [seen[0] + count, max(seen[1], last)]
            counted = agents.setdefault(agent, [0, client])
            counted[0] += entry[REQUESTS]
            row = servers.setdefault(server, [0, entry[FIRST], entry[LAST]])
            row[0] += entry[REQUESTS]
            row[1], row[2] = min(row[1], entry[FIRST]), max(row[2], entry[LAST])
            for date, n in entry[DAYS].items():
                day = (date, protocol, authentication, authenticated, client.modern == "n/a")
                days[day] = days.get(day, 0) + n
        kinds: dict[str, str] = {}
        names: dict[str, str] = {}

        def name(user: str) -> str:
            if not pseudonymise:
                return user
            if user not in names:
                names[user] = "user-" + hmac.new(key, user.casefold().encode("utf-8"),
                                                 hashlib.sha256).hexdigest()[:16]
            return names[user]

        def kind(user: str) -> str:
            if user not in kinds:
                kinds[user] = ("exchange" if user_agents.is_exchange_internal(user) else
                               "application" if user_agents.looks_like_service_account(user) else "person")
            return kinds[user]

        clients = []
        for (protocol, authentication, authenticated, client), group in groups.items():
            people: list[dict[str, Any]] = []
            applications: list[dict[str, Any]] = []
            exchange_accounts = 0
            for user, (count, last) in group["users"].items():
                user_kind = kind(user)
                if user_kind == "exchange" or client.modern == "n/a":
                    exchange_accounts += 1
                    continue
                seen = {"user": name(user), "requests": count, "last_seen": last}
                (applications if client.application or user_kind == "application" else people).append(seen)
            people.sort(key=lambda r: r["user"].casefold())
            applications.sort(key=lambda r: r["user"].casefold())
            clients.append({
                "Protocol": protocol, "AuthenticationType": authentication, "authenticated": authenticated,
                "modern_authentication": user_agents.is_modern(authentication), "family": client.family,
                "version": client.version, "client": client.label, "modern": client.modern,
                "modern_note": client.note, "requests": group["requests"],
                "users": len(people) + len(applications), "people": people, "applications": applications,
                "exchange_accounts": exchange_accounts, "first_seen": group["first"], "last_seen": group["last"],
            })
        clients.sort(key=lambda c: (-c["requests"], c["Protocol"], c["AuthenticationType"], c["client"]))
        top = sorted(agents.items(), key=lambda kv: (-kv[1][0], kv[0]))[:TOP_AGENTS]
        return {
            "granularity": self.granularity,
            "window": {"first": min((c["first_seen"] for c in clients), default=None),
                       "last": max((c["last_seen"] for c in clients), default=None)},
            "files": self.files, "lines": self.lines, "requests": self.requests,
            "malformed": {"lines": self.malformed.lines, "examples": list(self.malformed.examples)},
            "pseudonymised": pseudonymise,
            "servers": coverage if coverage is not None else [
                {"server": server, "status": "ok", "requests": n, "first_seen": first, "last_seen": last}
                for server, (n, first, last) in sorted(servers.items(), key=lambda kv: kv[0].casefold())],
            "clients": clients,
            "user_agents": [{"UserAgent": agent, "client": client.label, "family": client.family,
                             "modern": client.modern, "requests": n} for agent, (n, client) in top],
            "daily": [{"date": date, "Protocol": protocol, "AuthenticationType": authentication,
                       "authenticated": authenticated, "modern_authentication": user_agents.is_modern(authentication),
                       "exchange_monitoring": monitoring, "requests": n}
                      for (date, protocol, authentication, authenticated, monitoring), n in sorted(days.items())],
            "untracked": {"user_agents": self.untracked_agents, "combinations": self.untracked_combinations,
                          "user_pairs": self.untracked_pairs},
        }


class _Header:
    """Where a file's columns are: from its #Fields line or the plain CSV header line (names, not positions)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.width = -1
        self.i_dt = self.i_user = 0
        self.key_of: Any = None      # row -> (ServerHostName, Protocol, AuthenticationType, IsAuthenticated, UserAgent)
        self.seen = False

    def _use(self, fields: list[str], line: int) -> None:
        self.width, (self.i_dt, i_proto, i_auth, i_isauth, self.i_user, i_ua, i_srv) = \
            _indexes(fields, self.name, line)
        self.key_of = operator.itemgetter(i_srv, i_proto, i_auth, i_isauth, i_ua)
        self.seen = True

    def header_or_malformed(self, row: list[str], line: int, malformed: Malformed) -> bool:
        """A line of another width: a header (True: the columns changed), a directive or blank, or malformed."""
        first = row[0] if row else ""
        if first.startswith("#Fields:"):
            self._use([first[len("#Fields:"):].strip(), *row[1:]], line)
            return True
        if first.startswith("#") or not row or (len(row) == 1 and not first.strip()):
            return False
        if first == "DateTime" and "AuthenticationType" in row:
            self._use(row, line)
            return True
        malformed.add(self.name, line, f"{len(row)} fields where the header has {self.width}" if self.seen
                      else "a data line before any #Fields header")
        return False

    def directive_or_malformed(self, row: list[str], moment: str, line: int, malformed: Malformed) -> bool:
        """A line as wide as the header whose DateTime is not a time: the header again, a #Fields line, or
        malformed."""
        first = row[0]
        if first.startswith("#Fields:"):
            self._use([first[len("#Fields:"):].strip(), *row[1:]], line)
            return True
        if not first.startswith("#") and first != "DateTime":
            malformed.add(self.name, line, f"DateTime {moment[:40]!r} is not an ISO 8601 time")
        return False


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
