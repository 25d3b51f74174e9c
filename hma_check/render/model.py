"""Everything the renderers show, computed once from an Evaluation: verdict, ordering, matrix, gaps, runbooks."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from hma_check import __version__
from hma_check.evaluate.checks import PHASES
from hma_check.evaluate.engine import Evaluation
from hma_check.contract.findings import (ERROR, EXEMPT, FAIL, NOT_APPLICABLE, PASS, STATUSES, WARN, Finding, RunbookEntry,
                                counts, verdict_of)
from hma_check.contract.snapshot import iso_utc, utc_now
from hma_check.runs.after_enable import VALIDATION_LABEL, VALIDATION_TEXT

STATUS_RANK = {status: rank for rank, status in enumerate(STATUSES)}
SEVERITY_RANK = {"blocker": 0, "warning": 1, "info": 2}
VERDICT_TEXT = {
    "READY": "Ready to enable Hybrid Modern Authentication",
    "NOT_READY": "Not ready: blockers must be fixed before HMA is switched on",
    "INCOMPLETE": "Incomplete: no blocker found, but some blocker checks could not be evaluated",
}


@dataclass
class CheckGroup:
    """One check's findings, described once (expected, why, references), worst status first."""

    id: str
    title: str
    severity: str
    expected: str
    why: str
    references: list[str]
    worst: str
    counts: dict[str, int]
    findings: list[Finding]

    @property
    def detailed(self) -> list[Finding]:
        return [f for f in self.findings if f.status not in (PASS, NOT_APPLICABLE)]

    @property
    def settled(self) -> list[Finding]:
        return [f for f in self.findings if f.status in (PASS, NOT_APPLICABLE)]


@dataclass
class AreaSection:
    id: str
    title: str
    findings: list[Finding]
    counts: dict[str, int]
    checks: list[CheckGroup] = field(default_factory=list)


@dataclass
class Gap:
    """A source that was not collected, and the checks it left unevaluated."""

    key: str
    status: str
    command: str
    error: str
    checks: list[str]


@dataclass
class Matrix:
    servers: list[str]
    checks: list[dict[str, str]]                 # [{id, title}]
    cells: dict[str, dict[str, str]]             # server -> check id -> worst status


@dataclass
class Report:
    verdict: str
    verdict_text: str
    exit_code: int
    counts: dict[str, int]
    severity_counts: dict[str, dict[str, int]]
    findings: list[Finding]
    attention: list[Finding]                     # blockers first (FAIL, ERROR, EXEMPT), then the rest to act on
    areas: list[AreaSection]
    matrix: Matrix
    gaps: list[Gap]
    enable_phases: list[dict[str, Any]]
    rollback_phases: list[dict[str, Any]]
    hma_state: str
    metadata: dict[str, Any]
    unused_exemptions: list[dict[str, Any]] = field(default_factory=list)
    expired_exemptions: list[Finding] = field(default_factory=list)
    area_titles: dict[str, str] = field(default_factory=dict)
    kind: str = "readiness"                      # or "validation": --after-enable, the short post-change report
    baseline: dict[str, Any] | None = None       # validation: the readiness run it follows (hma_check.runs.after_enable)
    changes: Any = None                          # validation: a RunDiff from that run to this one
    notes: list[str] = field(default_factory=list)
    clients: Any = None                          # the Clients section (render.clients.ClientsView), from the logs

    @property
    def verdict_label(self) -> str:
        if self.kind == "validation":
            return VALIDATION_LABEL[self.verdict]
        return self.verdict.replace("_", " ")


def sort_key(finding: Finding, order: dict[str, int]) -> tuple[int, int, int, str]:
    return (STATUS_RANK.get(finding.status, 9), SEVERITY_RANK.get(finding.severity, 9),
            order.get(finding.check_id, 9999), finding.subject.lower())


def build_report(evaluation: Evaluation, *, exit_code: int, evidence_sha256: str,
                 unused_exemptions: list[dict[str, Any]] | None = None, generated_at: datetime | None = None,
                 kind: str = "readiness") -> Report:
    checks = evaluation.checks
    order = {check.id: index for index, check in enumerate(checks.checks)}
    findings = sorted(evaluation.findings, key=lambda f: sort_key(f, order))
    verdict = verdict_of(findings)
    to_act_on = [f for f in findings if f.status in (FAIL, ERROR, WARN, EXEMPT)]
    attention = [f for f in to_act_on if f.severity == "blocker"] + [f for f in to_act_on if f.severity != "blocker"]
    area_ids = list(dict.fromkeys([*checks.areas, *(c.area for c in checks.checks)]))
    areas = []
    for area in area_ids:
        in_area = [f for f in findings if f.area == area]
        if in_area:
            areas.append(AreaSection(id=area, title=checks.area_title(area), findings=in_area, counts=counts(in_area),
                                     checks=_groups(in_area, order)))
    snapshot = evaluation.snapshot
    metadata = {
        "organization": _organization_name(snapshot),
        "tool_version": __version__,
        "generated_at": iso_utc(generated_at or utc_now()),
        "as_of": iso_utc(evaluation.as_of),
        "collected_at": snapshot.collected_at,
        "collected_by": snapshot.collected_by,
        "collected_with": snapshot.tool_version,
        "target": snapshot.target,
        "evidence_sha256": evidence_sha256,
        "checks_files": checks.files,
        "sources_total": len(snapshot.sources),
        "sources_ok": sum(1 for r in snapshot.sources.values() if r.ok),
    }
    return Report(
        verdict=verdict, verdict_text=(VALIDATION_TEXT if kind == "validation" else VERDICT_TEXT)[verdict],
        exit_code=exit_code, counts=counts(findings), kind=kind,
        severity_counts=_severity_counts(findings), findings=findings, attention=attention, areas=areas,
        matrix=_matrix(findings, evaluation), gaps=_gaps(evaluation, findings),
        enable_phases=_phases(evaluation.runbook, reverse=False),
        rollback_phases=_phases([e for e in evaluation.runbook if e.rollback], reverse=True),
        hma_state=_hma_state(evaluation), metadata=metadata, unused_exemptions=list(unused_exemptions or []),
        expired_exemptions=[f for f in findings if f.exemption and f.exemption.get("expired")],
        area_titles={a: checks.area_title(a) for a in area_ids},
        clients=_clients(snapshot),
    )


def _clients(snapshot: Any) -> Any:
    from hma_check.render.clients import clients_view

    return clients_view(snapshot)


def _groups(findings: list[Finding], order: dict[str, int]) -> list[CheckGroup]:
    by_check: dict[str, list[Finding]] = {}
    for finding in findings:
        by_check.setdefault(finding.check_id, []).append(finding)
    groups = []
    for check_id, group in by_check.items():
        first = group[0]
        worst = min((f.status for f in group), key=lambda s: STATUS_RANK.get(s, 9))
        groups.append(CheckGroup(id=check_id, title=first.title, severity=first.severity, expected=first.expected,
                                 why=first.why, references=first.references, worst=worst, counts=counts(group),
                                 findings=group))
    groups.sort(key=lambda g: (STATUS_RANK.get(g.worst, 9), order.get(g.id, 9999)))
    return groups


def _organization_name(snapshot: Any) -> str:
    """The name to put on the report: the one the user gave, else Exchange's own (Get-OrganizationConfig Name)."""
    given = snapshot.target.get("organization")
    if isinstance(given, str) and given.strip():
        return given.strip()
    config = snapshot.sources.get("exchange.organization_config")
    if config is not None and config.ok and isinstance(config.data, dict) and isinstance(config.data.get("Name"), str):
        return config.data["Name"]
    return ""


def _severity_counts(findings: list[Finding]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for severity in SEVERITY_RANK:
        out[severity] = counts([f for f in findings if f.severity == severity])
    return out


def _server_names(evaluation: Evaluation) -> list[str]:
    servers = evaluation.snapshot.sources.get("exchange.servers")
    if servers is not None and servers.ok and isinstance(servers.data, list):
        return [str(s.get("Name")) for s in servers.data if isinstance(s, dict) and s.get("Name")]
    scopes = {r.scope for r in evaluation.snapshot.sources.values() if r.scope and r.name.startswith(("exchange.", "os."))}
    return sorted(scopes)


def _server_of(finding: Finding, servers: dict[str, str]) -> str | None:
    for candidate in (finding.scope, finding.subject, finding.subject.split("\\", 1)[0]):
        if candidate and candidate.lower() in servers:
            return servers[candidate.lower()]
    return None


def _matrix(findings: list[Finding], evaluation: Evaluation) -> Matrix:
    """Servers down the side, the per-server checks across: the 'one server out of ten' picture."""
    names = _server_names(evaluation)
    by_lower = {name.lower(): name for name in names}
    cells: dict[str, dict[str, str]] = {name: {} for name in names}
    used: list[str] = []
    for finding in findings:
        server = _server_of(finding, by_lower)
        if server is None:
            continue
        current = cells[server].get(finding.check_id)
        if current is None or STATUS_RANK[finding.status] < STATUS_RANK[current]:
            cells[server][finding.check_id] = finding.status
        if finding.check_id not in used:
            used.append(finding.check_id)
    order = [c.id for c in evaluation.checks.checks]
    used.sort(key=lambda cid: order.index(cid) if cid in order else 9999)
    titles = {c.id: c.title for c in evaluation.checks.checks}
    return Matrix(servers=names, checks=[{"id": cid, "title": titles.get(cid, cid)} for cid in used], cells=cells)


def _gaps(evaluation: Evaluation, findings: list[Finding]) -> list[Gap]:
    """Every source that is not ok, with the checks whose findings are ERROR because of it."""
    gaps = []
    by_check_requires = {c.id: set(c.requires) for c in evaluation.checks.checks}
    for key, result in evaluation.snapshot.sources.items():
        if result.ok:
            continue
        affected = []
        for finding in findings:
            if finding.status not in (ERROR, EXEMPT) or finding.check_id in affected:
                continue
            cited = {s["key"].split(" (", 1)[0] for s in finding.sources}
            if key in cited or result.name in cited or (
                    result.name in by_check_requires.get(finding.check_id, set()) and finding.reason
                    and result.name in finding.reason):
                affected.append(finding.check_id)
        gaps.append(Gap(key=key, status=result.status, command=result.command, error=result.error or "",
                        checks=affected))
    return gaps


def _phases(entries: list[RunbookEntry], *, reverse: bool) -> list[dict[str, Any]]:
    phases = []
    numbers = sorted({e.phase for e in entries}, reverse=reverse)
    for number in numbers:
        in_phase = [e for e in entries if e.phase == number]
        if reverse:
            in_phase = list(reversed(in_phase))
        phases.append({"phase": number, "title": PHASES.get(number, f"Phase {number}"), "entries": in_phase})
    return phases


def _hma_state(evaluation: Evaluation) -> str:
    """A one-line reading of the two switches, straight from the evidence (or why it is unknown)."""
    sources = evaluation.snapshot.sources
    org, auth = sources.get("exchange.organization_config"), sources.get("exchange.auth_servers")
    if org is None or auth is None or not org.ok or not auth.ok:
        return "unknown: the organization configuration or the AuthServers were not collected"
    profile = org.data.get("OAuth2ClientProfileEnabled") if isinstance(org.data, dict) else None
    if not isinstance(profile, bool):   # absent is unknown, not off
        return "unknown: the organization configuration has no OAuth2ClientProfileEnabled value"
    default = any(isinstance(a, dict) and a.get("Type") == "AzureAD" and a.get("IsDefaultAuthorizationEndpoint") is True
                  for a in auth.data or [])
    if profile and default:
        return "HMA is enabled (OAuth2ClientProfileEnabled on, EvoSts is the default authorization endpoint)"
    if not profile and not default:
        return "HMA is not enabled yet (both switches off)"
    return ("HMA is half enabled: OAuth2ClientProfileEnabled is " + ("on" if profile else "off")
            + ", EvoSts " + ("is" if default else "is not") + " the default authorization endpoint")

