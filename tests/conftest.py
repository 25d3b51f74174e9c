"""Shared test helpers: the baseline snapshot, patch operations on it, and the loaded catalogue."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parent
SAMPLE = TESTS.parent / "hma_check" / "samples" / "contoso-evidence.json"   # the shipped sample (make_sample.py)
# A small user checks file (one organization check) for tests of --checks handling.
SITE_CHECKS = """\
version: 1
checks:
  - id: SITE-ORG-001
    title: MAPI over HTTP on
    area: organization
    severity: blocker
    requires: [exchange.organization_config]
    assert: "exchange.organization_config.MapiHttpEnabled is true"
    expect: enabled
    actual: "{{ exchange.organization_config.MapiHttpEnabled }}"
    why: because
    references: [https://learn.microsoft.com/x]
"""
sys.path.insert(0, str(TESTS))

import baseline  # noqa: E402

from hma_check.snapshot import Snapshot  # noqa: E402


@pytest.fixture(scope="session")
def catalogue():
    from hma_check.pipeline import load_all_checks

    return load_all_checks()


@pytest.fixture()
def snapshot() -> Snapshot:
    return baseline.build()


def copy_of(run_folder: Path, tmp_path: Path) -> Path:
    """A copy of a module's report folder that one test may edit, sign or overwrite freely."""
    copy = tmp_path / "run"
    shutil.copytree(run_folder, copy)
    return copy


def _resolve_key(key: str) -> str:
    return key.replace("@TENANT", "@" + baseline.TENANT)


def apply_ops(snapshot: Snapshot, ops: list[dict[str, Any]]) -> Snapshot:
    """The small patch language of tests/check_cases.yaml, applied in place."""
    for op in ops:
        if "drop" in op:   # the source is not in the evidence at all (someone deleted it from evidence.json)
            target = _resolve_key(op["drop"])
            assert target in snapshot.sources, f"no source {target} to drop"
            del snapshot.sources[target]
            continue
        if "skip" in op:   # the collector skipped it, with op["reason"]
            target = _resolve_key(op["skip"])
            hits = [r for k, r in snapshot.sources.items() if k == target or r.name == target]
            assert hits, f"no source {target} to skip"
            for result in hits:
                result.status, result.error, result.data = "skipped", op.get("reason", "skipped by the test"), None
            continue
        if "add" in op:    # a new source result: {add: key, data: ..., status: ok}
            from hma_check.snapshot import SourceResult

            name, _, scope = _resolve_key(op["add"]).partition("@")
            status = op.get("status", "ok")
            snapshot.add(SourceResult(name=name, scope=scope or None, status=status, command=f"test {name}",
                                      started=baseline.COLLECTED_AT, duration_ms=0,
                                      error=op.get("reason") if status != "ok" else None,
                                      data=op.get("data") if status == "ok" else None))
            continue
        if "fail" in op:
            target = _resolve_key(op["fail"])
            hits = [r for k, r in snapshot.sources.items() if k == target or r.name == target]
            assert hits, f"no source {target} to fail"
            for result in hits:
                result.status, result.error, result.data = "error", "TimeoutError: simulated collection failure", None
            continue
        kind = next(k for k in ("set", "append", "remove") if k in op)
        key, *path = op[kind]
        key = _resolve_key(key)
        assert key in snapshot.sources, f"no source {key} in the baseline"
        result = snapshot.sources[key]
        if kind == "set" and not path:
            result.data = op["to"]
            continue
        container = result.data
        for part in path[:-1]:
            container = container[part]
        last = path[-1] if path else None
        if kind == "set":
            container[last] = op["to"]
        elif kind == "append":
            (container[last] if last is not None else container).append(op["value"])
        else:
            del container[last]
    return snapshot
