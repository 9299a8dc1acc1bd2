"""A fetched CRL's TLS contexts are built in a worker thread, not on the event loop (each gets
the whole CRL: some 150 ms per context for a CRL of some MiB, benchmarks/crl_apply.py), and
swapped in on the loop at once; a reload (SIGHUP) that swaps contexts while they are built is
not undone by them. A CRL is parsed into OpenSSL once, whatever the number of contexts.

Real worker threads, so trio's own clock, not the autojump clock (which jumps while a thread
runs). Nothing waits on wall-clock time: the threads and the loop hand over through
threading.Events, whose timeouts only keep a failing run from hanging."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL

from gateway.plugins.transports import tls
from gateway.plugins.transports.revocation import check_crl_untrusted
from tests.component.transports.crl_contexts import (
    HANG,
    URL,
    building,
    fetched,
    transport_with_contexts,
)
from tests.interop.harness.pki import TestPki


@pytest.fixture
def pki(tmp_path: Path) -> TestPki:
    return TestPki(tmp_path / "pki")


async def test_the_event_loop_keeps_serving_while_a_fetched_crl_is_applied(
    pki: TestPki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vendor = pki.ca("Vendor Factory CA")
    transport = transport_with_contexts(pki, vendor, tmp_path)
    listener_before = transport._listeners[0].context
    client_before = transport._client_contexts["server-only"]
    crl = fetched(vendor, tmp_path, revoked=50)
    started, served = threading.Event(), threading.Event()
    ticks = 0

    def during() -> None:
        started.set()
        # On the loop's own thread this wait is all the loop does: the ticker never runs.
        served.wait(HANG)

    builds = building(monkeypatch, during)
    async with trio.open_nursery() as nursery:

        async def ticker() -> None:
            # What a call's signalling does meanwhile: run whenever the loop comes round.
            nonlocal ticks
            while True:
                await trio.lowlevel.checkpoint()
                ticks += 1
                if started.is_set():
                    served.set()

        nursery.start_soon(ticker)
        await transport._use_fetched_crl(crl)
        nursery.cancel_scope.cancel()
    assert served.is_set() and ticks > 0
    assert builds == [(False, (7,))]
    # Swapped in, all of them: new handshakes are checked against the fetched CRL.
    assert transport.loaded_crls() == (crl,)
    assert transport._listeners[0].context is not listener_before
    assert transport._client_contexts["server-only"] is not client_before


async def test_a_reload_while_a_fetched_crls_contexts_are_built_is_not_undone(
    pki: TestPki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The reload (SIGHUP) reads a newer crl_files CRL of a second CA while the fetched CRL's
    # contexts are being built with the old one: swapping those in would undo the reload.
    vendor, carrier = pki.ca("Vendor Factory CA"), pki.ca("Carrier CA")
    bundle = tmp_path / "cas.pem"
    bundle.write_bytes(vendor.certificate.read_bytes() + carrier.certificate.read_bytes())
    file_crl = carrier.crl(tmp_path / "carrier.crl", number=1)
    transport = transport_with_contexts(
        pki, vendor, tmp_path, ca_bundles=(str(bundle),), crl_files=(str(file_crl),)
    )
    assert [crl.number for crl in transport.loaded_crls()] == [1]
    crl = fetched(vendor, tmp_path)
    building_now, reloaded = threading.Event(), threading.Event()

    def during() -> None:
        if not building_now.is_set():  # the first round only
            building_now.set()
            reloaded.wait(HANG)

    builds = building(monkeypatch, during)

    async def reload_meanwhile() -> None:
        while not building_now.is_set():
            await trio.lowlevel.checkpoint()
        carrier.crl(file_crl, number=2)
        transport.reload_certificates()  # on the loop, as the SIGHUP handler runs it
        reloaded.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reload_meanwhile)
        await transport._use_fetched_crl(crl)
    # Built with the old file's CRL, then the reload's (which saw the fetched one too), then
    # again from what the reload left: the file's newer CRL and the fetched one.
    assert builds == [(False, (1, 7)), (True, (2, 7)), (False, (2, 7))]
    assert {(crl.path, crl.number) for crl in transport.loaded_crls()} == {
        (URL, 7),
        (str(file_crl), 2),
    }


def test_one_crl_is_parsed_into_openssl_once_for_every_context(
    pki: TestPki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vendor = pki.ca("Vendor Factory CA")
    crl = fetched(vendor, tmp_path, revoked=3)
    parsed: list[object] = []

    class Counting:
        def __getattr__(self, name: str) -> Any:
            return getattr(lib, name)

        def d2i_X509_CRL_bio(self, *args: Any) -> Any:
            result = lib.d2i_X509_CRL_bio(*args)
            parsed.append(result)
            return result

    lib = tls._openssl_lib
    monkeypatch.setattr(tls, "_openssl_lib", Counting())
    transport = transport_with_contexts(pki, vendor, tmp_path)
    assert transport._paths is not None
    sides, modes = tuple(transport._listeners) * 3, ("server-only", "mutual")
    for _ in range(2):
        transport._build_contexts(transport._paths, sides, modes, (crl,))
    # Ten contexts, one parse (not one re-encoding and parse per context, as add_crl does).
    assert len(parsed) == 1
    again = check_crl_untrusted((tmp_path / "fetched.crl").read_bytes(), URL, [vendor.issued.x509])
    transport._build_contexts(transport._paths, sides[:1], (), (again,))
    assert len(parsed) == 2  # another CRL (say, the next fetch): its own parse


def test_the_der_bytes_a_crl_was_read_from_are_kept_for_openssl_and_the_saved_copy(
    pki: TestPki, tmp_path: Path
) -> None:
    # Not encoded again by cryptography (under the GIL: some 30 ms for 4 MiB) when the bytes
    # read were DER already, as a fetched CRL's are.
    vendor = pki.ca("Vendor Factory CA")
    der = vendor.crl(tmp_path / "vendor.crl", der=True, number=3)
    from_der = check_crl_untrusted(der.read_bytes(), URL, [vendor.issued.x509])
    assert from_der.der == der.read_bytes() and from_der.der_bytes() is from_der.der
    pem = vendor.crl(tmp_path / "vendor.pem", number=3)
    from_pem = check_crl_untrusted(pem.read_bytes(), str(pem), [vendor.issued.x509])
    assert from_pem.der == b""
    assert from_pem.der_bytes() == from_pem.crl.public_bytes(serialization.Encoding.DER)


def test_a_crl_openssl_refuses_leaves_no_error_for_a_later_handshake(
    pki: TestPki, tmp_path: Path
) -> None:
    # OpenSSL's error queue is per thread: an error left by a failed parse on the event loop's
    # thread would be read by the next handshake there as its own failure.
    vendor = pki.ca("Vendor Factory CA")
    crl = attrs.evolve(fetched(vendor, tmp_path), der=b"\x30\x03not a CRL")
    context = SSL.Context(SSL.TLS_METHOD)  # kept: the store is the context's, freed with it
    store = context.get_cert_store()
    assert store is not None
    lib = tls._openssl_lib
    lib.ERR_clear_error()
    tls._add_crl(store, crl)  # OpenSSL cannot parse those bytes: pyOpenSSL's add_crl instead
    assert not crl.native
    assert lib.ERR_peek_error() == 0
