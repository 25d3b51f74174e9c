"""Fuzzing the CLIXML reader: garbage, truncation, mutation, deep nesting, entity and <Ref> expansion, huge RefId tables.

The contract under test: parse_clixml returns objects or raises ClixmlError, nothing else, in bounded time and memory.
"""

from __future__ import annotations

import io
import json
import tracemalloc
import zipfile
from datetime import timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hma_check.collect import clixml
from hma_check.collect.clixml import REMOTING_PROPERTIES, MAX_DEPTH, decode_text, parse_clixml, parse_object_xml
from hma_check.collect.offline.importer import ImportPathError, import_path
from hma_check.errors import ClixmlError
from tests.collect.test_clixml_reference import typed
from tests.support.offline_fixtures import all_captures

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                        HealthCheck.function_scoped_fixture])
HEADER = b'<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">'
SAMPLES = [p.read_bytes() for p in all_captures()[:6]]


def parse_or_clear_error(data: bytes) -> None:
    try:
        objects = parse_clixml(data, source="fuzz.xml")
    except ClixmlError as exc:
        text = str(exc)
        assert text.startswith("fuzz.xml") and "\n" not in text
        return
    json.dumps([[o.properties, o.value, o.to_string, o.type_names] for o in objects], allow_nan=False)


@FUZZ
@given(st.binary(max_size=2000))
def test_garbage_bytes(data):
    parse_or_clear_error(data)


@FUZZ
@given(st.binary(max_size=500))
def test_garbage_after_a_valid_header(data):
    parse_or_clear_error(HEADER + data)


@FUZZ
@given(st.sampled_from(SAMPLES), st.floats(0, 1))
def test_truncated_real_captures(sample, fraction):
    parse_or_clear_error(sample[: int(len(sample) * fraction)])


@FUZZ
@given(st.sampled_from(SAMPLES), st.lists(st.tuples(st.floats(0, 1), st.binary(min_size=1, max_size=8)), max_size=6))
def test_mutated_real_captures(sample, edits):
    data = bytearray(sample)
    for position, replacement in edits:
        at = int(len(data) * position)
        data[at:at + len(replacement)] = replacement
    parse_or_clear_error(bytes(data))


# Property names compare case-insensitively, as in PowerShell, so 'RUNSPACEID' is the remoting member RunspaceId and
# is dropped by design: generated names avoid every casing of those.
_NAME = st.text(st.characters(whitelist_categories=("L", "N")), min_size=1, max_size=12).filter(
    lambda name: name.casefold() not in REMOTING_PROPERTIES)
_PRIMITIVE = st.one_of(
    st.text(max_size=30).map(lambda s: ("S", s)),
    st.booleans().map(lambda b: ("B", "true" if b else "false")),
    st.integers(-2**63, 2**63 - 1).map(lambda i: ("I64", str(i))),
    # .NET writes offsets in whole minutes.
    st.datetimes(timezones=st.sampled_from([timezone.utc, timezone(timedelta(hours=-8)),
                                            timezone(timedelta(hours=5, minutes=45))])).map(lambda d: ("DT", d.isoformat())),
    st.just(("Nil", None)),
)


def _xml_text(text: str) -> str:
    # What PowerShell does for characters XML cannot hold: _xHHHH_.
    out = []
    for ch in text:
        code = ord(ch)
        if ch in "&<>":
            out.append({"&": "&amp;", "<": "&lt;", ">": "&gt;"}[ch])
        elif code < 0x20 or 0xD800 <= code <= 0xDFFF or code in (0xFFFE, 0xFFFF):
            out.append(f"_x{code:04X}_")
        else:
            out.append(ch)
    return "".join(out)


def _render(value, name: str | None = None, counter=None) -> str:
    n = f' N="{_xml_text(name)}"' if name else ""
    kind = value[0]
    if kind == "list":
        counter[0] += 1
        return (f'<Obj{n} RefId="{counter[0]}"><TN RefId="{counter[0]}"><T>System.Object[]</T></TN><LST>'
                + "".join(_render(v, None, counter) for v in value[1]) + "</LST></Obj>")
    if kind == "obj":
        counter[0] += 1
        return (f'<Obj{n} RefId="{counter[0]}"><TN RefId="{counter[0]}"><T>X.Y</T></TN><ToString>'
                f'{_xml_text(value[2])}</ToString><Props>'
                + "".join(_render(v, k, counter) for k, v in value[1].items()) + "</Props></Obj>")
    if value[1] is None:
        return f"<{kind}{n} />"
    return f"<{kind}{n}>{_xml_text(value[1])}</{kind}>"


_VALUES = st.recursive(_PRIMITIVE, lambda inner: st.one_of(
    st.lists(inner, max_size=4).map(lambda items: ("list", items)),
    st.tuples(st.dictionaries(_NAME, inner, max_size=4), st.text(max_size=10)).map(lambda t: ("obj", t[0], t[1])),
), max_leaves=25)


@FUZZ
@given(st.lists(st.dictionaries(_NAME, _VALUES, max_size=6), min_size=1, max_size=4))
def test_generated_valid_clixml_always_parses(objects):
    counter = [0]
    body = "".join(_render(("obj", props, "top"), None, counter) for props in objects)
    parsed = parse_clixml((HEADER.decode() + body + "</Objs>").encode("utf-16"), source="gen.xml")
    assert len(parsed) == len(objects)
    for obj, props in zip(parsed, objects, strict=True):
        assert obj.type_names == ("X.Y",) and obj.to_string == "top"
        assert {k.casefold() for k in obj.properties} == {k.casefold() for k in props}
    json.dumps([o.properties for o in parsed], allow_nan=False)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 3000))
def test_nesting_depth_is_bounded_not_recursive(depth):
    data = HEADER + b"<Obj RefId=\"0\"><LST>" * depth + b"</LST></Obj>" * depth + b"</Objs>"
    if 1 + 2 * depth <= MAX_DEPTH:
        parse_clixml(data, source="deep.xml")
    else:
        with pytest.raises(ClixmlError, match="nested more than"):
            parse_clixml(data, source="deep.xml")


def test_billion_laughs_is_refused_before_expansion():
    entities = '<!ENTITY l0 "lol">' + "".join(f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, 10))
    bomb = f'<?xml version="1.0"?><!DOCTYPE Objs [{entities}]><Objs><S>&l9;</S></Objs>'.encode()
    tracemalloc.start()
    try:
        with pytest.raises(ClixmlError, match="DTD"):
            parse_clixml(bomb, source="lol.xml")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5 * 1024 * 1024


def test_ref_expansion_and_huge_refid_tables_stay_small():
    # 30,000 objects, each with its own TN and RefId, then <Ref>s fanning out ten levels deep.
    flat = "".join(f'<Obj RefId="{i}"><TN RefId="t{i}"><T>A.B{i}</T></TN><ToString>{i}</ToString></Obj>'
                   for i in range(30000))
    tracemalloc.start()
    try:
        objects = parse_clixml(HEADER + flat.encode() + b"</Objs>", source="many.xml")
        assert len(objects) == 30000 and objects[-1].type_names == ("A.B29999",)
        levels = ['<Obj RefId="L0"><TN RefId="T"><T>System.Object[]</T></TN><LST><S>x</S></LST></Obj>']
        for i in range(1, 11):
            refs = f'<Ref RefId="L{i - 1}" />' * 10
            levels.append(f'<Obj RefId="L{i}"><TNRef RefId="T" /><LST>{refs}</LST></Obj>')
        with pytest.raises(ClixmlError, match="expands to more than"):
            parse_clixml(HEADER + "".join(levels).encode() + b"</Objs>", source="fan.xml")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 200 * 1024 * 1024


@FUZZ
@given(st.text(max_size=300))
def test_parse_object_xml_on_arbitrary_text(text):
    try:
        parse_object_xml(text)
    except ClixmlError:
        pass


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1,
                                max_size=20),
                       st.one_of(st.binary(max_size=200), st.sampled_from(SAMPLES)), max_size=5))
def test_import_of_arbitrary_zips_never_crashes(tmp_path, members):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, payload in members.items():
            zf.writestr(name, payload)
    archive = tmp_path / "fuzz.zip"
    archive.write_bytes(buffer.getvalue())
    try:
        outcome = import_path(archive)
    except ImportPathError:
        return
    outcome.snapshot.dumps()


def streaming_agrees_with_exact(data: bytes) -> None:
    """The streaming reader answers only where the exact (event by event) reader gives the same objects; where that
    one refuses the file, the streaming one must have given up too."""
    try:
        text = decode_text(data, source="d.xml")
    except ClixmlError:
        return
    try:
        exact = typed(clixml._parse_exact(text, source="d.xml", root="Objs"))
    except ClixmlError:
        exact = None
    try:
        streamed = typed(clixml._parse_streaming(text, source="d.xml", root="Objs"))
    except (clixml._Fault, ClixmlError, clixml.ET.ParseError):
        return
    assert streamed == exact


@FUZZ
@given(st.sampled_from(SAMPLES), st.lists(st.tuples(st.floats(0, 1), st.binary(min_size=1, max_size=8)), max_size=6),
       st.sampled_from([7, 64, 4096]))
def test_streaming_reader_never_answers_otherwise_than_the_exact_one(monkeypatch, sample, edits, chunk):
    monkeypatch.setattr(clixml, "_CHUNK", chunk)
    data = bytearray(sample)
    for position, replacement in edits:
        at = int(len(data) * position)
        data[at:at + len(replacement)] = replacement
    streaming_agrees_with_exact(bytes(data))


_TAGS = st.sampled_from(["Obj", "LST", "MS", "Props", "S", "I32", "B", "Ref", "TN", "T", "TNRef", "ToString", "DCT",
                         "En", "Nil", "X"])


@st.composite
def _documents(draw, depth=0):
    """Random element trees of CLIXML's tags (mostly wrong ones), with names, RefIds and text."""
    tag = draw(_TAGS)
    attributes = (draw(st.sampled_from(["", ' N="a"', ' N="b"', ' N="Key"', ' N="Value"']))
                  + draw(st.sampled_from(["", ' RefId="0"', ' RefId="1"'])))
    children = draw(st.lists(_documents(depth + 1), max_size=0 if depth > 4 else 3)) if depth < 6 else []
    text = draw(st.sampled_from(["", "1", "true", "x_x000A_", "AAEC"]))
    return f"<{tag}{attributes}>{text}{''.join(children)}{draw(st.sampled_from(['', 'tail']))}</{tag}>"


@FUZZ
@given(st.lists(_documents(), min_size=1, max_size=4), st.sampled_from([7, 64, 4096]))
def test_streaming_reader_agrees_on_generated_trees(monkeypatch, bodies, chunk):
    monkeypatch.setattr(clixml, "_CHUNK", chunk)
    streaming_agrees_with_exact((HEADER.decode() + "".join(bodies) + "</Objs>").encode())
