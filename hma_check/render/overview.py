"""The server overview, as HealthChecker shows it: servers as rows, the facts HMA depends on as columns.

Each cell is a fact read from the evidence (the build, the Auth certificate's days left, a TLS version's state)
with the status of the checks that judge it for that server, so a red cell always has a finding behind it. Servers
whose cells are all the same are one row ("EX001–EX200, 200 servers"): one server out of ten that differs stands out
as its own row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from datetime import datetime
from typing import Any, Callable

from hma_check.evaluate.filters import exchange_builds, tls
from hma_check.render.attention import STATUS_RANK, compact
from hma_check.contract.findings import ERROR, FAIL, NOT_APPLICABLE, NOTE, PASS, WARN, Finding
from hma_check.contract.snapshot import Snapshot, source_key

# colour is never the only signal: every status has a symbol
SYMBOLS = {FAIL: "✕", WARN: "!", ERROR: "?", NOTE: "i", PASS: "✓", NOT_APPLICABLE: "–"}
Value = Callable[["_Context", str], "str | None"]


@dataclass
class Cell:
    status: str | None          # the worst status of the column's checks for this server (None: not evaluated)
    text: str                   # the fact, or the failing value (a second line, if any, is a detail)
    title: str = ""             # the finding's full 'found', for a tooltip

    @property
    def symbol(self) -> str:
        return SYMBOLS.get(self.status or "", "–")

    @property
    def lines(self) -> list[str]:
        return self.text.split("\n")


@dataclass
class OverviewRow:
    servers: list[str]
    cells: list[Cell]

    @property
    def label(self) -> str:
        return self.servers[0] if len(self.servers) == 1 else f"{compact(self.servers)} ({len(self.servers)} servers)"

    @property
    def worst(self) -> str | None:
        statuses = [c.status for c in self.cells if c.status]
        return min(statuses, key=lambda s: STATUS_RANK.get(s, 9)) if statuses else None


@dataclass
class Overview:
    columns: list[dict[str, Any]]               # [{group, title, checks}]
    rows: list[OverviewRow] = field(default_factory=list)
    servers: int = 0

    @property
    def header(self) -> list[dict[str, Any]]:
        """The first header row: a group over its columns, a column without a group spanning both rows."""
        cells: list[dict[str, Any]] = []
        for column in self.columns:
            if column["group"] and cells and cells[-1]["group"] == column["group"]:
                cells[-1]["colspan"] += 1
                continue
            cells.append({"group": column["group"], "title": column["group"] or column["title"], "colspan": 1,
                          "checks": column["checks"]})
        return cells


@dataclass
class _Context:
    snapshot: Snapshot
    as_of: datetime

    def data(self, name: str, scope: str | None = None) -> Any:
        result = self.snapshot.sources.get(source_key(name, scope) if scope else name)
        return result.data if result is not None and result.ok else None

    def server(self, name: str) -> dict[str, Any]:
        return self._servers.get(name.lower(), {})

    @cached_property
    def _servers(self) -> dict[str, dict[str, Any]]:
        """exchange.servers by lower-case name, the first of each name (a row per server asked it of every one)."""
        by_name: dict[str, dict[str, Any]] = {}
        for entry in self.data("exchange.servers") or []:
            if isinstance(entry, dict):
                by_name.setdefault(str(entry.get("Name", "")).lower(), entry)
        return by_name


def _version(context: _Context, server: str) -> str | None:
    version = context.server(server).get("AdminDisplayVersion")
    if not version:
        return None
    try:
        build = exchange_builds.format_build(exchange_builds.parse_build(version))
    except (ValueError, TypeError):
        return str(version)
    info = exchange_builds.describe(build)
    return f"{info.name}\n{build}" if info.product != "unknown" else build


def _auth_days(context: _Context, server: str) -> str | None:
    from hma_check.evaluate.expr import to_datetime

    thumbprint = str((context.data("exchange.auth_config") or {}).get("CurrentCertificateThumbprint") or "").upper()
    certificates = context.data("exchange.exchange_certificates", server)
    if not thumbprint or certificates is None:
        return None
    for certificate in certificates if isinstance(certificates, list) else []:
        if isinstance(certificate, dict) and str(certificate.get("Thumbprint", "")).upper() == thumbprint:
            try:
                days = int((to_datetime(certificate.get("NotAfter")) - context.as_of).total_seconds() // 86400)
            except (TypeError, ValueError):
                return None
            return f"{days} days" if days >= 0 else f"expired {-days} days ago"
    return "not installed"


def _tls(version: str) -> Value:
    def value(context: _Context, server: str) -> str | None:
        registry = context.data("os.tls_registry", server)
        if not isinstance(registry, dict):
            return None
        try:
            return tls.tls_state(registry, version)
        except (KeyError, TypeError, AttributeError):
            return None
    return value


def _dotnet(context: _Context, server: str) -> str | None:
    registry = context.data("os.tls_registry", server)
    if not isinstance(registry, dict):
        return None
    return "on" if tls.dotnet_strong_crypto(registry) else "off"


def _require_ssl(context: _Context, server: str) -> str | None:
    """IIS "Require SSL" on the HMA paths: off on one means TLS may end in front of Exchange (HMA-VDIR-008). The
    Outlook Anywhere SSLOffloading flag is not shown here: it concerns /rpc only (HMA-VDIR-009)."""
    flags = context.data("os.iis_ssl_flags", server)
    if not isinstance(flags, dict) or not flags:
        return None
    off = [path for path, value in flags.items() if not (isinstance(value, dict) and value.get("RequireSsl") is True)]
    return "on" if not off else "off: " + ", ".join(off)


def _oauth(context: _Context, server: str) -> str | None:
    return None     # the check's own result says it: 'on' when it passes, the failing value when not


# (header group, title, the checks whose findings for the server (or the organisation) colour the cell, the fact)
COLUMNS: tuple[tuple[str, str, tuple[str, ...], Value], ...] = (
    ("", "Exchange version", ("HMA-TOPO-001", "HMA-TOPO-002", "HMA-TOPO-003", "HMA-TOPO-004"), _version),
    ("", "Auth certificate", ("HMA-AUTH-008", "HMA-AUTH-013", "HMA-AUTH-009", "HMA-AUTH-010"), _auth_days),
    ("OAuth on the virtual directory", "MAPI", ("HMA-VDIR-001",), _oauth),
    ("OAuth on the virtual directory", "EWS", ("HMA-VDIR-002",), _oauth),
    ("OAuth on the virtual directory", "OAB", ("HMA-VDIR-003",), _oauth),
    ("OAuth on the virtual directory", "Autodiscover", ("HMA-VDIR-004",), _oauth),
    ("SCHANNEL", "TLS 1.2", ("HMA-TLS-001", "HMA-TLS-003"), _tls("TLS 1.2")),
    ("SCHANNEL", "TLS 1.1", ("HMA-TLS-004",), _tls("TLS 1.1")),
    ("SCHANNEL", "TLS 1.0", ("HMA-TLS-004",), _tls("TLS 1.0")),
    ("", ".NET strong crypto", ("HMA-TLS-002",), _dotnet),
    ("", "Require SSL", ("HMA-VDIR-008",), _require_ssl),
)


def build_overview(findings: list[Finding], servers: list[str], snapshot: Snapshot, as_of: datetime) -> Overview:
    columns = [(title, checks, value) for _, title, checks, value in COLUMNS]
    wanted = {check for _, checks, _ in columns for check in checks}
    per_server: dict[tuple[str, str], list[Finding]] = {}
    organisation: dict[str, list[Finding]] = {}
    lower = {name.lower(): name for name in servers}
    for finding in findings:
        if finding.check_id not in wanted:
            continue
        server = lower.get((finding.scope or finding.subject).lower()) or lower.get(finding.subject.lower())
        if server is not None:
            per_server.setdefault((finding.check_id, server), []).append(finding)
        elif finding.subject == "organization":
            organisation.setdefault(finding.check_id, []).append(finding)
    context = _Context(snapshot, as_of)
    grouped: dict[tuple[tuple[str | None, str], ...], OverviewRow] = {}
    for server in servers:
        cells = [_cell(title, checks, value, server, per_server, organisation, context)
                 for title, checks, value in columns]
        key = tuple((cell.status, cell.text) for cell in cells)
        row = grouped.setdefault(key, OverviewRow(servers=[], cells=cells))
        row.servers.append(server)
    rows = sorted(grouped.values(), key=lambda r: (STATUS_RANK.get(r.worst or "", 99), -len(r.servers)))
    return Overview(columns=[{"group": group, "title": title, "checks": list(checks)}
                             for group, title, checks, _ in COLUMNS], rows=rows, servers=len(servers))


def _cell(title: str, checks: tuple[str, ...], value: Value, server: str,
          per_server: dict[tuple[str, str], list[Finding]], organisation: dict[str, list[Finding]],
          context: _Context) -> Cell:
    found = [f for check in checks for f in per_server.get((check, server), []) + organisation.get(check, [])]
    relevant = [f for f in found if _concerns(title, f, context, server)]
    worst = min(relevant, key=lambda f: STATUS_RANK.get(f.status, 9)) if relevant else None
    fact = value(context, server)
    if worst is None:
        return Cell(status=None, text=fact or "")
    if worst.status == ERROR:
        return Cell(status=ERROR, text=fact or "not collected", title=worst.reason or "")
    if worst.status in (PASS, NOT_APPLICABLE, NOTE):
        return Cell(status=worst.status, text=fact or ("on" if worst.status == PASS else ""), title=worst.actual)
    return Cell(status=worst.status, text=fact or _failing_value(worst), title=worst.actual)


def _concerns(title: str, finding: Finding, context: _Context, server: str) -> bool:
    """HMA-TLS-004 judges TLS 1.0 and 1.1 together: its warning colours only the version that is not disabled."""
    if finding.check_id == "HMA-TLS-004" and finding.status == WARN:
        state = _tls(title)(context, server)
        return state is not None and state != "Disabled"
    return True


def _failing_value(finding: Finding) -> str:
    """The value that made the check fail, from the excerpt ('IISAuthenticationMethods: Ntlm, Negotiate')."""
    excerpt = finding.excerpt if isinstance(finding.excerpt, dict) else {}
    parts = []
    for path in finding.failing[:1]:
        value = excerpt.get(path)
        shown = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
        parts.append(f"{path.rsplit('.', 1)[-1]}: {shown}")
    return "; ".join(parts) or finding.actual
