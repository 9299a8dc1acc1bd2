"""A retransmitted request answered with the bytes of the final response already sent.

RFC 3261 §17.2.2: a server transaction in Completed answers a retransmission of its request with
the final response again, until Timer J (64*T1, 32 s, on UDP); §17.2.1 likewise for an INVITE's
non-2xx until the ACK. Every call leaves one such transaction (its BYE's 200), so the endpoint
hands the transaction the bytes it sent and the Response is let go: a retransmission is those
bytes, not the message made, hooked and written again (docs/benchmarks.md, session 71). A
tapped dialog's responses stay messages, so that each copy of one still reaches its taps.
"""

from __future__ import annotations

from pathlib import Path

import trio
import trio.testing

from gateway.core.hookspecs import hookimpl
from gateway.core.interfaces import OutboundMessage
from gateway.core.sip.message import Response, make_response
from gateway.core.sip.serializer import serialize_message
from gateway.core.sip.transaction import RequestReceived, ServerNonInviteTransaction, State
from gateway.core.sip.via import Hop
from gateway.core.transport.flows import Flow, FlowKey
from tests.component.calls.b2bua_env import GW, B2bua, eventually, start_b2bua
from tests.unit.sip.sip_builders import request

PEER = ("127.0.0.9", 5099)
OPTIONS = request(
    "OPTIONS", sent_by="127.0.0.9:5099", uri="sip:127.0.0.1:5060", call_id="probe-1@peer"
)
OPTIONS_BYTES = serialize_message(OPTIONS)


class StampResponses:
    """A gateway_outbound_message hook that numbers each response it is given."""

    def __init__(self) -> None:
        self.count = 0

    @hookimpl
    def gateway_outbound_message(self, outbound: OutboundMessage) -> None:
        message = outbound.message
        if isinstance(message, Response):
            self.count += 1
            outbound.message = message.with_headers(message.headers.add("X-Stamp", str(self.count)))


class SipCopies:
    """Stands for a tapped call's taps (CallTaps.sip_message): notes each copy."""

    def __init__(self) -> None:
        self.copies: list[bytes] = []

    def sip_message(self, data: bytes, **where: object) -> None:
        self.copies.append(data)


def _peer_flow() -> tuple[Flow, list[bytes]]:
    sent: list[bytes] = []

    async def keep(data: bytes) -> None:
        sent.append(data)

    return Flow(key=FlowKey("udp", GW, PEER), send=keep, reliable=False), sent


def _options_transaction(env: B2bua) -> ServerNonInviteTransaction:
    (txn,) = [
        t for t in env.gateway.endpoint.transactions._server.values() if t.method == "OPTIONS"
    ]
    assert isinstance(txn, ServerNonInviteTransaction)
    return txn


async def _asked_twice(env: B2bua, flow: Flow, sent: list[bytes]) -> None:
    env.gateway.deliver(OPTIONS_BYTES, flow)
    await eventually(lambda: len(sent) == 1)
    await trio.sleep(1)  # the peer's Timer E: it did not hear us
    env.gateway.deliver(OPTIONS_BYTES, flow)
    await eventually(lambda: len(sent) == 2)


async def test_a_retransmitted_request_gets_the_same_bytes_without_the_hooks_again(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
    voipgw_seed: int,
) -> None:
    stamp = StampResponses()
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, plugins=[("stamp", stamp)])
    flow, sent = _peer_flow()
    responses_before = stamp.count

    await _asked_twice(env, flow, sent)

    assert sent[0].startswith(b"SIP/2.0 200 ")
    assert b"\r\nX-Stamp: " in sent[0]
    assert sent[1] == sent[0]  # what went out the first time, as it went out
    assert stamp.count == responses_before + 1  # the hook saw the response once
    txn = _options_transaction(env)
    assert txn.last_response is None  # the Response itself is not kept for Timer J
    await trio.sleep(40)  # past Timer J: the transaction and its bytes are gone
    assert list(env.gateway.endpoint.transactions._server.values()) == []
    env.gateway.deliver(OPTIONS_BYTES, flow)
    await eventually(lambda: len(sent) == 3)
    assert sent[2] != sent[0]  # a new request now: answered anew (its own stamp)


async def test_a_tapped_dialogs_retransmitted_answer_is_copied_to_its_taps_again(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
    voipgw_seed: int,
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    copies = SipCopies()
    env.gateway.endpoint.sip_taps[(OPTIONS.call_id, OPTIONS.from_.tag)] = (copies, "a")
    flow, sent = _peer_flow()

    await _asked_twice(env, flow, sent)

    assert sent[1] == sent[0]
    responses = [copy for copy in copies.copies if copy.startswith(b"SIP/2.0 200 ")]
    assert responses == [sent[0], sent[0]]
    assert _options_transaction(env).last_response is not None


async def test_a_transaction_that_ends_while_its_answer_is_sent_leaves_no_entry(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
    voipgw_seed: int,
) -> None:
    """A TU's final response whose send outlasts Timer J (a socket that stays full): the
    endpoint's own task forgets the transaction meanwhile, and the bytes sent must not bring
    its entry back for good."""
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    await trio.sleep(40)  # the start's transactions (alice's REGISTERs) are gone
    endpoint = env.gateway.endpoint
    sent: list[bytes] = []

    async def slow(data: bytes) -> None:
        await trio.sleep(40)
        sent.append(data)

    # A transaction of the table, answered by a task of its own as a call answers its BYE.
    outputs = endpoint.transactions.receive_request(
        OPTIONS, source=Hop("UDP", *PEER), now=trio.current_time()
    )
    (received,) = outputs
    assert isinstance(received, RequestReceived)
    txn = received.transaction
    endpoint._server_flows[txn] = Flow(key=FlowKey("udp", GW, PEER), send=slow, reliable=False)
    responded = trio.Event()

    async def respond() -> None:
        await endpoint.respond(txn, make_response(OPTIONS, 200))
        responded.set()

    nursery.start_soon(respond)
    await eventually(lambda: len(sent) == 1, timeout=60)
    with trio.fail_after(1):
        await responded.wait()  # the responding task has run on past its send to its end
    assert txn.state is State.TERMINATED  # Timer J fired during the send
    assert dict(endpoint._server_flows) == {}
