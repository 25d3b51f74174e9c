"""Exchange Server authentication policies: which protocols a policy blocks modern authentication for.

Set-AuthenticationPolicy documents the BlockModernAuth* switches as 'Exchange 2019 CU13 or later'
(https://learn.microsoft.com/powershell/module/exchange/set-authenticationpolicy); an older server's policy objects do
not carry them, so a policy read there cannot block modern authentication.
"""

from __future__ import annotations

from typing import Any

# The protocols HMA clients use, by the suffix of the policy's switch (Outlook: MAPI, EWS, Autodiscover, OAB; mobile
# clients: ActiveSync).
HMA_PROTOCOLS = {"Mapi": "MAPI", "WebServices": "EWS", "Autodiscover": "Autodiscover",
                 "OfflineAddressBook": "OAB", "ActiveSync": "ActiveSync"}


def modern_auth_blocked(policy: Any) -> list[str]:
    """The HMA protocols a policy blocks modern authentication for (a switch that is True), in a fixed order."""
    if not isinstance(policy, dict):
        raise TypeError(f"not an authentication policy: {policy!r}")
    return [name for suffix, name in HMA_PROTOCOLS.items() if policy.get(f"BlockModernAuth{suffix}") is True]


def ad_name(value: Any) -> str:
    """The name an Active Directory reference ends in, lower-case, however the session rendered it: 'Block Modern',
    'contoso.local/Configuration/.../Block Modern' (canonical name) or 'CN=Block Modern,CN=Auth Policies,...' (DN)."""
    text = "" if value is None else str(value).strip()
    if text.upper().startswith("CN="):
        first, rest = [], text[3:]
        escaped = False
        for ch in rest:
            if ch == "," and not escaped:
                break
            escaped = ch == "\\" and not escaped
            if not escaped:
                first.append(ch)
        return "".join(first).strip().lower()
    return text.rsplit("/", 1)[-1].strip().lower()
