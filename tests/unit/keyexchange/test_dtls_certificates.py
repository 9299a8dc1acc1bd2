"""The gateway's DTLS certificate: ECDSA P-256, self-signed, kept owner-only in
``<state_dir>/dtls/``, reused across restarts and rotated by age."""

from __future__ import annotations

import datetime
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.plugins.keyexchange.dtls_certificates import (
    BACKDATE,
    VALIDITY_MARGIN,
    CertificateStore,
    generate_identity,
)

START = datetime.datetime(2026, 3, 1, 12, 0, tzinfo=datetime.UTC)
MONTH = datetime.timedelta(days=30)


class Clock:
    def __init__(self, now: datetime.datetime) -> None:
        self.now = now

    def __call__(self) -> datetime.datetime:
        return self.now


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_generated_identity_is_a_self_signed_p256_certificate() -> None:
    identity = generate_identity(now=START, max_age=MONTH)
    certificate = identity.certificate
    public_key = certificate.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    assert isinstance(public_key.curve, ec.SECP256R1)
    assert certificate.issuer == certificate.subject
    public_key.verify(
        certificate.signature,
        certificate.tbs_certificate_bytes,
        ec.ECDSA(certificate.signature_hash_algorithm),  # type: ignore[arg-type]
    )
    assert certificate.not_valid_before_utc == START - BACKDATE
    assert certificate.not_valid_after_utc == START + MONTH + VALIDITY_MARGIN
    assert identity.created == START
    basic = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert basic.ca is False


def test_the_repr_shows_the_fingerprint_and_never_the_key() -> None:
    identity = generate_identity(now=START, max_age=MONTH)
    text = repr(identity)
    assert identity.sha256_hex() in text
    secret = identity.private_key.private_numbers().private_value
    assert format(secret, "x") not in text and str(secret) not in text


def test_first_use_creates_an_owner_only_key_and_later_stores_reuse_it(tmp_path: Path) -> None:
    directory = tmp_path / "state" / "dtls"
    store = CertificateStore(directory, max_age=MONTH, clock=Clock(START))
    assert not directory.exists()  # nothing before first use
    identity = store.current()
    assert mode(directory) == 0o700
    assert mode(store.key_path) == 0o600
    assert store.certificate_path.is_file()
    assert store.current() is identity  # no disk work the second time
    restarted = CertificateStore(directory, max_age=MONTH, clock=Clock(START + MONTH / 2))
    assert restarted.current().der == identity.der  # the fingerprint peers saw stays


def test_an_old_certificate_is_rotated(tmp_path: Path) -> None:
    clock = Clock(START)
    store = CertificateStore(tmp_path, max_age=MONTH, clock=clock)
    first = store.current()
    clock.now = START + MONTH - datetime.timedelta(seconds=1)
    assert store.current() is first
    clock.now = START + MONTH
    second = store.current()
    assert second.der != first.der and second.created == START + MONTH
    assert mode(store.key_path) == 0o600
    # A restart after the rotation loads the new one; a restart long after rotates again.
    assert CertificateStore(tmp_path, max_age=MONTH, clock=clock).current().der == second.der
    later = CertificateStore(tmp_path, max_age=MONTH, clock=Clock(START + 3 * MONTH))
    assert later.current().der not in (first.der, second.der)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files


def test_a_key_readable_by_others_is_narrowed_to_0600(tmp_path: Path) -> None:
    CertificateStore(tmp_path, max_age=MONTH, clock=Clock(START)).current()
    os.chmod(tmp_path / "private_key.pem", 0o644)
    CertificateStore(tmp_path, max_age=MONTH, clock=Clock(START)).current()
    assert mode(tmp_path / "private_key.pem") == 0o600


@pytest.mark.parametrize("damage", ["garbage certificate", "garbage key", "other key"])
def test_an_unusable_pair_is_replaced(tmp_path: Path, damage: str) -> None:
    old = CertificateStore(tmp_path, max_age=MONTH, clock=Clock(START)).current()
    if damage == "garbage certificate":
        (tmp_path / "certificate.pem").write_bytes(b"not a certificate")
    elif damage == "garbage key":
        (tmp_path / "private_key.pem").write_bytes(b"not a key")
    else:  # a crash between the two renames of a rotation
        CertificateStore(tmp_path / "other", max_age=MONTH, clock=Clock(START)).current()
        os.replace(tmp_path / "other" / "private_key.pem", tmp_path / "private_key.pem")
    new = CertificateStore(tmp_path, max_age=MONTH, clock=Clock(START)).current()
    assert new.der != old.der
    assert new.private_key.public_key() == new.certificate.public_key()


def test_max_age_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_age"):
        CertificateStore(tmp_path, max_age=datetime.timedelta(0))
