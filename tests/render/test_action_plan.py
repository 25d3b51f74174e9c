"""action-plan.csv: every FAIL, ERROR and WARN once, columns to fill, Excel-safe (BOM, no formula injection)."""

from __future__ import annotations

import csv
import io

from tests.support import baseline
from tests.support.baseline import apply_ops
from hma_check.evaluate.engine import evaluate
from hma_check.contract.findings import ERROR, FAIL, WARN
from hma_check.render import action_plan
from hma_check.render.model import build_report

FORMULA_SERVER = "=HYPERLINK(\"http://evil\",\"EX1\")"


def plan_of(catalogue, snapshot):
    report = build_report(evaluate(catalogue, snapshot), exit_code=1, evidence_sha256="0" * 64)
    payload = action_plan.render(report)
    return report, payload, list(csv.reader(io.StringIO(payload.decode("utf-8-sig"), newline="")))


def test_every_finding_to_act_on_is_one_row_with_owner_and_due_date_to_fill(catalogue):
    snapshot = apply_ops(baseline.build(server_names=("EX01", "Zürich-EX02")), [
        {"fail": "os.tls_registry@EX01"},
        {"set": ["exchange.outlook_anywhere@Zürich-EX02", 0, "SSLOffloading"], "to": True}])
    report, payload, rows = plan_of(catalogue, snapshot)
    assert payload.startswith(b"\xef\xbb\xbf") and b"\r\n" in payload
    header, *body = rows
    assert header == ["check", "title", "severity", "status", "subject", "found", "fix phase", "owner", "due date",
                      "notes"]
    expected = [f for f in report.findings if f.status in (FAIL, ERROR, WARN)]
    assert len(body) == len(expected) == report.counts[FAIL] + report.counts[ERROR] + report.counts[WARN]
    assert {(r[0], r[4], r[3]) for r in body} == {(f.check_id, f.subject, f.status) for f in expected}
    assert all(r[7:] == ["", "", ""] for r in body)
    severities = [r[2] for r in body]
    assert severities == sorted(severities, key=["blocker", "warning", "info"].index), "blockers first"
    offload = next(r for r in body if r[4] == "Zürich-EX02" and r[3] == FAIL)
    assert offload[6].startswith("1: ") and "SSLOffloading True" in offload[5]
    error = next(r for r in body if r[3] == ERROR)
    assert error[5].startswith("not decided: ") and "os.tls_registry@EX01" in error[5]


def test_values_from_the_environment_cannot_become_formulas(catalogue):
    snapshot = apply_ops(baseline.build(server_names=(FORMULA_SERVER, "EX02")), [
        {"set": [f"exchange.mapi_virtual_directories@{FORMULA_SERVER}", 0, "IISAuthenticationMethods"],
         "to": ["Ntlm", "Negotiate"]}])
    _, _, rows = plan_of(catalogue, snapshot)
    cells = [cell for row in rows[1:] for cell in row]
    assert "'" + FORMULA_SERVER in cells
    assert not any(cell.startswith(("=", "+", "-", "@")) for cell in cells)
    assert action_plan.cell("-1+2") == "'-1+2" and action_plan.cell("@SUM(A1)") == "'@SUM(A1)"
    assert action_plan.cell("\t=1") == "'=1" and action_plan.cell("line\r\nbreak") == "line break"


def test_a_ready_organization_has_an_empty_plan_with_its_header(catalogue):
    report, _, rows = plan_of(catalogue, baseline.build())
    assert report.verdict == "READY" and rows == [list(action_plan.COLUMNS)]
