"""report.md: the report for tickets and change requests."""

from __future__ import annotations

from hma_check.render.templating import render_template
from hma_check.render.model import Report


def render(report: Report) -> str:
    return render_template("validation.md.j2" if report.kind == "validation" else "report.md.j2", report=report)
