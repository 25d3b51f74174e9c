"""report.pdf: printed by headless Chromium, then read back with poppler (pdftoppm pages, pdftotext words)."""

from __future__ import annotations

import re
import subprocess

import pytest
from click.testing import CliRunner

from tests.support import baseline
from tests.support.baseline import apply_ops
from tests.support.browser import require
from hma_check.cli import cli
from hma_check.runs.manifest import verify_folder
from hma_check.commands.pipeline import run_report

LONG_IDENTITY = "EX01\\mapi (" + "Default-Web-Site-" * 18 + ")"
HOSTILE_ORG = 'Contoso"; } body { display: none } </style><script>alert(1)</script>'


@pytest.fixture(scope="module")
def printed(tmp_path_factory):
    require("pdftoppm", "pdftotext", "pdfinfo")
    folder = tmp_path_factory.mktemp("pdf")
    snapshot = apply_ops(baseline.build(), [
        {"set": ["exchange.mapi_virtual_directories@EX01", 0, "Identity"], "to": LONG_IDENTITY},
        {"set": ["exchange.mapi_virtual_directories@EX01", 0, "IISAuthenticationMethods"], "to": ["Ntlm", "Negotiate"]},
        {"fail": "os.tls_registry@EX02"},
    ])
    snapshot.target["organization"] = HOSTILE_ORG
    snapshot.save(folder / "evidence.json")
    outcome = run_report(folder / "evidence.json", folder / "out", pdf=True)
    return outcome, folder / "out"


def pages_text(pdf) -> list[str]:
    count = int(re.search(r"Pages:\s+(\d+)", subprocess.run(["pdfinfo", pdf], capture_output=True, text=True,
                                                             check=True).stdout).group(1))
    return [subprocess.run(["pdftotext", "-f", str(n), "-l", str(n), "-layout", pdf, "-"], capture_output=True,
                           text=True, check=True).stdout for n in range(1, count + 1)]


@pytest.mark.browser
def test_every_page_renders_says_which_it_is_and_prints_the_short_report(printed, tmp_path):
    outcome, out = printed
    pdf = out / "report.pdf"
    assert pdf.read_bytes().startswith(b"%PDF-")
    texts = pages_text(pdf)
    subprocess.run(["pdftoppm", "-r", "12", "-png", pdf, tmp_path / "page"], check=True)
    assert len(list(tmp_path.glob("page-*.png"))) == len(texts)
    assert all(f"page {n} of {len(texts)}" in text for n, text in enumerate(texts, 1))
    squeezed = " ".join(" ".join(texts).split())
    for title in ["What needs attention", "Enable runbook", "Rollback runbook", "Servers", "All checks",
                  "What could not be collected", *(area.title for area in outcome.report.areas)]:
        assert title in squeezed, title
    # a passing check prints as its one line; its details stay a click away, on paper too
    assert "HMA-TOPO-005 Classic hybrid is configured" in squeezed
    assert "the Hybrid Configuration Wizard has run" not in squeezed
    assert not any(line.strip() == "copy" or line.rstrip().endswith(" copy") for t in texts for line in t.splitlines())


@pytest.mark.browser
def test_runbook_code_wraps_inside_the_page_at_spaces(printed):
    outcome, out = printed
    pdf = out / "report.pdf"
    layout = subprocess.run(["pdftotext", "-bbox", pdf, "-"], capture_output=True, text=True, check=True).stdout
    width = float(re.search(r'<page width="([\d.]+)"', layout).group(1))
    right_edges = [float(x) for x in re.findall(r'xMax="([\d.]+)"', layout)]
    assert right_edges and max(right_edges) <= width, "text runs off the page"
    text = "\n".join(pages_text(pdf))
    assert "".join(f"Set-MapiVirtualDirectory -Identity '{LONG_IDENTITY}'".split()) in "".join(text.split())
    # Lines break at spaces: every word of every command that fits a line prints whole (only the identity longer
    # than a line may break inside)
    words = {word for phase in outcome.report.enable_phases for entry in phase["entries"]
             for word in entry.enable.split() if len(word) < 60}
    lines = set(text.split())
    broken = sorted(word for word in words if word not in lines and word not in text)
    assert words and broken == [], broken


@pytest.mark.browser
def test_a_long_table_repeats_its_header_on_every_page_and_no_row_is_cut(tmp_path):
    """Eighty servers on eighty different builds: the server overview spans pages, each with its header."""
    require("pdftotext", "pdfinfo")
    servers = tuple(f"EX{n:02}" for n in range(1, 81))
    snapshot = baseline.build(server_names=servers)
    for index in range(len(servers)):
        apply_ops(snapshot, [{"set": ["exchange.servers", index, "AdminDisplayVersion"],
                              "to": f"Version 15.2 (Build 2562.{100 + index})"}])
    snapshot.save(tmp_path / "evidence.json")
    run_report(tmp_path / "evidence.json", tmp_path / "out", pdf=True)
    texts = pages_text(tmp_path / "out" / "report.pdf")
    with_rows = [t for t in texts if re.search(r"15\.2\.2562\.1\d\d", t)]
    assert len(with_rows) >= 2, "the server overview should span pages"
    assert all("Exchange version" in t and "OAuth on the virtual directory" in t for t in with_rows), \
        "a page of the table lost its header"
    printed = {int(n) for t in with_rows for n in re.findall(r"15\.2\.2562\.(1\d\d)", t)}
    assert printed == set(range(100, 180)), "a row was cut or lost between pages"


@pytest.mark.browser
def test_a_hostile_organization_name_stays_text_in_html_css_and_pdf(printed):
    _, out = printed
    html = (out / "report.html").read_text(encoding="utf-8")
    assert html.count("<script>") == 1 and "</style><script>" not in html
    texts = pages_text(out / "report.pdf")
    assert "Hybrid Modern Authentication readiness" in texts[0], "the page body must still print"
    assert 'HMA readiness · Contoso"; } body { display: none } </style><script>alert(1)</script>' in texts[0]


@pytest.mark.browser
def test_the_pdf_is_in_the_manifest(printed):
    _, out = printed
    result = verify_folder(out)
    assert result.ok and "report.pdf" in result.matched


def test_a_missing_browser_is_one_line_and_nothing_is_written(tmp_path):
    baseline.build().save(tmp_path / "evidence.json")
    result = CliRunner().invoke(cli, ["report", "--evidence", str(tmp_path / "evidence.json"), "--out",
                                      str(tmp_path / "out"), "--pdf"],
                                env={"HMA_CHECK_CHROMIUM": str(tmp_path / "no-such-browser")})
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"hma-check: error: --pdf: HMA_CHECK_CHROMIUM={tmp_path / 'no-such-browser'} is not an executable"]
    assert not (tmp_path / "out").exists()


def test_a_browser_that_prints_nothing_is_an_output_error(tmp_path):
    fake = tmp_path / "chromium"
    fake.write_text("#!/bin/sh\necho 'GPU process crashed' >&2\nexit 3\n", encoding="utf-8")
    fake.chmod(0o755)
    baseline.build().save(tmp_path / "evidence.json")
    result = CliRunner().invoke(cli, ["report", "--evidence", str(tmp_path / "evidence.json"), "--out",
                                      str(tmp_path / "out"), "--pdf"], env={"HMA_CHECK_CHROMIUM": str(fake)})
    assert result.exit_code == 4
    assert "Chromium exited with 3 and wrote no PDF: GPU process crashed" in result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.browser
def test_report_with_pdf_says_where_the_pdf_went(tmp_path):
    require()
    baseline.build().save(tmp_path / "evidence.json")
    result = CliRunner().invoke(cli, ["report", "--evidence", str(tmp_path / "evidence.json"), "--out",
                                      str(tmp_path / "out"), "--pdf"])
    assert result.exit_code == 0, result.output
    assert f"pdf: {tmp_path / 'out' / 'report.pdf'}" in result.output.splitlines()
    assert (tmp_path / "out" / "report.pdf").read_bytes().startswith(b"%PDF-")
