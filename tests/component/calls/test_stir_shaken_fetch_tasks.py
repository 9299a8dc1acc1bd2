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

from gateway.plugins.stir_shaken import MAX_FETCHES, StirShaken, StirShakenConfig
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
