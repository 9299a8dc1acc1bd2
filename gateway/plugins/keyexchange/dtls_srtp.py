"""The ``dtls`` key exchange: DTLS-SRTP (RFC 5763, RFC 5764, RFC 8842), keys agreed on the media
path by a DTLS 1.2 handshake whose certificates are pinned by a=fingerprint in the SDP.

Theory of operation
-------------------
SDP carries no keys here, only who we are and who shakes hands with whom (§ "SDP" below). Once
both sides know the other's description, the side with ``a=setup:active`` is the DTLS client and
sends a ClientHello to the other's media port; the ``passive`` side is the DTLS server (RFC 5763
§5, RFC 4145 §4). The handshake negotiates one SRTP protection profile through the use_srtp
extension (RFC 5764 §4.1), and each side then exports ``2 * (key + salt)`` octets with the label
``EXTRACTOR-dtls_srtp`` (RFC 5764 §4.2, RFC 5705)::

    client_write_key | server_write_key | client_write_salt | server_write_salt

The client protects what it sends with the client key and salt, the server with the server's; so
``SrtpKeys.local_key`` (what the gateway sends to the leg) is our write key then our write salt,
and ``remote_key`` the peer's: the same key-then-salt layout an SDES ``inline:`` carries. Only
then is ``KeysReady`` queued. Before any key is released, the certificate the peer presented is
checked against the peer's a=fingerprint values (RFC 8122 §5, RFC 5763 §5): a mismatch aborts
the handshake (OpenSSL sends the peer a fatal alert) and queues
``NegotiationFailed(FINGERPRINT_MISMATCH_REASON)``. No media can be keyed from this association
then.

One :class:`DtlsNegotiation` is one stream's exchange on one leg; :class:`DtlsKeyExchange` (the
registered ``interfaces.KeyExchange``) creates them. The DTLS work itself is OpenSSL's, through
pyOpenSSL over memory BIOs: datagrams go in with :meth:`~DtlsNegotiation.receive_packet` and
come out of :meth:`~DtlsNegotiation.packets_to_send`; the core moves them between the leg's
media port and the peer (RFC 5764 §5.1.2: DTLS shares the 5-tuple with RTP and RTCP).

SDP (RFC 8122, RFC 4145, RFC 5763 §5, RFC 8842)
-----------------------------------------------
We write ``a=fingerprint:sha-256 <our certificate>``, ``a=setup`` and ``a=tls-id``:

========================  ===========================  ========================
offer ``a=setup``         our answer                   so we are
========================  ===========================  ========================
actpass                   active (RFC 5763 §5)         DTLS client
active                    passive                      DTLS server
passive                   active                       DTLS client
holdconn                  (refused, 488)               --
(absent)                  passive (RFC 4145 §4:        DTLS server
                          absent means active)
========================  ===========================  ========================

As offerer we offer ``actpass``, and the answer's ``active`` makes us the server, ``passive``
the client; ``actpass`` or ``holdconn`` in an answer is refused. ``a=tls-id`` (RFC 8842 §4) is
24 random characters naming the association: a re-offer or re-answer that keeps the association
repeats it (and the fingerprint, and our established role instead of ``actpass``), a new
association gets a new one. The peer's association is "the same" when its tls-id (or, from a
peer without tls-id, its fingerprints) and the roles are unchanged; anything else starts a new
handshake with new keys, the old keys staying in force until the new ones are ready.

The engine reads the attributes it is given as one list: the core passes the m= section's
attributes followed by the session-level ones (RFC 8122 §5 and RFC 4145 allow a=fingerprint and
a=setup at either level). Fingerprints of both levels are accepted (the union: both come from the
same peer's SDP), for ``setup`` and ``tls-id`` the first one wins, so the media-level value when
both exist. A peer may list several fingerprints; the certificate must match one of those with a
hash function we accept (SHA-1, SHA-224, SHA-256, SHA-384, SHA-512; never MD5/MD2), and an SDP
without any such fingerprint is refused.

The m= profile is ``UDP/TLS/RTP/SAVP`` or ``UDP/TLS/RTP/SAVPF`` (RFC 5764 §8, RFC 5124); the
core chooses and writes it, the engine neither reads nor needs it.

Signalling security: unlike SDES, no key ever travels in the SDP, so a negotiation is made (and
works) on a leg whose signalling is not TLS: ``secure_signalling`` is only recorded
(:attr:`DtlsNegotiation.signalling_protected`). The SDP's *integrity* still matters: whoever can
rewrite it can put their own fingerprint in and sit in the middle. The leg's security record
should say so for a leg without TLS.

Sources and cookies (RFC 5763 §5, RFC 6347 §4.2.1)
-------------------------------------------------
Given datagrams with their source (:meth:`~DtlsNegotiation.receive_packet_from`), the engine runs
a handshake per source until one's certificate matches a=fingerprint (docs/media_security.md,
"A handshake per source"). As DTLS server it first asks a source other than the peer's SDP
address for a cookie: its ClientHello gets a stateless HelloVerifyRequest (:mod:`dtls_cookies`)
and nothing else; the ClientHello that returns the cookie starts its handshake, through
OpenSSL's ``DTLSv1_listen`` (:meth:`_Association.accept_verified`). The SDP address is never
asked.

A restarted peer (RFC 6347 §4.2.8)
---------------------------------
As DTLS server with keys, a ClientHello of message_seq 0 from the association's 5-tuple (a phone
restarted on the same port) is asked for our cookie, the SDP address too, and the one that
returns it runs on a candidate association (:meth:`DtlsNegotiation._to_candidate`), one at a
time, within the port's bucket of new handshakes. The association in force keeps its keys until
the candidate completes with a certificate matching a=fingerprint; then the candidate replaces
it and its ``KeysReady`` re-keys the leg. A candidate that fails or times out is dropped and
nothing changes (docs/media_security.md, "A new ClientHello on a kept association"). Since
session 45 a ClientHello fed without its source (an ICE leg) is asked for the cookie too, the
HelloVerifyRequest going the usual way; a candidate whose certificate the SDP in force does not
name is held, read before OpenSSL sees it (:meth:`DtlsNegotiation._held`), until a re-offer
naming it takes it as its new association (:meth:`DtlsNegotiation._adopt`) or its timeout; and
re-offers that keep the association share the candidate with the negotiation in force.

Another phone's answer to our forked offer (RFC 3261 §16.7, RFC 5763 §5)
-----------------------------------------------------------------------
A proxy downstream may give our first offer to several phones, each with its own certificate.
One phone's early answer keys the line; another phone's 200 begins that phone's own
association on a fresh negotiation (:meth:`DtlsNegotiation.for_another_phone`). Until a 2xx
confirms the answer in force (:meth:`DtlsNegotiation.answer_confirmed`) the negotiation keeps,
bounded, what other sources send (:class:`_KeptForAnotherPhone`): the last ClientHello of each
(the answering phone sends its own as it sends its 200, and it arrives first), and their
handshakes under way, a certificate of another source than the SDP address that a=fingerprint
does not name held rather than refused with a fatal alert. The fresh negotiation takes them at
that phone's answer, checked against its a=fingerprint: keyed at once, not at its first resend
(1 s, RFC 6347 §4.2.4.1); a stranger's matches no phone's and keys nothing.

Media path and time (RFC 7983, RFC 6347 §4.2.4)
----------------------------------------------
:meth:`~DtlsNegotiation.claims_packet` claims first bytes 20..63 (RFC 7983 §7): STUN (0..3) and
ZRTP (16..19) stay with their plugins, RTP/RTCP (128..191) with the relay.

Retransmission is driven by the clock the core passes in (``now``), never by OpenSSL's: the
handshake's first flight starts a timer of 1 s, doubled on every retransmission up to 60 s
(RFC 6347 §4.2.4.1), and a new flight from the peer stops it. On the timer we first let OpenSSL
retransmit (``DTLSv1_handle_timeout``): its retransmissions carry fresh record sequence numbers,
which a peer that already finished the handshake needs in order to answer with its own last
flight again (OpenSSL's replay window drops a byte-identical copy). OpenSSL only does so when
its own wall-clock timer has run out too, which under a real clock it has; under a virtual clock
(tests) or a few milliseconds early we resend our copy of the last flight, byte for byte. A
finished DTLS server keeps its last flight and sends it again whenever the peer's handshake
records reach it, so a lost final flight is recovered either way. ``handshake_timeout``
(default 20 s) after the handshake could start without keys gives
``NegotiationFailed(HANDSHAKE_TIMEOUT_REASON)``.

The clock starts at the first call that passes ``now`` once our role is known (the offerer
learns it from the answer); until then :meth:`~DtlsNegotiation.get_timer` returns 0.0, "due at
once", so a core that only runs the timer loop starts the handshake too.

Failures and their SIP status: SDP problems are found in ``answer``/``remote_sdp_attributes``
and are answered 488 (:class:`DtlsError`). Handshake failures (timeout, fingerprint mismatch,
handshake errors) happen on the media path, normally after the call was answered: they also
carry 488, which the core sends as the final response while the call is being set up and
otherwise puts in the BYE (``Reason: SIP;cause=488;text="..."``, RFC 3326).

Keys and randomness: the only value we draw is the tls-id, from the injected ``random_bytes``
(OpenSSL draws the handshake's randomness from its own CSPRNG, which cannot be injected, so
handshake bytes differ from run to run while every observable outcome does not). Key material
never appears in a ``repr``, a log line or a reason.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import enum
import hmac
import logging
import os
import re
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NoReturn

import attrs
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL

from gateway.core.hookspecs import hookimpl
from gateway.core.interfaces import (
    KeyNegotiationEvent,
    KeysReady,
    NegotiationFailed,
    SrtpKeys,
)
from gateway.core.ip import source_key
from gateway.core.media.srtp import SUITES, SUPPORTED_SUITES
from gateway.core.sdp.errors import SdpError
from gateway.core.transport.flows import format_host_port
from gateway.plugins.keyexchange.dtls_certificates import (
    CERTIFICATE_FILE,
    DIRECTORY,
    HASH_FUNCTIONS,
    KEY_FILE,
    CertificateStore,
    DtlsIdentity,
    certificate_digest,
    longest_max_age_days,
)
from gateway.plugins.keyexchange.dtls_cookies import (
    CookieSecrets,
    hello_verify_request,
    is_later_client_hello_fragment_untrusted,
    parse_client_hello_cookie_untrusted,
)

if TYPE_CHECKING:
    from gateway.core.interfaces import KeyExchange, KeyNegotiation
    from gateway.core.plugins import Registry

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "DEFAULT_MTU",
    "DEFAULT_PROFILES",
    "EXPORTER_LABEL",
    "FINGERPRINT_MISMATCH_REASON",
    "HANDSHAKE_TIMEOUT_REASON",
    "MAX_CERTIFICATE_MESSAGE",
    "MAX_DATAGRAM_LENGTH",
    "MAX_EARLY_DATAGRAMS",
    "MAX_FINAL_FLIGHT_RESENDS",
    "MAX_FINGERPRINTS",
    "MAX_FINGERPRINT_LENGTH",
    "MAX_HANDSHAKES_PER_PORT",
    "MAX_KEPT_FOR_ANOTHER_PHONE",
    "MAX_NEW_HANDSHAKES_BURST",
    "MAX_RECORDS",
    "NEW_HANDSHAKES_PER_SECOND",
    "NO_COMMON_PROFILE_REASON",
    "PROFILES",
    "DtlsConfig",
    "DtlsError",
    "DtlsKeyExchange",
    "DtlsNegotiation",
    "DtlsProfile",
    "DtlsStatistics",
    "DtlsTiming",
    "DtlsTotals",
    "Fingerprint",
    "LocalDtlsError",
    "PeerDtlsParameters",
    "Role",
    "Setup",
    "answerer_role",
    "dtls_records_valid_untrusted",
    "fingerprint_values",
    "is_dtls_first_byte",
    "offerer_role",
    "parse_dtls_attributes_untrusted",
    "parse_fingerprint_untrusted",
    "parse_setup_untrusted",
    "parse_tls_id_untrusted",
    "previous_keys",
    "serialize_fingerprint",
    "split_keying_material",
]

RandomBytes = Callable[[int], bytes]
IdentitySource = Callable[[], DtlsIdentity]
Source = tuple[Any, ...]
"""Where a datagram came from, as the socket gave it (host and port first)."""

EXPORTER_LABEL = b"EXTRACTOR-dtls_srtp"
"""RFC 5764 §4.2: the TLS exporter label (used without a context value)."""

FINGERPRINT_MISMATCH_REASON = "DTLS fingerprint mismatch"
"""The reason of the ``NegotiationFailed`` when the peer's certificate does not match its SDP."""
HANDSHAKE_TIMEOUT_REASON = "DTLS handshake timed out"
"""The reason of the ``NegotiationFailed`` when no keys were agreed within the timeout."""
NO_COMMON_PROFILE_REASON = "DTLS handshake agreed no SRTP protection profile (RFC 5764 §4.1.1)"
"""The reason when the handshake completed without a use_srtp profile both sides accept."""

DEFAULT_HANDSHAKE_TIMEOUT = 20.0
"""Seconds from the start of the handshake to its failure: 1+2+4+8 s of retransmissions."""
# [plugins.dtls] handshake_timeout at least this: a handshake is two round trips of flights and
# the key exchange's signatures, TLS's handshake over datagrams (RFC 6347), which took 0.77 ms
# at the least on the loopback (TLS 1.3, P-256, the 2-vCPU test host): with 1e-9 every call
# failed at once. The floor is a power of ten under half that.
MIN_HANDSHAKE_TIMEOUT = 1e-4
# Under a second a lost flight, sent again after 1 s (RFC 6347 §4.2.4.1), fails the call, and a
# peer across a WAN may not finish: allowed (a LAN peer takes milliseconds), and said by
# check-config (config_warnings).
WARN_HANDSHAKE_TIMEOUT = 1.0
DEFAULT_MTU = 1200
"""Largest datagram we send (RFC 8261 and WebRTC use 1200 too: it fits every sane path)."""
MAX_DATAGRAM_LENGTH = 65535
"""Longest datagram we hand to OpenSSL; longer ones are dropped and counted."""
MAX_EARLY_DATAGRAMS = 16
"""Datagrams kept while our offer waits for its answer (the peer answering active may start
before its answer reaches us, RFC 5763 §5); more are dropped and counted."""
MAX_FINGERPRINTS = 8
"""Most a=fingerprint lines we read for one stream."""
MAX_FINGERPRINT_LENGTH = 256
"""Longest a=fingerprint value (SHA-512 needs 199 characters)."""
MAX_RECORDS = 64
"""Most DTLS records we accept in one datagram."""
MAX_FINAL_FLIGHT_RESENDS = 32
"""Times a finished DTLS server sends its last flight again on the peer's retransmissions."""
MAX_HANDSHAKES_PER_PORT = 4
"""Most handshakes one port runs at once before a source proved itself (one per source whose
DTLS datagrams reached it, the first included): each costs a certificate signature (ECDSA
P-256) and an OpenSSL connection; past it the oldest source's is dropped, never the SDP
address's (docs/media_security.md, "Forged handshakes")."""
MAX_REFUSED_SOURCES = 8
"""Sources whose handshake failed (the fingerprint check, mostly) remembered per port so that
their datagrams are dropped rather than start another signature; the oldest is forgotten."""
MAX_NEW_HANDSHAKES_BURST = 8
NEW_HANDSHAKES_PER_SECOND = 1.0
"""How many handshakes sources other than the SDP address may start on one port: at most
:data:`MAX_NEW_HANDSHAKES_BURST` at once, then one more per second (a token bucket). Each costs
a certificate signature, ~1 ms of the SIP process's CPU: :data:`MAX_HANDSHAKES_PER_PORT`
bounds the memory, this the CPU under a flood of ClientHellos from spoofed sources (without
it, each new source cost a signature, as fast as they came). Past it a new source's datagram
is dropped (``dropped_rate``); the SDP address's never is. Since session 41 only sources that
returned our cookie (RFC 6347 §4.2.1, :mod:`dtls_cookies`) count: a ClientHello without one is
answered by a HelloVerifyRequest and starts nothing."""
MAX_VERIFY_REQUESTS = 64
"""HelloVerifyRequests waiting for :meth:`DtlsNegotiation.addressed_packets_to_send` (one per
ClientHello; the handshake task takes them after each datagram); more are not sent."""

_DTLS1_2_VERSION = 0xFEFD  # RFC 6347 §4.1: {254, 253}; pyOpenSSL has no constant for it
_NO_SOURCE = ("", 0)
"""What a cookie covers when the ClientHello's source is not known (:meth:`DtlsNegotiation.
_cookie_exchange`): no host's text, so no source's cookie verifies for it, nor its for one."""

MAX_KEPT_FOR_ANOTHER_PHONE = 4
"""Sources other than the peer whose handshake an offerer's negotiation that may have been
forked keeps for another phone's answer (:class:`_KeptForAnotherPhone`): their last
ClientHello each, and as many handshakes under way; the oldest source's goes first."""

MAX_CERTIFICATE_MESSAGE = 32768
"""Longest Certificate message gathered from fragments to be read before OpenSSL sees it
(:meth:`_Association.take_certificate`): a few certificates' chain."""
MAX_HELD_DATAGRAMS = 8
"""Datagrams kept of a held candidate (:meth:`DtlsNegotiation._held`): the client's flight from
its Certificate on (RFC 6347 §4.2.4: flight 5), and its resends; more are dropped."""

_RECORD_HEADER = 13  # RFC 6347 §4.1: type, version, epoch, sequence_number (48 bits), length
_HANDSHAKE_HEADER = 12  # RFC 6347 §4.2.2: msg_type, length, message_seq, fragment offset+length
_CHANGE_CIPHER_SPEC, _ALERT, _HANDSHAKE = 20, 21, 22  # RFC 5246 §6.2.1 ContentType
_MAX_RECORD = (1 << 14) + 2048  # RFC 6347 §4.1 / RFC 5246 §6.2.3: longest ciphertext fragment
_READ_CHUNK = 1 << 16
_MAX_REASON_DETAIL = 120

# RFC 9325 §4.2 (as for SIP over TLS): ECDHE and AEAD only. Our certificate is ECDSA; a peer's
# may be RSA, which only matters when we are the client.
_CIPHERS = b":".join(
    [
        b"ECDHE-ECDSA-AES128-GCM-SHA256",
        b"ECDHE-ECDSA-AES256-GCM-SHA384",
        b"ECDHE-ECDSA-CHACHA20-POLY1305",
        b"ECDHE-RSA-AES128-GCM-SHA256",
        b"ECDHE-RSA-AES256-GCM-SHA384",
        b"ECDHE-RSA-CHACHA20-POLY1305",
    ]
)


# --------------------------------------------------------------------------------------------
# SRTP protection profiles (RFC 5764 §4.1.2, RFC 7714 §14.2)


@attrs.frozen
class DtlsProfile:
    """One use_srtp protection profile and the SRTP suite (``srtp.SUITES`` name) it keys."""

    name: str
    """OpenSSL's name, used in ``[plugins.dtls] profiles``."""
    rfc_name: str
    profile_id: int
    suite: str


# fmt: off
PROFILES: Mapping[str, DtlsProfile] = MappingProxyType({
    profile.name: profile
    for profile in (
        DtlsProfile("SRTP_AES128_CM_SHA1_80", "SRTP_AES128_CM_HMAC_SHA1_80", 0x0001,
                    "AES_CM_128_HMAC_SHA1_80"),
        DtlsProfile("SRTP_AES128_CM_SHA1_32", "SRTP_AES128_CM_HMAC_SHA1_32", 0x0002,
                    "AES_CM_128_HMAC_SHA1_32"),
        DtlsProfile("SRTP_AEAD_AES_128_GCM", "SRTP_AEAD_AES_128_GCM", 0x0007, "AEAD_AES_128_GCM"),
        DtlsProfile("SRTP_AEAD_AES_256_GCM", "SRTP_AEAD_AES_256_GCM", 0x0008, "AEAD_AES_256_GCM"),
    )
    if profile.suite in SUPPORTED_SUITES
})
# fmt: on
"""The profiles this gateway negotiates, by OpenSSL name. There is no AES-192/256-CM profile:
those suites are SDES-only."""

DEFAULT_PROFILES: tuple[str, ...] = tuple(
    name
    for name in (
        "SRTP_AEAD_AES_256_GCM",
        "SRTP_AEAD_AES_128_GCM",
        "SRTP_AES128_CM_SHA1_80",
        "SRTP_AES128_CM_SHA1_32",
    )
    if name in PROFILES
)
"""Offered, and preferred as DTLS server (OpenSSL's server picks by its own order), when neither
the leg's policy nor the configuration says otherwise: strongest first, the 32-bit tag last."""

_PROFILE_BY_SUITE = {profile.suite: profile for profile in PROFILES.values()}


def split_keying_material(material: bytes, suite: str) -> tuple[bytes, bytes]:
    """RFC 5764 §4.2: the exporter output for ``suite`` as (client key‖salt, server key‖salt).

    ``material`` is ``client_key | server_key | client_salt | server_salt``, each key the
    suite's master key length and each salt its master salt length."""
    srtp_suite = SUITES[suite]
    key_length, salt_length = srtp_suite.master_key_length, srtp_suite.master_salt_length
    if len(material) != 2 * (key_length + salt_length):
        raise LocalDtlsError(f"{suite} needs {2 * (key_length + salt_length)} exported octets")
    client_key = material[:key_length]
    server_key = material[key_length : 2 * key_length]
    salts = material[2 * key_length :]
    return client_key + salts[:salt_length], server_key + salts[salt_length:]


# --------------------------------------------------------------------------------------------
# Errors


class DtlsError(SdpError):
    """The peer's DTLS-SRTP SDP attributes are malformed or unacceptable: answer ``sip_status``
    488 with ``reason`` as the Warning text."""


class LocalDtlsError(Exception):
    """The gateway misused this module (a bug, never the peer's fault)."""


# --------------------------------------------------------------------------------------------
# SDP values


class Setup(enum.Enum):
    """``a=setup`` values (RFC 4145 §4)."""

    ACTIVE = "active"
    PASSIVE = "passive"
    ACTPASS = "actpass"
    HOLDCONN = "holdconn"


class Role(enum.Enum):
    """Our side of the DTLS handshake. ``active`` is the client (RFC 5763 §5)."""

    CLIENT = "client"
    SERVER = "server"

    @property
    def setup(self) -> Setup:
        """The a=setup value that announces this role."""
        return Setup.ACTIVE if self is Role.CLIENT else Setup.PASSIVE


@attrs.frozen
class Fingerprint:
    """One ``a=fingerprint`` (RFC 8122 §5): a hash function name (lowercase) and the hash of
    the DER certificate."""

    algorithm: str
    digest: bytes = attrs.field(repr=lambda digest: digest.hex())

    @property
    def usable(self) -> bool:
        """Whether we compute this hash function (:data:`dtls_certificates.HASH_FUNCTIONS`)."""
        return self.algorithm in HASH_FUNCTIONS

    def matches(self, der: bytes) -> bool:
        """Whether the DER certificate hashes to this fingerprint (never for unusable ones)."""
        if not self.usable:
            return False
        return hmac.compare_digest(certificate_digest(der, self.algorithm), self.digest)


_HASH_FUNC = re.compile(r"[!#$%&'*+\-.^_`{|}~0-9A-Za-z]{1,32}")  # RFC 8122 §5: token
_FINGERPRINT_HEX = re.compile(r"[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2})*")
_DIGEST_LENGTHS = {"md2": 16, "md5": 16, "sha-1": 20, "sha-224": 28, "sha-256": 32}
_DIGEST_LENGTHS |= {"sha-384": 48, "sha-512": 64}
_TLS_ID = re.compile(r"[A-Za-z0-9+/\-_]{20,255}")  # RFC 8842 §4


def parse_fingerprint_untrusted(
    value: str, *, max_length: int = MAX_FINGERPRINT_LENGTH
) -> Fingerprint:
    """Parse an ``a=fingerprint`` value: ``hash-func SP 2HEX *(":" 2HEX)`` (RFC 8122 §5).

    The hash function is case-insensitive; the hex is upper case in the grammar, lower case is
    accepted too. For a known hash function the digest must have its length. Raises
    :class:`DtlsError`."""
    if len(value) > max_length:
        raise DtlsError(f"a=fingerprint is longer than {max_length} characters")
    algorithm, space, hex_text = value.strip(" \t").partition(" ")
    hex_text = hex_text.strip(" \t")
    if not space or not _HASH_FUNC.fullmatch(algorithm):
        raise DtlsError("a=fingerprint needs a hash function and a fingerprint")
    if not _FINGERPRINT_HEX.fullmatch(hex_text):
        raise DtlsError("a=fingerprint is not colon-separated hex pairs")
    algorithm = algorithm.lower()
    digest = bytes.fromhex(hex_text.replace(":", ""))
    expected = _DIGEST_LENGTHS.get(algorithm)
    if expected is not None and len(digest) != expected:
        raise DtlsError(f"a=fingerprint {algorithm} has {len(digest)} octets, not {expected}")
    return Fingerprint(algorithm, digest)


def serialize_fingerprint(fingerprint: Fingerprint) -> str:
    """The ``a=fingerprint`` value: hash function, space, upper-case hex pairs with colons."""
    return f"{fingerprint.algorithm} " + ":".join(f"{octet:02X}" for octet in fingerprint.digest)


def parse_setup_untrusted(value: str | None) -> Setup:
    """Parse an ``a=setup`` value (RFC 4145 §4, case-insensitive). Raises :class:`DtlsError`."""
    text = (value or "").strip(" \t").lower()
    for setup in Setup:
        if setup.value == text:
            return setup
    raise DtlsError("a=setup is not active, passive, actpass or holdconn")


def parse_tls_id_untrusted(value: str | None) -> str:
    """Parse an ``a=tls-id`` value: 20 to 255 of ALPHA, DIGIT, ``+ / - _`` (RFC 8842 §4).
    Raises :class:`DtlsError`."""
    text = (value or "").strip(" \t")
    if not _TLS_ID.fullmatch(text):
        raise DtlsError("a=tls-id is not 20 to 255 characters of letters, digits, + / - _")
    return text


@attrs.frozen
class PeerDtlsParameters:
    """What a peer's SDP says about its side of the DTLS association of one stream."""

    fingerprints: tuple[Fingerprint, ...]
    setup: Setup | None
    """None when the SDP has no a=setup (RFC 4145 §4: that means ``active``)."""
    tls_id: str | None

    @property
    def effective_setup(self) -> Setup:
        return Setup.ACTIVE if self.setup is None else self.setup

    def matches(self, der: bytes) -> bool:
        """Whether a certificate (DER) matches one of the usable fingerprints."""
        return any(fingerprint.matches(der) for fingerprint in self.fingerprints)

    def same_identity(self, other: PeerDtlsParameters) -> bool:
        """Same tls-id and fingerprints: the peer speaks of the same association (RFC 8842 §5)."""
        return self.tls_id == other.tls_id and set(self.fingerprints) == set(other.fingerprints)


def fingerprint_values(attributes: Iterable[tuple[str, str | None]]) -> list[str]:
    """The values of the a=fingerprint lines among the attributes, in order."""
    return [value or "" for name, value in attributes if name.lower() == "fingerprint"]


def parse_dtls_attributes_untrusted(
    attributes: Iterable[tuple[str, str | None]],
    *,
    max_fingerprints: int = MAX_FINGERPRINTS,
) -> PeerDtlsParameters:
    """The peer's fingerprints, a=setup and a=tls-id from one stream's attributes (media level
    first, then session level; see the module docstring).

    Fingerprints with a hash function we do not use are skipped; at least one usable one is
    required. Raises :class:`DtlsError` (488)."""
    attributes = list(attributes)
    values = fingerprint_values(attributes)
    if not values:
        raise DtlsError("no a=fingerprint (RFC 5763 §5 requires one)")
    if len(values) > max_fingerprints:
        raise DtlsError(f"more than {max_fingerprints} a=fingerprint lines")
    fingerprints = tuple(parse_fingerprint_untrusted(value) for value in values)
    usable = tuple(fingerprint for fingerprint in fingerprints if fingerprint.usable)
    if not usable:
        names = "/".join(name.upper() for name in HASH_FUNCTIONS)
        raise DtlsError(f"no a=fingerprint with a hash function we accept ({names})")
    setup: Setup | None = None
    tls_id: str | None = None
    for name, value in attributes:
        lowered = name.lower()
        if lowered == "setup" and setup is None:
            setup = parse_setup_untrusted(value)
        elif lowered == "tls-id" and tls_id is None:
            tls_id = parse_tls_id_untrusted(value)
    return PeerDtlsParameters(usable, setup, tls_id)


def answerer_role(offered: Setup | None) -> Role:
    """Our DTLS role answering an offer with this a=setup (None: absent, which RFC 4145 §4
    reads as ``active``). ``actpass`` makes us active, the client (RFC 5763 §5: the answerer
    SHOULD be active, so the handshake starts while the answer travels)."""
    if offered is None or offered is Setup.ACTIVE:
        return Role.SERVER
    if offered in (Setup.ACTPASS, Setup.PASSIVE):
        return Role.CLIENT
    raise DtlsError("the offer's a=setup:holdconn asks for no DTLS association (RFC 4145 §4)")


def offerer_role(offered: Setup, answered: Setup | None) -> Role:
    """Our DTLS role after our offer with ``offered`` got an answer with ``answered`` (None:
    absent, meaning ``active``). RFC 4145 §4.1: the answer takes the role we left open."""
    answered = Setup.ACTIVE if answered is None else answered
    if answered is Setup.ACTIVE and offered in (Setup.ACTPASS, Setup.PASSIVE):
        return Role.SERVER
    if answered is Setup.PASSIVE and offered in (Setup.ACTPASS, Setup.ACTIVE):
        return Role.CLIENT
    raise DtlsError(
        f"the answer's a=setup:{answered.value} does not fit our a=setup:{offered.value} "
        "(RFC 5763 §5: an answer is active or passive)"
    )


def is_dtls_first_byte(first_byte: int) -> bool:
    """RFC 7983 §7: a datagram whose first byte is 20..63 is DTLS."""
    return 20 <= first_byte <= 63


# --------------------------------------------------------------------------------------------
# Datagrams and records


def _records(data: bytes) -> Iterator[bytes]:
    """Split our own output into DTLS records (RFC 6347 §4.1). Trusted input (OpenSSL wrote
    it); a record running past the end is kept whole as what is left."""
    offset = 0
    while offset < len(data):
        if len(data) - offset < _RECORD_HEADER:
            yield data[offset:]
            return
        length = int.from_bytes(data[offset + 11 : offset + 13], "big")
        end = min(offset + _RECORD_HEADER + length, len(data))
        yield data[offset:end]
        offset = end


def _pack(data: bytes, mtu: int) -> list[bytes]:
    """Our output as datagrams of at most ``mtu`` octets, records never split.

    A memory BIO is a byte stream: what OpenSSL wrote as several datagrams comes out joined, so
    the records are packed again, in order, as OpenSSL itself packs them."""
    datagrams: list[bytes] = []
    current = b""
    for record in _records(data):
        if current and len(current) + len(record) > mtu:
            datagrams.append(current)
            current = b""
        current += record
    if current:
        datagrams.append(current)
    return datagrams


def _first_message_seq(datagrams: Sequence[bytes]) -> int | None:
    """The handshake message_seq (RFC 6347 §4.2.2) that our flight starts with, when it starts
    with a plaintext handshake record; None for alerts, ChangeCipherSpec and encrypted records."""
    if not datagrams or len(datagrams[0]) < _RECORD_HEADER + _HANDSHAKE_HEADER:
        return None
    record = datagrams[0]
    epoch = int.from_bytes(record[3:5], "big")
    if record[0] != _HANDSHAKE or epoch != 0:
        return None
    return int.from_bytes(record[_RECORD_HEADER + 4 : _RECORD_HEADER + 6], "big")


def dtls_records_valid_untrusted(packet: bytes, *, max_records: int = MAX_RECORDS) -> bool:
    """Whether a peer's datagram is a well-formed sequence of DTLS 1.x records (RFC 6347 §4.1)
    whose plaintext handshake fragments have consistent headers (§4.2.2).

    RFC 6347 §4.1.2.7: invalid records are discarded silently, preserving the association. OpenSSL
    does so for bad MACs, but aborts the handshake on a malformed handshake header; checking
    here first keeps a stray or forged datagram from ending a handshake."""
    offset, count = 0, 0
    while offset < len(packet):
        count += 1
        if count > max_records or len(packet) - offset < _RECORD_HEADER:
            return False
        content_type, major = packet[offset], packet[offset + 1]
        epoch = int.from_bytes(packet[offset + 3 : offset + 5], "big")
        length = int.from_bytes(packet[offset + 11 : offset + 13], "big")
        end = offset + _RECORD_HEADER + length
        if (
            not 20 <= content_type <= 23
            or major != 0xFE
            or length > _MAX_RECORD
            or end > len(packet)
        ):
            return False
        if content_type == _HANDSHAKE and epoch == 0:
            fragment = packet[offset + _RECORD_HEADER : end]
            if len(fragment) < _HANDSHAKE_HEADER:
                return False
            message_length = int.from_bytes(fragment[1:4], "big")
            fragment_offset = int.from_bytes(fragment[6:9], "big")
            fragment_length = int.from_bytes(fragment[9:12], "big")
            if fragment_length != len(fragment) - _HANDSHAKE_HEADER:
                return False
            if fragment_offset + fragment_length > message_length:
                return False
        offset = end
    return count > 0


_CLIENT_HELLO = 1  # RFC 6347 §4.3.2: HandshakeType client_hello


def _holds_client_hello_untrusted(packet: bytes) -> bool:
    """Whether a peer's datagram (well-formed: :func:`dtls_records_valid_untrusted`) holds a
    plaintext ClientHello (epoch 0). A DTLS client never gets one from its server; OpenSSL
    ends the client's handshake on it ("unexpected message")."""
    offset = 0
    while offset + _RECORD_HEADER < len(packet):
        length = int.from_bytes(packet[offset + 11 : offset + 13], "big")
        if (
            packet[offset] == _HANDSHAKE
            and packet[offset + 3] == 0
            and packet[offset + 4] == 0
            and packet[offset + _RECORD_HEADER] == _CLIENT_HELLO
        ):
            return True
        offset += _RECORD_HEADER + length
    return False


def _client_hello_random(packet: bytes) -> bytes:
    """The 32-octet random of the ClientHello a datagram begins with (RFC 5246 §7.4.1.2: after
    the record and handshake headers and client_version); a peer's new handshake has a new
    one, a resend the same."""
    start = _RECORD_HEADER + _HANDSHAKE_HEADER + 2
    return packet[start : start + 32]


_CERTIFICATE = 11  # RFC 5246 §7.4: HandshakeType certificate


def _first_certificate_untrusted(packet: bytes) -> tuple[int, int] | None:
    """Where the first Certificate handshake fragment of a datagram's plaintext records (epoch
    0) is: (the offset of its handshake header, the end of its record); None when it holds
    none. A record may carry more than one handshake message (RFC 6347 §4.2.3: several in one
    record; a stack that packs its flight puts ClientKeyExchange and CertificateVerify after
    the Certificate). Session 46: before, only a Certificate alone in its record was read, and
    a packed one failed at once, not held."""
    offset = 0
    while offset + _RECORD_HEADER + _HANDSHAKE_HEADER <= len(packet):
        length = int.from_bytes(packet[offset + 11 : offset + 13], "big")
        body = offset + _RECORD_HEADER
        end = min(body + length, len(packet))
        if packet[offset] == _HANDSHAKE and packet[offset + 3 : offset + 5] == b"\0\0":
            start = body
            while start + _HANDSHAKE_HEADER <= end:
                if packet[start] == _CERTIFICATE:
                    return start, end
                fragment_length = int.from_bytes(packet[start + 9 : start + 12], "big")
                start += _HANDSHAKE_HEADER + fragment_length
        offset = body + length
    return None


def presented_certificate_untrusted(packet: bytes) -> bytes | None:
    """The DER of the first certificate (the peer's own, RFC 5246 §7.4.2) of a Certificate
    message a well-formed datagram (:func:`dtls_records_valid_untrusted`) holds whole in one
    plaintext record (epoch 0, one fragment: a self-signed certificate in a datagram, as
    browsers and softphones send it); None otherwise (none, fragmented, malformed). Read
    before OpenSSL sees the datagram (:meth:`DtlsNegotiation._held`)."""
    found = _first_certificate_untrusted(packet)
    return None if found is None else _whole_certificate_message(packet[found[0] : found[1]])


def _whole_certificate_message(fragment: bytes) -> bytes | None:
    """The first certificate's DER of ``fragment`` (a Certificate message's handshake header
    and body, perhaps more after it in its record), when it holds the message whole (one
    fragment, RFC 6347 §4.2.2); None otherwise."""
    header = fragment[:_HANDSHAKE_HEADER]
    message_length = int.from_bytes(header[1:4], "big")
    if header[6:9] != b"\0\0\0" or int.from_bytes(header[9:12], "big") != message_length:
        return None
    message = fragment[_HANDSHAKE_HEADER : _HANDSHAKE_HEADER + message_length]
    if len(message) < 6 or len(message) != message_length:
        return None
    first = int.from_bytes(message[3:6], "big")
    if first == 0 or 6 + first > min(len(message), 3 + int.from_bytes(message[:3], "big")):
        return None
    return message[6 : 6 + first]


def certificate_fragment_untrusted(packet: bytes) -> tuple[int, int, int, bytes] | None:
    """The first fragment of a Certificate message in a well-formed datagram's plaintext
    records (epoch 0, :func:`dtls_records_valid_untrusted`): (message_seq, the message's length,
    the fragment's offset, its octets), RFC 6347 §4.2.2; None when it holds none."""
    found = _first_certificate_untrusted(packet)
    if found is None:
        return None
    header = packet[found[0] : found[0] + _HANDSHAKE_HEADER]
    first = found[0] + _HANDSHAKE_HEADER
    return (
        int.from_bytes(header[4:6], "big"),
        int.from_bytes(header[1:4], "big"),
        int.from_bytes(header[6:9], "big"),
        packet[first : first + int.from_bytes(header[9:12], "big")],
    )


class _CertificateFragments:
    """A peer's Certificate message arriving in fragments across datagrams (RFC 6347 §4.2.3: a
    certificate longer than the path MTU, or a chain), gathered so that it is read before
    OpenSSL sees it (:meth:`_Association.take_certificate`): the datagrams that carry it, and
    those after them, are held meanwhile."""

    def __init__(self, message_seq: int, length: int) -> None:
        self.message_seq = message_seq
        self.message = bytearray(length)
        self._have = bytearray(length)  # 1 where an octet arrived
        self.datagrams: list[bytes] = []

    def add(self, offset: int, data: bytes) -> bool:
        """Take one fragment (consistent with the message: :func:`dtls_records_valid_untrusted`
        checked its bounds); whether the message is whole now."""
        self.message[offset : offset + len(data)] = data
        self._have[offset : offset + len(data)] = b"\1" * len(data)
        return all(self._have)

    def certificate(self) -> bytes | None:
        """The first certificate's DER of the whole message (the peer's own, RFC 5246 §7.4.2)."""
        length = len(self.message)
        header = bytes([_CERTIFICATE]) + length.to_bytes(3, "big")
        header += self.message_seq.to_bytes(2, "big") + bytes(3) + length.to_bytes(3, "big")
        return _whole_certificate_message(header + bytes(self.message))


def _opens_handshake_untrusted(role: Role, packet: bytes) -> bool:
    """Whether a source's datagram can begin a handshake with us in ``role``: a ClientHello to
    our server; a handshake record that is not one to our client (its server's flight)."""
    if len(packet) > MAX_DATAGRAM_LENGTH or not dtls_records_valid_untrusted(packet):
        return False
    if role is Role.SERVER:
        return _holds_client_hello_untrusted(packet)
    return packet[0] == _HANDSHAKE and not _holds_client_hello_untrusted(packet)


def _is_handshake_datagram_untrusted(packet: bytes) -> bool:
    """Whether the peer's datagram starts with a handshake or ChangeCipherSpec record: a
    retransmission of its last flight, once our handshake is done."""
    return len(packet) >= _RECORD_HEADER and packet[0] in (_HANDSHAKE, _CHANGE_CIPHER_SPEC)


def _openssl_reason(exc: SSL.Error) -> str:
    """A short reason from an OpenSSL error: its fixed reason text (never peer data)."""
    detail = ""
    errors = exc.args[0] if exc.args else None
    if isinstance(errors, list) and errors and isinstance(errors[-1], tuple):
        detail = str(errors[-1][-1])
    elif isinstance(exc, SSL.ZeroReturnError):
        detail = "the peer closed the association"
    elif exc.args:
        detail = str(exc.args[-1])
    detail = "".join(c for c in detail if c.isprintable())[:_MAX_REASON_DETAIL]
    return f"DTLS handshake failed: {detail or type(exc).__name__}"


# --------------------------------------------------------------------------------------------
# One DTLS association (the media-path half)


@attrs.frozen
class DtlsTiming:
    """Handshake timers (RFC 6347 §4.2.4.1): initial and largest retransmission interval, and
    the time a handshake may take before the negotiation fails."""

    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT
    initial_retransmit: float = 1.0
    max_retransmit: float = 60.0


@attrs.define
class DtlsStatistics:
    """Counters of one negotiation's association (``statistics()`` returns a copy)."""

    datagrams_received: int = 0
    datagrams_sent: int = 0
    retransmissions: int = 0
    """Timer-driven resends of our last flight."""
    final_flight_resends: int = 0
    dropped_oversize: int = 0
    dropped_malformed: int = 0
    """Datagrams that are not well-formed DTLS records (discarded, RFC 6347 §4.1.2.7), or
    that no handshake of ours takes: all of them, those below included."""
    dropped_later_fragment: int = 0
    """Of those, a ClientHello's later fragment (RFC 6347 §4.2.3) from a source with no
    handshake, asked for a cookie: its first fragment carries the cookie (the client sends the
    rest again once its handshake started). Session 42; before, only in the total."""
    dropped_unreadable_hello: int = 0
    """Of those, a ClientHello from such a source that ends before its cookie or whose headers
    do not agree (:func:`dtls_cookies.parse_client_hello_cookie_untrusted`): no client's."""
    dropped_cookie_out_of_sequence: int = 0
    """Of those, a ClientHello that carried our valid cookie with a message_seq other than 1
    (RFC 6347 §4.2.2): the one OpenSSL's DTLSv1_listen takes answers our first
    HelloVerifyRequest; a client asked twice (its NAT moved it to another address between
    its ClientHellos) sends message_seq 2, which cannot be continued; or a forger's."""
    dropped_early: int = 0
    """Datagrams dropped while waiting for the answer, beyond :data:`MAX_EARLY_DATAGRAMS`."""
    ignored: int = 0
    """Datagrams that arrived after the negotiation failed, or from another source than the
    one that proved itself."""
    handshakes_by_source: int = 0
    """Handshakes started for a source other than the first (before one proved itself)."""
    handshakes_dropped: int = 0
    """Of those, dropped for :data:`MAX_HANDSHAKES_PER_PORT` (the oldest first)."""
    handshakes_failed: int = 0
    """Handshakes of a source that failed (its certificate did not match the peer's
    a=fingerprint, mostly) before a source proved itself: that source's only, not the call's."""
    dropped_refused: int = 0
    """Datagrams from a source whose handshake failed."""
    dropped_rate: int = 0
    """Datagrams from a new source dropped for :data:`NEW_HANDSHAKES_PER_SECOND`."""
    hello_verify_requests: int = 0
    """HelloVerifyRequests sent (RFC 6347 §4.2.1): to a ClientHello from a source other than
    the SDP address without our valid cookie. No handshake started for it."""
    bad_cookies: int = 0
    """Of those ClientHellos, the ones whose cookie did not verify (wrong, or made with a
    secret older than the previous one)."""
    peer_restarts: int = 0
    """New handshakes the peer started on the established association's 5-tuple (RFC 6347
    §4.2.8: a ClientHello that returned our cookie), each run on a candidate association."""
    peer_rekeys: int = 0
    """Of those, the ones that completed with a certificate matching a=fingerprint: the
    candidate replaced the association and its keys the leg's."""
    peer_restarts_failed: int = 0
    """Of those, the ones that failed or timed out: dropped, the association and keys kept."""
    peer_restarts_held: int = 0
    """Of those, the ones whose certificate the SDP in force does not name, held for a
    re-offer that names it (:meth:`DtlsNegotiation._held`; session 45)."""
    peer_restarts_adopted: int = 0
    """Held candidates a re-offer naming their certificate made its new association
    (:meth:`DtlsNegotiation._adopt`; session 45)."""


@attrs.define
class DtlsTotals:
    """What every DTLS negotiation of a gateway counted since its start, for the metrics
    plugin (the key exchange's ``counters()``, docs/metrics.md)."""

    hello_verify_requests: int = 0
    """:attr:`DtlsStatistics.hello_verify_requests`, summed."""
    bad_cookies: int = 0
    """:attr:`DtlsStatistics.bad_cookies`, summed."""
    rate_limited: int = 0
    """:attr:`DtlsStatistics.dropped_rate`, summed."""
    later_fragments: int = 0
    """:attr:`DtlsStatistics.dropped_later_fragment`, summed."""
    unreadable_hellos: int = 0
    """:attr:`DtlsStatistics.dropped_unreadable_hello`, summed."""
    cookies_out_of_sequence: int = 0
    """:attr:`DtlsStatistics.dropped_cookie_out_of_sequence`, summed."""
    peer_rekeys: int = 0
    """:attr:`DtlsStatistics.peer_rekeys`, summed (session 44)."""
    peer_restarts_failed: int = 0
    """:attr:`DtlsStatistics.peer_restarts_failed`, summed (session 44)."""
    peer_restarts_held: int = 0
    """:attr:`DtlsStatistics.peer_restarts_held`, summed (session 45)."""
    peer_restarts_adopted: int = 0
    """:attr:`DtlsStatistics.peer_restarts_adopted`, summed (session 45)."""


DROPPED_HELLO_LOG_WINDOW = 60.0
"""Seconds after a ``dtls-client-hello-dropped`` line for one host before the next for it
(docs/operations.md): what it drops meanwhile is counted in that next line."""
DROPPED_HELLO_LOG_HOSTS = 256
"""Hosts remembered at once for :data:`DROPPED_HELLO_LOG_WINDOW`; a new host while all are
within their window is not logged, counted in the ``dtls-client-hellos-not-logged`` line."""

_PROOF = {
    True: "it returned our cookie, so it receives at that host",
    False: "never proved to receive there: the address may be forged",
}


class DroppedHelloLog:
    """The operator's log line of ClientHellos the engines drop from sources other than the SDP
    address (docs/operations.md, ``dtls-client-hello-dropped``; session 43): their source,
    which the call-ending reason never names (it goes to both parties) and the metrics do not
    either. At most one line per host for :data:`DROPPED_HELLO_LOG_WINDOW` seconds, the
    drops meanwhile counted in its next line, for at most :data:`DROPPED_HELLO_LOG_HOSTS`
    hosts at once (a flood from ever new, forged addresses writes at most that many lines a
    window, then one line of how many hosts went unlogged). One per :class:`DtlsKeyExchange`,
    shared by its negotiations; ``now`` is theirs (the media task's clock)."""

    def __init__(self) -> None:
        self._hosts: dict[str, tuple[float, int]] = {}
        """Host -> (when its last line went, drops since)."""
        self._unlogged_hosts: set[str] = set()
        self._unlogged_since: float | None = None

    def dropped(
        self,
        source: Source,
        reason: str,
        *,
        verified: bool,
        now: float,
        what: str = "ClientHello",
    ) -> None:
        """A ClientHello (or ``what``) from ``source`` dropped for ``reason`` (the metric's
        reason name, or ``bad_cookie``/``rate_limited``/``refused``); ``verified``: the source
        returned our valid cookie. A host is keyed as the cookie and the handshake queue key it
        (ip.source_key: an IPv6 link-local host with its zone, RFC 4007 §6; session 45, before
        ``fe80::1`` on two links shared one line, the second never named)."""
        host = source_key(source)[0]
        known = self._hosts.get(host)
        if known is not None and now - known[0] < DROPPED_HELLO_LOG_WINDOW:
            self._hosts[host] = (known[0], known[1] + 1)
            return
        count = 1 if known is None else known[1] + 1
        if known is None and len(self._hosts) >= DROPPED_HELLO_LOG_HOSTS:
            self._forget_quiet(now)
            if len(self._hosts) >= DROPPED_HELLO_LOG_HOSTS:
                if self._unlogged_since is None:
                    self._unlogged_since = now
                if len(self._unlogged_hosts) < DROPPED_HELLO_LOG_HOSTS:
                    self._unlogged_hosts.add(host)
                return
        if self._unlogged_hosts and self._unlogged_since is not None:
            log.warning(
                "DTLS ClientHellos dropped from %d more host(s) in the last %.0f s were not "
                "logged (at most %d hosts a window)",
                len(self._unlogged_hosts),
                now - self._unlogged_since,
                DROPPED_HELLO_LOG_HOSTS,
            )
            self._unlogged_hosts.clear()
            self._unlogged_since = None
        self._hosts.pop(host, None)
        self._hosts[host] = (now, 0)  # the newest last: _forget_quiet reads the oldest first
        log.warning(
            "DTLS %s from %s dropped (%s): %d from %s since its last such line; %s",
            what,
            format_host_port(host, int(source[1])),
            reason,
            count,
            format_host_port(host),
            _PROOF[verified],
        )

    def _forget_quiet(self, now: float) -> None:
        for host, (at, _) in list(self._hosts.items()):
            if now - at < DROPPED_HELLO_LOG_WINDOW:
                break
            del self._hosts[host]


class _Phase(enum.Enum):
    OFFERED = "offered"  # our offer is out; our role waits for the answer
    HANDSHAKING = "handshaking"  # role known; the DTLS handshake is under way (or about to be)
    ESTABLISHED = "established"  # keys agreed and checked; KeysReady queued
    FAILED = "failed"  # terminal


class _Association:
    """One DTLS association: an OpenSSL connection over memory BIOs, its flights and timers.

    Shared by the negotiations of one stream while re-offers keep it. Its methods return the
    events they cause; the negotiation that drove it queues them."""

    def __init__(
        self,
        *,
        role: Role,
        identity: DtlsIdentity,
        local_tls_id: str,
        peer: PeerDtlsParameters,
        profiles: Sequence[DtlsProfile],
        timing: DtlsTiming,
        mtu: int,
    ) -> None:
        self.role = role
        self.identity = identity
        self.local_tls_id = local_tls_id
        self.peer = peer
        self.profiles = tuple(profiles)
        self.timing = timing
        self.mtu = mtu
        self.phase = _Phase.HANDSHAKING
        self.keys: SrtpKeys | None = None
        self.failure: NegotiationFailed | None = None
        self.peer_certificate_sha256: str | None = None
        self.statistics = DtlsStatistics()
        self.rtcp_component: DtlsNegotiation | None = None
        """The separate RTCP port's negotiation of this stream, once asked for."""
        self.verified = False
        """Begun by a ClientHello that returned our cookie (:meth:`accept_verified`): its
        source receives at its host (RFC 6347 §4.2.1), read by
        :attr:`DtlsNegotiation.verified_sources`."""
        self.rekeys = 0
        """How many of the peer's new handshakes on the 5-tuple (RFC 6347 §4.2.8) replaced the
        associations before this one: carried over to each replacement."""
        self.client_random: bytes | None = None
        """The random of the ClientHello that began this association as a candidate
        (:meth:`DtlsNegotiation._to_candidate`): a resend of it is its own, another random a
        new restart."""
        self.held_certificate: bytes | None = None
        """The certificate (DER) a candidate presented that the SDP in force does not name,
        read before OpenSSL saw it (:meth:`DtlsNegotiation._held`): its handshake waits for a
        re-offer whose a=fingerprint names it (RFC 8842 §5: a new certificate, a new
        association), until its timeout."""
        self.held: list[bytes] = []
        """The datagrams held back from OpenSSL with :attr:`held_certificate`."""
        self.certificate_fragments: _CertificateFragments | None = None
        """The peer's Certificate message being gathered from its fragments
        (:meth:`take_certificate`); None when none is."""
        self.held_for_another_phone = False
        """Whether :attr:`held_certificate` was held for another phone's answer to our offer
        (:meth:`DtlsNegotiation._held_for_another_phone`), not for a re-offer."""
        self.held_outcome: str | None = None
        """What became of the re-offer that named the held certificate, said should the held
        handshake fail where it was held (:meth:`DtlsNegotiation._restart_failed`; session
        46: before, every such failure said no re-offer came). None: none named it."""
        self.address: Source | None = None
        """The source this handshake answers, whole as the socket gave it (an IPv6 link-local
        peer's scope id with it, RFC 4007 §6): where its datagrams go
        (:meth:`DtlsNegotiation.addressed_packets_to_send`). None: none bound."""
        self._fingerprint_mismatch = False
        self._extend_at_clock = False
        """Whether a re-offer took it (:meth:`adopt`): its deadline moves at its next clock."""
        self._deadline_when_held: float | None = None
        """Its deadline before a re-offer took it (:meth:`adopt`), given back should that
        re-offer be refused (:meth:`adoption_refused`). None: no re-offer has it."""
        self._started = False
        self._started_at: float | None = None
        self._deadline: float | None = None
        self._flight: list[bytes] = []
        self._last_message_seq = -1
        self._retransmit_at: float | None = None
        self._interval = timing.initial_retransmit
        self._flight_resends = 0
        self._final_flight: list[bytes] = []
        self._outgoing: list[bytes] = []
        self._connection = self._new_connection()

    def __repr__(self) -> str:
        return f"<DTLS association {self.role.value} {self.phase.value}>"

    def _new_connection(self, cookie: bytes | None = None) -> SSL.Connection:
        """A connection in our role; with ``cookie``, a server's that DTLSv1_listen can start
        with a ClientHello that returned it (:meth:`accept_verified`)."""
        context = SSL.Context(SSL.DTLS_METHOD)
        context.set_min_proto_version(_DTLS1_2_VERSION)
        context.set_max_proto_version(_DTLS1_2_VERSION)
        # No renegotiation, no tickets (each association is a full handshake that checks the
        # certificate), no compression; OpenSSL must not ask a memory BIO for the path MTU.
        context.set_options(
            SSL.OP_NO_QUERY_MTU
            | SSL.OP_NO_TICKET
            | SSL.OP_NO_RENEGOTIATION
            | SSL.OP_NO_COMPRESSION
            | SSL.OP_CIPHER_SERVER_PREFERENCE
        )
        context.set_cipher_list(_CIPHERS)
        context.use_certificate(self.identity.certificate)
        context.use_privatekey(self.identity.private_key)
        context.check_privatekey()
        # RFC 5763 §5: both sides present a certificate, self-signed, and trust comes from the
        # SDP fingerprint, checked here (depth 0 is the peer's own certificate).
        # The context keeps its callback, and this association keeps the connection and so the
        # context: the callback reaches the association by a weak reference, or every ended
        # DTLS call left its associations and their OpenSSL objects as cyclic garbage that only
        # the collector could free (docs/benchmarks.md, session 29). OpenSSL calls it only
        # inside our own handshake calls, while the association is alive.
        this = weakref.ref(self)

        def verify(connection: Any, certificate: Any, error: int, depth: int, ok: int) -> bool:
            association = this()
            return association is not None and association._verify(
                connection, certificate, error, depth, ok
            )

        context.set_verify(
            SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT | SSL.VERIFY_CLIENT_ONCE, verify
        )
        context.set_tlsext_use_srtp(b":".join(p.name.encode("ascii") for p in self.profiles))
        if cookie is not None:
            # Our stateless HelloVerifyRequest went before (dtls_cookies): OpenSSL checks the
            # cookie it is given against the one we verified, and never makes one.
            context.set_options(SSL.OP_COOKIE_EXCHANGE or 0)  # None: an OpenSSL without DTLS
            context.set_cookie_generate_callback(lambda _connection: cookie)
            context.set_cookie_verify_callback(
                lambda _connection, returned: hmac.compare_digest(returned, cookie)
            )
        connection = SSL.Connection(context, None)
        connection.set_ciphertext_mtu(self.mtu)
        if self.role is Role.CLIENT:
            connection.set_connect_state()
        else:
            connection.set_accept_state()
        return connection

    def _verify(
        self, _connection: Any, certificate: Any, _error: int, depth: int, _ok: int
    ) -> bool:
        if depth != 0:
            return True  # a chain above the peer's certificate proves nothing here; ignore it
        try:
            der = certificate.to_cryptography().public_bytes(serialization.Encoding.DER)
        except Exception:  # ValueError, x509.InvalidVersion, ...: whatever the parser raises
            # OpenSSL took it and the stricter X.509 parser did not (a datagram changed on the
            # way, or a peer probing us): it cannot be the certificate the peer's a=fingerprint
            # names. Fail closed; raising here would leave the handshake by an exception.
            der = None
        if der is not None and self.peer.matches(der):
            return True
        self._fingerprint_mismatch = True
        return False

    # -- driven by the negotiation ------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self._started

    @property
    def last_message_seq(self) -> int:
        """The handshake message_seq of the newest flight we sent (-1: none yet)."""
        return self._last_message_seq

    @property
    def deadline(self) -> float | None:
        """When the handshake times out (None: not started, or no longer handshaking)."""
        return self._deadline

    def start(self, now: float, *, deadline: float | None = None) -> list[KeyNegotiationEvent]:
        """Start the clock (and, as client, the handshake) at the first ``now`` we get; the
        handshake times out ``handshake_timeout`` later, or at ``deadline`` (a handshake that
        replaces another keeps its timeout)."""
        if self._started or self.phase is not _Phase.HANDSHAKING:
            return []
        self._started, self._started_at = True, now
        self._deadline = now + self.timing.handshake_timeout if deadline is None else deadline
        if self.role is Role.CLIENT:
            return self._drive(now)
        return []

    @property
    def negotiated_profile(self) -> str | None:
        """The use_srtp profile OpenSSL chose for our ServerHello (RFC 5764 §4.1.2: the server
        picks one of the client's list), once it answered the ClientHello; None before, or
        when none was common (§4.1.1: use_srtp left out)."""
        try:
            selected = self._connection.get_selected_srtp_profile()
        except SSL.Error:
            return None
        return selected.decode("ascii", "replace") or None

    def adopt(self) -> None:
        """A re-offer took this held handshake (:meth:`DtlsNegotiation._adopt`): at its next
        clock its deadline becomes ``handshake_timeout`` from then, as a new association's
        handshake gets (a re-INVITE that came late left it little of the first one), bounded
        by twice ``handshake_timeout`` from its start: a peer cannot keep it alive by
        re-offering (:meth:`_clock`; session 46)."""
        if self._deadline_when_held is None:
            self._deadline_when_held = self._deadline
        self._extend_at_clock = True

    def adoption_refused(self) -> None:
        """The re-offer that took it (:meth:`adopt`) was refused (RFC 3261 §14.1: the session
        in force stays, and with it the negotiation where it was held): back on the deadline
        it had there, whether or not its next clock moved it meanwhile. A refused re-offer
        gives it no more time (session 50: before, the move stayed, up to twice
        ``handshake_timeout`` from its first datagram). Past that deadline, it fails at its
        next timer, due at once."""
        self._extend_at_clock = False
        held, self._deadline_when_held = self._deadline_when_held, None
        if held is not None and self.phase is _Phase.HANDSHAKING and self._deadline is not None:
            self._deadline = held

    def _clock(self, now: float) -> None:
        if not self._extend_at_clock:
            return
        self._extend_at_clock = False
        if self.phase is not _Phase.HANDSHAKING or self._deadline is None:
            return
        assert self._started_at is not None
        timeout = self.timing.handshake_timeout
        extended = min(now + timeout, self._started_at + 2 * timeout)
        self._deadline = max(self._deadline, extended)

    def take_certificate(self, packet: bytes) -> tuple[bytes | None, list[bytes]]:
        """Read the peer's certificate from ``packet`` before OpenSSL sees it (for
        :meth:`DtlsNegotiation._held` and :meth:`DtlsNegotiation._held_for_another_phone`):
        (its DER, every datagram to go on with it, this one last) once the Certificate message
        is whole; (None, [packet]) when ``packet`` holds none and none is being gathered;
        (None, []) while fragments are gathered (RFC 6347 §4.2.3: a certificate longer than
        the path MTU comes in several datagrams), this datagram held with them. Before session
        55 a fragmented certificate was not read here, so OpenSSL's check of it ended the
        handshake with a fatal alert where a whole one was held. At most
        :data:`MAX_HELD_DATAGRAMS` are held for it, and a message longer than
        :data:`MAX_CERTIFICATE_MESSAGE` is not gathered: then they all go on unread."""
        whole = presented_certificate_untrusted(packet)
        if whole is not None and self.certificate_fragments is None:
            return whole, [packet]
        gathering = self.certificate_fragments
        fragment = None
        if len(packet) <= MAX_DATAGRAM_LENGTH and dtls_records_valid_untrusted(packet):
            fragment = certificate_fragment_untrusted(packet)  # its bounds checked there
        if gathering is None:
            if fragment is None or fragment[1] > MAX_CERTIFICATE_MESSAGE:
                return None, [packet]
            gathering = self.certificate_fragments = _CertificateFragments(*fragment[:2])
        gathering.datagrams.append(packet)
        if (
            fragment is not None
            and fragment[0] == gathering.message_seq
            and fragment[1] == len(gathering.message)
            and gathering.add(fragment[2], fragment[3])
        ):
            self.certificate_fragments = None
            return gathering.certificate(), gathering.datagrams
        if len(gathering.datagrams) >= MAX_HELD_DATAGRAMS:
            self.certificate_fragments = None  # never whole: OpenSSL decides, as before
            return None, gathering.datagrams
        return None, []

    def receive(self, packet: bytes, now: float) -> list[KeyNegotiationEvent]:
        self._clock(now)
        events = self.start(now)
        if self.phase is _Phase.FAILED:
            self.statistics.ignored += 1
            return events
        if len(packet) > MAX_DATAGRAM_LENGTH:
            self.statistics.dropped_oversize += 1
            return events
        if not dtls_records_valid_untrusted(packet):
            self.statistics.dropped_malformed += 1
            return events
        if self.role is Role.CLIENT and _holds_client_hello_untrusted(packet):
            # Never from our server: a stranger's forged handshake (RFC 5763 §5: nothing of
            # epoch 0 is authenticated) or a peer that took the wrong role. Fed to OpenSSL it
            # ends our handshake, and the call; discarded as RFC 6347 §4.1.2.7 allows.
            self.statistics.dropped_malformed += 1
            return events
        self.statistics.datagrams_received += 1
        self._connection.bio_write(packet)
        if self.phase is _Phase.ESTABLISHED:
            self._after_handshake(packet)
            return events
        return events + self._drive(now)

    def accept_verified(
        self, packet: bytes, cookie: bytes, now: float
    ) -> list[KeyNegotiationEvent]:
        """As DTLS server, begin with a ClientHello (``packet``, one whole record) that returned
        ``cookie``, our stateless HelloVerifyRequest's (RFC 6347 §4.2.1). A fresh connection
        that has seen nothing else takes it through DTLSv1_listen, which sets its state as
        after OpenSSL's own cookie exchange: that ClientHello is message_seq 1 and our
        ServerHello follows it (§4.2.2); a connection fed it directly waits for message 0."""
        events = self.start(now)
        if self.phase is not _Phase.HANDSHAKING:
            return events
        self._connection = self._new_connection(cookie=cookie)
        self.verified = True
        self.statistics.datagrams_received += 1
        self._connection.bio_write(packet)
        try:
            self._connection.DTLSv1_listen()
        except SSL.WantReadError:
            self._read_output()  # OpenSSL's own HelloVerifyRequest: not sent
            return events + self._fail(
                "DTLS handshake failed: the ClientHello that returned our cookie was refused"
            )
        except SSL.Error as exc:
            return events + self._fail(_openssl_reason(exc))
        return events + self._drive(now)

    def get_timer(self) -> float | None:
        if self.phase is not _Phase.HANDSHAKING:
            return None
        if not self._started:
            return 0.0  # due at once: the first handle_timer starts the clock
        assert self._deadline is not None
        if self._retransmit_at is None:
            return self._deadline
        return min(self._deadline, self._retransmit_at)

    def handle_timer(self, now: float) -> list[KeyNegotiationEvent]:
        self._clock(now)
        events = self.start(now)
        if self.phase is not _Phase.HANDSHAKING:
            return events
        assert self._deadline is not None
        if now >= self._deadline:
            return events + self._fail(HANDSHAKE_TIMEOUT_REASON)
        if self._retransmit_at is not None and now >= self._retransmit_at:
            events += self._retransmit(now)
        return events

    def take_outgoing(self) -> list[bytes]:
        outgoing, self._outgoing = self._outgoing, []
        self.statistics.datagrams_sent += len(outgoing)
        return outgoing

    # -- internals ------------------------------------------------------------------------------

    def _read_output(self) -> list[bytes]:
        chunks: list[bytes] = []
        while True:
            try:
                chunks.append(self._connection.bio_read(_READ_CHUNK))
            except SSL.WantReadError:
                break
        return _pack(b"".join(chunks), self.mtu)

    def _drive(self, now: float) -> list[KeyNegotiationEvent]:
        try:
            self._connection.do_handshake()
        except SSL.WantReadError:
            done = False
        except SSL.Error as exc:
            self._outgoing += self._read_output()  # the alert telling the peer why
            if self._fingerprint_mismatch:
                return self._fail(FINGERPRINT_MISMATCH_REASON)
            return self._fail(_openssl_reason(exc))
        else:
            done = True
        output = self._read_output()
        if done:
            # The side that finishes by writing (the server, in a full handshake) keeps that
            # last flight for the peer's retransmissions (RFC 6347 §4.2.4, "FINISHED").
            self._outgoing += output
            self._final_flight = output
            self._retransmit_at = None
            return self._complete()
        if output:
            self._new_output(output, now)
        return []

    def _new_output(self, output: list[bytes], now: float) -> None:
        self._outgoing += output
        if output[0][:1] == bytes([_ALERT]):
            return  # an alert goes once and is not part of the flight
        seq = _first_message_seq(output)
        if seq is not None and seq <= self._last_message_seq:
            # OpenSSL retransmitted on its own clock (while reading): a fresher copy of the
            # flight in force; the timer keeps its course.
            self._flight = output
            return
        if seq is not None:
            self._last_message_seq = seq
        # RFC 6347 §4.2.4.1: keep the timer value until a flight goes through without loss.
        if self._flight_resends == 0:
            self._interval = self.timing.initial_retransmit
        self._flight, self._flight_resends = output, 0
        self._retransmit_at = now + self._interval

    def _retransmit(self, now: float) -> list[KeyNegotiationEvent]:
        try:
            native = self._connection.DTLSv1_handle_timeout()
        except SSL.Error as exc:
            return self._fail(_openssl_reason(exc))
        output = self._read_output() if native else []
        if output:
            self._flight = output  # fresh record numbers (see the module docstring)
        self._outgoing += self._flight
        self._flight_resends += 1
        self.statistics.retransmissions += 1
        self._interval = min(self._interval * 2, self.timing.max_retransmit)
        self._retransmit_at = now + self._interval
        return []

    def _after_handshake(self, packet: bytes) -> None:
        # Let OpenSSL read what came: a retransmitted Finished makes it resend its last flight
        # with fresh record numbers. Data or alerts after the handshake change nothing here.
        for _ in range(8):
            try:
                self._connection.recv(_READ_CHUNK)
            except SSL.Error:  # WantReadError when done; close_notify and alerts are ignored
                break
        output = self._read_output()
        if output:
            self._outgoing += output
        elif (
            self._final_flight
            and _is_handshake_datagram_untrusted(packet)
            and self.statistics.final_flight_resends < MAX_FINAL_FLIGHT_RESENDS
        ):
            self._outgoing += self._final_flight
            self.statistics.final_flight_resends += 1

    def _complete(self) -> list[KeyNegotiationEvent]:
        certificate = self._connection.get_peer_certificate(as_cryptography=True)
        if certificate is None:
            return self._close_and_fail("DTLS handshake failed: the peer presented no certificate")
        der = certificate.public_bytes(serialization.Encoding.DER)
        if not self.peer.matches(der):  # the verify callback already did; never release keys
            return self._close_and_fail(FINGERPRINT_MISMATCH_REASON)
        self.peer_certificate_sha256 = certificate_digest(der, "sha-256").hex()
        selected = self._connection.get_selected_srtp_profile().decode("ascii", "replace")
        profile = next((p for p in self.profiles if p.name == selected), None)
        if profile is None:
            # RFC 5764 §4.1.1: a server without a common profile leaves use_srtp out and the
            # handshake completes; there is nothing to key SRTP with.
            return self._close_and_fail(NO_COMMON_PROFILE_REASON)
        suite = SUITES[profile.suite]
        material = self._connection.export_keying_material(
            EXPORTER_LABEL, 2 * suite.key_salt_length
        )
        client, server = split_keying_material(material, profile.suite)
        local, remote = (client, server) if self.role is Role.CLIENT else (server, client)
        self.keys = SrtpKeys(profile.suite, local_key=local, remote_key=remote)
        self.phase = _Phase.ESTABLISHED
        self._deadline = None
        return [KeysReady(self.keys)]

    def _close_and_fail(self, reason: str) -> list[KeyNegotiationEvent]:
        # The handshake finished on our side, so tell the peer we are closing (close_notify,
        # RFC 5246 §7.2.1) rather than leave it sending SRTP nobody can read.
        with contextlib.suppress(SSL.Error):
            self._connection.shutdown()
        self._outgoing += self._read_output()
        return self._fail(reason)

    def _fail(self, reason: str) -> list[KeyNegotiationEvent]:
        if self.phase is _Phase.FAILED:
            return []
        self.phase = _Phase.FAILED
        self.keys = None
        self._retransmit_at = self._deadline = None
        self._flight, self._final_flight = [], []
        self.failure = NegotiationFailed(reason, DtlsError.sip_status)
        return [self.failure]


# --------------------------------------------------------------------------------------------
# The negotiation of one stream on one leg


@attrs.define
class _Restarts:
    """The peer's new handshake on an established association (RFC 6347 §4.2.8,
    :meth:`DtlsNegotiation._to_candidate`): shared by the negotiations of one association
    (:meth:`DtlsNegotiation._take_restart`)."""

    candidate: _Association | None = None
    """Its candidate association: one at a time."""
    to: Source | None = None
    """Where the candidate's datagrams go; None: the core's usual way (no source known)."""
    failure_logged: bool = False
    """Whether a failed restart of this port was said in the log (once)."""


@attrs.define
class _KeptForAnotherPhone:
    """What an offerer's negotiation that may have been forked keeps of sources other than its
    peer, for another phone's final answer to the same offer (:meth:`DtlsNegotiation.
    for_another_phone`). A proxy downstream may give our one offer to several phones (RFC 3261
    §16.7), each with its own certificate (RFC 5763 §5); the phone that answers a=setup:active
    sends its ClientHello as it sends its 200, straight to our port, and it usually arrives
    before the 200, which goes through the proxy. Dropped, its handshake waited for its first
    resend (1 s, RFC 6347 §4.2.4.1). Nothing kept here is fed to OpenSSL under the answer in
    force: the negotiation of the phone that answers takes it, checked against that phone's
    a=fingerprint, or nobody does."""

    client_hellos: dict[Source, tuple[bytes, Source]] = attrs.Factory(dict)
    """The last datagram holding a ClientHello of each source (by source key, with the whole
    source), at most :data:`MAX_KEPT_FOR_ANOTHER_PHONE`, oldest first."""
    handshakes: dict[Source, _Association] = attrs.Factory(dict)
    """Other sources' handshakes under way whose certificate was not checked against the
    peer's a=fingerprint, or was held because it does not match it
    (:meth:`DtlsNegotiation._held_for_another_phone`), at most
    :data:`MAX_KEPT_FOR_ANOTHER_PHONE`, oldest first. Not driven (no timer, nothing sent);
    what their sources send next is held with them (:attr:`_Association.held`)."""


@attrs.frozen
class _Settings:
    identity: DtlsIdentity
    profiles: tuple[DtlsProfile, ...]
    timing: DtlsTiming
    mtu: int
    sdp_address_only: bool = False
    cookies: CookieSecrets | None = attrs.field(default=None, eq=False)
    """Asks sources other than the SDP address for a cookie (RFC 6347 §4.2.1); None: never."""
    totals: DtlsTotals | None = attrs.field(default=None, eq=False)
    dropped_hellos: DroppedHelloLog | None = attrs.field(default=None, eq=False)
    """The operator's line naming the source of a dropped ClientHello; None: not logged."""


@attrs.define(eq=False, repr=False)
class DtlsNegotiation:
    """DTLS-SRTP for one media stream on one leg (``interfaces.KeyNegotiation``), created by
    :class:`DtlsKeyExchange`. ``role`` is the SDP role, "offerer" or "answerer"; the DTLS role
    is :attr:`dtls_role`."""

    role: str
    _settings: _Settings
    _phase: _Phase
    _setup: Setup
    """What our SDP says: actpass in a first offer, our role otherwise."""
    _tls_id: str
    signalling_protected: bool = False
    """Whether the SDP travelled over TLS (integrity of the fingerprints; recorded only)."""
    _association: _Association | None = None
    _candidate: _Association | None = None
    """A re-offer's association in force, kept if the answer agrees (RFC 8842 §5)."""
    _keys_before: SrtpKeys | None = None
    """Keys of the association this one replaces, in force until ours are ready."""
    _early: list[bytes] = attrs.Factory(list)
    _early_dropped: int = 0
    _failure: NegotiationFailed | None = None
    _events: deque[KeyNegotiationEvent] = attrs.Factory(deque)
    _source: Source | None = None
    """The source (host, port) :attr:`_association` answers, bound by the first datagram
    :meth:`receive_packet_from` fed it; its datagrams go there
    (:meth:`addressed_packets_to_send`). None: not bound, they go the core's usual way
    (:meth:`packets_to_send`; our ClientHello as DTLS client, before anyone answered)."""
    _attempts: dict[Source, _Association] = attrs.Factory(dict)
    """Other sources' handshakes, oldest first, until a source proved itself (its certificate
    matched the peer's a=fingerprint): at most :data:`MAX_HANDSHAKES_PER_PORT` with ours."""
    _sdp_source: Source | None = None
    """The peer's SDP address, once it spoke (:meth:`note_sdp_address`): its handshake is
    never dropped for the cap, and its failure ends the call (as its alert does)."""
    _peer_source: Source | None = None
    """The source whose handshake completed with a certificate matching a=fingerprint."""
    _refused: deque[Source] = attrs.Factory(lambda: deque(maxlen=MAX_REFUSED_SOURCES))
    """Sources whose handshake failed before one proved itself: their datagrams are dropped."""
    _parting: list[tuple[bytes, Source]] = attrs.Factory(list)
    """What a dropped or failed source's handshake still sends it (its alert)."""
    _by_source: DtlsStatistics = attrs.Factory(DtlsStatistics)
    """The counters of handshakes per source, added to the association's (:meth:`statistics`)."""
    _new_handshakes: float = float(MAX_NEW_HANDSHAKES_BURST)
    """Handshakes new sources other than the SDP address may still start now (a token
    bucket, :data:`NEW_HANDSHAKES_PER_SECOND`)."""
    _new_handshakes_at: float | None = None
    _mismatched: int = 0
    """Sources whose certificate did not match a=fingerprint, their attempt ended alone: named
    in the reason should the leg time out (:meth:`_fail`)."""
    _verify_requests: list[tuple[bytes, Source]] = attrs.Factory(list)
    """HelloVerifyRequests to send (:meth:`_cookie_exchange`), each to the source it answers."""
    _with_sources: bool = False
    """Whether datagrams came with their source (:meth:`receive_packet_from`)."""
    _rtcp_port: bool = False
    """Whether this is a stream's separate RTCP port's negotiation (:meth:`rtcp_component`)."""
    _cookies_returned: int = 0
    """ClientHellos that returned our valid cookie (:meth:`_cookie_exchange`): a timeout's
    reason says when sources were asked and none did (:meth:`_fail`)."""
    _restarts: _Restarts = attrs.Factory(lambda: _Restarts())
    """The peer's new handshake on the established association's 5-tuple (RFC 6347 §4.2.8,
    :meth:`_to_candidate`), shared with the negotiations of re-offers that keep the
    association (:meth:`_take_restart`)."""
    _unaddressed: list[bytes] = attrs.Factory(list)
    """What goes the core's usual way for a restart whose source is not known (its alert)."""
    _adopting: bool = False
    """Whether :attr:`_association` is an adopted held candidate not yet keyed (:meth:`_adopt`)."""
    _rtcp_restart_of: DtlsNegotiation | None = None
    """An adopted association's (:meth:`_adopt`) previous RTCP port's negotiation, whose held
    candidate the new RTCP port's negotiation takes (:meth:`rtcp_component`; session 46)."""
    _forkable: bool = False
    """Whether our offer may have been forked (RFC 3261 §16.7) and no 2xx confirmed its answer
    yet: our first offer (:meth:`DtlsKeyExchange.offer`, a re-offer goes in a dialog, which
    no proxy forks) until :meth:`answer_confirmed`. Meanwhile other sources' handshakes are
    kept for another phone's answer (:attr:`_kept`), and a certificate of another source
    than the SDP address that does not match a=fingerprint is held, not refused at once."""
    _kept: _KeptForAnotherPhone = attrs.Factory(_KeptForAnotherPhone)
    """What this negotiation keeps for another phone's answer (:attr:`keeps_other_phones`)."""
    _handed: _KeptForAnotherPhone | None = None
    """What the negotiation this one replaces kept for another phone (:meth:`for_another_phone`):
    taken at the answer (:meth:`_take_handed`), checked against that phone's a=fingerprint."""
    _handed_rtcp: DtlsNegotiation | None = None
    """The replaced negotiation's RTCP port's negotiation (no rtcp-mux, RFC 5764 §4.1), whose
    kept datagrams and handshakes the new RTCP port's negotiation takes (:meth:`rtcp_component`)."""
    _replays: list[tuple[bytes, Source]] = attrs.Factory(list)
    """Datagrams fed through :meth:`receive_packet_from`, with their sources, at the first
    clock once our role is known (:meth:`_replay_handed`): those handed by the negotiation
    this one replaces (:meth:`_take_handed`), and those that came with their source while our
    offer waited for its answer (:meth:`_receive`; with :attr:`_early`, at most
    :data:`MAX_EARLY_DATAGRAMS` of those)."""

    def __repr__(self) -> str:
        role = self.dtls_role or "role?"
        return f"<DtlsNegotiation {self.role} {role} {self.state} suite={self.suite}>"

    # -- what the core reads --------------------------------------------------------------------

    @property
    def state(self) -> str:
        """``offered``, ``handshaking``, ``established`` or ``failed``."""
        if self._phase is _Phase.FAILED or self._association is None:
            return self._phase.value
        return self._association.phase.value

    @property
    def dtls_role(self) -> str | None:
        """``client`` (a=setup:active) or ``server``; None while our offer waits."""
        association = self._association or self._candidate
        return association.role.value if association is not None else None

    @property
    def setup(self) -> str:
        """The a=setup value in our SDP."""
        return self._setup.value

    @property
    def tls_id(self) -> str:
        """Our a=tls-id."""
        return self._tls_id

    @property
    def sdp_address_only(self) -> bool:
        """Whether the media port takes the handshake only from the address the peer's SDP
        gave until keys (``[plugins.dtls] sdp_address_only``; read by the call's handshake
        task, docs/plugin_hooks.md "Media-path engines")."""
        return self._settings.sdp_address_only

    @property
    def handshake_per_source(self) -> bool:
        """Whether the media port hands this engine DTLS datagrams from every source before keys
        (not only the latched one and the SDP address): it runs a handshake per source
        (:meth:`receive_packet_from`) and the one whose certificate matches a=fingerprint is
        the peer (:attr:`peer_source`). Read by the call's handshake task (docs/plugin_hooks.md
        "Media-path engines"); not with ``sdp_address_only``, which takes no other source."""
        return True

    @property
    def keeps_other_phones(self) -> bool:
        """Whether this is an offerer's negotiation whose offer may have been forked (RFC 3261
        §16.7: our first offer, no 2xx confirmed its answer yet, :meth:`answer_confirmed`):
        it keeps, bounded, the handshakes of sources other than its peer for another phone's
        final answer (:meth:`for_another_phone`), its keys or not. Read by the call's handshake
        task, which has the relay hand it DTLS from other sources after keys too, its socket
        not connected to the peer meanwhile (docs/plugin_hooks.md "Media-path engines";
        docs/media_security.md "Forked callees")."""
        return self._forkable and self._phase is not _Phase.FAILED

    @property
    def peer_source(self) -> Source | None:
        """The source that proved to be the peer: its handshake completed with a certificate
        matching the peer's a=fingerprint (RFC 5763 §5), wherever it came from (the SDP
        address, or a peer behind a NAT). None before. Read by the call's handshake task, which
        gives that source the port's latch (docs/media_security.md, "Forged handshakes")."""
        return self._peer_source

    @property
    def verified_sources(self) -> tuple[Source, ...]:
        """The sources (host, port) whose handshake runs because their ClientHello returned our
        cookie (RFC 6347 §4.2.1: they receive at their host), while none proved itself: at
        most :data:`MAX_HANDSHAKES_PER_PORT`, the handshakes under way. Read by the call's
        handshake task after each round: their datagrams are queued before those of sources
        that did not (docs/media_security.md, "Cookies for other sources"; session 43), so
        that a flood of spoofed ClientHellos, one from each of 48 sources or more, gives a
        phone behind a NAT that returned its cookie more than an equal chance for the rest of
        its handshake. Empty once a source proved itself (its own are the proven peer's)."""
        if self._peer_source is not None or self._phase is _Phase.FAILED:
            return ()
        found: list[Source] = []
        association = self._association
        if self._source is not None and association is not None and association.verified:
            found.append(self._source)
        found += [key for key, attempt in self._attempts.items() if attempt.verified]
        return tuple(found)

    def returns_cookie_untrusted(self, packet: bytes, source: Source, *, now: float) -> bool:
        """Whether ``packet`` from ``source`` is a ClientHello that returns our valid cookie
        (RFC 6347 §4.2.1: message_seq 1, the cookie this port gave that host), read before
        the datagram is queued: the call's handshake task asks it of a datagram that would
        otherwise be dropped because the queue's room for other sources is full (session
        43; docs/plugin_hooks.md, "Media-path engines"), so that a phone's second ClientHello
        goes before spoofed sources' as the rest of its handshake does
        (:attr:`verified_sources`). A parse of the first octets and at most two HMACs; no
        state changes. False for anything else, and once a source proved itself."""
        # A ClientHello of message_seq 1 first (RFC 6347 §4.2.2: the handshake header after
        # the record's 13 octets): a flood's first ClientHellos (message_seq 0) cost only this.
        if packet[13:14] != b"\x01" or packet[17:19] != b"\x00\x01":
            return False
        cookies = self._settings.cookies
        if cookies is None or self._peer_source is not None or self._phase is _Phase.FAILED:
            return False
        hello = parse_client_hello_cookie_untrusted(packet)
        if hello is None or hello.message_seq != 1 or not hello.cookie:
            return False
        return cookies.verifies(source, hello.cookie, now, context=self._cookie_context())

    @property
    def answers_only(self) -> bool:
        """Whether what we send only answers the peer's datagrams: as DTLS server (RFC 5763 §5,
        a=setup:passive) our flights answer a ClientHello. Read by the call's handshake task:
        such datagrams go to the source that holds the media port, never copied to the SDP
        address as well (docs/media_security.md, "Forged handshakes")."""
        return self.dtls_role == "server"

    @property
    def local_fingerprint(self) -> Fingerprint:
        """Our a=fingerprint (SHA-256 of the certificate this stream's association uses)."""
        return Fingerprint("sha-256", self._settings.identity.digest("sha-256"))

    @property
    def keys(self) -> SrtpKeys | None:
        """The keys in force: those agreed, else while a new association is under way those of
        the one it replaces. None before any agreement and after a failure."""
        if self._phase is _Phase.FAILED:
            return None
        association = self._association or self._candidate
        if association is not None and association.keys is not None:
            return association.keys
        return self._keys_before

    @property
    def suite(self) -> str | None:
        keys = self.keys
        return keys.suite if keys is not None else None

    @property
    def failure(self) -> NegotiationFailed | None:
        return self._failure

    @property
    def peer_certificate_sha256(self) -> str | None:
        """SHA-256 of the certificate the peer presented (lowercase hex), once checked."""
        association = self._association or self._candidate
        return association.peer_certificate_sha256 if association is not None else None

    @property
    def peer_rekeys(self) -> int:
        """How often the peer's new handshake on the association's 5-tuple re-keyed this
        stream's port (RFC 6347 §4.2.8, :meth:`_to_candidate`), across re-offers that kept the
        association. Read by the call's handshake task for its INFO line (optional,
        docs/plugin_hooks.md "Media-path engines")."""
        association = self._association
        return association.rekeys if association is not None else 0

    def security_record(self) -> dict[str, str | None]:
        """For the leg's security record: our DTLS role, the certificate the peer proved, and
        (only once it happened) how often the peer's new handshake re-keyed the stream."""
        record = {
            "dtls_role": self.dtls_role,
            "peer_certificate_sha256": self.peer_certificate_sha256,
        }
        if self.peer_rekeys:
            record["dtls_rekeyed_by_peer"] = str(self.peer_rekeys)
        return record

    def statistics(self) -> DtlsStatistics:
        association = self._association or self._candidate
        stats = attrs.evolve(association.statistics) if association else DtlsStatistics()
        stats.dropped_early += self._early_dropped
        return _added(stats, self._by_source)

    # -- interfaces.KeyNegotiation --------------------------------------------------------------

    def local_sdp_attributes(self) -> list[tuple[str, str | None]]:
        """a=fingerprint, a=setup and a=tls-id for this stream; none once failed."""
        if self._phase is _Phase.FAILED:
            return []
        return [
            ("fingerprint", serialize_fingerprint(self.local_fingerprint)),
            ("setup", self._setup.value),
            ("tls-id", self._tls_id),
        ]

    def remote_sdp_attributes(self, attributes: Iterable[tuple[str, str | None]]) -> None:
        """The peer's answer to our offer (media-level then session-level attributes). Decides
        our DTLS role (or keeps the association a re-offer proposed to keep) and feeds any
        datagrams that arrived before it. Raises :class:`DtlsError` when the answer is
        unacceptable, after queuing the same reason as ``NegotiationFailed``. The same answer
        again (a 183 then a 200) changes nothing; a different one after the first is refused.

        An answering negotiation took its offer in :meth:`DtlsKeyExchange.answer`; calling this
        on it is a :class:`LocalDtlsError`. On a failed negotiation it does nothing."""
        if self.role != "offerer":
            raise LocalDtlsError(
                "an answering DTLS negotiation takes the offer in DtlsKeyExchange.answer()"
            )
        if self._phase is _Phase.FAILED:
            return
        try:
            peer = parse_dtls_attributes_untrusted(attributes)
            role = offerer_role(self._setup, peer.setup)
        except DtlsError as exc:
            self._fail_and_raise(f"the answer: {exc.reason}")
        if self._association is not None:
            if self._association.peer.same_identity(peer) and self._association.role is role:
                return  # the same answer again
            self._fail_and_raise("a second answer changes the DTLS parameters")
        candidate, self._candidate = self._candidate, None
        if candidate is not None and candidate.peer.same_identity(peer) and candidate.role is role:
            self._association = candidate  # RFC 8842 §5: the association goes on
        else:
            if candidate is not None:
                self._keys_before = candidate.keys
            self._association = self._new_association(role, peer)
            self._take_handed(role, peer)
        self._phase = _Phase.HANDSHAKING

    def check_remote_sdp_attributes(
        self, attributes: Iterable[tuple[str, str | None]]
    ) -> str | None:
        """Why :meth:`remote_sdp_attributes` would refuse the peer's answer, or None; changes
        nothing (``interfaces.KeyNegotiation``'s optional check). The core gives the answer to
        :meth:`remote_sdp_attributes` only once it took the whole answer: a forked phone's
        refused 183 binds nothing, so another phone's answer to the same offer (its own
        certificate, RFC 5763 §5) is read on its own merits, not as "a second answer"."""
        if self.role != "offerer":
            raise LocalDtlsError(
                "an answering DTLS negotiation takes the offer in DtlsKeyExchange.answer()"
            )
        if self._phase is _Phase.FAILED:
            return None  # remote_sdp_attributes does nothing on it
        try:
            peer = parse_dtls_attributes_untrusted(attributes)
            role = offerer_role(self._setup, peer.setup)
        except DtlsError as exc:
            return f"the answer: {exc.reason}"
        association = self._association
        if association is not None and not (
            association.peer.same_identity(peer) and association.role is role
        ):
            return "a second answer changes the DTLS parameters"
        return None

    def for_another_phone(self) -> DtlsNegotiation:
        """A fresh negotiation of the offer this one made, for another phone's final answer to
        it (``interfaces.KeyNegotiation``'s optional method): a proxy downstream forked our
        offer (RFC 3261 §16.7), one phone's early answer (a 183 with SDP) was taken and keyed
        by its handshake here, and another phone answered with its 200 (RFC 3261 §12.1.2).
        That phone has its own certificate and association (RFC 5763 §5): the fresh one says
        what our offer said (our certificate, a=setup, a=tls-id, RFC 8842 §5: the association
        that phone knows of is ours to begin) and holds nothing of the early phone's: no
        association, no source, no keys. It takes what this one kept of other sources for
        another phone's answer (session 52, :meth:`_take_handed`): that phone's ClientHello,
        which came before its 200, and its handshake begun while the early phone's ran. The
        core drives it in this one's place once it took the answer
        (``LegSecurity.read_answer``); this one is never driven again. Session 51: before,
        that 200 was refused ("a second answer changes the DTLS parameters"), 488 to the
        caller and BYE to the phone that answered."""
        if self.role != "offerer":
            raise LocalDtlsError("only an offering DTLS negotiation takes another phone's answer")
        fresh = DtlsNegotiation(
            self.role, self._settings, _Phase.OFFERED, self._setup, self._tls_id
        )
        fresh.signalling_protected = self.signalling_protected
        if self.keeps_other_phones:
            # Session 52: what other sources sent (that phone's ClientHello, which came
            # straight to our port before its 200 came through the proxy) goes to the fresh
            # one, taken only once the answer is (:meth:`_take_handed`): this one is as it was
            # should the answer be refused. Before, that phone waited for its resend (1 s).
            fresh._handed = self._for_another_phone()
            association = self._association
            fresh._handed_rtcp = association.rtcp_component if association is not None else None
        return fresh

    def answer_confirmed(self) -> None:
        """A 2xx confirmed the answer in force (RFC 3261 §13.2.2.4: the first 2xx makes the
        call; a proxy's later 2xx from other phones are BYEd, never answers to this offer):
        our offer is no longer one another phone may answer (:attr:`keeps_other_phones`).
        What was kept for another phone's answer is dropped, and handshakes held because
        their certificate matched neither the peer nor, so far, another phone are refused
        (:meth:`_held_for_another_phone`); the RTCP port's negotiation likewise. Called by the
        core (``LegSecurity.answer_confirmed``; optional, docs/plugin_hooks.md); idempotent."""
        self._forkable = False
        self._kept = _KeptForAnotherPhone()
        for key, attempt in list(self._attempts.items()):
            if attempt.held_for_another_phone:
                # Its certificate matched no phone's a=fingerprint: it failed the check
                # (RFC 5763 §5), as it would have at once had the offer not been forkable.
                del self._attempts[key]
                self._by_source.handshakes_failed += 1
                self._mismatched += 1
                if key not in self._refused:
                    self._refused.append(key)
        association = self._association
        if association is not None and association.rtcp_component is not None:
            association.rtcp_component.answer_confirmed()

    def _for_another_phone(self) -> _KeptForAnotherPhone:
        """What another phone's negotiation takes of this one (:meth:`for_another_phone`): the
        ClientHellos kept, and the handshakes of other sources under way whose certificate
        was not found to match the peer's a=fingerprint: those kept since a source proved
        itself, and, while none has, each source's (the phone that answers may have begun its
        own while the early phone's ran, RFC 5763 §5), its own association's too. A snapshot:
        nothing here changes until the answer is taken."""
        handshakes = dict(self._kept.handshakes)
        if self._peer_source is None:
            candidates = list(self._attempts.items())
            if self._source is not None and self._association is not None:
                candidates.insert(0, (self._source, self._association))
            for key, association in candidates:
                if association.phase is _Phase.HANDSHAKING and not association.keys:
                    handshakes.setdefault(key, association)
        while len(handshakes) > MAX_KEPT_FOR_ANOTHER_PHONE:
            del handshakes[next(iter(handshakes))]
        return _KeptForAnotherPhone(dict(self._kept.client_hellos), handshakes)

    def claims_packet(self, first_byte: int, packet: bytes) -> bool:
        """DTLS datagrams: first byte 20..63 (RFC 7983 §7). STUN (0..3), ZRTP (16..19) and
        RTP/RTCP (128..191) are left to others."""
        return is_dtls_first_byte(first_byte)

    def receive_packet(self, packet: bytes, *, now: float) -> None:
        """A DTLS datagram from the peer. Before our role is known (our offer waits for its
        answer) it is kept, up to :data:`MAX_EARLY_DATAGRAMS`; after a failure it is ignored."""
        if self._to_previous_rtcp_restart(packet, None, now):
            return
        self._receive(packet, None, now)

    def _receive(self, packet: bytes, source: Source | None, now: float) -> None:
        association = self._driven()
        if association is None:
            kept = len(self._early) + len(self._replays)
            if self._phase is not _Phase.OFFERED or kept >= MAX_EARLY_DATAGRAMS:
                self._early_dropped += 1
            elif source is not None:
                # Kept with its source, and fed with it once the answer says our role
                # (:meth:`_replay_handed`): our offer may have been forked (RFC 3261 §16.7),
                # and two phones answering active each send their ClientHello ahead of their
                # answers (RFC 5763 §5). Without it, phone 2's went into phone 1's handshake,
                # which failed (session 55).
                self._replays.append((packet, source))
            else:
                self._early.append(packet)
            return
        self._queue(self._feed_early(association, now))
        if self._to_candidate(association, packet, source, now):
            return
        self._queue(association.receive(packet, now))

    def receive_packet_from(self, packet: bytes, *, source: Source | None, now: float) -> None:
        """A DTLS datagram and the address it came from (None: not known, then as
        :meth:`receive_packet`). Until a source proved itself each source gets a handshake of
        its own (docs/media_security.md, "Forged handshakes"): nothing of epoch 0 is
        authenticated, the certificate checked against a=fingerprint is (RFC 5763 §5), so a
        stranger's ClientHello must neither stand in for the peer's nor end its handshake.

        The first source is the association's; each other gets its own OpenSSL connection with
        the same role and peer parameters, at most :data:`MAX_HANDSHAKES_PER_PORT` in all (the
        oldest other source's dropped first, never the SDP address's). As DTLS client our
        ClientHello went the core's usual way (the latched source, and the SDP address): the
        first source whose datagram moves that handshake on (our next flight, or a failure)
        is the association's, and another source's server flight (it answers no ClientHello
        that source got) is discarded and gets a ClientHello of its own connection. The first
        handshake to complete with a matching certificate is the peer's: its keys are the
        leg's, its source :attr:`peer_source`, the others dropped. A
        handshake that fails (the fingerprint check, an OpenSSL error) ends only its source's
        attempt, unless it is the SDP address's or its certificate matched; the leg still fails
        at ``handshake_timeout`` if no source proves itself. A host that calls this reads
        :meth:`addressed_packets_to_send` as well as :meth:`packets_to_send`.

        While our offer may have been forked (:attr:`keeps_other_phones`), what other sources
        send once one proved itself is kept for another phone's answer, and a certificate
        from another source than the SDP address that does not match is held, not refused
        (:meth:`_held_for_another_phone`, :meth:`_keep_for_another_phone`)."""
        if self._to_previous_rtcp_restart(packet, source, now):
            return
        self._replay_handed(now)  # what came before it, handed by another negotiation
        association = self._driven()
        if (
            source is None
            or association is None
            or association is not self._association
            or (self._source is None and association.phase is not _Phase.HANDSHAKING)
        ):
            # Role not known yet (kept), a re-offer's candidate, or an association that has
            # keys without any source having been told (a kept association): as before.
            self._receive(packet, source, now)
            return
        key = source_key(source)  # compared by host (and zone) and port; sent to as given
        self._with_sources = True
        self._queue(self._feed_early(association, now))
        opens = _opens_handshake_untrusted(association.role, packet)
        if self._source is None and key not in self._attempts and key not in self._refused:
            if not opens:
                # Nothing a handshake of ours begins with (an alert, a ClientHello to our
                # client): to the association, as before, which binds no source.
                self._settle(None, association, association.receive(packet, now), now)
                return
            if association.role is Role.CLIENT:
                # Our ClientHello went the core's usual way; the source whose datagram moves
                # the handshake on (our next flight, keys, or a failure) answered it and takes
                # it. A datagram that moves nothing (a blind stranger's handshake record that
                # OpenSSL buffers or discards, RFC 6347 §4.1.2.7) binds nothing: bound to it,
                # the peer's own answer would go to a handshake of its own with a new
                # ClientHello, which the peer, already answering ours, takes for a resend.
                sent = association.last_message_seq
                events = association.receive(packet, now)
                moved = association.last_message_seq != sent or events
                if moved or association.phase is not _Phase.HANDSHAKING:
                    self._source, association.address = key, source
                self._settle(key, association, events, now)
                return
            go_on, cookie = self._cookie_exchange(key, source, packet, now)
            if not go_on or not self._may_start(key, now):
                return
            self._source = key
            if cookie is not None:
                association.address = source
                events = association.accept_verified(packet, cookie, now)
                self._settle(key, association, events, now)
                return
        if key == self._source:
            association.address = source
            if self._to_candidate(association, packet, source, now):
                return
            for datagram in self._held_for_another_phone(key, association, packet):
                if association.phase is _Phase.FAILED:
                    break
                self._settle(key, association, association.receive(datagram, now), now)
            return
        if self._peer_source is not None or association.phase is not _Phase.HANDSHAKING:
            self._by_source.ignored += 1
            self._keep_for_another_phone(key, source, packet)
            return
        if key in self._refused:
            self._by_source.dropped_refused += 1
            # As DTLS server that source's handshake began with our cookie (only the SDP
            # address is not asked, and its failure ends the leg); as client it proved nothing.
            verified = association.role is Role.SERVER and self._settings.cookies is not None
            self._log_dropped(
                source, "refused", verified=verified, now=now, what="handshake datagram"
            )
            return
        attempt = self._attempts.get(key)
        if attempt is not None:
            attempt.address = source
            for datagram in self._held_for_another_phone(key, attempt, packet):
                if attempt.phase is _Phase.FAILED:
                    break
                self._settle(key, attempt, attempt.receive(datagram, now), now)
            return
        if not opens:
            self._by_source.dropped_malformed += 1
            return
        cookie = None
        if association.role is Role.SERVER:
            go_on, cookie = self._cookie_exchange(key, source, packet, now)
            if not go_on:
                return
        if not self._may_start(key, now):
            return
        attempt = self._new_attempt(key, association)
        attempt.address = source
        events = attempt.start(now, deadline=association.deadline)
        if cookie is not None:
            events += attempt.accept_verified(packet, cookie, now)
        elif attempt.role is Role.SERVER:
            events += attempt.receive(packet, now)
        # As client, the datagram answers a ClientHello of another connection (RFC 6347
        # §4.1.2.7: discarded); the start sent this source our own.
        self._settle(key, attempt, events, now)

    def note_sdp_address(self, source: Source) -> None:
        """The peer's SDP address spoke from ``source`` (told by the call's handshake task):
        its handshake is never dropped for :data:`MAX_HANDSHAKES_PER_PORT`, and its failure
        ends the leg's negotiation at once, as its alert does ("Forged alerts")."""
        self._sdp_source = source_key(source)

    def packets_to_send(self, *, now: float) -> list[bytes]:
        """Datagrams for the peer, sent from this stream's media port. The first call after our
        role is known starts the handshake clock (and, as DTLS client, the handshake). After a
        failure: the alert telling the peer, once. Once the association answers a known source
        (:meth:`receive_packet_from`) its datagrams come from :meth:`addressed_packets_to_send`
        instead."""
        self._replay_handed(now)  # handed by the negotiation this one replaces, at its answer
        association = self._driven()
        if association is None:
            if self._phase is _Phase.FAILED and self._association is not None:
                if self._source is not None:
                    return []
                return self._association.take_outgoing()
            return []
        self._queue(self._feed_early(association, now))
        self._queue(association.start(now))
        out, self._unaddressed = self._unaddressed, []
        if self._restarts.candidate is not None and self._restarts.to is None:
            out += self._restarts.candidate.take_outgoing()
        if self._source is not None and association is self._association:
            return out
        return out + association.take_outgoing()

    def addressed_packets_to_send(self, *, now: float) -> list[tuple[bytes, Source]]:
        """Datagrams for one source each (:meth:`receive_packet_from`): the association's for
        the source it answers, each other source's handshake's for that source (an answer to
        its ClientHello, our ClientHello to a source that sent a server flight, an alert)."""
        del now  # the clock started in packets_to_send; nothing here depends on it
        out, self._verify_requests = self._verify_requests, []
        out += self._parting
        self._parting = []
        association = self._association
        if self._source is not None and association is not None:
            to = association.address or self._source
            out += [(packet, to) for packet in association.take_outgoing()]
        for key, attempt in self._attempts.items():
            to = attempt.address or key
            out += [(packet, to) for packet in attempt.take_outgoing()]
        if self._restarts.candidate is not None and self._restarts.to is not None:
            restart = self._restarts.candidate
            out += [(packet, self._restarts.to) for packet in restart.take_outgoing()]
        return out

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` is due: a retransmission or the handshake timeout; 0.0 when
        the handshake can start but has not seen the clock yet; None when nothing is pending."""
        association = self._driven()
        if association is None:
            return None
        if self._adopting and association.phase is _Phase.FAILED:
            return 0.0  # failed where it was held (:meth:`_adopt`): said at once
        if self._replays and association is self._association:
            return 0.0  # handed datagrams to feed (:meth:`_replay_handed`)
        timers = [association.get_timer()]
        timers += [attempt.get_timer() for attempt in self._attempts.values()]
        if self._restarts.candidate is not None:
            timers.append(self._restarts.candidate.get_timer())
        due = [timer for timer in timers if timer is not None]
        return min(due) if due else None

    def handle_timer(self, *, now: float) -> None:
        """Retransmit the last flight or fail the handshake, as due; then read
        :meth:`packets_to_send` and :meth:`next_event`."""
        self._replay_handed(now)  # handed by the negotiation this one replaces, at its answer
        association = self._driven()
        if association is None:
            return
        if self._adopting and association.phase is _Phase.FAILED:
            # The negotiation it was held by timed it out (or OpenSSL failed it there) while
            # this re-offer waited for its answer (:meth:`_adopt`): this association's end.
            failure = association.failure
            self._fail(HANDSHAKE_TIMEOUT_REASON if failure is None else failure.reason)
            return
        self._queue(self._feed_early(association, now))
        self._settle(self._source, association, association.handle_timer(now), now)
        for key, attempt in list(self._attempts.items()):
            if self._driven() is None:
                break  # the leg's negotiation ended
            if self._attempts.get(key) is not attempt:
                continue  # dropped meanwhile (another source proved itself)
            timer = attempt.get_timer()
            if timer is not None and timer <= now:
                self._settle(key, attempt, attempt.handle_timer(now), now)
        restart = self._restarts.candidate
        if restart is not None and self._driven() is not None:
            timer = restart.get_timer()
            if timer is not None and timer <= now:
                self._settle_candidate(restart, restart.handle_timer(now))

    def next_event(self) -> KeyNegotiationEvent | None:
        """The next ``KeysReady`` or ``NegotiationFailed``, or None."""
        return self._events.popleft() if self._events else None

    def abandon(self) -> None:
        """The offer this negotiation answers was refused, and the stream goes on with the
        negotiation in force (RFC 3261 §14.1: a 488 from the other leg, or ours; the core's
        ``LegSecurity.peer_offer_refused``, docs/plugin_hooks.md): it is never driven again.
        A held handshake it took (:meth:`_adopt`), and its RTCP port's, goes back, still
        held, to the negotiation in force, on the deadline it had there
        (:meth:`_Association.adoption_refused`), and its failure there says the re-offer was
        refused (session 50: before, the refused re-offer's extension stayed, up to twice
        ``handshake_timeout`` from its first datagram). Nothing is queued; once is enough."""
        if self._phase is _Phase.FAILED:
            return
        self._phase = _Phase.FAILED
        self._rtcp_restart_of = None
        early, self._early = self._early, []
        association = self._association
        if not self._adopting or association is None:
            return
        self._adopting = False
        association.adoption_refused()
        association.held_outcome = "the re-offer naming it took it, and was refused"
        if association.phase is _Phase.HANDSHAKING and early:
            # Its datagrams held back, not yet fed (:meth:`_feed_early`): held there again.
            association.held = (early + association.held)[:MAX_HELD_DATAGRAMS]
        component, association.rtcp_component = association.rtcp_component, None
        if component is not None:
            component.abandon()

    def restart_handshake(self, *, now: float) -> bool | None:
        """As DTLS server, start the handshake under way afresh: a new association with the
        same role, peer parameters (fingerprints, a=setup, tls-id) and certificate, its clock
        started at ``now``. The call's handshake task calls it when the peer's SDP address
        speaks after datagrams from another source were fed and before keys
        (docs/media_security.md, "Forged handshakes"): nothing in a handshake of epoch 0 is
        authenticated (RFC 5763 §5), and OpenSSL's state holds the other source's ClientHello
        (fed without its source, no cookie was asked of it). As DTLS client nothing changes:
        our ClientHello went to the SDP address, whose answer is the one to go on with (a new
        ClientHello would make that answer useless), and a ClientHello from anyone is
        discarded (:func:`_holds_client_hello_untrusted`). Nothing happens either once the
        association has keys or failed, or before our role is known.

        False, and nothing changes, once datagrams came with their source
        (:meth:`receive_packet_from`): the SDP address has a handshake of its own then, and
        another source's ClientHello either has one too or was only asked for a cookie."""
        if self._with_sources:
            return False
        association = self._association
        if (
            self._phase is _Phase.FAILED
            or association is None
            or association.phase is not _Phase.HANDSHAKING
            or association.role is not Role.SERVER
        ):
            return None
        fresh = self._new_association(association.role, association.peer)
        # The separate RTCP port's negotiation belongs to the stream's association (RFC 5764
        # §4.1): it runs on its own port, restarted there if need be, and is kept. So are the
        # counters, for the call's record.
        fresh.rtcp_component = association.rtcp_component
        fresh.statistics = association.statistics
        self._association = fresh
        self._queue(fresh.start(now))
        return None

    # -- separate RTCP (no rtcp-mux) ------------------------------------------------------------

    def rtcp_component(self) -> DtlsNegotiation | None:
        """The negotiation for the stream's separate RTCP port, when rtcp-mux was not agreed:
        RFC 5764 §4.1 runs a DTLS handshake on each port, with the same SDP roles and
        certificates, and keys SRTCP on that port from that handshake. It has no SDP attributes
        of its own. None while our role is not known yet (our offer waits for its answer) and
        after a failure.

        The component belongs to the association: a re-offer that keeps the association (RFC
        8842 §5) returns the same component, so the RTCP port is not handshaken again; a new
        association gets a new one."""
        association = self._association
        if association is None or self._phase is _Phase.FAILED:
            return None
        if association.rtcp_component is None:
            component = DtlsNegotiation(
                self.role,
                self._settings,
                _Phase.HANDSHAKING,
                self._setup,
                self._tls_id,
                signalling_protected=self.signalling_protected,
                rtcp_port=True,
            )
            component._forkable = self._forkable
            previous, self._rtcp_restart_of = self._rtcp_restart_of, None
            held = _held_restart(previous, association.peer, self._settings.profiles)
            if held is not None and previous is not None:
                # The phone restarted its RTCP port's association with the new certificate
                # too, before the re-offer (:meth:`_adopt`): that handshake, held, is the new
                # RTCP port's. A fresh one would wait for a ClientHello the phone already
                # sent, and fail the call at handshake_timeout (session 46).
                component._adopt(held, association.peer, previous)
            else:
                component._association = self._new_association(association.role, association.peer)
                handed, self._handed_rtcp = self._handed_rtcp, None
                if handed is not None and handed._phase is not _Phase.FAILED:
                    # Another phone's answer replaced the negotiation (:meth:`for_another_phone`):
                    # what that one's RTCP port kept of other sources is this port's, checked
                    # against this phone's a=fingerprint (RFC 5764 §4.1: a handshake per port).
                    component._handed = handed._for_another_phone()
                    component._take_handed(association.role, association.peer)
                if previous is not None:
                    # An adopted association (:meth:`_adopt`): its RTCP port's restart may
                    # still come to the previous RTCP port's negotiation (the answer not sent
                    # yet, the core feeding that one): taken then (:meth:`_driven`).
                    component._rtcp_restart_of = previous
            association.rtcp_component = component
        return association.rtcp_component

    # -- internals ------------------------------------------------------------------------------

    def _driven(self) -> _Association | None:
        if self._phase is _Phase.FAILED:
            return None
        if self._rtcp_port and self._rtcp_restart_of is not None:
            self._take_late_rtcp_restart(self._rtcp_restart_of)
        return self._association or self._candidate

    def _take_late_rtcp_restart(self, previous: DtlsNegotiation) -> None:
        """The new RTCP port's negotiation of an adopted association (:meth:`rtcp_component`)
        whose phone's RTCP restart was held by the previous RTCP port's negotiation after
        this one was made (it came while the re-offer's answer was pending and the core still
        fed the previous port's): take it, as :meth:`rtcp_component` takes one held before.
        Only while our fresh association has received nothing (once it has, the phone's
        handshake came here). Session 46: before, the fresh one waited for a ClientHello the
        phone had sent, and its failure at handshake_timeout ended the call."""
        association = self._association
        if association is None or association.statistics.datagrams_received or self._adopting:
            self._rtcp_restart_of = None
            return
        held = _held_restart(previous, association.peer, self._settings.profiles)
        if held is None:
            return  # not held (yet): asked again at the next datagram or clock
        self._rtcp_restart_of = None
        statistics = association.statistics
        self._association = None
        self._adopt(held, association.peer, previous)
        held.statistics = _added(statistics, held.statistics)

    def _to_previous_rtcp_restart(self, packet: bytes, source: Source | None, now: float) -> bool:
        """Whether ``packet`` went on to the phone's RTCP restart under way at the previous RTCP
        port's negotiation (:meth:`_take_late_rtcp_restart`), which then holds it and, its
        certificate named by our re-offer, this negotiation takes. So when that restart began
        before the re-offer (its ClientHello returned our cookie there) and the rest of its
        flight came while our answer was pending: the call's handshake task kept that for the
        re-offer's new association (epoch 0, handshakes.py) and hands it here. Session 50:
        before, the flight went to our fresh association, which waited for a ClientHello the
        phone had sent to the other, and its failure at handshake_timeout ended the call.
        Only while our fresh association has received nothing, and never a ClientHello that
        does not resend the candidate's own (a new handshake is ours): the certificate is
        still read first, and taken only if the re-offer's a=fingerprint names it."""
        previous = self._rtcp_restart_of
        association = self._association
        if (
            previous is None
            or association is None
            or self._adopting
            or association.statistics.datagrams_received
            or previous._phase is _Phase.FAILED
        ):
            return False
        candidate = previous._restarts.candidate
        if (
            candidate is None
            or candidate.held_certificate is not None
            or candidate.phase is not _Phase.HANDSHAKING
            or len(packet) > MAX_DATAGRAM_LENGTH
            or not dtls_records_valid_untrusted(packet)
        ):
            return False
        bound = candidate.address
        if source is not None and bound is not None and source_key(source) != source_key(bound):
            return False  # another host: not the phone's restart on the 5-tuple
        if _holds_client_hello_untrusted(packet) and (
            _client_hello_random(packet) != candidate.client_random
        ):
            return False
        previous.receive_packet_from(packet, source=source, now=now)
        self._driven()  # takes it once held and named (:meth:`_take_late_rtcp_restart`)
        return True

    def _new_association(self, role: Role, peer: PeerDtlsParameters) -> _Association:
        return _Association(
            role=role,
            identity=self._settings.identity,
            local_tls_id=self._tls_id,
            peer=peer,
            profiles=self._settings.profiles,
            timing=self._settings.timing,
            mtu=self._settings.mtu,
        )

    def _cookie_exchange(
        self,
        key: Source | None,
        source: Source | None,
        packet: bytes,
        now: float,
        *,
        always: bool = False,
    ) -> tuple[bool, bytes | None]:
        """RFC 6347 §4.2.1 for a ClientHello to our server from ``key``, a source with no
        handshake yet: ``(True, cookie)`` when it returned our valid cookie (start its
        handshake with it, :meth:`_Association.accept_verified`); ``(True, None)`` when no
        cookie is asked (the SDP address: its path is as before); ``(False, None)`` when a
        HelloVerifyRequest answered it, or it was dropped, and nothing else happens
        (docs/media_security.md, "Cookies for other sources"). ``always``: the SDP address is
        asked too (the peer's new handshake on an established association, RFC 6347 §4.2.8).
        ``source`` None: not known (:meth:`_to_candidate` on an ICE leg, or fed without
        sources): the cookie covers :data:`_NO_SOURCE` and the HelloVerifyRequest goes the
        core's usual way (:meth:`packets_to_send`); nothing is logged (no address to name)."""
        cookies = self._settings.cookies
        if cookies is None:
            return True, None
        bound = _NO_SOURCE if key is None else key
        if key == self._sdp_source and not always:
            # Not asked; but one that was asked before it was known as the SDP address (a
            # ClientHello kept for another phone's answer, replayed at that answer before the
            # phone's next datagram told its address, :meth:`_take_handed`) returns our cookie
            # in a ClientHello of message_seq 1, which only DTLSv1_listen begins with (fed to
            # a fresh connection, OpenSSL waits for message 0 for ever, RFC 6347 §4.2.2).
            returned = parse_client_hello_cookie_untrusted(packet)
            if (
                returned is not None
                and returned.message_seq == 1
                and returned.cookie
                and cookies.verifies(bound, returned.cookie, now, context=self._cookie_context())
            ):
                self._cookies_returned += 1
                return True, returned.cookie
            return True, None
        hello = parse_client_hello_cookie_untrusted(packet)
        totals = self._settings.totals
        if hello is None:
            # A later fragment of a ClientHello (its first fragment, with the cookie, starts
            # the handshake; the client resends the rest), or one we cannot read.
            self._by_source.dropped_malformed += 1
            if is_later_client_hello_fragment_untrusted(packet):
                # Not logged: the rest of a phone's long ClientHello, as likely as a forger's.
                self._by_source.dropped_later_fragment += 1
                if totals is not None:
                    totals.later_fragments += 1
            else:
                self._by_source.dropped_unreadable_hello += 1
                if totals is not None:
                    totals.unreadable_hellos += 1
                self._log_dropped(source, "unreadable", verified=False, now=now)
            return False, None
        if hello.cookie:
            if cookies.verifies(bound, hello.cookie, now, context=self._cookie_context()):
                if hello.message_seq == 1:
                    self._cookies_returned += 1
                    return True, hello.cookie
                # Ours, but not in the ClientHello that answers our HelloVerifyRequest (its
                # message_seq is 1: the first's 0 echoed, RFC 6347 §4.2.2, errata 5186), the
                # one DTLSv1_listen takes; OpenSSL would wait on it for ever. A client gets
                # here only by a forger's hand or after two HelloVerifyRequests.
                self._by_source.dropped_malformed += 1
                self._by_source.dropped_cookie_out_of_sequence += 1
                if totals is not None:
                    totals.cookies_out_of_sequence += 1
                self._log_dropped(source, "cookie_out_of_sequence", verified=True, now=now)
                return False, None
            self._by_source.bad_cookies += 1
            if totals is not None:
                totals.bad_cookies += 1
            self._log_dropped(source, "bad_cookie", verified=False, now=now)
        waiting = self._unaddressed if source is None else self._verify_requests
        if len(waiting) < MAX_VERIFY_REQUESTS:
            cookie = cookies.cookie(bound, now, context=self._cookie_context())
            request = hello_verify_request(hello, cookie)
            if source is None:
                self._unaddressed.append(request)
            else:
                self._verify_requests.append((request, source))
            self._by_source.hello_verify_requests += 1
            if totals is not None:
                totals.hello_verify_requests += 1
        return False, None

    def _log_dropped(
        self,
        source: Source | None,
        reason: str,
        *,
        verified: bool,
        now: float,
        what: str = "ClientHello",
    ) -> None:
        """The operator's line naming ``source`` (:class:`DroppedHelloLog`), rate-limited;
        none without a source to name (:meth:`_cookie_exchange` on an ICE leg)."""
        if source is not None and self._settings.dropped_hellos is not None:
            self._settings.dropped_hellos.dropped(
                source, reason, verified=verified, now=now, what=what
            )

    def _cookie_context(self) -> bytes:
        """What binds our cookies to this port's handshake (:class:`CookieSecrets`): our
        a=tls-id, new for each association (RFC 8842 §4) and so for each stream, and which of
        the stream's ports this is (RFC 5764 §4.1: without rtcp-mux its RTCP port runs a
        handshake of its own under the same tls-id). A cookie made here is refused on every
        other port of the gateway."""
        return f"{self._tls_id}|{'rtcp' if self._rtcp_port else 'rtp'}".encode()

    def _may_start(self, key: Source | None, now: float, *, always: bool = False) -> bool:
        """Whether ``key`` may start a handshake now (:data:`NEW_HANDSHAKES_PER_SECOND`): the
        SDP address always; another source while the port's bucket holds one. ``always``: the
        bucket bounds the SDP address too (the peer's new handshake on an established
        association, RFC 6347 §4.2.8; ``key`` None: its source is not known)."""
        if key == self._sdp_source and not always:
            return True
        if self._new_handshakes_at is not None:
            refill = (now - self._new_handshakes_at) * NEW_HANDSHAKES_PER_SECOND
            self._new_handshakes = min(
                float(MAX_NEW_HANDSHAKES_BURST), self._new_handshakes + max(refill, 0.0)
            )
        self._new_handshakes_at = now
        if self._new_handshakes < 1.0:
            self._by_source.dropped_rate += 1
            if self._settings.totals is not None:
                self._settings.totals.rate_limited += 1
            if key is not None and self._settings.cookies is not None:
                # As DTLS server a ClientHello that returned our cookie (only those reach the
                # bucket); as DTLS client a server flight from a new source, which proved
                # nothing (session 44: before, not logged).
                if self.dtls_role == "server":
                    self._log_dropped(key, "rate_limited", verified=True, now=now)
                else:
                    what = "server flight"
                    self._log_dropped(key, "rate_limited", verified=False, now=now, what=what)
            return False
        self._new_handshakes -= 1.0
        return True

    # -- the peer's new handshake on an established association (RFC 6347 §4.2.8) ------------

    def _to_candidate(
        self, association: _Association, packet: bytes, source: Source | None, now: float
    ) -> bool:
        """Whether ``packet`` went to the peer's new handshake on the association in force,
        ours as DTLS server with keys (RFC 6347 §4.2.8: "a server which receives a ClientHello
        with message_seq 0 on an existing association ... SHOULD proceed with a new handshake
        but MUST NOT destroy the existing association until the client has demonstrated
        reachability"): a phone restarted on the same address and port, an ICE restart that
        keeps the pair. A ClientHello is asked for our cookie first, from the SDP address too
        (RFC 6347 §4.2.1: a forged one costs a parse, an HMAC and 60 octets), and the one
        that returns it (message_seq 1) starts a candidate association, bounded as other
        sources' handshakes are (:meth:`_may_start`), one at a time (a ClientHello of another
        random that returns a cookie replaces it). Until the candidate's handshake completes
        with a certificate matching the peer's a=fingerprint (the SDP in force) everything
        else of the association stays: its keys (:attr:`keys`), its SRTP. Then it replaces the
        association and its ``KeysReady`` re-keys the leg (the core builds new SRTP contexts
        for the new keys, keying.py). A candidate that fails or times out is dropped, nothing
        changed (:meth:`_restart_failed`). Everything of the 5-tuple's DTLS goes to the
        candidate while it runs: the restarted client has left the old association."""
        if (
            association is not self._association
            or association.phase is not _Phase.ESTABLISHED
            or association.role is not Role.SERVER
            or len(packet) > MAX_DATAGRAM_LENGTH
            or not dtls_records_valid_untrusted(packet)
        ):
            return False
        bound = association.address
        if source is not None and bound is not None and source_key(source) != source_key(bound):
            # Another host than the one the association answers: not the peer restarting on
            # the association's 5-tuple (§4.2.8). A negotiation that kept the association
            # (a re-INVITE's, RFC 8842 §5) was told no source yet, so this is its only check;
            # without it any host that returns a cookie spends the port's bucket on
            # candidates and crowds out the phone's own restart. As before session 44.
            return False
        candidate = self._restarts.candidate
        hello = None
        if _holds_client_hello_untrusted(packet):
            hello = parse_client_hello_cookie_untrusted(packet)
        if hello is None:
            if candidate is None:
                return False  # the association's own (a resent Finished, an alert): as before
            for datagram in self._held(candidate, packet):
                if candidate.phase is _Phase.FAILED:
                    break
                self._settle_candidate(candidate, candidate.receive(datagram, now))
            return True
        random = _client_hello_random(packet)
        if candidate is not None and hello.message_seq != 0 and random == candidate.client_random:
            # A resend of the ClientHello that began it (our flight was lost): OpenSSL answers.
            self._settle_candidate(candidate, candidate.receive(packet, now))
            return True
        key = None if source is None else source_key(source)
        cookie: bytes | None = None
        if self._settings.cookies is not None:
            # Without its source too (session 45: an ICE leg, whose port takes DTLS from the
            # selected pair only, or a host that feeds no sources): our HelloVerifyRequest
            # goes the core's usual way, to the address the association answers, so only who
            # receives there returns the cookie; before, one ClientHello forged with that
            # address started a candidate and its flights to the real phone.
            go_on, cookie = self._cookie_exchange(key, source, packet, now, always=True)
            if not go_on:
                return True  # answered with a HelloVerifyRequest, or dropped (and logged)
        if not self._may_start(key, now, always=True):
            return True
        fresh = self._new_association(Role.SERVER, association.peer)
        fresh.client_random, fresh.address = random, source
        if candidate is not None:  # replaced (one at a time): its datagrams stay counted
            self._by_source = _added(self._by_source, candidate.statistics)
        self._restarts.candidate, self._restarts.to = fresh, source
        self._by_source.peer_restarts += 1
        events = fresh.start(now)
        if cookie is not None:
            events += fresh.accept_verified(packet, cookie, now)
        else:
            events += fresh.receive(packet, now)  # no cookie asked (none configured)
        self._settle_candidate(fresh, events)
        return True

    def _take_restart(self, previous: KeyNegotiation | None) -> None:
        """A re-offer that keeps the association (RFC 8842 §5) goes on with the peer's new
        handshake under way on it (:meth:`_to_candidate`): the peer's next flight comes to
        this negotiation, and a candidate left with the previous one would be lost with it
        (the phone then resends a flight nobody answers until its handshake gives up). The
        two share it, one candidate for both: whichever the core goes on feeding drives it,
        this one once the re-offer is answered, the previous one again when the re-offer is
        rolled back (a 488 from the other leg, RFC 3261 §14.1; before session 45 a rollback
        lost the restart under way)."""
        if isinstance(previous, DtlsNegotiation) and previous._phase is not _Phase.FAILED:
            self._restarts = previous._restarts

    def _held(self, candidate: _Association, packet: bytes) -> list[bytes]:
        """What of the candidate's ``packet`` goes to OpenSSL now, in order; empty when it is
        held back (or gathered with its certificate's other fragments,
        :meth:`_Association.take_certificate`): the candidate presents a certificate the SDP
        in force does not name (read here, before the verify callback would alert), or one
        already was. RFC 8842 §5 and RFC 5763 §5: a changed certificate comes with a new
        a=fingerprint, and a browser or softphone that regenerated its own
        may restart its handshake before its re-INVITE says so (the re-offer crosses the
        handshake). Held, the candidate waits for that re-offer (:meth:`_adopt`) until its
        ``handshake_timeout``, then fails as it did before session 45; nothing of it keys
        anything meanwhile, and its certificate is checked again, by OpenSSL, against the
        re-offer's fingerprint. A certificate in more than one fragment is read once it is
        whole (session 55; before, OpenSSL's check failed it at once)."""
        if candidate.held_certificate is not None:
            if len(candidate.held) < MAX_HELD_DATAGRAMS:
                candidate.held.append(packet)
            else:
                candidate.statistics.ignored += 1
            return []
        certificate, datagrams = candidate.take_certificate(packet)
        if certificate is None or candidate.peer.matches(certificate):
            return datagrams
        candidate.held_certificate, candidate.held = certificate, datagrams[:MAX_HELD_DATAGRAMS]
        self._by_source.peer_restarts_held += 1
        if self._settings.totals is not None:
            self._settings.totals.peer_restarts_held += 1
        to = self._restarts.to
        log.info(
            "DTLS: a new handshake from %s on the established association presented a "
            "certificate the SDP in force does not name (sha-256 %s): held until a re-offer "
            "names it, at most until its handshake_timeout (RFC 8842 §5)",
            "an unknown address" if to is None else format_host_port(str(to[0]), int(to[1])),
            certificate_digest(certificate, "sha-256").hex(),
        )
        return []

    def _adopt(
        self, candidate: _Association, peer: PeerDtlsParameters, previous: DtlsNegotiation
    ) -> None:
        """A re-offer whose a=fingerprint names the held candidate's certificate
        (:meth:`_held`, :func:`_held_restart`) takes the candidate as its new association: its
        datagrams held back go to OpenSSL now (at the first clock, :meth:`_feed_early`), whose
        verify callback checks the certificate against this offer's fingerprint before our
        ChangeCipherSpec and Finished; its ``KeysReady`` keys the leg as a new association's
        would. The previous negotiation still holds it, undriven while the core feeds this
        one: should the re-offer be refused (a 488 from the other leg, RFC 3261 §14.1) the
        stream goes back to it, and there the candidate, still held (its certificate not
        named by the SDP in force), fails at its timeout, said and counted
        (:meth:`_restart_failed`; session 46: before, the refusal lost it unsaid). Should it
        fail there while this re-offer waits for its answer, this negotiation fails at its
        next timer (:meth:`handle_timer`), as a new association that times out does."""
        if previous._association is not None and not self._rtcp_port:
            # Its separate RTCP port (no rtcp-mux, RFC 5764 §4.1) restarted as well: the
            # new RTCP port's negotiation takes that held handshake (:meth:`rtcp_component`).
            self._rtcp_restart_of = previous._association.rtcp_component
        candidate.peer, candidate.local_tls_id = peer, self._tls_id
        candidate.adopt()  # a new deadline at its next clock (:meth:`_Association.adopt`)
        candidate.held_outcome = (
            "the re-offer naming it took it, and was refused or not answered before it timed out"
        )
        self._association = candidate
        if candidate.address is not None:
            # Its datagrams came with their source, which returned our cookie: the handshake
            # is that source's (never started afresh for another, :meth:`restart_handshake`).
            self._source = self._peer_source = source_key(candidate.address)
            self._with_sources = True
        self._early, candidate.held = candidate.held, []
        self._adopting = True  # counted once it has keys (:meth:`_count_adopted`)

    def _count_adopted(self) -> None:
        """The adopted candidate (:meth:`_adopt`) has keys: now it is the leg's association
        (``peer_restarts_adopted``). Counted here, not as the re-offer took it: a re-offer
        refused by the other leg made nothing the leg's (session 46; before, such a refused
        re-offer counted it adopted)."""
        if not self._adopting:
            return
        self._adopting = False
        self._by_source.peer_restarts_adopted += 1
        if self._settings.totals is not None:
            self._settings.totals.peer_restarts_adopted += 1

    def _settle_candidate(self, candidate: _Association, events: list[KeyNegotiationEvent]) -> None:
        """Events of the candidate association (:meth:`_to_candidate`): never the leg's
        failure."""
        for event in events:
            if isinstance(event, KeysReady):
                self._rekeyed(candidate)
                self._events.append(event)
            elif isinstance(event, NegotiationFailed):
                self._restart_failed(candidate, event.reason)
                return
            else:
                self._events.append(event)

    def _rekeyed(self, candidate: _Association) -> None:
        """The candidate completed with a matching certificate: it is the association now; the
        old one and its keys are dropped (RFC 6347 §4.2.8)."""
        previous = self._association
        if previous is not None:
            candidate.rtcp_component = previous.rtcp_component
            candidate.statistics = _added(previous.statistics, candidate.statistics)
            candidate.rekeys = previous.rekeys + 1
            candidate.verified = previous.verified
            candidate.address = candidate.address or previous.address
        self._association = candidate
        self._restarts.candidate = self._restarts.to = None
        self._by_source.peer_rekeys += 1
        if self._settings.totals is not None:
            self._settings.totals.peer_rekeys += 1

    def _restart_failed(self, candidate: _Association, reason: str) -> None:
        """The candidate failed (its certificate did not match a=fingerprint, it timed out, an
        OpenSSL error): dropped; the association in force and its keys stay. Its alert goes
        to its source. Said once per port (WARNING); counted always."""
        to = self._restarts.to
        self._restarts.candidate = self._restarts.to = None
        if candidate.held_certificate is not None:
            outcome = candidate.held_outcome or "none came"
            reason = (
                f"{FINGERPRINT_MISMATCH_REASON}: held for a re-offer naming its certificate, "
                f"{outcome}"
            )
        parting = candidate.take_outgoing()
        if to is not None:
            self._parting += [(packet, to) for packet in parting]
        else:
            self._unaddressed += parting
        # Its datagrams stay in the port's counters (session 45: before, they went with it).
        self._by_source = _added(self._by_source, candidate.statistics)
        self._by_source.peer_restarts_failed += 1
        if self._settings.totals is not None:
            self._settings.totals.peer_restarts_failed += 1
        if not self._restarts.failure_logged:
            self._restarts.failure_logged = True
            where = "an unknown address" if to is None else format_host_port(str(to[0]), int(to[1]))
            log.warning(
                "DTLS: a new handshake from %s on the established association (RFC 6347 "
                "§4.2.8) failed (%s): the association and its keys are kept (further failures "
                "on this port are only counted)",
                where,
                reason,
            )

    def _new_attempt(self, key: Source, association: _Association) -> _Association:
        """A handshake for ``key``, another source than the association's; the oldest other
        source's (never the SDP address's) dropped first beyond the cap."""
        while 1 + len(self._attempts) >= MAX_HANDSHAKES_PER_PORT:
            oldest = next((s for s in self._attempts if s != self._sdp_source), None)
            if oldest is None:
                break
            del self._attempts[oldest]
            self._by_source.handshakes_dropped += 1
        attempt = self._new_association(association.role, association.peer)
        self._attempts[key] = attempt
        self._by_source.handshakes_by_source += 1
        return attempt

    def _settle(
        self,
        key: Source | None,
        association: _Association,
        events: list[KeyNegotiationEvent],
        now: float,
    ) -> None:
        """Queue ``events`` of ``key``'s handshake (None: no source known): the first to have
        keys is the peer's; a failure may end only that source's attempt
        (:meth:`receive_packet_from`)."""
        for event in events:
            if isinstance(event, KeysReady):
                if key is not None:
                    self._proven(key, association)
                self._count_adopted()
                self._events.append(event)
            elif isinstance(event, NegotiationFailed):
                if key is None or not self._ends_attempt_only(key, association, event):
                    self._fail(event.reason)
                    return
                self._attempt_failed(key, association, now)
                return
            else:
                self._events.append(event)

    def _ends_attempt_only(
        self, key: Source, association: _Association, event: NegotiationFailed
    ) -> bool:
        """Whether a failure of ``key``'s handshake ends that attempt only: before a source
        proved itself, of another source than the SDP address, whose certificate (if any) did
        not match; never the association's own timeout (the leg's)."""
        if self._peer_source is not None or key == self._sdp_source:
            return False
        if association.peer_certificate_sha256 is not None:
            return False  # its certificate matched: the peer's own word
        return not (association is self._association and event.reason == HANDSHAKE_TIMEOUT_REASON)

    def _attempt_failed(self, key: Source, association: _Association, now: float) -> None:
        self._by_source.handshakes_failed += 1
        failure = association.failure
        if association.held_for_another_phone or (
            failure is not None and failure.reason == FINGERPRINT_MISMATCH_REASON
        ):
            self._mismatched += 1  # held (:meth:`_held_for_another_phone`), or refused at once
        if key not in self._refused:
            self._refused.append(key)
        to = association.address or key
        self._parting += [(packet, to) for packet in association.take_outgoing()]
        if association is not self._association:
            self._attempts.pop(key, None)
            return
        # The association's source failed: a fresh one, with the same role, peer parameters
        # and timeout, answers the next source (as DTLS client, a new ClientHello goes the
        # usual way); the RTCP component and counters stay the stream's.
        fresh = self._new_association(association.role, association.peer)
        fresh.rtcp_component = association.rtcp_component
        fresh.statistics = association.statistics
        self._association, self._source = fresh, None
        self._settle(None, fresh, fresh.start(now, deadline=association.deadline), now)

    def _proven(self, key: Source, association: _Association) -> None:
        """``key``'s handshake completed with a certificate matching a=fingerprint: it is the
        peer; its association is the stream's, the other sources' handshakes are dropped."""
        self._peer_source = association.address or key
        if association is not self._association:
            previous = self._association
            if previous is not None:
                association.rtcp_component = previous.rtcp_component
                association.statistics = _added(previous.statistics, association.statistics)
                if self._source is not None:
                    self._keep_handshake(self._source, previous)
            self._association, self._source = association, key
        for other, attempt in self._attempts.items():
            if attempt is not association:
                self._keep_handshake(other, attempt)
        self._attempts.clear()

    def _held_for_another_phone(
        self, key: Source, attempt: _Association, packet: bytes
    ) -> list[bytes]:
        """What of ``key``'s ``packet`` to its handshake ``attempt`` goes to OpenSSL now, in
        order; empty when it is held back for another phone's answer (or gathered with its
        certificate's other fragments, :meth:`_Association.take_certificate`): while our offer
        may have been forked (:attr:`keeps_other_phones`), a source other than the SDP address
        presents a
        certificate that a=fingerprint does not name (read here, before the verify callback
        would fail the handshake with a fatal alert, RFC 5763 §5), or one already was. That
        source may be a phone our offer also reached, ringing or answering with its own
        certificate (RFC 3261 §16.7): its handshake waits, held (at most
        :data:`MAX_HELD_DATAGRAMS`), for that phone's 2xx (:meth:`_take_handed` checks it
        against its a=fingerprint) until its timeout or :meth:`answer_confirmed`. Before
        session 52 the alert ended that phone's handshake, and its call. Nothing of it keys
        anything meanwhile; the SDP address's mismatch still fails the leg at once ("Forged
        alerts"). A certificate in more than one fragment is read once it is whole (session
        55; before, OpenSSL's check failed it at once)."""
        if attempt.held_for_another_phone:
            if len(attempt.held) < MAX_HELD_DATAGRAMS:
                attempt.held.append(packet)
            else:
                attempt.statistics.ignored += 1
            return []
        if not self.keeps_other_phones or key == self._sdp_source:
            return [packet]
        certificate, datagrams = attempt.take_certificate(packet)
        if certificate is None or attempt.peer.matches(certificate):
            return datagrams
        attempt.held_certificate, attempt.held = certificate, datagrams[:MAX_HELD_DATAGRAMS]
        attempt.held_for_another_phone = True
        return []

    def _keep_for_another_phone(self, key: Source, source: Source, packet: bytes) -> None:
        """A datagram from ``key`` (``source`` whole) that this negotiation ignores (another
        source proved itself the peer): kept for another phone's answer while our offer may
        have been forked (:attr:`keeps_other_phones`). The next flight of a handshake kept
        (:meth:`_keep_handshake`) is held with it; of any other source, the last ClientHello
        (RFC 6347 §4.2.1: what opens a handshake with our server), at most
        :data:`MAX_KEPT_FOR_ANOTHER_PHONE` sources, the oldest forgotten first."""
        if not self.keeps_other_phones:
            return
        kept = self._kept.handshakes.get(key)
        if kept is not None:
            if len(kept.held) < MAX_HELD_DATAGRAMS:
                kept.held.append(packet)
            else:
                kept.statistics.ignored += 1
            return
        if (
            len(packet) > MAX_DATAGRAM_LENGTH
            or not dtls_records_valid_untrusted(packet)
            or not _holds_client_hello_untrusted(packet)
        ):
            return
        hellos = self._kept.client_hellos
        hellos.pop(key, None)
        while len(hellos) >= MAX_KEPT_FOR_ANOTHER_PHONE:
            del hellos[next(iter(hellos))]
        hellos[key] = (packet, source)

    def _keep_handshake(self, key: Source, association: _Association) -> None:
        """``key``'s handshake ends here (another source proved itself, :meth:`_proven`): kept,
        undriven, for another phone's answer while our offer may have been forked and its
        certificate was not found to match a=fingerprint, at most
        :data:`MAX_KEPT_FOR_ANOTHER_PHONE` (the oldest forgotten first)."""
        if (
            not self.keeps_other_phones
            or association.phase is not _Phase.HANDSHAKING
            or association.keys is not None
        ):
            return
        kept = self._kept.handshakes
        kept.pop(key, None)
        while len(kept) >= MAX_KEPT_FOR_ANOTHER_PHONE:
            del kept[next(iter(kept))]
        kept[key] = association

    def _take_handed(self, role: Role, peer: PeerDtlsParameters) -> None:
        """Another phone's answer to our offer was taken (:meth:`for_another_phone`): what the
        negotiation it replaces kept of other sources is this one's now. A handshake under way
        in our ``role`` becomes this negotiation's attempt for its source, its peer parameters
        this answer's: its certificate is checked against this phone's a=fingerprint
        (:meth:`_Association._verify` reads :attr:`_Association.peer` when the Certificate
        comes, RFC 5763 §5), and it gets a new deadline at its next clock
        (:meth:`_Association.adopt`). One held for a certificate this answer does not name
        either (a stranger's: it matches no phone's) is dropped and keys nothing. Its held
        datagrams and the kept ClientHellos (as DTLS server only: RFC 5763 §5, the
        ClientHello opens our server's handshake) are fed at the first clock through
        :meth:`receive_packet_from` (:meth:`_replay_handed`), with every check of a source's
        datagram: cookies, the port's caps and bucket."""
        handed, self._handed = self._handed, None
        if handed is None:
            return
        for key, attempt in handed.handshakes.items():
            if attempt.role is not role or attempt.phase is not _Phase.HANDSHAKING:
                continue
            held = attempt.held_certificate if attempt.held_for_another_phone else None
            if held is not None and not peer.matches(held):
                self._by_source.handshakes_failed += 1
                self._mismatched += 1
                continue
            if 1 + len(self._attempts) >= MAX_HANDSHAKES_PER_PORT:
                break
            attempt.peer, attempt.local_tls_id = peer, self._tls_id
            attempt.rtcp_component = None  # the early phone's RTCP port's, not this one's
            attempt.held_certificate, attempt.held_for_another_phone = None, False
            attempt.adopt()
            datagrams, attempt.held = attempt.held, []
            self._attempts[key] = attempt
            self._by_source.handshakes_by_source += 1
            self._replays += [(packet, attempt.address or key) for packet in datagrams]
            self._with_sources = True
        if role is Role.SERVER:
            self._replays += [
                (packet, source)
                for key, (packet, source) in handed.client_hellos.items()
                if key not in self._attempts
            ]

    def _replay_handed(self, now: float) -> None:
        """Feed :attr:`_replays` (what another negotiation handed this one, :meth:`_take_handed`,
        and what came with its source before our role was known) as if it came now, once our
        role is known."""
        if not self._replays or self._association is None or self._phase is _Phase.FAILED:
            return
        replays, self._replays = self._replays, []
        for packet, source in replays:
            self.receive_packet_from(packet, source=source, now=now)

    def _feed_early(self, association: _Association, now: float) -> list[KeyNegotiationEvent]:
        if not self._early or association is not self._association:
            return []
        early, self._early = self._early, []
        events: list[KeyNegotiationEvent] = []
        for packet in early:
            events += association.receive(packet, now)
        return events

    def _queue(self, events: list[KeyNegotiationEvent]) -> None:
        for event in events:
            if isinstance(event, NegotiationFailed):
                self._fail(event.reason)
            else:
                if isinstance(event, KeysReady):
                    self._count_adopted()
                self._events.append(event)

    def _fail(self, reason: str) -> None:
        if self._phase is _Phase.FAILED:
            return
        self._phase = _Phase.FAILED
        self._early = []
        # Held for another phone's answer (:meth:`_held_for_another_phone`) until now: their
        # certificates matched no phone's a=fingerprint.
        held = [*self._attempts.values(), *([self._association] if self._association else [])]
        self._mismatched += sum(a.held_for_another_phone for a in held)
        self._attempts.clear()
        self._kept, self._handed, self._handed_rtcp, self._replays = (
            _KeptForAnotherPhone(),
            None,
            None,
            [],
        )
        # Its own hold only: a re-offer's failure leaves the restart to the negotiation it
        # shares it with (:meth:`_take_restart`).
        self._restarts = _Restarts()
        if reason == HANDSHAKE_TIMEOUT_REASON and self._mismatched:
            # The only certificates seen did not match: the likelier cause (a phone behind a
            # NAT whose SDP a proxy rewrote, a stale fingerprint) said as it was before
            # session 40, when the first such handshake ended the call at once.
            reason += (
                f" ({FINGERPRINT_MISMATCH_REASON}: {self._mismatched} source(s) other than"
                " the SDP address)"
            )
        if reason.startswith(HANDSHAKE_TIMEOUT_REASON):
            reason += self._cookie_words()
        self._failure = NegotiationFailed(reason, DtlsError.sip_status)
        self._events.append(self._failure)

    def _cookie_words(self) -> str:
        """What a timed-out handshake's reason adds about our cookies (RFC 6347 §4.2.1): a
        phone behind a NAT that was asked and never keyed is otherwise told from a peer that
        never answered by nothing. Counts only: the reason goes into the SIP answer or BYE to
        both parties, and another party's address is not theirs to see (the sources are in
        the call's log lines and metrics)."""
        stats = self._by_source
        if stats.dropped_cookie_out_of_sequence:
            # What is known: the cookie was ours and valid for that host, the message_seq
            # wrong. A client asked twice sends 2 (its NAT moved it to another host), but so
            # can anyone who received a cookie of ours at that host and wrote the ClientHello
            # itself: the words name both (session 42's blamed the NAT alone).
            return (
                f" ({stats.dropped_cookie_out_of_sequence} ClientHello(s) carried our valid DTLS"
                " cookie with a message_seq other than 1, RFC 6347 §4.2.2: a client asked"
                " twice, as one whose NAT gave it another public address between its"
                " ClientHellos is, or a sender that received our cookie and wrote its own"
                " ClientHello; such a handshake cannot be continued)"
            )
        if stats.hello_verify_requests and not self._cookies_returned:
            return (
                f" ({stats.hello_verify_requests} ClientHello(s) from sources other than the"
                " SDP address were answered with a DTLS cookie, RFC 6347 §4.2.1, and none"
                " returned it)"
            )
        return ""

    def _fail_and_raise(self, reason: str) -> NoReturn:
        self._fail(reason)
        raise DtlsError(reason) from None


def _added(first: DtlsStatistics, second: DtlsStatistics) -> DtlsStatistics:
    """The sum of two sets of counters."""
    return DtlsStatistics(
        **{name: getattr(first, name) + getattr(second, name) for name in attrs.asdict(first)}
    )


def _in_force(previous: KeyNegotiation | None) -> _Association | None:
    """The association a previous DTLS negotiation of the stream has (or proposed), if alive."""
    if not isinstance(previous, DtlsNegotiation) or previous._phase is _Phase.FAILED:
        return None
    association = previous._association or previous._candidate
    if association is None or association.phase is _Phase.FAILED:
        return None
    return association


# --------------------------------------------------------------------------------------------
# The key exchange the core calls


class DtlsKeyExchange:
    """The ``dtls`` key exchange (``interfaces.KeyExchange``): one :class:`DtlsNegotiation` per
    stream and leg, for the first offer/answer and every re-offer (pass ``previous``).

    ``identity`` returns the certificate for a new association (:class:`CertificateStore`'s
    ``current``: loaded or made at first use, rotated by age); ``random_bytes`` (a CSPRNG) makes
    tls-ids. ``profiles`` are the use_srtp profiles in preference order (OpenSSL names, see
    :data:`PROFILES`); a leg's policy suites narrow and order them."""

    name = "dtls"
    media_path = True
    profile = "dtls"
    sdp_attribute = "fingerprint"

    def __init__(
        self,
        *,
        identity: IdentitySource,
        random_bytes: RandomBytes = os.urandom,
        profiles: Sequence[str] = DEFAULT_PROFILES,
        timing: DtlsTiming | None = None,
        mtu: int = DEFAULT_MTU,
        sdp_address_only: bool = False,
    ) -> None:
        unknown = [name for name in profiles if name not in PROFILES]
        if unknown or not profiles:
            raise LocalDtlsError(f"unknown or no DTLS-SRTP profiles: {unknown}")
        self._identity = identity
        self._random_bytes = random_bytes
        self.profiles = tuple(PROFILES[name] for name in dict.fromkeys(profiles))
        self.timing = timing if timing is not None else DtlsTiming()
        self.mtu = mtu
        self.sdp_address_only = sdp_address_only
        self.cookies = CookieSecrets(random_bytes)
        """The process's cookie secrets (RFC 6347 §4.2.1), shared by every port."""
        self.totals = DtlsTotals()
        """What every negotiation counted since the start (:meth:`counters`)."""
        self.dropped_hellos = DroppedHelloLog()
        """The sources of dropped ClientHellos in the operator's log (docs/operations.md)."""

    def __repr__(self) -> str:
        names = ",".join(profile.name for profile in self.profiles)
        return f"<DtlsKeyExchange profiles={names} mtu={self.mtu}>"

    def counters(self) -> tuple[tuple[str, int], ...]:
        """What every negotiation counted since the start (the optional ``counters`` of a key
        exchange, docs/plugin_hooks.md: the metrics plugin's
        ``voipgw_dtls_hello_verify_requests_total``, ``voipgw_dtls_bad_cookies_total``,
        ``voipgw_dtls_rate_limited_total`` and, by reason,
        ``voipgw_dtls_client_hellos_dropped_total``)."""
        return (
            ("hello_verify_requests", self.totals.hello_verify_requests),
            ("bad_cookies", self.totals.bad_cookies),
            ("rate_limited", self.totals.rate_limited),
            ("later_fragments", self.totals.later_fragments),
            ("unreadable_hellos", self.totals.unreadable_hellos),
            ("cookies_out_of_sequence", self.totals.cookies_out_of_sequence),
            ("peer_rekeys", self.totals.peer_rekeys),
            ("peer_restarts_failed", self.totals.peer_restarts_failed),
            ("peer_restarts_held", self.totals.peer_restarts_held),
            ("peer_restarts_adopted", self.totals.peer_restarts_adopted),
        )

    def offer(
        self,
        *,
        suites: Sequence[str],
        secure_signalling: bool,
        previous: KeyNegotiation | None = None,
        rekey: bool = False,
    ) -> DtlsNegotiation:
        """Our offer for one stream: a=setup:actpass, a new tls-id, our fingerprint. With
        ``previous`` whose association is alive and ``rekey`` False, a re-offer that keeps it:
        the same tls-id and fingerprint and our established role as a=setup. Fails at once
        (488) when no profile of the leg's policy is available. ``secure_signalling`` is only
        recorded: DTLS-SRTP carries no key in the SDP."""
        kept = None if rekey else _in_force(previous)
        if kept is not None:
            negotiation = self._negotiation(
                "offerer", kept.identity, kept.profiles, kept.role.setup, kept.local_tls_id
            )
            negotiation._candidate = kept
            negotiation._take_restart(previous)
            negotiation.signalling_protected = secure_signalling
            return negotiation
        profiles = self._profiles_for(suites)
        negotiation = self._negotiation(
            "offerer", self._identity(), profiles, Setup.ACTPASS, self._fresh_tls_id()
        )
        negotiation.signalling_protected = secure_signalling
        # A first offer may be forked downstream (RFC 3261 §16.7) until a 2xx confirms its
        # answer; a re-offer goes in a dialog, to the one phone of that dialog.
        negotiation._forkable = previous is None
        if previous is not None:
            negotiation._keys_before = previous_keys(previous)
        if not profiles:
            negotiation._fail(_NO_PROFILE_REASON)
        return negotiation

    def answer(
        self,
        remote_attributes: Iterable[tuple[str, str | None]],
        *,
        suites: Sequence[str],
        secure_signalling: bool,
        previous: KeyNegotiation | None = None,
    ) -> DtlsNegotiation | None:
        """Our answer to the peer's offer of one stream (media-level then session-level
        attributes), or None when the offer has no a=fingerprint (DTLS-SRTP does not apply).

        Our a=setup follows the table in the module docstring. With ``previous`` whose
        association is alive, an offer with the same tls-id and fingerprints whose a=setup
        leaves us our role keeps the association (no new handshake, no event). The result has
        failed (488) when the attributes are malformed, a=setup is holdconn, or no profile of
        the leg's policy is available."""
        attributes = list(remote_attributes)
        if not fingerprint_values(attributes):
            return None
        kept = _in_force(previous)
        try:
            peer = parse_dtls_attributes_untrusted(attributes)
            role = answerer_role(peer.setup)
        except DtlsError as exc:
            failed = self._negotiation(
                "answerer", self._identity(), (), Setup.ACTIVE, self._fresh_tls_id()
            )
            failed._fail(f"the offer: {exc.reason}")
            return failed
        if kept is not None and _keeps(kept, peer):
            negotiation = self._negotiation(
                "answerer", kept.identity, kept.profiles, kept.role.setup, kept.local_tls_id
            )
            negotiation._association = kept
            negotiation._take_restart(previous)
        elif (held := _held_named(previous, peer)) is not None:
            # The phone restarted with the certificate this offer names, before the offer
            # came (:meth:`DtlsNegotiation._held`): its handshake, held, is the new
            # association, we its DTLS server as we were (a=setup:passive, which RFC 5763 §5
            # allows an answer to actpass), under this offer's terms or not at all.
            assert isinstance(previous, DtlsNegotiation)
            profiles = self._profiles_for(suites)
            refusal = _adoption_refusal(held, peer, profiles)
            if refusal is not None:
                # 488 saying why (RFC 3261 §14.1: the session in force stays); the held
                # handshake fails where it was held, saying this (:meth:`_restart_failed`).
                _refuse_held(previous, held, refusal)
                negotiation = self._negotiation(
                    "answerer", self._identity(), profiles, role.setup, self._fresh_tls_id()
                )
                negotiation._fail(refusal)
                return negotiation
            negotiation = self._negotiation(
                "answerer", held.identity, profiles, Setup.PASSIVE, self._fresh_tls_id()
            )
            negotiation._keys_before = previous_keys(previous)
            negotiation._adopt(held, peer, previous)
        else:
            profiles = self._profiles_for(suites)
            negotiation = self._negotiation(
                "answerer", self._identity(), profiles, role.setup, self._fresh_tls_id()
            )
            negotiation._keys_before = previous_keys(previous)
            if not profiles:
                negotiation._fail(_NO_PROFILE_REASON)
                return negotiation
            negotiation._association = negotiation._new_association(role, peer)
        negotiation._phase = _Phase.HANDSHAKING
        negotiation.signalling_protected = secure_signalling
        return negotiation

    # -- internals ------------------------------------------------------------------------------

    def _negotiation(
        self,
        role: str,
        identity: DtlsIdentity,
        profiles: Sequence[DtlsProfile],
        setup: Setup,
        tls_id: str,
    ) -> DtlsNegotiation:
        settings = _Settings(
            identity,
            tuple(profiles),
            self.timing,
            self.mtu,
            self.sdp_address_only,
            self.cookies,
            self.totals,
            self.dropped_hellos,
        )
        return DtlsNegotiation(role, settings, _Phase.OFFERED, setup, tls_id)

    def _profiles_for(self, suites: Sequence[str]) -> tuple[DtlsProfile, ...]:
        """The configured profiles narrowed to the policy's suites, in the policy's order."""
        if not suites:
            return self.profiles
        configured = {profile.suite: profile for profile in self.profiles}
        chosen = [configured[suite] for suite in dict.fromkeys(suites) if suite in configured]
        return tuple(chosen)

    def _fresh_tls_id(self) -> str:
        # RFC 8842 §4: 20..255 characters; 18 random octets are 24 base64url characters.
        octets = self._random_bytes(18)
        if not isinstance(octets, bytes) or len(octets) != 18:
            raise LocalDtlsError("the random source did not return 18 octets")
        return base64.urlsafe_b64encode(octets).decode("ascii")


_NO_PROFILE_REASON = "no SRTP suite of the leg's policy has a DTLS-SRTP profile here"


def _held_named(previous: KeyNegotiation | None, peer: PeerDtlsParameters) -> _Association | None:
    """The previous negotiation's held candidate (:meth:`DtlsNegotiation._held`) an offer
    with new DTLS parameters ``peer`` names: only one whose certificate, already presented,
    ``peer``'s a=fingerprint names. Never a candidate whose certificate was not seen: a
    re-offer's new association must not go on with a handshake nobody checked (someone on
    the phone's path may have started it). Taken as the new association unless
    :func:`_adoption_refusal` says why not."""
    if not isinstance(previous, DtlsNegotiation) or previous._phase is _Phase.FAILED:
        return None
    candidate = previous._restarts.candidate
    if (
        candidate is None
        or candidate.held_certificate is None
        or candidate.phase is not _Phase.HANDSHAKING
        or not peer.matches(candidate.held_certificate)
    ):
        return None
    return candidate


SETUP_CONFLICT_REASON = (
    "the re-offer's a=fingerprint names the certificate of the phone's new DTLS handshake, "
    "begun as DTLS client (its ClientHello came), but its a=setup:passive makes us the "
    "client (RFC 5763 §5, RFC 8842 §5)"
)
"""Why a re-offer naming a held certificate with a=setup:passive is refused (488)."""


def _adoption_refusal(
    held: _Association, peer: PeerDtlsParameters, profiles: Sequence[DtlsProfile]
) -> str | None:
    """Why an offer naming ``held``'s certificate (:func:`_held_named`) cannot take it as
    its new association, or None when it can. The phone sent the ClientHello, so it is the
    DTLS client: an offer saying a=setup:passive contradicts that (RFC 5763 §5: passive
    waits for our ClientHello, which the phone would never answer, having begun its own).
    And our ServerHello has already chosen the handshake's SRTP protection profile (RFC 5764
    §4.1.2, from the profiles in force when it began): a profile ``profiles`` (the leg's
    policy for this offer) does not allow cannot be changed now (session 46: before, the
    adopted handshake kept the old negotiation's choice unchecked)."""
    if peer.effective_setup not in _SETUPS_KEEPING[Role.SERVER]:
        return SETUP_CONFLICT_REASON
    selected = held.negotiated_profile
    if selected is None:
        return (
            "the phone's new DTLS handshake its a=fingerprint names agreed no SRTP protection "
            "profile (RFC 5764 §4.1.2)"
        )
    if selected not in {profile.name for profile in profiles}:
        return (
            f"the phone's new DTLS handshake its a=fingerprint names already chose SRTP "
            f"protection profile {selected} (RFC 5764 §4.1.2), which the leg's policy does "
            "not allow"
        )
    return None


def _held_restart(
    previous: KeyNegotiation | None, peer: PeerDtlsParameters, profiles: Sequence[DtlsProfile]
) -> _Association | None:
    """The held candidate an offer with ``peer`` names and may take (:func:`_held_named`,
    :func:`_adoption_refusal`); one it names but may not take is marked with why, for its
    failure where it was held."""
    held = _held_named(previous, peer)
    if held is None:
        return None
    refusal = _adoption_refusal(held, peer, profiles)
    if refusal is not None:
        assert isinstance(previous, DtlsNegotiation)  # _held_named found its candidate
        _refuse_held(previous, held, refusal)
        return None
    return held


def _refuse_held(previous: DtlsNegotiation, held: _Association, refusal: str) -> None:
    """A re-offer named ``held``'s certificate but may not take it (:func:`_adoption_refusal`):
    marked for its failure where it was held, and said once now (INFO ``dtls-restart-refused``),
    when the operator looks for why the phone's re-INVITE got 488, not at the held
    handshake's timeout up to ``handshake_timeout`` later (session 48). The address, the
    certificate's digest and the reason only: nothing of the keys."""
    outcome = f"the re-offer naming it was refused: {refusal}"
    if held.held_outcome == outcome:
        return  # the late RTCP restart's check asks again at each datagram
    held.held_outcome = outcome
    to = previous._restarts.to
    log.info(
        "DTLS: a re-offer naming the certificate (sha-256 %s) of the new handshake from %s "
        "held on the %s port was refused (488): %s; the association and its keys are kept, "
        "the held handshake fails at its handshake_timeout",
        "unknown"
        if held.held_certificate is None
        else certificate_digest(held.held_certificate, "sha-256").hex(),
        "an unknown address" if to is None else format_host_port(str(to[0]), int(to[1])),
        "RTCP" if previous._rtcp_port else "RTP",
        refusal,
    )


def _keeps(association: _Association, peer: PeerDtlsParameters) -> bool:
    """Whether an offer keeps our association: same peer identity (RFC 8842 §5) and an a=setup
    that leaves us our role."""
    if not association.peer.same_identity(peer):
        return False
    return peer.effective_setup in _SETUPS_KEEPING[association.role]


# The offered a=setup values that leave an answerer its DTLS role (RFC 4145 §4.1).
_SETUPS_KEEPING = {
    Role.CLIENT: frozenset({Setup.ACTPASS, Setup.PASSIVE}),
    Role.SERVER: frozenset({Setup.ACTPASS, Setup.ACTIVE}),
}


def previous_keys(previous: KeyNegotiation | None) -> SrtpKeys | None:
    """The keys in force of a stream's previous negotiation (any key exchange that exposes a
    ``keys`` property, as SDES and DTLS do), kept until the new ones are ready."""
    keys = getattr(previous, "keys", None)
    return keys if isinstance(keys, SrtpKeys) else None


# --------------------------------------------------------------------------------------------
# Plugin configuration and registration (entry point ``dtls`` in the group ``voipgw.plugins``)


@attrs.frozen
class DtlsConfig:
    """``[plugins.dtls]``. See docs/configuration.md."""

    state_dir: str = "./voipgw-state"
    certificate_max_age_days: int = 30
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT
    profiles: tuple[str, ...] = DEFAULT_PROFILES
    mtu: int = DEFAULT_MTU
    sdp_address_only: bool = False

    def __attrs_post_init__(self) -> None:
        # structure() reports a ValueError as a config error of this table; say which key.
        if self.certificate_max_age_days < 1:
            raise ValueError(
                f"certificate_max_age_days: expected 1 or more, got {self.certificate_max_age_days}"
            )
        # Above this no certificate can be made (its end would pass the year 9999): every DTLS
        # call would fail at its first offer, or the plugin at start-up (timedelta's range).
        longest = longest_max_age_days(datetime.datetime.now(datetime.UTC))
        if self.certificate_max_age_days > longest:
            raise ValueError(
                f"certificate_max_age_days: expected 1 to {longest} (a certificate valid past "
                f"the year 9999 cannot be written, RFC 5280 §4.1.2.5), got "
                f"{self.certificate_max_age_days}"
            )
        if not self.handshake_timeout >= MIN_HANDSHAKE_TIMEOUT:
            raise ValueError(
                f"handshake_timeout: expected a positive number of seconds, "
                f"at least {MIN_HANDSHAKE_TIMEOUT:.4f} (the "
                f"handshake is two round trips and a key exchange, RFC 6347), got "
                f"{self.handshake_timeout:g}"
            )
        if not 256 <= self.mtu <= 65507:
            raise ValueError(f"mtu: expected 256 to 65507 octets, got {self.mtu}")
        if not self.profiles:
            raise ValueError("profiles: expected at least one profile")
        for name in self.profiles:
            if name not in PROFILES:
                known = ", ".join(PROFILES)
                raise ValueError(f"profiles: unknown profile {name!r}; known profiles: {known}")
        if len(set(self.profiles)) != len(self.profiles):
            raise ValueError("profiles: a profile is listed twice")

    def config_warnings(self) -> list[str]:
        """``"KEY: why"`` for values the gateway runs with that fail where the network is
        not a LAN: errors of ``voipgw check-config``, warnings of ``voipgw run``."""
        if self.handshake_timeout < WARN_HANDSHAKE_TIMEOUT:
            return [
                f"handshake_timeout: {self.handshake_timeout:g} s works only for peers on the "
                f"host or the LAN: under {WARN_HANDSHAKE_TIMEOUT:g} s one lost flight (sent "
                "again after 1 s, RFC 6347 §4.2.4.1) or a peer across a WAN fails the call"
            ]
        return []

    def written_directories(self) -> list[tuple[str, Path, str, tuple[str, ...]]]:
        """What ``voipgw check-config`` and ``run`` check this user may write (Gateway.check):
        ``(key, directory, what, files)``, the files those written in place if they exist."""
        directory = Path(self.state_dir) / DIRECTORY
        return [("state_dir", directory, "the DTLS certificate (dtls plugin)", ())]

    def read_files(self) -> list[tuple[str, Path, str]]:
        """What ``voipgw check-config`` and ``run`` check this user may read where it is
        (Gateway.check): the certificate and key, read back at the first DTLS offer."""
        directory = Path(self.state_dir) / DIRECTORY
        return [
            ("state_dir", directory / CERTIFICATE_FILE, "the DTLS certificate (dtls plugin)"),
            ("state_dir", directory / KEY_FILE, "the DTLS certificate's key (dtls plugin)"),
        ]

    def certificate_store(
        self, *, clock: Callable[[], datetime.datetime] | None = None
    ) -> CertificateStore:
        """The store of the gateway's DTLS certificate, ``<state_dir>/dtls``."""
        max_age = datetime.timedelta(days=self.certificate_max_age_days)
        directory = Path(self.state_dir) / DIRECTORY
        if clock is None:
            return CertificateStore(directory, max_age=max_age)
        return CertificateStore(directory, max_age=max_age, clock=clock)


@hookimpl
def gateway_plugin_config() -> type:
    return DtlsConfig


@hookimpl
def gateway_register_key_exchanges(registry: Registry[Any], config: DtlsConfig | None) -> None:
    """Register the ``dtls`` key exchange. The certificate is loaded (or made) at its first use,
    not here, so ``voipgw check-config`` writes nothing."""
    config = config if config is not None else DtlsConfig()
    store = config.certificate_store()
    exchange = DtlsKeyExchange(
        identity=store.current,
        random_bytes=os.urandom,
        profiles=config.profiles,
        timing=DtlsTiming(handshake_timeout=config.handshake_timeout),
        mtu=config.mtu,
        sdp_address_only=config.sdp_address_only,
    )
    registry.add(DtlsKeyExchange.name, exchange)


@hookimpl
def gateway_register_media_policies(registry: Registry[Any], config: DtlsConfig | None) -> None:
    """Nothing: the built-in policies (``dtls``, ``best-effort`` ...) belong to the core."""


if TYPE_CHECKING:
    # mypy checks that the classes satisfy the interfaces they are registered as.
    def _conforms(exchange: DtlsKeyExchange, negotiation: DtlsNegotiation) -> None:
        _exchange: KeyExchange = exchange
        _negotiation: KeyNegotiation = negotiation
