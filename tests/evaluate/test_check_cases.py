"""Every shipped check has a PASS case, a FAIL case and an ERROR case (each required source missing)."""

from __future__ import annotations

import pytest
import yaml

from tests.support.common import TESTS
from tests.support.baseline import apply_ops
from tests.support import baseline
from hma_check.evaluate.engine import evaluate
from hma_check.contract.findings import ERROR, NOT_APPLICABLE, PASS

CASES = yaml.safe_load((TESTS / "check_cases.yaml").read_text(encoding="utf-8"))


def _findings(catalogue, snapshot, check_id):
    check = next(c for c in catalogue.checks if c.id == check_id)
    from hma_check.evaluate.checks import CheckSet

    only = CheckSet(checks=[check], areas=catalogue.areas)
    return evaluate(only, snapshot).findings


def test_every_shipped_check_has_pass_and_fail_cases(catalogue):
    shipped = [c.id for c in catalogue.checks]
    missing = [cid for cid in shipped if cid not in CASES or "pass" not in CASES[cid] or not CASES[cid].get("fail")]
    assert not missing, f"checks without a PASS and a FAIL case in tests/check_cases.yaml: {missing}"
    stale = sorted(set(CASES) - set(shipped))
    assert not stale, f"cases for checks that do not exist: {stale}"
    # The ERROR cases are generated from `requires`: a check that required nothing would have none.
    without_error_case = [c.id for c in catalogue.checks if not c.requires]
    assert not without_error_case, f"checks with no required source, hence no ERROR case: {without_error_case}"


def _passes(finding):
    """PASS, or NOT_APPLICABLE for the baseline's Edge server, which has no per-server Exchange sources by design."""
    return finding.status == PASS or (finding.status == NOT_APPLICABLE and finding.subject == baseline.EDGE
                                      and "Edge Transport server" in (finding.reason or ""))


def test_the_baseline_passes_every_check(catalogue):
    findings = evaluate(catalogue, baseline.build()).findings
    not_passing = [(f.check_id, f.subject, f.status, f.reason or f.actual) for f in findings if not _passes(f)]
    assert not not_passing
    assert {f.check_id for f in findings} == {c.id for c in catalogue.checks}


def _fail_cases():
    for check_id, spec in CASES.items():
        for index, case in enumerate(spec.get("fail") or []):
            yield pytest.param(check_id, case, id=f"{check_id}-fail{index}")


@pytest.mark.parametrize("check_id,case", list(_fail_cases()))
def test_fail_case(catalogue, check_id, case):
    snapshot = apply_ops(baseline.build(), case["ops"])
    findings = _findings(catalogue, snapshot, check_id)
    expect = case["expect"]
    if isinstance(expect, str):
        assert expect in {f.status for f in findings}, [(f.subject, f.status, f.reason or f.actual) for f in findings]
    else:
        by_subject = {f.subject: f.status for f in findings}
        for subject, status in expect.items():
            assert by_subject.get(subject) == status, (subject, by_subject, [f.reason for f in findings])


@pytest.mark.parametrize("check_id", sorted(CASES))
def test_pass_case(catalogue, check_id):
    spec = CASES[check_id]["pass"]
    snapshot = baseline.build() if spec == "baseline" else apply_ops(baseline.build(), spec["ops"])
    findings = _findings(catalogue, snapshot, check_id)
    assert findings and all(_passes(f) for f in findings), [(f.subject, f.status) for f in findings]
    assert any(f.status == PASS for f in findings)


def _error_cases():
    for check in baseline.shipped_catalogue().checks:
        for source in check.requires:
            yield pytest.param(check.id, source, id=f"{check.id}-without-{source}")


@pytest.mark.parametrize("check_id,source", list(_error_cases()))
def test_missing_source_is_error_never_pass(catalogue, check_id, source):
    """Missing data never passes: with a required source not collected, every finding of the check is ERROR."""
    snapshot = apply_ops(baseline.build(), [{"fail": source}])
    findings = _findings(catalogue, snapshot, check_id)
    assert findings and all(f.status == ERROR for f in findings), [(f.subject, f.status) for f in findings]
    assert all(source in (f.reason or "") for f in findings)


@pytest.mark.parametrize("check_id,source", list(_error_cases()))
def test_absent_source_is_error_never_pass(catalogue, check_id, source):
    """The same when the source is not in the evidence at all (a collector that never ran)."""
    snapshot = baseline.build()
    for key in [k for k, r in snapshot.sources.items() if r.name == source]:
        del snapshot.sources[key]
    findings = _findings(catalogue, snapshot, check_id)
    assert findings and all(f.status == ERROR for f in findings)
