"""Benchmark SIP calls per second through voipgw, beside sipp direct and sippy's B2BUA in one run.

Run from the repository root (about 4 minutes with the defaults; ``pip install .[bench]`` brings
sippy, sipp comes from the distribution: ``apt-get install sip-tester``)::

    python benchmarks/sip_calls.py
    python benchmarks/sip_calls.py --modes noauth --rates 200 400 600 800 --step-seconds 10
    python benchmarks/sip_calls.py --systems voipgw --rates 600     # one system, one rate

Every call is INVITE (SDP offer) - 100 - 200 (SDP answer) - ACK - BYE - 200 over UDP on
127.0.0.1, held ``--hold-ms`` (200 ms) between ACK and BYE: with no hold at all sippy's B2BUA
leaves a BYE that arrives right behind the ACK unanswered until sipp retransmits it. The caller
is a sipp UAC (benchmarks/scenarios/uac_call*.xml), the callee a sipp UAS (uas_answer*.xml).
Systems (``--systems``), each run at the same rates:

- ``floor``: the UAC calls the UAS directly: what sipp and the loopback cost, the ceiling any
  B2BUA can reach on this machine.
- ``voipgw``: ``python -m gateway run`` (log level info, to a file, as an operator runs it)
  between them, with a media session per call (two port pairs from ``--media-ports``; the
  relay forwards nothing since sipp sends no RTP).
- ``sippy``: sippy's B2BUA (``b2bua -u -A 0 -s UAS``: no RADIUS, no accounting, a static route
  to the UAS), signalling only (no rtpproxy: it sets up no media).

Modes (``--modes``):

- ``noauth``: nobody is challenged. For voipgw the caller is a trunk recognised by its source
  address (the UAC binds 127.0.0.2, ``allowed_sources``) calling the account ``alice``, whose
  phone (the UAS) registered its Contact with a REGISTER before the first step; so every INVITE
  costs an account look-up and a registration look-up, as a real inbound call does. (A trunk
  never reaches another trunk, so trunk-to-trunk is no honest route.)
- ``auth``: the caller is the account ``alice`` on 127.0.0.1, challenged with 407 (MD5,
  qop=auth) and calling +4989555, which the ``carrier`` trunk (the UAS) serves. Floor: the UAS
  itself challenges with 401 and verifies the digest (sipp's verifyauth). sippy: not run, its
  B2BUA checks digest credentials only through a RADIUS server (``-u`` turns that off).

For each rate in ``--rates`` (ascending) and each system still passing, one step: a UAS for the
step's calls, then the UAC with ``-r RATE -m RATE*STEP_SECONDS``. A step passes when every call
succeeded at both ends, no request or response was retransmitted (a retransmission means a reply
took over 500 ms: T1, RFC 3261 §17.1.1.2) and set-ups completed at >= 90 % of the rate. A system
stops climbing at its first failed step; its figure is the highest passing rate. ``--rounds N``
climbs the whole ladder N times (the systems' order turned each round; each B2BUA runs on
through all of them) and ends with, per rate, the rounds it passed in and the median of the
rounds' figures: on a shared VM one climb can pass or fail a rate with the host's hour. Past
its rate voipgw refuses new calls with 503 rather than letting them time out (``[sip]
overload_queue_delay``): a failing step shows those as ``failed N (refused M)``, M being the calls
sipp saw end with a reply its scenario does not expect.

Figures per step:

- cps: completed set-ups per second (sipp's response-time timestamps, first to last);
- set-up p50/p99 (ms): from the (first) INVITE sent to the 200 received, as the UAC saw it
  (sipp's response time 1, ``-trace_rtt``); for ``auth`` it includes the challenge round trip.
  sipp measures in whole milliseconds on its own clock tick: 0-1 ms values mean "less than
  about a millisecond";
- CPU/call (us): the B2BUA process's CPU time (user + system, every thread, from
  /proc/PID/task/TID/schedstat) over the step divided by the calls; for ``floor`` the UAS's;
- load (% of one core): B2BUA, UAC and UAS (sipp's own rusage from wait4), over the step;
- wait (%): the share of the step the B2BUA was runnable but had no CPU (schedstat): contention.

voipgw keeps every transaction 64*T1 = 32 s after its call (RFC 3261 Timers J, RFC 6026 L and
M), so the higher the rate, the more objects Python's cyclic garbage collector walks on each full
collection, and the longer each such pause (hundreds of ms at a few hundred calls/s: they set
the p99). ``voipgw run`` therefore freezes its start-up objects and sets the collector's
thresholds to ``[gateway] gc_thresholds`` (10000, 10, 10 by default); ``--gateway-gc G0,G1,G2``
runs it with other thresholds (``--gateway-gc 700,10,10``: Python's own defaults) to show what
the policy changes. ``--gc-stats`` times every collection inside voipgw (benchmarks/gc_stats/,
loaded through ``PYTHONPATH``) and prints, per step and generation, the collections, their clock
time, their CPU time and the objects they walked, the CPU time's share of the gateway's CPU, the
objects walked per call attempted (independent of the load, unlike the times) and the longest
pause by the clock (which counts waits for a CPU: on a loaded machine 3-7 times the CPU time);
run long steps (``--step-seconds 30``) to see the heap at its size under sustained load, since
transactions live 32 s.

The machine has 2 vCPUs and sipp needs CPU too: the UAC, the UAS and the B2BUA share them, and
loopback delivery is charged to the sending process. The load generator is not the bottleneck
when the floor passes a higher rate than a B2BUA and the UAC's load stays below ~80 % of a core
at that B2BUA's failing rate; the summary prints both. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
from bench_children import die_with_parent
from bench_ports import media_ports_text
from gateway_config import LOOPBACK, TRUNK_IP, gateway_config

REPO_ROOT = Path(__file__).resolve().parents[1]
GC_STATS_HOOK = Path(__file__).resolve().parent / "gc_stats"
SCENARIOS = Path(__file__).resolve().parent / "scenarios"

# The first of the 100 SIP and sipp ports (--sip-port-base): above the kernel's ephemeral range
# (32768-60999 here), where no other program's outgoing sockets land and the tests and the other
# benchmarks pick none (they stay below 32768); each step checks they are free first and says so
# when they are not.
SIP_PORT_BASE = 62060
MEDIA_PORTS = 4000  # --media-ports' block: 1000 calls at once, two RTP/RTCP pairs each


@attrs.frozen
class Ports:
    """The sipp ports of one system's runs. Every system has its own, so that a late
    retransmission from one B2BUA never reaches the peers of the next system's run."""

    uac: int
    uas: int  # the callee: the floor's UAS, voipgw's trunk "carrier", sippy's static route
    phone: int  # voipgw noauth: alice's registered phone
    uac_media: int  # sipp binds these (and +2) but sends no RTP
    uas_media: int


# Each system's ports as offsets from --sip-port-base (62062, 62070 ... by default).
OFFSETS = {
    "floor": Ports(uac=2, uas=10, phone=10, uac_media=40, uas_media=50),
    "voipgw": Ports(uac=4, uas=14, phone=12, uac_media=60, uas_media=70),
    "sippy": Ports(uac=6, uas=16, phone=16, uac_media=80, uas_media=90),
}


@attrs.frozen
class SipPorts:
    """The 100 ports from ``base`` (--sip-port-base) a run's SIP and sipp use: the B2BUAs'
    listeners and each system's :class:`Ports`."""

    base: int

    @property
    def b2bua(self) -> int:
        """voipgw's UDP listener."""
        return self.base

    @property
    def sippy(self) -> int:
        return self.base + 30

    def of(self, system: str) -> Ports:
        return Ports(*(self.base + offset for offset in attrs.astuple(OFFSETS[system])))


ACCOUNT, PASSWORD = "alice", "wonderland"
TRUNK_NUMBER = "+4989555"
MODES = ("noauth", "auth")
SYSTEMS = ("floor", "voipgw", "sippy")
SIPP_TIMEOUT_SLACK = 20.0  # seconds a step may run past its nominal length before it is stopped


def voipgw_config(
    state_dir: Path,
    sip: SipPorts,
    media_ports: str,
    gc_thresholds: str | None,
    media_workers: int = 1,
    recordings: Path | None = None,
) -> str:
    """voipgw's configuration (benchmarks/gateway_config.py): UDP only, the trunk ``carrier``
    served by the voipgw system's UAS; ``gc_thresholds`` ("G0,G1,G2") replaces the shipped
    collector thresholds; ``media_workers`` is ``[media] workers``; ``recordings``: the
    ``recorder`` tap records every call into that directory (the calls carry no RTP, so no
    file is written: what a recorded call costs the SIP side)."""
    gc_line = f"gc_thresholds = [{gc_thresholds}]\n" if gc_thresholds else ""
    plugins = ""
    if recordings is not None:
        plugins = (
            '[plugins]\nenable = ["udp", "tcp", "tls", "sdes", "dtls", "recorder"]\n\n'
            f'[plugins.recorder]\nall_calls = true\ndirectory = "{recordings}"\n\n'
        )
    return gateway_config(
        state_dir,
        listen=[f"udp:{LOOPBACK}:{sip.b2bua}"],
        media_ports=media_ports,
        carrier_port=sip.of("voipgw").uas,
        gateway_lines=gc_line,
        sections=plugins,
        media_lines=f"workers = {media_workers}\n",
    )


# -- processes and their CPU ----------------------------------------------------------------


def schedstat(pid: int) -> tuple[float, float]:
    """(seconds on a CPU, seconds runnable but waiting for one) summed over the threads of
    ``pid``, from /proc/PID/task/TID/schedstat (the scheduler's nanosecond clocks)."""
    run = wait = 0
    for task in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        try:
            with open(task) as f:
                fields = f.read().split()
        except OSError:
            continue  # the thread ended meanwhile
        run += int(fields[0])
        wait += int(fields[1])
    return run / 1e9, wait / 1e9


def child_pids(pid: int) -> list[int]:
    """The child processes of ``pid`` now (voipgw's: its media workers)."""
    children: list[int] = []
    for path in glob.glob(f"/proc/{pid}/task/*/children"):
        try:
            with open(path) as f:
                children += [int(child) for child in f.read().split()]
        except OSError:
            continue  # the thread ended meanwhile
    return children


def children_schedstat(pid: int) -> float:
    """Seconds on a CPU of the child processes of ``pid`` (its media workers), summed over
    their threads (0 without children)."""
    return sum(schedstat(child)[0] for child in child_pids(pid))


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB (VmRSS of /proc/PID/status), 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def wait_child(
    process: subprocess.Popen[bytes],
    timeout: float,
    on_poll: Callable[[], None] | None = None,
) -> tuple[int, float]:
    """Wait for a child we started (SIGTERM at ``timeout``, SIGKILL 3 s later); (exit code,
    its CPU seconds, user + system, from wait4's rusage). ``on_poll`` runs every 20 ms meanwhile."""
    deadline = time.monotonic() + timeout
    signals = [signal.SIGTERM, signal.SIGKILL]
    while True:
        if on_poll is not None:
            on_poll()
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            process.returncode = os.waitstatus_to_exitcode(status)
            return process.returncode, usage.ru_utime + usage.ru_stime
        if time.monotonic() > deadline:
            if not signals:
                raise RuntimeError(f"pid {process.pid} survived SIGKILL")
            process.send_signal(signals.pop(0))
            deadline = time.monotonic() + 3.0
        time.sleep(0.02)


def stop(process: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM, then SIGKILL after 5 s, to ``process`` and its process group; a process already
    gone is fine. The B2BUAs start in a group of their own (``start_new_session``), so a
    ``--gateway-prefix`` command that forks the gateway instead of exec'ing it does not leave
    the gateway running on the benchmark's ports after the run."""
    if process is None:
        return
    group = _own_group(process)
    if process.poll() is None:
        _signal(process, group, signal.SIGTERM)
        try:
            process.wait(5.0)
        except subprocess.TimeoutExpired:
            _signal(process, group, signal.SIGKILL)
            process.wait(5.0)
    if group is not None:
        _wait_group_gone(group)


def _own_group(process: subprocess.Popen[bytes]) -> int | None:
    """``process``'s process group if it leads one (started with ``start_new_session``)."""
    try:
        group = os.getpgid(process.pid)
    except ProcessLookupError:
        return None
    return group if group == process.pid else None


def _signal(process: subprocess.Popen[bytes], group: int | None, signum: int) -> None:
    try:
        if group is None:
            process.send_signal(signum)
        else:
            os.killpg(group, signum)
    except ProcessLookupError:
        pass


def _wait_group_gone(group: int) -> None:
    """The rest of the group (a prefix's children) has 5 s after SIGTERM, then SIGKILL."""
    for signum in (signal.SIGTERM, signal.SIGKILL):
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            try:
                os.killpg(group, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        try:
            os.killpg(group, signum)
        except ProcessLookupError:
            return
    raise RuntimeError(f"process group {group} survived SIGKILL")


def require_free(*ports: int) -> None:
    """RuntimeError naming the first of ``ports`` that another process holds on 127.0.0.1 (a
    clash would otherwise look like a failed call)."""
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind((LOOPBACK, port))
            except OSError:
                raise RuntimeError(f"UDP port {port} is taken by another process") from None


def wait_udp_port(port: int, process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """Until something binds UDP 127.0.0.1:``port`` (the peer is up) or ``process`` exits."""
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind((LOOPBACK, port))
            except OSError:
                return  # taken: the peer listens
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with {process.returncode} at start-up")
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing listens on UDP {port} after {timeout:g} s")
        time.sleep(0.05)


def sipp_base(
    scenario: str, *, local_ip: str, port: int, media_port: int, rundir: Path
) -> list[str]:
    """The sipp command line both SIP benchmarks start with (soak.py too): ``scenario`` over
    UDP from ``local_ip``:``port``, media ports from ``media_port``, 4 MiB socket buffers, no
    keyboard, errors to ``rundir``/errors.log."""
    return [
        "sipp",
        "-sf",
        str(SCENARIOS / scenario),
        "-t",
        "u1",
        "-i",
        local_ip,
        "-p",
        str(port),
        "-bind_local",
        "-mi",
        local_ip,
        "-mp",
        str(media_port),
        "-nostdin",
        "-buff_size",
        str(4 * 1024 * 1024),
        "-trace_err",
        "-error_file",
        str(rundir / "errors.log"),
    ]


def sipp_command(
    scenario: str,
    *,
    local_ip: str,
    port: int,
    media_port: int,
    calls: int,
    timeout: float,
    rundir: Path,
    hold_ms: int = 0,
) -> list[str]:
    """:func:`sipp_base` for ``calls`` calls held ``hold_ms`` each, failing after ``timeout``."""
    return [
        *sipp_base(scenario, local_ip=local_ip, port=port, media_port=media_port, rundir=rundir),
        "-m",
        str(calls),
        "-d",
        str(hold_ms),
        "-timeout",
        f"{timeout:g}s",
        "-timeout_error",
    ]


def register_phone(
    sipp: list[str],
    *,
    target: str,
    account: str,
    password: str,
    rundir: Path,
    expires: int = 3600,
) -> None:
    """One REGISTER of ``account`` to ``target`` with digest authentication: ``sipp``, a command
    line for register.xml and one call, from the port the phone's UAS answers on afterwards (the
    gateway reaches a registered contact over the flow its REGISTER came from), for ``expires``
    seconds: the UAS holds the port, so nothing refreshes the binding. Also soak.py's."""
    register = subprocess.run(
        [
            *sipp,
            target,
            *("-s", account, "-au", account, "-ap", password),
            *("-key", "expires", str(expires)),
        ],
        cwd=rundir,
        capture_output=True,
        timeout=30,
        check=False,
    )
    if register.returncode != 0:
        raise RuntimeError(f"REGISTER of {account} failed ({register.returncode}), see {rundir}")


# -- the systems under test -------------------------------------------------------------------


@attrs.define(eq=False)
class System:
    """A B2BUA between the UAC and the UAS (or none, for the floor)."""

    name: str
    workdir: Path
    sip: SipPorts
    process: subprocess.Popen[bytes] | None = None
    gc_stats: Path | None = None  # voipgw with --gc-stats: where its collector totals appear

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def supports(self, mode: str) -> bool:
        return not (self.name == "sippy" and mode == "auth")

    def start(self, args: argparse.Namespace) -> None:
        if self.name == "voipgw":
            self._start_voipgw(args)
        elif self.name == "sippy":
            self._start_sippy()

    def _start_voipgw(self, args: argparse.Namespace) -> None:
        state = self.workdir / "state"
        config = self.workdir / "voipgw.toml"
        require_free(self.sip.b2bua, self.sip.of("voipgw").phone)
        config.write_text(
            voipgw_config(
                state,
                self.sip,
                args.media_ports,
                args.gateway_gc,
                args.media_workers,
                recordings=self.workdir / "recordings" if args.record else None,
            )
        )
        command = [sys.executable, "-m", "gateway"]
        subprocess.run(
            [*command, "accounts", "add", ACCOUNT, "--password", PASSWORD, "--config", str(config)],
            cwd=REPO_ROOT,
            check=True,
            capture_output=True,
            timeout=60,
        )
        prefix = shlex.split(args.gateway_prefix) if args.gateway_prefix else []
        run = [*prefix, *command, "run", "--config", str(config)]
        env = dict(os.environ)
        if args.gc_stats:
            self.gc_stats = self.workdir / "gc-stats.json"
            path = [str(GC_STATS_HOOK), env.get("PYTHONPATH", "")]
            env["PYTHONPATH"] = os.pathsep.join(p for p in path if p)
            env["VOIPGW_GC_STATS"] = str(self.gc_stats)
        with open(self.workdir / "gateway.log", "wb") as log:
            self.process = subprocess.Popen(
                run,
                cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # stop() ends whatever a --gateway-prefix forked
                preexec_fn=die_with_parent,  # no group signal reaches it (bench_children.py)
            )
        # Under a --gateway-prefix such as valgrind, start-up takes minutes, not a second.
        wait_udp_port(self.sip.b2bua, self.process, timeout=300.0 if prefix else 20.0)
        # alice's phone: REGISTER from the port its UAS answers on (the gateway reaches a
        # registered contact over the flow its REGISTER came from).
        rundir = self.workdir / "register"
        rundir.mkdir()
        register_phone(
            sipp_command(
                "register.xml",
                local_ip=LOOPBACK,
                port=self.sip.of("voipgw").phone,
                media_port=self.sip.of("voipgw").uas_media,
                calls=1,
                timeout=10,
                rundir=rundir,
            ),
            target=f"{LOOPBACK}:{self.sip.b2bua}",
            account=ACCOUNT,
            password=PASSWORD,
            rundir=rundir,
        )

    def _start_sippy(self) -> None:
        require_free(self.sip.sippy)
        # The interpreter this script runs on, like voipgw: sippy's script in the same venv first.
        venv_bin = str(Path(sys.executable).parent)
        b2bua = shutil.which("b2bua", path=os.pathsep.join([venv_bin, os.environ.get("PATH", "")]))
        if b2bua is None:
            raise RuntimeError("sippy's b2bua is not installed (pip install sippy)")
        with open(self.workdir / "sippy.log", "wb") as log:
            self.process = subprocess.Popen(
                [
                    b2bua,
                    "-f",  # foreground
                    "-u",  # no RADIUS authentication
                    "-A",
                    "0",  # no accounting
                    "-l",
                    LOOPBACK,
                    "-p",
                    str(self.sip.sippy),
                    "-s",
                    f"{LOOPBACK}:{self.sip.of('sippy').uas}",  # static route: every call to the UAS
                    "-c",
                    str(self.workdir / "b2bua.sock"),
                    "-L",
                    str(self.workdir / "b2bua.log"),
                ],
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Warnings and errors only: at INFO sippy logs every message it sends and
                # receives (voipgw, at its default info, logs a line per call).
                env={**os.environ, "SIPLOG_LVL": "WARN"},
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        wait_udp_port(self.sip.sippy, self.process)

    def stop(self) -> None:
        stop(self.process)
        self.process = None

    def route(self, mode: str) -> tuple[str, int, str, str]:
        """(UAC's local IP, UAS port, callee user, UAS scenario) for ``mode``."""
        ports = self.sip.of(self.name)
        if self.name == "floor":
            scenario = "uas_answer_auth.xml" if mode == "auth" else "uas_answer.xml"
            return LOOPBACK, ports.uas, TRUNK_NUMBER, scenario
        if self.name == "voipgw" and mode == "noauth":
            return TRUNK_IP, ports.phone, ACCOUNT, "uas_answer.xml"
        return LOOPBACK, ports.uas, TRUNK_NUMBER, "uas_answer.xml"


# -- one step ---------------------------------------------------------------------------------


@attrs.frozen
class Step:
    system: str
    mode: str
    rate: float
    calls: int
    ok_calls: int
    failed: int
    retransmissions: int
    unexpected: int  # of the failed: ended by a reply the scenario does not expect (a 503)
    cps: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    cpu_us: float
    b2bua_load: float
    uac_load: float
    uas_load: float
    b2bua_wait: float
    workers_load: float  # the B2BUA's child processes (voipgw's media workers), not in b2bua_load
    window: float
    note: str
    rss_idle_kib: int = 0
    rss_peak_kib: int = 0
    gc: str = ""  # with --gc-stats: the collector's work in the step
    round: int = 1  # with --rounds: which climb of the ladder this step belongs to

    @property
    def passed(self) -> bool:
        return (
            self.failed == 0
            and self.ok_calls == self.calls
            and self.retransmissions == 0
            and self.cps >= 0.9 * self.rate
        )


def gc_snapshot(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    try:
        snapshot: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return snapshot


def gc_note(
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    start: float,
    cpu: float,
    calls: int,
) -> str:
    """The collector's collections per generation between two snapshots with their clock time,
    CPU time and objects walked; the CPU time's share of the step's CPU; objects walked per call;
    and the longest pause (clock, with its CPU time) that ended after ``start``
    (time.monotonic)."""
    if after is None:
        return ""
    old = before["totals"] if before is not None else [[0, 0.0, 0.0, 0]] * 3
    parts = []
    spent = 0.0
    walked = 0
    for generation, (new_total, old_total) in enumerate(zip(after["totals"], old, strict=True)):
        n, clock, used, objects = (a - b for a, b in zip(new_total, old_total, strict=True))
        parts.append(
            f"gen{generation} {n:.0f}x {1000 * clock:.0f} ms (CPU {1000 * used:.0f}) "
            f"{objects / 1000:.0f}k objects"
        )
        spent += used
        walked += int(objects)
    pauses = [(took, used) for end, _, took, used, _ in after["pauses"] if end >= start]
    longest, longest_cpu = max(pauses, default=(0.0, 0.0))
    share = 100 * spent / cpu if cpu > 0 else float("nan")
    return (
        f"GC: {', '.join(parts)}; CPU {share:.1f} % of its CPU, "
        f"{walked / max(calls, 1):.0f} objects walked per call, "
        f"longest pause {1000 * longest:.0f} ms (CPU {1000 * longest_cpu:.0f})"
    )


def _last_stats(path: Path) -> dict[str, str]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f, delimiter=";"))
    if len(rows) < 2:
        return {}
    return dict(zip(rows[0], rows[-1], strict=False))


def _percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_step(system: System, mode: str, rate: float, args: argparse.Namespace) -> Step:
    calls = max(1, round(rate * args.step_seconds))
    rundir = Path(tempfile.mkdtemp(prefix=f"{system.name}-{mode}-{rate:g}-", dir=system.workdir))
    local_ip, uas_port, callee, uas_scenario = system.route(mode)
    ports = system.sip.of(system.name)
    timeout = calls / rate + SIPP_TIMEOUT_SLACK
    uas_dir, uac_dir = rundir / "uas", rundir / "uac"
    uas_dir.mkdir()
    uac_dir.mkdir()
    uas_cmd = sipp_command(
        uas_scenario,
        local_ip=LOOPBACK,
        port=uas_port,
        media_port=ports.uas_media,
        calls=calls,
        timeout=timeout,
        rundir=uas_dir,
    )
    if uas_scenario == "uas_answer_auth.xml":
        uas_cmd += ["-key", "user", ACCOUNT, "-key", "password", PASSWORD]
    target_port = {"floor": ports.uas, "voipgw": system.sip.b2bua, "sippy": system.sip.sippy}[
        system.name
    ]
    target = f"{LOOPBACK}:{target_port}"
    uac_cmd = [
        *sipp_command(
            "uac_call_auth.xml" if mode == "auth" else "uac_call.xml",
            local_ip=local_ip,
            port=ports.uac,
            media_port=ports.uac_media,
            calls=calls,
            timeout=timeout,
            rundir=uac_dir,
            hold_ms=args.hold_ms,
        ),
        target,
        "-s",
        callee,
        "-key",
        "caller",
        ACCOUNT if mode == "auth" else "+4940777",
        "-r",
        f"{rate:g}",
        "-l",
        str(max(1000, calls)),  # open loop: concurrency never limits the offered rate
        "-recv_timeout",
        "10000",
        "-trace_rtt",
        "-rtt_freq",
        "1",  # sipp writes the response times every N calls and drops the remainder at exit
        "-trace_stat",
        "-stf",
        str(uac_dir / "stats.csv"),
    ]
    if mode == "auth":
        uac_cmd += ["-au", ACCOUNT, "-ap", PASSWORD, "-auth_uri", f"{callee}@{target}"]
    require_free(
        uas_port,
        ports.uas_media,
        ports.uas_media + 2,
        ports.uac,
        ports.uac_media,
        ports.uac_media + 2,
    )
    with open(uas_dir / "screen.log", "wb") as screen:
        uas = subprocess.Popen(
            uas_cmd,
            cwd=uas_dir,
            stdin=subprocess.DEVNULL,
            stdout=screen,
            stderr=screen,
            preexec_fn=die_with_parent,
        )
    uac: subprocess.Popen[bytes] | None = None
    try:
        wait_udp_port(uas_port, uas)
        b2bua_pid = system.pid if system.pid is not None else uas.pid
        cpu0, wait0 = schedstat(b2bua_pid)
        workers0 = children_schedstat(b2bua_pid) if system.pid is not None else 0.0
        # Memory: the B2BUA's RSS before the step and its peak while the UAC runs. With
        # --hold-ms longer than the step every call of the step is up at the end of sending,
        # so (peak - idle) / calls is the memory of an active call, SIP and media state alike.
        rss = [rss_kib(b2bua_pid)] * 2

        def sample_rss() -> None:
            rss[1] = max(rss[1], rss_kib(b2bua_pid))

        gc_before = gc_snapshot(system.gc_stats)
        started = time.monotonic()
        with open(uac_dir / "screen.log", "wb") as screen:
            uac = subprocess.Popen(
                uac_cmd,
                cwd=uac_dir,
                stdin=subprocess.DEVNULL,
                stdout=screen,
                stderr=screen,
                preexec_fn=die_with_parent,
            )
        uac_rc, uac_cpu = wait_child(uac, timeout + 5, sample_rss)
        window = time.monotonic() - started
        # The UAS has the final BYE's 200 in flight; it ends once it sent it.
        if system.pid is not None:
            uas_rc, uas_cpu = wait_child(uas, 5.0)
            cpu1, wait1 = schedstat(b2bua_pid)
            workers1 = children_schedstat(b2bua_pid)
        else:
            cpu1, wait1 = schedstat(b2bua_pid)  # the floor's "B2BUA" figure is the UAS itself
            workers1 = 0.0
            uas_rc, uas_cpu = wait_child(uas, 5.0)
    finally:
        for process in (uac, uas):
            if process is not None and process.returncode is None:
                stop(process)
    gc_after = None
    if system.gc_stats is not None:
        time.sleep(0.3)  # the hook writes its totals every 0.2 s
        gc_after = gc_snapshot(system.gc_stats)
    stats = _last_stats(uac_dir / "stats.csv") if (uac_dir / "stats.csv").exists() else {}
    setups: list[float] = []
    stamps: list[float] = []
    for path in glob.glob(str(uac_dir / "*_rtt.csv")):
        with open(path, newline="") as f:
            for row in csv.reader(f, delimiter=";"):
                if len(row) >= 3 and row[2] == "1":
                    stamps.append(float(row[0]))
                    setups.append(float(row[1]))
    span = (max(stamps) - min(stamps)) / 1000 if len(stamps) > 1 else 0.0
    cps = (len(stamps) - 1) / span if span > 0 else 0.0
    notes = []
    if uac_rc != 0:
        notes.append(f"UAC exit {uac_rc}")
    if uas_rc != 0:
        notes.append(f"UAS exit {uas_rc}")
    cpu = cpu1 - cpu0
    return Step(
        system=system.name,
        mode=mode,
        rate=rate,
        calls=calls,
        ok_calls=int(stats.get("SuccessfulCall(C)", 0)),
        failed=int(stats.get("FailedCall(C)", calls)) + (1 if uas_rc != 0 else 0),
        retransmissions=int(stats.get("Retransmissions(C)", 0)),
        unexpected=int(stats.get("FailedUnexpectedMessage(C)", 0)),
        cps=cps,
        p50_ms=statistics.median(setups) if setups else float("nan"),
        p99_ms=_percentile(setups, 0.99),
        max_ms=max(setups, default=float("nan")),
        cpu_us=cpu / calls * 1e6,
        b2bua_load=100 * cpu / window,
        uac_load=100 * uac_cpu / window,
        uas_load=100 * uas_cpu / window,
        b2bua_wait=100 * (wait1 - wait0) / window,
        workers_load=100 * (workers1 - workers0) / window,
        window=window,
        note="; ".join(notes) + (f" (logs: {rundir})" if notes else ""),
        rss_idle_kib=rss[0],
        rss_peak_kib=rss[1],
        gc=gc_note(gc_before, gc_after, started, cpu, calls),
    )


# -- report -----------------------------------------------------------------------------------


def print_step(s: Step) -> None:
    verdict = "pass" if s.passed else "FAIL"
    # voipgw past its call rate refuses new calls with 503 ([sip] overload_queue_delay); sipp
    # counts a call ended by a reply its scenario does not expect as FailedUnexpectedMessage.
    refused = f" (refused {s.unexpected})" if s.unexpected else ""
    print(
        f"  {s.system:6s} {s.mode:6s} rate {s.rate:5g}  {verdict}  ok {s.ok_calls}/{s.calls} "
        f"failed {s.failed}{refused} retrans {s.retransmissions}  cps {s.cps:6.1f}  "
        f"set-up p50 {s.p50_ms:4.0f} p99 {s.p99_ms:4.0f} max {s.max_ms:5.0f} ms  "
        f"CPU {s.cpu_us:5.0f} us/call  load: b2bua {s.b2bua_load:5.1f} % "
        f"uac {s.uac_load:5.1f} % uas {s.uas_load:5.1f} %  b2bua wait {s.b2bua_wait:4.1f} %  "
        + (f"media workers {s.workers_load:5.1f} %  " if s.workers_load else "")
        + f"RSS {s.rss_idle_kib / 1024:.1f} -> {s.rss_peak_kib / 1024:.1f} MiB "
        f"({(s.rss_peak_kib - s.rss_idle_kib) / s.calls:.1f} KiB/call)"
        + (f"  {s.note}" if s.note else ""),
        flush=True,
    )
    if s.gc:
        print(f"         {s.gc}", flush=True)


def print_summary(steps: list[Step], args: argparse.Namespace) -> None:
    print()
    print(
        "Summary. max cps = the highest rate at which every call succeeded with no "
        "retransmission; the other columns are that step's. 'UAC at fail' = the UAC's load at "
        "the system's first failing rate (under ~80 % of a core: sipp was not the limit). "
        f"'@{args.rates[0]:g}' columns: the first rate, the same load for every system."
    )
    for round_number in range(1, args.rounds + 1):
        if args.rounds > 1:
            print(f"\nRound {round_number} of {args.rounds}:")
        print_table([s for s in steps if s.round == round_number], args)
    print("('max cps' ending in + : passed every rate tried; floor's CPU is the UAS's)")
    if args.rounds > 1:
        print()
        for line in rounds_summary(steps, args.modes, args.systems, args.rates, args.rounds):
            print(line)


def rounds_summary(
    steps: Sequence[Step],
    modes: Sequence[str],
    systems: Sequence[str],
    rates: Sequence[float],
    rounds: int,
) -> list[str]:
    """Per mode and system over ``rounds`` climbs: in how many rounds each rate passed (a rate
    above a round's first failure counts as not passed: that round did not reach it), each
    round's max cps, and their median (the lower middle one for an even count: a rate that
    was run). One climb on a shared VM says more about the host's hour than about the B2BUA."""
    lines = [
        f"Over {rounds} rounds: per rate, the rounds it passed in; max cps, each round's and "
        "their median."
    ]
    for mode in modes:
        for name in systems:
            mine = [s for s in steps if s.system == name and s.mode == mode]
            if not mine:
                continue
            passes = [sum(1 for s in mine if s.rate == rate and s.passed) for rate in rates]
            maxima = [
                max((s.rate for s in mine if s.round == r and s.passed), default=0.0)
                for r in range(1, rounds + 1)
            ]
            median = statistics.median_low(maxima)
            per_rate = ", ".join(
                f"{rate:g} {count}/{rounds}" for rate, count in zip(rates, passes, strict=True)
            )
            each = " / ".join(f"{m:g}" if m else f"<{rates[0]:g}" for m in maxima)
            lines.append(
                f"  {mode:6s} {name:6s} passed: {per_rate}; max cps {each}, median "
                + (f"{median:g}" if median else f"<{rates[0]:g}")
            )
    return lines


def print_table(steps: list[Step], args: argparse.Namespace) -> None:
    """The summary table of one climb of the ladder."""
    columns = [
        ("mode", 6),
        ("system", 6),
        ("max cps", 7),
        ("p50 ms", 6),
        ("p99 ms", 6),
        ("CPU us/call", 11),
        ("b2bua %", 7),
        ("uac %", 5),
        ("uas %", 5),
        ("wait %", 6),
        ("UAC at fail", 11),
        (f"p50/p99 @{args.rates[0]:g}", 13),
        (f"CPU @{args.rates[0]:g}", 9),
    ]
    print("| " + " | ".join(f"{name:>{width}s}" for name, width in columns) + " |")
    print("|" + "|".join("-" * (width + 2) for _, width in columns) + "|")
    for mode in args.modes:
        for name in args.systems:
            mine = [s for s in steps if s.system == name and s.mode == mode]
            if not mine:
                continue
            passed = [s for s in mine if s.passed]
            failed = [s for s in mine if not s.passed]
            best = max(passed, key=lambda s: s.rate) if passed else None
            first = mine[0]
            fail_text = f"{failed[0].uac_load:.0f} % @{failed[0].rate:g}" if failed else "none"
            if best is None:
                cells = [mode, name, "<" + f"{args.rates[0]:g}"] + ["-"] * 7
            else:
                cells = [
                    mode,
                    name,
                    f"{best.rate:g}" + ("+" if not failed else ""),
                    f"{best.p50_ms:.0f}",
                    f"{best.p99_ms:.0f}",
                    f"{best.cpu_us:.0f}",
                    f"{best.b2bua_load:.0f}",
                    f"{best.uac_load:.0f}",
                    f"{best.uas_load:.0f}",
                    f"{best.b2bua_wait:.0f}",
                ]
            cells += [fail_text, f"{first.p50_ms:.0f}/{first.p99_ms:.0f}", f"{first.cpu_us:.0f}"]
            print(
                "| "
                + " | ".join(
                    f"{cell:{'<' if i < 2 else '>'}{width}s}"
                    for i, (cell, (_, width)) in enumerate(zip(cells, columns, strict=True))
                )
                + " |",
                flush=True,
            )


def versions() -> str:
    sipp = subprocess.run(["sipp", "-v"], capture_output=True, text=True, check=False)
    sipp_version = next(
        (line.strip() for line in (sipp.stdout + sipp.stderr).splitlines() if "SIPp v" in line),
        "?",
    )
    try:
        from importlib.metadata import version

        sippy = version("sippy")
    except Exception:
        sippy = "not installed"
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return (
        f"{os.cpu_count()} CPUs ({model}), Linux {platform.release()}, "
        f"Python {sys.version.split()[0]} ({sys.executable}: voipgw and sippy both run on it), "
        f"{sipp_version}, sippy {sippy}"
    )


def run(args: argparse.Namespace) -> list[Step]:
    steps: list[Step] = []
    workdir = Path(tempfile.mkdtemp(prefix="sip-calls-"))
    print(f"work directory (logs, sipp traces): {workdir}", flush=True)
    sip = SipPorts(args.sip_port_base)
    systems = {name: System(name, workdir / name, sip) for name in args.systems}
    for system in systems.values():
        system.workdir.mkdir()
    try:
        for round_number in range(1, args.rounds + 1):
            for mode in args.modes:
                steps += climb(systems, mode, round_number, args)
    finally:
        for system in systems.values():
            system.stop()
    if args.clean:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"logs and traces kept in {workdir}", flush=True)
    return steps


def climb(
    systems: dict[str, System], mode: str, round_number: int, args: argparse.Namespace
) -> list[Step]:
    """One climb of the rate ladder in ``mode``: each system runs each rate until its first
    failing step. With ``--rounds N`` the ladder is climbed N times, the systems' order turned
    by one each round, so that none always runs right after another's step (the host's load
    drifts within minutes on a shared VM: docs/benchmarks.md, session 69)."""
    steps: list[Step] = []
    names = [name for name in args.systems if systems[name].supports(mode)]
    turn = (round_number - 1) % len(names) if names else 0
    climbing = [systems[name] for name in names[turn:] + names[:turn]]
    if round_number == 1:
        for name in args.systems:
            if not systems[name].supports(mode):
                print(f"{mode}: {name} not run (its B2BUA checks digest only via RADIUS)")
    for system in climbing:
        if system.process is None:
            system.start(args)
    of_rounds = f", round {round_number} of {args.rounds}" if args.rounds > 1 else ""
    for rate in args.rates:
        if not climbing:
            break
        print(
            f"{mode}, {rate:g} calls/s{of_rounds}, load average {os.getloadavg()[0]:.2f}:",
            flush=True,
        )
        for system in list(climbing):
            if system.process is not None and system.process.poll() is not None:
                print(f"  {system.name} exited ({system.process.returncode})")
                climbing.remove(system)
                continue
            try:
                step = attrs.evolve(run_step(system, mode, rate, args), round=round_number)
            except (RuntimeError, OSError) as exc:  # report, go on with the others
                print(f"  {system.name:6s} {mode:6s} rate {rate:5g}  STEP FAILED: {exc}")
                climbing.remove(system)
                continue
            print_step(step)
            steps.append(step)
            if not step.passed:
                climbing.remove(system)
            time.sleep(args.pause)  # let the B2BUA drain its transaction timers
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS))
    parser.add_argument(
        "--rates",
        nargs="+",
        type=float,
        default=[100, 150, 200, 250, 300, 350, 400, 500, 600, 800, 1000, 1500, 2000],
        help="calls/s to step through, ascending",
    )
    parser.add_argument("--step-seconds", type=float, default=5.0, help="calls = rate x this")
    parser.add_argument("--pause", type=float, default=1.0, help="seconds between steps")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        metavar="N",
        help="climb the ladder N times, the systems' order turned each round; the summary "
        "gives each round's table, then per rate the rounds it passed in and the median max "
        "cps (default 1: one climb, as before)",
    )
    parser.add_argument(
        "--hold-ms",
        type=int,
        default=200,
        help="how long the UAC holds each answered call before its BYE (sipp -d)",
    )
    parser.add_argument(
        "--media-ports",
        metavar="LOW-HIGH",
        help="voipgw's [media] ports (default: a block of 4000, 2000 RTP/RTCP pairs, two per call, "
        "1000 calls at once, claimed with the lock the tests use: benchmarks/bench_ports.py)",
    )
    parser.add_argument(
        "--sip-port-base",
        type=int,
        default=SIP_PORT_BASE,
        help="the first of the 100 ports the B2BUAs and sipp listen on (default: %(default)s, "
        "above Linux's ephemeral range)",
    )
    parser.add_argument(
        "--clean", action="store_true", help="remove the work directory (logs, traces) at the end"
    )
    parser.add_argument(
        "--gateway-gc",
        metavar="G0,G1,G2",
        help="run voipgw with [gateway] gc_thresholds = [G0, G1, G2] (default: as shipped, "
        "10000,10,10; 700,10,10 is Python's own)",
    )
    parser.add_argument(
        "--media-workers",
        type=int,
        default=1,
        metavar="N",
        help="run voipgw with [media] workers = N (default 1: the relay in the SIP process); "
        "with N >= 2 the CPU per call and the b2bua load are the SIP process's, and the "
        "workers' load is printed beside them",
    )
    parser.add_argument(
        "--record",
        action="store_true",
        help="run voipgw with the recorder tap recording every call ([plugins.recorder] "
        "all_calls = true; no RTP flows, so no file is written): what recording costs a call",
    )
    parser.add_argument(
        "--gc-stats",
        action="store_true",
        help="time voipgw's garbage collections and print their share and longest pause per step",
    )
    parser.add_argument(
        "--gateway-prefix",
        metavar="COMMAND",
        help="run voipgw's `python -m gateway run` under COMMAND (split like a shell would), "
        "e.g. 'valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.%%p' for instructions "
        "per call (docs/benchmarks.md, the fourth SIP pass). The CPU figures are the prefix "
        "process's: a prefix that forks the gateway (py-spy record) measures itself; attach "
        "py-spy with -p instead",
    )
    args = parser.parse_args()
    args.rates = sorted(args.rates)
    if args.rounds < 1:
        parser.error("--rounds: at least 1")
    if args.media_ports is None:
        args.media_ports = media_ports_text(MEDIA_PORTS)
    if shutil.which("sipp") is None:
        parser.error("sipp is not installed (apt-get install sip-tester)")
    started = time.monotonic()
    print(f"SIP call rate benchmark: {versions()}", flush=True)
    print(
        f"UDP on {LOOPBACK}, INVITE-100-200-ACK-BYE-200 held {args.hold_ms} ms, "
        f"{args.step_seconds:g} s per step, rates {' '.join(f'{r:g}' for r in args.rates)} "
        f"calls/s"
        + (f", voipgw GC {args.gateway_gc}" if args.gateway_gc else "")
        + (", every call recorded" if args.record else "")
        + (f", {args.rounds} rounds" if args.rounds > 1 else ""),
        flush=True,
    )
    steps = run(args)
    print_summary(steps, args)
    print(f"\ntotal time {time.monotonic() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
