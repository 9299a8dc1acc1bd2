"""A relayed re-INVITE that the other leg does not complete (RFC 3261 §14.1): no final response
within 64*T1 ends the call (CANCEL to the silent leg, 504 to the requester, BYE to both), and so
does a 408 or 481 from that leg (RFC 5057 §5.1; test_b2bua_dialog_lost.py for the rest); a slow
but complete answer does not. A re-INVITE its requester CANCELs is CANCELled on the other leg,
and its 487 keeps the call (§9.2). Signalling on the in-memory network, virtual time (T1 = 0.5 s:
64*T1 = 32 s)."""

from __future__ import annotations

from pathlib import Path

import trio

from gateway.testing.sip_agent import SDP, Received
from tests.component.calls.b2bua_env import answered_call, eventually, start_b2bua
from tests.component.calls.reinvite_answers import alice_answers_reinvites

LIMIT = 32.0  # 64 * T1


async def test_a_reinvite_with_no_final_response_ends_the_call_after_64_t1(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    call, _ = await answered_call(env)

    async def never_answer(received: Received) -> None:
        pass  # the agent's INVITE server transaction has sent 100 Trying

    alice_answers_reinvites(env, never_answer)
    started = trio.current_time()
    hold = await call.request(
        "INVITE", body=env.trunk.offer_sdp(direction="sendonly"), content_type=SDP
    )
    reinvite = (await env.alice.next_request("INVITE", timeout=5)).request
    await trio.sleep(LIMIT - 1)
    assert [s for s in hold.statuses if s >= 200] == []  # still waiting before 64*T1

    final = await hold.final(timeout=5)
    # 504, not 408: our BYE, not the trunk on a 408 (RFC 5057 §5.1), ends its side.
    assert final.status == 504
    assert LIMIT <= trio.current_time() - started < LIMIT + 1
    # RFC 3261 §9.1: the CANCEL of that re-INVITE, on its branch, after its provisional.
    cancel = (await env.alice.next_request("CANCEL", timeout=5)).request
    assert cancel.cseq.number == reinvite.cseq.number
    assert cancel.top_via.branch == reinvite.top_via.branch
    # §14.1: the dialog is over on both legs.
    await env.trunk.next_request("BYE", timeout=5)
    await env.alice.next_request("BYE", timeout=5)
    await eventually(lambda: env.calls == 0)


async def test_a_slow_reinvite_answer_within_64_t1_keeps_the_call(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    call, _ = await answered_call(env)

    async def answer_after_20_s(received: Received) -> None:
        await trio.sleep(20)
        await env.alice.respond(received, 200, body=env.alice.answer_sdp(received.request.body))

    alice_answers_reinvites(env, answer_after_20_s)
    hold = await call.reinvite(env.trunk.offer_sdp(direction="sendonly"), timeout=30)
    assert hold.status == 200
    await trio.sleep(2 * LIMIT)
    assert env.calls == 1
    assert env.alice.requests("CANCEL") == [] and env.alice.requests("BYE") == []
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)


async def test_a_reinvite_answered_481_ends_the_call(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    call, _ = await answered_call(env)

    async def dialog_gone(received: Received) -> None:
        await env.alice.respond(received, 481)

    alice_answers_reinvites(env, dialog_gone)
    hold = await call.reinvite(env.trunk.offer_sdp(direction="sendonly"))
    # Not the 481 (it would end the trunk's dialog crossing our BYE): 500, then the BYE.
    assert hold.status == 500
    await env.trunk.next_request("BYE", timeout=5)
    await eventually(lambda: env.calls == 0)
    assert env.alice.requests("BYE") == []  # alice has no dialog left for a BYE


async def test_an_update_whose_relayed_offer_times_out_never_gets_408(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """An UPDATE with an offer goes to the other leg as a re-INVITE; its 408 (that leg's, or
    our Timer B's after 64*T1) is not the UPDATE's answer (RFC 4320 §4.2: no 408 to a
    non-INVITE): 504 while the requester still waits, nothing after its Timer F. The call
    ends as for a re-INVITE (§14.1)."""
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    call, _ = await answered_call(env)

    async def timed_out(received: Received) -> None:
        await env.alice.respond(received, 408)

    alice_answers_reinvites(env, timed_out)
    offer = env.trunk.offer_sdp(direction="sendonly")
    update = await call.request("UPDATE", body=offer, content_type=SDP)
    assert (await update.final(timeout=5)).status == 504
    await env.trunk.next_request("BYE", timeout=5)
    await eventually(lambda: env.calls == 0)

    call, _ = await answered_call(env)

    async def never_answer(received: Received) -> None:
        pass

    alice_answers_reinvites(env, never_answer)
    update = await call.request("UPDATE", body=offer, content_type=SDP)
    await env.trunk.next_request("BYE", timeout=LIMIT + 5)  # the call ended at 64*T1
    await trio.sleep(LIMIT)
    assert [s for s in update.statuses if s >= 200 and s != 408] == []  # given up: none
    assert not any(
        d.data.startswith(b"SIP/2.0 408") and b" UPDATE\r\n" in d.data for d in env.network.capture
    )


async def test_a_cancelled_reinvite_is_cancelled_on_the_other_leg_and_the_call_goes_on(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    call, _ = await answered_call(env)
    held: list[Received] = []

    async def hold_on_to_it(received: Received) -> None:
        held.append(received)

    alice_answers_reinvites(env, hold_on_to_it)
    hold = await call.request(
        "INVITE", body=env.trunk.offer_sdp(direction="sendonly"), content_type=SDP
    )
    await eventually(lambda: bool(held))
    await call.cancel(hold)
    cancel = (await env.alice.next_request("CANCEL", timeout=5)).request
    assert cancel.cseq.number == held[0].request.cseq.number
    assert cancel.top_via.branch == held[0].request.top_via.branch
    await env.alice.respond(held[0], 487)  # RFC 3261 §9.2: the UAS ends its re-INVITE
    assert (await hold.final(timeout=5)).status == 487
    await trio.sleep(2 * LIMIT)  # no 408, no BYE: the session stays as it was
    assert env.calls == 1
    assert env.trunk.requests("BYE") == [] and env.alice.requests("BYE") == []
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)
