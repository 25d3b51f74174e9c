"""Locate the shipped checks.yaml and templates/, in a source checkout or inside an installed wheel."""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent.parent   # hma_check/ (this module is hma_check/util/)


def _first_existing(*candidates: Path) -> Path:
    for candidate in candidates:
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"not found in the package or the source tree: {candidates[0].name}")


def checks_file() -> Path:
    """The shipped catalogue: hma_check/checks.yaml in a wheel, ./checks.yaml in a checkout."""
    return _first_existing(_PACKAGE_DIR / "checks.yaml", _PACKAGE_DIR.parent / "checks.yaml")


def templates_dir() -> Path:
    return _first_existing(_PACKAGE_DIR / "templates", _PACKAGE_DIR.parent / "templates")


def validation_checks_file() -> Path:
    """The post-change validation checks (--after-enable), shipped inside the package."""
    return _PACKAGE_DIR / "runs" / "validation.yaml"


def shipped_checks_files() -> list[Path]:
    """Every checks file shipped in the package (a manifest names them by hash instead of copying them)."""
    return [checks_file(), validation_checks_file()]
