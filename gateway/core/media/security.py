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
  policy allows it, or refuses.

DTLS-SRTP (issue #6) goes through the same steps: its m= profile is UDP/TLS/RTP/SAVP(F) (RFC
5764 §8), only the ``media_path`` key exchanges answer such a stream and only they are offered
with it (never under a policy that allows cleartext: that profile has no fallback to RTP), and
a=fingerprint, a=setup and a=tls-id are stripped at media and session level like a=crypto. Its
keys come later, from the handshake on the media port: :meth:`media_path_streams` lists those
streams for the call's handshake task (gateway.core.media.handshakes), which sets each stream's
``keys``; until then the stream "expects SRTP" and
:class:`~gateway.core.media.keying.CallKeying` blocks it.

SDES keys travel in SDP, so the gateway never sends nor accepts them on a leg whose signalling is
not TLS (the briefing paper's rule; RFC 4568 §8.1 requires a secure channel). :meth:`record`
gives the leg's security record, derived from what was negotiated, never written by hand.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from gateway.core.interfaces import (
    KeyExchange,
    KeyNegotiation,
    KeysReady,
    MediaPolicy,
    NegotiationFailed,
    SrtpKeys,
)
from gateway.core.sdp.errors import SdpError
from gateway.core.sdp.model import MediaDescription, SessionDescription

# RTP profiles with SRTP and the plain profile each maps to (RFC 3711 §12, RFC 5124, and
# DTLS-SRTP's RFC 5764 §8).
_PLAIN_OF = {
    "RTP/SAVP": "RTP/AVP",
    "RTP/SAVPF": "RTP/AVPF",
    "UDP/TLS/RTP/SAVP": "RTP/AVP",
    "UDP/TLS/RTP/SAVPF": "RTP/AVPF",
}
_SECURE_OF = {"RTP/AVP": "RTP/SAVP", "RTP/AVPF": "RTP/SAVPF"}
# The profile a key exchange on the media path (DTLS-SRTP) is offered with (RFC 5764 §8).
_DTLS_OF = {"RTP/AVP": "UDP/TLS/RTP/SAVP", "RTP/AVPF": "UDP/TLS/RTP/SAVPF"}
# RFC 4585 feedback profile -> the plain one: what we offer a leg that is not known to take
# feedback profiles (see LegSecurity's ``offer_feedback``).
_WITHOUT_FEEDBACK = {"RTP/AVPF": "RTP/AVP"}
# Attributes that carry a leg's own keys or key-exchange identity and never cross to the other
# leg: SDES keys (RFC 4568), DTLS fingerprints and roles (RFC 8122, RFC 4145, RFC 8842).
_KEY_ATTRIBUTES = frozenset({"crypto", "fingerprint", "setup", "tls-id"})


class MediaSecurityRefused(SdpError):
    """The leg's media-security policy refuses this SDP (488 with the reason as Warning)."""


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
    ) -> None:
        self.side = side
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
        self.streams: list[StreamSecurity] = []
        self._offered: list[StreamSecurity] = []
        self._answer_pending = False  # the peer offered; our answer is not made yet

    # -- the peer offers ------------------------------------------------------------------------

    def take_offer(self, offer: SessionDescription) -> SessionDescription:
        """Start answering negotiations for the peer's offer; the offer as the session must see
        it (plain profile, no keys). Raises :class:`MediaSecurityRefused`."""
        streams: list[StreamSecurity] = []
        media_out: list[MediaDescription] = []
        session_attributes = _pairs(offer.attributes)
        for index, media in enumerate(offer.media):
            previous = self._stream(index)
            stream = StreamSecurity(peer_proto=media.proto)
            if media.port != 0 and media.proto.upper() in _PLAIN_OF | _SECURE_OF:
                self._answer_stream(media, stream, previous, session_attributes)
            streams.append(stream)
            media_out.append(_plain(media))
        self._offered = streams
        self._answer_pending = True
        return _without_session_keys(attrs.evolve(offer, media=tuple(media_out)))

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
        for name, exchange in self._exchanges:
            # DTLS-SRTP only under UDP/TLS/RTP/SAVP(F) (RFC 5764 §8), SDES never there.
            if bool(getattr(exchange, "media_path", False)) != over_dtls:
                continue
            same = previous is not None and previous.key_exchange == name
            negotiation = exchange.answer(
                # The media-level attributes, then the session-level ones (RFC 8122 §5).
                _pairs(media.attributes) + session_attributes,
                suites=self.policy.suites,
                secure_signalling=self.secure_signalling,
                previous=previous.negotiation if same and previous is not None else None,
            )
            if negotiation is None:
                continue  # this method is not in the offer
            failed = _drain(negotiation, stream)
            if failed is None:
                stream.negotiation, stream.key_exchange = negotiation, name
                stream.media_path = over_dtls
                if stream.keys is None and previous is not None and previous.key_exchange == name:
                    stream.keys = previous.keys  # keys unchanged (RFC 4568 §7.1.4)
                return
            reasons.append(f"{name}: {failed}")
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
        and our keys per stream."""
        media_out: list[MediaDescription] = []
        for index, media in enumerate(answer.media):
            stream = self._offered[index] if index < len(self._offered) else StreamSecurity()
            if media.port == 0:
                media_out.append(attrs.evolve(media, proto=stream.peer_proto))
                continue
            attributes: list[tuple[str, str | None]] = list(media.attributes)
            if stream.negotiation is not None:
                attributes += stream.negotiation.local_sdp_attributes()
                proto = stream.peer_proto
            else:
                proto = _PLAIN_OF.get(stream.peer_proto.upper(), stream.peer_proto)
            media_out.append(attrs.evolve(media.with_attributes(attributes), proto=proto))
        self.streams = self._offered
        self._answer_pending = False
        return attrs.evolve(answer, media=tuple(media_out))

    # -- we offer -------------------------------------------------------------------------------

    def make_offer(self, offer: SessionDescription) -> SessionDescription:
        """Our offer on this leg (from the session's plain offer). Raises
        :class:`MediaSecurityRefused` when the policy needs encryption this leg cannot get."""
        streams: list[StreamSecurity] = []
        media_out: list[MediaDescription] = []
        for index, offered in enumerate(offer.media):
            media = offered if self.offer_feedback else _without_feedback(offered)
            stream = StreamSecurity(peer_proto=media.proto)
            if media.proto != offered.proto:
                stream.session_proto = offered.proto
            if media.port == 0 or media.proto.upper() not in _SECURE_OF:
                streams.append(stream)
                media_out.append(media)
                continue
            previous = self._stream(index)
            reasons: list[str] = []
            for name, exchange in self._exchanges:
                media_path = bool(getattr(exchange, "media_path", False))
                if media_path and self.policy.allow_cleartext:
                    # UDP/TLS/RTP/SAVP cannot fall back to RTP (only SDP capability
                    # negotiation, RFC 5939, could offer both): a best-effort offer would be
                    # refused by every device without DTLS-SRTP. So best effort offers SDES.
                    continue
                same = previous is not None and previous.key_exchange == name
                negotiation = exchange.offer(
                    suites=self.policy.suites,
                    secure_signalling=self.secure_signalling,
                    previous=previous.negotiation if same and previous is not None else None,
                )
                failed = _drain(negotiation, stream)
                if failed is None:
                    stream.negotiation, stream.key_exchange = negotiation, name
                    stream.media_path = media_path
                    if previous is not None and previous.key_exchange == name:
                        stream.keys = previous.keys
                    break
                reasons.append(f"{name}: {failed}")
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
            # RFC 4568 over RTP/AVP is best effort: a device without SRTP ignores a=crypto.
            if stream.media_path:
                proto = _DTLS_OF[media.proto.upper()]
            elif self.policy.allow_cleartext:
                proto = media.proto
            else:
                proto = _SECURE_OF[media.proto.upper()]
            stream.peer_proto = proto
            attributes: list[tuple[str, str | None]] = list(media.attributes)
            attributes += stream.negotiation.local_sdp_attributes()
            media_out.append(attrs.evolve(media.with_attributes(attributes), proto=proto))
            streams.append(stream)
        self._offered = streams
        self._answer_pending = False
        return attrs.evolve(offer, media=tuple(media_out))

    def take_answer(self, answer: SessionDescription) -> SessionDescription:
        """The peer's answer to our offer: complete each negotiation; the answer as the session
        must see it. Raises :class:`MediaSecurityRefused`."""
        media_out: list[MediaDescription] = []
        session_attributes = _pairs(answer.attributes)
        for index, media in enumerate(answer.media):
            stream = self._offered[index] if index < len(self._offered) else StreamSecurity()
            if media.port != 0 and stream.negotiation is not None:
                if media.crypto or media.proto.upper() in _PLAIN_OF:
                    # A failure is queued as NegotiationFailed too, which _drain reports.
                    with contextlib.suppress(SdpError):
                        stream.negotiation.remote_sdp_attributes(
                            _pairs(media.attributes) + session_attributes
                        )
                    failed = _drain(stream.negotiation, stream)
                    if failed is not None:
                        raise MediaSecurityRefused(f"the answer's keys are unusable: {failed}")
                elif self.policy.allow_cleartext:
                    stream.negotiation, stream.key_exchange = None, None  # declined: cleartext
                else:
                    raise MediaSecurityRefused(
                        f"policy {self.policy.name} requires encrypted media; the answer "
                        f"declined it ({media.proto})"
                    )
            stream.peer_proto = media.proto
            plain = _plain(media)
            if stream.session_proto is not None:
                plain = attrs.evolve(plain, proto=stream.session_proto)
            media_out.append(plain)
        self.streams = self._offered
        return _without_session_keys(attrs.evolve(answer, media=tuple(media_out)))

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
        return {
            "policy": self.policy.name,
            "signalling": self.signalling,
            "signalling_secure": self.secure_signalling,
            "streams": [_stream_record(stream) for stream in self.streams],
        }

    def _stream(self, index: int) -> StreamSecurity | None:
        return self.streams[index] if index < len(self.streams) else None


def _drain(negotiation: KeyNegotiation, stream: StreamSecurity) -> str | None:
    """Take the negotiation's queued events into ``stream``; the failure reason, if any."""
    failure: str | None = None
    while (event := negotiation.next_event()) is not None:
        if isinstance(event, KeysReady):
            stream.keys = event.keys
        elif isinstance(event, NegotiationFailed):
            failure = event.reason
    return failure


def _stream_record(stream: StreamSecurity) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "key_exchange": stream.key_exchange or "none",
        "suite": stream.keys.suite if stream.keys else None,
        "encrypted": stream.keys is not None,
        # SDES and DTLS-SRTP alike: the gateway holds this leg's keys; media is decrypted here
        # and re-encrypted per leg.
        "keys_held_by": "gateway" if stream.keys else None,
    }
    if stream.rtcp_negotiation is not None:
        # RFC 5764 §4.1: RTCP on its own port, keyed by its own DTLS handshake.
        entry["rtcp_port_keyed"] = stream.rtcp_keys is not None
    # DTLS-SRTP (the engine exposes these): our DTLS role and the certificate the peer proved.
    for name in ("dtls_role", "peer_certificate_sha256"):
        value = getattr(stream.negotiation, name, None)
        if isinstance(value, str):
            entry[name] = value
    return entry


def _pairs(attributes: Iterable[Any]) -> list[tuple[str, str | None]]:
    """SDP attributes as (name, value) pairs, the form key exchanges read."""
    return [(attribute[0], attribute[1]) for attribute in attributes]


def _without_session_keys(sd: SessionDescription) -> SessionDescription:
    """``sd`` without session-level key attributes (a=fingerprint and a=setup may sit there,
    RFC 8122 §5): the other leg must never see this leg's."""
    kept = [a for a in _pairs(sd.attributes) if a[0].lower() not in _KEY_ATTRIBUTES]
    return sd.with_attributes(kept)


def _without_feedback(media: MediaDescription) -> MediaDescription:
    """``media`` with the plain profile instead of RFC 4585's feedback one, and without
    a=rtcp-fb, which RFC 4585 §4.2 allows only with a feedback profile."""
    plain = _WITHOUT_FEEDBACK.get(media.proto.upper())
    if plain is None:
        return media
    attributes = [a for a in media.attributes if a[0].lower() != "rtcp-fb"]
    return attrs.evolve(media.with_attributes(attributes), proto=plain)


def _plain(media: MediaDescription) -> MediaDescription:
    """The stream as the session relays it: plain profile, no key attributes."""
    attributes = [a for a in media.attributes if a[0].lower() not in _KEY_ATTRIBUTES]
    stripped = media.with_attributes(attributes)
    return attrs.evolve(stripped, proto=_PLAIN_OF.get(media.proto.upper(), media.proto))
