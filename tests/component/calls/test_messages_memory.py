"""Out-of-dialog MESSAGE (RFC 3428) and unsolicited message-summary NOTIFY relayed B2BUA-style,
on the in-memory network in virtual time: routed as calls are (account to account, account to
trunk by number, a trunk's DID to an account), forked to every registered contact, 480 without
one, 513 where the relayed request would not fit UDP, 403/404 for NOTIFYs from nobody we know or
for no account; never a 408 to the sender (RFC 4320 §4.2): 504 when every target was left for want
of a response while the sender still waits, nothing at all after its Timer F."""

from __future__ import annotations

from pathlib import Path

import trio

from gateway.core.ids import SeededIds
from gateway.core.sip.message import Request, Response
from gateway.testing.network import Address
from gateway.testing.sip_agent import Received, SipAgent
from tests.component.calls.b2bua_env import (
    ALICE_DID,
    ALICE_PASSWORD,
    GW,
    B2bua,
    next_within,
    start_b2bua,
)
from tests.component.calls.message_accept import accept

ALICE_DESK: Address = ("127.0.0.5", 5060)  # alice's second phone
BOB: Address = ("127.0.0.6", 5060)
STRANGER: Address = ("127.0.0.9", 5060)
TEXT = "text/plain;charset=UTF-8"
SUMMARY = b"Messages-Waiting: yes\r\nVoice-Message: 1/0\r\n"


async def start(nursery: trio.Nursery, tmp_path: Path, seed: int, **extra: object) -> B2bua:
    return await start_b2bua(nursery, tmp_path, seed, alice_auto=None, **extra)  # type: ignore[arg-type]


async def phone(
    env: B2bua, nursery: trio.Nursery, address: Address, user: str, password: str, seed: int
) -> SipAgent:
    agent = SipAgent(
        env.network, address, ids=SeededIds(seed), user=user, password=password, proxy=GW,
        auto=None,
    )  # fmt: skip
    await nursery.start(agent.serve)
    assert (await agent.register()).status == 200
    return agent


def silent(agent: SipAgent) -> list[Request]:
    """``agent`` takes every request out of a dialog and never answers it, not even 100."""
    got: list[Request] = []

    async def ignore(received: Received) -> bool:
        got.append(received.request)
        return True

    agent.out_of_dialog = ignore
    return got


def answers_from_gateway(env: B2bua, status: bytes) -> list[bytes]:
    return [d.data for d in env.network.capture if d.src == GW and d.data.startswith(status)]


def message(agent: SipAgent, uri: str, body: bytes = b"hello", content_type: str = TEXT) -> Request:
    return agent.new_request("MESSAGE", uri, body=body, content_type=content_type)


async def test_message_account_to_account_forks_to_every_contact(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start(nursery, tmp_path, voipgw_seed)
    desk = await phone(env, nursery, ALICE_DESK, "alice", ALICE_PASSWORD, voipgw_seed + 7)
    bob = await phone(env, nursery, BOB, "bob", "bob-password-1", voipgw_seed + 8)
    await accept(env.alice, 202)
    await accept(desk, 200)
    body = "Grüße".encode()
    sent, final = await bob.send_authenticated(message(bob, "sip:alice@127.0.0.1:5060", body))
    assert final.status in (200, 202)
    for agent in (env.alice, desk):
        got = (await agent.next_request("MESSAGE")).request
        assert got.body == body and got.content_type == TEXT
        assert got.call_id != sent.call_id and got.from_.tag != sent.from_.tag
        assert "sip:bob@" in str(got.from_.uri)


async def test_message_account_to_trunk_and_trunk_to_account(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start(nursery, tmp_path, voipgw_seed)
    await accept(env.trunk, 202)
    await accept(env.alice, 200)
    cpim = b"From: <sip:alice@example>\r\n\r\nContent-Type: text/plain\r\n\r\nhi\r\n"
    request = message(env.alice, "sip:+15550123@127.0.0.1:5060", cpim, "message/cpim")
    _, final = await env.alice.send_authenticated(request)
    assert final.status == 202
    out = (await env.trunk.next_request("MESSAGE")).request
    assert str(out.uri).startswith("sip:+15550123@127.0.0.2:5060")
    assert f"sip:{ALICE_DID}@" in str(out.from_.uri)  # alice's number on the carrier
    assert out.body == cpim and out.content_type == "message/cpim"

    inbound = message(env.trunk, env.did_uri(ALICE_DID), b"from the carrier")
    final = await (await env.trunk.send(inbound, GW)).final()
    assert final.status == 200
    got = (await env.alice.next_request("MESSAGE")).request
    assert got.body == b"from the carrier"
    assert "sip:+15550100@" in str(got.from_.uri)


async def test_message_far_end_failure_and_no_contact(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start(nursery, tmp_path, voipgw_seed)
    await accept(env.trunk, 486)
    _, final = await env.alice.send_authenticated(message(env.alice, "sip:+15550123@127.0.0.1"))
    assert final.status == 486
    # bob has an account but no registered phone.
    _, final = await env.alice.send_authenticated(message(env.alice, "sip:bob@127.0.0.1:5060"))
    assert final.status == 480


async def test_message_too_large_for_udp_is_513(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start(nursery, tmp_path, voipgw_seed)
    await accept(env.alice)
    big = message(env.trunk, env.did_uri(ALICE_DID), b"x" * 1400)
    final = await (await env.trunk.send(big, GW)).final()
    assert final.status == 513
    assert await next_within(env.alice, "MESSAGE", 2) is None


async def test_unsolicited_notify_fans_out_to_every_contact(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start(nursery, tmp_path, voipgw_seed)
    desk = await phone(env, nursery, ALICE_DESK, "alice", ALICE_PASSWORD, voipgw_seed + 7)
    await accept(env.alice, 481)  # this one does not want it
    await accept(desk, 200)
    notify = env.trunk.new_request(
        "NOTIFY",
        env.did_uri(ALICE_DID),
        extra=[("Event", "message-summary"), ("Subscription-State", "active")],
        body=SUMMARY,
        content_type="application/simple-message-summary",
    )
    final = await (await env.trunk.send(notify, GW)).final()
    assert final.status == 200
    for agent in (env.alice, desk):
        got = (await agent.next_request("NOTIFY")).request
        assert got.body == SUMMARY
        assert got.headers.get("Event") == "message-summary"
        assert got.call_id != notify.call_id


async def test_unsolicited_notify_refused_from_strangers_and_for_unknown_numbers(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start(nursery, tmp_path, voipgw_seed)
    stranger = SipAgent(env.network, STRANGER, ids=SeededIds(voipgw_seed + 9), proxy=GW)
    await nursery.start(stranger.serve)

    async def notify_from(agent: SipAgent, uri: str, event: str = "message-summary") -> Response:
        request = agent.new_request(
            "NOTIFY", uri, extra=[("Event", event)], body=SUMMARY,
            content_type="application/simple-message-summary",
        )  # fmt: skip
        return await (await agent.send(request, GW)).final()

    assert (await notify_from(stranger, env.did_uri(ALICE_DID))).status == 403
    assert (await notify_from(env.trunk, env.did_uri("+4930555"))).status == 404
    bad_event = await notify_from(env.trunk, env.did_uri(ALICE_DID), "presence")
    assert bad_event.status == 489 and bad_event.headers.get("Allow-Events") == "message-summary"
    assert (
        await notify_from(env.trunk, env.did_uri(ALICE_DID), "message-summary;;=")
    ).status == 400
    assert await next_within(env.alice, "NOTIFY", 1) is None


async def test_a_message_to_a_trunk_that_never_answers_gets_504_not_408(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """RFC 4320 §4.2: no 408 to a non-INVITE. The trunk is left after its ``response_timeout``
    (our 408 inside, NO_RESPONSE), well before the sender's Timer F: the sender gets 504 Server
    Time-out (RFC 3261 §21.5.5), in time."""
    env = await start(nursery, tmp_path, voipgw_seed, carrier={"response_timeout": 2.0})
    got = silent(env.trunk)
    started = trio.current_time()
    _, final = await env.alice.send_authenticated(message(env.alice, "sip:+15550123@127.0.0.1"))
    assert (final.status, final.reason) == (504, "Server Time-out (no response in time)")
    assert 2.0 <= trio.current_time() - started < 3.0  # not the sender's own Timer F
    assert len(got) == 1
    assert answers_from_gateway(env, b"SIP/2.0 408") == []


async def test_a_message_whose_targets_answer_408_gets_504_or_the_other_failure(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """A target's own 408 (a pre-RFC 4320 element) is not passed on either: any other failure
    is chosen over it, and 408s alone give 504."""
    env = await start(nursery, tmp_path, voipgw_seed)
    desk = await phone(env, nursery, ALICE_DESK, "alice", ALICE_PASSWORD, voipgw_seed + 7)
    bob = await phone(env, nursery, BOB, "bob", "bob-password-1", voipgw_seed + 8)
    await accept(env.alice, 408)
    await accept(desk, 408)
    _, final = await bob.send_authenticated(message(bob, "sip:alice@127.0.0.1:5060"))
    assert final.status == 504
    await accept(desk, 415)
    _, final = await bob.send_authenticated(message(bob, "sip:alice@127.0.0.1:5060"))
    assert final.status == 415  # not min(408, 415)
    assert answers_from_gateway(env, b"SIP/2.0 408") == []


async def test_an_unsolicited_notify_whose_phone_answers_408_or_nothing_gets_no_408(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """The trunk's NOTIFY: a phone that answers 408 makes it 504; a phone that never answers
    (no ``response_timeout`` for a phone: its Timer F) leaves the trunk without a final
    response once its own Timer F has run out (RFC 4320 §4.2), never a late 408."""
    env = await start(nursery, tmp_path, voipgw_seed)

    def notify() -> Request:
        return env.trunk.new_request(
            "NOTIFY", env.did_uri(ALICE_DID),
            extra=[("Event", "message-summary"), ("Subscription-State", "active")],
            body=SUMMARY, content_type="application/simple-message-summary",
        )  # fmt: skip

    await accept(env.alice, 408)
    final = await (await env.trunk.send(notify(), GW)).final()
    assert final.status == 504
    got = silent(env.alice)
    sent = notify()
    await env.trunk.send(sent, GW)
    await trio.sleep(3 * 64 * 0.5)  # past every Timer F and the table's bound
    assert len(got) == 1
    answered = [
        d.data for d in env.network.capture
        if d.src == GW and d.data.startswith(b"SIP/2.0") and sent.call_id.encode() in d.data
    ]  # fmt: skip
    assert [a for a in answered if not a.startswith(b"SIP/2.0 100")] == []
    assert answers_from_gateway(env, b"SIP/2.0 408") == []


async def test_options_advertise_the_new_methods_and_the_event_package(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start(nursery, tmp_path, voipgw_seed)
    options = env.trunk.new_request("OPTIONS", "sip:127.0.0.1:5060")
    final = await (await env.trunk.send(options, GW)).final()
    allow = {m.strip() for value in final.headers.get_all("Allow") for m in value.split(",")}
    assert {"SUBSCRIBE", "NOTIFY", "MESSAGE"} <= allow
    assert final.headers.get("Allow-Events") == "message-summary"
