"""The MIKEY exchange of one media stream on one leg (``interfaces.KeyNegotiation``), sans-IO.

Theory of operation
-------------------
MIKEY (RFC 3830) travels in SDP as ``a=key-mgmt:mikey <base64>`` (RFC 4567 §3): the offer
carries the initiator's message (I_MSG), the answer the responder's (R_MSG) when there is one.
Three modes, all "the initiator decides" (no choosing among alternatives, unlike SDES):

========  ==========================================  ==========================================
mode      I_MSG (offer)                               R_MSG (answer)
========  ==========================================  ==========================================
null      PSK_INIT, T, RAND, SP, KEMAC with NULL      none (V bit clear). The keys are in clear
          encryption and NULL MAC                     in the SDP: TLS signalling only, as SDES
psk       PSK_INIT(V), T, RAND, SP, KEMAC encrypted   PSK_RESP, T, V = HMAC(auth_key, R_MSG ||
          (AES-CM-128 or AES-KW-128) + HMAC-SHA-1     T of I_MSG) when the V bit asks for it
dh-hmac   DHHMAC_INIT, T, RAND, SP, DHi, KEMAC (NULL  DHHMAC_RESP, T, DHr, DHi, KEMAC (MAC);
          encryption, HMAC-SHA-1 over the message)    TGK = g^(xi*xr) (RFC 4650)
========  ==========================================  ==========================================

The KEMAC keys (encr_key, auth_key, salt) come from the account's or trunk's pre-shared key
(RFC 3830 §4.1.4) in psk and dh-hmac modes. Public-key (PK), DH-sign and RSA-R messages are
refused with a 488 saying so.

Crypto sessions: our I_MSG has two, in an SRTP-ID map with SSRC 0 and ROC 0 (the gateway relays
the other leg's SSRCs and cannot know them in advance): cs_id 1 keys what the offerer sends,
cs_id 2 what the answerer sends (a cs_id is a crypto session's 1-based place in the map:
minisip's numbering, unverified against RFC 3830 §4.1.3). Their SRTP master key and salt come
from one TGK through the PRF (§4.1.3), or (``"gstreamer"`` style) travel as two TEK key data,
each master key || salt in one field as GStreamer writes them. An offer with one crypto session
(GStreamer, most RTSP-style peers) keys both directions with its one key: SRTP allows one
master key for several SSRCs (RFC 3711 §8.1) as long as their SSRCs differ. An offer with no
crypto session at all (GStreamer's ``new_from_caps`` before ``add_cs_srtp``) is read as one.
More than two are refused: which of them belong to this m= line cannot be told.

Every received message is bounded-parsed (``payloads``); in psk and dh-hmac modes the MAC is
checked before anything else is believed, then its T must be within the clock skew and not seen
before (``replay``; our own psk and dh-hmac I_MSGs count as seen, so one reflected back to us is
refused: its MAC, made with the same key, would pass). Failures are
``NegotiationFailed(reason, 488)`` (and a raised :class:`MikeyError` from
``remote_sdp_attributes``); no reason or ``repr`` contains key material.

Re-offers (our choice: RFC 4567's text on re-INVITEs was not available; unverified): a
re-offer that keeps the stream repeats our I_MSG byte for byte and an answer to a repeated I_MSG
repeats our R_MSG, so the keys and the SRTP contexts (with their packet indices) go on; anything
else is a new exchange with fresh keys, so a key never sees its packet index restart.
"""

from __future__ import annotations

import base64
import binascii
import enum
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import NoReturn

import attrs

from gateway.core.interfaces import (
    KeyNegotiationEvent,
    KeysReady,
    NegotiationFailed,
    SrtpKeys,
)
from gateway.core.media.srtp import SUITES, SUPPORTED_SUITES
from gateway.plugins.keyexchange.mikey import crypto
from gateway.plugins.keyexchange.mikey.payloads import (
    ENCR_AES_CM_128,
    ENCR_AES_KW_128,
    ENCR_NULL,
    KEY_TEK,
    KEY_TEK_SALT,
    KEY_TGK,
    KV_NULL,
    MAC_HMAC_SHA1_160,
    MAC_LENGTHS,
    MAC_NULL,
    MAX_MESSAGE_SIZE,
    TS_COUNTER,
    DataType,
    DhValue,
    ErrorPayload,
    Header,
    Kemac,
    KeyData,
    LocalMikeyError,
    Message,
    MikeyError,
    Payload,
    Rand,
    SecurityPolicy,
    SrtpCs,
    Timestamp,
    Verification,
    encode_key_data,
    encode_message,
    parse_key_data_untrusted,
    parse_message_untrusted,
)
from gateway.plugins.keyexchange.mikey.policy import policy_for_suite, suite_of_policy
from gateway.plugins.keyexchange.mikey.replay import ReplayCache

__all__ = [
    "DEFAULT_OFFER_SUITES",
    "MODES",
    "MODE_RECORD",
    "TLS_REQUIRED_REASON",
    "MikeyNegotiation",
    "MikeySettings",
    "keymgmt_value",
    "mikey_message_of",
]

RandomBytes = Callable[[int], bytes]
Clock = Callable[[], float]
PskLookup = Callable[[], "tuple[bytes | None, str]"]

MODES = ("null", "psk", "dh-hmac")
MODE_RECORD = {
    "null": "mikey-null (keys protected by TLS)",
    "psk": "mikey-psk",
    "dh-hmac": "mikey-dhhmac",
}
"""What the security record says of each mode."""
TLS_REQUIRED_REASON = (
    "MIKEY with NULL KEMAC encryption carries the keys in clear: it is only sent and accepted "
    "over TLS-protected signalling (like SDES, RFC 4568 §8.1)"
)
DEFAULT_OFFER_SUITES = ("AES_CM_128_HMAC_SHA1_80",)
"""What we offer when the leg's policy lists no suites (the §6.10.1 default profile, the one
every MIKEY implementation takes)."""
MAX_KEYMGMT_LENGTH = 4 * (MAX_MESSAGE_SIZE // 3 + 1) + 16
MAX_VERIFIED_ANSWERS = 8
"""The peers' answers to one I_MSG a negotiation remembers as checked (``_verified_answers``):
forked phones answer one offer each, a handful at most (as ``MAX_SDP_KEYED_TAGS``)."""
TGK_LENGTH = 32  # 256 bits: as strong as the strongest suite's key
RAND_LENGTH = 16  # RFC 3830 §6.11: at least 128 bits (what we send and the least we take)
_ERROR_NAMES = {
    0: "authentication failure",
    1: "invalid timestamp",
    2: "invalid PRF",
    3: "invalid MAC",
    4: "invalid encryption algorithm",
    5: "invalid hash algorithm",
    6: "invalid DH group",
    7: "invalid ID",
    8: "invalid certificate",
    9: "invalid SP",
    10: "invalid SP parameter",
    11: "invalid data type",
    12: "unspecified error",
}
_REFUSED_TYPES = {
    DataType.PK_INIT: "the public-key mode (PK, RFC 3830 §3.2)",
    DataType.DH_INIT: "the signed Diffie-Hellman mode (DH-sign, RFC 3830 §3.3)",
    DataType.RSA_R_INIT: "the RSA-R mode (RFC 4738)",
}


@attrs.frozen
class MikeySettings:
    """What the plugin's configuration decides for every negotiation."""

    offer_modes: tuple[str, ...] = ("null",)
    accept_modes: tuple[str, ...] = MODES
    kemac_encryption: int = ENCR_AES_CM_128
    request_verification: bool = True
    dh_group: int = 0
    style: str = "standard"  # "standard": TGK + PRF; "gstreamer": TEK key||salt, SP param 3 = tag
    max_message_size: int = MAX_MESSAGE_SIZE


def keymgmt_value(message: bytes) -> str:
    """The value of ``a=key-mgmt`` for a MIKEY message (RFC 4567 §3.1)."""
    return "mikey " + base64.b64encode(message).decode("ascii")


def mikey_message_of(
    attributes: Iterable[tuple[str, str | None]], *, max_length: int = MAX_KEYMGMT_LENGTH
) -> bytes | None:
    """The MIKEY message of the first ``a=key-mgmt:mikey`` among ``attributes`` (a media
    section's, then its session's: the first one wins, RFC 4567 §4), or None. Raises
    :class:`MikeyError` for one that is not base64 or too long."""
    for name, value in attributes:
        if name.lower() != "key-mgmt" or value is None:
            continue
        protocol, _, data = value.strip().partition(" ")
        if protocol.lower() != "mikey":
            continue  # RFC 4567 §3.1: another key management protocol
        data = data.strip()
        if len(data) > max_length:
            raise MikeyError(f"a=key-mgmt is longer than {max_length} characters")
        try:
            return base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise MikeyError("a=key-mgmt:mikey data is not valid base64") from None
    return None


@attrs.frozen(repr=False)
class _Context:
    """What our I_MSG was made with (kept to check and complete the answer). Secret: no repr."""

    mode: str
    suite: str
    message: bytes
    csb_id: int
    rand: bytes
    timestamp: bytes
    psk: bytes | None = None
    tgk: bytes | None = None
    teks: tuple[bytes, ...] = ()
    dh_private: bytes | None = None
    dh_public: bytes | None = None
    v: bool = False


class _State(enum.Enum):
    OFFERED = "offered"
    ESTABLISHED = "established"
    FAILED = "failed"


@attrs.define(eq=False, repr=False)
class MikeyNegotiation:
    """MIKEY for one media stream on one leg, created by the plugin's ``MikeyKeyExchange``.
    ``role`` is "offerer" or "answerer"."""

    role: str
    settings: MikeySettings
    _random_bytes: RandomBytes
    _clock: Clock
    _replay: ReplayCache
    _state: _State = _State.OFFERED
    mode: str | None = None
    suite: str | None = None
    _context: _Context | None = None
    _offer_message: bytes | None = None
    """The I_MSG this exchange is about (ours or the peer's)."""
    _answer_message: bytes | None = None
    """The R_MSG (ours or the peer's), None when the mode has none."""
    _keys: SrtpKeys | None = None
    _verified_answers: dict[bytes | None, SrtpKeys] = attrs.Factory(dict)
    """The peers' answers (None: no a=key-mgmt) to our I_MSG once checked, and their keys, at
    most :data:`MAX_VERIFIED_ANSWERS`, oldest first: each R_MSG's T is in the replay cache
    from its check on, so an answer checked before (a forked phone's 183 then its 200, our
    re-offer's answer repeated) is taken from here, not refused as a replay of itself."""
    _failure: NegotiationFailed | None = None
    _events: deque[KeyNegotiationEvent] = attrs.Factory(deque)

    def __repr__(self) -> str:
        return (
            f"<MikeyNegotiation {self.role} {self._state.value} mode={self.mode} "
            f"suite={self.suite}>"
        )

    # -- what the core and the plugin read -------------------------------------------------------

    @property
    def state(self) -> str:
        return self._state.value

    @property
    def keys(self) -> SrtpKeys | None:
        return self._keys

    @property
    def failure(self) -> NegotiationFailed | None:
        return self._failure

    def security_record(self) -> dict[str, str | None]:
        """``mikey_mode`` for the leg's security record: how the keys were protected."""
        if self.mode is None or self._state is _State.FAILED:
            return {}
        record: dict[str, str | None] = {"mikey_mode": MODE_RECORD[self.mode]}
        if self.mode == "dh-hmac":
            record["mikey_dh_group"] = crypto.DH_GROUP_NAMES[self.settings.dh_group]
        return record

    # -- interfaces.KeyNegotiation ---------------------------------------------------------------

    def local_sdp_attributes(self) -> list[tuple[str, str | None]]:
        """Our ``a=key-mgmt``: the I_MSG of an offer, the R_MSG of an answer when the mode has
        one; nothing once failed."""
        if self._state is _State.FAILED:
            return []
        message = self._offer_message if self.role == "offerer" else self._answer_message
        return [("key-mgmt", keymgmt_value(message))] if message else []

    def remote_sdp_attributes(self, attributes: Iterable[tuple[str, str | None]]) -> None:
        """The peer's answer to our offer. Raises :class:`MikeyError` when it is unacceptable,
        after queuing the same reason as ``NegotiationFailed``."""
        if self.role != "offerer":
            raise LocalMikeyError("an answering MIKEY negotiation takes its offer in answer()")
        if self._state is _State.FAILED:
            return
        context = self._context
        assert context is not None
        try:
            received = mikey_message_of(attributes)
            keys = self._verified(context, received)
        except MikeyError as exc:
            self._fail_and_raise(f"the answer's {exc.reason}")
        self._answer_message = received
        self._establish(keys)

    def check_remote_sdp_attributes(
        self, attributes: Iterable[tuple[str, str | None]]
    ) -> str | None:
        """Why :meth:`remote_sdp_attributes` would refuse the peer's answer, or None, binding
        nothing (``interfaces.KeyNegotiation``'s optional check; docs/plugin_hooks.md). The
        core checks each line of an answer so and gives it to :meth:`remote_sdp_attributes`
        only once it took the whole answer: a forked phone's refused 183 leaves this
        negotiation as it was for another phone's answer to the same offer (RFC 3261 §16.7),
        which is read on its own merits. The answer checked is remembered with its keys (its
        T is in the replay cache now, RFC 3830 §5.4), so taking it later is no replay."""
        if self.role != "offerer":
            raise LocalMikeyError("an answering MIKEY negotiation takes its offer in answer()")
        if self._state is _State.FAILED:
            return None  # remote_sdp_attributes does nothing on it
        context = self._context
        assert context is not None
        try:
            self._verified(context, mikey_message_of(attributes))
        except MikeyError as exc:
            return f"the answer's {exc.reason}"
        return None

    def _verified(self, context: _Context, received: bytes | None) -> SrtpKeys:
        """The keys of the peer's answer ``received`` (None: no a=key-mgmt) to our I_MSG,
        checked once (MAC, then freshness) and remembered; raises :class:`MikeyError`."""
        keys = self._verified_answers.get(received)
        if keys is not None:
            return keys
        keys = self._complete(context, received)
        if len(self._verified_answers) >= MAX_VERIFIED_ANSWERS:
            # Bounded (STYLE.md habit 7): a stream of 183s from ever new forks must not grow it.
            del self._verified_answers[next(iter(self._verified_answers))]
        self._verified_answers[received] = keys
        return keys

    def claims_packet(self, first_byte: int, packet: bytes) -> bool:
        """Always False: MIKEY in SDP carries nothing on the media path."""
        return False

    def receive_packet(self, packet: bytes, *, now: float) -> None:
        """Never called (:meth:`claims_packet` is always False)."""

    def packets_to_send(self, *, now: float) -> list[bytes]:
        return []

    def get_timer(self) -> float | None:
        return None

    def handle_timer(self, *, now: float) -> None:
        """No timers."""

    def next_event(self) -> KeyNegotiationEvent | None:
        return self._events.popleft() if self._events else None

    # -- the offerer ------------------------------------------------------------------------------

    def start_offer(self, mode: str, suite: str, psk: bytes | None) -> None:
        """Make our I_MSG in ``mode`` for ``suite`` (the plugin has checked both apply)."""
        settings = self.settings
        csb_id = int.from_bytes(self._random(4), "big")
        rand = self._random(RAND_LENGTH)
        stamp = Timestamp.ntp_utc(self._clock())
        cs = (SrtpCs(0), SrtpCs(0))  # cs_id 1: what the offerer sends; 2: what the answerer sends
        policy = policy_for_suite(suite, 0, settings.style)
        if mode == "dh-hmac":
            assert psk is not None
            private = self._random(crypto.DH_EXPONENT_LENGTH)
            public = crypto.dh_public(settings.dh_group, private)
            header = Header(DataType.DHHMAC_INIT, csb_id, cs)
            payloads: list[Payload] = [
                stamp,
                Rand(rand),
                policy,
                DhValue(settings.dh_group, public),
                Kemac(ENCR_NULL, b"", MAC_HMAC_SHA1_160, bytes(20)),
            ]
            _, auth_key, _ = crypto.kemac_keys(psk, csb_id, rand)
            message = _with_mac(encode_message(header, payloads), auth_key)
            self._context = _Context(
                mode, suite, message, csb_id, rand, stamp.value, psk,
                dh_private=private, dh_public=public,
            )  # fmt: skip
        else:
            tgk: bytes | None = None
            teks: tuple[bytes, ...] = ()
            if settings.style == "gstreamer":
                length = SUITES[suite].key_salt_length
                teks = (self._random(length), self._random(length))
                plain = encode_key_data([KeyData(KEY_TEK, tek) for tek in teks])
            else:
                tgk = self._random(TGK_LENGTH)
                plain = encode_key_data([KeyData(KEY_TGK, tgk)])
            v = mode == "psk" and settings.request_verification
            header = Header(DataType.PSK_INIT, csb_id, cs, v=v)
            if mode == "null":
                kemac = Kemac(ENCR_NULL, plain, MAC_NULL)
                message = encode_message(header, [stamp, Rand(rand), policy, kemac])
            else:
                assert psk is not None
                encr_key, auth_key, salt = crypto.kemac_keys(psk, csb_id, rand)
                alg = settings.kemac_encryption
                data = crypto.kemac_encrypt(alg, encr_key, salt, csb_id, stamp.value, plain)
                kemac = Kemac(alg, data, MAC_HMAC_SHA1_160, bytes(20))
                message = encode_message(header, [stamp, Rand(rand), policy, kemac])
                message = _with_mac(message, auth_key)
            self._context = _Context(
                mode, suite, message, csb_id, rand, stamp.value, psk, tgk=tgk, teks=teks, v=v
            )
        if mode != "null":
            # Our authenticated I_MSG must never be taken for the peer's: sent back to us in an
            # offer, its MAC (the same pre-shared key) and its T would pass. Remembered as seen,
            # it is refused as a replay (RFC 3830 §5.4), as a reflection should be.
            now = self._clock()
            self._replay.remember_own(self._context.message, stamp.unix_time() or now, now=now)
        self.mode, self.suite = mode, suite
        self._offer_message = self._context.message

    def repeat_offer(self, previous: MikeyNegotiation) -> None:
        """A re-offer keeping ``previous``'s exchange: the same I_MSG, the keys in force."""
        assert previous._context is not None
        self._context = previous._context
        self._offer_message = previous._offer_message
        self.mode, self.suite = previous.mode, previous.suite
        self._keys = previous._keys
        self._verified_answers = dict(previous._verified_answers)

    def _complete(self, context: _Context, received: bytes | None) -> SrtpKeys:
        """Check the peer's R_MSG (None: no a=key-mgmt) and return the keys."""
        message: Message | None = None
        if received is not None:
            message = parse_message_untrusted(received, max_length=self.settings.max_message_size)
            error = message.first(ErrorPayload)
            if message.header.data_type == DataType.ERROR or error is not None:
                number = error.error_no if error is not None else 12
                raise MikeyError(
                    f"MIKEY message is an error: {number} ({_ERROR_NAMES.get(number, 'unknown')})"
                )
            if message.header.csb_id != context.csb_id:
                raise MikeyError("MIKEY response has another CSB ID than our message")
        if context.mode == "dh-hmac":
            if message is None:
                raise MikeyError("a=key-mgmt is missing: a DH-HMAC exchange needs a response")
            return self._complete_dh(context, message)
        if message is not None and message.header.data_type != DataType.PSK_RESP:
            raise MikeyError(f"MIKEY data type {message.header.data_type} is not a PSK response")
        if context.v:
            if message is None:
                raise MikeyError("a=key-mgmt is missing: our message asked for verification")
            self._check_verification(context, message)
        return self._offer_keys(context)

    def _check_verification(self, context: _Context, message: Message) -> None:
        verification = message.first(Verification)
        if verification is None or verification.alg != MAC_HMAC_SHA1_160:
            raise MikeyError("MIKEY response has no HMAC-SHA-1 verification (V) payload")
        if message.payloads[-1] is not verification:
            raise MikeyError("MIKEY V payload is not the last payload")
        assert context.psk is not None
        _, auth_key, _ = crypto.kemac_keys(context.psk, context.csb_id, context.rand)
        # RFC 3830 §5.2 (as minisip computes it): MAC over R_MSG without the MAC, then T_i.
        signed = message.raw[: -len(verification.mac)] + context.timestamp
        if not crypto.mac_valid(MAC_HMAC_SHA1_160, auth_key, signed, verification.mac):
            raise MikeyError("MIKEY verification MAC is wrong (another pre-shared key?)")
        self._fresh(message)

    def _complete_dh(self, context: _Context, message: Message) -> SrtpKeys:
        if message.header.data_type != DataType.DHHMAC_RESP:
            raise MikeyError(
                f"MIKEY data type {message.header.data_type} is not a DH-HMAC response"
            )
        assert context.psk is not None and context.dh_private is not None
        _, auth_key, _ = crypto.kemac_keys(context.psk, context.csb_id, context.rand)
        _check_kemac_mac(message, auth_key)
        values = message.all(DhValue)
        if len(values) != 2 or values[1].value != context.dh_public:
            raise MikeyError("MIKEY DH-HMAC response does not carry DHr then our DHi")
        if values[0].group != self.settings.dh_group:
            raise MikeyError("MIKEY DH-HMAC response changes the DH group", error_no=6)
        self._fresh(message)
        tgk = crypto.dh_shared(values[0].group, context.dh_private, values[0].value)
        return _derived_keys(context.suite, tgk, 2, context.csb_id, context.rand, "offerer")

    def _offer_keys(self, context: _Context) -> SrtpKeys:
        if context.tgk is not None:
            return _derived_keys(
                context.suite, context.tgk, 2, context.csb_id, context.rand, "offerer"
            )
        return SrtpKeys(context.suite, local_key=context.teks[0], remote_key=context.teks[1])

    # -- the answerer -----------------------------------------------------------------------------

    def take_offer(
        self,
        received: bytes,
        *,
        secure_signalling: bool,
        allowed: Sequence[str],
        psk_for_leg: PskLookup,
        previous: MikeyNegotiation | None,
    ) -> None:
        """Answer the peer's I_MSG: queue ``KeysReady`` or ``NegotiationFailed``."""
        self._offer_message = received
        if (
            previous is not None
            and previous._state is _State.ESTABLISHED
            and previous.role == "answerer"
            and previous._offer_message == received
        ):
            # The same I_MSG again (a re-INVITE): the same answer, the keys go on.
            self.mode, self.suite = previous.mode, previous.suite
            self._answer_message = previous._answer_message
            self._keys = previous._keys
            self._state = _State.ESTABLISHED
            return
        if previous is not None and previous._keys is not None:
            self._keys = previous._keys  # unchanged keys keep the SRTP context
        try:
            message = parse_message_untrusted(received, max_length=self.settings.max_message_size)
            keys = self._answer(message, secure_signalling, allowed, psk_for_leg)
        except MikeyError as exc:
            self._fail(exc.reason)
            return
        self._establish(keys)

    def _answer(
        self,
        message: Message,
        secure_signalling: bool,
        allowed: Sequence[str],
        psk_for_leg: PskLookup,
    ) -> SrtpKeys:
        header = message.header
        kind = header.data_type
        if kind in _REFUSED_TYPES:
            raise MikeyError(f"MIKEY offer uses {_REFUSED_TYPES[DataType(kind)]}: not supported")
        kemac = message.first(Kemac)
        if kind == DataType.PSK_INIT:
            if kemac is None:
                raise MikeyError("MIKEY PSK message has no KEMAC")
            null = kemac.encr_alg == ENCR_NULL and kemac.mac_alg == MAC_NULL
            mode = "null" if null else "psk"
        elif kind == DataType.DHHMAC_INIT:
            mode = "dh-hmac"
        else:
            raise MikeyError(f"MIKEY data type {kind} is not an initiator's message", error_no=11)
        self.mode = mode
        if mode not in self.settings.accept_modes:
            raise MikeyError(f"MIKEY {MODE_RECORD[mode]} is not accepted here")
        if mode == "null" and not secure_signalling:
            raise MikeyError(TLS_REQUIRED_REASON)
        clear = mode == "psk" and kemac is not None and kemac.encr_alg == ENCR_NULL
        if clear and not secure_signalling:
            # Authenticated but not encrypted: the keys are in clear in the SDP, as in null mode.
            raise MikeyError(TLS_REQUIRED_REASON)
        stamp = message.first(Timestamp)
        rand = message.first(Rand)
        if stamp is None or rand is None:
            raise MikeyError("MIKEY offer lacks its T or RAND payload")
        if stamp.ts_type == TS_COUNTER:
            raise MikeyError("MIKEY COUNTER timestamps are not supported", error_no=1)
        if len(rand.value) < RAND_LENGTH:
            # §6.11: RAND SHOULD be at least 128 bits; it is the only fresh input of every key
            # derivation (§4.1.3, §4.1.4), so a shorter one is refused rather than trusted.
            raise MikeyError(
                f"MIKEY RAND is {len(rand.value)} octets; at least {RAND_LENGTH} are required "
                "(RFC 3830 §6.11)"
            )
        cs_count = max(1, len(header.cs))
        if cs_count > 2:
            raise MikeyError(
                f"MIKEY offer has {len(header.cs)} crypto sessions; one or two per m= line "
                "are supported"
            )
        for cs_id, cs in enumerate(header.cs, 1):
            if cs.roc:
                # §6.1.1: ROC_i is the stream's current rollover counter. Our SRTP contexts
                # start every stream at ROC 0 (RFC 3711 §3.3.1), so keys for a stream already
                # past a rollover would fail every packet's authentication: say so instead.
                raise MikeyError(
                    f"MIKEY crypto session {cs_id} starts at SRTP rollover counter {cs.roc}; "
                    "only 0 (a new stream) is supported"
                )
        suite = _suite_of(message, allowed)
        self.suite = suite
        psk: bytes | None = None
        if mode != "null":
            psk, who = psk_for_leg()
            if psk is None:
                raise MikeyError(f"MIKEY {MODE_RECORD[mode]}: no pre-shared key for {who}")
        if mode == "dh-hmac":
            assert psk is not None
            return self._answer_dh(message, stamp, rand.value, psk, suite)
        assert kemac is not None
        if mode == "psk":
            assert psk is not None
            encr_key, auth_key, salt = crypto.kemac_keys(psk, header.csb_id, rand.value)
            if kemac.mac_alg != MAC_HMAC_SHA1_160:
                raise MikeyError("MIKEY KEMAC is encrypted but has no MAC", error_no=3)
            _check_kemac_mac(message, auth_key)
            self._fresh(message)
            if kemac.encr_alg not in (ENCR_NULL, ENCR_AES_CM_128, ENCR_AES_KW_128):
                raise MikeyError(
                    f"MIKEY KEMAC encryption {kemac.encr_alg} is not supported", error_no=4
                )
            plain = crypto.kemac_decrypt(
                kemac.encr_alg, encr_key, salt, header.csb_id, stamp.value, kemac.encr_data
            )
        else:
            plain = kemac.encr_data
        keys = _keys_from_key_data(
            parse_key_data_untrusted(plain), suite, header.csb_id, rand.value, cs_count
        )
        if header.v:
            self._answer_message = self._verification_message(message, stamp, psk, mode)
        return keys

    def _verification_message(
        self, offer: Message, stamp: Timestamp, psk: bytes | None, mode: str
    ) -> bytes:
        # RFC 3830 §3.1: HDR, T, V; the V MAC over the response and T of the I_MSG (§5.2).
        header = Header(DataType.PSK_RESP, offer.header.csb_id, offer.header.cs)
        now = Timestamp.ntp_utc(self._clock())
        alg = MAC_NULL if mode == "null" else MAC_HMAC_SHA1_160
        message = encode_message(header, [now, Verification(alg, bytes(MAC_LENGTHS[alg]))])
        if alg == MAC_NULL:
            return message
        assert psk is not None
        rand = offer.first(Rand)
        assert rand is not None
        _, auth_key, _ = crypto.kemac_keys(psk, offer.header.csb_id, rand.value)
        signed = message[:-20] + stamp.value
        return message[:-20] + crypto.mac(MAC_HMAC_SHA1_160, auth_key, signed)

    def _answer_dh(
        self, message: Message, stamp: Timestamp, rand: bytes, psk: bytes, suite: str
    ) -> SrtpKeys:
        header = message.header
        _, auth_key, _ = crypto.kemac_keys(psk, header.csb_id, rand)
        _check_kemac_mac(message, auth_key)
        self._fresh(message)
        offered = message.first(DhValue)
        if offered is None:
            raise MikeyError("MIKEY DH-HMAC offer has no DH payload")
        if offered.group != self.settings.dh_group:
            names = crypto.DH_GROUP_NAMES
            raise MikeyError(
                f"MIKEY DH group {names.get(offered.group, offered.group)} is not the one "
                f"configured ({names[self.settings.dh_group]})",
                error_no=6,
            )
        if offered.kv_type != KV_NULL:
            raise MikeyError("MIKEY DH key validity is not supported")
        private = self._random(crypto.DH_EXPONENT_LENGTH)
        tgk = crypto.dh_shared(offered.group, private, offered.value)
        public = crypto.dh_public(offered.group, private)
        response = Header(DataType.DHHMAC_RESP, header.csb_id, header.cs)
        payloads: list[Payload] = [
            Timestamp.ntp_utc(self._clock()),
            DhValue(offered.group, public),
            DhValue(offered.group, offered.value),
            Kemac(ENCR_NULL, b"", MAC_HMAC_SHA1_160, bytes(20)),
        ]
        self._answer_message = _with_mac(encode_message(response, payloads), auth_key)
        cs_count = max(1, len(header.cs))
        return _derived_keys(suite, tgk, cs_count, header.csb_id, rand, "answerer")

    # -- shared ----------------------------------------------------------------------------------

    def _fresh(self, message: Message) -> None:
        stamp = message.first(Timestamp)
        if stamp is None:
            raise MikeyError("MIKEY message has no T payload", error_no=1)
        when = stamp.unix_time()
        if when is None:
            raise MikeyError("MIKEY COUNTER timestamps are not supported", error_no=1)
        problem = self._replay.check(message.raw, when, now=self._clock())
        if problem is not None:
            raise MikeyError(f"MIKEY message refused: {problem}", error_no=1)

    def _random(self, length: int) -> bytes:
        value = self._random_bytes(length)
        if not isinstance(value, bytes) or len(value) != length:
            raise LocalMikeyError(f"the random source did not return {length} octets")
        return value

    def _establish(self, keys: SrtpKeys) -> None:
        self._state = _State.ESTABLISHED
        if keys != self._keys:
            self._keys = keys
            self._events.append(KeysReady(keys))

    def _fail(self, reason: str) -> None:
        if self._state is _State.FAILED:
            return
        self._state = _State.FAILED
        self._keys = None
        self._failure = NegotiationFailed(reason, MikeyError.sip_status)
        self._events.append(self._failure)

    def _fail_and_raise(self, reason: str) -> NoReturn:
        self._fail(reason)
        raise MikeyError(reason) from None


def _with_mac(message: bytes, auth_key: bytes) -> bytes:
    """``message`` (ending in a zeroed 20-octet MAC) with its HMAC-SHA-1 MAC (§5.2: over the
    whole message up to the MAC)."""
    return message[:-20] + crypto.mac(MAC_HMAC_SHA1_160, auth_key, message[:-20])


def _check_kemac_mac(message: Message, auth_key: bytes) -> None:
    kemac = message.first(Kemac)
    if kemac is None or kemac.mac_alg != MAC_HMAC_SHA1_160:
        raise MikeyError("MIKEY message has no KEMAC with an HMAC-SHA-1 MAC", error_no=3)
    if message.payloads[-1] is not kemac:
        raise MikeyError("MIKEY KEMAC is not the last payload")
    signed = message.raw[: -len(kemac.mac)]
    if not crypto.mac_valid(MAC_HMAC_SHA1_160, auth_key, signed, kemac.mac):
        raise MikeyError("MIKEY MAC is wrong (another pre-shared key?)", error_no=3)


def _suite_of(message: Message, allowed: Sequence[str]) -> str:
    policies: dict[int, SecurityPolicy] = {}
    for policy in message.all(SecurityPolicy):
        if policy.policy_no in policies:
            raise MikeyError(f"MIKEY SP policy {policy.policy_no} is sent twice", error_no=9)
        policies[policy.policy_no] = policy
    numbers = {cs.policy_no for cs in message.header.cs} or {min(policies, default=0)}
    suites: set[str] = set()
    for number in sorted(numbers):
        # §6.10: a crypto session without a policy payload uses the default policy.
        policy = policies.get(number) or SecurityPolicy(number, 0, ())
        suite, why = suite_of_policy(policy, allowed)
        if suite is None:
            raise MikeyError(f"MIKEY security policy {number}: {why}", error_no=10)
        suites.add(suite)
    if len(suites) != 1:
        raise MikeyError("MIKEY crypto sessions of one stream use different suites", error_no=9)
    return suites.pop()


def _derived_keys(
    suite: str, tgk: bytes, cs_count: int, csb_id: int, rand: bytes, role: str
) -> SrtpKeys:
    """Keys from a TGK: cs_id 1 keys what the offerer sends, cs_id 2 the answerer's (with one
    crypto session, both)."""
    info = SUITES[suite]
    first = b"".join(
        crypto.tek_and_salt(tgk, 1, csb_id, rand, info.master_key_length, info.master_salt_length)
    )
    second = first
    if cs_count == 2:
        second = b"".join(
            crypto.tek_and_salt(
                tgk, 2, csb_id, rand, info.master_key_length, info.master_salt_length
            )
        )
    if role == "offerer":
        return SrtpKeys(suite, local_key=first, remote_key=second)
    return SrtpKeys(suite, local_key=second, remote_key=first)


def _keys_from_key_data(
    keys: Sequence[KeyData], suite: str, csb_id: int, rand: bytes, cs_count: int
) -> SrtpKeys:
    """The answerer's keys from the offer's key data: one TGK, or one TEK per crypto session
    (TEK+SALT, or GStreamer's master key || salt in one TEK field)."""
    info = SUITES[suite]
    if not keys:
        raise MikeyError("MIKEY KEMAC holds no key")
    for key in keys:
        if key.kv_type != KV_NULL:
            raise MikeyError("MIKEY key validity (SPI/MKI or index interval) is not supported")
    if keys[0].key_type == KEY_TGK:
        if len(keys) != 1:
            raise MikeyError("MIKEY KEMAC holds more than one TGK")
        if len(keys[0].key) < 16:
            raise MikeyError("MIKEY TGK is shorter than 128 bits")
        return _derived_keys(suite, keys[0].key, cs_count, csb_id, rand, "answerer")
    if len(keys) != cs_count:
        raise MikeyError(f"MIKEY KEMAC holds {len(keys)} keys for {cs_count} crypto sessions")
    teks: list[bytes] = []
    for key in keys:
        if key.key_type == KEY_TEK_SALT:
            if len(key.key) != info.master_key_length or len(key.salt or b"") != (
                info.master_salt_length
            ):
                raise MikeyError(f"MIKEY TEK or salt length does not fit {suite}")
            teks.append(key.key + (key.salt or b""))
        elif key.key_type == KEY_TEK:
            if len(key.key) != info.key_salt_length:
                raise MikeyError(
                    f"MIKEY TEK of {len(key.key)} octets is not {suite}'s master key and salt "
                    f"({info.key_salt_length} octets)"
                )
            teks.append(key.key)
        else:
            raise MikeyError("MIKEY KEMAC mixes TGK and TEK key data")
    return SrtpKeys(suite, local_key=teks[-1], remote_key=teks[0])


def allowed_suites(suites: Sequence[str]) -> tuple[str, ...]:
    """The leg's policy suites MIKEY can use, in order; empty policy: every supported suite."""
    if not suites:
        return SUPPORTED_SUITES
    return tuple(dict.fromkeys(name for name in suites if name in SUPPORTED_SUITES))
