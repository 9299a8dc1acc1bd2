"""The T.38 fax scenarios (an ATA's re-INVITE to T.38, a ZRTP leg beside a plain one, an
intercepted call's fax) and their SDP, datagrams and checks: run in-process by test_b2bua_t38.py
and with media worker processes by tests/integration/test_gateway_workers_t38.py."""

from __future__ import annotations

import struct
from pathlib import Path

import trio

import gateway.plugins.keyexchange.zrtp as zrtp_plugin
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.plugins.taps.intercept import pdu
from gateway.testing.sip_agent import Received, SipAgent, simple_sdp
from tests.component.calls.b2bua_env import ALICE_DID, B2bua, eventually, start_b2bua
from tests.component.calls.dtls_phone import Phone, bind
from tests.component.calls.intercept_calls import (
    CALLEE_PORT as INTERCEPTED_CALLEE_PORT,
)
from tests.component.calls.intercept_calls import (
    CALLER_PORT as INTERCEPTED_CALLER_PORT,
)
from tests.component.calls.intercept_calls import (
    activate,
    answered_with_media,
    intercept_env,
)
from tests.component.calls.zrtp_pairs import pairs, phone_exchange, zrtp_sdp
from tests.interop.harness.pki import TestPki
from tests.port_blocks import port_bases

CALLER_PORT, CALLEE_PORT = port_bases(2)  # this process's own ports (tests/port_blocks.py)

T38_LINES = [
    "a=T38FaxVersion:0",
    "a=T38MaxBitRate:14400",
    "a=T38FaxRateManagement:transferredTCF",
    "a=T38FaxMaxBuffer:2000",
    "a=T38FaxMaxDatagram:400",
    "a=T38FaxUdpEC:t38UDPRedundancy",
    "a=X-acme-fax:1",
]


def t38_sdp(port: int, *, version: int, audio_port: int | None = None) -> bytes:
    """A fax device's SDP: T.38 over UDPTL at ``port``; with ``audio_port`` an audio line first
    (0: the audio set aside, RFC 3264 §8.2)."""
    lines = ["v=0", f"o=- 7 {version} IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0"]
    if audio_port is not None:
        lines += [f"m=audio {audio_port} RTP/AVP 0", "a=rtpmap:0 PCMU/8000"]
    lines += [f"m=image {port} udptl t38", *T38_LINES]
    return ("\r\n".join(lines) + "\r\n").encode()


def udptl(sequence: int, ifp: bytes) -> bytes:
    """A UDPTL packet (T.38 §9.1): sequence number, primary IFP, redundancy without secondary."""
    return struct.pack("!HB", sequence, len(ifp)) + ifp + b"\x00"


# A first octet of RTP version 2 (sequence 0x80xx), one with RTCP's second octet (RFC 5761 §4),
# and ordinary ones.
DATAGRAMS = [udptl(0x8000 + n, b"\x06" + bytes([n]) * 30) for n in range(3)]
DATAGRAMS += [udptl(0x80C8, b"\x00"), udptl(5, b"\x01\x02")]


def image_port(body: bytes) -> int:
    """The port of the m=image line of an SDP body."""
    sd = parse_sdp_untrusted(body)
    (image,) = [m for m in sd.media if m.media == "image"]
    return image.port


def answer_invites(agent: SipAgent, audio: bytes, fax: bytes, offers: list[bytes]) -> None:
    """``agent`` answers each re-INVITE with ``fax`` when it offers m=image, else ``audio``;
    the offers it got are kept in ``offers``."""

    async def handle(received: Received) -> bool:
        request = received.request
        if request.method != "INVITE":
            return False
        offers.append(request.body)
        body = fax if b"m=image " in request.body else audio
        await agent.respond(received, 200, body=body)
        return True

    agent.in_dialog = handle


async def fax_both_ways(
    caller: trio.socket.SocketType,
    caller_to: tuple[str, int],
    callee: trio.socket.SocketType,
    callee_to: tuple[str, int],
    received_by_caller: list[bytes] | None = None,
) -> None:
    """Each datagram of DATAGRAMS from the callee to the caller and back, checked byte for byte
    (``received_by_caller``: the caller's socket is read by a phone loop that records there)."""
    for datagram in DATAGRAMS:
        await callee.sendto(datagram, callee_to)
        if received_by_caller is None:
            with trio.fail_after(5):
                got, _ = await caller.recvfrom(2048)
            assert got == datagram
        else:
            await eventually(lambda d=datagram: received_by_caller[-1:] == [d])
        await caller.sendto(datagram[::-1], caller_to)
        with trio.fail_after(5):
            got, _ = await callee.recvfrom(2048)
        assert got == datagram[::-1]


async def an_atas_reinvite_to_t38_and_back_to_audio(
    nursery: trio.Nursery, tmp_path: Path, voipgw_seed: int
) -> None:
    """An ATA's re-INVITE to T.38 and back to audio; run in-process by test_b2bua_t38.py
    and with media worker processes by test_gateway_workers_t38.py."""
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=None)
    call = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=simple_sdp("127.0.0.1", CALLER_PORT))
    ata = await env.alice.next_call()
    audio_port_b = parse_sdp_untrusted(ata.invite.body).media[0].port
    await ata.answer(200, sdp=simple_sdp("127.0.0.1", CALLEE_PORT))
    final = await call.final()
    assert final.status == 200
    audio_port_a = parse_sdp_untrusted(final.body).media[0].port
    offers: list[bytes] = []
    answer_invites(
        env.trunk,
        simple_sdp("127.0.0.1", CALLER_PORT, version=3),
        t38_sdp(CALLER_PORT, version=2),
        offers,
    )
    caller, callee = await bind(CALLER_PORT), await bind(CALLEE_PORT)
    with caller, callee:
        # The ATA heard CED: T.38 at the same m= line index, from the same port.
        response = await ata.reinvite(t38_sdp(CALLEE_PORT, version=2))
        assert response.status == 200
        offered = parse_sdp_untrusted(offers[0])
        assert [m.media for m in offered.media] == ["image"]
        fax_line = offered.media[0]
        assert fax_line.port == audio_port_a  # the line's stream and ports stay
        assert [f"a={n}:{v}" for n, v in fax_line.attributes] == T38_LINES
        assert image_port(response.body) == audio_port_b

        await fax_both_ways(
            caller, ("127.0.0.1", audio_port_a), callee, ("127.0.0.1", audio_port_b)
        )

        assert env.gateway.calls is not None
        (gateway_call,) = env.gateway.calls.calls
        record = gateway_call.security_record()
        for leg in ("a", "b"):
            assert record[leg]["fax_t38"] == "passed through, not encrypted"  # type: ignore[index]

        # The fax's datagrams are UDPTL, not RTP: counted apart, so the call has had no RTP.
        # (A media worker pushes its counters about once a second: wait for them.)
        def udptl_counted() -> bool:
            media = gateway_call.security_record()["media"]
            return media.get("b_to_a_udptl_packets") == len(DATAGRAMS)  # type: ignore[attr-defined]

        await eventually(udptl_counted)
        record = gateway_call.security_record()
        fax_bytes = sum(len(d) for d in DATAGRAMS)
        assert record["media"] == {  # type: ignore[comparison-overlap]
            **record["media"],  # type: ignore[dict-item]
            "a_to_b_packets": 0,
            "b_to_a_packets": 0,
            "a_to_b_bytes": 0,
            "a_to_b_udptl_packets": len(DATAGRAMS),
            "b_to_a_udptl_packets": len(DATAGRAMS),
            "a_to_b_udptl_bytes": fax_bytes,
            "b_to_a_udptl_bytes": fax_bytes,
        }

        # The fax is over: back to audio, RTP again on the same ports.
        response = await ata.reinvite(simple_sdp("127.0.0.1", CALLEE_PORT, version=3))
        assert response.status == 200
        assert parse_sdp_untrusted(response.body).media[0].media == "audio"
        rtp = struct.pack("!BBHII", 0x80, 0, 1, 160, 0x1234) + b"\xd5" * 160
        await callee.sendto(rtp, ("127.0.0.1", audio_port_b))
        with trio.fail_after(5):
            got, _ = await caller.recvfrom(2048)
        assert got == rtp
        await callee.sendto(b"\x00\x01\x02\x03", ("127.0.0.1", audio_port_b))  # not RTP now
        await callee.sendto(rtp, ("127.0.0.1", audio_port_b))
        with trio.fail_after(5):
            got, _ = await caller.recvfrom(2048)
        assert got == rtp  # the first to arrive: the non-RTP datagram was dropped

        def rtp_counted() -> bool:  # RTP again, counted as RTP; the fax's UDPTL stays
            media = gateway_call.security_record()["media"]
            return media.get("b_to_a_packets") == 2  # type: ignore[attr-defined,no-any-return]

        await eventually(rtp_counted)
        media = gateway_call.security_record()["media"]
        assert media["b_to_a_udptl_packets"] == len(DATAGRAMS)  # type: ignore[index]
    await call.bye()
    await eventually(lambda: env.calls == 0)


async def zrtp_caller(env: B2bua, nursery: trio.Nursery) -> tuple[object, object, Phone]:
    """The trunk calls alice with ZRTP (its leg gets SRTP), alice answers in plain RTP; the
    caller's phone loop runs until keyed: (trunk's call, alice's call, the phone)."""
    negotiation = phone_exchange().offer(suites=[], secure_signalling=False)
    call = await env.trunk.invite(
        env.did_uri(ALICE_DID), sdp=zrtp_sdp(negotiation, port=CALLER_PORT)
    )
    ata = await env.alice.next_call()
    await ata.answer(200, sdp=simple_sdp("127.0.0.1", CALLEE_PORT))
    final = await call.final()
    assert final.status == 200
    answer = parse_sdp_untrusted(final.body)
    negotiation.remote_sdp_attributes(pairs(answer, answer.media[0]))
    phone = Phone(negotiation, await bind(CALLER_PORT), ("127.0.0.1", answer.media[0].port))
    nursery.start_soon(phone.run)
    with trio.fail_after(10):
        await phone.keyed.wait()
    return call, ata, phone


async def a_zrtp_leg_and_a_plain_leg_relaying_a_fax(
    nursery: trio.Nursery, tmp_path: Path, voipgw_seed: int
) -> None:
    """A ZRTP leg and a plain leg relaying a fax in clear; run in-process by test_b2bua_t38.py
    and with media worker processes by test_gateway_workers_t38.py."""
    env = await start_b2bua(
        nursery, tmp_path, voipgw_seed, alice_auto=None, plugins=[("zrtp", zrtp_plugin)]
    )
    call, ata, phone = await zrtp_caller(env, nursery)
    assert env.gateway.calls is not None
    (gateway_call,) = env.gateway.calls.calls
    # The phone may have its keys before the gateway's side of the exchange has recorded its.
    await eventually(
        lambda: gateway_call.security_record()["a"]["streams"][0]["encrypted"]  # type: ignore[index]
    )
    offers: list[bytes] = []
    answer_invites(
        env.trunk,
        simple_sdp("127.0.0.1", CALLER_PORT, version=3),
        t38_sdp(CALLER_PORT, version=2),
        offers,
    )
    callee = await bind(CALLEE_PORT)
    with callee:
        response = await ata.reinvite(t38_sdp(CALLEE_PORT, version=2))  # type: ignore[attr-defined]
        assert response.status == 200
        assert b"zrtp-hash" not in offers[0]  # UDPTL has no key exchange
        await fax_both_ways(
            phone.sock,
            phone.gateway,
            callee,
            ("127.0.0.1", image_port(response.body)),
            received_by_caller=phone.media,
        )
        record = gateway_call.security_record()
        assert record["a"]["streams"] == [  # type: ignore[index]
            {
                "media": "t38",
                "key_exchange": "none",
                "suite": None,
                "encrypted": False,
                "keys_held_by": None,
            }
        ]
        assert record["a"]["fax_t38"] == "passed through, not encrypted"  # type: ignore[index]

        # Back to audio: the ZRTP leg is offered ZRTP afresh, as for a new stream.
        response = await ata.reinvite(simple_sdp("127.0.0.1", CALLEE_PORT, version=3))  # type: ignore[attr-defined]
        assert response.status == 200
        assert b"a=zrtp-hash:" in offers[1]
    await call.bye()  # type: ignore[attr-defined]
    await eventually(lambda: env.calls == 0)


async def an_intercepted_calls_fax_to_x3(
    nursery: trio.Nursery, tmp_path: Path, voipgw_seed: int
) -> None:
    """An intercepted call's fax delivered as X3 IP packets; run in-process by test_b2bua_t38.py
    and with media worker processes by test_gateway_workers_t38.py."""
    test_pki = TestPki(tmp_path / "pki")
    ca = test_pki.ca("X1 CA")
    pki = (ca, ca.issue("gw-test"), ca.issue("admf-1"))
    env = await intercept_env(nursery, tmp_path, voipgw_seed, pki)
    await env.provision(activate(f"<e164Number>{ALICE_DID[1:]}</e164Number>"))
    b2bua = env.b2bua
    call, talk = await answered_with_media(env)
    ata = b2bua.alice.calls[-1]
    offers: list[bytes] = []
    answer_invites(
        b2bua.trunk,
        simple_sdp("127.0.0.1", INTERCEPTED_CALLER_PORT, version=3),
        t38_sdp(INTERCEPTED_CALLER_PORT, version=2),
        offers,
    )
    try:
        response = await ata.reinvite(t38_sdp(INTERCEPTED_CALLEE_PORT, version=2))
        assert response.status == 200
        # What the parties see is what they see without interception (test 1's checks).
        assert [f"a={n}:{v}" for n, v in parse_sdp_untrusted(offers[0]).media[0].attributes] == (
            T38_LINES
        )
        await fax_both_ways(talk.caller, talk.caller_to, talk.callee, talk.callee_to)
        await call.bye()
        await eventually(lambda: b2bua.calls == 0)
    finally:
        talk.close()
    await eventually(lambda: len([p for p in env.x3() if p.payload_format == 5]) == 10)

    fax = [p for p in env.x3() if p.payload_format == pdu.FORMAT_IPV4]
    to_target = [p.payload for p in fax if p.direction == pdu.TO_TARGET]
    from_target = [p.payload for p in fax if p.direction == pdu.FROM_TARGET]
    # The IP packet as it reached the gateway: the sender's address and port, the relay's port.
    assert [packet[28:] for packet in to_target] == [d[::-1] for d in DATAGRAMS]
    assert {struct.unpack("!HH", packet[20:24]) for packet in to_target} == {
        (INTERCEPTED_CALLER_PORT, talk.caller_to[1])
    }
    assert [packet[28:] for packet in from_target] == DATAGRAMS
    assert {struct.unpack("!HH", packet[20:24]) for packet in from_target} == {
        (INTERCEPTED_CALLEE_PORT, talk.callee_to[1])
    }
    assert all(packet[12:20] == bytes([127, 0, 0, 1]) * 2 for packet in to_target + from_target)
    assert {p.correlation for p in env.x3()} == {env.x3()[0].correlation}
