"""hma-check diff: what changed between two runs (statuses, verdict, facts), and whether anything got worse."""

from __future__ import annotations

import sys
from pathlib import Path

import click

EXIT_NOTHING_WORSE, EXIT_WORSE, EXIT_USAGE = 0, 1, 2


@click.command(epilog="""\b
Examples:
  hma-check diff out/2026-11-01 out/2026-11-20
  hma-check diff before/findings.json after/findings.json --html changes.html --json changes.json
\b
A finding is keyed by check and subject. "worse" means its status moved up PASS/N/A/EXEMPT -> WARN -> ERROR ->
FAIL, a new finding is WARN, ERROR or FAIL, or the verdict moved up READY -> INCOMPLETE -> NOT_READY. Facts are
compared when evidence.json is beside each findings.json.
Exit code: 0 nothing got worse; 1 something got worse; 2 usage error (a path that is not a run).""")
@click.argument("old", type=click.Path(path_type=Path))
@click.argument("new", type=click.Path(path_type=Path))
@click.option("--html", "html_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the comparison as an HTML page.")
@click.option("--json", "json_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the comparison as JSON.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(min=0),
              help="Fact changes shown per source in the terminal.")
def diff(old: Path, new: Path, html_file: Path | None, json_file: Path | None, limit: int) -> None:
    """Compare two runs: OLD and NEW are output folders or their findings.json files."""
    import json

    from hma_check.util.atomic import write_bytes_atomic
    from hma_check.commands.common import fail_on_input_errors
    from hma_check.render import diff as render
    from hma_check.runs.diff import compare, load_run

    with fail_on_input_errors():
        result = compare(load_run(old), load_run(new))
    for line in render.lines(result, fact_limit=limit):
        click.echo(line)
    if html_file:
        write_bytes_atomic(html_file, render.html(result).encode("utf-8"))
    if json_file:
        payload = json.dumps(result.to_json(), indent=1, ensure_ascii=False, default=str) + "\n"
        write_bytes_atomic(json_file, payload.encode("utf-8"))
    sys.exit(EXIT_WORSE if result.worse else EXIT_NOTHING_WORSE)
