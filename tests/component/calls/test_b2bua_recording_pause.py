"""Pausing and resuming a call's recording on request (``voipgw recording pause|resume``, the
control socket's ``recording`` query; PCI DSS), through the B2BUA with a SIPREC recorder (a SIP
agent on the in-memory network) and a lawful interception of the same call, the media on real
127.0.0.1 sockets, in virtual time:

- a pause re-INVITEs the SRS with both streams a=inactive and no metadata (RFC 7866 §7.1.1),
  and no copy reaches it while paused, while the interception's X3 gets every packet (it is
  never paused, nor named); the call's record and the log say when and by whom; a second pause
  changes nothing; the resume re-INVITEs it sendonly and the copies flow again;
- the resume's copies wait for the SRS's answer to its re-INVITE (it took the streams inactive);
- a pause of a call that is not live, or not recorded (intercepted only: the answer a call
  tapped by nothing gets), is refused with the reason, the interception not given away.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import trio

import gateway.plugins.taps.siprec as siprec_plugin
from gateway.core.control import ControlError, respond
from gateway.core.ids import SeededIds
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.plugins.taps.intercept import pdu
from gateway.testing.sip_agent import AutoAnswer, SipAgent, simple_sdp
from tests.component.calls.b2bua_env import GW, eventually, next_within
from tests.component.calls.dtls_phone import bind
from tests.component.calls.intercept_calls import (
    ALICE_DID,
    Env,
    activate,
    answered_with_media,
    intercept_env,
    pki,  # noqa: F401 (a fixture)
)
from tests.component.calls.recorder_calls import rtp
from tests.component.calls.siprec_calls import (
    CALLEE_PORT,
    CALLER_PORT,
    SRS,
    SRS_PORT,
    siprec_env,
    srs_answer,
)
from tests.component.calls.siprec_recorded_calls import directions, recorded_call
from tests.interop.harness.pki import Issued, TestCa


def ask(env: Env, action: str, call_id: str, by: str = "agent 7") -> dict[str, object]:
    """The gateway's answer to a control socket ``recording`` request."""
    request = json.dumps({"query": "recording", "action": action, "call_id": call_id, "by": by})
    answer = json.loads(respond(request.encode() + b"\n", env.b2bua.gateway.control_answer))
    assert isinstance(answer, dict)
    return answer


async def recorded_and_intercepted(
    nursery: trio.Nursery, tmp_path: Path, seed: int, certs: tuple[TestCa, Issued, Issued]
) -> tuple[Env, SipAgent]:
    env = await intercept_env(
        nursery,
        tmp_path,
        seed,
        certs,
        plugins=(("siprec", siprec_plugin),),
        tables={"siprec": {"srs": "sip:srs@127.0.0.9:5060", "trunks": ["carrier"]}},
    )
    srs = SipAgent(env.b2bua.network, SRS, ids=SeededIds(seed + 9), user="srs", proxy=GW, auto=None)
    await nursery.start(srs.serve)
    await env.provision(activate(f"<e164Number>{ALICE_DID[1:]}</e164Number>"))
    return env, srs


async def copies(sock: trio.socket.SocketType, wait: float = 1.0) -> list[bytes]:
    """What reaches ``sock`` until nothing more comes for ``wait`` s."""
    got: list[bytes] = []
    while True:
        with trio.move_on_after(wait) as waited:
            got.append((await sock.recvfrom(2048))[0])
        if waited.cancelled_caught:
            return got


async def test_a_paused_recording_sends_nothing_the_srs_streams_inactive_the_interception_all(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    pki: tuple[TestCa, Issued, Issued],  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    env, srs = await recorded_and_intercepted(nursery, tmp_path, voipgw_seed, pki)
    call, talk = await answered_with_media(env)
    recording = await srs.next_call()
    await recording.answer(200, sdp=srs_answer())
    await srs.next_request("ACK", timeout=5)
    assert env.b2bua.gateway.calls is not None
    (gateway_call,) = env.b2bua.gateway.calls.calls
    try:
        with await bind(SRS_PORT) as srs_caller:
            await talk.packets(0, 5)
            assert await copies(srs_caller) == [rtp(seq, 0x00, 0x1111) for seq in range(5)]

            # By the SIP Call-ID, as log lines name the call.
            answer = ask(env, "pause", gateway_call.id)
            assert answer == {
                "call_id": gateway_call.record_id,
                "paused": True,
                "changed": True,
                "recordings": ["siprec"],  # never the interception
            }
            paused = await srs.next_request("INVITE", timeout=10)
            assert paused.request.call_id == recording.invite.call_id
            assert directions(paused) == ["inactive", "inactive"]
            # RFC 7866 §7.1.1: the metadata does not change, so none is sent.
            assert paused.request.headers.get("Content-Type") == "application/sdp"
            await srs.respond(paused, 200, body=srs_answer(), content_type="application/sdp")
            assert ask(env, "pause", gateway_call.record_id)["changed"] is False

            await talk.packets(5, 10)
            assert await copies(srs_caller) == []  # nothing of the paused call to the SRS
            taps = gateway_call.security_record()["taps"]
            assert taps["paused"] is True and "intercept" not in taps["names"]
            (pause,) = taps["pauses"]
            assert pause["paused_by"] == "agent 7" and "resumed_at" not in pause

            answer = ask(env, "resume", gateway_call.record_id, by="supervisor 2")
            assert answer["paused"] is False and answer["changed"] is True
            resumed = await srs.next_request("INVITE", timeout=10)
            assert directions(resumed) == ["sendonly", "sendonly"]
            await srs.respond(resumed, 200, body=srs_answer(), content_type="application/sdp")
            await srs.next_request("ACK", timeout=5)
            await trio.sleep(1)  # virtual time: the copies wait until the answer is taken
            await talk.packets(15, 5)
            assert await copies(srs_caller) == [rtp(seq, 0x00, 0x1111) for seq in range(15, 20)]
    finally:
        talk.close()
    (pause,) = gateway_call.security_record()["taps"]["pauses"]
    assert pause["resumed_by"] == "supervisor 2"
    assert pause["paused_at"] <= pause["resumed_at"]
    # The interception got all of it, the paused stretch included.
    await eventually(
        lambda: len([p for p in env.x3() if p.direction == pdu.TO_TARGET]) >= 20, timeout=5
    )
    from_trunk = [p.payload for p in env.x3() if p.direction == pdu.TO_TARGET]
    assert from_trunk == [rtp(seq, 0x00, 0x1111) for seq in range(20)]
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("gateway.core")]
    assert any(
        f"call {gateway_call.id}: recording paused by agent 7 (siprec)" in line for line in lines
    ), lines
    assert any(
        f"call {gateway_call.id}: recording resumed by supervisor 2 (siprec)" in line
        for line in lines
    ), lines
    assert not [line for line in lines if "intercept" in line]
    await call.bye()
    await srs.next_request("INVITE", timeout=10)  # the final snapshot
    assert await next_within(srs, "BYE", 10) is not None


async def test_a_pause_of_an_unknown_or_unrecorded_call_is_refused_with_the_reason(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    pki: tuple[TestCa, Issued, Issued],  # noqa: F811
) -> None:
    # Intercepted, not recorded: the answer is the one for a call tapped by nothing, so that
    # whoever may pause recordings does not learn of the interception.
    env = await intercept_env(nursery, tmp_path, voipgw_seed, pki)
    await env.provision(activate(f"<e164Number>{ALICE_DID[1:]}</e164Number>"))
    call, talk = await answered_with_media(env)
    talk.close()
    assert env.b2bua.gateway.calls is not None
    (gateway_call,) = env.b2bua.gateway.calls.calls
    assert ask(env, "pause", gateway_call.record_id) == {
        "error": f"call {gateway_call.record_id} is not recorded: nothing to pause"
    }
    assert ask(env, "pause", "no-such-call@127.0.0.1") == {
        "error": "no live call 'no-such-call@127.0.0.1' on this gateway"
    }
    assert "taps" not in gateway_call.security_record()
    await call.bye()
    await eventually(lambda: env.b2bua.calls == 0)
    assert ask(env, "resume", gateway_call.record_id) == {
        "error": f"no live call {gateway_call.record_id!r} on this gateway"
    }


async def test_the_resumed_copies_wait_for_the_srs_to_answer_the_resume(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    # The SRS took the streams inactive (the pause); RFC 3264 §8: until it answers the
    # resume's re-INVITE they are, and no copy goes.
    env, srs = await siprec_env(nursery, tmp_path, voipgw_seed, alice_auto=AutoAnswer())
    call, to_caller_side, _ = await recorded_call(env, srs)
    manager = env.gateway.calls
    assert manager is not None
    (gateway_call,) = manager.calls
    manager.pause_recording(gateway_call.id, True, by="agent 7")
    paused = await srs.next_request("INVITE", timeout=10)
    await srs.respond(paused, 200, body=srs_answer(), content_type="application/sdp")
    await srs.next_request("ACK", timeout=5)
    manager.pause_recording(gateway_call.id, False, by="agent 7")
    resumed = await srs.next_request("INVITE", timeout=10)
    assert directions(resumed) == ["sendonly", "sendonly"]
    with await bind(CALLER_PORT) as caller, await bind(SRS_PORT) as srs_caller:
        for seq in range(3):
            await caller.sendto(rtp(seq, 0x00, 0x1111), to_caller_side)
        assert await copies(srs_caller) == []  # not answered yet
        await srs.respond(resumed, 200, body=srs_answer(), content_type="application/sdp")
        await srs.next_request("ACK", timeout=5)
        await trio.sleep(1)  # virtual time: the answer taken
        for seq in range(3, 6):
            await caller.sendto(rtp(seq, 0x00, 0x1111), to_caller_side)
        assert await copies(srs_caller) == [rtp(seq, 0x00, 0x1111) for seq in range(3, 6)]
    await call.bye()  # type: ignore[attr-defined]
    await srs.next_request("INVITE", timeout=10)


async def test_a_pause_asked_while_the_call_rings_applies_when_its_recording_starts(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # An agent pauses at once (the card digits come first): the call is not answered, no
    # recording has started. The pause is kept, and the recording starts paused: its first
    # INVITE offers every stream inactive and no copy reaches the SRS until the resume.
    caplog.set_level(logging.INFO)
    env, srs = await siprec_env(nursery, tmp_path, voipgw_seed)
    call = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=simple_sdp("127.0.0.1", CALLER_PORT))
    leg_b = await env.alice.next_call()
    await leg_b.ring()
    manager = env.gateway.calls
    assert manager is not None
    (gateway_call,) = manager.calls
    answer = manager.pause_recording(gateway_call.id, True, by="agent 7")
    assert answer == {
        "call_id": gateway_call.record_id,
        "paused": True,
        "changed": True,
        "recordings": [],
        "pending": True,
    }
    assert manager.recordings_paused == {gateway_call}
    assert manager.recording_pauses == {
        "pause": 1,
        "resume": 0,
        "preference_pause": 0,
        "preference_resume": 0,
    }
    await leg_b.answer(200, sdp=simple_sdp("127.0.0.1", CALLEE_PORT))
    final = await call.final()
    assert final.status == 200
    to_caller_side = ("127.0.0.1", parse_sdp_untrusted(final.body).media[0].port)
    recording = await srs.next_call()
    assert directions(recording.incoming) == ["inactive", "inactive"]  # type: ignore[arg-type]
    await recording.answer(200, sdp=srs_answer())
    await srs.next_request("ACK", timeout=5)
    taps = gateway_call.security_record()["taps"]
    assert taps["paused"] is True and taps["pauses"][0]["paused_by"] == "agent 7"
    with await bind(CALLER_PORT) as caller, await bind(SRS_PORT) as srs_caller:
        for seq in range(3):
            await caller.sendto(rtp(seq, 0x00, 0x1111), to_caller_side)
        assert await copies(srs_caller) == []  # paused from the start
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("gateway.core")]
    assert f"call {gateway_call.id}: recording paused by agent 7 (siprec)" in lines, lines
    manager.pause_recording(gateway_call.id, False, by="agent 7")
    resumed = await srs.next_request("INVITE", timeout=10)  # the first since it opened
    assert directions(resumed) == ["sendonly", "sendonly"]
    await srs.respond(resumed, 200, body=srs_answer(), content_type="application/sdp")
    await srs.next_request("ACK", timeout=5)
    assert manager.recordings_paused == set()
    await call.bye()  # type: ignore[attr-defined]
    await srs.next_request("INVITE", timeout=10)


async def test_a_pause_asked_before_the_answer_of_a_call_no_recording_takes_leaves_the_gauge(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    env, _ = await siprec_env(nursery, tmp_path, voipgw_seed, trunks=[], accounts=["nobody"])
    call = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=simple_sdp("127.0.0.1", CALLER_PORT))
    leg_b = await env.alice.next_call()
    manager = env.gateway.calls
    assert manager is not None
    (gateway_call,) = manager.calls
    assert manager.pause_recording(gateway_call.id, True, by="agent 7")["pending"] is True
    assert manager.recordings_paused == {gateway_call}
    await leg_b.answer(200, sdp=simple_sdp("127.0.0.1", CALLEE_PORT))
    assert (await call.final()).status == 200
    await eventually(lambda: manager.recordings_paused == set())
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("gateway.core")]
    assert (
        f"call {gateway_call.id}: recording pause asked by agent 7: the call is not recorded"
        in lines
    ), lines
    with pytest.raises(ControlError, match="is not recorded: nothing to pause"):
        manager.pause_recording(gateway_call.id, True, by="agent 7")  # answered: as before
    await call.bye()  # type: ignore[attr-defined]


async def test_a_pause_while_an_intercepted_call_rings_gets_the_answer_an_untapped_call_gets(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    pki: tuple[TestCa, Issued, Issued],  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Only the interception is configured (covert, it decides at the call's start): a pause
    # asked while an intercepted call rings is refused as for a call tapped by nothing, not
    # kept "for its recording" (that answer would tell whoever may pause recordings that a
    # tap is configured, lawful_intercept.md "Keeping it covert").
    caplog.set_level(logging.INFO)
    env = await intercept_env(nursery, tmp_path, voipgw_seed, pki)
    await env.provision(activate(f"<e164Number>{ALICE_DID[1:]}</e164Number>"))
    call, leg_b = await env.trunk_calls_alice()
    await leg_b.ring()
    manager = env.b2bua.gateway.calls
    assert manager is not None
    (gateway_call,) = manager.calls
    assert gateway_call.taps is not None  # the interception took it at its start
    assert ask(env, "pause", gateway_call.record_id) == {
        "error": f"call {gateway_call.record_id} is not recorded: nothing to pause"
    }
    assert gateway_call.pause_before_recording is None
    assert manager.recordings_paused == set()
    assert manager.recording_pauses == {
        "pause": 0,
        "resume": 0,
        "preference_pause": 0,
        "preference_resume": 0,
    }
    await leg_b.answer(200, sdp=simple_sdp("127.0.0.1", CALLEE_PORT))
    assert (await call.final()).status == 200
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("gateway.core")]
    assert not [line for line in lines if "intercept" in line or "before its recording" in line]
    await call.bye()
    await eventually(lambda: env.b2bua.calls == 0)


async def test_a_pause_while_an_intercepted_call_no_recording_takes_rings_is_kept_as_any(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    pki: tuple[TestCa, Issued, Issued],  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A recording tap is configured beside the interception but does not select the call:
    # the intercepted call, not answered yet, gets the answer any call gets then (the pause
    # kept for a recording that may start), and at the answer the line of a call no recording
    # took; the interception is never named, never paused, and the call leaves the gauge.
    caplog.set_level(logging.INFO)
    env = await intercept_env(
        nursery,
        tmp_path,
        voipgw_seed,
        pki,
        plugins=(("siprec", siprec_plugin),),
        tables={"siprec": {"srs": "sip:srs@127.0.0.9:5060", "accounts": ["nobody"]}},
    )
    await env.provision(activate(f"<e164Number>{ALICE_DID[1:]}</e164Number>"))
    call, leg_b = await env.trunk_calls_alice()
    await leg_b.ring()
    manager = env.b2bua.gateway.calls
    assert manager is not None
    (gateway_call,) = manager.calls
    assert gateway_call.taps is not None  # the interception took it at its start
    assert ask(env, "pause", gateway_call.record_id) == {
        "call_id": gateway_call.record_id,
        "paused": True,
        "changed": True,
        "recordings": [],
        "pending": True,
    }
    assert manager.recordings_paused == {gateway_call}
    await leg_b.answer(200, sdp=simple_sdp("127.0.0.1", CALLEE_PORT))
    assert (await call.final()).status == 200
    await eventually(lambda: manager.recordings_paused == set())
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("gateway.core")]
    assert (
        f"call {gateway_call.id}: recording pause asked by agent 7: the call is not recorded"
        in lines
    ), lines
    assert not [line for line in lines if "intercept" in line]
    assert "taps" not in gateway_call.security_record()
    assert ask(env, "pause", gateway_call.record_id) == {
        "error": f"call {gateway_call.record_id} is not recorded: nothing to pause"
    }
    await call.bye()
    await eventually(lambda: env.b2bua.calls == 0)


async def test_a_resume_the_srs_answers_481_goes_on_in_the_new_recording_session(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    # The SRS restarted during the pause: the resume's re-INVITE gets 481 (RFC 5057 §5.1) and
    # a new recording session offers the streams as they are, sendonly. Once the SRS answers
    # it the copies go there: nothing more is waited for (no pause behind that session).
    env, srs = await siprec_env(nursery, tmp_path, voipgw_seed, alice_auto=AutoAnswer())
    call, to_caller_side, first_call_id = await recorded_call(env, srs)
    manager = env.gateway.calls
    assert manager is not None
    (gateway_call,) = manager.calls
    manager.pause_recording(gateway_call.id, True, by="agent 7")
    paused = await srs.next_request("INVITE", timeout=10)
    await srs.respond(paused, 200, body=srs_answer(), content_type="application/sdp")
    await srs.next_request("ACK", timeout=5)
    manager.pause_recording(gateway_call.id, False, by="agent 7")
    resumed = await srs.next_request("INVITE", timeout=10)
    await srs.respond(resumed, 481)  # the SRS restarted: it knows no such session
    again = await srs.next_call(timeout=5)
    assert again.invite.call_id != first_call_id
    assert directions(again.incoming) == ["sendonly", "sendonly"]  # type: ignore[arg-type]
    new_ports = (SRS_PORT + 4, SRS_PORT + 6)
    await again.answer(200, sdp=srs_answer(ports=new_ports))
    await srs.next_request("ACK", timeout=5)
    await trio.sleep(1)  # virtual time: the answer taken
    with await bind(CALLER_PORT) as caller, await bind(new_ports[0]) as srs_caller:
        for seq in range(3):
            await caller.sendto(rtp(seq, 0x00, 0x1111), to_caller_side)
        assert await copies(srs_caller) == [rtp(seq, 0x00, 0x1111) for seq in range(3)]
    await call.bye()  # type: ignore[attr-defined]
    await srs.next_request("INVITE", timeout=10)


async def test_a_resume_while_the_new_recording_session_opens_paused_waits_for_its_re_invite(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    # The pause's re-INVITE gets 481: the new recording session opens paused (its streams
    # inactive). A resume while that INVITE is out is not in it: the SRS takes the streams
    # inactive, so the copies wait for the re-INVITE that follows and its answer.
    env, srs = await siprec_env(nursery, tmp_path, voipgw_seed, alice_auto=AutoAnswer())
    call, to_caller_side, _ = await recorded_call(env, srs)
    manager = env.gateway.calls
    assert manager is not None
    (gateway_call,) = manager.calls
    manager.pause_recording(gateway_call.id, True, by="agent 7")
    paused = await srs.next_request("INVITE", timeout=10)
    await srs.respond(paused, 481)
    again = await srs.next_call(timeout=5)
    assert directions(again.incoming) == ["inactive", "inactive"]  # type: ignore[arg-type]
    manager.pause_recording(gateway_call.id, False, by="agent 7")
    new_ports = (SRS_PORT + 4, SRS_PORT + 6)
    await again.answer(200, sdp=srs_answer(ports=new_ports))
    await srs.next_request("ACK", timeout=5)
    resumed = await srs.next_request("INVITE", timeout=10)
    assert resumed.request.call_id == again.invite.call_id
    assert directions(resumed) == ["sendonly", "sendonly"]
    with await bind(CALLER_PORT) as caller, await bind(new_ports[0]) as srs_caller:
        for seq in range(3):
            await caller.sendto(rtp(seq, 0x00, 0x1111), to_caller_side)
        assert await copies(srs_caller) == []  # the SRS took them inactive
        await srs.respond(
            resumed, 200, body=srs_answer(ports=new_ports), content_type="application/sdp"
        )
        await srs.next_request("ACK", timeout=5)
        await trio.sleep(1)  # virtual time: the answer taken
        for seq in range(3, 6):
            await caller.sendto(rtp(seq, 0x00, 0x1111), to_caller_side)
        assert await copies(srs_caller) == [rtp(seq, 0x00, 0x1111) for seq in range(3, 6)]
    await call.bye()  # type: ignore[attr-defined]
    await srs.next_request("INVITE", timeout=10)


async def test_a_resume_the_srs_refused_is_sent_again_a_while_later(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The SRS refuses the resume's re-INVITE for good (488: no resend) and the call does not
    # change again: the copies wait for the SRS to take a resume, so it is sent again after
    # RESUME_AGAIN_AFTER; once answered the rest of the call is recorded.
    caplog.set_level(logging.WARNING, logger="gateway.plugins.taps.siprec")
    env, srs = await siprec_env(nursery, tmp_path, voipgw_seed, alice_auto=AutoAnswer())
    call, to_caller_side, _ = await recorded_call(env, srs)
    manager = env.gateway.calls
    assert manager is not None
    (gateway_call,) = manager.calls
    manager.pause_recording(gateway_call.id, True, by="agent 7")
    paused = await srs.next_request("INVITE", timeout=10)
    await srs.respond(paused, 200, body=srs_answer(), content_type="application/sdp")
    await srs.next_request("ACK", timeout=5)
    manager.pause_recording(gateway_call.id, False, by="agent 7")
    refused = await srs.next_request("INVITE", timeout=10)
    refused_at = trio.current_time()
    await srs.respond(refused, 488)
    again = await srs.next_request("INVITE", timeout=2 * siprec_plugin.RESUME_AGAIN_AFTER)
    assert trio.current_time() - refused_at >= siprec_plugin.RESUME_AGAIN_AFTER
    assert directions(again) == ["sendonly", "sendonly"]
    assert "the SRS refused an update (488), given up until the call changes again" in caplog.text
    with await bind(CALLER_PORT) as caller, await bind(SRS_PORT) as srs_caller:
        await srs.respond(again, 200, body=srs_answer(), content_type="application/sdp")
        await srs.next_request("ACK", timeout=5)
        await trio.sleep(1)  # virtual time: the answer taken
        for seq in range(3):
            await caller.sendto(rtp(seq, 0x00, 0x1111), to_caller_side)
        assert await copies(srs_caller) == [rtp(seq, 0x00, 0x1111) for seq in range(3)]
    # Taken: not sent again.
    assert await next_within(srs, "INVITE", 3 * siprec_plugin.RESUME_AGAIN_AFTER) is None
    await call.bye()  # type: ignore[attr-defined]
    await srs.next_request("INVITE", timeout=10)
