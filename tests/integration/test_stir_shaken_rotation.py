"""The stir_shaken plugin's certificate cache over real HTTPS on 127.0.0.1: a signer that rotates
its key under the same x5u URL (the URL names "the current certificate"), a forger whose bad
signatures must not make the gateway fetch on every call, calls failing at once that share one
fetch, and the Cache-Control answers of a repository (ATIS-1000074 §5.3.1). The plugin's own
HTTPS fetcher (h11 over trio's TLS stream) against a Python HTTPS server that counts what it is
asked for; trio's clock is a MockClock that does not run by itself (``mock_clock.jump`` stands
for the minute between forced re-fetches), the service's wall clock stopped, moved by the test.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.core.interfaces import TrunkCall
from gateway.plugins.stir_shaken import (
    MIN_CERTIFICATE_KEEP,
    REFETCH_INTERVAL,
    StirShaken,
    StirShakenConfig,
    Verification,
)
from gateway.testing.sti_pki import StiPki, make_identity, make_pki
from tests.integration.stir_shaken_service import running
from tests.interop.harness.certificate_server import certificate_server

CALL = TrunkCall(
    call_id="rotation-1",
    trunk="carrier",
    caller_kind="trunk",
    caller_name="carrier",
    calling=("+15550100",),
    called="+4930123456",
)


class Verifier:
    """The plugin verifying against the test server, its wall clock stopped when made and
    ``later`` seconds ahead of that: a fetch that takes seconds on a loaded machine does not
    move it (the cache's lifetimes are checked to the second)."""

    def __init__(self, anchors: Path, https_ca: Path) -> None:
        self.started = time.time()
        self.later = 0.0
        config = StirShakenConfig(
            verify_trunks=("carrier",),
            trust_anchors=str(anchors),
            fetch_ca_file=str(https_ca),
            certificate_hosts=("127.0.0.1",),
            fetch_timeout=10.0,
            check_revocation=False,  # these certificates name no CRL
        )
        self.service = StirShaken(config, clock=self.clock)  # the plugin's own HTTPS fetcher

    def clock(self) -> float:
        return self.started + self.later

    async def verify(self, key: ec.EllipticCurvePrivateKey, x5u: str) -> str:
        value = make_identity(key, x5u, orig="15550100", dest="4930123456", iat=int(self.clock()))
        return (await Verification(self.service, CALL, [value]).run()).outcome


@contextlib.asynccontextmanager
async def running_verifier(anchors: Path, https_ca: Path) -> AsyncIterator[Verifier]:
    """A :class:`Verifier` whose service runs (its fetches' nursery), until the block ends."""
    verifier = Verifier(anchors, https_ca)
    async with running(verifier.service):
        yield verifier


def serve(pki: StiPki, tmp_path: Path) -> tuple[dict[str, bytes], dict[str, str]]:
    (tmp_path / "sti").mkdir()
    pki.write(tmp_path / "sti")
    return {"/shaken.pem": pki.chain_pem()}, {}


async def test_a_signer_that_rotates_its_key_verifies_after_one_fetch(
    tmp_path: Path, mock_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """The old certificate cached (max-age=600); the repository now serves a new one, signed
    by the same CA: the first PASSporT signed with the new key fetches the URL again once and
    verifies, and the new certificate replaces the old in the cache."""
    pki = make_pki()
    files, _ = serve(pki, tmp_path)
    with certificate_server(b"", tmp_path, files) as (url, https_ca, requests):
        async with running_verifier(tmp_path / "sti" / "roots.pem", https_ca) as verifier:
            assert await verifier.verify(pki.signer_key, url) == "passed"
            rotated = pki.with_new_signer()
            files["/shaken.pem"] = rotated.chain_pem()
            caplog.set_level(logging.INFO, logger="gateway.plugins.stir_shaken")
            assert await verifier.verify(rotated.signer_key, url) == "passed"
            assert await verifier.verify(rotated.signer_key, url) == "passed"  # from the cache
            # A call signed with the old key now fails against the new certificate, and the URL,
            # fetched again less than a minute ago, is not fetched for it.
            assert await verifier.verify(pki.signer_key, url) == "bad_signature"
    assert requests == ["/shaken.pem"] * 2
    changed = [r.getMessage() for r in caplog.records if "changed" in r.getMessage()]
    subject = rotated.signer.subject.rfc4514_string()
    assert changed == [
        f"stir_shaken: certificate {url} changed: now {subject}, "
        f"serial {rotated.signer.serial_number:x}"
    ]


async def test_a_forgers_calls_fetch_the_certificate_again_at_most_once_a_minute(
    tmp_path: Path, mock_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Bad signatures with a cached certificate: one forced re-fetch in a minute whatever
    their number, another once the minute is over; the genuine signer's calls keep verifying
    from the cache, and nothing is said of a certificate that did not change."""
    pki = make_pki()
    forger = ec.generate_private_key(ec.SECP256R1())
    files, _ = serve(pki, tmp_path)
    caplog.set_level(logging.INFO, logger="gateway.plugins.stir_shaken")
    with certificate_server(b"", tmp_path, files) as (url, https_ca, requests):
        async with running_verifier(tmp_path / "sti" / "roots.pem", https_ca) as verifier:
            assert await verifier.verify(pki.signer_key, url) == "passed"
            for _ in range(5):
                assert await verifier.verify(forger, url) == "bad_signature"
            assert requests == ["/shaken.pem"] * 2
            mock_clock.jump(REFETCH_INTERVAL - 1)
            assert await verifier.verify(forger, url) == "bad_signature"
            assert requests == ["/shaken.pem"] * 2
            mock_clock.jump(1)
            for _ in range(3):
                assert await verifier.verify(forger, url) == "bad_signature"
            assert await verifier.verify(pki.signer_key, url) == "passed"
    assert requests == ["/shaken.pem"] * 3
    assert not [r for r in caplog.records if "changed" in r.getMessage()]


async def test_calls_failing_at_once_share_one_fetch_of_the_new_certificate(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    pki = make_pki()
    files, _ = serve(pki, tmp_path)
    with certificate_server(b"", tmp_path, files) as (url, https_ca, requests):
        async with running_verifier(tmp_path / "sti" / "roots.pem", https_ca) as verifier:
            assert await verifier.verify(pki.signer_key, url) == "passed"
            rotated = pki.with_new_signer()
            files["/shaken.pem"] = rotated.chain_pem()
            outcomes: list[str] = []

            async def call() -> None:
                outcomes.append(await verifier.verify(rotated.signer_key, url))

            async with trio.open_nursery() as nursery:
                for _ in range(4):
                    nursery.start_soon(call)
    assert outcomes == ["passed"] * 4
    assert requests == ["/shaken.pem"] * 2


@pytest.mark.parametrize(
    "cache_control", ["max-age=1", "no-store, max-age=1", "max-age=30, no-cache"]
)
async def test_a_max_age_under_a_minute_is_kept_a_minute_but_never_past_not_after(
    tmp_path: Path, mock_clock: trio.testing.MockClock, cache_control: str
) -> None:
    """ATIS-1000074 §5.3.1 has verifiers cache the certificate: a max-age above 0 is kept at
    least MIN_CERTIFICATE_KEEP (no-store and no-cache are not looked at: RFC 9111 binds HTTP
    caches, this is a verifier's store of checked keys), at most certificate_cache, and never
    past the chain's first notAfter."""
    pki = make_pki()
    files, headers = serve(pki, tmp_path)
    headers["/shaken.pem"] = cache_control
    with certificate_server(b"", tmp_path, files, headers) as (url, https_ca, requests):
        async with running_verifier(tmp_path / "sti" / "roots.pem", https_ca) as verifier:
            assert await verifier.verify(pki.signer_key, url) == "passed"
            verifier.later = MIN_CERTIFICATE_KEEP - 1
            assert await verifier.verify(pki.signer_key, url) == "passed"
            assert requests == ["/shaken.pem"]
            verifier.later = MIN_CERTIFICATE_KEEP + 1
            assert await verifier.verify(pki.signer_key, url) == "passed"
            assert requests == ["/shaken.pem"] * 2
            # A certificate whose notAfter comes in 20 s is kept 20 s, not the minute.
            expiring = pki.with_new_signer(now=verifier.clock() + 20, days=1)
            files["/shaken.pem"] = expiring.chain_pem()
            mock_clock.jump(REFETCH_INTERVAL)
            assert await verifier.verify(expiring.signer_key, url) == "passed"  # one re-fetch
            verifier.later += 10
            assert await verifier.verify(expiring.signer_key, url) == "passed"
            assert requests == ["/shaken.pem"] * 3
            verifier.later += 11
            assert await verifier.verify(expiring.signer_key, url) == "untrusted"  # expired
    assert requests == ["/shaken.pem"] * 4
