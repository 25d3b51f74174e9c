"""Decode a certificate's DER (ExchangeCertificate RawData) into the contract's certificate record."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hma_check.contract.snapshot import iso_utc

# Windows' friendly names for signature algorithms (X509Certificate2.SignatureAlgorithm.FriendlyName), which
# Get-ExchangeCertificate and HealthChecker print; anything else keeps its dotted OID.
_SIGNATURE_NAMES = {
    "1.2.840.113549.1.1.4": "md5RSA",
    "1.2.840.113549.1.1.5": "sha1RSA",
    "1.2.840.113549.1.1.10": "RSASSA-PSS",
    "1.2.840.113549.1.1.11": "sha256RSA",
    "1.2.840.113549.1.1.12": "sha384RSA",
    "1.2.840.113549.1.1.13": "sha512RSA",
    "1.2.840.10045.4.1": "sha1ECDSA",
    "1.2.840.10045.4.3.2": "sha256ECDSA",
    "1.2.840.10045.4.3.3": "sha384ECDSA",
    "1.2.840.10045.4.3.4": "sha512ECDSA",
}
# Windows writes these attribute names in X509Certificate2.Subject (CN=…, S=…, E=…), not the RFC 4514 ones.
_WINDOWS_ATTRIBUTE_NAMES = {
    NameOID.EMAIL_ADDRESS: "E",
    NameOID.STATE_OR_PROVINCE_NAME: "S",
    NameOID.SERIAL_NUMBER: "SERIALNUMBER",
    NameOID.GIVEN_NAME: "G",
    NameOID.SURNAME: "SN",
    NameOID.TITLE: "T",
}


class CertificateError(ValueError):
    """RawData that is not a DER X.509 certificate."""


def certificate_from_der(der: bytes) -> dict[str, Any]:
    """The contract's certificate record (exchange.exchange_certificates) from the DER bytes.

    Over a remote session Get-ExchangeCertificate sends only RawData (Thumbprint, Services and Status live in Exchange's
    SerializationData blob), so every field is derived here, as CSS-Exchange's Import-ExchangeCertificateFromRawData does.
    """
    try:
        cert = x509.load_der_x509_certificate(der)
        subject, issuer = cert.subject, cert.issuer
        record: dict[str, Any] = {
            "Thumbprint": hashlib.sha1(der).hexdigest().upper(),  # noqa: S324 - the thumbprint is SHA-1 by definition
            "Subject": windows_name(subject),
            "Issuer": windows_name(issuer),
            "SerialNumber": _serial_hex(cert.serial_number),
            "NotBefore": iso_utc(cert.not_valid_before_utc),
            "NotAfter": iso_utc(cert.not_valid_after_utc),
            "DnsNameList": _dns_names(cert),
            # CSS-Exchange compares SubjectName.RawData with IssuerName.RawData when IsSelfSigned is missing remotely.
            "IsSelfSigned": subject.public_bytes() == issuer.public_bytes(),
            "HasServerAuthEku": _has_server_auth(cert),
            "SignatureAlgorithm": _SIGNATURE_NAMES.get(cert.signature_algorithm_oid.dotted_string,
                                                       cert.signature_algorithm_oid.dotted_string),
            "PublicKeySize": _key_size(cert),
            "RawData": base64.b64encode(der).decode("ascii"),
        }
    except (ValueError, TypeError) as exc:
        raise CertificateError(f"RawData is not a DER X.509 certificate: {exc}") from None
    return record


def windows_name(name: x509.Name) -> str:
    """A distinguished name the way X509Certificate2.Subject prints it: most specific first, ', ' between RDNs."""
    return ", ".join(rdn.rfc4514_string(_WINDOWS_ATTRIBUTE_NAMES) for rdn in reversed(name.rdns))


def _serial_hex(serial: int) -> str:
    text = format(serial, "X")
    return text if len(text) % 2 == 0 else "0" + text


def _dns_names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = san.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = []
    if names:
        return list(names)
    return [str(attr.value) for attr in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]


def _has_server_auth(cert: x509.Certificate) -> bool:
    """True when TLS server authentication is allowed: the EKU lists serverAuth (or anyExtendedKeyUsage), or the
    certificate has no EKU extension at all, which RFC 5280 section 4.2.1.12 reads as 'any purpose'."""
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return True
    return ExtendedKeyUsageOID.SERVER_AUTH in usages or ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in usages


def _key_size(cert: x509.Certificate) -> int | None:
    try:
        key = cert.public_key()
    except (ValueError, TypeError, NotImplementedError):
        return None
    if isinstance(key, (rsa.RSAPublicKey, dsa.DSAPublicKey, ec.EllipticCurvePublicKey)):
        return key.key_size
    if isinstance(key, ed25519.Ed25519PublicKey):
        return 256
    if isinstance(key, ed448.Ed448PublicKey):
        return 456
    return None
