"""SHAKEN certificate revocation (ATIS-1000080 §6.4.1), sans-IO: what a validated chain says to
look up (the CRL Distribution Points of the end entity and the intermediate, not the root),
and the STI-PA's CRL read from bytes: its signature against the anchors and the chain's CAs,
its dates, its size, who it lists (RFC 5280 §5.3.3 Certificate Issuer in an indirect CRL)."""

from __future__ import annotations

import datetime

import attrs
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from gateway.plugins.stir_shaken.certificates import (
    MAX_CRL_FILE,
    RevocationCheck,
    RevocationUnavailable,
    SignerCertificate,
    load_crl_untrusted,
    load_pem_untrusted,
    load_trust_anchors,
    validate_chain,
)
from gateway.plugins.stir_shaken.fetch import CertificateCache
from gateway.testing.sti_pki import StiPki, make_pki

NOW = 1_800_000_000.0
CRL_URL = "https://crl.sti-pa.example/crl"
PKI = make_pki(now=NOW, crl_url=CRL_URL)


def validated(pki: StiPki = PKI) -> SignerCertificate:
    chain = load_pem_untrusted(pki.chain_pem())
    return validate_chain(chain, load_trust_anchors(pki.root_pem()), now=NOW)


def unavailable(data: bytes, signer: SignerCertificate, *, now: float = NOW) -> str:
    with pytest.raises(RevocationUnavailable) as caught:
        load_crl_untrusted(data, signer.crl_signers, now=now)
    return caught.value.reason


def test_a_chain_names_the_crl_of_its_end_entity_and_intermediate() -> None:
    signer = validated()
    assert [(c.crl_url, c.serial) for c in signer.revocation] == [
        (CRL_URL, PKI.signer.serial_number),
        (CRL_URL, PKI.intermediate.serial_number),
    ]
    assert signer.revocation[0].issuer == PKI.intermediate.subject
    assert "Test SHAKEN signer" in signer.revocation[0].subject
    # The CRL may be signed by the anchor the chain ended at or by the chain's CA.
    assert signer.crl_signers == (PKI.root, PKI.intermediate)
    # Certificates without the extension have nothing to look up.
    assert validated(make_pki(now=NOW)).revocation == ()
    assert signer.no_crl == ""


def test_an_end_entity_that_names_no_crl_says_so() -> None:
    """ATIS-1000080 §6.4.1 (v3 and later): an STI end entity names the STI-PA's CRL. One that
    does not cannot be looked up, whatever its intermediate names."""
    bare = validated(make_pki(now=NOW))
    assert bare.no_crl == "certificate names no CRL (no CRL Distribution Points)"
    pki = make_pki(now=NOW, crl_url=CRL_URL, signer_names_crl=False)
    signer = validated(pki)
    assert signer.no_crl == "certificate names no CRL (no CRL Distribution Points)"
    assert [check.serial for check in signer.revocation] == [pki.intermediate.serial_number]


@pytest.mark.parametrize("pem", [False, True])
def test_a_crl_lists_the_revoked_certificates_only(pem: bool) -> None:
    signer = validated()
    leaf, middle = signer.revocation
    revoked_leaf = load_crl_untrusted(
        PKI.crl((PKI.signer,), now=NOW, pem=pem), (PKI.root,), now=NOW
    )
    assert revoked_leaf.lists(leaf)
    assert not revoked_leaf.lists(middle)
    revoked_middle = load_crl_untrusted(PKI.crl((PKI.intermediate,), now=NOW), (PKI.root,), now=NOW)
    assert revoked_middle.lists(middle)
    assert not revoked_middle.lists(leaf)
    empty = load_crl_untrusted(PKI.crl(now=NOW), (PKI.root,), now=NOW)
    assert not empty.lists(leaf) and not empty.lists(middle)
    # Kept until its nextUpdate (a day after NOW by default).
    assert empty.next_update == NOW + 86400
    assert "Test STI-PA Root" in empty.issuer


def test_a_crl_signed_by_the_chains_intermediate_is_believed_too() -> None:
    crl = PKI.crl((PKI.signer,), now=NOW, signer="intermediate")
    assert load_crl_untrusted(crl, validated().crl_signers, now=NOW).lists(
        validated().revocation[0]
    )
    # But not by the anchors alone: the intermediate is no anchor.
    anchor_only = attrs.evolve(validated(), crl_signers=(PKI.root,))
    assert "not signed by the trust anchors" in unavailable(crl, anchor_only)


def test_a_crl_with_another_key_under_the_same_name_is_not_believed() -> None:
    # Another PKI's root has the same name, "Test STI-PA Root": only the signature tells.
    forged = make_pki(now=NOW).crl((PKI.signer,), now=NOW)
    assert "not signed by the trust anchors" in unavailable(forged, validated())


def test_an_expired_or_future_crl_is_not_believed() -> None:
    signer = validated()
    expired = PKI.crl(now=NOW - 7200, next_update=3600)  # nextUpdate an hour ago
    assert "expired" in unavailable(expired, signer)
    assert load_crl_untrusted(expired, signer.crl_signers, now=NOW - 3601)  # still current then
    future = PKI.crl(now=NOW + 3600)  # thisUpdate an hour (less a minute) ahead of us
    assert "not yet valid" in unavailable(future, signer)
    slightly = PKI.crl(now=NOW + 200)  # within the clock skew tolerated
    assert load_crl_untrusted(slightly, signer.crl_signers, now=NOW)


def test_crl_bytes_are_bounded_and_must_parse() -> None:
    signer = validated()
    assert "too large" in unavailable(b"0" * (MAX_CRL_FILE + 1), signer)
    assert "cannot be read" in unavailable(b"not a CRL", signer)
    assert "cannot be read" in unavailable(PKI.crl(now=NOW)[:-10], signer)
    assert "cannot be read" in unavailable(b"-----BEGIN X509 CRL-----\nAAAA\n", signer)


def _indirect_crl(entries: list[tuple[int, x509.Name | None]]) -> bytes:
    """A CRL of the root whose entries name their certificates' issuer (RFC 5280 §5.3.3)."""
    at = datetime.datetime.fromtimestamp(NOW, datetime.UTC)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(PKI.root.subject)
        .last_update(at - datetime.timedelta(minutes=1))
        .next_update(at + datetime.timedelta(days=1))
    )
    for serial, issuer in entries:
        entry = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(at)
        if issuer is not None:
            entry = entry.add_extension(
                x509.CertificateIssuer([x509.DirectoryName(issuer)]), critical=True
            )
        builder = builder.add_revoked_certificate(entry.build())
    assert PKI.root_key is not None
    return builder.sign(PKI.root_key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def test_an_indirect_crl_entry_counts_for_the_issuer_it_names() -> None:
    leaf = validated().revocation[0]
    elsewhere = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "Another STI-CA")])
    other_ca = _indirect_crl([(leaf.serial, elsewhere)])
    assert not load_crl_untrusted(other_ca, (PKI.root,), now=NOW).lists(leaf)
    our_ca = _indirect_crl([(leaf.serial, PKI.intermediate.subject)])
    assert load_crl_untrusted(our_ca, (PKI.root,), now=NOW).lists(leaf)
    # The issuer an entry names holds for the entries after it that name none.
    carried = _indirect_crl([(12345, elsewhere), (leaf.serial, None)])
    assert not load_crl_untrusted(carried, (PKI.root,), now=NOW).lists(leaf)
    carried = _indirect_crl([(12345, PKI.intermediate.subject), (leaf.serial, None)])
    assert load_crl_untrusted(carried, (PKI.root,), now=NOW).lists(leaf)


def test_a_revocation_check_matches_serial_and_issuer() -> None:
    crl = load_crl_untrusted(PKI.crl((PKI.signer,), now=NOW), (PKI.root,), now=NOW)
    leaf = validated().revocation[0]
    assert crl.lists(leaf)
    other_serial = RevocationCheck(CRL_URL, leaf.serial + 1, leaf.issuer, leaf.subject)
    assert not crl.lists(other_serial)


def test_the_crl_cache_holds_a_few_urls() -> None:
    cache = CertificateCache(max_cache=float("inf"), max_entries=2)
    for n in range(3):
        cache.put(f"https://crl{n}.example/crl", n, max_age=86400, now=0)
    assert len(cache) == 2
    assert cache.get("https://crl0.example/crl", 1) is None  # the oldest went
    assert cache.get("https://crl2.example/crl", 86399) == 2
    assert cache.get("https://crl2.example/crl", 86400) is None  # nextUpdate reached
