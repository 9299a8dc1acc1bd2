"""The metrics exporter's TLS certificate about to expire, on trio's autojump clock, as the
tls transport's (tests/component/transports/test_tls_certificate_expiry.py): one WARNING when
the exporter starts and then one a day from 14 days before its notAfter, the start-up line of
an expired one daily after that; a reload with the renewed certificate ends them. The
exporter listens on a loopback port of the system's choosing (port 0); the wall clock is
trio's time from now, as the exporter reads it."""

from __future__ import annotations

import datetime
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import trio

from gateway.plugins.metrics import MetricsConfig, MetricsExporter
from tests.interop.harness.pki import Issued, TestPki

LOG = "gateway.plugins.metrics"
DAY = 86400.0
BASE = datetime.datetime.now(datetime.UTC).timestamp()  # Unix time at trio time 0


def wall_clock() -> float:
    return BASE + trio.current_time()


def exporter_for(pair: Issued) -> MetricsExporter:
    config = MetricsConfig(
        listen="127.0.0.1:0", tls_certificate=str(pair.certificate), tls_private_key=str(pair.key)
    )
    return MetricsExporter(config, wall_clock=wall_clock)


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == LOG and record.levelno == logging.WARNING
    ]


async def test_warned_at_start_then_daily_until_it_expires_and_after(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    # Valid 20 days from an hour ago: 14 days before its end is trio time 6 days less an hour.
    pair = TestPki(tmp_path).ca("CA").issue("gateway", days=20)
    not_after = pair.x509.not_valid_after_utc
    exporter = exporter_for(pair)
    caplog.set_level(logging.WARNING, LOG)
    async with trio.open_nursery() as nursery:
        await nursery.start(exporter.run, SimpleNamespace(version="test"))
        assert warnings(caplog) == []  # 20 days off: nothing at start
        await trio.sleep(6 * DAY + 1)
        expected = (
            f"metrics: the certificate in {pair.certificate} expires on "
            f"{not_after:%Y-%m-%d %H:%M:%S} UTC (in 13 days): renew it"
        )
        assert warnings(caplog) == [expected]
        await trio.sleep(20 * DAY)
        said = warnings(caplog)
        expiring = [line for line in said if line.endswith("renew it")]
        assert len(expiring) == 14, said  # one a day, (in 13 days) to (in 0 days)
        assert expiring[-1].endswith("(in 0 days): renew it"), said
        expired = (
            f"metrics: {pair.certificate}: the certificate expired on "
            f"{not_after:%Y-%m-%d %H:%M:%S} UTC (subject CN=gateway): scrapers will refuse it"
        )
        assert said[14:] == [expired] * 7, said  # start-up's line, daily (days 20 to 26)
        nursery.cancel_scope.cancel()


async def test_one_expiring_is_warned_of_at_start_and_a_renewal_ends_the_warnings(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    ca = TestPki(tmp_path).ca("CA")
    pair = ca.issue("gateway", days=5)
    exporter = exporter_for(pair)
    caplog.set_level(logging.WARNING, LOG)
    async with trio.open_nursery() as nursery:
        await nursery.start(exporter.run, SimpleNamespace(version="test"))
        (said,) = warnings(caplog)
        assert said.endswith("(in 4 days): renew it"), said
        # Renewed with one that still ends within 14 days: said at the reload, at once.
        short = ca.issue("gateway-short", days=3)
        pair.certificate.write_bytes(short.certificate.read_bytes())
        pair.key.write_bytes(short.key.read_bytes())
        caplog.clear()
        exporter.reload_certificates()
        (said,) = warnings(caplog)
        assert said.endswith("(in 2 days): renew it"), said
        # Renewed in place, then SIGHUP (a reload of the same paths): no more lines.
        renewed = ca.issue("gateway-renewed", days=365)
        pair.certificate.write_bytes(renewed.certificate.read_bytes())
        pair.key.write_bytes(renewed.key.read_bytes())
        exporter.reload_certificates()
        caplog.clear()
        await trio.sleep(3 * DAY)
        assert warnings(caplog) == []
        nursery.cancel_scope.cancel()
