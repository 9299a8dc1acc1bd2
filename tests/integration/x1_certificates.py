"""The PKI, gateway and X1 ping of the intercept certificate tests: moved here from
test_intercept_certificate_sighup.py so that no test module imports another."""

from __future__ import annotations

import contextlib
import hashlib
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

from tests.integration.voipgw_process import voipgw_running
from tests.interop.harness.pki import Issued, TestCa, TestPki
from tests.port_blocks import ModuleBlock
from tests.unit.taps.x1_structure import XSI
from tests.unit.taps.x1_structure import C as COMMON
from tests.unit.taps.x1_structure import X as NS

# The relay's ports: this process's own (tests/port_blocks.py), not the gateway's default range,
# which another test run's gateway may bind as well (tests/media_range_guard.py).
MEDIA_PORTS = ModuleBlock(20)

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


@contextlib.contextmanager
def gateway(tmp_path: Path, pki: Pki, live: Path, intercept: str = "") -> Iterator[Running]:
    """``voipgw run`` with the SIP ``tls`` transport, the metrics exporter and the tap, whose
    X1 files are ``live``'s; ``intercept``: more lines of its table."""
    delivery = pki.issued["delivery"]
    config = tmp_path / "voipgw.toml"
    config.write_text(
        f'[gateway]\nstate_dir = "{tmp_path / "state"}"\nlog_level = "info"\n'
        '[sip]\nlisten = ["udp:127.0.0.1:0", "tls:127.0.0.1:0"]\n'
        f'[media]\nports = "{MEDIA_PORTS.text()}"\n'
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
