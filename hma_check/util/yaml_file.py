"""Load YAML written by people (checks, exemptions, scan config, scenarios) with line numbers for every error.

Safe loading only; aliases are refused (an alias bomb is the YAML billion-laughs), duplicate keys are refused
(PyYAML would silently keep the last one), and files are size-bounded. Mappings and lists come back as YamlMap and
YamlList, which remember the line of the node and of each key or item.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from hma_check.errors import InputError

MAX_YAML_BYTES = 16 * 1024 * 1024


class YamlMap(dict):
    """A mapping that knows its line and the line of each key."""

    line: int = 0
    key_lines: dict[str, int]

    def line_of(self, key: str) -> int:
        return self.key_lines.get(key, self.line)


class YamlList(list):
    line: int = 0
    item_lines: list[int]

    def line_of(self, index: int) -> int:
        return self.item_lines[index] if 0 <= index < len(self.item_lines) else self.line


class _Loader(yaml.SafeLoader):
    def compose_node(self, parent: Node | None, index: Any) -> Node:  # type: ignore[override]
        if self.check_event(AliasEvent):
            event = self.peek_event()
            raise yaml.MarkedYAMLError(problem="YAML aliases (*name) are not allowed here",
                                       problem_mark=event.start_mark)
        return super().compose_node(parent, index)


def read_yaml_bytes(path: str | Path, *, error: type[InputError] = InputError) -> bytes:
    """The file's bytes, refused before reading when it is larger than any YAML file hma-check reads."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_YAML_BYTES:
            raise error(f"file is {size} bytes; the limit is {MAX_YAML_BYTES}", path=str(path))
        return path.read_bytes()
    except OSError as exc:
        raise error(f"cannot read: {exc.strerror or exc}", path=str(path)) from None


def load_yaml(path: str | Path, *, error: type[InputError] = InputError) -> Any:
    return loads_yaml_bytes(read_yaml_bytes(path, error=error), source=str(path), error=error)


def loads_yaml_bytes(raw: bytes, *, source: str, error: type[InputError] = InputError) -> Any:
    """Parse bytes already read (so what is hashed or copied is exactly what was parsed)."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(f"not UTF-8 text (byte {exc.start})", path=source) from None
    return loads_yaml(text, source=source, error=error)


def loads_yaml(text: str, *, source: str, error: type[InputError] = InputError) -> Any:
    if len(text) > MAX_YAML_BYTES:
        raise error("YAML text too large", path=source)
    try:
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise error(f"YAML syntax: {exc.problem or exc.context}", path=source, line=line) from None
    except yaml.YAMLError as exc:
        raise error(f"YAML syntax: {exc}", path=source) from None
    if node is None:
        return None
    constructor = yaml.SafeLoader("")  # reuse SafeLoader's scalar resolution (ints, bools, dates)
    try:
        return _to_python(node, constructor, source, error, depth=0)
    finally:
        constructor.dispose()


def _to_python(node: Node, constructor: yaml.SafeLoader, source: str, error: type[InputError], depth: int) -> Any:
    if depth > 64:
        raise error("YAML nested more than 64 levels", path=source, line=node.start_mark.line + 1)
    if isinstance(node, ScalarNode):
        try:
            return constructor.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError as exc:
            raise error(f"YAML value: {exc.problem}", path=source, line=node.start_mark.line + 1) from None
    if isinstance(node, SequenceNode):
        out_list = YamlList()
        out_list.line = node.start_mark.line + 1
        out_list.item_lines = []
        for child in node.value:
            out_list.append(_to_python(child, constructor, source, error, depth + 1))
            out_list.item_lines.append(child.start_mark.line + 1)
        return out_list
    if isinstance(node, MappingNode):
        out_map = YamlMap()
        out_map.line = node.start_mark.line + 1
        out_map.key_lines = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            # Keys are the literal text: YAML 1.1 would read 'off:' or 'yes:' as booleans.
            if not isinstance(key_node, ScalarNode):
                raise error("mapping keys must be plain values", path=source, line=line)
            key = key_node.value
            if key in out_map:
                raise error(f"duplicate key '{key}' (first at line {out_map.key_lines[key]})", path=source, line=line)
            out_map[key] = _to_python(value_node, constructor, source, error, depth + 1)
            out_map.key_lines[key] = line
        return out_map
    raise error(f"unsupported YAML node {type(node).__name__}", path=source, line=node.start_mark.line + 1)

