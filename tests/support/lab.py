"""Helpers for the lab and Exchange collector tests: scan a running lab, write variant scenarios, judge verdicts."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import yaml

from hma_check.collect.exchange.config import ExchangeSettings
from hma_check.collect.runner import run_collectors
from hma_check.collect.config import load_config_text
from hma_lab.scenario import Scenario, load_scenario_file
from hma_check.contract.snapshot import Snapshot

READ_ONLY = re.compile(r"(Get|Test)-[A-Za-z0-9]+")
SOURCE = re.compile(r"\b(exchange|os|graph|probe)\.[a-z_]+")


def variant(tmp_path: Path, text: str, name: str = "variant") -> Scenario:
    """A scenario written on the spot, usually ``extends: ready`` plus one change."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return load_scenario_file(path)


def exchange_settings(config: dict[str, Any], **overrides: Any) -> ExchangeSettings:
    loaded = load_config_text(yaml.safe_dump(config))
    return replace(loaded.sections["exchange"], **overrides)


def scan(lab: Any, *, sections: tuple[str, ...] | None = None, **exchange_overrides: Any) -> Snapshot:
    """Scan a running Lab through the real collectors (pypsrp, NTLM over HTTPS), as hma-check demo does; only the
    configuration ``sections`` named (all of the lab's by default)."""
    raw = lab.scan_config()
    config = load_config_text(yaml.safe_dump({k: v for k, v in raw.items() if sections is None or k in sections}))
    if exchange_overrides:
        config.sections["exchange"] = replace(config.sections["exchange"], **exchange_overrides)
    return run_collectors(config, secrets=lab.secrets(), environ={})


def assert_read_only(command_log: list[dict[str, Any]]) -> None:
    assert command_log, "the lab received no command at all"
    for entry in command_log:
        assert not entry["is_script"], entry
        assert READ_ONLY.fullmatch(entry["command"]), entry


def counts(snapshot: Snapshot, prefix: str = "exchange.") -> dict[str, int]:
    out = {"ok": 0, "error": 0, "skipped": 0}
    for result in snapshot.sources.values():
        if result.name.startswith(prefix):
            out[result.status] += 1
    return out


def build_verdict(findings: list[dict[str, Any]], left_out: tuple[str, ...] = ()) -> tuple[str, list[dict[str, Any]]]:
    """The verdict over the findings this scan can decide: an ERROR only because a collector's section was
    ``left_out`` of the scan on purpose is set aside; every other ERROR counts."""
    area = {"exchange": "exchange", "os": "os", "graph": "graph", "probes": "probe"}
    absent = {area[s] for s in left_out}
    decidable = []
    for finding in findings:
        reason = finding.get("reason") or ""
        if finding["status"] == "ERROR" and "not collected" in reason:
            areas = {match.group(1) for match in SOURCE.finditer(reason)}
            if areas and areas <= absent:
                continue
        decidable.append(finding)
    blockers = [f for f in decidable if f["severity"] == "blocker"]
    if any(f["status"] == "FAIL" for f in blockers):
        return "NOT_READY", decidable
    if any(f["status"] == "ERROR" for f in blockers):
        return "INCOMPLETE", decidable
    return "READY", decidable


@contextmanager
def lab_process(scenario: str | None = None, scenario_file: Path | None = None) -> Iterator[dict[str, Any]]:
    """A lab in its own Python process (its own interpreter lock, like a real server); yields its JSON line."""
    args = [sys.executable, "-m", "hma_lab.serve"]
    args += ["--scenario", scenario] if scenario else ["--scenario-file", str(scenario_file)]
    process = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        line = process.stdout.readline()  # type: ignore[union-attr]
        if not line:
            raise RuntimeError(f"lab process failed: {process.stderr.read()}")  # type: ignore[union-attr]
        info = json.loads(line)
        yield info
    finally:
        process.stdin.close()  # type: ignore[union-attr]
        stats_line = process.stderr.read()  # type: ignore[union-attr]
        process.wait(timeout=30)
        info_stats = stats_line.strip().splitlines()[-1] if stats_line.strip() else "{}"
        try:
            info.update(stats=json.loads(info_stats))  # type: ignore[possibly-undefined]
        except (ValueError, NameError):
            pass


def scan_process_lab(info: dict[str, Any], *, sections: tuple[str, ...] | None = None,
                     **exchange_overrides: Any) -> Snapshot:
    raw = info["scan_config"]
    config = load_config_text(yaml.safe_dump({k: v for k, v in raw.items() if sections is None or k in sections}))
    if exchange_overrides:
        config.sections["exchange"] = replace(config.sections["exchange"], **exchange_overrides)
    return run_collectors(config, secrets=info["secrets"], environ={})
