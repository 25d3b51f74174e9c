"""action-plan.csv: one row per finding to act on (and per user a client finding affects), with owner and due date
left empty for the change board."""

from __future__ import annotations

import csv
import io
import re

from hma_check.evaluate.checks import PHASES
from hma_check.contract.findings import ERROR, FAIL, WARN
from hma_check.render.model import SEVERITY_RANK, STATUS_RANK, Report

COLUMNS = ("check", "title", "severity", "status", "subject", "found", "fix phase", "owner", "due date", "notes")
ACTIONABLE = (FAIL, ERROR, WARN)
# A cell starting with one of these is a formula to Excel and LibreOffice (OWASP "CSV injection"): a value from the
# customer's environment must stay text, so it gets a leading apostrophe, which both show as text and hide.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r", ";")
# Where the locale's list separator is ';' (much of Europe), Excel splits a comma-separated file at every ';', quoted or
# not, so a ';' inside a value starts a new cell there: one that begins like a formula gets the apostrophe too.
_FORMULA_AFTER_SEMICOLON = re.compile(r';(?=[\s"]*[=+\-@])')
BOM = "\ufeff"   # without it Excel reads UTF-8 as the ANSI code page and mangles non-ASCII names


def cell(value: object) -> str:
    text = " ".join(str(value if value is not None else "").split())
    text = _FORMULA_AFTER_SEMICOLON.sub(";'", text)
    return "'" + text if text.startswith(FORMULA_START) else text


def _user_found(user: dict[str, str]) -> str:
    kind = user.get("kind")
    return f"{kind}: {user.get('found', '')}" if kind else user.get("found", "")


def render(report: Report) -> bytes:
    """Blockers first, then by status: FAIL, then ERROR (a blocker that could not be decided also blocks READY),
    then WARN. Exempt findings are approved already and are not listed."""
    rows = sorted((f for f in report.findings if f.status in ACTIONABLE),
                  key=lambda f: (SEVERITY_RANK.get(f.severity, 9), STATUS_RANK.get(f.status, 9)))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for finding in rows:
        found = f"not decided: {finding.reason}" if finding.status == ERROR else finding.actual
        phase = f"{finding.phase}: {PHASES.get(finding.phase, '')}" if finding.phase else ""
        writer.writerow([cell(v) for v in (finding.check_id, finding.title, finding.severity, finding.status,
                                           finding.subject, found, phase, "", "", "")])
        # The users a client finding affects, one row each, so the change board can assign and track them.
        for user in finding.affected or []:
            writer.writerow([cell(v) for v in (finding.check_id, finding.title, finding.severity, finding.status,
                                               user.get("user", ""), _user_found(user), phase, "", "", "")])
    return (BOM + buffer.getvalue()).encode("utf-8")
