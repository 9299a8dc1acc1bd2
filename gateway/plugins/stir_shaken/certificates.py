"""SHAKEN certificates (ATIS-1000080): the signer's certificate that a PASSporT's x5u points
at, checked against the STI-PA trust anchors the operator configures. Sans-IO: bytes and
``now`` in.

The x5u resource is PEM: the end-entity certificate first, then the intermediates (ATIS-1000080
§6.3.3). The chain is walked from the end entity to a trust anchor, each certificate's
signature checked against its issuer's key (``verify_directly_issued_by``), each in its
validity period, each issuer a CA. An end entity must carry the TNAuthList extension (RFC 8226
§9, OID 1.3.6.1.5.5.7.1.26): the service provider code it names is not compared with anything
here (the SHAKEN SPC token is the STI-PA's business), but a certificate without it is no STI
certificate.

Revocation (ATIS-1000080 §6.4.1): STI intermediate and end-entity certificates carry a CRL
Distribution Points extension with one DistributionPoint, the URL of the SHAKEN CRL the STI-PA
hosts (and as cRLIssuer the DN of its issuer); roots carry none. A chain that validates says
what to look up: each certificate below the anchor with such a URL (``RevocationCheck``); an end
entity without one (ATIS-1000080 v3 and later require it) leaves its revocation unknown
(``SignerCertificate.no_crl``), as an unavailable CRL does, rather than passing unmarked. The
CRL itself is read by :func:`load_crl_untrusted`: signed by a trust anchor or a CA certificate
of the chain (the STI-PA's CRL is an indirect CRL, RFC 5280 §5: its issuer is not the STI-CA that
issued the end entity), current (thisUpdate passed, nextUpdate to come), bounded in size; and
for each certificate looked up in it, issued by that certificate's issuer or by a CRL issuer
the certificate names (RFC 5280 §6.3.3 (b): ``RevocationList.issued_for``).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence

import attrs
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ObjectIdentifier

from gateway.plugins.stir_shaken.passport import PassportError

TN_AUTH_LIST = ObjectIdentifier("1.3.6.1.5.5.7.1.26")  # RFC 8226 §9
MAX_CERTIFICATE_FILE = 65536  # an end entity and two intermediates are about 3 KiB
MAX_CHAIN = 4
# The STI-PA's CRL lists the certificates removed from SHAKEN (a few hundred entries of about
# 40 bytes); a megabyte is ample and still parsed in milliseconds.
MAX_CRL_FILE = 1 << 20
# Clock difference tolerated between the STI-PA and us for a CRL's thisUpdate.
CRL_CLOCK_SKEW = 300.0
# Verdicts one CRL keeps (RevocationList._verdicts): a chain's CA certificates and revocation
# checks, a few per cached certificate; past it they are all forgotten and reached again.
MAX_CRL_VERDICTS = 512


class RevocationUnavailable(Exception):
    """The CRL a certificate names could not be had or cannot be believed (not fetched, not
    signed by the trust anchors, expired): the certificate's status is unknown, not revoked."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@attrs.frozen
class RevocationCheck:
    """One certificate of a validated chain to look up in the CRL at ``crl_url``."""

    crl_url: str
    serial: int
    issuer: x509.Name
    subject: str
    # The CRL issuers its distribution point names (cRLIssuer: the STI-PA's DN, ATIS-1000080
    # §6.4.1): besides its issuer, the only ones whose CRL covers it (RFC 5280 §6.3.3 (b)).
    crl_issuers: tuple[x509.Name, ...] = ()


@attrs.frozen
class SignerCertificate:
    """A signer certificate that chained to a trust anchor: its public key, for the PASSporT's
    signature, and what its revocation check needs."""

    key: ec.EllipticCurvePublicKey
    subject: str
    valid_until: float  # Unix time: the first of the chain's certificates to expire
    serial: int = 0  # the end entity's serial number (RFC 5280 §4.1.2.2), for the log
    # The certificates below the anchor that name a CRL (end entity first).
    revocation: tuple[RevocationCheck, ...] = ()
    # Who may sign those CRLs: the anchor the chain ended at and the chain's CA certificates.
    crl_signers: tuple[x509.Certificate, ...] = ()
    # Why the end entity's own revocation cannot be looked up ("": it names its CRL).
    no_crl: str = ""


@attrs.frozen
class RevocationList:
    """A CRL whose signature and dates were checked: the serial numbers it lists, each with the
    issuers its entries name (RFC 5280 §5.3.3 Certificate Issuer; None: not named)."""

    issuer: str
    next_update: float  # Unix time; the CRL is kept until then
    revoked: Mapping[int, frozenset[x509.Name | None]]
    # The CRL as read (:func:`read_crl_untrusted`), whose signature a chain that asks for it
    # checks against its own CAs (:meth:`signed_by`), and whether a trust anchor signed it
    # (then every chain takes it as it is). None: checked by :func:`load_crl_untrusted`.
    crl: x509.CertificateRevocationList | None = attrs.field(default=None, eq=False, repr=False)
    anchor_signed: bool = False
    # The issuer as a name, compared with a certificate's issuer and the cRLIssuer it names
    # (:meth:`issued_for`).
    issuer_name: x509.Name | None = attrs.field(default=None, eq=False, repr=False)
    # What this CRL was found to be for the objects asked about, for as long as it is kept:
    # whether a chain's CA certificate signed it (an ECDSA verification: about 120 µs, which
    # every call of a chain whose intermediate signed its CRL paid) and whether it covers a
    # revocation check's certificate (x509.Name comparisons, about 2 µs each). Keyed by the
    # object's id, the object kept beside its verdict so that the id is not reused meanwhile:
    # a cached certificate's CAs and checks are the same objects at each of its calls.
    _verdicts: dict[int, tuple[object, bool]] = attrs.field(
        factory=dict, init=False, eq=False, repr=False
    )

    def signed_by(self, signers: Sequence[x509.Certificate]) -> bool:
        """Whether a trust anchor or one of ``signers`` (the CAs of the chain being looked
        up: ``SignerCertificate.crl_signers``) signed this CRL. One URL's CRL serves every
        chain that names it, but an intermediate's signature speaks only for the chains that
        hold that intermediate."""
        if self.anchor_signed or self.crl is None:
            return True
        crl = self.crl
        for signer in signers:
            verdict = self._verdict(signer)
            if verdict is None:
                verdict = self._keep(signer, _signed_crl(crl, signer))
            if verdict:
                return True
        return False

    def issued_for(self, check: RevocationCheck) -> bool:
        """Whether this CRL may speak for the certificate of ``check`` (RFC 5280 §6.3.3 (b)):
        its issuer is the certificate's issuer (a complete CRL of that CA) or a CRL issuer the
        certificate's distribution point names (an indirect CRL: the STI-PA's). A CRL of one
        CA says nothing of the certificates another CA issued, nor of the CA itself."""
        verdict = self._verdict(check)
        if verdict is None:
            name = self.issuer_name
            covered = name is None or name == check.issuer or name in check.crl_issuers
            verdict = self._keep(check, covered)
        return verdict

    def judged(self, asked: object) -> bool:
        """Whether :meth:`issued_for` (or :meth:`signed_by`) has decided for ``asked`` and
        keeps the verdict: what is said once is said when it is first decided."""
        return self._verdict(asked) is not None

    def _verdict(self, asked: object) -> bool | None:
        entry = self._verdicts.get(id(asked))
        return entry[1] if entry is not None and entry[0] is asked else None

    def _keep(self, asked: object, verdict: bool) -> bool:
        if len(self._verdicts) >= MAX_CRL_VERDICTS:
            self._verdicts.clear()  # bounded; each is reached again at its next call
        self._verdicts[id(asked)] = (asked, verdict)
        return verdict

    def lists(self, check: RevocationCheck) -> bool:
        """Whether the certificate of ``check`` is revoked. An entry that names its certificate's
        issuer must name this one's; one that names none is taken by its serial number (SHAKEN
        serial numbers are random, at least 64 bits: RFC 5280 §4.1.2.2)."""
        issuers = self.revoked.get(check.serial)
        return issuers is not None and (None in issuers or check.issuer in issuers)


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
    chain: list[x509.Certificate] = []
    valid_until = leaf.not_valid_after_utc
    for _ in range(MAX_CHAIN + 1):
        _check_period(current, at)
        valid_until = min(valid_until, current.not_valid_after_utc)
        chain.append(current)
        anchor = _issuer_among(current, anchors)
        if anchor is not None:
            _check_period(anchor, at)
            checks = [_revocation_check(certificate) for certificate in chain]
            # ATIS-1000080 §6.4.1 (v3 and later): an STI end-entity certificate carries a CRL
            # Distribution Points extension naming the STI-PA's CRL. Without one there is no
            # telling whether it was revoked: not a failure, but not a clean pass either.
            return SignerCertificate(
                key=public_key,
                subject=leaf.subject.rfc4514_string(),
                serial=leaf.serial_number,
                valid_until=min(valid_until, anchor.not_valid_after_utc).timestamp(),
                revocation=tuple(check for check in checks if check is not None),
                crl_signers=(anchor, *chain[1:]),
                no_crl="" if checks[0] else "certificate names no CRL (no CRL Distribution Points)",
            )
        issuer = _issuer_among(current, pool)
        if issuer is None or not _is_ca(issuer):
            raise _untrusted("certificate does not chain to a trust anchor")
        pool = [c for c in pool if c is not issuer]
        current = issuer
    raise _untrusted("certificate chain too long")


def load_crl_untrusted(
    data: bytes, signers: Sequence[x509.Certificate], *, now: float
) -> RevocationList:
    """The CRL of ``data`` (DER, as the STI-PA serves it, or PEM) once one of ``signers`` is
    found to have signed it and it is current; else RevocationUnavailable."""
    crl = _read_crl(data)
    if not any(_signed_crl(crl, signer) for signer in signers):
        raise RevocationUnavailable("CRL not signed by the trust anchors")
    return _current_list(crl, now)


def read_crl_untrusted(
    data: bytes, anchors: Sequence[x509.Certificate], *, now: float
) -> RevocationList:
    """The CRL of ``data`` once it is current, whoever signed it: the plugin keeps one CRL a
    URL for every chain that names it, and each chain checks the signature against its own
    CAs (:meth:`RevocationList.signed_by`), unless one of ``anchors`` signed it (the STI-PA's
    CRL: checked here, once). RevocationUnavailable for one that cannot be read or is not
    current."""
    crl = _read_crl(data)
    return attrs.evolve(
        _current_list(crl, now),
        crl=crl,
        anchor_signed=any(_signed_crl(crl, anchor) for anchor in anchors),
    )


def _read_crl(data: bytes) -> x509.CertificateRevocationList:
    if len(data) > MAX_CRL_FILE:
        raise RevocationUnavailable("CRL too large")
    try:
        if b"-----BEGIN X509 CRL-----" in data:
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError:
        raise RevocationUnavailable("CRL cannot be read") from None


def _current_list(crl: x509.CertificateRevocationList, now: float) -> RevocationList:
    """The serial numbers ``crl`` lists once it is current (thisUpdate passed, nextUpdate to
    come); else RevocationUnavailable."""
    next_update = crl.next_update_utc
    if next_update is None:
        # RFC 5280 §5.1.2.5: conforming CRL issuers include it; without it there is no telling
        # how long the list may be believed.
        raise RevocationUnavailable("CRL has no nextUpdate")
    if crl.last_update_utc.timestamp() > now + CRL_CLOCK_SKEW:
        raise RevocationUnavailable("CRL not yet valid")
    if next_update.timestamp() <= now:
        raise RevocationUnavailable("CRL expired (nextUpdate passed)")
    revoked: dict[int, set[x509.Name | None]] = {}
    # RFC 5280 §5.3.3: in an indirect CRL an entry's Certificate Issuer extension names the
    # issuer of it and of the entries after it, until the next one that names another.
    named: x509.Name | None = None
    try:
        for entry in crl:
            try:
                extension = entry.extensions.get_extension_for_class(x509.CertificateIssuer)
            except x509.ExtensionNotFound:
                pass
            else:
                directories = extension.value.get_values_for_type(x509.DirectoryName)
                named = directories[0] if directories else None
            revoked.setdefault(entry.serial_number, set()).add(named)
    except ValueError:
        raise RevocationUnavailable("CRL entries cannot be read") from None
    return RevocationList(
        issuer=crl.issuer.rfc4514_string(),
        issuer_name=crl.issuer,
        next_update=next_update.timestamp(),
        revoked={serial: frozenset(issuers) for serial, issuers in revoked.items()},
    )


def _signed_crl(crl: x509.CertificateRevocationList, signer: x509.Certificate) -> bool:
    if signer.subject != crl.issuer:
        return False
    key = signer.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        return False  # SHAKEN keys are P-256 (ATIS-1000080 §6.4.1); no other kind is tried
    return crl.is_signature_valid(key)


def _revocation_check(certificate: x509.Certificate) -> RevocationCheck | None:
    """The CRL URL ``certificate`` names (its first URI), if any."""
    try:
        points = certificate.extensions.get_extension_for_class(x509.CRLDistributionPoints)
    except (x509.ExtensionNotFound, ValueError):  # ValueError: extensions not DER we can read
        return None
    for point in points.value:
        for name in point.full_name or ():
            if isinstance(name, x509.UniformResourceIdentifier):
                return RevocationCheck(
                    crl_url=name.value,
                    serial=certificate.serial_number,
                    issuer=certificate.issuer,
                    subject=certificate.subject.rfc4514_string(),
                    crl_issuers=tuple(
                        issuer.value
                        for issuer in point.crl_issuer or ()
                        if isinstance(issuer, x509.DirectoryName)
                    ),
                )
    return None


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
