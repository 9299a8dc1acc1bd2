"""The per-source failure counter that turns repeated bad attempts into 403."""

from __future__ import annotations

import pytest

from gateway.core.auth.failures import FailureCounter, FailurePolicy


def test_blocks_after_n_failures_in_the_window() -> None:
    counter = FailureCounter(FailurePolicy(max_failures=3, window=60.0))
    assert counter.record_failure("192.0.2.7", now=0.0) is False
    assert counter.record_failure("192.0.2.7", now=10.0) is False
    assert counter.is_blocked("192.0.2.7", now=10.0) is False
    assert counter.record_failure("192.0.2.7", now=20.0) is True
    assert counter.is_blocked("192.0.2.7", now=59.9) is True
    assert counter.is_blocked("198.51.100.1", now=20.0) is False
    # The oldest of the last three failures leaves the window at 60 s.
    assert counter.is_blocked("192.0.2.7", now=60.0) is False


def test_spread_out_failures_never_block() -> None:
    counter = FailureCounter(FailurePolicy(max_failures=3, window=60.0))
    for i in range(10):
        assert counter.record_failure("192.0.2.7", now=i * 31.0) is False


def test_success_forgets_failures() -> None:
    counter = FailureCounter(FailurePolicy(max_failures=2, window=60.0))
    counter.record_failure("192.0.2.7", now=0.0)
    counter.record_success("192.0.2.7")
    assert counter.record_failure("192.0.2.7", now=1.0) is False
    counter.record_success("never-seen")  # no error


def test_sources_are_bounded() -> None:
    counter = FailureCounter(FailurePolicy(max_failures=2, window=60.0, max_sources=2))
    counter.record_failure("a", now=0.0)
    counter.record_failure("b", now=0.0)
    counter.record_failure("c", now=0.0)
    assert len(counter) == 2
    # "a" was forgotten: one more failure does not block it.
    assert counter.record_failure("a", now=1.0) is False
    assert counter.record_failure("c", now=1.0) is True


def test_policy_validation() -> None:
    with pytest.raises(ValueError):
        FailurePolicy(max_failures=0)
    with pytest.raises(ValueError):
        FailurePolicy(window=0.0)
