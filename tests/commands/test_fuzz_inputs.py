"""Property-based fuzzing of every input surface (issue 13): checks, exemptions, scan configuration, scenario,
evidence.json, findings.json (diff and --baseline), manifest.json (verify, and a run written over it), CLIXML, and
import folders and zips.

For any input: an exit code the command documents, never a Python traceback, one error line that names the file (and
a line of it when it gives one), bounded time (a deadline per example) and memory (an address-space limit per
example), nothing half-written, nothing outside the output folder touched. Commands run in-process through click's
runner; the scan configuration and the scenario are fuzzed at their loaders when a valid file would start a scan or a
lab, and through the command line when it is refused.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import zipfile
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from hma_check.errors import InputError
from tests.support import baseline
from tests.support.common import SITE_CHECKS
from tests.support.fuzz import (FUZZ, HEAVY, JSON_SNIPPETS, XML_SNIPPETS, YAML_SNIPPETS, check_position, damaged,
                                examples, fresh, json_mutated, memory_bound, written)
from tests.support.hostile import EXIT_CODES, error_line, invoke, leftovers
from tests.support.offline_fixtures import e19_dir

SECONDS = 30      # per example: every command here answers a valid input in a second or two
MEMORY_MB = 1024  # per example, on top of what the worker already holds

EXEMPTIONS = b"""version: 1
exemptions:
  - check: HMA-TLS-004
    subject: EX01
    reason: scanner appliance until Q1
    approved_by: Jane Doe (CAB-2291)
    expires: 2027-03-31
"""
SCENARIO = b"""extends: ready
name: fuzzed
description: one server more
expect: {}
servers:
  - name: EX01
  - name: EX03
    fqdn: ex03.contoso.com
    build: "15.2.2562.17"
faults:
  - {cmdlet: Get-MapiVirtualDirectory, server: EX03, error: "The operation could not be performed."}
"""


def yaml_inputs(seed: bytes) -> st.SearchStrategy[bytes]:
    """Damaged bytes of ``seed``, or its data with values replaced by any type and dumped again."""
    structured = json_mutated(_plain(yaml.safe_load(seed))).map(
        lambda data: yaml.safe_dump(data, allow_unicode=True).encode("utf-8"))
    return st.one_of(damaged(seed, YAML_SNIPPETS), structured)


def json_inputs(seed: bytes) -> st.SearchStrategy[bytes]:
    structured = json_mutated(json.loads(seed)).map(lambda data: json.dumps(data).encode("utf-8"))
    return st.one_of(damaged(seed, JSON_SNIPPETS), structured)


def _plain(data):
    return json.loads(json.dumps(data, default=str))


def refused_in_one_line(result, file: Path) -> None:
    """An exit 2 names ``file`` in one line (with a line of it, if any); nothing else may be printed as an error."""
    if result.exit_code == 2:
        check_position(error_line(result, file), file)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from hma_check.commands.pipeline import run_report

    root = tmp_path_factory.mktemp("fuzz-run")
    baseline.build().save(root / "evidence.json")
    run_report(root / "evidence.json", root / "run")
    return root


pytestmark = pytest.mark.filterwarnings("ignore:Duplicate name:UserWarning")


# ------------------------------------------------------------------------------------------------ checks files

CHECKS_SEED = SITE_CHECKS.encode("utf-8")


@settings(FUZZ, max_examples=examples(40))
@given(data=yaml_inputs(CHECKS_SEED))
def test_fuzz_checks_files(tmp_path, data):
    """At the loader (the command adds the shipped catalogue, half a second each), and one in four through
    `checks validate`: chosen by the input's hash, since a drawn integer lands on 0 far more than one time in four."""
    from hma_check.evaluate.checks import load_checks

    through_the_command = hashlib.sha256(data).digest()[0] % 4 == 0

    path = fresh(tmp_path, "checks")
    path.write_bytes(data)
    with memory_bound(MEMORY_MB):
        try:
            load_checks([path])
        except InputError as exc:
            assert "\n" not in str(exc) and str(exc).startswith(str(path)), str(exc)
            check_position(str(exc), path)
        if through_the_command:
            refused_in_one_line(invoke("checks", "validate", path, seconds=SECONDS), path)


# -------------------------------------------------------------------------------------------------- exemptions

@HEAVY
@given(data=yaml_inputs(EXEMPTIONS))
def test_fuzz_exemptions(tmp_path, run, data):
    path, out = fresh(tmp_path, "exemptions"), fresh(tmp_path, "out")
    path.write_bytes(data)
    with memory_bound(MEMORY_MB):
        result = invoke("report", "--evidence", run / "evidence.json", "--exemptions", path, "--out", out,
                        seconds=SECONDS)
    refused_in_one_line(result, path)
    assert result.exit_code != 2 or not out.exists(), "written although the input was refused"
    assert leftovers(out) == []


# ---------------------------------------------------------------------------------------------- scan configuration

CONFIG_SEED = b"""exchange:
  server: mail.contoso.com
  username: CONTOSO\\\\hma-reader
  auth: ntlm
  timeout: 30
os:
  hosts: {EX01: "10.0.0.11:5985"}
graph:
  tenant_id: 6f1c2a9e-3b7d-4c11-9a2e-5d8f0b4c7e21
  client_id: 55bbc8c9-b24d-4afc-8d80-1edaf6969c74
  client_secret_env: HMA_GRAPH_SECRET
probes:
  hosts: [mail.contoso.com]
  resolve: ["mail.contoso.com:443:10.0.0.11,10.0.0.12"]
  timeout: 5
options: {owa_ecp: true}
"""


@FUZZ
@given(data=yaml_inputs(CONFIG_SEED))
def test_fuzz_scan_configuration(tmp_path, data):
    """At the loader (a valid configuration would start a scan); through `scan` when the file is refused."""
    from hma_check.collect.config import load_config

    path = fresh(tmp_path, "scan.yaml")
    path.write_bytes(data)
    with memory_bound(MEMORY_MB):
        try:
            load_config(path)
        except InputError as exc:
            assert "\n" not in str(exc) and str(exc).startswith(str(path)), str(exc)
            result = invoke("scan", "--config", path, "--out", fresh(tmp_path, "out"), codes={2}, seconds=SECONDS)
            refused_in_one_line(result, path)


# ------------------------------------------------------------------------------------------------------ scenario

@FUZZ
@given(data=yaml_inputs(SCENARIO))
def test_fuzz_scenario(tmp_path, data):
    """At the loader (a valid scenario would start a lab); through `demo` when the file is refused."""
    from hma_lab.scenario import load_scenario_file

    path = fresh(tmp_path, "scenario.yaml")
    path.write_bytes(data)
    with memory_bound(MEMORY_MB):
        try:
            load_scenario_file(path)
        except InputError as exc:
            assert "\n" not in str(exc), str(exc)
            result = invoke("demo", "--scenario-file", path, "--out", fresh(tmp_path, "out"), codes={2},
                            seconds=SECONDS)
            assert error_line(result, "")


# ------------------------------------------------------------------------------------------------- evidence.json

@HEAVY
@given(data=st.data())
def test_fuzz_evidence(tmp_path, run, data):
    """The file damaged anywhere, or (so that examples reach the checks and the report) only the collected data of
    a few sources given unexpected types."""
    seed = (run / "evidence.json").read_bytes()
    if data.draw(st.booleans()):
        payload = data.draw(json_inputs(seed))
    else:
        document = json.loads(seed)
        keys = data.draw(st.lists(st.sampled_from(sorted(document["sources"])), min_size=1, max_size=3))
        for key in keys:
            document["sources"][key]["data"] = data.draw(json_mutated(document["sources"][key]["data"]))
        payload = json.dumps(document).encode("utf-8")
    path, out = fresh(tmp_path, "evidence.json"), fresh(tmp_path, "out")
    path.write_bytes(payload)
    with memory_bound(MEMORY_MB):
        result = invoke("report", "--evidence", path, "--out", out, seconds=SECONDS)
    refused_in_one_line(result, path)
    assert result.exit_code != 2 or not out.exists(), "written although the evidence was refused"
    assert leftovers(out) == []


# ------------------------------------------------------------------------------------ findings.json and --baseline

def _rehash(folder: Path, names: list[str]) -> None:
    """Make the manifest match edited files again (a --baseline must verify before its findings are read)."""
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    for name in names:
        payload = (folder / name).read_bytes()
        manifest["files"][name].update(sha256=hashlib.sha256(payload).hexdigest(), size=len(payload))
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")


@HEAVY
@given(data=st.data())
def test_fuzz_findings(tmp_path, run, data):
    payload = data.draw(json_inputs((run / "run" / "findings.json").read_bytes()))
    folder = fresh(tmp_path, "run")
    shutil.copytree(run / "run", folder)
    (folder / "findings.json").write_bytes(payload)
    with memory_bound(MEMORY_MB):
        compared = invoke("diff", run / "run", folder, seconds=SECONDS)
        refused_in_one_line(compared, folder / "findings.json")
        invoke("diff", folder / "findings.json", run / "run", seconds=SECONDS)
        _rehash(folder, ["findings.json"])
        out = fresh(tmp_path, "after")
        validated = invoke("report", "--evidence", run / "evidence.json", "--after-enable", "--baseline", folder,
                           "--out", out, seconds=SECONDS)
    if validated.exit_code == 2:
        error_line(validated, folder)
        assert not out.exists()


# ------------------------------------------------------------------------------------------------- manifest.json

@HEAVY
@given(data=st.data())
def test_fuzz_manifest_and_a_run_written_over_it(tmp_path, run, data):
    """verify reads any manifest; a new run into the folder removes only files really inside it."""
    payload = data.draw(json_inputs((run / "run" / "manifest.json").read_bytes()))
    outside = fresh(tmp_path, "outside")
    outside.mkdir()
    (outside / "precious.txt").write_text("keep", encoding="utf-8")
    folder = fresh(tmp_path, "run")
    shutil.copytree(run / "run", folder)
    (folder / "link").symlink_to(outside, target_is_directory=True)
    (folder / "manifest.json").write_bytes(payload)
    with memory_bound(MEMORY_MB):
        invoke("verify", folder, seconds=SECONDS)
        result = invoke("report", "--evidence", run / "evidence.json", "--out", folder, seconds=SECONDS)
    if result.exit_code == 4:
        error_line(result, folder)
    assert (outside / "precious.txt").read_text(encoding="utf-8") == "keep"
    assert leftovers(folder) == [] and (folder / "link").is_symlink()


@HEAVY
@given(names=st.lists(st.sampled_from(["link/precious.txt", "../outside/precious.txt", "report.html/x", "adir",
                                       "link", "/etc/hostname", "inputs", ".", "a\\b", "evidence.json"]),
                      min_size=1, max_size=5))
def test_fuzz_manifest_paths_never_reach_outside(tmp_path, run, names):
    outside = tmp_path / "outside"
    outside.mkdir(exist_ok=True)
    (outside / "precious.txt").write_text("keep", encoding="utf-8")
    folder = fresh(tmp_path, "run")
    shutil.copytree(run / "run", folder)
    (folder / "link").symlink_to(outside, target_is_directory=True)
    (folder / "adir").mkdir()
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    for name in names:
        manifest["files"][name] = {"sha256": "0" * 64, "size": 1, "role": "output"}
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    invoke("report", "--evidence", run / "evidence.json", "--out", folder, codes={0}, seconds=SECONDS)
    assert (outside / "precious.txt").read_text(encoding="utf-8") == "keep"
    assert (folder / "adir").is_dir() and (folder / "link").is_symlink()


# ------------------------------------------------------------------------------------------------------- CLIXML

CLIXML_SEEDS = [p.read_bytes() for p in sorted((e19_dir() / "Exchange").glob("*.xml"))
                if p.stat().st_size < 60_000][:4]


@settings(FUZZ, max_examples=examples(10))
@given(data=st.data())
def test_fuzz_clixml_import(tmp_path, data):
    seed = data.draw(st.sampled_from(CLIXML_SEEDS))
    folder, out = fresh(tmp_path, "import"), fresh(tmp_path, "out")
    folder.mkdir()
    (folder / "capture.xml").write_bytes(data.draw(damaged(seed, XML_SNIPPETS)))
    with memory_bound(MEMORY_MB):
        result = invoke("import", folder, "--out", out, seconds=SECONDS)
    assert result.exit_code != 2, result.output   # a damaged file is listed as malformed, never a usage error
    assert all(line.startswith(("imported ", "skipped: ", "malformed: ", "not placed: ", "evidence: ", "nothing ",
                                "1 file(s) hma-check reads could not be placed", "READY",
                                "NOT_READY", "INCOMPLETE", "report: ", "hma-check: error: "))
               for line in result.output.splitlines()), result.output
    assert leftovers(out) == []


# ---------------------------------------------------------------------------------------- import folders and zips

MEMBER_NAMES = ["a.xml", "dir/b.xml", "manifest.json", "graph.json", "../escape.xml", "/abs.xml", "C:\\win.xml",
                "dir/", "é 名前.xml", "a.xml", "x" * 300 + ".xml", ""]
GRAPH = json.dumps({"hmaCheckGraph": 1, "source": "graph.organization", "tenantId": baseline.TENANT,
                    "status": "ok", "data": {"id": baseline.TENANT}}).encode()
MANIFEST = json.dumps({"hmaCheckManifest": 1, "finishedAt": "2026-11-20T09:00:00Z", "entries": [
    {"source": "exchange.servers", "file": "a.xml", "status": "ok"},
    {"source": "exchange.auth_config", "status": "error", "error": "access denied"}]}).encode()


def members() -> st.SearchStrategy[list[tuple[str, bytes]]]:
    contents = st.one_of(st.sampled_from([*CLIXML_SEEDS, GRAPH, MANIFEST, b"", b"\x00" * 100]),
                         st.binary(max_size=200),
                         st.sampled_from([*CLIXML_SEEDS, GRAPH, MANIFEST]).flatmap(
                             lambda seed: damaged(seed, XML_SNIPPETS + JSON_SNIPPETS)))
    return st.lists(st.tuples(st.sampled_from(MEMBER_NAMES), contents), max_size=5)


@settings(FUZZ, max_examples=examples(10))
@given(entries=members(), compression=st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]),
       cut=st.one_of(st.none(), st.floats(0, 1)), flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)),
                                                                  max_size=3))
def test_fuzz_import_zip(tmp_path, entries, compression, cut, flips):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, content in entries:
            if name and not name.endswith("/"):
                archive.writestr(zipfile.ZipInfo(name), content)
    data = bytearray(buffer.getvalue())
    for where, value in flips:
        if data:
            data[int(where * (len(data) - 1))] = value
    if cut is not None:
        del data[int(len(data) * cut):]
    path, out = fresh(tmp_path, "collection.zip"), fresh(tmp_path, "out")
    path.write_bytes(bytes(data))
    with memory_bound(MEMORY_MB):
        result = invoke("import", path, "--out", out, seconds=SECONDS)
    if result.exit_code == 2:
        error_line(result, path)
        assert not out.exists()
    assert not (tmp_path / "escape.xml").exists() and leftovers(out) == []


@settings(FUZZ, max_examples=examples(10))
@given(entries=members(), links=st.lists(st.sampled_from(["/dev/zero", "/etc/hostname", "..", "missing"]),
                                         max_size=2))
def test_fuzz_import_folder(tmp_path, entries, links):
    folder, out = fresh(tmp_path, "folder"), fresh(tmp_path, "out")
    folder.mkdir()
    for name, content in entries:
        target = folder / name.lstrip("/").replace("..", "dotdot").replace("\\", "_")
        if not name or name.endswith("/") or len(target.name) > 200:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    for index, link in enumerate(links):
        (folder / f"link{index}.xml").symlink_to(link)
    with memory_bound(MEMORY_MB):
        result = invoke("import", folder, "--out", out, seconds=SECONDS)
    assert result.exit_code in EXIT_CODES["import"] and result.exit_code != 2, result.output
    assert leftovers(out) == [] and (result.exit_code != 4 or "report.html" not in written(out))
