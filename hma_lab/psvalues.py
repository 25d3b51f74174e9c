"""Serialise Exchange objects the way the remote endpoint does (depth 1: complex values as strings, lists as LST).

Remote sessions serialise Exchange objects at depth 1: every property is written at depth 0, so complex values
(ADObjectId, enums, ServerVersion, ExchangeObjectVersion) arrive as their ToString() in <S>, while containers keep
their type names and carry their items as strings (PowerShell serialization.cs, WriteOneObject). The objects are flat, so they are written straight to CLIXML
here: psrpcore's general serialiser cost most of the lab's CPU time at 200 servers, for the same bytes.
"""

from __future__ import annotations

import base64
import functools
import re
import uuid
from datetime import datetime, timezone
from typing import Any, Iterable
from xml.sax.saxutils import escape, quoteattr

from psrpcore.types._serializer import _serialize_string

AD_TAIL = [
    "Microsoft.Exchange.Data.Directory.ADObject",
    "Microsoft.Exchange.Data.Directory.ADRawEntry",
    "Microsoft.Exchange.Data.ConfigurableObject",
    "System.Object",
]
AD_PRESENTATION = ["Microsoft.Exchange.Data.Directory.Management.ADPresentationObject", *AD_TAIL]
AD_CONFIGURATION = ["Microsoft.Exchange.Data.Directory.SystemConfiguration.ADConfigurationObject", *AD_TAIL]


class Uri(str):
    """A value that goes on the wire as <URI>."""


class Version(str):
    """A System.Version: <Version>15.2.1544.11</Version> on the wire."""


class MultiValued(list):
    """A MultiValuedProperty<T>: an <Obj> with Exchange's collection type names and an <LST> of strings."""

    def __init__(self, items: Iterable[Any] = (), item_type: str = "System.String, mscorlib", ad: bool = False):
        super().__init__(items)
        self.item_type = item_type
        self.ad = ad

    def type_names(self) -> list[str]:
        inner = f"[[{self.item_type}]]"
        names = [f"Microsoft.Exchange.Data.MultiValuedProperty`1{inner}", "Microsoft.Exchange.Data.MultiValuedPropertyBase",
                 "System.Object"]
        if self.ad:
            names.insert(0, f"Microsoft.Exchange.Data.Directory.ADMultiValuedProperty`1{inner}")
        return names


class ArrayList(list):
    """A System.Collections.ArrayList (Group-Object's Values): an <Obj> with its type names and an <LST>."""

    def type_names(self) -> list[str]:
        return ["System.Collections.ArrayList", "System.Object"]


class Serialized(bytes):
    """An object already written as its <Obj> CLIXML; the PSRP host sends these bytes as they are."""


def ex_object(type_names: list[str], to_string: str | None, properties: dict[str, Any],
              extended: dict[str, Any] | None = None) -> Serialized:
    """An object: type names, ToString, adapted properties (<Props>) and note properties (<MS>), as one <Obj>."""
    writer = _Writer()
    writer.obj(None, type_names, to_string, properties, extended)
    return Serialized("".join(writer.parts).encode("utf-8"))


def noted_string(text: str, notes: dict[str, Any]) -> Serialized:
    """A string with note properties (Get-Content's PSPath, PSChildName...): MS-PSRP 2.2.5.2.9's extended primitive,
    an <Obj> holding the <S> and an <MS>, without type names."""
    writer = _Writer()
    writer.parts.append('<Obj RefId="0">')
    writer.next_ref = 1
    writer.value(None, text)
    writer.parts.append("<MS>")
    for name, value in notes.items():
        writer.value(name, value)
    writer.parts.append("</MS></Obj>")
    return Serialized("".join(writer.parts).encode("utf-8"))


# Only these need CLIXML's _xHHHH_ escaping (control characters, astral characters, and "_x" itself).
_NEEDS_ESCAPE = re.compile("[\u0000-\u001F\u007F-\u009F\uD800-\uDFFF\U00010000-\U0010FFFF]|_[xX]")


def _text(value: str) -> str:
    return escape(_serialize_string(value) if _NEEDS_ESCAPE.search(value) else value)


@functools.lru_cache(maxsize=4096)
def _name_attribute(name: str) -> str:
    """` N="..."` for a property name: a type's few hundred names recur in every object the lab writes."""
    return f" N={quoteattr(_serialize_string(name) if _NEEDS_ESCAPE.search(name) else name)}"


class _Writer:
    def __init__(self) -> None:
        self.parts: list[str] = []
        self.next_ref = 0
        self.type_refs: dict[tuple[str, ...], int] = {}

    @staticmethod
    def _name(name: str | None) -> str:
        return "" if name is None else _name_attribute(name)

    def _type_names(self, names: list[str]) -> None:
        key = tuple(names)
        if key in self.type_refs:
            self.parts.append(f'<TNRef RefId="{self.type_refs[key]}" />')
            return
        ref = self.type_refs[key] = len(self.type_refs)
        self.parts.append(f'<TN RefId="{ref}">' + "".join(f"<T>{_text(n)}</T>" for n in names) + "</TN>")

    def obj(self, name: str | None, type_names: list[str], to_string: str | None, props: dict[str, Any],
            extended: dict[str, Any] | None = None) -> None:
        self.parts.append(f'<Obj{self._name(name)} RefId="{self.next_ref}">')
        self.next_ref += 1
        self._type_names(type_names)
        if to_string is not None:
            self.parts.append(f"<ToString>{_text(to_string)}</ToString>")
        for tag, members in (("Props", props), ("MS", extended)):
            if members:
                self.parts.append(f"<{tag}>")
                for prop, value in members.items():
                    self.value(prop, value)
                self.parts.append(f"</{tag}>")
        self.parts.append("</Obj>")

    def value(self, name: str | None, value: Any) -> None:
        n = self._name(name)
        if value is None:
            self.parts.append(f"<Nil{n} />")
        elif isinstance(value, bool):
            self.parts.append(f"<B{n}>{'true' if value else 'false'}</B>")
        elif isinstance(value, int):
            tag = "I32" if -2**31 <= value < 2**31 else "I64"
            self.parts.append(f"<{tag}{n}>{value}</{tag}>")
        elif isinstance(value, Uri):
            self.parts.append(f"<URI{n}>{_text(str(value))}</URI>")
        elif isinstance(value, Version):
            self.parts.append(f"<Version{n}>{_text(str(value))}</Version>")
        elif isinstance(value, datetime):
            # DateTimeKind.Utc goes as ...Z, Local with the machine's offset (+00:00 included), as PowerShell writes
            # them (XmlConvert, RoundtripKind); a naive value is taken as UTC.
            moment = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
            text = moment.isoformat()
            if moment.tzinfo is timezone.utc:
                text = text.replace("+00:00", "Z")
            self.parts.append(f"<DT{n}>{text}</DT>")
        elif isinstance(value, uuid.UUID):
            self.parts.append(f"<G{n}>{value}</G>")
        elif isinstance(value, (bytes, bytearray)):
            self.parts.append(f"<BA{n}>{base64.b64encode(bytes(value)).decode()}</BA>")
        elif isinstance(value, (list, tuple)):
            names = value.type_names() if isinstance(value, (MultiValued, ArrayList)) else \
                ["System.Object[]", "System.Array", "System.Object"]
            self.parts.append(f'<Obj{n} RefId="{self.next_ref}">')
            self.next_ref += 1
            self._type_names(names)
            self.parts.append("<LST>")
            for item in value:
                if isinstance(value, MultiValued):
                    self.parts.append(f"<S>{_text(str(item))}</S>")
                else:
                    self.value(None, item)
            self.parts.append("</LST></Obj>")
        else:
            self.parts.append(f"<S{n}>{_text(str(value))}</S>")
