"""Reproductions of the adversarial pass (issue 13): every input surface given what nobody writes on purpose.

Each test names the defect it pins down; together with tests/test_fuzz_*.py they hold every command to: an exit code it
documents, never a traceback, one line naming the file (and line), bounded time and memory, nothing half-written,
nothing outside --out touched.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import baseline
from tests.support.hostile import error_line, invoke, leftovers


# One hostile YAML text per defect, each with the line the error must name.
HOSTILE_YAML = {
    "impossible date": ("version: 1\nnote: 2020-02-30\n", 2),
    "date before year 1 in UTC": ("version: 1\nnote: 0001-01-01 00:00:00 +01:00\n", 2),
    "huge integer": ("version: 1\nnote: " + "9" * 5000 + "\n", 2),
    "sexagesimal chain": ("version: 1\nnote: 1" + ":1" * 20000 + "\n", 2),
    "deep flow nesting": ("version: 1\nnote: " + "[" * 3000 + "]" * 3000 + "\n", 2),
    "deep block nesting": ("version: 1\nnote:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 400)), None),
    "infinity": ("version: 1\nnote: .inf\n", 2),
    "python tag": ("version: 1\nnote: !!python/object/apply:os.system [ls]\n", 2),
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished run folder and its evidence."""
    root = tmp_path_factory.mktemp("run")
    evidence = root / "evidence-in.json"
    baseline.build().save(evidence)
    invoke("report", "--evidence", evidence, "--out", root / "out", codes={0})
    return {"evidence": evidence, "out": root / "out"}


def _surfaces(tmp_path: Path, run: dict, text: str) -> dict[str, tuple[Path, list[object]]]:
    """The same YAML text as each YAML input surface, with the command that reads it."""
    files = {}
    for surface in ("checks", "exemptions", "config", "scenario"):
        body = text
        if surface == "scenario":
            body = "extends: ready\nname: hostile\n" + text.replace("version: 1\n", "")
        path = tmp_path / f"{surface}.yaml"
        path.write_text(body, encoding="utf-8")
        files[surface] = path
    out = tmp_path / "out"
    return {
        "checks": (files["checks"], ["checks", "validate", files["checks"]]),
        "exemptions": (files["exemptions"], ["report", "--evidence", run["evidence"], "--exemptions",
                                             files["exemptions"], "--out", out]),
        "config": (files["config"], ["scan", "--config", files["config"], "--out", out]),
        "scenario": (files["scenario"], ["demo", "--scenario-file", files["scenario"], "--out", out]),
    }


@pytest.mark.parametrize("case", sorted(HOSTILE_YAML))
def test_hostile_yaml_is_one_line_with_its_position_in_every_yaml_surface(tmp_path, run, case):
    """Before: a ValueError (dates, 4,300+ digit integers), RecursionError (PyYAML's composer) or minutes of
    big-integer arithmetic, each a traceback with exit 1."""
    text, line = HOSTILE_YAML[case]
    for surface, (path, args) in _surfaces(tmp_path, run, text).items():
        result = invoke(*args, codes={2}, seconds=20)
        message = error_line(result, path, line if surface != "scenario" else None)
        assert "Traceback" not in result.output, (surface, message)
        assert not (tmp_path / "out").exists(), surface


def test_a_yaml_file_of_a_million_values_stops_at_the_node_limit_in_seconds(tmp_path):
    """Before: a 4 MB YAML file took 80 s and 1.4 GB before its first error."""
    path = tmp_path / "big.yaml"
    path.write_text("version: 1\nchecks:\n" + "- x\n" * 1_000_000, encoding="utf-8")
    result = invoke("checks", "validate", path, codes={2}, seconds=15)
    assert "more than 100000 values" in error_line(result, path)


@pytest.mark.parametrize("option", ["--checks", "--exemptions", "--evidence"])
def test_dev_zero_as_an_input_ends_at_the_limit(tmp_path, run, option):
    """Before: the size limit was taken from stat(), which says 0 for /dev/zero: read forever."""
    args = ["report", "--evidence", run["evidence"], "--out", tmp_path / "out"]
    if option == "--evidence":
        args[2] = "/dev/zero"
    else:
        args += [option, "/dev/zero"]
    result = invoke(*args, codes={2}, seconds=30)
    assert "larger than the limit" in error_line(result, "/dev/zero")


def test_dev_zero_as_config_certificate_and_findings(tmp_path, run):
    assert "larger than the limit" in error_line(
        invoke("scan", "--config", "/dev/zero", "--out", tmp_path / "o", codes={2}, seconds=30), "/dev/zero")
    assert "larger than" in error_line(
        invoke("verify", run["out"], "--certificate", "/dev/zero", codes={2}, seconds=30), "/dev/zero")
    assert "larger than the limit" in error_line(invoke("diff", run["out"], "/dev/zero", codes={2}, seconds=30),
                                                 "/dev/zero")


# ------------------------------------------------------------------------------------------- dates and surrogates

@pytest.mark.parametrize("moment", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_a_collected_at_outside_year_1_to_9999_in_utc_is_refused(tmp_path, run, moment):
    """Before: OverflowError on the conversion to UTC."""
    document = json.loads(run["evidence"].read_text(encoding="utf-8"))
    document["collected_at"] = moment
    evidence = tmp_path / "evidence.json"
    evidence.write_text(json.dumps(document), encoding="utf-8")
    result = invoke("report", "--evidence", evidence, "--out", tmp_path / "out", codes={2})
    assert "collected_at" in error_line(result, evidence)
    as_of = invoke("report", "--evidence", run["evidence"], "--as-of", moment, "--out", tmp_path / "o2", codes={2})
    assert "--as-of" in as_of.output and not (tmp_path / "o2").exists()


def test_an_imports_finished_at_outside_the_calendar_is_not_its_collection_time(tmp_path):
    folder = tmp_path / "import"
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps({"hmaCheckManifest": 1, "entries": [],
                                                      "finishedAt": "0001-01-01T00:00:00+01:00"}), encoding="utf-8")
    invoke("import", folder, "--out", tmp_path / "out", codes={4})


def test_a_lone_surrogate_escape_in_evidence_is_refused_at_its_line(tmp_path, run):
    """Before: json.loads accepted "\\ud800" and writing the report failed with UnicodeEncodeError."""
    lines = run["evidence"].read_text(encoding="utf-8").splitlines()
    index = next(i for i, line in enumerate(lines) if '"tool_version": "' in line)
    lines[index] = lines[index].replace('"tool_version": "', '"tool_version": "\\ud800', 1)
    evidence = tmp_path / "evidence.json"
    evidence.write_text("\n".join(lines), encoding="utf-8")
    message = error_line(invoke("report", "--evidence", evidence, "--out", tmp_path / "out", codes={2}), evidence,
                         index + 1)
    assert "lone UTF-16 surrogate" in message


def test_a_lone_surrogate_char_from_clixml_becomes_a_replacement_character(tmp_path):
    """Before: <C>55296</C> became chr(0xD800) and saving evidence.json failed with UnicodeEncodeError."""
    folder = tmp_path / "import"
    folder.mkdir()
    (folder / "servers.xml").write_text(
        '<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04"><Obj RefId="0">'
        '<TN RefId="0"><T>Microsoft.Exchange.Data.Directory.Management.ExchangeServer</T></TN><Props>'
        '<S N="Name">EX01</S><C N="Site">55296</C></Props></Obj></Objs>', encoding="utf-8")
    invoke("import", folder, "--out", tmp_path / "out")
    assert "\ufffd" in (tmp_path / "out" / "evidence.json").read_text(encoding="utf-8")


def test_duplicate_keys_in_evidence_are_refused(tmp_path, run):
    raw = run["evidence"].read_text(encoding="utf-8").replace('"schema_version": 1,', '"schema_version": 1, '
                                                              '"schema_version": 1,', 1)
    evidence = tmp_path / "evidence.json"
    evidence.write_text(raw, encoding="utf-8")
    message = error_line(invoke("report", "--evidence", evidence, "--out", tmp_path / "out", codes={2}), evidence)
    assert "'schema_version' is given twice" in message


@pytest.mark.parametrize("command", ["report", "verify"])
def test_an_integer_too_long_to_convert_is_one_line_not_a_traceback(tmp_path, run, command):
    """Found by the manifest fuzz test: a 5,000-digit number made json.loads raise Python's own ValueError (the
    4,300-digit conversion limit), which verify ended in a traceback."""
    if command == "report":
        raw = run["evidence"].read_text(encoding="utf-8").replace('"schema_version": 1,', '"schema_version": '
                                                                  + "9" * 5000 + ",", 1)
        target = tmp_path / "evidence.json"
        target.write_text(raw, encoding="utf-8")
        result = invoke("report", "--evidence", target, "--out", tmp_path / "out", codes={2})
    else:
        folder = tmp_path / "run"
        shutil.copytree(run["out"], folder)
        target = folder / "manifest.json"
        target.write_text("9" * 5000 + target.read_text(encoding="utf-8"), encoding="utf-8")
        result = invoke("verify", folder, codes={1})     # not verified: the manifest cannot be read
    assert "digits" in result.output and "Traceback" not in result.output


# ----------------------------------------------------------------------------------------- unexpected types

def test_unexpected_types_in_findings_json_are_read_as_absent(tmp_path, run):
    """Before: metadata.checks_files: 5 ended diff in a TypeError (exit 1, which scripts read as 'worse')."""
    edited = tmp_path / "edited"
    shutil.copytree(run["out"], edited)
    document = json.loads((edited / "findings.json").read_text(encoding="utf-8"))
    document["metadata"].update(checks_files=5, tool_version=[1], collected_at={"a": 1}, target="x")
    (edited / "findings.json").write_text(json.dumps(document), encoding="utf-8")
    assert invoke("diff", run["out"], edited, codes={0}).exit_code == 0
    assert invoke("diff", edited, run["out"], codes={0}).exit_code == 0


def test_unexpected_types_in_a_manifest_are_a_damaged_manifest(tmp_path, run):
    """Before: run.checks[].sha256 as a list ended verify in 'unhashable type' (exit 1 with a traceback)."""
    folder = tmp_path / "run"
    shutil.copytree(run["out"], folder)
    document = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    document["run"]["checks"][0]["sha256"] = ["x"]
    (folder / "manifest.json").write_text(json.dumps(document), encoding="utf-8")
    assert "MANIFEST manifest.json" in invoke("verify", folder, codes={1}).output


# -------------------------------------------------------------------------------------- writing outputs

def test_a_rerun_never_deletes_through_a_symlinked_folder_nor_trips_on_a_listed_folder(tmp_path, run):
    """Before: a manifest listing link/precious.txt, with link a symlink to another folder, deleted that file; a
    listed directory ended the run in IsADirectoryError."""
    victim = tmp_path / "elsewhere"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me", encoding="utf-8")
    folder = tmp_path / "run"
    shutil.copytree(run["out"], folder)
    (folder / "link").symlink_to(victim, target_is_directory=True)
    (folder / "adir").mkdir()
    (tmp_path / "outside.txt").write_text("keep me too", encoding="utf-8")
    document = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    for name in ("link/precious.txt", "adir", "link", "../outside.txt"):
        document["files"][name] = {"sha256": "0" * 64, "size": 1, "role": "output"}
    (folder / "manifest.json").write_text(json.dumps(document), encoding="utf-8")
    invoke("report", "--evidence", run["evidence"], "--out", folder, codes={0})
    assert (victim / "precious.txt").read_text(encoding="utf-8") == "keep me"
    assert (tmp_path / "outside.txt").exists() and (folder / "adir").is_dir() and (folder / "link").is_symlink()


def test_outputs_are_never_written_through_a_symlinked_folder(tmp_path, run):
    victim = tmp_path / "elsewhere"
    victim.mkdir()
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "inputs").symlink_to(victim, target_is_directory=True)
    checks = tmp_path / "site.yaml"
    from tests.support.common import SITE_CHECKS
    checks.write_text(SITE_CHECKS, encoding="utf-8")
    result = invoke("report", "--evidence", run["evidence"], "--checks", checks, "--out", folder, codes={4})
    assert "symbolic link" in error_line(result, folder / "inputs")
    assert list(victim.iterdir()) == []


def test_an_output_folder_under_a_file_is_exit_4_in_one_line(tmp_path, run):
    """Before: NotADirectoryError, a traceback with exit 1."""
    (tmp_path / "file").write_text("x", encoding="utf-8")
    result = invoke("report", "--evidence", run["evidence"], "--out", tmp_path / "file" / "out", codes={4})
    error_line(result, tmp_path / "file" / "out")


def test_a_full_disk_is_exit_4_in_one_line_and_leaves_no_temporary_file(tmp_path, run, monkeypatch):
    def full(_fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    result = invoke("report", "--evidence", run["evidence"], "--out", tmp_path / "out", codes={4})
    assert "No space left on device" in error_line(result, tmp_path / "out")
    assert leftovers(tmp_path / "out") == []


# ----------------------------------------------------------------------------------------------- CLIXML reasons

@pytest.mark.parametrize("payload,reason", [
    (b'<Objs Version="1.1.0.1"><S>\xff</S></Objs>', "malformed UTF-8 text at byte 27"),
    (b"\xff\xfe" + '<Objs Version="1.1.0.1"></Objs>'.encode("utf-16-le") + b"x",
     "malformed UTF-16-LE text at byte 64: the file ends inside a character"),
])
def test_a_clixml_file_with_one_bad_byte_is_malformed_at_that_byte(tmp_path, payload, reason):
    """Before: 'skipped: neither CLIXML nor JSON', as if the file were something else."""
    folder = tmp_path / "import"
    folder.mkdir()
    (folder / "a.xml").write_bytes(payload)
    result = invoke("import", folder, "--out", tmp_path / "out", codes={4})
    assert f"malformed: a.xml: {reason}" in result.stderr, result.stderr


# ------------------------------------------------------------------------------------------- offline import bounds

def _bounded_run(*args: object, memory_mb: int, seconds: float) -> subprocess.CompletedProcess[str]:
    """hma-check in a child process under an address-space limit: past it, a MemoryError, which is a traceback."""
    import resource

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory_mb * 1024 * 1024, memory_mb * 1024 * 1024))

    return subprocess.run([sys.executable, "-m", "hma_check", *map(str, args)], capture_output=True, text=True,
                          timeout=seconds, preexec_fn=limit)


def test_a_zip_of_small_members_inflating_1000_times_stays_small(tmp_path):
    """Before: a 1.7 MB zip of 1 MB members (the ratio was checked only above 1 MB) reached 4 GB and a MemoryError
    after 4 minutes, every parsed file kept until the end."""
    import zipfile

    header = '<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">'
    body = (header + "<S>a</S>" * ((1024 * 1024 - len(header) - 7) // 8)).ljust(1024 * 1024 - 7) + "</Objs>"
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for index in range(300):
            archive.writestr(f"f{index:04}.xml", body.encode("ascii"))
    result = _bounded_run("import", bomb, "--out", tmp_path / "out", memory_mb=1024, seconds=120)
    assert result.returncode == 4 and "Traceback" not in result.stderr, result.stderr[-2000:]
    # every member refused (the terminal groups identical reasons into one line that counts them)
    assert "300 malformed" in result.stderr and "refused as a zip bomb" in result.stderr


def test_a_zip_that_needs_a_newer_zip_version_is_one_line(tmp_path):
    """Before: a central directory asking for 'version needed to extract' 11.9 (one byte flipped, found by
    test_fuzz_import_zip) raised zipfile's NotImplementedError as a traceback."""
    import zipfile

    archive = tmp_path / "collection.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("a.xml", b"<Objs/>")
    data = bytearray(archive.read_bytes())
    central = data.rindex(b"PK\x01\x02")
    data[central + 6] = 119          # version needed to extract: 11.9 (zipfile reads up to 6.3)
    archive.write_bytes(bytes(data))
    result = invoke("import", archive, "--out", tmp_path / "out", codes={2})
    assert "zip file version 11.9" in error_line(result, archive)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------ secrets never echoed

SECRET = "Zq8xPaste4dS3cretValue"   # looks like a client secret; also a valid environment-variable name
TENANT = "6f1c2a9e-3b7d-4c11-9a2e-5d8f0b4c7e21"
CLIENT = "55bbc8c9-b24d-4afc-8d80-1edaf6969c74"
WRONG_FIELD = {   # case: (the configuration, the field the error must name)
    "tenant_id": (f"graph: {{tenant_id: {SECRET}, client_id: {CLIENT}, client_secret_env: X}}", "graph.tenant_id"),
    "client_id": (f"graph: {{tenant_id: {TENANT}, client_id: {SECRET}, client_secret_env: X}}", "graph.client_id"),
    "credential": (f"graph: {{tenant_id: {TENANT}, client_id: {CLIENT}, credential: {SECRET}}}", "graph.credential"),
    "authority with userinfo": (f"graph: {{tenant_id: {TENANT}, client_id: {CLIENT}, client_secret_env: X, "
                                f"authority: 'https://app:{SECRET}@login.example.com'}}", "graph.authority"),
    "graph_url with access_token": (f"graph: {{tenant_id: {TENANT}, client_id: {CLIENT}, client_secret_env: X, "
                                    f"graph_url: 'https://graph.example.com/v1.0?access_token={SECRET}'}}",
                                    "graph.graph_url"),
    "exchange path with access_token": (f"exchange: {{server: mail.contoso.com, "
                                        f"path: 'PowerShell?access_token={SECRET}'}}", "exchange.path"),
    "probe host with userinfo": (f"probes: {{hosts: ['https://admin:{SECRET}@mail.contoso.com:443']}}",
                                 "probes.hosts[0]"),
    "password_env holding the password": (f"exchange: {{server: 127.0.0.1, username: u, auth: ntlm, "
                                          f"password_env: {SECRET}}}", "exchange.password_env"),
    "client_secret_env holding the secret": (f"graph: {{tenant_id: {TENANT}, client_id: {CLIENT}, "
                                             f"client_secret_env: {SECRET}}}", "client_secret_env"),
}


@pytest.mark.parametrize("case", sorted(WRONG_FIELD))
def test_a_secret_in_the_wrong_field_is_never_echoed(tmp_path, case, monkeypatch):
    """Before: 'must be the tenant id (a GUID), got '<the secret>'', '... got 'https://app:<secret>@...'', 'set the
    environment variable <the secret>': the error printed the value it refused."""
    monkeypatch.delenv(SECRET, raising=False)
    config = tmp_path / "scan.yaml"
    text, field = WRONG_FIELD[case]
    config.write_text(text + "\n", encoding="utf-8")
    result = invoke("scan", "--config", config, "--out", tmp_path / "out", codes={2})
    assert SECRET not in result.output, result.output
    assert field in error_line(result, "")
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------ validate before collecting

BAD_CHECKS = "version: 1\nchecks:\n  - id: SITE-X-001\n    title: t\n"


def test_scan_validates_checks_before_it_collects_or_writes(tmp_path, monkeypatch):
    """Before: the scan ran, overwrote evidence.json, and only then found the checks file bad."""
    checks = tmp_path / "site.yaml"
    checks.write_text(BAD_CHECKS, encoding="utf-8")
    config = tmp_path / "scan.yaml"
    config.write_text("exchange: {server: 127.0.0.1, port: 1, username: u, auth: ntlm, connect_timeout: 1}\n",
                      encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()
    (out / "evidence.json").write_text("the previous run's", encoding="utf-8")
    monkeypatch.setenv("HMA_CHECK_EXCHANGE_PASSWORD", "not-used")
    result = invoke("scan", "--config", config, "--checks", checks, "--out", out, codes={2})
    assert "SITE-X-001" in error_line(result, checks, 3)
    assert (out / "evidence.json").read_text(encoding="utf-8") == "the previous run's"
    assert "collector" not in result.stderr   # no summary table: nothing was collected


def test_import_validates_exemptions_before_it_imports_or_writes(tmp_path):
    exemptions = tmp_path / "cab.yaml"
    exemptions.write_text("version: 1\nexemptions:\n  - check: HMA-NOPE-001\n", encoding="utf-8")
    folder = tmp_path / "import"
    folder.mkdir()
    result = invoke("import", folder, "--exemptions", exemptions, "--out", tmp_path / "out", codes={2})
    error_line(result, exemptions, 3)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------- found by the fuzzers (tests/*fuzz*)

def test_names_too_long_to_be_files_are_no_such_file(tmp_path, run):
    """Before: pathlib's is_file() raises for a name over NAME_MAX (errno 36), where it returns False for others:
    `extends:` in a scenario, a configuration's file paths and the command's own paths ended in a traceback."""
    long = "a" * 300
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(f"extends: {long}\nname: x\n", encoding="utf-8")
    assert "extends" in error_line(invoke("demo", "--scenario-file", scenario, "--out", tmp_path / "o1", codes={2}),
                                   scenario, 1)
    config = tmp_path / "scan.yaml"
    config.write_text(f"exchange: {{server: mail, ca_file: {long}}}\n", encoding="utf-8")
    assert "ca_file" in error_line(invoke("scan", "--config", config, "--out", tmp_path / "o2", codes={2}), config, 1)
    invoke("diff", run["out"], tmp_path / long, codes={2})
    invoke("verify", tmp_path / long, codes={2})
    invoke("import", tmp_path / long, "--out", tmp_path / "o3", codes={2})


def test_an_unknown_home_directory_is_no_such_file(tmp_path):
    """Before: Path.expanduser() raises RuntimeError for '~nosuchuser/...'."""
    config = tmp_path / "scan.yaml"
    config.write_text("exchange: {server: mail, ca_file: ~nosuchuser9/ca.pem}\n", encoding="utf-8")
    assert "ca_file" in error_line(invoke("scan", "--config", config, "--out", tmp_path / "o", codes={2}), config, 1)


def test_a_previous_manifest_listing_a_path_under_a_file_is_left_alone(tmp_path, run):
    """Before the fix (found while fuzzing): 'report.html/x' made the clean-up raise NotADirectoryError."""
    folder = tmp_path / "run"
    shutil.copytree(run["out"], folder)
    document = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    document["files"]["report.html/x"] = {"sha256": "0" * 64, "size": 1, "role": "output"}
    document["files"]["a" * 300] = {"sha256": "0" * 64, "size": 1, "role": "output"}
    (folder / "manifest.json").write_text(json.dumps(document), encoding="utf-8")
    invoke("verify", folder, codes={1})
    invoke("report", "--evidence", run["evidence"], "--out", folder, codes={0})


def test_an_expression_nested_too_deeply_for_jinja_is_refused_in_one_line(tmp_path):
    """Found by the checks fuzzer: Jinja's parser recurses per bracket, and 400 of them were a RecursionError."""
    checks = tmp_path / "site.yaml"
    checks.write_text(SITE_CHECKS_FOR_NESTING.replace("EXPR", "(" * 400 + "true" + ")" * 400), encoding="utf-8")
    assert "nested too deeply" in error_line(invoke("checks", "validate", checks, codes={2}), checks)


SITE_CHECKS_FOR_NESTING = """version: 1
checks:
  - id: SITE-ORG-001
    title: t
    area: organization
    severity: blocker
    assert: "EXPR"
    expect: x
    actual: "x"
    why: because
    references: [https://learn.microsoft.com/x]
"""


def test_the_installed_entry_point_prints_one_line_and_no_traceback(tmp_path, run):
    """The same inputs through `python -m hma_check` (hma_check.cli.main), where a traceback would reach stderr."""
    evil_yaml = tmp_path / "evil.yaml"
    evil_yaml.write_text("version: 1\nchecks: " + "[" * 5000 + "\n", encoding="utf-8")
    evil_json = tmp_path / "evidence.json"
    evil_json.write_text('{"schema_version": 1, "x": "\\ud800"}', encoding="utf-8")
    for args, code in ((["checks", "validate", evil_yaml], 2),
                       (["report", "--evidence", evil_json, "--out", tmp_path / "o1"], 2),
                       (["report", "--evidence", run["evidence"], "--as-of", "0001-01-01T00:00:00+01:00", "--out",
                         tmp_path / "o2"], 2),
                       (["scan", "--config", "/dev/zero", "--out", tmp_path / "o3"], 2)):
        result = subprocess.run([sys.executable, "-m", "hma_check", *map(str, args)], capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == code and "Traceback" not in result.stderr, (args, result.stderr)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 or (len(lines) == 3 and lines[0].startswith("Usage:")), result.stderr   # click's
