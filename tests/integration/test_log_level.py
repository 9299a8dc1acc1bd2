"""``[gateway] log_level`` and ``voipgw run --log-level``, as an operator sets them: the command
line wins over the file, and what ``debug`` adds is each SIP message received and sent, one line
each (its first line, Call-ID, CSeq, size: never another header or the body), the lines an
operator finds a fault by. At ``info`` no DEBUG line is written.

The interop harness writes ``log_level = "debug"`` into its gateways' configs: before this, a
call's gateway.log held no DEBUG line at all (the few the code had were for rare events)."""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path

import pytest

from tests.integration.voipgw_process import voipgw_running
from tests.port_blocks import PortLease

LISTENING = re.compile(r"listening on udp:127\.0\.0\.1:(\d+)")
READY = re.compile(r"voipgw ready: ")


def options(port: int, call_id: str) -> bytes:
    """Send an OPTIONS to the gateway's UDP port; its answer."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(10)
        sock.bind(("127.0.0.1", 0))
        local = sock.getsockname()[1]
        sock.sendto(
            (
                f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bK-{call_id}\r\n"
                "From: <sip:probe@127.0.0.1>;tag=p1\r\nTo: <sip:127.0.0.1>\r\n"
                f"Call-ID: {call_id}\r\nCSeq: 7 OPTIONS\r\nMax-Forwards: 70\r\n"
                "Content-Length: 0\r\n\r\n"
            ).encode(),
            ("127.0.0.1", port),
        )
        return sock.recv(65535)


@pytest.mark.parametrize(
    ("in_file", "on_command_line", "debug"),
    [
        (None, None, False),  # the default: info
        ("debug", None, True),
        ("debug", "info", False),  # --log-level replaces the file's
        ("info", "debug", True),
    ],
)
def test_the_log_level_is_the_command_lines_else_the_files_and_debug_traces_sip(
    tmp_path: Path,
    in_file: str | None,
    on_command_line: str | None,
    debug: bool,
    port_lease: PortLease,
) -> None:
    config = tmp_path / "voipgw.toml"
    level = f'log_level = "{in_file}"\n' if in_file else ""
    config.write_text(
        f'[gateway]\nstate_dir = "{tmp_path / "state"}"\n{level}'
        '[sip]\nlisten = ["udp:127.0.0.1:0"]\n'
        f'[media]\nports = "{port_lease.text(10)}"\n[plugins]\nenable = ["udp"]\n'
    )
    log = tmp_path / "run.log"
    args = ("--log-level", on_command_line) if on_command_line else ()
    with voipgw_running(config, log, [LISTENING, READY], args=args) as (_, (listening, _)):
        answer = options(int(listening.group(1)), "level-probe-1")
        assert answer.startswith(b"SIP/2.0 200 "), answer
        if debug:  # logged just after the answer went: polled for, not slept on
            deadline = time.monotonic() + 10
            while "SIP out" not in log.read_text() and time.monotonic() < deadline:
                time.sleep(0.05)
    text = log.read_text()
    assert " INFO gateway.core.gateway: voipgw ready: " in text  # info and up always
    if not debug:
        assert " DEBUG " not in text, text
        return
    received = re.search(
        r" DEBUG gateway\.core\.endpoint: SIP in udp:127\.0\.0\.1:\d+<->127\.0\.0\.1:\d+: "
        r"OPTIONS sip:127\.0\.0\.1:\d+ SIP/2\.0 \(Call-ID level-probe-1, CSeq 7 OPTIONS, "
        r"\d+ bytes\)$",
        text,
        re.MULTILINE,
    )
    assert received is not None, text
    sent = re.search(
        r" DEBUG gateway\.core\.endpoint: SIP out udp:127\.0\.0\.1:\d+<->127\.0\.0\.1:\d+: "
        r"SIP/2\.0 200 OK \(Call-ID level-probe-1, CSeq 7 OPTIONS, \d+ bytes\)$",
        text,
        re.MULTILINE,
    )
    assert sent is not None, text
    # One line each, and no other header of the message: not its Via, From or To.
    assert "branch=z9hG4bK-level-probe-1" not in text and "tag=p1" not in text
