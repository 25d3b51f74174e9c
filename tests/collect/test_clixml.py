"""The CLIXML normaliser against the real CSS-Exchange captures, both wire shapes, every encoding and hostile input."""

from __future__ import annotations

import json

import pytest
from pypsrp.serializer import Serializer

from hma_check.collect import clixml
from hma_check.collect.clixml import ClixmlObject, clixml_datetime, parse_clixml, parse_object_xml, unescape
from hma_check.errors import ClixmlError, InputError
from tests.support.offline_fixtures import all_captures, e19_dir, e19_exchange_captures, realdata_dir, to_wire_shape

WRAP = '<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">{}</Objs>'


def parse_text(body: str) -> list[ClixmlObject]:
    return parse_clixml(WRAP.format(body).encode("utf-8"), source="t.xml")


@pytest.mark.parametrize("path", all_captures(), ids=lambda p: p.name)
def test_every_real_capture_parses_to_json(path):
    objects = parse_clixml(path.read_bytes(), source=str(path))
    assert objects and all(obj.type_names for obj in objects)
    json.dumps([[obj.properties, obj.value, obj.to_string] for obj in objects], allow_nan=False)
    for obj in objects:
        assert not {"PSComputerName", "RunspaceId", "PSShowComputerName", "SerializationData"} & set(obj.properties)


def test_e19_exchange_server_normalised_like_the_wire():
    server, = parse_clixml((e19_dir() / "Exchange/GetExchangeServer.xml").read_bytes(), source="s")
    assert server.type_names[0] == "Microsoft.Exchange.Data.Directory.Management.ExchangeServer"
    assert server.to_string == "SOLO-E19A"
    assert server.computer_name == "solo-e19a.solo.com"
    assert server["AdminDisplayVersion"] == "Version 15.2 (Build 986.5)"  # ServerVersion -> ToString
    assert server["ExchangeVersion"] == "0.1 (8.0.535.0)"  # ExchangeObjectVersion -> ToString
    assert server["ServerRole"] == "Mailbox"  # enum -> ToString
    assert server["Site"] == "Solo.com/Configuration/Sites/Default-First-Site-Name"  # ADObjectId -> ToString
    assert server["InternetWebProxy"] is None
    assert server["IsClientAccessServer"] is True
    assert server.get("fqdn") == "Solo-E19A.Solo.com"  # case-insensitive, as PowerShell
    assert "fQdN" in server and "NoSuchProperty" not in server
    with pytest.raises(KeyError):
        server["NoSuchProperty"]


def test_e19_vdir_lists_dates_uris_and_refs():
    ews, = parse_clixml((e19_dir() / "Exchange/GetWebServicesVirtualDirectory.xml").read_bytes(), source="s")
    assert ews["InternalAuthenticationMethods"] == ["Ntlm", "WindowsIntegrated", "WSSecurity", "OAuth"]
    assert ews["ExternalAuthenticationMethods"] == ews["InternalAuthenticationMethods"]  # via <TNRef>
    assert ews["InternalUrl"] == "https://solo-e19a.solo.com/EWS/Exchange.asmx"
    assert ews["ExternalUrl"] is None
    assert ews["WhenChanged"] == "2019-12-03T22:59:04Z"  # -08:00 local time -> UTC
    assert ews["WhenChangedUTC"] == "2019-12-03T22:59:04Z"
    assert ews["Id"] == ews["Identity"] == "SOLO-E19A\\EWS (Default Web Site)"  # <Ref> to Identity


def test_empty_multivalued_properties_are_empty_lists():
    hybrid, = parse_clixml((e19_dir() / "Exchange/GetHybridConfiguration.xml").read_bytes(), source="s")
    assert hybrid["ClientAccessServers"] == [] and hybrid["EdgeTransportServers"] == []
    assert hybrid["SendingTransportServers"] == ["ex-02"]
    assert hybrid["OnPremisesSmartHost"] == "mail.contoso.com"


def test_real_remote_capture_strips_deserialized_and_reads_depth_zero_values():
    path = realdata_dir() / ("Diagnostics/HealthChecker/DataCollection/ExchangeInformation/Tests/DataCollection/"
                             "GetSettingOverridePSSigningMultipleOverrides.xml")
    first, second = parse_clixml(path.read_bytes(), source=str(path))
    assert first.type_names[0] == "Microsoft.Exchange.Data.Directory.SystemConfiguration.ConfigurationSettings.SettingOverride"
    assert first["Parameters"] == ["Enabled=true"] and first["Status"] == "Accepted"
    assert first["Server"] is None and second["Server"] == ["E2k16-1"] and second["Status"] == "ServerMismatch"
    assert second.type_names == first.type_names  # <TNRef> into the first object's table
    rehydrated, = parse_clixml((e19_dir() / "Exchange/GetSettingOverride1.xml").read_bytes(), source="r")
    # The same cmdlet, rehydrated in EMS: every property shared by both shapes has the same kind of value.
    for name in ("ComponentName", "SectionName", "Parameters", "Status", "ExchangeVersion", "Identity", "WhenChangedUTC",
                 "ObjectState", "Reason"):
        assert type(rehydrated[name]) is type(first[name]), name


# GetExtendedProtectionConfiguration.xml is HealthChecker's own PSCustomObject, not an Exchange cmdlet's output.
@pytest.mark.parametrize("name", [n for n in e19_exchange_captures() if n != "GetExtendedProtectionConfiguration.xml"])
def test_rehydrated_and_remote_shapes_give_identical_values(name):
    data = (e19_dir() / "Exchange" / name).read_bytes()
    rehydrated = parse_clixml(data, source=name)
    remote = parse_clixml(to_wire_shape(data), source=name)
    assert [o.type_names for o in remote] == [o.type_names for o in rehydrated]
    assert [o.properties for o in remote] == [o.properties for o in rehydrated]


def test_live_pypsrp_object_xml_parses_like_the_file():
    """A live pypsrp object keeps its CLIXML in ``_xml``; parse_object_xml reads it with identical results."""
    data = to_wire_shape((e19_dir() / "Exchange/GetOwaVirtualDirectory.xml").read_bytes(), deserialized=False)
    text = data.decode("utf-8-sig")
    obj_xml = text[text.index('<Obj RefId="0">'):text.rindex("</Objs>")]
    live = Serializer().deserialize(obj_xml)
    assert live._xml  # what the Exchange collector hands to parse_object_xml
    from_live = parse_object_xml(live._xml)
    from_file, = parse_clixml((e19_dir() / "Exchange/GetOwaVirtualDirectory.xml").read_bytes(), source="f")
    assert from_live.properties == from_file.properties
    assert from_live["InternalAuthenticationMethods"] == ["Basic", "Fba"]
    assert from_live.type_names == from_file.type_names


@pytest.mark.parametrize("encoding,bom", [("utf-8", b""), ("utf-16-le", b"\xff\xfe"), ("utf-16-be", b"\xfe\xff"),
                                          ("utf-16-le", b"")])
def test_encodings_windows_powershell_and_pwsh_write(encoding, bom):
    original = (e19_dir() / "Exchange/GetAuthConfig.xml").read_bytes()
    text = original.decode("utf-8-sig")
    expected = parse_clixml(original, source="a")[0].properties
    assert parse_clixml(bom + text.encode(encoding), source="a")[0].properties == expected


def test_primitives_and_escapes():
    obj, = parse_text(
        '<Obj RefId="0"><TN RefId="0"><T>Deserialized.X.Y</T></TN><ToString>a_x000D__x000A_b</ToString><Props>'
        '<S N="Text">x_x0009_y_xD83D__xDE00_</S><I64 N="Big">9007199254740993</I64><Db N="Ratio">0.5</Db>'
        '<Db N="NotANumber">NaN</Db><C N="Letter">65</C><G N="Guid">99aeac02-4364-4345-83f9-f5f8a4c127da</G>'
        '<DT N="Fine">2024-05-02T08:00:00.1234567+02:00</DT><DT N="Min">0001-01-01T00:00:00</DT>'
        '<TS N="Span">PT1H</TS><Version N="V">15.2.986.5</Version><BA N="Raw">AAEC</BA>'
        '<SS N="Secret">01000000d08c9ddf</SS><Nil N="Nothing" /><S N="Empty" />'
        '<Obj N="Table" RefId="1"><TN RefId="1"><T>System.Collections.Hashtable</T></TN>'
        '<DCT><En><S N="Key">a</S><I32 N="Value">1</I32></En><En><I32 N="Key">2</I32><Nil N="Value" /></En></DCT></Obj>'
        '<Obj N="Ints" RefId="2"><TN RefId="2"><T>System.Int32[]</T></TN><LST><I32>1</I32><I32>2</I32></LST></Obj>'
        '<Obj N="NoList" RefId="3"><TN RefId="3"><T>System.String[]</T></TN></Obj>'
        '<Obj N="Enum" RefId="4"><TN RefId="4"><T>Some.Enum</T><T>System.Enum</T></TN><ToString>OAuth</ToString>'
        '<I32>10</I32></Obj></Props><MS><S N="text">extended wins</S><S N="PSComputerName">ex1.contoso.com</S>'
        '<B N="PSShowComputerName">false</B></MS></Obj>')
    assert obj.type_names == ("X.Y",) and obj.to_string == "a\r\nb"
    assert obj["Text"] == "extended wins" and len(obj.properties) == 18
    assert obj["Big"] == 9007199254740993 and obj["Ratio"] == 0.5 and obj["NotANumber"] == "NaN"
    assert obj["Letter"] == "A" and obj["Guid"] == "99aeac02-4364-4345-83f9-f5f8a4c127da"
    assert obj["Fine"] == "2024-05-02T06:00:00.123456Z" and obj["Min"] == "0001-01-01T00:00:00Z"
    assert obj["Span"] == "PT1H" and obj["V"] == "15.2.986.5" and obj["Raw"] == "AAEC"
    assert obj["Secret"] == "(SecureString omitted)" and obj["Nothing"] is None and obj["Empty"] == ""
    assert obj["Table"] == {"a": 1, "2": None} and obj["Ints"] == [1, 2] and obj["NoList"] == []
    assert obj["Enum"] == "OAuth" and obj.computer_name == "ex1.contoso.com"
    assert unescape("_xD83D__xDE00_") == "\U0001F600" and unescape("_xD83D_") == "\ufffd"


def test_top_level_values_and_refs():
    items = parse_text('<S>plain</S><Obj RefId="0"><TN RefId="0"><T>System.Object[]</T></TN><LST><S>a</S></LST></Obj>'
                       '<Ref RefId="0" />')
    assert [i.value for i in items] == ["plain", ["a"], ["a"]]
    assert items[1] is items[2]


def test_datetime_edges():
    assert clixml_datetime("2019-12-03T14:59:04-08:00") == "2019-12-03T22:59:04Z"
    assert clixml_datetime("9999-12-31T23:59:59.9999999-01:00") == "9999-12-31T23:59:59.999999Z"
    with pytest.raises(ValueError):
        clixml_datetime("yesterday")


@pytest.mark.parametrize("body,reason", [
    ('<!DOCTYPE Objs [<!ENTITY a "aaaa">]><Objs/>', "DTD"),
    ('<?xml version="1.0"?><!DOCTYPE x SYSTEM "http://127.0.0.1:9/x.dtd"><Objs/>', "DTD"),
    ('<Objs><S>&a;</S></Objs>', "undefined entity"),
    ('<html><body/></html>', "root element is <html>"),
    ('<Objs><Obj RefId="0"><TN RefId="0"><T>A</T></TN><Props><S N="x">1</S>', "truncated"),
    ('<Objs><Obj RefId="0"><TNRef RefId="9" /></Obj></Objs>', "points to no earlier <TN>"),
    ('<Objs><Obj RefId="0"><Props><Ref N="x" RefId="7" /></Props></Obj></Objs>', "points to no earlier object"),
    ('<Objs><Obj RefId="0"><Props><B N="x">maybe</B></Props></Obj></Objs>', "not a boolean"),
    ('<Objs><Obj RefId="0"><Props><I32 N="x">1e3</I32></Props></Obj></Objs>', "invalid value"),
    ('<Objs><Obj RefId="0"><Props><I32 N="x">' + "9" * 5000 + '</I32></Props></Obj></Objs>', "invalid value"),
    ('<Objs><Obj RefId="0"><Props><BA N="x">***</BA></Props></Obj></Objs>', "invalid value"),
    ('<Objs><Obj RefId="0"><Props><S>no name</S></Props></Obj></Objs>', "without a name"),
    ('<Objs><Obj RefId="0"><Bogus /></Obj></Objs>', "unexpected element <Bogus>"),
    ('<Objs><Obj RefId="0"><DCT><En><S N="Value">v</S></En></DCT></Obj></Objs>', "without a Key"),
    ("<Objs>" + "<Obj><LST>" * 200 + "</LST></Obj>" * 200 + "</Objs>", "nested more than"),
])
def test_malformed_and_hostile_input_is_one_clear_error(body, reason):
    with pytest.raises(ClixmlError) as caught:
        parse_clixml(body.encode("utf-8"), source="evil.xml")
    message = str(caught.value)
    assert message.startswith("evil.xml") and reason in message and "\n" not in message
    assert isinstance(caught.value, InputError)


def test_ref_expansion_is_bounded(monkeypatch):
    # Each level lists the previous one ten times: 10**7 values from a file of a few kilobytes.
    levels = ['<Obj RefId="0"><TN RefId="0"><T>System.Object[]</T></TN><LST>' + "<S>x</S>" * 10 + "</LST></Obj>"]
    for level in range(1, 8):
        refs = f'<Ref RefId="{level - 1}" />' * 10
        levels.append(f'<Obj RefId="{level}"><TNRef RefId="0" /><LST>{refs}</LST></Obj>')
    with pytest.raises(ClixmlError, match="expands to more than"):
        parse_text("".join(levels))


def test_oversized_and_undecodable_files(monkeypatch):
    monkeypatch.setattr(clixml, "MAX_CLIXML_BYTES", 100)
    with pytest.raises(ClixmlError, match="limit for one CLIXML file"):
        parse_clixml(b" " * 101, source="big.xml")
    with pytest.raises(ClixmlError, match="malformed UTF-8 text at byte 6"):
        parse_clixml(b"<Objs>\xff\xfe\xfd</Objs>", source="bin.xml")
    with pytest.raises(ClixmlError, match="malformed UTF-16-LE text at byte 4"):
        parse_clixml(b"\xff\xfe<\x00\x00\xd8", source="half.xml")


def test_parse_object_xml_needs_an_obj():
    with pytest.raises(ClixmlError, match="not <Obj>"):
        parse_object_xml("<Objs/>")


@pytest.mark.parametrize("text", [
    "", "AAEC", "AAE=", "AA==", "AAECAwQF", "A===", "====", "=AAA", "AA=A", "AAA", "AAAAA", "AAAAAA==",
    "AA==AA==", "AAEC\n", " AAEC", "AA EC", "AA\tEC", "AAE\u00e9", "AA-_", "AAE*", "QUJD" * 3000 + "QQ==",
])
def test_a_byte_array_is_accepted_and_kept_exactly_as_by_decoding_it(text):
    """The fast check for canonical base64 (clixml._canonical_base64) never accepts what decoding refuses."""
    import base64
    import binascii

    from hma_check.collect.clixml import _canonical_base64

    try:
        base64.b64decode(text, validate=True)
        decodes = True
    except (ValueError, binascii.Error):
        decodes = False
    if _canonical_base64(text):
        assert decodes
    xml = f'<Objs><Obj RefId="0"><Props><BA N="x">{text}</BA></Props></Obj></Objs>'
    compact = "".join(text.split())
    try:
        base64.b64decode(compact, validate=True)
        expected = compact
    except (ValueError, binascii.Error):
        expected = None
    if expected is None:
        with pytest.raises(ClixmlError):
            parse_clixml(xml.encode("utf-8"), source="t")
    else:
        assert parse_clixml(xml.encode("utf-8"), source="t")[0]["x"] == expected


# A live object's large byte arrays are cut out before the XML parser runs (clixml._cut_byte_arrays): the objects,
# and every error with its line, are those of the reader that parses the whole text.

_BLOB = "AAEAAAD/////" * 200          # 2400 characters of canonical base64: long enough to be cut
_LIVE = ('<Obj RefId="0"><TN RefId="0"><T>Microsoft.Exchange.Data.Directory.SystemConfiguration.ADOwaVirtualDirectory'
         '</T><T>System.Object</T></TN><ToString>EX01\\owa (Default Web Site)</ToString><Props>'
         '<S N="Name">owa (Default Web Site)</S>{props}</Props><MS>{members}</MS></Obj>')
LIVE_OBJECTS = {
    "serialization data": _LIVE.format(props="", members=f'<BA N="SerializationData">{_BLOB}</BA>'),
    "two arrays": _LIVE.format(props=f'<BA N="RawData">{_BLOB}</BA>', members=f'<BA N="SerializationData">{_BLOB}</BA>'),
    "a prefix and spaces": _LIVE.format(props="", members=f"<ps:BA  N = 'SerializationData' xmlns:ps='urn:x' >{_BLOB}</ps:BA >"),
    "padding": _LIVE.format(props="", members=f'<BA N="SerializationData">{_BLOB}AA==</BA>'),
    "short": _LIVE.format(props="", members='<BA N="SerializationData">AAEAAAD/</BA>'),
    "whitespace in it": _LIVE.format(props="", members=f'<BA N="SerializationData">{_BLOB}\n{_BLOB}</BA>'),
    "an entity in it": _LIVE.format(props="", members=f'<BA N="SerializationData">{_BLOB}&#65;AAA</BA>'),
    "a comment": _LIVE.format(props="<!-- x -->", members=f'<BA N="SerializationData">{_BLOB}</BA>'),
    "BA in a string": _LIVE.format(props=f'<S N="Note">BA{_BLOB}</S>', members=f'<BA N="SerializationData">{_BLOB}</BA>'),
    "an attribute with >": _LIVE.format(props="", members=f'<BA N="a>b">{_BLOB}</BA>'),
    "a child in it": _LIVE.format(props="", members=f'<BA N="SerializationData">{_BLOB}<S>x</S></BA>'),
}
BROKEN_LIVE_OBJECTS = {
    "not base64": _LIVE.format(props="", members=f'<BA N="SerializationData">{_BLOB}!!!!</BA>'),
    "bad padding": _LIVE.format(props="", members=f'<BA N="SerializationData">{_BLOB}A</BA>'),
    "mismatched end tag": _LIVE.format(props="", members=f'<BA N="SerializationData">{_BLOB}</BB>'),
    "truncated": _LIVE.format(props="", members=f'<BA N="SerializationData">{_BLOB}</BA>')[:-40],
    "junk after": _LIVE.format(props="", members=f'<BA N="SerializationData">{_BLOB}</BA>') + f"<BA>{_BLOB}</BA>",
    "a DTD": '<!DOCTYPE Obj [<!ENTITY x "y">]>' + _LIVE.format(props="", members=f'<BA N="S">{_BLOB}</BA>'),
    "too deep": _LIVE.format(props="", members=f'<BA N="SerializationData">{_BLOB}</BA>' + "<Obj N='x'><MS>" * 130
                             + "</MS></Obj>" * 130),
}


def _as_plain_reader_reads_it(xml: str) -> ClixmlObject:
    return clixml._parse(xml, source="<live object>", root="Obj")[0]


def _fields(obj: ClixmlObject) -> tuple:
    return obj.type_names, obj.to_string, obj.properties, obj.computer_name, obj.value


@pytest.mark.parametrize("name", LIVE_OBJECTS)
def test_a_live_object_with_its_byte_arrays_cut_out_reads_as_the_whole_text_does(name):
    xml = LIVE_OBJECTS[name]
    ours = parse_object_xml(xml)
    assert _fields(ours) == _fields(_as_plain_reader_reads_it(xml))
    assert all(type(value) is str for value in ours.properties.values() if isinstance(value, str))
    cut = {"serialization data": 1, "two arrays": 2, "a prefix and spaces": 1, "padding": 1,
           "BA in a string": 1}
    found = clixml._cut_byte_arrays(xml)
    assert (len(found[1]) if found else 0) == cut.get(name, 0)


@pytest.mark.parametrize("name", BROKEN_LIVE_OBJECTS)
def test_a_broken_live_object_fails_as_the_whole_text_does(name):
    xml = BROKEN_LIVE_OBJECTS[name]
    with pytest.raises(ClixmlError) as theirs:
        _as_plain_reader_reads_it(xml)
    with pytest.raises(ClixmlError) as ours:
        parse_object_xml(xml)
    assert (str(ours.value), ours.value.line) == (str(theirs.value), theirs.value.line)
