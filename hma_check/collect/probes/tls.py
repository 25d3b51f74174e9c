"""One real TLS handshake per version (1.0 to 1.3) to a host, then its certificate: expiry, chain, names covered."""

from __future__ import annotations

import socket
import ssl
import warnings
from dataclasses import dataclass
from typing import Any

from hma_check.collect.certificates import certificate_from_der

# Entra ID refuses TLS 1.0/1.1 (AADSTS1002016, seed 000; https://learn.microsoft.com/troubleshoot/azure/
# entra/entra-id/ad-dmn-services/enable-support-tls-environment): TLS 1.2 is the blocker, older ones a warning.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # TLSVersion.TLSv1/TLSv1_1 are deprecated: we test them
    VERSIONS: dict[str, ssl.TLSVersion] = {
        "TLSv1.0": ssl.TLSVersion.TLSv1,
        "TLSv1.1": ssl.TLSVersion.TLSv1_1,
        "TLSv1.2": ssl.TLSVersion.TLSv1_2,
        "TLSv1.3": ssl.TLSVersion.TLSv1_3,
    }
LEGACY = ("TLSv1.0", "TLSv1.1")
# OpenSSL 3 refuses TLS 1.0/1.1 at its default security level 1 ("no ciphers available"); level 0 lets it offer
# them. Only the one-version test context of a legacy version gets it, never a context that carries a request.
LEGACY_CIPHERS = "DEFAULT:@SECLEVEL=0"
# OpenSSL reasons raised by our own side before the server had a say: the version cannot be tested from here.
_LOCAL_REASONS = {"NO_CIPHERS_AVAILABLE", "NO_PROTOCOLS_AVAILABLE", "NO_SUITABLE_SIGNATURE_ALGORITHM"}


class Unreachable(Exception):
    """The TCP connection itself failed: nothing about TLS can be said."""


@dataclass
class _Handshake:
    accepted: bool | None
    reason: str | None = None
    der: bytes | None = None


class TlsContexts:
    """The handshake contexts of one run, built once in the calling thread: setting a legacy version raises a
    DeprecationWarning, and silencing it touches the process-wide warning filters, which threads must not race on.
    SSLContext objects are safe to share between threads."""

    def __init__(self, ca_bundle: str | None) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            self.probing = {version: _version_context(version) for version in VERSIONS}
            self.verifying = {version: _verifying_context(version, ca_bundle) for version in VERSIONS}


def probe_tls(host: str, address: str, port: int, *, timeout: float, contexts: TlsContexts) -> dict[str, Any]:
    """The TLS part of the contract's probe.tls record: versions, version_errors, certificate.

    Each version is one handshake offering only that version with no certificate check, so a bad certificate never
    hides which versions work. ``True`` accepted, ``False`` refused (an alert, a reset or a close during the
    handshake: Schannel resets the connection for a disabled protocol), ``None`` unknown (a timeout, or this machine
    cannot offer the version), the reason in ``version_errors``. The certificate comes from the newest accepted
    version; one more handshake checks its chain (trust and dates) against the CA bundle or the system store.
    Raises Unreachable when no TCP connection can be made at all.
    """
    versions: dict[str, bool | None] = {}
    version_errors: dict[str, str] = {}
    der, best = None, None
    for name in VERSIONS:
        outcome = _handshake(host, address, port, contexts.probing[name], timeout)
        versions[name] = outcome.accepted
        if outcome.accepted is None:
            version_errors[name] = outcome.reason or "unknown"
        elif outcome.accepted:
            der, best = outcome.der, name
    if der is None or best is None:
        return {"versions": versions, "version_errors": version_errors, "certificate": None}
    certificate = certificate_record(der)
    verified = _handshake(host, address, port, contexts.verifying[best], timeout)
    certificate["chain_verified"] = verified.accepted
    certificate["verify_error"] = verified.reason
    return {"versions": versions, "version_errors": version_errors, "certificate": certificate}


def certificate_record(der: bytes) -> dict[str, Any]:
    """The served certificate in probe.tls's shape, decoded by the same code as Get-ExchangeCertificate's RawData,
    so names print as Windows prints them and the thumbprint can be matched with exchange.exchange_certificates."""
    decoded = certificate_from_der(der)
    return {"subject": decoded["Subject"], "issuer": decoded["Issuer"], "not_before": decoded["NotBefore"],
            "not_after": decoded["NotAfter"], "dns_names": decoded["DnsNameList"], "thumbprint": decoded["Thumbprint"]}


# ---------------------------------------------------------------------------------------------- handshakes
def _version_context(version: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # this handshake asks only "is the version accepted"
    return _one_version(context, version)


def _verifying_context(version: str, ca_bundle: str | None) -> ssl.SSLContext:
    """Chain trust and validity dates; host names are judged separately (names_not_covered), so the two
    findings stay apart. A legacy-only server is verified at its own version, with the legacy cipher level."""
    context = ssl.create_default_context(cafile=ca_bundle)  # None: the system store
    context.check_hostname = False
    return _one_version(context, version)


def _one_version(context: ssl.SSLContext, version: str) -> ssl.SSLContext:
    """Pin a handshake-only context to one version; the one place LEGACY_CIPHERS (SECLEVEL 0) is ever set."""
    if version in LEGACY:
        context.set_ciphers(LEGACY_CIPHERS)
    context.minimum_version = context.maximum_version = VERSIONS[version]
    return context


def _handshake(host: str, address: str, port: int, context: ssl.SSLContext, timeout: float) -> _Handshake:
    try:
        raw = socket.create_connection((address, port), timeout=timeout)
    except OSError as exc:
        raise Unreachable(f"cannot connect to {address}:{port}: {_os_error(exc)}") from None
    try:
        with context.wrap_socket(raw, server_hostname=host) as tls:
            return _Handshake(True, der=tls.getpeercert(binary_form=True))
    except ssl.SSLCertVerificationError as exc:
        return _Handshake(False, reason=exc.verify_message or str(exc))
    except ssl.SSLError as exc:
        if exc.reason in _LOCAL_REASONS:
            return _Handshake(None, reason=f"this machine's OpenSSL cannot offer it ({exc.reason})")
        return _Handshake(False, reason=exc.reason or str(exc))
    except TimeoutError:
        return _Handshake(None, reason=f"no answer within {timeout:g} s")
    except (ConnectionError, EOFError) as exc:
        return _Handshake(False, reason=_os_error(exc))
    except OSError as exc:
        return _Handshake(None, reason=_os_error(exc))
    finally:
        raw.close()


def _os_error(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
