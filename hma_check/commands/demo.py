"""hma-check demo: start the lab on loopback, scan it through the real clients, write the report."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import click

from hma_check.commands.common import report_options


@click.command(epilog="""\b
Examples:
  hma-check demo                                  the 'ready' organisation, report in out/demo
  hma-check demo --scenario one-server-mapi-no-oauth --out out/mapi
  hma-check demo --scenario-file my-org.yaml --out out/mine
  hma-check demo --scenario enabled --out out/after --after-enable --baseline out/demo   validate the switch
  hma-check demo --auth kerberos --out out/kerberos   Kerberos against a throwaway realm on loopback
  hma-check demo --scenario clients --out out/clients   users and their clients; then:
  hma-check import out/clients/lab-logs --out out/clients-logs   the servers' HttpProxy logs of that run
  hma-check lab --list                            the shipped scenarios
\b
The scan is real: pypsrp over WSMan (NTLM over HTTPS, or Kerberos over HTTP with message encryption) to the lab's
Exchange endpoint, exactly as against a server.
Exit code: the scenario's verdict (0 READY, 1 NOT_READY, 3 INCOMPLETE), 2 bad input.""")
@click.option("--scenario", default=None, metavar="NAME", help="A shipped scenario (default: ready).")
@click.option("--scenario-file", type=click.Path(dir_okay=False, path_type=Path), help="Your own scenario file.")
@click.option("--out", "out_dir", default=Path("out/demo"), show_default=True,
              type=click.Path(file_okay=False, path_type=Path), help="Folder for evidence.json and the report.")
@click.option("--concurrency", type=click.IntRange(1, 64), help="Exchange sessions at once (default 12).")
@click.option("--auth", type=click.Choice(["ntlm", "kerberos", "negotiate"]), default="ntlm", show_default=True,
              help="How the scan signs in. kerberos and negotiate start a throwaway MIT Kerberos realm on loopback "
                   "(needs krb5-kdc and the kerberos extra) and scan over HTTP with message encryption.")
@report_options
def demo(scenario: str | None, scenario_file: Path | None, out_dir: Path, concurrency: int | None, auth: str,
         **options: Any) -> None:
    """Scan the built-in lab organisation and write the readiness report."""
    from hma_check.commands.common import fail_on_input_errors, lab_commands, report_kwargs
    from hma_check.commands.scanning import collect_and_report

    lab_module = lab_commands()
    with fail_on_input_errors():
        report = report_kwargs(**options)
        with lab_realm(lab_module, auth, scenario, scenario_file) as realm, \
                lab_module.open_lab(scenario, scenario_file, realm=realm, auth=auth) as lab:
            url = lab.exchange_endpoint.https_url if realm is None else lab.exchange_endpoint.http_url
            click.echo(f"lab: scenario {lab.scenario.name} ({len(lab.scenario.servers)} servers) at {url}"
                       + (f", Kerberos realm {realm.name}" if realm is not None else ""), err=True)
            config = demo_config(lab_module.scan_config_text(lab), out_dir, concurrency)

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


@contextmanager
def lab_realm(lab_module: Any, auth: str, name: str | None, path: Path | None) -> Iterator[Any]:
    """For --auth kerberos or negotiate: the scenario's Active Directory domain as a throwaway MIT realm on loopback,
    used by this process (KRB5_CONFIG) until the block ends; None for ntlm. One line when it cannot be had."""
    if auth not in ("kerberos", "negotiate"):
        yield None
        return
    from hma_check.collect.kerberos import EXTRA, missing_support
    from hma_check.errors import ToolMissingError

    missing = missing_support()
    if missing:
        raise ToolMissingError(f"--auth {auth} needs the Kerberos client, and {missing}: {EXTRA}")
    with lab_module.scenario_realm(name, path, what=f"--auth {auth}") as realm:
        yield realm
