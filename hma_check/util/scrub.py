"""Remove secrets and bearer tokens from text before it is stored in evidence, printed or raised."""

from __future__ import annotations

import re
from typing import Iterable

MASK = "***"
# A JWT (header.payload.signature, base64url): an access token that found its way into an error message.
_TOKEN = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
# A secret this long is masked wherever it appears, even run together with other letters: nothing ordinary contains
# it by chance. A shorter one ('Summer24') is masked where it stands on its own, not inside a longer word
# ('Summer24x'), so a short password does not blank out every word that happens to contain it.
ANYWHERE = 16


class Scrubber:
    """Built once per run from the secrets in play; call it on any text that may leave the process."""

    def __init__(self, secrets: Iterable[str | None]) -> None:
        # Longest first, so a secret that contains another is removed whole, never left half visible.
        ordered = sorted({s for s in secrets if s}, key=len, reverse=True)
        self._patterns = [re.compile(re.escape(s) if len(s) >= ANYWHERE else
                                     r"(?<![A-Za-z0-9])" + re.escape(s) + r"(?![A-Za-z0-9])") for s in ordered]

    def __call__(self, text: str) -> str:
        for pattern in self._patterns:
            text = pattern.sub(MASK, text)
        return _TOKEN.sub("<token>", text)


def scrub(text: str, secrets: Iterable[str | None]) -> str:
    return Scrubber(secrets)(text)
