"""A check's ``let`` bindings, each evaluated once per check when it is the same for every item."""

from __future__ import annotations

from typing import Any

from hma_check.evaluate.checks import Check
from hma_check.evaluate.decide import Undecidable, undecidable
from hma_check.evaluate.excerpts import Reads
from hma_check.evaluate.facts import Facts
from hma_check.evaluate.reads import SavedLog


class SharedLets:
    """The ``let`` bindings of one check, each evaluated once when it reads neither ``item`` nor ``scope`` (directly
    or through another binding): such a value is the same for every item, since the evidence does not change while
    it is evaluated. HMA-AUTH-011 looks up the current Auth certificate among every server's certificates: once per
    check instead of once per server (200 × 200 parts at 200 servers).

    Each later item gets what evaluating it again would have given: the value (or the same failure), the sources it
    read recorded for the finding's citations, and its log of reads for the excerpt.

    The same binding in another check (the same name and text, reading the same bindings) has the same value too:
    the saved values live for the whole evaluation (``Facts.saved_lets``), keyed by the binding and every binding
    it reads. HMA-SPN-001 and HMA-SPN-003 both reduce 50,000 mailboxes to their SMTP domains; HMA-AUTH-009 to 011
    each gather every server's copy of the Auth certificate.
    """

    def __init__(self, check: Check, facts: Facts) -> None:
        self.check = check
        self.facts = facts
        self.keys = {name: closure_key(check, name) for name in invariant_lets(check)}
        self.saved: dict[Any, tuple[Any, Undecidable | None, list[str], SavedLog]] = facts.saved_lets

    def bind(self, context: dict[str, Any], reads: Reads) -> None:
        """Bind each ``let`` in order, as decide.bind_let does, under the engine's record of what each one read."""
        for name, compiled in self.check.let:
            key = self.keys.get(name)
            saved = None if key is None else self.saved.get(key)
            if saved is None:
                with self.facts.recording() as used, reads.phase(f"let.{name}") as log:
                    try:
                        value, failure = compiled(context), None
                    except Exception as exc:  # noqa: BLE001
                        value, failure = None, undecidable(f"let {name}", exc)
                if key is not None:
                    self.saved[key] = (value, failure, list(used), SavedLog(log))
                if failure is not None:
                    raise failure
            else:
                value, failure, keys, log = saved
                self.facts.record_all(keys)
                reads.logs[f"let.{name}"] = log     # read, never written, by the excerpt
                if failure is not None:
                    raise Undecidable(str(failure), not_applicable=failure.not_applicable)
            context[name] = value


def invariant_lets(check: Check) -> frozenset[str]:
    """The ``let`` bindings that read neither ``item`` nor ``scope``, nor any binding that does (nor one not bound
    yet where it is read)."""
    invariant: set[str] = set()
    for name, _ in check.let:
        names = check.let_names.get(name, frozenset({"item"}))
        if "item" in names or "scope" in names:
            continue
        if all(n in invariant for n in names if n in check.let_names):
            invariant.add(name)
    return frozenset(invariant)


def closure_key(check: Check, name: str) -> tuple[tuple[str, str], ...]:
    """The binding's name and text with those of every binding it reads, directly or not, in declaration order:
    two invariant bindings with the same key have the same value (they read only the evidence and each other)."""
    sources = dict((n, compiled.source) for n, compiled in check.let)
    needed: set[str] = set()
    pending = [name]
    while pending:
        current = pending.pop()
        if current in needed:
            continue
        needed.add(current)
        pending.extend(n for n in check.let_names.get(current, ()) if n in sources)
    return tuple((n, sources[n]) for n, _ in check.let if n in needed)
