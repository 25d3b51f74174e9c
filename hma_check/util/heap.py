"""The cyclic garbage collector kept off the objects a report holds for its whole run."""

from __future__ import annotations

import gc
from contextlib import contextmanager
from typing import Iterator

# Allocations between two collections of the youngest generation inside the block (Python's default is 700): the
# evaluation allocates millions of short-lived objects, nearly all freed by reference counting, and a collection
# every 700 of them walked the survivors again and again.
YOUNG_THRESHOLD = 10_000


class Held:
    """What long_lived() gives its block."""

    def __init__(self, frozen: bool) -> None:
        self.frozen = frozen

    def keep(self) -> None:
        """Hold what the block has built so far too (the evidence just parsed, the catalogue just loaded), before a
        collection walks it: gc.freeze again moves every tracked object to the permanent generation at once."""
        if self.frozen:
            gc.freeze()


@contextmanager
def collector_paused() -> Iterator[None]:
    """No automatic collection inside the block, for building one large acyclic document (json.loads of a
    50,000-user evidence file makes a million containers): every collection on the way walks what was built so far
    and can free none of it (a full one cost 13-39 ms of a report's parse). Nothing is collected that would have
    been: reference counting frees what the parse throws away. A block inside a paused one changes nothing."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@contextmanager
def long_lived() -> Iterator[Held]:
    """Inside the block, the collector neither walks what is alive at its start (gc.freeze) nor runs every 700
    allocations. A report holds the evidence (a 50,000-user tenant is hundreds of thousands of objects) and the
    compiled catalogue until it ends; the collections the evaluation's allocations set off walked them again and
    again: 0.18 s of a 1.3 s report at 200 servers and 50,000 users, 0.05 s inside the block (benchmarks/README.md).
    Afterwards everything is as it was: the objects are ordinary again (gc.unfreeze), so a process that runs many
    reports (the tests) keeps nothing, and the thresholds are restored. When something else froze objects first
    (the Graph collector freezes its SDK once per process) nothing is frozen: unfreezing would undo that too.
    https://docs.python.org/3/library/gc.html#gc.freeze
    """
    thresholds = gc.get_threshold()
    freeze = not gc.get_freeze_count()
    if freeze:
        gc.freeze()
    if thresholds[0]:       # 0: automatic collection is off, and stays off
        gc.set_threshold(max(thresholds[0], YOUNG_THRESHOLD), *thresholds[1:])
    try:
        yield Held(freeze)
    finally:
        gc.set_threshold(*thresholds)
        if freeze:
            gc.unfreeze()
