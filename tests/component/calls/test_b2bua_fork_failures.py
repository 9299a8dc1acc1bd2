"""The caller's answer when every fork failed (targets.best_failure, RFC 3261 §16.7 step 6): two
phones of alice's rung at once, each answering a failure, in either order. Signalling on the
in-memory network, virtual time."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from tests.component.calls.b2bua_env import ALICE_DID, eventually, start_b2bua
from tests.component.calls.b2bua_scenarios import second_phone


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        (408, 488, 488),  # a timeout says less than the other phone's refusal of the offer
        (488, 408, 488),
        (486, 488, 486),  # busy is what a caller shows
        (488, 603, 603),  # a 6xx is the user's word everywhere
        (484, 486, 484),  # the number is incomplete: the caller may dial more
    ],
)
async def test_the_caller_gets_the_most_useful_failure_of_two_forks(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    first: int,
    second: int,
    expected: int,
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=None)
    phone2 = await second_phone(env, nursery, voipgw_seed)
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    leg1 = await env.alice.next_call(timeout=1)
    leg2 = await phone2.next_call(timeout=1)
    await leg1.ring()
    await leg2.ring()
    await leg1.answer(first)
    await trio.sleep(1)
    await leg2.answer(second)
    final = await call.final(timeout=5)
    assert final.status == expected
    await eventually(lambda: env.calls == 0)
