"""evaluate(checks, snapshot) -> Evaluation: pure, no I/O. Every outcome that cannot be decided is ERROR with a reason."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterator

from hma_check.contract.findings import ERROR, NOT_APPLICABLE, PASS, Finding, RunbookEntry, failed_status
from hma_check.contract.snapshot import Snapshot
from hma_check.evaluate import budget
from hma_check.evaluate.checks import Check, CheckSet
from hma_check.evaluate.decide import (ORGANIZATION, Undecidable, affected_users, as_bool, causes_of, fallback_subject,
                                       render, render_powershell, subject_of, undecidable)
from hma_check.evaluate.excerpts import Reads, excerpt_of, failing_reads
from hma_check.evaluate.facts import Facts, Part, Scoped
from hma_check.evaluate.lets import SharedLets
from hma_check.evaluate.provenance import Cited, provenance
from hma_check.evaluate.reads import Path
from hma_check.evaluate.runbook import build_runbook


@dataclass
class Evaluation:
    findings: list[Finding]
    runbook: list[RunbookEntry]
    as_of: datetime
    checks: CheckSet
    snapshot: Snapshot


def evaluate(checks: CheckSet, snapshot: Snapshot, *, as_of: datetime | None = None) -> Evaluation:
    facts = Facts(snapshot)
    now = as_of or snapshot.collected_at_datetime
    findings: list[Finding] = []
    for check in checks.checks:
        with budget.check_deadline():
            findings.extend(evaluate_check(check, facts, now))
    runbook = build_runbook(checks, findings, facts, now)
    return Evaluation(findings=findings, runbook=runbook, as_of=now, checks=checks, snapshot=snapshot)


# ------------------------------------------------------------------------------------------------------ checks

def evaluate_check(check: Check, facts: Facts, now: datetime) -> list[Finding]:
    base: dict[str, Any] = {**facts.namespaces, "now": now}
    with facts.recording() as used:
        if check.when is not None:
            try:
                applies = as_bool(check.when, base, "when")
            except Undecidable as exc:
                return [_finding(check, facts, exc.status, ORGANIZATION, reason=str(exc), used=used)]
            if not applies:
                return [_finding(check, facts, NOT_APPLICABLE, ORGANIZATION, used=used,
                                 reason=f"not applicable: 'when' ({check.when.source}) is false")]
        missing, absent = list[str](), list[str]()
        skipped_only = True
        for name in check.requires:
            state, why = facts.availability(name)
            if state == "error":
                missing.append(f"required source {name} {why}")
            elif state == "not_applicable":
                absent.append(f"required source {name} is {why}")
            if state == "error":
                skipped_only = skipped_only and facts.skipped(name)
        if absent:
            # A check that needs a source the organisation cannot have (by the contract) does not apply, whatever
            # else is missing: there is nothing it could decide.
            return [_finding(check, facts, NOT_APPLICABLE, ORGANIZATION, reason="; ".join(absent),
                             used=list(check.requires))]
        if missing:
            # A source left out on purpose (no logs imported, no logs: section) makes an optional check N/A; one
            # that was asked for and failed stays ERROR.
            status = NOT_APPLICABLE if check.if_skipped == "not_applicable" and skipped_only else ERROR
            return [_finding(check, facts, status, ORGANIZATION, reason="; ".join(missing),
                             used=list(check.requires))]
        if check.for_each is None:
            finding = _evaluate_item(check, facts, base, item=None, scope=None, read=[])
            assert finding is not None   # only 'where' skips an item, and the loader allows it only with 'for_each'
            return [finding]
        try:
            collection = check.for_each(base)
            items = list(_iterate(collection))
        except Exception as exc:  # noqa: BLE001 - any failure to enumerate is an ERROR with its reason
            failure = undecidable("for_each", exc)
            return [_finding(check, facts, failure.status, ORGANIZATION, reason=str(failure), used=used)]
        # the organisation-wide sources the items came from: every finding cites them (worked out once per check)
        enumerated = Cited(facts, list(used))
    shared = SharedLets(check, facts)
    findings: list[Finding] = []
    for index, (item, scope, key, problem) in enumerate(items):
        read = [key] if key else []
        if problem is not None:
            findings.append(_finding(check, facts, problem.status, scope or ORGANIZATION, scope=scope,
                                     reason=str(problem), used=read, cited=enumerated))
            continue
        finding = _evaluate_item(check, facts, base, item=item, scope=scope, read=read, cited=enumerated,
                                 index=index, shared=shared)
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


def _iterate(collection: Any) -> Iterator[tuple[Any, str | None, str | None, Undecidable | None]]:
    """(item, scope, source key, why it cannot be evaluated) for every item of a for_each result. A scoped source
    gives every scope it must cover: one that was not collected is ERROR, one that has no such source by design
    (an Edge or Exchange 2010 server's virtual directories) is NOT_APPLICABLE, each under its own scope."""
    if isinstance(collection, Scoped):
        for part in collection.parts:
            if not part.ok:
                yield None, part.scope, part.key, Undecidable(f"{part.key}: {part.error}",
                                                              not_applicable=part.not_applicable is not None)
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
                   read: list[str], cited: Cited | None = None, index: int = 0,
                   shared: SharedLets | None = None) -> Finding | None:
    context = dict(base, item=item, scope=scope)
    reads = Reads(facts.watch)
    with facts.recording() as used:
        for key in read:
            used.add(key)
        subject = None
        try:
            if check.where is not None and not _where(check, facts, context, item, scope):
                return None
            # A subject that cannot be rendered makes the finding ERROR under a name of its own (fallback_subject),
            # never "organization": that would hide which object it is about.
            subject = subject_of(check.subject, context, scope)
            context["item"] = facts.watch.view(item)
            (shared or SharedLets(check, facts)).bind(context, reads)
            with reads.phase("assert"):
                passed = as_bool(check.assertion, context, "assert")
            actual = render(check.actual, context, "actual")
        except Undecidable as exc:
            excerpt, missing = excerpt_of(check, item, reads, failing=None)
            return _finding(check, facts, exc.status, subject or fallback_subject(item, scope, index), scope=scope,
                            reason=str(exc), used=used, excerpt=excerpt, failing=missing, cited=cited)
        status = PASS if passed else failed_status(check.severity)
        enable = rollback = None
        causes: list[dict[str, str | None]] = []
        failing: set[Path] | None = None
        affected = None
        if status != PASS:
            failing = failing_reads(check, context, reads)
            causes = causes_of(check, context)
            if check.enable is not None:
                enable = render_powershell(check.enable, context, "enable")
                rollback = render_powershell(check.rollback, context, "rollback") if check.rollback else None
            try:
                affected = affected_users(check.affected, context) if check.affected else None
            except Undecidable as exc:
                return _finding(check, facts, ERROR, subject, scope=scope, reason=str(exc), used=used, cited=cited)
        excerpt, marked = excerpt_of(check, item, reads, failing=failing)
    finding = _finding(check, facts, status, subject, scope=scope, actual=actual, used=used, excerpt=excerpt,
                       failing=marked, enable=enable, rollback=rollback, causes=causes, cited=cited)
    finding.affected = affected
    return finding


def _where(check: Check, facts: Facts, context: dict[str, Any], item: Any, scope: str | None) -> bool:
    """The check's 'where' for this item. One that reads nothing but the item and its scope (not item.IsEdgeServer)
    has the same answer for the same item in every check: decided once per evaluation, by its text and the item
    (seven checks ask 'not item.IsEdgeServer' of every server). It is asked before the item is watched, so it
    reads no source and logs nothing: only its answer is kept; a failure is not (it is raised again each time)."""
    assert check.where is not None
    if check.where_names is None or not check.where_names <= _ITEM_ONLY or not isinstance(item, (dict, str)):
        # not known to read only the item, or a Part (which reads its source): asked every time
        return as_bool(check.where, context, "where")
    key = (check.where.source, id(item), scope)
    known = facts.saved_wheres.get(key)
    if known is None:
        known = facts.saved_wheres[key] = (as_bool(check.where, context, "where"), item)   # the item kept alive
    return known[0]


_ITEM_ONLY = frozenset({"item", "scope"})


# ----------------------------------------------------------------------------------------------------- findings

def _finding(check: Check, facts: Facts, status: str, subject: str, *, scope: str | None = None,
             reason: str | None = None, actual: str | None = None, used: list[str] | None = None,
             excerpt: dict[str, Any] | None = None, failing: list[str] | None = None,
             enable: str | None = None, rollback: str | None = None,
             causes: list[dict[str, str | None]] | None = None, cited: Cited | None = None) -> Finding:
    if actual is None:
        actual = "could not be evaluated" if status == ERROR else (reason or "")
    sources = cited.add(facts, used or []) if cited is not None else provenance(facts, used or [])
    return Finding(
        check_id=check.id, title=check.title, area=check.area, severity=check.severity, status=status,
        subject=subject, scope=scope, expected=check.expect, actual=actual, reason=reason,
        sources=sources, excerpt=excerpt, failing=list(failing or []), why=check.why,
        references=list(check.references), phase=check.phase, enable=enable, rollback=rollback,
        causes=list(causes or []),
    )
