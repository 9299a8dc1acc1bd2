"""Benchmark the latency a media relay adds, at a fixed load, beside rtpengine and beside no relay.

Run from the repository root (about 2.5 minutes with the defaults)::

    python benchmarks/relay_latency.py
    python benchmarks/relay_latency.py --calls 200 --rate 50 --seconds 10 --scenarios srtp-srtp

Load: ``--calls`` calls (default 200), each phone sending ``--rate`` packets/s (default 50), so
200 calls = 20 000 packets/s through the relay, the load issue 7 sets the latency target at.
The phones, scenarios, keys and call setup are those of benchmarks/relay_srtp.py (imported, not
copied): RTP->RTP, RTP->SRTP (AES_CM_128_HMAC_SHA1_80) and SRTP->SRTP (CM_128_80 -> GCM_128).

For each scenario, three paths with the same phones and the same sending schedule, back to back
(``--repeats`` times, in A B C C B A order):

- ``direct``: phone A sends straight to phone B and back, no relay: the floor (the sender's
  ``send`` and the kernel's loopback delivery);
- ``voipgw``: through gateway.core.media.relay.MediaRelay served by trio in this process;
- ``rtpengine``: through rtpengine in userspace (benchmarks/rtpengine_peer.py,
  ``--num-threads=1``).

One-way time of a packet: the generator process notes ``time.time_ns()`` just before each
``send`` (per phone and sequence number: relays keep sequence numbers), and the receiving socket
has SO_TIMESTAMPNS on, so the kernel stamps each datagram when it is queued to the socket
(CLOCK_REALTIME, the clock of ``time.time_ns``). One-way = arrival stamp - send time: it excludes
when the generator gets round to reading the socket, so the generator's own scheduling does not
count. Packets sent in the window are counted (after ``--warmup``).

Sending: each 20 ms of sending is spread over ``--slots`` slots (default 100: 4 packets every
0.2 ms at 200 calls), so a relay sees small bursts, not one burst of every call at once.

Figures per run: p50, p90, p99, p99.9 and max one-way time in microseconds, the relay's CPU load
and how long it waited for a CPU (schedstat, as relay_srtp.py). "Added" latency =
percentile through the relay - the same percentile of the direct path of the same scenario (a
difference of percentiles, not a percentile of differences: the two paths carry different
packets). Of the repeats, the summary takes the run in which the relay waited least for a CPU.
"""

from __future__ import annotations

import argparse
import array
import importlib.util
import multiprocessing.connection
import os
import select
import socket
import struct
import sys
import time

import attrs
import trio

# The installed gateway if there is one (e.g. compiled: VOIPGW_USE_MYPYC=1 pip install .),
# else this source tree. machine_description() says which relay build runs.
if importlib.util.find_spec("gateway") is None:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from relay_srtp import (
    ADDRESS,
    SCENARIOS,
    Generators,
    Role,
    Scenario,
    _packets,
    cpu_seconds,
    machine_description,
    open_rtpengine_calls,
    open_voipgw_calls,
    rtpengine_version,
    schedstat_delta,
    task_schedstats,
    voipgw_ports,
)
from rtpengine_peer import NgClient, NgError, Rtpengine, Srtp, delete_call, running

from gateway.core.media.ports import PortAllocator
from gateway.core.media.relay import MediaRelay
from gateway.core.media.srtp import SrtpSession, libsrtp_version
from gateway.plugins.transports.udp import SO_TIMESTAMPNS

# SCM_TIMESTAMPNS's payload: a struct timespec of two longs.
TIMESPEC = struct.Struct("@ll")
HEADER_OCTETS = 64  # only the RTP header is read back (the rest is truncated away)
PATHS = ("direct", "voipgw", "rtpengine")


# -- the load generator (runs in its own process) ---------------------------------------------


def latency_generator(
    conn: multiprocessing.connection.Connection,
    calls: int,
    roles: tuple[Role, Role],
    rate: float,
    max_packets: int,
    slots_per_interval: int,
) -> None:
    """The phones: as relay_srtp.generator (same messages), but noting the send time of every
    packet and reading the kernel's receive stamp of every packet that comes back."""
    phones: list[socket.socket] = []
    for _ in range(2 * calls):  # phone 2i faces leg A of call i, phone 2i+1 leg B
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.bind((ADDRESS, 0))
        sock.setblocking(False)
        phones.append(sock)
    conn.send([sock.getsockname()[1] for sock in phones])
    _, targets = conn.recv()
    epoll = select.epoll()
    index_of: dict[int, int] = {}
    for index, (sock, (port, _key)) in enumerate(zip(phones, targets, strict=True)):
        sock.connect((ADDRESS, port))
        epoll.register(sock.fileno(), select.EPOLLIN)
        index_of[sock.fileno()] = index
    receivers = [sock.recvmsg for sock in phones]
    packets = [_packets(role, max_packets) for role in roles]
    # Send time (ns) of packet k (sequence number k) of phone i; 0 = not sent.
    sent_ns = [array.array("q", bytes(8 * max_packets)) for _ in phones]
    slots = [
        list(range(first, len(phones), slots_per_interval)) for first in range(slots_per_interval)
    ]
    sends = [(sock.send, packets[i % 2], sent_ns[i]) for i, sock in enumerate(phones)]
    conn.send("ready")
    conn.recv()  # start

    latencies = array.array("q")
    state = {"measuring": False, "received": 0, "unmatched": 0}
    timestamp_level, timestamp_type = socket.SOL_SOCKET, SO_TIMESTAMPNS

    def receive() -> None:
        measuring = state["measuring"]
        for fd, _ in epoll.poll(0, 1024):
            index = index_of[fd]
            try:
                data, ancillary, _, _ = receivers[index](HEADER_OCTETS, 64)
            except OSError:
                continue
            state["received"] += 1
            arrival = 0
            for level, kind, cdata in ancillary:
                if level == timestamp_level and kind == timestamp_type:
                    seconds, nanoseconds = TIMESPEC.unpack(cdata)
                    arrival = seconds * 1_000_000_000 + nanoseconds
            sequence = (data[2] << 8) | data[3]
            peer_times = sent_ns[index ^ 1]  # what phone i receives, its call's peer sent
            sent = peer_times[sequence] if sequence < max_packets else 0
            if not sent or not arrival:
                state["unmatched"] += 1
            elif measuring:
                latencies.append(arrival - sent)

    sent_count = send_errors = 0
    marks: list[tuple[float, int, int, float]] = []
    slot_counts = [0] * slots_per_interval
    slot_interval = 1.0 / rate / slots_per_interval
    next_slot = time.monotonic()
    slot = 0
    time_ns = time.time_ns
    while True:
        if conn.poll():
            if conn.recv() == "stop":
                break
            state["measuring"] = not state["measuring"]
            marks.append((time.monotonic(), sent_count, state["received"], time.process_time()))
        k = slot_counts[slot]
        if k < max_packets:
            for i in slots[slot]:
                send, role_packets, times = sends[i]
                times[k] = time_ns()
                try:
                    send(role_packets[k])
                    sent_count += 1
                except OSError:
                    send_errors += 1
            slot_counts[slot] = k + 1
        slot = (slot + 1) % slots_per_interval
        next_slot += slot_interval
        receive()
        remaining = next_slot - time.monotonic()
        if remaining > 0:
            time.sleep(remaining)  # the kernel stamps arrivals meanwhile
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        before = state["received"]
        receive()
        if state["received"] == before:
            time.sleep(0.1)
            receive()
            if state["received"] == before:
                break
    conn.send(
        {
            "sent": sent_count,
            "received": state["received"],
            "unmatched": state["unmatched"],
            "send_errors": send_errors,
            "marks": marks,
            "latencies": latencies.tobytes(),
        }
    )
    for sock in phones:
        sock.close()


# -- measuring --------------------------------------------------------------------------------


@attrs.frozen
class LatencyResult:
    scenario: Scenario
    path: str
    samples: int
    percentiles: dict[str, float]  # "p50", "p90", "p99", "p99.9", "max" in microseconds
    offered_kpps: float
    loss: float
    relay_load: float
    relay_wait: float
    generator_load: float
    others_load: float
    target_kpps: float


def _percentiles(values: list[int]) -> dict[str, float]:
    values.sort()
    n = len(values)
    if not n:
        return {key: float("nan") for key in ("p50", "p90", "p99", "p99.9", "max")}

    def at(q: float) -> float:
        return values[min(n - 1, int(q * n))] / 1000

    return {
        "p50": at(0.50),
        "p90": at(0.90),
        "p99": at(0.99),
        "p99.9": at(0.999),
        "max": values[-1] / 1000,
    }


async def measure(
    scenario: Scenario,
    path: str,
    relay_pid: int | None,
    generators: Generators,
    args: argparse.Namespace,
) -> LatencyResult:
    generators.send("start")
    await trio.sleep(args.warmup)
    sched0 = task_schedstats()
    relay0 = cpu_seconds(relay_pid) if relay_pid else 0.0
    wall0 = time.monotonic()
    generators.send("mark")  # measuring on
    await trio.sleep(args.seconds)
    generators.send("mark")  # measuring off
    relay1 = cpu_seconds(relay_pid) if relay_pid else 0.0
    wall1 = time.monotonic()
    sched1 = task_schedstats()
    await trio.sleep(0.5)  # the last packets of the window arrive
    generators.send("stop")
    results = await trio.to_thread.run_sync(generators.results)
    window = wall1 - wall0
    latencies: list[int] = []
    sent_w = gen_cpu = 0.0
    for result in results:
        latencies.extend(array.array("q", result["latencies"]))
        (t0, s0, _, c0), (t1, s1, _, c1) = result["marks"][:2]
        sent_w += (s1 - s0) / (t1 - t0)
        gen_cpu += c1 - c0
    sent = sum(r["sent"] for r in results)
    received = sum(r["received"] for r in results)
    gen_pids = set(generators.pids())
    pids = gen_pids | ({relay_pid} if relay_pid else set())
    _, relay_wait = schedstat_delta(sched0, sched1, only={relay_pid}) if relay_pid else (0, 0)
    others, _ = schedstat_delta(sched0, sched1, exclude=pids)
    return LatencyResult(
        scenario=scenario,
        path=path,
        samples=len(latencies),
        percentiles=_percentiles(latencies),
        offered_kpps=sent_w / 1000,
        loss=100.0 * (1 - received / sent) if sent else float("nan"),
        relay_load=100.0 * (relay1 - relay0) / window,
        relay_wait=100.0 * relay_wait / window,
        generator_load=100.0 * gen_cpu / window,
        others_load=100.0 * others / window,
        target_kpps=2 * args.calls * args.rate / 1000,
    )


def _start(scenario: Scenario, args: argparse.Namespace) -> Generators:
    return Generators.start(
        args.calls, 1, scenario, args, target=latency_generator, options=(args.slots,)
    )


async def run_direct(scenario: Scenario, args: argparse.Namespace) -> LatencyResult:
    generators = _start(scenario, args)
    try:
        ports = await trio.to_thread.run_sync(generators.phone_ports)
        # Phone 2i sends to phone 2i+1 and back: the same packets, no relay in between.
        targets: list[tuple[int, Srtp | None]] = [(ports[i ^ 1], None) for i in range(len(ports))]
        await trio.to_thread.run_sync(generators.send_targets, targets)
        return await measure(scenario, "direct", None, generators, args)
    finally:
        generators.kill()


async def run_voipgw(scenario: Scenario, args: argparse.Namespace) -> LatencyResult:
    relay = MediaRelay(PortAllocator(ADDRESS, voipgw_ports()))
    generators = _start(scenario, args)
    sessions: list[SrtpSession] = []
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(relay.serve)
            ports = await trio.to_thread.run_sync(generators.phone_ports)
            targets = open_voipgw_calls(relay, scenario, ports, sessions)
            await trio.to_thread.run_sync(generators.send_targets, targets)
            result = await measure(scenario, "voipgw", os.getpid(), generators, args)
            nursery.cancel_scope.cancel()
    finally:
        generators.kill()
        relay.close()
        for session in sessions:
            session.close()
    return result


async def run_rtpengine(
    scenario: Scenario, args: argparse.Namespace, engine: Rtpengine, client: NgClient
) -> LatencyResult:
    generators = _start(scenario, args)
    call_ids: list[str] = []
    try:
        ports = await trio.to_thread.run_sync(generators.phone_ports)
        targets = open_rtpengine_calls(client, scenario, ports, call_ids)
        await trio.to_thread.run_sync(generators.send_targets, targets)
        return await measure(scenario, "rtpengine", engine.pid, generators, args)
    finally:
        generators.kill()
        for call_id in call_ids:
            delete_call(client, call_id)


# -- report -----------------------------------------------------------------------------------


def print_result(r: LatencyResult) -> None:
    p = r.percentiles
    notes = []
    if r.offered_kpps < 0.95 * r.target_kpps:
        notes.append(f"OFFERED < 95 % of target {r.target_kpps:.1f} kpps")
    if r.loss > 0.1:
        notes.append(f"LOSS {r.loss:.3f} %")
    if r.relay_wait > 10.0 or r.others_load > 30.0:
        notes.append(
            f"CPU CONTENTION: relay waited {r.relay_wait:.0f} % of the window, others "
            f"{r.others_load:.0f} % of a core"
        )
    print(
        f"    {r.path:9s} samples {r.samples:7d}  one-way us: p50 {p['p50']:7.1f}  "
        f"p90 {p['p90']:7.1f}  p99 {p['p99']:7.1f}  p99.9 {p['p99.9']:7.1f}  "
        f"max {p['max']:8.1f}  offered {r.offered_kpps:6.2f} kpps  loss {r.loss:.3f} %  "
        f"load: relay {r.relay_load:5.1f} % generator {r.generator_load:5.1f} % "
        f"others {r.others_load:5.1f} %  relay waits {r.relay_wait:4.1f} %",
        flush=True,
    )
    if notes:
        print(f"              {'; '.join(notes)}", flush=True)


def print_table(results: list[LatencyResult]) -> None:
    best: dict[tuple[str, str], LatencyResult] = {}
    for r in results:
        key = (r.scenario.name, r.path)
        if key not in best or r.relay_wait < best[key].relay_wait:
            best[key] = r
    print()
    print(
        "Summary: one-way time in microseconds, p50 / p99; added = relay's percentile - the "
        "direct path's."
    )
    print(
        "| scenario | direct p50/p99 | voipgw p50/p99 | rtpengine p50/p99 "
        "| added voipgw p50/p99 | added rtpengine p50/p99 |"
    )
    print("|---|--:|--:|--:|--:|--:|")
    for name in SCENARIOS:
        direct = best.get((name, "direct"))
        if direct is None:
            continue
        cells = [SCENARIOS[name].title]
        for path in PATHS:
            found = best.get((name, path))
            cells.append(
                f"{found.percentiles['p50']:.1f} / {found.percentiles['p99']:.1f}" if found else "-"
            )
        for path in PATHS[1:]:
            found = best.get((name, path))
            if found is None:
                cells.append("-")
                continue
            added50 = found.percentiles["p50"] - direct.percentiles["p50"]
            added99 = found.percentiles["p99"] - direct.percentiles["p99"]
            cells.append(f"{added50:.1f} / {added99:.1f}")
        print("| " + " | ".join(cells) + " |", flush=True)


async def run_all(args: argparse.Namespace) -> list[LatencyResult]:
    results: list[LatencyResult] = []
    runs = len(args.scenarios) * len(args.paths) * args.repeats
    engine = (
        Rtpengine(
            threads=args.rtpengine_threads, lifetime=60 + runs * (args.warmup + args.seconds + 30)
        )
        if "rtpengine" in args.paths
        else None
    )
    with running(engine) as client:
        for name in args.scenarios:
            scenario = SCENARIOS[name]
            print(f"{scenario.title}, {args.calls} calls:", flush=True)
            order = [
                path
                for repeat in range(args.repeats)
                for path in (args.paths if repeat % 2 == 0 else args.paths[::-1])
            ]
            for path in order:
                result: LatencyResult
                try:
                    if path == "direct":
                        result = await run_direct(scenario, args)
                    elif path == "voipgw":
                        result = await run_voipgw(scenario, args)
                    else:
                        assert engine is not None and client is not None
                        result = await run_rtpengine(scenario, args, engine, client)
                except (RuntimeError, OSError, NgError) as exc:
                    print(f"    {path:9s} RUN FAILED: {exc}", flush=True)
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
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS))
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--rate", type=float, default=50.0, help="packets/s per phone")
    parser.add_argument("--slots", type=int, default=100, help="send slots per packet interval")
    parser.add_argument("--seconds", type=float, default=5.0, help="measuring window per run")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--rtpengine-threads", type=int, default=1)
    args = parser.parse_args()
    if not 1 <= args.calls <= 1000:
        parser.error("--calls: 1..1000 (the port ranges hold 1250 calls)")
    args.generators = 1
    started = time.monotonic()
    print(
        f"Relay latency benchmark: {machine_description()}, Python {sys.version.split()[0]}, "
        f"{libsrtp_version()}, rtpengine {rtpengine_version()}",
        flush=True,
    )
    print(
        f"{args.calls} calls x 2 x {args.rate:g} packets/s = "
        f"{2 * args.calls * args.rate / 1000:g} kpps, {args.slots} send slots per "
        f"{1000 / args.rate:g} ms, {args.warmup:g} s warm-up, {args.seconds:g} s window",
        flush=True,
    )
    results = trio.run(run_all, args)
    print_table(results)
    print(f"\ntotal time {time.monotonic() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
