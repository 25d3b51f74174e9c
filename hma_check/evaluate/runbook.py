"""The runbook: phase-ordered enable steps, from the findings' remediations and the checks files' declared steps
(which of them stay live once the verdict is known is hma_check.evaluate.settle's decision).

Pure, like the engine: findings and facts in, RunbookEntry list out."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from hma_check.contract.findings import Finding, RunbookEntry
from hma_check.errors import one_line
from hma_check.evaluate.checks import CheckSet, Step
from hma_check.evaluate.decide import Undecidable, as_bool, bind_let, render_powershell, subject_of
from hma_check.evaluate.facts import Facts
from hma_check.evaluate.settle import DONE, LIVE, NOT_PREPARED, NOT_PREPARED_MARK, SUGGESTION


def build_runbook(checks: CheckSet, findings: list[Finding], facts: Facts, now: datetime) -> list[RunbookEntry]:
    """Phase-ordered enable steps: remediation of every FAIL/WARN that has one, then the declared steps.

    Within a phase, entries keep the order of the checks files (the catalogue is ordered as Microsoft's procedure);
    identical commands from several findings are merged with all their subjects.
    """
    entries: list[RunbookEntry] = []
    for finding in findings:
        if finding.enable:
            # a warning or info finding is a suggestion, never a live command (hma_check.evaluate.settle)
            state = LIVE if finding.severity == "blocker" else SUGGESTION
            note = None if state == LIVE else (f"suggested for {'an' if finding.severity == 'info' else 'a'} "
                                               f"{finding.severity} finding, not a blocker: review it first")
            entries.append(RunbookEntry(phase=finding.phase or 1, origin=finding.check_id, title=finding.title,
                                        subject=finding.subject, enable=finding.enable, rollback=finding.rollback,
                                        state=state, note=note))
    for step in checks.steps:
        entry = _step_entry(step, facts, now)
        if entry is not None:
            entries.append(entry)
    merged: dict[tuple[int, str], RunbookEntry] = {}
    for entry in entries:
        key = (entry.phase, entry.enable)
        if key in merged:
            existing = merged[key]
            if entry.subject and existing.subject and entry.subject not in existing.subject.split(", "):
                existing.subject = f"{existing.subject}, {entry.subject}"
            continue
        merged[key] = entry
    return sorted(merged.values(), key=lambda e: e.phase)


def _step_entry(step: Step, facts: Facts, now: datetime) -> RunbookEntry | None:
    context: dict[str, Any] = {**facts.namespaces, "now": now, "item": None, "scope": None}
    try:
        for name in step.requires:
            state, why = facts.availability(name)
            if state != "ok":
                raise Undecidable(f"required source {name} {why}")
        if step.when is not None and not as_bool(step.when, context, "when"):
            return None
        bind_let(step.let, context)
        done = as_bool(step.done, context, "done") if step.done is not None else False
    except Undecidable as exc:
        enable = f"{NOT_PREPARED_MARK}: {one_line(str(exc), limit=None)}"
        return RunbookEntry(phase=step.phase, origin=step.id, title=step.title, subject=None, enable=enable,
                            rollback=None, state=NOT_PREPARED)
    note = None
    try:
        subject = subject_of(step.subject, context, None) if step.subject is not None else None
    except Undecidable as exc:
        subject, note = None, f"its subject could not be rendered: {one_line(str(exc), limit=None)}"
    enable = render_powershell(step.enable, context, "enable")
    rollback = render_powershell(step.rollback, context, "rollback") if step.rollback is not None else None
    if done:
        note = "; ".join(n for n in ("already in place according to the evidence (uncomment only to re-apply)", note)
                         if n)
        return RunbookEntry(phase=step.phase, origin=step.id, title=step.title, subject=subject, enable=enable,
                            rollback=rollback, state=DONE, note=note)
    return RunbookEntry(phase=step.phase, origin=step.id, title=step.title, subject=subject, enable=enable,
                        rollback=rollback, note=note)
