"""Shared by the offline tests: where the real CSS-Exchange captures are, and how a remote session would send them."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import datetime
from pathlib import Path


NS = "{http://schemas.microsoft.com/powershell/2004/04}"
_REMOTING = {"PSComputerName", "RunspaceId", "PSShowComputerName", "SerializationData"}


# The real Export-Clixml captures of microsoft/CSS-Exchange (MIT, see LICENSE and MANIFEST.md there), kept in the
# repository so that every test that relies on them runs in CI too.
REALDATA = Path(__file__).resolve().parent.parent / "data" / "css-exchange"


def realdata_dir() -> Path:
    assert REALDATA.is_dir(), f"the real captures are missing: {REALDATA}"
    return REALDATA


def e19_dir() -> Path:
    return realdata_dir() / "Diagnostics/HealthChecker/Tests/DataCollection/E19"


def all_captures() -> list[Path]:
    """Every real capture, for parametrize: collection fails when the captures are absent, never skips them."""
    return sorted(realdata_dir().rglob("*.xml"))


def e19_exchange_captures() -> list[str]:
    return sorted(p.name for p in all_captures() if p.parent.name == "Exchange" and p.parent.parent.name == "E19")


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


def clixml_document(objects: list[tuple[list[str], dict]], *, computer: str | None = None) -> str:
    """A synthetic Export-Clixml document: PSCustomObjects (NoteProperties in <MS>, as PowerShell writes them)
    holding strings, booleans, ints, nulls, lists and hashtables. Used for sources no real capture exists for."""
    counter = [0]

    def ref() -> str:
        counter[0] += 1
        return str(counter[0])

    def value(v, name: str | None = None) -> str:
        n = f' N="{_xml_escape(name)}"' if name is not None else ""
        if v is None:
            return f"<Nil{n} />"
        if isinstance(v, bool):
            return f"<B{n}>{'true' if v else 'false'}</B>"
        if isinstance(v, datetime):
            return f"<DT{n}>{v.isoformat()}</DT>"
        if isinstance(v, int):
            return f"<I32{n}>{v}</I32>"
        if isinstance(v, str):
            return f"<S{n}>{_xml_escape(v)}</S>"
        if isinstance(v, list):
            items = "".join(value(i) for i in v)
            return f'<Obj{n} RefId="{ref()}"><TN RefId="{counter[0]}"><T>System.Object[]</T><T>System.Array</T><T>System.Object</T></TN><LST>{items}</LST></Obj>'
        if isinstance(v, dict):
            entries = "".join(f"<En>{value(k, 'Key')}{value(i, 'Value')}</En>" for k, i in v.items())
            return f'<Obj{n} RefId="{ref()}"><TN RefId="{counter[0]}"><T>System.Collections.Hashtable</T><T>System.Object</T></TN><DCT>{entries}</DCT></Obj>'
        raise TypeError(v)

    body = []
    for type_names, props in objects:
        tn = "".join(f"<T>{_xml_escape(t)}</T>" for t in type_names)
        members = "".join(value(v, k) for k, v in props.items())
        if computer:
            members += value(computer, "PSComputerName")
        rid = ref()
        body.append(f'<Obj RefId="{rid}"><TN RefId="{rid}">{tn}</TN><MS>{members}</MS></Obj>')
    return '<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">' + "".join(body) + "</Objs>"


def _xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def utf16(text: str) -> bytes:
    """What Windows PowerShell 5.1's Export-Clixml writes: UTF-16LE with a BOM."""
    return b"\xff\xfe" + text.encode("utf-16-le")
