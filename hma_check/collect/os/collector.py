"""The live OS collector: the os.* sources of every Exchange server, read over WinRM (Microsoft.PowerShell).

One RunspacePool per server on the standard endpoint; servers are read concurrently (``concurrency`` at a time) and
each call has its own timeout. Only four read cmdlets can leave (psrp_client.ALLOWLISTS, enforced before anything is
sent). An absent registry key or value is a fact (null); a read that failed is an error with the reason; a server
that cannot be reached (closed port, 401/403, timeout) makes only its own os.* sources errors.
"""

from __future__ import annotations

import re
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

from hma_check.collect.clixml import ClixmlObject
from hma_check.collect.exchange.objects import EDGE_OS_SKIPPED, ShapeError, certificate_record, decode_base64, shape
from hma_check.collect.psrp_client import Answer, CallFailed, RemoteSession, powershell_text, redact
from hma_check.collect.runner import Progress
from hma_check.collect.os.config import OsSettings
from hma_check.contract.snapshot import Snapshot, SourceResult, iso_utc, utc_now
from hma_check.contract.sources import BY_NAME

CONFIGURATION = "Microsoft.PowerShell"   # its read-only allowlist is psrp_client.ALLOWLISTS[CONFIGURATION]
SOURCES = ("os.tls_registry", "os.exsetup_version", "os.operating_system", "os.auth_certificate")

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
_THUMBPRINT = re.compile(r"[0-9A-Fa-f]{40}")
_FILE_VERSION_LINE = re.compile(r"^FileVersion:\s*(\S+)", re.MULTILINE)


def collect_os(settings: OsSettings, password: str | None, snapshot: Snapshot, *,
               progress: Progress | None = None) -> list[SourceResult]:
    """Every os.* source for every Exchange server in exchange.servers; never raises for a fault."""
    progress = progress or Progress()
    servers, servers_problem = _servers(snapshot)
    if servers_problem:
        # No server list, no scopes: one result per source, without a scope, says why (as the runner does).
        return [SourceResult.error_result(name, servers_problem, command=BY_NAME[name].filled_by) for name in SOURCES]
    thumbprint, thumbprint_problem = _auth_thumbprint(snapshot)
    secrets = tuple(s for s in (password,) if s)
    results: list[SourceResult] = []
    readable = []
    for server in servers:
        if server.get("IsEdgeServer") is True:
            results += [SourceResult.skipped_result(name, EDGE_OS_SKIPPED, scope=server["Name"]) for name in SOURCES]
        else:
            readable.append(server)
    progress.start(len(readable) * len(SOURCES))
    if not readable:
        return results

    def one(server: dict[str, Any]) -> list[SourceResult]:
        reader = _ServerReader(settings.for_server(server["Name"], server.get("Fqdn")), password, server["Name"],
                               secrets)
        found = reader.read(thumbprint, thumbprint_problem)
        for result in found:
            progress.advance(result.command, result.ok)
        return found

    with ThreadPoolExecutor(max_workers=max(1, min(settings.concurrency, len(readable))),
                            thread_name_prefix="os-collector") as pool:
        for found in pool.map(one, readable):
            results += found
    return results


def _servers(snapshot: Snapshot) -> tuple[list[dict[str, Any]], str | None]:
    """The servers exchange.servers names, or why there are none to read."""
    result = snapshot.sources.get("exchange.servers")
    if result is None or not result.ok or not isinstance(result.data, list):
        why = result.error if result is not None and result.error else "not collected"
        return [], f"the OS facts are read per Exchange server, and exchange.servers was not collected ({why})"
    return [s for s in result.data if isinstance(s, dict) and isinstance(s.get("Name"), str) and s["Name"]], None


def _auth_thumbprint(snapshot: Snapshot) -> tuple[str | None, str | None]:
    """The current Auth certificate's thumbprint, or why there is none to look up."""
    result = snapshot.sources.get("exchange.auth_config")
    if result is None or not result.ok or not isinstance(result.data, dict):
        why = result.error if result is not None and result.error else "not collected"
        return None, f"exchange.auth_config is needed for the Auth certificate's thumbprint and was not read ({why})"
    thumbprint = str(result.data.get("CurrentCertificateThumbprint") or "").strip()
    if not thumbprint:
        return None, "Get-AuthConfig names no CurrentCertificateThumbprint: there is no Auth certificate to look up"
    if not _THUMBPRINT.fullmatch(thumbprint):
        return None, f"CurrentCertificateThumbprint {thumbprint[:60]!r} is not a SHA-1 thumbprint"
    return thumbprint.upper(), None


class _ServerReader:
    """Reads one server's four sources through one session, opening a fresh one after a call that broke it."""

    def __init__(self, settings: OsSettings, password: str | None, name: str, secrets: tuple[str, ...]) -> None:
        self.settings = settings
        self.password = password
        self.name = name
        self.secrets = secrets
        self.session: RemoteSession | None = None
        self.unreachable: str | None = None

    def read(self, thumbprint: str | None, thumbprint_problem: str | None) -> list[SourceResult]:
        try:
            return [
                self._source("os.tls_registry", [TLS_QUERY], self._tls_registry),
                self._source("os.exsetup_version", [EXSETUP_QUERY], self._exsetup_version),
                self._source("os.operating_system", [OS_QUERY], self._operating_system),
                self._auth_certificate(thumbprint, thumbprint_problem),
            ]
        finally:
            if self.session is not None:
                self.session.close()

    # ------------------------------------------------------------------------------------------ plumbing

    def _call(self, cmdlet: str, params: tuple[tuple[str, Any], ...]) -> Answer:
        if self.unreachable is not None:
            raise CallFailed("connect", self.unreachable)
        if self.session is None:
            try:
                self.session = RemoteSession(self.settings, self.password, configuration=CONFIGURATION).open()
            except CallFailed as failure:
                # Closed port, refused credentials, TLS trouble: every source of this server fails the same way.
                self.unreachable = failure.message
                raise
        try:
            return self.session.invoke(cmdlet, params, self.settings.timeout)
        except CallFailed as failure:
            if failure.kind in ("timeout", "broken", "transport", "protocol"):
                self.session.close()   # a stopped or broken pipeline may keep the runspace: start afresh
                self.session = None
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
    def _operating_system(answers: list[Answer]) -> dict[str, Any]:
        _refuse_errors(answers[0], allow_not_found=False)
        data = shape("os.operating_system", answers[0].objects)
        missing = [name for name in ("Caption", "Version", "BuildNumber") if not data.get(name)]
        if missing:
            raise ShapeError(f"Win32_OperatingSystem came back without {', '.join(missing)}")
        return data

    def _auth_certificate(self, thumbprint: str | None, problem: str | None) -> SourceResult:
        if thumbprint is None:
            return SourceResult.error_result("os.auth_certificate", problem or "no thumbprint",
                                             command="Get-ChildItem -Path Cert:\\LocalMachine\\My\\<thumbprint>",
                                             scope=self.name)
        certificate = ("Get-ChildItem", (("Path", f"Cert:\\LocalMachine\\My\\{thumbprint}"),))
        blob = ("Get-ItemProperty", (("Path", f"{MY_STORE}\\{thumbprint}"), ("Name", "Blob")))
        queries = [certificate]

        def build(answers: list[Answer]) -> dict[str, Any] | None:
            answer = answers[0]
            _refuse_errors(answer, allow_not_found=True)
            if not answer.objects:
                return None     # not in the machine store: a fact, which HMA-AUTH-013 reports
            record = _certificate_record(answer.objects, thumbprint)
            record["HasPrivateKey"] = self._has_private_key(blob)
            return record

        command = "; ".join(powershell_text(cmdlet, params) for cmdlet, params in (certificate, blob))
        return self._source("os.auth_certificate", queries, build, command=command)

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


def _certificate_record(objects: list[ClixmlObject], thumbprint: str) -> dict[str, Any]:
    decoded = certificate_record(objects[0])
    if decoded["Thumbprint"] != thumbprint:
        raise ShapeError(f"the store returned another certificate than {thumbprint}")
    return {"Thumbprint": decoded["Thumbprint"], "Subject": decoded["Subject"], "NotAfter": decoded["NotAfter"]}


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

