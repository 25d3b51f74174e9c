"""The ``options:`` section of the scan configuration (optional areas to assess) and its record in the evidence.

Opting in is a decision, not a fact about the organisation, but the report must be reproducible from evidence.json
alone: so every scan and import writes scan.options, and the checks of an optional area read it in ``when:``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hma_check.contract.snapshot import SourceResult

SOURCE = "scan.options"
_KEYS = ("owa_ecp",)


@dataclass(frozen=True)
class ScanOptions:
    owa_ecp: bool = False     # assess HMA for Outlook on the web and the EAC (the owa-ecp area)

    def summary(self) -> dict[str, Any]:
        return {"owa_ecp": self.owa_ecp}


def parse_options_section(raw: Any, context: Any) -> ScanOptions:
    if raw is None:
        return ScanOptions()
    if not isinstance(raw, dict):
        raise context.fail((), f"must be a mapping with any of: {', '.join(_KEYS)}")
    for key, value in raw.items():
        if key not in _KEYS:
            raise context.fail((key,), f"unknown option; expected one of: {', '.join(_KEYS)}")
        if not isinstance(value, bool):
            raise context.fail((key,), "must be true or false")
    return ScanOptions(**raw)


def options_result(options: ScanOptions, origin: str) -> SourceResult:
    """scan.options as the evidence records it: what was asked for, and where the request came from."""
    return SourceResult.ok_result(SOURCE, options.summary(), command=origin)
