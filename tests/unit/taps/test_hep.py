"""The ``hep`` capture agent: HEP3 encoding against the specification's example packet (HEP3
rev. 37), IPv6, the optional chunks, the Call-ID correlation, the bounded queue, and the
configuration."""

from __future__ import annotations

import struct

import pytest

from gateway.core.config import ConfigError, from_mapping
from gateway.core.plugins import load_plugins
from gateway.plugins.taps import hep as hep_plugin
from gateway.plugins.taps.hep import HepAgent, HepCapture, HepConfig, call_id_of, encode_hep3
from tests.unit.taps.hep_chunks import chunks

# The specification's example (113 octets, its SIP payload shortened to "INVITE sip:bob").
SPEC_EXAMPLE = bytes.fromhex(
    "48455033 0071"
    "0000 0001 0007 02"
    "0000 0002 0007 11"
    "0000 0003 000a d4ca0001"
    "0000 0004 000a 527400d3"
    "0000 0007 0008 2eea"
    "0000 0008 0008 13c4"
    "0000 0009 000a 4e4982cb"
    "0000 000a 000a 0001d4c0"
    "0000 000b 0007 01"
    "0000 000c 000a 000000e4"
    "0000 000f 0014 494e5649544520736970 3a626f62"
)


def test_the_specifications_example_packet_is_reproduced() -> None:
    packet = encode_hep3(
        b"INVITE sip:bob",
        source=("212.202.0.1", 12010),
        destination=("82.116.0.211", 5060),
        transport="udp",
        at=1313440459.12,
        agent=HepAgent(capture_id=228),
    )
    assert len(SPEC_EXAMPLE) == 113
    assert packet == SPEC_EXAMPLE


def test_ipv6_tcp_password_correlation_and_name() -> None:
    packet = encode_hep3(
        b"BYE sip:a SIP/2.0\r\n",
        source=("2001:db8::1", 5061),
        destination=("2001:db8::2", 40000),
        transport="tls",
        at=10.5,
        agent=HepAgent(capture_id=7, name="gw-1", password="s3cret"),
        correlation=b"abc@host",
    )
    found = chunks(packet)
    assert found[0x01] == b"\x0a" and found[0x02] == b"\x06"  # IPv6, TCP (TLS decrypted)
    assert found[0x05] == bytes.fromhex("20010db8000000000000000000000001")
    assert found[0x06][-1] == 2
    assert found[0x07] == struct.pack("!H", 5061) and found[0x08] == struct.pack("!H", 40000)
    assert found[0x09] == struct.pack("!I", 10) and found[0x0A] == struct.pack("!I", 500000)
    assert found[0x0E] == b"s3cret" and found[0x11] == b"abc@host" and found[0x13] == b"gw-1"
    assert found[0x0F] == b"BYE sip:a SIP/2.0\r\n"
    with pytest.raises(ValueError, match="IP versions"):
        encode_hep3(
            b"x",
            source=("2001:db8::1", 1),
            destination=("192.0.2.1", 2),
            transport="udp",
            at=0,
            agent=HepAgent(),
        )


def test_the_call_id_in_long_or_compact_form_is_the_correlation() -> None:
    assert call_id_of(b"INVITE sip:b SIP/2.0\r\nVia: x\r\nCall-ID: a84b4c76e66710\r\n\r\n") == (
        b"a84b4c76e66710"
    )
    assert call_id_of(b"SIP/2.0 200 OK\r\ni:  xyz@h \r\n\r\n") == b"xyz@h"
    assert call_id_of(b"SIP/2.0 200 OK\r\n\r\n") == b""


def test_the_agent_queues_and_drops_when_full_never_blocking() -> None:
    capture = HepCapture(HepConfig(collector="udp:127.0.0.1:9060", queue=10))
    for _ in range(12):
        capture.message(
            b"OPTIONS sip:gw SIP/2.0\r\nCall-ID: c1\r\n\r\n",
            transport="udp",
            source=("127.0.0.1", 5060),
            destination=("127.0.0.2", 5070),
            at=1.0,
        )
    assert capture.dropped == 2
    assert "s3cret" not in repr(HepConfig(collector="udp:127.0.0.1:9060", password="s3cret"))


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ({}, "collector"),
        ({"collector": "tcp:127.0.0.1:9060"}, "collector"),
        ({"collector": "udp:homer.example:9060"}, "collector"),
        ({"collector": "udp:127.0.0.1:9060", "capture_id": -1}, "capture_id"),
        ({"collector": "udp:127.0.0.1:9060", "queue": 1}, "queue"),
        ({"collector": "udp:127.0.0.1:9060", "rtcp": "yes"}, "rtcp"),
    ],
)
def test_config_errors_name_the_key(table: dict[str, object], key: str) -> None:
    config = from_mapping({"plugins": {"enable": ["hep"], "hep": table}})
    with pytest.raises(ConfigError, match=r"plugins.hep") as refused:
        load_plugins(config, extra=[("hep", hep_plugin)], installed={})
    assert key in str(refused.value)


def test_a_collector_in_brackets_and_the_default_port() -> None:
    assert HepConfig(collector="udp:[2001:db8::5]:9061").collector_address == ("2001:db8::5", 9061)
    assert HepConfig(collector="udp:192.0.2.30").collector_address == ("192.0.2.30", 9060)


def test_an_rtcp_report_goes_as_protocol_type_5_with_the_legs_call_id() -> None:
    capture = HepCapture(HepConfig(collector="udp:127.0.0.1:9060", queue=10))
    assert capture.rtcp_enabled
    assert not HepCapture(HepConfig(collector="udp:127.0.0.1:9060", rtcp=False)).rtcp_enabled
    report = b'{"type": 201, "ssrc": 10, "report_count": 0, "report_blocks": []}'
    capture.rtcp_report(
        report,
        source=("192.0.2.7", 4001),
        destination=("192.0.2.1", 30001),
        at=1_700_000_000.25,
        correlation=b"abc@phone",
    )
    found = chunks(capture._receive.receive_nowait())
    assert found[0x0B] == b"\x05"  # RTCP, JSON (HEP3 protocol types; captagent's rtcp module)
    assert found[0x02] == b"\x11"  # UDP
    assert found[0x0F] == report
    assert found[0x11] == b"abc@phone"
    assert found[0x07] == struct.pack("!H", 4001) and found[0x08] == struct.pack("!H", 30001)
    assert capture.dropped == 0


# RFC 4568 §9.1 key-params, with a lifetime and an MKI, and two keys on one line; a MIKEY null
# message (the TGK in clear) on its own line, RFC 4567 §3.1.
KEY_1 = b"WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz"
KEY_2 = b"QUJjZGVmMTIzNDU2Nzg5QUJDREUwMTIzNDU2Nzg5"
MIKEY_DATA = b"AQAFgM0XAQDAN4qfEAABcgAAAAABAAsKvhoP8BLcTNoA"
SDP_WITH_KEYS = (
    b"v=0\r\no=- 1 1 IN IP4 192.0.2.7\r\ns=-\r\nc=IN IP4 192.0.2.7\r\nt=0 0\r\n"
    b"m=audio 4000 RTP/SAVP 0\r\n"
    b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" + KEY_1 + b"|2^20|1:4\r\n"
    b"a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:" + KEY_1 + b";inline:" + KEY_2 + b"|2^31\r\n"
    b"a=key-mgmt:mikey " + MIKEY_DATA + b"\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
)
INVITE_WITH_KEYS = (
    b"INVITE sip:bob@192.0.2.1 SIP/2.0\r\nCall-ID: k@phone\r\n"
    b"Content-Type: application/sdp\r\nContent-Length: %d\r\n\r\n"
    % len(SDP_WITH_KEYS)
    + SDP_WITH_KEYS
)


def copied(message: bytes, **config: bool) -> bytes:
    """What an agent configured with ``config`` sends the collector of ``message`` (chunk 15)."""
    capture = HepCapture(HepConfig(collector="udp:127.0.0.1:9060", queue=10, **config))
    capture.message(
        message,
        transport="udp",
        source=("192.0.2.7", 5060),
        destination=("192.0.2.1", 5060),
        at=1_700_000_000.0,
    )
    return chunks(capture._receive.receive_nowait())[0x0F]


def test_sdes_keys_and_mikey_messages_are_overwritten_with_the_same_length() -> None:
    copy = copied(INVITE_WITH_KEYS)
    assert len(copy) == len(INVITE_WITH_KEYS)
    assert KEY_1 not in copy and KEY_2 not in copy and MIKEY_DATA not in copy
    stars_1, stars_2 = b"*" * len(KEY_1), b"*" * len(KEY_2)
    # What was offered stays readable: suites, lifetimes, MKI.
    assert b"AES_CM_128_HMAC_SHA1_80 inline:" + stars_1 + b"|2^20|1:4\r\n" in copy
    assert b"inline:" + stars_1 + b";inline:" + stars_2 + b"|2^31\r\n" in copy
    assert b"a=key-mgmt:mikey " + b"*" * len(MIKEY_DATA) + b"\r\n" in copy
    expected = (
        INVITE_WITH_KEYS.replace(KEY_1, stars_1)
        .replace(KEY_2, stars_2)
        .replace(MIKEY_DATA, b"*" * len(MIKEY_DATA))
    )
    assert copy == expected


def test_keys_are_kept_only_when_the_operator_asks() -> None:
    assert copied(INVITE_WITH_KEYS, redact_keys=False) == INVITE_WITH_KEYS


def test_a_message_without_keys_is_copied_unchanged() -> None:
    plain = INVITE_WITH_KEYS.replace(b"a=crypto:", b"a=x-note:").replace(b"key-mgmt", b"x-k")
    assert hep_plugin.redact_keys(plain) is plain
    # "inline:" outside an a=crypto line is not a key.
    note = b"Subject: inline:" + KEY_1 + b"\r\n"
    assert hep_plugin.redact_keys(note) == note


REGISTER_WITH_CREDENTIALS = (
    b"REGISTER sip:example.net SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bK-1\r\n"
    b"Call-ID: reg-1@192.0.2.7\r\n"
    b'authorization: Digest username="alice", realm="example.net", nonce="n1",\r\n'
    b' uri="sip:example.net", response="6629fae49393a05397450978507c4ef1",\r\n'
    b' algorithm=MD5, cnonce="0a4f113b", qop=auth, nc=00000001\r\n'
    b'Proxy-Authorization: Digest username="alice", realm="carrier", nonce="n2", '
    b'uri="sip:example.net", RESPONSE = "' + b"ab" * 32 + b'"\r\n'
    b"Content-Length: 0\r\n\r\n"
)


def test_digest_responses_are_overwritten_in_each_copy() -> None:
    copy = copied(REGISTER_WITH_CREDENTIALS)
    # Same length; a folded header and any case of the names are covered.
    expected = REGISTER_WITH_CREDENTIALS.replace(
        b"6629fae49393a05397450978507c4ef1", b"*" * 32
    ).replace(b"ab" * 32, b"*" * 64)
    assert copy == expected
    # Who authenticated, and with what, stays readable.
    assert b'username="alice"' in copy and b'cnonce="0a4f113b"' in copy


def test_a_servers_rspauth_is_overwritten_and_other_parameters_kept() -> None:
    response = (
        b"SIP/2.0 200 OK\r\nCall-ID: reg-1@192.0.2.7\r\n"
        b'Authentication-Info: qop=auth, rspauth="d3b07384d113edec49eaa6238ad5ff00", '
        b'cnonce="0a4f113b", nc=00000001\r\nContent-Length: 0\r\n\r\n'
    )
    assert hep_plugin.redact_credentials(response) == response.replace(
        b"d3b07384d113edec49eaa6238ad5ff00", b"*" * 32
    )


def test_only_the_header_section_and_digest_proofs_are_touched() -> None:
    message = (
        b"MESSAGE sip:bob@example.net SIP/2.0\r\nCall-ID: m-1\r\n"
        b'Subject: response="not a digest"\r\n'
        b'X-Authorization: response="not ours either"\r\n'
        b'Authorization: Digest username="alice", x-response="abc", response="ffff"\r\n'
        b"Content-Type: text/plain\r\nContent-Length: 40\r\n\r\n"
        b'Authorization: Digest response="1234"\r\n'
    )
    redacted = hep_plugin.redact_credentials(message)
    assert redacted == message.replace(b'response="ffff"', b'response="****"')
    unchanged = REGISTER_WITH_CREDENTIALS.replace(b"uthorization", b"-Note")
    assert hep_plugin.redact_credentials(unchanged) is unchanged


def test_credentials_are_kept_only_when_the_operator_asks() -> None:
    copy = copied(REGISTER_WITH_CREDENTIALS, redact_credentials=False)
    assert copy == REGISTER_WITH_CREDENTIALS


INFO_DTMF_RELAY = (
    b"INFO sip:bob@192.0.2.9:5060 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-7\r\n"
    b"Call-ID: dtmf-1@192.0.2.1\r\n"
    b"CSeq: 3 INFO\r\n"
    b"Content-Type: application/dtmf-relay\r\n"
    b"Content-Length: 26\r\n\r\n"
    b"Signal=7\r\nDuration=160\r\n"
)


def test_an_info_digit_is_overwritten_and_its_duration_kept() -> None:
    copy = copied(INFO_DTMF_RELAY)
    # Same length (Content-Length stays right); not "*", which is a key of its own.
    assert copy == INFO_DTMF_RELAY.replace(b"Signal=7", b"Signal=x")
    assert copied(INFO_DTMF_RELAY.replace(b"Signal=7", b"Signal=*")) == copy


def test_every_form_of_an_info_digit_is_overwritten() -> None:
    # Compact "c", any case, a parameter; "signal" in any case, spaces, a two-digit Signal
    # (10 for *, as older gateways send), LF lines; and application/dtmf's bare digit.
    relay = (
        b"INFO sip:bob@192.0.2.9 SIP/2.0\r\ni: d-2\r\n"
        b"c: Application/DTMF-Relay; charset=us-ascii\r\nl: 27\r\n\r\n"
        b"SIGNAL = 10 \nduration=250\n"
    )
    assert hep_plugin.redact_dtmf_digits(relay) == relay.replace(b"= 10 ", b"= xx ")
    bare = (
        b"INFO sip:bob@192.0.2.9 SIP/2.0\r\nCall-ID: d-3\r\n"
        b"Content-Type: application/dtmf\r\nContent-Length: 3\r\n\r\n#\r\n"
    )
    assert hep_plugin.redact_dtmf_digits(bare) == bare.replace(b"\r\n\r\n#", b"\r\n\r\nx")
    # Bare LF line ends (answered 400, copied all the same).
    lf = INFO_DTMF_RELAY.replace(b"\r\n", b"\n")
    assert hep_plugin.redact_dtmf_digits(lf) == lf.replace(b"Signal=7", b"Signal=x")


def test_other_bodies_and_headers_that_name_dtmf_are_left_alone() -> None:
    # A text body that reads like one, a header naming the type, an INVITE with SDP.
    note = (
        b"MESSAGE sip:bob@192.0.2.9 SIP/2.0\r\nCall-ID: d-4\r\n"
        b"Subject: Content-Type: application/dtmf-relay\r\n"
        b"Content-Type: text/plain\r\nContent-Length: 9\r\n\r\nSignal=5\n"
    )
    assert hep_plugin.redact_dtmf_digits(note) is note
    assert hep_plugin.redact_dtmf_digits(INVITE_WITH_KEYS) is INVITE_WITH_KEYS
    assert hep_plugin.redact_dtmf_digits(b"INFO sip:x SIP/2.0\r\n") == b"INFO sip:x SIP/2.0\r\n"


def test_info_digits_are_kept_only_when_the_operator_asks() -> None:
    assert copied(INFO_DTMF_RELAY, redact_dtmf_digits=False) == INFO_DTMF_RELAY
