"""LegSecurity with ZRTP enabled next to SDES: which m= line we offer, which method the answer
picks, and that a re-offer or re-answer keeps the method in force. Without sockets: the ZRTP
exchange itself is not run here (tests/unit/keyexchange/test_zrtp_negotiation.py)."""

from __future__ import annotations

import os

import pytest

from gateway.core.interfaces import KeyExchange
from gateway.core.media.policy import BUILTIN_POLICIES
from gateway.core.media.security import LegSecurity, MediaSecurityRefused
from gateway.core.sdp.model import SessionDescription
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.plugins.keyexchange.sdes import SdesKeyExchange
from gateway.plugins.keyexchange.zrtp import ZrtpKeyExchange
from gateway.plugins.keyexchange.zrtp.engine import ZrtpNegotiation

PLAIN = """v=0
o=- 1 1 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio 20000 RTP/AVP 0
a=rtpmap:0 PCMU/8000
a=sendrecv
"""


def sdp(text: str) -> SessionDescription:
    return parse_sdp_untrusted(text.replace("\n", "\r\n").encode())


def exchanges(*names: str) -> dict[str, KeyExchange]:
    known: dict[str, KeyExchange] = {
        "sdes": SdesKeyExchange(random_bytes=os.urandom),
        "zrtp": ZrtpKeyExchange(zid=lambda: bytes(range(12))),
    }
    return {name: known[name] for name in names}


def leg(
    policy: str, *, tls: bool, side: str = "b", enabled: tuple[str, ...] = ("sdes", "zrtp")
) -> LegSecurity:
    return LegSecurity(
        side=side,
        policy=BUILTIN_POLICIES[policy],
        secure_signalling=tls,
        key_exchanges=exchanges(*enabled),
        signalling="tls" if tls else "udp",
    )


def answer_with(
    offer: SessionDescription, *attributes: tuple[str, str], proto: str = "RTP/AVP"
) -> SessionDescription:
    """The peer's answer to ``offer``: same stream, ``proto``, and ``attributes``."""
    lines = "".join(f"a={name}:{value}\n" for name, value in attributes)
    port = offer.media[0].port
    return sdp(PLAIN.replace("m=audio 20000 RTP/AVP 0", f"m=audio {port + 2} {proto} 0") + lines)


def test_best_effort_over_udp_offers_zrtp_alone_in_rtp_avp() -> None:
    offered = leg("best-effort", tls=False).make_offer(sdp(PLAIN)).media[0]
    assert offered.proto == "RTP/AVP"
    assert (offered.attributes.get("zrtp-hash") or "").startswith("1.10 ")
    assert not offered.crypto  # no SDES key over UDP signalling


def test_best_effort_over_tls_offers_zrtp_and_sdes_in_one_rtp_avp_line() -> None:
    offered = leg("best-effort", tls=True).make_offer(sdp(PLAIN)).media[0]
    assert offered.proto == "RTP/AVP"
    assert offered.attributes.has("zrtp-hash") and offered.crypto


@pytest.mark.parametrize(
    ("answered", "chosen", "media_path"),
    [("crypto", "sdes", False), ("zrtp-hash", "zrtp", True), (None, "none", False)],
)
def test_the_answer_picks_the_method_it_carries(
    answered: str | None, chosen: str, media_path: bool
) -> None:
    security = leg("best-effort", tls=True)
    offer = security.make_offer(sdp(PLAIN))
    attributes: list[tuple[str, str]] = []
    if answered == "crypto":
        # The peer answers our first a=crypto line with a key of its own.
        peer = leg("best-effort", tls=True, side="a", enabled=("sdes",))
        peer.take_offer(offer)
        answer = peer.make_answer(sdp(PLAIN))
        assert answer.media[0].crypto and not answer.media[0].attributes.has("zrtp-hash")
    else:
        if answered == "zrtp-hash":
            attributes.append(("zrtp-hash", "1.10 " + "ab" * 32))
        answer = answer_with(offer, *attributes)
    security.take_answer(answer)
    (stream,) = security.streams
    assert stream.key_exchange == (None if chosen == "none" else chosen)
    assert stream.media_path is media_path
    assert stream.alternatives == []
    assert bool(security.media_path_streams()) is media_path
    if chosen == "sdes":
        assert stream.keys is not None
    if chosen == "zrtp":
        assert isinstance(stream.negotiation, ZrtpNegotiation)
        assert stream.negotiation.state == "discovery"  # started by the answer
        assert security.expects_srtp(0)  # blocked until the exchange gives keys


def test_encrypted_only_refuses_an_answer_without_either_method() -> None:
    security = leg("encrypted-only", tls=False)
    offer = security.make_offer(sdp(PLAIN))
    assert offer.media[0].proto == "RTP/AVP" and offer.media[0].attributes.has("zrtp-hash")
    with pytest.raises(MediaSecurityRefused, match="requires encrypted media"):
        security.take_answer(answer_with(offer))


def test_an_offer_with_zrtp_hash_is_answered_with_ours_and_no_sdes_key() -> None:
    phone = ZrtpKeyExchange(zid=lambda: b"\x01" * 12)
    phone_offer = phone.offer(suites=(), secure_signalling=False)
    (hash_attribute,) = phone_offer.local_sdp_attributes()
    offer = sdp(PLAIN + f"a=zrtp-hash:{hash_attribute[1]}\n")
    security = leg("best-effort", tls=False, side="a")
    plain = security.take_offer(offer)
    assert not plain.media[0].attributes.has("zrtp-hash")  # never to the other leg
    answer = security.make_answer(sdp(PLAIN)).media[0]
    assert answer.proto == "RTP/AVP" and not answer.crypto
    ours = answer.attributes.get("zrtp-hash")
    assert ours is not None and ours != hash_attribute[1]
    (stream,) = security.streams
    assert stream.key_exchange == "zrtp" and stream.media_path


def test_zrtp_is_not_answered_in_an_srtp_profile() -> None:
    offer = sdp(PLAIN.replace("RTP/AVP", "RTP/SAVP") + "a=zrtp-hash:1.10 " + "cd" * 32 + "\n")
    with pytest.raises(MediaSecurityRefused, match="cannot accept encrypted media"):
        leg("best-effort", tls=False, side="a").take_offer(offer)


def test_a_re_offer_keeps_the_method_in_force_and_offers_no_other() -> None:
    security = leg("best-effort", tls=True)
    offer = security.make_offer(sdp(PLAIN))
    peer = leg("best-effort", tls=True, side="a", enabled=("sdes",))
    peer.take_offer(offer)
    security.take_answer(peer.make_answer(sdp(PLAIN)))
    keys = security.keys(0)
    assert security.streams[0].key_exchange == "sdes" and keys is not None
    again = security.make_offer(sdp(PLAIN)).media[0]
    assert again.crypto and not again.attributes.has("zrtp-hash")
    assert security._offered[0].keys == keys


def test_a_re_offer_to_a_zrtp_leg_repeats_our_hello_hash() -> None:
    security = leg("best-effort", tls=False)
    offer = security.make_offer(sdp(PLAIN))
    first = offer.media[0].attributes.get("zrtp-hash")
    security.take_answer(answer_with(offer, ("zrtp-hash", "1.10 " + "ef" * 32)))
    negotiation = security.streams[0].negotiation
    again = security.make_offer(sdp(PLAIN)).media[0]
    assert again.attributes.get("zrtp-hash") == first and not again.crypto
    assert security._offered[0].negotiation is negotiation  # the same exchange goes on


def test_a_re_offer_from_the_peer_with_both_keeps_zrtp_in_force() -> None:
    phone = ZrtpKeyExchange(zid=lambda: b"\x02" * 12).offer(suites=(), secure_signalling=False)
    (hash_attribute,) = phone.local_sdp_attributes()
    security = leg("best-effort", tls=True, side="a")
    security.take_offer(sdp(PLAIN + f"a=zrtp-hash:{hash_attribute[1]}\n"))
    security.make_answer(sdp(PLAIN))
    negotiation = security.streams[0].negotiation
    sdes_peer = leg("best-effort", tls=True, enabled=("sdes",)).make_offer(sdp(PLAIN))
    both = sdp(
        PLAIN
        + "".join(f"a=crypto:{c}\n" for c in sdes_peer.media[0].attributes.values("crypto"))
        + f"a=zrtp-hash:{hash_attribute[1]}\n"
    )
    security.take_offer(both)
    security.make_answer(sdp(PLAIN))
    assert security.streams[0].key_exchange == "zrtp"
    assert security.streams[0].negotiation is negotiation


AUDIO_VIDEO = PLAIN + "m=video 20002 RTP/AVP 96\na=rtpmap:96 H264/90000\na=sendrecv\n"


def session_of(negotiation: object) -> object:
    assert isinstance(negotiation, ZrtpNegotiation)
    return negotiation._session


def test_the_streams_of_a_leg_share_one_zrtp_session_and_legs_do_not() -> None:
    # ``wants_leg_state``: one dict per leg, the same for every stream and re-offer, so the
    # video stream can be keyed in Multistream mode from the audio one (RFC 6189 §4.4.3).
    first, second = leg("best-effort", tls=False), leg("best-effort", tls=False)
    first.make_offer(sdp(AUDIO_VIDEO))
    audio, video = (stream.negotiation for stream in first._offered)
    assert session_of(audio) is session_of(video)
    second.make_offer(sdp(AUDIO_VIDEO))
    other = second._offered[0].negotiation
    assert session_of(other) is not session_of(audio)
    # A peer's offer on the first leg, later: the same session again.
    zrtp = exchanges("zrtp")["zrtp"]
    phone = zrtp.offer(suites=(), secure_signalling=False)
    (hash_attribute,) = phone.local_sdp_attributes()
    first.take_offer(sdp(AUDIO_VIDEO.replace("a=sendrecv\n", f"a=zrtp-hash:{hash_attribute[1]}\n")))
    answering = [stream.negotiation for stream in first._offered]
    assert all(session_of(n) is session_of(audio) for n in answering)


def test_key_exchanges_without_wants_leg_state_get_no_leg_state() -> None:
    security = leg("best-effort", tls=True, enabled=("sdes",))
    security.make_offer(sdp(AUDIO_VIDEO))  # SdesKeyExchange.offer() takes no leg_state
    assert security._leg_states is None  # nothing made for a leg without such an exchange
