"""Headless Chromium for tests: the path, the flags this machine needs, and skip-or-fail when it is missing."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

# Without the background-networking flags Chromium tries Google's hosts at every start and this network refuses them.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if path is None:
        if os.environ.get("HMA_CHECK_REQUIRE_BROWSER"):
            pytest.fail("Chromium is required here (HMA_CHECK_REQUIRE_BROWSER is set) but is not installed")
        pytest.skip("headless Chromium is not installed (Debian package chromium; .ci/run installs it)")
    return path


def dump_dom(page: Path, profile: Path) -> tuple[str, list[str]]:
    """The DOM after scripts ran, and every console message Chromium logged (errors included)."""
    result = subprocess.run(
        [chromium_path(), *FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
         "--dump-dom", page.resolve().as_uri()],
        capture_output=True, text=True, timeout=120)
    console = [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
    return result.stdout, console
