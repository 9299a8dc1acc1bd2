"""Media security of one call leg: which key exchange each stream uses, and its SRTP keys.

Theory of operation. Every leg negotiates on its own (ARCHITECTURE.md "Key exchange"): the keys of
leg A have nothing to do with those of leg B, and the relay decrypts with one leg's keys and
encrypts with the other's. :class:`LegSecurity` sits between a leg's SDP and the
:class:`~gateway.core.media.session.MediaSession`, which only ever sees plain RTP/AVP(F):

- an offer from the peer: :meth:`take_offer` starts one answering negotiation per stream with
  the first key exchange of the leg's policy that the stream offers (a=crypto: SDES), and hands
  the session the offer without keys and with the plain profile; an offer the policy cannot accept
  (encrypted-only media under ``rtp-only``, cleartext under ``sdes``, SDES keys over plain UDP/TCP
  signalling, no acceptable suite) is refused with :class:`MediaSecurityRefused` (488);
- our answer on that leg: :meth:`make_answer` restores the offered profile and adds our keys;
- our offer on a leg: :meth:`make_offer` offers what the policy allows, best first: SDES keys (RTP/
  SAVP when the policy forbids cleartext, RTP/AVP with a=crypto for best effort — RFC 4568 over
  AVP, which a device without SRTP ignores); nothing when the policy or the signalling allows no
  key exchange and cleartext is acceptable; refusal otherwise;
- the peer's answer: :meth:`take_answer` completes the negotiations, or accepts cleartext where the
  policy allows it, or refuses; an answer whose m= profile leaves the offer's security family
  (RTP/SAVP with a=crypto to a plain RTP/AVP offer, RTP/AVP to RTP/SAVP or to DTLS-SRTP) is
  refused before any key is read, one that only adds or drops RFC 4585 feedback is taken
  (``_answered_profile``).

DTLS-SRTP (issue #6) goes through the same steps: its m= profile is UDP/TLS/RTP/SAVP(F) (RFC
5764 §8), only the ``media_path`` key exchanges answer such a stream and only they are offered
with it (never under a policy that allows cleartext: that profile has no fallback to RTP), and
a=fingerprint, a=setup and a=tls-id are stripped at media and session level like a=crypto. Its
keys come later, from the handshake on the media port: :meth:`media_path_streams` lists those
streams for the call's handshake task (gateway.core.media.handshakes), which sets each stream's
``keys``; until then the stream "expects SRTP" and
:class:`~gateway.core.media.keying.CallKeying` blocks it.

ZRTP (the ``zrtp`` plugin) is a ``media_path`` key exchange too, but in plain RTP/AVP(F) with
a=zrtp-hash (RFC 6189 §8): it answers a stream whose offer carries a=zrtp-hash, and our offer
may carry it *next to* SDES's a=crypto in one RTP/AVP line (a device ignores the attributes it
does not know): the answer's a=crypto or a=zrtp-hash picks the method (each key exchange names
its attribute, ``sdp_attribute``), neither means cleartext where the policy allows it. A
re-offer keeps the method in force on the stream and offers no other; an answer to a re-offer
prefers it too, so a call never switches methods (and loses its keys) on a hold.

MIKEY (the ``mikey`` plugin, RFC 4567) is an "sdp" key exchange like SDES, its message in
a=key-mgmt (stripped at media and session level like a=crypto). Its pre-shared keys are per
account or trunk, so a key exchange that declares ``wants_leg`` gets ``leg=`` (this leg's
``LegInfo``, when the caller gave one) in ``offer()`` and ``answer()``.

A key exchange whose streams of one leg share state (ZRTP's Multistream mode, RFC 6189 §4.4.3:
a video stream is keyed from the session key of the leg's audio stream) declares
``wants_leg_state`` and gets ``leg_state=``: one dict per leg and key exchange, the same for
every stream and every re-INVITE of the leg, made the first time it is asked for (never for a
leg whose exchanges do not declare it).

T.38 fax over UDPTL (``m=image ... udptl t38``, :mod:`gateway.core.media.t38`) has no key
exchange: the gateway passes it through unencrypted. On a leg whose policy requires encryption
(``allow_cleartext = False``) such a stream is refused, in the peer's offer as in ours: that m=
line goes at port 0 (logged), so the devices fall back to G.711 fax over the encrypted audio; an
offer left with no stream at all by that is refused (488) and the call goes on as before (RFC
3261 §14.2). Where it is allowed, the leg's record says that its fax was not encrypted
(``fax_t38``), for the rest of the call.

SDES keys travel in SDP, so the gateway never sends nor accepts them on a leg whose signalling is
not TLS (the briefing paper's rule; RFC 4568 §8.1 requires a secure channel). :meth:`record`
gives the leg's security record, derived from what was negotiated, never written by hand.
"""

from __future__ import annotations

import collections
import contextlib
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from gateway.core.ids import RandomIds
from gateway.core.interfaces import (
    KeyExchange,
    KeyNegotiation,
    KeysReady,
    LegInfo,
    MediaPolicy,
    NegotiationFailed,
    SrtpKeys,
)
from gateway.core.media.errors import LocalMediaError
from gateway.core.media.ice import IceCredentials, LegIce
from gateway.core.media.t38 import is_udptl_t38
from gateway.core.sdp.errors import SdpError
from gateway.core.sdp.model import MediaDescription, SessionDescription
from gateway.core.sdp.offer_answer import (
    AUXILIARY_FORMATS,
    offered_formats,
    only_codecs,
    rejected_media,
)

log = logging.getLogger(__name__)

_IDS = RandomIds()  # the OS CSPRNG, for ICE credentials
_WEBSOCKET_TRANSPORTS = frozenset({"ws", "wss"})  # RFC 7118: browsers, which require ICE

# RTP profiles with SRTP and the plain profile each maps to (RFC 3711 §12, RFC 5124, and
# DTLS-SRTP's RFC 5764 §8).
_PLAIN_OF = {
    "RTP/SAVP": "RTP/AVP",
    "RTP/SAVPF": "RTP/AVPF",
    "UDP/TLS/RTP/SAVP": "RTP/AVP",
    "UDP/TLS/RTP/SAVPF": "RTP/AVPF",
}
_SECURE_OF = {"RTP/AVP": "RTP/SAVP", "RTP/AVPF": "RTP/SAVPF"}
# The RTP profiles a key exchange may apply to, plain or secure (once, not a dict per m= line).
_RTP_PROFILES = frozenset({*_PLAIN_OF, *_SECURE_OF})
# The profile a key exchange on the media path (DTLS-SRTP) is offered with (RFC 5764 §8).
_DTLS_OF = {"RTP/AVP": "UDP/TLS/RTP/SAVP", "RTP/AVPF": "UDP/TLS/RTP/SAVPF"}
# Each RTP profile's security family: an answer may change the RFC 4585 feedback profile, never
# the family (LegSecurity._answered_profile).
_FAMILY_OF = {
    "RTP/AVP": "rtp",
    "RTP/AVPF": "rtp",
    "RTP/SAVP": "srtp",
    "RTP/SAVPF": "srtp",
    "UDP/TLS/RTP/SAVP": "dtls",
    "UDP/TLS/RTP/SAVPF": "dtls",
}
_FAMILY_MEANING = {"rtp": "RTP", "srtp": "SRTP keyed in SDP", "dtls": "SRTP keyed by DTLS"}
# RFC 4585 feedback profile -> the plain one: what we offer a leg that is not known to take
# feedback profiles (see LegSecurity's ``offer_feedback``).
_WITHOUT_FEEDBACK = {"RTP/AVPF": "RTP/AVP"}
# Attributes that carry a leg's own keys or key-exchange identity and never cross to the other
# leg: SDES keys (RFC 4568), DTLS fingerprints and roles (RFC 8122, RFC 4145, RFC 8842), ZRTP
# Hello hashes (RFC 6189 §8), MIKEY messages (RFC 4567 §3: a=key-mgmt, session or media level).
_KEY_ATTRIBUTES = frozenset({"crypto", "fingerprint", "setup", "tls-id", "zrtp-hash", "key-mgmt"})


class MediaSecurityRefused(SdpError):
    """The leg's media-security policy refuses this SDP (488 with the reason as Warning)."""


class CodecsRefused(SdpError):
    """None of an offer's audio codecs is one the leg's device profile takes
    (``DeviceProfile.codecs``): 488 with the reason as Warning (RFC 3261 §21.4.26)."""


class KeyExchangeFailed(Exception):
    """A key-exchange plugin raised something other than :class:`SdpError` (from ``offer()``,
    ``answer()``, ``local_sdp_attributes()``, ``remote_sdp_attributes()`` or ``next_event()``,
    in any of the four SDP steps: :meth:`LegSecurity._plugin`): a bug in the plugin, never the
    peer's fault (bad peer input is an ``SdpError``, STYLE.md habit 4). The call ends (500 /
    BYE); ``reason`` names the plugin and the exception's type, never its text, which might
    hold key material."""

    def __init__(self, key_exchange: str, error: Exception) -> None:
        self.key_exchange = key_exchange
        self.reason = f"the {key_exchange} key exchange raised {type(error).__name__}"
        super().__init__(self.reason)


@attrs.define(eq=False)
class StreamSecurity:
    """One stream of one leg: the negotiation in force and the profile the peer uses."""

    negotiation: KeyNegotiation | None = None
    key_exchange: str | None = None
    media_path: bool = False
    """The negotiation runs on the media port (DTLS-SRTP): the call's handshake task drives it
    and sets :attr:`keys` on ``KeysReady``."""
    peer_proto: str = "RTP/AVP"
    keys: SrtpKeys | None = None
    failure: str | None = None
    rtcp_negotiation: KeyNegotiation | None = None
    """The separate RTCP port's own negotiation (RFC 5764 §4.1: DTLS-SRTP without rtcp-mux),
    set by the call's handshake task; None when RTCP shares the RTP port or its keys."""
    rtcp_keys: SrtpKeys | None = None
    """SRTCP keys from :attr:`rtcp_negotiation`, once agreed."""
    session_proto: str | None = None
    """The session's plain profile when this leg was offered another one (a feedback profile
    taken off, see ``LegSecurity.offer_feedback``): the answer goes back to the session in it."""
    alternatives: list[tuple[str, KeyNegotiation]] = attrs.Factory(list)
    """Further key exchanges our offer carries in the same m= line (SDES's a=crypto next to
    ZRTP's a=zrtp-hash in RTP/AVP), by name: the peer's answer picks one (``take_answer``)."""
    refused: str | None = None
    """Why this leg's policy refused the stream (T.38 in cleartext): it went at port 0."""
    answered_with: AnswerPart | None = None
    """The key exchange's part of the peer's answer taken last for this stream (its
    ``sdp_attribute`` lines, or all its attributes): whether another answer repeats it, for a
    negotiation that failed on a refused answer in between (``LegSecurity._answer_streams``).
    An :class:`AnswerPart`, whose repr shows no key (a=crypto carries the peer's)."""
    declined: list[tuple[str, KeyNegotiation]] = attrs.Factory(list)
    """Our offer's key exchanges on this line that the answer in force declined (best effort: a
    cleartext answer, an early one), by name, as offered: the final answer may still take one
    (``LegSecurity.read_answer``'s ``final``). Emptied by the next answer."""
    declined_keys: SrtpKeys | None = None
    """The keys in force when the answer in clear was taken (an earlier early answer's, of the
    first of :attr:`declined`): a final answer that takes that negotiation up again, repeating
    the answer it had (the early phone's 200 after another phone's 183 in clear), gets them
    back, as that answer's repetition reports no keys anew. Emptied with :attr:`declined`."""
    rejected: bool = False
    """The latest answer (ours or the peer's) put this stream at port 0: it ended there (RFC
    3264 §6, §8.2). An offer that brings its m= line back starts a new stream, keyed afresh,
    not under the keys it had: the relay gives it new ports, and an answerer whose port
    changes MUST send a new master key, a new crypto context at ROC 0 (RFC 4568 §7.1.4); the
    old key kept there would restart its packet index in a media worker's new context (the
    same keystream twice, RFC 3711 §9.1) and go on at its old ROC in process, where the peer
    starts at 0."""

    @property
    def fax(self) -> bool:
        """A T.38 fax stream over UDPTL: passed through, never encrypted."""
        return self.fax_proto(self.peer_proto)

    @staticmethod
    def fax_proto(proto: str) -> bool:
        """Whether ``proto`` is T.38's UDPTL (:attr:`fax`, for a profile not yet taken)."""
        return proto.upper() == "UDPTL"


@attrs.frozen(eq=False)
class AnswerRead:
    """A peer's answer that :meth:`LegSecurity.read_answer` read and
    :meth:`LegSecurity.apply_answer` puts in force."""

    offered: list[StreamSecurity]
    """The offer's streams it answers (the leg's ``_offered`` when it was read)."""
    plain: SessionDescription
    """The answer as the session must see it: plain profiles, no key attributes."""
    changes: tuple[tuple[StreamSecurity, dict[str, Any]], ...]
    """Each stream's new field values."""
    reported: tuple[int, ...]
    """The negotiations (by id) whose reported keys it takes out of ``_unapplied``."""
    ice: dict[int, IceCredentials]
    """The peer's ICE credentials per m= line."""
    fax: bool
    """It accepts a T.38 stream (the leg's record says so from then on)."""
    binds: tuple[tuple[StreamSecurity, str, KeyNegotiation, AttributePairs], ...] = attrs.field(
        default=(), repr=False
    )
    """Left out of the repr: the parts are the answer's lines, a=crypto with the peer's key.
    The negotiations that checked their part of the answer without taking it
    (``check_remote_sdp_attributes``), with the key exchange's name and that part: they take
    it in :meth:`LegSecurity.apply_answer`, so an answer refused first binds nothing."""


AttributePairs = list[tuple[str, str | None]]
"""An m= line's attributes then the session's, as a negotiation reads an answer."""


@attrs.frozen(repr=False)
class AnswerPart:
    """A key exchange's part of an answer's m= line (:attr:`StreamSecurity.answered_with`),
    compared with another answer's. Its repr shows how many lines, never them: SDES's a=crypto
    carries the peer's master key, which must not reach a log or an exception's text through
    the repr of a stream or of an :class:`AnswerRead`."""

    lines: tuple[tuple[str, str | None], ...]

    def __repr__(self) -> str:
        return f"<AnswerPart {len(self.lines)} lines>"


class _PluginCall:
    """:meth:`LegSecurity._plugin`'s context manager: a class, not a generator, as it runs
    several times per call on the SIP path."""

    __slots__ = ("name", "security")

    def __init__(self, security: LegSecurity, name: str | None) -> None:
        self.security = security
        self.name = name

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, _tb: Any
    ) -> None:
        if exc is None or isinstance(exc, SdpError) or not isinstance(exc, Exception):
            return  # nothing raised, bad peer input, or a cancellation: it goes on as it is
        self.security.failed(self.name)
        raise KeyExchangeFailed(self.name or "unknown", exc) from exc


class LegSecurity:
    def __init__(
        self,
        *,
        side: str,
        policy: MediaPolicy,
        secure_signalling: bool,
        key_exchanges: Mapping[str, KeyExchange],
        signalling: str,
        offer_feedback: bool = False,
        leg: LegInfo | None = None,
        failures: collections.Counter[str] | None = None,
        ice: bool = True,
        dtmf_info: bool = False,
        codecs: tuple[str, ...] | None = None,
    ) -> None:
        self.side = side
        self.codecs = codecs
        """The audio codecs the leg's phone takes, by encoding name in its order of
        preference (``DeviceProfile.codecs``); None: any. Offers to it and from it keep only
        these (:meth:`_device_codecs`), so our answers to it hold only these too."""
        self.dtmf_info = dtmf_info
        """The leg's peer sends DTMF only as SIP INFO (its trunk's ``dtmf``, its
        device profile's): its offers go to the other leg with telephone-event added
        (``MediaSession.offer_from(dtmf_info=)``, docs/architecture.md "DTMF interworking").
        Not a security matter; kept here because every leg's offer goes through this object."""
        self.ice = LegIce(
            _IDS.token_hex, enabled=ice, browser=signalling.lower() in _WEBSOCKET_TRANSPORTS
        )
        """ICE-lite on this leg (gateway/core/media/ice.py): a transport matter, not a key
        exchange, but it rides on the same four SDP steps. ``ice`` False: never (for a relay
        that cannot answer checks)."""
        self.failures = failures
        """Failed negotiations by key exchange, for monitoring (gateway/core/status.py); None:
        not counted."""
        self.leg = leg
        """Whose leg this is (account or trunk), for key exchanges that declare ``wants_leg``
        (MIKEY's pre-shared keys are per account or trunk); None where the caller does not say."""
        self.offers_rtcp_mux = signalling.lower() in _WEBSOCKET_TRANSPORTS
        """Every offer we make on this leg carries a=rtcp-mux on its RTP lines, whatever the
        other leg offered: a browser's (SIP over WebSocket) refuses an offer without it (JSEP,
        RFC 8829 §4.1.1: rtcpMuxPolicy "require", Chrome's default and only policy; RFC 8834
        §5.1.1 makes rtcp-mux mandatory for WebRTC). The relay can always mux (RFC 5761
        §5.1.1); the session learns of it from
        :meth:`~gateway.core.media.session.MediaSession.answer_from`'s ``rtcp_mux_offered``."""
        self.offer_feedback = offer_feedback
        """Offer this leg an RFC 4585 feedback profile (RTP/AVPF, RTP/SAVPF,
        UDP/TLS/RTP/SAVPF) when the other leg offered one. False: the plain profile without
        a=rtcp-fb, which every SIP device takes; a device that knows only RTP/SAVP (baresip's
        srtp-mand, many desk phones) answers a feedback profile with 488. Our answers always
        mirror the profile the peer offered (RFC 3264 §6)."""
        self.policy = policy
        self.secure_signalling = secure_signalling
        self.signalling = signalling
        # Only the key exchanges both enabled and allowed, in the policy's order.
        self._exchanges = [
            (name, key_exchanges[name]) for name in policy.key_exchanges if name in key_exchanges
        ]
        self._enabled = frozenset(key_exchanges)
        self._by_name = dict(self._exchanges)
        self.streams: list[StreamSecurity] = []
        self._offered: list[StreamSecurity] = []
        self._answer_pending = False  # the peer offered; our answer is not made yet
        self._fax_passed = False  # a T.38 stream was accepted on this leg (record: fax_t38)
        self._leg_states: dict[str, dict[str, Any]] | None = None  # see _leg_argument
        # The last SDP made on this leg, with the o= line of the session's plain SDP it came
        # from, and how many versions this leg added to that one (_versioned).
        self._last_made: tuple[SessionDescription, int] | None = None
        # What make_offer replaced, for withdraw_offer: (_offered, _answer_pending, _last_made).
        # Only while that offer may still be withdrawn: cleared once it is answered
        # (take_answer) or refused (offer_refused), and by the peer's next offer (take_offer).
        self._before_offer: (
            tuple[list[StreamSecurity], bool, tuple[SessionDescription, int] | None] | None
        ) = None
        # Keys a negotiation of ours reported (KeysReady) on an answer that take_answer then
        # refused, by id(negotiation): not in force, but the plugin holds them as the peer's
        # (an SDES negotiation given the same answer again reports nothing new), so the next
        # answer that repeats that stream's part takes them. Few: one per offered stream.
        self._unapplied: dict[int, tuple[KeyNegotiation, SrtpKeys]] = {}
        # Negotiations of ours that failed on an answer to our offer (the answer refused), by
        # id(negotiation), with the plugin's reason: a plugin keeps a failed negotiation failed
        # and quiet (SDES), so another forked phone's answer to the same offer would get no
        # keys from it and, taken, leave that line blocked for the whole call. Refused too,
        # saying why. Few: one per offered stream.
        self._failed_on_answer: dict[int, tuple[KeyNegotiation, str]] = {}

    # -- the peer offers ------------------------------------------------------------------------

    def take_offer(self, offer: SessionDescription) -> SessionDescription:
        """Start answering negotiations for the peer's offer; the offer as the session must see
        it (plain profile, no keys). Raises :class:`MediaSecurityRefused`, or
        :class:`KeyExchangeFailed` (a plugin's bug)."""
        if self.codecs is not None:
            offer = self._device_codecs(offer, reorder=False)
        streams: list[StreamSecurity] = []
        media_out: list[MediaDescription] = []
        session_attributes = _pairs(offer.attributes)
        _one_session_level_mikey_stream(offer)
        try:
            for index, media in enumerate(offer.media):
                previous = self._previous(index)
                stream = StreamSecurity(peer_proto=media.proto)
                streams.append(stream)
                if media.port != 0 and media.proto.upper() in _RTP_PROFILES:
                    self._answer_stream(media, stream, previous, session_attributes)
                media_out.append(self._fax_checked(index, media, stream, "offer from"))
            self._refuse_if_nothing_left(offer.media, media_out)
        except Exception:
            # Refused (488) or a plugin's bug: the negotiations it started for the streams
            # before are the refused offer's too (a DTLS answer that took a held handshake,
            # docs/media_security.md), told so as for a refusal after it was taken.
            self._abandon(streams)
            raise
        self._offered = streams
        self._unapplied = {}  # answers to our offers are over: the peer offers now
        self._failed_on_answer = {}
        self._answer_pending = True
        self._before_offer = None  # an offer of ours before it went, answered or refused
        self.ice.take_remote(offer, offer=True)
        return _without_session_keys(offer.with_media(media_out))

    def _answer_stream(
        self,
        media: MediaDescription,
        stream: StreamSecurity,
        previous: StreamSecurity | None,
        session_attributes: list[tuple[str, str | None]],
    ) -> None:
        encrypted = media.proto.upper() in _PLAIN_OF
        over_dtls = media.proto.upper().startswith("UDP/TLS/")
        reasons: list[str] = []
        for name, exchange in self._in_force_first(previous):
            # DTLS-SRTP only under UDP/TLS/RTP/SAVP(F) (RFC 5764 §8), SDES never there; ZRTP
            # only in plain RTP/AVP(F) (RFC 6189 §8: its keys are agreed in the media).
            profile = _profile(exchange)
            if (profile == "dtls") != over_dtls or (profile == "rtp" and encrypted):
                continue
            same = previous is not None and previous.key_exchange == name
            with self._plugin(name):
                negotiation = exchange.answer(
                    # The media-level attributes, then the session-level ones (RFC 8122 §5, RFC
                    # 4567 §4: a session-level a=key-mgmt applies to the m= lines without their
                    # own).
                    _pairs(media.attributes) + session_attributes,
                    suites=self.policy.suites,
                    secure_signalling=self.secure_signalling,
                    previous=previous.negotiation if same and previous is not None else None,
                    **self._leg_argument(name, exchange),
                )
                if negotiation is None:
                    continue  # this method is not in the offer
                failed = _drain(negotiation, stream)
            if failed is None:
                stream.negotiation, stream.key_exchange = negotiation, name
                stream.media_path = bool(getattr(exchange, "media_path", False))
                if stream.keys is None and previous is not None and previous.key_exchange == name:
                    stream.keys = previous.keys  # keys unchanged (RFC 4568 §7.1.4)
                return
            reasons.append(f"{name}: {failed}")
            self.failed(name)
        if media.crypto and not any(name == "sdes" for name, _ in self._exchanges):
            if "sdes" not in self._enabled:
                reasons.append("the sdes key exchange is not enabled ([plugins] enable)")
            else:
                reasons.append(f"policy {self.policy.name} does not allow SDES")
        if encrypted:
            detail = "; ".join(reasons) or f"policy {self.policy.name} allows no key exchange here"
            raise MediaSecurityRefused(f"cannot accept encrypted media ({media.proto}): {detail}")
        if not self.policy.allow_cleartext:
            detail = f" ({'; '.join(reasons)})" if reasons else ""
            raise MediaSecurityRefused(
                f"policy {self.policy.name} requires encrypted media; the offer is "
                f"{media.proto}{detail}"
            )
        stream.failure = "; ".join(reasons) or None  # best effort: cleartext on this stream

    def make_answer(self, answer: SessionDescription) -> SessionDescription:
        """Our answer to the peer's offer (from the session's plain answer): the peer's profile
        and our keys per stream. Raises :class:`KeyExchangeFailed` (a plugin's bug).

        All or nothing, as :meth:`make_offer`: the plugins are asked first, and the streams'
        state, :attr:`streams` and the o= version last made change only once nothing can
        raise (an answer that fails leaves the leg as it was)."""
        media_out: list[MediaDescription] = []
        rejected: list[tuple[StreamSecurity, bool]] = []
        fax_passed = self._fax_passed
        for index, media in enumerate(answer.media):
            stream = self._offered[index] if index < len(self._offered) else StreamSecurity()
            # Set on every answer to this offer: a fork's 183 may reject a line its 200 takes.
            rejected.append((stream, media.port == 0))
            if media.port == 0:
                media_out.append(media.with_proto(stream.peer_proto))
                continue
            fax_passed = fax_passed or stream.fax
            attributes: list[tuple[str, str | None]] = list(media.attributes)
            if stream.negotiation is not None:
                with self._plugin(stream.key_exchange):
                    attributes += stream.negotiation.local_sdp_attributes()
                proto = stream.peer_proto
            else:
                proto = _PLAIN_OF.get(stream.peer_proto.upper(), stream.peer_proto)
            media_out.append(media.with_attributes(attributes, proto))
        made, last_made = self._version_of(self.ice.add_to_answer(answer.with_media(media_out)))
        for stream, is_rejected in rejected:
            stream.rejected = is_rejected
        self._fax_passed = fax_passed
        for index, stream in enumerate(self._offered):
            previous = self._previous(index)
            if (
                stream.keys is None
                and stream.key_exchange is not None
                and previous is not None
                and previous.key_exchange == stream.key_exchange
            ):
                # A handshake on the media path that ended between the offer and now (a
                # re-INVITE while DTLS was under way: baresip's with ICE) gave its keys to the
                # stream then in force (media_path_streams); the re-offer's stream keeps the
                # association, so the keys too (RFC 8842 §5).
                stream.keys = previous.keys
        self.streams = self._offered
        self._answer_pending = False
        self._last_made = last_made
        return made

    # -- we offer -------------------------------------------------------------------------------

    def as_offered_here(self, offer: SessionDescription) -> SessionDescription:
        """``offer``, a plain offer of the session's that went to other phones, as our offers
        on this leg put it (:meth:`make_offer`): with a=rtcp-mux on each RTP line on a browser's
        leg (``offers_rtcp_mux``), else as it is. A call pickup answers the picker's offer with
        what the ringing phones were offered (``answer_with``): the relay muxes per leg (RFC
        5761 §5.1.1), so a browser picking up a caller without rtcp-mux still gets it, as JSEP
        requires (RFC 8829 §4.1.1), and the caller's leg is unchanged."""
        if not self.offers_rtcp_mux:
            return offer
        return offer.with_media([_muxed(media) for media in offer.media])

    def make_offer(self, offer: SessionDescription, *, rekey: bool = False) -> SessionDescription:
        """Our offer on this leg (from the session's plain offer). Raises
        :class:`MediaSecurityRefused` when the policy needs encryption this leg cannot get,
        :class:`KeyExchangeFailed` for a plugin's bug, :class:`CodecsRefused` when the leg's
        phone takes none of its codecs.

        ``rekey``: new keys of ours where the key exchange hands them out in SDP (SDES,
        MIKEY: ``offer(rekey=True)``), the rest kept (a DTLS-SRTP association or ZRTP
        session on the media path is the peer's alone; restarting it would only cost a
        handshake)."""
        if self.codecs is not None:
            offer = self._device_codecs(offer, reorder=True)
        streams: list[StreamSecurity] = []
        media_out: list[MediaDescription] = []
        for index, offered in enumerate(offer.media):
            media = offered if self.offer_feedback else _without_feedback(offered)
            if self.offers_rtcp_mux:
                media = _muxed(media)
            stream = StreamSecurity(peer_proto=media.proto)
            if media.proto != offered.proto:
                stream.session_proto = offered.proto
            if media.port == 0 or media.proto.upper() not in _SECURE_OF:
                streams.append(stream)
                media_out.append(self._fax_checked(index, media, stream, "offer to"))
                continue
            previous = self._previous(index)
            reasons: list[str] = []
            in_force = previous is not None and previous.negotiation is not None
            for name, exchange in self._in_force_first(previous):
                profile = _profile(exchange)
                in_force_here = in_force and previous is not None and previous.key_exchange == name
                if profile == "dtls" and self.policy.allow_cleartext and not in_force_here:
                    # UDP/TLS/RTP/SAVP cannot fall back to RTP (only SDP capability
                    # negotiation, RFC 5939, could offer both): a best-effort offer would be
                    # refused by every device without DTLS-SRTP. So best effort offers SDES;
                    # but a re-offer on a line DTLS-SRTP keys already keeps it (RFC 8842 §5:
                    # a browser takes no re-offer that drops its DTLS association).
                    continue
                if stream.negotiation is not None and not self._shares_line(stream, profile):
                    continue
                drained = StreamSecurity()
                fresh = rekey and not _on_media_path(exchange)
                with self._plugin(name):
                    negotiation = exchange.offer(
                        suites=self.policy.suites,
                        secure_signalling=self.secure_signalling,
                        previous=_previous_negotiation(previous, name),
                        **self._leg_argument(name, exchange),
                        # Only where asked: plugins written before ``rekey`` lack it.
                        **({"rekey": True} if fresh else {}),
                    )
                    failed = _drain(negotiation, drained)
                if failed is not None:
                    reasons.append(f"{name}: {failed}")
                    self.failed(name)
                elif stream.negotiation is None:
                    stream.negotiation, stream.key_exchange = negotiation, name
                    stream.media_path = bool(getattr(exchange, "media_path", False))
                    if previous is not None and previous.key_exchange == name:
                        stream.keys = previous.keys
                    stream.keys = drained.keys or stream.keys
                    if profile == "dtls" or in_force:
                        # UDP/TLS/RTP/SAVP carries DTLS-SRTP alone; a re-offer keeps the
                        # method in force and offers no other (RFC 3264 §8).
                        break
                else:
                    stream.alternatives.append((name, negotiation))
            if stream.negotiation is None:
                if not self.policy.allow_cleartext:
                    detail = "; ".join(reasons) or "no key exchange is enabled"
                    raise MediaSecurityRefused(
                        f"policy {self.policy.name} requires encrypted media on the "
                        f"{self.signalling} leg, which cannot get keys: {detail}"
                    )
                streams.append(stream)
                media_out.append(media)
                continue
            proto = self._offer_proto(stream, media.proto)
            stream.peer_proto = proto
            attributes: list[tuple[str, str | None]] = list(media.attributes)
            with self._plugin(stream.key_exchange):
                attributes += stream.negotiation.local_sdp_attributes()
            for name, alternative in stream.alternatives:
                with self._plugin(name):
                    attributes += alternative.local_sdp_attributes()
            media_out.append(media.with_attributes(attributes, proto))
            streams.append(stream)
        self._refuse_if_nothing_left(offer.media, media_out)
        # All or nothing: what may raise comes first, and the leg's state changes only once
        # nothing can (a failed offer leaves the one in force, its keys and o= version).
        # ICE credentials minted for a first offer that then failed stay unused until the next.
        made, last_made = self._version_of(self.ice.add_to_offer(offer.with_media(media_out)))
        self._before_offer = (self._offered, self._answer_pending, self._last_made)
        self._offered = streams
        self._answer_pending = False
        self._last_made = last_made
        self._unapplied = {}  # another offer's negotiations: its answers are new
        self._failed_on_answer = {}
        return made

    def withdraw_offer(self) -> None:
        """The offer :meth:`make_offer` last made was not sent (its leg cannot be reached):
        what was offered before it, and the o= version last made, are back. So the next SDP
        on this leg has the version after the last one sent (RFC 3264 §8), and the keys the
        unsent offer made are neither in force nor taken for handed out. No-op when nothing
        was offered since the last withdrawal, or that offer was answered or refused
        (:meth:`offer_refused`), or the peer offered since."""
        before = self._before_offer
        if before is None:
            return
        self._before_offer = None
        self._offered, self._answer_pending, self._last_made = before

    def offer_refused(self) -> None:
        """The offer :meth:`make_offer` last made was sent and refused (an error response,
        RFC 3261 §14.1): it took its o= version on the wire, so no later
        :meth:`withdraw_offer` may give that version (or the keys in force before it) back,
        which would make the next SDP repeat a version the peer saw with other content (RFC
        3264 §8). The keys in force stay those of the last answer (:attr:`streams`)."""
        self._before_offer = None

    def peer_offer_refused(self) -> None:
        """The peer's offer :meth:`take_offer` took was refused (an error response to it: the
        other leg's 488, ours; RFC 3261 §14.1: the session in force stays): each negotiation
        it started is told, by its optional ``abandon()`` (docs/plugin_hooks.md; the ``dtls``
        engine gives back a held handshake the offer took, session 50), and the leg is as
        before that offer: no offer of the peer waits for our answer. No-op when none did.
        Raises :class:`KeyExchangeFailed` (a plugin's bug)."""
        if self._answer_pending:
            self._abandon(self._offered)
            # The session in force stays (RFC 3261 §14.1): no offer of the peer's waits now,
            # so the call's handshake task stops keeping datagrams for the refused one
            # (offered_media_path_streams) and media_path_streams are those in force again.
            self._offered = self.streams
            self._answer_pending = False

    def _abandon(self, streams: Iterable[StreamSecurity]) -> None:
        """Tell the negotiations of ``streams`` that are not in force that their offer or
        answer is abandoned (:meth:`peer_offer_refused`)."""
        in_force = {id(stream.negotiation) for stream in self.streams}
        for stream in streams:
            negotiation = stream.negotiation
            if negotiation is None or id(negotiation) in in_force:
                continue
            with self._plugin(stream.key_exchange):
                abandon = getattr(negotiation, "abandon", None)
                if abandon is not None:
                    abandon()

    def _versioned(self, sdp: SessionDescription) -> SessionDescription:
        """``sdp``, made on this leg from the session's plain SDP, with the o= version RFC 3264
        §8 wants of it. The session's version rule (``apply_version_rule``) sees the plain SDP
        only: our keys, key-exchange lines and ICE credentials are added here, and change
        alone when a peer re-offers a new key of its own (our answer has a new key too, RFC
        4568 §7.1.4) or we re-key (``make_offer(rekey=True)``). An SDP that differs from the
        last one made while the plain version stayed gets the next version; every later one
        keeps that lead, so versions never repeat or go back on the leg."""
        made, self._last_made = self._version_of(sdp)
        return made

    def _version_of(
        self, sdp: SessionDescription
    ) -> tuple[SessionDescription, tuple[SessionDescription, int]]:
        """:meth:`_versioned`'s SDP, and what it records as the last one made, changing
        nothing."""
        last = self._last_made
        added = 0
        if last is not None:
            previous, added = last
            old, new = previous.origin, sdp.origin
            if (old.username, old.session_id) != (new.username, new.session_id) or (
                new.session_version < old.session_version
            ):
                added = 0  # another session's SDP (a new one on this leg): its own versions
            elif new.session_version == old.session_version and sdp != previous:
                added += 1
        if added == 0:
            return sdp, (sdp, added)
        version = sdp.origin.session_version + added
        return sdp.with_origin(attrs.evolve(sdp.origin, session_version=version)), (sdp, added)

    def _device_codecs(self, sdp: SessionDescription, *, reorder: bool) -> SessionDescription:
        """``sdp`` with only the audio codecs of :attr:`codecs` (``only_codecs``): ours to the
        phone in its order of preference, the phone's own in its order. An audio line left with
        none goes at port 0 (RFC 3264 §6, §8.2); an offer left with no line at all is refused
        (:class:`CodecsRefused`): a phone offered what it cannot decode would answer it
        wrongly or play noise, and one whose offer we narrowed to nothing gets 488, the
        status RFC 3261 §21.4.26 has for it."""
        assert self.codecs is not None
        media_out: list[MediaDescription] = []
        lost: list[str] = []
        for media in sdp.media:
            kept = only_codecs(media, self.codecs, reorder=reorder)
            if kept is None:
                lost += [r.encoding for r in offered_formats(media)]
                kept = rejected_media(media)
            media_out.append(kept)
        if not lost:
            return sdp.with_media(media_out)
        if any([m.port != 0 for m in sdp.media]) and not any([m.port != 0 for m in media_out]):
            device = self.leg.device if self.leg is not None else None
            whose = f"device profile {device.name!r}" if device is not None else "the device"
            # The audio codecs, not telephone-event or CN, which alone play nothing.
            audio = [name for name in lost if name.upper() not in AUXILIARY_FORMATS]
            offered = ", ".join(dict.fromkeys(audio)) or "none"
            raise CodecsRefused(
                f"{whose} takes none of the audio codecs offered ({offered}); "
                f"it takes {', '.join(self.codecs)}"
            )
        return sdp.with_media(media_out)

    def _fax_checked(
        self, index: int, media: MediaDescription, stream: StreamSecurity, what: str
    ) -> MediaDescription:
        """``media`` as it may go on (``_plain``), or at port 0 when it is T.38 over UDPTL and
        the leg's policy requires encryption: UDPTL is never encrypted by us."""
        if media.port == 0 or not is_udptl_t38(media) or self.policy.allow_cleartext:
            return _plain(media)
        stream.refused = (
            f"policy {self.policy.name} requires encrypted media and T.38 fax (UDPTL) is "
            "passed through unencrypted"
        )
        log.info(
            "leg %s (%s): T.38 stream at m= line %d refused in the %s this leg: %s",
            self.side,
            self.signalling,
            index + 1,
            what,
            stream.refused,
        )
        return rejected_media(_plain(media))

    def _refuse_if_nothing_left(
        self, before: tuple[MediaDescription, ...], after: list[MediaDescription]
    ) -> None:
        """An offer whose only streams the policy refused (T.38 alone) is refused as a whole
        (488): the call keeps the media it had (RFC 3261 §14.2) instead of losing it all."""
        # Lists, not generators: any() stopping early leaves a generator that Python 3.11
        # closes by raising GeneratorExit in it, twice per offer and answer of every call.
        if any([m.port != 0 for m in before]) and not any([m.port != 0 for m in after]):
            raise MediaSecurityRefused(
                f"policy {self.policy.name} requires encrypted media; T.38 fax (UDPTL) is "
                "never encrypted by the gateway"
            )

    def _plugin(self, name: str | None) -> _PluginCall:
        """Around every call into key exchange ``name``'s plugin: an :class:`SdpError` (bad
        peer input, or a policy refusing it) goes on as it is; anything else is the plugin's
        bug, counted and raised as :class:`KeyExchangeFailed`, which names the plugin (and
        the exception's type, never its text) in the call record."""
        return _PluginCall(self, name)

    def _leg_argument(self, name: str, exchange: KeyExchange) -> dict[str, Any]:
        """``leg=`` for a key exchange that declares ``wants_leg``, ``leg_state=`` (this leg's
        dict for ``name``) for one that declares ``wants_leg_state`` (KeyExchange's optional
        attributes); nothing for the others, whose offer() and answer() do not take them."""
        arguments: dict[str, Any] = {}
        if getattr(exchange, "wants_leg", False) is True:
            arguments["leg"] = self.leg
        if getattr(exchange, "wants_leg_state", False) is True:
            if self._leg_states is None:
                self._leg_states = {}
            arguments["leg_state"] = self._leg_states.setdefault(name, {})
        return arguments

    def _in_force_first(self, previous: StreamSecurity | None) -> list[tuple[str, KeyExchange]]:
        """The leg's key exchanges in the policy's order, the one in force on the stream first:
        a re-offer or re-answer keeps the method and its keys where the other side allows."""
        if previous is None or previous.key_exchange not in self._by_name:
            return self._exchanges
        name = previous.key_exchange
        return [(name, self._by_name[name])] + [e for e in self._exchanges if e[0] != name]

    def _offer_proto(self, stream: StreamSecurity, proto: str) -> str:
        """The profile our offer of ``stream`` goes out with, from its first key exchange."""
        profile = _profile(self._by_name[stream.key_exchange or ""])
        if profile == "dtls":
            return _DTLS_OF[proto.upper()]
        if profile == "rtp" or self.policy.allow_cleartext:
            # ZRTP runs in RTP/AVP; RFC 4568 over RTP/AVP is best effort: a device without
            # SRTP ignores a=crypto.
            return proto
        return _SECURE_OF[proto.upper()]

    def _shares_line(self, stream: StreamSecurity, profile: str) -> bool:
        """Whether a key exchange of ``profile`` can join the offer's m= line with the ones
        already in it: only in plain RTP/AVP(F), where SDES's a=crypto and ZRTP's a=zrtp-hash
        sit side by side and a device ignores what it does not know."""
        if profile == "dtls":
            return False
        return self._offer_proto(stream, "RTP/AVP") == "RTP/AVP"

    def _picked(
        self, offered: list[tuple[str, KeyNegotiation]], media: MediaDescription, names: set[str]
    ) -> tuple[str, KeyNegotiation] | None:
        """Which of our ``offered`` key exchanges the answer took: the first whose attribute it
        carries (a=crypto, a=fingerprint, a=zrtp-hash), or, for methods with keys in SDP or
        DTLS, an SRTP profile answered without it (which then fails with the reason why)."""
        for name, negotiation in offered:
            exchange = self._by_name.get(name)
            attribute = getattr(exchange, "sdp_attribute", None)
            if isinstance(attribute, str) and attribute in names:
                return name, negotiation
        if media.crypto or media.proto.upper() in _PLAIN_OF:
            for name, negotiation in offered:
                if _profile(self._by_name.get(name)) != "rtp":
                    return name, negotiation
        return None

    def take_answer(self, answer: SessionDescription) -> SessionDescription:
        """The peer's answer to our offer: complete each negotiation; the answer as the session
        must see it. Raises :class:`MediaSecurityRefused` (the peer's answer is unusable), or
        :class:`KeyExchangeFailed` (a plugin raised anything else on it).

        All or nothing: :meth:`read_answer`, then :meth:`apply_answer`. A caller whose next
        step may refuse the same answer (the media session's, for an early answer) calls the
        two itself, around that step. The answer is final (a 2xx's, or an ACK's: every
        caller's but the early answer's): :meth:`answer_confirmed` follows."""
        read = self.read_answer(answer)
        self.apply_answer(read)
        self.answer_confirmed()
        return read.plain

    def read_answer(
        self, answer: SessionDescription, *, final: bool = True, another_phone: bool = False
    ) -> AnswerRead:
        """The peer's answer to our offer read, each negotiation completed, and nothing of the
        leg changed: what each stream becomes is in the result, which :meth:`apply_answer`
        puts in force. Raises as :meth:`take_answer`.

        ``final``: the exchange's last answer (a 2xx's, an ACK's), not an early one (a 183's).
        Where an early answer in clear was taken (best effort: the stream's ``declined``), it
        may take up a key exchange our offer made there: the 2xx of another forked phone, or
        of the same dialog when its SDP is not the 183's (a PBX's early media in clear from
        its own media server, then its phone's answer with keys; RFC 3261 §13.2.1 wants the
        two the same, and the 2xx's is the one the phone uses).

        ``another_phone``: the answer is a final one (a 2xx) from another early dialog than
        the early answer in force (a proxy downstream forked our offer, RFC 3261 §16.7,
        §12.1.2): another phone answered. A stream keyed on the media path whose negotiation
        offers ``for_another_phone()`` (the ``dtls`` and ``zrtp`` engines',
        docs/plugin_hooks.md) gets a fresh negotiation of the same offer for that phone, its
        keys none until its own exchange gives them (RFC 5763 §5: an association per
        answering phone; RFC 6189 §8.1: an exchange bound to that phone's Hello; the early
        phone's keys are not that phone's). Without it, such an answer is read as any other
        (before session 51, a DTLS answer with another certificate was refused so, "a second
        answer changes the DTLS parameters", and a ZRTP one taken as a repeated answer).

        A refused answer (here, or by a later step before :meth:`apply_answer`) leaves the
        keys in force as they were: a fork's 183 whose second line is refused after its first
        took a key is ignored and the call goes on with the early media it had (CallRinging),
        which an answer later taken, or our ACK's keying, must not find replaced by the
        refused fork's key. A key exchange plugin's negotiation has read the answer all the
        same (plugins keep no undo): the keys it reported are kept aside (``_unapplied``) for
        an answer that repeats that line, for which it reports nothing new."""
        taken: list[tuple[StreamSecurity, dict[str, Any]]] = []
        reported: dict[int, tuple[KeyNegotiation, SrtpKeys]] = {}
        binds: list[tuple[StreamSecurity, str, KeyNegotiation, AttributePairs]] = []
        try:
            media_out = self._answer_streams(
                answer, taken, reported, binds, final=final, another_phone=another_phone
            )
            ice = self.ice.read_remote(answer)
        finally:
            self._unapplied.update(reported)
        return AnswerRead(
            offered=self._offered,
            plain=_without_session_keys(answer.with_media(media_out)),
            changes=tuple(taken),
            reported=tuple(reported),
            ice=ice,
            fax=any([m.port != 0 and StreamSecurity.fax_proto(m.proto) for m in answer.media]),
            binds=tuple(binds),
        )

    def apply_answer(self, read: AnswerRead) -> None:
        """Put the answer :meth:`read_answer` read in force: its streams' keys, profiles and
        key exchanges, its ICE credentials; the offer's streams are the leg's. Raises nothing
        of the peer's; :class:`LocalMediaError` when another offer or answer came between."""
        if read.offered is not self._offered:
            raise LocalMediaError("the answer read is not to the offer in progress on the leg")
        # The negotiations that only checked the answer take it now that nothing refused it
        # (an answer refused before this, a fork's 183, bound none of them: another fork's
        # answer to the same offer is read on its own merits, RFC 3261 §16.7, §12.1.2).
        bound: list[tuple[StreamSecurity, SrtpKeys]] = []
        for stream, name, negotiation, attributes in read.binds:
            drained = StreamSecurity()
            refusal: SdpError | None = None
            with self._plugin(name):
                try:
                    negotiation.remote_sdp_attributes(attributes)
                except SdpError as exc:
                    refusal = exc
                failed = _drain(negotiation, drained)
            if refusal is not None or failed is not None:
                # Its check took what it then refused: the plugin's bug, not the peer's.
                self.failed(name)
                raise KeyExchangeFailed(
                    name, refusal or LocalMediaError("refused an answer it had checked")
                )
            if drained.keys is not None:
                bound.append((stream, drained.keys))
        for key in read.reported:
            self._unapplied.pop(key, None)
        for stream, change in read.changes:
            for field, value in change.items():
                setattr(stream, field, value)
        for stream, keys in bound:
            stream.keys = keys
        self.ice.take_answer(read.ice)
        self._fax_passed = self._fax_passed or read.fax
        self.streams = self._offered
        self._before_offer = None

    def _answer_streams(
        self,
        answer: SessionDescription,
        taken: list[tuple[StreamSecurity, dict[str, Any]]],
        reported: dict[int, tuple[KeyNegotiation, SrtpKeys]],
        binds: list[tuple[StreamSecurity, str, KeyNegotiation, AttributePairs]],
        *,
        final: bool,
        another_phone: bool,
    ) -> list[MediaDescription]:
        """:meth:`take_answer`'s reading of each m= line: the plain media for the session;
        each stream's changes go in ``taken``, the keys its negotiations reported in
        ``reported``, the negotiations that take their part only once the whole answer is
        taken in ``binds``, and nothing of the leg's changes. ``final`` and ``another_phone``
        as for :meth:`read_answer`."""
        media_out: list[MediaDescription] = []
        session_attributes = _pairs(answer.attributes)
        for index, media in enumerate(answer.media):
            stream = self._offered[index] if index < len(self._offered) else StreamSecurity()
            change: dict[str, Any] = {"rejected": media.port == 0, "peer_proto": media.proto}
            offered = _offered_exchanges(stream, final)
            if stream.declined and final:
                # The exchange's last answer: nothing left to take up.
                change["declined"], change["declined_keys"] = [], None
            elif stream.declined and media.port != 0:
                self._refuse_keys_early(index, stream, media, session_attributes)
            session_proto = None
            if media.port != 0 and index < len(self._offered):
                session_proto = self._answered_profile(index, stream, offered, media)
            if media.port != 0 and offered:
                attributes = _pairs(media.attributes) + session_attributes
                picked = self._picked(offered, media, {name.lower() for name, _ in attributes})
                change["alternatives"] = []
                if picked is not None:
                    name, negotiation = picked
                    keys = stream.keys
                    # Declined by the early answer in force, in clear (best effort): taken up
                    # by the final answer, so that the call is encrypted after all.
                    taken_up = stream.negotiation is None
                    if name != stream.key_exchange:
                        change["negotiation"], change["key_exchange"] = negotiation, name
                        change["media_path"] = _on_media_path(self._by_name[name])
                        keys = None
                    if (
                        taken_up
                        and negotiation is stream.declined[0][1]
                        and _key_part(self._by_name.get(name), attributes) == stream.answered_with
                    ):
                        # The negotiation the early answer in clear replaced, its answer
                        # repeated: the keys it had (a new answer reports its own).
                        keys = stream.declined_keys
                    if another_phone and (name == stream.key_exchange or taken_up):
                        fresh = self._for_another_phone(name, negotiation)
                        if fresh is not None:
                            negotiation = change["negotiation"] = fresh
                            change["rtcp_negotiation"] = None  # the handshake task's, anew
                            change["rtcp_keys"] = keys = None
                    check = getattr(negotiation, "check_remote_sdp_attributes", None)
                    if callable(check):
                        # A negotiation that can check an answer without taking it takes it
                        # only in apply_answer: a refused answer (this line's keys, another
                        # line, the media session's check after this) binds nothing, so the
                        # negotiation is as before it for another forked phone's answer
                        # (docs/media_security.md, "Forked SDES callees").
                        with self._plugin(name):
                            try:
                                refused = check(attributes)
                            except SdpError as exc:
                                refused = exc.reason
                        if refused is not None:
                            self.failed(name)
                            raise MediaSecurityRefused(f"the answer's keys are unusable: {refused}")
                        binds.append((stream, name, negotiation, attributes))
                        change["keys"] = keys
                        change["answered_with"] = _key_part(self._by_name.get(name), attributes)
                        taken.append((stream, change))
                        media_out.append(self._session_media(media, stream, session_proto))
                        continue
                    drained = StreamSecurity()
                    with self._plugin(name):
                        # A failure is queued as NegotiationFailed too, which _drain reports.
                        with contextlib.suppress(SdpError):
                            negotiation.remote_sdp_attributes(attributes)
                        failed = _drain(negotiation, drained)
                    if failed is not None:
                        self.failed(name)
                        self._failed_on_answer[id(negotiation)] = (negotiation, failed)
                        raise MediaSecurityRefused(f"the answer's keys are unusable: {failed}")
                    earlier = self._unapplied.get(id(negotiation))
                    if drained.keys is not None:
                        reported[id(negotiation)] = (negotiation, drained.keys)
                    elif earlier is not None:
                        reported[id(negotiation)] = earlier
                    if id(negotiation) in reported:
                        keys = reported[id(negotiation)][1]
                    earlier_failure = self._failed_on_answer.get(id(negotiation))
                    part = _key_part(self._by_name.get(name), attributes)
                    if earlier_failure is not None and (
                        keys is None or stream.answered_with != part
                    ):
                        # A plugin without check_remote_sdp_attributes: its negotiation failed
                        # on an earlier answer to this offer (another forked phone's 183,
                        # refused) and stays failed. This answer's keys reach nothing: taken,
                        # the line would stay blocked (no key in force), or keep the keys of
                        # the phone that answered before, which this one does not have
                        # (another phone's new keys: its SRTP would fail to authenticate).
                        # Silent either way, the whole call: refused, saying why. Only the
                        # answer in force repeated (that phone's 200) is taken.
                        raise MediaSecurityRefused(
                            f"the answer's keys are unusable: m= line {index + 1}'s {name} key "
                            "exchange failed on an earlier answer to this offer (another forked "
                            f"phone's): {earlier_failure[1]}"
                        )
                    change["keys"] = keys
                    change["answered_with"] = part
                elif self.policy.allow_cleartext:
                    change["negotiation"], change["key_exchange"] = None, None  # cleartext
                    change["media_path"] = False
                    # No key of another phone's exchange stays in force for this one (its
                    # packets would fail to authenticate, or ours be sent under a key it
                    # does not have: a call up without audio).
                    change["keys"], change["rtcp_negotiation"], change["rtcp_keys"] = (
                        None,
                        None,
                        None,
                    )
                    change["declined"] = [] if final else offered
                    kept = stream.keys if stream.negotiation is not None else stream.declined_keys
                    change["declined_keys"] = None if final else kept
                else:
                    raise MediaSecurityRefused(
                        f"policy {self.policy.name} requires encrypted media; the answer "
                        f"declined it ({media.proto})"
                    )
            media_out.append(self._session_media(media, stream, session_proto))
            taken.append((stream, change))
        return media_out

    def _refuse_keys_early(
        self,
        index: int,
        stream: StreamSecurity,
        media: MediaDescription,
        session_attributes: AttributePairs,
    ) -> None:
        """An early answer with keys (a=crypto, a=zrtp-hash) after an early answer in clear
        was taken (``stream.declined``): refused, so ignored as any refused early answer (the
        early media stays as it was). Read as cleartext, the relay would pass the phone's
        SRTP to the caller as RTP (noise) and send it RTP; taken, the early media would change
        phones, which only the final answer does (it takes the keys up, :meth:`read_answer`)."""
        attributes = _pairs(media.attributes) + session_attributes
        if self._picked(stream.declined, media, {name.lower() for name, _ in attributes}) is None:
            return
        raise MediaSecurityRefused(
            f"m= line {index + 1}: an early answer with keys after an early answer in clear: "
            "the keys are taken from the final answer only"
        )

    def _for_another_phone(self, name: str, negotiation: KeyNegotiation) -> KeyNegotiation | None:
        """A fresh negotiation of our offer for another phone's final answer (:meth:`read_answer`),
        from the engine's optional ``for_another_phone()``; None without it."""
        fresh = getattr(negotiation, "for_another_phone", None)
        if not callable(fresh):
            return None
        with self._plugin(name):
            made: KeyNegotiation = fresh()
        return made

    @staticmethod
    def _session_media(
        media: MediaDescription, stream: StreamSecurity, session_proto: str | None
    ) -> MediaDescription:
        """An answer's m= line as the media session must see it (:meth:`_answer_streams`)."""
        plain = _plain(media)
        if session_proto is not None:
            # A feedback profile answered for a plain one or the reverse (tolerated, see
            # _answered_profile): the session gets its own, a=rtcp-fb only with a
            # feedback profile (RFC 4585 §4.2).
            plain = plain.with_proto(session_proto)
            if session_proto.upper() not in _WITHOUT_FEEDBACK:
                plain = _without_feedback_attributes(plain)
        elif stream.session_proto is not None:
            plain = plain.with_proto(stream.session_proto)
        return plain

    def _answered_profile(
        self,
        index: int,
        stream: StreamSecurity,
        exchanges: list[tuple[str, KeyNegotiation]],
        media: MediaDescription,
    ) -> str | None:
        """Check the transport protocol the peer answered stream ``index`` with against the
        one our offer gave it (the stream's ``peer_proto``), ``exchanges`` the key exchanges our
        offer made there that the answer may take. RFC 3264 §6 (and §5.1, RFC 4568 §7.1.2 for SDES,
        RFC 5764 §8 for DTLS-SRTP): an accepted stream's answer uses the offer's protocol.

        None when they are the same (or either is no RTP profile: T.38's UDPTL and the like are
        the session's to check). A change of security family (RTP/AVP(F) -> RTP/SAVP(F) ->
        UDP/TLS/RTP/SAVP(F), either way) raises :class:`MediaSecurityRefused`: a peer that
        answers SRTP to a plain offer sends packets the relay has no keys for, one that answers
        RTP/AVP to an SRTP offer would make the leg's policy void, and one that answers RTP/SAVP
        to DTLS-SRTP expects keys in SDP that never came. Only the RFC 4585 feedback profile
        differs (RTP/AVP for RTP/AVPF and the like): RFC 4585 §5 and RFC 5124 §6 make an AVPF
        (SAVPF) end interwork with an AVP (SAVP) one and nothing about the keys changes, so
        that is tolerated: the profile the session offered on this leg, which this returns,
        goes to the session (whose own check, RFC 3264 §6, would refuse the peer's). So is
        RTP/SAVP(F) with an a=crypto line answering our best-effort SDES offer (RTP/AVP with
        a=crypto: RFC 8643's OSRTP, whose answerer should keep RTP/AVP): the peer took the keys
        we offered and gives its own, nothing is weaker, and refusing would fail calls that
        encrypt."""
        answered, offered = media.proto, stream.peer_proto
        if offered.upper() == answered.upper():
            return None
        offered_family = _FAMILY_OF.get(offered.upper())
        answered_family = _FAMILY_OF.get(answered.upper())
        if offered_family is None or answered_family is None:
            return None
        if offered_family != answered_family and not (
            offered_family == "rtp"
            and answered_family == "srtp"
            and media.attributes.has("crypto")
            and any(name == "sdes" for name, _ in exchanges)
        ):
            raise MediaSecurityRefused(
                f"m= line {index + 1}: the answer's {answered[:32]} "
                f"({_FAMILY_MEANING[answered_family]}) is not the offer's {offered} "
                f"({_FAMILY_MEANING[offered_family]}): an answer keeps the offer's transport "
                "protocol (RFC 3264 §6)"
            )
        log.info(
            "leg %s (%s): m= line %d answered %s to our %s: tolerated (%s)",
            self.side,
            self.signalling,
            index + 1,
            answered[:32],
            offered,
            "RFC 4585 §5" if offered_family == answered_family else "best-effort SDES, RFC 8643",
        )
        return stream.session_proto or _PLAIN_OF.get(offered.upper(), offered)

    # -- reading --------------------------------------------------------------------------------

    def keys(self, index: int) -> SrtpKeys | None:
        stream = self._stream(index)
        return stream.keys if stream is not None else None

    def rtcp_keys(self, index: int) -> SrtpKeys | None:
        """The SRTCP keys of stream ``index``: those of the RTCP port's own handshake when it
        has one (None until it is done), else the stream's keys (SDES, and DTLS with
        rtcp-mux: RFC 3711 §4.3 derives SRTCP keys from the same master key)."""
        stream = self._stream(index)
        if stream is None:
            return None
        if stream.rtcp_negotiation is not None:
            return stream.rtcp_keys
        return stream.keys

    def separate_rtcp(self, index: int) -> bool:
        """Whether stream ``index``'s RTCP is keyed by a handshake of its own."""
        stream = self._stream(index)
        return stream is not None and stream.rtcp_negotiation is not None

    def media_path_streams(self) -> dict[int, StreamSecurity]:
        """The streams whose keys are agreed on the media path (DTLS-SRTP), by m= line index,
        for the call's handshake task: of the latest offer/answer, those of an offer from the
        peer only once our answer is made (the peer needs our fingerprint first). The task sets
        :attr:`StreamSecurity.keys` from ``KeysReady``."""
        streams = self.streams if self._answer_pending else self._offered
        return {
            index: stream
            for index, stream in enumerate(streams)
            if stream.media_path and stream.negotiation is not None
        }

    def offered_media_path_streams(self) -> dict[int, StreamSecurity]:
        """While the peer's offer waits for our answer: its streams keyed on the media path, by
        m= line index (:meth:`media_path_streams` gives them once our answer is made). The
        call's handshake task hooks their sockets and keeps what a new association's peer sends
        before our answer (RFC 8842 §5; RFC 5763 §5: an offerer that is ``active`` may start
        its handshake as it sends its offer)."""
        if not self._answer_pending:
            return {}
        return {
            index: stream
            for index, stream in enumerate(self._offered)
            if stream.media_path and stream.negotiation is not None
        }

    def keys_handed_out_in_sdp(self) -> list[int]:
        """The streams (m= line indexes) keyed now by a key exchange that carries our keys in
        the SDP (SDES, MIKEY: not on the media path). Every phone our offer reached holds
        those keys of ours: through a forking proxy, more than one (CallForkRekey). DTLS-SRTP
        and ZRTP agree keys per association on the media path: no other phone has them."""
        return [
            index
            for index, stream in enumerate(self.streams)
            if stream.keys is not None and stream.negotiation is not None and not stream.media_path
        ]

    def negotiates_on_media_path(self) -> bool:
        """Whether :meth:`media_path_streams` or :meth:`offered_media_path_streams` has a
        stream (the call's handshake task has work), without building either: the call asks
        at each SDP change, and a plain or SDES leg never has one."""
        if self._answer_pending:
            for stream in self.streams:
                if stream.media_path and stream.negotiation is not None:
                    return True
        for stream in self._offered:  # noqa: SIM110 (no generator: asked at each SDP change)
            if stream.media_path and stream.negotiation is not None:
                return True
        return False

    @property
    def requires_encryption(self) -> bool:
        return not self.policy.allow_cleartext

    def expects_srtp(self, index: int) -> bool:
        """Whether the peer uses (or was offered and may use) SRTP on stream ``index``: an SRTP
        profile, or keys being negotiated. Such a stream never carries cleartext to the peer."""
        for streams in (self.streams, self._offered):
            if index < len(streams):
                stream = streams[index]
                if stream.peer_proto.upper() in _PLAIN_OF or stream.negotiation is not None:
                    return True
        return False

    def record(self) -> dict[str, Any]:
        """This leg's security record (derived from what was negotiated)."""
        record: dict[str, Any] = {
            "policy": self.policy.name,
            "signalling": self.signalling,
            "signalling_secure": self.secure_signalling,
            "streams": [_stream_record(stream) for stream in self.streams],
        }
        if self._fax_passed:
            # Said for the rest of the call, also once the call went back to audio.
            record["fax_t38"] = "passed through, not encrypted"
        device = self.leg.device if self.leg is not None else None
        if device is not None:
            record["device"] = device.name  # its profile may have narrowed the policy
        record.update(self.ice.record())  # ufrags only: never an ice-pwd
        return record

    def _stream(self, index: int) -> StreamSecurity | None:
        return self.streams[index] if index < len(self.streams) else None

    def _previous(self, index: int) -> StreamSecurity | None:
        """Stream ``index`` as a new offer or answer builds on it: None when it has none or
        the latest answer rejected it (:attr:`StreamSecurity.rejected`: keyed afresh)."""
        stream = self._stream(index)
        return None if stream is None or stream.rejected else stream

    def answer_confirmed(self) -> None:
        """A 2xx confirmed the answer to our offer in force (RFC 3261 §13.2.2.4: it makes the
        call; a forking proxy's later 2xx are BYEd, never taken): each stream's negotiation
        that offers the optional ``answer_confirmed()`` (the ``dtls`` engine's: it kept other
        phones' handshakes for another phone's answer to our forked offer, RFC 3261 §16.7,
        docs/plugin_hooks.md) is told, its RTCP port's too. A plugin's exception is its bug:
        raised as :class:`KeyExchangeFailed` (:meth:`_plugin`)."""
        for stream in self.streams:
            for negotiation in (stream.negotiation, stream.rtcp_negotiation):
                confirmed = getattr(negotiation, "answer_confirmed", None)
                if callable(confirmed):
                    with self._plugin(stream.key_exchange):
                        confirmed()

    def failed(self, key_exchange: str | None) -> None:
        """Count a failed negotiation of ``key_exchange`` (from SDP here, from the media path
        by the call's handshakes)."""
        if self.failures is not None:
            self.failures[key_exchange or "unknown"] += 1


def _offered_exchanges(stream: StreamSecurity, final: bool) -> list[tuple[str, KeyNegotiation]]:
    """The key exchanges our offer made on ``stream`` that an answer may take, by name: the one
    in force and those beside it; with none in force (an early answer in clear was taken),
    those it declined, for the final answer only (``LegSecurity.read_answer``)."""
    if stream.negotiation is not None:
        assert stream.key_exchange is not None
        return [(stream.key_exchange, stream.negotiation), *stream.alternatives]
    return list(stream.declined) if final else []


def _drain(negotiation: KeyNegotiation, stream: StreamSecurity) -> str | None:
    """Take the negotiation's queued events into ``stream``; the failure reason, if any."""
    failure: str | None = None
    while (event := negotiation.next_event()) is not None:
        if isinstance(event, KeysReady):
            stream.keys = event.keys
        elif isinstance(event, NegotiationFailed):
            failure = event.reason
    return failure


def _key_part(exchange: object, attributes: AttributePairs) -> AnswerPart:
    """A key exchange's part of an answer's m= line (``StreamSecurity.answered_with``): the
    lines of its ``sdp_attribute`` (a=crypto, a=fingerprint ...), or every attribute for a
    plugin that names none."""
    attribute = getattr(exchange, "sdp_attribute", None)
    if not isinstance(attribute, str):
        return AnswerPart(tuple(attributes))
    return AnswerPart(
        tuple((name, value) for name, value in attributes if name.lower() == attribute)
    )


def _on_media_path(exchange: object) -> bool:
    return bool(getattr(exchange, "media_path", False))


def _profile(exchange: object) -> str:
    """How a key exchange appears in SDP (``KeyExchange``'s optional ``profile``): "sdp",
    "dtls" or "rtp"; plugins without it: "dtls" for a media-path one, else "sdp"."""
    profile = getattr(exchange, "profile", None)
    if profile in ("sdp", "dtls", "rtp"):
        return str(profile)
    return "dtls" if getattr(exchange, "media_path", False) else "sdp"


def _previous_negotiation(previous: StreamSecurity | None, name: str) -> KeyNegotiation | None:
    """The stream's negotiation of key exchange ``name`` before this re-offer: the one in force,
    or one our unanswered offer carried beside it."""
    if previous is None:
        return None
    if previous.key_exchange == name:
        return previous.negotiation
    return next((n for key, n in previous.alternatives if key == name), None)


def _stream_record(stream: StreamSecurity) -> dict[str, Any]:
    if stream.fax:
        # T.38 passthrough: no key exchange, never encrypted (refused where the policy says so).
        fax: dict[str, Any] = {
            "media": "t38",
            "key_exchange": "none",
            "suite": None,
            "encrypted": False,
            "keys_held_by": None,
        }
        if stream.refused is not None:
            fax["refused"] = stream.refused
        return fax
    entry: dict[str, Any] = {
        "key_exchange": stream.key_exchange or "none",
        "suite": stream.keys.suite if stream.keys else None,
        "encrypted": stream.keys is not None,
        # SDES and DTLS-SRTP alike: the gateway holds this leg's keys; media is decrypted here
        # and re-encrypted per leg.
        "keys_held_by": "gateway" if stream.keys else None,
    }
    keys = stream.keys
    if keys is not None and (keys.local_mki is not None or keys.remote_mki is not None):
        # RFC 3711 §3.1, RFC 4568 §6.1: the MKI each direction's packets carry, as the a=crypto
        # line writes it (value:length; None: that direction's packets carry none). Only when
        # one is in use, so records without stay as they were. Not a secret: it travels in clear
        # in every packet and in the SDP.
        entry["our_mki"] = _mki_text(keys.local_mki)
        entry["peer_mki"] = _mki_text(keys.remote_mki)
    if stream.rtcp_negotiation is not None:
        # RFC 5764 §4.1: RTCP on its own port, keyed by its own DTLS handshake.
        entry["rtcp_port_keyed"] = stream.rtcp_keys is not None
    # What the key exchange itself has to say (``KeyNegotiation.security_record``, optional):
    # DTLS-SRTP its role and the certificate the peer proved, ZRTP the SAS the phone shows...
    details = getattr(stream.negotiation, "security_record", None)
    if callable(details):
        entry.update((name, value) for name, value in details().items() if isinstance(value, str))
    return entry


def _mki_text(mki: bytes | None) -> str | None:
    """An MKI as an a=crypto line writes it: its value, a colon, its length in octets."""
    return None if mki is None else f"{int.from_bytes(mki, 'big')}:{len(mki)}"


def _one_session_level_mikey_stream(offer: SessionDescription) -> None:
    """A session-level a=key-mgmt is one MIKEY exchange for the whole session, its crypto
    sessions told apart only by SSRC (RFC 4567 §4), which the gateway cannot know in advance:
    it keys one stream. Applied to several (each checked and keyed on its own) it would be
    refused as a replay, or key them all alike, so such an offer is refused saying why."""
    if offer.attributes.get("key-mgmt") is None:
        return
    streams = [
        media
        for media in offer.media
        if media.port != 0
        and media.proto.upper() in _RTP_PROFILES
        and media.attributes.get("key-mgmt") is None
    ]
    if len(streams) > 1:
        raise MediaSecurityRefused(
            "a session-level MIKEY message for several streams is not supported: the gateway "
            "cannot tell their crypto sessions apart (give each m= line its own a=key-mgmt)"
        )


def _pairs(attributes: Iterable[Any]) -> list[tuple[str, str | None]]:
    """SDP attributes as (name, value) pairs, the form key exchanges read."""
    return [(attribute[0], attribute[1]) for attribute in attributes]


def _without_session_keys(sd: SessionDescription) -> SessionDescription:
    """``sd`` without session-level key attributes (a=fingerprint and a=setup may sit there,
    RFC 8122 §5): the other leg must never see this leg's."""
    kept = [a for a in _pairs(sd.attributes) if a[0].lower() not in _KEY_ATTRIBUTES]
    if len(kept) == len(sd.attributes):
        return sd  # none there (a plain phone's SDP): nothing to rebuild
    return sd.with_attributes(kept)


def _muxed(media: MediaDescription) -> MediaDescription:
    """``media`` with a=rtcp-mux (RFC 5761 §5.1.1) when it is an accepted RTP line without."""
    if media.port != 0 and media.is_rtp and not media.rtcp_mux:
        return media.with_attributes(media.attributes.add("rtcp-mux"))
    return media


def _without_feedback(media: MediaDescription) -> MediaDescription:
    """``media`` with the plain profile instead of RFC 4585's feedback one, and without
    a=rtcp-fb, which RFC 4585 §4.2 allows only with a feedback profile."""
    plain = _WITHOUT_FEEDBACK.get(media.proto.upper())
    if plain is None:
        return media
    attributes = [a for a in media.attributes if a[0].lower() != "rtcp-fb"]
    return media.with_attributes(attributes, plain)


def _without_feedback_attributes(media: MediaDescription) -> MediaDescription:
    """``media`` without a=rtcp-fb (RFC 4585 §4.2: only with a feedback profile)."""
    if not media.attributes.has("rtcp-fb"):
        return media
    return media.with_attributes([a for a in media.attributes if a[0].lower() != "rtcp-fb"])


def _plain(media: MediaDescription) -> MediaDescription:
    """The stream as the session relays it: plain profile, no key attributes."""
    attributes = [a for a in media.attributes if a[0].lower() not in _KEY_ATTRIBUTES]
    proto = _PLAIN_OF.get(media.proto.upper(), media.proto)
    if proto == media.proto and len(attributes) == len(media.attributes):
        return media  # plain already (a plain RTP phone's line): nothing to rebuild
    return media.with_attributes(attributes, proto)
