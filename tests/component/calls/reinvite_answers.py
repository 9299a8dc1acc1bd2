"""Alice's phone answering re-INVITEs in the in-memory re-INVITE tests: moved here from
test_b2bua_reinvite_failures.py so that no test module imports another."""

from __future__ import annotations

from gateway.testing.sip_agent import Received


def alice_answers_reinvites(env, handle) -> None:  # type: ignore[no-untyped-def]
    """alice's agent hands every in-dialog INVITE to ``handle`` (which answers it, or not)."""

    async def hook(received: Received) -> bool:
        if received.request.method != "INVITE":
            return False
        await handle(received)
        return True

    env.alice.in_dialog = hook
