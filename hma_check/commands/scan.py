"""hma-check scan: read a real organisation (read-only) as the configuration says, then write the report."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from hma_check.commands.common import report_options


@click.command(epilog="""\b
Examples:
  export HMA_CHECK_EXCHANGE_PASSWORD='...'   # or let hma-check ask on the terminal
  hma-check scan --config scan.yaml --out out/run1
  hma-check scan --config scan.yaml --out out/run1 --concurrency 4 --exemptions cab-2291.yaml
  hma-check scan --config scan.yaml --out out/nodes --resolve mail.contoso.com:443:10.0.0.11,10.0.0.12
  hma-check scan --config scan.yaml --out out/after --after-enable --baseline out/run1   after the change
\b
scan.yaml (docs/scan-config.md):
  exchange:
    server: mail.contoso.com      # the Exchange remote PowerShell endpoint (https://server/PowerShell)
    auth: negotiate               # kerberos | negotiate | ntlm | basic (TLS only) | certificate
    username: CONTOSO\\hma-reader  # an account with View-Only Organization Management
\b
Only the read-only Get- cmdlets hma-check names are sent. The password comes from the environment variable named by password_env
(HMA_CHECK_EXCHANGE_PASSWORD by default) or a prompt, never from the command line.
Exit code: 0 READY, 1 NOT_READY, 3 INCOMPLETE, 2 bad configuration, 4 nothing could be collected.""")
@click.option("--config", "config_file", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The scan configuration (YAML).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for evidence.json and the report (created if needed).")
@click.option("--concurrency", type=click.IntRange(1, 64), help="Exchange sessions at once (default 12; Exchange's "
              "throttling policy allows 18 per user).")
@click.option("--checks", "checks_files", multiple=True, type=click.Path(dir_okay=False, path_type=str),
              help="An extra checks file (repeatable); added to the shipped catalogue.")
@click.option("--exemptions", "exemptions_file", type=click.Path(dir_okay=False, path_type=str),
              help="Exemptions approved by your change board.")
@click.option("--resolve", multiple=True, metavar="HOST:PORT:ADDR[,ADDR]",
              help="Probe HOST:PORT at these addresses, each one (per-node probing behind a load balancer); curl's "
                   "syntax. Repeatable; turns the outside-in probes on.")
@click.option("--connect-to", "connect_to", multiple=True, metavar="HOST:PORT:HOST2:PORT2",
              help="Connect to HOST2:PORT2 for HOST:PORT, as curl --connect-to. Repeatable; turns the probes on.")
@click.option("--pseudonymise-users", is_flag=True,
              help="With a logs: section: replace user names with a keyed hash (a new key each run, never stored).")
@report_options
def scan(config_file: Path, out_dir: Path, concurrency: int | None, checks_files: tuple[str, ...],
         exemptions_file: str | None, resolve: tuple[str, ...], connect_to: tuple[str, ...],
         pseudonymise_users: bool, **options: Any) -> None:
    """Collect the evidence from a live organisation and write the readiness report."""
    from dataclasses import replace

    from hma_check.commands.common import fail_on_input_errors, report_kwargs
    from hma_check.commands.scanning import collect_and_report
    from hma_check.collect.config import load_config

    def prompt(text: str) -> str:
        return click.prompt(text, hide_input=True, err=True)

    with fail_on_input_errors():
        report = report_kwargs(**options)
        config = load_config(config_file)
        if concurrency is not None and "exchange" in config.sections:
            config.sections["exchange"] = replace(config.sections["exchange"], concurrency=concurrency)
        if pseudonymise_users:
            if "logs" not in config.sections:
                raise click.UsageError("--pseudonymise-users applies to the user names of the logs: section, and "
                                       f"{config_file} has none")
            config.sections["logs"] = replace(config.sections["logs"], pseudonymise_users=True)
        if resolve or connect_to:
            from hma_check.collect.probes.config import with_command_line

            config.sections["probes"] = with_command_line(config.sections.get("probes"), resolve, connect_to)
        code = collect_and_report(config, out_dir, checks_files=checks_files, exemptions_file=exemptions_file,
                                  prompt=prompt if sys.stdin.isatty() else None, report=report)
    sys.exit(code)
