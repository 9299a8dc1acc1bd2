"""A video call transferred to a phone without video (RFC 3515): the target's 2xx offers one
m= line in a dialog of its own, the call has two. RFC 3264 §8 counts m= lines per dialog: the
caller is re-INVITEd with the video line at port 0 (§8.2: removed), the target gets an answer
of its one line (§6), and its later re-offers are judged against its own dialog. Before session
50 the target's offer was refused (488 in the transferor's NOTIFY) and the transfer failed.
In-memory signalling, virtual time."""

from __future__ import annotations

from pathlib import Path

import trio

from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.testing.sip_agent import AutoAnswer, Received
from tests.component.calls.b2bua_env import answered_call, eventually, start_b2bua
from tests.component.calls.siprec_added_calls import audio_video, callee_takes_two_streams
from tests.component.calls.transfer_calls import BOB_URI, bob_phone, refer
from tests.port_blocks import port_bases

TRUNK_PORT, ALICE_PORT, BOB_PORT = port_bases(3)  # this process's own (tests/port_blocks.py)
BOB_SDP = (
    "v=0\r\no=- 9 9 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    f"m=audio {BOB_PORT} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
).encode()


def lines_of(body: bytes) -> list[tuple[str, bool]]:
    """(media, in use) of each m= line."""
    return [(m.media, m.port != 0) for m in parse_sdp_untrusted(body).media]


async def test_a_video_call_is_transferred_to_a_phone_without_video(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, trunk_media_port=TRUNK_PORT)
    bob = await bob_phone(env, nursery, voipgw_seed, auto=AutoAnswer(ring=True, status=None))
    call, alice_leg = await answered_call(env)
    # The carrier adds video; alice's phone takes it: the call has two m= lines.
    await callee_takes_two_streams(env, ALICE_PORT)
    answer = await call.reinvite(audio_video(TRUNK_PORT, TRUNK_PORT + 2, version=2))
    assert answer.status == 200
    assert lines_of(answer.body) == [("audio", True), ("video", True)]

    offers_to_trunk: list[bytes] = []

    async def trunk_answers(received: Received) -> bool:
        if received.request.method != "INVITE" or not received.request.body:
            return False
        offers_to_trunk.append(received.request.body)
        video = lines_of(received.request.body)[1][1]
        version = 2 + len(offers_to_trunk)
        body = audio_video(TRUNK_PORT, TRUNK_PORT + 2 if video else 0, version=version)
        if b"a=sendonly" in received.request.body:  # held: the answer mirrors it (§6.1)
            body = body.replace(b"a=sendrecv", b"a=recvonly")
        await env.trunk.respond(received, 200, body=body)
        return True

    env.trunk.in_dialog = trunk_answers
    assert await refer(alice_leg, BOB_URI) == 202
    target = await bob.next_call()
    assert target.invite.body == b""  # called without SDP: its 200 offers
    await target.answer(200, sdp=BOB_SDP)
    ack = await bob.next_request("ACK")
    assert lines_of(ack.request.body) == [("audio", True)]  # as many as bob's offer (§6)
    (offer,) = offers_to_trunk
    assert lines_of(offer) == [("audio", True), ("video", False)]  # video removed (§8.2)
    await eventually(lambda: any(b"SIP/2.0 200" in r.body for r in env.alice.requests("NOTIFY")))
    assert (await alice_leg.bye()).status == 200

    # bob holds: one m= line, his dialog's count, is no offer with "fewer lines".
    held = BOB_SDP.replace(b"o=- 9 9", b"o=- 9 10") + b"a=sendonly\r\n"
    reply = await bob.calls[0].reinvite(held)
    assert reply.status == 200
    assert lines_of(reply.body) == [("audio", True)]
    assert lines_of(offers_to_trunk[-1]) == [("audio", True), ("video", False)]
    assert (await bob.calls[0].bye()).status == 200
    await eventually(lambda: env.calls == 0)
