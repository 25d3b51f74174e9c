"""One exception tree: every exception class hma-check defines is an HmaCheckError and is in errors.py's docstring."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re

import hma_check
from hma_check import errors


def _defined_exceptions() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for module_info in pkgutil.walk_packages(hma_check.__path__, "hma_check."):
        module = importlib.import_module(module_info.name)
        for name, value in vars(module).items():
            if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == module.__name__:
                found[name] = value
    return found


def _tree_names() -> list[str]:
    return re.findall(r"[─└├]── (\w+)", errors.__doc__ or "") + ["HmaCheckError"]


def test_every_exception_class_is_in_the_tree_and_the_docstring():
    defined = _defined_exceptions()
    public = {name: cls for name, cls in defined.items() if not name.startswith("_")}
    assert "CallFailed" in public and "InputError" in public   # the walk found classes outside errors.py too
    outside = sorted(name for name, cls in public.items() if not issubclass(cls, errors.HmaCheckError))
    assert not outside, f"not an HmaCheckError: {outside}"
    listed = _tree_names()
    missing = sorted(set(public) - set(listed))
    assert not missing, f"add to the tree in hma_check/errors.py: {missing}"
    stale = sorted(set(listed) - set(public))
    assert not stale, f"in the tree but not defined: {stale}"


def test_the_tree_shows_each_class_under_its_parent():
    defined = _defined_exceptions()
    entries = [(match.group(1), match.start(1)) for line in (errors.__doc__ or "").splitlines()
               if (match := re.search(r"[─└├]── (\w+)", line))]
    for index, (name, column) in enumerate(entries):
        parent = next((above for above, at in reversed(entries[:index]) if at == column - 5), "HmaCheckError")
        assert defined[parent] in defined[name].__bases__, f"{name} is drawn under {parent}"
