"""Kerberos for the WSMan collectors: sign in once per section, and say in one line what to do when it fails
(``ntlm_login``: auth ntlm's hashes, made once per section too).

``sign_in`` runs before a section sends anything. With a password it gets a ticket-granting ticket through GSSAPI
(what ``kinit`` does) into a MEMORY credential cache of this process, so every session of the section uses that one
ticket, the KDC sees one password attempt, and a wrong password stops the section at once instead of once per server
(which could lock the account). Without a password it uses the ticket in the user's credential cache (``kinit`` on
Linux and macOS, the logon session on a domain-joined Windows machine). ``explain`` turns a Kerberos or GSSAPI error
into one actionable line; the codes are MIT krb5's (krb5_err.h), which Heimdal shares for these errors.

Exchange's remote PowerShell is reached with Kerberos at ``http://<server FQDN>/PowerShell/`` (Microsoft Learn:
"Connect to Exchange servers using remote PowerShell"); the ticket is for the SPN ``HTTP/<that FQDN>``.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import sys
from dataclasses import dataclass, field
from typing import Any

from hma_check.errors import HmaCheckError

# krb5_err.h (com_err table "krb5"), as signed 32-bit values.
KDC_ERR_NAME_EXP = -1765328382
KDC_ERR_C_PRINCIPAL_UNKNOWN = -1765328378
KDC_ERR_S_PRINCIPAL_UNKNOWN = -1765328377
KDC_ERR_CLIENT_REVOKED = -1765328366
KDC_ERR_KEY_EXP = -1765328361
KDC_ERR_PREAUTH_FAILED = -1765328360
KRB_AP_ERR_BAD_INTEGRITY = -1765328353
KRB_AP_ERR_TKT_EXPIRED = -1765328352
KRB_AP_ERR_TKT_NYV = -1765328351
KRB_AP_ERR_SKEW = -1765328347
KRB5_CC_NOTFOUND = -1765328243
KRB5_KDC_UNREACH = -1765328228
KRB5_REALM_UNKNOWN = -1765328230
KRB5_FCC_NOFILE = -1765328189
KRB5_REALM_CANT_RESOLVE = -1765328164
KRB5_CONFIG_NODEFREALM = -1765328160
KRB5_CC_NOSUPP = -1765328137
KG_EMPTY_CCACHE = -1765328179   # "Credential cache is empty" (krb5 1.x)
NO_TICKET = {KRB5_CC_NOTFOUND, KRB5_FCC_NOFILE, KG_EMPTY_CCACHE, -1765328165}   # + KRB5_CC_END... (end of cache)
KDC_UNREACHABLE = {KRB5_KDC_UNREACH, KRB5_REALM_CANT_RESOLVE, KRB5_REALM_UNKNOWN}
WRONG_PASSWORD = {KDC_ERR_PREAUTH_FAILED, KRB_AP_ERR_BAD_INTEGRITY}
SKEW = {KRB_AP_ERR_SKEW, KRB_AP_ERR_TKT_NYV}
# Negotiate falls back to NTLM when Kerberos is out of reach, as Windows does; a refused password is refused by both.
NTLM_STILL_WORKS = {*KDC_UNREACHABLE, KDC_ERR_C_PRINCIPAL_UNKNOWN, KRB5_CONFIG_NODEFREALM}

KRB5_MECH = "1.2.840.113554.1.2.2"
WINDOWS = sys.platform == "win32"
# Active Directory's "Maximum tolerance for computer clock synchronization", 5 minutes by default:
CLOCK_SKEW_PAGE = ("https://learn.microsoft.com/previous-versions/windows/it-pro/windows-10/security/threat-protection/"
                   "security-policy-settings/maximum-tolerance-for-computer-clock-synchronization")
EXTRA = ("pip install 'hma-check[kerberos]' (it builds python-gssapi against the system's Kerberos: Debian/Ubuntu "
         "apt-get install libkrb5-dev gcc python3-dev; Fedora/RHEL krb5-devel gcc python3-devel; macOS brew install "
         "krb5; Windows needs nothing)")


class KerberosFailure(HmaCheckError):
    """One line a person can act on. ``per_server``: it concerns one server (its SPN), so only that server's sources
    fail; otherwise the account or this machine is at fault, the same for every server, and the section stops."""

    def __init__(self, message: str, *, per_server: bool = False, code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.per_server = per_server
        self.code = code


class Credentials(list):
    """pyspnego credential objects handed to pypsrp in place of a user name; printed as the principal's name (pypsrp
    puts its username into error messages and logs)."""

    def __init__(self, items: list[Any], display: str) -> None:
        super().__init__(items)
        self.display = display

    def __str__(self) -> str:
        return self.display

    __repr__ = __str__


@dataclass
class Login:
    """What pypsrp's WSMan gets as ``username`` and ``password`` for one section."""

    username: Any
    password: str | None = field(repr=False)


def missing_support() -> str | None:
    """Why Kerberos cannot run here (python-gssapi or pykrb5 not importable), or None. On Windows pyspnego signs in
    through SSPI, which needs neither."""
    if WINDOWS:
        return None
    try:
        import gssapi  # noqa: F401
        import krb5  # noqa: F401
    except ImportError as exc:
        return f"{exc.name or 'gssapi'} is not installed"
    return None


def kerberos_principal(username: str | None) -> bool:
    """user or user@REALM, which Kerberos can sign in with; DOMAIN\\user is a Windows (NTLM) name."""
    return bool(username) and "\\" not in str(username)


def sign_in(settings: Any, password: str | None, *, section: str) -> Login | None:
    """The section's sign-in for auth kerberos, negotiate and ntlm (None for the others); KerberosFailure when it
    cannot."""
    auth, username = settings.auth, settings.username
    if auth == "ntlm":
        return ntlm_login(username, password)
    if auth not in ("kerberos", "negotiate"):
        return None
    if WINDOWS:
        # SSPI: with a password, pyspnego signs in with it; without one, as the user logged on to Windows (the logon
        # session's Kerberos tickets, which klist shows).
        return Login(username if password else None, password)
    missing = missing_support()
    if missing:
        if auth == "negotiate" and password:
            return Login(username, password)
        need = ("Kerberos" if auth == "kerberos"
                else "negotiate without a password (it needs a Kerberos ticket)")
        raise KerberosFailure(f"{section}: auth {auth}: {need} needs python-gssapi, and {missing}: {EXTRA}; or set "
                              f"{settings.password_env} and use auth ntlm")
    if password is None:
        _cached_ticket(username, section, settings.password_env)
        # A DOMAIN\\user name is no Kerberos principal: the cache's own (kinit's) principal signs in.
        return Login(username if kerberos_principal(username) else None, None)
    if not kerberos_principal(username):
        if auth == "negotiate":
            return Login(username, password)
        raise KerberosFailure(f"{section}: auth kerberos with a password needs username as user@REALM (for example "
                              f"hma-reader@CONTOSO.COM), not {username!r}")
    try:
        ccache = ticket_from_password(username, password)
    except KerberosFailure as failure:
        if auth == "negotiate" and failure.code in NTLM_STILL_WORKS:
            return Login(username, password)     # pyspnego's Negotiate then signs in with NTLM
        raise KerberosFailure(f"{section}: {failure.message}") from None
    import spnego

    items: list[Any] = [spnego.KerberosCCache(ccache=ccache, principal=username)]
    if auth == "negotiate":
        items.append(spnego.Password(username=username, password=password))   # NTLM, if the server offers no Kerberos
    return Login(Credentials(items, username), None)


def ntlm_login(username: str | None, password: str | None) -> Login | None:
    """auth ntlm: the password's NT and LM hashes, made once for the section (None: pypsrp gets the password itself).

    pyspnego makes them from a password in every new context, that is in every session: pure-Python DES and MD4,
    ~2.5 ms of CPU each time, where a dozen sessions open at once at the start of a scan. Its NTLMHash credential
    signs in the same way (MS-NLMP: NTLMv2 uses the NT hash, NTLMv1 at LM_COMPAT_LEVEL below 3 both) and keeps the
    hashes out of its repr. On Windows pyspnego signs in through SSPI, which takes a password."""
    if WINDOWS or not username or password is None:
        return Login(username, password) if password is not None else None
    try:
        import spnego
        from spnego._ntlm_raw.crypto import lmowfv1, ntowfv1   # pyspnego's own, as its contexts call them
    except ImportError:
        return Login(username, password)
    hashes = spnego.NTLMHash(username=username, lm_hash=lmowfv1(password).hex(), nt_hash=ntowfv1(password).hex())
    return Login(Credentials([hashes], username), None)


def ticket_from_password(principal: str, password: str) -> str:
    """kinit through GSSAPI: a ticket-granting ticket for ``principal`` in a new MEMORY ccache; returns its name."""
    import gssapi
    import gssapi.raw as gss_raw

    mech = gssapi.OID.from_int_seq(KRB5_MECH)
    try:
        name = gssapi.Name(principal, gssapi.NameType.kerberos_principal)
        acquired = gss_raw.acquire_cred_with_password(name, password.encode("utf-8"), usage="initiate",
                                                      mechs=[mech])
        ccache = f"MEMORY:hma-check-{secrets.token_hex(8)}"
        gss_raw.store_cred_into({b"ccache": ccache.encode()}, acquired.creds, usage="initiate", mech=mech,
                                overwrite=True, set_default=False)
    except Exception as exc:  # noqa: BLE001 - every GSSAPI failure becomes one line
        raise explain(exc, principal=principal, spn=None) from None
    return ccache


def has_ticket(username: str | None) -> bool:
    """Whether the credential cache holds a valid ticket for ``username`` (any principal when it is no Kerberos
    name); False when Kerberos is not installed."""
    if WINDOWS:
        return True      # the logon session of a domain user has its ticket; SSPI says so when it has none
    if missing_support():
        return False
    try:
        _cached_ticket(username, "", "")
    except KerberosFailure:
        return False
    return True


def _cached_ticket(username: str | None, section: str, password_env: str) -> str:
    """The principal whose valid ticket is in the default credential cache; KerberosFailure when there is none."""
    import gssapi

    cache = os.environ.get("KRB5CCNAME") or _default_cache()
    try:
        name = gssapi.Name(username, gssapi.NameType.kerberos_principal) if kerberos_principal(username) else None
        creds = gssapi.Credentials(name=name, usage="initiate", mechs=[gssapi.OID.from_int_seq(KRB5_MECH)])
        lifetime = creds.lifetime
        principal = str(creds.name)
    except Exception as exc:  # noqa: BLE001
        code = error_code(exc)
        who = username if kerberos_principal(username) else "user@REALM"
        if code in (KRB_AP_ERR_TKT_EXPIRED,) or type(exc).__name__ == "ExpiredCredentialsError":
            raise KerberosFailure(f"{section}: the Kerberos ticket in the credential cache {cache} has expired: run "
                                  f"kinit {who} again, or set {password_env} to sign in with the password") from None
        named = "" if who == "user@REALM" else f" for {who}"
        raise KerberosFailure(f"{section}: no Kerberos ticket{named} in the "
                              f"credential cache {cache} and no password: run kinit {who} first (on a domain-joined "
                              f"Windows machine, sign in as that user), or set {password_env}") from None
    if lifetime is not None and lifetime <= 0:
        raise KerberosFailure(f"{section}: the Kerberos ticket of {principal} in {cache} has expired: run kinit again")
    return principal


def _default_cache() -> str:
    try:
        import krb5

        return krb5.cc_default_name(krb5.init_context()).decode("utf-8", "replace")
    except Exception:  # noqa: BLE001 - only for the message
        return "the default cache"


def error_code(exc: BaseException) -> int | None:
    """The krb5 error code inside a pyspnego, GSSAPI or pykrb5 exception, as a signed 32-bit value."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        for attribute in ("err_code", "min_code"):
            code = getattr(current, attribute, None)
            if isinstance(code, int) and code:
                return code - 2**32 if code >= 2**31 else code
        current = getattr(current, "base_error", None) or current.__cause__ or current.__context__
    return None


def explain(exc: BaseException, *, principal: str | None, spn: str | None) -> KerberosFailure:
    """One actionable line for a Kerberos failure (never the password: it is not in any of these messages)."""
    failure = _explained(exc, principal, spn)
    failure.code = error_code(exc)
    return failure


def _explained(exc: BaseException, principal: str | None, spn: str | None) -> KerberosFailure:
    code = error_code(exc)
    detail = _detail(exc)
    who = principal or "the account"
    if code in WRONG_PASSWORD:
        return KerberosFailure(f"Kerberos: the KDC refused the password of {who} (wrong password): check the "
                               "password variable; repeated attempts can lock the account")
    if code in SKEW:
        clocks = (f"the clocks of this machine, the KDC and {spn.split('/', 1)[-1]} do not agree" if spn
                  else "this machine's clock and the KDC's do not agree")
        return KerberosFailure(f"Kerberos: clock skew: {clocks} within the realm's tolerance (5 minutes by "
                               "default): set the clock (NTP; on Windows w32tm /resync) and try again")
    if code in KDC_UNREACHABLE:
        return KerberosFailure(f"Kerberos: the KDC is unreachable ({detail}): check krb5.conf's [realms] kdc entry "
                               "(or DNS SRV _kerberos._tcp.<realm>) and that port 88 of a domain controller is open "
                               "from this machine")
    if code == KDC_ERR_C_PRINCIPAL_UNKNOWN:
        return KerberosFailure(f"Kerberos: the KDC does not know the user {who}: write username as user@REALM with "
                               "the realm in capitals, for example hma-reader@CONTOSO.COM")
    if code == KDC_ERR_S_PRINCIPAL_UNKNOWN and spn:
        host = spn.split("/", 1)[-1]
        why = ("an IP address has no Kerberos SPN" if _is_address(host)
               else "a load-balanced name or DNS alias has none unless one was registered for it")
        return KerberosFailure(f"Kerberos: the KDC knows no service principal {spn} ({detail}): connect to the "
                               f"server's own FQDN as Get-ExchangeServer shows it ({why}), or register the SPN with "
                               "setspn", per_server=True)
    if code in (KDC_ERR_KEY_EXP,):
        return KerberosFailure(f"Kerberos: the password of {who} has expired: change it, then try again")
    if code in (KDC_ERR_CLIENT_REVOKED, KDC_ERR_NAME_EXP):
        return KerberosFailure(f"Kerberos: the account {who} is disabled, locked out or expired ({detail})")
    if code in NO_TICKET:
        return KerberosFailure(f"Kerberos: no ticket for {who} in the credential cache ({detail}): run kinit first "
                               "or set the password variable")
    if code == KRB_AP_ERR_TKT_EXPIRED:
        return KerberosFailure(f"Kerberos: the ticket of {who} has expired: run kinit again")
    if code == KRB5_CONFIG_NODEFREALM:
        return KerberosFailure("Kerberos: krb5.conf names no realm (default_realm): write username as user@REALM or "
                               "configure krb5.conf (KRB5_CONFIG)")
    return KerberosFailure(f"Kerberos failed for {who}" + (f" to {spn}" if spn else "") + f": {detail}",
                           per_server=spn is not None)


def _detail(exc: BaseException) -> str:
    """The library's own words, without pyspnego's and GSSAPI's framing or the numeric codes."""
    text = str(exc)
    if "Minor (" in text:
        text = text.rsplit("Minor (", 1)[-1]
    text = re.sub(r"^\d+\):\s*", "", text)
    text = text.split(", Context:", 1)[0]
    text = re.sub(r"\s-17653\d{5}$", "", text.strip())     # pykrb5 appends the code
    return " ".join(text.split())[:200] or type(exc).__name__


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True
