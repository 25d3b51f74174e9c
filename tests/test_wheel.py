"""The built wheel ships checks.yaml, templates, the sample and the lab package, and, installed without the [lab]
extra's libraries, renders a report outside the source tree (and says how to install the lab when asked for it)."""

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
                   "hma_check/templates/validation.md.j2", "hma_check/collect/offline/Collect-HmaReadiness.ps1",
                   "hma_lab/__init__.py", "hma_lab/scenarios/ready.yaml"):
        assert needed in names, needed
    assert not any(name.startswith("tests/") for name in names)


def test_the_labs_libraries_are_an_extra(wheel):
    with zipfile.ZipFile(wheel) as archive:
        [metadata] = [name for name in archive.namelist() if name.endswith(".dist-info/METADATA")]
        requires = [line for line in archive.read(metadata).decode().splitlines() if line.startswith("Requires-Dist:")]
    for library in ("psrpcore", "trustme", "pyspnego", "pyjwt"):
        lines = [line.replace('"', "'") for line in requires if line.lower().startswith(f"requires-dist: {library}")]
        # pyspnego is also in the kerberos extra; none of them is a dependency of the tool itself
        assert any("extra == 'lab'" in line for line in lines) and all("extra ==" in line for line in lines), lines


def _without(purelib: Path, folder: Path, missing: tuple[str, ...]) -> Path:
    """A copy (by symlinks) of the test environment's site-packages without ``missing`` and without this checkout's
    editable install: what a machine that installed hma-check without the [lab] extra has."""
    folder.mkdir()
    for entry in purelib.iterdir():
        name = entry.name.lower()
        if name.startswith(missing) or name.startswith(("hma_check", "hma_lab", "_hma_check", "__editable__")):
            continue
        (folder / entry.name).symlink_to(entry)
    return folder


def test_an_installed_wheel_without_the_lab_extra_renders_a_report(wheel, tmp_path):
    scratch = tmp_path / "scratch"
    subprocess.run([sys.executable, "-m", "venv", str(scratch)], check=True, timeout=120)
    python = scratch / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel)],
                   check=True, timeout=300)
    # Dependencies come from the test environment's site-packages, minus the lab's own libraries; a directory named
    # in a .pth file is added to sys.path without processing its own .pth files, so the editable checkout stays out.
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    deps = _without(Path(sysconfig.get_paths()["purelib"]), tmp_path / "deps", ("psrpcore", "trustme"))
    (Path(purelib) / "test-dependencies.pth").write_text(f"{deps}\n", encoding="utf-8")
    probe = ("import importlib.util, os, sys, hma_check.cli\n"
             "assert not any(m.startswith('hma_lab') for m in sys.modules)\n"
             "print(os.path.dirname(hma_check.__file__), [importlib.util.find_spec(m) is None "
             "for m in ('psrpcore', 'trustme')])")
    where, absent = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, check=True,
                                   cwd=tmp_path).stdout.strip().split(" ", 1)
    assert where.startswith(str(scratch)) and absent == "[True, True]", (where, absent)
    sample = Path(where) / "samples" / "contoso-evidence.json"
    result = subprocess.run([str(scratch / "bin" / "hma-check"), "report", "--evidence", str(sample),
                             "--out", str(tmp_path / "out")], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 1, result.stderr
    assert result.stdout.startswith("NOT_READY")
    html = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert "NOT READY" in html and "HMA-VDIR-001" in html
    demo = subprocess.run([str(scratch / "bin" / "hma-check"), "demo", "--out", str(tmp_path / "demo")],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert demo.returncode == 2 and demo.stderr.strip() == (
        "hma-check: error: the lab is not installed; install it with: pip install 'hma-check[lab]'")
    assert not (tmp_path / "demo").exists()
