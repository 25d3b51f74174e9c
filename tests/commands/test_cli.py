"""The command line as users run it: exit codes, one-line errors, help that answers fast without heavy imports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import baseline
from tests.support.common import SITE_CHECKS
from tests.support.baseline import apply_ops



def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hma_check", *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd)


@pytest.fixture(scope="module")
def evidence(tmp_path_factory):
    folder = tmp_path_factory.mktemp("evidence")
    paths = {}
    paths["ready"] = folder / "ready.json"
    baseline.build().save(paths["ready"])
    paths["not_ready"] = folder / "not-ready.json"
    apply_ops(baseline.build(), [{"set": ["exchange.servers", 0, "AdminDisplayVersion"],
                                  "to": "Version 14.3 (Build 123.4)"}]).save(paths["not_ready"])
    paths["incomplete"] = folder / "incomplete.json"
    apply_ops(baseline.build(), [{"fail": "graph.exo_service_principal"}]).save(paths["incomplete"])
    nothing = baseline.build()
    for result in nothing.sources.values():
        result.status, result.error, result.data = "error", "ConnectionRefusedError: nothing answered", None
    paths["nothing"] = folder / "nothing.json"
    nothing.save(paths["nothing"])
    return paths


@pytest.mark.parametrize("name,code,verdict", [("ready", 0, "READY"), ("not_ready", 1, "NOT_READY"),
                                               ("incomplete", 3, "INCOMPLETE"), ("nothing", 4, "INCOMPLETE")])
def test_report_exit_codes(evidence, tmp_path, name, code, verdict):
    result = run("report", "--evidence", str(evidence[name]), "--out", str(tmp_path / "out"))
    assert result.returncode == code, result.stderr
    assert result.stdout.startswith(verdict)
    assert json.loads((tmp_path / "out" / "findings.json").read_text())["verdict"] == verdict


def test_a_bad_checks_file_exits_2_with_one_line_and_writes_nothing(evidence, tmp_path):
    bad = tmp_path / "site.yaml"
    bad.write_text("version: 1\nchecks:\n  - id: SITE-X-001\n    title: t\n", encoding="utf-8")
    result = run("report", "--evidence", str(evidence["ready"]), "--checks", str(bad), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{bad}:3:" in lines[0] and "SITE-X-001" in lines[0]
    assert not (tmp_path / "out").exists()


def test_bad_evidence_exits_2_with_one_line(tmp_path):
    broken = tmp_path / "evidence.json"
    broken.write_text('{"schema_version": 1, "tool_version": "0.1", "collected_at": "2026-11-20T', encoding="utf-8")
    result = run("report", "--evidence", str(broken), "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "truncated" in result.stderr and not (tmp_path / "out").exists()


def test_user_checks_and_exemptions_from_the_command_line(evidence, tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text("""version: 1
checks:
  - id: SITE-ORG-001
    title: The organization is called Contoso
    area: site
    severity: warning
    requires: [exchange.organization_config]
    assert: "exchange.organization_config.Name == 'Fabrikam'"
    expect: Fabrikam
    actual: "{{ exchange.organization_config.Name }}"
    why: our naming standard
    references: [https://learn.microsoft.com/exchange/]
""", encoding="utf-8")
    exemptions = tmp_path / "exemptions.yaml"
    exemptions.write_text("version: 1\nexemptions:\n  - {check: HMA-TOPO-001, subject: EX01, reason: decommission "
                          "booked for 2027-01, approved_by: CAB-2291, expires: 2027-02-01}\n", encoding="utf-8")
    result = run("report", "--evidence", str(evidence["not_ready"]), "--checks", str(site), "--exemptions",
                 str(exemptions), "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stdout + result.stderr      # the only blocker is exempt
    findings = json.loads((tmp_path / "out" / "findings.json").read_text())["findings"]
    by_id = {(f["check_id"], f["subject"]): f for f in findings}
    assert by_id[("SITE-ORG-001", "organization")]["status"] == "WARN"
    assert by_id[("HMA-TOPO-001", "EX01")]["status"] == "EXEMPT"


def test_checks_list_validate_explain(tmp_path):
    listed = run("checks", "list")
    assert listed.returncode == 0 and "HMA-SPN-001" in listed.stdout and "HMA-STEP-002" in listed.stdout
    explained = run("checks", "explain", "HMA-SPN-001")
    assert explained.returncode == 0
    assert "graph.exo_service_principal" in explained.stdout and "Update-MgServicePrincipal" in explained.stdout
    assert run("checks", "explain", "HMA-NOPE-999").returncode == 2
    misspelt = run("checks", "explain", "HMA-SPN-01")
    assert misspelt.returncode == 2 and "no check HMA-SPN-01 (did you mean 'HMA-SPN-001'?)" in misspelt.stderr
    site = tmp_path / "site.yaml"
    site.write_text(SITE_CHECKS, encoding="utf-8")
    validated = run("checks", "validate", "./site.yaml", cwd=tmp_path)
    assert validated.returncode == 0 and validated.stdout.startswith("ok: 1 checks and 0 steps in 1 file(s)")
    site.write_text("version: 2\nchecks: []\n", encoding="utf-8")
    invalid = run("checks", "validate", str(site))
    assert invalid.returncode == 2 and "version" in invalid.stderr


def test_usage_errors_exit_2():
    assert run("report").returncode == 2
    assert run("no-such-command").returncode == 2


def test_help_has_examples_and_loads_no_heavy_module():
    """--help must answer at once: measured as 'no heavy import', not as a time (timings belong in benchmarks/)."""
    probe = ("import sys; from hma_check.cli import main\n"
             "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
             "heavy = [m for m in ('msgraph', 'azure.identity', 'pypsrp', 'httpx', 'jinja2', 'cryptography', 'yaml')"
             " if m in sys.modules]\nprint('HEAVY', heavy)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert "Examples:" in result.stdout and "Exit codes" in result.stdout
    assert "HEAVY []" in result.stdout, result.stdout


@pytest.mark.parametrize("columns", [None, "", "x", "0", "-5", "40", "60", "79", "80", "81", "200"])
def test_the_group_help_wraps_where_click_would(monkeypatch, columns):
    """The group measures the terminal without shutil (hma_check.cli._terminal_columns): the width must be the one
    click's own HelpFormatter picks, so the help text stays click's."""
    import click

    from hma_check.cli import cli

    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    ours = cli.make_context("hma-check", ["--version"], resilient_parsing=True)
    assert type(ours) is not click.Context
    clicks = click.Context(cli, info_name="hma-check")
    assert ours.make_formatter().width == clicks.make_formatter().width
    for max_content_width in (60, 120):
        ours.max_content_width = clicks.max_content_width = max_content_width
        assert ours.make_formatter().width == clicks.make_formatter().width


def test_help_loads_no_shutil():
    probe = ("import sys; from hma_check.cli import main\n"
             "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
             "print('SHUTIL', 'shutil' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert "Usage: hma-check" in result.stdout and "SHUTIL False" in result.stdout, result.stdout


def test_the_product_never_imports_the_lab():
    """The lab is a separate package: the command line, and a report from evidence, load nothing of it."""
    probe = ("import sys, hma_check.cli\n"
             "assert not any(m.startswith('hma_lab') for m in sys.modules), 'cli'\n"
             "from hma_check.cli import main\n"
             "try:\n    main(['report', '--help'])\nexcept SystemExit:\n    pass\n"
             "assert not any(m.startswith(('hma_lab', 'psrpcore', 'trustme')) for m in sys.modules), 'report'\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("missing", ["psrpcore", "trustme", "hma_lab"])
@pytest.mark.parametrize("command", [["demo", "--out", "out"], ["lab", "--list"]])
def test_without_the_lab_extra_demo_and_lab_say_how_to_install_it(tmp_path, missing, command):
    probe = (f"import sys; sys.modules[{missing!r}] = None\n"
             f"from hma_check.cli import main\nmain({command!r})\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == "hma-check: error: the lab is not installed; install it with: pip install 'hma-check[lab]'\n"
    assert not (tmp_path / "out").exists()


def test_report_help_has_examples():
    result = run("report", "--help")
    assert result.returncode == 0 and "Examples:" in result.stdout and "--exemptions" in result.stdout


def test_as_of_is_read_as_utc_and_converts_a_stated_offset(evidence, tmp_path):
    from click.testing import CliRunner

    from hma_check.cli import cli

    def as_of(value):
        result = CliRunner().invoke(cli, ["report", "--evidence", str(evidence["ready"]), "--out",
                                          str(tmp_path / "out"), "--as-of", value])
        if result.exit_code != 0:
            return result.exit_code
        return json.loads((tmp_path / "out" / "findings.json").read_text())["metadata"]["as_of"]

    assert as_of("2027-01-15") == "2027-01-15T00:00:00Z"
    assert as_of("2027-01-15T00:30:00+01:00") == "2027-01-14T23:30:00Z"
    assert as_of("2027-01-15T08:00:00Z") == "2027-01-15T08:00:00Z"
    assert as_of("soon") == 2
