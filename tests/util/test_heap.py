"""heap.long_lived: the collector kept off a report's long-lived objects inside the block, and everything as it
was afterwards (a test process runs hundreds of reports: nothing may stay frozen)."""

from __future__ import annotations

import gc

import pytest

from hma_check.util.heap import YOUNG_THRESHOLD, collector_paused, long_lived


@pytest.fixture
def collector():
    thresholds, was_frozen = gc.get_threshold(), gc.get_freeze_count()
    if was_frozen:
        gc.unfreeze()
    yield
    gc.set_threshold(*thresholds)
    if was_frozen:
        gc.freeze()


def collected(obj: object) -> bool:
    """gc.get_objects() lists what collections walk, not the frozen."""
    return any(candidate is obj for candidate in gc.get_objects())


def test_inside_the_block_what_was_alive_is_frozen_and_afterwards_nothing_is(collector):
    gc.set_threshold(700, 10, 10)
    held = [[n] for n in range(1000)]     # lists: always tracked by the collector

    assert collected(held[0])
    with long_lived():
        assert not collected(held[0]) and not collected(held)
        assert gc.get_threshold() == (YOUNG_THRESHOLD, 10, 10)
    assert collected(held[0]) and gc.get_freeze_count() == 0 and gc.get_threshold() == (700, 10, 10)


def test_an_error_inside_the_block_restores_the_collector_too(collector):
    gc.set_threshold(700, 10, 10)
    with pytest.raises(RuntimeError), long_lived():
        raise RuntimeError("evaluation failed")
    assert gc.get_freeze_count() == 0 and gc.get_threshold() == (700, 10, 10)


def test_objects_someone_else_froze_stay_frozen_and_nothing_more_is(collector):
    gc.freeze()
    frozen = gc.get_freeze_count()
    later = [{"user": n} for n in range(1000)]
    with long_lived():
        assert gc.get_freeze_count() == frozen       # the later objects were not frozen
    assert gc.get_freeze_count() == frozen and later


def test_automatic_collection_turned_off_stays_off(collector):
    gc.set_threshold(0, 10, 10)
    with long_lived():
        assert gc.get_threshold()[0] == 0
    assert gc.get_threshold() == (0, 10, 10)


def test_keep_holds_what_the_block_built_until_it_ends(collector):
    with long_lived() as heap:
        evidence = [[n] for n in range(1000)]   # lists: always tracked (a dict of plain values is not)
        assert collected(evidence[0])
        heap.keep()
        assert not collected(evidence[0]) and not collected(evidence)
    assert collected(evidence[0]) and gc.get_freeze_count() == 0


def test_keep_freezes_nothing_when_someone_else_froze_first(collector):
    gc.freeze()
    frozen = gc.get_freeze_count()
    with long_lived() as heap:
        later = [[n] for n in range(1000)]
        heap.keep()
        assert gc.get_freeze_count() == frozen and collected(later[0])


def test_the_collector_paused_inside_the_block_only(collector):
    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
        with collector_paused():        # nested: still paused, and the inner block does not restart it
            pass
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), collector_paused():
        raise RuntimeError("bad evidence")
    assert gc.isenabled()


def test_a_collector_turned_off_stays_off_after_a_pause(collector):
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
