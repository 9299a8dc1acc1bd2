"""Benchmark the media relay in one process against two media worker processes, same load, one run.

Run from the repository root (about 3 minutes with the defaults)::

    python benchmarks/relay_workers.py
    python benchmarks/relay_workers.py --scenarios rtp-srtp --calls 300 600 1000 --seconds 6
    python benchmarks/relay_workers.py --modes in-process 1-worker 2-workers

Modes (``--modes``):

- ``in-process``: ``[media] workers = 1``, the default: gateway.core.media.relay.MediaRelay.serve
  in this process, keys applied with gateway.core.media.keying.StreamSrtp as a call does;
- ``2-workers``: ``[media] workers = 2``: gateway.core.media.remote_relay.WorkerPool with two
  worker processes (``python -m gateway.core.media.worker``), streams given to the worker with
  the fewest, keys sent over the control channel (``RemoteStream.apply_keys``) and the SRTP
  contexts built in the worker;
- ``1-worker`` (not run by default): one worker process, to show what the process split costs.

The load is benchmarks/relay_srtp.py's generator (imported from there, in its own process, never
measured as the relay's CPU): per call two phones at ``--rate`` packets/s each way, 172-octet
RTP, SRTP-protected ahead of time, payloads of the first ``--verify`` packets per phone checked
after unprotecting with the relay's key towards that phone. Each mode runs ``--repeats`` times
per load, in A B B A order.

Figures per run (the measuring window, after ``--warmup``):

- relayed / offered kpps, loss % (after a 0.5 s drain), as in relay_srtp.py;
- CPU us/packet: CPU time (user + system) of every relay process (the workers and this
  process, which in worker modes only hands out streams and takes statistics) per packet
  relayed; ``per process`` shows each one's load in % of a core;
- generator load, others' load and the relay's wait for a CPU (schedstat), the measure of
  contention: this machine has 2 vCPUs, and the generator needs about 0.8 of one at 100 kpps,
  so two workers and the generator compete for 2 CPUs. A worker-mode figure taken while the
  relay waited a lot for a CPU shows the machine, not the relay; the line says so.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import sys
import time

import attrs
import pylibsrtp
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
    Scenario,
    _voipgw_keys,
    cpu_seconds,
    machine_description,
    phone_keys,
    schedstat_delta,
    task_schedstats,
    voipgw_ports,
)
from rtpengine_peer import Srtp

from gateway.core.interfaces import SrtpKeys
from gateway.core.media.errors import PortsExhausted
from gateway.core.media.keying import StreamKeys, StreamSrtp
from gateway.core.media.ports import PortAllocator
from gateway.core.media.relay import MediaRelay
from gateway.core.media.remote_relay import WorkerPool
from gateway.core.media.srtp import libsrtp_version

MODES = {"in-process": 0, "1-worker": 1, "2-workers": 2}


@attrs.frozen
class Run:
    scenario: Scenario
    calls: int
    mode: str
    offered_kpps: float
    relayed_kpps: float
    loss: float
    cpu_us: float
    relay_load: float
    per_process: tuple[float, ...]
    generator_load: float
    others_load: float
    relay_wait: float
    generator_wait: float
    verified: int
    mismatched: int
    rate: float

    @property
    def target_kpps(self) -> float:
        return self.calls * 2 * self.rate / 1000


def _keys(phone: Srtp | None, ours: Srtp | None) -> SrtpKeys | None:
    if phone is None or ours is None:
        return None
    return SrtpKeys(phone.suite, local_key=ours.key, remote_key=phone.key)


async def measure(
    scenario: Scenario,
    calls: int,
    mode: str,
    pids: list[int],
    generators: Generators,
    args: argparse.Namespace,
) -> Run:
    """Start the phones, take the window over every relay process, stop, count."""
    generators.send("start")
    await trio.sleep(args.warmup)
    sched0 = task_schedstats()
    cpu0 = [cpu_seconds(pid) for pid in pids]
    wall0 = time.monotonic()
    generators.send("mark")
    await trio.sleep(args.seconds)
    cpu1 = [cpu_seconds(pid) for pid in pids]
    wall1 = time.monotonic()
    sched1 = task_schedstats()
    generators.send("mark")
    await trio.sleep(0.05)
    generators.send("stop")
    results = await trio.to_thread.run_sync(generators.results)

    sent_w = received_w = 0
    windows, gen_cpu = [], []
    for result in results:
        (t0, s0, r0, c0), (t1, s1, r1, c1) = result["marks"][:2]
        windows.append(t1 - t0)
        sent_w += s1 - s0
        received_w += r1 - r0
        gen_cpu.append(c1 - c0)
    window = sum(windows) / len(windows)
    relay_window = wall1 - wall0
    sent = sum(r["sent"] for r in results)
    received = sum(r["received"] for r in results)
    per_process = tuple(100.0 * (b - a) / relay_window for a, b in zip(cpu0, cpu1, strict=True))
    relay_cpu = sum(b - a for a, b in zip(cpu0, cpu1, strict=True))
    gen_pids = set(generators.pids())
    _, relay_wait = schedstat_delta(sched0, sched1, only=set(pids))
    _, gen_wait = schedstat_delta(sched0, sched1, only=gen_pids)
    others, _ = schedstat_delta(sched0, sched1, exclude={*pids, *gen_pids})
    return Run(
        scenario=scenario,
        calls=calls,
        mode=mode,
        offered_kpps=sent_w / window / 1000,
        relayed_kpps=received_w / window / 1000,
        loss=100.0 * (1 - received / sent) if sent else float("nan"),
        cpu_us=1e6 * relay_cpu / received_w if received_w else float("nan"),
        relay_load=100.0 * relay_cpu / relay_window,
        per_process=per_process,
        generator_load=100.0 * sum(gen_cpu) / window,
        others_load=100.0 * others / relay_window,
        relay_wait=100.0 * relay_wait / relay_window,
        generator_wait=100.0 * gen_wait / relay_window,
        verified=sum(r["verified"] for r in results),
        mismatched=sum(r["mismatched"] for r in results),
        rate=args.rate,
    )


async def run_in_process(scenario: Scenario, calls: int, args: argparse.Namespace) -> Run:
    relay = MediaRelay(PortAllocator(ADDRESS, voipgw_ports()))
    generators = Generators.start(calls, args.generators, scenario, args)
    keyings: list[StreamSrtp] = []
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(relay.serve)
            phone_ports = await trio.to_thread.run_sync(generators.phone_ports)
            (phone_a, phone_b), (ours_a, ours_b) = phone_keys(scenario), _voipgw_keys(scenario)
            targets: list[tuple[int, Srtp | None]] = []
            for i in range(calls):
                stream = relay.open_stream()
                stream.a.set_remote((ADDRESS, phone_ports[2 * i]))
                stream.b.set_remote((ADDRESS, phone_ports[2 * i + 1]))
                keying = StreamSrtp()
                keying.apply(
                    stream, StreamKeys(_keys(phone_a, ours_a), _keys(phone_b, ours_b), False)
                )
                keyings.append(keying)
                targets.append((stream.a.ports.rtp_port, ours_a))
                targets.append((stream.b.ports.rtp_port, ours_b))
            await trio.to_thread.run_sync(generators.send_targets, targets)
            result = await measure(scenario, calls, "in-process", [os.getpid()], generators, args)
            nursery.cancel_scope.cancel()
    finally:
        generators.kill()
        relay.close()
        for keying in keyings:
            keying.close()
    return result


async def run_workers(
    scenario: Scenario, calls: int, workers: int, mode: str, args: argparse.Namespace
) -> Run:
    pool = WorkerPool(ADDRESS, voipgw_ports(), workers, log_level=args.log_level)
    generators = Generators.start(calls, args.generators, scenario, args)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(pool.serve)
            phone_ports = await trio.to_thread.run_sync(generators.phone_ports)
            (phone_a, phone_b), (ours_a, ours_b) = phone_keys(scenario), _voipgw_keys(scenario)
            targets: list[tuple[int, Srtp | None]] = []
            for i in range(calls):
                while True:
                    try:
                        stream = pool.open_stream()
                        break
                    except PortsExhausted:  # reserves refill within a control round trip
                        await trio.sleep(0.001)
                stream.a.set_remote((ADDRESS, phone_ports[2 * i]))
                stream.b.set_remote((ADDRESS, phone_ports[2 * i + 1]))
                stream.apply_keys(StreamKeys(_keys(phone_a, ours_a), _keys(phone_b, ours_b), False))
                targets.append((stream.a.ports.rtp_port, ours_a))
                targets.append((stream.b.ports.rtp_port, ours_b))
            for index in range(workers):
                await pool.sync(index)  # every stream set up before the phones start
            await trio.to_thread.run_sync(generators.send_targets, targets)
            pids = [os.getpid(), *(pid for pid in pool.worker_pids() if pid is not None)]
            result = await measure(scenario, calls, mode, pids, generators, args)
            nursery.cancel_scope.cancel()
    finally:
        generators.kill()
    return result


def print_run(r: Run) -> None:
    notes = []
    if r.offered_kpps < 0.95 * r.target_kpps:
        notes.append(
            f"OFFERED < 95 % of target {r.target_kpps:.1f} kpps: generator or machine busy"
        )
    if r.relayed_kpps < 0.98 * r.offered_kpps:
        notes.append("RELAY FELL BEHIND (relayed < 98 % of offered)")
    if r.relay_wait > 10.0:
        notes.append(
            f"CPU CONTENTION: the relay processes waited {r.relay_wait:.0f} % of a core-window "
            "for a CPU"
        )
    if r.mismatched or r.verified == 0:
        notes.append(f"PAYLOAD CHECK: {r.mismatched} wrong, {r.verified} right")
    processes = "/".join(f"{load:.0f}" for load in r.per_process)
    print(
        f"    {r.mode:10s} offered {r.offered_kpps:7.2f} kpps  relayed {r.relayed_kpps:7.2f} kpps  "
        f"loss {r.loss:6.3f} %  cpu {r.cpu_us:6.2f} us/packet  relay {r.relay_load:5.1f} % "
        f"(per process, this first: {processes})  generator {r.generator_load:5.1f} %  "
        f"others {r.others_load:5.1f} %  waits: relay {r.relay_wait:4.1f} % "
        f"generator {r.generator_wait:4.1f} %  verified {r.verified}",
        flush=True,
    )
    if notes:
        print(f"               {'; '.join(notes)}", flush=True)


def print_table(runs: list[Run], modes: list[str]) -> None:
    best: dict[tuple[str, int, str], Run] = {}
    for r in runs:  # of the repeats, the run in which the relay waited least for a CPU
        key = (r.scenario.name, r.calls, r.mode)
        if key not in best or r.relay_wait < best[key].relay_wait:
            best[key] = r
    print()
    print("Summary (of the repeats, the run in which the relay waited least for a CPU):")
    print(
        "| scenario | calls | mode | kpps relayed/offered | loss % | CPU us/pkt | "
        "relay load % (per process) | generator % | relay wait % |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    keys = sorted(
        {(r.scenario.name, r.calls) for r in runs},
        key=lambda k: (list(SCENARIOS).index(k[0]), k[1]),
    )
    for name, calls in keys:
        for mode in modes:
            cell = best.get((name, calls, mode))
            if cell is None:
                continue
            processes = "/".join(f"{load:.0f}" for load in cell.per_process)
            print(
                f"| {cell.scenario.title} | {calls} | {mode} | "
                f"{cell.relayed_kpps:.2f}/{cell.offered_kpps:.2f} | {cell.loss:.3f} | "
                f"{cell.cpu_us:.2f} | {cell.relay_load:.0f} ({processes}) | "
                f"{cell.generator_load:.0f} | {cell.relay_wait:.1f} |",
                flush=True,
            )


async def run_all(args: argparse.Namespace) -> list[Run]:
    runs: list[Run] = []
    for name in args.scenarios:
        scenario = SCENARIOS[name]
        for calls in args.calls:
            print(f"{scenario.title}, {calls} calls:", flush=True)
            order = [
                mode
                for repeat in range(args.repeats)
                for mode in (args.modes if repeat % 2 == 0 else args.modes[::-1])
            ]
            for mode in order:
                print(f"    load average before the run: {os.getloadavg()[0]:.2f}", flush=True)
                try:
                    if MODES[mode] == 0:
                        run = await run_in_process(scenario, calls, args)
                    else:
                        run = await run_workers(scenario, calls, MODES[mode], mode, args)
                except (RuntimeError, OSError) as exc:
                    print(f"    {mode:10s} RUN FAILED: {exc}", flush=True)
                    continue
                print_run(run)
                runs.append(run)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scenarios", nargs="+", choices=list(SCENARIOS), default=["rtp-rtp", "rtp-srtp"]
    )
    parser.add_argument("--calls", type=int, nargs="+", default=[400, 1000])
    parser.add_argument(
        "--modes", nargs="+", choices=list(MODES), default=["in-process", "2-workers"]
    )
    parser.add_argument("--seconds", type=float, default=6.0, help="measuring window per run")
    parser.add_argument("--repeats", type=int, default=2, help="runs per mode and load")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--rate", type=float, default=50.0, help="packets/s per direction per call")
    parser.add_argument("--generators", type=int, default=1, help="generator processes per run")
    parser.add_argument("--verify", type=int, default=3, help="packets checked per phone")
    parser.add_argument("--log-level", default="warning", help="the workers' log level")
    parser.add_argument(
        "--phones-wait-in-epoll",
        action="store_true",
        help="as relay_srtp.py: phones wait in epoll between send slots (the old harness)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=args.log_level.upper())
    if max(args.calls) > 1000 or min(args.calls) < 1:
        parser.error("--calls: 1..1000")
    started = time.monotonic()
    print(
        f"Relay workers benchmark: {machine_description()}, Python {sys.version.split()[0]}, "
        f"{libsrtp_version()} (pylibsrtp {pylibsrtp.__version__})",
        flush=True,
    )
    print(
        f"{args.rate:g} packets/s per direction per call, 172-octet RTP, {args.warmup:g} s "
        f"warm-up, {args.seconds:g} s window, {args.generators} generator process(es)",
        flush=True,
    )
    runs = trio.run(run_all, args)
    print_table(runs, args.modes)
    print(f"\ntotal time {time.monotonic() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
