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
    """A click progress bar for one collector, drawn on stderr, with the time left.

    It never counts backwards or past its total: a collector that finds more work after starting (a query handed
    back, a second start) makes the total grow, never the count restart or run past it."""

    def __init__(self, section: str, file: Any = None) -> None:
        self.section = section
        self.file = file or sys.stderr
        self.bar: Any = None

    def start(self, total: int) -> None:
        if self.bar is not None:
            self.bar.length = max(self.bar.length, total)    # announced again: never less than done or before
            return
        self.bar = click.progressbar(length=max(1, total), label=f"{self.section:<9}", file=self.file, width=30,
                                     show_pos=True, show_eta=True)
        self.bar.__enter__()

    def advance(self, label: str, ok: bool) -> None:
        if self.bar is None:
            self.start(1)
        if self.bar.pos >= self.bar.length:
            self.bar.length = self.bar.pos + 1      # more than announced: the total grows with it
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
    from hma_check.commands.pipeline import load_inputs, run_report
    from hma_check.util.atomic import check_folder

    # Bad checks, exemptions or --baseline: one line and exit 2 before anything is collected or written.
    report = dict(report or {})
    load_inputs(out_dir, list(checks_files), exemptions_file, after_enable=bool(report.get("after_enable")),
                baseline=report.get("baseline"))
    check_folder(out_dir)   # an --out that cannot be a folder fails now, not after the scan
    snapshot = run_collectors(config, secrets=secrets, prompt=prompt, progress=progress_factory())
    evidence = out_dir / "evidence.json"
    snapshot.save(evidence)
    print_summary(snapshot)
    if not snapshot.collected_anything():
        print_causes(snapshot)
        click.echo(f"evidence: {evidence}", err=True)
        click.echo("nothing could be collected; no report written (see above)", err=True)
        return EXIT_NOTHING_COLLECTED
    # A configuration written into the output folder (the demo's) is part of the run's record.
    config_file = Path(config.source)
    covered = [config_file] if config_file.parent.resolve() == out_dir.resolve() else []
    covered += inputs() if inputs is not None else []
    outcome = run_report(evidence, out_dir, list(checks_files), exemptions_file, covered=covered, **report)
    print_causes(snapshot, outcome.report)
    click.echo(f"evidence: {evidence}", err=True)
    print_outcome(outcome)
    return outcome.exit_code


def print_summary(snapshot: Any) -> None:
    """Per collector: how many sources came back ok, error, skipped."""
    rows: dict[str, dict[str, int]] = {}
    for result in snapshot.sources.values():
        area = result.name.split(".", 1)[0]
        rows.setdefault(area, {"ok": 0, "error": 0, "skipped": 0})[result.status] += 1
    click.echo(f"{'collector':<10} {'ok':>6} {'error':>6} {'skipped':>8}", err=True)
    for area in sorted(rows):
        counts = rows[area]
        click.echo(f"{area:<10} {counts['ok']:>6} {counts['error']:>6} {counts['skipped']:>8}", err=True)


def print_causes(snapshot: Any, report: Any = None, limit: int = 20) -> None:
    """One line per root cause of the errors (a wrong password is one line, not one per source), with how many
    checks it left undecided when the report is there."""
    from hma_check.errors import one_line

    causes = root_causes(snapshot)
    for cause in causes[:limit]:
        if report is not None:
            tally = f"{sum(1 for f in report.findings if cause.explains(f))} checks not run"
        else:
            tally = f"{len(cause.keys)} sources not collected"
        followers: dict[str, int] = {}
        for area, count in cause.followers:
            followers[area] = followers.get(area, 0) + count
        also = " (so no " + ", ".join(f"{area} ({count} sources)" for area, count in followers.items()) + ")" \
            if followers else ""
        said = cause.message if cause.message.startswith(f"{cause.area}:") else f"{cause.area}: {cause.message}"
        click.echo(one_line(f"{said} — {tally}{also}", 500), err=True)
    if len(causes) > limit:
        click.echo(f"... and {len(causes) - limit} more causes: see the report's 'What could not be collected'",
                   err=True)


class Cause:
    """Sources that failed for one reason, and the sections that could not run because of them."""

    def __init__(self, area: str, message: str) -> None:
        self.area = area
        self.message = message
        self.keys: list[str] = []
        self.followers: list[tuple[str, int]] = []     # (collector, sources) that could not run because of it

    def explains(self, finding: Any) -> bool:
        """A finding not decided because it read one of these sources."""
        if finding.status != "ERROR":
            return False
        keys = set(self.keys)
        names = {key.split("@", 1)[0] for key in keys}
        areas = {self.area, *(area for area, _ in self.followers)}
        for source in finding.sources:
            key = source["key"].split(" (", 1)[0]
            if source.get("status") == "ok":
                continue
            # a source never asked for ('not collected') in a collector that failed: the failure is why
            if key in keys or key in names or (source.get("status") == "not collected" and key.split(".", 1)[0] in areas):
                return True
        return False


def root_causes(snapshot: Any) -> list[Cause]:
    """The errors grouped by collector and message (a server's name in a message does not split a group); a
    group whose message quotes another group's message follows from it ('the OS facts are read per server, and
    exchange.servers was not collected (authentication failed ...)') and is named with it, not on its own."""
    groups: dict[tuple[str, str], Cause] = {}
    for result in snapshot.sources.values():
        if result.status != "error":
            continue
        area = result.name.split(".", 1)[0]
        message = (result.error or "no reason recorded").strip()
        if result.scope:
            message = message.replace(result.scope, "‹server›") if len(str(result.scope)) > 2 else message
        cause = groups.setdefault((area, message), Cause(area, message))
        cause.keys.append(result.key)
    causes = list(groups.values())
    roots: list[Cause] = []
    for cause in sorted(causes, key=lambda c: len(c.message)):
        root = next((r for r in roots if r.message in cause.message and r is not cause), None)
        if root is None:
            roots.append(cause)
        else:
            root.keys.extend(cause.keys)
            root.followers.append((cause.area, len(cause.keys)))
    for root in roots:
        scopes = [key.split("@", 1)[1] for key in root.keys if "@" in key and key.startswith(root.area + ".")]
        if "‹server›" in root.message and len(set(scopes)) == 1:
            root.message = root.message.replace("‹server›", scopes[0])
        elif "‹server›" in root.message:
            root.message = root.message.replace("‹server›", "each server") + f" ({len(set(scopes))} servers)"
    return roots
