"""Requests the endpoint passes up are always answered, and its tables return to their size:
a handler that fails before anything took the request gets the request a 500 (RFC 3261
§21.5.1) from the endpoint; a call that ends leaving its caller's INVITE unanswered gets it a
500 from the call manager; a TU's response after the final one (TransactionStateError) leaves
no endpoint entry behind; a request whose CSeq method is not its Request-Line's is answered
400 with a CSeq that cannot end another transaction (§8.1.1.7, §17.1.3); merged requests
(§8.2.2.2) and internal errors are exposed as metrics."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import trio

from gateway.core.calls.call import Call
from gateway.core.calls.manager import CallManager
from gateway.core.endpoint import SipEndpoint
from gateway.core.sip.message import Request, make_response
from gateway.core.sip.parser import parse_message_untrusted
from gateway.core.sip.serializer import serialize_message
from gateway.core.sip.transaction import ServerTransaction, TransactionStateError
from gateway.core.transport.flows import Flow
from gateway.testing.sip_agent import SDP, AutoAnswer
from tests.component.calls.b2bua_env import (
    ALICE_DID,
    GW,
    TRUNK,
    eventually,
    start_b2bua,
)
from tests.component.calls.fuzz_checks import (
    WINDOW,
    _responses_to,
    error_records,
    leftovers,
    settled_b2bua,
    table_sizes,
    tables_back,
)
from tests.component.calls.metrics_scrape import metrics_env, scrape

SECRET = "the-text-of-the-failure"


async def test_a_handler_failing_before_anything_took_the_request_gets_it_a_500(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.INFO)
    env, before = await settled_b2bua(nursery, tmp_path, voipgw_seed)
    errors_before = env.gateway.endpoint.statistics.internal_errors
    real = SipEndpoint.respond_locally

    def broken(self: SipEndpoint, request: Request, flow: Flow) -> Any:
        if request.method == "OPTIONS":
            raise RuntimeError(SECRET)
        return real(self, request, flow)

    monkeypatch.setattr(SipEndpoint, "respond_locally", broken)
    start = len(env.network.capture)
    exchange = await env.trunk.send(env.trunk.new_request("OPTIONS", "sip:127.0.0.1:5060"))
    final = await exchange.final()
    assert final.status == 500
    assert final.reason == "Server Internal Error"
    assert final.headers.get("Reason") is None
    answers = _responses_to(env, TRUNK, start)
    assert all(SECRET.encode() not in a for a in answers)
    assert env.gateway.endpoint.statistics.internal_errors == errors_before + 1
    errors = error_records(caplog)
    assert len(errors) == 1 and "internal error" in errors[0], errors
    # Nothing is kept past the transaction's own Timer J.
    await trio.sleep(WINDOW)
    assert table_sizes(env) == before, leftovers(env)
    assert env.gateway.endpoint.transactions.sizes()["sip_merged_request_index"] == 0


async def test_an_invite_whose_call_layer_fails_before_making_a_call_gets_500(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """CallManager.invite raising before any call task has the INVITE (here: identifying the
    caller): an INVITE server transaction has no timer in Proceeding, so without the
    endpoint's 500 it, and the caller, would wait for ever."""
    caplog.set_level(logging.INFO)
    env, before = await settled_b2bua(nursery, tmp_path, voipgw_seed)

    def broken(self: CallManager, invite: Request, flow: Flow) -> Any:
        raise RuntimeError(SECRET)

    monkeypatch.setattr(CallManager, "identify_caller", broken)
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    final = await call.final(timeout=WINDOW)
    assert final.status == 500
    assert SECRET not in final.reason and final.headers.get("Reason") is None
    assert env.calls == 0
    errors = error_records(caplog)
    assert len(errors) == 1 and "internal error" in errors[0], errors
    await tables_back(env, before)


async def test_a_call_registered_but_never_started_is_forgotten_and_its_invite_gets_500(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """CallManager.invite failing after it registered the call but before its task started
    (a tap deciding at the call's start raising): nothing of the call stays, and the endpoint
    answers the INVITE, which no call task will."""
    env, before = await settled_b2bua(nursery, tmp_path, voipgw_seed)
    manager = env.gateway.calls
    assert manager is not None

    def broken(self: CallManager, call: Call, invite: Request, caller: Any) -> None:
        raise RuntimeError(SECRET)

    monkeypatch.setattr(manager, "_start_taps", [("broken", object())])
    monkeypatch.setattr(CallManager, "_tap_from_start", broken)
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    assert (await call.final(timeout=WINDOW)).status == 500
    assert env.calls == 0 and manager.lookup_entries == 0
    await tables_back(env, before)


async def test_a_call_ending_with_its_callers_invite_unanswered_answers_it_500(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bug in the call's set-up, and its abort failing too (so Call.run's catch-all cannot
    answer A): the call manager answers the caller's INVITE 500 once the call is gone; the
    other calls and the tables are as before."""
    caplog.set_level(logging.INFO)
    env, before = await settled_b2bua(nursery, tmp_path, voipgw_seed)
    errors_before = env.gateway.endpoint.statistics.internal_errors

    async def setup_fails(self: Call) -> None:
        raise RuntimeError(SECRET)

    async def abort_fails(self: Call, status: int, reason: str) -> None:
        raise OSError("no listener left")

    monkeypatch.setattr(Call, "_setup", setup_fails)
    monkeypatch.setattr(Call, "_abort", abort_fails)
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    final = await call.final(timeout=WINDOW)
    assert final.status == 500
    assert SECRET not in final.reason
    assert env.gateway.endpoint.statistics.internal_errors == errors_before + 1
    await eventually(lambda: env.calls == 0)
    await tables_back(env, before)


async def test_a_response_after_the_final_one_leaves_no_endpoint_entry(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A TU that answers again after its final response gets TransactionStateError: the
    table forgets the transaction without TransactionTerminated, and the endpoint drops its
    flow entry for it there, rather than keep it for good."""
    env, _ = await settled_b2bua(nursery, tmp_path, voipgw_seed)
    endpoint = env.gateway.endpoint
    before = endpoint.sizes()
    raised: list[TransactionStateError] = []
    real = SipEndpoint._dispatch

    async def answers_twice(
        self: SipEndpoint, txn: ServerTransaction, request: Request, flow: Flow
    ) -> None:
        await real(self, txn, request, flow)
        if request.method == "OPTIONS":
            try:
                await self.respond(txn, make_response(request, 180))  # after its 200
            except TransactionStateError as err:
                raised.append(err)

    monkeypatch.setattr(SipEndpoint, "_dispatch", answers_twice)
    exchange = await env.trunk.send(env.trunk.new_request("OPTIONS", "sip:127.0.0.1:5060"))
    assert (await exchange.final()).status == 200
    assert len(raised) == 1
    assert endpoint.sizes() == before  # at once: no TransactionTerminated will come for it
    assert raised[0].transaction is not None  # the TU can tell which one it was


async def test_a_cancel_with_the_invites_cseq_cannot_end_the_invite(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
) -> None:
    """A CANCEL whose CSeq method is INVITE (RFC 3261 §8.1.1.7, §20.16: they must match;
    RFC 4475 §3.1.2.17), sent from the caller's address with the INVITE's branch, while the
    INVITE rings. Its 400 carries the CANCEL's method, so that it can match only a CANCEL
    transaction (§17.1.3): the caller's INVITE goes on ringing and is answered."""
    env = await start_b2bua(
        nursery, tmp_path, voipgw_seed, alice_auto=AutoAnswer(ring=True, status=None)
    )
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    leg_b = await env.alice.next_call()
    await eventually(lambda: 180 in call.exchange.statuses if call.exchange else False)
    invite = call.invite
    headers = invite.headers.remove("Content-Type").remove("Contact")
    forged = Request("CANCEL", invite.uri, headers)  # CSeq: 1 INVITE, the INVITE's Via
    start = len(env.network.capture)
    await env.trunk.socket.sendto(serialize_message(forged), GW)
    await trio.sleep(1.0)
    answers = [parse_message_untrusted(a) for a in _responses_to(env, TRUNK, start)]
    refusals = [a for a in answers if a.status == 400]
    assert len(refusals) == 1, answers
    assert refusals[0].cseq.method == "CANCEL"
    assert refusals[0].top_via.branch == invite.top_via.branch
    assert call.exchange is not None and 400 not in call.exchange.statuses
    await leg_b.answer(200)
    assert (await call.final()).status == 200
    assert env.calls == 1


async def test_a_damaged_copy_of_a_request_being_served_is_dropped(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
) -> None:
    """A copy of the ringing INVITE (its branch, sent-by and method) whose CSeq method is
    BYE: any answer to it would carry the INVITE's branch and method, and end the caller's
    INVITE while the gateway still serves it. It is dropped (counted as malformed)."""
    env = await start_b2bua(
        nursery, tmp_path, voipgw_seed, alice_auto=AutoAnswer(ring=True, status=None)
    )
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    leg_b = await env.alice.next_call()
    await eventually(lambda: 180 in call.exchange.statuses if call.exchange else False)
    invite = call.invite
    damaged = invite.with_headers(invite.headers.set("CSeq", f"{invite.cseq.number} BYE"))
    malformed = env.gateway.endpoint.statistics.rejected_malformed
    start = len(env.network.capture)
    await env.trunk.socket.sendto(serialize_message(damaged), GW)
    await trio.sleep(1.0)
    answers = [parse_message_untrusted(a) for a in _responses_to(env, TRUNK, start)]
    assert [a for a in answers if a.status == 400] == []
    assert env.gateway.endpoint.statistics.rejected_malformed == malformed + 1
    assert call.exchange is not None and 400 not in call.exchange.statuses
    await leg_b.answer(200)
    assert (await call.final()).status == 200


@pytest.mark.parametrize(
    ("line", "cseq", "answered"),
    [
        ("CANCEL", "INVITE", "CANCEL"),
        ("INVITE", "CANCEL", "INVITE"),
        ("BYE", "INVITE", "BYE"),
        ("OPTIONS", "REGISTER", "OPTIONS"),
        ("REGISTER", "OPTIONS", "REGISTER"),
        ("MESSAGE", "SUBSCRIBE", "MESSAGE"),
        ("INFO", "PRACK", "INFO"),
        ("invite", "INVITE", "invite"),  # methods are case-sensitive (§7.1)
        ("FOO", "BAR", "FOO"),  # unknown methods alike (RFC 4475 §3.1.2.18)
        ("<>", "INVITE", "INVITE"),  # no method to read: the CSeq is all there is
    ],
)
async def test_every_method_mismatch_is_answered_with_the_request_lines_method(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    line: str,
    cseq: str,
    answered: str,
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    request = env.trunk.new_request("OPTIONS", "sip:127.0.0.1:5060")
    via = "SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bKmismatch;rport"
    data = serialize_message(
        request.with_headers(request.headers.prepend("Via", via).set("CSeq", f"7 {cseq}"))
    ).replace(b"OPTIONS ", line.encode() + b" ", 1)
    start = len(env.network.capture)
    await env.trunk.socket.sendto(data, GW)
    await trio.sleep(1.0)
    answers = [parse_message_untrusted(a) for a in _responses_to(env, TRUNK, start)]
    assert [(a.status, str(a.cseq.number), a.cseq.method) for a in answers] == [
        (400, "7", answered)
    ]


async def test_merged_requests_are_exposed_as_a_metric(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """A new INVITE with the Call-ID, From tag and CSeq of one being served, on another branch
    (a forking proxy's second path): 482, counted in voipgw_sip_requests_merged_total."""
    env, address = await metrics_env(nursery, tmp_path, voipgw_seed)
    samples = await scrape(address)
    assert samples["voipgw_sip_requests_merged_total"] == 0
    assert samples["voipgw_sip_internal_errors_total"] == 0
    invite = env.trunk.new_request(
        "INVITE", env.did_uri(ALICE_DID), body=env.trunk.offer_sdp(), content_type=SDP
    )
    first = "SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bKpath1;rport"
    second = "SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bKpath2;rport"
    await env.trunk.socket.sendto(
        serialize_message(invite.with_headers(invite.headers.prepend("Via", first))), GW
    )
    await trio.sleep(0.2)
    await env.trunk.socket.sendto(
        serialize_message(invite.with_headers(invite.headers.prepend("Via", second))), GW
    )
    await trio.sleep(1.0)
    samples = await scrape(address)
    assert samples["voipgw_sip_requests_merged_total"] == 1
    assert samples["voipgw_sip_internal_errors_total"] == 0


async def test_an_invite_whose_call_cannot_be_made_gives_back_its_call_limit_count(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """CallManager.invite counts the INVITE against its trunk's limits before the call exists
    (held by its transaction, handed over to the call): a failure making the Call gets the
    INVITE its 500 from the endpoint, and must give the count back, or the trunk has one
    channel fewer until the gateway restarts."""
    env, _ = await settled_b2bua(nursery, tmp_path, voipgw_seed)
    manager = env.gateway.calls
    assert manager is not None
    limits_before = manager.limits.sizes()
    assert not manager.limits.in_progress

    def broken(self: Call, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError(SECRET)

    monkeypatch.setattr(Call, "__init__", broken)
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    assert (await call.final(timeout=WINDOW)).status == 500
    assert not manager.limits.in_progress
    assert manager.limits.sizes() == limits_before
