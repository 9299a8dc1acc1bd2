"""A trunk that challenges the INVITEs we send it (RFC 3261 §22.2): the gateway answers once with
the trunk's configured ``username``/``password`` in a new INVITE (same Call-ID and From tag,
CSeq + 1); wrong credentials (challenged again) and trunks without credentials end with 503, never
passing the trunk's challenge to the caller. The PBX verifies with the gateway's own digest
server. Signalling on the in-memory network, virtual time."""

from __future__ import annotations

from pathlib import Path

import trio

from gateway.core.auth.algorithms import DigestAlgorithm, compute_ha1
from gateway.core.auth.digest import Authenticated, AuthKind, DigestAuthenticator, DigestConfig
from gateway.core.ids import SeededIds
from gateway.core.sip.message import Request
from gateway.testing.network import Address
from gateway.testing.sip_agent import Call, SipAgent
from tests.component.calls.b2bua_env import GW, B2bua, eventually, sent, start_b2bua

PBX: Address = ("127.0.0.4", 5060)
PBX_PASSWORD = "pbx-trunk-secret"
NUMBER = "+447700900123"


def pbx_trunk(password: str | None = PBX_PASSWORD) -> dict[str, object]:
    trunk: dict[str, object] = {
        "name": "pbx",
        "address": "udp:127.0.0.4:5060",
        "prefixes": ["+44"],
        "allowed_sources": [],
    }
    if password is not None:
        trunk |= {"username": "voipgw-1", "password": password}
    return trunk


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


async def alice_calls(env: B2bua) -> Call:
    call = await env.alice.invite(env.did_uri(NUMBER))
    assert (await call.final()).status == 407  # alice authenticates to us first
    await call.authenticate()
    return call


def pbx_server() -> DigestAuthenticator:
    return DigestAuthenticator(
        DigestConfig(realm="pbx.test"), secret=b"p" * 32, entropy=lambda n: b"x" * n
    )


def verify(server: DigestAuthenticator, request: Request) -> object:
    return server.authenticate(
        request.headers.get_all("Proxy-Authorization"),
        kind=AuthKind.PROXY,
        method="INVITE",
        request_uri=str(request.uri),
        now=trio.current_time(),
        lookup=lambda user, realm, algorithm: compute_ha1(algorithm, user, realm, PBX_PASSWORD),
    )


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
