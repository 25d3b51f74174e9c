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
        shown, size = shown_value(value)
        assert shown == by_serialising(value)
        assert size == _json_size_of(shown)

    one()
    assert shown_value([1] * 200)[0] == [1] * 200 and shown_value([1] * 201)[0] == "(list of 201 items)"


def _json_size_of(shown):
    """The size the excerpt's budget counts, as it counted it when each shown value was serialised again."""
    if isinstance(shown, str):
        return len(shown) + 2
    if shown is None or isinstance(shown, (bool, int, float)):
        return 8
    if isinstance(shown, list) and all(isinstance(v, str) for v in shown):
        return sum(len(v) + 4 for v in shown) + 2
    return len(json.dumps(shown, ensure_ascii=False, default=str))


def test_the_size_an_excerpt_counts_is_the_size_of_what_it_shows():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from hma_check.evaluate.reads import ABSENT, shown_value
    from tests.support.fuzz import FUZZ, examples

    scalars = st.one_of(st.integers(), st.floats(allow_nan=False), st.text(max_size=40), st.none(), st.booleans())
    values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=5),
                                                                                               inner, max_size=6),
                          max_leaves=30) | st.just(ABSENT) | st.text(min_size=590, max_size=700)

    @settings(FUZZ, max_examples=examples(100))
    @given(value=values)
    def one(value):
        shown, size = shown_value(value)
        assert size == _json_size_of(shown)

    one()


def test_a_path_is_written_as_the_expression_language_reads_it():
    """A name that is an ASCII identifier is an attribute; any other key (a space, a dot, a quote, a letter beyond
    ASCII, a trailing line break) is a quoted index; a list position is [n]."""
    from hma_check.evaluate.reads import path_text

    assert path_text(("os", "tls_registry", "EX01", "Protocols", "TLS 1.2", "Server", "Enabled")) == \
        "os.tls_registry.EX01.Protocols['TLS 1.2'].Server.Enabled"
    assert path_text(("exchange_certificates", "EX01", 0, "Thumbprint")) == "exchange_certificates.EX01[0].Thumbprint"
    assert path_text(("item", "_x9", "9x", "Ä", "it's", "a\n")) == "item._x9['9x']['Ä']['it\\'s']['a\n']"
    assert path_text(("[0]", "Name")) == "['[0]'].Name"
