"""Compare two runs: the verdict, every finding's status per (check, subject), and the facts behind them."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hma_check.errors import EvidenceError, InputError
from hma_check.runs.factdiff import FactChange, diff_snapshots
from hma_check.contract.findings import ERROR, EXEMPT, FAIL, NOT_APPLICABLE, PASS, WARN
from hma_check.contract.snapshot import Snapshot, load_snapshot

# How bad a status is for the change board: a move up this scale is "worse". An exemption is an approved state.
BADNESS = {PASS: 0, NOT_APPLICABLE: 0, EXEMPT: 0, WARN: 1, ERROR: 2, FAIL: 3}
VERDICT_BADNESS = {"READY": 0, "INCOMPLETE": 1, "NOT_READY": 2}
MAX_FINDINGS_BYTES = 512 * 1024 * 1024


@dataclass
class Run:
    """One run as the diff reads it: findings.json, and evidence.json when it is beside it."""

    label: str
    findings: list[dict[str, Any]]
    verdict: str
    metadata: dict[str, Any]
    snapshot: Snapshot | None = None
    no_evidence: str | None = None

    @property
    def organization(self) -> Any:
        """metadata.target.organization; findings.json is read from disk, so nothing in it is taken on trust."""
        target = self.metadata.get("target")
        return target.get("organization") if isinstance(target, dict) else None

    def summary(self) -> dict[str, Any]:
        return {"run": self.label, "verdict": self.verdict, "generated_at": self.metadata.get("generated_at"),
                "collected_at": self.metadata.get("collected_at"),
                "evidence_sha256": self.metadata.get("evidence_sha256")}


@dataclass
class StatusChange:
    check_id: str
    title: str
    severity: str
    subject: str
    old: str | None            # None: the finding is new
    new: str | None            # None: the finding is gone
    old_actual: str = ""
    new_actual: str = ""

    @property
    def direction(self) -> str:
        if self.old is None:
            return "worse" if BADNESS.get(self.new, 0) else "new"
        if self.new is None:
            return "gone"
        before, after = BADNESS.get(self.old, 0), BADNESS.get(self.new, 0)
        return "worse" if after > before else "better" if after < before else "changed"

    def to_json(self) -> dict[str, Any]:
        return {"check_id": self.check_id, "title": self.title, "severity": self.severity, "subject": self.subject,
                "old": self.old, "new": self.new, "direction": self.direction, "old_actual": self.old_actual,
                "new_actual": self.new_actual}


@dataclass
class RunDiff:
    old: Run
    new: Run
    statuses: list[StatusChange]
    facts: list[FactChange]
    facts_note: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def verdict_direction(self) -> str:
        before, after = VERDICT_BADNESS.get(self.old.verdict, 0), VERDICT_BADNESS.get(self.new.verdict, 0)
        return "worse" if after > before else "better" if after < before else "same"

    @property
    def worse(self) -> bool:
        return self.verdict_direction == "worse" or any(c.direction == "worse" for c in self.statuses)

    def counts(self) -> dict[str, int]:
        out = {direction: 0 for direction in ("worse", "better", "new", "gone", "changed")}
        for change in self.statuses:
            out[change.direction] += 1
        return out

    def fact_groups(self, limit: int) -> list[dict[str, Any]]:
        """Fact changes per source, at most ``limit`` shown each (a 50,000-user tenant can add thousands)."""
        groups: dict[str, list[FactChange]] = {}
        for change in self.facts:
            groups.setdefault(change.source, []).append(change)
        return [{"source": source, "changes": changes[:limit], "more": max(0, len(changes) - limit),
                 "total": len(changes)} for source, changes in groups.items()]

    def to_json(self, fact_limit: int = 1000) -> dict[str, Any]:
        return {
            "old": self.old.summary(), "new": self.new.summary(),
            "verdict": {"old": self.old.verdict, "new": self.new.verdict, "direction": self.verdict_direction},
            "worse": self.worse, "counts": self.counts(),
            "status_changes": [c.to_json() for c in self.statuses],
            "fact_changes": [c.to_json() for group in self.fact_groups(fact_limit) for c in group["changes"]],
            "fact_changes_total": len(self.facts), "facts_note": self.facts_note, "notes": self.notes,
        }


# ---------------------------------------------------------------------------------------------------------- loading

def load_run(path: str | Path) -> Run:
    """A run folder, or a findings.json (its evidence.json is looked for beside it)."""
    path = Path(path)
    findings_file = path / "findings.json" if path.is_dir() else path
    if not findings_file.is_file():
        raise InputError("no findings.json here: give an hma-check output folder or its findings.json", path=str(path))
    if findings_file.stat().st_size > MAX_FINDINGS_BYTES:
        raise InputError("too large to be a findings file", path=str(findings_file))
    try:
        document = json.loads(findings_file.read_bytes().decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise InputError("not a readable findings.json (invalid JSON)", path=str(findings_file)) from None
    if isinstance(document, dict) and "sources" in document and "findings" not in document:
        raise InputError("this is evidence, not findings: give the run folder or its findings.json",
                         path=str(findings_file))
    findings = document.get("findings") if isinstance(document, dict) else None
    if not isinstance(findings, list) or document.get("verdict") not in VERDICT_BADNESS or not all(
            isinstance(f, dict) and all(isinstance(f.get(k), str) for k in ("check_id", "subject", "status"))
            for f in findings):
        raise InputError("not an hma-check findings.json (verdict and findings with check_id, subject, status)",
                         path=str(findings_file))
    metadata = document.get("metadata") if isinstance(document.get("metadata"), dict) else {}
    run = Run(label=str(path), findings=findings, verdict=document["verdict"], metadata=metadata)
    evidence = findings_file.parent / "evidence.json"
    if evidence.is_file():
        try:
            run.snapshot = load_snapshot(evidence)
        except EvidenceError as exc:
            run.no_evidence = f"its evidence.json is not readable ({exc})"
    else:
        run.no_evidence = "no evidence.json beside its findings.json"
    return run


# -------------------------------------------------------------------------------------------------------- comparing

def compare(old: Run, new: Run) -> RunDiff:
    before, after = _keyed(old.findings), _keyed(new.findings)
    statuses = []
    for key in [*after, *(k for k in before if k not in after)]:
        a, b = before.get(key), after.get(key)
        if a is not None and b is not None and a["status"] == b["status"]:
            continue
        first = b or a
        statuses.append(StatusChange(
            check_id=first["check_id"], title=str(first.get("title", "")), severity=str(first.get("severity", "")),
            subject=first["subject"], old=a["status"] if a else None, new=b["status"] if b else None,
            old_actual=_found(a), new_actual=_found(b)))
    order = {"worse": 0, "better": 1, "new": 2, "gone": 3, "changed": 4}
    statuses.sort(key=lambda c: (order[c.direction], c.check_id, c.subject.lower()))
    diff = RunDiff(old=old, new=new, statuses=statuses, facts=[])
    if old.snapshot is not None and new.snapshot is not None:
        diff.facts = diff_snapshots(old.snapshot, new.snapshot)
    else:
        diff.facts_note = "facts not compared: " + "; ".join(
            f"{run.label}: {run.no_evidence}" for run in (old, new) if run.no_evidence)
    diff.notes = _notes(old, new)
    return diff


def _keyed(findings: list[dict[str, Any]]) -> dict[tuple[str, str, int], dict[str, Any]]:
    """(check, subject) identifies a finding; a repeat of the same pair (rare) is told apart by its rank."""
    out: dict[tuple[str, str, int], dict[str, Any]] = {}
    seen: Counter[tuple[str, str]] = Counter()
    for finding in findings:
        base = (finding["check_id"], finding["subject"])
        out[base + (seen[base],)] = finding
        seen[base] += 1
    return out


def _found(finding: dict[str, Any] | None) -> str:
    if finding is None:
        return ""
    return str(finding.get("reason") if finding.get("status") == ERROR else finding.get("actual") or "")


def _notes(old: Run, new: Run) -> list[str]:
    notes = []
    hashes = [sorted(str(f.get("sha256")) for f in run.metadata.get("checks_files", []) if isinstance(f, dict))
              for run in (old, new)]
    if hashes[0] != hashes[1]:
        notes.append("the two runs were evaluated with different checks files: a status change can come from the "
                     "checks, not from the organization")
    versions = [run.metadata.get("tool_version") for run in (old, new)]
    if versions[0] != versions[1]:
        notes.append(f"different hma-check versions: {versions[0]} and {versions[1]}")
    targets = [run.organization for run in (old, new)]
    if targets[0] != targets[1]:
        notes.append(f"different organizations: {targets[0]!r} and {targets[1]!r}")
    return notes
