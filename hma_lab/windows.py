"""The lab's Windows side: each Exchange server's WinRM endpoint with the standard Microsoft.PowerShell configuration.

Every server gets its own listener (one port each, as every server has its own WinRM on 5985/5986) that answers five
read cmdlets from the scenario: Get-ItemProperty, Get-Item and Get-ChildItem on the HKLM: registry and the Cert:
store, Get-Command for ExSetup.exe and Get-CimInstance for Win32_OperatingSystem; and, in Exchange's install folder,
Get-ChildItem and the Import-Csv | Where-Object | Group-Object summary of the server's HttpProxy logs
(lab/windows_logs.py). Objects are shaped as a remote
session sends them (Get-ItemProperty's PSCustomObject with its PS* note properties, X509Certificate2 as RawData only,
ApplicationInfo with FileVersionInfo as its string). The real endpoint is FullLanguage; the lab refuses scripts anyway,
so a test proves the collector never sends one.
"""

from __future__ import annotations

import fnmatch
import socket
import struct
from pathlib import Path
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterator

from hma_lab import binding, errors
from hma_lab.certs import CertificateStore, Issued
from hma_lab.psrp import Invocation
from hma_lab.psvalues import Serialized, Version, ex_object, noted_string
from hma_lab.scenario import Fault, Scenario, ServerSpec
from hma_lab.windows_logs import INSTALL_PATH, InstallFolder
from hma_lab.windows_spec import DEFAULT_SSL_FLAGS, FRAMEWORKS, SIDES, VIEWS

CONFIGURATION = "Microsoft.PowerShell"
MAX_SHELLS_PER_USER = 30            # WinRM's MaxShellsPerUser default
REGISTRY_PROVIDER = "Microsoft.PowerShell.Core\\Registry"
CERT_PROVIDER = "Microsoft.PowerShell.Security\\Certificate"
HKLM = "HKEY_LOCAL_MACHINE"
SCHANNEL = "SYSTEM\\CurrentControlSet\\Control\\SecurityProviders\\SCHANNEL\\Protocols"
DOTNET = {"NETFramework": "SOFTWARE\\Microsoft\\.NETFramework",
          "NETFrameworkWow6432Node": "SOFTWARE\\Wow6432Node\\Microsoft\\.NETFramework"}
MY_STORE = "SOFTWARE\\Microsoft\\SystemCertificates\\MY\\Certificates"
EXCHANGE_SETUP = "SOFTWARE\\Microsoft\\ExchangeServer\\v15\\Setup"
# [MS-GPEF] 2.2.2.2.1: a stored certificate is a list of (PropertyID, Reserved=1, Length, Value) entries.
CERT_KEY_PROV_INFO_PROP_ID = 2
CERT_CERT_PROP_ID = 32
_WILDCARD = set("*?[")
_CIM_CLASSES = ("Win32_OperatingSystem", "CIM_OperatingSystem", "CIM_LogicalElement", "CIM_ManagedSystemElement")
FILESYSTEM_PROVIDER = "Microsoft.PowerShell.Core\\FileSystem"
APPLICATION_HOST = "C:\\Windows\\System32\\inetsrv\\config\\applicationHost.config"


# ----------------------------------------------------------------------------------------------------- registry

@dataclass
class _Key:
    path: str                                        # HKEY_LOCAL_MACHINE\SYSTEM\...
    values: dict[str, Any] = field(default_factory=dict)
    children: dict[str, "_Key"] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.rsplit("\\", 1)[-1]

    def child(self, name: str) -> "_Key":
        found = self.children.get(name.lower())
        if found is None:
            found = self.children[name.lower()] = _Key(f"{self.path}\\{name}")
        return found

    def ensure(self, relative: str) -> "_Key":
        key = self
        for part in relative.split("\\"):
            key = key.child(part)
        return key


def build_registry(server: ServerSpec, certificates: list[tuple[Issued, bool]]) -> _Key:
    """HKLM as the scenario describes it: SCHANNEL and .NET keys, and the machine store's certificate blobs."""
    root = _Key(HKLM)
    protocols = root.ensure(SCHANNEL)
    for version, sides in (server.registry.get("Protocols") or {}).items():
        if sides is None:
            continue
        for side in SIDES:
            if sides.get(side) is not None:
                _set_values(protocols.ensure(f"{version}\\{side}"), sides[side])
    for view in VIEWS:
        base = root.ensure(DOTNET[view])
        for framework in FRAMEWORKS:
            values = (server.registry.get(view) or {}).get(framework)
            if values is not None:
                _set_values(base.ensure(framework), values)
    if server.serves_clients:
        # What Exchange setup writes (HealthChecker reads MsiInstallPath there): the install folder and the build.
        major, minor, build, revision = server.build
        root.ensure(EXCHANGE_SETUP).values.update({
            "MsiInstallPath": INSTALL_PATH, "MsiProductMajor": major, "MsiProductMinor": minor,
            "MsiBuildMajor": build, "MsiBuildMinor": revision, "Services": INSTALL_PATH + "bin"})
    store = root.ensure(MY_STORE)
    for issued, has_key in certificates:
        store.ensure(issued.thumbprint).values["Blob"] = certificate_blob(issued.der, has_key)
    return root


def _set_values(key: _Key, values: dict[str, Any]) -> None:
    key.values.update({name: value for name, value in values.items() if value is not None})


def certificate_blob(der: bytes, has_private_key: bool) -> bytes:
    """The registry Blob of a machine-store certificate: the DER, plus the key provider info when a key is bound."""
    entries = []
    if has_private_key:
        # CRYPT_KEY_PROV_INFO: offsets to the container and provider names, type, flags, params, key spec.
        container = "te-ExchangeAuth-lab\0".encode("utf-16-le")
        provider = "Microsoft Software Key Storage Provider\0".encode("utf-16-le")
        header = struct.pack("<7I", 28, 28 + len(container), 0, 0x20, 0, 0, 0)
        entries.append((CERT_KEY_PROV_INFO_PROP_ID, header + container + provider))
    entries.append((CERT_CERT_PROP_ID, der))
    return b"".join(struct.pack("<III", prop, 1, len(value)) + value for prop, value in entries)


# ----------------------------------------------------------------------------------------------------- paths

@dataclass(frozen=True)
class _Path:
    drive: str                  # "registry" or "cert"
    parts: tuple[str, ...]      # below HKLM, or below Cert:\ (LocalMachine, My, <thumbprint>)
    text: str                   # as the caller wrote it, for error messages


def _parse_path(text: str) -> _Path | None:
    cleaned = text.strip().replace("/", "\\")
    lowered = cleaned.lower()
    for prefix in ("hklm:", "registry::hkey_local_machine", f"{REGISTRY_PROVIDER.lower()}::hkey_local_machine"):
        if lowered.startswith(prefix):
            return _Path("registry", tuple(p for p in cleaned[len(prefix):].split("\\") if p), text)
    for prefix in ("cert:", f"{CERT_PROVIDER.lower()}::"):
        if lowered.startswith(prefix):
            return _Path("cert", tuple(p for p in cleaned[len(prefix):].split("\\") if p), text)
    return None


def _walk(root: _Key, parts: tuple[str, ...], literal: bool) -> list[_Key]:
    keys = [root]
    for part in parts:
        found: list[_Key] = []
        for key in keys:
            if not literal and _WILDCARD & set(part):
                found += [child for name, child in sorted(key.children.items()) if fnmatch.fnmatchcase(name, part.lower())]
            elif part.lower() in key.children:
                found.append(key.children[part.lower()])
        keys = found
    return keys


# ----------------------------------------------------------------------------------------------------- objects

def _provider_notes(provider: str, qualified: str, drive: str) -> dict[str, Any]:
    parent, _, child = qualified.rpartition("\\")
    return {"PSPath": f"{provider}::{qualified}", "PSParentPath": f"{provider}::{parent}", "PSChildName": child,
            "PSDrive": drive, "PSProvider": provider}


def _item_properties(key: _Key, names: list[str]) -> Serialized:
    values = {name: key.values[name] for name in names}
    notes = {**values, **_provider_notes(REGISTRY_PROVIDER, key.path, "HKLM")}
    text = "@{" + "; ".join(f"{name}={_display(value)}" for name, value in notes.items()) + "}"
    return ex_object(["System.Management.Automation.PSCustomObject", "System.Object"], text, {}, notes)


def _display(value: Any) -> str:
    return "System.Byte[]" if isinstance(value, bytes) else str(value)


def _registry_key(key: _Key) -> Serialized:
    props = {"Name": key.path, "SubKeyCount": len(key.children), "ValueCount": len(key.values), "View": "Default",
             "Handle": "Microsoft.Win32.SafeHandles.SafeRegistryHandle"}
    notes = {"Property": list(key.values), **_provider_notes(REGISTRY_PROVIDER, key.path, "HKLM"),
             "PSIsContainer": True}
    return ex_object(["Microsoft.Win32.RegistryKey", "System.MarshalByRefObject", "System.Object"], key.path,
                     props, notes)


def _certificate(issued: Issued) -> Serialized:
    # X509Certificate2's type data serialises RawData only (SerializationMethod SpecificProperties); the provider's
    # note properties ride along. A Windows client rebuilds the rest from RawData, pypsrp does not.
    notes = {**_provider_notes(CERT_PROVIDER, f"LocalMachine\\My\\{issued.thumbprint}", "Cert"),
             "PSIsContainer": False}
    return ex_object(["System.Security.Cryptography.X509Certificates.X509Certificate2",
                      "System.Security.Cryptography.X509Certificates.X509Certificate", "System.Object"],
                     issued.to_string(), {"RawData": issued.der}, notes)


def _file_version_text(path: str, version: str) -> str:
    """FileVersionInfo.ToString(), which is what its depth-0 serialisation sends (CSS-Exchange's ExSetup capture)."""
    rows = [("File:", path), ("InternalName:", "ExSetup.exe"), ("OriginalFilename:", "ExSetup.exe"),
            ("FileVersion:", version), ("FileDescription:", ""), ("Product:", "Microsoft® Exchange"),
            ("ProductVersion:", version), ("Debug:", "False"), ("Patched:", "False"), ("PreRelease:", "False"),
            ("PrivateBuild:", "False"), ("SpecialBuild:", "False"), ("Language:", "Language Neutral")]
    return "".join(f"{label:<18}{value}\r\n" for label, value in rows)


def _application(file_version: str) -> Serialized:
    numbers = tuple(int(part) for part in file_version.split("."))
    path = f"C:\\Program Files\\Microsoft\\Exchange Server\\V{numbers[0]}\\Bin\\ExSetup.exe"
    props = {"Path": path, "Extension": ".exe", "Definition": path, "Source": path,
             "Version": Version(".".join(str(n) for n in numbers)), "Visibility": "Public",
             "OutputType": ["System.String"], "Name": "ExSetup.exe", "CommandType": "Application", "ModuleName": "",
             "Module": None, "RemotingCapability": "PowerShell", "Parameters": None, "ParameterSets": []}
    # ApplicationInfo.FileVersionInfo is a type-data ScriptProperty: serialised in <MS>, at depth 0 as its ToString.
    notes = {"FileVersionInfo": _file_version_text(path, file_version)}
    return ex_object(["System.Management.Automation.ApplicationInfo", "System.Management.Automation.CommandInfo",
                      "System.Object"], "ExSetup.exe", props, notes)


def _operating_system(server: ServerSpec, booted: datetime) -> Serialized:
    facts = server.extra.get("operating_system") or {}
    caption = facts.get("Caption", "Microsoft Windows Server 2019 Standard")
    names = [f"Microsoft.Management.Infrastructure.CimInstance#root/cimv2/{c}" for c in _CIM_CLASSES]
    names += [f"Microsoft.Management.Infrastructure.CimInstance#{c}" for c in _CIM_CLASSES]
    names += ["Microsoft.Management.Infrastructure.CimInstance", "System.Object"]
    key = f"{caption}|C:\\Windows|\\Device\\Harddisk0\\Partition2"
    props = {"Caption": caption, "Version": facts.get("Version", "10.0.17763"),
             "BuildNumber": facts.get("BuildNumber", "17763"), "OSArchitecture": facts.get("OSArchitecture", "64-bit"),
             "BuildType": "Multiprocessor Free", "CSName": server.name, "Manufacturer": "Microsoft Corporation",
             "Name": key, "OSType": 18, "ProductType": 3, "SystemDirectory": "C:\\Windows\\system32",
             "LastBootUpTime": booted, "CimClass": "root/cimv2:Win32_OperatingSystem",
             "CimSystemProperties": "Microsoft.Management.Infrastructure.CimSystemProperties"}
    return ex_object(names, f'Win32_OperatingSystem (Name = "{key}")', props)


def application_host_config(server: ServerSpec) -> str:
    """The server's applicationHost.config as IIS writes it for Exchange: the two web sites, every virtual directory
    Exchange setup creates with its <location> (sslFlags, authentication), the schema's default access section."""
    flags = (server.extra.get("iis") or {}).get("ssl_flags") or DEFAULT_SSL_FLAGS
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', "<!--",
             "    IIS configuration sections.", "    For schema documentation, see",
             "    %windir%\\system32\\inetsrv\\config\\schema\\IIS_schema.xml.", "-->", "<configuration>",
             "    <configSections>", '        <sectionGroup name="system.webServer">',
             '            <sectionGroup name="security">',
             '                <section name="access" overrideModeDefault="Deny" />',
             '                <section name="applicationDependencies" overrideModeDefault="Deny" />',
             "            </sectionGroup>", "        </sectionGroup>", "    </configSections>",
             "    <system.applicationHost>", "        <sites>",
             '            <site name="Default Web Site" id="1" serverAutoStart="true">',
             '                <application path="/" applicationPool="DefaultAppPool">',
             '                    <virtualDirectory path="/" physicalPath="%SystemDrive%\\inetpub\\wwwroot" />',
             "                </application>"]
    front_end = "C:\\Program Files\\Microsoft\\Exchange Server\\V15\\FrontEnd\\HttpProxy"
    for path in flags:
        lines += [f'                <application path="/{path}" applicationPool="MSExchange{path}FrontEndAppPool">',
                  f'                    <virtualDirectory path="/" physicalPath="{front_end}\\{path.lower()}" />',
                  "                </application>"]
    lines += ["                <bindings>", '                    <binding protocol="http" bindingInformation="*:80:" />',
              '                    <binding protocol="https" bindingInformation="*:443:" />', "                </bindings>",
              "            </site>",
              '            <site name="Exchange Back End" id="2" serverAutoStart="true">',
              "                <bindings>",
              '                    <binding protocol="https" bindingInformation="*:444:" />',
              "                </bindings>", "            </site>", "        </sites>", "    </system.applicationHost>",
              "    <system.webServer>", "        <security>", '            <access sslFlags="None" />',
              "        </security>", "    </system.webServer>"]
    for path, value in flags.items():
        lines += [f'    <location path="Default Web Site/{path}" overrideMode="Allow">', "        <system.webServer>",
                  "            <security>", f'                <access sslFlags="{value}" />',
                  "                <authentication>", '                    <anonymousAuthentication enabled="true" />',
                  '                    <windowsAuthentication enabled="true" />', "                </authentication>",
                  "            </security>", "        </system.webServer>", "    </location>"]
    lines.append("</configuration>")
    return "\r\n".join(lines) + "\r\n"


# ----------------------------------------------------------------------------------------------------- errors

def _task(cmdlet: str) -> str:
    verb, _, noun = cmdlet.partition("-")
    return f"Microsoft.PowerShell.Commands.{verb}{noun}Command"


def path_not_found(cmdlet: str, path: str) -> errors.CmdletError:
    return errors.CmdletError(errors.error_record(
        f"Cannot find path '{path}' because it does not exist.",
        exception_type="System.Management.Automation.ItemNotFoundException", category=errors.ErrorCategory.ObjectNotFound,
        reason="ItemNotFoundException", fqid=f"PathNotFound,{_task(cmdlet)}", target=path), terminating=False)


def access_denied(cmdlet: str, path: str) -> errors.CmdletError:
    return errors.CmdletError(errors.error_record(
        "Requested registry access is not allowed.", exception_type="System.Security.SecurityException",
        category=errors.ErrorCategory.PermissionDenied, reason="SecurityException",
        fqid=f"System.Security.SecurityException,{_task(cmdlet)}", target=path), terminating=False)


def _property_missing(cmdlet: str, name: str, path: str) -> errors.CmdletError:
    return errors.CmdletError(errors.error_record(
        f"Property {name} does not exist at path {path}.",
        exception_type="System.Management.Automation.PSArgumentException", category=errors.ErrorCategory.InvalidArgument,
        reason="PSArgumentException", fqid=f"System.Management.Automation.PSArgumentException,{_task(cmdlet)}",
        target=name), terminating=False)


def _no_properties() -> errors.CmdletError:
    # The certificate provider has items but no item properties.
    return errors.CmdletError(errors.error_record(
        "Cannot use interface. The IPropertyCmdletProvider interface is not supported by this provider.",
        exception_type="System.Management.Automation.PSNotSupportedException",
        category=errors.ErrorCategory.NotImplemented, reason="PSNotSupportedException",
        fqid=f"NotSupported,{_task('Get-ItemProperty')}", target=None), terminating=False)


def _command_missing(name: str) -> errors.CmdletError:
    record = errors.command_not_found(name).record
    record.FullyQualifiedErrorId = f"CommandNotFoundException,{_task('Get-Command')}"
    return errors.CmdletError(record, terminating=False)


def _invalid_class(name: str) -> errors.CmdletError:
    return errors.CmdletError(errors.error_record(
        "Invalid class ", exception_type="Microsoft.Management.Infrastructure.CimException",
        category=errors.ErrorCategory.MetadataError, reason="CimException",
        fqid="HRESULT 0x80041010,Microsoft.Management.Infrastructure.CimCmdlets.GetCimInstanceCommand",
        target=name), terminating=False)


# ----------------------------------------------------------------------------------------------------- configuration

class WindowsConfiguration:
    """Microsoft.PowerShell on one server: its registry, ExSetup.exe, operating system and machine certificate store."""

    name = CONFIGURATION

    def __init__(self, scenario: Scenario, server: ServerSpec, certificates: CertificateStore,
                 install_root: Path | None = None) -> None:
        self.scenario = scenario
        self.server = server
        self.files = InstallFolder(install_root) if install_root is not None else None
        winrm = server.extra.get("winrm") or {}
        keyless = set(winrm.get("keyless_certificates") or [])
        self.certificates = [(certificates.get(cert_id, server), cert_id not in keyless)
                             for cert_id in server.certificates]
        self.registry = build_registry(server, self.certificates)
        self.denied = [pattern.lower().replace("hklm:", HKLM.lower(), 1) for pattern in winrm.get("denied") or []]
        default_version = "{:02d}.{:02d}.{:04d}.{:03d}".format(*server.build)
        self.exsetup = server.extra.get("exsetup_version", default_version)
        self.booted = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=12, hours=3)
        self.cmdlets = binding.table((
            binding.Cmdlet("Get-ItemProperty", self._get_item_property, ("Path", "LiteralPath", "Name"), "Path"),
            binding.Cmdlet("Get-Item", self._get_item, ("Path", "LiteralPath"), "Path"),
            binding.Cmdlet("Get-ChildItem", self._get_child_item, ("Path", "LiteralPath", "Recurse", "Filter", "File"),
                           "Path"),
            binding.Cmdlet("Get-Command", self._get_command, ("Name", "CommandType"), "Name"),
            binding.Cmdlet("Get-CimInstance", self._get_cim_instance, ("ClassName", "Namespace"), "ClassName"),
            binding.Cmdlet("Get-Content", self._get_content, ("Path", "LiteralPath", "Raw"), "Path"),
        ))
        self.application_host = application_host_config(server)

    def application_private_data(self) -> dict[str, Any]:
        return {}

    def invoke(self, invocation: Invocation) -> None:
        if len(invocation.commands) > 1 and self.files is not None:
            files, commands = self.files, invocation.commands
            binding.answer_call(invocation, *self._latency_and_fault("Import-Csv", {}),
                                lambda holding: files.summarise(commands))
            return
        cmdlet, params = binding.resolve(invocation.commands, self.cmdlets)
        binding.answer_call(invocation, *self._latency_and_fault(cmdlet.name, params),
                            lambda holding: cmdlet.handler(params))

    def _latency_and_fault(self, cmdlet: str,
                           params: dict[str, Any]) -> tuple[float, Fault | None, Callable[[Fault], errors.CmdletError]]:
        """The scenario's latency for the cmdlet, its matching fault, and how that fault answers."""
        latency = self.scenario.latency
        delay = latency["cmdlets"].get(cmdlet.lower(), latency["default"])

        def answer(fault: Fault) -> errors.CmdletError:
            if fault.effect == "not_found":
                paths = _paths(params)
                return path_not_found(cmdlet, str(paths[0][0] if paths else cmdlet))
            message = fault.value if fault.effect == "error" else "The WS-Management service cannot process the " \
                "request because the maximum number of operations for this user has been exceeded."
            return errors.CmdletError(errors.error_record(
                message, exception_type="System.Management.Automation.RuntimeException",
                category=errors.ErrorCategory.NotSpecified, reason="RuntimeException", fqid=f"LabFault,{_task(cmdlet)}"))

        return delay, self.scenario.cmdlet_fault(cmdlet, self.server), answer

    # ------------------------------------------------------------------------------------------ the cmdlets

    def _resolve(self, cmdlet: str, params: dict[str, Any]) -> Iterator[Any]:
        """Every item the -Path/-LiteralPath values name (keys or certificates), or their errors, in order."""
        for text, literal in _paths(params):
            path = _parse_path(text)
            if path is None:
                yield path_not_found(cmdlet, text)
                continue
            if path.drive == "registry":
                keys = _walk(self.registry, path.parts, literal)
                if not keys and (literal or not _WILDCARD & set(text)):
                    yield path_not_found(cmdlet, text)
                for key in keys:
                    yield access_denied(cmdlet, text) if self._is_denied(key) else key
            else:
                yield from self._certificate_items(cmdlet, path)

    def _is_denied(self, key: _Key) -> bool:
        return any(fnmatch.fnmatchcase(key.path.lower(), pattern) for pattern in self.denied)

    def _certificate_items(self, cmdlet: str, path: _Path) -> Iterator[Any]:
        parts = [p.lower() for p in path.parts]
        if parts[:2] != ["localmachine", "my"] or len(parts) > 3:
            yield path_not_found(cmdlet, path.text)
            return
        wanted = parts[2].upper() if len(parts) == 3 else None
        found = [issued for issued, _ in self.certificates if wanted is None or issued.thumbprint == wanted]
        if wanted is not None and not found:
            yield path_not_found(cmdlet, path.text)
        yield from found

    def _get_item_property(self, params: dict[str, Any]) -> Iterator[Any]:
        wanted = _strings(params.get("Name"))
        for item in self._resolve("Get-ItemProperty", params):
            if not isinstance(item, _Key):
                yield item if isinstance(item, errors.CmdletError) else _no_properties()
                continue
            names = list(item.values) if wanted is None else []
            for name in wanted or []:
                match = next((n for n in item.values if n.lower() == name.lower()), None)
                if match is None:
                    yield _property_missing("Get-ItemProperty", name, item.path)
                else:
                    names.append(match)
            if names:   # a key without values gives no object at all, as in PowerShell
                yield _item_properties(item, names)

    def _get_item(self, params: dict[str, Any]) -> Iterator[Any]:
        for item in self._resolve("Get-Item", params):
            yield self._shape(item)

    def _get_child_item(self, params: dict[str, Any]) -> Iterator[Any]:
        paths = _paths(params)
        if self.files is not None and paths and paths[0][0].lower().startswith("c:"):
            for text, _ in paths:
                yield from self.files.child_items(text, recurse=bool(params.get("Recurse")),
                                                  pattern=params.get("Filter"), files_only=bool(params.get("File")),
                                                  cmdlet="Get-ChildItem")
            return
        for item in self._resolve("Get-ChildItem", params):
            if isinstance(item, _Key):
                yield from (_registry_key(child) for _, child in sorted(item.children.items()))
            else:
                yield self._shape(item)

    @staticmethod
    def _shape(item: Any) -> Any:
        if isinstance(item, _Key):
            return _registry_key(item)
        if isinstance(item, Issued):
            return _certificate(item)
        return item

    def _get_command(self, params: dict[str, Any]) -> Iterator[Any]:
        types = [t.lower() for t in _strings(params.get("CommandType")) or ["application"]]
        for name in _strings(params.get("Name")) or []:
            if name.lower() in ("exsetup.exe", "exsetup") and self.exsetup and ("application" in types or "all" in types):
                yield _application(self.exsetup)
            else:
                yield _command_missing(name)

    def _get_content(self, params: dict[str, Any]) -> Iterator[Any]:
        """The one file the lab's Windows has: IIS's applicationHost.config (with -Raw, one string)."""
        for text, _literal in _paths(params):
            if text.strip().lower() != APPLICATION_HOST.lower():
                yield path_not_found("Get-Content", text)
                continue
            notes = _provider_notes(FILESYSTEM_PROVIDER, APPLICATION_HOST, "C")
            if params.get("Raw"):
                yield noted_string(self.application_host, notes)
            else:
                for number, line in enumerate(self.application_host.split("\r\n")[:-1], 1):
                    yield noted_string(line, {**notes, "ReadCount": number})

    def _get_cim_instance(self, params: dict[str, Any]) -> Iterator[Any]:
        namespace = str(params.get("Namespace") or "root/cimv2").replace("\\", "/").lower()
        class_name = str(params.get("ClassName") or "")
        if class_name.lower() != "win32_operatingsystem" or namespace != "root/cimv2":
            yield _invalid_class(class_name)
            return
        yield _operating_system(self.server, self.booted)


def _strings(value: Any) -> list[str] | None:
    if value is None:
        return None
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def _paths(params: dict[str, Any]) -> list[tuple[str, bool]]:
    if params.get("LiteralPath") is not None:
        return [(p, True) for p in _strings(params["LiteralPath"]) or []]
    return [(p, False) for p in _strings(params.get("Path")) or []]


# ----------------------------------------------------------------------------------------------------- the service

@dataclass
class WindowsService:
    """Every server's WinRM listeners; plugs into Lab as a service (endpoints, scan configuration, secrets)."""

    endpoints: dict[str, Any]
    scan_config: dict[str, Any]
    secrets: dict[str, str]
    servers: dict[str, Any]                        # server name -> its wsman.Endpoint
    http_ports: dict[str, int]
    https_ports: dict[str, int]
    _group: Any = None

    @property
    def command_log(self) -> list[dict[str, Any]]:
        """Every command any server's WinRM endpoint received, oldest first, with the server it went to."""
        return self._merged("command_log")

    @property
    def request_log(self) -> list[dict[str, Any]]:
        return self._merged("request_log")

    def _merged(self, log: str) -> list[dict[str, Any]]:
        out = []
        for name, endpoint in self.servers.items():
            with endpoint.lock:
                out += [{**entry, "server": name} for entry in getattr(endpoint, log)]
        return sorted(out, key=lambda entry: entry["time"])

    def stop(self) -> None:
        for endpoint in self.servers.values():
            endpoint.close_all()
        if self._group is not None:
            self._group.stop()
            self._group = None


def start_service(lab: Any) -> WindowsService:
    """One WinRM endpoint per Exchange server (Edge Transport servers are outside the domain and are not read), with
    the lab's own account and the certificate of its other WSMan listeners."""
    from hma_lab.wsman import Credentials, Endpoint, Listener, ListenerGroup

    scenario: Scenario = lab.scenario
    group = ListenerGroup()
    endpoints: dict[str, Any] = {}
    http_ports: dict[str, int] = {}
    https_ports: dict[str, int] = {}
    try:
        for server in scenario.servers:
            if server.is_edge:
                continue
            winrm = server.extra.get("winrm") or {}
            if not winrm.get("listening", True):
                http_ports[server.name], https_ports[server.name] = _closed_port(), _closed_port()
                continue
            status = winrm.get("http_status")
            # 401 is what WinRM answers an account it does not accept: the lab simply does not know the user there.
            known = {} if status == 401 else lab.accounts()
            install_root = lab.httpproxy_root / server.name
            endpoint = Endpoint(Credentials(known),
                                {CONFIGURATION: WindowsConfiguration(scenario, server, lab.certificates,
                                                                     install_root)},
                                max_shells_per_user=MAX_SHELLS_PER_USER, paths=("/wsman",), realm=server.fqdn)
            if status and status != 401:
                endpoint.http_fault = lambda action, status=status: status if action == "*" else None
            endpoints[server.name] = endpoint
            # WinRM's HTTP listener refuses unencrypted bodies (AllowUnencrypted=false); HTTPS binds the channel.
            http_ports[server.name] = group.add(endpoint, Listener(encryption_required=True))
            https_ports[server.name] = group.add(endpoint, Listener(tls=lab.tls, cert_der=lab.tls_cert_der))
        group.start()
    except BaseException:
        group.stop()
        raise
    hosts = {name: f"127.0.0.1:{port}" for name, port in http_ports.items()}
    # The same account as the Exchange endpoint: one exported variable serves both sections of the lab's config.
    scan_config = {"os": {"ssl": False, "auth": "ntlm", "username": lab.credentials.username,
                          "password_env": "HMA_CHECK_EXCHANGE_PASSWORD", "ca_file": str(lab.ca_file), "hosts": hosts}}
    ports = sorted(http_ports.values())
    described = {"winrm": f"{len(http_ports)} servers (Microsoft.PowerShell), HTTP ports {ports[0]}-{ports[-1]}"
                          if ports else "no servers"}
    return WindowsService(endpoints=described, scan_config=scan_config,
                          secrets={"os.password": lab.credentials.password}, servers=endpoints,
                          http_ports=http_ports, https_ports=https_ports, _group=group)


def _closed_port() -> int:
    """A loopback port nothing listens on: what a firewalled or stopped WinRM looks like (connection refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
