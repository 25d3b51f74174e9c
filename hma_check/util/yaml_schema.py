"""The one reader of YAML written by people: a mapping with known keys, a boolean, text, a list of something, one of a
set, a bounded number. Every check fails with one line naming the file, the line and the key path.

Checks files, exemptions, every section of the scan configuration and the lab's scenario parts read their documents
through it, so "must be a mapping" or "must be true or false" is said (and tested) once. A ``Fail`` makes the error:
``YamlDoc.error`` for documents read with hma_check.util.yaml_source, ``located(...)`` for YamlMap/YamlList trees.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Collection, Iterable

from hma_check.errors import InputError, did_you_mean

Where = tuple[Any, ...]    # a key path in a document: ("tenants", 0, "id")
Fail = Callable[[Where, str], InputError]
# YAML 1.1 reads these unquoted words as booleans; a text field that got one was almost certainly meant as text.
_BOOLEAN_HINT = " (quote it: YAML reads on, off, yes and no as booleans)"


@dataclass(frozen=True)
class Schema:
    """Reads values at key paths (``where``) and fails through ``fail``."""

    fail: Fail

    def mapping(self, value: Any, where: Where, *, keys: Iterable[str] | None = None, required: Iterable[str] = (),
                hint: str = "", extensions: str | None = None) -> dict[str, Any]:
        """A mapping whose keys are all in ``keys`` (any, when None) and include ``required``. Keys starting with
        ``extensions`` (such as 'x-') are room for notes and anchors and are allowed anywhere."""
        if not isinstance(value, dict):
            raise self.fail(where, "must be a mapping" + (f" {hint}" if hint else ""))
        if keys is not None:
            allowed = list(keys)
            for key in value:
                if key in allowed or (extensions and isinstance(key, str) and key.startswith(extensions)):
                    continue
                raise self.fail((*where, key), f"unknown key{did_you_mean(key, allowed)}; expected one of: "
                                               f"{', '.join(allowed)}")
        for key in required:
            if key not in value:
                raise self.fail(where, f"missing required key '{key}'")
        return value

    def boolean(self, value: Any, where: Where) -> bool:
        if not isinstance(value, bool):
            raise self.fail(where, "must be true or false")
        return value

    def text(self, value: Any, where: Where, *, empty: bool = False, one_line: bool = False) -> str:
        """A string; non-empty (not only blanks) unless ``empty``; with ``one_line``, no control characters (a name,
        a path, a host: a line break there is a mistake or an attack on the output). Returned as written."""
        if not isinstance(value, str) or (not empty and not value.strip()):
            hint = _BOOLEAN_HINT if isinstance(value, bool) else ""
            raise self.fail(where, ("must be text" if empty else "must be non-empty text") + hint)
        if one_line and any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
            raise self.fail(where, "must be text on one line (no control characters)")
        return value

    def list_of(self, value: Any, where: Where, item: Callable[[Any, Where], Any] | None = None, *,
                what: str = "items", non_empty: bool = False) -> list[Any]:
        """A list (each item read by ``item(value, where)``, if given). ``what`` names the items in the message."""
        if not isinstance(value, list) or (non_empty and not value):
            raise self.fail(where, f"must be a {'non-empty ' if non_empty else ''}list of {what}")
        return [item(entry, (*where, index)) for index, entry in enumerate(value)] if item else list(value)

    def texts(self, value: Any, where: Where, *, non_empty: bool = False) -> list[str]:
        """A list of strings (the commonest list)."""
        if not isinstance(value, list) or not all(isinstance(entry, str) for entry in value) or (
                non_empty and not value):
            raise self.fail(where, f"must be a {'non-empty ' if non_empty else ''}list of strings")
        return list(value)

    def one_of(self, value: Any, where: Where, choices: Collection[Any]) -> Any:
        # bool is an int in Python: True must not pass for 1, nor 1 for True.
        if not any(value == choice and type(value) is type(choice) for choice in choices):
            raise self.fail(where, f"must be one of: {', '.join(map(str, choices))}")
        return value

    def integer(self, value: Any, where: Where, low: int | None = None, high: int | None = None) -> int:
        """An int (never a bool), within [low, high] when both are given."""
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(where, "must be an integer" if low is None or high is None else
                            f"must be an integer from {low} to {high}")
        if low is not None and high is not None and not low <= value <= high:
            raise self.fail(where, f"must be an integer from {low} to {high}")
        return value

    def number(self, value: Any, where: Where, low: float, high: float, *, unit: str = "") -> float:
        """An int or float within [low, high] (NaN never is)."""
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise self.fail(where, f"must be a number from {low:g} to {high:g}{unit}")
        return float(value)


def located(root: Any, source: str, error: type[InputError], prefix: str = "") -> Fail:
    """A Fail for a tree of YamlMap/YamlList (hma_check.util.yaml_file, whose nodes know their lines): the line comes
    from the nodes along ``where``, the message is ``prefix: key.path: message``. (This module reads values only, and
    imports no YAML library: collectors that use it stay light.)"""
    def fail(where: Where, message: str) -> InputError:
        line, node = getattr(root, "line", None), root
        for part in where:
            found = isinstance(node, dict) and part in node or (
                isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node))
            if not found or not hasattr(node, "line_of"):
                break
            line, node = node.line_of(part), node[part]
        label = dotted(where)
        text = f"{label}: {message}" if label else message
        return error(f"{prefix}: {text}" if prefix else text, path=source, line=line)
    return fail


def dotted(where: Where) -> str:
    """A key path as people write it: tenants[0].faults[1].route."""
    out = ""
    for part in where:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
