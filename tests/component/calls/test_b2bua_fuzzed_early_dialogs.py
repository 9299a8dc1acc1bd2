"""Mutated PRACKs and reliable provisional responses in early dialogs (RFC 3262), from the
dialogs' own peers: the paths test_b2bua_fuzzed_dialogs (confirmed dialogs) does not reach.

Each round is a new call trunk -> alice whose caller requires 100rel (``Require: 100rel``, so
the gateway's 1xx to it are reliable and want PRACKs) and whose callee sends a reliable 183
with SDP (which the gateway PRACKs itself, RFC 3262 §4). A seeded stream then sends a few
messages in the early dialogs: the trunk's PRACK for the gateway's reliable 1xx (its RAck right,
or naming another RSeq or CSeq), or alice's next reliable 180/183 (the next RSeq, a repeated
one, or one skipping), each mutated as in test_b2bua_fuzzed_dialogs (one field, the whole
message as bytes, or sent as it is). The round ends with alice answering (at times first
with a mutated 200), refusing, or the trunk cancelling; an answered call is hung up.

After each message: a request got exactly one final response (the status the parser names
when it refuses the message), a response got none; nothing was logged at error level and no
internal error was counted; a bystander call answered before the rounds goes on (it answers a
re-INVITE every few rounds). At the end the call manager, the endpoint's transaction and flow
tables and the media port allocator are back to their size before the calls.

VOIPGW_FUZZ_EXAMPLES (docs/testing.md) scales the number of messages (a fortieth of it: 25 in
CI); VOIPGW_FUZZ_SEED moves the stream; ``--voipgw-seed`` picks the network's and the ids'.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

import pytest
import trio

from gateway.core.sip.dialog import Dialog
from gateway.core.sip.message import Request, make_response
from gateway.core.sip.serializer import serialize_message
from gateway.testing.sip_agent import SDP, AutoAnswer
from tests.component.calls.b2bua_env import (
    ALICE,
    ALICE_DID,
    GW,
    TRUNK,
    B2bua,
    eventually,
    start_b2bua,
)
from tests.component.calls.early_dialog_fuzz import _bystander
from tests.component.calls.fuzz_checks import (
    MAX_UDP,
    WINDOW,
    _expected,
    _parsed,
    _responses_to,
    error_records,
    leftovers,
    mutate_message,
    table_sizes,
)
from tests.unit.fuzz.mutator import base_seed, examples

REQUIRE_100REL = [("Require", "100rel"), ("Supported", "100rel")]
ROUND_TURNS = 4  # messages per call at most
HEALTH_EVERY = 5  # rounds


class Round:
    """One 100rel call ringing with early media, and what its peers know of it."""

    def __init__(self, env: B2bua, rng: random.Random) -> None:
        self.env = env
        self.rng = rng
        self.alice_rseq = rng.randrange(1, 2**31 - 100)

    async def start(self) -> None:
        env = self.env
        for agent in (env.alice, env.trunk):
            for received in agent.received:
                received.taken = True  # next_call() finds this round's INVITE
        self.call = await env.trunk.invite(env.did_uri(ALICE_DID), extra=REQUIRE_100REL)
        self.call.send_prack = False  # the fuzz sends them
        self.leg_b = await env.alice.next_call()
        assert self.leg_b.incoming is not None
        await env.alice.respond(
            self.leg_b.incoming,
            183,
            body=env.alice.answer_sdp(self.leg_b.invite.body),
            extra=[("Require", "100rel"), ("RSeq", str(self.alice_rseq))],
        )
        assert self.call.exchange is not None
        progress = await self.call.exchange.wait_for(lambda r: r.status == 183, timeout=WINDOW)
        self.early = Dialog.create_uac(self.call.invite, progress)

    def gateway_rseq(self) -> int:
        """The RSeq of the gateway's last reliable 1xx to the trunk."""
        assert self.call.exchange is not None
        rseqs = [r.headers.get("RSeq") or "" for r in self.call.exchange.responses]
        return max((int(r) for r in rseqs if r.isdigit()), default=0)

    def prack(self) -> tuple[str, bytes]:
        rseq, cseq = self.gateway_rseq(), self.call.invite.cseq.number
        rack = self.rng.choice(
            [f"{rseq} {cseq} INVITE"] * 3
            + [f"{rseq + 1} {cseq} INVITE", f"{rseq} {cseq + 1} INVITE", f"{rseq - 1} {cseq} BYE"]
        )
        request = self.early.create_request(
            "PRACK", via=self.env.trunk.new_via(), extra=[("RAck", rack)]
        )
        return "trunk PRACK", serialize_message(request)

    def reliable_1xx(self) -> tuple[str, bytes]:
        rng, alice = self.rng, self.env.alice
        step = rng.choice([1, 1, 1, 0, 2])
        self.alice_rseq += step
        status = rng.choice([180, 183])
        body = alice.answer_sdp(self.leg_b.invite.body) if status == 183 else b""
        assert self.leg_b.incoming is not None
        response = make_response(
            self.leg_b.incoming.request,
            status,
            to_tag=self.leg_b.local_tag,
            extra=[
                ("Contact", str(alice.contact)),
                ("Require", "100rel"),
                ("RSeq", str(self.alice_rseq)),
            ],
            body=body,
            content_type=SDP if body else None,
        )
        return f"alice reliable {status} (+{step})", serialize_message(response)

    async def end(self) -> str:
        """Answer, refuse or cancel; hang up an answered call. Returns what happened."""
        env, rng = self.env, self.rng
        assert self.leg_b.incoming is not None
        how = rng.choice(["answer", "answer", "refuse", "cancel"])
        if how == "cancel":
            await self.call.cancel()
        elif how == "refuse":
            await env.alice.respond(self.leg_b.incoming, 486)
        else:
            # The trunk PRACKs the gateway's last reliable 1xx (RFC 3262 §3: our 2xx waits
            # for it), then alice answers; at times first with a mutated 200 (sent as bytes,
            # her transaction does not see it), then, if the call still rings, a valid one.
            await self._send(TRUNK, self.prack_for_last())
            if rng.random() < 0.4:
                how = "mutated answer"
                await self._send(ALICE, self.mutated_answer())
                await trio.sleep(2.0)
            assert self.call.exchange is not None
            if env.calls == 2 and not [s for s in self.call.exchange.statuses if s >= 200]:
                await self.leg_b.answer()
        final = await self.call.final(timeout=2 * WINDOW)
        if final.status == 200:
            assert (await self.call.bye(timeout=WINDOW)).status == 200
        return f"{how}: {final.status}"

    def mutated_answer(self) -> bytes:
        alice = self.env.alice
        assert self.leg_b.incoming is not None
        response = make_response(
            self.leg_b.incoming.request,
            200,
            to_tag=self.leg_b.local_tag,
            extra=[("Contact", str(alice.contact))],
            body=alice.answer_sdp(self.leg_b.invite.body),
            content_type=SDP,
        )
        return mutate_message(serialize_message(response), self.rng)[1][:MAX_UDP]

    def prack_for_last(self) -> bytes:
        rack = f"{self.gateway_rseq()} {self.call.invite.cseq.number} INVITE"
        return serialize_message(
            self.early.create_request("PRACK", via=self.env.trunk.new_via(), extra=[("RAck", rack)])
        )

    async def _send(self, peer: tuple[str, int], data: bytes) -> None:
        agent = self.env.trunk if peer == TRUNK else self.env.alice
        await agent.socket.sendto(data, GW)


async def _turn(round_: Round, number: int, where: list[str], counts: dict[str, int]) -> None:
    env, rng = round_.env, round_.rng
    trunk_side = rng.random() < 0.5
    kind, data = round_.prack() if trunk_side else round_.reliable_1xx()
    how, data = mutate_message(data, rng)
    data = data[:MAX_UDP]
    peer = TRUNK if trunk_side else ALICE
    counts[f"{kind.split(' (')[0]} {how}"] = counts.get(f"{kind.split(' (')[0]} {how}", 0) + 1
    expected = _expected(data)
    parsed = _parsed(data)
    where.append(f"message {number}: {kind} ({how}): {data[:3000]!r}")
    del where[:-8]
    start = len(env.network.capture)
    await round_._send(peer, data)
    # Until its final response (a request relayed to the other side waits for that side's
    # transaction, at most 64*T1), then a little longer for a second one; a message owed
    # nothing gets 2 s. Not longer: 64*T1 without the PRACK of our reliable 1xx ends the call
    # (RFC 3262 §3), and a round would end after one message.
    waited = 0.0
    while waited < WINDOW:
        await trio.sleep(0.5)
        waited += 0.5
        finals = [a for a in _responses_to(env, peer, start) if a[8:9] in b"23456"]
        if waited >= 2.0 and (expected == "none" or finals):
            break
    await trio.sleep(1.0)
    # Not the gateway's 1xx and final response to the trunk's INVITE: what is owed here is
    # the answer to this message.
    invite = round_.call.invite
    theirs = f"\r\nCSeq: {invite.cseq.number} INVITE\r\n".encode()
    call_id = f"\r\nCall-ID: {invite.call_id}\r\n".encode()
    answers = [
        a
        for a in _responses_to(env, peer, start)
        if not (peer == TRUNK and theirs in a and call_id in a)
    ]
    statuses = [int(a[8:11]) for a in answers if a[8:11].isdigit()]
    finals = [s for s in statuses if s >= 200]
    where.append(f"  got {statuses}")
    failure = "\n".join(where[-2:])
    if expected == "none":
        assert finals == [], failure
    elif expected == "final":
        assert len(set(finals)) == 1, failure
    else:
        assert finals == [int(expected)], failure
    if isinstance(parsed, Request) and parsed.call_id == round_.early.call_id:
        round_.early.local_seq = max(round_.early.local_seq or 0, parsed.cseq.number)


async def test_mutated_pracks_and_reliable_1xx_in_early_dialogs(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    env = await start_b2bua(
        nursery,
        tmp_path,
        voipgw_seed,
        alice_auto=None,
        inactivity_timeout=10**7,  # the bystander sends no media
        hold_timeout=10**7,
    )
    await trio.sleep(WINDOW)  # the registration's transactions are over
    before = table_sizes(env)
    rng = random.Random(f"early:{voipgw_seed}:{base_seed()}")
    env.trunk.auto = AutoAnswer()  # it answers the re-INVITEs the gateway forwards
    bystander, bystander_b = await _bystander(env)
    total = max(20, examples() // 40)
    counts: dict[str, int] = {}
    endings: dict[str, int] = {}
    where: list[str] = []
    number, rounds = 0, 0
    while number < total:
        env.network.capture.clear()
        env.network.deliveries.clear()
        round_ = Round(env, rng)
        await round_.start()
        for _ in range(rng.randrange(1, ROUND_TURNS + 1)):
            await _turn(round_, number, where, counts)
            number += 1
            errors = error_records(caplog)
            caplog.clear()
            assert errors == [], (where[-3:], errors)
            assert env.gateway.endpoint.statistics.internal_errors == 0, where[-3:]
            if env.calls == 1:
                break  # the mutation ended the call (a 5xx to its INVITE, say)
        if env.calls == 2:
            ending = await round_.end()
            endings[ending] = endings.get(ending, 0) + 1
        else:
            endings["ended by the fuzz"] = endings.get("ended by the fuzz", 0) + 1
        await eventually(lambda: env.calls == 1, timeout=2 * WINDOW)
        errors = error_records(caplog)
        caplog.clear()
        assert errors == [], (where[-3:], errors)
        rounds += 1
        if rounds % HEALTH_EVERY == 0:
            offer = env.alice.offer_sdp()
            assert (await bystander_b.reinvite(offer, timeout=WINDOW)).status == 200
        await trio.sleep(WINDOW)
    assert (await bystander.bye(timeout=WINDOW)).status == 200
    await trio.sleep(2 * WINDOW + 10)  # every transaction and 2xx retransmission is over
    await eventually(lambda: table_sizes(env)["calls"] == 0)
    assert table_sizes(env) == before, leftovers(env)
    assert error_records(caplog) == []
    assert env.gateway.endpoint.statistics.internal_errors == 0
    print("early-dialog sent:", dict(sorted(counts.items())))
    print("early-dialog rounds:", rounds, dict(sorted(endings.items())))
