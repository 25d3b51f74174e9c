"""Shared fixtures: the baseline snapshot and the loaded catalogue (helpers live in tests/support/)."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from hma_check.contract.snapshot import Snapshot
from tests.support import baseline


@pytest.fixture(scope="session")
def catalogue():
    return baseline.shipped_catalogue()


@pytest.fixture()
def snapshot() -> Snapshot:
    return baseline.build()


# Compiled checks and templates are cached between runs (hma_check.util.code_cache): the suite keeps its own cache,
# shared by its processes and the commands they start, never the user's.
if "HMA_CHECK_CACHE_DIR" not in os.environ:
    os.environ["HMA_CHECK_CACHE_DIR"] = tempfile.mkdtemp(prefix="hma-check-test-cache-")
    atexit.register(shutil.rmtree, os.environ["HMA_CHECK_CACHE_DIR"], True)


# The fast unit tests (make check): the stages that need no lab, no network and no browser.
UNIT_FOLDERS = {"contract", "evaluate", "render", "util"}


def pytest_collection_modifyitems(config, items):
    tests = Path(__file__).resolve().parent
    for item in items:
        parts = Path(item.path).resolve().relative_to(tests).parts
        if (len(parts) > 1 and parts[0] in UNIT_FOLDERS and not item.get_closest_marker("browser")
                and not item.get_closest_marker("slow")):
            item.add_marker(pytest.mark.unit)
    if getattr(config.option, "loadgroup", False):   # set on xdist workers under --dist loadgroup
        _group_suffixes(items)


def _group_suffixes(items):
    """``--dist loadgroup`` keeps an xdist_group on one worker by the "@group" suffix xdist writes into each item's
    node id. pytest 9 derives ``nodeid`` from ``_id``, so xdist 3.8's write to ``_nodeid`` is lost and every group
    was split across the workers, each starting the group's labs (the 200-server lab twice). Write the suffix where
    pytest 9 reads it, as xdist would (group names sorted, joined by '_'); an id that has it already is left alone."""
    from _pytest.nodeid import NodeId

    for item in items:
        names = sorted({str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
                        for mark in item.iter_markers("xdist_group")})
        suffix = "@" + "_".join(names)
        if names and not item.nodeid.endswith(suffix):
            item._id = NodeId.parse(item.nodeid + suffix)

