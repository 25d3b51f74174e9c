"""hma-check import: build the evidence from the collection script's folder or zip (or any Export-Clixml files), then the report."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from hma_check.errors import one_line

EXIT_NOTHING_COLLECTED = 4


@click.command("import")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for evidence.json and the report.")
@click.option("--checks", "checks_file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="A checks file to evaluate instead of the shipped catalogue.")
@click.option("--exemptions", "exemptions_file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="An exemptions file (accepted risks).")
def import_(path: Path, out_dir: Path, checks_file: Path | None, exemptions_file: Path | None) -> None:
    """Import PATH (a folder or .zip from Collect-HmaReadiness.ps1, or any Export-Clixml files) and report.

    Files are recognised by the object types inside, not by their names. Files hma-check does not read are listed
    and skipped; malformed ones are listed with the reason; sources no file supplied are recorded as skipped, so
    the checks that need them are ERROR, never PASS.
    """
    from hma_check.collect.offline import import_path

    outcome = import_path(path)
    evidence = out_dir / "evidence.json"
    outcome.snapshot.save(evidence)
    echo = lambda text: click.echo(one_line(text), err=True)  # noqa: E731 - file names come from the customer
    echo(f"imported {path}: {len(outcome.recognised)} recognised, {len(outcome.unrecognised)} skipped, "
         f"{len(outcome.malformed)} malformed")
    for item in outcome.unrecognised:
        echo(f"skipped: {item['file']}: {item['reason']}")
    for item in outcome.malformed:
        echo(f"malformed: {item['file']}: {item['reason']}")
    echo(f"evidence: {evidence}")
    if not any(result.ok for result in outcome.snapshot.sources.values()):
        echo("nothing hma-check reads was found in the import; no report written")
        sys.exit(EXIT_NOTHING_COLLECTED)

    from hma_check.pipeline import run_report

    result = run_report(evidence, out_dir, checks_files=[checks_file] if checks_file else None,
                        exemptions_file=exemptions_file)
    sys.exit(result.exit_code)
