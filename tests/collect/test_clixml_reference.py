"""The CLIXML reader against a recorded reference of what it returned (or refused, and how) before issue 18's rewrite.

The corpus: every real capture as it is, in the remote-session wire shape, in every encoding, each one's first object
as live CLIXML, a synthetic Get-Mailbox capture, hostile and odd documents, and a fixed set of truncated and mutated
captures. For each input the reference keeps a fingerprint of the objects (every value with its type, in order) or of
the one-line error message (which names the line, so error positions and which error wins are pinned too).

The reference (tests/data/clixml_reference.json) was written by the expat reader this file replaced
(commit 0a18ae8); rewrite it only for a deliberate change of behaviour:
``PYTHONPATH=. .venv/bin/python -m tests.collect.test_clixml_reference``.
"""

from __future__ import annotations

import hashlib
import json
import functools
import random
from pathlib import Path
from typing import Any, Callable

import pytest

from hma_check.collect import clixml
from hma_check.collect.clixml import ClixmlObject, parse_clixml, parse_object_xml
from hma_check.errors import ClixmlError
from tests.support.offline_fixtures import all_captures, e19_exchange_captures, e19_dir, realdata_dir, to_wire_shape

REFERENCE = Path(__file__).resolve().parent.parent / "data" / "clixml_reference.json"
HEADER = '<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">'


def typed(value: Any) -> Any:
    """A JSON form that keeps every type apart (True is not 1, 1.0 is not 1, a list is not a dict)."""
    if isinstance(value, ClixmlObject):
        return {"obj": [list(value.type_names), value.to_string, value.computer_name,
                        typed(value.properties), typed(value.value)]}
    if isinstance(value, dict):
        return {"dict": [[key, typed(item)] for key, item in value.items()]}
    if isinstance(value, list):
        return {"list": [typed(item) for item in value]}
    if value is None:
        return None
    return [type(value).__name__, repr(value)]


def outcome(parse: Callable[[], Any]) -> str:
    try:
        result = parse()
    except ClixmlError as exc:
        text = "error " + str(exc)
    else:
        text = json.dumps(typed(result), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _mailboxes(count: int) -> bytes:
    """The benchmark's shape: Select-Object output of Get-Mailbox, one shared TN table, UTF-16LE with a BOM."""
    objects = []
    for i in range(count):
        tn = ('<TN RefId="0"><T>Selected.Microsoft.Exchange.Data.Directory.Management.Mailbox</T>'
              '<T>System.Management.Automation.PSCustomObject</T><T>System.Object</T></TN>' if i == 0
              else '<TNRef RefId="0" />')
        smtp_tn = '<TN RefId="1"><T>Microsoft.Exchange.Data.SmtpAddress</T></TN>' if i == 0 else '<TNRef RefId="1" />'
        objects.append(
            f'<Obj RefId="{2 * i}">{tn}<MS><S N="Name">user{i}</S><S N="UserPrincipalName">user{i}@contoso.com</S>'
            f'<Obj N="PrimarySmtpAddress" RefId="{2 * i + 1}">{smtp_tn}<ToString>user{i}@contoso.com</ToString>'
            f'<Props><S N="Local">user{i}</S><S N="Domain">contoso.com</S></Props></Obj>'
            f'<S N="RecipientTypeDetails">UserMailbox</S></MS></Obj>')
    return b"\xff\xfe" + (HEADER + "".join(objects) + "</Objs>").encode("utf-16-le")


# Odd and hostile documents, most of them beside what the real captures exercise: which error wins and on which line.
_OBJ = '<Obj RefId="0"><TN RefId="0"><T>A</T></TN><Props>{}</Props></Obj>'
_DEEP = "<Obj><LST>" * 70 + "</LST></Obj>" * 70
ODD_BODIES = {
    "dtd": '<!DOCTYPE Objs [<!ENTITY a "aaaa">]><Objs/>',
    "dtd-system": '<?xml version="1.0"?><!DOCTYPE x SYSTEM "http://127.0.0.1:9/x.dtd"><Objs/>',
    "dtd-after-comment": '<!-- c -->\n<!DOCTYPE Objs [<!ENTITY a "a">]>\n<Objs/>',
    "dtd-after-root": "<Objs>\n</Objs>\n<!DOCTYPE Objs>",
    "dtd-in-content": "<Objs>\n<!DOCTYPE Objs>\n</Objs>",
    "undefined-entity": "<Objs><S>&a;</S></Objs>",
    "predefined-entities": "<Objs><S>&lt;&amp;&gt;&quot;&apos;&#65;&#x42;</S></Objs>",
    "wrong-root": "<html><body/></html>",
    "wrong-root-line-3": '<?xml version="1.0"?>\n<!-- c -->\n<html/>',
    "empty": "",
    "whitespace": "  \n  ",
    "truncated": '<Objs><Obj RefId="0"><TN RefId="0"><T>A</T></TN><Props><S N="x">1</S>',
    "junk-after-root": "<Objs/>\n<Objs/>",
    "xml-decl-utf16": '<?xml version="1.0" encoding="utf-16"?><Objs><S>x</S></Objs>',
    "processing-instruction": '<?xml version="1.0"?><?pi data?><Objs><?pi2?><S>a<?pi3?>b</S></Objs>',
    "comment-in-text": "<Objs><S>a<!-- c -->b</S></Objs>",
    "cdata": "<Objs><S><![CDATA[<not a tag> & co]]></S></Objs>",
    "child-in-primitive": "<Objs><S>ab<X>in</X>cd<Y/>ef</S></Objs>",
    "deep-in-primitive": "<Objs><S>a" + "<X>" * 200 + "</X>" * 200 + "b</S></Objs>",
    "deep-in-ignored-dct-part": '<Objs><Obj><DCT><En><S N="Key">k</S><Q>' + "<X>" * 200 + "</X>" * 200
                                + "</Q></En></DCT></Obj></Objs>",
    "depth-128": "<Objs>" + "<Obj><LST>" * 63 + "<S>x</S>" + "</LST></Obj>" * 63 + "</Objs>",
    "depth-129": "<Objs>" + "<Obj><LST>" * 64 + "</LST></Obj>" * 64 + "</Objs>",
    "deep-then-semantic": "<Objs>\n" + _DEEP + '\n<Obj RefId="0"><TNRef RefId="9" /></Obj>\n</Objs>',
    "semantic-then-deep": '<Objs>\n<Obj RefId="0"><TNRef RefId="9" /></Obj>\n' + _DEEP + "\n</Objs>",
    "semantic-inside-deep": "<Objs>\n" + '<Obj><LST><Ref RefId="x" />\n' + "<Obj><LST>" * 70
                            + "</LST></Obj>" * 70 + "</LST></Obj>\n</Objs>",
    "semantic-then-syntax": '<Objs>\n<Obj RefId="0"><TNRef RefId="9" /></Obj>\n<S>x</Bad>\n</Objs>',
    "syntax-then-semantic": '<Objs>\n<S>x</Bad>\n<Obj RefId="0"><TNRef RefId="9" /></Obj>\n</Objs>',
    "semantic-then-truncated": '<Objs>\n<Obj RefId="0"><TNRef RefId="9" /></Obj>\n<Obj>',
    "two-semantic": '<Objs>\n<Obj RefId="0"><TNRef RefId="8" /></Obj>\n<Obj RefId="1"><TNRef RefId="9" /></Obj></Objs>',
    "unbound-prefix": '<ps:Objs><ps:Obj RefId="0"><ps:TN RefId="0"><ps:T>A</ps:T></ps:TN>'
                      '<ps:Props><ps:S N="x">1</ps:S></ps:Props></ps:Obj></ps:Objs>',
    "bound-prefix": '<ps:Objs xmlns:ps="http://schemas.microsoft.com/powershell/2004/04"><ps:Obj RefId="0">'
                    '<ps:TN RefId="0"><ps:T>A</ps:T></ps:TN><ps:Props><ps:S N="x">1</ps:S></ps:Props></ps:Obj></ps:Objs>',
    "prefixed-attribute": '<Objs xmlns:a="urn:a"><Obj RefId="0"><TN RefId="0"><T>A</T></TN><Props>'
                          '<S N="x" a:N="y">1</S></Props></Obj></Objs>',
    "other-default-namespace": '<Objs xmlns="urn:other">' + _OBJ.format('<S N="x">1</S>') + "</Objs>",
    "duplicate-names": "<Objs>" + _OBJ.format('<S N="a">1</S><S N="A">2</S><S N="a">3</S>').replace(
        "</Props>", '</Props><MS><S N="A">4</S><S N="pscomputername">h</S><S N="PSComputerName">i</S></MS>') + "</Objs>",
    "computer-falsy": "<Objs>" + _OBJ.format('<S N="PSComputerName">adapted</S>').replace(
        "</Props>", '</Props><MS><Nil N="PSComputerName" /></MS>') + "</Objs>",
    "whitespace-text": "<Objs>\n  <S>  padded  </S>\n  <I32>\n 7 \n</I32>\n  <B> True </B>\n</Objs>",
    "top-level-ref": '<Objs><Obj RefId="0"><TN RefId="0"><T>A</T></TN><ToString>t</ToString></Obj>'
                     '<Ref RefId="0" /><Ref RefId="1" /></Objs>',
    "cyclic-ref": '<Objs><Obj RefId="0"><TN RefId="0"><T>A</T></TN><ToString>self</ToString><Props>'
                  '<Ref N="me" RefId="0" /></Props></Obj></Objs>',
    "tn-without-refid": '<Objs><Obj><TN><T>Deserialized.Deserialized.A</T><X/></TN><TNRef /></Obj></Objs>',
    "unicode-names": '<Objs><Obj><MS><S N="Ünïcødé_x0041_">é😀_x000A_</S><S N="ß">ss</S></MS></Obj></Objs>',
    "many-lines": "<Objs>\n" + "\n".join(f'<S>{i}</S>' for i in range(3000)) + '\n<Obj><Bogus/></Obj>\n</Objs>',
    "long-line-error": "<Objs>" + "<S>x</S>" * 20000 + "<S>y</Z></Objs>",
    "error-after-chunks": "<Objs>\n" + "<S>x</S>\n" * 20000 + '<Obj RefId="0"><TNRef RefId="9" /></Obj>\n</Objs>',
    "deep-after-chunks": "<Objs>\n" + "<S>x</S>\n" * 20000 + _DEEP + "\n</Objs>",
}
OBJECT_BODIES = {
    "obj": _OBJ.format('<S N="x">1</S>'),
    "objs": "<Objs/>",
    "obj-deep": "<Obj><LST>" * 70 + "</LST></Obj>" * 70,
    "obj-dtd": '<!DOCTYPE Obj [<!ENTITY a "a">]><Obj/>',
    "obj-truncated": '<Obj RefId="0"><TN RefId="0">',
    "obj-semantic": '<Obj RefId="0">\n<TNRef RefId="3" /></Obj>',
    "obj-list": '<Obj RefId="0"><TN RefId="0"><T>System.Object[]</T></TN><LST><S>a</S><I32>1</I32></LST></Obj>',
    "empty": "",
}


def _mutations(sample: bytes, rng: random.Random, count: int) -> list[bytes]:
    out = []
    for _ in range(count):
        data = bytearray(sample)
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(data))
            replacement = bytes(rng.choice(b"<>/&\"'=!?-[] \nabcSObjRefId0123456789\x00\xff")
                                for _ in range(rng.randint(1, 6)))
            data[at:at + len(replacement)] = replacement
        out.append(bytes(data))
    return out


@functools.lru_cache(maxsize=1)
def corpus() -> dict[str, Callable[[], Any]]:
    cases: dict[str, Callable[[], Any]] = {}

    def add_file(name: str, data: bytes) -> None:
        cases[name] = lambda: parse_clixml(data, source="ref.xml")

    def add_object(name: str, text: str) -> None:
        cases[name] = lambda: parse_object_xml(text, source="obj.xml")

    root = realdata_dir()
    for path in all_captures():
        name = path.relative_to(root).as_posix()
        data = path.read_bytes()
        add_file(f"capture {name}", data)
        text = data.decode("utf-8-sig")
        for encoding, bom in (("utf-16-le", b"\xff\xfe"), ("utf-16-be", b"\xfe\xff"), ("utf-16-le", b"")):
            add_file(f"{encoding}{'+bom' if bom else ''} {name}", bom + text.encode(encoding))
        start = text.find("<Obj ")
        if start >= 0:
            add_object(f"object {name}", text[start:text.rindex("</Objs>")].rstrip())
    for name in e19_exchange_captures():
        data = (e19_dir() / "Exchange" / name).read_bytes()
        add_file(f"wire {name}", to_wire_shape(data))
        live = to_wire_shape(data, deserialized=False).decode("utf-8-sig")
        add_file(f"wire-live {name}", live.encode("utf-8"))
        start = live.find('<Obj RefId="0">')
        if start >= 0:
            add_object(f"wire-object {name}", live[start:live.rindex("</Objs>")])
    add_file("mailboxes 300", _mailboxes(300))
    for name, body in ODD_BODIES.items():
        add_file(f"odd {name}", body.encode("utf-8"))
    for name, body in OBJECT_BODIES.items():
        add_object(f"odd-object {name}", body)
    rng = random.Random(18)
    samples = all_captures()[:8] + [e19_dir() / "Exchange" / n for n in e19_exchange_captures()[:4]]
    for path in samples:
        data = path.read_bytes()
        for index, fraction in enumerate(rng.random() for _ in range(12)):
            add_file(f"truncated {path.name} {index}", data[: int(len(data) * fraction)])
        for index, mutated in enumerate(_mutations(data, rng, 25)):
            add_file(f"mutated {path.name} {index}", mutated)
    mailboxes = _mailboxes(40)
    for index, mutated in enumerate(_mutations(mailboxes, rng, 40)):
        add_file(f"mutated mailboxes {index}", mutated)
    return cases


def _reference() -> dict[str, str]:
    return json.loads(REFERENCE.read_text(encoding="utf-8"))


def test_the_corpus_is_the_recorded_one():
    assert sorted(corpus()) == sorted(_reference())


@pytest.mark.parametrize("chunk", range(4))
def test_every_input_reads_as_it_did_before_the_rewrite(chunk):
    """Objects identical value for value and type for type; errors identical to the character (line included)."""
    reference = _reference()
    names = sorted(corpus().items())[chunk::4]
    seen = {name: outcome(parse) for name, parse in names}
    differ = sorted(name for name, fingerprint in seen.items() if fingerprint != reference.get(name))
    assert not differ, f"{len(differ)} inputs read differently from the reference: {differ[:20]}"


def test_cuts_anywhere_read_the_same(monkeypatch):
    """The streaming reader converts what is complete at each cut of the text: cuts every 61 characters (inside
    tags, names, escapes and surrogate pairs' escapes) change nothing, on the inputs most likely to show it."""
    monkeypatch.setattr(clixml, "_CHUNK", 61)
    reference = _reference()
    names = [(name, parse) for name, parse in sorted(corpus().items())
             if name.startswith(("capture", "odd", "mailboxes", "wire "))]
    differ = sorted(name for name, parse in names if outcome(parse) != reference[name])
    assert not differ, f"{len(differ)} inputs read differently with 61-character cuts: {differ[:20]}"


def write_reference() -> None:
    recorded = {name: outcome(parse) for name, parse in sorted(corpus().items())}
    REFERENCE.write_text(json.dumps(recorded, indent=0, sort_keys=True) + "\n", encoding="utf-8")
    print(f"{len(recorded)} inputs recorded in {REFERENCE}")


if __name__ == "__main__":
    write_reference()
