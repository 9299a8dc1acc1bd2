"""The recording indication towards recording-aware parties (RFC 7866 §6.1, §7), through the
B2BUA with a SIPREC recorder (a SIP agent on the in-memory network), in virtual time:

- a caller or callee that says ``Supported: record-aware`` is told ``a=record:on`` in a
  re-INVITE once the SRS has answered (never before), ``paused`` at a pause, ``on`` once the
  SRS took the resume, ``off`` when the SRS hangs up; its o= versions consecutive;
- an unaware party gets nothing new (no re-INVITE, no a=record);
- a storm of pauses and resumes is coalesced: at most one re-INVITE per interval, the last
  state;
- a refusal is a notice (the call goes on), a 491 is tried again after RFC 3261 §14.1's wait;
- ``a=recordpref`` is read, logged, in the record, and with ``recordpref = "pause"`` pauses;
- a lawful interception never shows: an intercepted call's aware caller sees what an
  unrecorded call's sees, and an intercepted and recorded one what a recorded one's sees.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pytest
import trio

import gateway.plugins.taps.siprec as siprec_plugin
from gateway.core.cli import describe_recording_parties, describe_taps
from gateway.core.ids import SeededIds
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.testing.sip_agent import Received, SipAgent, simple_sdp
from tests.component.calls.b2bua_env import GW, B2bua, eventually, next_within, start_b2bua
from tests.component.calls.intercept_calls import (
    activate,
    intercept_env,
    pki,  # noqa: F401 (a fixture)
)
from tests.component.calls.location_calls import BY_VALUE, MIXED, MOVED_ONLY, located_body
from tests.component.calls.siprec_calls import (
    ALICE_DID,
    CALLEE_PORT,
    CALLER_PORT,
    SRS,
    siprec_env,
    srs_answer,
)
from tests.component.calls.transfer_calls import bob_phone
from tests.interop.harness.pki import Issued, TestCa

AWARE = [("Supported", "record-aware")]


def records(body: bytes) -> list[str | None]:
    """Each m= line's a=record value (None: none), and the session level's must be none."""
    sd = parse_sdp_untrusted(body)
    assert sd.attributes.get("record") is None
    return [m.attributes.get("record") for m in sd.media]


def version(body: bytes) -> int:
    return parse_sdp_untrusted(body).origin.session_version


async def call_between(
    env: B2bua,
    *,
    caller_aware: bool = False,
    callee_aware: bool = False,
    caller_sdp: bytes | None = None,
    callee_extra: Sequence[tuple[str, str]] = (),
    callee_sdp: bytes | None = None,
) -> tuple[object, object, bytes]:
    """The trunk calls alice, alice answers (with ``callee_extra`` headers); (the caller's
    call, alice's, the 200's SDP)."""
    call = await env.trunk.invite(
        env.did_uri(ALICE_DID),
        sdp=caller_sdp or simple_sdp("127.0.0.1", CALLER_PORT),
        extra=AWARE if caller_aware else (),
    )
    leg_b = await env.alice.next_call()
    await env.alice.respond(
        leg_b.incoming,  # type: ignore[arg-type]
        200,
        body=callee_sdp or simple_sdp("127.0.0.1", CALLEE_PORT),
        extra=[*(AWARE if callee_aware else ()), *callee_extra],
    )
    final = await call.final()
    assert final.status == 200
    return call, leg_b, final.body


async def srs_answers(srs: SipAgent) -> Received:
    recording = await srs.next_call()
    await recording.answer(200, sdp=srs_answer())
    await srs.next_request("ACK", timeout=5)
    return recording  # type: ignore[return-value]


async def accept(agent: SipAgent, received: Received) -> None:
    """Answer a re-INVITE 200 with the agent's answer (an agent with ``auto=None`` does not)."""
    await agent.respond(received, 200, body=agent.answer_sdp(received.request.body))
    await agent.next_request("ACK", timeout=5)


def gateway_call(env: B2bua) -> object:
    assert env.gateway.calls is not None
    (call,) = env.gateway.calls.calls
    return call


async def test_a_record_aware_caller_is_told_on_once_the_srs_answered_the_callee_nothing(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    env, srs = await siprec_env(nursery, tmp_path, voipgw_seed, alice_auto=None)
    _, _, answer = await call_between(env, caller_aware=True)
    # The call's 200 goes before the SRS answered: nothing to say yet (RFC 7866 §7.1.1).
    assert records(answer) == [None]
    assert await next_within(env.trunk, "INVITE", 5) is None  # nor while the SRS is silent
    await srs_answers(srs)
    told = await env.trunk.next_request("INVITE", timeout=10)
    assert records(told.request.body) == ["on"]
    assert version(told.request.body) == version(answer) + 1  # RFC 3264 §8
    told_sdp = parse_sdp_untrusted(told.request.body)
    answered_sdp = parse_sdp_untrusted(answer)
    assert told_sdp.media[0].port == answered_sdp.media[0].port  # nothing else changed
    assert told_sdp.media[0].formats == answered_sdp.media[0].formats
    await env.trunk.next_request("ACK", timeout=5)
    # The callee did not say record-aware: its one INVITE, no a=record ever.
    assert await next_within(env.alice, "INVITE", 10) is None
    assert all(records(r.body) == [None] for r in env.alice.requests("INVITE"))
    assert "telling the A leg's recording-aware party a=record:on" in caplog.text
    record = gateway_call(env).security_record()  # type: ignore[attr-defined]
    assert record["recording_indication"] == {"a": "on"}
    assert record["a"]["record_aware"] is True
    assert "record_aware" not in record["b"]


async def test_a_record_aware_callee_is_told_paused_at_a_pause_and_on_after_the_srs_took_the_resume(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, srs = await siprec_env(nursery, tmp_path, voipgw_seed, alice_auto=None)
    await call_between(env, callee_aware=True)
    await srs_answers(srs)
    told = await env.alice.next_request("INVITE", timeout=10)
    assert records(told.request.body) == ["on"]
    first = version(told.request.body)
    await accept(env.alice, told)
    assert await next_within(env.trunk, "INVITE", 5) is None  # the caller is unaware

    calls = env.gateway.calls
    assert calls is not None
    call = gateway_call(env)
    calls.pause_recording(call.id, True, by="agent 7")  # type: ignore[attr-defined]
    # The SRS's inactive re-INVITE; the callee is told paused at once (no copies go).
    srs_pause = await srs.next_request("INVITE", timeout=10)
    told = await env.alice.next_request("INVITE", timeout=10)
    assert records(told.request.body) == ["paused"]
    assert version(told.request.body) == first + 1
    await accept(env.alice, told)
    await srs.respond(srs_pause, 200, body=srs_answer())

    srs.auto = None
    calls.pause_recording(call.id, False, by="agent 7")  # type: ignore[attr-defined]
    srs_resume = await srs.next_request("INVITE", timeout=10)
    # Until the SRS takes the resume, no copy goes: the callee stays told paused.
    assert await next_within(env.alice, "INVITE", 5) is None
    await srs.respond(srs_resume, 200, body=srs_answer())
    told = await env.alice.next_request("INVITE", timeout=10)
    assert records(told.request.body) == ["on"]
    assert version(told.request.body) == first + 2


async def test_the_srs_hanging_up_tells_the_aware_caller_off(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, srs = await siprec_env(nursery, tmp_path, voipgw_seed, alice_auto=None)
    call, _, _ = await call_between(env, caller_aware=True)
    recording = await srs_answers(srs)
    told = await env.trunk.next_request("INVITE", timeout=10)
    assert records(told.request.body) == ["on"]
    await recording.bye()  # type: ignore[attr-defined]
    told = await env.trunk.next_request("INVITE", timeout=10)
    assert records(told.request.body) == ["off"]
    # The call goes on.
    assert len(env.gateway.calls.calls) == 1  # type: ignore[union-attr]
    assert (await call.bye()).status == 200  # type: ignore[attr-defined]


async def test_a_recording_no_srs_took_tells_the_aware_caller_nothing(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, srs = await siprec_env(nursery, tmp_path, voipgw_seed, alice_auto=None)
    await call_between(env, caller_aware=True)
    recording = await srs.next_call()
    await recording.answer(503)
    assert await next_within(env.trunk, "INVITE", 20) is None  # never "off" of what never was
    record = gateway_call(env).security_record()  # type: ignore[attr-defined]
    assert record["a"]["record_aware"] is True and "recording_indication" not in record


async def test_a_storm_of_pauses_and_resumes_is_one_re_invite_per_interval_the_last_state(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, srs = await siprec_env(nursery, tmp_path, voipgw_seed, alice_auto=None)
    await call_between(env, caller_aware=True)
    await srs_answers(srs)
    await env.trunk.next_request("INVITE", timeout=10)  # on
    calls = env.gateway.calls
    assert calls is not None
    call = gateway_call(env)
    for _ in range(50):
        calls.pause_recording(call.id, True, by="agent 7")  # type: ignore[attr-defined]
        calls.pause_recording(call.id, False, by="agent 7")  # type: ignore[attr-defined]
    calls.pause_recording(call.id, True, by="agent 7")  # type: ignore[attr-defined]
    await trio.sleep(30)
    told = [records(r.body) for r in env.trunk.requests("INVITE")[1:]]
    # 101 changes: at most a couple of re-INVITEs, the last saying the last state.
    assert 1 <= len(told) <= 3, told
    assert told[-1] == ["paused"]


async def test_a_refused_indication_is_a_notice_a_491_goes_again(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    env, srs = await siprec_env(nursery, tmp_path, voipgw_seed, alice_auto=None)
    statuses = [491, 488]

    async def refuse(received: Received) -> bool:
        if received.request.method != "INVITE" or not statuses:
            return False
        await env.trunk.respond(received, statuses.pop(0))
        return True

    env.trunk.in_dialog = refuse
    call, _, _ = await call_between(env, caller_aware=True)
    await srs_answers(srs)
    crossed = await env.trunk.next_request("INVITE", timeout=10)
    assert records(crossed.request.body) == ["on"]
    # RFC 3261 §14.1: again after the wait (0-2 s: the caller chose its dialog's Call-ID), with
    # the next o= version (the refused offer was sent).
    again = await env.trunk.next_request("INVITE", timeout=10)
    assert records(again.request.body) == ["on"]
    assert version(again.request.body) == version(crossed.request.body) + 1
    # 488: a notice; the call goes on and is not told again the same state.
    assert await next_within(env.trunk, "INVITE", 20) is None
    assert "answered our recording indication re-INVITE 488" in caplog.text
    assert len(env.gateway.calls.calls) == 1  # type: ignore[union-attr]
    assert env.trunk.requests("BYE") == []
    assert (await call.bye()).status == 200  # type: ignore[attr-defined]


async def test_recordpref_is_read_logged_and_in_the_record_and_ignored_by_default(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    env, srs = await siprec_env(nursery, tmp_path, voipgw_seed, alice_auto=None)
    sdp = simple_sdp("127.0.0.1", CALLER_PORT).replace(
        b"m=audio", b"a=recordpref:off\r\nm=audio", 1
    )
    await call_between(env, caller_aware=True, caller_sdp=sdp)
    await srs_answers(srs)
    told = await env.trunk.next_request("INVITE", timeout=10)
    assert records(told.request.body) == ["on"]  # a preference: the SRC decides (§7.2)
    assert "the calling party's recording preference is off" in caplog.text
    record = gateway_call(env).security_record()  # type: ignore[attr-defined]
    assert record["a"]["recordpref"] == "off"
    assert await next_within(srs, "INVITE", 5) is None  # not paused


async def test_recordpref_pause_policy_pauses_the_recording(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, srs = await siprec_env(nursery, tmp_path, voipgw_seed, alice_auto=None, recordpref="pause")
    sdp = simple_sdp("127.0.0.1", CALLER_PORT).replace(
        b"m=audio", b"a=recordpref:pause\r\nm=audio", 1
    )
    await call_between(env, caller_aware=True, caller_sdp=sdp)
    recording = await srs.next_call()
    # The first INVITE offers the streams inactive: the recording starts paused.
    offer = recording.invite.body  # type: ignore[attr-defined]
    assert offer.count(b"a=inactive") == 2, offer
    await recording.answer(200, sdp=srs_answer())
    told = await env.trunk.next_request("INVITE", timeout=10)
    assert records(told.request.body) == ["paused"]


async def test_an_interception_never_shows_to_a_record_aware_caller(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    pki: tuple[TestCa, Issued, Issued],  # noqa: F811
) -> None:
    env = await intercept_env(nursery, tmp_path, voipgw_seed, pki)
    await env.provision(activate(f"<e164Number>{ALICE_DID[1:]}</e164Number>"))
    b2bua = env.b2bua
    _, _, answer = await call_between(b2bua, caller_aware=True, callee_aware=True)
    await eventually(lambda: len(env.x2()) > 0)  # intercepted
    assert records(answer) == [None]
    assert b"record" not in answer
    assert await next_within(b2bua.trunk, "INVITE", 30) is None
    assert await next_within(b2bua.alice, "INVITE", 1) is None
    assert all(b"record" not in r.body for r in b2bua.alice.requests("INVITE"))
    record = gateway_call(b2bua).security_record()  # type: ignore[attr-defined]
    assert "recording_indication" not in record
    # Both parties were seen to be record-aware: nothing was said for want of a recording.
    assert record["a"]["record_aware"] is True and record["b"]["record_aware"] is True


async def test_an_intercepted_recorded_call_shows_as_a_recorded_one(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    pki: tuple[TestCa, Issued, Issued],  # noqa: F811
) -> None:
    env = await intercept_env(
        nursery,
        tmp_path,
        voipgw_seed,
        pki,
        plugins=(("siprec", siprec_plugin),),
        tables={"siprec": {"srs": "sip:srs@127.0.0.9:5060", "trunks": ["carrier"]}},
    )
    srs = SipAgent(
        env.b2bua.network, SRS, ids=SeededIds(voipgw_seed + 9), user="srs", proxy=GW, auto=None
    )
    await nursery.start(srs.serve)
    await env.provision(activate(f"<e164Number>{ALICE_DID[1:]}</e164Number>"))
    b2bua = env.b2bua
    _, _, answer = await call_between(b2bua, caller_aware=True)
    await eventually(lambda: len(env.x2()) > 0)
    assert records(answer) == [None]
    await srs_answers(srs)
    told = await b2bua.trunk.next_request("INVITE", timeout=10)
    assert records(told.request.body) == ["on"]
    assert version(told.request.body) == version(answer) + 1
    assert await next_within(b2bua.trunk, "INVITE", 30) is None
    record = gateway_call(b2bua).security_record()  # type: ignore[attr-defined]
    assert record["recording_indication"] == {"a": "on"}
    assert record["taps"]["names"] == ["siprec"]


async def test_a_transfer_target_that_is_not_aware_gets_no_indication_of_the_aware_transferor(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, srs = await siprec_env(nursery, tmp_path, voipgw_seed, alice_auto=None)
    bob = await bob_phone(env, nursery, voipgw_seed)
    _, alice_leg, _ = await call_between(env, callee_aware=True)
    await srs_answers(srs)
    told = await env.alice.next_request("INVITE", timeout=10)
    assert records(told.request.body) == ["on"]
    await accept(env.alice, told)

    # alice (aware) transfers the caller to bob (not aware), blind (RFC 3515), and hangs up.
    exchange = await alice_leg.request(  # type: ignore[attr-defined]
        "REFER", extra=[("Refer-To", "<sip:bob@127.0.0.1:5060>")]
    )
    assert (await exchange.final()).status == 202
    await eventually(lambda: bool(bob.requests("ACK")))
    (ack,) = bob.requests("ACK")
    assert ack.body and b"record" not in ack.body  # our answer to bob's offer
    assert await next_within(bob, "INVITE", 10) is None or all(
        b"record" not in r.body for r in bob.requests("INVITE")
    )
    assert all(b"record" not in r.body for r in bob.requests("INVITE"))
    record = gateway_call(env).security_record()  # type: ignore[attr-defined]
    assert "recording_indication" not in record  # bob, on side B now, was told nothing


async def test_record_indication_false_tells_an_aware_party_nothing(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, srs = await siprec_env(
        nursery, tmp_path, voipgw_seed, alice_auto=None, record_indication=False
    )
    _, _, answer = await call_between(env, caller_aware=True)
    await srs_answers(srs)
    assert await next_within(env.trunk, "INVITE", 20) is None
    assert b"record" not in answer
    record = gateway_call(env).security_record()  # type: ignore[attr-defined]
    assert record["a"]["record_aware"] is True and "recording_indication" not in record


class _AnswerTap:
    """A third-party tap deciding at the answer (so its TappedCall has indicate_recording),
    whose sink is covert or not: the test calls indicate_recording as its sink would."""

    name = "acme"

    def __init__(self, covert: bool) -> None:
        self.covert = covert
        self.told: list[object] = []

    def sink_for_call(self, call: object) -> object:
        self.told.append(call)
        return _AnswerSink(self.covert)


class _AnswerSink:
    def __init__(self, covert: bool) -> None:
        self.covert = covert
        self.closed = trio.Event()

    def packet(self, stream_id: str, direction: str, rtp: bytes, *, now: float) -> None:
        pass

    async def run(self) -> None:
        await self.closed.wait()

    def close(self) -> None:
        self.closed.set()


@pytest.mark.parametrize("covert", [False, True])
async def test_a_covert_sinks_indicate_recording_is_dropped(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    covert: bool,
) -> None:
    """CallTaps.may_indicate: a covert sink (an interception) asked at the answer gets the
    same TappedCall as any tap, indicate_recording included; what it says through it never
    reaches the parties (a non-covert one, the control, is heard)."""
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=None)
    tap = _AnswerTap(covert)
    taps = env.gateway.plugins.media_taps
    taps._current_plugin = "acme"
    taps.add("acme", tap)
    taps._current_plugin = "<core>"
    _, _, answer = await call_between(env, caller_aware=True, callee_aware=True)
    assert b"record" not in answer
    await eventually(lambda: len(tap.told) == 1)
    (tapped,) = tap.told
    indicate = tapped.indicate_recording  # type: ignore[attr-defined]
    assert indicate is not None
    indicate("on")
    if not covert:
        told = await env.trunk.next_request("INVITE", timeout=10)
        assert records(told.request.body) == ["on"]
        return
    assert await next_within(env.trunk, "INVITE", 30) is None
    assert await next_within(env.alice, "INVITE", 1) is None
    assert all(b"record" not in r.body for r in env.alice.requests("INVITE"))
    record = gateway_call(env).security_record()  # type: ignore[attr-defined]
    assert "recording_indication" not in record
    assert "acme" not in str(record)


async def test_no_indication_re_invite_crosses_a_transfers_re_invite_to_the_transferee(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """A transfer's re-INVITE to the transferee (the target's offer) is an offer in progress:
    the indication waits for its answer (RFC 3261 §14.1: one re-INVITE at a time on a dialog,
    RFC 3264 §4), then goes with the state as it is then."""
    env, srs = await siprec_env(nursery, tmp_path, voipgw_seed, alice_auto=None)
    bob = await bob_phone(env, nursery, voipgw_seed)
    _, alice_leg, _ = await call_between(env, caller_aware=True)
    await srs_answers(srs)
    told = await env.trunk.next_request("INVITE", timeout=10)
    assert records(told.request.body) == ["on"]
    await env.trunk.next_request("ACK", timeout=5)
    held: list[Received] = []

    async def hold(received: Received) -> bool:
        if received.request.method != "INVITE":
            return False
        held.append(received)
        return True

    env.trunk.in_dialog = hold
    exchange = await alice_leg.request(  # type: ignore[attr-defined]
        "REFER", extra=[("Refer-To", "<sip:bob@127.0.0.1:5060>")]
    )
    assert (await exchange.final()).status == 202
    await eventually(lambda: len(held) == 1)  # the transfer's, with bob's offer
    calls = env.gateway.calls
    assert calls is not None
    call = gateway_call(env)
    calls.pause_recording(call.id, True, by="agent 7")  # type: ignore[attr-defined]
    await trio.sleep(10)
    assert len(held) == 1, [records(r.request.body) for r in held]
    env.trunk.in_dialog = None
    await env.trunk.respond(held[0], 200, body=env.trunk.answer_sdp(held[0].request.body))
    await eventually(lambda: bool(bob.requests("ACK")))
    # Once the transfer's offer is answered, the state as it is then: paused (not a warning
    # and a party left told "on" by the transfer's offer).
    await eventually(lambda: len(env.trunk.requests("INVITE")) == 3)
    told_paused = env.trunk.requests("INVITE")[2]
    assert records(told_paused.body) == ["paused"]
    assert version(told_paused.body) == version(held[0].request.body) + 1


async def test_a_refused_indication_is_no_longer_withdrawable(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """keyx-43's contract for a sent offer that was refused (RFC 3261 §14.1): it took its o=
    version on the wire, so no later withdrawal (of the leg's security offer, of the media
    session's repeated offer) may give that version back, nor the SDP before it: the next
    offer has the version after the refused one (RFC 3264 §8), never the refused one's again
    with other content."""
    env, srs = await siprec_env(nursery, tmp_path, voipgw_seed, alice_auto=None)
    statuses = [488]

    async def refuse(received: Received) -> bool:
        if received.request.method != "INVITE" or not statuses:
            return False
        await env.trunk.respond(received, statuses.pop(0))
        return True

    env.trunk.in_dialog = refuse
    await call_between(env, caller_aware=True)
    await srs_answers(srs)
    refused = await env.trunk.next_request("INVITE", timeout=10)
    assert records(refused.request.body) == ["on"]
    call = gateway_call(env)
    await eventually(lambda: call._indication is None)  # type: ignore[attr-defined]
    # What a later path that made no offer of its own would do with a stale one.
    call.a.security.withdraw_offer()  # type: ignore[attr-defined]
    call.media.withdraw_repeated_offer("a")  # type: ignore[attr-defined]
    calls = env.gateway.calls
    assert calls is not None
    calls.pause_recording(call.id, True, by="agent 7")  # type: ignore[attr-defined]
    told = await env.trunk.next_request("INVITE", timeout=10)
    assert records(told.request.body) == ["paused"]
    assert version(told.request.body) == version(refused.request.body) + 1


async def test_a_taps_off_before_any_on_says_nothing(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """TappedCall.indicate_recording("off") from a tap whose recording never started (none
    of its own said on or paused) tells the parties nothing (docs/plugin_hooks.md; RFC 7866
    §7.1.1: no "off" of a recording that never was); its "on" later is told as usual."""
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=None)
    tap = _AnswerTap(covert=False)
    taps = env.gateway.plugins.media_taps
    taps._current_plugin = "acme"
    taps.add("acme", tap)
    taps._current_plugin = "<core>"
    await call_between(env, caller_aware=True)
    await eventually(lambda: len(tap.told) == 1)
    indicate = tap.told[0].indicate_recording  # type: ignore[attr-defined]
    indicate("off")
    assert await next_within(env.trunk, "INVITE", 10) is None
    assert "recording_indication" not in gateway_call(env).security_record()  # type: ignore[attr-defined]
    indicate("on")
    told = await env.trunk.next_request("INVITE", timeout=10)
    assert records(told.request.body) == ["on"]


async def test_a_resume_under_a_partys_pausing_preference_answers_still_paused(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """recordpref = "pause": an operator's pause and resume while a party prefers the call
    not recorded leave it paused; the control socket's answer says so (voipgw recording
    resume answered "recorded")."""
    env, srs = await siprec_env(nursery, tmp_path, voipgw_seed, alice_auto=None, recordpref="pause")
    sdp = simple_sdp("127.0.0.1", CALLER_PORT).replace(
        b"m=audio", b"a=recordpref:off\r\nm=audio", 1
    )
    await call_between(env, caller_aware=True, caller_sdp=sdp)
    await srs_answers(srs)
    calls = env.gateway.calls
    assert calls is not None
    call = gateway_call(env)
    paused = calls.pause_recording(call.id, True, by="agent 7")  # type: ignore[attr-defined]
    assert paused["paused_by_preference"] == ["siprec"]
    resumed = calls.pause_recording(call.id, False, by="agent 7")  # type: ignore[attr-defined]
    assert resumed["paused"] is False and resumed["changed"] is True
    assert resumed["paused_by_preference"] == ["siprec"]
    assert await next_within(srs, "INVITE", 5) is None  # still inactive: nothing to tell it


def _holding(agent: SipAgent, held: list[Received]) -> None:
    """``agent`` keeps each re-INVITE unanswered (in ``held``) for the test to answer."""

    async def hold(received: Received) -> bool:
        if received.request.method != "INVITE":
            return False
        held.append(received)
        return True

    agent.in_dialog = hold


async def test_a_relayed_offer_crossing_our_indication_gets_491(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """While our indication re-INVITE is out, the other party's re-INVITE is answered 491
    (RFC 3261 §14.2, RFC 3264 §4: one offer at a time), not relayed to the aware party."""
    env, srs = await siprec_env(nursery, tmp_path, voipgw_seed, alice_auto=None)
    held: list[Received] = []
    _holding(env.trunk, held)
    _, alice_leg, _ = await call_between(env, caller_aware=True)
    await srs_answers(srs)
    await eventually(lambda: len(held) == 1)  # on, unanswered
    hold = simple_sdp("127.0.0.1", CALLEE_PORT, direction="sendonly", version=2)
    exchange = await alice_leg.request(  # type: ignore[attr-defined]
        "INVITE", body=hold, content_type="application/sdp"
    )
    assert (await exchange.final(timeout=5)).status == 491
    assert len(held) == 1


async def test_an_offer_relayed_to_an_aware_party_says_our_indication_in_place_of_the_others(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """Once the recording started, a relayed offer to the aware caller (the callee's hold)
    carries our a=record (the other party's own a=record replaced: it is not the state of the
    gateway's recording), with the next o= version; the unaware callee's answer has none added."""
    env, srs = await siprec_env(nursery, tmp_path, voipgw_seed, alice_auto=None)
    _, alice_leg, _ = await call_between(env, caller_aware=True)
    await srs_answers(srs)
    told = await env.trunk.next_request("INVITE", timeout=10)  # on, answered by the trunk
    assert records(told.request.body) == ["on"]
    await env.trunk.next_request("ACK", timeout=5)
    hold = simple_sdp("127.0.0.1", CALLEE_PORT, direction="sendonly", version=2) + (
        b"a=record:off\r\n"
    )
    exchange = await alice_leg.request(  # type: ignore[attr-defined]
        "INVITE", body=hold, content_type="application/sdp"
    )
    relayed = await env.trunk.next_request("INVITE", timeout=10)
    assert records(relayed.request.body) == ["on"]
    assert b"a=sendonly" in relayed.request.body
    assert version(relayed.request.body) == version(told.request.body) + 1
    answered = await exchange.final(timeout=10)
    assert answered.status == 200
    assert records(answered.body) == [None]


async def test_an_indication_left_in_proceeding_is_cancelled_after_64_t1(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """RFC 3261 §9.1: our indication re-INVITE answered only provisionally is CANCELled after
    64*T1; the 487 is a refusal like any (the call goes on)."""
    env, srs = await siprec_env(nursery, tmp_path, voipgw_seed, alice_auto=None)
    held: list[Received] = []
    _holding(env.trunk, held)
    call, _, _ = await call_between(env, caller_aware=True)
    await srs_answers(srs)
    await eventually(lambda: len(held) == 1)
    await env.trunk.respond(held[0], 183)
    cancel = await env.trunk.next_request("CANCEL", timeout=64 * 0.5 + 5)
    assert cancel.request.call_id == held[0].request.call_id
    await env.trunk.respond(held[0], 487)  # RFC 3261 §9.2 (the agent 487s first INVITEs only)
    await eventually(lambda: gateway_call(env)._indication is None)  # type: ignore[attr-defined]
    assert env.trunk.requests("BYE") == [] and len(env.gateway.calls.calls) == 1  # type: ignore[union-attr]
    assert (await call.bye()).status == 200  # type: ignore[attr-defined]


@pytest.mark.parametrize("status", [408, 481])
async def test_an_indication_answered_408_or_481_ends_the_call(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    status: int,
) -> None:
    """RFC 3261 §12.2.1.2: the aware party's dialog is gone; the call ends as for any
    re-INVITE of ours answered so (the other party gets a BYE)."""
    env, srs = await siprec_env(nursery, tmp_path, voipgw_seed, alice_auto=None)
    held: list[Received] = []
    _holding(env.trunk, held)
    await call_between(env, caller_aware=True)
    await srs_answers(srs)
    await eventually(lambda: len(held) == 1)
    await env.trunk.respond(held[0], status)
    await env.alice.next_request("BYE", timeout=10)
    await eventually(lambda: not env.gateway.calls.calls)  # type: ignore[union-attr]


# alice's 200 leaves the session refreshes to the gateway (RFC 4028): an UPDATE every 60 s.
WE_REFRESH_ALICE = [
    ("Supported", "timer"),
    ("Allow", "INVITE, ACK, CANCEL, BYE, UPDATE"),
    ("Session-Expires", "120;refresher=uac"),
]


async def test_the_indication_waits_for_an_update_in_progress_on_the_partys_dialog(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """Any INVITE or UPDATE of the aware party's dialog still unanswered makes the indication
    wait (RFC 3261 §14.1, RFC 3311 §5.1), not only the offers the call keeps a note of: here
    our session refresh UPDATE to the callee (RFC 4028 §10); the new state goes once it is
    answered."""
    env, srs = await siprec_env(nursery, tmp_path, voipgw_seed, alice_auto=None)
    await call_between(env, callee_aware=True, callee_extra=WE_REFRESH_ALICE)
    await srs_answers(srs)
    told = await env.alice.next_request("INVITE", timeout=10)
    assert records(told.request.body) == ["on"]
    await accept(env.alice, told)
    held: list[Received] = []

    async def hold_update(received: Received) -> bool:
        if received.request.method != "UPDATE":
            return False
        held.append(received)
        return True

    env.alice.in_dialog = hold_update
    await env.alice.next_request("UPDATE", timeout=70)
    assert len(held) == 1
    calls = env.gateway.calls
    assert calls is not None
    calls.pause_recording(gateway_call(env).id, True, by="agent 7")  # type: ignore[attr-defined]
    srs_pause = await srs.next_request("INVITE", timeout=10)
    await srs.respond(srs_pause, 200, body=srs_answer())
    assert await next_within(env.alice, "INVITE", 10) is None  # our UPDATE is unanswered
    await env.alice.respond(held[0], 200)
    told = await env.alice.next_request("INVITE", timeout=5)
    assert records(told.request.body) == ["paused"]


async def test_a_caller_saying_record_aware_in_a_re_invite_is_told_and_dropping_it_is_not(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """RFC 7866 §6.1 read from later messages too: the caller's re-INVITE that adds
    ``Supported: record-aware`` gets our answer saying the recording's state (no re-INVITE of
    ours needed); one that lists its extensions without it is told nothing more; one with no
    Supported at all changes nothing (it states no extensions either way)."""
    caplog.set_level(logging.INFO)
    env, srs = await siprec_env(nursery, tmp_path, voipgw_seed, alice_auto=None)
    call, _, _ = await call_between(env)
    await srs_answers(srs)
    assert await next_within(env.trunk, "INVITE", 5) is None  # unaware: nothing said
    versions = iter(range(2, 10))

    async def reinvite(extra: Sequence[tuple[str, str]]) -> bytes:
        offer = simple_sdp("127.0.0.1", CALLER_PORT, version=next(versions))
        exchange = await call.request(  # type: ignore[attr-defined]
            "INVITE", body=offer, content_type="application/sdp", extra=extra
        )
        await accept(env.alice, await env.alice.next_request("INVITE", timeout=5))
        final = await exchange.final(timeout=5)
        assert final.status == 200
        return final.body

    assert records(await reinvite(AWARE)) == ["on"]
    assert "the A leg's party now says it is recording-aware" in caplog.text
    record = gateway_call(env).security_record()  # type: ignore[attr-defined]
    assert record["a"]["record_aware"] is True
    assert record["recording_indication"] == {"a": "on"}
    assert await next_within(env.trunk, "INVITE", 5) is None  # our 200 told it already
    assert records(await reinvite([])) == ["on"]  # no Supported: nothing changes
    assert records(await reinvite([("Supported", "timer")])) == [None]
    assert "the A leg's party no longer says it is recording-aware" in caplog.text
    record = gateway_call(env).security_record()  # type: ignore[attr-defined]
    assert "record_aware" not in record["a"] and "recording_indication" not in record


async def test_a_callee_saying_record_aware_in_its_2xx_to_a_re_invite_is_told_in_ours(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """The callee's 2xx to a relayed re-INVITE adds ``record-aware``: that answer is the
    other party's, so a re-INVITE of ours tells it the state once the exchange is over."""
    env, srs = await siprec_env(nursery, tmp_path, voipgw_seed, alice_auto=None)
    call, _, _ = await call_between(env)
    await srs_answers(srs)
    assert await next_within(env.alice, "INVITE", 5) is None
    offer = simple_sdp("127.0.0.1", CALLER_PORT, version=2)
    exchange = await call.request(  # type: ignore[attr-defined]
        "INVITE", body=offer, content_type="application/sdp"
    )
    relayed = await env.alice.next_request("INVITE", timeout=5)
    await env.alice.respond(
        relayed, 200, body=env.alice.answer_sdp(relayed.request.body), extra=AWARE
    )
    assert (await exchange.final(timeout=5)).status == 200
    told = await env.alice.next_request("INVITE", timeout=5)
    assert records(told.request.body) == ["on"]
    assert version(told.request.body) == version(relayed.request.body) + 1


async def test_an_interception_never_shows_to_a_caller_turning_record_aware_mid_call(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    pki: tuple[TestCa, Issued, Issued],  # noqa: F811
) -> None:
    """An intercepted, unrecorded call: a caller whose re-INVITE says record-aware is seen
    to be so, and told nothing (an interception is no recording, and never shows)."""
    env = await intercept_env(nursery, tmp_path, voipgw_seed, pki)
    await env.provision(activate(f"<e164Number>{ALICE_DID[1:]}</e164Number>"))
    b2bua = env.b2bua
    call, _, _ = await call_between(b2bua)
    await eventually(lambda: len(env.x2()) > 0)  # intercepted
    offer = simple_sdp("127.0.0.1", CALLER_PORT, version=2)
    exchange = await call.request(  # type: ignore[attr-defined]
        "INVITE", body=offer, content_type="application/sdp", extra=AWARE
    )
    relayed = await b2bua.alice.next_request("INVITE", timeout=5)
    await accept(b2bua.alice, relayed)
    final = await exchange.final(timeout=5)
    assert final.status == 200 and b"record" not in final.body
    assert await next_within(b2bua.trunk, "INVITE", 30) is None
    record = gateway_call(b2bua).security_record()  # type: ignore[attr-defined]
    assert record["a"]["record_aware"] is True and "recording_indication" not in record


def with_recordpref(sdp: bytes, pref: str) -> bytes:
    return sdp.replace(b"m=audio", b"a=recordpref:" + pref.encode() + b"\r\nm=audio", 1)


async def test_recordpref_is_read_from_a_late_offer_callers_ack(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A caller whose INVITE had no SDP answers our offer in its ACK (RFC 3261 §13.2.1): its
    a=recordpref there is read as anywhere else (RFC 7866 §7.2)."""
    caplog.set_level(logging.INFO)
    env, _ = await siprec_env(nursery, tmp_path, voipgw_seed, alice_auto=None)
    call = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=b"")
    call.ack_answer = lambda offer: with_recordpref(env.trunk.answer_sdp(offer), "off")
    leg_b = await env.alice.next_call()
    await env.alice.respond(
        leg_b.incoming,  # type: ignore[arg-type]
        200,
        body=simple_sdp("127.0.0.1", CALLEE_PORT),
    )
    assert (await call.final()).status == 200
    await eventually(lambda: "the calling party's recording preference is off" in caplog.text)
    assert gateway_call(env).security_record()["a"]["recordpref"] == "off"  # type: ignore[attr-defined]


async def test_recordpref_is_read_from_a_late_re_invites_ack(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """A re-INVITE without SDP: the callee's 2xx offers, our 2xx carries that offer to the
    caller, whose ACK answers (RFC 3261 §14.1): its a=recordpref there is read."""
    env, _ = await siprec_env(nursery, tmp_path, voipgw_seed, alice_auto=None)
    call, _, _ = await call_between(env)
    call.ack_answer = lambda offer: with_recordpref(env.trunk.answer_sdp(offer), "pause")  # type: ignore[attr-defined]
    exchange = await call.request("INVITE")  # type: ignore[attr-defined]
    relayed = await env.alice.next_request("INVITE", timeout=5)
    assert relayed.request.body == b""
    await env.alice.respond(relayed, 200, body=env.alice.offer_sdp())
    assert (await exchange.final(timeout=5)).status == 200
    await env.alice.next_request("ACK", timeout=5)
    await eventually(lambda: gateway_call(env).a.recordpref == "pause")  # type: ignore[attr-defined]


async def test_recordpref_is_read_from_a_callees_early_answer(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """The callee's 183 with its SDP answer (early media, RFC 3960) states a=recordpref: read
    then; its 200 stating none leaves it as stated (the last one a party said)."""
    env, _ = await siprec_env(nursery, tmp_path, voipgw_seed, alice_auto=None)
    call = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=simple_sdp("127.0.0.1", CALLER_PORT))
    leg_b = await env.alice.next_call()
    incoming = leg_b.incoming
    assert incoming is not None
    early = with_recordpref(simple_sdp("127.0.0.1", CALLEE_PORT), "pause")
    await env.alice.respond(incoming, 183, body=early)
    await call.exchange.wait_for(lambda r: r.status == 183)  # type: ignore[union-attr]
    await env.alice.respond(incoming, 200, body=simple_sdp("127.0.0.1", CALLEE_PORT))
    assert (await call.final()).status == 200
    assert gateway_call(env).security_record()["b"]["recordpref"] == "pause"  # type: ignore[attr-defined]


async def test_a_transfer_target_stating_no_recordpref_lifts_the_transferors_pause(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """``recordpref = "pause"``: the callee prefers the call not recorded (paused from the
    start); it transfers the caller to bob, who states no preference: bob's is no
    preference, not alice's (RFC 7866 §7.2), and the recording resumes."""
    env, srs = await siprec_env(nursery, tmp_path, voipgw_seed, alice_auto=None, recordpref="pause")
    bob = await bob_phone(env, nursery, voipgw_seed)
    callee_sdp = with_recordpref(simple_sdp("127.0.0.1", CALLEE_PORT), "off")
    _, alice_leg, _ = await call_between(env, callee_sdp=callee_sdp)
    recording = await srs.next_call()
    assert recording.invite.body.count(b"a=inactive") == 2  # type: ignore[attr-defined]
    await recording.answer(200, sdp=srs_answer())
    exchange = await alice_leg.request(  # type: ignore[attr-defined]
        "REFER", extra=[("Refer-To", "<sip:bob@127.0.0.1:5060>")]
    )
    assert (await exchange.final()).status == 202
    await eventually(lambda: bool(bob.requests("ACK")))
    offers = []
    while (update := await next_within(srs, "INVITE", 10)) is not None:
        offers.append(update.request.body)
        await srs.respond(update, 200, body=srs_answer())
    assert offers and offers[-1].count(b"a=sendonly") == 2, offers
    assert gateway_call(env).b.recordpref is None  # type: ignore[attr-defined]


async def test_an_a_record_the_other_party_sent_is_not_shown_as_told_by_the_gateway(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """The callee records the call itself and says ``a=record:on`` in its SDP; the gateway
    records nothing. The aware caller gets that attribute passed on as before, but the record
    (and ``voipgw calls``) shows only what the gateway told: nothing."""
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=None)
    callee_sdp = simple_sdp("127.0.0.1", CALLEE_PORT) + b"a=record:on\r\n"
    _, _, answer = await call_between(env, caller_aware=True, callee_sdp=callee_sdp)
    assert records(answer) == ["on"]  # the callee's, passed on
    record = gateway_call(env).security_record()  # type: ignore[attr-defined]
    assert record["a"]["record_aware"] is True
    assert "recording_indication" not in record
    assert describe_recording_parties(record) == ""


async def test_a_pause_for_a_partys_preference_is_counted_and_listed_with_the_pauses(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """``recordpref = "pause"``: the pause a party's a=recordpref:off makes is counted where
    pauses on request are (``voipgw_recording_pauses_total{action="preference_pause"}``, the
    paused gauge) and listed in the call's pauses (``voipgw calls``); the party's ``on``
    resumes it, counted and listed too. An operator's resume meanwhile leaves the call in the
    gauge: it is still paused."""
    env, srs = await siprec_env(nursery, tmp_path, voipgw_seed, alice_auto=None, recordpref="pause")
    sdp = with_recordpref(simple_sdp("127.0.0.1", CALLER_PORT), "off")
    call, _, _ = await call_between(env, caller_sdp=sdp)
    recording = await srs.next_call()
    await recording.answer(200, sdp=srs_answer())
    manager = env.gateway.calls
    assert manager is not None
    on_call = gateway_call(env)
    assert manager.recording_pauses["preference_pause"] == 1
    assert manager.recordings_paused == {on_call}
    taps = on_call.security_record()["taps"]  # type: ignore[attr-defined]
    assert taps["paused"] is True and taps["pause_count"] == 1
    (pause,) = taps["pauses"]
    assert pause["paused_by"] == "caller a=recordpref:off" and "resumed_at" not in pause
    assert "by caller a=recordpref:off (paused now)" in describe_taps(taps)

    manager.pause_recording(on_call.id, True, by="agent 7")  # type: ignore[attr-defined]
    manager.pause_recording(on_call.id, False, by="agent 7")  # type: ignore[attr-defined]
    assert manager.recordings_paused == {on_call}  # still paused for the preference

    offer = with_recordpref(simple_sdp("127.0.0.1", CALLER_PORT, version=2), "on")
    exchange = await call.request(  # type: ignore[attr-defined]
        "INVITE", body=offer, content_type="application/sdp"
    )
    await accept(env.alice, await env.alice.next_request("INVITE", timeout=5))
    assert (await exchange.final(timeout=5)).status == 200
    assert manager.recording_pauses == {
        "pause": 1,
        "resume": 1,
        "preference_pause": 1,
        "preference_resume": 1,
    }
    assert manager.recordings_paused == set()
    taps = on_call.security_record()["taps"]  # type: ignore[attr-defined]
    assert taps["paused"] is False and taps["pause_count"] == 2
    assert taps["pauses"][0]["resumed_by"] == "caller a=recordpref:on"
    assert taps["pauses"][1]["resumed_by"] == "agent 7"


async def test_a_recordpref_in_another_forks_early_answer_is_not_the_answering_phones(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A proxy downstream forks our INVITE (RFC 3261 §16.7): one phone's 183 prefers the call
    not recorded, another phone answers in its own early dialog (another To tag, §12.1.2)
    stating no preference. The preference was the other phone's, which is not on the call:
    with ``recordpref = "pause"`` the recording is not paused, and the record shows none."""
    caplog.set_level(logging.INFO)
    env, srs = await siprec_env(nursery, tmp_path, voipgw_seed, alice_auto=None, recordpref="pause")
    call = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=simple_sdp("127.0.0.1", CALLER_PORT))
    leg_b = await env.alice.next_call()
    incoming = leg_b.incoming
    assert incoming is not None
    early = with_recordpref(simple_sdp("127.0.0.1", CALLEE_PORT), "off")
    await env.alice.respond(incoming, 183, body=early)
    await call.exchange.wait_for(lambda r: r.status == 183)  # type: ignore[union-attr]
    assert gateway_call(env).b_legs[0].recordpref == "off"  # type: ignore[attr-defined]
    leg_b.local_tag = "fork-2"  # the phone that answers, in an early dialog of its own
    env.alice._by_dialog[(leg_b.call_id, "fork-2")] = leg_b
    await leg_b.answer(200, sdp=simple_sdp("127.0.0.1", CALLEE_PORT + 2))
    assert (await call.final()).status == 200
    recording = await srs.next_call()
    assert b"a=inactive" not in recording.invite.body  # type: ignore[attr-defined]
    await recording.answer(200, sdp=srs_answer())
    on_call = gateway_call(env)
    assert on_call.b.recordpref is None  # type: ignore[attr-defined]
    assert "recordpref" not in on_call.security_record()["b"]  # type: ignore[attr-defined]
    assert env.gateway.calls.recording_pauses["preference_pause"] == 0  # type: ignore[union-attr]
    # The log said the early phone's; it says the change too (docs/operations.md recordpref).
    assert "the called party's recording preference is nopreference" in caplog.text


async def test_recordpref_is_read_from_the_transferees_answer_to_the_transfer_re_invite(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """The callee transfers the caller to bob: the caller's 2xx to our re-INVITE with bob's
    offer answers it, and states ``a=recordpref:off`` (RFC 7866 §7.2): read as any SDP of
    the caller's, and with ``recordpref = "pause"`` the recording pauses."""
    env, srs = await siprec_env(nursery, tmp_path, voipgw_seed, alice_auto=None, recordpref="pause")
    bob = await bob_phone(env, nursery, voipgw_seed)
    _, alice_leg, _ = await call_between(env)
    await srs_answers(srs)

    async def answer_with_pref(received: Received) -> bool:
        if received.request.method != "INVITE":
            return False
        body = with_recordpref(env.trunk.answer_sdp(received.request.body), "off")
        await env.trunk.respond(received, 200, body=body)
        return True

    env.trunk.in_dialog = answer_with_pref
    exchange = await alice_leg.request(  # type: ignore[attr-defined]
        "REFER", extra=[("Refer-To", "<sip:bob@127.0.0.1:5060>")]
    )
    assert (await exchange.final()).status == 202
    await eventually(lambda: bool(bob.requests("ACK")))
    on_call = gateway_call(env)
    await eventually(lambda: on_call.a.recordpref == "off")  # type: ignore[attr-defined]
    calls = env.gateway.calls
    assert calls is not None
    await eventually(lambda: calls.recording_pauses["preference_pause"] == 1)
    assert calls.recordings_paused == {on_call}


@pytest.mark.parametrize("strict", [False, True])
async def test_an_indication_answered_480_ends_the_call_only_with_strict_in_dialog_failures(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    strict: bool,
) -> None:
    """``[sip] in_dialog_failures = "strict"`` (RFC 5057 §5.1: 480 ends the invite usage)
    applies to our indication re-INVITE as to any of ours: the call ends, the other party
    gets a BYE naming it; lenient (the default), the refusal is a notice and the call goes
    on (docs/configuration.md "The recording indication")."""
    sip = {"in_dialog_failures": "strict" if strict else "lenient"}
    env, srs = await siprec_env(nursery, tmp_path, voipgw_seed, alice_auto=None, sip=sip)
    held: list[Received] = []
    _holding(env.trunk, held)
    await call_between(env, caller_aware=True)
    await srs_answers(srs)
    await eventually(lambda: len(held) == 1)
    await env.trunk.respond(held[0], 480)
    if strict:
        bye = await env.alice.next_request("BYE", timeout=10)
        assert "cause=480" in str(bye.request.headers.get("Reason"))
        await eventually(lambda: not env.gateway.calls.calls)  # type: ignore[union-attr]
    else:
        await eventually(lambda: gateway_call(env)._indication is None)  # type: ignore[attr-defined]
        assert await next_within(env.alice, "BYE", 10) is None
        assert len(env.gateway.calls.calls) == 1  # type: ignore[union-attr]


async def test_a_strict_ending_while_the_indication_waits_sends_no_indication(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The indication to the aware caller waits while the callee's re-INVITE to it is in
    progress (RFC 3261 §14.1); the caller answers it 404, which with ``in_dialog_failures =
    "strict"`` ends the call (RFC 5057 §5.1): the callee gets 500 and a BYE, the caller a
    BYE, and no indication re-INVITE follows into the ended call."""
    env, srs = await siprec_env(
        nursery, tmp_path, voipgw_seed, alice_auto=None, sip={"in_dialog_failures": "strict"}
    )
    held: list[Received] = []
    _holding(env.trunk, held)
    _, alice_leg, _ = await call_between(env, caller_aware=True)
    hold = simple_sdp("127.0.0.1", CALLEE_PORT, direction="sendonly", version=2)
    exchange = await alice_leg.request(  # type: ignore[attr-defined]
        "INVITE", body=hold, content_type="application/sdp"
    )
    relayed = await env.trunk.next_request("INVITE", timeout=5)  # unanswered
    assert held == [relayed]
    await srs_answers(srs)
    assert await next_within(env.trunk, "INVITE", 5) is None  # waits: an exchange in progress
    await env.trunk.respond(held[0], 404)
    assert (await exchange.final(timeout=5)).status == 500
    await env.alice.next_request("BYE", timeout=10)
    await eventually(lambda: not env.gateway.calls.calls)  # type: ignore[union-attr]
    assert len(held) == 1 and env.trunk.requests("INVITE") == [held[0].request]
    assert "cannot make the recording indication offer" not in caplog.text  # it waited


async def test_the_indication_waits_for_the_partys_own_update_relayed_and_unanswered(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """The aware caller's own UPDATE (its new location, no offer: RFC 6442 §4) is relayed to the
    trunk, which has not answered it: the caller's UPDATE is in progress on its dialog from
    the moment it arrived (the call keeps no offer of it), so the indication waits for its
    answer (RFC 3311 §5.1), then goes."""
    env, srs = await siprec_env(nursery, tmp_path, voipgw_seed, carrier={"prefixes": ["+1", "112"]})
    held: list[Received] = []

    async def hold_update(received: Received) -> bool:
        if received.request.method != "UPDATE":
            return False
        held.append(received)
        return True

    env.trunk.in_dialog = hold_update
    call = await env.alice.invite(
        "sip:112@127.0.0.1:5060",
        sdp=located_body(env.alice.offer_sdp()),
        content_type=MIXED,
        extra=[*BY_VALUE, *AWARE],
    )
    assert (await call.final()).status == 407
    await call.authenticate()
    assert (await call.final()).status == 200
    recording = await srs.next_call()
    exchange = await call.request("UPDATE", body=MOVED_ONLY, content_type=MIXED, extra=BY_VALUE)
    await eventually(lambda: len(held) == 1)
    await recording.answer(200, sdp=srs_answer())
    await srs.next_request("ACK", timeout=5)
    # (Within the 4 s the carrier's response_timeout gives the caller's UPDATE to wait.)
    assert await next_within(env.alice, "INVITE", 3) is None  # its UPDATE is unanswered
    await env.trunk.respond(held[0], 200)
    assert (await exchange.final(timeout=5)).status == 200
    told = await env.alice.next_request("INVITE", timeout=5)
    assert records(told.request.body) == ["on"]


async def test_the_aware_partys_answer_to_our_indication_states_its_recordpref(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Told ``a=record:on``, the aware caller's phone answers our indication re-INVITE with
    ``a=recordpref:off`` (RFC 7866 §7.2: its preference in an SDP answer, the user's word on
    hearing it is recorded): read as any SDP of the party's, and with ``recordpref =
    "pause"`` the recording pauses (and the caller is told ``paused``)."""
    caplog.set_level(logging.INFO)
    env, srs = await siprec_env(nursery, tmp_path, voipgw_seed, alice_auto=None, recordpref="pause")
    held: list[Received] = []
    _holding(env.trunk, held)
    await call_between(env, caller_aware=True)
    await srs_answers(srs)
    await eventually(lambda: len(held) == 1)
    assert records(held[0].request.body) == ["on"]
    body = with_recordpref(env.trunk.answer_sdp(held[0].request.body), "off")
    await env.trunk.respond(held[0], 200, body=body)
    await env.trunk.next_request("ACK", timeout=5)
    await eventually(lambda: "the calling party's recording preference is off" in caplog.text)
    on_call = gateway_call(env)
    assert on_call.a.recordpref == "off"  # type: ignore[attr-defined]
    paused = await srs.next_request("INVITE", timeout=10)  # the recording pauses
    assert paused.request.body.count(b"a=inactive") == 2
    await srs.respond(paused, 200, body=srs_answer())
    await eventually(lambda: len(held) == 2)  # the caller is told
    assert records(held[1].request.body) == ["paused"]


async def test_a_party_flipping_record_aware_while_our_indication_is_out_is_told_by_its_last_word(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """The aware caller's UPDATEs (session refreshes, RFC 4028 §10, no offer) drop then
    restate ``record-aware`` while our indication re-INVITE to it is out: each is answered
    200, nothing crosses (one INVITE at a time, RFC 3261 §14.1); its last word (aware) holds:
    a pause is told to it once our re-INVITE is answered. Dropping it for good, the next
    change tells it nothing and the record shows it untold."""
    env, srs = await siprec_env(nursery, tmp_path, voipgw_seed, alice_auto=None)
    held: list[Received] = []
    _holding(env.trunk, held)
    call, _, _ = await call_between(env, caller_aware=True)
    await srs_answers(srs)
    assert held == [await env.trunk.next_request("INVITE", timeout=10)]  # on, unanswered

    async def refresh(extra: Sequence[tuple[str, str]]) -> None:
        exchange = await call.request("UPDATE", extra=extra)  # type: ignore[attr-defined]
        assert (await exchange.final(timeout=5)).status == 200

    await refresh([("Supported", "timer")])
    await refresh([("Supported", "timer, record-aware")])
    on_call = gateway_call(env)
    calls = env.gateway.calls
    assert calls is not None
    calls.pause_recording(on_call.id, True, by="agent 7")  # type: ignore[attr-defined]
    srs_pause = await srs.next_request("INVITE", timeout=10)
    await srs.respond(srs_pause, 200, body=srs_answer())
    assert await next_within(env.trunk, "INVITE", 1) is None and len(held) == 1
    await accept(env.trunk, held[0])
    told = await env.trunk.next_request("INVITE", timeout=5)  # after ours, and the interval
    assert held[1] is told and records(told.request.body) == ["paused"]
    await accept(env.trunk, held[1])

    await refresh([("Supported", "timer")])
    calls.pause_recording(on_call.id, False, by="agent 7")  # type: ignore[attr-defined]
    srs_resume = await srs.next_request("INVITE", timeout=10)
    await srs.respond(srs_resume, 200, body=srs_answer())
    assert await next_within(env.trunk, "INVITE", 10) is None and len(held) == 2
    record = on_call.security_record()  # type: ignore[attr-defined]
    assert "record_aware" not in record["a"] and "recording_indication" not in record


async def test_the_answering_phones_own_early_recordpref_holds_over_another_forks_later_one(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """Two forked phones' 183s (RFC 3261 §16.7): the first prefers ``off``, the second, later,
    ``on``; the first answers, its 200 stating none. Its own preference, from its early
    answer, is the one the call keeps (RFC 7866 §7.2): with ``recordpref = "pause"`` the
    recording starts paused."""
    env, srs = await siprec_env(nursery, tmp_path, voipgw_seed, alice_auto=None, recordpref="pause")
    call = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=simple_sdp("127.0.0.1", CALLER_PORT))
    leg_b = await env.alice.next_call()
    incoming = leg_b.incoming
    assert incoming is not None
    first_tag = leg_b.local_tag
    off = with_recordpref(simple_sdp("127.0.0.1", CALLEE_PORT), "off")
    await env.alice.respond(incoming, 183, body=off)
    await call.exchange.wait_for(lambda r: r.status == 183)  # type: ignore[union-attr]
    leg_b.local_tag = "fork-2"
    env.alice._by_dialog[(leg_b.call_id, "fork-2")] = leg_b
    on = with_recordpref(simple_sdp("127.0.0.1", CALLEE_PORT + 2), "on")
    await env.alice.respond(incoming, 183, body=on)
    await eventually(lambda: gateway_call(env).b_legs[0].recordpref == "on")  # type: ignore[attr-defined]
    leg_b.local_tag = first_tag  # the first phone answers
    await leg_b.answer(200, sdp=simple_sdp("127.0.0.1", CALLEE_PORT))
    assert (await call.final()).status == 200
    recording = await srs.next_call()
    assert recording.invite.body.count(b"a=inactive") == 2  # type: ignore[attr-defined]
    assert gateway_call(env).b.recordpref == "off"  # type: ignore[attr-defined]


async def test_a_change_of_state_during_the_wait_after_a_491_does_not_cut_the_wait_short(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """Our indication to the aware callee got 491: RFC 3261 §14.1 has us wait 2.1 to 4 s (we
    own the dialog's Call-ID) before the next re-INVITE on that dialog. A pause of the
    recording meanwhile is told after that wait, not at once (which would cross the
    callee's own retry again)."""
    env, srs = await siprec_env(nursery, tmp_path, voipgw_seed, alice_auto=None)
    held: list[Received] = []
    _holding(env.alice, held)
    await call_between(env, callee_aware=True)
    await srs_answers(srs)
    first = await env.alice.next_request("INVITE", timeout=10)
    assert held == [first] and records(first.request.body) == ["on"]
    await env.alice.respond(first, 491)
    refused_at = trio.current_time()
    await eventually(lambda: gateway_call(env)._indication is None)  # type: ignore[attr-defined]
    calls = env.gateway.calls
    assert calls is not None
    calls.pause_recording(gateway_call(env).id, True, by="agent 7")  # type: ignore[attr-defined]
    srs_pause = await srs.next_request("INVITE", timeout=10)
    await srs.respond(srs_pause, 200, body=srs_answer())
    again = await env.alice.next_request("INVITE", timeout=10)
    assert trio.current_time() - refused_at >= 2.1
    assert records(again.request.body) == ["paused"]
