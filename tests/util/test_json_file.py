"""The strict JSON reader (hma_check.util.json_file): loads_json_page is loads_json, faster for Graph's pages."""

from __future__ import annotations

import json

import pytest

from hma_check.util import json_file
from hma_check.util.json_file import JsonError, loads_json, loads_json_page


def _outcome(read, text):
    try:
        return "ok", read(text)
    except JsonError as exc:
        return "JsonError", exc.message, exc.line
    except RecursionError:
        return "RecursionError"


# Each a text the count must not vouch for, or one loads_json refuses: a key given twice where only an escape,
# whitespace, a colon in a value or a nested object could hide it from a count, and the refusals themselves.
TEXTS = [
    '{"value": [{"a": 1, "a": 2}]}',
    '{"value": [{"a": 1}, {"b": 2, "b": 3}], "@odata.nextLink": "https://x/y?a=1"}',
    '{"a": 1, "a": 1}',
    '{"a": "x:y", "a": "z"}',
    '{"value": [{"a": "x:y", "a": "z"}]}',
    '{"value": [{"a": {"b": 1, "b": 2}}]}',
    '{"value": [{"a": 1, "\\u0061": 2}]}',
    '{"value": [{"a" : 1, "a" : 2}]}',
    '{"k": 1, "value": [{"a": 1}], "k": 2}',
    '{"value": [{"a": 1}], "value": [{"a": 1, "b": 2}]}',
    '{"x:": 1, "x:": 2}',
    '{"v": {"a": 1, "a": 2}}',
    '{"value": [1, {"a": 1, "a": 2}]}',
    '{"value": [{"a": NaN}]}',
    '{"value": [{"a": Infinity}]}',
    '{"value": [{"a": 1e999}]}',
    '{"value": [{"a": "\\ud800"}]}',
    '{"value": [{"a": 1}]',
    '{"value": [{"a": 1}]} x',
    '{"value": [{"a": ' + "9" * 5000 + "}]}",
    "\ufeff{}",
    "",
    "[" * 100_000 + "]" * 100_000,
    '[{"a": 1, "a": 2}]',
    '"a:b"',
    "{}",
    '{"value": []}',
    '{"value": [{}, {"a": null, "b": [1, "x:y"], "c": true}]}',
]


@pytest.mark.parametrize("text", TEXTS)
def test_a_page_is_read_as_loads_json_reads_it(text):
    assert _outcome(loads_json_page, text) == _outcome(loads_json, text)


def test_a_graph_page_is_proved_unique_by_its_count_and_a_repeated_key_is_not():
    """The shape the fast path is for really takes it (json.loads without the hook), and the one key given twice
    in 999 users is still found."""
    users = [{"userPrincipalName": f"u{i}@contoso.com", "mail": None, "onPremisesSyncEnabled": True,
              "onPremisesSecurityIdentifier": f"S-1-5-21-1-2-3-{1000 + i}"} for i in range(999)]
    page = {"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users(userPrincipalName,mail)",
            "value": users, "@odata.nextLink": "https://graph.microsoft.com/v1.0/users?$skiptoken=X:Y"}
    text = json.dumps(page, separators=(",", ":"))
    assert json_file._keys_proved_unique(text, json.loads(text))
    assert loads_json_page(text) == page
    twice = text.replace('"mail":null', '"mail":null,"mail":"x"', 1)
    assert not json_file._keys_proved_unique(twice, json.loads(twice))
    with pytest.raises(JsonError, match="'mail' is given twice"):
        loads_json_page(twice)


def test_any_document_is_read_as_loads_json_reads_it():
    """Property: for every text, loads_json_page gives what loads_json gives, document or error, keys given twice
    anywhere included."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from tests.support.fuzz import FUZZ, examples

    keys = st.sampled_from(["a", "b", "a:", ":", "@odata.x", "\u00e9", "a\\u003a"]) | st.text(max_size=3)
    scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=False, allow_infinity=False),
                        st.sampled_from(["", "x:y", ":", "a\\b", "\u00e9", "\U0001f600"]) | st.text(max_size=4))

    def pairs_text(inner):   # an object's text from a list of pairs: a key may come twice
        return st.lists(st.tuples(keys, inner), max_size=5).map(
            lambda pairs: "{" + ", ".join(f"{json.dumps(k)}: {v}" for k, v in pairs) + "}")

    values = st.recursive(scalars.map(json.dumps),
                          lambda inner: st.lists(inner, max_size=4).map(lambda xs: "[" + ",".join(xs) + "]")
                          | pairs_text(inner), max_leaves=12)
    pages = st.builds(lambda head, items, tail: "{" + ",".join(
        [*head, '"value":[' + ",".join(items) + "]", *tail]) + "}",
        st.lists(st.tuples(keys, values).map(lambda kv: f"{json.dumps(kv[0])}:{kv[1]}"), max_size=2),
        st.lists(pairs_text(values), max_size=6),
        st.lists(st.tuples(keys, values).map(lambda kv: f"{json.dumps(kv[0])}:{kv[1]}"), max_size=2))
    texts = pages | values | pages.map(lambda t: t.replace("\\\\", ""))

    @settings(FUZZ, max_examples=examples(60))
    @given(text=texts)
    def one(text):
        assert _outcome(loads_json_page, text) == _outcome(loads_json, text)

    one()
