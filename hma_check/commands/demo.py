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
    from hma_check.commands.common import fail_on_input_errors, lab_commands, report_kwargs
    from hma_check.commands.scanning import collect_and_report

    lab_module = lab_commands()
    with fail_on_input_errors():
        report = report_kwargs(**options)
        with lab_module.open_lab(scenario, scenario_file) as lab:
            click.echo(f"lab: scenario {lab.scenario.name} ({len(lab.scenario.servers)} servers) at "
                       f"{lab.exchange_endpoint.https_url}", err=True)
            config = demo_config(lab_module.scan_config_text(lab), out_dir, concurrency)
            code = collect_and_report(config, out_dir, secrets=lab.secrets(), report=report)
    sys.exit(code)


def demo_config(text: str, out_dir: Path, concurrency: int | None) -> Any:
    """The lab's scan configuration, written next to the report (for the record) and loaded from there."""
    from dataclasses import replace

    from hma_check.collect.config import load_config
    from hma_check.util.atomic import write_text_atomic

    path = out_dir / "scan-config.yaml"
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, text)
    config = load_config(path)
    if concurrency is not None:
        config.sections["exchange"] = replace(config.sections["exchange"], concurrency=concurrency)
    return config
