"""The gateway's own TLS certificate about to expire, on trio's autojump clock: one WARNING
when the listeners start and then one a day, from 14 days before its notAfter until it
expires, none while it is further off; a reload with the renewed certificate ends them. The
wall clock is trio's time from now, as the transport reads it."""

from __future__ import annotations

import datetime
import logging
from pathlib import Path

import pytest
import trio

from gateway.plugins.transports.certificates import EXPIRY_WARNING_DAYS
from gateway.plugins.transports.tls import EXPIRY_CHECK_INTERVAL, TlsConfig, TlsTransport
from tests.interop.harness.pki import Issued, TestPki

TLS_LOG = "gateway.plugins.transports.tls"
DAY = 86400.0
BASE = datetime.datetime.now(datetime.UTC).timestamp()  # Unix time at trio time 0


def wall_clock() -> float:
    return BASE + trio.current_time()


def transport_for(pair: Issued) -> TlsTransport:
    config = TlsConfig(certificate=str(pair.certificate), private_key=str(pair.key))
    return TlsTransport(config, wall_clock=wall_clock)


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == TLS_LOG and record.levelno == logging.WARNING
    ]


def test_the_interval_is_a_day_and_the_window_14_days() -> None:
    assert (EXPIRY_CHECK_INTERVAL, EXPIRY_WARNING_DAYS) == (DAY, 14)


async def test_warned_at_start_then_daily_until_it_expires(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    # Valid 20 days from an hour ago: 14 days before its end is trio time 6 days less an hour.
    pair = TestPki(tmp_path).ca("CA").issue("gateway", days=20)
    not_after = pair.x509.not_valid_after_utc
    transport = transport_for(pair)
    caplog.set_level(logging.WARNING, TLS_LOG)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(transport._warn_before_expiry)
        await trio.sleep(1)
        assert warnings(caplog) == []  # 20 days off: nothing at start
        await trio.sleep(6 * DAY)
        # The first of the window (at trio time 6 days: 13 days and 23 hours left).
        expected = (
            f"tls: the certificate in {pair.certificate} expires on "
            f"{not_after:%Y-%m-%d %H:%M:%S} UTC (in 13 days): renew it"
        )
        assert warnings(caplog) == [expected]
        await trio.sleep(10 * DAY)
        said = warnings(caplog)
        assert len(said) == 11, said  # one a day
        assert said[-1].endswith("(in 3 days): renew it"), said
        await trio.sleep(10 * DAY)  # expired at 20 days less an hour: no more of these
        said = warnings(caplog)
        assert len([line for line in said if line.endswith("renew it")]) == 14, said
        assert said[13].endswith("(in 0 days): renew it"), said
        # ... but what start-up says of an expired one, once a day (days 20 to 26).
        expired = (
            f"tls: {pair.certificate}: the certificate expired on "
            f"{not_after:%Y-%m-%d %H:%M:%S} UTC (subject CN=gateway): peers will refuse it"
        )
        assert said[14:] == [expired] * 7, said
        nursery.cancel_scope.cancel()


async def test_one_expiring_is_warned_of_at_start_and_a_renewal_ends_the_warnings(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    ca = TestPki(tmp_path).ca("CA")
    pair = ca.issue("gateway", days=5)
    transport = transport_for(pair)
    caplog.set_level(logging.WARNING, TLS_LOG)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(transport._warn_before_expiry)
        await trio.sleep(1)
        (said,) = warnings(caplog)
        assert said.endswith("(in 4 days): renew it"), said
        # Renewed in place, then SIGHUP (a reload of the same paths).
        renewed = ca.issue("gateway-renewed", days=365)
        pair.certificate.write_bytes(renewed.certificate.read_bytes())
        pair.key.write_bytes(renewed.key.read_bytes())
        transport.reload_certificates()
        caplog.clear()
        await trio.sleep(3 * DAY)
        assert warnings(caplog) == []
        nursery.cancel_scope.cancel()


async def test_an_expired_certificate_is_said_when_the_listeners_start_not_when_built(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Building the transport (which `voipgw check-config` does too) logged the start-up
    line, and check-config printed it above its own error saying the same. Said once when
    the first listener starts (the daily look's first), then daily."""
    month_ago = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=40)
    pair = TestPki(tmp_path).ca("CA").issue("gateway", days=30, not_before=month_ago)
    caplog.set_level(logging.WARNING, TLS_LOG)
    transport = transport_for(pair)
    assert warnings(caplog) == []
    expired = (
        f"tls: {pair.certificate}: the certificate expired on "
        f"{pair.x509.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC (subject CN=gateway): "
        "peers will refuse it"
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(transport._warn_before_expiry)
        await trio.sleep(1)
        assert warnings(caplog) == [expired]
        await trio.sleep(DAY)
        assert warnings(caplog) == [expired] * 2
        nursery.cancel_scope.cancel()
