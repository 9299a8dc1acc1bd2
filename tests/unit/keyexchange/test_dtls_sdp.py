"""DTLS-SRTP SDP values: a=fingerprint (RFC 8122 §5), a=setup and the role tables (RFC 4145 §4,
RFC 5763 §5), a=tls-id (RFC 8842 §4), the RFC 7983 first-byte range and the RFC 5764 §4.2 key
split."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.plugins.keyexchange.dtls_srtp import (
    MAX_FINGERPRINTS,
    DtlsError,
    Fingerprint,
    PeerDtlsParameters,
    Role,
    Setup,
    answerer_role,
    is_dtls_first_byte,
    offerer_role,
    parse_dtls_attributes_untrusted,
    parse_fingerprint_untrusted,
    parse_setup_untrusted,
    parse_tls_id_untrusted,
    serialize_fingerprint,
    split_keying_material,
)

DER = b"0\x82 not really a certificate, but hashes like one"
SHA256 = hashlib.sha256(DER).digest()
SHA256_TEXT = "sha-256 " + ":".join(f"{b:02X}" for b in SHA256)


# -- a=fingerprint ------------------------------------------------------------------------------


def test_a_sha256_fingerprint_parses_and_matches_the_certificate() -> None:
    fingerprint = parse_fingerprint_untrusted(SHA256_TEXT)
    assert fingerprint == Fingerprint("sha-256", SHA256)
    assert fingerprint.usable and fingerprint.matches(DER)
    assert not fingerprint.matches(DER + b"x")


def test_serialization_is_upper_case_hex_pairs_with_colons() -> None:
    text = serialize_fingerprint(Fingerprint("sha-256", SHA256))
    assert text == SHA256_TEXT
    assert len(text.split(" ")[1]) == 32 * 3 - 1


@pytest.mark.parametrize(
    ("name", "hashlib_name"),
    [("sha-1", "sha1"), ("sha-224", "sha224"), ("sha-384", "sha384"), ("sha-512", "sha512")],
)
def test_the_other_sha_functions_are_accepted(name: str, hashlib_name: str) -> None:
    digest = hashlib.new(hashlib_name, DER).digest()
    fingerprint = parse_fingerprint_untrusted(f"{name.upper()} {digest.hex(':')}")
    assert fingerprint.algorithm == name
    assert fingerprint.matches(DER)


def test_lower_case_hex_is_accepted() -> None:
    assert parse_fingerprint_untrusted(SHA256_TEXT.lower()).matches(DER)


def test_md5_parses_but_is_never_usable() -> None:
    digest = hashlib.md5(DER).digest()
    fingerprint = parse_fingerprint_untrusted("md5 " + digest.hex(":").upper())
    assert not fingerprint.usable
    assert not fingerprint.matches(DER)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("sha-256", "needs a hash function and a fingerprint"),
        ("sha-256 " + "AB:" * 31 + "A", "colon-separated hex pairs"),
        ("sha-256 AB:CD", "has 2 octets, not 32"),
        ("sha-256 AB::CD", "colon-separated hex pairs"),
        ("sha-256 ZZ:" + "AB:" * 30 + "AB", "colon-separated hex pairs"),
        ("sh(a) AB", "needs a hash function"),
        ("sha-1 " + "AB:" * 90 + "AB", "longer than 256"),
    ],
)
def test_malformed_fingerprints_are_refused(value: str, reason: str) -> None:
    with pytest.raises(DtlsError, match=reason) as info:
        parse_fingerprint_untrusted(value)
    assert info.value.sip_status == 488


@given(st.binary(min_size=32, max_size=32))
def test_fingerprints_round_trip(digest: bytes) -> None:
    fingerprint = Fingerprint("sha-256", digest)
    assert parse_fingerprint_untrusted(serialize_fingerprint(fingerprint)) == fingerprint


@given(st.text(max_size=300))
def test_any_text_parses_to_a_round_tripping_value_or_fails_with_dtls_error(value: str) -> None:
    try:
        fingerprint = parse_fingerprint_untrusted(value)
    except DtlsError:
        return
    assert parse_fingerprint_untrusted(serialize_fingerprint(fingerprint)) == fingerprint


# -- a=setup, a=tls-id --------------------------------------------------------------------------


@pytest.mark.parametrize("setup", list(Setup))
def test_every_setup_value_parses_in_any_case(setup: Setup) -> None:
    assert parse_setup_untrusted(setup.value.upper()) is setup


@pytest.mark.parametrize("value", [None, "", "both", "active passive"])
def test_other_setup_values_are_refused(value: str | None) -> None:
    with pytest.raises(DtlsError, match="a=setup"):
        parse_setup_untrusted(value)


def test_tls_ids_follow_the_rfc_8842_grammar() -> None:
    assert parse_tls_id_untrusted("abcdefghij+/-_0123456789") == "abcdefghij+/-_0123456789"
    for bad in ("short", "x" * 256, "abcdefghij0123456789!", None):
        with pytest.raises(DtlsError, match="a=tls-id"):
            parse_tls_id_untrusted(bad)


# -- the role tables ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offered", "role", "answer_setup"),
    [
        (Setup.ACTPASS, Role.CLIENT, Setup.ACTIVE),  # RFC 5763 §5: answer active
        (Setup.ACTIVE, Role.SERVER, Setup.PASSIVE),
        (Setup.PASSIVE, Role.CLIENT, Setup.ACTIVE),
        (None, Role.SERVER, Setup.PASSIVE),  # RFC 4145 §4: absent means active
    ],
)
def test_answerer_roles(offered: Setup | None, role: Role, answer_setup: Setup) -> None:
    assert answerer_role(offered) is role
    assert role.setup is answer_setup


def test_an_offer_with_holdconn_is_refused() -> None:
    with pytest.raises(DtlsError, match="holdconn"):
        answerer_role(Setup.HOLDCONN)


OFFERER_TABLE = {
    (Setup.ACTPASS, Setup.ACTIVE): Role.SERVER,
    (Setup.ACTPASS, Setup.PASSIVE): Role.CLIENT,
    (Setup.ACTPASS, None): Role.SERVER,
    (Setup.PASSIVE, Setup.ACTIVE): Role.SERVER,
    (Setup.PASSIVE, None): Role.SERVER,
    (Setup.ACTIVE, Setup.PASSIVE): Role.CLIENT,
}


@pytest.mark.parametrize("offered", [Setup.ACTPASS, Setup.ACTIVE, Setup.PASSIVE])
@pytest.mark.parametrize("answered", [*Setup, None])
def test_offerer_roles_for_every_pair(offered: Setup, answered: Setup | None) -> None:
    expected = OFFERER_TABLE.get((offered, answered))
    if expected is None:
        with pytest.raises(DtlsError, match="does not fit"):
            offerer_role(offered, answered)
    else:
        assert offerer_role(offered, answered) is expected


def test_the_two_tables_agree_on_opposite_roles() -> None:
    for offered in (Setup.ACTPASS, Setup.ACTIVE, Setup.PASSIVE):
        ours = answerer_role(offered)
        theirs = offerer_role(offered, ours.setup)
        assert theirs is not ours


# -- one stream's attributes --------------------------------------------------------------------


def test_media_and_session_level_attributes_are_read_together() -> None:
    other = "sha-256 " + ":".join(["AA"] * 32)
    attributes = [
        ("fingerprint", SHA256_TEXT),
        ("setup", "passive"),
        ("tls-id", "m" * 20),
        ("rtcp-mux", None),
        # session level after the media level: the first a=setup and a=tls-id win
        ("fingerprint", other),
        ("setup", "active"),
        ("tls-id", "s" * 20),
    ]
    peer = parse_dtls_attributes_untrusted(attributes)
    assert peer == PeerDtlsParameters(
        (Fingerprint("sha-256", SHA256), parse_fingerprint_untrusted(other)),
        Setup.PASSIVE,
        "m" * 20,
    )
    assert peer.matches(DER)


def test_unusable_fingerprints_are_skipped_but_one_usable_is_required() -> None:
    md5 = "md5 " + hashlib.md5(DER).digest().hex(":")
    peer = parse_dtls_attributes_untrusted([("fingerprint", md5), ("fingerprint", SHA256_TEXT)])
    assert [f.algorithm for f in peer.fingerprints] == ["sha-256"]
    assert peer.setup is None and peer.effective_setup is Setup.ACTIVE
    with pytest.raises(DtlsError, match="no a=fingerprint with a hash function we accept"):
        parse_dtls_attributes_untrusted([("fingerprint", md5)])


def test_no_fingerprint_or_too_many_are_refused() -> None:
    with pytest.raises(DtlsError, match="no a=fingerprint"):
        parse_dtls_attributes_untrusted([("setup", "actpass")])
    with pytest.raises(DtlsError, match=f"more than {MAX_FINGERPRINTS}"):
        parse_dtls_attributes_untrusted([("fingerprint", SHA256_TEXT)] * (MAX_FINGERPRINTS + 1))


# -- RFC 7983 and RFC 5764 §4.2 -----------------------------------------------------------------


def test_dtls_is_first_byte_20_to_63() -> None:
    claimed = [byte for byte in range(256) if is_dtls_first_byte(byte)]
    assert claimed == list(range(20, 64))


@pytest.mark.parametrize(
    ("suite", "key", "salt"),
    [
        ("AES_CM_128_HMAC_SHA1_80", 16, 14),
        ("AES_CM_128_HMAC_SHA1_32", 16, 14),
        ("AEAD_AES_128_GCM", 16, 12),
        ("AEAD_AES_256_GCM", 32, 12),
    ],
)
def test_keying_material_is_split_client_key_server_key_client_salt_server_salt(
    suite: str, key: int, salt: int
) -> None:
    material = b"C" * key + b"S" * key + b"c" * salt + b"s" * salt
    client, server = split_keying_material(material, suite)
    assert client == b"C" * key + b"c" * salt
    assert server == b"S" * key + b"s" * salt
    with pytest.raises(Exception, match="exported octets"):
        split_keying_material(material + b"x", suite)
