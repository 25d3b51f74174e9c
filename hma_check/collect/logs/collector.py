"""logs.httpproxy, live: each Exchange server summarises its own HttpProxy logs, read-only, over WinRM (logs: section).

Per server, on the standard Microsoft.PowerShell endpoint the os: section connects to, with cmdlets only (the
allowlist in psrp_client admits these and nothing else):

1. ``Get-ItemProperty -Path HKLM:\\SOFTWARE\\Microsoft\\ExchangeServer\\v15\\Setup -Name MsiInstallPath``: where
   Exchange is installed (the value setup writes; HealthChecker reads the same key);
2. ``Get-ChildItem -Path <install>Logging\\HttpProxy -Recurse -Filter HttpProxy_*.LOG -File``: the log files, of
   which the last ``days`` are kept, newest first, up to ``max_bytes`` per server;
3. per protocol and day, ``Import-Csv -LiteralPath <files> | Where-Object -Property DateTime -Match <ISO time> |
   Group-Object -Property Protocol,AuthenticationType,IsAuthenticated,UserAgent,AuthenticatedUser -NoElement``:
   the server reads its files and sends back only the counts per client and user. Import-Csv takes the field names
   from the plain CSV header line Exchange writes first; the #Software... lines are dropped by Where-Object.

First and last seen come from the files' times (the hour in the name, LastWriteTimeUtc), per protocol and day: a
live summary never moves the lines themselves. Malformed lines are dropped by Where-Object on the server, not
counted: import the files for both.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Any

from hma_check.collect.context import RunContext, section_password
from hma_check.collect.kerberos import KerberosFailure, Login, sign_in
from hma_check.collect.logs.config import LogsSettings
from hma_check.collect.logs.httpproxy import ClientLogs
from hma_check.collect.psrp_client import CallFailed, RemoteSession, powershell_text, redact
from hma_check.contract.snapshot import Snapshot, SourceResult, iso_utc, utc_now

SOURCE = "logs.httpproxy"
SETUP_KEY = "HKLM:\\SOFTWARE\\Microsoft\\ExchangeServer\\v15\\Setup"
GROUP_BY = ("Protocol", "AuthenticationType", "IsAuthenticated", "UserAgent", "AuthenticatedUser")
ISO_TIME = r"^\d{4}-\d\d-\d\dT"
_FILE = re.compile(r"^HttpProxy_(\d{4})(\d\d)(\d\d)(\d\d)-\d+\.LOG$", re.IGNORECASE)
MAX_FILES_PER_CALL = 48   # two days of hourly files: a bounded command line and answer per call


def collect_logs(settings: LogsSettings, os_settings: Any, password: str | None, snapshot: Snapshot, *,
                 pseudonymise_users: bool = False, now: datetime | None = None,
                 unresponsive: dict[str, str] | None = None) -> list[SourceResult]:
    """One logs.httpproxy result for the organisation: every server's summary merged, each server's coverage (or
    its error) listed in ``servers``. An error result only when no server could be read at all."""
    started = utc_now()
    command = _command(settings)
    servers = _servers(snapshot)
    if isinstance(servers, str):
        return [SourceResult.error_result(SOURCE, servers, command=command)]
    now = now or utc_now()
    logs = ClientLogs()
    coverage: list[dict[str, Any]] = []
    secrets = tuple(s for s in (password,) if s)
    try:
        # once for the section, as the OS collector signs in with the same account: a Kerberos ticket (or NTLM's
        # hashes) for every server's session, and a refused password stops the section instead of every server
        login = sign_in(os_settings, password, section="logs")
    except KerberosFailure as failure:
        return [SourceResult.error_result(SOURCE, redact(failure.message, secrets), command=command)]

    given_up = unresponsive if unresponsive is not None else {}

    def one(server: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]], int]:
        reason = given_up.get(server["Name"].casefold())
        if reason:   # a server that hung for Exchange or OS reads costs no further timeout (runner.RunContext)
            return {"server": server["Name"], "status": "error", "requests": 0, "first_seen": None,
                    "last_seen": None, "error": f"not read: {reason}"}, [], 0
        return _read_server(settings, os_settings.for_server(server["Name"], server.get("Fqdn")), password,
                            server["Name"], now, secrets, login)

    with ThreadPoolExecutor(max_workers=max(1, min(os_settings.concurrency, len(servers) or 1)),
                            thread_name_prefix="logs-collector") as pool:
        for row, counts, files in pool.map(one, servers):
            coverage.append(row)
            logs.files += files
            for count in counts:
                logs.add_counts(**count)
    data = logs.result(pseudonymise=pseudonymise_users or settings.pseudonymise_users,
                       coverage=sorted(coverage, key=lambda r: r["server"].casefold()))
    data["lines"] = data["requests"]
    data["malformed"] = {"lines": None, "examples": [],
                         "note": "a live summary drops malformed lines on the server without counting them"}
    ok = [row for row in coverage if row["status"] == "ok"]
    duration = int((utc_now() - started).total_seconds() * 1000)
    if not ok:
        reasons = "; ".join(f"{row['server']}: {row.get('error')}" for row in coverage[:5]) or "no server to read"
        return [SourceResult.error_result(SOURCE, f"no server's HttpProxy logs could be read ({reasons})",
                                          command=command, started=iso_utc(started), duration_ms=duration)]
    return [SourceResult.ok_result(SOURCE, data, command=command, started=iso_utc(started), duration_ms=duration)]


def _servers(snapshot: Snapshot) -> list[dict[str, Any]] | str:
    result = snapshot.sources.get("exchange.servers")
    if result is None or not result.ok or not isinstance(result.data, list):
        why = result.error if result is not None and result.error else "not collected"
        return f"the logs are read per Exchange server, and exchange.servers was not collected ({why})"
    return [s for s in result.data if isinstance(s, dict) and isinstance(s.get("Name"), str) and s["Name"]
            and s.get("IsEdgeServer") is not True and str(s.get("AdminDisplayVersion", "")).startswith("Version 15")]


def _command(settings: LogsSettings) -> str:
    return (f"{powershell_text('Get-ItemProperty', (('Path', SETUP_KEY), ('Name', 'MsiInstallPath')))}; "
            f"Get-ChildItem -Path '<MsiInstallPath>Logging\\HttpProxy' -Recurse -Filter 'HttpProxy_*.LOG' -File "
            f"(the last {settings.days} days, newest first, at most {settings.max_bytes_per_server} bytes per "
            f"server); Import-Csv -LiteralPath <files> | Where-Object -Property DateTime -Match '{ISO_TIME}' | "
            f"Group-Object -Property {','.join(GROUP_BY)} -NoElement (per server, protocol and day)")


def _read_server(settings: LogsSettings, os_settings: Any, password: str | None, name: str, now: datetime,
                 secrets: tuple[str, ...], login: Login | None) -> tuple[dict[str, Any], list[dict[str, Any]], int]:
    """(coverage row, counts for ClientLogs.add_counts, files read); a failure is the row's error, never raised."""
    session: RemoteSession | None = None
    row: dict[str, Any] = {"server": name, "status": "ok", "requests": 0, "first_seen": None, "last_seen": None}
    counts: list[dict[str, Any]] = []
    try:
        session = RemoteSession(os_settings, password, configuration="Microsoft.PowerShell", login=login).open()
        install = _install_path(session, settings.timeout)
        files, skipped = _recent_files(session, install, settings, now)
        for batch in _batches(files):
            answer = session.invoke_pipeline((
                ("Import-Csv", (("LiteralPath", [f["path"] for f in batch]),)),
                ("Where-Object", (("Property", "DateTime"), ("Match", ISO_TIME))),
                ("Group-Object", (("Property", list(GROUP_BY)), ("NoElement", True))),
            ), settings.timeout)
            if answer.errors:
                raise CallFailed("cmdlet", "; ".join(str(e) for e in answer.errors[:3]))
            first = min(f["hour"] for f in batch)
            last = max(f["written"] for f in batch)
            for obj in answer.objects:
                values = obj.get("Values")
                count = obj.get("Count")
                if not isinstance(values, list) or len(values) != len(GROUP_BY) or not isinstance(count, int):
                    raise CallFailed("protocol", "Group-Object answered an object without Count and five Values")
                protocol, authentication, authenticated, agent, user = ("" if v is None else str(v) for v in values)
                if not protocol:
                    continue   # a file without the plain header line: its rows are not HttpProxy rows here
                counts.append({"server": name, "protocol": protocol, "authentication": authentication,
                               "authenticated": authenticated.lower() == "true", "agent": agent, "user": user,
                               "requests": count, "first": first, "last": last})
                row["requests"] += count
                row["first_seen"] = min(row["first_seen"] or first, first)
                row["last_seen"] = max(row["last_seen"] or last, last)
        if skipped:
            row["note"] = f"size cap: {skipped} older file(s) in the window not read"
        return row, counts, len(files)
    except CallFailed as failure:
        row.update(status="error", error=redact(failure.message, secrets)[:500])
        return row, [], 0
    except Exception as problem:  # noqa: BLE001 - one server's surprise must not cost the others
        row.update(status="error", error=redact(f"{type(problem).__name__}: {problem}", secrets)[:500])
        return row, [], 0
    finally:
        if session is not None:
            session.close()


def _install_path(session: RemoteSession, timeout: int) -> str:
    answer = session.invoke("Get-ItemProperty", (("Path", SETUP_KEY), ("Name", "MsiInstallPath")), timeout)
    value = answer.objects[0].get("MsiInstallPath") if answer.objects and not answer.errors else None
    if not isinstance(value, str) or not value.strip():
        detail = "; ".join(str(e) for e in answer.errors) or "no MsiInstallPath value"
        raise CallFailed("cmdlet", f"Exchange's install path is not in the registry ({detail})")
    return value.rstrip("\\") + "\\"


def _recent_files(session: RemoteSession, install: str, settings: LogsSettings,
                  now: datetime) -> tuple[list[dict[str, Any]], int]:
    """The log files of the last ``days``, newest first until ``max_bytes_per_server``; and how many were left."""
    answer = session.invoke("Get-ChildItem", (("Path", f"{install}Logging\\HttpProxy"), ("Recurse", True),
                                              ("Filter", "HttpProxy_*.LOG"), ("File", True)), settings.timeout)
    if answer.errors and not answer.objects:
        raise CallFailed("cmdlet", "; ".join(str(e) for e in answer.errors[:3]))
    since = now - timedelta(days=settings.days)
    found: list[dict[str, Any]] = []
    for obj in answer.objects:
        match = _FILE.match(str(obj.get("Name") or ""))
        length = obj.get("Length")
        if not match or not isinstance(length, int):
            continue
        year, month, day, hour_of_day = (int(g) for g in match.groups())
        hour = datetime(year, month, day, hour_of_day, tzinfo=timezone.utc)
        if hour < since - timedelta(hours=1):
            continue
        written = obj.get("LastWriteTimeUtc")
        written = written[:19] + "Z" if isinstance(written, str) and len(written) >= 19 else \
            iso_utc(hour + timedelta(hours=1))
        found.append({"path": str(obj.get("FullName") or ""), "protocol": _folder(obj), "hour": iso_utc(hour),
                      "written": written,
                      "bytes": length, "day": hour.date().isoformat()})
    found.sort(key=lambda f: f["hour"], reverse=True)
    kept: list[dict[str, Any]] = []
    total = 0
    for item in found:
        if total + item["bytes"] > settings.max_bytes_per_server and kept:
            break
        kept.append(item)
        total += item["bytes"]
    return kept, len(found) - len(kept)


def _folder(obj: Any) -> str:
    directory = str(obj.get("DirectoryName") or "")
    return directory.rstrip("\\").rsplit("\\", 1)[-1]


def _batches(files: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Files of one protocol and day per call (at most MAX_FILES_PER_CALL): first and last seen to the day."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for item in files:
        groups.setdefault((item["protocol"], item["day"]), []).append(item)
    out = []
    for key in sorted(groups):
        group = sorted(groups[key], key=lambda f: f["hour"])
        out += [group[i:i + MAX_FILES_PER_CALL] for i in range(0, len(group), MAX_FILES_PER_CALL)]
    return out


def run_logs(settings: Any, context: RunContext) -> list[SourceResult]:
    """Reads exchange.servers from the snapshot and connects as the os: section says (the configuration requires
    one)."""
    os_settings = context.sections["os"]
    password = section_password("os", os_settings, context, "the Exchange servers (WinRM)")
    progress = context.progress("logs")
    try:
        return collect_logs(settings, os_settings, password, context.snapshot, unresponsive=context.unresponsive)
    finally:
        progress.finish()
