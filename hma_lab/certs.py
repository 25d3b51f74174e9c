"""Certificates generated when the lab starts, from a scenario's subject, SANs, issuer and validity."""

from __future__ import annotations

import functools
import hashlib
import threading
from dataclasses import dataclass
from datetime import datetime, timezone

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from hma_lab.scenario import CertificateSpec, ServerSpec, _template

_HASHES = {"sha1": hashes.SHA1, "sha256": hashes.SHA256, "sha384": hashes.SHA384}


@functools.lru_cache(maxsize=8)
def _key(size: int) -> rsa.RSAPrivateKey:
    # One key per size for the whole process: RSA generation costs ~50 ms, and a lab with 200 servers needs
    # hundreds of certificates. The lab's certificates are test material, never trusted anywhere else.
    return rsa.generate_private_key(public_exponent=65537, key_size=size)


@dataclass(frozen=True)
class Issued:
    der: bytes
    thumbprint: str
    subject: str
    issuer: str
    not_before: datetime
    not_after: datetime

    def to_string(self) -> str:
        """Exchange's ExchangeCertificate.ToString(): the X509Certificate2 block with CRLF line breaks."""
        def stamp(moment: datetime) -> str:
            return moment.astimezone(timezone.utc).strftime("%m/%d/%Y %H:%M:%S")
        serial = format(x509.load_der_x509_certificate(self.der).serial_number, "X")
        return ("[Subject]\r\n  " + self.subject + "\r\n\r\n[Issuer]\r\n  " + self.issuer + "\r\n\r\n[Serial Number]\r\n  "
                + serial + "\r\n\r\n[Not Before]\r\n  " + stamp(self.not_before) + "\r\n\r\n[Not After]\r\n  "
                + stamp(self.not_after) + "\r\n\r\n[Thumbprint]\r\n  " + self.thumbprint + "\r\n")


def _name(dn: str) -> x509.Name:
    # Scenario subjects are written most-specific first ("CN=mail.contoso.com, O=Contoso"), as Windows shows them;
    # RFC 4514 strings list the same attributes in reverse order.
    parts = [part.strip() for part in dn.split(",") if part.strip()]
    return x509.Name.from_rfc4514_string(",".join(reversed(parts)))


class CertificateStore:
    """Issues each certificate once (per server for templated subjects) and remembers it."""

    def __init__(self, specs: dict[str, CertificateSpec]) -> None:
        self.specs = specs
        self._issued: dict[tuple[str, str], Issued] = {}
        self._cas: dict[str, tuple[x509.Certificate, rsa.RSAPrivateKey]] = {}
        self._lock = threading.Lock()

    def get(self, cert_id: str, server: ServerSpec | None = None) -> Issued:
        spec = self.specs[cert_id]
        scope = server.name if (spec.per_server and server is not None) else ""
        with self._lock:
            if (cert_id, scope) not in self._issued:
                self._issued[(cert_id, scope)] = self._issue(spec, server if scope else None)
            return self._issued[(cert_id, scope)]

    def _ca(self, issuer: str) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
        if issuer not in self._cas:
            key = _key(2048)
            now = datetime.now(timezone.utc)
            name = _name(issuer)
            cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                    .serial_number(x509.random_serial_number())
                    .not_valid_before(now.replace(year=now.year - 5)).not_valid_after(now.replace(year=now.year + 10))
                    .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                    .sign(key, hashes.SHA256()))
            self._cas[issuer] = (cert, key)
        return self._cas[issuer]

    def _issue(self, spec: CertificateSpec, server: ServerSpec | None) -> Issued:
        values = {"name": server.name, "fqdn": server.fqdn} if server else {}
        subject_text = _template(spec.subject, values)
        sans = [_template(name, values) for name in spec.sans]
        key = _key(spec.key_size)
        subject = _name(subject_text)
        if spec.issuer:
            ca_cert, signing_key = self._ca(spec.issuer)
            issuer_name = ca_cert.subject
        else:
            signing_key, issuer_name = key, subject
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(spec.not_before).not_valid_after(spec.not_after))
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in sans]),
                                            critical=False)
        if spec.server_auth:
            builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        cert = builder.sign(signing_key, _HASHES[spec.signature_hash]())
        der = cert.public_bytes(serialization.Encoding.DER)
        issuer_text = subject_text if not spec.issuer else spec.issuer
        return Issued(der=der, thumbprint=hashlib.sha1(der).hexdigest().upper(), subject=subject_text,
                      issuer=issuer_text, not_before=spec.not_before, not_after=spec.not_after)
