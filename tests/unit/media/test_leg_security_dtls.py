"""LegSecurity with DTLS-SRTP, sans-IO: the gateway's leg and a phone, both the real engine."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from gateway.core.interfaces import KeysReady
from gateway.core.media.policy import BUILTIN_POLICIES
from gateway.core.media.security import LegSecurity, MediaSecurityRefused
from gateway.core.sdp.model import SessionDescription
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.core.sdp.serializer import serialize_sdp
from gateway.plugins.keyexchange.dtls_certificates import generate_identity
from gateway.plugins.keyexchange.dtls_srtp import DtlsKeyExchange, DtlsNegotiation

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
MONTH = datetime.timedelta(days=30)
GATEWAY_ID = generate_identity(now=NOW, max_age=MONTH)
PHONE_ID = generate_identity(now=NOW, max_age=MONTH)

# The session's plain answer, which LegSecurity turns into ours.
PLAIN_ANSWER = """v=0
o=voipgw 1 1 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio 40000 RTP/AVP 0
a=rtpmap:0 PCMU/8000
a=rtcp-mux
a=sendrecv
"""


def sdp(text: str) -> SessionDescription:
    return parse_sdp_untrusted(text.replace("\n", "\r\n").encode())


def phone_offer(negotiation: DtlsNegotiation, version: int) -> SessionDescription:
    ours = dict(negotiation.local_sdp_attributes())
    return sdp(
        f"v=0\no=- 1 {version} IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\n"
        "m=audio 20000 UDP/TLS/RTP/SAVP 0\na=rtpmap:0 PCMU/8000\na=rtcp-mux\n"
        f"a=fingerprint:{ours['fingerprint']}\na=setup:{ours['setup']}\n"
        f"a=tls-id:{ours['tls-id']}\na=sendrecv\n"
    )


def drive(gateway: LegSecurity, phone: DtlsNegotiation) -> None:
    """Move datagrams both ways as the call's handshake task does: to and from the negotiation
    of each stream LegSecurity says is on the media path now, its KeysReady into the stream."""
    for _ in range(20):
        (stream,) = gateway.media_path_streams().values()
        negotiation = stream.negotiation
        assert negotiation is not None
        moved = False
        for datagram in negotiation.packets_to_send(now=0.0):
            phone.receive_packet(datagram, now=0.0)
            moved = True
        for datagram in phone.packets_to_send(now=0.0):
            negotiation.receive_packet(datagram, now=0.0)
            moved = True
        while (event := negotiation.next_event()) is not None:
            if isinstance(event, KeysReady):
                stream.keys = event.keys
        if not moved:
            return


def test_a_re_offer_while_the_handshake_is_under_way_keeps_the_keys_it_then_agrees() -> None:
    """baresip with ICE re-INVITEs with its updated candidates as soon as its checks are done,
    which is when our DTLS ClientHello reaches it (relay.py sends it once a check selects the
    address): the re-offer keeps the association (same tls-id and fingerprint, RFC 8842 §5),
    and the handshake finishes on the stream in force while the other leg is asked for its
    answer. Our answer then puts the re-offer's streams in force: they must have the keys the
    handshake agreed meanwhile, else the leg's media stays blocked for the rest of the call."""
    gateway = LegSecurity(
        side="a",
        policy=BUILTIN_POLICIES["dtls"],
        secure_signalling=False,
        key_exchanges={"dtls": DtlsKeyExchange(identity=lambda: GATEWAY_ID)},
        signalling="udp",
    )
    phones = DtlsKeyExchange(identity=lambda: PHONE_ID)
    phone = phones.offer(suites=[], secure_signalling=False)
    gateway.take_offer(phone_offer(phone, 1))
    answer = gateway.make_answer(sdp(PLAIN_ANSWER))
    media = answer.media[0]
    phone.remote_sdp_attributes(
        [(a.name, a.value) for a in media.attributes]
        + [(a.name, a.value) for a in answer.attributes]
    )
    # Our ClientHello reaches the phone; its flight back has not reached us yet.
    (stream,) = gateway.media_path_streams().values()
    assert stream.negotiation is not None
    for datagram in stream.negotiation.packets_to_send(now=0.0):
        phone.receive_packet(datagram, now=0.0)

    re_offer = phones.offer(suites=[], secure_signalling=False, previous=phone)
    gateway.take_offer(phone_offer(re_offer, 2))
    drive(gateway, phone)  # the handshake ends before the other leg's answer
    agreed = gateway.keys(0)  # in the streams still in force
    assert agreed is not None and phone.keys is not None
    assert agreed.local_key == phone.keys.remote_key
    gateway.make_answer(sdp(PLAIN_ANSWER))
    assert gateway.keys(0) == agreed


def test_a_best_effort_leg_keyed_by_dtls_is_re_offered_dtls() -> None:
    """Best effort never makes a first offer in UDP/TLS/RTP/SAVP (no fallback to RTP), but a
    re-offer on a line DTLS-SRTP keys already keeps it, the association with it (same
    fingerprint and tls-id, the role already settled, RFC 8842 §5): a browser calling out
    under the default policy is re-offered by the gateway when the other leg re-INVITEs or
    transfers it, and Chrome takes no re-offer that drops DTLS; a SIP phone would lose its
    encryption. A leg never keyed by DTLS is offered as before."""
    for signalling in ("ws", "udp"):
        gateway = LegSecurity(
            side="a",
            policy=BUILTIN_POLICIES["best-effort"],
            secure_signalling=False,
            key_exchanges={"dtls": DtlsKeyExchange(identity=lambda: GATEWAY_ID)},
            signalling=signalling,
        )
        fresh = gateway.make_offer(sdp(PLAIN_ANSWER)).media[0]
        assert fresh.proto == "RTP/AVP" and not fresh.attributes.has("fingerprint")
        phone = DtlsKeyExchange(identity=lambda: PHONE_ID).offer(suites=[], secure_signalling=False)
        gateway.take_offer(phone_offer(phone, 1))
        answered = gateway.make_answer(sdp(PLAIN_ANSWER)).media[0]
        (reoffered,) = gateway.make_offer(sdp(PLAIN_ANSWER.replace(" 1 1 ", " 1 2 "))).media
        assert reoffered.proto == "UDP/TLS/RTP/SAVP", signalling
        for name in ("fingerprint", "tls-id", "setup"):
            assert reoffered.attributes.get(name) == answered.attributes.get(name), name


def test_a_rekey_re_offer_keeps_a_dtls_association_and_hands_out_no_keys() -> None:
    """Keys agreed on the media path are the association's, with one phone alone: a forked
    callee's answer is never re-keyed for them (fork_rekey.py), and a re-offer asked to re-key
    (``rekey=True``, for the keys a leg hands out in SDP) keeps the association (same tls-id
    and fingerprint, RFC 8842 §5) instead of restarting the handshake."""
    gateway = LegSecurity(
        side="a",
        policy=BUILTIN_POLICIES["dtls"],
        secure_signalling=False,
        key_exchanges={"dtls": DtlsKeyExchange(identity=lambda: GATEWAY_ID)},
        signalling="udp",
    )
    phone = DtlsKeyExchange(identity=lambda: PHONE_ID).offer(suites=[], secure_signalling=False)
    gateway.take_offer(phone_offer(phone, 1))
    answer = gateway.make_answer(sdp(PLAIN_ANSWER))
    media = answer.media[0]
    phone.remote_sdp_attributes(
        [(a.name, a.value) for a in media.attributes]
        + [(a.name, a.value) for a in answer.attributes]
    )
    drive(gateway, phone)
    assert gateway.keys(0) is not None
    assert gateway.keys_handed_out_in_sdp() == []
    reoffer = gateway.make_offer(sdp(PLAIN_ANSWER), rekey=True).media[0]
    assert reoffer.attributes.get("tls-id") == media.attributes.get("tls-id")
    assert reoffer.attributes.get("fingerprint") == media.attributes.get("fingerprint")


class _Recording(DtlsKeyExchange):
    """The dtls engine, keeping every negotiation its answer() returns."""

    def __init__(self) -> None:
        super().__init__(identity=lambda: GATEWAY_ID)
        self.answers: list[DtlsNegotiation] = []

    def answer(self, *args: Any, **kwargs: Any) -> DtlsNegotiation | None:
        negotiation = super().answer(*args, **kwargs)
        if negotiation is not None:
            self.answers.append(negotiation)
        return negotiation


def _answered_leg() -> tuple[LegSecurity, _Recording, DtlsNegotiation]:
    """A leg keyed by the phone's first offer (its handshake not run: not needed here)."""
    engine = _Recording()
    gateway = LegSecurity(
        side="a",
        policy=BUILTIN_POLICIES["dtls"],
        secure_signalling=False,
        key_exchanges={"dtls": engine},
        signalling="udp",
    )
    phone = DtlsKeyExchange(identity=lambda: PHONE_ID).offer(suites=[], secure_signalling=False)
    gateway.take_offer(phone_offer(phone, 1))
    gateway.make_answer(sdp(PLAIN_ANSWER))
    return gateway, engine, phone


def test_a_refused_re_offers_negotiations_are_told_and_the_ones_in_force_are_not() -> None:
    """RFC 3261 §14.1: the phone's re-offer refused (the other leg's 488), the session in force
    stays; the negotiations the re-offer started are told (``abandon()``), so the dtls engine
    gives back a held handshake the re-offer took (docs/media_security.md, session 50)."""
    gateway, engine, _phone = _answered_leg()
    (in_force,) = engine.answers
    renewed = DtlsKeyExchange(identity=lambda: generate_identity(now=NOW, max_age=MONTH))
    gateway.take_offer(phone_offer(renewed.offer(suites=[], secure_signalling=False), 2))
    _, refused = engine.answers
    assert refused.state == "handshaking"
    gateway.peer_offer_refused()
    assert refused.state == "failed" and refused.next_event() is None
    assert in_force.state == "handshaking"  # ours: untouched
    (stream,) = gateway.media_path_streams().values()
    assert stream.negotiation is in_force
    gateway.peer_offer_refused()  # again: nothing more
    assert in_force.state == "handshaking"


def test_after_a_refused_re_offer_no_offer_of_the_peer_waits() -> None:
    """The leg is as before the refused re-offer: the call's handshake task keeps no datagram
    for it (``offered_media_path_streams``), and an offer of ours withdrawn later (its leg
    unreachable) gives back the state before that offer, not the refused one's."""
    gateway, engine, _phone = _answered_leg()
    renewed = DtlsKeyExchange(identity=lambda: generate_identity(now=NOW, max_age=MONTH))
    gateway.take_offer(phone_offer(renewed.offer(suites=[], secure_signalling=False), 2))
    assert gateway.offered_media_path_streams()  # kept for the re-offer while it waits
    gateway.peer_offer_refused()
    assert gateway.offered_media_path_streams() == {}
    gateway.make_offer(sdp(PLAIN_ANSWER.replace(" 1 1 ", " 1 3 ")))
    gateway.withdraw_offer()
    assert gateway.offered_media_path_streams() == {}
    (stream,) = gateway.media_path_streams().values()
    assert stream.negotiation is engine.answers[0]


def test_a_re_offer_refused_half_way_by_our_policy_tells_what_it_started() -> None:
    """Our own 488 to a re-offer whose second m= line the leg's policy refuses (cleartext on a
    ``dtls`` leg): the negotiation its first line started is told as well."""
    gateway, engine, phone = _answered_leg()
    offer = phone_offer(phone, 2)
    plain_line = "m=audio 20002 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    two_lines = parse_sdp_untrusted(serialize_sdp(offer) + plain_line.encode())
    with pytest.raises(MediaSecurityRefused):
        gateway.take_offer(two_lines)
    _, started = engine.answers
    assert started.state == "failed"
    assert engine.answers[0].state == "handshaking"
