"""A leg's new keys on a re-INVITE or UPDATE (RFC 4568 §7.1.4): each direction of its SRTP
session keeps its context while its master key stays, so the roll-over counter and the packet
index go on (RFC 3711 §3.3.1), also when only the MKI changed; a new key gets a new context.

The stream is keyed as the relay keys it (:class:`StreamSrtp` on a stand-in stream, the
transforms called with bytes); the phone at the other end of leg A is an :class:`SrtpSession`
that never re-keys, with the MKI put into its packets by hand. Every case runs once through
libsrtp and once through the Python path (AES-192), and with an AEAD suite, whose MKI ends the
packet.
"""

from __future__ import annotations

import struct
from types import SimpleNamespace
from typing import Any

import pytest

from gateway.core.interfaces import SrtpKeys
from gateway.core.media.errors import LocalMediaError
from gateway.core.media.keying import StreamKeys, StreamSrtp
from gateway.core.media.srtp import (
    MAX_FREED_LOCAL_KEYS,
    MAX_PARKED_CONTEXTS,
    SUITES,
    SrtpSession,
)

SUITES_TESTED = ["AES_CM_128_HMAC_SHA1_80", "AES_192_CM_HMAC_SHA1_80", "AEAD_AES_128_GCM"]
ACROSS_THE_WRAP = [65533, 65534, 65535, 0, 1]  # the ROC is 1 from sequence 0 on
SSRC = 0x5EC0FFEE


def key(name: str, seed: int) -> bytes:
    return bytes((seed * 37 + i * 11 + 3) & 0xFF for i in range(SUITES[name].key_salt_length))


def rtp(sequence: int) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, sequence, 160 * sequence, SSRC) + b"\xd5" * 160


def with_mki(name: str, packet: bytes, mki: bytes) -> bytes:
    """An SRTP packet with ``mki`` where RFC 3711 §3.1 (libsrtp for AEAD) puts it."""
    tag = SUITES[name].rtp_tag_length
    return packet + mki if name.startswith("AEAD_") else packet[:-tag] + mki + packet[-tag:]


def without_mki(name: str, packet: bytes) -> tuple[bytes, bytes]:
    """A packet's 1-octet MKI, and the packet without it."""
    at = len(packet) - 1 - (0 if name.startswith("AEAD_") else SUITES[name].rtp_tag_length)
    return packet[at : at + 1], packet[:at] + packet[at + 1 :]


def keyed_stream(keys: SrtpKeys) -> tuple[StreamSrtp, Any]:
    """Leg A keyed with ``keys``, leg B plain."""
    stream: Any = SimpleNamespace(a_to_b=SimpleNamespace(), b_to_a=SimpleNamespace())
    srtp = StreamSrtp()
    srtp.apply(stream, StreamKeys(a=keys, b=None, blocked=False))
    return srtp, stream


def apply(srtp: StreamSrtp, stream: Any, keys: SrtpKeys) -> None:
    srtp.apply(stream, StreamKeys(a=keys, b=None, blocked=False))


@pytest.mark.parametrize("name", SUITES_TESTED)
def test_a_peer_mki_change_under_the_same_key_keeps_its_roll_over_counter(name: str) -> None:
    ours, theirs = key(name, 1), key(name, 2)
    srtp, stream = keyed_stream(SrtpKeys(name, ours, theirs, remote_mki=b"\x01"))
    phone = SrtpSession(SrtpKeys(name, local_key=theirs, remote_key=ours))
    for sequence in ACROSS_THE_WRAP:
        packet = with_mki(name, phone.protect_rtp(rtp(sequence)) or b"", b"\x01")
        assert stream.a_to_b.transforms.rtp_in(packet) == rtp(sequence)
    # The re-INVITE: the same key, another MKI. The phone's context goes on (ROC 1).
    apply(srtp, stream, SrtpKeys(name, ours, theirs, remote_mki=b"\x02"))
    for sequence in (2, 3):
        packet = with_mki(name, phone.protect_rtp(rtp(sequence)) or b"", b"\x02")
        assert stream.a_to_b.transforms.rtp_in(packet) == rtp(sequence)
    # The MKI expected is the new one; the replay window went on too.
    late = with_mki(name, phone.protect_rtp(rtp(4)) or b"", b"\x01")
    assert stream.a_to_b.transforms.rtp_in(late) is None
    replayed = with_mki(name, phone.protect_rtp(rtp(5)) or b"", b"\x02")
    assert stream.a_to_b.transforms.rtp_in(replayed) == rtp(5)
    assert stream.a_to_b.transforms.rtp_in(replayed) is None
    totals = srtp.statistics()["a"]
    assert (totals.unprotected, totals.mki_mismatches, totals.replays) == (8, 1, 1)
    assert totals.auth_failures == 0
    srtp.close()


@pytest.mark.parametrize("name", SUITES_TESTED)
def test_our_mki_change_under_the_same_key_keeps_our_index(name: str) -> None:
    ours, theirs = key(name, 1), key(name, 2)
    srtp, stream = keyed_stream(SrtpKeys(name, ours, theirs, local_mki=b"\x01"))
    phone = SrtpSession(SrtpKeys(name, local_key=theirs, remote_key=ours))
    for sequence in ACROSS_THE_WRAP:
        mki, sent = without_mki(name, stream.b_to_a.transforms.rtp_out(rtp(sequence)) or b"")
        assert (mki, phone.unprotect_rtp(sent)) == (b"\x01", rtp(sequence))
    apply(srtp, stream, SrtpKeys(name, ours, theirs, local_mki=b"\x07"))
    for sequence in (2, 3):
        mki, sent = without_mki(name, stream.b_to_a.transforms.rtp_out(rtp(sequence)) or b"")
        assert (mki, phone.unprotect_rtp(sent)) == (b"\x07", rtp(sequence))
    srtp.close()


@pytest.mark.parametrize("name", SUITES_TESTED)
def test_our_key_kept_beside_a_new_peer_key_keeps_its_index(name: str) -> None:
    """Our re-offer repeats our key in force and the peer answers with a new key of its own:
    our outbound context must go on. A new one would restart the ROC at 0, the phone (ROC 1)
    could not authenticate what follows, and packets would be protected again under indices
    already used, the same keystream twice (RFC 3711 §9.1)."""
    ours, theirs, theirs_new = key(name, 1), key(name, 2), key(name, 3)
    srtp, stream = keyed_stream(SrtpKeys(name, ours, theirs))
    phone = SrtpSession(SrtpKeys(name, local_key=theirs, remote_key=ours))
    for sequence in ACROSS_THE_WRAP:
        sent = stream.b_to_a.transforms.rtp_out(rtp(sequence))
        assert phone.unprotect_rtp(sent or b"") == rtp(sequence)
    apply(srtp, stream, SrtpKeys(name, ours, theirs_new))
    for sequence in (2, 3):
        sent = stream.b_to_a.transforms.rtp_out(rtp(sequence))
        assert phone.unprotect_rtp(sent or b"") == rtp(sequence)
    # Index 65536 + 1 (ROC 1, sequence 1) was used before the re-key: never again.
    assert stream.b_to_a.transforms.rtp_out(rtp(1)) is None
    # The peer's new key has a context of its own, which authenticates its packets.
    phone_new = SrtpSession(SrtpKeys(name, local_key=theirs_new, remote_key=ours))
    assert stream.a_to_b.transforms.rtp_in(phone_new.protect_rtp(rtp(9)) or b"") == rtp(9)
    assert stream.a_to_b.transforms.rtp_in(phone.protect_rtp(rtp(10)) or b"") is None
    totals = srtp.statistics()["a"]
    assert (totals.protected, totals.unprotected, totals.replays) == (7, 1, 1)
    assert totals.auth_failures == 1
    srtp.close()


@pytest.mark.parametrize("name", SUITES_TESTED)
def test_a_new_key_of_ours_starts_a_new_context(name: str) -> None:
    """Our new key (the answer to a peer's re-key) is a new crypto context: ROC 0 again,
    which the phone, keyed anew too, expects (RFC 4568 §7.1.4)."""
    ours, ours_new, theirs = key(name, 1), key(name, 4), key(name, 2)
    srtp, stream = keyed_stream(SrtpKeys(name, ours, theirs))
    for sequence in ACROSS_THE_WRAP:
        assert stream.b_to_a.transforms.rtp_out(rtp(sequence)) is not None
    apply(srtp, stream, SrtpKeys(name, ours_new, theirs))
    phone = SrtpSession(SrtpKeys(name, local_key=theirs, remote_key=ours_new))
    sent = stream.b_to_a.transforms.rtp_out(rtp(2))
    assert phone.unprotect_rtp(sent or b"") == rtp(2)
    assert srtp.statistics()["a"].protected == 6
    srtp.close()


def test_a_suite_change_makes_both_contexts_new() -> None:
    old, new = "AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32"
    ours, theirs = key(old, 1), key(old, 2)
    srtp, stream = keyed_stream(SrtpKeys(old, ours, theirs))
    assert stream.b_to_a.transforms.rtp_out(rtp(1)) is not None
    apply(srtp, stream, SrtpKeys(new, key(new, 5), key(new, 6)))
    phone = SrtpSession(SrtpKeys(new, local_key=key(new, 6), remote_key=key(new, 5)))
    sent = stream.b_to_a.transforms.rtp_out(rtp(2)) or b""
    assert len(sent) == len(rtp(2)) + 4  # the 32-bit tag
    assert phone.unprotect_rtp(sent) == rtp(2)
    assert stream.a_to_b.transforms.rtp_in(phone.protect_rtp(rtp(3)) or b"") == rtp(3)
    srtp.close()


def test_keys_that_cannot_be_used_change_nothing() -> None:
    name = "AES_CM_128_HMAC_SHA1_80"
    ours, theirs = key(name, 1), key(name, 2)
    session = SrtpSession(SrtpKeys(name, ours, theirs))
    phone = SrtpSession(SrtpKeys(name, local_key=theirs, remote_key=ours))
    with pytest.raises(LocalMediaError, match="30-octet remote key"):
        session.rekey(SrtpKeys(name, ours, theirs), SrtpKeys(name, ours, b"short"))
    with pytest.raises(LocalMediaError, match="MKI"):
        session.rekey(SrtpKeys(name, ours, theirs), SrtpKeys(name, ours, theirs, b"", None))
    assert session.unprotect_rtp(phone.protect_rtp(rtp(1)) or b"") == rtp(1)
    assert phone.unprotect_rtp(session.protect_rtp(rtp(1)) or b"") == rtp(1)
    session.close()
    phone.close()


@pytest.mark.parametrize("name", SUITES_TESTED)
def test_keys_that_come_back_take_their_contexts_back(name: str) -> None:
    """Two forks send early media (RFC 3261 §12.1.2), each leg of ours with keys of its own:
    the relay follows the latest answer, then the first fork's 200 brings its keys back. Their
    contexts go on where they were: new ones would restart our index at ROC 0 under a key
    already used (RFC 3711 §9.1), and the phone (ROC 1) would authenticate nothing of ours,
    nor we its packets."""
    ours, theirs = key(name, 1), key(name, 2)
    srtp, stream = keyed_stream(SrtpKeys(name, ours, theirs))
    phone = SrtpSession(SrtpKeys(name, local_key=theirs, remote_key=ours))
    for sequence in ACROSS_THE_WRAP:
        sent = stream.b_to_a.transforms.rtp_out(rtp(sequence))
        assert phone.unprotect_rtp(sent or b"") == rtp(sequence)
        received = stream.a_to_b.transforms.rtp_in(phone.protect_rtp(rtp(sequence)) or b"")
        assert received == rtp(sequence)
    apply(srtp, stream, SrtpKeys(name, key(name, 3), key(name, 4)))  # the other fork's 183
    assert stream.b_to_a.transforms.rtp_out(rtp(2)) is not None
    apply(srtp, stream, SrtpKeys(name, ours, theirs))  # the first fork's 200
    for sequence in (3, 4):
        sent = stream.b_to_a.transforms.rtp_out(rtp(sequence))
        assert phone.unprotect_rtp(sent or b"") == rtp(sequence)
        received = stream.a_to_b.transforms.rtp_in(phone.protect_rtp(rtp(sequence)) or b"")
        assert received == rtp(sequence)
    assert stream.b_to_a.transforms.rtp_out(rtp(1)) is None  # (ROC 1, 1) went out already
    totals = srtp.statistics()["a"]
    assert (totals.protected, totals.unprotected, totals.replays) == (8, 7, 1)
    srtp.close()
    phone.close()


def test_replaced_contexts_kept_are_bounded_and_counted() -> None:
    name = "AES_CM_128_HMAC_SHA1_80"
    srtp, stream = keyed_stream(SrtpKeys(name, key(name, 1), key(name, 2)))
    for seed in range(3, 3 + 2 * (MAX_PARKED_CONTEXTS + 2), 2):
        assert stream.b_to_a.transforms.rtp_out(rtp(seed)) is not None
        apply(srtp, stream, SrtpKeys(name, key(name, seed), key(name, seed + 1)))
    (session,) = [entry[1] for entry in srtp._sessions.values()]
    assert len(session._parked) == MAX_PARKED_CONTEXTS
    assert srtp.statistics()["a"].protected == MAX_PARKED_CONTEXTS + 2
    assert repr(key(name, 1)) not in repr(session)
    srtp.close()


def test_a_key_of_ours_whose_context_was_freed_never_protects_again() -> None:
    """Both keys change at every re-key (a peer re-keying each re-INVITE, forks answering in
    turn with keys of their own): the parked contexts reach their bound and ours are freed
    last. Should our first key ever come back after its context was freed, a new context
    would protect the same (key, SSRC, index) again, the same keystream twice (RFC 3711
    §9.1): the re-key is refused and the stream blocked. Before session 42 it was rebuilt at
    ROC 0 and the packets it had sent came out again, byte for byte."""
    name = "AES_CM_128_HMAC_SHA1_80"
    first = SrtpKeys(name, key(name, 1), key(name, 2))
    srtp, stream = keyed_stream(first)
    sent = [stream.b_to_a.transforms.rtp_out(rtp(sequence)) for sequence in ACROSS_THE_WRAP]
    assert all(sent)
    seeds = range(3, 3 + 2 * (MAX_PARKED_CONTEXTS + 1), 2)
    for seed in seeds:
        apply(srtp, stream, SrtpKeys(name, key(name, seed), key(name, seed + 1)))
    (session,) = [entry[1] for entry in srtp._sessions.values()]
    assert len(session._parked) == MAX_PARKED_CONTEXTS
    # The peer's contexts went first: the ones parked now are ours.
    assert [inbound for inbound, _, _ in session._parked] == [False] * MAX_PARKED_CONTEXTS
    assert (False, name, first.local_key) not in session._parked
    with pytest.raises(LocalMediaError, match="packet indices again"):
        apply(srtp, stream, first)
    assert stream.a_to_b.blocked and stream.b_to_a.blocked
    # A key of ours still parked comes back to its context: its index goes on.
    parked = SrtpKeys(name, key(name, seeds[-2]), key(name, 99))
    apply(srtp, stream, parked)
    assert not stream.b_to_a.blocked
    assert stream.b_to_a.transforms.rtp_out(rtp(7)) is not None
    assert repr(first.local_key) not in repr(session)
    srtp.close()


def test_the_keys_of_ours_remembered_as_freed_are_bounded() -> None:
    """A call re-keyed without end (both keys new each time) remembers at most
    MAX_FREED_LOCAL_KEYS freed keys of ours, the latest ones: the memory of a call stays
    bounded, and the key freed last is still refused."""
    name = "AES_CM_128_HMAC_SHA1_80"
    rekeys = MAX_PARKED_CONTEXTS + MAX_FREED_LOCAL_KEYS + 8
    ours = [key(name, 2 * n) for n in range(rekeys + 1)]
    srtp, stream = keyed_stream(SrtpKeys(name, ours[0], key(name, 1)))
    for n in range(1, rekeys + 1):
        apply(srtp, stream, SrtpKeys(name, ours[n], key(name, 2 * n + 1)))
    (session,) = [entry[1] for entry in srtp._sessions.values()]
    assert len(session._freed_local) == MAX_FREED_LOCAL_KEYS
    freed_last = ours[rekeys - MAX_PARKED_CONTEXTS - 1]
    with pytest.raises(LocalMediaError, match="packet indices again"):
        apply(srtp, stream, SrtpKeys(name, freed_last, key(name, 255)))
    srtp.close()


@pytest.mark.parametrize("name", SUITES_TESTED)
def test_a_phone_restarting_its_stream_under_its_kept_key_needs_a_new_ssrc(name: str) -> None:
    """The phone keeps its key through a re-INVITE whose answer gave it a new key of ours. Its
    context goes on (RFC 4568 §7.1.4): packets that start its sequence numbers again under the
    same SSRC are replays, whose keystream it already used (RFC 3711 §3.3.2, §9.1), and are
    dropped, as they always were when both keys stayed; a restart with a new SSRC, what libsrtp's
    maintainers advise and most phones do, gets state of its own and is taken."""
    ours, theirs = key(name, 1), key(name, 2)
    srtp, stream = keyed_stream(SrtpKeys(name, ours, theirs))
    phone = SrtpSession(SrtpKeys(name, local_key=theirs, remote_key=ours))
    for sequence in (1000, 1001, 1002):
        assert stream.a_to_b.transforms.rtp_in(phone.protect_rtp(rtp(sequence)) or b"")
    apply(srtp, stream, SrtpKeys(name, key(name, 5), theirs))
    restarted = SrtpSession(SrtpKeys(name, local_key=theirs, remote_key=key(name, 5)))
    assert stream.a_to_b.transforms.rtp_in(restarted.protect_rtp(rtp(1000)) or b"") is None
    new_ssrc = rtp(1000)[:8] + b"\x00\x00\x0b\x0b" + rtp(1000)[12:]
    assert stream.a_to_b.transforms.rtp_in(restarted.protect_rtp(new_ssrc) or b"") == new_ssrc
    assert srtp.statistics()["a"].replays == 1
    srtp.close()
    phone.close()
    restarted.close()


def go_plain(srtp: StreamSrtp, stream: Any) -> None:
    """A re-INVITE takes leg A to plain RTP/AVP (both legs plain)."""
    srtp.apply(stream, StreamKeys(a=None, b=None, blocked=False))
    assert stream.a_to_b.transforms.rtp_in is None and stream.b_to_a.transforms.rtp_out is None


@pytest.mark.parametrize("name", SUITES_TESTED)
def test_keys_that_come_back_after_a_plain_stretch_take_their_contexts_back(name: str) -> None:
    """A re-INVITE to RTP/AVP, then another back to RTP/SAVP with the same a=crypto keys: the
    contexts go on where they were (ROC 1 here). New ones, as before session 41, restarted
    our index at ROC 0 under a key already used (the same keystream twice, RFC 3711 §9.1),
    and the phone, whose contexts went on, authenticated nothing of ours past the wrap, nor
    we its packets."""
    ours, theirs = key(name, 1), key(name, 2)
    srtp, stream = keyed_stream(SrtpKeys(name, ours, theirs))
    phone = SrtpSession(SrtpKeys(name, local_key=theirs, remote_key=ours))
    for sequence in ACROSS_THE_WRAP:
        sent = stream.b_to_a.transforms.rtp_out(rtp(sequence))
        assert phone.unprotect_rtp(sent or b"") == rtp(sequence)
        received = stream.a_to_b.transforms.rtp_in(phone.protect_rtp(rtp(sequence)) or b"")
        assert received == rtp(sequence)
    go_plain(srtp, stream)
    apply(srtp, stream, SrtpKeys(name, ours, theirs))  # back, the same keys both ways
    for sequence in (2, 3):
        sent = stream.b_to_a.transforms.rtp_out(rtp(sequence))
        assert phone.unprotect_rtp(sent or b"") == rtp(sequence)
        received = stream.a_to_b.transforms.rtp_in(phone.protect_rtp(rtp(sequence)) or b"")
        assert received == rtp(sequence)
    assert stream.b_to_a.transforms.rtp_out(rtp(1)) is None  # (ROC 1, 1) went out already
    totals = srtp.statistics()["a"]
    assert (totals.protected, totals.unprotected) == (7, 7)  # counters never went back
    srtp.close()
    phone.close()


@pytest.mark.parametrize("name", SUITES_TESTED)
def test_the_peers_key_brought_back_beside_a_new_one_of_ours_keeps_the_peers_context(
    name: str,
) -> None:
    """The SDES case: our re-offer back to RTP/SAVP carries a new key of ours (the stream's
    negotiation ended with the plain stretch), the phone's answer its old key. The phone's
    context goes on (its ROC 1 packets authenticate); ours is new, at ROC 0 for the phone's
    new context of our new key."""
    ours, theirs, new_ours = key(name, 1), key(name, 2), key(name, 3)
    srtp, stream = keyed_stream(SrtpKeys(name, ours, theirs))
    phone = SrtpSession(SrtpKeys(name, local_key=theirs, remote_key=ours))
    for sequence in ACROSS_THE_WRAP:
        assert stream.a_to_b.transforms.rtp_in(phone.protect_rtp(rtp(sequence)) or b"")
        assert stream.b_to_a.transforms.rtp_out(rtp(sequence))
    go_plain(srtp, stream)
    apply(srtp, stream, SrtpKeys(name, new_ours, theirs))
    phone.close()
    phone = SrtpSession(SrtpKeys(name, local_key=theirs, remote_key=new_ours))
    # The phone's sender goes on (ROC 1); our new key is new to both ends (ROC 0 from here).
    sender = SrtpSession(SrtpKeys(name, local_key=theirs, remote_key=ours))
    for sequence in ACROSS_THE_WRAP:
        sender.protect_rtp(rtp(sequence))
    for sequence in (2, 3):
        received = stream.a_to_b.transforms.rtp_in(sender.protect_rtp(rtp(sequence)) or b"")
        assert received == rtp(sequence)
        sent = stream.b_to_a.transforms.rtp_out(rtp(sequence))
        assert phone.unprotect_rtp(sent or b"") == rtp(sequence)
    srtp.close()
    phone.close()
    sender.close()


def test_a_plain_stretch_frees_nothing_before_the_stream_closes() -> None:
    name = "AES_CM_128_HMAC_SHA1_80"
    srtp, stream = keyed_stream(SrtpKeys(name, key(name, 1), key(name, 2)))
    assert stream.b_to_a.transforms.rtp_out(rtp(1)) is not None
    go_plain(srtp, stream)
    assert srtp.statistics()["a"].protected == 1  # the set-aside session still counts
    (session,) = [entry[1] for entry in srtp._plain.values()]
    assert not session.closed
    srtp.close()
    assert session.closed and not srtp._plain
