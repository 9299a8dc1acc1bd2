"""``voipgw run`` in a subprocess, configured and run the way an operator runs it.

    with GatewayProcess(tmp_path, accounts={"alice": "wonderland"}, extra_toml=TRUNKS) as gw:
        run_sipp_uac("uac_call.xml", gw.address, ...)
        gw.wait_for_log(r"call .* ended")

The config file is written from the arguments, accounts are added with ``voipgw accounts add``,
readiness is an OPTIONS probe answered 200 (RFC 3261 §11), and the way out is SIGTERM with exit
code 0 expected (SIGKILL after 10 s). When the body raises, the end of the log is printed so the
failing test's report shows it.

A WARNING or ERROR line the gateway writes from its start to the test's end fails the test: a
test config naming a trunk no ``[[trunks]]`` has, or a value out of its range, starts with a
warning (``voipgw check-config`` refuses it), plugin tasks and media workers warn after the
gateway first answers, and a call that goes wrong may say so only in the log; a test would
otherwise pass on a config, or a run, that is wrong. Two checks: the lines written by the time
the gateway answers OPTIONS fail :meth:`GatewayProcess.start` at once; the lines written up to
the moment :meth:`GatewayProcess.stop` sends SIGTERM (the test's end: what the stop itself
logs is not checked) fail the ``with`` block whose body passed, or the direct ``stop()`` call.
A test that provokes one on purpose lists it in ``allowed_warnings`` (regular expressions);
:data:`ENVIRONMENT_WARNINGS` are allowed everywhere.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

from tests.interop.harness.ports import (
    LOOPBACK,
    free_port_block,
    free_port_pair,
    release_port_block,
)
from tests.interop.harness.processes import start_process, stop_process, tail

#: The repository root: ``python -m gateway`` runs from here.
REPO_ROOT = Path(__file__).parents[3]

# The level field of the gateway's log lines ("%(asctime)s %(levelname)s %(name)s: ...").
_PROBLEM_LINE = re.compile(r"^\S+ \S+ (?:WARNING|ERROR|CRITICAL) ", re.MULTILINE)


#: Warnings that depend on the machine the tests run on, not on the config or the run under
#: test, allowed in every test: the control socket <state_dir>/control.sock is not opened when
#: pytest's tmp_path makes its path longer than the 107 octets a Unix socket path may have (a
#: long test name under a long --basetemp); a test that asks the socket (``voipgw calls``)
#: fails on its own then. And overload control's lines: on a machine loaded by other work (CI
#: runners, several test runs at once) a request can wait past ``[sip] overload_queue_delay``
#: and be refused 503; a test that needs that request fails on its own, one whose peer retries
#: (sipp's REGISTER, a trunk's OPTIONS) must not fail for the load. A media worker's answer to
#: a call's sync that takes over APPLIED_WAIT (1 s) on a loaded machine: the call goes on by
#: design, and a test whose media then fails fails on its own. The UDP receive buffer the
#: kernel caps at net.core.rmem_max (212992 on a stock Debian or Ubuntu runner, under the
#: 4 MiB default of [plugins.udp] receive_buffer): a sysctl of the machine, written at every
#: start with a UDP listener.
ENVIRONMENT_WARNINGS = (
    r"control socket not opened: \S+ is longer than a Unix socket path may be",
    r"SIP overloaded: ",
    r"SIP inbound queue full ",
    r"media worker \d+ applied no message within \S+ s; the call goes on",
    r"UDP receive buffer is \d+ bytes, not the \d+ of \[plugins\.udp\] receive_buffer: the "
    r"kernel caps it at net\.core\.rmem_max",
)
# Not allowed, though they name timeouts or limits (checked for session 35): load alone does not
# write them in a test that does not ask for them, so they mean a bug or a test that should list
# them. "trunk ... is down" (and "up again"): only a trunk with [[trunks]] options_interval is
# ever marked down (a failed call to another is not), and no test probes trunks. "registration
# of ... removed: no answer to N keepalives": only with [sip] nat_keepalive_interval, which
# test_nat_keepalive_sipp.py alone sets (and allows). "call ...: event queue full": 64 requests
# queued for one call or 1024 events; a peer's retransmissions are absorbed by the transaction
# layer, and no test sends a call that many. "transaction limit reached": 10,000 live server
# transactions (Timer J keeps a non-INVITE one 32 s); the busiest test, svcrack's flood, sends
# at most one request per 5 ms (its select timeout: about 6,400 in 32 s), fewer when slowed.


def startup_problems(log_text: str, allowed: Sequence[str] = ()) -> list[str]:
    """The WARNING, ERROR and CRITICAL lines of ``log_text`` that no regular expression of
    ``allowed`` or :data:`ENVIRONMENT_WARNINGS` finds (``re.search``)."""
    patterns = [re.compile(pattern) for pattern in (*allowed, *ENVIRONMENT_WARNINGS)]
    return [
        line
        for line in log_text.splitlines()
        if _PROBLEM_LINE.match(line) and not any(p.search(line) for p in patterns)
    ]


TomlValue = str | int | float | bool | Sequence[str | int | float | bool]


def _toml_value(value: TomlValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    return "[" + ", ".join(_toml_value(item) for item in value) + "]"


def toml_tables(tables: Mapping[str, Mapping[str, TomlValue]]) -> str:
    """TOML text for ``{table: {key: value}}`` with scalar or list values."""
    out = []
    for table, keys in tables.items():
        out.append(f"[{table}]")
        out.extend(f"{key} = {_toml_value(value)}" for key, value in keys.items())
        out.append("")
    return "\n".join(out)


# ``voipgw accounts add`` once per (name, password) pair of argv[2:], against the config in
# argv[1]; stops at the first that fails, with its exit code (as the command would).
_ADD_ACCOUNTS = """
import sys
from gateway.core.cli import main
config, *pairs = sys.argv[1:]
for name, password in zip(pairs[::2], pairs[1::2], strict=True):
    code = main(["accounts", "add", name, "--password", password, "--config", config])
    if code:
        sys.exit(code)
"""


def options_ok(port: int, timeout: float = 0.2) -> bool:
    """True when an OPTIONS to 127.0.0.1:port over UDP gets a 200 within ``timeout`` s."""
    probe = (
        f"OPTIONS sip:{LOOPBACK}:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {LOOPBACK}:9;branch=z9hG4bKready{time.monotonic_ns()};rport\r\n"
        f"From: <sip:ready@{LOOPBACK}>;tag=r\r\nTo: <sip:{LOOPBACK}:{port}>\r\n"
        f"Call-ID: ready{time.monotonic_ns()}@{LOOPBACK}\r\nCSeq: 1 OPTIONS\r\n"
        "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.bind((LOOPBACK, 0))
        sock.sendto(probe, (LOOPBACK, port))
        try:
            return sock.recv(65535).startswith(b"SIP/2.0 200")
        except OSError:
            return False


def wait_until_answering(
    port: int, process: subprocess.Popen[bytes], timeout: float, log_path: Path
) -> None:
    """Poll the gateway on ``port`` with OPTIONS until it answers 200: RuntimeError, with the
    end of its log, when ``process`` exits first or ``timeout`` s pass. 50 ms between probes:
    an answer other than 200 comes back at once, and probing again at once would be a flood
    (a 482 for each merged probe did that in session 62's CI)."""
    deadline = time.monotonic() + timeout
    while not options_ok(port):
        if process.poll() is not None:
            raise RuntimeError(
                f"gateway exited with {process.returncode} at start-up:\n" + tail(log_path)
            )
        if time.monotonic() > deadline:
            raise RuntimeError("gateway did not answer OPTIONS:\n" + tail(log_path))
        time.sleep(0.05)


class GatewayProcess:
    """A running ``voipgw`` listening on UDP and TCP 127.0.0.1:``port``.

    ``workdir`` (usually ``tmp_path``) receives ``voipgw.toml``, ``state/`` and ``gateway.log``.
    ``accounts`` maps account names to passwords. ``settings`` adds or replaces keys of the
    generated tables (``{"sip": {"t1": 0.1}, "gateway": {"log_level": "debug"}}``);
    ``extra_toml`` is appended verbatim after them (``[[trunks]]`` tables, plugin tables).
    ``digest_algorithms`` defaults to MD5 first for sipp 3.6, which answers only the first
    challenge; baresip 1.0.0 fails on any SHA-256 challenge and needs ``("MD5",)``.

    ``port`` and ``state_dir`` (default: a free port, ``workdir/state``) let a second gateway
    take over from a stopped one, as after a restart: same SIP port, same store of accounts
    and registrations. Its ``accounts`` are then usually empty (they are in the store already).
    ``env`` adds to the gateway process's environment (``PYTHONPATH`` of a plugin installed for
    the test). ``allowed_warnings``: regular expressions of the WARNING/ERROR lines the test
    provokes on purpose; any other such line fails :meth:`start` when written by the time the
    gateway answers, and :meth:`stop` (the ``with`` block) when written later, up to SIGTERM.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        accounts: Mapping[str, str] | None = None,
        settings: Mapping[str, Mapping[str, TomlValue]] | None = None,
        extra_toml: str = "",
        digest_algorithms: Sequence[str] = ("MD5", "SHA-256"),
        media_port_count: int = 100,
        start_timeout: float = 60.0,
        port: int | None = None,
        state_dir: Path | None = None,
        env: Mapping[str, str] | None = None,
        allowed_warnings: Sequence[str] = (),
    ) -> None:
        self.workdir = workdir
        self.allowed_warnings = tuple(allowed_warnings)
        self.env = dict(env or {})
        self.accounts = dict(accounts or {})
        # Bound seconds from now (the accounts added, the interpreter started; more on a loaded
        # machine: the compiled-relay test runs two test processes beside the suite), so a port
        # of this process's locked units (ports.py), never a port-0 probe's. Kept after stop():
        # a second gateway may take over the port.
        self.port = free_port_pair() if port is None else port
        media_low = free_port_block(media_port_count)
        #: Inclusive range of the relay's media ports, for captures and assertions.
        self.media_ports = (media_low, media_low + media_port_count - 1)
        self.config_path = workdir / "voipgw.toml"
        self.state_dir = workdir / "state" if state_dir is None else state_dir
        self.log_path = workdir / "gateway.log"
        self.start_timeout = start_timeout
        tables: dict[str, dict[str, TomlValue]] = {
            "gateway": {
                "state_dir": str(self.state_dir),
                "digest_algorithms": list(digest_algorithms),
            },
            "sip": {"listen": [f"udp:{LOOPBACK}:{self.port}", f"tcp:{LOOPBACK}:{self.port}"]},
            "media": {"address": LOOPBACK, "ports": f"{media_low}-{self.media_ports[1]}"},
        }
        for table, keys in (settings or {}).items():
            tables.setdefault(table, {}).update(keys)
        self.config_text = toml_tables(tables) + extra_toml
        self.process: subprocess.Popen[bytes] | None = None
        #: Exit code after stop(); None while running or before start().
        self.returncode: int | None = None
        # Where this start's lines begin in the (appended-to) log.
        self._log_start = 0
        #: The WARNING/ERROR lines not allowed that this run wrote up to SIGTERM (after stop()).
        self.run_problems: list[str] = []

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT``, the target for sipp."""
        return f"{LOOPBACK}:{self.port}"

    def uri(self, user: str, transport: str | None = None) -> str:
        """``sip:user@127.0.0.1:PORT`` (with ``;transport=`` when given)."""
        suffix = f";transport={transport}" if transport else ""
        return f"sip:{user}@{LOOPBACK}:{self.port}{suffix}"

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``voipgw ARGS --config FILE``; raises with the output when it fails."""
        command = [sys.executable, "-m", "gateway", *args, "--config", str(self.config_path)]
        result = subprocess.run(
            command,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**os.environ, **self.env},
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"voipgw {args[0]} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
            )
        return result

    def cli_until(self, done: Callable[[str], bool], *args: str, timeout: float = 15.0) -> str:
        """``voipgw ARGS`` again until ``done(stdout)`` holds; its last output. For ``voipgw
        calls``: call records reach the store in batches, a moment after the call changed."""
        deadline = time.monotonic() + timeout
        while True:
            out = self.cli(*args).stdout
            if done(out) or time.monotonic() > deadline:
                return out
            time.sleep(0.05)

    def add_account(self, name: str, password: str) -> None:
        """``voipgw accounts add NAME --password PW`` against this gateway's store."""
        self.cli("accounts", "add", name, "--password", password)

    def add_accounts(self, accounts: Mapping[str, str]) -> None:
        """``voipgw accounts add NAME --password PW`` for each account, all in one Python
        process: the CLI's own ``main``, but the interpreter start and the import of the
        gateway (most of a second each) paid once per gateway instead of once per account."""
        if not accounts:
            return
        pairs = [item for account in accounts.items() for item in account]
        command = [sys.executable, "-c", _ADD_ACCOUNTS, str(self.config_path), *pairs]
        result = subprocess.run(
            command,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**os.environ, **self.env},
        )
        added = sum(line.startswith("added ") for line in result.stdout.splitlines())
        if result.returncode != 0 or added != len(accounts):
            raise RuntimeError(
                f"voipgw accounts add failed ({result.returncode}, {added} of {len(accounts)} "
                f"added):\n{result.stdout}{result.stderr}"
            )

    def start(self) -> None:
        """Write the config, add the accounts, start and wait for 200 to OPTIONS."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config_text)
        self.add_accounts(self.accounts)
        # The log is appended to (a restart in the same directory): this start's lines follow.
        log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._log_start = log_start
        self.process = start_process(
            [sys.executable, "-m", "gateway", "run", "--config", str(self.config_path)],
            log=self.log_path,
            cwd=REPO_ROOT,
            env={"PYTHONUNBUFFERED": "1", **self.env},
        )
        # A bound for a gateway that never comes up, not a timing: a healthy start answers in
        # 1-3 s, but with `[media] workers = 2` on a loaded 2-CPU machine it was seen listening
        # after 14 s with its workers still starting at 20 s (session 36); polled, so the bound
        # costs nothing when the start is quick.
        wait_until_answering(self.port, self.process, self.start_timeout, self.log_path)
        started = self.log_path.read_bytes()[log_start:].decode(errors="replace")
        problems = startup_problems(started, self.allowed_warnings)
        if problems:
            raise RuntimeError(
                "gateway started with warnings or errors the test does not expect "
                "(allowed_warnings):\n" + "\n".join(problems)
            )

    def problems(self) -> list[str]:
        """The WARNING/ERROR lines this run has written so far that the test does not allow
        (``allowed_warnings``, :data:`ENVIRONMENT_WARNINGS`)."""
        try:
            written = self.log_path.read_bytes()[self._log_start :]
        except FileNotFoundError:
            return []
        return startup_problems(written.decode(errors="replace"), self.allowed_warnings)

    def stop(self, timeout: float = 10.0, *, check: bool = True) -> int:
        """SIGTERM, wait ``timeout`` s, SIGKILL; the exit code (also in ``returncode``).
        With ``check`` (the default), an AssertionError once the process is gone when the run
        wrote WARNING/ERROR lines the test does not allow before SIGTERM (:meth:`problems`)."""
        if self.process is None:
            raise RuntimeError("gateway was not started")
        if self.returncode is None:
            # The test's end: what the gateway logs while it stops is not the test's.
            self.run_problems = self.problems()
            self.returncode = stop_process(self.process, sig=signal.SIGTERM, timeout=timeout)
            low, high = self.media_ports
            release_port_block(low, high - low + 1)  # the process is gone, its sockets too
            if check and self.run_problems:
                raise AssertionError(
                    "the gateway logged warnings or errors the test does not expect "
                    "(allowed_warnings):\n" + "\n".join(self.run_problems)
                )
        return self.returncode

    def log_text(self) -> str:
        """Everything the gateway has written to stdout and stderr so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_log(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        """Poll the log until ``pattern`` (a regex) matches; the match, or AssertionError."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while (match := regex.search(self.log_text())) is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} not in the gateway log:\n{tail(self.log_path)}")
            time.sleep(0.05)
        return match

    def __enter__(self) -> GatewayProcess:
        try:
            self.start()
        except BaseException:
            if self.process is not None:
                stop_process(self.process, timeout=2.0)
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        returncode = self.stop(check=False)
        if exc is not None:
            # A failing body's own error is the report; the log's lines follow it.
            print(f"--- gateway log ({self.log_path}), exit code {returncode} ---")
            print(tail(self.log_path, 200))
            return
        assert returncode == 0, f"gateway exited with {returncode}:\n{tail(self.log_path)}"
        assert not self.run_problems, (
            "the gateway logged warnings or errors the test does not expect "
            "(allowed_warnings):\n" + "\n".join(self.run_problems)
        )
