"""MIKEY offer/answer between engines: the three modes both ways, the TLS rule of the NULL
container, MAC and verification failures, T replay and clock skew, refused modes, GStreamer-style
offers, re-offers keeping keys, and no key material in reasons or reprs."""

from __future__ import annotations

import base64
import random
import struct
from collections.abc import Sequence

import attrs
import pytest

from gateway.core.interfaces import KeysReady, LegInfo, NegotiationFailed, SrtpKeys
from gateway.core.media.srtp import SUITES, SUPPORTED_SUITES, SrtpSession
from gateway.plugins.keyexchange.mikey import MikeyKeyExchange
from gateway.plugins.keyexchange.mikey.crypto import kemac_keys, mac
from gateway.plugins.keyexchange.mikey.engine import (
    MAX_VERIFIED_ANSWERS,
    TLS_REQUIRED_REASON,
    MikeyNegotiation,
    keymgmt_value,
    mikey_message_of,
)
from gateway.plugins.keyexchange.mikey.payloads import (
    DataType,
    DhValue,
    ErrorPayload,
    Header,
    Kemac,
    KeyData,
    LocalMikeyError,
    MikeyError,
    Rand,
    SecurityPolicy,
    SrtpCs,
    Timestamp,
    Verification,
    encode_key_data,
    encode_message,
    parse_message_untrusted,
)
from gateway.plugins.keyexchange.mikey.policy import policy_for_suite
from gateway.plugins.keyexchange.mikey.replay import ReplayCache
from tests.unit.keyexchange.mikey_exchanges import (
    ALICE,
    CARRIER,
    NOW,
    PSK,
    Clock,
    events,
    exchange,
    message,
)

Attrs = list[tuple[str, str | None]]
CM80 = "AES_CM_128_HMAC_SHA1_80"


def keys_of(negotiation: MikeyNegotiation) -> SrtpKeys:
    (event,) = events(negotiation)
    assert isinstance(event, KeysReady), event
    return event.keys


def failure_of(negotiation: MikeyNegotiation) -> str:
    (event,) = events(negotiation)
    assert isinstance(event, NegotiationFailed), event
    assert event.sip_status == 488
    return event.reason


def mirrored(keys: SrtpKeys) -> SrtpKeys:
    return attrs.evolve(keys, local_key=keys.remote_key, remote_key=keys.local_key)


def run(
    offerer: MikeyKeyExchange,
    answerer: MikeyKeyExchange,
    *,
    tls: bool = True,
    suites: Sequence[str] = (),
    offer_leg: LegInfo | None = ALICE,
    answer_leg: LegInfo | None = CARRIER,
) -> tuple[MikeyNegotiation, MikeyNegotiation]:
    offer = offerer.offer(suites=suites, secure_signalling=tls, leg=offer_leg)
    answer = answerer.answer(
        offer.local_sdp_attributes(), suites=suites, secure_signalling=tls, leg=answer_leg
    )
    assert answer is not None
    return offer, answer


@pytest.mark.parametrize("mode", ["null", "psk", "dh-hmac"])
@pytest.mark.parametrize("style", ["standard", "gstreamer"])
@pytest.mark.parametrize(
    "suite", ["AES_CM_128_HMAC_SHA1_80", "AES_256_CM_HMAC_SHA1_32", "AEAD_AES_128_GCM"]
)
def test_every_mode_keys_both_sides_with_per_direction_keys(
    mode: str, style: str, suite: str
) -> None:
    offer, answer = run(
        exchange(1, offer_modes=(mode,), style=style),
        exchange(2, style=style),
        suites=[suite],
    )
    answer_keys = keys_of(answer)
    if answer.local_sdp_attributes():
        offer.remote_sdp_attributes(answer.local_sdp_attributes())
    else:
        offer.remote_sdp_attributes([])
    offer_keys = keys_of(offer)
    assert offer_keys == mirrored(answer_keys)
    assert offer_keys.suite == suite
    assert len(offer_keys.local_key) == SUITES[suite].key_salt_length
    assert offer_keys.local_key != offer_keys.remote_key  # one crypto session per direction
    assert offer.mode == answer.mode == mode
    expected = {"null": "mikey-null (keys protected by TLS)", "psk": "mikey-psk"}
    assert answer.security_record()["mikey_mode"] == expected.get(mode, "mikey-dhhmac")


def test_the_null_container_needs_tls_both_ways() -> None:
    offer = exchange(1).offer(suites=[], secure_signalling=False, leg=ALICE)
    assert failure_of(offer) == TLS_REQUIRED_REASON
    assert offer.local_sdp_attributes() == []
    tls_offer = exchange(1).offer(suites=[], secure_signalling=True)
    answer = exchange(2).answer(
        tls_offer.local_sdp_attributes(), suites=[], secure_signalling=False
    )
    assert answer is not None and failure_of(answer) == TLS_REQUIRED_REASON
    assert answer.local_sdp_attributes() == [] and answer.keys is None


def test_null_offer_is_v0_and_has_no_answer_message() -> None:
    offer, answer = run(exchange(1), exchange(2))
    parsed = parse_message_untrusted(message(offer))
    assert parsed.header.data_type == DataType.PSK_INIT and not parsed.header.v
    assert parsed.header.cs == (SrtpCs(0, 0, 0), SrtpCs(0, 0, 0))
    kemac = parsed.first(Kemac)
    assert kemac is not None and (kemac.encr_alg, kemac.mac_alg) == (0, 0)
    assert answer.local_sdp_attributes() == []


@pytest.mark.parametrize("encryption", [1, 2])
def test_psk_mode_encrypts_the_kemac_and_verifies_the_answer(encryption: int) -> None:
    offer, answer = run(exchange(1, offer_modes=("psk",), kemac_encryption=encryption), exchange(2))
    parsed = parse_message_untrusted(message(offer))
    kemac = parsed.first(Kemac)
    assert parsed.header.v and kemac is not None
    assert (kemac.encr_alg, kemac.mac_alg) == (encryption, 1)
    answer_keys = keys_of(answer)
    assert answer_keys.local_key not in message(offer) and answer_keys.remote_key not in message(
        offer
    )
    response = parse_message_untrusted(message(answer))
    assert response.header.data_type == DataType.PSK_RESP
    assert response.header.csb_id == parsed.header.csb_id
    verification = response.first(Verification)
    assert verification is not None and verification.alg == 1
    # The V MAC: HMAC(auth_key, R_MSG without the MAC || T of the I_MSG).
    rand, stamp = parsed.first(Rand), parsed.first(Timestamp)
    assert rand is not None and stamp is not None
    _, auth_key, _ = kemac_keys(PSK, parsed.header.csb_id, rand.value)
    assert verification.mac == mac(1, auth_key, message(answer)[:-20] + stamp.value)
    offer.remote_sdp_attributes(answer.local_sdp_attributes())
    assert keys_of(offer) == mirrored(answer_keys)


def test_psk_mode_without_verification_needs_no_answer() -> None:
    offer, answer = run(exchange(1, offer_modes=("psk",), request_verification=False), exchange(2))
    assert not parse_message_untrusted(message(offer)).header.v
    assert answer.local_sdp_attributes() == []
    keys = keys_of(answer)
    offer.remote_sdp_attributes([])
    assert keys_of(offer) == mirrored(keys)


def test_a_wrong_psk_fails_the_mac_and_names_no_key() -> None:
    other = {("trunk", "carrier"): bytes(32)}
    for mode in ("psk", "dh-hmac"):
        _, answer = run(exchange(1, offer_modes=(mode,)), exchange(2, psks=other))
        reason = failure_of(answer)
        assert "MAC is wrong" in reason and PSK.hex() not in reason
        assert answer.local_sdp_attributes() == []


def test_a_tampered_verification_fails_the_offerer() -> None:
    offer, answer = run(exchange(1, offer_modes=("psk",)), exchange(2))
    data = bytearray(message(answer))
    data[-1] ^= 1
    with pytest.raises(MikeyError, match="verification MAC is wrong"):
        offer.remote_sdp_attributes([("key-mgmt", keymgmt_value(bytes(data)))])
    assert "verification MAC is wrong" in failure_of(offer)
    assert offer.keys is None and offer.local_sdp_attributes() == []


def test_a_missing_verification_fails_the_offerer() -> None:
    offer, _ = run(exchange(1, offer_modes=("psk",)), exchange(2))
    with pytest.raises(MikeyError, match="asked for verification"):
        offer.remote_sdp_attributes([])


def test_replays_and_stale_timestamps_are_refused() -> None:
    cache = ReplayCache(max_skew=60, max_entries=8)
    offer = exchange(1, offer_modes=("psk",)).offer(suites=[], secure_signalling=False, leg=ALICE)
    attributes = offer.local_sdp_attributes()
    answerer = exchange(2, replay=cache)
    first = answerer.answer(attributes, suites=[], secure_signalling=False, leg=CARRIER)
    assert first is not None and isinstance(first.next_event(), KeysReady)
    again = answerer.answer(attributes, suites=[], secure_signalling=False, leg=CARRIER)
    assert again is not None and "replay" in failure_of(again)
    late = exchange(3, clock=Clock(NOW + 121))  # the default skew is 120 s
    stale = late.answer(attributes, suites=[], secure_signalling=False, leg=CARRIER)
    assert stale is not None
    assert failure_of(stale) == (
        "MIKEY message refused: its timestamp is -121 s off our clock (more than 120 s)"
    )
    assert stale.local_sdp_attributes() == [] and stale.keys is None


@pytest.mark.parametrize("mode", ["psk", "dh-hmac"])
def test_our_own_offer_reflected_back_to_us_is_refused(mode: str) -> None:
    # The pre-shared key is the same both ways: our I_MSG to alice, sent back to us in an offer
    # from alice's leg, has a right MAC and a fresh T. Taking it would "authenticate" a peer
    # that holds no key. It is refused as a replay (RFC 3830 §5.4).
    gateway = exchange(1, offer_modes=(mode,))
    ours = gateway.offer(suites=[], secure_signalling=False, leg=ALICE)
    reflected = gateway.answer(
        ours.local_sdp_attributes(), suites=[], secure_signalling=False, leg=ALICE
    )
    assert reflected is not None
    assert failure_of(reflected) == ("MIKEY message refused: it is a replay of an earlier message")
    assert reflected.keys is None and reflected.local_sdp_attributes() == []
    # The real peer, with the same key, still takes it; and our offer still completes.
    peer = exchange(2)
    answer = peer.answer(
        ours.local_sdp_attributes(), suites=[], secure_signalling=False, leg=CARRIER
    )
    assert answer is not None and isinstance(answer.next_event(), KeysReady)
    ours.remote_sdp_attributes(answer.local_sdp_attributes())
    assert isinstance(ours.next_event(), KeysReady)


def test_the_replay_cache_is_bounded_and_never_lets_an_evicted_message_back() -> None:
    cache = ReplayCache(max_skew=100, max_entries=3)
    for i in range(3):
        assert cache.check(b"m%d" % i, NOW + i, now=NOW) is None
    assert cache.check(b"m3", NOW + 3, now=NOW) is None  # evicts m0 (T = NOW)
    assert len(cache) == 3
    assert cache.check(b"m0", NOW, now=NOW) == "it is a replay of an earlier message"
    assert cache.check(b"older", NOW - 1, now=NOW) == "it is a replay of an earlier message"
    assert cache.check(b"m1", NOW + 1, now=NOW) is not None
    assert cache.check(b"m9", NOW + 200, now=NOW + 200) is None  # old ones expired
    assert len(cache) == 1 and cache.refused == 3


def test_dh_hmac_both_roles_and_the_response_carries_dhr_then_dhi() -> None:
    offer, answer = run(exchange(1, offer_modes=("dh-hmac",), dh_group=2), exchange(2, dh_group=2))
    keys = keys_of(answer)
    request, response = (
        parse_message_untrusted(message(offer)),
        parse_message_untrusted(message(answer)),
    )
    assert request.header.data_type == DataType.DHHMAC_INIT
    assert response.header.data_type == DataType.DHHMAC_RESP
    values = response.all(DhValue)
    offered = request.first(DhValue)
    assert offered is not None and [v.group for v in values] == [2, 2]
    assert values[1].value == offered.value and values[0].value != offered.value
    offer.remote_sdp_attributes(answer.local_sdp_attributes())
    assert keys_of(offer) == mirrored(keys)
    assert offer.security_record() == {"mikey_mode": "mikey-dhhmac", "mikey_dh_group": "OAKLEY2"}


def test_dh_hmac_refuses_another_group_and_a_response_with_a_changed_dhi() -> None:
    _, answer = run(exchange(1, offer_modes=("dh-hmac",), dh_group=1), exchange(2))
    assert "OAKLEY1 is not the one configured (OAKLEY5)" in failure_of(answer)
    offer, answer = run(exchange(1, offer_modes=("dh-hmac",)), exchange(2))
    data = bytearray(message(answer))
    data[-30] ^= 1  # inside DHi: the MAC no longer matches
    with pytest.raises(MikeyError, match="MAC is wrong"):
        offer.remote_sdp_attributes([("key-mgmt", keymgmt_value(bytes(data)))])


def test_a_dh_hmac_offer_needs_a_response() -> None:
    offer, _ = run(exchange(1, offer_modes=("dh-hmac",)), exchange(2))
    with pytest.raises(MikeyError, match="needs a response"):
        offer.remote_sdp_attributes([])


@pytest.mark.parametrize(
    ("data_type", "words"),
    [
        (DataType.PK_INIT, "public-key mode (PK"),
        (DataType.DH_INIT, "signed Diffie-Hellman mode (DH-sign"),
        (DataType.RSA_R_INIT, "RSA-R mode (RFC 4738)"),
        (DataType.PSK_RESP, "not an initiator's message"),
    ],
)
def test_unsupported_modes_are_refused_with_a_clear_488(data_type: int, words: str) -> None:
    data = encode_message(
        Header(data_type, 1, (SrtpCs(0),)), [Timestamp.ntp_utc(NOW), Rand(bytes(16))]
    )
    answer = exchange(2).answer(
        [("key-mgmt", keymgmt_value(data))], suites=[], secure_signalling=True
    )
    assert answer is not None and words in failure_of(answer)


def test_modes_not_accepted_are_refused() -> None:
    _, answer = run(exchange(1, offer_modes=("psk",)), exchange(2, accept_modes=("null",)))
    assert failure_of(answer) == "MIKEY mikey-psk is not accepted here"


def test_psk_modes_need_a_key_for_the_leg() -> None:
    offer = exchange(1, offer_modes=("psk", "dh-hmac")).offer(suites=[], secure_signalling=True)
    reason = failure_of(offer)
    assert "psk: no pre-shared key for this leg (the core did not say whose it is)" in reason
    unknown = attrs.evolve(ALICE, name="mallory")
    offer = exchange(1, offer_modes=("psk",)).offer(suites=[], secure_signalling=True, leg=unknown)
    assert failure_of(offer) == "psk: no pre-shared key for account mallory"
    # Offer modes in order: the first the leg can take.
    offer = exchange(1, offer_modes=("psk", "null")).offer(
        suites=[], secure_signalling=True, leg=unknown
    )
    assert offer.mode == "null"
    _, answer = run(exchange(1, offer_modes=("psk",)), exchange(2), answer_leg=None)
    assert "no pre-shared key for this leg" in failure_of(answer)


def gstreamer_offer(key_salt: bytes, *, cs: int = 1, param3: int = 10) -> Attrs:
    """An I_MSG as GStreamer's new_from_caps (+ add_cs_srtp) writes it."""
    policy = SecurityPolicy(
        0,
        0,
        (
            (0, b"\x01"),
            (1, b"\x10"),
            (2, b"\x01"),
            (3, bytes([param3])),
            (7, b"\x01"),
            (8, b"\x01"),
            (10, b"\x01"),
        ),
    )
    data = encode_message(
        Header(DataType.PSK_INIT, 0x55667788, tuple(SrtpCs(0, 0x1234, 0) for _ in range(cs))),
        [
            Timestamp.ntp_utc(NOW),
            Rand(bytes(range(16))),
            policy,
            Kemac(0, encode_key_data([KeyData(2, key_salt)]), 0),
        ],
    )
    return [("key-mgmt", keymgmt_value(data))]


@pytest.mark.parametrize(
    ("param3", "suite"), [(10, "AES_CM_128_HMAC_SHA1_80"), (4, "AES_CM_128_HMAC_SHA1_32")]
)
@pytest.mark.parametrize("cs", [0, 1])
def test_a_gstreamer_offer_keys_both_directions_with_its_one_tek(
    param3: int, suite: str, cs: int
) -> None:
    key_salt = bytes(range(30))
    answer = exchange(2).answer(
        gstreamer_offer(key_salt, cs=cs, param3=param3), suites=[], secure_signalling=True
    )
    assert answer is not None
    assert keys_of(answer) == SrtpKeys(suite, local_key=key_salt, remote_key=key_salt)


def test_a_tek_of_the_wrong_length_and_too_many_crypto_sessions_are_refused() -> None:
    answer = exchange(2).answer(gstreamer_offer(bytes(29)), suites=[], secure_signalling=True)
    assert answer is not None and "TEK of 29 octets is not AES_CM_128_HMAC_SHA1_80" in failure_of(
        answer
    )
    data = encode_message(
        Header(DataType.PSK_INIT, 1, (SrtpCs(0),) * 3),
        [
            Timestamp.ntp_utc(NOW),
            Rand(bytes(16)),
            Kemac(0, encode_key_data([KeyData(0, bytes(32))]), 0),
        ],
    )
    answer = exchange(2).answer(
        [("key-mgmt", keymgmt_value(data))], suites=[], secure_signalling=True
    )
    assert answer is not None and "3 crypto sessions" in failure_of(answer)


def test_key_validity_and_a_short_tgk_are_refused() -> None:
    for keys, words in (
        ([KeyData(2, bytes(30), kv_type=1, kv_data=(b"\x01",))], "SPI/MKI"),
        ([KeyData(0, bytes(8))], "shorter than 128 bits"),
    ):
        data = encode_message(
            Header(DataType.PSK_INIT, 1, (SrtpCs(0),)),
            [Timestamp.ntp_utc(NOW), Rand(bytes(16)), Kemac(0, encode_key_data(keys), 0)],
        )
        answer = exchange(2).answer(
            [("key-mgmt", keymgmt_value(data))], suites=[], secure_signalling=True
        )
        assert answer is not None and words in failure_of(answer)


def test_a_policy_outside_the_legs_suites_fails_and_the_offer_takes_the_first_suite() -> None:
    offer, answer = run(exchange(1), exchange(2), suites=["AEAD_AES_256_GCM", CM80])
    assert offer.suite == "AEAD_AES_256_GCM" and keys_of(answer).suite == "AEAD_AES_256_GCM"
    offer = exchange(1).offer(suites=["AEAD_AES_256_GCM"], secure_signalling=True)
    answer = exchange(2).answer(offer.local_sdp_attributes(), suites=[CM80], secure_signalling=True)
    assert answer is not None
    assert "suite AEAD_AES_256_GCM is not allowed on this leg" in failure_of(answer)
    # Policies the offer does not list for a crypto session: §6.10's defaults.
    assert policy_for_suite(CM80).policy_no == 0


def test_an_error_message_in_the_answer_fails_the_offerer() -> None:
    offer = exchange(1).offer(suites=[], secure_signalling=True)
    csb = parse_message_untrusted(message(offer)).header.csb_id
    error = encode_message(Header(DataType.ERROR, csb), [Timestamp.ntp_utc(NOW), ErrorPayload(9)])
    with pytest.raises(MikeyError, match=r"error: 9 \(invalid SP\)"):
        offer.remote_sdp_attributes([("key-mgmt", keymgmt_value(error))])
    other = encode_message(Header(DataType.PSK_RESP, csb + 1), [Timestamp.ntp_utc(NOW)])
    offer = exchange(1).offer(suites=[], secure_signalling=True)
    with pytest.raises(MikeyError, match="another CSB ID"):
        offer.remote_sdp_attributes([("key-mgmt", keymgmt_value(other))])


def test_reoffers_keep_the_keys_in_force_and_rekey_changes_them() -> None:
    offerer, answerer = exchange(1, offer_modes=("psk",)), exchange(2)
    offer, answer = run(offerer, answerer)
    keys = keys_of(answer)
    offer.remote_sdp_attributes(answer.local_sdp_attributes())
    assert keys_of(offer) == mirrored(keys)
    # Hold/resume: the same I_MSG, the same R_MSG, no new keys (the SRTP contexts go on).
    again = offerer.offer(suites=[], secure_signalling=True, leg=ALICE, previous=offer)
    assert again.local_sdp_attributes() == offer.local_sdp_attributes()
    reanswer = answerer.answer(
        again.local_sdp_attributes(),
        suites=[],
        secure_signalling=True,
        leg=CARRIER,
        previous=answer,
    )
    assert reanswer is not None and events(reanswer) == [] and reanswer.keys == keys
    assert reanswer.local_sdp_attributes() == answer.local_sdp_attributes()
    again.remote_sdp_attributes(reanswer.local_sdp_attributes())
    assert events(again) == [] and again.keys == mirrored(keys)
    # A re-key: a fresh message, fresh keys on both sides.
    fresh = offerer.offer(suites=[], secure_signalling=True, leg=ALICE, previous=again, rekey=True)
    assert fresh.local_sdp_attributes() != offer.local_sdp_attributes()
    rekeyed = answerer.answer(
        fresh.local_sdp_attributes(),
        suites=[],
        secure_signalling=True,
        leg=CARRIER,
        previous=reanswer,
    )
    assert rekeyed is not None
    new_keys = keys_of(rekeyed)
    assert new_keys.local_key != keys.local_key and new_keys.remote_key != keys.remote_key


def test_a_new_message_with_the_same_tek_keeps_the_context() -> None:
    answerer = exchange(2)
    first = answerer.answer(gstreamer_offer(bytes(range(30))), suites=[], secure_signalling=True)
    assert first is not None and keys_of(first)
    second = answerer.answer(
        gstreamer_offer(bytes(range(30)), cs=0), suites=[], secure_signalling=True, previous=first
    )
    assert second is not None and events(second) == [] and second.keys == first.keys


def test_the_answer_attribute_and_a_bad_base64_or_unrelated_key_mgmt() -> None:
    assert mikey_message_of([("key-mgmt", "kerberos abcd")]) is None
    assert (
        exchange(2).answer([("crypto", "1 X inline:abc")], suites=[], secure_signalling=True)
        is None
    )
    answer = exchange(2).answer([("key-mgmt", "mikey !!!")], suites=[], secure_signalling=True)
    assert answer is not None and failure_of(answer) == "a=key-mgmt:mikey data is not valid base64"
    with pytest.raises(MikeyError, match="longer than 8 characters"):
        mikey_message_of([("key-mgmt", "mikey " + "A" * 12)], max_length=8)
    # RFC 4567 §4: the media-level one comes first in the pairs the core passes, and wins.
    media = base64.b64encode(b"media").decode()
    assert (
        mikey_message_of([("key-mgmt", "mikey " + media), ("key-mgmt", "mikey AAAA")]) == b"media"
    )


def test_no_key_in_any_repr_or_reason() -> None:
    offer, answer = run(exchange(1, offer_modes=("psk",)), exchange(2))
    keys = keys_of(answer)
    texts = [repr(offer), repr(answer), repr(keys), repr(exchange(1)), repr(offer._context)]
    for text in texts:
        for secret in (keys.local_key, keys.remote_key, PSK):
            assert secret.hex() not in text and repr(secret) not in text
    assert "redacted" in repr(keys)


def test_the_answerer_cannot_take_an_answer() -> None:
    _, answer = run(exchange(1), exchange(2))
    with pytest.raises(Exception, match="takes its offer in answer"):
        answer.remote_sdp_attributes([])


def test_a_psk_offer_with_keys_in_clear_needs_tls_even_with_a_mac() -> None:
    csb, rand, stamp = 7, bytes(range(16)), Timestamp.ntp_utc(NOW)
    plain = encode_key_data([KeyData(0, bytes(range(32)))])
    header = Header(DataType.PSK_INIT, csb, (SrtpCs(0), SrtpCs(0)))
    _, auth_key, _ = kemac_keys(PSK, csb, rand)
    unsigned = encode_message(header, [stamp, Rand(rand), Kemac(0, plain, 1, bytes(20))])
    signed = unsigned[:-20] + mac(1, auth_key, unsigned[:-20])
    attributes: Attrs = [("key-mgmt", keymgmt_value(signed))]
    answer = exchange(2).answer(attributes, suites=[], secure_signalling=False, leg=CARRIER)
    assert answer is not None and failure_of(answer) == TLS_REQUIRED_REASON
    over_tls = exchange(3).answer(attributes, suites=[], secure_signalling=True, leg=CARRIER)
    assert over_tls is not None and keys_of(over_tls).suite == CM80
    assert over_tls.mode == "psk"


@pytest.mark.parametrize("mode", ["null", "psk", "dh-hmac"])
def test_mangled_offers_and_answers_end_in_an_event_never_an_exception(mode: str) -> None:
    """Bounded untrusted parsing: any byte flipped, inserted or cut gives KeysReady or a
    NegotiationFailed (a MikeyError from remote_sdp_attributes), nothing else."""
    rng = random.Random(f"mikey-{mode}")
    offerer = exchange(1, offer_modes=(mode,))
    offer = offerer.offer(suites=[], secure_signalling=True, leg=ALICE)
    original = message(offer)
    answer = exchange(2).answer(
        offer.local_sdp_attributes(), suites=[], secure_signalling=True, leg=CARRIER
    )
    assert answer is not None
    reply = message(answer) if answer.local_sdp_attributes() else b""
    for round_ in range(300):
        data = bytearray(original if round_ % 2 else (reply or original))
        position = rng.randrange(len(data))
        action = rng.randrange(3)
        if action == 0:
            data[position] ^= 1 << rng.randrange(8)
        elif action == 1:
            del data[position:]
        else:
            data[position:position] = bytes([rng.randrange(256)])
        attributes: Attrs = [("key-mgmt", keymgmt_value(bytes(data)))]
        if round_ % 2:
            replay = ReplayCache(max_skew=120, max_entries=1000)
            peer = exchange(3, replay=replay)
            result = peer.answer(attributes, suites=[], secure_signalling=True, leg=CARRIER)
            assert result is not None
            kinds = {type(event) for event in events(result)}
            assert kinds <= {KeysReady, NegotiationFailed} and len(kinds) == 1
        else:
            fresh = offerer._new("offerer", None)
            fresh.repeat_offer(offer)  # the same I_MSG and context: the answer is checked
            try:
                fresh.remote_sdp_attributes(attributes)
            except MikeyError:
                assert isinstance(fresh.failure, NegotiationFailed)


def rtp_packet(sequence: int, ssrc: int) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, sequence, 160 * sequence, ssrc) + bytes(160)


@pytest.mark.parametrize("suite", list(SUPPORTED_SUITES))
@pytest.mark.parametrize("mode", ["psk", "dh-hmac"])
def test_the_agreed_keys_protect_srtp_both_ways_for_every_suite(suite: str, mode: str) -> None:
    offer, answer = run(exchange(1, offer_modes=(mode,)), exchange(2), suites=[suite])
    offer.remote_sdp_attributes(answer.local_sdp_attributes())
    a_keys, b_keys = keys_of(offer), keys_of(answer)
    with SrtpSession(a_keys) as a_srtp, SrtpSession(b_keys) as b_srtp:
        for sequence in (1, 2):
            protected = a_srtp.protect_rtp(rtp_packet(sequence, 0xA11CE))
            assert protected is not None and protected != rtp_packet(sequence, 0xA11CE)
            assert b_srtp.unprotect_rtp(protected) == rtp_packet(sequence, 0xA11CE)
            back = b_srtp.protect_rtp(rtp_packet(sequence, 0xB0B))
            assert back is not None
            assert a_srtp.unprotect_rtp(back) == rtp_packet(sequence, 0xB0B)


def test_each_account_and_trunk_has_its_own_replay_cache() -> None:
    """A peer holding one pre-shared key that fills its replay cache (and so raises its floor
    of refused timestamps) refuses its own messages only, never another account's."""
    answerer = exchange(2, replay=ReplayCache(max_skew=60, max_entries=1))
    offers = [
        exchange(10 + n, offer_modes=("psk",)).offer(suites=[], secure_signalling=False, leg=ALICE)
        for n in range(3)
    ]
    first = answerer.answer(
        offers[0].local_sdp_attributes(), suites=[], secure_signalling=False, leg=CARRIER
    )
    assert first is not None and isinstance(first.next_event(), KeysReady)
    # The carrier's cache is full: its next message at the same T is refused (the floor)...
    crowded = answerer.answer(
        offers[1].local_sdp_attributes(), suites=[], secure_signalling=False, leg=CARRIER
    )
    assert crowded is not None and "replay" in failure_of(crowded)
    # ...and alice's, checked in her own cache, is not.
    other = answerer.answer(
        offers[2].local_sdp_attributes(), suites=[], secure_signalling=False, leg=ALICE
    )
    assert other is not None and isinstance(other.next_event(), KeysReady)


def test_our_own_offers_do_not_make_a_peer_with_a_slower_clock_look_like_a_replay() -> None:
    # The carrier's clock is 30 s behind ours (within the 120 s skew). Our own I_MSGs, kept
    # against reflection, carry OUR clock's T: were they in the bounded cache with the peer's,
    # evicting one would raise the floor to our time, and every later offer of the carrier
    # (its T 30 s older) would be refused as a replay although none was ever seen.
    ours_clock, theirs_clock = Clock(NOW), Clock(NOW - 30)
    cache = ReplayCache(max_skew=120, max_entries=2)
    gateway = exchange(1, offer_modes=("psk",), clock=ours_clock, replay=cache)
    carrier = exchange(3, offer_modes=("psk",), clock=theirs_clock)
    for n in range(4):
        ours_clock.now += 1  # a call each way every second
        theirs_clock.now += 1
        ours = gateway.offer(suites=[], secure_signalling=False, leg=CARRIER)
        assert ours.failure is None
        theirs = carrier.offer(suites=[], secure_signalling=False, leg=CARRIER)
        answer = gateway.answer(
            theirs.local_sdp_attributes(), suites=[], secure_signalling=False, leg=CARRIER
        )
        assert answer is not None and answer.failure is None, (n, failure_of(answer))
    # Our own offers are still refused when they come back.
    reflected = gateway.answer(
        ours.local_sdp_attributes(), suites=[], secure_signalling=False, leg=CARRIER
    )
    assert reflected is not None and "replay" in failure_of(reflected)


def test_checking_an_answer_binds_nothing_and_says_why_it_would_be_refused() -> None:
    """``check_remote_sdp_attributes`` (session 48): a forked phone's bad answer is refused
    with the reason ``remote_sdp_attributes`` gives, and the negotiation stays as it was (no
    event, not failed, no keys); a good answer checked is then taken with its keys."""
    offerer = exchange(1, offer_modes=("dh-hmac",))
    offer = offerer.offer(suites=[], secure_signalling=False, leg=ALICE)
    phones = [
        exchange(seed).answer(
            offer.local_sdp_attributes(), suites=[], secure_signalling=False, leg=CARRIER
        )
        for seed in (2, 3)
    ]
    assert phones[0] is not None and phones[1] is not None
    data = bytearray(message(phones[1]))
    data[-30] ^= 1
    bad: Attrs = [("key-mgmt", keymgmt_value(bytes(data)))]
    reason = offer.check_remote_sdp_attributes(bad)
    assert reason is not None and "MAC is wrong" in reason
    assert offer.check_remote_sdp_attributes([]) == (
        "the answer's a=key-mgmt is missing: a DH-HMAC exchange needs a response"
    )
    assert events(offer) == [] and offer.state == "offered" and offer.keys is None
    good = phones[0].local_sdp_attributes()
    assert offer.check_remote_sdp_attributes(good) is None
    assert events(offer) == [] and offer.keys is None  # checked, not taken
    offer.remote_sdp_attributes(good)  # not refused as a replay of the checked message
    assert keys_of(offer) == mirrored(keys_of(phones[0]))


def test_the_answers_a_negotiation_remembers_as_checked_are_bounded() -> None:
    """A stream of answers from ever new forks does not grow what a negotiation keeps: the
    oldest checked answer is forgotten past ``MAX_VERIFIED_ANSWERS`` (taken again, its T is
    then a replay, RFC 3830 §5.4), the newest are still taken."""
    offerer = exchange(1, offer_modes=("dh-hmac",))
    offer = offerer.offer(suites=[], secure_signalling=False, leg=ALICE)
    answers = []
    for seed in range(2, 3 + MAX_VERIFIED_ANSWERS):
        phone = exchange(seed).answer(
            offer.local_sdp_attributes(), suites=[], secure_signalling=False, leg=CARRIER
        )
        assert phone is not None
        answers.append(phone.local_sdp_attributes())
        assert offer.check_remote_sdp_attributes(answers[-1]) is None
    assert len(offer._verified_answers) == MAX_VERIFIED_ANSWERS
    reason = offer.check_remote_sdp_attributes(answers[0])
    assert reason is not None and "replay" in reason
    offer.remote_sdp_attributes(answers[-1])
    assert keys_of(offer).suite == CM80


def test_only_the_offerer_checks_an_answer() -> None:
    _, answer = run(exchange(1), exchange(2))
    with pytest.raises(LocalMikeyError):
        answer.check_remote_sdp_attributes([])
