"""Logging a dependency that keeps failing: once when it starts, a summary every few minutes
while it goes on, once more when it answers again, rather than a line per failed request.

Theory of operation. A store that is down, or an OCSP responder that does not answer, fails
every request that needs it: hundreds a minute on a busy gateway. One WARNING per failure
buries everything else in the log (and costs a formatted line each); none at all hides the
outage. :class:`FailureLog` keeps one dependency's failures: the first is logged at WARNING
with its reason, the following ones are counted and summarized in one WARNING at most every
``interval`` seconds (how many, since when, the last reason), and the first success after
them is one INFO line (how many failed, for how long). Metrics count every failure where
there is a metric for it.

Sans-IO: ``now`` (wall-clock seconds: the summary names the time the failures started) comes
from the caller; the lines go to the caller's logger, so they keep its module's name.
"""

from __future__ import annotations

import datetime
import logging

import attrs

SUMMARY_INTERVAL = 300.0
"""Seconds between two summary lines of a dependency that keeps failing."""


@attrs.define
class FailureLog:
    """One dependency's failures, logged once, summarized, and once more when it answers.

    ``subject`` names it as the lines' subject (``"OCSP responder http://ocsp.example"``),
    ``unit`` what fails, plural (``"queries"``), ``note`` what the first line adds after its
    reason (what happens meanwhile)."""

    logger: logging.Logger
    subject: str
    unit: str
    note: str
    interval: float = SUMMARY_INTERVAL
    since: float | None = None
    """When the current run of failures started; None while it answers."""
    summarized_at: float = 0.0
    failures: int = 0
    """Failures since :attr:`since`."""
    since_summary: int = 0
    """Failures since the last line logged."""

    @property
    def failing(self) -> bool:
        """Whether its last attempt failed."""
        return self.since is not None

    def failed(self, reason: str, *, now: float) -> None:
        """One more failure, ``reason`` saying why: logged when it is the first of a run, or
        when the last line is ``interval`` seconds old (a summary); else only counted."""
        if self.since is None:
            self.since = self.summarized_at = now
            self.failures, self.since_summary = 1, 0
            self.logger.warning(
                "%s is failing: %s; %s; further failures summarized every %g s",
                self.subject,
                reason,
                self.note,
                self.interval,
            )
            return
        self.failures += 1
        self.since_summary += 1
        if now - self.summarized_at >= self.interval:
            self.logger.warning(
                "%s is still failing: %d failed %s in the last %g s, %d since %s; the last: %s",
                self.subject,
                self.since_summary,
                self.unit,
                now - self.summarized_at,
                self.failures,
                _utc(self.since),
                reason,
            )
            self.summarized_at = now
            self.since_summary = 0

    def answered(self, *, now: float, outcome: str = "") -> None:
        """A success: one INFO line when it ends a run of failures (``outcome``, if given,
        says after a semicolon what its answer did: what was caught up); nothing (an attribute
        test) otherwise."""
        if self.since is None:
            return
        self.logger.info(
            "%s answers again, after %d failed %s in %g s%s",
            self.subject,
            self.failures,
            self.unit,
            now - self.since,
            f"; {outcome}" if outcome else "",
        )
        self.since = None
        self.failures = self.since_summary = 0


def _utc(timestamp: float) -> str:
    return f"{datetime.datetime.fromtimestamp(timestamp, datetime.UTC):%Y-%m-%d %H:%M:%S} UTC"
