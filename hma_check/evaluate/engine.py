"""evaluate(checks, snapshot) -> Evaluation: pure, no I/O. Every outcome that cannot be decided is ERROR with a reason."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterator

from jinja2 import UndefinedError
from jinja2.exceptions import SecurityError

from hma_check.contract import sources as source_registry
from hma_check.evaluate.checks import Check, CheckSet, Compiled, Step
from hma_check.errors import one_line
from hma_check.evaluate.facts import Facts, MissingFact, Part, Scoped
from hma_check.contract.findings import (ERROR, NOT_APPLICABLE, PASS, Finding, RunbookEntry, failed_status)
from hma_check.contract.snapshot import Snapshot

ORGANIZATION = "organization"
EXCERPT_LIMIT = 4000     # characters of JSON per finding: enough to show the facts, small enough for a report


@dataclass
class Evaluation:
    findings: list[Finding]
    runbook: list[RunbookEntry]
    as_of: datetime
    checks: CheckSet
    snapshot: Snapshot


class _Undecidable(Exception):
    """Raised inside evaluation to turn any failure into an ERROR finding with a clear reason."""


def evaluate(checks: CheckSet, snapshot: Snapshot, *, as_of: datetime | None = None) -> Evaluation:
    facts = Facts(snapshot)
    now = as_of or snapshot.collected_at_datetime
    findings: list[Finding] = []
    for check in checks.checks:
        findings.extend(evaluate_check(check, facts, now))
    runbook = build_runbook(checks, findings, facts, now)
    return Evaluation(findings=findings, runbook=runbook, as_of=now, checks=checks, snapshot=snapshot)


# ------------------------------------------------------------------------------------------------------ checks

def evaluate_check(check: Check, facts: Facts, now: datetime) -> list[Finding]:
    base: dict[str, Any] = {**facts.namespaces, "now": now}
    with facts.recording() as used:
        if check.when is not None:
            try:
                applies = _as_bool(check.when, base, "when")
            except _Undecidable as exc:
                return [_finding(check, facts, ERROR, ORGANIZATION, reason=str(exc), used=used)]
            if not applies:
                return [_finding(check, facts, NOT_APPLICABLE, ORGANIZATION, used=used,
                                 reason=f"not applicable: 'when' ({check.when.source}) is false")]
        missing = []
        skipped_only = True
        for name in check.requires:
            usable, why = facts.status(name)
            if not usable:
                missing.append(f"required source {name} {why}")
                skipped_only = skipped_only and facts.skipped(name)
        if missing:
            # A source left out on purpose (no logs imported, no logs: section) makes an optional check N/A; one
            # that was asked for and failed stays ERROR.
            status = NOT_APPLICABLE if check.if_skipped == "not_applicable" and skipped_only else ERROR
            return [_finding(check, facts, status, ORGANIZATION, reason="; ".join(missing),
                             used=list(check.requires))]
        if check.for_each is None:
            return [_evaluate_item(check, facts, base, item=None, scope=None, read=[])]
        try:
            collection = check.for_each(base)
            items = list(_iterate(collection))
        except Exception as exc:  # noqa: BLE001 - any failure to enumerate is an ERROR with its reason
            return [_finding(check, facts, ERROR, ORGANIZATION, reason=_reason("for_each", exc), used=used)]
        enumerated = list(used)   # the organisation-wide sources the items came from: every finding cites them
    findings: list[Finding] = []
    for item, scope, key, error in items:
        read = enumerated + ([key] if key else [])
        if error is not None:
            findings.append(_finding(check, facts, ERROR, scope or ORGANIZATION, scope=scope, reason=error, used=read))
            continue
        finding = _evaluate_item(check, facts, base, item=item, scope=scope, read=read)
        if finding is not None:
            findings.append(finding)
    if not findings:
        return [_empty(check, facts)]
    return findings


def _empty(check: Check, facts: Facts) -> Finding:
    assert check.for_each is not None
    what = f"nothing to evaluate: for_each ({check.for_each.source})"
    what += f" where ({check.where.source})" if check.where is not None else ""
    what += " gave no items"
    if check.on_empty == "not_applicable":
        return _finding(check, facts, NOT_APPLICABLE, ORGANIZATION, reason=what, used=list(check.requires))
    if check.on_empty == "fail":
        return _finding(check, facts, failed_status(check.severity), ORGANIZATION, actual=what,
                        used=list(check.requires))
    return _finding(check, facts, ERROR, ORGANIZATION, reason=what, used=list(check.requires))


def _iterate(collection: Any) -> Iterator[tuple[Any, str | None, str | None, str | None]]:
    """(item, scope, source key, error) for every item of a for_each result."""
    if isinstance(collection, Scoped):
        for part in collection.parts:
            if not part.ok:
                yield None, part.scope, part.key, f"{part.key}: {part.error}"
                continue
            for item in part.items:
                yield item, part.scope, part.key, None
        return
    if collection is None or isinstance(collection, (str, bytes, dict)):
        raise TypeError(f"for_each must give a list, not {type(collection).__name__}")
    for item in collection:
        if isinstance(item, Part):
            yield item, item.scope, item.key, None
        else:
            yield item, None, None, None


def _evaluate_item(check: Check, facts: Facts, base: dict[str, Any], *, item: Any, scope: str | None,
                   read: list[str]) -> Finding | None:
    context = dict(base, item=item, scope=scope)
    with facts.recording() as used:
        used.extend(read)
        subject = _subject(check.subject, context, scope)
        try:
            if check.where is not None and not _as_bool(check.where, context, "where"):
                return None
            _bind_let(check.let, context)
            passed = _as_bool(check.assertion, context, "assert")
            actual = _render(check.actual, context, "actual")
        except _Undecidable as exc:
            return _finding(check, facts, ERROR, subject, scope=scope, reason=str(exc), used=used, item=item)
        status = PASS if passed else failed_status(check.severity)
        enable = rollback = None
        if status != PASS and check.enable is not None:
            enable = _render_powershell(check.enable, context, "enable")
            rollback = _render_powershell(check.rollback, context, "rollback") if check.rollback else None
        try:
            affected = _affected(check.affected, context) if status != PASS and check.affected else None
        except _Undecidable as exc:
            return _finding(check, facts, ERROR, subject, scope=scope, reason=str(exc), used=used, item=item)
    finding = _finding(check, facts, status, subject, scope=scope, actual=actual, used=used, item=item,
                       enable=enable, rollback=rollback)
    finding.affected = affected
    return finding


def _affected(compiled: Compiled, context: dict[str, Any]) -> list[dict[str, str]]:
    """The users a finding affects: a list of names or of {user, ...} mappings, each value text."""
    try:
        value = compiled(context)
    except Exception as exc:  # noqa: BLE001
        raise _Undecidable(_reason("affected", exc)) from None
    if not isinstance(value, (list, tuple)):
        raise _Undecidable(f"'affected' ({compiled.source}) gave {type(value).__name__}, not a list")
    out = []
    for entry in value:
        if isinstance(entry, str):
            entry = {"user": entry}
        if not isinstance(entry, dict) or not isinstance(entry.get("user"), str):
            raise _Undecidable(f"'affected' ({compiled.source}) gave {_short(entry)}, not a name or {{user: ...}}")
        out.append({str(k): str(v) for k, v in entry.items()})
    return out


def _subject(template: Compiled | None, context: dict[str, Any], scope: str | None) -> str:
    if template is None:
        return scope or ORGANIZATION
    try:
        text = _render(template, context, "subject").strip()
    except _Undecidable:
        return scope or ORGANIZATION
    return text or scope or ORGANIZATION


def _bind_let(let: tuple[tuple[str, Compiled], ...], context: dict[str, Any]) -> None:
    for name, compiled in let:
        try:
            context[name] = compiled(context)
        except Exception as exc:  # noqa: BLE001
            raise _Undecidable(_reason(f"let {name}", exc)) from None


def _as_bool(compiled: Compiled, context: dict[str, Any], what: str) -> bool:
    try:
        value = compiled(context)
    except Exception as exc:  # noqa: BLE001
        raise _Undecidable(_reason(what, exc)) from None
    if not isinstance(value, bool):
        raise _Undecidable(f"'{what}' ({compiled.source}) gave {type(value).__name__} {_short(value)}, not true or false")
    return value


def _render(compiled: Compiled, context: dict[str, Any], what: str) -> str:
    try:
        return str(compiled(context)).strip()
    except Exception as exc:  # noqa: BLE001
        raise _Undecidable(_reason(what, exc)) from None


def _render_powershell(compiled: Compiled, context: dict[str, Any], what: str) -> str:
    """A step that cannot be prepared stays in the runbook as a comment saying why, never silently dropped."""
    try:
        return _render(compiled, context, what)
    except _Undecidable as exc:
        return f"# NOT PREPARED ({what}): {one_line(str(exc), limit=None)}"


def _reason(what: str, exc: BaseException) -> str:
    if isinstance(exc, MissingFact):
        return f"missing fact: {exc.key} {exc.reason}"
    if isinstance(exc, _Undecidable):
        return str(exc)
    if isinstance(exc, UndefinedError):
        return f"missing fact in '{what}': {exc.message}"
    if isinstance(exc, SecurityError):
        return f"'{what}' tried something the sandbox forbids: {exc}"
    return f"'{what}' failed: {type(exc).__name__}: {exc}"


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ----------------------------------------------------------------------------------------------------- findings

def _finding(check: Check, facts: Facts, status: str, subject: str, *, scope: str | None = None,
             reason: str | None = None, actual: str | None = None, used: list[str] | None = None,
             item: Any = None, enable: str | None = None, rollback: str | None = None) -> Finding:
    if actual is None:
        actual = "could not be evaluated" if status == ERROR else (reason or "")
    return Finding(
        check_id=check.id, title=check.title, area=check.area, severity=check.severity, status=status,
        subject=subject, scope=scope, expected=check.expect, actual=actual, reason=reason,
        sources=_provenance(facts, used or []), excerpt=_excerpt(check, item), why=check.why,
        references=list(check.references), phase=check.phase, enable=enable, rollback=rollback,
    )


def _provenance(facts: Facts, keys: list[str]) -> list[dict[str, str]]:
    """The sources a finding read, with the exact command; big per-server groups are folded into one line."""
    by_name: dict[str, list[str]] = {}
    for key in keys:
        name = key.split("@", 1)[0]
        if key == name and facts.is_scoped(name):   # a whole scoped source: cite each of its scopes
            scoped_keys = [r.key for r in facts.results(name)] or [name]
            by_name.setdefault(name, []).extend(k for k in scoped_keys if k not in by_name.get(name, []))
        else:
            by_name.setdefault(name, []).append(key)
    out = []
    for name, group in by_name.items():
        if len(group) > 3:
            failed = [k for k in group if (r := facts.result(k)) is None or not r.ok]
            spec = source_registry.BY_NAME.get(name)
            out.append({"key": f"{name} ({len(group)} scopes)", "command": spec.filled_by if spec else "",
                        "status": "ok" if not failed else f"{len(failed)} not ok"})
            continue
        for key in group:
            result = facts.result(key)
            if result is None:
                spec = source_registry.BY_NAME.get(name)
                out.append({"key": key, "command": spec.filled_by if spec else "", "status": "not collected"})
            else:
                out.append({"key": key, "command": result.command, "status": result.status})
    return out


def _excerpt(check: Check, item: Any) -> Any:
    """The properties of the evaluated item that the check's expressions name: the evidence behind the finding."""
    if item is None or isinstance(item, Part):
        return None
    if isinstance(item, dict):
        picked = {k: item[k] for k in sorted(check.item_properties) if k in item}
        value: Any = picked or None
    else:
        value = item
    if value is None:
        return None
    text = json.dumps(value, ensure_ascii=False, default=str)
    if len(text) > EXCERPT_LIMIT:
        return {"truncated": text[:EXCERPT_LIMIT] + "…"}
    return value


# ------------------------------------------------------------------------------------------------------ runbook

def build_runbook(checks: CheckSet, findings: list[Finding], facts: Facts, now: datetime) -> list[RunbookEntry]:
    """Phase-ordered enable steps: remediation of every FAIL/WARN that has one, then the declared steps.

    Within a phase, entries keep the order of the checks files (the catalogue is ordered as Microsoft's procedure);
    identical commands from several findings are merged with all their subjects.
    """
    entries: list[RunbookEntry] = []
    for finding in findings:
        if finding.enable:
            entries.append(RunbookEntry(phase=finding.phase or 1, origin=finding.check_id, title=finding.title,
                                        subject=finding.subject, enable=finding.enable, rollback=finding.rollback))
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
            usable, why = facts.status(name)
            if not usable:
                raise _Undecidable(f"required source {name} {why}")
        if step.when is not None and not _as_bool(step.when, context, "when"):
            return None
        _bind_let(step.let, context)
        done = _as_bool(step.done, context, "done") if step.done is not None else False
    except _Undecidable as exc:
        enable = f"# NOT PREPARED: {one_line(str(exc), limit=None)}"
        return RunbookEntry(phase=step.phase, origin=step.id, title=step.title, subject=None, enable=enable,
                            rollback=None, note="could not be prepared from the evidence")
    subject = _subject(step.subject, context, None) if step.subject is not None else None
    enable = _render_powershell(step.enable, context, "enable")
    rollback = _render_powershell(step.rollback, context, "rollback") if step.rollback is not None else None
    note = None
    if done:
        note = "already in place according to the evidence: run only to re-apply"
        enable = "\n".join("# " + line for line in enable.splitlines())
    return RunbookEntry(phase=step.phase, origin=step.id, title=step.title, subject=subject, enable=enable,
                        rollback=rollback, note=note)
