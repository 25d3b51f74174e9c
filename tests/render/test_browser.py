"""report.html in headless Chromium: the verdict shows, hostile values stay text, and the page logs no errors."""

from __future__ import annotations

import pytest

from tests.support import baseline
from tests.support.baseline import apply_ops
from tests.support.browser import dump_dom
from hma_check.commands.pipeline import run_report

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]


def test_the_detector_sees_a_broken_page(tmp_path):
    """Prove the console check works before trusting it with the report."""
    page = tmp_path / "broken.html"
    page.write_text("<html><body><script>undefinedFunction();</script></body></html>", encoding="utf-8")
    _, console = dump_dom(page, tmp_path / "profile")
    assert any("Uncaught ReferenceError" in line for line in console)


def test_report_html_shows_the_verdict_and_logs_nothing(tmp_path):
    snapshot = baseline.build(server_names=("EX1<script>alert(1)</script>", "EX02"))
    apply_ops(snapshot, [{"set": ["exchange.outlook_anywhere@EX02", 0, "SSLOffloading"], "to": True}])
    snapshot.save(tmp_path / "evidence.json")
    outcome = run_report(tmp_path / "evidence.json", tmp_path / "out")
    dom, console = dump_dom(tmp_path / "out" / "report.html", tmp_path / "profile")
    assert outcome.verdict == "NOT_READY"
    assert '<div class="verdict">NOT READY</div>' in dom
    assert "EX1&lt;script&gt;alert(1)&lt;/script&gt;" in dom          # rendered as text, never as markup
    assert "<svg" in dom and "Servers × checks" in dom
    assert console == [], console
