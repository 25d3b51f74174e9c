"""The report's summary chart: one 100% stacked bar per area, drawn in HTML so it scales to any width and prints."""

from __future__ import annotations

from typing import Any

from hma_check.contract.findings import STATUSES
from hma_check.render.model import Report


def area_bars(report: Report) -> list[dict[str, Any]]:
    """Per area: its id, title, total and the segments in STATUSES order, each with its share in percent."""
    bars = []
    for area in report.areas:
        total = sum(area.counts.values())
        segments = [{"status": status, "count": area.counts[status],
                     "percent": round(100 * area.counts[status] / total, 2)}
                    for status in STATUSES if area.counts.get(status)]
        bars.append({"id": area.id, "title": area.title, "total": total, "segments": segments})
    return bars
