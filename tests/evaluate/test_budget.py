"""The evaluation budget (hma_check.evaluate.budget): an expression that would hang or allocate gigabytes is ERROR with
the reason, in bounded time; what can only be over budget is refused by `checks validate`; the shipped catalogue
stays far below every limit."""

from __future__ import annotations

import json
import time

import pytest

from hma_check.contract.findings import ERROR, PASS
from hma_check.errors import ChecksError
from hma_check.evaluate import budget
from hma_check.evaluate.checks import load_checks
from hma_check.evaluate.engine import evaluate
from tests.support.hostile import deadline


# Each passes `checks validate` (nothing in the text is over budget) and hung or allocated gigabytes when evaluated.
# ``n`` is exchange.servers' length (3 in the baseline): the sizes depend on the evidence, not on literals.
HOSTILE = {
    "string multiplication": "('x' * (servers | length) * 1000000 * 1000) | length > 0",
    "a string doubled in a loop": None,
    "nested loops": None,
    "a list doubled in a loop": None,
    "repeated squaring": None,
    "str.center": "('x'.center((servers | length) * 1000000 * 1000)) | length > 0",
    "a format width": "('%' ~ ((servers | length) * 999999 * 1000) ~ 'd') % 1 != ''",
    "str.format width": "('{:' ~ ((servers | length) * 999999 * 1000) ~ '}').format(1) != ''",
    "replace growing": "(('a' * 5000) | replace('a', 'a' * 5000) | replace('a', 'aaaa')) | length > 0",
    "join of a repeated big string": "([('x' * 1000000)] * 1000) | join | length > 0",
    "slice into a billion lists": "[1, 2] | slice((servers | length) * 1000000 * 1000) | list | length > 0",
}
TEMPLATES = {
    "a string doubled in a loop": "{% set ns = namespace(s='ab') %}{% for i in range(100) %}"
                                  "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}",
    "nested loops": "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}x",
    "a list doubled in a loop": "{% set ns = namespace(s=[1]) %}{% for i in range(100) %}"
                                "{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s | length }}",
    "repeated squaring": "{% set ns = namespace(v=3) %}{% for i in range(40) %}{% set ns.v = ns.v * ns.v %}"
                         "{% endfor %}{{ ns.v > 1 }}",
}


def _checks(tmp_path, assertion: str | None, actual: str = "{{ 'ok' }}"):
    path = tmp_path / "site.yaml"
    path.write_text(f"""version: 1
checks:
  - id: SITE-BUDGET-001
    title: hostile
    area: organization
    severity: blocker
    requires: [exchange.servers]
    let:
      servers: exchange.servers
    assert: {json.dumps(assertion or 'true')}
    expect: x
    actual: {json.dumps(actual)}
    why: because
    references: [https://learn.microsoft.com/x]
""", encoding="utf-8")
    return load_checks([path])


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_expression_is_error_with_the_reason_in_bounded_time(tmp_path, snapshot, case):
    """Before: each of these passed `checks validate`, then hung the scan or ran it out of memory."""
    checks = _checks(tmp_path, HOSTILE[case], TEMPLATES.get(case, "{{ 'ok' }}"))
    started = time.monotonic()
    with deadline(budget.MAX_SECONDS + 15):
        finding, = evaluate(checks, snapshot).findings
    assert finding.status == ERROR, (finding.status, finding.actual)
    assert "over the evaluation budget" in finding.reason, finding.reason
    assert time.monotonic() - started < budget.MAX_SECONDS + 10


def test_what_can_only_be_over_budget_is_refused_by_checks_validate(tmp_path):
    for assertion, reason in (("exchange.servers | length ** 100000000 > 0", "power"),
                              ("('x' * 1000000000) | length > 0", "1000000000"),
                              ("'aaaa' is matching('(a+)+b')", "exponential"),
                              ("exchange.servers | selectattr('Name', 'matching', '(a|ab)*c') | list", "exponential")):
        with pytest.raises(ChecksError, match=reason):
            _checks(tmp_path, assertion)


GROWN = "(' ' | center(9000000) | replace(' ', '          '))"     # every number under the static limit


@pytest.mark.parametrize("actual", [
    "{{ " + GROWN + " }}",                                              # an output's filters on a literal
    "{% autoescape " + GROWN + " %}a{% endautoescape %}",                # an autoescape argument
    "{{ 'x' ~ " + GROWN + " }}",
])
def test_literals_are_not_evaluated_while_the_checks_are_loaded(tmp_path, snapshot, actual):
    """Jinja's code generator runs what it finds constant, outside any budget: loading these allocated 90 MB each
    (and any chain of such filters gigabytes) before the first finding. Now nothing is evaluated while compiling
    and the budget refuses them."""
    import tracemalloc

    tracemalloc.start()
    try:
        checks = _checks(tmp_path, None, actual)
        check, = checks.checks
        assert check.actual.run is not None      # compiled now, if it was left for its first use
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20, peak
    finding, = evaluate(checks, snapshot).findings
    assert finding.status == ERROR and "over the evaluation budget" in finding.reason, finding.reason


def test_an_exponential_pattern_from_the_evidence_is_refused_at_run_time(tmp_path, snapshot):
    checks = _checks(tmp_path, "('a' * 40) is matching(exchange.servers[0].Name ~ '(a+)+b')")
    finding, = evaluate(checks, snapshot).findings
    assert finding.status == ERROR and "exponential time" in finding.reason


def test_a_legitimate_check_is_untouched(tmp_path, snapshot):
    checks = _checks(tmp_path, "exchange.servers | map(attribute='Name') | join(',') | length > 2",
                     "{% for s in exchange.servers %}{{ s.Name ~ ';' }}{% endfor %}")
    finding, = evaluate(checks, snapshot).findings
    assert finding.status == PASS and finding.actual.count(";") == len(snapshot.sources["exchange.servers"].data)


def test_the_shipped_catalogue_uses_a_sliver_of_every_limit(catalogue, snapshot):
    """benchmarks/check_budget.py measures it at 50,000 users (under 2 % of the operations); on the baseline every
    evaluation stays below 0.1 % of the operations and the sizes."""
    peaks = {"operations": 0, "largest": 0, "output": 0}

    def record(used: budget.Budget, _source: str) -> None:
        for key in peaks:
            peaks[key] = max(peaks[key], getattr(used, key))

    with budget.observe(record):
        evaluate(catalogue, snapshot)
    assert peaks["operations"] and peaks["operations"] < budget.MAX_OPERATIONS / 1000
    assert peaks["largest"] < budget.MAX_LENGTH / 1000 and peaks["output"] < budget.MAX_LENGTH / 1000


# ----------------------------------------------------------------------------------------------------- fuzzing

ATOMS = ["'x'", "'ab'", "''", "'%5d'", "'{:>9}'", "[1, 2]", "[]", "none", "true", "exchange.servers",
         "exchange.servers | length", "exchange.servers[0].Name", "range(2000)", "now", "1.5", "-3"]
INFIX = ["*", "**", "+", "~", "%", "//", "-", "==", "in", "and"]
FILTERS = ["join", "list", "length", "replace('a', 'aaaa')", "center(5000)", "map('string')", "unique", "sort",
           "first", "string", "int", "batch(3)", "slice(2)", "indent(40)", "format(1)", "sum", "flatten", "toset",
           "url_host", "ps_quote", "tojson", "select('matching', 'a.*')"]


def expressions():
    from hypothesis import strategies as st

    atoms = st.one_of(st.sampled_from(ATOMS), st.integers(-(10 ** 12), 10 ** 12).map(str))
    return st.recursive(atoms, lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(INFIX), inner).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        st.tuples(inner, st.sampled_from(FILTERS)).map(lambda t: f"({t[0]} | {t[1]})"),
        st.tuples(inner, st.sampled_from(["center", "ljust", "zfill", "replace", "join", "split", "format"]),
                  inner).map(lambda t: f"({t[0]}).{t[1]}({t[2]})"),
    ), max_leaves=6)


def test_fuzz_expressions_end_in_a_status_within_the_budget(tmp_path, snapshot):
    """Any expression built from literals, the evidence, operators, filters and string methods: the check loads or
    is refused in one line, and evaluating it gives a status (ERROR with the reason when over budget), in bounded
    time and memory."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from hma_check.contract.findings import STATUSES
    from tests.support.fuzz import FUZZ, examples, fresh, memory_bound

    @settings(FUZZ, max_examples=examples(80))
    @given(expression=expressions(), loop=st.booleans())
    def one(expression, loop):
        actual = ("{% for i in " + expression + " %}{{ i }};{% endfor %}") if loop else "{{ " + expression + " }}"
        path = fresh(tmp_path, "site.yaml")
        path.write_text(f"""version: 1
checks:
  - id: SITE-FUZZ-001
    title: fuzzed
    area: organization
    severity: warning
    requires: [exchange.servers]
    assert: {json.dumps("(" + expression + ") is not none")}
    expect: x
    actual: {json.dumps(actual)}
    why: because
    references: [https://learn.microsoft.com/x]
""", encoding="utf-8")
        with memory_bound(1024), deadline(budget.MAX_SECONDS * 2 + 10):
            try:
                checks = load_checks([path])
            except ChecksError as exc:
                assert "\n" not in str(exc) and str(exc).startswith(str(path))
                return
            finding, = evaluate(checks, snapshot).findings
        assert finding.status in STATUSES
        assert finding.status != ERROR or (finding.reason and "\n" not in finding.reason)

    one()


@pytest.mark.parametrize("name", ["smtp_domain", "url_host", "url_key"])
def test_a_text_filter_mapped_a_chunk_at_a_time_counts_as_item_by_item(name):
    """map('smtp_domain') over thousands of mailboxes is metered a chunk at a time: the same results, operations
    and largest size as the item-by-item path, and a long result is still refused."""
    from hma_check.evaluate import expr

    function = expr.FILTERS[name]
    items = [f"User{i}@Contoso{i % 7}.com" if i % 5 else f"https://Mail{i}.contoso.com/owa" for i in range(2500)]
    runs = {}
    for text_only in (False, True):
        with budget.metered("map") as meter:
            values = budget.map_filter(name, function, items, (), text_only=text_only)
        runs[text_only] = (values, meter.operations, meter.largest)
    assert runs[True] == runs[False]
    with budget.metered("map"), pytest.raises(budget.BudgetExceeded, match="the result of url_key"):
        budget.map_filter("url_key", expr.FILTERS["url_key"], ["x" * (budget.MAX_LENGTH + 1)], (), text_only=True)
