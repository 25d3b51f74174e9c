"""What a collector is handed when it runs: the snapshot so far, secrets, a prompt, and a progress display."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from hma_check.contract.snapshot import Snapshot
from hma_check.errors import ConfigError
from hma_check.util.scrub import Scrubber

# The default environment variables of the passwords (collect.exchange.config and collect.os.config use them).
EXCHANGE_PASSWORD_ENV = "HMA_CHECK_EXCHANGE_PASSWORD"
OS_PASSWORD_ENV = "HMA_CHECK_OS_PASSWORD"


class Progress:
    """Per-collector progress: ``start(total)`` then ``advance(label, ok)`` per query. The default draws nothing."""

    def start(self, total: int) -> None: ...

    def advance(self, label: str, ok: bool) -> None: ...

    def finish(self) -> None: ...


@dataclass
class RunContext:
    snapshot: Snapshot
    secrets: Mapping[str, str] = field(default_factory=dict)     # in-process values (the demo lab's password)
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    prompt: Callable[[str], str] | None = None                  # asks for a password on a terminal
    progress: Callable[[str], Progress] = lambda section: Progress()
    handed_out: list[str] = field(default_factory=list)         # every password given to a collector, prompt included
    # Exchange servers given up for the rest of the scan (name casefolded -> why): a call to them got no answer in
    # time. A hung server costs one timeout, not one per collector or per query.
    unresponsive: dict[str, str] = field(default_factory=dict)
    sections: Mapping[str, Any] = field(default_factory=dict)   # every section's settings (logs reads os's)

    def scrubber(self, sections: Mapping[str, Any]) -> Scrubber:
        """Every secret this run can know of: in-process values, passwords handed out, and the values of the
        environment variables the configuration names (password_env, client_secret_env...)."""
        named = [value for settings in sections.values() for key, value in vars_of(settings).items()
                 if key.endswith("_env") and isinstance(value, str)]
        return Scrubber([*self.secrets.values(), *self.handed_out, *(self.environ.get(name) for name in named)])


def vars_of(settings: Any) -> dict[str, Any]:
    """A section's settings as a mapping (dataclasses and plain objects alike)."""
    if isinstance(settings, dict):
        return settings
    return dict(getattr(settings, "__dict__", {}))


def section_password(section: str, settings: Any, context: RunContext, target: str) -> str | None:
    """In-process secret (the demo), else the environment variable the config names, else a prompt on a terminal."""
    if settings.auth == "certificate":
        return None
    value = context.secrets.get(f"{section}.password") or context.environ.get(settings.password_env)
    kerberos = settings.auth in ("kerberos", "negotiate")
    if not value and kerberos:
        from hma_check.collect.kerberos import has_ticket

        if has_ticket(settings.username):
            return None  # the ticket in the credential cache (kinit, or the Windows logon) signs in
    if not value and context.prompt is not None:
        value = context.prompt(f"Password for {settings.username} on {target}")
    if value:
        context.handed_out.append(value)
        return value
    if kerberos:
        return None  # no ticket and no password: the collector makes that one line, ERROR for its sources
    # A name the configuration gave is not repeated (it may be a password pasted into the wrong field); the default
    # names are hma-check's own.
    own = settings.password_env in (EXCHANGE_PASSWORD_ENV, OS_PASSWORD_ENV)
    named = f"{settings.password_env} (the configuration's password_env)" if own else \
        f"named by {section}.password_env"
    raise ConfigError(f"{section}: no password: set the environment variable {named} or run hma-check on a "
                      "terminal to be asked")
