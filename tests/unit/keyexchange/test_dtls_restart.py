"""The peer's new handshake on an established association (RFC 6347 §4.2.8; session 44): a
phone that restarts its DTLS client on the same address and port is asked for our cookie, then
run on a candidate association; the association in force keeps its keys until the candidate
completes with a certificate matching the peer's a=fingerprint, and a candidate that fails or
times out changes nothing."""

from __future__ import annotations

import itertools
import logging

import pytest

from gateway.core.interfaces import KeysReady, NegotiationFailed, SrtpKeys
from gateway.plugins.keyexchange.dtls_certificates import generate_identity
from gateway.plugins.keyexchange.dtls_srtp import (
    DEFAULT_HANDSHAKE_TIMEOUT,
    MAX_NEW_HANDSHAKES_BURST,
    DtlsNegotiation,
)
from tests.unit.keyexchange.dtls_source_pairs import (
    LONG,
    MONTH,
    NATTED,
    NOW,
    PEER,
    SDP_ADDRESS,
    STRANGER,
    US,
    events,
    exchange,
    ours_and_peer,
    run,
    send,
    send_verified,
)

_HELLO_VERIFY_REQUEST = 3


def keyed_pair() -> tuple[DtlsNegotiation, DtlsNegotiation, SrtpKeys]:
    """We are the DTLS server of an established association with the peer at its SDP address."""
    ours, peer = ours_and_peer(we_serve=True)
    ours.note_sdp_address(SDP_ADDRESS)
    run(ours, {SDP_ADDRESS: peer}, now=0.0)
    (ready,) = events(ours)
    assert isinstance(ready, KeysReady) and ours.keys is not None
    return ours, peer, ours.keys


def restarted(ours: DtlsNegotiation, identity: object = PEER) -> DtlsNegotiation:
    """A DTLS client started afresh from our SDP (a restarted phone, or a forger with
    ``identity``'s certificate): its first datagram is a ClientHello of message_seq 0."""
    client = exchange(identity).answer(  # type: ignore[arg-type]
        ours.local_sdp_attributes(), suites=[], secure_signalling=True
    )
    assert client is not None and client.dtls_role == "client"
    return client


def mirrored(keys: SrtpKeys) -> tuple[bytes, bytes]:
    return keys.remote_key, keys.local_key


def test_a_restarted_client_is_asked_for_a_cookie_then_rekeys_the_leg(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ours, _, old = keyed_pair()
    phone = restarted(ours)
    # Its ClientHello (message_seq 0) from the SDP address: a HelloVerifyRequest, nothing
    # else; no OpenSSL object, no timer (RFC 6347 §4.2.1 before §4.2.8).
    send(phone, ours, SDP_ADDRESS, 1.0)
    (answer,) = ours.addressed_packets_to_send(now=1.0)
    assert answer[1] == SDP_ADDRESS and answer[0][13] == _HELLO_VERIFY_REQUEST
    assert ours.get_timer() is None and ours.statistics().peer_restarts == 0
    phone.receive_packet(answer[0], now=1.0)
    # Its ClientHello with our cookie starts the candidate; the old keys stay meanwhile.
    send(phone, ours, SDP_ADDRESS, 1.0)
    assert ours.statistics().peer_restarts == 1
    assert ours.keys == old and ours.state == "established" and events(ours) == []
    assert ours.get_timer() is not None  # the candidate's retransmission and timeout
    with caplog.at_level(logging.INFO):
        run(ours, {SDP_ADDRESS: phone}, now=1.1)
    (ready,) = events(ours)
    assert isinstance(ready, KeysReady) and ours.keys == ready.keys
    (phone_ready,) = events(phone)
    assert isinstance(phone_ready, KeysReady)
    assert (ours.keys.local_key, ours.keys.remote_key) == mirrored(phone_ready.keys)
    assert ours.keys != old and ours.keys.local_key != old.local_key
    assert ours.peer_rekeys == 1 and ours.security_record()["dtls_rekeyed_by_peer"] == "1"
    stats = ours.statistics()
    assert (stats.peer_restarts, stats.peer_rekeys, stats.peer_restarts_failed) == (1, 1, 0)
    assert ours.get_timer() is None and ours.peer_source == SDP_ADDRESS
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def expire(ours: DtlsNegotiation) -> None:
    """Let every timer of ``ours`` run out (retransmissions, then timeouts)."""
    timer = ours.get_timer()
    while timer is not None:
        ours.handle_timer(now=timer)
        ours.addressed_packets_to_send(now=timer)
        ours.packets_to_send(now=timer)
        timer = ours.get_timer()


def test_a_restart_whose_certificate_does_not_match_changes_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A forger that receives at the phone's address (it returns the cookie) with a certificate
    # of its own: its handshake is held (session 45: a re-offer naming that certificate may
    # yet come) and fails at its timeout; the keys in force stay throughout.
    ours, _, old = keyed_pair()
    assert "dtls_rekeyed_by_peer" not in ours.security_record()
    with caplog.at_level(logging.INFO):
        run(ours, {SDP_ADDRESS: restarted(ours, STRANGER)}, now=1.0)
        assert ours.statistics().peer_restarts_held == 1
        held = [r.getMessage() for r in caplog.records if "held until a re-offer" in r.getMessage()]
        assert len(held) == 1 and "127.0.0.1:40000" in held[0]
        expire(ours)
        run(ours, {SDP_ADDRESS: restarted(ours, STRANGER)}, now=100.0)
        expire(ours)
    assert events(ours) == [] and ours.keys == old and ours.state == "established"
    assert ours.peer_rekeys == 0 and "dtls_rekeyed_by_peer" not in ours.security_record()
    stats = ours.statistics()
    assert (stats.peer_restarts, stats.peer_rekeys, stats.peer_restarts_failed) == (2, 0, 2)
    assert stats.peer_restarts_held == 2 and stats.peer_restarts_adopted == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings  # once per port
    assert "new handshake from 127.0.0.1:40000" in warnings[0]
    assert "DTLS fingerprint mismatch" in warnings[0] and "keys are kept" in warnings[0]
    assert "held for a re-offer naming its certificate, none came" in warnings[0]
    # The phone's own restart still re-keys afterwards.
    run(ours, {SDP_ADDRESS: restarted(ours)}, now=200.0)
    assert isinstance(events(ours)[0], KeysReady) and ours.keys != old


def test_a_client_hello_without_our_cookie_costs_nothing() -> None:
    ours, _, old = keyed_pair()
    for n in range(20):  # a flood forged with the peer's address
        send(restarted(ours, STRANGER), ours, SDP_ADDRESS, 1.0 + n / 100)
    assert len(ours.addressed_packets_to_send(now=1.2)) == 20  # a HelloVerifyRequest each
    assert ours.statistics().peer_restarts == 0 and ours.get_timer() is None
    assert ours.keys == old and events(ours) == []


def test_a_candidate_that_times_out_is_dropped_and_the_keys_stay() -> None:
    ours, _, old = keyed_pair()
    phone = restarted(ours)
    send(phone, ours, SDP_ADDRESS, 1.0)
    for datagram, _ in ours.addressed_packets_to_send(now=1.0):
        phone.receive_packet(datagram, now=1.0)
    send(phone, ours, SDP_ADDRESS, 1.0)  # the candidate starts; the phone then goes quiet
    assert ours.addressed_packets_to_send(now=1.0)  # our certificate flight
    timer = ours.get_timer()
    while timer is not None:
        ours.handle_timer(now=timer)
        timer = ours.get_timer()
    assert events(ours) == [] and ours.keys == old and ours.state == "established"
    assert ours.statistics().peer_restarts_failed == 1
    assert ours.failure is None


def test_one_candidate_at_a_time_and_the_port_bucket_bounds_them() -> None:
    # Each verified ClientHello of a new random replaces the candidate (one at a time), and
    # each costs a token of the port's bucket, the SDP address's too (MAX_NEW_HANDSHAKES_BURST).
    ours, _, old = keyed_pair()
    for _ in range(MAX_NEW_HANDSHAKES_BURST + 2):
        phone = restarted(ours)
        send(phone, ours, SDP_ADDRESS, 1.0)
        for datagram, _ in ours.addressed_packets_to_send(now=1.0):
            phone.receive_packet(datagram, now=1.0)
        send(phone, ours, SDP_ADDRESS, 1.0)
        ours.addressed_packets_to_send(now=1.0)
    stats = ours.statistics()
    assert stats.peer_restarts == MAX_NEW_HANDSHAKES_BURST and stats.dropped_rate == 2
    assert ours.keys == old
    # The last started candidate was superseded by none of the dropped: the timer is its own.
    timer = ours.get_timer()
    assert timer is not None and timer <= 1.0 + DEFAULT_HANDSHAKE_TIMEOUT


def test_as_dtls_client_a_client_hello_on_the_association_is_still_dropped() -> None:
    # We are the client: the peer (server) cannot restart the handshake; a ClientHello is a
    # stranger's or a role conflict (RFC 5763 §5), dropped as before.
    ours, peer = ours_and_peer(we_serve=False)
    ours.note_sdp_address(SDP_ADDRESS)
    run(ours, {SDP_ADDRESS: peer}, now=0.0)
    assert isinstance(events(ours)[0], KeysReady)
    old = ours.keys
    client = exchange(STRANGER).answer(
        [("setup", "actpass") if n == "setup" else (n, v) for n, v in ours.local_sdp_attributes()],
        suites=[],
        secure_signalling=True,
    )
    assert client is not None and client.dtls_role == "client"
    send(client, ours, SDP_ADDRESS, 1.0)
    assert ours.addressed_packets_to_send(now=1.0) == [] and ours.keys == old
    assert ours.statistics().peer_restarts == 0


def test_a_refused_source_and_a_rate_limited_server_flight_are_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Session 43 left both out of the dtls-client-hello-dropped family: the same line, with
    # what was dropped named.
    from tests.unit.keyexchange.dtls_source_pairs import FIRST_STRANGER, stranger_for

    ours, _ = ours_and_peer(we_serve=True)
    ours.answer_confirmed()  # a 2xx's answer: the stranger's certificate is refused at once
    with caplog.at_level(logging.WARNING):
        run(ours, {FIRST_STRANGER: stranger_for(ours)}, now=0.0)  # fails the fingerprint
        send(stranger_for(ours), ours, FIRST_STRANGER, 0.5)
    assert ours.statistics().dropped_refused == 1
    lines = [r.getMessage() for r in caplog.records]
    assert (
        "DTLS handshake datagram from 127.0.0.1:52000 dropped (refused): 1 from 127.0.0.1 "
        "since its last such line; it returned our cookie, so it receives at that host"
    ) in lines

    caplog.clear()
    ours, peer = ours_and_peer(we_serve=False)
    hello = ours.packets_to_send(now=0.0)
    for datagram in hello:
        peer.receive_packet(datagram, now=0.0)
    send(peer, ours, SDP_ADDRESS, 0.0)  # the peer's answer takes the association
    with caplog.at_level(logging.WARNING):
        for n in range(MAX_NEW_HANDSHAKES_BURST + 2):
            server = stranger_for(ours)
            for datagram in hello:
                server.receive_packet(datagram, now=0.0)
            send(server, ours, ("127.0.0.2", 53000 + n), 0.0)
    assert ours.statistics().dropped_rate >= 1
    lines = [r.getMessage() for r in caplog.records]
    assert any(
        line.startswith("DTLS server flight from 127.0.0.2:")
        and "dropped (rate_limited)" in line
        and line.endswith("never proved to receive there: the address may be forged")
        for line in lines
    ), lines
    assert NATTED  # the shared addresses module is the one the other tests use


def test_a_link_local_source_is_keyed_with_its_zone_by_the_cookie_and_the_engine() -> None:
    # RFC 4007 §6: fe80::1 on two links are two hosts. recvfrom gives (host, port, flowinfo,
    # scope_id), the host without its zone; the call's handshake queue keys a source by
    # ip.source_key, and the engine's cookie and verified_sources now do too (session 44).
    from gateway.core.ip import source_key
    from gateway.plugins.keyexchange.dtls_cookies import CookieSecrets
    from tests.unit.keyexchange.dtls_source_pairs import send_verified, stranger_for

    secrets = CookieSecrets(lambda n: b"\x07" * n)
    on_link_4 = ("fe80::1", 5004, 0, 4)
    cookie = secrets.cookie(on_link_4, 0.0, context=b"port")
    assert secrets.verifies(("fe80::1%4", 5006), cookie, 0.0, context=b"port")
    assert not secrets.verifies(("fe80::1", 5004, 0, 5), cookie, 0.0, context=b"port")
    assert not secrets.verifies(("fe80::1", 5004), cookie, 0.0, context=b"port")
    assert secrets.verifies(
        ("::1", 5004, 0, 0), secrets.cookie(("::1", 9), 0.0, context=b"p"), 0.0, context=b"p"
    )  # no zone: as before

    ours, _ = ours_and_peer(we_serve=True)
    source = ("fe80::1", 52000, 0, 4)
    send_verified(stranger_for(ours), ours, source, 0.0)  # type: ignore[arg-type]
    assert ours.verified_sources == (source_key(source),) == (("fe80::1%4", 52000),)


def test_after_a_reoffer_that_kept_the_association_only_its_address_restarts_it() -> None:
    # A re-INVITE that keeps the association (a session refresh, hold; RFC 8842 §5) gives the
    # stream a negotiation that has been told no source yet. RFC 6347 §4.2.8 is about the
    # association's own 5-tuple: another host that returns our cookie is not the phone
    # restarting, and must neither start a candidate nor spend the port's bucket on one.
    ours_exchange, peer_exchange = exchange(US), exchange(PEER)
    first = ours_exchange.offer(suites=[], secure_signalling=True)
    peer = peer_exchange.answer(first.local_sdp_attributes(), suites=[], secure_signalling=True)
    assert peer is not None
    first.remote_sdp_attributes(peer.local_sdp_attributes())
    first.note_sdp_address(SDP_ADDRESS)
    run(first, {SDP_ADDRESS: peer}, now=0.0)
    assert isinstance(events(first)[0], KeysReady)
    ours = ours_exchange.offer(suites=[], secure_signalling=True, previous=first)
    ours.remote_sdp_attributes(peer.local_sdp_attributes())
    old = ours.keys
    assert old is not None and old == first.keys
    elsewhere = ("127.0.0.2", 53000)
    for n in range(MAX_NEW_HANDSHAKES_BURST + 1):
        send_verified(restarted(ours, STRANGER), ours, elsewhere, 1.0 + n / 100)
    assert ours.statistics().peer_restarts == 0 and ours.statistics().dropped_rate == 0
    assert ours.get_timer() is None and ours.keys == old
    assert [a for _, a in ours.addressed_packets_to_send(now=1.1) if a == elsewhere] == []
    ours.packets_to_send(now=1.1)  # the kept association's final flight, the usual way (as before)
    # The phone's own restart from the association's address still re-keys the leg.
    phone = restarted(ours)
    run(ours, {SDP_ADDRESS: phone}, now=2.0)
    (ready,) = events(ours)
    assert isinstance(ready, KeysReady) and ours.keys == ready.keys != old
    assert ours.statistics().peer_rekeys == 1


@pytest.mark.parametrize("offerer", ["phone", "gateway"])
def test_a_reinvite_that_keeps_the_association_keeps_the_candidate_under_way(
    offerer: str,
) -> None:
    # The phone's new handshake is under way when a re-INVITE that keeps the association (a
    # session refresh, RFC 4028; the phone's or ours) gives the stream a new negotiation: the
    # phone's next flight goes to that one, which must go on with the candidate.
    ours, peer, old = keyed_pair()
    phone = restarted(ours)
    send(phone, ours, SDP_ADDRESS, 1.0)
    for datagram, _ in ours.addressed_packets_to_send(now=1.0):
        phone.receive_packet(datagram, now=1.0)  # our HelloVerifyRequest
    send(phone, ours, SDP_ADDRESS, 1.0)  # its ClientHello with our cookie: the candidate
    for datagram, _ in ours.addressed_packets_to_send(now=1.0):
        phone.receive_packet(datagram, now=1.0)  # our flight; the phone answers next
    assert ours.statistics().peer_restarts == 1
    refreshed: DtlsNegotiation | None
    if offerer == "phone":
        reoffer = exchange(PEER).offer(suites=[], secure_signalling=True, previous=peer)
        refreshed = exchange(US).answer(
            reoffer.local_sdp_attributes(), suites=[], secure_signalling=True, previous=ours
        )
    else:
        refreshed = exchange(US).offer(suites=[], secure_signalling=True, previous=ours)
        refreshed.remote_sdp_attributes(peer.local_sdp_attributes())
    assert refreshed is not None and refreshed.keys == old  # the association was kept
    run(refreshed, {SDP_ADDRESS: phone}, now=1.1)
    (ready,) = events(refreshed)
    assert isinstance(ready, KeysReady) and refreshed.keys == ready.keys != old
    (phone_ready,) = events(phone)
    assert isinstance(phone_ready, KeysReady)
    assert (refreshed.keys.local_key, refreshed.keys.remote_key) == mirrored(phone_ready.keys)
    assert refreshed.peer_rekeys == 1 and refreshed.statistics().peer_rekeys == 1
    # The negotiation it replaced no longer drives the candidate (one at a time).
    assert ours.get_timer() is None


def _records(datagrams: list[bytes]) -> list[tuple[int, int]]:
    """(content type, epoch) of each DTLS record (RFC 6347 §4.1)."""
    found = []
    for datagram in datagrams:
        at = 0
        while at + 13 <= len(datagram):
            length = int.from_bytes(datagram[at + 11 : at + 13], "big")
            found.append((datagram[at], int.from_bytes(datagram[at + 3 : at + 5], "big")))
            at += 13 + length
    return found


def test_a_forged_restart_never_gets_our_finished() -> None:
    # RFC 5763 §5: the certificate is read before OpenSSL sees it (session 45: held, not
    # alerted) and checked again by the verify callback, before our ChangeCipherSpec and
    # Finished: a forger that returns the cookie gets our first flight, never a handshake it
    # can finish, nor an alert that would end the real phone's handshake on that address.
    ours, _, old = keyed_pair()
    forger = restarted(ours, STRANGER)
    sent: list[bytes] = []
    for n in range(10):
        send(forger, ours, SDP_ADDRESS, 1.0 + n)
        out = [p for p, _ in ours.addressed_packets_to_send(now=1.0 + n)]
        out += ours.packets_to_send(now=1.0 + n)
        for datagram in out:
            forger.receive_packet(datagram, now=1.0 + n)
        sent += out
        ours.handle_timer(now=1.0 + n)
    expire(ours)
    sent += [p for p, _ in ours.addressed_packets_to_send(now=100.0)]
    records = _records(sent)
    assert ours.statistics().peer_restarts_failed == 1 and ours.keys == old
    assert all(epoch == 0 for _, epoch in records) and 20 not in {t for t, _ in records}
    assert forger.keys is None and not [e for e in events(forger) if isinstance(e, KeysReady)]


def test_the_rtcp_ports_own_restart_rekeys_srtcp_only() -> None:
    # Without rtcp-mux each port runs its own association (RFC 5764 §4.1): the phone restarts
    # each, and a restart on the RTCP port re-keys that port alone, its negotiation still the
    # one the RTP port's gives (the call's handshake task compares it by identity).
    ours, peer, old = keyed_pair()
    ours_rtcp, peer_rtcp = ours.rtcp_component(), peer.rtcp_component()
    assert ours_rtcp is not None and peer_rtcp is not None
    rtcp_address = (SDP_ADDRESS[0], SDP_ADDRESS[1] + 1)
    ours_rtcp.note_sdp_address(rtcp_address)
    run(ours_rtcp, {rtcp_address: peer_rtcp}, usual=(rtcp_address,), now=0.0)
    (first,) = events(ours_rtcp)
    assert isinstance(first, KeysReady)
    run(ours_rtcp, {rtcp_address: restarted(ours_rtcp)}, usual=(rtcp_address,), now=1.0)
    (ready,) = events(ours_rtcp)
    assert isinstance(ready, KeysReady) and ready.keys != first.keys
    assert ours_rtcp.keys == ready.keys and ours_rtcp.peer_rekeys == 1
    assert ours.keys == old and events(ours) == [] and ours.peer_rekeys == 0
    assert ours.rtcp_component() is ours_rtcp
    # The RTP port's own restart keeps the RTCP port's negotiation and its keys.
    run(ours, {SDP_ADDRESS: restarted(ours)}, now=2.0)
    assert isinstance(events(ours)[0], KeysReady) and ours.keys != old
    assert ours.rtcp_component() is ours_rtcp and ours_rtcp.keys == ready.keys


# -- a restart with a new certificate before the re-INVITE that names it (session 45) ---------


def held_restart(identity: object) -> tuple[DtlsNegotiation, DtlsNegotiation, SrtpKeys]:
    """Our keyed association whose phone restarted with ``identity``'s certificate: its
    handshake reached its Certificate and is held (the SDP in force names the old one)."""
    ours, _, old = keyed_pair()
    phone = restarted(ours, identity)
    run(ours, {SDP_ADDRESS: phone}, now=1.0)
    assert ours.statistics().peer_restarts_held == 1 and ours.keys == old
    assert events(ours) == [] and phone.keys is None
    return ours, phone, old


def reoffer(identity: object, **changes: str) -> list[tuple[str, str | None]]:
    """The phone's re-INVITE offer with ``identity``'s fingerprint and a new tls-id."""
    attributes = exchange(identity).offer(suites=[], secure_signalling=True)  # type: ignore[arg-type]
    return [(n, changes.get(n, v)) for n, v in attributes.local_sdp_attributes()]


@pytest.mark.parametrize("certificate", ["short", "long"])
@pytest.mark.parametrize("setup", ["actpass", "active"])
def test_a_restart_with_a_new_certificate_completes_when_the_reoffer_names_it(
    caplog: pytest.LogCaptureFixture, setup: str, certificate: str
) -> None:
    # A browser that regenerated its certificate restarts its handshake on the same address
    # before its re-INVITE with the new a=fingerprint (RFC 8842 §5) reaches us: the candidate
    # is held, not alerted, and the re-offer naming its certificate completes it as the new
    # association; our answer keeps us its DTLS server (a=setup:passive). A long certificate
    # comes in three datagrams (RFC 6347 §4.2.3): read once whole, held the same (before
    # session 55 it was not read, and OpenSSL's check ended the restart with a fatal alert).
    renewed = generate_identity(now=NOW, max_age=MONTH) if certificate == "short" else LONG
    with caplog.at_level(logging.WARNING):
        ours, phone, old = held_restart(renewed)
        answered = exchange(US).answer(
            reoffer(renewed, setup=setup), suites=[], secure_signalling=True, previous=ours
        )
        assert answered is not None and answered.dtls_role == "server"
        assert ("setup", "passive") in answered.local_sdp_attributes()
        assert answered.keys == old  # the keys in force until the new ones are ready
        run(answered, {SDP_ADDRESS: phone}, now=1.5)
    (ready,) = events(answered)
    assert isinstance(ready, KeysReady) and answered.keys == ready.keys != old
    (phone_ready,) = events(phone)
    assert isinstance(phone_ready, KeysReady)
    assert (ready.keys.local_key, ready.keys.remote_key) == mirrored(phone_ready.keys)
    assert answered.statistics().peer_restarts_adopted == 1
    assert ours.get_timer() is None and ours.keys == old  # the previous: nothing due, its keys
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_the_rtcp_ports_held_restart_is_taken_with_the_rtp_ports() -> None:
    # Without rtcp-mux the phone restarts each port's association (RFC 5764 §4.1) with its
    # new certificate, both before its re-INVITE: both are held. The re-offer naming it takes
    # the RTCP port's held handshake too. Before session 46 the new association's RTCP port
    # got a fresh handshake waiting for a ClientHello the phone had already sent (its flight
    # 5 went unanswered) and failed at handshake_timeout: the call ended (the RTCP port's
    # failure ends it like the RTP port's).
    renewed = generate_identity(now=NOW, max_age=MONTH)
    ours, peer, old = keyed_pair()
    ours_rtcp, peer_rtcp = ours.rtcp_component(), peer.rtcp_component()
    assert ours_rtcp is not None and peer_rtcp is not None
    rtcp_address = (SDP_ADDRESS[0], SDP_ADDRESS[1] + 1)
    ours_rtcp.note_sdp_address(rtcp_address)
    run(ours_rtcp, {rtcp_address: peer_rtcp}, usual=(rtcp_address,), now=0.0)
    (first,) = events(ours_rtcp)
    assert isinstance(first, KeysReady)
    phone = restarted(ours, renewed)
    phone_rtcp = phone.rtcp_component()
    assert phone_rtcp is not None
    run(ours, {SDP_ADDRESS: phone}, now=1.0)
    run(ours_rtcp, {rtcp_address: phone_rtcp}, usual=(rtcp_address,), now=1.0)
    assert ours.statistics().peer_restarts_held == 1
    assert ours_rtcp.statistics().peer_restarts_held == 1 and events(ours_rtcp) == []
    answered = exchange(US).answer(
        reoffer(renewed, setup="actpass"), suites=[], secure_signalling=True, previous=ours
    )
    assert answered is not None
    run(answered, {SDP_ADDRESS: phone}, now=1.5)
    assert isinstance(events(answered)[0], KeysReady) and answered.keys != old
    answered_rtcp = answered.rtcp_component()
    assert answered_rtcp is not None and answered_rtcp is not ours_rtcp
    answered_rtcp.note_sdp_address(rtcp_address)
    run(answered_rtcp, {rtcp_address: phone_rtcp}, usual=(rtcp_address,), now=1.5)
    (ready,) = events(answered_rtcp)
    assert isinstance(ready, KeysReady) and ready.keys != first.keys
    (phone_ready,) = events(phone_rtcp)
    assert isinstance(phone_ready, KeysReady)
    assert (ready.keys.local_key, ready.keys.remote_key) == mirrored(phone_ready.keys)
    assert answered_rtcp.statistics().peer_restarts_adopted == 1
    assert ours_rtcp.get_timer() is None and ours_rtcp.keys == first.keys  # nothing due there
    assert answered.rtcp_component() is answered_rtcp


def test_a_reoffer_naming_another_certificate_never_takes_the_held_candidate() -> None:
    # RFC 5763 §5: a new association goes on only with a certificate its a=fingerprint names.
    renewed = generate_identity(now=NOW, max_age=MONTH)
    ours, _, old = held_restart(renewed)
    answered = exchange(US).answer(
        reoffer(STRANGER, setup="active"), suites=[], secure_signalling=True, previous=ours
    )
    assert answered is not None and answered.statistics().peer_restarts_adopted == 0
    assert answered.keys == old and ours.get_timer() is not None  # still held there
    # A fresh association: the held candidate's datagrams are not its own.
    assert events(answered) == [] and answered.packets_to_send(now=1.5) == []


def test_a_reoffer_never_takes_a_candidate_whose_certificate_was_not_seen() -> None:
    # A candidate still waiting for the client's Certificate is nobody's yet (someone on the
    # phone's path may have started it): a re-offer with a new fingerprint starts afresh.
    ours, _, old = keyed_pair()
    phone = restarted(ours, STRANGER)
    send(phone, ours, SDP_ADDRESS, 1.0)
    for datagram, _ in ours.addressed_packets_to_send(now=1.0):
        phone.receive_packet(datagram, now=1.0)
    send(phone, ours, SDP_ADDRESS, 1.0)  # the candidate starts; our flight not answered yet
    assert ours.statistics().peer_restarts == 1
    answered = exchange(US).answer(
        reoffer(STRANGER, setup="active"), suites=[], secure_signalling=True, previous=ours
    )
    assert answered is not None and answered.statistics().peer_restarts_adopted == 0
    assert answered.keys == old and answered.packets_to_send(now=1.5) == []
    run(answered, {SDP_ADDRESS: phone}, now=1.5)  # the phone's next flight: not a ClientHello
    assert events(answered) == [] and phone.keys is None


def test_a_rolled_back_reoffer_keeps_the_restart_under_way() -> None:
    # The phone's re-INVITE that keeps the association crosses its restart, and the other leg
    # refuses it (488, RFC 3261 §14.1): the stream goes back to the negotiation in force,
    # which must still drive the candidate (session 44 moved it to the re-offer's and lost it).
    ours, peer, old = keyed_pair()
    phone = restarted(ours)
    send(phone, ours, SDP_ADDRESS, 1.0)
    for datagram, _ in ours.addressed_packets_to_send(now=1.0):
        phone.receive_packet(datagram, now=1.0)
    send(phone, ours, SDP_ADDRESS, 1.0)  # its ClientHello with our cookie: the candidate
    for datagram, _ in ours.addressed_packets_to_send(now=1.0):
        phone.receive_packet(datagram, now=1.0)
    refreshed = exchange(US).answer(
        exchange(PEER)
        .offer(suites=[], secure_signalling=True, previous=peer)
        .local_sdp_attributes(),
        suites=[],
        secure_signalling=True,
        previous=ours,
    )
    assert refreshed is not None and refreshed.keys == old
    del refreshed  # rolled back: the core goes on with ours
    run(ours, {SDP_ADDRESS: phone}, now=1.1)
    (ready,) = events(ours)
    assert isinstance(ready, KeysReady) and ours.keys == ready.keys != old
    assert ours.peer_rekeys == 1


def test_a_refused_reoffer_that_took_the_held_candidate_leaves_it_to_fail_where_it_was(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The re-INVITE naming the held certificate is refused by the other leg (488, RFC 3261
    # §14.1): the stream goes back to the negotiation in force, whose keys stay, and the held
    # handshake there fails at its timeout, said and counted (docs/operations.md,
    # dtls-restart-failed: "whose re-INVITE never came or was refused"). Before session 46
    # the refused re-offer took it away: no line, no count, the restart simply vanished.
    renewed = generate_identity(now=NOW, max_age=MONTH)
    ours, phone, old = held_restart(renewed)
    answering = exchange(US)
    answered = answering.answer(
        reoffer(renewed, setup="actpass"), suites=[], secure_signalling=True, previous=ours
    )
    assert answered is not None and answered.statistics().peer_restarts_adopted == 0
    del answered  # refused: the core goes on with ours, the re-offer's never clocked
    with caplog.at_level(logging.WARNING):
        run(ours, {SDP_ADDRESS: phone}, now=2.0)  # the phone resends its flight: held still
        expire(ours)
    assert events(ours) == [] and ours.keys == old and ours.state == "established"
    assert phone.keys is None
    assert ours.statistics().peer_restarts_failed == 1
    assert answering.totals.peer_restarts_adopted == 0  # nothing was made the leg's
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    # Said as it happened (session 46: before, "none came", though one had and was refused).
    assert len(warnings) == 1 and "the re-offer naming it took it" in warnings[0], warnings


def test_an_adopted_candidate_that_failed_where_it_was_held_fails_the_reoffers_negotiation() -> (
    None
):
    # The negotiation in force still holds the candidate the re-offer took (for a refusal),
    # and may be clocked while the re-offer waits for the other leg: should the candidate
    # time out there, the re-offer's negotiation, whose association it is, fails too (its
    # reason said, the call ended as a new association's timeout ends it) rather than
    # waiting for ever with neither keys nor a failure.
    renewed = generate_identity(now=NOW, max_age=MONTH)
    ours, _, old = held_restart(renewed)
    answered = exchange(US).answer(
        reoffer(renewed, setup="actpass"), suites=[], secure_signalling=True, previous=ours
    )
    assert answered is not None
    expire(ours)  # the candidate's timeout, where it was held
    assert ours.statistics().peer_restarts_failed == 1 and ours.keys == old
    timer = answered.get_timer()
    assert timer is not None
    answered.handle_timer(now=timer)
    (failed,) = events(answered)
    assert isinstance(failed, NegotiationFailed) and answered.failure is failed
    assert failed.reason.startswith("DTLS handshake timed out"), failed.reason
    assert answered.statistics().peer_restarts_adopted == 0


def test_a_certificate_is_read_only_whole_from_one_record() -> None:
    from gateway.plugins.keyexchange.dtls_srtp import presented_certificate_untrusted

    der = b"\x30\x82" + bytes(100)
    body = (len(der) + 3).to_bytes(3, "big") + len(der).to_bytes(3, "big") + der
    handshake = bytes([11]) + len(body).to_bytes(3, "big") + b"\x00\x02" + b"\x00\x00\x00"
    handshake += len(body).to_bytes(3, "big") + body
    record = bytes([22, 0xFE, 0xFD, 0, 0]) + bytes(6) + len(handshake).to_bytes(2, "big")
    assert presented_certificate_untrusted(record + handshake) == der
    # Another fragment, a certificate longer than its list, epoch 1, cut short: nothing.
    fragment = handshake[:6] + b"\x00\x00\x01" + handshake[9:]
    assert presented_certificate_untrusted(record + fragment) is None
    bad = handshake[:12] + body[:3] + (len(der) + 1).to_bytes(3, "big") + der
    assert presented_certificate_untrusted(record + bad) is None
    assert (
        presented_certificate_untrusted(record[:3] + b"\x00\x01" + record[5:] + handshake) is None
    )
    assert presented_certificate_untrusted((record + handshake)[:40]) is None
    # Session 46: more handshake messages after it in the same record (RFC 6347 §4.2.3, a
    # stack that packs its flight 5), and the Certificate after another message in it.
    key_exchange = bytes([16]) + b"\x00\x00\x05" + b"\x00\x03" + bytes(3) + b"\x00\x00\x05"
    key_exchange += bytes(5)
    for packed in (handshake + key_exchange, key_exchange + handshake):
        header = record[:11] + len(packed).to_bytes(2, "big")
        assert presented_certificate_untrusted(header + packed) == der
    # A Certificate message longer than its record (what follows is another record's): nothing.
    header = record[:11] + (len(handshake) - 1).to_bytes(2, "big")
    assert presented_certificate_untrusted(header + handshake + key_exchange) is None


def certificate_fragments(der: bytes, cuts: list[int], message_seq: int = 2) -> list[bytes]:
    """A Certificate message holding ``der`` cut at ``cuts`` (offsets into its body), each
    fragment in a datagram of its own (RFC 6347 §4.2.2 headers: message_seq, offset, length)."""
    body = (len(der) + 3).to_bytes(3, "big") + len(der).to_bytes(3, "big") + der
    bounds = [0, *cuts, len(body)]
    datagrams = []
    for number, (start, end) in enumerate(itertools.pairwise(bounds)):
        handshake = bytes([11]) + len(body).to_bytes(3, "big") + message_seq.to_bytes(2, "big")
        handshake += start.to_bytes(3, "big") + (end - start).to_bytes(3, "big") + body[start:end]
        record = bytes([22, 0xFE, 0xFD, 0, 0]) + number.to_bytes(6, "big")
        datagrams.append(record + len(handshake).to_bytes(2, "big") + handshake)
    return datagrams


def test_a_certificate_in_fragments_is_read_once_whole_and_bounded() -> None:
    # RFC 6347 §4.2.3: a certificate longer than the path MTU comes in several datagrams.
    # Session 55: they are gathered (held from OpenSSL) until the message is whole, in any
    # order; before, only a certificate whole in one record was read.
    from gateway.plugins.keyexchange.dtls_srtp import (
        MAX_CERTIFICATE_MESSAGE,
        MAX_HELD_DATAGRAMS,
        certificate_fragment_untrusted,
    )

    ours, _ = ours_and_peer(we_serve=True)
    association = ours._association
    assert association is not None
    der = b"\x30\x82" + bytes(2000)
    first, second, third = certificate_fragments(der, [700, 1400])
    assert certificate_fragment_untrusted(second)[:3] == (2, len(der) + 6, 700)  # type: ignore[index]
    assert certificate_fragment_untrusted(bytes([22, 0xFE, 0xFD]) + bytes(10)) is None
    assert association.take_certificate(third) == (None, [])  # held, gathered
    assert association.take_certificate(first) == (None, [])
    assert association.take_certificate(second) == (der, [third, first, second])
    assert association.certificate_fragments is None  # done with it
    # Nothing of a certificate, nothing gathered: the datagram goes on as it is.
    alert = bytes([21, 0xFE, 0xFD, 0, 1]) + bytes(6) + b"\x00\x02\x02\x28"
    assert association.take_certificate(alert) == (None, [alert])
    # A forger's fragment that never completes: held up to MAX_HELD_DATAGRAMS datagrams, then
    # all go on, OpenSSL deciding as before (and the handshake timeout bounding it in time).
    lone = certificate_fragments(der, [700])[0]
    held = [association.take_certificate(lone) for _ in range(MAX_HELD_DATAGRAMS - 1)]
    assert held == [(None, [])] * (MAX_HELD_DATAGRAMS - 1)
    assert association.take_certificate(alert) == (None, [lone] * 7 + [alert])
    # A fragment past its message's end is not well formed (RFC 6347 §4.2.2): not gathered.
    past = bytearray(first)
    past[13 + 6 : 13 + 9] = (len(der) + 6).to_bytes(3, "big")  # its offset
    assert association.take_certificate(bytes(past)) == (None, [bytes(past)])
    # A message longer than MAX_CERTIFICATE_MESSAGE is not gathered.
    huge = certificate_fragments(b"\x30\x82" + bytes(MAX_CERTIFICATE_MESSAGE), [700])[0]
    assert association.take_certificate(huge) == (None, [huge])


# -- a restart whose source is not known (an ICE leg, a host that feeds none; session 45) -----


def run_unaddressed(ours: DtlsNegotiation, phone: DtlsNegotiation, now: float) -> None:
    """Move datagrams until quiet, without sources, ours the core's usual way to the phone."""
    for _ in range(60):
        moved = False
        for datagram in phone.packets_to_send(now=now):
            moved = True
            ours.receive_packet(datagram, now=now)
        for datagram in ours.packets_to_send(now=now):
            moved = True
            phone.receive_packet(datagram, now=now)
        if not moved:
            return
    raise AssertionError("never quiet")


def test_a_restart_fed_without_its_source_is_asked_for_a_cookie_too() -> None:
    # On an ICE leg the port takes DTLS from the selected pair only and feeds it without its
    # source. Before session 45 no cookie was asked there: one ClientHello forged with the
    # pair's address started a candidate (an OpenSSL object, ~1 KB flights to the real phone
    # until handshake_timeout). Our HelloVerifyRequest goes the usual way, to that address.
    ours, peer = ours_and_peer(we_serve=True)
    run_unaddressed(ours, peer, now=0.0)
    (first,) = events(ours)
    assert isinstance(first, KeysReady)
    old = ours.keys
    for n in range(20):  # a flood forged with the selected pair's address
        hello = restarted(ours, STRANGER).packets_to_send(now=1.0)
        for datagram in hello:
            ours.receive_packet(datagram, now=1.0 + n / 100)
        answers = ours.packets_to_send(now=1.0 + n / 100)
        assert [a[13] for a in answers] == [_HELLO_VERIFY_REQUEST]
    assert ours.statistics().peer_restarts == 0 and ours.get_timer() is None
    assert ours.keys == old and events(ours) == []
    # The phone's own restart returns the cookie and re-keys the leg.
    phone = restarted(ours)
    run_unaddressed(ours, phone, now=2.0)
    (ready,) = events(ours)
    assert isinstance(ready, KeysReady) and ours.keys == ready.keys != old
    (phone_ready,) = events(phone)
    assert isinstance(phone_ready, KeysReady)
    assert (ready.keys.local_key, ready.keys.remote_key) == mirrored(phone_ready.keys)
    assert ours.statistics().hello_verify_requests == 21


# -- what session 44 left in the counters and the log (session 45) ---------------------------


def test_a_failed_or_replaced_candidates_datagrams_stay_in_the_ports_counters() -> None:
    ours, _, _ = keyed_pair()
    before = ours.statistics()
    for n in range(2):  # the first replaced by the second, which then times out
        phone = restarted(ours)
        send(phone, ours, SDP_ADDRESS, 1.0 + n)
        for datagram, _ in ours.addressed_packets_to_send(now=1.0 + n):
            phone.receive_packet(datagram, now=1.0 + n)
        send(phone, ours, SDP_ADDRESS, 1.0 + n)  # its ClientHello with our cookie
        ours.addressed_packets_to_send(now=1.0 + n)  # our flight
    expire(ours)
    after = ours.statistics()
    assert after.peer_restarts == 2 and after.peer_restarts_failed == 1
    assert after.datagrams_received == before.datagrams_received + 2
    assert after.datagrams_sent >= before.datagrams_sent + 2 + after.retransmissions
    assert after.retransmissions >= 3  # the second candidate's flight, resent until it failed


def test_the_dropped_line_keys_a_link_local_host_with_its_zone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # RFC 4007 §6: fe80::1 on link 4 and on link 5 are two hosts; each gets its own line (before
    # session 45 the second was counted under the first's, never named).
    from gateway.plugins.keyexchange.dtls_srtp import DroppedHelloLog

    dropped = DroppedHelloLog()
    with caplog.at_level(logging.WARNING):
        dropped.dropped(("fe80::1", 5004, 0, 4), "bad_cookie", verified=False, now=0.0)
        dropped.dropped(("fe80::1", 5004, 0, 5), "bad_cookie", verified=False, now=1.0)
        dropped.dropped(("fe80::1", 5006, 0, 4), "bad_cookie", verified=False, now=2.0)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert "from [fe80::1%4]:5004 dropped" in lines[0] and "from [fe80::1%5]:5004" in lines[1]


# -- session 46: a re-offer naming the held certificate takes it on its own terms -----------


@pytest.mark.parametrize(
    ("suites", "taken"),
    [(["AES_CM_128_HMAC_SHA1_80"], False), (["AEAD_AES_256_GCM", "AES_CM_128_HMAC_SHA1_80"], True)],
)
def test_a_reoffer_whose_policy_refuses_the_held_handshakes_profile_does_not_take_it(
    caplog: pytest.LogCaptureFixture, suites: list[str], taken: bool
) -> None:
    # Our ServerHello chose the held handshake's SRTP protection profile (RFC 5764 §4.1.2)
    # from the profiles in force when it began: AEAD_AES_256_GCM, our first. A re-offer whose
    # leg's policy no longer allows it cannot change that now: 488 saying which profile,
    # rather than keying the leg with a suite its policy refuses (before session 46 the
    # adopted handshake kept the old choice unchecked).
    renewed = generate_identity(now=NOW, max_age=MONTH)
    ours, phone, old = held_restart(renewed)
    answered = exchange(US).answer(
        reoffer(renewed, setup="actpass"), suites=suites, secure_signalling=True, previous=ours
    )
    assert answered is not None
    if taken:
        run(answered, {SDP_ADDRESS: phone}, now=1.5)
        (ready,) = events(answered)
        assert isinstance(ready, KeysReady) and ready.keys.suite == "AEAD_AES_256_GCM"
        return
    failure = answered.failure
    assert failure is not None and failure.sip_status == 488
    assert "SRTP_AEAD_AES_256_GCM" in failure.reason and "policy" in failure.reason
    assert answered.local_sdp_attributes() == [] and answered.keys is None
    with caplog.at_level(logging.WARNING):
        run(ours, {SDP_ADDRESS: phone}, now=2.0)
        expire(ours)  # the held handshake fails where it was held, saying why
    assert ours.keys == old and ours.statistics().peer_restarts_failed == 1
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "the re-offer naming it was refused" in warning and "none came" not in warning


def test_a_reoffer_naming_the_held_certificate_as_passive_is_refused_saying_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The phone sent the ClientHello: it is the DTLS client. A re-offer naming that
    # handshake's certificate with a=setup:passive asks us to be the client (RFC 5763 §5),
    # which it would never answer: 488 naming the conflict, and the held handshake's failure
    # says so. Before session 46 a fresh association sent our ClientHello to a phone that
    # never answered it, and the held one failed saying no re-offer had come.
    renewed = generate_identity(now=NOW, max_age=MONTH)
    ours, _phone, old = held_restart(renewed)
    answered = exchange(US).answer(
        reoffer(renewed, setup="passive"), suites=[], secure_signalling=True, previous=ours
    )
    assert answered is not None
    failure = answered.failure
    assert failure is not None and failure.sip_status == 488
    assert "a=setup:passive" in failure.reason and "RFC 5763" in failure.reason
    assert answered.packets_to_send(now=1.5) == []  # no ClientHello of ours
    with caplog.at_level(logging.WARNING):
        expire(ours)
    assert ours.keys == old and ours.statistics().peer_restarts_failed == 1
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "refused" in warning and "a=setup:passive" in warning, warning
    assert "none came" not in warning


def test_a_refused_reoffer_naming_the_held_certificate_is_said_when_refused(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Session 48: the 488 to a re-offer naming the held handshake's certificate was said in
    # the log only at that handshake's timeout, up to handshake_timeout later. Now an INFO
    # line (dtls-restart-refused) says it at once: the held handshake's source, its
    # certificate's digest, the port and why; once, and nothing of the keys.
    renewed = generate_identity(now=NOW, max_age=MONTH)
    ours, _phone, old = held_restart(renewed)
    with caplog.at_level(logging.INFO):
        for _ in range(2):  # the phone's re-INVITE, and its retransmission's new offer
            answered = exchange(US).answer(
                reoffer(renewed, setup="passive"), suites=[], secure_signalling=True, previous=ours
            )
            assert answered is not None and answered.failure is not None
    (record,) = [r for r in caplog.records if "re-offer naming" in r.getMessage()]
    line = record.getMessage()
    assert record.levelno == logging.INFO
    assert f"from {SDP_ADDRESS[0]}:{SDP_ADDRESS[1]}" in line
    assert renewed.sha256_hex().replace(":", "").lower() in line
    assert "RTP port" in line and "refused (488)" in line and "a=setup:passive" in line
    assert old.local_key.hex() not in line and old.remote_key.hex() not in line
    assert ours.keys == old  # the association and its keys are kept


def _split_records(datagram: bytes) -> list[bytes]:
    """The DTLS records of one datagram (RFC 6347 §4.1: 13 octets of header, then the
    length's octets), each alone."""
    found = []
    while len(datagram) >= 13:
        end = 13 + int.from_bytes(datagram[11:13], "big")
        found.append(datagram[:end])
        datagram = datagram[end:]
    return found


_CERTIFICATE = 11


def _is_certificate(record: bytes) -> bool:
    """A handshake record of epoch 0 holding a Certificate (RFC 6347 §4.1, §4.2.2)."""
    return record[0] == 22 and record[3:5] == b"\x00\x00" and record[13] == _CERTIFICATE


def held_at_its_certificate(
    identity: object,
) -> tuple[DtlsNegotiation, DtlsNegotiation, list[bytes]]:
    """As :func:`held_restart` at 1.0, but only the phone's Certificate record reached us:
    the rest of its flight (ClientKeyExchange .. Finished) is returned, to come later."""
    ours, _, old = keyed_pair()
    phone = restarted(ours, identity)
    rest: list[bytes] = []
    for _ in range(20):
        moved = False
        for datagram in phone.packets_to_send(now=1.0):
            moved = True
            records = _split_records(datagram)
            starts = [
                r[0] == 22 and r[3:5] == b"\x00\x00" and r[13] == _CERTIFICATE for r in records
            ]
            if any(starts):
                cut = starts.index(True) + 1
                ours.receive_packet_from(b"".join(records[:cut]), source=SDP_ADDRESS, now=1.0)
                rest += [b"".join(records[cut:])] if records[cut:] else []
            else:
                ours.receive_packet_from(datagram, source=SDP_ADDRESS, now=1.0)
        for datagram, _address in ours.addressed_packets_to_send(now=1.0):
            moved = True
            phone.receive_packet(datagram, now=1.0)
        if not moved:
            break
    assert ours.statistics().peer_restarts_held == 1 and ours.keys == old and rest
    return ours, phone, rest


def test_an_adopted_held_handshake_gets_a_handshake_timeout_from_its_adoption() -> None:
    # Held at 1.0, its handshake_timeout (20 s) ends at 21.0. The re-INVITE naming it comes
    # late, at 20.5: the new association it becomes gets handshake_timeout from then, as a
    # fresh one's handshake would, so the phone's flight at 21.5 completes it (before
    # session 46 it kept the held deadline and failed at 21.0, ending the call).
    renewed = generate_identity(now=NOW, max_age=MONTH)
    ours, _phone, rest = held_at_its_certificate(renewed)
    answered = exchange(US).answer(
        reoffer(renewed, setup="actpass"), suites=[], secure_signalling=True, previous=ours
    )
    assert answered is not None
    answered.packets_to_send(now=20.5)  # its first clock: the held Certificate fed
    answered.handle_timer(now=21.0)
    ours.handle_timer(now=21.0)  # where it was held, too: the same new deadline
    assert events(answered) == [] and ours.statistics().peer_restarts_failed == 0
    for datagram in rest:
        answered.receive_packet_from(datagram, source=SDP_ADDRESS, now=21.5)
    (ready,) = events(answered)
    assert isinstance(ready, KeysReady)


def test_an_adopted_held_handshakes_deadline_is_bounded_by_twice_the_timeout() -> None:
    # A re-offer that took it and whose end the engine was never told (refused without
    # abandon(), session 50) leaves the handshake held where it was, with the deadline its
    # adoption gave it; a second re-offer naming it moves it again, but never past twice
    # handshake_timeout from its start (1.0 + 40 s): re-offering cannot keep a handshake
    # alive for ever.
    renewed = generate_identity(now=NOW, max_age=MONTH)
    ours, _phone, _rest = held_at_its_certificate(renewed)
    first = exchange(US).answer(
        reoffer(renewed, setup="actpass"), suites=[], secure_signalling=True, previous=ours
    )
    assert first is not None
    first.packets_to_send(now=20.5)
    del first  # refused, not said: the core goes on with ours
    second = exchange(US).answer(
        reoffer(renewed, setup="actpass"), suites=[], secure_signalling=True, previous=ours
    )
    assert second is not None
    second.packets_to_send(now=40.0)
    second.handle_timer(now=40.9)  # past the first adoption's 40.5: moved again
    assert events(second) == []
    second.handle_timer(now=1.0 + 2 * DEFAULT_HANDSHAKE_TIMEOUT)  # but not past 41.0
    (failed,) = events(second)
    assert isinstance(failed, NegotiationFailed)
    assert failed.reason.startswith("DTLS handshake timed out"), failed.reason


def test_the_rtcp_ports_restart_held_while_the_answer_is_pending_is_taken() -> None:
    # Without rtcp-mux: the re-offer took the RTP port's held handshake, and its RTCP port's
    # negotiation was made before the phone's RTCP restart came; that restart reached the
    # previous RTCP port's negotiation (the answer not sent yet) and was held there. The new
    # RTCP port's negotiation takes it (before session 46 it waited for a ClientHello the
    # phone had sent, and its failure at handshake_timeout ended the call).
    renewed = generate_identity(now=NOW, max_age=MONTH)
    ours, peer, old = keyed_pair()
    ours_rtcp, peer_rtcp = ours.rtcp_component(), peer.rtcp_component()
    assert ours_rtcp is not None and peer_rtcp is not None
    rtcp_address = (SDP_ADDRESS[0], SDP_ADDRESS[1] + 1)
    ours_rtcp.note_sdp_address(rtcp_address)
    run(ours_rtcp, {rtcp_address: peer_rtcp}, usual=(rtcp_address,), now=0.0)
    (first,) = events(ours_rtcp)
    assert isinstance(first, KeysReady)
    phone = restarted(ours, renewed)
    phone_rtcp = phone.rtcp_component()
    assert phone_rtcp is not None
    run(ours, {SDP_ADDRESS: phone}, now=1.0)  # the RTP port's restart: held
    answered = exchange(US).answer(
        reoffer(renewed, setup="actpass"), suites=[], secure_signalling=True, previous=ours
    )
    assert answered is not None
    answered_rtcp = answered.rtcp_component()  # made now: nothing held on RTCP yet
    assert answered_rtcp is not None
    answered_rtcp.note_sdp_address(rtcp_address)
    run(ours_rtcp, {rtcp_address: phone_rtcp}, usual=(rtcp_address,), now=1.2)
    assert ours_rtcp.statistics().peer_restarts_held == 1
    run(answered, {SDP_ADDRESS: phone}, now=1.5)
    assert isinstance(events(answered)[0], KeysReady) and answered.keys != old
    run(answered_rtcp, {rtcp_address: phone_rtcp}, usual=(rtcp_address,), now=1.5)
    (ready,) = events(answered_rtcp)
    assert isinstance(ready, KeysReady) and ready.keys != first.keys
    (phone_ready,) = events(phone_rtcp)
    assert isinstance(phone_ready, KeysReady)
    assert (ready.keys.local_key, ready.keys.remote_key) == mirrored(phone_ready.keys)
    assert answered_rtcp.statistics().peer_restarts_adopted == 1


def _failed_at(ours: DtlsNegotiation, until: float) -> float | None:
    """Run ``ours``'s timers up to ``until``: when its held candidate failed (None: not yet)."""
    timer = ours.get_timer()
    while timer is not None and timer <= until:
        ours.handle_timer(now=timer)
        ours.addressed_packets_to_send(now=timer)
        if ours.statistics().peer_restarts_failed:
            return timer
        timer = ours.get_timer()
    return None


@pytest.mark.parametrize("refused_at", [18.5, 25.0])
def test_a_refused_reoffer_puts_the_held_handshake_back_on_its_deadline(
    caplog: pytest.LogCaptureFixture, refused_at: float
) -> None:
    # Held at 1.0 (its deadline 21.0), taken at 18.0 by the phone's re-INVITE naming its
    # certificate, which the other leg then refuses (488, RFC 3261 §14.1): the core says so
    # (LegSecurity.peer_offer_refused -> abandon()), and the held handshake is back on 21.0,
    # refused before its next clock (18.5) or after it moved its deadline (25.0: fails at
    # once). Before session 50 the refused re-offer's extension stayed: it failed at 41.0.
    renewed = generate_identity(now=NOW, max_age=MONTH)
    ours, _phone, _rest = held_at_its_certificate(renewed)
    assert _failed_at(ours, 18.0) is None  # its resends until the re-offer comes
    answering = exchange(US)
    answered = answering.answer(
        reoffer(renewed, setup="actpass"), suites=[], secure_signalling=True, previous=ours
    )
    assert answered is not None
    # While the re-offer waits for the other leg, its next clock where it was held gives it
    # handshake_timeout from then (session 46): alive past 21.0.
    assert _failed_at(ours, refused_at) is None
    answered.abandon()
    assert ours.get_timer() == 1.0 + DEFAULT_HANDSHAKE_TIMEOUT
    with caplog.at_level(logging.WARNING):
        ours.handle_timer(now=max(refused_at, 1.0 + DEFAULT_HANDSHAKE_TIMEOUT))
    assert ours.statistics().peer_restarts_failed == 1
    assert ours.state == "established" and events(ours) == []
    assert answered.state == "failed" and answered.get_timer() is None
    assert events(answered) == [] and answering.totals.peer_restarts_adopted == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "the re-offer naming it took it, and was refused)" in warnings[0], warnings


def test_the_rtcp_ports_restart_begun_before_the_reoffer_is_taken_with_the_rest_of_its_flight() -> (
    None
):
    # Without rtcp-mux: the RTP port's restart is held before the re-offer; the RTCP port's
    # had only begun (its ClientHello returned our cookie and got our server flight) when the
    # re-offer came, and the rest of its flight (its Certificate ...) was kept by the call's
    # handshake task for the re-offer's new association. Handed to the new RTCP port's
    # negotiation, it goes on to the restart under way at the previous one, is held there
    # and taken (session 50: before, it went to the new port's fresh association, which
    # waited for a ClientHello, and the call ended at handshake_timeout).
    renewed = generate_identity(now=NOW, max_age=MONTH)
    ours, peer, old = keyed_pair()
    ours_rtcp, peer_rtcp = ours.rtcp_component(), peer.rtcp_component()
    assert ours_rtcp is not None and peer_rtcp is not None
    rtcp_address = (SDP_ADDRESS[0], SDP_ADDRESS[1] + 1)
    ours_rtcp.note_sdp_address(rtcp_address)
    run(ours_rtcp, {rtcp_address: peer_rtcp}, usual=(rtcp_address,), now=0.0)
    (first,) = events(ours_rtcp)
    assert isinstance(first, KeysReady)
    phone = restarted(ours, renewed)
    phone_rtcp = phone.rtcp_component()
    assert phone_rtcp is not None
    run(ours, {SDP_ADDRESS: phone}, now=1.0)  # the RTP port's restart: held
    for _ in range(2):  # its ClientHello, our HelloVerifyRequest; then ours returned
        send(phone_rtcp, ours_rtcp, rtcp_address, 1.0)
        for datagram, _address in ours_rtcp.addressed_packets_to_send(now=1.0):
            phone_rtcp.receive_packet(datagram, now=1.0)
    assert ours_rtcp.statistics().peer_restarts == 1
    assert ours_rtcp.statistics().peer_restarts_held == 0  # its certificate not seen yet
    answered = exchange(US).answer(
        reoffer(renewed, setup="actpass"), suites=[], secure_signalling=True, previous=ours
    )
    assert answered is not None
    answered_rtcp = answered.rtcp_component()
    assert answered_rtcp is not None and answered_rtcp is not ours_rtcp
    answered_rtcp.note_sdp_address(rtcp_address)
    run(answered, {SDP_ADDRESS: phone}, now=1.5)
    assert isinstance(events(answered)[0], KeysReady) and answered.keys != old
    run(answered_rtcp, {rtcp_address: phone_rtcp}, usual=(rtcp_address,), now=1.5)
    assert ours_rtcp.statistics().peer_restarts_held == 1
    (ready,) = events(answered_rtcp)
    assert isinstance(ready, KeysReady) and ready.keys != first.keys
    (phone_ready,) = events(phone_rtcp)
    assert isinstance(phone_ready, KeysReady)
    assert (ready.keys.local_key, ready.keys.remote_key) == mirrored(phone_ready.keys)
    assert answered_rtcp.statistics().peer_restarts_adopted == 1
    assert ours_rtcp.keys == first.keys  # the previous port's: unchanged
