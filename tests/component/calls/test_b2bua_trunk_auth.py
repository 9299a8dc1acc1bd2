"""A trunk that challenges the INVITEs we send it (RFC 3261 §22.2): the gateway answers once with
the trunk's configured ``username``/``password`` in a new INVITE (same Call-ID and From tag,
CSeq + 1); wrong credentials (challenged again) and trunks without credentials end with 503, never
passing the trunk's challenge to the caller. The same trunk's challenges to the requests we send
inside the call (BYE, re-INVITE) are answered once too, with the dialog's next CSeq. The PBX
verifies with the gateway's own digest server. Signalling on the in-memory network, virtual
time."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio

from gateway.core.auth.algorithms import DigestAlgorithm
from gateway.core.auth.digest import Authenticated, AuthKind, DigestAuthenticator
from gateway.core.ids import SeededIds
from gateway.testing.sip_agent import Call, Received, SipAgent
from tests.component.calls.b2bua_env import GW, B2bua, eventually, sent, start_b2bua
from tests.component.calls.trunk_auth_calls import (
    ALICE_AT_PBX,
    PBX,
    PBX_PASSWORD,
    alice_calls,
    pbx_server,
    pbx_trunk,
    verify,
)


async def start(
    nursery: trio.Nursery, tmp_path: Path, seed: int, *, password: str | None = PBX_PASSWORD
) -> tuple[B2bua, SipAgent]:
    env = await start_b2bua(nursery, tmp_path, seed, extra_trunks=[pbx_trunk(password)])
    pbx = SipAgent(
        env.network, PBX, ids=SeededIds(seed + 4), user="pbx", domain="127.0.0.4:5060", proxy=GW,
        auto=None, media_port=40010,
    )  # fmt: skip
    await nursery.start(pbx.serve)
    return env, pbx


async def test_a_challenging_trunk_gets_its_credentials_once_and_the_call_connects(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, pbx = await start(nursery, tmp_path, voipgw_seed)
    server = pbx_server()
    call = await alice_calls(env)
    first = await pbx.next_call(timeout=5)
    assert first.incoming is not None
    assert first.invite.headers.get("Proxy-Authorization") is None
    challenge = server.challenge(AuthKind.PROXY, now=trio.current_time())
    await pbx.respond(first.incoming, 407, extra=challenge.response_headers())

    second = await pbx.next_call(timeout=5)
    retry = second.invite
    # RFC 3261 §22.2: the same call (Call-ID, From tag, To without tag), CSeq + 1, a new branch.
    assert retry.call_id == first.invite.call_id
    assert retry.from_.tag == first.invite.from_.tag
    assert retry.to.tag is None
    assert retry.cseq.number == first.invite.cseq.number + 1
    assert retry.top_via.branch != first.invite.top_via.branch
    assert retry.body == first.invite.body
    # The PBX offered SHA-256 first (RFC 8760 §2.4), and that is what we answered.
    assert verify(server, retry) == Authenticated(
        "voipgw-1", "pbx.test", DigestAlgorithm.SHA_256, "auth"
    )
    # The 407 was ACKed by the INVITE client transaction (RFC 3261 §17.1.1.3).
    await eventually(lambda: len(sent(env.network.capture, GW, PBX, b"ACK ")) == 1)

    await second.ring()
    await second.answer()
    final = await call.final()
    assert final.status == 200
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)


async def test_wrong_credentials_are_not_retried_and_the_caller_gets_503(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, pbx = await start(nursery, tmp_path, voipgw_seed, password="not-the-pbx-password")
    server = pbx_server()
    call = await alice_calls(env)
    for _ in range(2):
        leg = await pbx.next_call(timeout=5)
        assert leg.incoming is not None
        if leg.invite.headers.get("Proxy-Authorization") is not None:
            assert not isinstance(verify(server, leg.invite), Authenticated)
        challenge = server.challenge(AuthKind.PROXY, now=trio.current_time())
        await pbx.respond(leg.incoming, 407, extra=challenge.response_headers())
    final = await call.final()
    # The trunk's challenge is the gateway's business, not the caller's (no Proxy-Authenticate).
    assert final.status == 503
    assert final.headers.get("Proxy-Authenticate") is None
    assert len(pbx.requests("INVITE")) == 2
    await trio.sleep(40)
    assert len(pbx.requests("INVITE")) == 2
    await eventually(lambda: env.calls == 0)


async def test_a_trunk_without_credentials_is_not_answered(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, pbx = await start(nursery, tmp_path, voipgw_seed, password=None)
    call = await alice_calls(env)
    leg = await pbx.next_call(timeout=5)
    assert leg.incoming is not None
    challenge = pbx_server().challenge(AuthKind.PROXY, now=trio.current_time())
    await pbx.respond(leg.incoming, 407, extra=challenge.response_headers())
    final = await call.final()
    assert final.status == 503
    assert len(pbx.requests("INVITE")) == 1


# -- challenges to the requests we send inside the call -------------------------------------


async def connected_call(env: B2bua, pbx: SipAgent) -> Call:
    """alice -> gateway -> PBX, answered (the PBX's INVITE is not challenged)."""
    call = await alice_calls(env)
    leg = await pbx.next_call(timeout=5)
    await leg.ring()
    await leg.answer()
    assert (await call.final()).status == 200
    return call


def challenge_without_credentials(pbx: SipAgent, server: DigestAuthenticator) -> None:
    """The PBX answers every in-dialog request that has no Proxy-Authorization with 407; one
    that has credentials gets the agent's default answer (re-INVITEs: 200 with SDP)."""

    async def hook(received: Received) -> bool:
        request = received.request
        if request.headers.get("Proxy-Authorization") is None:
            challenge = server.challenge(AuthKind.PROXY, now=trio.current_time())
            await pbx.respond(received, 407, extra=challenge.response_headers())
            return True
        if request.method == "INVITE":
            await pbx.respond(received, 200, body=pbx.answer_sdp(request.body))
            return True
        return False

    pbx.in_dialog = hook


async def test_a_challenged_bye_is_sent_again_with_the_trunks_credentials(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    # Without this the carrier never gets an accepted BYE and bills the call until its own
    # timers end it.
    env, pbx = await start(nursery, tmp_path, voipgw_seed)
    server = pbx_server()
    call = await connected_call(env, pbx)
    challenge_without_credentials(pbx, server)

    assert (await call.bye()).status == 200
    first = (await pbx.next_request("BYE", timeout=5)).request
    second = (await pbx.next_request("BYE", timeout=5)).request
    assert first.headers.get("Proxy-Authorization") is None
    # RFC 3261 §22.2: the same dialog (Call-ID, tags), the next CSeq, a new branch.
    assert (second.call_id, second.from_.tag, second.to.tag) == (
        first.call_id,
        first.from_.tag,
        first.to.tag,
    )
    assert second.cseq.number == first.cseq.number + 1
    assert second.top_via.branch != first.top_via.branch
    assert second.headers.get("Reason") == first.headers.get("Reason")
    assert verify(server, second) == Authenticated(
        "voipgw-1", "pbx.test", DigestAlgorithm.SHA_256, "auth"
    )
    await eventually(lambda: env.calls == 0)
    await trio.sleep(40)  # past Timer F: nothing more is sent
    assert len(pbx.requests("BYE")) == 2


async def test_a_bye_challenged_again_is_given_up_with_a_warning(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    env, pbx = await start(nursery, tmp_path, voipgw_seed, password="not-the-pbx-password")
    server = pbx_server()
    call = await connected_call(env, pbx)

    async def always_challenge(received: Received) -> bool:
        challenge = server.challenge(AuthKind.PROXY, now=trio.current_time())
        await pbx.respond(received, 407, extra=challenge.response_headers())
        return True

    pbx.in_dialog = always_challenge
    with caplog.at_level(logging.INFO, logger="gateway.core.calls.call"):
        assert (await call.bye()).status == 200
        await trio.sleep(40)
    assert len(pbx.requests("BYE")) == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("pbx refused our BYE with credentials (407" in w for w in warnings), warnings
    assert not any("not-the-pbx-password" in r.getMessage() for r in caplog.records)


async def test_a_challenged_reinvite_is_sent_again_and_the_caller_gets_the_answer(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, pbx = await start(nursery, tmp_path, voipgw_seed)
    server = pbx_server()
    call = await connected_call(env, pbx)
    challenge_without_credentials(pbx, server)

    hold = await call.reinvite(env.alice.offer_sdp(direction="sendonly"))
    assert hold.status == 200
    assert b"a=recvonly" in hold.body
    first, second = (r for r in pbx.requests("INVITE") if r.to.tag is not None)
    assert first.headers.get("Proxy-Authorization") is None
    assert second.cseq.number == first.cseq.number + 1
    assert second.body == first.body
    assert isinstance(verify(server, second), Authenticated)
    # The 2xx to the retry is ACKed with the retry's CSeq (RFC 3261 §13.2.2.4).
    await eventually(lambda: any(a.cseq.number == second.cseq.number for a in pbx.requests("ACK")))
    assert (await call.bye()).status == 200


async def test_a_trunk_without_credentials_gets_no_answer_in_the_dialog_either(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, pbx = await start(nursery, tmp_path, voipgw_seed, password=None)
    server = pbx_server()
    call = await connected_call(env, pbx)
    challenge_without_credentials(pbx, server)

    # The caller gets 503, not the trunk's challenge (as for the first INVITE).
    refused = await call.reinvite(env.alice.offer_sdp(direction="sendonly"))
    assert refused.status == 503
    assert refused.headers.get("Proxy-Authenticate") is None
    assert (await call.bye()).status == 200
    await trio.sleep(40)
    assert len(pbx.requests("BYE")) == 1


async def test_a_bye_to_a_trunk_that_called_us_is_answered_too(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    # The PBX is the A leg here (recognised by its source address); alice hangs up.
    env, pbx = await start(nursery, tmp_path, voipgw_seed)
    server = pbx_server()
    inbound = await pbx.invite(env.did_uri(ALICE_AT_PBX))
    assert (await inbound.final()).status == 200
    at_alice = await env.alice.next_call(timeout=5)
    challenge_without_credentials(pbx, server)

    assert (await at_alice.bye()).status == 200
    first = (await pbx.next_request("BYE", timeout=5)).request
    second = (await pbx.next_request("BYE", timeout=5)).request
    assert second.cseq.number == first.cseq.number + 1
    assert isinstance(verify(server, second), Authenticated)
    await eventually(lambda: env.calls == 0)
