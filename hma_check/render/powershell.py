"""enable.ps1 and rollback.ps1: the runbooks as reviewable PowerShell, values already quoted by the checks."""

from __future__ import annotations

from hma_check.render.templating import render_template
from hma_check.render.model import Report


def render_enable(report: Report) -> str:
    return render_template("enable.ps1.j2", report=report)


def render_rollback(report: Report) -> str:
    return render_template("rollback.ps1.j2", report=report)
