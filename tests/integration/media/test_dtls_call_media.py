"""A DTLS-SRTP leg bridged to a plain RTP leg on real 127.0.0.1 sockets (issue #6): the leg's
security, the media session, the relay, the call's handshake task and its keying, against an
in-process DTLS phone built from the same engine. Media flows after the handshake and nothing
before; a wrong fingerprint fails with the stated reason and no media (ports of this process,
tests/port_blocks.py)."""

from __future__ import annotations

import datetime
import math

import attrs
import trio

from gateway.core.config import PortRange
from gateway.core.interfaces import KeysReady, NegotiationFailed, SrtpKeys
from gateway.core.media.handshakes import CallHandshakes
from gateway.core.media.keying import CallKeying
from gateway.core.media.policy import BUILTIN_POLICIES
from gateway.core.media.relay import MediaRelay
from gateway.core.media.security import LegSecurity
from gateway.core.media.session import MediaSession
from gateway.core.media.srtp import SrtpSession
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.plugins.keyexchange.dtls_certificates import generate_identity
from gateway.plugins.keyexchange.dtls_srtp import (
    FINGERPRINT_MISMATCH_REASON,
    DtlsKeyExchange,
    DtlsNegotiation,
)
from tests.integration.media.phone_sockets import (
    ADDRESS,
    empty_receiver_report,
    receive,
    rtp,
    udp_socket,
    until,
)
from tests.integration.media.relay_fixtures import relay_fixture
from tests.port_blocks import ModuleBlock

RELAY_PORTS = ModuleBlock(100, parse=PortRange.parse)
A_PHONE = ModuleBlock(10)
B_PHONE = ModuleBlock(10)
NOW = datetime.datetime.now(datetime.UTC)
GATEWAY_ID = generate_identity(now=NOW, max_age=datetime.timedelta(days=30))
PHONE_ID = generate_identity(now=NOW, max_age=datetime.timedelta(days=30))
OTHER_ID = generate_identity(now=NOW, max_age=datetime.timedelta(days=30))


def exchange(identity: object) -> DtlsKeyExchange:
    return DtlsKeyExchange(identity=lambda: identity, random_bytes=lambda n: b"\x05" * n)  # type: ignore[arg-type,return-value]


def dtls_offer(
    negotiation: DtlsNegotiation,
    *,
    fingerprint: str | None = None,
    rtcp_mux: bool = True,
    setup: str | None = None,
) -> bytes:
    """The phone's offer: a=fingerprint at session level (RFC 8122 §5 allows it), the rest in
    the m= section; ``fingerprint`` replaces the true one, ``setup`` the phone's actpass."""
    ours = dict(negotiation.local_sdp_attributes())
    mux = "a=rtcp-mux\r\n" if rtcp_mux else ""
    return (
        f"v=0\r\no=- 1 1 IN IP4 {ADDRESS}\r\ns=-\r\nc=IN IP4 {ADDRESS}\r\nt=0 0\r\n"
        f"a=fingerprint:{fingerprint or ours['fingerprint']}\r\n"
        f"m=audio {A_PHONE.first()} UDP/TLS/RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\n{mux}"
        f"a=setup:{setup or ours['setup']}\r\na=tls-id:{ours['tls-id']}\r\n"
    ).encode()


def rtp_answer(*, rtcp_mux: bool = True) -> bytes:
    mux = "a=rtcp-mux\r\n" if rtcp_mux else ""
    return (
        f"v=0\r\no=- 2 1 IN IP4 {ADDRESS}\r\ns=-\r\nc=IN IP4 {ADDRESS}\r\nt=0 0\r\n"
        f"m=audio {B_PHONE.first()} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n{mux}"
    ).encode()


relay = relay_fixture(RELAY_PORTS)


@attrs.define
class Call:
    """The pieces of a call the B2BUA wires together, with its handshake task's callbacks."""

    session: MediaSession
    a: LegSecurity
    b: LegSecurity
    keying: CallKeying
    a_port: int
    b_port: int
    failures: list[str] = attrs.Factory(list)
    keyed: trio.Event = attrs.Factory(trio.Event)
    failed: trio.Event = attrs.Factory(trio.Event)

    def handshakes(self) -> CallHandshakes:
        def on_keys() -> None:
            self.keying.apply(self.a, self.b)
            self.keyed.set()

        def on_failure(side: str, reason: str) -> None:
            self.keying.block_all()
            self.failures.append(f"{side}: {reason}")
            self.failed.set()

        return CallHandshakes(
            self.session, lambda: {"a": self.a, "b": self.b}, on_keys=on_keys, on_failure=on_failure
        )


def set_up(
    relay: MediaRelay,
    phone: DtlsNegotiation,
    offer: bytes,
    *,
    rtcp_mux: bool = True,
    our_setup: str = "active",
) -> Call:
    session = MediaSession(relay, media_address=ADDRESS)
    a = LegSecurity(
        side="a",
        policy=BUILTIN_POLICIES["dtls"],
        secure_signalling=False,
        key_exchanges={"dtls": exchange(GATEWAY_ID)},
        signalling="udp",
    )
    b = LegSecurity(
        side="b",
        policy=BUILTIN_POLICIES["rtp-only"],
        secure_signalling=False,
        key_exchanges={},
        signalling="udp",
    )
    plain = a.take_offer(parse_sdp_untrusted(offer))
    # The session (and leg B) never see the DTLS profile nor A's fingerprint, setup, tls-id.
    assert plain.media[0].proto == "RTP/AVP"
    assert not plain.attributes.has("fingerprint")
    assert not any(plain.media[0].attributes.has(n) for n in ("fingerprint", "setup", "tls-id"))
    offer_b = b.make_offer(session.offer_from("a", plain))
    assert offer_b.media[0].proto == "RTP/AVP"
    answer_a = a.make_answer(
        session.answer_from("b", b.take_answer(parse_sdp_untrusted(rtp_answer(rtcp_mux=rtcp_mux))))
    )
    session.settle()
    media = answer_a.media[0]
    assert media.proto == "UDP/TLS/RTP/SAVP"
    assert media.attributes.get("setup") == our_setup  # actpass: we answer as the client
    phone.remote_sdp_attributes([(x[0], x[1]) for x in media.attributes])
    keying = CallKeying(session)
    keying.apply(a, b)
    return Call(session, a, b, keying, media.port, offer_b.media[0].port)


@attrs.define
class Phone:
    """The DTLS phone's media loop on its real socket: DTLS into its engine, RTP recorded."""

    negotiation: DtlsNegotiation
    sock: trio.socket.SocketType
    gateway: tuple[str, int]
    keys: SrtpKeys | None = None
    failure: str | None = None
    rtp_received: list[bytes] = attrs.Factory(list)
    first_dtls: trio.Event = attrs.Factory(trio.Event)
    first_rtp: trio.Event = attrs.Factory(trio.Event)
    proceed: trio.Event | None = None
    """If set: after the first DTLS datagram the phone waits for it before answering, so a test
    can act mid-handshake without racing the handshake."""

    async def run(self) -> None:
        while True:
            now = trio.current_time()
            for datagram in self.negotiation.packets_to_send(now=now):
                await self.sock.sendto(datagram, self.gateway)
            while (event := self.negotiation.next_event()) is not None:
                if isinstance(event, KeysReady):
                    self.keys = event.keys
                elif isinstance(event, NegotiationFailed):
                    self.failure = event.reason
            timer = self.negotiation.get_timer()
            with trio.move_on_at(math.inf if timer is None else timer):
                data, _ = await self.sock.recvfrom(2048)
                if data and self.negotiation.claims_packet(data[0], data):
                    self.first_dtls.set()
                    if self.proceed is not None:
                        await self.proceed.wait()
                    self.negotiation.receive_packet(data, now=trio.current_time())
                else:
                    self.rtp_received.append(data)
                    self.first_rtp.set()
                continue
            self.negotiation.handle_timer(now=trio.current_time())


async def test_dtls_leg_relays_media_after_the_handshake_and_nothing_before(
    relay: MediaRelay,
) -> None:
    phone_negotiation = exchange(PHONE_ID).offer(suites=[], secure_signalling=False)
    call = set_up(relay, phone_negotiation, dtls_offer(phone_negotiation))
    a_sock, b_sock = udp_socket(), udp_socket()
    with a_sock, b_sock:
        await a_sock.bind((ADDRESS, A_PHONE.first()))
        await b_sock.bind((ADDRESS, B_PHONE.first()))
        phone = Phone(phone_negotiation, a_sock, (ADDRESS, call.a_port), proceed=trio.Event())
        async with trio.open_nursery() as nursery:
            # Before any handshake: B's RTP reaches nobody, A's RTP neither (waiting for the
            # relay to count both drops, not a fixed time, so a loaded machine cannot reorder).
            stream = call.session.streams[0]
            await b_sock.sendto(rtp(1), (ADDRESS, call.b_port))
            await a_sock.sendto(rtp(1), (ADDRESS, call.a_port))
            await until(lambda: stream.b_to_a.statistics().dropped_blocked == 1)
            await until(lambda: stream.a_to_b.statistics().dropped_blocked == 1)
            assert await receive(b_sock, 0.1) is None
            assert call.a.expects_srtp(0) and call.a.keys(0) is None

            handshakes = call.handshakes()
            nursery.start_soon(handshakes.run)
            nursery.start_soon(phone.run)
            # Mid-handshake (the gateway's ClientHello reached the phone, which holds its answer
            # until the relay has dealt with rtp(2)): still nothing.
            with trio.fail_after(5):
                await phone.first_dtls.wait()
            await b_sock.sendto(rtp(2), (ADDRESS, call.b_port))
            await until(lambda: stream.b_to_a.statistics().dropped_blocked == 2)
            assert phone.proceed is not None
            phone.proceed.set()
            with trio.fail_after(10):
                await call.keyed.wait()
            assert phone.keys is not None and phone.failure is None
            assert phone.rtp_received == []  # rtp(2) was not relayed: no keys then

            # Keys agreed: B's RTP reaches A as SRTP under the phone's keys, and back.
            phone_srtp = SrtpSession(phone.keys)
            await b_sock.sendto(rtp(3), (ADDRESS, call.b_port))
            with trio.fail_after(5):
                await phone.first_rtp.wait()
            protected = phone.rtp_received[0]
            assert protected != rtp(3)
            assert phone_srtp.unprotect_rtp(protected) == rtp(3)
            sent = phone_srtp.protect_rtp(rtp(4))
            assert sent is not None
            await a_sock.sendto(sent, (ADDRESS, call.a_port))
            with trio.fail_after(5):
                plain, _ = await b_sock.recvfrom(2048)
            assert plain == rtp(4)
            # A STUN or ZRTP datagram (RFC 7983: 0..3, 16..19) is not DTLS's: counted, not
            # relayed, not fed to the DTLS engine.
            await a_sock.sendto(b"\x10" + bytes(20), (ADDRESS, call.a_port))
            await a_sock.sendto(b"\x00\x01" + bytes(18), (ADDRESS, call.a_port))
            with trio.fail_after(5):
                while handshakes.unclaimed < 2:
                    await trio.sleep(0.01)
            assert await receive(b_sock, 0.1) is None
            assert call.a.media_path_streams()[0].negotiation.state == "established"  # type: ignore[union-attr]

            record = call.a.record()["streams"][0]
            assert record["key_exchange"] == "dtls"
            assert record["dtls_role"] == "client"
            assert record["peer_certificate_sha256"] == PHONE_ID.sha256_hex()
            assert call.failures == []
            nursery.cancel_scope.cancel()
        call.keying.close()
        call.session.close()


async def test_a_held_leg_sends_nothing_and_keeps_its_peers_client_hello_until_released(
    relay: MediaRelay,
) -> None:
    """The call holds a leg's handshakes while our answer to it is not sent (CallHandshakes.hold:
    the answer carries the fingerprint the peer checks us with, RFC 5763 §5). A phone that
    offered ``active`` is the DTLS client: its ClientHello, come before the release, is kept
    (not lost to its 1 s resend, RFC 6347 §4.2.4.1) and answered once released."""
    phone_negotiation = exchange(PHONE_ID).offer(suites=[], secure_signalling=False)
    offer = dtls_offer(phone_negotiation, setup="active")
    call = set_up(relay, phone_negotiation, offer, our_setup="passive")
    a_sock = udp_socket()
    with a_sock:
        await a_sock.bind((ADDRESS, A_PHONE.first()))
        gateway = (ADDRESS, call.a_port)
        async with trio.open_nursery() as nursery:
            handshakes = call.handshakes()
            handshakes.hold("a")
            nursery.start_soon(handshakes.run)
            handshakes.poke()
            for datagram in phone_negotiation.packets_to_send(now=trio.current_time()):
                await a_sock.sendto(datagram, gateway)  # the phone's ClientHello
            await until(lambda: handshakes.held_datagrams == 1)
            assert await receive(a_sock, 0.1) is None  # nothing from a held leg
            negotiation = call.a.media_path_streams()[0].negotiation
            assert isinstance(negotiation, DtlsNegotiation)
            assert negotiation.statistics().datagrams_received == 0
            handshakes.release("a")
            # The kept ClientHello is answered (ServerHello ... ServerHelloDone), not resent.
            with trio.fail_after(5):
                reply, _ = await a_sock.recvfrom(2048)
            assert handshakes.held_datagrams == 0 and handshakes.dropped == 0
            assert negotiation.statistics().datagrams_received == 1
            # A second answer to A (our 200 after a 183 with SDP) does not hold it again: the
            # handshake under way goes on (held, it would wait for a release and never key).
            handshakes.hold("a")
            phone_negotiation.receive_packet(reply, now=trio.current_time())
            phone = Phone(phone_negotiation, a_sock, gateway)
            nursery.start_soon(phone.run)
            with trio.fail_after(10):
                await call.keyed.wait()
                # The phone is the client: it is keyed by our Finished, after we were by its.
                while phone.keys is None and phone.failure is None:
                    await trio.sleep(0.01)
            assert phone.keys is not None and phone.failure is None
            assert call.a.record()["streams"][0]["dtls_role"] == "server"
            assert call.failures == []
            nursery.cancel_scope.cancel()
        call.keying.close()
        call.session.close()


# A fatal handshake_failure alert in clear (RFC 6347 §4.1: type 21, DTLS 1.2, epoch 0, seq 0,
# length 2; RFC 5246 §7.2: level 2, description 40): anyone can send it, nothing authenticates it.
PLAINTEXT_ALERT = bytes([21, 0xFE, 0xFD, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 40])
# The same behind a handshake record of garbage in one datagram (RFC 6347 §4.1.1).
ALERT_BEHIND_GARBAGE = (
    bytes([22, 0xFE, 0xFD, 0, 0, 0, 0, 0, 0, 0, 1, 0, 3, 9, 9, 9]) + PLAINTEXT_ALERT
)


async def test_a_forged_plaintext_alert_from_another_port_does_not_end_our_handshake(
    relay: MediaRelay,
) -> None:
    """We are the DTLS client (the phone offered actpass). Before the phone answers our
    ClientHello, nothing latched its socket yet: alerts in clear from another port of the
    host (an attacker who knows our media port) are dropped, latch nothing, and the handshake
    with the phone completes (RFC 6347 §4.1.2.7: such records may be discarded)."""
    phone_negotiation = exchange(PHONE_ID).offer(suites=[], secure_signalling=False)
    call = set_up(relay, phone_negotiation, dtls_offer(phone_negotiation))
    a_sock, forger = udp_socket(), udp_socket()
    with a_sock, forger:
        await a_sock.bind((ADDRESS, A_PHONE.first()))
        await forger.bind((ADDRESS, 0))
        phone = Phone(phone_negotiation, a_sock, (ADDRESS, call.a_port), proceed=trio.Event())
        stream = call.session.streams[0]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(call.handshakes().run)
            nursery.start_soon(phone.run)
            with trio.fail_after(5):
                await phone.first_dtls.wait()  # our ClientHello is out, the phone holds its reply
            for forged in (PLAINTEXT_ALERT, ALERT_BEHIND_GARBAGE):
                await forger.sendto(forged, (ADDRESS, call.a_port))
            await until(lambda: stream.a_to_b.statistics().dropped_unlatched_source == 2)
            assert stream.a.rtp_source is None  # the forger latched nothing
            assert phone.proceed is not None
            phone.proceed.set()
            with trio.fail_after(10):
                await call.keyed.wait()
            assert call.failures == [] and phone.failure is None
            assert stream.a.rtp_source == (ADDRESS, A_PHONE.first())
            nursery.cancel_scope.cancel()
        call.keying.close()
        call.session.close()


async def test_the_peers_own_plaintext_alert_still_ends_the_handshake_at_once(
    relay: MediaRelay,
) -> None:
    """The same alert from the phone's SDP address (the phone refusing our ClientHello before
    it sent anything, so nothing is latched) is the phone's: the call fails at once with the
    reason, not after the 20 s handshake timeout."""
    phone_negotiation = exchange(PHONE_ID).offer(suites=[], secure_signalling=False)
    call = set_up(relay, phone_negotiation, dtls_offer(phone_negotiation))
    a_sock = udp_socket()
    with a_sock:
        await a_sock.bind((ADDRESS, A_PHONE.first()))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(call.handshakes().run)
            with trio.fail_after(5):
                client_hello, _ = await a_sock.recvfrom(2048)
            assert client_hello[0] == 22  # a handshake record
            assert call.session.streams[0].a.rtp_source is None
            await a_sock.sendto(PLAINTEXT_ALERT, (ADDRESS, call.a_port))
            with trio.fail_after(5):  # the handshake timeout is 20 s
                await call.failed.wait()
            (failure,) = call.failures
            assert failure.startswith("a: ") and "timed out" not in failure
            assert call.a.keys(0) is None and not call.keyed.is_set()
            nursery.cancel_scope.cancel()
        call.keying.close()
        call.session.close()


async def test_wrong_fingerprint_fails_the_call_and_no_media_flows(relay: MediaRelay) -> None:
    phone_negotiation = exchange(PHONE_ID).offer(suites=[], secure_signalling=False)
    # The SDP names another certificate than the one the phone presents.
    wrong = "sha-256 " + ":".join(f"{octet:02X}" for octet in OTHER_ID.digest("sha-256"))
    call = set_up(relay, phone_negotiation, dtls_offer(phone_negotiation, fingerprint=wrong))
    a_sock, b_sock = udp_socket(), udp_socket()
    with a_sock, b_sock:
        await a_sock.bind((ADDRESS, A_PHONE.first()))
        await b_sock.bind((ADDRESS, B_PHONE.first()))
        phone = Phone(phone_negotiation, a_sock, (ADDRESS, call.a_port))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(call.handshakes().run)
            nursery.start_soon(phone.run)
            with trio.fail_after(10):
                await call.failed.wait()
            assert call.failures == [f"a: {FINGERPRINT_MISMATCH_REASON}"]
            assert call.a.keys(0) is None
            assert not call.keyed.is_set()
            # No media either way after the failure.
            stream = call.session.streams[0]
            await b_sock.sendto(rtp(5), (ADDRESS, call.b_port))
            await a_sock.sendto(rtp(5), (ADDRESS, call.a_port))
            await until(lambda: stream.b_to_a.statistics().dropped_blocked == 1)
            await until(lambda: stream.a_to_b.statistics().dropped_blocked == 1)
            assert await receive(b_sock, 0.1) is None
            assert phone.rtp_received == []
            nursery.cancel_scope.cancel()
        call.keying.close()
        call.session.close()


async def test_separate_rtcp_port_runs_its_own_handshake_and_keys_srtcp(
    relay: MediaRelay,
) -> None:
    """RFC 5764 §4.1: without rtcp-mux the RTCP port has a DTLS association of its own, and
    SRTCP there is keyed from it. Until it is done, RTCP is dropped both ways."""
    phone_negotiation = exchange(PHONE_ID).offer(suites=[], secure_signalling=False)
    offer = dtls_offer(phone_negotiation, rtcp_mux=False)
    call = set_up(relay, phone_negotiation, offer, rtcp_mux=False)
    assert not call.session.streams[0].a.rtcp_mux
    phone_rtcp = phone_negotiation.rtcp_component()
    assert phone_rtcp is not None
    sockets = [udp_socket() for _ in range(4)]  # A RTP, A RTCP, B RTP, B RTCP
    a_rtp, a_rtcp, b_rtp, b_rtcp = sockets
    with a_rtp, a_rtcp, b_rtp, b_rtcp:
        for sock, port in zip(
            sockets,
            (A_PHONE.first(), A_PHONE.first() + 1, B_PHONE.first(), B_PHONE.first() + 1),
            strict=True,
        ):
            await sock.bind((ADDRESS, port))
        gateway_a_rtcp = (ADDRESS, call.a_port + 1)
        gateway_b_rtcp = (ADDRESS, call.b_port + 1)
        phone = Phone(phone_negotiation, a_rtp, (ADDRESS, call.a_port))
        rtcp_phone = Phone(phone_rtcp, a_rtcp, gateway_a_rtcp)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(call.handshakes().run)
            nursery.start_soon(phone.run)
            with trio.fail_after(10):
                # Not call.keyed alone: the RTCP port's negotiation attached at the first round
                # calls on_keys too; and the phone (the DTLS server) is keyed by our Finished
                # before we are by its (RFC 6347 §4.2.4): wait for both ends' RTP keys.
                await call.keyed.wait()
                while phone.keys is None or call.a.keys(0) is None:
                    await trio.sleep(0.01)
            # The RTP port is keyed, the RTCP port not yet (the phone has not answered there):
            # RTP flows, RTCP is dropped, not sent in clear nor under the RTP port's keys.
            assert call.a.keys(0) is not None and call.a.rtcp_keys(0) is None
            assert call.a.record()["streams"][0]["rtcp_port_keyed"] is False
            await b_rtcp.sendto(empty_receiver_report(0xB0B), gateway_b_rtcp)
            with trio.fail_after(5):
                while call.session.streams[0].b_to_a.statistics().dropped_transform < 1:
                    await trio.sleep(0.01)
            # What reached the phone's RTCP port is the gateway's DTLS handshake only (our role
            # is client), never RTCP; the phone's engine takes it when it starts.
            waiting: list[bytes] = []
            while (datagram := await receive(a_rtcp, 0.2)) is not None:
                waiting.append(datagram)
            assert waiting and all(phone_rtcp.claims_packet(d[0], d) for d in waiting)
            for datagram in waiting:
                phone_rtcp.receive_packet(datagram, now=trio.current_time())

            nursery.start_soon(rtcp_phone.run)
            with trio.fail_after(10):
                while call.a.rtcp_keys(0) is None or rtcp_phone.keys is None:
                    await trio.sleep(0.01)
            rtcp_keys = call.a.rtcp_keys(0)
            assert rtcp_keys is not None and rtcp_keys != call.a.keys(0)
            assert call.a.record()["streams"][0]["rtcp_port_keyed"] is True
            assert call.failures == []

            # B's RTCP reaches the phone's RTCP port as SRTCP under that port's keys only.
            await b_rtcp.sendto(empty_receiver_report(0xB0B), gateway_b_rtcp)
            with trio.fail_after(5):
                while not rtcp_phone.rtp_received:
                    await trio.sleep(0.01)
            srtcp = rtcp_phone.rtp_received[0]
            unprotected = SrtpSession(rtcp_phone.keys).unprotect_rtcp(srtcp)
            assert unprotected == empty_receiver_report(0xB0B)
            assert SrtpSession(phone.keys).unprotect_rtcp(srtcp) is None
            # And the phone's SRTCP from its RTCP port reaches B in clear.
            sent = SrtpSession(rtcp_phone.keys).protect_rtcp(empty_receiver_report(0xA11CE))
            assert sent is not None
            await a_rtcp.sendto(sent, gateway_a_rtcp)
            with trio.fail_after(5):
                plain, _ = await b_rtcp.recvfrom(2048)
            assert plain == empty_receiver_report(0xA11CE)
            nursery.cancel_scope.cancel()
        call.keying.close()
        call.session.close()


async def _keyed_as_server(
    relay: MediaRelay, nursery: trio.Nursery, a_sock: trio.socket.SocketType
) -> tuple[Call, Phone, SrtpKeys]:
    """A call whose DTLS phone offered ``active`` (we are the DTLS server), keyed."""
    negotiation = exchange(PHONE_ID).offer(suites=[], secure_signalling=False)
    call = set_up(relay, negotiation, dtls_offer(negotiation, setup="active"), our_setup="passive")
    phone = Phone(negotiation, a_sock, (ADDRESS, call.a_port))
    nursery.start_soon(call.handshakes().run)
    nursery.start_soon(phone.run)
    with trio.fail_after(10):
        await call.keyed.wait()
    await until(lambda: phone.keys is not None)
    assert phone.keys is not None
    return call, phone, phone.keys


async def _restart(call: Call, phone: Phone, identity: object) -> DtlsNegotiation:
    """The phone's DTLS client started afresh on the same socket (a restarted softphone with a
    fixed RTP port), with ``identity``'s certificate: its first ClientHello goes at once."""
    ours = call.a.media_path_streams()[0].negotiation
    assert isinstance(ours, DtlsNegotiation)
    client = exchange(identity).answer(
        ours.local_sdp_attributes(), suites=[], secure_signalling=False
    )
    assert client is not None and client.dtls_role == "client"
    phone.negotiation, phone.keys, phone.failure = client, None, None
    for datagram in client.packets_to_send(now=trio.current_time()):
        await phone.sock.sendto(datagram, phone.gateway)
    return client


async def _media_both_ways(
    call: Call,
    phone: Phone,
    keys: SrtpKeys,
    b_sock: trio.socket.SocketType,
    sequence: int,
) -> None:
    """B's RTP reaches the phone as SRTP that ``keys`` decrypt to the same packet, and the
    phone's SRTP under ``keys`` reaches B decrypted."""
    srtp = SrtpSession(keys)
    phone.rtp_received.clear()
    await b_sock.sendto(rtp(sequence), (ADDRESS, call.b_port))
    await until(lambda: bool(phone.rtp_received))
    assert srtp.unprotect_rtp(phone.rtp_received[0]) == rtp(sequence)
    protected = srtp.protect_rtp(rtp(sequence + 1, payload=b"\x42" * 160))
    assert protected is not None
    await phone.sock.sendto(protected, (ADDRESS, call.a_port))
    with trio.fail_after(5):
        plain, _ = await b_sock.recvfrom(2048)
    assert plain == rtp(sequence + 1, payload=b"\x42" * 160)


async def test_a_phone_restarting_its_dtls_client_on_the_same_port_is_rekeyed_both_ways(
    relay: MediaRelay,
) -> None:
    """RFC 6347 §4.2.8 (session 44): the phone's new handshake from the same address and port
    (OpenSSL, through pyOpenSSL, on both ends) is asked for our cookie, runs on a candidate
    association, and once its certificate matched a=fingerprint the leg's SRTP takes its keys:
    media decrypts both ways under the new keys (new contexts, the sequence going on), and
    the old keys no longer do. Before, the phone's new handshake timed out and its media
    under keys we never had was dropped."""
    a_sock, b_sock = udp_socket(), udp_socket()
    with a_sock, b_sock:
        await a_sock.bind((ADDRESS, A_PHONE.first()))
        await b_sock.bind((ADDRESS, B_PHONE.first()))
        async with trio.open_nursery() as nursery:
            call, phone, old = await _keyed_as_server(relay, nursery, a_sock)
            await _media_both_ways(call, phone, old, b_sock, 10)
            await _restart(call, phone, PHONE_ID)
            with trio.fail_after(10):
                await until(lambda: phone.keys is not None)
            new = phone.keys
            assert new is not None and phone.failure is None and new != old
            await until(
                lambda: call.a.keys(0) is not None and call.a.keys(0).local_key == new.remote_key
            )  # type: ignore[union-attr]
            await _media_both_ways(call, phone, new, b_sock, 20)
            # The old keys are gone: the phone's SRTP under them is dropped, not relayed.
            stale = SrtpSession(old).protect_rtp(rtp(40))
            assert stale is not None
            await phone.sock.sendto(stale, (ADDRESS, call.a_port))
            assert await receive(b_sock, 0.2) is None
            record = call.a.record()["streams"][0]
            assert record["dtls_rekeyed_by_peer"] == "1"
            assert record["peer_certificate_sha256"] == PHONE_ID.sha256_hex()
            assert call.failures == []
            nursery.cancel_scope.cancel()
        call.keying.close()
        call.session.close()


async def test_a_forged_restart_with_another_certificate_changes_nothing(
    relay: MediaRelay,
) -> None:
    """A new handshake from the phone's own address and port with a certificate a=fingerprint
    does not name (someone on its path): its candidate is held for a re-offer naming that
    certificate (session 45; it fails at handshake_timeout, none coming) and never alerted;
    the leg keeps its keys, media goes on both ways under them, the call is not ended."""
    a_sock, b_sock = udp_socket(), udp_socket()
    with a_sock, b_sock:
        await a_sock.bind((ADDRESS, A_PHONE.first()))
        await b_sock.bind((ADDRESS, B_PHONE.first()))
        async with trio.open_nursery() as nursery:
            call, phone, old = await _keyed_as_server(relay, nursery, a_sock)
            keyed = call.a.keys(0)
            real = phone.negotiation
            forger = await _restart(call, phone, OTHER_ID)
            ours = call.a.media_path_streams()[0].negotiation
            assert isinstance(ours, DtlsNegotiation)
            with trio.fail_after(10):
                await until(lambda: ours.statistics().peer_restarts_held == 1)
            assert phone.keys is None and phone.failure is None  # held: no alert
            assert ours.statistics().peer_rekeys == 0 and forger.keys is None
            assert call.a.keys(0) == keyed and call.failures == []
            phone.negotiation = real
            await _media_both_ways(call, phone, old, b_sock, 30)
            assert "dtls_rekeyed_by_peer" not in call.a.record()["streams"][0]
            nursery.cancel_scope.cancel()
        call.keying.close()
        call.session.close()
