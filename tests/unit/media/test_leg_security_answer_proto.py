"""LegSecurity: an answer's transport protocol against our offer's (RFC 3264 §6), sans-IO.

An answer that changes the stream's security family (RTP/AVP(F), RTP/SAVP(F),
UDP/TLS/RTP/SAVP(F)) is refused (488 on the call); one that changes only the RFC 4585 feedback
profile is tolerated (RFC 4585 §5, RFC 5124 §6) and the session gets the profile it offered.
"""

from __future__ import annotations

import datetime
import os

import attrs
import pytest

from gateway.core.interfaces import KeyExchange
from gateway.core.media.policy import BUILTIN_POLICIES
from gateway.core.media.security import LegSecurity, MediaSecurityRefused
from gateway.core.sdp.model import SessionDescription
from gateway.core.sdp.offer_answer import validate_answer
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.core.sdp.serializer import serialize_sdp
from gateway.plugins.keyexchange.dtls_certificates import generate_identity
from gateway.plugins.keyexchange.dtls_srtp import DtlsKeyExchange
from gateway.plugins.keyexchange.sdes import SdesKeyExchange
from gateway.plugins.keyexchange.zrtp import ZrtpKeyExchange

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
IDENTITY = generate_identity(now=NOW, max_age=datetime.timedelta(days=30))
CRYPTO = "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\n"
FINGERPRINT = "a=fingerprint:sha-256 " + ":".join(["AB"] * 32) + "\na=setup:active\n"
ZRTP_HASH = "a=zrtp-hash:1.10 " + "ab" * 32 + "\n"


def sdp(text: str) -> SessionDescription:
    return parse_sdp_untrusted(text.replace("\n", "\r\n").encode())


def session_offer(proto: str) -> SessionDescription:
    """The session's plain offer (what LegSecurity.make_offer gets)."""
    feedback = "a=rtcp-fb:* nack\n" if proto.endswith("F") else ""
    return sdp(
        "v=0\no=- 1 1 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\n"
        f"m=audio 20000 {proto} 0\na=rtpmap:0 PCMU/8000\n{feedback}a=sendrecv\n"
    )


def peer_answer(proto: str, extra: str = "") -> SessionDescription:
    return sdp(
        "v=0\no=- 2 1 IN IP4 127.0.0.2\ns=-\nc=IN IP4 127.0.0.2\nt=0 0\n"
        f"m=audio 30000 {proto} 0\na=rtpmap:0 PCMU/8000\n{extra}a=sendrecv\n"
    )


def leg(
    policy: str, *, tls: bool, feedback: bool = False, side: str = "b", zrtp: bool = True
) -> LegSecurity:
    exchanges: dict[str, KeyExchange] = {
        "sdes": SdesKeyExchange(random_bytes=os.urandom),
        "dtls": DtlsKeyExchange(identity=lambda: IDENTITY),
    }
    if zrtp:
        exchanges["zrtp"] = ZrtpKeyExchange(zid=lambda: bytes(range(12)))
    return LegSecurity(
        side=side,
        policy=BUILTIN_POLICIES[policy],
        secure_signalling=tls,
        key_exchanges=exchanges,
        signalling="tls" if tls else "udp",
        offer_feedback=feedback,
    )


# (policy, TLS signalling, the session's profile, offer_feedback, what we offer, the answer's
# profile and key attributes)
REFUSED = [
    # The soak case: plain RTP offered over UDP, SRTP with a=crypto answered.
    ("best-effort", False, "RTP/AVP", False, "RTP/AVP", "RTP/SAVP", CRYPTO),
    ("best-effort", False, "RTP/AVP", False, "RTP/AVP", "RTP/SAVPF", CRYPTO),
    ("rtp-only", False, "RTP/AVP", False, "RTP/AVP", "RTP/SAVP", CRYPTO),
    ("best-effort", False, "RTP/AVP", False, "RTP/AVP", "UDP/TLS/RTP/SAVP", FINGERPRINT),
    ("best-effort", False, "RTP/AVPF", True, "RTP/AVPF", "UDP/TLS/RTP/SAVPF", FINGERPRINT),
    # SDES best effort over TLS (RTP/AVP with a=crypto) answered RTP/SAVP without keys.
    ("best-effort", True, "RTP/AVP", False, "RTP/AVP", "RTP/SAVP", ""),
    # ZRTP (offered with a=zrtp-hash over UDP) lives in RTP/AVP (RFC 6189 §8).
    ("best-effort", False, "RTP/AVP", False, "RTP/AVP", "RTP/SAVP", ZRTP_HASH),
    # SRTP offered, cleartext answered: the policy would be void.
    ("sdes", True, "RTP/AVP", False, "RTP/SAVP", "RTP/AVP", CRYPTO),
    ("sdes", True, "RTP/AVPF", True, "RTP/SAVPF", "RTP/AVPF", CRYPTO),
    ("sdes", True, "RTP/AVP", False, "RTP/SAVP", "UDP/TLS/RTP/SAVP", FINGERPRINT),
    # DTLS-SRTP offered (RFC 5764 §8), answered with keys in SDP or none.
    ("dtls", False, "RTP/AVP", False, "UDP/TLS/RTP/SAVP", "RTP/SAVP", FINGERPRINT),
    ("dtls", False, "RTP/AVP", False, "UDP/TLS/RTP/SAVP", "RTP/AVP", FINGERPRINT),
    ("dtls", False, "RTP/AVPF", True, "UDP/TLS/RTP/SAVPF", "RTP/SAVPF", FINGERPRINT),
    ("dtls", False, "RTP/AVPF", True, "UDP/TLS/RTP/SAVPF", "RTP/AVPF", ""),
]


@pytest.mark.parametrize(
    ("policy", "tls", "session", "feedback", "offered", "answered", "keys"), REFUSED
)
def test_an_answer_changing_the_security_family_is_refused(
    policy: str, tls: bool, session: str, feedback: bool, offered: str, answered: str, keys: str
) -> None:
    ours = leg(policy, tls=tls, feedback=feedback)
    assert ours.make_offer(session_offer(session)).media[0].proto == offered
    with pytest.raises(MediaSecurityRefused) as refused:
        ours.take_answer(peer_answer(answered, keys))
    reason = refused.value.reason
    assert f"m= line 1: the answer's {answered} (" in reason
    assert f"is not the offer's {offered} (" in reason and "RFC 3264 §6" in reason
    assert "inline:" not in reason
    assert ours.keys(0) is None  # nothing of the refused answer was taken


def test_the_refusal_names_the_line_and_leaves_the_other_streams_alone() -> None:
    ours = leg("best-effort", tls=False)
    two = session_offer("RTP/AVP")
    two = two.with_media([two.media[0], two.media[0]])
    ours.make_offer(two)
    answer = peer_answer("RTP/AVP")
    bad = peer_answer("RTP/SAVP", CRYPTO).media[0]
    with pytest.raises(MediaSecurityRefused, match="m= line 2: the answer's RTP/SAVP"):
        ours.take_answer(answer.with_media([answer.media[0], bad]))
    # A rejected line (port 0) may carry any profile: RFC 3264 §6 ignores it.
    rejected = attrs.evolve(bad, port=0)
    took = ours.take_answer(answer.with_media([answer.media[0], rejected]))
    assert [m.port for m in took.media] == [30000, 0]


# (policy, TLS, the session's profile, offer_feedback, what we offer, the answer's profile)
TOLERATED = [
    ("rtp-only", False, "RTP/AVP", False, "RTP/AVP", "RTP/AVPF"),
    ("rtp-only", False, "RTP/AVPF", True, "RTP/AVPF", "RTP/AVP"),
    ("rtp-only", False, "RTP/AVPF", False, "RTP/AVP", "RTP/AVPF"),
    ("sdes", True, "RTP/AVP", False, "RTP/SAVP", "RTP/SAVPF"),
    ("sdes", True, "RTP/AVPF", True, "RTP/SAVPF", "RTP/SAVP"),
]


@pytest.mark.parametrize(("policy", "tls", "session", "feedback", "offered", "answered"), TOLERATED)
def test_an_answer_changing_only_the_feedback_profile_is_tolerated(
    policy: str, tls: bool, session: str, feedback: bool, offered: str, answered: str
) -> None:
    # RFC 4585 §5, RFC 5124 §6: AVPF and AVP (SAVPF and SAVP) ends interwork; the keys are the
    # same. The session gets the profile it offered, so its own check (RFC 3264 §6) passes,
    # and a=rtcp-fb only with a feedback profile (RFC 4585 §4.2).
    ours = leg(policy, tls=tls, feedback=feedback)
    plain_offer = session_offer(session)
    sent = ours.make_offer(plain_offer)
    assert sent.media[0].proto == offered
    peer = leg("sdes" if policy == "sdes" else "rtp-only", tls=tls, side="a", zrtp=False)
    peer.take_offer(sent)
    made = serialize_sdp(peer.make_answer(peer_answer("RTP/AVP"))).decode()
    made = made.replace(f" {offered} ", f" {answered} ")
    if answered.endswith("F"):
        made = made.replace("a=sendrecv", "a=rtcp-fb:* nack\r\na=sendrecv")
    took = ours.take_answer(parse_sdp_untrusted(made.encode()))
    assert took.media[0].proto == session
    assert took.media[0].attributes.has("rtcp-fb") == (
        session.endswith("F") and answered.endswith("F")
    )
    validate_answer(plain_offer, took)
    assert ours.streams[0].peer_proto == answered
    assert (ours.keys(0) is not None) == (policy == "sdes")


def test_dtls_answered_with_the_other_feedback_profile_is_tolerated() -> None:
    for session, feedback, answered in (
        ("RTP/AVP", False, "UDP/TLS/RTP/SAVPF"),
        ("RTP/AVPF", True, "UDP/TLS/RTP/SAVP"),
    ):
        ours = leg("dtls", tls=False, feedback=feedback)
        plain_offer = session_offer(session)
        ours.make_offer(plain_offer)
        took = ours.take_answer(peer_answer(answered, FINGERPRINT))
        assert took.media[0].proto == session
        validate_answer(plain_offer, took)
        assert ours.streams[0].key_exchange == "dtls"
        assert ours.expects_srtp(0)


def test_the_offers_own_profile_in_another_case_is_the_same_profile() -> None:
    ours = leg("rtp-only", tls=False)
    ours.make_offer(session_offer("RTP/AVP"))
    assert ours.take_answer(peer_answer("rtp/avp")).media[0].port == 30000


def test_best_effort_sdes_answered_rtp_savp_with_keys_is_keyed_as_offered() -> None:
    # RFC 8643 (OSRTP): the answerer should keep RTP/AVP, but one answering RTP/SAVP with its
    # a=crypto took our keys and gives its own: nothing is weaker, the leg is SRTP.
    ours = leg("best-effort", tls=True)
    offer = ours.make_offer(session_offer("RTP/AVP")).media[0]
    assert offer.proto == "RTP/AVP" and offer.attributes.has("crypto")
    # Our tag 5 is AES_CM_128_HMAC_SHA1_80 (the offer lists the suites strongest first).
    took = ours.take_answer(peer_answer("RTP/SAVP", CRYPTO.replace("crypto:1 ", "crypto:5 ")))
    assert took.media[0].proto == "RTP/AVP"  # the session's own profile
    assert ours.keys(0) is not None
