"""The stir_shaken service's fetches as tasks of its own nursery (``StirShaken.run``), driven
without a gateway, with trio's virtual clock: how many may run at once. A fetch outlives the
call that started it (the calls only wait for it), so the fetches' number is bounded apart
from the calls': a peer whose calls each name a new x5u and are CANCELled at once must not
pile up connections to wherever those URLs point."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from gateway.plugins.stir_shaken import MAX_CRLS, MAX_FETCHES, StirShaken, StirShakenConfig
from gateway.plugins.stir_shaken.certificates import RevocationUnavailable
from gateway.plugins.stir_shaken.fetch import Fetched
from gateway.plugins.stir_shaken.passport import PassportError
from gateway.testing.sti_pki import make_pki


async def test_certificate_fetches_running_at_once_are_bounded(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """MAX_FETCHES URLs whose repositories do not answer: each call waiting for one goes away
    at once (its deadline is now), its fetch runs on, up to fetch_timeout. One more URL is not
    fetched (436, "certificate not fetched", nothing cached); once those fetches ended, it is."""
    pki = make_pki()
    anchors, _, _ = pki.write(tmp_path)
    started: list[str] = []

    async def fetch(url: str) -> Fetched:
        started.append(url)
        if "answers" in url:
            return Fetched(pki.chain_pem(), max_age=600)
        await trio.sleep_forever()
        raise AssertionError("not reached")

    config = StirShakenConfig(
        verify_trunks=("carrier",), trust_anchors=str(anchors), fetch_timeout=30.0
    )
    service = StirShaken(config, fetcher=fetch)
    one_more = "https://answers.example/shaken.pem"
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        for n in range(MAX_FETCHES):
            with pytest.raises(PassportError, match="certificate fetch timed out"):
                await service.signer_certificate(f"https://{n}.example/c.pem", trio.current_time())
        await trio.testing.wait_all_tasks_blocked()
        assert len(started) == MAX_FETCHES
        with pytest.raises(PassportError, match="fetches running already") as refused:
            await service.signer_certificate(one_more, trio.current_time() + 30)
        assert refused.value.status == 436
        assert started[-1] != one_more
        await trio.sleep(31)  # the fetches' own fetch_timeout: failed, the URLs free
        signer = await service.signer_certificate(one_more, trio.current_time() + 30)
        assert signer.serial == pki.signer.serial_number
        assert started[-1] == one_more
        nursery.cancel_scope.cancel()


async def test_a_fetch_that_raises_unexpectedly_is_said_once_and_the_service_goes_on(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A fetch raising what no fetch should (a bug in a fetcher) ends that fetch only: said
    once at ERROR, the calls waiting for it get "certificate fetch did not finish" (436), the
    URL is no longer listed as fetched, nothing is cached for it, and the service's nursery,
    which holds every other fetch, goes on: the next URL is fetched (a raise there would end
    ``run``, and every verified call after would fail for want of it)."""
    pki = make_pki()
    anchors, _, _ = pki.write(tmp_path)

    async def fetch(url: str) -> Fetched:
        await trio.sleep(1)
        if "buggy" in url:
            raise KeyError("a fetcher's bug")
        return Fetched(pki.chain_pem(), max_age=600)

    config = StirShakenConfig(
        verify_trunks=("carrier",), trust_anchors=str(anchors), fetch_timeout=30.0
    )
    service = StirShaken(config, fetcher=fetch)
    buggy = "https://buggy.example/shaken.pem"
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        refused: list[PassportError] = []

        async def wait_for_buggy() -> None:
            with pytest.raises(PassportError, match="certificate fetch did not finish") as err:
                await service.signer_certificate(buggy, trio.current_time() + 30)
            refused.append(err.value)

        async with trio.open_nursery() as calls:
            calls.start_soon(wait_for_buggy)
            calls.start_soon(wait_for_buggy)
        assert [err.status for err in refused] == [436, 436]
        assert not service._fetching.running
        assert service.cache.get(buggy, service.clock()) is None
        said = [r for r in caplog.records if "the fetch of" in r.getMessage()]
        assert [r.getMessage() for r in said] == [f"stir_shaken: the fetch of {buggy} failed"]
        signer = await service.signer_certificate(
            "https://answers.example/shaken.pem", trio.current_time() + 30
        )
        assert signer.serial == pki.signer.serial_number
        nursery.cancel_scope.cancel()


async def test_crl_fetches_running_at_once_are_bounded_and_the_gateways_stop_ends_them(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """MAX_CRLS CRL URLs whose servers do not answer: one more is not fetched ("16 CRL
    fetches running already", revocation unavailable). The service's stop (the gateway's)
    ends the fetches: a call still waiting is told "CRL fetch did not finish", and no URL is
    left listed as fetched."""
    pki = make_pki()
    anchors, _, _ = pki.write(tmp_path)
    started: list[str] = []

    async def fetch(url: str) -> Fetched:
        started.append(url)
        if url.endswith(".pem"):
            return Fetched(pki.chain_pem(), max_age=600)
        await trio.sleep_forever()
        raise AssertionError("not reached")

    config = StirShakenConfig(
        verify_trunks=("carrier",), trust_anchors=str(anchors), fetch_timeout=30.0
    )
    service = StirShaken(config, fetcher=fetch)
    told: list[str] = []

    async def waiting_call() -> None:
        try:
            await service.revocation_list(
                "https://0.example/sti.crl", signer, trio.current_time() + 30
            )
        except RevocationUnavailable as err:
            told.append(err.reason)

    async with trio.open_nursery() as calls, trio.open_nursery() as plugins:
        await plugins.start(service.run)
        signer = await service.signer_certificate(
            "https://certs.example/shaken.pem", trio.current_time() + 30
        )
        for n in range(MAX_CRLS):
            with pytest.raises(RevocationUnavailable, match="CRL fetch timed out"):
                await service.revocation_list(
                    f"https://{n}.example/sti.crl", signer, trio.current_time()
                )
        await trio.testing.wait_all_tasks_blocked()
        assert len(started) == 1 + MAX_CRLS
        with pytest.raises(RevocationUnavailable, match=f"{MAX_CRLS} CRL fetches running"):
            await service.revocation_list(
                "https://more.example/sti.crl", signer, trio.current_time() + 30
            )
        assert len(started) == 1 + MAX_CRLS
        calls.start_soon(waiting_call)
        await trio.testing.wait_all_tasks_blocked()
        # The gateway's stop: the plugin's task (run) is cancelled, the call is not yet.
        plugins.cancel_scope.cancel()
    assert told == ["CRL fetch did not finish"]
    assert not service._crl_fetching.running and not service._fetching.running
