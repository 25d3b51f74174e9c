"""What the lab's cmdlet layers (Exchange, Windows) share: parameter binding as PowerShell does it (names
case-insensitive, any unambiguous prefix), pipeline resolution, and the scenario's latency and faults."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable, Generic, Iterable, Iterator, TypeVar

from hma_lab import errors
from hma_lab.psrp import CommandCall, Invocation, Stopped

if TYPE_CHECKING:
    from hma_lab.scenario import Fault

H = TypeVar("H")

# The common parameters every cmdlet accepts (about_CommonParameters).
COMMON_PARAMETERS = ("ErrorAction", "WarningAction", "InformationAction", "ErrorVariable", "WarningVariable",
                     "InformationVariable", "OutVariable", "OutBuffer", "PipelineVariable", "Verbose", "Debug")


@dataclass(frozen=True)
class Cmdlet(Generic[H]):
    """One cmdlet of a session configuration: its own parameters (the common ones come on top) and its handler."""

    name: str
    handler: H
    parameters: tuple[str, ...]
    positional: str | None = None     # the parameter a value without a name binds to
    per_server: bool = False          # -Server (or -Identity SERVER\...) names the server it reads


def table(cmdlets: Iterable[Cmdlet[H]]) -> dict[str, Cmdlet[H]]:
    """Cmdlets by lower-case name, as PowerShell looks them up."""
    return {cmdlet.name.lower(): cmdlet for cmdlet in cmdlets}


def resolve(commands: list[CommandCall], cmdlets: dict[str, Cmdlet[H]],
            common: tuple[str, ...] = COMMON_PARAMETERS) -> tuple[Cmdlet[H], dict[str, Any]]:
    """The pipeline's one cmdlet and its parameters by canonical name, or the error PowerShell gives."""
    cmdlet, command = single_command(commands, cmdlets)
    return cmdlet, bind(cmdlet.name, cmdlet.parameters + common, cmdlet.positional, command)


def write_all(invocation: Invocation, items: Iterable[Any]) -> None:
    """A cmdlet's answer in order: objects to the output, errors to the error stream (a terminating one fails the
    pipeline there)."""
    for item in items:
        if isinstance(item, errors.CmdletError):
            if item.terminating:
                raise item
            invocation.write_error(item.record)
        else:
            invocation.write_output(item)


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


def single_command(commands: list[CommandCall], cmdlets: dict[str, Cmdlet[H]]) -> tuple[Cmdlet[H], CommandCall]:
    """The one cmdlet of a pipeline, resolved as PowerShell does: nothing runs if any command is a script or unknown.

    Exchange's endpoint has a few pipeline helpers, and the standard one a whole language, but every fact hma-check
    reads comes from one cmdlet per pipeline, so the lab answers no more.
    """
    resolved: list[tuple[Cmdlet[H], CommandCall]] = []
    for command in commands:
        if command.is_script:
            raise errors.scripts_not_allowed(command.name)
        cmdlet = cmdlets.get(command.name.lower())
        if cmdlet is None:
            raise errors.command_not_found(command.name)
        resolved.append((cmdlet, command))
    if len(resolved) > 1:
        raise errors.CmdletError(errors.error_record(
            "The lab answers one cmdlet per pipeline.", exception_type="System.NotSupportedException",
            category=errors.ErrorCategory.NotImplemented, reason="NotSupportedException", fqid="LabPipeline"))
    return resolved[0]


# What a client sees when the pool breaks under it (the Exchange PowerShell application pool recycling).
POOL_BROKEN = "The I/O operation has been aborted because of either a thread exit or an application request."


def answer_call(invocation: Invocation, delay: float, fault: Fault | None,
                answer: Callable[[Fault], errors.CmdletError], produce: Callable[[Invocation], Iterable[Any]]) -> None:
    """One call's answer: the scenario's latency and ``fault``, and the items ``produce`` makes (write_all's).

    The latency runs from when the call began (``invocation.began``: its Command, or the runspace it waited for).
    The cmdlet starts its work at once, holding what it writes until the latency has passed; what it makes after
    that streams as it is made. So the latency is the cmdlet's time to answer, its own work included, as a client
    of a real server sees it: the lab's building of an answer's objects (~1 ms at 50 servers) and its hand-over to
    a lab thread had been added on top of every call's latency.

    ``delay``, ``hang`` and ``break_pool`` mean the same on every endpoint; ``error``, ``throttle`` and ``not_found``
    are answered when the latency has passed with ``answer(fault)``, each layer's own record (the cmdlet does not
    run): a terminating one fails the pipeline, a non-terminating one is written and ends the call.
    """
    if fault is not None and fault.effect == "hang":
        invocation.sleep(24 * 3600)
    elif fault is not None and fault.effect == "break_pool":
        invocation.break_pool(POOL_BROKEN)
        raise Stopped()
    elif fault is not None and fault.effect != "delay":
        invocation.sleep(invocation.began + delay - time.monotonic())
        failure = answer(fault)
        if failure.terminating:
            raise failure
        invocation.write_error(failure.record)
        return
    deadline = invocation.began + delay + (fault.value if fault is not None and fault.effect == "delay" else 0)
    held = _Held()
    holding = replace(invocation, write_output=lambda value: held.write(invocation.write_output, value),
                      write_error=lambda record: held.write(invocation.write_error, record),
                      write_warning=lambda text: held.write(invocation.write_warning, text))
    items: Iterator[Any] = iter(())
    try:
        items = iter(produce(holding))   # a handler that returns a list does all its work (or fails) here
        while time.monotonic() < deadline:
            item = next(items, _END)
            if item is _END:
                break
            held.write(lambda value: write_all(invocation, (value,)), item)
    finally:   # a terminating error too goes out only once the latency has passed
        invocation.sleep(deadline - time.monotonic())
        held.release()
    write_all(invocation, items)   # what is left, as it is made


_END = object()


class _Held:
    """What a cmdlet writes before its latency has passed, in order; written through once released."""

    def __init__(self) -> None:
        self.writes: list[tuple[Callable[[Any], None], Any]] | None = []

    def write(self, write: Callable[[Any], None], value: Any) -> None:
        if self.writes is None:
            write(value)
        else:
            self.writes.append((write, value))

    def release(self) -> None:
        writes, self.writes = self.writes or [], None
        for write, value in writes:
            write(value)
