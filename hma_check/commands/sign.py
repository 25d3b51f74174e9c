"""hma-check sign: a detached CMS/PKCS #7 signature over a verified run folder's manifest.json."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

PASSPHRASE_VARIABLE = "HMA_CHECK_KEY_PASSPHRASE"
EXIT_SIGNED, EXIT_MISMATCH, EXIT_USAGE = 0, 1, 2


@click.command(epilog=f"""\b
Examples:
  hma-check sign out/contoso --certificate consultant.pem --key consultant.key
  hma-check sign out/contoso --pkcs12 consultant.pfx
  hma-check verify out/contoso --certificate consultant.pem
\b
An encrypted key's passphrase is read from the environment variable {PASSPHRASE_VARIABLE}, or asked for on the
terminal; it is never an option, so it stays out of shell history and process lists.
Exit code: 0 signed; 1 the folder does not match its manifest (nothing is signed); 2 usage error (not a run folder,
unreadable certificate or key, wrong passphrase, a key that does not belong to the certificate).""")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--certificate", "certificate_file", type=click.Path(dir_okay=False, path_type=Path),
              help="The signer's X.509 certificate (PEM or DER); further certificates in a PEM file are included as "
                   "its chain.")
@click.option("--key", "key_file", type=click.Path(dir_okay=False, path_type=Path),
              help="The certificate's private key (PEM or DER, RSA or EC; encrypted or not).")
@click.option("--pkcs12", "pkcs12_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Key, certificate and chain in one .pfx/.p12 file, instead of --certificate and --key.")
def sign(folder: Path, certificate_file: Path | None, key_file: Path | None, pkcs12_file: Path | None) -> None:
    """Sign FOLDER's manifest.json, writing manifest.json.p7s next to it.

    The folder is verified first: hma-check refuses to sign files that no longer match their manifest. The
    signature covers manifest.json, which holds the SHA-256 of every other file, so it covers the whole run.
    """
    from hma_check.util.atomic import write_bytes_atomic
    from hma_check.commands.common import fail_on_input_errors
    from hma_check.errors import one_line
    from hma_check.runs.keyfiles import load_certificates, load_pkcs12, load_private_key
    from hma_check.runs.manifest import SIGNATURE_NAME, verify_folder
    from hma_check.runs.signing import SigningError, fingerprint
    from hma_check.runs.signing import sign as make_signature

    if (pkcs12_file and (certificate_file or key_file)) or (not pkcs12_file and not (certificate_file and key_file)):
        raise click.UsageError("give --certificate and --key, or --pkcs12")
    with fail_on_input_errors():
        verification = verify_folder(folder)
        if not verification.ok:
            for problem in verification.problems:
                click.echo(one_line(problem.line()), err=True)   # file names in the folder are anyone's text
            click.echo("hma-check: not signed: the folder does not match its manifest", err=True)
            sys.exit(EXIT_MISMATCH)
        if pkcs12_file:
            key, certificate, chain = load_pkcs12(pkcs12_file, _passphrase)
        else:
            certificate, *chain = load_certificates(certificate_file)
            key = load_private_key(key_file, _passphrase)
    try:
        signature = make_signature(verification.manifest_bytes, certificate, key, chain)
    except SigningError as exc:
        click.echo(f"hma-check: error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    write_bytes_atomic(folder / SIGNATURE_NAME, signature)
    click.echo(f"signed: {folder / SIGNATURE_NAME}")
    click.echo(f"signer: {certificate.subject.rfc4514_string()} (certificate SHA-256 {fingerprint(certificate)})")
    click.echo(f"manifest.json SHA-256 {verification.manifest_sha256}")


def _passphrase() -> bytes:
    value = os.environ.get(PASSPHRASE_VARIABLE)
    if value is not None:
        return value.encode("utf-8")
    if not sys.stdin.isatty():
        from hma_check.errors import InputError

        raise InputError(f"the key is encrypted: set {PASSPHRASE_VARIABLE}, or run in a terminal to be asked")
    return click.prompt("Key passphrase", hide_input=True, err=True).encode("utf-8")
