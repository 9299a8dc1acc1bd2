"""The ``dtls`` engine with sources (docs/media_security.md, "Forged handshakes"): until a source
proved itself (its certificate matched the peer's a=fingerprint, RFC 5763 §5) each source gets a
handshake of its own, at most MAX_HANDSHAKES_PER_PORT per port; the first to complete is the
peer, wherever it is (the SDP address, or a phone behind a NAT)."""

from __future__ import annotations

from gateway.core.interfaces import KeysReady, NegotiationFailed
from gateway.plugins.keyexchange.dtls_srtp import (
    FINGERPRINT_MISMATCH_REASON,
    HANDSHAKE_TIMEOUT_REASON,
    MAX_HANDSHAKES_PER_PORT,
    MAX_NEW_HANDSHAKES_BURST,
)
from tests.unit.keyexchange.dtls_source_pairs import (
    FIRST_STRANGER,
    NATTED,
    PEER,
    SDP_ADDRESS,
    Address,
    events,
    ours_and_peer,
    run,
    send,
    send_verified,
    stranger_for,
)


def test_a_stranger_first_at_the_port_does_not_keep_a_natted_peer_from_its_keys() -> None:
    # We are the DTLS server: the stranger's ClientHello reaches the port first, then the
    # peer's from behind its NAT (an address its SDP does not give). Each gets a handshake of
    # its own; the peer's completes with the certificate a=fingerprint names.
    ours, peer = ours_and_peer(we_serve=True)
    stranger = stranger_for(ours)
    send_verified(stranger, ours, FIRST_STRANGER, 0.0)
    run(ours, {FIRST_STRANGER: stranger, NATTED: peer}, order=[NATTED], now=0.1)
    (ready,) = events(ours)
    assert isinstance(ready, KeysReady)
    assert isinstance(events(peer)[0], KeysReady)
    assert ours.peer_source == NATTED and ours.peer_certificate_sha256 == PEER.sha256_hex()
    assert ours.keys == ready.keys
    # The stranger's handshake was dropped: nothing more goes to it, nothing of it is taken.
    send(stranger, ours, FIRST_STRANGER, 1.0)
    assert ours.addressed_packets_to_send(now=1.0) == [] and ours.state == "established"
    assert ours.statistics().handshakes_by_source == 1


def test_a_strangers_wrong_certificate_ends_its_own_handshake_not_the_call() -> None:
    # The stranger completes a whole handshake first, with its own certificate: it fails the
    # fingerprint check (its source's attempt ends), and the peer behind a NAT still keys.
    # The answer came in a 2xx: no other phone's can come (else the stranger's handshake is
    # held for one, test_dtls_fork_switch.py).
    ours, peer = ours_and_peer(we_serve=True)
    ours.answer_confirmed()
    stranger = stranger_for(ours)
    run(ours, {FIRST_STRANGER: stranger}, now=0.0)
    assert ours.state == "handshaking" and events(ours) == []
    assert ours.peer_source is None and ours.statistics().handshakes_failed == 1
    assert stranger.keys is None
    # Its further datagrams are dropped: no second signature for it.
    stranger_again = stranger_for(ours)
    send(stranger_again, ours, FIRST_STRANGER, 0.5)
    assert ours.addressed_packets_to_send(now=0.5) == []
    assert ours.statistics().dropped_refused == 1
    run(ours, {NATTED: peer}, now=1.0)
    assert isinstance(events(ours)[0], KeysReady) and ours.peer_source == NATTED


def test_the_sdp_address_failing_the_fingerprint_check_still_ends_the_call() -> None:
    # Its word is taken as its alert is ("Forged alerts"): at once, with the reason.
    ours, _ = ours_and_peer(we_serve=True)
    stranger = stranger_for(ours)
    ours.note_sdp_address(SDP_ADDRESS)
    run(ours, {SDP_ADDRESS: stranger}, now=0.0)
    (failed,) = events(ours)
    assert isinstance(failed, NegotiationFailed) and failed.reason == FINGERPRINT_MISMATCH_REASON


def test_at_most_a_few_handshakes_per_port_and_never_the_sdp_addresss_dropped() -> None:
    ours, peer = ours_and_peer(we_serve=True)
    ours.note_sdp_address(SDP_ADDRESS)
    send(peer, ours, SDP_ADDRESS, 0.0)  # the peer's ClientHello: answered
    answer = ours.addressed_packets_to_send(now=0.0)
    assert answer and {address for _, address in answer} == {SDP_ADDRESS}
    strangers = [("127.0.0.1", 52000 + n) for n in range(2 * MAX_HANDSHAKES_PER_PORT)]
    answered: set[Address] = set()
    for address in strangers:
        send_verified(stranger_for(ours), ours, address, 0.1)
        answered |= {address for _, address in ours.addressed_packets_to_send(now=0.1)}
    assert answered == set(strangers)  # each was answered while it had a handshake
    stats = ours.statistics()
    assert stats.handshakes_by_source == len(strangers)  # the peer's is the association
    # Three strangers' at a time beside the peer's: the oldest dropped for each newer one.
    assert stats.handshakes_dropped == len(strangers) - (MAX_HANDSHAKES_PER_PORT - 1)
    # The peer's handshake, first of all, was kept through the flood: it completes.
    for datagram, _ in answer:
        peer.receive_packet(datagram, now=0.2)
    run(ours, {SDP_ADDRESS: peer}, now=0.2)
    assert isinstance(events(ours)[0], KeysReady) and ours.peer_source == SDP_ADDRESS


def test_as_client_a_strangers_server_flight_gets_a_handshake_of_its_own() -> None:
    # We answered active (DTLS client): our ClientHello goes the usual way (the SDP address),
    # and the peer's answer from there takes the association. A stranger's forged server
    # flight from elsewhere, in the middle of it, gets a ClientHello of its own connection and
    # fails the fingerprint check there: the peer's handshake goes on and keys the leg (fed
    # to the one association, it ended the call, "DTLS fingerprint mismatch").
    ours, peer = ours_and_peer(we_serve=False)
    assert ours.dtls_role == "client"
    hello = ours.packets_to_send(now=0.0)
    stranger = stranger_for(ours)
    for datagram in hello:
        peer.receive_packet(datagram, now=0.0)
        stranger.receive_packet(datagram, now=0.0)
    send(peer, ours, SDP_ADDRESS, 0.1)  # the peer's flight: ours answers it, addressed
    to_peer = ours.addressed_packets_to_send(now=0.1)
    assert to_peer and {address for _, address in to_peer} == {SDP_ADDRESS}
    send(stranger, ours, FIRST_STRANGER, 0.1)
    own = ours.addressed_packets_to_send(now=0.1)
    assert own and {address for _, address in own} == {FIRST_STRANGER}
    stranger = stranger_for(ours)  # it answers that ClientHello, as any DTLS server would
    for datagram, _ in own:
        stranger.receive_packet(datagram, now=0.1)
    run(ours, {FIRST_STRANGER: stranger}, usual=(), now=0.2)
    assert ours.state == "handshaking" and events(ours) == []
    assert ours.statistics().handshakes_failed == 1
    for datagram, _ in to_peer:
        peer.receive_packet(datagram, now=0.3)
    run(ours, {SDP_ADDRESS: peer}, now=0.3)
    assert isinstance(events(ours)[0], KeysReady) and ours.peer_source == SDP_ADDRESS
    assert isinstance(events(peer)[0], KeysReady)


def test_nobody_proving_itself_still_ends_the_call_at_the_handshake_timeout() -> None:
    ours, _ = ours_and_peer(we_serve=True)
    stranger = stranger_for(ours)
    run(ours, {FIRST_STRANGER: stranger}, now=0.0)  # failed the fingerprint: its attempt only
    deadline = ours.get_timer()
    assert deadline is not None
    while (timer := ours.get_timer()) is not None and timer < 20.0:
        ours.handle_timer(now=timer)
        ours.packets_to_send(now=timer)
    ours.handle_timer(now=20.0)
    (failed,) = events(ours)
    # The stranger's certificate is named: operators looked for "DTLS fingerprint mismatch"
    # when a NAT'd phone's certificate did not match (before session 40 it ended the call).
    assert isinstance(failed, NegotiationFailed) and failed.reason == (
        f"{HANDSHAKE_TIMEOUT_REASON} ({FINGERPRINT_MISMATCH_REASON}: 1 source(s) other than the"
        " SDP address)"
    )


def test_without_sources_the_engine_is_as_before() -> None:
    # A host that gives no source (receive_packet, or source None) gets the one association.
    ours, peer = ours_and_peer(we_serve=True)
    for _ in range(20):
        for datagram in peer.packets_to_send(now=0.0):
            ours.receive_packet_from(datagram, source=None, now=0.0)
        for datagram in ours.packets_to_send(now=0.0):
            peer.receive_packet(datagram, now=0.0)
    assert ours.keys is not None and ours.peer_source is None
    assert ours.addressed_packets_to_send(now=0.0) == []


def test_each_sources_handshake_retransmits_on_the_engines_timer() -> None:
    # The peer's answer from its own handshake was lost: that handshake's timer resends it
    # to the peer alone (RFC 6347 §4.2.4.1), beside the stranger's.
    ours, peer = ours_and_peer(we_serve=True)
    stranger = stranger_for(ours)
    first = send_verified(stranger, ours, FIRST_STRANGER, 0.0)
    first += send_verified(peer, ours, NATTED, 0.0)
    first += ours.addressed_packets_to_send(now=0.0)
    assert {address for _, address in first} == {FIRST_STRANGER, NATTED}
    timer = ours.get_timer()
    assert timer == 1.0
    ours.handle_timer(now=timer)
    resent = ours.addressed_packets_to_send(now=timer)
    assert {address for _, address in resent} == {FIRST_STRANGER, NATTED}
    for datagram, address in resent:
        if address == NATTED:
            peer.receive_packet(datagram, now=timer)
    run(ours, {NATTED: peer}, now=timer)
    assert isinstance(events(ours)[0], KeysReady) and ours.peer_source == NATTED


def test_as_client_a_blind_strangers_handshake_record_does_not_take_our_clienthello() -> None:
    # We are the DTLS client and our ClientHello is on its way to the peer. A stranger who
    # never saw it sends one handshake record OpenSSL sets aside (epoch 1: not yet readable,
    # RFC 6347 §4.1). It answered nothing: the peer's answer, arriving next, must still be
    # the one that goes on with our ClientHello (bound to the stranger, the association left
    # the peer's answer to a handshake of its own, whose new ClientHello the peer took for a
    # resend of ours, and the call ended at the handshake timeout).
    ours, peer = ours_and_peer(we_serve=False)
    for datagram in ours.packets_to_send(now=0.0):
        peer.receive_packet(datagram, now=0.0)
    fragment = bytes([2]) + (10).to_bytes(3, "big") + bytes(2) + bytes(3) + (10).to_bytes(3, "big")
    body = fragment + bytes(10)
    record = bytes([22, 0xFE, 0xFD, 0, 1]) + bytes(6) + len(body).to_bytes(2, "big") + body
    ours.receive_packet_from(record, source=FIRST_STRANGER, now=0.05)
    assert ours.addressed_packets_to_send(now=0.05) == [] and events(ours) == []
    run(ours, {SDP_ADDRESS: peer}, now=0.1)
    assert isinstance(events(ours)[0], KeysReady) and ours.peer_source == SDP_ADDRESS
    assert isinstance(events(peer)[0], KeysReady)
    assert ours.statistics().handshakes_by_source == 0


def test_each_source_is_answered_at_its_whole_address_a_scope_id_included() -> None:
    # An IPv6 socket gives (host, port, flow info, scope id); a link-local peer (RFC 4007 §6)
    # is reached only with its scope id, so our answers and the latch take the address whole.
    # (Sources are compared by host and port.) Only ::1 here; the scope id is data.
    ours, peer = ours_and_peer(we_serve=True)
    stranger = stranger_for(ours)
    at_stranger = ("::1", 52000, 0, 7)
    at_peer = ("::1", 51000, 0, 7)
    send(stranger, ours, at_stranger, 0.0)
    send(peer, ours, at_peer, 0.0)
    answers = ours.addressed_packets_to_send(now=0.0)
    assert {address for _, address in answers} == {at_stranger, at_peer}
    for datagram, address in answers:
        if address == at_peer:
            peer.receive_packet(datagram, now=0.0)
    for _ in range(10):
        send(peer, ours, at_peer, 0.1)
        for datagram, address in ours.addressed_packets_to_send(now=0.1):
            assert address in (at_peer, at_stranger)
            if address == at_peer:
                peer.receive_packet(datagram, now=0.1)
    assert isinstance(events(ours)[0], KeysReady)
    assert ours.peer_source == at_peer


def test_the_sdp_addresss_handshake_beside_a_stranger_first_survives_a_flood() -> None:
    # A stranger's ClientHello reached the port first (it holds the association), then the
    # peer's from its SDP address (a handshake of its own), then a flood from many sources:
    # the oldest other sources' are dropped for the cap, never the SDP address's.
    ours, peer = ours_and_peer(we_serve=True)
    send_verified(stranger_for(ours), ours, FIRST_STRANGER, 0.0)
    ours.note_sdp_address(SDP_ADDRESS)
    send(peer, ours, SDP_ADDRESS, 0.0)
    answer = [d for d, address in ours.addressed_packets_to_send(now=0.0) if address == SDP_ADDRESS]
    assert answer
    flood = MAX_NEW_HANDSHAKES_BURST - 1  # the first stranger's took one
    for n in range(flood):
        send_verified(stranger_for(ours), ours, ("127.0.0.1", 53000 + n), 0.1)
        ours.addressed_packets_to_send(now=0.1)
    assert ours.statistics().handshakes_dropped == flood - 2
    for datagram in answer:
        peer.receive_packet(datagram, now=0.2)
    run(ours, {SDP_ADDRESS: peer}, now=0.2)
    assert isinstance(events(ours)[0], KeysReady) and ours.peer_source == SDP_ADDRESS


def test_a_flood_of_client_hellos_from_new_sources_costs_a_few_signatures_a_second() -> None:
    # Each new source's handshake costs a certificate signature: a flood of ClientHellos from
    # sources that return our cookie (they receive at their addresses: since session 41 a
    # spoofed one starts nothing, test_dtls_cookies.py) gets MAX_NEW_HANDSHAKES_BURST of them,
    # then one a second, however fast it comes; the SDP address's ClientHello is answered
    # through it and keys the leg.
    ours, peer = ours_and_peer(we_serve=True)
    flood = [("127.0.0.1", 53000 + n) for n in range(MAX_NEW_HANDSHAKES_BURST + 12)]
    answered: set[Address] = set()
    for address in flood:
        send_verified(stranger_for(ours), ours, address, 0.0)
        answered |= {address for _, address in ours.addressed_packets_to_send(now=0.0)}
    assert answered == set(flood[:MAX_NEW_HANDSHAKES_BURST])
    assert ours.statistics().dropped_rate == len(flood) - MAX_NEW_HANDSHAKES_BURST
    send_verified(stranger_for(ours), ours, ("127.0.0.1", 54000), 0.5)
    send_verified(stranger_for(ours), ours, ("127.0.0.1", 54001), 1.0)
    answered = {address for _, address in ours.addressed_packets_to_send(now=1.0)}
    assert ("127.0.0.1", 54000) not in answered and ("127.0.0.1", 54001) in answered
    ours.note_sdp_address(SDP_ADDRESS)
    run(ours, {SDP_ADDRESS: peer}, now=1.0)
    assert isinstance(events(ours)[0], KeysReady) and ours.peer_source == SDP_ADDRESS


def test_a_forged_server_flight_to_our_client_draws_a_bounded_clienthello_reflection() -> None:
    # Session 42, what docs/media_security.md states ("Forged handshakes"): as DTLS client
    # nothing asks a cookie, so a stranger's one server-flight record draws our ClientHello
    # to its (maybe spoofed) address, sent at once and resent until the handshake timeout:
    # 5 datagrams of 175 octets here, no more; new such sources are bounded per port by the
    # bucket (MAX_NEW_HANDSHAKES_BURST at once).
    ours, peer = ours_and_peer(we_serve=False)
    ours.note_sdp_address(SDP_ADDRESS)
    for datagram in ours.packets_to_send(now=0.0):
        peer.receive_packet(datagram, now=0.0)
    flight = peer.packets_to_send(now=0.0)
    for datagram in flight:
        ours.receive_packet_from(datagram, source=SDP_ADDRESS, now=0.0)
    ours.addressed_packets_to_send(now=0.0)
    first = flight[0][: 13 + int.from_bytes(flight[0][11:13], "big")]  # its ServerHello record
    sources = [("127.0.0.1", 30000 + n) for n in range(2 * MAX_NEW_HANDSHAKES_BURST)]
    for source in sources:
        ours.receive_packet_from(first, source=source, now=0.0)
    drawn: dict[Address, list[int]] = {}
    now = 0.0
    while now < 25.0:
        for datagram, to in ours.addressed_packets_to_send(now=now):
            if to != SDP_ADDRESS:
                drawn.setdefault(to, []).append(len(datagram))
        now += 0.25
        ours.handle_timer(now=now)
    assert len(drawn) <= MAX_NEW_HANDSHAKES_BURST
    assert max(len(sizes) for sizes in drawn.values()) <= 5
    assert max(max(sizes) for sizes in drawn.values()) < 200
    assert ours.statistics().dropped_rate == MAX_NEW_HANDSHAKES_BURST
