"""Plain RTP both ways (the usual call) gets the relay's shared NO_TRANSFORMS, not a new
Transforms per direction and key change; keys on either leg still get their own."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from gateway.core.interfaces import SrtpKeys
from gateway.core.media.keying import StreamKeys, StreamSrtp
from gateway.core.media.relay import NO_TRANSFORMS, Transforms

SUITE = "AES_CM_128_HMAC_SHA1_80"
OURS, THEIRS = bytes(range(30)), bytes(range(30, 60))


def test_plain_rtp_both_ways_shares_no_transforms() -> None:
    assert Transforms() == NO_TRANSFORMS
    stream: Any = SimpleNamespace(a_to_b=SimpleNamespace(), b_to_a=SimpleNamespace())
    srtp = StreamSrtp()
    srtp.apply(stream, StreamKeys(a=None, b=None, blocked=False))
    assert stream.a_to_b.transforms is NO_TRANSFORMS
    assert stream.b_to_a.transforms is NO_TRANSFORMS
    # Keys on leg A: A's packets are unprotected on arrival, B's protected towards A.
    srtp.apply(stream, StreamKeys(a=SrtpKeys(SUITE, OURS, THEIRS), b=None, blocked=False))
    a_to_b, b_to_a = stream.a_to_b.transforms, stream.b_to_a.transforms
    assert a_to_b is not NO_TRANSFORMS and b_to_a is not NO_TRANSFORMS
    assert a_to_b.rtp_in is not None and a_to_b.rtcp_in is not None
    assert (a_to_b.rtp_out, a_to_b.rtcp_out) == (None, None)
    assert b_to_a.rtp_out is not None and b_to_a.rtcp_out is not None
    assert (b_to_a.rtp_in, b_to_a.rtcp_in) == (None, None)
    # Back to plain RTP (the leg switched to RTP/AVP): shared again.
    srtp.apply(stream, StreamKeys(a=None, b=None, blocked=False))
    assert stream.a_to_b.transforms is NO_TRANSFORMS
    assert stream.b_to_a.transforms is NO_TRANSFORMS
    srtp.close()
