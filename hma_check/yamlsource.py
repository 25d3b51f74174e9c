"""Read a YAML file safely and remember where every value came from, so validation errors can name file and line."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hma_check.errors import InputError

MAX_YAML_BYTES = 16 * 1024 * 1024
MAX_NODES = 2_000_000  # aliases can multiply a small file into a huge tree ("billion laughs"): stop well before that

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
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_YAML_BYTES:
            raise error_class(f"file is {size} bytes; the limit is {MAX_YAML_BYTES}", path=str(path))
        raw = path.read_bytes()
    except OSError as exc:
        raise error_class(f"cannot read: {exc.strerror or exc}", path=str(path)) from None
    return load_yaml_bytes(raw, str(path), error_class)


def load_yaml_bytes(raw: bytes, source: str, error_class: type[InputError] = InputError) -> YamlDoc:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error_class(f"not UTF-8 text (byte {exc.start})", path=source) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise error_class(f"not valid YAML: {exc.problem or exc.context}", path=source,
                          line=mark.line + 1 if mark else None) from None
    except yaml.YAMLError as exc:
        raise error_class(f"not valid YAML: {exc}", path=source) from None
    doc = YamlDoc(data=None, source=source, error_class=error_class)
    if node is None:
        doc.data = None
        return doc
    doc.data = _convert(node, (), doc, [0])
    return doc


def _convert(node: yaml.Node, where: Where, doc: YamlDoc, budget: list[int]) -> Any:
    budget[0] += 1
    if budget[0] > MAX_NODES:
        raise doc.error_class("too many values (aliases expand beyond the limit)", path=doc.source)
    doc.lines.setdefault(where, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise doc.error_class("YAML merge keys (<<) are not supported", path=doc.source,
                                      line=key_node.start_mark.line + 1)
            if not isinstance(key_node, yaml.ScalarNode):
                raise doc.error_class("mapping keys must be plain strings", path=doc.source,
                                      line=key_node.start_mark.line + 1)
            key = str(key_node.value)
            if key in out:
                raise doc.error_class(f"{dotted((*where, key))}: duplicate key", path=doc.source,
                                      line=key_node.start_mark.line + 1)
            doc.lines[(*where, key)] = key_node.start_mark.line + 1
            out[key] = _convert(value_node, (*where, key), doc, budget)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_convert(item, (*where, index), doc, budget) for index, item in enumerate(node.value)]
    try:
        return yaml.constructor.SafeConstructor().construct_object(node)
    except yaml.YAMLError as exc:
        raise doc.error_class(f"{dotted(where)}: {exc}", path=doc.source, line=node.start_mark.line + 1) from None
