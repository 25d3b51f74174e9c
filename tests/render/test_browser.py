"""report.html in real headless Chromium: what a change board sees first, how long the page and the PDF are, phones,
filters, and that nothing the customer's environment supplies becomes markup.

The three organisations are scanned from the lab through the real clients, as ``hma-check demo`` does; layout numbers
come from Chromium itself (tests.support.browser.measure), pages from Chromium's own printing, counted by pdfinfo.
"""

from __future__ import annotations

import json

import pytest

from hma_check.commands.pipeline import run_report
from hma_lab.runtime import Lab
from tests.support import baseline
from tests.support.browser import dump_dom, measure, pdf_pages, require, run_script
from tests.support.baseline import apply_ops
from tests.support.lab import scan, scan_large_once

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("large")]

VIEWPORT = (1440, 900)
PHONE = (390, 844)
MAX_HEIGHT = 15_000          # px, with passing checks collapsed (the default)
MAX_PAGES = {"ready": 12, "one-server-mapi-no-oauth": 30, "large": 30}


_RUNS: dict = {}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """scenario -> (ReportOutcome, output folder): the lab scanned through every collector, then the report. Kept
    for the test process (tests only read them): under xdist the module's fixture was set up twice, two more lab
    scans and three more reports each time."""
    require()
    if not _RUNS:
        for name in ("ready", "one-server-mapi-no-oauth"):
            with Lab(name) as lab:
                snapshot = scan(lab)
            _RUNS[name] = _report(snapshot, tmp_path_factory.mktemp(name))
        _RUNS["large"] = _report(scan_large_once()[0], tmp_path_factory.mktemp("large"))
    return _RUNS


def _report(snapshot, folder):
    snapshot.save(folder / "evidence.json")
    return run_report(folder / "evidence.json", folder / "out"), folder / "out"


SCENARIOS = pytest.mark.parametrize("name", ["ready", "one-server-mapi-no-oauth", "large"])


@SCENARIOS
def test_verdict_blockers_and_first_runbook_step_are_in_the_first_viewport(runs, name, tmp_path):
    outcome, out = runs[name]
    layout = measure(out / "report.html", tmp_path, *VIEWPORT)
    report = outcome.report
    assert 0 < layout["verdict"] <= VIEWPORT[1]
    assert len(layout["blockers"]) == min(len(report.blockers), 4)
    assert all(0 < bottom <= VIEWPORT[1] for bottom in layout["blockers"]), layout
    assert 0 < layout["first_step"] <= VIEWPORT[1], layout
    assert layout["first_step_text"] == report.first_step.enable      # the command itself, nothing else in it
    assert layout["scroll_width"] <= VIEWPORT[0]


def test_the_one_misconfigured_server_is_one_blocker_that_explains_the_probe_failures(runs):
    report = runs["one-server-mapi-no-oauth"][0].report
    assert report.verdict == "NOT_READY"
    [blocker] = report.blockers
    assert (blocker.check_id, blocker.subjects) == ("HMA-VDIR-001", ["EX07"])
    effects = {row.check_id: row for row in blocker.effects}
    assert {f.subject.rsplit(" via ", 1)[-1] for f in effects["HMA-PROBE-001"].findings} == {"127.0.1.7"}
    assert "HMA-VDIR-007" in effects
    assert report.first_step.origin == "HMA-VDIR-001" and "EX07" in report.first_step.enable


@SCENARIOS
def test_the_page_is_short_with_passes_collapsed_and_fits_a_phone(runs, name, tmp_path):
    _, out = runs[name]
    assert measure(out / "report.html", tmp_path, *VIEWPORT)["height"] < MAX_HEIGHT
    phone = measure(out / "report.html", tmp_path, *PHONE)
    assert phone["width"] == PHONE[0]
    assert phone["scroll_width"] <= PHONE[0], "the page scrolls sideways on a phone"
    assert phone["bars_right"] <= PHONE[0], "the summary chart does not scale down"


@SCENARIOS
def test_the_pdf_is_short(runs, name, tmp_path):
    _, out = runs[name]
    assert pdf_pages(out / "report.html", tmp_path) <= MAX_PAGES[name]


def test_large_report_html_is_under_one_megabyte(runs):
    _, out = runs["large"]
    assert (out / "report.html").stat().st_size < 1_000_000


def test_filters_narrow_by_status_server_area_and_text(runs, tmp_path):
    _, out = runs["one-server-mapi-no-oauth"]
    visible = """
      function visible(selector) {
        return Array.prototype.filter.call(document.querySelectorAll(selector), function (n) { return !n.hidden; })
          .map(function (n) { return n.id; });
      }
      function set(change) {
        var form = document.getElementById("filters");
        change(form);
        form.dispatchEvent(new Event("input"));
      }
      var result = {};
      set(function (form) { form.querySelectorAll("input[name=status]").forEach(function (b) { b.checked = b.value === "FAIL"; }); });
      result.fail_rows = visible("#attention tr.filterable");
      result.fail_checks = visible("details.check");
      set(function (form) { form.querySelectorAll("input[name=status]").forEach(function (b) { b.checked = true; }); form.server.value = "EX07"; });
      result.ex07_checks = visible("details.check").length;
      result.all_checks = document.querySelectorAll("details.check").length;
      set(function (form) { form.server.value = ""; form.text.value = "hma-vdir-008"; });
      result.text = visible("details.check");
      result.opened = document.getElementById("HMA-VDIR-008").open;
      set(function (form) { form.text.value = ""; form.area.value = "tls"; });
      result.area = visible("details.check");
      return result;
    """
    result = run_script(out / "report.html", tmp_path, visible)
    assert result["fail_rows"] == ["row-hma-vdir-001-fail", "row-hma-probe-001-fail"]
    assert set(result["fail_checks"]) == {"HMA-VDIR-001", "HMA-PROBE-001"}
    assert 0 < result["ex07_checks"] < result["all_checks"]
    # HMA-VDIR-009 (Outlook Anywhere's SSLOffloading) names HMA-VDIR-008 in its text
    assert set(result["text"]) == {"HMA-VDIR-008", "HMA-VDIR-009"} and result["opened"] is True
    assert result["area"] and all(check.startswith("HMA-TLS-") for check in result["area"])


def test_without_scripts_the_report_reads_the_same_and_shows_no_dead_controls(runs, tmp_path):
    _, out = runs["one-server-mapi-no-oauth"]
    page = tmp_path / "no-scripts.html"      # a copy whose policy forbids every script, as a locked-down viewer has
    page.write_text((out / "report.html").read_text(encoding="utf-8").replace(
        "<head>", "<head><meta http-equiv=\"Content-Security-Policy\" content=\"script-src 'none'\">", 1),
        encoding="utf-8")
    dom, console = dump_dom(page, tmp_path / "profile")
    assert any("Content Security Policy" in line for line in console), "the scripts were not blocked"
    assert '<form id="filters" class="filters" hidden="">' in dom
    assert '<button class="copy" type="button" hidden="">copy</button>' in dom
    assert 'id="row-hma-vdir-001-fail"' in dom and 'id="step-1-1"' in dom


def test_a_runbook_block_selected_by_hand_holds_only_the_command(runs, tmp_path):
    """The copy button sits outside the <pre>: selecting the block copies the command, never the word 'copy'."""
    outcome, out = runs["one-server-mapi-no-oauth"]
    texts = run_script(out / "report.html", tmp_path, """
      return Array.prototype.map.call(document.querySelectorAll("#enable pre"), function (pre) { return pre.textContent; });
    """)
    assert texts == [entry.enable for phase in outcome.report.enable_phases for entry in phase["entries"]]


def test_report_html_shows_the_verdict_and_logs_nothing(tmp_path):
    snapshot = baseline.build(server_names=("EX1<script>alert(1)</script>", "EX02"))
    apply_ops(snapshot, [{"set": ["os.iis_ssl_flags@EX02", "/mapi", "RequireSsl"], "to": False}])
    snapshot.save(tmp_path / "evidence.json")
    outcome = run_report(tmp_path / "evidence.json", tmp_path / "out")
    dom, console = dump_dom(tmp_path / "out" / "report.html", tmp_path / "profile")
    assert outcome.verdict == "NOT_READY"
    assert '<span class="verdict">NOT READY</span>' in dom
    assert "EX1&lt;script&gt;alert(1)&lt;/script&gt;" in dom          # rendered as text, never as markup
    assert '<table class="overview">' in dom and "Require SSL" in dom and "off: /mapi" in dom
    assert console == [], console


def test_the_detector_sees_a_broken_page(tmp_path):
    """Prove the console check works before trusting it with the report."""
    page = tmp_path / "broken.html"
    page.write_text("<html><body><script>undefinedFunction();</script></body></html>", encoding="utf-8")
    _, console = dump_dom(page, tmp_path / "profile")
    assert any("Uncaught ReferenceError" in line for line in console)


def test_the_measurement_sees_a_page_that_overflows(tmp_path):
    """The layout probe must fail a page that is too tall or scrolls sideways, or its passing proves nothing."""
    page = tmp_path / "wide.html"
    page.write_text('<html><body><div id="verdict"><span class="verdict">X</span></div>'
                    '<div style="width:2000px;height:20000px">wide</div></body></html>', encoding="utf-8")
    layout = measure(page, tmp_path, *PHONE)
    assert layout["scroll_width"] > PHONE[0] and layout["height"] > MAX_HEIGHT
    assert json.dumps(layout)
