"""A real ``voipgw run`` with the ``metrics`` plugin, scraped with curl over 127.0.0.1, its
answer read by Prometheus' own Python parser (``prometheus_client``, a test dependency: the
format is what a real Prometheus reads, not what our tests think it is).

The gateway binds port 0 for SIP and for metrics and says in its log where the exposition is;
the test waits for that line, scrapes, sends a SIP OPTIONS and scrapes again, and stops the
process with SIGTERM.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.prometheus_scrape import curl, parser, value
from tests.integration.voipgw_process import voipgw_running
from tests.port_blocks import PortLease

READY = re.compile(r"metrics: Prometheus exposition on http://127\.0\.0\.1:(\d+)/metrics")
SIP_READY = re.compile(r"voipgw ready: udp:127\.0\.0\.1:(\d+), tcp:127\.0\.0\.1:(\d+)")


def write_config(tmp_path: Path, listen: str, lease: PortLease) -> Path:
    path = tmp_path / "voipgw.toml"
    path.write_text(
        f'[gateway]\nstate_dir = "{tmp_path / "state"}"\n'
        '[sip]\nlisten = ["udp:127.0.0.1:0", "tcp:127.0.0.1:0"]\n'
        '[media]\naddress = "127.0.0.1"\n'
        f'ports = "{lease.text(20)}"\n'
        '[plugins]\nenable = ["udp", "tcp", "metrics"]\n'
        f'[plugins.metrics]\nlisten = "{listen}"\n'
        "[[trunks]]\n"
        'name = "carrier"\naddress = "udp:192.0.2.1:5060"\nprefixes = ["+1"]\nmax_calls = 30\n'
    )
    return path


@pytest.fixture
def gateway(port_lease: PortLease, tmp_path: Path) -> Iterator[tuple[int, int, int]]:
    """A running gateway: (its metrics port, its SIP UDP port, its SIP TCP port)."""
    config = write_config(tmp_path, "127.0.0.1:0", port_lease)
    with voipgw_running(config, tmp_path / "voipgw.log", [READY, SIP_READY]) as (_, found):
        metrics, sip = found
        yield int(metrics[1]), int(sip[1]), int(sip[2])


def families(port: int) -> dict[str, object]:
    result = curl("--fail", "--include", f"http://127.0.0.1:{port}/metrics")
    assert result.returncode == 0, result.stderr
    head, _, body = result.stdout.replace("\r\n", "\n").partition("\n\n")
    assert "content-type: text/plain; version=0.0.4; charset=utf-8" in head.lower()
    found = {f.name: f for f in parser().text_string_to_metric_families(body)}  # type: ignore[attr-defined]
    assert found, body
    return found


def options(transport: str, own: int, sip_port: int) -> bytes:
    return (
        f"OPTIONS sip:127.0.0.1:{sip_port} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} 127.0.0.1:{own};branch=z9hG4bK-metrics-{transport}\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=1\r\nTo: <sip:127.0.0.1>\r\n"
        f"Call-ID: metrics-probe-{transport}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def test_a_running_gateway_is_scraped_by_curl_and_parsed_by_prometheus(
    gateway: tuple[int, int, int],
) -> None:
    metrics_port, sip_port, _ = gateway
    before = families(metrics_port)
    # prometheus_client names a counter family without its _total, as OpenMetrics does.
    kinds = {name: f.type for name, f in before.items()}  # type: ignore[attr-defined]
    assert kinds["voipgw_calls_started"] == "counter"
    assert kinds["voipgw_calls_in_progress"] == "gauge"
    assert kinds["voipgw_call_setup_seconds"] == "histogram"
    assert kinds["voipgw_build_info"] == "gauge"
    assert value(before, "voipgw_calls_started", "voipgw_calls_started_total") == 0
    assert value(before, "voipgw_trunk_max_calls", "voipgw_trunk_max_calls", trunk="carrier") == 30
    assert (
        value(before, "voipgw_call_setup_seconds", "voipgw_call_setup_seconds_bucket", le="+Inf")
        == 0
    )
    started = value(before, "voipgw_start_time_seconds", "voipgw_start_time_seconds")
    assert time.time() - 120 < started <= time.time()
    received = value(before, "voipgw_sip_messages_received", "voipgw_sip_messages_received_total")

    # A SIP OPTIONS to the gateway moves the received counter.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(10)
        own = sock.getsockname()[1]
        sock.sendto(options("UDP", own, sip_port), ("127.0.0.1", sip_port))
        answer, _ = sock.recvfrom(65536)
    assert answer.startswith(b"SIP/2.0 200 ")
    after = families(metrics_port)
    assert value(after, "voipgw_sip_messages_received", "voipgw_sip_messages_received_total") == (
        received + 1
    )

    # What is not a scrape gets its status; the exporter goes on.
    assert (
        curl(
            "--output",
            "/dev/null",
            "--write-out",
            "%{http_code}",
            f"http://127.0.0.1:{metrics_port}/",
        ).stdout
        == "404"
    )
    assert (
        curl(
            "--output",
            "/dev/null",
            "--write-out",
            "%{http_code}",
            "--data",
            "x",
            f"http://127.0.0.1:{metrics_port}/metrics",
        ).stdout
        == "405"
    )
    assert families(metrics_port)


def connections(port: int, transport: str) -> float:
    return value(
        families(port), "voipgw_sip_connections", "voipgw_sip_connections", transport=transport
    )


def test_open_sip_connections_are_counted_by_transport(gateway: tuple[int, int, int]) -> None:
    metrics_port, _, tcp_port = gateway
    assert connections(metrics_port, "tcp") == 0
    with socket.create_connection(("127.0.0.1", tcp_port), timeout=10) as sock:
        sock.sendall(options("TCP", sock.getsockname()[1], tcp_port))
        assert sock.recv(65536).startswith(b"SIP/2.0 200 ")
        assert connections(metrics_port, "tcp") == 1
    deadline = time.monotonic() + 10
    while connections(metrics_port, "tcp") != 0:  # the gateway sees the close, then forgets it
        assert time.monotonic() < deadline, "a closed connection is still counted"
        time.sleep(0.05)


def test_a_metrics_port_in_use_is_one_line_and_exit_1(
    port_lease: PortLease, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "gateway",
                "run",
                "--config",
                str(write_config(tmp_path, f"127.0.0.1:{port}", port_lease)),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert (
        f"cannot run: [Errno 98] metrics: cannot listen on 127.0.0.1:{port}: "
        "Address already in use" in result.stderr
    )
    assert "voipgw ready" not in result.stderr and "Traceback" not in result.stderr
