"""Benchmark the media relay (RTP, RTP->SRTP, SRTP->SRTP), beside rtpengine doing the same in the
same run.

Run from the repository root (about 5.5 minutes with the defaults)::

    python benchmarks/relay_srtp.py
    python benchmarks/relay_srtp.py --calls 1000 --seconds 10 --scenarios srtp-srtp
    python benchmarks/relay_srtp.py --relays voipgw          # without rtpengine
    python benchmarks/relay_srtp.py --capacity --seconds 4   # per-core capacity at 1000 calls

Scenarios (``--scenarios``; leg A is the offerer's phone, leg B the answerer's):

- ``rtp-srtp``: A plain RTP, B SDES-SRTP AES_CM_128_HMAC_SHA1_80. The relay protects A->B and
  unprotects B->A.
- ``srtp-srtp``: A AES_CM_128_HMAC_SHA1_80, B AEAD_AES_128_GCM: every packet is unprotected with
  one leg's keys and protected with the other's.
- ``rtp-rtp``: plain forwarding (no SRTP on either leg).

For each scenario and each ``--calls`` count, the two relays back to back with the same load,
``--repeats`` times in A B B A order (a drift in the machine's other load hits both alike):

1. **voipgw**: this process runs gateway.core.media.relay.MediaRelay.serve under trio with one
   stream per call, the SRTP transforms built per direction as gateway/core/media/keying.py
   builds them (``SrtpSession.unprotect_rtp`` of the sending leg, ``protect_rtp`` of the
   receiving leg).
2. **rtpengine** in userspace (``--table=-1``, ``--num-threads`` from ``--rtpengine-threads``,
   on 127.0.0.1, its own port range; started once at the beginning and stopped at the end by
   benchmarks/rtpengine_peer.py): one call per offer/answer over NG, RTP/SAVP towards the SRTP
   phone, the phones' SDES keys chosen here, rtpengine's read from its a=crypto lines. Calls are
   deleted after the run.

The load generator is one or more separate processes (``--generators``, multiprocessing, spawn),
never measured as the relay's CPU: two "phones" per call, each a connected UDP socket facing one
relay port, sending 172-octet RTP (12-octet header + 20 ms of PCMU) at ``--rate`` packets/s,
sequence numbers counting up, SRTP-protected ahead of time with the phone's key (every call uses
the same phone keys, so one precomputed packet list per phone role serves all calls; AES costs
the same whatever the key). Phones count what comes back, and unprotect and compare the payload
of the first ``--verify`` packets each receives with the relay's key towards it: proof that the
relay bridged, not just forwarded.

Figures per run (over the measuring window, after ``--warmup``):

- relayed kpps: packets the phones received per second; offered kpps: packets they sent;
- loss %: 1 - received / sent over the whole run, after a drain (0.5 s of silence);
- CPU us/packet: the relay process's CPU time (all threads, user + system, from
  ``clock_getcpuclockid``) divided by the packets relayed in the window;
- load: relay / generator / others in % of one core; "others" is the CPU time of every other
  task on the machine (/proc/PID/task/TID/schedstat; a lower bound: tasks that end within the
  window are missed). This kernel charges softirq work (loopback delivery into the receiving
  socket) to whichever task runs, mostly the sender: relay and generator;
- waits: % of the window the relay (generator) was runnable but had no CPU (schedstat): the
  direct measure of contention on a 2-CPU machine.

**Capacity** (``--capacity``): per-core throughput is what a relay carries when one core is
its limit, and a relay that keeps up with the offered load says nothing about that: at 100 kpps
offered rtpengine keeps up and its CPU per packet is that of a half-idle poller (9.5-10 us for
the SRTP scenarios), while at 130-160 kpps offered it relays 126-160 kpps at 6.3-8 us. So this
mode finds, for each scenario at the largest ``--calls`` count and for each relay, the highest
load it carries at < 0.1 % loss (issue 7's "throughput at < 0.1 % loss"): steps of fresh calls
at ``--rate`` packets/s per call, multiplied by ``--capacity-step`` while a step passes (divided
while it fails), then one step between the highest pass and the lowest failure. A step passes
when the loss over the whole run is under 0.1 % and the phones received at least 98 % of what
they sent in the window (a relay that falls behind only drains its backlog after the window).
The summary's 1/x is voipgw's capacity over rtpengine's. A step the generator cannot offer
(offered < 95 % of the target) ends that relay's search: its capacity is then "at least" the
last pass. ``--seconds 4`` keeps a full run near 5 minutes.

The generator is not the bottleneck when offered kpps reaches the target (calls x 2 x rate) and
its load stays below 100 % of a core per generator process; the line says when it does not.
Run it on an otherwise idle machine: the load average is printed before each run, and the
summary table takes, of the repeats, the run in which the relay waited least for a CPU.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import functools
import importlib.util
import itertools
import multiprocessing
import multiprocessing.connection
import os
import platform
import select
import socket
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import attrs
import pylibsrtp
import trio

# The installed gateway if there is one (e.g. compiled: VOIPGW_USE_MYPYC=1 pip install .),
# else this source tree. machine_description() says which relay build runs.
if importlib.util.find_spec("gateway") is None:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_children import run_dying_with_parent
from bench_ports import media_ports
from rtpengine_peer import NgClient, NgError, Rtpengine, Srtp, bridge_call, delete_call, running

from gateway.core.config import PortRange
from gateway.core.gateway import relay_build
from gateway.core.interfaces import SrtpKeys
from gateway.core.media.ports import PortAllocator
from gateway.core.media.relay import MediaRelay, MediaStream, Transforms
from gateway.core.media.srtp import SUITES, SrtpSession, libsrtp_version

ADDRESS = "127.0.0.1"
# voipgw's media range: four ports per call (a pair per leg), 1250 calls.
VOIPGW_PORTS = 5000
SLOTS_PER_PACKET_INTERVAL = 10  # spread each 20 ms of sending over 10 slots, not one burst
HEADER = struct.Struct("!BBHII")  # RTP fixed header (RFC 3550 §5.1): V=2, PT 0, seq, ts, SSRC
DRAIN_SILENCE = 0.5
PIPE_TIMEOUT = 60.0  # the longest any step may wait for a generator before the run is abandoned

CM80, GCM128 = "AES_CM_128_HMAC_SHA1_80", "AEAD_AES_128_GCM"
# The suites pylibsrtp names, which the generator's phones can speak.
PHONE_PROFILES = {
    "AES_CM_128_HMAC_SHA1_80": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    "AES_CM_128_HMAC_SHA1_32": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
    "AEAD_AES_128_GCM": pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
    "AEAD_AES_256_GCM": pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM,
}


@attrs.frozen
class Scenario:
    name: str
    title: str
    a_suite: str | None  # None: plain RTP on that leg
    b_suite: str | None


SCENARIOS = {
    s.name: s
    for s in (
        Scenario("rtp-rtp", "RTP->RTP", None, None),
        Scenario("rtp-srtp", "RTP->SRTP (CM_128_80)", None, CM80),
        Scenario("srtp-srtp", "SRTP->SRTP (CM_128_80->GCM_128)", CM80, GCM128),
    )
}


def benchmark_key(seed: int, suite: str | None) -> Srtp | None:
    """A fixed, obviously-not-secret master key || salt of the suite's length."""
    if suite is None:
        return None
    length = SUITES[suite].key_salt_length
    return Srtp(suite, bytes((seed + i) % 256 for i in range(length)))


def phone_keys(scenario: Scenario) -> tuple[Srtp | None, Srtp | None]:
    """The keys phone A and phone B send with, the same in every call."""
    return benchmark_key(1, scenario.a_suite), benchmark_key(101, scenario.b_suite)


# -- the load generator (runs in its own process) ---------------------------------------------


@attrs.frozen
class Role:
    """What every phone of one side (A or B) sends: its key (None: plain), SSRC and payload."""

    srtp: Srtp | None
    ssrc: int
    payload: bytes


def _phone_session(srtp: Srtp, ssrc_type: int) -> pylibsrtp.Session:
    policy = pylibsrtp.Policy(
        key=srtp.key, ssrc_type=ssrc_type, srtp_profile=PHONE_PROFILES[srtp.suite]
    )
    return pylibsrtp.Session(policy)


def _packets(role: Role, count: int) -> list[bytes]:
    """``count`` consecutive packets of one phone role, protected if the role is SRTP."""
    plain = [
        HEADER.pack(0x80, 0, seq & 0xFFFF, (160 * seq) & 0xFFFFFFFF, role.ssrc) + role.payload
        for seq in range(count)
    ]
    if role.srtp is None:
        return plain
    session = _phone_session(role.srtp, pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
    return [session.protect(packet) for packet in plain]


def generator(
    conn: multiprocessing.connection.Connection,
    calls: int,
    roles: tuple[Role, Role],
    rate: float,
    max_packets: int,
    verify: int,
    wait_in_epoll: bool = False,
) -> None:
    """The phones of ``calls`` calls: bind and report ports; take the relay's ports and keys;
    send at ``rate`` pps per phone until told to stop (or ``max_packets`` per phone); count.

    Between send slots the phones sleep and then read what arrived meanwhile without waiting
    (``wait_in_epoll``: they wait in ``epoll`` instead, and each arriving packet may wake them).
    On loopback the relay's ``sendto`` delivers into the phone's socket in the relay's own
    system call, waking the phone if it waits there: that wake-up (an inter-processor interrupt
    in a VM) was charged to the relay per packet, a cost the receiving host pays with real
    phones. Sleeping phones never wait on their sockets, so no relay pays it.

    Messages from the parent: ``("targets", [(relay_port, Srtp | None), ...])`` one per phone in
    the order of the reported ports; ``"start"``; ``"mark"`` (take a snapshot of counters);
    ``"stop"``. Replies: ports, ``"ready"``, and at the end a dict of results.
    """
    phones: list[socket.socket] = []
    for _ in range(2 * calls):  # phone 2i faces leg A of call i, phone 2i+1 leg B
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((ADDRESS, 0))
        sock.setblocking(False)
        phones.append(sock)
    conn.send([sock.getsockname()[1] for sock in phones])
    _, targets = conn.recv()
    epoll = select.epoll()
    by_fd: dict[int, Callable[..., int]] = {}
    pending: dict[int, list[Any]] = {}  # fd -> [packets still to verify, session, payload]
    for index, (sock, (relay_port, receive_key)) in enumerate(zip(phones, targets, strict=True)):
        sock.connect((ADDRESS, relay_port))
        epoll.register(sock.fileno(), select.EPOLLIN)
        by_fd[sock.fileno()] = sock.recv_into
        if verify:
            session = (
                _phone_session(receive_key, pylibsrtp.Policy.SSRC_ANY_INBOUND)
                if receive_key is not None
                else None
            )
            pending[sock.fileno()] = [verify, session, roles[1 - index % 2].payload]
    packets = [_packets(role, max_packets) for role in roles]
    slots = [
        [
            (phones[i].send, packets[i % 2])
            for i in range(first, len(phones), SLOTS_PER_PACKET_INTERVAL)
        ]
        for first in range(SLOTS_PER_PACKET_INTERVAL)
    ]
    conn.send("ready")
    conn.recv()  # start

    buffer = bytearray(2048)
    counts = {"sent": 0, "received": 0, "send_errors": 0, "verified": 0, "mismatched": 0}
    marks: list[tuple[float, int, int, float]] = []

    def check(fd: int, size: int) -> None:
        state = pending[fd]
        data = bytes(buffer[:size])
        try:
            plain = state[1].unprotect(data) if state[1] is not None else data
        except pylibsrtp.Error:
            plain = b""
        if plain[HEADER.size :] == state[2]:
            counts["verified"] += 1
        else:
            counts["mismatched"] += 1
        state[0] -= 1
        if not state[0]:
            del pending[fd]

    def receive(timeout: float) -> int:
        count = 0
        for fd, _ in epoll.poll(timeout, 1024):
            try:
                size = by_fd[fd](buffer)
            except OSError:
                continue
            count += 1
            if pending and fd in pending:
                check(fd, size)
        return count

    sent = received = send_errors = 0
    slot_counts = [0] * SLOTS_PER_PACKET_INTERVAL
    slot_interval = 1.0 / rate / SLOTS_PER_PACKET_INTERVAL
    next_slot = time.monotonic()
    slot = 0
    while True:
        if conn.poll():
            if conn.recv() == "stop":
                break
            marks.append((time.monotonic(), sent, received, time.process_time()))
        k = slot_counts[slot]
        if k < max_packets:  # every run is bounded in packets too
            for send, role_packets in slots[slot]:
                try:
                    send(role_packets[k])
                    sent += 1
                except OSError:
                    send_errors += 1
            slot_counts[slot] = k + 1
        slot = (slot + 1) % SLOTS_PER_PACKET_INTERVAL
        next_slot += slot_interval
        while True:
            received += receive(0)
            remaining = next_slot - time.monotonic()
            if remaining <= 0:
                break
            if wait_in_epoll:
                received += receive(remaining)
            else:
                time.sleep(remaining)
    deadline = time.monotonic() + 5.0
    while (count := receive(DRAIN_SILENCE)) and time.monotonic() < deadline:
        received += count
    counts.update(sent=sent, received=received, send_errors=send_errors)
    conn.send({**counts, "marks": marks})
    for sock in phones:
        sock.close()


# -- measuring --------------------------------------------------------------------------------

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, every thread) of process ``pid``, with nanosecond resolution
    (clock_getcpuclockid(3); tick-based /proc/PID/stat would be too coarse at one call)."""
    clock = ctypes.c_int()
    if _libc.clock_getcpuclockid(pid, ctypes.byref(clock)):
        raise OSError(f"clock_getcpuclockid({pid}) failed")
    spec = _Timespec()
    if _libc.clock_gettime(clock, ctypes.byref(spec)):
        raise OSError(ctypes.get_errno(), f"clock_gettime for pid {pid} failed")
    return float(spec.tv_sec + spec.tv_nsec * 1e-9)


def task_schedstats() -> dict[tuple[int, int], tuple[int, int]]:
    """(pid, tid) -> (ns on a CPU, ns runnable but waiting for one) of every task on the
    machine, from /proc/PID/task/TID/schedstat: the scheduler's own clocks. (/proc/stat is
    sampled at each tick, HZ=250 here, and aliases with the phones' 2 ms send timer.)"""
    times = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    run, wait, _ = f.read().split()
            except (OSError, ValueError):
                continue  # ended meanwhile
            times[(int(pid), int(tid))] = (int(run), int(wait))
    return times


def schedstat_delta(
    before: dict[tuple[int, int], tuple[int, int]],
    after: dict[tuple[int, int], tuple[int, int]],
    *,
    only: set[int] | None = None,
    exclude: frozenset[int] | set[int] = frozenset(),
) -> tuple[float, float]:
    """Seconds on a CPU and seconds waiting for one between two scans, summed over the tasks of
    the processes in ``only`` (default: all but ``exclude``). Tasks that ended during the window
    are missed, so for "everything else" this is a lower bound."""
    run = wait = 0
    for key, (run1, wait1) in after.items():
        if key[0] in exclude or (only is not None and key[0] not in only):
            continue
        run0, wait0 = before.get(key, (0, 0))
        run += run1 - run0
        wait += wait1 - wait0
    return run / 1e9, wait / 1e9


@attrs.frozen
class Result:
    scenario: Scenario
    calls: int
    relay: str
    window: float
    offered_kpps: float
    relayed_kpps: float
    loss: float
    cpu_us: float
    relay_load: float
    generator_load: float
    generator_max_load: float
    others_load: float
    relay_wait: float
    """% of the window the relay was runnable but waited for a CPU (other work had it)."""
    generator_wait: float
    verified: int
    mismatched: int
    send_errors: int
    extra: str
    rate: float

    @property
    def target_kpps(self) -> float:
        return self.calls * 2 * self.rate / 1000


@attrs.define
class Generators:
    """The generator processes of one run, ``calls`` split between them."""

    processes: list[Any]
    conns: list[multiprocessing.connection.Connection]
    split: list[int]

    @classmethod
    def start(
        cls,
        calls: int,
        count: int,
        scenario: Scenario,
        args: argparse.Namespace,
        target: Callable[..., None] | None = None,
        options: tuple[Any, ...] | None = None,
    ) -> Generators:
        """``count`` processes running ``target(conn, calls, roles, rate, max_packets,
        *options)`` (default: :func:`generator` with ``args.verify``)."""
        if target is None:
            target, options = generator, (args.verify, args.phones_wait_in_epoll)
        ctx = multiprocessing.get_context("spawn")
        a_key, b_key = phone_keys(scenario)
        roles = (Role(a_key, 0xA0A0A0A0, b"\xd5" * 160), Role(b_key, 0xB0B0B0B0, b"\x55" * 160))
        max_packets = int(args.rate * (args.warmup + args.seconds + 10))
        count = max(1, min(count, calls))
        split = [calls // count + (i < calls % count) for i in range(count)]
        processes, conns = [], []
        for share in split:
            parent, child = ctx.Pipe()
            process = ctx.Process(
                target=run_dying_with_parent,  # no generator spins on after us (bench_children)
                args=(
                    os.getpid(),
                    target,
                    *(child, share, roles, args.rate, max_packets, *(options or ())),
                ),
                daemon=True,
            )
            process.start()
            processes.append(process)
            conns.append(parent)
        return cls(processes, conns, split)

    def pids(self) -> list[int]:
        return [process.pid for process in self.processes]

    def phone_ports(self) -> list[int]:
        return [port for conn in self.conns for port in _recv(conn)]

    def send_targets(self, targets: list[tuple[int, Srtp | None]]) -> None:
        at = 0
        for conn, share in zip(self.conns, self.split, strict=True):
            conn.send(("targets", targets[at : at + 2 * share]))
            at += 2 * share
        for conn in self.conns:
            if _recv(conn) != "ready":
                raise RuntimeError("generator did not get ready")

    def send(self, message: str) -> None:
        for conn in self.conns:
            conn.send(message)

    def results(self) -> list[dict[str, Any]]:
        results = [_recv(conn) for conn in self.conns]
        for process in self.processes:
            process.join(5)
        return results

    def kill(self) -> None:
        for process in self.processes:
            if process.is_alive():
                process.kill()
                process.join(5)


def _recv(conn: multiprocessing.connection.Connection) -> Any:
    if not conn.poll(PIPE_TIMEOUT):
        raise RuntimeError("the generator did not answer in time")
    return conn.recv()


async def measure(
    scenario: Scenario,
    calls: int,
    relay: str,
    relay_pid: int,
    generators: Generators,
    args: argparse.Namespace,
    relay_counters: Callable[[], tuple[int, int, int]] | None = None,
) -> Result:
    """Start the phones, take the window, stop, and turn counters into a :class:`Result`."""
    generators.send("start")
    await trio.sleep(args.warmup)
    # The relay's own counters are read outside its CPU window (they walk every stream).
    counters0 = relay_counters() if relay_counters else None
    sched0 = task_schedstats()
    relay0 = cpu_seconds(relay_pid)
    wall0 = time.monotonic()
    generators.send("mark")
    await trio.sleep(args.seconds)
    relay1 = cpu_seconds(relay_pid)
    wall1 = time.monotonic()
    sched1 = task_schedstats()
    counters1 = relay_counters() if relay_counters else None
    generators.send("mark")
    await trio.sleep(0.05)  # let the generators take the second mark before stopping
    generators.send("stop")
    results = await trio.to_thread.run_sync(generators.results)

    window_gen = []
    sent_w = received_w = 0
    gen_cpu = []
    for result in results:
        (t0, s0, r0, c0), (t1, s1, r1, c1) = result["marks"][:2]
        window_gen.append(t1 - t0)
        sent_w += s1 - s0
        received_w += r1 - r0
        gen_cpu.append(c1 - c0)
    window = sum(window_gen) / len(window_gen)
    relay_window = wall1 - wall0
    sent = sum(r["sent"] for r in results)
    received = sum(r["received"] for r in results)
    relay_cpu = relay1 - relay0
    gen_load = sum(gen_cpu) / window
    gen_pids = set(generators.pids())
    _, relay_wait = schedstat_delta(sched0, sched1, only={relay_pid})
    _, gen_wait = schedstat_delta(sched0, sched1, only=gen_pids)
    others, _ = schedstat_delta(sched0, sched1, exclude={relay_pid, *gen_pids})
    extra = ""
    if counters0 is not None and counters1 is not None:
        packets = counters1[0] - counters0[0]
        wakeups = counters1[1] - counters0[1]
        extra = (
            f"relay counted {packets / relay_window / 1000:.2f} kpps, "
            f"{packets / max(wakeups, 1):.1f} packets/wake-up, drops {counters1[2]}"
        )
    return Result(
        scenario=scenario,
        calls=calls,
        relay=relay,
        window=window,
        offered_kpps=sent_w / window / 1000,
        relayed_kpps=received_w / window / 1000,
        loss=100.0 * (1 - received / sent) if sent else float("nan"),
        cpu_us=1e6 * relay_cpu / received_w if received_w else float("nan"),
        relay_load=100.0 * relay_cpu / relay_window,
        generator_load=100.0 * gen_load,
        generator_max_load=100.0 * max(c / window for c in gen_cpu),
        others_load=100.0 * others / relay_window,
        relay_wait=100.0 * relay_wait / relay_window,
        generator_wait=100.0 * gen_wait / relay_window,
        verified=sum(r["verified"] for r in results),
        mismatched=sum(r["mismatched"] for r in results),
        send_errors=sum(r["send_errors"] for r in results),
        extra=extra,
        rate=args.rate,
    )


# -- the two relays ---------------------------------------------------------------------------


def _voipgw_keys(scenario: Scenario) -> tuple[Srtp | None, Srtp | None]:
    """voipgw's own keys towards phone A and phone B (what the phones verify with)."""
    return benchmark_key(51, scenario.a_suite), benchmark_key(151, scenario.b_suite)


def _session(phone: Srtp | None, ours: Srtp | None) -> SrtpSession | None:
    if phone is None or ours is None:
        return None
    return SrtpSession(SrtpKeys(phone.suite, local_key=ours.key, remote_key=phone.key))


def _apply_keys(stream: MediaStream, a: SrtpSession | None, b: SrtpSession | None) -> None:
    # As gateway/core/media/keying.py: unprotect with the sending leg's keys, protect with the
    # receiving leg's.
    stream.a_to_b.transforms = Transforms(
        rtp_in=a.unprotect_rtp if a else None,
        rtcp_in=a.unprotect_rtcp if a else None,
        rtp_out=b.protect_rtp if b else None,
        rtcp_out=b.protect_rtcp if b else None,
    )
    stream.b_to_a.transforms = Transforms(
        rtp_in=b.unprotect_rtp if b else None,
        rtcp_in=b.unprotect_rtcp if b else None,
        rtp_out=a.protect_rtp if a else None,
        rtcp_out=a.protect_rtcp if a else None,
    )


def open_voipgw_calls(
    relay: MediaRelay, scenario: Scenario, phone_ports: list[int], sessions: list[SrtpSession]
) -> list[tuple[int, Srtp | None]]:
    """One stream per pair of phone ports (phone 2i is leg A of call i, 2i+1 leg B), keyed as
    the scenario says; the sessions made are appended to ``sessions`` (the caller closes them).
    Returns, per phone, the relay port it sends to and the key the relay protects towards it
    with."""
    phone_a, phone_b = phone_keys(scenario)
    ours_a, ours_b = _voipgw_keys(scenario)
    targets: list[tuple[int, Srtp | None]] = []
    for i in range(len(phone_ports) // 2):
        stream = relay.open_stream()
        stream.a.set_remote((ADDRESS, phone_ports[2 * i]))
        stream.b.set_remote((ADDRESS, phone_ports[2 * i + 1]))
        a, b = _session(phone_a, ours_a), _session(phone_b, ours_b)
        sessions.extend(s for s in (a, b) if s is not None)
        _apply_keys(stream, a, b)
        targets.append((stream.a.ports.rtp_port, ours_a))
        targets.append((stream.b.ports.rtp_port, ours_b))
    return targets


def open_rtpengine_calls(
    client: NgClient, scenario: Scenario, phone_ports: list[int], call_ids: list[str]
) -> list[tuple[int, Srtp | None]]:
    """The same through rtpengine: one NG offer/answer per call; the call ids are appended to
    ``call_ids`` (the caller deletes them)."""
    phone_a, phone_b = phone_keys(scenario)
    calls = len(phone_ports) // 2
    targets: list[tuple[int, Srtp | None]] = []
    for i in range(calls):
        call_id = f"bench-{os.getpid()}-{scenario.name}-{calls}-{i}-{next(_CALL_NUMBERS)}"
        call = bridge_call(
            client,
            call_id,
            a_port=phone_ports[2 * i],
            b_port=phone_ports[2 * i + 1],
            a_srtp=phone_a,
            b_srtp=phone_b,
        )
        call_ids.append(call_id)
        targets.append((call.a_relay_port, call.a_receive))
        targets.append((call.b_relay_port, call.b_receive))
    return targets


@functools.cache
def voipgw_ports() -> PortRange:
    """voipgw's media range, the same every run: a port block locked for this process, which
    neither a test run nor another benchmark takes meanwhile (benchmarks/bench_ports.py)."""
    block = media_ports(VOIPGW_PORTS)
    return PortRange(block.start, block.stop - 1)


_CALL_NUMBERS = itertools.count()  # call ids never repeat within one rtpengine's life


async def run_voipgw(scenario: Scenario, calls: int, args: argparse.Namespace) -> Result:
    relay = MediaRelay(PortAllocator(ADDRESS, voipgw_ports()))
    generators = Generators.start(calls, args.generators, scenario, args)
    sessions: list[SrtpSession] = []
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(relay.serve)
            phone_ports = await trio.to_thread.run_sync(generators.phone_ports)
            targets = open_voipgw_calls(relay, scenario, phone_ports, sessions)
            await trio.to_thread.run_sync(generators.send_targets, targets)

            def counters() -> tuple[int, int, int]:
                stats = relay.statistics()
                return stats.packets, stats.wakeups, stats.dropped

            result = await measure(
                scenario, calls, "voipgw", os.getpid(), generators, args, counters
            )
            nursery.cancel_scope.cancel()
    finally:
        generators.kill()
        relay.close()
        for session in sessions:
            session.close()
    return result


async def run_rtpengine(
    scenario: Scenario, calls: int, args: argparse.Namespace, engine: Rtpengine, client: NgClient
) -> Result:
    generators = Generators.start(calls, args.generators, scenario, args)
    call_ids: list[str] = []
    try:
        phone_ports = await trio.to_thread.run_sync(generators.phone_ports)
        targets = open_rtpengine_calls(client, scenario, phone_ports, call_ids)
        await trio.to_thread.run_sync(generators.send_targets, targets)
        return await measure(scenario, calls, "rtpengine", engine.pid, generators, args)
    finally:
        generators.kill()
        for call_id in call_ids:
            delete_call(client, call_id)


# -- report -----------------------------------------------------------------------------------


def print_result(r: Result, *, verdict: bool = False) -> None:
    notes = []
    if verdict:
        notes.append(
            f"{r.rate:.1f} pps per phone: "
            + ("PASS" if step_passes(r) and not generator_short(r) else "FAIL")
        )
    if r.offered_kpps < 0.95 * r.target_kpps:
        notes.append(
            f"OFFERED < 95 % of target {r.target_kpps:.1f} kpps: generator or machine busy"
        )
    if r.relayed_kpps < 0.98 * r.offered_kpps:
        notes.append(
            "RELAY FELL BEHIND: packets queued in its sockets during the window "
            "(delivered late in the drain, or lost)"
        )
    if r.generator_max_load > 90.0:
        notes.append("a generator process is near 100 % of a core")
    if r.others_load > 30.0 or r.relay_wait > 10.0:
        notes.append(
            f"CPU CONTENTION: the relay waited {r.relay_wait:.0f} % of the window for a CPU, "
            f"other processes took at least {r.others_load:.0f} % of a core; kpps and loss show "
            "the machine more than the relay"
        )
    if r.mismatched or r.verified == 0:
        notes.append(f"PAYLOAD CHECK: {r.mismatched} wrong, {r.verified} right")
    if r.send_errors:
        notes.append(f"{r.send_errors} send errors")
    print(
        f"    {r.relay:9s} offered {r.offered_kpps:7.2f} kpps  relayed {r.relayed_kpps:7.2f} kpps  "
        f"loss {r.loss:6.3f} %  cpu {r.cpu_us:6.2f} us/packet  load: relay {r.relay_load:5.1f} %  "
        f"generator {r.generator_load:5.1f} %  others {r.others_load:5.1f} %  "
        f"waits: relay {r.relay_wait:4.1f} % generator {r.generator_wait:4.1f} %  "
        f"verified {r.verified}",
        flush=True,
    )
    if r.extra or notes:
        print(f"              {'; '.join([r.extra, *notes] if r.extra else notes)}", flush=True)


def print_table(results: list[Result]) -> None:
    """One Markdown row per scenario and call count, voipgw beside rtpengine."""
    by_key: dict[tuple[str, int, str], Result] = {}
    for r in results:  # of the repeats, the run in which the relay waited least for a CPU
        key = (r.scenario.name, r.calls, r.relay)
        if key not in by_key or r.relay_wait < by_key[key].relay_wait:
            by_key[key] = r
    rows = sorted(
        {(r.scenario.name, r.calls) for r in results},
        key=lambda k: (list(SCENARIOS).index(k[0]), k[1]),
    )
    columns = [
        ("scenario", 31),
        ("calls", 5),
        ("kpps relayed/offered voipgw", 27),
        ("kpps relayed/offered rtpengine", 30),
        ("loss % voipgw", 13),
        ("loss % rtpengine", 16),
        ("CPU us/pkt voipgw", 17),
        ("CPU us/pkt rtpengine", 20),
        ("ratio voipgw/rtpengine", 22),
    ]
    print()
    print("Summary. ratio = voipgw's CPU time per packet / rtpengine's at this load. Its inverse")
    print("(1/x) is the per-core throughput ratio only where both relays run a core flat out;")
    print("a relay that keeps up spends more per packet than at its capacity (--capacity finds")
    print("that). Of the repeats, each cell shows the run in which the relay waited least")
    print("for a CPU.")
    print("| " + " | ".join(f"{name:>{width}s}" for name, width in columns) + " |")
    print("|" + "|".join("-" * (width + 2) for _, width in columns) + "|")
    for name, calls in rows:
        v = by_key.get((name, calls, "voipgw"))
        e = by_key.get((name, calls, "rtpengine"))
        cells = [SCENARIOS[name].title, str(calls)]
        pair = (v, e)
        cells += [f"{r.relayed_kpps:.2f}/{r.offered_kpps:.2f}" if r else "-" for r in pair]
        cells += [f"{r.loss:.3f}" if r else "-" for r in pair]
        cells += [f"{r.cpu_us:.2f}" if r else "-" for r in pair]
        cells.append(
            f"{v.cpu_us / e.cpu_us:.2f} (1/x {e.cpu_us / v.cpu_us:.2f})" if v and e else "-"
        )
        print(
            "| "
            + " | ".join(
                f"{cell:{'<' if i == 0 else '>'}{width}s}"
                for i, (cell, (_, width)) in enumerate(zip(cells, columns, strict=True))
            )
            + " |",
            flush=True,
        )


def rtpengine_version() -> str:
    try:
        out = subprocess.run(["rtpengine", "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"
    return (out.stdout + out.stderr).strip().splitlines()[-1] if out.stdout + out.stderr else "?"


def machine_description() -> str:
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({model}), Linux {platform.release()}, relay {relay_build()}"


# -- capacity: the highest load each relay carries at < 0.1 % loss ----------------------------

CAPACITY_LOSS = 0.1  # %
CAPACITY_RELAYED = 0.98  # of offered, in the window
GENERATOR_SHORT = 0.95  # of the target: the generator could not offer the step's load


@attrs.frozen
class Capacity:
    """The outcome of one relay's search in one scenario."""

    scenario: Scenario
    relay: str
    passed: Result | None
    """The highest step with < 0.1 % loss (None: not even the lowest step tried)."""
    failed: Result | None
    """The lowest step that failed: what the relay relays once past its capacity."""
    generator_bound: bool
    """The search stopped because the generator could not offer more."""
    round: int = 0
    """Which of ``--capacity-rounds`` it was (0: the first)."""


def step_passes(r: Result) -> bool:
    return r.loss < CAPACITY_LOSS and r.relayed_kpps >= CAPACITY_RELAYED * r.offered_kpps


def generator_short(r: Result) -> bool:
    return r.offered_kpps < GENERATOR_SHORT * r.target_kpps


async def find_capacity(
    scenario: Scenario,
    relay: str,
    args: argparse.Namespace,
    run: Callable[[argparse.Namespace], Any],
) -> Capacity:
    """Step the per-call rate up (or down) by ``args.capacity_step`` from ``args.rate`` until a
    pass and a failure bracket the capacity, then try once between them."""
    rate = args.rate
    passed: Result | None = None
    failed: Result | None = None
    bisected = False
    for _ in range(args.capacity_steps + 1):
        result: Result = await run(argparse.Namespace(**{**vars(args), "rate": rate}))
        print_result(result, verdict=True)
        if generator_short(result):
            return Capacity(scenario, relay, passed, failed, generator_bound=True)
        if step_passes(result):
            passed = result
        else:
            failed = result
        if passed is None or failed is None:
            rate = rate * args.capacity_step if failed is None else rate / args.capacity_step
        elif not bisected:
            bisected = True
            rate = (passed.rate * failed.rate) ** 0.5
        else:
            break
    return Capacity(scenario, relay, passed, failed, generator_bound=False)


def _capacity_kpps(search: Capacity) -> float | None:
    """What the search found the relay relays without loss; None: not even its lowest step."""
    return search.passed.relayed_kpps if search.passed is not None else None


def _median_search(searches: list[Capacity]) -> Capacity | None:
    """The search whose capacity is the median of ``searches`` (the lower of the middle two;
    one that found none only when all did); None for no search."""
    found = [c for c in searches if c.passed is not None]
    if not found:
        return searches[0] if searches else None
    found.sort(key=lambda c: c.passed.relayed_kpps if c.passed is not None else 0.0)
    return found[(len(found) - 1) // 2]


def print_capacity_table(capacities: list[Capacity]) -> None:
    """One row per scenario. With several rounds (``--capacity-rounds``) each relay's cells are
    its median search's and the ratio is the median of the rounds' own ratios, each listed."""
    by_key: dict[tuple[str, str], list[Capacity]] = {}
    for c in capacities:
        by_key.setdefault((c.scenario.name, c.relay), []).append(c)
    print()
    print("Capacity: the highest load relayed with < 0.1 % loss (kpps, and CPU us per packet")
    print("there); 'past it': what the relay relayed at the lowest load it failed. 1/x = voipgw's")
    print("capacity / rtpengine's, the per-core throughput ratio issue 7 sets targets for.")
    print(
        "| scenario | calls | voipgw kpps (us/pkt) | past it | rtpengine kpps (us/pkt) | past it "
        "| 1/x |"
    )
    print("|---|--:|--:|--:|--:|--:|--:|")

    def cells(c: Capacity | None) -> tuple[str, str, float | None]:
        if c is None:
            return "-", "-", None
        # Not bracketed (the generator's limit, or the steps ran out): at least this much.
        at_least = ">= " if c.generator_bound or c.failed is None else ""
        if c.passed is None:
            shown = "generator-bound" if c.generator_bound else "below the lowest step"
            kpps = None
        else:
            shown = f"{at_least}{c.passed.relayed_kpps:.1f} ({c.passed.cpu_us:.2f})"
            kpps = c.passed.relayed_kpps
        past = f"{c.failed.relayed_kpps:.1f}" if c.failed is not None else "-"
        return shown, past, kpps

    for name in [n for n in SCENARIOS if any(c.scenario.name == n for c in capacities)]:
        voipgw, rtpengine = by_key.get((name, "voipgw"), []), by_key.get((name, "rtpengine"), [])
        v_shown, v_past, v = cells(_median_search(voipgw))
        e_shown, e_past, e = cells(_median_search(rtpengine))
        runs = [r for c in capacities if c.scenario.name == name for r in (c.passed, c.failed)]
        calls = next((str(r.calls) for r in runs if r is not None), "-")
        ratio = f"{v / e:.2f}" if v is not None and e is not None else "-"
        if max(len(voipgw), len(rtpengine)) > 1:
            # Each round's own ratio (its two searches ran one after the other); the median.
            engine_by_round = {c.round: _capacity_kpps(c) for c in rtpengine}
            pairs = [(_capacity_kpps(c), engine_by_round.get(c.round)) for c in voipgw]
            rounds = [a / b for a, b in pairs if a is not None and b is not None]
            each = " / ".join(f"{r:.2f}" for r in rounds)
            ratio = f"{statistics.median(rounds):.2f} ({each})" if rounds else "-"
        print(
            f"| {SCENARIOS[name].title} | {calls} | {v_shown} | {v_past} "
            f"| {e_shown} | {e_past} | {ratio} |",
            flush=True,
        )


async def _run_step(
    scenario: Scenario,
    calls: int,
    relay: str,
    engine: Rtpengine | None,
    client: NgClient | None,
    step_args: argparse.Namespace,
) -> Result:
    print(f"    load average before the run: {os.getloadavg()[0]:.2f}", flush=True)
    if relay == "voipgw":
        return await run_voipgw(scenario, calls, step_args)
    assert engine is not None and client is not None
    return await run_rtpengine(scenario, calls, step_args, engine, client)


def _rtpengine(args: argparse.Namespace, *, runs: int) -> Rtpengine | None:
    """The rtpengine for ``runs`` runs (its lifetime bounds it), or None when not asked for."""
    if "rtpengine" not in args.relays:
        return None
    return Rtpengine(
        threads=args.rtpengine_threads,
        lifetime=60 + runs * (args.warmup + args.seconds + 40),
        log_path=args.rtpengine_log,
    )


async def run_capacity(args: argparse.Namespace) -> list[Capacity]:
    calls = max(args.calls)
    capacities: list[Capacity] = []
    rounds = args.capacity_rounds
    engine = _rtpengine(args, runs=len(args.scenarios) * rounds * (args.capacity_steps + 1))
    with running(engine) as client:
        for index, name in enumerate(args.scenarios):
            scenario = SCENARIOS[name]
            for round_ in range(rounds):
                shown = f", round {round_ + 1} of {rounds}" if rounds > 1 else ""
                print(f"{scenario.title}, {calls} calls, capacity{shown}:", flush=True)
                # Alternate which relay goes first, so a drift in the machine hits both alike.
                first = args.relays if (index + round_) % 2 == 0 else args.relays[::-1]
                searches = await _search_each(scenario, calls, first, engine, client, args)
                capacities += [attrs.evolve(c, round=round_) for c in searches]
    return capacities


async def _search_each(
    scenario: Scenario,
    calls: int,
    relays: list[str],
    engine: Rtpengine | None,
    client: NgClient | None,
    args: argparse.Namespace,
) -> list[Capacity]:
    """One capacity search of each relay in ``relays``, in that order (one that raised: none)."""
    searches = []
    for relay in relays:
        run = functools.partial(_run_step, scenario, calls, relay, engine, client)
        try:
            searches.append(await find_capacity(scenario, relay, args, run))
        except (RuntimeError, OSError, NgError) as exc:
            print(f"    {relay:9s} RUN FAILED: {exc}", flush=True)
    return searches


async def run_all(args: argparse.Namespace) -> list[Result]:
    results: list[Result] = []
    engine = _rtpengine(args, runs=len(args.scenarios) * len(args.calls) * args.repeats)
    with running(engine) as client:
        for name in args.scenarios:
            scenario = SCENARIOS[name]
            for calls in args.calls:
                print(f"{scenario.title}, {calls} calls:", flush=True)
                # A B, B A, A B, ...: a drift in the machine's other load hits both alike.
                order = [
                    relay
                    for repeat in range(args.repeats)
                    for relay in (args.relays if repeat % 2 == 0 else args.relays[::-1])
                ]
                for relay in order:
                    try:
                        result = await _run_step(scenario, calls, relay, engine, client, args)
                    except (RuntimeError, OSError, NgError) as exc:  # report, go on with the rest
                        print(f"    {relay:9s} RUN FAILED: {exc}", flush=True)
                        continue
                    print_result(result)
                    results.append(result)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scenarios",
        nargs="+",
        choices=list(SCENARIOS),
        default=["rtp-rtp", "rtp-srtp", "srtp-srtp"],
    )
    parser.add_argument("--calls", type=int, nargs="+", default=[1, 100, 1000])
    parser.add_argument(
        "--relays", nargs="+", choices=["voipgw", "rtpengine"], default=["voipgw", "rtpengine"]
    )
    parser.add_argument("--seconds", type=float, default=6.0, help="measuring window per run")
    parser.add_argument(
        "--repeats", type=int, default=2, help="runs per relay, scenario and call count"
    )
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--rate", type=float, default=50.0, help="packets/s per direction per call")
    parser.add_argument("--generators", type=int, default=1, help="generator processes per run")
    parser.add_argument("--verify", type=int, default=3, help="packets checked per phone")
    parser.add_argument(
        "--phones-wait-in-epoll",
        action="store_true",
        help="phones wait for packets in epoll between send slots (the harness before "
        "2026-11-28: each relayed packet may wake the generator, charged to the relay)",
    )
    parser.add_argument("--rtpengine-threads", type=int, default=1, help="rtpengine --num-threads")
    parser.add_argument("--rtpengine-log", default=os.devnull, help="rtpengine's stderr goes here")
    parser.add_argument(
        "--capacity",
        action="store_true",
        help="find each relay's capacity at < 0.1 %% loss at the largest --calls count",
    )
    parser.add_argument(
        "--capacity-step", type=float, default=1.1, help="rate factor between capacity steps"
    )
    parser.add_argument(
        "--capacity-steps", type=int, default=10, help="most steps per relay before bracketing"
    )
    parser.add_argument(
        "--capacity-rounds",
        type=int,
        default=1,
        help="capacity searches per relay and scenario, the relays alternating; the table gives "
        "each relay's median and the median of the rounds' ratios (on a shared VM one search's "
        "capacity moves by a fifth from minute to minute)",
    )
    args = parser.parse_args()
    if args.capacity_step <= 1.0:
        parser.error("--capacity-step must be above 1")
    if args.capacity_rounds < 1:
        parser.error("--capacity-rounds must be at least 1")
    if max(args.calls) > 1000 or min(args.calls) < 1:
        parser.error("--calls: 1..1000 (the port ranges hold 1250 calls)")
    for name in args.scenarios:
        for suite in (SCENARIOS[name].a_suite, SCENARIOS[name].b_suite):
            if suite is not None and suite not in PHONE_PROFILES:
                parser.error(f"the phones cannot speak {suite}")
    started = time.monotonic()
    print(
        f"SRTP relay benchmark: {machine_description()}, Python {sys.version.split()[0]}, "
        f"{libsrtp_version()} (pylibsrtp {pylibsrtp.__version__}), rtpengine {rtpengine_version()}",
        flush=True,
    )
    print(
        f"{args.rate:g} packets/s per direction per call, 172-octet RTP, "
        f"{args.warmup:g} s warm-up, "
        f"{args.seconds:g} s window, {args.generators} generator process(es)",
        flush=True,
    )
    if args.capacity:
        print_capacity_table(trio.run(run_capacity, args))
    else:
        print_table(trio.run(run_all, args))
    print(f"\ntotal time {time.monotonic() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
