"""The transferor's SUBSCRIBE to its REFER's implicit subscription (RFC 3515 §2.4.4, RFC 6665
§4.1.2.2-§4.1.2.3): a refresh before it runs out (our NOTIFYs give it 60 s, while a target
may ring for ``[sip] ring_timeout``, 180 s by default) gets 200 and a NOTIFY of the latest
status; ``Expires: 0`` ends it (a last NOTIFY, terminated, and none after it) while the transfer
goes on; another event package gets 489, another REFER's id or a finished transfer 481.

Before session 51 every SUBSCRIBE in a call's dialog got 501. Set-up as b2bua_env.py: the trunk
calls alice's DID; alice transfers the call to bob, whose phone rings and does not answer.
"""

from __future__ import annotations

from pathlib import Path

import trio

from gateway.core.sip.message import Response
from gateway.testing.sip_agent import AutoAnswer, Call
from tests.component.calls.b2bua_env import B2bua, answered_call, start_b2bua
from tests.component.calls.transfer_calls import (
    BOB_URI,
    bob_phone,
    eventually_notify,
    refer,
    sipfrag_of,
)


async def transfer_ringing(
    nursery: trio.Nursery,
    tmp_path: Path,
    seed: int,
    bob_answers_after: float | None = None,
    **sip: object,
) -> tuple[B2bua, Call, int]:
    """alice's transfer of the call to bob, whose phone rings without answering (or answers
    ``bob_answers_after`` seconds later): the env, alice's leg and her REFER's CSeq (the
    ``id`` of its subscription)."""
    env = await start_b2bua(nursery, tmp_path, seed, sip=sip or None)
    if bob_answers_after is None:
        auto = AutoAnswer(status=None)
    else:
        auto = AutoAnswer(status=200, delay=bob_answers_after)
    await bob_phone(env, nursery, seed, auto=auto)
    _, alice_leg = await answered_call(env)
    assert await refer(alice_leg, BOB_URI) == 202
    assert alice_leg.dialog is not None
    refer_cseq = alice_leg.dialog.local_seq
    await eventually_notify(env.alice, "SIP/2.0 180 Ringing")
    return env, alice_leg, refer_cseq


async def subscribe(leg: Call, event: str | None, expires: int | None = None) -> Response:
    extra = [("Event", event)] if event is not None else []
    if expires is not None:
        extra.append(("Expires", str(expires)))
    exchange = await leg.request("SUBSCRIBE", extra=extra)
    return await exchange.final()


async def test_a_refresh_before_the_subscription_runs_out_gets_200_and_the_latest_status(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, alice_leg, refer_cseq = await transfer_ringing(nursery, tmp_path, voipgw_seed)
    await trio.sleep(50)  # bob still rings; the subscription has 10 s left
    ok = await subscribe(alice_leg, f"refer;id={refer_cseq}", 3600)
    assert ok.status == 200, ok.reason
    assert ok.headers.get("Expires") == "60"  # at most what the REFER's gave
    notify = await env.alice.next_request("NOTIFY")
    assert sipfrag_of(notify.request) == "SIP/2.0 180 Ringing"
    assert notify.request.headers.get("Event") == f"refer;id={refer_cseq}"
    assert notify.request.headers.get("Subscription-State") == "active;expires=60"
    # The transfer goes on until bob's ring timeout (180 s), told in the subscription alice
    # keeps refreshing before it runs out (each refresh gets the latest status again).
    for _ in range(2):
        await trio.sleep(50)
        assert (await subscribe(alice_leg, f"refer;id={refer_cseq}", 60)).status == 200
        again = await env.alice.next_request("NOTIFY")
        assert again.request.headers.get("Subscription-State") == "active;expires=60"
    await trio.sleep(30)
    failed = await eventually_notify(env.alice, "SIP/2.0 408 Request Timeout")
    assert failed.headers.get("Subscription-State") == "terminated;reason=noresource"
    assert env.calls == 1
    # Over now: no subscription left to refresh.
    assert (await subscribe(alice_leg, f"refer;id={refer_cseq}", 60)).status == 481


async def test_a_shorter_refresh_is_granted_and_later_notifies_count_down_from_it(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, alice_leg, _ = await transfer_ringing(nursery, tmp_path, voipgw_seed, ring_timeout=40)
    ok = await subscribe(alice_leg, "refer", 30)  # without an id: the one REFER of the dialog
    assert ok.status == 200 and ok.headers.get("Expires") == "30"
    notify = await env.alice.next_request("NOTIFY")
    assert notify.request.headers.get("Subscription-State") == "active;expires=30"
    await trio.sleep(20)
    refreshed = await subscribe(alice_leg, "refer", 30)
    assert refreshed.status == 200
    again = await env.alice.next_request("NOTIFY")
    assert sipfrag_of(again.request) == "SIP/2.0 180 Ringing"
    assert again.request.headers.get("Subscription-State") == "active;expires=30"


async def test_expires_0_ends_the_subscription_and_the_transfer_goes_on_without_notifies(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, alice_leg, refer_cseq = await transfer_ringing(
        nursery, tmp_path, voipgw_seed, ring_timeout=30
    )
    ok = await subscribe(alice_leg, f"refer;id={refer_cseq}", 0)
    assert ok.status == 200 and ok.headers.get("Expires") == "0"
    last = await env.alice.next_request("NOTIFY")
    assert sipfrag_of(last.request) == "SIP/2.0 180 Ringing"
    assert last.request.headers.get("Subscription-State") == "terminated"
    notifies = len(env.alice.requests("NOTIFY"))
    await trio.sleep(40)  # bob's ring timeout failed the transfer meanwhile: not told
    assert len(env.alice.requests("NOTIFY")) == notifies
    assert env.calls == 1  # the call goes on, as after any failed transfer
    # The transfer is over: alice may transfer again.
    assert await refer(alice_leg, BOB_URI) == 202


async def test_another_package_another_id_or_no_event_are_refused(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, alice_leg, refer_cseq = await transfer_ringing(nursery, tmp_path, voipgw_seed)
    notifies = len(env.alice.requests("NOTIFY"))
    bad_event = await subscribe(alice_leg, "dialog", 60)
    assert bad_event.status == 489 and bad_event.headers.get("Allow-Events") == "refer"
    assert (await subscribe(alice_leg, f"refer;id={refer_cseq + 7}", 60)).status == 481
    assert (await subscribe(alice_leg, None, 60)).status == 400
    assert len(env.alice.requests("NOTIFY")) == notifies  # none of them told anything
    # The transfer is as it was: its subscription still refreshes.
    assert (await subscribe(alice_leg, f"refer;id={refer_cseq}", 60)).status == 200


async def test_a_subscribe_without_a_transfer_gets_481(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    call, alice_leg = await answered_call(env)
    assert (await subscribe(alice_leg, "refer", 60)).status == 481
    assert (await subscribe(call, "refer", 60)).status == 481  # the trunk's leg: none either
    assert env.calls == 1


async def test_a_subscription_not_refreshed_ends_with_a_timeout_and_the_transfer_goes_on(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    # RFC 6665 §4.2.2: a subscription that runs out gets a last NOTIFY, terminated with
    # reason=timeout. Before session 52 the NOTIFYs went on until the transfer's end.
    env, alice_leg, refer_cseq = await transfer_ringing(
        nursery, tmp_path, voipgw_seed, bob_answers_after=75
    )
    notifies = len(env.alice.requests("NOTIFY"))
    await trio.sleep(55)
    assert len(env.alice.requests("NOTIFY")) == notifies  # 60 s from the REFER: not yet
    expired = await env.alice.next_request("NOTIFY", timeout=10)
    assert trio.current_time() >= 60
    assert expired.request.headers.get("Subscription-State") == "terminated;reason=timeout"
    assert expired.request.headers.get("Event") == f"refer;id={refer_cseq}"
    assert sipfrag_of(expired.request) == "SIP/2.0 180 Ringing"  # the latest status
    # bob answers at 75 s: the transfer completes (the trunk gets bob's media), untold.
    reinvite = await env.trunk.next_request("INVITE", timeout=30)
    assert reinvite.request.to.tag is not None
    await trio.sleep(5)
    assert len(env.alice.requests("NOTIFY")) == notifies + 1
    # Over: nothing left to refresh.
    assert (await subscribe(alice_leg, f"refer;id={refer_cseq}", 60)).status == 481
