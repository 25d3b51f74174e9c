"""Type names to sources, the contract's data shapes, and certificates decoded from RawData."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hma_check.collect.certificates import CertificateError, certificate_from_der
from hma_check.collect.clixml import ClixmlObject, parse_clixml
from hma_check.collect.exchange.objects import FIELDS, SINGLE_OBJECT, SOURCE_BY_TYPE, ShapeError, shape, source_for
from hma_check.contract.sources import BY_NAME, SOURCES
from tests.support.offline_fixtures import e19_dir, realdata_dir

HCX = "Diagnostics/HealthChecker/DataCollection/ExchangeInformation/Tests/DataCollection"


def load(path):
    return parse_clixml(path.read_bytes(), source=str(path))


def test_fields_follow_the_contract():
    for name, fields in FIELDS.items():
        spec_shape = BY_NAME[name].shape
        for field in fields:
            assert re.search(rf"\b{re.escape(field)}\b", spec_shape), f"{name}.{field} is not in the contract"
        assert (name in SINGLE_OBJECT) != spec_shape.startswith("list of"), name
    exchange_and_os = {s.name for s in SOURCES if s.collector in ("exchange", "os")}
    assert exchange_and_os == set(FIELDS) | {"exchange.exchange_certificates"}
    assert set(SOURCE_BY_TYPE.values()) == exchange_and_os


def test_e19_set_shapes_to_the_contract():
    servers = shape("exchange.servers", load(e19_dir() / "Exchange/GetExchangeServer.xml"))
    assert servers == [{"Name": "SOLO-E19A", "Fqdn": "Solo-E19A.Solo.com", "AdminDisplayVersion": "Version 15.2 (Build 986.5)",
                        "ServerRole": "Mailbox", "Site": "Solo.com/Configuration/Sites/Default-First-Site-Name",
                        "Edition": "StandardEvaluation", "IsEdgeServer": False, "IsClientAccessServer": True,
                        "IsMailboxServer": True, "InternetWebProxy": None}]
    org = shape("exchange.organization_config", load(e19_dir() / "Exchange/GetOrganizationConfig.xml"))
    assert org["OAuth2ClientProfileEnabled"] is False and org["DefaultAuthenticationPolicy"] == "OrgWideDefault"
    ews, = shape("exchange.web_services_virtual_directories",
                 load(e19_dir() / "Exchange/GetWebServicesVirtualDirectory.xml"))
    assert ews["OAuthAuthentication"] is True and "OAuth" in ews["InternalAuthenticationMethods"]
    assert set(ews) == set(FIELDS["exchange.web_services_virtual_directories"])
    auth = shape("exchange.auth_config", load(e19_dir() / "Exchange/GetAuthConfig.xml"))
    certificates = shape("exchange.exchange_certificates", load(e19_dir() / "Exchange/GetExchangeCertificate.xml"))
    current, = [c for c in certificates if c["Thumbprint"] == auth["CurrentCertificateThumbprint"]]
    assert current["NotAfter"] == "2024-11-06T22:47:32Z" and current["NotBefore"] == "2019-12-03T22:47:32Z"
    assert current["Subject"] == current["Issuer"] == "CN=Microsoft Exchange Server Auth Certificate"
    assert current["IsSelfSigned"] is True and current["SignatureAlgorithm"] == "sha1RSA"
    assert current["PublicKeySize"] == 2048 and len(certificates) == 3
    assert shape("os.exsetup_version", load(e19_dir() / "Exchange/ExSetup.xml")) == {
        "FileVersion": "15.02.0986.005", "Path": "C:\\Program Files\\Microsoft\\Exchange Server\\V15\\bin\\ExSetup.exe"}


def test_hcx_certificates_match_upstream_pester_expectations():
    certificates = shape("exchange.exchange_certificates", load(realdata_dir() / HCX / "GetExchangeCertificate.xml"))
    assert certificates[0]["Thumbprint"] == "2D10A746D6BB8D795F1679AEBD89D5D2AE583CB7"
    assert certificates[0]["SignatureAlgorithm"] == "sha1RSA" and certificates[0]["PublicKeySize"] == 2048
    assert certificates[1]["Thumbprint"].startswith("611C687D") and len(certificates[1]["DnsNameList"]) == 2
    assert certificates[3]["Thumbprint"].startswith("3341CEAF") and certificates[3]["SignatureAlgorithm"] == "sha256RSA"


def test_single_object_sources():
    assert shape("exchange.hybrid_configuration", []) is None
    with pytest.raises(ShapeError, match="no object came back"):
        shape("exchange.organization_config", [])
    org = load(e19_dir() / "Exchange/GetOrganizationConfig.xml")
    with pytest.raises(ShapeError, match="2 objects"):
        shape("exchange.organization_config", org + org)
    with pytest.raises(ShapeError, match="not an Exchange or OS source"):
        shape("graph.users", [])


def test_absent_properties_are_left_out_never_defaulted():
    partial = ClixmlObject(("x",), None, {"Name": "EvoSts - 1", "Enabled": True})
    assert shape("exchange.auth_servers", [partial]) == [{"Name": "EvoSts - 1", "Enabled": True}]


def test_recognition_by_type_name_with_prefixes():
    selected = ClixmlObject(("Selected.Microsoft.Exchange.Data.Directory.Management.Mailbox",
                             "System.Management.Automation.PSCustomObject"), None, {})
    assert source_for(selected) == "exchange.mailboxes"
    assert source_for(ClixmlObject(("System.Management.Automation.PSCustomObject",), None, {})) is None
    remote, _ = load(realdata_dir() / HCX / "GetSettingOverridePSSigningMultipleOverrides.xml")
    assert source_for(remote) == "exchange.setting_overrides"


def test_auth_certificate_record_from_the_script():
    missing = ClixmlObject(("HmaCheck.AuthCertificate",), None, {"Thumbprint": "AB", "InStore": False})
    assert shape("os.auth_certificate", [missing]) is None
    found = ClixmlObject(("HmaCheck.AuthCertificate",), None,
                         {"Thumbprint": "AB", "Subject": "CN=x", "NotAfter": "2030-01-01T00:00:00Z",
                          "HasPrivateKey": True, "InStore": True})
    assert shape("os.auth_certificate", [found]) == {"Thumbprint": "AB", "Subject": "CN=x",
                                                      "NotAfter": "2030-01-01T00:00:00Z", "HasPrivateKey": True}


def test_trustme_server_certificate():
    ca = trustme.CA()
    leaf = ca.issue_cert("mail.contoso.com", "autodiscover.contoso.com")
    der = x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes()).public_bytes(serialization.Encoding.DER)
    record = certificate_from_der(der)
    assert record["DnsNameList"] == ["mail.contoso.com", "autodiscover.contoso.com"]
    assert record["IsSelfSigned"] is False and record["HasServerAuthEku"] is True
    assert base64.b64decode(record["RawData"]) == der
    assert record["Thumbprint"] == hashlib.sha1(der).hexdigest().upper()  # noqa: S324 - what Windows calls it


def test_ec_certificate_without_san_or_server_auth():
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "US"), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Contoso"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "legacy.contoso.com")])
    now = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(0x0ABC).not_valid_before(now).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(key, hashes.SHA256()))
    record = certificate_from_der(cert.public_bytes(serialization.Encoding.DER))
    assert record["Subject"] == "CN=legacy.contoso.com, O=Contoso, C=US"  # most specific first, as Windows prints it
    assert record["DnsNameList"] == ["legacy.contoso.com"] and record["HasServerAuthEku"] is False
    assert record["SignatureAlgorithm"] == "sha256ECDSA" and record["PublicKeySize"] == 256
    assert record["SerialNumber"] == "0ABC" and record["NotAfter"] == "2025-01-31T00:00:00Z"


def test_garbage_raw_data():
    with pytest.raises(CertificateError, match="not a DER X.509 certificate"):
        certificate_from_der(b"\x30\x03\x02\x01\x00")
    bad = ClixmlObject(("x",), "cert", {"RawData": "AAEC"})
    with pytest.raises(ShapeError, match="not a DER"):
        shape("exchange.exchange_certificates", [bad])
    with pytest.raises(ShapeError, match="no RawData"):
        shape("exchange.exchange_certificates", [ClixmlObject(("x",), "cert", {})])
