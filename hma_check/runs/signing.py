"""Detached CMS (PKCS #7) signatures over manifest.json: made with cryptography, checked against RFC 5652.

cryptography signs CMS but has no public API to verify it, so verification walks the SignedData with the small DER
reader in hma_check.runs.der and checks each step RFC 5652 section 5.4-5.6 requires: the messageDigest attribute is the
digest of the manifest, the content type is id-data, and the signature over the DER of the signed attributes
verifies with the signer certificate's key. Trust in that certificate is a separate question (see verify_signature).
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs7

from hma_check.errors import HmaCheckError
from hma_check.runs import der

ID_DATA = "1.2.840.113549.1.7.1"
ID_SIGNED_DATA = "1.2.840.113549.1.7.2"
ATTR_CONTENT_TYPE = "1.2.840.113549.1.9.3"
ATTR_MESSAGE_DIGEST = "1.2.840.113549.1.9.4"
ATTR_SIGNING_TIME = "1.2.840.113549.1.9.5"
DIGESTS: dict[str, type[hashes.HashAlgorithm]] = {
    "2.16.840.1.101.3.4.2.1": hashes.SHA256, "2.16.840.1.101.3.4.2.2": hashes.SHA384,
    "2.16.840.1.101.3.4.2.3": hashes.SHA512,
}
RSA_PKCS1 = "1.2.840.113549.1.1.1"
# Signature algorithm OIDs that name their digest: it must be the SignerInfo's digestAlgorithm.
RSA_WITH = {"1.2.840.113549.1.1.11": hashes.SHA256, "1.2.840.113549.1.1.12": hashes.SHA384,
            "1.2.840.113549.1.1.13": hashes.SHA512}
ECDSA_WITH = {"1.2.840.10045.4.3.2": hashes.SHA256, "1.2.840.10045.4.3.3": hashes.SHA384,
              "1.2.840.10045.4.3.4": hashes.SHA512}


# What damaged bytes can raise while they are read: DerError (a ValueError), a field that is not there, and
# cryptography's errors for certificates it parses lazily (extensions, version, key type, and a TypeError for a
# name attribute whose string tag became BIT STRING).
MALFORMED = (ValueError, IndexError, TypeError, UnsupportedAlgorithm, x509.InvalidVersion, x509.DuplicateExtension,
             x509.UnsupportedGeneralNameType)


class SignatureError(HmaCheckError):
    """The signature does not verify, or the signer's certificate is not the one expected or not trusted."""


class SigningError(HmaCheckError):
    """The certificate and key cannot make a signature (wrong pair, unsupported key, key usage forbids it)."""


# ------------------------------------------------------------------------------------------------------------ sign

def check_signing_pair(certificate: x509.Certificate, key: Any) -> None:
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        raise SigningError(f"a {type(key).__name__} cannot sign CMS here; use an RSA or EC key")
    if certificate.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) != \
            key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo):
        raise SigningError("the private key does not belong to the certificate")
    problem = key_usage_problem(certificate)
    if problem:
        raise SigningError(problem)


def sign(data: bytes, certificate: x509.Certificate, key: Any, chain: Sequence[x509.Certificate] = ()) -> bytes:
    """A detached, DER-encoded CMS SignedData over ``data`` (SHA-256, signed attributes, signer certificate and chain
    included so a verifier needs nothing else to check the signature itself)."""
    check_signing_pair(certificate, key)
    builder = pkcs7.PKCS7SignatureBuilder().set_data(data).add_signer(certificate, key, hashes.SHA256())
    for extra in chain:
        builder = builder.add_certificate(extra)
    return builder.sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary])


def key_usage_problem(certificate: x509.Certificate) -> str | None:
    """RFC 5280 4.2.1.3: a certificate whose key usage lists neither digitalSignature nor nonRepudiation
    (contentCommitment) must not verify signatures on content."""
    try:
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None
    if usage.digital_signature or usage.content_commitment:
        return None
    return "the certificate's key usage allows neither digitalSignature nor nonRepudiation"


# ---------------------------------------------------------------------------------------------------------- verify

@dataclass
class SignatureCheck:
    """What was verified about one valid signature, and what was not."""

    signer: x509.Certificate
    subject: str                        # read while verifying: cryptography parses the name only when asked
    signing_time: datetime | None
    digest: str
    identity: str                       # how the signer was authenticated, or that it was not
    authenticated: bool
    chain: list[str] = field(default_factory=list)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.signer)


def fingerprint(certificate: x509.Certificate) -> str:
    return hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()


def verify_signature(data: bytes, signature: bytes, *, expected: x509.Certificate | None = None,
                     trusted: list[x509.Certificate] | None = None) -> SignatureCheck:
    """Verify a detached CMS signature over ``data``; raise SignatureError saying exactly what failed.

    Always verified: the CMS structure, that the signed digest is the digest of ``data``, the signature with the
    embedded signer certificate's key, that the certificate's key usage allows signing and that it was valid at
    the signing time the signature states. Who signed: only when ``expected`` (the consultant's own certificate,
    compared byte for byte) or ``trusted`` (CA certificates: the chain is built and checked at the signing time)
    is given. Never verified: revocation (no CRL or OCSP is fetched) and the signing time itself (it is the
    signer's claim, not a trusted timestamp).
    """
    try:
        certificates, signer_info = _structure(_der_bytes(signature))
        return _verify(data, certificates, signer_info, expected, trusted)
    except MALFORMED as exc:
        raise SignatureError(f"not a well-formed DER CMS signature: {exc or type(exc).__name__}") from None


def _der_bytes(signature: bytes) -> bytes:
    """Accept PEM ('-----BEGIN PKCS7-----' or CMS) as well as DER."""
    if signature.lstrip().startswith(b"-----BEGIN"):
        import base64

        lines = [line for line in signature.strip().splitlines() if not line.startswith(b"-----")]
        try:
            return base64.b64decode(b"".join(lines), validate=True)
        except ValueError:
            raise SignatureError("PEM signature with invalid base64") from None
    return signature


def _structure(raw: bytes) -> tuple[list[x509.Certificate], der.Tlv]:
    content_info = der.parse(raw).expect(der.SEQUENCE, "ContentInfo").children()
    if len(content_info) != 2 or der.oid(content_info[0]) != ID_SIGNED_DATA:
        raise SignatureError("not a CMS SignedData")
    signed_data = content_info[1].expect(0xA0, "SignedData wrapper").children()[0].expect(der.SEQUENCE, "SignedData")
    parts = signed_data.children()
    if len(parts) < 4:
        raise SignatureError("SignedData is incomplete")
    encap = parts[2].expect(der.SEQUENCE, "EncapsulatedContentInfo").children()
    if der.oid(encap[0]) != ID_DATA:
        raise SignatureError("the signed content is not plain data")
    if len(encap) > 1:
        raise SignatureError("the signature embeds its content; hma-check expects a detached signature")
    certificates: list[x509.Certificate] = []
    rest = parts[3:]
    if rest and rest[0].tag == 0xA0:
        for element in rest[0].children():
            if element.tag == der.SEQUENCE:
                try:
                    certificates.append(_load_certificate(element.raw))
                except (*MALFORMED, CryptographyDeprecationWarning):
                    raise SignatureError(f"the certificate at byte {element.start} is not readable") from None
        rest = rest[1:]
    if rest and rest[0].tag == 0xA1:   # CRLs: not used for anything here
        rest = rest[1:]
    if len(rest) != 1:
        raise SignatureError("SignedData has no signerInfos")
    signers = rest[0].expect(der.SET, "signerInfos").children()
    if len(signers) != 1:
        raise SignatureError(f"one signer expected, found {len(signers)}")
    return certificates, signers[0].expect(der.SEQUENCE, "SignerInfo")


def _verify(data: bytes, certificates: list[x509.Certificate], signer_info: der.Tlv,
            expected: x509.Certificate | None, trusted: list[x509.Certificate] | None) -> SignatureCheck:
    fields = signer_info.children()
    if len(fields) < 5:
        raise SignatureError("SignerInfo is incomplete")
    signer = _find_signer(fields[1], certificates)
    digest_oid = der.oid(fields[2].expect(der.SEQUENCE, "digestAlgorithm").children()[0])
    if digest_oid not in DIGESTS:
        raise SignatureError(f"digest algorithm {digest_oid} is not accepted (SHA-256, SHA-384 or SHA-512)")
    digest = DIGESTS[digest_oid]()
    index, signing_time = 3, None
    if fields[3].tag == 0xA0:
        attributes = _attributes(fields[3])
        if attributes.get(ATTR_CONTENT_TYPE) is None or der.oid(attributes[ATTR_CONTENT_TYPE]) != ID_DATA:
            raise SignatureError("the signed contentType attribute is missing or not id-data")
        stated = attributes.get(ATTR_MESSAGE_DIGEST)
        if stated is None:
            raise SignatureError("the signed messageDigest attribute is missing")
        if stated.expect(der.OCTET_STRING, "messageDigest").content != _digest(digest, data):
            raise SignatureError("manifest.json is not the file that was signed (its digest differs from the "
                                 "signed messageDigest)")
        if ATTR_SIGNING_TIME in attributes:
            signing_time = _time(attributes[ATTR_SIGNING_TIME])
        # RFC 5652 5.4: the signature covers the DER of the attributes as a SET OF, not their [0] IMPLICIT form.
        signed = b"\x31" + fields[3].raw[1:]
        index = 4
    else:
        signed = data
    algorithm = der.oid(fields[index].expect(der.SEQUENCE, "signatureAlgorithm").children()[0])
    value = fields[index + 1].expect(der.OCTET_STRING, "signature").content
    _check_signature(signer.public_key(), algorithm, digest, value, signed)
    _check_certificate(signer, signing_time)
    return _identity(signer, certificates, signing_time, digest.name, expected, trusted)


def _digest(algorithm: hashes.HashAlgorithm, data: bytes) -> bytes:
    h = hashes.Hash(algorithm)
    h.update(data)
    return h.finalize()


def _load_certificate(raw: bytes) -> x509.Certificate:
    """A DER certificate, its serial number read at once: cryptography parses it lazily and only warns (on stderr,
    at the first read) about one RFC 5280 disallows (zero or negative), which its future releases refuse to load.
    Such a certificate is refused here now, as an unreadable one."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", CryptographyDeprecationWarning)
        certificate = x509.load_der_x509_certificate(raw)
        certificate.serial_number   # noqa: B018 - read for its check, see above
    return certificate


def _find_signer(sid: der.Tlv, certificates: list[x509.Certificate]) -> x509.Certificate:
    if sid.tag == der.SEQUENCE:   # IssuerAndSerialNumber
        issuer, serial = sid.children()
        wanted = der.integer(serial)
        for cert in certificates:
            if cert.serial_number == wanted and cert.issuer.public_bytes() == issuer.raw:
                return cert
    elif sid.tag == 0x80:         # [0] SubjectKeyIdentifier
        for cert in certificates:
            try:
                if cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest == sid.content:
                    return cert
            except x509.ExtensionNotFound:
                continue
    raise SignatureError("the signer's certificate is not in the signature")


def _attributes(element: der.Tlv) -> dict[str, der.Tlv]:
    out: dict[str, der.Tlv] = {}
    for attribute in element.children():
        kind, values = attribute.expect(der.SEQUENCE, "Attribute").children()
        name = der.oid(kind)
        members = values.expect(der.SET, "attribute values").children()
        if name in out or len(members) != 1:
            raise SignatureError(f"signed attribute {name} must occur once with one value")
        out[name] = members[0]
    return out


def _time(element: der.Tlv) -> datetime:
    text = element.content.decode("ascii", "replace")
    try:
        if element.tag == der.UTC_TIME:
            moment = datetime.strptime(text, "%y%m%d%H%M%SZ")
        elif element.tag == der.GENERALIZED_TIME:
            moment = datetime.strptime(text, "%Y%m%d%H%M%SZ")
        else:
            raise ValueError(text)
    except ValueError:
        raise SignatureError(f"signingTime is not a time: {text[:40]!r}") from None
    return moment.replace(tzinfo=timezone.utc)


def _check_signature(key: Any, algorithm: str, digest: hashes.HashAlgorithm, value: bytes, signed: bytes) -> None:
    named = RSA_WITH.get(algorithm) or ECDSA_WITH.get(algorithm)
    if named is not None and named.name != digest.name:
        raise SignatureError(f"signature algorithm {algorithm} does not match digest {digest.name}")
    try:
        if isinstance(key, rsa.RSAPublicKey) and (algorithm == RSA_PKCS1 or algorithm in RSA_WITH):
            key.verify(value, signed, padding.PKCS1v15(), digest)
        elif isinstance(key, ec.EllipticCurvePublicKey) and algorithm in ECDSA_WITH:
            key.verify(value, signed, ec.ECDSA(digest))
        else:
            raise SignatureError(f"signature algorithm {algorithm} with a {type(key).__name__} is not supported")
    except InvalidSignature:
        raise SignatureError("the signature does not verify with the signer certificate's key (forged, or the "
                             "signed attributes were altered)") from None
    except UnsupportedAlgorithm as exc:
        raise SignatureError(f"unsupported: {exc}") from None


def _check_certificate(signer: x509.Certificate, signing_time: datetime | None) -> None:
    problem = key_usage_problem(signer)
    if problem:
        raise SignatureError(problem)
    when = signing_time or datetime.now(timezone.utc)
    if not signer.not_valid_before_utc <= when <= signer.not_valid_after_utc:
        raise SignatureError(f"the signer's certificate was not valid at {when:%Y-%m-%d %H:%M:%S}Z (valid "
                             f"{signer.not_valid_before_utc:%Y-%m-%d} to {signer.not_valid_after_utc:%Y-%m-%d})")


def _identity(signer: x509.Certificate, certificates: list[x509.Certificate], signing_time: datetime | None,
              digest: str, expected: x509.Certificate | None, trusted: list[x509.Certificate] | None) -> SignatureCheck:
    result = SignatureCheck(signer=signer, subject=signer.subject.rfc4514_string() or "(empty subject)",
                            signing_time=signing_time, digest=digest, authenticated=False,
                            identity="NOT authenticated: the signature is intact, but anyone can sign with a "
                                     "certificate of their own; give --certificate or --ca-bundle to check who signed")
    if expected is not None:
        if fingerprint(expected) != fingerprint(signer):
            raise SignatureError(f"signed by {result.subject} (certificate SHA-256 {fingerprint(signer)}), not by "
                                 f"the certificate given ({fingerprint(expected)})")
        result.authenticated, result.identity = True, "the signer is the certificate given (--certificate)"
    if trusted:
        from cryptography.x509 import verification

        # A consultant's signing certificate is not a TLS certificate: CA certificates get the Web PKI rules,
        # the signer's own extensions are not held to a TLS profile (key usage was checked above).
        builder = (verification.PolicyBuilder().store(verification.Store(trusted))
                   .time(signing_time or datetime.now(timezone.utc))
                   .extension_policies(ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(),
                                       ee_policy=verification.ExtensionPolicy.permit_all()))
        intermediates = [c for c in certificates if c is not signer]
        try:
            chain = builder.build_client_verifier().verify(signer, intermediates).chain
        except verification.VerificationError as exc:
            raise SignatureError(f"the signer's certificate ({result.subject}) does not chain to the CA bundle: "
                                 f"{exc}") from None
        result.chain = [c.subject.rfc4514_string() for c in chain]
        result.authenticated = True
        result.identity = "the signer's certificate chains to the CA bundle: " + " <- ".join(result.chain)
    return result
