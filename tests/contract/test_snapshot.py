"""evidence.json: lossless save/load; malformed, truncated, hostile or newer files refused with one clear line."""

from __future__ import annotations

import json

import pytest

from tests.support import baseline
from hma_check.contract import sources
from hma_check.errors import EvidenceError
from hma_check.contract.snapshot import SCHEMA_VERSION, SourceResult, load_snapshot, loads_snapshot, timed


def test_save_and_load_are_lossless(tmp_path):
    original = baseline.build()
    path = tmp_path / "evidence.json"
    payload = original.save(path)
    loaded = load_snapshot(path)
    assert loaded.to_json() == original.to_json()
    assert loaded.dumps() == payload


def test_every_source_records_status_command_timing_and_who(tmp_path):
    document = json.loads(baseline.build().dumps())
    assert document["schema_version"] == SCHEMA_VERSION
    assert set(document["collected_by"]) == {"user", "host"}
    for key, source in document["sources"].items():
        assert {"name", "status", "command", "started", "duration_ms", "error", "data"} <= set(source), key


def test_timed_turns_an_exception_into_an_error_result():
    with timed("exchange.servers", "Get-ExchangeServer") as box:
        raise TimeoutError("the server did not answer within 60 s")
    result = box["result"]
    assert result.status == "error" and "TimeoutError" in result.error and result.data is None
    with timed("exchange.servers", "Get-ExchangeServer") as box:
        box["data"] = [{"Name": "EX01"}]
    assert box["result"].ok and box["result"].data == [{"Name": "EX01"}]


@pytest.mark.parametrize("mutate,fragment", [
    (lambda text: text[: len(text) - 40], "looks truncated"),
    (lambda text: "{not json", "not valid JSON"),
    (lambda text: text.replace('"schema_version": 1', '"schema_version": 99'), "newer hma-check"),
    (lambda text: text.replace('"schema_version": 1', '"schema_version": "one"'), "schema_version"),
    (lambda text: text.replace('"status":"ok"', '"status":"maybe"', 1), "status must be one of"),
    (lambda text: text.replace('"duration_ms":12', '"duration_ms":-5', 1), "duration_ms"),
    (lambda text: "[1, 2, 3]", "must be a JSON object"),
    (lambda text: text.replace('"duration_ms":12', '"duration_ms":NaN', 1), "not a number"),
])
def test_bad_evidence_is_one_line_naming_the_file(tmp_path, mutate, fragment):
    path = tmp_path / "evidence.json"
    path.write_text(mutate(baseline.build().dumps().decode()), encoding="utf-8")
    with pytest.raises(EvidenceError) as info:
        load_snapshot(path)
    text = str(info.value)
    assert fragment in text and str(path) in text and "\n" not in text


def test_an_error_source_must_say_why(tmp_path):
    document = json.loads(baseline.build().dumps())
    document["sources"]["exchange.servers"].update(status="error", error=None)
    with pytest.raises(EvidenceError, match="needs an error text"):
        loads_snapshot(json.dumps(document).encode())


def test_absurd_nesting_is_refused_without_recursion_error():
    deep = "[" * 100_000 + "]" * 100_000
    document = '{"schema_version": 1, "tool_version": "x", "collected_at": "2026-11-20T09:00:00Z", "sources": ' \
               '{"exchange.servers": {"name": "exchange.servers", "status": "ok", "command": "c", "started": "s", ' \
               '"duration_ms": 1, "error": null, "data": ' + deep + "}}}"
    with pytest.raises(EvidenceError, match="nested"):
        loads_snapshot(document.encode())


def test_hostile_control_characters_stay_on_one_line():
    document = json.loads(baseline.build().dumps())
    document["sources"]["evil\nkey"] = document["sources"].pop("exchange.servers")
    with pytest.raises(EvidenceError) as info:
        loads_snapshot(json.dumps(document).encode())
    assert "\n" not in str(info.value)


def test_source_results_round_trip_scope():
    result = SourceResult.error_result("os.tls_registry", "WinRM refused", command="Get-ItemProperty", scope="EX02")
    assert result.key == "os.tls_registry@EX02" and not result.ok


def test_docs_sources_md_is_generated_from_the_registry():
    from pathlib import Path

    docs = Path(__file__).resolve().parents[2] / "docs" / "sources.md"
    assert docs.read_text(encoding="utf-8") == sources.markdown(), "run: make docs"
