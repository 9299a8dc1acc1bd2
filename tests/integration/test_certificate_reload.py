"""Certificate reload on SIGHUP in a real ``voipgw run``, as an operator's ACME deploy hook
does it (``systemctl reload voipgw``, i.e. ``kill -HUP``): the SIP ``tls`` and ``wss``
listeners and the metrics exporter's HTTPS on 127.0.0.1, port 0.

1. Every listener presents certificate A (stdlib ``ssl`` clients trusting only the test CA).
2. A SIP connection over TLS (OPTIONS answered) and a browser-like WebSocket connection with a
   registration (the ``websockets`` package) are up.
3. B is copied over A's files, SIGHUP: new connections see B, at every listener; the two
   connections made before answer on as before (OPTIONS, a registration refresh); the log says
   what was loaded and the gateway runs on.
4. B's certificate with A's key (a broken deploy), SIGHUP: the log names the key file and the
   reason for each plugin, and new connections still see B.
5. The metrics show both reloads per plugin and B's expiry; SIGTERM then stops with 0, and no
   key material was ever logged.

The config has ``drain_timeout``: SIGHUP must not start the graceful stop that SIGTERM starts.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from gateway.core.store.sqlite import SqliteStore
from tests.integration.prometheus_scrape import curl, parser, value
from tests.integration.voipgw_process import voipgw_running
from tests.interop.harness.pki import Issued, TestCa, TestPki
from tests.interop.harness.processes import children_of
from tests.interop.harness.ws_client import WsSipClient
from tests.port_blocks import PortLease

ORIGIN = "https://phone.example"
READY = re.compile(
    r"voipgw ready: udp:127\.0\.0\.1:(\d+), tls:127\.0\.0\.1:(\d+), wss:127\.0\.0\.1:(\d+)"
)
METRICS_READY = re.compile(r"metrics: Prometheus exposition on https://127\.0\.0\.1:(\d+)/metrics")


@attrs.frozen
class Files:
    """Where the config points: the files a deploy hook replaces."""

    sip_certificate: Path
    sip_key: Path
    metrics_certificate: Path
    metrics_key: Path


@attrs.frozen
class Running:
    process: subprocess.Popen[bytes]
    log: Path
    udp: int
    tls: int
    wss: int
    metrics: int

    def text(self) -> str:
        return self.log.read_text()

    def reload(self) -> str:
        """SIGHUP, then the log lines of that reload once every plugin has answered."""
        before = self.text()
        done = before.count("reload: metrics ")
        self.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while self.text().count("reload: metrics ") == done:
            assert self.process.poll() is None, self.text()
            assert time.monotonic() < deadline, f"no reload logged:\n{self.text()}"
            time.sleep(0.05)
        return self.text()[len(before) :]


def install(issued: Issued, certificate: Path, key: Path, *, key_of: Issued | None = None) -> None:
    """What a deploy hook does: copy the new pair over the files the config names."""
    shutil.copyfile(issued.certificate, certificate)
    shutil.copyfile((key_of or issued).key, key)
    key.chmod(0o600)


@pytest.fixture
def ca(tmp_path: Path) -> TestCa:
    return TestPki(tmp_path / "pki").ca("Reload Test CA")


@pytest.fixture
def certificates(ca: TestCa) -> dict[str, Issued]:
    return {
        name: ca.issue(name, hosts=["127.0.0.1"])
        for name in ("sip-a", "sip-b", "metrics-a", "metrics-b")
    }


@pytest.fixture
def files(tmp_path: Path, certificates: dict[str, Issued]) -> Files:
    live = tmp_path / "live"
    live.mkdir()
    found = Files(live / "sip.crt", live / "sip.key", live / "metrics.crt", live / "metrics.key")
    install(certificates["sip-a"], found.sip_certificate, found.sip_key)
    install(certificates["metrics-a"], found.metrics_certificate, found.metrics_key)
    return found


@pytest.fixture
def running(tmp_path: Path, files: Files, port_lease: PortLease) -> Iterator[Running]:
    state = tmp_path / "state"
    store = SqliteStore.open(state)
    store.accounts_add("alice", "wonderland", "voipgw.local")
    store.close()
    config = tmp_path / "voipgw.toml"
    config.write_text(
        f'[gateway]\nstate_dir = "{state}"\ndigest_algorithms = ["MD5"]\ndrain_timeout = 5\n'
        '[sip]\nlisten = ["udp:127.0.0.1:0", "tls:127.0.0.1:0", "wss:127.0.0.1:0"]\n'
        '[media]\naddress = "127.0.0.1"\n'
        f'ports = "{port_lease.text(20)}"\n'
        '[plugins]\nenable = ["udp", "tls", "wss", "metrics"]\n'
        f'[plugins.tls]\ncertificate = "{files.sip_certificate}"\n'
        f'private_key = "{files.sip_key}"\n'
        f'[plugins.wss]\ncertificate = "{files.sip_certificate}"\n'
        f'private_key = "{files.sip_key}"\nallowed_origins = ["{ORIGIN}"]\n'
        '[plugins.metrics]\nlisten = "127.0.0.1:0"\n'
        f'tls_certificate = "{files.metrics_certificate}"\n'
        f'tls_private_key = "{files.metrics_key}"\n'
    )
    log = tmp_path / "voipgw.log"
    with voipgw_running(config, log, [READY, METRICS_READY]) as (process, (ready, metrics)):
        udp, tls, wss = (int(port) for port in ready.groups())
        yield Running(process, log, udp, tls, wss, int(metrics[1]))


def client_context(ca: TestCa) -> ssl.SSLContext:
    """A client that trusts only the test CA and checks the name (127.0.0.1)."""
    return ssl.create_default_context(cafile=str(ca.certificate))


def presented(port: int, ca: TestCa) -> str:
    """The SHA-256 fingerprint of the certificate a new TLS connection to ``port`` gets."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as tcp,
        client_context(ca).wrap_socket(tcp, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return hashlib.sha256(der).hexdigest()


class SipOverTls:
    """One SIP connection over TLS, kept open across reloads."""

    def __init__(self, port: int, ca: TestCa) -> None:
        tcp = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.tls = client_context(ca).wrap_socket(tcp, server_hostname="127.0.0.1")
        self.fingerprint = hashlib.sha256(self.tls.getpeercert(binary_form=True) or b"").hexdigest()
        self.sent = 0

    def options(self) -> str:
        """OPTIONS over this connection; the status line of the answer."""
        self.sent += 1
        self.tls.sendall(
            (
                "OPTIONS sip:127.0.0.1 SIP/2.0\r\n"
                f"Via: SIP/2.0/TLS 127.0.0.1:5999;branch=z9hG4bKreload{self.sent};rport\r\n"
                "Max-Forwards: 70\r\n"
                "From: <sip:probe@127.0.0.1>;tag=reload\r\n"
                "To: <sip:127.0.0.1>\r\n"
                "Call-ID: reload-probe@127.0.0.1\r\n"
                f"CSeq: {self.sent} OPTIONS\r\n"
                "Content-Length: 0\r\n\r\n"
            ).encode()
        )
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = self.tls.recv(65536)
            assert chunk, "the gateway closed the connection"
            answer += chunk
        return answer.split(b"\r\n", 1)[0].decode()

    def close(self) -> None:
        self.tls.close()


def scrape(running: Running, ca: TestCa) -> dict[str, object]:
    result = curl(
        "--fail", "--cacert", str(ca.certificate), f"https://127.0.0.1:{running.metrics}/metrics"
    )
    assert result.returncode == 0, result.stderr
    return {f.name: f for f in parser().text_string_to_metric_families(result.stdout)}  # type: ignore[attr-defined]


def test_sighup_reloads_every_certificate_and_keeps_connections_and_a_bad_one_out(
    running: Running, files: Files, ca: TestCa, certificates: dict[str, Issued]
) -> None:
    sip_a, sip_b = certificates["sip-a"], certificates["sip-b"]
    metrics_a, metrics_b = certificates["metrics-a"], certificates["metrics-b"]
    startup = running.text()
    assert (
        f"tls: certificate {files.sip_certificate}: subject CN=sip-a, sha256 {sip_a.fingerprint}"
        in startup
    )
    assert f"metrics: certificate {files.metrics_certificate}: subject CN=metrics-a" in startup

    # 1. A everywhere.
    assert presented(running.tls, ca) == sip_a.fingerprint
    assert presented(running.wss, ca) == sip_a.fingerprint
    assert presented(running.metrics, ca) == metrics_a.fingerprint

    # 2. Connections that must outlive the reloads.
    sip = SipOverTls(running.tls, ca)
    assert sip.fingerprint == sip_a.fingerprint
    assert sip.options().startswith("SIP/2.0 200 ")
    browser = WsSipClient.connect(
        f"wss://127.0.0.1:{running.wss}", origin=ORIGIN, ssl_context=client_context(ca)
    )
    domain = f"127.0.0.1:{running.udp}"
    try:
        assert browser.register("alice", "wonderland", domain=domain).status == 200

        # 3. B over A, SIGHUP.
        install(sip_b, files.sip_certificate, files.sip_key)
        install(metrics_b, files.metrics_certificate, files.metrics_key)
        lines = running.reload()
        assert "received SIGHUP: reloading certificates (not the config file)" in lines
        for plugin, path, issued in (
            ("tls", files.sip_certificate, sip_b),
            ("wss", files.sip_certificate, sip_b),
            ("metrics", files.metrics_certificate, metrics_b),
        ):
            assert (
                f"reload: {plugin} loaded {path}: subject CN={issued.name}, "
                f"sha256 {issued.fingerprint}, not after "
            ) in lines, lines
        assert "ERROR" not in lines
        assert running.process.poll() is None  # SIGHUP never stops the gateway
        assert "draining" not in lines  # nor starts a graceful stop (drain_timeout is set)

        assert presented(running.tls, ca) == sip_b.fingerprint
        assert presented(running.wss, ca) == sip_b.fingerprint
        assert presented(running.metrics, ca) == metrics_b.fingerprint
        # The connections made on A go on.
        assert sip.options().startswith("SIP/2.0 200 ")
        assert browser.register("alice", "wonderland", domain=domain).status == 200

        # 4. A broken deploy: B's certificates with A's keys.
        install(sip_b, files.sip_certificate, files.sip_key, key_of=sip_a)
        install(metrics_b, files.metrics_certificate, files.metrics_key, key_of=metrics_a)
        lines = running.reload()
        for plugin, wrong in (("tls", files.sip_key), ("wss", files.sip_key)):
            assert (
                f"ERROR gateway.core.reload: reload: {plugin} kept its previous certificates: "
                f"{wrong}: not the private key of {files.sip_certificate}"
            ) in lines, lines
        assert (
            "ERROR gateway.core.reload: reload: metrics kept its previous certificates: "
            f"tls_private_key: {files.metrics_key}: not the private key of "
            f"{files.metrics_certificate}"
        ) in lines, lines
        assert " loaded " not in lines
        assert running.process.poll() is None
        assert presented(running.tls, ca) == sip_b.fingerprint
        assert presented(running.wss, ca) == sip_b.fingerprint
        assert presented(running.metrics, ca) == metrics_b.fingerprint
        assert sip.options().startswith("SIP/2.0 200 ")
        assert browser.register("alice", "wonderland", domain=domain).status == 200
    finally:
        browser.close()
        sip.close()

    # 5. What the metrics say.
    found = scrape(running, ca)
    family = "voipgw_certificate_reloads"  # prometheus_client drops the _total of the family
    sample = "voipgw_certificate_reloads_total"
    for plugin in ("tls", "wss", "metrics"):
        assert value(found, family, sample, plugin=plugin, outcome="reloaded") == 1
        assert value(found, family, sample, plugin=plugin, outcome="failed") == 1
    expiry = "voipgw_tls_certificate_expiry_time_seconds"
    assert value(found, expiry, expiry, plugin="tls") == sip_b.x509.not_valid_after_utc.timestamp()
    assert value(found, expiry, expiry, plugin="metrics") == (
        metrics_b.x509.not_valid_after_utc.timestamp()
    )
    text = running.text()
    assert "PRIVATE KEY" not in text
    for issued in certificates.values():
        for line in issued.key.read_text().splitlines():
            if "-----" not in line:
                assert line not in text


def test_a_hangup_sent_to_the_whole_process_group_reloads_and_ends_no_media_worker(
    tmp_path: Path, files: Files, ca: TestCa, certificates: dict[str, Issued], port_lease: PortLease
) -> None:
    """``kill -HUP -PGID`` (or a terminal's hangup) reaches the media worker processes too:
    the SIP process reloads, the workers (which hold no certificate) ignore it and relay on."""
    config = tmp_path / "workers.toml"
    config.write_text(
        f'[gateway]\nstate_dir = "{tmp_path / "state"}"\n'
        '[sip]\nlisten = ["udp:127.0.0.1:0", "tls:127.0.0.1:0"]\n'
        '[media]\naddress = "127.0.0.1"\n'
        f'ports = "{port_lease.text(20)}"\nworkers = 2\n'
        '[plugins]\nenable = ["udp", "tls"]\n'
        f'[plugins.tls]\ncertificate = "{files.sip_certificate}"\n'
        f'private_key = "{files.sip_key}"\n'
    )
    log = tmp_path / "workers.log"
    tls_ready = re.compile(r"voipgw ready: .*tls:127\.0\.0\.1:(\d+)")
    with voipgw_running(config, log, [tls_ready], new_session=True) as (process, (ready,)):
        tls_port = int(ready[1])
        workers = children_of(process.pid)  # of any of its threads
        assert len(workers) == 2, workers
        # Nothing of the start-up is left once it says ready (finding the tone's codec libraries
        # used to run ldconfig, a third child, just after it).
        started = log.read_text()
        assert started.index("transfer ringing tone: ") < started.index("voipgw ready: ")

        install(certificates["sip-b"], files.sip_certificate, files.sip_key)
        os.killpg(process.pid, signal.SIGHUP)
        deadline = time.monotonic() + 20
        while "reload: tls loaded" not in log.read_text():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"no reload logged:\n{log.read_text()}"
            time.sleep(0.05)

        assert presented(tls_port, ca) == certificates["sip-b"].fingerprint
        for pid in workers:
            status = Path(f"/proc/{pid}/status").read_text()  # gone if the signal ended it
            assert "State:\tZ" not in status
            # The worker ignores SIGHUP (bit 0 of the ignored-signals mask, proc(5)).
            ignored = next(line for line in status.splitlines() if line.startswith("SigIgn:"))
            assert int(ignored.split()[1], 16) & (1 << (signal.SIGHUP - 1))
        assert "exited" not in log.read_text(), log.read_text()
