"""Geometry for the report's inline SVG charts; the template draws it (with autoescaping, so labels are safe)."""

from __future__ import annotations

from typing import Any

from hma_check.contract.findings import STATUSES
from hma_check.render.model import Report

COLORS = {"FAIL": "#c62828", "ERROR": "#6a1b9a", "WARN": "#e67700", "EXEMPT": "#1565c0", "PASS": "#2e7d32",
          "NOT_APPLICABLE": "#9e9e9e"}
BAR_WIDTH = 520
CELL = 16


def area_bars(report: Report) -> dict[str, Any]:
    """One 100% stacked bar per area, segments in STATUSES order."""
    rows = []
    for index, area in enumerate(report.areas):
        total = sum(area.counts.values()) or 1
        x = 0.0
        segments = []
        for status in STATUSES:
            count = area.counts[status]
            if not count:
                continue
            width = BAR_WIDTH * count / total
            segments.append({"status": status, "count": count, "x": round(x, 2), "width": round(width, 2),
                             "color": COLORS[status]})
            x += width
        rows.append({"title": area.title, "y": index * 28, "segments": segments, "total": sum(area.counts.values())})
    # about 6.6 px per character at the 12 px label size; long area titles get room instead of being clipped
    label_width = min(460, max([len(area.title) for area in report.areas] + [20]) * 6.6 + 12)
    return {"rows": rows, "height": len(rows) * 28 + 4, "bar_width": BAR_WIDTH, "label_width": round(label_width)}


def matrix(report: Report) -> dict[str, Any]:
    m = report.matrix
    label_width = max([len(name) for name in m.servers] + [6]) * 7 + 12
    header = max([len(c["id"]) for c in m.checks] + [6]) * 6 + 10
    cells = []
    for row, server in enumerate(m.servers):
        for column, check in enumerate(m.checks):
            status = m.cells.get(server, {}).get(check["id"])
            cells.append({"x": label_width + column * CELL, "y": header + row * CELL, "status": status,
                          "color": COLORS.get(status or "", "#eeeeee"), "server": server, "check": check["id"],
                          "title": check["title"]})
    return {
        # rotated column labels lean right past the last column: leave room for them
        "width": label_width + len(m.checks) * CELL + header // 2 + 10, "height": header + len(m.servers) * CELL + 6,
        "label_width": label_width, "header": header, "cell": CELL, "cells": cells,
        "rows": [{"name": name, "y": header + index * CELL + CELL - 4} for index, name in enumerate(m.servers)],
        "columns": [{"id": c["id"], "x": label_width + index * CELL + CELL / 2, "title": c["title"]}
                    for index, c in enumerate(m.checks)],
    }
