"""The gateway's log line formatter (gateway/core/logs.py ``LineFormatter``) writes every record
byte for byte as :class:`logging.Formatter` with the same format string does: operators' tools and
the tests read these lines."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator

import pytest

from gateway.core.logs import LineFormatter

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# 2026-03-29 00:59:59.999 UTC, a millisecond before Europe/Paris moves to summer time; around it
# whole seconds, their first and last milliseconds, a second seen twice, one seen again later.
_DST = 1774745999.0
CREATED = [
    _DST - 3600.5,
    _DST - 0.9995,
    _DST + 0.0005,
    _DST + 0.999,
    _DST + 0.9999,
    _DST + 1.0,
    _DST + 1.0001,
    _DST + 1.5,
    _DST + 0.25,
    _DST + 86400 * 200 + 0.123,  # 200 days on: winter time again
    1_800_000_000.0,
    1_800_000_000.999999,
]


@pytest.fixture(params=["UTC", "Europe/Paris", "America/St_Johns", "Asia/Kathmandu"])
def zone(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The process's local time zone (``time.localtime``, the formatters' converter)."""
    monkeypatch.setenv("TZ", request.param)
    time.tzset()
    yield request.param
    monkeypatch.undo()
    time.tzset()


def _record(created: float, msg: object = "call %s ended: %s", *args: object) -> logging.LogRecord:
    record = logging.LogRecord(
        "gateway.core.calls.call", logging.INFO, __file__, 1, msg, args or ("c1", "normal"), None
    )
    # As LogRecord.__init__ derives them from time.time_ns() (Python 3.11/3.12 alike).
    record.created = created
    record.msecs = int((created - int(created)) * 1000) + 0.0
    return record


def test_lines_are_the_stock_formatters_at_every_time(zone: str) -> None:
    ours, stock = LineFormatter(), logging.Formatter(FORMAT)
    for created in CREATED + sorted(CREATED):
        assert ours.format(_record(created)) == stock.format(_record(created)), (zone, created)


def test_a_media_workers_lines_name_it(zone: str) -> None:
    ours = LineFormatter("media-worker-1")
    stock = logging.Formatter("%(asctime)s %(levelname)s media-worker-1 %(name)s: %(message)s")
    for created in CREATED:
        assert ours.format(_record(created)) == stock.format(_record(created))


def test_levels_messages_and_appended_texts_are_the_stock_formatters() -> None:
    ours, stock = LineFormatter(), logging.Formatter(FORMAT)
    records = []
    for level in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, 5):
        record = _record(_DST, "plain %d%%", 3)
        record.levelno, record.levelname = level, logging.getLevelName(level)
        records.append(record)
    not_a_string = _record(_DST, 42)  # a message that is not a string, no arguments
    not_a_string.args = ()
    records.append(not_a_string)
    records.append(_record(_DST, "{'a': 1} %s", {"k": "v"}))  # a dict argument
    with_text = _record(_DST)
    with_text.exc_text = "Traceback (most recent call last):\n  File x, line 1\nValueError"
    records.append(with_text)
    with_stack = _record(_DST)
    with_stack.stack_info = "Stack (most recent call last):\n  File y, line 2"
    records.append(with_stack)
    ending_newline = _record(_DST, "two lines\n")
    ending_newline.args, ending_newline.exc_text = (), "E"
    records.append(ending_newline)
    try:
        raise ValueError("boom")
    except ValueError:
        with_info = _record(_DST)
        with_info.exc_info = sys.exc_info()
    records.append(with_info)
    for record in records:
        twin = logging.makeLogRecord(dict(record.__dict__))
        assert ours.format(record) == stock.format(twin)
        assert record.asctime == twin.asctime and record.message == twin.message


def test_a_date_format_given_is_applied_as_the_stock_formatter_does() -> None:
    ours, stock = LineFormatter(), logging.Formatter(FORMAT)
    assert ours.formatTime(_record(_DST), "%H:%M") == stock.formatTime(_record(_DST), "%H:%M")
