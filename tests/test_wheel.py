"""The built wheel ships checks.yaml, templates and the sample, and renders a report outside the source tree."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.xdist_group("wheel")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                    "--wheel-dir", str(dist), str(REPO)], check=True, timeout=300)
    [built] = dist.glob("hma_check-*.whl")
    return built


def test_the_wheel_contains_the_catalogue_templates_and_sample(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("hma_check/checks.yaml", "hma_check/templates/report.html.j2", "hma_check/templates/report.md.j2",
                   "hma_check/templates/enable.ps1.j2", "hma_check/templates/rollback.ps1.j2",
                   "hma_check/samples/contoso-evidence.json", "hma_check/runs/validation.yaml",
                   "hma_check/templates/_base.css", "hma_check/templates/_changes.html.j2",
                   "hma_check/templates/diff.html.j2", "hma_check/templates/validation.html.j2",
                   "hma_check/templates/validation.md.j2"):
        assert needed in names, needed
    assert not any(name.startswith("tests/") for name in names)


def test_an_installed_wheel_renders_a_report(wheel, tmp_path):
    scratch = tmp_path / "scratch"
    subprocess.run([sys.executable, "-m", "venv", str(scratch)], check=True, timeout=120)
    python = scratch / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel)],
                   check=True, timeout=300)
    # Dependencies come from the test environment's site-packages; a directory named in a .pth file is added to
    # sys.path without processing its own .pth files, so the editable source checkout stays invisible.
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    (Path(purelib) / "test-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    where = subprocess.run([str(python), "-c", "import hma_check, os; print(os.path.dirname(hma_check.__file__))"],
                           capture_output=True, text=True, check=True, cwd=tmp_path).stdout.strip()
    assert where.startswith(str(scratch)), where
    sample = Path(where) / "samples" / "contoso-evidence.json"
    result = subprocess.run([str(scratch / "bin" / "hma-check"), "report", "--evidence", str(sample),
                             "--out", str(tmp_path / "out")], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 1, result.stderr
    assert result.stdout.startswith("NOT_READY")
    html = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert "NOT READY" in html and "HMA-VDIR-001" in html
