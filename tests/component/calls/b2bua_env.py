"""A B2BUA on the in-memory network, for the component tests of the call core.

A Gateway runs on a MemoryNetwork (gateway.testing.memory_transport) at 127.0.0.1:5060 with an
account "alice", played by a SipAgent at 127.0.0.3 that registers over the network, and a trunk
"carrier" (DIDs, prefix +1) played by another SipAgent at 127.0.0.2. Signalling never touches a
real socket; the media relay binds real ports in MEDIA_PORTS on 127.0.0.1 (a block no other test
process uses, tests/port_blocks.py), and no RTP is sent.
Timings are asserted in seconds of trio's virtual clock (autojump_clock).

Shared by test_b2bua_memory.py and test_b2bua_more.py; every knob defaults to what the first
module was written against.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import trio

from gateway.core.calls.trunk_dns import Resolver
from gateway.core.config import GatewayConfig, from_mapping
from gateway.core.gateway import Gateway
from gateway.core.ids import SeededIds
from gateway.core.store.sqlite import SqliteStore
from gateway.testing.memory_transport import memory_plugins
from gateway.testing.network import Address, CapturedDatagram, MemoryNetwork
from gateway.testing.sip_agent import AutoAnswer, Call, Received, SipAgent, sdp_connection
from tests.port_blocks import port_block

GW: Address = ("127.0.0.1", 5060)
TRUNK: Address = ("127.0.0.2", 5060)
ALICE: Address = ("127.0.0.3", 5060)
REALM = "voipgw.local"
ALICE_PASSWORD = "wonderland-42"
MEDIA_PORTS = port_block(200)  # this process's own (tests/port_blocks.py)
ALICE_DID = "+4930123456"
BOB_DID = "+4930999"  # bob has an account but never registers
RING_AND_ANSWER = AutoAnswer()
T1 = 0.5


@attrs.define
class B2bua:
    network: MemoryNetwork
    gateway: Gateway
    alice: SipAgent
    trunk: SipAgent

    def did_uri(self, number: str) -> str:
        return f"sip:{number}@127.0.0.1:5060"

    @property
    def calls(self) -> int:
        assert self.gateway.calls is not None
        return len(self.gateway.calls.calls)

    @property
    def call_lookups(self) -> int:
        assert self.gateway.calls is not None
        return self.gateway.calls.lookup_entries


def gateway_config(
    state_dir: Path,
    *,
    inactivity_timeout: float = 3600,
    hold_timeout: float = 3600,
    extra_trunks: Sequence[Mapping[str, Any]] = (),
    sip: Mapping[str, Any] | None = None,
    carrier: Mapping[str, Any] | None = None,
    plugin_tables: Mapping[str, Any] | None = None,
    numbering: Mapping[str, Any] | None = None,
    dialog_watch_groups: Sequence[Mapping[str, Any]] = (),
    feature_codes: Mapping[str, Any] | None = None,
    presence: Mapping[str, Any] | None = None,
    gateway: Mapping[str, Any] | None = None,
    media: Mapping[str, Any] | None = None,
    dns: Mapping[str, Any] | None = None,
    store: Mapping[str, Any] | None = None,
    registrar: Mapping[str, Any] | None = None,
) -> GatewayConfig:
    return from_mapping(
        {
            "dns": dict(dns or {}),
            "registrar": dict(registrar or {}),
            "store": dict(store or {}),
            "dialog_watch_groups": [dict(group) for group in dialog_watch_groups],
            "numbering": dict(numbering or {}),
            "feature_codes": dict(feature_codes or {}),
            "presence": dict(presence or {}),
            "gateway": {"state_dir": str(state_dir), "realm": REALM, **(gateway or {})},
            "sip": {"listen": ["udp:127.0.0.1:5060"], "t1": T1, **(sip or {})},
            "media": {
                "address": "127.0.0.1",
                "ports": f"{MEDIA_PORTS.start}-{MEDIA_PORTS.stop - 1}",
                "inactivity_timeout": inactivity_timeout,
                "hold_timeout": hold_timeout,
                **(media or {}),
            },
            "plugins": {"enable": [], **(plugin_tables or {})},
            "trunks": [
                {
                    "name": "carrier",
                    "address": "udp:127.0.0.2:5060",
                    "prefixes": ["+1"],
                    "dids": {ALICE_DID: "alice", BOB_DID: "bob"},
                    **(carrier or {}),
                },
                *(dict(trunk) for trunk in extra_trunks),
            ],
        }
    )


async def build_b2bua(
    nursery: trio.Nursery,
    tmp_path: Path,
    seed: int,
    *,
    drop: float = 0.0,
    duplicate: float = 0.0,
    reorder: float = 0.0,
    delay: float | tuple[float, float] = 0.01,
    plugins: Sequence[tuple[str, object]] = (),
    inactivity_timeout: float = 3600,
    hold_timeout: float = 3600,
    extra_trunks: Sequence[Mapping[str, Any]] = (),
    sip: Mapping[str, Any] | None = None,
    carrier: Mapping[str, Any] | None = None,
    plugin_tables: Mapping[str, Any] | None = None,
    numbering: Mapping[str, Any] | None = None,
    dialog_watch_groups: Sequence[Mapping[str, Any]] = (),
    feature_codes: Mapping[str, Any] | None = None,
    presence: Mapping[str, Any] | None = None,
    tls_stand_in: bool = False,
    ws_stand_in: bool = False,
    gateway_table: Mapping[str, Any] | None = None,
    media_table: Mapping[str, Any] | None = None,
    dns: Mapping[str, Any] | None = None,
    dns_resolver: Resolver | None = None,
    store_table: Mapping[str, Any] | None = None,
    registrar: Mapping[str, Any] | None = None,
) -> tuple[MemoryNetwork, Gateway]:
    """alice's and bob's accounts in the store, the in-memory network serving, and the gateway
    made but not started: for a test that starts it itself (:func:`start_b2bua` does, and
    registers alice)."""
    state = tmp_path / "state"
    store = SqliteStore.open(state)
    if store.get_account("alice") is None:  # else a gateway restarted on its state directory
        store.accounts_add("alice", ALICE_PASSWORD, REALM)
        store.accounts_add("bob", "bob-password-1", REALM)
    store.close()
    network = MemoryNetwork(seed, drop=drop, duplicate=duplicate, reorder=reorder, delay=delay)
    await nursery.start(network.serve)
    config = gateway_config(
        state,
        inactivity_timeout=inactivity_timeout,
        hold_timeout=hold_timeout,
        extra_trunks=extra_trunks,
        sip=sip,
        carrier=carrier,
        plugin_tables=plugin_tables,
        numbering=numbering,
        dialog_watch_groups=dialog_watch_groups,
        feature_codes=feature_codes,
        presence=presence,
        gateway=gateway_table,
        media=media_table,
        dns=dns,
        store=store_table,
        registrar=registrar,
    )
    gateway = Gateway(
        config,
        memory_plugins(
            config, network, extra=plugins, tls_stand_in=tls_stand_in, ws_stand_in=ws_stand_in
        ),
        ids=SeededIds(seed),
        dns_resolver=dns_resolver,
        dns_rng=random.Random(seed),
    )
    return network, gateway


async def start_b2bua(
    nursery: trio.Nursery,
    tmp_path: Path,
    seed: int,
    *,
    alice_auto: AutoAnswer | None = RING_AND_ANSWER,
    alice_media_port: int = 30000,
    trunk_media_port: int = 40000,
    **options: Any,
) -> B2bua:
    """The gateway of :func:`build_b2bua` (``options``: its keywords) started, with alice's
    phone registered and the carrier trunk's agent serving."""
    network, gateway = await build_b2bua(nursery, tmp_path, seed, **options)
    await nursery.start(gateway.serve)
    alice = SipAgent(
        network,
        ALICE,
        ids=SeededIds(seed + 1),
        user="alice",
        password=ALICE_PASSWORD,
        proxy=GW,
        auto=alice_auto,
        media_port=alice_media_port,  # SDP only, unless a test binds it (then its own port)
    )
    trunk = SipAgent(
        network,
        TRUNK,
        ids=SeededIds(seed + 2),
        user="+15550100",  # the calling number
        domain="127.0.0.2:5060",
        proxy=GW,
        media_port=trunk_media_port,
    )
    await nursery.start(alice.serve)
    await nursery.start(trunk.serve)
    registered = await alice.register()
    assert registered.status == 200, registered.reason
    return B2bua(network, gateway, alice, trunk)


async def eventually(predicate: Callable[[], bool], *, timeout: float = 10.0) -> None:
    """Wait (in virtual time) until ``predicate()`` holds."""
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.05)


async def next_within(agent: SipAgent, method: str, seconds: float) -> Received | None:
    """The agent's next ``method`` request if one arrives within ``seconds``, else None."""
    with trio.move_on_after(seconds):
        return await agent.next_request(method, timeout=seconds + 1)
    return None


def sent(
    capture: Sequence[CapturedDatagram], src: Address, dst: Address, start: bytes
) -> list[CapturedDatagram]:
    """Datagrams from ``src`` to ``dst`` whose first line starts with ``start``."""
    return [d for d in capture if d.src == src and d.dst == dst and d.data.startswith(start)]


def assert_media_via_gateway(body: bytes) -> None:
    address, port = sdp_connection(body)
    assert address == "127.0.0.1"
    assert port in MEDIA_PORTS


async def answered_call(env: B2bua) -> tuple[Call, Call]:
    """trunk -> alice (DID), answered and ACKed on both legs: (leg A at the trunk, leg B at
    alice)."""
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    final = await call.final()
    assert final.status == 200, final.reason
    leg_b = await env.alice.next_call()
    await env.alice.next_request("ACK")
    return call, leg_b
