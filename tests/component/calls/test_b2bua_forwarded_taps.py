"""Taps on forwarded calls. Lawful interception (CallManager.reached): a callee's 3xx followed
to an account or a number that is an interception target is intercepted from the forward on.

- the carrier calls alice, her phone 302s to bob, bob's number a target: X2 of the caller's
  INVITE (first), our INVITE to bob and his answers, X3 of the media, under bob's task;
- alice 302s to a number the carrier serves, that number a target: our INVITE to the carrier
  is delivered under its task;
- a call already intercepted (alice a target) forwarded to another target (bob) keeps its one
  sink: one correlation ID, both tasks from the forward on;
- a call that fails over from a trunk to an account (a routing plugin's alternates) that is a
  target is intercepted from the failover on;
- a call that is not redirected does not ask the taps again; a forward to nobody's number
  delivers nothing;
- a recorder told to record bob's calls (decided at the answer) records a call forwarded to
  him: the callee is whoever answered.

Set-ups as test_b2bua_intercept.py (X1 over HTTPS, X2/X3 to a mediation function) and
test_b2bua_redirect.py (bob registered at 127.0.0.4), in virtual time.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import trio

from gateway.core.calls.manager import CallManager
from gateway.core.hookspecs import hookimpl
from gateway.core.interfaces import RouteDecision, RouteTarget
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.plugins.taps.intercept import pdu
from gateway.testing.sip_agent import AutoAnswer, simple_sdp
from tests.component.calls.b2bua_env import ALICE_DID, BOB_DID, eventually
from tests.component.calls.dtls_phone import bind
from tests.component.calls.intercept_calls import (
    CALLEE_PORT,
    CALLER_PORT,
    XID,
    Env,
    Talk,
    activate,
    intercept_env,
    pki,  # noqa: F401 (the fixture)
)
from tests.component.calls.recorder_calls import recording_env, recordings, rtp
from tests.component.calls.redirect_phones import start_bob
from tests.interop.harness.pki import Issued, TestCa

FORWARD_TO = "+15557777"  # a number the carrier serves (b2bua_env's trunk)
SECOND = uuid.UUID("22222222-2222-4333-8444-555555555555")

Pki = tuple[TestCa, Issued, Issued]


async def alice_forwards(env: Env, contact: str) -> Any:
    """The carrier calls alice's number; her phone answers 302 to ``contact``; the call."""
    call, leg = await env.trunk_calls_alice()
    assert leg.incoming is not None
    await env.b2bua.alice.respond(leg.incoming, 302, extra=[("Contact", contact)])
    return call


def starts(packets: list[pdu.Pdu]) -> list[bytes]:
    return [p.payload.split(b"\r\n", 1)[0] for p in packets]


async def test_a_call_forwarded_to_a_target_account_is_intercepted(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    pki: Pki,  # noqa: F811
) -> None:
    env = await intercept_env(nursery, tmp_path, voipgw_seed, pki)
    # bob's number: the 302 names his account ("bob"), not the number; the gateway knows him
    # by both (his DID reaches him).
    await env.provision(activate(f"<e164Number>{BOB_DID[1:]}</e164Number>"))
    bob = await start_bob(env.b2bua, nursery, voipgw_seed)
    call = await alice_forwards(env, "<sip:bob@127.0.0.1>")
    at_bob = await bob.next_call()
    offered = parse_sdp_untrusted(at_bob.invite.body).media[0]
    await at_bob.answer(200, sdp=simple_sdp("127.0.0.1", CALLEE_PORT))
    final = await call.final()
    assert final.status == 200
    answered = parse_sdp_untrusted(final.body).media[0]
    talk = Talk(
        await bind(CALLER_PORT),
        await bind(CALLEE_PORT),
        ("127.0.0.1", answered.port),
        ("127.0.0.1", offered.port),
    )
    try:
        await talk.packets(0, 10)
        await call.bye()
        await eventually(lambda: env.b2bua.calls == 0)
    finally:
        talk.close()
    await eventually(lambda: sum(p.payload.startswith(b"BYE ") for p in env.x2()) == 2)

    x2 = env.x2()
    lines = starts(x2)
    # The caller's INVITE first (the sink was made at the forward: it gets it then), then
    # ours to bob; never alice's dialog (her 302 came before bob was in the call).
    assert lines[0].startswith(b"INVITE sip:+4930123456@")
    assert x2[0].direction == pdu.TO_TARGET  # on its way to the target, bob
    invites = [p for p in x2 if p.payload.startswith(b"INVITE ")]
    assert len(invites) == 2 and invites[1].payload.startswith(b"INVITE sip:bob@")
    assert {p.direction for p in invites} == {pdu.TO_TARGET}
    assert not any(line.startswith(b"SIP/2.0 302") for line in lines)
    oks = [p for p in x2 if p.payload.startswith(b"SIP/2.0 200") and b" INVITE\r\n" in p.payload]
    assert len(oks) == 2 and {p.direction for p in oks} == {pdu.FROM_TARGET}  # bob's, relayed
    assert {p.xid for p in x2} == {XID}
    assert {p.attribute(pdu.MATCHED_TARGET) for p in x2} == {BOB_DID[1:].encode()}
    x3 = env.x3()
    assert [p.payload for p in x3 if p.direction == pdu.TO_TARGET] == [
        rtp(seq, 0x00, 0x1111) for seq in range(10)
    ]
    assert [p.payload for p in x3 if p.direction == pdu.FROM_TARGET] == [
        rtp(seq, 0x80, 0x2222) for seq in range(10)
    ]
    assert len({p.correlation for p in x2 + x3}) == 1
    sequences = sorted(p.sequence for p in x2 + x3)  # type: ignore[type-var]
    assert sequences == list(range(len(sequences)))
    assert env.tap.intercepted_calls == 1


async def test_a_call_forwarded_to_a_target_number_via_the_trunk_is_intercepted(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    pki: Pki,  # noqa: F811
) -> None:
    env = await intercept_env(nursery, tmp_path, voipgw_seed, pki)
    env.b2bua.trunk.auto = AutoAnswer(ring=True, status=200)  # the forwarded call's callee
    await env.provision(activate(f"<e164Number>{FORWARD_TO[1:]}</e164Number>"))
    call = await alice_forwards(env, f"<sip:{FORWARD_TO}@127.0.0.3>")
    assert (await call.final()).status == 200
    await call.bye()
    await eventually(lambda: env.b2bua.calls == 0)
    await eventually(lambda: sum(p.payload.startswith(b"BYE ") for p in env.x2()) == 2)
    x2 = env.x2()
    lines = starts(x2)
    assert lines[0].startswith(b"INVITE sip:+4930123456@")  # the caller's, first
    (to_carrier,) = [p for p in x2 if p.payload.startswith(f"INVITE sip:{FORWARD_TO}@".encode())]
    assert to_carrier.direction == pdu.TO_TARGET
    assert b"Diversion:" in to_carrier.payload  # the forward as the carrier got it
    assert {p.attribute(pdu.MATCHED_TARGET) for p in x2} == {FORWARD_TO[1:].encode()}
    assert len({p.correlation for p in x2}) == 1


async def test_an_intercepted_call_forwarded_to_another_target_keeps_its_one_sink(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    pki: Pki,  # noqa: F811
) -> None:
    env = await intercept_env(nursery, tmp_path, voipgw_seed, pki)
    env.b2bua.trunk.auto = AutoAnswer(ring=True, status=200)
    await env.provision(
        activate(f"<e164Number>{ALICE_DID[1:]}</e164Number>"),
        activate(f"<e164Number>{FORWARD_TO[1:]}</e164Number>", xid=SECOND),
    )
    call = await alice_forwards(env, f"<sip:{FORWARD_TO}@127.0.0.3>")
    assert (await call.final()).status == 200
    await call.bye()
    await eventually(lambda: env.b2bua.calls == 0)
    await eventually(lambda: any(p.payload.startswith(b"BYE ") for p in env.x2()))
    await trio.sleep(1)  # virtual time: room for a PDU that should not come
    x2 = env.x2()
    assert env.tap.intercepted_calls == 1
    assert len({p.correlation for p in x2}) == 1
    # alice's task from the start: her dialog's 302 is hers; the caller's INVITE once only.
    mine = [p for p in x2 if p.xid == XID]
    assert sum(p.payload.startswith(b"INVITE sip:+4930123456@") for p in mine) == 1
    assert any(p.payload.startswith(b"SIP/2.0 302") for p in mine)
    # The forwarded-to number's task from the forward on: no copy of the caller's INVITE (the
    # sink had it), our INVITE to the carrier and the rest.
    theirs = [p for p in x2 if p.xid == SECOND]
    assert not any(p.payload.startswith(b"SIP/2.0 302") for p in theirs)
    assert any(p.payload.startswith(f"INVITE sip:{FORWARD_TO}@".encode()) for p in theirs)
    assert sum(p.payload.startswith(b"BYE ") for p in theirs) == 2


async def test_calls_not_forwarded_to_a_target_are_not_asked_about_again(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    pki: Pki,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reached: list[object] = []
    original = CallManager.reached

    def spy(self: CallManager, call: Any, targets: Any, uri: str | None) -> None:
        reached.append(uri)
        original(self, call, targets, uri)

    monkeypatch.setattr(CallManager, "reached", spy)
    env = await intercept_env(nursery, tmp_path, voipgw_seed, pki)
    env.b2bua.trunk.auto = AutoAnswer(ring=True, status=200)
    await env.provision(activate(f"<e164Number>{BOB_DID[1:]}</e164Number>"))
    # Not redirected: the taps are asked once, at the start and routing, as before.
    call, leg = await env.trunk_calls_alice()
    await leg.answer(486)
    assert (await call.final()).status == 486
    await eventually(lambda: env.b2bua.calls == 0)
    assert reached == []
    # Forwarded to a number nobody intercepts: asked again, and nothing delivered.
    call = await alice_forwards(env, f"<sip:{FORWARD_TO}@127.0.0.3>")
    assert (await call.final()).status == 200
    await call.bye()
    await eventually(lambda: env.b2bua.calls == 0)
    await trio.sleep(1)
    assert len(reached) == 1 and f"{FORWARD_TO}@" in str(reached[0])
    assert env.mediation.copies() == []
    assert env.tap.intercepted_calls == 0


async def test_a_recorder_keyed_on_the_callee_records_a_call_forwarded_to_it(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    b2bua = await recording_env(nursery, tmp_path, voipgw_seed, {"accounts": ["bob"]})
    bob = await start_bob(b2bua, nursery, voipgw_seed)
    call = await b2bua.trunk.invite(
        b2bua.did_uri(ALICE_DID), sdp=simple_sdp("127.0.0.1", CALLER_PORT)
    )
    leg = await b2bua.alice.next_call()
    assert leg.incoming is not None
    await b2bua.alice.respond(leg.incoming, 302, extra=[("Contact", "<sip:bob@127.0.0.1>")])
    at_bob = await bob.next_call()
    offered = parse_sdp_untrusted(at_bob.invite.body).media[0]
    await at_bob.answer(200, sdp=simple_sdp("127.0.0.1", CALLEE_PORT))
    final = await call.final()
    assert final.status == 200
    answered = parse_sdp_untrusted(final.body).media[0]
    talk = Talk(
        await bind(CALLER_PORT),
        await bind(CALLEE_PORT),
        ("127.0.0.1", answered.port),
        ("127.0.0.1", offered.port),
    )
    try:
        await talk.packets(0, 10)
        assert b2bua.gateway.calls is not None
        (gateway_call,) = b2bua.gateway.calls.calls
        assert gateway_call.security_record()["taps"]["names"] == ["recorder"]
        await call.bye()
        await eventually(lambda: b2bua.calls == 0)
    finally:
        talk.close()
    await eventually(lambda: len(recordings(tmp_path)) == 2)  # one file per speaker


class CarrierThenBob:
    """Routes calls to FAILOVER_NUMBER to the carrier, bob's phone the alternate."""

    @hookimpl
    def gateway_route_call(self, request: Any, caller: Any, directory: Any) -> Any:
        if getattr(request.uri, "user", None) != FAILOVER_NUMBER:
            return None
        return RouteDecision(
            targets=(RouteTarget(f"sip:{FAILOVER_NUMBER}@127.0.0.2", trunk="carrier"),),
            alternates=(RouteTarget("sip:bob@127.0.0.4:5060", account="bob"),),
        )


FAILOVER_NUMBER = "+4930777"


async def test_a_failover_to_an_account_that_is_a_target_is_intercepted(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    pki: Pki,  # noqa: F811
) -> None:
    env = await intercept_env(
        nursery, tmp_path, voipgw_seed, pki, plugins=(("carrier-then-bob", CarrierThenBob()),)
    )
    env.b2bua.trunk.auto = AutoAnswer(ring=False, status=503)  # the carrier fails: over to bob
    await env.provision(activate(f"<e164Number>{BOB_DID[1:]}</e164Number>"))
    bob = await start_bob(env.b2bua, nursery, voipgw_seed)
    call = await env.b2bua.alice.invite(f"sip:{FAILOVER_NUMBER}@127.0.0.1")
    assert (await call.final()).status == 407
    await call.authenticate()
    at_bob = await bob.next_call()
    await at_bob.answer(200)
    assert (await call.final()).status == 200
    await call.bye()
    await eventually(lambda: env.b2bua.calls == 0)
    await eventually(lambda: sum(p.payload.startswith(b"BYE ") for p in env.x2()) == 2)
    x2 = env.x2()
    lines = starts(x2)
    assert lines[0].startswith(f"INVITE sip:{FAILOVER_NUMBER}@".encode())  # alice's, first
    assert not any(line.startswith(b"SIP/2.0 503") for line in lines)  # before bob was in it
    assert any(line.startswith(b"INVITE sip:bob@") for line in lines)
    assert {p.attribute(pdu.MATCHED_TARGET) for p in x2} == {BOB_DID[1:].encode()}
