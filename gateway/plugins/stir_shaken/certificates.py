"""SHAKEN certificates (ATIS-1000080): the signer's certificate that a PASSporT's x5u points
at, checked against the STI-PA trust anchors the operator configures. Sans-IO: bytes and
``now`` in.

The x5u resource is PEM: the end-entity certificate first, then the intermediates (ATIS-1000080
§6.3.3). The chain is walked from the end entity to a trust anchor, each certificate's
signature checked against its issuer's key (``verify_directly_issued_by``), each in its
validity period, each issuer a CA. An end entity must carry the TNAuthList extension (RFC 8226
§9, OID 1.3.6.1.5.5.7.1.26): the service provider code it names is not compared with anything
here (the SHAKEN SPC token is the STI-PA's business), but a certificate without it is no STI
certificate. Revocation (CRL distribution points) is not checked.
"""

from __future__ import annotations

import datetime

import attrs
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ObjectIdentifier

from gateway.plugins.stir_shaken.passport import PassportError

TN_AUTH_LIST = ObjectIdentifier("1.3.6.1.5.5.7.1.26")  # RFC 8226 §9
MAX_CERTIFICATE_FILE = 65536  # an end entity and two intermediates are about 3 KiB
MAX_CHAIN = 4


@attrs.frozen
class SignerCertificate:
    """A signer certificate that chained to a trust anchor: its public key, for the PASSporT's
    signature."""

    key: ec.EllipticCurvePublicKey
    subject: str
    valid_until: float  # Unix time: the first of the chain's certificates to expire


def load_pem_untrusted(data: bytes) -> list[x509.Certificate]:
    """The certificates of an x5u resource (PEM; one DER certificate is taken as well)."""
    if len(data) > MAX_CERTIFICATE_FILE:
        raise PassportError("certificate too large", outcome="bad_info", status=436)
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            certificates = x509.load_pem_x509_certificates(data)
        else:
            certificates = [x509.load_der_x509_certificate(data)]
    except ValueError:
        raise PassportError("certificate cannot be read", outcome="bad_info", status=436) from None
    if not certificates or len(certificates) > MAX_CHAIN:
        raise PassportError("not one to four certificates", outcome="bad_info", status=436)
    return certificates


def load_trust_anchors(data: bytes) -> list[x509.Certificate]:
    """The STI-PA roots (a PEM bundle from the operator's file); ValueError when it holds none."""
    anchors = x509.load_pem_x509_certificates(data)
    if not anchors:
        raise ValueError("no certificate in it")
    return anchors


def validate_chain(
    certificates: list[x509.Certificate],
    anchors: list[x509.Certificate],
    *,
    now: float,
    require_tn_auth_list: bool = True,
) -> SignerCertificate:
    """The end entity of ``certificates`` (first) once it chains to one of ``anchors``; else
    PassportError 437 (RFC 8224 §6.2.2: Unsupported Credential)."""
    at = datetime.datetime.fromtimestamp(now, datetime.UTC)
    leaf = certificates[0]
    if require_tn_auth_list and not _has_extension(leaf, TN_AUTH_LIST):
        raise _untrusted("certificate has no TNAuthList")
    public_key = leaf.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or public_key.curve.name != (
        "secp256r1"
    ):
        raise _untrusted("certificate key is not P-256")
    pool = certificates[1:]
    current = leaf
    valid_until = leaf.not_valid_after_utc
    for _ in range(MAX_CHAIN + 1):
        _check_period(current, at)
        valid_until = min(valid_until, current.not_valid_after_utc)
        anchor = _issuer_among(current, anchors)
        if anchor is not None:
            _check_period(anchor, at)
            return SignerCertificate(
                key=public_key,
                subject=leaf.subject.rfc4514_string(),
                valid_until=min(valid_until, anchor.not_valid_after_utc).timestamp(),
            )
        issuer = _issuer_among(current, pool)
        if issuer is None or not _is_ca(issuer):
            raise _untrusted("certificate does not chain to a trust anchor")
        pool = [c for c in pool if c is not issuer]
        current = issuer
    raise _untrusted("certificate chain too long")


def _issuer_among(
    certificate: x509.Certificate, candidates: list[x509.Certificate]
) -> x509.Certificate | None:
    for candidate in candidates:
        if candidate.subject != certificate.issuer:
            continue
        try:
            certificate.verify_directly_issued_by(candidate)
        except (InvalidSignature, ValueError, TypeError):  # a key type it cannot check
            continue
        return candidate
    return None


def _check_period(certificate: x509.Certificate, at: datetime.datetime) -> None:
    if not certificate.not_valid_before_utc <= at <= certificate.not_valid_after_utc:
        raise _untrusted("certificate expired or not yet valid")


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        return False
    return constraints.value.ca


def _has_extension(certificate: x509.Certificate, oid: ObjectIdentifier) -> bool:
    try:
        certificate.extensions.get_extension_for_oid(oid)
    except x509.ExtensionNotFound:
        return False
    return True


def _untrusted(reason: str) -> PassportError:
    return PassportError(reason, outcome="untrusted", status=437)
