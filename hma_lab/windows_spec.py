"""Validate a scenario's per-server Windows facts: registry, ExSetup.exe version, operating system, WinRM behaviour.

The registry is written in the shape of the os.tls_registry contract. A value of null is a registry value that is
not there; a whole version or side (or view, or framework) set to null, or left out, is a key that is not there.
DWORDs are stored as Windows hands them to PowerShell: a signed 32-bit integer (0xffffffff reads as -1).
"""

from __future__ import annotations

import re
from typing import Any, Callable

Fail = Callable[[tuple[Any, ...], str], Exception]

PROTOCOL_VERSIONS = ("SSL 2.0", "SSL 3.0", "TLS 1.0", "TLS 1.1", "TLS 1.2", "TLS 1.3")
SIDES = ("Server", "Client")
SCHANNEL_VALUES = ("Enabled", "DisabledByDefault")
VIEWS = ("NETFramework", "NETFrameworkWow6432Node")
FRAMEWORKS = ("v2.0.50727", "v4.0.30319")
DOTNET_VALUES = ("SystemDefaultTlsVersions", "SchUseStrongCrypto")
_OS_KEYS = ("Caption", "Version", "BuildNumber", "OSArchitecture")
_WINRM_KEYS = ("listening", "http_status", "keyless_certificates", "denied")


def dword(value: int) -> int:
    """A DWORD as PowerShell reads it from the registry: System.Int32, so 0xffffffff is -1."""
    return value - 2**32 if value >= 2**31 else value


def check_registry(value: Any, where: tuple[Any, ...], fail: Fail) -> dict[str, Any]:
    """A normalised copy of one ``registry:`` mapping (partial ones too: server entries override the defaults)."""
    tree = _mapping(value, where, fail, ("Protocols", *VIEWS))
    out: dict[str, Any] = {}
    if "Protocols" in tree:
        out["Protocols"] = _level(tree["Protocols"], (*where, "Protocols"), fail, PROTOCOL_VERSIONS,
                                  lambda v, w: _level(v, w, fail, SIDES,
                                                      lambda leaf, lw: _values(leaf, lw, fail, SCHANNEL_VALUES)))
    for view in VIEWS:
        if view in tree:
            out[view] = _level(tree[view], (*where, view), fail, FRAMEWORKS,
                               lambda v, w: _values(v, w, fail, DOTNET_VALUES))
    return out


def check_server_fact(key: str, value: Any, where: tuple[Any, ...], fail: Fail, certificate_ids: list[str]) -> Any:
    """exsetup_version ('15.02.1544.011', or null: ExSetup.exe is not there), operating_system, winrm."""
    if key == "exsetup_version":
        if value is not None and not (isinstance(value, str) and re.fullmatch(r"\d{1,2}\.\d{1,2}\.\d{1,5}\.\d{1,5}",
                                                                              value.strip())):
            raise fail(where, "must be a file version such as 15.02.1544.011, or null when ExSetup.exe is missing")
        return value.strip() if isinstance(value, str) else None
    if key == "operating_system":
        facts = _mapping(value, where, fail, _OS_KEYS)
        for name, text in facts.items():
            if not isinstance(text, str) or not text.strip():
                raise fail((*where, name), "must be a non-empty string (quote numbers such as \"20348\")")
        return dict(facts)
    if key == "winrm":
        return _winrm(value, where, fail, certificate_ids)
    raise fail(where, f"unknown Windows fact {key!r}")  # pragma: no cover - the scenario parser lists the keys


def _winrm(value: Any, where: tuple[Any, ...], fail: Fail, certificate_ids: list[str]) -> dict[str, Any]:
    spec = _mapping(value, where, fail, _WINRM_KEYS)
    out: dict[str, Any] = {"listening": True, "http_status": None, "keyless_certificates": [], "denied": []}
    if "listening" in spec:
        if not isinstance(spec["listening"], bool):
            raise fail((*where, "listening"), "must be true or false (false: nothing listens on the WinRM port)")
        out["listening"] = spec["listening"]
    if spec.get("http_status") is not None:
        status = spec["http_status"]
        if not isinstance(status, int) or isinstance(status, bool) or not 400 <= status <= 599:
            raise fail((*where, "http_status"), "must be an HTTP status from 400 to 599")
        out["http_status"] = status
    for index, cert_id in enumerate(_list(spec.get("keyless_certificates"), (*where, "keyless_certificates"), fail)):
        if cert_id not in certificate_ids:
            raise fail((*where, "keyless_certificates", index), "must be one of this server's certificates: "
                                                                 + ", ".join(certificate_ids))
        out["keyless_certificates"].append(cert_id)
    for index, pattern in enumerate(_list(spec.get("denied"), (*where, "denied"), fail)):
        if not isinstance(pattern, str) or not pattern.upper().startswith("HKLM:\\"):
            raise fail((*where, "denied", index), "must be a registry path (wildcards allowed) starting with HKLM:\\")
        out["denied"].append(pattern)
    return out


def _mapping(value: Any, where: tuple[Any, ...], fail: Fail, allowed: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise fail(where, "must be a mapping")
    for name in value:
        if name not in allowed:
            raise fail((*where, name), f"unknown key; expected one of: {', '.join(allowed)}")
    return value


def _list(value: Any, where: tuple[Any, ...], fail: Fail) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise fail(where, "must be a list")
    return value


def _level(value: Any, where: tuple[Any, ...], fail: Fail, allowed: tuple[str, ...],
           child: Callable[[Any, tuple[Any, ...]], Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, item in _mapping(value, where, fail, allowed).items():
        out[name] = None if item is None else child(item, (*where, name))
    return out


def _values(value: Any, where: tuple[Any, ...], fail: Fail, allowed: tuple[str, ...]) -> dict[str, int | None]:
    out: dict[str, int | None] = {}
    for name, item in _mapping(value, where, fail, allowed).items():
        if item is not None and (not isinstance(item, int) or isinstance(item, bool) or not -2**31 <= item < 2**32):
            raise fail((*where, name), "must be a DWORD (0, 1, 0xffffffff...) or null when the value is absent")
        out[name] = None if item is None else dword(item)
    return out
