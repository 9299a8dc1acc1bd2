"""Certificate revocation lists for the ``tls`` transport (``[plugins.tls] crl_files``).

The operator revokes a phone's device certificate (a stolen handset, a departed employee) or a
trunk's CA revokes its server certificate; the CA publishes a CRL (RFC 5280 §5) and a cron job
copies it next to the gateway and sends SIGHUP. This module reads those files and checks them
before OpenSSL gets them; OpenSSL does the per-handshake lookup (``X509_V_FLAG_CRL_CHECK``).

Checks, at start-up and on every reload, each failing with the file named:

- the file holds one CRL, PEM or DER;
- it is a complete CRL, not a delta CRL (RFC 5280 §5.2.4): OpenSSL ignores a delta CRL unless
  told to use deltas, and then the certificates it lists would go unchecked;
- its scope (issuingDistributionPoint, RFC 5280 §5.2.5) takes in end-entity certificates for
  every reason, from its own issuer: a CRL of CA certificates only, of some reasons only, or an
  indirect one cannot tell whether a phone's certificate is revoked, and OpenSSL would refuse
  every certificate of that CA for want of one that can;
- it has a nextUpdate (RFC 5280 §5.1.2.5: conforming issuers include one; without it nobody
  can tell how stale the list is);
- it is signed by a CA certificate in ``ca_bundles`` (issuer name and signature), and that CA
  may sign CRLs (RFC 5280 §4.2.1.3: with a keyUsage extension, cRLSign must be set; OpenSSL
  would otherwise refuse the CRL at every handshake).

Whether a CRL is current (thisUpdate <= now < nextUpdate) is judged separately
(:meth:`LoadedCrl.problem`): start-up loads an out-of-date one and says so loudly, a reload
refuses it (docs/tls.md, "Certificate revocation").

Connections up before a reload were checked against the CRLs of their handshake; after a
reload :class:`RevokedSerials` tells which of them the new CRLs revoke (the transport closes
those), from what each connection kept of its peer's certificate (:class:`CertificateId`).
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import attrs
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from gateway.plugins.transports.certificates import CertificateError, load_certificates

_PEM_MARKER = b"-----BEGIN X509 CRL-----"


@attrs.frozen
class LoadedCrl:
    """A CRL file that passed the checks, as OpenSSL gets it and the log and metrics show it."""

    path: str
    issuer: str  # RFC 4514
    issuer_der: bytes  # the issuer Name, DER: which leaf certificates this CRL covers
    last_update: float  # thisUpdate, Unix time
    next_update: float  # Unix time
    revoked: int  # entries
    crl: x509.CertificateRevocationList = attrs.field(eq=False, repr=False)
    number: int | None = None  # cRLNumber (RFC 5280 §5.2.3): which of two CRLs is newer
    #: The DER bytes ``crl`` was parsed from (empty for a PEM file): what OpenSSL parses and a
    #: fetched CRL is saved as, without cryptography encoding it again (some 30 ms for 4 MiB,
    #: holding the GIL, so stalling the event loop from any thread).
    der: bytes = attrs.field(default=b"", eq=False, repr=False)
    #: OpenSSL's parse of it (an X509_CRL), made once by the first TLS context that gets it and
    #: shared by the others (tls._add_crl): not per context, as pyOpenSSL's add_crl does.
    native: list[Any] = attrs.field(factory=list, init=False, eq=False, repr=False)

    def der_bytes(self) -> bytes:
        """The CRL, DER: the bytes it was read from when they were DER, else encoded now."""
        return self.der or self.crl.public_bytes(serialization.Encoding.DER)

    @property
    def stale_at(self) -> float:
        """When the last quarter of its validity begins: a CRL still loaded then was not
        refreshed (a cron job that stopped); time to warn, before OpenSSL starts refusing."""
        return self.next_update - (self.next_update - self.last_update) / 4

    def describe(self) -> str:
        """One log line's words: file, issuer, entries, nextUpdate."""
        return (
            f"{self.path}: CRL of {self.issuer}, {self.revoked} revoked, "
            f"next update {_utc(self.next_update)}"
        )

    def problem(self, now: float) -> str | None:
        """Why OpenSSL would not use this CRL at ``now`` (RFC 5280 §6.3.3 (a)), else None."""
        if now >= self.next_update:
            return f"{self.path}: the CRL of {self.issuer} expired on {_utc(self.next_update)}"
        if now < self.last_update:
            return (
                f"{self.path}: the CRL of {self.issuer} is not valid before "
                f"{_utc(self.last_update)} (check the clock)"
            )
        return None


@attrs.frozen
class CertificateId:
    """What names a certificate in a CRL (RFC 5280 §5.3: a CRL entry is the serial number of a
    certificate of the CRL's issuer): its issuer Name, DER, and its serial number. Kept per TLS
    connection from the handshake, so a reload can tell whether the peer's certificate is now
    revoked without the certificate."""

    issuer_der: bytes
    serial: int

    @classmethod
    def of(cls, certificate: x509.Certificate) -> CertificateId:
        """Raises ValueError for a certificate cryptography cannot read."""
        return cls(certificate.issuer.public_bytes(), certificate.serial_number)


class RevokedSerials:
    """The serial numbers every CRL of ``crls`` lists, by issuer: built once per reload (one
    pass over each CRL), then one dictionary and one set look-up per open connection."""

    def __init__(self, crls: Sequence[LoadedCrl]) -> None:
        self._by_issuer: dict[bytes, frozenset[int]] = {
            crl.issuer_der: frozenset(entry.serial_number for entry in crl.crl) for crl in crls
        }

    def revokes(self, certificate: CertificateId) -> bool:
        """Whether a CRL of the certificate's issuer lists its serial number. A certificate whose
        CA has no CRL loaded is not revoked (as at the handshake: not checked). Matched by
        issuer name and serial as OpenSSL's lookup does; a certificate that only claims a CA's
        name (unverified, in encryption-only or server-only mode) with a listed serial matches
        too, which closes nothing but its own connection."""
        serials = self._by_issuer.get(certificate.issuer_der)
        return serials is not None and certificate.serial in serials


def load_crl(path: Path, cas: Sequence[x509.Certificate]) -> LoadedCrl:
    """The CRL in ``path`` once it passed the module's checks; CertificateError otherwise."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CertificateError(f"{path}: cannot read it: {exc.strerror}") from None
    return check_crl_untrusted(data, str(path), cas)


def check_crl_untrusted(data: bytes, path: str, cas: Sequence[x509.Certificate]) -> LoadedCrl:
    """The CRL in ``data`` (a file's or an HTTP server's bytes, named ``path`` in messages and
    metrics) once it passed the module's checks; CertificateError otherwise. The caller bounds
    ``data`` (crl_fetch.MAX_CRL_SIZE for a fetched one)."""
    try:
        pem = _PEM_MARKER in data
        crl = x509.load_pem_x509_crl(data) if pem else x509.load_der_x509_crl(data)
    except ValueError:
        raise CertificateError(f"{path}: holds no PEM or DER CRL") from None
    try:
        issuer = crl.issuer.rfc4514_string()
        issuer_der = crl.issuer.public_bytes()
        next_update = crl.next_update_utc
        delta = _has_extension(crl, x509.DeltaCRLIndicator)
        scope = _scope_problem(crl)
        revoked = len(crl)
        number = _crl_number(crl)
    except ValueError as exc:
        raise CertificateError(f"{path}: the CRL cannot be read ({exc})") from None
    if delta:
        raise CertificateError(f"{path}: a delta CRL (RFC 5280 §5.2.4); give the complete CRL")
    if scope is not None:
        raise CertificateError(
            f"{path}: {scope} (RFC 5280 §5.2.5); give the CRL of its end-entity certificates"
        )
    if next_update is None:
        raise CertificateError(f"{path}: the CRL has no nextUpdate (RFC 5280 §5.1.2.5)")
    signer = _signer(crl, cas)
    if signer is None:
        raise CertificateError(
            f"{path}: the CRL of {issuer} is not signed by a CA certificate in ca_bundles"
        )
    if not _may_sign_crls(signer):
        raise CertificateError(
            f"{path}: its signer {issuer} has a keyUsage without cRLSign (RFC 5280 §4.2.1.3); "
            "OpenSSL would refuse the CRL at every handshake"
        )
    return LoadedCrl(
        path=str(path),
        issuer=issuer,
        issuer_der=issuer_der,
        last_update=crl.last_update_utc.timestamp(),
        next_update=next_update.timestamp(),
        revoked=revoked,
        crl=crl,
        number=number,
        # Exactly what was parsed and checked (load_der_x509_crl takes nothing after the CRL).
        der=b"" if pem else data,
    )


def newer(a: LoadedCrl, b: LoadedCrl) -> bool:
    """Whether ``a`` supersedes ``b`` (two CRLs of one CA, e.g. a fetched one and one of
    crl_files): the higher cRLNumber (RFC 5280 §5.2.3: it only increases), else the later
    thisUpdate; ties go to ``b``."""
    if a.number is not None and b.number is not None and a.number != b.number:
        return a.number > b.number
    return a.last_update > b.last_update


def _crl_number(crl: x509.CertificateRevocationList) -> int | None:
    try:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        return None


def cas_without_crl(crls: Sequence[LoadedCrl], bundles: Iterable[Path]) -> list[str]:
    """Subjects of the CA certificates in ``bundles`` that no CRL of ``crls`` covers: their
    certificates are not checked for revocation (said once at start-up and on reload)."""
    covered = {crl.issuer_der for crl in crls}
    missing: list[str] = []
    for bundle in bundles:
        for certificate in load_certificates(bundle):
            if certificate.subject.public_bytes() not in covered:
                missing.append(certificate.subject.rfc4514_string())
    return list(dict.fromkeys(missing))


def _signer(
    crl: x509.CertificateRevocationList, cas: Sequence[x509.Certificate]
) -> x509.Certificate | None:
    for ca in cas:
        if ca.subject != crl.issuer:
            continue
        try:
            # A key kind that cannot sign (X25519, X448) raises TypeError, handled below.
            if crl.is_signature_valid(ca.public_key()):  # type: ignore[arg-type]
                return ca
        except (TypeError, ValueError, UnsupportedAlgorithm):
            continue  # a key type that cannot sign CRLs (X25519...), or an unreadable key
    return None


def _may_sign_crls(ca: x509.Certificate) -> bool:
    try:
        usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return True  # no keyUsage: every use allowed (RFC 5280 §4.2.1.3)
    except ValueError:
        return False
    return usage.crl_sign


def _scope_problem(crl: x509.CertificateRevocationList) -> str | None:
    try:
        point = crl.extensions.get_extension_for_class(x509.IssuingDistributionPoint).value
    except x509.ExtensionNotFound:
        return None
    if point.only_contains_ca_certs:
        return "the CRL lists CA certificates only"
    if point.only_contains_attribute_certs:
        return "the CRL lists attribute certificates only"
    if point.only_some_reasons:
        return "the CRL covers some revocation reasons only"
    if point.indirect_crl:
        return "an indirect CRL"
    return None


def _has_extension(crl: x509.CertificateRevocationList, kind: type[x509.ExtensionType]) -> bool:
    try:
        crl.extensions.get_extension_for_class(kind)
    except x509.ExtensionNotFound:
        return False
    return True


def _utc(timestamp: float) -> str:
    return f"{datetime.datetime.fromtimestamp(timestamp, datetime.UTC):%Y-%m-%d %H:%M:%S} UTC"
