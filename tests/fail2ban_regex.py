"""fail2ban's view of the gateway's log, for the tests of the documented failregexes
(tests/unit/auth/test_blocked_source_log.py, tests/test_log_lines.py). fail2ban-regex is not a
CI dependency: its tags are expanded here as fail2ban 0.10+ expands them, and a line is cut as
fail2ban cuts it, so the documented regexes are matched with Python's re as fail2ban would."""

from __future__ import annotations

import logging

# fail2ban's <HOST> and <SUBNET> as fail2ban 0.10+ expands them (fail2ban/server/failregex.py,
# R_HOST): an IPv4 or IPv6 address in optional brackets (<SUBNET> with an optional /CIDR), or
# for <HOST> a host name.
FAIL2BAN_IP4 = r"(?:\d{1,3}\.){3}\d{1,3}"
FAIL2BAN_IP6 = r"(?:[0-9a-fA-F]{1,4}::?|::){1,7}(?:[0-9a-fA-F]{1,4}|(?<=:):)"
FAIL2BAN_SUBNET = (
    rf"\[?(?:(?:::f{{4,6}}:)?(?P<ip4>{FAIL2BAN_IP4})|(?P<ip6>{FAIL2BAN_IP6}))(?:/(?P<cidr>\d+))?\]?"
)
FAIL2BAN_HOST = (
    rf"(?:\[?(?:(?:::f{{4,6}}:)?(?P<ip4>{FAIL2BAN_IP4})|(?P<ip6>{FAIL2BAN_IP6}))\]?"
    r"|(?P<dns>[\w\-.^_]*\w))"
)


def as_fail2ban_reads(record: logging.LogRecord, formatter: logging.Formatter) -> str:
    """``record`` as ``formatter`` (the gateway's LineFormatter: date, level, logger, message)
    writes it to the log and as fail2ban matches a failregex against it: without the date it
    found, the rest joined (fail2ban/server/failregex.py, ``Regex._tupleLinesBuf``), so a ``^``
    stands where the date was, before the space that followed it."""
    line = formatter.format(record)
    assert line.startswith(record.asctime + " "), line
    return line[len(record.asctime) :]


def as_fail2ban_reads_from_journal(record: logging.LogRecord, formatter: logging.Formatter) -> str:
    """``record`` as fail2ban's systemd backend (``backend = systemd``) matches it: the journal
    entry's host name, identifier and pid before the message, the gateway's whole line, its own
    date included (fail2ban/server/filtersystemd.py, ``formatJournalEntry``: the entry's time is
    fail2ban's date, so nothing is cut from the text)."""
    return "pbx voipgw[4242]: " + formatter.format(record)


def as_fail2ban_reads_from_syslog(record: logging.LogRecord, formatter: logging.Formatter) -> str:
    """``record`` in a syslog file (rsyslog's copy of the journal: ``Dec  1 21:40:07 pbx
    voipgw[4242]: `` and the gateway's line) as fail2ban matches it: the syslog date, the first
    on the line, cut, the space after it left."""
    return " " + as_fail2ban_reads_from_journal(record, formatter)
