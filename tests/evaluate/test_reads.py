"""How an excerpt shows a value it read (hma_check.evaluate.reads.shown_value)."""

from __future__ import annotations

import json


def test_a_long_list_or_object_is_summarised_exactly_when_its_json_is_over_the_limit():
    """A list or object is summarised without serialising it when its JSON cannot fit: the summary is exactly what
    serialising it first gives."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from hma_check.evaluate.reads import VALUE_LIMIT, shown_value
    from tests.support.fuzz import FUZZ, examples

    scalars = st.one_of(st.integers(0, 9), st.text(max_size=3), st.none(), st.booleans())
    values = st.one_of(st.lists(st.one_of(scalars, st.dictionaries(st.text(max_size=2), scalars, max_size=2)),
                                min_size=150, max_size=260),
                       st.dictionaries(st.text(max_size=3), scalars, min_size=60, max_size=120))

    def by_serialising(value):
        text = json.dumps(value, ensure_ascii=False, default=str)
        if len(text) <= VALUE_LIMIT:
            return json.loads(text)
        return f"(list of {len(value)} items)" if isinstance(value, list) else f"(object with {len(value)} properties)"

    @settings(FUZZ, max_examples=examples(30))
    @given(value=values)
    def one(value):
        if isinstance(value, list) and len(value) <= 20 and all(isinstance(v, str) and len(v) < 30 for v in value):
            return
        assert shown_value(value) == by_serialising(value)

    one()
    assert shown_value([1] * 200) == [1] * 200 and shown_value([1] * 201) == "(list of 201 items)"
