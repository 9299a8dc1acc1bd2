"""SrtpSession behaviour: the suite table, how libsrtp is reached, round trips, tag lengths,
tampering, replays, the roll-over counter, SRTCP indexes, SSRC changes and limits, closing.

Exact bytes per suite are in test_srtp_vectors.py; here the sessions talk to each other (and to
pylibsrtp's own Session where it names the profile). Every test over ``ALL`` runs the AES-192
suites too, which the bundled libsrtp gets wrong and srtp_python provides; the tests of one
suite's behaviour run once with libsrtp (AES_CM_128) and once with the Python path (AES_192).
The Python module's own tests are in test_srtp_python.py.
"""

from __future__ import annotations

import ctypes
import struct

import pylibsrtp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pylibsrtp._binding import ffi, lib

from gateway.core.interfaces import SrtpKeys
from gateway.core.media import srtp
from gateway.core.media.errors import LocalMediaError
from gateway.core.media.srtp import (
    DEFAULT_REPLAY_WINDOW,
    MAX_PACKET_LENGTH,
    PYTHON_SUITES,
    SUITES,
    SUPPORTED_SUITES,
    UNSUPPORTED_SUITES,
    SrtpSession,
    SrtpStatistics,
    libsrtp_version,
)

ALL = list(SUPPORTED_SUITES)
HMAC_SUITES = [name for name in ALL if "HMAC_SHA1" in name]
GCM_SUITES = [name for name in ALL if name.startswith("AEAD_")]
AES192_SUITES = ["AES_192_CM_HMAC_SHA1_80", "AES_192_CM_HMAC_SHA1_32"]
# One suite through libsrtp, one through srtp_python (while libsrtp 2.7.0 is bundled).
BOTH_PATHS = ["AES_CM_128_HMAC_SHA1_80", "AES_192_CM_HMAC_SHA1_80"]


def key_for(name: str, seed: int) -> bytes:
    return bytes((seed * 53 + i * 7 + 1) & 0xFF for i in range(SUITES[name].key_salt_length))


def pair(name: str, **kwargs: int) -> tuple[SrtpSession, SrtpSession]:
    """The gateway's session for a leg, and the phone at the other end of that leg."""
    ours, theirs = key_for(name, 1), key_for(name, 2)
    gateway = SrtpSession(SrtpKeys(name, local_key=ours, remote_key=theirs), **kwargs)
    phone = SrtpSession(SrtpKeys(name, local_key=theirs, remote_key=ours), **kwargs)
    return gateway, phone


def rtp(sequence: int, *, ssrc: int = 0x1234ABCD, payload: bytes = b"\xd5" * 160) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, sequence & 0xFFFF, 160 * sequence, ssrc) + payload


def receiver_report(ssrc: int = 0x1234ABCD) -> bytes:
    # RFC 3550 §6.4.2: an RR with one report block.
    return struct.pack("!BBHI", 0x81, 201, 7, ssrc) + struct.pack("!IIIIII", 7, 0, 1, 2, 3, 4)


def stats(session: SrtpSession) -> SrtpStatistics:
    return session.statistics()


def flip(packet: bytes, index: int) -> bytes:
    return packet[:index] + bytes([packet[index] ^ 0x01]) + packet[index + 1 :]


# -- the suite table and the libsrtp behind it -----------------------------------------------------


def test_suite_table_sizes_follow_the_rfcs() -> None:
    table = {
        name: (s.master_key_length, s.master_salt_length, s.rtp_tag_length, s.rtcp_tag_length)
        for name, s in SUITES.items()
    }
    assert table == {
        "AES_CM_128_HMAC_SHA1_80": (16, 14, 10, 10),
        "AES_CM_128_HMAC_SHA1_32": (16, 14, 4, 10),
        "AES_192_CM_HMAC_SHA1_80": (24, 14, 10, 10),
        "AES_192_CM_HMAC_SHA1_32": (24, 14, 4, 10),
        "AES_256_CM_HMAC_SHA1_80": (32, 14, 10, 10),
        "AES_256_CM_HMAC_SHA1_32": (32, 14, 4, 10),
        "AEAD_AES_128_GCM": (16, 12, 16, 16),
        "AEAD_AES_256_GCM": (32, 12, 16, 16),
    }
    assert [SUITES[n].key_salt_length for n in SUITES] == [30, 30, 38, 38, 46, 46, 28, 44]


def test_the_pinned_pylibsrtp_bundles_libsrtp_2_7_0_and_aes192_runs_in_python() -> None:
    # What this module was checked against; a new pin must re-check the notes in srtp.py.
    assert pylibsrtp.__version__ == "1.0.0"
    assert libsrtp_version() == "libsrtp2 2.7.0"
    assert set(PYTHON_SUITES) == set(AES192_SUITES)
    assert all("issue 763" in reason for reason in PYTHON_SUITES.values())
    assert dict(UNSUPPORTED_SUITES) == {}
    assert tuple(SUITES) == SUPPORTED_SUITES


@pytest.mark.parametrize("name", ALL)
def test_each_session_says_who_does_the_cryptography(name: str) -> None:
    gateway, _ = pair(name)
    assert gateway.implementation == ("python" if name in PYTHON_SUITES else "libsrtp")


def crypto_policy(setter: str) -> tuple[int, ...]:
    """Fill a crypto policy with one of our setters and read libsrtp 2.7.0's
    srtp_crypto_policy_t: cipher_type, cipher_key_len, auth_type, auth_key_len, auth_tag_len,
    sec_serv (six 32-bit fields, srtp.h)."""
    policy = ffi.new("srtp_policy_t *")
    srtp._POLICY_SETTERS[setter](int(ffi.cast("uintptr_t", ffi.addressof(policy.rtp))))
    return struct.unpack("=6i", ffi.buffer(ffi.addressof(policy.rtp))[:])


def profile_policy(profile: int, *, rtcp: bool) -> tuple[int, ...]:
    policy = ffi.new("srtp_policy_t *")
    set_from_profile = (
        lib.srtp_crypto_policy_set_from_profile_for_rtcp
        if rtcp
        else lib.srtp_crypto_policy_set_from_profile_for_rtp
    )
    assert set_from_profile(ffi.addressof(policy.rtp), profile) == 0
    return struct.unpack("=6i", ffi.buffer(ffi.addressof(policy.rtp))[:])


# srtp_cipher_type_id_t / srtp_auth_type_id_t of libsrtp 2.7.0 (crypto_types.h)
AES_ICM_128, AES_ICM_192, AES_ICM_256, AES_GCM_128, AES_GCM_256 = 1, 4, 5, 6, 7
HMAC_SHA1, NULL_AUTH, CONF_AND_AUTH = 3, 0, 3


@pytest.mark.parametrize(
    ("name", "rtp_policy", "rtcp_policy"),
    [
        ("AES_CM_128_HMAC_SHA1_80", (AES_ICM_128, 30, HMAC_SHA1, 20, 10), None),
        ("AES_CM_128_HMAC_SHA1_32", (AES_ICM_128, 30, HMAC_SHA1, 20, 4), 10),
        ("AES_192_CM_HMAC_SHA1_80", (AES_ICM_192, 38, HMAC_SHA1, 20, 10), None),
        ("AES_192_CM_HMAC_SHA1_32", (AES_ICM_192, 38, HMAC_SHA1, 20, 4), 10),
        ("AES_256_CM_HMAC_SHA1_80", (AES_ICM_256, 46, HMAC_SHA1, 20, 10), None),
        ("AES_256_CM_HMAC_SHA1_32", (AES_ICM_256, 46, HMAC_SHA1, 20, 4), 10),
        ("AEAD_AES_128_GCM", (AES_GCM_128, 28, NULL_AUTH, 0, 16), None),
        ("AEAD_AES_256_GCM", (AES_GCM_256, 44, NULL_AUTH, 0, 16), None),
    ],
)
def test_libsrtp_setters_fill_the_policy_of_each_suite(
    name: str, rtp_policy: tuple[int, ...], rtcp_policy: int | None
) -> None:
    suite = SUITES[name]
    assert crypto_policy(suite.rtp_policy) == (*rtp_policy, CONF_AND_AUTH)
    # RFC 3711 §5.2 / RFC 4568 §6.2.2: SRTCP keeps the 80-bit tag with the _32 suites.
    rtcp_expected = (*rtp_policy[:4], rtcp_policy or rtp_policy[4], CONF_AND_AUTH)
    assert crypto_policy(suite.rtcp_policy) == rtcp_expected


@pytest.mark.parametrize(
    ("name", "profile"),
    [
        ("AES_CM_128_HMAC_SHA1_80", lib.srtp_profile_aes128_cm_sha1_80),
        ("AES_CM_128_HMAC_SHA1_32", lib.srtp_profile_aes128_cm_sha1_32),
        ("AEAD_AES_128_GCM", lib.srtp_profile_aead_aes_128_gcm),
        ("AEAD_AES_256_GCM", lib.srtp_profile_aead_aes_256_gcm),
    ],
)
def test_setters_match_libsrtps_own_profiles(name: str, profile: int) -> None:
    # libsrtp's srtp_crypto_policy_set_from_profile_for_rtcp gives aes128_cm_sha1_32 the 80-bit
    # tag on SRTCP; our table does the same, for every _32 suite.
    assert crypto_policy(SUITES[name].rtp_policy) == profile_policy(profile, rtcp=False)
    assert crypto_policy(SUITES[name].rtcp_policy) == profile_policy(profile, rtcp=True)


def test_the_setters_are_in_the_libsrtp_pylibsrtp_loaded() -> None:
    mappings = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            if line.rstrip().endswith(pylibsrtp._binding.__file__):
                start, end = (int(x, 16) for x in line.split()[0].split("-"))
                mappings.append(range(start, end))
    assert mappings
    for setter in srtp._POLICY_SETTERS.values():
        address = ctypes.cast(setter, ctypes.c_void_p).value
        assert any(address in mapping for mapping in mappings)


def test_libsrtp_error_numbers_match_pylibsrtps_messages() -> None:
    assert pylibsrtp.ERRORS[srtp._ERR_AUTH_FAIL] == "authentication failure"
    assert pylibsrtp.ERRORS[srtp._ERR_REPLAY_FAIL] == "replay check failed (bad index)"
    assert pylibsrtp.ERRORS[srtp._ERR_REPLAY_OLD] == "replay check failed (index too old)"


@pytest.mark.parametrize(
    ("name", "profile"),
    [
        ("AES_CM_128_HMAC_SHA1_80", pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80),
        ("AES_CM_128_HMAC_SHA1_32", pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32),
        ("AEAD_AES_128_GCM", pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM),
        ("AEAD_AES_256_GCM", pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM),
    ],
)
def test_same_bytes_as_pylibsrtps_session(name: str, profile: int) -> None:
    key = key_for(name, 3)
    theirs = pylibsrtp.Session(
        pylibsrtp.Policy(
            key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile
        )
    )
    with SrtpSession(SrtpKeys(name, local_key=key, remote_key=key)) as ours:
        for sequence in (5, 6, 70000):
            assert ours.protect_rtp(rtp(sequence)) == theirs.protect(rtp(sequence))
        assert ours.protect_rtcp(receiver_report()) == theirs.protect_rtcp(receiver_report())


# -- round trips and tag lengths -------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_round_trip_both_ways(name: str) -> None:
    gateway, phone = pair(name)
    suite = SUITES[name]
    for sequence in range(1, 6):
        packet = rtp(sequence)
        srtp_packet = gateway.protect_rtp(packet)
        assert srtp_packet is not None
        assert srtp_packet[:12] == packet[:12]  # the header stays in clear (RFC 3711 §3.1)
        assert srtp_packet[12:172] != packet[12:]
        assert len(srtp_packet) == len(packet) + suite.rtp_tag_length
        assert phone.unprotect_rtp(srtp_packet) == packet
        assert gateway.unprotect_rtp(phone.protect_rtp(rtp(sequence, ssrc=77))) == rtp(
            sequence, ssrc=77
        )
    srtcp_packet = phone.protect_rtcp(receiver_report())
    assert srtcp_packet is not None
    assert len(srtcp_packet) == len(receiver_report()) + 4 + suite.rtcp_tag_length
    assert gateway.unprotect_rtcp(srtcp_packet) == receiver_report()
    assert stats(gateway) == SrtpStatistics(
        protected=5, unprotected=6, auth_failures=0, replays=0, ssrc_limit=0, other_errors=0
    )


@pytest.mark.parametrize("tag", ["80", "32"])
@pytest.mark.parametrize("cipher", ["AES_CM_128", "AES_192_CM", "AES_256_CM"])
def test_32_bit_tags_on_rtp_and_80_bit_tags_on_rtcp(cipher: str, tag: str) -> None:
    name = f"{cipher}_HMAC_SHA1_{tag}"
    key = key_for(name, 4)
    with SrtpSession(SrtpKeys(name, local_key=key, remote_key=key)) as s:
        assert len(s.protect_rtp(rtp(1)) or b"") == 172 + int(tag) // 8
        # SRTCP: E||index (4 octets) and always the 80-bit tag (RFC 3711 §3.4, §5.2).
        assert len(s.protect_rtcp(receiver_report()) or b"") == len(receiver_report()) + 4 + 10


@pytest.mark.parametrize("cipher", ["AES_CM_128", "AES_192_CM", "AES_256_CM"])
def test_the_32_bit_tag_is_the_80_bit_tag_truncated(cipher: str) -> None:
    # RFC 3711 §4.2.1: HMAC-SHA1 truncated to the suite's tag length; same keys, same key stream.
    key = key_for(f"{cipher}_HMAC_SHA1_80", 5)
    long = SrtpSession(SrtpKeys(f"{cipher}_HMAC_SHA1_80", local_key=key, remote_key=key))
    short = SrtpSession(SrtpKeys(f"{cipher}_HMAC_SHA1_32", local_key=key, remote_key=key))
    with long, short:
        long_packet, short_packet = long.protect_rtp(rtp(9)), short.protect_rtp(rtp(9))
        assert long_packet is not None and short_packet is not None
        assert short_packet[:-4] == long_packet[:-10]
        assert short_packet[-4:] == long_packet[-10:-6]
        # SRTCP is the same for both: the same 80-bit tag.
        assert long.protect_rtcp(receiver_report()) == short.protect_rtcp(receiver_report())


@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from(ALL),
    sequence=st.integers(0, 65535),
    ssrc=st.integers(0, 2**32 - 1),
    payload=st.binary(min_size=0, max_size=300),
)
def test_any_rtp_packet_survives_a_round_trip(
    name: str, sequence: int, ssrc: int, payload: bytes
) -> None:
    gateway, phone = pair(name)
    with gateway, phone:
        packet = rtp(sequence, ssrc=ssrc, payload=payload)
        assert phone.unprotect_rtp(gateway.protect_rtp(packet) or b"") == packet


# -- authentication failures -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("where", ["header", "payload", "tag"])
def test_a_flipped_bit_is_dropped_and_counted(name: str, where: str) -> None:
    gateway, phone = pair(name)
    packet = phone.protect_rtp(rtp(100))
    assert packet is not None
    index = {"header": 4, "payload": 50, "tag": len(packet) - 1}[where]  # timestamp octet
    assert gateway.unprotect_rtp(flip(packet, index)) is None
    assert stats(gateway).auth_failures == 1
    # A forgery does not disturb the real packet (the replay window updates only after
    # authentication, RFC 3711 §3.3.2).
    assert gateway.unprotect_rtp(packet) == rtp(100)
    assert (stats(gateway).unprotected, stats(gateway).dropped) == (1, 1)


@pytest.mark.parametrize("name", ALL)
def test_a_tampered_srtcp_packet_is_dropped_and_counted(name: str) -> None:
    gateway, phone = pair(name)
    packet = phone.protect_rtcp(receiver_report())
    assert packet is not None
    assert gateway.unprotect_rtcp(flip(packet, 12)) is None
    assert gateway.unprotect_rtcp(packet[:8] + packet[8:-1] + bytes([packet[-1] ^ 0x80])) is None
    assert stats(gateway).auth_failures == 2
    assert gateway.unprotect_rtcp(packet) == receiver_report()


@pytest.mark.parametrize("name", ALL)
def test_plain_rtp_never_passes_as_srtp(name: str) -> None:
    gateway, _ = pair(name)
    assert gateway.unprotect_rtp(rtp(1)) is None
    assert stats(gateway).auth_failures == 1
    # Plain RTCP ends in E = 0: libsrtp refuses it before checking the tag (an other error) for
    # AES-CM; for GCM the tag check fails.
    assert gateway.unprotect_rtcp(receiver_report()) is None
    assert stats(gateway).dropped == 2
    assert stats(gateway).unprotected == 0


@pytest.mark.parametrize("name", BOTH_PATHS)
def test_a_packet_under_another_key_fails_authentication(name: str) -> None:
    gateway, _ = pair(name)
    stranger = SrtpSession(SrtpKeys(name, local_key=key_for(name, 9), remote_key=key_for(name, 9)))
    assert gateway.unprotect_rtp(stranger.protect_rtp(rtp(1)) or b"") is None
    assert stats(gateway).auth_failures == 1


# -- replays ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_a_replayed_packet_is_dropped_and_counted(name: str) -> None:
    gateway, phone = pair(name)
    first, second = phone.protect_rtp(rtp(10)), phone.protect_rtp(rtp(11))
    assert first is not None and second is not None
    assert gateway.unprotect_rtp(second) == rtp(11)
    assert gateway.unprotect_rtp(first) == rtp(10)  # late but inside the window: fine
    assert gateway.unprotect_rtp(first) is None
    assert gateway.unprotect_rtp(second) is None
    assert stats(gateway).replays == 2
    assert stats(gateway).unprotected == 2


@pytest.mark.parametrize("name", ALL)
def test_a_replayed_srtcp_packet_is_dropped_and_counted(name: str) -> None:
    gateway, phone = pair(name)
    packet = phone.protect_rtcp(receiver_report())
    assert packet is not None
    assert gateway.unprotect_rtcp(packet) == receiver_report()
    assert gateway.unprotect_rtcp(packet) is None
    assert stats(gateway).replays == 1


@pytest.mark.parametrize("name", BOTH_PATHS)
@pytest.mark.parametrize(("window", "accepted"), [(64, False), (DEFAULT_REPLAY_WINDOW, True)])
def test_the_replay_window_is_configurable(name: str, window: int, accepted: bool) -> None:
    gateway, phone = pair(name, replay_window=window)
    assert gateway.replay_window == window
    late = phone.protect_rtp(rtp(1000))
    for sequence in range(1001, 1081):  # the late packet ends 80 behind the newest
        assert gateway.unprotect_rtp(phone.protect_rtp(rtp(sequence)) or b"") is not None
    assert (gateway.unprotect_rtp(late or b"") == rtp(1000)) is accepted
    assert stats(gateway).replays == (0 if accepted else 1)


@pytest.mark.parametrize("name", BOTH_PATHS)
def test_a_duplicate_is_never_protected_twice(name: str) -> None:
    # A duplicate from the other leg would reuse the SRTP index (and key stream): dropped.
    gateway, _ = pair(name)
    assert gateway.protect_rtp(rtp(7)) is not None
    assert gateway.protect_rtp(rtp(7)) is None
    assert gateway.protect_rtp(rtp(7, payload=b"other")) is None
    assert stats(gateway).replays == 2
    assert stats(gateway).protected == 1


# -- the roll-over counter -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_the_roll_over_counter_follows_the_sequence_wrap(name: str) -> None:
    gateway, phone = pair(name)
    sequences = [65533, 65534, 65535, 0, 1, 2]
    packets = [phone.protect_rtp(rtp(s)) for s in sequences]
    # Delivered in order, except 0 overtakes 65535 across the wrap (RFC 3711 Appendix A
    # guesses ROC - 1 for 65535 after 0).
    for position in (0, 1, 3, 2, 4, 5):
        assert gateway.unprotect_rtp(packets[position] or b"") == rtp(sequences[position])
    # The ROC is part of the tag (HMAC) or the IV (GCM): a receiver that never saw the wrap
    # takes ROC 0 for the post-wrap packets and cannot authenticate them.
    late_joiner, _ = pair(name)
    assert late_joiner.unprotect_rtp(packets[4] or b"") is None
    assert stats(late_joiner).auth_failures == 1


@pytest.mark.parametrize("name", ["AEAD_AES_128_GCM", *AES192_SUITES])
def test_the_roll_over_counter_keeps_counting_over_many_wraps(name: str) -> None:
    gateway, phone = pair(name)
    for step in range(3 * 65536 // 4000 + 1):
        sequence = step * 4000
        packet = phone.protect_rtp(rtp(sequence)) or b""
        assert gateway.unprotect_rtp(packet) == rtp(sequence)


# -- SRTCP index -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_the_srtcp_index_counts_per_ssrc_with_the_e_bit(name: str) -> None:
    _, phone = pair(name)
    suite = SUITES[name]

    def index_word(packet: bytes | None) -> int:
        assert packet is not None
        # CM: E||index before the tag; GCM (RFC 7714 §9.1): after the tag, at the very end.
        at = len(packet) - 4 if name in GCM_SUITES else len(packet) - 4 - suite.rtcp_tag_length
        (word,) = struct.unpack_from("!I", packet, at)
        return int(word)

    words = [index_word(phone.protect_rtcp(receiver_report())) for _ in range(3)]
    assert words == [0x80000001, 0x80000002, 0x80000003]  # libsrtp starts at 1
    assert index_word(phone.protect_rtcp(receiver_report(ssrc=5))) == 0x80000001


# -- SSRC changes and limits -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_new_ssrcs_are_accepted_under_the_same_key(name: str) -> None:
    gateway, phone = pair(name)
    # A source switch mid-call (transfer, music on hold): a new SSRC with its own sequence.
    for sequence in range(3):
        for ssrc, offset in ((0x1111, 40000), (0x2222, 7)):
            packet = rtp(sequence + offset, ssrc=ssrc)
            assert gateway.unprotect_rtp(phone.protect_rtp(packet) or b"") == packet
    assert stats(gateway).unprotected == 6


@pytest.mark.parametrize("name", BOTH_PATHS)
def test_ssrcs_beyond_the_limit_are_dropped_and_counted(name: str) -> None:
    gateway, _ = pair(name, max_ssrcs=2)
    _, phone = pair(name)  # the same keys; the phone itself has room for a third SSRC
    for ssrc in (1, 2):
        assert gateway.unprotect_rtp(phone.protect_rtp(rtp(1, ssrc=ssrc)) or b"") is not None
        assert gateway.protect_rtp(rtp(1, ssrc=ssrc)) is not None
    third = phone.protect_rtp(rtp(1, ssrc=3))
    assert third is not None
    assert gateway.unprotect_rtp(third) is None
    assert gateway.protect_rtp(rtp(1, ssrc=3)) is None
    assert gateway.protect_rtcp(receiver_report(ssrc=3)) is None
    assert gateway.protect_rtcp(receiver_report(ssrc=2)) is not None  # a known SSRC
    assert stats(gateway).ssrc_limit == 3


@pytest.mark.parametrize("name", BOTH_PATHS)
def test_forged_packets_do_not_use_up_ssrc_slots(name: str) -> None:
    gateway, phone = pair(name, max_ssrcs=1)
    for ssrc in range(10, 20):
        assert gateway.unprotect_rtp(rtp(1, ssrc=ssrc) + bytes(10)) is None
    assert stats(gateway).auth_failures == 10
    assert gateway.unprotect_rtp(phone.protect_rtp(rtp(1, ssrc=99)) or b"") == rtp(1, ssrc=99)


# -- malformed packets, closing, errors, repr ------------------------------------------------------


@pytest.mark.parametrize("name", BOTH_PATHS)
def test_short_and_oversized_packets_are_other_errors(name: str) -> None:
    gateway, _ = pair(name)
    assert gateway.unprotect_rtp(b"\x80\x00\x00") is None
    assert gateway.protect_rtp(b"\x80\x00\x00\x01") is None
    assert gateway.protect_rtp(rtp(1, payload=bytes(MAX_PACKET_LENGTH))) is None
    assert stats(gateway).other_errors == 3
    assert stats(gateway).dropped == 3


@pytest.mark.parametrize("name", ["AEAD_AES_256_GCM", *AES192_SUITES])
def test_after_close_every_packet_is_dropped(name: str) -> None:
    gateway, phone = pair(name)
    packet = phone.protect_rtp(rtp(1))
    assert not gateway.closed
    gateway.close()
    gateway.close()
    assert gateway.closed
    assert gateway.unprotect_rtp(packet or b"") is None
    assert gateway.protect_rtp(rtp(1)) is None
    assert gateway.protect_rtcp(receiver_report()) is None
    assert gateway.unprotect_rtcp(receiver_report()) is None
    assert stats(gateway).other_errors == 4


@pytest.mark.parametrize("name", ["AES_CM_128_HMAC_SHA1_32", "AES_192_CM_HMAC_SHA1_32"])
def test_a_session_is_a_context_manager(name: str) -> None:
    with pair(name)[0] as session:
        assert not session.closed
    assert session.closed


@pytest.mark.parametrize(
    ("suite", "local", "remote", "kwargs", "message"),
    [
        ("AES_CM_128_HMAC_SHA1_99", 30, 30, {}, "unknown SRTP suite"),
        ("AES_CM_128_HMAC_SHA1_80", 29, 30, {}, "30-octet local key and salt, got 29"),
        ("AEAD_AES_256_GCM", 44, 46, {}, "44-octet remote key and salt, got 46"),
        ("AES_192_CM_HMAC_SHA1_32", 38, 30, {}, "38-octet remote key and salt, got 30"),
        ("AES_192_CM_HMAC_SHA1_80", 38, 38, {"replay_window": 63}, "replay window 63"),
        ("AES_192_CM_HMAC_SHA1_80", 38, 38, {"max_ssrcs": 0}, "max_ssrcs"),
        ("AES_CM_128_HMAC_SHA1_80", 30, 30, {"replay_window": 63}, "replay window 63"),
        ("AES_CM_128_HMAC_SHA1_80", 30, 30, {"replay_window": 32768}, "replay window"),
        ("AES_CM_128_HMAC_SHA1_80", 30, 30, {"max_ssrcs": 0}, "max_ssrcs"),
    ],
)
def test_misuse_is_a_local_error_without_key_material(
    suite: str, local: int, remote: int, kwargs: dict[str, int], message: str
) -> None:
    keys = SrtpKeys(suite, local_key=b"\xa5" * local, remote_key=b"\xa5" * remote)
    with pytest.raises(LocalMediaError, match=message) as error:
        SrtpSession(keys, **kwargs)
    assert "a5" not in str(error.value).lower()
    assert "\\xa5" not in str(error.value)


@pytest.mark.parametrize("name", BOTH_PATHS)
@pytest.mark.parametrize("window", [64, 32767])
def test_replay_window_bounds_are_libsrtps(name: str, window: int) -> None:
    assert pair(name, replay_window=window)[0].replay_window == window


@pytest.mark.parametrize("name", ["AES_256_CM_HMAC_SHA1_80", *AES192_SUITES])
def test_repr_shows_no_key_material(name: str) -> None:
    key = bytes(range(SUITES[name].key_salt_length))
    session = SrtpSession(SrtpKeys(name, local_key=key, remote_key=key))
    text = repr(session)
    assert name in text
    assert key.hex() not in text and repr(key) not in text and "\\x00\\x01" not in text
    assert not any(isinstance(v, bytes) for v in vars_of(session))


def vars_of(session: SrtpSession) -> list[object]:
    return [getattr(session, slot) for slot in type(session).__slots__ if hasattr(session, slot)]
