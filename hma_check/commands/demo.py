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
    from hma_check.commands.common import fail_on_input_errors, report_kwargs
    from hma_check.commands.scanning import collect_and_report
    from hma_check.commands.common import lab_commands

    lab_package = lab_commands()
    with fail_on_input_errors():
        report = report_kwargs(**options)
        with lab_realm(auth, scenario, scenario_file) as realm, \
                lab_package.open_lab(scenario, scenario_file, realm=realm, auth=auth) as lab:
            url = lab.exchange_endpoint.https_url if realm is None else lab.exchange_endpoint.http_url
            click.echo(f"lab: scenario {lab.scenario.name} ({len(lab.scenario.servers)} servers) at {url}"
                       + (f", Kerberos realm {realm.name}" if realm is not None else ""), err=True)
            config = lab_package.demo_config(lab, out_dir, concurrency)
            code = collect_and_report(config, out_dir, secrets=lab.secrets(), report=report)
    sys.exit(code)


@contextmanager
def lab_realm(auth: str, name: str | None, path: Path | None) -> Iterator[Any]:
    """For --auth kerberos or negotiate: the scenario's Active Directory domain as a throwaway MIT realm on loopback,
    used by this process (KRB5_CONFIG) until the block ends; None for ntlm. One line when it cannot be had."""
    if auth not in ("kerberos", "negotiate"):
        yield None
        return
    from hma_check.collect.kerberos import EXTRA, missing_support
    from hma_check.errors import ToolMissingError
    from hma_lab.kdc import Realm, RealmError
    from hma_lab.scenario import load_scenario, load_scenario_file

    missing = missing_support()
    if missing:
        raise ToolMissingError(f"--auth {auth} needs the Kerberos client, and {missing}: {EXTRA}")
    scenario = load_scenario_file(path) if path else load_scenario(name or "ready")
    domain = scenario.organization["ad_domain"]
    try:
        realm = Realm(domain.upper(), domains=(domain,)).start()
    except RealmError as exc:
        raise ToolMissingError(f"--auth {auth}: {exc}") from None
    try:
        with realm.activated():
            yield realm
    finally:
        realm.stop()
