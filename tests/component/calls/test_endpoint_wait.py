"""The SIP endpoint's wait for the next message: one cancel scope across its waits, whose
deadline is the next transaction timer's while it waits (gateway/core/endpoint.py ``_serve``).

When the timer falls due in the same turn a message wakes the endpoint, the scope is cancelled
although the task is no longer waiting: the message must still be handled whole (its answer
sent, past a checkpoint in the flow's send) and the timer must still run. A timer another task
arms while the endpoint waits (a call's request) moves the wait's deadline; and a flood that never
lets the queue empty does not hold the timers up (RFC 3261 §17: retransmissions keep T1's pace).
"""

from __future__ import annotations

from pathlib import Path

import trio
import trio.testing

from gateway.core.sip.message import Request, Response
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


def our_options(branch: str) -> Request:
    """A request of the gateway's own (its Via already on), towards PEER, that PEER never
    answers: a non-INVITE client transaction retransmitting on Timer E (RFC 3261 §17.1.2.2)."""
    parsed = parse_message_untrusted(
        (
            f"OPTIONS sip:probe@127.0.0.9:5099 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:5060;branch={branch}\r\n"
            f"Max-Forwards: 70\r\n"
            f"From: <sip:127.0.0.1:5060>;tag={branch}\r\n"
            f"To: <sip:probe@127.0.0.9>\r\n"
            f"Call-ID: {branch}@127.0.0.1\r\n"
            f"CSeq: 1 OPTIONS\r\n"
            f"Content-Length: 0\r\n\r\n"
        ).encode()
    )
    assert isinstance(parsed, Request)
    return parsed


def recording_flow(sent: list[tuple[float, bytes]], *, send_time: float = 0.0) -> Flow:
    async def send(data: bytes) -> None:
        if send_time:
            await trio.sleep(send_time)  # a slow send: the endpoint's task works meanwhile
        sent.append((trio.current_time(), data))

    return Flow(key=FlowKey("udp", GW, PEER), send=send, reliable=False)


async def test_a_timer_armed_by_another_task_while_the_endpoint_waits_fires_on_time(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
    voipgw_seed: int,
) -> None:
    # The endpoint waits with no timer of its own (or a far one); a call's task sends a request
    # through it: its Timer E must move the waiting scope's deadline (_timers_changed), or the
    # first retransmission waits for the next message to arrive.
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    endpoint = env.gateway.endpoint
    await trio.sleep(120)  # the start's transactions are over
    await trio.testing.wait_all_tasks_blocked()
    far = endpoint.transactions.get_timer()
    sent: list[tuple[float, bytes]] = []
    flow = recording_flow(sent)
    start = trio.current_time()
    assert far is None or far > start + 1
    await endpoint.send_request(
        our_options("z9hG4bK-armed"), transport="udp", address=PEER, flow=flow
    )
    await trio.sleep(2.0)
    times = [when - start for when, data in sent if data.startswith(b"OPTIONS ")]
    t1 = env.gateway.config.sip.t1
    # RFC 3261 §17.1.2.2: sent at once, again after T1, then after 2*T1.
    assert times == [0.0, t1, 3 * t1], times


async def test_transaction_timers_run_during_a_flood_of_messages(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
    voipgw_seed: int,
) -> None:
    # The queue never empties for seconds (each answer's send takes 10 ms): the endpoint never
    # waits, so no deadline cancels a wait; its timers must still run between messages, or
    # every retransmission (RFC 3261 §17) and timeout is held up until the flood ends.
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    endpoint = env.gateway.endpoint
    await trio.sleep(120)
    await trio.testing.wait_all_tasks_blocked()
    sent: list[tuple[float, bytes]] = []
    flow = recording_flow(sent, send_time=0.01)
    start = trio.current_time()
    await endpoint.send_request(
        our_options("z9hG4bK-flood"), transport="udp", address=PEER, flow=flow
    )
    flood = 400  # 4 s of work, within the queue's bound
    for n in range(flood):
        env.gateway.deliver(options(1000 + n), flow)
    await eventually(lambda: sum(d.startswith(b"SIP/2.0 200") for _, d in sent) == flood)
    answered = max(when for when, d in sent if d.startswith(b"SIP/2.0 200")) - start
    retransmitted = [when - start for when, d in sent if d.startswith(b"OPTIONS ")][1:]
    assert answered > 3.0, answered  # the flood lasted past the first retransmissions
    # Timer E fired within the flood, near T1 and 3*T1 (one message's handling late at most).
    assert len([t for t in retransmitted if t < answered]) >= 2, (retransmitted, answered)
    t1 = env.gateway.config.sip.t1
    assert abs(retransmitted[0] - t1) <= 0.1 and abs(retransmitted[1] - 3 * t1) <= 0.1, (
        retransmitted
    )
    assert env.gateway.statistics.dropped_queue_full == 0
