"""Decide one compiled expression against the facts, or say why it cannot be decided: every failure (a missing fact,
a sandbox refusal, a value that is not a boolean) becomes the reason of an ERROR, never an exception that escapes."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any, Callable

from jinja2 import UndefinedError
from jinja2.exceptions import SecurityError

from hma_check.evaluate.budget import BudgetExceeded
from hma_check.errors import HmaCheckError, one_line
from hma_check.evaluate.checks import Compiled
from hma_check.contract.findings import ERROR, NOT_APPLICABLE
from hma_check.evaluate.facts import MissingFact, NotApplicable
from hma_check.evaluate.settle import NOT_PREPARED_MARK

ORGANIZATION = "organization"


class Undecidable(HmaCheckError):
    """Raised inside evaluation to turn any failure into an ERROR finding with a clear reason, or into
    NOT_APPLICABLE when what was missing is a source that does not exist there by design."""

    def __init__(self, reason: str, *, not_applicable: bool = False) -> None:
        super().__init__(reason)
        self.not_applicable = not_applicable

    @property
    def status(self) -> str:
        return NOT_APPLICABLE if self.not_applicable else ERROR


def undecidable(what: str, exc: BaseException) -> Undecidable:
    """Any failure of ``what`` as an Undecidable (NOT_APPLICABLE for a source absent by design)."""
    if isinstance(exc, Undecidable):
        return exc
    return Undecidable(reason_for(what, exc), not_applicable=isinstance(exc, NotApplicable))


def subject_of(template: Compiled | None, context: dict[str, Any], scope: str | None) -> str:
    """The rendered subject; Undecidable when the template fails, or renders nothing for an item."""
    if template is None:
        return scope or ORGANIZATION
    text = render(template, context, "subject").strip()
    if not text:
        if scope or context.get("item") is None:
            return scope or ORGANIZATION
        raise Undecidable(f"'subject' ({template.source}) rendered nothing for this item")
    return text


# Properties that name an object, in the order a reader recognises it by (Exchange, Graph, probes).
_NAMING_PROPERTIES = ("Identity", "Name", "Server", "displayName", "id", "url", "host")


def fallback_subject(item: Any, scope: str | None, index: int) -> str:
    """A name for an item whose subject could not be rendered: its scope, a naming property, or its position."""
    if scope:
        return scope
    if isinstance(item, dict):
        for prop in _NAMING_PROPERTIES:
            value = item.get(prop)
            if isinstance(value, str) and value.strip():
                return value.strip()[:200]
    return f"item {index + 1} (its subject could not be rendered)"


def bind_let(let: tuple[tuple[str, Compiled], ...], context: dict[str, Any],
             phase: Callable[[str], AbstractContextManager[Any]] | None = None) -> None:
    """Bind each ``let`` in order; ``phase(name)`` (the engine's record of what each binding read) wraps each one."""
    for name, compiled in let:
        with phase(f"let.{name}") if phase is not None else nullcontext():
            try:
                context[name] = compiled(context)
            except Exception as exc:  # noqa: BLE001
                raise undecidable(f"let {name}", exc) from None


def as_bool(compiled: Compiled, context: dict[str, Any], what: str) -> bool:
    try:
        value = compiled(context)
    except Exception as exc:  # noqa: BLE001
        raise undecidable(what, exc) from None
    if not isinstance(value, bool):
        raise Undecidable(f"'{what}' ({compiled.source}) gave {type(value).__name__} {short(value)}, not true or false")
    return value


def render(compiled: Compiled, context: dict[str, Any], what: str) -> str:
    try:
        return str(compiled(context)).strip()
    except Exception as exc:  # noqa: BLE001
        raise undecidable(what, exc) from None


def render_powershell(compiled: Compiled, context: dict[str, Any], what: str) -> str:
    """A step that cannot be prepared stays in the runbook as a comment saying why, never silently dropped."""
    try:
        return render(compiled, context, what)
    except Undecidable as exc:
        return f"{NOT_PREPARED_MARK} ({what}): {one_line(str(exc), limit=None)}"


def reason_for(what: str, exc: BaseException) -> str:
    if isinstance(exc, NotApplicable):
        return f"{exc.key} {exc.reason}"
    if isinstance(exc, MissingFact):
        return f"missing fact: {exc.key} {exc.reason}"
    if isinstance(exc, Undecidable):
        return str(exc)
    if isinstance(exc, UndefinedError):
        return f"missing fact in '{what}': {exc.message}"
    if isinstance(exc, SecurityError):
        return f"'{what}' tried something the sandbox forbids: {exc}"
    if isinstance(exc, BudgetExceeded):
        return f"'{what}' went over the evaluation budget: {exc}"
    return f"'{what}' failed: {type(exc).__name__}: {exc}"


def short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def causes_of(check: Any, context: dict[str, Any]) -> list[dict[str, str | None]]:
    """The declared root causes (``caused_by``) with the subject each names for this item; an empty or failing
    subject template means this item has no such cause."""
    causes: list[dict[str, str | None]] = []
    for cause in check.caused_by:
        subject = None
        if cause.subject is not None:
            try:
                subject = render(cause.subject, context, "caused_by") or None
            except Undecidable:
                subject = None
            if subject is None:
                continue
        causes.append({"check": cause.check, "subject": subject})
    return causes


def affected_users(compiled: Compiled, context: dict[str, Any]) -> list[dict[str, str]]:
    """The users a finding affects: a list of names or of {user, ...} mappings, each value text."""
    try:
        value = compiled(context)
    except Exception as exc:  # noqa: BLE001
        raise undecidable("affected", exc) from None
    if not isinstance(value, (list, tuple)):
        raise Undecidable(f"'affected' ({compiled.source}) gave {type(value).__name__}, not a list")
    out = []
    for entry in value:
        if isinstance(entry, str):
            entry = {"user": entry}
        if not isinstance(entry, dict) or not isinstance(entry.get("user"), str):
            raise Undecidable(f"'affected' ({compiled.source}) gave {short(entry)}, not a name or {{user: ...}}")
        out.append({str(k): str(v) for k, v in entry.items()})
    return out
