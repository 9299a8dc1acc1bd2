"""Call pickup between a caller sending RFC 2198 RED the way a browser does (Opus 111, RED 63,
``a=fmtp:63 111/111``) and a picker that numbers both its own way (Opus 109, RED 121): each is
answered in its own numbers, RED's fmtp included (RFC 2198 §5), and the relay rewrites both the
RED packet's payload type and its blocks' (§3), so each phone decodes the redundant block as
Opus. In-memory signalling, virtual time; RTP on real 127.0.0.1 sockets through the relay."""

from __future__ import annotations

import struct
from pathlib import Path

import trio

from gateway.core.sdp.model import SessionDescription
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.testing.sip_agent import AutoAnswer, SipAgent
from tests.component.calls.b2bua_env import ALICE_DID, B2bua, assert_media_via_gateway
from tests.component.calls.dialog_event_watch import next_doc, start, watch
from tests.component.calls.dtls_phone import bind
from tests.component.calls.pickup_calls import PICKUP, early_dialog, pick_up, replaces_of
from tests.port_blocks import port_bases

CALLER_PORT, BOB_PORT = port_bases(2)  # this process's own ports (tests/port_blocks.py)


def audio_sdp(port: int, opus: int, red: int) -> bytes:
    return (
        "v=0\r\no=- 7 7 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP {opus} {red} 0\r\n"
        f"a=rtpmap:{opus} opus/48000/2\r\na=fmtp:{opus} minptime=10;useinbandfec=1\r\n"
        f"a=rtpmap:{red} red/48000/2\r\na=fmtp:{red} {opus}/{opus}\r\n"
        "a=rtpmap:0 PCMU/8000\r\n"
    ).encode()


def red(sequence: int, red_type: int, opus: int, ssrc: int) -> bytes:
    """RFC 2198 §3: the previous frame (F=1, timestamp offset 960, 3 octets), then the
    current one (F=0 header, 4 octets)."""
    header = struct.pack("!BBHII", 0x80, red_type, sequence, 960 * sequence, ssrc)
    return header + bytes([0x80 | opus, 0x0F, 0x00, 0x03, opus]) + b"\xaa\xbb\xcc\x01\x02\x03\x04"


def fmtp(sd: SessionDescription) -> tuple[str, ...]:
    return sd.media[0].attributes.values("fmtp")


async def picked_up_call(env: B2bua, bob: SipAgent) -> tuple[SessionDescription, ...]:
    """The carrier calls alice with RED, bob picks the ringing call up: (our 200 to the
    caller, our 200 to bob)."""
    await watch(bob)
    await next_doc(bob)
    env.alice.auto = AutoAnswer(ring=True, status=None)
    incoming = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=audio_sdp(CALLER_PORT, 111, 63))
    await env.alice.next_call()
    dialog = await early_dialog(bob)
    picked = await pick_up(bob, replaces_of(dialog), sdp=audio_sdp(BOB_PORT, 109, 121))
    to_bob = await picked.final()
    assert to_bob.status == 200, to_bob.reason
    to_caller = await incoming.final()
    assert to_caller.status == 200, to_caller.reason
    assert_media_via_gateway(to_caller.body)
    return parse_sdp_untrusted(to_caller.body), parse_sdp_untrusted(to_bob.body)


async def test_red_blocks_reach_each_phone_in_its_own_numbers(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, bob = await start(nursery, tmp_path, voipgw_seed, groups=[PICKUP])
    to_caller, to_bob = await picked_up_call(env, bob)
    # Each SDP names, in RED's fmtp, the number it gives Opus.
    assert to_caller.media[0].formats == ("111", "63", "0")
    assert "63 111/111" in fmtp(to_caller)
    assert to_bob.media[0].formats == ("109", "121", "0")
    assert "121 109/109" in fmtp(to_bob)
    caller_sock, bob_sock = await bind(CALLER_PORT), await bind(BOB_PORT)
    with caller_sock, bob_sock:
        caller_to = ("127.0.0.1", to_caller.media[0].port)
        bob_to = ("127.0.0.1", to_bob.media[0].port)
        with trio.fail_after(2):
            await caller_sock.sendto(red(1, 63, 111, 0x11), caller_to)
            assert await bob_sock.recv(2048) == red(1, 121, 109, 0x11)
            await bob_sock.sendto(red(1, 121, 109, 0x22), bob_to)
            assert await caller_sock.recv(2048) == red(1, 63, 111, 0x22)
    assert env.gateway.calls is not None
    (call,) = env.gateway.calls.calls
    assert call.media is not None
    (stream,) = call.media.streams
    assert stream.a_to_b.payload_types == {111: 109, 63: 121}
    assert stream.a_to_b.red_payload_types == (63,)
    assert stream.b_to_a.red_payload_types == (121,)
