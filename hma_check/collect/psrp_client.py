"""One remote PowerShell session over pypsrp, used read-only: allowlisted cmdlets through add_cmdlet only.

The Exchange collector opens it on ``Microsoft.Exchange`` (named Get- cmdlets), the OS collector on the standard
``Microsoft.PowerShell`` endpoint (four read cmdlets): each configuration's allowlist lives here (ALLOWLISTS), so no
caller can pair an endpoint with a wider list. Never ``Client.execute_ps`` (it wraps everything in Invoke-Expression,
which Exchange's NoLanguage endpoint refuses) and never a script. Every call checks the allowlist before anything is
sent, waits at most ``timeout`` seconds (the pipeline is stopped after that), and reports failures as CallFailed with
a kind the collector acts on.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any, Callable

from hma_check.collect.clixml import ClixmlObject, parse_object_xml
from hma_check.collect.psrp_wire import PipelineTemplates, PrebuiltMessage, lean_receive, lean_wsman
from hma_check.errors import ClixmlError, HmaCheckError
from hma_check.util.scrub import scrub

# Told each output object (its position, the object) that arrives while the pipeline still runs (invoke_pipeline).
OnOutput = Callable[[int, ClixmlObject], None]

# Read-only by construction: per session configuration, the cmdlets that may be sent, by name; anything else is
# refused before it can leave the machine, and a configuration without a list cannot be opened. Not a pattern: a
# "Test-*" rule admitted Test- cmdlets that act on the organisation (Test-Mailflow, for one, sends test messages), so
# a cmdlet the collectors start to use is added here by name, one per line. The standard endpoint is a
# full-language administrator session, so it gets only the five reads the OS collector makes (registry values,
# ExSetup.exe, the operating system, the certificate store, IIS's applicationHost.config). No Test- cmdlet is used,
# so none is admitted.
ALLOWLISTS: dict[str, frozenset[str]] = {
    "Microsoft.Exchange": frozenset({
        "Get-AcceptedDomain",
        "Get-ActiveSyncDeviceAccessRule",
        "Get-ActiveSyncOrganizationSettings",
        "Get-ActiveSyncVirtualDirectory",
        "Get-AuthConfig",
        "Get-AuthenticationPolicy",
        "Get-AuthServer",
        "Get-AutodiscoverVirtualDirectory",
        "Get-CASMailbox",
        "Get-ClientAccessServer",
        "Get-ClientAccessService",
        "Get-EcpVirtualDirectory",
        "Get-ExchangeCertificate",
        "Get-ExchangeServer",
        "Get-HybridConfiguration",
        "Get-IntraOrganizationConnector",
        "Get-Mailbox",
        "Get-MapiVirtualDirectory",
        "Get-OabVirtualDirectory",
        "Get-OrganizationConfig",
        "Get-OutlookAnywhere",
        "Get-OwaVirtualDirectory",
        "Get-PartnerApplication",
        "Get-RoleGroupMember",
        "Get-SettingOverride",
        "Get-User",
        "Get-WebServicesVirtualDirectory",
    }),
    "Microsoft.PowerShell": frozenset({
        "Get-ChildItem",
        "Get-CimInstance",
        "Get-Command",
        "Get-Content",        # only -LiteralPath of READABLE_FILES (check_read_only refuses any other file)
        "Get-ItemProperty",
        # the HttpProxy log summary's pipeline (collect.logs): Import-Csv reads the log files; Where-Object and
        # Group-Object only filter and count what it read
        "Group-Object",
        "Import-Csv",
        "Where-Object",
    }),
}
# Get-Content reads files: on the standard endpoint only these, named with -LiteralPath (IIS's configuration, for
# Require SSL of the HMA virtual directories), so the allowlist cannot become a way to read any file.
# The parameters the log summary's pipeline cmdlets may carry (no script block can be among them).
_PIPELINE_PARAMETERS = {"import-csv": {"literalpath"}, "where-object": {"property", "match"},
                        "group-object": {"property", "noelement"}}
READABLE_FILES = frozenset({"c:\\windows\\system32\\inetsrv\\config\\applicationhost.config"})
# winerror.h: ERROR_WSMAN_OPERATION_TIMEDOUT (pypsrp retries it), the shell-not-found family, and the quota faults
# Exchange's throttling policy surfaces through WinRM (max shells, user load quota, max operations).
OPERATION_TIMEDOUT = 0x80338029
SHELL_GONE = {0x8033805B, 0x80338043}
QUOTA_CODES = {0x803381A4, 0x803381A5, 0x803381A6, 0x803381AB, 0x803381C6}
_THROTTLE_TEXT = re.compile(r"quota|throttl|exceeded the maximum|too many", re.I)
_WAIT_MS = re.compile(r"at least (\d+) milliseconds", re.I)


class ReadOnlyViolation(HmaCheckError):
    """A caller asked for a cmdlet outside the endpoint's allowlist: a bug in hma-check, never sent."""


class CallFailed(HmaCheckError):
    """``kind``: credential (the account or this machine cannot sign in anywhere: the section stops), auth (this
    endpoint refused or cannot be signed in to), connect, throttled, timeout, broken, missing_command, cmdlet,
    transport, protocol."""

    def __init__(self, kind: str, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.retry_after = retry_after


@dataclass(frozen=True)
class ErrorInfo:
    """One error record as the endpoint sent it: the text, its FullyQualifiedErrorId and what it was about."""

    message: str
    fqid: str
    target: str | None

    @property
    def not_found(self) -> bool:
        """PowerShell's "Cannot find path ... because it does not exist" (ItemNotFoundException)."""
        return self.fqid.split(",", 1)[0] == "PathNotFound"

    def __str__(self) -> str:
        text = self.message
        if self.target and self.target not in text:
            text = f"{text} ({self.target})"   # "Requested registry access is not allowed." names no key
        return f"{text} [{self.fqid}]" if self.fqid else text


@dataclass
class Answer:
    """What one pipeline returned: its objects and its non-terminating error records."""

    objects: list[ClixmlObject]
    errors: list[ErrorInfo]


def allowlist(configuration: str) -> frozenset[str]:
    """The cmdlets that may be sent to this session configuration; ReadOnlyViolation when hma-check has none."""
    allowed = ALLOWLISTS.get(configuration)
    if allowed is None:
        raise ReadOnlyViolation(f"refusing to use the {configuration!r} session configuration: hma-check has no "
                                "read-only allowlist for it")
    return allowed


def check_read_only(cmdlet: str, configuration: str, params: tuple[tuple[str, Any], ...] = ()) -> None:
    allowed = allowlist(configuration)
    if cmdlet not in allowed:   # exact: PowerShell would also resolve 'get-user' or a prefix, hma-check never sends one
        raise ReadOnlyViolation(f"refusing to send {cmdlet!r}: hma-check runs only the read-only cmdlets it names "
                                f"(psrp_client.ALLOWLISTS) on {configuration}")
    allowed_parameters = _PIPELINE_PARAMETERS.get(cmdlet.lower())
    if allowed_parameters is not None and {name.lower() for name, _ in params} - allowed_parameters:
        # -FilterScript, -Expression... would run script on a full-language endpoint: only plain parameters go
        raise ReadOnlyViolation(f"refusing to send {cmdlet} with parameters other than "
                                f"{', '.join(sorted(allowed_parameters))}")
    if cmdlet.lower() == "get-content":
        names = {name.lower(): value for name, value in params}
        path = names.get("literalpath")
        if set(names) - {"literalpath", "raw"} or not isinstance(path, str) or path.lower() not in READABLE_FILES:
            raise ReadOnlyViolation(f"refusing to send Get-Content for anything but -LiteralPath of "
                                    f"{', '.join(sorted(READABLE_FILES))}")


def powershell_text(cmdlet: str, params: tuple[tuple[str, Any], ...]) -> str:
    """The command as an administrator would type it (for evidence and error messages)."""
    parts = [cmdlet]
    for name, value in params:
        if value is True:
            parts.append(f"-{name}")
        elif value is False:
            parts.append(f"-{name}:$false")
        elif isinstance(value, (list, tuple)):
            parts.append(f"-{name} " + ",".join(_quoted(item) for item in value))
        elif isinstance(value, str) and re.fullmatch(r"[A-Za-z0-9._-]+", value) and not value.startswith("-"):
            parts.append(f"-{name} {value}")
        else:
            parts.append(f"-{name} {_quoted(value)}")
    return " ".join(parts)


def given_up_reason(server: str, command: str, timeout: float) -> str:
    """Why the rest of a scan leaves a server alone: one timeout is all a hung server may cost (the Exchange and OS
    collectors share the scan's list of such servers, runner.RunContext.unresponsive)."""
    return (f"{server} was given up for the rest of the scan: {command} got no answer within {timeout:g} s "
            "(a hung server costs one timeout, not one per query)")


def redact(text: str, secrets: tuple[str, ...]) -> str:
    """The text with every secret (the password) replaced, for evidence and messages."""
    return scrub(text, secrets)


def _quoted(value: Any) -> str:
    return "'" + str(value).replace("'", "''") + "'"


@dataclass
class RemoteSession:
    """A WSMan connection and one RunspacePool on one session configuration. Not thread-safe: one per thread."""

    settings: Any     # ExchangeSettings, or the OS collector's per-server OsSettings: where and how to sign in
    password: str | None
    configuration: str = "Microsoft.Exchange"   # a key of ALLOWLISTS
    login: Any = None  # kerberos.Login made once for the section (auth kerberos/negotiate); made here when absent

    def __post_init__(self) -> None:
        allowlist(self.configuration)   # no allowlist, no session
        self._wsman: Any = None
        self._pool: Any = None
        self._prebuilt = False   # the pool's serializer passes PrebuiltMessage through (_keep_output_raw)
        self._unclosed: Any = None   # the last pipeline, answered; its Signal terminate follows the next Command
        self.discard = False   # set by the collector when a failed call may have left the session unusable

    def open(self) -> "RemoteSession":
        from pypsrp.powershell import RunspacePool

        s = self.settings
        kwargs: dict[str, Any] = {}
        if s.auth == "certificate":
            kwargs.update(certificate_pem=str(s.certificate_pem), certificate_key_pem=str(s.certificate_key_pem))
        # Windows' own WinRM client and IIS use the HTTP service class (HTTP/<FQDN>, which Active Directory maps to
        # the computer's HOST SPN); pypsrp's default would be host/<FQDN>.
        service = s.negotiate_service or "HTTP"
        host = s.negotiate_hostname_override or s.server
        if s.auth in ("kerberos", "negotiate"):
            kwargs["negotiate_service"] = service
        if s.negotiate_hostname_override:
            kwargs["negotiate_hostname_override"] = s.negotiate_hostname_override
        validation: Any = s.cert_validation
        if s.cert_validation and s.ca_file is not None:
            validation = str(s.ca_file)
        username, password = s.username, self.password
        spn = f"{service}/{host}"
        try:
            from hma_check.collect.kerberos import sign_in

            self.login = self.login or sign_in(s, self.password, section=self.configuration)
            if self.login is not None:   # auth kerberos, negotiate or ntlm
                username, password = self.login.username, self.login.password
            self._wsman = lean_wsman(s.server, port=s.port, path=s.path, ssl=s.ssl, auth=s.auth,
                                username=username, password=password, cert_validation=validation,
                                encryption="auto", operation_timeout=s.operation_timeout,
                                connection_timeout=int(s.connect_timeout), read_timeout=s.operation_timeout + 10,
                                reconnection_retries=0, **kwargs)
            _quiet_session(self._wsman)
            self._pool = RunspacePool(self._wsman, configuration_name=self.configuration)
            self._prebuilt = _keep_output_raw(self._pool)
            lean_receive(self._pool)
            self._pool.open()
        except Exception as exc:  # noqa: BLE001 - classified into one printable line
            self.close()
            raise classify(exc, f"opening the {self.configuration} remote PowerShell session on {s.server}",
                           principal=str(username) if username else None, spn=spn) from None
        return self

    def run(self, cmdlet: str, params: tuple[tuple[str, Any], ...], timeout: float, *,
            on_output: OnOutput | None = None) -> list[ClixmlObject]:
        """Run one cmdlet and return its objects, normalised; CallFailed for anything that is not a clean answer.
        ``on_output``: see invoke_pipeline."""
        answer = self.invoke_pipeline(((cmdlet, params),), timeout, on_output=on_output)
        if answer.errors:
            raise _failure([str(error) for error in answer.errors])
        return answer.objects

    def invoke(self, cmdlet: str, params: tuple[tuple[str, Any], ...], timeout: float) -> Answer:
        """Run one cmdlet; its objects and non-terminating errors, or CallFailed when the pipeline itself failed."""
        return self.invoke_pipeline(((cmdlet, params),), timeout)

    def invoke_pipeline(self, commands: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...],
                        timeout: float, *, on_output: OnOutput | None = None) -> Answer:
        """Run cmdlets piped into each other (still cmdlets with parameters only: every one is checked against the
        allowlist before anything is sent, and no script is ever built).

        ``on_output`` is told every object that arrives while the pipeline is still running, as it arrives (a long
        answer comes in several Receives), so a caller can start on it early; an object that cannot be read stops
        that, and the answer, its errors and its failures are what they would be without ``on_output``."""
        from pypsrp.powershell import PowerShell, PSInvocationState

        for cmdlet, params in commands:
            check_read_only(cmdlet, self.configuration, params)
        if self._pool is None:
            raise CallFailed("broken", "the session is not open")
        ps = PowerShell(self._pool)
        message = PIPELINES.message(self._pool, commands) if self._prebuilt else None
        if message is None:   # values the templates leave to pypsrp (a list): its begin_invoke builds the message
            for cmdlet, params in commands:
                ps.add_cmdlet(cmdlet)
                for name, value in params:
                    ps.add_parameter(name, value)
        deadline = time.monotonic() + timeout
        doing = " | ".join(powershell_text(c, p) for c, p in commands)
        try:
            if message is None:
                ps.begin_invoke()
            else:   # what begin_invoke does with the message it builds (psrp_wire.PipelineTemplates)
                ps._invoke(message)  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001
            failure = classify(exc, doing)
            if failure.kind != "throttled":
                # What fails here is the WSMan exchange itself (classify: transport, connect, broken, auth...), not
                # a cmdlet: a Signal sent now would only cost another wait on a connection that failed, and closing
                # the session (WSMan Delete of the shell) ends the last pipeline too.
                self._unclosed = None
            raise failure from None
        # The previous pipeline's Signal terminate goes now, while the server runs this one, instead of between
        # its answer and this Command, where it held this session's server idle for a round trip per call.
        self._close_previous()
        early: list[ClixmlObject] = []   # objects told to on_output, in order
        try:
            while ps.state == PSInvocationState.RUNNING:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._stop(ps)
                    raise CallFailed("timeout", f"no answer within {timeout:g} s; the call was stopped")
                ps.poll_invoke(timeout=max(1, min(self.settings.operation_timeout, int(remaining) or 1)))
                if on_output is not None and ps.state == PSInvocationState.RUNNING:
                    on_output = _tell(ps.output, early, on_output)
        except CallFailed:
            raise
        except Exception as exc:  # noqa: BLE001
            raise classify(exc, doing) from None
        try:
            errors = [_error_info(record) for record in ps.streams.error]
            if ps.state == PSInvocationState.FAILED:
                raise _failure([str(e) for e in errors] or ["the pipeline failed without an error record"])
            if ps.state != PSInvocationState.COMPLETED:
                raise CallFailed("broken", f"the pipeline ended in state {ps.state}")
            return Answer(early + [_normalise(obj) for obj in ps.output[len(early):]], errors)
        finally:
            # The answer is in and the server's runspace free again: the Signal terminate that closes the pipeline
            # (pypsrp's PowerShell.close) follows the session's next Command, or the session's close.
            self._unclosed = ps

    def _close_previous(self) -> None:
        ps, self._unclosed = self._unclosed, None
        if ps is None:
            return
        try:
            ps.close()
        except Exception:  # noqa: BLE001 - that pipeline's answer is in; a failed cleanup must not lose anything
            pass

    def _stop(self, ps: Any) -> None:
        try:
            ps.stop()
        except Exception:  # noqa: BLE001 - the call has already failed; the session is discarded after this
            pass

    def close(self) -> None:
        if self._pool is not None:
            self._close_previous()
        self._unclosed = None
        pool, wsman = self._pool, self._wsman
        self._pool = self._wsman = None
        for closer in (getattr(pool, "close", None), getattr(wsman, "close", None)):
            if closer is None:
                continue
            try:
                closer()
            except Exception:  # noqa: BLE001 - closing a broken session is best effort
                pass


PIPELINES = PipelineTemplates()   # shared by every session: a shape is made once per process


class RawOutput:
    """One pipeline output object, kept as the CLIXML the server sent (the normaliser reads it)."""

    __slots__ = ("_xml",)

    def __init__(self, xml: str) -> None:
        self._xml = xml


def _keep_output_raw(pool: Any) -> bool:
    """Hand pipeline output to the normaliser as the XML that arrived, without pypsrp's object model.

    pypsrp deserialises every output object into nested GenericComplexObjects (serialising each element back to a
    string on the way) only for hma-check to parse the XML again; that was a quarter of the collector's CPU time
    per call. Only output bodies are affected: PIPELINE_OUTPUT is the one message pypsrp deserialises from a string
    without metadata. ``_serializer`` and ``Fragmenter.serializer`` are pypsrp's own (0.9.x, pinned below 1.0).
    """
    from pypsrp.serializer import Serializer

    class _RawOutputSerializer(Serializer):
        def serialize(self, value: Any, metadata: Any = None, parent: Any = None, clear: bool = True) -> Any:
            if isinstance(value, PrebuiltMessage):
                return value.xml   # Message.pack sends bytes as they are
            return super().serialize(value, metadata, parent, clear)

        def deserialize(self, element: Any, metadata: Any = None, clear: bool = True) -> Any:
            if isinstance(element, str) and metadata is None and clear and element.lstrip().startswith("<Obj"):
                return RawOutput(element)
            return super().deserialize(element, metadata, clear)

    fragmenter = getattr(pool, "_fragmenter", None)
    if fragmenter is None or not isinstance(getattr(pool, "_serializer", None), Serializer):
        return False
    pool._serializer = _RawOutputSerializer()
    fragmenter.serializer = pool._serializer
    return True


def _quiet_session(wsman: Any) -> None:
    """Resolve proxies once per session instead of on every request.

    requests scans the whole environment for proxy variables on each send when trust_env is on; that was a fifth
    of the collector's CPU time per call. The proxy settings are read once here (NO_PROXY included) and kept.
    ``_build_session`` is pypsrp's own (0.9.x, pinned below 1.0 in pyproject).
    """
    import requests

    transport = wsman.transport
    try:
        session = transport._build_session()
    except AttributeError:
        return
    if requests.utils.should_bypass_proxies(transport.endpoint, no_proxy=None):
        session.proxies = {}
    session.trust_env = False
    transport.session = session


def _tell(output: list[Any], early: list[ClixmlObject], on_output: OnOutput) -> OnOutput | None:
    """Normalise the output objects not yet told, add them to ``early`` and tell ``on_output``; None from the first
    object that cannot be read on (the answer's own reading raises for it in its place, after the errors)."""
    for position in range(len(early), len(output)):
        try:
            obj = _normalise(output[position])
        except CallFailed:
            return None
        early.append(obj)
        on_output(position, obj)
    return on_output


def _normalise(obj: Any) -> ClixmlObject:
    xml = getattr(obj, "_xml", None)
    if not isinstance(xml, str):
        raise CallFailed("protocol", f"the endpoint returned a {type(obj).__name__}, not an Exchange object")
    try:
        return parse_object_xml(xml, source="remote session")
    except ClixmlError as exc:
        raise CallFailed("protocol", f"unreadable object from the endpoint: {exc}") from None


def _failure(problems: list[str]) -> CallFailed:
    text = "; ".join(problems)
    if _THROTTLE_TEXT.search(text):
        return CallFailed("throttled", text, retry_after=_retry_after(text))
    if any("CommandNotFoundException" in p for p in problems):
        return CallFailed("missing_command", text)
    return CallFailed("cmdlet", text)


def _error_info(record: Any) -> ErrorInfo:
    message = str(record) if str(record) not in ("", "None") else (getattr(record, "message", None) or "error")
    target = getattr(record, "target_object", None)
    if target is None:
        target = getattr(record, "target_name", None)
    return ErrorInfo(message=message, fqid=str(getattr(record, "fq_error", None) or ""),
                     target=str(target) if target is not None else None)


def _retry_after(text: str) -> float | None:
    match = _WAIT_MS.search(text)
    return int(match.group(1)) / 1000 if match else None


def classify(exc: BaseException, doing: str, *, principal: str | None = None, spn: str | None = None) -> CallFailed:
    """Turn a pypsrp/requests/Kerberos exception into one printable CallFailed (no traceback, no secret)."""
    import requests
    from pypsrp.exceptions import AuthenticationError, WinRMTransportError, WSManFaultError

    from hma_check.collect.kerberos import KerberosFailure, error_code, explain

    if isinstance(exc, CallFailed):
        return exc
    if isinstance(exc, KerberosFailure):
        return CallFailed("auth" if exc.per_server else "credential", exc.message)
    library = type(exc).__module__.split(".", 1)[0]
    if library in ("gssapi", "krb5") or (library == "spnego" and error_code(exc) is not None):
        failure = explain(exc, principal=principal, spn=spn)
        return CallFailed("auth" if failure.per_server else "credential", f"{failure.message} (while {doing})")
    if isinstance(exc, AuthenticationError):
        return CallFailed("auth", f"authentication failed while {doing}: {exc}")
    if isinstance(exc, WSManFaultError):
        transport = exc.__context__
        if exc.code is None and not (exc.reason or "").strip() and isinstance(transport, WinRMTransportError):
            # pypsrp read an HTML error page (IIS or HTTP.sys: 403, 500...) as a fault without content.
            return CallFailed("transport", f"HTTP {transport.code} from the endpoint while {doing}")
        code = exc.code if isinstance(exc.code, int) else None
        reason = (exc.reason or "").strip()
        text = f"WSMan fault {hex(code) if code is not None else exc.code} while {doing}: {reason}"
        if (code in QUOTA_CODES) or _THROTTLE_TEXT.search(reason):
            return CallFailed("throttled", text, retry_after=_retry_after(reason))
        if code in SHELL_GONE:
            return CallFailed("broken", text)
        return CallFailed("transport", text)
    if isinstance(exc, WinRMTransportError):
        return CallFailed("transport", f"HTTP {exc.code} from the endpoint while {doing}")
    if isinstance(exc, requests.exceptions.SSLError):
        return CallFailed("connect", f"TLS failure while {doing}: {_first_line(exc)} (check the server name, "
                                     "ca_file or cert_validation)")
    if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)):
        return CallFailed("connect", f"cannot reach the endpoint while {doing}: {_first_line(exc)}")
    if type(exc).__name__ in ("InvalidPSRPOperation", "InvalidRunspacePoolStateError", "InvalidPipelineStateError"):
        return CallFailed("broken", f"the session broke while {doing}: {exc}")
    return CallFailed("protocol", f"{type(exc).__name__} while {doing}: {_first_line(exc)}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
