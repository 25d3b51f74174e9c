"""Post-change validation (--after-enable): the readiness run it follows (--baseline), verified and summarised."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hma_check.errors import InputError
from hma_check.runs.manifest import SIGNATURE_NAME, verify_folder
from hma_check.runs.diff import Run, compare, load_run
from hma_check.contract.snapshot import Snapshot

VALIDATION_TEXT = {
    "READY": "Validated: HMA is switched on and every endpoint probed offers Entra ID sign-in",
    "NOT_READY": "Not validated: the switch has not taken effect everywhere",
    "INCOMPLETE": "Incomplete: no validation check failed, but some could not be evaluated",
}
VALIDATION_LABEL = {"READY": "VALIDATED", "NOT_READY": "NOT VALIDATED", "INCOMPLETE": "INCOMPLETE"}


@dataclass
class Baseline:
    summary: dict[str, Any]      # what the validated report and its manifest record about the readiness run
    run: Run                     # its findings and evidence, for the fact diff

    def attach(self, report: Any, snapshot: Snapshot, out_dir: Path) -> None:
        """Give the validated report its link to this run, the notes on the pairing and the facts changed since."""
        this_run = Run(label=str(out_dir), findings=[f.to_json() for f in report.findings], verdict=report.verdict,
                       metadata=report.metadata, snapshot=snapshot)
        report.baseline, report.changes = self.summary, compare(self.run, this_run)
        report.notes = baseline_notes(self.summary, report.metadata)


def load_baseline(folder: str | Path, out_dir: Path) -> Baseline:
    """The readiness run a validation follows; it must verify against its own manifest, or it proves nothing."""
    folder = Path(folder)
    verification = verify_folder(folder)
    if not verification.ok:
        first = verification.problems[0]
        raise InputError(f"--baseline does not verify against its manifest ({len(verification.problems)} "
                         f"problem(s), first: {first.kind} {first.path}); run 'hma-check verify {folder}'",
                         path=str(folder))
    run_info = verification.manifest.get("run", {})
    if run_info.get("kind") != "readiness":
        raise InputError(f"--baseline must be a readiness run; this one is {run_info.get('kind')!r}", path=str(folder))
    run = load_run(folder)
    report = folder.resolve() / "report.html"
    summary = {
        "folder": str(folder.resolve()),
        "report": os.path.relpath(report, out_dir.resolve()).replace(os.sep, "/"),
        "rollback": os.path.relpath(folder.resolve() / "rollback.ps1", out_dir.resolve()).replace(os.sep, "/"),
        "manifest_sha256": verification.manifest_sha256,
        "signed": (folder / SIGNATURE_NAME).is_file(),
        "verdict": run.verdict,
        "generated_at": run.metadata.get("generated_at"),
        "collected_at": run.metadata.get("collected_at"),
        "evidence_sha256": run.metadata.get("evidence_sha256"),
        "organization": run.organization,
    }
    return Baseline(summary=summary, run=run)


def baseline_notes(summary: dict[str, Any], metadata: dict[str, Any]) -> list[str]:
    """What a change board must notice about the pairing of the two runs."""
    notes = []
    if summary["verdict"] != "READY":
        notes.append(f"the readiness run this follows was {summary['verdict']}, not READY")
    organization = (metadata.get("target") or {}).get("organization")
    if summary["organization"] != organization:
        notes.append(f"the readiness run is of organization {summary['organization']!r}, this one of "
                     f"{organization!r}")
    if summary["collected_at"] and metadata.get("collected_at") and metadata["collected_at"] < summary["collected_at"]:
        notes.append("this evidence was collected before the readiness run's evidence")
    return notes
