"""The SIP endpoint under a burst: every queued message is answered, and the endpoint lets the
other tasks (calls, timers) run between batches instead of draining the whole queue first.

The endpoint takes a message that is already queued without waiting (no cancel scope, no task
switch) and yields every 16th; this test holds it to both halves of that.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import trio

from gateway.core.sip.message import Response
from gateway.core.sip.parser import parse_message_untrusted
from gateway.core.transport.flows import Flow, FlowKey
from tests.component.calls.b2bua_env import GW, eventually, start_b2bua

PEER = ("127.0.0.9", 5099)
BURST = 128


def options(n: int) -> bytes:
    return (
        f"OPTIONS sip:127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.9:5099;branch=z9hG4bK-burst-{n}\r\n"
        f"Max-Forwards: 70\r\n"
        f"From: <sip:probe@127.0.0.9>;tag=burst{n}\r\n"
        f"To: <sip:127.0.0.1:5060>\r\n"
        f"Call-ID: burst-{n}@127.0.0.9\r\n"
        f"CSeq: 1 OPTIONS\r\n"
        f"Content-Length: 0\r\n\r\n"
    ).encode()


async def test_a_queued_burst_is_all_answered_with_other_tasks_run_in_between(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    endpoint = env.gateway.endpoint
    replies: list[bytes] = []

    async def send(data: bytes) -> None:
        replies.append(data)

    flow = Flow(key=FlowKey("udp", GW, PEER), send=send, reliable=False)
    before = endpoint.statistics.received
    # What the endpoint had taken each time another task got to run.
    seen: list[int] = []

    async def other_task() -> None:
        while endpoint.statistics.received - before < BURST:
            seen.append(endpoint.statistics.received - before)
            await trio.lowlevel.checkpoint()

    for n in range(BURST):
        env.gateway.deliver(options(n), flow)
    nursery.start_soon(other_task)

    await eventually(lambda: len(replies) == BURST)
    statuses = {
        parsed.status
        for parsed in map(parse_message_untrusted, replies)
        if isinstance(parsed, Response)
    }
    assert statuses == {200}
    assert env.gateway.statistics.dropped_queue_full == 0
    # The endpoint yields every 16 messages. Trio runs the tasks ready at one moment in an
    # order of its choosing, so the endpoint may take its next 16 before the other task runs:
    # at most 32 between two turns of another task (without the yield: all 128).
    steps = [later - earlier for earlier, later in itertools.pairwise(seen)]
    assert seen[0] < BURST and max(steps) <= 32
