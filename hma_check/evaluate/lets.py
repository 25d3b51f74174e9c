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
    """

    def __init__(self, check: Check, facts: Facts) -> None:
        self.check = check
        self.facts = facts
        self.invariant = invariant_lets(check)
        self.saved: dict[str, tuple[Any, Undecidable | None, list[str], SavedLog]] = {}

    def bind(self, context: dict[str, Any], reads: Reads) -> None:
        """Bind each ``let`` in order, as decide.bind_let does, under the engine's record of what each one read."""
        for name, compiled in self.check.let:
            saved = self.saved.get(name)
            if saved is None:
                with self.facts.recording() as used, reads.phase(f"let.{name}") as log:
                    try:
                        value, failure = compiled(context), None
                    except Exception as exc:  # noqa: BLE001
                        value, failure = None, undecidable(f"let {name}", exc)
                if name in self.invariant:
                    self.saved[name] = (value, failure, list(used), SavedLog(log))
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
