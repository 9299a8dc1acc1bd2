"""Call pickup from busy lamp fields. The notifier's half: with ``pickup`` in a
``[[dialog_watch_groups]]`` group, the early dialog of a call ringing alice carries the Call-ID
and tags of the gateway's dialog with her ringing phone, as her phone sees it (RFC 4235 §4.1),
from which a BLF phone builds its ``Replaces`` (RFC 3891). The pickup: bob's INVITE with that
Replaces takes the call, alice's phone is CANCELled; and its refusals. In-memory network,
virtual time; RTP on real sockets through the relay."""

from __future__ import annotations

import collections
import xml.etree.ElementTree as ET
from pathlib import Path

import trio

from gateway.core.sdp.model import Direction
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.testing.sip_agent import AutoAnswer, sdp_direction, simple_sdp
from tests.component.calls.b2bua_env import (
    ALICE_DID,
    GW,
    T1,
    TRUNK,
    assert_media_via_gateway,
    eventually,
    next_within,
)
from tests.component.calls.dialog_event_watch import next_doc, start, watch
from tests.component.calls.pickup_calls import (
    BOB_PORT,
    CALLER_PORT,
    PICKUP,
    assert_rtp_between_caller_and_bob,
    early_dialog,
    pick_up,
    replaces_of,
    ringing_alice,
)


async def test_pickup_group_gets_the_ringing_phones_dialog(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, bob = await start(nursery, tmp_path, voipgw_seed, groups=[PICKUP])
    await watch(bob)
    await next_doc(bob)
    env.alice.auto = AutoAnswer(ring=True, status=None)  # she lets it ring
    incoming = await env.trunk.invite(env.did_uri(ALICE_DID))
    ringing = await env.alice.next_call()
    await incoming.exchange.wait_for(lambda r: r.status == 180)
    dialog = await early_dialog(bob)
    # Alice's phone's view of its dialog with us: its own tag is local, ours remote.
    assert dialog.get("call-id") == ringing.call_id
    assert dialog.get("local-tag") == ringing.local_tag
    assert dialog.get("remote-tag") == ringing.invite.from_.tag
    assert dialog.get("direction") == "recipient"
    # Not the caller's dialog with us (a different Call-ID on each leg of the B2BUA).
    assert dialog.get("call-id") != incoming.call_id
    # RFC 4235 §4.1 schema order: id, call-id, local-tag, remote-tag, direction.
    assert list(dialog.keys()) == ["id", "call-id", "local-tag", "remote-tag", "direction"]
    # Once answered, the tags are gone: only a ringing call can be picked up.
    await ringing.answer()
    while True:
        notify, found = await next_doc(bob)
        if any(state == "confirmed" for _, _, state in found.dialogs):
            break
    assert b"call-id" not in notify.body and b"local-tag" not in notify.body
    await incoming.bye()
    await eventually(lambda: env.calls == 0)


async def test_watch_group_without_pickup_gets_no_ids(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    # bob watches alice in a group without pickup; bob is also in a pickup group with carol:
    # only the group he shares with alice counts.
    groups = [
        {"name": "office", "accounts": ["alice", "bob"], "show_parties": True},
        {"name": "desk", "accounts": ["bob", "carol"], "pickup": True},
    ]
    env, bob = await start(nursery, tmp_path, voipgw_seed, groups=groups)
    await watch(bob)
    await next_doc(bob)
    env.alice.auto = AutoAnswer(ring=True, status=None)
    incoming = await env.trunk.invite(env.did_uri(ALICE_DID))
    ringing = await env.alice.next_call()
    dialog = await early_dialog(bob)
    assert dialog.get("call-id") is None and dialog.get("local-tag") is None
    assert dialog.get("remote-tag") is None and dialog.get("direction") == "recipient"
    notify_bytes = ET.tostring(dialog)
    assert ringing.call_id.encode() not in notify_bytes
    assert ringing.local_tag.encode() not in notify_bytes
    await incoming.cancel()
    await eventually(lambda: env.calls == 0)


# -- the pickup: bob's INVITE with Replaces built from the NOTIFY ------------------------------


async def test_bob_picks_up_the_call_ringing_alice(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, bob = await start(nursery, tmp_path, voipgw_seed, groups=[PICKUP])
    await watch(bob, "bob")  # his own lamp too: he becomes the callee
    await next_doc(bob)
    incoming, ringing, dialog = await ringing_alice(env, bob)
    offered_to_alice = parse_sdp_untrusted(ringing.invite.body).media[0]

    picked = await pick_up(bob, replaces_of(dialog), sdp=simple_sdp("127.0.0.1", BOB_PORT))
    to_bob = await picked.final()
    assert to_bob.status == 200, to_bob.reason
    assert_media_via_gateway(to_bob.body)
    # The relay's side B, where alice's phone was offered media: bob's now.
    assert parse_sdp_untrusted(to_bob.body).media[0].port == offered_to_alice.port
    to_caller = await incoming.final()
    assert to_caller.status == 200, to_caller.reason
    assert_media_via_gateway(to_caller.body)
    # Alice's phone stops ringing, told it was answered elsewhere (no missed call).
    cancel = (await env.alice.next_request("CANCEL")).request
    assert cancel.call_id == ringing.call_id
    assert cancel.headers.get("Reason") == 'SIP;cause=200;text="Call completed elsewhere"'
    # The call is one call, answered by bob: the record and the BLF say so.
    assert env.calls == 1
    assert env.gateway.calls is not None
    (call,) = env.gateway.calls.calls
    assert call.b is not None and call.b.peer_name == "bob"
    record = call.security_record()
    assert record["picked_up"] == {"by": "bob", "ringing": "alice"}
    assert record["b"]["peer"] == "udp:127.0.0.4:5060"  # type: ignore[index]
    # BLF: alice's ringing dialog ends (answered elsewhere), bob's lamp shows his call.
    seen: dict[str, set[tuple[str, str]]] = {"alice": set(), "bob": set()}
    while ("recipient", "terminated") not in seen["alice"] or not seen["bob"]:
        _, found = await next_doc(bob)
        account = found.entity.split(":")[1].split("@")[0]
        seen[account] |= {(direction, state) for _, direction, state in found.dialogs}
    assert seen["bob"] == {("recipient", "confirmed")}

    await assert_rtp_between_caller_and_bob(to_caller, to_bob)

    assert (await picked.bye()).status == 200
    bye = (await env.trunk.next_request("BYE")).request
    assert bye.call_id == incoming.call_id
    await eventually(lambda: env.calls == 0)
    assert ringing.answered == 487  # alice's phone never answered: its INVITE was CANCELled


async def test_pickup_without_early_only_is_a_pickup_too(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    # RFC 3891 §3: an early dialog its UAC (the gateway) initiated may be replaced.
    env, bob = await start(nursery, tmp_path, voipgw_seed, groups=[PICKUP])
    incoming, ringing, dialog = await ringing_alice(env, bob)
    # As Poly phones do: the extension required (RFC 3891 §6.1, RFC 3261 §8.2.2.3).
    picked = await pick_up(
        bob, replaces_of(dialog, early_only=False), extra=[("Require", "replaces")]
    )
    assert (await picked.final()).status == 200
    assert (await incoming.final()).status == 200
    assert (await env.alice.next_request("CANCEL")).request.call_id == ringing.call_id
    assert (await incoming.bye()).status == 200
    assert (await bob.next_request("BYE")).request.call_id == picked.call_id
    await eventually(lambda: env.calls == 0)
    # Bob's phone sent the INVITE: the gateway answered it and never ACKs anything to it.
    assert bob.requests("ACK") == []


async def test_pickup_refusals(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    groups = [
        {"name": "office", "accounts": ["alice", "bob"], "pickup": True},
    ]
    env, bob = await start(nursery, tmp_path, voipgw_seed, groups=groups)
    incoming, ringing, dialog = await ringing_alice(env, bob)
    # A dialog that does not exist (a stale NOTIFY, a wrong tag): 481, the call rings on.
    stale = replaces_of(dialog).replace(f"from-tag={dialog.get('local-tag')}", "from-tag=nope")
    assert (await (await pick_up(bob, stale)).final()).status == 481
    unknown = f"no-such-call@gw;to-tag={dialog.get('remote-tag')};from-tag=x;early-only"
    assert (await (await pick_up(bob, unknown)).final()).status == 481
    bad = await pick_up(bob, "only-a-call-id")
    assert (await bad.final()).status == 400
    # A carrier does not pick up calls.
    by_trunk = await env.trunk.invite(
        env.did_uri(ALICE_DID), extra=[("Replaces", replaces_of(dialog))]
    )
    assert (await by_trunk.final()).status == 403
    assert env.calls == 1
    assert await next_within(env.alice, "CANCEL", 1) is None  # it rings on
    # Alice answers; the same Replaces is now for a confirmed dialog: 486 (RFC 3891 §3).
    await ringing.answer()
    assert (await incoming.final()).status == 200
    late = await pick_up(bob, replaces_of(dialog))
    assert (await late.final()).status == 486
    assert env.calls == 1
    assert (await incoming.bye()).status == 200
    await eventually(lambda: env.calls == 0)
    # Once the call has ended: 481.
    gone = await pick_up(bob, replaces_of(dialog))
    assert (await gone.final()).status == 481


async def test_a_pickup_moves_the_call_to_the_pickers_max_calls(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, bob = await start(nursery, tmp_path, voipgw_seed, groups=[PICKUP])
    store, calls = env.gateway.store, env.gateway.calls
    assert store is not None and calls is not None
    store.accounts_set("alice", max_calls=1)
    store.accounts_set("bob", max_calls=1)
    first, ringing_first, dialog = await ringing_alice(env, bob)
    assert calls.limits.in_progress[("account", "alice")] == 1
    picked = await pick_up(bob, replaces_of(dialog))
    assert (await picked.final()).status == 200
    assert (await first.final()).status == 200
    cancel = (await env.alice.next_request("CANCEL")).request
    assert cancel.call_id == ringing_first.call_id
    # Bob is on the call now, alice is free: a second call rings her, not busy.
    assert calls.limits.in_progress[("account", "bob")] == 1
    assert calls.limits.in_progress[("account", "alice")] == 0
    second = await env.trunk.invite(env.did_uri(ALICE_DID))
    ringing = await env.alice.next_call()
    # Bob, at his limit, cannot take that one too: busy, and alice's phone rings on.
    busy = await pick_up(bob, replaces_of(await early_dialog(bob)))
    assert ((await busy.final()).status, (await busy.final()).reason) == (
        486,
        "Busy Here (account call limit)",
    )
    assert await next_within(env.alice, "CANCEL", 1) is None
    await ringing.answer()
    assert (await second.final()).status == 200
    assert (await first.bye()).status == 200
    assert (await second.bye()).status == 200
    await eventually(lambda: env.calls == 0)
    assert +calls.limits.in_progress == collections.Counter()


async def test_a_picked_up_call_keeps_session_timers_on_both_legs(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """RFC 4028: the carrier asks the gateway to refresh (refresher=uas) and the picker's phone
    asks for a timer of its own; after the pickup both are kept, as for an answered call (a
    carrier hangs up a session nobody refreshes)."""
    env, bob = await start(nursery, tmp_path, voipgw_seed, groups=[PICKUP])
    await watch(bob)
    await next_doc(bob)
    env.alice.auto = AutoAnswer(ring=True, status=None)
    timer = [("Supported", "timer"), ("Allow", "INVITE, ACK, CANCEL, BYE, UPDATE")]
    incoming = await env.trunk.invite(
        env.did_uri(ALICE_DID), extra=[*timer, ("Session-Expires", "120;refresher=uas")]
    )
    await env.alice.next_call()
    picked = await pick_up(
        bob, replaces_of(await early_dialog(bob)), extra=[*timer, ("Session-Expires", "300")]
    )
    to_bob = await picked.final()
    assert to_bob.status == 200
    assert to_bob.headers.get("Session-Expires") == "300;refresher=uac"  # bob refreshes
    ok = await incoming.final()
    answered_at = trio.current_time()
    assert ok.headers.get("Session-Expires") == "120;refresher=uas"  # the gateway refreshes
    # The gateway refreshes the carrier's leg at half the interval, the call goes on.
    refresh = await env.trunk.next_request("UPDATE", timeout=70)
    assert refresh.request.call_id == incoming.call_id
    assert 59 <= refresh.at - answered_at <= 61
    # Bob's phone stops refreshing: the gateway gives his session up before it expires.
    bye = await env.trunk.next_request("BYE", timeout=400)
    assert "refresh" in (bye.request.headers.get("Reason") or "")
    await eventually(lambda: env.calls == 0)


async def test_pickup_needs_a_group_with_pickup(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    # bob watches alice in a group with pickup, but alice's Replaces is tried by carol's
    # stand-in: bob in no pickup group (only "desk" has pickup, bob is not in it) gets 403;
    # the call rings on.
    groups = [
        {"name": "office", "accounts": ["alice", "bob"], "show_parties": True},
        {"name": "desk", "accounts": ["alice", "carol"], "pickup": True},
    ]
    env, bob = await start(nursery, tmp_path, voipgw_seed, groups=groups)
    incoming, ringing, dialog = await ringing_alice(env, bob)
    assert dialog.get("call-id") is None  # not told: a Replaces made by hand
    by_hand = f"{ringing.call_id};to-tag={ringing.invite.from_.tag};from-tag={ringing.local_tag}"
    refused = await pick_up(bob, by_hand + ";early-only")
    assert (await refused.final()).status == 403
    assert env.calls == 1
    assert env.gateway.calls is not None
    (call,) = env.gateway.calls.calls
    assert call.state == "ringing" and call.b is None
    await incoming.cancel()
    await eventually(lambda: env.calls == 0)


async def test_a_late_offer_call_is_picked_up_with_the_pickers_offer(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """The caller's INVITE had no SDP (a carrier's delayed offer, RFC 3261 §13.2.1): the
    picker's offer goes to the caller in our 200, the caller's ACK answers it, and only then
    does the picker get our 200 with that answer; media flows both ways."""
    env, bob = await start(nursery, tmp_path, voipgw_seed, groups=[PICKUP])
    await watch(bob)
    await next_doc(bob)
    env.alice.auto = AutoAnswer(ring=True, status=None)
    incoming = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=b"")
    incoming.ack_answer = simple_sdp("127.0.0.1", CALLER_PORT)  # its answer, in its ACK
    ringing = await env.alice.next_call()
    assert ringing.invite.body == b""  # alice's phone was asked to offer
    dialog = await early_dialog(bob)
    picked = await pick_up(bob, replaces_of(dialog), sdp=simple_sdp("127.0.0.1", BOB_PORT))
    to_caller = await incoming.final()
    assert to_caller.status == 200
    assert_media_via_gateway(to_caller.body)  # the offer: bob's, through the relay
    to_bob = await picked.final()
    assert to_bob.status == 200, to_bob.reason
    assert_media_via_gateway(to_bob.body)  # the answer the caller's ACK brought
    cancel = (await env.alice.next_request("CANCEL")).request
    assert cancel.call_id == ringing.call_id
    assert env.calls == 1
    assert env.gateway.calls is not None
    (call,) = env.gateway.calls.calls
    assert call.state == "answered" and call.security_record()["picked_up"] == {
        "by": "bob",
        "ringing": "alice",
    }

    await assert_rtp_between_caller_and_bob(to_caller, to_bob)
    assert (await picked.bye()).status == 200
    await eventually(lambda: env.calls == 0)


async def test_a_late_offer_pickup_whose_caller_acks_without_an_answer_ends_the_call(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """The caller's ACK carries no answer to the offer in our 200 (§13.2.2.4 wants one): the
    picker's INVITE, waiting for that answer, gets 488, and the caller a BYE."""
    env, bob = await start(nursery, tmp_path, voipgw_seed, groups=[PICKUP])
    await watch(bob)
    await next_doc(bob)
    env.alice.auto = AutoAnswer(ring=True, status=None)
    incoming = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=b"")
    incoming.ack_answer = b""  # the caller ACKs without its answer
    await env.alice.next_call()
    picked = await pick_up(
        bob, replaces_of(await early_dialog(bob)), sdp=simple_sdp("127.0.0.1", BOB_PORT)
    )
    assert (await incoming.final()).status == 200
    refused = await picked.final()
    assert refused.status == 488
    assert "ACK without the SDP answer" in (refused.headers.get("Warning") or "")
    bye = (await env.trunk.next_request("BYE")).request
    assert bye.call_id == incoming.call_id and "cause=488" in (bye.headers.get("Reason") or "")
    await eventually(lambda: env.calls == 0)
    assert bob.requests("BYE") == []  # bob's phone has no dialog to end: it got a 488


async def test_a_late_offer_pickup_whose_caller_never_acks_answers_the_picker_481(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """No ACK from the caller for our 200 with the picker's offer within 64*T1 (RFC 3261
    §13.3.1.4): the call ends, and the picker's INVITE, which waited for the answer that ACK
    would have brought, gets 481 rather than nothing."""
    env, bob = await start(nursery, tmp_path, voipgw_seed, groups=[PICKUP])
    await watch(bob)
    await next_doc(bob)
    env.alice.auto = AutoAnswer(ring=True, status=None)
    incoming = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=b"")
    await env.alice.next_call()
    dialog = await early_dialog(bob)
    env.network.set_link(TRUNK, GW, drop=1.0)  # nothing from the caller arrives any more
    picked = await pick_up(bob, replaces_of(dialog), sdp=simple_sdp("127.0.0.1", BOB_PORT))
    assert (await incoming.final()).status == 200
    started = trio.current_time()
    refused = await picked.final(timeout=64 * T1 + 10)
    assert refused.status == 481
    assert 64 * T1 - 0.1 <= trio.current_time() - started <= 64 * T1 + 1
    await eventually(lambda: env.calls == 0)


async def test_a_pickup_over_a_lossy_network(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    # Lost, duplicated and reordered datagrams: retransmissions carry the INVITE with
    # Replaces, our 200s (until their ACKs) and the CANCEL; the call is picked up once.
    env, bob = await start(
        nursery, tmp_path, voipgw_seed, groups=[PICKUP], drop=0.15, duplicate=0.15, reorder=0.15
    )
    await watch(bob)
    env.alice.auto = AutoAnswer(ring=False, status=None)
    incoming = await env.trunk.invite(env.did_uri(ALICE_DID))
    ringing = await env.alice.next_call(timeout=40)
    found: ET.Element | None = None
    while found is None:  # a 1xx is never retransmitted: she rings again until one got through
        await ringing.ring()
        with trio.move_on_after(2):
            found = await early_dialog(bob)
    dialog = found
    picked = await pick_up(bob, replaces_of(dialog))
    assert (await picked.final(timeout=40)).status == 200
    assert (await incoming.final(timeout=40)).status == 200
    cancel = (await env.alice.next_request("CANCEL", timeout=40)).request
    assert cancel.call_id == ringing.call_id
    assert env.gateway.calls is not None
    (call,) = env.gateway.calls.calls
    assert call.picked_up == {"by": "bob", "ringing": "alice"}
    await trio.sleep(40)  # every retransmission over: the ACKs got through
    assert env.calls == 1 and call.state == "answered"
    assert (await picked.bye(timeout=40)).status == 200
    await eventually(lambda: env.calls == 0, timeout=60)
    assert env.call_lookups == 0


async def test_two_pickups_at_once_one_takes_the_call(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    # Two BLF keys pressed at once (here two of bob's INVITEs): the first the ringing call
    # takes gets it; for the other, alice's early dialog is gone (CANCELled): 481.
    env, bob = await start(nursery, tmp_path, voipgw_seed, groups=[PICKUP])
    incoming, _, dialog = await ringing_alice(env, bob)
    finals: list[int] = []

    async def press() -> None:
        finals.append((await (await pick_up(bob, replaces_of(dialog))).final()).status)

    async with trio.open_nursery() as both:
        both.start_soon(press)
        both.start_soon(press)
    assert sorted(finals) == [200, 481]
    assert (await incoming.final()).status == 200
    assert env.calls == 1
    assert (await incoming.bye()).status == 200
    await bob.next_request("BYE")  # the phone that took the call, and only it
    assert await next_within(bob, "BYE", 2) is None
    await eventually(lambda: env.calls == 0)


async def test_the_picker_holds_and_resumes_the_caller(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    # After the pickup bob's phone is the call's callee like any other: its re-INVITE (hold)
    # reaches the caller, whose answer comes back to it.
    env, bob = await start(nursery, tmp_path, voipgw_seed, groups=[PICKUP])
    incoming, _, dialog = await ringing_alice(env, bob)
    picked = await pick_up(bob, replaces_of(dialog))
    assert (await picked.final()).status == 200
    assert (await incoming.final()).status == 200
    held = await picked.reinvite(bob.offer_sdp(direction="sendonly"))
    assert held.status == 200 and sdp_direction(held.body) is Direction.RECVONLY
    reinvite = (await env.trunk.next_request("INVITE")).request
    assert reinvite.call_id == incoming.call_id
    assert sdp_direction(reinvite.body) is Direction.SENDONLY
    assert (await picked.bye()).status == 200
    await eventually(lambda: env.calls == 0)


async def test_replaces_is_an_extension_only_while_a_group_has_pickup(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    _, bob = await start(nursery, tmp_path, voipgw_seed)  # a watch group without pickup
    options = await (await bob.send(bob.new_request("OPTIONS", "sip:127.0.0.1:5060"), GW)).final()
    assert options.headers.option_tags("Supported") == {"100rel", "timer"}
    required = await bob.invite(
        "sip:alice@127.0.0.1:5060",
        extra=[("Replaces", "x;to-tag=1;from-tag=2"), ("Require", "replaces")],
    )
    refused = await required.final()
    assert refused.status == 420 and refused.headers.get("Unsupported") == "replaces"


async def test_with_pickup_options_lists_replaces(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    _, bob = await start(nursery, tmp_path, voipgw_seed, groups=[PICKUP])
    options = await (await bob.send(bob.new_request("OPTIONS", "sip:127.0.0.1:5060"), GW)).final()
    assert options.status == 200
    assert options.headers.option_tags("Supported") == {"100rel", "timer", "replaces"}
