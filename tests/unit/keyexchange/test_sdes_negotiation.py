"""SDES offer/answer between engines (RFC 4568 §5, §7): suite choice by policy, skipped lines,
keys that work with SrtpSession for every suite, answers we refuse, re-INVITE keep/re-key, the TLS
rule, and no key material in any repr."""

from __future__ import annotations

import base64
import struct
from collections.abc import Sequence

import pytest

from gateway.core.interfaces import KeysReady, NegotiationFailed, SrtpKeys
from gateway.core.media.srtp import SUITES, SUPPORTED_SUITES, UNSUPPORTED_SUITES, SrtpSession
from gateway.plugins.keyexchange.sdes import (
    DEFAULT_SUITES,
    TLS_REQUIRED_REASON,
    LocalSdesError,
    SdesError,
    SdesKeyExchange,
    SdesNegotiation,
    crypto_values,
    parse_crypto_untrusted,
)
from tests.unit.keyexchange.sdes_lines import CountingRandom, events, key_b64, keys_of, line
from tests.unit.sdp.sdp_samples import SDES_KEY_80

Attrs = list[tuple[str, str | None]]

CM128_80 = "AES_CM_128_HMAC_SHA1_80"
CM128_32 = "AES_CM_128_HMAC_SHA1_32"
CM256_80 = "AES_256_CM_HMAC_SHA1_80"
GCM128 = "AEAD_AES_128_GCM"
GCM256 = "AEAD_AES_256_GCM"
ALL = list(SUPPORTED_SUITES)


def exchange(seed: int) -> tuple[SdesKeyExchange, CountingRandom]:
    random = CountingRandom(seed)
    return SdesKeyExchange(random_bytes=random), random


def failure_of(negotiation: SdesNegotiation) -> NegotiationFailed:
    (event,) = events(negotiation)
    assert isinstance(event, NegotiationFailed)
    assert negotiation.failure == event
    assert negotiation.state == "failed" and negotiation.keys is None
    assert negotiation.local_sdp_attributes() == []
    return event


def negotiate(
    offer_suites: Sequence[str], answer_suites: Sequence[str]
) -> tuple[SdesNegotiation, SdesNegotiation]:
    """A (offerer) and B (answerer), each with its own key source, completed."""
    a_exchange, _ = exchange(1)
    b_exchange, _ = exchange(2)
    a = a_exchange.offer(suites=offer_suites, secure_signalling=True)
    b = b_exchange.answer(a.local_sdp_attributes(), suites=answer_suites, secure_signalling=True)
    assert b is not None
    a.remote_sdp_attributes(b.local_sdp_attributes())
    return a, b


def rtp(sequence: int, ssrc: int = 0x5EC0DE5) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, sequence, 160 * sequence, ssrc) + b"\xd5" * 160


def rtcp_rr(ssrc: int = 0x5EC0DE5) -> bytes:
    return struct.pack("!BBHI", 0x81, 201, 7, ssrc) + struct.pack("!IIIIII", 7, 0, 1, 2, 3, 4)


# -- offering -----------------------------------------------------------------------------------


def test_offer_lists_the_policy_suites_in_its_order_with_a_fresh_key_each() -> None:
    ke, random = exchange(1)
    suites = [CM128_32, GCM256, "F8_128_HMAC_SHA1_80", CM128_80, GCM256, *UNSUPPORTED_SUITES]
    negotiation = ke.offer(suites=suites, secure_signalling=True)
    lines = [parse_crypto_untrusted(v) for v in crypto_values(negotiation.local_sdp_attributes())]
    assert [(x.tag, x.suite) for x in lines] == [(1, CM128_32), (2, GCM256), (3, CM128_80)]
    assert random.calls == [SUITES[s].key_salt_length for s in (CM128_32, GCM256, CM128_80)]
    keys = [x.keys[0].key_salt for x in lines]
    assert len(set(keys)) == 3
    assert all(x.keys[0].lifetime is None and x.keys[0].mki is None for x in lines)
    assert negotiation.role == "offerer" and negotiation.state == "offered"
    assert negotiation.keys is None and events(negotiation) == []


def test_offer_without_policy_suites_uses_the_defaults() -> None:
    ke, _ = exchange(1)
    negotiation = ke.offer(suites=(), secure_signalling=True)
    lines = [parse_crypto_untrusted(v) for v in crypto_values(negotiation.local_sdp_attributes())]
    assert tuple(x.suite for x in lines) == DEFAULT_SUITES
    assert DEFAULT_SUITES[0] == GCM256 and set(DEFAULT_SUITES) == set(SUPPORTED_SUITES)


def test_offer_with_no_usable_suite_fails_without_making_keys() -> None:
    ke, random = exchange(1)
    negotiation = ke.offer(
        suites=["F8_128_HMAC_SHA1_80", *UNSUPPORTED_SUITES], secure_signalling=True
    )
    failed = failure_of(negotiation)
    assert failed.sip_status == 488 and "no crypto-suite" in failed.reason
    assert random.calls == []


def test_a_bad_random_source_is_our_bug() -> None:
    with pytest.raises(LocalSdesError, match="30 octets"):
        SdesKeyExchange(random_bytes=lambda n: b"\x01" * (n - 1)).offer(
            suites=[CM128_80], secure_signalling=True
        )


# -- answering ----------------------------------------------------------------------------------


def test_answer_takes_the_policys_first_suite_with_the_same_tag_and_its_own_key() -> None:
    ke, random = exchange(2)
    offer = [line(1, GCM256, 1), line(2, CM256_80, 2), line(3, CM128_80, 3)]
    b = ke.answer(offer, suites=[CM128_80, CM256_80], secure_signalling=True)
    assert b is not None
    (value,) = crypto_values(b.local_sdp_attributes())
    answer = parse_crypto_untrusted(value)
    assert (answer.tag, answer.suite) == (3, CM128_80)  # the policy's order wins (RFC 4568 §7.1.1)
    assert random.calls == [30]
    keys = keys_of(b)
    assert keys == SrtpKeys(
        CM128_80,
        local_key=answer.keys[0].key_salt,
        remote_key=base64.b64decode(key_b64(CM128_80, 3)),
    )
    assert keys.local_key != keys.remote_key
    assert b.role == "answerer" and b.state == "established" and b.keys == keys
    assert b.suite == CM128_80
    assert b.security_record() == {
        "sdes_peer_key_lifetime": None,
        "sdes_answer_choice": (
            f"tag 3 {CM128_80}, first in the leg's policy order, over the offer's first "
            f"acceptable line, tag 2 {CM256_80}"
        ),
    }


@pytest.mark.parametrize(
    ("offer", "policy", "tag"),
    [
        # A phone listing the 32-bit tag first gets the 80-bit one it offers too.
        ([(1, CM128_32), (2, CM128_80)], [], 2),
        ([(1, CM128_32), (2, GCM128), (3, CM128_80)], [], 2),
        ([(1, CM128_32), (2, CM128_80), (3, GCM256)], [], 3),
        # Two lines of one suite: the offer's order between them.
        ([(1, CM128_32), (2, CM128_80), (3, CM128_80)], [], 2),
        # The operator's policy order decides, whatever "strongest" would be.
        ([(1, GCM256), (2, CM128_80)], [CM128_80, GCM256], 2),
        # Only one acceptable line: it, and no choice worth recording.
        ([(1, CM128_32)], [], 1),
    ],
)
def test_answer_prefers_the_policy_order_over_the_offer_order(
    offer: list[tuple[int, str]], policy: list[str], tag: int
) -> None:
    ke, _ = exchange(2)
    b = ke.answer([line(t, suite, t) for t, suite in offer], suites=policy, secure_signalling=True)
    assert b is not None
    answer = parse_crypto_untrusted(crypto_values(b.local_sdp_attributes())[0])
    assert answer.tag == tag
    suite = dict(offer)[tag]
    assert keys_of(b).remote_key == base64.b64decode(key_b64(suite, tag))
    assert (b.security_record()["sdes_answer_choice"] is None) == (tag == offer[0][0])


def test_offer_order_choice_takes_the_first_acceptable_line() -> None:
    ke = SdesKeyExchange(random_bytes=CountingRandom(2), answer_suite="offer-order")
    offer = [line(1, CM128_32, 1), line(2, GCM256, 2), line(3, CM128_80, 3)]
    b = ke.answer(offer, suites=[], secure_signalling=True)
    assert b is not None
    assert parse_crypto_untrusted(crypto_values(b.local_sdp_attributes())[0]).tag == 1
    assert b.security_record()["sdes_answer_choice"] is None
    with pytest.raises(ValueError, match="answer_suite"):
        SdesKeyExchange(answer_suite="strongest")


def test_answer_skips_lines_it_cannot_use_and_takes_the_next() -> None:
    ke, _ = exchange(2)
    offer = [
        ("crypto", "1 AES_CM_128_HMAC_SHA1_80 inline:not*base64"),
        ("crypto", f"2 F8_128_HMAC_SHA1_80 inline:{SDES_KEY_80}"),
        ("crypto", f"3 FANCY_NEW_SUITE inline:{SDES_KEY_80}"),
        ("crypto", f"4 {CM128_80} inline:{key_b64(CM128_80, 4)}|1:4;inline:{SDES_KEY_80}|2:4"),
        line(5, CM128_80, 5, " KDR=1"),
        line(6, CM128_80, 6, " UNENCRYPTED_SRTP"),
        line(7, CM128_80, 7, " UNENCRYPTED_SRTCP"),
        line(8, CM128_80, 8, " UNAUTHENTICATED_SRTP"),
        ("crypto", f"9 {CM128_80} inline:{key_b64(CM128_80, 9)};inline:{key_b64(CM128_80, 9)}"),
        line(10, CM128_80, 10, " X-NEW-THING"),
        line(11, CM128_80, 11, f" FEC_KEY=inline:{SDES_KEY_80}"),
        line(12, GCM128, 12),  # not allowed on this leg
        line(13, CM128_80, 13, "|2^31 KDR=0 WSH=256 FEC_ORDER=FEC_SRTP"),  # all usable
        line(14, CM128_80, 14),
    ]
    b = ke.answer(offer, suites=[CM128_80], secure_signalling=True)
    assert b is not None
    answer = parse_crypto_untrusted(crypto_values(b.local_sdp_attributes())[0])
    assert answer.tag == 13 and answer.kdr is None  # we add no session parameters
    assert keys_of(b).remote_key == base64.b64decode(key_b64(CM128_80, 13))


@pytest.mark.parametrize(
    ("offered", "why"),
    [
        (
            ("crypto", f"1 {CM128_80} inline:{key_b64(CM128_80, 1)}|1:1;inline:{SDES_KEY_80}|2:1"),
            "2 master keys in one line are not supported (one key, with or without an MKI, is)",
        ),
        (line(1, CM128_80, 1, " KDR=1"), "a key derivation rate other than 0 is not supported"),
        (line(1, CM128_80, 1, " UNENCRYPTED_SRTP"), "UNENCRYPTED_SRTP is not supported"),
        (line(1, CM128_80, 1, " UNENCRYPTED_SRTCP"), "UNENCRYPTED_SRTCP is not supported"),
        (line(1, CM128_80, 1, " UNAUTHENTICATED_SRTP"), "UNAUTHENTICATED_SRTP is not supported"),
        (line(1, CM128_80, 1, f" FEC_KEY=inline:{SDES_KEY_80}"), "FEC_KEY is not supported"),
        (line(1, CM128_80, 1, " X-NEW-THING"), "an unknown session parameter is not supported"),
        (line(1, GCM128, 1), f"crypto-suite {GCM128} is not allowed on this leg"),
        (
            ("crypto", f"1 AES_CM_128_NULL_AUTH inline:{SDES_KEY_80}"),
            "crypto-suite AES_CM_128_NULL_AUTH is not supported",
        ),
        (("crypto", f"1 Fancy_New_Suite inline:{SDES_KEY_80}"), "an unknown crypto-suite"),
    ],
)
def test_each_unusable_line_is_skipped_for_its_reason(
    offered: tuple[str, str | None], why: str
) -> None:
    ke, _ = exchange(2)
    b = ke.answer([offered, line(2, CM128_80, 2)], suites=[CM128_80], secure_signalling=True)
    assert b is not None and keys_of(b).remote_key == base64.b64decode(key_b64(CM128_80, 2))
    alone = ke.answer([offered], suites=[CM128_80], secure_signalling=True)
    assert alone is not None
    assert failure_of(alone).reason == f"no acceptable a=crypto line: tag 1: {why}"


@pytest.mark.parametrize(
    ("tail", "recorded"),
    [
        ("|2^20", "2^20 packets"),  # the RFC's own example; phones write such (rtpengine #57)
        ("|1000", "1000 packets"),
        ("|2^31", "2^31 packets"),
        ("|2^48", "2^48 packets"),
        ("|3000000000", "3000000000 packets"),
    ],
)
def test_any_lifetime_the_rfc_allows_is_accepted_and_recorded_by_default(
    tail: str, recorded: str
) -> None:
    # RFC 4568 §6.1: the lifetime binds the key's sender (it must re-key); accepting the key for
    # longer gives nothing away, and refusing turns such phones' calls into 488s.
    ke, _ = exchange(2)
    assert ke.min_peer_key_lifetime == 1
    b = ke.answer([line(1, CM128_80, 1, tail)], suites=[CM128_80], secure_signalling=True)
    assert b is not None and b.state == "established"
    assert b.security_record() == {
        "sdes_peer_key_lifetime": recorded,
        "sdes_answer_choice": None,
    }
    a = ke.offer(suites=[CM128_80], secure_signalling=True)
    a.remote_sdp_attributes([line(1, CM128_80, 9, tail)])
    assert a.state == "established"
    assert a.security_record()["sdes_peer_key_lifetime"] == recorded


def strict_exchange() -> SdesKeyExchange:
    return SdesKeyExchange(random_bytes=CountingRandom(2), min_peer_key_lifetime=1 << 31)


@pytest.mark.parametrize(
    ("tail", "why"),
    [
        (
            "|2^20",
            "key lifetime 2^20 packets is below the 2^31 set by [plugins.sdes] "
            "min_peer_key_lifetime",
        ),
        (
            "|2147483647",
            "key lifetime 2147483647 packets is below the 2^31 set by [plugins.sdes] "
            "min_peer_key_lifetime",
        ),
    ],
)
def test_a_configured_minimum_lifetime_skips_shorter_offered_lines(tail: str, why: str) -> None:
    ke = strict_exchange()
    b = ke.answer(
        [line(1, CM128_80, 1, tail), line(2, CM128_80, 2)],
        suites=[CM128_80],
        secure_signalling=True,
    )
    assert b is not None
    assert parse_crypto_untrusted(crypto_values(b.local_sdp_attributes())[0]).tag == 2
    assert b.security_record()["sdes_peer_key_lifetime"] is None
    alone = ke.answer([line(1, CM128_80, 1, tail)], suites=[CM128_80], secure_signalling=True)
    assert alone is not None
    assert failure_of(alone).reason == f"no acceptable a=crypto line: tag 1: {why}"
    kept = ke.answer([line(1, CM128_80, 1, "|2^31")], suites=[CM128_80], secure_signalling=True)
    assert kept is not None and kept.state == "established"


@pytest.mark.parametrize(("tail", "refused"), [("|2^20", True), ("|2^31", False), ("", False)])
def test_a_configured_minimum_lifetime_refuses_a_shorter_answer(tail: str, refused: bool) -> None:
    ke = strict_exchange()
    a = ke.offer(suites=[CM128_80], secure_signalling=True)
    answer = [line(1, CM128_80, 9, tail)]
    if not refused:
        a.remote_sdp_attributes(answer)
        assert a.state == "established"
        lifetime = a.security_record()["sdes_peer_key_lifetime"]
        assert lifetime == ("2^31 packets" if tail else None)
        return
    with pytest.raises(SdesError) as info:
        a.remote_sdp_attributes(answer)
    reason = (
        "the answer's a=crypto: key lifetime 2^20 packets is below the 2^31 set by "
        "[plugins.sdes] min_peer_key_lifetime"
    )
    assert info.value.reason == reason
    assert failure_of(a) == NegotiationFailed(reason, 488)


def test_nothing_acceptable_fails_488_saying_why_for_each_line() -> None:
    ke, random = exchange(2)
    offer = [
        ("crypto", f"1 {CM128_80} inline:{key_b64(CM128_80, 1)}|1:4;inline:{SDES_KEY_80}|2:4"),
        ("crypto", f"2 F8_128_HMAC_SHA1_80 inline:{SDES_KEY_80}"),
        ("crypto", f"3 {SDES_KEY_80} inline:{SDES_KEY_80}"),  # key where the suite belongs
        line(4, GCM256, 4),
        ("crypto", "5 AES_CM_128_HMAC_SHA1_80 inline:%%%"),
        line(1, CM128_80, 6),  # tag 1 again
    ]
    b = ke.answer(offer, suites=[CM128_80, *UNSUPPORTED_SUITES], secure_signalling=True)
    assert b is not None
    failed = failure_of(b)
    assert failed.sip_status == 488
    assert failed.reason == (
        "no acceptable a=crypto line: tag 1: 2 master keys in one line are not supported "
        "(one key, with or without an MKI, is); "
        "tag 2: crypto-suite F8_128_HMAC_SHA1_80 is not supported; "
        "tag 3: an unknown crypto-suite; "
        f"tag 4: crypto-suite {GCM256} is not allowed on this leg; "
        "line 5: a=crypto inline key is not base64; "
        "tag 1: the tag is repeated"
    )
    assert SDES_KEY_80[:8] not in failed.reason
    assert random.calls == []


def test_unavailable_suites_are_skipped_even_when_the_policy_names_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every suite is available in this build (AES-192 through the Python path); simulate a build
    # without AES_256_CM_HMAC_SHA1_80 to check the engine skips what srtp cannot provide.
    import gateway.plugins.keyexchange.sdes as sdes_module

    name = "AES_256_CM_HMAC_SHA1_80"
    reduced = tuple(s for s in sdes_module.SUPPORTED_SUITES if s != name)
    monkeypatch.setattr(sdes_module, "SUPPORTED_SUITES", reduced)
    ke, _ = exchange(2)
    b = ke.answer(
        [line(1, name, 1), line(2, CM128_80, 2)], suites=[name, CM128_80], secure_signalling=True
    )
    assert b is not None and keys_of(b).suite == CM128_80


def test_many_lines_are_summarised_and_bounded() -> None:
    ke, _ = exchange(2)
    offer = [line(tag, GCM128, tag) for tag in range(1, 13)]
    b = ke.answer(offer, suites=[CM128_80], secure_signalling=True)
    assert b is not None
    reason = failure_of(b).reason
    assert reason.count("not allowed") == 8 and reason.endswith("; ...")

    limited = SdesKeyExchange(random_bytes=CountingRandom(3), max_crypto_lines=11)
    b = limited.answer(offer, suites=[GCM128], secure_signalling=True)
    assert b is not None
    assert failure_of(b).reason == "the offer has more than 11 a=crypto lines"


def test_no_crypto_in_the_offer_means_sdes_does_not_apply() -> None:
    ke, _ = exchange(2)
    assert ke.answer([("rtpmap", "0 PCMU/8000")], suites=[], secure_signalling=True) is None
    assert ke.answer([], suites=[], secure_signalling=False) is None


# -- both ends: keys that work ------------------------------------------------------------------


@pytest.mark.parametrize("suite", ALL)
def test_offer_answer_keys_match_and_protect_media_both_ways(suite: str) -> None:
    a, b = negotiate([CM128_80, suite] if suite != CM128_80 else [suite], [suite])
    a_keys, b_keys = keys_of(a), keys_of(b)
    assert a_keys.suite == b_keys.suite == suite
    assert a_keys.local_key == b_keys.remote_key
    assert a_keys.remote_key == b_keys.local_key
    assert a_keys.local_key != a_keys.remote_key
    assert len(a_keys.local_key) == SUITES[suite].key_salt_length
    assert a.state == b.state == "established" and a.keys == a_keys
    with SrtpSession(a_keys) as a_srtp, SrtpSession(b_keys) as b_srtp:
        for sequence in (1, 2, 3):
            packet = rtp(sequence)
            protected = a_srtp.protect_rtp(packet)
            assert protected is not None and protected != packet
            assert b_srtp.unprotect_rtp(protected) == packet
            back = b_srtp.protect_rtp(rtp(sequence, ssrc=0xB0B))
            assert back is not None
            assert a_srtp.unprotect_rtp(back) == rtp(sequence, ssrc=0xB0B)
        srtcp = a_srtp.protect_rtcp(rtcp_rr())
        assert srtcp is not None and b_srtp.unprotect_rtcp(srtcp) == rtcp_rr()
        # A's own key does not open what A sent: the directions really have different keys.
        with SrtpSession(SrtpKeys(suite, a_keys.local_key, a_keys.local_key)) as wrong:
            assert wrong.unprotect_rtp(a_srtp.protect_rtp(rtp(9)) or b"") == rtp(9)
            assert wrong.unprotect_rtp(b_srtp.protect_rtp(rtp(9)) or b"") is None


def test_every_leg_and_direction_gets_its_own_key() -> None:
    ke, _ = exchange(5)
    first = ke.offer(suites=[CM128_80], secure_signalling=True)
    second = ke.offer(suites=[CM128_80], secure_signalling=True)
    assert first.local_sdp_attributes() != second.local_sdp_attributes()


# -- answers the offerer refuses ----------------------------------------------------------------


UNACCEPTABLE_ANSWERS: list[tuple[Attrs, str]] = [
    ([], "the answer has no a=crypto line"),
    ([("rtpmap", "0 PCMU/8000")], "the answer has no a=crypto line"),
    (
        [line(1, CM128_80, 9), line(2, GCM256, 9)],
        "the answer has more than one a=crypto line (RFC 4568 §5.1.2)",
    ),
    ([line(3, CM128_80, 9)], "the answer's a=crypto tag 3 was not offered"),
    (
        [line(2, CM128_80, 9)],
        "the answer's a=crypto tag 2 changes the crypto-suite (RFC 4568 §5.1.2)",
    ),
    (
        [
            (
                "crypto",
                f"1 {CM128_80} inline:{key_b64(CM128_80, 9)}|1:1;inline:{SDES_KEY_80}|2:1",
            )
        ],
        "the answer's a=crypto: 2 master keys in one line are not supported "
        "(one key, with or without an MKI, is)",
    ),
    (
        [line(1, CM128_80, 9, " UNENCRYPTED_SRTCP")],
        "the answer's a=crypto: UNENCRYPTED_SRTCP is not supported",
    ),
    (
        [("crypto", f"1 {CM128_80} inline:{key_b64(GCM256, 9)}")],
        "the answer's AES_CM_128_HMAC_SHA1_80 needs a 30-octet key and salt, "
        "the inline key has 44 octets",
    ),
]


@pytest.mark.parametrize(("answer", "reason"), UNACCEPTABLE_ANSWERS)
def test_unacceptable_answers_raise_and_fail(answer: Attrs, reason: str) -> None:
    ke, _ = exchange(1)
    a = ke.offer(suites=[CM128_80, GCM256], secure_signalling=True)
    with pytest.raises(SdesError) as info:
        a.remote_sdp_attributes(answer)
    assert info.value.reason == reason and info.value.sip_status == 488
    assert info.value.__cause__ is None and info.value.__suppress_context__
    failed = failure_of(a)
    assert failed == NegotiationFailed(reason, 488)
    for text in (reason, str(info.value), repr(a)):
        assert key_b64(CM128_80, 9)[:8] not in text
    # A failed negotiation stays failed and quiet.
    a.remote_sdp_attributes([line(1, CM128_80, 9)])
    assert events(a) == [] and a.state == "failed"


@pytest.mark.parametrize(("answer", "reason"), UNACCEPTABLE_ANSWERS)
def test_the_check_of_an_answer_says_why_it_is_refused_and_changes_nothing(
    answer: Attrs, reason: str
) -> None:
    """``check_remote_sdp_attributes``: the reason :meth:`remote_sdp_attributes` would give,
    nothing queued, nothing changed: a forked phone's refused answer leaves the negotiation
    able to take another phone's (docs/media_security.md, "Forked SDES callees")."""
    ke, _ = exchange(1)
    a = ke.offer(suites=[CM128_80, GCM256], secure_signalling=True)
    assert a.check_remote_sdp_attributes(answer) == reason
    assert events(a) == [] and a.state == "offered" and a.failure is None
    assert a.check_remote_sdp_attributes([line(1, CM128_80, 9)]) is None
    assert events(a) == [] and a.state == "offered"
    a.remote_sdp_attributes([line(1, CM128_80, 9)])
    assert keys_of(a).remote_key == base64.b64decode(key_b64(CM128_80, 9))


def test_the_check_refuses_our_own_key_copied_back_and_keeps_the_keys_in_force() -> None:
    """Another forked phone's answer copying our key back, after a first phone's answer put
    keys in force: refused by the check, the keys in force and the state kept."""
    ke, _ = exchange(1)
    a = ke.offer(suites=[CM128_80], secure_signalling=True)
    a.remote_sdp_attributes([line(1, CM128_80, 20)])
    in_force = keys_of(a)
    ours = a.local_sdp_attributes()
    reason = a.check_remote_sdp_attributes(ours)
    assert reason is not None and "copied the key of our offer's a=crypto tag 1" in reason
    assert a.keys == in_force and a.state == "established" and events(a) == []


def test_the_same_answer_twice_changes_nothing_a_new_one_replaces_the_peer_key() -> None:
    ke, _ = exchange(1)
    a = ke.offer(suites=[CM128_80], secure_signalling=True)
    a.remote_sdp_attributes([line(1, CM128_80, 20)])  # 183 with SDP
    first = keys_of(a)
    a.remote_sdp_attributes([line(1, CM128_80, 20)])  # 200 with the same SDP
    assert events(a) == []
    a.remote_sdp_attributes([line(1, CM128_80, 21)])
    second = keys_of(a)
    assert second.local_key == first.local_key
    assert second.remote_key == base64.b64decode(key_b64(CM128_80, 21))


def test_an_answering_negotiation_takes_no_second_offer_through_remote_attributes() -> None:
    ke, _ = exchange(2)
    b = ke.answer([line(1, CM128_80, 1)], suites=[], secure_signalling=True)
    assert b is not None
    with pytest.raises(LocalSdesError, match="previous="):
        b.remote_sdp_attributes([line(1, CM128_80, 1)])


# -- nothing on the media path ------------------------------------------------------------------


def test_sdes_has_no_media_path_part() -> None:
    a, b = negotiate([CM128_80], [CM128_80])
    for negotiation in (a, b):
        for packet in (rtp(1), b"\x16\xfe\xfd" + bytes(20), b"\x00\x01\x00\x00" + bytes(16)):
            assert negotiation.claims_packet(packet[0], packet) is False
            negotiation.receive_packet(packet, now=1.0)
        assert negotiation.packets_to_send(now=1.0) == []
        assert negotiation.get_timer() is None
        negotiation.handle_timer(now=5.0)
    assert SdesKeyExchange.name == "sdes" and SdesKeyExchange.media_path is False


# -- the TLS rule -------------------------------------------------------------------------------


def test_no_keys_are_made_or_accepted_without_tls() -> None:
    ke, random = exchange(1)
    a = ke.offer(suites=[CM128_80], secure_signalling=False)
    failed = failure_of(a)
    assert failed == NegotiationFailed(TLS_REQUIRED_REASON, 488)
    assert failed.reason == "SDES keys are only sent over TLS-protected signalling (RFC 4568 §8.1)"
    b = ke.answer([line(1, CM128_80, 1)], suites=[CM128_80], secure_signalling=False)
    assert b is not None
    assert failure_of(b) == NegotiationFailed(TLS_REQUIRED_REASON, 488)
    assert random.calls == []
    # Nor on a re-INVITE that moved off TLS.
    a2, b2 = negotiate([CM128_80], [CM128_80])
    events(a2)
    reoffer = ke.offer(suites=[CM128_80], secure_signalling=False, previous=a2)
    assert failure_of(reoffer).reason == TLS_REQUIRED_REASON
    reanswer = ke.answer(
        a2.local_sdp_attributes(), suites=[CM128_80], secure_signalling=False, previous=b2
    )
    assert reanswer is not None and failure_of(reanswer).reason == TLS_REQUIRED_REASON
    assert random.calls == []


# -- re-INVITE (RFC 4568 §7.1.4) ----------------------------------------------------------------


def established_pair() -> tuple[SdesNegotiation, SdesNegotiation, SdesKeyExchange, CountingRandom]:
    """A offered, B (whose exchange and key source are returned) answered; events drained."""
    a_exchange, _ = exchange(1)
    b_exchange, b_random = exchange(2)
    a = a_exchange.offer(suites=[GCM256, CM128_80], secure_signalling=True)
    b = b_exchange.answer(a.local_sdp_attributes(), suites=[CM128_80], secure_signalling=True)
    assert b is not None
    a.remote_sdp_attributes(b.local_sdp_attributes())
    events(a), events(b)
    b_random.calls.clear()
    return a, b, b_exchange, b_random


def test_reoffer_with_the_same_key_is_answered_with_the_same_key() -> None:
    a, b, b_exchange, b_random = established_pair()
    reoffer = [("crypto", crypto_values(a.local_sdp_attributes())[1])]  # A repeats tag 2
    again = b_exchange.answer(reoffer, suites=[CM128_80], secure_signalling=True, previous=b)
    assert again is not None
    assert again.local_sdp_attributes() == b.local_sdp_attributes()
    assert again.keys == b.keys and again.state == "established"
    assert events(again) == []  # keys unchanged: the core keeps its SRTP context
    assert b_random.calls == []


def test_reoffer_with_the_same_key_under_a_new_tag_keeps_the_keys() -> None:
    a, b, b_exchange, _ = established_pair()
    value = crypto_values(a.local_sdp_attributes())[1].replace("2 ", "5 ", 1)
    again = b_exchange.answer(
        [line(1, GCM256, 30), ("crypto", value)],
        suites=[CM128_80],
        secure_signalling=True,
        previous=b,
    )
    assert again is not None and events(again) == [] and again.keys == b.keys
    assert crypto_values(again.local_sdp_attributes())[0].startswith("5 AES_CM_128_HMAC_SHA1_80 ")


def test_a_peers_reoffer_keeping_its_key_keeps_it_over_a_stronger_line() -> None:
    # We offered GCM and _80, the phone answered _80 (its policy); its re-offer (hold) repeats
    # its _80 key first and adds GCM. The policy order ranks GCM first, but taking it would
    # re-key mid-call under the same SSRC (RFC 4568 §7.1.4): the key in force is kept.
    a, b, _, _ = established_pair()
    assert a.keys is not None
    phone_line = crypto_values(b.local_sdp_attributes())[0].replace("2 ", "1 ", 1)
    reoffer = [("crypto", phone_line), line(2, GCM256, 60)]
    a_exchange, a_random = exchange(7)
    again = a_exchange.answer(
        reoffer, suites=[GCM256, CM128_80], secure_signalling=True, previous=a
    )
    assert again is not None
    assert events(again) == [] and again.keys == a.keys  # the SRTP context goes on
    assert a_random.calls == []
    assert crypto_values(again.local_sdp_attributes())[0].startswith("1 AES_CM_128_HMAC_SHA1_80 ")
    assert again.security_record()["sdes_answer_choice"] is None
    # Listed second, it is kept all the same, and the record says why.
    swapped = a_exchange.answer(
        [line(2, GCM256, 60), ("crypto", phone_line)],
        suites=[GCM256, CM128_80],
        secure_signalling=True,
        previous=a,
    )
    assert swapped is not None and events(swapped) == [] and swapped.keys == a.keys
    choice = swapped.security_record()["sdes_answer_choice"]
    assert choice is not None and "the key in force" in choice
    # A fresh offer (no key in force) still takes the policy's first suite.
    fresh = a_exchange.answer(reoffer, suites=[GCM256, CM128_80], secure_signalling=True)
    assert fresh is not None and keys_of(fresh).suite == GCM256


def test_reoffer_with_a_new_peer_key_rekeys_both_directions() -> None:
    _, b, b_exchange, b_random = established_pair()
    assert b.keys is not None
    again = b_exchange.answer(
        [line(2, CM128_80, 40)], suites=[CM128_80], secure_signalling=True, previous=b
    )
    assert again is not None
    keys = keys_of(again)
    assert keys.remote_key == base64.b64decode(key_b64(CM128_80, 40))
    assert keys.local_key != b.keys.local_key  # fresh key of ours too
    assert b_random.calls == [30]


def test_reoffer_with_a_new_suite_rekeys() -> None:
    _, b, b_exchange, _ = established_pair()
    assert b.keys is not None
    again = b_exchange.answer(
        [line(1, CM256_80, 41)], suites=[CM128_80, CM256_80], secure_signalling=True, previous=b
    )
    assert again is not None
    keys = keys_of(again)
    assert keys.suite == CM256_80 and len(keys.local_key) == 46


def test_our_reoffer_repeats_the_line_in_force() -> None:
    a, b, _, _ = established_pair()
    a_exchange, a_random = exchange(7)
    reoffer = a_exchange.offer(suites=[GCM256, CM128_80], secure_signalling=True, previous=a)
    offered_before = crypto_values(a.local_sdp_attributes())
    assert crypto_values(reoffer.local_sdp_attributes()) == [offered_before[1]]
    assert a_random.calls == []
    assert reoffer.keys == a.keys and reoffer.state == "offered"
    # B answers unchanged: nothing to do.
    reoffer.remote_sdp_attributes(b.local_sdp_attributes())
    assert events(reoffer) == [] and reoffer.keys == a.keys and reoffer.state == "established"
    # A later re-offer from this one repeats the same line again.
    third = a_exchange.offer(suites=[CM128_80], secure_signalling=True, previous=reoffer)
    assert crypto_values(third.local_sdp_attributes()) == [offered_before[1]]


def test_our_reoffer_answered_with_a_new_peer_key() -> None:
    a, _, _, _ = established_pair()
    assert a.keys is not None
    a_exchange, _ = exchange(7)
    reoffer = a_exchange.offer(suites=[CM128_80], secure_signalling=True, previous=a)
    reoffer.remote_sdp_attributes([line(2, CM128_80, 50)])
    keys = keys_of(reoffer)
    assert keys.local_key == a.keys.local_key  # already sent in the re-offer
    assert keys.remote_key == base64.b64decode(key_b64(CM128_80, 50))


@pytest.mark.parametrize(
    ("suites", "rekey"), [([CM128_80], True), ([GCM256], False)], ids=["rekey", "suite-dropped"]
)
def test_fresh_reoffer_when_asked_or_when_the_suite_is_no_longer_allowed(
    suites: list[str], rekey: bool
) -> None:
    a, _, _, _ = established_pair()
    assert a.keys is not None
    a_exchange, a_random = exchange(7)
    reoffer = a_exchange.offer(suites=suites, secure_signalling=True, previous=a, rekey=rekey)
    lines = [parse_crypto_untrusted(v) for v in crypto_values(reoffer.local_sdp_attributes())]
    assert [x.suite for x in lines] == suites and lines[0].tag == 1
    assert lines[0].keys[0].key_salt != a.keys.local_key
    assert a_random.calls == [SUITES[suites[0]].key_salt_length]
    assert reoffer.keys == a.keys  # still in force until answered
    reoffer.remote_sdp_attributes([line(1, suites[0], 60)])
    assert keys_of(reoffer).local_key == lines[0].keys[0].key_salt


def test_roles_can_swap_on_a_reinvite() -> None:
    _, b, b_exchange, b_random = established_pair()
    # B (the answerer) now re-offers: its answer line in force is repeated.
    reoffer = b_exchange.offer(suites=[CM128_80], secure_signalling=True, previous=b)
    assert reoffer.local_sdp_attributes() == b.local_sdp_attributes()
    assert b_random.calls == []


def test_previous_that_failed_or_is_not_sdes_gives_a_fresh_negotiation() -> None:
    ke, _ = exchange(1)
    failed = ke.offer(suites=[CM128_80], secure_signalling=False)
    fresh = ke.offer(suites=[CM128_80], secure_signalling=True, previous=failed)
    assert fresh.keys is None
    answer = ke.answer([line(1, CM128_80, 1)], suites=[], secure_signalling=True, previous=failed)
    assert answer is not None and isinstance(events(answer)[0], KeysReady)


# -- no key material in reprs -------------------------------------------------------------------


def all_key_texts(keys: SrtpKeys | None) -> list[str]:
    """Ways a key could leak into text: hex, a base64 prefix, a slice of the bytes repr."""
    assert keys is not None
    texts = []
    for raw in (keys.local_key, keys.remote_key):
        texts += [raw.hex(), base64.b64encode(raw).decode()[:12], repr(raw)[2:14]]
    return texts


@pytest.mark.parametrize("suite", ALL)
def test_reprs_and_strs_never_show_keys(suite: str) -> None:
    a_exchange, _ = exchange(1)
    a = a_exchange.offer(suites=[suite], secure_signalling=True)
    b_exchange, _ = exchange(2)
    b = b_exchange.answer(a.local_sdp_attributes(), suites=[suite], secure_signalling=True)
    assert b is not None
    a.remote_sdp_attributes(b.local_sdp_attributes())
    texts = [
        repr(a),
        str(a),
        repr(b),
        str(b),
        repr(a_exchange),
        repr(a.keys),
        repr(events(a)),
        repr(events(b)),
        repr([parse_crypto_untrusted(v) for v in crypto_values(a.local_sdp_attributes())]),
    ]
    with pytest.raises(SdesError) as info:
        a.remote_sdp_attributes(b.local_sdp_attributes() * 2)
    texts += [str(info.value), repr(info.value), repr(a), repr(events(a))]
    secrets = all_key_texts(b.keys)
    for text in texts:
        assert not [secret for secret in secrets if secret in text], text
    assert repr(b) == f"<SdesNegotiation answerer established suite={suite}>"


@pytest.mark.parametrize("suite", [CM128_80, GCM256])
def test_an_answer_that_echoes_our_key_is_refused(suite: str) -> None:
    # A peer that copies the offer into its answer (or an SDP sent back to us) would have both
    # directions keyed alike: our own SRTP, reflected to us, would then authenticate.
    ke, _ = exchange(1)
    a = ke.offer(suites=[CM128_80, GCM256], secure_signalling=True)
    tag = 1 if suite == CM128_80 else 2
    (echoed,) = [
        value for value in crypto_values(a.local_sdp_attributes()) if value.startswith(f"{tag} ")
    ]
    with pytest.raises(SdesError) as info:
        a.remote_sdp_attributes([("crypto", echoed)])
    reason = (
        f"the peer's answer copied the key of our offer's a=crypto tag {tag} instead of "
        "sending a key of its own: each side must send its own key (RFC 4568 §5.1.2), and one "
        "key both ways would let our own SRTP sent back to us authenticate (RFC 3711 §9.1); "
        "a peer bug, refused"
    )
    assert info.value.reason == reason and info.value.sip_status == 488
    assert failure_of(a) == NegotiationFailed(reason, 488)
    assert a.keys is None and a.local_sdp_attributes() == []
    our_key = echoed.split("inline:")[1][:8]
    assert our_key not in reason and our_key not in repr(a)
