"""In-dialog requests whose other leg has lost the session (RFC 3261 §12.2.1.2, RFC 5057 §5.1):
a relayed INFO or MESSAGE answered 481 or 408, or never answered, a re-INVITE answered
481 or 404, end the call on both sides: the requester is answered without a status that would
end its own dialog (never 408 to a non-INVITE, RFC 4320 §4.2) and gets a BYE saying why, the
leg that answered gets one unless it holds no dialog any more (481, a broken target), and the
call record states the reason. Failures that end nothing (488, 491, 501) keep the call, and so
does a 481 to a NOTIFY, which ends only its subscription, and a 404, 480 or the like to an INFO
or MESSAGE, which the session does without (gateway.core.sip.usages). Signalling on the
in-memory network, virtual time (T1 = 0.5 s: Timer F = 32 s)."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from gateway.testing.sip_agent import SDP, Call, Received
from tests.component.calls.b2bua_env import GW, B2bua, answered_call, eventually, start_b2bua
from tests.component.calls.reinvite_answers import alice_answers_reinvites

INFO_BODY = ("application/vnd.example+xml", b"<x/>")


def alice_answers(env: B2bua, method: str, status: int | None) -> list[Received]:
    """alice's phone answers every in-dialog ``method`` ``status`` (None: never answers)."""
    got: list[Received] = []

    async def hook(received: Received) -> bool:
        if received.request.method != method:
            return False
        got.append(received)
        if status is not None:
            await env.alice.respond(received, status)
        return True

    env.alice.in_dialog = hook
    return got


async def end_reason(env: B2bua) -> str:
    store = env.gateway.store
    await eventually(lambda: [r.ended_at for r in store.call_records_recent()] != [None])
    [record] = store.call_records_recent()
    assert record.end_reason is not None
    return record.end_reason


async def the_call_goes_on(env: B2bua, call: Call) -> None:
    """Five seconds on, the call is still up, no BYE went either way, and the trunk can end it."""
    await trio.sleep(5)
    assert env.calls == 1
    assert env.trunk.requests("BYE") == [] and env.alice.requests("BYE") == []
    assert (await call.bye()).status == 200


@pytest.mark.parametrize(
    ("method", "content_type", "body"),
    [
        ("INFO", *INFO_BODY),
        ("MESSAGE", "text/plain", b"hello"),
    ],
)
async def test_a_relayed_request_answered_481_ends_the_call_with_a_bye_to_the_requester(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    method: str,
    content_type: str,
    body: bytes,
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    call, _ = await answered_call(env)
    alice_answers(env, method, 481)
    sent = await call.request(method, body=body, content_type=content_type)
    final = await sent.final(timeout=5)
    # Not 481 (that would end the trunk's dialog crossing our BYE): 500 naming alice's 481.
    assert final.status == 500
    assert "the B leg answered 481" in (final.headers.get("Warning") or "")
    bye = await env.trunk.next_request("BYE", timeout=5)
    assert bye.request.call_id == call.call_id
    assert "cause=481" in (bye.request.headers.get("Reason") or "")
    await eventually(lambda: env.calls == 0)
    reason = await end_reason(env)
    assert reason == (
        f"{method} to the B leg answered 481 Call/Transaction Does Not Exist: its dialog is gone"
    )
    await trio.sleep(1)
    assert env.alice.requests("BYE") == []  # alice has no dialog for a BYE to end


async def test_a_relayed_info_answered_408_gets_504_and_ends_the_call_on_both_legs(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    call, _ = await answered_call(env)
    alice_answers(env, "INFO", 408)
    sent = await call.request("INFO", body=INFO_BODY[1], content_type=INFO_BODY[0])
    final = await sent.final(timeout=5)
    assert final.status == 504  # RFC 4320 §4.2: never 408 to a non-INVITE
    await env.trunk.next_request("BYE", timeout=5)
    # A 408 leaves alice perhaps still there: she gets the BYE too (RFC 3261 §15).
    await env.alice.next_request("BYE", timeout=5)
    assert await end_reason(env) == "INFO to the B leg answered 408 Request Timeout"
    await eventually(lambda: env.calls == 0)


async def test_a_relayed_message_nobody_answers_ends_the_call_at_timer_f(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    call, _ = await answered_call(env)
    got = alice_answers(env, "MESSAGE", None)
    started = trio.current_time()
    sent = await call.request("MESSAGE", body=b"anyone?", content_type="text/plain")
    bye = await env.trunk.next_request("BYE", timeout=40)
    assert 32 <= bye.at - started < 33  # our client transaction's Timer F (64*T1)
    assert len(got) >= 1
    await trio.sleep(1)
    answers = [
        d.data.split(b"\r\n", 1)[0] for d in env.network.capture
        if d.src == GW and d.data.startswith(b"SIP/2.0") and sent.request.call_id.encode() in d.data
        and b" MESSAGE\r\n" in d.data
    ]  # fmt: skip
    # 504 at most (our Timer F and the trunk's end together), never 408 (RFC 4320 §4.2).
    assert set(answers) <= {b"SIP/2.0 504 Server Time-out"}
    assert await end_reason(env) == "MESSAGE to the B leg answered 408 Request Timeout"
    await eventually(lambda: env.calls == 0)


@pytest.mark.parametrize("status", [488, 491, 501])
async def test_a_relayed_request_failure_that_ends_nothing_keeps_the_call(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    status: int,
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    call, _ = await answered_call(env)
    alice_answers(env, "INFO", status)
    sent = await call.request("INFO", body=INFO_BODY[1], content_type=INFO_BODY[0])
    assert (await sent.final(timeout=5)).status == status  # passed on as it is
    await the_call_goes_on(env, call)


@pytest.mark.parametrize(
    ("method", "content_type", "body", "status"),
    [
        ("INFO", *INFO_BODY, 404),
        ("INFO", *INFO_BODY, 480),
        ("MESSAGE", "text/plain", b"hello", 404),
        ("MESSAGE", "text/plain", b"hello", 480),
        ("MESSAGE", "text/plain", b"hello", 502),
    ],
)
async def test_an_optional_request_answered_404_or_480_passes_it_on_and_keeps_the_call(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    method: str,
    content_type: str,
    body: bytes,
    status: int,
) -> None:
    """RFC 5057 §5.1 would have a 404 or 502 end the dialog and a 480 the usage, but agents give
    them to an INFO or MESSAGE for reasons of their own (Asterisk answers an in-dialog MESSAGE
    404 while its session has no channel): the answer passes on to the requester, whose dialog
    it is, and the call goes on (gateway.core.sip.usages, ends_session)."""
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    call, _ = await answered_call(env)
    alice_answers(env, method, status)
    sent = await call.request(method, body=body, content_type=content_type)
    assert (await sent.final(timeout=5)).status == status
    await the_call_goes_on(env, call)


async def test_a_notify_answered_481_ends_only_its_subscription_not_the_call(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """RFC 5057 §5.1: a NOTIFY belongs to a subscription usage of the dialog; its 481 ends that
    usage (its sender is told: the 481 passes on), never the invite usage, the call."""
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    call, _ = await answered_call(env)
    alice_answers(env, "NOTIFY", 481)
    sent = await call.request(
        "NOTIFY",
        body=b"SIP/2.0 200 OK\r\n",
        content_type="message/sipfrag;version=2.0",
        extra=[("Event", "refer"), ("Subscription-State", "terminated;reason=noresource")],
    )
    assert (await sent.final(timeout=5)).status == 481
    await the_call_goes_on(env, call)


async def test_a_reinvite_whose_leg_lost_the_dialog_byes_only_the_requester(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """481 (alice lost the dialog): the trunk's re-INVITE gets 500, then the BYE; alice gets
    none."""
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    call, _ = await answered_call(env)

    async def gone(received: Received) -> None:
        await env.alice.respond(received, 481)

    alice_answers_reinvites(env, gone)
    hold = await call.reinvite(env.trunk.offer_sdp(direction="sendonly"))
    assert hold.status == 500
    await env.trunk.next_request("BYE", timeout=5)
    reason = await end_reason(env)
    assert reason.startswith("re-INVITE to the B leg answered 481 ")
    assert reason.endswith(": its dialog is gone")
    await trio.sleep(1)
    assert env.alice.requests("BYE") == []


@pytest.mark.parametrize("status", [404, 405, 480, 502])
async def test_a_reinvite_answered_404_or_480_passes_it_on_and_keeps_the_call(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    status: int,
) -> None:
    """RFC 5057 §5.1 would have these end the dialog or the session, but RFC 3261 §14.1 keeps
    the session after a failed re-INVITE and only 481/408 end it (§12.2.1.2; FreeSWITCH does
    the same): the answer passes on to the requester, whose dialog it is, and the call goes
    on."""
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    call, _ = await answered_call(env)

    async def refuse(received: Received) -> None:
        await env.alice.respond(received, status)

    alice_answers_reinvites(env, refuse)
    hold = await call.request(
        "INVITE", body=env.trunk.offer_sdp(direction="sendonly"), content_type=SDP
    )
    assert (await hold.final(timeout=5)).status == status
    await the_call_goes_on(env, call)


async def test_a_reinvite_refused_488_or_in_glare_keeps_the_call(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    call, _ = await answered_call(env)
    answers = iter([488, 491])

    async def refuse(received: Received) -> None:
        await env.alice.respond(received, next(answers))

    alice_answers_reinvites(env, refuse)
    for status in (488, 491):
        hold = await call.request(
            "INVITE", body=env.trunk.offer_sdp(direction="sendonly"), content_type=SDP
        )
        assert (await hold.final(timeout=5)).status == status
    await trio.sleep(5)
    assert env.calls == 1
    assert env.trunk.requests("BYE") == []
    assert (await call.bye()).status == 200
