"""A blind transfer (RFC 3515) to a phone that numbers telephone-event 96 while the call's
caller numbers it 101: the target's offer reaches the caller in a re-INVITE renumbered into the
numbers its leg already has (RFC 3264 §8.3.2), the caller's answer goes back to the target in
the target's numbers (§6.1), and the relay renumbers DTMF (RFC 4733) between them, both ways.
In-memory signalling, virtual time; RTP on real loopback sockets through the relay."""

from __future__ import annotations

import socket
import struct
from pathlib import Path

import trio

from gateway.core.sdp.model import SessionDescription
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.testing.sip_agent import AutoAnswer
from tests.component.calls.b2bua_env import answered_call, eventually, start_b2bua
from tests.component.calls.transfer_calls import BOB_URI, bob_phone, refer
from tests.port_blocks import port_bases

TRUNK_PORT, BOB_PORT = port_bases(2)  # this process's own ports (tests/port_blocks.py)
TRUNK_MEDIA = ("127.0.0.2", TRUNK_PORT)  # where the carrier's SipAgent offers its media
BOB_SDP = (
    "v=0\r\no=- 9 9 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    f"m=audio {BOB_PORT} RTP/AVP 0 96\r\na=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:96 telephone-event/8000\r\na=fmtp:96 0-15\r\n"
).encode()


def event(sequence: int, payload_type: int, ssrc: int) -> bytes:
    """An RFC 4733 §2.3 event packet (digit 5), the marker bit set as on an event's first."""
    header = struct.pack("!BBHII", 0x80, 0x80 | payload_type, sequence, 160 * sequence, ssrc)
    return header + b"\x05\x0a\x00\xa0"


def dtmf_numbers(sd: SessionDescription) -> list[str]:
    return [v.split()[0] for v in sd.media[0].attributes.values("rtpmap") if "telephone" in v]


async def bound(address: tuple[str, int]) -> trio.socket.SocketType:
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await sock.bind(address)
    return sock


async def test_the_target_and_the_caller_each_get_dtmf_in_their_own_numbers(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, trunk_media_port=TRUNK_PORT)
    bob = await bob_phone(env, nursery, voipgw_seed, auto=AutoAnswer(ring=True, status=None))
    call, alice_leg = await answered_call(env)
    first_answer = parse_sdp_untrusted(call.exchange.responses[-1].body)  # type: ignore[union-attr]
    assert dtmf_numbers(first_answer) == ["101"]

    assert await refer(alice_leg, BOB_URI) == 202
    target = await bob.next_call()
    assert target.invite.body == b""  # called without SDP: its 200 offers
    await target.answer(200, sdp=BOB_SDP)
    # The caller is re-INVITEd with bob's media, telephone-event still 101 on its leg.
    reinvite = parse_sdp_untrusted((await env.trunk.next_request("INVITE")).request.body)
    assert reinvite.media[0].formats == ("0", "101")
    assert dtmf_numbers(reinvite) == ["101"]
    # Bob gets the caller's answer in our ACK, in his numbers.
    ack = parse_sdp_untrusted((await bob.next_request("ACK")).request.body)
    assert ack.media[0].formats == ("0", "96")
    assert dtmf_numbers(ack) == ["96"]

    trunk_sock, bob_sock = await bound(TRUNK_MEDIA), await bound(("127.0.0.1", BOB_PORT))
    with trunk_sock, bob_sock:
        to_relay_a = ("127.0.0.1", reinvite.media[0].port)
        to_relay_b = ("127.0.0.1", ack.media[0].port)
        with trio.fail_after(2):
            await trunk_sock.sendto(event(1, 101, 0x11), to_relay_a)
            assert await bob_sock.recv(2048) == event(1, 96, 0x11)
            await bob_sock.sendto(event(1, 96, 0x22), to_relay_b)
            assert await trunk_sock.recv(2048) == event(1, 101, 0x22)
    assert (await alice_leg.bye()).status == 200
    assert (await bob.calls[0].bye()).status == 200
    await eventually(lambda: env.calls == 0)
