"""Overload control's rule: a new request that waited longer than the limit is refused."""

from __future__ import annotations

import pytest

from gateway.core.sip.overload import QueueDelayLimit


def test_waits_up_to_the_limit_are_served_longer_ones_refused() -> None:
    limit = QueueDelayLimit(0.3)
    assert not limit.too_late(0.0)
    assert not limit.too_late(0.29)
    assert not limit.too_late(0.3)
    assert limit.too_late(0.31)
    assert limit.too_late(2.0)
    # Each request on its own: a late one does not make the next refused.
    assert not limit.too_late(0.05)


def test_the_longest_wait_is_kept_refused_or_not() -> None:
    limit = QueueDelayLimit(0.3)
    for waited in (0.01, 0.2, 0.12):
        limit.too_late(waited)
    assert limit.longest_wait == 0.2
    limit.too_late(0.7)
    limit.too_late(0.1)
    assert limit.longest_wait == 0.7


def test_limit_zero_never_refuses_but_still_measures() -> None:
    limit = QueueDelayLimit(0.0)
    assert not limit.too_late(3.0)
    assert limit.longest_wait == 3.0


def test_a_negative_limit_is_refused() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        QueueDelayLimit(-0.1)
