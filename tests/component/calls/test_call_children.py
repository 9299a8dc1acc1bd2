"""A call's child tasks (DTMF from INFO here; DTLS handshakes, RFC 4733 event timers and location
waits start the same way, calls/manager.py ``CallManager.start_child``), started only when the
call needs one: a child's failure ends that call with the reason in its record and "ended"
line (STYLE.md habit 6: never the gateway or another call), and the call's end cancels its
children before the call's media closes. In-memory signalling, virtual time."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import trio

from gateway.core.calls.call import Call as GatewayCall
from gateway.core.calls.manager import CHILD_STOP_TIMEOUT
from gateway.testing.sip_agent import AutoAnswer, Call, simple_sdp
from tests.component.calls.b2bua_env import ALICE_DID, B2bua, eventually, start_b2bua
from tests.component.calls.fuzz_checks import error_records, goes_on
from tests.port_blocks import port_bases

TRUNK_PORT, ALICE_PORT = port_bases(2)  # this process's own ports (tests/port_blocks.py)
DIGIT = b"Signal=7\r\nDuration=100\r\n"


async def call_to_alice(env: B2bua) -> tuple[Call, Call]:
    """The carrier calls alice, who answers without telephone-event (so her INFO digits become
    RFC 4733 events, sent by a child task of the call): (carrier's call, alice's call)."""
    incoming = await env.trunk.invite(
        env.did_uri(ALICE_DID), sdp=simple_sdp("127.0.0.1", TRUNK_PORT)
    )
    leg_b = await env.alice.next_call()
    assert leg_b.incoming is not None
    await env.alice.respond(
        leg_b.incoming, 200, body=simple_sdp("127.0.0.1", ALICE_PORT, formats=("0",))
    )
    assert (await incoming.final()).status == 200
    await env.alice.next_request("ACK")
    return incoming, leg_b


def gateway_call(env: B2bua, call_id: str) -> GatewayCall:
    assert env.gateway.calls is not None
    return next(c for c in env.gateway.calls.calls if c.a.invite.call_id == call_id)


async def test_a_child_that_fails_ends_its_call_only_saying_why(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.INFO)
    env = await start_b2bua(
        nursery, tmp_path, voipgw_seed, alice_auto=AutoAnswer(ring=False, status=None)
    )
    bystander, _ = await call_to_alice(env)
    incoming, leg_b = await call_to_alice(env)
    failing = gateway_call(env, incoming.call_id)

    async def broken(self: GatewayCall, work: Any) -> None:
        await trio.sleep(0.01)  # started, then a bug
        if self is failing:
            raise RuntimeError("a bug")

    monkeypatch.setattr(GatewayCall, "_inject_dtmf", broken)
    exchange = await leg_b.request("INFO", body=DIGIT, content_type="application/dtmf-relay")
    assert (await exchange.final()).status == 200
    bye = await env.trunk.next_request("BYE", timeout=5)
    assert bye.request.call_id == incoming.call_id
    assert (await env.alice.next_request("BYE", timeout=5)).request.call_id == leg_b.call_id
    await eventually(lambda: env.calls == 1)
    store = env.gateway.store
    assert store is not None
    await eventually(lambda: any(r.ended_at for r in store.call_records_recent()))
    ended = [r.end_reason for r in store.call_records_recent() if r.ended_at is not None]
    assert ended == ["internal error: RuntimeError"], ended
    lines = [r.getMessage() for r in caplog.records]
    assert f"call {failing.id} ended: internal error: RuntimeError" in lines, lines
    errors = error_records(caplog)
    assert len(errors) == 1 and "failed" in errors[0], errors
    assert ", in broken" in caplog.text  # with the child's traceback
    await goes_on(env, bystander)


async def test_the_calls_end_cancels_a_child_before_its_media_closes(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = await start_b2bua(
        nursery, tmp_path, voipgw_seed, alice_auto=AutoAnswer(ring=False, status=None)
    )
    incoming, leg_b = await call_to_alice(env)
    call = gateway_call(env, incoming.call_id)
    seen: list[str] = []

    async def forever(self: GatewayCall, work: Any) -> None:
        seen.append("started")
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            assert self.media is not None
            seen.append("cancelled, media closed" if self.media.closed else "cancelled")
            raise

    monkeypatch.setattr(GatewayCall, "_inject_dtmf", forever)
    exchange = await leg_b.request("INFO", body=DIGIT, content_type="application/dtmf-relay")
    assert (await exchange.final()).status == 200
    await eventually(lambda: seen == ["started"])
    assert (await incoming.bye()).status == 200
    await eventually(lambda: env.calls == 0)
    assert seen == ["started", "cancelled"]
    assert call.end_reason == "BYE from A leg"  # the child's cancellation is no failure


async def test_a_second_childs_failure_is_logged_too(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first failure ends the call with its reason; another child's (here raised while the
    call's end cancels it) still gets its ERROR line and traceback, as a nursery's
    ExceptionGroup kept both."""
    env = await start_b2bua(
        nursery, tmp_path, voipgw_seed, alice_auto=AutoAnswer(ring=False, status=None)
    )
    incoming, leg_b = await call_to_alice(env)
    call = gateway_call(env, incoming.call_id)
    started: list[str] = []

    async def raises_when_cancelled() -> None:
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            raise RuntimeError("a bug in the cleanup") from None

    async def raises_at_once() -> None:
        await trio.sleep(0.01)
        raise RuntimeError("a bug")

    async def two_bugs(self: GatewayCall, work: Any) -> None:
        work.injecting = False  # the next INFO starts another child
        started.append("child")
        if len(started) == 1:
            await raises_when_cancelled()
        else:
            await raises_at_once()

    monkeypatch.setattr(GatewayCall, "_inject_dtmf", two_bugs)
    for _ in range(2):
        exchange = await leg_b.request("INFO", body=DIGIT, content_type="application/dtmf-relay")
        assert (await exchange.final()).status == 200
    await eventually(lambda: env.calls == 0)
    assert started == ["child", "child"]
    assert call.end_reason == "internal error: RuntimeError"
    assert ", in raises_at_once" in caplog.text  # the first failure, which ended the call
    assert ", in raises_when_cancelled" in caplog.text, caplog.text  # not lost
    assert len(error_records(caplog)) == 2, error_records(caplog)


async def test_a_child_stuck_in_shielded_work_does_not_keep_its_call(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A child inside a shielded section (none of today's has one: the bound is for a later
    one) when the call ends: the end waits CHILD_STOP_TIMEOUT for it, says so at WARNING
    naming the call and the task, and goes on (media closed, call gone, its place in the
    limits freed); it waited for the child as long as the child took (a minute here). The
    child, cancelled, returns later in the manager's nursery; a failure then is logged."""
    caplog.set_level(logging.INFO)
    env = await start_b2bua(
        nursery, tmp_path, voipgw_seed, alice_auto=AutoAnswer(ring=False, status=None)
    )
    incoming, leg_b = await call_to_alice(env)
    call = gateway_call(env, incoming.call_id)
    seen: list[str] = []

    async def stuck(self: GatewayCall, work: Any) -> None:
        seen.append("started")
        with trio.CancelScope(shield=True):
            await trio.sleep(60)  # the shield keeps the call's end from cancelling this
        seen.append("returned")
        raise RuntimeError("a bug after the shielded work")

    monkeypatch.setattr(GatewayCall, "_inject_dtmf", stuck)
    exchange = await leg_b.request("INFO", body=DIGIT, content_type="application/dtmf-relay")
    assert (await exchange.final()).status == 200
    await eventually(lambda: seen == ["started"])
    ending = trio.current_time()
    assert (await incoming.bye()).status == 200
    await eventually(lambda: env.calls == 0)
    assert trio.current_time() - ending == pytest.approx(CHILD_STOP_TIMEOUT, abs=0.5)
    assert call.media is not None and call.media.closed
    assert call.end_reason == "BYE from A leg"
    (warning,) = [r for r in caplog.records if "child task(s) still running" in r.getMessage()]
    assert warning.levelno == logging.WARNING
    assert warning.getMessage() == (
        f"call {call.id}: 1 child task(s) still running {CHILD_STOP_TIMEOUT:g} s after they "
        f"were cancelled at the call's end ({stuck.__qualname__}): the call ends without them"
    )
    await trio.sleep(60)  # the shielded work ends
    await eventually(lambda: seen == ["started", "returned"])
    assert "a child task left at its end failed" in caplog.text
    assert call.end_reason == "BYE from A leg"
