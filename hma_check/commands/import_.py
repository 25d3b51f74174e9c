"""hma-check import: build the evidence from the collection script's folder or zip (or any Export-Clixml files), then the report."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

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
            owa_ecp: bool, pseudonymise_users: bool, **options: Any) -> None:
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
    from hma_check.commands.pipeline import load_inputs, run_report
    from hma_check.util.atomic import check_folder

    def echo(text: str) -> None:
        click.echo(one_line(text), err=True)  # file names and reasons come from the customer's files

    with fail_on_input_errors():
        options = report_kwargs(**options)   # a missing browser for --pdf fails before anything is imported
        # Bad checks, exemptions or --baseline: one line and exit 2 before anything is imported or written.
        load_inputs(out_dir, list(checks_files), exemptions_file, after_enable=bool(options["after_enable"]),
                    baseline=options["baseline"])
        check_folder(out_dir)
        outcome = import_path(path, ScanOptions(owa_ecp=owa_ecp), pseudonymise_users=pseudonymise_users)
        evidence = out_dir / "evidence.json"
        outcome.snapshot.save(evidence)
        echo(f"imported {path}: {len(outcome.recognised)} recognised, {len(outcome.unplaced)} not placed on a server, "
             f"{len(outcome.unrecognised)} skipped, {len(outcome.malformed)} malformed")
        for item in outcome.unplaced:
            echo(f"not placed: {item['file']}: {item['source']}: {item['reason']}")
        # one line per reason, not per file: a folder of 300 unrelated files is one line
        for kind, items in (("skipped", outcome.unrecognised), ("malformed", outcome.malformed)):
            by_reason: dict[str, list[str]] = {}
            for item in items:
                by_reason.setdefault(str(item["reason"]), []).append(str(item["file"]))
            for reason, files in by_reason.items():
                shown = ", ".join(files[:5]) + (f" and {len(files) - 5} more" if len(files) > 5 else "")
                echo(f"{kind}: {shown}: {reason}")
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
            if outcome.unplaced:
                echo(f"{len(outcome.unplaced)} file(s) hma-check reads could not be placed on a server (see above); "
                     "nothing else was found, so no report was written")
            else:
                echo("nothing hma-check reads was found in the import; no report written")
            sys.exit(EXIT_NOTHING_COLLECTED)
        result = run_report(evidence, out_dir, list(checks_files), exemptions_file, **options)
    print_outcome(result)
    sys.exit(result.exit_code)
