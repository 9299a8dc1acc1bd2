"""A real ``voipgw run`` whose metrics exporter has TLS, client certificates and basic auth,
scraped as Prometheus' ``scheme: https``, ``tls_config`` and ``basic_auth`` would: with curl
(``--cacert``, ``--cert``, ``-u``) over 127.0.0.1, the body read by ``prometheus_client``'s
parser. The password hash comes from ``voipgw metrics-password``; ``openssl s_client`` shows
that TLS 1.0 and 1.1 are refused; ``check-config`` names a key that does not match.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from tests.integration.prometheus_scrape import curl, parser, value
from tests.integration.voipgw_process import voipgw_running
from tests.interop.harness.openssl import s_client
from tests.interop.harness.pki import Issued, TestCa, TestPki
from tests.port_blocks import PortLease

READY = re.compile(r"metrics: Prometheus exposition on https://127\.0\.0\.1:(\d+)/metrics")
SIP_READY = re.compile("voipgw ready")
PASSWORD = "correct horse battery staple"


def voipgw(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


@attrs.frozen
class Pki:
    ca: TestCa
    server: Issued
    client_ca: TestCa
    client: Issued


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    pki = TestPki(tmp_path / "pki")
    ca, client_ca = pki.ca("Metrics server CA"), pki.ca("Prometheus clients CA")
    return Pki(ca, ca.issue("gateway", hosts=["127.0.0.1"]), client_ca, client_ca.issue("prom"))


def write_config(
    tmp_path: Path, pki: Pki, password_hash: str, lease: PortLease, *, key: Path | None = None
) -> Path:
    path = tmp_path / "voipgw.toml"
    path.write_text(
        f'[gateway]\nstate_dir = "{tmp_path / "state"}"\n'
        '[sip]\nlisten = ["udp:127.0.0.1:0"]\n'
        '[media]\naddress = "127.0.0.1"\n'
        f'ports = "{lease.text(20)}"\n'
        '[plugins]\nenable = ["udp", "metrics"]\n'
        "[plugins.metrics]\n"
        'listen = "127.0.0.1:0"\n'
        f'tls_certificate = "{pki.server.certificate}"\n'
        f'tls_private_key = "{key or pki.server.key}"\n'
        f'tls_client_ca = "{pki.client_ca.certificate}"\n'
        f'basic_auth_users = {{ prometheus = "{password_hash}" }}\n'
    )
    return path


@pytest.fixture
def password_hash() -> str:
    made = voipgw("metrics-password", stdin=PASSWORD + "\n")
    assert made.returncode == 0, made.stderr
    assert PASSWORD not in made.stdout
    return made.stdout.strip()


@pytest.fixture
def gateway(
    port_lease: PortLease, tmp_path: Path, pki: Pki, password_hash: str
) -> Iterator[tuple[int, Path]]:
    """A running gateway: (its metrics port, its log file)."""
    config = write_config(tmp_path, pki, password_hash, port_lease)
    checked = voipgw("check-config", str(config))
    assert checked.returncode == 0, checked.stderr
    log = tmp_path / "voipgw.log"
    with voipgw_running(config, log, [READY, SIP_READY]) as (_, (ready, _)):
        yield int(ready[1]), log
    text = log.read_text()
    assert PASSWORD not in text and password_hash.split("$")[-1] not in text
    assert "PRIVATE KEY" not in text


def status_of(*args: str) -> str:
    """The HTTP status curl got (000: no HTTP answer at all)."""
    return curl("--output", "/dev/null", "--write-out", "%{http_code}", *args).stdout


def test_prometheus_style_scrapes_need_the_ca_a_client_certificate_and_the_password(
    tmp_path: Path, pki: Pki, gateway: tuple[int, Path]
) -> None:
    port, log = gateway
    assert "readable by group or others" not in log.read_text()  # the test PKI's key is 0600
    url = f"https://127.0.0.1:{port}/metrics"
    trust = ("--cacert", str(pki.ca.certificate))
    client = ("--cert", str(pki.client.certificate), "--key", str(pki.client.key))

    scrape = curl("--fail", "--include", *trust, *client, "-u", f"prometheus:{PASSWORD}", url)
    assert scrape.returncode == 0, scrape.stderr
    head, _, body = scrape.stdout.replace("\r\n", "\n").partition("\n\n")
    assert head.startswith("HTTP/1.1 200")
    assert "content-type: text/plain; version=0.0.4; charset=utf-8" in head.lower()
    found = {f.name: f for f in parser().text_string_to_metric_families(body)}  # type: ignore[attr-defined]
    assert found["voipgw_calls_started"].type == "counter"  # type: ignore[attr-defined]

    # Without the password, or with a wrong one: 401 and the challenge, nothing else.
    refused = curl("--include", *trust, *client, url)
    assert refused.stdout.startswith("HTTP/1.1 401"), refused.stdout
    assert 'www-authenticate: Basic realm="voipgw metrics"' in refused.stdout
    assert "voipgw_" not in refused.stdout
    assert status_of(*trust, *client, "-u", "prometheus:wrong", url) == "401"
    assert status_of(*trust, *client, "-u", f"grafana:{PASSWORD}", url) == "401"
    assert status_of(*trust, *client, f"https://127.0.0.1:{port}/other") == "401"

    # Without a client certificate, or with one its CA did not issue: no HTTP at all.
    stranger = pki.ca.issue("stranger")
    other = ("--cert", str(stranger.certificate), "--key", str(stranger.key))
    for certificate in ((), other):
        result = curl("--include", *trust, *certificate, "-u", f"prometheus:{PASSWORD}", url)
        assert result.returncode != 0 and "HTTP/" not in result.stdout, result
    # Plain HTTP on the TLS port, and a client that does not trust the server's CA.
    assert status_of(f"http://127.0.0.1:{port}/metrics") == "000"
    assert status_of("--cacert", str(pki.client_ca.certificate), *client, url) == "000"

    # TLS 1.0 and 1.1 are refused by the gateway (SECLEVEL=0 lets this client offer them).
    for version in ("-tls1", "-tls1_1"):
        old = s_client(
            f"127.0.0.1:{port}",
            workdir=tmp_path,
            certificate=pki.client,
            args=[version, "-cipher", "DEFAULT@SECLEVEL=0"],
        )
        assert not old.handshake_ok, old.describe()
    modern = s_client(f"127.0.0.1:{port}", workdir=tmp_path, certificate=pki.client)
    assert modern.handshake_ok, modern.describe()
    assert re.search(r"Protocol\s*:\s*TLSv1\.[23]|New, TLSv1\.3", modern.output), modern.output

    # The failures are counted, by reason, in the exposition.
    again = curl("--fail", *trust, *client, "-u", f"prometheus:{PASSWORD}", url)
    assert again.returncode == 0, again.stderr
    after = {f.name: f for f in parser().text_string_to_metric_families(again.stdout)}  # type: ignore[attr-defined]
    failures = "voipgw_metrics_auth_failures"
    assert value(after, failures, f"{failures}_total", reason="missing") == 2
    assert value(after, failures, f"{failures}_total", reason="invalid") == 2
    assert value(after, failures, f"{failures}_total", reason="malformed") == 0
    handshakes = "voipgw_metrics_tls_handshake_failures"
    # No certificate, a stranger's, plain HTTP, a client that distrusts us, TLS 1.0, TLS 1.1.
    assert value(after, handshakes, f"{handshakes}_total") == 6
    text = log.read_text()
    assert "metrics: refused a scrape from 127.0.0.1:" in text
    assert "metrics: TLS handshake from 127.0.0.1:" in text
    assert "unsupported protocol" in text


def test_check_config_names_the_key_that_does_not_match_without_its_bytes(
    port_lease: PortLease, tmp_path: Path, pki: Pki
) -> None:
    other = pki.ca.issue("other")
    config = write_config(
        tmp_path,
        pki,
        voipgw("metrics-password", stdin="x\n").stdout.strip(),
        port_lease,
        key=other.key,
    )
    result = voipgw("check-config", str(config))
    assert result.returncode == 2
    assert (
        f"configuration error: {config}: [plugins.metrics] tls_private_key: {other.key}: "
        f"not the private key of {pki.server.certificate} (key values mismatch)"
    ) in result.stderr
    assert "PRIVATE KEY" not in result.stderr and "Traceback" not in result.stderr


def test_check_config_names_the_user_whose_hash_is_not_one(
    port_lease: PortLease, tmp_path: Path, pki: Pki
) -> None:
    config = write_config(tmp_path, pki, "plain-text-password", port_lease)
    result = voipgw("check-config", str(config))
    assert result.returncode == 2
    assert "[plugins.metrics] basic_auth_users: user 'prometheus': expected scrypt$" in (
        result.stderr
    )
    assert "plain-text-password" not in result.stderr


@pytest.fixture
def key_open_to_group(pki: Pki) -> None:
    pki.server.key.chmod(0o640)  # made 0600 by the test PKI


def test_a_private_key_others_may_read_is_warned_of(
    key_open_to_group: None, gateway: tuple[int, Path]
) -> None:
    """As the SIP tls transport warns of its own key: the start-up log says so."""
    _, log = gateway
    assert re.search(
        r"metrics: private key \S+ is readable by group or others \(mode 640\); chmod 600 it",
        log.read_text(),
    )
