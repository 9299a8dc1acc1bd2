"""A throw-away PKI for TLS tests: a CA, certificates it issues, and self-signed ones.

    pki = TestPki(tmp_path / "pki")
    ca = pki.ca("Phone Vendor Factory CA")
    phone = ca.issue("phone-0004f2aabbcc")      # phone.certificate, phone.key, phone.combined
    rogue = pki.self_signed("rogue")
    server = ca.issue("gateway", hosts=["127.0.0.1", "localhost"])
    crl = ca.crl(tmp_path / "vendor.crl", revoked=[phone])   # a CRL revoking the phone
    phone = ca.issue("phone", ocsp_url="http://127.0.0.1:8080/")  # names an OCSP responder
    responder = ca.responder("vendor OCSP")     # a delegated responder (id-kp-OCSPSigning)
    ca.ocsp_index(tmp_path / "index.txt", good=[phone], revoked=[])  # for `openssl ocsp`

Keys are ECDSA P-256 unless ``rsa=True`` (some peers, and RSA-only cipher suites, need RSA).
Every certificate is written as PEM next to its key, plus ``NAME.pem`` holding key and
certificate together (baresip and stunnel read that), with the key file mode 0600.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
from collections.abc import Sequence
from pathlib import Path

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
_CLIENT_AUTH = ExtendedKeyUsageOID.CLIENT_AUTH


@attrs.frozen
class Issued:
    """A certificate and its key on disk."""

    name: str
    certificate: Path
    key: Path
    #: Key then certificate in one PEM file.
    combined: Path
    x509: x509.Certificate = attrs.field(eq=False, repr=False)

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the DER certificate, lowercase hex without colons."""
        return hashlib.sha256(self.x509.public_bytes(serialization.Encoding.DER)).hexdigest()

    @property
    def subject(self) -> str:
        return self.x509.subject.rfc4514_string()


def _new_key(rsa_key: bool) -> PrivateKey:
    if rsa_key:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def _alt_names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        if host.startswith(("sip:", "sips:")):
            names.append(x509.UniformResourceIdentifier(host))
            continue
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


class TestPki:
    """Writes certificates into ``directory``; names must be unique within one PKI."""

    __test__ = False  # not a pytest test class

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.now = datetime.datetime.now(datetime.UTC)

    def ca(self, common_name: str, *, rsa_key: bool = False, crl_sign: bool = True) -> TestCa:
        """A new self-signed CA (``crl_sign=False``: its keyUsage lacks cRLSign)."""
        key = _new_key(rsa_key)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        certificate = (
            self._builder(name, name, key.public_key(), days=30)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=crl_sign,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        issued = self._write(_file_name(common_name), certificate, key)
        return TestCa(self, issued, key)

    def self_signed(
        self, common_name: str, *, hosts: Sequence[str] = ("127.0.0.1",), rsa_key: bool = False
    ) -> Issued:
        """A self-signed end-entity certificate (a phone or server nobody vouches for)."""
        key = _new_key(rsa_key)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        certificate = self._leaf(name, name, key.public_key(), hosts).sign(key, hashes.SHA256())
        return self._write(_file_name(common_name), certificate, key)

    # -- internals ---------------------------------------------------------------------------

    def _builder(
        self,
        subject: x509.Name,
        issuer: x509.Name,
        public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
        *,
        days: int,
        not_before: datetime.datetime | None = None,
    ) -> x509.CertificateBuilder:
        start = not_before or self.now - datetime.timedelta(hours=1)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + datetime.timedelta(days=days))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        )

    def _leaf(
        self,
        subject: x509.Name,
        issuer: x509.Name,
        public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
        hosts: Sequence[str],
        *,
        days: int = 30,
        not_before: datetime.datetime | None = None,
    ) -> x509.CertificateBuilder:
        builder = self._builder(subject, issuer, public_key, days=days, not_before=not_before)
        builder = builder.add_extension(
            x509.BasicConstraints(ca=False, path_length=None), critical=True
        ).add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, _CLIENT_AUTH]), critical=False
        )
        if hosts:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(_alt_names(hosts)), critical=False
            )
        return builder

    def _write(self, stem: str, certificate: x509.Certificate, key: PrivateKey) -> Issued:
        cert_pem = certificate.public_bytes(serialization.Encoding.PEM)
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        cert_path = self.directory / f"{stem}.crt"
        key_path = self.directory / f"{stem}.key"
        combined = self.directory / f"{stem}.pem"
        for path in (cert_path, key_path, combined):
            if path.exists():
                raise FileExistsError(f"{path}: names in one TestPki must be unique")
        cert_path.write_bytes(cert_pem)
        _write_private(key_path, key_pem)
        _write_private(combined, key_pem + cert_pem)
        return Issued(stem, cert_path, key_path, combined, certificate)


class TestCa:
    """A CA of a :class:`TestPki` that issues end-entity certificates."""

    __test__ = False

    def __init__(self, pki: TestPki, issued: Issued, key: PrivateKey) -> None:
        self.pki = pki
        self.issued = issued
        self._key = key

    @property
    def private_key(self) -> PrivateKey:
        """The CA's key (tests that sign OCSP responses or forge its signatures need it)."""
        return self._key

    @property
    def certificate(self) -> Path:
        """The CA certificate (PEM): what a peer loads as its trust anchor."""
        return self.issued.certificate

    def issue(
        self,
        common_name: str,
        *,
        hosts: Sequence[str] = ("127.0.0.1", "localhost"),
        rsa_key: bool = False,
        days: int = 30,
        not_before: datetime.datetime | None = None,
        ocsp_url: str | None = None,
        crl_url: str | None = None,
    ) -> Issued:
        """An end-entity certificate signed by this CA, usable as TLS server and client, with
        ``hosts`` (IPs, DNS names, ``sip:`` URIs) as subjectAltName (none when empty) and
        ``ocsp_url`` as its Authority Information Access id-ad-ocsp (RFC 5280 §4.2.2.1) and
        ``crl_url`` as its CRL Distribution Point (RFC 5280 §4.2.1.13)."""
        key = _new_key(rsa_key)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        builder = self.pki._leaf(
            subject,
            self.issued.x509.subject,
            key.public_key(),
            hosts,
            days=days,
            not_before=not_before,
        )
        if ocsp_url is not None:
            access = x509.AccessDescription(
                AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(ocsp_url)
            )
            builder = builder.add_extension(
                x509.AuthorityInformationAccess([access]), critical=False
            )
        if crl_url is not None:
            point = x509.DistributionPoint(
                full_name=[x509.UniformResourceIdentifier(crl_url)],
                relative_name=None,
                reasons=None,
                crl_issuer=None,
            )
            builder = builder.add_extension(x509.CRLDistributionPoints([point]), critical=False)
        return self.pki._write(_file_name(common_name), self._sign(builder), key)

    def responder(self, common_name: str, *, ocsp_signing: bool = True) -> Issued:
        """A certificate this CA delegates OCSP signing to (RFC 6960 §4.2.2.2): its
        extendedKeyUsage is id-kp-OCSPSigning (``ocsp_signing=False``: serverAuth instead, a
        certificate that must not be taken as a responder's)."""
        key = _new_key(False)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        usage = (
            ExtendedKeyUsageOID.OCSP_SIGNING if ocsp_signing else ExtendedKeyUsageOID.SERVER_AUTH
        )
        builder = (
            self.pki._builder(subject, self.issued.x509.subject, key.public_key(), days=30)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        return self.pki._write(_file_name(common_name), self._sign(builder), key)

    def _sign(self, builder: x509.CertificateBuilder) -> x509.Certificate:
        # RFC 5280 §4.2.1.1: a certificate names the key that signed it (only a self-signed one
        # may leave it out). OpenSSL's X509_STRICT checks it, and Python 3.13's
        # ssl.create_default_context sets that flag: without it every chain these CAs issue
        # fails to verify there (CERTIFICATE_VERIFY_FAILED).
        authority = x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key())
        return builder.add_extension(authority, critical=False).sign(self._key, hashes.SHA256())

    def ocsp_index(
        self, path: Path, *, good: Sequence[Issued] = (), revoked: Sequence[Issued] = ()
    ) -> Path:
        """Write an ``openssl ca`` index file (what ``openssl ocsp -index`` answers from) with
        ``good`` valid and ``revoked`` revoked an hour ago; certificates not listed are
        "unknown" to the responder. Replaces ``path``."""

        def stamp(when: datetime.datetime) -> str:
            return when.strftime("%y%m%d%H%M%SZ")

        def serial(issued: Issued) -> str:
            text = f"{issued.x509.serial_number:X}"
            return text if len(text) % 2 == 0 else "0" + text

        def subject(issued: Issued) -> str:
            return "".join(f"/{a.rfc4514_attribute_name}={a.value}" for a in issued.x509.subject)

        revoked_at = stamp(self.pki.now - datetime.timedelta(hours=1))
        lines = []
        for issued in good:
            expiry = stamp(issued.x509.not_valid_after_utc)
            lines.append(f"V\t{expiry}\t\t{serial(issued)}\tunknown\t{subject(issued)}\n")
        for issued in revoked:
            expiry = stamp(issued.x509.not_valid_after_utc)
            lines.append(
                f"R\t{expiry}\t{revoked_at}\t{serial(issued)}\tunknown\t{subject(issued)}\n"
            )
        path.write_text("".join(lines))
        return path

    def crl(
        self,
        path: Path,
        *,
        revoked: Sequence[Issued] = (),
        this_update: datetime.datetime | None = None,
        next_update: datetime.timedelta = datetime.timedelta(days=7),
        der: bool = False,
        delta: bool = False,
        only_ca_certificates: bool = False,
        number: int = 1,
    ) -> Path:
        """Write this CA's CRL listing ``revoked`` to ``path`` (replacing it), PEM unless
        ``der``; thisUpdate an hour ago unless given, nextUpdate ``next_update`` after it
        (negative: an expired CRL). ``delta``: a delta CRL (RFC 5280 §5.2.4);
        ``only_ca_certificates``: scoped to CA certificates (RFC 5280 §5.2.5); ``number``: its
        cRLNumber (RFC 5280 §5.2.3)."""
        start = this_update or self.pki.now - datetime.timedelta(hours=1)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.issued.x509.subject)
            .last_update(start)
            .next_update(start + next_update)
            .add_extension(x509.CRLNumber(number), critical=False)
        )
        if delta:
            builder = builder.add_extension(x509.DeltaCRLIndicator(1), critical=True)
        if only_ca_certificates:
            scope = x509.IssuingDistributionPoint(
                full_name=None,
                relative_name=None,
                only_contains_user_certs=False,
                only_contains_ca_certs=True,
                only_some_reasons=None,
                indirect_crl=False,
                only_contains_attribute_certs=False,
            )
            builder = builder.add_extension(scope, critical=True)
        for issued in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(issued.x509.serial_number)
                .revocation_date(start)
                .build()
            )
        crl = builder.sign(self._key, hashes.SHA256())
        encoding = serialization.Encoding.DER if der else serialization.Encoding.PEM
        path.write_bytes(crl.public_bytes(encoding))
        return path


def _file_name(common_name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in common_name)


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
