"""One CLIXML reader for Export-Clixml files and live pypsrp objects, normalised to the contract's plain values."""

from __future__ import annotations

import base64
import binascii
import math
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable
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
# An empty collection can arrive as an <Obj> with only its type names (no <LST>): these say it is still a list.
_COLLECTION_TYPE_MARKERS = ("MultiValuedProperty", "[]", "System.Collections.", "System.Array")
_ESCAPE = re.compile(r"_x([0-9A-Fa-f]{4})_")
_DATETIME = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?")
_MISSING = object()
_READING = -1  # the units of a <Ref>'s target still being read (see _Reader.value)


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

    @classmethod
    def _of(cls, type_names: tuple[str, ...], to_string: str | None, properties: dict[str, Any],
            computer_name: str | None, value: Any, folded: dict[str, str]) -> ClixmlObject:
        """The constructor's object, from the reader, which has worked out ``folded`` already (case-folded name ->
        name, never changed once made, so objects with the same names share it)."""
        obj = object.__new__(cls)
        # Every field, as the generated __init__ and __post_init__ set them (the class is frozen, not slotted).
        obj.__dict__.update(type_names=type_names, to_string=to_string, properties=properties,
                            computer_name=computer_name, value=value, _folded=folded)
        return obj

    def get(self, name: str, default: Any = None) -> Any:
        """A property by name, case-insensitively (PowerShell property names are)."""
        key = self._folded.get(name.casefold())
        return default if key is None else self.properties[key]

    def pick(self, names: Iterable[str]) -> dict[str, Any]:
        """The properties among ``names`` that the object has, under those names: ``{n: obj.get(n) for n in names
        if n in obj}`` in one call (a cmdlet's tens of thousands of objects go through this)."""
        folded = self._folded
        properties = self.properties
        picked = {}
        for name in names:
            key = folded.get(name.casefold())
            if key is not None:
                picked[name] = properties[key]
        return picked

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
    cut = _cut_byte_arrays(xml)
    if cut is not None:
        skeleton, texts = cut
        try:
            return _parse_streaming(skeleton, source=source, root="Obj", texts=texts)[0]
        except (_Fault, ClixmlError, ET.ParseError, RecursionError):
            return _parse_exact(xml, source=source, root="Obj")[0]   # its own error, on the object as it came
    return _parse(xml, source=source, root="Obj")[0]


# A whole <BA ...> start tag: an optional prefix, attributes with plain quoted values (no "<", "&" or ">" in them),
# nothing else. Searched for, never anchored by hand around a text match: a scan that looked back and forward from
# every "BA" was quadratic on a hostile text full of them.
_BA_TAG = re.compile(r"""<(?:[A-Za-z_][\w.-]*:)?BA(?:\s+[A-Za-z_][\w.:-]*\s*=\s*(?:"[^"<&>]*"|'[^'<&>]*'))*\s*>""")
_SMALLEST_CUT = 1024   # shorter byte arrays are left to the parser


class _Base64Text(str):
    """The text of a <BA> that ``_cut_byte_arrays`` found to be canonical base64: ``_binary`` does not check it
    again."""

    __slots__ = ()


def _cut_byte_arrays(text: str) -> tuple[str, list[tuple[int, _Base64Text]]] | None:
    """The object without the texts of its large byte arrays, and each text with its element's place in document
    order; None when there is none to cut.

    A live Exchange object is mostly its SerializationData (a <BA> of 25 to 120 KB of base64), which the XML parser
    scans twice (tokens, then line and column) for a text that ``_binary`` only checks and keeps. A text is cut only
    where nothing can differ: it follows a whole <BA ...> start tag and runs to the next "<", which starts an end
    tag; it is canonical base64 (which XML passes through unchanged, and which ``_binary`` accepts as it is); and
    what is left holds no comment, CDATA section, processing instruction or DTD, so every "<" in it is a tag. The
    streaming reader puts each text back into its element before anything is converted."""
    cuts: list[tuple[int, int, int]] = []   # (element's place in document order, text start, text end)
    position = counted = tags = 0
    while (tag := _BA_TAG.search(text, position)) is not None:
        start, close = tag.start(), tag.end() - 1
        end = text.find("<", close)
        if end < 0:
            break
        position = end   # a text holds no "<": nothing in it can be a tag
        if end - close - 1 < _SMALLEST_CUT or text[end + 1:end + 2] != "/" or not _canonical_base64(
                text[close + 1:end]):
            continue
        # start tags before this one: every "<" but end tags (a text cut holds none)
        tags += text.count("<", counted, start) - text.count("</", counted, start)
        cuts.append((tags, close + 1, end))
        tags += 1
        counted = end
    if not cuts:
        return None
    pieces, last = [], 0
    for _, begin, end in cuts:
        pieces.append(text[last:begin])
        last = end
    pieces.append(text[last:])
    skeleton = "".join(pieces)
    if "<!" in skeleton or "<?" in skeleton:
        return None
    return skeleton, [(index, _Base64Text(text[begin:end])) for index, begin, end in cuts]


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
#
# Two readers give the same objects. The streaming one runs first: the C parser of xml.etree builds each top-level
# object's elements without a Python call per element, and each object is converted and dropped as soon as it is
# complete. It answers only for a document it reads without any fault. On any fault (malformed XML, a DTD, too deep,
# a value or reference that is wrong), or where CPython's C parser is not available, the exact reader reads the
# document again, one expat event at a time as it arrives, and raises the error it meets first, with the line it is
# on. So which error a faulty file gets, and where, does not depend on how the streaming reader cut the text up.

# Characters given to the C parser at a time; each cut is where the streaming reader converts the objects completed
# so far. Small cuts convert elements while they are still in the CPU's cache: on the benchmark's capture 4K cuts
# were up to 1.8x faster than 64K ones on a busy machine, and 2K no faster than 4K.
_CHUNK = 1 << 12


class _Fault(Exception):
    """The streaming reader stops: the exact reader reads the document again and says what is wrong, and where."""


class _RootFound(Exception):
    """The prolog check has reached the root element: nothing before it was refused."""


def _parse(text: str, *, source: str, root: str) -> list[ClixmlObject]:
    try:
        return _parse_streaming(text, source=source, root=root)
    except (_Fault, ClixmlError, ET.ParseError, RecursionError):
        pass
    return _parse_exact(text, source=source, root=root)


def _prolog(text: str, root: str) -> None:
    """Refuse, before the C parser sees anything, what precedes the root element: a DTD (the only place entities can
    be declared, so no entity expansion, no external entity) or a root that is not ``root``."""
    parser = expat.ParserCreate()

    def refuse(*_: Any) -> None:
        raise _Fault

    def first_element(tag: str, _attrs: Any) -> None:
        raise _Fault if tag.rpartition(":")[2] != root else _RootFound

    parser.StartDoctypeDeclHandler = refuse
    parser.StartElementHandler = first_element
    try:
        for start in range(0, len(text), _CHUNK):
            parser.Parse(text[start:start + _CHUNK], False)
    except _RootFound:
        return
    except expat.ExpatError:
        raise _Fault from None
    raise _Fault  # no element at all


def _parse_streaming(text: str, *, source: str, root: str,
                     texts: list[tuple[int, _Base64Text]] | None = None) -> list[ClixmlObject]:
    """``texts``: for one object (root "Obj") whose byte arrays' texts were cut out (``_cut_byte_arrays``), each
    text and its element's place in document order; each element must be a <BA> without text or children."""
    parser = ET.XMLParser(target=ET.TreeBuilder())
    # XMLPullParser's hook into the C parser, used here only to learn which element is the root. Without it (not
    # CPython's C parser) the exact reader reads everything.
    setevents = getattr(parser, "_setevents", None)
    if setevents is None:
        raise _Fault
    _prolog(text, root)
    events: list[tuple[str, ET.Element]] = []
    setevents(events, ("start",))
    reader = _Reader(source, streaming=True, depth=2 if root == "Objs" else 1)
    out: list[ClixmlObject] = []
    top: ET.Element | None = None
    for start in range(0, len(text), _CHUNK):
        parser.feed(text[start:start + _CHUNK])
        if top is None:
            if not events:
                continue
            top = events[0][1]
            events.clear()
            setevents(events, ())  # no event per element from here on: the C parser builds the tree alone
        # The open elements are the chain of last children. The reader checks the depth of what it converts; this
        # bounds what a document nested without end can pile up before then.
        element, depth = top, 1
        while len(element):
            element, depth = element[-1], depth + 1
        if depth > MAX_DEPTH:
            raise _Fault
        if root == "Objs" and len(top) > 1:
            # Every child of <Objs> but the last is complete (the last may be too, it waits for the next cut):
            # convert them and let their elements go.
            complete = top[:-1]
            del top[:-1]
            out.extend([reader.top(element, 0) for element in complete])
    parser.close()
    if top is None:
        raise _Fault
    if texts:
        elements = list(top.iter())
        for index, value in texts:
            if index >= len(elements):
                raise _Fault
            cut = elements[index]
            if reader.name(cut.tag) != "BA" or cut.text is not None or len(cut):
                raise _Fault
            cut.text = value
    out.extend([reader.top(element, 0) for element in (top if root == "Objs" else [top])])
    return out


def _parse_exact(text: str, *, source: str, root: str) -> list[ClixmlObject]:
    reader = _Reader(source, streaming=False, depth=2 if root == "Objs" else 1)
    out: list[ClixmlObject] = []
    builder = ET.TreeBuilder()
    top: list[ET.Element] = []
    depth = 0
    parser = expat.ParserCreate()
    parser.buffer_text = True

    def refuse_dtd(*_: Any) -> None:
        # No DTD means no entity declarations: no entity expansion, no external entities.
        raise ClixmlError("has a DTD or entity declaration; CLIXML never does", path=source, line=parser.CurrentLineNumber)

    def start(tag: str, attrs: dict[str, str]) -> None:
        nonlocal depth
        if depth >= MAX_DEPTH:
            raise ClixmlError(f"nested more than {MAX_DEPTH} elements deep", path=source,
                              line=parser.CurrentLineNumber)
        if not depth:
            name = tag.rpartition(":")[2]
            if name != root:
                raise ClixmlError(f"root element is <{name[:40]}>, not <{root}>: not a CLIXML "
                                  f"{'file written by Export-Clixml' if root == 'Objs' else 'object'}",
                                  path=source, line=parser.CurrentLineNumber)
        element = builder.start(tag, attrs)
        if not depth:
            top.append(element)
        depth += 1

    def end(tag: str) -> None:
        nonlocal depth
        element = builder.end(tag)
        depth -= 1
        if depth == 1 and root == "Objs":
            # Convert each top-level object as soon as it closes and drop its elements: memory stays near the
            # size of the values, not of the XML tree.
            del top[0][-1]
            out.append(reader.top(element, parser.CurrentLineNumber))

    parser.StartDoctypeDeclHandler = refuse_dtd
    parser.EntityDeclHandler = refuse_dtd
    parser.ExternalEntityRefHandler = refuse_dtd  # type: ignore[assignment]
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = builder.data
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
        if not top:
            raise ClixmlError("no <Obj> element", path=source)
        out.append(reader.top(top[0], parser.CurrentLineNumber))
    return out


class _Reader:
    """Converts elements to values with one TN and one RefId table for the whole file (Export-Clixml shares them)."""

    def __init__(self, source: str, *, streaming: bool, depth: int) -> None:
        """``depth``: that of the top-level elements. ``streaming``: the elements come from the C parser, which
        checked no depth; the reader checks it as it goes, and gives up (_Fault) where it cannot (see _leaf)."""
        self.source = source
        self.streaming = streaming
        self.depth = depth
        # Deeper than this, an <Obj>'s members (at most three levels below it, in a <DCT>) could be too deep.
        self.obj_depth_limit = MAX_DEPTH - 3 if streaming else math.inf
        self.line = 0
        self.type_tables: dict[str, tuple[str, ...]] = {}
        self.refs: dict[str, tuple[Any, int]] = {}
        self.top_objects: dict[str, ClixmlObject] = {}
        self.units = 0
        # Element tag -> its local name ("{namespace}Obj" and "ps:Obj" -> "Obj"), for the tags of this document.
        self.names: dict[str, str] = {}
        self.string_tags: set[str] = set()  # the tags of <S> (whatever their namespace or prefix)
        # The member names of an object (adapted, extended) -> how to merge them (see _merge): a cmdlet's objects
        # all have the same names, so this is worked out once per cmdlet rather than once per object.
        self.merges: dict[tuple[tuple[str, ...], tuple[str, ...]], tuple[str | None, dict[bool, _MergePlan]]] = {}

    def fail(self, message: str) -> ClixmlError:
        return ClixmlError(message, path=self.source, line=self.line or None)

    def spend(self, units: int) -> None:
        self.units += units
        if self.units > MAX_EXPANDED_UNITS:
            raise self.fail(f"expands to more than {MAX_EXPANDED_UNITS} values (repeated <Ref>s?); refused")

    def _leaf(self, element: ET.Element) -> str:
        """The text of an element read as a leaf: the character data directly inside it (after a child counts,
        inside one does not). The streaming reader gives up on a leaf with children: they would go unchecked."""
        text = element.text
        if len(element):
            if self.streaming:
                raise _Fault
            return (text or "") + "".join([child.tail for child in element if child.tail])
        return text or ""

    def name(self, tag: str) -> str:
        local = self.names.get(tag)
        if local is None:
            local = self.names[tag] = tag.rpartition("}")[2].rpartition(":")[2]
            if local == "S":
                self.string_tags.add(tag)
        return local

    # ---------------------------------------------------------------------------------------- top level
    def top(self, element: ET.Element, line: int) -> ClixmlObject:
        self.line = line
        tag = self.names.get(element.tag) or self.name(element.tag)
        if tag == "Ref":
            ref = self._ref_id(element, tag)
            if ref in self.top_objects:
                self.spend(self.refs[ref][1])
                return self.top_objects[ref]
            return ClixmlObject((), None, {}, value=self.value(element, self.depth))
        if tag != "Obj":
            return ClixmlObject((), None, {}, value=self.value(element, self.depth))
        before = self.units
        parts = self._obj(element, self.depth)
        type_names, to_string, adapted, extended, items, entries, content = parts
        properties, computer_name, folded = self._merge(adapted, extended)
        value = items if items is not None else entries
        if value is None and content is not _MISSING:
            value = content
        obj = ClixmlObject._of(type_names, to_string, properties, computer_name, value, folded)
        ref_id = element.get("RefId")
        if ref_id is not None:
            self.top_objects[ref_id] = obj
            self.refs[ref_id] = (self._nested(parts, properties), self.units - before)
        return obj

    # ---------------------------------------------------------------------------------------- values
    def _text(self, element: ET.Element) -> str:
        """The text of an element that holds text (<S>, <ToString>), unescaped."""
        text = element.text if not len(element) else self._leaf(element)
        return "" if text is None else unescape(text)

    def _string(self, element: ET.Element) -> str:
        """An <S> value, counted against the expansion limit."""
        text = self._text(element)
        self.units += 1 + (len(text) >> 6)
        if self.units > MAX_EXPANDED_UNITS:
            self.spend(0)
        return text

    def value(self, element: ET.Element, depth: int) -> Any:
        """The value of an element at ``depth`` (the root's is 1)."""
        tag = self.names.get(element.tag) or self.name(element.tag)
        result: Any
        if tag == "S":  # most values: a string, converted here without the general path's calls
            return self._string(element)
        if tag == "Obj":
            before = self.units
            ref_id = element.get("RefId")
            if ref_id is not None:
                # A placeholder lets a cyclic <Ref> back to an object still being read resolve to its ToString
                # (looked up only if such a <Ref> comes).
                self.refs[ref_id] = (element, _READING)
            result = self._nested(self._obj(element, depth))
            self.spend(1)
            if ref_id is not None:
                self.refs[ref_id] = (result, self.units - before)
            return result
        if tag == "Ref":
            ref = self._ref_id(element, tag)
            if self.streaming and len(element):
                raise _Fault
            result, units = self.refs.get(ref, (_MISSING, 0))
            if result is _MISSING:
                raise self.fail(f"<Ref RefId={ref[:20]!r}> points to no earlier object")
            if units == _READING:
                result, units = self._peek_to_string(result), 1
            self.spend(units)
            return result
        convert = _PRIMITIVES.get(tag)
        if convert is None:
            raise self.fail(f"unexpected element <{tag[:40]}> where a value belongs")
        try:
            result = convert(self._leaf(element))
        except (ValueError, OverflowError, binascii.Error) as exc:
            raise self.fail(f"<{tag}> holds an invalid value: {exc}") from None
        self.spend(1 + (len(result) >> 6 if isinstance(result, str) else 0))
        return result

    def _ref_id(self, element: ET.Element, tag: str) -> str:
        ref_id = element.get("RefId")
        if ref_id is None:
            raise self.fail(f"<{tag}> without a RefId")
        return ref_id

    def _peek_to_string(self, element: ET.Element) -> str | None:
        for child in element:
            if self.name(child.tag) == "ToString":
                return unescape(self._leaf(child))
        return None

    def _obj(self, element: ET.Element, depth: int) -> tuple[Any, ...]:
        """(type names, ToString, adapted members, extended members, list items, dictionary entries, other content)."""
        if depth > self.obj_depth_limit:
            raise _Fault
        type_names: tuple[str, ...] = ()
        to_string = None
        items = None
        entries = None
        content: Any = _MISSING
        adapted: dict[str, Any] = {}
        extended: dict[str, Any] = {}
        names = self.names
        for child in element:
            tag = names.get(child.tag) or self.name(child.tag)
            if tag == "TNRef":
                ref_id = child.get("RefId")
                if ref_id is None:
                    raise self.fail("<TNRef> without a RefId")
                known = self.type_tables.get(ref_id)
                if known is None:
                    raise self.fail(f"<TNRef RefId={ref_id[:20]!r}> points to no earlier <TN>")
                if self.streaming and len(child):
                    raise _Fault
                type_names = known
            elif tag == "MS":
                self._members(child, extended, depth + 2)
            elif tag == "Props":
                self._members(child, adapted, depth + 2)
            elif tag == "ToString":
                to_string = self._text(child)
            elif tag == "TN":
                type_names = tuple([_strip_prefix(unescape(self._leaf(t))) for t in child if self.name(t.tag) == "T"])
                if self.streaming and any(map(len, child)):
                    raise _Fault
                ref_id = child.get("RefId")
                if ref_id is not None:
                    self.type_tables[ref_id] = type_names
            elif tag in _LIST_TAGS:
                items = [self.value(item, depth + 2) for item in child]
            elif tag == "DCT":
                entries = self._dictionary(child, depth + 1)
            elif tag in _PRIMITIVE_TAGS or tag in ("Obj", "Ref"):
                # The value an enum or a wrapped primitive carries beside its ToString.
                content = self.value(child, depth + 1)
            else:
                raise self.fail(f"unexpected element <{tag[:40]}> in <Obj>")
        return type_names, to_string, adapted, extended, items, entries, content

    def _merge(self, adapted: dict[str, Any], extended: dict[str, Any]) -> tuple[dict[str, Any], str | None,
                                                                                   dict[str, str]]:
        """The properties (extended members win, as in PowerShell's extended type system; the remoting members
        dropped), PSComputerName, and the properties' case-folded names (see _merge_plan)."""
        signature = (tuple(adapted), tuple(extended))
        entry = self.merges.get(signature)
        if entry is None:
            entry = (_first_folded(extended, "pscomputername"), {})
            if len(self.merges) < 10_000:  # bounded: a hostile file can give every object other names
                self.merges[signature] = entry
        computer_key, plans = entry
        # What a plan cannot know from the names: whether the extended PSComputerName is empty (then the adapted
        # one is taken instead).
        given = computer_key is not None and bool(extended[computer_key])
        plan = plans.get(given)
        if plan is None:
            plan = plans[given] = _merge_plan(*signature, given)
        names, computer, folded = plan
        if names is None:  # the adapted members, then the extended ones, as they are
            properties = adapted if not extended else extended if not adapted else {**adapted, **extended}
        else:
            properties = {name: (extended if from_extended else adapted)[name] for name, from_extended in names}
        if computer is None:
            return properties, None, folded
        value = (extended if computer[0] else adapted)[computer[1]]
        return properties, value if isinstance(value, str) else None, folded

    def _nested(self, parts: tuple[Any, ...], properties: dict[str, Any] | None = None) -> Any:
        """The value of an object below the top: what a remote session sends for it at depth 0."""
        type_names, to_string, adapted, extended, items, entries, content = parts
        if items is not None:
            return items
        if entries is not None:
            return entries
        if to_string is not None:
            return to_string
        if content is not _MISSING:
            return content
        if properties is None:  # merged only now: below the top most objects are their ToString
            properties = self._merge(adapted, extended)[0]
        if properties:
            return properties
        if any(marker in name for name in type_names for marker in _COLLECTION_TYPE_MARKERS):
            return []
        return None

    def _members(self, element: ET.Element, into: dict[str, Any], depth: int) -> None:
        strings = self.string_tags
        for child in element:
            name = child.get("N")
            if name is None:
                raise self.fail(f"<{self.name(child.tag)[:40]}> member without a name (N attribute)")
            if "_x" in name:
                name = unescape(name)
            if child.tag in strings and not len(child):
                # _string inlined: most members are strings, and a call each cost a tenth of an import's time
                text = child.text
                text = "" if text is None else unescape(text)
                self.units += 1 + (len(text) >> 6)
                if self.units > MAX_EXPANDED_UNITS:
                    self.spend(0)
                into[name] = text
            else:
                into[name] = self.value(child, depth)

    def _dictionary(self, element: ET.Element, depth: int) -> dict[str, Any]:
        entries: dict[str, Any] = {}
        for entry in element:
            tag = self.name(entry.tag)
            if tag != "En":
                raise self.fail(f"unexpected element <{tag[:40]}> in <DCT>")
            key: Any = _MISSING
            value: Any = None
            for part in entry:
                role = part.get("N")
                if role == "Key":
                    key = self.value(part, depth + 2)
                elif role == "Value":
                    value = self.value(part, depth + 2)
                elif self.streaming and len(part):
                    raise _Fault
            if key is _MISSING:
                raise self.fail("<En> without a Key")
            entries[key if isinstance(key, str) else _json_key(key)] = value
        return entries


_MergePlan = tuple[tuple[tuple[str, bool], ...] | None, tuple[bool, str] | None, dict[str, str]]


def _merge_plan(adapted_keys: tuple[str, ...], extended_keys: tuple[str, ...], computer_given: bool) -> _MergePlan:
    """How members with these names merge, worked out once per distinct names by merging member by member on the names
    alone: the properties in order as (name, from the extended members?), None when that is the adapted members then
    the extended ones as they are; which member is PSComputerName, as (extended?, name); and the case-folded names
    (folded name -> name, the last of equal ones, as ClixmlObject makes it; never changed, so objects share it).

    PSComputerName is the first extended member of that name, case-insensitively, unless it is empty
    (``computer_given`` false); then the first adapted one. Both are removed where taken. Each extended member then
    replaces the first adapted member of its name (the extended one goes last), and the remoting members are dropped.
    """
    adapted = dict.fromkeys(adapted_keys, False)
    extended = dict.fromkeys(extended_keys, True)
    computer: tuple[bool, str] | None = None
    key = _first_folded(extended, "pscomputername")
    if key is not None:
        del extended[key]
        if computer_given:
            computer = (True, key)
    if computer is None:
        key = _first_folded(adapted, "pscomputername")
        if key is not None:
            del adapted[key]
            computer = (False, key)
    for name in extended:
        if adapted:
            key = _first_folded(adapted, name.casefold())
            if key is not None:
                del adapted[key]
        adapted[name] = True
    names = tuple((name, from_extended) for name, from_extended in adapted.items()
                  if name.casefold() not in REMOTING_PROPERTIES)
    folded = {name.casefold(): name for name, _ in names}
    as_they_are = tuple((name, False) for name in adapted_keys) + tuple((name, True) for name in extended_keys)
    return (None if names == as_they_are and computer is None else names), computer, folded


# ---------------------------------------------------------------------------------------------------- primitives

def _boolean(text: str) -> bool:
    flag = text.strip().lower()
    if flag not in ("true", "false"):
        raise ValueError(f"not a boolean: {text[:20]!r}")
    return flag == "true"


def _integer(text: str) -> int:
    return int(text.strip())


def _floating(text: str) -> float | str:
    number = float(text.strip())
    # evidence.json holds no NaN or infinity: keep the text .NET wrote.
    return number if math.isfinite(number) else text.strip()


def _character(text: str) -> str:
    # A .NET Char: one UTF-16 code unit. A lone surrogate is no character (UTF-8 cannot hold it), so it becomes
    # U+FFFD, as a lone escaped one in a string does (unescape).
    unit = int(text.strip())
    if not 0 <= unit <= 0xFFFF:
        raise ValueError(f"{unit} is not a UTF-16 code unit")
    return "\ufffd" if 0xD800 <= unit <= 0xDFFF else chr(unit)


def _binary(text: str) -> str:
    if type(text) is _Base64Text:
        return str(text)   # checked when it was cut out (_cut_byte_arrays); a plain str from here on
    if _canonical_base64(text):
        return text   # what the lines below accept and return, without decoding it
    compact = "".join(text.split())
    base64.b64decode(compact, validate=True)
    return compact


# Each primitive tag's conversion of its text; ValueError (binascii.Error is one) says the text is not such a value.
_PRIMITIVES: dict[str, Callable[[str], Any]] = {
    **dict.fromkeys(_TEXT_VALUE_TAGS, unescape),
    **dict.fromkeys(_NUMBER_TAGS, _integer),
    **dict.fromkeys(_FLOAT_TAGS, _floating),
    "Nil": lambda _text: None,
    "B": _boolean,
    "C": _character,
    "DT": clixml_datetime,
    "BA": _binary,
    # A SecureString is DPAPI-encrypted secret material: it never goes into evidence.
    "SS": lambda _text: "(SecureString omitted)",
}


def _strip_prefix(type_name: str) -> str:
    # psrpcore re-prefixes unknown types, so a capture can read "Deserialized.Deserialized.…".
    while type_name.startswith("Deserialized."):
        type_name = type_name[len("Deserialized."):]
    return type_name


def _first_folded(members: dict[str, Any], folded: str) -> str | None:
    """The first name among ``members`` that is ``folded`` when case-folded (None when there is none)."""
    for key in members:
        if key.casefold() == folded:
            return key
    return None


def _json_key(key: Any) -> str:
    if key is None:
        return ""
    if isinstance(key, bool):
        return "true" if key else "false"
    return str(key)
