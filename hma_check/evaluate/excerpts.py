"""What one evaluation read (hma_check.evaluate.reads), and the excerpt a finding shows: the values the assertion
tested, path -> value, with the paths that made it false marked first."""

from __future__ import annotations

from typing import Any

from hma_check.evaluate import budget, expr
from hma_check.evaluate.checks import Check
from hma_check.evaluate.facts import Part
from hma_check.evaluate.reads import ABSENT, Path, SavedLog, Watch, path_text, prefixes, shown_value

EXCERPT_LIMIT = 4000     # characters of JSON per finding: enough to show the facts, small enough for a report


class Reads:
    """What one evaluation read, per phase: each ``let`` binding, the assertion (hma_check.reads)."""

    def __init__(self, watch: Watch) -> None:
        self.watch = watch
        self.logs: dict[str, dict[Path, Any]] = {}

    def phase(self, name: str) -> "Phase":
        return Phase(self, name)


class Phase:
    """``with reads.phase(name) as log``: the properties read inside the block go to that phase's log. A class, not
    a @contextmanager generator: the engine enters one per ``let`` and assertion of every item."""

    __slots__ = ("reads", "name", "previous")

    def __init__(self, reads: Reads, name: str) -> None:
        self.reads, self.name = reads, name

    def __enter__(self) -> dict[Path, Any]:
        log = self.reads.logs.setdefault(self.name, {})
        watch = self.reads.watch
        self.previous, watch.log = watch.log, log
        return log

    def __exit__(self, *exc: object) -> None:
        self.reads.watch.log = self.previous


def failing_reads(check: Check, context: dict[str, Any], reads: Reads) -> set[Path]:
    """The reads behind a false assertion: of its 'and' parts, those that are false (each evaluated on its own;
    a part that cannot be evaluated alone is left unmarked), with the bindings they use; else everything tested."""
    failing: set[Path] = set()
    for index, (part, names) in enumerate(check.assert_parts):
        with reads.phase(f"part.{index}") as log:
            try:
                # metered: a part alone may do what the short-circuited assertion never reached
                with budget.metered("assert (one 'and' part)"):
                    false = expr.run_expression(part, context) is False
            except Exception:  # noqa: BLE001 - e.g. 'x.y' after a false 'x is not none': the earlier part explains it
                false = False
        if false:
            failing.update(log)
            for name in check.lets_read_by(names):
                failing.update(reads.logs.get(f"let.{name}", {}))
    if not failing:
        for name in ["assert", *(f"let.{n}" for n in check.assert_lets)]:
            failing.update(reads.logs.get(name, {}))
    return failing


def excerpt_of(check: Check, item: Any, reads: Reads,
             failing: set[Path] | None) -> tuple[dict[str, Any] | None, list[str]]:
    """The values the assertion tested (hma_check.reads), path -> value, and the paths that made it false
    (``failing``; None for a finding that could not be decided: then the properties missing from the evidence)."""
    phases = ["assert", *(name for name in reads.logs if name.startswith("part.")),
              *(f"let.{n}" for n in check.assert_lets)]
    # the parts of a failed 'and' read what the short-circuited assertion did not reach
    read = tested_leaves([reads.logs[name] for name in phases if name in reads.logs])
    if not read and item is not None and not isinstance(item, (dict, Part)):
        read = [(("item",), item)]          # a plain value (an SPN, a URL) is itself the evidence
    if failing:     # the values that made it false first, so a long excerpt is never cut before them
        read = [entry for entry in read if entry[0] in failing] + [entry for entry in read if entry[0] not in failing]
    excerpt: dict[str, Any] = {}
    marked: list[str] = []
    size = 0
    for path, value in read:
        text = path_text(path)
        shown, shown_size = shown_value(value)
        size += len(text) + shown_size
        if size > EXCERPT_LIMIT:
            excerpt["…"] = f"{len(read) - len(excerpt)} more properties read (see evidence.json)"
            break
        excerpt[text] = shown
        if (failing is not None and path in failing) or (failing is None and value is ABSENT):
            marked.append(text)
    return (excerpt or None), marked


def tested_leaves(logs: list[dict[Path, Any]]) -> list[tuple[Path, Any]]:
    """Every read of the logs that no deeper read explains, in the order first read (a path read by more than one
    phase counts once, where it was first read): ``leaves`` of the logs merged.

    A saved log (a ``let`` evaluated once for every item) keeps its leaves worked out; what the item's own phases
    read is set against it path by path, so an item costs what it read itself, not what the shared log holds.
    """
    saved = [log for log in logs if isinstance(log, SavedLog)]
    own: dict[Path, Any] = {}                 # what the item's own phases read, each path where first read
    for log in logs:
        if not isinstance(log, SavedLog):
            if own:
                for path, value in log.items():
                    own.setdefault(path, value)
            else:
                own.update(log)
    own_inner = prefixes(own)
    if not saved:       # most excerpts: the same walk below, with nothing saved to set the reads against
        return [(path, value) for path, value in own.items() if path not in own_inner]
    read: list[tuple[Path, Any]] = []
    seen: set[Path] = set()                   # the paths of the item's own phases already placed
    before: list[SavedLog] = []               # the saved logs placed so far
    for log in logs:
        if isinstance(log, SavedLog):
            # not a leaf where the item's own phases or another saved log read deeper; placed already where an
            # earlier phase read it
            dropped = log.leaf_paths & own_inner
            dropped |= log.leaf_paths & seen
            for other in saved:
                if other is not log:
                    dropped |= log.leaf_paths & other.inner
            for other in before:
                dropped |= log.leaf_paths & other.paths
            read.extend(log.leaves if not dropped else [entry for entry in log.leaves if entry[0] not in dropped])
            before.append(log)
            continue
        for path in log:
            if path in seen or path in own_inner or any(path in other.inner for other in saved) \
                    or any(path in other for other in before):
                continue
            seen.add(path)
            read.append((path, own[path]))
    return read
