"""A ``let`` that is the same for every item is evaluated once per check, and every finding still reads as if it
had been evaluated for that item: the same value or failure, the same cited sources, the same excerpt."""

from __future__ import annotations

import json
from collections import Counter

from hma_check.contract.findings import ERROR, PASS
from hma_check.evaluate import budget
from hma_check.evaluate.checks import load_checks
from hma_check.evaluate.engine import evaluate

CURRENT = "exchange.auth_config.CurrentCertificateThumbprint"


def check_text(check_id: str, lets: dict[str, str]) -> str:
    bound = "".join(f"      {name}: {json.dumps(source)}\n" for name, source in lets.items())
    return (f"  - id: {check_id}\n    title: t\n    area: a\n    severity: blocker\n"
            "    requires: [exchange.servers, exchange.auth_config]\n    for_each: exchange.servers\n"
            '    subject: "{{ item.Name }}"\n    let:\n' + bound
            + "    assert: \"current != '' and mine != ''\"\n    expect: x\n    actual: \"{{ mine }}\"\n"
            "    why: because\n    references: [https://learn.microsoft.com/x]\n")


def checks_with_lets(tmp_path, lets: dict[str, str], *more: dict[str, str]):
    path = tmp_path / "lets.yaml"
    path.write_text("version: 1\nchecks:\n" + "".join(
        check_text(f"TST-LET-{n:03d}", bound) for n, bound in enumerate([lets, *more], start=1)), encoding="utf-8")
    return load_checks([path])


def test_a_let_that_reads_no_item_is_evaluated_once_and_cited_by_every_finding(tmp_path, snapshot):
    checks = checks_with_lets(tmp_path, {"current": CURRENT, "mine": "item.Name ~ '/' ~ current"})
    evaluated: Counter[str] = Counter()
    with budget.observe(lambda _, source: evaluated.update([source])):
        findings = evaluate(checks, snapshot).findings
    servers = [s["Name"] for s in snapshot.sources["exchange.servers"].data]
    assert len(servers) >= 2 and [f.subject for f in findings] == servers
    assert evaluated[CURRENT] == 1                                # shared by every server
    assert evaluated["item.Name ~ '/' ~ current"] == len(servers)   # reads the item: once per server
    thumbprint = snapshot.sources["exchange.auth_config"].data["CurrentCertificateThumbprint"]
    for finding in findings:
        assert finding.status == PASS and finding.actual == f"{finding.subject}/{thumbprint}"
        assert "exchange.auth_config" in [source["key"] for source in finding.sources]
        assert finding.excerpt[CURRENT] == thumbprint


def test_the_same_let_in_another_check_is_evaluated_once_for_the_whole_evaluation(tmp_path, snapshot):
    """A binding with the same name and text, reading bindings with the same names and texts, has the same value in
    every check: evaluated once, and each check's findings read as if it had been evaluated there."""
    upper = "current | upper"
    checks = checks_with_lets(
        tmp_path, {"current": CURRENT, "shout": upper, "mine": "item.Name ~ '/' ~ shout"},
        {"current": CURRENT, "shout": upper, "mine": "item.Name ~ '/' ~ shout"},
        # the same text reading a binding of another text: a value of its own
        {"current": "(" + CURRENT + ") | lower", "shout": upper, "mine": "item.Name ~ '/' ~ shout"})
    evaluated: Counter[str] = Counter()
    with budget.observe(lambda _, source: evaluated.update([source])):
        findings = evaluate(checks, snapshot).findings
    servers = [s["Name"] for s in snapshot.sources["exchange.servers"].data]
    assert evaluated[CURRENT] == 1 and evaluated["(" + CURRENT + ") | lower"] == 1
    assert evaluated[upper] == 2                       # once for the first two checks, once for the third
    assert evaluated["item.Name ~ '/' ~ shout"] == 3 * len(servers)
    thumbprint = snapshot.sources["exchange.auth_config"].data["CurrentCertificateThumbprint"]
    by_check = {check: [f for f in findings if f.check_id == check] for check in ("TST-LET-001", "TST-LET-002")}
    for found in by_check.values():
        assert [f.subject for f in found] == servers
        for finding in found:
            assert finding.actual == f"{finding.subject}/{thumbprint.upper()}"
            assert "exchange.auth_config" in [source["key"] for source in finding.sources]
            assert finding.excerpt[CURRENT] == thumbprint
    assert [f.to_json() for f in by_check["TST-LET-001"]] == [
        dict(f.to_json(), check_id="TST-LET-001") for f in by_check["TST-LET-002"]]


def test_a_shared_let_that_fails_makes_every_item_error_with_the_same_reason(tmp_path, snapshot):
    checks = checks_with_lets(tmp_path, {"current": "exchange.auth_config.NoSuchProperty", "mine": "item.Name"})
    findings = evaluate(checks, snapshot).findings
    assert len(findings) >= 2 and {f.status for f in findings} == {ERROR}
    assert len({f.reason for f in findings}) == 1 and "NoSuchProperty" in findings[0].reason
    assert all("exchange.auth_config" in [source["key"] for source in f.sources] for f in findings)


def test_the_excerpt_of_saved_logs_lists_what_merging_every_log_lists():
    """tested_leaves with some logs saved (evaluated once for every item) gives exactly what merging every log and
    keeping its leaves gives: the same reads, the same values, in the same order."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from hma_check.evaluate.excerpts import tested_leaves
    from hma_check.evaluate.reads import SavedLog
    from tests.support.fuzz import FUZZ, examples

    paths = st.lists(st.sampled_from(["a", "b", 0, 1]), min_size=1, max_size=4).map(tuple)
    logs = st.lists(st.tuples(st.dictionaries(paths, st.integers(0, 3), max_size=12), st.booleans()), max_size=5)

    @settings(FUZZ, max_examples=examples(100))
    @given(logs=logs)
    def one(logs):
        plain = [log for log, _ in logs]
        merged: dict = {}
        for log in plain:
            for path, value in log.items():
                merged.setdefault(path, value)
        inner = {path[:n] for path in merged for n in range(1, len(path))}
        expected = [(path, value) for path, value in merged.items() if path not in inner]
        # a path read in two phases has one value: the evidence does not change while it is evaluated
        first = {path: value for path, value in reversed([e for log in plain for e in log.items()])}
        for log in plain:
            log.update({path: first[path] for path in log})
        mixed = [SavedLog(log) if saved else log for log, saved in logs]
        assert tested_leaves(mixed) == expected

    one()
