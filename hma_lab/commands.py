"""The lab side of the demo and lab commands: open a scenario, describe it, and its scan configuration text."""

from __future__ import annotations

import shlex
import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import yaml

from hma_lab.runtime import Lab
from hma_lab.scenario import load_scenario, load_scenario_file, scenario_names


def open_lab(name: str | None, path: Path | None, *, realm: Any = None, auth: str | None = None) -> Lab:
    if name and path:
        from hma_check.errors import InputError
        raise InputError("give --scenario or --scenario-file, not both")
    scenario = load_scenario_file(path) if path else load_scenario(name or "ready")
    return Lab(scenario, realm=realm, auth=auth)


def list_scenarios() -> str:
    lines = []
    for name in scenario_names():
        scenario = load_scenario(name)
        verdict = scenario.expect.get("verdict", "?")
        lines.append(f"{name:<26} {verdict:<10} {len(scenario.servers):>4} servers  "
                     f"{scenario.description[:70]}{'…' if len(scenario.description) > 70 else ''}")
    return "\n".join(lines)


def scan_config_text(lab: Lab) -> str:
    """The scan configuration that points at the lab: no secret in it, the password goes in the environment."""
    config = lab.scan_config()
    header = (f"# hma-check scan configuration for the lab scenario '{lab.scenario.name}'.\n"
              f"# The password is not here: export {config['exchange'].get('password_env', 'HMA_CHECK_EXCHANGE_PASSWORD')}"
              "=<the lab password> before scanning.\n")
    return header + yaml.safe_dump(config, sort_keys=False)


def describe(lab: Lab, config_written: Path) -> str:
    """What a person needs to use the running lab: endpoints, credentials and the scan configuration."""
    info = lab.describe()
    lines = [f"hma-check lab: scenario {lab.scenario.name} ({len(lab.scenario.servers)} servers)",
             f"  Exchange (Microsoft.Exchange): {info['exchange']['https']}  (NTLM or Basic)",
             f"                                 {info['exchange']['http']}  (NTLM with message encryption)",
             f"  CA certificate to trust:       {info['exchange']['ca_file']}",
             f"  username: {lab.credentials.username}",
             f"  password: {lab.credentials.password}"]
    for key, value in info.items():
        if key not in ("scenario", "exchange", "username"):
            lines.append(f"  {key}: {value}")
    text = scan_config_text(lab)
    lines += ["", "scan configuration:", text.rstrip(), "", f"scan configuration written to {config_written}", "",
              "Next, in another terminal (the lab runs until Ctrl-C here):"]
    lines += [f"  export {name}={shlex.quote(value)}" for name, value in _environment(lab, text).items()]
    lines += [f"  hma-check scan --config {shlex.quote(str(config_written))} --out out/lab",
              "  open out/lab/report.html", "", "Press Ctrl-C to stop the lab."]
    return "\n".join(lines)


def _environment(lab: Lab, config_text: str) -> dict[str, str]:
    """The environment variables the scan configuration names, with the lab's values (demo credentials only)."""
    config = yaml.safe_load(config_text) or {}
    names: dict[str, str] = {}
    secrets = lab.secrets()
    for section in ("exchange", "os"):
        name = (config.get(section) or {}).get("password_env")
        if name:
            names[name] = secrets.get(f"{section}.password", lab.credentials.password)
    for name, value in secrets.items():
        if name.startswith("HMA_") and name in config_text:
            names[name] = value
    return names


@contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """An event set by Ctrl-C or SIGTERM, armed before anything is printed so no signal lands in between."""
    stop = threading.Event()
    handlers = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, previous in handlers.items():
            signal.signal(sig, previous)


def wait_for(stop: threading.Event) -> None:
    while not stop.wait(0.5):
        pass


@contextmanager
def scenario_realm(name: str | None, path: Path | None, *, what: str) -> Iterator[Any]:
    """The scenario's Active Directory domain as a throwaway MIT realm on loopback (hma_lab.kdc), used by this process
    (KRB5_CONFIG) until the block ends. ToolMissingError (one line) when the KDC programs are missing."""
    from hma_check.errors import ToolMissingError
    from hma_lab.kdc import Realm, RealmError

    scenario = load_scenario_file(path) if path else load_scenario(name or "ready")
    domain = scenario.organization["ad_domain"]
    try:
        realm = Realm(domain.upper(), domains=(domain,)).start()
    except RealmError as exc:
        raise ToolMissingError(f"{what}: {exc}") from None
    try:
        with realm.activated():
            yield realm
    finally:
        realm.stop()
