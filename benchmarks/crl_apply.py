"""How long the event loop stalls while the ``tls`` transport applies a newly fetched CRL
(``[plugins.tls] crl_urls``) or reloads a large ``crl_files`` CRL on SIGHUP: every TLS context
(one per listener, one per outbound mode in use) is built again with the whole CRL.

Run from the repository root (a minute: making the CRL takes most of it)::

    python benchmarks/crl_apply.py
    python benchmarks/crl_apply.py --entries 120000 --listeners 2 --rounds 3

Figures (wall-clock, ``time.perf_counter``; the best of ``--rounds``):

- **on the loop** (until session 27): the contexts built in the event loop's thread; the
  longest gap between two runs of a task that only checkpoints (what a call's signalling
  waits) and the whole apply.
- **worker thread, add_crl** (session 27, ``TlsTransport._use_fetched_crl``): the same, the
  contexts built by ``trio.to_thread.run_sync`` and swapped in on the loop, each context's
  store given the CRL by pyOpenSSL's ``add_crl`` (re-encoded by cryptography under the GIL and
  parsed again by OpenSSL, per context).
- **worker thread, shared** (now): the CRL parsed into OpenSSL once and shared by every
  context's store (``tls._add_crl``).
- **SIGHUP on the loop** (until session 28, ``reload_certificates``): a reload reading a
  ``crl_files`` file of the same CRL, everything on the loop, ``add_crl`` per context.
- **SIGHUP worker thread** (now, ``reload_certificates_async``): files read, checked and
  contexts built in a worker thread, one shared parse.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import inspect
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests")
)

from gateway.plugins.transports import tls
from gateway.plugins.transports.revocation import LoadedCrl, check_crl_untrusted
from gateway.plugins.transports.tls import TlsConfig, TlsTransport, _ListenerSide
from tests.interop.harness.pki import Issued, TestCa, TestPki

URL = "http://crl.vendor.example/factory.crl"


def big_crl(ca: TestCa, entries: int, path: Path) -> LoadedCrl:
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    revoked = [
        x509.RevokedCertificateBuilder()
        .serial_number((serial << 100) | 0x1234567890ABCDEF)
        .revocation_date(now - datetime.timedelta(days=1))
        .build()
        for serial in range(1, entries + 1)
    ]
    # All at once: add_revoked_certificate copies the list each time.
    builder = (
        x509.CertificateRevocationListBuilder(revoked_certificates=revoked)
        .issuer_name(ca.issued.x509.subject)
        .last_update(now - datetime.timedelta(hours=1))
        .next_update(now + datetime.timedelta(days=7))
        .add_extension(x509.CRLNumber(2), critical=False)
    )
    crl = builder.sign(ca.private_key, hashes.SHA256())
    path.write_bytes(crl.public_bytes(serialization.Encoding.DER))
    return check_crl_untrusted(path.read_bytes(), URL, [ca.issued.x509])


def transport(
    ca: TestCa, own: Issued, listeners: int, crl_file: Path | None = None
) -> TlsTransport:
    config = TlsConfig(
        certificate=str(own.certificate),
        private_key=str(own.key),
        ca_bundles=(str(ca.certificate),),
        crl_urls=() if crl_file else (URL,),
        crl_files=(str(crl_file),) if crl_file else (),
    )
    result = TlsTransport(config)
    assert result._paths is not None
    for n in range(listeners):
        context = result._server_context(result._paths, "server-only", ())
        result._listeners.append(_ListenerSide(("127.0.0.1", 5061 + n), "server-only", context))
    result._client_context("server-only")
    return result


async def apply_once(result: TlsTransport, apply: Any) -> tuple[float, float]:
    longest = 0.0
    done = False

    running = trio.Event()

    async def ticker() -> None:
        nonlocal longest
        last = time.perf_counter()
        running.set()
        while not done:
            await trio.lowlevel.checkpoint()
            now = time.perf_counter()
            longest = max(longest, now - last)
            last = now

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker)
        await running.wait()  # else a synchronous reload could run before the ticker starts
        start = time.perf_counter()
        applied = apply()  # a synchronous reload runs here, on the loop
        if inspect.isawaitable(applied):
            await applied
        whole = time.perf_counter() - start
        done = True
    return longest, whole


async def inline(function: Any, *args: Any) -> Any:
    return function(*args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=120_000)
    parser.add_argument("--listeners", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        ca = TestPki(Path(directory)).ca("Vendor Factory CA")
        own = ca.issue("gateway")
        started = time.perf_counter()
        path = Path(directory) / "big.crl"
        big_crl(ca, options.entries, path)
        size = path.stat().st_size
        print(
            f"CRL: {options.entries} entries, {size / 1048576:.1f} MiB "
            f"(made in {time.perf_counter() - started:.1f} s); "
            f"{options.listeners} listener(s) + 1 outbound context"
        )
        shared = tls._openssl_lib
        cases = (
            ("fetched, on the loop", "fetched", inline, None),
            ("fetched, worker thread, add_crl", "fetched", None, None),
            ("fetched, worker thread, shared", "fetched", None, shared),
            ("SIGHUP, on the loop, add_crl", "sync reload", None, None),
            ("SIGHUP, worker thread, shared", "async reload", None, shared),
        )
        for label, kind, runner, lib in cases:
            tls._openssl_lib = lib  # None: pyOpenSSL's add_crl, per context
            figures = []
            for _ in range(options.rounds):
                # A new CRL object each round: its shared parse is made once per CRL.
                crl = check_crl_untrusted(path.read_bytes(), URL, [ca.issued.x509])
                result = transport(ca, own, options.listeners, None if kind == "fetched" else path)
                if runner is not None:
                    result._in_thread = runner
                apply: Any = {
                    "fetched": functools.partial(result._use_fetched_crl, crl),
                    "sync reload": result.reload_certificates,
                    "async reload": result.reload_certificates_async,
                }[kind]
                figures.append(trio.run(apply_once, result, apply))
            tls._openssl_lib = shared
            longest, whole = min(figures)
            print(
                f"{label:>32}: longest loop stall {longest * 1000:7.1f} ms, "
                f"apply {whole * 1000:7.1f} ms"
            )


if __name__ == "__main__":
    main()
