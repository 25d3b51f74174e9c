"""The WWW-Authenticate parser on the real Exchange headers of seed 003 (verbatim) and on hostile input."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hma_check.collect.probes.www_authenticate import bearer_challenge, parse_challenges

EXO = "00000002-0000-0ff1-ce00-000000000000"
ACS = "00000001-0000-0000-c000-000000000000"

# Seed 003, "Auth_URI Failures": the response headers in arrival order (Www-Authenticate x3, then WWW-Authenticate).
SEED_FLIGHTING = [
    "Negotiate",
    "NTLM",
    'Basic realm="autodiscover.contoso.com"',
    'Bearer client_id="00000002-0000-0ff1-ce00-000000000000", trusted_issuers="00000001-0000-0000-c000-000000000000@'
    'f31f3647-5d87-4b69-a0b6-73f62aeab14c", token_types="app_asserted_user_v1 service_asserted_app_v1", '
    'authorization_uri="https://login.windows.net/common/oauth2/authorize"',
]
# Seed 003, "Name Mismatches": three trusted issuers inside one quoted string, and an error parameter.
SEED_NAME_MISMATCH = (
    'Bearer client_id="00000002-0000-0ff1-ce00-000000000000", trusted_issuers="00000001-0000-0000-c000-000000000000@'
    '8da56bec-0d27-4cac-ab06-52ee2c40ea22,00000004-0000-0ff1-ce00-000000000000@contoso.com,00000003-0000-0ff1-ce00-'
    '000000000000@8da56bec-0d27-4cac-ab06-52ee2c40ea22", token_types="app_asserted_user_v1 service_asserted_app_v1", '
    'authorization_uri="https://login.windows.net/common/oauth2/authorize", error="invalid_token"'
)
# Seed 003, "Who's This?": no token_types, no authorization_uri.
SEED_WHOS_THIS = 'Bearer client_id="00000002-0000-0ff1-ce00-000000000000", trusted_issuers="00000001-0000-0000-c000-' \
                 '000000000000@cc2e9d54-565d-4b36-b7f0-9866c19f9b17"'


def test_seed_flighting_response_headers_in_order():
    challenges = parse_challenges(SEED_FLIGHTING)
    assert [c.scheme for c in challenges] == ["Negotiate", "NTLM", "Basic", "Bearer"]
    assert challenges[2].param("realm") == "autodiscover.contoso.com"
    assert challenges[3].raw == SEED_FLIGHTING[3]
    assert bearer_challenge(challenges) == {
        "client_id": EXO,
        "trusted_issuers": [f"{ACS}@f31f3647-5d87-4b69-a0b6-73f62aeab14c"],
        "token_types": "app_asserted_user_v1 service_asserted_app_v1",
        "authorization_uri": "https://login.windows.net/common/oauth2/authorize",
        "error": None,
    }


def test_commas_inside_quotes_stay_in_one_parameter():
    bearer = bearer_challenge(parse_challenges([SEED_NAME_MISMATCH]))
    assert bearer["trusted_issuers"] == [
        f"{ACS}@8da56bec-0d27-4cac-ab06-52ee2c40ea22",
        "00000004-0000-0ff1-ce00-000000000000@contoso.com",
        "00000003-0000-0ff1-ce00-000000000000@8da56bec-0d27-4cac-ab06-52ee2c40ea22",
    ]
    assert bearer["error"] == "invalid_token"
    assert bearer["authorization_uri"] == "https://login.windows.net/common/oauth2/authorize"


def test_missing_parameters_are_null_not_guessed():
    bearer = bearer_challenge(parse_challenges([SEED_WHOS_THIS, 'Basic realm="mail.contoso.com"', "Negotiate"]))
    assert bearer["authorization_uri"] is None
    assert bearer["token_types"] is None
    assert bearer["trusted_issuers"] == [f"{ACS}@cc2e9d54-565d-4b36-b7f0-9866c19f9b17"]


def test_several_challenges_in_one_header():
    header = 'Negotiate, NTLM, Basic realm="mail.contoso.com", ' + SEED_WHOS_THIS + ', Negotiate oYIBBjCCAQKgAw=='
    challenges = parse_challenges([header])
    assert [c.scheme for c in challenges] == ["Negotiate", "NTLM", "Basic", "Bearer", "Negotiate"]
    assert challenges[2].raw == 'Basic realm="mail.contoso.com"'
    assert challenges[3].raw == SEED_WHOS_THIS
    assert challenges[4].token68 == "oYIBBjCCAQKgAw=="
    assert challenges[4].params == {}


def test_escaped_quotes_odd_spacing_and_case():
    challenges = parse_challenges(['bearer  Client_ID = "a\\"b,c" ,error=invalid_token,Basic realm=x'])
    assert [c.scheme for c in challenges] == ["bearer", "Basic"]
    assert challenges[0].param("client_id") == 'a"b,c'
    assert challenges[0].param("error") == "invalid_token"
    assert bearer_challenge(challenges)["client_id"] == 'a"b,c'


def test_no_header_and_no_bearer():
    assert parse_challenges([]) == []
    assert bearer_challenge(parse_challenges(["Negotiate", "NTLM"])) is None


def test_garbage_is_skipped_not_fatal():
    challenges = parse_challenges(['=,"unterminated', '  ,, ', 'Basic realm="open', "Bearer ==="])
    assert [c.scheme for c in challenges] == ["unterminated", "Basic", "Bearer"]
    assert challenges[1].param("realm") == "open"


@given(st.lists(st.text(max_size=60), max_size=4))
def test_never_raises_on_arbitrary_text(values):
    for challenge in parse_challenges(values):
        assert challenge.scheme
        assert challenge.raw.startswith(challenge.scheme)


_tokens = st.from_regex(r"[A-Za-z][A-Za-z0-9_\-]{0,8}", fullmatch=True)
_values = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=20)


@given(st.lists(st.tuples(_tokens, st.dictionaries(_tokens, _values, max_size=3)), min_size=1, max_size=4))
def test_round_trip_of_generated_challenges(generated):
    def quote(value: str) -> str:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'

    header = ", ".join(
        scheme + ((" " + ", ".join(f"{k}={quote(v)}" for k, v in params.items())) if params else "")
        for scheme, params in generated
    )
    parsed = parse_challenges([header])
    assert [c.scheme for c in parsed] == [scheme for scheme, _ in generated]
    for challenge, (_, params) in zip(parsed, generated):
        expected: dict[str, str] = {}
        for key, value in params.items():
            expected.setdefault(key.lower(), value)
        assert challenge.params == expected
