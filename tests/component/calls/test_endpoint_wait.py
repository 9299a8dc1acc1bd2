"""The SIP endpoint's wait for the next message: one cancel scope across its waits, whose
deadline is the next transaction timer's while it waits (gateway/core/endpoint.py ``_serve``).

When the timer falls due in the same turn a message wakes the endpoint, the scope is cancelled
although the task is no longer waiting: the message must still be handled whole (its answer
sent, past a checkpoint in the flow's send) and the timer must still run.
"""

from __future__ import annotations

from pathlib import Path

import trio
import trio.testing

from gateway.core.sip.message import Response
from gateway.core.sip.parser import parse_message_untrusted
from gateway.core.transport.flows import Flow, FlowKey
from tests.component.calls.b2bua_env import GW, eventually, start_b2bua

PEER = ("127.0.0.9", 5099)


def options(n: int) -> bytes:
    return (
        f"OPTIONS sip:127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.9:5099;branch=z9hG4bK-wait-{n}\r\n"
        f"Max-Forwards: 70\r\n"
        f"From: <sip:probe@127.0.0.9>;tag=wait{n}\r\n"
        f"To: <sip:127.0.0.1:5060>\r\n"
        f"Call-ID: wait-{n}@127.0.0.9\r\n"
        f"CSeq: 1 OPTIONS\r\n"
        f"Content-Length: 0\r\n\r\n"
    ).encode()


async def test_a_message_that_wakes_the_endpoint_as_its_timer_falls_due_is_handled_whole(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
    voipgw_seed: int,
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    endpoint = env.gateway.endpoint
    replies: list[Response] = []

    async def send(data: bytes) -> None:
        # A send that may wait (a full socket buffer, a TCP connection): a checkpoint, where a
        # cancelled scope around the handling would stop it.
        await trio.lowlevel.checkpoint()
        parsed = parse_message_untrusted(data)
        assert isinstance(parsed, Response)
        replies.append(parsed)

    flow = Flow(key=FlowKey("udp", GW, PEER), send=send, reliable=False)
    env.gateway.deliver(options(1), flow)
    await eventually(lambda: len(replies) == 1)
    # The answered OPTIONS leaves its server transaction's Timer J (RFC 3261 §17.2.2), so the
    # endpoint now waits with a deadline.
    deadline = endpoint.transactions.get_timer()
    assert deadline is not None
    await trio.testing.wait_all_tasks_blocked()
    # The clock reaches the deadline and a message arrives before trio's run loop looks at the
    # deadlines: the delivery wakes the endpoint, then the deadline cancels its scope.
    autojump_clock.jump(deadline - trio.current_time())
    env.gateway.deliver(options(2), flow)

    await eventually(lambda: len(replies) == 2)
    assert [r.status for r in replies] == [200, 200]
    assert replies[1].call_id == "wait-2@127.0.0.9"
    assert endpoint.statistics.internal_errors == 0
    # The timer that fell due ran as well.
    after = endpoint.transactions.get_timer()
    assert after is None or after > deadline
