"""sipp (a real, independent SIP stack) against ``voipgw run`` on 127.0.0.1.

REGISTER with digest authentication over UDP and TCP, OPTIONS probes, and a wrong password. The
gateway runs as the operator runs it: the ``voipgw`` command with a config file, in a subprocess.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require_peer
from tests.interop.harness.gateway import startup_problems, wait_until_answering
from tests.interop.harness.ports import free_port_pair
from tests.port_blocks import ModuleBlock

SCENARIOS = Path(__file__).parent / "scenarios"

# The relay's ports: this process's own (tests/port_blocks.py), not the gateway's default range,
# which another test run's gateway may bind as well (tests/media_range_guard.py).
MEDIA_PORTS = ModuleBlock(20)


@pytest.fixture
def gateway_process(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    port = free_port_pair()
    state = tmp_path / "state"
    config = tmp_path / "voipgw.toml"
    config.write_text(
        f'[gateway]\nstate_dir = "{state}"\n'
        # sipp 3.6 answers only the first challenge and knows only MD5 (docs/configuration.md)
        'digest_algorithms = ["MD5", "SHA-256"]\n'
        f'[sip]\nlisten = ["udp:127.0.0.1:{port}", "tcp:127.0.0.1:{port}"]\n'
        f'[media]\nports = "{MEDIA_PORTS.text()}"\n'
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "accounts",
            "add",
            "alice",
            "--password",
            "wonderland",
            "--config",
            str(config),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    log = tmp_path / "gateway.log"
    with log.open("w") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "--config", str(config)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        wait_until_answering(port, proc, 20, log)
        # As GatewayProcess: a warning at start-up is a test config that is wrong.
        assert startup_problems(log.read_text()) == []
        yield port, log
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(timeout=10) == 0, log.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()


def sipp(port: int, scenario: str, transport: str, tmp_path: Path, *extra: str) -> int:
    binary = require_peer("sipp")
    result = subprocess.run(
        [
            binary,
            f"127.0.0.1:{port}",
            "-sf",
            str(SCENARIOS / scenario),
            "-t",
            transport,
            "-i",
            "127.0.0.1",
            "-p",
            str(free_port_pair()),
            "-m",
            "1",
            "-nostdin",
            "-timeout",
            "15s",
            "-timeout_error",
            "-trace_err",
            "-error_file",
            str(tmp_path / "sipp_errors.log"),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    return result.returncode


def credentials(password: str) -> tuple[str, ...]:
    return ("-s", "alice", "-au", "alice", "-ap", password)


@pytest.mark.interop
@pytest.mark.parametrize("transport", ["u1", "t1"], ids=["udp", "tcp"])
def test_sipp_registers_with_digest(
    gateway_process: tuple[int, Path], tmp_path: Path, transport: str
) -> None:
    port, _ = gateway_process
    rc = sipp(port, "register_auth.xml", transport, tmp_path, *credentials("wonderland"))
    assert rc == 0, (tmp_path / "sipp_errors.log").read_text(errors="replace")


@pytest.mark.interop
@pytest.mark.parametrize("transport", ["u1", "t1"], ids=["udp", "tcp"])
def test_sipp_options(gateway_process: tuple[int, Path], tmp_path: Path, transport: str) -> None:
    port, _ = gateway_process
    assert sipp(port, "options.xml", transport, tmp_path) == 0


@pytest.mark.interop
def test_sipp_wrong_password_is_refused_and_logged(
    gateway_process: tuple[int, Path], tmp_path: Path
) -> None:
    port, log = gateway_process
    rc = sipp(port, "register_auth.xml", "u1", tmp_path, *credentials("guess"))
    assert rc != 0  # the scenario wants 200; the gateway answers 401 again
    deadline = time.monotonic() + 10
    while "authentication failed for user 'alice'" not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    assert "guess" not in log.read_text()
