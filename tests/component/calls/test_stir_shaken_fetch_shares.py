"""What one trunk's Identity headers can take from the stir_shaken service, driven without a
gateway (the service's ``run`` in a nursery, trio's virtual clock), past what session 39 left:
an IP address's spellings counted as one host, each trunk's share of the certificate fetches,
the CRL failures kept apart from the CRLs, a fetch counted only once its task runs, a CRL taken
only for the certificates it covers (RFC 5280 §6.3.3), and an x5u's host escaped wherever it
is shown."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
import trio
import trio.testing

from gateway.core.interfaces import TrunkCall
from gateway.plugins.stir_shaken import (
    MAX_CRLS,
    MAX_FETCHES,
    StirShaken,
    StirShakenConfig,
    Verification,
)
from gateway.plugins.stir_shaken.certificates import RevocationUnavailable
from gateway.plugins.stir_shaken.fetch import MAX_FETCHES_PER_HOST, Fetched, FetchError
from gateway.plugins.stir_shaken.passport import PassportError
from gateway.testing.sti_pki import make_identity, make_pki

GOOD = "https://certs.carrier.example/shaken.pem"
CRL_URL = "https://crl.sti.example/sti.crl"
CALLER, CALLED = "+12025550123", "+12025550199"


def verifying(anchors: Path, **table: object) -> StirShakenConfig:
    settings: dict[str, object] = {
        "verify_trunks": ("carrier",),
        "fetch_timeout": 30.0,
        "check_revocation": False,
        **table,
    }
    return StirShakenConfig(trust_anchors=str(anchors), **settings)  # type: ignore[arg-type]


async def test_an_ip_address_in_any_spelling_is_one_host(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A peer naming 127.0.0.1 as 127.1, 2130706433, 0x7f.1, 0177.0.0.1, [::ffff:127.0.0.1]
    ... (each the same server to the resolver): MAX_FETCHES_PER_HOST fetches start, the
    next URL waits for a slot until its call's deadline and is refused naming the host in one
    spelling. On main each spelling was a host of its own, with its own 6."""
    pki = make_pki()
    anchors, _, _ = pki.write(tmp_path)
    started: list[str] = []

    async def fetch(url: str) -> Fetched:
        started.append(url)
        await trio.sleep_forever()
        raise AssertionError("not reached")

    spellings = [
        "127.1",
        "2130706433",
        "0x7f.1",
        "0177.0.0.1",
        "0x7F000001",
        "[::ffff:127.0.0.1]",
        "127.0.0.1.",
        "127.0.1",
    ]
    service = StirShaken(verifying(anchors), fetcher=fetch)
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        refused = []
        for n, host in enumerate(spellings):
            try:
                await service.signer_certificate(f"https://{host}/{n}.pem", trio.current_time())
            except PassportError as err:
                refused.append(err.reason)
        await trio.testing.wait_all_tasks_blocked()
        assert len(started) == MAX_FETCHES_PER_HOST
        assert refused[-1] == (
            f"certificate not fetched: {MAX_FETCHES_PER_HOST} certificate fetches to "
            "127.0.0.1 running already"
        )
        nursery.cancel_scope.cancel()


def trunk_call(trunk: str, n: int) -> TrunkCall:
    return TrunkCall(
        call_id=f"{trunk}-{n}@example",
        trunk=trunk,
        caller_kind="trunk",
        caller_name=trunk,
        calling=(CALLER,),
        called=CALLED,
        at=time.time(),
    )


async def test_one_trunks_forged_identities_leave_another_trunk_its_fetches(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Two trunks verified. One passes on forged Identity headers, each naming a new host
    under a wildcard DNS name (a0.evil.example, a1.evil.example ...) that never answers, more
    of them than MAX_FETCHES: its fetches take its share (half) and its calls past that wait
    for a slot of its own until their deadline. The other trunk's call, meanwhile, has its
    certificate fetched and is verified. On main the forger held all MAX_FETCHES and the
    other trunk's call failed ("100 certificate fetches running already", 436)."""
    pki = make_pki()
    anchors, _, _ = pki.write(tmp_path)
    started: list[str] = []

    async def fetch(url: str) -> Fetched:
        started.append(url)
        if url == GOOD:
            return Fetched(pki.chain_pem(), max_age=600)
        await trio.sleep_forever()
        raise AssertionError("not reached")

    config = verifying(anchors, verify_trunks=("evil", "carrier"))
    service = StirShaken(config, fetcher=fetch)
    share = MAX_FETCHES // 2
    forged: list[str] = []

    async def forged_call(n: int) -> None:
        x5u = f"https://a{n}.evil.example/shaken.pem"
        value = make_identity(
            pki.signer_key, x5u, orig=CALLER[1:], dest=CALLED[1:], iat=int(time.time())
        )
        outcome = await Verification(service, trunk_call("evil", n), [value]).run()
        forged.append(outcome.described)

    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        async with trio.open_nursery() as calls:
            for n in range(MAX_FETCHES + 20):
                calls.start_soon(forged_call, n)
            await trio.testing.wait_all_tasks_blocked()
            assert len(started) == share
            assert dict(service._fetching.trunks) == {"evil": share}
            value = make_identity(
                pki.signer_key, GOOD, orig=CALLER[1:], dest=CALLED[1:], iat=int(time.time())
            )
            outcome = await Verification(service, trunk_call("carrier", 0), [value]).run()
            assert outcome.described == "caller number verified (attestation A)"
            assert outcome.outcome == "passed"
            # One more of the forger's, its deadline now: refused at once, saying why.
            with pytest.raises(PassportError) as refused:
                await service.signer_certificate(
                    "https://b.evil.example/x.pem", trio.current_time(), trunk="evil"
                )
            assert refused.value.reason == (
                f"certificate not fetched: {share} certificate fetches for trunk evil "
                "running already"
            )
            calls.cancel_scope.cancel()
        assert not forged  # every forged call still waiting: for its fetch, or a slot
        nursery.cancel_scope.cancel()


async def test_a_fetch_that_could_not_start_holds_no_slot(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A fetch asked for while the service's nursery is closed (the gateway stopping): the
    call fails, and nothing is left of it: the next call for the URL, the service running
    again, fetches it and verifies. On main the fetch was listed (and its host counted)
    before its task was refused, and the URL's later calls each waited for a fetch that
    never ran, until their deadline ("certificate fetch timed out")."""
    pki = make_pki()
    anchors, _, _ = pki.write(tmp_path)

    async def fetch(url: str) -> Fetched:
        return Fetched(pki.chain_pem(), max_age=600)

    service = StirShaken(verifying(anchors), fetcher=fetch)
    async with trio.open_nursery() as closed:
        pass
    service._nursery = closed
    with pytest.raises(RuntimeError):
        await service.signer_certificate(GOOD, trio.current_time() + 30)
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        signer = await service.signer_certificate(GOOD, trio.current_time() + 30)
        assert signer.serial == pki.signer.serial_number
        nursery.cancel_scope.cancel()


async def test_failed_crl_urls_do_not_push_a_good_crl_out(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """The STI-PA's CRL cached, then more CRL URLs that fail than MAX_CRLS (each a 404): the
    CRL is still served from the cache, fetched once, and the latest failure is still
    answered without a fetch. On main failures and CRLs shared the MAX_CRLS entries, and the
    failures pushed the STI-PA's CRL out (fetched again at the next call)."""
    pki = make_pki(crl_url=CRL_URL)
    anchors, _, _ = pki.write(tmp_path)
    crl = pki.crl()
    fetched: list[str] = []

    async def fetch(url: str) -> Fetched:
        fetched.append(url)
        if url == GOOD:
            return Fetched(pki.chain_pem(), max_age=600)
        if url == CRL_URL:
            return Fetched(crl)
        raise FetchError("HTTP 404")

    service = StirShaken(verifying(anchors), fetcher=fetch)
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        signer = await service.signer_certificate(GOOD, trio.current_time() + 30)
        await service.revocation_list(CRL_URL, signer, trio.current_time() + 30)
        failing = [f"https://crl{n}.sti.example/x.crl" for n in range(MAX_CRLS + 4)]
        for url in failing:
            with pytest.raises(RevocationUnavailable, match="HTTP 404"):
                await service.revocation_list(url, signer, trio.current_time() + 30)
        await service.revocation_list(CRL_URL, signer, trio.current_time() + 30)
        assert fetched.count(CRL_URL) == 1
        with pytest.raises(RevocationUnavailable, match=r"HTTP 404 \(less than 60 s ago\)"):
            await service.revocation_list(failing[-1], signer, trio.current_time() + 30)
        assert fetched.count(failing[-1]) == 1
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("signed_by", ["root", "intermediate"])
async def test_a_crl_covers_only_the_certificates_its_issuer_may_revoke(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, signed_by: str
) -> None:
    """RFC 5280 §6.3.3 (b): a CRL is taken for a certificate only from the certificate's
    issuer or from the CRL issuer its distribution point names. The end entity and the
    intermediate both name the CRL URL (and the STI-PA root as cRLIssuer, ATIS-1000080
    §6.4.1). The root's CRL covers both: checked, nothing revoked. The intermediate's CRL
    covers the end entity it issued but not the intermediate itself: its revocation is not
    checked (said in the call's record), and an intermediate's CRL listing the intermediate
    does not revoke it. On main a CRL signed by any CA of the chain was taken for every
    certificate of it: the intermediate's CRL passed the whole chain as checked."""
    pki = make_pki(crl_url=CRL_URL)
    anchors, _, _ = pki.write(tmp_path)
    crl = pki.crl(signer=signed_by)

    async def fetch(url: str) -> Fetched:
        return Fetched(pki.chain_pem() if url == GOOD else crl, max_age=600)

    service = StirShaken(verifying(anchors, check_revocation=True), fetcher=fetch)
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        signer = await service.signer_certificate(GOOD, trio.current_time() + 30)
        said = await service.revocation(signer, trio.current_time() + 30)
        if signed_by == "root":
            assert said is None
        else:
            assert said == (
                "revocation not checked: CRL of CN=Test STI-CA does not cover CN=Test STI-CA "
                "(RFC 5280 §6.3.3: neither its issuer nor a CRL issuer it names)"
            )
        nursery.cancel_scope.cancel()


async def test_an_x5u_host_and_url_are_escaped_where_shown(
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An x5u is a PASSporT's JSON string: its host may hold an ESC sequence or letters that
    look like others', its path CR LF. The reason a call gets (its record, the log) shows
    the host escaped (anything but printable ASCII as "?"), and a log line the URL, so that
    no peer writes a line of its own into the log or a terminal's colours. On main they went
    out as written."""
    caplog.set_level(logging.INFO, logger="gateway.plugins.stir_shaken")
    pki = make_pki()  # naming no CRL: its fetch is warned of with the URL
    anchors, _, _ = pki.write(tmp_path)
    host = "c\x1b\x07\u0435rts.example"  # ESC, BEL, a Cyrillic "e"

    async def fetch(url: str) -> Fetched:
        if "forged" in url:
            return Fetched(pki.chain_pem(), max_age=600)
        await trio.sleep_forever()
        raise AssertionError("not reached")

    service = StirShaken(verifying(anchors, check_revocation=True), fetcher=fetch)
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        for n in range(MAX_FETCHES_PER_HOST):
            with pytest.raises(PassportError):
                await service.signer_certificate(f"https://{host}/{n}.pem", trio.current_time())
        with pytest.raises(PassportError) as refused:
            await service.signer_certificate(f"https://{host}/more.pem", trio.current_time() + 1)
        assert refused.value.reason == (
            f"certificate not fetched: {MAX_FETCHES_PER_HOST} certificate fetches to "
            "c???rts.example running already"
        )
        caplog.clear()
        url = "https://certs.carrier.example/forged\r\n2026-12-02 00:00:00 WARNING ok.pem"
        await service.signer_certificate(url, trio.current_time() + 30)
        said = [r.getMessage() for r in caplog.records]
        assert said == [
            "stir_shaken: certificate https://certs.carrier.example/forged??2026-12-02 "
            "00:00:00 WARNING ok.pem: certificate names no CRL (no CRL Distribution Points)"
        ]
        nursery.cancel_scope.cancel()


async def test_an_intermediates_crl_signature_is_checked_once_per_chain_not_per_call(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CRL the chain's intermediate signed (no trust anchor did) is checked against the
    chain's CAs: once for the cached certificate's chain, its verdict kept with the CRL, not an
    ECDSA verification at every call (about 976,000 instructions each, docs/benchmarks.md,
    session 40). On main each call verified the signature again. A chain fetched anew (new
    objects, maybe new CAs) is checked anew."""
    from gateway.plugins.stir_shaken import certificates

    pki = make_pki(crl_url=CRL_URL)
    anchors, _, _ = pki.write(tmp_path)
    crl = pki.crl(signer="intermediate")

    async def fetch(url: str) -> Fetched:
        return Fetched(pki.chain_pem() if url == GOOD else crl, max_age=600)

    checked: list[object] = []
    signed_crl = certificates._signed_crl

    def counted(crl: object, signer: object) -> bool:
        checked.append(signer)
        return signed_crl(crl, signer)  # type: ignore[arg-type]

    monkeypatch.setattr(certificates, "_signed_crl", counted)
    service = StirShaken(verifying(anchors, check_revocation=True), fetcher=fetch)
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        signer = await service.signer_certificate(GOOD, trio.current_time() + 30)
        first = await service.revocation(signer, trio.current_time() + 30)
        after_first = len(checked)
        for _ in range(10):
            assert await service.revocation(signer, trio.current_time() + 30) == first
        assert len(checked) == after_first
        assert first is not None and "does not cover CN=Test STI-CA" in first
        nursery.cancel_scope.cancel()


def test_a_trunks_share_is_the_fetches_divided_among_the_trunks_but_at_least_a_hosts(
    tmp_path: Path,
) -> None:
    """100 / the trunks in verify_trunks, never fewer than one host's MAX_FETCHES_PER_HOST
    (docs/configuration.md, fetch_timeout): from 17 trunks on each has 6, not 5 or 2."""
    anchors, _, _ = make_pki().write(tmp_path)
    for trunks, share in ((1, 100), (2, 50), (3, 33), (16, 6), (17, 6), (40, 6)):
        config = verifying(anchors, verify_trunks=tuple(f"t{n}" for n in range(trunks)))
        assert StirShaken(config).trunk_share == share, trunks


@pytest.mark.parametrize(("calls", "verified"), [(24, 24), (40, 36)])
async def test_a_burst_from_one_of_many_trunks_is_fetched_a_share_at_a_time(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, calls: int, verified: int
) -> None:
    """The upgrade effect of the trunk's share (session 40): 17 trunks verified, so 6 fetches
    each; one of them (a transit carrier, after a restart with the cache empty) brings calls
    signed under as many certificates on as many hosts, each fetched in 0.3 s. Its calls past
    the 6 wait for a slot within their fetch_timeout (2 s): 24 take four rounds (1.2 s) and are
    all verified; of 40, the 4 left for a seventh round get their slot at 1.8 s and their
    certificate too late ("certificate fetch timed out"; 436 under on_failure = "reject").
    Before session 40 the 40 fetches ran at once and every call was verified."""
    pki = make_pki()
    anchors, _, _ = pki.write(tmp_path)

    async def fetch(url: str) -> Fetched:
        await trio.sleep(0.3)
        return Fetched(pki.chain_pem(), max_age=600)

    trunks = ("transit", *(f"t{n}" for n in range(16)))
    config = verifying(anchors, verify_trunks=trunks, fetch_timeout=2.0)
    service = StirShaken(config, fetcher=fetch)
    assert service.trunk_share == MAX_FETCHES_PER_HOST
    outcomes: list[str] = []

    async def call(n: int) -> None:
        x5u = f"https://certs.sp{n}.example/shaken.pem"
        value = make_identity(
            pki.signer_key, x5u, orig=CALLER[1:], dest=CALLED[1:], iat=int(time.time())
        )
        outcome = await Verification(service, trunk_call("transit", n), [value]).run()
        outcomes.append(outcome.described)

    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        async with trio.open_nursery() as burst:
            for n in range(calls):
                burst.start_soon(call, n)
        nursery.cancel_scope.cancel()
    passed = outcomes.count("caller number verified (attestation A)")
    assert passed == verified
    assert len(outcomes) == calls
    refused = {why for why in outcomes if why != "caller number verified (attestation A)"}
    assert refused <= {"caller number verification failed: certificate fetch timed out"}


async def test_a_crl_that_does_not_cover_a_certificate_is_said_once(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """The intermediate's CRL does not cover the intermediate (RFC 5280 §6.3.3 (b)): the
    calls' records say so, and the log says it once at WARNING in the line every CRL that
    cannot be used has, not at every call (an operator upgrading from before session 40 sees
    such chains go from passed to passed_revocation_unknown, and needs the why)."""
    pki = make_pki(crl_url=CRL_URL)
    anchors, _, _ = pki.write(tmp_path)
    crl = pki.crl(signer="intermediate")

    async def fetch(url: str) -> Fetched:
        return Fetched(pki.chain_pem() if url == GOOD else crl, max_age=600)

    service = StirShaken(verifying(anchors, check_revocation=True), fetcher=fetch)
    caplog.set_level(logging.WARNING, logger="gateway.plugins.stir_shaken")
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        for _ in range(3):
            signer = await service.signer_certificate(GOOD, trio.current_time() + 30)
            said = await service.revocation(signer, trio.current_time() + 30)
            assert said is not None and "does not cover CN=Test STI-CA" in said
        nursery.cancel_scope.cancel()
    lines = [r.getMessage() for r in caplog.records if "does not cover" in r.getMessage()]
    assert lines == [
        f"stir_shaken: CRL {CRL_URL} unavailable: CRL of CN=Test STI-CA does not cover "
        "CN=Test STI-CA (RFC 5280 §6.3.3: neither its issuer nor a CRL issuer it names)"
    ]
