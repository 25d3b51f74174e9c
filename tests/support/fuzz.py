"""Hypothesis strategies for hostile files, and the bounds every fuzzed run must keep (tests/*/test_fuzz_*.py).

A fuzzed file starts from a real one (a checks file, evidence, a manifest, an Export-Clixml capture...) and is damaged
the ways files are: bytes inserted, deleted or replaced, hostile snippets spliced in, cut short; for JSON also a value
anywhere in the document replaced by another of any type, or a key removed.
"""

from __future__ import annotations

import json
import os
import re
import resource
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

# Modest example counts: the whole suite must stay within its time budget on two cores. FUZZ for surfaces whose
# examples mostly stop at the first error; HEAVY where most examples run a whole command that loads the catalogue
# and writes a report (a second or so each). HMA_CHECK_FUZZ_SCALE=10 (say) runs ten times as many, for a deeper
# search by hand; every example keeps its time and memory bounds whatever the count.
SCALE = max(1.0, float(os.environ.get("HMA_CHECK_FUZZ_SCALE", "1")))


def examples(count: int) -> int:
    return round(count * SCALE)


FUZZ = settings(max_examples=examples(25), deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large, HealthCheck.filter_too_much])
HEAVY = settings(FUZZ, max_examples=examples(6))

YAML_SNIPPETS = [b"[" * 300, b"{a: " * 100, b"9" * 5000, b"2020-02-30", b"0001-01-01 00:00:00 +01:00", b"*a",
                 b"&a ", b"!!binary aGk=", b"!!python/object/apply:os.system [ls]", b"\x00", b"\xff\xfe", b"\t",
                 b"---\n", b": ", b"- ", b"\n  ", b"'", b'"', b"\\ud800", b".inf", b".nan", b"1" + b":1" * 500,
                 b"? [a]\n: b\n", b"!!set {a}", b"\xef\xbb\xbf", "\ufffe\u2028".encode(), b"%YAML 1.1\n", b"<<: *a"]
JSON_SNIPPETS = [b'"\\ud800"', b"1e999", b"NaN", b"-Infinity", b"[" * 3000, b'{"a":1,"a":2}', b"\x00", b"\xff",
                 b'"\\u0000"', b"9" * 5000, b"true", b"null", b"{}", b"[]", '"\ufffe"'.encode("utf-8")]
XML_SNIPPETS = [b"<!DOCTYPE x [<!ENTITY a 'b'>]>", b"<Obj RefId=\"0\">", b"<Ref RefId=\"0\" />", b"<C>55296</C>",
                b"<C>99999999</C>", b"<I32>99999999999999999999</I32>", b"<DT>0001-01-01T00:00:00+01:00</DT>",
                b"<LST>" * 200, b"\xff", b"\x00", b"_xD800_", b"<S>\x01</S>", b"</Objs>", b"<Objs>", b"<BA>!!</BA>",
                b"<TNRef RefId=\"9\" />", b"<DCT><En><S N=\"Key\">a</S></En></DCT>"]


@st.composite
def damaged(draw: Any, seed: bytes, snippets: list[bytes]) -> bytes:
    """``seed`` with a few edits: splice a snippet or random bytes, delete a run, or cut the file short."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(0, 4))):
        at = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(("snippet", "bytes", "delete", "cut")))
        if kind == "snippet":
            data[at:at] = draw(st.sampled_from(snippets))
        elif kind == "bytes":
            data[at:at + draw(st.integers(0, 4))] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[at:at + draw(st.integers(1, 64))]
        else:
            del data[at:]
    return bytes(data)


def json_values() -> st.SearchStrategy[Any]:
    """Any JSON value, with the odd ones files meet: huge and negative numbers, odd text, deep nesting."""
    scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2 ** 70), 2 ** 70), st.floats(allow_nan=False,
                        allow_infinity=False), st.text(max_size=30),
                        st.sampled_from(["", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "\ufffe",
                                         "\u2028x", "a\nb", "../x", "/etc/passwd", "x" * 500, "EX01", "ok", "error",
                                         "READY", "0" * 64]))
    return st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                          st.dictionaries(st.text(max_size=12), inner, max_size=4)),
                        max_leaves=12)


@st.composite
def json_mutated(draw: Any, document: Any) -> Any:
    """``document`` (plain JSON data) with a few values replaced by any JSON value, or keys removed."""
    document = json.loads(json.dumps(document))
    for _ in range(draw(st.integers(1, 3))):
        path: list[Any] = []
        node = document
        while isinstance(node, (dict, list)) and node and draw(st.integers(0, 3)):
            key = draw(st.sampled_from(sorted(node) if isinstance(node, dict) else range(len(node))))
            path.append(key)
            node = node[key]
        if not path:
            document = draw(json_values()) if draw(st.integers(0, 9)) == 0 else document
            continue
        parent = document
        for key in path[:-1]:
            parent = parent[key]
        if isinstance(parent, dict) and draw(st.booleans()):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(json_values())
    return document


# ------------------------------------------------------------------------------------------------------ bounds

def _address_space() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


@contextmanager
def memory_bound(extra_mb: int = 1024) -> Iterator[None]:
    """The block may grow the address space by ``extra_mb`` at most: past it, allocation fails with MemoryError
    (which the command-line helper reports as a traceback), instead of the machine swapping."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = _address_space() + extra_mb * 1024 * 1024
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


_POSITION = re.compile(r":(\d+): ")


def check_position(message: str, file: Path) -> None:
    """A 'file:N:' in an error must be a line of that file."""
    match = _POSITION.search(message.split(str(file), 1)[1]) if str(file) in message else None
    if match and file.is_file():
        lines = file.read_bytes().count(b"\n") + 1
        assert 1 <= int(match.group(1)) <= lines + 1, (message, lines)


def written(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) if folder.exists() else []


def fresh(root: Path, name: str) -> Path:
    """A path under ``root`` that no earlier example used (hypothesis reuses the test's tmp_path)."""
    index = 0
    while (root / f"{name}-{index}").exists() or (root / f"{name}-{index}.out").exists():
        index += 1
    return root / f"{name}-{index}"
