"""``voipgw run``'s open-files limit (gateway/core/open_files.py): the soft limit raised to the
hard one where the kernel takes it, and what the busiest process needs by ``[media]``."""

from __future__ import annotations

import resource
from collections.abc import Callable

import pytest

from gateway.core.config import GatewayConfig, from_mapping
from gateway.core.open_files import SPARE, descriptors_needed, raise_to_hard_limit

INFINITY = resource.RLIM_INFINITY


Limits = tuple[int, int]


def limits(
    soft: int, hard: int, *, refuse: bool = False
) -> tuple[Callable[[int], Limits], Callable[[int, Limits], None], list[Limits]]:
    """A getrlimit and a setrlimit over one process's (soft, hard), and what was set."""
    set_to: list[tuple[int, int]] = []

    def get(which: int) -> tuple[int, int]:
        assert which == resource.RLIMIT_NOFILE
        return soft, hard

    def set_(which: int, value: tuple[int, int]) -> None:
        assert which == resource.RLIMIT_NOFILE
        if refuse:
            raise ValueError("not allowed to raise maximum limit")
        set_to.append(value)

    return get, set_, set_to


@pytest.mark.parametrize(
    ("soft", "hard", "after", "set_to"),
    [
        (1024, 524288, 524288, [(524288, 524288)]),  # systemd's DefaultLimitNOFILE
        (20000, 20000, 20000, []),  # already there
        (1024, INFINITY, 1024, []),  # fs.nr_open caps it: not a value to ask for
        (INFINITY, INFINITY, INFINITY, []),
    ],
)
def test_the_soft_limit_goes_to_the_hard_one_where_there_is_one(
    soft: int, hard: int, after: int, set_to: list[tuple[int, int]]
) -> None:
    get, set_, made = limits(soft, hard)
    assert raise_to_hard_limit(get, set_) == (soft, after)
    assert made == set_to


def test_a_refused_raise_leaves_the_limit_as_it_was() -> None:
    get, set_, made = limits(1024, 4096, refuse=True)
    assert raise_to_hard_limit(get, set_) == (1024, 1024)
    assert made == []


def test_the_busiest_process_needs_its_share_of_the_media_ports_and_a_spare() -> None:
    def config(workers: int) -> GatewayConfig:
        return from_mapping({"media": {"ports": "30000-39999", "workers": workers}})

    assert descriptors_needed(config(1)) == 10000 + SPARE
    assert descriptors_needed(config(3)) == 3334 + SPARE
