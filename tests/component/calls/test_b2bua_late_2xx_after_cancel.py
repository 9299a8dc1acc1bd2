"""A final response that comes after the gateway gave up on a CANCELled INVITE (RFC 3261 §9.1:
64*T1 after the CANCEL with no final response, the transaction is considered cancelled).

The peer answered after all: the UAC core still ACKs that 2xx (§13.2.2.4, RFC 6026) and ends
the session nobody will use with BYE (§15), or the peer re-sends its 2xx for 64*T1 and keeps a
dialog (a callee's phone "in a call" with nobody) until it gives up. Each retransmission of the
2xx is ACKed again; the dialog is BYEd once (the BYE's own transaction re-sends it). The peer
refused after all: the client transaction ACKs the refusal and each copy of it (§17.1.1.3), or
the peer re-sends it until its Timer H.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from gateway.core.endpoint import ClientRequest
from gateway.core.sip.message import Request, Response
from gateway.core.sip.parser import parse_message_untrusted
from gateway.core.sip.transaction import State
from gateway.testing.sip_agent import Call, Received, SipAgent
from tests.component.calls.b2bua_env import (
    ALICE_DID,
    B2bua,
    answered_call,
    eventually,
    next_within,
    start_b2bua,
)
from tests.component.calls.b2bua_scenarios import second_phone
from tests.component.calls.cancel_give_up import GIVE_UP


async def test_a_2xx_to_a_cancelled_reinvite_after_the_give_up_is_acked(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    # Alice answers the gateway's copy of the trunk's re-INVITE 183, ignores its CANCEL, and
    # answers 200 once the gateway has given up on it (the call ended meanwhile).
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    call, _ = await answered_call(env)
    held: list[Received] = []

    async def only_183(received: Received) -> bool:
        if received.request.method != "INVITE":
            return False
        await env.alice.respond(received, 183, body=env.alice.answer_sdp(received.request.body))
        held.append(received)
        return True

    env.alice.in_dialog = only_183
    # 504, not 408: our BYE ends the trunk's side (RFC 5057 §5.1; reinvites.py).
    assert (await call.reinvite(env.trunk.offer_sdp(), timeout=2 * GIVE_UP)).status == 504
    await env.alice.next_request("CANCEL")
    await eventually(lambda: env.calls == 0)
    await trio.sleep(GIVE_UP)
    reinvite = held[0].request
    await env.alice.respond(held[0], 200, body=env.alice.answer_sdp(reinvite.body))
    ack = await next_within(env.alice, "ACK", 5)
    while ack is not None and ack.request.cseq.number != reinvite.cseq.number:
        ack = await next_within(env.alice, "ACK", 5)  # the call's first ACK
    assert ack is not None
    assert env.alice.awaiting_ack == []


async def test_a_callee_answering_after_the_give_up_on_its_cancel_is_acked_and_byed(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Alice's phone rings; the trunk hangs up (CANCEL); the phone answers the gateway's CANCEL
    # 200 but never ends its INVITE with 487, and picks up after the gateway has given up.
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=None)
    delivered: list[tuple[str, int]] = []
    deliver = ClientRequest._deliver

    def spy(self: ClientRequest, response: Response) -> bool:
        delivered.append((response.cseq.method, response.status))
        return deliver(self, response)

    monkeypatch.setattr(ClientRequest, "_deliver", spy)
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    leg_b = await env.alice.next_call()
    await leg_b.ring()
    assert call.exchange is not None
    await eventually(lambda: 180 in call.exchange.statuses)
    assert leg_b.incoming is not None and leg_b.incoming.transaction is not None
    # The agent would answer its INVITE 487 on the CANCEL (§9.2): this phone does not.
    del env.alice._by_invite[leg_b.incoming.transaction]
    await call.cancel()
    assert (await call.final()).status == 487
    await env.alice.next_request("CANCEL")
    # The call drains its B leg until the give-up (64*T1 after the CANCEL), then ends.
    await eventually(lambda: env.calls == 0, timeout=2 * GIVE_UP)
    # The give-up reached the call as a timeout (RFC 3261 §8.1.3.1: 408), its leg's final.
    assert ("INVITE", 408) in delivered
    await trio.sleep(1)
    await leg_b.answer(200)
    assert await next_within(env.alice, "ACK", 5) is not None
    bye = await next_within(env.alice, "BYE", 5)
    assert bye is not None
    assert env.alice.awaiting_ack == []


async def test_a_phone_answering_after_the_give_up_while_the_call_goes_on_is_acked_and_byed(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    # Parallel ringing: the second phone answers, the first is CANCELled ("completed
    # elsewhere"), ignores the CANCEL, and picks up once the gateway gave its INVITE up (a 408
    # for that leg). The call, still up, holds that leg's responses: the 2xx is its to ACK
    # and BYE (§13.2.2.4, §15), as a late fork's answer.
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=None)
    phone2 = await second_phone(env, nursery, voipgw_seed)
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    leg1 = await env.alice.next_call(timeout=1)
    leg2 = await phone2.next_call(timeout=1)
    await leg1.ring()
    assert leg1.incoming is not None and leg1.incoming.transaction is not None
    del env.alice._by_invite[leg1.incoming.transaction]  # no 487 on the CANCEL (see above)
    await leg2.ring()
    await leg2.answer()
    assert (await call.final()).status == 200
    await env.alice.next_request("CANCEL", timeout=1)
    await trio.sleep(GIVE_UP)
    await leg1.answer(200)
    assert await next_within(env.alice, "ACK", 5) is not None
    assert await next_within(env.alice, "BYE", 5) is not None
    assert env.alice.awaiting_ack == []
    assert env.calls == 1  # the call with the second phone goes on
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)


def acks_and_byes(env: B2bua, phone: SipAgent, cseq: int) -> tuple[int, int]:
    """ACKs of the INVITE with CSeq ``cseq`` that reached ``phone`` on the wire (the ACK of a
    non-2xx ends the phone's INVITE transaction, which does not report it as a request), and
    the BYE transactions it got (a BYE's retransmissions are one)."""
    acks = [
        message
        for d in env.network.deliveries
        if d.dst == phone.address
        and d.data.startswith(b"ACK ")
        and isinstance(message := parse_message_untrusted(d.data), Request)
    ]
    return sum(ack.cseq.number == cseq for ack in acks), len(phone.requests("BYE"))


async def retransmit(env: B2bua, phone: SipAgent, status: int) -> None:
    """Send the phone's last ``status`` response to an INVITE again, byte for byte: a
    retransmission (Timer G, or a 2xx's §13.3.1.4 one) that crossed our ACK, or whose ACK was
    lost."""
    first_line = f"SIP/2.0 {status} ".encode()
    sent = [
        d
        for d in env.network.capture
        if d.src == phone.address
        and d.data.startswith(first_line)
        and parse_message_untrusted(d.data).cseq.method == "INVITE"
    ]
    await phone.socket.sendto(sent[-1].data, sent[-1].dst)
    await trio.sleep(1)


async def given_up_call(
    env: B2bua, monkeypatch: pytest.MonkeyPatch
) -> tuple[Call, list[tuple[str, int]]]:
    """A call to Alice's phone, which rings, answers the trunk's CANCEL 200 but never ends its
    INVITE with 487; the gateway gives the INVITE up 64*T1 after its CANCEL (§9.1) and the
    call ends. Returns the phone's call and the responses the gateway's TU got from then on,
    as (method, status), the 408 of the give-up first."""
    delivered: list[tuple[str, int]] = []
    deliver = ClientRequest._deliver

    def spy(self: ClientRequest, response: Response) -> bool:
        delivered.append((response.cseq.method, response.status))
        return deliver(self, response)

    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    leg_b = await env.alice.next_call()
    await leg_b.ring()
    assert call.exchange is not None
    await eventually(lambda: 180 in call.exchange.statuses)
    assert leg_b.incoming is not None and leg_b.incoming.transaction is not None
    del env.alice._by_invite[leg_b.incoming.transaction]  # no 487 on the CANCEL
    monkeypatch.setattr(ClientRequest, "_deliver", spy)
    await call.cancel()
    assert (await call.final()).status == 487
    await env.alice.next_request("CANCEL")
    await eventually(lambda: env.calls == 0, timeout=2 * GIVE_UP)
    assert ("INVITE", 408) in delivered
    del delivered[: delivered.index(("INVITE", 408)) + 1]
    await trio.sleep(1)
    return leg_b, delivered


async def test_a_refusal_after_the_give_up_is_acked_each_time_it_comes(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The phone that ignored the CANCEL refuses late: 486. RFC 3261 §17.1.1.3: the client
    # transaction ACKs every non-2xx final response; unACKed, the phone re-sends it until its
    # Timer H (32 s) and holds its transaction. A copy crossing our ACK is ACKed again.
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=None)
    leg_b, delivered = await given_up_call(env, monkeypatch)
    await leg_b.answer(486)
    txn = leg_b.incoming.transaction if leg_b.incoming is not None else None
    assert txn is not None
    await eventually(lambda: txn.state is State.CONFIRMED)  # our ACK ended its Timer G
    assert acks_and_byes(env, env.alice, leg_b.invite.cseq.number) == (1, 0)
    await retransmit(env, env.alice, 486)
    assert acks_and_byes(env, env.alice, leg_b.invite.cseq.number) == (2, 0)
    # The ACK of a non-2xx is hop-by-hop, the INVITE's own (§17.1.1.3): its Request-URI,
    # Call-ID, From, CSeq number and top Via (branch), the To of the 486.
    ack = parse_message_untrusted(
        next(
            d.data
            for d in env.network.deliveries
            if d.dst == env.alice.address and d.data.startswith(b"ACK ")
        )
    )
    invite = leg_b.invite
    assert isinstance(ack, Request)
    assert (ack.uri, ack.call_id, ack.cseq.number) == (
        invite.uri,
        invite.call_id,
        invite.cseq.number,
    )
    assert ack.from_ == invite.from_ and ack.to.tag == leg_b.local_tag
    assert len(ack.headers.get_all("Via")) == 1 and ack.top_via.branch == invite.top_via.branch
    # The call had its final response (the give-up's 408): the 486 is not passed up again.
    assert delivered == []


async def test_a_late_2xx_sent_again_is_acked_again_and_byed_once(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The phone picks up after the give-up; its 2xx comes again (our ACK was lost): the UAC
    # core ACKs each copy (§13.2.2.4), but the dialog has one BYE, whose own client
    # transaction re-sends it; a second BYE is a second transaction the phone answers 481.
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=None)
    leg_b, _ = await given_up_call(env, monkeypatch)
    await leg_b.answer(200)
    assert await next_within(env.alice, "BYE", 5) is not None
    assert acks_and_byes(env, env.alice, leg_b.invite.cseq.number) == (1, 1)
    await retransmit(env, env.alice, 200)
    await retransmit(env, env.alice, 200)
    assert acks_and_byes(env, env.alice, leg_b.invite.cseq.number) == (3, 1)


async def test_a_late_2xx_of_a_call_that_goes_on_sent_again_is_byed_once(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    # As above, for the first phone of parallel ringing, whose call (answered by the second
    # phone) holds its responses and BYEs its late 2xx; its 2xx comes again while the call
    # goes on, and once the call has ended (the endpoint ACKs it then, and must not BYE it).
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=None)
    phone2 = await second_phone(env, nursery, voipgw_seed)
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    leg1 = await env.alice.next_call(timeout=1)
    leg2 = await phone2.next_call(timeout=1)
    await leg1.ring()
    assert leg1.incoming is not None and leg1.incoming.transaction is not None
    del env.alice._by_invite[leg1.incoming.transaction]  # no 487 on the CANCEL
    await leg2.ring()
    await leg2.answer()
    assert (await call.final()).status == 200
    await env.alice.next_request("CANCEL", timeout=1)
    await trio.sleep(GIVE_UP)
    await leg1.answer(200)
    assert await next_within(env.alice, "BYE", 5) is not None
    cseq = leg1.invite.cseq.number
    assert acks_and_byes(env, env.alice, cseq) == (1, 1)
    await retransmit(env, env.alice, 200)
    assert acks_and_byes(env, env.alice, cseq) == (2, 1)
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)
    await retransmit(env, env.alice, 200)
    assert acks_and_byes(env, env.alice, cseq) == (3, 1)
