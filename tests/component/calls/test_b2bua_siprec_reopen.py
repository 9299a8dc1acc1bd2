"""A recording that survives the recorder's restart (the ``siprec`` tap, RFC 7866): the SRS
answers an update 481 (it no longer knows the recording session, RFC 5057 §5.1), and the
gateway opens a new recording session for the same call, the SRS on the in-memory network, the
call's RTP and the copies on real 127.0.0.1 sockets, in virtual time:

- the SRS takes the new INVITE: a new dialog whose metadata names the same communication
  session, participants and streams (RFC 7865 §6), offering the streams as they are now; the
  copies go on to the addresses of its answer; the call's end snapshots and BYEs that session;
- the SRS refuses the new INVITE: the fallback takes it;
- none takes it, round after round: the call goes on unrecorded, counted ``session_gone``;
- an SRS that hangs up (its BYE) is never re-invited;
- the new session's metadata keeps the call's start-time (RFC 7865 §6.3), its recording
  associated from the new session on, and the final snapshot's stop-time is the call's end.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio

import gateway.plugins.taps.siprec as siprec_plugin
from gateway.core.ids import SeededIds
from gateway.testing.sip_agent import AutoAnswer, SipAgent, simple_sdp
from tests.component.calls.b2bua_env import ALICE_DID, GW, eventually, next_within
from tests.component.calls.dtls_phone import bind
from tests.component.calls.siprec_calls import (
    CALLER_PORT,
    NS,
    SRS_PORT,
    metadata_of,
    rtp,
    siprec_env,
    srs_answer,
)
from tests.component.calls.siprec_counts import counted
from tests.component.calls.siprec_recorded_calls import (
    HELD,
    RESUMED,
    VirtualWallClock,
    directions,
    recorded_call,
    stamp_of,
)

NEW_PORTS = (SRS_PORT + 4, SRS_PORT + 6)


def ids_of(body: bytes) -> tuple[str | None, list[str | None], list[str | None]]:
    """The metadata's communication session id, participant ids and stream ids."""
    root = metadata_of(body)
    session = root.find("r:session", NS)
    assert session is not None
    return (
        session.get("session_id"),
        [p.get("participant_id") for p in root.findall("r:participant", NS)],
        [s.get("stream_id") for s in root.findall("r:stream", NS)],
    )


async def test_after_a_481_a_new_recording_session_takes_the_rest_of_the_call(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.plugins.taps.siprec")
    env, srs = await siprec_env(nursery, tmp_path, voipgw_seed, alice_auto=AutoAnswer())
    call, to_caller_side, first_call_id = await recorded_call(env, srs)
    first = srs.requests("INVITE")[0]

    with (
        await bind(CALLER_PORT) as caller,
        await bind(SRS_PORT) as old_port,
        await bind(NEW_PORTS[0]) as new_port,
    ):
        await caller.sendto(rtp(1, 0x11, 0x1111), to_caller_side)
        with trio.fail_after(2):
            assert (await old_port.recvfrom(2048))[0] == rtp(1, 0x11, 0x1111)

        assert (await call.reinvite(HELD)).status == 200  # type: ignore[attr-defined]
        update = await srs.next_request("INVITE", timeout=10)
        await srs.respond(update, 481)  # the SRS restarted: it knows no such session
        again = await srs.next_call(timeout=5)  # at once, a new dialog
        invite = again.invite
        assert invite.call_id != first_call_id and invite.to.tag is None
        assert invite.headers.get("Require") == "siprec"
        assert ids_of(invite.body) == ids_of(first.body)  # the same CS, parties and streams
        assert directions(again.incoming) == ["inactive", "inactive"]  # type: ignore[arg-type]
        await again.answer(200, sdp=srs_answer(ports=NEW_PORTS))
        await srs.next_request("ACK", timeout=5)
        await eventually(lambda: counted(env, "session_reopened", 1))
        assert counted(env, "session_gone", 0)

        assert (await call.reinvite(RESUMED)).status == 200  # type: ignore[attr-defined]
        resumed = await srs.next_request("INVITE", timeout=10)
        assert resumed.request.call_id == invite.call_id  # the new session's re-INVITE
        assert directions(resumed) == ["sendonly", "sendonly"]
        await srs.respond(
            resumed, 200, body=srs_answer(ports=NEW_PORTS), content_type="application/sdp"
        )
        for seq in range(2, 6):
            await caller.sendto(rtp(seq, 0x11, 0x1111), to_caller_side)
            await trio.sleep(0.02)
        got = []
        with trio.move_on_after(2):
            while len(got) < 4:
                got.append((await new_port.recvfrom(2048))[0])
        assert got == [rtp(seq, 0x11, 0x1111) for seq in range(2, 6)]
        with trio.move_on_after(0.5) as waited:
            await old_port.recvfrom(2048)
        assert waited.cancelled_caught  # nothing more to the old address

    await call.bye()  # type: ignore[attr-defined]
    snapshot = await srs.next_request("INVITE", timeout=10)
    assert snapshot.request.call_id == invite.call_id
    await srs.respond(
        snapshot, 200, body=srs_answer(ports=NEW_PORTS), content_type="application/sdp"
    )
    bye = await srs.next_request("BYE", timeout=10)
    assert bye.request.call_id == invite.call_id
    assert "recording goes on in a new recording session" in caplog.text


async def test_an_srs_that_refuses_the_new_session_is_followed_by_the_fallback(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, srs = await siprec_env(
        nursery,
        tmp_path,
        voipgw_seed,
        alice_auto=AutoAnswer(),
        fallbacks=["sip:srs@127.0.0.10:5060"],
    )
    spare = SipAgent(
        env.network,
        ("127.0.0.10", 5060),
        ids=SeededIds(voipgw_seed + 10),
        user="srs",
        proxy=GW,
        auto=None,
    )
    await nursery.start(spare.serve)
    call, _, _ = await recorded_call(env, srs)
    first = srs.requests("INVITE")[0]
    assert (await call.reinvite(HELD)).status == 200  # type: ignore[attr-defined]
    await srs.respond(await srs.next_request("INVITE", timeout=10), 481)
    await (await srs.next_call(timeout=5)).answer(503)  # still starting up
    taken = await spare.next_call(timeout=5)
    assert ids_of(taken.invite.body) == ids_of(first.body)
    await taken.answer(200, sdp=srs_answer())
    await eventually(lambda: counted(env, "session_reopened", 1))
    await call.bye()  # type: ignore[attr-defined]
    await spare.respond(
        await spare.next_request("INVITE", timeout=10),  # the final snapshot
        200,
        body=srs_answer(),
        content_type="application/sdp",
    )
    bye = await spare.next_request("BYE", timeout=10)
    assert bye.request.call_id == taken.invite.call_id
    assert srs.requests("BYE") == []


async def test_when_no_recorder_takes_a_new_session_the_call_goes_on_unrecorded(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.plugins.taps.siprec")
    env, srs = await siprec_env(nursery, tmp_path, voipgw_seed, alice_auto=AutoAnswer())
    call, to_caller_side, _ = await recorded_call(env, srs)
    assert (await call.reinvite(HELD)).status == 200  # type: ignore[attr-defined]
    await srs.respond(await srs.next_request("INVITE", timeout=10), 481)
    tried = []
    for _ in range(3):  # three rounds, 2 s then 4 s apart (up to half again at random)
        attempt = await srs.next_call(timeout=10)
        tried.append(trio.current_time())
        await attempt.answer(503)
    assert 2.0 <= tried[1] - tried[0] <= 3.1 and 4.0 <= tried[2] - tried[1] <= 6.1
    await eventually(lambda: counted(env, "session_gone", 1))
    assert counted(env, "session_reopened", 0)
    assert "no new one could be opened" in caplog.text

    with await bind(CALLER_PORT) as caller, await bind(SRS_PORT) as old_port:
        for seq in range(2, 6):
            await caller.sendto(rtp(seq, 0x11, 0x1111), to_caller_side)
            await trio.sleep(0.02)
        with trio.move_on_after(2) as waited:
            await old_port.recvfrom(2048)
        assert waited.cancelled_caught  # the copies stopped

    assert (await call.reinvite(RESUMED)).status == 200  # type: ignore[attr-defined]
    assert await next_within(srs, "INVITE", 30) is None  # nothing more reaches the SRS
    assert env.calls == 1  # the call goes on
    await call.bye()  # type: ignore[attr-defined]
    await eventually(lambda: env.calls == 0)
    assert srs.requests("BYE") == [] and len(srs.requests("INVITE")) == 5


async def test_an_srs_that_hangs_up_is_not_re_invited(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, srs = await siprec_env(nursery, tmp_path, voipgw_seed, alice_auto=AutoAnswer())
    call = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=simple_sdp("127.0.0.1", CALLER_PORT))
    assert (await call.final()).status == 200
    recording = await srs.next_call()
    await recording.answer(200, sdp=srs_answer())
    await srs.next_request("ACK", timeout=5)
    assert (await recording.bye()).status == 200  # the SRS ends the recording on purpose
    assert (await call.reinvite(HELD)).status == 200  # type: ignore[attr-defined]
    assert await next_within(srs, "INVITE", 40) is None  # neither re-INVITE nor new session
    assert counted(env, "session_reopened", 0) and counted(env, "session_gone", 0)
    await call.bye()  # type: ignore[attr-defined]
    await eventually(lambda: env.calls == 0)


async def test_a_new_recording_session_keeps_the_calls_start_time_and_stops_at_its_end(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(siprec_plugin, "time", VirtualWallClock())
    env, srs = await siprec_env(nursery, tmp_path, voipgw_seed, alice_auto=AutoAnswer())
    call, _, _ = await recorded_call(env, srs)
    first = metadata_of(srs.requests("INVITE")[0].body)
    started = stamp_of(first.findtext("r:session/r:start-time", namespaces=NS))

    await trio.sleep(40)
    assert (await call.reinvite(HELD)).status == 200  # type: ignore[attr-defined]
    await srs.respond(await srs.next_request("INVITE", timeout=10), 481)
    again = await srs.next_call(timeout=5)
    root = metadata_of(again.invite.body)
    # The communication session began when it did; only its recording's association is new.
    assert stamp_of(root.findtext("r:session/r:start-time", namespaces=NS)) == started
    assert root.find("r:session/r:stop-time", NS) is None
    associated = stamp_of(root.findtext("r:sessionrecordingassoc/r:associate-time", namespaces=NS))
    assert 40 <= associated - started <= 41
    await again.answer(200, sdp=srs_answer(ports=NEW_PORTS))
    await srs.next_request("ACK", timeout=5)

    await trio.sleep(20)
    await call.bye()  # type: ignore[attr-defined]
    snapshot = await srs.next_request("INVITE", timeout=10)
    assert snapshot.request.call_id == again.invite.call_id
    final = metadata_of(snapshot.request.body)
    assert stamp_of(final.findtext("r:session/r:start-time", namespaces=NS)) == started
    assert 60 <= stamp_of(final.findtext("r:session/r:stop-time", namespaces=NS)) - started <= 61
    await srs.respond(
        snapshot, 200, body=srs_answer(ports=NEW_PORTS), content_type="application/sdp"
    )
    await srs.next_request("BYE", timeout=10)
