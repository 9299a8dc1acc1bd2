"""stunnel4 as a TLS client in front of a TCP-only SIP peer (Debian's sipp has no TLS,
../shared/peers.md §1.5).

    with StunnelClient(gw.tls_address, workdir=tmp_path, trust=ca.certificate,
                       certificate=phone) as tunnel:
        run_sipp_uac("register_auth.xml", tunnel.address, transport="tcp", ...)

sipp connects over TCP to ``tunnel.address``; stunnel opens a TLS connection to the gateway for
each TCP connection, verifying that the gateway's certificate chains to ``trust`` and names
127.0.0.1, and presents ``certificate`` when given. SIP inside still says ``SIP/2.0/TCP``; the
gateway answers over the connection the request came on, so that is fine for requests sipp
sends (and a gateway-initiated connection would bypass stunnel).

``StunnelServer`` is the other way round: a TLS listener in front of a sipp UAS, so that the
gateway can call it as a TLS trunk.
"""

from __future__ import annotations

import itertools
import subprocess
from pathlib import Path
from types import TracebackType
from typing import Self

from tests.conftest import require_peer
from tests.interop.harness.pki import Issued
from tests.interop.harness.ports import LOOPBACK, free_port, wait_listening
from tests.interop.harness.processes import start_process, stop_process, tail

_runs = itertools.count(1)


class _Stunnel:
    """One stunnel4 process on 127.0.0.1:``port`` with its own run directory; subclasses give
    the service section of its configuration."""

    label = "stunnel"

    def __init__(self, *, workdir: Path, port: int | None, service: list[str]) -> None:
        self.port = free_port("tcp") if port is None else port
        self.rundir = workdir / f"stunnel-{next(_runs)}"
        self.rundir.mkdir(parents=True)
        self.log = self.rundir / "stunnel.log"
        self.config = self.rundir / "stunnel.conf"
        lines = ["foreground = yes", "pid =", "debug = info", *service]
        self.config.write_text("\n".join(lines) + "\n")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT`` where this stunnel accepts connections."""
        return f"{LOOPBACK}:{self.port}"

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def __enter__(self) -> Self:
        binary = require_peer("stunnel4")
        self.process = start_process([binary, str(self.config)], log=self.log, cwd=self.rundir)
        try:
            wait_listening(self.port, "tcp", timeout=10, process=self.process)
        except RuntimeError:
            stop_process(self.process, timeout=2.0)
            raise RuntimeError(f"stunnel did not start:\n{tail(self.log)}") from None
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
            print(f"--- {self.label} ({self.log}) ---")
            print(tail(self.log, 60))


class StunnelClient(_Stunnel):
    """stunnel in client mode: TCP on 127.0.0.1:``port`` (where sipp connects) -> TLS to
    ``connect``, verifying the chain to ``trust`` and 127.0.0.1, presenting ``certificate``."""

    def __init__(
        self,
        connect: str,
        *,
        workdir: Path,
        trust: Path,
        certificate: Issued | None = None,
    ) -> None:
        port = free_port("tcp")
        service = [
            "[sip-tls-out]",
            "client = yes",
            f"accept = {LOOPBACK}:{port}",
            f"connect = {connect}",
            f"CAfile = {trust}",
            "verifyChain = yes",
            f"checkIP = {LOOPBACK}",
            "sslVersionMin = TLSv1.2",
        ]
        if certificate is not None:
            service += [f"cert = {certificate.certificate}", f"key = {certificate.key}"]
        super().__init__(workdir=workdir, port=port, service=service)


class StunnelServer(_Stunnel):
    """stunnel in server mode: TLS on 127.0.0.1:``port`` -> TCP to ``connect`` (a sipp UAS as a
    TLS trunk, ../shared/peers.md §1.5).

    It presents ``certificate`` and asks for no client certificate. ``port`` (default: a free
    one) can be chosen before the UAS starts, so that the UAS's Contact can name it: SIP inside
    says ``TCP`` otherwise, and in-dialog requests sent to that Contact would bypass stunnel.
    """

    label = "stunnel server"

    def __init__(
        self, connect: str, *, workdir: Path, certificate: Issued, port: int | None = None
    ) -> None:
        port = free_port("tcp") if port is None else port
        service = [
            "[sip-tls-in]",
            f"accept = {LOOPBACK}:{port}",
            f"connect = {connect}",
            f"cert = {certificate.certificate}",
            f"key = {certificate.key}",
            "sslVersionMin = TLSv1.2",
        ]
        super().__init__(workdir=workdir, port=port, service=service)
