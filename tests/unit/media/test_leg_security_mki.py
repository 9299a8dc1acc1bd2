"""The security record of an SDES leg whose keys carry an MKI (RFC 3711 §3.1, RFC 4568 §6.1):
the record (``voipgw calls --json``, the call record) and its words (``voipgw calls``, the line
logged as the call ends) say which MKI each direction's packets carry, beside the suite."""

from __future__ import annotations

import base64
import os

import pytest

from gateway.core.calls.protection import describe_leg
from gateway.core.media.policy import BUILTIN_POLICIES
from gateway.core.media.security import LegSecurity
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.plugins.keyexchange.sdes import SdesKeyExchange

SUITE = "AES_CM_128_HMAC_SHA1_80"


def offer(tail: str) -> str:
    key = base64.b64encode(bytes(range(30))).decode()
    return (
        "v=0\no=- 1 1 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\n"
        "m=audio 20000 RTP/SAVP 0\na=rtpmap:0 PCMU/8000\n"
        f"a=crypto:1 {SUITE} inline:{key}{tail}\n"
    )


def answered_leg(tail: str, mki: str = "mirror") -> LegSecurity:
    """The gateway's leg towards a peer that offered one SDES line ending in ``tail``."""
    leg = LegSecurity(
        side="a",
        policy=BUILTIN_POLICIES["sdes"],
        secure_signalling=True,
        key_exchanges={"sdes": SdesKeyExchange(random_bytes=os.urandom, mki=mki)},
        signalling="tls",
    )
    text = offer(tail).replace("\n", "\r\n").encode()
    leg.take_offer(parse_sdp_untrusted(text))
    leg.make_answer(parse_sdp_untrusted(text.replace(b"RTP/SAVP", b"RTP/AVP")))
    assert leg.keys(0) is not None
    return leg


@pytest.mark.parametrize(
    ("mki", "ours", "words"),
    [
        ("mirror", "1:2", "(MKI: the peer's 260:2, ours 1:2)"),
        ("receive-only", None, "(MKI: the peer's 260:2, ours none)"),
    ],
)
def test_the_record_says_which_mki_each_direction_carries(
    mki: str, ours: str | None, words: str
) -> None:
    leg = answered_leg("|2^31|260:2", mki)
    stream = leg.record()["streams"][0]
    assert (stream["suite"], stream["peer_mki"], stream["our_mki"]) == (SUITE, "260:2", ours)
    assert f"media SRTP {SUITE} keyed by sdes {words}" in describe_leg(leg.record())


def test_a_record_without_mki_is_as_it_was() -> None:
    stream = answered_leg("").record()["streams"][0]
    assert "peer_mki" not in stream and "our_mki" not in stream
    assert describe_leg(answered_leg("").record()).endswith(f"media SRTP {SUITE} keyed by sdes")
