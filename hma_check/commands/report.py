"""hma-check report: evaluate saved evidence and write every output."""

from __future__ import annotations

import sys

import click

from hma_check.commands.common import report_options


@click.command(epilog="""\b
Examples:
  hma-check report --evidence out/run1/evidence.json --out out/run1
  hma-check report --evidence evidence.json --checks site-checks.yaml --exemptions cab-2291.yaml --out report/
\b
Writes report.html, report.md, junit.xml, findings.json, enable.ps1, rollback.ps1, action-plan.csv (report.pdf
with --pdf), a copy of the evidence and of your checks and exemptions files, and last manifest.json (the SHA-256
of every file; check it with 'hma-check verify', sign it with 'hma-check sign').
Exit code: 0 READY, 1 NOT_READY, 3 INCOMPLETE, 2 bad input, 4 nothing was collected.""")
@click.option("--evidence", "evidence", required=True, type=click.Path(dir_okay=False, path_type=str),
              help="evidence.json written by a scan or an import.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=str),
              help="Folder for the outputs (created if needed).")
@click.option("--checks", "checks_files", multiple=True, type=click.Path(dir_okay=False, path_type=str),
              help="An extra checks file (repeatable); added to the shipped catalogue.")
@click.option("--no-builtin-checks", is_flag=True, help="Evaluate only the --checks files.")
@click.option("--exemptions", "exemptions_file", type=click.Path(dir_okay=False, path_type=str),
              help="Exemptions approved by your change board (check, subject, reason, approved_by, expires).")
@click.option("--as-of", "as_of", metavar="DATE", help="Evaluate dates (certificate expiry, exemptions) as of this "
              "UTC date instead of the evidence's collection time, e.g. 2027-01-15.")
@report_options
def report(evidence: str, out_dir: str, checks_files: tuple[str, ...], no_builtin_checks: bool,
           exemptions_file: str | None, as_of: str | None, **options: bool) -> None:
    """Evaluate an evidence file and write the readiness report and runbooks."""
    from hma_check.commands.common import fail_on_input_errors, print_outcome, report_kwargs
    from hma_check.commands.pipeline import run_report

    from hma_check.contract.snapshot import parse_utc

    when = None
    if as_of:
        try:
            when = parse_utc(as_of)   # evidence's own reading of a date: a stated offset is converted, none is UTC
        except ValueError:
            raise click.BadParameter(f"not a date: {as_of!r} (use YYYY-MM-DD)", param_hint="--as-of") from None
    with fail_on_input_errors():
        outcome = run_report(evidence, out_dir, list(checks_files), exemptions_file,
                             builtin_checks=not no_builtin_checks, as_of=when, **report_kwargs(**options))
    print_outcome(outcome)
    sys.exit(outcome.exit_code)
