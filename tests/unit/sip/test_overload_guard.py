"""Overload control's rule: a new request that waited longer than the limit is refused; one with
credentials (the second half of a challenged set-up) only past the longer credentials limit."""

from __future__ import annotations

import pytest

from gateway.core.sip.overload import QueueDelayLimit


def test_waits_up_to_the_limit_are_served_longer_ones_refused() -> None:
    limit = QueueDelayLimit(0.3, credentials_limit=0.5)
    assert not limit.too_late(0.0, credentials=False)
    assert not limit.too_late(0.29, credentials=False)
    assert not limit.too_late(0.3, credentials=False)
    assert limit.too_late(0.31, credentials=False)
    assert limit.too_late(2.0, credentials=False)
    # Each request on its own: a late one does not make the next refused.
    assert not limit.too_late(0.05, credentials=False)


def test_requests_with_credentials_get_until_the_credentials_limit() -> None:
    limit = QueueDelayLimit(0.3, credentials_limit=0.5)
    assert not limit.too_late(0.31, credentials=True)
    assert not limit.too_late(0.5, credentials=True)
    assert limit.too_late(0.51, credentials=True)


def test_the_longest_wait_is_kept_refused_or_not() -> None:
    limit = QueueDelayLimit(0.3, credentials_limit=0.5)
    for waited in (0.01, 0.2, 0.12):
        limit.too_late(waited, credentials=False)
    assert limit.longest_wait == 0.2
    limit.too_late(0.7, credentials=True)
    limit.too_late(0.1, credentials=False)
    assert limit.longest_wait == 0.7


def test_limit_zero_never_refuses_but_still_measures() -> None:
    limit = QueueDelayLimit(0.0, credentials_limit=0.5)
    assert not limit.too_late(3.0, credentials=False)
    assert not limit.too_late(3.0, credentials=True)
    assert limit.longest_wait == 3.0


@pytest.mark.parametrize(("limit", "credentials_limit"), [(-0.1, 0.5), (0.3, 0.2)])
def test_nonsense_limits_are_refused(limit: float, credentials_limit: float) -> None:
    with pytest.raises(ValueError, match="limit"):
        QueueDelayLimit(limit, credentials_limit=credentials_limit)
