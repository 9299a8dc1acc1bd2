"""Account field rules and HA1 derivation shared by every store backend.

Validation errors name the field, never its value when the field is secret.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from gateway.core.auth.algorithms import ALL_ALGORITHMS, compute_ha1
from gateway.core.store.errors import InvalidValue
from gateway.core.store.interface import CERTIFICATE_MATCH_KINDS, CertificateMatch, Credential

MAX_NAME_LENGTH = 64
MAX_REALM_LENGTH = 128
MAX_PASSWORD_LENGTH = 256
MAX_TEXT_LENGTH = 256

# RFC 3261 §25.1: user = 1*( unreserved / escaped / user-unreserved ). Escapes are not allowed in
# a stored name: the name is the unescaped user part.
_USER_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    "-_.!~*'()"  # mark
    "&=+$,;?/"  # user-unreserved
)
_HEX = frozenset("0123456789abcdef")

ACCOUNT_FIELDS = frozenset(
    {
        "display_name",
        "enabled",
        "media_policy",
        "require_tls",
        "max_calls",
        "certificate_matches",
        "password",
        "realm",
    }
)


def check_name(name: object) -> str:
    """An account name: the SIP user part, 1-64 characters of RFC 3261 ``user``."""
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_NAME_LENGTH:
        raise InvalidValue(f"account name must be 1-{MAX_NAME_LENGTH} characters")
    if any(c not in _USER_CHARS for c in name):
        raise InvalidValue(
            f"account name {name!r} may hold only letters, digits and -_.!~*'()&=+$,;?/"
        )
    return name


def check_realm(realm: object) -> str:
    if not isinstance(realm, str) or not 1 <= len(realm) <= MAX_REALM_LENGTH:
        raise InvalidValue(f"realm must be 1-{MAX_REALM_LENGTH} characters")
    if any(ord(c) < 0x20 or c in '"\\\x7f' for c in realm):
        raise InvalidValue("realm must not contain quotes, backslashes or control characters")
    return realm


def check_password(password: object) -> str:
    # Never mention the value: it is the secret.
    if not isinstance(password, str) or not 1 <= len(password) <= MAX_PASSWORD_LENGTH:
        raise InvalidValue(f"password must be 1-{MAX_PASSWORD_LENGTH} characters")
    return password


def check_text(field: str, value: object, *, optional: bool) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or len(value) > MAX_TEXT_LENGTH:
        raise InvalidValue(f"{field} must be text of at most {MAX_TEXT_LENGTH} characters")
    if not optional and not value:
        raise InvalidValue(f"{field} must not be empty")
    if any(ord(c) < 0x20 or c == "\x7f" for c in value):
        raise InvalidValue(f"{field} must not contain control characters")
    return value


MAX_CALLS_LIMIT = 10_000  # the gateway's own ceiling (CallManager.max_calls)


def check_max_calls(value: object) -> int:
    """Calls in progress from or to an account at once: 0 (no limit) to MAX_CALLS_LIMIT."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidValue("max_calls must be a whole number")
    if not 0 <= value <= MAX_CALLS_LIMIT:
        raise InvalidValue(f"max_calls must be 0 (no limit) to {MAX_CALLS_LIMIT}")
    return value


def check_bool(field: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise InvalidValue(f"{field} must be true or false")
    return value


def check_certificate_matches(value: object) -> tuple[CertificateMatch, ...]:
    """A collection of :class:`CertificateMatch` or ``(kind, value)`` pairs, normalized:
    fingerprints become lower-case hex without colons."""
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise InvalidValue("certificate_matches must be a collection of (kind, value) pairs")
    out: list[CertificateMatch] = []
    for item in value:
        if isinstance(item, CertificateMatch):
            kind, text = item.kind, item.value
        elif isinstance(item, tuple) and len(item) == 2:
            kind, text = item
        else:
            raise InvalidValue("certificate_matches must be a collection of (kind, value) pairs")
        if kind not in CERTIFICATE_MATCH_KINDS:
            raise InvalidValue(f"certificate match kind must be one of {CERTIFICATE_MATCH_KINDS}")
        checked = check_text("certificate match", text, optional=False)
        assert checked is not None
        if kind == "fingerprint":
            checked = checked.replace(":", "").lower()
            if len(checked) != 64 or any(c not in _HEX for c in checked):
                raise InvalidValue("a fingerprint is a SHA-256 digest: 64 hex digits")
        match = CertificateMatch(kind, checked)
        if match not in out:
            out.append(match)
    return tuple(out)


def derive_credentials(name: str, password: str, realms: Iterable[str]) -> tuple[Credential, ...]:
    """HA1 for every realm and every algorithm (RFC 8760 §3); the password is not kept."""
    return tuple(
        Credential(realm, algorithm, compute_ha1(algorithm, name, realm, password))
        for realm in realms
        for algorithm in ALL_ALGORITHMS
    )


def check_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """Validate ``accounts_set`` keyword fields; returns them normalized."""
    unknown = sorted(set(fields) - ACCOUNT_FIELDS)
    if unknown:
        raise InvalidValue(f"unknown account field(s): {', '.join(unknown)}")
    out: dict[str, Any] = {}
    for field, value in fields.items():
        if field == "display_name":
            out[field] = check_text(field, value, optional=True)
        elif field == "media_policy":
            out[field] = check_text(field, value, optional=False)
        elif field in ("enabled", "require_tls"):
            out[field] = check_bool(field, value)
        elif field == "max_calls":
            out[field] = check_max_calls(value)
        elif field == "certificate_matches":
            out[field] = check_certificate_matches(value)
        elif field == "password":
            out[field] = check_password(value)
        elif field == "realm":
            out[field] = check_realm(value)
    if "realm" in out and "password" not in out:
        raise InvalidValue("changing the realm needs the password (HA1 is derived from it)")
    return out
