"""evaluate(checks, snapshot) -> Evaluation: pure, no I/O. Every outcome that cannot be decided is ERROR with a reason."""

from __future__ import annotations

import json
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterator

from jinja2 import UndefinedError
from jinja2.exceptions import SecurityError

from hma_check.contract import sources as source_registry
from hma_check.evaluate.checks import Check, CheckSet, Compiled, Step
from hma_check.errors import one_line
from hma_check.evaluate import expr
from hma_check.evaluate.facts import Facts, MissingFact, Part, Scoped
from hma_check.contract.findings import (ERROR, NOT_APPLICABLE, PASS, Finding, RunbookEntry, failed_status)
from hma_check.evaluate.reads import ABSENT, Path, Watch, leaves, path_text, shown_value
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
        for name in check.requires:
            usable, why = facts.status(name)
            if not usable:
                missing.append(f"required source {name} {why}")
        if missing:
            return [_finding(check, facts, ERROR, ORGANIZATION, reason="; ".join(missing),
                             used=list(check.requires))]
        if check.for_each is None:
            return [_evaluate_item(check, facts, base, item=None, scope=None, read=[])]
        try:
            collection = check.for_each(base)
            items = list(_iterate(collection))
        except Exception as exc:  # noqa: BLE001 - any failure to enumerate is an ERROR with its reason
            return [_finding(check, facts, ERROR, ORGANIZATION, reason=_reason("for_each", exc), used=used)]
        # the organisation-wide sources the items came from: every finding cites them (worked out once per check)
        enumerated = _Cited(facts, list(used))
    findings: list[Finding] = []
    for item, scope, key, error in items:
        read = [key] if key else []
        if error is not None:
            findings.append(_finding(check, facts, ERROR, scope or ORGANIZATION, scope=scope, reason=error, used=read,
                                     cited=enumerated))
            continue
        finding = _evaluate_item(check, facts, base, item=item, scope=scope, read=read, cited=enumerated)
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


class _Reads:
    """What one evaluation read, per phase: each ``let`` binding, the assertion (hma_check.reads)."""

    def __init__(self, watch: Watch) -> None:
        self.watch = watch
        self.logs: dict[str, dict[Path, Any]] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[dict[Path, Any]]:
        log = self.logs.setdefault(name, {})
        previous, self.watch.log = self.watch.log, log
        try:
            yield log
        finally:
            self.watch.log = previous


class _Cited:
    """Sources every finding of a check cites (what for_each read), with their provenance lines built once."""

    def __init__(self, facts: Facts, keys: list[str]) -> None:
        self.lines = _provenance(facts, keys)
        self.keys = set(keys)
        self.whole = {line["key"].split(" (", 1)[0] for line in self.lines if line["key"].endswith(" scopes)")}

    def add(self, facts: Facts, keys: list[str]) -> list[dict[str, str]]:
        """These lines, then those of the sources only this finding read."""
        more = [k for k in keys if k not in self.keys and k.split("@", 1)[0] not in self.whole]
        return self.lines + _provenance(facts, more) if more else list(self.lines)


def _evaluate_item(check: Check, facts: Facts, base: dict[str, Any], *, item: Any, scope: str | None,
                   read: list[str], cited: _Cited | None = None) -> Finding | None:
    context = dict(base, item=item, scope=scope)
    reads = _Reads(facts.watch)
    with facts.recording() as used:
        used.extend(read)
        subject = _subject(check.subject, context, scope)
        try:
            if check.where is not None and not _as_bool(check.where, context, "where"):
                return None
            context["item"] = facts.watch.view(item)
            _bind_let(check.let, context, reads)
            with reads.phase("assert"):
                passed = _as_bool(check.assertion, context, "assert")
            actual = _render(check.actual, context, "actual")
        except _Undecidable as exc:
            excerpt, missing = _excerpt(check, item, reads, failing=None)
            return _finding(check, facts, ERROR, subject, scope=scope, reason=str(exc), used=used, excerpt=excerpt,
                            failing=missing, cited=cited)
        status = PASS if passed else failed_status(check.severity)
        enable = rollback = None
        causes: list[dict[str, str | None]] = []
        failing: set[Path] | None = None
        if status != PASS:
            failing = _failing_reads(check, context, reads)
            causes = _causes(check, context)
            if check.enable is not None:
                enable = _render_powershell(check.enable, context, "enable")
                rollback = _render_powershell(check.rollback, context, "rollback") if check.rollback else None
        excerpt, marked = _excerpt(check, item, reads, failing=failing)
    return _finding(check, facts, status, subject, scope=scope, actual=actual, used=used, excerpt=excerpt,
                    failing=marked, enable=enable, rollback=rollback, causes=causes, cited=cited)


def _tested_lets(check: Check, names: frozenset[str]) -> list[str]:
    """The ``let`` bindings an expression depends on, directly or through other bindings, in declaration order."""
    found: set[str] = set()
    pending = [name for name in names if name in check.let_names]
    while pending:
        name = pending.pop()
        if name not in found:
            found.add(name)
            pending.extend(n for n in check.let_names[name] if n in check.let_names)
    return [name for name, _ in check.let if name in found]


def _failing_reads(check: Check, context: dict[str, Any], reads: _Reads) -> set[Path]:
    """The reads behind a false assertion: of its 'and' parts, those that are false (each evaluated on its own;
    a part that cannot be evaluated alone is left unmarked), with the bindings they use; else everything tested."""
    failing: set[Path] = set()
    for index, (part, names) in enumerate(check.assert_parts):
        with reads.phase(f"part.{index}") as log:
            try:
                false = expr.run_expression(part, context) is False
            except Exception:  # noqa: BLE001 - e.g. 'x.y' after a false 'x is not none': the earlier part explains it
                false = False
        if false:
            failing.update(log)
            for name in _tested_lets(check, names):
                failing.update(reads.logs.get(f"let.{name}", {}))
    if not failing:
        for name in ["assert", *(f"let.{n}" for n in _tested_lets(check, check.assert_names))]:
            failing.update(reads.logs.get(name, {}))
    return failing


def _causes(check: Check, context: dict[str, Any]) -> list[dict[str, str | None]]:
    """The declared root causes (``caused_by``) with the subject each names for this item; an empty or failing
    subject template means this item has no such cause."""
    causes: list[dict[str, str | None]] = []
    for cause in check.caused_by:
        subject = None
        if cause.subject is not None:
            try:
                subject = _render(cause.subject, context, "caused_by") or None
            except _Undecidable:
                subject = None
            if subject is None:
                continue
        causes.append({"check": cause.check, "subject": subject})
    return causes


def _subject(template: Compiled | None, context: dict[str, Any], scope: str | None) -> str:
    if template is None:
        return scope or ORGANIZATION
    try:
        text = _render(template, context, "subject").strip()
    except _Undecidable:
        return scope or ORGANIZATION
    return text or scope or ORGANIZATION


def _bind_let(let: tuple[tuple[str, Compiled], ...], context: dict[str, Any], reads: _Reads | None = None) -> None:
    for name, compiled in let:
        with reads.phase(f"let.{name}") if reads is not None else nullcontext():
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
             excerpt: dict[str, Any] | None = None, failing: list[str] | None = None,
             enable: str | None = None, rollback: str | None = None,
             causes: list[dict[str, str | None]] | None = None, cited: _Cited | None = None) -> Finding:
    if actual is None:
        actual = "could not be evaluated" if status == ERROR else (reason or "")
    sources = cited.add(facts, used or []) if cited is not None else _provenance(facts, used or [])
    return Finding(
        check_id=check.id, title=check.title, area=check.area, severity=check.severity, status=status,
        subject=subject, scope=scope, expected=check.expect, actual=actual, reason=reason,
        sources=sources, excerpt=excerpt, failing=list(failing or []), why=check.why,
        references=list(check.references), phase=check.phase, enable=enable, rollback=rollback,
        causes=list(causes or []),
    )


def _provenance(facts: Facts, keys: list[str]) -> list[dict[str, str]]:
    """The sources a finding read, with the exact command; big per-server groups are folded into one line."""
    by_name: dict[str, dict[str, None]] = {}      # name -> its keys read, in order (a dict: no repeats, fast)
    for key in keys:
        name = key.split("@", 1)[0]
        group = by_name.setdefault(name, {})
        if key == name and facts.is_scoped(name):   # a whole scoped source: cite each of its scopes
            group.update(dict.fromkeys([r.key for r in facts.results(name)] or [name]))
        else:
            group.setdefault(key, None)
    out = []
    for name, group in by_name.items():
        if len(group) > 3:
            ok = facts.ok_keys(name)
            failed = sum(1 for key in group if key not in ok)
            spec = source_registry.BY_NAME.get(name)
            out.append({"key": f"{name} ({len(group)} scopes)", "command": spec.filled_by if spec else "",
                        "status": "ok" if not failed else f"{failed} not ok"})
            continue
        for key in group:
            result = facts.result(key)
            if result is None:
                spec = source_registry.BY_NAME.get(name)
                out.append({"key": key, "command": spec.filled_by if spec else "", "status": "not collected"})
            else:
                out.append({"key": key, "command": result.command, "status": result.status})
    return out


def _excerpt(check: Check, item: Any, reads: _Reads,
             failing: set[Path] | None) -> tuple[dict[str, Any] | None, list[str]]:
    """The values the assertion tested (hma_check.reads), path -> value, and the paths that made it false
    (``failing``; None for a finding that could not be decided: then the properties missing from the evidence)."""
    tested: dict[Path, Any] = {}
    phases = ["assert", *(name for name in reads.logs if name.startswith("part.")),
              *(f"let.{n}" for n in _tested_lets(check, check.assert_names))]
    for name in phases:     # the parts of a failed 'and' read what the short-circuited assertion did not reach
        for path, value in reads.logs.get(name, {}).items():
            tested.setdefault(path, value)
    if not tested and item is not None and not isinstance(item, (dict, Part)):
        tested[("item",)] = item          # a plain value (an SPN, a URL) is itself the evidence
    excerpt: dict[str, Any] = {}
    marked: list[str] = []
    size = 0
    # the values that made it false first, so a long excerpt is never cut before them
    read = sorted(leaves(tested), key=lambda entry: failing is not None and entry[0] not in failing)
    for path, value in read:
        text = path_text(path)
        shown = shown_value(value)
        size += len(text) + _json_size(shown)
        if size > EXCERPT_LIMIT:
            excerpt["…"] = f"{len(read) - len(excerpt)} more properties read (see evidence.json)"
            break
        excerpt[text] = shown
        if (failing is not None and path in failing) or (failing is None and value is ABSENT):
            marked.append(text)
    return (excerpt or None), marked


def _json_size(value: Any) -> int:
    """About how long the value is as JSON (exact enough for a budget; serialising every value cost a tenth of
    the evaluation)."""
    if isinstance(value, str):
        return len(value) + 2
    if value is None or isinstance(value, (bool, int, float)):
        return 8
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return sum(len(v) + 4 for v in value) + 2
    return len(json.dumps(value, ensure_ascii=False, default=str))


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
