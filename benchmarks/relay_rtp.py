"""Benchmark the media relay: N calls, 50 packets/s per direction per call, plain RTP on 127.0.0.1.

Run from the repository root::

    python benchmarks/relay_rtp.py                   # 1, 100 and 1000 calls, 10 s each
    python benchmarks/relay_rtp.py --calls 1000 --seconds 30

This process runs the relay (gateway.core.media.relay.MediaRelay.serve under trio). A generator
in a separate process holds two "phones" per call (one UDP socket each, facing leg A and leg B of
the call's stream), sends 172-octet RTP packets (12-octet header + 20 ms of G.711) from every phone
at ``--rate`` packets per second, and counts what comes back through the relay. The generator's
process and the relay's are the two busy processes; on a 2-CPU machine each gets about one CPU.

Printed per run: relayed kpps (packets the relay forwarded per second of the measuring window),
loss % (1 - received / sent over the whole run, after a drain), and the relay's CPU time per
relayed packet (``getrusage`` of this process over the window, user + system; system time is
the kernel's UDP receive and send work in the relay's syscalls, on loopback also the delivery to
the receiving socket).

Keep in mind: the generator is Python too and shares the machine; when it cannot keep up, the
"offered" figure falls short of calls x 2 x rate, and the line says so. Issue 7 extends this script
(rtpengine in the same harness, SRTP, RTCP).
"""

from __future__ import annotations

import argparse
import multiprocessing
import multiprocessing.connection
import os
import resource
import select
import socket
import sys
import time

import trio

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gateway.core.config import PortRange
from gateway.core.media.ports import PortAllocator
from gateway.core.media.relay import MediaRelay

ADDRESS = "127.0.0.1"
# Four ports per call (a pair per leg), outside Linux's default ephemeral range (32768-60999).
RELAY_PORTS = "20000-23999"
PACKET = bytes([0x80, 0x00, 0x00, 0x01]) + bytes(8) + b"\xd5" * 160  # V=2, PT 0 (PCMU), 20 ms
SLOTS_PER_PACKET_INTERVAL = 10  # spread each 20 ms of sending over 10 slots, not one burst


def generator(
    conn: multiprocessing.connection.Connection, targets: list[tuple[int, int]], rate: float
) -> None:
    """The phones: bind, report ports, send at ``rate`` pps per phone until told to stop.

    Each phone is a connected UDP socket (symmetric RTP: it sends to and hears from one relay
    port), which is the cheapest way for Python to send; receiving reads one datagram per
    readiness report of a level-triggered epoll, like the relay.
    """
    phones: list[socket.socket] = []
    for a_port, b_port in targets:
        for relay_port in (a_port, b_port):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((ADDRESS, 0))
            sock.connect((ADDRESS, relay_port))
            sock.setblocking(False)
            phones.append(sock)
    conn.send([sock.getsockname()[1] for sock in phones])
    conn.recv()  # start

    epoll = select.epoll()
    by_fd = {}
    for sock in phones:
        epoll.register(sock.fileno(), select.EPOLLIN)
        by_fd[sock.fileno()] = sock.recv_into
    buffer = bytearray(2048)
    slots = [
        [sock.send for sock in phones[i::SLOTS_PER_PACKET_INTERVAL]]
        for i in range(SLOTS_PER_PACKET_INTERVAL)
    ]
    slot_interval = 1.0 / rate / SLOTS_PER_PACKET_INTERVAL
    sent = received = send_errors = 0

    def receive(timeout: float) -> int:
        count = 0
        for fd, _ in epoll.poll(timeout, 1024):
            try:
                by_fd[fd](buffer)
                count += 1
            except OSError:
                pass
        return count

    next_slot = time.monotonic()
    slot = 0
    while not conn.poll():
        for send in slots[slot]:
            try:
                send(PACKET)
                sent += 1
            except OSError:
                send_errors += 1
        slot = (slot + 1) % SLOTS_PER_PACKET_INTERVAL
        next_slot += slot_interval
        while True:
            received += receive(0)
            remaining = next_slot - time.monotonic()
            if remaining <= 0:
                break
            received += receive(remaining)
    conn.recv()  # stop
    while count := receive(0.5):  # until the relay's backlog is through: 0.5 s of silence
        received += count
    conn.send((sent, received, send_errors))


def _usage() -> tuple[float, float]:
    """User and system CPU seconds of this process (the relay), not of the generator child."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


async def run(calls: int, seconds: float, rate: float, warmup: float) -> None:
    relay = MediaRelay(PortAllocator(ADDRESS, PortRange.parse(RELAY_PORTS)))
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    async with trio.open_nursery() as nursery:
        await nursery.start(relay.serve)
        streams = [relay.open_stream() for _ in range(calls)]
        targets = [(s.a.ports.rtp_port, s.b.ports.rtp_port) for s in streams]
        process = ctx.Process(target=generator, args=(child, targets, rate), daemon=True)
        process.start()
        phone_ports = await trio.to_thread.run_sync(parent.recv)
        for i, stream in enumerate(streams):
            stream.a.set_remote((ADDRESS, phone_ports[2 * i]))
            stream.b.set_remote((ADDRESS, phone_ports[2 * i + 1]))
        parent.send("start")
        await trio.sleep(warmup)
        usage0, wall0, stats0 = _usage(), time.monotonic(), relay.statistics()
        await trio.sleep(seconds)
        usage1, wall1, stats1 = _usage(), time.monotonic(), relay.statistics()
        parent.send("stop")
        sent, received, send_errors = await trio.to_thread.run_sync(parent.recv)
        process.join()
        nursery.cancel_scope.cancel()

    packets = stats1.packets - stats0.packets
    wakeups = stats1.wakeups - stats0.wakeups
    window = wall1 - wall0
    user, system = usage1[0] - usage0[0], usage1[1] - usage0[1]
    per_packet = 1e6 / packets if packets else float("nan")
    target = 2 * calls * rate
    loss = 100.0 * (1 - received / sent) if sent else 0.0
    note = ""
    if packets / window < 0.95 * target:
        note = f"  (target {target / 1000:.1f} kpps not reached: generator or machine busy)"
    print(
        f"calls={calls:5d}  relayed={packets / window / 1000:7.2f} kpps  loss={loss:5.2f} %  "
        f"cpu={(user + system) * per_packet:5.2f} us/packet "
        f"(user {user * per_packet:4.2f} + sys {system * per_packet:4.2f})  "
        f"relay load={100.0 * (user + system) / window:5.1f} %  "
        f"packets/wake-up={packets / max(wakeups, 1):6.1f}  relay drops={stats1.dropped}  "
        f"generator send errors={send_errors}{note}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, nargs="+", default=[1, 100, 1000])
    parser.add_argument("--seconds", type=float, default=10.0, help="measuring window per run")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--rate", type=float, default=50.0, help="packets/s per direction per call")
    args = parser.parse_args()
    print(
        f"media relay benchmark: {os.cpu_count()} CPUs, python {sys.version.split()[0]}, "
        f"{args.rate:g} pps per direction per call, {args.seconds:g} s window",
        flush=True,
    )
    for calls in args.calls:
        # Other busy processes skew loss and load (not the CPU time per packet as much): say so.
        print(f"  load average before the run: {os.getloadavg()[0]:.2f}", flush=True)
        trio.run(run, calls, args.seconds, args.rate, args.warmup)
    print(
        "note: cpu us/packet is the relay process's user+system time per relayed packet, kernel "
        "UDP work included (on loopback also the delivery into the phone's socket). With few "
        "packets per wake-up the cost of waking trio dominates (a bare trio wait_readable loop "
        "costs about 100-150 us per wake-up on a 2-vCPU VM); from about 20 packets per wake-up "
        "on, the figure is the per-packet path. Loss and load need an otherwise idle machine.",
        flush=True,
    )


if __name__ == "__main__":
    main()
