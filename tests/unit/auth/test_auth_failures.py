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
    for block_time in (-1.0, float("nan")):
        with pytest.raises(ValueError):
            FailurePolicy(block_time=block_time)


# [gateway] auth_block_time: a ban for a set time, not only the sliding window. Without it a
# guesser gets max_failures guesses every window forever (svcrack found a test password in 31 s
# with a 5 s window).


def _banning(block_time: float = 600.0, **policy: int) -> FailureCounter:
    return FailureCounter(
        FailurePolicy(max_failures=3, window=60.0, block_time=block_time, **policy)
    )


def test_a_source_is_banned_for_exactly_the_block_time_from_the_blocking_failure() -> None:
    counter = _banning()
    assert counter.record_failure("192.0.2.7", user="alice", now=0.0) is False
    assert counter.record_failure("192.0.2.7", user="alice", now=10.0) is False
    assert counter.blocked_for("192.0.2.7", now=10.0) == 0.0
    assert counter.record_failure("192.0.2.7", user="alice", now=20.0) is True
    assert counter.blocked_for("192.0.2.7", now=20.0) == 600.0
    # Past the window (today's block would have lifted at 60 s), up to 20 + 600 s.
    assert counter.is_blocked("192.0.2.7", now=60.0) is True
    assert counter.is_blocked("192.0.2.7", now=619.9) is True
    assert counter.is_blocked("192.0.2.7", now=620.0) is False
    assert counter.blocked_for("192.0.2.7", now=620.0) == 0.0
    assert counter.is_blocked("198.51.100.1", now=20.0) is False


def test_requests_and_failures_during_a_ban_do_not_extend_it() -> None:
    # A phone behind the guesser's NAT keeps trying while banned: it gets back in at the end.
    counter = _banning()
    for second in (0.0, 1.0, 2.0):
        counter.record_failure("192.0.2.7", user="alice", now=second)
    for second in range(3, 602, 3):
        assert counter.is_blocked("192.0.2.7", now=float(second)) is True
    # Not from the gateway (it checks first and counts nothing while banned), but neither do
    # failures, even enough of them for a block of their own.
    for second in (300.0, 301.0, 302.0):
        assert counter.record_failure("192.0.2.7", user="alice", now=second) is True
    assert counter.blocked_for("192.0.2.7", now=302.0) == 300.0
    assert counter.is_blocked("192.0.2.7", now=602.0) is False


def test_after_a_ban_the_next_max_failures_guesses_ban_again() -> None:
    counter = _banning()
    for second in (0.0, 1.0, 2.0):
        counter.record_failure("192.0.2.7", user="alice", now=second)
    assert counter.record_failure("192.0.2.7", user="alice", now=602.0) is False
    assert counter.record_failure("192.0.2.7", user="alice", now=603.0) is False
    assert counter.record_failure("192.0.2.7", user="alice", now=604.0) is True
    assert counter.is_blocked("192.0.2.7", now=1203.9) is True
    assert counter.is_blocked("192.0.2.7", now=1204.0) is False


def test_a_success_during_a_ban_does_not_lift_it() -> None:
    # The gateway does not even check a password from a banned source (tested with the
    # registration service); were one recorded, the ban is the source's, not the user's.
    counter = _banning()
    for second in (0.0, 1.0, 2.0):
        counter.record_failure("192.0.2.7", user="alice", now=second)
    counter.record_success("192.0.2.7", user="alice")
    assert len(counter) == 0
    assert counter.is_blocked("192.0.2.7", now=3.0) is True
    assert counter.is_blocked("192.0.2.7", now=602.0) is False


def test_a_block_time_shorter_than_the_window_keeps_the_window_block() -> None:
    counter = _banning(block_time=5.0)
    for second in (0.0, 10.0, 20.0):
        counter.record_failure("192.0.2.7", user="alice", now=second)
    assert counter.blocked_for("192.0.2.7", now=20.0) == 40.0  # the window's, as today
    assert counter.is_blocked("192.0.2.7", now=59.9) is True
    assert counter.is_blocked("192.0.2.7", now=60.0) is False


def test_without_a_block_time_the_block_is_the_window_as_before() -> None:
    counter = FailureCounter(FailurePolicy(max_failures=3, window=60.0))
    assert counter.policy.block_time == 0.0
    for second in (0.0, 10.0, 20.0):
        counter.record_failure("192.0.2.7", user="alice", now=second)
    assert counter.blocked_for("192.0.2.7", now=20.0) == 40.0
    assert counter.is_blocked("192.0.2.7", now=59.9) is True
    assert counter.is_blocked("192.0.2.7", now=60.0) is False


def test_a_flood_of_other_sources_failing_does_not_lift_a_ban() -> None:
    # Failures are bounded least recently failing first out; a ban lifted by that would cost
    # a guesser max_sources single failures from other addresses (a botnet's, or an IPv6
    # prefix). Bans are bounded apart: only max_sources later bans push one out.
    counter = _banning(max_sources=4)
    for second in (0.0, 1.0, 2.0):
        counter.record_failure("guesser", user="alice", now=second)
    for number in range(100):
        assert counter.record_failure(f"flood-{number}", user="x", now=3.0) is False
    assert len(counter) == 4
    assert counter.is_blocked("guesser", now=4.0) is True


def test_bans_are_bounded_the_nearest_to_its_end_out_first() -> None:
    counter = _banning(max_sources=2)

    def ban(source: str, now: float) -> None:
        for _ in range(3):
            counter.record_failure(source, user="x", now=now)

    ban("a", 0.0)
    ban("b", 100.0)
    ban("c", 200.0)  # the third ban: "a"'s, the nearest to its end, goes
    assert [counter.is_blocked(s, now=201.0) for s in "abc"] == [False, True, True]
    assert counter.banned == 2  # the table's size, for voipgw_internal_entries
    ban("d", 750.0)  # "b"'s ended at 700 s; "c" (until 800 s) stays
    assert [counter.is_blocked(s, now=751.0) for s in "cd"] == [True, True]
