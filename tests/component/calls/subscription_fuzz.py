"""The digest challenge step of the fuzzed subscription tests: moved here from
test_fuzzed_subscriptions.py so that no test module imports another."""

from __future__ import annotations

from gateway.core.sip.message import Request
from gateway.testing.sip_agent import SipAgent
from tests.component.calls.b2bua_env import (
    T1,
)

WINDOW = 64 * T1 + 1.0  # every transaction of a turn (the trunk's, relayed) is over


async def _challenged(agent: SipAgent, request: Request) -> Request:
    """``request`` with credentials answering the challenge the gateway gives it (CSeq + 1,
    a Via of its own with a fresh branch); as it is when the gateway does not challenge."""
    response = await (await agent.send(request)).final(timeout=WINDOW)
    retry = request.with_headers(
        request.headers.set("CSeq", f"{request.cseq.number + 1} {request.method}")
    )
    if response.status in (401, 407):
        retry = agent.authorize(retry, response)
    return retry.with_headers(retry.headers.prepend("Via", str(agent.new_via())))
