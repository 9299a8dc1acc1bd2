"""What ``voipgw check-config`` says of the certificates the gateway presents (session 40):
the metrics exporter's ``tls_certificate`` judged as the tls transport's is (a warning within
14 days of its end, an error once out of its validity period); a tls certificate no listener
presents is a warning, not an error; and the transport's own start-up line is not printed
above check-config's error saying the same."""

from __future__ import annotations

import datetime
import logging
import re
from pathlib import Path
from typing import Any

import pytest

from gateway.core import cli
from gateway.core import config as config_mod
from gateway.core.gateway import Gateway
from gateway.core.plugins import load_plugins
from tests.interop.harness.pki import Issued, TestPki

MONTH_AGO = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=40)
DATE = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC"


def check_config(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(["check-config", str(path)])
    out, err = capsys.readouterr()
    return code, out, err


def built(path: Path) -> Gateway:
    config = config_mod.from_toml(path)
    return Gateway(config, load_plugins(config))


def issued(tmp_path: Path, days: int, *, not_before: Any = None) -> Issued:
    """A certificate valid ``days`` from an hour ago (or from ``not_before``)."""
    return TestPki(tmp_path / "pki").ca("CA").issue("gateway", days=days, not_before=not_before)


def tls_config(tmp_path: Path, pair: Issued, listen: str) -> Path:
    path = tmp_path / "voipgw.toml"
    path.write_text(
        f'[gateway]\nstate_dir = "{tmp_path / "state"}"\n[sip]\nlisten = [{listen}]\n'
        '[plugins]\nenable = ["udp", "tls"]\n'
        f'[plugins.tls]\ncertificate = "{pair.certificate}"\nprivate_key = "{pair.key}"\n'
    )
    return path


def metrics_config(tmp_path: Path, pair: Issued) -> Path:
    path = tmp_path / "voipgw.toml"
    path.write_text(
        f'[gateway]\nstate_dir = "{tmp_path / "state"}"\n[sip]\nlisten = ["udp:127.0.0.1:0"]\n'
        '[plugins]\nenable = ["udp", "metrics"]\n'
        f'[plugins.metrics]\nlisten = "127.0.0.1:0"\ntls_certificate = "{pair.certificate}"\n'
        f'tls_private_key = "{pair.key}"\n'
    )
    return path


# -- the tls transport ------------------------------------------------------------------------


def test_an_expired_served_certificate_is_said_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """check-config printed the transport's start-up line (``tls: FILE: ...: peers will
    refuse it``, logged when the plugin was built) and then its own error saying the same:
    the operator read it twice. The transport says it when its first listener starts."""
    pair = issued(tmp_path, 30, not_before=MONTH_AGO)
    path = tls_config(tmp_path, pair, '"udp:127.0.0.1:0", "tls:127.0.0.1:0"')
    caplog.set_level(logging.DEBUG, "gateway.plugins.transports.tls")
    code, out, err = check_config(path, capsys)
    assert (code, out) == (cli.EXIT_USAGE, ""), err
    assert re.fullmatch(
        rf"voipgw: configuration error: {re.escape(str(path))}: \[plugins\.tls\] certificate: "
        rf"{re.escape(str(pair.certificate))}: the certificate expired on {DATE} \(subject "
        r"CN=gateway\): peers will refuse it\n",
        err,
    ), err
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert said == [], said


def test_an_expired_certificate_no_listener_presents_is_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The tls plugin enabled without a tls listener (nor, then, a trunk over tls: those need
    one): no peer sees the certificate, so none refuses it; check-config refused the file
    (exit 2) all the same. A warning now, saying when it will matter."""
    pair = issued(tmp_path, 30, not_before=MONTH_AGO)
    path = tls_config(tmp_path, pair, '"udp:127.0.0.1:0"')
    code, out, err = check_config(path, capsys)
    assert code == cli.EXIT_OK, err
    assert out.endswith("OK (2 plugins: udp, tls)\n")
    assert re.fullmatch(
        rf"voipgw: warning: {re.escape(str(path))}: \[plugins\.tls\] certificate: "
        rf"{re.escape(str(pair.certificate))}: the certificate expired on {DATE} \(subject "
        r"CN=gateway\): peers will refuse it once a tls listener of \[sip\] listen presents "
        r"it \(there is none now\)\n",
        err,
    ), err


def test_a_trunk_over_tls_needs_a_tls_listener(tmp_path: Path) -> None:
    """Why a listener is the whole of "presented": our certificate reaches a trunk only in
    mutual mode over a tls connection, and a trunk over tls without a tls listener is a
    configuration error (its requests' Via and Contact name that listener)."""
    pair = issued(tmp_path, 30)
    path = tls_config(tmp_path, pair, '"udp:127.0.0.1:0"')
    path.write_text(
        path.read_text().replace("[plugins.tls]\n", '[plugins.tls]\nmode = "mutual"\n')
        + f'ca_bundles = ["{tmp_path / "pki" / "CA.crt"}"]\n'
        + '[[trunks]]\nname = "carrier"\naddress = "tls:127.0.0.1:5061"\n'
    )
    with pytest.raises(config_mod.ConfigError, match=r"no \[sip\] listen entry for tls"):
        built(path).check()


# -- the metrics exporter ---------------------------------------------------------------------


def test_the_metrics_certificate_expiring_within_14_days_is_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The exporter's certificate ended unannounced (Prometheus' scrapes failed, up == 0, the
    day it expired); check-config said nothing of it. Warned of as the tls transport's."""
    pair = issued(tmp_path, 10)
    path = metrics_config(tmp_path, pair)
    code, out, err = check_config(path, capsys)
    assert code == cli.EXIT_OK, err
    assert out.endswith("OK (2 plugins: udp, metrics)\n")
    assert re.fullmatch(
        rf"voipgw: warning: {re.escape(str(path))}: \[plugins\.metrics\] tls_certificate: the "
        rf"certificate in {re.escape(str(pair.certificate))} expires on {DATE} \(in 9 days\): "
        r"renew it\n",
        err,
    ), err
    later = tmp_path / "later"
    later.mkdir()
    assert check_config(metrics_config(later, issued(later, 30)), capsys)[::2] == (
        cli.EXIT_OK,
        "",
    )


def test_an_expired_metrics_certificate_is_an_error_and_run_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every scraper that verifies refuses it: check-config's error (exit 2; before, it
    passed); `voipgw run` starts with it, warning, as before."""
    pair = issued(tmp_path, 30, not_before=MONTH_AGO)
    path = metrics_config(tmp_path, pair)
    code, out, err = check_config(path, capsys)
    assert (code, out) == (cli.EXIT_USAGE, ""), err
    assert re.fullmatch(
        rf"voipgw: configuration error: {re.escape(str(path))}: \[plugins\.metrics\] "
        rf"tls_certificate: {re.escape(str(pair.certificate))}: the certificate expired on "
        rf"{DATE} \(subject CN=gateway\): scrapers will refuse it\n",
        err,
    ), err
    built(path).check()  # voipgw run


# -- read_files() entries ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "entry",
    [
        ("[gateway] state_dir", "tls/crls/*.crl", "a fetched CRL", "warning"),
        ("[gateway] state_dir", "tls/crls/*.crl", "a fetched CRL", "warn", "warn"),
    ],
    ids=["another fourth element", "five elements"],
)
def test_a_read_files_entry_of_another_shape_is_the_plugins_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, entry: tuple[str, ...]
) -> None:
    from gateway.core.plugins import PluginError
    from gateway.plugins.transports.tls import TlsConfig

    monkeypatch.setattr(TlsConfig, "read_files", lambda self: [entry])
    path = tls_config(tmp_path, issued(tmp_path, 30), '"udp:127.0.0.1:0", "tls:127.0.0.1:0"')
    with pytest.raises(PluginError) as raised:
        built(path).check()
    assert str(raised.value) == (
        f"plugin 'tls': read_files() gives {entry!r}: expected (KEY, PATH, WHAT), or with "
        "'warn' as a fourth element"
    )
