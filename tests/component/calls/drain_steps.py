"""Starting a drain of the gateway in the in-memory call tests: moved here from test_b2bua_drain.py
so that no test module imports another."""

from __future__ import annotations

import trio

from tests.component.calls.b2bua_env import (
    B2bua,
    eventually,
)


async def start_drain(nursery: trio.Nursery, env: B2bua, timeout: float) -> trio.Event:
    """Start the drain as SIGTERM would; the event fires when it returns."""
    drained = trio.Event()

    async def drain() -> None:
        await env.gateway.drain(timeout)
        drained.set()

    nursery.start_soon(drain)
    await eventually(lambda: env.gateway.draining)
    return drained
