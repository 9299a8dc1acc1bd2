"""A call that fails on a bug while handling an in-dialog request (STYLE.md habit 6: the call
ends, nothing else does): the request gets 500 at once (RFC 3261 §21.5.1) instead of nothing,
which would keep its sender retransmitting until its Timer B or F (64*T1); both legs get BYE,
the failure is logged once, and another call goes on."""

from __future__ import annotations

import errno
import logging
from pathlib import Path
from typing import Any

import pytest
import trio

from gateway.core.calls.call import Call
from gateway.core.sip.serializer import serialize_message
from gateway.testing.sip_agent import SDP
from tests.component.calls.b2bua_env import (
    ALICE,
    GW,
    TRUNK,
    answered_call,
    eventually,
)
from tests.component.calls.fuzz_checks import (
    DTMF_RELAY,
    WINDOW,
    _byes_to,
    _responses_to,
    error_records,
    goes_on,
    settled_b2bua,
    tables_back,
)


@pytest.mark.parametrize(
    ("method", "handler"),
    [("INFO", "_relay_request"), ("INVITE", "_reinvite"), ("UPDATE", "_update")],
)
async def test_a_request_in_hand_when_the_call_fails_gets_500_and_both_legs_bye(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    method: str,
    handler: str,
) -> None:
    caplog.set_level(logging.INFO)
    env, before = await settled_b2bua(nursery, tmp_path, voipgw_seed)
    bystander, _ = await answered_call(env)
    call, leg_b = await answered_call(env)
    real = getattr(Call, handler)

    async def broken(self: Call, event: Any) -> None:
        if event.request.call_id == call.call_id:
            raise RuntimeError("a bug")
        await real(self, event)

    monkeypatch.setattr(Call, handler, broken)
    assert call.dialog is not None
    body, content_type = (
        (DTMF_RELAY, "application/dtmf-relay") if method == "INFO" else (env.trunk.offer_sdp(), SDP)
    )
    request = call.dialog.create_request(
        method,
        via=env.trunk.new_via(),
        contact=env.trunk.contact if method != "INFO" else None,
        body=body,
        content_type=content_type,
    )
    start = len(env.network.capture)
    await env.trunk.socket.sendto(serialize_message(request), GW)  # once: no retransmission
    await trio.sleep(WINDOW)
    answers = _responses_to(env, TRUNK, start)
    assert [a[:11] for a in answers if a[8:11] != b"100"] == [b"SIP/2.0 500"]
    assert _byes_to(env, TRUNK, call.call_id, start) >= 1
    assert _byes_to(env, ALICE, leg_b.call_id, start) >= 1
    errors = error_records(caplog)
    assert len(errors) == 1 and "failed" in errors[0], errors
    monkeypatch.setattr(Call, handler, real)
    await goes_on(env, bystander)
    await tables_back(env, before)


async def test_a_request_in_hand_when_forwarding_it_fails_on_the_network_gets_503(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An OSError while forwarding A's INFO to B (B's TCP or TLS connection gone, no listener
    left for its transport) ends the call as a network error: the INFO gets 503 at once, as a
    transport failure is reported to a client (RFC 3261 §8.1.3.1), not nothing until the
    trunk's Timer F; the call's record says why, and another call goes on."""
    caplog.set_level(logging.INFO)
    env, before = await settled_b2bua(nursery, tmp_path, voipgw_seed)
    bystander, _ = await answered_call(env)
    call, leg_b = await answered_call(env)
    real = Call._send_in_dialog

    async def unreachable(self: Call, leg: Any, method: str, **kwargs: Any) -> Any:
        if method == "INFO" and self.a.dialog is not None and self.a.dialog.call_id == call.call_id:
            # As a transport would: an errno, and a text of its own (which may hold anything).
            raise ConnectionResetError(errno.ECONNRESET, "connection to alice closed")
        return await real(self, leg, method, **kwargs)

    monkeypatch.setattr(Call, "_send_in_dialog", unreachable)
    assert call.dialog is not None
    request = call.dialog.create_request(
        "INFO", via=env.trunk.new_via(), body=DTMF_RELAY, content_type="application/dtmf-relay"
    )
    start = len(env.network.capture)
    await env.trunk.socket.sendto(serialize_message(request), GW)  # once: no retransmission
    await trio.sleep(WINDOW)
    answers = _responses_to(env, TRUNK, start)
    assert [a[:11] for a in answers if a[8:11] != b"100"] == [b"SIP/2.0 503"]
    assert _byes_to(env, TRUNK, call.call_id, start) >= 1
    assert _byes_to(env, ALICE, leg_b.call_id, start) >= 1
    store = env.gateway.store
    assert store is not None
    reasons = [r.end_reason for r in store.call_records_recent() if r.ended_at is not None]
    assert reasons == ["network error: ECONNRESET (Connection reset by peer)"], reasons
    # The warning with the traceback says so too: what the system says of the errno, never
    # the transport's own text (transports are plugins; docs/architecture.md "Logged
    # exceptions", gateway.core.logs.transport_error_text).
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert next(w for w in warned if "network error" in w).endswith(
        ": network error: ECONNRESET (Connection reset by peer)"
    ), warned
    assert "alice closed" not in caplog.text
    assert error_records(caplog) == []
    monkeypatch.setattr(Call, "_send_in_dialog", real)
    await goes_on(env, bystander)
    await tables_back(env, before)


async def test_a_call_failing_while_it_ends_itself_ends_no_other_call(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A failure that escapes Call.run (here: its abort cannot send, after a network error in
    hand) ends that call only: the manager's nursery, and every other call in it, goes on."""
    caplog.set_level(logging.INFO)
    env, _ = await settled_b2bua(nursery, tmp_path, voipgw_seed)
    bystander, _ = await answered_call(env)
    call, _ = await answered_call(env)
    real_send, real_abort = Call._send_in_dialog, Call._abort

    async def unreachable(self: Call, leg: Any, method: str, **kwargs: Any) -> Any:
        if method == "INFO" and self.a.dialog is not None and self.a.dialog.call_id == call.call_id:
            raise OSError("connection to alice closed")
        return await real_send(self, leg, method, **kwargs)

    async def abort_fails(self: Call, status: int, reason: str) -> None:
        if self.a.dialog is not None and self.a.dialog.call_id == call.call_id:
            raise OSError("no udp listener")
        await real_abort(self, status, reason)

    monkeypatch.setattr(Call, "_send_in_dialog", unreachable)
    monkeypatch.setattr(Call, "_abort", abort_fails)
    assert call.dialog is not None
    request = call.dialog.create_request(
        "INFO", via=env.trunk.new_via(), body=DTMF_RELAY, content_type="application/dtmf-relay"
    )
    await env.trunk.socket.sendto(serialize_message(request), GW)
    await eventually(lambda: env.calls == 1)  # that call is gone, its record written
    assert any("failed while ending" in r.getMessage() for r in caplog.records)
    await goes_on(env, bystander)  # and the gateway:
    another, _ = await answered_call(env)
    assert (await another.bye()).status == 200
