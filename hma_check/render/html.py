"""report.html: one self-contained file (inline CSS and SVG, no external asset) that also prints cleanly."""

from __future__ import annotations

from hma_check.render import charts
from hma_check.render.diff import HTML_FACT_LIMIT as FACT_LIMIT
from hma_check.render.templating import render_template
from hma_check.render.model import Report


def render(report: Report) -> str:
    if report.kind == "validation":
        return render_template("validation.html.j2", report=report, fact_limit=FACT_LIMIT)
    return render_template("report.html.j2", report=report, bars=charts.area_bars(report),
                           matrix=charts.matrix(report), colors=charts.COLORS)
