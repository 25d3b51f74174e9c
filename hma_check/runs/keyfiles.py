"""Read certificates and private keys (PEM, DER, PKCS #12) for signing; passphrases come from a callback, never argv."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from hma_check.errors import InputError

MAX_KEY_FILE = 1 << 20
Passphrase = Callable[[], bytes]


def _read(path: str | Path) -> bytes:
    path = Path(path)
    try:
        if path.stat().st_size > MAX_KEY_FILE:
            raise InputError("larger than any certificate or key file", path=str(path))
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror or exc}", path=str(path)) from None


def load_certificates(path: str | Path) -> list[x509.Certificate]:
    """Every certificate in a PEM bundle (first one first), or the one certificate of a DER file."""
    raw = _read(path)
    try:
        if b"-----BEGIN" in raw:
            certificates = x509.load_pem_x509_certificates(raw)
        else:
            certificates = [x509.load_der_x509_certificate(raw)]
    except ValueError:
        raise InputError("not a PEM or DER X.509 certificate", path=str(path)) from None
    return certificates


def load_private_key(path: str | Path, passphrase: Passphrase) -> Any:
    """A PEM or DER private key; ``passphrase`` is called only when the key turns out to be encrypted."""
    raw = _read(path)
    loader = serialization.load_pem_private_key if b"-----BEGIN" in raw else serialization.load_der_private_key
    try:
        return loader(raw, password=None)
    except TypeError:   # "Password was not given but private key is encrypted"
        pass
    except ValueError:
        raise InputError("not a PEM or DER private key (or an unsupported key type)", path=str(path)) from None
    try:
        return loader(raw, password=passphrase())
    except (ValueError, TypeError):
        # The message never repeats the passphrase.
        raise InputError("the key could not be decrypted with the passphrase given", path=str(path)) from None


def load_pkcs12(path: str | Path, passphrase: Passphrase) -> tuple[Any, x509.Certificate, list[x509.Certificate]]:
    """Key, certificate and chain from a .pfx/.p12 (Windows exports): an empty password is tried first."""
    raw = _read(path)
    for attempt in (None, b"", "ask"):
        password = passphrase() if attempt == "ask" else attempt
        try:
            key, certificate, chain = pkcs12.load_key_and_certificates(raw, password)
        except ValueError:
            continue
        if key is None or certificate is None:
            raise InputError("the PKCS #12 file holds no private key and certificate pair", path=str(path))
        return key, certificate, list(chain)
    raise InputError("not a PKCS #12 file, or the passphrase given does not open it", path=str(path))
