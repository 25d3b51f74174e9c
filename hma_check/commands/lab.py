"""hma-check lab: run a simulated Exchange organisation on loopback until Ctrl-C, for your own tools and scans."""

from __future__ import annotations

from pathlib import Path

import click


@click.command(epilog="""\b
Examples:
  hma-check lab                                   the 'ready' organisation
  hma-check lab --scenario one-server-mapi-no-oauth
  hma-check lab --scenario-file my-org.yaml
  hma-check lab --list
\b
Prints the endpoints, the demo credentials and a scan configuration; in another terminal:
  export HMA_CHECK_EXCHANGE_PASSWORD='<printed password>'
  hma-check scan --config lab-scan.yaml --out out/lab
The lab logs every command it receives. docs/scenarios.md describes the scenario format.""")
@click.option("--scenario", default=None, metavar="NAME", help="A shipped scenario (default: ready).")
@click.option("--scenario-file", type=click.Path(dir_okay=False, path_type=Path), help="Your own scenario file.")
@click.option("--config-out", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the scan configuration to this file.")
@click.option("--list", "list_only", is_flag=True, help="List the shipped scenarios and exit.")
def lab(scenario: str | None, scenario_file: Path | None, config_out: Path | None, list_only: bool) -> None:
    """Run the lab in the foreground and print how to scan it."""
    from hma_check.commands.common import fail_on_input_errors
    from hma_check.commands.common import lab_commands

    lab_package = lab_commands()
    with fail_on_input_errors():
        if list_only:
            click.echo(lab_package.list_scenarios())
            return
        with lab_package.stop_on_signals() as stop, lab_package.open_lab(scenario, scenario_file) as running:
            click.echo(lab_package.describe(running, config_out))
            lab_package.wait_for(stop)
