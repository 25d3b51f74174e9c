"""Parse WWW-Authenticate headers (RFC 9110 §11.6.1): several challenges per header, repeated headers, quoting."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable

# RFC 9110 §5.6.2 token and §11.2 token68.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TOKEN68 = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_WS = " \t"


@dataclass(frozen=True)
class Challenge:
    """One challenge: ``Bearer client_id="…", trusted_issuers="…"`` -> scheme, lower-cased params, raw text."""

    scheme: str
    raw: str
    params: dict[str, str] = field(default_factory=dict)
    token68: str | None = None

    def param(self, name: str) -> str | None:
        return self.params.get(name.lower())


def parse_challenges(header_values: Iterable[str]) -> list[Challenge]:
    """Every challenge of every WWW-Authenticate header, in the order they arrived. Never raises: a server's
    garbage is evidence, so what cannot be parsed is skipped character by character rather than refused."""
    challenges: list[Challenge] = []
    for value in header_values:
        challenges.extend(_Parser(value).challenges())
    return challenges


def bearer_challenge(challenges: Iterable[Challenge]) -> dict | None:
    """The first Bearer challenge as hma-check records it (probe.bearer ``bearer``), or None when there is none.

    Exchange's shape (seed 003, and https://learn.microsoft.com/exchange/clients/outlook-for-ios-and-android/
    use-hybrid-modern-auth): client_id, trusted_issuers (comma-separated inside one quoted string), token_types,
    authorization_uri (only when EvoSts is the default authorization endpoint), error. An absent parameter is null.
    """
    for challenge in challenges:
        if challenge.scheme.lower() == "bearer":
            issuers = challenge.param("trusted_issuers")
            return {
                "client_id": challenge.param("client_id"),
                "trusted_issuers": [part.strip() for part in issuers.split(",") if part.strip()]
                if issuers is not None else [],
                "token_types": challenge.param("token_types"),
                "authorization_uri": challenge.param("authorization_uri"),
                "error": challenge.param("error"),
            }
    return None


class _Parser:
    """A cursor over one header value. The only real ambiguity in the grammar is a comma: it separates either two
    parameters of one challenge or two challenges; a parameter is recognised by ``token BWS "="`` ahead."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def challenges(self) -> list[Challenge]:
        found: list[Challenge] = []
        while True:
            self._skip(_WS + ",")
            if self.pos >= len(self.text):
                return found
            start = self.pos
            scheme = self._match(_TOKEN)
            if scheme is None:
                self.pos += 1  # not a token: skip the stray character
                continue
            found.append(self._rest_of_challenge(scheme, start))

    def _rest_of_challenge(self, scheme: str, start: int) -> Challenge:
        params: dict[str, str] = {}
        token68: str | None = None
        after_scheme = self.pos
        self._skip(_WS)
        if self.pos > after_scheme and not self._at_end_or_comma():
            if self._token68_ahead():
                token68 = self._match(_TOKEN68)
            else:
                while self._param_ahead():
                    name, value = self._param()
                    params.setdefault(name.lower(), value)
                    self._skip(_WS)
                    if not self._at_end_or_comma():
                        break  # garbage after a parameter: the outer loop skips it
                    mark = self.pos
                    self._skip(_WS + ",")
                    if not self._param_ahead():
                        self.pos = mark  # the comma starts the next challenge
                        break
        raw = self.text[start:self.pos].strip(_WS + ",")
        return Challenge(scheme=scheme, raw=raw, params=params, token68=token68)

    # ------------------------------------------------------------------------------------------- lookahead
    def _param_ahead(self) -> bool:
        match = _TOKEN.match(self.text, self.pos)
        if match is None:
            return False
        rest = self.text[match.end():].lstrip(_WS)
        return rest.startswith("=")

    def _token68_ahead(self) -> bool:
        match = _TOKEN68.match(self.text, self.pos)
        if match is None:
            return False
        rest = self.text[match.end():].lstrip(_WS)
        return rest == "" or rest.startswith(",")

    def _at_end_or_comma(self) -> bool:
        return self.pos >= len(self.text) or self.text[self.pos] == ","

    # ------------------------------------------------------------------------------------------- consuming
    def _param(self) -> tuple[str, str]:
        name = self._match(_TOKEN) or ""
        self._skip(_WS)
        self.pos += 1  # "=", guaranteed by _param_ahead
        self._skip(_WS)
        if self.pos < len(self.text) and self.text[self.pos] == '"':
            return name, self._quoted_string()
        return name, self._match(_TOKEN) or ""

    def _quoted_string(self) -> str:
        """RFC 9110 §5.6.4: a backslash quotes the next character; an unterminated string runs to the end."""
        self.pos += 1
        out: list[str] = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            self.pos += 1
            if char == "\\" and self.pos < len(self.text):
                out.append(self.text[self.pos])
                self.pos += 1
            elif char == '"':
                break
            else:
                out.append(char)
        return "".join(out)

    def _match(self, pattern: re.Pattern[str]) -> str | None:
        match = pattern.match(self.text, self.pos)
        if match is None:
            return None
        self.pos = match.end()
        return match.group()

    def _skip(self, chars: str) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in chars:
            self.pos += 1
