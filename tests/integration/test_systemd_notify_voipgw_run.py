"""``voipgw run`` under systemd's notify protocol (sd_notify(3); gateway/core/systemd_notify.py):
the test binds the datagram socket systemd would and names it in ``NOTIFY_SOCKET``, with a
watchdog (``WATCHDOG_USEC``), as a unit with ``Type=notify`` and ``WatchdogSec=`` starts it. The
gateway says READY=1 once it logged ``voipgw ready`` (media workers running), pings the
watchdog, says RELOADING=1 then READY=1 around a SIGHUP's reload and STOPPING=1 at SIGTERM's
drain; its media workers do not inherit the socket's name (systemd would refuse their
messages, or with ``NotifyAccess=all`` take them for the gateway's)."""

from __future__ import annotations

import re
import signal
import socket
import time
from pathlib import Path

from tests.integration.voipgw_process import voipgw_running
from tests.interop.harness.processes import children_of
from tests.port_blocks import ModuleBlock

MEDIA_PORTS = ModuleBlock(8)


def next_message(manager: socket.socket, wanted: str) -> list[str]:
    """The fields of the next message whose first field is ``wanted``, skipping watchdog pings
    (at most 10 s)."""
    deadline = time.monotonic() + 10
    while True:
        manager.settimeout(max(0.01, deadline - time.monotonic()))
        fields = manager.recv(4096).decode().split("\n")
        if fields[0] == wanted:
            return fields
        assert fields == ["WATCHDOG=1"], fields


def test_voipgw_run_tells_systemd_it_is_ready_alive_reloading_and_stopping(
    tmp_path: Path,
) -> None:
    config = tmp_path / "voipgw.toml"
    config.write_text(
        f'[gateway]\nstate_dir = "{tmp_path / "state"}"\ndrain_timeout = 5\n'
        '[sip]\nlisten = ["udp:127.0.0.1:0"]\n'
        f'[media]\naddress = "127.0.0.1"\nports = "{MEDIA_PORTS.text()}"\nworkers = 2\n'
        '[plugins]\nenable = ["udp"]\n'
    )
    log = tmp_path / "voipgw.log"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind(str(tmp_path / "notify"))
        env = {"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "400000"}
        ready = [re.compile(r"voipgw ready: (udp:127\.0\.0\.1:\d+)")]
        with voipgw_running(config, log, ready, env=env) as (process, (listening,)):
            assert next_message(manager, "READY=1") == ["READY=1", f"STATUS=ready: {listening[1]}"]
            assert "systemd: watchdog ping every 0.2 s" in log.read_text()
            pings = 0
            while pings < 3:  # every 0.2 s
                manager.settimeout(5)
                assert manager.recv(4096) == b"WATCHDOG=1"
                pings += 1
            workers = children_of(process.pid)
            assert len(workers) == 2, workers
            for pid in workers:
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                assert not [v for v in environ if v.startswith((b"NOTIFY_SOCKET=", b"WATCHDOG"))]

            process.send_signal(signal.SIGHUP)
            reloading = next_message(manager, "RELOADING=1")
            assert reloading[1].startswith("MONOTONIC_USEC=") and reloading[2] == "STATUS=reloading"
            assert next_message(manager, "READY=1") == ["READY=1", f"STATUS=ready: {listening[1]}"]

            process.send_signal(signal.SIGTERM)  # drain_timeout: drains first, then stops
            stopping = next_message(manager, "STOPPING=1")
            assert stopping == ["STOPPING=1", "STATUS=draining, up to 5 s"]
            process.wait(20)
        assert "received SIGTERM: draining before the stop" in log.read_text()
