"""One ZRTP key agreement on one stream of one leg (RFC 6189), sans-IO.

Theory of operation
-------------------
The gateway is a ZRTP endpoint towards a phone that speaks ZRTP, on behalf of whatever is on the
call's other leg (RFC 6189 §10, the second of its three choices for intermediaries): it has its
own ZID, runs the whole exchange with the phone, and hands the core SRTP keys for this leg only.
The phone's SAS is therefore the SAS of the phone-to-gateway link; the other leg is protected by
its own means (or not), which the call's security record says.

Both sides send Hello (answered with HelloACK) until they have each other's; then either may send
Commit and so become the initiator (§4.1, §4.2). We commit as soon as we hold the peer's Hello and
its HelloACK, as phones do; when both Commits cross, the one with the lower hvi is discarded
(§4.2) and its sender becomes the responder. A DH exchange then runs::

    initiator                          responder
    Commit (H2, algorithms, hvi)  -->
                                  <--  DHPart1 (H1, pvr)
    DHPart2 (H1, pvi)             -->
                                  <--  Confirm1 (encrypted H0)
    Confirm2 (encrypted H0)       -->
                                  <--  Conf2ACK

Every message is authenticated late, by the hash chain (§9): H3 comes in the Hello, H2 in the
Commit (initiator), H1 in the DHPart, H0 inside the Confirm, and each revealed H checks the MAC of
the message before it. The initiator commits to its DH value in hvi, which the responder checks
against the DHPart2 (§4.4.1.1). The keys are derived from the DH result and the hash of the four
messages (§4.4.1.4); the Confirm messages prove both sides derived the same (§4.5). Only then are
SRTP keys released (``KeysReady``) and the SAS rendered (``SasReady``): the responder once
Confirm2 is verified, the initiator once Conf2ACK arrives (§4.6: it must not send SRTP before).

What we offer (:class:`ZrtpSettings`): hash S256; ciphers AES1, AES3; auth tags HS80, HS32 (only
those whose SRTP suite the leg's policy allows); key agreements X255 and DH3k (DH2k and EC25 by
configuration); SAS B32 and B256. With a :class:`~gateway.plugins.keyexchange.zrtp.cache.
SecretCache` we keep the retained secrets of each phone (§4.9: key continuity; cache expiration
"forever" in our Confirm) and say whether they matched (:attr:`ZrtpNegotiation.cache_state`);
without one, none (§4.9.1: expiration 0), so the phone cannot tell a later call from a first.
The V flag is never set: the gateway has no user who could compare the SAS. We are no
trusted MiTM (no M flag, no SASrelay, no enrollment) and never allow GoClear (A flag clear; a
GoClear gets Error 0x100).

Multistream mode (§4.4.3). The streams of one leg share a :class:`ZrtpLegSession` (the core's
per-leg ``leg_state``). The leg's first stream to commit runs the one DH exchange and derives the
ZRTP session key, ZRTPSess (§4.5.2); every Hello lists ``Mult`` last. A later stream with the same
phone (same ZID) is keyed from ZRTPSess without a DH exchange::

    initiator                          responder
    Commit (H2, algorithms, nonce) -->
                                  <--  Confirm1 (encrypted H0)
    Confirm2 (encrypted H0)       -->
                                  <--  Conf2ACK

s0 = KDF(ZRTPSess, "ZRTP MSK", ZIDi || ZIDr || hash(responder's Hello || Commit), 256); the keys
follow from s0 as in DH mode. As initiator such a stream waits, once it holds the phone's Hello
and HelloACK, until the DH stream is secure (the DH exchange MUST complete first), then commits
with a fresh nonce and the DH stream's hash, cipher and auth tag. As responder it accepts a
Multistream Commit once the DH stream has checked the phone's Confirm (both sides then hold
ZRTPSess), and ends the exchange otherwise (Error 0x53), on a nonce already used on the leg
(0x80) and when our Multistream Commit crosses a DH one (§4.2: a software error, 0x20). With no
DHPart, the Confirm's H0 is checked by hashing up to the H2 of the Commit or the H3 of the Hello
(§9). One SAS per call (§4.5.2): a Multistream stream shows the DH stream's and queues no
``SasReady``; the retained-secret cache is neither read nor written. A phone that does not list
``Mult`` gets a DH exchange on every stream, as before.

Retransmission (§6): Hello every 50 ms, doubling to 200 ms, until the peer's HelloACK or Commit;
as initiator, Commit, DHPart2 and Confirm2 every 150 ms, doubling to 1.2 s, 10 times at most; as
responder we resend our last message when the peer repeats its own (a repeated Commit gets the
same DHPart1, and so on). Each retransmission is the same message in a packet with the next
sequence number. The whole exchange must finish within ``handshake_timeout`` of our first Hello.

Failures end the call (``NegotiationFailed``, 488 while it is set up, a BYE with the reason after):
the peer's Error message, a protocol error we detect (we send Error first, §5.9), a timeout. A
packet that fails its CRC or does not parse is dropped and counted; so is a Hello that does not
match the peer's a=zrtp-hash (§8.1: a forged or stale Hello) and anything a stranger could send
without knowing the exchange. Key material never appears in a ``repr``, a log line or a reason.

Who the peer is (docs/media_security.md, "Forged handshakes"). The core hands each datagram on
with its source (:meth:`ZrtpNegotiation.receive_packet_from`). Where the peer's SDP bound its
Hello (a readable a=zrtp-hash, §8.1), the source whose Hello matched is the peer: before that
Hello no message but a Hello or a Ping is taken from anyone, after it only from that source.
So an Error (no MAC, §5.9), a HelloACK, or a DHPart2 or Confirm that fails its checks, from a
stranger that reached the port first, neither ends the exchange nor stands for the peer. Where
nothing bound it (no readable a=zrtp-hash), the first Hello taken binds the exchange, maybe a
stranger's: when the peer's SDP address speaks after another source's datagrams, the core calls
:meth:`ZrtpNegotiation.restart_handshake` and the exchange starts again from discovery with
the same Hello of ours (its hash is in our SDP), as the DTLS server does.
"""

from __future__ import annotations

import enum
import hmac
import re
from collections import deque
from collections.abc import Callable, Iterable, Sequence

import attrs

from gateway.core.interfaces import (
    KeyNegotiationEvent,
    KeysReady,
    NegotiationFailed,
    SasReady,
    SrtpKeys,
)
from gateway.plugins.keyexchange.zrtp import packets as p
from gateway.plugins.keyexchange.zrtp.cache import FOREVER, CachedSecrets, SecretCache
from gateway.plugins.keyexchange.zrtp.crypto import (
    CIPHER_KEY_BITS,
    KEY_AGREEMENTS,
    SRTP_SALT_BITS,
    SRTP_SUITES,
    KeyAgreementError,
    PrivateValue,
    cfb_decrypt,
    cfb_encrypt,
    kdf,
    mac64,
    message_mac_valid,
    render_sas,
    s0_dh_mode,
    s0_multistream,
    sha256,
    with_mac,
    zrtp_session_key,
)

RandomBytes = Callable[[int], bytes]

# §5.1.2-§5.1.6: what every endpoint must implement; a Hello implies them when it lists fewer.
MANDATORY = {
    "hashes": ("S256",),
    "ciphers": ("AES1",),
    "auth_tags": ("HS32", "HS80"),
    "key_agreements": ("DH3k",),
    "sas_types": ("B32 ",),
}

CLIENT_ID = b"voipgw"
"""Our Hello's client identifier (§5.2). Never "LINPHONE-ZRTPCPP" nor "BZRTP": bzrtp falls back
to non-RFC behaviour for those."""


@attrs.frozen
class ZrtpTiming:
    """Retransmission (§6) and the overall bound. T1 for Hello, T2 for the initiator's Commit,
    DHPart2 and Confirm2."""

    t1_first: float = 0.05
    t1_cap: float = 0.2
    t2_first: float = 0.15
    t2_cap: float = 1.2
    t2_tries: int = 10
    handshake_timeout: float = 20.0


@attrs.frozen
class ZrtpSettings:
    """What one gateway offers; algorithm names as in the messages (4 characters, "B32 ")."""

    zid: bytes = attrs.field(repr=False)
    ciphers: tuple[str, ...] = ("AES1", "AES3")
    auth_tags: tuple[str, ...] = ("HS80", "HS32")
    key_agreements: tuple[str, ...] = ("X255", "DH3k")
    sas_types: tuple[str, ...] = ("B32 ", "B256")
    timing: ZrtpTiming = ZrtpTiming()
    cache: SecretCache | None = attrs.field(default=None, eq=False)
    """Retained secrets by phone ZID (None: cacheless, RFC 6189 §4.9.1)."""
    disclosure: bool = False
    """Set the Disclosure flag in our Confirm (§11: this endpoint may disclose the session's
    keys or plaintext, e.g. to lawful interception). A product setting: every call or none."""
    totals: ZrtpTotals | None = attrs.field(default=None, eq=False)
    """The gateway's counters, which every exchange made with these settings adds to (the
    metrics plugin's ``voipgw_zrtp_*_total``); None: none kept."""


@attrs.define
class ZrtpTotals:
    """What every ZRTP exchange of a gateway dropped since its start (:class:`ZrtpStatistics`
    summed over legs and streams, the ended ones too): read by the metrics plugin through the
    key exchange's ``counters()`` (docs/metrics.md)."""

    discarded: int = 0
    """Packets dropped: bad CRC, malformed, out of place, not from the peer; Hellos that did
    not match the peer's a=zrtp-hash included."""
    hello_mismatches: int = 0
    """Peer Hellos that did not match its a=zrtp-hash (§8.1): forged, or a phone whose SDP and
    Hello disagree."""


def hello_hash_attribute(hello: bytes) -> str:
    """The a=zrtp-hash value for our Hello (§8.1): version, then SHA-256 of the message."""
    return f"{p.VERSION.decode()} {sha256(hello).hex()}"


def parse_hello_hashes_untrusted(attributes: Iterable[tuple[str, str | None]]) -> set[bytes]:
    """The SHA-256 Hello hashes of version 1.1x in the peer's a=zrtp-hash attributes. Malformed
    values are skipped: the attribute is a binding, not a requirement (§8.1)."""
    hashes: set[bytes] = set()
    for name, value in attributes:
        if name.lower() != "zrtp-hash" or not value:
            continue
        version, _, digest = value.strip().partition(" ")
        digest = digest.strip()
        if not version.startswith("1.1") or len(digest) != 64:
            continue
        try:
            hashes.add(bytes.fromhex(digest))
        except ValueError:
            continue
    return hashes


def has_zrtp_hash(attributes: Iterable[tuple[str, str | None]]) -> bool:
    return any(name.lower() == "zrtp-hash" for name, _ in attributes)


class _State(enum.Enum):
    WAITING = "waiting for the answer"  # our offer, before the peer's answer
    DISCOVERY = "discovery"  # Hello / HelloACK
    COMMITTED = "committed"  # initiator: Commit sent
    DH_PART1_SENT = "responded"  # responder: DHPart1 sent
    DH_PART2_SENT = "dh-part2 sent"  # initiator
    CONFIRM1_SENT = "confirm1 sent"  # responder
    CONFIRM2_SENT = "confirm2 sent"  # initiator
    SECURE = "secure"
    FAILED = "failed"


class _Abort(Exception):
    """A protocol error: send Error ``code`` (None: send nothing) and fail with ``reason``."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class _Ignore(Exception):
    """Drop the packet (counted): not from the exchange in progress, or out of order."""


class ZrtpLegSession:
    """What the ZRTP streams of one leg share (RFC 6189 §4.4.3): the leg's one DH exchange and
    the ZRTP session key it derived, from which the leg's other streams are keyed in
    Multistream mode, and the nonces of those streams' Commits. One per leg (the core's
    ``leg_state``), for the leg's whole call: §4.5.2 forbids using ZRTPSess across calls. The
    key never appears in a ``repr``."""

    def __init__(self) -> None:
        self.dh_stream: ZrtpNegotiation | None = None
        """The stream that runs (or ran) the leg's DH exchange."""
        self._another_phone: ZrtpLegSession | None = None
        """The session of this leg's exchanges begun afresh for another phone
        (:meth:`for_another_phone`)."""
        self.peer_zid: bytes | None = None
        self._session_key: bytes | None = None
        self.algorithms: tuple[str, str, str, str, str] | None = None
        """The DH stream's Commit: a Multistream Commit of ours takes its hash, cipher and auth
        tag (§4.4.3.1: some phones cannot use different SRTP algorithms per stream)."""
        self.secure = False
        """The DH stream is secure: we may commit in Multistream mode (§4.4.3: the DH exchange
        MUST be completed first)."""
        self.sas: str | None = None
        """The leg's one SAS (§4.5.2): the DH stream's, shown for every stream."""
        self.nonces: set[bytes] = set()
        """Every Multistream nonce of the leg, ours and the phone's: one used twice would key two
        streams alike, so a Commit that reuses one ends its exchange (§4.4.3.1, error 0x80)."""

    def __repr__(self) -> str:
        keyed = "keyed" if self._session_key is not None else "not keyed"
        return f"<ZrtpLegSession {keyed}>"

    def claim_dh(self, stream: ZrtpNegotiation, peer_zid: bytes) -> None:
        """``stream`` runs a DH exchange with ``peer_zid``: the leg's first one is its DH stream
        (a later one, with a phone that does not offer Mult, keys only its own stream)."""
        current = self.dh_stream
        if self._session_key is None and (current is None or current.failure is not None):
            self.dh_stream, self.peer_zid = stream, peer_zid

    def dh_under_way(self, peer_zid: bytes, stream: ZrtpNegotiation) -> bool:
        """Another stream's DH exchange with ``peer_zid`` is running: wait for it (§4.4.3)."""
        current = self.dh_stream
        return (
            current is not None
            and current is not stream
            and current.failure is None
            and self.peer_zid == peer_zid
            and not self.secure
        )

    def session_key(self, peer_zid: bytes) -> bytes | None:
        """ZRTPSess, once the DH stream has checked the phone's Confirm (both sides hold it),
        and only for the phone it was agreed with (§4.4.3: the same ZID on every stream)."""
        return self._session_key if peer_zid == self.peer_zid else None

    def confirmed(
        self,
        stream: ZrtpNegotiation,
        peer_zid: bytes,
        session_key: bytes,
        algorithms: tuple[str, str, str, str, str],
        sas: str,
    ) -> None:
        """The DH stream checked the phone's Confirm: its ZRTPSess and SAS are the leg's."""
        if self._session_key is None and self.dh_stream in (None, stream):
            self.dh_stream, self.peer_zid = stream, peer_zid
            self._session_key, self.algorithms, self.sas = session_key, algorithms, sas

    def forget(self, stream: ZrtpNegotiation) -> None:
        """``stream`` starts its exchange afresh (:meth:`ZrtpNegotiation.restart_handshake`):
        a DH exchange it ran, never secure, was with a peer it no longer takes for the phone,
        and is not the leg's."""
        if stream is self.dh_stream and not self.secure:
            self.dh_stream = self.peer_zid = None
            self._session_key = self.algorithms = self.sas = None

    def for_another_phone(self) -> ZrtpLegSession:
        """The session the leg's streams share once another phone's answer replaced the early
        phone's (:meth:`ZrtpNegotiation.for_another_phone`): a new one, the same for each
        stream of the leg that asks, so that phone's streams key in Multistream mode from its
        own DH exchange, never from ZRTPSess agreed with the early phone (§4.4.3)."""
        if self._another_phone is None:
            self._another_phone = ZrtpLegSession()
        return self._another_phone

    def established(self, stream: ZrtpNegotiation) -> None:
        """The DH stream is secure: later streams may commit in Multistream mode."""
        if stream is self.dh_stream and self._session_key is not None:
            self.secure = True


@attrs.define(repr=False)
class _Keys:
    """What one exchange derived (§4.5.3), by role. Never shown. The SAS hash, the retained
    secret and ZRTPSess come from DH mode only (§4.5.2: not from a Multistream stream)."""

    srtp_key_i: bytes
    srtp_salt_i: bytes
    srtp_key_r: bytes
    srtp_salt_r: bytes
    mac_key_i: bytes
    mac_key_r: bytes
    zrtp_key_i: bytes
    zrtp_key_r: bytes
    sashash: bytes | None = None
    retained: bytes | None = None
    """The next rs1 (§4.6.1)."""
    session_key: bytes | None = None
    """ZRTPSess (§4.5.2)."""

    def __repr__(self) -> str:
        return "<ZRTP keys: redacted>"


@attrs.frozen
class ZrtpStatistics:
    discarded: int
    """Packets dropped: bad CRC, malformed, out of place."""
    hello_mismatches: int
    """Peer Hellos that did not match its a=zrtp-hash (§8.1)."""
    retransmissions: int


@attrs.define
class _Retransmission:
    message: bytes = attrs.field(repr=False)
    due: float
    interval: float
    cap: float
    tries: int  # 0: unlimited (Hello, bounded by the handshake timeout)
    sent: int = 1


class ZrtpNegotiation:
    """One stream's ZRTP exchange on one leg (``interfaces.KeyNegotiation``)."""

    tls_id = None
    """No DTLS association (gateway/core/media/handshakes.py ``_association``): a side's ZRTP
    is held only until our first answer to it went (docs/plugin_hooks.md)."""

    @property
    def answers_only(self) -> bool:
        """Whether what we send only answers the source whose Hello we took, so it is never
        copied to the peer's SDP address while another source holds the port before keys
        (docs/media_security.md, "Forged handshakes").

        False where the peer's SDP binds its Hello (a readable a=zrtp-hash, §8.1): our
        datagrams are copied, answers too, unlike the DTLS server's: what we answer is the
        peer's own message, wherever it came from. Its Hello must match its a=zrtp-hash, each
        later message reveals the next link of that Hello's hash chain (§9), so our HelloACK,
        DHPart1, DHPart2 or Confirm is the answer the peer waits for, or a repeat it takes as a
        retransmission (§6); our Commit commits to its Hello (hvi, §4.4.1.1). (A Ping from
        anyone gets PingACK, §5.16, and an Error ErrorACK, §5.10: nothing a peer that sent
        neither acts on. An Error from neither the SDP address nor the latched source never
        gets here: the relay drops it, docs/media_security.md "Forged Errors"; with the peer's
        Hello bound, one from a source whose Hello did not match is dropped here.)

        Without a readable a=zrtp-hash, False until a Hello is taken (our Hello goes to both),
        then True: the first Hello taken binds the exchange, maybe a stranger's that reached
        the port first, until the peer's SDP address speaks (:meth:`restart_handshake`), and
        our HelloACK, Commit, DHPart or Confirm answer that Hello only. Copied, they reached the
        phone at the SDP address: a HelloACK stopped its Hello's retransmissions (§6), a Commit
        (its H2 checks against our Hello's H3, §9) could set it answering an exchange it never
        had (session 40; before, every one was copied). Read once per round by the core: our
        Hello sent in the same round as such an answer goes to that source only; the phone gets
        it when it speaks and the exchange starts afresh."""
        return self._peer_hello is not None and not self._peer_hello_hashes

    def __init__(
        self,
        sdp_role: str,
        settings: ZrtpSettings,
        *,
        random_bytes: RandomBytes,
        suites: Sequence[str] = (),
        secure_signalling: bool = False,
        session: ZrtpLegSession | None = None,
    ) -> None:
        self.sdp_role = sdp_role  # "offerer" | "answerer"
        self._session = session if session is not None else ZrtpLegSession()
        """Shared with the leg's other streams (Multistream mode); a stream of its own without."""
        self.signalling_protected = secure_signalling
        self._settings = settings
        self._random = random_bytes
        allowed = set(suites)
        self._ciphers = tuple(
            c for c in settings.ciphers if _suites_of(c, settings.auth_tags, allowed)
        )
        self._auth_tags = tuple(
            a for a in settings.auth_tags if _suites_of(self._ciphers, (a,), allowed)
        )
        self._allowed_suites = allowed
        self._policy_order = tuple(suites)
        self._h0 = _random(random_bytes, 32)
        self._h1 = sha256(self._h0)
        self._h2 = sha256(self._h1)
        self._h3 = sha256(self._h2)
        self._ssrc = int.from_bytes(_random(random_bytes, 4), "big")
        self._sequence = int.from_bytes(_random(random_bytes, 2), "big")
        self._hello = with_mac(
            p.encode_hello(
                client_id=CLIENT_ID,
                h3=self._h3,
                zid=settings.zid,
                flags=0,
                hashes=MANDATORY["hashes"],
                ciphers=self._ciphers,
                auth_tags=self._auth_tags,
                # §4.4.3, §5.1.5: Mult last in every stream's Hello (it MUST be supported with
                # several streams; bzrtp keys a second stream only if the peer lists it).
                key_agreements=(*settings.key_agreements, p.MULTISTREAM),
                sas_types=settings.sas_types,
            ),
            self._h2,
        )
        self._state = _State.WAITING
        self._peer_hello_hashes: set[bytes] = set()
        self._forget_peer()
        self._retransmission: _Retransmission | None = None
        self._hello_pending = False  # started; the first Hello is not sent yet
        self._deadline: float | None = None
        self._outgoing: list[bytes] = []
        self._events: deque[KeyNegotiationEvent] = deque()
        self.srtp_keys: SrtpKeys | None = None
        self.sas: str | None = None
        self.failure: NegotiationFailed | None = None
        self._discarded = 0
        self._hello_mismatches = 0
        self._retransmissions = 0
        if not self._ciphers or not self._auth_tags:
            self._fail("no SRTP suite of the leg's policy can be keyed by ZRTP")

    def _forget_peer(self) -> None:
        """What the exchange learnt from its peer and did with it: none yet (at the start, and
        when it starts afresh, :meth:`restart_handshake`)."""
        self._peer_hello: p.Hello | None = None
        self._peer_source: tuple[object, ...] | None = None
        """Where the peer's Hello came from (as the socket gave it: host and port first),
        when the core said so."""
        self._hello_acked = False
        self.initiator: bool | None = None
        self._multistream = False  # this exchange is in Multistream mode (§4.4.3)
        self._waiting = False  # ready to commit; waits for the leg's DH stream (§4.4.3)
        # The messages of the exchange, as sent and received (the key derivation hashes them).
        self._commit: bytes | None = None  # ours or the peer's, whichever won
        self._commit_algorithms: tuple[str, str, str, str, str] | None = None
        self._hvi: bytes | None = None  # of our own Commit (its nonce in Multistream mode)
        self._private: PrivateValue | None = None
        self._dh_part1: bytes | None = None
        self._dh_part2: bytes | None = None
        self._peer_h1: bytes | None = None
        self._peer_h2: bytes | None = None
        self._keys: _Keys | None = None
        self._cached: CachedSecrets | None = None  # of the peer's ZID, read with its Hello
        self._peer_cache_expiration = 0
        self.zrtp_peer_disclosure: str | None = None
        """"yes" when the phone's Confirm set the Disclosure flag (§11: it may disclose the
        session's keys or plaintext), "no" when it did not; None before its Confirm."""
        self.cache_state: str | None = None
        """"new" (nothing kept of this phone), "match" (a secret kept from an earlier call went
        into the keys: key continuity) or "mismatch" (we kept one the phone does not share:
        a possible man in the middle, §4.3.2); None before the keys or without a cache."""
        self._last_answer: tuple[bytes, bytes] | None = None  # (peer message, our answer)
        self._confirm: bytes | None = None  # ours
        self.peer_client_id: str | None = None

    def __repr__(self) -> str:
        return f"<ZrtpNegotiation {self.sdp_role} {self._state.value}>"

    # -- what the core reads --------------------------------------------------------------------

    @property
    def state(self) -> str:
        return self._state.value

    @property
    def keys(self) -> SrtpKeys | None:
        """The keys in force (the core keeps them over a re-INVITE that keeps this exchange)."""
        return self.srtp_keys

    @property
    def zrtp_sas(self) -> str | None:
        return self.sas

    @property
    def zrtp_key_agreement(self) -> str | None:
        if self._commit_algorithms is None or self._state is not _State.SECURE:
            return None
        return self._commit_algorithms[3].strip()

    @property
    def zrtp_peer_client(self) -> str | None:
        return self.peer_client_id

    @property
    def zrtp_cache(self) -> str | None:
        """Key continuity with this phone, once keyed: see :attr:`cache_state`."""
        return self.cache_state if self._state is _State.SECURE else None

    def security_record(self) -> dict[str, str | None]:
        """For the leg's security record: the SAS the phone shows, the key agreement, the
        phone's ZRTP client and whether the secret kept from earlier calls matched."""
        return {
            "zrtp_sas": self.zrtp_sas,
            "zrtp_key_agreement": self.zrtp_key_agreement,
            "zrtp_peer_client": self.zrtp_peer_client,
            "zrtp_cache": self.zrtp_cache,
            "zrtp_peer_disclosure": self.zrtp_peer_disclosure,
        }

    def statistics(self) -> ZrtpStatistics:
        return ZrtpStatistics(self._discarded, self._hello_mismatches, self._retransmissions)

    # -- interfaces.KeyNegotiation --------------------------------------------------------------

    def local_sdp_attributes(self) -> list[tuple[str, str | None]]:
        return [("zrtp-hash", hello_hash_attribute(self._hello))]

    def remote_sdp_attributes(self, attributes: Iterable[tuple[str, str | None]]) -> None:
        """The peer's answer chose ZRTP: bind its Hello hash and start."""
        if self._state is not _State.WAITING:
            return  # a repeated answer (a re-INVITE kept this exchange)
        self.bind_peer_hello(attributes)
        self.start()

    def check_remote_sdp_attributes(
        self, attributes: Iterable[tuple[str, str | None]]
    ) -> str | None:
        """None: ZRTP refuses no answer in SDP (a=zrtp-hash is a binding, not a requirement,
        RFC 6189 §8.1). Its presence makes the core give the answer to
        :meth:`remote_sdp_attributes` only once it took the whole answer, so a forked phone's
        refused 183 binds nothing: not its Hello hash, which the answering phone's Hello would
        not match (``interfaces.KeyNegotiation``'s optional check)."""
        return None

    def for_another_phone(self) -> ZrtpNegotiation:
        """A fresh exchange of the offer this one made, for another phone's final answer to it
        (``interfaces.KeyNegotiation``'s optional method): a proxy downstream forked our offer
        (RFC 3261 §16.7), one phone's early answer (a 183 with SDP) was taken and this
        exchange ran with it, bound to its Hello (§8.1), and another phone answered with its
        200 (RFC 3261 §12.1.2). The fresh one holds nothing of the early phone's (no peer
        Hello, no keys, no DH stream of the leg: :meth:`ZrtpLegSession.for_another_phone`) and
        sends the Hello our offer's a=zrtp-hash names, whose H0..H3 chain (§9) it keeps: a
        new chain would be a new Hello, which the answering phone would find not to match
        that a=zrtp-hash and drop. The early phone holds the links our exchange with it
        revealed, as a stranger does after :meth:`restart_handshake`: it could make messages
        that pass the answering phone's chain checks of ours, never the keys, nor a man in
        the middle that the SAS (§7) would not show. Session 51: before, that 200 was "a
        repeated answer" here, the answering phone's Hellos were dropped (not the bound
        peer's), and the leg stayed keyed with the early phone's keys: no audio, no error."""
        if self.sdp_role != "offerer":
            raise RuntimeError("only an offering ZRTP negotiation takes another phone's answer")
        fresh = ZrtpNegotiation(
            "offerer",
            self._settings,
            random_bytes=self._random,
            suites=self._policy_order,
            secure_signalling=self.signalling_protected,
            session=self._session.for_another_phone(),
        )
        fresh._h0, fresh._h1, fresh._h2, fresh._h3 = self._h0, self._h1, self._h2, self._h3
        fresh._hello = self._hello
        return fresh

    def same_peer(self, hello_hashes: set[bytes]) -> bool:
        """Whether a new offer's a=zrtp-hash values name the peer Hello this exchange is bound
        to (or name none: the peer does not bind its Hello)."""
        if not hello_hashes or hello_hashes == self._peer_hello_hashes:
            return True
        return self._peer_hello is not None and sha256(self._peer_hello.raw) in hello_hashes

    def bind_peer_hello(self, attributes: Iterable[tuple[str, str | None]]) -> None:
        self._peer_hello_hashes = parse_hello_hashes_untrusted(attributes)

    def start(self) -> None:
        """Begin sending Hello at the next ``packets_to_send``/``handle_timer``."""
        if self._state is _State.WAITING:
            self._state = _State.DISCOVERY
            self._hello_pending = True

    def claims_packet(self, first_byte: int, packet: bytes) -> bool:
        return p.is_zrtp_packet(packet)

    def receive_packet(self, packet: bytes, *, now: float) -> None:
        """A datagram whose source is not known: taken as the peer's wherever the exchange
        allows (before this engine was told sources, the relay's checks were all there was)."""
        self.receive_packet_from(packet, source=None, now=now)

    def receive_packet_from(
        self, packet: bytes, *, source: Sequence[object] | None, now: float
    ) -> None:
        """A datagram from ``source`` (host, port, as the socket gave it; None: not known).
        With the peer's Hello bound by its a=zrtp-hash (§8.1), the source whose Hello matched
        is the peer: until that Hello only a Hello or a Ping is taken, then messages from that
        source only (module docstring, "Who the peer is"); the others are dropped and counted
        (``discarded``), answered with nothing."""
        if self._state in (_State.WAITING, _State.FAILED):
            return
        try:
            received = p.parse_packet_untrusted(packet)
            sender = None if source is None else tuple(source)
            if received.message_type not in (p.HELLO, p.PING) and not self._from_peer(sender):
                raise _Ignore
            self._receive(received, sender, now)
        except (p.ZrtpParseError, _Ignore):
            self._discarded += 1
            if self._settings.totals is not None:
                self._settings.totals.discarded += 1
        except _Abort as abort:
            self._abort(abort)

    def _from_peer(self, source: tuple[object, ...] | None) -> bool:
        """Whether a message (not a Hello, not a Ping) from ``source`` may be the peer's."""
        if source is None:
            return True  # not told: as before sources were known
        if self._peer_hello is None:
            # Bound: nobody proved to be the peer yet. Unbound: nobody can (the relay's checks).
            return not self._peer_hello_hashes
        return self._peer_source is None or source[:2] == self._peer_source[:2]

    @property
    def proves_peer(self) -> bool:
        """Whether this exchange tells its peer from a stranger by what it sends before keys:
        the peer's SDP binds its Hello (a readable a=zrtp-hash, §8.1), so the source whose Hello
        matched is the peer (:attr:`peer_source`). Read by the core (docs/plugin_hooks.md,
        "Media-path engines"): only then does the relay hand this exchange ZRTP datagrams from
        other sources than the one that latched the port; without a binding nothing tells the
        peer from a stranger, the latched source is taken as the peer (docs/media_security.md,
        "Forged handshakes"), and a stranger's Hello handed on beside it could bind the
        exchange."""
        return bool(self._peer_hello_hashes)

    @property
    def peer_source(self) -> tuple[object, ...] | None:
        """The source proved to be the peer before keys: the one whose Hello matched the
        peer's a=zrtp-hash (§8.1); None without a binding (nothing proves it) or before. The
        core gives it the media port's latch (docs/plugin_hooks.md, "Media-path engines")."""
        if not self._peer_hello_hashes or self._state is _State.SECURE:
            return None
        return self._peer_source

    def restart_handshake(self, *, now: float) -> bool:
        """The peer's SDP address spoke after another source's datagrams were fed, before keys
        (gateway/core/media/handshakes.py; docs/media_security.md, "Forged handshakes").

        With the peer's Hello bound by its a=zrtp-hash (§8.1) there is nothing to undo: a Hello
        that did not match was never taken, nor anything else from a source whose Hello did not
        match. Without a binding the first Hello taken bound the exchange, maybe a stranger's,
        and what followed it too: all that is forgotten and the exchange starts again from
        discovery, our Hello resent at once; the sequence number goes on, and the overall
        deadline is kept. Our DH value is made afresh with the next Commit or DHPart.

        Our Hello stays the same, and our H0..H3 chain with it (§9), although a stranger that
        ran the exchange with us holds the links we revealed to it (H2 in our Commit, H1 in our
        DHPart, H0 in our Confirm, which its keys decrypt). A new chain is a new Hello (it
        carries H3): not the one our SDP's a=zrtp-hash names (§8.1), not the one the phone may
        already hold (our Hello went to its SDP address too, and a Hello is resent
        byte-identical, §6), so the phone would drop it and the call would end at the timeout.
        For the phone nothing starts afresh: it saw our Hello and nothing else of ours (what
        answers the stranger is not copied to it, :attr:`answers_only`). What the links are
        for, rejecting false packets cheaply (§9), is lost towards that stranger only: it can
        make messages that pass the phone's chain checks of ours, as it could already disrupt
        this exchange by being first at the port; never the keys, nor a man in the middle
        that the SAS (§7) would not show. A DH exchange this stream ran for the leg is not
        the leg's any more (:meth:`ZrtpLegSession.forget`). True when it started afresh, False
        when there was nothing to undo (the core then logs nothing)."""
        if self._peer_hello_hashes or self._state in (
            _State.WAITING,
            _State.FAILED,
            _State.SECURE,
        ):
            return False
        self._session.forget(self)
        self._forget_peer()
        self._state = _State.DISCOVERY
        if self._hello_pending:
            return True  # our first Hello is not sent yet: it goes as planned
        timing = self._settings.timing
        self._send(self._hello)
        self._retransmission = _Retransmission(
            self._hello, now + timing.t1_first, timing.t1_first, timing.t1_cap, 0
        )
        return True

    def _abort(self, abort: _Abort) -> None:
        if abort.code is None:
            self._fail(abort.reason)
            return
        self._send(p.encode_error(abort.code))
        self._fail(f"{abort.reason} (we sent Error {p.describe_error(abort.code)})")

    def packets_to_send(self, *, now: float) -> list[bytes]:
        self._send_first_hello(now)
        outgoing, self._outgoing = self._outgoing, []
        return outgoing

    def get_timer(self) -> float | None:
        if self._state in (_State.WAITING, _State.FAILED):
            return None
        if self._hello_pending:
            return 0.0  # due at once: start the exchange
        if self._waiting and self._done_waiting():
            return 0.0  # the leg's DH stream is secure (or gone): commit now
        timers = [t for t in (self._deadline,) if t is not None]
        if self._retransmission is not None:
            timers.append(self._retransmission.due)
        return min(timers) if timers else None

    def handle_timer(self, *, now: float) -> None:
        if self._state in (_State.WAITING, _State.FAILED, _State.SECURE):
            return
        if self._send_first_hello(now):
            return
        if self._deadline is not None and now >= self._deadline:
            self._timed_out()
            return
        if self._waiting and self._done_waiting():
            self._waiting = False  # _maybe_commit waits again if it must (never a due timer)
            try:
                self._maybe_commit(now)
            except _Abort as abort:
                self._abort(abort)
            return
        again = self._retransmission
        if again is None or now < again.due:
            return
        if again.tries and again.sent >= again.tries:
            kind = again.message[4:12].decode("ascii").strip()
            self._send(p.encode_error(0xB0))
            self._fail(f"the peer stopped answering (our {kind} sent {again.sent} times)")
            return
        self._send(again.message)
        again.sent += 1
        self._retransmissions += 1
        again.interval = min(again.interval * 2, again.cap)
        again.due = now + again.interval

    def next_event(self) -> KeyNegotiationEvent | None:
        return self._events.popleft() if self._events else None

    # -- sending --------------------------------------------------------------------------------

    def _send_first_hello(self, now: float) -> bool:
        if not self._hello_pending:
            return False
        self._hello_pending = False
        timing = self._settings.timing
        self._deadline = now + timing.handshake_timeout
        self._send(self._hello)
        self._retransmission = _Retransmission(
            self._hello, now + timing.t1_first, timing.t1_first, timing.t1_cap, 0
        )
        return True

    def _send(self, message: bytes) -> None:
        self._sequence = (self._sequence + 1) & 0xFFFF
        self._outgoing.append(p.frame(self._sequence, self._ssrc, message))

    def _send_retransmitted(self, message: bytes, now: float) -> None:
        """Send one of the initiator's messages and keep resending it until answered (T2)."""
        timing = self._settings.timing
        self._send(message)
        self._retransmission = _Retransmission(
            message, now + timing.t2_first, timing.t2_first, timing.t2_cap, timing.t2_tries
        )

    def _timed_out(self) -> None:
        timeout = self._settings.timing.handshake_timeout
        if self._peer_hello is None:
            reason = f"no ZRTP Hello from the peer within {timeout:g} s"
        else:
            reason = f"the ZRTP exchange did not finish within {timeout:g} s ({self.state})"
        self._send(p.encode_error(0xB0))
        self._fail(reason)

    # -- receiving ------------------------------------------------------------------------------

    def _receive(self, packet: p.Packet, source: tuple[object, ...] | None, now: float) -> None:
        kind = packet.message_type
        if kind == p.HELLO:
            self._on_hello(packet, source, now)
        elif kind == p.HELLO_ACK:
            self._on_hello_ack(now)
        elif kind == p.COMMIT:
            self._on_commit(packet.message, now)
        elif kind == p.DH_PART1:
            self._on_dh_part1(packet.message, now)
        elif kind == p.DH_PART2:
            self._on_dh_part2(packet.message)
        elif kind == p.CONFIRM1:
            self._on_confirm1(packet.message, now)
        elif kind == p.CONFIRM2:
            self._on_confirm2(packet.message)
        elif kind == p.CONF2_ACK:
            self._on_conf2_ack()
        elif kind == p.ERROR:
            self._on_error(packet.message)
        elif kind == p.PING:
            # §5.16: every endpoint answers Ping; our endpoint hash is our truncated ZID.
            received_hash = p.parse_ping_untrusted(packet.message)
            self._send(
                p.encode_ping_ack(
                    endpoint_hash=self._settings.zid[:8],
                    received_hash=received_hash,
                    ssrc=packet.ssrc,
                )
            )
        elif kind == p.GO_CLEAR and self._state is _State.SECURE:
            self._send(p.encode_error(0x100))  # §4.7.2: we never allow clear media
        elif kind == p.SAS_RELAY and self._state is _State.SECURE:
            # §7.3: acknowledged, never rendered: we are no endpoint that trusts a MiTM.
            self._send(p.message(p.RELAY_ACK))
        else:
            raise _Ignore  # acknowledgements of things we never send, unknown types

    def _on_hello(self, packet: p.Packet, source: tuple[object, ...] | None, now: float) -> None:
        hello = p.parse_hello_untrusted(packet.message)
        if hello.version[:3] != p.VERSION[:3]:
            raise _Ignore  # §4.1.1: a peer with a higher version sends 1.10 once it sees ours
        if self._peer_hello_hashes and sha256(hello.raw) not in self._peer_hello_hashes:
            self._hello_mismatches += 1
            if self._settings.totals is not None:
                self._settings.totals.hello_mismatches += 1
            raise _Ignore
        if self._peer_hello is None:
            if hello.zid == self._settings.zid:
                raise _Abort(0x90, "the peer's ZID is ours (a loop through the gateway?)")
            self._peer_hello, self._peer_source = hello, source
            if self._settings.cache is not None:
                self._cached = self._settings.cache.lookup(hello.zid)
            self.peer_client_id = (
                hello.client_id.decode("ascii", "replace").strip().strip("\x00") or None
            )
        elif hello.raw != self._peer_hello.raw or not self._from_peer(source):
            # The first Hello we accepted binds the exchange; a copy of it from elsewhere
            # (replayed) gets no HelloACK of ours either.
            raise _Ignore
        self._send(p.message(p.HELLO_ACK))
        self._maybe_commit(now)

    def _on_hello_ack(self, now: float) -> None:
        if self._state is not _State.DISCOVERY:
            return  # one per Hello we sent: the later ones change nothing
        self._hello_acked = True
        self._retransmission = None  # our Hello arrived
        self._maybe_commit(now)

    def _maybe_commit(self, now: float) -> None:
        """§4.1: once we hold the peer's Hello and it has ours, commit as initiator. In
        Multistream mode if the phone offers it and the leg's DH stream is secure; if that
        stream's DH exchange is still running, wait for it (§4.4.3: the first stream's
        exchange MUST complete first; only one DH exchange at a time between two ZIDs, §4.2)."""
        peer = self._peer_hello
        if self._state is not _State.DISCOVERY or peer is None or not self._hello_acked:
            return
        self._waiting = False
        if p.MULTISTREAM in peer.key_agreements:
            session_key = self._session.session_key(peer.zid)
            if self._session.secure and session_key is not None:
                self._commit_multistream(peer, now)
                return
            if self._session.dh_under_way(peer.zid, self):
                self._waiting = True
                return
        self._session.claim_dh(self, peer.zid)
        algorithms = self._choose(peer)
        agreement = KEY_AGREEMENTS[algorithms[3].strip()]
        self._private = agreement.generate(self._random)
        self._dh_part2 = with_mac(
            p.encode_dh_part(
                p.DH_PART2,
                h1=self._h1,
                secret_ids=self._secret_ids(b"Initiator"),
                pv=self._private.public_value,
            ),
            self._h0,
        )
        # §4.4.1.1: hvi = hash(initiator's DHPart2 || responder's Hello).
        self._hvi = sha256(self._dh_part2 + peer.raw)
        commit = with_mac(
            p.encode_commit(
                h2=self._h2, zid=self._settings.zid, algorithms=algorithms, hvi=self._hvi
            ),
            self._h1,
        )
        self._commit, self._commit_algorithms = commit, algorithms
        self.initiator = True
        self._state = _State.COMMITTED
        self._send_retransmitted(commit, now)

    def _done_waiting(self) -> bool:
        """A stream waiting to commit may go on: the leg's DH stream is secure, or failed."""
        peer = self._peer_hello
        return peer is None or not self._session.dh_under_way(peer.zid, self)

    def _commit_multistream(self, peer: p.Hello, now: float) -> None:
        """Our Multistream Commit (§4.4.3.1, §5.4): a fresh nonce instead of hvi, the DH
        stream's hash, cipher and auth tag where this stream and the phone can use them; no
        DHPart follows, the phone answers with Confirm1."""
        first = self._session.algorithms
        assert first is not None
        cipher, auth = first[1], first[2]
        if not (
            cipher in _with_mandatory(self._ciphers, "ciphers")
            and cipher in _with_mandatory(peer.ciphers, "ciphers")
            and auth in _with_mandatory(self._auth_tags, "auth_tags")
            and auth in _with_mandatory(peer.auth_tags, "auth_tags")
            and SRTP_SUITES[(cipher, auth)] in self._suites()
        ):
            cipher, auth = self._choose_srtp(peer)
        # The SAS type is ignored in Multistream mode (§4.4.3.1): the DH stream's, for the record.
        algorithms = ("S256", cipher, auth, p.MULTISTREAM, first[4])
        nonce = _random(self._random, 16)
        while nonce in self._session.nonces:  # §4.4.3.1: unique among the leg's streams
            nonce = _random(self._random, 16)
        self._session.nonces.add(nonce)
        commit = with_mac(
            p.encode_commit(h2=self._h2, zid=self._settings.zid, algorithms=algorithms, hvi=nonce),
            self._h1,
        )
        self._commit, self._commit_algorithms, self._hvi = commit, algorithms, nonce
        self._multistream = True
        self.initiator = True
        self._state = _State.COMMITTED
        self._send_retransmitted(commit, now)

    def _choose_srtp(self, peer: p.Hello) -> tuple[str, str]:
        """Cipher and auth tag (§4.1.2: the initiator's choice among both Hellos' lists, with
        the mandatory ones each implies). When the leg's policy lists suites, the pair whose
        SRTP suite comes first in the policy's order, as SDES answers and DTLS-SRTP serves;
        otherwise ours in our configured order (AES1 before AES3: with X25519 or DH3k, both
        about 128-bit strong, AES-256 adds nothing, RFC 6189 §5.1.3 pairs AES3 with EC38;
        HS80 before HS32 whatever the peer lists first)."""
        # Our Hello implies the mandatory algorithms as well (§5.2): they are ours to choose too.
        ciphers = _with_mandatory(self._ciphers, "ciphers")
        peer_ciphers = _with_mandatory(peer.ciphers, "ciphers")
        tags = _with_mandatory(self._auth_tags, "auth_tags")
        peer_tags = _with_mandatory(peer.auth_tags, "auth_tags")
        by_suite = {
            SRTP_SUITES[(c, a)]: (c, a)
            for c in ciphers
            if c in peer_ciphers
            for a in tags
            if a in peer_tags and (c, a) in SRTP_SUITES
        }
        for suite in self._policy_order:
            if suite in by_suite:
                return by_suite[suite]
        cipher = _first_common(
            _with_mandatory(self._ciphers, "ciphers"), _with_mandatory(peer.ciphers, "ciphers")
        )
        if cipher is None:
            raise _Abort(0x52, "the peer's Hello has no cipher we can use")
        peer_auth = _with_mandatory(peer.auth_tags, "auth_tags")
        usable = [
            a
            for a in _with_mandatory(self._auth_tags, "auth_tags")
            if SRTP_SUITES[(cipher, a)] in self._suites()
        ]
        auth = _first_common(tuple(usable), peer_auth)
        if auth is None:
            raise _Abort(0x54, "the peer's Hello has no SRTP auth tag we can use")
        return cipher, auth

    def _choose(self, peer: p.Hello) -> tuple[str, str, str, str, str]:
        """The initiator's choice (§4.1.2): ours in our order among the peer's (with the
        mandatory ones it implies); for the key agreement the faster of both first choices."""
        cipher, auth = self._choose_srtp(peer)
        peer_agreements = _with_mandatory(peer.key_agreements, "key_agreements")
        our_agreements = _with_mandatory(self._settings.key_agreements, "key_agreements")
        ours = tuple(k for k in our_agreements if k in peer_agreements)
        theirs = tuple(k for k in peer_agreements if k in our_agreements)
        agreement = None
        if ours and theirs:
            agreement = min((ours[0], theirs[0]), key=lambda k: KEY_AGREEMENTS[k].speed_rank)
        sas = _first_common(
            _with_mandatory(self._settings.sas_types, "sas_types"),
            _with_mandatory(peer.sas_types, "sas_types"),
        )
        for value, code, what in ((agreement, 0x53, "key agreement"), (sas, 0x55, "SAS type")):
            if value is None:
                raise _Abort(code, f"the peer's Hello has no {what} we can use")
        assert agreement and sas
        return ("S256", cipher, auth, agreement, sas)

    def _suites(self) -> set[str]:
        return self._allowed_suites or set(SRTP_SUITES.values())

    def _on_commit(self, raw: bytes, now: float) -> None:
        if self._last_answer is not None and self._last_answer[0] == raw:
            self._send(self._last_answer[1])  # our DHPart1 was lost (§6)
            return
        if self._state not in (_State.DISCOVERY, _State.COMMITTED) or self._peer_hello is None:
            raise _Ignore
        commit = p.parse_commit_untrusted(raw)
        peer = self._peer_hello
        if commit.zid != peer.zid or sha256(commit.h2) != peer.h3:
            raise _Ignore  # not from the peer whose Hello we hold
        if not message_mac_valid(peer.raw, commit.h2):
            raise _Abort(0x10, "the peer's Hello failed its MAC check (H2 from its Commit)")
        if self._state is _State.COMMITTED:
            # §4.2: both committed, before anything in the peer's Commit is judged.
            if commit.multistream != self._multistream:
                raise _Abort(
                    0x20,
                    "both sides committed, one in Multistream mode and one not "
                    "(RFC 6189 §4.2: a software error)",
                )
            # Ours (DH) beats a Preshared one; of two DH Commits the one with the lower hvi is
            # discarded, of two Multistream Commits the one with the lower nonce.
            assert self._hvi is not None
            if not commit.dh_mode and not commit.multistream:
                raise _Ignore  # ours wins: the peer becomes the responder
            if int.from_bytes(self._hvi, "big") > int.from_bytes(commit.hvi, "big"):
                raise _Ignore
        if commit.multistream:
            self._respond_multistream(commit, raw)
            return
        if not commit.dh_mode:
            name = _shown(commit.key_agreement)
            raise _Abort(0x53, f"the peer chose key agreement {name}, not offered")
        if self._state is _State.DISCOVERY:
            self._resolve_across_streams(commit)
        self._check_chosen(commit)
        self._session.claim_dh(self, peer.zid)
        self.initiator = False
        self._waiting = False
        self._retransmission = None
        self._peer_h2 = commit.h2
        self._commit = raw
        self._commit_algorithms = (
            commit.hash, commit.cipher, commit.auth_tag, commit.key_agreement, commit.sas_type,
        )  # fmt: skip
        self._hvi = commit.hvi
        agreement = KEY_AGREEMENTS[commit.key_agreement.strip()]
        self._private = agreement.generate(self._random)
        self._dh_part1 = with_mac(
            p.encode_dh_part(
                p.DH_PART1,
                h1=self._h1,
                secret_ids=self._secret_ids(b"Responder"),
                pv=self._private.public_value,
            ),
            self._h0,
        )
        self._state = _State.DH_PART1_SENT
        self._answer(raw, self._dh_part1)

    def _resolve_across_streams(self, commit: p.Commit) -> None:
        """§4.2: a DH Commit from the peer on this stream while our DH Commit for another
        stream of the leg is out is contention as on one stream: the lower hvi is discarded,
        and the stream whose Commit was discarded waits for the other exchange (then keys
        itself in Multistream mode)."""
        rival = self._session.dh_stream
        if (
            rival is None
            or rival is self
            or rival._peer_hello is None
            or rival._peer_hello.zid != commit.zid
            or rival._state is not _State.COMMITTED
            or rival._multistream
            or rival._hvi is None
        ):
            return
        if int.from_bytes(rival._hvi, "big") > int.from_bytes(commit.hvi, "big"):
            self._waiting = True
            raise _Ignore  # our other stream's Commit wins: this one waits
        rival._withdraw_commit()
        self._session.dh_stream = self

    def _withdraw_commit(self) -> None:
        """Our DH Commit lost to the peer's on another stream of the leg (§4.2): back to
        discovery, waiting for that stream's exchange."""
        self._state = _State.DISCOVERY
        self.initiator = None
        self._retransmission = None
        self._commit = self._commit_algorithms = self._hvi = None
        self._private = None
        self._dh_part2 = None
        self._waiting = True

    def _respond_multistream(self, commit: p.Commit, raw: bytes) -> None:
        """The peer's Multistream Commit (§4.4.3.1): keyed from the leg's ZRTPSess, which must
        be there (the leg's DH stream checked the phone's Confirm), with a nonce never seen on
        the leg; we answer with Confirm1 (no DHPart)."""
        peer = self._peer_hello
        assert peer is not None
        session_key = self._session.session_key(peer.zid)
        if session_key is None:
            raise _Abort(
                0x53,
                "the peer committed in Multistream mode before a DH exchange with it completed "
                "on this leg (RFC 6189 §4.4.3.1: no ZRTP session key)",
            )
        if commit.nonce in self._session.nonces:
            raise _Abort(0x80, "the peer's Multistream Commit reuses a nonce (§4.4.3.1)")
        self._check_chosen(commit, multistream=True)
        self._session.nonces.add(commit.nonce)
        self.initiator = False
        self._multistream = True
        self._waiting = False
        self._retransmission = None
        self._peer_h2 = commit.h2
        self._commit = raw
        self._commit_algorithms = (
            commit.hash, commit.cipher, commit.auth_tag, commit.key_agreement, commit.sas_type,
        )  # fmt: skip
        self._hvi = commit.nonce
        self._derive_multistream(session_key, zid_i=peer.zid, zid_r=self._settings.zid)
        self._confirm = self._make_confirm(p.CONFIRM1)
        self._state = _State.CONFIRM1_SENT
        self._answer(raw, self._confirm)

    def _check_chosen(self, commit: p.Commit, *, multistream: bool = False) -> None:
        """§4.1.2: the initiator's choices must be among those of our Hello (or mandatory). In
        Multistream mode the key agreement is Mult and the SAS type is ignored (§4.4.3.1)."""
        if commit.hash != "S256":
            raise _Abort(0x51, f"the peer chose hash {_shown(commit.hash)}, not offered")
        if commit.cipher not in self._ciphers + MANDATORY["ciphers"]:
            raise _Abort(0x52, f"the peer chose cipher {_shown(commit.cipher)}, not offered")
        if commit.auth_tag not in self._auth_tags + MANDATORY["auth_tags"]:
            raise _Abort(0x54, f"the peer chose auth tag {_shown(commit.auth_tag)}, not offered")
        suite = SRTP_SUITES.get((commit.cipher, commit.auth_tag))
        if suite is None or suite not in self._suites():
            raise _Abort(0x54, f"the peer chose {suite or 'an SRTP suite'}, not allowed here")
        if multistream:
            return
        agreements = self._settings.key_agreements + MANDATORY["key_agreements"]
        if commit.key_agreement not in agreements:
            name = _shown(commit.key_agreement)
            raise _Abort(0x53, f"the peer chose key agreement {name}, not offered")
        if commit.sas_type not in self._settings.sas_types + MANDATORY["sas_types"]:
            raise _Abort(0x55, f"the peer chose SAS type {_shown(commit.sas_type)}, not offered")

    def _on_dh_part1(self, raw: bytes, now: float) -> None:
        if self._state is not _State.COMMITTED or self._peer_hello is None:
            raise _Ignore  # a repeat: our DHPart2 is being retransmitted anyway
        if self._multistream:
            raise _Ignore  # no DHPart in Multistream mode (§4.4.3.1)
        dh_part = p.parse_dh_part_untrusted(raw, p.DH_PART1)
        peer_h2 = sha256(dh_part.h1)
        if sha256(peer_h2) != self._peer_hello.h3:
            raise _Ignore
        if not message_mac_valid(self._peer_hello.raw, peer_h2):
            raise _Abort(0x10, "the peer's Hello failed its MAC check (H2 from its DHPart1)")
        assert self._private is not None and self._commit is not None
        assert self._dh_part2 is not None
        dh_result = self._agree(dh_part.public_value)
        self._peer_h1, self._peer_h2, self._dh_part1 = dh_part.h1, peer_h2, raw
        self._derive(
            dh_result,
            zid_i=self._settings.zid,
            zid_r=self._peer_hello.zid,
            messages=(self._peer_hello.raw, self._commit, raw, self._dh_part2),
            s1=self._shared_secret(dh_part),
        )
        self._state = _State.DH_PART2_SENT
        self._send_retransmitted(self._dh_part2, now)

    def _on_dh_part2(self, raw: bytes) -> None:
        if self._last_answer is not None and self._last_answer[0] == raw:
            self._send(self._last_answer[1])  # our Confirm1 was lost
            return
        if self._state is not _State.DH_PART1_SENT:
            raise _Ignore
        assert self._peer_hello is not None and self._commit is not None
        assert self._dh_part1 is not None and self._hvi is not None
        dh_part = p.parse_dh_part_untrusted(raw, p.DH_PART2)
        if sha256(raw + self._hello) != self._hvi:
            raise _Abort(0x62, "the peer's DHPart2 does not match the hvi of its Commit")
        if sha256(dh_part.h1) != self._peer_h2:
            raise _Abort(0x10, "the peer's H1 does not hash to its H2")
        if not message_mac_valid(self._commit, dh_part.h1):
            raise _Abort(0x10, "the peer's Commit failed its MAC check")
        dh_result = self._agree(dh_part.public_value)
        self._peer_h1, self._dh_part2 = dh_part.h1, raw
        self._derive(
            dh_result,
            zid_i=self._peer_hello.zid,
            zid_r=self._settings.zid,
            messages=(self._hello, self._commit, self._dh_part1, raw),
            s1=self._shared_secret(dh_part),
        )
        self._confirm = self._make_confirm(p.CONFIRM1)
        self._state = _State.CONFIRM1_SENT
        self._answer(raw, self._confirm)

    def _on_confirm1(self, raw: bytes, now: float) -> None:
        if self._multistream and self._state is _State.COMMITTED:
            # §4.4.3.1: Confirm1 answers a Multistream Commit; its keys are derived now.
            assert self._peer_hello is not None
            session_key = self._session.session_key(self._peer_hello.zid)
            assert session_key is not None  # we committed in Multistream mode with it
            self._derive_multistream(
                session_key, zid_i=self._settings.zid, zid_r=self._peer_hello.zid
            )
            self._open_confirm(raw, p.CONFIRM1, None)
        elif self._state is _State.DH_PART2_SENT:
            assert self._dh_part1 is not None
            self._open_confirm(raw, p.CONFIRM1, self._dh_part1)
            self._confirmed()
        else:
            raise _Ignore
        self._confirm = self._make_confirm(p.CONFIRM2)
        self._state = _State.CONFIRM2_SENT
        self._send_retransmitted(self._confirm, now)

    def _on_confirm2(self, raw: bytes) -> None:
        if self._last_answer is not None and self._last_answer[0] == raw:
            self._send(self._last_answer[1])  # our Conf2ACK was lost
            return
        if self._state is not _State.CONFIRM1_SENT:
            raise _Ignore
        self._open_confirm(raw, p.CONFIRM2, self._dh_part2)
        if not self._multistream:
            self._confirmed()
        self._answer(raw, p.message(p.CONF2_ACK))
        self._secure()  # §4.6: the responder may send SRTP once Confirm2 is verified

    def _on_conf2_ack(self) -> None:
        if self._state is not _State.CONFIRM2_SENT:
            raise _Ignore
        self._retransmission = None
        self._secure()

    def _on_error(self, raw: bytes) -> None:
        code = p.parse_error_untrusted(raw)
        if self._state is _State.SECURE:
            raise _Ignore  # an Error after the exchange is over changes nothing (§5.9)
        # Honoured (§4.7): from the source whose Hello matched the peer's a=zrtp-hash
        # (receive_packet_from), or, without a binding, from the SDP address or the source that
        # latched the port (the relay drops any other's: relay.py, _hand_on).
        self._send(p.message(p.ERROR_ACK))
        raise _Abort(None, f"the peer's ZRTP endpoint sent Error {p.describe_error(code)}")

    # -- the exchange's cryptography -------------------------------------------------------------

    def _answer(self, peer_message: bytes, answer: bytes) -> None:
        """Send ``answer`` and keep it for a repeat of ``peer_message`` (§6)."""
        self._last_answer = (peer_message, answer)
        self._send(answer)

    def _secret_ids(self, role: bytes) -> tuple[bytes, bytes, bytes, bytes]:
        """rs1ID, rs2ID, auxsecretID, pbxsecretID of our DHPart (§4.3.1): MACs of the retained
        secrets kept for this phone under our role's name; random values, never zeros, for the
        secrets we do not have (no auxsecret, no pbxsecret: we are no trusted MiTM)."""
        cached = self._cached
        rs1 = mac64(cached.rs1, role) if cached is not None else _random(self._random, 8)
        rs2 = (
            mac64(cached.rs2, role)
            if cached is not None and cached.rs2 is not None
            else _random(self._random, 8)
        )
        return (rs1, rs2, _random(self._random, 8), _random(self._random, 8))

    def _shared_secret(self, peer: p.DhPart) -> bytes:
        """s1 (§4.3): the retained secret both sides hold, or b"" (null). The initiator's rs1
        if it matches the responder's rs1 or rs2, else the initiator's rs2 if it does; the IDs
        the peer sent are MACs under its role's name. Sets :attr:`cache_state`."""
        cached = self._cached
        if self._settings.cache is None:
            return b""
        if cached is None:
            self.cache_state = "new"
            return b""
        peer_role = b"Responder" if self.initiator else b"Initiator"
        ours = [cached.rs1] + ([cached.rs2] if cached.rs2 is not None else [])
        candidates = (
            # We initiate: our rs1 first, then our rs2, against the responder's two IDs.
            [(secret, peer_id) for secret in ours for peer_id in (peer.rs1_id, peer.rs2_id)]
            if self.initiator
            # We respond: the initiator's rs1 first, then its rs2, against our two secrets.
            else [(secret, peer_id) for peer_id in (peer.rs1_id, peer.rs2_id) for secret in ours]
        )
        for secret, peer_id in candidates:
            if hmac.compare_digest(mac64(secret, peer_role), peer_id):
                self.cache_state = "match"
                return secret
        self.cache_state = "mismatch"  # we kept an rs1 and share nothing with the phone
        return b""

    def _agree(self, public_value: bytes) -> bytes:
        assert self._private is not None and self._commit_algorithms is not None
        expected = KEY_AGREEMENTS[self._commit_algorithms[3].strip()].public_value_size
        if len(public_value) != expected:
            raise _Abort(0x61, "the peer's public value has the wrong length")
        try:
            result = self._private.agree(public_value)
        except KeyAgreementError as exc:
            raise _Abort(0x61, f"the peer's public value is unusable ({exc})") from None
        self._private = None  # used once
        return result

    def _derive(
        self,
        dh_result: bytes,
        *,
        zid_i: bytes,
        zid_r: bytes,
        messages: tuple[bytes, ...],
        s1: bytes,
    ) -> None:
        """§4.4.1.4 and §4.5.3: s0 from the DH result, the exchange's messages and the shared
        retained secret ``s1``, then every key from s0 (s2 and s3 are null: no auxsecret, no
        pbxsecret)."""
        assert self._commit_algorithms is not None
        total_hash = sha256(*messages)
        context = zid_i + zid_r + total_hash
        s0 = s0_dh_mode(
            dh_result, zid_i=zid_i, zid_r=zid_r, total_hash=total_hash, secrets=(s1, b"", b"")
        )
        key_bits = CIPHER_KEY_BITS[self._commit_algorithms[1]]
        self._keys = _Keys(
            srtp_key_i=kdf(s0, b"Initiator SRTP master key", context, key_bits),
            srtp_salt_i=kdf(s0, b"Initiator SRTP master salt", context, SRTP_SALT_BITS),
            srtp_key_r=kdf(s0, b"Responder SRTP master key", context, key_bits),
            srtp_salt_r=kdf(s0, b"Responder SRTP master salt", context, SRTP_SALT_BITS),
            mac_key_i=kdf(s0, b"Initiator HMAC key", context, 256),
            mac_key_r=kdf(s0, b"Responder HMAC key", context, 256),
            zrtp_key_i=kdf(s0, b"Initiator ZRTP key", context, key_bits),
            zrtp_key_r=kdf(s0, b"Responder ZRTP key", context, key_bits),
            sashash=kdf(s0, b"SAS", context, 256),
            retained=kdf(s0, b"retained secret", context, 256),
            session_key=zrtp_session_key(s0, context),
        )

    def _derive_multistream(self, session_key: bytes, *, zid_i: bytes, zid_r: bytes) -> None:
        """§4.4.3.2 and §4.5.3: s0 from the leg's ZRTPSess and this stream's responder Hello
        and Commit, then this stream's SRTP, MAC and ZRTP keys (no SAS, no retained secret)."""
        assert self._commit_algorithms is not None and self._peer_hello is not None
        assert self._commit is not None
        hello_responder = self._peer_hello.raw if self.initiator else self._hello
        s0 = s0_multistream(
            session_key,
            zid_i=zid_i,
            zid_r=zid_r,
            hello_responder=hello_responder,
            commit=self._commit,
        )
        context = zid_i + zid_r + sha256(hello_responder, self._commit)
        key_bits = CIPHER_KEY_BITS[self._commit_algorithms[1]]
        self._keys = _Keys(
            srtp_key_i=kdf(s0, b"Initiator SRTP master key", context, key_bits),
            srtp_salt_i=kdf(s0, b"Initiator SRTP master salt", context, SRTP_SALT_BITS),
            srtp_key_r=kdf(s0, b"Responder SRTP master key", context, key_bits),
            srtp_salt_r=kdf(s0, b"Responder SRTP master salt", context, SRTP_SALT_BITS),
            mac_key_i=kdf(s0, b"Initiator HMAC key", context, 256),
            mac_key_r=kdf(s0, b"Responder HMAC key", context, 256),
            zrtp_key_i=kdf(s0, b"Initiator ZRTP key", context, key_bits),
            zrtp_key_r=kdf(s0, b"Responder ZRTP key", context, key_bits),
        )

    def _confirmed(self) -> None:
        """The DH exchange's Confirm from the phone checked: both sides hold ZRTPSess, the
        leg's from now on if this is its DH stream (a Multistream Commit may come for another
        stream, §4.4.3.1)."""
        keys, peer, algorithms = self._keys, self._peer_hello, self._commit_algorithms
        assert keys is not None and keys.session_key is not None and peer is not None
        assert algorithms is not None and keys.sashash is not None
        sas = render_sas(algorithms[4], keys.sashash)
        self._session.confirmed(self, peer.zid, keys.session_key, algorithms, sas)

    def _make_confirm(self, message_type: bytes) -> bytes:
        """Our Confirm (§5.7): H0, flags (no enrollment, SAS not verified: we have no user to
        verify it, no GoClear; Disclosure as configured, §11), cache expiration "forever" with
        a cache and 0 (keep no secret of ours) without, encrypted then MACed with our role's
        keys."""
        keys = self._keys
        assert keys is not None
        zrtp_key, mac_key = (
            (keys.zrtp_key_i, keys.mac_key_i)
            if self.initiator
            else (keys.zrtp_key_r, keys.mac_key_r)
        )
        iv = _random(self._random, 16)
        encrypted = cfb_encrypt(
            zrtp_key,
            iv,
            p.confirm_plaintext(
                self._h0,
                flags=p.CONFIRM_D if self._settings.disclosure else 0,
                # §5.7: 0xffffffff in Multistream mode, ignored (the cache is not touched).
                cache_expiration=FOREVER if self._multistream else self._our_cache_expiration,
            ),
        )
        return p.encode_confirm(
            message_type, confirm_mac=mac64(mac_key, encrypted), iv=iv, encrypted=encrypted
        )

    def _open_confirm(self, raw: bytes, message_type: bytes, peer_dh_part: bytes | None) -> bytes:
        """Check the peer's Confirm (§4.5.4, §5.7): its MAC, then that its H0 hashes to the
        peer's H1 and checks the MAC of the peer's DHPart. In Multistream mode, with no DHPart,
        the missing hash images are computed (§9): the responder's H0 must hash to the H3 of
        its Hello, whose MAC its H2 checks; the initiator's to the H2 of its Commit, whose MAC
        its H1 checks. The peer's H0."""
        keys = self._keys
        assert keys is not None
        zrtp_key, mac_key = (
            (keys.zrtp_key_r, keys.mac_key_r)
            if self.initiator
            else (keys.zrtp_key_i, keys.mac_key_i)
        )
        confirm = p.parse_confirm_untrusted(raw, message_type)
        if not hmac.compare_digest(mac64(mac_key, confirm.encrypted), confirm.confirm_mac):
            # Both sides derived different keys: a man in the middle, or a broken peer.
            raise _Abort(0x70, "the peer's Confirm failed its MAC check (different keys)")
        content = p.parse_confirm_plaintext_untrusted(
            cfb_decrypt(zrtp_key, confirm.iv, confirm.encrypted)
        )
        if self._multistream:
            self._check_multistream_chain(content.h0)
        else:
            assert peer_dh_part is not None and self._peer_h1 is not None
            if sha256(content.h0) != self._peer_h1:
                raise _Abort(0x70, "the peer's H0 does not hash to its H1")
            if not message_mac_valid(peer_dh_part, content.h0):
                raise _Abort(0x70, "the peer's DHPart failed its MAC check")
            self._peer_cache_expiration = content.cache_expiration
        self.zrtp_peer_disclosure = "yes" if content.flags & p.CONFIRM_D else "no"
        return content.h0

    def _check_multistream_chain(self, h0: bytes) -> None:
        peer = self._peer_hello
        assert peer is not None and self._commit is not None
        h1 = sha256(h0)
        h2 = sha256(h1)
        if self.initiator:
            if sha256(h2) != peer.h3:
                raise _Abort(0x70, "the peer's H0 does not hash to the H3 of its Hello")
            if not message_mac_valid(peer.raw, h2):
                raise _Abort(0x70, "the peer's Hello failed its MAC check (H2 from its H0)")
        else:
            if h2 != self._peer_h2:
                raise _Abort(0x70, "the peer's H0 does not hash to the H2 of its Commit")
            if not message_mac_valid(self._commit, h1):
                raise _Abort(0x70, "the peer's Commit failed its MAC check")

    def _secure(self) -> None:
        keys = self._keys
        assert keys is not None and self._commit_algorithms is not None
        _, cipher, auth, _, sas_type = self._commit_algorithms
        initiator_key = keys.srtp_key_i + keys.srtp_salt_i
        responder_key = keys.srtp_key_r + keys.srtp_salt_r
        # §4.6: each side protects what it sends with its role's key.
        local, remote = (
            (initiator_key, responder_key) if self.initiator else (responder_key, initiator_key)
        )
        self.srtp_keys = SrtpKeys(SRTP_SUITES[(cipher, auth)], local, remote)
        self._state = _State.SECURE
        self._retransmission = None
        self._deadline = None
        self._events.append(KeysReady(self.srtp_keys))
        if self._multistream:
            # §4.5.2: one SAS per call, the DH stream's; nothing for the phone to compare
            # again, and the cache is neither used nor updated (§4.4.3).
            self.sas = self._session.sas
            return
        assert keys.sashash is not None and keys.retained is not None
        self.sas = render_sas(sas_type, keys.sashash)
        self._session.established(self)
        alarm = None
        if self.cache_state == "mismatch":
            alarm = (
                "ZRTP cache mismatch: the secret kept from this phone's earlier calls did not "
                "match (a possible man in the middle, or the phone lost its cache)"
            )
        self._events.append(SasReady(self.sas, verified=False, alarm=alarm))
        self._update_cache(keys.retained)

    @property
    def _our_cache_expiration(self) -> int:
        return FOREVER if self._settings.cache is not None else 0

    def _update_cache(self, retained: bytes) -> None:
        """§4.6.1: after a good exchange in DH mode, rs2 = the old rs1 and rs1 = the new
        retained secret, kept for the shorter of both sides' expiration intervals (0 on either
        side: nothing kept, and what was kept is forgotten).

        On a cache mismatch RFC 6189 §4.6.1.1 delays the update until the user has compared
        the SAS. The gateway has no user to do that, so it raises the alarm in the call's
        record and then keeps the new secret: a phone that lost its cache alarms once, not on
        every later call; an attacker in the middle of one call is found on the next call that
        is not."""
        cache, peer = self._settings.cache, self._peer_hello
        if cache is None or peer is None:
            return
        expires_in = min(self._our_cache_expiration, self._peer_cache_expiration)
        old_rs1 = self._cached.rs1 if self._cached is not None else None
        cache.store(peer.zid, retained, rs2=old_rs1, expires_in=expires_in)

    def _fail(self, reason: str) -> None:
        if self._state is _State.FAILED:
            return
        self._state = _State.FAILED
        self._retransmission = None
        self._deadline = None
        self._hello_pending = False
        self._private = None
        self.failure = NegotiationFailed(f"ZRTP: {reason}")
        self._events.append(self.failure)


def _random(random_bytes: RandomBytes, size: int) -> bytes:
    value = random_bytes(size)
    if not isinstance(value, bytes) or len(value) != size:
        raise ValueError(f"the random source did not return {size} octets")
    return value


def _shown(name: str) -> str:
    """An algorithm name from the peer, fit for a reason: quoted if it is a plain 4-character
    block, else not shown (it is the peer's bytes)."""
    if re.fullmatch(r"[A-Za-z0-9 ]{4}", name):
        return repr(name.strip())
    return "(an unreadable name)"


def _with_mandatory(names: tuple[str, ...], kind: str) -> tuple[str, ...]:
    """A Hello's list with the mandatory algorithms it implies appended (§5.2)."""
    return names + tuple(name for name in MANDATORY[kind] if name not in names)


def _first_common(ours: tuple[str, ...], theirs: tuple[str, ...]) -> str | None:
    return next((name for name in ours if name in theirs), None)


def _suites_of(
    ciphers: str | tuple[str, ...], auth_tags: tuple[str, ...], allowed: set[str]
) -> bool:
    """Whether some cipher x auth tag combination makes an SRTP suite ``allowed`` (all when
    the policy names none)."""
    cipher_list = (ciphers,) if isinstance(ciphers, str) else ciphers
    for cipher in cipher_list:
        for auth in auth_tags:
            suite = SRTP_SUITES.get((cipher, auth))
            if suite is not None and (not allowed or suite in allowed):
                return True
    return False
