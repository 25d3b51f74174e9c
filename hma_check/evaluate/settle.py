"""The runbooks' safety rules, applied once the verdict is known: which entries stay live and which become comments.

hma_check.evaluate.runbook prepares one entry per remediation and per step; settle() decides, for the enable and
the rollback runbook:

- a step for a warning or info finding is a commented SUGGESTION, never a live command;
- a step that cannot be prepared, or that changes something without a rollback that could be prepared, is NOT
  PREPARED: its reason is shown and nothing of it is live (a live change always has its exact inverse);
- a step whose prerequisite step (``needs``) is not live or already done is BLOCKED with that step's reason, so HMA is
  never half enabled (OAuth2ClientProfileEnabled waits for EvoSts as the default authorization endpoint);
- the switch and everything after it wait for a READY verdict: their changes are BLOCKED otherwise;
- a step the evidence shows already in place is DONE, and so is its rollback: the rollback runbook undoes only what
  the enable runbook changes.

Microsoft's procedure and its rollback:
https://learn.microsoft.com/microsoft-365/enterprise/configure-exchange-server-for-hybrid-modern-authentication
https://learn.microsoft.com/microsoft-365/enterprise/remove-or-disable-hybrid-modern-authentication-from-skype-for-business-and-excha
"""

from __future__ import annotations

import re
from dataclasses import replace

from hma_check.evaluate.checks import PHASES, SWITCH
from hma_check.contract.findings import READY, RunbookEntry

LIVE, MANUAL, DONE, SUGGESTION, BLOCKED, NOT_PREPARED = (
    "live", "manual", "done", "suggestion", "blocked", "not_prepared")
RUNS = (LIVE, MANUAL)            # states whose text is printed as the checks wrote it
NOT_PREPARED_MARK = "# NOT PREPARED"

# A command that changes something (Get-, Test-, Format-, Where-Object... only read).
_CHANGE = re.compile(r"(?<![\w-])(?:Set|New|Update|Remove|Add|Enable|Disable|Install|Import|Clear|Restart|Start|Stop|"
                     r"Invoke|Register|Unregister|Move|Rename|Reset|Grant|Revoke)-[A-Za-z]")

ROLLBACK_NOTES = {
    DONE: "nothing to undo: this was in place before the enable runbook (uncomment only to turn it off)",
    SUGGESTION: "undoes the suggestion of the enable runbook: run it only if you ran that",
    BLOCKED: "the enable runbook holds this step back: undo it only if you ran it anyway",
    NOT_PREPARED: "the enable runbook could not prepare this step",
}


def live_lines(text: str | None) -> list[str]:
    return [line for line in (text or "").splitlines() if line.strip() and not line.lstrip().startswith("#")]


def changes_something(text: str | None) -> bool:
    return any(_CHANGE.search(line) for line in live_lines(text))


def is_prepared(text: str | None) -> bool:
    return text is not None and not text.lstrip().startswith(NOT_PREPARED_MARK)


def comment_out(text: str) -> str:
    """Every command line becomes a comment; comments stay as they are."""
    return "\n".join(line if not line.strip() or line.lstrip().startswith("#") else "# " + line
                     for line in text.splitlines())


def _reason(text: str) -> str:
    """The reason of a '# NOT PREPARED (...): reason' line."""
    first = text.strip().splitlines()[0]
    return first.split(":", 1)[1].strip() if ":" in first else first.lstrip("# ")


def settle(entries: list[RunbookEntry], *, verdict: str, needs: dict[str, tuple[str, ...]],
           exempted: set[tuple[str, str]] | frozenset[tuple[str, str]] = frozenset()) -> list[RunbookEntry]:
    """The entries as the runbooks print them (new objects; the evaluation's entries are not changed).
    ``exempted``: (check id, subject) of the findings an exemption covers; their fix is the change board's decision
    not to change that object now, so it is never live."""
    settled = [_own_state(entry) for entry in entries]
    for entry in settled:
        subjects = [s for s in (entry.subject or "").split(", ") if s]
        if entry.state == LIVE and subjects and all((entry.origin, s) in exempted for s in subjects):
            entry.state = SUGGESTION
            entry.note = ("exempted (an approved exemption covers this finding): not changed by this runbook; "
                          "uncomment only if the exemption is withdrawn")
    by_origin: dict[str, RunbookEntry] = {}
    for entry in settled:
        by_origin.setdefault(entry.origin, entry)
    for entry in settled:
        if entry.state not in (LIVE, MANUAL):
            continue
        for needed in needs.get(entry.origin, ()):
            other = by_origin.get(needed)
            if other is None or other.state not in (LIVE, DONE):
                why = "is not in this runbook" if other is None else f"is {other.label}: {other.note}"
                entry.state, entry.note = BLOCKED, f"waits for {needed}, which {why} (HMA is never half enabled)"
                break
    for entry in settled:
        if entry.state == LIVE and entry.phase >= SWITCH and verdict != READY and changes_something(entry.enable):
            entry.state = BLOCKED
            entry.note = (f"the verdict is {verdict}: phase {SWITCH} ({PHASES[SWITCH].split(':')[0]}) and later "
                          "phases wait until every blocker is fixed and a new scan says READY")
    return [_printed(entry) for entry in settled]


def _own_state(entry: RunbookEntry) -> RunbookEntry:
    """What the entry alone decides: not prepared, manual guidance, or its missing rollback."""
    entry = replace(entry)
    if not is_prepared(entry.enable):
        entry.state, entry.note = NOT_PREPARED, _reason(entry.enable)
    elif entry.state in (LIVE, SUGGESTION) and not live_lines(entry.enable):
        entry.state = MANUAL
    elif entry.state == LIVE and changes_something(entry.enable):
        if entry.rollback is not None and not is_prepared(entry.rollback):
            entry.state, entry.note = NOT_PREPARED, f"its rollback could not be prepared: {_reason(entry.rollback)}"
        elif not live_lines(entry.rollback):
            entry.state, entry.note = NOT_PREPARED, "it changes the organization but declares no rollback"
    return entry


def _printed(entry: RunbookEntry) -> RunbookEntry:
    if entry.state in RUNS:
        return entry
    if entry.state != NOT_PREPARED or is_prepared(entry.enable):
        entry.enable = comment_out(entry.enable)
    else:
        entry.enable = "\n".join(entry.enable.strip().splitlines()[1:]) or ""
    if entry.rollback is not None:
        entry.rollback = comment_out(entry.rollback) if is_prepared(entry.rollback) else None
        entry.rollback_note = ROLLBACK_NOTES[entry.state] if entry.rollback else None
    return entry
