"""Remove secrets and bearer tokens from text before it is stored in evidence, printed or raised."""

from __future__ import annotations

import re
from typing import Iterable

MASK = "***"
# A JWT (header.payload.signature, base64url): an access token that found its way into an error message.
_TOKEN = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


class Scrubber:
    """Built once per run from the secrets in play; call it on any text that may leave the process."""

    def __init__(self, secrets: Iterable[str | None]) -> None:
        # Longest first, so a secret that contains another is removed whole, never left half visible.
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return _TOKEN.sub("<token>", text)


def scrub(text: str, secrets: Iterable[str | None]) -> str:
    return Scrubber(secrets)(text)
