"""Soak voipgw under a realistic mixed load and show whether anything grows per call.

Run from the repository root (sipp from the distribution: ``apt-get install sip-tester``)::

    python benchmarks/soak.py                          # 10 minutes at 50 calls/s
    python benchmarks/soak.py --minutes 30 --rate 80
    python benchmarks/soak.py --minutes 0.2            # a smoke run
    python benchmarks/soak.py --media-workers 2        # the relay in two worker processes

It starts ``python -m gateway run`` from this script's own tree (UDP and TLS on 127.0.0.1, the
metrics plugin on the loopback, Timer C ``[sip] ring_timeout`` = ``--ring-timeout``, 5 s),
stunnel, the callees (sipp UASes, each registered as an account's phone first, and one serving
the ``carrier`` trunk) and, for ``--minutes``, one sipp UAC per kind of call, their rates shares
of ``--rate`` (:data:`MIX`):

- ``rtp``: the trunk ``pbx`` calls the phone ``ans``; answered, 1 s of PCMU RTP from the caller
  through the relay (sipp ``rtp_stream``), held ``--hold-ms``, BYE;
- ``auth``: the account ``alice`` calls the ``carrier`` trunk, challenged 407 (digest MD5),
  answered;
- ``busy``: the phone ``busy`` answers 486;
- ``cancel``: the phone ``ring`` rings; the caller CANCELs after 1 s;
- ``hold``: answered, re-INVITE a=sendonly (hold), re-INVITE a=sendrecv (resume), BYE;
- ``sdes``: the caller offers RTP/SAVP with an SDES ``a=crypto`` line over TLS (sipp over TCP
  into stunnel: Debian's sipp has no TLS, and the gateway takes SDES keys only over TLS); the
  caller's leg is SRTP, the phone ``srtp`` (UDP) gets plain RTP; no media flows;
- ``timeout``: the phone ``ring`` never answers: the gateway's Timer C CANCELs it and answers 408;

plus REGISTER refreshes from a pool of ``--users`` accounts (each challenged) and OPTIONS pings,
each at a tenth of ``--rate``. Every ``--sample-seconds`` it reads the gateway's RSS (VmRSS), its
open file descriptors (/proc/PID/fd), the size of its state directory (the SQLite store) and the
metrics exporter's ``voipgw_internal_entries`` (calls, SIP transactions and their timers, flows,
media streams and port pairs, dialog maps, call-limit tables, digest nonces, IP caches, trio
tasks, the interpreter's allocated blocks, the C allocator's bytes in use and free:
docs/metrics.md); with ``--media-workers N`` (``[media]
workers``, 2 or more) also the workers' RSS and open files, summed over them, and
``voipgw_media_worker_restarts_total`` (a restart ends that worker's calls: flagged) and the
workers' own tables (``voipgw_media_worker_internal_entries``, each summed over the workers as
``workers_<table>``). It prints a row per sample and at
the end the growth of each figure per 1000 calls (slope of a least-squares fit against calls
started over the second half of the samples taken while every load generator ran, past the
warm-up), the idle value before the load and the value once drained (the calls ended,
transactions gone: up to ``--drain-seconds`` after the load). ``--tracemalloc`` traces the
gateway's allocations and prints where what it holds drained, and not idle, was allocated.
``--gc-stats`` times the cyclic collector's collections in the gateway (benchmarks/gc_stats/, as
``sip_calls.py --gc-stats``) and prints their totals per generation and every pause of
``GC_PAUSE_SHOWN`` or longer, with when it ended, to set beside overload refusals and lost ACKs.
A table that is larger drained than idle before, or a process figure (RSS, FDs, allocated
blocks, the C allocator's bytes in use) whose growth per 1000 calls is above its threshold, is
flagged LEAK?; the allocator's free bytes are marked ``free`` (kept by glibc, not held by the
gateway), and an RSS is judged by its growth less theirs (a heap's holes are no leak).

Ports: one block of real ports from tests/port_blocks.py (the lock the tests use, so a test run
or another benchmark on the machine never takes them). Every process started is stopped at the
end. The machine's load average is printed at the start and the end: on a shared machine say it
with the figures.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import urllib.request
from pathlib import Path

import attrs
from bench_children import die_with_parent
from bench_ports import port_block
from gateway_config import LOOPBACK, TRUNK_IP, gateway_config
from sip_calls import (
    GC_STATS_HOOK,
    REPO_ROOT,
    child_pids,
    gc_snapshot,
    register_phone,
    require_free,
    rss_kib,
    sipp_base,
    stop,
    versions,
    wait_udp_port,
)

TRACEMALLOC_HOOK = Path(__file__).resolve().parent / "tracemalloc_hook"
ALICE, PASSWORD = "alice", "wonderland"
CARRIER_NUMBER = "+4989555"
RING_TIMEOUT = 5.0  # [sip] ring_timeout (--ring-timeout): how long a "timeout" call rings
# --gc-stats lists the collector's pauses this long or longer: a sixth of [sip]
# overload_queue_delay's default, well above a young collection's few milliseconds.
GC_PAUSE_SHOWN = 0.05


@attrs.frozen
class Kind:
    """One kind of call: its UAC scenario, share of --rate, callee, how long it is held."""

    name: str
    share: float
    scenario: str
    callee: str  # an account (a phone) or the carrier trunk's number
    uas: str  # the callee's UAS (a key of UAS)
    hold_ms: int | None = None  # None: --hold-ms
    auth: bool = False  # alice from 127.0.0.1, challenged; else the trunk pbx
    tls: bool = False  # over TCP into stunnel, which carries it over TLS to the gateway


MIX = (
    Kind("rtp", 0.26, "soak_uac_rtp.xml", "ans", "ans"),
    Kind("auth", 0.15, "uac_call_auth.xml", CARRIER_NUMBER, "carrier", auth=True),
    Kind("busy", 0.10, "soak_uac_rejected.xml", "busy", "busy"),
    Kind("cancel", 0.10, "soak_uac_cancel.xml", "ring", "ring", hold_ms=1000),
    Kind("hold", 0.15, "soak_uac_reinvite.xml", "hold", "hold", hold_ms=1000),
    Kind("sdes", 0.20, "soak_uac_srtp.xml", "srtp", "srtp", tls=True),
    Kind("timeout", 0.04, "soak_uac_timeout.xml", "ring", "ring"),
)
# The callees' phones REGISTER once, before their UASes bind the port the binding names, and
# nothing refreshes them: for a day, which the gateway's [registrar] max_expires is raised to
# (its default, 7200 s, bounded a soak to 116 minutes; Expires 3600, as sip_calls.py registers,
# lost every callee an hour into the first 90-minute soak: every call to them 480).
CALLEE_EXPIRES = 86400
# Callees: UAS name -> (scenario, account registered from its port, or None for the trunk).
UAS = {
    "ans": ("uas_answer.xml", "ans"),
    "carrier": ("uas_answer.xml", None),
    "busy": ("soak_uas_busy.xml", "busy"),
    "ring": ("soak_uas_ring.xml", "ring"),
    "hold": ("soak_uas_reinvite.xml", "hold"),
    # The gateway sends no SDES keys over UDP (RFC 4568 §8.1): it offers this phone plain RTP.
    "srtp": ("uas_answer.xml", "srtp"),
}
# Figures that are bounded caches, or grow by design: reported, never flagged.
# Flows: one per peer address (a fixed set here), forgotten when idle ([sip] flow idle time);
# the store keeps every call's record for [store] call_record_days (for ever by default).
BOUNDED = {
    "ip_literal_cache",
    "ip_facts_cache",
    "digest_nonces_tracked",
    "flows",
    "flows_by_remote",
    "store_kib",
    "workers_reserved_port_pairs",  # --media-workers: up to 64 a worker, refilled
}
# Process figures: flagged when their growth per 1000 calls is above this.
THRESHOLDS = {
    "rss_kib": 64.0,
    "fds": 0.5,
    "python_allocated_blocks": 500.0,
    "workers_rss_kib": 64.0,  # --media-workers: summed over the workers
    "workers_python_allocated_blocks": 500.0,
    "malloc_in_use_bytes": 65536.0,  # the C allocator's bytes handed out, as RSS's 64 KiB
    "workers_malloc_in_use_bytes": 65536.0,
}
# The C allocator's free bytes inside its heap: memory freed below a chunk still in use, which
# glibc keeps (fragmentation); not a leak by itself (gateway/core/c_heap.py). An RSS is judged
# by its growth less theirs: what the process holds, not the holes its heap keeps.
ALLOCATOR_FREE = {"malloc_free_bytes", "workers_malloc_free_bytes"}
RSS_FREE_BYTES = {"rss_kib": "malloc_free_bytes", "workers_rss_kib": "workers_malloc_free_bytes"}
# (The workers' open files are nearly all the calls' media sockets, up and down with the calls
# sampled: flagged as a table is, when more are open drained than idle.)
# The columns of the table printed over time (all figures are in the final summary).
COLUMNS = (
    ("calls", "calls_started"),
    ("active", "calls"),
    ("RSS MiB", "rss_kib"),
    ("FDs", "fds"),
    ("tasks", "trio_tasks"),
    ("txns", "sip_transactions"),
    ("dialogs", "call_dialogs"),
    ("flows", "flows"),
    ("ports", "media_port_pairs"),
    ("blocks k", "python_allocated_blocks"),
    ("store KiB", "store_kib"),
    ("regs", "registrations"),
)
# With --media-workers N (N >= 2): the worker processes' figures, summed over them.
WORKER_COLUMNS = (
    ("workers", "workers"),
    ("wRSS MiB", "workers_rss_kib"),
    ("wFDs", "workers_fds"),
)


@attrs.frozen
class Ports:
    gateway: int
    gateway_tls: int
    stunnel: int  # stunnel's TCP listener for the TLS calls
    metrics: int
    uas: dict[str, int]
    uac: dict[str, int]
    register: int
    options: int
    media: str  # the gateway's [media] ports
    sipp_media: list[int]  # one per sipp, 4 ports each


def allocate_ports() -> Ports:
    sip = port_block(100)
    sipp_media = port_block(100)  # sipp binds -mp to -mp + 3 (RTP, RTCP, video RTP, RTCP)
    media = port_block(2000)
    it = iter(range(sip.start, sip.stop, 2))
    gateway, gateway_tls, stunnel, metrics = next(it), next(it), next(it), next(it)
    uas = {name: next(it) for name in UAS}
    uac = {kind.name: next(it) for kind in MIX}
    register, options = next(it), next(it)
    return Ports(
        gateway,
        gateway_tls,
        stunnel,
        metrics,
        uas,
        uac,
        register,
        options,
        f"{media.start}-{media.stop - 1}",
        list(range(sipp_media.start, sipp_media.stop, 4)),
    )


def voipgw_config(
    state_dir: Path,
    ports: Ports,
    users: int,
    call_record_days: float | None = None,
    ring_timeout: float = RING_TIMEOUT,
    media_workers: int = 1,
) -> str:
    """voipgw's configuration (benchmarks/gateway_config.py): UDP and TLS, the metrics plugin,
    Timer C at ``ring_timeout`` seconds, ``[media] workers`` = ``media_workers``, and
    registrations granted up to :data:`CALLEE_EXPIRES`."""
    # [store] call_record_days: the default (0: for ever) unless asked; a fraction of a day
    # shows within a run that the store stops growing once the housekeeping deletes records.
    store = (
        "" if call_record_days is None else f"[store]\ncall_record_days = {call_record_days!r}\n"
    )
    tables = f"""\
[registrar]
max_expires = {CALLEE_EXPIRES}

[plugins]
enable = ["udp", "tls", "sdes", "metrics"]

[plugins.metrics]
listen = "{LOOPBACK}:{ports.metrics}"

"""
    return gateway_config(
        state_dir,
        listen=[f"udp:{LOOPBACK}:{ports.gateway}", f"tls:{LOOPBACK}:{ports.gateway_tls}"],
        media_ports=ports.media,
        carrier_port=ports.uas["carrier"],
        sections=f"{store}\n{tables}",
        sip_lines=f"ring_timeout = {ring_timeout}\n",
        media_lines=f"workers = {media_workers}\n",
    )


def sipp(
    scenario: str,
    *,
    local_ip: str,
    port: int,
    media_port: int,
    rundir: Path,
    extra: list[str],
) -> list[str]:
    """sip_calls.py's :func:`~sip_calls.sipp_base`, its statistics to ``rundir``/stats.csv
    every 5 s, then ``extra``."""
    return [
        *sipp_base(scenario, local_ip=local_ip, port=port, media_port=media_port, rundir=rundir),
        "-trace_stat",
        "-stf",
        str(rundir / "stats.csv"),
        "-fd",
        "5",
        *extra,
    ]


def rate_args(rate: float) -> list[str]:
    """sipp's -r is calls per -rp milliseconds: tenths of a call per second, evenly spread."""
    return ["-r", str(max(1, round(rate * 10))), "-rp", "10000"]


@attrs.define(eq=False)
class Soak:
    args: argparse.Namespace
    workdir: Path
    ports: Ports = attrs.field(factory=allocate_ports)
    gateway: subprocess.Popen[bytes] | None = None
    processes: list[subprocess.Popen[bytes]] = attrs.field(factory=list)
    uacs: dict[str, subprocess.Popen[bytes]] = attrs.field(factory=dict)
    registrar_client: RegisterPool | None = None
    _media: list[int] = attrs.field(factory=list)
    _snapshots: int = 0
    # --gc-stats: the collector's totals per generation (collections, clock s, CPU s, objects
    # walked) and its long pauses by when they ended (time.monotonic, system-wide on Linux):
    # (generation, clock s, CPU s, objects walked).
    gc_totals: list[list[float]] | None = None
    gc_pauses: dict[float, tuple[int, float, float, int]] = attrs.field(factory=dict)

    def media_port(self) -> int:
        if not self._media:
            self._media = list(self.ports.sipp_media)
        return self._media.pop(0)

    @property
    def config(self) -> Path:
        return self.workdir / "voipgw.toml"

    @property
    def gc_stats_path(self) -> Path:
        return self.workdir / "gc-stats.json"

    def read_gc_stats(self) -> None:
        """Keep the hook's latest totals and the long pauses it remembers (it keeps the last
        2000 of 1 ms or more, so this runs at every sample)."""
        snapshot = gc_snapshot(self.gc_stats_path if self.args.gc_stats else None)
        if snapshot is None:
            return
        self.gc_totals = snapshot["totals"]
        for end, generation, took, cpu, walked in snapshot["pauses"]:
            if took >= GC_PAUSE_SHOWN:
                self.gc_pauses[end] = (generation, took, cpu, walked)

    def add_accounts(self, names: list[str]) -> None:
        """``voipgw accounts add NAME --password ...`` for each name, all in one interpreter:
        a process each took over a second apiece (importing the gateway)."""
        code = (
            "import sys\n"
            "from gateway.core.cli import main\n"
            "config, password, *names = sys.argv[1:]\n"
            "for name in names:\n"
            "    argv = ['accounts', 'add', name, '--password', password, '--config', config]\n"
            "    if main(argv) != 0:\n"
            "        sys.exit(f'voipgw accounts add {name} failed')\n"
        )
        subprocess.run(
            [sys.executable, "-c", code, str(self.config), PASSWORD, *names],
            cwd=REPO_ROOT,
            check=True,
            capture_output=True,
            timeout=60,
        )

    def start(self) -> None:
        state = self.workdir / "state"
        self.config.write_text(
            voipgw_config(
                state,
                self.ports,
                self.args.users,
                self.args.call_record_days,
                self.args.ring_timeout,
                self.args.media_workers,
            )
        )
        require_free(self.ports.gateway, self.ports.metrics, *self.ports.uas.values())
        phones = sorted({account for _, account in UAS.values() if account is not None})
        self.add_accounts([ALICE, *phones, *self.users()])
        env = dict(os.environ)
        if self.args.tracemalloc:
            path = [str(TRACEMALLOC_HOOK), env.get("PYTHONPATH", "")]
            env["PYTHONPATH"] = os.pathsep.join(p for p in path if p)
            env["VOIPGW_TRACEMALLOC"] = str(self.workdir / "tracemalloc")
        if self.args.gc_stats:
            path = [str(GC_STATS_HOOK), env.get("PYTHONPATH", "")]
            env["PYTHONPATH"] = os.pathsep.join(p for p in path if p)
            env["VOIPGW_GC_STATS"] = str(self.gc_stats_path)
        with open(self.workdir / "gateway.log", "wb") as log:
            self.gateway = subprocess.Popen(
                [sys.executable, "-m", "gateway", "run", "--config", str(self.config)],
                cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=die_with_parent,  # no group signal reaches it (bench_children.py)
            )
        # Tracing every allocation from the first import slows the start-up several times.
        wait_udp_port(self.ports.gateway, self.gateway, 120.0 if self.args.tracemalloc else 20.0)
        self.start_stunnel()
        target = f"{LOOPBACK}:{self.ports.gateway}"
        for name, (scenario, account) in UAS.items():
            port = self.ports.uas[name]
            media = self.media_port()
            rundir = self.workdir / f"uas-{name}"
            rundir.mkdir()
            if account is not None:  # the phone registers from the port its UAS answers on
                register_phone(
                    sipp(
                        "register.xml",
                        local_ip=LOOPBACK,
                        port=port,
                        media_port=media,
                        rundir=rundir,
                        extra=["-m", "1", "-timeout", "10s", "-timeout_error"],
                    ),
                    target=target,
                    account=account,
                    password=PASSWORD,
                    rundir=rundir,
                    expires=CALLEE_EXPIRES,
                )
            self.processes.append(
                self.spawn(
                    sipp(
                        scenario,
                        local_ip=LOOPBACK,
                        port=port,
                        media_port=media,
                        rundir=rundir,
                        extra=[],
                    ),
                    rundir,
                )
            )
            wait_udp_port(port, self.processes[-1])

    def start_stunnel(self) -> None:
        """The TLS client of the SDES calls: sipp's TCP in on 127.0.0.1, TLS out to the gateway
        from 127.0.0.2 (the trunk pbx's address). It checks no certificate: the gateway's is
        the one it generated at start-up."""
        rundir = self.workdir / "stunnel"
        rundir.mkdir()
        conf = rundir / "stunnel.conf"
        conf.write_text(
            f"""\
foreground = yes
pid =
output = {rundir / "stunnel.log"}
[sip-tls-out]
client = yes
accept = {LOOPBACK}:{self.ports.stunnel}
connect = {LOOPBACK}:{self.ports.gateway_tls}
local = {TRUNK_IP}
verifyChain = no
"""
        )
        self.processes.append(self.spawn(["stunnel", str(conf)], rundir))
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as probe:
                if probe.connect_ex((LOOPBACK, self.ports.stunnel)) == 0:
                    return
            if self.processes[-1].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"stunnel did not start, see {rundir}")
            time.sleep(0.05)

    def users(self) -> list[str]:
        return [f"u{i:03d}" for i in range(1, self.args.users + 1)]

    def spawn(self, command: list[str], rundir: Path) -> subprocess.Popen[bytes]:
        screen = open(rundir / "screen.log", "wb")  # noqa: SIM115 (closed with the process)
        try:
            return subprocess.Popen(
                command,
                cwd=rundir,
                stdin=subprocess.DEVNULL,
                stdout=screen,
                stderr=screen,
                preexec_fn=die_with_parent,
            )
        finally:
            screen.close()

    def start_load(self) -> None:
        args = self.args
        seconds = args.minutes * 60
        target = f"{LOOPBACK}:{self.ports.gateway}"
        for kind in MIX:
            rate = args.rate * kind.share
            calls = max(1, round(rate * seconds))
            rundir = self.workdir / f"uac-{kind.name}"
            rundir.mkdir()
            if kind.name == "rtp":
                (rundir / "rtp.pcmu").write_bytes(b"\xff" * 8000)  # 1 s of PCMU silence
            local_ip = LOOPBACK if kind.auth or kind.tls else TRUNK_IP
            extra = [
                f"{LOOPBACK}:{self.ports.stunnel}" if kind.tls else target,
                "-s",
                kind.callee,
                "-key",
                "caller",
                ALICE if kind.auth else "+4940777",
                *rate_args(rate),
                "-m",
                str(calls),
                "-l",
                "5000",
                "-d",
                str(kind.hold_ms if kind.hold_ms is not None else args.hold_ms),
                "-recv_timeout",
                "15000",
                "-timeout",
                f"{seconds + 60:g}s",
            ]
            if kind.auth:
                extra += ["-au", ALICE, "-ap", PASSWORD, "-auth_uri", f"{kind.callee}@{target}"]
            command = sipp(
                kind.scenario,
                local_ip=local_ip,
                port=self.ports.uac[kind.name],
                media_port=self.media_port(),
                rundir=rundir,
                extra=extra,
            )
            if kind.tls:
                command[command.index("u1")] = "t1"
            self.uacs[kind.name] = self.spawn(command, rundir)
        rate = args.rate / 10
        self.registrar_client = RegisterPool(
            self.users(), (LOOPBACK, self.ports.gateway), self.ports.register, rate, seconds
        )
        self.registrar_client.start()
        rundir = self.workdir / "options"
        rundir.mkdir()
        self.uacs["options"] = self.spawn(
            sipp(
                "soak_options.xml",
                local_ip=LOOPBACK,
                port=self.ports.options,
                media_port=self.media_port(),
                rundir=rundir,
                extra=[
                    target,
                    *rate_args(rate),
                    "-m",
                    str(max(1, round(rate * seconds))),
                    "-timeout",
                    f"{seconds + 60:g}s",
                ],
            ),
            rundir,
        )

    def load_running(self) -> bool:
        pool = self.registrar_client
        return any(p.poll() is None for p in self.uacs.values()) or (
            pool is not None and pool.is_alive()
        )

    def snapshot(self) -> tracemalloc.Snapshot:
        """A tracemalloc snapshot from the gateway (``--tracemalloc``: SIGUSR1 to its hook)."""
        assert self.gateway is not None
        self._snapshots += 1
        path = self.workdir / f"tracemalloc-{self._snapshots}"
        self.gateway.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 120
        while not path.with_suffix(".done").exists():
            if time.monotonic() > deadline:
                raise RuntimeError("the gateway wrote no tracemalloc snapshot")
            time.sleep(0.2)
        return tracemalloc.Snapshot.load(str(path.with_suffix(".snap")))

    def load_full(self) -> bool:
        pool = self.registrar_client
        return all(p.poll() is None for p in self.uacs.values()) and (
            pool is not None and pool.is_alive()
        )

    def stop_all(self) -> None:
        if self.registrar_client is not None:
            self.registrar_client.stopping.set()
            self.registrar_client.join()
        for process in [*self.uacs.values(), *self.processes]:
            if process.returncode is None:
                stop(process)
        stop(self.gateway)


class RegisterPool(threading.Thread):
    """REGISTER refreshes from a pool of users, each in turn, at ``rate`` per second for
    ``seconds``, each challenged and answered with digest MD5, qop=auth (RFC 3261 §22.4,
    RFC 7616 §3.4), Contact on this socket, Expires 600. In Python rather than sipp: sipp
    3.6 takes the credentials from -au/-ap alone, one user per process."""

    def __init__(
        self,
        users: list[str],
        gateway: tuple[str, int],
        port: int,
        rate: float,
        seconds: float,
    ) -> None:
        super().__init__(daemon=True)
        self.users, self.gateway, self.rate, self.seconds = users, gateway, rate, seconds
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOOPBACK, port))
        self.sock.settimeout(2.0)
        self.stopping = threading.Event()
        self.ok = self.failed = 0
        # A UA keeps one Call-ID per registrar and raises CSeq on each REGISTER (RFC 3261
        # §10.2.4): the registrar refuses a lower one for that Call-ID (§10.3 step 7).
        self._call_ids = {user: f"soak-{os.urandom(6).hex()}-{user}@{LOOPBACK}" for user in users}
        self._cseq = dict.fromkeys(users, 0)

    def run(self) -> None:
        count = max(1, round(self.rate * self.seconds))
        started = time.monotonic()
        try:
            for n in range(count):
                wait = started + n / self.rate - time.monotonic()
                if self.stopping.wait(max(0.0, wait)):
                    return
                user = self.users[n % len(self.users)]
                if self.register(user, n):
                    self.ok += 1
                else:
                    self.failed += 1
        finally:
            self.sock.close()

    def register(self, user: str, n: int) -> bool:
        host, port = self.gateway
        local = self.sock.getsockname()
        call_id = self._call_ids[user]
        uri = f"sip:{host}:{port}"
        authorization = None
        for attempt in (1, 2):
            self._cseq[user] += 1
            cseq = self._cseq[user]
            branch = f"z9hG4bK-soak-{n}-{attempt}"
            lines = [
                f"REGISTER {uri} SIP/2.0",
                f"Via: SIP/2.0/UDP {local[0]}:{local[1]};branch={branch};rport",
                f"From: <sip:{user}@{host}:{port}>;tag=soak{n}",
                f"To: <sip:{user}@{host}:{port}>",
                f"Call-ID: {call_id}",
                f"CSeq: {cseq} REGISTER",
                f"Contact: <sip:{user}@{local[0]}:{local[1]};transport=udp>",
                "Max-Forwards: 70",
                "Expires: 600",
            ]
            if authorization is not None:
                lines.append(f"Authorization: {authorization}")
            self.sock.sendto(
                ("\r\n".join([*lines, "Content-Length: 0", "", ""])).encode(), self.gateway
            )
            status, challenge = self._final(branch)
            if status == 200:
                return True
            if status != 401 or challenge is None or attempt == 2:
                return False
            authorization = _digest(challenge, user, PASSWORD, "REGISTER", uri)
        return False

    def _final(self, branch: str) -> tuple[int | None, str | None]:
        """The final response of the transaction ``branch``: (status, WWW-Authenticate)."""
        deadline = time.monotonic() + 4.0
        while time.monotonic() < deadline:
            try:
                data = self.sock.recv(65535).decode(errors="replace")
            except (TimeoutError, OSError):
                return None, None
            if branch not in data:
                continue  # a late answer to an earlier request
            status = int(data.split(" ", 2)[1])
            if status < 200:
                continue
            challenge = next(
                (
                    line.split(":", 1)[1].strip()
                    for line in data.split("\r\n")
                    if line.lower().startswith("www-authenticate:")
                ),
                None,
            )
            return status, challenge
        return None, None


def _digest(challenge: str, user: str, password: str, method: str, uri: str) -> str:
    """An Authorization value answering the Digest ``challenge`` (MD5, qop=auth)."""
    fields = dict(re.findall(r'(\w+)="?([^",]*)"?', challenge.removeprefix("Digest ")))
    realm, nonce = fields["realm"], fields["nonce"]
    cnonce, nc = os.urandom(8).hex(), "00000001"

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()  # RFC 2617's digest, not a secret's hash

    ha1, ha2 = md5(f"{user}:{realm}:{password}"), md5(f"{method}:{uri}")
    response = md5(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")
    opaque = f', opaque="{fields["opaque"]}"' if "opaque" in fields else ""
    return (
        f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
        f'response="{response}", algorithm=MD5, qop=auth, nc={nc}, cnonce="{cnonce}"{opaque}'
    )


# -- samples ----------------------------------------------------------------------------------

_SAMPLE = re.compile(r'^(voipgw_[a-z_]+)(?:\{table="([a-z_]+)"\})? ([0-9.e+-]+)$')
_RESTARTS = re.compile(r'^voipgw_media_worker_restarts_total\{reason="[a-z_]+"\} ([0-9.e+-]+)$')
_WORKER_TABLE = re.compile(
    r'^voipgw_media_worker_internal_entries\{worker="[0-9]+",table="([a-z_]+)"\} ([0-9.e+-]+)$'
)


def sample(soak: Soak, started: float) -> dict[str, float]:
    """One sample of every figure; keys as :data:`COLUMNS` and the internal tables."""
    assert soak.gateway is not None
    pid = soak.gateway.pid
    found: dict[str, float] = {"t": time.monotonic() - started, "rss_kib": rss_kib(pid)}
    found["fds"] = open_files(pid)
    if soak.args.media_workers > 1:
        workers = child_pids(pid)
        found["workers"] = len(workers)
        found["workers_rss_kib"] = sum(rss_kib(worker) for worker in workers)
        found["workers_fds"] = sum(open_files(worker) for worker in workers)
        found["worker_restarts"] = 0.0
    state = soak.workdir / "state"
    found["store_kib"] = sum(p.stat().st_size for p in state.rglob("*") if p.is_file()) / 1024
    url = f"http://{LOOPBACK}:{soak.ports.metrics}/metrics"
    with urllib.request.urlopen(url, timeout=10) as answer:
        text = answer.read().decode()
    for line in text.splitlines():
        restarts = _RESTARTS.match(line)
        if restarts is not None:
            found["worker_restarts"] += float(restarts.group(1))  # each ended its calls
            continue
        worker_table = _WORKER_TABLE.match(line)
        if worker_table is not None:  # summed over the workers, as their RSS
            key = f"workers_{worker_table.group(1)}"
            found[key] = found.get(key, 0.0) + float(worker_table.group(2))
            continue
        match = _SAMPLE.match(line)
        if match is None:
            continue
        name, table, value = match.groups()
        if table is not None:
            found[table] = float(value)
        elif name == "voipgw_calls_started_total":
            found["calls_started"] = float(value)
        elif name == "voipgw_registration_bindings":
            found["registrations"] = float(value)
    found["sip_transactions"] = found.get("sip_client_transactions", 0) + found.get(
        "sip_server_transactions", 0
    )
    return found


def open_files(pid: int) -> float:
    """How many file descriptors ``pid`` has open (NaN if it is gone)."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return float("nan")


def columns(row: dict[str, float]) -> tuple[tuple[str, str], ...]:
    return COLUMNS + (WORKER_COLUMNS if "workers" in row else ())


def print_header(row: dict[str, float]) -> None:
    print(f"{'t s':>6s} " + " ".join(f"{name:>9s}" for name, _ in columns(row)), flush=True)


def print_row(row: dict[str, float], note: str = "") -> None:
    cells = []
    for _, key in columns(row):
        value = row.get(key, float("nan"))
        if key in ("rss_kib", "workers_rss_kib"):
            value /= 1024
        elif key == "python_allocated_blocks":
            value /= 1000
        cells.append(
            f"{value:9.1f}"
            if key in ("rss_kib", "workers_rss_kib", "python_allocated_blocks")
            else f"{value:9.0f}"
        )
    print(f"{row['t']:6.0f} " + " ".join(cells) + (f"  {note}" if note else ""), flush=True)


def slope(xs: list[float], ys: list[float], live: list[float]) -> float:
    """The coefficient b of the least-squares fit y = a + b*x + c*live: growth with calls
    started once the calls up at each sample (which hold ports, FDs, transactions ...) are
    accounted for; without variation in ``live``, the plain slope of ys against xs."""
    n = len(xs)
    if len(set(xs)) < 2:
        return 0.0
    mx, my, ml = statistics.fmean(xs), statistics.fmean(ys), statistics.fmean(live)
    dx = [x - mx for x in xs]
    dy = [y - my for y in ys]
    dl = [v - ml for v in live]
    sxx = sum(a * a for a in dx)
    sll = sum(a * a for a in dl)
    sxl = sum(a * b for a, b in zip(dx, dl, strict=True))
    sxy = sum(a * b for a, b in zip(dx, dy, strict=True))
    sly = sum(a * b for a, b in zip(dl, dy, strict=True))
    det = sxx * sll - sxl * sxl
    if n < 4 or det <= 1e-9 * sxx * max(sll, 1e-9):
        return sxy / sxx
    return (sxy * sll - sly * sxl) / det


def summary(idle: dict[str, float], load: list[dict[str, float]], drained: dict[str, float]) -> int:
    """Print the growth table; return the number of figures flagged."""
    half = load[len(load) // 2 :]  # past the warm-up
    calls = [row["calls_started"] for row in half]
    keys = sorted({k for row in load for k in row} - {"t", "calls_started"})
    print()
    print(
        f"Growth per 1000 calls: least-squares fit against calls started and calls up, over the "
        f"second half of the full load ({len(half)} samples, "
        f"calls {calls[0]:.0f} to {calls[-1]:.0f}); idle before the load, drained after it."
    )
    print(
        f"| {'figure':31s} | {'per 1000 calls':>14s} | {'idle':>10s} | {'drained':>10s} | verdict |"
    )
    print(f"|{'-' * 33}|{'-' * 16}|{'-' * 12}|{'-' * 12}|---------|")
    live = [row.get("calls", 0.0) for row in half]
    growths = {
        key: 1000 * slope(calls, [row.get(key, float("nan")) for row in half], live) for key in keys
    }
    flagged = 0
    for key in keys:
        growth = growths[key]
        before, after = idle.get(key, float("nan")), drained.get(key, float("nan"))
        if key in BOUNDED:
            verdict = "bounded"
        elif key in ALLOCATOR_FREE:
            verdict = "free"
        elif key in THRESHOLDS:
            held = growth - growths.get(RSS_FREE_BYTES.get(key, ""), 0.0) / 1024
            verdict = "LEAK?" if held > THRESHOLDS[key] else "ok"
        elif key == "registrations":
            verdict = "ok" if after <= before + len(UAS) + 1000 else "LEAK?"
        else:
            verdict = "LEAK?" if after > before else "ok"
        flagged += verdict == "LEAK?"
        print(f"| {key:31s} | {growth:14.2f} | {before:10.0f} | {after:10.0f} | {verdict:7s} |")
    return flagged


def quiet(
    soak: Soak, started: float, seconds: float, every: float | None = None
) -> dict[str, float]:
    """Samples until no call is up and no SIP transaction is left (a server transaction stays
    64*T1 = 32 s after its final response, Timers J and L; a client INVITE transaction after
    its 2xx, Timer M: RFC 3261 §17, RFC 6026), or ``seconds`` passed; the last sample."""
    deadline = time.monotonic() + seconds
    shown = time.monotonic()
    while True:
        row = sample(soak, started)
        settled = row.get("calls", 1) == 0 and row["sip_transactions"] == 0
        if settled or time.monotonic() > deadline:
            return row
        if every is not None and time.monotonic() - shown >= every:
            print_row(row, "draining")
            shown = time.monotonic()
        time.sleep(2.0)


def print_growth(
    title: str, before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, calls: float
) -> None:
    """Where the memory held ``after``, and not ``before``, was allocated: the top lines, then
    the whole traceback of the top three."""
    print()
    print(f"tracemalloc, {title} ({calls:.0f} calls; gc.collect() before each snapshot):")
    for stat in after.compare_to(before, "lineno")[:15]:
        per = 1000 * stat.size_diff / calls if calls else 0.0
        print(
            f"  {stat.size_diff / 1024:+9.1f} KiB {stat.count_diff:+7d} blocks "
            f"({per:+8.0f} B/1000 calls)  {stat.traceback[0]}"
        )
    for stat in after.compare_to(before, "traceback")[:3]:
        print(f"  {stat.size_diff / 1024:+9.1f} KiB {stat.count_diff:+7d} blocks, allocated at:")
        for line in stat.traceback.format()[-20:]:
            print(f"      {line}")


def gc_report(soak: Soak, load_started: float) -> None:
    """--gc-stats: the collector's totals per generation and its pauses of GC_PAUSE_SHOWN or
    longer, each with the second of the load it ended in (the clock time counts waits for a
    CPU; the CPU time is the collector's own work)."""
    if soak.gc_totals is None:
        return
    print()
    totals = ", ".join(
        f"gen{generation} {n:.0f}x {clock:.1f} s (CPU {cpu:.1f} s)"
        for generation, (n, clock, cpu, _) in enumerate(soak.gc_totals)
    )
    print(f"cyclic collector in the gateway: {totals}")
    print(f"its pauses of {1000 * GC_PAUSE_SHOWN:.0f} ms or more (s into the load: generation,")
    print("clock ms, CPU ms, objects walked):")
    for end in sorted(soak.gc_pauses):
        generation, took, cpu, walked = soak.gc_pauses[end]
        print(
            f"  {end - load_started:8.1f}: gen{generation} {1000 * took:5.0f} ms "
            f"(CPU {1000 * cpu:4.0f}) {walked / 1000:5.0f}k objects"
        )


def uac_report(soak: Soak) -> None:
    print()
    print("sipp UACs: successful / failed (failures: see the work directory's errors.log)")
    for name, process in soak.uacs.items():
        stats = (
            soak.workdir / ("uac-" + name if name in {k.name for k in MIX} else name) / "stats.csv"
        )
        ok = failed = "?"
        if stats.exists():
            rows = [line.split(";") for line in stats.read_text().splitlines() if line]
            if len(rows) >= 2:
                row = dict(zip(rows[0], rows[-1], strict=False))
                ok, failed = row.get("SuccessfulCall(C)", "?"), row.get("FailedCall(C)", "?")
        print(f"  {name:9s} exit {process.returncode}  ok {ok}  failed {failed}")
    pool = soak.registrar_client
    if pool is not None:
        print(f"  REGISTER  ok {pool.ok}  failed {pool.failed}")


def run(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="soak-"))
    print(f"work directory (logs, sipp traces): {workdir}", flush=True)
    soak = Soak(args, workdir)
    flagged = 0
    try:
        soak.start()
        started = time.monotonic()
        idle = quiet(soak, started, args.drain_seconds)  # the set-up's REGISTERs' transactions
        before = soak.snapshot() if args.tracemalloc else None
        print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print_header(idle)
        print_row(idle, "idle")
        soak.start_load()
        load_started = time.monotonic()
        warm: tracemalloc.Snapshot | None = None  # --tracemalloc: a third into the load
        warm_calls = 0.0
        load: list[dict[str, float]] = []
        next_at = time.monotonic() + args.sample_seconds
        full: list[dict[str, float]] = []  # samples while every load generator runs
        while soak.load_running():
            time.sleep(max(0.0, min(1.0, next_at - time.monotonic())))
            if soak.gateway is not None and soak.gateway.poll() is not None:
                raise RuntimeError(f"the gateway exited ({soak.gateway.returncode})")
            if time.monotonic() >= next_at:
                load.append(sample(soak, started))
                soak.read_gc_stats()
                print_row(load[-1])
                if soak.load_full():
                    full.append(load[-1])
                    third = args.minutes * 20  # seconds: a third of the load
                    if before is not None and warm is None and next_at - load_started > third:
                        warm = soak.snapshot()
                        warm_calls = load[-1]["calls_started"]
                next_at += args.sample_seconds
        load.append(sample(soak, started))
        soak.read_gc_stats()
        print_row(load[-1], "load ended")
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        drained = quiet(soak, started, args.drain_seconds, every=args.sample_seconds)
        print_row(drained, "drained")
        uac_report(soak)
        gc_report(soak, load_started)
        if before is not None:
            end = soak.snapshot()
            print_growth("drained minus idle", before, end, drained["calls_started"])
            if warm is not None:
                calls = drained["calls_started"] - warm_calls
                print_growth("drained minus a third into the load", warm, end, calls)
        flagged = summary(idle, full or load, drained)
    finally:
        soak.stop_all()
    print(f"\n{flagged} figure(s) flagged; logs in {workdir}", flush=True)
    return 1 if flagged else 0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="how long the load runs")
    parser.add_argument("--rate", type=float, default=50.0, help="calls/s of the whole mix")
    parser.add_argument("--hold-ms", type=int, default=2000, help="answered calls' length")
    parser.add_argument("--users", type=int, default=20, help="REGISTER pool size")
    parser.add_argument("--sample-seconds", type=float, default=10.0)
    parser.add_argument(
        "--ring-timeout",
        type=float,
        default=RING_TIMEOUT,
        help="[sip] ring_timeout (Timer C): how long a 'timeout' call rings; above 1 s, the "
        "'cancel' calls' ringing",
    )
    parser.add_argument(
        "--drain-seconds",
        type=float,
        default=60.0,
        help="at most this long before and after the load for calls and transactions to end "
        "(Timer J: 32 s)",
    )
    parser.add_argument(
        "--call-record-days",
        type=float,
        default=None,
        help="[store] call_record_days (default: the gateway's, 90); e.g. 0.0005 (43 s) shows "
        "the store stop growing once the housekeeping (every 30 s) deletes records",
    )
    parser.add_argument(
        "--tracemalloc",
        action="store_true",
        help="trace the gateway's allocations (benchmarks/tracemalloc_hook/; it runs about "
        "twice as slow) and print where what it holds drained, and not idle, was allocated",
    )
    parser.add_argument(
        "--gc-stats",
        action="store_true",
        help="time the cyclic collector's collections in the gateway (benchmarks/gc_stats/) "
        f"and list its pauses of {1000 * GC_PAUSE_SHOWN:.0f} ms or more",
    )
    parser.add_argument(
        "--media-workers",
        type=int,
        default=1,
        help="run voipgw with [media] workers = N (default 1: the relay in the gateway's "
        "process); with 2 or more the workers' RSS and open files are sampled too, summed, "
        "and a worker restart (each ends its calls) is flagged",
    )
    args = parser.parse_args()
    # Set-up (up to a minute with --tracemalloc), the idle drain, the load, the drain after it.
    longest = (CALLEE_EXPIRES - 120 - 2 * args.drain_seconds) / 60
    if args.minutes > longest:
        parser.error(
            f"--minutes: at most {longest:g} with --drain-seconds {args.drain_seconds:g}: the "
            f"callees' phones register once, for {CALLEE_EXPIRES} s ([registrar] max_expires)"
        )
    print(f"soak: {versions()}", flush=True)
    mix = ", ".join(f"{k.name} {100 * k.share:.0f} %" for k in MIX)
    print(
        f"{args.minutes:g} min at {args.rate:g} calls/s ({mix}); REGISTER and OPTIONS "
        f"{args.rate / 10:g}/s each; {args.users} users",
        flush=True,
    )
    sys.exit(run(args))


if __name__ == "__main__":
    main()
