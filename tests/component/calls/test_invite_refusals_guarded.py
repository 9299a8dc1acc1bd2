"""An INVITE that becomes no call is answered from a task of the call manager's nursery, the
gateway's top one (CallManager.invite: the call limit's 503, the digest challenge, a trunk's or
an account's limit, a pickup refused). A transaction that no longer takes the answer (answered
or ended before that task ran) makes Endpoint.respond raise TransactionStateError: that must
end nothing but the answer, never the gateway and every call it carries (session 38 guarded
CallBase.post's 481 and 503 the same way)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trio
import trio.testing

from gateway.core.sip.message import Response
from gateway.core.sip.transaction import ServerTransaction, TransactionStateError
from tests.component.calls.b2bua_env import ALICE_DID, answered_call, eventually, start_b2bua


@pytest.mark.parametrize("refusal", [503, 407])
async def test_a_refusal_the_transaction_no_longer_takes_leaves_the_gateway_running(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    refusal: int,
) -> None:
    """The call limit's 503 to a trunk's INVITE, or the 407 challenge to an account's, whose
    transaction raises TransactionStateError when the manager's task sends it: said at DEBUG,
    and the gateway goes on (the next call is answered and hung up). On main the exception
    reached the gateway's top nursery and stopped the gateway (this test's nursery with it)."""
    caplog.set_level(logging.DEBUG, logger="gateway.core.calls.manager")
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    manager = env.gateway.calls
    assert manager is not None
    endpoint = manager.endpoint
    respond: Callable[[ServerTransaction, Response], Awaitable[None]] = endpoint.respond
    refused: list[int] = []

    async def no_longer_taken(transaction: ServerTransaction, response: Response) -> None:
        if response.status == refusal and not refused:
            refused.append(response.status)
            raise TransactionStateError("final response already sent")
        await respond(transaction, response)

    monkeypatch.setattr(endpoint, "respond", no_longer_taken)
    if refusal == 503:
        manager.max_calls = 0
        await env.trunk.invite(env.did_uri(ALICE_DID))
    else:
        await env.alice.invite(env.did_uri(ALICE_DID))
    await eventually(lambda: refused == [refusal])
    await trio.testing.wait_all_tasks_blocked()
    said = [r.getMessage() for r in caplog.records if "answered already" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith("INVITE ")
    assert f": {refusal} " in said[0] and said[0].endswith(" not sent: answered already")
    manager.max_calls = 10
    call, _ = await answered_call(env)
    assert (await call.bye()).status == 200
