"""The PBX trunk server, its credentials and alice's calls of the in-memory trunk authentication
tests: moved here from test_b2bua_trunk_auth.py so that no test module imports another."""

from __future__ import annotations

import trio

from gateway.core.auth.algorithms import compute_ha1
from gateway.core.auth.digest import AuthKind, DigestAuthenticator, DigestConfig
from gateway.core.sip.message import Request
from gateway.testing.network import Address
from gateway.testing.sip_agent import Call
from tests.component.calls.b2bua_env import B2bua

PBX: Address = ("127.0.0.4", 5060)
PBX_TRUNK = {"name": "pbx", "address": "udp:127.0.0.4:5060", "prefixes": ["+44"]}
PBX_PASSWORD = "pbx-trunk-secret"
NUMBER = "+447700900123"
ALICE_AT_PBX = "+442079460000"  # a DID of the PBX trunk that reaches alice


def pbx_trunk(password: str | None = PBX_PASSWORD) -> dict[str, object]:
    trunk: dict[str, object] = {
        "name": "pbx",
        "address": "udp:127.0.0.4:5060",
        "prefixes": ["+44"],
        "allowed_sources": ["127.0.0.4"],
        "dids": {ALICE_AT_PBX: "alice"},
    }
    if password is not None:
        trunk |= {"username": "voipgw-1", "password": password}
    return trunk


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
        method=request.method,
        request_uri=str(request.uri),
        now=trio.current_time(),
        lookup=lambda user, realm, algorithm: compute_ha1(algorithm, user, realm, PBX_PASSWORD),
    )
