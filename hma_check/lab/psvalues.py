"""Build PSObjects the way Exchange's remote endpoint serialises them (depth 1: complex values as strings, lists as LST)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Iterable

from psrpcore.types import PSBool, PSByteArray, PSGuid, PSInt, PSInt64, PSList, PSNoteProperty, PSObject, PSString, PSUri

# Remote sessions serialise Exchange objects at depth 1: every property is written at depth 0, so complex values
# (ADObjectId, enums, ServerVersion, ExchangeObjectVersion) arrive as their ToString() in <S>, while containers keep
# their type names and carry their items as strings (PowerShell serialization.cs, WriteOneObject; see
# ../shared/reference/exchange-objects.md section 5.1).
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


def ps_value(value: Any) -> Any:
    """Map a plain Python value to the psrpcore value Exchange would put on the wire."""
    if value is None or isinstance(value, (PSObject,)):
        return value
    if isinstance(value, bool):
        return PSBool(value)
    if isinstance(value, Uri):
        return PSUri(str(value))
    if isinstance(value, MultiValued):
        items = PSList(PSString(str(item)) for item in value)
        items.PSObject.type_names = value.type_names()
        return items
    if isinstance(value, (list, tuple)):
        items = PSList(ps_value(item) for item in value)
        items.PSObject.type_names = ["System.Object[]", "System.Array", "System.Object"]
        return items
    if isinstance(value, int):
        return PSInt(value) if -2**31 <= value < 2**31 else PSInt64(value)
    if isinstance(value, datetime):
        return value
    if isinstance(value, uuid.UUID):
        return PSGuid(str(value))
    if isinstance(value, (bytes, bytearray)):
        return PSByteArray(bytes(value))
    return PSString(str(value))


def ex_object(type_names: list[str], to_string: str | None, properties: dict[str, Any]) -> PSObject:
    """An Exchange object: type names, ToString and adapted properties (<Props>), values mapped by ps_value."""
    obj = PSObject()
    obj.PSObject.type_names = list(type_names)
    if to_string is not None:
        obj.PSObject.to_string = to_string
    for name, value in properties.items():
        obj.PSObject.adapted_properties.append(PSNoteProperty(name, ps_value(value)))
    return obj

