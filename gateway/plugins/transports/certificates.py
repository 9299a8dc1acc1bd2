"""X.509 certificates for the ``tls`` transport: the generated default, identities, name checks.

Three jobs, none of them doing TLS itself:

- :func:`ensure_self_signed` creates, once, the self-signed ECDSA P-256 certificate a TLS listener
  uses when the operator configured none (``<state_dir>/tls/``, key readable by the owner only).
- :func:`peer_identity` turns a peer's certificate into the :class:`PeerCertificate` a flow
  carries (SHA-256 fingerprint, subject, issuer), which device binding and the per-call security
  report read.
- :func:`matches_name` checks that a trunk's certificate is for the name or address we meant to
  reach (RFC 5922 §7.1 for SIP, RFC 6125 §6 for DNS names), after OpenSSL verified its chain.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.core.interfaces import LoadedCertificate, ReloadError
from gateway.core.transport.flows import PeerCertificate

#: Subdirectory of the state directory that holds the generated certificate and key.
GENERATED_DIR = "tls"
GENERATED_CERTIFICATE = "gateway.crt"
GENERATED_KEY = "gateway.key"
#: The generated certificate is self-signed: peers pin it (fingerprint) rather than chain it to a
#: CA, and a pin that changes every year breaks them, so it lasts ten years.
GENERATED_VALIDITY = datetime.timedelta(days=3650)
#: Our own certificate expiring within this many days is warned of: by ``voipgw check-config``,
#: and by ``voipgw run`` at start-up and then once a day (a renewal that did not happen, said
#: while there is time to do it).
EXPIRY_WARNING_DAYS = 14
#: How often (s, trio's clock) a running gateway looks again at the certificates it presents
#: (the tls and wss transports', the metrics exporter's): the warning is repeated once a day
#: until the certificate is renewed.
EXPIRY_CHECK_INTERVAL = 86400.0

_WILDCARD_HOSTS = {"0.0.0.0", "::"}


class CertificateError(OSError, ReloadError):
    """A certificate or key file cannot be used (an OSError: like a missing file, it stops
    start-up with its message). The message names the file, never key bytes: a
    :class:`~gateway.core.interfaces.ReloadError` too, whose text the core shows at start-up
    (a plugin that fails to load) and at a reload."""


@attrs.frozen
class CertificatePaths:
    """Where a certificate chain and its private key are (PEM files)."""

    certificate: Path
    private_key: Path


def fingerprint_sha256(der: bytes) -> str:
    """SHA-256 over the DER certificate, lowercase hex without colons (RFC 8122 §5 hashes the
    same bytes; the colons there are presentation only)."""
    return hashlib.sha256(der).hexdigest()


def fingerprint(certificate: x509.Certificate) -> str:
    """:func:`fingerprint_sha256` of a parsed certificate."""
    return fingerprint_sha256(certificate.public_bytes(serialization.Encoding.DER))


def peer_identity(
    certificate: x509.Certificate, *, verified: bool, server_name: str | None = None
) -> PeerCertificate:
    """What a flow records about the peer's end-entity certificate.

    ``subject`` and ``issuer`` are RFC 4514 strings and ``subject_alt_names`` the bare
    subjectAltName values (DNS names, IP addresses, URIs, e-mail addresses), all as received:
    untrusted unless ``verified`` (the chain verified against the configured CAs, and on an
    outbound connection the certificate names ``server_name``, the name it had to carry).
    """
    return PeerCertificate(
        sha256_fingerprint=fingerprint(certificate),
        subject=certificate.subject.rfc4514_string(),
        issuer=certificate.issuer.rfc4514_string(),
        verified=verified,
        subject_alt_names=alt_name_values(certificate),
        server_name=server_name,
    )


def subject_alt_names(certificate: x509.Certificate) -> x509.SubjectAlternativeName | None:
    """The subjectAltName extension, or None when it is absent or does not parse (a peer's
    certificate is untrusted input: cryptography parses extensions lazily and raises
    ValueError for malformed ones)."""
    try:
        return certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (x509.ExtensionNotFound, ValueError):
        return None


def alt_name_values(certificate: x509.Certificate) -> tuple[str, ...]:
    """The subjectAltName values device binding compares (vendors put a MAC address or a
    device name there): dNSName, iPAddress, URI and rfc822Name, in that order."""
    san = subject_alt_names(certificate)
    if san is None:
        return ()
    values: list[str] = list(san.get_values_for_type(x509.DNSName))
    values += [str(address) for address in san.get_values_for_type(x509.IPAddress)]
    values += san.get_values_for_type(x509.UniformResourceIdentifier)
    values += san.get_values_for_type(x509.RFC822Name)
    return tuple(values)


# --------------------------------------------------------------------------------------------
# The generated default certificate


def generate_self_signed(
    hosts: Iterable[str], *, now: datetime.datetime, common_name: str = "voipgw"
) -> tuple[bytes, bytes]:
    """A new self-signed ECDSA P-256 certificate and its key, both PEM (certificate, key).

    ``hosts`` become subjectAltName entries: IP addresses as iPAddress, anything else as dNSName.
    The certificate serves as a TLS server and as a TLS client (mutual TLS towards trunks).
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    alt_names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):  # ordered, without duplicates
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt_names.append(x509.DNSName(host))
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        # An hour of slack for peers whose clocks run behind ours.
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + GENERATED_VALIDITY)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    certificate = builder.sign(key, hashes.SHA256())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem


def default_hosts(listen_host: str) -> list[str]:
    """subjectAltName entries for the generated certificate of a listener on ``listen_host``:
    127.0.0.1, the listener's own address (unless it is a wildcard) and ``localhost``."""
    hosts = ["127.0.0.1"]
    if listen_host not in _WILDCARD_HOSTS:
        hosts.append(str(ipaddress.ip_address(listen_host)))
    hosts.append("localhost")
    return hosts


def ensure_self_signed(
    directory: Path, hosts: Sequence[str], *, now: datetime.datetime
) -> tuple[CertificatePaths, bool]:
    """The generated certificate in ``directory``, created on first use; (paths, created).

    An existing pair is reused as it is, so a fingerprint peers pinned stays valid across
    restarts. The directory is made owner-only (0700) and the key file 0600. Files are written
    under temporary names and renamed, so a crash never leaves a certificate without its key.
    """
    paths = CertificatePaths(directory / GENERATED_CERTIFICATE, directory / GENERATED_KEY)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    if paths.certificate.is_file() and paths.private_key.is_file():
        return paths, False
    certificate_pem, key_pem = generate_self_signed(hosts, now=now)
    _write_new(paths.private_key, key_pem, mode=0o600)
    _write_new(paths.certificate, certificate_pem, mode=0o644)
    return paths, True


def _write_new(path: Path, data: bytes, *, mode: int) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
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


# --------------------------------------------------------------------------------------------
# Reading certificate files


def load_certificates(path: Path) -> list[x509.Certificate]:
    """Every certificate in a PEM file (a chain or a CA bundle); CertificateError if none."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CertificateError(f"cannot read {path}: {exc.strerror}") from None
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise CertificateError(f"{path} holds no PEM certificate") from None
    return certificates


def loaded_certificate(path: Path) -> LoadedCertificate:
    """The leaf (first certificate) of the PEM chain in ``path``, as start-up and reload log
    it and the metrics show its expiry; CertificateError when the file cannot be used."""
    leaf = load_certificates(path)[0]
    try:
        subject = leaf.subject.rfc4514_string()
    except ValueError:
        subject = "<unparseable subject>"
    return LoadedCertificate(
        path=str(path),
        subject=subject,
        sha256_fingerprint=fingerprint(leaf),
        not_before=leaf.not_valid_before_utc.timestamp(),
        not_after=leaf.not_valid_after_utc.timestamp(),
    )


def validity_problem(certificate: LoadedCertificate, *, now: float) -> str | None:
    """Why ``certificate`` is outside its validity period at ``now`` (RFC 5280 §4.1.2.5:
    peers refuse it), else None. Start-up warns of it; a reload refuses such a replacement,
    keeping the certificate it had (copying an old file over a renewed one is the usual
    mistake)."""
    if certificate.not_before <= now <= certificate.not_after:
        return None
    if now > certificate.not_after:
        problem = f"expired on {_utc(certificate.not_after)}"
    else:
        problem = f"is not valid before {_utc(certificate.not_before)}"
    return f"{certificate.path}: the certificate {problem} (subject {certificate.subject})"


def expires_soon(certificate: LoadedCertificate, *, now: float) -> tuple[str, int] | None:
    """When ``certificate`` expires within :data:`EXPIRY_WARNING_DAYS` of ``now`` and has not
    yet (:func:`validity_problem` says that): its notAfter as the messages write it and the
    whole days left (0 on its last day); else None."""
    left = certificate.not_after - now
    if not 0 <= left <= EXPIRY_WARNING_DAYS * 86400:
        return None
    return _utc(certificate.not_after), int(left // 86400)


def expiry_warning(certificate: LoadedCertificate, *, now: float) -> str | None:
    """``the certificate in PATH expires on DATE (in N days): renew it`` while
    :func:`expires_soon`, else None."""
    soon = expires_soon(certificate, now=now)
    if soon is None:
        return None
    date, days = soon
    return f"the certificate in {certificate.path} expires on {date} (in {days} days): renew it"


def expiry_report(
    key: str, certificates: Sequence[LoadedCertificate], *, now: float, refusal: str
) -> list[tuple[bool, str]]:
    """``voipgw check-config``'s words on certificates the gateway presents, ``key`` naming
    them in their table: (True, ``"KEY: PATH: the certificate expired on ...: REFUSAL"``) for
    one outside its validity period (an error: every peer that verifies refuses it),
    (False, ``"KEY: the certificate in PATH expires on ...: renew it"``) for one expiring
    within :data:`EXPIRY_WARNING_DAYS` (a warning)."""
    report = []
    for certificate in certificates:
        problem = validity_problem(certificate, now=now)
        if problem is not None:
            report.append((True, f"{key}: {problem}: {refusal}"))
        elif (warning := expiry_warning(certificate, now=now)) is not None:
            report.append((False, f"{key}: {warning}"))
    return report


def _utc(timestamp: float) -> str:
    return f"{datetime.datetime.fromtimestamp(timestamp, datetime.UTC):%Y-%m-%d %H:%M:%S} UTC"


def names_in(certificate: x509.Certificate) -> list[str]:
    """The subjectAltName entries a name check looks at, for log lines: DNS names, IP addresses
    and SIP URIs."""
    san = subject_alt_names(certificate)
    if san is None:
        return []
    names: list[str] = [f"DNS:{name}" for name in san.get_values_for_type(x509.DNSName)]
    names += [f"IP:{address}" for address in san.get_values_for_type(x509.IPAddress)]
    names += [f"URI:{uri}" for uri in san.get_values_for_type(x509.UniformResourceIdentifier)]
    return names


# --------------------------------------------------------------------------------------------
# Name checks for certificates of peers we connect to


def matches_name(certificate: x509.Certificate, name: str) -> bool:
    """Whether ``certificate`` is for ``name``: an IP address or a DNS name (a SIP domain).

    - An IP address matches an iPAddress subjectAltName exactly (RFC 6125 §1.7.2 leaves IPs to
      the application; RFC 5922 §7.2 needs an exact match).
    - A DNS name matches a dNSName (RFC 6125 §6.4; a ``*`` is allowed only as the whole
      left-most label and covers exactly one label) or a ``sip:`` URI whose host is the name
      (RFC 5922 §7.1, without user part, port or parameters).

    The subject CN is never consulted: RFC 5922 §7.1 allows it only without subjectAltName, and
    RFC 6125 §6.4.4 discourages it; certificates without subjectAltName do not match.
    """
    san = subject_alt_names(certificate)
    if san is None:
        return False
    try:
        address = ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        address = None
    if address is not None:
        return address in san.get_values_for_type(x509.IPAddress)
    wanted = _normalize_dns(name)
    if wanted is None:
        return False
    for dns_name in san.get_values_for_type(x509.DNSName):
        if _dns_matches(dns_name, wanted):
            return True
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
        scheme, _, host = uri.partition(":")
        if scheme.lower() in ("sip", "sips") and _normalize_dns(host) == wanted:
            return True
    return False


def _normalize_dns(name: str) -> str | None:
    name = name.rstrip(".").lower()
    if not name or any(not label for label in name.split(".")):
        return None
    return name


def _dns_matches(pattern: str, wanted: str) -> bool:
    normalized = _normalize_dns(pattern)
    if normalized is None:
        return False
    labels = normalized.split(".")
    wanted_labels = wanted.split(".")
    if "*" not in normalized:
        return labels == wanted_labels
    # RFC 6125 §6.4.3: only "*" as the complete left-most label, never in a public-suffix-like
    # two-label pattern ("*.com"), and it stands for exactly one label.
    if labels[0] != "*" or "*" in "".join(labels[1:]) or len(labels) < 3:
        return False
    return len(wanted_labels) == len(labels) and wanted_labels[1:] == labels[1:]


def key_open_to_others(path: Path) -> int | None:
    """The permission bits of the private key file ``path`` when its group or others may read
    or write it (a key must be 0600 or 0400), else None (also when it cannot be looked at: the
    loader says why)."""
    try:
        mode = path.stat().st_mode & 0o777
    except OSError:
        return None
    return mode if mode & 0o077 else None
