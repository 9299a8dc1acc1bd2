"""SIP capture agents (``interfaces.SipCapture``, e.g. the ``hep`` plugin) get a copy of every
message the gateway receives and sends, as bytes on the wire with the transport and addresses: a
call through the B2BUA seen by an agent registered like any plugin."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from gateway.core.hookspecs import hookimpl
from gateway.core.transport.flows import Address
from tests.component.calls.b2bua_env import ALICE, ALICE_DID, GW, TRUNK, eventually, start_b2bua


class Capture:
    name = "test-capture"

    def __init__(self) -> None:
        self.seen: list[tuple[str, Address, Address, str]] = []

    def message(
        self, data: bytes, *, transport: str, source: Address, destination: Address, at: float
    ) -> None:
        first_line = data.split(b"\r\n", 1)[0].decode()
        self.seen.append((transport, source, destination, first_line))

    async def run(self) -> None:
        await trio.sleep_forever()


class CapturePlugin:
    def __init__(self, capture: Capture) -> None:
        self.capture = capture

    @hookimpl
    def gateway_register_sip_captures(self, registry: Any, config: Any) -> None:
        registry.add(Capture.name, self.capture)


async def test_every_message_of_a_call_is_copied_both_ways(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    capture = Capture()
    env = await start_b2bua(
        nursery, tmp_path, voipgw_seed, plugins=[("capture", CapturePlugin(capture))]
    )
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    assert (await call.final()).status == 200
    await call.bye()
    await eventually(lambda: env.calls == 0)
    seen = [(src, dst, line.split()[0]) for _, src, dst, line in capture.seen]
    assert (TRUNK, GW, "INVITE") in seen  # received from the trunk
    assert (GW, ALICE, "INVITE") in seen  # sent to alice's phone
    assert (ALICE, GW, "SIP/2.0") in seen and (GW, TRUNK, "SIP/2.0") in seen  # responses
    assert (TRUNK, GW, "BYE") in seen and (GW, ALICE, "BYE") in seen
    assert {transport for transport, *_ in capture.seen} == {"udp"}
