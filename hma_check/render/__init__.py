"""Renderers: one Report in, the bytes of every output file out (nothing is written here)."""

from __future__ import annotations

from hma_check.report_model import Report


def render_all(report: Report) -> dict[str, bytes]:
    from hma_check.render import html, junit, markdown, powershell, structured

    return {
        "report.html": html.render(report).encode("utf-8"),
        "report.md": markdown.render(report).encode("utf-8"),
        "junit.xml": junit.render(report),
        "findings.json": structured.render(report).encode("utf-8"),
        "enable.ps1": powershell.render_enable(report).encode("utf-8"),
        "rollback.ps1": powershell.render_rollback(report).encode("utf-8"),
    }
