"""The ``intercept`` tap's certificates on SIGHUP (``Interception.reload_certificates``): the
X1 server's, the delivery links' and the reports' contexts are swapped all together or not at
all, and the core's reload (gateway/core/reload.py) neither counts nor names the tap. Also what
``voipgw check-config --intercept`` says of them (``Interception.certificate_report``)."""

from __future__ import annotations

import datetime
import logging
import shutil
import uuid
from pathlib import Path

import pytest
from cryptography import x509

import gateway.plugins.taps.intercept as intercept_plugin
from gateway.core.config import from_mapping
from gateway.core.interfaces import ReloadError
from gateway.core.plugins import Plugins, load_plugins
from gateway.core.reload import CertificateReloads
from gateway.plugins.taps.intercept.delivery import DeliveryLink
from gateway.plugins.taps.intercept.tasks import Destination
from gateway.plugins.taps.intercept.x1_server import X1Server
from gateway.plugins.transports.certificates import _utc
from tests.interop.harness.pki import Issued, TestCa, TestPki


@pytest.fixture
def ca(tmp_path: Path) -> TestCa:
    return TestPki(tmp_path / "pki").ca("LI CA")


@pytest.fixture
def live(tmp_path: Path, ca: TestCa) -> Path:
    """The files the table names, as a deploy hook replaces them: X1 (also the reports') and
    delivery."""
    directory = tmp_path / "live"
    directory.mkdir()
    install(ca.issue("x1-a"), directory, "x1")
    install(ca.issue("delivery-a"), directory, "delivery")
    shutil.copyfile(ca.certificate, directory / "ca.pem")
    return directory


def install(issued: Issued, directory: Path, name: str, *, key_of: Issued | None = None) -> None:
    shutil.copyfile(issued.certificate, directory / f"{name}.crt")
    shutil.copyfile((key_of or issued).key, directory / f"{name}.key")


def load(live: Path, tmp_path: Path) -> Plugins:
    table = {
        "x1_certificate": str(live / "x1.crt"),
        "x1_private_key": str(live / "x1.key"),
        "x1_ca": str(live / "ca.pem"),
        "delivery_certificate": str(live / "delivery.crt"),
        "delivery_private_key": str(live / "delivery.key"),
        "delivery_ca": str(live / "ca.pem"),
        "report_url": "https://127.0.0.1:8444/X1",
        "admf_identifiers": ["admf-1"],
        "state_dir": str(tmp_path / "state"),
    }
    config = from_mapping({"plugins": {"enable": ["intercept"], "intercept": table}})
    return load_plugins(config, extra=[("intercept", intercept_plugin)], installed={})


def running_tap(plugins: Plugins) -> intercept_plugin.Interception:
    """The tap as run() leaves it: an X1 server and a delivery link (neither serving here)."""
    tap = plugins.media_taps.get("intercept")
    assert isinstance(tap, intercept_plugin.Interception)
    tap.x1_server = X1Server(tap.contexts.x1, lambda body: body, server="voipgw")
    tap._delivery_context = tap.contexts.delivery
    destination = Destination(uuid.uuid4(), ("127.0.0.1", 1))
    tap.links[destination.did] = DeliveryLink(
        destination,
        ssl_context=tap.contexts.delivery,
        queue=10,
        keepalive_interval=30.0,
        version=5,
    )
    return tap


def in_use(tap: intercept_plugin.Interception) -> tuple[object, ...]:
    """Every context new connections would take."""
    assert tap.x1_server is not None and tap.reports is not None
    return (
        tap.x1_server.ssl_context,
        tap._delivery_context,
        *(link.ssl_context for link in tap.links.values()),
        tap.reports.ssl_context,
    )


def test_a_reload_swaps_every_context_for_new_connections(
    live: Path, tmp_path: Path, ca: TestCa
) -> None:
    tap = running_tap(load(live, tmp_path))
    before = in_use(tap)
    # From start-up on, each connection takes the context read with the others (the reports
    # too: not one read separately), which is what loaded_certificates() describes.
    assert before == (
        tap.contexts.x1,
        tap.contexts.delivery,
        tap.contexts.delivery,
        tap.contexts.report,
    )
    x1_b, delivery_b = ca.issue("x1-b"), ca.issue("delivery-b")
    install(x1_b, live, "x1")
    install(delivery_b, live, "delivery")

    loaded = tap.reload_certificates()

    # The reports' files default to X1's: that file once.
    assert [(c.path, c.sha256_fingerprint) for c in loaded] == [
        (str(live / "x1.crt"), x1_b.fingerprint),
        (str(live / "delivery.crt"), delivery_b.fingerprint),
    ]
    assert tap.loaded_certificates() == loaded
    x1, delivery, link, report = in_use(tap)
    assert x1 is tap.contexts.x1 and x1 is not before[0]
    assert delivery is link is tap.contexts.delivery and delivery is not before[1]
    assert report is tap.contexts.report and report is not before[3]


@pytest.mark.parametrize("broken", ["key_mismatch", "not_pem", "missing", "expired"])
def test_a_bad_replacement_of_any_file_changes_nothing(
    live: Path, tmp_path: Path, ca: TestCa, broken: str
) -> None:
    tap = running_tap(load(live, tmp_path))
    before, loaded_before = in_use(tap), tap.loaded_certificates()
    install(ca.issue("x1-b"), live, "x1")  # a good X1 pair: all or nothing
    if broken == "key_mismatch":
        install(ca.issue("delivery-b"), live, "delivery", key_of=ca.issue("other"))
        reason = "delivery_private_key: cannot be loaded with delivery_certificate"
    elif broken == "not_pem":
        (live / "delivery.crt").write_text("not a certificate\n")
        reason = "delivery_certificate: cannot be loaded"
    elif broken == "missing":
        (live / "delivery.key").unlink()
        reason = f"delivery_private_key: no such file: {live / 'delivery.key'}"
    else:
        past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=10)
        install(ca.issue("delivery-b", days=5, not_before=past), live, "delivery")
        reason = f"delivery_certificate: {live / 'delivery.crt'}: the certificate expired on "

    with pytest.raises(ReloadError) as refused:
        tap.reload_certificates()

    assert reason in str(refused.value)
    assert "PRIVATE KEY" not in str(refused.value)
    after = in_use(tap)
    assert all(new is old for new, old in zip(after, before, strict=True))
    assert tap.loaded_certificates() == loaded_before


def test_the_core_reloads_the_tap_but_never_counts_or_names_it(
    live: Path, tmp_path: Path, ca: TestCa, caplog: pytest.LogCaptureFixture
) -> None:
    plugins = load(live, tmp_path)
    tap = running_tap(plugins)
    reloads = CertificateReloads(plugins)
    caplog.set_level(logging.INFO)
    x1_b = ca.issue("x1-b")
    install(x1_b, live, "x1")

    assert reloads.reload() == []  # no report of it goes back to the core
    install(x1_b, live, "x1", key_of=ca.issue("other"))
    assert reloads.reload() == []

    assert tap.loaded_certificates()[0].sha256_fingerprint == x1_b.fingerprint
    assert reloads.plugins == [] and reloads.statistics() == () and reloads.certificates() == ()
    core = [r.getMessage() for r in caplog.records if r.name == "gateway.core.reload"]
    assert core == [
        "reload: no enabled plugin holds certificates; nothing to do",
        "reload: no enabled plugin holds certificates; nothing to do",
    ]
    own = [
        (r.levelname, r.getMessage())
        for r in caplog.records
        if r.name == "gateway.plugins.taps.intercept"
    ]
    assert (
        "INFO",
        f"reload: intercept loaded {live / 'x1.crt'}: subject CN=x1-b, sha256 {x1_b.fingerprint}"
        f", not after {x1_b.x509.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC",
    ) in own
    assert any(
        level == "ERROR"
        and message.startswith(
            "reload: intercept kept its previous certificates: x1_private_key: cannot be loaded"
            " with x1_certificate"
        )
        for level, message in own
    ), own


@pytest.mark.parametrize("when", ["expired", "not_yet_valid"])
@pytest.mark.parametrize("name", ["x1", "delivery"])
def test_start_up_runs_with_a_certificate_out_of_its_validity_period_and_says_so_covertly(
    live: Path,
    tmp_path: Path,
    ca: TestCa,
    caplog: pytest.LogCaptureFixture,
    when: str,
    name: str,
) -> None:
    """The same checks as a reload (``InterceptConfig.contexts``), but start-up has nothing to
    keep: it runs with the certificate (an LI certificate never stops the calls) and says so
    on the plugin's logger only, naming the table, the key and the file; a reload with the
    file unchanged is refused, a renewed one is taken."""
    now = datetime.datetime.now(datetime.UTC)
    if when == "expired":
        install(
            ca.issue(f"{name}-old", days=5, not_before=now - datetime.timedelta(days=10)),
            live,
            name,
        )
        why = "the certificate expired on "
    else:
        install(
            ca.issue(f"{name}-new", days=30, not_before=now + datetime.timedelta(days=2)),
            live,
            name,
        )
        why = "the certificate is not valid before "
    caplog.set_level(logging.INFO)

    tap = running_tap(load(live, tmp_path))  # no config error
    tap._report_invalid_certificates()  # what run() says first

    # The reports' certificate is X1's file (report_* default to x1_*): that file once.
    keys = "x1_certificate, report_certificate" if name == "x1" else "delivery_certificate"
    (problem,) = tap.contexts.invalid
    assert problem.startswith(f"{keys}: {live / f'{name}.crt'}: {why}")
    records = [(r.name, r.levelname, r.getMessage()) for r in caplog.records]
    assert records == [
        (
            "gateway.plugins.taps.intercept",
            "ERROR",
            f"intercept: [plugins.intercept] {problem}: started with it all the same (calls are"
            " not stopped for it); its peers refuse it until a valid one is loaded: renew the"
            " file and send SIGHUP",
        )
    ]
    assert "PRIVATE KEY" not in caplog.text

    before = in_use(tap)
    with pytest.raises(ReloadError, match=f"^{keys}: "):
        tap.reload_certificates()
    assert all(new is old for new, old in zip(in_use(tap), before, strict=True))
    renewed = ca.issue(f"{name}-renewed")
    install(renewed, live, name)
    loaded = tap.reload_certificates()
    assert renewed.fingerprint in [c.sha256_fingerprint for c in loaded]
    assert tap.contexts.invalid == ()


def test_start_up_with_valid_certificates_says_nothing_of_them(
    live: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    tap = running_tap(load(live, tmp_path))
    tap._report_invalid_certificates()
    assert tap.contexts.invalid == () and caplog.records == []


def test_check_config_intercept_says_each_certificates_validity_and_warns_of_the_end(
    live: Path, tmp_path: Path, ca: TestCa
) -> None:
    """``voipgw check-config --intercept`` (``Interception.certificate_report``): one line per
    file the table names, with its keys; a warning for one out of its validity period or
    expiring within 30 days, none for one valid longer."""
    now = datetime.datetime.now(datetime.UTC)
    expired = ca.issue("x1-old", days=5, not_before=now - datetime.timedelta(days=10))
    install(expired, live, "x1")
    soon = ca.issue("delivery-soon", days=20, not_before=now - datetime.timedelta(days=1))
    install(soon, live, "delivery")
    tap = running_tap(load(live, tmp_path))
    at = now.timestamp()

    (x1, delivery) = tap.certificate_report(now=at)

    assert x1[0] is True
    assert x1[1].startswith(
        f"[plugins.intercept] x1_certificate, report_certificate: {live / 'x1.crt'}: the "
        "certificate expired on "
    )
    assert x1[1].endswith(f"(subject {expired.subject}): renew it, then SIGHUP")
    assert delivery == (
        True,
        f"[plugins.intercept] delivery_certificate: {live / 'delivery.crt'}: expires on "
        f"{not_after(soon)}, in 19 day(s) (subject {soon.subject}): "
        "renew it, then SIGHUP",
    )
    # 19 days left: no warning with a shorter notice; and none once renewed for longer.
    assert tap.certificate_report(now=at, within=18 * 86_400)[1][0] is False
    renewed = ca.issue("x1-renewed", days=200)
    install(renewed, live, "x1")
    tap.reload_certificates()
    (x1, _) = tap.certificate_report(now=at)
    assert x1 == (
        False,
        f"[plugins.intercept] x1_certificate, report_certificate: {live / 'x1.crt'}: valid "
        f"until {not_after(renewed)}, 200 days left (subject "
        f"{renewed.subject})",
    )


def not_after(issued: Issued) -> str:
    """When ``issued``'s certificate expires, as the lines say it."""
    certificate = x509.load_pem_x509_certificate(issued.certificate.read_bytes())
    return _utc(certificate.not_valid_after_utc.timestamp())
