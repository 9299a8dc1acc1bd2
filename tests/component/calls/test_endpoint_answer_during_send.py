"""A final response that comes while the endpoint is still sending its request.

A peer on a fast connection (a browser over WebSocket answering a NOTIFY on loopback) can
answer before our write returns, and the endpoint's task takes that answer meanwhile: the
client transaction completes and lets its request go (RFC 3261 §17.1.2.2) before
``send_request`` has returned it. Its owner still reads the request as sent right after: its
CSeq, the retry with credentials (gateway/core/calls/messages.py ``send_and_wait``). Before,
that read raised "the transaction has completed and no longer keeps its request", and a
dialog-event subscription (RFC 4235) ended on it in an interop run with Chromium.
"""

from __future__ import annotations

from pathlib import Path

import trio
import trio.testing

from gateway.core.sip.message import Request, make_response
from gateway.core.sip.parser import parse_message_untrusted
from gateway.core.sip.serializer import serialize_message
from gateway.core.transport.flows import Flow, FlowKey
from tests.component.calls.b2bua_env import GW, start_b2bua
from tests.unit.sip.sip_builders import request

PEER = ("127.0.0.9", 5099)


def _options_to_peer(call_id: str) -> Request:
    """A request the gateway sends as its own, without a Via yet (the endpoint adds ours)."""
    options = request("OPTIONS", uri="sip:peer@127.0.0.9:5099", call_id=call_id)
    return options.with_headers(options.headers.remove("Via"))


async def test_a_request_answered_before_its_send_returns_is_still_readable(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
    voipgw_seed: int,
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    endpoint = env.gateway.endpoint
    sent: list[Request] = []

    async def answer_at_once(data: bytes) -> None:
        # The peer's 200 arrives while our send has not returned; the endpoint takes it.
        parsed = parse_message_untrusted(data)
        assert isinstance(parsed, Request)
        sent.append(parsed)
        env.gateway.deliver(serialize_message(make_response(parsed, 200)), flow)
        await trio.sleep(0.1)

    flow = Flow(key=FlowKey("udp", GW, PEER), send=answer_at_once, reliable=False)
    notify = _options_to_peer("answered-early@gw")

    client = await endpoint.send_request(notify, transport="udp", address=PEER, flow=flow)

    assert client.transaction.request is None  # completed during the send
    assert [client.request.top_via.branch] == [s.top_via.branch for s in sent]  # ours, as sent
    assert client.request.call_id == "answered-early@gw"
    assert (await client.responses.receive()).status == 200


async def test_a_request_still_unanswered_when_its_send_returns_is_the_transactions(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
    voipgw_seed: int,
) -> None:
    """The usual order: the owner reads the transaction's request, and once the final response
    came it is let go (no second reference keeps it through Timer K, RFC 3261 §17.1.2.2)."""
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    endpoint = env.gateway.endpoint
    sent: list[Request] = []

    async def keep(data: bytes) -> None:
        parsed = parse_message_untrusted(data)
        assert isinstance(parsed, Request)
        sent.append(parsed)

    flow = Flow(key=FlowKey("udp", GW, PEER), send=keep, reliable=False)
    notify = _options_to_peer("answered-late@gw")

    client = await endpoint.send_request(notify, transport="udp", address=PEER, flow=flow)
    assert client.request is client.transaction.request
    env.gateway.deliver(serialize_message(make_response(sent[0], 200)), flow)
    assert (await client.responses.receive()).status == 200
    assert client.transaction.request is None
    assert client._sent_early_answered is None
