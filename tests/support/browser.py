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


# Injected into a copy of the report (never into the report itself): real layout numbers from Chromium. The copy is
# shown in an iframe of the size to test (a headless window cannot be narrower than 500 px, a phone is 390) and posts
# its numbers to the page around it, whose DOM --dump-dom returns. Positions are page coordinates in CSS pixels.
MEASURE = """<script>
(function () {
  function bottom(selector) {
    var node = document.querySelector(selector);
    return node ? node.getBoundingClientRect().bottom + window.scrollY : null;
  }
  var blockers = Array.prototype.map.call(document.querySelectorAll("#blockers ol.blockers > li"),
                                          function (li) { return li.getBoundingClientRect().bottom + window.scrollY; });
  var start = document.querySelector("#start pre");
  var bars = document.querySelector(".bars");
  parent.postMessage(JSON.stringify({
    width: window.innerWidth, height: document.documentElement.scrollHeight,
    scroll_width: document.documentElement.scrollWidth,
    verdict: bottom("#verdict .verdict"), blockers_heading: bottom("#blockers h2"), blockers: blockers,
    first_step: bottom("#start pre"), first_step_text: start ? start.textContent : null,
    bars_width: bars ? bars.getBoundingClientRect().width : null,
    bars_right: bars ? bars.getBoundingClientRect().right : null
  }), "*");
}());
</script>"""
FRAME = """<!DOCTYPE html><html><body style="margin:0">
<iframe src="{src}" style="border:0;width:{width}px;height:{height}px"></iframe>
<pre id="hma-measure"></pre>
<script>window.addEventListener("message", function (event) {{
  document.getElementById("hma-measure").textContent = event.data; }});</script>
</body></html>"""


def measure(report: Path, folder: Path, width: int = 1440, height: int = 900) -> dict:
    """Layout of ``report`` in headless Chromium in a width x height viewport: page height, where the verdict,
    each blocker and the first runbook step end, and whether the page scrolls sideways."""
    import html as html_module
    import json
    import re

    page = folder / "measured.html"
    page.write_text(report.read_text(encoding="utf-8").replace("</body>", MEASURE + "</body>"), encoding="utf-8")
    frame = folder / f"frame-{width}x{height}.html"
    frame.write_text(FRAME.format(src=page.name, width=width, height=height), encoding="utf-8")
    result = subprocess.run(
        [require(), *FLAGS, f"--user-data-dir={folder / 'profile'}", f"--window-size={width + 60},{height + 60}",
         "--hide-scrollbars", "--virtual-time-budget=10000", "--dump-dom", frame.resolve().as_uri()],
        capture_output=True, text=True, timeout=180)
    found = re.search(r'<pre id="hma-measure">(.+?)</pre>', result.stdout, re.S)
    assert found, f"Chromium measured nothing: {result.stderr[-500:]}"
    return json.loads(html_module.unescape(found.group(1)))


def pdf_pages(report: Path, folder: Path) -> int:
    """Print ``report`` exactly as --pdf does and count the pages with pdfinfo."""
    import re

    from hma_check.render.pdf import html_to_pdf

    require("pdfinfo")
    pdf = folder / "report.pdf"
    pdf.write_bytes(html_to_pdf(report.read_bytes(), require()))
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True).stdout
    return int(re.search(r"Pages:\s+(\d+)", info).group(1))


def run_script(report: Path, folder: Path, body: str, width: int = 1440, height: int = 900):
    """Run ``body`` (a function body that returns a JSON-able value) in ``report`` after its own scripts, in real
    Chromium, and return what it returned."""
    import html as html_module
    import json
    import re

    script = "<script>(function () { parent.postMessage(JSON.stringify((function () {" + body + \
             "}())), '*'); }());</script>"
    page = folder / "scripted.html"
    page.write_text(report.read_text(encoding="utf-8").replace("</body>", script + "</body>"), encoding="utf-8")
    frame = folder / "scripted-frame.html"
    frame.write_text(FRAME.format(src=page.name, width=width, height=height), encoding="utf-8")
    result = subprocess.run(
        [require(), *FLAGS, f"--user-data-dir={folder / 'profile'}", f"--window-size={width + 60},{height + 60}",
         "--virtual-time-budget=10000", "--enable-logging=stderr", "--v=0", "--dump-dom", frame.resolve().as_uri()],
        capture_output=True, text=True, timeout=180)
    found = re.search(r'<pre id="hma-measure">(.+?)</pre>', result.stdout, re.S)
    errors = [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
    assert found, f"the script returned nothing: {errors or result.stderr[-500:]}"
    return json.loads(html_module.unescape(found.group(1)))
