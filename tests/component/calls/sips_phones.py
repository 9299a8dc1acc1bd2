"""The SIPS environment, TLS phones and checks of the in-memory SIPS tests: moved here from
test_b2bua_sips.py so that no test module imports another."""

from __future__ import annotations

from pathlib import Path

import trio

from gateway.core.ids import SeededIds
from gateway.core.sip.message import Response
from gateway.testing.sip_agent import SipAgent
from tests.component.calls.b2bua_env import (
    B2bua,
    start_b2bua,
)

GW_TLS = ("127.0.0.1", 5061)
BOB = ("127.0.0.4", 5060)
TLS_TRUNK = ("127.0.0.6", 5061)
ALICE_TLS = ("127.0.0.5", 5060)

CAROL = ("127.0.0.7", 5060)
OUR_SIPS_CONTACT = "<sips:voipgw@127.0.0.1:5061>"


async def sips_env(
    nursery: trio.Nursery, tmp_path: Path, seed: int, *, tls_trunk: bool = True
) -> tuple[B2bua, SipAgent]:
    secure_carrier = {"name": "secure-carrier", "address": "tls:127.0.0.6:5061", "prefixes": ["+1"]}
    env = await start_b2bua(
        nursery,
        tmp_path,
        seed,
        sip={"listen": ["udp:127.0.0.1:5060", "tls:127.0.0.1:5061"]},
        tls_stand_in=True,
        extra_trunks=[secure_carrier] if tls_trunk else [],
    )
    bob = await tls_phone(env, nursery, BOB, "bob", "bob-password-1", seed + 5)
    return env, bob


async def tls_phone(
    env: B2bua, nursery: trio.Nursery, address: tuple[str, int], user: str, pw: str, seed: int
) -> SipAgent:
    phone = SipAgent(
        env.network, address, ids=SeededIds(seed), user=user, password=pw, proxy=GW_TLS
    )
    await nursery.start(phone.serve)
    registered = await phone.register()
    assert registered.status == 200, registered.reason
    return phone


def assert_sips_not_allowed(final: Response) -> None:
    assert final.status == 480, final.reason
    assert (final.headers.get("Warning") or "").startswith("380 ")
