"""The STIR/SHAKEN identity, certificates and calls of the in-memory STIR/SHAKEN tests: moved here
from test_b2bua_stir_shaken.py so that no test module imports another."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import trio
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.core.hookspecs import hookimpl
from gateway.plugins.stir_shaken import StirShaken, StirShakenConfig
from gateway.plugins.stir_shaken.fetch import Fetched
from gateway.testing.sti_pki import StiPki, make_identity
from tests.component.calls.b2bua_env import ALICE_DID, B2bua, start_b2bua

X5U = "https://certs.carrier.example/shaken.pem"
OUR_X5U = "https://certs.voipgw.example/shaken.pem"
CALLER = "+15550100"  # the trunk agent's From user


class InjectedStirShaken:
    """The stir_shaken plugin with a fetcher of the test's (its hooks, its config class)."""

    def __init__(self, pki: StiPki, *, delay: float = 0.0) -> None:
        self.pki = pki
        self.delay = delay
        self.fetched: list[str] = []
        self.later = 0.0  # seconds the service's wall clock is ahead of time.time()
        self.max_age: float | None = 600.0  # the answer's Cache-Control max-age (None: none)

    async def fetch(self, url: str) -> Fetched:
        self.fetched.append(url)
        await trio.sleep(self.delay)
        return Fetched(self.pki.chain_pem(), max_age=self.max_age)

    @hookimpl
    def gateway_plugin_config(self) -> type:
        return StirShakenConfig

    @hookimpl
    def gateway_register_caller_identity(self, registry: Any, config: StirShakenConfig) -> None:
        registry.add("stir_shaken", StirShaken(config, fetcher=self.fetch, clock=self.clock))

    def clock(self) -> float:
        return time.time() + self.later


async def start(
    nursery: trio.Nursery,
    tmp_path: Path,
    seed: int,
    plugin: InjectedStirShaken,
    *,
    check_revocation: bool | None = False,
    **table: Any,
) -> B2bua:
    """The gateway with the injected plugin; ``check_revocation`` off unless told (None: the
    key left out, its default): these tests' certificates name no CRL, which would leave every
    call "revocation not checked" (test_b2bua_stir_shaken_revocation.py is about revocation)."""
    if check_revocation is not None:
        table["check_revocation"] = check_revocation
    anchors, key, _ = plugin.pki.write(tmp_path)
    return await start_b2bua(
        nursery,
        tmp_path,
        seed,
        plugins=[("stir_shaken", plugin)],
        plugin_tables={
            "enable": ["stir_shaken"],
            "stir_shaken": {
                "sign_trunks": ["carrier"],
                "certificate_url": OUR_X5U,
                "private_key": str(key),
                "verify_trunks": ["carrier"],
                "trust_anchors": str(anchors),
                **table,
            },
        },
    )


def identity(key: ec.EllipticCurvePrivateKey, **claims: Any) -> tuple[str, str]:
    fields: dict[str, Any] = {
        "orig": CALLER[1:],
        "dest": ALICE_DID[1:],
        "iat": int(time.time()),
        **claims,
    }
    return ("Identity", make_identity(key, X5U, **fields))


async def call_alice(env: B2bua, extra: list[tuple[str, str]]) -> tuple[str, Any]:
    """The trunk calls alice's DID with ``extra`` headers: the From user alice's phone sees
    and the call (ringing at alice, not answered)."""
    call = await env.trunk.invite(env.did_uri(ALICE_DID), extra=extra)
    leg_b = await env.alice.next_call()
    user = leg_b.invite.from_.uri.user
    assert isinstance(user, str)
    return user, call


def caller_identity_record(env: B2bua) -> list[str]:
    assert env.gateway.calls is not None
    (call,) = env.gateway.calls.calls
    record = call.security_record()
    return list(record.get("caller_identity", []))  # type: ignore[call-overload]
