"""One CLIXML reader for Export-Clixml files and live pypsrp objects, normalised to the contract's plain values."""

from __future__ import annotations

import base64
import binascii
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any
from xml.parsers import expat

from hma_check.errors import ClixmlError
from hma_check.contract.snapshot import iso_utc

# A 50,000-mailbox Get-Mailbox capture trimmed with Select-Object is about 100 MB in UTF-16; anything larger is refused
# before it is parsed.
MAX_CLIXML_BYTES = 256 * 1024 * 1024
# Export-Clixml -Depth 10 nests about 40 elements deep; 128 leaves room and keeps the converter's recursion bounded.
MAX_DEPTH = 128
# <Ref> lets a file reuse an object any number of times (a "billion laughs" without entities): the values a file
# expands to are counted, about one unit per value or per 64 characters, and refused beyond this.
MAX_EXPANDED_UNITS = 10_000_000

# PowerShell remoting adds these to every object on the client side; they describe the session, not the object.
# SerializationData is Exchange's BinaryFormatter blob: never decoded (untrusted), never kept.
REMOTING_PROPERTIES = frozenset(name.casefold() for name in
                                ("PSComputerName", "RunspaceId", "PSShowComputerName", "SerializationData"))

_NUMBER_TAGS = {"I16", "I32", "I64", "U16", "U32", "U64", "By", "SB"}
_FLOAT_TAGS = {"Db", "Sg", "D"}
_TEXT_VALUE_TAGS = {"S", "G", "URI", "Version", "XD", "SBK", "TS"}
_PRIMITIVE_TAGS = _NUMBER_TAGS | _FLOAT_TAGS | _TEXT_VALUE_TAGS | {"B", "C", "DT", "BA", "SS", "Nil"}
_LIST_TAGS = {"LST", "IE", "QUE", "STK"}
_KEEP_TEXT = _PRIMITIVE_TAGS | {"T", "ToString"}
# An empty collection can arrive as an <Obj> with only its type names (no <LST>): these say it is still a list.
_COLLECTION_TYPE_MARKERS = ("MultiValuedProperty", "[]", "System.Collections.", "System.Array")
_ESCAPE = re.compile(r"_x([0-9A-Fa-f]{4})_")
_DATETIME = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?")
_MISSING = object()


@dataclass(frozen=True, eq=False)
class ClixmlObject:
    """One top-level object: type names without 'Deserialized.', ToString, and its normalised properties.

    ``properties`` merges adapted (<Props>) and extended (<MS>) members, extended winning as in PowerShell's type
    system, without the remoting members. ``computer_name`` is PSComputerName, kept apart because offline import
    uses it to tell which server answered. ``value`` holds the content of a top-level item that is not a property
    bag (a list, a hashtable, a bare string).
    """

    type_names: tuple[str, ...]
    to_string: str | None
    properties: dict[str, Any]
    computer_name: str | None = None
    value: Any = None
    _folded: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_folded", {name.casefold(): name for name in self.properties})

    def get(self, name: str, default: Any = None) -> Any:
        """A property by name, case-insensitively (PowerShell property names are)."""
        key = self._folded.get(name.casefold())
        return default if key is None else self.properties[key]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.casefold() in self._folded

    def __getitem__(self, name: str) -> Any:
        value = self.get(name, _MISSING)
        if value is _MISSING:
            raise KeyError(name)
        return value


def parse_clixml(data: bytes, *, source: str) -> list[ClixmlObject]:
    """Every top-level object of an Export-Clixml file (UTF-8 with or without BOM, or UTF-16), RefIds shared."""
    if len(data) > MAX_CLIXML_BYTES:
        raise ClixmlError(f"file is {len(data)} bytes; the limit for one CLIXML file is {MAX_CLIXML_BYTES}",
                          path=source)
    return _parse(decode_text(data, source=source), source=source, root="Objs")


def parse_object_xml(xml: str, *, source: str = "<live object>") -> ClixmlObject:
    """One ``<Obj>`` as pypsrp 0.9.1 keeps it in ``obj._xml`` on live objects (its RefIds are self-contained)."""
    if len(xml) > MAX_CLIXML_BYTES:
        raise ClixmlError(f"object XML is {len(xml)} characters; the limit is {MAX_CLIXML_BYTES}", path=source)
    return _parse(xml, source=source, root="Obj")[0]


def decode_text(data: bytes, *, source: str) -> str:
    """Decode by BOM: Windows PowerShell 5.1's Export-Clixml writes UTF-16LE with a BOM, PowerShell 7 UTF-8."""
    if data.startswith(b"\xef\xbb\xbf"):
        encoding, body = "utf-8", data[3:]
    elif data.startswith(b"\xff\xfe"):
        encoding, body = "utf-16-le", data[2:]
    elif data.startswith(b"\xfe\xff"):
        encoding, body = "utf-16-be", data[2:]
    elif data.startswith(b"<\x00"):
        encoding, body = "utf-16-le", data
    elif data.startswith(b"\x00<"):
        encoding, body = "utf-16-be", data
    else:
        encoding, body = "utf-8", data
    try:
        return body.decode(encoding)
    except UnicodeDecodeError as exc:
        # The offset in the file, BOM included, so a hex editor finds it.
        where = exc.start + len(data) - len(body)
        reason = "the file ends inside a character (truncated?)" if exc.reason == "truncated data" else exc.reason
        raise ClixmlError(f"malformed {encoding.upper()} text at byte {where}: {reason}", path=source) from None


def unescape(text: str) -> str:
    """Decode PowerShell's ``_xHHHH_`` escapes (control characters, CR/LF, characters outside XML)."""
    if "_x" not in text:
        return text
    decoded = _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text)
    # Characters outside the BMP arrive as two escaped UTF-16 surrogates: join them; a lone one becomes U+FFFD.
    return decoded.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def clixml_datetime(text: str) -> str:
    """<DT> (local time with an offset, or UTC, up to 7 fractional digits) as ISO 8601 UTC with a Z."""
    match = _DATETIME.fullmatch(text.strip())
    if not match:
        raise ValueError(f"not a CLIXML date: {text[:40]!r}")
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction, offset = match.group(7), match.group(8)
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    tz = timezone.utc
    if offset and offset != "Z":
        sign = -1 if offset[0] == "-" else 1
        tz = timezone(sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6])))
    # A date without an offset (DateTimeKind.Unspecified) is taken as UTC: nothing in the file says otherwise.
    moment = datetime(year, month, day, hour, minute, second, micro, tzinfo=tz)
    try:
        return iso_utc(moment)
    except OverflowError:  # DateTime.MinValue/MaxValue with an offset falls outside year 1..9999 in UTC
        return "0001-01-01T00:00:00Z" if year == 1 else "9999-12-31T23:59:59.999999Z"


_BASE64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _canonical_base64(text: str) -> bool:
    """Whether ``text`` is base64 without whitespace, padded to a multiple of four: such text is exactly what
    ``base64.b64decode(text, validate=True)`` accepts unchanged. The check deletes the alphabet with one
    ``bytes.translate`` instead of decoding: objects carry byte arrays of 100 KB and more (Exchange's
    SerializationData), and validating them by decoding was most of the normaliser's time per object."""
    if not text.isascii() or len(text) % 4:
        return False
    data = text.encode("ascii")
    rest = data.translate(None, _BASE64_ALPHABET)
    return not rest or (rest in (b"=", b"==") and data.endswith(rest))


# ------------------------------------------------------------------------------------------------------ parsing

class _Element:
    __slots__ = ("tag", "name", "ref_id", "children", "chunks")

    def __init__(self, tag: str, name: str | None, ref_id: str | None) -> None:
        self.tag = tag
        self.name = name
        self.ref_id = ref_id
        self.children: list[_Element] = []
        self.chunks: list[str] = []

    @property
    def text(self) -> str:
        return "".join(self.chunks)


def _parse(text: str, *, source: str, root: str) -> list[ClixmlObject]:
    reader = _Reader(source)
    out: list[ClixmlObject] = []
    stack: list[_Element] = []
    done: list[_Element] = []
    parser = expat.ParserCreate()
    parser.buffer_text = True

    def refuse_dtd(*_: Any) -> None:
        # No DTD means no entity declarations: no entity expansion, no external entities.
        raise ClixmlError("has a DTD or entity declaration; CLIXML never does", path=source, line=parser.CurrentLineNumber)

    def start(tag: str, attrs: dict[str, str]) -> None:
        tag = tag.rpartition(":")[2]
        if len(stack) >= MAX_DEPTH:
            raise ClixmlError(f"nested more than {MAX_DEPTH} elements deep", path=source,
                              line=parser.CurrentLineNumber)
        if not stack and tag != root:
            raise ClixmlError(f"root element is <{tag[:40]}>, not <{root}>: not a CLIXML "
                              f"{'file written by Export-Clixml' if root == 'Objs' else 'object'}",
                              path=source, line=parser.CurrentLineNumber)
        element = _Element(tag, attrs.get("N"), attrs.get("RefId"))
        if stack:
            stack[-1].children.append(element)
        stack.append(element)

    def end(_tag: str) -> None:
        element = stack.pop()
        if not stack:
            done.append(element)
        elif len(stack) == 1 and root == "Objs":
            # Convert each top-level object as soon as it closes and drop its elements: memory stays near the
            # size of the values, not of the XML tree.
            stack[0].children.pop()
            out.append(reader.top(element, parser.CurrentLineNumber))

    def characters(data: str) -> None:
        if stack and stack[-1].tag in _KEEP_TEXT:
            stack[-1].chunks.append(data)

    parser.StartDoctypeDeclHandler = refuse_dtd
    parser.EntityDeclHandler = refuse_dtd
    parser.ExternalEntityRefHandler = refuse_dtd  # type: ignore[assignment]
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = characters
    try:
        parser.Parse(text, True)
    except expat.ExpatError as exc:
        reason = expat.errors.messages.get(exc.code, "malformed XML") if exc.code else "malformed XML"
        hint = " (the file looks truncated)" if "no element found" in reason or "unclosed token" in reason else ""
        raise ClixmlError(f"not well-formed XML: {reason} at column {exc.offset}{hint}", path=source,
                          line=exc.lineno) from None
    except RecursionError:
        raise ClixmlError("nested too deeply to be CLIXML", path=source) from None
    if root == "Obj":
        if not done:
            raise ClixmlError("no <Obj> element", path=source)
        out.append(reader.top(done[0], parser.CurrentLineNumber))
    return out


@dataclass
class _Parts:
    type_names: tuple[str, ...] = ()
    to_string: str | None = None
    properties: dict[str, Any] = field(default_factory=dict)
    computer_name: str | None = None
    items: list[Any] | None = None
    entries: dict[str, Any] | None = None
    content: Any = _MISSING


class _Reader:
    """Converts elements to values with one TN and one RefId table for the whole file (Export-Clixml shares them)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.line = 0
        self.type_tables: dict[str, tuple[str, ...]] = {}
        self.refs: dict[str, tuple[Any, int]] = {}
        self.top_objects: dict[str, ClixmlObject] = {}
        self.units = 0

    def fail(self, message: str) -> ClixmlError:
        return ClixmlError(message, path=self.source, line=self.line or None)

    def spend(self, units: int) -> None:
        self.units += units
        if self.units > MAX_EXPANDED_UNITS:
            raise self.fail(f"expands to more than {MAX_EXPANDED_UNITS} values (repeated <Ref>s?); refused")

    # ---------------------------------------------------------------------------------------- top level
    def top(self, element: _Element, line: int) -> ClixmlObject:
        self.line = line
        if element.tag == "Ref":
            ref = self._ref_id(element)
            if ref in self.top_objects:
                self.spend(self.refs[ref][1])
                return self.top_objects[ref]
            return ClixmlObject((), None, {}, value=self.value(element))
        if element.tag != "Obj":
            return ClixmlObject((), None, {}, value=self.value(element))
        before = self.units
        parts = self._obj(element)
        content = parts.items if parts.items is not None else parts.entries
        if content is None and parts.content is not _MISSING:
            content = parts.content
        obj = ClixmlObject(parts.type_names, parts.to_string, parts.properties, parts.computer_name, content)
        if element.ref_id is not None:
            self.top_objects[element.ref_id] = obj
            self.refs[element.ref_id] = (self._nested(parts), self.units - before)
        return obj

    # ---------------------------------------------------------------------------------------- values
    def value(self, element: _Element) -> Any:
        tag = element.tag
        if tag == "Obj":
            before = self.units
            if element.ref_id is not None:
                # A placeholder lets a cyclic <Ref> back to an object still being read resolve to its ToString.
                self.refs[element.ref_id] = (self._peek_to_string(element), 1)
            result = self._nested(self._obj(element))
            self.spend(1)
            if element.ref_id is not None:
                self.refs[element.ref_id] = (result, self.units - before)
            return result
        if tag == "Ref":
            result, units = self.refs.get(self._ref_id(element), (_MISSING, 0))
            if result is _MISSING:
                raise self.fail(f"<Ref RefId={self._ref_id(element)[:20]!r}> points to no earlier object")
            self.spend(units)
            return result
        if tag in _PRIMITIVE_TAGS:
            result = self._primitive(tag, element.text)
            self.spend(1 + (len(result) >> 6 if isinstance(result, str) else 0))
            return result
        raise self.fail(f"unexpected element <{tag[:40]}> where a value belongs")

    def _ref_id(self, element: _Element) -> str:
        if element.ref_id is None:
            raise self.fail(f"<{element.tag}> without a RefId")
        return element.ref_id

    def _primitive(self, tag: str, text: str) -> Any:
        try:
            if tag in _TEXT_VALUE_TAGS:
                return unescape(text)
            if tag == "Nil":
                return None
            if tag == "B":
                flag = text.strip().lower()
                if flag not in ("true", "false"):
                    raise ValueError(f"not a boolean: {text[:20]!r}")
                return flag == "true"
            if tag in _NUMBER_TAGS:
                return int(text.strip())
            if tag in _FLOAT_TAGS:
                number = float(text.strip())
                # evidence.json holds no NaN or infinity: keep the text .NET wrote.
                return number if math.isfinite(number) else text.strip()
            if tag == "C":
                # A .NET Char: one UTF-16 code unit. A lone surrogate is no character (UTF-8 cannot hold it), so it
                # becomes U+FFFD, as a lone escaped one in a string does (unescape).
                unit = int(text.strip())
                if not 0 <= unit <= 0xFFFF:
                    raise ValueError(f"{unit} is not a UTF-16 code unit")
                return "\ufffd" if 0xD800 <= unit <= 0xDFFF else chr(unit)
            if tag == "DT":
                return clixml_datetime(text)
            if tag == "BA":
                if _canonical_base64(text):
                    return text   # what the lines below accept and return, without decoding it
                compact = "".join(text.split())
                base64.b64decode(compact, validate=True)
                return compact
            if tag == "SS":
                # A SecureString is DPAPI-encrypted secret material: it never goes into evidence.
                return "(SecureString omitted)"
        except (ValueError, OverflowError, binascii.Error) as exc:
            raise self.fail(f"<{tag}> holds an invalid value: {exc}") from None
        raise self.fail(f"unknown primitive <{tag}>")  # pragma: no cover - _PRIMITIVE_TAGS lists every branch

    @staticmethod
    def _peek_to_string(element: _Element) -> str | None:
        for child in element.children:
            if child.tag == "ToString":
                return unescape(child.text)
        return None

    def _obj(self, element: _Element) -> _Parts:
        parts = _Parts()
        adapted: dict[str, Any] = {}
        extended: dict[str, Any] = {}
        for child in element.children:
            tag = child.tag
            if tag == "TN":
                names = tuple(_strip_prefix(unescape(t.text)) for t in child.children if t.tag == "T")
                if child.ref_id is not None:
                    self.type_tables[child.ref_id] = names
                parts.type_names = names
            elif tag == "TNRef":
                known = self.type_tables.get(self._ref_id(child))
                if known is None:
                    raise self.fail(f"<TNRef RefId={str(child.ref_id)[:20]!r}> points to no earlier <TN>")
                parts.type_names = known
            elif tag == "ToString":
                parts.to_string = unescape(child.text)
            elif tag == "Props":
                self._members(child, adapted)
            elif tag == "MS":
                self._members(child, extended)
            elif tag in _LIST_TAGS:
                parts.items = [self.value(item) for item in child.children]
            elif tag == "DCT":
                parts.entries = self._dictionary(child)
            elif tag in _PRIMITIVE_TAGS or tag in ("Obj", "Ref"):
                # The value an enum or a wrapped primitive carries beside its ToString.
                parts.content = self.value(child)
            else:
                raise self.fail(f"unexpected element <{tag[:40]}> in <Obj>")
        computer = _pop_folded(extended, "PSComputerName") or _pop_folded(adapted, "PSComputerName")
        parts.computer_name = computer if isinstance(computer, str) else None
        for name, value in extended.items():  # extended members win, as in PowerShell's extended type system
            _pop_folded(adapted, name)
            adapted[name] = value
        parts.properties = {k: v for k, v in adapted.items() if k.casefold() not in REMOTING_PROPERTIES}
        return parts

    def _members(self, element: _Element, into: dict[str, Any]) -> None:
        for child in element.children:
            if child.name is None:
                raise self.fail(f"<{child.tag[:40]}> member without a name (N attribute)")
            into[unescape(child.name)] = self.value(child)

    def _dictionary(self, element: _Element) -> dict[str, Any]:
        entries: dict[str, Any] = {}
        for entry in element.children:
            if entry.tag != "En":
                raise self.fail(f"unexpected element <{entry.tag[:40]}> in <DCT>")
            key: Any = _MISSING
            value: Any = None
            for part in entry.children:
                if part.name == "Key":
                    key = self.value(part)
                elif part.name == "Value":
                    value = self.value(part)
            if key is _MISSING:
                raise self.fail("<En> without a Key")
            entries[key if isinstance(key, str) else _json_key(key)] = value
        return entries

    @staticmethod
    def _nested(parts: _Parts) -> Any:
        """The value of an object below the top: what a remote session sends for it at depth 0."""
        if parts.items is not None:
            return parts.items
        if parts.entries is not None:
            return parts.entries
        if parts.to_string is not None:
            return parts.to_string
        if parts.content is not _MISSING:
            return parts.content
        if parts.properties:
            return parts.properties
        if any(marker in name for name in parts.type_names for marker in _COLLECTION_TYPE_MARKERS):
            return []
        return None


def _strip_prefix(type_name: str) -> str:
    # psrpcore re-prefixes unknown types, so a capture can read "Deserialized.Deserialized.…".
    while type_name.startswith("Deserialized."):
        type_name = type_name[len("Deserialized."):]
    return type_name


def _pop_folded(members: dict[str, Any], name: str) -> Any:
    folded = name.casefold()
    for key in [k for k in members if k.casefold() == folded]:
        return members.pop(key)
    return None


def _json_key(key: Any) -> str:
    if key is None:
        return ""
    if isinstance(key, bool):
        return "true" if key else "false"
    return str(key)

