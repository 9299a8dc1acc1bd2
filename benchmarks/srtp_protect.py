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
from gateway.core.media.srtp import COMPILED as SRTP_COMPILED
from gateway.core.media.srtp import (
    PYTHON_SUITES,
    SUITES,
    SUPPORTED_SUITES,
    UNSUPPORTED_SUITES,
    SrtpSession,
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=20000, help="packets per run (<= 65536)")
    parser.add_argument("--repeats", type=int, default=5, help="runs per figure; the best counts")
    args = parser.parse_args()
    count = min(args.packets, 65536)

    print(
        f"{libsrtp_version()}, pylibsrtp {pylibsrtp.__version__}, Python {sys.version.split()[0]}, "
        f"gateway.core.media.srtp {'compiled with mypyc' if SRTP_COMPILED else 'pure Python'}"
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


if __name__ == "__main__":
    main()
