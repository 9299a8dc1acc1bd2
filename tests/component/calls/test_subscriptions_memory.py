"""Message-waiting subscriptions relayed to the voicemail trunk (RFC 3842, RFC 6665) on the
in-memory network, virtual time: alice (a registered phone) subscribes to her mailbox, the
carrier (``voicemail = true``, alice's DID +4930123456) answers and notifies; refreshes,
unsubscribes, expiry, ``terminated``, unknown subscriptions and bad input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from gateway.core.calls.subscriptions import MAX_CLOSING_PER_ACCOUNT, MAX_PER_ACCOUNT
from gateway.core.sip.dialog import Dialog
from gateway.core.sip.message import Request, Response, make_response
from gateway.core.status import CallStatistics, StatusView
from gateway.testing.sip_agent import Received
from tests.component.calls.b2bua_env import (
    ALICE_DID,
    GW,
    B2bua,
    eventually,
    next_within,
    start_b2bua,
)
from tests.component.calls.mwi_subscriptions import (
    SUMMARY,
    SUMMARY_READ,
    SUMMARY_TYPE,
    Voicemail,
    subscribe_request,
    subscribed,
)


async def start(nursery: trio.Nursery, tmp_path: Path, seed: int, **carrier: Any) -> B2bua:
    return await start_b2bua(
        nursery, tmp_path, seed, carrier={"voicemail": True, **carrier}, alice_auto=None
    )


def subscriptions(env: B2bua) -> int:
    assert env.gateway.subscriptions is not None
    return len(env.gateway.subscriptions)


async def test_phone_subscribes_trunk_notifies_refresh_and_unsubscribe(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start(nursery, tmp_path, voipgw_seed)
    voicemail = Voicemail(env.trunk)
    dialog = await subscribed(env, voicemail)

    # The trunk saw a SUBSCRIBE of ours for alice's number there, new Call-ID and tags.
    (sent,) = voicemail.subscribes
    assert str(sent.uri).startswith(f"sip:{ALICE_DID}@127.0.0.2:5060")
    assert sent.to.uri is not None and f"sip:{ALICE_DID}@" in str(sent.to.uri)
    assert f"sip:{ALICE_DID}@127.0.0.1" in str(sent.from_.uri)  # as alice's calls present her
    assert sent.call_id != dialog.call_id
    assert sent.headers.get("Event") == "message-summary"
    assert sent.headers.get("Expires") == "600"
    assert subscriptions(env) == 1

    # The trunk's NOTIFY reaches alice in her dialog, body and state as they came.
    final = await voicemail.notify()
    assert final.status == 200
    notify = (await env.alice.next_request("NOTIFY")).request
    assert notify.call_id == dialog.call_id and notify.to.tag == dialog.local_tag
    assert notify.body == SUMMARY and notify.content_type == SUMMARY_TYPE
    assert notify.headers.get("Subscription-State") == "active;expires=500"

    # A refresh goes to the trunk in its dialog.
    refresh = dialog.create_request(
        "SUBSCRIBE",
        via=env.alice.new_via(),
        contact=env.alice.contact,
        extra=[("Event", "message-summary"), ("Expires", "900")],
    )
    answer = await (await env.alice.send(refresh, GW)).final()
    assert answer.status == 200 and answer.headers.get("Expires") == "900"
    assert voicemail.subscribes[-1].to.tag is not None
    assert voicemail.subscribes[-1].headers.get("Expires") == "900"

    # Unsubscribe: relayed, then the trunk's terminated NOTIFY ends it at both sides.
    unsubscribe = dialog.create_request(
        "SUBSCRIBE",
        via=env.alice.new_via(),
        contact=env.alice.contact,
        extra=[("Event", "message-summary"), ("Expires", "0")],
    )
    answer = await (await env.alice.send(unsubscribe, GW)).final()
    assert answer.status == 200
    assert voicemail.subscribes[-1].headers.get("Expires") == "0"
    final = await voicemail.notify("terminated;reason=timeout", b"")
    assert final.status == 200
    last = (await env.alice.next_request("NOTIFY")).request
    assert last.headers.get("Subscription-State") == "terminated;reason=timeout"
    assert subscriptions(env) == 0
    # Nothing is left: another NOTIFY in that dialog is 481.
    assert (await voicemail.notify()).status == 481


async def test_subscription_expires_without_refresh(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start(nursery, tmp_path, voipgw_seed)
    voicemail = Voicemail(env.trunk)
    await subscribed(env, voicemail, expires=60)
    start_time = trio.current_time()
    notify = (await env.alice.next_request("NOTIFY", timeout=120)).request
    assert notify.headers.get("Subscription-State") == "terminated;reason=timeout"
    assert 60 <= trio.current_time() - start_time < 62
    assert subscriptions(env) == 0


async def test_trunk_terminates_the_subscription(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start(nursery, tmp_path, voipgw_seed)
    voicemail = Voicemail(env.trunk)
    await subscribed(env, voicemail)
    assert (await voicemail.notify("terminated;reason=noresource", b"")).status == 200
    notify = (await env.alice.next_request("NOTIFY")).request
    assert notify.headers.get("Subscription-State") == "terminated;reason=noresource"
    assert subscriptions(env) == 0


async def test_phone_481_to_notify_ends_the_subscription(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start(nursery, tmp_path, voipgw_seed)
    voicemail = Voicemail(env.trunk)
    await subscribed(env, voicemail)
    env.alice.dialogs.clear()  # the phone forgot the subscription (it rebooted)
    assert (await voicemail.notify()).status == 481
    assert subscriptions(env) == 0


async def test_phone_408_to_notify_ends_it_and_the_trunk_gets_481_not_408(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    # RFC 6665 §4.2.2: the subscription ends; the trunk is told so by 481, never a 408 to its
    # NOTIFY (RFC 4320 §4.2).
    env = await start(nursery, tmp_path, voipgw_seed)
    voicemail = Voicemail(env.trunk)
    await subscribed(env, voicemail)

    async def timed_out(received: Received) -> bool:
        await env.alice.respond(received, 408)
        return True

    env.alice.in_dialog = timed_out
    assert (await voicemail.notify()).status == 481
    assert subscriptions(env) == 0


async def test_a_refresh_the_trunk_answers_408_ends_it_and_the_phone_gets_481(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    # Ended at the gateway: 481 says so (after any other failure the phone would hold the
    # subscription valid, RFC 6665 §4.1.2.2), and no 408 to the phone's SUBSCRIBE.
    env = await start(nursery, tmp_path, voipgw_seed)
    voicemail = Voicemail(env.trunk)
    dialog = await subscribed(env, voicemail)

    async def timed_out(received: Received) -> bool:
        await env.trunk.respond(received, 408)
        return True

    env.trunk.in_dialog = timed_out
    refresh = dialog.create_request(
        "SUBSCRIBE",
        via=env.alice.new_via(),
        contact=env.alice.contact,
        extra=[("Event", "message-summary"), ("Expires", "900")],
    )
    answer = await (await env.alice.send(refresh, GW)).final()
    assert answer.status == 481
    assert subscriptions(env) == 0


async def test_refusals_bad_input_and_unknown_subscriptions(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start(nursery, tmp_path, voipgw_seed)
    alice = env.alice

    async def status_of(request: Request) -> Response:
        return (await alice.send_authenticated(request))[1]

    presence = await status_of(subscribe_request(alice, event="presence"))
    assert presence.status == 489 and presence.headers.get("Allow-Events") == "message-summary"
    brief = await status_of(subscribe_request(alice, expires=10))
    assert brief.status == 423 and brief.headers.get("Min-Expires") == "60"
    bad = subscribe_request(alice)
    bad = bad.with_headers(bad.headers.set("Expires", "soon"))
    assert (await status_of(bad)).status == 400
    no_event = subscribe_request(alice)
    no_event = no_event.with_headers(no_event.headers.remove("Event"))
    assert (await status_of(no_event)).status == 400
    other = await status_of(subscribe_request(alice, uri="sip:bob@127.0.0.1:5060"))
    assert other.status == 403
    # A NOTIFY in no subscription: 481.
    stray = env.trunk.new_request(
        "NOTIFY",
        "sip:alice@127.0.0.1:5060",
        extra=[("Event", "message-summary"), ("Subscription-State", "active")],
    )
    stray = stray.with_headers(stray.headers.set("To", "<sip:alice@127.0.0.1>;tag=nosuch"))
    assert (await (await env.trunk.send(stray, GW)).final()).status == 481
    assert subscriptions(env) == 0


async def test_no_voicemail_trunk_is_a_clear_404(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start(nursery, tmp_path, voipgw_seed, voicemail=False)
    _, final = await env.alice.send_authenticated(subscribe_request(env.alice))
    assert final.status == 404 and "voicemail" in final.reason


async def test_trunk_refusal_reaches_the_phone(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start(nursery, tmp_path, voipgw_seed)
    Voicemail(env.trunk, status=404)
    _, final = await env.alice.send_authenticated(subscribe_request(env.alice))
    assert final.status == 404
    assert subscriptions(env) == 0


async def test_gateway_stop_unsubscribes_at_the_trunk(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """The phone gets our final NOTIFY at once, ``deactivated`` (RFC 6665 §4.2.2: subscribe
    again, elsewhere) with the last message summary (RFC 3842: the state is the body), and the
    trunk an unsubscribe (§4.1.2.3) whose final NOTIFY is answered 200, not relayed; a new
    SUBSCRIBE meanwhile gets 503."""
    env = await start(nursery, tmp_path, voipgw_seed)
    voicemail = Voicemail(env.trunk, final_notify=nursery)
    await subscribed(env, voicemail)
    assert (await voicemail.notify()).status == 200
    assert (await env.alice.next_request("NOTIFY")).request.body == SUMMARY

    started = trio.current_time()
    await env.gateway.before_stop()
    assert trio.current_time() - started < 2  # both answered: not held to the bound
    assert voicemail.subscribes[-1].headers.get("Expires") == "0"
    await eventually(lambda: voicemail.final_answers != [])
    assert voicemail.final_answers == [200]  # the trunk's final NOTIFY found its subscription
    notify = (await env.alice.next_request("NOTIFY")).request
    assert notify.headers.get("Subscription-State") == "terminated;reason=deactivated"
    assert notify.headers.get("Event") == "message-summary"
    assert notify.body == SUMMARY and notify.content_type == SUMMARY_TYPE
    with trio.move_on_after(5):  # the trunk's final NOTIFY is not relayed: alice has had ours
        await env.alice.next_request("NOTIFY")
        raise AssertionError("the trunk's final NOTIFY reached the phone")
    assert subscriptions(env) == 0
    # Forgotten after the final NOTIFY: another in that dialog finds nothing.
    assert (await voicemail.notify("terminated;reason=timeout", b"")).status == 481
    again = (await env.alice.send_authenticated(subscribe_request(env.alice)))[1]
    assert again.status == 503


async def test_gateway_stop_with_no_summary_yet_and_a_trunk_without_a_final_notify(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """No NOTIFY from the trunk yet: the phone's final NOTIFY has no body (no state to
    repeat). A trunk that sends no final NOTIFY holds the stop to its deadline only."""
    env = await start(nursery, tmp_path, voipgw_seed)
    voicemail = Voicemail(env.trunk)
    await subscribed(env, voicemail)
    started = trio.current_time()
    await env.gateway.before_stop()
    assert trio.current_time() - started <= 2.0 + 0.01  # STOP_TIMEOUT
    notify = (await env.alice.next_request("NOTIFY")).request
    assert notify.headers.get("Subscription-State") == "terminated;reason=deactivated"
    assert notify.body == b""
    assert subscriptions(env) == 0


async def test_notify_before_the_2xx_and_a_challenging_trunk(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """The trunk challenges our SUBSCRIBE (answered with its credentials), then NOTIFYs before
    its 2xx (RFC 6665 §4.1.2.4): alice still gets her 2xx first, then the NOTIFY."""
    env = await start(nursery, tmp_path, voipgw_seed, username="gw", password="vm-secret")
    trunk = env.trunk
    challenged: list[Request] = []

    async def answer(received: Received) -> bool:
        request = received.request
        if request.headers.get("Authorization") is None:
            challenged.append(request)
            challenge = 'Digest realm="vm", nonce="n1", algorithm=MD5, qop="auth"'
            await trunk.respond(received, 401, extra=[("WWW-Authenticate", challenge)])
            return True
        challenged.append(request)
        response = make_response(request, 200, to_tag="vm-tag", extra=[("Expires", "600")])
        dialog = Dialog.create_uas(request, response)
        trunk.add_dialog(dialog)
        notify = dialog.create_request(
            "NOTIFY",
            via=trunk.new_via(),
            contact=trunk.contact,
            extra=[("Event", "message-summary"), ("Subscription-State", "active")],
            body=SUMMARY,
            content_type=SUMMARY_TYPE,
        )
        notified = await trunk.send(notify, GW)
        await trio.sleep(0.5)
        await trunk.respond(received, 200, extra=[("Expires", "600")])
        assert (await notified.final()).status == 200
        return True

    trunk.out_of_dialog = answer
    # The response's To tag must be the one the NOTIFY's From carried.
    trunk.ids = _FixedTag(trunk.ids, "vm-tag")  # type: ignore[assignment]
    await subscribed(env, Voicemail.__new__(Voicemail))
    first, retried = challenged
    assert 'Digest username="gw"' in (retried.headers.get("Authorization") or "")
    assert retried.cseq.number == first.cseq.number + 1 and retried.call_id == first.call_id
    notify = (await env.alice.next_request("NOTIFY")).request
    assert notify.body == SUMMARY
    assert subscriptions(env) == 1


class _FixedTag:
    """An id source whose tags are always ``tag`` (the trunk's dialog tag, known in advance)."""

    def __init__(self, ids: Any, tag: str) -> None:
        self._ids, self._tag = ids, tag

    def new_tag(self) -> str:
        return self._tag

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ids, name)


async def test_limits_and_a_rebooted_phone_replacing_its_subscription(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start(nursery, tmp_path, voipgw_seed)
    voicemail = Voicemail(env.trunk)
    alice = env.alice

    async def subscribe_from(contact: str) -> Response:
        request = subscribe_request(alice)
        request = request.with_headers(request.headers.set("Contact", contact))
        return (await alice.send_authenticated(request))[1]

    assert (await subscribe_from("<sip:alice@127.0.0.3:5060>")).status == 200
    # The same Contact again (the phone rebooted): the old one is unsubscribed and replaced.
    assert (await subscribe_from("<sip:alice@127.0.0.3:5060>")).status == 200
    await eventually(lambda: voicemail.subscribes[-1].headers.get("Expires") == "0")
    assert subscriptions(env) == 1
    for line in range(2, MAX_PER_ACCOUNT + 1):
        assert (await subscribe_from(f"<sip:alice@127.0.0.3:5060;line={line}>")).status == 200
    assert subscriptions(env) == MAX_PER_ACCOUNT
    refused = await subscribe_from("<sip:alice@127.0.0.3:5060;line=99>")
    assert refused.status == 403 and "limit" in refused.reason
    assert subscriptions(env) == MAX_PER_ACCOUNT
    # What monitoring sees.
    assert env.gateway.subscriptions is not None
    status = StatusView(env.gateway, CallStatistics()).sip()
    assert status.subscriptions == MAX_PER_ACCOUNT and status.subscriptions_refused == 1
    listed = env.gateway.subscriptions.listing()
    assert {info.account for info in listed} == {"alice"}
    assert all(info.state == "active" and 0 < info.expires_in <= 600 for info in listed)


async def test_a_rebooted_phones_old_subscription_closes_at_the_trunk(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """alice's phone, at its account's limit, subscribes again from the Contact of one it
    forgot (it rebooted): the new one is taken (the old one, closing, no longer counts), the
    old one is unsubscribed at the trunk as at a stop, whose final NOTIFY is answered 200
    (RFC 6665 §4.1.2.3), not 481, and not relayed to the phone; once it is gone the account
    holds its limit again, no more."""
    env = await start(nursery, tmp_path, voipgw_seed)
    voicemail = Voicemail(env.trunk, final_notify=nursery)
    alice = env.alice

    async def subscribe_from(contact: str) -> tuple[Request, Response]:
        request = subscribe_request(alice)
        request = request.with_headers(request.headers.set("Contact", contact))
        return await alice.send_authenticated(request)

    rebooted = "<sip:alice@127.0.0.3:5060>"
    sent, final = await subscribe_from(rebooted)
    assert final.status == 200
    old_phone = Dialog.create_uac(sent, final)
    alice.add_dialog(old_phone)
    old_trunk = voicemail.dialog
    assert (await voicemail.notify()).status == 200
    assert (await alice.next_request("NOTIFY")).request.body == SUMMARY
    for line in range(2, MAX_PER_ACCOUNT + 1):
        assert (await subscribe_from(f"<sip:alice@127.0.0.3:5060;line={line}>"))[1].status == 200
    assert subscriptions(env) == MAX_PER_ACCOUNT

    _, again = await subscribe_from(rebooted)
    assert again.status == 200  # the closing one does not hold the account's slot
    await eventually(lambda: voicemail.final_answers != [])
    unsubscribe = next(r for r in voicemail.subscribes if r.headers.get("Expires") == "0")
    assert old_trunk is not None and unsubscribe.call_id == old_trunk.call_id
    assert voicemail.final_answers == [200]  # the trunk's final NOTIFY found it closing
    with trio.move_on_after(5):  # and was not relayed: the phone forgot that dialog
        await alice.next_request("NOTIFY")
        raise AssertionError("the trunk's final NOTIFY reached the phone")
    # Forgotten now: the old dialog is gone at both sides.
    assert (await voicemail.notify(dialog=old_trunk)).status == 481
    refresh = old_phone.create_request(
        "SUBSCRIBE",
        via=alice.new_via(),
        contact=alice.contact,
        extra=[("Event", "message-summary"), ("Expires", "600")],
    )
    assert (await (await alice.send(refresh, GW)).final()).status == 481
    # Counted once: the account is at its limit again, not one below it.
    assert subscriptions(env) == MAX_PER_ACCOUNT
    refused = (await subscribe_from("<sip:alice@127.0.0.3:5060;line=99>"))[1]
    assert refused.status == 403 and "limit" in refused.reason


async def test_the_index_by_contact_finds_the_one_to_replace_and_empties(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """The open subscription of each (account, Contact) is found in an index, not by a scan
    of every subscription: a replaced one leaves it at once (closing), a new one takes its
    place, and the index empties as the subscriptions end (here at a stop)."""
    env = await start(nursery, tmp_path, voipgw_seed)
    voicemail = Voicemail(env.trunk, final_notify=nursery)
    alice = env.alice
    assert env.gateway.subscriptions is not None
    store = env.gateway.subscriptions
    first, second = "sip:alice@127.0.0.3:5060", "sip:alice@127.0.0.3:5060;line=2"

    async def subscribe_from(contact: str) -> Response:
        request = subscribe_request(alice)
        request = request.with_headers(request.headers.set("Contact", f"<{contact}>"))
        return (await alice.send_authenticated(request))[1]

    assert (await subscribe_from(first)).status == 200
    old = store._by_contact[("alice", first)]
    assert (await subscribe_from(second)).status == 200
    assert (await subscribe_from(first)).status == 200  # replaces the first one only
    new = store._by_contact[("alice", first)]
    assert new is not old and old.closing and not new.closing
    assert set(store._by_contact) == {("alice", first), ("alice", second)}
    await eventually(lambda: voicemail.final_answers == [200])  # the old one closed at the trunk
    assert subscriptions(env) == 2
    await env.gateway.before_stop()
    assert store._by_contact == {}
    assert subscriptions(env) == 0


async def test_a_subscription_replaced_before_the_trunk_answered_is_unsubscribed_on_its_2xx(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """alice's phone subscribes again from the same Contact while the trunk has not answered
    its first SUBSCRIBE: when the trunk's 2xx for the first comes late, the gateway
    unsubscribes it there at once (``Expires: 0`` in the dialog that 2xx made, RFC 6665
    §4.1.2.3), and answers its NOTIFYs 200, not relayed, until the final one (§4.2.2: 481 only
    once it is gone); the phone's first SUBSCRIBE gets no 2xx (no dialog the gateway does not
    know)."""
    env = await start(nursery, tmp_path, voipgw_seed)
    voicemail = Voicemail(env.trunk)
    alice = env.alice
    held: list[Received] = []
    answering = voicemail.agent.out_of_dialog
    assert answering is not None

    async def holding_the_first(received: Received) -> bool:
        if received.request.method == "SUBSCRIBE" and not held:
            held.append(received)  # answered below, late
            return True
        return await answering(received)

    env.trunk.out_of_dialog = holding_the_first
    contact = "<sip:alice@127.0.0.3:5060>"
    first: list[Response] = []

    async def subscribe() -> Response:
        request = subscribe_request(alice)
        request = request.with_headers(request.headers.set("Contact", contact))
        return (await alice.send_authenticated(request))[1]

    async def subscribe_first() -> None:
        first.append(await subscribe())

    nursery.start_soon(subscribe_first)
    await eventually(lambda: held != [])
    assert (await subscribe()).status == 200  # replaces the unanswered one
    assert subscriptions(env) == 1
    late = held[0]
    response = await voicemail.agent.respond(late, 200, extra=[("Expires", "600")])
    dialog = Dialog.create_uas(late.request, response)
    voicemail.agent.add_dialog(dialog)
    await eventually(lambda: first != [])
    assert first[0].status == 481
    await eventually(lambda: voicemail.subscribes[-1].headers.get("Expires") == "0")
    unsubscribe = voicemail.subscribes[-1]
    assert unsubscribe.call_id == late.request.call_id
    assert unsubscribe.to.tag == dialog.local_tag  # in the dialog the late 2xx made
    assert unsubscribe.headers.get("Expires") == "0"
    assert subscriptions(env) == 1  # the new one stays
    assert env.gateway.subscriptions is not None
    assert len(env.gateway.subscriptions._by_trunk) == 2  # the old one closing
    # The trunk's NOTIFYs in the old dialog, sent before it handled the unsubscribe, and its
    # final one: 200, not relayed to the phone; after the final one, 481.
    assert (await voicemail.notify(dialog=dialog)).status == 200
    assert (await voicemail.notify("terminated;reason=timeout", dialog=dialog)).status == 200
    assert await next_within(alice, "NOTIFY", 2) is None
    assert len(env.gateway.subscriptions._by_trunk) == 1
    assert (await voicemail.notify(dialog=dialog)).status == 481


async def test_replaced_subscriptions_waiting_for_their_trunk_are_bounded_per_account(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """alice re-subscribes from one Contact again and again, and the trunk never sends its
    final NOTIFY: at most MAX_CLOSING_PER_ACCOUNT replaced ones wait for it (the oldest is
    forgotten, its final NOTIFY would get 481), so one account cannot fill the global limit."""
    env = await start(nursery, tmp_path, voipgw_seed)
    voicemail = Voicemail(env.trunk)  # answers the unsubscribes, sends no final NOTIFY
    alice = env.alice
    assert env.gateway.subscriptions is not None
    store = env.gateway.subscriptions
    rebooted = "<sip:alice@127.0.0.3:5060>"
    trunk_dialogs = []
    for _ in range(3 * MAX_CLOSING_PER_ACCOUNT):
        request = subscribe_request(alice)
        request = request.with_headers(request.headers.set("Contact", rebooted))
        assert (await alice.send_authenticated(request))[1].status == 200
        trunk_dialogs.append(voicemail.dialog)
        assert len(store._by_trunk) <= 1 + MAX_CLOSING_PER_ACCOUNT
    assert subscriptions(env) == 1
    assert len(store._by_trunk) == 1 + MAX_CLOSING_PER_ACCOUNT
    # The oldest were forgotten at once: their trunk's final NOTIFY gets 481.
    first = trunk_dialogs[0]
    assert first is not None
    assert (await voicemail.notify("terminated", dialog=first)).status == 481
    # The newest replaced one still waits for it: 200.
    waiting = trunk_dialogs[-2]
    assert waiting is not None
    assert (await voicemail.notify("terminated", dialog=waiting)).status == 200


async def test_a_replaced_subscription_the_trunk_keeps_answers_its_notifies_until_it_expires(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """The trunk refuses the unsubscribe of a rebooted phone's old subscription (not 481 or
    408): it exists there until its expiry (RFC 6665 §4.1.2.2), and its NOTIFYs meanwhile
    are answered 200 (§4.2.2), not relayed to the phone; once it has expired, 481."""
    env = await start(nursery, tmp_path, voipgw_seed)
    voicemail = Voicemail(env.trunk)
    alice = env.alice
    refusing = voicemail.agent.in_dialog
    assert refusing is not None

    async def refuse_unsubscribes(received: Received) -> bool:
        if received.request.headers.get("Expires") == "0":
            voicemail.subscribes.append(received.request)
            await voicemail.agent.respond(received, 500)
            return True
        return await refusing(received)

    voicemail.agent.in_dialog = refuse_unsubscribes
    contact = "<sip:alice@127.0.0.3:5060>"

    async def subscribe(expires: int) -> Response:
        request = subscribe_request(alice, expires=expires)
        request = request.with_headers(request.headers.set("Contact", contact))
        return (await alice.send_authenticated(request))[1]

    assert (await subscribe(600)).status == 200
    old = voicemail.dialog
    assert old is not None
    granted_at = trio.current_time()
    assert (await subscribe(3600)).status == 200  # the phone rebooted
    await eventually(lambda: voicemail.subscribes[-1].headers.get("Expires") == "0")
    assert subscriptions(env) == 1
    # Late NOTIFYs of the old one, long after the unsubscribe (FINAL_NOTIFY_WAIT passed).
    await trio.sleep(100)
    assert (await voicemail.notify(dialog=old)).status == 200
    await trio.sleep(300)
    assert (await voicemail.notify("active", SUMMARY_READ, dialog=old)).status == 200
    assert await next_within(alice, "NOTIFY", 1) is None  # not relayed: the phone forgot it
    # Expired (600 s after its 2xx): gone, 481 from now on.
    await trio.sleep_until(granted_at + 601)
    assert (await voicemail.notify(dialog=old)).status == 481
    assert subscriptions(env) == 1
    assert env.gateway.subscriptions is not None
    assert len(env.gateway.subscriptions._by_trunk) == 1


async def test_a_stop_waits_for_a_replaced_subscriptions_unsubscribe(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """The gateway stops while a rebooted phone's old subscription is still closing (the
    trunk takes 1 s to answer its unsubscribe): the stop waits for it as for the others, so
    the trunk's final NOTIFY for it is answered 200 before the stop returns."""
    env = await start(nursery, tmp_path, voipgw_seed)
    voicemail = Voicemail(env.trunk, final_notify=nursery)
    alice = env.alice
    answering = voicemail.agent.in_dialog
    assert answering is not None

    async def answer_later(received: Received) -> None:
        await trio.sleep(1)
        await answering(received)

    async def slow_unsubscribe(received: Received) -> bool:
        request = received.request
        if request.headers.get("Expires") == "0" and request.call_id == first.call_id:
            nursery.start_soon(answer_later, received)  # the agent answers others meanwhile
            return True
        return await answering(received)

    voicemail.agent.in_dialog = slow_unsubscribe
    contact = "<sip:alice@127.0.0.3:5060>"
    for _ in range(2):  # the second replaces the first
        request = subscribe_request(alice)
        request = request.with_headers(request.headers.set("Contact", contact))
        assert (await alice.send_authenticated(request))[1].status == 200
        if voicemail.dialog is not None and len(voicemail.dialogs) == 1:
            first = voicemail.dialog
    await env.gateway.before_stop()
    # Both closed when the stop returns: the replaced one's final NOTIFY came, as the
    # stopped one's did, each answered 200.
    assert env.gateway.subscriptions is not None
    assert len(env.gateway.subscriptions._by_trunk) == 0
    await eventually(lambda: len(voicemail.final_answers) == 2)
    assert voicemail.final_answers == [200, 200]


async def test_subscribe_and_notify_over_a_lossy_network(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """Loss, duplication and reordering: the transactions' retransmissions carry it through,
    each NOTIFY reaches the phone once (a duplicate is absorbed by its transaction)."""
    env = await start_b2bua(
        nursery,
        tmp_path,
        voipgw_seed,
        carrier={"voicemail": True},
        alice_auto=None,
        drop=0.15,
        duplicate=0.15,
        reorder=0.15,
    )
    voicemail = Voicemail(env.trunk)
    await subscribed(env, voicemail)
    for waiting in (b"Messages-Waiting: yes\r\n", b"Messages-Waiting: no\r\n"):
        assert (await voicemail.notify(body=waiting)).status == 200
        assert (await env.alice.next_request("NOTIFY")).request.body == waiting
    assert [r.body for r in env.alice.requests("NOTIFY")] == [
        b"Messages-Waiting: yes\r\n",
        b"Messages-Waiting: no\r\n",
    ]
    assert subscriptions(env) == 1


async def test_a_fetch_whose_terminated_notify_overtakes_the_2xx(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """Expires: 0 out of a dialog is a fetch (RFC 6665 §4.4.3): the trunk's one NOTIFY,
    terminated, may come before its 2xx; the phone gets the 2xx, then the NOTIFY."""
    env = await start(nursery, tmp_path, voipgw_seed)
    trunk = env.trunk

    async def answer(received: Received) -> bool:
        request = received.request
        response = make_response(request, 200, to_tag="vm-tag", extra=[("Expires", "0")])
        dialog = Dialog.create_uas(request, response)
        notify = dialog.create_request(
            "NOTIFY",
            via=trunk.new_via(),
            contact=trunk.contact,
            extra=[
                ("Event", "message-summary"),
                ("Subscription-State", "terminated;reason=timeout"),
            ],
            body=SUMMARY,
            content_type=SUMMARY_TYPE,
        )
        notified = await trunk.send(notify, GW)
        await trio.sleep(0.5)
        await trunk.respond(received, 200, extra=[("Expires", "0")])
        assert (await notified.final()).status == 200
        return True

    trunk.out_of_dialog = answer
    trunk.ids = _FixedTag(trunk.ids, "vm-tag")  # type: ignore[assignment]
    sent, final = await env.alice.send_authenticated(subscribe_request(env.alice, expires=0))
    assert final.status == 200 and final.headers.get("Expires") == "0"
    env.alice.add_dialog(Dialog.create_uac(sent, final))
    notify = (await env.alice.next_request("NOTIFY")).request
    assert notify.body == SUMMARY
    assert notify.headers.get("Subscription-State") == "terminated;reason=timeout"
    await eventually(lambda: subscriptions(env) == 0)
