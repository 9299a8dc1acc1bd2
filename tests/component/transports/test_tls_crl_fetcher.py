"""``[plugins.tls] crl_urls`` on trio's autojump clock: the transport's CRL fetcher asks at
start, then at 3/4 of each CRL's validity; retries a failing server after 60 s, doubling up to
an hour; a server down until the CRL goes stale gets the warnings and the ERROR a CRL file
nobody refreshes gets; a CRL older than the one in use or out of date is refused; a fetched
CRL is saved (in a worker thread) and loaded by the next start. The server is a fake ``get``
serving CRLs made by the test PKI at the fetcher's wall-clock time."""

from __future__ import annotations

import datetime
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import trio

from gateway.plugins.transports import crl_fetch, tls
from gateway.plugins.transports.crl_fetch import RETRY_MAX
from gateway.plugins.transports.ocsp import OcspError
from gateway.plugins.transports.revocation import LoadedCrl
from gateway.plugins.transports.tls import TlsConfig, TlsTransport
from tests.interop.harness.pki import TestCa, TestPki

URL = "http://crl.vendor.example/factory.crl"
TLS_LOG = "gateway.plugins.transports.tls"
FETCH_LOG = "gateway.plugins.transports.crl_fetch"
DAY = 86400.0
# Unix time at trio time 0.
BASE = datetime.datetime.now(datetime.UTC).timestamp()


def wall_clock() -> float:
    return BASE + trio.current_time()


class FakeCrlServer:
    """Serves the CA's CRL made at the time asked, valid ``validity`` seconds, numbered up
    from 1; ``down``: refuses. Records when it was asked (trio time)."""

    def __init__(self, ca: TestCa, directory: Path) -> None:
        self.ca = ca
        self.directory = directory
        self.validity = 4 * DAY
        self.down = False
        self.number = 0
        self.asked: list[float] = []
        self.this_update_offset = 0.0  # seconds before now

    async def get(self, url: str) -> bytes:
        assert url == URL
        self.asked.append(trio.current_time())
        if self.down:
            raise OcspError(f"no connection to the CRL server {url} (refused)")
        self.number += 1
        now = datetime.datetime.fromtimestamp(wall_clock() - self.this_update_offset, datetime.UTC)
        path = self.ca.crl(
            self.directory / f"served-{self.number}.crl",
            this_update=now.replace(microsecond=0),
            next_update=datetime.timedelta(seconds=self.validity),
            der=True,
            number=self.number,
        )
        return path.read_bytes()


@pytest.fixture
def vendor(tmp_path: Path) -> TestCa:
    return TestPki(tmp_path / "pki").ca("Vendor Factory CA")


async def inline(function: Callable[..., LoadedCrl], *args: Any) -> LoadedCrl:
    """In place of a worker thread: the autojump clock would jump while one runs."""
    return function(*args)


def transport_for(
    vendor: TestCa, server: FakeCrlServer, state: Path, *, threads: bool = False
) -> TlsTransport:
    config = TlsConfig(ca_bundles=(str(vendor.certificate),), crl_urls=(URL,))
    transport = TlsTransport(config, crl_get=server.get, wall_clock=wall_clock)
    assert transport.crl_fetcher is not None
    if not threads:
        transport.crl_fetcher.in_thread = inline
    transport._in_thread = inline  # the contexts' build: test_tls_crl_apply.py runs it threaded
    transport._start_crl_fetcher(SimpleNamespace(state_dir=str(state)))  # type: ignore[arg-type]
    return transport


async def run_for(transport: TlsTransport, seconds: float) -> None:
    assert transport.crl_fetcher is not None
    with trio.move_on_after(seconds):
        await transport.crl_fetcher.run()


async def test_fetched_at_start_then_at_three_quarters_of_each_validity(
    vendor: TestCa, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    server = FakeCrlServer(vendor, tmp_path)
    transport = transport_for(vendor, server, tmp_path / "state")
    assert transport.loaded_crls() == ()
    await run_for(transport, 7 * DAY)
    # 4-day CRLs (thisUpdate rounded down to the second): asked at 0, ~3 days, ~6 days.
    assert len(server.asked) == 3
    assert server.asked[0] == 0
    assert server.asked[1] == pytest.approx(3 * DAY, abs=2)
    assert server.asked[2] == pytest.approx(6 * DAY, abs=4)
    (crl,) = transport.loaded_crls()
    assert (crl.path, crl.number) == (URL, 3)


async def test_a_failing_server_is_retried_with_backoff_until_the_crl_expires(
    vendor: TestCa,
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    server = FakeCrlServer(vendor, tmp_path)
    server.validity = 8 * 3600.0
    transport = transport_for(vendor, server, tmp_path / "state")
    await run_for(transport, 1.0)
    assert [crl.number for crl in transport.loaded_crls()] == [1]
    server.down = True
    caplog.clear()
    await run_for(transport, 9 * 3600.0)
    # Down from 6 h (its 3/4) on: retried after 1, 2, 4, 8, 16, 32 min, then hourly.
    gaps = [round(b - a) for a, b in zip(server.asked[1:], server.asked[2:], strict=False)]
    assert gaps[:6] == [60, 120, 240, 480, 960, 1920]
    assert all(gap == RETRY_MAX for gap in gaps[6:])
    assert server.asked[1] == pytest.approx(6 * 3600.0, abs=2)
    assert transport.crl_fetcher is not None
    assert transport.crl_fetcher.fetches == {"ok": 1, "failed": len(server.asked) - 1}
    failed = [r for r in caplog.records if r.name == FETCH_LOG]
    assert failed and all(r.levelno == logging.WARNING for r in failed)
    assert (
        failed[0]
        .getMessage()
        .startswith(
            f"tls: fetching the CRL at {URL} failed: no connection to the CRL server {URL} "
            "(refused); trying again in 60 s (in use: "
        )
    )
    # The CRL goes on being used until its nextUpdate passes, then fails closed: ERROR, as a
    # crl_files file nobody refreshes.
    expired = [r for r in caplog.records if r.name == TLS_LOG and r.levelno == logging.ERROR]
    assert len(expired) == 1
    assert "the CRL of CN=Vendor Factory CA expired on" in expired[0].getMessage()
    assert (
        expired[0]
        .getMessage()
        .endswith(
            "until a current CRL is in place (the gateway keeps fetching it; see the warnings "
            "about its URL)"
        )
    )
    stale = [
        r
        for r in caplog.records
        if r.name == TLS_LOG and "has not been refreshed" in r.getMessage()
    ]
    assert [r.levelno for r in stale] == [logging.WARNING]
    # The server back: the next retry restores a current CRL.
    server.down = False
    await run_for(transport, RETRY_MAX + 1)
    (crl,) = transport.loaded_crls()
    assert crl.number == 2 and crl.problem(wall_clock()) is None


async def test_an_out_of_date_or_older_crl_is_refused_and_the_one_in_use_kept(
    vendor: TestCa,
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = FakeCrlServer(vendor, tmp_path)
    transport = transport_for(vendor, server, tmp_path / "state")
    server.number = 4
    await run_for(transport, 1.0)
    assert [crl.number for crl in transport.loaded_crls()] == [5]
    assert transport.crl_fetcher is not None
    server.number = 1  # a mirror serving an old list
    await transport.crl_fetcher.refresh(URL)
    assert [crl.number for crl in transport.loaded_crls()] == [5]
    assert "is older than the one in use (cRLNumber 2 < 5)" in caplog.text
    server.number = 10
    server.this_update_offset = 5 * DAY  # expired a day ago
    await transport.crl_fetcher.refresh(URL)
    assert [crl.number for crl in transport.loaded_crls()] == [5]
    assert "the CRL of CN=Vendor Factory CA expired on" in caplog.text


async def test_a_url_that_serves_another_cas_crl_does_not_drop_the_first_cas(
    vendor: TestCa,
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Both CAs in ca_bundles: the other CA's CRL is genuine, current and has a higher
    # cRLNumber; used in place of the vendor's, it would leave the vendor's revoked phones
    # unchecked.
    other = TestPki(tmp_path / "other-pki").ca("Other CA")
    server = FakeCrlServer(vendor, tmp_path)
    config = TlsConfig(
        ca_bundles=(str(vendor.certificate), str(other.certificate)), crl_urls=(URL,)
    )
    transport = TlsTransport(config, crl_get=server.get, wall_clock=wall_clock)
    assert transport.crl_fetcher is not None
    transport.crl_fetcher.in_thread = transport._in_thread = inline
    transport._start_crl_fetcher(SimpleNamespace(state_dir=str(tmp_path / "state")))  # type: ignore[arg-type]
    await run_for(transport, 1.0)
    assert [crl.issuer for crl in transport.loaded_crls()] == ["CN=Vendor Factory CA"]
    impostor = FakeCrlServer(other, tmp_path / "other")
    (tmp_path / "other").mkdir()
    impostor.number = 50
    assert transport.crl_fetcher is not None
    transport.crl_fetcher._get = impostor.get
    await transport.crl_fetcher.refresh(URL)
    assert [crl.issuer for crl in transport.loaded_crls()] == ["CN=Vendor Factory CA"]
    assert "a CRL of CN=Other CA, where it served the CRL of CN=Vendor Factory CA" in caplog.text
    assert transport.crl_fetcher.fetches["failed"] == 1


async def test_a_fetched_crl_is_parsed_off_the_event_loop(
    vendor: TestCa,
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A large CA's CRL (some MiB) takes tens of ms to parse and verify: never in the thread
    # that runs the event loop.
    threads: list[bool] = []
    check = crl_fetch.check_crl_untrusted

    def checking(*args: Any) -> LoadedCrl:
        threads.append(threading.current_thread() is threading.main_thread())
        return check(*args)

    monkeypatch.setattr(crl_fetch, "check_crl_untrusted", checking)
    server = FakeCrlServer(vendor, tmp_path)
    transport = transport_for(vendor, server, tmp_path / "state", threads=True)
    assert transport.crl_fetcher is not None
    # Not under run_for's deadline: the autojump clock reaches it while the thread runs.
    await transport.crl_fetcher.refresh(URL)
    assert [crl.number for crl in transport.loaded_crls()] == [1]
    assert threads == [False]


async def test_a_fetched_crl_is_saved_off_the_event_loop(
    vendor: TestCa,
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Each file is flushed to disk (fsync) before its rename: on a busy or network disk that
    # waits milliseconds to seconds, which calls' signalling would wait too on the loop.
    threads: list[tuple[str, bool]] = []
    write = crl_fetch._write_durably

    def writing(path: Path, data: bytes) -> None:
        threads.append((path.suffix, threading.current_thread() is threading.main_thread()))
        write(path, data)

    monkeypatch.setattr(crl_fetch, "_write_durably", writing)
    server = FakeCrlServer(vendor, tmp_path)
    state = tmp_path / "state"
    transport = transport_for(vendor, server, state, threads=True)
    assert transport.crl_fetcher is not None
    await transport.crl_fetcher.refresh(URL)
    assert threads == [(".url", False), (".crl", False)]
    assert saved_names(state) == [".crl", ".url"]
    assert [crl.number for crl in transport.loaded_crls()] == [1]


async def test_a_crl_whose_ca_a_reload_dropped_while_it_was_saved_is_removed_and_not_used(
    vendor: TestCa, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    server = FakeCrlServer(vendor, tmp_path)
    state = tmp_path / "state"
    transport = transport_for(vendor, server, state)
    fetcher = transport.crl_fetcher
    assert fetcher is not None

    async def reload_during_the_save(function: Callable[..., Any], *args: Any) -> Any:
        result = function(*args)
        if function == fetcher._save:
            assert saved_names(state) == [".crl", ".url"]
            assert fetcher.forget_untrusted([]) == [URL]  # the CA left ca_bundles meanwhile
        return result

    fetcher.in_thread = reload_during_the_save
    await fetcher.refresh(URL)
    assert saved_names(state) == []
    assert transport.loaded_crls() == ()


async def test_the_same_crl_fetched_again_is_not_applied_again(
    vendor: TestCa, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    # The CA has not published a newer CRL: asked again in the last quarter (with backoff),
    # the server serves the one in use. Applying it would rebuild every TLS context each time.
    server = FakeCrlServer(vendor, tmp_path)
    server.validity = 8 * 3600.0
    transport = transport_for(vendor, server, tmp_path / "state")
    assert transport.crl_fetcher is not None
    used: list[int | None] = []
    use = transport.crl_fetcher._use

    async def counting(crl: LoadedCrl) -> None:
        used.append(crl.number)
        await use(crl)

    transport.crl_fetcher._use = counting
    await run_for(transport, 1.0)
    served = (tmp_path / "served-1.crl").read_bytes()

    async def same(url: str) -> bytes:
        server.asked.append(trio.current_time())
        return served

    transport.crl_fetcher._get = same
    await run_for(transport, 7 * 3600.0)
    assert len(server.asked) >= 4  # asked at 6 h, then 1, 2, 4 ... min later
    assert used == [1]
    (crl,) = transport.loaded_crls()
    assert crl.number == 1


async def test_a_fetched_crl_is_saved_and_used_by_the_next_start_before_any_fetch(
    vendor: TestCa, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    server = FakeCrlServer(vendor, tmp_path)
    state = tmp_path / "state"
    first = transport_for(vendor, server, state)
    await run_for(first, 1.0)
    saved = list((state / "tls" / "crls").iterdir())
    assert sorted(path.suffix for path in saved) == [".crl", ".url"]
    server.down = True
    asked = len(server.asked)
    second = transport_for(vendor, server, state)
    (crl,) = second.loaded_crls()
    assert (crl.path, crl.number) == (URL, 1)
    assert len(server.asked) == asked  # loaded, not fetched


async def test_both_saved_files_are_written_under_a_temporary_name_synced_and_renamed(
    vendor: TestCa,
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A crash or power loss must leave the old .url and .crl or the new ones, never a
    # truncated one (a .url damaged so forgets a learned URL until a handshake teaches it).
    events: list[tuple[str, str]] = []
    fsync, replace = crl_fetch.os.fsync, crl_fetch.os.replace

    def syncing(fd: int) -> None:
        events.append(("fsync", Path(os.readlink(f"/proc/self/fd/{fd}")).name))
        fsync(fd)

    def renaming(source: Path, target: Path) -> None:
        assert Path(source).parent == Path(target).parent  # atomic: one file system
        events.append(("replace", Path(target).name))
        replace(source, target)

    monkeypatch.setattr(crl_fetch.os, "fsync", syncing)
    monkeypatch.setattr(crl_fetch.os, "replace", renaming)
    server = FakeCrlServer(vendor, tmp_path)
    state = tmp_path / "state"
    transport = transport_for(vendor, server, state)
    await run_for(transport, 1.0)
    directory = state / "tls" / "crls"
    saved = sorted(path.name for path in directory.iterdir())
    assert [Path(name).suffix for name in saved] == [".crl", ".url"]  # no temporary left
    crl_name, url_name = saved
    for name in (url_name, crl_name):
        at = events.index(("replace", name))
        assert events[at - 1][0] == "fsync" and events[at - 1][1].startswith(f".{name}.")
        assert events[at + 1] == ("fsync", "crls")  # the rename itself made durable
    assert (directory / url_name).read_text(encoding="ascii") == URL + "\n"


async def test_urls_learned_from_certificates_are_saved_and_known_again_at_the_next_start(
    vendor: TestCa, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    server = FakeCrlServer(vendor, tmp_path)
    state = tmp_path / "state"
    config = TlsConfig(ca_bundles=(str(vendor.certificate),), crl_distribution_points=True)
    first = TlsTransport(config, crl_get=server.get, wall_clock=wall_clock)
    assert first.crl_fetcher is not None
    first.crl_fetcher.in_thread = first._in_thread = inline
    first._start_crl_fetcher(SimpleNamespace(state_dir=str(state)))  # type: ignore[arg-type]
    assert first.loaded_crls() == ()
    first._learn_distribution_points(vendor.issue("phone", hosts=[], crl_url=URL).x509)
    await run_for(first, 1.0)
    assert [crl.path for crl in first.loaded_crls()] == [URL]
    server.down = True
    second = TlsTransport(config, crl_get=server.get, wall_clock=wall_clock)
    second._start_crl_fetcher(SimpleNamespace(state_dir=str(state)))  # type: ignore[arg-type]
    assert [crl.path for crl in second.loaded_crls()] == [URL]
    assert second.crl_fetcher is not None and second.crl_fetcher.urls() == (URL,)


def fetcher_of(get: crl_fetch.GetCrl) -> crl_fetch.CrlFetcher:
    return crl_fetch.CrlFetcher(
        cas=lambda: (), use=lambda crl: None, tick=lambda now: None, get=get, wall_clock=wall_clock
    )


async def test_a_dead_crl_server_does_not_delay_the_other_urls(
    autojump_clock: trio.testing.MockClock,
) -> None:
    dead, alive = "http://dead.example/ca.crl", "http://alive.example/ca.crl"
    asked: dict[str, float] = {}

    async def get(url: str) -> bytes:
        asked[url] = trio.current_time()
        if url == dead:
            await trio.sleep_forever()  # FETCH_TIMEOUT ends it
        raise OcspError("refused")

    fetcher = fetcher_of(get)
    fetcher.add(dead)
    fetcher.add(alive)
    with trio.move_on_after(1.0):
        await fetcher.run()
    assert asked == {dead: 0.0, alive: 0.0}
    assert fetcher.fetches == {"ok": 0, "failed": 1}  # the dead one still waits


async def test_at_most_four_crls_are_fetched_at_once_each_with_its_own_backoff(
    autojump_clock: trio.testing.MockClock,
) -> None:
    urls = [f"http://ca{n}.example/ca.crl" for n in range(6)]
    asked: list[tuple[str, float]] = []
    fetching = most = 0

    async def get(url: str) -> bytes:
        nonlocal fetching, most
        asked.append((url, trio.current_time()))
        fetching += 1
        most = max(most, fetching)
        try:
            await trio.sleep_forever()
        finally:
            fetching -= 1
        raise AssertionError("unreachable")

    fetcher = fetcher_of(get)
    for url in urls:
        fetcher.add(url)
    with trio.move_on_after(crl_fetch.FETCH_TIMEOUT * 2 + 1):
        await fetcher.run()
    assert crl_fetch.MAX_CONCURRENT_FETCHES == 4
    assert most == 4
    # Four at once, the other two as the first four time out; each retried after its own
    # backoff (RETRY_FIRST after its failure), not before.
    assert [when for _, when in asked[:4]] == [0.0] * 4
    assert [when for _, when in asked[4:6]] == [crl_fetch.FETCH_TIMEOUT] * 2
    assert sorted(url for url, _ in asked[:6]) == urls
    assert len(asked) == 6
    assert fetcher.fetches["failed"] == 6


async def test_the_ca_bundles_are_read_at_start_and_on_reload_not_at_each_fetch(
    vendor: TestCa,
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Reading and parsing the PEM bundles is file I/O on the event loop: done when the
    # transport starts and on a reload (SIGHUP), as for its TLS contexts, not at each fetch.
    reads: list[Path] = []
    load = tls.load_certificates

    def loading(path: Path) -> Any:
        reads.append(path)
        return load(path)

    monkeypatch.setattr(tls, "load_certificates", loading)
    server = FakeCrlServer(vendor, tmp_path)
    transport = transport_for(vendor, server, tmp_path / "state")
    started = len(reads)
    await run_for(transport, 7 * DAY)
    assert len(server.asked) == 3 and transport.crl_fetcher is not None
    assert transport.crl_fetcher.fetches["ok"] == 3
    assert len(reads) == started  # three fetches, no bundle read
    # A reload reads them again, and the next fetch checks against what it read.
    other = TestPki(tmp_path / "other").ca("Other CA")
    vendor.certificate.write_bytes(other.certificate.read_bytes())
    transport.reload_certificates()
    assert len(reads) > started
    await transport.crl_fetcher.refresh(URL)
    assert transport.crl_fetcher.fetches["failed"] == 1  # no longer signed by a trusted CA


def started(config: TlsConfig, server: FakeCrlServer, state: Path) -> TlsTransport:
    transport = TlsTransport(config, crl_get=server.get, wall_clock=wall_clock)
    assert transport.crl_fetcher is not None
    transport.crl_fetcher.in_thread = transport._in_thread = inline
    transport._start_crl_fetcher(SimpleNamespace(state_dir=str(state)))  # type: ignore[arg-type]
    return transport


def saved_names(state: Path) -> list[str]:
    return sorted(path.suffix for path in (state / "tls" / "crls").iterdir())


async def test_saved_crls_of_urls_no_longer_configured_are_removed_at_start(
    vendor: TestCa,
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = FakeCrlServer(vendor, tmp_path)
    state = tmp_path / "state"
    await run_for(transport_for(vendor, server, state), 1.0)
    assert saved_names(state) == [".crl", ".url"]
    # A crash while saving left a temporary file and a .crl without its .url.
    directory = state / "tls" / "crls"
    (directory / ".0123.crl.99.tmp").write_bytes(b"half")
    (directory / "0123.crl").write_bytes(b"orphan")
    caplog.set_level(logging.INFO, logger=FETCH_LOG)
    # The operator moved to another URL (of the same CA) and restarted.
    other = TlsConfig(
        ca_bundles=(str(vendor.certificate),), crl_urls=("http://crl2.vendor.example/f.crl",)
    )
    second = started(other, server, state)
    assert second.loaded_crls() == ()
    assert list(directory.iterdir()) == []
    removed = [r.getMessage() for r in caplog.records if r.name == FETCH_LOG]
    assert any(
        line.startswith("tls: removed the saved CRL ")
        and line.endswith(f" of {URL}: crl_urls no longer lists it")
        for line in removed
    )
    assert all(r.levelno == logging.INFO for r in caplog.records if r.name == FETCH_LOG)
    assert len(removed) == 3


async def test_a_learned_url_whose_ca_left_ca_bundles_is_removed_and_not_fetched(
    vendor: TestCa,
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = FakeCrlServer(vendor, tmp_path)
    state = tmp_path / "state"
    config = TlsConfig(ca_bundles=(str(vendor.certificate),), crl_distribution_points=True)
    first = started(config, server, state)
    first._learn_distribution_points(vendor.issue("phone", hosts=[], crl_url=URL).x509)
    await run_for(first, 1.0)
    assert saved_names(state) == [".crl", ".url"]
    # The vendor's CA is no longer trusted: restarted with another CA only.
    caplog.set_level(logging.INFO, logger=FETCH_LOG)
    other = TestPki(tmp_path / "other").ca("Other CA")
    config = TlsConfig(ca_bundles=(str(other.certificate),), crl_distribution_points=True)
    second = started(config, server, state)
    assert second.crl_fetcher is not None and second.crl_fetcher.urls() == ()
    assert second.loaded_crls() == ()
    assert saved_names(state) == []
    assert f" of {URL}: its CA CN=Vendor Factory CA is no longer in ca_bundles" in caplog.text
    asked = len(server.asked)
    await run_for(second, DAY)
    assert len(server.asked) == asked  # never fetched again


async def test_a_reload_that_drops_a_ca_drops_its_fetched_crl_and_saved_files(
    vendor: TestCa,
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = FakeCrlServer(vendor, tmp_path)
    state = tmp_path / "state"
    other = TestPki(tmp_path / "other").ca("Other CA")
    bundle = tmp_path / "cas.pem"
    bundle.write_bytes(vendor.certificate.read_bytes() + other.certificate.read_bytes())
    config = TlsConfig(ca_bundles=(str(bundle),), crl_distribution_points=True)
    transport = started(config, server, state)
    transport._learn_distribution_points(vendor.issue("phone", hosts=[], crl_url=URL).x509)
    await run_for(transport, 1.0)
    assert [crl.path for crl in transport.loaded_crls()] == [URL]
    caplog.set_level(logging.INFO, logger=FETCH_LOG)
    bundle.write_bytes(other.certificate.read_bytes())  # the vendor's CA taken out
    transport.reload_certificates()
    assert transport.loaded_crls() == ()
    assert transport.crl_fetcher is not None and transport.crl_fetcher.urls() == ()
    assert saved_names(state) == []
    assert "its CA CN=Vendor Factory CA is no longer in ca_bundles" in caplog.text
    # Back in ca_bundles: learned again from the next certificate of that CA.
    bundle.write_bytes(vendor.certificate.read_bytes())
    transport.reload_certificates()
    transport._learn_distribution_points(vendor.issue("phone-2", hosts=[], crl_url=URL).x509)
    assert transport.crl_fetcher.urls() == (URL,)


async def test_sighup_fetches_every_crl_again_now(
    vendor: TestCa,
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The operator revoked a phone at the CA and sends SIGHUP: the CRL is fetched at once,
    # not at 3/4 of the one in use (3 days), and its revocations used.
    server = FakeCrlServer(vendor, tmp_path)
    transport = transport_for(vendor, server, tmp_path / "state")
    await run_for(transport, 100.0)
    assert server.asked == [0.0]
    caplog.set_level(logging.INFO, logger=FETCH_LOG)
    transport.reload_certificates()
    await run_for(transport, 1.0)
    assert server.asked == [0.0, 100.0]
    assert [crl.number for crl in transport.loaded_crls()] == [2]
    assert "tls: reload: fetching 1 CRL(s) again now" in caplog.text


async def test_sighup_does_not_turn_a_dead_servers_backoff_into_a_storm(
    vendor: TestCa, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    server = FakeCrlServer(vendor, tmp_path)
    server.down = True
    transport = transport_for(vendor, server, tmp_path / "state")

    async def sighup_every_5_s() -> None:
        while True:
            await trio.sleep(5.0)
            transport.reload_certificates()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sighup_every_5_s)
        await run_for(transport, 301.0)
        nursery.cancel_scope.cancel()
    # Without the SIGHUPs: 0, 60, 180 (backoff). With them: no sooner than 60 s after each
    # failure, never every 5 s; the backoff itself is not reset (failures go on counting).
    assert server.asked == [0.0, 60.0, 120.0, 180.0, 240.0, 300.0]
    assert transport.crl_fetcher is not None
    assert transport.crl_fetcher._sources[URL].failures == 6


async def test_sighup_during_a_fetch_fetches_once_more_after_it(
    vendor: TestCa, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    # The fetch under way may have left the server before the revocation: asked again.
    server = FakeCrlServer(vendor, tmp_path)
    transport = transport_for(vendor, server, tmp_path / "state")
    assert transport.crl_fetcher is not None
    serve = server.get

    async def slow(url: str) -> bytes:
        await trio.sleep(10.0)
        return await serve(url)

    transport.crl_fetcher._get = slow

    async def sighup_at_5_s() -> None:
        await trio.sleep(5.0)
        transport.reload_certificates()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sighup_at_5_s)
        await run_for(transport, 30.0)
    assert server.asked == [10.0, 20.0]
    assert [crl.number for crl in transport.loaded_crls()] == [2]


async def test_a_url_learned_at_a_handshake_is_fetched_at_once(
    vendor: TestCa, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    # crl_distribution_points: the first phone of a CA is checked against nothing; the window
    # until its CA's CRL is in use is one fetch, started by its handshake, not a timer's.
    server = FakeCrlServer(vendor, tmp_path)
    config = TlsConfig(ca_bundles=(str(vendor.certificate),), crl_distribution_points=True)
    transport = started(config, server, tmp_path / "state")

    async def first_phone_at_100_s() -> None:
        await trio.sleep(100.0)
        transport._learn_distribution_points(vendor.issue("phone", hosts=[], crl_url=URL).x509)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(first_phone_at_100_s)
        await run_for(transport, 101.0)
    assert server.asked == [100.0]
    assert [crl.path for crl in transport.loaded_crls()] == [URL]


async def test_a_learned_url_forgotten_by_a_reload_during_its_fetch_is_not_used(
    vendor: TestCa, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    server = FakeCrlServer(vendor, tmp_path)
    state = tmp_path / "state"
    other = TestPki(tmp_path / "other").ca("Other CA")
    bundle = tmp_path / "cas.pem"
    bundle.write_bytes(vendor.certificate.read_bytes() + other.certificate.read_bytes())
    config = TlsConfig(ca_bundles=(str(bundle),), crl_distribution_points=True)
    transport = started(config, server, state)
    transport._learn_distribution_points(vendor.issue("phone", hosts=[], crl_url=URL).x509)
    await run_for(transport, 1.0)
    assert transport.crl_fetcher is not None

    async def slow_check(function: Callable[..., LoadedCrl], *args: Any) -> LoadedCrl:
        await trio.sleep(10.0)  # a large CRL checked in the thread, against the CAs of then
        return function(*args)

    transport.crl_fetcher.in_thread = slow_check
    transport.reload_certificates()  # SIGHUP: fetched again

    async def vendor_ca_removed_at_5_s() -> None:
        await trio.sleep(5.0)
        bundle.write_bytes(other.certificate.read_bytes())
        transport.reload_certificates()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(vendor_ca_removed_at_5_s)
        await run_for(transport, 30.0)
    assert transport.loaded_crls() == ()
    assert transport.crl_fetcher.urls() == ()
    assert not (state / "tls" / "crls").exists() or saved_names(state) == []


async def test_a_saved_crl_that_cannot_be_written_or_read_is_said_in_the_systems_words(
    vendor: TestCa,
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A file's error as ENOENT or EACCES says it; Python's text ("[Errno 13] Permission
    # denied: '/var/lib/...'") named the path a second time, in its own words.
    def denied(path: Path, data: bytes) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(crl_fetch, "_write_durably", denied)
    server = FakeCrlServer(vendor, tmp_path)
    state = tmp_path / "state"
    transport = transport_for(vendor, server, state)
    assert transport.crl_fetcher is not None
    with caplog.at_level(logging.WARNING, logger="gateway"):
        await transport.crl_fetcher.refresh(URL)
    [line] = [r.getMessage() for r in caplog.records if "cannot save the CRL" in r.getMessage()]
    assert line.endswith(": EACCES (Permission denied)"), line
    assert "Errno" not in line
