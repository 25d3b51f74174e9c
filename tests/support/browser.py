"""Headless Chromium for tests: found and started as --pdf does, and skip-or-fail when a program is missing."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from hma_check.errors import ToolMissingError
from hma_check.render.pdf import FLAGS, find_chromium


def require(*tools: str) -> str:
    """The browser, found as ``--pdf`` finds it, once the other programs a test needs are there too.

    A missing one fails where CI sets HMA_CHECK_REQUIRE_BROWSER=1; elsewhere the test skips, saying why.
    """
    missing = [tool for tool in tools if shutil.which(tool) is None]
    try:
        browser = find_chromium()
    except ToolMissingError:
        missing.append("chromium")
    if missing:
        message = f"needs {', '.join(missing)} (Debian: apt-get install chromium poppler-utils)"
        if os.environ.get("HMA_CHECK_REQUIRE_BROWSER") == "1":
            pytest.fail(message + "; HMA_CHECK_REQUIRE_BROWSER=1 requires them")
        pytest.skip(message)
    return browser


def dump_dom(page: Path, profile: Path) -> tuple[str, list[str]]:
    """The DOM after scripts ran, and every console message Chromium logged (errors included)."""
    result = subprocess.run(
        [require(), *FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
         "--dump-dom", page.resolve().as_uri()],
        capture_output=True, text=True, timeout=120)
    console = [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
    return result.stdout, console
