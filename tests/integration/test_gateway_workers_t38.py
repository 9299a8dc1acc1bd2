"""T.38 fax passthrough with ``[media] workers = 2``: the same as in-process.

The in-process tests of tests/component/calls/test_b2bua_t38.py run here unchanged against a gateway
whose media relay is two real worker processes on 127.0.0.1 (ports of this process,
tests/port_blocks.py), in real time (every wait there is bounded): an ATA's re-INVITE to T.38 is
relayed, UDPTL datagrams go both ways byte for byte (those whose first octet is 0x80 included), and
a re-INVITE back to audio makes the stream RTP again; a ZRTP (SRTP) leg relays the fax in clear and
is offered ZRTP afresh back to audio; an intercepted call's fax reaches the mediation function as X3
IP packets with the sender's address and the relay's port. Signalling runs on the in-memory SIP
network, as in the component tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from tests.component.calls import b2bua_env, intercept_calls, t38_scenarios
from tests.component.calls.t38_scenarios import (
    a_zrtp_leg_and_a_plain_leg_relaying_a_fax,
    an_atas_reinvite_to_t38_and_back_to_audio,
    an_intercepted_calls_fax_to_x3,
)
from tests.port_blocks import ModuleBlock

MEDIA_PORTS = ModuleBlock(100)  # this process's own ports (tests/port_blocks.py)


@pytest.fixture(autouse=True)
def media_workers(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Every gateway the component helpers start runs ``[media] workers = 2`` (checked: it has
    a worker pool and no in-process relay); the gateways made are listed."""
    made = b2bua_env.gateway_config
    gateways: list[Any] = []

    def with_workers(*args: Any, **kwargs: Any) -> Any:
        config = made(*args, **kwargs)
        return attrs.evolve(
            config, media=attrs.evolve(config.media, workers=2, ports=MEDIA_PORTS.text())
        )

    monkeypatch.setattr(b2bua_env, "gateway_config", with_workers)
    real_start = b2bua_env.start_b2bua

    async def start(*args: Any, **kwargs: Any) -> b2bua_env.B2bua:
        env = await real_start(*args, **kwargs)
        assert env.gateway.media_workers is not None and env.gateway.relay is None
        gateways.append(env.gateway)
        return env

    # Bound by name in the modules that call it.
    for module in (t38_scenarios, intercept_calls):
        monkeypatch.setattr(module, "start_b2bua", start)
    yield gateways
    assert gateways, "no gateway was started"


async def test_an_atas_reinvite_to_t38_is_relayed_by_a_worker_and_back_to_audio(
    nursery: trio.Nursery, tmp_path: Path, voipgw_seed: int, media_workers: list[Any]
) -> None:
    await an_atas_reinvite_to_t38_and_back_to_audio(nursery, tmp_path, voipgw_seed)
    assert len(media_workers) == 1


async def test_a_zrtp_leg_and_a_plain_leg_relay_the_fax_in_clear_through_a_worker(
    nursery: trio.Nursery, tmp_path: Path, voipgw_seed: int, media_workers: list[Any]
) -> None:
    await a_zrtp_leg_and_a_plain_leg_relaying_a_fax(nursery, tmp_path, voipgw_seed)


async def test_an_intercepted_calls_fax_reaches_x3_as_ip_packets_from_a_worker(
    nursery: trio.Nursery, tmp_path: Path, voipgw_seed: int, media_workers: list[Any]
) -> None:
    await an_intercepted_calls_fax_to_x3(nursery, tmp_path, voipgw_seed)
