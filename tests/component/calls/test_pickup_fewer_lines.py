"""Call pickup of a ringing call whose caller offered audio and video, by a phone without video
(RFC 3264 §8 counts m= lines per dialog): the picker's INVITE offers one m= line and is answered
with one; the picker's dialog has one line, so its later re-INVITE (a hold) with one line is no
offer "with fewer m= lines", and the caller gets the video line at port 0. Before session 50 it
was refused 488 (judged against the call's two lines). In-memory signalling, virtual time."""

from __future__ import annotations

from pathlib import Path

import trio

from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.testing.sip_agent import AutoAnswer, Received
from tests.component.calls.b2bua_env import ALICE_DID, eventually
from tests.component.calls.dialog_event_watch import next_doc, start, watch
from tests.component.calls.pickup_calls import PICKUP, early_dialog, pick_up, replaces_of
from tests.component.calls.pickup_sdp import CALLER_PORT, bob_sdp
from tests.component.calls.siprec_added_calls import audio_video


def lines_of(body: bytes) -> list[tuple[str, bool]]:
    """(media, in use) of each m= line."""
    return [(m.media, m.port != 0) for m in parse_sdp_untrusted(body).media]


async def test_a_picker_without_video_holds_a_picked_up_video_call(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, bob = await start(nursery, tmp_path, voipgw_seed, groups=[PICKUP])
    await watch(bob)
    await next_doc(bob)
    env.alice.auto = AutoAnswer(ring=True, status=None)  # she lets it ring
    incoming = await env.trunk.invite(
        env.did_uri(ALICE_DID), sdp=audio_video(CALLER_PORT, CALLER_PORT + 2, version=1)
    )
    await env.alice.next_call()
    dialog = await early_dialog(bob)
    picked = await pick_up(bob, replaces_of(dialog), sdp=bob_sdp())
    to_bob = await picked.final()
    assert to_bob.status == 200, to_bob.reason
    assert lines_of(to_bob.body) == [("audio", True)]  # as many as bob's offer (§6)
    to_caller = await incoming.final()
    assert to_caller.status == 200, to_caller.reason
    assert lines_of(to_caller.body) == [("audio", True), ("video", False)]

    offers_to_caller: list[bytes] = []

    async def caller_answers(received: Received) -> bool:
        if received.request.method != "INVITE" or not received.request.body:
            return False
        offers_to_caller.append(received.request.body)
        body = audio_video(CALLER_PORT, 0, version=1 + len(offers_to_caller))
        if b"a=sendonly" in received.request.body:  # held: the answer mirrors it (§6.1)
            body = body.replace(b"a=sendrecv", b"a=recvonly")
        await env.trunk.respond(received, 200, body=body)
        return True

    env.trunk.in_dialog = caller_answers
    held = bob_sdp().replace(b"o=- 7 7 ", b"o=- 7 8 ") + b"a=sendonly\r\n"
    assert b"o=- 7 8 " in held  # a new o= version (RFC 3264 §8)
    reply = await picked.reinvite(held)
    assert reply.status == 200, reply.reason
    assert lines_of(reply.body) == [("audio", True)]
    (offer,) = offers_to_caller
    assert lines_of(offer) == [("audio", True), ("video", False)]
    assert (await picked.bye()).status == 200
    await eventually(lambda: env.calls == 0)
