"""Busy lamp fields: the gateway as notifier of the dialog event package (RFC 4235) for its own
accounts, on the in-memory network in virtual time. bob (an account, a phone at 127.0.0.4)
watches alice (registered at 127.0.0.3); the carrier calls alice's DID and she answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from gateway.core.calls import dialog_events
from gateway.core.sip.dialog import Dialog
from gateway.core.sip.message import Request, Response
from gateway.core.status import CallStatistics, StatusView
from gateway.plugins.metrics.collect import render
from gateway.testing.sip_agent import AutoAnswer, SipAgent
from tests.component.calls.b2bua_env import (
    ALICE_DID,
    BOB_DID,
    GW,
    B2bua,
    eventually,
    next_within,
)
from tests.component.calls.dialog_event_watch import (
    OFFICE,
    Doc,
    next_doc,
    start,
    subscribe_request,
    watch,
)


async def docs_until(phone: SipAgent, state: str) -> list[Doc]:
    """NOTIFY bodies until one shows a dialog in ``state`` (or none, for "idle")."""
    seen: list[Doc] = []
    while True:
        _, found = await next_doc(phone)
        seen.append(found)
        states = {s for _, _, s in found.dialogs}
        if state in states or (state == "idle" and not states):
            return seen


def count(env: B2bua) -> int:
    assert env.gateway.dialog_events is not None
    return len(env.gateway.dialog_events)


async def test_watch_a_call_ring_answer_and_end(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, bob = await start(nursery, tmp_path, voipgw_seed)
    dialog = await watch(bob)
    notify, first = await next_doc(bob)
    # RFC 6665 §4.2.1.1: the full state at once; nobody calls alice yet.
    assert notify.call_id == dialog.call_id and notify.to.tag == dialog.local_tag
    assert notify.headers.get("Event") == "dialog"
    assert (notify.headers.get("Subscription-State") or "").startswith("active;expires=")
    assert first == Doc(0, "sip:alice@127.0.0.1:5060", (), ())

    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    assert (await call.final()).status == 200
    seen = await docs_until(bob, "confirmed")
    states = [s for d in seen for _, _, s in d.dialogs]
    assert "early" in states and states[-1] == "confirmed"  # ringing, then answered
    assert all(d.dialogs[0][1] == "recipient" for d in seen)
    assert [d.version for d in seen] == list(range(1, len(seen) + 1))
    dialog_id = seen[-1].dialogs[0][0]
    # Opaque: neither the call's Call-ID nor a tag, and no identities (show_parties false).
    assert call.call_id not in dialog_id and len(dialog_id) == 16
    assert all(d.identities == () for d in seen)
    assert b"call-id" not in notify.body and b"+15550100" not in notify.body

    await env.alice.next_request("ACK")
    assert (await call.bye()).status == 200
    last = (await docs_until(bob, "terminated"))[-1]
    assert last.dialogs == ((dialog_id, "recipient", "terminated"),)
    # Told once, then gone: the next document (a refresh's) is idle.
    refresh = dialog.create_request(
        "SUBSCRIBE",
        via=bob.new_via(),
        contact=bob.contact,
        extra=[("Event", "dialog"), ("Expires", "900")],
    )
    answer = await (await bob.send(refresh, GW)).final()
    assert answer.status == 200 and answer.headers.get("Expires") == "900"
    _, after = await next_doc(bob)
    assert after.dialogs == () and after.version == last.version + 1
    assert count(env) == 1


async def test_outgoing_and_two_calls_at_once_with_parties_shown(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, bob = await start(
        nursery, tmp_path, voipgw_seed, groups=[{**OFFICE, "show_parties": True}]
    )
    await watch(bob)
    await next_doc(bob)
    alice = env.alice
    alice.auto = AutoAnswer(ring=True, status=None)  # she lets it ring
    incoming = await env.trunk.invite(env.did_uri(ALICE_DID))
    await incoming.exchange.wait_for(lambda r: r.status == 180)
    ringing = (await docs_until(bob, "early"))[-1]
    assert ringing.dialogs[0][1:] == ("recipient", "early")
    # The caller as presented to alice, and alice.
    assert any("+15550100" in identity for identity in ringing.identities)
    assert any("alice" in identity for identity in ringing.identities)
    # alice calls out as well (to the carrier): a second dialog, she is its initiator.
    env.trunk.auto = AutoAnswer(ring=True, status=None)
    outgoing = await alice.invite("sip:+15550199@127.0.0.1:5060")
    await outgoing.exchange.wait_for(lambda r: r.status == 407)
    await outgoing.authenticate()
    both = (await docs_until(bob, "trying"))[-1]
    assert {(d, s) for _, d, s in both.dialogs} >= {("recipient", "early"), ("initiator", "trying")}
    assert len({i for i, _, _ in both.dialogs}) == 2
    assert any("+15550199" in identity for identity in both.identities)
    await outgoing.cancel()
    await incoming.cancel()
    await eventually(lambda: env.calls == 0)
    # Each dialog is told terminated (once), then left out.
    ended: set[str] = set()
    while len(ended) < 2:
        _, found = await next_doc(bob)
        ended |= {i for i, _, s in found.dialogs if s == "terminated"}
    assert ended == {i for i, _, _ in both.dialogs}
    assert await next_within(bob, "NOTIFY", 5) is None


async def test_refusals(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, bob = await start(
        nursery, tmp_path, voipgw_seed, groups=[{"name": "g", "accounts": ["bob", "ghost"]}]
    )

    async def status_of(request: Request) -> Response:
        return (await bob.send_authenticated(request))[1]

    # alice shares no group with bob: 403, default deny.
    assert (await status_of(subscribe_request(bob, "alice"))).status == 403
    # Not an account, though in bob's group: 404; in no group: 403 (no probing of names).
    assert (await status_of(subscribe_request(bob, "ghost"))).status == 404
    assert (await status_of(subscribe_request(bob, "nobody"))).status == 403
    presence = await status_of(subscribe_request(bob, "alice", event="presence"))
    assert presence.status == 489
    assert presence.headers.get_all("Allow-Events") == ("message-summary", "dialog")
    brief = await status_of(subscribe_request(bob, "bob", expires=10))
    assert brief.status == 423 and brief.headers.get("Min-Expires") == "60"
    xml_only = subscribe_request(bob, "bob")
    xml_only = xml_only.with_headers(xml_only.headers.set("Accept", "application/pidf+xml"))
    assert (await status_of(xml_only)).status == 406
    # Not authenticated: challenged; a trunk: 403.
    unauthenticated = await (await bob.send(subscribe_request(bob, "bob"))).final()
    assert unauthenticated.status == 407
    trunk = await (await env.trunk.send(subscribe_request(env.trunk, "alice"))).final()
    assert trunk.status == 403
    # Watching oneself needs no group.
    await watch(bob, "bob")
    assert count(env) == 1
    # OPTIONS lists both packages.
    options = env.trunk.new_request("OPTIONS", "sip:127.0.0.1:5060")
    answer = await (await env.trunk.send(options, GW)).final()
    assert answer.headers.get_all("Allow-Events") == ("message-summary", "dialog")


async def test_expiry_unsubscribe_and_fetch(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, bob = await start(nursery, tmp_path, voipgw_seed)
    await watch(bob, expires=60)
    await next_doc(bob)
    started = trio.current_time()
    notify, last = await next_doc(bob, timeout=120)
    assert notify.headers.get("Subscription-State") == "terminated;reason=timeout"
    assert 60 <= trio.current_time() - started < 62 and last.version == 1
    await eventually(lambda: count(env) == 0)

    dialog = await watch(bob)
    await next_doc(bob)
    unsubscribe = dialog.create_request(
        "SUBSCRIBE",
        via=bob.new_via(),
        contact=bob.contact,
        extra=[("Event", "dialog"), ("Expires", "0")],
    )
    answer = await (await bob.send(unsubscribe, GW)).final()
    assert answer.status == 200 and answer.headers.get("Expires") == "0"
    notify, final = await next_doc(bob)
    assert notify.headers.get("Subscription-State") == "terminated;reason=timeout"
    assert final.dialogs == ()
    await eventually(lambda: count(env) == 0)

    # A fetch (RFC 6665 §4.4.3): Expires 0 out of a dialog, one terminated NOTIFY.
    sent, fetched = await bob.send_authenticated(subscribe_request(bob, expires=0))
    assert fetched.status == 200 and fetched.headers.get("Expires") == "0"
    bob.add_dialog(Dialog.create_uac(sent, fetched))
    notify, only = await next_doc(bob)
    assert notify.headers.get("Subscription-State") == "terminated;reason=timeout"
    assert only.version == 0
    await eventually(lambda: count(env) == 0)


async def test_notify_481_ends_it_and_stop_terminates(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, bob = await start(nursery, tmp_path, voipgw_seed)
    await watch(bob)
    await next_doc(bob)
    bob.dialogs.clear()  # the phone forgot it (rebooted): it answers 481
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    assert (await call.final()).status == 200
    await eventually(lambda: count(env) == 0)
    assert env.gateway.dialog_events is not None and not env.gateway.dialog_events.watched
    for received in bob.received:  # the NOTIFY it answered 481
        received.taken = True

    # A new subscription; the gateway stops: a final NOTIFY, subscribe again (RFC 6665 §4.2.2:
    # at once, on another node or this one restarted).
    await watch(bob)
    await next_doc(bob)
    await env.gateway.before_stop()
    notify, final = await next_doc(bob)
    assert notify.headers.get("Subscription-State") == "terminated;reason=deactivated"
    assert [s for _, _, s in final.dialogs] == ["confirmed"]  # the call still up
    assert count(env) == 0


async def test_limits_replacement_and_status(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    monkeypatch: Any,
) -> None:
    monkeypatch.setattr(dialog_events, "MAX_PER_ACCOUNT", 3)
    env, bob = await start(nursery, tmp_path, voipgw_seed)

    async def subscribe_from(contact: str, target: str = "alice") -> Response:
        request = subscribe_request(bob, target)
        request = request.with_headers(request.headers.set("Contact", contact))
        return (await bob.send_authenticated(request))[1]

    assert (await subscribe_from("<sip:bob@127.0.0.4:5060>")).status == 200
    # The same Contact and target again (the phone rebooted): it replaces the old one.
    assert (await subscribe_from("<sip:bob@127.0.0.4:5060>")).status == 200
    assert count(env) == 1
    assert (await subscribe_from("<sip:bob@127.0.0.4:5060>", "bob")).status == 200
    assert (await subscribe_from("<sip:bob@127.0.0.4:5060;line=2>")).status == 200
    refused = await subscribe_from("<sip:bob@127.0.0.4:5060;line=3>")
    assert refused.status == 403 and "limit" in refused.reason
    assert count(env) == 3
    view = StatusView(env.gateway, CallStatistics())
    status = view.sip()
    assert status.dialog_subscriptions == 3 and status.dialog_subscriptions_refused == 1
    assert status.subscriptions == 0 and status.subscriptions_refused == 0
    scraped = render(view).decode()
    assert 'voipgw_subscriptions{package="dialog"} 3\n' in scraped
    assert 'voipgw_subscriptions{package="message-summary"} 0\n' in scraped
    assert 'voipgw_subscriptions_refused_total{package="dialog"} 1\n' in scraped
    assert env.gateway.dialog_events is not None
    listed = env.gateway.dialog_events.listing()
    assert sorted(info.watched for info in listed) == ["alice", "alice", "bob"]


async def test_unwatched_calls_are_not_tracked(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """bob watches himself only: alice's calls leave nothing behind in the notifier."""
    env, bob = await start(nursery, tmp_path, voipgw_seed)
    await watch(bob, "bob")
    await next_doc(bob)
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    assert (await call.final()).status == 200
    notifier = env.gateway.dialog_events
    assert notifier is not None and not notifier._involved
    assert await next_within(bob, "NOTIFY", 2) is None
    # A call to bob (his DID) is his: he rings (early), then the caller gives up.
    to_bob = await env.trunk.invite(env.did_uri(BOB_DID))
    await to_bob.exchange.wait_for(lambda r: r.status == 180)
    assert (await docs_until(bob, "early"))[-1].dialogs[0][1] == "recipient"
    await to_bob.cancel()
    await docs_until(bob, "terminated")
    assert not notifier._involved


async def test_over_a_lossy_network_every_state_arrives_in_order(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """Loss, duplication and reordering: one NOTIFY at a time, each retransmitted until
    answered, so the versions arrive in order, once each, and the phone sees early then
    confirmed then terminated."""
    env, bob = await start(nursery, tmp_path, voipgw_seed, drop=0.15, duplicate=0.15, reorder=0.15)
    await watch(bob)
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    assert (await call.final(timeout=60)).status == 200
    seen = await docs_until(bob, "confirmed")
    await eventually(lambda: env.alice.requests("ACK") != [], timeout=60)
    assert (await call.bye(timeout=60)).status == 200
    seen += await docs_until(bob, "terminated")
    assert [d.version for d in seen] == list(range(len(seen)))
    states = [d.dialogs[0][2] if d.dialogs else "idle" for d in seen]
    assert states[0] == "idle" and states[-1] == "terminated"
    assert states.index("confirmed") < states.index("terminated")
    if 180 in call.exchange.statuses:  # unless alice's 180 was lost (a 1xx is never resent)
        assert states.index("early") < states.index("confirmed")


async def test_a_transfer_ends_the_transferors_dialog(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """alice answers the carrier's call and transfers it to bob (REFER, RFC 3515): bob, who
    watches her, sees her dialog confirmed, then terminated once the call is his."""
    env, bob = await start(nursery, tmp_path, voipgw_seed)
    bob.auto = AutoAnswer()
    await watch(bob)
    await next_doc(bob)
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    assert (await call.final()).status == 200
    alice_leg = await env.alice.next_call()
    confirmed = (await docs_until(bob, "confirmed"))[-1]
    await env.alice.next_request("ACK")
    referred = await alice_leg.request("REFER", extra=[("Refer-To", "<sip:bob@127.0.0.1:5060>")])
    assert (await referred.final()).status == 202
    await bob.next_request("INVITE")
    ended = (await docs_until(bob, "terminated"))[-1]
    assert ended.dialogs == ((confirmed.dialogs[0][0], "recipient", "terminated"),)
    assert env.calls == 1  # the call goes on, between the carrier and bob
