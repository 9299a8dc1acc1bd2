"""Mutated requests and responses inside established dialogs, from the dialogs' real peers
(the robustness rule: bad input gets a clear answer and loses nothing; nothing from the network
crashes the gateway or another call).

test_b2bua_fuzzed_input sends a stranger's mutated messages; this module sends what only a
call's own peers can: messages with the right Call-ID, tags, source address and a plausible
CSeq, where the call state machine, not the parser, decides. A call trunk -> alice is answered,
and a second one (the bystander) runs alongside. A seeded stream then picks, per message, a side
(the trunk's leg A or alice's leg B) and a valid in-dialog message made by that side's own
dialog -- re-INVITE and UPDATE with and without SDP and with session-timer headers, INFO with
DTMF bodies, REFER with Refer-To/Replaces/Referred-By, NOTIFY with a sipfrag, PRACK, BYE,
CANCEL, MESSAGE, OPTIONS, ACK -- and mutates one header or the body (its Content-Length kept
right, so the body's reader is what is tested), or the whole message as bytes
(tests/unit/fuzz/mutator.py), or sends it as it is. Some turns instead have one side send a valid
request and the other answer the gateway's forwarded copy with a mutated response (a 2xx with
bad SDP, 491, a 1xx with SDP, a wrong CSeq); some send two re-INVITEs at once (glare); some
have alice transfer the trunk with a valid REFER and answer the gateway's NOTIFYs about it
with mutated responses.

After each message: the request got exactly one final response (the status the parser names,
with a reason, when it refuses the message), responses and ACKs got none; nothing was logged at
error level and no internal error was counted; and the fuzzed call is either still in the call
manager or was ended with a BYE to each leg that did not end it itself (a new one is then made).
Every few messages the fuzzed call still answers an in-dialog OPTIONS and the bystander a
re-INVITE. At the end both calls hang up, and the call manager, the endpoint's transaction and
flow tables and the media port allocator are back to their size before the calls.

VOIPGW_FUZZ_EXAMPLES (docs/testing.md) scales the number of messages (a twentieth of it: 50 in
CI); VOIPGW_FUZZ_SEED moves the stream; ``--voipgw-seed`` picks the network's and the ids'.
A failure names the message number, its bytes and what came back.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from gateway.core.sip.message import Request, Response, make_response
from gateway.core.sip.serializer import serialize_message
from gateway.testing.sip_agent import SDP, AutoAnswer, Call, Received, SipAgent
from tests.component.calls.b2bua_env import (
    ALICE,
    GW,
    T1,
    TRUNK,
    B2bua,
    answered_call,
    eventually,
    start_b2bua,
)
from tests.component.calls.fuzz_checks import (
    DTMF_RELAY,
    HEADER_JUNK,
    MAX_UDP,
    SIPFRAG,
    WINDOW,
    _byes_to,
    _expected,
    _parsed,
    _responses_to,
    error_records,
    leftovers,
    mutate_field,
    mutate_message,
    table_sizes,
)
from tests.unit.fuzz.mutator import base_seed, examples
from tests.unit.fuzz.mutator import mutate as mutate_bytes

RESPONSE_WINDOW = 2 * 64 * T1 + 2.0
HEALTH_EVERY = 10
MAX_CSEQ = 2**31 - 1  # RFC 3261 §8.1.1.5: a CSeq number is below 2**31


DTMF = b"5"


# -- what one side sends in its dialog ------------------------------------------------------------

Seed = tuple[str, list[tuple[str, str]], bytes, str | None]  # method, extra headers, body, type


def _seeds(agent: SipAgent, rng: random.Random) -> dict[str, Callable[[], Seed]]:
    """Valid in-dialog messages by kind, made fresh each time (a new SDP version)."""
    timer = [("Supported", "timer"), ("Session-Expires", "90;refresher=uac"), ("Min-SE", "90")]
    return {
        "re-INVITE": lambda: ("INVITE", [], agent.offer_sdp(), SDP),
        "re-INVITE hold": lambda: ("INVITE", [], agent.offer_sdp(direction="sendonly"), SDP),
        "re-INVITE without SDP": lambda: ("INVITE", [], b"", None),
        "re-INVITE timer": lambda: ("INVITE", timer, agent.offer_sdp(), SDP),
        "UPDATE": lambda: ("UPDATE", [], agent.offer_sdp(), SDP),
        "UPDATE timer": lambda: ("UPDATE", timer, b"", None),
        "INFO dtmf-relay": lambda: ("INFO", [], DTMF_RELAY, "application/dtmf-relay"),
        "INFO dtmf": lambda: ("INFO", [], DTMF, "application/dtmf"),
        "REFER": lambda: (
            "REFER",
            [
                ("Refer-To", rng.choice(HEADER_JUNK["Refer-To"][:4])),
                ("Referred-By", "<sip:alice@127.0.0.1>"),
            ],
            b"",
            None,
        ),
        "NOTIFY sipfrag": lambda: (
            "NOTIFY",
            [("Event", "refer"), ("Subscription-State", "active;expires=60")],
            rng.choice([SIPFRAG, b"SIP/2.0 100 Trying\r\n", b"SIP/2.0 503 Unavailable\r\n"]),
            "message/sipfrag;version=2.0",
        ),
        "PRACK": lambda: ("PRACK", [("RAck", "1 1 INVITE")], b"", None),
        "MESSAGE": lambda: ("MESSAGE", [], "héllo".encode(), "text/plain;charset=utf-8"),
        "OPTIONS": lambda: ("OPTIONS", [("Accept", "application/sdp")], b"", None),
        "BYE": lambda: ("BYE", [("Reason", "Q.850;cause=16")], b"", None),
        "ACK": lambda: ("ACK", [], b"", None),
        "CANCEL": lambda: ("CANCEL", [("Reason", "SIP;cause=200")], b"", None),
    }


def _build(call: Call, seed: Seed) -> Request:
    method, extra, body, content_type = seed
    assert call.dialog is not None
    if method == "ACK":  # an ACK of no 2xx (a stray or a late duplicate)
        return call.dialog.create_ack(call.dialog.local_seq or 1, via=call.agent.new_via())
    request = call.dialog.create_request(
        "OPTIONS" if method == "CANCEL" else method,
        via=call.agent.new_via(),
        contact=call.agent.contact if method in ("INVITE", "UPDATE") else None,
        extra=extra,
        body=body,
        content_type=content_type,
    )
    if method == "CANCEL":  # a CANCEL of nothing pending (RFC 3261 §9.2: 481), in dialog
        cseq = request.cseq.number
        request = Request("CANCEL", request.uri, request.headers.set("CSeq", f"{cseq} CANCEL"))
    return request


# -- what the gateway owes ---------------------------------------------------------------------


class MutatedAnswers:
    """An agent's :attr:`SipAgent.in_dialog` hook: while armed, the next request the gateway
    forwards into the dialog is answered with a mutated response, sent as bytes (the agent's
    transaction never sees it); while ``notifies`` is above 0, so is each NOTIFY the gateway
    sends about a transfer the agent asked for (RFC 3515 §2.4.5)."""

    def __init__(self, agent: SipAgent, rng: random.Random) -> None:
        self.agent = agent
        self.rng = rng
        self.armed = False
        self.notifies = 0
        self.sent: list[bytes] = []
        agent.in_dialog = self

    async def __call__(self, received: Received) -> bool:
        if self.notifies > 0 and received.request.method == "NOTIFY":
            self.notifies -= 1
        elif not self.armed or received.request.method in ("ACK", "BYE", "CANCEL"):
            return False
        else:
            self.armed = False
        request, rng = received.request, self.rng
        call = received.call
        tag = call.local_tag if call is not None else "x"
        status = rng.choice([200, 200, 200, 183, 491, 488, 500, 202, 301])
        body = b""
        if status in (200, 183) and request.body:
            body = self.agent.answer_sdp(request.body)
        elif status == 200 and request.method == "INVITE":
            body = self.agent.offer_sdp()  # a late re-offer: the 2xx offers
        extra = [("Contact", str(self.agent.contact))] if request.method == "INVITE" else []
        if status == 500:
            extra.append(("Retry-After", rng.choice(["5", "x", "-1", "99999999999"])))
        response = make_response(
            request,
            status,
            to_tag=tag,
            extra=extra,
            body=body,
            content_type=SDP if body else None,
        )
        data = serialize_message(response)
        how = rng.random()
        if how < 0.5:
            data = mutate_field(data, rng)[:MAX_UDP]
        elif how < 0.8:
            data = mutate_bytes(rng, [data])[:MAX_UDP]
        elif how < 0.9:  # the right response with a CSeq of another request
            data = data.replace(b"\r\nCSeq: ", b"\r\nCSeq: 1", 1)
        self.sent.append(data)
        await self.agent.socket.sendto(data, GW)
        return True


async def _ack_2xx(env: B2bua, call: Call, request: Request, start: int) -> None:
    """ACK the gateway's 2xx to ``request``, a re-INVITE sent as bytes (RFC 3261 §13.2.2.4);
    answering an offer in it (a re-INVITE without SDP)."""
    assert call.dialog is not None
    acked: set[bytes] = set()
    for answer in _responses_to(env, call.agent.address, start):
        if not answer.startswith(b"SIP/2.0 2") or b" INVITE\r\n" not in answer:
            continue
        response = _parsed(answer)
        if not isinstance(response, Response) or response.cseq.method != "INVITE":
            continue
        if response.call_id != call.call_id or answer in acked:
            continue
        acked.add(answer)
        body = b""
        if response.body and not request.body:
            body = call.agent.answer_sdp(response.body)
        ack = call.dialog.create_ack(
            response.cseq.number,
            via=call.agent.new_via(),
            body=body,
            content_type=SDP if body else None,
        )
        await call.agent.socket.sendto(serialize_message(ack), GW)


class Campaign:
    """The fuzzed call, its bystander, and the counts of what was sent."""

    def __init__(self, env: B2bua, rng: random.Random) -> None:
        self.env = env
        self.rng = rng
        self.sent: dict[str, int] = {}
        self.outcomes: dict[str, int] = {}
        self.calls_made = 0
        self.calls_ended = 0
        self.hooks = {
            TRUNK: MutatedAnswers(env.trunk, rng),
            ALICE: MutatedAnswers(env.alice, rng),
        }

    async def new_call(self) -> tuple[Call, Call]:
        for agent in (self.env.alice, self.env.trunk):
            for received in agent.received:
                received.taken = True  # next_call() finds this call's INVITE
        self.calls_made += 1
        return await answered_call(self.env)

    def count(self, table: dict[str, int], key: str) -> None:
        table[key] = table.get(key, 0) + 1


async def _turn(
    campaign: Campaign, number: int, legs: tuple[Call, Call], where: list[str]
) -> str | None:
    """One mutated message from one side's real peer; returns who sent it when it was a BYE
    the gateway took (that side ended its leg itself), else None."""
    env, rng = campaign.env, campaign.rng
    side = rng.randrange(2)
    call = legs[side]
    agent = call.agent
    kinds = _seeds(agent, rng)
    kind = rng.choice(sorted(kinds))
    request = _build(call, kinds[kind]())
    how, data = mutate_message(serialize_message(request), rng)
    campaign.count(campaign.sent, f"{request.method} {how}")
    expected = _expected(data)
    parsed = _parsed(data)
    where.append(f"message {number}: {agent.user} {kind} ({how}): {data[:3000]!r}")
    del where[:-8]  # what a failure shows; a long campaign keeps no more
    start = len(env.network.capture)
    await agent.socket.sendto(data, GW)
    for _ in range(int(WINDOW / 0.5)):
        await trio.sleep(0.5)
        if isinstance(parsed, Request) and parsed.method == "INVITE":
            await _ack_2xx(env, call, parsed, start)  # before the 2xx's retransmissions end
    answers = _responses_to(env, agent.address, start)
    statuses = [int(a[8:11]) for a in answers if a[8:11].isdigit()]
    finals = [s for s in statuses if s >= 200]
    where.append(f"  got {statuses}")
    failure = "\n".join(where[-2:])  # a string: pytest shows it whole
    if expected == "none":
        assert finals == [], failure
    elif expected == "final":
        assert len(set(finals)) == 1, failure
    else:
        assert finals == [int(expected)], failure
        assert answers[-1].split(b"\r\n", 1)[0][12:].strip(), failure  # names the defect
    campaign.count(campaign.outcomes, expected if expected != "final" else f"final {finals[0]}")
    # Keep the peer's CSeq above anything the gateway may have taken (RFC 3261 §12.2.2).
    if (
        isinstance(parsed, Request)
        and parsed.call_id == call.call_id
        and call.dialog is not None
        and parsed.method not in ("ACK", "CANCEL")
    ):
        call.dialog.local_seq = max(call.dialog.local_seq or 0, parsed.cseq.number)
    if isinstance(parsed, Request) and parsed.method == "BYE" and finals and finals[0] < 300:
        return agent.user  # it ended its leg itself
    return None


async def _response_turn(
    campaign: Campaign, number: int, legs: tuple[Call, Call], where: list[str]
) -> None:
    """A valid request from one side; the other answers the gateway's copy with a mutated
    response. The sender still gets exactly one final response."""
    rng = campaign.rng
    side = rng.randrange(2)
    call, other = legs[side], legs[1 - side]
    hook = campaign.hooks[other.agent.address]
    hook.armed = True
    method = rng.choice(["INVITE", "INVITE", "UPDATE", "INFO", "OPTIONS", "MESSAGE"])
    body, content_type = b"", None
    if method in ("INVITE", "UPDATE") and rng.random() < 0.8:
        body, content_type = call.agent.offer_sdp(), SDP
    elif method == "INFO":
        body, content_type = DTMF_RELAY, "application/dtmf-relay"
    campaign.count(campaign.sent, f"response to {method}")
    exchange = await call.request(method, body=body, content_type=content_type)
    where.append(f"message {number}: {call.agent.user} {method}, mutated answer")
    try:
        final = await exchange.final(timeout=RESPONSE_WINDOW)
    except trio.TooSlowError:
        raise AssertionError(f"never answered: {where[-1]} {hook.sent[-1:]!r}") from None
    hook.armed = False
    where.append(f"  answered {hook.sent[-1:]!r}, got {final.status}")
    campaign.count(campaign.outcomes, f"relayed {final.status}")
    await trio.sleep(RESPONSE_WINDOW)


async def _transfer_turn(
    campaign: Campaign, number: int, legs: tuple[Call, Call], where: list[str]
) -> None:
    """alice transfers the trunk (a valid REFER, RFC 3515; a trunk's REFER gets 403) and answers
    the gateway's NOTIFYs about it with mutated responses: its REFER still gets one final
    response, and the transfer goes on or fails without an error."""
    hook = campaign.hooks[ALICE]
    hook.notifies = 3
    campaign.count(campaign.sent, "REFER, NOTIFYs answered mutated")
    refer = await legs[1].request(
        "REFER",
        extra=[
            ("Refer-To", "<sip:+15550199@127.0.0.1:5060>"),
            ("Referred-By", "<sip:alice@127.0.0.1>"),
        ],
    )
    where.append(f"message {number}: alice REFER, mutated answers to the NOTIFYs")
    try:
        final = await refer.final(timeout=RESPONSE_WINDOW)
    except trio.TooSlowError:
        raise AssertionError(f"never answered: {where[-1]}") from None
    await trio.sleep(RESPONSE_WINDOW)
    hook.notifies = 0
    where.append(f"  got {final.status}, answered the NOTIFYs {hook.sent[-3:]!r}")
    campaign.count(campaign.outcomes, f"transfer {final.status}")


async def _glare(campaign: Campaign, legs: tuple[Call, Call], where: list[str]) -> None:
    """Both sides re-INVITE at once (RFC 3261 §14.1): each gets a final response."""
    campaign.count(campaign.sent, "glare re-INVITE pair")
    statuses: list[int] = []

    async def reinvite(call: Call) -> None:
        statuses.append(
            (await call.reinvite(call.agent.offer_sdp(), timeout=RESPONSE_WINDOW)).status
        )

    where.append("glare")
    async with trio.open_nursery() as nursery:
        for call in legs:
            nursery.start_soon(reinvite, call)
    where.append(f"  got {statuses}")
    await trio.sleep(WINDOW)


async def _still_works(env: B2bua, legs: tuple[Call, Call], where: list[str]) -> None:
    options = await legs[0].request("OPTIONS")
    assert (await options.final(timeout=WINDOW)).status < 300, where[-4:]


def _gone(leg: Call) -> bool:
    return leg.dialog is None or leg.dialog.state.value == "terminated"


async def run_campaign(
    env: B2bua, rng: random.Random, caplog: pytest.LogCaptureFixture, count: int
) -> Campaign:
    campaign = Campaign(env, rng)
    bystander, bystander_b = await campaign.new_call()
    legs = await campaign.new_call()
    where: list[str] = []
    for number in range(count):
        # Each turn looks at what was sent since it began: a long campaign keeps no more.
        env.network.capture.clear()
        env.network.deliveries.clear()
        call_id = legs[0].call_id
        start = len(env.network.capture)
        draw = rng.random()
        ended_by: str | None = None
        if draw < 0.15:
            await _response_turn(campaign, number, legs, where)
        elif draw < 0.18:
            await _glare(campaign, legs, where)
        elif draw < 0.23:
            await _transfer_turn(campaign, number, legs, where)
        else:
            ended_by = await _turn(campaign, number, legs, where)
        errors = error_records(caplog)
        caplog.clear()  # looked at: a long campaign keeps no more
        assert errors == [], (where[-3:], errors)
        assert env.gateway.endpoint.statistics.internal_errors == 0, where[-3:]
        assert bystander.call_id in {c.id for c in env.gateway.calls.calls}, where[-3:]  # type: ignore[union-attr]
        if call_id not in {c.id for c in env.gateway.calls.calls}:  # type: ignore[union-attr]
            # Ended: each leg that did not send the BYE itself got one (RFC 3261 §15).
            campaign.calls_ended += 1
            for leg, peer in ((legs[0], TRUNK), (legs[1], ALICE)):
                if ended_by != leg.agent.user:
                    assert _byes_to(env, peer, leg.call_id, start) >= 1, (where[-3:], peer)
            await trio.sleep(WINDOW)
            legs = await campaign.new_call()
        elif any(_gone(leg) for leg in legs):
            # One leg was let go (a transfer's transferor gets BYE, RFC 5589 §6.1), the call
            # going on with a new one: the remaining leg hangs up.
            campaign.count(campaign.outcomes, "one leg let go")
            for leg in legs:
                if not _gone(leg):
                    await leg.bye(timeout=WINDOW)
            await eventually(lambda: len(env.gateway.calls.calls) == 1, timeout=WINDOW)  # type: ignore[union-attr]
            await trio.sleep(WINDOW)
            legs = await campaign.new_call()
        elif (legs[0].dialog and (legs[0].dialog.local_seq or 0) > MAX_CSEQ - 1000) or (
            legs[1].dialog and (legs[1].dialog.local_seq or 0) > MAX_CSEQ - 1000
        ):
            # A peer that took its CSeq to the top can send nothing more (RFC 3261 §8.1.1.5):
            # the other side hangs up.
            for leg in legs:
                if leg.dialog and (leg.dialog.local_seq or 0) <= MAX_CSEQ - 1000:
                    await leg.bye(timeout=WINDOW)
                    break
            await eventually(lambda: len(env.gateway.calls.calls) == 1, timeout=WINDOW)  # type: ignore[union-attr]
            await trio.sleep(WINDOW)
            legs = await campaign.new_call()
        elif number % HEALTH_EVERY == HEALTH_EVERY - 1:
            await _still_works(env, legs, where)
        if number % HEALTH_EVERY == HEALTH_EVERY - 1:
            status = (await bystander.reinvite(env.trunk.offer_sdp(), timeout=WINDOW)).status
            assert status == 200, where[-3:]
    assert (await bystander.bye(timeout=WINDOW)).status == 200
    for leg in legs:
        if leg.dialog is not None and leg.dialog.state.value != "terminated":
            await leg.bye(timeout=WINDOW)
            break
    del bystander_b
    return campaign


async def test_mutated_in_dialog_messages_from_the_real_peers(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    env = await start_b2bua(
        nursery, tmp_path, voipgw_seed, inactivity_timeout=10**7, hold_timeout=10**7
    )
    env.trunk.auto = AutoAnswer()  # it answers re-INVITEs the gateway forwards
    await trio.sleep(WINDOW)  # the registration's transactions are over
    before = table_sizes(env)
    rng = random.Random(f"in-dialog:{voipgw_seed}:{base_seed()}")
    campaign = await run_campaign(env, rng, caplog, max(40, examples() // 20))
    await trio.sleep(2 * WINDOW + 10)  # every transaction and 2xx retransmission is over
    await eventually(lambda: table_sizes(env)["calls"] == 0)
    assert table_sizes(env) == before, leftovers(env)
    assert error_records(caplog) == []
    assert env.gateway.endpoint.statistics.internal_errors == 0
    print("in-dialog sent:", dict(sorted(campaign.sent.items())))
    print("in-dialog outcomes:", dict(sorted(campaign.outcomes.items())))
    print(f"calls made {campaign.calls_made}, ended by the fuzz {campaign.calls_ended}")


async def test_a_peer_that_ignores_the_cancel_of_a_reinvite_leaves_no_transaction(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # What the campaign found: alice answered the gateway's copy of the trunk's re-INVITE with
    # 183 and nothing more, and answered its CANCEL 200 but never sent the 487. The call ended
    # (504 to the trunk, BYE to both) but the INVITE client transaction towards alice stayed in
    # Proceeding for ever (RFC 3261 §9.1 destroys it 64*T1 after the CANCEL).
    caplog.set_level(logging.INFO)
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    await trio.sleep(WINDOW)
    before = table_sizes(env)
    call, _ = await answered_call(env)

    async def only_183(received: Received) -> bool:
        if received.request.method != "INVITE":
            return False
        await env.alice.respond(received, 183, body=env.alice.answer_sdp(received.request.body))
        return True

    env.alice.in_dialog = only_183
    assert (await call.reinvite(env.trunk.offer_sdp(), timeout=2 * WINDOW)).status == 504
    await env.alice.next_request("CANCEL")  # the gateway CANCELled its re-INVITE
    await eventually(lambda: env.calls == 0)
    await trio.sleep(3 * WINDOW)
    assert table_sizes(env) == before
    assert error_records(caplog) == []


async def test_an_in_dialog_request_with_another_from_tag_gets_481_and_the_call_goes_on(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # What the campaign found: the call's Call-ID and our To tag with another From tag found
    # the call (the manager looks calls up by Call-ID and To tag) but not its leg's dialog,
    # whose check raised: the call ended with "internal error" (logged at ERROR). RFC 3261
    # §12.2.2: a request that matches no dialog gets 481.
    caplog.set_level(logging.INFO)
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    call, _ = await answered_call(env)
    assert call.dialog is not None
    info = call.dialog.create_request(
        "INFO", via=env.trunk.new_via(), body=DTMF, content_type="application/dtmf"
    )
    from_ = info.from_.with_tag("another")
    data = serialize_message(info.with_headers(info.headers.set("From", str(from_))))
    start = len(env.network.capture)
    await env.trunk.socket.sendto(data, GW)
    await trio.sleep(WINDOW)
    assert [a[:11] for a in _responses_to(env, TRUNK, start)] == [b"SIP/2.0 481"]
    assert error_records(caplog) == []
    assert env.calls == 1
    assert (await (await call.request("OPTIONS")).final()).status == 200
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)


async def test_a_call_ended_during_a_reinvite_cancels_it_and_leaves_no_transaction(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # What the campaign found next: alice answered the gateway's copy of the trunk's re-INVITE
    # with 183 only, then the trunk hung up. The trunk's re-INVITE got 481, both legs BYE, but
    # the re-INVITE towards alice was never CANCELled and (alice not answering it 487 after the
    # BYE, as RFC 3261 §15.1.2 recommends) its transaction stayed in Proceeding for ever.
    caplog.set_level(logging.INFO)
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    await trio.sleep(WINDOW)
    before = table_sizes(env)
    call, _ = await answered_call(env)

    async def only_183(received: Received) -> bool:
        if received.request.method != "INVITE":
            return False
        await env.alice.respond(received, 183, body=env.alice.answer_sdp(received.request.body))
        return True

    env.alice.in_dialog = only_183
    reinvite = await call.request("INVITE", body=env.trunk.offer_sdp(), content_type=SDP)
    await trio.sleep(2)
    assert (await call.bye()).status == 200
    assert (await reinvite.final()).status == 481
    await env.alice.next_request("CANCEL")
    await eventually(lambda: env.calls == 0)
    await trio.sleep(3 * WINDOW)
    assert table_sizes(env) == before, leftovers(env)
    assert error_records(caplog) == []
