"""OcspChecker on trio's autojump clock: how long a connection waits for the responder, what the
cache spares, soft-fail and hard-fail with a responder that never answers, one query shared by
concurrent connections, the bounded cache. The responder is a fake ``fetch`` answering with
responses built by cryptography's OCSPResponseBuilder at the checker's wall-clock time."""

from __future__ import annotations

import datetime
import logging
import time

import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID

from gateway.plugins.transports.ocsp import (
    FAILURE_CACHE,
    OcspChecker,
    OcspMode,
    OcspTarget,
    OwnStaple,
    _Cached,
)
from tests.interop.harness.pki import Issued, TestCa, TestPki

OCSP_LOG = "gateway.plugins.transports.ocsp"

# Unix time at trio time 0: the certificates are valid then.
BASE = datetime.datetime.now(datetime.UTC).timestamp()


def wall_clock() -> float:
    return BASE + trio.current_time()


class FakeResponder:
    """Answers ``status`` with a nextUpdate ``next_update`` seconds ahead, after ``delay``
    seconds; ``hang``: never answers. Counts the queries it got."""

    def __init__(self, ca: TestCa) -> None:
        self.ca = ca
        self.status = ocsp.OCSPCertStatus.GOOD
        self.next_update = 600.0
        self.delay = 0.0
        self.hang = False
        self.queries = 0
        self.phones: dict[int, Issued] = {}

    async def fetch(self, url: str, request: bytes) -> bytes:
        self.queries += 1
        assert url == "http://ocsp.vendor.example/"
        if self.hang:
            await trio.sleep_forever()
        await trio.sleep(self.delay)
        serial = ocsp.load_der_ocsp_request(request).serial_number
        now = datetime.datetime.fromtimestamp(wall_clock(), datetime.UTC)
        revoked = self.status == ocsp.OCSPCertStatus.REVOKED
        builder = (
            ocsp.OCSPResponseBuilder()
            .add_response(
                cert=self.phones[serial].x509,
                issuer=self.ca.issued.x509,
                algorithm=hashes.SHA1(),
                cert_status=self.status,
                this_update=now,
                next_update=now + datetime.timedelta(seconds=self.next_update),
                revocation_time=now if revoked else None,
                revocation_reason=None,
            )
            .responder_id(ocsp.OCSPResponderEncoding.HASH, self.ca.issued.x509)
        )
        response = builder.sign(self.ca.private_key, hashes.SHA256())
        return response.public_bytes(serialization.Encoding.DER)


@pytest.fixture(scope="module")
def vendor(tmp_path_factory: pytest.TempPathFactory) -> TestCa:
    return TestPki(tmp_path_factory.mktemp("pki")).ca("Phone Vendor Factory CA")


@pytest.fixture(scope="module")
def phones(vendor: TestCa) -> list[Issued]:
    url = "http://ocsp.vendor.example/"
    return [vendor.issue(f"0004f200000{n}", hosts=[], ocsp_url=url) for n in range(3)]


def make(
    mode: OcspMode, responder: FakeResponder, phones: list[Issued], *, max_entries: int = 100
) -> tuple[OcspChecker, list[OcspTarget]]:
    responder.phones = {phone.x509.serial_number: phone for phone in phones}
    checker = OcspChecker(
        mode=mode,
        timeout=3.0,
        fetch=responder.fetch,
        wall_clock=wall_clock,
        max_entries=max_entries,
    )
    targets = []
    for phone in phones:
        target = checker.target(phone.x509, responder.ca.issued.x509)
        assert target is not None
        targets.append(target)
    return checker, targets


async def test_a_good_answer_is_cached_until_its_next_update(
    autojump_clock: trio.testing.MockClock, vendor: TestCa, phones: list[Issued]
) -> None:
    responder = FakeResponder(vendor)
    responder.delay = 0.2
    checker, (phone, *_) = make("hard-fail", responder, phones)
    verdict = await checker.check(phone)
    assert verdict.accept and verdict.result == "good" and verdict.queried
    assert trio.current_time() == pytest.approx(0.2)  # the responder's time, no more
    assert verdict.valid_until == pytest.approx(wall_clock() + 600, abs=1)  # its nextUpdate
    # The phone re-connects: no query, no wait.
    again = await checker.check(phone)
    assert again.accept and not again.queried and responder.queries == 1
    assert trio.current_time() == pytest.approx(0.2)
    await trio.sleep(600)
    later = await checker.check(phone)
    assert later.queried and responder.queries == 2
    assert checker.queries == {"good": 2, "revoked": 0, "unknown": 0, "failed": 0}


@pytest.mark.parametrize("mode", ["soft-fail", "hard-fail"])
async def test_a_revoked_answer_refuses_in_both_modes(
    autojump_clock: trio.testing.MockClock, vendor: TestCa, phones: list[Issued], mode: OcspMode
) -> None:
    responder = FakeResponder(vendor)
    responder.status = ocsp.OCSPCertStatus.REVOKED
    checker, (phone, *_) = make(mode, responder, phones)
    verdict = await checker.check(phone)
    assert not verdict.accept and verdict.result == "revoked"
    assert not (await checker.check(phone)).accept  # cached: still revoked
    assert responder.queries == 1


@pytest.mark.parametrize(("mode", "accepted"), [("soft-fail", True), ("hard-fail", False)])
async def test_a_responder_that_never_answers_holds_a_connection_for_the_timeout_only(
    autojump_clock: trio.testing.MockClock,
    vendor: TestCa,
    phones: list[Issued],
    mode: OcspMode,
    accepted: bool,
) -> None:
    responder = FakeResponder(vendor)
    responder.hang = True
    checker, (phone, *_) = make(mode, responder, phones)
    verdict = await checker.check(phone)
    assert trio.current_time() == pytest.approx(3.0)
    assert verdict.accept is accepted and verdict.result == "failed" and verdict.queried
    assert "no answer from http://ocsp.vendor.example/ within 3 s" in verdict.reason
    # The phone retries at once: the failure is remembered, nobody waits again.
    retry = await checker.check(phone)
    assert retry.accept is accepted and not retry.queried
    assert trio.current_time() == pytest.approx(3.0) and responder.queries == 1
    # After FAILURE_CACHE the responder is asked again; it is back.
    await trio.sleep(FAILURE_CACHE)
    responder.hang = False
    back = await checker.check(phone)
    assert back.accept and back.result == "good" and back.queried
    assert checker.queries["failed"] == 1 and checker.queries["good"] == 1


async def test_a_query_its_caller_gave_up_on_is_cached_as_a_failure(
    autojump_clock: trio.testing.MockClock, vendor: TestCa, phones: list[Issued]
) -> None:
    # An outbound connection's connect_timeout cancels the query before ocsp_timeout: the
    # next attempt must not wait for the silent responder again.
    responder = FakeResponder(vendor)
    responder.hang = True
    checker, (phone, *_) = make("soft-fail", responder, phones)
    with trio.move_on_after(1.0):
        await checker.check(phone)
    retry = await checker.check(phone)
    assert retry.accept and retry.result == "failed" and not retry.queried
    assert "cancelled" in retry.reason
    assert trio.current_time() == pytest.approx(1.0) and responder.queries == 1
    assert checker.queries["failed"] == 1


async def test_a_failing_responder_is_logged_once_then_summarized_not_per_query(
    autojump_clock: trio.testing.MockClock,
    vendor: TestCa,
    phones: list[Issued],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=OCSP_LOG)
    responder = FakeResponder(vendor)
    responder.delay = 10.0  # past the 3 s timeout: every query fails
    checker, targets = make("soft-fail", responder, phones)
    # Three phones asked about again every FAILURE_CACHE for 10 minutes: 60 failed queries.
    for _ in range(20):
        for target in targets:
            assert (await checker.check(target)).result == "failed"
        await trio.sleep(FAILURE_CACHE)
    assert checker.queries["failed"] == 60  # the metric stays per query
    lines = [r for r in caplog.records if r.name == OCSP_LOG]
    assert [r.levelno for r in lines] == [logging.WARNING] * 3
    assert "OCSP responder http://ocsp.vendor.example/ is failing: no answer" in (
        lines[0].getMessage()
    )
    assert "is still failing: " in lines[1].getMessage()
    assert checker.failing_responders() == ("http://ocsp.vendor.example/",)
    responder.delay = 0.0
    assert (await checker.check(targets[0])).result == "good"
    back = [r for r in caplog.records if r.name == OCSP_LOG][-1]
    assert back.levelno == logging.INFO
    assert "http://ocsp.vendor.example/ answers again, after 60 failed queries" in (
        back.getMessage()
    )
    assert checker.failing_responders() == ()


@pytest.mark.parametrize(("mode", "accepted"), [("soft-fail", True), ("hard-fail", False)])
async def test_unknown_is_a_failure_not_a_revocation(
    autojump_clock: trio.testing.MockClock,
    vendor: TestCa,
    phones: list[Issued],
    mode: OcspMode,
    accepted: bool,
) -> None:
    responder = FakeResponder(vendor)
    responder.status = ocsp.OCSPCertStatus.UNKNOWN
    checker, (phone, *_) = make(mode, responder, phones)
    verdict = await checker.check(phone)
    assert verdict.accept is accepted and verdict.result == "unknown"
    assert verdict.valid_until == pytest.approx(wall_clock() + FAILURE_CACHE)


async def test_concurrent_connections_of_one_certificate_share_one_query(
    autojump_clock: trio.testing.MockClock, vendor: TestCa, phones: list[Issued]
) -> None:
    responder = FakeResponder(vendor)
    responder.delay = 1.0
    checker, (phone, other, _) = make("hard-fail", responder, phones)
    results = []

    async def connect(target: OcspTarget) -> None:
        results.append(await checker.check(target))

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(connect, phone)
        nursery.start_soon(connect, other)
    assert len(results) == 6 and all(v.accept for v in results)
    assert responder.queries == 2  # one per certificate
    assert trio.current_time() == pytest.approx(1.0)  # in parallel


async def test_the_cache_is_bounded(
    autojump_clock: trio.testing.MockClock, vendor: TestCa, phones: list[Issued]
) -> None:
    responder = FakeResponder(vendor)
    checker, targets = make("soft-fail", responder, phones, max_entries=2)
    for target in targets:
        await checker.check(target)
    assert checker.cached_entries() == 2
    # The oldest went: asking about it again queries; the newest is still cached.
    assert (await checker.check(targets[2])).queried is False
    assert (await checker.check(targets[0])).queried is True


def test_storing_into_a_full_cache_does_not_scan_it() -> None:
    # 20,000 current answers, then 20,000 more: each insert evicts the oldest in O(1). A scan
    # of the whole cache per insert (looking for expired entries) took minutes here.
    checker = OcspChecker(mode="soft-fail", timeout=3.0, max_entries=20000)
    entry = _Cached(until=time.time() + 3600.0, answer=None, reason="test")
    started = time.perf_counter()
    for serial in range(40000):
        checker._store((b"issuer", b"key", serial), entry)
    assert time.perf_counter() - started < 5.0
    assert checker.cached_entries() == 20000
    assert (b"issuer", b"key", 19999) not in checker._cache  # the oldest went
    assert (b"issuer", b"key", 20000) in checker._cache


async def test_a_garbled_answer_is_a_failure(
    autojump_clock: trio.testing.MockClock, vendor: TestCa, phones: list[Issued]
) -> None:
    async def garbage(url: str, request: bytes) -> bytes:
        return b"<html>Service Unavailable</html>"

    checker = OcspChecker(mode="hard-fail", timeout=3.0, fetch=garbage, wall_clock=wall_clock)
    target = checker.target(phones[0].x509, vendor.issued.x509)
    assert target is not None
    verdict = await checker.check(target)
    assert not verdict.accept and verdict.result == "failed"
    assert verdict.reason == "the response is no OCSP response"


async def test_whatever_a_fetch_raises_is_a_failed_query(
    autojump_clock: trio.testing.MockClock, vendor: TestCa, phones: list[Issued]
) -> None:
    async def broken(url: str, request: bytes) -> bytes:
        raise ValueError("odd bytes")

    checker = OcspChecker(mode="soft-fail", timeout=3.0, fetch=broken, wall_clock=wall_clock)
    target = checker.target(phones[0].x509, vendor.issued.x509)
    assert target is not None
    verdict = await checker.check(target)
    assert verdict.accept and verdict.result == "failed" and verdict.reason == "odd bytes"
    assert checker.queries["failed"] == 1


async def test_an_answer_just_past_its_next_update_is_not_asked_for_again_at_once(
    autojump_clock: trio.testing.MockClock, vendor: TestCa, phones: list[Issued]
) -> None:
    responder = FakeResponder(vendor)
    responder.next_update = -60.0  # within the five minutes of clock skew
    checker, (phone, *_) = make("hard-fail", responder, phones)
    verdict = await checker.check(phone)
    assert verdict.accept and verdict.valid_until == pytest.approx(wall_clock() + FAILURE_CACHE)
    await trio.sleep(FAILURE_CACHE - 1)
    assert not (await checker.check(phone)).queried


async def test_two_cas_of_one_name_do_not_share_answers(autojump_clock: trio.abc.Clock) -> None:
    """RFC 6960 §4.1.1: a CertID names the issuer by the hashes of its name and of its key. A
    CA re-keyed under the same name (both in ca_bundles during the rollover) may issue a
    serial number the old one issued: the old certificate's "good" must not answer for the
    new one, revoked."""
    now = datetime.datetime.fromtimestamp(wall_clock(), datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Phone CA")])
    url = "http://ocsp.vendor.example/"

    def certificate(
        subject: x509.Name, key: ec.EllipticCurvePrivateKey, signer: ec.EllipticCurvePrivateKey
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(4242)  # the same in both CAs' certificates
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
        )
        if subject != name:
            access = x509.AccessDescription(
                AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(url)
            )
            builder = builder.add_extension(x509.AuthorityInformationAccess([access]), False)
        return builder.sign(signer, hashes.SHA256())

    phone_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "phone")])
    old_key, new_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    old_ca, new_ca = certificate(name, old_key, old_key), certificate(name, new_key, new_key)
    old_phone = certificate(phone_name, ec.generate_private_key(ec.SECP256R1()), old_key)
    new_phone = certificate(phone_name, ec.generate_private_key(ec.SECP256R1()), new_key)
    by_key_hash = {
        x509.SubjectKeyIdentifier.from_public_key(old_key.public_key()).digest: (
            old_ca,
            old_key,
            old_phone,
            ocsp.OCSPCertStatus.GOOD,
        ),
        x509.SubjectKeyIdentifier.from_public_key(new_key.public_key()).digest: (
            new_ca,
            new_key,
            new_phone,
            ocsp.OCSPCertStatus.REVOKED,
        ),
    }

    async def fetch(url: str, request: bytes) -> bytes:
        ca, key, phone, status = by_key_hash[ocsp.load_der_ocsp_request(request).issuer_key_hash]
        at = datetime.datetime.fromtimestamp(wall_clock(), datetime.UTC)
        response = (
            ocsp.OCSPResponseBuilder()
            .add_response(
                cert=phone,
                issuer=ca,
                algorithm=hashes.SHA1(),
                cert_status=status,
                this_update=at,
                next_update=at + datetime.timedelta(seconds=600),
                revocation_time=at if status == ocsp.OCSPCertStatus.REVOKED else None,
                revocation_reason=None,
            )
            .responder_id(ocsp.OCSPResponderEncoding.HASH, ca)
            .sign(key, hashes.SHA256())
        )
        return response.public_bytes(serialization.Encoding.DER)

    checker = OcspChecker(mode="soft-fail", timeout=3.0, fetch=fetch, wall_clock=wall_clock)
    old_target = checker.target(old_phone, old_ca)
    new_target = checker.target(new_phone, new_ca)
    assert old_target is not None and new_target is not None
    assert (await checker.check(old_target)).result == "good"
    verdict = await checker.check(new_target)
    assert verdict.queried and verdict.result == "revoked" and not verdict.accept
    assert (await checker.check(old_target)).result == "good"  # each its own entry


async def staple(responder: FakeResponder, target: OcspTarget) -> bytes:
    """The answer the responder would give about ``target``, as a trunk staples it (RFC 6066
    §8); not counted as a query."""
    request = ocsp.OCSPRequestBuilder().add_certificate(
        target.certificate, target.issuer, hashes.SHA1()
    )
    data = await responder.fetch(
        target.url, request.build().public_bytes(serialization.Encoding.DER)
    )
    responder.queries -= 1
    return data


async def test_a_good_staple_is_checked_and_cached_like_a_fetched_answer(
    autojump_clock: trio.testing.MockClock, vendor: TestCa, phones: list[Issued]
) -> None:
    responder = FakeResponder(vendor)
    checker, (trunk, *_) = make("hard-fail", responder, phones)
    assert checker.use_stapled(trunk, await staple(responder, trunk)) is None
    verdict = await checker.check(trunk)
    assert verdict.accept and verdict.result == "good" and not verdict.queried
    assert verdict.valid_until == pytest.approx(wall_clock() + 600, abs=1)  # its nextUpdate
    assert responder.queries == 0 and checker.stapled["good"] == 1
    assert checker.queries == {"good": 0, "revoked": 0, "unknown": 0, "failed": 0}
    await trio.sleep(600)  # expired: without a new staple the responder is asked
    assert (await checker.check(trunk)).queried and responder.queries == 1


async def test_a_revoked_staple_refuses_even_over_a_cached_good_answer(
    autojump_clock: trio.testing.MockClock, vendor: TestCa, phones: list[Issued]
) -> None:
    responder = FakeResponder(vendor)
    checker, (trunk, *_) = make("soft-fail", responder, phones)
    assert (await checker.check(trunk)).accept
    responder.status = ocsp.OCSPCertStatus.REVOKED
    assert checker.use_stapled(trunk, await staple(responder, trunk)) is None
    verdict = await checker.check(trunk)
    assert not verdict.accept and verdict.result == "revoked" and not verdict.queried
    assert responder.queries == 1 and checker.stapled["revoked"] == 1


async def test_a_staple_failing_a_check_is_ignored_and_the_responder_asked(
    autojump_clock: trio.testing.MockClock, vendor: TestCa, phones: list[Issued]
) -> None:
    responder = FakeResponder(vendor)
    checker, (trunk, other, _) = make("hard-fail", responder, phones)
    about_another = await staple(responder, other)
    responder.next_update = 1.0
    stale = await staple(responder, trunk)
    await trio.sleep(1 + 301)  # past its nextUpdate and the clock skew
    responder.next_update = 600.0
    for data, problem in [
        (b"garbage", "no OCSP response"),
        (about_another, "not about this certificate"),
        (stale, "stale"),
        (b"\x30" * 70000, "larger than"),
    ]:
        reason = checker.use_stapled(trunk, data)
        assert reason is not None and problem in reason
    assert checker.stapled == {"good": 0, "revoked": 0, "unknown": 0, "invalid": 4}
    verdict = await checker.check(trunk)
    assert verdict.accept and verdict.queried and responder.queries == 1


async def test_our_own_staple_is_refreshed_at_three_quarters_and_retried_with_backoff(
    autojump_clock: trio.testing.MockClock, vendor: TestCa, phones: list[Issued]
) -> None:
    responder = FakeResponder(vendor)
    responder.phones = {phone.x509.serial_number: phone for phone in phones}
    ours, renewed, _ = phones
    staple = OwnStaple(fetch=responder.fetch, wall_clock=wall_clock)
    assert staple.current() == b""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(staple.run)
        staple.use(ours.x509, [vendor.issued.x509])
        await trio.sleep(1)
        first = staple.current()
        assert ocsp.load_der_ocsp_response(first).serial_number == ours.x509.serial_number
        assert responder.queries == 1
        await trio.sleep(448)  # 3/4 of its 600 s validity: not yet
        assert responder.queries == 1
        await trio.sleep(2)
        assert responder.queries == 2 and staple.fetched == 2
        # The responder stops answering: retried after 60, 120, 240 s; the answer in hand
        # (valid 600 s from the last fetch) is stapled until its nextUpdate, then nothing.
        responder.hang = True
        await trio.sleep(450 + 30 + 1)
        assert staple.failed == 1 and staple.current() != b""
        await trio.sleep(60 + 30)
        assert staple.failed == 2
        await trio.sleep(120 + 30)
        assert staple.failed == 3 and staple.current() == b""
        # A reload with another certificate: the old answer is dropped, the new one fetched.
        responder.hang = False
        staple.use(renewed.x509, [vendor.issued.x509])
        await trio.sleep(1)
        renewed_answer = ocsp.load_der_ocsp_response(staple.current())
        assert renewed_answer.serial_number == renewed.x509.serial_number
        nursery.cancel_scope.cancel()


async def test_our_own_staple_failing_is_logged_once_summarized_every_300_s_and_its_end_once(
    autojump_clock: trio.testing.MockClock,
    vendor: TestCa,
    phones: list[Issued],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """What operators see of a responder that stops answering about our own certificate
    (gateway/core/failure_log.py): one WARNING with the reason, a summary at most every 300 s
    while the retries (60, 120, 240 s ...) fail, one INFO when a fetch succeeds."""
    caplog.set_level(logging.DEBUG, logger=OCSP_LOG)
    responder = FakeResponder(vendor)
    responder.phones = {phone.x509.serial_number: phone for phone in phones}
    ours = phones[0]
    staple = OwnStaple(fetch=responder.fetch, wall_clock=wall_clock)
    url = "http://ocsp.vendor.example/"

    def lines() -> list[tuple[int, str]]:
        found = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == OCSP_LOG]
        caplog.clear()
        return found

    responder.hang = True
    async with trio.open_nursery() as nursery:
        nursery.start_soon(staple.run)
        staple.use(ours.x509, [vendor.issued.x509])
        await trio.sleep(30 + 1)  # the first fetch times out
        assert staple.failed == 1
        assert lines() == [
            (
                logging.WARNING,
                "tls: ocsp_stapling: the OCSP responder of our certificate is failing: no OCSP "
                f"answer about our certificate from {url} (no answer); retried with backoff "
                "from 60 s, nothing new is stapled meanwhile; further failures summarized "
                "every 300 s",
            )
        ]
        await trio.sleep(60 + 30 + 120 + 30)  # two retries, 90 and 240 s after: counted
        assert staple.failed == 3
        assert lines() == []
        await trio.sleep(240 + 30)  # the third, 510 s after the first: a summary
        assert staple.failed == 4
        ((level, summary),) = lines()
        assert level == logging.WARNING
        assert summary.startswith(
            "tls: ocsp_stapling: the OCSP responder of our certificate is still failing: "
            "3 failed fetches in the last 510 s, 4 since "
        )
        responder.hang = False
        await trio.sleep(480 + 1)  # the next retry gets an answer
        assert staple.fetched == 1 and staple.current() != b""
        assert lines() == [
            (
                logging.INFO,
                "tls: ocsp_stapling: the OCSP responder of our certificate answers again, "
                f"after 4 failed fetches in 990 s; from {url}",
            )
        ]
        nursery.cancel_scope.cancel()
