"""Benchmark the memory one active SRTP call costs the media relay, beside rtpengine.

Run from the repository root (about a minute)::

    python benchmarks/memory_per_call.py
    python benchmarks/memory_per_call.py --calls 1000 2000 --relays voipgw

A call here is one media stream with both legs SRTP-keyed, the SRTP->SRTP scenario of
benchmarks/relay_srtp.py (leg A AES_CM_128_HMAC_SHA1_80, leg B AEAD_AES_128_GCM; its call setup
is imported, not copied), and *active*: after the setup one phone socket sends one SRTP packet
into each leg, so each relay has latched both legs' sources and holds the per-SSRC SRTP state of
both directions (libsrtp creates it on a stream's first packet), as in a call that carries media.

- **voipgw**: a fresh process (spawn) makes a MediaRelay served by trio, notes its RSS
  (VmRSS in /proc/self/status) with no stream open, opens streams in steps up to each count of
  ``--calls`` (keys set on both legs, one packet each way), and notes the RSS again after each
  step. Per call = (RSS at N - RSS at 0) / N. RSS counts everything the process touched: Python
  objects, the 4 socket objects per call, cffi objects, libsrtp's and OpenSSL's C allocations.
  The kernel's socket memory is not in any process's RSS (nor is rtpengine's). A second fresh
  process does the same under tracemalloc (Python's own allocations only: ``traced`` / N), to
  say how much of the RSS is Python objects.
- **rtpengine** (userspace, benchmarks/rtpengine_peer.py): the RSS of its process with no call,
  then after each step of calls set up over NG (offer/answer as in relay_srtp.py, one packet each
  way per call). Its figure includes each call's signalling state (SDP, tags, NG bookkeeping),
  which the voipgw figure does not (the relay alone).

Counts: each call holds 4 UDP sockets in each relay; the file-descriptor limit here is 20 000
(hard), so the default steps are 0, 1000 and 4000 calls.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import multiprocessing
import multiprocessing.connection
import os
import socket
import sys
import time
import tracemalloc

import trio

# The installed gateway if there is one (e.g. compiled: VOIPGW_USE_MYPYC=1 pip install .),
# else this source tree. machine_description() says which relay build runs.
if importlib.util.find_spec("gateway") is None:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_children import run_dying_with_parent
from bench_ports import media_ports
from relay_srtp import (
    ADDRESS,
    SCENARIOS,
    Role,
    _packets,
    machine_description,
    open_rtpengine_calls,
    open_voipgw_calls,
    phone_keys,
    rtpengine_version,
)
from rtpengine_peer import NgClient, Rtpengine, Srtp, delete_call

from gateway.core.config import PortRange
from gateway.core.media.ports import PortAllocator
from gateway.core.media.relay import MediaRelay
from gateway.core.media.srtp import SrtpSession, libsrtp_version

SCENARIO = SCENARIOS["srtp-srtp"]
# 4 ports per call, from one port block (benchmarks/bench_ports.py) of 4 x the largest --calls;
# both relays use it in turn, never at the same time. Ports another process holds are skipped
# (PortAllocator; rtpengine likewise).
PORTS_PER_CALL = 4
MAX_CALLS = 4250  # 17000 ports, the old fixed range's size; 4 FDs a call in each relay
SETTLE = 1.0  # seconds after the packets, before reading RSS


def rss_kib(pid: int | str = "self") -> int:
    """Resident set size of process ``pid`` in KiB (/proc/PID/status VmRSS)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise OSError(f"no VmRSS for {pid}")


def first_packets() -> tuple[bytes, bytes]:
    """Phone A's and phone B's first SRTP packet (sequence number 0) under the phones' keys."""
    a_key, b_key = phone_keys(SCENARIO)
    a = _packets(Role(a_key, 0xA0A0A0A0, b"\xd5" * 160), 1)[0]
    b = _packets(Role(b_key, 0xB0B0B0B0, b"\x55" * 160), 1)[0]
    return a, b


def send_first_packets(phone: socket.socket, targets: list[tuple[int, Srtp | None]]) -> None:
    """One packet from the phone into each leg: target 2i is leg A of a call, 2i+1 leg B."""
    a, b = first_packets()
    for i, (port, _) in enumerate(targets):
        phone.sendto(a if i % 2 == 0 else b, (ADDRESS, port))
        if i % 256 == 255:
            time.sleep(0.002)  # let the relay keep up: no socket queue overflows


# -- voipgw (in a fresh process) --------------------------------------------------------------


def voipgw_child(
    conn: multiprocessing.connection.Connection,
    steps: list[int],
    trace: bool,
    ports: tuple[int, int],
) -> None:
    conn.send(trio.run(_voipgw_steps, steps, trace, ports))


async def _voipgw_steps(
    steps: list[int], trace: bool, ports: tuple[int, int]
) -> list[tuple[int, int, int, int]]:
    """(calls, RSS KiB, Python bytes traced, packets relayed) at 0 and at each step."""
    relay = MediaRelay(PortAllocator(ADDRESS, PortRange(*ports)))
    phone = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    phone.bind((ADDRESS, 0))
    phone_port = phone.getsockname()[1]
    sessions: list[SrtpSession] = []
    first_packets()  # import and warm up everything the steps use before the baseline
    points = []
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(relay.serve)
            if trace:
                tracemalloc.start()
            opened = 0
            for calls in [0, *steps]:
                targets = open_voipgw_calls(
                    relay, SCENARIO, [phone_port] * (2 * (calls - opened)), sessions
                )
                opened = calls
                send_first_packets(phone, targets)
                await trio.sleep(SETTLE)
                gc.collect()
                traced = tracemalloc.get_traced_memory()[0] if trace else 0
                points.append((calls, rss_kib(), traced, relay.statistics().packets))
            nursery.cancel_scope.cancel()
    finally:
        relay.close()
        for session in sessions:
            session.close()
        phone.close()
    return points


def run_voipgw(
    steps: list[int], trace: bool, ports: tuple[int, int]
) -> list[tuple[int, int, int, int]]:
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    process = ctx.Process(
        target=run_dying_with_parent,  # bench_children.py: not left running if we are killed
        args=(os.getpid(), voipgw_child, child, steps, trace, ports),
        daemon=True,
    )
    process.start()
    try:
        deadline = time.monotonic() + 600
        while not parent.poll(1.0):
            if not process.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the voipgw process ended or hung (exit {process.exitcode})")
        points: list[tuple[int, int, int, int]] = parent.recv()
        return points
    finally:
        process.join(10)
        if process.is_alive():
            process.kill()


# -- rtpengine --------------------------------------------------------------------------------


def run_rtpengine(steps: list[int], ports: tuple[int, int]) -> list[tuple[int, int, int]]:
    """(calls, RSS KiB of rtpengine, calls set up) at 0 and at each step."""
    engine = Rtpengine(port_min=ports[0], port_max=ports[1], lifetime=600)
    client: NgClient = engine.start()
    phone = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    phone.bind((ADDRESS, 0))
    phone_port = phone.getsockname()[1]
    call_ids: list[str] = []
    points = []
    try:
        opened = 0
        for calls in [0, *steps]:
            targets = open_rtpengine_calls(
                client, SCENARIO, [phone_port] * (2 * (calls - opened)), call_ids
            )
            opened = calls
            send_first_packets(phone, targets)
            time.sleep(SETTLE)
            points.append((calls, rss_kib(engine.pid), len(call_ids)))
    finally:
        for call_id in call_ids:
            delete_call(client, call_id)
        client.close()
        engine.stop()
        phone.close()
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, nargs="+", default=[1000, 4000])
    parser.add_argument(
        "--relays", nargs="+", choices=["voipgw", "rtpengine"], default=["voipgw", "rtpengine"]
    )
    args = parser.parse_args()
    steps = sorted(set(args.calls))
    if steps[0] < 1 or steps[-1] > MAX_CALLS:
        parser.error(f"--calls: 1..{MAX_CALLS} ({PORTS_PER_CALL} ports per call)")
    block = media_ports(PORTS_PER_CALL * steps[-1])
    ports = (block.start, block.stop - 1)
    started = time.monotonic()
    print(
        f"Memory per active SRTP call ({SCENARIO.title}): {machine_description()}, "
        f"Python {sys.version.split()[0]}, {libsrtp_version()}, rtpengine {rtpengine_version()}",
        flush=True,
    )
    rows: dict[str, list[str]] = {}
    if "voipgw" in args.relays:
        rss_points = run_voipgw(steps, False, ports)
        traced_points = run_voipgw(steps, True, ports)
        base_rss, base_traced = rss_points[0][1], traced_points[0][2]
        for (calls, rss, _, packets), (_, _, traced, _) in zip(
            rss_points, traced_points, strict=True
        ):
            print(
                f"    voipgw    {calls:5d} calls  RSS {rss / 1024:8.1f} MiB  "
                f"Python traced {traced / 2**20:8.1f} MiB  relayed {packets} packets",
                flush=True,
            )
            if calls:
                rows.setdefault(str(calls), []).extend(
                    [
                        f"{(rss - base_rss) / calls:.1f}",
                        f"{(traced - base_traced) / 1024 / calls:.1f}",
                    ]
                )
    if "rtpengine" in args.relays:
        points = run_rtpengine(steps, ports)
        base = points[0][1]
        for calls, rss, made in points:
            print(f"    rtpengine {calls:5d} calls  RSS {rss / 1024:8.1f} MiB  ({made} set up)")
            if calls:
                rows.setdefault(str(calls), []).append(f"{(rss - base) / calls:.1f}")
    print()
    print("Summary: KiB per active SRTP call = (memory at N calls - at 0) / N")
    print(
        "| calls | voipgw RSS KiB/call | voipgw Python (tracemalloc) KiB/call "
        "| rtpengine RSS KiB/call |"
    )
    print("|--:|--:|--:|--:|")
    for count, cells in rows.items():
        if "voipgw" not in args.relays:
            cells = ["-", "-", *cells]
        elif "rtpengine" not in args.relays:
            cells = [*cells, "-"]
        print(f"| {count} | " + " | ".join(cells) + " |")
    print(f"\ntotal time {time.monotonic() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
