"""Session timers (RFC 4028) through the B2BUA, each leg on its own.

A caller's Session-Expires is answered in our 200 (its interval kept or lowered, the refresher
per §9 Table 2); each callee is asked for ours (``Session-Expires: 1800;refresher=uas``). A leg
whose device refreshes and stops is given up min(32 s, interval/3) before its expiry: BYE on
both legs. A leg the gateway refreshes gets an UPDATE without a body at half the interval, and
only if its device allows UPDATE. An UPDATE from a device is answered on its own leg, never
relayed. Before, every one of these headers was ignored: a caller requiring ``timer`` got 420,
and a refresh by UPDATE 501.

Set-up as b2bua_env.py: trunk "carrier" at 127.0.0.2 calls alice's DID; virtual time.
"""

from __future__ import annotations

from pathlib import Path

import trio

from gateway.core.sdp.model import Direction
from gateway.core.sip.dialog import Dialog
from gateway.core.sip.message import Response
from gateway.testing.sip_agent import Call, Received, sdp_direction
from tests.component.calls.b2bua_env import (
    ALICE_DID,
    GW,
    T1,
    TRUNK,
    B2bua,
    assert_media_via_gateway,
    eventually,
    next_within,
    sent,
    start_b2bua,
)
from tests.component.calls.b2bua_scenarios import assert_no_media_ports_held

SUPPORTS_TIMER = [("Supported", "timer")]
ALLOWS_UPDATE = [("Allow", "INVITE, ACK, CANCEL, BYE, UPDATE")]


async def answered(env: B2bua, extra: list[tuple[str, str]]) -> tuple[Call, Call, Response]:
    """The trunk calls alice with ``extra`` headers; alice answers: (leg A, leg B, our 200)."""
    call = await env.trunk.invite(env.did_uri(ALICE_DID), extra=extra)
    ok = await call.final()
    assert ok.status == 200, ok.reason
    leg_b = await env.alice.next_call()
    await env.alice.next_request("ACK")
    return call, leg_b, ok


async def alice_answers_with(env: B2bua, extra: list[tuple[str, str]]) -> Call:
    """The trunk calls alice, who answers 200 with ``extra`` headers; returns leg A."""
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    leg_b = await env.alice.next_call()
    assert leg_b.incoming is not None
    body = env.alice.answer_sdp(leg_b.invite.body)
    await env.alice.respond(leg_b.incoming, 200, body=body, extra=extra)
    assert (await call.final()).status == 200
    return call


# alice's 200 leaves the refreshes to the gateway, every 60 s.
WE_REFRESH_ALICE = [*SUPPORTS_TIMER, *ALLOWS_UPDATE, ("Session-Expires", "120;refresher=uac")]


async def end_reason(env: B2bua) -> str:
    store = env.gateway.store
    assert store is not None
    await eventually(lambda: [r.ended_at for r in store.call_records_recent()] != [None])
    [record] = store.call_records_recent()
    assert record.end_reason is not None
    return record.end_reason


async def test_a_caller_that_refreshes_keeps_the_call_and_is_hung_up_once_it_stops(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    call, leg_b, ok = await answered(env, [*SUPPORTS_TIMER, ("Session-Expires", "600")])
    # §9 Table 2: a caller that supports timers and names no refresher refreshes itself.
    assert ok.headers.get("Session-Expires") == "600;refresher=uac"
    assert ok.headers.get("Require") == "timer"
    # The callee's leg has its own timer: it is asked for ours, and to refresh it.
    invite_b = leg_b.invite.headers
    assert invite_b.get_all("Supported") == ("100rel", "timer")
    assert invite_b.get("Session-Expires") == "1800;refresher=uas"
    assert invite_b.get("Min-SE") == "90"

    # Three refreshes by UPDATE at half the interval: each answered by the gateway with the
    # timer (and its Contact, RFC 3311 §5.2), none relayed to alice; the call lives on.
    for _ in range(3):
        await trio.sleep(300)
        update = await call.request("UPDATE", extra=[*SUPPORTS_TIMER, ("Session-Expires", "600")])
        refreshed = await update.final()
        assert refreshed.status == 200
        assert refreshed.headers.get("Session-Expires") == "600;refresher=uac"
        assert refreshed.headers.get("Contact") is not None
    assert env.alice.requests("UPDATE") == []
    assert env.calls == 1
    last_refresh = trio.current_time()

    # Then nothing: the gateway gives the session up min(32, 600/3) = 32 s before it expires.
    bye_a = await env.trunk.next_request("BYE", timeout=700)
    bye_b = await env.alice.next_request("BYE", timeout=5)
    assert bye_a.at - last_refresh == 600 - 32
    for bye in (bye_a, bye_b):
        reason = bye.request.headers.get("Reason") or ""
        assert "cause=408" in reason and "refresh" in reason
    assert "A leg did not refresh its session within 600 s" in await end_reason(env)
    await eventually(lambda: env.calls == 0)
    assert_no_media_ports_held(env)


async def test_a_re_invite_refreshes_the_caller_and_carries_the_callees_timer(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    call, _, _ = await answered(env, [*SUPPORTS_TIMER, ("Session-Expires", "300;refresher=uac")])
    await trio.sleep(200)
    exchange = await call.request(
        "INVITE",
        body=env.trunk.offer_sdp(),
        content_type="application/sdp",
        extra=[*SUPPORTS_TIMER, ("Session-Expires", "300;refresher=uac")],
    )
    refreshed = await exchange.final()
    assert refreshed.status == 200
    assert refreshed.headers.get("Session-Expires") == "300;refresher=uac"
    relayed = (await env.alice.next_request("INVITE")).request.headers
    assert relayed.get("Supported") == "timer"
    assert relayed.get("Session-Expires") == "1800;refresher=uas"
    # Refreshed at 200 s: the first expiry (300 - 32 s after the answer) passes, the new one
    # (200 + 268 s) does not.
    assert await next_within(env.trunk, "BYE", 260) is None
    assert await next_within(env.trunk, "BYE", 20) is not None
    assert "did not refresh" in await end_reason(env)


async def test_the_gateway_refreshes_a_callee_that_asks_it_to_with_update(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=None)
    call = await alice_answers_with(env, [*WE_REFRESH_ALICE, ("Require", "timer")])
    answered_at = trio.current_time()
    # The caller asked for no timer and allows no UPDATE: its leg runs none.
    # UPDATE to alice every 60 s (half of 120), with no body; alice's plain 200 (it states no
    # timer, and supports none in it) leaves our timer running.
    updates: list[Received] = []
    for _ in range(3):
        updates.append(await env.alice.next_request("UPDATE", timeout=70))
    for n, update in enumerate(updates, start=1):
        assert round(update.at - answered_at) == 60 * n
        assert update.request.body == b""
        assert update.request.headers.get("Session-Expires") == "120;refresher=uac"
        assert update.request.headers.get("Contact") is not None
    assert env.trunk.requests("UPDATE") == []

    # A refresh answered 481 (alice lost the dialog): the call ends on both legs.
    async def refuse_update(received: Received) -> bool:
        if received.request.method != "UPDATE":
            return False
        await env.alice.respond(received, 481)
        return True

    env.alice.in_dialog = refuse_update
    bye = await env.trunk.next_request("BYE", timeout=70)
    assert bye.request.call_id == call.call_id
    assert "session refresh of the B leg answered 481" in await end_reason(env)
    await eventually(lambda: env.calls == 0)


async def test_a_refresh_the_callee_declines_keeps_the_call_it_answered(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=None)

    async def decline_update(received: Received) -> bool:
        if received.request.method != "UPDATE":
            return False
        await env.alice.respond(received, 501)  # it listed UPDATE, but will not take it
        return True

    env.alice.in_dialog = decline_update
    call = await alice_answers_with(env, WE_REFRESH_ALICE)
    # Each 501 shows alice is there: the timer restarts, UPDATEs go on every 60 s and the call
    # outlives several intervals.
    for _ in range(5):
        await env.alice.next_request("UPDATE", timeout=70)
    assert env.calls == 1
    assert env.trunk.requests("BYE") == []
    assert (await call.bye()).status == 200


async def test_a_refresh_nobody_answers_ends_the_call(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=None)
    call = await alice_answers_with(env, WE_REFRESH_ALICE)
    answered_at = trio.current_time()

    async def vanished(received: Received) -> bool:
        return received.request.method == "UPDATE"  # never answered: alice is gone

    env.alice.in_dialog = vanished
    bye = await env.trunk.next_request("BYE", timeout=200)
    assert bye.request.call_id == call.call_id
    # The UPDATE at 60 s, then its transaction's 64*T1 without an answer (a local 408).
    assert 60 < bye.at - answered_at <= 60 + 64 * T1 + 1
    assert "session refresh of the B leg answered 408" in await end_reason(env)


async def test_a_callee_that_allows_no_update_is_not_refreshed_and_keeps_its_call(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=None)
    no_update = [*SUPPORTS_TIMER, ("Require", "timer"), ("Session-Expires", "120;refresher=uac")]
    call = await alice_answers_with(env, no_update)
    # We refresh only with UPDATE: without it that leg runs no timer rather than a re-INVITE.
    assert await next_within(env.alice, "UPDATE", 400) is None
    assert await next_within(env.alice, "BYE", 1) is None
    assert env.calls == 1
    assert (await call.bye()).status == 200


async def test_a_caller_without_timer_support_that_allows_update_is_refreshed_by_us(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, sip={"session_expires": 600})
    call, _, ok = await answered(env, ALLOWS_UPDATE)
    # Table 2: a UAC that does not support timers cannot refresh; we do, and no Require.
    assert ok.headers.get("Session-Expires") == "600;refresher=uas"
    assert ok.headers.get("Require") is None
    update = await env.trunk.next_request("UPDATE", timeout=310)
    assert update.request.call_id == call.call_id
    assert update.request.headers.get("Session-Expires") == "600;refresher=uac"


async def test_too_small_an_interval_is_refused_422_before_anything_is_set_up(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, sip={"min_se": 300})
    call = await env.trunk.invite(
        env.did_uri(ALICE_DID), extra=[*SUPPORTS_TIMER, ("Session-Expires", "120")]
    )
    refused = await call.final()
    assert (refused.status, refused.headers.get("Min-SE")) == (422, "300")
    # Unreadable: 400 with the reason.
    call = await env.trunk.invite(
        env.did_uri(ALICE_DID), extra=[*SUPPORTS_TIMER, ("Session-Expires", "soon")]
    )
    refused = await call.final()
    assert refused.status == 400 and "Session-Expires" in refused.reason
    assert env.alice.requests("INVITE") == []
    # Asked again with the Min-SE, as §7.3 has the caller do: the call goes through.
    call, _, ok = await answered(env, [*SUPPORTS_TIMER, ("Session-Expires", "300")])
    assert ok.headers.get("Session-Expires") == "300;refresher=uac"
    assert env.calls == 1


async def test_a_callees_422_is_answered_once_with_its_min_se(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=None)
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    first = await env.alice.next_call()
    assert first.incoming is not None
    await env.alice.respond(first.incoming, 422, extra=[("Min-SE", "3600")])
    second = await env.alice.next_call()
    assert second.incoming is not None
    headers = second.invite.headers
    assert second.invite.call_id == first.invite.call_id
    assert second.invite.cseq.number == first.invite.cseq.number + 1
    assert headers.get("Session-Expires") == "3600;refresher=uas"
    assert headers.get("Min-SE") == "3600"
    # A second 422 is the callee's final word: the caller gets it.
    await env.alice.respond(second.incoming, 422, extra=[("Min-SE", "7200")])
    assert (await call.final()).status == 422
    assert len(env.alice.requests("INVITE")) == 2


async def test_an_update_with_an_offer_is_relayed_as_a_re_invite(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    call, _, _ = await answered(env, [])
    # Hold by UPDATE (RFC 3311 §5.1), as a device may once our Allow lists UPDATE: alice gets a
    # re-INVITE with the offer rewritten, and her answer comes back in the UPDATE's 200.
    update = await call.request(
        "UPDATE",
        body=env.trunk.offer_sdp(direction="sendonly"),
        content_type="application/sdp",
        extra=[*SUPPORTS_TIMER, ("Session-Expires", "600")],
    )
    ok = await update.final()
    assert ok.status == 200
    assert sdp_direction(ok.body) is Direction.RECVONLY
    assert_media_via_gateway(ok.body)
    assert ok.headers.get("Session-Expires") == "600;refresher=uac"
    assert ok.headers.get("Contact") is not None
    relayed = (await env.alice.next_request("INVITE")).request
    assert sdp_direction(relayed.body) is Direction.SENDONLY
    assert env.alice.requests("UPDATE") == []
    # A 2xx to UPDATE is its transaction's to re-send (a non-INVITE one): not ours every T1.
    await trio.sleep(5)
    assert len(sent(env.network.capture, GW, TRUNK, b"SIP/2.0 200")) == 2  # INVITE, UPDATE
    # A refresh with too small an interval is still refused on the leg.
    too_small = await call.request("UPDATE", extra=[*SUPPORTS_TIMER, ("Session-Expires", "60")])
    assert (await too_small.final()).status == 422
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)


async def test_an_early_update_with_an_offer_is_refused_and_the_call_goes_on(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=None)
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    leg_b = await env.alice.next_call()
    assert leg_b.incoming is not None
    ringing = await env.alice.respond(leg_b.incoming, 180)
    # alice changes her early media by UPDATE in her early dialog (RFC 3311 §5.1).
    early = Dialog.create_uas(leg_b.invite, ringing)
    update = early.create_request(
        "UPDATE",
        via=env.alice.new_via(),
        contact=env.alice.contact,
        body=env.alice.offer_sdp(),
        content_type="application/sdp",
    )
    refused = await (await env.alice.send(update, GW)).final()
    assert refused.status == 488
    assert "early UPDATE" in (refused.headers.get("Warning") or "")
    # The call goes on: answered, and ended.
    await env.alice.respond(leg_b.incoming, 200, body=env.alice.answer_sdp(leg_b.invite.body))
    assert (await call.final()).status == 200
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)


async def test_with_session_timers_off_none_is_asked_for_but_a_callers_own_is_served(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, sip={"session_expires": 0})
    _, leg_b, ok = await answered(env, [*SUPPORTS_TIMER, *ALLOWS_UPDATE])
    assert ok.headers.get("Session-Expires") is None
    assert leg_b.invite.headers.get("Session-Expires") is None
    assert leg_b.invite.headers.get_all("Supported") == ("100rel", "timer")
    await trio.sleep(3000)
    assert env.calls == 1 and env.trunk.requests("UPDATE") == []
    _, _, ok = await answered(env, [*SUPPORTS_TIMER, ("Session-Expires", "900")])
    assert ok.headers.get("Session-Expires") == "900;refresher=uac"


async def test_a_caller_requiring_timer_is_served_not_refused_420(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    call, _, ok = await answered(
        env, [("Require", "timer"), ("Session-Expires", "1800;refresher=uac")]
    )
    assert ok.headers.get("Session-Expires") == "1800;refresher=uac"
    assert (await call.bye()).status == 200
    assert len(sent(env.network.capture, GW, TRUNK, b"SIP/2.0 420")) == 0


async def test_a_422_to_our_refresh_is_answered_at_once_with_the_longer_interval(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=None)

    async def too_small_once(received: Received) -> bool:
        if received.request.method != "UPDATE" or len(env.alice.requests("UPDATE")) > 0:
            return False  # (requests() lists those recorded: the first is not yet)
        await env.alice.respond(received, 422, extra=[("Min-SE", "300")])
        return True

    env.alice.in_dialog = too_small_once
    call = await alice_answers_with(env, WE_REFRESH_ALICE)
    first = await env.alice.next_request("UPDATE", timeout=70)
    again = await env.alice.next_request("UPDATE", timeout=5)
    assert first.request.headers.get("Session-Expires") == "120;refresher=uac"
    assert again.request.headers.get("Session-Expires") == "300;refresher=uac"
    assert again.at - first.at < 1  # at once, not at the next half interval
    assert again.request.cseq.number > first.request.cseq.number
    assert (await call.bye()).status == 200
