"""The log says, in the words of ``voipgw calls``, how each leg of an answered call was
protected, once, as the call ends: an operator reading only the log sees a call that went out
or came in unencrypted. A call never answered has no protection to tell.

The set-up is b2bua_env.py's (gateway at 127.0.0.1, trunk "carrier" at 127.0.0.2, alice at
127.0.0.3), in virtual time on the in-memory network; no SRTP plugin is enabled, so both legs
are plain RTP.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio

from gateway.testing.sip_agent import AutoAnswer
from tests.component.calls.b2bua_env import ALICE_DID, answered_call, eventually, start_b2bua


def protection_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if " protection: " in r.getMessage()]


async def test_an_answered_call_logs_how_each_leg_was_protected_before_its_end(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.core.calls")
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    call, _ = await answered_call(env)
    assert env.gateway.calls is not None
    (gateway_call,) = env.gateway.calls.calls
    assert protection_lines(caplog) == []  # only once it ends: DTLS and ZRTP key after answer
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)
    assert protection_lines(caplog) == [
        f"call {gateway_call.id} protection: caller leg: signalling UDP; media RTP, not "
        "encrypted; callee leg: signalling UDP; media RTP, not encrypted"
    ]
    messages = [r.getMessage() for r in caplog.records]
    ended = messages.index(f"call {gateway_call.id} ended: BYE from A leg")
    assert messages.index(protection_lines(caplog)[0]) < ended


async def test_a_call_never_answered_logs_no_protection(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.core.calls")
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=AutoAnswer(status=486))
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    assert (await call.final()).status == 486
    await eventually(lambda: env.calls == 0)
    assert any(" ended: " in r.getMessage() for r in caplog.records)
    assert protection_lines(caplog) == []
