"""The ``sdes`` key exchange: SRTP master keys in SDP a=crypto lines (RFC 4568).

Theory of operation
-------------------
Each a=crypto line of an offer is one alternative: a tag (unique in the m= section), a
crypto-suite, the key its author will encrypt with, and session parameters (RFC 4568 §5, §9.1).
The answerer picks one acceptable line and answers with the same tag and suite and *its own* key
(§5.1.2, §7.1.2). So each stream of each leg has two independent master keys, one per direction:
ours protects what the gateway sends to the leg (``SrtpKeys.local_key``), the peer's protects what
the leg sends us (``SrtpKeys.remote_key``). Keys are master key then master salt, exactly the
bytes of the ``inline:`` key-salt (RFC 4568 §6.1).

One :class:`SdesNegotiation` is one stream's exchange on one leg; it is sans-IO and driven by the
core through ``interfaces.KeyNegotiation``. :class:`SdesKeyExchange` (the registered
``interfaces.KeyExchange``) creates them:

- ``offer()``: one line per suite the leg's policy allows, in the policy's order (only suites
  ``srtp.SUPPORTED_SUITES`` can protect), tags 1..n, a fresh key per line. The answer goes to
  ``remote_sdp_attributes()``; once it is checked, ``KeysReady`` is queued. An answer that
  repeats the key we offered (a peer that copies the offer) is refused: both directions would
  share one key, and our own packets sent back to us would authenticate.
- ``answer()``: among the offered lines whose suite the policy allows and whose parameters we
  support, the one whose suite comes first in the leg's policy order (strongest first by
  default) is accepted; RFC 4568 §7.1.1 leaves the choice among acceptable lines to the
  answerer, and an offer listing AES_CM_128_HMAC_SHA1_32 before _80 (or before AEAD_AES_128_GCM)
  must not get the 32-bit tag only because it came first. A re-offer's line with the suite and
  peer key in force is taken first (§7.1.4: no re-key mid-call). ``answer_suite =
  "offer-order"`` restores the first acceptable line. The others are skipped, as RFC 4568
  §7.1.2 asks, never failing the whole offer. ``KeysReady`` is queued at once. When no line is
  acceptable the negotiation fails with ``NegotiationFailed(reason, 488)``; the reason lists
  why each line was skipped.
- re-INVITE/UPDATE (RFC 4568 §7.1.4): ``offer(previous=...)`` and ``answer(..., previous=...)``
  keep the keys in force when nothing changed: a re-offer repeats the tag, suite and our key of the
  line in force; an answer to a re-offer whose accepted line has the same suite and the same peer
  key keeps our key. Keeping a key keeps the SRTP context (roll-over counter and replay state go
  on), so no ``KeysReady`` is queued then. Whenever the suite or the peer's key changes we also
  take a fresh key of our own, so a new context never restarts the packet index under a key that
  was already used (RFC 3711 §9.1: a key must never see the same index twice).

SDES carries nothing on the media path: ``claims_packet`` is always False, ``packets_to_send`` is
always empty and there are no timers.

Keys travel in clear inside the SDP, so they may only be sent and accepted over TLS-protected
signalling (RFC 4568 §8.1). Deciding what a leg without TLS gets instead is the core's policy, but
a negotiation created with ``secure_signalling=False`` fails at once and never makes or accepts a
key, so a mistake upstream cannot put a key on the wire in clear.

Key lifetimes (RFC 4568 §6.1, RFC 3711 §9.2): the lifetime binds the key's *sender*, who must
re-key (a new offer) before it runs out; a receiver that goes on accepting the key gives nothing
away (the key's cryptographic limit, 2^48 packets, libsrtp enforces itself). So by default every
lifetime the RFC allows (1..2^48) is accepted, as rtpengine does: phones that write short ones
exist (Grandstream's made rtpengine drop its check, rtpengine issue #57), and refusing them would
turn their calls into 488s for no gain. The stated lifetime is in the leg's record
(``sdes_peer_key_lifetime``). An operator who wants keys that outlast any call without a re-key
sets ``min_peer_key_lifetime`` (e.g. 2^31, SRTCP's own limit): shorter lines are then skipped,
the reason saying so. The gateway never re-keys an SDES stream on its own nor counts packets per
key. Our own keys carry no lifetime (the SRTP default, 2^48).

MKI (RFC 4568 §6.1, RFC 3711 §3.1): a line whose one key carries an MKI (``|2^31|1:1``, what
carrier SBCs and FreeSWITCH with ``rtp_secure_media_mki`` send; asterisk issue 825 shows one) is
accepted: the MKI describes the packets of the line's author, so it becomes
``SrtpKeys.remote_mki`` and the core checks it in every packet from the peer and takes it out
before unprotecting. Between acceptable lines of one suite, one without an MKI wins over one
with (in either ``answer_suite`` order): a peer offering both got the plain line before MKIs
were accepted and still does, and every peer reads it; a suite ranked higher still wins with
an MKI. Whether *our* line carries one is ``[plugins.sdes] mki``:

- ``"mirror"`` (default): toward a peer whose accepted line has an MKI, our answer line (and our
  re-offers on that stream) carry an MKI of the same length, value 1. A peer that sends MKIs
  reads them; the telnyx FreeSWITCH fork settled on the same rule ("only offer MKI if the remote
  MKI exists", made for Microsoft Teams calls). An initial offer never carries one: we do not
  know yet whether the peer reads MKIs, and many (baresip, Asterisk: issue 825) do not;
- ``"receive-only"``: our lines never carry an MKI (what rtpengine and upstream FreeSWITCH
  answer; RFC 4568 lets each direction choose);
- ``"refuse"``: lines with an MKI are skipped, as before session 34.

Not supported (lines carrying them are skipped, RFC 4568 §7.1.2): key lifetimes below
``min_peer_key_lifetime`` when one is set (above), several master keys in one line (§6.1:
MKI-selected key switching; the reason says one key with an MKI is fine), an MKI when ``mki =
"refuse"``, a key derivation rate other than 0 (§6.3.1), UNENCRYPTED_SRTP, UNENCRYPTED_SRTCP and
UNAUTHENTICATED_SRTP (§6.3.2, §6.3.3), FEC_KEY (§6.3.5) and session parameters we do not know
(§6.3.7). FEC_ORDER (§6.3.4) is accepted and has no effect (we send no FEC); WSH (§6.3.6) is a
hint and is accepted (our replay window is the core's, at least 64).

Untrusted input is bounded (STYLE.md habit 5): see the ``MAX_*`` constants and the keyword
arguments of :func:`parse_crypto_untrusted`. Errors are :class:`SdesError` (an ``SdpError``:
``sip_status`` 488) whose reasons name the defect and never contain key material; key material
never appears in a ``repr``/``str`` either. Suite names from the peer are only echoed when they
are names we know, because a mangled line can put key material where the suite belongs.

Randomness is injected: the engines take ``random_bytes(n) -> bytes`` (a CSPRNG); only the plugin
registration below supplies ``os.urandom``.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hmac
import os
import re
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import attrs

from gateway.core.hookspecs import hookimpl
from gateway.core.interfaces import (
    KeyNegotiationEvent,
    KeysReady,
    NegotiationFailed,
    SrtpKeys,
)
from gateway.core.media.srtp import SUITES, SUPPORTED_SUITES, SrtpSuite
from gateway.core.sdp.errors import SdpError

if TYPE_CHECKING:
    from gateway.core.interfaces import KeyExchange, KeyNegotiation
    from gateway.core.plugins import Registry

__all__ = [
    "DEFAULT_SUITES",
    "MAX_CRYPTO_LENGTH",
    "MAX_CRYPTO_LINES",
    "MAX_KEY_PARAMS",
    "MAX_LIFETIME",
    "MAX_SESSION_PARAMS",
    "MKI_CHOICES",
    "TLS_REQUIRED_REASON",
    "CryptoAttribute",
    "KeyParam",
    "LocalSdesError",
    "Mki",
    "SdesConfig",
    "SdesError",
    "SdesKeyExchange",
    "SdesNegotiation",
    "crypto_values",
    "parse_crypto_untrusted",
    "serialize_crypto",
]

RandomBytes = Callable[[int], bytes]

TLS_REQUIRED_REASON = "SDES keys are only sent over TLS-protected signalling (RFC 4568 §8.1)"
"""The reason of the ``NegotiationFailed`` of a negotiation on a leg without TLS."""

MAX_CRYPTO_LENGTH = 1024
"""Longest a=crypto value we parse (a real one is under 120 characters)."""
MAX_CRYPTO_LINES = 32
"""Most a=crypto lines we look at in one m= section (rtpengine offers 12)."""
MAX_KEY_PARAMS = 16
"""Most ``;``-separated key-params in one line (and in one FEC_KEY)."""
MAX_SESSION_PARAMS = 16
"""Most session parameters in one line."""
MAX_LIFETIME = 1 << 48
"""Largest key lifetime in packets: SRTP's limit per master key (RFC 3711 §9.2)."""
MKI_CHOICES = ("mirror", "receive-only", "refuse")
"""``[plugins.sdes] mki``: whether our lines carry an MKI toward a peer whose line has one, or
never, or whether lines with an MKI are refused (see the module docstring)."""
_OUR_MKI_VALUE = 1  # the value our MKI carries (any fits 1..128 octets; FreeSWITCH sends 1)
ANSWER_SUITE_CHOICES = ("policy-order", "offer-order")
"""How an answer picks among acceptable offered lines: the leg's policy order (default), or the
first acceptable line of the offer (what the gateway did before session 33)."""

_MAX_KEY_CHARS = 128  # base64 of the longest key-salt (46 octets) is 64 characters
_MAX_MKI_LENGTH = 128  # RFC 4568 §6.1: MKI length 1..128 octets
_MAX_KDR = 24  # RFC 4568 §6.3.1: KDR=n means 2^n, n = 0..24
_MIN_WSH = 64  # RFC 4568 §6.3.6 / RFC 3711 §3.3.2: replay window at least 64
_MAX_REASONS = 8  # per-line reasons quoted in a NegotiationFailed

DEFAULT_SUITES: tuple[str, ...] = tuple(
    name
    for name in (
        "AEAD_AES_256_GCM",
        "AEAD_AES_128_GCM",
        "AES_256_CM_HMAC_SHA1_80",
        "AES_192_CM_HMAC_SHA1_80",
        "AES_CM_128_HMAC_SHA1_80",
        "AES_256_CM_HMAC_SHA1_32",
        "AES_192_CM_HMAC_SHA1_32",
        "AES_CM_128_HMAC_SHA1_32",
    )
    if name in SUPPORTED_SUITES
)
"""Suites offered and accepted when the leg's policy lists none: strongest first, the 32-bit
tags last."""

# Suite names we may quote back in a reason. Anything else is called "an unknown crypto-suite":
# in a mangled line the suite field can hold key material.
_KNOWN_SUITE_NAMES = frozenset(SUITES) | {
    "F8_128_HMAC_SHA1_80",  # RFC 4568 §6.2.3
    "F8_128_HMAC_SHA1_32",  # the RFC 4568 §9.2 grammar's erratum, still sent (rtpengine)
    "NULL_HMAC_SHA1_80",
    "NULL_HMAC_SHA1_32",
    "AES_CM_128_NULL_AUTH",
    "AEAD_AES_128_GCM_8",  # FreeSWITCH's 8-octet GCM tag
    "AEAD_AES_256_GCM_8",
    "AES_CM_192_HMAC_SHA1_80",  # FreeSWITCH's aliases of the RFC 6188 names
    "AES_CM_192_HMAC_SHA1_32",
    "AES_CM_256_HMAC_SHA1_80",
    "AES_CM_256_HMAC_SHA1_32",
    "SEED_CTR_128_HMAC_SHA1_80",  # RFC 5669
    "SEED_128_CCM_80",
    "SEED_128_GCM_96",
}


# --------------------------------------------------------------------------------------------
# Errors


class SdesError(SdpError):
    """The peer's a=crypto is malformed or unacceptable: answer ``sip_status`` 488 with
    ``reason`` as the Warning text. The reason never contains key material."""


class LocalSdesError(Exception):
    """The gateway misused this module (a bug, never the peer's fault): a random source that
    returned the wrong number of octets, a value that cannot be serialized, a call out of turn."""


# --------------------------------------------------------------------------------------------
# a=crypto values


def _redacted(_: object) -> str:
    return "<redacted>"


def _count_redacted(values: tuple[str, ...]) -> str:
    return f"<{len(values)} redacted>"


@attrs.frozen
class Mki:
    """A master key identifier: ``value`` carried in ``length`` octets of every SRTP packet
    (RFC 4568 §6.1, RFC 3711 §3.1)."""

    value: int
    length: int

    def to_bytes(self) -> bytes:
        """The MKI as carried in packets: ``value`` big-endian in ``length`` octets."""
        return self.value.to_bytes(self.length, "big")


@attrs.frozen
class KeyParam:
    """One key-param ``inline:<key||salt>[|lifetime][|MKI:length]`` (RFC 4568 §6.1, §9.2).

    ``key_salt`` is master key then master salt; ``lifetime`` is the number of packets the key may
    protect (None: the suite's default, 2^48 for SRTP). The key never shows in ``repr``.
    """

    key_salt: bytes = attrs.field(repr=_redacted)
    lifetime: int | None = None
    mki: Mki | None = None


@attrs.frozen
class CryptoAttribute:
    """One a=crypto line (RFC 4568 §9.1): tag, crypto-suite, key-params, session parameters.

    Parse with :func:`parse_crypto_untrusted`, write with :func:`serialize_crypto`. A suite this
    gateway knows (``srtp.SUITES``) is stored in its canonical upper-case spelling; any other is
    kept as sent. Session parameters (RFC 4568 §6.3): ``kdr`` (KDR=n, None when absent), the three
    flags, ``fec_order``, ``fec_keys`` (FEC_KEY), ``wsh`` (WSH) and unknown ones verbatim in
    ``extensions``. Keys and unknown parameters never show in ``repr``.
    """

    tag: int
    suite: str
    keys: tuple[KeyParam, ...]
    kdr: int | None = None
    unencrypted_srtp: bool = False
    unencrypted_srtcp: bool = False
    unauthenticated_srtp: bool = False
    fec_order: str | None = None
    fec_keys: tuple[KeyParam, ...] = ()
    wsh: int | None = None
    extensions: tuple[str, ...] = attrs.field(default=(), repr=_count_redacted)


_WSP = re.compile(r"[ \t]+")
_TAG = re.compile(r"[0-9]{1,9}")  # RFC 4568 §9.1: tag = 1*9DIGIT
_SUITE = re.compile(r"[A-Za-z0-9_]{1,64}")  # §9.1: 1*(ALPHA / DIGIT / "_"), bounded
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_LIFETIME_POWER = re.compile(r"2\^([0-9]{1,2})")  # §9.2: ["2^"] 1*DIGIT
_LIFETIME_DECIMAL = re.compile(r"[0-9]{1,15}")  # 2^48 has 15 digits
_MKI = re.compile(r"([0-9]{1,309}):([0-9]{1,3})")  # §9.2: mki-value ":" mki-length (1*3DIGIT)
_KDR = re.compile(r"[0-9]{1,2}")  # §9.2: "KDR=" 1*2DIGIT
_WSH = re.compile(r"[0-9]{2,6}")  # §9.2: "WSH=" 2*DIGIT, bounded
_FEC_ORDERS = ("FEC_SRTP", "SRTP_FEC")  # §6.3.4


def parse_crypto_untrusted(
    value: str,
    *,
    max_length: int = MAX_CRYPTO_LENGTH,
    max_key_params: int = MAX_KEY_PARAMS,
    max_session_params: int = MAX_SESSION_PARAMS,
) -> CryptoAttribute:
    """Parse the value of one ``a=crypto:`` line (without ``crypto:``) from the peer.

    Checks the RFC 4568 §9.1/§9.2 grammar, the base64 of every inline key, and for a suite in
    ``srtp.SUITES`` that each key is exactly as long as the suite's master key plus salt. Lifetime
    ``2^n`` or decimal, 1..2^48 packets; MKI length 1..128 octets with a value that fits it; KDR
    0..24; WSH at least 64. Raises :class:`SdesError` (488) on any defect or exceeded limit; its
    reason never contains key material. Whether the line is *acceptable* (suite allowed, no MKI
    ...) is the negotiation's business, not the parser's.
    """
    if len(value) > max_length:
        raise SdesError(f"a=crypto is longer than {max_length} characters")
    # RFC 4568 §9.1: fields are visible characters separated by 1*WSP.
    if any(not (0x21 <= ord(c) <= 0x7E or c in " \t") for c in value):
        raise SdesError("a=crypto contains characters other than visible ASCII and spaces")
    fields = _WSP.split(value.strip(" \t"))
    if len(fields) < 3:
        raise SdesError("a=crypto needs a tag, a crypto-suite and key parameters")
    tag_text, suite_text, key_text, *session_texts = fields
    if not _TAG.fullmatch(tag_text):
        raise SdesError("a=crypto tag is not 1 to 9 digits")
    if not _SUITE.fullmatch(suite_text):
        raise SdesError("a=crypto has a malformed crypto-suite")
    suite = suite_text.upper() if suite_text.upper() in SUITES else suite_text
    srtp_suite = SUITES.get(suite)
    keys = _parse_key_params(key_text, srtp_suite, max_key_params)
    if len(session_texts) > max_session_params:
        raise SdesError(f"a=crypto has more than {max_session_params} session parameters")
    return _with_session_params(
        CryptoAttribute(tag=int(tag_text), suite=suite, keys=keys),
        session_texts,
        srtp_suite,
        max_key_params,
    )


def _parse_key_params(
    text: str, suite: SrtpSuite | None, max_key_params: int
) -> tuple[KeyParam, ...]:
    # RFC 4568 §9.1: key-params = key-param *(";" key-param)
    parts = text.split(";")
    if len(parts) > max_key_params:
        raise SdesError(f"a=crypto has more than {max_key_params} key parameters")
    return tuple(_parse_key_param(part, suite) for part in parts)


def _parse_key_param(text: str, suite: SrtpSuite | None) -> KeyParam:
    method, colon, info = text.partition(":")
    # RFC 4568 §6.1: "inline" is the only key method defined (ABNF strings ignore case).
    if not colon or method.lower() != "inline":
        raise SdesError("a=crypto key method is not inline")
    key_text, *fields = info.split("|")
    if len(fields) > 2:
        raise SdesError("a=crypto inline key has more fields than lifetime and MKI")
    key_salt = _decode_key(key_text, suite)
    lifetime: int | None = None
    mki: Mki | None = None
    for field in fields:
        # RFC 4568 §9.2: key-salt ["|" lifetime] ["|" mki]; only the MKI contains ":".
        if ":" in field:
            if mki is not None:
                raise SdesError("a=crypto inline key has two MKIs")
            mki = _parse_mki(field)
        else:
            if lifetime is not None or mki is not None:
                raise SdesError("a=crypto key lifetime must come once, before the MKI")
            lifetime = _parse_lifetime(field)
    return KeyParam(key_salt=key_salt, lifetime=lifetime, mki=mki)


def _decode_key(text: str, suite: SrtpSuite | None) -> bytes:
    if not text:
        raise SdesError("a=crypto inline key is empty")
    if len(text) > _MAX_KEY_CHARS:
        raise SdesError(f"a=crypto inline key is longer than {_MAX_KEY_CHARS} characters")
    if not _BASE64.fullmatch(text):
        raise SdesError("a=crypto inline key is not base64")
    # RFC 4568 §6.1 sends the "=" padding; some peers leave it out, which is unambiguous.
    # Anything but the canonical encoding (wrong padding, stray low bits) is refused.
    try:
        key_salt = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise SdesError("a=crypto inline key is not valid base64") from None
    canonical = base64.b64encode(key_salt).decode("ascii")
    if text not in (canonical, canonical.rstrip("=")):
        raise SdesError("a=crypto inline key is not valid base64")
    if suite is not None and len(key_salt) != suite.key_salt_length:
        raise SdesError(
            f"{suite.name} needs a {suite.key_salt_length}-octet key and salt, "
            f"the inline key has {len(key_salt)} octets"
        )
    return key_salt


def _parse_lifetime(text: str) -> int:
    if match := _LIFETIME_POWER.fullmatch(text):
        lifetime = 1 << int(match[1])
    elif _LIFETIME_DECIMAL.fullmatch(text):
        lifetime = int(text)
    else:
        raise SdesError("a=crypto key lifetime is malformed")
    if not 1 <= lifetime <= MAX_LIFETIME:
        raise SdesError("a=crypto key lifetime is outside 1..2^48 packets (RFC 3711 §9.2)")
    return lifetime


def _parse_mki(text: str) -> Mki:
    match = _MKI.fullmatch(text)
    if match is None:
        raise SdesError("a=crypto MKI is malformed")
    value, length = int(match[1]), int(match[2])
    if not 1 <= length <= _MAX_MKI_LENGTH:
        raise SdesError(f"a=crypto MKI length is outside 1..{_MAX_MKI_LENGTH} octets")
    if value >= 1 << (8 * length):
        raise SdesError("a=crypto MKI value does not fit its length")
    return Mki(value=value, length=length)


def _with_session_params(
    line: CryptoAttribute,
    texts: Sequence[str],
    suite: SrtpSuite | None,
    max_key_params: int,
) -> CryptoAttribute:
    # RFC 4568 §6.3 (SRTP session parameters), §9.2 grammar; ABNF literals ignore case.
    changes: dict[str, Any] = {}
    extensions: list[str] = []

    def once(name: str, value: object) -> None:
        if name in changes:
            raise SdesError(f"a=crypto repeats the session parameter {name.upper()}")
        changes[name] = value

    for text in texts:
        name, equals, argument = text.partition("=")
        name = name.upper()
        if name == "KDR" and equals:
            if not _KDR.fullmatch(argument) or int(argument) > _MAX_KDR:
                raise SdesError(f"a=crypto KDR is not 0..{_MAX_KDR}")
            once("kdr", int(argument))
        elif name in ("UNENCRYPTED_SRTP", "UNENCRYPTED_SRTCP", "UNAUTHENTICATED_SRTP"):
            if equals:
                raise SdesError(f"a=crypto {name} takes no value")
            once(name.lower(), True)
        elif name == "FEC_ORDER" and equals:
            if argument.upper() not in _FEC_ORDERS:
                raise SdesError("a=crypto FEC_ORDER is neither FEC_SRTP nor SRTP_FEC")
            once("fec_order", argument.upper())
        elif name == "FEC_KEY" and equals:
            once("fec_keys", _parse_key_params(argument, suite, max_key_params))
        elif name == "WSH" and equals:
            if not _WSH.fullmatch(argument) or int(argument) < _MIN_WSH:
                raise SdesError(f"a=crypto WSH is not a window of at least {_MIN_WSH}")
            once("wsh", int(argument))
        else:
            extensions.append(text)  # RFC 4568 §6.3.7: an extension we do not know
    return attrs.evolve(line, extensions=tuple(extensions), **changes)


def serialize_crypto(line: CryptoAttribute) -> str:
    """The value of ``a=crypto:`` for ``line`` (RFC 4568 §9.1). Keys are base64 with padding; a
    lifetime that is a power of two is written ``2^n``, any other in decimal. Session parameters
    come in a fixed order, so ``parse_crypto_untrusted(serialize_crypto(x)) == x``.
    Raises :class:`LocalSdesError` for a line that cannot be written."""
    if not 0 <= line.tag <= 999_999_999 or not _SUITE.fullmatch(line.suite) or not line.keys:
        raise LocalSdesError("a crypto line needs a 1-9 digit tag, a suite name and a key")
    parts = [str(line.tag), line.suite, _format_key_params(line.keys)]
    if line.kdr is not None:
        parts.append(f"KDR={line.kdr}")
    for flag in ("UNENCRYPTED_SRTP", "UNENCRYPTED_SRTCP", "UNAUTHENTICATED_SRTP"):
        if getattr(line, flag.lower()):
            parts.append(flag)
    if line.fec_order is not None:
        parts.append(f"FEC_ORDER={line.fec_order}")
    if line.fec_keys:
        parts.append(f"FEC_KEY={_format_key_params(line.fec_keys)}")
    if line.wsh is not None:
        parts.append(f"WSH={line.wsh}")
    parts.extend(line.extensions)
    return " ".join(parts)


def _format_key_params(keys: Iterable[KeyParam]) -> str:
    return ";".join(_format_key_param(key) for key in keys)


def _format_key_param(key: KeyParam) -> str:
    text = "inline:" + base64.b64encode(key.key_salt).decode("ascii")
    if key.lifetime is not None:
        power = key.lifetime.bit_length() - 1
        is_power = key.lifetime > 0 and key.lifetime == 1 << power
        text += f"|2^{power}" if is_power else f"|{key.lifetime}"
    if key.mki is not None:
        text += f"|{key.mki.value}:{key.mki.length}"
    return text


def crypto_values(attributes: Iterable[tuple[str, str | None]]) -> list[str]:
    """The values of the a=crypto lines among one media section's attributes, in order."""
    return [value or "" for name, value in attributes if name.lower() == "crypto"]


# --------------------------------------------------------------------------------------------
# The negotiation of one stream on one leg


class _State(enum.Enum):
    OFFERED = "offered"  # our offer is out, no answer accepted yet (an answerer never stays here)
    ESTABLISHED = "established"  # both keys are known
    FAILED = "failed"  # terminal


@attrs.define(eq=False, repr=False)
class SdesNegotiation:
    """SDES for one media stream on one leg (``interfaces.KeyNegotiation``), created by
    :class:`SdesKeyExchange`. ``role`` is "offerer" or "answerer"."""

    role: str
    _random_bytes: RandomBytes
    _state: _State
    _local_lines: tuple[CryptoAttribute, ...] = ()
    """What we put in our SDP: every offered line, or our one answer line."""
    _line_in_force: CryptoAttribute | None = None
    """Our line (tag, suite, our key) of the keys in force; what a re-offer repeats."""
    _keys: SrtpKeys | None = None
    _failure: NegotiationFailed | None = None
    _events: deque[KeyNegotiationEvent] = attrs.Factory(deque)
    _peer_lifetime: int | None = None
    """The lifetime the peer stated for its key in force (None: the SRTP default, 2^48)."""
    _min_peer_lifetime: int = 1
    """Shortest lifetime accepted from the peer (``[plugins.sdes] min_peer_key_lifetime``)."""
    _choice: str | None = None
    """How our answer's line was chosen, when the policy order took another than the offer's
    first acceptable line (for the record)."""
    _accept_mki: bool = True
    """False with ``[plugins.sdes] mki = "refuse"``: a peer key with an MKI is refused."""
    _last_read: tuple[tuple[str, ...], tuple[CryptoAttribute, CryptoAttribute] | str] | None = None
    """The a=crypto values of the last answer read and what :meth:`_read_answer` made of them:
    the core checks an answer (:meth:`check_remote_sdp_attributes`) then takes it, and a 2xx
    repeats its 183's answer; each is parsed once."""

    def __repr__(self) -> str:
        suite = self._keys.suite if self._keys is not None else None
        return f"<SdesNegotiation {self.role} {self._state.value} suite={suite}>"

    # -- what the core reads --------------------------------------------------------------------

    @property
    def state(self) -> str:
        """Where the exchange is: ``offered``, ``established`` or ``failed``."""
        return self._state.value

    @property
    def keys(self) -> SrtpKeys | None:
        """The keys in force: those this exchange agreed, or while a renegotiation is under way
        the previous ones it may keep. None before the first agreement and after a failure."""
        return self._keys

    @property
    def suite(self) -> str | None:
        """The suite of :attr:`keys` (for the leg's security record)."""
        return self._keys.suite if self._keys is not None else None

    @property
    def failure(self) -> NegotiationFailed | None:
        return self._failure

    def security_record(self) -> dict[str, str | None]:
        """For the leg's security record: the lifetime the peer gave its key, when it gave one
        (the default is 2^48), and why our answer took another line than the offer's first
        acceptable one."""
        lifetime = self._peer_lifetime if self._keys is not None else None
        return {
            "sdes_peer_key_lifetime": (
                f"{_lifetime_text(lifetime)} packets" if lifetime is not None else None
            ),
            "sdes_answer_choice": self._choice if self._keys is not None else None,
        }

    # -- interfaces.KeyNegotiation --------------------------------------------------------------

    def local_sdp_attributes(self) -> list[tuple[str, str | None]]:
        """Our a=crypto lines for this stream: the offer's alternatives or the one answer line;
        none once the negotiation has failed (no key is ever put in an SDP then)."""
        if self._state is _State.FAILED:
            return []
        return [("crypto", serialize_crypto(line)) for line in self._local_lines]

    def remote_sdp_attributes(self, attributes: Iterable[tuple[str, str | None]]) -> None:
        """The peer's answer to our offer (its media section's attributes). Raises
        :class:`SdesError` when the answer is unacceptable, after queuing the same reason as
        ``NegotiationFailed``. The same answer again (a 183 then a 200) changes nothing; a
        different acceptable one replaces the peer's key (a new ``KeysReady``).

        An answering negotiation took its offer in :meth:`SdesKeyExchange.answer`; calling this
        on it is a :class:`LocalSdesError`. On a failed negotiation it does nothing."""
        self._offerer_only()
        if self._state is _State.FAILED:
            return
        read = self._read_answer(attributes)
        if isinstance(read, str):
            self._fail_and_raise(read)
        offered, answer = read
        self._line_in_force = offered
        self._peer_lifetime = answer.keys[0].lifetime
        self._establish(
            SrtpKeys(
                offered.suite,
                local_key=offered.keys[0].key_salt,
                remote_key=answer.keys[0].key_salt,
                local_mki=_mki_bytes(offered.keys[0]),
                remote_mki=_mki_bytes(answer.keys[0]),  # RFC 4568 §6.1: in the peer's packets
            )
        )

    def check_remote_sdp_attributes(
        self, attributes: Iterable[tuple[str, str | None]]
    ) -> str | None:
        """Why :meth:`remote_sdp_attributes` would refuse the peer's answer, or None; changes
        nothing (``interfaces.KeyNegotiation``'s optional check). The core checks each line of
        an answer so, and gives it to :meth:`remote_sdp_attributes` only once it took the
        whole answer: a forked phone's refused 183 (our own key copied back, an unknown suite)
        leaves this negotiation as it was for another phone's answer to the same offer (RFC
        3261 §16.7), which is read on its own merits."""
        self._offerer_only()
        if self._state is _State.FAILED:
            return None  # remote_sdp_attributes does nothing on it
        read = self._read_answer(attributes)
        return read if isinstance(read, str) else None

    def _offerer_only(self) -> None:
        if self.role != "offerer":
            raise LocalSdesError(
                "an answering SDES negotiation takes the offer in SdesKeyExchange.answer(); "
                "a new offer needs SdesKeyExchange.answer(..., previous=...)"
            )

    def _read_answer(
        self, attributes: Iterable[tuple[str, str | None]]
    ) -> tuple[CryptoAttribute, CryptoAttribute] | str:
        """The peer's answer read against our offer, changing nothing: our offered line and
        its answer line, or the reason the answer is unacceptable (never a key)."""
        values = tuple(crypto_values(attributes))
        last = self._last_read
        if last is not None and last[0] == values:
            return last[1]  # our offer's lines and limits are the same: so is the result
        read = self._read_values(values)
        self._last_read = (values, read)
        return read

    def _read_values(
        self, values: tuple[str, ...]
    ) -> tuple[CryptoAttribute, CryptoAttribute] | str:
        """:meth:`_read_answer` of the answer's a=crypto values."""
        if not values:
            return "the answer has no a=crypto line"
        if len(values) > 1:
            return "the answer has more than one a=crypto line (RFC 4568 §5.1.2)"
        try:
            answer = parse_crypto_untrusted(values[0])
        except SdesError as exc:
            return f"the answer's {exc.reason}"
        offered = next((line for line in self._local_lines if line.tag == answer.tag), None)
        if offered is None:
            return f"the answer's a=crypto tag {answer.tag} was not offered"
        if answer.suite != offered.suite:
            return (
                f"the answer's a=crypto tag {answer.tag} changes the crypto-suite (RFC 4568 §5.1.2)"
            )
        problem = _unsupported_params(answer, self._min_peer_lifetime, accept_mki=self._accept_mki)
        if problem is not None:
            return f"the answer's a=crypto: {problem}"
        if hmac.compare_digest(answer.keys[0].key_salt, offered.keys[0].key_salt):
            # RFC 4568 §5.1.2, §7.1.2: the answer carries the answerer's own key. Ours echoed
            # back (a peer that copies the offer, or a reflected SDP) would key both directions
            # alike: every SRTP packet we send would then authenticate when sent back to us
            # (a reflection, RFC 3711 §9.1), so such an answer is refused.
            return (
                f"the peer's answer copied the key of our offer's a=crypto tag {answer.tag} "
                "instead of sending a key of its own: each side must send its own key (RFC 4568 "
                "§5.1.2), and one key both ways would let our own SRTP sent back to us "
                "authenticate (RFC 3711 §9.1); a peer bug, refused"
            )
        return offered, answer

    def claims_packet(self, first_byte: int, packet: bytes) -> bool:
        """Always False: SDES exchanges nothing on the media path."""
        return False

    def receive_packet(self, packet: bytes, *, now: float) -> None:
        """Never called for SDES (:meth:`claims_packet` is always False); ignores the packet."""

    def packets_to_send(self, *, now: float) -> list[bytes]:
        return []

    def get_timer(self) -> float | None:
        return None

    def handle_timer(self, *, now: float) -> None:
        """SDES has no timers; nothing to do."""

    def next_event(self) -> KeyNegotiationEvent | None:
        """The next ``KeysReady`` or ``NegotiationFailed``, or None."""
        return self._events.popleft() if self._events else None

    # -- internals ------------------------------------------------------------------------------

    def _establish(self, keys: SrtpKeys) -> None:
        self._state = _State.ESTABLISHED
        if keys != self._keys:  # RFC 4568 §7.1.4: unchanged keys keep the SRTP context
            self._keys = keys
            self._events.append(KeysReady(keys))

    def _fail(self, reason: str) -> None:
        if self._state is _State.FAILED:
            return
        self._state = _State.FAILED
        self._keys = None
        self._line_in_force = None
        self._failure = NegotiationFailed(reason, SdesError.sip_status)
        self._events.append(self._failure)

    def _fail_and_raise(self, reason: str) -> NoReturn:
        self._fail(reason)
        raise SdesError(reason) from None

    def _fresh_line(self, tag: int, suite: str, mki: Mki | None = None) -> CryptoAttribute:
        key = KeyParam(self._fresh_key(suite), mki=mki)
        return CryptoAttribute(tag=tag, suite=suite, keys=(key,))

    def _fresh_key(self, suite: str) -> bytes:
        length = SUITES[suite].key_salt_length
        key = self._random_bytes(length)
        if not isinstance(key, bytes) or len(key) != length:
            raise LocalSdesError(f"the random source did not return {length} octets")
        return key


def _unsupported_params(
    line: CryptoAttribute, min_lifetime: int, *, accept_mki: bool = True
) -> str | None:
    """Why we cannot use ``line``'s key parameters or session parameters, or None.
    ``min_lifetime``: the shortest key lifetime accepted (1: any); ``accept_mki`` False: a key
    with an MKI is refused (``mki = "refuse"``)."""
    # RFC 4568 §6.1: several master keys need MKIs to tell them apart in packets; a session
    # here has one key per direction, so only a single key (with or without an MKI) is usable.
    if len(line.keys) > 1:
        return (
            f"{len(line.keys)} master keys in one line are not supported "
            "(one key, with or without an MKI, is)"
        )
    if line.keys[0].mki is not None and not accept_mki:
        return 'MKI is not supported ([plugins.sdes] mki = "refuse")'
    lifetime = line.keys[0].lifetime
    if lifetime is not None and lifetime < min_lifetime:
        # RFC 4568 §6.1: the sender must re-key when the lifetime runs out; the operator asked
        # for keys that outlast a call without one (we never re-key SDES on our own).
        return (
            f"key lifetime {_lifetime_text(lifetime)} packets is below the "
            f"{_lifetime_text(min_lifetime)} set by [plugins.sdes] min_peer_key_lifetime"
        )
    if line.kdr not in (None, 0):  # §6.3.1; libsrtp 2 derives session keys once
        return "a key derivation rate other than 0 is not supported"
    for flag in ("unencrypted_srtp", "unencrypted_srtcp", "unauthenticated_srtp"):
        if getattr(line, flag):  # §6.3.2, §6.3.3: we never weaken SRTP
            return f"{flag.upper()} is not supported"
    if line.fec_keys:  # §6.3.5
        return "FEC_KEY is not supported"
    if line.extensions:  # §6.3.7: a parameter not understood makes the line unacceptable
        return "an unknown session parameter is not supported"
    return None


def _lifetime_text(lifetime: int) -> str:
    power = lifetime.bit_length() - 1
    return f"2^{power}" if lifetime == 1 << power else str(lifetime)


def _unacceptable(
    line: CryptoAttribute, allowed: Sequence[str], min_lifetime: int, *, accept_mki: bool = True
) -> str | None:
    """Why an offered line cannot be accepted on this leg, or None."""
    if line.suite not in SUITES:
        if line.suite.upper() in _KNOWN_SUITE_NAMES:
            return f"crypto-suite {line.suite.upper()} is not supported"
        return "an unknown crypto-suite"
    if line.suite not in SUPPORTED_SUITES:
        return f"crypto-suite {line.suite} is not available in this build"
    if line.suite not in allowed:
        return f"crypto-suite {line.suite} is not allowed on this leg"
    return _unsupported_params(line, min_lifetime, accept_mki=accept_mki)


def _mki_bytes(key: KeyParam) -> bytes | None:
    return key.mki.to_bytes() if key.mki is not None else None


def _allowed_suites(suites: Sequence[str]) -> tuple[str, ...]:
    if not suites:
        return DEFAULT_SUITES
    allowed: list[str] = []
    for name in suites:
        if name in SUPPORTED_SUITES and name not in allowed:
            allowed.append(name)
    return tuple(allowed)


def _summary(reasons: Sequence[str]) -> str:
    shown = "; ".join(reasons[:_MAX_REASONS])
    return shown + ("; ..." if len(reasons) > _MAX_REASONS else "")


# --------------------------------------------------------------------------------------------
# The key exchange the core calls


class SdesKeyExchange:
    """The ``sdes`` key exchange (``interfaces.KeyExchange``): makes one
    :class:`SdesNegotiation` per stream and leg, for the first offer/answer and for every
    re-offer (pass the stream's ``previous`` negotiation).

    ``suites`` are the leg's policy's suites in its order; those ``srtp.SUPPORTED_SUITES`` lacks
    are left out, and an empty sequence means :data:`DEFAULT_SUITES`. ``random_bytes`` must be a
    CSPRNG; ``max_crypto_lines`` bounds the a=crypto lines read from one offer;
    ``answer_suite`` (:data:`ANSWER_SUITE_CHOICES`) says which acceptable offered line an answer
    takes: the one first in the policy's order, or the offer's first;
    ``min_peer_key_lifetime`` is the shortest key lifetime (RFC 4568 §6.1) accepted from a peer,
    1 for any; ``mki`` (:data:`MKI_CHOICES`) whether our lines carry an MKI toward a peer whose
    line has one (``"mirror"``), never (``"receive-only"``), or whether lines with an MKI are
    refused (``"refuse"``).
    """

    name = "sdes"
    media_path = False
    profile = "sdp"
    sdp_attribute = "crypto"

    def __init__(
        self,
        *,
        random_bytes: RandomBytes = os.urandom,
        max_crypto_lines: int = MAX_CRYPTO_LINES,
        answer_suite: str = "policy-order",
        min_peer_key_lifetime: int = 1,
        mki: str = "mirror",
    ) -> None:
        if answer_suite not in ANSWER_SUITE_CHOICES:
            raise ValueError(f"answer_suite: expected one of {', '.join(ANSWER_SUITE_CHOICES)}")
        if mki not in MKI_CHOICES:
            raise ValueError(f"mki: expected one of {', '.join(MKI_CHOICES)}")
        if not 1 <= min_peer_key_lifetime <= MAX_LIFETIME:
            raise ValueError("min_peer_key_lifetime: expected 1..2^48 packets")
        self._random_bytes = random_bytes
        self.max_crypto_lines = max_crypto_lines
        self.answer_suite = answer_suite
        self.min_peer_key_lifetime = min_peer_key_lifetime
        self.mki = mki

    def __repr__(self) -> str:
        return (
            f"<SdesKeyExchange max_crypto_lines={self.max_crypto_lines} "
            f"answer_suite={self.answer_suite} mki={self.mki}>"
        )

    def _our_mki(self, peer_mki: bytes | None) -> Mki | None:
        """The MKI our line carries toward a peer whose key has ``peer_mki``: one of the same
        length with ``mki = "mirror"`` (a peer that sends MKIs reads them), else none."""
        if self.mki != "mirror" or peer_mki is None:
            return None
        return Mki(value=_OUR_MKI_VALUE, length=len(peer_mki))

    def _negotiation(self, role: str) -> SdesNegotiation:
        return SdesNegotiation(
            role,
            self._random_bytes,
            _State.OFFERED,
            min_peer_lifetime=self.min_peer_key_lifetime,
            accept_mki=self.mki != "refuse",
        )

    def offer(
        self,
        *,
        suites: Sequence[str],
        secure_signalling: bool,
        previous: KeyNegotiation | None = None,
        rekey: bool = False,
    ) -> SdesNegotiation:
        """Our offer for one stream. Without ``previous``: one line per allowed suite, tags 1..n,
        a fresh key each. With ``previous`` (a re-offer, RFC 4568 §7.1.4) whose keys are in
        force and whose suite is still allowed, and ``rekey`` False: the line in force again,
        same tag, suite and key, so an unchanged answer keeps the SRTP context. ``rekey=True``
        (lifetime reached, new SSRC) makes a fresh offer. Fails at once (no key made) without
        TLS or without a suite to offer. A fresh re-offer to a peer whose key in force has an MKI
        carries one on every line with ``mki = "mirror"``; a first offer never does."""
        negotiation = self._negotiation("offerer")
        if not secure_signalling:
            negotiation._fail(TLS_REQUIRED_REASON)
            return negotiation
        allowed = _allowed_suites(suites)
        if not allowed:
            negotiation._fail("no crypto-suite of the leg's policy is supported by SDES here")
            return negotiation
        kept = _in_force(previous)
        if kept is not None:
            negotiation._keys = kept[0]  # in force until the answer says otherwise
            if not rekey and kept[1].suite in allowed:
                negotiation._local_lines = (kept[1],)
                return negotiation
        mki = self._our_mki(kept[0].remote_mki if kept is not None else None)
        negotiation._local_lines = tuple(
            negotiation._fresh_line(tag, suite, mki) for tag, suite in enumerate(allowed, start=1)
        )
        return negotiation

    def answer(
        self,
        remote_attributes: Iterable[tuple[str, str | None]],
        *,
        suites: Sequence[str],
        secure_signalling: bool,
        previous: KeyNegotiation | None = None,
    ) -> SdesNegotiation | None:
        """Our answer to the peer's offer of one stream (its media section's attributes), or None
        when the offer has no a=crypto line (SDES does not apply).

        Accepts, among the lines that are well formed and have an allowed suite and parameters we
        support (RFC 4568 §7.1.2: skip the others), the one with the suite and peer key in force
        in ``previous``, else the one whose suite comes first in the policy's order
        (``answer_suite = "offer-order"``: the first of them), answering with the same tag
        and suite and a fresh key of ours, and queues ``KeysReady``. With ``previous`` (the
        stream's negotiation before this re-offer) whose keys are in force: if the accepted line
        has the same suite and the same peer key, our key is kept too and no event is queued
        (§7.1.4). The result has failed (``NegotiationFailed``, 488, no key made) without TLS or
        when no line is acceptable."""
        values = crypto_values(remote_attributes)
        if not values:
            return None
        negotiation = self._negotiation("answerer")
        if not secure_signalling:
            negotiation._fail(TLS_REQUIRED_REASON)
            return negotiation
        if len(values) > self.max_crypto_lines:
            negotiation._fail(f"the offer has more than {self.max_crypto_lines} a=crypto lines")
            return negotiation
        kept = _in_force(previous)
        chosen, first, reasons = _choose(
            values,
            _allowed_suites(suites),
            by_policy=self.answer_suite == "policy-order",
            min_lifetime=self.min_peer_key_lifetime,
            in_force=(
                (kept[0].suite, kept[0].remote_key, kept[0].remote_mki)
                if kept is not None
                else None
            ),
            accept_mki=self.mki != "refuse",
        )
        if chosen is None:
            negotiation._fail("no acceptable a=crypto line: " + _summary(reasons))
            return negotiation
        remote_key = chosen.keys[0].key_salt
        remote_mki = _mki_bytes(chosen.keys[0])
        local_mki = self._our_mki(remote_mki)
        if kept is not None:
            negotiation._keys = kept[0]
            # An MKI change with the same key is a change too, and our key is fresh then. (Since
            # session 35 the core keeps a kept key's context across any re-key, SrtpSession.rekey,
            # so no index restarts either way; the answer on the wire stays as it was.)
            if (kept[0].suite, kept[0].remote_key, kept[0].remote_mki) == (
                chosen.suite,
                remote_key,
                remote_mki,
            ):
                local_key = kept[0].local_key  # §7.1.4: keys unchanged
                local_mki = kept[1].keys[0].mki
            else:
                local_key = negotiation._fresh_key(chosen.suite)
        else:
            local_key = negotiation._fresh_key(chosen.suite)
        ours = CryptoAttribute(
            tag=chosen.tag, suite=chosen.suite, keys=(KeyParam(local_key, mki=local_mki),)
        )
        negotiation._local_lines = (ours,)
        negotiation._line_in_force = ours
        negotiation._peer_lifetime = chosen.keys[0].lifetime
        if first is not None and first is not chosen:
            # RFC 4568 §7.1.1: the answerer chooses among acceptable lines; say it did.
            if kept is not None and kept[0].remote_key == remote_key:
                why = "the key in force"
            elif chosen.suite == first.suite:
                why = "the same suite without an MKI"
            else:
                why = "first in the leg's policy order"
            negotiation._choice = (
                f"tag {chosen.tag} {chosen.suite}, {why}, over the "
                f"offer's first acceptable line, tag {first.tag} {first.suite}"
            )
        negotiation._establish(
            SrtpKeys(
                chosen.suite,
                local_key=local_key,
                remote_key=remote_key,
                local_mki=local_mki.to_bytes() if local_mki is not None else None,
                remote_mki=remote_mki,
            )
        )
        return negotiation


def _choose(
    values: Sequence[str],
    allowed: Sequence[str],
    *,
    by_policy: bool,
    min_lifetime: int,
    in_force: tuple[str, bytes, bytes | None] | None = None,
    accept_mki: bool = True,
) -> tuple[CryptoAttribute | None, CryptoAttribute | None, list[str]]:
    """The offered line to accept, the first acceptable one, and why each line skipped was.

    ``by_policy``: the acceptable line with the suite and peer key ``in_force`` (a re-offer
    keeping them), else the one whose suite comes first in ``allowed`` (the offer's order
    between lines of one suite); otherwise the first acceptable line. Either way, between
    lines of the chosen suite one whose key has no MKI wins over one with an MKI (see
    :func:`_without_mki`). Every line is read either way (at most ``max_crypto_lines``), so
    the reasons cover the whole offer when none is taken."""
    reasons: list[str] = []
    tags: set[int] = set()
    acceptable: list[CryptoAttribute] = []
    for number, value in enumerate(values, start=1):
        try:
            line = parse_crypto_untrusted(value)
        except SdesError as exc:
            reasons.append(f"line {number}: {exc.reason}")
            continue
        if line.tag in tags:  # RFC 4568 §5.1.1: tags are unique in an offer
            reasons.append(f"tag {line.tag}: the tag is repeated")
            continue
        tags.add(line.tag)
        problem = _unacceptable(line, allowed, min_lifetime, accept_mki=accept_mki)
        if problem is not None:
            reasons.append(f"tag {line.tag}: {problem}")
            continue
        if not by_policy and line.keys[0].mki is None and not acceptable:
            return line, line, reasons
        acceptable.append(line)
    if not acceptable:
        return None, None, reasons
    if not by_policy:
        return _without_mki(acceptable[0], acceptable), acceptable[0], reasons
    if in_force is not None:
        # A re-offer that still carries the key in force (same suite, same key) keeps it, as
        # the first-acceptable choice did for a peer listing it first (RFC 4568 §7.1.4): a
        # stronger line taken instead re-keys mid-call under the same SSRC, and receivers that
        # start a new key's context at ROC 0 lose the stream after a sequence-number wrap.
        for line in acceptable:
            if (line.suite, line.keys[0].key_salt, _mki_bytes(line.keys[0])) == in_force:
                return line, acceptable[0], reasons
    rank = {suite: index for index, suite in enumerate(allowed)}
    chosen = min(acceptable, key=lambda line: rank[line.suite])  # min keeps the first of ties
    return _without_mki(chosen, acceptable), acceptable[0], reasons


def _without_mki(chosen: CryptoAttribute, acceptable: Sequence[CryptoAttribute]) -> CryptoAttribute:
    """``chosen``, or when its key has an MKI the first acceptable line of the same suite whose
    key has none. Such a peer was answered that line before MKIs were accepted (session 34),
    and every peer reads it; an MKI costs octets and work in every packet (RFC 3711 §3.1) and
    is the less tested path in SRTP stacks. A suite the policy ranks higher still wins with an
    MKI: the suite, not the MKI, decides between suites."""
    if chosen.keys[0].mki is None:
        return chosen
    for line in acceptable:
        if line.suite == chosen.suite and line.keys[0].mki is None:
            return line
    return chosen


def _in_force(previous: KeyNegotiation | None) -> tuple[SrtpKeys, CryptoAttribute] | None:
    """The keys in force of a previous SDES negotiation of the stream, and our line for them."""
    if not isinstance(previous, SdesNegotiation) or previous._state is _State.FAILED:
        return None
    if previous._keys is None or previous._line_in_force is None:
        return None
    return previous._keys, previous._line_in_force


# --------------------------------------------------------------------------------------------
# Plugin registration (entry point ``sdes`` in the group ``voipgw.plugins``)


@attrs.frozen
class SdesConfig:
    """``[plugins.sdes]``. See docs/configuration.md."""

    answer_suite: str = "policy-order"
    min_peer_key_lifetime: int = 1
    mki: str = "mirror"

    def __attrs_post_init__(self) -> None:
        # structure() reports a ValueError as a config error of this table; say which key.
        if self.answer_suite not in ANSWER_SUITE_CHOICES:
            raise ValueError(
                f"answer_suite: expected one of {', '.join(map(repr, ANSWER_SUITE_CHOICES))}"
            )
        if isinstance(self.min_peer_key_lifetime, bool) or not (
            1 <= self.min_peer_key_lifetime <= MAX_LIFETIME
        ):
            raise ValueError(
                "min_peer_key_lifetime: expected a number of packets from 1 to 2^48 "
                "(281474976710656); 2147483648 is 2^31, "
                f"got {self.min_peer_key_lifetime}"
            )
        if self.mki not in MKI_CHOICES:
            raise ValueError(f"mki: expected one of {', '.join(map(repr, MKI_CHOICES))}")


@hookimpl
def gateway_plugin_config() -> type:
    return SdesConfig


@hookimpl
def gateway_register_key_exchanges(registry: Registry[Any], config: SdesConfig | None) -> None:
    """Register the ``sdes`` key exchange, with the operating system's CSPRNG for keys."""
    config = config if config is not None else SdesConfig()
    registry.add(
        SdesKeyExchange.name,
        SdesKeyExchange(
            random_bytes=os.urandom,
            answer_suite=config.answer_suite,
            min_peer_key_lifetime=config.min_peer_key_lifetime,
            mki=config.mki,
        ),
    )


@hookimpl
def gateway_register_media_policies(registry: Registry[Any], config: SdesConfig | None) -> None:
    """Nothing: the built-in policies (``sdes``, ``best-effort`` ...) belong to the core."""


if TYPE_CHECKING:
    # mypy checks that the classes satisfy the interfaces they are registered as.
    def _conforms(exchange: SdesKeyExchange, negotiation: SdesNegotiation) -> None:
        _exchange: KeyExchange = exchange
        _negotiation: KeyNegotiation = negotiation
