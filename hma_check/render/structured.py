"""findings.json: the whole result, machine-readable, with the SHA-256 of the evidence and checks it came from."""

from __future__ import annotations

from dataclasses import asdict

from hma_check.render.model import Report
from hma_check.contract.snapshot import json_lines

SCHEMA_VERSION = 2   # 2: the NOTE status; excerpt as {property path: value}; failing; causes
FACT_LIMIT = 1000   # per source: a 50,000-user tenant can change thousands of users between two runs


def render(report: Report) -> bytes:
    header = {
        "schema_version": SCHEMA_VERSION,
        "verdict": report.verdict,
        "verdict_text": report.verdict_text,
        "exit_code": report.exit_code,
        "hma_state": report.hma_state,
        "counts": report.counts,
        "counts_by_severity": report.severity_counts,
        "metadata": report.metadata,
        "runbook": {
            "enable": [dict(entry.to_json(), rollback=None) for phase in report.enable_phases
                       for entry in phase["entries"]],
            "rollback": [{"phase": entry.phase, "origin": entry.origin, "title": entry.title,
                          "subject": entry.subject, "rollback": entry.rollback}
                         for phase in report.rollback_phases for entry in phase["entries"]],
        },
        "not_collected": [asdict(gap) for gap in report.gaps],
        "unused_exemptions": report.unused_exemptions,
        "kind": report.kind,
    }
    if report.kind == "validation":
        header["baseline"] = report.baseline
        header["notes"] = report.notes
        if report.changes is not None:
            header["changes_since_baseline"] = {
                "fact_changes": [c.to_json() for group in report.changes.fact_groups(FACT_LIMIT)
                                 for c in group["changes"]],
                "fact_changes_total": len(report.changes.facts), "facts_note": report.changes.facts_note}
    # One finding per line, last: people scroll to them, tools read the whole document.
    return json_lines(header, "findings", [f.to_json() for f in report.findings])
