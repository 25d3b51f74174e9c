"""hma-check demo: start the lab on loopback, scan it through the real clients, write the report."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from hma_check.commands.common import report_options


@click.command(epilog="""\b
Examples:
  hma-check demo                                  the 'ready' organisation, report in out/demo
  hma-check demo --scenario one-server-mapi-no-oauth --out out/mapi
  hma-check demo --scenario-file my-org.yaml --out out/mine
  hma-check demo --scenario enabled --out out/after --after-enable --baseline out/demo   validate the switch
  hma-check demo --scenario clients --out out/clients   users and their clients; then:
  hma-check import out/clients/lab-logs --out out/clients-logs   the servers' HttpProxy logs of that run
  hma-check lab --list                            the shipped scenarios
\b
The scan is real: pypsrp over WSMan (NTLM over HTTPS) to the lab's Exchange endpoint, exactly as against a server.
Exit code: the scenario's verdict (0 READY, 1 NOT_READY, 3 INCOMPLETE), 2 bad input.""")
@click.option("--scenario", default=None, metavar="NAME", help="A shipped scenario (default: ready).")
@click.option("--scenario-file", type=click.Path(dir_okay=False, path_type=Path), help="Your own scenario file.")
@click.option("--out", "out_dir", default=Path("out/demo"), show_default=True,
              type=click.Path(file_okay=False, path_type=Path), help="Folder for evidence.json and the report.")
@click.option("--concurrency", type=click.IntRange(1, 64), help="Exchange sessions at once (default 12).")
@report_options
def demo(scenario: str | None, scenario_file: Path | None, out_dir: Path, concurrency: int | None,
         **options: Any) -> None:
    """Scan the built-in lab organisation and write the readiness report."""
    from hma_check.commands.common import fail_on_input_errors, report_kwargs
    from hma_check.commands.scanning import collect_and_report
    from hma_check.commands.common import lab_commands

    lab_package = lab_commands()
    with fail_on_input_errors():
        report = report_kwargs(**options)
        with lab_package.open_lab(scenario, scenario_file) as lab:
            click.echo(f"lab: scenario {lab.scenario.name} ({len(lab.scenario.servers)} servers) at "
                       f"{lab.exchange_endpoint.https_url}", err=True)
            config = lab_package.demo_config(lab, out_dir, concurrency)

            def lab_logs() -> list[Path]:
                """The servers' HttpProxy logs of what the scan (and the scenario's clients) sent, for
                'hma-check import <out>/lab-logs'."""
                copied = lab.export_httpproxy_logs(out_dir / "lab-logs")
                if copied:
                    click.echo(f"lab HttpProxy logs: {out_dir / 'lab-logs'} ({len(copied)} files; "
                               f"hma-check import {out_dir / 'lab-logs'} --out <folder>)", err=True)
                return copied

            code = collect_and_report(config, out_dir, secrets=lab.secrets(), report=report, inputs=lab_logs)
    sys.exit(code)
