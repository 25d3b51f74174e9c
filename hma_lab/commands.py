"""The lab side of the demo and lab commands: open a scenario, describe it, write its scan configuration."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import yaml

from hma_check.util.atomic import write_text_atomic
from hma_lab.runtime import Lab
from hma_lab.scenario import load_scenario, load_scenario_file, scenario_names


def open_lab(name: str | None, path: Path | None) -> Lab:
    if name and path:
        from hma_check.errors import InputError
        raise InputError("give --scenario or --scenario-file, not both")
    scenario = load_scenario_file(path) if path else load_scenario(name or "ready")
    return Lab(scenario)


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


def demo_config(lab: Lab, out_dir: Path, concurrency: int | None) -> Any:
    """Write the demo's scan configuration next to the report (for the record) and load it back."""
    from dataclasses import replace

    from hma_check.collect.config import load_config

    path = out_dir / "scan-config.yaml"
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, scan_config_text(lab))
    config = load_config(path)
    if concurrency is not None:
        config.sections["exchange"] = replace(config.sections["exchange"], concurrency=concurrency)
    return config


def describe(lab: Lab, config_out: Path | None) -> str:
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
    if config_out is not None:
        write_text_atomic(config_out, text)
        lines.append(f"scan configuration written to {config_out}")
    lines += ["", "scan configuration:", text.rstrip(), "",
              "Press Ctrl-C to stop the lab."]
    return "\n".join(lines)


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
