"""The one scrubber every collector uses: longest secret first, tokens masked."""

from hma_check.util.scrub import scrub


def test_a_secret_containing_another_is_removed_whole():
    assert scrub("pw=abc-abcdef end", ["abc", "abc-abcdef"]) == "pw=*** end"


def test_tokens_are_masked_and_empty_secrets_ignored():
    token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
    assert scrub(f"Bearer {token}", ["", None]) == "Bearer <token>"


def test_a_short_secret_is_masked_where_it_stands_not_inside_ordinary_words():
    """A password like 'Exch' must not turn 'Exchange' into '***ange' across every message."""
    text = "Exchange refused CONTOSO\\reader:Exch at Exch; password=Exch, Exch."
    assert scrub(text, ["Exch"]) == "Exchange refused CONTOSO\\reader:*** at ***; password=***, ***."
    assert scrub("the password 'Summer24' was refused", ["Summer24"]) == "the password '***' was refused"


def test_a_long_secret_is_masked_even_run_together_with_other_text():
    secret = "Xq9-rT2vLm8sP0zA7wE"
    assert scrub(f"secret={secret}abc and x{secret}", [secret]) == "secret=***abc and x***"
