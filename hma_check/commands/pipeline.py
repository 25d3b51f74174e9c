"""run_report(): saved evidence -> findings -> every output file, written only once all of them rendered."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from hma_check.util.atomic import inside, make_folder, remove_inside, write_inside
from hma_check.util.heap import collector_paused, long_lived
from hma_check.evaluate import compiled_store
from hma_check.evaluate.checks import CheckSet, load_checks
from hma_check.evaluate.engine import Evaluation, evaluate
from hma_check.errors import ExemptionsError, InputError
from hma_check.evaluate.exemptions import apply_exemptions, parse_exemptions
from hma_check.contract.findings import exit_code, verdict_of
from hma_check.runs.manifest import (MANIFEST_NAME, MAX_MANIFEST_BYTES, NOT_COVERED, build_manifest, parse_manifest,
                                     safe_relative, sha256_bytes)
from hma_check.render.model import Report, build_report
from hma_check.util.resources import checks_file, validation_checks_file
from hma_check.contract.snapshot import read_snapshot
from hma_check.runs.after_enable import load_baseline
from hma_check.util.read_file import read_limited
from hma_check.util.yaml_file import read_yaml_bytes

OUTPUTS = ("report.html", "report.md", "junit.xml", "findings.json", "enable.ps1", "rollback.ps1", "action-plan.csv")


@dataclass
class ReportOutcome:
    exit_code: int
    verdict: str
    counts: dict[str, int]
    out_dir: Path
    files: list[Path]
    report: Report


def load_all_checks(checks_files: list[str | Path] | None = None, *, builtin: bool = True,
                    validation: bool = False) -> CheckSet:
    """The shipped catalogue (or, for ``validation``, the post-change checks instead) plus the user's files."""
    shipped = validation_checks_file() if validation else checks_file()
    paths: list[str | Path] = [shipped] if builtin else []
    paths.extend(checks_files or [])
    return load_checks(paths)


def load_inputs(out_dir: str | Path, checks_files: list[str | Path] | None = None,
                exemptions_file: str | Path | None = None, *, builtin_checks: bool = True, after_enable: bool = False,
                baseline: str | Path | None = None) -> tuple[CheckSet, Any, bytes | None, list[Any]]:
    """Every input of a report besides the evidence, read and validated: the checks, the readiness run a validation
    follows (it must verify), the exemptions (their bytes, to copy, and parsed). InputError on the first problem.

    ``scan`` and ``import`` call this before they collect or write anything, so a bad checks or exemptions file is
    one line and exit 2 up front, not after a long scan with evidence.json already overwritten.
    """
    if baseline is not None and not after_enable:
        raise InputError("--baseline names the readiness run a validation follows: use it with --after-enable")
    if baseline is not None and Path(baseline).resolve() == Path(out_dir).resolve():
        raise InputError("--baseline is the --out folder: write the validation to a folder of its own, so the "
                         "readiness run stays as it was verified", path=str(baseline))
    checks = load_all_checks(checks_files, builtin=builtin_checks, validation=after_enable)
    readiness = load_baseline(baseline, Path(out_dir)) if baseline is not None else None
    exemptions_raw = read_yaml_bytes(exemptions_file, error=ExemptionsError) if exemptions_file else None
    exemptions = [] if exemptions_raw is None else parse_exemptions(exemptions_raw, str(exemptions_file),
                                                                    {c.id for c in checks.checks})
    return checks, readiness, exemptions_raw, exemptions


def run_report(evidence_path: str | Path, out_dir: str | Path, checks_files: list[str | Path] | None = None,
               exemptions_file: str | Path | None = None, *, builtin_checks: bool = True,
               as_of: datetime | None = None, pdf: bool = False, after_enable: bool = False,
               baseline: str | Path | None = None, covered: list[Path] | None = None) -> ReportOutcome:
    """Evaluate saved evidence and write every output, a copy of the evidence and of user inputs, then manifest.json.

    Bad input (evidence, checks, exemptions) raises an InputError before anything is written. Every output is
    rendered in memory first and then written atomically, so a failure leaves no half-written file; manifest.json
    (the SHA-256 and size of every file, see hma_check.runs.manifest) is written last. ``pdf`` adds report.pdf, printed
    by headless Chromium before anything is written (a missing browser is a ToolMissingError up front).

    ``after_enable`` evaluates the post-change validation checks (validation.yaml) instead of the catalogue and
    writes the short validated report; ``baseline`` names the readiness run it follows, which must verify against
    its manifest: the report links it, records its manifest hash and shows what changed in the facts since.
    ``covered``: files the command already wrote into ``out_dir`` for this run (the demo's scan-config.yaml); the
    manifest lists them as inputs.
    """
    from hma_check.render import render_all

    browser = None
    if pdf:     # imported only for --pdf: it brings subprocess, a few milliseconds every report would pay
        from hma_check.render.pdf import find_chromium

        browser = find_chromium()
    evidence_path, out_dir = Path(evidence_path), Path(out_dir)
    with long_lived() as heap:      # the evidence and the catalogue, held until the end: not walked by every collection
        with collector_paused():    # parsed and held before a collection would walk the million objects made
            evidence_bytes, snapshot = read_snapshot(evidence_path)
            heap.keep()
        checks, readiness, exemptions_raw, exemptions = load_inputs(
            out_dir, checks_files, exemptions_file, builtin_checks=builtin_checks, after_enable=after_enable,
            baseline=baseline)
        inputs, run = _inputs(checks, builtin_checks, exemptions_file, exemptions_raw)
        heap.keep()
        evaluation: Evaluation = evaluate(checks, snapshot, as_of=as_of)
        unused = apply_exemptions(evaluation.findings, exemptions, evaluation.as_of.date())
        verdict = verdict_of(evaluation.findings)
        anything = snapshot.collected_anything()
        code = exit_code(verdict, anything_collected=anything)
        evidence_sha256 = sha256_bytes(evidence_bytes)
        report = build_report(evaluation, exit_code=code, evidence_sha256=evidence_sha256,
                              unused_exemptions=unused, kind="validation" if after_enable else "readiness")
        if readiness is not None:
            readiness.attach(report, snapshot, out_dir)
        files: dict[str, bytes] = dict(render_all(report))
    if browser:
        from hma_check.render.pdf import html_to_pdf

        files["report.pdf"] = html_to_pdf(files["report.html"], browser)
    roles = {name: "output" for name in files}
    files["evidence.json"], roles["evidence.json"] = evidence_bytes, "evidence"
    for name, payload in inputs.items():
        files[name], roles[name] = payload, "input"
    kept = {"evidence.json"} if (out_dir / "evidence.json").resolve() == evidence_path.resolve() else set()
    for path in covered or []:
        name = Path(path).resolve().relative_to(out_dir.resolve()).as_posix()
        files[name], roles[name] = Path(path).read_bytes(), "input"
        kept.add(name)
    run.update(kind=report.kind, verdict=verdict, exit_code=code,
               evidence={"file": "evidence.json", "sha256": evidence_sha256},
               baseline={"folder": report.baseline["folder"], "manifest_sha256": report.baseline["manifest_sha256"]}
               if report.baseline else None)
    manifest = build_manifest(files, roles, run, hashed={"evidence.json": evidence_sha256})

    _write_run(out_dir, files, manifest, keep=kept)
    compiled_store.save()     # the catalogue compiled for this run, kept for the next (only once all went well)
    return ReportOutcome(exit_code=code, verdict=verdict, counts=report.counts, out_dir=out_dir,
                         files=sorted(out_dir / name for name in [*files, MANIFEST_NAME]), report=report)


def _inputs(checks: CheckSet, builtin: bool, exemptions_file: str | Path | None,
            exemptions_raw: bytes | None) -> tuple[dict[str, bytes], dict[str, Any]]:
    """Copies of the user's checks and exemptions files, so verify can recompute them; the shipped catalogue is
    named by hash and tool version instead (a copy would prove nothing the hash does not)."""
    copies: dict[str, bytes] = {}
    recorded: list[dict[str, Any]] = []
    for index, entry in enumerate(checks.files):
        if builtin and index == 0:
            recorded.append({"role": "builtin", "name": Path(entry["path"]).name, "sha256": entry["sha256"]})
            continue
        payload = _read_again(Path(entry["path"]), entry["sha256"])
        name = f"inputs/checks-{len(copies) + 1}-{_safe_name(entry['path'])}"
        copies[name] = payload
        recorded.append({"role": "user", "source": entry["path"], "copy": name, "sha256": entry["sha256"]})
    run: dict[str, Any] = {"checks": recorded, "exemptions": None}
    if exemptions_raw is not None and exemptions_file is not None:
        name = f"inputs/exemptions-{_safe_name(exemptions_file)}"
        copies[name] = exemptions_raw
        run["exemptions"] = {"source": str(exemptions_file), "copy": name, "sha256": sha256_bytes(exemptions_raw)}
    return copies, run


def _read_again(path: Path, sha256: str) -> bytes:
    payload = read_yaml_bytes(path)
    if sha256_bytes(payload) != sha256:
        raise InputError("changed while hma-check was reading it; run again", path=str(path))
    return payload


def _safe_name(path: str | Path) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", Path(path).name)[-80:] or "file"


def _write_run(out_dir: Path, files: dict[str, bytes], manifest: bytes, *, keep: set[str]) -> None:
    """Replace a previous run in the same folder: its manifest and signature go first (an interrupted write then
    leaves a folder that does not verify, never one that verifies against stale hashes), then the files it listed
    that this run does not write; the new manifest is written last.

    The previous manifest is anyone's text: only regular files that really lie inside the folder are ever removed
    (atomic.remove_inside), and nothing is written through a symbolic link to another folder (atomic.write_inside).
    """
    make_folder(out_dir)
    stale: list[str] = []
    previous = inside(out_dir, MANIFEST_NAME)
    if previous is not None and previous.is_file():
        try:
            document, _ = parse_manifest(read_limited(previous, MAX_MANIFEST_BYTES, what="manifest"))
        except InputError:
            document = None   # unreadable: nothing it lists is removed
        stale = [p for p in (document or {}).get("files", {}) if safe_relative(p) and p not in files]
    for name in [*sorted(NOT_COVERED), *stale]:
        remove_inside(out_dir, name)
    for name, payload in files.items():
        if name not in keep:
            write_inside(out_dir, name, payload)
    write_inside(out_dir, MANIFEST_NAME, manifest)
