"""An ended call is freed by reference counting, not left to the cyclic garbage collector.

A call's objects (its legs, dialogs, requests, SDPs, media session, task and nursery: ~180 per
call) must not form a reference cycle that outlives the call: at hundreds of calls a second,
cyclic garbage survives young collections into the older generations and only a full collection
frees it (docs/benchmarks.md, "Session 29: where a call's CPU goes"). The collector is switched
off while the call runs and ends, so only reference counting can free it.
"""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import trio

from tests.component.calls.b2bua_env import answered_call, eventually, start_b2bua


async def test_an_ended_call_is_freed_by_reference_counting(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    assert env.gateway.calls is not None
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        call, _leg_b = await answered_call(env)
        (gateway_call,) = env.gateway.calls.calls
        ref = weakref.ref(gateway_call)
        media_ref = weakref.ref(gateway_call.media) if gateway_call.media is not None else None
        del gateway_call
        assert (await call.bye()).status == 200
        await eventually(lambda: env.calls == 0)
        await trio.sleep(1)  # the call's task has returned and its nursery closed
        assert media_ref is not None and media_ref() is None
        assert ref() is None
    finally:
        if enabled:
            gc.enable()
