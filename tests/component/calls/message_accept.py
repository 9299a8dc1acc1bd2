"""The MESSAGE acceptor of the in-memory MESSAGE tests: moved here from test_messages_memory.py so
that no test module imports another."""

from __future__ import annotations

from gateway.testing.sip_agent import Received, SipAgent


async def accept(agent: SipAgent, status: int = 200) -> None:
    async def answer(received: Received) -> bool:
        await agent.respond(received, status)
        return True

    agent.out_of_dialog = answer
