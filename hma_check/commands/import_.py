"""hma-check import: build the evidence from the collection script's folder or zip (or any Export-Clixml files), then the report."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from hma_check.commands.common import report_options


@click.command("import", epilog="""\b
Examples:
  hma-check import HmaReadiness-20260302-100000.zip --out out/contoso
  hma-check import captures/ --out out/lab --exemptions cab-2291.yaml
  hma-check import 'C:\\Program Files\\Microsoft\\Exchange Server\\V15\\Logging\\HttpProxy' --out out/clients
  hma-check import logs.zip --out out/clients --pseudonymise-users     user names as keyed hashes
\b
Then, to evaluate the same evidence again (other checks, exemptions or --as-of):
  hma-check report --evidence out/contoso/evidence.json --out out/contoso-rerun
Exit code: 0 READY, 1 NOT_READY, 3 INCOMPLETE, 2 unreadable PATH or bad input, 4 nothing in PATH is evidence.""")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for evidence.json and the report (created if needed).")
@click.option("--checks", "checks_files", multiple=True, type=click.Path(dir_okay=False, path_type=str),
              help="An extra checks file (repeatable); added to the shipped catalogue.")
@click.option("--exemptions", "exemptions_file", type=click.Path(dir_okay=False, path_type=str),
              help="Exemptions approved by your change board.")
@click.option("--owa-ecp", is_flag=True,
              help="Also assess HMA for Outlook on the web and the EAC (the optional owa-ecp area).")
@click.option("--pseudonymise-users", is_flag=True,
              help="Replace the user names read from HttpProxy logs with a keyed hash (a new key each run, never "
                   "stored): the Clients section and the action plan then name no one.")
@report_options
def import_(path: Path, out_dir: Path, checks_files: tuple[str, ...], exemptions_file: str | None,
            owa_ecp: bool, pseudonymise_users: bool, **options: bool) -> None:
    """Import PATH (a folder or .zip from Collect-HmaReadiness.ps1, or any Export-Clixml files and Exchange
    HttpProxy logs, plain or .gz) and report.

    Files are recognised by the object types inside, not by their names. Files hma-check does not read are listed
    and skipped; malformed ones are listed with the reason; sources no file supplied are recorded as skipped, so
    the checks that need them are ERROR, never PASS.
    """
    from hma_check.collect.offline.importer import import_path
    from hma_check.collect.options import ScanOptions
    from hma_check.commands.common import fail_on_input_errors, print_outcome, report_kwargs
    from hma_check.errors import one_line
    from hma_check.contract.findings import EXIT_NOTHING_COLLECTED
    from hma_check.commands.pipeline import run_report

    def echo(text: str) -> None:
        click.echo(one_line(text), err=True)  # file names and reasons come from the customer's files

    with fail_on_input_errors():
        options = report_kwargs(**options)   # a missing browser for --pdf fails before anything is imported
        outcome = import_path(path, ScanOptions(owa_ecp=owa_ecp), pseudonymise_users=pseudonymise_users)
        evidence = out_dir / "evidence.json"
        outcome.snapshot.save(evidence)
        echo(f"imported {path}: {len(outcome.recognised)} recognised, {len(outcome.unrecognised)} skipped, "
             f"{len(outcome.malformed)} malformed")
        for item in outcome.unrecognised:
            echo(f"skipped: {item['file']}: {item['reason']}")
        for item in outcome.malformed:
            echo(f"malformed: {item['file']}: {item['reason']}")
        logs = outcome.snapshot.sources.get("logs.httpproxy")
        if logs is not None and logs.ok:
            bad = logs.data["malformed"]
            first = (f" (first: {bad['examples'][0]['file']} line {bad['examples'][0]['line']}: "
                     f"{bad['examples'][0]['reason']})") if bad["examples"] else ""
            echo(f"HttpProxy logs: {logs.data['files']} file(s), {logs.data['requests']} requests from "
                 f"{logs.data['window']['first']} to {logs.data['window']['last']}; {bad['lines']} malformed "
                 f"line(s) counted and skipped{first}")
        echo(f"evidence: {evidence}")
        if not outcome.snapshot.collected_anything():
            echo("nothing hma-check reads was found in the import; no report written")
            sys.exit(EXIT_NOTHING_COLLECTED)
        result = run_report(evidence, out_dir, list(checks_files), exemptions_file, **options)
    print_outcome(result)
    sys.exit(result.exit_code)
