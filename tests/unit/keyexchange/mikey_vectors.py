"""The RFC 3830 section 7 message, key and salt of the MIKEY payload tests: moved here from
test_mikey_payloads.py so that no test module imports another."""

from __future__ import annotations

from gateway.plugins.keyexchange.mikey.payloads import (
    DataType,
    Header,
    Kemac,
    KeyData,
    Rand,
    SrtpCs,
    Timestamp,
    encode_key_data,
    encode_message,
)
from gateway.plugins.keyexchange.mikey.policy import policy_for_suite

KEY = bytes(range(0xA0, 0xB0))  # 16 octets
SALT = bytes(range(0xC0, 0xCE))  # 14 octets
NTP = bytes.fromhex("e9b0c4d200000000")
RAND = bytes(range(16))


def section7_message() -> bytes:
    header = Header(DataType.PSK_INIT, 0x01020304, (SrtpCs(0, 0x11223344, 5),))
    return encode_message(
        header,
        [
            Timestamp(0, NTP),
            Rand(RAND),
            policy_for_suite("AES_CM_128_HMAC_SHA1_80"),
            Kemac(0, encode_key_data([KeyData(3, KEY, SALT)]), 0),
        ],
    )
