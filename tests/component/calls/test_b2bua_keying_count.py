"""How often a plain call keys its relay streams (docs/benchmarks.md, "Session 41 (keying)").

``CallKeying.apply`` derives every stream's keys and block flags from the legs' security and
sets them on the relay. A call keys its streams when the caller's offer made them (blocked: no
B leg yet) and when the callee's answer came; before session 41 a 2xx with SDP was keyed a
second time right after its answer had been, with nothing changed in between, the same
transforms and flags set again. The stream's state when the ACK goes to the callee, after the
one application, is checked by test_b2bua_first_packets.py; the SRTP and DTLS-SRTP calls by
their own tests.

Set-up as b2bua_env.py: trunk "carrier" at 127.0.0.2 calls alice's DID; alice answers.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from gateway.core.media.keying import CallKeying
from gateway.core.media.security import LegSecurity
from tests.component.calls.b2bua_env import answered_call, eventually, start_b2bua


async def test_a_plain_call_is_keyed_once_per_offer_and_once_per_answer(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    applied: list[tuple[bool, bool]] = []  # per application: (A's security, B's) given
    apply = CallKeying.apply

    def counted(self: CallKeying, a: LegSecurity | None, b: LegSecurity | None) -> None:
        applied.append((a is not None, b is not None))
        apply(self, a, b)

    monkeypatch.setattr(CallKeying, "apply", counted)
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    for _ in range(2):
        applied.clear()
        call, _leg_b = await answered_call(env)
        await call.bye()
        await eventually(lambda: env.calls == 0)
        # The caller's offer (no B leg yet: blocked), then the callee's answer in its 200.
        assert applied == [(True, False), (True, True)]
