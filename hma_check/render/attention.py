"""What needs attention, as a change board reads it: one row per problem, root causes first, their effects beneath.

Findings of one check with one status are one row ("HMA-VDIR-005 · 200 servers"), whatever the number of subjects.
A finding whose declared cause (``caused_by`` in the checks file, resolved per item by the engine) failed too is
not a problem of its own: it is listed under the row of its root cause ("also explains"), so one misconfigured
server reads as one problem, not as three checks failing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable

from hma_check.contract.findings import ERROR, EXEMPT, FAIL, NOT_APPLICABLE, NOTE, PASS, STATUSES, WARN, Finding

STATUS_RANK = {status: rank for rank, status in enumerate(STATUSES)}
SEVERITY_RANK = {"blocker": 0, "warning": 1, "info": 2}
TO_ACT_ON = (FAIL, ERROR, WARN, EXEMPT)
FIX_LIMIT = 160       # characters of a one-line fix in the banner and the table
LISTED_SUBJECTS = 8   # subjects named in a row before "and N more"


@dataclass
class Row:
    """The findings of one check with one status, read as one problem."""

    check_id: str
    title: str
    area: str
    severity: str
    status: str
    findings: list[Finding]
    servers: frozenset[str] = frozenset()          # lower-case names of the organisation's servers
    effects: list["Row"] = field(default_factory=list)
    step: str | None = None                        # the enable runbook step that fixes it ("1.2"), if any

    @property
    def anchor(self) -> str:
        return f"row-{self.check_id}-{self.status}".lower()

    @property
    def subjects(self) -> list[str]:
        return [f.subject for f in self.findings]

    @property
    def blocks(self) -> bool:
        """A blocker that failed or could not be decided: what keeps the verdict from READY."""
        return self.severity == "blocker" and self.status in (FAIL, ERROR)

    @property
    def subject_summary(self) -> str:
        """'EX07', 'EX001–EX200 (200 servers)', '3 URLs': the subjects in a few words."""
        return summarize(self.subjects, self.servers)

    @property
    def values(self) -> list[tuple[str, list[str]]]:
        """(what was found, the subjects it was found on), identical values together, most common first."""
        grouped: dict[str, list[str]] = {}
        for finding in self.findings:
            grouped.setdefault(found(finding), []).append(finding.subject)
        return sorted(grouped.items(), key=lambda entry: -len(entry[1]))

    @property
    def found(self) -> str | None:
        """The value every subject shares, or None when they differ (the row's details list them)."""
        values = self.values
        return values[0][0] if len(values) == 1 else None

    @property
    def fix(self) -> str | None:
        """The first line of the enable step for the first subject ('# ' dropped from a manual instruction)."""
        for finding in self.findings:
            if finding.enable:
                return one_line_fix(finding.enable)
        return None

    @property
    def expected(self) -> str:
        return self.findings[0].expected

    @property
    def explained(self) -> int:
        """How many findings this row's problem also explains (its effects, theirs included)."""
        return sum(len(row.findings) + row.explained for row in self.effects)

    @property
    def text(self) -> str:
        """What the report's text search matches."""
        parts = [self.check_id, self.title, self.status, *self.subjects, *(v for v, _ in self.values)]
        return " ".join(parts).lower()


def summarize(subjects: list[str], servers: Iterable[str] = ()) -> str:
    """A few words for a list of subjects: the subject itself, a compact server range, or a count by kind."""
    if len(subjects) == 1:
        return subjects[0]
    known = set(servers)
    if subjects and all(subject.lower() in known for subject in subjects):
        return f"{compact(subjects)} ({len(subjects)} servers)"
    if all(subject.startswith(("https://", "http://")) for subject in subjects):
        return f"{len(subjects)} URLs"
    if all(subject.startswith("tenant ") for subject in subjects):
        return f"{len(subjects)} tenants"
    return f"{len(subjects)} subjects"


_NUMBERED = re.compile(r"^(.*?)(\d+)$")


def compact(names: list[str], limit: int = LISTED_SUBJECTS) -> str:
    """'EX001–EX200' for a run of numbered names, 'EX01, EX03–EX05'; more than ``limit`` parts end in 'and N more'."""
    parts: list[str] = []
    run: list[tuple[str, int, str]] = []

    def flush() -> None:
        if run:
            parts.append(run[0][2] if len(run) == 1 else f"{run[0][2]}–{run[-1][2]}")
            run.clear()

    for name in sorted(names, key=_natural):
        match = _NUMBERED.match(name)
        if match and run and match.group(1) == run[-1][0] and int(match.group(2)) == run[-1][1] + 1 \
                and len(match.group(2)) == len(_NUMBERED.match(run[-1][2]).group(2)):  # type: ignore[union-attr]
            run.append((match.group(1), int(match.group(2)), name))
            continue
        flush()
        if match:
            run.append((match.group(1), int(match.group(2)), name))
        else:
            parts.append(name)
    flush()
    if len(parts) > limit:
        return ", ".join(parts[:limit - 1]) + f" and {len(parts) - limit + 1} more"
    return ", ".join(parts)


def _natural(name: str) -> tuple[str, int, str]:
    match = _NUMBERED.match(name)
    return (match.group(1).lower(), int(match.group(2)), name) if match else (name.lower(), -1, name)


def found(finding: Finding) -> str:
    """What a finding found, or for one that could not be decided, why."""
    if finding.status == ERROR:
        return f"not decided: {finding.reason}"
    if finding.status == NOT_APPLICABLE:
        return finding.reason or finding.actual
    return finding.actual


def one_line_fix(command: str) -> str:
    """The first line of a runbook command that says something, shortened for a table cell."""
    lines = [line.strip() for line in command.splitlines() if line.strip()]
    commands = [line for line in lines if not line.startswith("#")]
    text = commands[0] if commands else (lines[0].lstrip("# ").strip() if lines else "")
    return text if len(text) <= FIX_LIMIT else text[:FIX_LIMIT - 1] + "…"


# ------------------------------------------------------------------------------------------------ causes


def causes_of(findings: list[Finding]) -> dict[int, Finding]:
    """id(effect) -> the finding that explains it: a failed (not passing, not N/A) finding of a check the effect
    declares in ``caused_by``, for the subject it names (any subject when it names none)."""
    by_check: dict[str, list[Finding]] = {}
    for finding in findings:
        if finding.status not in (PASS, NOT_APPLICABLE):
            by_check.setdefault(finding.check_id, []).append(finding)
    linked: dict[int, Finding] = {}
    for finding in findings:
        if finding.status in (PASS, NOT_APPLICABLE):
            continue
        for cause in finding.causes:
            wanted = (cause.get("subject") or "").lower()
            match = next((c for c in by_check.get(cause.get("check", ""), [])
                          if c is not finding and (not wanted or c.subject.lower() == wanted)), None)
            if match is not None:
                linked[id(finding)] = match
                break
    return linked


def root_of(finding: Finding, linked: dict[int, Finding]) -> Finding:
    seen = {id(finding)}
    while id(finding) in linked and id(linked[id(finding)]) not in seen:
        finding = linked[id(finding)]
        seen.add(id(finding))
    return finding


# ------------------------------------------------------------------------------------------------ rows


def build_rows(findings: list[Finding], statuses: tuple[str, ...], *, order: dict[str, int],
               servers: Iterable[str] = (), steps: dict[tuple[int, str], str] | None = None,
               linked: dict[int, Finding] | None = None) -> list[Row]:
    """Rows for the findings with ``statuses``: root causes at the top, each with the rows it explains."""
    server_set = frozenset(s.lower() for s in servers)
    linked = causes_of(findings) if linked is None else linked
    chosen = [f for f in findings if f.status in statuses]
    chosen_ids = {id(f) for f in chosen}
    top: dict[tuple[str, str], Row] = {}
    effects: list[tuple[Finding, Finding]] = []
    for finding in chosen:
        root = root_of(finding, linked)
        if root is not finding and id(root) in chosen_ids:
            effects.append((finding, root))
            continue
        _add(top, finding, server_set, steps)
    row_of = {id(f): row for row in top.values() for f in row.findings}
    for finding, root in effects:
        parent = row_of.get(id(root))
        if parent is None:            # the root is itself an effect of a row outside these statuses
            _add(top, finding, server_set, steps)
            continue
        nested = {(r.check_id, r.status): r for r in parent.effects}
        _add(nested, finding, server_set, steps)
        parent.effects = list(nested.values())
    rows = list(top.values())
    key = _row_key(order)
    for row in rows:
        row.effects.sort(key=key)
    rows.sort(key=lambda row: (0 if row.blocks or any(e.blocks for e in row.effects) else 1, *key(row)))
    return rows


def _add(rows: dict[tuple[str, str], Row], finding: Finding, servers: frozenset[str],
         steps: dict[tuple[int, str], str] | None) -> None:
    key = (finding.check_id, finding.status)
    row = rows.get(key)
    if row is None:
        row = rows[key] = Row(check_id=finding.check_id, title=finding.title, area=finding.area,
                              severity=finding.severity, status=finding.status, findings=[], servers=servers)
    row.findings.append(finding)
    if row.step is None and steps and finding.enable:
        row.step = steps.get((finding.phase or 1, finding.enable))


def _row_key(order: dict[str, int]):  # noqa: ANN202 - a sort key
    return lambda row: (SEVERITY_RANK.get(row.severity, 9), STATUS_RANK.get(row.status, 9),
                        order.get(row.check_id, 9999))


__all__ = ["Row", "build_rows", "causes_of", "compact", "found", "one_line_fix", "summarize", "NOTE", "TO_ACT_ON"]
