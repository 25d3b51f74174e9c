"""Statuses, findings, the verdict and the exit code (the contract in design.md)."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

PASS, FAIL, WARN, ERROR, NOT_APPLICABLE, EXEMPT = "PASS", "FAIL", "WARN", "ERROR", "NOT_APPLICABLE", "EXEMPT"
STATUSES = (FAIL, ERROR, WARN, EXEMPT, PASS, NOT_APPLICABLE)   # also the display order: what needs action first
SEVERITIES = ("blocker", "warning", "info")

READY, NOT_READY, INCOMPLETE = "READY", "NOT_READY", "INCOMPLETE"
EXIT_CODES = {READY: 0, NOT_READY: 1, INCOMPLETE: 3}
EXIT_USAGE = 2
EXIT_NOTHING_COLLECTED = 4


def failed_status(severity: str) -> str:
    """A false assertion: FAIL for a blocker, WARN for a warning or an info check (which never blocks)."""
    return FAIL if severity == "blocker" else WARN


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
    excerpt: Any = None                    # the properties of the evaluated item the check looked at
    phase: int | None = None
    enable: str | None = None
    rollback: str | None = None
    exemption: dict[str, Any] | None = None
    original_status: str | None = None
    affected: list[dict[str, str]] | None = None   # users this finding affects: {user, kind, found} (action plan)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Finding":
        return cls(**data)


@dataclass
class RunbookEntry:
    phase: int
    origin: str            # check or step id
    title: str
    subject: str | None
    enable: str
    rollback: str | None
    note: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


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
