"""Exemptions: a change board's documented decision to accept a finding, with reason, approver and expiry.

    version: 1
    exemptions:
      - check: HMA-TLS-004             # required: a check id that exists
        subject: EX05                  # optional: one subject (case-insensitive); omitted = every subject
        reason: TLS 1.0 needed by the scanner appliance until its replacement in Q1
        approved_by: Jane Doe (CAB-2291)
        expires: 2027-03-31            # required: the exemption stops applying after this day

An exempted FAIL, WARN or ERROR shows as EXEMPT with all of that; once expired the finding keeps its real status and
the report says the exemption expired. A blocker that is exempted no longer blocks the verdict: that is the point,
and why an approver and an expiry are mandatory.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from hma_check.errors import ExemptionsError
from hma_check.contract.findings import ERROR, EXEMPT, FAIL, WARN, Finding
from hma_check.util.yaml_file import YamlList, YamlMap, loads_yaml_bytes, read_yaml_bytes

KEYS = {"check": True, "subject": False, "reason": True, "approved_by": True, "expires": True}
EXEMPTIBLE = (FAIL, WARN, ERROR)


@dataclass
class Exemption:
    check: str
    subject: str | None
    reason: str
    approved_by: str
    expires: date
    file: str
    line: int

    def matches(self, finding: Finding) -> bool:
        if finding.check_id != self.check:
            return False
        return self.subject is None or self.subject.lower() == finding.subject.lower()

    def to_json(self, *, expired: bool) -> dict[str, Any]:
        return {"reason": self.reason, "approved_by": self.approved_by, "expires": self.expires.isoformat(),
                "subject": self.subject, "expired": expired, "source": f"{self.file}:{self.line}"}


def load_exemptions(path: str | Path, known_check_ids: set[str]) -> list[Exemption]:
    return parse_exemptions(read_yaml_bytes(path, error=ExemptionsError), str(path), known_check_ids)


def parse_exemptions(raw: bytes, file: str, known_check_ids: set[str]) -> list[Exemption]:
    """The exemptions in bytes already read (the run copies these very bytes into its inputs/)."""
    document = loads_yaml_bytes(raw, source=file, error=ExemptionsError)
    if not isinstance(document, YamlMap) or set(document) - {"version", "exemptions"} or "exemptions" not in document:
        raise ExemptionsError("an exemptions file is a mapping with 'version: 1' and 'exemptions'", path=file, line=1)
    if document.get("version") != 1:
        raise ExemptionsError("unsupported exemptions file version (this hma-check reads 1)", path=file,
                              line=document.line_of("version"))
    entries = document["exemptions"]
    if not isinstance(entries, YamlList):
        raise ExemptionsError("'exemptions' must be a list", path=file, line=document.line_of("exemptions"))
    out = []
    for index, entry in enumerate(entries):
        out.append(_load_one(entry, file, entries.line_of(index), known_check_ids))
    return out


def _load_one(entry: Any, file: str, line: int, known: set[str]) -> Exemption:
    if not isinstance(entry, YamlMap):
        raise ExemptionsError("each exemption is a mapping", path=file, line=line)
    for key in entry:
        if key not in KEYS:
            raise ExemptionsError(f"unknown key '{key}' (allowed: {', '.join(KEYS)})", path=file, line=entry.line_of(key))
    for key, required in KEYS.items():
        if required and key not in entry:
            raise ExemptionsError(f"missing '{key}'", path=file, line=entry.line)
    check = entry["check"]
    if not isinstance(check, str) or check not in known:
        raise ExemptionsError(f"exemption for unknown check {check!r}", path=file, line=entry.line_of("check"))
    texts = {}
    for key in ("reason", "approved_by"):
        value = entry[key]
        if not isinstance(value, str) or not value.strip():
            raise ExemptionsError(f"'{key}' must be non-empty text", path=file, line=entry.line_of(key))
        texts[key] = value.strip()
    subject = entry.get("subject")
    if subject is not None and (not isinstance(subject, (str, int)) or not str(subject).strip()):
        raise ExemptionsError("'subject' must be text", path=file, line=entry.line_of("subject"))
    return Exemption(check=check, subject=str(subject).strip() if subject is not None else None,
                     reason=texts["reason"], approved_by=texts["approved_by"],
                     expires=_date(entry["expires"], file, entry.line_of("expires")), file=file, line=line)


def _date(value: Any, file: str, line: int) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value.strip()):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise ExemptionsError(f"'expires' must be a date like 2027-03-31, not {value!r}", path=file, line=line)


def apply_exemptions(findings: list[Finding], exemptions: list[Exemption], as_of: date) -> list[dict[str, Any]]:
    """Mark exempted findings in place; return the exemptions that matched nothing (the report lists them)."""
    used: set[int] = set()
    for finding in findings:
        for index, exemption in enumerate(exemptions):
            if not exemption.matches(finding) or finding.status not in EXEMPTIBLE:
                continue
            used.add(index)
            expired = exemption.expires < as_of
            finding.exemption = exemption.to_json(expired=expired)
            if not expired:
                finding.original_status = finding.status
                finding.status = EXEMPT
            break
    return [{"check": e.check, "subject": e.subject, "source": f"{e.file}:{e.line}",
             "note": "not needed: no FAIL, WARN or ERROR finding matches it (fixed, or the subject is not there)"}
            for index, e in enumerate(exemptions) if index not in used]
