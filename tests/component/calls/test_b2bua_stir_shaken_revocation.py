"""STIR/SHAKEN revocation through the call core: the signer's certificate and its intermediate
name the STI-PA's CRL (ATIS-1000080 §6.4.1), which the plugin fetches with the injected fetcher
(test_stir_shaken_fetch.py fetches one over real HTTPS).

- a revoked signer or intermediate fails verification ("certificate revoked", 437 Unsupported
  Credential under ``on_failure = "reject"``); one not listed passes;
- a CRL server that does not answer costs the call ``fetch_timeout`` at most, certificate and
  CRL fetches together; the call passes marked (``revocation_unavailable = "pass"``) or fails
  (``"fail"``), and the CRL is not asked for again for a minute;
- a burst of calls fetches the CRL once; the CRL is kept until its nextUpdate;
- the CRL's host must be in ``certificate_hosts``; ``check_revocation = false`` fetches none;
- an INVITE's Identity headers share one ``fetch_timeout``;
- a signer's certificate that names no CRL (ATIS-1000080 v3 and later require it) is taken as
  an unavailable CRL (``revocation_unavailable``), after the CRLs its chain does name.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import trio

from gateway.core.status import CallStatistics, StatusView
from gateway.plugins.metrics.collect import render
from gateway.plugins.stir_shaken.fetch import Fetched, FetchError
from gateway.testing.sti_pki import StiPki, make_identity, make_pki
from tests.component.calls.b2bua_env import ALICE_DID, B2bua, eventually
from tests.component.calls.stir_shaken_calls import (
    CALLER,
    X5U,
    InjectedStirShaken,
    call_alice,
    caller_identity_record,
    identity,
)
from tests.component.calls.stir_shaken_calls import start as start_without_revocation

CRL_URL = "https://crl.sti-pa.example/crl"


class InjectedWithCrl(InjectedStirShaken):
    """The injected plugin, whose fetcher also serves the STI-PA's CRL at CRL_URL (None:
    HTTP 503), after ``crl_delay`` seconds."""

    def __init__(self, pki: StiPki, crl: bytes | None, *, crl_delay: float = 0.0) -> None:
        super().__init__(pki)
        self.crl = crl
        self.crl_delay = crl_delay
        self.crl_fetched = 0

    async def fetch(self, url: str) -> Fetched:
        if url != CRL_URL:
            return await super().fetch(url)
        self.crl_fetched += 1
        await trio.sleep(self.crl_delay)
        if self.crl is None:
            raise FetchError("HTTP 503")
        return Fetched(self.crl)


async def start(
    nursery: trio.Nursery,
    tmp_path: Path,
    seed: int,
    plugin: InjectedStirShaken,
    *,
    check_revocation: bool | None = None,
    **table: Any,
) -> B2bua:
    """The gateway with the injected plugin, ``check_revocation`` at its default (on) unless
    told."""
    return await start_without_revocation(
        nursery, tmp_path, seed, plugin, check_revocation=check_revocation, **table
    )


async def one_call(env: B2bua, pki: StiPki, **claims: Any) -> tuple[str, str]:
    """A call from the trunk with a valid Identity: (the From user alice's phone sees, the
    record's words); the call is then cancelled and gone."""
    user, call = await call_alice(env, [identity(pki.signer_key, **claims)])
    (described,) = caller_identity_record(env)
    await call.cancel()
    await eventually(lambda: env.calls == 0)
    return user, described


def outcomes(env: B2bua) -> dict[str, int]:
    assert env.gateway.calls is not None
    return dict(env.gateway.calls.identity_outcomes)


def scrape(env: B2bua) -> str:
    return render(StatusView(env.gateway, CallStatistics())).decode()


@pytest.mark.parametrize(
    ("revoked", "verstat", "words"),
    [
        ("signer", "TN-Validation-Failed", "verification failed: certificate revoked"),
        ("intermediate", "TN-Validation-Failed", "verification failed: certificate revoked"),
        ("none", "TN-Validation-Passed", "caller number verified (attestation A)"),
    ],
)
async def test_a_revoked_certificate_fails_verification(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    revoked: str,
    verstat: str,
    words: str,
) -> None:
    pki = make_pki(crl_url=CRL_URL)
    listed = {"signer": (pki.signer,), "intermediate": (pki.intermediate,), "none": ()}
    plugin = InjectedWithCrl(pki, pki.crl(listed[revoked]))
    env = await start(nursery, tmp_path, voipgw_seed, plugin)
    user, described = await one_call(env, pki)
    assert user == f"{CALLER};verstat={verstat}"
    assert words in described
    assert plugin.crl_fetched == 1
    if revoked != "none":
        assert outcomes(env) == {"revoked": 1}
        assert 'voipgw_caller_identity_total{outcome="revoked"} 1\n' in scrape(env)
    else:
        assert outcomes(env) == {"passed": 1}


async def test_on_failure_reject_refuses_a_revoked_signer_with_437(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """RFC 8224 §6.2.2: the credential is what fails (437 Unsupported Credential, as for a
    certificate that does not chain), not the Identity header or its signature (438)."""
    pki = make_pki(crl_url=CRL_URL)
    plugin = InjectedWithCrl(pki, pki.crl((pki.signer,)))
    env = await start(nursery, tmp_path, voipgw_seed, plugin, on_failure="reject")
    call = await env.trunk.invite(env.did_uri(ALICE_DID), extra=[identity(pki.signer_key)])
    final = await call.final()
    assert (final.status, final.reason) == (437, "Unsupported Credential")
    assert env.alice.requests("INVITE") == []


@pytest.mark.parametrize(
    ("policy", "verstat", "outcome"),
    [
        ("pass", "TN-Validation-Passed", "passed_revocation_unknown"),
        ("fail", "TN-Validation-Failed", "revocation_unknown"),
    ],
)
async def test_a_crl_server_that_does_not_answer_costs_one_fetch_timeout(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    policy: str,
    verstat: str,
    outcome: str,
) -> None:
    """Certificate (1 s) and CRL (no answer) share the call's fetch_timeout of 1.5 s: the call
    waits 1.5 s, not 1 + 1.5. The CRL's fetch, started at 1 s, has a fetch_timeout of its own
    (the URL's, not the call's): a call meanwhile waits for it, not for a fetch of its own, and
    gets its failure at 2.5 s. For a minute after, the CRL is not asked for again and calls do
    not wait; the outcome says revocation was not checked."""
    pki = make_pki(crl_url=CRL_URL)
    plugin = InjectedWithCrl(pki, pki.crl(), crl_delay=3600)
    plugin.delay = 1.0
    env = await start(
        nursery, tmp_path, voipgw_seed, plugin, fetch_timeout=1.5, revocation_unavailable=policy
    )
    began = trio.current_time()
    user, described = await one_call(env, pki)
    assert trio.current_time() - began < 2.2
    assert user == f"{CALLER};verstat={verstat}"
    assert "revocation not checked: CRL fetch timed out" in described
    assert trio.current_time() - began < 2.5  # the CRL's fetch goes on
    user, described = await one_call(env, pki)
    assert trio.current_time() - began == pytest.approx(2.5, abs=0.2)
    assert "revocation not checked: CRL fetch timed out" in described
    assert "less than 60 s ago" not in described
    began = trio.current_time()
    user, described = await one_call(env, pki)
    assert trio.current_time() - began < 0.5  # the certificate is cached, the failure too
    assert "revocation not checked: CRL fetch timed out (less than 60 s ago)" in described
    assert plugin.crl_fetched == 1
    assert outcomes(env) == {outcome: 3}
    assert f'voipgw_caller_identity_total{{outcome="{outcome}"}} 3\n' in scrape(env)


async def test_a_crl_server_error_is_asked_again_after_a_minute(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    pki = make_pki(crl_url=CRL_URL)
    plugin = InjectedWithCrl(pki, None)
    env = await start(nursery, tmp_path, voipgw_seed, plugin)
    user, described = await one_call(env, pki)
    assert user == f"{CALLER};verstat=TN-Validation-Passed"
    assert "revocation not checked: CRL not fetched: HTTP 503" in described
    plugin.crl = pki.crl((pki.signer,), next_update=3600)  # back, and the signer revoked
    plugin.later = 61.0
    user, described = await one_call(env, pki, iat=int(time.time()) + 61)
    assert plugin.crl_fetched == 2
    assert user == f"{CALLER};verstat=TN-Validation-Failed"
    assert "certificate revoked" in described


async def test_a_burst_of_calls_fetches_the_crl_once_and_keeps_it_until_next_update(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    pki = make_pki(crl_url=CRL_URL)
    plugin = InjectedWithCrl(pki, pki.crl(next_update=3600), crl_delay=0.5)
    env = await start(nursery, tmp_path, voipgw_seed, plugin)
    first = await env.trunk.invite(env.did_uri(ALICE_DID), extra=[identity(pki.signer_key)])
    second = await env.trunk.invite(env.did_uri(ALICE_DID), extra=[identity(pki.signer_key)])
    users = [(await env.alice.next_call()).invite.from_.uri.user for _ in range(2)]
    assert users == [f"{CALLER};verstat=TN-Validation-Passed"] * 2
    assert (plugin.fetched.count(X5U), plugin.crl_fetched) == (1, 1)
    for call in (first, second):
        assert (await call.final()).status == 200  # alice answers
        assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)
    # The STI-PA revokes the signer (its new CRL issued an hour on): until the nextUpdate of
    # the CRL kept, that one is believed.
    plugin.crl = pki.crl((pki.signer,), now=time.time() + 3600)
    plugin.later = 3500.0
    user, _ = await one_call(env, pki, iat=int(time.time()) + 3500)
    assert (user, plugin.crl_fetched) == (f"{CALLER};verstat=TN-Validation-Passed", 1)
    plugin.later = 3601.0
    user, described = await one_call(env, pki, iat=int(time.time()) + 3601)
    assert plugin.crl_fetched == 2
    assert user == f"{CALLER};verstat=TN-Validation-Failed"
    assert "certificate revoked" in described


@pytest.mark.parametrize(
    ("table", "verstat", "words"),
    [
        (
            {"certificate_hosts": ["certs.carrier.example"]},
            "TN-Validation-Passed",
            "revocation not checked: CRL URL's host not in certificate_hosts",
        ),
        ({"check_revocation": False}, "TN-Validation-Passed", "verified (attestation A)"),
        ({}, "TN-Validation-Failed", "certificate revoked"),
    ],
)
async def test_certificate_hosts_bound_crl_urls_and_check_revocation_turns_it_off(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    table: dict[str, Any],
    verstat: str,
    words: str,
) -> None:
    """The signer is revoked: only a CRL fetched and read says so. The CRL URL comes from a
    certificate, so certificate_hosts bounds it as it bounds x5u URLs (CWE-918)."""
    pki = make_pki(crl_url=CRL_URL)
    plugin = InjectedWithCrl(pki, pki.crl((pki.signer,)))
    env = await start(nursery, tmp_path, voipgw_seed, plugin, **table)
    user, described = await one_call(env, pki)
    assert user == f"{CALLER};verstat={verstat}"
    assert words in described
    assert plugin.crl_fetched == (1 if not table else 0)


async def test_two_identity_headers_share_one_fetch_timeout(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """RFC 8224 §6.2 lets an INVITE carry several Identity headers: their certificate servers,
    both silent, cost the call one fetch_timeout, not one each."""
    pki = make_pki(crl_url=CRL_URL)
    plugin = InjectedWithCrl(pki, pki.crl())
    plugin.delay = 3600
    env = await start(nursery, tmp_path, voipgw_seed, plugin, fetch_timeout=1.5)
    other = "https://certs2.carrier.example/shaken.pem"
    second = make_identity(
        pki.signer_key, other, orig=CALLER[1:], dest=ALICE_DID[1:], iat=int(time.time())
    )
    began = trio.current_time()
    user, _ = await call_alice(env, [identity(pki.signer_key), ("Identity", second)])
    assert trio.current_time() - began < 2.2
    assert user == f"{CALLER};verstat=TN-Validation-Failed"
    assert plugin.fetched == [X5U, other]


@pytest.mark.parametrize(
    ("table", "verstat", "outcome"),
    [
        ({}, "TN-Validation-Passed", "passed_revocation_unknown"),
        ({"revocation_unavailable": "fail"}, "TN-Validation-Failed", "revocation_unknown"),
        ({"check_revocation": False}, "TN-Validation-Passed", "passed"),
    ],
)
async def test_a_signer_that_names_no_crl_is_marked_as_for_an_unavailable_crl(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    table: dict[str, Any],
    verstat: str,
    outcome: str,
) -> None:
    """ATIS-1000080 §6.4.1 (v3 and later): an end entity names the STI-PA's CRL. One that
    does not (its intermediate does, and is looked up) leaves its revocation unknown."""
    pki = make_pki(crl_url=CRL_URL, signer_names_crl=False)
    plugin = InjectedWithCrl(pki, pki.crl())
    env = await start(nursery, tmp_path, voipgw_seed, plugin, **table)
    user, described = await one_call(env, pki)
    assert user == f"{CALLER};verstat={verstat}"
    assert outcomes(env) == {outcome: 1}
    if outcome == "passed":
        assert plugin.crl_fetched == 0
        assert described == "caller number verified (attestation A)"
    else:
        assert plugin.crl_fetched == 1  # the intermediate's
        assert "revocation not checked: certificate names no CRL" in described
        assert f'voipgw_caller_identity_total{{outcome="{outcome}"}} 1\n' in scrape(env)


async def test_a_signer_that_names_no_crl_is_refused_with_436_only_when_told(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    pki = make_pki()
    plugin = InjectedStirShaken(pki)
    env = await start(
        nursery,
        tmp_path,
        voipgw_seed,
        plugin,
        on_failure="reject",
        revocation_unavailable="fail",
    )
    call = await env.trunk.invite(env.did_uri(ALICE_DID), extra=[identity(pki.signer_key)])
    final = await call.final()
    assert (final.status, final.reason) == (436, "Bad Identity Info")
    assert env.alice.requests("INVITE") == []


async def test_a_revoked_intermediate_fails_even_when_the_signer_names_no_crl(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """The CRL the chain does name is looked up first: "revoked" says more than "unknown"."""
    pki = make_pki(crl_url=CRL_URL, signer_names_crl=False)
    plugin = InjectedWithCrl(pki, pki.crl((pki.intermediate,)))
    env = await start(nursery, tmp_path, voipgw_seed, plugin, revocation_unavailable="fail")
    user, described = await one_call(env, pki)
    assert user == f"{CALLER};verstat=TN-Validation-Failed"
    assert "certificate revoked" in described
    assert outcomes(env) == {"revoked": 1}


async def test_a_rotated_signers_new_certificate_is_looked_up_in_the_crl(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """The certificate fetched again after a signature failed with the cached one (a signer's
    key rotation under the same x5u) is looked up in the CRL as any other: a revoked one fails
    the call, "certificate revoked", though its signature verifies."""
    pki = make_pki(crl_url=CRL_URL)
    rotated = pki.with_new_signer()
    plugin = InjectedWithCrl(pki, pki.crl((rotated.signer,)))
    env = await start(nursery, tmp_path, voipgw_seed, plugin)
    assert await one_call(env, pki) == (
        f"{CALLER};verstat=TN-Validation-Passed",
        "caller number verified (attestation A)",
    )
    plugin.pki = rotated
    assert await one_call(env, rotated) == (
        f"{CALLER};verstat=TN-Validation-Failed",
        "caller number verification failed: certificate revoked (CN=Test SHAKEN signer)",
    )
    assert plugin.fetched == [X5U, X5U]
    assert plugin.crl_fetched == 1
    assert outcomes(env) == {"passed": 1, "revoked": 1}


async def test_a_signer_whose_revoked_certificate_is_cached_is_taken_with_its_new_key(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """A carrier's key compromised: the STI-PA's CRL lists its old certificate, a new one is
    at the same x5u URL while the old is still cached. A call signed with the new key has the
    URL fetched again and passes (the signature first, then the CRL of the certificate that
    signed: the cached one is not found revoked first, which failed such calls 437 until the
    cache ran out); a call signed with the old key fails."""
    pki = make_pki(crl_url=CRL_URL)
    plugin = InjectedWithCrl(pki, pki.crl((), next_update=120.0))
    env = await start(nursery, tmp_path, voipgw_seed, plugin)
    assert await one_call(env, pki) == (
        f"{CALLER};verstat=TN-Validation-Passed",
        "caller number verified (attestation A)",
    )
    # Past the CRL's nextUpdate, within the certificate's max-age (600 s).
    plugin.later = 130.0
    plugin.crl = pki.crl((pki.signer,), now=time.time() + plugin.later)
    rotated = pki.with_new_signer()
    plugin.pki = rotated
    iat = int(time.time() + plugin.later)
    assert await one_call(env, rotated, iat=iat) == (
        f"{CALLER};verstat=TN-Validation-Passed",
        "caller number verified (attestation A)",
    )
    assert plugin.fetched == [X5U, X5U]
    assert plugin.crl_fetched == 2
    user, described = await one_call(env, pki, iat=iat)
    assert user == f"{CALLER};verstat=TN-Validation-Failed"
    assert described == "caller number verification failed: signature does not verify"
