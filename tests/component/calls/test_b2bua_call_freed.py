"""An ended call is freed by reference counting, not left to the cyclic garbage collector.

A call's objects (its legs, dialogs, requests, SDPs, media session, task and nursery: ~180 per
call) must not form a reference cycle that outlives the call: at hundreds of calls a second,
cyclic garbage survives young collections into the older generations and only a full collection
frees it (docs/benchmarks.md, "Session 29: where a call's CPU goes"). The collector is switched
off while the call runs and ends, so only reference counting can free it.

Each call shape operators run in volume, or that makes objects of its own (a refusal, a CANCEL,
the ring timeout, a digest challenge, a hold and resume, a failover, a blind transfer, SDES-SRTP
on both legs re-keyed and switched to RTP and back, a DTLS-SRTP caller, a recorded call whose
RTP each way went through the relay's taps, an intercepted call, a call recorded by SIPREC, a
call whose child task failed, a call a plugin's hook failed), is run
with every Call, MediaSession and Transfer the gateway makes recorded (a weak reference each);
once the call has ended they must all be dead. A REGISTER (refreshed, then left to expire) and an
OPTIONS make no call. For every shape the collector, run once everything has ended and its
transactions are gone (64*T1), must find no object of the gateway's (nor trio's, which a call's
task and nursery are made of) in a cycle: that covers the transactions, dialogs and messages
the weak references do not name. (pyOpenSSL's own verify helper is a cycle of 13 objects per
DTLS association, its callback's closure holding the helper: the library's, not counted here.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from gateway.core.calls.call import Call
from gateway.core.calls.transfer import Transfer
from gateway.core.hookspecs import hookimpl
from gateway.core.interfaces import Caller, Directory, RouteDecision
from gateway.core.media.session import MediaSession
from gateway.core.sip.message import Request
from gateway.testing.sip_agent import AutoAnswer, simple_sdp
from tests.component.calls.b2bua_env import (
    ALICE_DID,
    B2bua,
    eventually,
    start_b2bua,
)
from tests.component.calls.call_shapes import (
    NO_CALL,
    SHAPES,
    Made,
    cyclic_garbage,
    ended,
    record_made,
    start_shapes_b2bua,
)
from tests.component.calls.intercept_calls import (
    activate,
    answered_with_media,
    intercept_env,
    pki,  # noqa: F401 (the fixture)
)
from tests.component.calls.siprec_calls import (
    hang_up_recorded_call,
    recorded_call_with_media,
    siprec_env,
)
from tests.interop.harness.pki import Issued, TestCa
from tests.port_blocks import port_bases

# Only reference counting frees anything while a test runs (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("no_collector")
TRACKED = (Call, MediaSession, Transfer)
DIGITS_FROM, DIGITS_TO = port_bases(2)  # real ports the relay sends to (tests/port_blocks.py)


@pytest.fixture
def made(monkeypatch: pytest.MonkeyPatch) -> Made:
    """Every Call, MediaSession and Transfer made while the test runs."""
    return record_made(monkeypatch, TRACKED)


async def started() -> None:
    """The gateway's start is over: its transactions (alice's REGISTERs, an ADMF's X1) are
    gone, and no garbage from before (an earlier test's failure) counts."""
    await trio.sleep(40)
    cyclic_garbage()


async def b2bua(nursery: trio.Nursery, tmp_path: Path, seed: int) -> B2bua:
    env = await start_shapes_b2bua(nursery, tmp_path, seed)
    await started()
    return env


@pytest.mark.parametrize("shape", list(SHAPES))
async def test_an_ended_call_is_freed_by_reference_counting(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    made: Made,
    shape: str,
) -> None:
    env = await b2bua(nursery, tmp_path, voipgw_seed)
    await SHAPES[shape](env, nursery, voipgw_seed)
    await ended(env, made)
    transfers = {"Transfer"} if shape == "blind-transfer" else set()
    assert {name for name, _ in made} == {"Call", "MediaSession", *transfers}
    await trio.sleep(40)  # its transactions are gone too (64*T1, RFC 3261 §17)
    assert cyclic_garbage() == []


async def test_a_call_whose_child_failed_is_freed_by_reference_counting(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    made: Made,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A child task's exception ends its call (calls/manager.py, CallChildren): kept once
    logged, its traceback (the child's frames: the children, the call) made the whole call
    cyclic garbage."""
    env = await b2bua(nursery, tmp_path, voipgw_seed)
    env.alice.auto = AutoAnswer(ring=False, status=None)

    async def broken(self: Call, work: Any) -> None:
        await trio.sleep(0.01)
        raise RuntimeError("a bug")

    monkeypatch.setattr(Call, "_inject_dtmf", broken)
    # Alice answers without telephone-event: her INFO digit becomes RFC 4733 events, sent by a
    # child task of the call (test_call_children.py).
    incoming = await env.trunk.invite(
        env.did_uri(ALICE_DID), sdp=simple_sdp("127.0.0.1", DIGITS_FROM)
    )
    leg_b = await env.alice.next_call()
    assert leg_b.incoming is not None
    body = simple_sdp("127.0.0.1", DIGITS_TO, formats=("0",))
    await env.alice.respond(leg_b.incoming, 200, body=body)
    assert (await incoming.final()).status == 200
    digit = b"Signal=7\r\nDuration=100\r\n"
    exchange = await leg_b.request("INFO", body=digit, content_type="application/dtmf-relay")
    assert (await exchange.final()).status == 200
    await ended(env, made)
    assert env.gateway.store is not None
    (record,) = env.gateway.store.call_records_recent()
    assert record.end_reason == "internal error: RuntimeError"  # the child's failure ended it
    await trio.sleep(40)  # its transactions are gone too (64*T1, RFC 3261 §17)
    assert cyclic_garbage() == []


async def test_an_intercepted_call_is_freed_by_reference_counting(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    made: Made,
    pki: tuple[TestCa, Issued, Issued],  # noqa: F811
) -> None:
    """Lawful interception's sink is made at the call's start, not at its answer as a
    recording's, and queues X2 and X3 PDUs to the mediation function's link, which outlives
    the call."""
    env = await intercept_env(nursery, tmp_path, voipgw_seed, pki)
    await env.provision(activate(f"<e164Number>{ALICE_DID[1:]}</e164Number>"))
    await started()
    call, talk = await answered_with_media(env)
    with talk.caller, talk.callee:
        await talk.packets(0)
        assert (await call.bye()).status == 200
    await eventually(lambda: len(env.x3()) == 20)  # the tap had each packet
    await ended(env.b2bua, made)
    await trio.sleep(40)  # its transactions are gone too (64*T1, RFC 3261 §17)
    assert cyclic_garbage() == []


@pytest.mark.parametrize("srs_hangs_up", [False, True], ids=["call-ends", "srs-hangs-up"])
async def test_a_siprec_recorded_call_is_freed_by_reference_counting(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    made: Made,
    srs_hangs_up: bool,
) -> None:
    """A SIPREC recording is a SIP session of the gateway's own to the SRS (RFC 7866), with
    its own streams from the relay. It ends with the call (our BYE), or before it (the SRS's
    BYE, the call going on unrecorded); either way nothing of it or of the call may be left
    in a cycle."""
    env, srs = await siprec_env(nursery, tmp_path, voipgw_seed)
    await started()
    call, recording = await recorded_call_with_media(env, srs)
    await hang_up_recorded_call(env, srs, call, recording, srs_first=srs_hangs_up)
    await ended(env, made)
    await trio.sleep(40)  # its transactions are gone too (64*T1, RFC 3261 §17)
    assert cyclic_garbage() == []


class FailingRouter:
    @hookimpl
    def gateway_route_call(
        self, request: Request, caller: Caller, directory: Directory
    ) -> RouteDecision | None:
        raise RuntimeError("router bug")


async def test_a_call_a_plugins_hook_failed_is_freed_by_reference_counting(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    made: Made,
) -> None:
    """A plugin's exception ends its call (PluginHookError). pluggy keeps the exception in a
    local of its hook call's frame, which the exception's traceback holds: with the call's
    setup among those frames, a buggy plugin made every call it failed cyclic garbage."""
    env = await start_b2bua(
        nursery, tmp_path, voipgw_seed, plugins=[("failing-router", FailingRouter())]
    )
    await started()
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    assert (await call.final()).status == 500
    await ended(env, made)
    await trio.sleep(40)  # its transactions are gone too (64*T1, RFC 3261 §17)
    assert cyclic_garbage() == []


@pytest.mark.parametrize("shape", list(NO_CALL))
async def test_a_request_outside_a_call_leaves_no_cycle(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    shape: str,
) -> None:
    env = await b2bua(nursery, tmp_path, voipgw_seed)
    await NO_CALL[shape](env, nursery, voipgw_seed)
    await trio.sleep(40)  # its transactions are gone (64*T1, RFC 3261 §17)
    assert cyclic_garbage() == []
