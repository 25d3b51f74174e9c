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
def test_every_section_starts_a_page_and_every_page_renders(printed, tmp_path):
    outcome, out = printed
    pdf = out / "report.pdf"
    assert pdf.read_bytes().startswith(b"%PDF-")
    texts = pages_text(pdf)
    subprocess.run(["pdftoppm", "-r", "12", "-png", pdf, tmp_path / "page"], check=True)
    assert len(list(tmp_path.glob("page-*.png"))) == len(texts)
    first_lines = [next((line.strip() for line in text.splitlines() if line.strip()), "") for text in texts]
    sections = [area.title for area in outcome.report.areas] + ["Summary", "Enable runbook", "Rollback runbook",
                                                                 "What could not be collected"]
    for title in sections:
        assert title in first_lines, f"section {title!r} does not start a page"
    assert len(texts) >= len(sections) + 1
    assert all(f"page {n} of {len(texts)}" in text for n, text in enumerate(texts, 1))


@pytest.mark.browser
def test_runbook_code_wraps_inside_the_page(printed):
    _, out = printed
    pdf = out / "report.pdf"
    layout = subprocess.run(["pdftotext", "-bbox", pdf, "-"], capture_output=True, text=True, check=True).stdout
    width = float(re.search(r'<page width="([\d.]+)"', layout).group(1))
    right_edges = [float(x) for x in re.findall(r'xMax="([\d.]+)"', layout)]
    assert right_edges and max(right_edges) <= width, "text runs off the page"
    enable_page = next(t for t in pages_text(pdf) if "Enable runbook" in t)
    squeezed = "".join(enable_page.split())
    assert "".join(f"Set-MapiVirtualDirectory -Identity '{LONG_IDENTITY}'".split()) in squeezed


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
