"""Shared by the offline tests: where the real CSS-Exchange captures are, and how a remote session would send them."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

NS = "{http://schemas.microsoft.com/powershell/2004/04}"
_REMOTING = {"PSComputerName", "RunspaceId", "PSShowComputerName", "SerializationData"}


def realdata_dir() -> Path:
    """../shared/realdata/css-exchange beside the clone (CI), or above a worktree."""
    here = Path(__file__).resolve().parent.parent
    for base in (here, *here.parents):
        candidate = base / "shared" / "realdata" / "css-exchange"
        if candidate.is_dir():
            return candidate
    pytest.skip("the real CSS-Exchange captures (../shared/realdata/css-exchange) are not beside this checkout")


def e19_dir() -> Path:
    return realdata_dir() / "Diagnostics/HealthChecker/Tests/DataCollection/E19"


def all_captures() -> list[Path]:
    return sorted(realdata_dir().rglob("*.xml"))


def to_wire_shape(data: bytes, *, deserialized: bool = True) -> bytes:
    """Rewrite a rehydrated EMS capture the way a remote session sends it at serialization depth 1.

    Every property of a top-level object goes at depth 0: a nested object becomes <S> with its ToString, a
    multi-valued property an <Obj> with an <LST> of item strings (exchange-objects.md section 5.1). Type names get the
    'Deserialized.' prefix a receiving PowerShell adds; the remoting members and SerializationData are dropped. Each
    object gets its own RefIds, as one PSRP message would.
    """
    root = ET.fromstring(data.decode("utf-8-sig"))
    type_tables: dict[str, list[str]] = {}
    objects: dict[str, ET.Element] = {}
    for element in root.iter():
        if element.tag == NS + "TN" and "RefId" in element.attrib:
            type_tables[element.attrib["RefId"]] = [t.text or "" for t in element]
        if element.tag == NS + "Obj" and "RefId" in element.attrib:
            objects[element.attrib["RefId"]] = element

    def types_of(obj: ET.Element) -> list[str]:
        for child in obj:
            if child.tag == NS + "TN":
                return [t.text or "" for t in child]
            if child.tag == NS + "TNRef":
                return type_tables[child.attrib["RefId"]]
        return []

    def child(obj: ET.Element, tag: str) -> ET.Element | None:
        return next((c for c in obj if c.tag == NS + tag), None)

    def prefixed(names: list[str]) -> list[str]:
        return [("Deserialized." + n) if deserialized else n for n in names]

    def depth_zero(element: ET.Element, name: str | None, counter: list[int]) -> ET.Element:
        if element.tag == NS + "Ref":
            element = objects[element.attrib["RefId"]]
        if element.tag != NS + "Obj":
            copy = ET.Element(element.tag.replace(NS, ""), {"N": name} if name else {})
            copy.text = element.text
            return copy
        items = child(element, "LST")
        types = types_of(element)
        if items is not None or any("MultiValuedProperty" in t or t.endswith("[]") for t in types):
            counter[0] += 1
            out = ET.Element("Obj", {"N": name, "RefId": str(counter[0])} if name else {"RefId": str(counter[0])})
            tn = ET.SubElement(out, "TN", {"RefId": str(counter[0])})
            for t in prefixed(types):
                ET.SubElement(tn, "T").text = t
            lst = ET.SubElement(out, "LST")
            for item in (items if items is not None else []):
                lst.append(depth_zero(item, None, counter))
            return out
        text = child(element, "ToString")
        out = ET.Element("S", {"N": name} if name else {})
        out.text = text.text if text is not None else ""
        return out

    out_root = ET.Element("Objs", {"Version": "1.1.0.1", "xmlns": NS.strip("{}")})
    for top in root:
        counter = [0]
        obj = ET.SubElement(out_root, "Obj", {"RefId": "0"})
        tn = ET.SubElement(obj, "TN", {"RefId": "0"})
        for t in prefixed(types_of(top)):
            ET.SubElement(tn, "T").text = t
        to_string = child(top, "ToString")
        if to_string is not None:
            ET.SubElement(obj, "ToString").text = to_string.text
        props = ET.SubElement(obj, "Props")
        for section in ("Props", "MS"):
            members = child(top, section)
            for member in (members if members is not None else []):
                if member.attrib.get("N") not in _REMOTING:
                    props.append(depth_zero(member, member.attrib["N"], counter))
    return b"\xef\xbb\xbf" + ET.tostring(out_root, encoding="unicode").encode("utf-8")
