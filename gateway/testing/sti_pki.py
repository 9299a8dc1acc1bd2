"""A throw-away STIR/SHAKEN PKI for tests: an STI-PA-like root, an intermediate and a signer
certificate with the TNAuthList extension (RFC 8226 §9), all P-256, made with ``cryptography``.
Also PASSporTs made independently of the plugin's signer, for verification tests."""

from __future__ import annotations

import base64
import datetime
import json
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
    return builder.sign(issuer_key, hashes.SHA256())


def make_pki(*, tn_auth_list: bool = True, now: float | None = None, days: int = 30) -> StiPki:
    """A root, an intermediate under it and a signer under that, valid from a day before
    ``now`` (default: the wall clock) for ``days``."""
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
        ca=True, tn_auth_list=False, not_before=start, days=days,
    )  # fmt: skip
    signer = _certificate(
        "Test SHAKEN signer", signer_key, "Test STI-CA", middle_key,
        ca=False, tn_auth_list=tn_auth_list, not_before=start, days=days,
    )  # fmt: skip
    return StiPki(root=root, intermediate=middle, signer=signer, signer_key=signer_key)


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
