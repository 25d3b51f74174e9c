"""report.pdf: report.html printed by headless Chromium; the report's print CSS lays out the pages."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from hma_check.errors import OutputError, ToolMissingError, one_line

BROWSER_VARIABLE = "HMA_CHECK_CHROMIUM"
CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
TIMEOUT_SECONDS = 180
# Headless printing of a local file: no sandbox (root in containers), nothing that reaches out to the network or
# needs a profile, and a fresh profile folder per run so no earlier state (or lock) is reused.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-extensions",
         "--no-pdf-header-footer")


def find_chromium() -> str:
    """The browser to print with: $HMA_CHECK_CHROMIUM, else Debian's /usr/bin/chromium or one on PATH."""
    configured = os.environ.get(BROWSER_VARIABLE)
    if configured:
        if shutil.which(configured):
            return configured
        raise ToolMissingError(f"--pdf: {BROWSER_VARIABLE}={configured} is not an executable")
    for candidate in CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    raise ToolMissingError("--pdf needs headless Chromium and none was found: install it (Debian/Ubuntu: apt-get "
                           f"install chromium) or set {BROWSER_VARIABLE} to its path")


def html_to_pdf(html: bytes, browser: str) -> bytes:
    with tempfile.TemporaryDirectory(prefix="hma-check-pdf-") as folder:
        page, pdf, profile = Path(folder) / "report.html", Path(folder) / "report.pdf", Path(folder) / "profile"
        page.write_bytes(html)
        command = [browser, *FLAGS, f"--user-data-dir={profile}", f"--print-to-pdf={pdf}", page.as_uri()]
        try:
            done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, timeout=TIMEOUT_SECONDS,
                                  check=False)
        except subprocess.TimeoutExpired:
            raise OutputError(f"Chromium did not print the report within {TIMEOUT_SECONDS} s") from None
        except OSError as exc:
            raise OutputError(f"cannot run {browser}: {exc.strerror or exc}") from None
        payload = pdf.read_bytes() if pdf.is_file() else b""
        if not payload.startswith(b"%PDF-"):
            last = (done.stderr or b"").decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
            raise OutputError(one_line(f"Chromium exited with {done.returncode} and wrote no PDF: {last[0]}", 300))
        return payload
