"""Paths and small inputs many tests share: the tests folder, the shipped sample, a user checks file."""

from __future__ import annotations

import shutil
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent
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


def copy_of(run_folder: Path, tmp_path: Path) -> Path:
    """A copy of a module's report folder that one test may edit, sign or overwrite freely."""
    copy = tmp_path / "run"
    shutil.copytree(run_folder, copy)
    return copy
