"""SRTP and SRTCP with an MKI (RFC 3711 §3.1, §3.4; RFC 4568 §6.1): one master key per
direction whose packets carry a master key identifier.

Known answer: libsrtp's test packets (/work/shared/specs/sdes-srtp.md §6.5,
``test/srtp_driver.c``) with the 4-octet MKI e1f97a0d put before the tag: the tag is unchanged,
because the MKI is not authenticated. The same vectors are rebuilt here by RFC 3711's layout
from the packets without MKI, for every suite (the AEAD suites put the MKI last, where libsrtp's
``srtp_get_session_keys_for_packet`` looks for it), and checked both ways, on the bytes path and
in the relay's buffer, on libsrtp and on the Python path.
"""

from __future__ import annotations

import pytest

from gateway.core.interfaces import SrtpKeys
from gateway.core.media.errors import LocalMediaError
from gateway.core.media.srtp import (
    PYTHON_SUITES,
    SUITES,
    SUPPORTED_SUITES,
    TRAILER_ROOM,
    MkiTransform,
    SrtpSession,
    SrtpTransform,
)

# spec §6.5: AES_CM_128_HMAC_SHA1_80, SSRC 0xcafebabe, first packet (ROC 0, SRTCP index 1)
KEY = bytes.fromhex("e1f97a0d3e018be0d64fa32c06de41390ec675ad498afeebb6960b3aabe6")
RTP = bytes.fromhex("800f1234decafbadcafebabe") + b"\xab" * 16
RTCP = bytes.fromhex("81c8000bcafebabe") + b"\xab" * 16
MKI = bytes.fromhex("e1f97a0d")
SRTP_WITH_MKI = bytes.fromhex(
    "800f1234decafbadcafebabe4e55dc4ce79978d88ca4d215949d2402"  # header, encrypted payload
    "e1f97a0d"  # MKI
    "b78d6acc99ea179b8dbb"  # tag, as without the MKI
)
SRTCP_WITH_MKI = bytes.fromhex(
    "81c8000bcafebabe7128035be487b9bdbef89041f977a5a8"  # first 8 octets, encrypted rest
    "80000001"  # E flag and SRTCP index 1
    "e1f97a0d"  # MKI
    "993e08cd54d6c1230798"  # tag
)

LIBSRTP_SUITES = [name for name in SUPPORTED_SUITES if name not in PYTHON_SUITES]


def key_for(name: str, seed: int) -> bytes:
    return bytes((seed * 31 + i * 5 + 3) & 0xFF for i in range(SUITES[name].key_salt_length))


def rtp(seq: int = 0x1234, ssrc: int = 0xCAFEBABE) -> bytes:
    return (
        bytes.fromhex("800f")
        + seq.to_bytes(2, "big")
        + bytes(4)
        + ssrc.to_bytes(4, "big")
        + (b"\xab" * 20)
    )


def rtcp(ssrc: int = 0xCAFEBABE) -> bytes:
    return bytes.fromhex("81c8000b") + ssrc.to_bytes(4, "big") + b"\xab" * 16


def in_buffer(transform: SrtpTransform | MkiTransform, packet: bytes) -> bytes | None:
    buffer = bytearray(2048 + TRAILER_ROOM)
    step = transform.in_buffer(buffer)
    assert step is not None
    buffer[: len(packet)] = packet
    size = step(len(packet))
    return None if size < 0 else bytes(buffer[:size])


# -- the known answer ------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["bytes", "in_buffer"])
def test_libsrtp_vector_with_an_mki_both_ways(path: str) -> None:
    run = (lambda t, p: t(p)) if path == "bytes" else in_buffer
    sender = SrtpSession(SrtpKeys("AES_CM_128_HMAC_SHA1_80", KEY, KEY, local_mki=MKI))
    assert run(sender.protect_rtp, RTP) == SRTP_WITH_MKI
    assert run(sender.protect_rtcp, RTCP) == SRTCP_WITH_MKI
    receiver = SrtpSession(SrtpKeys("AES_CM_128_HMAC_SHA1_80", KEY, KEY, remote_mki=MKI))
    assert run(receiver.unprotect_rtp, SRTP_WITH_MKI) == RTP
    assert run(receiver.unprotect_rtcp, SRTCP_WITH_MKI) == RTCP
    assert receiver.statistics().unprotected == 2 and receiver.statistics().dropped == 0


def insert_mki(packet: bytes, mki: bytes, tail: int) -> bytes:
    """RFC 3711 §3.1/§3.4 by hand: ``mki`` ``tail`` octets before the end."""
    return packet[: len(packet) - tail] + mki + packet[len(packet) - tail :]


@pytest.mark.parametrize("suite", list(SUPPORTED_SUITES))
@pytest.mark.parametrize("mki", [b"\x01", bytes(range(1, 129))])
def test_every_suite_puts_the_mki_where_rfc_3711_and_libsrtp_do(suite: str, mki: bytes) -> None:
    """The packets of a session with an MKI are those of one without, the MKI inserted before
    the tag (HMAC-SHA1: 10 or 4 octets in SRTP, 10 in SRTCP) or at the end (AEAD)."""
    key = key_for(suite, 1)
    plain = SrtpSession(SrtpKeys(suite, key, key))
    with_mki = SrtpSession(SrtpKeys(suite, key, key, local_mki=mki, remote_mki=mki))
    aead = suite.startswith("AEAD_")
    rtp_tail = 0 if aead else SUITES[suite].rtp_tag_length
    rtcp_tail = 0 if aead else SUITES[suite].rtcp_tag_length
    expected_rtp = plain.protect_rtp(rtp())
    expected_rtcp = plain.protect_rtcp(rtcp())
    assert expected_rtp is not None and expected_rtcp is not None
    sent_rtp, sent_rtcp = with_mki.protect_rtp(rtp()), with_mki.protect_rtcp(rtcp())
    assert sent_rtp == insert_mki(expected_rtp, mki, rtp_tail)
    assert sent_rtcp == insert_mki(expected_rtcp, mki, rtcp_tail)
    assert with_mki.unprotect_rtp(sent_rtp) == rtp()
    assert with_mki.unprotect_rtcp(sent_rtcp) == rtcp()


@pytest.mark.parametrize("suite", LIBSRTP_SUITES)
def test_in_buffer_matches_the_bytes_path(suite: str) -> None:
    key = key_for(suite, 2)
    mki = b"\x00\x00\x00\x07"

    def session() -> SrtpSession:
        return SrtpSession(SrtpKeys(suite, key, key, local_mki=mki, remote_mki=mki))

    by_bytes, by_buffer = session(), session()
    for seq in (1, 2, 3):
        sent = by_bytes.protect_rtp(rtp(seq))
        assert sent is not None
        assert in_buffer(by_buffer.protect_rtp, rtp(seq)) == sent
        assert in_buffer(by_buffer.unprotect_rtp, sent) == by_bytes.unprotect_rtp(sent) == rtp(seq)
    sent = by_bytes.protect_rtcp(rtcp())
    assert sent is not None and in_buffer(by_buffer.protect_rtcp, rtcp()) == sent
    assert in_buffer(by_buffer.unprotect_rtcp, sent) == by_bytes.unprotect_rtcp(sent) == rtcp()
    tail = 0 if suite.startswith("AEAD_") else SUITES[suite].rtcp_tag_length
    wrong = insert_mki(sent[: len(sent) - tail - 4] + sent[len(sent) - tail :], b"\0\0\0\x08", tail)
    assert in_buffer(by_buffer.unprotect_rtcp, wrong) is None
    assert by_buffer.statistics().mki_mismatches == 1


# -- wrong, missing and one-sided MKIs --------------------------------------------------------


@pytest.mark.parametrize("suite", ["AES_CM_128_HMAC_SHA1_80", "AES_192_CM_HMAC_SHA1_32"])
def test_a_packet_with_another_mki_or_none_is_dropped_and_counted_before_libsrtp(
    suite: str,
) -> None:
    key = key_for(suite, 3)
    peer = SrtpSession(SrtpKeys(suite, key, key, local_mki=b"\x01"))
    other = SrtpSession(SrtpKeys(suite, key, key, local_mki=b"\x02"))
    without = SrtpSession(SrtpKeys(suite, key, key))
    ours = SrtpSession(SrtpKeys(suite, key, key, remote_mki=b"\x01"))
    right, wrong = peer.protect_rtp(rtp(10)), other.protect_rtp(rtp(11))
    missing = without.protect_rtp(rtp(12))
    assert right is not None and wrong is not None and missing is not None
    assert ours.unprotect_rtp(wrong) is None
    assert ours.unprotect_rtp(b"\x01") is None  # too short for MKI and tag
    assert ours.unprotect_rtp(right) == rtp(10)
    stats = ours.statistics()
    assert stats.mki_mismatches == 2 and stats.unprotected == 1
    assert stats.auth_failures == 0  # the MKI is checked first: no HMAC for a wrong one
    # A packet without MKI: its last tag octets sit where the MKI should be; either the MKI
    # check or authentication drops it, never passes it.
    assert ours.unprotect_rtp(missing) is None
    assert ours.statistics().dropped == 3
    assert ours.statistics().dropped == stats.mki_mismatches + 1


def test_each_direction_has_its_own_mki_or_none() -> None:
    """RFC 4568 §6.1: the MKI belongs to the key, and each direction has its own key."""
    suite = "AES_CM_128_HMAC_SHA1_80"
    ours_key, peer_key = key_for(suite, 4), key_for(suite, 5)
    gateway = SrtpSession(SrtpKeys(suite, ours_key, peer_key, remote_mki=b"\x00\x01"))
    peer = SrtpSession(SrtpKeys(suite, peer_key, ours_key, local_mki=b"\x00\x01"))
    to_peer = gateway.protect_rtp(rtp(20))
    assert to_peer is not None and len(to_peer) == len(rtp(20)) + 10  # no MKI of ours
    assert peer.unprotect_rtp(to_peer) == rtp(20)
    from_peer = peer.protect_rtp(rtp(21))
    assert from_peer is not None and len(from_peer) == len(rtp(21)) + 2 + 10
    assert gateway.unprotect_rtp(from_peer) == rtp(21)
    assert isinstance(gateway.protect_rtp, SrtpTransform)
    assert isinstance(gateway.unprotect_rtp, MkiTransform)


def test_streams_without_mki_keep_the_plain_transforms() -> None:
    """No MKI, no wrapper: the per-packet path of such streams is what it was."""
    session = SrtpSession(SrtpKeys("AES_CM_128_HMAC_SHA1_80", KEY, KEY))
    for transform in (
        session.protect_rtp,
        session.protect_rtcp,
        session.unprotect_rtp,
        session.unprotect_rtcp,
    ):
        assert type(transform) is SrtpTransform


@pytest.mark.parametrize("mki", [b"", bytes(129)])
def test_an_mki_outside_1_to_128_octets_is_a_local_error(mki: bytes) -> None:
    with pytest.raises(LocalMediaError, match=r"MKI must be 1\.\.128 octets"):
        SrtpSession(SrtpKeys("AES_CM_128_HMAC_SHA1_80", KEY, KEY, remote_mki=mki))


def test_keys_repr_shows_mki_lengths_never_keys() -> None:
    keys = SrtpKeys("AES_CM_128_HMAC_SHA1_80", KEY, KEY, local_mki=b"\x01", remote_mki=MKI)
    assert repr(keys) == (
        "SrtpKeys(suite='AES_CM_128_HMAC_SHA1_80', keys=<redacted>, mki_lengths=(1, 4))"
    )
    assert repr(SrtpKeys("AES_CM_128_HMAC_SHA1_80", KEY, KEY)) == (
        "SrtpKeys(suite='AES_CM_128_HMAC_SHA1_80', keys=<redacted>)"
    )
