"""ZRTP Multistream mode (RFC 6189 §4.4.3), sans-IO: a leg's second stream (video) keyed from the
ZRTP session key of its first (audio), with no second DH exchange.

Two ZRTP ends (``a``, ``b``), each with its own ZID and one ``leg_state`` shared by its streams,
run audio and video exchanges over a small in-memory link on float time: ``a0``/``b0`` are the
two ends of stream 0, ``a1``/``b1`` of stream 1. The expected keys are built here from the
spec's formulas with hashlib and hmac, never from the engine's own functions."""

from __future__ import annotations

import hashlib
import heapq
import hmac
import itertools
import random
import struct
from typing import Any

import pytest
from cryptography.hazmat.decrepit.ciphers.modes import CFB
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from gateway.core.interfaces import KeysReady, NegotiationFailed, SasReady, SrtpKeys
from gateway.plugins.keyexchange.zrtp import ZrtpKeyExchange
from gateway.plugins.keyexchange.zrtp import packets as p
from gateway.plugins.keyexchange.zrtp.crypto import s0_multistream, zrtp_session_key
from gateway.plugins.keyexchange.zrtp.engine import ZrtpLegSession, ZrtpNegotiation

ZID_A = bytes.fromhex("a1a2a3a4a5a6a7a8a9aaabac")
ZID_B = bytes.fromhex("b1b2b3b4b5b6b7b8b9babbbc")


def sha(*parts: bytes) -> bytes:
    return hashlib.sha256(b"".join(parts)).digest()


def spec_kdf(key: bytes, label: bytes, context: bytes, bits: int) -> bytes:
    """RFC 6189 §4.5.1, written out: HMAC(KI, 0x00000001 || Label || 0x00 || Context || L)."""
    data = struct.pack("!I", 1) + label + b"\x00" + context + struct.pack("!I", bits)
    return hmac.new(key, data, hashlib.sha256).digest()[: bits // 8]


# -- the KDF of Multistream mode -------------------------------------------------------------------


def test_the_zrtp_session_key_matches_bzrtps_vector() -> None:
    # /work/shared/specs/zrtp.md §15.2 (bzrtp's crypto test): "ZRTP Session Key", 256 bits.
    ki = bytes.fromhex("33e66c01ca6fe64fb76ffde31cabc0fbad3d3102676b0c090fc996381e0a8c2f")
    context = bytes.fromhex(
        "f01f2402000000008024adfb94a90690cf9ced13998c51347dc435a74d75254480c211f2d3205ea71b4ba4ee"
        "c78eb7357528e56fcf4f749f"
    )
    assert zrtp_session_key(ki, context).hex() == (
        "c363390bc9ee13aa9e6a00528409ddc90717e01d1ae2dcf9a70ab98886ac6975"
    )


def test_s0_of_a_multistream_stream_follows_section_4_4_3_2() -> None:
    zrtp_sess = bytes(range(32))
    hello_r = bytes.fromhex("505a0003") + b"Hello   " + b"\x11" * 20
    commit = bytes.fromhex("505a0019") + b"Commit  " + b"\x22" * 88
    # s0 = HMAC-SHA-256(ZRTPSess, 1 || "ZRTP MSK" || 0 || ZIDi || ZIDr || total_hash || 256)
    total_hash = hashlib.sha256(hello_r + commit).digest()
    data = b"\x00\x00\x00\x01ZRTP MSK\x00" + ZID_A + ZID_B + total_hash + b"\x00\x00\x01\x00"
    expected = hmac.new(zrtp_sess, data, hashlib.sha256).digest()
    s0 = s0_multistream(zrtp_sess, zid_i=ZID_A, zid_r=ZID_B, hello_responder=hello_r, commit=commit)
    assert s0 == expected
    # The roles' ZIDs and every octet of both messages go into it.
    assert s0 != s0_multistream(
        zrtp_sess, zid_i=ZID_B, zid_r=ZID_A, hello_responder=hello_r, commit=commit
    )
    assert s0 != s0_multistream(
        zrtp_sess, zid_i=ZID_A, zid_r=ZID_B, hello_responder=hello_r, commit=commit[:-1] + b"\0"
    )


# -- two ends with two streams each ----------------------------------------------------------------


class Ends:
    """Both ends of a call leg: each end's ZRTP key exchange and the ``leg_state`` its streams
    share, as the core passes it (``wants_leg_state``)."""

    def __init__(self, *, seed_a: int = 1, seed_b: int = 2, **settings: Any) -> None:
        self.a = ZrtpKeyExchange(
            zid=lambda: ZID_A, random_bytes=random.Random(seed_a).randbytes, **settings
        )
        self.b = ZrtpKeyExchange(
            zid=lambda: ZID_B, random_bytes=random.Random(seed_b).randbytes, **settings
        )
        self.state_a: dict[str, Any] = {}
        self.state_b: dict[str, Any] = {}

    def stream(
        self, *, shared_a: bool = True, shared_b: bool = True
    ) -> tuple[ZrtpNegotiation, ZrtpNegotiation]:
        """One more stream: A offers, B answers, A takes the answer."""
        offerer = self.a.offer(
            suites=(), secure_signalling=False, leg_state=self.state_a if shared_a else None
        )
        answerer = self.b.answer(
            offerer.local_sdp_attributes(),
            suites=(),
            secure_signalling=False,
            leg_state=self.state_b if shared_b else None,
        )
        assert answerer is not None
        offerer.remote_sdp_attributes(answerer.local_sdp_attributes())
        return offerer, answerer

    def session(self, end: str) -> ZrtpLegSession:
        session = (self.state_a if end == "a" else self.state_b)["session"]
        assert isinstance(session, ZrtpLegSession)
        return session


class Link:
    """Streams' ends (``a0``, ``b0``, ``a1``...: end and stream) and the packets in flight
    between each end and its peer on the same stream, on an autojump clock."""

    def __init__(
        self,
        *,
        latency: float = 0.01,
        loss: float = 0.0,
        duplication: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.ends: dict[str, ZrtpNegotiation] = {}
        self.now = 0.0
        self.latency, self.loss, self.duplication = latency, loss, duplication
        self.random = random.Random(seed)
        self.sent: list[tuple[float, str, bytes]] = []
        self.block: set[tuple[str, bytes]] = set()  # (sender, message type) lost on the way
        self._in_flight: list[tuple[float, int, str, bytes]] = []
        self._order = itertools.count()

    def add(self, index: int, a: ZrtpNegotiation, b: ZrtpNegotiation) -> None:
        self.ends[f"a{index}"], self.ends[f"b{index}"] = a, b

    def run(self, *, until: float = 60.0) -> None:
        for _ in range(100_000):
            self._collect()
            due = [t for end in self.ends.values() if (t := end.get_timer()) is not None]
            due += [arrival for arrival, *_ in self._in_flight]
            if not due or min(due) > until:
                self.now = max(self.now, until) if due else self.now
                return
            self.now = max(self.now, min(due))
            for end in self.ends.values():
                timer = end.get_timer()
                if timer is not None and timer <= self.now:
                    end.handle_timer(now=self.now)
            while self._in_flight and self._in_flight[0][0] <= self.now:
                _, _, receiver, packet = heapq.heappop(self._in_flight)
                self.ends[receiver].receive_packet(packet, now=self.now)
        raise AssertionError("the exchange never went quiet")

    def _collect(self) -> None:
        for name, end in self.ends.items():
            for packet in end.packets_to_send(now=self.now):
                self.sent.append((self.now, name, packet))
                if (name, packet[16:24]) in self.block or self.random.random() < self.loss:
                    continue
                copies = 2 if self.random.random() < self.duplication else 1
                peer = ("b" if name[0] == "a" else "a") + name[1:]
                for _ in range(copies):
                    arrival = self.now + self.latency
                    heapq.heappush(self._in_flight, (arrival, next(self._order), peer, packet))

    def messages(self, sender: str, kind: bytes | None = None) -> list[bytes]:
        found = [packet[12:-4] for _, name, packet in self.sent if name == sender]
        return [m for m in found if kind is None or m[4:12] == kind]

    def first_time(self, sender: str, kind: bytes) -> float:
        return min(t for t, name, packet in self.sent if name == sender and packet[16:24] == kind)


def events(negotiation: ZrtpNegotiation) -> list[object]:
    out: list[object] = []
    while (event := negotiation.next_event()) is not None:
        out.append(event)
    return out


def dh_keys(a: ZrtpNegotiation, b: ZrtpNegotiation) -> tuple[SrtpKeys, str]:
    """The first stream's exchange finished: KeysReady and SasReady on both ends, alike."""
    (ready_a, sas_a), (ready_b, sas_b) = events(a), events(b)
    assert isinstance(ready_a, KeysReady) and isinstance(ready_b, KeysReady)
    assert isinstance(sas_a, SasReady) and isinstance(sas_b, SasReady)
    assert ready_a.keys.local_key == ready_b.keys.remote_key
    assert sas_a.sas == sas_b.sas
    return ready_a.keys, sas_a.sas


def multistream_keys(a: ZrtpNegotiation, b: ZrtpNegotiation) -> SrtpKeys:
    """A Multistream stream finished: KeysReady only (no second SAS, §4.5.2), keys alike."""
    (ready_a,), (ready_b,) = events(a), events(b)
    assert isinstance(ready_a, KeysReady) and isinstance(ready_b, KeysReady)
    assert ready_a.keys.suite == ready_b.keys.suite
    assert ready_a.keys.local_key == ready_b.keys.remote_key
    assert ready_a.keys.remote_key == ready_b.keys.local_key
    assert a.state == b.state == "secure"
    assert a.zrtp_key_agreement == b.zrtp_key_agreement == "Mult"
    assert {a.initiator, b.initiator} == {True, False}
    return ready_a.keys


def failure_of(negotiation: ZrtpNegotiation) -> str:
    failed = [e for e in events(negotiation) if isinstance(e, NegotiationFailed)]
    assert len(failed) == 1 and negotiation.state == "failed" and negotiation.keys is None
    return failed[0].reason


def error_codes(link: Link, sender: str) -> list[int]:
    return [p.parse_error_untrusted(m) for m in link.messages(sender, p.ERROR)]


def audio_then_video(ends: Ends, link: Link) -> tuple[ZrtpNegotiation, ...]:
    """Both streams offered in one SDP exchange (an audio+video call) and run to the end."""
    a0, b0 = ends.stream()
    a1, b1 = ends.stream()
    link.add(0, a0, b0)
    link.add(1, a1, b1)
    link.run()
    return a0, b0, a1, b1


# -- a DH stream, then a Multistream one ---------------------------------------------------------


def test_the_second_stream_is_keyed_in_multistream_mode_after_the_first() -> None:
    ends, link = Ends(key_agreements=("DH3k",)), Link()
    a0, b0, a1, b1 = audio_then_video(ends, link)
    audio, sas = dh_keys(a0, b0)
    video = multistream_keys(a1, b1)
    assert a0.zrtp_key_agreement == "DH3k"
    # One DH exchange per leg: no DHPart on the video stream, whose Commit is the 25-word
    # Multistream one with a nonce (§5.4), sent only once the audio stream was secure.
    for end in ("a1", "b1"):
        assert link.messages(end, p.DH_PART1) == link.messages(end, p.DH_PART2) == []
    initiator = "a1" if a1.initiator else "b1"
    (commit,) = set(link.messages(initiator, p.COMMIT))
    assert len(commit) == 25 * 4 and p.parse_commit_untrusted(commit).multistream
    # Not before the audio responder's Conf2ACK: it is secure once it sends it (§4.6).
    audio_responder = "b0" if a0.initiator else "a0"
    assert link.first_time(initiator, p.COMMIT) >= link.first_time(audio_responder, p.CONF2_ACK)
    # Fresh keys for video, the same SAS for the whole call (shown, not rendered again).
    assert {video.local_key, video.remote_key}.isdisjoint({audio.local_key, audio.remote_key})
    assert a1.zrtp_sas == b1.zrtp_sas == sas
    assert a1.security_record()["zrtp_sas"] == sas
    assert a1.security_record()["zrtp_key_agreement"] == "Mult"


def test_multistream_keys_follow_the_spec_from_the_session_key() -> None:
    # Both ends' leg sessions hold one known ZRTPSess (as after a DH stream); the video
    # exchange's keys are then computed here from the messages on the wire (§4.4.3.2, §4.5.3).
    ends, link = Ends(key_agreements=("DH3k",)), Link()
    zrtp_sess = bytes(range(100, 132))
    a1, b1 = ends.stream()
    for end, peer_zid in (("a", ZID_B), ("b", ZID_A)):
        stand_in = ends.stream()[0]  # the leg's "audio" stream, never run
        session = ends.session(end)
        session.dh_stream = stand_in
        algorithms = ("S256", "AES1", "HS80", "DH3k", "B32 ")
        session.confirmed(stand_in, peer_zid, zrtp_sess, algorithms, "abcd")
        session.established(stand_in)
    link.add(1, a1, b1)
    link.run()
    keys = multistream_keys(a1, b1)
    initiator, responder = ("a1", "b1") if a1.initiator else ("b1", "a1")
    zid_i, zid_r = (ZID_A, ZID_B) if initiator == "a1" else (ZID_B, ZID_A)
    (hello_r,) = set(link.messages(responder, p.HELLO))
    (commit,) = set(link.messages(initiator, p.COMMIT))
    context = zid_i + zid_r + sha(hello_r, commit)
    s0 = spec_kdf(zrtp_sess, b"ZRTP MSK", context, 256)
    key_i = spec_kdf(s0, b"Initiator SRTP master key", context, 128)
    salt_i = spec_kdf(s0, b"Initiator SRTP master salt", context, 112)
    key_r = spec_kdf(s0, b"Responder SRTP master key", context, 128)
    salt_r = spec_kdf(s0, b"Responder SRTP master salt", context, 112)
    # The DH stream's cipher and auth tag (§4.4.3.1).
    assert keys.suite == "AES_CM_128_HMAC_SHA1_80"
    ours = keys if initiator == "a1" else SrtpKeys(keys.suite, keys.remote_key, keys.local_key)
    assert ours.local_key == key_i + salt_i and ours.remote_key == key_r + salt_r
    # The responder's Confirm1 is encrypted and MACed with the Multistream keys too (§5.7).
    (confirm1,) = set(link.messages(responder, p.CONFIRM1))
    mac_key_r = spec_kdf(s0, b"Responder HMAC key", context, 256)
    body = confirm1[12:]
    assert hmac.new(mac_key_r, body[24:], hashlib.sha256).digest()[:8] == body[:8]
    assert a1.zrtp_sas == b1.zrtp_sas == "abcd"


def test_a_stream_added_later_by_a_re_invite_is_keyed_in_multistream_mode() -> None:
    ends, link = Ends(), Link()
    a0, b0 = ends.stream()
    link.add(0, a0, b0)
    link.run()
    _, sas = dh_keys(a0, b0)
    a1, b1 = ends.stream()
    link.add(1, a1, b1)
    link.run()
    multistream_keys(a1, b1)
    assert a1.zrtp_sas == sas and a0.zrtp_key_agreement == "X255"
    # The leg's one DH stream is still the audio stream; the cache was not touched by video.
    assert ends.session("a").dh_stream is a0 and ends.session("b").dh_stream is b0


def test_three_streams_use_three_different_nonces() -> None:
    ends, link = Ends(key_agreements=("DH3k",)), Link()
    streams = [ends.stream() for _ in range(3)]
    for index, (a, b) in enumerate(streams):
        link.add(index, a, b)
    link.run()
    dh_keys(*streams[0])
    keys = [multistream_keys(*streams[1]), multistream_keys(*streams[2])]
    assert keys[0].local_key != keys[1].local_key
    nonces = [
        p.parse_commit_untrusted(m).nonce
        for end in ("a1", "b1", "a2", "b2")
        for m in set(link.messages(end, p.COMMIT))
    ]
    assert len(nonces) >= 2 and len(set(nonces)) == len(nonces)
    assert set(nonces) <= ends.session("a").nonces


@pytest.mark.parametrize("seed", range(1, 41))
def test_multistream_completes_over_a_lossy_network(seed: int) -> None:
    ends = Ends(seed_a=seed, seed_b=seed + 100, key_agreements=("DH3k",))
    link = Link(loss=0.2, duplication=0.1, seed=seed)
    a0, b0, a1, b1 = audio_then_video(ends, link)
    # Whichever stream is ready to commit first runs the DH exchange; the other one waits and
    # is keyed in Multistream mode (§4.4.3 says "first", not "audio").
    if a0.zrtp_key_agreement == "Mult":
        a0, b0, a1, b1 = a1, b1, a0, b0
    _, sas = dh_keys(a0, b0)
    multistream_keys(a1, b1)
    assert a1.zrtp_sas == sas
    # §6: retransmissions are the same message (the same nonce); answers repeat too. A stream
    # whose DH Commit lost to one on the other stream (§4.2) later sends a Multistream one.
    for end in ("a0", "b0", "a1", "b1"):
        commits = [p.parse_commit_untrusted(m) for m in set(link.messages(end, p.COMMIT))]
        assert len(commits) == len({c.multistream for c in commits})
        for kind in (p.CONFIRM1, p.CONFIRM2):
            assert len(set(link.messages(end, kind))) <= 1


def test_a_lost_conf2ack_is_repeated_for_the_multistream_initiator() -> None:
    ends, link = Ends(key_agreements=("DH3k",)), Link()
    a0, b0 = ends.stream()
    link.add(0, a0, b0)
    link.run()
    dh_keys(a0, b0)
    a1, b1 = ends.stream()
    link.add(1, a1, b1)
    link.block = {("a1", p.CONF2_ACK), ("b1", p.CONF2_ACK)}
    link.run(until=link.now + 1.0)
    link.block = set()
    link.run()
    multistream_keys(a1, b1)
    initiator = "a1" if a1.initiator else "b1"
    assert len(link.messages(initiator, p.CONFIRM2)) > 1


# -- errors ---------------------------------------------------------------------------------------


def test_a_multistream_commit_crossing_a_dh_commit_ends_both_exchanges() -> None:
    # A's video stream shares A's leg session (secure audio): it commits Mult. B's video stream
    # was made without B's leg state, so B commits DH. §4.2: a software error on both sides.
    ends, link = Ends(key_agreements=("DH3k",)), Link()
    a0, b0 = ends.stream()
    link.add(0, a0, b0)
    link.run()
    dh_keys(a0, b0)
    a1, b1 = ends.stream(shared_b=False)
    link.add(1, a1, b1)
    link.run()
    assert "Multistream mode and one not" in failure_of(a1)
    assert "Multistream mode and one not" in failure_of(b1)
    assert error_codes(link, "a1") == [0x20] and error_codes(link, "b1") == [0x20]
    assert p.parse_commit_untrusted(link.messages("a1", p.COMMIT)[0]).multistream
    assert not p.parse_commit_untrusted(link.messages("b1", p.COMMIT)[0]).multistream


def test_a_multistream_commit_before_the_first_stream_is_secure_is_refused() -> None:
    # B believes its leg has a secure DH stream (a stand-in) and commits Mult on video while
    # A's audio exchange has not even started: A has no ZRTP session key (§4.4.3.1).
    ends, link = Ends(key_agreements=("DH3k",)), Link()
    a0, _ = ends.stream()  # A's audio stream exists, its exchange never runs
    a1, b1 = ends.stream()
    stand_in = ends.stream()[1]
    session_b = ends.session("b")
    algorithms = ("S256", "AES1", "HS80", "DH3k", "B32 ")
    session_b.confirmed(stand_in, ZID_A, bytes(32), algorithms, "abcd")
    session_b.established(stand_in)
    ends.session("a").claim_dh(a0, ZID_B)  # A's audio stream holds the leg's DH slot
    link.add(1, a1, b1)
    link.run()
    assert "before a DH exchange with it completed" in failure_of(a1)
    assert error_codes(link, "a1") == [0x53]
    assert p.parse_commit_untrusted(link.messages("b1", p.COMMIT)[0]).multistream
    assert "0x53" in failure_of(b1)
    assert a1.keys is None and link.messages("a1", p.CONFIRM1) == []


def test_our_multistream_stream_waits_for_the_dh_stream_to_be_secure() -> None:
    # The audio exchange is slowed down (its Confirm2 lost for a while): the video stream holds
    # the peer's Hello and HelloACK long before, and commits only once audio is secure.
    ends, link = Ends(key_agreements=("DH3k",)), Link()
    a0, b0 = ends.stream()
    a1, b1 = ends.stream()
    link.add(0, a0, b0)
    link.add(1, a1, b1)
    link.block = {("a0", p.CONFIRM2), ("b0", p.CONFIRM2)}
    link.run(until=2.0)
    assert link.messages("a1", p.COMMIT) == link.messages("b1", p.COMMIT) == []
    assert a1.state == b1.state == "discovery"
    assert link.messages("a1", p.HELLO_ACK) and link.messages("b1", p.HELLO_ACK)
    link.block = set()
    link.run()
    dh_keys(a0, b0)
    multistream_keys(a1, b1)


def test_a_reused_multistream_nonce_ends_the_exchange() -> None:
    # §4.4.3.1: a nonce seen before on the leg would key two streams alike. The same run twice
    # (seeded), the second time with the initiator's video nonce already known to the
    # responder's leg.
    def run(responder: str, known: set[bytes]) -> tuple[Link, ZrtpNegotiation, ZrtpNegotiation]:
        ends, link = Ends(key_agreements=("DH3k",)), Link()
        a0, b0 = ends.stream()
        link.add(0, a0, b0)
        link.run()
        ends.session(responder).nonces |= known
        a1, b1 = ends.stream()
        link.add(1, a1, b1)
        link.run()
        return link, a1, b1

    link, a1, b1 = run("a", set())
    initiator, responder = ("a", "b") if a1.initiator else ("b", "a")
    commits = link.messages(f"{initiator}1", p.COMMIT)
    nonce = p.parse_commit_untrusted(commits[0]).nonce
    link, a1, b1 = run(responder, {nonce})
    assert link.messages(f"{initiator}1", p.COMMIT)[0] == commits[0]  # the same run
    refused = a1 if responder == "a" else b1
    assert "reuses a nonce" in failure_of(refused)
    assert error_codes(link, f"{responder}1") == [0x80]


def test_the_phone_may_commit_multistream_before_our_conf2ack_reaches_it() -> None:
    # The audio responder is secure once it checked Confirm2 and may commit Mult on video at
    # once; the audio initiator, still waiting for its Conf2ACK, already holds ZRTPSess (it
    # checked Confirm1) and accepts: video is keyed before audio.
    ends, link = Ends(key_agreements=("DH3k",)), Link()
    a0, b0 = ends.stream()
    a1, b1 = ends.stream()
    link.add(0, a0, b0)
    link.add(1, a1, b1)
    link.block = {("a0", p.CONF2_ACK), ("b0", p.CONF2_ACK)}
    link.run(until=1.0)
    audio_initiator = a0 if a0.initiator else b0
    assert audio_initiator.state == "confirm2 sent"
    video_responder = a1 if audio_initiator is a0 else b1
    assert video_responder.initiator is False and video_responder.state == "secure"
    link.block = set()
    link.run()
    dh_keys(a0, b0)
    multistream_keys(a1, b1)


def test_dh_commits_crossing_on_two_streams_leave_one_dh_exchange() -> None:
    # A commits DH on stream 0 while B commits DH on stream 1 (each has only the other's
    # HelloACK on that stream). §4.2: resolved as on one stream, by hvi; the stream whose
    # Commit lost waits for the other exchange and is then keyed in Multistream mode.
    ends, link = Ends(key_agreements=("DH3k",)), Link()
    a0, b0 = ends.stream()
    a1, b1 = ends.stream()
    link.add(0, a0, b0)
    link.add(1, a1, b1)
    link.block = {("a0", p.HELLO_ACK), ("b1", p.HELLO_ACK)}
    link.run(until=0.1)
    assert not p.parse_commit_untrusted(link.messages("a0", p.COMMIT)[0]).multistream
    assert not p.parse_commit_untrusted(link.messages("b1", p.COMMIT)[0]).multistream
    link.block = set()
    link.run()
    dh_streams = [
        i
        for i in (0, 1)
        if any(
            link.messages(f"{end}{i}", kind) for end in "ab" for kind in (p.DH_PART1, p.DH_PART2)
        )
    ]
    assert len(dh_streams) == 1
    dh, mult = ((a0, b0), (a1, b1)) if dh_streams == [0] else ((a1, b1), (a0, b0))
    _, sas = dh_keys(*dh)
    multistream_keys(*mult)
    assert mult[0].zrtp_sas == mult[1].zrtp_sas == sas


def test_a_stream_that_lost_across_streams_before_its_helloack_does_not_spin() -> None:
    # b0 has no HelloACK yet when A's DH Commit on stream 0 loses to B's on stream 1 (§4.2): b0
    # waits for stream 1. Once that is secure b0 cannot commit before its HelloACK comes (held
    # back here, with A's Multistream Commit): no timer may stay due meanwhile (the link would
    # never go quiet).
    ends, link = Ends(key_agreements=("DH3k",)), Link()
    a0, b0 = ends.stream()
    a1, b1 = ends.stream()
    link.add(0, a0, b0)
    link.add(1, a1, b1)
    link.block = {("a0", p.HELLO_ACK), ("b1", p.HELLO_ACK)}
    link.run(until=0.03)
    assert link.messages("a0", p.COMMIT) and link.messages("b1", p.COMMIT)  # crossing
    link.block.add(("a0", p.COMMIT))
    link.run(until=1.5)
    assert b1.state == "secure" and b0.state == "discovery" and a0.state == "committed"
    timer = b0.get_timer()
    assert timer is not None and timer > link.now  # only its handshake deadline
    link.block = set()
    link.run()
    assert {a0.state, b0.state, a1.state, b1.state} == {"secure"}
    assert a0.zrtp_key_agreement == "Mult"


@pytest.mark.parametrize("checker", ["initiator", "responder"])
def test_a_confirm_whose_h0_is_not_the_senders_is_refused(checker: str) -> None:
    # No DHPart in Multistream mode: the peer's H0 is checked by hashing it up to the H3 of the
    # responder's Hello or the H2 of the initiator's Commit (§9). A Confirm made with the right
    # keys (computed here from the spec) but another H0 passes its MAC check and must still
    # fail that one (0x70).
    ends, link = Ends(key_agreements=("DH3k",)), Link()
    zrtp_sess = bytes(range(7, 39))
    a1, b1 = ends.stream()
    for end, peer_zid in (("a", ZID_B), ("b", ZID_A)):
        stand_in = ends.stream()[0]
        ends.session(end).confirmed(
            stand_in, peer_zid, zrtp_sess, ("S256", "AES1", "HS80", "DH3k", "B32 "), "abcd"
        )
        ends.session(end).established(stand_in)
    link.add(1, a1, b1)
    blocked = p.CONFIRM1 if checker == "initiator" else p.CONFIRM2
    link.block = {("a1", blocked), ("b1", blocked)}
    link.run(until=0.5)
    initiator, responder = (a1, b1) if a1.initiator else (b1, a1)
    name = {id(a1): "a1", id(b1): "b1"}
    zid_i, zid_r = (ZID_A, ZID_B) if initiator is a1 else (ZID_B, ZID_A)
    (hello_r,) = set(link.messages(name[id(responder)], p.HELLO))
    (commit,) = set(link.messages(name[id(initiator)], p.COMMIT))
    context = zid_i + zid_r + sha(hello_r, commit)
    s0 = spec_kdf(zrtp_sess, b"ZRTP MSK", context, 256)
    sender = "Responder" if checker == "initiator" else "Initiator"
    zrtp_key = spec_kdf(s0, f"{sender} ZRTP key".encode(), context, 128)
    mac_key = spec_kdf(s0, f"{sender} HMAC key".encode(), context, 256)
    iv = bytes(range(16))
    plaintext = b"\x5a" * 32 + struct.pack("!II", 0, 0xFFFFFFFF)  # H0, flags, expiration
    encryptor = Cipher(algorithms.AES(zrtp_key), CFB(iv)).encryptor()
    encrypted = encryptor.update(plaintext) + encryptor.finalize()
    body = hmac.new(mac_key, encrypted, hashlib.sha256).digest()[:8] + iv + encrypted
    message = b"PZ" + struct.pack("!H", 3 + len(body) // 4) + blocked + body
    victim, image = (
        (initiator, "H3 of its Hello")
        if checker == "initiator"
        else (responder, "H2 of its Commit")
    )
    assert victim.state == ("committed" if checker == "initiator" else "confirm1 sent")
    victim.receive_packet(p.frame(1000, 0x1234, message), now=link.now)
    assert f"does not hash to the {image}" in failure_of(victim)
    (error,) = victim.packets_to_send(now=link.now)
    assert p.parse_error_untrusted(error[12:-4]) == 0x70


# -- another forked phone answers the same offers ------------------------------------------------


def test_another_phones_answer_keys_both_streams_afresh_from_its_own_dh_exchange() -> None:
    """A proxy downstream forked our audio+video offer: phone B's early answer keyed both
    streams (DH, then Multistream), then phone C answered our same offers. The fresh exchanges
    of ``for_another_phone()`` send the Hellos our offers named (C, which answered those
    offers, takes them), share one new leg session, and key audio by a DH exchange with C and
    video in Multistream mode from that exchange's ZRTPSess: keys and SAS not B's."""
    ends = Ends(key_agreements=("DH3k",))
    a0, b0, a1, b1 = audio_then_video(ends, Link())
    audio_b, sas_b = dh_keys(a0, b0)
    video_b = multistream_keys(a1, b1)
    phone_c = ZrtpKeyExchange(zid=lambda: bytes(range(12)), random_bytes=random.Random(3).randbytes)
    state_c: dict[str, Any] = {}
    link = Link()
    fresh = []
    for index, offerer in enumerate((a0, a1)):
        answerer = phone_c.answer(
            offerer.local_sdp_attributes(), suites=(), secure_signalling=False, leg_state=state_c
        )
        assert answerer is not None
        again = offerer.for_another_phone()
        assert again.local_sdp_attributes() == offerer.local_sdp_attributes()
        again.remote_sdp_attributes(answerer.local_sdp_attributes())
        link.add(index, again, answerer)
        fresh.append((again, answerer))
    (c0_ours, c0), (c1_ours, c1) = fresh
    assert c0_ours._session is c1_ours._session is not ends.session("a")
    link.run()
    audio_c, sas_c = dh_keys(c0_ours, c0)
    video_c = multistream_keys(c1_ours, c1)
    assert c0.statistics().hello_mismatches == c1.statistics().hello_mismatches == 0
    assert {audio_c.local_key, video_c.local_key}.isdisjoint({audio_b.local_key, video_b.local_key})
    assert c1_ours.zrtp_sas == sas_c and sas_c != sas_b
