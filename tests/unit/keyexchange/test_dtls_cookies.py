"""The stateless cookie exchange (RFC 6347 §4.2.1) the ``dtls`` engine asks of sources other
than the peer's SDP address (docs/media_security.md, "Cookies for other sources"): their
ClientHello gets a HelloVerifyRequest and no handshake; one that returns our cookie gets one."""

from __future__ import annotations

import logging
import random
import re
from pathlib import Path

import pytest

from gateway.core.interfaces import KeysReady, NegotiationFailed
from gateway.plugins.keyexchange.dtls_cookies import (
    COOKIE_LENGTH,
    COOKIE_SECRET_LIFETIME,
    ClientHelloCookie,
    CookieSecrets,
    hello_verify_request,
    parse_client_hello_cookie_untrusted,
)
from gateway.plugins.keyexchange.dtls_srtp import (
    DEFAULT_HANDSHAKE_TIMEOUT,
    DROPPED_HELLO_LOG_HOSTS,
    MAX_NEW_HANDSHAKES_BURST,
    DroppedHelloLog,
    DtlsNegotiation,
)
from tests.fail2ban_regex import FAIL2BAN_HOST
from tests.unit.keyexchange.dtls_source_pairs import (
    FIRST_STRANGER,
    NATTED,
    PEER,
    SDP_ADDRESS,
    US,
    Address,
    events,
    exchange,
    ours_and_peer,
    run,
    send,
    stranger_for,
)

HELLO_VERIFY_REQUEST = 3  # RFC 6347 §4.3.2 HandshakeType
OUT_OF_SEQUENCE_REASON = (
    "DTLS handshake timed out (1 ClientHello(s) carried our valid DTLS cookie with a"
    " message_seq other than 1, RFC 6347 §4.2.2: a client asked twice, as one whose NAT gave"
    " it another public address between its ClientHellos is, or a sender that received our"
    " cookie and wrote its own ClientHello; such a handshake cannot be continued)"
)
"""Session 43: what is known, a cookie of ours valid for that host in a ClientHello of the wrong
message_seq; session 42's words blamed a NAT even for a sender that wrote it so itself."""


def client_hello(ours: DtlsNegotiation) -> bytes:
    """A first ClientHello (no cookie) to ``ours``, from a DTLS client of its own."""
    (hello,) = stranger_for(ours).packets_to_send(now=0.0)
    return hello


def with_cookie(hello: bytes, cookie: bytes) -> bytes:
    """``hello`` (no cookie) with ``cookie`` put in, lengths mended: what a forger writes."""
    at = 13 + 12 + 2 + 32
    at += 1 + hello[at]  # session_id
    assert hello[at] == 0
    message = hello[13 + 12 : at] + bytes([len(cookie)]) + cookie + hello[at + 1 :]
    length = len(message).to_bytes(3, "big")
    handshake = hello[13:14] + length + hello[17:19] + b"\0\0\0" + length + message
    return hello[:11] + len(handshake).to_bytes(2, "big") + handshake


def test_a_strangers_client_hello_gets_a_hello_verify_request_and_no_handshake() -> None:
    ours, _ = ours_and_peer(we_serve=True)
    hello = client_hello(ours)
    ours.receive_packet_from(hello, source=NATTED, now=0.0)
    ((request, to),) = ours.addressed_packets_to_send(now=0.0)
    assert to == NATTED and ours.packets_to_send(now=0.0) == []
    # RFC 6347 §4.2.1 and §4.3.2: 60 octets, no amplification (its ClientHello is ~200).
    assert len(request) == 60 and len(request) < len(hello)
    assert request[0] == 22 and request[1:3] == b"\xfe\xff"  # DTLS 1.0, as §4.2.1 advises
    assert request[5:11] == hello[5:11]  # the ClientHello's record sequence number
    assert request[13] == HELLO_VERIFY_REQUEST and request[17:19] == hello[17:19]
    assert request[25:27] == b"\xfe\xff" and request[27] == COOKIE_LENGTH
    stats = ours.statistics()
    assert stats.hello_verify_requests == 1
    # No handshake, no OpenSSL connection fed, no signature: nothing answers it but that.
    assert stats.handshakes_by_source == 0 and stats.datagrams_received == 0
    assert events(ours) == []


def test_the_client_hello_returning_our_cookie_starts_a_handshake_that_keys_the_leg() -> None:
    ours, peer = ours_and_peer(we_serve=True)
    send(peer, ours, NATTED, 0.0)
    ((request, _),) = ours.addressed_packets_to_send(now=0.0)
    peer.receive_packet(request, now=0.0)  # a real DTLS client (OpenSSL) answers it
    send(peer, ours, NATTED, 0.0)
    flight = ours.addressed_packets_to_send(now=0.0)
    assert flight and {to for _, to in flight} == {NATTED}
    assert flight[0][0][13] == 2  # our ServerHello: the handshake started
    for datagram, _ in flight:
        peer.receive_packet(datagram, now=0.0)
    run(ours, {NATTED: peer}, now=0.1)
    assert isinstance(events(ours)[0], KeysReady) and ours.peer_source == NATTED
    assert isinstance(events(peer)[0], KeysReady)
    assert ours.statistics().hello_verify_requests == 1


def returned_cookie(ours: DtlsNegotiation, source: Address, now: float) -> bytes:
    """A real DTLS client's (OpenSSL's) ClientHello from ``source`` answering our
    HelloVerifyRequest: message_seq 1, our cookie (RFC 6347 §4.2.1, §4.2.2)."""
    client = stranger_for(ours)
    send(client, ours, source, now)
    ((request, _),) = ours.addressed_packets_to_send(now=now)
    client.receive_packet(request, now=now)
    (hello,) = client.packets_to_send(now=now)
    assert hello[17:19] == b"\0\1" and len(hello) == len(client_hello(ours)) + COOKIE_LENGTH
    return hello


def cookie_of(hello: bytes) -> bytes:
    at = 13 + 12 + 2 + 32
    at += 1 + hello[at]
    return hello[at + 1 : at + 1 + hello[at]]


def test_the_sources_that_returned_our_cookie_are_named_until_one_proves_itself() -> None:
    # Session 43: the call's handshake task queues their datagrams first. A source only
    # asked (a spoofed ClientHello) is not named, nor the SDP address (never asked); once a
    # source's certificate matched, none is (the proven peer's are not counted anyway).
    ours, peer = ours_and_peer(we_serve=True)
    assert ours.verified_sources == ()
    ours.receive_packet_from(client_hello(ours), source=FIRST_STRANGER, now=0.0)
    ours.addressed_packets_to_send(now=0.0)  # its HelloVerifyRequest
    assert ours.verified_sources == ()
    other = ("127.0.0.1", NATTED[1] + 1)
    ours.receive_packet_from(returned_cookie(ours, other, 0.0), source=other, now=0.0)
    assert ours.verified_sources == (other,)
    ours.addressed_packets_to_send(now=0.0)
    run(ours, {NATTED: peer}, now=0.0)
    assert ours.peer_source == NATTED and ours.verified_sources == ()


def test_a_client_hello_returning_our_cookie_is_told_before_it_is_queued() -> None:
    # Session 43: the call's handshake task asks before it drops a datagram for a full queue.
    # Only our valid cookie for that host in message_seq 1 counts; nothing changes state.
    ours, peer = ours_and_peer(we_serve=True)
    hello = returned_cookie(ours, NATTED, 0.0)
    cookie = cookie_of(hello)
    flipped = hello.replace(cookie, cookie[:-1] + bytes([cookie[-1] ^ 1]))
    assert ours.returns_cookie_untrusted(hello, NATTED, now=0.1)
    assert ours.returns_cookie_untrusted(hello, ("127.0.0.1", 1), now=0.1)  # the host's
    assert not ours.returns_cookie_untrusted(hello, ("::1", NATTED[1]), now=0.1)
    assert not ours.returns_cookie_untrusted(flipped, NATTED, now=0.1)
    assert not ours.returns_cookie_untrusted(client_hello(ours), NATTED, now=0.1)
    forged = with_cookie(client_hello(ours), cookie)  # message_seq 0
    assert not ours.returns_cookie_untrusted(forged, NATTED, now=0.1)
    assert not ours.returns_cookie_untrusted(b"\x16" + bytes(30), NATTED, now=0.1)
    assert ours.statistics().bad_cookies == 0 and ours.addressed_packets_to_send(now=0.1) == []
    run(ours, {NATTED: peer}, now=0.2)
    assert ours.peer_source == NATTED
    assert not ours.returns_cookie_untrusted(hello, NATTED, now=0.3)  # proved: no need


def test_a_wrong_cookie_is_refused_with_a_new_hello_verify_request() -> None:
    ours, _ = ours_and_peer(we_serve=True)
    hello = returned_cookie(ours, NATTED, 0.0)
    cookie = cookie_of(hello)
    flipped = hello.replace(cookie, cookie[:-1] + bytes([cookie[-1] ^ 1]))
    # Our cookie from another host, one bit changed, and a short one: each refused.
    other = ("::1", NATTED[1])
    for forged, source in (
        (hello, other),
        (flipped, NATTED),
        (with_cookie(client_hello(ours), cookie[:16]), NATTED),
    ):
        ours.receive_packet_from(forged, source=source, now=0.1)
        ((again, to),) = ours.addressed_packets_to_send(now=0.1)
        assert to == source and again[13] == HELLO_VERIFY_REQUEST
        assert again[17:19] == forged[17:19]  # its message_seq echoed (errata 5186)
    stats = ours.statistics()
    assert stats.bad_cookies == 3 and stats.hello_verify_requests == 4
    assert stats.handshakes_by_source == 0 and stats.datagrams_received == 0
    # Our cookie in a first ClientHello (message_seq 0, a forger's): dropped, never fed.
    ours.receive_packet_from(with_cookie(client_hello(ours), cookie), source=NATTED, now=0.2)
    assert ours.addressed_packets_to_send(now=0.2) == []
    assert ours.statistics().datagrams_received == 0
    # The client's own, from the address it was made for, starts the handshake.
    ours.receive_packet_from(hello, source=NATTED, now=0.2)
    ((flight, _), *_) = ours.addressed_packets_to_send(now=0.2)
    assert flight[13] == 2


def test_a_dropped_client_hellos_source_is_in_the_operators_log_once_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Session 43 (docs/operations.md, dtls-client-hello-dropped): fail2ban and incident
    # response need the source, which the call's reason (sent to both parties) never names.
    # One line per host a minute, the drops meanwhile counted in its next; whether the
    # source proved it receives there is said (a forged address must not be banned blind).
    caplog.set_level(logging.WARNING, "gateway.plugins.keyexchange.dtls_srtp")
    ours, _ = ours_and_peer(we_serve=True)
    assert ours.packets_to_send(now=0.0) == []  # the handshake's clock starts
    hello = returned_cookie(ours, NATTED, 0.0)
    cookie = cookie_of(hello)
    flipped = hello.replace(cookie, cookie[:-1] + bytes([cookie[-1] ^ 1]))
    for now in (0.1, 0.2, 30.0):
        ours.receive_packet_from(flipped, source=NATTED, now=now)
    assert [r.getMessage() for r in caplog.records] == [
        "DTLS ClientHello from 127.0.0.1:51000 dropped (bad_cookie): 1 from 127.0.0.1 since"
        " its last such line; never proved to receive there: the address may be forged"
    ]
    caplog.clear()
    ours.addressed_packets_to_send(now=30.0)  # the new cookies sent to it
    forged = with_cookie(client_hello(ours), cookie_of(returned_cookie(ours, NATTED, 60.0)))
    ours.receive_packet_from(forged, source=("127.0.0.1", 51007), now=60.1)
    assert [r.getMessage() for r in caplog.records] == [
        "DTLS ClientHello from 127.0.0.1:51007 dropped (cookie_out_of_sequence): 3 from"
        " 127.0.0.1 since its last such line; it returned our cookie, so it receives at that"
        " host"
    ]
    assert all(r.levelname == "WARNING" for r in caplog.records)
    ours.handle_timer(now=DEFAULT_HANDSHAKE_TIMEOUT + 61.0)
    (failed,) = [e for e in events(ours) if isinstance(e, NegotiationFailed)]
    assert "127.0.0.1" not in failed.reason  # never in the reason both parties get


def test_an_unreadable_and_a_rate_limited_client_hello_are_in_the_operators_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Review of session 43: the two reasons no other test drove. An unreadable ClientHello's
    # source may be forged; one past the port's bucket (MAX_NEW_HANDSHAKES_BURST new
    # handshakes at once) returned our cookie first, so its host receives there.
    caplog.set_level(logging.WARNING, "gateway.plugins.keyexchange.dtls_srtp")
    ours, _ = ours_and_peer(we_serve=True)
    assert ours.packets_to_send(now=0.0) == []  # the handshake's clock starts
    ours.receive_packet_from(cut_short(client_hello(ours)), source=("::1", 5004), now=0.0)
    sources = [("127.0.0.1", 30000 + n) for n in range(MAX_NEW_HANDSHAKES_BURST + 1)]
    for source in sources:
        ours.receive_packet_from(returned_cookie(ours, source, 0.0), source=source, now=0.0)
        ours.addressed_packets_to_send(now=0.0)  # its handshake's first flight
    assert ours.statistics().dropped_rate == 1
    assert [r.getMessage() for r in caplog.records] == [
        "DTLS ClientHello from [::1]:5004 dropped (unreadable): 1 from [::1] since its last"
        " such line; never proved to receive there: the address may be forged",
        f"DTLS ClientHello from 127.0.0.1:{sources[-1][1]} dropped (rate_limited): 1 from"
        " 127.0.0.1 since its last such line; it returned our cookie, so it receives at that"
        " host",
    ]


def test_the_documented_ban_filter_takes_only_sources_that_returned_our_cookie(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Review of session 43: docs/operations.md's filter for dtls-client-hello-dropped, with
    # <HOST> as fail2ban 0.10+ expands it, takes the host of a line whose source returned our
    # cookie (IPv4, and IPv6 in brackets before its port), never of a line whose source may be
    # forged (a spoofed ClientHello must not get your trunk banned).
    page = (Path(__file__).parents[3] / "docs" / "operations.md").read_text()
    (documented,) = re.findall(r"a filter matching `([^`]+)`", page)
    failregex = re.compile(documented.replace("<HOST>", FAIL2BAN_HOST))
    caplog.set_level(logging.WARNING, "gateway.plugins.keyexchange.dtls_srtp")
    log = DroppedHelloLog()
    log.dropped(("127.0.0.1", 5004), "rate_limited", verified=True, now=0.0)
    log.dropped(("::1", 5006), "cookie_out_of_sequence", verified=True, now=0.0)
    proven = [failregex.search(r.getMessage()) for r in caplog.records]
    assert [m and (m.group("ip4") or m.group("ip6")) for m in proven] == ["127.0.0.1", "::1"]
    caplog.clear()
    log.dropped(("127.0.0.1", 5004), "bad_cookie", verified=False, now=61.0)
    log.dropped(("::1", 5006), "unreadable", verified=False, now=61.0)
    assert len(caplog.records) == 2
    assert not any(failregex.search(r.getMessage()) for r in caplog.records)


def test_the_dropped_client_hello_log_is_bounded_by_hosts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A flood from ever new (forged) hosts writes at most DROPPED_HELLO_LOG_HOSTS lines a
    # window, remembers no more, and then says how many hosts went unlogged.
    caplog.set_level(logging.WARNING, "gateway.plugins.keyexchange.dtls_srtp")
    log = DroppedHelloLog()
    for n in range(DROPPED_HELLO_LOG_HOSTS + 10):
        log.dropped((f"10.0.{n >> 8}.{n & 255}", 5004), "bad_cookie", verified=False, now=1.0)
    assert len(caplog.records) == DROPPED_HELLO_LOG_HOSTS
    assert len(log._hosts) == DROPPED_HELLO_LOG_HOSTS
    caplog.clear()
    log.dropped(("192.0.2.1", 5004), "unreadable", verified=False, now=1.0 + 61.0)
    assert [r.getMessage() for r in caplog.records] == [
        "DTLS ClientHellos dropped from 10 more host(s) in the last 61 s were not logged (at"
        f" most {DROPPED_HELLO_LOG_HOSTS} hosts a window)",
        "DTLS ClientHello from 192.0.2.1:5004 dropped (unreadable): 1 from 192.0.2.1 since"
        " its last such line; never proved to receive there: the address may be forged",
    ]
    assert len(log._hosts) == 1
    # IPv6 in brackets (docs/operations.md's <address> and <source>).
    caplog.clear()
    log.dropped(("2001:db8::5", 5004), "bad_cookie", verified=False, now=70.0)
    assert (
        caplog.records[0]
        .getMessage()
        .startswith(
            "DTLS ClientHello from [2001:db8::5]:5004 dropped (bad_cookie): 1 from [2001:db8::5] "
        )
    )


def test_a_cookie_of_the_previous_secret_is_taken_an_older_one_refused() -> None:
    ours, _ = ours_and_peer(we_serve=True)
    late = ("127.0.0.1", NATTED[1] + 1)
    in_time = returned_cookie(ours, NATTED, 1.0)
    too_late = returned_cookie(ours, late, 1.0)
    # In the next period its secret is the previous one: taken.
    ours.receive_packet_from(in_time, source=NATTED, now=1.0 + COOKIE_SECRET_LIFETIME)
    ((flight, to), *_) = ours.addressed_packets_to_send(now=1.0 + COOKIE_SECRET_LIFETIME)
    assert flight[13] == 2 and to == NATTED and ours.statistics().bad_cookies == 0
    # Two periods on, its secret is two secrets old: refused, a new cookie sent.
    ours.receive_packet_from(too_late, source=late, now=1.0 + 2 * COOKIE_SECRET_LIFETIME)
    answers = ours.addressed_packets_to_send(now=1.0 + 2 * COOKIE_SECRET_LIFETIME)
    assert [(d[13], to) for d, to in answers if to == late] == [(HELLO_VERIFY_REQUEST, late)]
    assert ours.statistics().bad_cookies == 1


def test_a_client_whose_nat_moved_it_to_another_port_between_its_client_hellos_is_keyed() -> None:
    # Its ClientHello with our cookie comes from another port of the same host than the one
    # it was asked at (a NAT binding that changed, RFC 4787 "paired" pooling keeps the host):
    # the cookie covers the host (RFC 6347 §4.2.1's example: HMAC(Secret, Client-IP, ...)),
    # so it starts the handshake at the new port, which keys the leg. Before session 42 it
    # was asked again, sent message_seq 2, which OpenSSL's DTLSv1_listen does not take (0 or
    # 1 only), and the leg timed out with a bare "DTLS handshake timed out".
    ours, peer = ours_and_peer(we_serve=True)
    send(peer, ours, NATTED, 0.0)
    ((request, _),) = ours.addressed_packets_to_send(now=0.0)
    peer.receive_packet(request, now=0.0)
    moved = ("127.0.0.1", NATTED[1] + 7)
    run(ours, {moved: peer}, now=0.0)
    assert isinstance(events(ours)[0], KeysReady) and ours.peer_source == moved
    assert isinstance(events(peer)[0], KeysReady)
    stats = ours.statistics()
    assert (stats.bad_cookies, stats.hello_verify_requests, stats.dropped_malformed) == (0, 1, 0)


def test_a_client_whose_nat_moved_it_to_another_host_is_not_keyed_and_the_reason_says_so() -> None:
    # Another host (here ::1 after 127.0.0.1): asked again (message_seq 1 echoed), the
    # client sends message_seq 2, which DTLSv1_listen does not take: dropped
    # (cookie_out_of_sequence), never fed to OpenSSL; the leg is keyed from its SDP address,
    # or times out with a reason that says what happened (before: a bare "DTLS handshake
    # timed out").
    ours, _ = ours_and_peer(we_serve=True)
    assert ours.packets_to_send(now=0.0) == []  # the handshake's clock starts
    client = stranger_for(ours)
    send(client, ours, NATTED, 0.0)
    ((request, _),) = ours.addressed_packets_to_send(now=0.0)
    client.receive_packet(request, now=0.0)
    moved = ("::1", NATTED[1])
    send(client, ours, moved, 0.0)
    ((again, to),) = ours.addressed_packets_to_send(now=0.0)
    assert to == moved and again[13] == HELLO_VERIFY_REQUEST and again[17:19] == b"\0\1"
    client.receive_packet(again, now=0.0)
    (third,) = client.packets_to_send(now=0.0)
    assert third[17:19] == b"\0\2"
    ours.receive_packet_from(third, source=moved, now=0.0)
    assert ours.addressed_packets_to_send(now=0.0) == []
    stats = ours.statistics()
    assert (stats.bad_cookies, stats.hello_verify_requests) == (1, 2)
    assert stats.dropped_cookie_out_of_sequence == 1 and stats.dropped_malformed == 1
    assert stats.datagrams_received == 0 and stats.handshakes_by_source == 0
    ours.handle_timer(now=DEFAULT_HANDSHAKE_TIMEOUT + 1.0)
    (failed,) = events(ours)
    assert isinstance(failed, NegotiationFailed)
    assert failed.reason == OUT_OF_SEQUENCE_REASON
    assert "::1" not in failed.reason and "127.0.0.1" not in failed.reason


def test_a_forgers_valid_cookie_out_of_sequence_is_not_blamed_on_a_nat() -> None:
    # Session 43: a sender that received our cookie at its host writes a ClientHello of
    # message_seq 0 with it (no client's sequence): dropped as before, and the timeout's
    # reason says what is known, not "a NAT that gave the phone another public address".
    ours, _ = ours_and_peer(we_serve=True)
    assert ours.packets_to_send(now=0.0) == []  # the handshake's clock starts
    cookie = cookie_of(returned_cookie(ours, NATTED, 0.0))
    forged = with_cookie(client_hello(ours), cookie)
    assert forged[17:19] == b"\0\0"
    ours.receive_packet_from(forged, source=NATTED, now=0.1)
    assert ours.addressed_packets_to_send(now=0.1) == []
    assert ours.statistics().dropped_cookie_out_of_sequence == 1
    ours.handle_timer(now=DEFAULT_HANDSHAKE_TIMEOUT + 1.0)
    (failed,) = events(ours)
    assert isinstance(failed, NegotiationFailed) and failed.reason == OUT_OF_SEQUENCE_REASON
    assert "or a sender that received our cookie" in failed.reason


def test_a_timeout_after_cookies_nobody_returned_says_so() -> None:
    # Sources other than the SDP address asked for a cookie and none came back (a NAT'd
    # phone whose answers are lost, or only spoofed ClientHellos), nobody keyed: the reason
    # says that much; a timeout without any such ClientHello stays the bare words.
    ours, _ = ours_and_peer(we_serve=True)
    assert ours.packets_to_send(now=0.0) == []  # the handshake's clock starts
    for port in (NATTED[1], NATTED[1] + 1):
        ours.receive_packet_from(client_hello(ours), source=("127.0.0.1", port), now=0.0)
    ours.handle_timer(now=DEFAULT_HANDSHAKE_TIMEOUT + 1.0)
    (failed,) = events(ours)
    assert isinstance(failed, NegotiationFailed)
    assert failed.reason == (
        "DTLS handshake timed out (2 ClientHello(s) from sources other than the SDP address"
        " were answered with a DTLS cookie, RFC 6347 §4.2.1, and none returned it)"
    )
    quiet, _ = ours_and_peer(we_serve=True)
    quiet.packets_to_send(now=0.0)
    quiet.handle_timer(now=DEFAULT_HANDSHAKE_TIMEOUT + 1.0)
    (failed,) = events(quiet)
    assert isinstance(failed, NegotiationFailed) and failed.reason == "DTLS handshake timed out"


def test_the_sdp_address_is_never_asked_for_a_cookie() -> None:
    ours, peer = ours_and_peer(we_serve=True)
    ours.note_sdp_address(SDP_ADDRESS)
    send(peer, ours, SDP_ADDRESS, 0.0)
    flight = ours.addressed_packets_to_send(now=0.0)
    assert flight and flight[0][0][13] == 2  # our ServerHello to its first ClientHello
    for datagram, _ in flight:
        peer.receive_packet(datagram, now=0.0)
    run(ours, {SDP_ADDRESS: peer}, now=0.0)
    assert isinstance(events(ours)[0], KeysReady) and ours.peer_source == SDP_ADDRESS
    assert ours.statistics().hello_verify_requests == 0


def test_a_spoofed_flood_does_not_keep_a_cookie_returning_natted_phone_out() -> None:
    # Ever new spoofed sources, more than the bucket holds, as fast as they come: each gets
    # 60 octets and nothing else, and the phone behind a NAT, which receives our cookie,
    # starts its handshake after them and keys the leg (session 40: the flood took the
    # bucket, and the phone's ClientHello was dropped, dropped_rate).
    ours, peer = ours_and_peer(we_serve=True)
    hello = client_hello(ours)
    flood = [("127.0.0.1", 20000 + n) for n in range(20 * MAX_NEW_HANDSHAKES_BURST)]
    octets = 0
    for source in flood:
        ours.receive_packet_from(hello, source=source, now=0.0)
        octets += sum(len(d) for d, _ in ours.addressed_packets_to_send(now=0.0))
    assert octets == 60 * len(flood)
    run(ours, {NATTED: peer}, now=0.0)
    assert isinstance(events(ours)[0], KeysReady) and ours.peer_source == NATTED
    stats = ours.statistics()
    assert stats.dropped_rate == 0 and stats.hello_verify_requests == len(flood) + 1
    assert stats.handshakes_by_source == 0  # the phone's is the association


def test_the_engines_counters_sum_every_port() -> None:
    ours, _ = ours_and_peer(we_serve=True)
    exchange = ours._settings  # the key exchange's shared totals
    hello = client_hello(ours)
    for port in range(3):
        ours.receive_packet_from(hello, source=("127.0.0.1", 30000 + port), now=0.0)
    ours.receive_packet_from(with_cookie(hello, bytes(32)), source=NATTED, now=0.0)
    assert exchange.totals is not None
    assert (exchange.totals.hello_verify_requests, exchange.totals.bad_cookies) == (4, 1)


def test_hello_verify_request_known_answer() -> None:
    # OpenSSL 4.0's own HelloVerifyRequest to a first ClientHello (record sequence 0,
    # message_seq 0), its cookie callback giving 32 octets of "C": byte for byte the same.
    openssl = bytes.fromhex("16feff0000000000000000002f030000230000000000000023feff20" + "43" * 32)
    assert hello_verify_request(ClientHelloCookie(bytes(6), 0, b""), b"C" * 32) == openssl


def test_the_client_hello_parser_takes_junk_without_raising() -> None:
    ours, _ = ours_and_peer(we_serve=True)
    hello = client_hello(ours)
    parsed = parse_client_hello_cookie_untrusted(hello)
    assert parsed is not None and parsed.cookie == b"" and parsed.message_seq == 0
    assert parse_client_hello_cookie_untrusted(with_cookie(hello, b"x" * 255)) == (
        ClientHelloCookie(hello[5:11], 0, b"x" * 255)
    )
    # The first record read: another after it (the rest of a fragmented one) is not.
    assert parse_client_hello_cookie_untrusted(hello + hello) == parsed
    first, rest = fragments(hello)
    assert parse_client_hello_cookie_untrusted(first) == parsed
    assert parse_client_hello_cookie_untrusted(rest) is None  # no cookie in a later fragment
    rng = random.Random(41)
    for _ in range(3000):
        cut = hello[: rng.randrange(len(hello))]
        mutated = bytearray(hello)
        for _ in range(rng.randrange(1, 4)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        for junk in (cut, bytes(mutated), rng.randbytes(rng.randrange(90))):
            result = parse_client_hello_cookie_untrusted(junk)
            assert result is None or len(result.cookie) <= 255
            # Fed to the engine from a stranger: a HelloVerifyRequest or nothing; never
            # OpenSSL's ServerHello or alert (no handshake starts without our cookie).
            ours.receive_packet_from(junk, source=NATTED, now=0.0)
            for datagram, _ in ours.addressed_packets_to_send(now=0.0):
                assert len(datagram) == 60
    assert all(not isinstance(event, KeysReady) for event in events(ours))


def fragments(hello: bytes) -> tuple[bytes, bytes]:
    """``hello`` (one record, one whole ClientHello) as two fragments (RFC 6347 §4.2.3), each
    a record of its own, the second with the next record sequence number."""
    message = hello[13 + 12 :]
    half = len(message) // 2

    def record(sequence: int, offset: int, part: bytes) -> bytes:
        handshake = hello[13:19] + offset.to_bytes(3, "big") + len(part).to_bytes(3, "big") + part
        return (
            hello[:5] + sequence.to_bytes(6, "big") + len(handshake).to_bytes(2, "big") + handshake
        )

    sequence = int.from_bytes(hello[5:11], "big")
    return record(sequence, 0, message[:half]), record(sequence + 1, half, message[half:])


def test_a_client_hello_in_fragments_is_asked_for_a_cookie_too() -> None:
    # A forger's ClientHello cut in two fragments, both in one datagram: before, a fragmented
    # ClientHello skipped the cookie, so fragmenting was enough to draw our certificate
    # flight (a signature, ~720 octets resent) to any spoofed address.
    ours, _ = ours_and_peer(we_serve=True)
    hello = client_hello(ours)
    first, rest = fragments(hello)
    for port in range(53000, 53005):
        ours.receive_packet_from(first + rest, source=("127.0.0.1", port), now=0.0)
        ours.receive_packet_from(rest, source=("127.0.0.1", port + 100), now=0.0)
    sent = ours.addressed_packets_to_send(now=0.0)
    assert [len(datagram) for datagram, _ in sent] == [60] * 5
    assert {source[1] for _, source in sent} == set(range(53000, 53005))
    stats = ours.statistics()
    assert stats.handshakes_by_source == 0 and stats.hello_verify_requests == 5
    assert stats.dropped_malformed == 5  # the later fragments alone: no cookie to check


def test_the_client_hello_returning_our_cookie_in_fragments_starts_a_handshake() -> None:
    # The first fragment carries our cookie and goes through DTLSv1_listen, which takes a
    # first fragment; the handshake it starts takes the rest and answers the whole message.
    ours, peer = ours_and_peer(we_serve=True)
    send(peer, ours, NATTED, 0.0)
    ((request, _),) = ours.addressed_packets_to_send(now=0.0)
    peer.receive_packet(request, now=0.0)
    (hello,) = peer.packets_to_send(now=0.0)
    first, rest = fragments(hello)
    ours.receive_packet_from(first, source=NATTED, now=0.0)
    assert ours.addressed_packets_to_send(now=0.0) == []  # half a ClientHello: nothing yet
    ours.receive_packet_from(rest, source=NATTED, now=0.0)
    flight = ours.addressed_packets_to_send(now=0.0)
    assert flight and flight[0][0][13] == 2 and {to for _, to in flight} == {NATTED}
    assert ours.statistics().hello_verify_requests == 1


def test_a_resent_client_hellos_record_sequence_number_is_echoed() -> None:
    # RFC 6347 §4.2.1: the HelloVerifyRequest takes the ClientHello's record sequence number
    # (a client's resent ClientHello has a new one), so that several never repeat one.
    ours, _ = ours_and_peer(we_serve=True)
    hello = client_hello(ours)
    resent = hello[:5] + (7).to_bytes(6, "big") + hello[11:]
    ours.receive_packet_from(resent, source=NATTED, now=0.0)
    ((request, _),) = ours.addressed_packets_to_send(now=0.0)
    assert request[5:11] == (7).to_bytes(6, "big")


def test_cookie_secrets_rotate_by_period_and_accept_the_previous() -> None:
    draws = iter(bytes([n]) * 32 for n in range(1, 100))
    secrets = CookieSecrets(lambda n: next(draws), lifetime=10.0)
    source: Address = ("::1", 5004)
    port = {"context": b"tls-id-of-the-stream|rtp"}
    first = secrets.cookie(source, 1.0, **port)
    assert len(first) == COOKIE_LENGTH and secrets.cookie(source, 9.9, **port) == first
    assert secrets.verifies(source, first, 9.9, **port)
    assert not secrets.verifies(("127.0.0.1", 5004), first, 9.9, **port)  # another host
    assert secrets.verifies(("::1", 5005), first, 9.9, **port)  # the host's other port
    assert not secrets.verifies(source, first, 9.9, context=b"tls-id-of-the-stream|rtcp")
    second = secrets.cookie(source, 10.0, **port)  # a new period: a new secret
    assert second != first and secrets.verifies(source, first, 19.9, **port)
    assert not secrets.verifies(source, first, 20.0, **port)  # two secrets old
    assert secrets.verifies(source, secrets.cookie(source, 55.0, **port), 55.0, **port)
    assert not secrets.verifies(source, second, 55.0, **port)  # the period between had none
    assert "01" * 4 not in repr(secrets)


def test_a_cookie_asked_on_one_port_starts_nothing_on_another() -> None:
    # One gateway (one exchange, one secret), two streams' ports and the first stream's
    # separate RTCP port (no rtcp-mux, RFC 5764 §4.1): the client's ClientHello with the
    # cookie the first port gave it, sent from the same address to the others, is answered
    # with a new cookie there and starts no handshake (session 41: one cookie was good on
    # every port for 60 to 120 s). On its own port it starts one.
    ours_exchange, peers_exchange = exchange(US), exchange(PEER)
    ports = []
    for _ in range(2):
        offer = ours_exchange.offer(suites=[], secure_signalling=True)
        answer = peers_exchange.answer(
            offer.local_sdp_attributes(), suites=[], secure_signalling=True
        )
        assert answer is not None
        offer.remote_sdp_attributes(answer.local_sdp_attributes())
        ports.append(offer)
    first, second = ports
    rtcp = first.rtcp_component()
    assert rtcp is not None and first.dtls_role == "server"
    hello = returned_cookie(first, NATTED, 0.0)
    for other in (second, rtcp):
        other.receive_packet_from(hello, source=NATTED, now=0.0)
        ((again, to),) = other.addressed_packets_to_send(now=0.0)
        assert to == NATTED and again[13] == HELLO_VERIFY_REQUEST
        stats = other.statistics()
        assert stats.bad_cookies == 1 and stats.datagrams_received == 0
        assert stats.handshakes_by_source == 0
    first.receive_packet_from(hello, source=NATTED, now=0.0)
    ((flight, _), *_) = first.addressed_packets_to_send(now=0.0)
    assert flight[13] == 2  # our ServerHello


def test_client_hellos_dropped_unanswered_are_counted_by_reason() -> None:
    # Session 42: each cause its own counter (the engine's statistics and the exchange's
    # totals, voipgw_dtls_client_hellos_dropped_total{reason}); dropped_malformed stays their
    # sum with the rest (before, these three were only in it).
    ours, _ = ours_and_peer(we_serve=True)
    hello = client_hello(ours)
    _, rest = fragments(hello)
    ours.receive_packet_from(rest, source=NATTED, now=0.0)  # a later fragment, alone
    ours.receive_packet_from(cut_short(hello), source=NATTED, now=0.0)  # no cookie in it
    cookie = cookie_of(returned_cookie(ours, NATTED, 0.0))
    # Our valid cookie with message_seq 2 (a client asked twice, or a forger's).
    third = with_cookie(hello, cookie)
    third = third[:17] + b"\0\2" + third[19:]
    ours.receive_packet_from(third, source=NATTED, now=0.0)
    assert [d[13] for d, _ in ours.addressed_packets_to_send(now=0.0)] == []
    stats = ours.statistics()
    assert (
        stats.dropped_later_fragment,
        stats.dropped_unreadable_hello,
        stats.dropped_cookie_out_of_sequence,
        stats.dropped_malformed,
    ) == (1, 1, 1, 3)
    totals = ours._settings.totals
    assert totals is not None
    assert (totals.later_fragments, totals.unreadable_hellos, totals.cookies_out_of_sequence) == (
        1,
        1,
        1,
    )


def cut_short(hello: bytes) -> bytes:
    """``hello`` ending after its random, its record and handshake lengths mended: well-formed
    records, a ClientHello that ends before its session_id and cookie."""
    body = hello[13 + 12 : 13 + 12 + 2 + 32]
    length = len(body).to_bytes(3, "big")
    handshake = hello[13:14] + length + hello[17:19] + b"\0\0\0" + length + body
    return hello[:11] + len(handshake).to_bytes(2, "big") + handshake
