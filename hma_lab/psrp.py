"""The PSRP side of the lab: runspace pools and pipelines on psrpcore's server classes, one lock per shell.

psrpcore is sans-IO: bytes in, events and bytes out. This module keeps one ``Shell`` per WSMan shell (= runspace pool),
runs every pipeline on its own thread behind the pool's runspace limit, and sorts outgoing fragments into one outbox
per target (the pool or a pipeline) because psrpcore has a single send buffer while WSMan Receive asks per command.
The commands themselves are answered by a ``Configuration`` (Microsoft.Exchange here; others can register theirs).
"""

from __future__ import annotations

import queue
import sys
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol
from xml.etree import ElementTree

import psrpcore
from psrpcore._payload import Fragment, PSRPMessage, create_message
from psrpcore.types._serializer import _deserialize_string
from psrpcore.types import ErrorRecord, PipelineState, PSInvocationState, PSRPMessageType, serialize

from hma_lab import errors
from hma_lab.psvalues import Serialized

# psrpcore fragments are packed whole into Receive responses; pypsrp's smallest envelope (150 KiB, base64) fits two.
FRAGMENT_BYTES = 32 * 1024


@dataclass
class CommandCall:
    """One command of a pipeline as the client sent it; parameter values are plain Python values."""

    name: str
    is_script: bool
    parameters: list[tuple[str | None, Any]]


class Stopped(Exception):
    """The client stopped the pipeline (Signal ctrl_c) or closed the pool while a cmdlet was running."""


@dataclass
class Invocation:
    """What a configuration needs to run one pipeline: who, what, and where to write."""

    user: str
    configuration: str
    commands: list[CommandCall]
    write_output: Callable[[Any], None]
    write_error: Callable[[ErrorRecord], None]
    write_warning: Callable[[str], None]
    break_pool: Callable[[str], None]
    stop_event: threading.Event
    began: float          # time.monotonic() when the cmdlet began: its Command, or the runspace it waited for

    def sleep(self, seconds: float) -> None:
        """Simulated server work; raises Stopped as soon as the client stops the pipeline."""
        if seconds > 0 and self.stop_event.wait(seconds):
            raise Stopped()
        if self.stop_event.is_set():
            raise Stopped()


class Configuration(Protocol):
    """A session configuration (``Microsoft.Exchange``...): answers the pipelines of its runspace pools."""

    name: str

    def application_private_data(self) -> dict[str, Any]: ...

    def invoke(self, invocation: Invocation) -> None:
        """Run the pipeline; raise errors.CmdletError for a terminating error, write non-terminating ones."""


class ShellGone(Exception):
    """The shell was closed or broke; WSMan answers with a fault."""


@dataclass
class _FastCommand:
    command_text: str
    is_script: bool
    parameters: list[tuple[str | None, Any]]


@dataclass
class _FastPipeline:
    commands: list[_FastCommand]


@dataclass
class FastCreatePipeline:
    """A CreatePipeline read without psrpcore's general deserialiser (same attribute names as its event)."""

    pipeline_id: uuid.UUID
    pipeline: _FastPipeline


_SIMPLE_VALUES: dict[str, Callable[[str], Any]] = {
    "S": lambda text: _deserialize_string(text), "B": lambda text: text.strip().lower() == "true",
    "I32": int, "I64": int, "Nil": lambda text: None,
}


def _fast_create_pipeline(message: Any) -> FastCreatePipeline | None:
    """The commands of a plain CreatePipeline (names, switches, strings, booleans, numbers, string lists), or None
    for anything else, which psrpcore then reads in full. psrpcore's reader was a third of the lab's CPU time."""
    from xml.etree import ElementTree

    try:
        root = ElementTree.fromstring(bytes(message.data))
    except ElementTree.ParseError:
        return None
    shell = root.find("MS/Obj[@N='PowerShell']/MS")
    if shell is None:
        return None
    extra = shell.find("*[@N='ExtraCmds']")
    if extra is None or extra.tag != "Nil":
        return None
    commands = []
    for cmd in shell.findall("Obj[@N='Cmds']/LST/Obj/MS"):
        text_node, script_node = cmd.find("S[@N='Cmd']"), cmd.find("B[@N='IsScript']")
        if text_node is None or script_node is None:
            return None
        parameters: list[tuple[str | None, Any]] = []
        for arg in cmd.findall("Obj[@N='Args']/LST/Obj/MS"):
            name_node, value_node = arg.find("*[@N='N']"), arg.find("*[@N='V']")
            if name_node is None or value_node is None or name_node.tag not in ("S", "Nil"):
                return None
            value = _simple_value(value_node)
            if value is _UNREADABLE:
                return None
            parameters.append((None if name_node.tag == "Nil" else _deserialize_string(name_node.text or ""), value))
        commands.append(_FastCommand(_deserialize_string(text_node.text or ""),
                                     (script_node.text or "").strip().lower() == "true", parameters))
    if not commands or message.pipeline_id is None:
        return None
    return FastCreatePipeline(message.pipeline_id, _FastPipeline(commands))


_UNREADABLE = object()


def _simple_value(node: Any) -> Any:
    reader = _SIMPLE_VALUES.get(node.tag)
    if reader is not None:
        try:
            return reader(node.text or "")
        except ValueError:
            return _UNREADABLE
    if node.tag == "Obj":
        items = node.find("LST")
        if items is None or any(child.tag != "S" for child in items):
            return _UNREADABLE
        return [_deserialize_string(child.text or "") for child in items]
    return _UNREADABLE


class _Outgoing(PSRPMessage):
    """psrpcore's outgoing message, fragmented without copying: PSRPMessage copies the whole message into a
    bytearray, then each fragment and everything after it (a 116 KB object in 32 KB fragments was copied eight
    times over before psrpcore packed it). The fragments are views of the bytes: psrpcore's create_fragment joins
    them into its payload as it joins bytes."""

    def __init__(self, message_type: PSRPMessageType, data: bytes, runspace_pool_id: uuid.UUID,
                 pipeline_id: uuid.UUID | None, object_id: int,
                 stream_type: psrpcore.StreamType = psrpcore.StreamType.default) -> None:
        self.message_type = message_type
        self.runspace_pool_id = runspace_pool_id
        self.pipeline_id = pipeline_id
        self.object_id = object_id
        self.stream_type = stream_type
        self._rest = memoryview(data)
        self._fragment_counter = 0

    def __len__(self) -> int:
        return len(self._rest)

    @property
    def data(self) -> bytes:
        return bytes(self._rest)

    def fragment(self, length: int) -> Fragment:
        data, self._rest = self._rest[:length], self._rest[length:]
        fragment_id = self.fragment_counter
        return Fragment(self.object_id, fragment_id, fragment_id == 0, len(self._rest) == 0, data)  # type: ignore[arg-type]


class _ServerPool(psrpcore.ServerRunspacePool):
    """psrpcore reads ``event.ci`` case-sensitively; pypsrp sends ``<I64 N="CI">`` (real PowerShell does not care).

    It also takes objects serialised in advance (psvalues.Serialized): serialising every answer again was most of
    the lab's CPU time with hundreds of servers.
    """

    def prepare_message(self, message: Any, message_type: Any = None, pipeline_id: Any = None,
                        stream_type: Any = psrpcore.StreamType.default) -> None:
        if type(message) is PipelineState and message.ExceptionAsErrorRecord is None:
            message, message_type = self._plain_state(message), PSRPMessageType.PipelineState
        if not isinstance(message, Serialized):
            super().prepare_message(message, message_type, pipeline_id, stream_type)
            return
        # psrpcore's own header, then the object's bytes: one copy of them (packing them as psrpcore does made four)
        packed = create_message(False, message_type, b"", self.runspace_pool_id, pipeline_id) + message
        self._send_buffer.append(_Outgoing(message_type, packed, self.runspace_pool_id, pipeline_id,
                                           self._fragment_counter, stream_type))

    _plain_states: dict[int, Serialized] = {}

    def _plain_state(self, message: Any) -> Serialized:
        """A PipelineState message without an error record, as psrpcore serialises it (through ElementTree, in
        Python, once for every pipeline that ends; now once per state and process)."""
        state = int(message.PipelineState)
        found = self._plain_states.get(state)
        if found is None:
            element = serialize(message, self._cipher, our_capability=self.our_capability,
                                their_capability=self.their_capability)
            found = self._plain_states[state] = Serialized(ElementTree.tostring(element, encoding="utf-8",
                                                                                method="xml"))
        return found

    @staticmethod
    def _fix_ci(event: Any) -> None:
        obj = event._ps_object
        for prop in list(obj.PSObject.extended_properties) + list(obj.PSObject.adapted_properties):
            if prop.name.lower() == "ci" and prop.name != "ci":
                obj.PSObject.extended_properties.append(psrpcore.types.PSNoteProperty("ci", prop.get_value(obj)))
                return

    def _process_message(self, message: Any) -> Any:
        if message.message_type == PSRPMessageType.CreatePipeline and message.pipeline_id in self.pipeline_table:
            fast = _fast_create_pipeline(message)
            if fast is not None:
                return fast
        return super()._process_message(message)

    def _process_SetMaxRunspaces(self, event: Any) -> None:
        self._fix_ci(event)
        super()._process_SetMaxRunspaces(event)

    def _process_SetMinRunspaces(self, event: Any) -> None:
        self._fix_ci(event)
        super()._process_SetMinRunspaces(event)

    def _process_GetAvailableRunspaces(self, event: Any) -> None:
        self._fix_ci(event)
        super()._process_GetAvailableRunspaces(event)

    def _process_ResetRunspaceState(self, event: Any) -> None:
        self._fix_ci(event)
        super()._process_ResetRunspaceState(event)


class _Workers:
    """The threads pipelines run on, each kept for the next pipeline once its own ends (for a minute).

    A thread started per pipeline cost the lab a thread's creation and start-up on every cmdlet call, in the
    middle of the Command's handling, whose thread waited for the new one to start. Pipelines still run each on a
    thread of its own, as many at once as the pools allow."""

    IDLE_SECONDS = 60.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[queue.SimpleQueue[tuple[Callable[..., None], tuple[Any, ...], str]]] = []

    def run(self, target: Callable[..., None], args: tuple[Any, ...], name: str) -> None:
        with self._lock:
            jobs = self._idle.pop() if self._idle else None
        if jobs is None:
            jobs = queue.SimpleQueue()
            threading.Thread(target=self._work, args=(jobs,), daemon=True, name=name).start()
        jobs.put((target, args, name))

    def _work(self, jobs: queue.SimpleQueue[tuple[Callable[..., None], tuple[Any, ...], str]]) -> None:
        me = threading.current_thread()
        while True:
            try:
                target, args, name = jobs.get(timeout=self.IDLE_SECONDS)
            except queue.Empty:
                with self._lock:
                    if jobs in self._idle:   # nobody took this thread meanwhile: it ends
                        self._idle.remove(jobs)
                        return
                target, args, name = jobs.get()   # taken just now: its job is on the way
            me.name = name
            try:
                target(*args)
            except Exception:  # noqa: BLE001 - reported as an uncaught exception in a thread of its own would be
                threading.excepthook(threading.ExceptHookArgs((*sys.exc_info(), me)))  # type: ignore[arg-type]
            finally:
                del target, args    # an idle thread must not keep its last pipeline's shell alive for a minute
            me.name = "lab-pipeline-idle"
            with self._lock:
                self._idle.append(jobs)


_WORKERS = _Workers()


@dataclass
class _Run:
    pipe: psrpcore.ServerPipeline
    stop_event: threading.Event = field(default_factory=threading.Event)
    finished: bool = False
    started: bool = False
    terminated: bool = False
    created: float = field(default_factory=time.monotonic)   # its Command; then when its CreatePipeline was complete


def plain(value: Any) -> Any:
    """psrpcore parameter values to plain Python (PSString -> str, PSList -> list, switch stays None)."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    return value


class Shell:
    """One runspace pool. Every psrpcore call happens under ``self.cond``; cmdlets run on their own threads."""

    def __init__(self, shell_id: str, user: str, configuration: Configuration, creation: bytes,
                 on_command: Callable[[str, str, CommandCall], None]) -> None:
        self.id = shell_id
        self.user = user
        self.configuration = configuration
        self.on_command = on_command
        self.cond = threading.Condition()
        self.outboxes: dict[uuid.UUID | None, deque[bytes]] = {None: deque()}
        self.runs: dict[uuid.UUID, _Run] = {}
        self.closed = False
        self.broken_reason: str | None = None
        self.busy_runspaces = 0
        self.pool = _ServerPool(application_private_data=configuration.application_private_data())
        with self.cond:
            self._feed(creation, None)

    # ------------------------------------------------------------------------------------------ WSMan operations

    def command(self, command_id: str, first_fragment: bytes) -> None:
        pipeline_id = uuid.UUID(command_id)
        with self.cond:
            self._check_usable()
            # The pipeline must exist before its CreatePipeline fragment is fed, or psrpcore cannot find it.
            run = _Run(psrpcore.ServerPipeline(self.pool, pipeline_id))
            self.runs[pipeline_id] = run
            self.outboxes[pipeline_id] = deque()
            self._feed(first_fragment, pipeline_id)

    def send(self, command_id: str | None, data: bytes) -> None:
        pipeline_id = uuid.UUID(command_id) if command_id else None
        with self.cond:
            self._check_usable()
            self._feed(data, pipeline_id)

    def receive(self, command_id: str | None, max_bytes: int, timeout: float) -> tuple[list[bytes], bool]:
        """Long poll: whole fragments up to ``max_bytes`` for the pool or one pipeline, and whether it is done."""
        pipeline_id = uuid.UUID(command_id) if command_id else None
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                if self.closed:
                    raise ShellGone("closed")
                box = self.outboxes.get(pipeline_id)
                if box is None:
                    raise ShellGone(f"unknown command {command_id}")
                if box:
                    chunks, size = [], 0
                    while box and (not chunks or size + len(box[0]) <= max_bytes):
                        size += len(box[0])
                        chunks.append(box.popleft())
                    run = self.runs.get(pipeline_id) if pipeline_id else None
                    return chunks, bool(run and run.finished and not box)
                if self.broken_reason is not None and pipeline_id is not None:
                    raise ShellGone(self.broken_reason)
                if pipeline_id is not None and self.runs[pipeline_id].finished:
                    return [], True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError()
                self.cond.wait(remaining)

    def signal(self, command_id: str | None, code: str) -> None:
        pipeline_id = uuid.UUID(command_id) if command_id else None
        with self.cond:
            run = self.runs.get(pipeline_id) if pipeline_id else None
            if run is None:
                return
            if code.endswith("ctrl_c"):
                run.stop_event.set()
                if run.started and not run.finished:
                    return  # the cmdlet thread notices and reports Stopped itself
                if not run.finished:
                    run.finished = True
                    self._stop_pipe(run)
            elif code.endswith("Terminate"):
                run.terminated = True
                run.stop_event.set()
                if run.finished:
                    self._forget(pipeline_id)

    def close(self) -> None:
        with self.cond:
            self.closed = True
            for run in self.runs.values():
                run.stop_event.set()
            self.cond.notify_all()

    def break_pool(self, reason: str) -> None:
        """Fault injection: the pool goes Broken, as when the Exchange PowerShell application pool recycles."""
        with self.cond:
            if self.broken_reason is None:
                self.broken_reason = reason
                for run in self.runs.values():
                    run.stop_event.set()
                self.pool.set_broken(errors.runspace_broken(reason))
                self._pump()
                self.cond.notify_all()

    # ------------------------------------------------------------------------------------------ internals

    def _check_usable(self) -> None:
        if self.closed:
            raise ShellGone("closed")
        if self.broken_reason is not None:
            raise ShellGone(self.broken_reason)

    def _feed(self, data: bytes, pipeline_id: uuid.UUID | None) -> None:
        self.pool.receive_data(psrpcore.PSRPPayload(data, psrpcore.StreamType.default, pipeline_id))
        while (event := self.pool.next_event()) is not None:
            self._on_event(event)
        self._pump()

    def _on_event(self, event: Any) -> None:
        if isinstance(event, (psrpcore.CreatePipelineEvent, FastCreatePipeline)):
            run = self.runs[event.pipeline_id]
            run.created = time.monotonic()   # its last fragment is in: the cmdlet begins now
            commands = [CommandCall(str(cmd.command_text), bool(cmd.is_script),
                                    [(None if name is None else str(name), plain(value)) for name, value in cmd.parameters])
                        for cmd in event.pipeline.commands]
            _WORKERS.run(self._run, (run, commands), f"lab-pipeline-{event.pipeline_id}")
        elif isinstance(event, (psrpcore.SetMaxRunspacesEvent, psrpcore.SetMinRunspacesEvent,
                                psrpcore.ResetRunspaceStateEvent)):
            self.pool.runspace_availability_response(event.ci, True)
            self.cond.notify_all()
        elif isinstance(event, psrpcore.GetAvailableRunspacesEvent):
            self.pool.runspace_availability_response(event.ci, max(self.pool.max_runspaces - self.busy_runspaces, 0))

    def _pump(self, wake: bool = True) -> None:
        while (payload := self.pool.data_to_send(FRAGMENT_BYTES)) is not None:
            box = self.outboxes.get(payload.pipeline_id)
            if box is not None:
                box.append(payload.data)
        if wake:
            self.cond.notify_all()

    def _run(self, run: _Run, commands: list[CommandCall]) -> None:
        with self.cond:
            # Like PowerShell, a pool runs at most max_runspaces pipelines at once and queues the rest.
            began = run.created   # a cmdlet's latency runs from its Command, not from when a lab thread got to it
            while self.busy_runspaces >= max(self.pool.max_runspaces, 1) and not run.stop_event.is_set():
                self.cond.wait(1.0)
                began = time.monotonic()
            if run.stop_event.is_set():
                if not run.finished:
                    run.finished = True
                    self._stop_pipe(run)
                return
            self.busy_runspaces += 1
            run.started = True
            # psrpcore's start() would send PipelineState(Running), which real PowerShell never sends.
            run.pipe._change_state(PSInvocationState.Running, emit=False)
        for command in commands:
            self.on_command(self.user, self.configuration.name, command)
        invocation = Invocation(user=self.user, configuration=self.configuration.name, commands=commands,
                                write_output=lambda obj: self._write(run, obj, PSRPMessageType.PipelineOutput),
                                write_error=lambda rec: self._write(run, rec, PSRPMessageType.ErrorRecord),
                                write_warning=lambda text: self._warn(run, text),
                                break_pool=self.break_pool, stop_event=run.stop_event, began=began)
        outcome: tuple[str, ErrorRecord | None]
        try:
            self.configuration.invoke(invocation)
            outcome = ("completed", None)
        except Stopped:
            outcome = ("stopped", None)
        except errors.CmdletError as exc:
            outcome = ("failed", exc.record)
        except Exception as exc:  # noqa: BLE001 - a lab bug must still reach the client as an error record
            outcome = ("failed", errors.error_record(
                f"Lab internal error: {type(exc).__name__}: {exc}", exception_type="System.Exception",
                category=errors.ErrorCategory.NotSpecified, reason=type(exc).__name__, fqid="LabInternalError"))
        with self.cond:
            self.busy_runspaces -= 1
            if not run.finished and self.broken_reason is None and not self.closed:
                run.finished = True
                kind, record = outcome
                if kind == "completed" and not run.stop_event.is_set():
                    run.pipe.complete()
                elif kind == "failed":
                    # psrpcore has no public way to fail a pipeline; this puts ExceptionAsErrorRecord in PipelineState.
                    run.pipe._change_state(PSInvocationState.Failed, record)
                else:
                    self._stop_pipe(run)
            run.finished = True
            self._pump()
            if run.terminated:
                self._forget(run.pipe.pipeline_id)

    def _write(self, run: _Run, value: Any, message_type: PSRPMessageType) -> None:
        with self.cond:
            if run.stop_event.is_set() or self.broken_reason is not None or self.closed:
                raise Stopped()
            run.pipe.prepare_message(value, message_type=message_type)
            # Output is handed to a waiting Receive when a fragment fills or the pipeline ends, so a small answer
            # and its final state travel in one response instead of two.
            box = self.outboxes.get(run.pipe.pipeline_id)
            self._pump(wake=bool(box) and len(box) > 1)

    def _warn(self, run: _Run, text: str) -> None:
        with self.cond:
            if not (run.stop_event.is_set() or self.broken_reason is not None or self.closed):
                run.pipe.write_warning(text)
                self._pump()

    def _stop_pipe(self, run: _Run) -> None:
        if run.pipe.state == PSInvocationState.NotStarted:
            run.pipe._change_state(PSInvocationState.Running, emit=False)
        run.pipe._change_state(PSInvocationState.Stopped, errors.pipeline_stopped())
        self._pump()

    def _forget(self, pipeline_id: uuid.UUID) -> None:
        run = self.runs.pop(pipeline_id, None)
        self.outboxes.pop(pipeline_id, None)
        if run is not None:
            run.pipe.close()
