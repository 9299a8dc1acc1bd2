"""The registrar and registering carrier of the in-memory trunk registration tests: moved here from
test_b2bua_trunk_registration.py so that no test module imports another."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from gateway.core.auth.algorithms import DigestAlgorithm, compute_ha1, compute_response
from gateway.core.auth.credentials import parse_credentials_untrusted
from gateway.core.sip.message import Request
from gateway.testing.sip_agent import Received, SipAgent
from tests.component.calls.b2bua_env import B2bua, eventually, start_b2bua

USERNAME, PASSWORD, REALM = "customer-17", "carrier-secret", "carrier.example"
REGISTERING = {
    "register": True,
    "username": USERNAME,
    "password": PASSWORD,
    "register_domain": "carrier.example",
    "register_expires": 120,
}


class Registrar:
    """A carrier's registrar: challenges every REGISTER without valid credentials (MD5,
    qop=auth) and answers a valid one with ``answer`` (200 granting ``grant`` seconds by
    default)."""

    def __init__(self, agent: SipAgent, *, grant: int = 120) -> None:
        self.agent = agent
        self.grant = grant
        self.answer: tuple[int, list[tuple[str, str]]] | None = None  # instead of the 200
        self.contact_params: str | None = None  # instead of ";expires=GRANT" in the 200
        self.registers: list[tuple[float, Request]] = []
        self.accepted: list[Request] = []
        agent.out_of_dialog = self

    async def __call__(self, received: Received) -> bool:
        request = received.request
        if request.method != "REGISTER":
            return False
        self.registers.append((trio.current_time(), request))
        value = request.headers.get("Authorization")
        if value is None or not self._valid(request, value):
            challenge = f'Digest realm="{REALM}", nonce="n{len(self.registers)}", qop="auth"'
            await self.agent.respond(received, 401, extra=[("WWW-Authenticate", challenge)])
            return True
        if self.answer is not None:
            status, extra = self.answer
            await self.agent.respond(received, status, extra=extra)
            return True
        self.accepted.append(request)
        contact = request.headers.get("Contact") or ""
        expires = request.headers.get("Expires")
        granted = 0 if expires == "0" else self.grant
        params = self.contact_params if self.contact_params is not None else f";expires={granted}"
        await self.agent.respond(received, 200, extra=[("Contact", f"{contact}{params}")])
        return True

    def _valid(self, request: Request, value: str) -> bool:
        credentials = parse_credentials_untrusted(value)
        assert credentials is not None and credentials.username == USERNAME
        ha1 = compute_ha1(DigestAlgorithm.MD5, USERNAME, REALM, PASSWORD)
        expected = compute_response(
            DigestAlgorithm.MD5,
            ha1,
            method="REGISTER",
            uri=credentials.uri,
            nonce=credentials.nonce,
            qop=credentials.qop,
            nc=credentials.nc,
            cnonce=credentials.cnonce,
        )
        return credentials.response == expected and credentials.nonce.startswith("n")


async def registering_carrier(
    nursery: trio.Nursery, tmp_path: Path, seed: int, **carrier: Any
) -> tuple[B2bua, Registrar]:
    env = await start_b2bua(nursery, tmp_path, seed, carrier={**REGISTERING, **carrier})
    registrar = Registrar(env.trunk)
    # The first REGISTER went out as the gateway started, before the agent was a registrar
    # (answered 501): registered at the retry, 30 s later.
    registration = env.gateway.trunk_registrations["carrier"]
    await eventually(lambda: registration.registered, timeout=40)
    return env, registrar
