"""Server TLS from the SCHANNEL and .NET registry values, with CSS-Exchange HealthChecker's semantics.

Source: CSS-Exchange Shared/TLS/Get-AllTlsSettingsFromRegistry.ps1 and
Diagnostics/HealthChecker/Analyzer/Security/Invoke-AnalyzerSecuritySettings.ps1; Microsoft's guidance:
https://learn.microsoft.com/exchange/exchange-tls-guidance (Exchange Server TLS configuration best practices).

Per version: an absent Enabled value counts as enabled for TLS 1.0-1.2 and as disabled for TLS 1.3; an absent
DisabledByDefault counts as false. A version is Disabled when both sides are off, Half Disabled when one side's two
values contradict each other, Misconfigured when client and server differ (the last matching label wins, as in
HealthChecker).

0xffffffff: HealthChecker's documentation accepts only 0 and 1, but its own Enabled() test and Windows itself treat
every non-zero DWORD as "on". hma-check follows Windows for the state (so 0xffffffff, read as -1, means enabled) and
reports every value other than 0 and 1 separately, as a value to correct (CSS-Exchange issues #852 and #1093).
"""

from __future__ import annotations

from typing import Any

VERSIONS = ("TLS 1.0", "TLS 1.1", "TLS 1.2", "TLS 1.3")


def _enabled(value: Any, null_is_enabled: bool) -> bool:
    return (value is None and null_is_enabled) or (value is not None and value != 0)


def _disabled_by_default(value: Any) -> bool:
    return value is not None and value != 0


def _side(protocols: dict[str, Any], version: str, side: str) -> dict[str, Any]:
    entry = protocols.get(version)
    if entry is None:
        return {"Enabled": None, "DisabledByDefault": None}
    values = entry.get(side)
    if values is None:
        return {"Enabled": None, "DisabledByDefault": None}
    return values


def tls_state(registry: dict[str, Any], version: str) -> str:
    """'Enabled', 'Disabled', 'Half Disabled' or 'Misconfigured' for one TLS version of os.tls_registry data."""
    if version not in VERSIONS:
        raise ValueError(f"unknown TLS version {version!r}; use one of {', '.join(VERSIONS)}")
    protocols = registry["Protocols"]
    null_is_enabled = version != "TLS 1.3"
    server = _side(protocols, version, "Server")
    client = _side(protocols, version, "Client")
    server_enabled = _enabled(server.get("Enabled"), null_is_enabled)
    client_enabled = _enabled(client.get("Enabled"), null_is_enabled)
    server_dbd = _disabled_by_default(server.get("DisabledByDefault"))
    client_dbd = _disabled_by_default(client.get("DisabledByDefault"))
    server_dbd_null = server.get("DisabledByDefault") is None
    client_dbd_null = client.get("DisabledByDefault") is None

    state = "Enabled"
    if (not server_enabled and (server_dbd or server_dbd_null)
            and not client_enabled and (client_dbd or client_dbd_null)):
        state = "Disabled"
    if (not server_enabled and not server_dbd and not server_dbd_null) or (server_enabled and server_dbd):
        state = "Half Disabled"
    if server_enabled != client_enabled or server_dbd != client_dbd:
        state = "Misconfigured"
    return state


def dotnet_strong_crypto(registry: dict[str, Any], version: str = "v4.0.30319") -> bool:
    """SystemDefaultTlsVersions and SchUseStrongCrypto are 1 in both registry views (64-bit and Wow6432Node)."""
    for view in ("NETFramework", "NETFrameworkWow6432Node"):
        values = (registry.get(view) or {}).get(version) or {}
        if values.get("SystemDefaultTlsVersions") != 1 or values.get("SchUseStrongCrypto") != 1:
            return False
    return True


def odd_values(registry: dict[str, Any]) -> list[str]:
    """Every SCHANNEL value that is neither 0, 1 nor absent, as 'TLS 1.0\\Client\\Enabled = 0xffffffff'."""
    odd = []
    for version in VERSIONS:
        for side in ("Server", "Client"):
            for name, value in _side(registry["Protocols"], version, side).items():
                if value is not None and value not in (0, 1):
                    odd.append(f"{version}\\{side}\\{name} = 0x{value & 0xFFFFFFFF:08x}")
    return odd


def tls13_supported(build: str, os_build_number: Any) -> bool:
    """TLS 1.3 is supported from Exchange 2019 CU15 (and Exchange SE) on Windows Server 2022 or later.

    HealthChecker: "TLS 1.3 started support with Exchange 2019 CU15 with Windows Server 2022 or newer";
    Windows Server 2022 is OS build 20348.
    """
    from hma_check.evaluate.filters.exchange_builds import parse_build

    return parse_build(build) >= (15, 2, 1748, 0) and int(os_build_number) >= 20348
