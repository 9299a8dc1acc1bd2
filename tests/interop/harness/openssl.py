"""``openssl s_client`` and ``openssl s_server`` on 127.0.0.1, as TLS peers of the gateway.

    result = s_client(gw.tls_address, workdir=tmp_path, certificate=phone, trust=ca.certificate,
                      send=options_request)
    assert result.handshake_ok and "SIP/2.0 200" in result.output

    with SServer(wrong_name_cert, workdir=tmp_path) as server:   # a trunk with a bad certificate
        ...  server.port, server.output()

s_server runs in ``-rev`` mode and serves any number of connections; its output shows each
handshake ("Protocol version", "Client cipher list", the client certificate's verification).

s_client sends ``send`` after the handshake and, with ``-ign_eof``, keeps reading until the
server closes the connection (give the gateway a short ``idle_timeout``); without ``send`` it
closes at once after the handshake. ``output`` is stdout and stderr together.
"""

from __future__ import annotations

import itertools
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import attrs

from tests.conftest import require_peer
from tests.interop.harness.pki import Issued
from tests.interop.harness.ports import LOOPBACK, free_port, wait_listening
from tests.interop.harness.processes import start_process, stop_process, tail

_runs = itertools.count(1)


@attrs.frozen
class SClientResult:
    command: tuple[str, ...]
    returncode: int
    output: str

    @property
    def handshake_ok(self) -> bool:
        """The client finished a handshake (TLS 1.3: before the server checked our certificate,
        so a refusal then shows as an alert after this)."""
        return re.search(r"^(New|Reused), TLS", self.output, re.MULTILINE) is not None

    @property
    def alerts(self) -> list[str]:
        """TLS alerts the client received or raised, e.g. ``certificate required``."""
        return re.findall(r"alert ([a-z ]+?)(?:[:\n]|$)", self.output, re.MULTILINE)

    def describe(self) -> str:
        return (
            f"openssl s_client exited with {self.returncode}: {' '.join(self.command)}\n"
            + (self.output[-4000:])
        )


def s_client(
    address: str,
    *,
    workdir: Path,
    certificate: Issued | None = None,
    trust: Path | None = None,
    send: bytes = b"",
    args: Sequence[str] = (),
    timeout: float = 15.0,
) -> SClientResult:
    """Run ``openssl s_client`` against ``address`` (``127.0.0.1:PORT``); never raises on a
    failed handshake. ``trust`` is a CA file the server must chain to (and its certificate must
    name 127.0.0.1); ``certificate`` is presented as the client certificate."""
    command = [
        require_peer("openssl"),
        "s_client",
        "-connect",
        address,
        "-no_ticket",
    ]
    if trust is not None:
        command += ["-CAfile", str(trust), "-verify_return_error", "-verify_ip", LOOPBACK]
    if certificate is not None:
        command += ["-cert", str(certificate.certificate), "-key", str(certificate.key)]
    if send:
        command.append("-ign_eof")
    command += list(args)
    run = workdir / f"s_client-{next(_runs)}"
    run.mkdir(parents=True)
    try:
        completed = subprocess.run(
            command,
            input=send,
            capture_output=True,
            timeout=timeout,
            check=False,
            cwd=run,
        )
        output = (completed.stdout + completed.stderr).decode(errors="replace")
        returncode = completed.returncode
    except subprocess.TimeoutExpired as exc:
        output = ((exc.stdout or b"") + (exc.stderr or b"")).decode(errors="replace")
        returncode = -1
    return SClientResult(tuple(command), returncode, output)


class SServer:
    """``openssl s_server`` serving ``certificate`` on 127.0.0.1:``port`` (a TLS trunk)."""

    def __init__(
        self,
        certificate: Issued,
        *,
        workdir: Path,
        args: Sequence[str] = (),
    ) -> None:
        self.port = free_port("tcp")
        self.rundir = workdir / f"s_server-{next(_runs)}"
        self.rundir.mkdir(parents=True)
        self.log = self.rundir / "s_server.log"
        self.command = [
            require_peer("openssl"),
            "s_server",
            "-accept",
            f"{LOOPBACK}:{self.port}",
            "-cert",
            str(certificate.certificate),
            "-key",
            str(certificate.key),
            # -rev: echo each line reversed. Unlike the default mode, it never reads stdin
            # (/dev/null here), whose EOF would stop the server (-ign_eof does not help).
            "-rev",
            *args,
        ]
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> tuple[str, int]:
        return (LOOPBACK, self.port)

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def __enter__(self) -> SServer:
        self.process = start_process(self.command, log=self.log, cwd=self.rundir)
        try:
            wait_listening(self.port, "tcp", timeout=10, process=self.process)
        except RuntimeError:
            stop_process(self.process, timeout=2.0)
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.process is not None:
            stop_process(self.process, timeout=3.0)
        if exc is not None:
            print(f"--- openssl s_server ({self.log}) ---")
            print(tail(self.log, 60))
