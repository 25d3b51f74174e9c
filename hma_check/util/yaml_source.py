"""Path-addressed YAML documents: every value's file and line by its path, so validation errors can name both."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hma_check.errors import InputError
from hma_check.util.yaml_file import YamlList, YamlMap, load_yaml, loads_yaml_bytes

Where = tuple[Any, ...]


@dataclass
class YamlDoc:
    """Plain data (dict/list/str/int/float/bool/None/date) plus the line of every mapping key and list item."""

    data: Any
    source: str
    error_class: type[InputError] = InputError
    lines: dict[Where, int] = field(default_factory=dict)
    files: dict[Where, str] = field(default_factory=dict)   # where a merged document took a value from another file

    def line(self, where: Where) -> int | None:
        while True:
            if where in self.lines:
                return self.lines[where]
            if not where:
                return None
            where = where[:-1]

    def file(self, where: Where) -> str:
        while True:
            if where in self.files:
                return self.files[where]
            if not where:
                return self.source
            where = where[:-1]

    def error(self, where: Where, message: str) -> InputError:
        label = dotted(where)
        return self.error_class(f"{label}: {message}" if label else message, path=self.file(where),
                                line=self.line(where))


def merge_docs(base: YamlDoc, child: YamlDoc) -> YamlDoc:
    """``child`` laid over ``base``: mappings merge key by key, anything else (lists too) replaces.

    Positions follow the value: an error in an inherited value names the base file and its line.
    """
    merged = YamlDoc(data=None, source=child.source, error_class=child.error_class)

    def take(doc: YamlDoc, prefix: Where) -> None:
        for where, line in doc.lines.items():
            if where[:len(prefix)] == prefix:
                merged.lines[where] = line
                merged.files[where] = doc.file(where)

    def merge(a: Any, b: Any, where: Where) -> Any:
        if isinstance(a, dict) and isinstance(b, dict):
            out = dict(a)
            for key, value in b.items():
                if key in a:
                    out[key] = merge(a[key], value, (*where, key))
                else:
                    out[key] = value
                    take(child, (*where, key))
            if where in child.lines:
                merged.lines[where] = child.lines[where]
                merged.files[where] = child.file(where)
            return out
        for key in [k for k in merged.lines if k[:len(where)] == where and k != where]:
            del merged.lines[key]
            merged.files.pop(key, None)
        take(child, where)
        return b

    take(base, ())
    merged.data = merge(base.data, child.data, ())
    return merged


def dotted(where: Where) -> str:
    out = ""
    for part in where:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def load_yaml_file(path: str | Path, error_class: type[InputError] = InputError) -> YamlDoc:
    """Read with the project's one safe YAML loader (hma_check.util.yaml_file) and index every value's line."""
    data = load_yaml(path, error=error_class)
    return _indexed(data, str(path), error_class)


def load_yaml_bytes(raw: bytes, source: str, error_class: type[InputError] = InputError) -> YamlDoc:
    return _indexed(loads_yaml_bytes(raw, source=source, error=error_class), source, error_class)


def _indexed(data: Any, source: str, error_class: type[InputError]) -> YamlDoc:
    doc = YamlDoc(data=data, source=source, error_class=error_class)
    stack: list[tuple[Any, Where]] = [(data, ())]
    while stack:
        node, where = stack.pop()
        if isinstance(node, YamlMap):
            doc.lines.setdefault(where, node.line)
            for key, value in node.items():
                doc.lines[(*where, key)] = node.line_of(key)
                stack.append((value, (*where, key)))
        elif isinstance(node, YamlList):
            doc.lines.setdefault(where, node.line)
            for index, value in enumerate(node):
                doc.lines[(*where, index)] = node.line_of(index)
                stack.append((value, (*where, index)))
    return doc
