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

import contextlib
import datetime
import hashlib
import http.client
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from tests.integration.prometheus_scrape import curl
from tests.integration.voipgw_process import voipgw_running
from tests.interop.harness.pki import Issued, TestCa, TestPki
from tests.unit.taps.x1_structure import XSI
from tests.unit.taps.x1_structure import C as COMMON
from tests.unit.taps.x1_structure import X as NS

X1_READY = re.compile(r"intercept: X1 listening on 127\.0\.0\.1:(\d+)")
METRICS_READY = re.compile(r"metrics: Prometheus exposition on http://127\.0\.0\.1:(\d+)/metrics")
OWN_LOGGER = "gateway.plugins.taps.intercept"
LINE = re.compile(r"^\S+ \S+ (?P<level>[A-Z]+) (?P<logger>[\w.]+): ")


@attrs.frozen
class Pki:
    ca: TestCa
    issued: dict[str, Issued]


@attrs.frozen
class Running:
    process: subprocess.Popen[bytes]
    log: Path
    x1: int
    metrics: int

    def text(self) -> str:
        return self.log.read_text()

    def reload(self) -> str:
        """SIGHUP, then the log of that reload once the tap and the ``tls`` transport have
        answered (in either order)."""
        before = self.text()
        marks = ("reload: tls ", "reload: intercept ")
        counts = [before.count(mark) for mark in marks]
        self.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while any(self.text().count(m) == n for m, n in zip(marks, counts, strict=True)):
            assert self.process.poll() is None, self.text()
            assert time.monotonic() < deadline, f"no reload logged:\n{self.text()}"
            time.sleep(0.05)
        return self.text()[len(before) :]


def install(issued: Issued, certificate: Path, key: Path, *, key_of: Issued | None = None) -> None:
    shutil.copyfile(issued.certificate, certificate)
    shutil.copyfile((key_of or issued).key, key)
    key.chmod(0o600)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca = TestPki(tmp_path / "pki").ca("LI CA")
    names = ("x1-a", "x1-b", "sip-a", "sip-b", "delivery", "admf-1", "admf-2")
    return Pki(ca, {name: ca.issue(name, hosts=["127.0.0.1"]) for name in names})


@pytest.fixture
def live(tmp_path: Path, pki: Pki) -> Path:
    directory = tmp_path / "live"
    directory.mkdir()
    install(pki.issued["x1-a"], directory / "x1.crt", directory / "x1.key")
    install(pki.issued["sip-a"], directory / "sip.crt", directory / "sip.key")
    return directory


@pytest.fixture
def running(tmp_path: Path, pki: Pki, live: Path) -> Iterator[Running]:
    with gateway(tmp_path, pki, live) as started:
        yield started


@contextlib.contextmanager
def gateway(tmp_path: Path, pki: Pki, live: Path, intercept: str = "") -> Iterator[Running]:
    """``voipgw run`` with the SIP ``tls`` transport, the metrics exporter and the tap, whose
    X1 files are ``live``'s; ``intercept``: more lines of its table."""
    delivery = pki.issued["delivery"]
    config = tmp_path / "voipgw.toml"
    config.write_text(
        f'[gateway]\nstate_dir = "{tmp_path / "state"}"\nlog_level = "info"\n'
        '[sip]\nlisten = ["udp:127.0.0.1:0", "tls:127.0.0.1:0"]\n'
        '[plugins]\nenable = ["udp", "tls", "metrics", "intercept"]\n'
        f'[plugins.tls]\ncertificate = "{live / "sip.crt"}"\nprivate_key = "{live / "sip.key"}"\n'
        '[plugins.metrics]\nlisten = "127.0.0.1:0"\n'
        "[plugins.intercept]\n"
        'x1_listen = "127.0.0.1:0"\n'
        f'x1_certificate = "{live / "x1.crt"}"\n'
        f'x1_private_key = "{live / "x1.key"}"\n'
        f'x1_ca = "{pki.ca.certificate}"\n'
        'ne_identifier = "gw-int"\n'
        f'delivery_certificate = "{delivery.certificate}"\n'
        f'delivery_private_key = "{delivery.key}"\n'
        f'delivery_ca = "{pki.ca.certificate}"\n' + intercept
    )
    log = tmp_path / "voipgw.log"
    with voipgw_running(config, log, [X1_READY, METRICS_READY]) as (process, (x1, metrics)):
        yield Running(process, log, int(x1[1]), int(metrics[1]))


def admf_context(pki: Pki, client: str = "admf-1") -> ssl.SSLContext:
    """The ADMF's side of X1: its client certificate (``client``'s), trusting only the LI CA."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=pki.ca.certificate)
    admf = pki.issued[client]
    context.load_cert_chain(admf.certificate, admf.key)
    return context


def ping_document(admf: str = "admf-1", ne: str = "gw-int") -> bytes:
    return (
        f'<X1Request xmlns="{NS}" xmlns:c="{COMMON}" xmlns:xsi="{XSI}">'
        f'<x1RequestMessage xsi:type="PingRequest"><admfIdentifier>{admf}</admfIdentifier>'
        f"<neIdentifier>{ne}</neIdentifier>"
        "<messageTimestamp>2026-11-30T00:00:00.000000Z</messageTimestamp>"
        f"<version>v1.23.1</version><x1TransactionId>{uuid.uuid4()}</x1TransactionId>"
        "</x1RequestMessage></X1Request>"
    ).encode()


def x1_ping(
    pki: Pki, port: int, *, admf: str = "admf-1", client: str = "admf-1", ne: str = "gw-int"
) -> tuple[str, str]:
    """A new X1 connection with ``client``'s certificate: the SHA-256 fingerprint of the
    certificate it got, and the answer to a Ping for ``admf`` to NE ``ne`` sent over it."""
    body = ping_document(admf, ne)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as tcp,
        admf_context(pki, client).wrap_socket(tcp, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        tls.sendall(
            b"POST /X1 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/xml\r\n"
            b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        )
        answer = b""
        while chunk := tls.recv(65536):
            answer += chunk
    return hashlib.sha256(der).hexdigest(), answer.decode(errors="replace")


class KeptAlive:
    """An ADMF's X1 connection kept open across reloads (HTTP/1.1 keep-alive)."""

    def __init__(self, pki: Pki, port: int) -> None:
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


def telling(pki: Pki, live: Path) -> list[str]:
    """What would give the interception away: its name, its files, its certificates."""
    x1 = [pki.issued[name] for name in ("x1-a", "x1-b", "delivery")]
    words = ["intercept", "x1_", str(live / "x1.crt"), str(live / "x1.key")]
    return words + [issued.fingerprint for issued in x1] + [issued.name for issued in x1]


def ordinary(lines: str) -> list[str]:
    """Log lines of every logger but the plugin's own (continuations belong to their line)."""
    kept: list[str] = []
    own = False
    for line in lines.splitlines():
        found = LINE.match(line)
        if found is not None:
            own = found["logger"] == OWN_LOGGER or found["logger"].startswith(OWN_LOGGER + ".")
        if not own:
            kept.append(line)
    return kept


def own(lines: str) -> list[str]:
    return [line for line in lines.splitlines() if f" {OWN_LOGGER}: " in line]


def test_sighup_reloads_li_certificates_and_neither_metrics_nor_the_ordinary_log_tell(
    running: Running,
    pki: Pki,
    live: Path,
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
        "x1_certificate, x1_private_key, x1_ca: cannot be loaded" in line
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
    tmp_path: Path, pki: Pki, live: Path
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
