"""What ``scan`` and ``demo`` share: progress on a terminal, collect -> evidence.json -> report, a summary table."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Callable, Mapping

import click

from hma_check.contract.findings import EXIT_NOTHING_COLLECTED


def interactive() -> bool:
    """Progress bars only for a person watching: a terminal on stderr, and not a CI job."""
    return sys.stderr.isatty() and not os.environ.get("CI")


class _Bar:
    """A click progress bar for one collector, drawn on stderr."""

    def __init__(self, section: str) -> None:
        self.section = section
        self.bar: Any = None

    def start(self, total: int) -> None:
        self.bar = click.progressbar(length=total, label=f"{self.section:<9}", file=sys.stderr, width=30,
                                     show_pos=True, show_eta=False)
        self.bar.__enter__()

    def advance(self, label: str, ok: bool) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def finish(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


def progress_factory() -> Callable[[str], Any] | None:
    return (lambda section: _Bar(section)) if interactive() else None


def collect_and_report(config: Any, out_dir: Path, *, secrets: Mapping[str, str] | None = None,
                       checks_files: tuple[str, ...] = (), exemptions_file: str | None = None,
                       prompt: Callable[[str], str] | None = None, report: Mapping[str, Any] | None = None,
                       inputs: Callable[[], list[Path]] | None = None) -> int:
    """Run the collectors, save evidence.json, write the report; returns the exit code. ``report``: run_report's
    output options (--pdf, --after-enable, --baseline) from commands.common.report_kwargs. ``inputs``: writes more
    files into ``out_dir`` once collection is done (the demo's lab logs) and names them for the manifest."""
    from hma_check.collect.runner import run_collectors
    from hma_check.commands.common import print_outcome
    from hma_check.commands.pipeline import run_report

    snapshot = run_collectors(config, secrets=secrets, prompt=prompt, progress=progress_factory())
    evidence = out_dir / "evidence.json"
    snapshot.save(evidence)
    print_summary(snapshot)
    click.echo(f"evidence: {evidence}", err=True)
    if not snapshot.collected_anything():
        click.echo("nothing could be collected; no report written (see the errors above)", err=True)
        return EXIT_NOTHING_COLLECTED
    # A configuration written into the output folder (the demo's) is part of the run's record.
    config_file = Path(config.source)
    covered = [config_file] if config_file.parent.resolve() == out_dir.resolve() else []
    covered += inputs() if inputs is not None else []
    outcome = run_report(evidence, out_dir, list(checks_files), exemptions_file, covered=covered, **(report or {}))
    print_outcome(outcome)
    return outcome.exit_code


def print_summary(snapshot: Any) -> None:
    """Per collector: how many sources came back ok, error, skipped; then every error on one line each."""
    from hma_check.errors import one_line

    rows: dict[str, dict[str, int]] = {}
    for result in snapshot.sources.values():
        area = result.name.split(".", 1)[0]
        rows.setdefault(area, {"ok": 0, "error": 0, "skipped": 0})[result.status] += 1
    click.echo(f"{'collector':<10} {'ok':>6} {'error':>6} {'skipped':>8}", err=True)
    for area in sorted(rows):
        counts = rows[area]
        click.echo(f"{area:<10} {counts['ok']:>6} {counts['error']:>6} {counts['skipped']:>8}", err=True)
    errors = [r for r in snapshot.sources.values() if r.status == "error"]
    for result in errors[:50]:
        click.echo(one_line(f"error: {result.key}: {result.error}", 400), err=True)
    if len(errors) > 50:
        click.echo(f"... and {len(errors) - 50} more errors: see evidence.json", err=True)
