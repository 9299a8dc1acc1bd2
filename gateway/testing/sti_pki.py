"""A throw-away STIR/SHAKEN PKI for tests: an STI-PA-like root, an intermediate and a signer
certificate with the TNAuthList extension (RFC 8226 §9), all P-256, made with ``cryptography``;
optionally with the CRL Distribution Points extension ATIS-1000080 §6.4.1 puts in intermediate
and end-entity certificates, and the STI-PA's CRL itself. Also PASSporTs made independently of
the plugin's signer, for verification tests."""

from __future__ import annotations

import base64
import datetime
import json
import time
from pathlib import Path
from typing import Any

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID, ObjectIdentifier

TN_AUTH_LIST = ObjectIdentifier("1.3.6.1.5.5.7.1.26")
# TNAuthorizationList with one ServiceProviderCode "1234": SEQUENCE { [0] EXPLICIT IA5String }.
TN_AUTH_LIST_DER = bytes.fromhex("3008a006160431323334")


@attrs.frozen
class StiPki:
    root: x509.Certificate
    intermediate: x509.Certificate
    signer: x509.Certificate
    signer_key: ec.EllipticCurvePrivateKey
    root_key: ec.EllipticCurvePrivateKey | None = None
    intermediate_key: ec.EllipticCurvePrivateKey | None = None

    def crl(
        self,
        revoked: tuple[x509.Certificate | int, ...] = (),
        *,
        now: float | None = None,
        next_update: float = 86400.0,
        signer: str = "root",
        pem: bool = False,
    ) -> bytes:
        """The STI-PA's CRL (RFC 5280 §5) listing ``revoked`` (certificates, or serial numbers
        of others'), issued a minute before ``now``
        (default: the wall clock) with its nextUpdate ``next_update`` seconds after ``now``
        (negative: an expired CRL), signed by the root (as the STI-PA signs its one CRL) or by
        ``"intermediate"``; DER, or PEM."""
        issuer, key = (
            (self.root, self.root_key)
            if signer == "root"
            else (self.intermediate, self.intermediate_key)
        )
        assert key is not None, "make_pki() keeps the CA keys"
        at = datetime.datetime.fromtimestamp(time.time() if now is None else now, datetime.UTC)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(issuer.subject)
            .last_update(at - datetime.timedelta(minutes=1))
            .next_update(at + datetime.timedelta(seconds=next_update))
        )
        for certificate in revoked:
            serial = certificate if isinstance(certificate, int) else certificate.serial_number
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(serial)
                .revocation_date(at - datetime.timedelta(minutes=2))
                .build()
            )
        crl = builder.sign(key, hashes.SHA256())
        return crl.public_bytes(serialization.Encoding.PEM if pem else serialization.Encoding.DER)

    def with_new_signer(self, *, now: float | None = None, days: int = 30) -> StiPki:
        """The same root and intermediate with a new signer key and certificate (the same
        subject, another serial number): a carrier rotating its key under the same x5u URL."""
        assert self.intermediate_key is not None, "make_pki() keeps the CA keys"
        key = ec.generate_private_key(ec.SECP256R1())
        start = (
            datetime.datetime.now(datetime.UTC)
            if now is None
            else datetime.datetime.fromtimestamp(now, datetime.UTC)
        ) - datetime.timedelta(days=1)
        crl_url = None  # the CRL the old certificate named, if any
        try:
            points = self.signer.extensions.get_extension_for_class(x509.CRLDistributionPoints)
        except x509.ExtensionNotFound:
            pass
        else:
            crl_url = points.value[0].full_name[0].value if points.value[0].full_name else None
        signer = _certificate(
            "Test SHAKEN signer", key, "Test STI-CA", self.intermediate_key,
            ca=False, tn_auth_list=True, not_before=start, days=days, crl_url=crl_url,
        )  # fmt: skip
        return attrs.evolve(self, signer=signer, signer_key=key)

    def chain_pem(self) -> bytes:
        """What an x5u URL serves: the signer's certificate, then the intermediate."""
        return b"".join(
            c.public_bytes(serialization.Encoding.PEM) for c in (self.signer, self.intermediate)
        )

    def root_pem(self) -> bytes:
        return self.root.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.signer_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def write(self, directory: Path) -> tuple[Path, Path, Path]:
        """(trust anchors, signer key, x5u chain) files in ``directory``."""
        anchors, key, chain = (
            directory / "roots.pem",
            directory / "signer.key",
            directory / "x5u.pem",
        )
        anchors.write_bytes(self.root_pem())
        key.write_bytes(self.key_pem())
        key.chmod(0o600)
        chain.write_bytes(self.chain_pem())
        return anchors, key, chain


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: str,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
    tn_auth_list: bool,
    not_before: datetime.datetime,
    days: int,
    crl_url: str | None = None,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if tn_auth_list:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(TN_AUTH_LIST, TN_AUTH_LIST_DER), critical=False
        )
    if crl_url is not None:
        # ATIS-1000080 §6.4.1: one DistributionPoint, the STI-PA's CRL URL and, as cRLIssuer,
        # the DN of the CRL's issuer (here the root, which signs it).
        point = x509.DistributionPoint(
            full_name=[x509.UniformResourceIdentifier(crl_url)],
            relative_name=None,
            reasons=None,
            crl_issuer=[x509.DirectoryName(_name("Test STI-PA Root"))],
        )
        builder = builder.add_extension(x509.CRLDistributionPoints([point]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_pki(
    *,
    tn_auth_list: bool = True,
    now: float | None = None,
    days: int = 30,
    crl_url: str | None = None,
    signer_names_crl: bool = True,
) -> StiPki:
    """A root, an intermediate under it and a signer under that, valid from a day before
    ``now`` (default: the wall clock) for ``days``; with ``crl_url``, the intermediate and the
    signer name it as their CRL Distribution Point (the root does not: ATIS-1000080 §6.4.1),
    the signer only with ``signer_names_crl`` (without: a certificate from before ATIS-1000080
    v3 required it)."""
    start = (
        datetime.datetime.now(datetime.UTC)
        if now is None
        else datetime.datetime.fromtimestamp(now, datetime.UTC)
    ) - datetime.timedelta(days=1)
    root_key = ec.generate_private_key(ec.SECP256R1())
    middle_key = ec.generate_private_key(ec.SECP256R1())
    signer_key = ec.generate_private_key(ec.SECP256R1())
    root = _certificate(
        "Test STI-PA Root", root_key, "Test STI-PA Root", root_key,
        ca=True, tn_auth_list=False, not_before=start, days=days,
    )  # fmt: skip
    middle = _certificate(
        "Test STI-CA", middle_key, "Test STI-PA Root", root_key,
        ca=True, tn_auth_list=False, not_before=start, days=days, crl_url=crl_url,
    )  # fmt: skip
    signer = _certificate(
        "Test SHAKEN signer", signer_key, "Test STI-CA", middle_key,
        ca=False, tn_auth_list=tn_auth_list, not_before=start, days=days,
        crl_url=crl_url if signer_names_crl else None,
    )  # fmt: skip
    return StiPki(
        root=root,
        intermediate=middle,
        signer=signer,
        signer_key=signer_key,
        root_key=root_key,
        intermediate_key=middle_key,
    )


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def make_identity(
    key: ec.EllipticCurvePrivateKey,
    x5u: str,
    *,
    orig: str,
    dest: str,
    iat: int,
    attest: str = "A",
    origid: str = "0b8b4b7c-9f5e-4f39-9a52-5e0c5c2b6d3a",
    header: dict[str, Any] | None = None,
) -> str:
    """An Identity header value made from scratch (json + base64 + cryptography), not with the
    plugin's code: what a carrier's signer would send."""
    jose = header or {"alg": "ES256", "ppt": "shaken", "typ": "passport", "x5u": x5u}
    claims = {
        "attest": attest,
        "dest": {"tn": [dest]},
        "iat": iat,
        "orig": {"tn": orig},
        "origid": origid,
    }
    encoded = ".".join(
        _b64url(json.dumps(part, separators=(",", ":"), sort_keys=True).encode())
        for part in (jose, claims)
    )
    r, s = decode_dss_signature(key.sign(encoded.encode(), ec.ECDSA(hashes.SHA256())))
    signature = _b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
    return f"{encoded}.{signature};info=<{x5u}>;alg=ES256;ppt=shaken"


def read_identity(
    value: str, key: ec.EllipticCurvePublicKey
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(JOSE header, claims) of an Identity header value whose ES256 signature ``key``
    verifies (InvalidSignature otherwise), decoded without the plugin's code: how a carrier's
    verifier reads what we sign."""
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    jws = value.split(";", 1)[0]
    header_b64, payload_b64, signature_b64 = jws.split(".")

    def decoded(text: str) -> bytes:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))

    raw = decoded(signature_b64)
    assert len(raw) == 64, "an ES256 JWS signature is r || s, 64 bytes"
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    key.verify(der, f"{header_b64}.{payload_b64}".encode(), ec.ECDSA(hashes.SHA256()))
    return json.loads(decoded(header_b64)), json.loads(decoded(payload_b64))
