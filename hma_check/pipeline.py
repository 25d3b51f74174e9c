"""run_report(): saved evidence -> findings -> every output file, written only once all of them rendered."""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from hma_check.atomic import write_all_atomic
from hma_check.checks import CheckSet, load_checks
from hma_check.engine import Evaluation, evaluate
from hma_check.exemptions import apply_exemptions, load_exemptions
from hma_check.findings import exit_code, verdict_of
from hma_check.report_model import Report, build_report
from hma_check.resources import checks_file
from hma_check.snapshot import load_snapshot

OUTPUTS = ("report.html", "report.md", "junit.xml", "findings.json", "enable.ps1", "rollback.ps1")


@dataclass
class ReportOutcome:
    exit_code: int
    verdict: str
    counts: dict[str, int]
    out_dir: Path
    files: list[Path]
    report: Report


def load_all_checks(checks_files: list[str | Path] | None = None, *, builtin: bool = True) -> CheckSet:
    paths: list[str | Path] = [checks_file()] if builtin else []
    paths.extend(checks_files or [])
    return load_checks(paths)


def run_report(evidence_path: str | Path, out_dir: str | Path, checks_files: list[str | Path] | None = None,
               exemptions_file: str | Path | None = None, *, builtin_checks: bool = True,
               as_of: datetime | None = None) -> ReportOutcome:
    """Evaluate saved evidence and write report.html, report.md, junit.xml, findings.json, enable.ps1, rollback.ps1.

    Bad input (evidence, checks, exemptions) raises an InputError before anything is written. Every output is
    rendered in memory first and then written atomically, so a failure leaves no half-written file.
    """
    from hma_check.render import render_all

    evidence_path, out_dir = Path(evidence_path), Path(out_dir)
    snapshot = load_snapshot(evidence_path)
    evidence_sha256 = hashlib.sha256(evidence_path.read_bytes()).hexdigest()
    checks = load_all_checks(checks_files, builtin=builtin_checks)
    exemptions = load_exemptions(exemptions_file, {c.id for c in checks.checks}) if exemptions_file else []

    evaluation: Evaluation = evaluate(checks, snapshot, as_of=as_of)
    unused = apply_exemptions(evaluation.findings, exemptions, evaluation.as_of.date())
    verdict = verdict_of(evaluation.findings)
    anything = snapshot.collected_anything()
    code = exit_code(verdict, anything_collected=anything)
    report = build_report(evaluation, exit_code=code, evidence_sha256=evidence_sha256, unused_exemptions=unused)

    rendered = render_all(report)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {out_dir / name: payload for name, payload in rendered.items()}
    write_all_atomic(files)
    copy = out_dir / "evidence.json"
    if not copy.exists() or copy.resolve() != evidence_path.resolve():
        _copy_atomic(evidence_path, copy)
        files[copy] = b""
    return ReportOutcome(exit_code=code, verdict=verdict, counts=report.counts, out_dir=out_dir,
                         files=sorted(files), report=report)


def _copy_atomic(source: Path, target: Path) -> None:
    temporary = target.with_name(f".{target.name}.copy.tmp")
    shutil.copyfile(source, temporary)
    temporary.replace(target)
