"""A reload (SIGHUP: ``TlsTransport.reload_certificates_async``) reads ``crl_files`` and builds
its TLS contexts in a worker thread, not on the event loop (a CRL of some MiB takes hundreds of
ms per context), and swaps them in on the loop at once; reloads and fetched CRLs are applied one
at a time, so of two reloads the second's files win, and a CRL fetched during a reload is
applied after it without undoing it. A bad file is refused with file, table and key named and
the old contexts kept. A fetched CRL whose CA a reload took out of ``ca_bundles`` is not used;
a CA a reload added has its certificates' distribution points learned.

Real worker threads, so trio's own clock, not the autojump clock (which jumps while a thread
runs). Nothing waits on wall-clock time: the threads and the loop hand over through
threading.Events, whose timeouts only keep a failing run from hanging."""

from __future__ import annotations

import datetime
import threading
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from gateway.core.interfaces import ReloadError
from gateway.plugins.transports.tls import TlsTransport
from tests.component.transports.crl_contexts import (
    HANG,
    URL,
    building,
    fetched,
    transport_with_contexts,
)
from tests.interop.harness.pki import TestCa, TestPki


@pytest.fixture
def pki(tmp_path: Path) -> TestPki:
    return TestPki(tmp_path / "pki")


def with_crl_file(
    pki: TestPki, tmp_path: Path, **config: Any
) -> tuple[TlsTransport, TestCa, TestCa, Path]:
    """A transport with one listener's and one outbound context, ``crl_files`` holding the
    carrier CA's CRL number 1, both CAs in ``ca_bundles``: the vendor's (the gateway's own
    certificate, fetched CRLs) and the carrier's."""
    vendor, carrier = pki.ca("Vendor Factory CA"), pki.ca("Carrier CA")
    bundle = tmp_path / "cas.pem"
    bundle.write_bytes(vendor.certificate.read_bytes() + carrier.certificate.read_bytes())
    file_crl = carrier.crl(tmp_path / "carrier.crl", number=1)
    settings: dict[str, Any] = {"ca_bundles": (str(bundle),), "crl_files": (str(file_crl),)}
    settings.update(config)
    transport = transport_with_contexts(pki, vendor, tmp_path, **settings)
    assert [crl.number for crl in transport.loaded_crls()] == [1]
    return transport, vendor, carrier, file_crl


def numbers(transport: TlsTransport) -> set[tuple[str, int | None]]:
    return {(crl.path, crl.number) for crl in transport.loaded_crls()}


async def test_a_reload_builds_its_contexts_in_a_worker_thread_while_the_loop_serves(
    pki: TestPki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    transport, _, carrier, file_crl = with_crl_file(pki, tmp_path, crl_urls=())
    phones = [carrier.issue(f"phone-{n}", hosts=[]) for n in range(20)]
    carrier.crl(file_crl, number=2, revoked=phones)
    listener_before = transport._listeners[0].context
    client_before = transport._client_contexts["server-only"]
    started, served = threading.Event(), threading.Event()

    def during() -> None:
        started.set()
        # On the loop's own thread this wait is all the loop does: the task below never runs.
        served.wait(HANG)

    builds = building(monkeypatch, during)
    async with trio.open_nursery() as nursery:

        async def scheduled_during_the_reload() -> None:
            # What a call's signalling does meanwhile: run whenever the loop comes round.
            while not started.is_set():
                await trio.lowlevel.checkpoint()
            served.set()

        nursery.start_soon(scheduled_during_the_reload)
        loaded = await transport.reload_certificates_async()
    assert served.is_set()
    assert builds == [(False, (2,))]  # not on the loop's thread, with the new file's CRL
    assert loaded == transport.loaded_certificates() and len(loaded) == 1
    # Swapped in, all of them: new handshakes are checked against the reloaded CRL.
    assert numbers(transport) == {(str(file_crl), 2)}
    assert transport._listeners[0].context is not listener_before
    assert transport._client_contexts["server-only"] is not client_before


async def test_a_bad_crl_file_is_refused_naming_file_table_and_key_and_the_old_contexts_stay(
    pki: TestPki, tmp_path: Path
) -> None:
    transport, _, carrier, file_crl = with_crl_file(pki, tmp_path, crl_urls=())
    before = (transport._listeners[0].context, transport._client_contexts["server-only"])
    generation = transport._generation
    expired_at = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=2)
    carrier.crl(file_crl, number=2, this_update=expired_at, next_update=datetime.timedelta(days=1))
    with pytest.raises(ReloadError) as expired:
        await transport.reload_certificates_async()
    file_crl.write_bytes(b"-----BEGIN X509 CRL-----\ngarbage\n-----END X509 CRL-----\n")
    with pytest.raises(ReloadError) as garbled:
        await transport.reload_certificates_async()
    for refused in (expired, garbled):
        assert "[plugins.tls] crl_files: " in str(refused.value)
        assert str(file_crl) in str(refused.value)
    assert "expired" in str(expired.value)
    assert (transport._listeners[0].context, transport._client_contexts["server-only"]) == before
    assert numbers(transport) == {(str(file_crl), 1)}
    assert transport._generation == generation


async def test_two_reloads_in_a_row_end_with_the_second_ones_files(
    pki: TestPki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    transport, _, carrier, file_crl = with_crl_file(pki, tmp_path, crl_urls=())
    carrier.crl(file_crl, number=2)
    building_now, second_waits = threading.Event(), threading.Event()

    def during() -> None:
        if not building_now.is_set():  # the first reload's build only
            building_now.set()
            second_waits.wait(HANG)

    builds = building(monkeypatch, during)

    async def second_reload() -> None:
        while not building_now.is_set():
            await trio.lowlevel.checkpoint()
        carrier.crl(file_crl, number=3)  # the operator's second SIGHUP, while the first builds
        nursery.start_soon(transport.reload_certificates_async)
        await trio.testing.wait_all_tasks_blocked()
        second_waits.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(second_reload)
        await transport.reload_certificates_async()
    # The first read file 2 before the second came; the second waited, then read file 3.
    assert builds == [(False, (2,)), (False, (3,))]
    assert numbers(transport) == {(str(file_crl), 3)}


async def test_a_crl_fetched_during_a_reload_is_applied_after_it_and_does_not_undo_it(
    pki: TestPki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    transport, vendor, carrier, file_crl = with_crl_file(pki, tmp_path)
    carrier.crl(file_crl, number=2)
    crl = fetched(vendor, tmp_path)
    building_now, fetch_waits = threading.Event(), threading.Event()

    def during() -> None:
        if not building_now.is_set():  # the reload's build
            building_now.set()
            fetch_waits.wait(HANG)

    builds = building(monkeypatch, during)

    async def fetched_meanwhile() -> None:
        while not building_now.is_set():
            await trio.lowlevel.checkpoint()
        nursery.start_soon(transport._use_fetched_crl, crl)
        await trio.testing.wait_all_tasks_blocked()
        fetch_waits.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(fetched_meanwhile)
        await transport.reload_certificates_async()
    # The reload's contexts with the file's new CRL, then the fetched CRL's with both.
    assert builds == [(False, (2,)), (False, (2, 7))]
    assert numbers(transport) == {(str(file_crl), 2), (URL, 7)}


async def test_a_fetched_crl_whose_ca_a_reload_took_out_of_ca_bundles_is_not_used(
    pki: TestPki, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    transport, vendor, carrier, file_crl = with_crl_file(pki, tmp_path)
    # Fetched (and checked against the CAs of then) before the reload, applied after it.
    crl = fetched(vendor, tmp_path)
    bundle = Path(transport.tls.ca_bundles[0])
    bundle.write_bytes(carrier.certificate.read_bytes())  # the vendor's CA removed
    await transport.reload_certificates_async()
    await transport._use_fetched_crl(crl)
    assert numbers(transport) == {(str(file_crl), 1)}
    assert transport._fetched == {}
    assert any(
        "the CRL fetched from" in r.getMessage() and "no longer in ca_bundles" in r.getMessage()
        for r in caplog.records
    )


async def test_a_ca_a_reload_added_has_its_certificates_distribution_points_learned(
    pki: TestPki, tmp_path: Path
) -> None:
    vendor, carrier = pki.ca("Vendor Factory CA"), pki.ca("Carrier CA")
    bundle = tmp_path / "cas.pem"
    bundle.write_bytes(vendor.certificate.read_bytes())
    carrier_url = "http://crl.carrier.example/carrier.crl"
    trunk = carrier.issue("carrier-sbc", crl_url=carrier_url)
    transport = transport_with_contexts(
        pki, vendor, tmp_path, ca_bundles=(str(bundle),), crl_distribution_points=True
    )
    assert transport.crl_fetcher is not None
    # A handshake with the carrier's certificate before its CA is in ca_bundles: not fetched.
    transport._learn_distribution_points(trunk.x509)
    assert carrier_url not in transport.crl_fetcher.urls()
    bundle.write_bytes(vendor.certificate.read_bytes() + carrier.certificate.read_bytes())
    await transport.reload_certificates_async()
    transport._learn_distribution_points(trunk.x509)  # its next handshake
    assert carrier_url in transport.crl_fetcher.urls()


async def test_a_crl_fetched_across_the_reload_that_took_its_ca_out_is_applied_once_it_is_back(
    pki: TestPki, tmp_path: Path
) -> None:
    """The reload's own refetch races it: the CRL is checked (in a thread) against the CAs of
    before the reload and handed over after it, then refused (its CA gone). The fetcher must
    not keep it as the one in use: once the operator puts the CA back (another SIGHUP), the
    same CRL fetched again is applied, not skipped as unchanged, which would leave that CA's
    certificates unchecked for as long as the CA publishes no newer CRL."""
    transport, vendor, carrier, file_crl = with_crl_file(pki, tmp_path)
    fetcher = transport.crl_fetcher
    assert fetcher is not None
    data = vendor.crl(tmp_path / "fetched.crl", der=True, number=7).read_bytes()
    reloaded = trio.Event()

    async def get(url: str) -> bytes:
        return data

    async def checked_across_the_reload(function: Any, *args: Any) -> Any:
        checked = function(*args)  # with the CAs of before the reload
        await reloaded.wait()  # the check's thread still runs when the reload swaps
        return checked

    fetcher._get = get
    fetcher.in_thread = checked_across_the_reload
    bundle = Path(transport.tls.ca_bundles[0])
    both = bundle.read_bytes()
    bundle.write_bytes(carrier.certificate.read_bytes())  # the vendor's CA taken out
    async with trio.open_nursery() as nursery:
        nursery.start_soon(fetcher.refresh, URL)
        await trio.testing.wait_all_tasks_blocked()
        await transport.reload_certificates_async()
        reloaded.set()
    assert fetcher.fetches["ok"] == 1
    assert numbers(transport) == {(str(file_crl), 1)}  # refused: its CA is gone

    async def inline(function: Any, *args: Any) -> Any:
        return function(*args)

    fetcher.in_thread = inline
    bundle.write_bytes(both)  # the operator puts it back: SIGHUP
    await transport.reload_certificates_async()
    await fetcher.refresh(URL)  # the reload's refetch: the same CRL
    assert numbers(transport) == {(str(file_crl), 1), (URL, 7)}


async def test_the_crls_a_reload_fetches_again_are_checked_against_the_cas_it_read(
    pki: TestPki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGHUP after a CA's key rollover (same name, new key, its new CRL signed with it): the
    CRL the reload fetches again is checked against the CAs the reload read, not those of
    before it, which would refuse it (bad signature) and hold its URL back RETRY_FIRST seconds
    while every context keeps the old CRL, which the new CA no longer verifies."""
    carrier, old_vendor = pki.ca("Carrier CA"), pki.ca("Vendor Factory CA")
    bundle = tmp_path / "cas.pem"
    bundle.write_bytes(old_vendor.certificate.read_bytes() + carrier.certificate.read_bytes())
    transport = transport_with_contexts(pki, carrier, tmp_path, ca_bundles=(str(bundle),))
    fetcher = transport.crl_fetcher
    assert fetcher is not None
    served = {"crl": old_vendor.crl(tmp_path / "old.crl", der=True, number=7).read_bytes()}

    async def get(url: str) -> bytes:
        return served["crl"]

    async def inline(function: Any, *args: Any) -> Any:
        return function(*args)

    fetcher._get = get
    fetcher.in_thread = inline

    async def fetched_and_applied(count: int) -> None:
        with trio.fail_after(HANG):  # only a failing run waits that long
            while sum(fetcher.fetches.values()) < count or transport._applying.locked():
                await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(fetcher.run)
        await fetched_and_applied(1)
        assert numbers(transport) == {(URL, 7)}
        new_vendor = TestPki(tmp_path / "pki-2").ca("Vendor Factory CA")  # the same name, a new key
        bundle.write_bytes(new_vendor.certificate.read_bytes() + carrier.certificate.read_bytes())
        served["crl"] = new_vendor.crl(tmp_path / "new.crl", der=True, number=8).read_bytes()
        building_now, go = threading.Event(), threading.Event()

        def during() -> None:
            if not building_now.is_set():  # the reload's build
                building_now.set()
                go.wait(HANG)

        building(monkeypatch, during)

        async def while_it_builds() -> None:
            while not building_now.is_set():
                await trio.lowlevel.checkpoint()
            await trio.testing.wait_all_tasks_blocked()  # whatever the loop does meanwhile
            go.set()

        nursery.start_soon(while_it_builds)
        await transport.reload_certificates_async()
        await fetched_and_applied(2)
        assert fetcher.fetches == {"ok": 2, "failed": 0}
        assert numbers(transport) == {(URL, 8)}
        nursery.cancel_scope.cancel()
