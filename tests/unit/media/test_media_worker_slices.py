"""Splitting the media port range between workers, and the ``[media] workers`` setting."""

from __future__ import annotations

import itertools

import pytest

from gateway.core.config import ConfigError, PortRange, from_mapping
from gateway.core.media.errors import LocalMediaError
from gateway.core.media.ports import rtp_ports
from gateway.core.media.remote_relay import (
    MAX_RESTART_DELAY,
    STABLE_RUN,
    next_restart_delay,
    split_ports,
)


@pytest.mark.parametrize(
    ("ports", "workers"),
    [
        ("30000-30999", 2),
        ("30000-30999", 3),
        ("30001-30010", 2),
        ("40000-40007", 2),
        ("10000-60000", 7),
    ],
)
def test_slices_are_disjoint_whole_pairs_covering_the_range(ports: str, workers: int) -> None:
    whole = PortRange.parse(ports)
    slices = split_ports(whole, workers)
    assert len(slices) == workers
    pairs = [list(rtp_ports(part)) for part in slices]
    flat = [port for part in pairs for port in part]
    assert flat == list(rtp_ports(whole))  # every pair once, in order: disjoint and complete
    assert all(whole.low <= part.low and part.high <= whole.high for part in slices)
    assert max(map(len, pairs)) - min(map(len, pairs)) <= 1
    assert all(len(part) >= 2 for part in pairs)
    for left, right in itertools.pairwise(slices):
        assert left.high < right.low  # no port (RTCP included) in two slices


def test_too_few_pairs_for_the_workers() -> None:
    with pytest.raises(LocalMediaError, match="4 pairs: too few for 3 workers"):
        split_ports(PortRange(40000, 40007), 3)


def config(**media: object) -> object:
    return from_mapping({"media": media})


def test_workers_default_to_one() -> None:
    assert from_mapping({}).media.workers == 1


@pytest.mark.parametrize("workers", [0, -1, 65])
def test_workers_out_of_range(workers: int) -> None:
    with pytest.raises(ConfigError, match=r"\[media\] workers.*1 to 64"):
        config(workers=workers)


def test_workers_need_two_pairs_each() -> None:
    with pytest.raises(ConfigError, match="3 workers need at least 6 RTP/RTCP port pairs"):
        config(workers=3, ports="40000-40009")
    assert config(workers=2, ports="40000-40007").media.workers == 2  # type: ignore[attr-defined]


def test_a_worker_that_keeps_dying_young_waits_longer_each_time_up_to_a_cap() -> None:
    delays: list[float] = []
    delay: float | None = None
    for _ in range(10):
        delay = next_restart_delay(delay, ran_for=1.0, first=0.5)
        delays.append(delay)
    assert delays[:4] == [0.5, 1.0, 2.0, 4.0]
    assert delays[-1] == MAX_RESTART_DELAY == max(delays)
    # A worker that ran a healthy while starts over from the first delay.
    assert next_restart_delay(MAX_RESTART_DELAY, ran_for=STABLE_RUN, first=0.5) == 0.5
