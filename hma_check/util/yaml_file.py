"""Load YAML written by people (checks, exemptions, scan config, scenarios) with line numbers for every error.

The one YAML loader of hma-check, bounded in time and memory whatever the file holds:

- libyaml's C parser turns the text into events (PyYAML's pure-Python parser when libyaml is missing); the nodes are
  built here, iteratively, so nesting costs no Python recursion: deeper than MAX_DEPTH is refused at the opening
  bracket, more than MAX_NODES values is refused as soon as the count passes it;
- aliases are refused (an alias bomb is the YAML billion-laughs), and so are duplicate keys (PyYAML would silently
  keep the last one), explicit tags hma-check never reads (``!!binary``, ``!!python/...``) and several documents;
- a scalar is resolved as YAML 1.1 does (PyYAML's resolver) but converted here: a number longer than any setting
  (a huge integer, a sexagesimal chain that would take minutes), NaN and infinity, and a date that does not exist or
  falls outside year 1..9999 in UTC are refused with the line they are on;
- files are read through hma_check.util.read_file, so the size limit holds for what is read, not for what stat() says.

Mappings and lists come back as YamlMap and YamlList, which remember the line of the node and of each key or item.
"""

from __future__ import annotations

import math
import re
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from yaml import events
from yaml.nodes import ScalarNode

from hma_check.errors import InputError
from hma_check.util.read_file import read_limited

MAX_YAML_BYTES = 16 * 1024 * 1024
# The shipped catalogue is about 2,500 values; a scenario or an exemptions file of thousands of entries stays far
# below. Building one value costs a few microseconds, so this many is well under a second.
MAX_NODES = 100_000
MAX_DEPTH = 64
# No setting, id or date is longer; a longer number is a hostile one (Python refuses int() past 4,300 digits, and a
# sexagesimal 1:2:3:... chain is a quadratic big-integer computation).
MAX_NUMBER_CHARS = 64



class _PyParser(yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser):
    """PyYAML's own parser, for an installation without libyaml (the same events, about 30 times slower)."""

    def __init__(self, stream: str) -> None:
        yaml.reader.Reader.__init__(self, stream)
        yaml.scanner.Scanner.__init__(self)
        yaml.parser.Parser.__init__(self)


_Parser: Any
try:
    from yaml.cyaml import CParser as _Parser  # type: ignore[attr-defined,no-redef]  # libyaml, in every PyYAML wheel
except ImportError:   # pragma: no cover - PyYAML built without libyaml
    _Parser = _PyParser
_RESOLVER = yaml.resolver.Resolver()
_CONSTRUCTOR = yaml.SafeLoader("")   # only its scalar converters, on values already bounded here
_TAG = "tag:yaml.org,2002:"
_TIMESTAMP = re.compile(r"\d{4}-\d{1,2}-\d{1,2}")


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


def read_yaml_bytes(path: str | Path, *, error: type[InputError] = InputError) -> bytes:
    """The file's bytes, never more than any YAML file hma-check reads (counted as read: /dev/zero stops there)."""
    return read_limited(path, MAX_YAML_BYTES, error=error, what="YAML file")


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
    if "\x00" in text:
        # libyaml reads a C string: a NUL would end the document there and hide the rest of the file.
        raise error(f"holds a NUL character (at offset {text.index(chr(0))}): not a YAML text file", path=source)
    parser = _Parser(text)
    try:
        return _Composer(parser, source, error).document()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise error(f"YAML syntax: {exc.problem or exc.context}", path=source, line=line) from None
    except yaml.YAMLError as exc:
        raise error(f"YAML syntax: {exc}", path=source) from None
    finally:
        parser.dispose()


class _Composer:
    """Events to YamlMap / YamlList / plain values, with an explicit stack instead of recursion."""

    def __init__(self, parser: Any, source: str, error: type[InputError]) -> None:
        self.parser = parser
        self.source = source
        self.error = error
        self.nodes = 0

    def fail(self, message: str, mark: Any) -> InputError:
        return self.error(message, path=self.source, line=mark.line + 1 if mark is not None else None)

    def document(self) -> Any:
        parser = self.parser
        parser.get_event()                                   # StreamStart
        if parser.check_event(events.StreamEndEvent):
            return None
        parser.get_event()                                   # DocumentStart
        value = self.value()
        parser.get_event()                                   # DocumentEnd
        if not parser.check_event(events.StreamEndEvent):
            raise self.fail("expected one YAML document, found another ('---')", parser.peek_event().start_mark)
        return value

    def value(self) -> Any:
        # The stack holds open containers: (container, pending key, key line) for a mapping, (container,) for a list.
        stack: list[list[Any]] = []
        result: Any = None
        while True:
            event = self.parser.get_event()
            if isinstance(event, (events.MappingEndEvent, events.SequenceEndEvent)):
                done = stack.pop()[0]
                if not stack:
                    return done
                self._add(stack[-1], done, event)
                continue
            self.nodes += 1
            if self.nodes > MAX_NODES:
                raise self.fail(f"more than {MAX_NODES} values: larger than any file hma-check reads", event.start_mark)
            if isinstance(event, events.AliasEvent):
                raise self.fail("YAML aliases (*name) are not allowed here", event.start_mark)
            line = event.start_mark.line + 1
            if isinstance(event, events.ScalarEvent):
                result = self.scalar(event)
                if not stack:
                    return result
                self._add(stack[-1], result, event)
                continue
            if len(stack) >= MAX_DEPTH:
                raise self.fail(f"YAML nested more than {MAX_DEPTH} levels", event.start_mark)
            self._check_collection_tag(event)
            if isinstance(event, events.MappingStartEvent):
                mapping = YamlMap()
                mapping.line, mapping.key_lines = line, {}
                stack.append([mapping, _NO_KEY, 0])
            elif isinstance(event, events.SequenceStartEvent):
                sequence = YamlList()
                sequence.line, sequence.item_lines = line, []
                stack.append([sequence])
            else:   # pragma: no cover - the parser emits nothing else inside a document
                raise self.fail(f"unexpected YAML event {type(event).__name__}", event.start_mark)

    def _add(self, frame: list[Any], value: Any, event: Any) -> None:
        container = frame[0]
        line = event.start_mark.line + 1
        if isinstance(container, YamlList):
            container.append(value)
            container.item_lines.append(_start_line(value, line))
            return
        if frame[1] is _NO_KEY:
            # Keys are the literal text: YAML 1.1 would read 'off:' or 'yes:' as booleans.
            if not isinstance(event, events.ScalarEvent):
                raise self.fail("mapping keys must be plain values", event.start_mark)
            key = event.value
            if key in container:
                raise self.fail(f"duplicate key '{key[:80]}' (first at line {container.key_lines[key]})",
                                event.start_mark)
            frame[1], frame[2] = key, line
            return
        key, key_line = frame[1], frame[2]
        container[key] = value
        container.key_lines[key] = key_line
        frame[1] = _NO_KEY

    def _check_collection_tag(self, event: Any) -> None:
        tag = event.tag
        if tag not in (None, "!", f"{_TAG}map", f"{_TAG}seq", f"{_TAG}omap", f"{_TAG}set"):
            raise self.fail(f"YAML tag {tag[:60]} is not read by hma-check", event.start_mark)

    def scalar(self, event: Any) -> Any:
        """One scalar as PyYAML's SafeLoader would read it, refusing what no hma-check file can mean."""
        text = event.value
        tag = event.tag
        if tag in (None, "!"):
            tag = _RESOLVER.resolve(ScalarNode, text, event.implicit) if tag is None else f"{_TAG}str"
        kind = tag[len(_TAG):] if tag.startswith(_TAG) else None
        if kind in ("str", "value", "merge"):
            return text
        if kind == "null":
            return None
        if kind == "bool":
            return _CONSTRUCTOR.construct_yaml_bool(ScalarNode(tag, text))
        if kind in ("int", "float"):
            return self._number(kind, text, event)
        if kind == "timestamp":
            return self._timestamp(text, event)
        raise self.fail(f"YAML tag {tag[:60]} is not read by hma-check (quote the value to make it text)",
                        event.start_mark)

    def _number(self, kind: str, text: str, event: Any) -> int | float:
        if len(text) > MAX_NUMBER_CHARS:
            raise self.fail(f"a number of {len(text)} characters: too long to be any setting (quote it if it is "
                            "text)", event.start_mark)
        try:
            if kind == "int":
                return _CONSTRUCTOR.construct_yaml_int(ScalarNode(f"{_TAG}int", text))
            number = _CONSTRUCTOR.construct_yaml_float(ScalarNode(f"{_TAG}float", text))
        except (ValueError, OverflowError):
            raise self.fail(f"not a valid number: {text[:40]}", event.start_mark) from None
        if not math.isfinite(number):
            raise self.fail(f"{text[:40]} is not a finite number", event.start_mark)
        return number

    def _timestamp(self, text: str, event: Any) -> date | datetime:
        if len(text) > MAX_NUMBER_CHARS or not _TIMESTAMP.match(text):
            raise self.fail(f"not a valid date: {text[:40]}", event.start_mark)
        try:
            moment = _CONSTRUCTOR.construct_yaml_timestamp(ScalarNode(f"{_TAG}timestamp", text))
            if isinstance(moment, datetime) and moment.tzinfo is not None:
                moment.astimezone(timezone.utc)   # an offset that pushes it outside year 1..9999 in UTC
        except (ValueError, OverflowError):
            raise self.fail(f"not a valid date: {text[:40]} (no such day, or outside year 1 to 9999)",
                            event.start_mark) from None
        return moment


_NO_KEY = object()


def _start_line(value: Any, line: int) -> int:
    return value.line if isinstance(value, (YamlMap, YamlList)) else line
