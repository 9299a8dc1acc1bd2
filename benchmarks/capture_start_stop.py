"""How often an interop ``Capture`` misses datagrams sent right after ``start()`` and right
before ``stop()``, and how long the two take (tests/interop/harness/capture.py).

Run from the repository root, as root or in the wireshark group (half a minute)::

    python benchmarks/capture_start_stop.py
    python benchmarks/capture_start_stop.py --runs 50 --datagrams 3 --pause 0.2

Each run starts a capture of one UDP port, sends ``--datagrams`` datagrams to it at once,
waits ``--pause`` s and stops the capture; it prints the runs whose file lacks some, then the
count of such runs and the mean and longest ``start()`` and ``stop()`` (wall-clock,
``time.monotonic``). Until session 27 (start() returned on dumpcap's "Capturing on", stop()
sent SIGTERM at once) 19 runs of 20 lost all three datagrams on the 2-vCPU CI machine.
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # tests/conftest.py imports tests/pgcluster.py

from tests.interop.harness.capture import Capture, udp_filter  # noqa: E402
from tests.port_blocks import LOOPBACK, port_block  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--datagrams", type=int, default=3)
    parser.add_argument("--pause", type=float, default=0.0, help="s between sending and stop()")
    args = parser.parse_args()
    port = port_block(1)[0]
    starts: list[float] = []
    stops: list[float] = []
    missed = 0
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender,
        tempfile.TemporaryDirectory() as workdir,
    ):
        receiver.bind((LOOPBACK, port))
        for run in range(args.runs):
            capture = Capture(Path(workdir) / f"{run}.pcap", udp_filter(port))
            began = time.monotonic()
            capture.start()
            starts.append(time.monotonic() - began)
            for number in range(args.datagrams):
                sender.sendto(b"datagram %d" % number, (LOOPBACK, port))
            time.sleep(args.pause)
            began = time.monotonic()
            capture.stop()
            stops.append(time.monotonic() - began)
            seen = capture.path.read_bytes().count(b"datagram ")
            if seen != args.datagrams:
                missed += 1
                print(f"run {run}: {seen} of {args.datagrams} datagrams in the capture")
    print(f"{missed} of {args.runs} runs missed datagrams")
    print(f"start(): mean {sum(starts) / len(starts):.3f} s, longest {max(starts):.3f} s")
    print(f"stop():  mean {sum(stops) / len(stops):.3f} s, longest {max(stops):.3f} s")


if __name__ == "__main__":
    main()
