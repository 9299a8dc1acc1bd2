"""STIR/SHAKEN through the call core (the ``stir_shaken`` plugin, RFC 8224, RFC 8588,
ATIS-1000074), with the certificate fetcher injected (no HTTPS here: test_stir_shaken_sipp.py
fetches for real).

- an account's call to a signing trunk carries an Identity that a verifier written apart from
  the plugin (gateway.testing.sti_pki.read_identity) accepts, attestation A for the account's
  DID;
- a trunk's call with a valid, forged, stale or missing Identity reaches the phone with
  ``verstat`` on the caller's number in the From; a failed one is refused (438, 403) only with
  ``on_failure = "reject"``; a certificate server that does not answer delays the call by
  ``fetch_timeout`` at most, and the gateway's stop does not wait for it; a certificate is
  fetched once for many calls;
- the outcome is in the call's record and counted for the metrics.

Set-up as b2bua_env.py: trunk "carrier" at 127.0.0.2 (+1 numbers; the caller is +15550100)
calls alice's DID.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.core.hookspecs import hookimpl
from gateway.core.interfaces import RouteDecision
from gateway.core.sip.message import Request
from gateway.core.status import CallStatistics, StatusView
from gateway.plugins.metrics.collect import render
from gateway.plugins.stir_shaken.fetch import Fetched
from gateway.testing.sti_pki import make_identity, make_pki, read_identity
from tests.component.calls.b2bua_env import ALICE_DID, eventually, start_b2bua
from tests.component.calls.stir_shaken_calls import (
    CALLER,
    OUR_X5U,
    X5U,
    InjectedStirShaken,
    call_alice,
    caller_identity_record,
    identity,
    start,
)


async def test_a_valid_identity_reaches_the_phone_as_tn_validation_passed(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    pki = make_pki()
    plugin = InjectedStirShaken(pki)
    env = await start(nursery, tmp_path, voipgw_seed, plugin)
    user, _ = await call_alice(env, [identity(pki.signer_key, attest="B")])
    assert user == f"{CALLER};verstat=TN-Validation-Passed"
    assert caller_identity_record(env) == ["caller number verified (attestation B)"]
    assert plugin.fetched == [X5U]
    assert env.gateway.calls is not None
    assert env.gateway.calls.identity_outcomes["passed"] == 1


@pytest.mark.parametrize(
    ("hosts", "verstat", "fetched"),
    [
        ([".repository.example", "carrier.example"], "TN-Validation-Failed", []),
        ([".repository.example", ".carrier.example"], "TN-Validation-Passed", [X5U]),
    ],
)
async def test_certificate_hosts_limit_where_certificates_are_fetched_from(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    hosts: list[str],
    verstat: str,
    fetched: list[str],
) -> None:
    """With certificate_hosts, an Identity whose x5u points anywhere else fails without a
    connection: the signer picks the URL, and must not make the gateway fetch internal ones."""
    pki = make_pki()
    plugin = InjectedStirShaken(pki)
    env = await start(nursery, tmp_path, voipgw_seed, plugin, certificate_hosts=hosts)
    user, _ = await call_alice(env, [identity(pki.signer_key, attest="A")])
    assert user == f"{CALLER};verstat={verstat}"
    assert plugin.fetched == fetched
    if not fetched:
        (described,) = caller_identity_record(env)
        assert "certificate_hosts" in described


async def test_forged_stale_and_missing_identities(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    pki = make_pki()
    plugin = InjectedStirShaken(pki)
    env = await start(nursery, tmp_path, voipgw_seed, plugin)
    forger = ec.generate_private_key(ec.SECP256R1())
    cases = [
        ([identity(forger)], "TN-Validation-Failed", "signature does not verify"),
        ([identity(pki.signer_key, iat=int(time.time()) - 120)], "TN-Validation-Failed", "fresh"),
        ([identity(pki.signer_key, orig="15559999")], "TN-Validation-Failed", "orig"),
        ([], "No-TN-Validation", "no Identity"),
    ]
    for extra, verstat, words in cases:
        user, call = await call_alice(env, extra)
        assert user == f"{CALLER};verstat={verstat}"
        (described,) = caller_identity_record(env)
        assert words in described
        await call.cancel()
        assert (await call.final()).status == 487
        await eventually(lambda: env.calls == 0)
    # The certificate was fetched for the first call only (cached for its max-age).
    assert plugin.fetched == [X5U]
    assert env.gateway.calls is not None
    outcomes = env.gateway.calls.identity_outcomes
    assert (outcomes["bad_signature"], outcomes["stale"], outcomes["wrong_number"]) == (1, 1, 1)
    assert outcomes["no_identity"] == 1
    scraped = render(StatusView(env.gateway, CallStatistics())).decode()
    assert 'voipgw_caller_identity_total{outcome="bad_signature"} 1\n' in scraped
    assert 'voipgw_caller_identity_total{outcome="no_identity"} 1\n' in scraped


async def test_on_failure_reject_refuses_with_the_rfc_8224_status(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    pki = make_pki()
    env = await start(nursery, tmp_path, voipgw_seed, InjectedStirShaken(pki), on_failure="reject")
    forger = ec.generate_private_key(ec.SECP256R1())
    forged = await env.trunk.invite(env.did_uri(ALICE_DID), extra=[identity(forger)])
    refused = await forged.final()
    assert (refused.status, refused.reason) == (438, "Invalid Identity Header")
    stale = await env.trunk.invite(
        env.did_uri(ALICE_DID), extra=[identity(pki.signer_key, iat=int(time.time()) - 600)]
    )
    assert ((await stale.final()).status, (await stale.final()).reason) == (403, "Stale Date")
    # Without an Identity the call goes on, marked.
    user, _ = await call_alice(env, [])
    assert user == f"{CALLER};verstat=No-TN-Validation"


async def test_a_certificate_server_that_does_not_answer_costs_fetch_timeout_at_most(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    pki = make_pki()
    env = await start(
        nursery, tmp_path, voipgw_seed, InjectedStirShaken(pki, delay=3600), fetch_timeout=1.5
    )
    started = trio.current_time()
    user, _ = await call_alice(env, [identity(pki.signer_key)])
    assert trio.current_time() - started < 2.5
    assert user == f"{CALLER};verstat=TN-Validation-Failed"
    (described,) = caller_identity_record(env)
    assert "timed out" in described


async def test_a_call_waiting_for_a_certificate_when_the_gateway_stops_gets_503_at_once(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """The stop ends calls still being set up too: the caller gets 503 without the stop waiting
    out ``fetch_timeout``, and the phone is not rung for a call ended at once."""
    pki = make_pki()
    plugin = InjectedStirShaken(pki, delay=3600)
    env = await start(nursery, tmp_path, voipgw_seed, plugin, fetch_timeout=30)
    call = await env.trunk.invite(env.did_uri(ALICE_DID), extra=[identity(pki.signer_key)])
    await eventually(lambda: plugin.fetched == [X5U])
    stopping = trio.current_time()
    await env.gateway.end_calls()
    assert trio.current_time() - stopping < 1
    final = await call.final()
    assert final.status == 503
    assert "gateway shutting down" in (final.headers.get("Warning") or "")
    assert env.alice.requests("INVITE") == []
    assert env.calls == 0


@pytest.mark.parametrize("certificate_cache", [3600.0, 0.001])
async def test_a_certificate_that_failed_is_not_fetched_again_for_a_minute(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    certificate_cache: float,
) -> None:
    """While a carrier's certificate server does not answer, its next calls are marked failed
    at once instead of each waiting fetch_timeout; a minute later it is asked again. Also with
    a certificate_cache that keeps no certificate (0.001): it bounds how long a certificate is
    kept, not the minute a failure is."""
    pki = make_pki()
    plugin = InjectedStirShaken(pki, delay=3600)
    env = await start(
        nursery,
        tmp_path,
        voipgw_seed,
        plugin,
        fetch_timeout=1.5,
        certificate_cache=certificate_cache,
    )
    await call_alice(env, [identity(pki.signer_key)])
    assert plugin.fetched == [X5U]
    started = trio.current_time()
    user, _ = await call_alice(env, [identity(pki.signer_key)])
    assert trio.current_time() - started < 1.0  # not fetch_timeout again
    assert user == f"{CALLER};verstat=TN-Validation-Failed"
    assert plugin.fetched == [X5U]
    plugin.later = 61.0  # a minute on (the service reads the wall clock: iat, validity)
    plugin.delay = 0.0  # the server is back
    user, _ = await call_alice(env, [identity(pki.signer_key, iat=int(time.time()) + 61)])
    assert plugin.fetched == [X5U, X5U]


async def test_an_accounts_call_to_the_trunk_is_signed_with_attestation_a(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    pki = make_pki()
    env = await start(nursery, tmp_path, voipgw_seed, InjectedStirShaken(pki))
    call = await env.alice.invite("sip:+15551234@127.0.0.1:5060")
    assert (await call.final()).status == 407
    await call.authenticate()
    invite = (await env.trunk.next_call()).invite
    (value,) = invite.headers.get_all("Identity")
    assert value.endswith(f";info=<{OUR_X5U}>;alg=ES256;ppt=shaken")
    header, claims = read_identity(value, pki.signer_key.public_key())
    assert header == {"alg": "ES256", "ppt": "shaken", "typ": "passport", "x5u": OUR_X5U}
    assert claims["attest"] == "A"  # alice presents her own DID on the carrier
    assert claims["orig"] == {"tn": ALICE_DID[1:]}
    assert claims["dest"] == {"tn": ["15551234"]}
    assert abs(claims["iat"] - time.time()) < 60
    assert caller_identity_record(env) == ["caller number signed for trunk carrier (attestation A)"]


async def test_a_transfer_to_the_trunk_is_signed_for_the_transferor(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """The carrier's caller, transferred by alice to an outside number: our INVITE to the
    carrier presents alice's number (carriers take only their customers' numbers), so it is
    signed as her call, attestation A, like her own calls."""
    pki = make_pki()
    env = await start(nursery, tmp_path, voipgw_seed, InjectedStirShaken(pki))
    incoming = await env.trunk.invite(env.did_uri(ALICE_DID))
    alice_leg = await env.alice.next_call()
    assert (await incoming.final()).status == 200
    exchange = await alice_leg.request("REFER", extra=[("Refer-To", "<sip:+15551234@127.0.0.1>")])
    assert (await exchange.final()).status == 202
    invite = (await env.trunk.next_call()).invite
    (value,) = invite.headers.get_all("Identity")
    _, claims = read_identity(value, pki.signer_key.public_key())
    assert claims["attest"] == "A"
    assert claims["orig"] == {"tn": ALICE_DID[1:]}
    assert claims["dest"] == {"tn": ["15551234"]}


async def test_without_the_plugin_nothing_is_signed_or_marked(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    assert env.gateway.calls is not None and env.gateway.calls.caller_identity == []
    # No family in a scrape of a gateway without the plugin.
    assert b"caller_identity" not in render(StatusView(env.gateway, CallStatistics()))
    user, _ = await call_alice(env, [identity(make_pki().signer_key)])
    assert user == CALLER
    call = await env.alice.invite("sip:+15551234@127.0.0.1:5060")
    assert (await call.final()).status == 407
    await call.authenticate()
    invite = (await env.trunk.next_call()).invite
    assert invite.headers.get_all("Identity") == ()


async def test_a_burst_of_calls_fetches_a_new_certificate_once(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    pki = make_pki()
    plugin = InjectedStirShaken(pki, delay=0.5)
    env = await start(nursery, tmp_path, voipgw_seed, plugin)
    first = await env.trunk.invite(env.did_uri(ALICE_DID), extra=[identity(pki.signer_key)])
    second = await env.trunk.invite(env.did_uri(ALICE_DID), extra=[identity(pki.signer_key)])
    users = [(await env.alice.next_call()).invite.from_.uri.user for _ in range(2)]
    assert users == [f"{CALLER};verstat=TN-Validation-Passed"] * 2
    assert plugin.fetched == [X5U]
    for call in (first, second):
        assert (await call.final()).status == 200


@pytest.mark.parametrize(("max_age", "fetches"), [(0.0, 1), (None, 1), (600.0, 1)])
async def test_a_certificate_is_kept_for_its_max_age_and_for_certificate_cache_at_max_age_0(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    max_age: float | None,
    fetches: int,
) -> None:
    """ATIS-1000074: an answer without caching directives, or saying to cache for less than a
    day (max-age=0), is still cached by the verifier; the gateway keeps it certificate_cache
    (an hour) as it always has. Not kept at all, every verified call fetched it again and
    waited for the repository (up to fetch_timeout), and a slow or failing one rejected calls
    that an earlier release verified from its cache."""
    pki = make_pki()
    plugin = InjectedStirShaken(pki)
    plugin.max_age = max_age
    env = await start(nursery, tmp_path, voipgw_seed, plugin)
    for _ in range(2):
        user, call = await call_alice(env, [identity(pki.signer_key)])
        assert user == f"{CALLER};verstat=TN-Validation-Passed"
        await call.cancel()
        assert (await call.final()).status == 487
        await eventually(lambda: env.calls == 0)
    assert plugin.fetched == [X5U] * fetches


async def test_calls_at_once_share_one_fetch_of_a_max_age_0_certificate(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """A burst of calls waits for one fetch, not one each."""
    pki = make_pki()
    plugin = InjectedStirShaken(pki, delay=0.5)
    plugin.max_age = 0.0
    env = await start(nursery, tmp_path, voipgw_seed, plugin)
    await env.trunk.invite(env.did_uri(ALICE_DID), extra=[identity(pki.signer_key)])
    await env.trunk.invite(env.did_uri(ALICE_DID), extra=[identity(pki.signer_key)])
    users = [(await env.alice.next_call()).invite.from_.uri.user for _ in range(2)]
    assert users == [f"{CALLER};verstat=TN-Validation-Passed"] * 2
    assert plugin.fetched == [X5U]


class TransitRouter:
    """Routes every trunk's call back out to the trunk "carrier" (a transit carrier)."""

    @hookimpl
    def gateway_route_call(self, request: Any, caller: Any, directory: Any) -> Any:
        if caller.kind != "trunk":
            return None
        target = directory.trunk_target("carrier", "+15559876")
        return RouteDecision(targets=(target,))


async def test_a_transit_call_keeps_the_identity_it_came_with(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    pki = make_pki()
    plugin = InjectedStirShaken(pki)
    _, key, _ = pki.write(tmp_path)
    env = await start_b2bua(
        nursery,
        tmp_path,
        voipgw_seed,
        plugins=[("stir_shaken", plugin), ("transit", TransitRouter())],
        plugin_tables={
            "enable": ["stir_shaken", "transit"],
            "stir_shaken": {
                "sign_trunks": ["carrier"],
                "certificate_url": OUR_X5U,
                "private_key": str(key),
            },
        },
    )
    header = identity(pki.signer_key, dest="15559876")
    await env.trunk.invite("sip:+15559876@127.0.0.1:5060", extra=[header])
    passed_on = (await env.trunk.next_call()).invite
    assert passed_on.headers.get_all("Identity") == (header[1],)
    await env.trunk.invite("sip:+15559876@127.0.0.1:5060")
    unsigned = (await env.trunk.next_call()).invite
    assert unsigned.headers.get_all("Identity") == ()  # sign_transit is off: not ours to sign
    assert env.gateway.calls is not None
    assert env.gateway.calls.identity_outcomes["passed_on"] == 1


async def test_a_signer_that_rotated_its_key_is_not_refused_under_reject(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """The carrier's repository serves a new certificate at the same x5u URL while the old one
    is cached (max-age=600): the first call signed with the new key has the URL fetched again
    and rings TN-Validation-Passed, where it was refused with 438 until the cache ran out."""
    pki = make_pki()
    plugin = InjectedStirShaken(pki)
    env = await start(nursery, tmp_path, voipgw_seed, plugin, on_failure="reject")
    user, call = await call_alice(env, [identity(pki.signer_key)])
    assert user == f"{CALLER};verstat=TN-Validation-Passed"
    await call.cancel()
    await eventually(lambda: env.calls == 0)
    plugin.pki = pki.with_new_signer()
    user, _ = await call_alice(env, [identity(plugin.pki.signer_key)])
    assert user == f"{CALLER};verstat=TN-Validation-Passed"
    assert caller_identity_record(env) == ["caller number verified (attestation A)"]
    assert plugin.fetched == [X5U, X5U]


async def test_a_certificate_fetched_again_is_bounded_by_the_calls_fetch_timeout(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """A forced re-fetch runs within the call's own fetch_timeout: a repository that no longer
    answers leaves the call failed (its signature does not verify with the cached certificate)
    after fetch_timeout, not later, and the cached certificate stays for the calls it signs."""
    pki = make_pki()
    plugin = InjectedStirShaken(pki)
    env = await start(nursery, tmp_path, voipgw_seed, plugin, fetch_timeout=1.5)
    user, call = await call_alice(env, [identity(pki.signer_key)])
    await call.cancel()
    await eventually(lambda: env.calls == 0)
    plugin.delay = 3600.0
    forger = ec.generate_private_key(ec.SECP256R1())
    started = trio.current_time()
    user, call = await call_alice(env, [identity(forger)])
    assert 1.5 <= trio.current_time() - started < 2.5
    assert user == f"{CALLER};verstat=TN-Validation-Failed"
    assert caller_identity_record(env) == [
        "caller number verification failed: signature does not verify"
    ]
    await call.cancel()
    await eventually(lambda: env.calls == 0)
    user, _ = await call_alice(env, [identity(pki.signer_key)])
    assert user == f"{CALLER};verstat=TN-Validation-Passed"
    assert plugin.fetched == [X5U, X5U]


async def test_a_call_whose_fetch_timeout_is_spent_does_not_spend_the_urls_minute(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """An INVITE whose first Identity header's certificate never comes uses up its
    fetch_timeout; its second, signed with the carrier's new key, fails with the cached
    certificate with no time left to fetch it again: the URL is not fetched, and the next call
    signed with the new key has it fetched again (not refused for the minute after)."""
    slow_x5u = "https://slow.carrier.example/shaken.pem"

    class SlowSecondRepository(InjectedStirShaken):
        async def fetch(self, url: str) -> Fetched:
            if url == slow_x5u:
                await trio.sleep_forever()
            return await super().fetch(url)

    pki = make_pki()
    plugin = SlowSecondRepository(pki)
    env = await start(nursery, tmp_path, voipgw_seed, plugin, fetch_timeout=1.5)
    user, call = await call_alice(env, [identity(pki.signer_key)])
    await call.cancel()
    await eventually(lambda: env.calls == 0)
    rotated = pki.with_new_signer()
    plugin.pki = rotated
    slow = make_identity(
        rotated.signer_key, slow_x5u, orig=CALLER[1:], dest=ALICE_DID[1:], iat=int(time.time())
    )
    user, call = await call_alice(env, [("Identity", slow), identity(rotated.signer_key)])
    assert user == f"{CALLER};verstat=TN-Validation-Failed"
    await call.cancel()
    await eventually(lambda: env.calls == 0)
    assert plugin.fetched == [X5U]
    user, _ = await call_alice(env, [identity(rotated.signer_key)])
    assert user == f"{CALLER};verstat=TN-Validation-Passed"
    assert plugin.fetched == [X5U, X5U]


async def test_a_call_waiting_for_anothers_re_fetch_gives_up_at_its_own_deadline(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """A call whose fetch_timeout an earlier Identity header used up, and whose next header
    fails with the cached certificate while another call fetches it again from a repository
    that no longer answers, fails at its own deadline, not at the other call's."""
    slow_x5u = "https://slow.carrier.example/shaken.pem"

    class Repositories(InjectedStirShaken):
        async def fetch(self, url: str) -> Fetched:
            if url == slow_x5u:
                await trio.sleep_forever()
            return await super().fetch(url)

    pki = make_pki()
    plugin = Repositories(pki)
    env = await start(nursery, tmp_path, voipgw_seed, plugin, fetch_timeout=1.5)
    _, call = await call_alice(env, [identity(pki.signer_key)])
    await call.cancel()
    await eventually(lambda: env.calls == 0)
    rotated = pki.with_new_signer()
    plugin.pki = rotated
    plugin.delay = 3600.0  # the carrier's repository no longer answers
    slow = make_identity(
        rotated.signer_key, slow_x5u, orig=CALLER[1:], dest=ALICE_DID[1:], iat=int(time.time())
    )
    started = trio.current_time()
    # The call whose first header waits its whole fetch_timeout for slow_x5u...
    await env.trunk.invite(
        env.did_uri(ALICE_DID), extra=[("Identity", slow), identity(rotated.signer_key)]
    )
    await trio.sleep(1.0)
    # ...while this one, a second later, fetches X5U again (until 2.5 s).
    await env.trunk.invite(env.did_uri(ALICE_DID), extra=[identity(rotated.signer_key)])
    first = await env.alice.next_call()
    assert trio.current_time() - started < 2.0
    assert first.invite.from_.uri.user == f"{CALLER};verstat=TN-Validation-Failed"
    second = await env.alice.next_call()
    assert trio.current_time() - started >= 2.5
    assert second.invite.from_.uri.user == f"{CALLER};verstat=TN-Validation-Failed"
    assert plugin.fetched == [X5U, X5U]


def _refetches(env: Any) -> dict[str, str]:
    scraped = render(StatusView(env.gateway, CallStatistics())).decode()
    family = "voipgw_caller_identity_certificate_refetches_total"
    return {
        line.split('"')[1]: line.rsplit(" ", 1)[1]
        for line in scraped.splitlines()
        if line.startswith(family + "{")
    }


async def test_certificate_re_fetches_are_counted_by_result(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """Each re-fetch after a failed signature is counted once it finishes: the same
    certificate again (a forgery: unchanged), no answer within the call's fetch_timeout
    (failed), the signer's new certificate (replaced); each a minute after the last, the
    least interval between re-fetches of a URL."""
    pki = make_pki()
    plugin = InjectedStirShaken(pki)
    env = await start(nursery, tmp_path, voipgw_seed, plugin, fetch_timeout=1.5)
    assert _refetches(env) == {"failed": "0", "replaced": "0", "unchanged": "0"}
    user, call = await call_alice(env, [identity(pki.signer_key)])
    await call.cancel()
    await eventually(lambda: env.calls == 0)
    forger = ec.generate_private_key(ec.SECP256R1())
    user, call = await call_alice(env, [identity(forger)])
    assert user == f"{CALLER};verstat=TN-Validation-Failed"
    await call.cancel()
    await eventually(lambda: env.calls == 0)
    assert plugin.fetched == [X5U, X5U]
    assert _refetches(env) == {"failed": "0", "replaced": "0", "unchanged": "1"}

    await trio.sleep(61)
    plugin.later = 61.0  # the service's wall clock with trio's (iat, the cache)
    rotated = pki.with_new_signer()
    plugin.pki = rotated
    plugin.delay = 3600.0
    user, call = await call_alice(env, [identity(rotated.signer_key, iat=int(time.time()) + 61)])
    assert user == f"{CALLER};verstat=TN-Validation-Failed"
    await call.cancel()
    await eventually(lambda: env.calls == 0)
    assert _refetches(env) == {"failed": "1", "replaced": "0", "unchanged": "1"}

    await trio.sleep(61)
    plugin.later = 122.0
    plugin.delay = 0.0
    user, _ = await call_alice(env, [identity(rotated.signer_key, iat=int(time.time()) + 122)])
    assert user == f"{CALLER};verstat=TN-Validation-Passed"
    assert plugin.fetched == [X5U] * 4
    assert _refetches(env) == {"failed": "1", "replaced": "1", "unchanged": "1"}


async def test_a_re_fetch_whose_call_ended_goes_on_for_the_next_calls(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """The gateway ends a call (its drain ran out) while the call fetches its signer's rotated
    certificate again: the fetch is the URL's, not the call's, and goes on; what it brought is
    kept and counted, and the next call signed with the new key verifies from the cache. (It
    was cut short with its call, and the next call fetched the URL once more.)"""
    pki = make_pki()
    plugin = InjectedStirShaken(pki)
    env = await start(nursery, tmp_path, voipgw_seed, plugin, fetch_timeout=30)
    user, call = await call_alice(env, [identity(pki.signer_key)])
    await call.cancel()
    await eventually(lambda: env.calls == 0)
    plugin.pki = pki.with_new_signer()
    plugin.delay = 5.0
    ended = await env.trunk.invite(env.did_uri(ALICE_DID), extra=[identity(plugin.pki.signer_key)])
    await eventually(lambda: plugin.fetched == [X5U, X5U])
    assert env.gateway.calls is not None
    (first,) = env.gateway.calls.calls
    first.end_by_gateway("test: the drain ran out")
    assert (await ended.final()).status == 503
    await eventually(lambda: env.calls == 0)
    assert _refetches(env) == {"failed": "0", "replaced": "0", "unchanged": "0"}
    await trio.sleep(5)  # the fetch's answer
    assert _refetches(env) == {"failed": "0", "replaced": "1", "unchanged": "0"}
    user, _ = await call_alice(env, [identity(plugin.pki.signer_key)])
    assert user == f"{CALLER};verstat=TN-Validation-Passed"
    assert plugin.fetched == [X5U] * 2


async def test_a_call_waiting_for_a_re_fetch_whose_call_ended_gets_its_certificate(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """Two calls signed with the carrier's new key: the second waits for the first's re-fetch;
    the gateway ends the first meanwhile, and the second gets the certificate that fetch
    brings and rings TN-Validation-Passed, one fetch for both (it fetched the URL itself)."""
    pki = make_pki()
    plugin = InjectedStirShaken(pki)
    env = await start(nursery, tmp_path, voipgw_seed, plugin, fetch_timeout=30)
    _, call = await call_alice(env, [identity(pki.signer_key)])
    await call.cancel()
    await eventually(lambda: env.calls == 0)
    plugin.pki = pki.with_new_signer()
    plugin.delay = 5.0
    header = identity(plugin.pki.signer_key)
    ended = await env.trunk.invite(env.did_uri(ALICE_DID), extra=[header])
    await eventually(lambda: plugin.fetched == [X5U, X5U])
    assert env.gateway.calls is not None
    (first,) = env.gateway.calls.calls
    waiting = await env.trunk.invite(env.did_uri(ALICE_DID), extra=[header])
    await eventually(lambda: env.calls == 2)
    await trio.sleep(1)  # the second call's check waits for the first's fetch (trio's clock)
    first.end_by_gateway("test: the drain ran out")
    assert (await ended.final()).status == 503
    leg_b = await env.alice.next_call()
    assert leg_b.invite.from_.uri.user == f"{CALLER};verstat=TN-Validation-Passed"
    assert plugin.fetched == [X5U] * 2
    assert _refetches(env) == {"failed": "0", "replaced": "1", "unchanged": "0"}
    await waiting.cancel()


async def test_calls_waiting_for_a_certificate_get_it_when_the_call_that_asked_first_ends(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """A burst of calls shares the first fetch of a certificate; the gateway ends the call
    whose check started it: the fetch is the URL's and goes on, and the call waiting for it
    gets the certificate (TN-Validation-Passed), one fetch for both. It was cut short with the
    first call, and the waiting call failed with 436 "certificate fetch timed out"."""
    pki = make_pki()
    plugin = InjectedStirShaken(pki, delay=5.0)
    env = await start(nursery, tmp_path, voipgw_seed, plugin, fetch_timeout=30)
    header = identity(pki.signer_key)
    ended = await env.trunk.invite(env.did_uri(ALICE_DID), extra=[header])
    await eventually(lambda: plugin.fetched == [X5U])
    assert env.gateway.calls is not None
    (first,) = env.gateway.calls.calls
    waiting = await env.trunk.invite(env.did_uri(ALICE_DID), extra=[header])
    await eventually(lambda: env.calls == 2)
    await trio.sleep(1)  # the second call's check waits for the first's fetch
    first.end_by_gateway("test: the drain ran out")
    assert (await ended.final()).status == 503
    leg_b = await env.alice.next_call()
    assert leg_b.invite.from_.uri.user == f"{CALLER};verstat=TN-Validation-Passed"
    assert caller_identity_record(env) == ["caller number verified (attestation A)"]
    assert plugin.fetched == [X5U]
    await waiting.cancel()


async def test_a_cancel_while_the_certificate_is_fetched_ends_the_call_at_once(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """RFC 3261 §9.2: the caller's CANCEL while its INVITE waits for the signer's certificate
    gets 200, and the INVITE 487 at once, nobody rung (it waited for the certificate server,
    up to fetch_timeout, and then rang the phone to CANCEL it). The fetch goes on: the call
    waiting for the same certificate gets it, and later calls find it cached."""
    pki = make_pki()
    plugin = InjectedStirShaken(pki, delay=5.0)
    env = await start(nursery, tmp_path, voipgw_seed, plugin, fetch_timeout=30)
    header = identity(pki.signer_key)
    cancelled = await env.trunk.invite(env.did_uri(ALICE_DID), extra=[header])
    await eventually(lambda: plugin.fetched == [X5U])
    waiting = await env.trunk.invite(env.did_uri(ALICE_DID), extra=[header])
    await eventually(lambda: env.calls == 2)
    cancelling = trio.current_time()
    cancel = await cancelled.cancel()
    assert (await cancel.final()).status == 200
    assert (await cancelled.final()).status == 487
    assert trio.current_time() - cancelling < 1
    await eventually(lambda: env.calls == 1)
    leg_b = await env.alice.next_call()  # the waiting call's: the cancelled one rang nobody
    assert leg_b.invite.from_.uri.user == f"{CALLER};verstat=TN-Validation-Passed"
    assert trio.current_time() - cancelling >= 4
    assert len(env.alice.requests("INVITE")) == 1
    await waiting.cancel()
    assert (await waiting.final()).status == 487
    await eventually(lambda: env.calls == 0)
    user, _ = await call_alice(env, [header])
    assert user == f"{CALLER};verstat=TN-Validation-Passed"
    assert plugin.fetched == [X5U]


async def test_urls_fetched_again_are_forgotten_once_their_minute_has_passed(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """The table of URLs fetched again (each not fetched again for a minute) drops a URL once
    its minute has passed, not only when it holds a thousand: a forger naming a new URL now
    and then no longer leaves them all in memory."""
    other_x5u = "https://other.carrier.example/shaken.pem"
    pki = make_pki()
    plugin = InjectedStirShaken(pki)
    env = await start(nursery, tmp_path, voipgw_seed, plugin)
    (service,) = (s for _, s in env.gateway.plugins.caller_identity.items())
    forger = ec.generate_private_key(ec.SECP256R1())

    async def call(key: ec.EllipticCurvePrivateKey, x5u: str, later: float) -> None:
        header = make_identity(
            key, x5u, orig=CALLER[1:], dest=ALICE_DID[1:], iat=int(time.time() + later)
        )
        _, ringing = await call_alice(env, [("Identity", header)])
        await ringing.cancel()
        await eventually(lambda: env.calls == 0)

    await call(pki.signer_key, X5U, 0)
    await call(forger, X5U, 0)
    assert list(service._refetched) == [X5U]
    await trio.sleep(61)
    plugin.later = 61.0
    await call(pki.signer_key, other_x5u, 61)
    await call(forger, other_x5u, 61)
    assert plugin.fetched == [X5U, X5U, other_x5u, other_x5u]
    assert list(service._refetched) == [other_x5u]


async def test_a_cancel_that_comes_before_the_call_task_waits_ends_the_call_at_once(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The caller's CANCEL handed to the call before its task first ran (sipp's CANCEL came
    0.1 ms behind our 100 Trying, and the endpoint answered it 200 at once): the task finds it
    before it waits for the certificate, and the INVITE gets 487 at once, nobody rung. It
    found no wait to cut short and waited fetch_timeout (CI caught it with sipp)."""
    pki = make_pki()
    plugin = InjectedStirShaken(pki, delay=5.0)
    env = await start(nursery, tmp_path, voipgw_seed, plugin, fetch_timeout=30)
    manager = env.gateway.calls
    assert manager is not None
    take_invite = manager.invite

    def invite_then_cancel(transaction: Any, request: Request, flow: Any) -> None:
        take_invite(transaction, request, flow)
        # As the endpoint hands a CANCEL over, in the same step: the call's task has not run.
        manager.cancel(transaction, attrs.evolve(request, method="CANCEL", body=b""))

    monkeypatch.setattr(manager, "invite", invite_then_cancel)
    sending = trio.current_time()
    cancelled = await env.trunk.invite(env.did_uri(ALICE_DID), extra=[identity(pki.signer_key)])
    assert (await cancelled.final()).status == 487
    assert trio.current_time() - sending < 1
    await eventually(lambda: env.calls == 0)
    assert env.alice.requests("INVITE") == []
