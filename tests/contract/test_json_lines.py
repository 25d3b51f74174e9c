"""The JSON writer of evidence.json and findings.json: orjson, with json for what orjson refuses; either way JSON
that reads back as written, one entry per line."""

from __future__ import annotations

import json

from hypothesis import given, strategies as st

from hma_check.contract.snapshot import dump_json as dump, json_lines

# what a finding holds: evidence values (any JSON), text with any character a scan may meet
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=30)


@given(JSON_VALUES)
def test_what_is_written_reads_back_as_it_was(value):
    assert json.loads(dump(value).decode("utf-8")) == value


def test_an_integer_beyond_64_bits_is_written_by_json_in_the_same_form():
    value = {"excerpt": {"MaxSize": 2**80, "Name": "EX01 — ‘a’"}, "n": [1, 2]}
    written = dump(value)
    assert json.loads(written) == value
    assert written == json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def test_one_finding_per_line():
    findings = [{"check_id": "HMA-A", "subject": "EX01\nEX02"}, {"check_id": "HMA-B", "excerpt": {"x": 2**70}}]
    text = json_lines({"verdict": "READY"}, "findings", findings).decode("utf-8")
    assert json.loads(text) == {"verdict": "READY", "findings": findings}
    lines = text.splitlines()
    assert [json.loads(line.strip().rstrip(",")) for line in lines[3:5]] == findings


def test_what_orjson_refuses_is_written_by_json():
    """Nesting deeper than orjson's limit (evidence may hold it) and a key that is not text."""
    deep: list = []
    inner = deep
    for _ in range(600):
        inner.append([])
        inner = inner[0]
    assert json.loads(dump(deep)) == deep
    assert dump({1: "a"}) == b'{"1":"a"}'


def test_what_json_refuses_is_still_refused():
    """A datetime or a dataclass in collected data is a collector's bug: refused as json refused it, never written
    as orjson would write it."""
    import dataclasses
    from datetime import datetime, timezone

    import pytest

    @dataclasses.dataclass
    class Fact:
        name: str

    for value in ({"when": datetime(2026, 12, 3, tzinfo=timezone.utc)}, [Fact("x")], {"x": object()}):
        with pytest.raises(TypeError):
            dump(value)


def test_nan_is_written_as_null_the_one_difference_from_json():
    """No reader of hma-check accepts NaN or an infinity and no collector makes one (CLIXML keeps .NET's text);
    were one to reach the writer, the file stays JSON."""
    assert dump({"x": float("nan"), "y": float("inf")}) == b'{"x":null,"y":null}'
