"""LegSecurity.negotiates_on_media_path: what the call asks at each SDP change to know whether
its handshake task has work, the same answer as building ``media_path_streams()`` and
``offered_media_path_streams()`` (docs/benchmarks.md, "Session 41 (keying)"), in each state a
leg's offer/answer passes through: a peer's offer waiting for our answer, our answer made, our
own offer, its answer, for DTLS-SRTP and for plain RTP. Sans-IO, the real DTLS engine."""

from __future__ import annotations

import datetime

from gateway.core.media.policy import BUILTIN_POLICIES
from gateway.core.media.security import LegSecurity
from gateway.core.sdp.model import SessionDescription
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.plugins.keyexchange.dtls_certificates import generate_identity
from gateway.plugins.keyexchange.dtls_srtp import DtlsKeyExchange, DtlsNegotiation

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
MONTH = datetime.timedelta(days=30)
GATEWAY_ID = generate_identity(now=NOW, max_age=MONTH)
PHONE_ID = generate_identity(now=NOW, max_age=MONTH)

PLAIN = """v=0
o=- 1 1 IN IP4 127.0.0.1
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


def dtls_sdp(negotiation: DtlsNegotiation, proto: str = "UDP/TLS/RTP/SAVP") -> SessionDescription:
    ours = dict(negotiation.local_sdp_attributes())
    return sdp(
        "v=0\no=- 1 1 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\n"
        f"m=audio 20000 {proto} 0\na=rtpmap:0 PCMU/8000\na=rtcp-mux\n"
        f"a=fingerprint:{ours['fingerprint']}\na=setup:{ours['setup']}\n"
        f"a=tls-id:{ours['tls-id']}\na=sendrecv\n"
    )


def leg(policy: str) -> LegSecurity:
    return LegSecurity(
        side="a",
        policy=BUILTIN_POLICIES[policy],
        secure_signalling=False,
        key_exchanges={"dtls": DtlsKeyExchange(identity=lambda: GATEWAY_ID)},
        signalling="udp",
    )


def negotiates(security: LegSecurity) -> bool:
    """The leg's answer, checked against the two dicts it stands for."""
    answer = security.negotiates_on_media_path()
    built = bool(security.media_path_streams() or security.offered_media_path_streams())
    assert answer is built
    return answer


def test_a_dtls_peers_offer_before_and_after_our_answer() -> None:
    security = leg("dtls")
    assert not negotiates(security)
    phone = DtlsKeyExchange(identity=lambda: PHONE_ID).offer(suites=[], secure_signalling=False)
    security.take_offer(dtls_sdp(phone))
    assert negotiates(security)  # offered: its sockets take the peer's early handshake
    security.make_answer(sdp(PLAIN))
    assert negotiates(security)  # answered: the handshake runs


def test_our_dtls_offer_and_its_answer() -> None:
    security = leg("dtls")
    offer = security.make_offer(sdp(PLAIN))
    assert negotiates(security)  # our offer: a callee may start its handshake as it rings
    attributes = [(a.name, a.value) for a in offer.media[0].attributes]
    answerer = DtlsKeyExchange(identity=lambda: PHONE_ID).answer(
        attributes, suites=[], secure_signalling=False
    )
    assert answerer is not None
    security.take_answer(dtls_sdp(answerer))
    assert negotiates(security)


def test_a_plain_leg_never_does() -> None:
    security = leg("best-effort")
    security.take_offer(sdp(PLAIN))
    assert not negotiates(security)  # the peer's plain offer, our answer pending
    security.make_answer(sdp(PLAIN))
    assert not negotiates(security)
    plain = leg("rtp-only")
    plain.make_offer(sdp(PLAIN))
    assert not negotiates(plain)
    plain.take_answer(sdp(PLAIN))
    assert not negotiates(plain)


def test_a_dtls_leg_re_offered_plain_and_re_offering_a_line_at_port_0() -> None:
    """The streams in force count while a peer's offer waits for our answer, not once our own
    offer replaced them (RFC 3264 §8: until the answer, the old session is in force)."""
    security = leg("best-effort")
    phone = DtlsKeyExchange(identity=lambda: PHONE_ID).offer(suites=[], secure_signalling=False)
    security.take_offer(dtls_sdp(phone))
    security.make_answer(sdp(PLAIN))
    security.take_offer(sdp(PLAIN.replace("o=- 1 1", "o=- 1 2")))  # the peer goes plain
    assert negotiates(security)  # the DTLS stream in force until our answer
    security.make_answer(sdp(PLAIN))
    assert not negotiates(security)

    security = leg("best-effort")
    security.take_offer(dtls_sdp(phone))
    security.make_answer(sdp(PLAIN))
    security.make_offer(sdp(PLAIN.replace("m=audio 40000", "m=audio 0")))  # we end the line
    assert not negotiates(security)  # our offer's streams, not the DTLS one in force
