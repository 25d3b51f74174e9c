"""The one scrubber every collector uses: longest secret first, tokens masked."""

from hma_check.util.scrub import scrub


def test_a_secret_containing_another_is_removed_whole():
    assert scrub("pw=abc-abcdef end", ["abc", "abc-abcdef"]) == "pw=*** end"


def test_tokens_are_masked_and_empty_secrets_ignored():
    token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
    assert scrub(f"Bearer {token}", ["", None]) == "Bearer <token>"
