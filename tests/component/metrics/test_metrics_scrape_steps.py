"""A scrape's walk over the live calls' media counters in steps
(``StatusView.media_in_steps``): other tasks run between two chunks of calls, and calls that
end or start meanwhile are counted once, never going backwards (docs/metrics.md)."""

from __future__ import annotations

import types
from typing import Any

import pytest
import trio

from gateway.core import status as status_module
from gateway.core.status import CallStatistics, StatusView


class FakeMedia:
    """What the walk reads of a call's media session."""

    def __init__(self, packets: int) -> None:
        self.packets = packets
        self.quality = None

    def statistics(self) -> dict[str, int]:
        return {
            "streams": 1,
            "a_to_b_packets": self.packets,
            "b_to_a_packets": 0,
            "a_to_b_bytes": self.packets * 100,
            "b_to_a_bytes": 0,
            "a_to_b_dropped": 0,
            "b_to_a_dropped": 0,
        }


class FakeCall:
    def __init__(self, packets: int) -> None:
        self.media = FakeMedia(packets)
        self.keying = None


async def test_the_walk_checkpoints_and_counts_calls_ending_meanwhile_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(status_module, "MEDIA_WALK_CHUNK", 2)
    statistics = CallStatistics()
    manager = types.SimpleNamespace(calls=set())
    view = StatusView(types.SimpleNamespace(calls=manager), statistics)  # type: ignore[arg-type]
    calls = [FakeCall(10 * (index + 1)) for index in range(5)]
    for call in calls:
        manager.calls.add(call)
        statistics.event(call, "started", None, 0.0)  # type: ignore[arg-type]
    order = list(manager.calls)  # the walk's order: chunks [0, 1], [2, 3], [4]
    visited_first, not_yet_visited = order[0], order[-1]
    before = view.media()
    assert before.packets == 150 and before.streams == 5

    ended_during_walk = False

    async def meanwhile() -> None:
        """At the walk's first checkpoint: two calls end, one starts."""
        nonlocal ended_during_walk
        for call in (visited_first, not_yet_visited):
            call.media.packets += 1000  # their last packets, then the end
            statistics.event(call, "ended", "normal clearing", 1.0)  # type: ignore[arg-type]
            manager.calls.discard(call)
        started = FakeCall(5)
        manager.calls.add(started)
        statistics.event(started, "started", None, 1.0)  # type: ignore[arg-type]
        ended_during_walk = True

    async with trio.open_nursery() as nursery:
        nursery.start_soon(meanwhile)
        counts = await view.media_in_steps()
        assert ended_during_walk  # it ran between two chunks: the walk checkpointed

    ended = visited_first.media.packets + not_yet_visited.media.packets  # final counters
    live_visited = sum(call.media.packets for call in order[1:-1])
    # The ended ones once each (their final counters), the live ones as visited, the new one
    # not yet: nothing twice, nothing gone back.
    assert counts.packets == ended + live_visited
    assert counts.bytes == counts.packets * 100
    assert counts.streams == 3
    assert before.packets <= counts.packets <= view.media().packets
    assert view.media().packets == counts.packets + 5  # the new call, from the next scrape on


async def test_few_calls_are_walked_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    statistics = CallStatistics()
    manager = types.SimpleNamespace(calls={FakeCall(7), FakeCall(8)})
    view = StatusView(types.SimpleNamespace(calls=manager), statistics)  # type: ignore[arg-type]
    checkpoints: list[Any] = []
    real = trio.lowlevel.checkpoint

    async def counted() -> None:
        checkpoints.append(None)
        await real()

    monkeypatch.setattr(trio.lowlevel, "checkpoint", counted)
    counts = await view.media_in_steps()
    assert counts.packets == 15 and counts.streams == 2
    assert checkpoints == []
