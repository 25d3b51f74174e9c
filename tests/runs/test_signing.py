"""hma-check sign and verify: a detached CMS signature over manifest.json, checked here and by OpenSSL, and forgeries."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import pki
from tests.support.common import SAMPLE, copy_of
from hma_check.runs import der
from hma_check.cli import cli
from hma_check.runs.manifest import MANIFEST_NAME, SIGNATURE_NAME
from hma_check.commands.pipeline import run_report
from hma_check.runs.signing import SignatureError, sign, verify_signature

PASSPHRASE = "correct horse battery staple"


@pytest.fixture(scope="module")
def pki_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pki")
    ca, other_ca = pki.make_ca(), pki.make_ca("Somebody Else Root CA")
    jane = pki.make_signer(ca)
    files = {"ca": folder / "ca.pem", "other_ca": folder / "other-ca.pem", "jane": jane}
    files["ca"].write_bytes(ca.certificate.public_bytes(serialization.Encoding.PEM))
    files["other_ca"].write_bytes(other_ca.certificate.public_bytes(serialization.Encoding.PEM))
    files["cert"], files["key"] = jane.write(folder, "jane", PASSPHRASE.encode())
    files["rsa_cert"], files["rsa_key"] = pki.make_signer(ca, "Raj Consultant", rsa_key=True).write(folder, "raj")
    files["mallory_cert"], files["mallory_key"] = pki.make_signer(other_ca, "Jane Consultant").write(folder, "mallory")
    files["encipher_cert"], files["encipher_key"] = pki.make_signer(ca, "No Signing", signing_usage=False).write(
        folder, "encipher")
    files["pfx"] = folder / "jane.pfx"
    files["pfx"].write_bytes(pkcs12.serialize_key_and_certificates(
        b"jane", jane.key, jane.certificate, [ca.certificate],
        serialization.BestAvailableEncryption(PASSPHRASE.encode())))
    return files


@pytest.fixture(scope="module")
def report_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("signed") / "out"
    run_report(SAMPLE, out)
    return out


@pytest.fixture()
def folder(report_folder, tmp_path):
    return copy_of(report_folder, tmp_path)


def invoke(*args, env=None):
    return CliRunner().invoke(cli, [str(a) for a in args], env=env)


def sign_jane(folder, pki_files):
    result = invoke("sign", folder, "--certificate", pki_files["cert"], "--key", pki_files["key"],
                    env={"HMA_CHECK_KEY_PASSPHRASE": PASSPHRASE})
    assert result.exit_code == 0, result.output
    return result


def test_sign_then_verify_names_the_signer_and_what_is_not_authenticated(folder, pki_files):
    signed = sign_jane(folder, pki_files)
    assert "signer: CN=Jane Consultant,O=Fabrikam Consulting" in signed.output
    assert PASSPHRASE not in signed.output
    result = invoke("verify", folder)
    assert result.exit_code == 0, result.output
    assert "signature: valid (sha256); manifest.json signed by CN=Jane Consultant,O=Fabrikam Consulting" in result.output
    assert "signer: NOT authenticated" in result.output and "not checked: revocation" in result.output


def test_the_signer_is_checked_against_a_pinned_certificate_and_a_ca_bundle(folder, pki_files):
    sign_jane(folder, pki_files)
    pinned = invoke("verify", folder, "--certificate", pki_files["cert"])
    assert pinned.exit_code == 0 and "the signer is the certificate given" in pinned.output
    chained = invoke("verify", folder, "--ca-bundle", pki_files["ca"])
    assert chained.exit_code == 0, chained.output
    assert "chains to the CA bundle: CN=Jane Consultant,O=Fabrikam Consulting <- " \
           "CN=Fabrikam Test Root CA,O=Fabrikam Consulting" in chained.output
    wrong_pin = invoke("verify", folder, "--certificate", pki_files["mallory_cert"])
    assert wrong_pin.exit_code == 3 and "not by the certificate given" in wrong_pin.output
    wrong_ca = invoke("verify", folder, "--ca-bundle", pki_files["other_ca"])
    assert wrong_ca.exit_code == 3 and "does not chain to the CA bundle" in wrong_ca.output


def test_a_forger_with_the_same_name_from_another_ca_is_caught_by_the_ca_bundle(folder, pki_files):
    """Mallory re-signs a tampered run with a certificate that has Jane's name: only the anchors tell them apart."""
    report = folder / "report.html"
    report.write_text(report.read_text(encoding="utf-8").replace("NOT READY", "READY"), encoding="utf-8")
    run_report(folder / "evidence.json", folder)   # a 'clean' folder again, with a new manifest
    result = invoke("sign", folder, "--certificate", pki_files["mallory_cert"], "--key", pki_files["mallory_key"])
    assert result.exit_code == 0
    assert invoke("verify", folder).exit_code == 0     # intact, but not authenticated: said so
    caught = invoke("verify", folder, "--ca-bundle", pki_files["ca"])
    assert caught.exit_code == 3 and "does not chain to the CA bundle" in caught.output


def test_an_edit_after_signing_fails_on_the_files_or_on_the_signature(folder, pki_files):
    sign_jane(folder, pki_files)
    (folder / "report.md").write_text("# READY\n", encoding="utf-8")
    files = invoke("verify", folder)
    assert files.exit_code == 1 and "MODIFIED report.md" in files.output
    # The forger also rewrites manifest.json to match: the signature no longer covers it.
    from hma_check.runs.manifest import build_manifest
    import json

    manifest = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
    payloads = {name: (folder / name).read_bytes() for name in manifest["files"]}
    roles = {name: entry["role"] for name, entry in manifest["files"].items()}
    (folder / MANIFEST_NAME).write_bytes(build_manifest(payloads, roles, manifest["run"]))
    forged = invoke("verify", folder)
    assert forged.exit_code == 3
    assert "manifest.json is not the file that was signed" in forged.output


def test_altered_signature_bytes_and_signed_attributes_are_rejected(folder, pki_files):
    sign_jane(folder, pki_files)
    manifest = (folder / MANIFEST_NAME).read_bytes()
    signature = (folder / SIGNATURE_NAME).read_bytes()
    last = bytearray(signature)
    last[-5] ^= 0x01   # inside the signature value at the end of the SignerInfo
    with pytest.raises(SignatureError, match="does not verify with the signer certificate's key"):
        verify_signature(manifest, bytes(last))
    signing_time = bytes.fromhex("06092a864886f70d010905")   # the signingTime attribute's OID
    at = signature.index(signing_time) + len(signing_time) + 4 + 11   # SET, UTCTime, then the seconds' last digit
    timed = bytearray(signature)
    timed[at] = ord("0") + (timed[at] - ord("0") + 1) % 10
    with pytest.raises(SignatureError, match="forged, or the signed attributes were altered"):
        verify_signature(manifest, bytes(timed))
    (folder / SIGNATURE_NAME).write_bytes(b"not a signature")
    result = invoke("verify", folder)
    assert result.exit_code == 3 and "not a well-formed DER CMS signature" in result.output


def test_a_damaged_name_in_the_embedded_certificate_is_a_signature_error_not_a_crash(folder, pki_files):
    """cryptography reads a certificate's names only when asked: the subject is read while verifying."""
    sign_jane(folder, pki_files)
    signature = bytearray((folder / SIGNATURE_NAME).read_bytes())
    signature[signature.index(b"\x0c\x0fJane Consultant")] = 0x0d   # UTF8String -> an undefined string tag
    (folder / SIGNATURE_NAME).write_bytes(bytes(signature))
    result = invoke("verify", folder)
    assert result.exit_code == 3 and "not a well-formed DER CMS signature" in result.output, result.exception


def test_a_required_signature_that_is_missing_fails(folder, pki_files):
    assert invoke("verify", folder).exit_code == 0
    assert invoke("verify", folder, "--require-signature").exit_code == 3
    missing = invoke("verify", folder, "--certificate", pki_files["cert"])
    assert missing.exit_code == 3 and "no signature" in missing.output


def test_rsa_keys_and_pkcs12_files_sign(folder, pki_files):
    rsa_signed = invoke("sign", folder, "--certificate", pki_files["rsa_cert"], "--key", pki_files["rsa_key"])
    assert rsa_signed.exit_code == 0, rsa_signed.output
    assert invoke("verify", folder, "--ca-bundle", pki_files["ca"]).exit_code == 0
    pfx = invoke("sign", folder, "--pkcs12", pki_files["pfx"], env={"HMA_CHECK_KEY_PASSPHRASE": PASSPHRASE})
    assert pfx.exit_code == 0, pfx.output
    assert invoke("verify", folder, "--certificate", pki_files["cert"]).exit_code == 0


def test_signing_refuses_bad_keys_and_tampered_folders(folder, pki_files):
    wrong = invoke("sign", folder, "--certificate", pki_files["cert"], "--key", pki_files["key"],
                   env={"HMA_CHECK_KEY_PASSPHRASE": "wrong " + PASSPHRASE})
    assert wrong.exit_code == 2 and "could not be decrypted with the passphrase" in wrong.output
    assert "wrong " + PASSPHRASE not in wrong.output
    unattended = invoke("sign", folder, "--certificate", pki_files["cert"], "--key", pki_files["key"])
    assert unattended.exit_code == 2 and "set HMA_CHECK_KEY_PASSPHRASE" in unattended.output
    mismatch = invoke("sign", folder, "--certificate", pki_files["rsa_cert"], "--key", pki_files["mallory_key"])
    assert mismatch.exit_code == 2 and "does not belong to the certificate" in mismatch.output
    no_signing = invoke("sign", folder, "--certificate", pki_files["encipher_cert"], "--key",
                        pki_files["encipher_key"])
    assert no_signing.exit_code == 2 and "key usage allows neither" in no_signing.output
    assert invoke("sign", folder, "--certificate", pki_files["cert"]).exit_code == 2   # no key
    (folder / "junit.xml").unlink()
    (folder / "notes\nSIGNED OK.txt").write_text("x", encoding="utf-8")
    tampered = invoke("sign", folder, "--pkcs12", pki_files["pfx"], env={"HMA_CHECK_KEY_PASSPHRASE": PASSPHRASE})
    assert tampered.exit_code == 1 and "MISSING" in tampered.output and not (folder / SIGNATURE_NAME).exists()
    assert "ADDED notes SIGNED OK.txt" in tampered.output, "a file name cannot start a line of its own"


def test_an_expired_signer_certificate_is_rejected():
    ca = pki.make_ca()
    old = pki.make_signer(ca, days=(-400, -10))
    signature = sign(b"{}", old.certificate, old.key)
    with pytest.raises(SignatureError, match="was not valid at"):
        verify_signature(b"{}", signature)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl command is not installed")
def test_openssl_and_hma_check_accept_each_others_signatures(folder, pki_files, tmp_path):
    """Interoperability: OpenSSL's CMS verifier accepts our signature, and ours accepts one OpenSSL made."""
    sign_jane(folder, pki_files)
    subprocess.run(["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", folder / SIGNATURE_NAME,
                    "-content", folder / MANIFEST_NAME, "-CAfile", pki_files["ca"], "-purpose", "any",
                    "-out", tmp_path / "content"], check=True, capture_output=True)
    assert (tmp_path / "content").read_bytes() == (folder / MANIFEST_NAME).read_bytes()
    subprocess.run(["openssl", "cms", "-sign", "-binary", "-md", "sha256", "-in", folder / MANIFEST_NAME,
                    "-signer", pki_files["rsa_cert"], "-inkey", pki_files["rsa_key"], "-outform", "DER",
                    "-out", folder / SIGNATURE_NAME], check=True, capture_output=True)
    result = invoke("verify", folder, "--ca-bundle", pki_files["ca"])
    assert result.exit_code == 0, result.output
    assert "signed by CN=Raj Consultant,O=Fabrikam Consulting" in result.output


@pytest.fixture(scope="module")
def signed_sample(pki_files):
    jane = pki_files["jane"]
    return sign(b'{"manifest": 1}\n', jane.certificate, jane.key)


def _unchecked_and_certificate_bytes(signature: bytes) -> tuple[list[range], range]:
    """Where a changed byte may leave the signature valid: fields verification does not read (SignedData's version
    and digestAlgorithms, the SignerInfo version, the algorithms' NULL parameters), and the embedded certificates,
    which only --certificate or --ca-bundle authenticate."""
    signed_data = der.parse(signature).children()[1].children()[0]
    version, digest_algorithms, _content, certificates, signer_infos = signed_data.children()
    info = signer_infos.children()[0].children()
    unchecked = [range(version.start, digest_algorithms.end), range(info[0].start, info[0].end),
                 *(range(p.start, p.end) for algorithm in (info[2], info[-2]) for p in algorithm.children()[1:])]
    return unchecked, range(certificates.start, certificates.end)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_damaged_signature_is_only_ever_a_signature_error(signed_sample, pki_files, data):
    """Truncation, byte flips and insertions anywhere: a clear SignatureError, never a crash or a pass."""
    raw = bytearray(signed_sample)
    position = data.draw(st.integers(0, len(raw) - 1))
    action = data.draw(st.sampled_from(["flip", "truncate", "insert"]))
    if action == "flip":
        raw[position] ^= data.draw(st.integers(1, 255))
    elif action == "truncate":
        del raw[position:]
    else:
        raw[position:position] = data.draw(st.binary(min_size=1, max_size=4))
    try:
        verify_signature(b'{"manifest": 1}\n', bytes(raw))
    except SignatureError:
        return
    # A change that survives changed nothing verification reads, or the embedded certificate: pinning catches that.
    assert action == "flip", action
    unchecked, certificates = _unchecked_and_certificate_bytes(signed_sample)
    if position in certificates:
        with pytest.raises(SignatureError, match="not by the certificate given"):
            verify_signature(b'{"manifest": 1}\n', bytes(raw), expected=pki_files["jane"].certificate)
    else:
        assert any(position in part for part in unchecked), f"a flip at byte {position} went unnoticed"


def test_an_embedded_certificate_with_a_negative_serial_is_refused_without_a_warning(signed_sample, recwarn):
    """RFC 5280 serial numbers are positive; cryptography only warns (on stderr) about one that is not, and will
    refuse it in later releases: verify refuses it now, as an unreadable certificate, and prints nothing."""
    signed_data = der.parse(signed_sample).children()[1].children()[0]
    certificate = signed_data.children()[3].children()[0]
    serial = certificate.children()[0].children()[1]          # TBSCertificate: [0] version, then serialNumber
    assert serial.tag == der.INTEGER
    raw = bytearray(signed_sample)
    raw[serial.body] |= 0x80                                    # the same bytes, read as a negative number
    with pytest.raises(SignatureError, match=f"the certificate at byte {certificate.start} is not readable"):
        verify_signature(b'{"manifest": 1}\n', bytes(raw))
    assert not recwarn.list


def test_object_identifiers_are_read_strictly():
    assert der.oid(der.parse(bytes.fromhex("0609608648016503040201"))) == "2.16.840.1.101.3.4.2.1"   # SHA-256
    for damaged in ("060a60864801650304020181",      # ends inside a subidentifier
                    "060a6080864801650304020101"):   # a subidentifier padded with 0x80
        with pytest.raises(der.DerError):
            der.oid(der.parse(bytes.fromhex(damaged)))
