"""Every third-party package the code imports is declared in pyproject.toml, where the code that imports it ships:
the product in the dependencies, the lab in the [lab] extra, tests and benchmarks in [test] (plus the other two)."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from functools import lru_cache
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")

REPO = Path(__file__).resolve().parent.parent
OURS = {"hma_check", "hma_lab", "tests", "__future__"}


def _name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9._-]+", requirement).group(0)).lower()


def _declared() -> dict[str, set[str]]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"]
    core = {_name(r) for r in project["dependencies"]}
    kerberos = {_name(r) for r in extras["kerberos"]}    # imported only when auth is kerberos or negotiate
    lab = core | {_name(r) for r in extras["lab"]}
    tested = lab | kerberos | {_name(r) for r in extras["test"]}
    return {"hma_check": core | kerberos, "hma_lab": lab | kerberos, "tests": tested, "benchmarks": tested}


@lru_cache(maxsize=1)
def _distributions() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def _owner(module: str) -> str | None:
    """The distribution that installs ``module`` (for a namespace package such as azure, the one with its subpackage)."""
    top, _, rest = module.partition(".")
    owners = _distributions().get(top, [])
    if len(owners) > 1 and rest:
        prefix = f"{top}/{rest.split('.')[0]}/"
        owners = [name for name in owners
                  if any(str(file).startswith(prefix) for file in importlib.metadata.distribution(name).files or [])]
    return _name(owners[0]) if len(owners) == 1 else None


def _imports(folder: str) -> set[str]:
    found = set()
    paths = list((REPO / folder).rglob("*.py"))
    # A script beside others imports them by file name (benchmarks/check_budget.py imports report_pipeline).
    local = {path.stem for path in paths} | {path.parent.name for path in paths}
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module)
    return {name for name in found
            if name.split(".")[0] not in sys.stdlib_module_names and name.split(".")[0] not in OURS | local}


@pytest.mark.parametrize("folder", ["hma_check", "hma_lab", "tests", "benchmarks"])
def test_every_imported_package_is_declared(folder):
    declared = _declared()[folder]
    undeclared = {}
    for module in sorted(_imports(folder)):
        owner = _owner(module)
        assert owner is not None, f"{folder} imports {module}: no one installed distribution provides it"
        if owner not in declared:
            undeclared[module] = owner
    assert not undeclared, f"{folder} imports packages pyproject.toml does not declare for it: {undeclared}"
