"""Mutated call pickups from a phone of the pickup group, past authentication: the INVITE with
``Replaces`` naming the gateway's early dialog with the ringing phone (RFC 3891, a BLF key) and
the pickup feature codes (``*8``, ``**alice``), the paths test_b2bua_fuzzed_dialogs does not
reach (pickup.py, ``Call._picked_up``, the manager's Replaces lookup).

Each round the trunk calls alice, whose phone rings; bob (in a ``pickup`` group with alice)
sends a valid pickup INVITE once to be challenged (407), then the same INVITE with credentials
answering the challenge, with one header or the body mutated, or the whole message mutated as
bytes (tests/unit/fuzz/mutator.py), or as it is, as test_fuzzed_subscriptions does. A 2xx is
ACKed (with an answer when it offered; without From tag, as an RFC 2543 UAC, when the INVITE
had none) and the picked-up call hung up by bob or the trunk; a
call not picked up is answered and hung up, or cancelled. A mutated INVITE that became an
ordinary call to alice rings her other phone, which refuses it 486.

After each pickup INVITE: exactly one final response (the status the parser names when it
refuses the message); nothing logged at error level, no internal error counted; a bystander
call answered before the rounds goes on (it answers a re-INVITE every few rounds). At the end
the call manager, the endpoint's transaction and flow tables and the media port allocator are
back to their size before the calls.

VOIPGW_FUZZ_EXAMPLES (docs/testing.md) scales the number of rounds (a fortieth of it: 25 in
CI); VOIPGW_FUZZ_SEED moves the stream; ``--voipgw-seed`` picks the network's and the ids'.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

import pytest
import trio

from gateway.core.ids import SeededIds
from gateway.core.sip.dialog import Dialog
from gateway.core.sip.errors import SipError
from gateway.core.sip.message import Request, Response
from gateway.core.sip.serializer import serialize_message
from gateway.core.sip.uri import remove_param
from gateway.testing.sip_agent import SDP, AutoAnswer, Call, SipAgent
from tests.component.calls.b2bua_env import (
    ALICE_DID,
    GW,
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
from tests.component.calls.presence_subscriptions import BOB
from tests.component.calls.subscription_fuzz import _challenged
from tests.unit.fuzz.mutator import base_seed, examples

PICKUP = {"name": "office", "accounts": ["alice", "bob"], "pickup": True}
HEALTH_EVERY = 5  # rounds


def _pickup_invite(bob: SipAgent, ringing: Call, rng: random.Random) -> tuple[str, Request]:
    """bob's pickup INVITE: Replaces naming alice's ringing dialog as her phone sees it (RFC
    3891 §3: its Call-ID, to-tag ours, from-tag hers), or a feature code."""
    kind = rng.choice(["Replaces", "Replaces early-only", "Replaces", "*8", "**alice"])
    extra: list[tuple[str, str]] = []
    user = "alice"
    if kind.startswith("Replaces"):
        flag = ";early-only" if kind.endswith("early-only") else ""
        replaces = (
            f"{ringing.call_id};to-tag={ringing.invite.from_.tag};"
            f"from-tag={ringing.local_tag}{flag}"
        )
        extra = [("Replaces", replaces), ("Supported", "replaces")]
    else:
        user = kind
    late = rng.random() < 0.2  # no SDP: our 2xx offers (RFC 3261 §13.2.1)
    body = b"" if late else bob.offer_sdp()
    request = bob.new_request(
        "INVITE",
        f"sip:{user}@127.0.0.1:5060",
        extra=extra,
        body=body,
        content_type=SDP if body else None,
    )
    return f"{kind}{' late' if late else ''}", request


async def _refuse_strays(env: B2bua, ringing: Call, bystander_b: Call) -> None:
    """alice's other phone refuses an INVITE that is not the round's (a mutated pickup that
    became an ordinary call to her)."""
    for received in env.alice.received:
        if received.request.method != "INVITE" or received.taken:
            continue
        call = received.call
        if call is None or call.incoming is not received or call in (ringing, bystander_b):
            continue
        received.taken = True
        await env.alice.respond(received, 486)


async def _ack_and_hang_up(
    env: B2bua, bob: SipAgent, request: Request, answers: list[bytes], rng: random.Random
) -> str:
    """ACK bob's 2xx (answering an offer in it) and hang the picked-up call up."""
    for data in answers:
        response = _parsed(data)
        if not isinstance(response, Response) or not response.is_success:
            continue
        if response.cseq.method != "INVITE":
            continue
        # An INVITE the mutation left without a From tag is an RFC 2543 UAC's: the gateway
        # takes it as it takes a first INVITE without one (its dialog's remote tag is null,
        # RFC 3261 §12.1.1), and bob goes on as such a UAC, without a From tag.
        untagged = request.from_.tag is None
        if untagged:
            request = request.with_headers(
                request.headers.set("From", str(request.from_.with_tag("rfc2543")))
            )
        try:
            dialog = Dialog.create_uac(request, response)
        except SipError:  # a 2xx we could not make a dialog with: nothing to ACK with
            return "picked up, not ACKable"
        body = bob.answer_sdp(response.body) if response.body and not request.body else b""
        ack = dialog.create_ack(
            response.cseq.number,
            via=bob.new_via(),
            body=body,
            content_type=SDP if body else None,
        )
        await bob.socket.sendto(serialize_message(_rfc2543(ack, untagged)), GW)
        await trio.sleep(1)
        how = "picked up without From tag" if untagged else "picked up"
        if rng.random() < 0.5:
            bye = _rfc2543(dialog.create_request("BYE", via=bob.new_via()), untagged)
            final = await (await bob.send(bye, GW)).final(timeout=WINDOW)
            return f"{how}, bob hung up: {final.status}"
        return f"{how}, the trunk hangs up"
    return "refused"


def _rfc2543(request: Request, untagged: bool) -> Request:
    """``request`` of bob's dialog as an RFC 2543 UAC sends it when ``untagged``: no From tag."""
    if not untagged:
        return request
    return request.with_headers(
        request.headers.set(
            "From", str(request.from_.with_params(remove_param(request.from_.params, "tag")))
        )
    )


async def test_mutated_pickups_by_replaces_and_feature_code(
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
        dialog_watch_groups=[PICKUP],
        inactivity_timeout=10**7,  # the calls send no media
        hold_timeout=10**7,
        # Mutated Authorization headers are failed attempts: no lock-out of the phones here.
        gateway_table={"auth_max_failures": 10**6},
    )
    bob = SipAgent(
        env.network,
        BOB,
        ids=SeededIds(voipgw_seed + 3),
        user="bob",
        password="bob-password-1",
        proxy=GW,
        auto=AutoAnswer(ring=True, status=None),
        media_port=31000,
    )
    await nursery.start(bob.serve)
    assert (await bob.register()).status == 200
    env.trunk.auto = AutoAnswer()  # it answers the re-INVITEs the gateway forwards
    await trio.sleep(WINDOW)  # the registrations' transactions are over
    before = table_sizes(env)
    rng = random.Random(f"pickup:{voipgw_seed}:{base_seed()}")
    bystander, bystander_b = await _bystander(env)
    sent: dict[str, int] = {}
    outcomes: dict[str, int] = {}
    for number in range(max(25, examples() // 40)):
        env.network.capture.clear()
        env.network.deliveries.clear()
        for agent in (env.alice, env.trunk, bob):
            for received in agent.received:
                received.taken = True  # next_call() finds this round's INVITE
        incoming = await env.trunk.invite(env.did_uri(ALICE_DID))
        ringing = await env.alice.next_call()
        await ringing.ring()
        assert incoming.exchange is not None
        await incoming.exchange.wait_for(lambda r: r.status == 180, timeout=WINDOW)
        kind, request = _pickup_invite(bob, ringing, rng)
        request = await _challenged(bob, request)
        how, data = mutate_message(serialize_message(request), rng)
        data = data[:MAX_UDP]
        sent[f"{kind} {how}"] = sent.get(f"{kind} {how}", 0) + 1
        where = f"round {number}: {kind} ({how}): {data[:3000]!r}"
        expected = _expected(data)
        start = len(env.network.capture)
        await bob.socket.sendto(data, GW)
        waited = 0.0
        while waited < 2 * WINDOW:
            await trio.sleep(0.5)
            waited += 0.5
            await _refuse_strays(env, ringing, bystander_b)
            finals = [a for a in _responses_to(env, BOB, start) if a[8:9] in b"23456"]
            if waited >= 2.0 and (expected == "none" or finals):
                break
        await trio.sleep(1.0)
        answers = _responses_to(env, BOB, start)
        statuses = [int(a[8:11]) for a in answers if a[8:11].isdigit()]
        finals_ = [s for s in statuses if s >= 200]
        where += f"\n  got {statuses}"
        if expected == "none":
            assert finals_ == [], where
        elif expected == "final":
            assert len(set(finals_)) == 1, where
        else:
            assert finals_ == [int(expected)], where
        parsed = _parsed(data)
        outcome = "no pickup"
        if isinstance(parsed, Request) and any(200 <= s < 300 for s in finals_):
            outcome = await _ack_and_hang_up(env, bob, parsed, answers, rng)
        # Whatever is still up ends: the picked-up call by the trunk, a ringing one answered
        # or cancelled.
        if incoming.dialog is not None or (await _settled(incoming)) == 200:
            assert incoming.dialog is not None
            if incoming.dialog.state.value != "terminated" and env.calls == 2:
                await incoming.bye(timeout=WINDOW)
        elif env.calls == 2 and ringing.answered is None:
            if rng.random() < 0.5:
                await incoming.cancel()
                outcome += ", cancelled"
            else:
                await ringing.answer()
                assert (await incoming.final(timeout=WINDOW)).status == 200
                await incoming.bye(timeout=WINDOW)
                outcome += ", answered by alice"
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        await eventually(lambda: env.calls == 1, timeout=2 * WINDOW)
        errors = error_records(caplog)
        caplog.clear()
        assert errors == [], (where, errors)
        assert env.gateway.endpoint.statistics.internal_errors == 0, where
        if number % HEALTH_EVERY == HEALTH_EVERY - 1:
            offer = env.alice.offer_sdp()
            assert (await bystander_b.reinvite(offer, timeout=WINDOW)).status == 200
        await trio.sleep(WINDOW)
    assert (await bystander.bye(timeout=WINDOW)).status == 200
    await trio.sleep(2 * WINDOW + 10)  # every transaction and 2xx retransmission is over
    await eventually(lambda: table_sizes(env)["calls"] == 0)
    assert table_sizes(env) == before, leftovers(env)
    assert error_records(caplog) == []
    assert env.gateway.endpoint.statistics.internal_errors == 0
    print("pickup sent:", dict(sorted(sent.items())))
    print("pickup outcomes:", dict(sorted(outcomes.items())))


async def _settled(incoming: Call) -> int:
    """The trunk's call's final status so far (0 while it rings)."""
    assert incoming.exchange is not None
    finals = [s for s in incoming.exchange.statuses if s >= 200]
    return finals[-1] if finals else 0
