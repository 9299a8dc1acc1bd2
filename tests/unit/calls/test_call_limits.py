"""Call limits (gateway/core/calls/limits.py): calls in progress per trunk or account, and the
call rate to a trunk, with float time."""

from __future__ import annotations

import pytest

from gateway.core.calls.limits import NO_LIMIT, CallLimits, CallRate, Key, Limit

TRUNK: Key = ("trunk", "carrier")
ALICE: Key = ("account", "alice")


def limits(**configured: Limit) -> CallLimits:
    return CallLimits(lambda key: configured.get(key[1], NO_LIMIT))


def test_calls_in_progress_are_bounded_and_given_back() -> None:
    lim = limits(carrier=Limit(max_calls=2))
    first, second, third = object(), object(), object()
    assert lim.take(first, TRUNK) is None
    assert lim.take(first, TRUNK) is None  # once per call
    assert lim.take(second, TRUNK) is None
    assert lim.take(third, TRUNK) == "call limit"
    assert lim.in_progress[TRUNK] == 2
    lim.release(first)
    assert lim.take(third, TRUNK) is None
    lim.release(second)
    lim.release(third)
    lim.release(third)  # twice: nothing more to give back
    assert lim.in_progress == {}


def test_no_limit_counts_but_never_refuses() -> None:
    lim = limits()
    holders = [object() for _ in range(1000)]
    assert all(lim.take(h, ALICE, now=0.0) is None for h in holders)
    assert lim.in_progress[ALICE] == 1000


def test_a_limit_lowered_while_calls_run_refuses_new_ones_only() -> None:
    configured = {"carrier": Limit(max_calls=3)}
    lim = CallLimits(lambda key: configured.get(key[1], NO_LIMIT))
    running = [object(), object(), object()]
    for call in running:
        assert lim.take(call, TRUNK) is None
    configured["carrier"] = Limit(max_calls=1)
    assert lim.take(object(), TRUNK) == "call limit"
    assert lim.in_progress[TRUNK] == 3


def test_the_call_rate_paces_calls_sent_to_a_trunk() -> None:
    lim = limits(carrier=Limit(max_cps=2))
    # A burst of a second's worth (2), then one call every half second.
    assert [lim.take(object(), TRUNK, now=10.0) for _ in range(3)] == [None, None, "call rate"]
    assert lim.take(object(), TRUNK, now=10.4) == "call rate"
    assert lim.take(object(), TRUNK, now=10.5) is None
    assert lim.in_progress[TRUNK] == 3  # a call refused for the rate is not counted
    # Calls from the trunk (no time given) are not paced.
    assert all(lim.take(object(), TRUNK) is None for _ in range(5))


@pytest.mark.parametrize(("per_second", "burst"), [(0.5, 1.0), (1.0, 1.0), (30.0, 30.0)])
def test_a_rate_allows_its_burst_then_its_rate(per_second: float, burst: float) -> None:
    rate = CallRate(per_second)
    allowed = sum(rate.allow(0.0) for _ in range(100))
    assert allowed == burst
    # Over the next 10 s, per_second a second more (the bucket refills at that rate; one call
    # either way for the float sums of 1000 small steps).
    later = sum(rate.allow(t / 100) for t in range(1, 1001))
    assert abs(later - 10 * per_second) <= 1


def test_a_retuned_rate_keeps_what_its_bucket_holds() -> None:
    rate = CallRate(2.0)
    assert [rate.allow(0.0) for _ in range(3)] == [True, True, False]  # the burst spent
    # Raised to 4 a second (a node left the cluster): no new burst, a faster refill only.
    rate.retune(4.0, 0.0)
    assert not rate.allow(0.0)
    assert not rate.allow(0.2)
    assert rate.allow(0.25)  # a call every quarter second from now on
    assert not rate.allow(0.25)
    # A full bucket lowered (a node joined) holds at most the new second's worth.
    full = CallRate(6.0)
    full.retune(2.0, 10.0)
    assert sum(full.allow(10.0) for _ in range(10)) == 2
    # Refilled at the old rate up to the change: 0.5 s at 1 a second is half a call.
    slow = CallRate(1.0)
    assert slow.allow(0.0)
    slow.retune(10.0, 0.5)
    assert slow.tokens == pytest.approx(0.5)
    assert not slow.allow(0.5)
    assert slow.allow(0.55)


def test_without_a_shared_store_the_cluster_scope_paces_the_whole_max_cps() -> None:
    lim = CallLimits(lambda key: Limit(max_cps=3), cluster_cps=True)  # SQLite: one node
    assert lim.cluster_cps is False
    assert lim.paced_cps(TRUNK) == 3.0
    assert [lim.take(object(), TRUNK, now=0.0) for _ in range(4)] == [None] * 3 + ["call rate"]
