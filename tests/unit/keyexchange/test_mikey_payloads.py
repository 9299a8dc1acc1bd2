"""MIKEY payloads (RFC 3830 §6): every payload a PSK or DH-HMAC exchange uses round-trips, the
digest's §7 layout byte by byte, every bound and truncation is a MikeyError without key bytes,
and the SP <-> suite mapping (standard and GStreamer styles)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from gateway.core.media.srtp import SUPPORTED_SUITES
from gateway.plugins.keyexchange.mikey.payloads import (
    MAX_SP_PARAMS,
    DataType,
    DhValue,
    ErrorPayload,
    GeneralExtension,
    Header,
    Identity,
    Kemac,
    KeyData,
    LocalMikeyError,
    MikeyError,
    Rand,
    SecurityPolicy,
    SrtpCs,
    Timestamp,
    Verification,
    encode_key_data,
    encode_message,
    parse_key_data_untrusted,
    parse_message_untrusted,
)
from gateway.plugins.keyexchange.mikey.policy import policy_for_suite, suite_of_policy
from tests.unit.keyexchange.mikey_vectors import KEY, NTP, RAND, SALT, section7_message

ALL = list(SUPPORTED_SUITES)


def test_the_psk_null_message_is_the_digests_section_7_layout_byte_by_byte() -> None:
    data = section7_message()
    expected = (
        # HDR: version 1, PSK init, next = T, V=0 PRF 0, CSB ID, 1 CS, SRTP-ID map
        bytes.fromhex("01 00 05 00 01020304 01 00")
        + bytes.fromhex("00 11223344 00000005")  # policy 0, SSRC, ROC
        + bytes.fromhex("0b 00")  # T: next = RAND, NTP-UTC
        + NTP
        + bytes.fromhex("0a 10")  # RAND: next = SP, 16 octets
        + RAND
        # SP: next = KEMAC, policy 0, SRTP, 42 octets of params (13 params, KDR 4 octets)
        + bytes.fromhex("01 00 00 002a")
        + bytes.fromhex("000101 010110 020101 030114 04010e 050100 060400000000")
        + bytes.fromhex("070101 080101 090100 0a0101 0b010a 0c0100")
        # KEMAC: next = last, NULL encryption, 36 octets of key data, NULL MAC
        + bytes.fromhex("00 00 0024")
        + bytes.fromhex("00 30 0010")  # key data: last, TEK+SALT / KV NULL, 16 octets
        + KEY
        + bytes.fromhex("000e")
        + SALT
        + bytes.fromhex("00")
    )
    assert data == expected
    parsed = parse_message_untrusted(data)
    assert parsed.header == Header(DataType.PSK_INIT, 0x01020304, (SrtpCs(0, 0x11223344, 5),))
    assert parsed.raw == data


def test_every_payload_round_trips() -> None:
    payloads = [
        Timestamp(0, NTP),
        Timestamp(2, b"\x00\x00\x00\x07"),
        Rand(RAND),
        Identity(1, b"sip:alice@example.com"),
        Identity(0, b"alice@example.com"),
        SecurityPolicy(3, 0, ((0, b"\x01"), (6, b"\x00\x00\x00\x00"))),
        DhValue(1, bytes(range(96))),
        DhValue(2, bytes(128), kv_type=1, kv_data=(b"\x05",)),
        DhValue(0, bytes(192), kv_type=2, kv_data=(b"\x00" * 6, b"\xff" * 6)),
        Verification(1, bytes(range(20))),
        Verification(0),
        ErrorPayload(3),
        GeneralExtension(0, b"voipgw"),
        Kemac(2, bytes(40), 1, bytes(range(20))),
    ]
    header = Header(DataType.DHHMAC_RESP, 0xFFFFFFFF, (SrtpCs(3), SrtpCs(3, 1, 2)), v=True)
    parsed = parse_message_untrusted(encode_message(header, payloads))
    assert parsed.header == header
    assert list(parsed.payloads) == payloads
    assert parsed.first(Verification) == Verification(1, bytes(range(20)))
    assert parsed.all(Timestamp) == payloads[:2]


def test_key_data_round_trips_with_every_type_and_kv() -> None:
    keys = [
        KeyData(0, bytes(32)),
        KeyData(1, bytes(16), SALT),
        KeyData(2, bytes(30)),
        KeyData(3, KEY, SALT, kv_type=1, kv_data=(b"\x01\x02",)),
        KeyData(2, KEY, kv_type=2, kv_data=(bytes(6), b"\x00\x00\xff\xff\xff\xff")),
    ]
    data = encode_key_data(keys)
    assert list(parse_key_data_untrusted(data)) == keys
    # zero padding after the chain (an AES-KW block) is accepted, anything else is not
    assert list(parse_key_data_untrusted(data + bytes(5))) == keys
    with pytest.raises(MikeyError, match="after its last Key data"):
        parse_key_data_untrusted(data + b"\x01")


def test_ntp_timestamps_convert_both_ways() -> None:
    stamp = Timestamp.ntp_utc(1_800_000_000.5)
    assert stamp.value == (1_800_000_000 + 2_208_988_800).to_bytes(4, "big") + b"\x80\x00\x00\x00"
    assert stamp.unix_time() == 1_800_000_000.5
    assert Timestamp(2, bytes(4)).unix_time() is None


@pytest.mark.parametrize("cut", [1, 5, 9, 12, 19, 22, 40, 60, 100, 120])
def test_every_truncation_is_a_mikey_error(cut: int) -> None:
    data = section7_message()
    with pytest.raises(MikeyError) as caught:
        parse_message_untrusted(data[: len(data) - cut])
    assert KEY.hex() not in caught.value.reason and "truncated" in caught.value.reason


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda d: b"\x02" + d[1:], "version 2"),
        (lambda d: d[:3] + b"\x01" + d[4:], "PRF 1"),
        (lambda d: d[:9] + b"\x07" + d[10:], "CS ID map type 7"),
        (lambda d: d + b"\x00", "after its last payload"),
        (lambda d: d[:2] + b"\x04" + d[3:], "SIGN"),  # next payload after HDR = SIGN
        (lambda d: d[:2] + b"\x02" + d[3:], "PKE"),
        (lambda d: d[:2] + b"\x07" + d[3:], "CERT"),
        (lambda d: d[:2] + b"\x08" + d[3:], "CHASH"),
        (lambda d: d[:2] + b"\x63" + d[3:], "type 99 is unknown"),
        (lambda d: d[:20] + b"\x07" + d[21:], "TS type 7"),
    ],
)
def test_malformed_messages_are_refused_by_name(mutate: object, reason: str) -> None:
    data = mutate(section7_message())  # type: ignore[operator]
    with pytest.raises(MikeyError, match=reason):
        parse_message_untrusted(data)


def test_bounds_are_explicit_and_enforced() -> None:
    data = section7_message()
    with pytest.raises(MikeyError, match="longer than 100"):
        parse_message_untrusted(data, max_length=100)
    many_ts = [Timestamp(0, NTP)] * 5
    with pytest.raises(MikeyError, match="more than 4 payloads"):
        parse_message_untrusted(encode_message(Header(0, 1), many_ts), max_payloads=4)
    cs = tuple(SrtpCs(0) for _ in range(3))
    with pytest.raises(MikeyError, match="more than 2 crypto sessions"):
        parse_message_untrusted(encode_message(Header(0, 1, cs), []), max_cs=2)
    params = tuple((0, b"\x01") for _ in range(MAX_SP_PARAMS + 1))
    sp = encode_message(Header(0, 1), [SecurityPolicy(0, 0, params)])
    with pytest.raises(MikeyError, match=f"more than {MAX_SP_PARAMS} parameters"):
        parse_message_untrusted(sp)
    keys = encode_key_data([KeyData(2, KEY)] * 3)
    with pytest.raises(MikeyError, match="more than 2 keys"):
        parse_key_data_untrusted(keys, max_keys=2)


def test_unknown_dh_group_mac_algorithm_and_key_type_are_refused() -> None:
    dh = bytearray(encode_message(Header(7, 1), [DhValue(1, bytes(96))]))
    dh[11] = 9  # the group: after HDR (10 octets) and the DH's next-payload octet
    with pytest.raises(MikeyError, match="unknown group 9"):
        parse_message_untrusted(bytes(dh))
    v = bytearray(encode_message(Header(1, 1), [Verification(0)]))
    v[-1] = 7
    with pytest.raises(MikeyError, match="unknown MAC algorithm 7"):
        parse_message_untrusted(bytes(v))
    key = bytearray(encode_key_data([KeyData(2, KEY)]))
    key[1] = 0x50
    with pytest.raises(MikeyError, match="type 5 is unknown"):
        parse_key_data_untrusted(bytes(key))
    key[1] = 0x23  # TEK with KV type 3
    with pytest.raises(MikeyError, match="unknown KV type 3"):
        parse_key_data_untrusted(bytes(key))


def test_truncated_key_data_never_shows_the_key() -> None:
    data = encode_key_data([KeyData(3, KEY, SALT)])
    for cut in range(1, len(data)):
        with pytest.raises(MikeyError) as caught:
            parse_key_data_untrusted(data[:-cut])
        assert KEY.hex() not in str(caught.value) and SALT.hex() not in str(caught.value)


def test_reprs_never_show_keys() -> None:
    text = repr(KeyData(3, KEY, SALT)) + repr(Kemac(0, encode_key_data([KeyData(2, KEY)]), 0))
    assert "redacted" in text
    assert KEY.hex() not in text and str(KEY) not in text and str(SALT) not in text


def test_encoding_refuses_values_that_do_not_fit() -> None:
    with pytest.raises(LocalMikeyError):
        encode_message(Header(0, 1 << 32), [])
    with pytest.raises(LocalMikeyError):
        encode_message(Header(0, 1), [Timestamp(0, b"short")])
    with pytest.raises(LocalMikeyError):
        encode_message(Header(0, 1), [Kemac(0, b"", 1, b"")])
    with pytest.raises(LocalMikeyError):
        encode_message(Header(0, 1), [DhValue(0, bytes(10))])
    with pytest.raises(LocalMikeyError):
        encode_key_data([KeyData(3, KEY)])  # TEK+SALT without a salt


# -- SP parameters <-> suites -----------------------------------------------------------------


@pytest.mark.parametrize("suite", ALL)
@pytest.mark.parametrize("style", ["standard", "gstreamer"])
def test_every_suite_maps_to_a_policy_and_back(suite: str, style: str) -> None:
    assert suite_of_policy(policy_for_suite(suite, 0, style), ALL) == (suite, "")


def test_the_standard_80_policy_is_minisips_and_the_defaults() -> None:
    policy = policy_for_suite("AES_CM_128_HMAC_SHA1_80")
    values = {kind: int.from_bytes(value, "big") for kind, value in policy.params}
    assert values == {
        0: 1,
        1: 16,
        2: 1,
        3: 20,
        4: 14,
        5: 0,
        6: 0,
        7: 1,
        8: 1,
        9: 0,
        10: 1,
        11: 10,
        12: 0,
    }
    # No parameter at all: RFC 3830 §6.10.1's defaults are exactly that profile.
    assert suite_of_policy(SecurityPolicy(0, 0, ()), ALL)[0] == "AES_CM_128_HMAC_SHA1_80"


def test_gstreamer_reads_param_3_as_the_tag_length() -> None:
    gst_32 = SecurityPolicy(0, 0, ((0, b"\x01"), (1, b"\x10"), (2, b"\x01"), (3, b"\x04")))
    assert suite_of_policy(gst_32, ALL)[0] == "AES_CM_128_HMAC_SHA1_32"
    policy = policy_for_suite("AES_CM_128_HMAC_SHA1_32", 0, "gstreamer")
    assert dict(policy.params)[3] == b"\x04" and 11 not in dict(policy.params)


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        (((0, b"\x00"),), "encryption NULL"),
        (((0, b"\x02"),), "AES-F8"),
        (((7, b"\x00"),), "SRTP encryption off"),
        (((8, b"\x00"),), "SRTCP encryption off"),
        (((10, b"\x00"),), "SRTP authentication off"),
        (((6, b"\x00\x00\x00\x10"),), "key derivation rate"),
        (((12, b"\x04"),), "SRTP prefix"),
        (((2, b"\x00"),), "other than HMAC-SHA-1"),
        (((11, b"\x08"),), "tag of 8 octets"),
        (((1, b"\x08"),), "key of 8 octets"),
        (((4, b"\x0c"),), "salt of 12 octets"),
        (((3, b"\x10"),), "HMAC-SHA-1 key of 16"),
        (((0, b"\x01"), (0, b"\x01")), "repeated"),
        (((42, b"\x01"),), "type 42 is unknown"),
        (((0, b""),), "length of 0"),
    ],
)
def test_weakening_or_unknown_parameters_are_refused(
    params: tuple[tuple[int, bytes], ...], reason: str
) -> None:
    suite, why = suite_of_policy(SecurityPolicy(0, 0, params), ALL)
    assert suite is None and reason in why


def test_a_policy_outside_the_legs_suites_is_refused() -> None:
    suite, why = suite_of_policy(policy_for_suite("AEAD_AES_256_GCM"), ["AES_CM_128_HMAC_SHA1_80"])
    assert suite is None and "AEAD_AES_256_GCM is not allowed on this leg" in why
    assert suite_of_policy(SecurityPolicy(0, 1, ()), ALL)[1] == "SP protocol type 1 is not SRTP"


MODULES = Path(__file__).parents[3] / "gateway" / "plugins" / "keyexchange" / "mikey"


@pytest.mark.parametrize(
    "name", ["payloads.py", "crypto.py", "policy.py", "engine.py", "replay.py"]
)
def test_the_engine_modules_are_sans_io(name: str) -> None:
    tree = ast.parse((MODULES / name).read_text())
    roots = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert not roots & {"trio", "socket", "time", "random", "os", "secrets", "asyncio"}
