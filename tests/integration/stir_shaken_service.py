"""The stir_shaken service running as the gateway runs it, for the integration tests that verify
without a gateway (test_stir_shaken_crl.py, test_stir_shaken_rotation.py)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import trio

from gateway.plugins.stir_shaken import StirShaken


@contextlib.asynccontextmanager
async def running(service: StirShaken) -> AsyncIterator[StirShaken]:
    """``service`` with its task started (``StirShaken.run``: the gateway starts it at its
    start), whose nursery its certificate and CRL fetches run in, until the block ends."""
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        yield service
        nursery.cancel_scope.cancel()
