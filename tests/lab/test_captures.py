"""The lab replays real Export-Clixml captures as the bytes they are, each object a self-contained PSRP message."""

from __future__ import annotations

import pytest

from hma_check.collect.clixml import parse_clixml, parse_object_xml
from hma_lab.captures import CaptureError, read_capture
from tests.support.offline_fixtures import all_captures


@pytest.mark.parametrize("path", all_captures(), ids=lambda path: path.name)
def test_every_real_capture_replays_object_by_object_as_the_file_reads(path):
    """The product reads each replayed object (alone, as a remote session delivers it) exactly as it reads the file,
    so a bug in the product's parser cannot be hidden by the lab: the lab never parses the objects itself."""
    data = path.read_bytes()
    offline = parse_clixml(data, source=str(path))
    replayed = read_capture(data, str(path))
    assert len(replayed) == len(offline)
    for captured, expected in zip(replayed, offline, strict=True):
        live = parse_object_xml(captured.wire.decode("utf-8"), source="replay")
        assert (live.type_names, live.to_string, live.properties) == \
            (expected.type_names, expected.to_string, expected.properties)
        assert b"xmlns" not in captured.wire and captured.wire.startswith(b"<Obj ")


DOCUMENT = """<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">
  <Obj RefId="0"><TN RefId="0"><T>Demo.Thing</T><T>System.Object</T></TN><ToString>one</ToString>
    <Props><S N="Name">one</S><S N="Server">EX01</S>
      <Obj N="Owner" RefId="1"><TN RefId="1"><T>Demo.Owner</T><T>System.Object</T></TN><ToString>o_x000A_wner</ToString></Obj>
    </Props></Obj>
  <Obj RefId="2"><TNRef RefId="0" /><ToString>two</ToString>
    <Props><S N="Name">two</S><Ref N="Owner" RefId="1" /><Ref N="Again" RefId="1" /></Props></Obj>
</Objs>"""


@pytest.mark.parametrize("encoding, bom", [("utf-8", b""), ("utf-8", b"\xef\xbb\xbf"), ("utf-16-le", b"\xff\xfe")])
def test_references_to_earlier_objects_carry_the_definition_once(encoding, bom):
    first, second = read_capture(bom + DOCUMENT.encode(encoding), "demo.xml")
    assert first.properties == {"Name": "one", "Server": "EX01"} and second.properties == {"Name": "two"}
    wire = second.wire.decode("utf-8")
    # The type names and the shared object are defined in this message, once; the second reference stays a Ref.
    assert wire.count('<TN RefId="0">') == 1 and wire.count('<Obj N="Owner" RefId="1">') == 1
    assert '<Ref N="Again" RefId="1" />' in wire and "<TNRef" not in wire
    owner = parse_object_xml(wire, source="replay").properties["Owner"]
    assert owner == parse_clixml(DOCUMENT.encode(), source="demo.xml")[1].properties["Owner"]


@pytest.mark.parametrize("text, message", [
    ("<Objs><Obj RefId='0'></Objs>", "demo.xml:1: not well-formed"),
    ("<Other/>", "not <Objs>"),
    ("<Objs></Objs>", "no <Objs> document with objects"),
    ("<!DOCTYPE x [<!ENTITY a 'b'>]><Objs/>", "document type declaration"),
])
def test_a_capture_that_is_not_clixml_is_one_error(text, message):
    with pytest.raises(CaptureError, match=message):
        read_capture(text.encode(), "demo.xml")
