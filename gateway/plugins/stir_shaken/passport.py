"""PASSporT (RFC 8225) with the SHAKEN extension (RFC 8588) in a SIP Identity header (RFC 8224):
making one, reading one from the network, checking its claims. Sans-IO: time comes in as
``now`` (Unix seconds), certificates and keys as ``cryptography`` objects.

A PASSporT is a JWS in compact form, ``base64url(header).base64url(payload).base64url(sig)``:

- header ``{"alg":"ES256","ppt":"shaken","typ":"passport","x5u":URL}`` (RFC 8225 §4, RFC 8588
  §6); payload ``{"attest":A|B|C,"dest":{"tn":[...]},"iat":...,"orig":{"tn":...},"origid":...}``
  (RFC 8588 §4), both serialized as RFC 8225 §9 asks: keys sorted, no whitespace, so that
  anyone rebuilding the PASSporT from SIP (compact form) gets the same bytes;
- numbers canonical (RFC 8224 §8.3): digits only, no ``+`` and no visual separators;
- the signature ES256 (RFC 7518 §3.4): ECDSA P-256 SHA-256, as the raw 64 bytes r || s, not
  the DER that ``cryptography`` makes and takes.

The header is ``Identity: JWS;info=<x5u>;alg=ES256;ppt=shaken`` (RFC 8224 §4.1; SHAKEN sends
the full form, ATIS-1000074 §5.3.1).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any
from urllib.parse import urlsplit

import attrs
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

ALG = "ES256"
PPT = "shaken"
TYP = "passport"
ATTESTATIONS = ("A", "B", "C")
# RFC 8224 §6.2.1: a verifier rejects a PASSporT whose iat is more than 60 s from now.
DEFAULT_FRESHNESS = 60.0

# Bounds on what a trunk sends (STYLE.md habit 5): a SHAKEN Identity header is about 500 bytes;
# ten times that is ample, and each part of the JWS has its own ceiling.
MAX_IDENTITY_HEADER = 4096
MAX_IDENTITY_HEADERS = 4  # per INVITE: a call passed through several signers, at most
MAX_JOSE_HEADER = 512
MAX_PAYLOAD = 2048
MAX_DEST_NUMBERS = 16
MAX_NUMBER_DIGITS = 32  # E.164 has 15; room for a national plan's longer forms
SIGNATURE_BYTES = 64  # ES256: r || s, 32 bytes each (RFC 7518 §3.4)
P256_BYTES = 32

_B64URL = re.compile(r"[A-Za-z0-9_-]*\Z")
_INFO = re.compile(r";\s*info\s*=\s*<([^<>]*)>", re.IGNORECASE)
_TN = re.compile(rf"[0-9*#]{{1,{MAX_NUMBER_DIGITS}}}\Z")


class PassportError(Exception):
    """A PASSporT or Identity header we cannot accept. ``outcome`` is the metrics label;
    ``status`` the SIP answer RFC 8224 §6.2.2 (and ATIS-1000074 §5.3.1) gives it."""

    def __init__(self, reason: str, *, outcome: str = "invalid", status: int = 438) -> None:
        super().__init__(reason)
        self.reason = reason
        self.outcome = outcome
        self.status = status


# -- encoding ---------------------------------------------------------------------------------


def canonical_json(value: dict[str, Any]) -> bytes:
    """RFC 8225 §9: keys in lexicographic order, no whitespace, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def b64url(data: bytes) -> str:
    """base64url without padding (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode_untrusted(text: str, limit: int) -> bytes:
    """base64url without padding, at most ``limit`` bytes decoded."""
    if len(text) > (limit * 4 + 2) // 3 or not _B64URL.match(text) or len(text) % 4 == 1:
        raise PassportError("not base64url, or too long")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise PassportError("not base64url") from None


def canonical_tn(number: str) -> str:
    """RFC 8224 §8.3: a telephone number as the PASSporT carries it: the leading ``+`` and
    visual separators dropped."""
    return "".join(c for c in number if c.isdigit() or c in "*#")


# -- signing ----------------------------------------------------------------------------------


def raw_signature(der: bytes) -> bytes:
    """An ECDSA signature from ``cryptography`` (DER) as JWS wants it: r || s (RFC 7518
    §3.4)."""
    r, s = decode_dss_signature(der)
    return r.to_bytes(P256_BYTES, "big") + s.to_bytes(P256_BYTES, "big")


def der_signature(raw: bytes) -> bytes:
    if len(raw) != SIGNATURE_BYTES:
        raise PassportError("an ES256 signature is 64 bytes")
    return encode_dss_signature(
        int.from_bytes(raw[:P256_BYTES], "big"), int.from_bytes(raw[P256_BYTES:], "big")
    )


@attrs.frozen
class Claims:
    """A SHAKEN PASSporT's payload."""

    attest: str
    orig: str  # canonical number (RFC 8224 §8.3)
    dest: tuple[str, ...]
    iat: int
    origid: str

    def payload(self) -> dict[str, Any]:
        return {
            "attest": self.attest,
            "dest": {"tn": list(self.dest)},
            "iat": self.iat,
            "orig": {"tn": self.orig},
            "origid": self.origid,
        }


def sign_passport(claims: Claims, x5u: str, key: ec.EllipticCurvePrivateKey) -> str:
    """The compact JWS of ``claims`` signed with ``key`` (ES256), its certificate at ``x5u``."""
    header = {"alg": ALG, "ppt": PPT, "typ": TYP, "x5u": x5u}
    signing_input = f"{b64url(canonical_json(header))}.{b64url(canonical_json(claims.payload()))}"
    der = key.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256()))
    return f"{signing_input}.{b64url(raw_signature(der))}"


def identity_header(jws: str, x5u: str) -> str:
    """The Identity header value for ``jws`` (RFC 8224 §4.1, full form)."""
    return f"{jws};info=<{x5u}>;alg={ALG};ppt={PPT}"


# -- reading ----------------------------------------------------------------------------------


@attrs.frozen
class Passport:
    """A PASSporT read from an Identity header; its signature not yet verified."""

    x5u: str
    claims: Claims
    signing_input: bytes
    signature: bytes  # raw r || s


def parse_identity_untrusted(value: str) -> Passport:
    """Read one Identity header value (RFC 8224 §4.1) from a trunk. Raises PassportError with
    the outcome and the SIP status to refuse it with."""
    if len(value) > MAX_IDENTITY_HEADER:
        raise PassportError("Identity header too long")
    # RFC 8224 §4.1: ident-info is a URI in angle brackets, which may itself hold ";": taken
    # out first, the other parameters are split on ";".
    info: str | None = None
    found = _INFO.search(value)
    if found is not None:
        info = found[1]
        value = value[: found.start()] + value[found.end() :]
    jws, *params = (part.strip() for part in value.split(";"))
    for param in params:
        name, _, text = param.partition("=")
        name = name.strip().lower()
        text = text.strip()
        if name == "info":
            if not (text.startswith("<") and text.endswith(">")):
                raise PassportError("info parameter not in angle brackets", outcome="malformed")
            info = text[1:-1]
        elif name == "alg" and text != ALG:
            # RFC 8224 §6.2.2 / ATIS-1000074: an algorithm we do not take is 437.
            raise PassportError(f"alg {text[:16]!r} not supported", outcome="malformed", status=437)
        elif name == "ppt" and text.strip('"') != PPT:
            raise PassportError(f"ppt {text[:16]!r} is not shaken", outcome="unsupported")
    parts = jws.split(".")
    if len(parts) != 3 or not all(parts):
        raise PassportError("not a compact JWS (full form)", outcome="malformed")
    header = _json_object(b64url_decode_untrusted(parts[0], MAX_JOSE_HEADER), "header")
    payload = _json_object(b64url_decode_untrusted(parts[1], MAX_PAYLOAD), "payload")
    signature = b64url_decode_untrusted(parts[2], SIGNATURE_BYTES)
    if len(signature) != SIGNATURE_BYTES:
        raise PassportError("an ES256 signature is 64 bytes", outcome="malformed")
    if header.get("alg") != ALG:
        raise PassportError("PASSporT alg is not ES256", outcome="malformed", status=437)
    if header.get("ppt") != PPT:
        raise PassportError("PASSporT ppt is not shaken", outcome="unsupported")
    if header.get("typ", TYP) != TYP:
        raise PassportError("PASSporT typ is not passport", outcome="malformed")
    x5u = header.get("x5u")
    if not isinstance(x5u, str) or not x5u.startswith("https://") or len(x5u) > 512:
        # ATIS-1000074 §5.3.1: the certificate comes over HTTPS only.
        raise PassportError("x5u is not an https URL", outcome="bad_info", status=436)
    if not _has_host(x5u):
        # "https://[::1/", "https://h:99999/", "https:///x.pem": no server to fetch from (and
        # urlsplit's ValueError, out of the service, was a traceback for each such call).
        raise PassportError("x5u names no host to fetch from", outcome="bad_info", status=436)
    if info is not None and info != x5u:
        raise PassportError("info and x5u differ", outcome="malformed")
    return Passport(
        x5u=x5u,
        claims=_claims(payload),
        signing_input=f"{parts[0]}.{parts[1]}".encode("ascii"),
        signature=signature,
    )


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        # json recurses once per nesting level: MAX_PAYLOAD octets of "[" go past Python's
        # recursion limit. A PASSporT nests three deep (RFC 8225 §5), so that is just not JSON
        # we take.
        raise PassportError(f"PASSporT {what} is not JSON", outcome="malformed") from None
    if not isinstance(value, dict):
        raise PassportError(f"PASSporT {what} is not a JSON object", outcome="malformed")
    return value


def _has_host(url: str) -> bool:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:  # an unclosed IPv6 bracket, a port out of range, NFKC-changing letters
        return False
    return bool(parts.hostname)


def _claims(payload: dict[str, Any]) -> Claims:
    attest = payload.get("attest")
    if attest not in ATTESTATIONS:
        raise PassportError("attest is not A, B or C", outcome="malformed")
    orig = payload.get("orig")
    orig_tn = orig.get("tn") if isinstance(orig, dict) else None
    if not isinstance(orig_tn, str) or not _TN.match(orig_tn):
        raise PassportError("orig has no telephone number", outcome="malformed")
    dest = payload.get("dest")
    dest_tn = dest.get("tn") if isinstance(dest, dict) else None
    if (
        not isinstance(dest_tn, list)
        or not 0 < len(dest_tn) <= MAX_DEST_NUMBERS
        or not all(isinstance(tn, str) and _TN.match(tn) for tn in dest_tn)
    ):
        raise PassportError("dest has no telephone numbers", outcome="malformed")
    iat = payload.get("iat")
    if not isinstance(iat, int) or isinstance(iat, bool) or not 0 <= iat < 2**40:
        raise PassportError("iat is not a time", outcome="malformed")
    origid = payload.get("origid")
    if not isinstance(origid, str) or not origid or len(origid) > 64:
        raise PassportError("origid missing", outcome="malformed")
    return Claims(attest=attest, orig=orig_tn, dest=tuple(dest_tn), iat=iat, origid=origid)


# -- checking ---------------------------------------------------------------------------------


def check_claims(
    passport: Passport,
    *,
    calling: tuple[str, ...],
    called: str | None,
    now: float,
    freshness: float = DEFAULT_FRESHNESS,
) -> None:
    """RFC 8224 §6.2: the PASSporT is fresh and is about this call: its orig is the caller's
    number (From or P-Asserted-Identity) and the number called is among its dest."""
    claims = passport.claims
    if abs(now - claims.iat) > freshness:
        # RFC 8224 §6.2.1: 403 with the reason phrase "Stale Date".
        raise PassportError("iat is not fresh", outcome="stale", status=403)
    if claims.orig not in {canonical_tn(number) for number in calling if number}:
        raise PassportError("orig is not the caller's number", outcome="wrong_number")
    if called is None or canonical_tn(called) not in claims.dest:
        raise PassportError("dest is not the number called", outcome="wrong_number")


def verify_signature(passport: Passport, key: ec.EllipticCurvePublicKey) -> None:
    """The ES256 signature over the received header and payload (RFC 7515 §5.2)."""
    try:
        key.verify(
            der_signature(passport.signature), passport.signing_input, ec.ECDSA(hashes.SHA256())
        )
    except InvalidSignature:
        raise PassportError("signature does not verify", outcome="bad_signature") from None


# -- the verdict towards the callee -----------------------------------------------------------

PASSED = "TN-Validation-Passed"
FAILED = "TN-Validation-Failed"
NO_VALIDATION = "No-TN-Validation"


def verstat(outcome: str) -> str:
    """ATIS-1000074 §5.3.1 (and 3GPP TS 24.229 §7.2A.20): the verstat a phone gets for an
    outcome: passed; no validation where there was nothing to validate (no Identity header,
    or one of another PASSporT type); failed for everything else. A call verified but for its
    certificate's revocation (the CRL could not be had) is passed: the plugin's
    ``revocation_unavailable = "pass"``."""
    if outcome in ("passed", "passed_revocation_unknown"):
        return PASSED
    if outcome in ("no_identity", "unsupported"):
        return NO_VALIDATION
    return FAILED
