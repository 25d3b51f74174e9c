"""Which client sent a request, from the UserAgent Exchange logged, and whether it can use modern authentication.

One table (RULES), first match wins; each rule names the Microsoft page (or the published log line) it follows and is
printed in docs/clients.md (``python -m hma_check.collect.logs.user_agents``; a test keeps the two in step). What a rule
says about modern authentication is what Microsoft documents for *on-premises* Exchange with Hybrid Modern
Authentication; where Microsoft documents nothing, the answer is ``unknown`` ("verify by hand"), never ``yes``.

``modern`` values:
- ``yes``: can use modern authentication against on-premises Exchange once HMA is on;
- ``registry``: can, after a client-side setting (Outlook 2013: EnableADAL and Version in HKCU);
- ``profile``: can, after the account or profile is removed and added again (ActiveSync clients, Outlook mobile);
- ``no``: cannot; it keeps legacy authentication and breaks when legacy authentication is blocked;
- ``unknown``: Microsoft does not say (third-party clients, applications: ask the vendor or the owner);
- ``n/a``: Exchange's own monitoring, which is not a user's client.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterable

HMA_OVERVIEW = "https://learn.microsoft.com/microsoft-365/enterprise/hybrid-modern-auth-overview"
HMA_CONFIGURE = ("https://learn.microsoft.com/microsoft-365/enterprise/"
                 "configure-exchange-server-for-hybrid-modern-authentication")
OFFICE_2013 = "https://learn.microsoft.com/microsoft-365/admin/security-and-compliance/enable-modern-authentication"
OUTLOOK_MOBILE = "https://learn.microsoft.com/exchange/clients/outlook-for-ios-and-android/use-hybrid-modern-auth"
BLOCK_LEGACY = "https://learn.microsoft.com/exchange/hybrid-deployment/block-legacy-auth-2019-hybrid"
OUTLOOK_MSI = "https://learn.microsoft.com/officeupdates/outlook-updates-msi"
MAPI_HTTP = "https://learn.microsoft.com/exchange/clients/mapi-over-http/mapi-over-http"
EWS_AUTH = "https://learn.microsoft.com/exchange/client-developer/exchange-web-services/authentication-and-ews-in-exchange"
MANAGED_AVAILABILITY = "https://learn.microsoft.com/exchange/high-availability/managed-availability/managed-availability"
# Published HttpProxy lines that show these UserAgent values (docs/clients.md lists them with the fixture notes).
ARTEFACTS = "https://artefacts.help/microsoft_exchange.html"

MODERN_VALUES = ("yes", "registry", "profile", "no", "unknown", "n/a")
# AuthenticationType values that are modern authentication: HMA's Bearer (Outlook's Connection Status shows "Bearer*")
# and server-to-server OAuth (Exchange Online's free/busy and the hybrid application call on-premises EWS with it).
MODERN_AUTHENTICATION = frozenset({"bearer", "oauth"})
# Exchange's own monitoring accounts (managed availability's health mailboxes) are not users of anything.
_HEALTH_MAILBOX = re.compile(r"(^|[\\/])HealthMailbox[0-9A-Za-z]*($|@)", re.IGNORECASE)


@dataclass(frozen=True)
class Client:
    """What a UserAgent says: the client family, its version (as logged), and what it can do against HMA."""

    family: str
    version: str
    modern: str
    note: str
    application: bool = False     # an application or script rather than a person's mail client

    @property
    def label(self) -> str:
        return f"{self.family} {self.version}".strip()


@dataclass(frozen=True)
class Rule:
    family: str
    pattern: re.Pattern[str]
    decide: Callable[[re.Match[str]], tuple[str, str, str]]   # match -> (version, modern, note)
    references: tuple[str, ...]
    example: str
    application: bool = False


def _fixed(modern: str, note: str, version_group: str | None = None) -> Callable[[re.Match[str]], tuple[str, str, str]]:
    def decide(match: re.Match[str]) -> tuple[str, str, str]:
        version = match.group(version_group) if version_group and match.group(version_group) else ""
        return version, modern, note
    return decide


def _outlook_windows(match: re.Match[str]) -> tuple[str, str, str]:
    build = match.group("build") or match.group("office")
    major = int(match.group("major"))
    if major >= 16:
        return build, "yes", ("Outlook 2016 or later (Microsoft 365 Apps, 2019, 2021, 2024): modern authentication over "
                              "MAPI/HTTP; MSI builds must be current")
    if major == 15:
        return build, "registry", ("Outlook 2013: only with EnableADAL=1 and Version=1 under "
                                   "HKCU\\Software\\Microsoft\\Office\\15.0\\Common\\Identity")
    return build, "no", "Outlook 2010 or older: no modern authentication (HMA needs Outlook 2013 or later)"


def _outlook_mac(match: re.Match[str]) -> tuple[str, str, str]:
    if int(match.group("major")) >= 15:
        return match.group("version"), "yes", "Outlook 2016 for Mac or later: modern authentication over EWS"
    return match.group("version"), "no", "Outlook for Mac 2011: no modern authentication"


# iOS builds: 15E302 is iOS 11.3.1 and the Apple ActiveSync UserAgent writes it 1505.302 (major, letter as a number,
# build). Mail for iOS supports modern authentication from 11.3.1 (BLOCK_LEGACY).
_IOS_MODERN_FROM = (15, 5, 302)
_IOS_MAJOR_OFFSET = 4   # build major 15 -> iOS 11 ... 21 -> iOS 17 (Apple's numbering)


def _apple_activesync(match: re.Match[str]) -> tuple[str, str, str]:
    build = (int(match.group("b1")), int(match.group("b2")), int(match.group("b3")))
    ios = f"iOS {build[0] - _IOS_MAJOR_OFFSET} (build {build[0]}{chr(64 + build[1]) if 0 < build[1] < 27 else '?'}{build[2]})"
    if build >= _IOS_MODERN_FROM:
        return ios, "profile", ("Mail for iOS 11.3.1 or later can use modern authentication once the account is "
                                "removed and added again")
    return ios, "no", "Mail for iOS before 11.3.1: no modern authentication"


RULES: tuple[Rule, ...] = (
    # ------------------------------------------------------------------------------- Exchange's own monitoring
    Rule("Exchange monitoring",
         re.compile(r"^(AMProbe/|Ews_AM_Probe|ActiveMonitoring|MSEXCHMON|ExchangeInternalEwsClient|"
                    r"MapiHttpClient$|ExchangeWebServicesProxy|Exchange Server Health|HealthManager)", re.I),
         _fixed("n/a", "managed availability probes and Exchange's internal clients; not a user's client"),
         (MANAGED_AVAILABILITY, ARTEFACTS), "AMProbe/Local/ClientAccess"),
    # ------------------------------------------------------------------------------------- Outlook for Windows
    Rule("Outlook for Windows",
         re.compile(r"Microsoft Office/(?P<office>(?P<major>\d+)\.\d+)[^;]*\([^)]*?Microsoft (?:Office )?Outlook[ /]?"
                    r"(?P<build>\d+\.\d+(?:\.\d+)*)?", re.I),
         _outlook_windows, (HMA_OVERVIEW, OFFICE_2013, OUTLOOK_MSI),
         "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17928; Pro)"),
    Rule("Outlook for Windows",
         re.compile(r"^Microsoft Outlook (?P<office>(?P<major>\d+)\.\d+)(?P<build>)", re.I),
         _outlook_windows, (HMA_OVERVIEW, OFFICE_2013), "Microsoft Outlook 14.0"),
    Rule("Outlook for Windows (RPC over HTTP)", re.compile(r"^MSRPC$", re.I),
         _fixed("no", "Outlook Anywhere (RPC over HTTP) cannot carry modern authentication: Outlook must use "
                      "MAPI over HTTP"),
         (HMA_CONFIGURE, HMA_OVERVIEW, MAPI_HTTP), "MSRPC"),
    Rule("Outlook for Windows (offline address book download)", re.compile(r"^Microsoft BITS/(?P<v>[\d.]+)", re.I),
         _fixed("unknown", "Outlook downloads the offline address book through BITS; the Outlook version is not in "
                           "this request: see that user's Outlook requests", "v"),
         (HMA_OVERVIEW,), "Microsoft BITS/7.8"),
    # ------------------------------------------------------------------------------------------ Outlook for Mac
    Rule("Outlook for Mac", re.compile(r"MacOutlook/(?P<version>(?P<major>\d+)\.[\d.]+)", re.I),
         _outlook_mac, (HMA_OVERVIEW,), "MacOutlook/16.89.24091630 (Intelx64 Mac OS X 14.6.1 (Build 23G93))"),
    # -------------------------------------------------------------------------------- Outlook for iOS and Android
    Rule("Outlook for iOS and Android",
         re.compile(r"^Outlook-(?:iOS-Android|iOS|Android)/(?P<v>[\w.]+)", re.I),
         _fixed("profile", "with HMA Outlook for iOS and Android reaches Exchange through Microsoft's service with "
                           "Bearer tokens; an account added with basic authentication must be removed and added "
                           "again", "v"),
         (OUTLOOK_MOBILE, HMA_OVERVIEW, ARTEFACTS), "Outlook-iOS-Android/1.0"),
    # -------------------------------------------------------------------------------------- Apple Mail and iOS
    Rule("Mail for iOS (ActiveSync)",
         re.compile(r"^Apple-(?:iPhone|iPad|iPod)[\w,]*/(?P<b1>\d{2})(?P<b2>\d{2})\.(?P<b3>\d+)", re.I),
         _apple_activesync, (BLOCK_LEGACY, HMA_OVERVIEW), "Apple-iPhone14C2/2005.47"),
    Rule("Apple Mail and accounts (EWS)",
         re.compile(r"(?:AppleExchangeWebServices/(?P<v>[\d.]+)|ExchangeWebServices/(?P<w>[\d.]+)(?:[^;]*;)?\s*Mail/)",
                    re.I),
         lambda m: (m.group("v") or m.group("w") or "", "unknown",
                    "macOS Mail and the iOS/macOS accounts service over EWS and Autodiscover: Microsoft documents "
                    "no modern authentication for them against on-premises Exchange; verify by hand"),
         (ARTEFACTS, HMA_OVERVIEW), "AppleExchangeWebServices/818.120.2 accountsd/113"),
    # --------------------------------------------------------------------------------- other ActiveSync clients
    Rule("Other ActiveSync client",
         re.compile(r"^(?P<v>(?:Android|SAMSUNG|samsung|Nine|TouchDown|BlackBerry|Gmail|WindowsMail|"
                    r"MOTOROLA|LG-|HTC|Xiaomi|Huawei|Exchange ActiveSync)[\w .;/-]*)", re.I),
         _fixed("unknown", "an Exchange ActiveSync client: modern authentication only if the vendor supports it, "
                           "and then after re-creating the account", "v"),
         (HMA_OVERVIEW,), "Android-SAMSUNG-SM-G991B/101.1003"),
    # ------------------------------------------------------------------------------------------ EWS applications
    Rule("EWS Managed API application", re.compile(r"ExchangeServicesClient/(?P<v>[\d.]+)", re.I),
         _fixed("unknown", "an application built on the EWS Managed API: it can use OAuth only if its owner "
                           "changed it to", "v"),
         (EWS_AUTH, ARTEFACTS), "ExchangeServicesClient/15.00.0913.015", application=True),
    Rule("Script or custom application",
         re.compile(r"^(?P<v>(?:python-requests|python-urllib|Python/|curl/|libcurl|Java/|Apache-HttpClient|okhttp|"
                    r"Go-http-client|PostmanRuntime|axios|node-fetch|Wget)[\w./ -]*)|WindowsPowerShell/(?P<ps>[\d.]+)",
                    re.I),
         lambda m: ((m.group("v") or f"WindowsPowerShell/{m.group('ps')}").strip(), "unknown",
                    "a script or custom application: it keeps its credentials until its owner changes it"),
         (EWS_AUTH,), "python-requests/2.32.3", application=True),
    # ------------------------------------------------------------------------------------ browsers (OWA and EAC)
    Rule("Web browser", re.compile(r"^Mozilla/\d.*\b(?:Edg(?:e|A|iOS)?/|Firefox/|Chrome/|Trident/|Version/\d[\d.]* "
                                   r"(?:Mobile/\w+ )?Safari/)"),
         lambda m: (_browser(m.string), "yes", "a browser on Outlook on the web or the EAC: signs in through Entra ID "
                                               "once HMA is enabled for OWA and ECP"),
         (HMA_CONFIGURE,), "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                           "Chrome/129.0.0.0 Safari/537.36 Edg/129.0.0.0"),
)
OTHER = Client("Other", "", "unknown", "not a client hma-check knows: verify by hand")
EMPTY = Client("No UserAgent", "", "unknown", "the request carried no User-Agent header")


# Browsers name the engines they are compatible with too: the most specific first (Edge says Chrome and Safari).
_BROWSERS = (("Edge", re.compile(r"\bEdg(?:e|A|iOS)?/(\d+)")), ("Firefox", re.compile(r"\bFirefox/(\d+)")),
             ("Chrome", re.compile(r"\bChrome/(\d+)")), ("Safari", re.compile(r"\bVersion/(\d+)[\d.]* (?:Mobile/\w+ )?Safari/")),
             ("Internet Explorer (Trident)", re.compile(r"\bTrident/(\d+)")))


def _browser(agent: str) -> str:
    for name, pattern in _BROWSERS:
        match = pattern.search(agent)
        if match:
            return f"{name} {match.group(1)}"
    return "browser"


def classify(user_agent: str) -> Client:
    """The client a UserAgent names (first rule that matches), OTHER when none does."""
    text = user_agent.strip()
    if not text:
        return EMPTY
    for rule in RULES:
        match = rule.pattern.search(text)
        if match:
            version, modern, note = rule.decide(match)
            return Client(rule.family, version, modern, note, rule.application)
    return OTHER


def is_modern(authentication_type: str) -> bool:
    return authentication_type.strip().lower() in MODERN_AUTHENTICATION


def is_exchange_internal(user: str) -> bool:
    """HealthMailbox<guid> accounts are managed availability's probes (MANAGED_AVAILABILITY)."""
    return bool(_HEALTH_MAILBOX.search(user))


# A name that looks like an account for a program rather than a person: a heuristic (docs/clients.md), so such users
# are listed apart as "applications and service accounts", never dropped.
_SERVICE_NAME = re.compile(r"(^|[\\/@._ -])(svc|srv|service|services|sa|app|api|noreply|no-reply|donotreply|scan|"
                           r"scanner|backup|sync|crm|erp|sap|monitor|bot|daemon|system|mfp|printer|copier)"
                           r"(?=$|[\\/@._ -]|\d)", re.IGNORECASE)


def looks_like_service_account(user: str) -> bool:
    return bool(_SERVICE_NAME.search(user))


def markdown(rules: Iterable[Rule] = RULES) -> str:
    """The client table of docs/clients.md, generated from RULES."""
    lines = ["| family | matches (example UserAgent) | modern authentication | sources |", "|---|---|---|---|"]
    for rule in rules:
        client = classify(rule.example)
        example = rule.example.replace("|", "\\|")
        kind = " (application)" if rule.application else ""
        sources = "<br>".join(rule.references)
        lines.append(f"| {rule.family}{kind} | `{example}` | `{client.modern}`: {client.note} | {sources} |")
    lines.append(f"| {OTHER.family} | anything else | `{OTHER.modern}`: {OTHER.note} | - |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
