"""The live OS collector: the os.* sources of every Exchange server, read over WinRM (Microsoft.PowerShell).

One RunspacePool per server on the standard endpoint; servers are read concurrently (``concurrency`` at a time) and
each call has its own timeout. Only four read cmdlets can leave (psrp_client.ALLOWLISTS, enforced before anything is
sent). An absent registry key or value is a fact (null); a read that failed is an error with the reason; a server
that cannot be reached (closed port, 401/403, timeout) makes only its own os.* sources errors.
"""

from __future__ import annotations

import functools
import re
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

from hma_check.collect.clixml import ClixmlObject
from hma_check.collect.exchange.objects import ShapeError, certificate_record, decode_base64, shape
from hma_check.collect.kerberos import KerberosFailure, sign_in
from hma_check.collect.psrp_client import Answer, CallFailed, RemoteSession, given_up_reason, powershell_text, redact
from hma_check.collect.context import Progress, RunContext, section_password
from hma_check.collect import iis_config as iis
from hma_check.collect.os.config import OsSettings
from hma_check.contract.snapshot import Snapshot, SourceResult, iso_utc, utc_now
from hma_check.contract.sources import BY_NAME

CONFIGURATION = "Microsoft.PowerShell"   # its read-only allowlist is psrp_client.ALLOWLISTS[CONFIGURATION]
SOURCES = ("os.tls_registry", "os.exsetup_version", "os.operating_system", "os.auth_certificate",
           "os.next_auth_certificate", "os.iis_ssl_flags")

TLS_VERSIONS = ("TLS 1.0", "TLS 1.1", "TLS 1.2", "TLS 1.3")
SIDES = ("Server", "Client")
FRAMEWORKS = ("v2.0.50727", "v4.0.30319")
# https://learn.microsoft.com/windows-server/security/tls/tls-registry-settings and
# https://learn.microsoft.com/exchange/plan-and-deploy/post-installation-tasks/security-best-practices/exchange-tls-configuration
SCHANNEL = "HKLM:\\SYSTEM\\CurrentControlSet\\Control\\SecurityProviders\\SCHANNEL\\Protocols"
DOTNET = {"NETFramework": "HKLM:\\SOFTWARE\\Microsoft\\.NETFramework",
          "NETFrameworkWow6432Node": "HKLM:\\SOFTWARE\\Wow6432Node\\Microsoft\\.NETFramework"}
# The machine store's physical registry location; its Blob value holds the certificate's stored properties.
MY_STORE = "HKLM:\\SOFTWARE\\Microsoft\\SystemCertificates\\MY\\Certificates"
CERT_KEY_PROV_INFO_PROP_ID = 2   # [MS-GPEF] 2.2.2.2.1 / wincrypt.h: the private key this certificate is bound to


@dataclass(frozen=True)
class _Slot:
    """One registry key of os.tls_registry and where its values go in the contract's shape."""

    path: str
    place: tuple[str, ...]          # ('Protocols', 'TLS 1.2', 'Server') or ('NETFramework', 'v4.0.30319')
    names: tuple[str, ...]

    @property
    def registry_path(self) -> str:
        """HKEY_LOCAL_MACHINE\\... in lower case: how PSPath names the key, for matching the answer back."""
        return ("HKEY_LOCAL_MACHINE" + self.path[len("HKLM:"):]).lower()


SLOTS: tuple[_Slot, ...] = (
    *(_Slot(f"{SCHANNEL}\\{version}\\{side}", ("Protocols", version, side), ("Enabled", "DisabledByDefault"))
      for version in TLS_VERSIONS for side in SIDES),
    *(_Slot(f"{root}\\{framework}", (view, framework), ("SystemDefaultTlsVersions", "SchUseStrongCrypto"))
      for view, root in DOTNET.items() for framework in FRAMEWORKS),
)
TLS_QUERY = ("Get-ItemProperty", (("Path", [slot.path for slot in SLOTS]),))
EXSETUP_QUERY = ("Get-Command", (("Name", "ExSetup.exe"), ("CommandType", "Application")))
OS_QUERY = ("Get-CimInstance", (("ClassName", "Win32_OperatingSystem"),))
IIS_QUERY = ("Get-Content", (("LiteralPath", iis.APPLICATION_HOST), ("Raw", True)))
_THUMBPRINT = re.compile(r"[0-9A-Fa-f]{40}")
_FILE_VERSION_LINE = re.compile(r"^FileVersion:\s*(\S+)", re.MULTILINE)


def collect_os(settings: OsSettings, password: str | None, snapshot: Snapshot, *,
               progress: Progress | None = None, unresponsive: dict[str, str] | None = None) -> list[SourceResult]:
    """Every os.* source for every Exchange server in exchange.servers; never raises for a fault.

    A server the scan has given up (``unresponsive``: an Exchange call to it, or one of its own OS reads, got no answer
    in time) is not read again: its remaining os.* sources are errors that say so. A hung server costs one timeout.
    """
    unresponsive = unresponsive if unresponsive is not None else {}
    progress = progress or Progress()
    servers, servers_problem = _servers(snapshot)
    if servers_problem:
        # No server list, no scopes: one result per source, without a scope, says why (as the runner does).
        return [SourceResult.error_result(name, servers_problem, command=BY_NAME[name].filled_by) for name in SOURCES]
    thumbprints = {role: _auth_thumbprint(snapshot, role) for role in AUTH_ROLES}
    secrets = tuple(s for s in (password,) if s)
    try:
        login = sign_in(settings, password, section="os")
    except KerberosFailure as failure:
        # The same for every server (no ticket, a refused password, no KDC, a skewed clock): no server is tried.
        text = redact(failure.message, secrets)
        return [SourceResult.error_result(name, text, command=BY_NAME[name].filled_by) for name in SOURCES]
    results: list[SourceResult] = []
    readable: list[tuple[dict[str, Any], tuple[str, ...]]] = []
    for server in servers:
        # The contract says which servers have each source (an Edge server none, a 2010 server no IIS of HMA's).
        excluded = {name: BY_NAME[name].excluded(server) for name in SOURCES}
        results += [SourceResult.skipped_result(name, reason, scope=server["Name"])
                    for name, reason in excluded.items() if reason]
        wanted = tuple(name for name in SOURCES if not excluded[name])
        if wanted:
            readable.append((server, wanted))
    progress.start(sum(len(wanted) for _, wanted in readable))
    if not readable:
        return results

    # why no further server is asked: the account was refused twice, or cannot sign in anywhere (kind "credential")
    stop: list[str] = []

    def one(entry: tuple[dict[str, Any], tuple[str, ...]]) -> tuple[list[SourceResult], str | None]:
        server, wanted = entry
        reader = _ServerReader(settings.for_server(server["Name"], server.get("Fqdn")), password, server["Name"],
                               secrets, unresponsive, stop, login)
        found = reader.read(thumbprints, wanted)
        for result in found:
            progress.advance(result.command, result.ok)
        return found, "accepted" if reader.accepted else reader.refusal

    # Servers one at a time until one accepts the account. A wrong password then costs two failed sign-ins, not
    # one per server (an account lockout policy counts every one), and no other server is asked. Two, because one
    # server alone can refuse an account the others accept (it is not an administrator there). A server that does
    # not answer proves nothing either way; after three of them the rest are read in parallel.
    remaining, refused = list(readable), list[str]()
    for _ in range(3):
        if not remaining or len(refused) == 2:
            break
        entry = remaining.pop(0)
        found, outcome = one(entry)
        results += found
        if outcome == "accepted":
            break
        if outcome is not None:
            refused.append(entry[0]["Name"])
    if len(refused) == 2:
        stop.append(f"the account was refused by {refused[0]} and {refused[1]}, so no other server is asked "
                    "(an account lockout policy counts every attempt)")
    with ThreadPoolExecutor(max_workers=max(1, min(settings.concurrency, len(readable))),
                            thread_name_prefix="os-collector") as pool:
        for found, _ in pool.map(one, remaining):
            results += found
    return results


def _servers(snapshot: Snapshot) -> tuple[list[dict[str, Any]], str | None]:
    """The servers exchange.servers names, or why there are none to read."""
    result = snapshot.sources.get("exchange.servers")
    if result is None or not result.ok or not isinstance(result.data, list):
        why = result.error if result is not None and result.error else "not collected"
        return [], f"the OS facts are read per Exchange server, and exchange.servers was not collected ({why})"
    return [s for s in result.data if isinstance(s, dict) and isinstance(s.get("Name"), str) and s["Name"]], None


# The Auth configuration's certificates the OS collector looks up: which source, and which Get-AuthConfig property
# names its thumbprint. The next one is what the AuthAdmin servicelet switches to at NextCertificateEffectiveDate.
AUTH_ROLES = {"os.auth_certificate": "CurrentCertificateThumbprint",
              "os.next_auth_certificate": "NextCertificateThumbprint"}


def _auth_thumbprint(snapshot: Snapshot, source: str) -> tuple[str | None, str | None]:
    """The thumbprint an Auth certificate source looks up, or why there is none ('' : nothing to look up)."""
    prop = AUTH_ROLES[source]
    result = snapshot.sources.get("exchange.auth_config")
    if result is None or not result.ok or not isinstance(result.data, dict):
        why = result.error if result is not None and result.error else "not collected"
        return None, f"exchange.auth_config is needed for the Auth certificate's thumbprint and was not read ({why})"
    thumbprint = str(result.data.get(prop) or "").strip()
    if not thumbprint:
        if source == "os.next_auth_certificate":
            return "", None   # no next certificate is staged: a fact, recorded as null
        return None, "Get-AuthConfig names no CurrentCertificateThumbprint: there is no Auth certificate to look up"
    if not _THUMBPRINT.fullmatch(thumbprint):
        return None, f"{prop} {thumbprint[:60]!r} is not a SHA-1 thumbprint"
    return thumbprint.upper(), None


class _ServerReader:
    """Reads one server's sources through one session, opening a fresh one after a call that broke it."""

    def __init__(self, settings: OsSettings, password: str | None, name: str, secrets: tuple[str, ...],
                 unresponsive: dict[str, str], stop: list[str] | None = None, login: Any = None) -> None:
        self.settings = settings
        self.password = password
        self.name = name
        self.secrets = secrets
        self.login = login          # kerberos.Login made once for the section (auth kerberos, negotiate, ntlm)
        self.session: RemoteSession | None = None
        self.unresponsive = unresponsive
        given_up = unresponsive.get(name.casefold())
        self.unreachable: str | None = f"not read: {given_up}" if given_up else None
        self.stop = stop if stop is not None else []     # set: this server is not asked, and why
        self.refusal: str | None = None                   # the account was refused here
        self.accepted = False                             # a session opened: the account works

    def read(self, thumbprints: dict[str, tuple[str | None, str | None]], wanted: tuple[str, ...]) -> list[SourceResult]:
        readers: dict[str, Callable[[], SourceResult]] = {
            "os.tls_registry": lambda: self._source("os.tls_registry", [TLS_QUERY], self._tls_registry),
            "os.exsetup_version": lambda: self._source("os.exsetup_version", [EXSETUP_QUERY], self._exsetup_version),
            "os.operating_system": lambda: self._source("os.operating_system", [OS_QUERY], self._operating_system),
            **{source: functools.partial(self._auth_certificate, source, *thumbprints[source]) for source in AUTH_ROLES},
            "os.iis_ssl_flags": lambda: self._source("os.iis_ssl_flags", [IIS_QUERY], self._iis_ssl_flags),
        }
        try:
            return [readers[name]() for name in wanted]
        finally:
            if self.session is not None:
                self.session.close()

    # ------------------------------------------------------------------------------------------ plumbing

    def _call(self, cmdlet: str, params: tuple[tuple[str, Any], ...]) -> Answer:
        if self.unreachable is not None:
            raise CallFailed("connect", self.unreachable)
        if self.session is None:
            if self.stop:
                self.unreachable = f"not attempted: {self.stop[0]}"
                raise CallFailed("auth", self.unreachable)
            try:
                self.session = RemoteSession(self.settings, self.password, configuration=CONFIGURATION,
                                             login=self.login).open()
                self.accepted = True
            except CallFailed as failure:
                # Closed port, refused credentials, TLS trouble: every source of this server fails the same way.
                self.unreachable = failure.message
                if failure.kind == "auth":
                    self.refusal = failure.message
                if failure.kind == "credential":
                    self.stop.append(failure.message)   # the account cannot sign in anywhere: no other server is asked
                raise
        try:
            return self.session.invoke(cmdlet, params, self.settings.timeout)
        except CallFailed as failure:
            if failure.kind in ("timeout", "broken", "transport", "protocol"):
                self.session.close()   # a stopped or broken pipeline may keep the runspace: start afresh
                self.session = None
            if failure.kind == "timeout":
                # A server that hangs once is given up, as the probes give up a silent node: the next read would
                # only cost another timeout.
                reason = given_up_reason(self.name, powershell_text(cmdlet, params), self.settings.timeout)
                self.unresponsive.setdefault(self.name.casefold(), reason)
                self.unreachable = f"not read: {reason}"
            raise

    def _source(self, name: str, queries: list[tuple[str, tuple[tuple[str, Any], ...]]],
                build: Callable[[list[Answer]], Any], command: str | None = None) -> SourceResult:
        started = utc_now()
        t0 = time.perf_counter()
        text = command or "; ".join(powershell_text(cmdlet, params) for cmdlet, params in queries)
        try:
            answers = [self._call(cmdlet, params) for cmdlet, params in queries]
            data = build(answers)
        except Exception as problem:  # noqa: BLE001 - whatever goes wrong fails this source of this server only
            if isinstance(problem, CallFailed):
                reason = problem.message
            elif isinstance(problem, ShapeError):
                reason = f"unexpected answer: {problem}"
            else:
                reason = f"hma-check failed reading the answer: {type(problem).__name__}: {problem}"
            return SourceResult.error_result(name, redact(reason, self.secrets), command=text, scope=self.name,
                                             started=iso_utc(started), duration_ms=_ms(t0))
        return SourceResult.ok_result(name, data, command=text, scope=self.name, started=iso_utc(started),
                                      duration_ms=_ms(t0))

    # ------------------------------------------------------------------------------------------ the sources

    @staticmethod
    def _tls_registry(answers: list[Answer]) -> dict[str, Any]:
        """Every slot's values as read; null for an absent key or value. Any other error fails the whole source."""
        answer = answers[0]
        _refuse_errors(answer, allow_not_found=True)
        data: dict[str, Any] = {"Protocols": {v: {s: {"Enabled": None, "DisabledByDefault": None} for s in SIDES}
                                              for v in TLS_VERSIONS}}
        for view in DOTNET:
            data[view] = {f: {"SystemDefaultTlsVersions": None, "SchUseStrongCrypto": None} for f in FRAMEWORKS}
        by_path = {slot.registry_path: slot for slot in SLOTS}
        for obj in answer.objects:
            slot = by_path.get(_registry_path(obj))
            if slot is None:
                raise ShapeError(f"Get-ItemProperty answered for a key that was not asked for: {obj.get('PSPath')!r}")
            target = data
            for part in slot.place:
                target = target[part]
            for value_name in slot.names:
                value = obj.get(value_name)
                if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                          or not -2**31 <= value < 2**31):
                    # SCHANNEL and .NET read REG_DWORD only; another type is ignored by Windows and must be fixed.
                    raise ShapeError(f"{slot.path}\\{value_name} is not a REG_DWORD ({value!r}); Windows ignores it")
                target[value_name] = value
        return data

    @staticmethod
    def _exsetup_version(answers: list[Answer]) -> dict[str, Any]:
        answer = answers[0]
        if answer.errors or not answer.objects:
            detail = "; ".join(str(e) for e in answer.errors) or "no answer"
            raise CallFailed("cmdlet", f"ExSetup.exe was not found on the server's PATH, so the exact build (with its "
                                       f"security update) is unknown: {detail}")
        found = answer.objects[0]   # PowerShell's resolution order: the first ExSetup.exe on PATH runs
        return {"FileVersion": _file_version(found), "Path": found.get("Path") or found.get("Source")}

    @staticmethod
    def _iis_ssl_flags(answers: list[Answer]) -> dict[str, Any]:
        """Require SSL of the HMA paths, from applicationHost.config (Get-Content -Raw sends one string)."""
        answer = answers[0]
        _refuse_errors(answer, allow_not_found=False)
        if len(answer.objects) != 1 or not isinstance(answer.objects[0].value, str):
            raise ShapeError("Get-Content -Raw did not send applicationHost.config as one string")
        try:
            return iis.hma_ssl_flags(answer.objects[0].value)
        except iis.ApplicationHostError as exc:
            raise ShapeError(str(exc)) from None

    @staticmethod
    def _operating_system(answers: list[Answer]) -> dict[str, Any]:
        _refuse_errors(answers[0], allow_not_found=False)
        data = shape("os.operating_system", answers[0].objects)
        missing = [name for name in ("Caption", "Version", "BuildNumber") if not data.get(name)]
        if missing:
            raise ShapeError(f"Win32_OperatingSystem came back without {', '.join(missing)}")
        return data

    def _auth_certificate(self, source: str, thumbprint: str | None, problem: str | None) -> SourceResult:
        """One Auth configuration certificate in Cert:\\LocalMachine\\My: null when the store does not hold it (or,
        for the next certificate, when none is staged)."""
        if thumbprint is None:
            return SourceResult.error_result(source, problem or "no thumbprint",
                                             command="Get-ChildItem -Path Cert:\\LocalMachine\\My\\<thumbprint>",
                                             scope=self.name)
        if not thumbprint:
            return SourceResult.ok_result(source, None, scope=self.name,
                                          command="Get-AuthConfig names no NextCertificateThumbprint: nothing to look up")
        certificate = ("Get-ChildItem", (("Path", f"Cert:\\LocalMachine\\My\\{thumbprint}"),))
        blob = ("Get-ItemProperty", (("Path", f"{MY_STORE}\\{thumbprint}"), ("Name", "Blob")))
        queries: list[tuple[str, tuple[tuple[str, Any], ...]]] = [certificate]

        def build(answers: list[Answer]) -> dict[str, Any] | None:
            answer = answers[0]
            _refuse_errors(answer, allow_not_found=True)
            if not answer.objects:
                return None     # not in the machine store: a fact, which HMA-AUTH-011 and -013 report
            record = _certificate_record(answer.objects, thumbprint, with_not_before=source != "os.auth_certificate")
            record["HasPrivateKey"] = self._has_private_key(blob)
            return record

        command = "; ".join(powershell_text(cmdlet, params) for cmdlet, params in (certificate, blob))
        return self._source(source, queries, build, command=command)

    def _has_private_key(self, query: tuple[str, tuple[tuple[str, Any], ...]]) -> bool | None:
        """X509Certificate2.HasPrivateKey is the key provider property on the stored certificate (CAPI's own test).

        A remote session sends certificates as RawData only, so it is read from the store's registry Blob; null when
        the certificate is in the store through another physical location (a Group Policy store, for example).
        """
        answer = self._call(*query)
        _refuse_errors(answer, allow_not_found=True)
        if not answer.objects:
            return None
        blob = answer.objects[0].get("Blob")
        if not isinstance(blob, str):
            raise ShapeError("the certificate's registry Blob is not binary")
        return CERT_KEY_PROV_INFO_PROP_ID in blob_properties(decode_base64(blob))


def _refuse_errors(answer: Answer, *, allow_not_found: bool) -> None:
    """Absent keys are facts (null); every other error record means a read failed, so the source is an error."""
    problems = [error for error in answer.errors if not (allow_not_found and error.not_found)]
    if problems:
        raise CallFailed("cmdlet", "; ".join(str(error) for error in problems))


def _registry_path(obj: ClixmlObject) -> str:
    """HKEY_LOCAL_MACHINE\\... (lower case) from Get-ItemProperty's PSPath note property."""
    path = obj.get("PSPath")
    if not isinstance(path, str) or "::" not in path:
        raise ShapeError("Get-ItemProperty answered an object without its PSPath")
    return path.split("::", 1)[1].lower()


def _file_version(obj: ClixmlObject) -> str:
    """FileVersion ('15.02.1544.011'): FileVersionInfo arrives as its ToString at depth 0, or as an object."""
    info = obj.get("FileVersionInfo")
    if isinstance(info, dict) and isinstance(info.get("FileVersion"), str):
        return info["FileVersion"]
    if isinstance(info, str):
        match = _FILE_VERSION_LINE.search(info)
        if match:
            return match.group(1)
    version = obj.get("Version")   # ApplicationInfo.Version: the product version numbers, when nothing else came
    if isinstance(version, str) and re.fullmatch(r"\d+(\.\d+){3}", version):
        return version
    raise ShapeError("Get-Command's answer for ExSetup.exe carries neither FileVersionInfo nor Version")


def _certificate_record(objects: list[ClixmlObject], thumbprint: str, *, with_not_before: bool) -> dict[str, Any]:
    decoded = certificate_record(objects[0])
    if decoded["Thumbprint"] != thumbprint:
        raise ShapeError(f"the store returned another certificate than {thumbprint}")
    names = ("Thumbprint", "Subject", "NotBefore", "NotAfter") if with_not_before else ("Thumbprint", "Subject",
                                                                                        "NotAfter")
    return {name: decoded[name] for name in names}


def blob_properties(blob: bytes) -> dict[int, bytes]:
    """The stored properties of a certificate Blob: (PropertyID, Reserved, Length, Value) entries ([MS-GPEF] 2.2.2.2.1)."""
    out: dict[int, bytes] = {}
    offset = 0
    while offset < len(blob):
        if offset + 12 > len(blob):
            raise ShapeError("the certificate's registry Blob is truncated")
        prop, _reserved, length = struct.unpack_from("<III", blob, offset)
        offset += 12
        if offset + length > len(blob):
            raise ShapeError("the certificate's registry Blob is truncated")
        out[prop] = blob[offset:offset + length]
        offset += length
    return out


def _ms(t0: float) -> int:
    return int((time.perf_counter() - t0) * 1000)


def run_os(settings: OsSettings, context: RunContext) -> list[SourceResult]:
    """The registry's runner for the os: section. It reads exchange.servers and exchange.auth_config from the
    snapshot: the exchange collector runs first."""
    password = section_password("os", settings, context, "the Exchange servers (WinRM)")
    progress = context.progress("os")
    try:
        return collect_os(settings, password, context.snapshot, progress=progress, unresponsive=context.unresponsive)
    finally:
        progress.finish()
