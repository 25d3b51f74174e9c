"""Everything the renderers show, computed once from an Evaluation: verdict, what needs attention grouped by root
cause, the server overview, areas, gaps, runbooks."""

from __future__ import annotations

import json
from functools import cached_property
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from hma_check import __version__
from hma_check.contract.findings import (ERROR, EXEMPT, NOT_APPLICABLE, NOTE, PASS, STATUSES, Finding, RunbookEntry,
                                         counts, verdict_of)
from hma_check.contract.snapshot import iso_utc, utc_now
from hma_check.evaluate.checks import PHASES, SWITCH
from hma_check.evaluate.engine import Evaluation
from hma_check.evaluate.settle import settle
from hma_check.render.attention import TO_ACT_ON, Row, build_rows, causes_of, compact, found, same_found
from hma_check.render.overview import Overview, build_overview
from hma_check.runs.after_enable import VALIDATION_LABEL, VALIDATION_TEXT

STATUS_RANK = {status: rank for rank, status in enumerate(STATUSES)}
SEVERITY_RANK = {"blocker": 0, "warning": 1, "info": 2}
VERDICT_TEXT = {
    "READY": "Ready to enable Hybrid Modern Authentication",
    "NOT_READY": "Not ready: blockers must be fixed before HMA is switched on",
    "INCOMPLETE": "Incomplete: no blocker found, but some blocker checks could not be evaluated",
}
# The same verdicts when the evidence shows HMA already switched on (both switches) or only one of the two.
HMA_ENABLED, HMA_OFF, HMA_HALF, HMA_UNKNOWN = "enabled", "off", "half", "unknown"
VERDICT_TEXT_BY_STATE = {
    HMA_ENABLED: {
        "READY": "Hybrid Modern Authentication is already enabled, and no blocker was found in its configuration",
        "NOT_READY": "Hybrid Modern Authentication is already enabled, but blockers were found: clients may be "
                     "failing now",
        "INCOMPLETE": "Hybrid Modern Authentication is already enabled; no blocker found, but some blocker checks "
                      "could not be evaluated",
    },
    HMA_HALF: {
        "READY": "Ready to finish enabling Hybrid Modern Authentication: only one of its two switches is on today",
        "NOT_READY": "Not ready, and Hybrid Modern Authentication is half enabled today: fix the blockers, then "
                     "finish the switch",
        "INCOMPLETE": "Incomplete, and Hybrid Modern Authentication is half enabled today: some blocker checks "
                      "could not be evaluated",
    },
}


@dataclass
class CheckGroup:
    """One check's findings, described once (expected, why, references), worst status first. Built once its
    findings are final (exemptions applied): its rows are worked out once, though both reports read them."""

    id: str
    title: str
    severity: str
    expected: str
    why: str
    references: list[str]
    worst: str
    counts: dict[str, int]
    findings: list[Finding]
    servers: list[str] = field(default_factory=list)      # the servers its findings are about (the server filter)

    @cached_property
    def detailed(self) -> list[Finding]:
        return [f for f in self.findings if f.status not in (PASS, NOT_APPLICABLE)]

    @cached_property
    def settled(self) -> list[Finding]:
        return [f for f in self.findings if f.status in (PASS, NOT_APPLICABLE)]

    @cached_property
    def detail_rows(self) -> list[dict[str, Any]]:
        """Findings to look at (not passing), those with the same result and evidence shown once with their
        subjects: 200 servers with the same ActiveSync note are one block, not 200."""
        rows: dict[tuple[str, str, str], list[Finding]] = {}
        for finding in self.detailed:
            evidence = json.dumps([finding.excerpt, finding.failing, finding.exemption], sort_keys=True, default=str)
            rows.setdefault((finding.status, same_found(finding), evidence), []).append(finding)
        return [{"status": status, "first": group[0], "findings": group, "label": _label([f.subject for f in group])}
                for (status, _, _), group in rows.items()]

    @property
    def opened(self) -> bool:
        """Shown open: something to act on (a note or a pass is a click away)."""
        return any(f.status in TO_ACT_ON for f in self.findings)

    @cached_property
    def settled_rows(self) -> list[dict[str, Any]]:
        """Passing and not-applicable findings with the same result as one line: '200 servers: TLS 1.2 Enabled'."""
        rows: dict[tuple[str, str], list[str]] = {}
        for finding in self.settled:
            rows.setdefault((finding.status, found(finding)), []).append(finding.subject)
        return [{"status": status, "found": text, "subjects": subjects, "label": _label(subjects)}
                for (status, text), subjects in rows.items()]

    @property
    def statuses(self) -> list[str]:
        return [status for status in STATUSES if self.counts.get(status)]


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
class Notice:
    """A line the banner shows under the verdict (the state the organisation is in, what the runbook assumes)."""

    kind: str       # 'info' or 'warning'
    text: str


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
    gaps: list[Gap]
    enable_phases: list[dict[str, Any]]
    rollback_phases: list[dict[str, Any]]
    hma_state: str
    metadata: dict[str, Any]
    hma_switches: str = HMA_UNKNOWN              # enabled, off, half or unknown: the two switches in the evidence
    unused_exemptions: list[dict[str, Any]] = field(default_factory=list)
    expired_exemptions: list[Finding] = field(default_factory=list)
    area_titles: dict[str, str] = field(default_factory=dict)
    kind: str = "readiness"                      # or "validation": --after-enable, the short post-change report
    baseline: dict[str, Any] | None = None       # validation: the readiness run it follows (hma_check.runs.after_enable)
    changes: Any = None                          # validation: a RunDiff from that run to this one
    notes: list[str] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)          # what needs attention: one row per root cause
    note_rows: list[Row] = field(default_factory=list)     # NOTE findings, grouped the same way
    overview: Overview | None = None
    servers: list[str] = field(default_factory=list)
    notices: list[Notice] = field(default_factory=list)    # shown under the verdict
    causes: dict[int, Finding] = field(default_factory=dict)   # id(finding) -> the finding that explains it

    @property
    def rollback_switch(self) -> int | None:
        """The switch phase, when the rollback runbook has a live step in it (undoing it turns HMA off)."""
        for phase in self.rollback_phases:
            if phase["phase"] == SWITCH and any(entry.state == "live" for entry in phase["entries"]):
                return SWITCH
        return None
    clients: Any = None                          # the Clients section (render.clients.ClientsView), from the logs

    @property
    def verdict_label(self) -> str:
        if self.kind == "validation":
            return VALIDATION_LABEL[self.verdict]
        return self.verdict.replace("_", " ")

    @property
    def blockers(self) -> list[Row]:
        """The rows that keep the verdict from READY, one per root cause (a row whose effects block counts)."""
        return [row for row in self.rows if row.blocks or any(effect.blocks for effect in row.effects)]

    @property
    def gap_rows(self) -> list[dict[str, Any]]:
        """Sources not collected, one row per source and error: WinRM closed on 40 servers is one row, not 40."""
        rows: dict[tuple[str, ...], dict[str, Any]] = {}
        for gap in self.gaps:
            name, _, scope = gap.key.partition("@")
            error = gap.error.replace(scope, "‹scope›") if scope else gap.error
            key = (name, gap.status, error, ", ".join(gap.checks))
            row = rows.setdefault(key, {"source": name, "status": gap.status, "error": error, "checks": gap.checks,
                                        "command": gap.command, "scopes": []})
            if scope:
                row["scopes"].append(scope)
        for row in rows.values():
            if len(row["scopes"]) == 1:
                row["error"] = row["error"].replace("‹scope›", row["scopes"][0])
            row["where"] = _label(row["scopes"]) if row["scopes"] else ""
            row["label"] = row["source"] + (f" @ {row['where']}" if row["scopes"] else "")
        return list(rows.values())

    @property
    def first_step(self) -> RunbookEntry | None:
        for phase in self.enable_phases:
            for entry in phase["entries"]:
                return entry
        return None

    def cause_of(self, finding: Finding) -> Finding | None:
        return self.causes.get(id(finding))

    def server_of(self, finding: Finding) -> str | None:
        return _server_of(finding, self._servers_by_key)

    @cached_property
    def _servers_by_key(self) -> dict[str, str]:
        """Each server by its lower-case name, built once (the report asks for each group's server)."""
        return {name.lower(): name for name in self.servers}


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
    to_act_on = [f for f in findings if f.status in TO_ACT_ON]
    attention = [f for f in to_act_on if f.severity == "blocker"] + [f for f in to_act_on if f.severity != "blocker"]
    servers = _server_names(evaluation)
    by_lower = {name.lower(): name for name in servers}
    area_ids = list(dict.fromkeys([*checks.areas, *(c.area for c in checks.checks)]))
    by_area: dict[str, list[Finding]] = {}
    for finding in findings:
        by_area.setdefault(finding.area, []).append(finding)
    areas = []
    for area in area_ids:
        in_area = by_area.get(area, [])
        if in_area:
            areas.append(AreaSection(id=area, title=checks.area_title(area), findings=in_area, counts=counts(in_area),
                                     checks=_groups(in_area, order, by_lower)))
    # the runbook follows the final verdict (after exemptions): the switch waits for READY (hma_check.evaluate.settle)
    exempted = {(f.check_id, f.subject) for f in findings if f.status == EXEMPT}
    runbook = settle(evaluation.runbook, verdict=verdict, needs={step.id: step.needs for step in checks.steps},
                     exempted=exempted)
    enable_phases = _phases(runbook, reverse=False)
    numbers = {id(entry): f"{phase['phase']}.{index}"
               for phase in enable_phases for index, entry in enumerate(phase["entries"], 1)}
    # a finding names the step that fixes it by the command it prepared (settle() may comment that command out)
    steps = {(prepared.phase, prepared.enable): numbers[id(printed)]
             for prepared, printed in zip(evaluation.runbook, runbook, strict=True) if id(printed) in numbers}
    linked = causes_of(findings)
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
        "target_text": target_text(snapshot.target),
        "evidence_sha256": evidence_sha256,
        "checks_files": checks.files,
        "sources_total": len(snapshot.sources),
        "sources_ok": sum(1 for r in snapshot.sources.values() if r.ok),
    }
    switches, hma_state = _hma_state(evaluation)
    return Report(
        verdict=verdict, verdict_text=_verdict_text(kind, verdict, switches),
        exit_code=exit_code, counts=counts(findings), kind=kind,
        severity_counts=_severity_counts(findings), findings=findings, attention=attention, areas=areas,
        gaps=_gaps(evaluation, findings), enable_phases=enable_phases,
        rollback_phases=_phases([e for e in runbook if e.rollback], reverse=True),
        hma_state=hma_state, hma_switches=switches, metadata=metadata,
        unused_exemptions=list(unused_exemptions or []),
        expired_exemptions=[f for f in findings if f.exemption and f.exemption.get("expired")],
        area_titles={a: checks.area_title(a) for a in area_ids},
        rows=build_rows(findings, TO_ACT_ON, order=order, servers=servers, steps=steps, linked=linked),
        note_rows=build_rows(findings, (NOTE,), order=order, servers=servers, steps=steps, linked=linked),
        overview=build_overview(findings, servers, snapshot, evaluation.as_of), servers=servers, causes=linked,
        clients=_clients(snapshot),
    )


def _clients(snapshot: Any) -> Any:
    from hma_check.render.clients import clients_view

    return clients_view(snapshot)


def target_text(target: Any) -> str:
    """The scan target in words, for the report: what was read from where, with which account; never a Python dict
    and never a local path (a CA bundle in a temporary folder says nothing to a change board)."""
    if not isinstance(target, dict):
        return str(target or "")
    parts: list[str] = []
    mode = target.get("mode")
    if isinstance(mode, str):
        where = target.get("exchangeServer") or (target.get("exchange") if isinstance(target.get("exchange"), str)
                                                 else None)
        parts.append(f"{mode}" + (f" of {where}" if where else ""))
    exchange = target.get("exchange")
    if isinstance(exchange, dict):
        where = exchange.get("server") or exchange.get("url") or ""
        how = ", ".join(str(v) for v in (exchange.get("auth"), exchange.get("username")) if v)
        parts.append(f"Exchange remote PowerShell {where}" + (f" ({how})" if how else ""))
    os_target = target.get("os")
    if isinstance(os_target, dict):
        hosts = os_target.get("hosts")
        count = f" on {len(hosts)} servers" if isinstance(hosts, (dict, list)) and hosts else ""
        parts.append(f"server OS over WinRM{count}" + (f" ({os_target['auth']})" if os_target.get("auth") else ""))
    graph = target.get("graph")
    tenants = (graph.get("tenants") if isinstance(graph, dict) else None) or target.get("tenants")
    if graph or tenants:
        listed = ", ".join(map(str, tenants)) if isinstance(tenants, list) and tenants else ""
        parts.append("Microsoft Graph" + (f" (tenant {listed})" if listed else ""))
    probes = target.get("probes")
    if isinstance(probes, dict):
        extra = probes.get("hosts") or []
        parts.append("anonymous HTTPS probes of every Exchange URL host" +
                     (f" and {', '.join(map(str, extra))}" if extra else ""))
    return "; ".join(parts)


def _label(subjects: list[str]) -> str:
    return subjects[0] if len(subjects) == 1 else f"{len(subjects)}: {compact(subjects)}"


def _groups(findings: list[Finding], order: dict[str, int], servers: dict[str, str]) -> list[CheckGroup]:
    by_check: dict[str, list[Finding]] = {}
    for finding in findings:
        by_check.setdefault(finding.check_id, []).append(finding)
    groups = []
    for check_id, group in by_check.items():
        first = group[0]
        worst = min((f.status for f in group), key=lambda s: STATUS_RANK.get(s, 9))
        on = sorted({s for f in group if (s := _server_of(f, servers))})
        groups.append(CheckGroup(id=check_id, title=first.title, severity=first.severity, expected=first.expected,
                                 why=first.why, references=first.references, worst=worst, counts=counts(group),
                                 findings=group, servers=on))
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


def _verdict_text(kind: str, verdict: str, switches: str) -> str:
    if kind == "validation":
        return VALIDATION_TEXT[verdict]
    return VERDICT_TEXT_BY_STATE.get(switches, VERDICT_TEXT)[verdict]


def _hma_state(evaluation: Evaluation) -> tuple[str, str]:
    """The two switches (enabled, off, half, unknown) and a one-line reading of them, straight from the evidence."""
    sources = evaluation.snapshot.sources
    org, auth = sources.get("exchange.organization_config"), sources.get("exchange.auth_servers")
    if org is None or auth is None or not org.ok or not auth.ok:
        return HMA_UNKNOWN, "unknown: the organization configuration or the AuthServers were not collected"
    profile = org.data.get("OAuth2ClientProfileEnabled") if isinstance(org.data, dict) else None
    if not isinstance(profile, bool):   # absent is unknown, not off
        return HMA_UNKNOWN, "unknown: the organization configuration has no OAuth2ClientProfileEnabled value"
    default = any(isinstance(a, dict) and a.get("Type") == "AzureAD" and a.get("IsDefaultAuthorizationEndpoint") is True
                  for a in auth.data or [])
    if profile and default:
        return HMA_ENABLED, ("HMA is enabled (OAuth2ClientProfileEnabled on, EvoSts is the default authorization "
                             "endpoint)")
    if not profile and not default:
        return HMA_OFF, "HMA is not enabled yet (both switches off)"
    return HMA_HALF, ("HMA is half enabled: OAuth2ClientProfileEnabled is " + ("on" if profile else "off")
                      + ", EvoSts " + ("is" if default else "is not") + " the default authorization endpoint")

