"""The call record says how the caller authenticated (the leg's ``auth``, docs/media_security.md):
an account by its digest credentials (realm, algorithm, qop: never the HA1, password, nonce or
response), a trunk by the address it called from; null on the legs the gateway called. For
operators investigating fraud: which calls a leaked password made, which a carrier's address.

The set-up is b2bua_env.py's (gateway at 127.0.0.1, trunk "carrier" at 127.0.0.2 accepted by
source, alice at 127.0.0.3 with a password).
"""

from __future__ import annotations

from pathlib import Path

import trio

from gateway.core.auth.algorithms import DigestAlgorithm, compute_ha1
from gateway.core.auth.client import usable_challenge
from gateway.core.sip.message import Request
from gateway.core.sip.parser import parse_message_untrusted
from gateway.core.store.interface import CallRecord
from tests.component.calls.b2bua_env import (
    ALICE,
    ALICE_PASSWORD,
    GW,
    REALM,
    B2bua,
    answered_call,
    eventually,
    sent,
    start_b2bua,
)


async def ended_record(env: B2bua) -> CallRecord:
    """The one call's record, once saved ended (records reach the store in batches)."""
    store = env.gateway.store
    assert store is not None
    await eventually(
        lambda: [r.ended_at is not None for r in store.call_records_recent()] == [True]
    )
    [record] = store.call_records_recent()
    return record


async def test_a_trunk_call_accepted_by_source_is_recorded_with_that_address(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    call, _ = await answered_call(env)
    assert (await call.bye()).status == 200
    security = (await ended_record(env)).security
    assert security["a"]["peer_kind"] == "trunk" and security["a"]["peer_name"] == "carrier"
    assert security["a"]["auth"] == {"method": "source", "source": "127.0.0.2"}
    assert security["b"]["auth"] is None  # alice's phone, called by us: it proved nothing


async def test_an_account_call_is_recorded_with_its_digest_and_no_secret(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    call = await env.alice.invite("sip:+15551234@127.0.0.1:5060")
    challenge_response = await call.final()
    assert challenge_response.status == 407
    await call.authenticate()
    assert (await call.final()).status == 200
    await env.trunk.next_call()
    assert (await call.bye()).status == 200
    record = await ended_record(env)
    security = record.security
    assert security["a"]["peer_kind"] == "account" and security["a"]["peer_name"] == "alice"
    # What alice's credentials answered: the first challenge she can answer.
    challenge = usable_challenge(challenge_response)
    assert challenge is not None
    assert security["a"]["auth"] == {
        "method": "digest",
        "realm": REALM,
        "algorithm": challenge.algorithm.value,
        "qop": "auth" if challenge.qop_auth else None,
        "device_certificate": False,
    }
    assert security["b"]["auth"] is None  # the trunk, called by us
    # No secret of the exchange anywhere in the record: the password, any HA1 of it, the nonce
    # and the digest response alice sent.
    [credentials] = [
        parsed.headers.get("Proxy-Authorization")
        for datagram in sent(env.network.capture, ALICE, GW, b"INVITE ")
        if isinstance(parsed := parse_message_untrusted(datagram.data), Request)
        and "Proxy-Authorization" in parsed.headers
    ]
    assert credentials is not None
    response = credentials.split("response=", 1)[1].split('"')[1]
    secrets = [ALICE_PASSWORD, challenge.nonce, response] + [
        compute_ha1(algorithm, "alice", REALM, ALICE_PASSWORD) for algorithm in DigestAlgorithm
    ]
    for secret in secrets:
        assert secret not in record.security_json
