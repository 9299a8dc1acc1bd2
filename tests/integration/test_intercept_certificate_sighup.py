"""The ``intercept`` tap's X1 certificate reloaded by SIGHUP in a real ``voipgw run``, covertly:
the SIP ``tls`` transport and the metrics exporter (plain HTTP) run beside it on 127.0.0.1.

1. A new X1 connection (the ADMF's client certificate) gets certificate A.
2. B is copied over A's files, SIGHUP: a new X1 connection gets B and a Ping is answered over
   it; an X1 connection made on A before answers on; the plugin's own logger says what it
   loaded.
3. B's certificate with A's key (a broken deploy), SIGHUP: the plugin's logger says it kept its
   certificates, naming the keys; new X1 connections still get B.
4. Neither the metrics exposition nor any log line of another logger names the interception
   (the plugin, its files, its certificates), while they do show the ``tls`` transport's
   reloads: the reload of a tap nobody may know about looks like none. (The test's name has
   no "x1": pytest puts it in the paths, and the log lines with paths are searched for it.)
"""

from __future__ import annotations

import datetime
import hashlib
import http.client
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.prometheus_scrape import curl
from tests.integration.x1_certificates import (
    LINE,
    OWN_LOGGER,
    Pki,
    Running,
    admf_context,
    gateway,
    install,
    live,  # noqa: F401 (the fixture)
    ordinary,
    own,
    ping_document,
    pki,  # noqa: F401 (the fixture)
    x1_ping,
)


@pytest.fixture
def running(tmp_path: Path, pki: Pki, live: Path) -> Iterator[Running]:  # noqa: F811
    with gateway(tmp_path, pki, live) as started:
        yield started


class KeptAlive:
    """An ADMF's X1 connection kept open across reloads (HTTP/1.1 keep-alive)."""

    def __init__(self, pki: Pki, port: int) -> None:  # noqa: F811
        self.connection = http.client.HTTPSConnection(
            "127.0.0.1", port, context=admf_context(pki), timeout=10
        )
        self.connection.connect()
        assert self.connection.sock is not None
        der = self.connection.sock.getpeercert(binary_form=True)  # type: ignore[attr-defined]
        self.fingerprint = hashlib.sha256(der or b"").hexdigest()
        self.socket = self.connection.sock

    def ping(self) -> str:
        self.connection.request("POST", "/X1", ping_document(), {"Content-Type": "application/xml"})
        answer = self.connection.getresponse()
        text = answer.read().decode()
        assert self.connection.sock is self.socket  # the same connection, not a new one
        assert answer.status == 200 and "PingResponse" in text, text
        return text


def telling(pki: Pki, live: Path) -> list[str]:  # noqa: F811
    """What would give the interception away: its name, its files, its certificates."""
    x1 = [pki.issued[name] for name in ("x1-a", "x1-b", "delivery")]
    words = ["intercept", "x1_", str(live / "x1.crt"), str(live / "x1.key")]
    return words + [issued.fingerprint for issued in x1] + [issued.name for issued in x1]


def test_sighup_reloads_li_certificates_and_neither_metrics_nor_the_ordinary_log_tell(
    running: Running,
    pki: Pki,  # noqa: F811
    live: Path,  # noqa: F811
) -> None:
    x1_a, x1_b = pki.issued["x1-a"], pki.issued["x1-b"]
    sip_b = pki.issued["sip-b"]
    startup = running.text()
    assert LINE.match(startup.splitlines()[0]), startup  # the format ordinary() reads

    # 1. A.
    fingerprint, answer = x1_ping(pki, running.x1)
    assert fingerprint == x1_a.fingerprint
    assert answer.startswith("HTTP/1.1 200 ") and "PingResponse" in answer, answer
    kept = KeptAlive(pki, running.x1)
    assert kept.fingerprint == x1_a.fingerprint
    kept.ping()

    # 2. B over A (and over the SIP transport's files: its reload is the ordinary one).
    install(x1_b, live / "x1.crt", live / "x1.key")
    install(sip_b, live / "sip.crt", live / "sip.key")
    lines = running.reload()
    assert any(
        f"INFO {OWN_LOGGER}: reload: intercept loaded {live / 'x1.crt'}: subject CN=x1-b, "
        f"sha256 {x1_b.fingerprint}, not after " in line
        for line in own(lines)
    ), lines
    assert any(
        f"gateway.core.reload: reload: tls loaded {live / 'sip.crt'}: subject CN=sip-b" in line
        for line in ordinary(lines)
    ), lines
    fingerprint, answer = x1_ping(pki, running.x1)
    assert fingerprint == x1_b.fingerprint
    assert answer.startswith("HTTP/1.1 200 ") and "PingResponse" in answer, answer
    kept.ping()  # the connection made on A goes on
    first = lines

    # 3. A broken deploy: A's certificate with B's key.
    install(x1_a, live / "x1.crt", live / "x1.key", key_of=x1_b)
    lines = running.reload()
    assert any(
        f"ERROR {OWN_LOGGER}: reload: intercept kept its previous certificates: "
        "x1_private_key: cannot be loaded with x1_certificate" in line
        for line in own(lines)
    ), lines
    assert "reload: intercept loaded" not in lines, lines
    assert running.process.poll() is None
    fingerprint, answer = x1_ping(pki, running.x1)
    assert fingerprint == x1_b.fingerprint
    assert answer.startswith("HTTP/1.1 200 ") and "PingResponse" in answer, answer
    kept.ping()
    kept.connection.close()

    # 4. Nothing else tells: not the metrics ...
    scrape = curl("--fail", f"http://127.0.0.1:{running.metrics}/metrics")
    assert scrape.returncode == 0, scrape.stderr
    exposition = scrape.stdout
    assert 'voipgw_certificate_reloads_total{plugin="tls",outcome="reloaded"} 2' in exposition, (
        exposition
    )
    assert 'voipgw_tls_certificate_expiry_time_seconds{plugin="tls"}' in exposition, exposition
    assert "plugin=" in exposition
    for word in telling(pki, live):
        assert word not in exposition, word
    # ... nor any other logger's line of either reload.
    reloads = ordinary(first) + ordinary(lines)
    assert any("received SIGHUP: reloading certificates" in line for line in reloads), reloads
    for line in reloads:
        for word in telling(pki, live):
            assert word not in line.lower(), line
    assert "PRIVATE KEY" not in running.text()


def test_start_up_with_an_expired_li_certificate_serves_calls_and_tells_only_the_plugin_log(
    tmp_path: Path,
    pki: Pki,  # noqa: F811
    live: Path,  # noqa: F811
) -> None:
    """Start-up checks what a reload checks, but an LI certificate out of its validity period
    does not stop the gateway (docs/lawful_intercept.md): it starts, SIP and the metrics are
    served, the plugin's own logger says which key and file, nothing else tells; the ADMF's
    TLS refuses the expired X1 certificate until a renewed one is loaded by SIGHUP."""
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=10)
    expired = pki.ca.issue("x1-old", hosts=["127.0.0.1"], days=5, not_before=past)
    install(expired, live / "x1.crt", live / "x1.key")
    with gateway(tmp_path, pki, live) as running:
        startup = running.text()
        assert any(
            f"ERROR {OWN_LOGGER}: intercept: [plugins.intercept] x1_certificate: "
            f"{live / 'x1.crt'}: the certificate expired on "
            in line
            and "started with it all the same" in line
            for line in own(startup)
        ), startup
        for line in ordinary(startup):
            for word in [*telling(pki, live), expired.fingerprint, "x1-old"]:
                assert word not in line.lower(), line
        # The gateway runs and serves (here: its metrics exporter).
        scrape = curl("--fail", f"http://127.0.0.1:{running.metrics}/metrics")
        assert scrape.returncode == 0, scrape.stderr
        assert "intercept" not in scrape.stdout and expired.fingerprint not in scrape.stdout
        # The ADMF refuses the expired certificate: X1 is out until the renewal.
        with pytest.raises(ssl.SSLCertVerificationError, match="expired"):
            x1_ping(pki, running.x1)

        install(pki.issued["x1-b"], live / "x1.crt", live / "x1.key")
        lines = running.reload()
        assert any(
            f"INFO {OWN_LOGGER}: reload: intercept loaded {live / 'x1.crt'}: subject CN=x1-b"
            in line
            for line in own(lines)
        ), lines
        fingerprint, answer = x1_ping(pki, running.x1)
        assert fingerprint == pki.issued["x1-b"].fingerprint
        assert answer.startswith("HTTP/1.1 200 ") and "PingResponse" in answer, answer
