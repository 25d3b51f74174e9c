"""manifest.json and hma-check verify: every file of a run is hashed, and every edit, deletion or addition is named."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from tests.support.common import SAMPLE, SITE_CHECKS, copy_of
from hma_check.cli import cli
from hma_check.runs.manifest import MANIFEST_NAME, SIGNATURE_NAME, build_manifest, sha256_file, verify_folder
from hma_check.commands.pipeline import OUTPUTS, run_report

EXEMPTIONS = """\
version: 1
exemptions:
  - check: SITE-ORG-001
    reason: test
    approved_by: Jane Doe (CAB-1)
    expires: 2099-01-01
"""


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """One report with a user checks file and an exemptions file; tests work on copies of it."""
    inputs = tmp_path_factory.mktemp("inputs")
    (inputs / "site checks.yaml").write_text(SITE_CHECKS, encoding="utf-8")
    (inputs / "cab.yaml").write_text(EXEMPTIONS, encoding="utf-8")
    out = tmp_path_factory.mktemp("run") / "out"
    run_report(SAMPLE, out, [inputs / "site checks.yaml"], inputs / "cab.yaml")
    return out


@pytest.fixture()
def folder(run_folder, tmp_path):
    return copy_of(run_folder, tmp_path)


def verify(path, *args):
    return CliRunner().invoke(cli, ["verify", str(path), *args])


def test_the_manifest_lists_every_file_with_its_hash_and_the_inputs_that_made_it(run_folder):
    manifest = json.loads((run_folder / MANIFEST_NAME).read_text(encoding="utf-8"))
    files = manifest["files"]
    assert set(OUTPUTS) | {"evidence.json", "inputs/checks-1-site_checks.yaml", "inputs/exemptions-cab.yaml"} <= set(files)
    for name, entry in files.items():
        assert (entry["sha256"], entry["size"]) == sha256_file(run_folder / name), name
    assert files["evidence.json"]["sha256"] == sha256_file(SAMPLE)[0]
    assert (run_folder / "inputs/checks-1-site_checks.yaml").read_text(encoding="utf-8") == SITE_CHECKS
    builtin, user = manifest["run"]["checks"]
    assert builtin["role"] == "builtin" and builtin["name"] == "checks.yaml" and "copy" not in builtin
    assert user["copy"] == "inputs/checks-1-site_checks.yaml" and user["sha256"] == files[user["copy"]]["sha256"]
    assert manifest["run"]["exemptions"]["copy"] == "inputs/exemptions-cab.yaml"
    assert manifest["run"]["verdict"] == "NOT_READY" and manifest["tool_version"]
    assert manifest["created_at"].endswith("Z")


def test_an_untouched_folder_verifies(run_folder):
    result = verify(run_folder)
    assert result.exit_code == 0, result.output
    assert "files: 10 match manifest.json" in result.output and "verified (unsigned" in result.output
    assert "built-in checks.yaml: identical to the one in this installed hma-check" in result.output


def test_an_edited_report_is_named(folder):
    html = folder / "report.html"
    html.write_text(html.read_text(encoding="utf-8").replace("NOT READY", "READY"), encoding="utf-8")
    result = verify(folder)
    assert result.exit_code == 1
    assert "MODIFIED report.html: " in result.output and "NOT VERIFIED: 1 problem(s)" in result.output


def test_an_edited_evidence_file_is_named(folder):
    evidence = folder / "evidence.json"
    edited = evidence.read_bytes().replace(b'"OAuth2ClientProfileEnabled":false', b'"OAuth2ClientProfileEnabled":true', 1)
    assert edited != evidence.read_bytes()
    evidence.write_bytes(edited)
    result = verify(folder)
    assert result.exit_code == 1 and "MODIFIED evidence.json" in result.output


def test_a_deleted_output_and_an_added_file_are_named(folder):
    (folder / "rollback.ps1").unlink()
    (folder / "inputs" / "notes.txt").write_text("x", encoding="utf-8")
    result = verify(folder)
    assert result.exit_code == 1
    assert "MISSING rollback.ps1: listed in the manifest" in result.output
    assert "ADDED inputs/notes.txt: in the folder but not in the manifest" in result.output


def test_an_edited_copy_of_the_checks_file_is_named(folder):
    (folder / "inputs/checks-1-site_checks.yaml").write_text(SITE_CHECKS.replace("blocker", "info"), encoding="utf-8")
    result = verify(folder)
    assert result.exit_code == 1 and "MODIFIED inputs/checks-1-site_checks.yaml" in result.output


def test_a_swapped_evidence_with_a_rewritten_manifest_is_inconsistent(folder):
    """Rehashing everything after swapping the evidence still contradicts findings.json's own evidence hash."""
    evidence = folder / "evidence.json"
    evidence.write_bytes(evidence.read_bytes().replace(b"laptop01", b"laptop02"))
    manifest = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
    files = {name: (folder / name).read_bytes() for name in manifest["files"]}
    roles = {name: entry["role"] for name, entry in manifest["files"].items()}
    (folder / MANIFEST_NAME).write_bytes(build_manifest(files, roles, manifest["run"]))
    result = verify(folder)
    assert result.exit_code == 1
    assert "INCONSISTENT evidence.json: findings.json was evaluated from evidence" in result.output


def test_a_damaged_or_hostile_manifest_fails_without_reading_outside(folder, tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("secret", encoding="utf-8")
    manifest = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
    manifest["files"]["../outside.txt"] = {"sha256": "0" * 64, "size": 6, "role": "output"}
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest), encoding="utf-8")
    result = verify_folder(folder)
    assert [(p.kind, p.path) for p in result.problems] == [("manifest", "../outside.txt")]

    (folder / MANIFEST_NAME).write_bytes(b'{"tool": "hma-check", "files": {')
    cli_result = verify(folder)
    assert cli_result.exit_code == 1 and "MANIFEST manifest.json: not valid JSON" in cli_result.output


def test_a_rehashed_manifest_or_findings_of_the_wrong_shape_is_a_problem_not_a_crash(folder):
    """Edited by hand and rehashed: verify names what is wrong instead of failing with a traceback."""
    manifest = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
    roles = {name: entry["role"] for name, entry in manifest["files"].items()}

    def rehash(run):
        files = {name: (folder / name).read_bytes() for name in manifest["files"]}
        (folder / MANIFEST_NAME).write_bytes(build_manifest(files, roles, run))
        return verify(folder)

    for run in ([], dict(manifest["run"], checks=["checks.yaml"])):
        result = rehash(run)
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception
        assert "MANIFEST manifest.json: its 'run' record is not an object" in result.output
    findings = json.loads((folder / "findings.json").read_text(encoding="utf-8"))
    for metadata in ([], dict(findings["metadata"], checks_files=[1])):
        (folder / "findings.json").write_text(json.dumps(dict(findings, metadata=metadata)), encoding="utf-8")
        result = rehash(manifest["run"])
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception
        assert "INCONSISTENT findings.json: not a readable findings document" in result.output


def test_a_folder_without_a_manifest_is_a_usage_error(tmp_path):
    result = verify(tmp_path)
    assert result.exit_code == 2 and "no manifest.json here" in result.output


def test_a_new_run_in_the_same_folder_removes_what_the_old_one_wrote_and_its_signature(folder):
    (folder / SIGNATURE_NAME).write_bytes(b"a signature of the previous manifest")
    run_report(folder / "evidence.json", folder)   # no user checks, no exemptions this time
    assert not (folder / "inputs" / "exemptions-cab.yaml").exists() and not (folder / SIGNATURE_NAME).exists()
    result = verify(folder)
    assert result.exit_code == 0, result.output
