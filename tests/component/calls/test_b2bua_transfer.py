"""Call transfer by REFER (RFC 3515), terminated in the B2BUA (gateway/core/calls/transfer.py):
202 and NOTIFYs with sipfrag to the transferor, the target called without SDP, its offer taken
to the transferee in a re-INVITE, the target's leg taking the transferor's place; attended
transfer with Replaces (RFC 3891); refusals, failures, and a transferor that hangs up early.

Before this, every REFER got 501. Set-up as b2bua_env.py: trunk "carrier" at 127.0.0.2 calls
alice's DID; bob, another account, registers a phone at 127.0.0.4.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from gateway.core.hookspecs import hookimpl
from gateway.core.interfaces import CallEvent, OutboundMessage
from gateway.core.sdp.model import Origin
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.core.sip.message import Request
from gateway.testing.sip_agent import AutoAnswer, Call, Received, sdp_connection, simple_sdp
from tests.component.calls.b2bua_env import (
    ALICE,
    ALICE_DID,
    B2bua,
    answered_call,
    assert_media_via_gateway,
    eventually,
    next_within,
    start_b2bua,
)
from tests.component.calls.transfer_calls import (
    BOB,
    BOB_URI,
    alice_calls,
    bob_phone,
    eventually_notify,
    refer,
    replaces_of,
    sipfrag_of,
)


async def lossy_b2bua(nursery: trio.Nursery, tmp_path: Path, seed: int) -> B2bua:
    """The gateway on a network that drops, duplicates and reorders: retransmissions
    everywhere."""
    return await start_b2bua(
        nursery, tmp_path, seed, drop=0.15, duplicate=0.1, reorder=0.1, delay=(0.005, 0.2)
    )


async def consultation(env: B2bua, uri: str) -> tuple[Call, str]:
    """alice's consultation call to ``uri``, answered, and the Replaces naming it."""
    consult = await alice_calls(env, uri)
    return consult, replaces_of(consult)


async def test_a_blind_transfer_by_the_callee_puts_the_caller_through_to_the_target(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    bob = await bob_phone(env, nursery, voipgw_seed)
    call, alice_leg = await answered_call(env)
    port_to_trunk = sdp_connection(call.exchange.responses[-1].body)[1]  # type: ignore[union-attr]
    port_to_alice = sdp_connection(env.alice.requests("INVITE")[0].body)[1]

    assert await refer(alice_leg, BOB_URI) == 202
    trying = await env.alice.next_request("NOTIFY")
    refer_cseq = alice_leg.dialog.local_seq  # type: ignore[union-attr]
    assert trying.request.headers.get("Event") == f"refer;id={refer_cseq}"
    assert trying.request.headers.get("Subscription-State") == "active;expires=60"
    assert trying.request.headers.get("Content-Type") == "message/sipfrag;version=2.0"
    assert sipfrag_of(trying.request) == "SIP/2.0 100 Trying"

    # bob is called without SDP, as the caller (the party he will talk to), referred by alice.
    invite = await bob.next_request("INVITE")
    assert invite.request.body == b""
    assert invite.request.from_.uri.user == "+15550100"  # type: ignore[union-attr]
    assert "alice@" in (invite.request.headers.get("Referred-By") or "")
    ringing = await env.alice.next_request("NOTIFY")
    assert sipfrag_of(ringing.request) == "SIP/2.0 180 Ringing"

    # The trunk is re-INVITEd with bob's media (through the gateway, its own port kept)...
    reinvite = await env.trunk.next_request("INVITE")
    assert reinvite.request.to.tag is not None
    assert_media_via_gateway(reinvite.request.body)
    assert sdp_connection(reinvite.request.body)[1] == port_to_trunk
    # ... and bob gets its answer in our ACK, on the ports that faced alice.
    ack = await bob.next_request("ACK")
    assert_media_via_gateway(ack.request.body)
    assert sdp_connection(ack.request.body)[1] == port_to_alice

    done = await env.alice.next_request("NOTIFY")
    assert sipfrag_of(done.request) == "SIP/2.0 200 OK"
    assert done.request.headers.get("Subscription-State") == "terminated;reason=noresource"
    # alice hangs up, as a transferor does: the call goes on between the trunk and bob.
    assert (await alice_leg.bye()).status == 200
    await trio.sleep(5)
    assert env.calls == 1
    assert not env.trunk.requests("BYE")
    bob_leg = bob.calls[0]
    assert (await bob_leg.bye()).status == 200
    bye = await env.trunk.next_request("BYE")
    assert bye.request.call_id == call.call_id
    await eventually(lambda: env.calls == 0)

    # The call record says who transferred to whom.
    store = env.gateway.store
    assert store is not None
    await eventually(lambda: [r.ended_at for r in store.call_records_recent()] != [None])
    [record] = store.call_records_recent()
    assert record.security is not None
    assert record.security["transfers"] == [
        {"by": "b", "to": "sip:bob@127.0.0.1:5060", "attended": False, "status": 200}
    ]


async def test_voipgw_calls_shows_a_transfer_while_the_call_is_still_up(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    # docs/transfers.md: `voipgw calls` has a line per transfer and the call's legs now. It
    # reads the live call's record, which the transfer did not save again: the line (and the
    # target's leg) came only once the call had ended, in `voipgw calls --recent`.
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    bob = await bob_phone(env, nursery, voipgw_seed)
    _call, alice_leg = await answered_call(env)
    store = env.gateway.store
    assert store is not None
    # The answered call's record is saved with its legs, and no transfer yet.
    await eventually(lambda: [bool(r.security) for r in store.call_records_recent()] == [True])
    assert await refer(alice_leg, BOB_URI) == 202
    await eventually_notify(env.alice, "SIP/2.0 200 OK")

    def live_transfers() -> object:
        [record] = store.call_records_recent()
        assert record.ended_at is None  # nobody has hung up
        return (record.security or {}).get("transfers")

    await eventually(lambda: live_transfers() is not None)
    assert live_transfers() == [
        {"by": "b", "to": "sip:bob@127.0.0.1:5060", "attended": False, "status": 200}
    ]
    assert bob.calls  # still up: the target talks to the trunk


async def test_voipgw_calls_shows_a_failed_transfer_while_the_call_goes_on(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    # A failed transfer is saved to the live record too (_end_transfer): `voipgw calls` says
    # why while the transferor and transferee still talk.
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    await bob_phone(env, nursery, voipgw_seed, auto=AutoAnswer(status=486))
    call, alice_leg = await answered_call(env)
    store = env.gateway.store
    assert store is not None
    await eventually(lambda: [bool(r.security) for r in store.call_records_recent()] == [True])
    assert await refer(alice_leg, BOB_URI) == 202
    await eventually_notify(env.alice, "SIP/2.0 486 Busy Here")

    def live_transfers() -> object:
        [record] = store.call_records_recent()
        assert record.ended_at is None  # the call goes on
        return (record.security or {}).get("transfers")

    await eventually(lambda: live_transfers() is not None)
    assert live_transfers() == [
        {"by": "b", "to": "sip:bob@127.0.0.1:5060", "attended": False, "status": 486}
    ]
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)


async def test_a_blind_transfer_by_the_caller_puts_the_callee_through_to_the_target(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    bob = await bob_phone(env, nursery, voipgw_seed)
    call = await alice_calls(env, "sip:+15550123@127.0.0.1:5060")
    trunk_leg = await env.trunk.next_call()

    assert await refer(call, BOB_URI) == 202
    invite = await bob.next_request("INVITE")
    # bob sees the party he will talk to: the number alice called.
    assert invite.request.from_.uri.user == "+15550123"  # type: ignore[union-attr]
    reinvite = await env.trunk.next_request("INVITE")
    assert_media_via_gateway(reinvite.request.body)
    await bob.next_request("ACK")
    done = await eventually_notify(env.alice, "SIP/2.0 200 OK")
    assert done.headers.get("Subscription-State") == "terminated;reason=noresource"
    assert (await call.bye()).status == 200

    # bob is now the call's A side: the trunk's BYE reaches him, and his re-INVITE the trunk.
    bob_leg = bob.calls[0]
    assert (await bob_leg.reinvite(bob.offer_sdp(direction="sendonly"))).status == 200
    assert len(env.trunk.requests("INVITE")) == 3  # the call, the transfer, bob's hold
    assert (await trunk_leg.bye()).status == 200
    bye = await bob.next_request("BYE")
    assert bye.request.call_id == bob_leg.call_id
    await eventually(lambda: env.calls == 0)


class OutboundLegs:
    """Notes the leg gateway_outbound_message is told each request goes to."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, object, tuple[str, str, str | None] | None]] = []

    @hookimpl
    def gateway_outbound_message(self, outbound: OutboundMessage) -> None:
        message, leg = outbound.message, outbound.leg
        if isinstance(message, Request):
            where = None if leg is None else (leg.side, leg.kind, leg.name)
            self.requests.append((message.method, outbound.flow.remote, where))


async def test_outbound_message_hooks_are_told_the_leg_across_a_transfer_by_the_caller(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    # bob takes alice's place on side A: what we send bob after that (our ACK, the BYE) is
    # bob's leg, though his leg is kept twice then (the A leg it became, and the transfer's B
    # leg); what we send alice, the transferor, is never said to be bob's.
    legs = OutboundLegs()
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, plugins=[("legs", legs)])
    bob = await bob_phone(env, nursery, voipgw_seed)
    call = await alice_calls(env, "sip:+15550123@127.0.0.1:5060")
    trunk_leg = await env.trunk.next_call()
    assert await refer(call, BOB_URI) == 202
    await bob.next_request("ACK")
    await eventually_notify(env.alice, "SIP/2.0 200 OK")
    assert (await call.bye()).status == 200
    assert (await trunk_leg.bye()).status == 200
    await bob.next_request("BYE")
    await eventually(lambda: env.calls == 0)
    bob_a, alice_a = ("a", "account", "bob"), ("a", "account", "alice")
    to_bob = [(method, where) for method, remote, where in legs.requests if remote == BOB]
    assert to_bob == [("INVITE", bob_a), ("ACK", bob_a), ("BYE", bob_a)]
    to_alice = {where for method, remote, where in legs.requests if remote == ALICE}
    assert alice_a in to_alice and to_alice <= {alice_a, None}


async def test_a_busy_target_fails_the_transfer_and_the_call_goes_on(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    bob = await bob_phone(env, nursery, voipgw_seed, auto=AutoAnswer(status=486))
    call, alice_leg = await answered_call(env)
    assert await refer(alice_leg, BOB_URI) == 202
    failed = await eventually_notify(env.alice, "SIP/2.0 486 Busy Here")
    assert failed.headers.get("Subscription-State") == "terminated;reason=noresource"
    assert len(bob.requests("INVITE")) == 1
    assert not env.trunk.requests("INVITE")  # the transferee was not re-INVITEd
    # The transferor takes the call back off hold; the call is as it was.
    assert (await alice_leg.reinvite(env.alice.offer_sdp())).status == 200
    assert (await call.bye()).status == 200
    await env.alice.next_request("BYE")
    await eventually(lambda: env.calls == 0)


async def test_a_target_that_does_not_answer_is_cancelled_after_the_ring_timeout(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, sip={"ring_timeout": 30})
    bob = await bob_phone(env, nursery, voipgw_seed, auto=AutoAnswer(status=None))
    _, alice_leg = await answered_call(env)
    started = trio.current_time()
    assert await refer(alice_leg, BOB_URI) == 202
    await eventually_notify(env.alice, "SIP/2.0 180 Ringing")
    cancel = await bob.next_request("CANCEL", timeout=60)
    assert 30 <= cancel.at - started < 31
    await eventually_notify(env.alice, "SIP/2.0 408 Request Timeout")
    assert env.calls == 1
    assert (await alice_leg.bye()).status == 200


async def test_refer_refusals_leave_the_call_as_it_is(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    bob = await bob_phone(env, nursery, voipgw_seed, auto=AutoAnswer(status=None))
    call, alice_leg = await answered_call(env)
    # A trunk does not transfer through us: it would have us place calls for it.
    assert await refer(call, BOB_URI) == 403
    exchange = await alice_leg.request("REFER")  # no Refer-To (RFC 3515 §2.4.1)
    assert (await exchange.final()).status == 400
    assert await refer(alice_leg, "<mailto:bob@example.com>") == 416
    assert await refer(alice_leg, "<sip:bob@127.0.0.1:5060;method=BYE>") == 501
    assert await refer(alice_leg, "<sip:bob@127.0.0.1:5060?Replaces=abc>") == 400
    assert not env.alice.requests("NOTIFY")
    # One transfer at a time.
    assert await refer(alice_leg, BOB_URI) == 202
    await bob.next_request("INVITE")
    assert await refer(alice_leg, BOB_URI) == 491
    assert len(bob.requests("INVITE")) == 1
    assert env.calls == 1


async def test_a_transferor_that_hangs_up_at_once_leaves_the_transfer_to_finish(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    bob = await bob_phone(env, nursery, voipgw_seed, auto=AutoAnswer(delay=3))
    call, alice_leg = await answered_call(env)
    assert await refer(alice_leg, BOB_URI, ("Refer-Sub", "false")) == 202
    assert (await alice_leg.bye()).status == 200  # before bob answers
    await bob.next_request("ACK", timeout=10)
    reinvite = env.trunk.requests("INVITE")[-1]
    assert reinvite.to.tag is not None  # the trunk was re-INVITEd
    assert not env.alice.requests("NOTIFY")  # Refer-Sub: false (RFC 4488)
    assert not env.trunk.requests("BYE")
    assert env.calls == 1
    assert (await call.bye()).status == 200
    await bob.next_request("BYE")
    await eventually(lambda: env.calls == 0)


async def test_a_request_for_a_transferor_that_left_gets_503_and_the_transfer_goes_on(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """An INFO or MESSAGE from the transferee while the target rings and the transferor has hung
    up has nowhere to go: 503 (RFC 5057 §5.1: it ends only that transaction). It used to be
    relayed into the transferor's ended dialog: an internal error ended the call and the
    transfer with it."""
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    bob = await bob_phone(env, nursery, voipgw_seed, auto=AutoAnswer(delay=3))
    call, alice_leg = await answered_call(env)
    assert await refer(alice_leg, BOB_URI, ("Refer-Sub", "false")) == 202
    assert (await alice_leg.bye()).status == 200  # before bob answers
    sent = await call.request("INFO", body=b"<x/>", content_type="application/vnd.example+xml")
    refused = await sent.final(timeout=5)
    assert refused.status == 503
    assert "the B leg hung up" in (refused.headers.get("Warning") or "")
    await bob.next_request("ACK", timeout=10)  # the transfer completes all the same
    assert not env.trunk.requests("BYE")
    assert env.calls == 1
    assert (await call.bye()).status == 200
    await bob.next_request("BYE")
    await eventually(lambda: env.calls == 0)


async def test_a_transferor_whose_dialog_is_gone_leaves_the_transfer_to_finish(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """A transferor that answers 481 after its REFER (its BYE crossed the request, or it dropped
    the dialog without one) has left, as one that hung up: the transfer goes on. The 481 used
    to end the call (RFC 5057 §5.1), and the transfer with it, the target ringing."""
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    bob = await bob_phone(env, nursery, voipgw_seed, auto=AutoAnswer(delay=3))
    call, alice_leg = await answered_call(env)
    assert await refer(alice_leg, BOB_URI, ("Refer-Sub", "false")) == 202

    async def gone(received: Received) -> bool:
        if received.request.method != "INFO":
            return False
        await env.alice.respond(received, 481)
        return True

    env.alice.in_dialog = gone
    sent = await call.request("INFO", body=b"<x/>", content_type="application/vnd.example+xml")
    assert (await sent.final(timeout=5)).status == 500  # not 481: the trunk's session goes on
    await bob.next_request("ACK", timeout=10)  # the target answered and took alice's place
    assert not env.trunk.requests("BYE")
    assert env.alice.requests("BYE") == []  # she has no dialog for it
    assert env.calls == 1
    assert (await call.bye()).status == 200
    await bob.next_request("BYE")
    await eventually(lambda: env.calls == 0)


async def test_a_failed_transfer_after_the_transferor_left_ends_the_call(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    await bob_phone(env, nursery, voipgw_seed, auto=AutoAnswer(status=486, delay=1))
    _, alice_leg = await answered_call(env)
    assert await refer(alice_leg, BOB_URI) == 202
    assert (await alice_leg.bye()).status == 200
    bye = await env.trunk.next_request("BYE")
    assert "486" in (bye.request.headers.get("Reason") or "")
    await eventually(lambda: env.calls == 0)


async def test_a_transferor_that_stays_is_byed_after_64_t1(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    bob = await bob_phone(env, nursery, voipgw_seed)
    _, alice_leg = await answered_call(env)
    assert await refer(alice_leg, BOB_URI) == 202
    done = await eventually_notify(env.alice, "SIP/2.0 200 OK")
    assert done is not None
    assert await next_within(env.alice, "BYE", 31) is None
    bye = await env.alice.next_request("BYE", timeout=5)
    assert bye.request.call_id == alice_leg.call_id
    assert env.calls == 1  # the trunk and bob talk on
    assert (await bob.calls[0].bye()).status == 200
    await eventually(lambda: env.calls == 0)


async def test_a_transferee_refusing_the_targets_media_fails_the_transfer(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    bob = await bob_phone(env, nursery, voipgw_seed)
    call, alice_leg = await answered_call(env)

    async def refuse_reinvite(received: object) -> bool:
        request = received.request  # type: ignore[attr-defined]
        if request.method != "INVITE":
            return False
        await env.trunk.respond(received, 488)  # type: ignore[arg-type]
        return True

    env.trunk.in_dialog = refuse_reinvite
    assert await refer(alice_leg, BOB_URI) == 202
    await eventually_notify(env.alice, "SIP/2.0 488 Not Acceptable Here")
    # bob, who answered, is ACKed and BYEd; the trunk and alice talk on.
    bye = await bob.next_request("BYE")
    assert bye.request.call_id == bob.calls[0].call_id
    env.trunk.in_dialog = None
    assert (await alice_leg.reinvite(env.alice.offer_sdp())).status == 200
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)


@pytest.mark.parametrize("failures", ["lenient", "strict"])
async def test_a_transferee_answering_404_fails_the_transfer_and_strict_ends_the_call(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    failures: str,
) -> None:
    """The transferee answers our re-INVITE towards the target 404 (RFC 5057 §5.1: its dialog is
    broken): the transfer fails either way (alice's NOTIFY says 404, bob is BYEd); lenient, the
    call goes on as after a 488; with ``[sip] in_dialog_failures = "strict"`` it ends."""
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, sip={"in_dialog_failures": failures})
    bob = await bob_phone(env, nursery, voipgw_seed)
    call, alice_leg = await answered_call(env)

    async def refuse_reinvite(received: object) -> bool:
        request = received.request  # type: ignore[attr-defined]
        if request.method != "INVITE":
            return False
        await env.trunk.respond(received, 404)  # type: ignore[arg-type]
        return True

    env.trunk.in_dialog = refuse_reinvite
    assert await refer(alice_leg, BOB_URI) == 202
    await eventually_notify(env.alice, "SIP/2.0 404 Not Found")
    bye = await bob.next_request("BYE")
    assert bye.request.call_id == bob.calls[0].call_id
    if failures == "strict":
        await eventually(lambda: env.calls == 0)
        return
    await trio.sleep(5)
    assert env.calls == 1
    env.trunk.in_dialog = None
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)


@pytest.mark.parametrize(("failures", "status"), [("lenient", 481), ("strict", 404)])
async def test_a_transferee_whose_dialog_is_gone_gets_no_bye_and_the_caller_hears_why(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    failures: str,
    status: int,
) -> None:
    """The transferee answers our re-INVITE towards the target with a status that says its
    dialog is gone (481; 404 read strictly, RFC 5057 §5.1): the call ends as for any other
    in-dialog request so answered (CallBase._session_lost): no BYE into the transferee's dialog,
    which could only fail the same way; alice's BYE gives that status as its cause (RFC 3326),
    not 200; the record says the dialog is gone."""
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, sip={"in_dialog_failures": failures})
    bob = await bob_phone(env, nursery, voipgw_seed)
    _, alice_leg = await answered_call(env)

    async def refuse_reinvite(received: object) -> bool:
        request = received.request  # type: ignore[attr-defined]
        if request.method != "INVITE":
            return False
        await env.trunk.respond(received, status)  # type: ignore[arg-type]
        return True

    env.trunk.in_dialog = refuse_reinvite
    assert await refer(alice_leg, BOB_URI) == 202
    await bob.next_request("BYE")
    bye = await env.alice.next_request("BYE", timeout=5)
    assert f"SIP;cause={status};" in (bye.request.headers.get("Reason") or "")
    await eventually(lambda: env.calls == 0)
    store = env.gateway.store
    await eventually(lambda: [r.ended_at for r in store.call_records_recent()] != [None])
    [record] = store.call_records_recent()
    assert record.end_reason is not None
    assert record.end_reason.startswith(f"re-INVITE to the A leg answered {status} ")
    assert record.end_reason.endswith(": its dialog is gone")
    await trio.sleep(5)
    assert env.trunk.requests("BYE") == []


async def test_a_transferee_whose_own_reinvite_crossed_ours_is_reinvited_again(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    # The trunk (the transferee) sends a re-INVITE of its own as ours arrives: both get 491
    # (RFC 3261 §14.1). Ours goes again after 0-2 s (the trunk chose the Call-ID) and the
    # transfer completes instead of failing.
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    bob = await bob_phone(env, nursery, voipgw_seed)
    call, alice_leg = await answered_call(env)
    reinvited_at: list[float] = []

    async def glare_once(received: object) -> bool:
        request = received.request  # type: ignore[attr-defined]
        if request.method != "INVITE":
            return False
        reinvited_at.append(trio.current_time())
        if len(reinvited_at) > 1:
            return False
        await env.trunk.respond(received, 491)  # type: ignore[arg-type]
        return True

    env.trunk.in_dialog = glare_once
    assert await refer(alice_leg, BOB_URI) == 202
    await eventually_notify(env.alice, "SIP/2.0 200 OK")
    reinvites = [r for r in env.trunk.requests("INVITE") if r.call_id == call.call_id]
    assert len(reinvites) == 2  # ours refused with 491, ours again
    assert reinvites[1].cseq.number > reinvites[0].cseq.number
    assert reinvites[1].body == reinvites[0].body  # the same offer: bob's media
    assert 0 <= reinvited_at[1] - reinvited_at[0] <= 2.05  # §14.1, not the Call-ID's owner
    ack = await bob.next_request("ACK")
    assert_media_via_gateway(ack.request.body)
    assert (await alice_leg.bye()).status == 200
    assert (await bob.calls[0].bye()).status == 200
    await eventually(lambda: env.calls == 0)


async def test_a_transferee_that_keeps_answering_491_fails_the_transfer(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    bob = await bob_phone(env, nursery, voipgw_seed)
    call, alice_leg = await answered_call(env)

    async def always_glare(received: object) -> bool:
        if received.request.method != "INVITE":  # type: ignore[attr-defined]
            return False
        await env.trunk.respond(received, 491)  # type: ignore[arg-type]
        return True

    env.trunk.in_dialog = always_glare
    assert await refer(alice_leg, BOB_URI) == 202
    await eventually_notify(env.alice, "SIP/2.0 491 Request Pending")
    reinvites = [r for r in env.trunk.requests("INVITE") if r.call_id == call.call_id]
    assert len(reinvites) == 1 + 3  # ours, and three more tries
    bye = await bob.next_request("BYE")
    assert bye.request.call_id == bob.calls[0].call_id
    env.trunk.in_dialog = None
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)


async def test_an_attended_transfer_replaces_the_consultation_call(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    bob = await bob_phone(env, nursery, voipgw_seed)
    call, alice_leg = await answered_call(env)
    # alice consults bob in a second call through the gateway.
    consult, replaces = await consultation(env, "sip:bob@127.0.0.1:5060")
    bob_consult = await bob.next_call()
    await bob.next_request("ACK")
    assert bob_consult.dialog is not None
    assert await refer(alice_leg, f"<sip:bob@127.0.0.1:5060?Replaces={replaces}>") == 202

    # bob gets an INVITE that replaces his dialog with the gateway in the consultation call.
    invite = (await bob.next_request("INVITE")).request
    theirs = bob_consult.dialog
    assert invite.headers.get("Replaces") == (
        f"{theirs.call_id};to-tag={theirs.local_tag};from-tag={theirs.remote_tag}"
    )
    assert invite.headers.get("Require") == "replaces"
    await bob.next_request("ACK")
    await eventually_notify(env.alice, "SIP/2.0 200 OK")
    # bob drops the replaced dialog (RFC 3891 §3); the consultation call ends at alice.
    assert (await bob_consult.bye()).status == 200
    consult_bye = await env.alice.next_request("BYE")
    assert consult_bye.request.call_id == consult.call_id
    assert (await alice_leg.bye()).status == 200
    await eventually(lambda: env.calls == 1)
    # The trunk's caller talks to bob.
    assert (await call.bye()).status == 200
    bye = await bob.next_request("BYE")
    assert bye.request.call_id == invite.call_id
    await eventually(lambda: env.calls == 0)


async def test_a_replaces_for_a_dialog_that_is_not_the_transferors_gets_481(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    bob = await bob_phone(env, nursery, voipgw_seed)
    _, alice_leg = await answered_call(env)
    replaces = "nosuchcall%3Bto-tag%3Dx%3Bfrom-tag%3Dy"
    assert await refer(alice_leg, f"<sip:bob@127.0.0.1:5060?Replaces={replaces}>") == 202
    failed = await eventually_notify(env.alice, "SIP/2.0 481 Call/Transaction Does Not Exist")
    assert failed is not None
    assert not bob.requests("INVITE")
    assert env.calls == 1


async def test_a_transfer_to_a_number_on_a_trunk_is_placed_as_the_transferors_call(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    _, alice_leg = await answered_call(env)
    assert await refer(alice_leg, "<sip:+15550199@127.0.0.1:5060>") == 202
    invite = await env.trunk.next_request("INVITE")
    assert invite.request.to.tag is None  # a new call to the carrier, not the re-INVITE
    assert invite.request.uri.user == "+15550199"  # type: ignore[union-attr]
    # The carrier sees alice's own number (its DID for her), asserted: carriers take only
    # their own numbers as caller ID, and alice's account places (and pays for) this call.
    assert invite.request.from_.uri.user == ALICE_DID  # type: ignore[union-attr]
    pai = invite.request.headers.get("P-Asserted-Identity") or ""
    assert f"sip:{ALICE_DID}@" in pai
    await eventually_notify(env.alice, "SIP/2.0 200 OK")
    assert (await alice_leg.bye()).status == 200
    assert env.calls == 1


async def test_a_target_answering_during_another_reinvite_is_offered_after_it(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    bob = await bob_phone(env, nursery, voipgw_seed, auto=AutoAnswer(delay=1))
    _, alice_leg = await answered_call(env)
    answered_at: list[float] = []

    async def slow_reinvite(received: object) -> bool:
        request = received.request  # type: ignore[attr-defined]
        if request.method != "INVITE" or answered_at:
            return False
        await trio.sleep(3)  # the trunk takes 3 s to answer alice's hold
        answered_at.append(trio.current_time())
        body = env.trunk.answer_sdp(request.body)
        await env.trunk.respond(received, 200, body=body)  # type: ignore[arg-type]
        return True

    env.trunk.in_dialog = slow_reinvite
    assert await refer(alice_leg, BOB_URI) == 202
    hold = await alice_leg.request(
        "INVITE", body=env.alice.offer_sdp(direction="sendonly"), content_type="application/sdp"
    )
    # bob answers at 1 s while the hold is pending: his offer waits for its end.
    assert (await hold.final()).status == 200
    transfer_reinvite = None
    while transfer_reinvite is None or transfer_reinvite.request.body == b"":
        transfer_reinvite = await env.trunk.next_request("INVITE")
        if b"sendonly" in transfer_reinvite.request.body:
            transfer_reinvite = None  # alice's hold, relayed
    assert transfer_reinvite.at >= answered_at[0]
    assert b"sendrecv" in transfer_reinvite.request.body
    await bob.next_request("ACK")
    await eventually_notify(env.alice, "SIP/2.0 200 OK")


async def test_a_transferred_call_can_be_transferred_again(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    bob = await bob_phone(env, nursery, voipgw_seed)
    call, alice_leg = await answered_call(env)
    assert await refer(alice_leg, BOB_URI) == 202
    await eventually_notify(env.alice, "SIP/2.0 200 OK")
    assert (await alice_leg.bye()).status == 200
    bob_leg = await bob.next_call()
    await bob.next_request("ACK")

    # bob sends the caller back to alice: the leg that replaced alice's transfers in turn.
    assert await refer(bob_leg, "<sip:alice@127.0.0.1:5060>") == 202
    alice_again = await env.alice.next_call()
    assert alice_again.invite.from_.uri.user == "+15550100"  # type: ignore[union-attr]
    assert "bob@" in (alice_again.invite.headers.get("Referred-By") or "")
    await eventually_notify(bob, "SIP/2.0 200 OK")
    assert (await bob_leg.bye()).status == 200
    assert env.calls == 1
    assert (await call.bye()).status == 200
    bye = await env.alice.next_request("BYE")
    assert bye.request.call_id == alice_again.call_id
    await eventually(lambda: env.calls == 0)


async def test_a_target_hanging_up_while_the_transferee_is_reinvited_ends_the_call(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    bob = await bob_phone(env, nursery, voipgw_seed)

    async def never_answer(received: object) -> bool:
        return received.request.method == "INVITE"  # type: ignore[attr-defined]

    _, alice_leg = await answered_call(env)
    env.trunk.in_dialog = never_answer
    assert await refer(alice_leg, BOB_URI) == 202
    await env.trunk.next_request("INVITE")  # the re-INVITE with bob's offer, left unanswered
    bob_leg = await bob.next_call()
    assert bob_leg.dialog is not None
    assert (await bob_leg.bye()).status == 200
    bye = await env.trunk.next_request("BYE")
    assert "hung up as it answered" in (bye.request.headers.get("Reason") or "")
    await eventually_notify(env.alice, "SIP/2.0 487 Request Terminated")
    await eventually(lambda: env.calls == 0)


@pytest.mark.parametrize("impairment", [0, 1, 2, 3, 4, 5])
async def test_a_transfer_over_a_lossy_network_completes(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    impairment: int,
) -> None:
    # Retransmissions everywhere: the REFER and its NOTIFYs, the target's 2xx until our ACK
    # (held back until the transferee answered), the re-INVITE and its 2xx.
    env = await lossy_b2bua(nursery, tmp_path, voipgw_seed + impairment)
    bob = await bob_phone(env, nursery, voipgw_seed + impairment)
    call, alice_leg = await answered_call(env)
    assert await refer(alice_leg, BOB_URI) == 202
    await eventually_notify(env.alice, "SIP/2.0 200 OK")
    assert (await alice_leg.bye()).status == 200
    bob_leg = await bob.next_call()
    await eventually(lambda: bob_leg.dialog is not None, timeout=30)
    assert not bob.never_acked
    assert (await call.bye()).status == 200
    bye = await bob.next_request("BYE", timeout=40)
    assert bye.request.call_id == bob_leg.call_id
    await eventually(lambda: env.calls == 0, timeout=60)
    assert not bob.never_acked and not env.trunk.never_acked


class EventLog:
    """A plugin that notes every call event."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str | None]] = []

    @hookimpl
    def gateway_call_event(self, event: CallEvent) -> None:
        self.events.append((event.kind, event.reason))


async def test_observers_hear_of_transfers_done_and_failed(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    observer = EventLog()
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, plugins=[("event-log", observer)])
    bob = await bob_phone(env, nursery, voipgw_seed, auto=AutoAnswer(status=486))
    _, alice_leg = await answered_call(env)
    assert await refer(alice_leg, BOB_URI) == 202
    await eventually_notify(env.alice, "SIP/2.0 486 Busy Here")
    bob.auto = AutoAnswer()
    assert await refer(alice_leg, BOB_URI) == 202
    await eventually_notify(env.alice, "SIP/2.0 200 OK")
    kinds = [kind for kind, _ in observer.events]
    assert kinds == ["started", "ringing", "answered", "transfer-failed", "transferred"]
    assert observer.events[3][1] == "B leg: 486 Busy Here"
    assert observer.events[4][1] == "B leg to sip:bob@127.0.0.1:5060"


async def test_a_network_error_while_transferring_ends_the_call_and_frees_every_leg(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    # The ACK of the transferee's 2xx cannot be sent (its connection gone, a new one refused):
    # an OSError in the middle of the transfer. The transferee took the target's offer and
    # cannot be ACKed: the call ends saying so ("signalling failed", not an internal error),
    # and every leg it had (the transferor, the target that answered) gets BYE.
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    bob = await bob_phone(env, nursery, voipgw_seed)
    _, alice_leg = await answered_call(env)
    endpoint = env.gateway.endpoint
    assert endpoint is not None
    real_flow_to = endpoint.flow_to

    async def refuse_the_trunk(transport, address, flow=None):  # type: ignore[no-untyped-def]
        if tuple(address) == ("127.0.0.2", 5060) and env.trunk.requests("INVITE"):
            raise ConnectionRefusedError(111, "Connection refused")
        return await real_flow_to(transport, address, flow)

    endpoint.flow_to = refuse_the_trunk  # type: ignore[method-assign]
    assert await refer(alice_leg, BOB_URI) == 202
    assert (await bob.next_request("BYE")).request.call_id == bob.calls[0].call_id
    assert (await env.alice.next_request("BYE")).request.call_id == alice_leg.call_id
    await eventually(lambda: env.calls == 0)
    store = env.gateway.store
    assert store is not None
    await eventually(lambda: [r.ended_at for r in store.call_records_recent()] != [None])
    [record] = store.call_records_recent()
    # What the system says of the errno, not the transport's text (transport_error_text).
    assert record.end_reason == "signalling failed: ECONNREFUSED (Connection refused)"


async def test_a_transfer_while_the_consultation_call_rings_calls_the_target_afresh(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    # A semi-attended transfer: alice transfers the trunk's caller to bob while her call to bob
    # still rings. bob's phone cannot replace a dialog it has not answered (RFC 3891 §3), so
    # the gateway stops that ringing ("Call completed elsewhere") and calls bob for the caller.
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    bob = await bob_phone(env, nursery, voipgw_seed, auto=AutoAnswer(status=None))
    call, alice_leg = await answered_call(env)
    consult = await env.alice.invite("sip:bob@127.0.0.1:5060")
    assert (await consult.final()).status == 407
    await consult.authenticate()
    assert consult.exchange is not None
    ringing = await consult.exchange.wait_for(lambda r: r.status == 180)
    consult_invite = await bob.next_call()
    replaces = f"{consult.call_id}%3Bto-tag%3D{ringing.to.tag}%3Bfrom-tag%3D{consult.local_tag}"
    assert await refer(alice_leg, f"<sip:bob@127.0.0.1:5060?Replaces={replaces}>") == 202
    cancel = await bob.next_request("CANCEL")
    assert cancel.request.call_id == consult_invite.call_id
    assert cancel.request.headers.get("Reason") == 'SIP;cause=200;text="Call completed elsewhere"'
    assert (await consult.final()).status == 487
    transfer_invite = await bob.next_call()
    assert transfer_invite.invite.headers.get("Replaces") is None
    assert transfer_invite.invite.from_.uri.user == "+15550100"  # type: ignore[union-attr]
    await transfer_invite.answer()
    await eventually_notify(env.alice, "SIP/2.0 200 OK")
    reinvite = (await env.trunk.next_request("INVITE")).request
    assert reinvite.call_id == call.call_id
    assert (await alice_leg.bye()).status == 200
    await eventually(lambda: env.calls == 1)
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)


async def the_carrier_legs_are_the_call(
    env: B2bua, alice_leg: Call, call: Call, trunk_consult: Call
) -> None:
    """A join done: alice hangs up her leg of the transferred call, and the two carrier legs
    (the trunk's ``call`` and the consultation's ``trunk_consult``) are the call now, talking
    through the gateway: one hangs up, the other gets BYE, and nothing of the call is left."""
    assert (await alice_leg.bye()).status == 200
    await eventually(lambda: env.calls == 1)
    assert (await call.bye()).status == 200
    bye = await env.trunk.next_request("BYE")
    assert bye.request.call_id == trunk_consult.call_id
    await eventually(lambda: env.calls == 0 and env.call_lookups == 0)


async def test_an_attended_transfer_to_a_trunks_call_joins_its_leg_to_the_transferred_call(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    # A receptionist (alice) consults an outside number through the carrier, then transfers
    # the caller to it. A carrier takes no Replaces: the gateway takes the consultation's
    # trunk leg over into the transferred call and re-INVITEs it without SDP; its offer goes to
    # the caller, the caller's answer back in our ACK. The consultation call ends at alice.
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    call, alice_leg = await answered_call(env)
    consult, replaces = await consultation(env, "sip:+15550199@127.0.0.1:5060")
    trunk_consult = await env.trunk.next_call()
    await env.trunk.next_request("ACK")
    assert await refer(alice_leg, f"<sip:+15550199@127.0.0.1:5060?Replaces={replaces}>") == 202

    # alice's consultation call ends; the carrier's leg of it gets no BYE but a re-INVITE.
    consult_bye = await env.alice.next_request("BYE")
    assert consult_bye.request.call_id == consult.call_id
    join = (await env.trunk.next_request("INVITE")).request
    assert join.call_id == trunk_consult.call_id and join.body == b""
    reoffer = (await env.trunk.next_request("INVITE")).request
    assert reoffer.call_id == call.call_id  # the transferee gets the carrier leg's offer
    ack = (await env.trunk.next_request("ACK")).request
    while ack.call_id != trunk_consult.call_id:
        ack = (await env.trunk.next_request("ACK")).request
    assert b"m=audio" in ack.body  # the transferee's answer
    # In the carrier's dialog, under the o= line the consultation call's offer had there:
    # before session 53 it had the transferred call's own, another session to the carrier.
    assert_goes_on_from(trunk_consult.invite.body, ack.body)
    await eventually_notify(env.alice, "SIP/2.0 200 OK")
    assert not [r for r in env.trunk.requests("BYE") if r.call_id == trunk_consult.call_id]
    await the_carrier_legs_are_the_call(env, alice_leg, call, trunk_consult)


async def test_a_carrier_leg_whose_reinvite_crossed_our_join_is_joined_again(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    # As above, but the carrier's leg answers our re-INVITE without SDP with 491 once (it was
    # refreshing its session as we took it over): the join goes again after 2.1-4 s (we chose
    # that leg's Call-ID) and the transfer completes.
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    call, alice_leg = await answered_call(env)
    _, replaces = await consultation(env, "sip:+15550199@127.0.0.1:5060")
    trunk_consult = await env.trunk.next_call()
    await env.trunk.next_request("ACK")
    joins_at: list[float] = []

    async def glare_once(received: object) -> bool:
        request = received.request  # type: ignore[attr-defined]
        if request.method != "INVITE" or request.call_id != trunk_consult.call_id:
            return False
        joins_at.append(trio.current_time())
        if len(joins_at) > 1:
            return False
        await env.trunk.respond(received, 491)  # type: ignore[arg-type]
        return True

    env.trunk.in_dialog = glare_once
    assert await refer(alice_leg, f"<sip:+15550199@127.0.0.1:5060?Replaces={replaces}>") == 202
    await eventually_notify(env.alice, "SIP/2.0 200 OK")
    assert len(joins_at) == 2
    assert 2.1 <= joins_at[1] - joins_at[0] <= 4.05  # RFC 3261 §14.1: the Call-ID's owner
    await the_carrier_legs_are_the_call(env, alice_leg, call, trunk_consult)


def origin(body: bytes) -> Origin:
    return parse_sdp_untrusted(body).origin


def assert_goes_on_from(previous: bytes, sent: bytes) -> None:
    """Our SDP ``sent`` in a dialog where we last sent ``previous``: the same o= line, one
    version on (RFC 3264 §8: the same session to that peer)."""
    before, now = origin(previous), origin(sent)
    assert (now.username, now.session_id) == (before.username, before.session_id)
    assert now.session_version == before.session_version + 1


def refuse_late_offers(
    env: B2bua,
    call_id: str,
    *,
    refuse_offers: bool = False,
    answer: Callable[[bytes], bytes | None] | None = None,
) -> list[Request]:
    """The carrier refuses every re-INVITE without SDP on ``call_id`` with 488 (some carriers
    take no late offer in a re-INVITE), and with ``refuse_offers`` those with SDP too; the
    re-INVITEs it got there, in order. ``answer``: the carrier's own answer to an offer (its
    SDP in a 200), or None to refuse that offer with 488; without it, answered as usual."""
    got: list[Request] = []

    async def refuse(received: Received) -> bool:
        request = received.request
        if request.method != "INVITE" or request.call_id != call_id:
            return False
        got.append(request)
        if request.body and answer is not None and (body := answer(request.body)) is not None:
            await env.trunk.respond(received, 200, body=body, content_type="application/sdp")
            return True
        if request.body and answer is None and not refuse_offers:
            return False  # answered as usual
        await env.trunk.respond(received, 488)
        return True

    env.trunk.in_dialog = refuse
    return got


async def test_a_carrier_that_refuses_a_late_offer_is_joined_with_our_offer(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    # Session 52: the carrier answers our re-INVITE without SDP 488. Before, the join failed
    # and its leg was BYEd. Now the gateway offers it the call's media itself (the SDP it
    # last sent on the transferor's side, the next o= version, on the ports the carrier takes
    # over); the carrier's answer keeps the codec in use, so the transferee (the trunk's first
    # call) is not re-INVITEd at all.
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    call, alice_leg = await answered_call(env)
    port_to_alice = sdp_connection(env.alice.requests("INVITE")[0].body)[1]
    _, replaces = await consultation(env, "sip:+15550199@127.0.0.1:5060")
    trunk_consult = await env.trunk.next_call()
    await env.trunk.next_request("ACK")
    reinvites = refuse_late_offers(env, trunk_consult.call_id)
    assert await refer(alice_leg, f"<sip:+15550199@127.0.0.1:5060?Replaces={replaces}>") == 202
    await eventually_notify(env.alice, "SIP/2.0 200 OK")
    late, offered = reinvites
    assert late.body == b""
    assert_media_via_gateway(offered.body)
    assert sdp_connection(offered.body)[1] == port_to_alice  # the transferor's side's port
    assert_goes_on_from(trunk_consult.invite.body, offered.body)  # the carrier's session
    assert not [r for r in env.trunk.requests("INVITE") if r.call_id == call.call_id]
    assert [r for r in env.trunk.requests("ACK") if r.call_id == trunk_consult.call_id][
        -1
    ].body == b""
    await the_carrier_legs_are_the_call(env, alice_leg, call, trunk_consult)
    store = env.gateway.store
    assert store is not None
    await eventually(lambda: [r.ended_at for r in store.call_records_recent()][:1] != [None])
    records = [r for r in store.call_records_recent() if r.security and r.security.get("transfers")]
    assert records[0].security["transfers"][0]["status"] == 200  # type: ignore[index]


async def test_a_carrier_joined_with_our_offer_is_offered_only_the_codec_in_use(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    # Session 54: the trunk's caller offered PCMU and PCMA, alice answered PCMA. The carrier
    # answers our join offer with only its own choice among what we list, the first it takes
    # (as many do). Before, our offer listed both laws, PCMU first: its answer left out PCMA,
    # which the caller sends, and the join failed ("the codec in use, 8 PCMA/8000, left
    # out"). Now the offer lists only PCMA (and telephone-event): the carrier keeps it.
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=None)
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    alice_leg = await env.alice.next_call()
    pcma = simple_sdp("127.0.0.1", env.alice.media_port, formats=("8", "101"))
    await alice_leg.answer(200, sdp=pcma)
    assert (await call.final()).status == 200
    await env.alice.next_request("ACK")
    _, replaces = await consultation(env, "sip:+15550199@127.0.0.1:5060")
    trunk_consult = await env.trunk.next_call()
    await env.trunk.next_request("ACK")

    def its_first_codec(offer: bytes) -> bytes:
        first = parse_sdp_untrusted(offer).media[0].formats[0]
        return simple_sdp("127.0.0.1", env.trunk.media_port, version=9, formats=(first, "101"))

    reinvites = refuse_late_offers(env, trunk_consult.call_id, answer=its_first_codec)
    assert await refer(alice_leg, f"<sip:+15550199@127.0.0.1:5060?Replaces={replaces}>") == 202
    await eventually_notify(env.alice, "SIP/2.0 200 OK")
    late, offered = reinvites
    assert late.body == b""
    assert parse_sdp_untrusted(offered.body).media[0].formats == ("8", "101")
    await the_carrier_legs_are_the_call(env, alice_leg, call, trunk_consult)


def with_video(sdp: bytes, port: int) -> bytes:
    """``sdp`` with a video m= line after its audio (``port`` 0: rejected)."""
    return sdp + f"m=video {port} RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\n".encode()


async def test_a_carrier_joined_with_our_offer_keeps_the_consultation_calls_video_line(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    # Session 54: alice's consultation call had video (the carrier declined it), the call she
    # transfers has audio only. Our offer in the carrier's dialog keeps that dialog's video
    # line, at port 0 (RFC 3264 §8: no fewer m= lines than its previous SDP; §8.2): before,
    # it had the transferred call's one line.
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    call, alice_leg = await answered_call(env)
    env.trunk.auto = None
    consult = await env.alice.invite(
        "sip:+15550199@127.0.0.1:5060", sdp=with_video(env.alice.offer_sdp(), 4002)
    )
    assert (await consult.final()).status == 407
    await consult.authenticate()
    trunk_consult = await env.trunk.next_call()
    assert b"m=video" in trunk_consult.invite.body
    await trunk_consult.answer(sdp=with_video(env.trunk.answer_sdp(trunk_consult.invite.body), 0))
    assert (await consult.final(timeout=30)).status == 200
    await env.trunk.next_request("ACK")
    env.trunk.auto = AutoAnswer()

    def strictly(offer: bytes) -> bytes | None:
        if len(parse_sdp_untrusted(offer).media) < 2:
            return None  # a strict carrier: fewer lines than before, 488
        return with_video(env.trunk.answer_sdp(offer), 0)

    reinvites = refuse_late_offers(env, trunk_consult.call_id, answer=strictly)
    replaces = replaces_of(consult)
    assert await refer(alice_leg, f"<sip:+15550199@127.0.0.1:5060?Replaces={replaces}>") == 202
    await eventually(lambda: len(reinvites) >= 2)
    offers = [r.body for r in reinvites if r.body]
    media = parse_sdp_untrusted(offers[0]).media
    assert [(m.media, m.port == 0) for m in media] == [("audio", False), ("video", True)]
    assert_goes_on_from(trunk_consult.invite.body, offers[0])
    await eventually_notify(env.alice, "SIP/2.0 200 OK")
    await the_carrier_legs_are_the_call(env, alice_leg, call, trunk_consult)


async def test_a_held_transferee_is_taken_off_hold_when_the_carrier_is_joined_with_our_offer(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    # As above, but alice held the caller while she consulted (a=sendonly, RFC 3264 §8.4), as
    # receptionists' phones do. The carrier's offer, which would have taken the caller off
    # hold, never comes: our offer to the carrier is sendrecv, and the caller gets a
    # re-INVITE of ours, sendrecv, before alice hears "200 OK".
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    call, alice_leg = await answered_call(env)
    held = await alice_leg.reinvite(env.alice.offer_sdp(direction="sendonly"))
    assert held.status == 200
    [hold] = [r for r in env.trunk.requests("INVITE") if r.call_id == call.call_id]
    assert b"a=sendonly" in hold.body
    _, replaces = await consultation(env, "sip:+15550199@127.0.0.1:5060")
    trunk_consult = await env.trunk.next_call()
    await env.trunk.next_request("ACK")
    reinvites = refuse_late_offers(env, trunk_consult.call_id)
    assert await refer(alice_leg, f"<sip:+15550199@127.0.0.1:5060?Replaces={replaces}>") == 202
    await eventually_notify(env.alice, "SIP/2.0 200 OK")
    late, offered = reinvites
    assert late.body == b"" and b"a=sendrecv" in offered.body and b"a=sendonly" not in offered.body
    [_, resume] = [r for r in env.trunk.requests("INVITE") if r.call_id == call.call_id]
    assert b"a=sendrecv" in resume.body
    assert sdp_connection(resume.body) == sdp_connection(hold.body)  # its port kept
    assert env.gateway.calls is not None
    [gateway_call] = env.gateway.calls.calls
    assert gateway_call.media is not None and not gateway_call.media.on_hold
    assert (await alice_leg.bye()).status == 200
    await eventually(lambda: env.calls == 1)
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0 and env.call_lookups == 0)


async def test_a_carrier_that_refuses_our_offer_too_fails_the_join_and_the_call_goes_on(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    call, alice_leg = await answered_call(env)
    _, replaces = await consultation(env, "sip:+15550199@127.0.0.1:5060")
    trunk_consult = await env.trunk.next_call()
    await env.trunk.next_request("ACK")
    reinvites = refuse_late_offers(env, trunk_consult.call_id, refuse_offers=True)
    assert await refer(alice_leg, f"<sip:+15550199@127.0.0.1:5060?Replaces={replaces}>") == 202
    failed = await eventually_notify(env.alice, "SIP/2.0 488 Not Acceptable Here")
    assert failed.headers.get("Subscription-State") == "terminated;reason=noresource"
    assert [bool(r.body) for r in reinvites] == [False, True]
    bye = await env.trunk.next_request("BYE")  # the carrier's leg: its consultation is over
    assert bye.request.call_id == trunk_consult.call_id
    # The call goes on between the trunk's caller and alice, as after any failed transfer,
    # our SDP to alice going on from the last she got (the refused offer went in the
    # carrier's dialog only).
    await trio.sleep(1)
    assert env.calls == 1
    assert (await call.reinvite(env.trunk.offer_sdp(direction="sendonly"))).status == 200
    to_alice = [r.body for r in env.alice.requests("INVITE") if r.call_id == alice_leg.call_id]
    assert len(to_alice) == 2
    assert_goes_on_from(to_alice[0], to_alice[1])
    assert (await alice_leg.bye()).status == 200
    await eventually(lambda: env.calls == 0 and env.call_lookups == 0)
    assert not [r for r in env.trunk.requests("INVITE") if r.call_id == call.call_id]


@pytest.mark.parametrize("impairment", [0, 1, 2, 3])
async def test_a_join_over_a_lossy_network_completes(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    impairment: int,
) -> None:
    env = await lossy_b2bua(nursery, tmp_path, voipgw_seed + impairment)
    call, alice_leg = await answered_call(env)
    _, replaces = await consultation(env, "sip:+15550199@127.0.0.1:5060")
    trunk_consult = await env.trunk.next_call()
    refer_to = f"<sip:+15550199@127.0.0.1:5060?Replaces={replaces}>"
    exchange = await alice_leg.request("REFER", extra=[("Refer-To", refer_to)])
    assert (await exchange.final(timeout=30)).status == 202
    await eventually_notify(env.alice, "SIP/2.0 200 OK")
    await eventually(lambda: env.calls == 1, timeout=60)
    assert (await call.bye(timeout=30)).status == 200
    await eventually(
        lambda: any(r.call_id == trunk_consult.call_id for r in env.trunk.requests("BYE")),
        timeout=40,
    )
    await eventually(lambda: env.calls == 0, timeout=120)
    await trio.sleep(40)  # past every 2xx retransmission: each one was ACKed
    assert not env.trunk.never_acked and not env.alice.never_acked


async def test_an_attended_transfer_joins_a_carrier_that_called_the_transferor(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    # alice holds a call she made to bob (the transferee), takes a call from the carrier, and
    # transfers bob to it: the carrier's leg (the consultation's caller) joins bob's call.
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    bob = await bob_phone(env, nursery, voipgw_seed)
    to_bob = await alice_calls(env, "sip:bob@127.0.0.1:5060")
    bob_leg = await bob.next_call()
    from_carrier, alice_consult = await answered_call(env)
    replaces = replaces_of(alice_consult)
    assert await refer(to_bob, f"<sip:+15550100@127.0.0.1:5060?Replaces={replaces}>") == 202
    bye = await env.alice.next_request("BYE")
    assert bye.request.call_id == alice_consult.call_id  # the consultation ends at alice
    join = (await env.trunk.next_request("INVITE")).request
    assert join.call_id == from_carrier.call_id and join.body == b""
    reoffer = (await bob.next_request("INVITE")).request
    assert reoffer.call_id == bob_leg.call_id
    await eventually_notify(env.alice, "SIP/2.0 200 OK")
    # Our answer in the ACK goes on from the consultation call's 200 to the carrier.
    [ack] = [r for r in env.trunk.requests("ACK") if r.call_id == from_carrier.call_id and r.body]
    assert_goes_on_from((await from_carrier.final()).body, ack.body)
    assert (await to_bob.bye()).status == 200
    await eventually(lambda: env.calls == 1)
    # The carrier, the consultation's caller, now talks to bob: its BYE reaches him.
    assert (await from_carrier.bye()).status == 200
    assert (await bob.next_request("BYE")).request.call_id == bob_leg.call_id
    await eventually(lambda: env.calls == 0 and env.call_lookups == 0)
    await trio.sleep(40)  # past every 2xx retransmission: the carrier's was ACKed
    assert not env.trunk.never_acked and not bob.never_acked


async def test_a_password_in_the_refer_to_is_never_shown(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A Refer-To may carry userinfo with a password (RFC 3261 §19.1.1, however unwise): the
    # transfer's log lines and the call record name the target with it hidden.
    caplog.set_level("DEBUG", logger="gateway")
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    await bob_phone(env, nursery, voipgw_seed)
    call, alice_leg = await answered_call(env)
    assert await refer(alice_leg, "sip:bob:hunter2@127.0.0.1:5060") == 202
    await eventually_notify(env.alice, "SIP/2.0 200 OK")
    assert (await alice_leg.bye()).status == 200
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)
    store = env.gateway.store
    assert store is not None
    await eventually(lambda: [r.ended_at for r in store.call_records_recent()] != [None])
    [record] = store.call_records_recent()
    assert record.security is not None
    assert [t["to"] for t in record.security["transfers"]] == ["sip:bob:***@127.0.0.1:5060"]
    assert "transfers the call to sip:bob:***@" in caplog.text
    assert "hunter2" not in caplog.text
