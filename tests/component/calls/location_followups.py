"""The location record and trunk configuration of the location follow-up tests: moved here from
test_b2bua_location_followups.py so that no test module imports another."""

from __future__ import annotations

from typing import Any

from gateway.testing.sip_agent import Received
from tests.component.calls.b2bua_env import B2bua


def location_record(env: B2bua) -> Any:
    """The call's location record once the call's end is saved (records go in batches: the
    answered call's may be saved first)."""
    store = env.gateway.store
    assert store is not None
    [record] = store.call_records_recent()
    return record.security.get("location") if record.ended_at is not None else None


def trunk_ignores(env: B2bua, method: str) -> list[Received]:
    """The trunk takes ``method`` in a dialog and never answers it; what it took."""
    taken: list[Received] = []

    async def ignore(received: Received) -> bool:
        if received.request.method != method:
            return False
        taken.append(received)
        return True

    env.trunk.in_dialog = ignore
    return taken
