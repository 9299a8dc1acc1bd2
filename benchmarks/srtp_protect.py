"""Benchmark SRTP protect/unprotect per suite: microseconds per packet, 160-octet payload.

Run from the repository root::

    python benchmarks/srtp_protect.py
    python benchmarks/srtp_protect.py --packets 50000 --repeats 7

For every suite of gateway.core.media.srtp.SUPPORTED_SUITES, one :class:`SrtpSession` protects
(RTP -> SRTP) and another unprotects (SRTP -> RTP) a run of 172-octet RTP packets (12-octet
header, 20 ms of G.711) with consecutive sequence numbers; the figure is the best of
``--repeats`` runs (fresh sessions each run, so no replay), divided by the number of packets.
These are the calls the relay makes per packet (``Transforms``), without the sockets. The
"impl" column says who does the cryptography: libsrtp, or gateway.core.media.srtp_python for
the AES-192 suites the bundled libsrtp gets wrong (srtp.PYTHON_SUITES). For the four profiles
pylibsrtp names, its own ``Session.protect``/``unprotect`` are measured the same way, to show
what the session's reused buffer saves. SRTCP: one compound-free receiver report per call,
protect and unprotect.

The rows marked "(MKI 1:1)" give both directions a 1-octet MKI (RFC 3711 §3.1), which
srtp.MkiTransform inserts after, or checks and removes before, libsrtp. The rows marked
"(python)" run srtp_python's SrtpSender/SrtpReceiver directly for AES-128 and AES-256 (which
libsrtp does right), to compare the Python path with libsrtp on the same suite.

``--contexts N [N ...]`` adds what the relay sees at N / 2 calls: AES_CM_128_HMAC_SHA1_80 over
N sessions at once, one packet for each in turn (``--packets`` in all), so that each packet
finds its session's state gone from the caches as a relay's does at 1000 calls (docs/benchmarks.md,
session 61: libsrtp's cost per operation doubles from 200 to 1000 calls). Three ways: libsrtp
on the relay's own receive buffer (``SrtpTransform.in_buffer``, what the relay runs), libsrtp
on bytes (``SrtpSession.protect_rtp(packet)``), and srtp_python's contexts: the same SRTP made
of OpenSSL's pre-keyed AES-ECB and HMAC contexts through ``cryptography``, as rtpengine keeps
its own (compiled with mypyc or not: the first line says which; ``mypyc
gateway/core/media/srtp_python.py`` in a checkout builds it in place)::

    python benchmarks/srtp_protect.py --contexts 1 200 2000 4000 --packets 40000
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import struct
import sys
import time
from collections.abc import Callable

import pylibsrtp

# The installed gateway if there is one (e.g. compiled: VOIPGW_USE_MYPYC=1 pip install .),
# else this source tree. machine_description() says which relay build runs.
if importlib.util.find_spec("gateway") is None:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gateway.core.interfaces import SrtpKeys
from gateway.core.media import srtp_python
from gateway.core.media.srtp import COMPILED as SRTP_COMPILED
from gateway.core.media.srtp import (
    PYTHON_SUITES,
    SUITES,
    SUPPORTED_SUITES,
    TRAILER_ROOM,
    UNSUPPORTED_SUITES,
    SrtpSession,
    SrtpTransform,
    libsrtp_version,
)
from gateway.core.media.srtp_python import SrtpReceiver, SrtpSender

PAYLOAD = b"\xd5" * 160
PYLIBSRTP_PROFILES = {
    "AES_CM_128_HMAC_SHA1_80": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    "AES_CM_128_HMAC_SHA1_32": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
    "AEAD_AES_128_GCM": pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
    "AEAD_AES_256_GCM": pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM,
}


def rtp_packets(count: int) -> list[bytes]:
    return [
        struct.pack("!BBHII", 0x80, 0, sequence & 0xFFFF, 160 * sequence, 0x1234ABCD) + PAYLOAD
        for sequence in range(count)
    ]


def receiver_reports(count: int) -> list[bytes]:
    report = struct.pack("!BBHI", 0x81, 201, 7, 0x1234ABCD) + bytes(24)
    return [report] * count


def per_packet(
    make: Callable[[], Callable[[bytes], object]], packets: list[bytes], repeats: int
) -> float:
    """Best time per packet in microseconds over ``repeats`` runs, each with a fresh transform."""
    best = float("inf")
    for _ in range(repeats):
        transform = make()
        start = time.perf_counter()
        for packet in packets:
            transform(packet)
        best = min(best, time.perf_counter() - start)
    return best / len(packets) * 1e6


def keys(name: str, mki: bytes | None = None) -> SrtpKeys:
    length = SUITES[name].key_salt_length
    return SrtpKeys(
        name,
        local_key=bytes(range(length)),
        remote_key=bytes(range(1, length + 1)),
        local_mki=mki,
        remote_mki=mki,
    )


def peer_keys(name: str, mki: bytes | None = None) -> SrtpKeys:
    ours = keys(name, mki)
    return SrtpKeys(
        name, local_key=ours.remote_key, remote_key=ours.local_key, local_mki=mki, remote_mki=mki
    )


def check(transform: Callable[[bytes], bytes | None], packets: list[bytes]) -> list[bytes]:
    """Run ``transform`` once over all packets; every one must pass (else the figures lie)."""
    out = []
    for packet in packets:
        result = transform(packet)
        if result is None:
            raise SystemExit("a packet was dropped while preparing the benchmark")
        out.append(result)
    return out


def measure_suite(
    name: str, count: int, repeats: int, mki: bytes | None = None
) -> list[float | None]:
    plain = rtp_packets(count)
    protected = check(SrtpSession(peer_keys(name, mki)).protect_rtp, plain)
    reports = receiver_reports(count)
    protected_reports = check(SrtpSession(peer_keys(name, mki)).protect_rtcp, reports)
    row: list[float | None] = [
        per_packet(lambda: SrtpSession(keys(name, mki)).protect_rtp, plain, repeats),
        per_packet(lambda: SrtpSession(keys(name, mki)).unprotect_rtp, protected, repeats),
        per_packet(lambda: SrtpSession(keys(name, mki)).protect_rtcp, reports, repeats),
        per_packet(lambda: SrtpSession(keys(name, mki)).unprotect_rtcp, protected_reports, repeats),
    ]
    profile = PYLIBSRTP_PROFILES.get(name)
    if profile is None or mki is not None:
        return [*row, None, None]

    def pylibsrtp_session(key: bytes, ssrc_type: int) -> pylibsrtp.Session:
        policy = pylibsrtp.Policy(key=key, ssrc_type=ssrc_type, srtp_profile=profile)
        return pylibsrtp.Session(policy)

    outbound = pylibsrtp.Policy.SSRC_ANY_OUTBOUND
    inbound = pylibsrtp.Policy.SSRC_ANY_INBOUND
    row.append(
        per_packet(
            lambda: pylibsrtp_session(keys(name).local_key, outbound).protect, plain, repeats
        )
    )
    row.append(
        per_packet(
            lambda: pylibsrtp_session(keys(name).remote_key, inbound).unprotect, protected, repeats
        )
    )
    return row


def measure_python_path(name: str, count: int, repeats: int) -> list[float | None]:
    """srtp_python's contexts on their own, for a suite libsrtp also provides."""
    suite = SUITES[name]
    options = {"master_key_length": suite.master_key_length, "rtp_tag_length": suite.rtp_tag_length}
    ours, theirs = keys(name).local_key, keys(name).remote_key

    def checked(transform: Callable[[bytes], object], packets: list[bytes]) -> list[bytes]:
        out = [transform(packet) for packet in packets]
        if not all(isinstance(packet, bytes) for packet in out):
            raise SystemExit("a packet was dropped while preparing the benchmark")
        return [packet for packet in out if isinstance(packet, bytes)]

    plain, reports = rtp_packets(count), receiver_reports(count)
    protected = checked(SrtpSender(theirs, **options).protect_rtp, plain)
    protected_reports = checked(SrtpSender(theirs, **options).protect_rtcp, reports)
    return [
        per_packet(lambda: SrtpSender(ours, **options).protect_rtp, plain, repeats),
        per_packet(lambda: SrtpReceiver(theirs, **options).unprotect_rtp, protected, repeats),
        per_packet(lambda: SrtpSender(ours, **options).protect_rtcp, reports, repeats),
        per_packet(
            lambda: SrtpReceiver(theirs, **options).unprotect_rtcp, protected_reports, repeats
        ),
        None,
        None,
    ]


CONTEXTS_SUITE = "AES_CM_128_HMAC_SHA1_80"


def context_key(index: int) -> bytes:
    """A master key and salt of its own for the session at ``index``."""
    length = SUITES[CONTEXTS_SUITE].key_salt_length
    return bytes((index * 7 + octet) & 0xFF for octet in range(length))


def contexts_packets(contexts: int, per_context: int) -> list[list[bytes]]:
    """``per_context`` RTP packets for each session, an SSRC of its own each."""
    return [
        [
            struct.pack("!BBHII", 0x80, 0, sequence, 160 * sequence, 0x10000 + index) + PAYLOAD
            for sequence in range(per_context)
        ]
        for index in range(contexts)
    ]


def round_robin(
    make: Callable[[int], Callable[[bytes], object]], packets: list[list[bytes]], repeats: int
) -> float:
    """Best time per packet in microseconds: one transform per session (made outside the timed
    loop), then round after round, one packet for each session in turn. A first, untimed run
    must pass every packet (a dropped one costs less and the figure would lie)."""
    contexts, per_context = len(packets), len(packets[0])
    transforms = [make(index) for index in range(contexts)]
    for sequence in range(per_context):
        for index in range(contexts):
            result = transforms[index](packets[index][sequence])
            if result is None or isinstance(result, srtp_python.Drop) or result == -1:
                raise SystemExit(
                    f"session {index} dropped packet {sequence}: the figures would lie"
                )
    best = float("inf")
    for _ in range(repeats):
        transforms = [make(index) for index in range(contexts)]
        start = time.perf_counter()
        for sequence in range(per_context):
            for index in range(contexts):
                transforms[index](packets[index][sequence])
        best = min(best, time.perf_counter() - start)
    return best / (contexts * per_context) * 1e6


def measure_contexts(contexts: int, total: int, repeats: int) -> list[tuple[str, float, float]]:
    """(way, protect µs, unprotect µs) for ``contexts`` sessions of CONTEXTS_SUITE."""
    per_context = max(2, min(65536, total // contexts))
    suite = SUITES[CONTEXTS_SUITE]
    plain = contexts_packets(contexts, per_context)

    def session(index: int) -> SrtpSession:
        # Both directions under one key, so what one protects the other unprotects.
        key = context_key(index)
        return SrtpSession(SrtpKeys(CONTEXTS_SUITE, local_key=key, remote_key=key))

    protected = [check(session(index).protect_rtp, plain[index]) for index in range(contexts)]
    buffer = bytearray(2048)  # the relay's receive buffer: every session's step works in it

    def in_place(transform: object) -> Callable[[bytes], object]:
        assert isinstance(transform, SrtpTransform)
        step = transform.in_buffer(buffer)
        assert step is not None

        def run(packet: bytes) -> int:
            size = len(packet)
            buffer[:size] = packet  # what recv_into does in the relay
            return step(size)

        return run

    options = {"master_key_length": suite.master_key_length, "rtp_tag_length": suite.rtp_tag_length}
    assert len(buffer) >= len(plain[0][0]) + TRAILER_ROOM
    return [
        (
            "libsrtp, in place (the relay's)",
            round_robin(lambda index: in_place(session(index).protect_rtp), plain, repeats),
            round_robin(lambda index: in_place(session(index).unprotect_rtp), protected, repeats),
        ),
        (
            "libsrtp, bytes",
            round_robin(lambda index: session(index).protect_rtp, plain, repeats),
            round_robin(lambda index: session(index).unprotect_rtp, protected, repeats),
        ),
        (
            "srtp_python (pre-keyed contexts)",
            round_robin(
                lambda index: SrtpSender(context_key(index), **options).protect_rtp,
                plain,
                repeats,
            ),
            round_robin(
                lambda index: SrtpReceiver(context_key(index), **options).unprotect_rtp,
                protected,
                repeats,
            ),
        ),
    ]


def compiled(module: object) -> bool:
    """Whether ``module`` was imported from a C extension (mypyc's build), not its .py."""
    return not str(getattr(module, "__file__", "")).endswith(".py")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=20000, help="packets per run (<= 65536)")
    parser.add_argument("--repeats", type=int, default=5, help="runs per figure; the best counts")
    parser.add_argument(
        "--contexts",
        type=int,
        nargs="+",
        metavar="N",
        help=f"also {CONTEXTS_SUITE} over N sessions at once, one packet each in turn",
    )
    args = parser.parse_args()
    count = min(args.packets, 65536)

    def build(module_compiled: bool) -> str:
        return "compiled with mypyc" if module_compiled else "pure Python"

    print(
        f"{libsrtp_version()}, pylibsrtp {pylibsrtp.__version__}, Python {sys.version.split()[0]}, "
        f"gateway.core.media.srtp {build(SRTP_COMPILED)}, "
        f"gateway.core.media.srtp_python {build(compiled(srtp_python))}"
    )
    print(f"{count} packets x {args.repeats} runs, best run; RTP 172 octets, RTCP RR 32 octets")
    print("microseconds per packet")
    columns = ["protect", "unprotect", "SRTCP prot", "SRTCP unpr", "pylibsrtp p", "pylibsrtp u"]
    print(f"{'suite':<35}{'impl':>8}" + "".join(f"{c:>12}" for c in columns))

    def show(label: str, implementation: str, row: list[float | None]) -> None:
        cells = "".join(f"{'-':>12}" if v is None else f"{v:>12.2f}" for v in row)
        print(f"{label:<35}{implementation:>8}{cells}")

    for name in SUPPORTED_SUITES:
        implementation = "python" if name in PYTHON_SUITES else "libsrtp"
        show(name, implementation, measure_suite(name, count, args.repeats))
    # RFC 3711 §3.1: a 1-octet MKI both ways (what SBCs send as |1:1), checked and removed.
    for name in ("AES_CM_128_HMAC_SHA1_80", "AEAD_AES_128_GCM"):
        show(f"{name} (MKI 1:1)", "libsrtp", measure_suite(name, count, args.repeats, b"\x01"))
    for name in ("AES_CM_128_HMAC_SHA1_80", "AES_256_CM_HMAC_SHA1_80"):
        if name not in PYTHON_SUITES:
            show(f"{name} (python)", "python", measure_python_path(name, count, args.repeats))
    for name, reason in UNSUPPORTED_SUITES.items():
        print(f"{name:<26}  not available: {reason}")
    for contexts in args.contexts or ():
        print(
            f"\n{CONTEXTS_SUITE} over {contexts} session(s), one packet each in turn "
            f"({max(2, min(65536, args.packets // contexts))} each), microseconds per packet"
        )
        print(f"{'way':<35}{'protect':>12}{'unprotect':>12}")
        for way, protect, unprotect in measure_contexts(contexts, args.packets, args.repeats):
            print(f"{way:<35}{protect:>12.2f}{unprotect:>12.2f}")


if __name__ == "__main__":
    main()
