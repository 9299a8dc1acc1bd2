"""The per-source failure counter that turns repeated bad attempts into 403."""

from __future__ import annotations

import pytest

from gateway.core.auth.failures import FailureCounter, FailurePolicy


def test_blocks_after_n_failures_in_the_window() -> None:
    counter = FailureCounter(FailurePolicy(max_failures=3, window=60.0))
    assert counter.record_failure("192.0.2.7", user="alice", now=0.0) is False
    assert counter.record_failure("192.0.2.7", user="alice", now=10.0) is False
    assert counter.is_blocked("192.0.2.7", now=10.0) is False
    assert counter.record_failure("192.0.2.7", user="alice", now=20.0) is True
    assert counter.is_blocked("192.0.2.7", now=59.9) is True
    assert counter.is_blocked("198.51.100.1", now=20.0) is False
    # The oldest of the last three failures leaves the window at 60 s.
    assert counter.is_blocked("192.0.2.7", now=60.0) is False


def test_spread_out_failures_never_block() -> None:
    counter = FailureCounter(FailurePolicy(max_failures=3, window=60.0))
    for i in range(10):
        assert counter.record_failure("192.0.2.7", user="alice", now=i * 31.0) is False


def test_success_forgets_that_users_failures() -> None:
    counter = FailureCounter(FailurePolicy(max_failures=2, window=60.0))
    counter.record_failure("192.0.2.7", user="alice", now=0.0)
    counter.record_success("192.0.2.7", user="alice")
    assert len(counter) == 0
    assert counter.record_failure("192.0.2.7", user="alice", now=1.0) is False
    counter.record_success("never-seen", user="alice")  # no error


def test_a_good_login_does_not_reset_guesses_at_other_accounts() -> None:
    # Someone who holds the account "mallory" guesses alice's and bob's passwords and logs in
    # as mallory between guesses: the guesses still add up to a block.
    counter = FailureCounter(FailurePolicy(max_failures=3, window=60.0))
    assert counter.record_failure("192.0.2.7", user="alice", now=0.0) is False
    counter.record_success("192.0.2.7", user="mallory")
    assert counter.record_failure("192.0.2.7", user="bob", now=1.0) is False
    counter.record_success("192.0.2.7", user="mallory")
    assert counter.record_failure("192.0.2.7", user="alice", now=2.0) is True
    # Behind the same NAT address, carol's phone logging in does not lift the block either.
    counter.record_success("192.0.2.7", user="carol")
    assert counter.is_blocked("192.0.2.7", now=3.0) is True


def test_success_keeps_other_users_failures_in_order() -> None:
    counter = FailureCounter(FailurePolicy(max_failures=3, window=60.0))
    counter.record_failure("192.0.2.7", user="alice", now=0.0)
    counter.record_failure("192.0.2.7", user="bob", now=10.0)
    counter.record_failure("192.0.2.7", user="alice", now=20.0)
    counter.record_success("192.0.2.7", user="alice")
    # bob's failure at 10 s is kept: two more within its window block the source.
    assert counter.record_failure("192.0.2.7", user="bob", now=30.0) is False
    assert counter.record_failure("192.0.2.7", user="eve", now=40.0) is True
    assert counter.is_blocked("192.0.2.7", now=69.9) is True
    assert counter.is_blocked("192.0.2.7", now=70.0) is False


def test_sources_are_bounded() -> None:
    counter = FailureCounter(FailurePolicy(max_failures=2, window=60.0, max_sources=2))
    counter.record_failure("a", user="alice", now=0.0)
    counter.record_failure("b", user="alice", now=0.0)
    counter.record_failure("c", user="alice", now=0.0)
    assert len(counter) == 2
    # "a" was forgotten: one more failure does not block it.
    assert counter.record_failure("a", user="alice", now=1.0) is False
    assert counter.record_failure("c", user="alice", now=1.0) is True


def test_policy_validation() -> None:
    with pytest.raises(ValueError):
        FailurePolicy(max_failures=0)
    with pytest.raises(ValueError):
        FailurePolicy(window=0.0)
