"""No 408 is ever answered to a non-INVITE request (RFC 4320 §4.2: a transaction-stateful
element MUST NOT send one), whoever in the gateway made it: the endpoint's ``respond`` is the one
way a TU's response reaches a server transaction, and there a 408 for a non-INVITE becomes 504
Server Time-out while the sender still waits (its Timer F, 64*T1 from the request's arrival), and
nothing at all after that (the transaction given up). An INVITE's 408 is sent as it is.

Behavioural, at the endpoint: every request's handling is replaced by a TU that answers 408, so
that any path of the gateway's that answers 408 to a non-INVITE (a relayed request's 408, a timeout
of ours passed on) is covered by this one, on the wire."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from gateway.core.endpoint import SipEndpoint
from gateway.core.sip.message import Request, make_response
from gateway.core.sip.transaction import ServerTransaction
from gateway.core.transport.flows import Flow
from tests.component.calls.b2bua_env import T1, TRUNK, start_b2bua
from tests.component.calls.fuzz_checks import _responses_to

NON_INVITE = [
    "REGISTER", "SUBSCRIBE", "NOTIFY", "MESSAGE", "PUBLISH", "OPTIONS", "REFER", "INFO",
    "UPDATE", "BYE", "PRACK",
]  # fmt: skip


@pytest.mark.parametrize("method", [*NON_INVITE, "INVITE"])
@pytest.mark.parametrize("late", [False, True])
async def test_a_408_from_the_tu_never_reaches_a_non_invite_sender(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    monkeypatch: pytest.MonkeyPatch,
    method: str,
    late: bool,
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    # After the sender's Timer F (64*T1 from arrival) when late, else well before it.
    delay = 64 * T1 + 1.0 if late else 2.0

    async def answer_408(endpoint: SipEndpoint, txn: ServerTransaction, request: Request) -> None:
        await trio.sleep(delay)
        await endpoint.respond(txn, make_response(request, 408, to_tag="t408"))

    async def answers_408(
        self: SipEndpoint, txn: ServerTransaction, request: Request, flow: Flow
    ) -> None:
        nursery.start_soon(answer_408, self, txn, request)  # the TU's own task, as calls have

    monkeypatch.setattr(SipEndpoint, "_dispatch", answers_408)
    start = len(env.network.capture)
    extra = [("Event", "message-summary")] if method in ("SUBSCRIBE", "NOTIFY", "PUBLISH") else []
    request = env.trunk.new_request(method, "sip:+15550100@127.0.0.1:5060", extra=extra)
    await env.trunk.send(request)
    await trio.sleep(delay + 4 * 64 * T1)  # every retransmission and timer over
    finals = [
        a.split(b"\r\n", 1)[0]
        for a in _responses_to(env, TRUNK, start)
        if not a.startswith(b"SIP/2.0 1")
    ]
    if method == "INVITE":
        assert finals == [b"SIP/2.0 408 Request Timeout"]
    elif late:
        assert finals == []  # given up: RFC 4320 §4.2's "no final response at all"
    else:
        assert finals == [b"SIP/2.0 504 Server Time-out"]
    assert env.gateway.endpoint.transactions.sizes()["sip_unanswered_requests"] == 0
