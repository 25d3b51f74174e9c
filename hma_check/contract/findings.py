"""Statuses, findings, the verdict and the exit code (the contract docs/writing-checks.md describes)."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from typing import Any

PASS, FAIL, WARN, ERROR, NOT_APPLICABLE, EXEMPT = "PASS", "FAIL", "WARN", "ERROR", "NOT_APPLICABLE", "EXEMPT"
NOTE = "NOTE"      # an info check's false assertion: worth knowing, never a warning, never part of the verdict
STATUSES = (FAIL, ERROR, WARN, EXEMPT, NOTE, PASS, NOT_APPLICABLE)   # also the display order: what needs action first
SEVERITIES = ("blocker", "warning", "info")

READY, NOT_READY, INCOMPLETE = "READY", "NOT_READY", "INCOMPLETE"
EXIT_CODES = {READY: 0, NOT_READY: 1, INCOMPLETE: 3}
EXIT_USAGE = 2
EXIT_NOTHING_COLLECTED = 4
# findings.json of a 50,000-user tenant is a few tens of megabytes; a larger file is refused as it is read.
MAX_FINDINGS_BYTES = 512 * 1024 * 1024


def failed_status(severity: str) -> str:
    """A false assertion: FAIL for a blocker, WARN for a warning, NOTE for an info check (neither ever blocks)."""
    return {"blocker": FAIL, "warning": WARN}.get(severity, NOTE)


@dataclass
class Finding:
    check_id: str
    title: str
    area: str
    severity: str
    status: str
    subject: str
    expected: str
    actual: str
    why: str
    references: list[str]
    scope: str | None = None
    reason: str | None = None              # ERROR / NOT_APPLICABLE: why it could not be decided
    sources: list[dict[str, str]] = field(default_factory=list)   # [{key, command, status}] the facts it read
    excerpt: Any = None                    # the values the assertion tested: {property path: value}
    failing: list[str] = field(default_factory=list)   # the excerpt's paths whose values made the assertion false
    phase: int | None = None
    enable: str | None = None
    rollback: str | None = None
    exemption: dict[str, Any] | None = None
    original_status: str | None = None
    causes: list[dict[str, Any]] = field(default_factory=list)   # caused_by: [{check, subject}] likely root causes
    affected: list[dict[str, str]] | None = None   # users this finding affects: {user, kind, found} (action plan)

    def to_json(self) -> dict[str, Any]:
        # Its values are JSON already (the engine builds them so): no deep copy, which cost seconds at 200 servers.
        # __init__ sets the fields in order, so its __dict__ is the JSON object as it is (checked: a cheap compare).
        if list(self.__dict__) == _FINDING_FIELD_LIST:
            return dict(self.__dict__)
        return {name: getattr(self, name) for name in _FINDING_FIELDS}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Finding":
        return cls(**data)


_FINDING_FIELDS = tuple(f.name for f in fields(Finding))
_FINDING_FIELD_LIST = list(_FINDING_FIELDS)


@dataclass
class RunbookEntry:
    phase: int
    origin: str            # check or step id
    title: str
    subject: str | None
    enable: str
    rollback: str | None
    note: str | None = None
    state: str = "live"    # live, manual, done, suggestion, blocked, not_prepared (hma_check.evaluate.settle)
    rollback_note: str | None = None

    @property
    def label(self) -> str:
        """What a reviewer reads before the commands: DONE, SUGGESTION, BLOCKED, NOT PREPARED, or Note."""
        return RUNBOOK_LABELS.get(self.state, "Note")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


RUNBOOK_LABELS = {"done": "DONE", "suggestion": "SUGGESTION", "blocked": "BLOCKED", "not_prepared": "NOT PREPARED"}


def verdict_of(findings: list[Finding]) -> str:
    """READY: no blocker FAIL and no blocker ERROR; NOT_READY: any blocker FAIL; INCOMPLETE otherwise."""
    blockers = [f for f in findings if f.severity == "blocker"]
    if any(f.status == FAIL for f in blockers):
        return NOT_READY
    if any(f.status == ERROR for f in blockers):
        return INCOMPLETE
    return READY


def counts(findings: list[Finding]) -> dict[str, int]:
    tally = Counter(f.status for f in findings)
    return {status: tally.get(status, 0) for status in STATUSES}


def exit_code(verdict: str, *, anything_collected: bool = True) -> int:
    if not anything_collected:
        return EXIT_NOTHING_COLLECTED
    return EXIT_CODES[verdict]
