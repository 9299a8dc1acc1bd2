"""a=crypto parsing and generation (RFC 4568 §9.1/§9.2): real peers' lines, lifetime and MKI
forms, session parameters, malformed lines and their 488 reasons, limits, and no key material in
any reason or repr."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.core.media.srtp import SUITES
from gateway.core.sdp.errors import SdpError
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.plugins.keyexchange.sdes import (
    MAX_CRYPTO_LENGTH,
    MAX_KEY_PARAMS,
    MAX_LIFETIME,
    MAX_SESSION_PARAMS,
    CryptoAttribute,
    KeyParam,
    LocalSdesError,
    Mki,
    SdesError,
    crypto_values,
    parse_crypto_untrusted,
    serialize_crypto,
)
from tests.unit.sdp.sdp_samples import (
    BARESIP_SDES,
    LINPHONE_SRTP,
    RTPENGINE_SRTP_OFFER,
    SDES_KEY_80,
    SDES_KEY_256,
    crlf,
)

# The RFC 4568 example key (spec digest §1).
RFC_KEY = "PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR"


def sample_crypto_values(sample: str) -> list[str]:
    (media,) = parse_sdp_untrusted(crlf(sample)).media
    return crypto_values(media.attributes)


def assert_no_key_material(text: str, *keys: str) -> None:
    """Neither the base64 text of a key nor any 8-character piece of it, nor its octets as hex,
    appears in ``text``."""
    for key in keys:
        pieces = {key[i : i + 8] for i in range(0, max(1, len(key) - 7))}
        assert not [piece for piece in pieces if piece in text], text
        try:
            raw = base64.b64decode(key + "=" * (-len(key) % 4))
        except ValueError:
            continue
        if raw:
            assert raw.hex() not in text.lower()


# -- real lines ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sample", "count"),
    [(BARESIP_SDES, 1), (LINPHONE_SRTP, 4), (RTPENGINE_SRTP_OFFER, 12)],
    ids=["baresip", "linphone", "rtpengine"],
)
def test_real_offers_parse_and_serialize_back_to_the_same_text(sample: str, count: int) -> None:
    values = sample_crypto_values(sample)
    assert len(values) == count
    for value in values:
        line = parse_crypto_untrusted(value)
        assert serialize_crypto(line) == value
        assert parse_crypto_untrusted(serialize_crypto(line)) == line


def test_baresip_line_fields() -> None:
    (value,) = sample_crypto_values(BARESIP_SDES)
    line = parse_crypto_untrusted(value)
    assert line.tag == 1
    assert line.suite == "AES_CM_128_HMAC_SHA1_80"
    assert line.keys == (KeyParam(base64.b64decode(SDES_KEY_80)),)
    assert len(line.keys[0].key_salt) == 30
    assert line.keys[0].lifetime is None and line.keys[0].mki is None
    assert line.kdr is None and line.extensions == () and not line.unencrypted_srtcp


def test_rtpengine_lines_cover_every_key_size() -> None:
    lines = [parse_crypto_untrusted(v) for v in sample_crypto_values(RTPENGINE_SRTP_OFFER)]
    assert [line.tag for line in lines] == list(range(1, 13))
    sizes = {line.suite: len(line.keys[0].key_salt) for line in lines}
    assert sizes["AEAD_AES_256_GCM"] == 44
    assert sizes["AEAD_AES_128_GCM"] == 28
    assert sizes["AES_256_CM_HMAC_SHA1_80"] == 46
    assert sizes["AES_192_CM_HMAC_SHA1_32"] == 38
    assert sizes["AES_CM_128_HMAC_SHA1_32"] == 30
    # Suites this gateway does not know are parsed (their key length unchecked) and kept as sent.
    assert sizes["F8_128_HMAC_SHA1_32"] == 30
    assert "NULL_HMAC_SHA1_80" in sizes


def test_linphone_256_key_has_padding_and_round_trips() -> None:
    line = parse_crypto_untrusted(f"3 AES_256_CM_HMAC_SHA1_80 inline:{SDES_KEY_256}")
    assert len(line.keys[0].key_salt) == 46
    assert serialize_crypto(line).endswith("==")


def test_rfc_example_with_lifetime_and_mki_round_trips_exactly() -> None:
    value = f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|2^20|1:4"
    line = parse_crypto_untrusted(value)
    assert line.keys[0].lifetime == 1 << 20
    assert line.keys[0].mki == Mki(value=1, length=4)
    assert serialize_crypto(line) == value


def test_session_parameters_parse_and_round_trip_in_canonical_order() -> None:
    value = f"1 AES_CM_128_HMAC_SHA1_32 inline:{RFC_KEY} UNENCRYPTED_SRTCP KDR=0"
    line = parse_crypto_untrusted(value)
    assert line.unencrypted_srtcp and not line.unencrypted_srtp and not line.unauthenticated_srtp
    assert line.kdr == 0
    text = serialize_crypto(line)
    assert text == f"1 AES_CM_128_HMAC_SHA1_32 inline:{RFC_KEY} KDR=0 UNENCRYPTED_SRTCP"
    assert parse_crypto_untrusted(text) == line


def test_every_session_parameter() -> None:
    value = (
        f"7 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY} KDR=24 UNENCRYPTED_SRTP UNENCRYPTED_SRTCP "
        f"UNAUTHENTICATED_SRTP FEC_ORDER=SRTP_FEC FEC_KEY=inline:{SDES_KEY_80}|2^10 WSH=128 "
        "X-VENDOR=1"
    )
    line = parse_crypto_untrusted(value)
    assert line.kdr == 24
    assert line.unencrypted_srtp and line.unencrypted_srtcp and line.unauthenticated_srtp
    assert line.fec_order == "SRTP_FEC"
    assert line.fec_keys == (KeyParam(base64.b64decode(SDES_KEY_80), lifetime=1024),)
    assert line.wsh == 128
    assert line.extensions == ("X-VENDOR=1",)
    assert serialize_crypto(line) == value
    assert parse_crypto_untrusted(serialize_crypto(line)) == line


def test_several_keys_with_mki() -> None:
    value = f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|2^20|1:4;inline:{SDES_KEY_80}|2^20|2:4"
    line = parse_crypto_untrusted(value)
    assert [key.mki for key in line.keys] == [Mki(1, 4), Mki(2, 4)]
    assert serialize_crypto(line) == value


def test_tolerated_spellings() -> None:
    # ABNF literals ignore case (RFC 5234 §2.3); fields may be separated by several WSP.
    line = parse_crypto_untrusted(f"\t01  aes_cm_128_hmac_sha1_80\tINLINE:{RFC_KEY}  kdr=0 ")
    assert line.tag == 1
    assert line.suite == "AES_CM_128_HMAC_SHA1_80"
    assert line.kdr == 0
    # base64 without its padding is unambiguous: accepted, written back padded.
    unpadded = SDES_KEY_256.rstrip("=")
    line = parse_crypto_untrusted(f"1 AES_256_CM_HMAC_SHA1_80 inline:{unpadded}")
    assert line.keys[0].key_salt == base64.b64decode(SDES_KEY_256)
    assert serialize_crypto(line).endswith(SDES_KEY_256)


# -- lifetime forms -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "packets", "written"),
    [
        ("2^20", 1 << 20, "2^20"),
        ("1048576", 1 << 20, "2^20"),  # a power of two is written as one
        ("1000", 1000, "1000"),
        ("2^0", 1, "2^0"),
        ("2^48", MAX_LIFETIME, "2^48"),
        (str(MAX_LIFETIME), MAX_LIFETIME, "2^48"),
        ("2^31", 1 << 31, "2^31"),
    ],
)
def test_lifetime_forms(text: str, packets: int, written: str) -> None:
    line = parse_crypto_untrusted(f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|{text}")
    assert line.keys[0].lifetime == packets
    assert serialize_crypto(line).endswith(f"|{written}")


@pytest.mark.parametrize(
    "text",
    ["2^49", str(MAX_LIFETIME + 1), "0", "2^", "2^100", "1234567890123456", "2**20", "-5", ""],
)
def test_bad_lifetimes(text: str) -> None:
    with pytest.raises(SdesError, match="lifetime"):
        parse_crypto_untrusted(f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|{text}")


# -- MKI ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "mki"), [("1:4", Mki(1, 4)), ("255:1", Mki(255, 1)), ("0:128", Mki(0, 128))]
)
def test_mki_forms(text: str, mki: Mki) -> None:
    line = parse_crypto_untrusted(f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|{text}")
    assert line.keys[0].mki == mki and line.keys[0].lifetime is None


@pytest.mark.parametrize(
    ("tail", "match"),
    [
        ("|256:1", "does not fit"),
        ("|1:0", "MKI length"),
        ("|1:129", "MKI length"),
        ("|1:1234", "MKI is malformed"),
        ("|a:4", "MKI is malformed"),
        ("|1:4|2:4", "two MKIs"),
        ("|1:4|2^20", "before the MKI"),
        ("|2^20|2^20", "before the MKI"),
        ("|2^20|1:4|x", "more fields"),
    ],
)
def test_bad_mki_and_field_order(tail: str, match: str) -> None:
    with pytest.raises(SdesError, match=match):
        parse_crypto_untrusted(f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}{tail}")


# -- malformed lines: 488, and a reason without key material ------------------------------------


MALFORMED = [
    # (value, a word the reason must contain)
    (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY[:-1]}!", "not base64"),
    (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY[:-3]}", "not valid base64"),
    (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}=", "not valid base64"),  # needs no padding
    (f"1 AES_CM_128_HMAC_SHA1_80 inline:{SDES_KEY_256[:-2]}B=", "not valid base64"),  # low bits
    (f"1 AES_CM_128_HMAC_SHA1_80 inline:{SDES_KEY_256}", "30-octet key and salt"),
    (f"1 AEAD_AES_128_GCM inline:{RFC_KEY}", "28-octet key and salt"),
    (f"1 AES_256_CM_HMAC_SHA1_80 inline:{RFC_KEY}", "46-octet key and salt"),
    (f"1 AES_192_CM_HMAC_SHA1_80 inline:{RFC_KEY}", "38-octet key and salt"),
    (f"1 AES_CM_128_HMAC_SHA1_80 uri:{RFC_KEY}", "key method"),
    (f"1 AES_CM_128_HMAC_SHA1_80 {RFC_KEY}", "key method"),
    ("1 AES_CM_128_HMAC_SHA1_80 inline:", "empty"),
    (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY * 4}", "longer than"),
    (f"1234567890 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}", "tag"),
    (f"x AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}", "tag"),
    (f"1 AES-CM-128 inline:{RFC_KEY}", "crypto-suite"),
    (f"1 inline:{RFC_KEY}", "needs a tag"),
    (f"1 {RFC_KEY} inline:{RFC_KEY}x", "not valid base64"),  # key where the suite belongs
    ("", "needs a tag"),
    (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY} KDR=25", "KDR"),
    (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY} KDR=x", "KDR"),
    (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY} KDR=0 KDR=1", "repeats"),
    (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY} WSH=63", "WSH"),
    (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY} WSH=1234567", "WSH"),
    (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY} FEC_ORDER=LATER", "FEC_ORDER"),
    (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY} FEC_KEY=inline:{RFC_KEY[:-4]}!", "base64"),
    (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY} UNENCRYPTED_SRTP=1", "takes no value"),
    (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}\x00", "visible ASCII"),
    (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}\r\na=x", "visible ASCII"),
    (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY} ü", "visible ASCII"),
]


@pytest.mark.parametrize(("value", "word"), MALFORMED)
def test_malformed_lines_are_488_without_key_material(value: str, word: str) -> None:
    with pytest.raises(SdesError) as info:
        parse_crypto_untrusted(value)
    error = info.value
    assert isinstance(error, SdpError)
    assert error.sip_status == 488
    assert word in error.reason
    for text in (error.reason, str(error), repr(error)):
        assert_no_key_material(text, RFC_KEY, SDES_KEY_256)


def test_limits() -> None:
    key_param = f"inline:{RFC_KEY}|2^20|1:4"
    too_many_keys = ";".join([key_param] * (MAX_KEY_PARAMS + 1))
    with pytest.raises(SdesError, match=f"more than {MAX_KEY_PARAMS} key parameters"):
        parse_crypto_untrusted(f"1 AES_CM_128_HMAC_SHA1_80 {too_many_keys}")
    enough = parse_crypto_untrusted(
        f"1 AES_CM_128_HMAC_SHA1_80 {';'.join([key_param] * MAX_KEY_PARAMS)}"
    )
    assert len(enough.keys) == MAX_KEY_PARAMS

    params = " ".join(["X"] * (MAX_SESSION_PARAMS + 1))
    with pytest.raises(SdesError, match="session parameters"):
        parse_crypto_untrusted(f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY} {params}")

    long_value = f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY} " + "X" * MAX_CRYPTO_LENGTH
    with pytest.raises(SdesError, match=f"longer than {MAX_CRYPTO_LENGTH}") as info:
        parse_crypto_untrusted(long_value)
    assert_no_key_material(info.value.reason, RFC_KEY)
    # The limits are parameters.
    with pytest.raises(SdesError, match="longer than 40"):
        parse_crypto_untrusted(f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}", max_length=40)
    with pytest.raises(SdesError, match="more than 1 key"):
        parse_crypto_untrusted(
            f"1 AES_CM_128_HMAC_SHA1_80 {key_param};{key_param}", max_key_params=1
        )
    with pytest.raises(SdesError, match="more than 0 session"):
        parse_crypto_untrusted(
            f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY} KDR=0", max_session_params=0
        )


def test_unknown_suite_parses_with_its_key_unchecked() -> None:
    line = parse_crypto_untrusted(f"5 SEED_CTR_128_HMAC_SHA1_80 inline:{SDES_KEY_256}")
    assert line.suite == "SEED_CTR_128_HMAC_SHA1_80"
    assert len(line.keys[0].key_salt) == 46


# -- repr and str never show keys ---------------------------------------------------------------


def test_values_never_show_keys() -> None:
    value = (
        f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|2^20|1:4 FEC_KEY=inline:{SDES_KEY_80} "
        f"inline:{SDES_KEY_256}"  # a stray key lands among the extensions
    )
    line = parse_crypto_untrusted(value)
    assert line.extensions == (f"inline:{SDES_KEY_256}",)
    for text in (repr(line), str(line), repr(line.keys[0]), str(line.fec_keys)):
        assert_no_key_material(text, RFC_KEY, SDES_KEY_80, SDES_KEY_256)
    assert "lifetime=1048576" in repr(line)
    assert "Mki(value=1, length=4)" in repr(line)
    assert "<1 redacted>" in repr(line)


# -- generation ---------------------------------------------------------------------------------


def test_serialize_refuses_lines_it_cannot_write() -> None:
    key = KeyParam(bytes(30))
    for bad in (
        CryptoAttribute(tag=1_000_000_000, suite="AES_CM_128_HMAC_SHA1_80", keys=(key,)),
        CryptoAttribute(tag=-1, suite="AES_CM_128_HMAC_SHA1_80", keys=(key,)),
        CryptoAttribute(tag=1, suite="AES CM", keys=(key,)),
        CryptoAttribute(tag=1, suite="AES_CM_128_HMAC_SHA1_80", keys=()),
    ):
        with pytest.raises(LocalSdesError):
            serialize_crypto(bad)


def test_crypto_values_picks_crypto_lines_in_order() -> None:
    pairs = [("rtpmap", "0 PCMU/8000"), ("crypto", "1 A"), ("CRYPTO", "2 B"), ("crypto", None)]
    assert crypto_values(pairs) == ["1 A", "2 B", ""]


key_params = st.builds(
    KeyParam,
    key_salt=st.sampled_from(sorted({s.key_salt_length for s in SUITES.values()})).flatmap(
        lambda n: st.binary(min_size=n, max_size=n)
    ),
    lifetime=st.none() | st.integers(min_value=1, max_value=MAX_LIFETIME),
    mki=st.none()
    | st.integers(min_value=1, max_value=8).flatmap(
        lambda n: st.builds(Mki, value=st.integers(0, (1 << (8 * n)) - 1), length=st.just(n))
    ),
)


@given(
    tag=st.integers(min_value=0, max_value=999_999_999),
    suite=st.sampled_from(["F8_128_HMAC_SHA1_80", "X_SUITE_1"]),
    keys=st.lists(key_params, min_size=1, max_size=3),
    kdr=st.none() | st.integers(0, 24),
    flags=st.tuples(st.booleans(), st.booleans(), st.booleans()),
    fec_order=st.none() | st.sampled_from(["FEC_SRTP", "SRTP_FEC"]),
    fec_keys=st.lists(key_params, max_size=2),
    wsh=st.none() | st.integers(64, 999_999),
)
def test_serialize_then_parse_is_identity(
    tag: int,
    suite: str,
    keys: list[KeyParam],
    kdr: int | None,
    flags: tuple[bool, bool, bool],
    fec_order: str | None,
    fec_keys: list[KeyParam],
    wsh: int | None,
) -> None:
    line = CryptoAttribute(
        tag=tag,
        suite=suite,  # not in srtp.SUITES, so any key length round-trips
        keys=tuple(keys),
        kdr=kdr,
        unencrypted_srtp=flags[0],
        unencrypted_srtcp=flags[1],
        unauthenticated_srtp=flags[2],
        fec_order=fec_order,
        fec_keys=tuple(fec_keys),
        wsh=wsh,
    )
    assert parse_crypto_untrusted(serialize_crypto(line)) == line


@given(st.text(max_size=200))
def test_arbitrary_text_only_ever_raises_sdes_error(value: str) -> None:
    try:
        line = parse_crypto_untrusted(value)
    except SdesError as exc:
        assert exc.sip_status == 488 and exc.reason
    else:
        assert parse_crypto_untrusted(serialize_crypto(line)) == line


@given(
    st.lists(
        st.sampled_from(["1", " ", "AES_CM_128_HMAC_SHA1_80", "inline:", RFC_KEY, "|", "2^20"])
        | st.sampled_from([":", ";", "1:4", "KDR=0", "WSH=64", "=", "FEC_KEY=", "^", "\t"]),
        max_size=12,
    )
)
def test_crypto_shaped_text_only_ever_raises_sdes_error(pieces: list[str]) -> None:
    try:
        parse_crypto_untrusted("".join(pieces))
    except SdesError as exc:
        assert_no_key_material(exc.reason, RFC_KEY)
