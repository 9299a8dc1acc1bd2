"""Device binding: an account usable only from the devices (TLS client certificates) it was
issued for (issue #4).

A provider binds an account to the certificate a phone carries from the factory, so stolen SIP
credentials are worthless on any other device. The check runs after digest authentication has said
*who* the request claims to be; it decides whether the *connection* may speak for that account:

- ``require_tls``: the request must have arrived over TLS;
- each ``CertificateMatch`` of the account names an acceptable certificate:
  ``fingerprint`` — the SHA-256 of the certificate (works on any TLS listener, verified chain or
  not, RFC 8122 §5 style pinning); ``subject`` — ``SUBJECT`` or ``SUBJECT|ISSUER``: the certificate
  must have been verified against a configured CA (mutual mode), its subject CN or one of its
  subjectAltNames must equal ``SUBJECT`` (vendors put the MAC address there), and, when given, its
  issuer CN must equal ``ISSUER``.

An account with matches refuses every connection that does not present one of them: plain UDP/TCP
even with the right password, and TLS with another account's certificate.
"""

from __future__ import annotations

import attrs

from gateway.core.store.interface import Account, CertificateMatch
from gateway.core.transport.flows import PeerCertificate


@attrs.frozen
class DeviceRefused:
    """The connection may not be used for this account; ``reason`` is safe for a reason phrase
    and the log (names the account's rule, never a secret)."""

    reason: str


def check_device(
    account: Account, *, secure: bool, certificate: PeerCertificate | None
) -> DeviceRefused | None:
    """None when ``account`` may be used over this connection, else why not."""
    if account.require_tls and not secure:
        return DeviceRefused(f"account {account.name} may only be used over TLS")
    if not account.certificate_matches:
        return None
    if certificate is None:
        return DeviceRefused(f"account {account.name} requires its device certificate")
    for match in account.certificate_matches:
        if _matches(match, certificate):
            return None
    return DeviceRefused(f"certificate is not bound to account {account.name}")


def _matches(match: CertificateMatch, certificate: PeerCertificate) -> bool:
    if match.kind == "fingerprint":
        return certificate.sha256_fingerprint.replace(":", "").lower() == match.value
    if match.kind == "subject":
        if not certificate.verified:
            return False  # a subject is only as good as the CA that signed it
        subject, _, issuer = match.value.partition("|")
        if issuer and common_name(certificate.issuer) != issuer:
            return False
        names = {common_name(certificate.subject), *certificate.subject_alt_names}
        return subject in names
    return False


def common_name(distinguished_name: str) -> str:
    """The CN of an RFC 4514 distinguished name (``CN=00:15:65:aa:bb:cc,O=Vendor``), or the
    whole string when it has no CN."""
    for part in _split_rdns(distinguished_name):
        key, sep, value = part.partition("=")
        if sep and key.strip().upper() == "CN":
            return value.strip()
    return distinguished_name


def _split_rdns(text: str) -> list[str]:
    # RFC 4514 §3: RDNs are separated by unescaped commas.
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            current.append(char)
            escaped = True
        elif char == ",":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts
