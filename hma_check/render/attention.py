"""What needs attention, as a change board reads it: one row per problem, root causes first, their effects beneath.

Findings of one check with one status are one row ("HMA-VDIR-005 · 200 servers"), whatever the number of subjects.
A finding whose declared cause (``caused_by`` in the checks file, resolved per item by the engine) failed too is
not a problem of its own: it is listed under the row of its root cause ("also explains"), so one misconfigured
server reads as one problem, not as three checks failing. Findings that could not be decided because the same
facts were not collected are one row too, whatever the checks: "os.tls_registry not collected on EX04: 6 checks".
"""

from __future__ import annotations

import re
from functools import lru_cache
from dataclasses import dataclass, field
from typing import Iterable

from hma_check.contract.findings import ERROR, EXEMPT, FAIL, NOT_APPLICABLE, PASS, STATUSES, WARN, Finding

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
    steps: list[str] = field(default_factory=list)     # the enable runbook steps that fix it ("1.2"), if any
    missing: str | None = None                     # facts not collected: the row is about them, over several checks

    @property
    def anchor(self) -> str:
        return f"row-{self.check_id}-{self.status}{'-missing' if self.missing else ''}".lower()

    @property
    def step(self) -> str | None:
        return self.steps[0] if self.steps else None

    @property
    def step_label(self) -> str:
        """'step 1.2', or 'steps 1.2 and 1.3', 'steps 1.2 to 1.9 (8)' for a row fixed by several commands."""
        if len(self.steps) == 1:
            return f"step {self.steps[0]}"
        if len(self.steps) == 2:
            return f"steps {self.steps[0]} and {self.steps[1]}"
        return f"steps {self.steps[0]} to {self.steps[-1]} ({len(self.steps)})"

    @property
    def check_label(self) -> str:
        """'HMA-VDIR-001', or 'HMA-TLS-001–HMA-TLS-006' for a row over several checks."""
        return compact([check for check, _ in self.checks])

    @property
    def checks(self) -> list[tuple[str, str]]:
        """(id, title) of every check the row covers: one, or several for facts that were not collected."""
        return list(dict.fromkeys((f.check_id, f.title) for f in self.findings))

    @property
    def subjects(self) -> list[str]:
        return list(dict.fromkeys(f.subject for f in self.findings))

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
            subjects = grouped.setdefault(same_found(finding), [])
            if finding.subject not in subjects:
                subjects.append(finding.subject)
        values = [(value.replace("‹subject›", subjects[0]) if len(subjects) == 1 else value, subjects)
                  for value, subjects in grouped.items()]
        return sorted(values, key=lambda entry: -len(entry[1]))

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
        parts = [*(c for c, _ in self.checks), self.title, self.status, *self.subjects, *(v for v, _ in self.values)]
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
    run: list[tuple[str, int, str, int]] = []      # prefix, number, name, digits

    def flush() -> None:
        if run:
            parts.append(run[0][2] if len(run) == 1 else f"{run[0][2]}–{run[-1][2]}")
            run.clear()

    for name in sorted(names, key=_natural):
        match = _NUMBERED.match(name)
        if match is None:
            flush()
            parts.append(name)
            continue
        prefix, digits = match.group(1), match.group(2)
        entry = (prefix, int(digits), name, len(digits))
        if not (run and prefix == run[-1][0] and entry[1] == run[-1][1] + 1 and entry[3] == run[-1][3]):
            flush()
        run.append(entry)
    flush()
    if len(parts) > limit:
        return ", ".join(parts[:limit - 1]) + f" and {len(parts) - limit + 1} more"
    return ", ".join(parts)


@lru_cache(maxsize=4096)
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


def same_found(finding: Finding) -> str:
    """What a finding found, with its own subject taken out, for telling "the same on every server" apart from
    values that really differ: 'missing fact: os.tls_registry@‹subject› error: WinRM refused' for 40 servers."""
    text = found(finding)
    for name in {finding.subject, finding.scope} - {None, "", "organization"}:
        text = text.replace(str(name), "‹subject›")
    return text


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
    _merge_missing_facts(top)
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
    step = steps.get((finding.phase or 1, finding.enable)) if steps and finding.enable else None
    if step and step not in row.steps:
        row.steps.append(step)


def missing_facts(finding: Finding) -> str | None:
    """For a finding not decided because facts were not collected: which sources (by name) were missing."""
    if finding.status != ERROR:
        return None
    names = sorted({s["key"].split("@", 1)[0].split(" (", 1)[0] for s in finding.sources if s.get("status") != "ok"})
    return ", ".join(names) or None


def _merge_missing_facts(rows: dict[tuple[str, str], Row]) -> None:
    """ERROR rows that lack the same facts for the same reason become one row over all their checks."""
    merged: dict[tuple[str | None, str], Row] = {}
    for key, row in list(rows.items()):
        sources = {missing_facts(f) for f in row.findings}
        reasons = {same_found(f) for f in row.findings}
        if row.status != ERROR or len(sources) != 1 or None in sources or len(reasons) != 1:
            continue
        group = (sources.pop(), reasons.pop())
        if group in merged:
            target = merged[group]
            target.findings.extend(row.findings)
            if SEVERITY_RANK.get(row.severity, 9) < SEVERITY_RANK.get(target.severity, 9):
                target.severity = row.severity
            del rows[key]
        else:
            merged[group] = row
            row.missing = group[0]
    for row in merged.values():
        if len(row.checks) > 1:
            row.title = f"{len(row.checks)} checks could not be decided: {row.missing} was not collected"


def _row_key(order: dict[str, int]):  # noqa: ANN202 - a sort key
    return lambda row: (SEVERITY_RANK.get(row.severity, 9), STATUS_RANK.get(row.status, 9),
                        order.get(row.check_id, 9999))


__all__ = ["Row", "build_rows", "causes_of", "compact", "found", "one_line_fix", "same_found", "summarize", "TO_ACT_ON"]
