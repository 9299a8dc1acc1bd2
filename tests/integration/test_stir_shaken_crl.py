"""The stir_shaken plugin's revocation check over real HTTPS on 127.0.0.1 (ATIS-1000080
§6.4.1): the x5u chain and the STI-PA's CRL it names both served by a Python HTTPS server whose
TLS certificate a test CA issued (``fetch_ca_file``), fetched with the plugin's own fetchers
(h11 over trio's TLS stream; the CRL's larger size bound), checked by a Verification as the
call core runs it.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

from gateway.core.interfaces import TrunkCall
from gateway.plugins.stir_shaken import StirShaken, StirShakenConfig, Verification
from gateway.plugins.stir_shaken.certificates import MAX_CRL_FILE
from gateway.plugins.stir_shaken.fetch import MAX_BODY
from gateway.testing.sti_pki import StiPki, make_identity, make_pki
from tests.integration.stir_shaken_service import running
from tests.interop.harness.certificate_server import certificate_server

CALL = TrunkCall(
    call_id="crl-1",
    trunk="carrier",
    caller_kind="trunk",
    caller_name="carrier",
    calling=("+15550100",),
    called="+4930123456",
)


def verifier(anchors: Path, https_ca: Path, **table: Any) -> StirShaken:
    config = StirShakenConfig(
        verify_trunks=("carrier",),
        trust_anchors=str(anchors),
        fetch_ca_file=str(https_ca),
        certificate_hosts=("127.0.0.1",),
        fetch_timeout=10.0,
        **table,
    )
    return StirShaken(config)  # the plugin's own HTTPS fetchers


async def verify(service: StirShaken, pki: StiPki, x5u: str) -> tuple[str, str]:
    value = make_identity(
        pki.signer_key, x5u, orig="15550100", dest="4930123456", iat=int(time.time())
    )
    async with running(service):
        outcome = await Verification(service, CALL, [value]).run()
    return outcome.outcome, outcome.described


def pki_for(url: str) -> StiPki:
    """A PKI whose certificates name the CRL at /sti-pa.crl of the server at ``url``."""
    return make_pki(crl_url=url.replace("/shaken.pem", "/sti-pa.crl"))


async def test_a_certificate_the_sti_pa_revoked_fails_and_one_it_did_not_passes(
    tmp_path: Path,
) -> None:
    files: dict[str, bytes] = {}
    with certificate_server(b"", tmp_path, files) as (url, https_ca, requests):
        pki = pki_for(url)
        anchors, _, _ = pki.write(tmp_path)
        files["/shaken.pem"] = pki.chain_pem()
        files["/sti-pa.crl"] = pki.crl()
        assert await verify(verifier(anchors, https_ca), pki, url) == (
            "passed",
            "caller number verified (attestation A)",
        )
        files["/sti-pa.crl"] = pki.crl((pki.signer,))
        outcome, described = await verify(verifier(anchors, https_ca), pki, url)
        assert outcome == "revoked"
        assert "certificate revoked" in described
        files["/sti-pa.crl"] = pki.crl((pki.intermediate,), pem=True)
        outcome, _ = await verify(verifier(anchors, https_ca), pki, url)
        assert outcome == "revoked"
    # Each verifier fetched the chain and the CRL once (the end entity and the intermediate
    # name the same CRL).
    assert requests == ["/shaken.pem", "/sti-pa.crl"] * 3


async def test_a_crl_past_the_certificate_bound_is_fetched_and_one_past_its_own_is_not(
    tmp_path: Path,
) -> None:
    """The STI-PA's CRL may be larger than a certificate chain may (64 KiB), up to 1 MiB."""
    files: dict[str, bytes] = {}
    with certificate_server(b"", tmp_path, files) as (url, https_ca, _):
        pki = pki_for(url)
        anchors, _, _ = pki.write(tmp_path)
        files["/shaken.pem"] = pki.chain_pem()
        # Others' certificates the STI-PA revoked, then the signer: a CRL of about 100 KB.
        others = [random.getrandbits(64) | 1 << 63 for _ in range(2500)]
        files["/sti-pa.crl"] = pki.crl((*others, pki.signer))
        assert MAX_BODY < len(files["/sti-pa.crl"]) < MAX_CRL_FILE
        outcome, _ = await verify(verifier(anchors, https_ca), pki, url)
        assert outcome == "revoked"
        files["/sti-pa.crl"] = b"0" * (MAX_CRL_FILE + 1)
        outcome, described = await verify(verifier(anchors, https_ca), pki, url)
        assert outcome == "passed_revocation_unknown"
        assert "revocation not checked: CRL not fetched: answer too large" in described
        outcome, described = await verify(
            verifier(anchors, https_ca, revocation_unavailable="fail"), pki, url
        )
        assert outcome == "revocation_unknown"
        assert "verification failed: revocation not checked" in described


async def test_a_crl_url_that_is_not_https_is_not_fetched(tmp_path: Path) -> None:
    """ATIS-1000080 §6.4.1 speaks of an HTTP URL; the STI-PAs publish their CRL at https URLs
    (iconectiv's https://authenticate-api.iconectiv.com/download/v1/crl), and this verifier
    fetches HTTPS only, as for x5u (ATIS-1000074 §5.3.1): an http CRL URL is unavailable, and
    the call passes marked."""
    files: dict[str, bytes] = {}
    with certificate_server(b"", tmp_path, files) as (url, https_ca, requests):
        pki = make_pki(crl_url=url.replace("https://", "http://").replace(".pem", ".crl"))
        anchors, _, _ = pki.write(tmp_path)
        files["/shaken.pem"] = pki.chain_pem()
        files["/shaken.crl"] = pki.crl((pki.signer,))
        outcome, described = await verify(verifier(anchors, https_ca), pki, url)
    assert outcome == "passed_revocation_unknown"
    assert "CRL not fetched: only https URLs are fetched" in described
    assert requests == ["/shaken.pem"]


async def test_a_signer_that_names_no_crl_passes_marked_or_fails_as_told(tmp_path: Path) -> None:
    """ATIS-1000080 §6.4.1 (v3 and later): an end entity names the STI-PA's CRL. A chain that
    names none has nothing to fetch but the certificate, and its revocation is unknown."""
    files: dict[str, bytes] = {}
    with certificate_server(b"", tmp_path, files) as (url, https_ca, requests):
        pki = make_pki()
        anchors, _, _ = pki.write(tmp_path)
        files["/shaken.pem"] = pki.chain_pem()
        outcome, described = await verify(verifier(anchors, https_ca), pki, url)
        assert outcome == "passed_revocation_unknown"
        assert described == (
            "caller number verified (attestation A; revocation not checked: "
            "certificate names no CRL (no CRL Distribution Points))"
        )
        outcome, described = await verify(
            verifier(anchors, https_ca, revocation_unavailable="fail"), pki, url
        )
        assert outcome == "revocation_unknown"
        assert "verification failed: revocation not checked: certificate names no" in described
        outcome, _ = await verify(verifier(anchors, https_ca, check_revocation=False), pki, url)
        assert outcome == "passed"
    assert requests == ["/shaken.pem"] * 3
