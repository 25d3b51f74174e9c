"""hma-check verify: recompute every file of a run folder against manifest.json, and check its signature."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

EXIT_VERIFIED, EXIT_MISMATCH, EXIT_USAGE, EXIT_SIGNATURE = 0, 1, 2, 3


@click.command(epilog="""\b
Examples:
  hma-check verify out/contoso
  hma-check verify out/contoso --certificate consultant.pem
  hma-check verify out/contoso --ca-bundle company-ca.pem
\b
What a signature check proves: manifest.json is the file that was signed, with the key of the certificate inside
the signature, which allows signing and was valid at the signing time the signature states. Who that signer is:
only with --certificate (that exact certificate) or --ca-bundle (its chain to your CAs). Not checked: revocation
(no CRL or OCSP is fetched) and the signing time itself (the signer's claim, not a trusted timestamp).
\b
Exit code: 0 every file matches the manifest and the signature (if present or required) verifies;
1 a file was modified, is missing or was added, or the manifest is damaged; 2 usage error (not a run folder,
unreadable certificate); 3 the files match but the signature is missing (when required), invalid, by another
signer, or does not chain to the CA bundle.""")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--signature", "signature_file", type=click.Path(dir_okay=False, path_type=Path),
              help="The detached signature (default: FOLDER/manifest.json.p7s when present).")
@click.option("--certificate", "certificate_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Require the signer to be this certificate (PEM or DER).")
@click.option("--ca-bundle", "ca_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Require the signer's certificate to chain to one of these CA certificates (PEM).")
@click.option("--require-signature", is_flag=True, help="Fail when there is no signature.")
def verify(folder: Path, signature_file: Path | None, certificate_file: Path | None, ca_file: Path | None,
           require_signature: bool) -> None:
    """Check that FOLDER (an hma-check output folder) is exactly what hma-check wrote, and who signed it.

    Recomputes the SHA-256 and size of evidence.json, the copied checks and exemptions files and every output
    against manifest.json, and names every file that does not match, is missing or was added.
    """
    from hma_check.commands.common import fail_on_input_errors
    from hma_check.errors import one_line
    from hma_check.runs.keyfiles import load_certificates
    from hma_check.runs.manifest import SIGNATURE_NAME, verify_folder

    with fail_on_input_errors():
        result = verify_folder(folder)
        expected = load_certificates(certificate_file)[0] if certificate_file else None
        trusted = load_certificates(ca_file) if ca_file else None
    for problem in result.problems:
        click.echo(one_line(problem.line()))
    for note in result.notes:
        click.echo(one_line(f"note: {note}"))
    if not result.ok:
        click.echo(f"NOT VERIFIED: {len(result.problems)} problem(s); {len(result.matched)} file(s) match "
                   f"manifest.json (SHA-256 {result.manifest_sha256})")
        sys.exit(EXIT_MISMATCH)
    click.echo(f"files: {len(result.matched)} match manifest.json (SHA-256 {result.manifest_sha256}), written by "
               f"hma-check {one_line(str(result.manifest.get('tool_version')))} at "
               f"{one_line(str(result.manifest.get('created_at')))}")
    signature_file = signature_file or folder / SIGNATURE_NAME
    required = require_signature or expected is not None or trusted is not None
    if not signature_file.is_file():
        if required:
            click.echo(f"NOT VERIFIED: no signature ({signature_file} not found)")
            sys.exit(EXIT_SIGNATURE)
        click.echo("verified (unsigned: no manifest.json.p7s)")
        sys.exit(EXIT_VERIFIED)
    if not _signature_ok(result.manifest_bytes, signature_file, expected, trusted):
        sys.exit(EXIT_SIGNATURE)
    click.echo("verified")
    sys.exit(EXIT_VERIFIED)


def _signature_ok(manifest: bytes, signature_file: Path, expected: Any, trusted: Any) -> bool:
    from hma_check.errors import one_line
    from hma_check.runs.signing import SignatureError, verify_signature

    try:
        check = verify_signature(manifest, signature_file.read_bytes(), expected=expected, trusted=trusted)
    except SignatureError as exc:
        click.echo(one_line(f"SIGNATURE {signature_file.name}: {exc}"))
        click.echo("NOT VERIFIED: the signature does not verify")
        return False
    when = f"{check.signing_time:%Y-%m-%dT%H:%M:%SZ}" if check.signing_time else "an unstated time"
    click.echo(one_line(f"signature: valid ({check.digest}); manifest.json signed by {check.subject} "
                        f"(certificate SHA-256 {check.fingerprint}) at {when} (as the signer states)"))
    click.echo(one_line(f"signer: {check.identity}"))
    click.echo("not checked: revocation of the signer's certificate; a trusted timestamp")
    return True
