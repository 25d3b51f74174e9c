"""Renderers: one Report in, the bytes of every output file out (nothing is written here)."""

from __future__ import annotations

from hma_check.render.model import Report


def render_all(report: Report) -> dict[str, bytes]:
    """A readiness report has runbooks; a validation report (--after-enable) is the short post-change record."""
    from hma_check.render import action_plan, html, junit, markdown, powershell, structured

    files = {
        "report.html": html.render(report).encode("utf-8"),
        "report.md": markdown.render(report).encode("utf-8"),
        "junit.xml": junit.render(report),
        "findings.json": structured.render(report),
    }
    if report.kind == "readiness":
        files["enable.ps1"] = powershell.render_enable(report).encode("utf-8")
        files["rollback.ps1"] = powershell.render_rollback(report).encode("utf-8")
    files["action-plan.csv"] = action_plan.render(report)
    return files
