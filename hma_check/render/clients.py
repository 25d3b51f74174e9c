"""The report's Clients section, from logs.httpproxy: authentication types per protocol (an inline SVG), the client
groups and the top user agents. Presentation only: what needs action is decided by the HMA-CLIENT checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Modern authentication green; Windows authentication blue; NTLM orange; Basic red; forms purple; no authentication
# grey. Every colour also has its label in the legend and each segment's title, so colour is never the only signal.
AUTH_COLORS = {"Bearer": "#2e7d32", "OAuth": "#66bb6a", "Negotiate": "#1565c0", "Kerberos": "#42a5f5",
               "NTLM": "#e67700", "Basic": "#c62828", "FBA": "#6a1b9a", "Digest": "#8d6e63",
               "(not authenticated)": "#9e9e9e"}
OTHER_COLOR = "#607d8b"
BAR_WIDTH = 460
ROW = 26
TOP_GROUPS = 40


@dataclass
class ClientsView:
    window: dict[str, Any]
    requests: int
    files: int
    granularity: str
    pseudonymised: bool
    malformed: dict[str, Any]
    servers: list[dict[str, Any]]
    bars: dict[str, Any]
    legend: list[dict[str, str]]
    groups: list[dict[str, Any]]
    more_groups: int
    user_agents: list[dict[str, Any]]
    people: int
    applications: int
    untracked: dict[str, Any] = field(default_factory=dict)


def clients_view(snapshot: Any) -> ClientsView | None:
    """None when the evidence holds no HttpProxy log summary (the section is then left out; the checks say why).

    Every row the templates show is projected here onto exactly the fields they print, a field the evidence lacks
    shown as MISSING: evidence that loads can still hold a damaged summary (the HMA-CLIENT checks then say ERROR),
    and the report shows what is there instead of failing on it."""
    result = snapshot.sources.get("logs.httpproxy")
    if result is None or not result.ok or not isinstance(result.data, dict):
        return None
    data = result.data
    clients = [c for c in data.get("clients") or [] if isinstance(c, dict)]
    by_protocol: dict[str, dict[str, int]] = {}
    for group in clients:
        label = (group.get("AuthenticationType") or "(none)") if group.get("authenticated") else "(not authenticated)"
        counts = by_protocol.setdefault(str(group.get("Protocol") or "?"), {})
        counts[str(label)] = counts.get(str(label), 0) + _count(group.get("requests"))
    authenticated = sorted((c for c in clients if c.get("authenticated")),
                           key=lambda c: (-_count(c.get("requests")), str(c.get("Protocol"))))
    people = {r.get("user") for c in clients for r in _list(c.get("people")) if isinstance(r, dict)}
    applications = {r.get("user") for c in clients for r in _list(c.get("applications")) if isinstance(r, dict)}
    malformed = _mapping(data.get("malformed"))
    if malformed:
        malformed = {**malformed, "examples": _rows(malformed.get("examples"), ("file", "line", "reason"))}
    groups = [dict(row, applications=_list(row["applications"]))
              for row in _rows(authenticated[:TOP_GROUPS], GROUP_FIELDS)]
    return ClientsView(
        window=_mapping(data.get("window")), requests=_count(data.get("requests")), files=_count(data.get("files")),
        granularity=str(data.get("granularity") or "request"), pseudonymised=bool(data.get("pseudonymised")),
        malformed=malformed,
        servers=[{**server, "server": server.get("server", MISSING), "status": server.get("status", MISSING)}
                 for server in _list(data.get("servers")) if isinstance(server, dict)],
        bars=_bars(by_protocol), legend=_legend(by_protocol),
        groups=groups, more_groups=max(0, len(authenticated) - TOP_GROUPS),
        user_agents=_rows(data.get("user_agents"), ("UserAgent", "client", "modern", "requests")),
        people=len(people), applications=len(applications), untracked=_mapping(data.get("untracked")),
    )


MISSING = "(not in the evidence)"
GROUP_FIELDS = ("Protocol", "AuthenticationType", "client", "modern_note", "modern", "requests", "users",
                "applications", "first_seen", "last_seen")


def _rows(values: Any, fields: tuple[str, ...]) -> list[dict[str, Any]]:
    return [{name: row.get(name, MISSING) for name in fields} for row in _list(values) if isinstance(row, dict)]


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _count(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError, OverflowError):
        return 0


def _color(label: str) -> str:
    return AUTH_COLORS.get(label, OTHER_COLOR)


def _bars(by_protocol: dict[str, dict[str, int]]) -> dict[str, Any]:
    """One 100% stacked bar per protocol, busiest first; segments ordered as the legend."""
    order = list(AUTH_COLORS)
    rows = []
    protocols = sorted(by_protocol, key=lambda p: (-sum(by_protocol[p].values()), p))
    for index, protocol in enumerate(protocols):
        counts = by_protocol[protocol]
        total = sum(counts.values()) or 1
        x = 0.0
        segments = []
        for label in sorted(counts, key=lambda a: (order.index(a) if a in order else len(order), a)):
            width = BAR_WIDTH * counts[label] / total
            segments.append({"label": label, "count": counts[label], "x": round(x, 2), "width": round(width, 2),
                             "color": _color(label), "share": round(100 * counts[label] / total, 1)})
            x += width
        rows.append({"protocol": protocol, "y": index * ROW, "segments": segments, "total": sum(counts.values())})
    label_width = max([len(p) for p in protocols] + [8]) * 7 + 12
    return {"rows": rows, "height": len(rows) * ROW + 4, "bar_width": BAR_WIDTH, "label_width": label_width}


def _legend(by_protocol: dict[str, dict[str, int]]) -> list[dict[str, str]]:
    seen = {label for counts in by_protocol.values() for label in counts}
    order = list(AUTH_COLORS)
    return [{"label": label, "color": _color(label)}
            for label in sorted(seen, key=lambda a: (order.index(a) if a in order else len(order), a))]
