"""The caller's final answer when every callee failed (targets.best_failure, RFC 3261 §16.7 step
6 for a B2BUA): the ranking table, pair by pair, and the answers made of what cannot go on."""

from __future__ import annotations

import itertools

import pytest

from gateway.core.calls.targets import NO_TIMELY_RESPONSE, best_failure, failure_rank
from gateway.core.sip.message import Response, default_reason

# Best first, as docs/architecture.md "The caller's answer when every callee failed" lists them.
RANKED = [603, 484, 486, 480, 404, 403, 400, 410, 415, 420, 487, 488, 408]


def answer(*statuses: int) -> tuple[int, str]:
    return best_failure([Response(s, default_reason(s)) for s in statuses])


@pytest.mark.parametrize(("better", "worse"), list(itertools.combinations(RANKED, 2)))
def test_each_failure_beats_every_one_ranked_below_it_in_either_order(
    better: int, worse: int
) -> None:
    assert failure_rank(better) < failure_rank(worse)
    assert answer(better, worse)[0] == better
    assert answer(worse, better)[0] == better


def test_a_timeout_never_beats_what_another_fork_said() -> None:
    assert answer(408, 488) == (488, "Not Acceptable Here")
    assert answer(408, 487)[0] == 487
    assert answer(408, 415)[0] == 415


def test_the_first_6xx_wins_over_everything() -> None:
    assert answer(486, 600, 603)[0] == 600
    assert answer(408, 503, 604)[0] == 604


def test_a_408_beats_5xx_challenges_and_redirections_the_lowest_class() -> None:
    assert answer(408, 500) == (408, "Request Timeout")
    assert answer(407, 408)[0] == 408
    assert answer(302, 408)[0] == 408
    assert answer(408, 408) == (408, "Request Timeout")


def test_what_the_caller_cannot_act_on_becomes_503_or_480() -> None:
    assert answer(407) == (503, "Service Unavailable (trunk asked us to authenticate)")
    assert answer(401, 500)[0] == 503
    assert answer(500, 502) == (503, "Service Unavailable")
    assert answer(302) == (480, "Temporarily Unavailable (redirection not followed)")
    assert answer(302, 503)[0] == 503
    assert best_failure([]) == (480, "Temporarily Unavailable")


def test_a_relayed_non_invite_never_gets_a_408() -> None:
    timeout = Response(408, "Request Timeout")
    assert best_failure([timeout, timeout], non_invite=True) == NO_TIMELY_RESPONSE
    assert best_failure([timeout, Response(500, "x")], non_invite=True)[0] == 503
