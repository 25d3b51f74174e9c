"""hma-check verify: recompute every file of a run folder against manifest.json (and its signature, if any)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

EXIT_VERIFIED, EXIT_MISMATCH, EXIT_USAGE, EXIT_SIGNATURE = 0, 1, 2, 3


@click.command(epilog="""\b
Examples:
  hma-check verify out/contoso
  hma-check verify out/contoso --certificate consultant.pem
  hma-check verify out/contoso --ca-bundle company-ca.pem
\b
Exit code: 0 every file matches the manifest (and the signature verifies, when there is one or one is required);
1 a file was modified, is missing or was added, or the manifest is damaged; 2 usage error (not a run folder,
unreadable certificate); 3 the files match but the signature or the signer's certificate does not verify.""")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
def verify(folder: Path) -> None:
    """Check that FOLDER (an hma-check output folder) is exactly what hma-check wrote.

    Recomputes the SHA-256 and size of evidence.json, the copied checks and exemptions files and every output
    against manifest.json, and names every file that does not match, is missing or was added.
    """
    from hma_check.commands.common import fail_on_input_errors
    from hma_check.errors import one_line
    from hma_check.manifest import verify_folder

    with fail_on_input_errors():
        result = verify_folder(folder)
    manifest = result.manifest
    for problem in result.problems:
        click.echo(one_line(problem.line()))
    for note in result.notes:
        click.echo(one_line(f"note: {note}"))
    if not result.ok:
        click.echo(f"NOT VERIFIED: {len(result.problems)} problem(s); {len(result.matched)} file(s) match "
                   f"manifest.json (SHA-256 {result.manifest_sha256})")
        sys.exit(EXIT_MISMATCH)
    click.echo(f"verified: {len(result.matched)} files match manifest.json (SHA-256 {result.manifest_sha256}), "
               f"written by hma-check {one_line(str(manifest.get('tool_version')))} at "
               f"{one_line(str(manifest.get('created_at')))}")
    sys.exit(EXIT_VERIFIED)
