"""SDES lines with an MKI (RFC 4568 §6.1, RFC 3711 §3.1): one key with an MKI is accepted, the
peer's MKI goes into ``SrtpKeys.remote_mki``; ``[plugins.sdes] mki`` says whether our lines carry
one ("mirror", the default: toward a peer whose line has one), never ("receive-only"), or
whether such lines are refused ("refuse"); several keys per line stay refused; the keys made
work with SrtpSession both ways."""

from __future__ import annotations

import base64

import pytest

from gateway.core.interfaces import NegotiationFailed, SrtpKeys
from gateway.core.media.srtp import SrtpSession
from gateway.plugins.keyexchange.sdes import (
    Mki,
    SdesConfig,
    SdesKeyExchange,
    SdesNegotiation,
    crypto_values,
    parse_crypto_untrusted,
)
from tests.unit.keyexchange.sdes_lines import CountingRandom, events, key_b64, keys_of, line

CM128_80 = "AES_CM_128_HMAC_SHA1_80"
GCM128 = "AEAD_AES_128_GCM"
SBC_TAIL = "|2^31|1:1"  # what carrier SBCs and FreeSWITCH send (asterisk issue 825)


def exchange(seed: int, mki: str = "mirror") -> SdesKeyExchange:
    return SdesKeyExchange(random_bytes=CountingRandom(seed), mki=mki)


def our_line(negotiation: SdesNegotiation) -> str:
    (value,) = crypto_values(negotiation.local_sdp_attributes())
    return value


def peer_keys(ours: SrtpKeys, offer_value: str) -> SrtpKeys:
    """The peer's view of the keys: its key from its line, ours from our answer."""
    peer = parse_crypto_untrusted(offer_value).keys[0]
    return SrtpKeys(
        ours.suite,
        local_key=peer.key_salt,
        remote_key=ours.local_key,
        local_mki=peer.mki.to_bytes() if peer.mki is not None else None,
        remote_mki=ours.local_mki,
    )


# -- answering an offer with an MKI -----------------------------------------------------------


@pytest.mark.parametrize(("tail", "length"), [(SBC_TAIL, 1), ("|7:4", 4), ("|2^20|300:2", 2)])
def test_an_mki_offer_is_answered_with_an_mki_of_the_same_length(tail: str, length: int) -> None:
    offer = [line(1, CM128_80, 1, tail)]
    answer = exchange(1).answer(offer, suites=[CM128_80], secure_signalling=True)
    assert answer is not None and answer.state == "established"
    ours = parse_crypto_untrusted(our_line(answer))
    assert ours.tag == 1 and ours.keys[0].mki == Mki(1, length)
    assert ours.keys[0].lifetime is None
    keys = keys_of(answer)
    peer_mki = parse_crypto_untrusted(offer[0][1] or "").keys[0].mki
    assert peer_mki is not None and keys.remote_mki == peer_mki.to_bytes()
    assert keys.local_mki == (1).to_bytes(length, "big")
    assert keys.remote_key == base64.b64decode(key_b64(CM128_80, 1))


@pytest.mark.parametrize("suite", [CM128_80, GCM128])
def test_the_keys_of_an_mki_answer_carry_media_both_ways(suite: str) -> None:
    offer = [line(4, suite, 4, SBC_TAIL)]
    answer = exchange(4).answer(offer, suites=[suite], secure_signalling=True)
    assert answer is not None
    ours = keys_of(answer)
    gateway, peer = SrtpSession(ours), SrtpSession(peer_keys(ours, offer[0][1] or ""))
    packet = bytes.fromhex("80000001000000000000abcd") + b"voice"
    sent = peer.protect_rtp(packet)
    assert sent is not None and gateway.unprotect_rtp(sent) == packet
    back = gateway.protect_rtp(packet)
    assert back is not None and peer.unprotect_rtp(back) == packet


def test_receive_only_answers_without_an_mki_and_still_reads_the_peers() -> None:
    offer = [line(1, CM128_80, 1, SBC_TAIL)]
    answer = exchange(1, "receive-only").answer(offer, suites=[CM128_80], secure_signalling=True)
    assert answer is not None
    assert "|" not in our_line(answer)
    keys = keys_of(answer)
    assert keys.local_mki is None and keys.remote_mki == b"\x01"


def test_refuse_skips_mki_lines_as_before() -> None:
    offer = [line(1, CM128_80, 1, SBC_TAIL)]
    answer = exchange(1, "refuse").answer(offer, suites=[CM128_80], secure_signalling=True)
    assert answer is not None
    assert events(answer) == [
        NegotiationFailed(
            "no acceptable a=crypto line: tag 1: "
            'MKI is not supported ([plugins.sdes] mki = "refuse")',
            488,
        )
    ]
    mixed = [line(1, CM128_80, 1, SBC_TAIL), line(2, CM128_80, 2)]
    answer = exchange(1, "refuse").answer(mixed, suites=[CM128_80], secure_signalling=True)
    assert answer is not None and parse_crypto_untrusted(our_line(answer)).tag == 2


# -- which line of a mixed offer ---------------------------------------------------------------


CM256_80 = "AES_256_CM_HMAC_SHA1_80"


@pytest.mark.parametrize("order", ["policy-order", "offer-order"])
@pytest.mark.parametrize("mki", ["mirror", "receive-only"])
def test_a_line_without_mki_wins_over_the_same_suite_with_one(order: str, mki: str) -> None:
    """A peer offering one suite with and without an MKI got the plain line before MKIs were
    accepted, and still does: every peer reads it, and an MKI costs in every packet."""
    ke = SdesKeyExchange(random_bytes=CountingRandom(6), answer_suite=order, mki=mki)
    mixed = [line(1, CM128_80, 1, SBC_TAIL), line(2, CM128_80, 2)]
    answer = ke.answer(mixed, suites=[CM128_80], secure_signalling=True)
    assert answer is not None
    ours = parse_crypto_untrusted(our_line(answer))
    assert ours.tag == 2 and ours.keys[0].mki is None
    keys = keys_of(answer)
    assert keys.remote_key == base64.b64decode(key_b64(CM128_80, 2))
    assert keys.local_mki is None and keys.remote_mki is None
    assert answer.security_record()["sdes_answer_choice"] == (
        f"tag 2 {CM128_80}, the same suite without an MKI, over the offer's first acceptable "
        f"line, tag 1 {CM128_80}"
    )


def test_a_suite_the_policy_ranks_higher_still_wins_with_an_mki() -> None:
    """Between suites the policy decides; the MKI only breaks ties within one suite."""
    offer = [line(1, CM128_80, 1), line(2, CM256_80, 2, SBC_TAIL), line(3, CM256_80, 3, "|2:1")]
    answer = exchange(7).answer(offer, suites=[CM256_80, CM128_80], secure_signalling=True)
    assert answer is not None
    ours = parse_crypto_untrusted(our_line(answer))
    assert (ours.tag, ours.suite, ours.keys[0].mki) == (2, CM256_80, Mki(1, 1))
    # The plain line first in the offer, the MKI line of the same suite later: the plain one.
    plain_first = [line(1, CM128_80, 1), line(2, CM128_80, 2, SBC_TAIL)]
    answer = exchange(7).answer(plain_first, suites=[CM128_80], secure_signalling=True)
    assert answer is not None and parse_crypto_untrusted(our_line(answer)).tag == 1
    assert answer.security_record()["sdes_answer_choice"] is None


def test_a_re_offer_keeping_the_mki_key_in_force_keeps_it_over_a_plain_line() -> None:
    """RFC 4568 §7.1.4: the key in force wins over the plain line, or the call re-keys."""
    ke = exchange(8)
    first = ke.answer([line(1, CM128_80, 1, SBC_TAIL)], suites=[CM128_80], secure_signalling=True)
    assert first is not None
    before = keys_of(first)
    again = ke.answer(
        [line(1, CM128_80, 1, SBC_TAIL), line(2, CM128_80, 2)],
        suites=[CM128_80],
        secure_signalling=True,
        previous=first,
    )
    assert again is not None and events(again) == [] and again.keys == before


def test_several_keys_in_one_line_stay_refused_with_a_clear_reason() -> None:
    two = f"1 {CM128_80} inline:{key_b64(CM128_80, 1)}|1:1;inline:{key_b64(CM128_80, 2)}|2:1"
    answer = exchange(1).answer([("crypto", two)], suites=[CM128_80], secure_signalling=True)
    assert answer is not None
    (failed,) = events(answer)
    assert isinstance(failed, NegotiationFailed) and failed.sip_status == 488
    assert failed.reason == (
        "no acceptable a=crypto line: tag 1: 2 master keys in one line are not supported "
        "(one key, with or without an MKI, is)"
    )


# -- offering ---------------------------------------------------------------------------------


def test_a_first_offer_has_no_mki_and_takes_an_answer_with_one() -> None:
    a = exchange(2).offer(suites=[CM128_80, GCM128], secure_signalling=True)
    assert all("|" not in value for value in crypto_values(a.local_sdp_attributes()))
    a.remote_sdp_attributes([line(1, CM128_80, 9, "|5:2")])
    keys = keys_of(a)
    assert keys.local_mki is None and keys.remote_mki == b"\x00\x05"


def test_a_re_offer_to_an_mki_peer_repeats_our_mki_or_mirrors_it_on_fresh_keys() -> None:
    ke = exchange(3)
    first = ke.answer([line(1, CM128_80, 1, "|1:4")], suites=[CM128_80], secure_signalling=True)
    assert first is not None
    keys = keys_of(first)
    # Kept: the line in force again, MKI and all (RFC 4568 §7.1.4).
    again = ke.offer(suites=[CM128_80], secure_signalling=True, previous=first)
    assert crypto_values(again.local_sdp_attributes()) == [our_line(first)]
    again.remote_sdp_attributes([line(1, CM128_80, 1, "|1:4")])
    assert events(again) == [] and again.keys == keys
    # Re-keyed: every fresh line carries an MKI of the peer's length.
    fresh = ke.offer(suites=[CM128_80, GCM128], secure_signalling=True, previous=first, rekey=True)
    lines = [parse_crypto_untrusted(v) for v in crypto_values(fresh.local_sdp_attributes())]
    assert [x.keys[0].mki for x in lines] == [Mki(1, 4), Mki(1, 4)]
    assert all(x.keys[0].key_salt != keys.local_key for x in lines)


def test_a_re_offer_changing_only_the_mki_is_a_new_key_for_us_too() -> None:
    """Same peer key, other MKI: new contexts, so our key must be fresh (RFC 3711 §9.1)."""
    ke = exchange(5)
    first = ke.answer([line(1, CM128_80, 1, "|1:1")], suites=[CM128_80], secure_signalling=True)
    assert first is not None
    before = keys_of(first)
    same = ke.answer(
        [line(1, CM128_80, 1, "|1:1")], suites=[CM128_80], secure_signalling=True, previous=first
    )
    assert same is not None and events(same) == [] and same.keys == before
    other = ke.answer(
        [line(1, CM128_80, 1, "|2:1")], suites=[CM128_80], secure_signalling=True, previous=first
    )
    assert other is not None
    after = keys_of(other)
    assert after.remote_key == before.remote_key and after.remote_mki == b"\x02"
    assert after.local_key != before.local_key


# -- configuration ----------------------------------------------------------------------------


def test_the_mki_setting_is_checked() -> None:
    assert SdesConfig().mki == "mirror"
    with pytest.raises(ValueError, match="mki: expected one of 'mirror', 'receive-only', 'refuse'"):
        SdesConfig(mki="always")
    with pytest.raises(ValueError, match="mki: expected one of"):
        SdesKeyExchange(mki="always")
