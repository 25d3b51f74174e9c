"""A 'where' that reads only the item has the same answer for the same item in every check: asked once per item
for the whole evaluation; one that reads the evidence is asked every time."""

from __future__ import annotations

import json
from collections import Counter

from hma_check.evaluate import budget
from hma_check.evaluate.checks import load_checks
from hma_check.evaluate.engine import evaluate


def checks_with_wheres(tmp_path, *wheres: str):
    text = "version: 1\nchecks:\n"
    for n, where in enumerate(wheres, start=1):
        text += (f"  - id: TST-WHERE-{n:03d}\n    title: t\n    area: a\n    severity: blocker\n"
                 "    requires: [exchange.servers, exchange.auth_config]\n    for_each: exchange.servers\n"
                 f"    where: {json.dumps(where)}\n    on_empty: not_applicable\n"
                 '    subject: "{{ item.Name }}"\n    assert: "true"\n    expect: x\n    actual: "{{ item.Name }}"\n'
                 "    why: because\n    references: [https://learn.microsoft.com/x]\n")
    path = tmp_path / "wheres.yaml"
    path.write_text(text, encoding="utf-8")
    return load_checks([path])


def test_an_item_only_where_is_asked_once_per_item_for_every_check(tmp_path, snapshot):
    servers = [s["Name"] for s in snapshot.sources["exchange.servers"].data]
    first = servers[0]
    item_only = f"item.Name != '{first}'"
    reads_evidence = f"item.Name != '{first}' and exchange.auth_config.CurrentCertificateThumbprint != ''"
    checks = checks_with_wheres(tmp_path, item_only, item_only, reads_evidence, reads_evidence)
    asked: Counter[str] = Counter()
    with budget.observe(lambda _, source: asked.update([source])):
        findings = evaluate(checks, snapshot).findings
    assert asked[item_only] == len(servers)               # once per server, for both checks
    assert asked[reads_evidence] == 2 * len(servers)      # reads a source: asked in each check
    for check in ("TST-WHERE-001", "TST-WHERE-002", "TST-WHERE-003", "TST-WHERE-004"):
        subjects = [f.subject for f in findings if f.check_id == check]
        assert subjects == servers[1:], (check, subjects)  # the first server filtered out in every check
    cited = {f.check_id: [s["key"] for s in f.sources] for f in findings}
    assert "exchange.auth_config" in cited["TST-WHERE-003"] and "exchange.auth_config" not in cited["TST-WHERE-001"]
