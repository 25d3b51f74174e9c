"""Recorded Export-Clixml captures, replayed as the raw CLIXML they are: one <Obj> per pipeline output message.

The lab does not interpret a capture (that is the product's job, and a bug there must not be mirrored here): it cuts
the file into its top-level objects and sends each one's bytes unchanged. Export-Clixml writes one document, in which
a type name list (<TN>) or an object (<Obj>) is written once and referred to later (<TNRef>, <Ref>); a PSRP message
is a document of its own, so the first reference in a message to something defined in an earlier object is replaced
by that definition's bytes ([MS-PSRP] 2.2.5.2.3 and 2.2.5.2.4: RefIds are scoped to one serialised object). The
lab reads only what it needs to answer -Identity and -Server: a few direct string properties of each object.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field
from xml.parsers import expat

MAX_CAPTURE_BYTES = 64 * 1024 * 1024
# The properties -Identity matches, as Exchange's identity parameters resolve them, and the one -Server filters on.
KEY_PROPERTIES = ("Identity", "Name", "Fqdn", "DomainName", "ApplicationIdentifier", "UserPrincipalName",
                  "SamAccountName", "Sid", "Guid", "Server")
_TAG = re.compile(rb"<[^\s/>]+(?:\s+[^\s=/>]+\s*=\s*(?:\"[^\"]*\"|'[^']*'))*\s*/?>")
_ESCAPE = re.compile(r"_x([0-9A-Fa-f]{4})_")   # CLIXML's escaping of characters XML cannot carry


class CaptureError(ValueError):
    """The file is not an Export-Clixml document the lab can replay."""


@dataclass
class Captured:
    """One top-level object of a capture: its bytes, ready to send, and the key properties the lab filters on."""

    wire: bytes
    properties: dict[str, str] = field(default_factory=dict)


@dataclass
class _Span:
    start: int
    end: int = -1
    to_string: str | None = None


def read_capture(data: bytes, source: str) -> list[Captured]:
    """The capture's top-level objects, each a self-contained <Obj> (UTF-8), in file order."""
    if len(data) > MAX_CAPTURE_BYTES:
        raise CaptureError(f"{source}: larger than {MAX_CAPTURE_BYTES} bytes")
    raw = _decode(data, source).encode("utf-8")
    index = _Index(raw, source)
    return [Captured(index.self_contained(span), index.properties.get(span.start, {})) for span in index.top_level]


def _decode(data: bytes, source: str) -> str:
    # Export-Clixml writes UTF-16 LE with a BOM in Windows PowerShell 5.1 and UTF-8 in PowerShell 7.
    for bom, codec in ((b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be")):
        if data.startswith(bom):
            data, encoding = data[len(bom):], codec
            break
    else:
        encoding = "utf-8"
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise CaptureError(f"{source}: not {encoding} text ({exc.reason} at byte {exc.start})") from None
    # The declaration names the encoding the bytes had; the text is re-encoded as UTF-8 for the parser and the wire.
    return re.sub(r"^\s*<\?xml[^>]*\?>", "", text)


class _Index:
    """Where every <Obj>, <TN>, <TNRef> and <Ref> is in the document, from one pass of expat."""

    def __init__(self, raw: bytes, source: str) -> None:
        self.raw = raw
        self.objects: dict[str, _Span] = {}          # Obj RefId -> span
        self.type_names: dict[str, _Span] = {}       # TN RefId -> span
        # Every definition and reference in document order: (start, Obj|TN|TNRef|Ref, RefId, N, end of a reference).
        self.events: list[tuple[int, str, str, str | None, int]] = []
        self.top_level: list[_Span] = []
        self.properties: dict[int, dict[str, str]] = {}   # top-level Obj start -> key properties
        self._stack: list[tuple[str, dict[str, str], _Span]] = []
        self._text: list[str] = []
        parser = expat.ParserCreate()
        parser.StartElementHandler = self._start
        parser.EndElementHandler = self._end
        parser.CharacterDataHandler = self._text.append
        parser.StartDoctypeDeclHandler = self._refuse_doctype
        self._parser = parser
        try:
            parser.Parse(raw, True)
        except expat.ExpatError as exc:
            raise CaptureError(f"{source}:{exc.lineno}: not well-formed XML ({expat.ErrorString(exc.code)})") from None
        self.event_starts = [event[0] for event in self.events]
        if not self.top_level:
            raise CaptureError(f"{source}: no <Objs> document with objects (is it an Export-Clixml file?)")

    def _refuse_doctype(self, *_: object) -> None:
        raise CaptureError("a document type declaration has no place in CLIXML")

    def _start(self, name: str, attrs: dict[str, str]) -> None:
        start = self._parser.CurrentByteIndex
        span = _Span(start)
        depth = len(self._stack)
        if depth == 0 and name != "Objs":
            raise CaptureError(f"the document element is <{name}>, not <Objs>")
        ref = attrs.get("RefId", "")
        if name == "Obj":
            self.objects.setdefault(ref, span)
            if depth == 1:
                self.top_level.append(span)
        elif name == "TN":
            self.type_names.setdefault(ref, span)
        if name in ("Obj", "TN", "TNRef", "Ref"):
            match = _TAG.match(self.raw, start)
            tag_end = match.end() if match else self.raw.index(b">", start) + 1
            self.events.append((start, name, ref, attrs.get("N"), tag_end))
        self._stack.append((name, attrs, span))
        self._text.clear()

    def _end(self, name: str) -> None:
        _, attrs, span = self._stack.pop()
        here = self._parser.CurrentByteIndex
        if self.raw.startswith(b"</", here):
            span.end = self.raw.index(b">", here) + 1
        else:   # an empty element: expat reports its end where it starts
            match = _TAG.match(self.raw, span.start)
            span.end = match.end() if match else self.raw.index(b">", span.start) + 1
        text = _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), "".join(self._text))
        self._text.clear()
        if name == "ToString" and self._stack and self._stack[-1][0] == "Obj":
            self._stack[-1][2].to_string = text
        # A key property: a direct member (<Props> or <MS>) of a top-level object, as a string or by its ToString.
        key = attrs.get("N")
        if key in KEY_PROPERTIES and len(self._stack) == 3 and self._stack[-1][0] in ("Props", "MS"):
            owner = self._stack[1][2]
            value = span.to_string if name == "Obj" else text if name in ("S", "G", "URI") else None
            if value is not None:
                self.properties.setdefault(owner.start, {})[key] = value

    def self_contained(self, span: _Span) -> bytes:
        return b"".join(self._copy(span, set(), set(), None))

    def _copy(self, span: _Span, types: set[str], objects: set[str], rename: str | None) -> list[bytes]:
        """The bytes of one object with each first reference to a definition this message does not have yet
        replaced by that definition (``types``, ``objects``: the RefIds the message defines so far)."""
        parts: list[bytes] = []
        at = span.start
        first = bisect.bisect_left(self.event_starts, span.start)
        last = bisect.bisect_left(self.event_starts, span.end)
        for start, kind, ref, name, tag_end in self.events[first:last]:
            if start < at:
                continue   # inside a definition already copied in place of a reference
            if kind in ("Obj", "TN"):
                (objects if kind == "Obj" else types).add(ref)
                continue
            table, done = (self.type_names, types) if kind == "TNRef" else (self.objects, objects)
            target = table.get(ref)
            if target is None or ref in done:
                continue   # already defined in this message, or unknown (the product's parser will say so)
            parts.append(self.raw[at:start])
            if kind == "TNRef":
                types.add(ref)
                parts.append(self.raw[target.start:target.end])
            else:
                parts += self._copy(target, types, objects, name)
            at = tag_end
        parts.append(self.raw[at:span.end])
        if rename is not None:   # an inlined object takes the name of the property that referred to it
            parts[0] = re.sub(rb'^<Obj(\s+N="[^"]*")?', b'<Obj N="' + _attribute(rename) + b'"', parts[0], count=1)
        return parts


def _attribute(value: str) -> bytes:
    return value.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").encode("utf-8")
