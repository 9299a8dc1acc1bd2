"""The in-memory shared call-limit store of the call limit tests: moved here from
test_call_limits_shared.py so that no test module imports another."""

from __future__ import annotations

from collections.abc import Sequence

from gateway.core.store.errors import StoreUnavailable
from gateway.core.store.interface import Hold, LimitKey


class FakeShared:
    """A cluster-wide count in a dict, with every call recorded; ``down`` makes it raise."""

    heartbeat_interval = 2.0
    instance = "i-self"
    live_nodes = 1  # what the heartbeats count (this node's alone)

    def __init__(self) -> None:
        self.rows: set[Hold] = set()
        self.others: dict[LimitKey, int] = {}  # holds of other nodes, by key
        self.calls: list[tuple[object, ...]] = []
        self.down = False
        self.changed = False  # what limits_changed() says next
        self.intruder: str | None = None  # another instance beating under this node's name
        # What other_instance() answers, one after the other (then None).
        self.heartbeats_seen: list[tuple[str, object] | None] = []

    def _check(self) -> None:
        if self.down:
            raise StoreUnavailable("PostgreSQL host=db: not connected (reconnecting)")

    def other_instance(self) -> tuple[str, object] | None:
        self.calls.append(("other_instance",))
        return self.heartbeats_seen.pop(0) if self.heartbeats_seen else None

    def limits_changed(self) -> bool:
        changed, self.changed = self.changed, False
        return changed

    def start(self) -> None:
        self.calls.append(("start",))

    def take(self, hold: int, key: LimitKey, limit: int, *, exempt: bool = False) -> bool:
        self.calls.append(("take", hold, key, limit, exempt))
        self._check()
        held = self.others.get(key, 0) + sum(1 for _, k in self.rows if k == key)
        if not exempt and held >= limit:
            return False
        self.rows.add((hold, key))
        return True

    def release(self, holds: Sequence[Hold]) -> None:
        self.calls.append(("release", list(holds)))
        self._check()
        self.rows.difference_update(holds)

    def beat(self, add: Sequence[Hold] = (), remove: Sequence[Hold] = ()) -> str | None:
        self.calls.append(("beat", list(add), list(remove)))
        self._check()
        self.rows.difference_update(remove)
        self.rows.update(add)
        return self.intruder

    def stop(self) -> None:
        self.calls.append(("stop",))
