"""T.38 with ``[media] workers = 2``: the workers relay RTP only, so a re-INVITE to T.38 is
refused (488, the reason as Warning, logged) and the call goes on with its audio. Calls on the
in-memory SIP network, media in two real worker processes on 127.0.0.1 (ports 31300-31399), in
real time, every wait bounded (as test_gateway_workers.py).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio

from gateway.core.config import from_mapping
from gateway.core.gateway import Gateway
from gateway.core.ids import SeededIds
from gateway.core.store.sqlite import SqliteStore
from gateway.testing.memory_transport import memory_plugins
from gateway.testing.network import MemoryNetwork
from gateway.testing.sip_agent import AutoAnswer, SipAgent
from tests.integration.test_gateway_workers import (
    ALICE,
    DID,
    GW,
    PASSWORD,
    REALM,
    TIMEOUT,
    TRUNK,
    answered_call,
)

MEDIA_PORTS = range(31300, 31400)
T38_ONLY = (
    b"v=0\r\no=- 1 2 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\n"
    b"m=image 40002 udptl t38\r\na=T38FaxVersion:0\r\na=T38FaxMaxDatagram:400\r\n"
)


async def test_media_workers_refuse_t38_saying_why_and_the_call_goes_on(
    tmp_path: Path, voipgw_seed: int, caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "state"
    store = SqliteStore.open(state)
    store.accounts_add("alice", PASSWORD, REALM)
    store.close()
    config = from_mapping(
        {
            "gateway": {"state_dir": str(state), "realm": REALM},
            "sip": {"listen": ["udp:127.0.0.1:5060"], "t1": 0.5},
            "media": {
                "address": "127.0.0.1",
                "ports": f"{MEDIA_PORTS.start}-{MEDIA_PORTS.stop - 1}",
                "workers": 2,
            },
            "plugins": {"enable": []},
            "trunks": [
                {
                    "name": "carrier",
                    "address": "udp:127.0.0.2:5060",
                    "prefixes": ["+1"],
                    "dids": {DID: "alice"},
                }
            ],
        }
    )
    caplog.set_level(logging.INFO, logger="gateway.core.media.session")
    async with trio.open_nursery() as nursery:
        network = MemoryNetwork(voipgw_seed, delay=0.001)
        await nursery.start(network.serve)
        gateway = Gateway(config, memory_plugins(config, network), ids=SeededIds(voipgw_seed))
        await nursery.start(gateway.serve)
        assert gateway.media_workers is not None
        alice = SipAgent(
            network,
            ALICE,
            ids=SeededIds(voipgw_seed + 1),
            user="alice",
            password=PASSWORD,
            proxy=GW,
            auto=AutoAnswer(),
            media_port=30000,
        )
        trunk = SipAgent(
            network,
            TRUNK,
            ids=SeededIds(voipgw_seed + 2),
            user="+15550100",
            domain="127.0.0.2:5060",
            proxy=GW,
            media_port=40000,
        )
        await nursery.start(alice.serve)
        await nursery.start(trunk.serve)
        assert (await alice.register()).status == 200

        call, _ = await answered_call(trunk, alice)
        refused = await call.reinvite(T38_ONLY, timeout=TIMEOUT)
        assert refused.status == 488
        assert "[media] workers = 1" in (refused.headers.get("Warning") or "")
        assert "T.38 stream (m= line 1) not relayed" in caplog.text
        assert not [r for r in alice.received if r.request.method == "INVITE"][1:]
        # The call goes on with its audio.
        assert (await call.reinvite(trunk.offer_sdp(), timeout=TIMEOUT)).status == 200
        assert (await call.bye(timeout=TIMEOUT)).status == 200
        nursery.cancel_scope.cancel()
