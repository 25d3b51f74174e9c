"""Shared fixtures: the baseline snapshot and the loaded catalogue (helpers live in tests/support/)."""

from __future__ import annotations

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


# The fast unit tests (make check): the stages that need no lab, no network and no browser.
UNIT_FOLDERS = {"contract", "evaluate", "render", "util"}


def pytest_collection_modifyitems(config, items):
    tests = Path(__file__).resolve().parent
    for item in items:
        parts = Path(item.path).resolve().relative_to(tests).parts
        if (len(parts) > 1 and parts[0] in UNIT_FOLDERS and not item.get_closest_marker("browser")
                and not item.get_closest_marker("slow")):
            item.add_marker(pytest.mark.unit)
