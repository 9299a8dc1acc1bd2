"""Requests that cross the end of a call (RFC 3261 §12.2.2, §15): whatever the call took and
can no longer answer gets 481 at once: a re-INVITE or INFO that crossed the other side's BYE, and
a re-INVITE still waiting for the leg that hung up; and a request beyond a flooded call's event
queue gets 503. Without it an INVITE server transaction keeps
its requester waiting for ever (no timer runs once 100 Trying went out) and a non-INVITE request
times out. Signalling on the in-memory network, virtual time."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from gateway.core.calls import base as call_base
from gateway.testing.sip_agent import SDP, Received
from tests.component.calls.b2bua_env import answered_call, eventually, start_b2bua

PROMPTLY = 2.0  # seconds: far below Timer F (32 s), the fallback of a request left unanswered


async def test_a_reinvite_crossing_the_callees_bye_gets_481(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    call, leg_b = await answered_call(env)
    started = trio.current_time()
    async with trio.open_nursery() as both:
        both.start_soon(leg_b.bye)
        reinvite = await call.request("INVITE", body=env.trunk.offer_sdp(), content_type=SDP)
    final = await reinvite.final(timeout=PROMPTLY)
    assert final.status == 481
    assert trio.current_time() - started < PROMPTLY
    await eventually(lambda: env.calls == 0)


async def test_an_info_crossing_the_callees_bye_gets_481(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    call, leg_b = await answered_call(env)
    async with trio.open_nursery() as both:
        both.start_soon(leg_b.bye)
        info = await call.request(
            "INFO", body=b"Signal=1\r\n", content_type="application/dtmf-relay"
        )
    assert (await info.final(timeout=PROMPTLY)).status == 481
    await eventually(lambda: env.calls == 0)


async def test_a_pending_reinvite_gets_481_when_its_leg_hangs_up(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    call, leg_b = await answered_call(env)
    held: list[Received] = []

    async def hold_on_to_it(received: Received) -> bool:
        if received.request.method != "INVITE":
            return False
        held.append(received)  # never answered: alice hangs up instead
        return True

    env.alice.in_dialog = hold_on_to_it
    reinvite = await call.request("INVITE", body=env.trunk.offer_sdp(), content_type=SDP)
    await eventually(lambda: bool(held))
    assert (await leg_b.bye()).status == 200
    final = await reinvite.final(timeout=PROMPTLY)
    assert final.status == 481
    await eventually(lambda: env.calls == 0)


async def test_requests_beyond_a_full_event_queue_get_503(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A queue of one event: a burst of INFOs overflows it. Each must still get a final response
    # (dropped, a request whose transaction has sent 100 is never retransmitted).
    monkeypatch.setattr(call_base, "EVENT_QUEUE", 1)
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    call, _ = await answered_call(env)
    burst = [
        await call.request("INFO", body=b"Signal=1\r\n", content_type="application/dtmf-relay")
        for _ in range(20)
    ]
    finals = [(await info.final(timeout=PROMPTLY)).status for info in burst]
    assert set(finals) <= {200, 503}
    assert 503 in finals and 200 in finals
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)


async def test_a_leg_that_cannot_be_reached_ends_the_call_with_that_reason(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """The ACK for a relayed re-INVITE's 2xx cannot be sent (its TCP or TLS connection is gone
    and a new one is refused): the requester gets 503, the call ends as "signalling failed" with
    BYE, and the gateway goes on. The re-INVITE used to stay unanswered and the call to end as
    an internal error (an OSError out of the call)."""
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    call, _ = await answered_call(env)
    endpoint = env.gateway.endpoint
    assert endpoint is not None
    real_flow_to = endpoint.flow_to
    calls_to_alice = 0

    async def refusing_flow_to(transport, address, flow=None):  # type: ignore[no-untyped-def]
        nonlocal calls_to_alice
        if tuple(address) == tuple(env.alice.address):
            calls_to_alice += 1
            raise ConnectionRefusedError(111, "Connection refused")
        return await real_flow_to(transport, address, flow)

    endpoint.flow_to = refusing_flow_to  # type: ignore[method-assign]
    reinvite = await call.request(
        "INVITE", body=env.trunk.offer_sdp(direction="sendonly"), content_type="application/sdp"
    )
    # The re-INVITE to alice cannot go either: the requester gets 503 and the call goes on.
    assert (await reinvite.final()).status == 503
    assert env.calls == 1
    endpoint.flow_to = real_flow_to  # type: ignore[method-assign]
    # Now the relayed re-INVITE goes out, and only the ACK of its 2xx fails.
    sent_reinvite = False

    async def refuse_after_reinvite(transport, address, flow=None):  # type: ignore[no-untyped-def]
        if sent_reinvite and tuple(address) == tuple(env.alice.address):
            raise ConnectionRefusedError(111, "Connection refused")
        return await real_flow_to(transport, address, flow)

    async def answer_then_refuse(received: object) -> bool:
        nonlocal sent_reinvite
        request = received.request  # type: ignore[attr-defined]
        if request.method != "INVITE":
            return False
        sent_reinvite = True
        body = env.alice.answer_sdp(request.body)
        await env.alice.respond(received, 200, body=body)  # type: ignore[arg-type]
        return True

    env.alice.in_dialog = answer_then_refuse
    endpoint.flow_to = refuse_after_reinvite  # type: ignore[method-assign]
    exchange = await call.request(
        "INVITE", body=env.trunk.offer_sdp(direction="sendonly"), content_type="application/sdp"
    )
    # alice took the offer but cannot be ACKed: the requester gets 503, and both legs BYE.
    assert (await exchange.final()).status == 503
    bye = await env.trunk.next_request("BYE")
    # What the system says of the errno, not the transport's text (transport_error_text).
    assert "signalling failed: ECONNREFUSED (Connection refused)" in (
        bye.request.headers.get("Reason") or ""
    )
    await eventually(lambda: env.calls == 0)
    store = env.gateway.store
    assert store is not None
    await eventually(lambda: [r.ended_at for r in store.call_records_recent()] != [None])
    [record] = store.call_records_recent()
    assert record.end_reason is not None
    assert record.end_reason.startswith("signalling failed")
