"""hma-check scan, demo and lab, end to end through the CLI against the lab."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import yaml
from click.testing import CliRunner

from hma_check.cli import cli
from hma_lab.runtime import NTLM_ACCOUNTS, Lab

ENV = "HMA_CHECK_EXCHANGE_PASSWORD"


def invoke(*args, env=None):
    return CliRunner().invoke(cli, list(args), env=env or {}, catch_exceptions=False)


def test_demo_scans_the_lab_through_the_real_clients_and_writes_the_report(tmp_path, monkeypatch):
    from hma_check.commands import scanning

    handed: dict[str, str] = {}
    real = scanning.collect_and_report

    def recording(config, out_dir, *, secrets=None, **kwargs):
        handed.update(secrets or {})
        return real(config, out_dir, secrets=secrets, **kwargs)

    monkeypatch.setattr(scanning, "collect_and_report", recording)
    out = tmp_path / "demo"
    result = invoke("demo", "--out", str(out))
    assert result.exit_code == 0, result.stderr          # the 'ready' organisation, every collector included
    assert result.stdout.startswith("READY:")
    for name in ("evidence.json", "report.html", "report.md", "findings.json", "junit.xml", "enable.ps1",
                 "rollback.ps1", "scan-config.yaml"):
        assert (out / name).is_file(), name
    evidence = json.loads((out / "evidence.json").read_text(encoding="utf-8"))
    exchange = [s for s in evidence["sources"].values() if s["name"].startswith("exchange.")]
    assert exchange and all(s["status"] == "ok" for s in exchange)
    config = yaml.safe_load((out / "scan-config.yaml").read_text(encoding="utf-8"))
    assert set(config["exchange"]) >= {"server", "port", "auth", "username", "ca_file"}
    assert not any("password" in key and key != "password_env" for key in config["exchange"])
    # Every secret the demo handed the collectors in-process (the Exchange and WinRM passwords, the Graph client
    # secrets): none is in any output, the scan-config.yaml written for the record included, nor on the terminal.
    assert {"exchange.password", "os.password"} <= set(handed) and len(handed) > 2, sorted(handed)
    assert handed["exchange.password"] == NTLM_ACCOUNTS.password_for(config["exchange"]["username"])
    for path in out.rglob("*"):
        if path.is_file():
            text = path.read_text(encoding="utf-8", errors="replace")
            assert not [key for key, secret in handed.items() if secret in text], path
    assert not [key for key, secret in handed.items() if secret in result.stdout + result.stderr]
    assert "exchange" in result.stderr


def test_demo_of_a_failing_scenario_exits_not_ready(tmp_path):
    result = invoke("demo", "--scenario", "no-evosts", "--out", str(tmp_path), "--concurrency", "4")
    assert result.exit_code == 1 and result.stdout.startswith("NOT_READY")


def test_scan_reads_the_password_from_the_environment(tmp_path):
    with Lab("ssl-offload") as lab:
        config = tmp_path / "scan.yaml"
        config.write_text(yaml.safe_dump({"exchange": lab.scan_config()["exchange"]}), encoding="utf-8")
        result = invoke("scan", "--config", str(config), "--out", str(tmp_path / "out"),
                        env={ENV: lab.credentials.password})
        assert len(lab.command_log) > 30
        password = lab.credentials.password
    assert result.exit_code == 1, result.stderr
    assert "collector" in result.stderr and "exchange" in result.stderr          # the summary table
    assert "\r" not in result.stderr                                            # no progress bar off a terminal
    for path in (tmp_path / "out").iterdir():
        assert password not in path.read_text(encoding="utf-8", errors="replace")


def test_scan_without_a_password_is_a_usage_error(tmp_path):
    with Lab("ready") as lab:
        config = tmp_path / "scan.yaml"
        config.write_text(yaml.safe_dump({"exchange": lab.scan_config()["exchange"]}), encoding="utf-8")
        result = invoke("scan", "--config", str(config), "--out", str(tmp_path / "out"))
        assert lab.command_log == []
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"hma-check: error: exchange: no password: set the environment variable {ENV} (the configuration's "
        "password_env) or run hma-check on a terminal to be asked"]
    assert not (tmp_path / "out" / "evidence.json").exists()


def test_scan_against_an_endpoint_that_refuses_everyone_exits_4(tmp_path):
    with Lab("ready") as lab:
        config = tmp_path / "scan.yaml"
        config.write_text(yaml.safe_dump({"exchange": lab.scan_config()["exchange"]}), encoding="utf-8")
        result = invoke("scan", "--config", str(config), "--out", str(tmp_path / "out"), env={ENV: "wrong"})
    assert result.exit_code == 4
    assert "authentication failed" in result.stderr and "nothing could be collected" in result.stderr


def test_lab_lists_and_runs_a_scenario_until_interrupted(tmp_path):
    listed = invoke("lab", "--list")
    assert listed.exit_code == 0 and "one-server-mapi-no-oauth" in listed.stdout and "NOT_READY" in listed.stdout
    process = subprocess.Popen([sys.executable, "-m", "hma_check", "lab", "--scenario", "hybrid-agent",
                                "--config-out", str(tmp_path / "lab-scan.yaml")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines = []
    try:
        for line in process.stdout:
            lines.append(line)
            if "Press Ctrl-C" in line:
                break
        text = "".join(lines)
        assert "https://127.0.0.1:" in text and "password: " in text and "CONTOSO\\hma-reader" in text
        config = yaml.safe_load((tmp_path / "lab-scan.yaml").read_text(encoding="utf-8"))
        assert config["exchange"]["ssl"] is True and "password" not in config["exchange"]
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == 0


def test_the_commands_are_listed_and_the_help_stays_cheap():
    result = invoke("--help")
    for name in ("scan", "demo", "lab"):
        assert f"  {name} " in result.stdout
    probe = "import sys, hma_check.cli; print(sorted(m for m in ('pypsrp', 'psrpcore', 'requests', 'yaml') if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"
