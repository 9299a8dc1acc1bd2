"""SHAKEN certificates: the x5u chain checked against the trust anchors (signatures, validity,
CA flags, TNAuthList), and the bounds on what an x5u URL may return."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization

from gateway.plugins.stir_shaken.certificates import (
    MAX_CERTIFICATE_FILE,
    load_pem_untrusted,
    load_trust_anchors,
    validate_chain,
)
from gateway.plugins.stir_shaken.fetch import (
    CertificateCache,
    host_allowed,
    one_spelling,
    shown_host,
    shown_url,
)
from gateway.plugins.stir_shaken.passport import PassportError
from gateway.testing.sti_pki import make_pki

NOW = 1_800_000_000.0
PKI = make_pki(now=NOW)


def untrusted(**kwargs: object) -> PassportError:
    with pytest.raises(PassportError) as caught:
        validate_chain(**kwargs)  # type: ignore[arg-type]
    assert caught.value.status == 437
    return caught.value


def test_a_chain_to_the_anchor_gives_the_signers_key() -> None:
    chain = load_pem_untrusted(PKI.chain_pem())
    signer = validate_chain(chain, load_trust_anchors(PKI.root_pem()), now=NOW)
    assert signer.key.public_numbers() == PKI.signer_key.public_key().public_numbers()
    assert "Test SHAKEN signer" in signer.subject


def test_another_root_an_expired_chain_a_missing_intermediate_are_untrusted() -> None:
    chain = load_pem_untrusted(PKI.chain_pem())
    anchors = load_trust_anchors(PKI.root_pem())
    other = load_trust_anchors(make_pki(now=NOW).root_pem())
    assert "trust anchor" in untrusted(certificates=chain, anchors=other, now=NOW).reason
    assert "expired" in untrusted(certificates=chain, anchors=anchors, now=NOW + 40 * 86400).reason
    assert "trust anchor" in untrusted(certificates=chain[:1], anchors=anchors, now=NOW).reason


def test_a_signer_without_tn_auth_list_is_no_sti_certificate() -> None:
    pki = make_pki(now=NOW, tn_auth_list=False)
    chain = load_pem_untrusted(pki.chain_pem())
    anchors = load_trust_anchors(pki.root_pem())
    assert "TNAuthList" in untrusted(certificates=chain, anchors=anchors, now=NOW).reason
    validate_chain(chain, anchors, now=NOW, require_tn_auth_list=False)


def test_a_leaf_that_is_not_ca_cannot_issue() -> None:
    # The signer's certificate presented as the intermediate of itself: no CA flag, no chain.
    chain = load_pem_untrusted(PKI.chain_pem())
    anchors = load_trust_anchors(PKI.root_pem())
    assert untrusted(certificates=[chain[0], chain[0]], anchors=anchors, now=NOW)


def test_x5u_resource_bounds() -> None:
    der = PKI.signer.public_bytes(serialization.Encoding.DER)
    assert len(load_pem_untrusted(der)) == 1
    for data in (b"x" * (MAX_CERTIFICATE_FILE + 1), b"not a certificate", PKI.chain_pem() * 3):
        with pytest.raises(PassportError) as caught:
            load_pem_untrusted(data)
        assert (caught.value.outcome, caught.value.status) == ("bad_info", 436)


def test_certificate_cache_keeps_by_max_age_capped() -> None:
    cache = CertificateCache(max_cache=100)
    cache.put("https://a/x", "A", max_age=10, now=0)
    cache.put("https://b/x", "B", max_age=1000, now=0)
    cache.put("https://c/x", "C", max_age=0, now=0)  # no-store: not kept
    assert (cache.get("https://a/x", 9.9), cache.get("https://a/x", 10)) == ("A", None)
    assert (cache.get("https://b/x", 99), cache.get("https://b/x", 100)) == ("B", None)
    assert cache.get("https://c/x", 0) is None


def test_certificate_hosts_allow_a_host_or_a_domains_hosts() -> None:
    hosts = ("certs.carrier.example", ".sti.example")
    assert host_allowed("https://certs.carrier.example/a.pem", hosts)
    assert host_allowed("https://CERTS.carrier.example.:8443/a.pem", hosts)
    assert host_allowed("https://cr.sp1.sti.example/a.pem", hosts)
    assert not host_allowed("https://sti.example/a.pem", hosts)  # the domain's hosts only
    assert not host_allowed("https://evilsti.example/a.pem", hosts)
    assert not host_allowed("https://certs.carrier.example.evil.net/a.pem", hosts)
    assert not host_allowed("https://127.0.0.1/a.pem", hosts)
    assert not host_allowed("https://user@169.254.169.254/latest", hosts)
    assert not host_allowed("not a url", hosts)
    assert host_allowed("https://169.254.169.254/latest", ())  # no list: every host


@pytest.mark.parametrize(
    ("host", "spelled"),
    [
        ("127.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("127.0.0.1", "127.0.0.1"),
        ("::ffff:127.0.0.1", "127.0.0.1"),
        ("0:0:0:0:0:0:0:1", "::1"),
        ("certs.carrier.example", "certs.carrier.example"),
        ("dead.beef", "dead.beef"),  # hexadecimal letters without 0x: a name
        ("1.2.3.4.5", "1.2.3.4.5"),  # no address (getaddrinfo looks it up as a name)
        ("0x", "0x"),
    ],
)
def test_an_ip_address_has_one_spelling(host: str, spelled: str) -> None:
    """inet_aton(3)'s spellings of an IPv4 address (getaddrinfo connects to each as the
    address), an IPv6 address's, an IPv4-mapped one: one host to count and compare."""
    assert one_spelling(host) == spelled


def test_certificate_hosts_compare_an_ip_address_in_any_spelling() -> None:
    """An address listed in certificate_hosts is the address however a URL spells it, and
    however the list does: 127.1 is 127.0.0.1 (on main "https://127.1/" was refused with
    127.0.0.1 listed, and allowed with 127.1 listed though it is the same server)."""
    from gateway.plugins.stir_shaken import StirShakenConfig

    listed = StirShakenConfig(certificate_hosts=("0x7f.1",)).certificate_hosts
    assert listed == ("127.0.0.1",)
    assert host_allowed("https://127.1/a.pem", listed)
    assert host_allowed("https://[::ffff:127.0.0.1]/a.pem", listed)
    assert not host_allowed("https://127.0.0.2/a.pem", listed)


def test_a_url_or_host_from_an_x5u_is_shown_redacted_and_escaped() -> None:
    """What the log lines and reasons show of an x5u: no password (redact_password, as
    tests/unit/core/test_call_log_uris.py takes shown_url to do), no CR LF, escape or
    non-ASCII letter (logs.shown_text: "?"), cut short past a URL's 512 characters."""
    assert shown_url("https://u:secret@h.example/a\r\nb\x1b\u0435.pem") == (
        "https://u:***@h.example/a??b??.pem"
    )
    assert shown_host("c\u0435rts.example\x7f") == "c?rts.example?"
    long = shown_url("https://h.example/" + "a" * 600)
    assert len(long) == 512 and long.endswith("...")
