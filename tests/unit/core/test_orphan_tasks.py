"""SipEndpoint._off_task: the ACKs and BYEs of sessions nobody holds run beside the endpoint's
task (they may connect first), at most MAX_ORPHAN_TASKS at once; past that they are dropped
with a WARNING at most once per ORPHAN_DROP_LOG_INTERVAL, so that a flood of forged 2xx spawns
no more tasks. A bug in one is counted and logged, and frees its place."""

from __future__ import annotations

import logging
import math

import pytest
import trio
import trio.testing

from gateway.core.endpoint import MAX_ORPHAN_TASKS, EndpointStatistics, SipEndpoint


def endpoint(nursery: trio.Nursery) -> SipEndpoint:
    """A SipEndpoint with only what _off_task reads (no gateway: not needed here)."""
    ep = SipEndpoint.__new__(SipEndpoint)
    ep.statistics = EndpointStatistics()
    ep._orphan_nursery = nursery
    ep._orphan_tasks = 0
    ep._orphan_drop_logged_at = -math.inf
    ep._orphans_dropped_since_log = 0
    return ep


async def test_work_past_the_bound_is_dropped_with_one_warning(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    ep = endpoint(nursery)
    release = trio.Event()
    running: list[int] = []

    async def connecting() -> None:
        running.append(1)
        await release.wait()

    with caplog.at_level(logging.INFO, logger="gateway.core.endpoint"):
        for _ in range(MAX_ORPHAN_TASKS + 5):
            await ep._off_task(connecting)  # returns at once: the work runs in its own task
        await trio.testing.wait_all_tasks_blocked()
    assert len(running) == MAX_ORPHAN_TASKS
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"1 ACK or BYE of a session nobody holds dropped: {MAX_ORPHAN_TASKS} already under way"
    ]
    release.set()
    await trio.testing.wait_all_tasks_blocked()
    assert ep._orphan_tasks == 0
    await ep._off_task(connecting)
    await trio.testing.wait_all_tasks_blocked()
    assert len(running) == MAX_ORPHAN_TASKS + 1  # room again


async def test_a_bug_in_one_is_counted_and_frees_its_place(nursery: trio.Nursery) -> None:
    ep = endpoint(nursery)

    async def bug() -> None:
        raise RuntimeError("a bug")

    await ep._off_task(bug)
    await trio.testing.wait_all_tasks_blocked()
    assert ep.statistics.internal_errors == 1
    assert ep._orphan_tasks == 0
