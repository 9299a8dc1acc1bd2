"""The ``dtls`` engine when a proxy downstream forks our offer (RFC 3261 §16.7), sans-IO with
float time (docs/media_security.md, "Forked callees"; session 52).

Phone 1's 183 answers early, its handshake keys the line; phone 2 answers with its 200 and its
own certificate (RFC 5763 §5), and :meth:`DtlsNegotiation.for_another_phone` begins its
association afresh. Phone 2 (a=setup:active, the DTLS client) sends its ClientHello as it
sends its 200: straight to our port, it arrives before the 200, which goes through the proxy.
The negotiation in force keeps it (and a handshake phone 2 began while phone 1's ran) for the
fresh one, which takes it at the 200: no wait for phone 2's resend (1 s, RFC 6347 §4.2.4.1),
no fatal alert to phone 2. Only a certificate the 200's a=fingerprint names keys the line."""

from __future__ import annotations

import pytest

from gateway.core.interfaces import KeysReady
from gateway.plugins.keyexchange.dtls_certificates import DtlsIdentity, generate_identity
from gateway.plugins.keyexchange.dtls_srtp import (
    MAX_KEPT_FOR_ANOTHER_PHONE,
    DtlsNegotiation,
)
from tests.unit.keyexchange.dtls_source_pairs import (
    LONG,
    MONTH,
    NOW,
    PEER,
    STRANGER,
    US,
    events,
    exchange,
    run,
    send,
    send_verified,
)

PHONE_2 = generate_identity(now=NOW, max_age=MONTH)
"""Phone 2's own certificate (phone 1's is ``PEER``)."""

PHONE_1_ADDRESS = ("127.0.0.1", 40000)
PHONE_2_ADDRESS = ("127.0.0.1", 40002)
STRANGER_ADDRESS = ("127.0.0.1", 52000)

_ALERT = 21  # RFC 5246 §6.2.1: ContentType alert
_HELLO_VERIFY_REQUEST = 3  # RFC 6347 §4.3.2
_HANDSHAKE_TYPE = 13  # after the record header, RFC 6347 §4.1


def phone(ours: DtlsNegotiation, identity: object) -> DtlsNegotiation:
    """A phone our offer reached: it answers a=setup:active (the DTLS client) with its own
    certificate."""
    answer = exchange(identity).answer(  # type: ignore[arg-type]
        ours.local_sdp_attributes(), suites=[], secure_signalling=True
    )
    assert answer is not None and answer.dtls_role == "client"
    return answer


def early_answer(
    phone_2_identity: DtlsIdentity = PHONE_2,
) -> tuple[DtlsNegotiation, DtlsNegotiation, DtlsNegotiation]:
    """Our first offer, phone 1's 183 taken (we are the DTLS server), and phone 2 ringing."""
    ours = exchange(US).offer(suites=[], secure_signalling=True)
    phone_1, phone_2 = phone(ours, PEER), phone(ours, phone_2_identity)
    ours.remote_sdp_attributes(phone_1.local_sdp_attributes())
    ours.note_sdp_address(PHONE_1_ADDRESS)
    assert ours.keeps_other_phones
    return ours, phone_1, phone_2


def phone_2s_200(ours: DtlsNegotiation, phone_2: DtlsNegotiation) -> DtlsNegotiation:
    """Phone 2's 200 taken: the fresh negotiation the core drives from now on."""
    fresh = ours.for_another_phone()
    fresh.remote_sdp_attributes(phone_2.local_sdp_attributes())
    assert not fresh.keeps_other_phones  # a final answer: nobody else's can come
    return fresh


def to_phone(ours: DtlsNegotiation, address: tuple[str, int], now: float) -> list[bytes]:
    return [d for d, a in ours.addressed_packets_to_send(now=now) if a == address]


def assert_keyed_together(
    fresh: DtlsNegotiation, phone_2: DtlsNegotiation, identity: DtlsIdentity = PHONE_2
) -> None:
    (ready,) = events(fresh)
    assert isinstance(ready, KeysReady)
    (phone_ready,) = events(phone_2)
    assert isinstance(phone_ready, KeysReady)
    assert (ready.keys.local_key, ready.keys.remote_key) == (
        phone_ready.keys.remote_key,
        phone_ready.keys.local_key,
    )
    assert fresh.peer_certificate_sha256 == identity.sha256_hex()
    assert fresh.peer_source == PHONE_2_ADDRESS


@pytest.mark.parametrize("told_its_address", [False, True], ids=["asked-a-cookie", "sdp-address"])
def test_phone_2s_client_hello_before_its_200_keys_it_without_a_resend(
    told_its_address: bool,
) -> None:
    ours, phone_1, phone_2 = early_answer()
    run(ours, {PHONE_1_ADDRESS: phone_1}, usual=(PHONE_1_ADDRESS,), now=0.0)
    assert isinstance(events(ours)[0], KeysReady)
    # Its ClientHello comes straight to our port, ahead of its 200: ignored by phone 1's
    # negotiation (nothing sent back), kept.
    send(phone_2, ours, PHONE_2_ADDRESS, 0.1)
    assert ours.addressed_packets_to_send(now=0.1) == [] and ours.packets_to_send(now=0.1) == []
    assert ours.statistics().ignored == 1 and events(ours) == []

    fresh = phone_2s_200(ours, phone_2)
    if told_its_address:
        # The handshake task told the new SDP address before the first clock: not asked for
        # a cookie. Else it is, and its ClientHello that returns it comes from the SDP
        # address (the cookie's path all the same).
        fresh.note_sdp_address(PHONE_2_ADDRESS)
    assert fresh.get_timer() == 0.0
    run(fresh, {PHONE_2_ADDRESS: phone_2}, usual=(PHONE_2_ADDRESS,), now=0.15)
    assert_keyed_together(fresh, phone_2)
    # At the 200, well within phone 2's first resend (1 s, RFC 6347 §4.2.4.1): none needed.
    assert phone_2.statistics().retransmissions == 0
    assert fresh.get_timer() is None


@pytest.mark.parametrize("certificate", ["short", "long"])
@pytest.mark.parametrize("phone_1_keyed_first", [True, False], ids=["then-keyed", "still-running"])
def test_phone_2s_handshake_begun_while_phone_1s_ran_gets_no_alert_and_keys_it(
    phone_1_keyed_first: bool, certificate: str
) -> None:
    # Phone 2's ClientHello reaches our port while phone 1's handshake runs: a handshake of its
    # own (its source's attempt), whose peer parameters are phone 1's. Its Certificate does not
    # match phone 1's a=fingerprint: held, no fatal alert (before session 52, the alert ended
    # phone 2's handshake and its call). Its 200 hands it to the fresh negotiation, which
    # checks it against phone 2's a=fingerprint and completes it. A long certificate comes in
    # three datagrams (RFC 6347 §4.2.3): read once whole and held the same (before session 55
    # it was not read, and OpenSSL's check sent phone 2 the fatal alert).
    identity = PHONE_2 if certificate == "short" else LONG
    ours, phone_1, phone_2 = early_answer(identity)
    send(phone_1, ours, PHONE_1_ADDRESS, 0.0)  # phone 1's ClientHello; our flight waits
    to_phone_1 = to_phone(ours, PHONE_1_ADDRESS, 0.0)
    assert to_phone_1
    assert send_verified(phone_2, ours, PHONE_2_ADDRESS, 0.0) == []
    for datagram in to_phone(ours, PHONE_2_ADDRESS, 0.0):
        phone_2.receive_packet(datagram, now=0.0)  # our server flight
    send(phone_2, ours, PHONE_2_ADDRESS, 0.05)  # its Certificate, Finished ...: held
    assert to_phone(ours, PHONE_2_ADDRESS, 0.05) == []  # no alert
    assert events(ours) == [] and ours.state == "handshaking"
    if phone_1_keyed_first:
        for datagram in to_phone_1:
            phone_1.receive_packet(datagram, now=0.1)
        run(ours, {PHONE_1_ADDRESS: phone_1}, usual=(PHONE_1_ADDRESS,), now=0.1)
        assert isinstance(events(ours)[0], KeysReady) and ours.peer_source == PHONE_1_ADDRESS
        assert [d for d, a in ours.addressed_packets_to_send(now=0.1) if d[0] == _ALERT] == []

    fresh = phone_2s_200(ours, phone_2)
    fresh.note_sdp_address(PHONE_2_ADDRESS)
    run(fresh, {PHONE_2_ADDRESS: phone_2}, usual=(PHONE_2_ADDRESS,), now=0.2)
    assert_keyed_together(fresh, phone_2, identity)
    assert phone_2.failure is None and phone_2.statistics().retransmissions == 0


@pytest.mark.parametrize("phone_2_first", [False, True], ids=["phone-1-first", "phone-2-first"])
def test_client_hellos_of_both_phones_before_any_answer_key_each_at_its_answer(
    phone_2_first: bool,
) -> None:
    # Both phones answer a=setup:active and send their ClientHello as they send their 183 and
    # 200, straight to our port: both arrive before either answer has come through the proxy
    # (RFC 5763 §5: the offerer may get the handshake before the answer). Kept with their
    # sources, each goes to its own phone's handshake once an answer says our role: phone
    # 1's keys the line at its 183, phone 2's is kept for another phone's answer and keys it
    # at phone 2's 200. Before session 55 they were kept without their sources and all fed
    # to phone 1's handshake at its 183: phone 2's was lost, and phone 2 was keyed only at
    # its first resend (1 s, RFC 6347 §4.2.4.1), a second of its audio.
    ours = exchange(US).offer(suites=[], secure_signalling=True)
    phone_1, phone_2 = phone(ours, PEER), phone(ours, PHONE_2)
    firsts = [(phone_1, PHONE_1_ADDRESS), (phone_2, PHONE_2_ADDRESS)]
    for sender, address in reversed(firsts) if phone_2_first else firsts:
        send(sender, ours, address, 0.0)
    assert ours.packets_to_send(now=0.0) == [] and ours.addressed_packets_to_send(now=0.0) == []

    ours.remote_sdp_attributes(phone_1.local_sdp_attributes())  # phone 1's 183
    ours.note_sdp_address(PHONE_1_ADDRESS)
    assert ours.keeps_other_phones
    # Phone 1 (the 183's SDP address) gets its handshake's next flight; phone 2, as any
    # source other than the SDP address while no source proved itself, our cookie first
    # (RFC 6347 §4.2.1), then a handshake of its own, whose certificate (not the one the 183
    # names) is held for another phone's answer: no alert.
    to_phone_2: list[bytes] = []
    record = _Recorder(phone_2, to_phone_2)
    run(
        ours,
        {PHONE_1_ADDRESS: phone_1, PHONE_2_ADDRESS: record},  # type: ignore[dict-item]
        usual=(PHONE_1_ADDRESS,),
        now=0.1,
    )
    (ready,) = events(ours)
    assert isinstance(ready, KeysReady) and ours.peer_source == PHONE_1_ADDRESS
    assert ours.peer_certificate_sha256 == PEER.sha256_hex()
    assert phone_1.statistics().retransmissions == 0
    assert to_phone_2 and [d for d in to_phone_2 if d[0] == _ALERT] == []

    fresh = phone_2s_200(ours, phone_2)
    fresh.note_sdp_address(PHONE_2_ADDRESS)
    run(fresh, {PHONE_2_ADDRESS: phone_2}, usual=(PHONE_2_ADDRESS,), now=0.2)
    assert_keyed_together(fresh, phone_2)
    assert phone_2.failure is None and phone_2.statistics().retransmissions == 0


class _Recorder:
    """A phone whose datagrams from us are also written down (``got``)."""

    def __init__(self, phone: DtlsNegotiation, got: list[bytes]) -> None:
        self.phone, self.got = phone, got

    def packets_to_send(self, *, now: float) -> list[bytes]:
        return self.phone.packets_to_send(now=now)

    def receive_packet(self, packet: bytes, *, now: float) -> None:
        self.got.append(packet)
        self.phone.receive_packet(packet, now=now)


def test_a_stranger_whose_certificate_matches_neither_phone_never_keys_the_line() -> None:
    # A stranger read our offer: its handshake begun while phone 1's ran is held like phone
    # 2's would be, and its ClientHello sent after phone 1 keyed is kept; neither keys
    # anything. At phone 2's 200 the held one is dropped (it matches phone 2's a=fingerprint
    # no more than phone 1's), the kept one fails phone 2's check; phone 2 keys the line.
    ours, phone_1, phone_2 = early_answer()
    send(phone_1, ours, PHONE_1_ADDRESS, 0.0)
    to_phone_1 = to_phone(ours, PHONE_1_ADDRESS, 0.0)
    stranger = phone(ours, STRANGER)
    send_verified(stranger, ours, STRANGER_ADDRESS, 0.0)
    for datagram in to_phone(ours, STRANGER_ADDRESS, 0.0):
        stranger.receive_packet(datagram, now=0.0)
    send(stranger, ours, STRANGER_ADDRESS, 0.05)  # its certificate: held
    for datagram in to_phone_1:
        phone_1.receive_packet(datagram, now=0.1)
    run(ours, {PHONE_1_ADDRESS: phone_1}, usual=(PHONE_1_ADDRESS,), now=0.1)
    (ready,) = events(ours)
    assert isinstance(ready, KeysReady) and ours.peer_source == PHONE_1_ADDRESS
    second_stranger = phone(ours, STRANGER)
    send(second_stranger, ours, ("127.0.0.1", 52002), 0.12)  # kept for another phone
    send(phone_2, ours, PHONE_2_ADDRESS, 0.15)

    fresh = phone_2s_200(ours, phone_2)
    others = {
        PHONE_2_ADDRESS: phone_2,
        STRANGER_ADDRESS: stranger,
        ("127.0.0.1", 52002): second_stranger,
    }
    run(fresh, others, usual=(PHONE_2_ADDRESS,), now=0.2)
    assert_keyed_together(fresh, phone_2)
    assert stranger.keys is None and second_stranger.keys is None
    assert fresh.statistics().handshakes_failed >= 1  # the held one, dropped at the 200
    # Their later datagrams key nothing either: the line is phone 2's.
    run(fresh, others, usual=(PHONE_2_ADDRESS,), now=1.5)
    assert events(fresh) == [] and fresh.peer_source == PHONE_2_ADDRESS


def test_what_is_kept_for_another_phone_is_bounded_and_ends_with_a_2xx() -> None:
    ours, phone_1, phone_2 = early_answer()
    run(ours, {PHONE_1_ADDRESS: phone_1}, usual=(PHONE_1_ADDRESS,), now=0.0)
    assert isinstance(events(ours)[0], KeysReady)
    # More sources than are kept: the last ClientHello of the newest few only.
    senders = [("127.0.0.1", 53000 + n) for n in range(3 * MAX_KEPT_FOR_ANOTHER_PHONE)]
    for n, address in enumerate(senders):
        for _ in range(3):  # and one datagram each, whatever each sends
            send(phone(ours, STRANGER), ours, address, 0.1 + n / 100)
    send(phone_2, ours, PHONE_2_ADDRESS, 0.5)
    fresh = phone_2s_200(ours, phone_2)
    fresh.packets_to_send(now=0.6)  # the first clock: what was kept is fed
    asked = [a for d, a in fresh.addressed_packets_to_send(now=0.6)]
    assert sorted(asked) == sorted([*senders[-(MAX_KEPT_FOR_ANOTHER_PHONE - 1) :], PHONE_2_ADDRESS])

    # A 2xx confirmed phone 1's answer: nothing is kept any more, nor handed on.
    ours, phone_1, phone_2 = early_answer()
    run(ours, {PHONE_1_ADDRESS: phone_1}, usual=(PHONE_1_ADDRESS,), now=0.0)
    send(phone_2, ours, PHONE_2_ADDRESS, 0.1)  # kept ...
    ours.answer_confirmed()  # ... then dropped
    assert not ours.keeps_other_phones
    send(phone(ours, STRANGER), ours, STRANGER_ADDRESS, 0.2)
    fresh = ours.for_another_phone()
    fresh.remote_sdp_attributes(phone_2.local_sdp_attributes())
    fresh.packets_to_send(now=0.3)
    assert fresh.addressed_packets_to_send(now=0.3) == []


def test_a_reoffer_and_an_answer_keep_nothing_for_another_phone() -> None:
    # A re-offer goes in a dialog, to its one phone; our answer answers one phone's offer.
    ours, phone_1, _ = early_answer()
    run(ours, {PHONE_1_ADDRESS: phone_1}, usual=(PHONE_1_ADDRESS,), now=0.0)
    for rekey in (False, True):
        reoffer = exchange(US).offer(suites=[], secure_signalling=True, previous=ours, rekey=rekey)
        assert not reoffer.keeps_other_phones
    assert not phone_1.keeps_other_phones


def test_the_sdp_address_failing_the_check_still_ends_an_early_answers_handshake() -> None:
    # "Forged alerts": the early answer's own SDP address is that phone's word; a certificate
    # from there that does not match is no other phone's, and ends the leg at once.
    ours, _phone_1, _ = early_answer()
    impostor = phone(ours, STRANGER)
    run(ours, {PHONE_1_ADDRESS: impostor}, usual=(PHONE_1_ADDRESS,), now=0.0)
    assert ours.state == "failed" and impostor.keys is None
