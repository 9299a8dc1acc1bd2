"""``voipgw calls`` on a live call whose media is relayed by a worker process (``[media] workers =
2``): the worker copies the legs' RTCP to the SIP process, which the command asks over the control
socket (gateway/core/control.py) for each leg's figures now. Signalling on the in-memory network,
media on 127.0.0.1 (relay and phone ports from a block of this process, tests/port_blocks.py),
the command a real subprocess; real time (the workers are real processes), every wait bounded.
"""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import trio

from gateway.core.config import from_mapping
from gateway.core.gateway import Gateway
from gateway.core.ids import SeededIds
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.core.store.sqlite import SqliteStore
from gateway.testing.memory_transport import memory_plugins
from gateway.testing.network import Address, MemoryNetwork
from gateway.testing.sip_agent import SipAgent, simple_sdp
from tests.component.calls.rtcp_reports import (
    receiver_report,
    rtcp_port,
    sender_report,
)
from tests.port_blocks import ModuleBlock

GW: Address = ("127.0.0.1", 5060)
TRUNK: Address = ("127.0.0.2", 5060)
ALICE: Address = ("127.0.0.3", 5060)
REALM = "voipgw.local"
PASSWORD = "wonderland-42"
DID = "+4930123456"
MEDIA_PORTS = ModuleBlock(100)  # this process's own ports (tests/port_blocks.py)
CALLER_PORT = ModuleBlock(10)
CALLEE_PORT = ModuleBlock(10)
TIMEOUT = 15.0


async def bind(port: int) -> trio.socket.SocketType:
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await sock.bind(("127.0.0.1", port))
    return sock


async def voipgw_calls(state: Path, *flags: str) -> str:
    command = [sys.executable, "-m", "gateway", "calls", "--state-dir", str(state), *flags]
    with trio.fail_after(60):
        done = await trio.run_process(command, capture_stdout=True, capture_stderr=True)
    assert done.stderr == b"", done.stderr
    return done.stdout.decode()


async def test_voipgw_calls_shows_a_worker_relayed_calls_quality_now(
    tmp_path: Path, voipgw_seed: int
) -> None:
    state = tmp_path / "state"
    store = SqliteStore.open(state)
    store.accounts_add("alice", PASSWORD, REALM)
    store.close()
    config = from_mapping(
        {
            "gateway": {"state_dir": str(state), "realm": REALM},
            "sip": {"listen": ["udp:127.0.0.1:5060"], "t1": 0.5},
            "media": {"address": "127.0.0.1", "ports": MEDIA_PORTS.text(), "workers": 2},
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
    sockets: list[trio.socket.SocketType] = []
    async with trio.open_nursery() as nursery:
        network = MemoryNetwork(voipgw_seed, delay=0.001)
        await nursery.start(network.serve)
        gateway = Gateway(config, memory_plugins(config, network), ids=SeededIds(voipgw_seed))
        await nursery.start(gateway.serve)
        assert gateway.media_workers is not None and gateway.relay is None
        alice = SipAgent(
            network,
            ALICE,
            ids=SeededIds(voipgw_seed + 1),
            user="alice",
            password=PASSWORD,
            proxy=GW,
        )
        trunk = SipAgent(
            network,
            TRUNK,
            ids=SeededIds(voipgw_seed + 2),
            user="+15550100",
            domain="127.0.0.2:5060",
            proxy=GW,
        )
        await nursery.start(alice.serve)
        await nursery.start(trunk.serve)
        assert (await alice.register()).status == 200

        call = await trunk.invite(
            f"sip:{DID}@127.0.0.1:5060", sdp=simple_sdp("127.0.0.1", CALLER_PORT.first())
        )
        leg_b = await alice.next_call(timeout=TIMEOUT)
        offered = parse_sdp_untrusted(leg_b.invite.body).media[0]
        await leg_b.answer(200, sdp=simple_sdp("127.0.0.1", CALLEE_PORT.first()))
        final = await call.final(timeout=TIMEOUT)
        assert final.status == 200
        answered = parse_sdp_untrusted(final.body).media[0]
        assert gateway.calls is not None
        [live_call] = gateway.calls.calls
        sockets = [await bind(CALLER_PORT.first() + 1), await bind(CALLEE_PORT.first() + 1)]
        caller_rtcp, callee_rtcp = sockets
        # The callee's SR and the caller's RR answering it cross the worker, which copies both
        # to the SIP process (at most one per direction every 0.2 s: one each here).
        await callee_rtcp.sendto(sender_report(0xB, packets=250), ("127.0.0.1", rtcp_port(offered)))
        with trio.fail_after(TIMEOUT):
            await caller_rtcp.recv(2048)
        await trio.sleep(0.3)
        rr = receiver_report(0xA, 0xB, dlsr=0.25)
        await caller_rtcp.sendto(rr, ("127.0.0.1", rtcp_port(answered)))
        with trio.fail_after(TIMEOUT):
            await callee_rtcp.recv(2048)
        quality = live_call.media.quality if live_call.media is not None else None
        assert quality is not None
        with trio.fail_after(TIMEOUT):
            while "a" not in quality.legs or quality.legs["a"].mos is None:
                await trio.sleep(0.01)

        text = await voipgw_calls(state)
        as_json = json.loads(await voipgw_calls(state, "--json"))
        assert (await call.bye()).status == 200
        nursery.cancel_scope.cancel()
    for sock in sockets:
        sock.close()

    lines = [line.strip() for line in text.splitlines() if " quality " in line]
    assert len(lines) == 2, text
    caller_line, callee_line = lines
    assert caller_line.startswith(
        "caller leg quality now (what it received): 0.8 % lost (5 packets lost in all), "
        "jitter 12 ms, RTT "
    )
    assert " MOS 4.3; last report " in caller_line and caller_line.endswith(" s ago")
    assert "STALE" not in caller_line
    assert callee_line.startswith(
        "callee leg quality now (what it received): no reports in its RTCP, its phone sent 250 "
        "packets; last RTCP "
    )
    [record] = as_json
    assert record["call_id"] == live_call.record_id and record["ended_at"] is None
    caller = record["live_quality"]["a"]
    assert caller["fraction_lost"] == round(2 / 256, 4) and caller["lost"] == 5
    assert caller["jitter_ms"] == 12.0 and 0 <= caller["rtt_ms"] < 200
    assert 0 <= caller["last_report_age"] < 10 and 0 <= caller["last_rtcp_age"] < 10
    assert record["live_quality"]["b"]["packets"] == 250
