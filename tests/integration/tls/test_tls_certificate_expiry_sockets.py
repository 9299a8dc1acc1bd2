"""``voipgw run`` serving a TLS certificate that expires within 14 days: one WARNING when its
listener starts (tests/component/transports/test_tls_certificate_expiry.py drives the daily
repeat on trio's clock), and check-config's warning, exit 0."""

from __future__ import annotations

import datetime
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest
import trio
import trio.testing

from tests.integration.tls.tls_peers import running_gateway, tls_transport
from tests.integration.voipgw_process import voipgw_running
from tests.interop.harness.pki import Issued, TestPki
from tests.port_blocks import ModuleBlock

MEDIA_PORTS = ModuleBlock(20)
TLS_LOG = "gateway.plugins.transports.tls"


def test_a_certificate_expiring_within_14_days_is_warned_of_at_start(tmp_path: Path) -> None:
    pair = TestPki(tmp_path / "pki").ca("CA").issue("gateway", days=10)
    config = tmp_path / "voipgw.toml"
    config.write_text(
        f'[gateway]\nstate_dir = "{tmp_path / "state"}"\n[media]\nports = "{MEDIA_PORTS.text()}"\n'
        '[sip]\nlisten = ["tls:127.0.0.1:0"]\n[plugins]\nenable = ["tls"]\n'
        f'[plugins.tls]\ncertificate = "{pair.certificate}"\nprivate_key = "{pair.key}"\n'
    )
    warning = (
        rf"WARNING gateway\.plugins\.transports\.tls: tls: the certificate in "
        rf"{re.escape(str(pair.certificate))} expires on [0-9-]+ [0-9:]+ UTC \(in 9 days\): "
        "renew it"
    )
    ready = re.compile(r"voipgw ready: .*tls:127\.0\.0\.1:\d+")
    log = tmp_path / "voipgw.log"
    with voipgw_running(config, log, [ready, re.compile(warning)]):
        pass
    assert len(re.findall(warning, log.read_text())) == 1, log.read_text()
    checked = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stderr
    assert re.search(
        r"\[plugins\.tls\] certificate: the certificate in .* \(in 9 days\)", checked.stderr
    )


async def test_a_reload_says_what_the_certificate_it_installed_expires_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A reload while the daily look runs (started with the first listener: one, however many
    listeners) judges the certificate it swapped in, not the one it replaced: renewed, nothing
    (the warning at the reload named the old file's date, as if the renewal had not worked);
    replaced by one that expires sooner still, that one's date at once, once."""
    ca = TestPki(tmp_path / "pki").ca("CA")
    pair = ca.issue("gateway", days=10)
    tls = {"certificate": str(pair.certificate), "private_key": str(pair.key)}
    caplog.set_level(logging.WARNING, TLS_LOG)
    listen = ("tls:127.0.0.1:0", "tls:127.0.0.1:0")  # two listeners, one look a day
    async with running_gateway(tmp_path / "state", tls, listen=listen) as gateway:
        assert len(tls_transport(gateway)._listeners) == 2
        await trio.testing.wait_all_tasks_blocked()
        (said,) = expiring(caplog)
        assert said.endswith("(in 9 days): renew it"), said

        caplog.clear()
        install(ca.issue("gateway-renewed", days=365), pair)
        (report,) = gateway.reload_certificates()
        assert report.outcome == "reloaded"
        await trio.testing.wait_all_tasks_blocked()
        assert expiring(caplog) == []

        install(ca.issue("gateway-short", days=3), pair)
        (report,) = gateway.reload_certificates()
        assert report.outcome == "reloaded"
        (said,) = expiring(caplog)
        assert said.endswith("(in 2 days): renew it"), said


def install(issued: Issued, pair: Issued) -> None:
    """``issued`` copied over the configured files of ``pair``, as a deploy hook does."""
    pair.certificate.write_bytes(issued.certificate.read_bytes())
    pair.key.write_bytes(issued.key.read_bytes())


def expiring(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == TLS_LOG and "expires on" in record.getMessage()
    ]


def test_an_expired_certificate_is_said_once_by_check_config_and_run(tmp_path: Path) -> None:
    """check-config printed the transport's start-up line raw (`tls: FILE: ...: peers will
    refuse it`, logged when the plugin was built) above its own error saying the same; `run`
    logs it once, when its listener starts."""
    month_ago = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=40)
    pair = TestPki(tmp_path / "pki").ca("CA").issue("gateway", days=30, not_before=month_ago)
    config = tmp_path / "voipgw.toml"
    config.write_text(
        f'[gateway]\nstate_dir = "{tmp_path / "state"}"\n[media]\nports = "{MEDIA_PORTS.text()}"\n'
        '[sip]\nlisten = ["tls:127.0.0.1:0"]\n[plugins]\nenable = ["tls"]\n'
        f'[plugins.tls]\ncertificate = "{pair.certificate}"\nprivate_key = "{pair.key}"\n'
    )
    checked = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (checked.returncode, checked.stdout) == (2, ""), checked.stderr
    (line,) = checked.stderr.splitlines()
    assert line.startswith(f"voipgw: configuration error: {config}: [plugins.tls] certificate: ")
    assert line.endswith(": peers will refuse it"), line
    warning = (
        rf"WARNING gateway\.plugins\.transports\.tls: tls: {re.escape(str(pair.certificate))}: "
        r"the certificate expired on [0-9-]+ [0-9:]+ UTC \(subject CN=gateway\): peers will "
        "refuse it"
    )
    ready = re.compile(r"voipgw ready: .*tls:127\.0\.0\.1:\d+")
    log = tmp_path / "voipgw.log"
    with voipgw_running(config, log, [ready, re.compile(warning)]):
        pass
    assert len(re.findall(warning, log.read_text())) == 1, log.read_text()
