"""sipp as a caller (``run_sipp_uac``) and as a callee or trunk (``SippUas``), on 127.0.0.1.

    result = run_sipp_uac("uac_call.xml", gw.address, workdir=tmp_path, service="bob")
    result.check()

    with SippUas("uas_answer.xml", workdir=tmp_path, rtp_echo=True) as trunk:
        ...                     # trunk.address, trunk.config_address ("udp:127.0.0.1:PORT")
        trunk.wait().check()    # the UAS finished its calls successfully

A peer the gateway must tell apart by source address (a trunk calling in) runs on another
loopback address with ``local_ip="127.0.0.2"``; ``SippResult.received("INVITE ")`` and
``sent(...)`` read the messages back from the trace.

Each run has its own directory under ``workdir`` with sipp's error file (-trace_err), its full
message trace (-trace_msg) and its screen output, and its own SIP port (-p) and media port
(-mp, a block of 4: sipp binds the audio port and the video port two above it). The scenarios
are in tests/interop/scenarios (scenarios/calls/: those meant for calls through the gateway);
each says in its header comment what it does and which ``-s``/``-key`` values it reads.
"""

from __future__ import annotations

import ipaddress
import itertools
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

import attrs

from tests.conftest import require_peer
from tests.interop.harness.ports import (
    LOOPBACK,
    free_port_block,
    free_port_pair,
    release_port_block,
    wait_listening,
)
from tests.interop.harness.processes import start_process, stop_process, tail

#: Directory of the sipp scenario files.
SCENARIOS = Path(__file__).parents[1] / "scenarios"

# sipp's transport modes: one socket for all calls over UDP, one connection over TCP.
_TRANSPORTS = {"udp": "u1", "tcp": "t1", "u1": "u1", "t1": "t1"}
_PROTOCOL = {"u1": "udp", "t1": "tcp"}
_run_numbers = itertools.count(1)

#: Name of the raw PCMU file that uac_call_rtp.xml streams from its working directory.
RTP_STREAM_FILE = "rtp_stream.ulaw"


@attrs.frozen
class SippResult:
    """How a sipp run ended, with the paths of its logs for diagnosis."""

    scenario: str
    command: tuple[str, ...]
    returncode: int
    rundir: Path
    #: sipp's SIP port (-p) and first media port (-mp: RTP source and echo port).
    port: int
    media_port: int

    @property
    def ok(self) -> bool:
        """sipp exits 0 only when every call followed the scenario to its end."""
        return self.returncode == 0

    @property
    def error_log(self) -> Path:
        return self.rundir / "errors.log"

    @property
    def message_log(self) -> Path:
        return self.rundir / "messages.log"

    @property
    def screen_log(self) -> Path:
        return self.rundir / "screen.log"

    def messages(self) -> str:
        """Every SIP message sipp sent and received, with timestamps."""
        try:
            return self.message_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def received(self, start: str = "", *, retransmissions: bool = False) -> list[str]:
        """The SIP messages sipp received whose first line starts with ``start`` (e.g.
        ``"INVITE "`` or ``"SIP/2.0 200"``), in order, each as text with CRLF made LF; each
        retransmission left out unless ``retransmissions`` (see :meth:`sent`)."""
        return self._trace("received", start, retransmissions)

    def sent(self, start: str = "", *, retransmissions: bool = False) -> list[str]:
        """The SIP messages sipp sent whose first line starts with ``start``, in order.

        Over UDP a request is sent again unchanged until it is answered (RFC 3261 §17.1.1.2,
        §17.1.2.2: Timers A and E from 500 ms), and so is a 2xx until its ACK comes (§13.3.1.4);
        on a loaded machine either can happen in any call. A message equal to one already
        listed in the same direction is such a retransmission (a new request has a new branch
        or CSeq) and is left out unless ``retransmissions``, so counts are of messages."""
        return self._trace("sent", start, retransmissions)

    def _trace(self, direction: str, start: str, retransmissions: bool) -> list[str]:
        # -trace_msg writes each message as a block: a line of dashes and a timestamp, a line
        # "UDP message received [N] bytes :" or "TCP message sent (N bytes):", a blank line,
        # then the message itself.
        out = []
        seen = set()
        for block in _TRACE_SEPARATOR.split(self.messages())[1:]:
            heading, _, message = block.partition("\n")
            message = message.replace("\r\n", "\n").strip("\n") + "\n"
            if f"message {direction}" not in heading or not message.startswith(start):
                continue
            if not retransmissions and message in seen:
                continue
            seen.add(message)
            out.append(message)
        return out

    def describe(self) -> str:
        """The exit code, the command, the error file and the end of the message trace."""
        return (
            f"sipp {self.scenario} exited with {self.returncode}\n"
            f"command: {' '.join(self.command)}\n"
            f"--- errors ({self.error_log}) ---\n{tail(self.error_log, 40)}\n"
            f"--- last messages ({self.message_log}) ---\n{tail(self.message_log, 80)}\n"
            f"--- screen ({self.screen_log}) ---\n{tail(self.screen_log, 20)}"
        )

    def check(self) -> None:
        """AssertionError with ``describe()`` unless the run succeeded."""
        assert self.ok, self.describe()


def _loopback(local_ip: str) -> str:
    # Interop tests never leave the host: 127.0.0.2 is a second loopback address for a peer
    # the gateway must tell apart by source IP (a trunk), anything routable is refused.
    if not ipaddress.ip_address(local_ip).is_loopback:
        raise ValueError(f"{local_ip} is not a loopback address")
    return local_ip


def _scenario_path(scenario: str | Path) -> Path:
    path = Path(scenario)
    if not path.is_absolute() and not path.exists():
        path = SCENARIOS / scenario
    if not path.is_file():
        raise FileNotFoundError(f"no sipp scenario {scenario!r} (looked in {SCENARIOS})")
    return path


def _rundir(workdir: Path, role: str, scenario: Path) -> Path:
    rundir = workdir / f"sipp-{next(_run_numbers)}-{role}-{scenario.stem}"
    rundir.mkdir(parents=True)
    return rundir


def _common_args(
    scenario: Path,
    rundir: Path,
    *,
    transport: str,
    port: int,
    media_port: int,
    calls: int,
    call_duration_ms: int,
    keys: Mapping[str, str],
    timeout: float,
    local_ip: str = LOOPBACK,
) -> list[str]:
    args = [
        require_peer("sipp"),
        "-sf",
        str(scenario),
        "-t",
        transport,
        "-i",
        local_ip,
        "-p",
        str(port),
        "-bind_local",
        "-mi",
        local_ip,
        "-mp",
        str(media_port),
        "-m",
        str(calls),
        "-d",
        str(call_duration_ms),
        "-nostdin",
        "-timeout",
        f"{timeout:g}s",
        "-timeout_error",
        "-trace_err",
        "-error_file",
        str(rundir / "errors.log"),
        "-trace_msg",
        "-message_file",
        str(rundir / "messages.log"),
    ]
    for key, value in keys.items():
        args += ["-key", key, value]
    return args


_TRACE_SEPARATOR = re.compile(r"^-{20,} [^\n]*\n", re.MULTILINE)
_FIRST_REQUEST = re.compile(r"^\s*[A-Z]+ sip:(\S+) SIP/2\.0", re.MULTILINE)


def _digest_uri(scenario: Path, service: str, target: str) -> str | None:
    # sipp's digest uri defaults to remote_ip:remote_port; the server checks it against the
    # Request-URI (RFC 2617 §3.2.2.5), so take it from the scenario's first request line.
    match = _FIRST_REQUEST.search(scenario.read_text(errors="replace"))
    if match is None:
        return None
    host, _, port = target.rpartition(":")
    uri = match[1].replace("[service]", service)
    uri = uri.replace("[remote_ip]", host).replace("[remote_port]", port)
    return None if "[" in uri else uri


def _ulaw_seconds(path: Path) -> float:
    return path.stat().st_size / 8000  # 8000 one-byte G.711 samples per second


def run_sipp_uac(
    scenario: str | Path,
    target: str,
    *,
    workdir: Path,
    service: str = "service",
    caller: str = "sipp",
    transport: str = "udp",
    calls: int = 1,
    rate: float | None = None,
    call_duration_ms: int | None = None,
    auth: tuple[str, str] | None = None,
    rtp_file: Path | None = None,
    keys: Mapping[str, str] | None = None,
    timeout: float = 15.0,
    extra_args: Sequence[str] = (),
    local_ip: str = LOOPBACK,
    port: int | None = None,
    files: Mapping[str, bytes] | None = None,
) -> SippResult:
    """Run a UAC scenario against ``target`` ("127.0.0.1:PORT") until it ends; never raises.

    ``service`` is the callee user (-s) and ``caller`` the caller user (-key caller). ``auth``
    is (username, password) for 401/407 challenges (-au/-ap, and -auth_uri taken from the
    scenario's first Request-URI, which the digest uri must equal). ``rtp_file`` is a raw PCMU
    file (``tone_ulaw``) copied to the run directory for uac_call_rtp.xml; the call is then
    held for its length plus 0.5 s unless ``call_duration_ms`` says otherwise (default 500 ms).
    ``calls`` and ``rate`` (calls/s) set -m and -r. sipp gets ``timeout`` seconds in all
    (-timeout with -timeout_error). ``local_ip`` is the loopback address sipp binds and puts in
    its messages and SDP (-i, -mi), e.g. 127.0.0.2 for a trunk recognised by source address;
    ``port`` its SIP port (-p, default a free one), e.g. a ``SippUas``'s port not yet started,
    to REGISTER the Contact that UAS will answer on. ``files`` are written to the run
    directory, sipp's working directory, by name (a pcap for ``play_pcap_image``, which sipp
    reads when it loads the scenario).
    """
    path = _scenario_path(scenario)
    mode = _TRANSPORTS[transport]
    rundir = _rundir(workdir, "uac", path)
    if call_duration_ms is None:
        call_duration_ms = 500
        if rtp_file is not None:
            call_duration_ms = int(_ulaw_seconds(rtp_file) * 1000) + 500
    if rtp_file is not None:
        shutil.copyfile(rtp_file, rundir / RTP_STREAM_FILE)
    for name, data in (files or {}).items():
        (rundir / name).write_bytes(data)
    if port is None:
        port = free_port_pair()
    media_port = free_port_block(4)
    args = _common_args(
        path,
        rundir,
        transport=mode,
        port=port,
        media_port=media_port,
        calls=calls,
        call_duration_ms=call_duration_ms,
        keys={"caller": caller, **(keys or {})},
        timeout=timeout,
        local_ip=_loopback(local_ip),
    )
    args[1:1] = [target]
    args += ["-s", service]
    if rate is not None:
        args += ["-r", f"{rate:g}"]
    if auth is not None:
        args += ["-au", auth[0], "-ap", auth[1]]
        digest_uri = _digest_uri(path, service, target)
        if digest_uri is not None:
            args += ["-auth_uri", digest_uri]
    args += list(extra_args)
    process = start_process(args, log=rundir / "screen.log", cwd=rundir)
    try:
        process.wait(timeout=timeout + 15)
    except subprocess.TimeoutExpired:
        pass  # stopped below; the result then shows the signal
    finally:
        returncode = stop_process(process, timeout=3.0)
        release_port_block(media_port, 4)  # sipp is gone, its media sockets too
    return SippResult(path.name, tuple(args), returncode, rundir, port, media_port)


# A UAS is started before the gateway whose trunk it is (the gateway's config names its
# port), and the gateway harness gives a gateway 60 s to say it is ready: sipp's own
# -timeout counting from its start would spend the test's call time on that start.
UAS_START_ALLOWANCE = 60.0


class SippUas:
    """sipp running a UAS scenario in the background: a callee, or a trunk behind the gateway.

    It listens on ``port`` (UDP or TCP per ``transport``) and answers ``calls`` calls, then
    exits; ``wait()`` gives the result. With ``rtp_echo`` it echoes RTP received on
    ``media_port`` back to its sender (-rtp_echo). ``call_duration_ms`` is -d (how long
    uas_bye_first.xml holds the call before its BYE). ``keys`` are -key values (for
    uas_auth_answer.xml: user, password). ``timeout`` is how long ``wait()`` gives it from the
    moment the test waits; sipp's own -timeout, which runs from its start, adds
    :data:`UAS_START_ALLOWANCE` for the gateway the test starts after it (a loaded machine
    took tens of seconds) and only ends a sipp nobody waits for.
    ``local_ip`` is the loopback address it binds and advertises (-i, -mi).
    ``media_port_count`` is how many ports from ``media_port`` up the scenario's SDP names
    (``[media_port+N]``, N below it): held for it alone, and never past 65535.
    """

    def __init__(
        self,
        scenario: str | Path,
        *,
        workdir: Path,
        transport: str = "udp",
        calls: int = 1,
        rtp_echo: bool = False,
        call_duration_ms: int = 500,
        keys: Mapping[str, str] | None = None,
        timeout: float = 30.0,
        extra_args: Sequence[str] = (),
        local_ip: str = LOOPBACK,
        media_port_count: int = 4,
    ) -> None:
        self.scenario = _scenario_path(scenario)
        self.local_ip = _loopback(local_ip)
        self.mode = _TRANSPORTS[transport]
        self.port = free_port_pair()
        self.media_port = free_port_block(media_port_count)
        self.timeout = timeout
        self.rundir = _rundir(workdir, "uas", self.scenario)
        self.args = _common_args(
            self.scenario,
            self.rundir,
            transport=self.mode,
            port=self.port,
            media_port=self.media_port,
            calls=calls,
            call_duration_ms=call_duration_ms,
            keys=keys or {},
            timeout=timeout + UAS_START_ALLOWANCE,
            local_ip=self.local_ip,
        )
        if rtp_echo:
            self.args.append("-rtp_echo")
        self.args += list(extra_args)
        self.process: subprocess.Popen[bytes] | None = None
        self._result: SippResult | None = None
        self._stopped = False  # still running when wait() gave up on it
        self._media_held = True  # until sipp has exited: then the block may be handed out again

    @property
    def address(self) -> str:
        """``LOCAL_IP:PORT`` (127.0.0.1 unless ``local_ip`` says otherwise)."""
        return f"{self.local_ip}:{self.port}"

    @property
    def config_address(self) -> str:
        """``udp:127.0.0.1:PORT`` (or tcp:), as a trunk ``address`` in the gateway config."""
        return f"{_PROTOCOL[self.mode]}:{self.local_ip}:{self.port}"

    def trunk_toml(self, name: str = "carrier", prefixes: tuple[str, ...] = ("+49",)) -> str:
        """A ``[[trunks]]`` table for this sipp as a carrier serving ``prefixes``, calling from
        nowhere (it only answers)."""
        listed = ", ".join(f'"{prefix}"' for prefix in prefixes)
        return (
            "[[trunks]]\n"
            f'name = "{name}"\n'
            f'address = "{self.config_address}"\n'
            f"prefixes = [{listed}]\n"
            "allowed_sources = []\n"
        )

    def uri(self, user: str) -> str:
        """``sip:user@LOCAL_IP:PORT``."""
        return f"sip:{user}@{self.local_ip}:{self.port}"

    def start(self) -> None:
        """Start sipp and poll until its SIP socket is bound (UDP) or listening (TCP)."""
        self.process = start_process(self.args, log=self.rundir / "screen.log", cwd=self.rundir)
        try:
            wait_listening(self.port, _PROTOCOL[self.mode], timeout=10, process=self.process)
        except RuntimeError as exc:
            stop_process(self.process, timeout=2.0)
            raise RuntimeError(
                f"sipp UAS did not start: {exc}\n{self.result().describe()}"
            ) from None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait(self, timeout: float | None = None) -> SippResult:
        """Wait for sipp to finish its calls (default: its own ``timeout``), then the result.

        sipp still running after that is stopped, and the result says so (non-zero).
        """
        if self.process is None:
            raise RuntimeError("sipp UAS was not started")
        deadline = time.monotonic() + (self.timeout + 5 if timeout is None else timeout)
        while self.process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.process.poll() is None:
            # sipp exits 0 on SIGTERM when no call has failed yet: a call still waiting for
            # its next message would pass for a finished one.
            self._stopped = True
        stop_process(self.process, sig=signal.SIGTERM, timeout=3.0)
        self._release_media_ports()
        return self.result()

    def _release_media_ports(self) -> None:
        # Once: after that the block may already be another peer's.
        if self._media_held:
            self._media_held = False
            release_port_block(self.media_port, 4)

    def result(self) -> SippResult:
        returncode = -1 if self.process is None else self.process.poll()
        if self._stopped:
            returncode = -signal.SIGTERM
        return SippResult(
            self.scenario.name,
            tuple(self.args),
            -1 if returncode is None else returncode,
            self.rundir,
            self.port,
            self.media_port,
        )

    def __enter__(self) -> SippUas:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.process is not None:
            stop_process(self.process, sig=signal.SIGTERM, timeout=3.0)
            self._release_media_ports()
        if exc is not None:
            print(f"--- sipp UAS {self.scenario.name} ---")
            print(self.result().describe())
