"""A failure of ours while applying the SDP of a callee's 2xx (a key exchange's or the media
relay's bug, not bad SDP from the peer) ends that call cleanly and says why: the 2xx is ACKed
once all the same (RFC 3261 §13.2.2.4), then BYEd with a Reason (RFC 3326); the caller gets 500
with a Warning, or its re-INVITE does and the call ends with BYE. Other calls go on. Signalling
on the in-memory network, virtual time (T1 = 0.5 s: 64*T1 = 32 s)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from gateway.core.media.security import LegSecurity
from gateway.testing.network import CapturedDatagram
from tests.component.calls.b2bua_env import (
    ALICE,
    ALICE_DID,
    GW,
    B2bua,
    answered_call,
    eventually,
    start_b2bua,
)

SECRET = "c2VjcmV0LWtleS1tYXRlcmlhbA"  # stands for key material in the exception's text
LIMIT = 32.0  # 64 * T1: a 2xx not ACKed is re-sent until then (§13.3.1.4)


def fail_next_take_answer(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """Make the next LegSecurity.take_answer (of whichever call comes first) raise
    RuntimeError once it is armed; every other call of it works as before."""
    armed: list[bool] = []
    real = LegSecurity.take_answer

    def take_answer(self: LegSecurity, *args: Any, **kwargs: Any) -> Any:
        if armed:
            armed.clear()
            raise RuntimeError(f"a bug holding {SECRET}")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(LegSecurity, "take_answer", take_answer)
    return lambda: armed.append(True)


def invite_2xx_and_acks(env: B2bua, call_id: str) -> tuple[list[bytes], list[bytes]]:
    """alice's 2xx to INVITEs of dialog ``call_id`` (retransmissions included) and the
    gateway's ACKs to her, as sent."""

    def of_call(datagram: CapturedDatagram) -> bool:
        return f"Call-ID: {call_id}\r\n".encode() in datagram.data

    capture = [d for d in env.network.capture if of_call(d)]
    oks = [
        d.data
        for d in capture
        if d.src == ALICE and d.dst == GW and d.data.startswith(b"SIP/2.0 200")
        if b" INVITE\r\n" in d.data
    ]
    acks = [d.data for d in capture if d.src == GW and d.dst == ALICE and d.data.startswith(b"ACK")]
    return oks, acks


def assert_logged_once_and_nothing_secret(caplog: pytest.LogCaptureFixture, reason: str) -> None:
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is not None  # one ERROR, with its traceback
    assert reason in errors[0].getMessage()
    ended = [r.getMessage() for r in caplog.records if " ended: " in r.getMessage()]
    assert any(reason in message for message in ended)
    # The exception's text is only in the traceback of that one record: in no other line.
    assert all(SECRET not in r.getMessage() for r in caplog.records)


async def test_a_failure_applying_the_callees_answer_acks_it_byes_it_and_answers_500(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="gateway")
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    other, _ = await answered_call(env)  # a call in progress, not to be disturbed
    arm = fail_next_take_answer(monkeypatch)
    arm()

    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    final = await call.final()
    assert (final.status, final.reason) == (500, "Server Internal Error")
    warning = final.headers.get("Warning") or ""
    assert "internal error applying the answer" in warning and SECRET not in warning
    leg_b = await env.alice.next_call()
    bye = (await env.alice.next_request("BYE", timeout=5)).request
    reason = bye.headers.get("Reason") or ""
    assert "cause=500" in reason and "internal error applying the answer" in reason
    assert SECRET not in reason

    await trio.sleep(LIMIT + 2)  # a 2xx not ACKed would have been re-sent meanwhile
    oks, acks = invite_2xx_and_acks(env, leg_b.call_id)
    assert len(oks) == 1 and len(acks) == 1  # ACKed once, at once: never re-sent
    assert env.alice.never_acked == []
    assert all(SECRET.encode() not in d.data for d in env.network.capture)
    assert_logged_once_and_nothing_secret(caplog, "internal error applying the answer")

    assert env.calls == 1  # the other call is still up and still works
    assert (await other.bye()).status == 200
    await eventually(lambda: env.calls == 0)
    after, _ = await answered_call(env)  # and the gateway takes new ones
    assert (await after.bye()).status == 200


async def test_a_failure_applying_a_reinvites_answer_acks_it_answers_500_and_ends_the_call(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="gateway")
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    other, _ = await answered_call(env)
    call, leg_b = await answered_call(env)
    arm = fail_next_take_answer(monkeypatch)
    arm()

    hold = await call.reinvite(env.trunk.offer_sdp(direction="sendonly"))
    assert (hold.status, hold.reason) == (500, "Server Internal Error")
    warning = hold.headers.get("Warning") or ""
    assert "internal error applying the answer to re-INVITE" in warning
    for agent in (env.alice, env.trunk):
        bye = (await agent.next_request("BYE", timeout=5)).request
        assert bye.call_id in (call.call_id, leg_b.call_id)
        reason = bye.headers.get("Reason") or ""
        assert "cause=500" in reason and "internal error applying the answer" in reason

    await trio.sleep(LIMIT + 2)
    oks, acks = invite_2xx_and_acks(env, leg_b.call_id)
    assert len(oks) == 2 and len(acks) == 2  # the INVITE's and the re-INVITE's, once each
    assert env.alice.never_acked == []
    assert all(SECRET.encode() not in d.data for d in env.network.capture)
    assert_logged_once_and_nothing_secret(caplog, "internal error applying the answer")

    assert env.calls == 1
    assert (await other.bye()).status == 200
    await eventually(lambda: env.calls == 0)
