"""LegSecurity with the mikey key exchange: a=key-mgmt offered and answered per leg, the
session-level a=key-mgmt applying to the m= lines (RFC 4567 §4) and never crossing to the other
leg, the TLS rule of the NULL container, PSK by the leg's identity, the security record, and a
hold keeping the keys."""

from __future__ import annotations

import base64
import os

import attrs
import pytest

from gateway.core.cli import describe_leg
from gateway.core.interfaces import LegInfo, MediaPolicy
from gateway.core.media.policy import BUILTIN_POLICIES
from gateway.core.media.security import LegSecurity, MediaSecurityRefused
from gateway.core.sdp.model import SessionDescription
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.core.sdp.serializer import serialize_sdp
from gateway.plugins.keyexchange.mikey import MikeyKeyExchange
from gateway.plugins.keyexchange.mikey.engine import MikeySettings
from gateway.plugins.keyexchange.mikey.psk import PskStore
from gateway.plugins.keyexchange.sdes import SdesKeyExchange

PLAIN = """v=0
o=- 1 1 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio 20000 RTP/AVP 0
a=rtpmap:0 PCMU/8000
a=sendrecv
"""
MIKEY_ONLY = MediaPolicy("mikey", ("mikey",), allow_cleartext=False)
PSK = bytes(range(32))
CARRIER = LegInfo(call_id="c", side="b", kind="trunk", name="carrier", secure_signalling=False)


def sdp(text: str) -> SessionDescription:
    return parse_sdp_untrusted(text.replace("\n", "\r\n").encode())


def mikey(**settings: object) -> MikeyKeyExchange:
    return MikeyKeyExchange(
        settings=MikeySettings(**settings),  # type: ignore[arg-type]
        psks=PskStore({("trunk", "carrier"): PSK}),
    )


def leg(
    policy: MediaPolicy,
    *,
    tls: bool,
    side: str = "b",
    exchange: MikeyKeyExchange | None = None,
    info: LegInfo | None = None,
    sdes: bool = False,
) -> LegSecurity:
    exchanges: dict[str, object] = {"mikey": exchange or mikey()}
    if sdes:
        exchanges["sdes"] = SdesKeyExchange(random_bytes=os.urandom)
    return LegSecurity(
        side=side,
        policy=policy,
        secure_signalling=tls,
        key_exchanges=exchanges,  # type: ignore[arg-type]
        signalling="tls" if tls else "udp",
        leg=info,
    )


def test_mikey_over_tls_offers_savp_with_key_mgmt_and_both_legs_agree() -> None:
    offerer, answerer = leg(MIKEY_ONLY, tls=True), leg(MIKEY_ONLY, tls=True, side="a")
    offered = offerer.make_offer(sdp(PLAIN))
    media = offered.media[0]
    assert media.proto == "RTP/SAVP"
    assert (media.attributes.get("key-mgmt") or "").startswith("mikey ")
    seen = answerer.take_offer(offered)
    assert not seen.media[0].attributes.has("key-mgmt") and seen.media[0].proto == "RTP/AVP"
    answered = answerer.make_answer(sdp(PLAIN))
    assert answered.media[0].proto == "RTP/SAVP"
    assert not answered.media[0].attributes.has("key-mgmt")  # NULL mode, V=0: no response
    offerer.take_answer(answered)
    ours, theirs = offerer.keys(0), answerer.keys(0)
    assert ours is not None and theirs is not None
    assert (ours.local_key, ours.remote_key) == (theirs.remote_key, theirs.local_key)
    record = offerer.record()["streams"][0]
    assert record["key_exchange"] == "mikey" and record["encrypted"] is True
    assert record["mikey_mode"] == "mikey-null (keys protected by TLS)"
    words = describe_leg(offerer.record())
    assert "keyed by mikey (mikey-null (keys protected by TLS))" in words


def test_a_session_level_key_mgmt_applies_to_the_stream_and_is_stripped() -> None:
    peer = leg(MIKEY_ONLY, tls=True)
    offered = peer.make_offer(sdp(PLAIN))
    (value,) = [v for n, v in offered.media[0].attributes if n == "key-mgmt"]
    text = serialize_sdp(offered).decode().replace(f"a=key-mgmt:{value}\r\n", "")
    text = text.replace("t=0 0\r\n", f"t=0 0\r\na=key-mgmt:{value}\r\n")
    assert text.index("a=key-mgmt") < text.index("m=audio")
    gateway_leg = leg(MIKEY_ONLY, tls=True, side="a")
    seen = gateway_leg.take_offer(parse_sdp_untrusted(text.encode()))
    assert not seen.attributes.has("key-mgmt") and not seen.media[0].attributes.has("key-mgmt")
    peer.take_answer(gateway_leg.make_answer(sdp(PLAIN)))
    ours, theirs = gateway_leg.keys(0), peer.keys(0)
    assert ours is not None and theirs is not None and ours.remote_key == theirs.local_key
    assert gateway_leg.record()["streams"][0]["key_exchange"] == "mikey"


def test_the_null_container_is_never_offered_or_accepted_without_tls() -> None:
    with pytest.raises(MediaSecurityRefused, match="only sent and accepted over TLS"):
        leg(MIKEY_ONLY, tls=False).make_offer(sdp(PLAIN))
    best_effort = leg(BUILTIN_POLICIES["best-effort"], tls=False).make_offer(sdp(PLAIN))
    assert not best_effort.media[0].attributes.has("key-mgmt")
    offered = leg(MIKEY_ONLY, tls=True).make_offer(sdp(PLAIN))
    with pytest.raises(MediaSecurityRefused, match="mikey: MIKEY with NULL KEMAC"):
        leg(MIKEY_ONLY, tls=False, side="a").take_offer(offered)


def test_psk_mode_over_udp_takes_the_legs_key() -> None:
    exchange = mikey(offer_modes=("psk",))
    offerer = leg(MIKEY_ONLY, tls=False, exchange=exchange, info=CARRIER)
    answerer = leg(MIKEY_ONLY, tls=False, side="a", info=attrs.evolve(CARRIER, side="a"))
    offered = offerer.make_offer(sdp(PLAIN))
    answerer.take_offer(offered)
    answered = answerer.make_answer(sdp(PLAIN))
    assert (answered.media[0].attributes.get("key-mgmt") or "").startswith("mikey ")  # V
    offerer.take_answer(answered)
    assert offerer.keys(0) is not None and answerer.keys(0) is not None
    assert offerer.record()["streams"][0]["mikey_mode"] == "mikey-psk"
    nobody = leg(MIKEY_ONLY, tls=False, side="a")  # no leg identity: no key
    with pytest.raises(MediaSecurityRefused, match="no pre-shared key for this leg"):
        nobody.take_offer(offered)


def test_best_effort_over_tls_offers_sdes_and_mikey_and_the_answers_key_mgmt_picks() -> None:
    offerer = leg(
        BUILTIN_POLICIES["best-effort"],
        tls=True,
        sdes=True,
        exchange=mikey(offer_modes=("psk",)),
        info=CARRIER,
    )
    offered = offerer.make_offer(sdp(PLAIN))
    media = offered.media[0]
    assert media.proto == "RTP/AVP" and media.crypto and media.attributes.has("key-mgmt")
    # A MIKEY-only peer answers with its verification message in a=key-mgmt.
    peer = leg(MIKEY_ONLY, tls=True, side="a", info=attrs.evolve(CARRIER, side="a"))
    peer.take_offer(offered)
    answered = peer.make_answer(sdp(PLAIN))
    assert not answered.media[0].crypto and answered.media[0].attributes.has("key-mgmt")
    offerer.take_answer(answered)
    record = offerer.record()["streams"][0]
    assert record["key_exchange"] == "mikey" and record["mikey_mode"] == "mikey-psk"
    ours, theirs = offerer.keys(0), peer.keys(0)
    assert ours is not None and theirs is not None and ours.local_key == theirs.remote_key


def test_a_hold_keeps_the_keys_and_the_message() -> None:
    offerer, answerer = leg(MIKEY_ONLY, tls=True), leg(MIKEY_ONLY, tls=True, side="a")
    first = offerer.make_offer(sdp(PLAIN))
    answerer.take_offer(first)
    offerer.take_answer(answerer.make_answer(sdp(PLAIN)))
    keys = offerer.keys(0), answerer.keys(0)
    hold = offerer.make_offer(sdp(PLAIN.replace("sendrecv", "sendonly")))
    assert hold.media[0].attributes.get("key-mgmt") == first.media[0].attributes.get("key-mgmt")
    answerer.take_offer(hold)
    offerer.take_answer(answerer.make_answer(sdp(PLAIN.replace("sendrecv", "recvonly"))))
    assert (offerer.keys(0), answerer.keys(0)) == keys


def test_a_session_level_key_mgmt_over_two_streams_is_refused_saying_why() -> None:
    """RFC 4567 §4: one session-level exchange for audio and video, its crypto sessions told
    apart by SSRCs the gateway cannot know. Checked per stream, psk mode failed the offer as a
    "replay" and null mode keyed both streams alike; now it is refused with the reason."""
    for mode, tls in (("null", True), ("psk", False)):
        peer = leg(MIKEY_ONLY, tls=tls, exchange=mikey(offer_modes=(mode,)), info=CARRIER)
        offered = peer.make_offer(sdp(PLAIN))
        (value,) = [v for n, v in offered.media[0].attributes if n == "key-mgmt"]
        text = serialize_sdp(offered).decode().replace(f"a=key-mgmt:{value}\r\n", "")
        text = text.replace("t=0 0\r\n", f"t=0 0\r\na=key-mgmt:{value}\r\n")
        text += "m=video 20002 RTP/SAVP 96\r\na=rtpmap:96 H264/90000\r\na=sendrecv\r\n"
        gateway_leg = leg(MIKEY_ONLY, tls=tls, side="a", info=attrs.evolve(CARRIER, side="a"))
        with pytest.raises(MediaSecurityRefused, match="session-level MIKEY message for several"):
            gateway_leg.take_offer(parse_sdp_untrusted(text.encode()))


def _forked_dh_hmac_answers() -> tuple[LegSecurity, SessionDescription, SessionDescription]:
    """Our DH-HMAC offer to the carrier, answered by two forked phones behind it (RFC 3261
    §16.7): each answers with its own DH value, so each has its own keys."""
    ours = leg(MIKEY_ONLY, tls=False, exchange=mikey(offer_modes=("dh-hmac",)), info=CARRIER)
    offered = ours.make_offer(sdp(PLAIN))
    answers = []
    for _ in range(2):
        phone = leg(MIKEY_ONLY, tls=False, side="a", info=attrs.evolve(CARRIER, side="a"))
        phone.take_offer(offered)
        answers.append(phone.make_answer(sdp(PLAIN)))
    return ours, answers[0], answers[1]


def _tampered(answer: SessionDescription) -> SessionDescription:
    """``answer`` with one bit of its R_MSG's DH value flipped: its MAC fails."""
    (value,) = [v for n, v in answer.media[0].attributes if n == "key-mgmt"]
    assert value is not None
    data = bytearray(base64.b64decode(value.removeprefix("mikey ")))
    data[-30] ^= 1
    bad = "mikey " + base64.b64encode(bytes(data)).decode()
    return parse_sdp_untrusted(serialize_sdp(answer).replace(value.encode(), bad.encode()))


def test_another_forks_answer_after_a_refused_one_is_keyed_with_its_own_keys() -> None:
    """One forked phone's 183 with a broken R_MSG is refused and binds nothing: the MIKEY
    negotiation only checked it (``check_remote_sdp_attributes``, session 48). The other
    phone's 200 is taken with its own DH keys. Before, the 183 failed the negotiation for the
    whole offer and the 200 was refused, 488, costing the call the other phone answered."""
    ours, first, second = _forked_dh_hmac_answers()
    with pytest.raises(MediaSecurityRefused, match="MAC is wrong"):
        ours.take_answer(_tampered(second))
    assert ours.keys(0) is None
    ours.take_answer(first)
    keys = ours.keys(0)
    assert keys is not None
    assert ours.record()["streams"][0]["mikey_mode"] == "mikey-dhhmac"


def test_a_fork_checked_first_is_taken_later_not_refused_as_a_replay() -> None:
    """Two phones' good 183s are read (each R_MSG's T goes into the replay cache, RFC 3830
    §5.4), and the first phone's 200 repeats its 183: taken with that phone's keys, not
    refused as a replay of itself, and not with the second phone's keys."""
    ours, first, second = _forked_dh_hmac_answers()
    ours.take_answer(first)
    first_keys = ours.keys(0)
    ours.take_answer(second)
    second_keys = ours.keys(0)
    assert first_keys is not None and second_keys is not None
    assert first_keys.remote_key != second_keys.remote_key  # each phone its own DH keys
    ours.take_answer(first)
    assert ours.keys(0) == first_keys
