"""The gateway's DTLS-SRTP certificate: one self-signed ECDSA P-256 certificate per gateway,
kept in ``<state_dir>/dtls/`` and replaced when it reaches a configured age.

DTLS-SRTP certificates are not vouched for by a CA: each side puts the hash of its certificate in
its SDP (a=fingerprint, RFC 8122 §5) and the other side checks the certificate presented in the
handshake against it (RFC 5763 §5). So any self-signed certificate does, and what matters is
the private key: whoever holds it can answer for our fingerprint. Hence:

- the key file is created owner-only (0600, in a 0700 directory) and a looser mode found at
  start-up is narrowed again;
- the certificate is replaced after ``max_age`` (``[plugins.dtls] certificate_max_age_days``),
  so a key that leaked stops being accepted for new calls; calls already set up keep the
  certificate they negotiated with (the engine holds it), re-offers included;
- it stays valid :data:`VALIDITY_MARGIN` beyond ``max_age``, because some peers do check the
  validity dates of a self-signed certificate and a call may outlive the rotation.

:class:`DtlsIdentity` (the certificate and its key in memory) is pure; :class:`CertificateStore`
does the file work. The wall clock is injected (``clock``) so rotation is testable.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import os
import stat
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType

import attrs
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

log = logging.getLogger(__name__)

__all__ = [
    "CERTIFICATE_FILE",
    "DIRECTORY",
    "HASH_FUNCTIONS",
    "KEY_FILE",
    "VALIDITY_MARGIN",
    "CertificateStore",
    "DtlsIdentity",
    "certificate_digest",
    "generate_identity",
]

DIRECTORY = "dtls"
"""Subdirectory of the state directory holding the certificate and key."""
CERTIFICATE_FILE = "certificate.pem"
KEY_FILE = "private_key.pem"

BACKDATE = datetime.timedelta(hours=1)
"""notBefore lies this far before the creation time, for peers whose clocks run behind ours."""
VALIDITY_MARGIN = datetime.timedelta(days=30)
"""How long a certificate stays valid after it is due for rotation."""
LAST_VALIDITY_END = datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.UTC)
"""The latest notAfter a certificate can carry (RFC 5280 §4.1.2.5: GeneralizedTime's year has
four digits)."""


def longest_max_age_days(now: datetime.datetime) -> int:
    """The largest ``max_age`` in days whose certificate made at ``now`` can still be written:
    valid :data:`VALIDITY_MARGIN` beyond it, ending by :data:`LAST_VALIDITY_END`."""
    return (LAST_VALIDITY_END - now - VALIDITY_MARGIN).days


HASH_FUNCTIONS: Mapping[str, str] = MappingProxyType(
    {
        # RFC 8122 §5 hash-func names -> hashlib names. MD2 and MD5 are in the grammar but are
        # broken; a fingerprint using them is never accepted.
        "sha-1": "sha1",
        "sha-224": "sha224",
        "sha-256": "sha256",
        "sha-384": "sha384",
        "sha-512": "sha512",
    }
)
"""The fingerprint hash functions we compute and accept, by their SDP name."""


def certificate_digest(der: bytes, algorithm: str) -> bytes:
    """The hash of a DER certificate with ``algorithm`` (an SDP hash-func name from
    :data:`HASH_FUNCTIONS`): the value an a=fingerprint carries (RFC 8122 §5)."""
    return hashlib.new(HASH_FUNCTIONS[algorithm], der).digest()


@attrs.frozen(repr=False)
class DtlsIdentity:
    """A certificate and its private key, as a DTLS endpoint presents them. The key never shows
    in ``repr``."""

    certificate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey

    def __repr__(self) -> str:
        return f"<DtlsIdentity sha-256 {self.sha256_hex()} created {self.created.isoformat()}>"

    @property
    def der(self) -> bytes:
        """The certificate in DER: what a=fingerprint hashes."""
        return self.certificate.public_bytes(serialization.Encoding.DER)

    @property
    def created(self) -> datetime.datetime:
        """When the certificate was made (its notBefore plus :data:`BACKDATE`)."""
        return self.certificate.not_valid_before_utc + BACKDATE

    def digest(self, algorithm: str = "sha-256") -> bytes:
        """:func:`certificate_digest` of this certificate."""
        return certificate_digest(self.der, algorithm)

    def sha256_hex(self) -> str:
        """SHA-256 fingerprint, lowercase hex without colons (as the tls transport records a
        peer certificate)."""
        return self.digest("sha-256").hex()

    def age(self, now: datetime.datetime) -> datetime.timedelta:
        return now - self.created


def generate_identity(
    *,
    now: datetime.datetime,
    max_age: datetime.timedelta,
    common_name: str = "voipgw DTLS-SRTP",
) -> DtlsIdentity:
    """A new self-signed ECDSA P-256 certificate (SHA-256 signature), valid from ``now`` minus
    :data:`BACKDATE` until ``now + max_age +`` :data:`VALIDITY_MARGIN`."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + max_age + VALIDITY_MARGIN)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return DtlsIdentity(certificate, key)


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class CertificateStore:
    """The gateway's DTLS certificate in ``directory`` (``<state_dir>/dtls``), loaded or made on
    first use and replaced once older than ``max_age``.

    :meth:`current` is what the ``dtls`` key exchange calls for every new DTLS association. It
    touches the disk only the first time and when it rotates. Files are written under temporary
    names and renamed, key first; a certificate whose key does not match (a crash between the
    two renames), or that does not parse, is replaced by a new pair.
    """

    def __init__(
        self,
        directory: Path,
        *,
        max_age: datetime.timedelta,
        clock: Callable[[], datetime.datetime] = _utc_now,
    ) -> None:
        if max_age <= datetime.timedelta(0):
            raise ValueError("max_age must be positive")
        self.directory = directory
        self.max_age = max_age
        self._clock = clock
        self._identity: DtlsIdentity | None = None

    def __repr__(self) -> str:
        return f"<CertificateStore {self.directory} max_age={self.max_age}>"

    @property
    def certificate_path(self) -> Path:
        return self.directory / CERTIFICATE_FILE

    @property
    def key_path(self) -> Path:
        return self.directory / KEY_FILE

    def current(self) -> DtlsIdentity:
        """The certificate to use for a new association: the one in force, or a new one when it
        is ``max_age`` old (or missing, or unusable). Raises OSError when the directory cannot be
        written."""
        now = self._clock()
        if self._identity is None:
            self._identity = self._load()
        if self._identity is None or self._identity.age(now) >= self.max_age:
            self._identity = self._create(now)
        return self._identity

    def _load(self) -> DtlsIdentity | None:
        try:
            certificate_pem = self.certificate_path.read_bytes()
            key_pem = self.key_path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            certificate = x509.load_pem_x509_certificate(certificate_pem)
            key = serialization.load_pem_private_key(key_pem, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            log.warning("DTLS certificate in %s does not load; making a new one", self.directory)
            return None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != (
            certificate.public_key()
        ):
            log.warning(
                "DTLS certificate in %s does not match its key; making a new one", self.directory
            )
            return None
        self._narrow_key_mode()
        return DtlsIdentity(certificate, key)

    def _narrow_key_mode(self) -> None:
        mode = stat.S_IMODE(self.key_path.stat().st_mode)
        if mode & 0o077:
            log.warning("%s was mode %o; setting it to 0600", self.key_path, mode)
            os.chmod(self.key_path, 0o600)

    def _create(self, now: datetime.datetime) -> DtlsIdentity:
        identity = generate_identity(now=now, max_age=self.max_age)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        key_pem = identity.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        _replace(self.key_path, key_pem, mode=0o600)
        _replace(
            self.certificate_path,
            identity.certificate.public_bytes(serialization.Encoding.PEM),
            mode=0o644,
        )
        log.info("new DTLS certificate in %s: sha-256 %s", self.directory, identity.sha256_hex())
        return identity


def _replace(path: Path, data: bytes, *, mode: int) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.unlink(missing_ok=True)  # left behind by a crash of an earlier process
    # O_EXCL with the final mode from the start: the key is never readable by others, not even
    # between open() and a later chmod().
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
