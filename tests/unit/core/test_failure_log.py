"""FailureLog: a dependency that keeps failing is logged once, summarized every interval, and
once more when it answers again (gateway/core/failure_log.py)."""

from __future__ import annotations

import logging

import pytest

from gateway.core.failure_log import SUMMARY_INTERVAL, FailureLog

T0 = 1_796_000_000.0  # 2026-11-30, wall-clock seconds


def lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    found = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "test.failing"]
    caplog.clear()
    return found


def test_once_then_a_summary_every_interval_then_once_when_it_answers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="test.failing")
    failures = FailureLog(logging.getLogger("test.failing"), "the store", "writes", "kept here")
    assert not failures.failing
    failures.answered(now=T0)  # answering while it answers: nothing to say
    assert lines(caplog) == []

    failures.failed("database is locked", now=T0)
    assert failures.failing
    assert lines(caplog) == [
        (
            logging.WARNING,
            "the store is failing: database is locked; kept here; further failures summarized "
            "every 300 s",
        )
    ]
    # Every failure within the interval is counted, not logged.
    for second in range(1, 300):
        failures.failed(f"failure {second}", now=T0 + second)
    assert lines(caplog) == []
    failures.failed("disk I/O error", now=T0 + SUMMARY_INTERVAL)
    ((level, summary),) = lines(caplog)
    assert level == logging.WARNING
    assert summary == (
        "the store is still failing: 300 failed writes in the last 300 s, 301 since "
        "2026-11-30 00:53:20 UTC; the last: disk I/O error"
    )
    failures.failed("again", now=T0 + SUMMARY_INTERVAL + 1)
    assert lines(caplog) == []  # the next summary is 300 s after this one

    failures.answered(now=T0 + 400)
    assert lines(caplog) == [
        (logging.INFO, "the store answers again, after 302 failed writes in 400 s")
    ]
    assert not failures.failing
    failures.answered(now=T0 + 401)
    assert lines(caplog) == []
    # A new run of failures starts over: logged at once.
    failures.failed("gone again", now=T0 + 500)
    assert [level for level, _ in lines(caplog)] == [logging.WARNING]
    assert failures.failures == 1


def test_the_answer_line_says_what_its_answer_caught_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="test.failing")
    failures = FailureLog(logging.getLogger("test.failing"), "the database", "requests", "alone")
    failures.answered(now=T0, outcome="3 holds written")  # not failing: nothing to say
    failures.failed("not connected", now=T0)
    lines(caplog)
    failures.answered(now=T0 + 4, outcome="3 holds written")
    assert lines(caplog) == [
        (
            logging.INFO,
            "the database answers again, after 1 failed requests in 4 s; 3 holds written",
        )
    ]
