"""A verifier that requires an Identity (``missing_identity = "reject"``, RFC 8224 §6.2.2)
through the call core, with the injected fetcher of test_b2bua_stir_shaken.py:

- a trunk's INVITE without an Identity, or with none of PASSporT type shaken, is refused with
  428 Use Identity Header before it is routed; one with a valid Identity goes on; the refusals
  are counted (``no_identity_refused``);
- an emergency call (``[numbering] emergency_numbers``) is refused neither for a missing
  Identity nor, under ``on_failure = "reject"``, for a failed one (ATIS-1000074, FCC rules);
- a trunk not in ``verify_trunks`` is not asked for one.

Set-up as b2bua_env.py: trunk "carrier" at 127.0.0.2 (+1 numbers; the caller is +15550100)
calls alice's DID; a router sends the trunk's calls to 911 back out to it (the PSAP's carrier).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import trio
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.core.hookspecs import hookimpl
from gateway.core.interfaces import RouteDecision
from gateway.core.status import CallStatistics, StatusView
from gateway.plugins.metrics.collect import render
from gateway.testing.sti_pki import make_identity, make_pki
from tests.component.calls.b2bua_env import ALICE_DID, B2bua, start_b2bua
from tests.component.calls.stir_shaken_calls import (
    CALLER,
    OUR_X5U,
    X5U,
    InjectedStirShaken,
    call_alice,
    identity,
    start,
)
from tests.component.calls.stir_shaken_refusals import RefuseEverything, seen

EMERGENCY_URI = "sip:911@127.0.0.1:5060"


def outcomes(env: B2bua) -> dict[str, int]:
    assert env.gateway.calls is not None
    return dict(env.gateway.calls.identity_outcomes)


async def test_a_call_without_a_shaken_identity_is_refused_with_428(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    pki = make_pki()
    plugin = InjectedStirShaken(pki)
    env = await start(nursery, tmp_path, voipgw_seed, plugin, missing_identity="reject")
    unsigned = await env.trunk.invite(env.did_uri(ALICE_DID))
    final = await unsigned.final()
    assert (final.status, final.reason) == (428, "Use Identity Header")
    # An Identity of another PASSporT type (RFC 8225 §8.1 ppt) has nothing SHAKEN to verify.
    other = make_identity(
        pki.signer_key,
        X5U,
        orig=CALLER[1:],
        dest=ALICE_DID[1:],
        iat=int(time.time()),
        header={"alg": "ES256", "ppt": "div", "typ": "passport", "x5u": X5U},
    )
    diverted = await env.trunk.invite(env.did_uri(ALICE_DID), extra=[("Identity", other)])
    assert (await diverted.final()).status == 428
    assert env.alice.requests("INVITE") == []
    assert plugin.fetched == []
    # A signed call goes on as before.
    user, _ = await call_alice(env, [identity(pki.signer_key)])
    assert user == f"{CALLER};verstat=TN-Validation-Passed"
    assert outcomes(env) == {"no_identity_refused": 2, "passed": 1}
    scraped = render(StatusView(env.gateway, CallStatistics())).decode()
    assert 'voipgw_caller_identity_total{outcome="no_identity_refused"} 2\n' in scraped


async def test_a_trunk_not_verified_is_not_asked_for_an_identity(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    plugin = InjectedStirShaken(make_pki())
    env = await start(
        nursery,
        tmp_path,
        voipgw_seed,
        plugin,
        missing_identity="reject",
        verify_trunks=["another-carrier"],
    )
    user, _ = await call_alice(env, [])
    assert user == CALLER  # no verstat: not checked at all
    assert outcomes(env) == {}


class EmergencyRouter:
    """Routes the trunk's calls to 911 back out to the trunk "carrier" (as a PBX trunk's
    emergency calls go on to the carrier that reaches the PSAP)."""

    @hookimpl
    def gateway_route_call(self, request: Any, caller: Any, directory: Any) -> Any:
        if caller.kind != "trunk" or request.uri.user != "911":
            return None
        return RouteDecision(targets=(directory.trunk_target("carrier", "911"),))


async def test_an_emergency_call_is_never_refused_for_its_identity(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    pki = make_pki()
    plugin = InjectedStirShaken(pki)
    anchors, key, _ = pki.write(tmp_path)
    env = await start_b2bua(
        nursery,
        tmp_path,
        voipgw_seed,
        plugins=[("stir_shaken", plugin), ("emergency", EmergencyRouter())],
        plugin_tables={
            "enable": ["stir_shaken", "emergency"],
            "stir_shaken": {
                "sign_trunks": ["carrier"],
                "certificate_url": OUR_X5U,
                "private_key": str(key),
                "verify_trunks": ["carrier"],
                "trust_anchors": str(anchors),
                "check_revocation": False,
                "missing_identity": "reject",
                "on_failure": "reject",
            },
        },
    )
    # Without an Identity: 428 to alice's DID, but the call to 911 goes through.
    refused = await env.trunk.invite(env.did_uri(ALICE_DID))
    assert (await refused.final()).status == 428
    await env.trunk.invite(EMERGENCY_URI)
    passed_on = (await env.trunk.next_call()).invite
    assert passed_on.uri.user == "911"
    # A forged Identity: 438 to alice's DID, but the call to 911 goes through.
    forger = ec.generate_private_key(ec.SECP256R1())
    forged = await env.trunk.invite(env.did_uri(ALICE_DID), extra=[identity(forger)])
    assert (await forged.final()).status == 438
    await env.trunk.invite(EMERGENCY_URI, extra=[identity(forger, dest="911")])
    assert (await env.trunk.next_call()).invite.uri.user == "911"
    assert env.alice.requests("INVITE") == []
    # (the second emergency call's Identity went on with it to the signing trunk: passed_on)
    assert outcomes(env) == {
        "no_identity_refused": 1,
        "no_identity": 1,
        "bad_signature": 2,
        "passed_on": 1,
    }
    assert env.gateway.calls is not None
    records = [
        described
        for call in env.gateway.calls.calls
        for described in call.security_record().get("caller_identity", [])  # type: ignore[attr-defined]
    ]
    assert sorted(records) == [
        "caller number not verified (no Identity; an emergency call is not refused)",
        "caller number verification failed: signature does not verify; "
        "an emergency call is not refused",
        "caller's Identity passed on to trunk carrier",
    ]


async def test_the_core_drops_any_plugins_refusal_of_an_emergency_call(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    seen.clear()
    env = await start_b2bua(
        nursery,
        tmp_path,
        voipgw_seed,
        plugins=[("refuse-everything", RefuseEverything()), ("emergency", EmergencyRouter())],
        plugin_tables={"enable": ["refuse-everything", "emergency"]},
    )
    refused = await env.trunk.invite(env.did_uri(ALICE_DID))
    assert (await refused.final()).status == 403
    await env.trunk.invite(EMERGENCY_URI)
    assert (await env.trunk.next_call()).invite.uri.user == "911"
    assert seen == [False, True]  # the plugin was told which call is an emergency call
    assert outcomes(env) == {"failed": 2}
