"""PowerShell parameter binding for the lab's cmdlet layers: names case-insensitive, any unambiguous prefix."""

from __future__ import annotations

from typing import Any

from hma_check.lab import errors
from hma_check.lab.psrp import CommandCall

# The common parameters every cmdlet accepts (about_CommonParameters).
COMMON_PARAMETERS = ("ErrorAction", "WarningAction", "InformationAction", "ErrorVariable", "WarningVariable",
                     "InformationVariable", "OutVariable", "OutBuffer", "PipelineVariable", "Verbose", "Debug")


def bind(cmdlet: str, parameters: tuple[str, ...], positional: str | None, command: CommandCall) -> dict[str, Any]:
    """Parameters by canonical name; unknown or ambiguous names and extra positional values fail as PowerShell does."""
    params: dict[str, Any] = {}
    for name, value in command.parameters:
        if name is None:
            if positional is None or positional in params:
                raise errors.CmdletError(errors.error_record(
                    f"A positional parameter cannot be found that accepts argument '{value}'.",
                    exception_type="System.Management.Automation.ParameterBindingException",
                    category=errors.ErrorCategory.InvalidArgument, reason="ParameterBindingException",
                    fqid=f"PositionalParameterNotFound,{cmdlet}", target=str(value)))
            params[positional] = value
            continue
        exact = [p for p in parameters if p.lower() == name.lower()]
        matches = exact or [p for p in parameters if p.lower().startswith(name.lower())]
        if len(matches) != 1:
            raise errors.parameter_not_found(cmdlet, name)
        params[matches[0]] = value
    return params
