"""The ZRTP engine, sans-IO: two negotiations (the gateway's end and a stand-in phone) run the
RFC 6189 exchange in memory on float time.

A small link moves packets between them on an autojump clock: time jumps to the next timer or
the next arrival, every packet takes ``latency`` and a seeded share of them is lost, duplicated
or altered on the way, so each test decides what the network does. Random sources are seeded;
with the finite-field key agreements a whole exchange is the same on every run."""

from __future__ import annotations

import base64
import hashlib
import heapq
import hmac
import itertools
import random
import re
import struct
from collections.abc import Callable, Iterable

import pytest
from cryptography.hazmat.decrepit.ciphers.modes import CFB
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from gateway.core.interfaces import KeysReady, NegotiationFailed, SasReady, SrtpKeys
from gateway.core.media.srtp import SrtpSession
from gateway.plugins.keyexchange.zrtp import ZrtpKeyExchange
from gateway.plugins.keyexchange.zrtp import packets as p
from gateway.plugins.keyexchange.zrtp.crypto import sha256, with_mac
from gateway.plugins.keyexchange.zrtp.engine import ZrtpLegSession, ZrtpNegotiation, ZrtpTiming

ZID_A = bytes.fromhex("a1a2a3a4a5a6a7a8a9aaabac")
ZID_B = bytes.fromhex("b1b2b3b4b5b6b7b8b9babbbc")
PV_SIZES = {"DH3k": 384, "DH2k": 256, "EC25": 64, "X255": 32}
CM128_80 = "AES_CM_128_HMAC_SHA1_80"
CM128_32 = "AES_CM_128_HMAC_SHA1_32"
CM256_80 = "AES_256_CM_HMAC_SHA1_80"
CM256_32 = "AES_256_CM_HMAC_SHA1_32"

Alter = Callable[[str, bytes], bytes | None]


def exchange(zid: bytes, seed: int, **kwargs: object) -> ZrtpKeyExchange:
    return ZrtpKeyExchange(zid=lambda: zid, random_bytes=random.Random(seed).randbytes, **kwargs)  # type: ignore[arg-type]


def offer_answer(
    a: ZrtpKeyExchange | None = None,
    b: ZrtpKeyExchange | None = None,
    *,
    suites_a: Iterable[str] = (),
    suites_b: Iterable[str] = (),
) -> tuple[ZrtpNegotiation, ZrtpNegotiation]:
    """A offers, B answers, A takes the answer: both are ready to send Hello."""
    a = a or exchange(ZID_A, 1)
    b = b or exchange(ZID_B, 2)
    offerer = a.offer(suites=tuple(suites_a), secure_signalling=False)
    answerer = b.answer(
        offerer.local_sdp_attributes(), suites=tuple(suites_b), secure_signalling=False
    )
    assert answerer is not None
    offerer.remote_sdp_attributes(answerer.local_sdp_attributes())
    return offerer, answerer


class Link:
    """Ends ``a`` and ``b`` and the packets in flight between them, on an autojump clock."""

    def __init__(
        self,
        a: ZrtpNegotiation,
        b: ZrtpNegotiation,
        *,
        latency: float = 0.01,
        jitter: float = 0.0,
        loss: float = 0.0,
        duplication: float = 0.0,
        seed: int = 0,
        alter: Alter | None = None,
        now: float = 0.0,
        sources: dict[str, tuple[str, int]] | None = None,
    ) -> None:
        self.ends = {"a": a, "b": b}
        self.sources = sources
        """Where each end sends from, told to the receiver (``receive_packet_from``); None:
        ``receive_packet``, no source."""
        self.now = now
        self.latency, self.jitter = latency, jitter
        self.loss, self.duplication = loss, duplication
        self.random = random.Random(seed)
        self.alter = alter
        self.sent: list[tuple[float, str, bytes]] = []  # (time, sender, packet), lost ones too
        self._in_flight: list[tuple[float, int, str, bytes]] = []
        self._order = itertools.count()

    def run(self, *, until: float = 60.0) -> None:
        """Move packets and fire timers until nothing is due before ``until``."""
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
                if self.sources is None:
                    self.ends[receiver].receive_packet(packet, now=self.now)
                else:
                    sender = "b" if receiver == "a" else "a"
                    self.ends[receiver].receive_packet_from(
                        packet, source=self.sources[sender], now=self.now
                    )
        raise AssertionError("the exchange never went quiet")

    def _collect(self) -> None:
        for name, end in self.ends.items():
            for packet in end.packets_to_send(now=self.now):
                self.sent.append((self.now, name, packet))
                if self.random.random() < self.loss:
                    continue
                if self.alter is not None:
                    altered = self.alter(name, packet)
                    if altered is None:
                        continue
                    packet = altered
                copies = 2 if self.random.random() < self.duplication else 1
                for _ in range(copies):
                    arrival = self.now + self.latency + self.jitter * self.random.random()
                    receiver = "b" if name == "a" else "a"
                    heapq.heappush(self._in_flight, (arrival, next(self._order), receiver, packet))

    def messages(self, sender: str, kind: bytes | None = None) -> list[bytes]:
        """The messages ``sender`` sent (of type ``kind``), in order."""
        found = [packet[12:-4] for _, name, packet in self.sent if name == sender]
        return [m for m in found if kind is None or m[4:12] == kind]

    def kinds(self, sender: str) -> list[bytes]:
        return [m[4:12] for m in self.messages(sender)]


def events(negotiation: ZrtpNegotiation) -> list[object]:
    out: list[object] = []
    while (event := negotiation.next_event()) is not None:
        out.append(event)
    return out


def secure_keys(negotiation: ZrtpNegotiation) -> tuple[SrtpKeys, str]:
    """The keys and SAS of a finished exchange: exactly KeysReady then SasReady."""
    ready, sas = events(negotiation)
    assert isinstance(ready, KeysReady) and isinstance(sas, SasReady)
    assert negotiation.state == "secure" and negotiation.failure is None
    assert negotiation.keys == ready.keys and negotiation.zrtp_sas == sas.sas
    assert sas.verified is False  # no cache: nothing was verified before (§4.9.1)
    assert negotiation.get_timer() is None
    return ready.keys, sas.sas


def assert_completed(a: ZrtpNegotiation, b: ZrtpNegotiation) -> tuple[SrtpKeys, str]:
    ours, sas_a = secure_keys(a)
    theirs, sas_b = secure_keys(b)
    assert ours.suite == theirs.suite
    assert ours.local_key == theirs.remote_key and ours.remote_key == theirs.local_key
    assert ours.local_key != ours.remote_key
    assert sas_a == sas_b
    assert {a.initiator, b.initiator} == {True, False}
    assert a.zrtp_key_agreement == b.zrtp_key_agreement
    assert a.zrtp_peer_client == b.zrtp_peer_client == "voipgw"
    return ours, sas_a


def failure_of(negotiation: ZrtpNegotiation) -> str:
    (failed,) = events(negotiation)
    assert isinstance(failed, NegotiationFailed) and failed.sip_status == 488
    assert negotiation.failure == failed
    assert negotiation.state == "failed" and negotiation.keys is None
    assert negotiation.get_timer() is None
    assert failed.reason.startswith("ZRTP: ")
    return failed.reason


def error_codes(link: Link, sender: str) -> list[int]:
    return [p.parse_error_untrusted(m) for m in link.messages(sender, p.ERROR)]


def reframe(packet: bytes, message: bytes) -> bytes:
    """``packet`` carrying ``message`` instead, with the right CRC."""
    parsed = p.parse_packet_untrusted(packet)
    return p.frame(parsed.sequence, parsed.ssrc, message)


def flip(kind: bytes, offset: int) -> Alter:
    """Damage every ``kind`` message on the way at ``offset`` (from the message start) and
    fix its CRC, as a man in the middle would."""

    def alter(sender: str, packet: bytes) -> bytes | None:
        message = packet[12:-4]
        if message[4:12] != kind:
            return packet
        damaged = bytearray(message)
        damaged[offset] ^= 0x40
        return reframe(packet, bytes(damaged))

    return alter


def rtp(sequence: int, ssrc: int = 0x5EC0DE5) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, sequence, 160 * sequence, ssrc) + b"\xd5" * 160


def hello_of(negotiation: ZrtpNegotiation) -> bytes:
    """The Hello packet a freshly started negotiation sends first."""
    (hello,) = negotiation.packets_to_send(now=0.0)
    assert hello[16:24] == p.HELLO
    return hello


# -- SDP and the first Hello ----------------------------------------------------------------------


def test_an_offer_binds_its_hello_and_sends_nothing_before_the_answer() -> None:
    offerer = exchange(ZID_A, 1).offer(suites=(), secure_signalling=False)
    ((name, value),) = offerer.local_sdp_attributes()
    assert name == "zrtp-hash"
    version, digest = value.split(" ")
    assert version == "1.10" and len(digest) == 64 and digest == digest.lower()
    assert offerer.state == "waiting for the answer" and offerer.initiator is None
    assert offerer.get_timer() is None and offerer.packets_to_send(now=0.0) == []
    assert offerer.signalling_protected is False and offerer.next_event() is None
    # A phone's Hello before our offer's answer arrives is not ours to take yet.
    answerer = exchange(ZID_B, 2).answer(
        offerer.local_sdp_attributes(), suites=(), secure_signalling=True
    )
    assert answerer is not None and answerer.signalling_protected is True
    offerer.receive_packet(hello_of(answerer), now=0.0)
    assert offerer.packets_to_send(now=0.0) == [] and offerer.get_timer() is None

    offerer.remote_sdp_attributes(answerer.local_sdp_attributes())
    assert offerer.get_timer() == 0.0  # start at once
    hello = hello_of(offerer)
    assert sha256(hello[12:-4]).hex() == digest  # §8.1: the hash of the Hello it then sends
    parsed = p.parse_hello_untrusted(hello[12:-4])
    assert (parsed.version, parsed.client_id, parsed.zid) == (b"1.10", b"voipgw".ljust(16), ZID_A)
    assert parsed.flags == 0  # not passive, no MiTM, no signature
    assert parsed.hashes == ("S256",)
    assert parsed.ciphers == ("AES1", "AES3")
    assert parsed.auth_tags == ("HS80", "HS32")
    # §4.4.3: Mult last in every stream's Hello (a later stream of the leg may use it).
    assert parsed.key_agreements == ("X255", "DH3k", "Mult")
    assert parsed.sas_types == ("B32 ", "B256")


def test_the_hello_lists_only_what_the_leg_policy_can_key() -> None:
    offerer = exchange(ZID_A, 1).offer(
        suites=(CM128_32, "AEAD_AES_256_GCM"), secure_signalling=False
    )
    offerer.remote_sdp_attributes([("zrtp-hash", "1.10 " + "00" * 32)])
    hello = p.parse_hello_untrusted(hello_of(offerer)[12:-4])
    assert hello.ciphers == ("AES1",) and hello.auth_tags == ("HS32",)


@pytest.mark.parametrize("side", ["offerer", "answerer"])
def test_a_policy_without_a_zrtp_suite_fails_at_once(side: str) -> None:
    suites = ("AEAD_AES_256_GCM",)
    if side == "offerer":
        negotiation = exchange(ZID_A, 1).offer(suites=suites, secure_signalling=False)
    else:
        offer = exchange(ZID_A, 1).offer(suites=(), secure_signalling=False)
        answer = exchange(ZID_B, 2).answer(
            offer.local_sdp_attributes(), suites=suites, secure_signalling=False
        )
        assert answer is not None
        negotiation = answer
    reason = failure_of(negotiation)
    assert "no SRTP suite" in reason
    assert negotiation.packets_to_send(now=0.0) == []


def test_an_offer_without_zrtp_hash_is_not_for_zrtp() -> None:
    attributes = [("crypto", "1 AES_CM_128_HMAC_SHA1_80 inline:x"), ("setup", "actpass")]
    answer = exchange(ZID_B, 2).answer(attributes, suites=(), secure_signalling=False)
    assert answer is None


def test_an_unreadable_zrtp_hash_still_answers_without_binding_the_hello() -> None:
    # §8.1: the attribute binds the Hello when it can; a value we cannot read binds nothing.
    offerer = exchange(ZID_A, 1).offer(suites=(), secure_signalling=False)
    answerer = exchange(ZID_B, 2).answer(
        [("zrtp-hash", "1.10 not-a-hash")], suites=(), secure_signalling=False
    )
    assert answerer is not None
    offerer.remote_sdp_attributes(answerer.local_sdp_attributes())
    Link(offerer, answerer).run()
    assert_completed(offerer, answerer)


# -- complete exchanges ---------------------------------------------------------------------------


@pytest.mark.parametrize("agreement", ["X255", "DH3k", "DH2k", "EC25"])
def test_completes_with_each_key_agreement(agreement: str) -> None:
    a, b = offer_answer(
        exchange(ZID_A, 1, key_agreements=(agreement,)),
        exchange(ZID_B, 2, key_agreements=(agreement,)),
    )
    link = Link(a, b)
    link.run()
    keys, sas = assert_completed(a, b)
    assert keys.suite == CM128_80  # AES1 and HS80 come first in both lists
    assert len(keys.local_key) == len(keys.remote_key) == 16 + 14
    assert len(sas) == 4  # B32 comes first
    assert a.zrtp_key_agreement == agreement
    initiator, responder = ("a", "b") if a.initiator else ("b", "a")
    # Each message of §4 once: no loss, so nothing was retransmitted.
    assert link.kinds(initiator)[-3:] == [p.COMMIT, p.DH_PART2, p.CONFIRM2]
    assert link.kinds(responder)[-3:] == [p.DH_PART1, p.CONFIRM1, p.CONF2_ACK]
    for sender, kind in ((initiator, p.DH_PART2), (responder, p.DH_PART1)):
        (dh_part,) = link.messages(sender, kind)
        assert len(p.parse_dh_part_untrusted(dh_part, kind).public_value) == PV_SIZES[agreement]
    assert a.statistics().retransmissions == b.statistics().retransmissions == 0
    assert a.packets_to_send(now=link.now) == [] and b.packets_to_send(now=link.now) == []


def test_the_keys_protect_media_both_ways() -> None:
    a, b = offer_answer()
    Link(a, b).run()
    ours, _ = secure_keys(a)
    theirs, _ = secure_keys(b)
    sender, receiver = SrtpSession(ours), SrtpSession(theirs)
    for sequence in range(3):
        protected = sender.protect_rtp(rtp(sequence))
        assert protected is not None and protected != rtp(sequence)
        assert receiver.unprotect_rtp(protected) == rtp(sequence)
        back = receiver.protect_rtp(rtp(sequence, ssrc=0x9999))
        assert back is not None and sender.unprotect_rtp(back) == rtp(sequence, ssrc=0x9999)


@pytest.mark.parametrize(
    ("ours", "theirs", "chosen"),
    [
        (("X255", "DH3k"), ("DH3k",), "DH3k"),
        (("DH3k", "DH2k"), ("DH2k", "DH3k"), "DH2k"),  # §4.1.2: the faster first choice
        (("DH3k", "X255"), ("X255", "DH3k"), "X255"),
        (("EC25", "DH3k"), ("X255", "DH3k"), "DH3k"),
    ],
)
def test_the_key_agreement_is_the_faster_first_choice(
    ours: tuple[str, ...], theirs: tuple[str, ...], chosen: str
) -> None:
    a, b = offer_answer(
        exchange(ZID_A, 1, key_agreements=ours), exchange(ZID_B, 2, key_agreements=theirs)
    )
    Link(a, b).run()
    assert_completed(a, b)
    assert a.zrtp_key_agreement == b.zrtp_key_agreement == chosen


@pytest.mark.parametrize(
    ("settings", "suite", "key_length"),
    [
        ({}, CM128_80, 30),
        ({"ciphers": ("AES3", "AES1")}, CM256_80, 46),
        ({"auth_tags": ("HS32", "HS80")}, CM128_32, 30),
        ({"ciphers": ("AES3",), "auth_tags": ("HS32",)}, CM256_32, 46),
    ],
    ids=["defaults", "AES3", "HS32", "AES3-HS32"],
)
def test_the_suite_follows_the_ciphers_and_auth_tags(
    settings: dict[str, tuple[str, ...]], suite: str, key_length: int
) -> None:
    a, b = offer_answer(exchange(ZID_A, 1, **settings), exchange(ZID_B, 2, **settings))
    Link(a, b).run()
    keys, _ = assert_completed(a, b)
    assert keys.suite == suite
    assert len(keys.local_key) == len(keys.remote_key) == key_length


@pytest.mark.parametrize(
    ("suites", "expected"),
    [
        ((CM128_32,), CM128_32),
        ((CM256_80,), CM256_80),
        # The policy's order decides, as for SDES and DTLS-SRTP (not our AES1-first order).
        (("AEAD_AES_256_GCM", CM256_32, CM128_32), CM256_32),
        ((CM128_32, CM128_80), CM128_32),
        ((CM128_80, CM256_80), CM128_80),
        ((CM256_80, CM128_80), CM256_80),
    ],
)
def test_the_leg_policy_narrows_the_suite(suites: tuple[str, ...], expected: str) -> None:
    a, b = offer_answer(suites_a=suites, suites_b=suites)
    Link(a, b).run()
    keys, _ = assert_completed(a, b)
    assert keys.suite == expected


def test_b256_sas_is_two_words_joined_by_a_colon() -> None:
    settings = {"sas_types": ("B256", "B32")}
    a, b = offer_answer(exchange(ZID_A, 1, **settings), exchange(ZID_B, 2, **settings))
    Link(a, b).run()
    _, sas = assert_completed(a, b)
    first, second = sas.split(":")
    assert first.isalpha() and second.isalpha()


def test_the_disclosure_flag_is_sent_as_configured_and_the_peers_is_recorded() -> None:
    """RFC 6189 §11: an endpoint that may disclose keys (lawful interception behind the
    gateway) sets D in its Confirm; the other side's record says whether the peer did."""
    a, b = offer_answer(exchange(ZID_A, 1, disclosure=True), exchange(ZID_B, 2))
    Link(a, b).run()
    assert_completed(a, b)
    assert b.security_record()["zrtp_peer_disclosure"] == "yes"
    assert a.security_record()["zrtp_peer_disclosure"] == "no"


def test_the_exchange_is_deterministic_with_seeded_sources_and_dh() -> None:
    results = []
    for _ in range(2):
        a, b = offer_answer(
            exchange(ZID_A, 1, key_agreements=("DH2k",)),
            exchange(ZID_B, 2, key_agreements=("DH2k",)),
        )
        link = Link(a, b)
        link.run()
        keys, sas = assert_completed(a, b)
        results.append((keys.local_key, sas, [packet for _, _, packet in link.sent]))
    assert results[0] == results[1]


# -- who commits (§4.1, §4.2) ---------------------------------------------------------------------


def test_crossing_commits_leave_the_higher_hvi_initiator() -> None:
    a, b = offer_answer(
        exchange(ZID_A, 1, key_agreements=("DH3k",)),
        exchange(ZID_B, 2, key_agreements=("DH3k",)),
    )
    link = Link(a, b)
    link.run()
    assert_completed(a, b)
    # Both got HelloACK in the same round, so both committed.
    (commit_a,) = link.messages("a", p.COMMIT)
    (commit_b,) = link.messages("b", p.COMMIT)
    hvi_a = p.parse_commit_untrusted(commit_a).hvi
    hvi_b = p.parse_commit_untrusted(commit_b).hvi
    assert hvi_a != hvi_b
    winner, loser = (a, b) if hvi_a > hvi_b else (b, a)
    assert winner.initiator is True and loser.initiator is False
    assert winner.statistics().discarded == 1  # the losing Commit
    loser_name = "b" if loser is b else "a"
    assert p.DH_PART2 not in link.kinds(loser_name)


def test_without_crossing_commits_the_side_that_commits_is_initiator() -> None:
    a, b = offer_answer()

    def lose_b_hello_acks(sender: str, packet: bytes) -> bytes | None:
        return None if sender == "b" and packet[16:24] == p.HELLO_ACK else packet

    link = Link(a, b, alter=lose_b_hello_acks)
    link.run()
    assert_completed(a, b)
    assert b.initiator is True and a.initiator is False
    assert link.messages("a", p.COMMIT) == [] and len(link.messages("b", p.COMMIT)) == 1
    # The Commit also stopped a's Hello, which never got its HelloACK (§6).
    assert p.HELLO not in link.kinds("a")[link.kinds("a").index(p.DH_PART1) :]


def one_sided_policy_run(seed_a: int, seed_b: int) -> tuple[Link, ZrtpNegotiation, ZrtpNegotiation]:
    """A allows only AES_CM_128_HMAC_SHA1_32, B anything; both commit, crossing."""
    a, b = offer_answer(
        exchange(ZID_A, seed_a, key_agreements=("DH3k",)),
        exchange(ZID_B, seed_b, key_agreements=("DH3k",)),
        suites_a=(CM128_32,),
    )
    link = Link(a, b)
    link.run()
    return link, a, b


def hvis(link: Link) -> tuple[bytes, bytes]:
    (commit_a,) = link.messages("a", p.COMMIT)
    (commit_b,) = link.messages("b", p.COMMIT)
    return p.parse_commit_untrusted(commit_a).hvi, p.parse_commit_untrusted(commit_b).hvi


def test_a_one_sided_policy_refuses_the_peers_choice_outside_it() -> None:
    # B's Commit wins (higher hvi) and chooses HS80, which RFC 6189 §5.1.4 lets it assume A
    # supports; A's policy does not allow it, so A ends the exchange with Error 0x54.
    link, a, b = one_sided_policy_run(1, 2)
    hvi_a, hvi_b = hvis(link)
    assert hvi_b > hvi_a
    assert "AES_CM_128_HMAC_SHA1_80" in failure_of(a)
    assert error_codes(link, "a") == [0x54]
    assert "0x54" in failure_of(b)


def test_a_losing_commit_is_discarded_before_its_choices_are_judged() -> None:
    # Here A's Commit has the higher hvi: B's Commit (with HS80, outside A's policy) loses and
    # must be discarded unread (§4.2); A stays initiator and the exchange uses A's choice.
    link, a, b = one_sided_policy_run(1, 4)
    hvi_a, hvi_b = hvis(link)
    assert hvi_a > hvi_b
    keys, _ = assert_completed(a, b)
    assert a.initiator is True and keys.suite == CM128_32


# -- a bad network --------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(1, 21))
def test_completes_over_a_lossy_network(seed: int) -> None:
    timing = ZrtpTiming(handshake_timeout=20.0)
    a, b = offer_answer(
        exchange(ZID_A, seed, key_agreements=("DH3k",), timing=timing),
        exchange(ZID_B, seed + 100, key_agreements=("DH3k",), timing=timing),
    )
    link = Link(a, b, loss=0.2, seed=seed)
    link.run(until=20.0)
    assert_completed(a, b)
    assert_retransmissions_are_copies(link)


def test_a_lossy_network_makes_retransmissions() -> None:
    counts = []
    for seed in range(1, 21):
        a, b = offer_answer(
            exchange(ZID_A, seed, key_agreements=("DH2k",)),
            exchange(ZID_B, seed + 100, key_agreements=("DH2k",)),
        )
        link = Link(a, b, loss=0.2, seed=seed)
        link.run(until=20.0)
        assert a.state == b.state == "secure"
        counts.append(a.statistics().retransmissions + b.statistics().retransmissions)
    assert sum(1 for count in counts if count > 0) >= 5


@pytest.mark.parametrize("seed", range(1, 11))
def test_completes_over_a_terrible_network(seed: int) -> None:
    # Loss, duplication and reordering (jitter of five times the latency).
    a, b = offer_answer(
        exchange(ZID_A, seed, key_agreements=("DH2k",)),
        exchange(ZID_B, seed + 100, key_agreements=("DH2k",)),
    )
    link = Link(a, b, loss=0.2, duplication=0.2, jitter=0.05, seed=seed)
    link.run(until=20.0)
    assert_completed(a, b)
    assert_retransmissions_are_copies(link)


def assert_retransmissions_are_copies(link: Link) -> None:
    """§6: a retransmission is the same message; every packet has the next sequence number."""
    for sender in ("a", "b"):
        for kind in (p.HELLO, p.COMMIT, p.DH_PART1, p.DH_PART2, p.CONFIRM1, p.CONFIRM2):
            assert len(set(link.messages(sender, kind))) <= 1
        sequences = [
            p.parse_packet_untrusted(packet).sequence
            for _, name, packet in link.sent
            if name == sender
        ]
        assert all((y - x) % 0x10000 == 1 for x, y in itertools.pairwise(sequences))


# -- time -----------------------------------------------------------------------------------------


def drive_alone(negotiation: ZrtpNegotiation, *, start: float) -> list[tuple[float, bytes]]:
    """Fire ``negotiation``'s timers with nobody answering; what it sent, when."""
    sent: list[tuple[float, bytes]] = []
    now = start
    for _ in range(10_000):
        timer = negotiation.get_timer()
        if timer is None:
            return sent
        now = max(now, timer)
        negotiation.handle_timer(now=now)
        sent += [(now, packet) for packet in negotiation.packets_to_send(now=now)]
    raise AssertionError("the timer never stopped")


@pytest.mark.parametrize("silent", ["offerer", "answerer"])
def test_a_silent_peer_ends_the_exchange_after_the_handshake_timeout(silent: str) -> None:
    timing = ZrtpTiming(handshake_timeout=5.0)
    a, b = offer_answer(exchange(ZID_A, 1, timing=timing), exchange(ZID_B, 2, timing=timing))
    alone = b if silent == "offerer" else a
    sent = drive_alone(alone, start=100.0)
    *hellos, (failed_at, error) = sent
    assert failed_at == pytest.approx(105.0)
    assert error[16:24] == p.ERROR and p.parse_error_untrusted(error[12:-4]) == 0xB0
    # T1 (§6): 50 ms, doubling to 200 ms, until the handshake timeout.
    times = [t - 100.0 for t, _ in hellos]
    expected = [0.0, 0.05, 0.15] + [0.35 + 0.2 * i for i in range(24)]
    assert times == pytest.approx(expected)
    assert len({packet[12:-4] for _, packet in hellos}) == 1
    assert all(packet[16:24] == p.HELLO for _, packet in hellos)
    assert alone.statistics().retransmissions == len(hellos) - 1
    reason = failure_of(alone)
    assert "no ZRTP Hello" in reason and "5 s" in reason
    assert alone.packets_to_send(now=200.0) == []


def test_the_initiator_gives_up_after_ten_commits_over_9_45_seconds() -> None:
    a, b = offer_answer()

    def deaf_a(sender: str, packet: bytes) -> bytes | None:
        # b hears a's Hello and HelloACK only; a never hears b's HelloACK, so b commits alone.
        if sender == "a":
            return packet if packet[16:24] in (p.HELLO, p.HELLO_ACK) else None
        return None if packet[16:24] == p.HELLO_ACK else packet

    link = Link(a, b, alter=deaf_a)
    link.run()
    commits = [t for t, name, packet in link.sent if name == "b" and packet[16:24] == p.COMMIT]
    assert len(commits) == 10
    first = commits[0]
    # T2 (§6): 150 ms, doubling to 1.2 s, ten tries, then Error 0xB0 at 9.45 s.
    expected = [0, 0.15, 0.45, 1.05, 2.25, 3.45, 4.65, 5.85, 7.05, 8.25]
    assert [t - first for t in commits] == pytest.approx(expected)
    ((error_at, _, error),) = [x for x in link.sent if x[1] == "b" and x[2][16:24] == p.ERROR]
    assert error_at - first == pytest.approx(9.45)
    assert p.parse_error_untrusted(error[12:-4]) == 0xB0
    reason = failure_of(b)
    assert "stopped answering" in reason and "Commit sent 10 times" in reason
    assert b.statistics().retransmissions == 9
    # a, the responder, answered each repeated Commit with the same DHPart1 (all lost) ...
    assert len(link.messages("a", p.DH_PART1)) == 10
    assert len(set(link.messages("a", p.DH_PART1))) == 1
    # ... and fails when b's Error reaches it.
    assert "0xb0" in failure_of(a)


def test_hello_acknowledged_stops_its_retransmission() -> None:
    a, b = offer_answer()
    hello_of(a)
    assert a.get_timer() == pytest.approx(0.05)
    a.receive_packet(p.frame(1, 2, p.message(p.HELLO_ACK)), now=0.01)
    assert a.get_timer() == pytest.approx(20.0)  # only the handshake timeout is left
    a.handle_timer(now=1.0)
    assert a.packets_to_send(now=1.0) == [] and a.statistics().retransmissions == 0
    a.receive_packet(hello_of(b), now=1.0)  # and the peer's Hello now makes us commit
    assert [x[16:24] for x in a.packets_to_send(now=1.0)] == [p.HELLO_ACK, p.COMMIT]
    assert a.initiator is True and a.state == "committed"


# -- the peer's packets: forged, damaged, unexpected ----------------------------------------------


def forged_hello(zid: bytes = b"F" * 12, client_id: bytes = b"forger") -> bytes:
    message = with_mac(
        p.encode_hello(
            client_id=client_id,
            h3=sha256(b"h2"),
            zid=zid,
            flags=0,
            hashes=("S256",),
            ciphers=("AES1",),
            auth_tags=("HS32",),
            key_agreements=("DH3k",),
            sas_types=("B32 ",),
        ),
        b"h2",
    )
    return p.frame(1, 0xF0F0F0F0, message)


@pytest.mark.parametrize("target", ["a", "b"])
def test_a_hello_that_does_not_match_zrtp_hash_is_ignored(target: str) -> None:
    a, b = offer_answer()
    victim = a if target == "a" else b
    hello_of(victim)  # started
    for _ in range(3):
        victim.receive_packet(forged_hello(), now=0.0)
    assert victim.packets_to_send(now=0.0) == []  # no HelloACK for it
    assert victim.statistics().hello_mismatches == 3
    assert victim.statistics().discarded == 3
    Link(a, b).run()
    assert_completed(a, b)
    assert victim.zrtp_peer_client == "voipgw"
    assert victim.statistics().hello_mismatches == 3


def test_a_second_different_hello_does_not_replace_the_first() -> None:
    # Without a binding (no readable a=zrtp-hash) the first Hello binds the exchange.
    offerer = exchange(ZID_A, 1).offer(suites=(), secure_signalling=False)
    answerer = exchange(ZID_B, 2).answer([("zrtp-hash", "x")], suites=(), secure_signalling=False)
    assert answerer is not None
    offerer.remote_sdp_attributes(answerer.local_sdp_attributes())
    hello_of(answerer)
    answerer.receive_packet(hello_of(offerer), now=0.0)
    (ack,) = answerer.packets_to_send(now=0.0)
    assert ack[16:24] == p.HELLO_ACK
    answerer.receive_packet(forged_hello(), now=0.0)
    assert answerer.packets_to_send(now=0.0) == []
    assert answerer.statistics().discarded == 1
    assert answerer.zrtp_peer_client == "voipgw"


def test_a_hello_of_another_version_waits_for_the_peers_downgrade() -> None:
    # §4.1.1: a peer speaking 1.20 sends 1.10 once it sees our Hello; its 1.20 Hello is ignored
    # (bzrtp does the same), not held against its a=zrtp-hash.
    a, b = offer_answer()
    hello_of(a)
    real = hello_of(b)
    newer = reframe(real, real[12:24] + b"1.20" + real[28:-4])
    assert p.parse_hello_untrusted(newer[12:-4]).version == b"1.20"
    a.receive_packet(newer, now=0.0)
    assert a.packets_to_send(now=0.0) == []
    assert a.statistics().hello_mismatches == 0 and a.statistics().discarded == 1
    a.receive_packet(real, now=0.0)
    (ack,) = a.packets_to_send(now=0.0)
    assert ack[16:24] == p.HELLO_ACK


def junk(peer_hello: bytes) -> list[bytes]:
    bad_crc = peer_hello[:-1] + bytes([peer_hello[-1] ^ 1])
    unknown = p.frame(9, 9, p.message(b"Unknown ", bytes(4)))
    relay_ack = p.frame(9, 9, p.message(p.RELAY_ACK))
    fragment = bytes([0x11]) + peer_hello[1:]
    bad_ping = p.frame(9, 9, p.message(p.PING, bytes(16)))
    short_hello = p.frame(9, 9, p.message(p.HELLO, bytes(40)))
    stray_confirm = p.frame(9, 9, p.message(p.CONFIRM2, bytes(64)))
    garbage = bytes([0x10, 0]) + random.Random(3).randbytes(60)
    return [bad_crc, unknown, relay_ack, fragment, bad_ping, short_hello, stray_confirm, garbage]


def test_damaged_and_unexpected_packets_are_dropped_and_counted() -> None:
    a, b = offer_answer()
    hello_b = hello_of(b)
    hello_of(a)
    packets = junk(hello_b)
    for packet in packets:
        a.receive_packet(packet, now=0.0)
    a.receive_packet(rtp(1), now=0.0)
    a.receive_packet(bytes([22, 0xFE, 0xFD]) + bytes(20), now=0.0)
    assert a.statistics().discarded == len(packets) + 2
    assert a.packets_to_send(now=0.0) == [] and a.state == "discovery"
    assert events(a) == []
    Link(a, b).run()  # the exchange still works from here
    assert_completed(a, b)


def test_packets_after_the_exchange_change_nothing() -> None:
    a, b = offer_answer()
    link = Link(a, b)
    link.run()
    keys, _ = assert_completed(a, b)
    before = a.statistics().discarded
    for _, _, packet in link.sent:  # the whole exchange again, both directions
        a.receive_packet(packet, now=5.0)
    a.receive_packet(p.frame(1, 2, p.encode_error(0x20)), now=5.0)
    assert a.state == "secure" and a.keys == keys and events(a) == []
    assert a.statistics().discarded > before
    for packet in a.packets_to_send(now=5.0):  # at most answers to repeats, never an Error
        assert packet[16:24] in (p.HELLO_ACK, p.CONF2_ACK, p.DH_PART1, p.CONFIRM1)


def test_claims_zrtp_packets_only() -> None:
    a, b = offer_answer()
    hello = hello_of(b)
    assert a.claims_packet(hello[0], hello)
    assert not a.claims_packet(0x80, rtp(1))
    dtls = bytes([22, 0xFE, 0xFD]) + bytes(20)
    assert not a.claims_packet(22, dtls)
    stun = bytes([0, 1, 0, 0, 0x21, 0x12, 0xA4, 0x42]) + bytes(12)
    assert not a.claims_packet(0, stun)


def test_ping_is_answered_with_ping_ack_carrying_the_ping_ssrc() -> None:
    a, _ = offer_answer()
    (our_hello,) = a.packets_to_send(now=0.0)
    ping = p.frame(77, 0xCAFEBABE, p.message(p.PING, b"1.10" + b"E" * 8))
    a.receive_packet(ping, now=0.0)
    (ack,) = a.packets_to_send(now=0.0)
    parsed = p.parse_packet_untrusted(ack)
    assert parsed.message_type == p.PING_ACK
    assert parsed.ssrc == p.parse_packet_untrusted(our_hello).ssrc  # our stream's SSRC
    # §5.16: version, our endpoint hash (our truncated ZID), the Ping's, the Ping's SSRC.
    assert parsed.message == p.encode_ping_ack(
        endpoint_hash=ZID_A[:8], received_hash=b"E" * 8, ssrc=0xCAFEBABE
    )
    assert a.state == "discovery" and a.statistics().discarded == 0


def test_an_error_from_the_peer_ends_the_exchange_with_its_code() -> None:
    a, b = offer_answer()
    hello_of(a)
    a.receive_packet(p.frame(5, 6, p.encode_error(0x40)), now=0.0)
    (ack,) = a.packets_to_send(now=0.0)
    assert p.parse_packet_untrusted(ack).message == p.message(p.ERROR_ACK)
    reason = failure_of(a)
    assert "0x40" in reason and "Hello components mismatch" in reason
    # Failed: nothing more is sent or received.
    a.receive_packet(hello_of(b), now=0.0)
    assert a.packets_to_send(now=0.0) == [] and a.get_timer() is None


def test_go_clear_is_refused_and_sas_relay_acknowledged_once_secure() -> None:
    a, b = offer_answer()
    Link(a, b).run()
    keys, _ = assert_completed(a, b)
    a.receive_packet(p.frame(5, 6, p.message(p.GO_CLEAR, bytes(8))), now=9.0)
    (error,) = a.packets_to_send(now=9.0)
    assert p.parse_error_untrusted(error[12:-4]) == 0x100  # §4.7.2: GoClear not allowed
    a.receive_packet(p.frame(6, 6, p.message(p.SAS_RELAY, bytes(64))), now=9.0)
    (ack,) = a.packets_to_send(now=9.0)
    assert ack[16:24] == p.RELAY_ACK
    assert a.state == "secure" and a.keys == keys and events(a) == []


# -- man in the middle ----------------------------------------------------------------------------


def test_a_tampered_dh_part2_fails_the_hvi_check() -> None:
    a, b = offer_answer()
    link = Link(a, b, alter=flip(p.DH_PART2, 12 + 64 + 5))  # inside pvi
    link.run()
    responder, responder_name = (b, "b") if a.initiator else (a, "a")
    initiator, initiator_name = (a, "a") if a.initiator else (b, "b")
    assert "hvi" in failure_of(responder)
    assert error_codes(link, responder_name) == [0x62]
    assert "0x62" in failure_of(initiator)
    assert p.ERROR_ACK in link.kinds(initiator_name)
    assert p.CONFIRM1 not in link.kinds(responder_name)


@pytest.mark.parametrize(
    ("kind", "offset", "checker_is_initiator"),
    [
        (p.CONFIRM1, 12 + 30, True),  # the encrypted H0
        (p.CONFIRM1, 12 + 2, True),  # the confirm MAC
        (p.CONFIRM2, 12 + 60, False),  # the cache expiration
        (p.DH_PART1, 12 + 64 + 5, True),  # pvr: other keys, so Confirm1 fails its MAC
    ],
    ids=["confirm1-h0", "confirm1-mac", "confirm2", "dh-part1"],
)
def test_a_tampered_message_fails_the_confirm_mac(
    kind: bytes, offset: int, checker_is_initiator: bool
) -> None:
    a, b = offer_answer()
    link = Link(a, b, alter=flip(kind, offset))
    link.run()
    checker = a if a.initiator == checker_is_initiator else b
    other = b if checker is a else a
    checker_name = "a" if checker is a else "b"
    assert "MAC" in failure_of(checker)
    assert error_codes(link, checker_name) == [0x70]
    assert "0x70" in failure_of(other)


def swap(kind: bytes, old: bytes, new: bytes, sender: str = "ab") -> Alter:
    """Replace ``old`` by ``new`` in every ``kind`` message from ``sender`` and fix the CRC."""

    def alter(name: str, packet: bytes) -> bytes | None:
        message = packet[12:-4]
        if name not in sender or message[4:12] != kind:
            return packet
        assert old in message
        return reframe(packet, message.replace(old, new, 1))

    return alter


def test_a_commit_altered_on_the_way_fails_its_mac_check() -> None:
    # The Commit's choices are authenticated late: by H1, revealed in the DHPart2 (§9).
    a, b = offer_answer(
        exchange(ZID_A, 1, key_agreements=("DH3k",)),
        exchange(ZID_B, 2, key_agreements=("DH3k",)),
    )
    link = Link(a, b, alter=swap(p.COMMIT, b"HS80", b"HS32"))
    link.run()
    responder, name = (b, "b") if a.initiator else (a, "a")
    initiator = a if responder is b else b
    assert "Commit failed its MAC check" in failure_of(responder)
    assert error_codes(link, name) == [0x10]
    assert "0x10" in failure_of(initiator)


@pytest.mark.parametrize("altered", ["a", "b"])
def test_a_hello_altered_on_the_way_fails_its_mac_check_without_sdp_binding(altered: str) -> None:
    # Neither side can read the other's a=zrtp-hash, so only the hash chain protects a Hello:
    # its MAC, keyed with the H2 its sender reveals next, in a Commit or a DHPart1 (§9, §8.1).
    offerer = exchange(ZID_A, 1, key_agreements=("DH3k",)).offer(suites=(), secure_signalling=False)
    answerer = exchange(ZID_B, 2, key_agreements=("DH3k",)).answer(
        [("zrtp-hash", "1.10 unreadable")], suites=(), secure_signalling=False
    )
    assert answerer is not None
    offerer.remote_sdp_attributes([("zrtp-hash", "1.10 unreadable")])
    downgrade = swap(p.HELLO, b"AES1AES3", b"AES1AES1", sender=altered)
    link = Link(offerer, answerer, alter=downgrade)
    link.run()
    holder, name = (answerer, "b") if altered == "a" else (offerer, "a")
    sender = offerer if holder is answerer else answerer
    assert "Hello failed its MAC check" in failure_of(holder)
    assert error_codes(link, name) == [0x10]
    assert "0x10" in failure_of(sender)


def test_a_multistream_commit_on_a_leg_without_a_dh_exchange_is_refused() -> None:
    # §4.4.3.1: Mult needs the ZRTP session key of a completed DH exchange on the leg; without
    # one the exchange ends (Error 0x53, as GNU ZRTP answers a Mult it cannot take).
    a, b = offer_answer()
    hello_a, hello_b = hello_of(a), hello_of(b)
    b.receive_packet(hello_a, now=0.0)
    a.receive_packet(hello_b, now=0.0)
    b.packets_to_send(now=0.0)  # its HelloACK
    for packet in a.packets_to_send(now=0.0):  # a's HelloACK makes b commit
        b.receive_packet(packet, now=0.0)
    (real,) = [x for x in b.packets_to_send(now=0.0) if x[16:24] == p.COMMIT]
    commit = p.parse_commit_untrusted(real[12:-4])
    body = commit.h2 + commit.zid + b"S256AES1HS80Mult" + b"B32 " + b"\x07" * 16
    a.receive_packet(p.frame(9, 9, with_mac(p.message(p.COMMIT, body + bytes(8)), b"k")), now=0.0)
    (error,) = a.packets_to_send(now=0.0)
    assert p.parse_error_untrusted(error[12:-4]) == 0x53
    assert "Mult" in failure_of(a)


def test_a_commit_from_a_stranger_is_ignored() -> None:
    a, b = offer_answer()
    hello_of(a)
    a.receive_packet(hello_of(b), now=0.0)
    a.packets_to_send(now=0.0)
    # Right ZID, but an H2 that does not hash to the H3 of b's Hello.
    commit = with_mac(
        p.encode_commit(
            h2=b"\x01" * 32, zid=ZID_B, algorithms=("S256", "AES1", "HS80", "X255", "B32 "),
            hvi=b"\xff" * 32,
        ),
        b"h1",
    )  # fmt: skip
    a.receive_packet(p.frame(3, 4, commit), now=0.0)
    assert a.packets_to_send(now=0.0) == [] and a.state == "discovery"
    assert a.statistics().discarded == 1


# -- who the peer is (docs/media_security.md, "Forged handshakes") -------------------------------

PEER = ("127.0.0.1", 40000)
STRANGER = ("127.0.0.1", 40004)
FROM_PEER = {"a": ("127.0.0.1", 30000), "b": PEER}


def test_with_a_bound_hello_only_a_hello_or_ping_is_taken_before_it_matched() -> None:
    """§8.1: the peer's SDP bound its Hello; until a Hello matched, nobody is the peer. A
    stranger's Error (no MAC, §5.9) ends nothing and gets no ErrorACK, even from the address
    the peer will use; its HelloACK does not stand for the peer's; its Ping is answered
    (§5.16: every endpoint answers Ping)."""
    a, b = offer_answer()
    hello_of(a)
    error = p.frame(5, 6, p.encode_error(0x61))
    for source in (STRANGER, PEER):
        a.receive_packet_from(error, source=source, now=0.0)
    a.receive_packet_from(p.frame(6, 6, p.message(p.HELLO_ACK)), source=STRANGER, now=0.0)
    assert a.packets_to_send(now=0.0) == [] and a.state == "discovery"
    assert events(a) == [] and a.statistics().discarded == 3
    ping = p.frame(7, 0xCAFEBABE, p.message(p.PING, b"1.10" + b"E" * 8))
    a.receive_packet_from(ping, source=STRANGER, now=0.0)
    (ping_ack,) = a.packets_to_send(now=0.0)
    assert ping_ack[16:24] == p.PING_ACK
    # b's Hello matches: b is the peer. The stranger's HelloACK did not count: ours is still
    # unacknowledged, so no Commit yet (§4.1), only our HelloACK.
    assert a.peer_source is None
    a.receive_packet_from(hello_of(b), source=PEER, now=0.0)
    (ack,) = a.packets_to_send(now=0.0)
    assert ack[16:24] == p.HELLO_ACK
    assert a.peer_source == PEER  # the core gives it the port's latch
    a.receive_packet_from(error, source=STRANGER, now=0.0)
    assert a.packets_to_send(now=0.0) == [] and events(a) == []
    Link(a, b, sources=FROM_PEER).run()
    assert_completed(a, b)


def test_after_the_matching_hello_its_source_is_the_peer_and_its_error_ends_the_exchange() -> None:
    a, b = offer_answer()
    hello_of(a)
    a.receive_packet_from(hello_of(b), source=PEER, now=0.0)
    a.packets_to_send(now=0.0)
    a.receive_packet_from(p.frame(5, 6, p.encode_error(0x61)), source=PEER, now=0.0)
    (ack,) = a.packets_to_send(now=0.0)
    assert p.parse_packet_untrusted(ack).message == p.message(p.ERROR_ACK)
    assert "0x61" in failure_of(a)


def test_a_copy_of_the_peers_messages_from_another_source_is_not_taken() -> None:
    """Replayed from elsewhere (someone on the path), the peer's own Hello gets no HelloACK
    and its Commit no DHPart1: only the source of the matching Hello is answered."""
    a, b = offer_answer()
    a_hello = hello_of(a)
    b_hello = hello_of(b)
    a.receive_packet_from(b_hello, source=PEER, now=0.0)
    a.packets_to_send(now=0.0)
    a.receive_packet_from(b_hello, source=STRANGER, now=0.0)
    assert a.packets_to_send(now=0.0) == []
    b.receive_packet(a_hello, now=0.0)  # b commits once it holds our Hello and a HelloACK
    b.receive_packet(p.frame(9, 9, p.message(p.HELLO_ACK)), now=0.0)
    commit = next(x for x in b.packets_to_send(now=0.0) if x[16:24] == p.COMMIT)
    a.receive_packet_from(commit, source=STRANGER, now=0.0)
    assert a.packets_to_send(now=0.0) == [] and a.state == "discovery"
    a.receive_packet_from(commit, source=PEER, now=0.0)
    assert [x[16:24] for x in a.packets_to_send(now=0.0)] == [p.DH_PART1]


def test_restart_without_a_binding_forgets_a_strangers_exchange_and_keys_with_the_peer() -> None:
    """No readable a=zrtp-hash: the first Hello taken binds the exchange, here a stranger's,
    and we committed to it. The peer's SDP address speaks (the core restarts the handshake):
    everything from the stranger is forgotten, our same Hello goes again, and the peer keys
    the stream; the leg's DH exchange is the peer's (§4.4.3: Multistream later streams)."""
    leg_state: dict[str, object] = {}
    offerer = exchange(ZID_A, 1).offer(suites=(), secure_signalling=False)
    answerer = exchange(ZID_B, 2).answer(
        [("zrtp-hash", "x")], suites=(), secure_signalling=False, leg_state=leg_state
    )
    assert answerer is not None
    offerer.remote_sdp_attributes(answerer.local_sdp_attributes())
    ours = hello_of(answerer)
    answerer.receive_packet_from(forged_hello(), source=STRANGER, now=0.0)
    answerer.receive_packet_from(p.frame(2, 2, p.message(p.HELLO_ACK)), source=STRANGER, now=0.0)
    assert [x[16:24] for x in answerer.packets_to_send(now=0.0)] == [p.HELLO_ACK, p.COMMIT]
    assert answerer.zrtp_peer_client == "forger"
    assert answerer.peer_source is None  # nothing proves who the peer is without a binding
    assert answerer.restart_handshake(now=0.5) is True
    (hello,) = answerer.packets_to_send(now=0.5)
    assert hello[12:-4] == ours[12:-4]  # the Hello our SDP's a=zrtp-hash names
    assert answerer.state == "discovery" and answerer.zrtp_peer_client is None
    link = Link(offerer, answerer, sources=FROM_PEER, now=0.5)
    link.run()
    assert_completed(offerer, answerer)
    session = leg_state["session"]
    assert isinstance(session, ZrtpLegSession)
    assert session.dh_stream is answerer and session.peer_zid == ZID_A and session.secure


def test_restart_forgets_the_legs_session_a_strangers_dh_exchange_agreed() -> None:
    """No readable a=zrtp-hash, a stranger with a ZRTP endpoint of its own reached the port
    first, and we won the Commit race (initiator): its Confirm1 checked, our Confirm2 sent, the
    leg's ZRTPSess and SAS are the stranger's (§4.4.3; the initiator is secure only once
    Conf2ACK arrives, §4.6). The peer's SDP address speaks and the exchange starts afresh: the
    leg's session must be the peer's, never the stranger's (its SAS would be shown for the leg,
    and later streams keyed in Multistream mode from a key the phone does not hold)."""
    leg_state: dict[str, object] = {}
    offerer = exchange(ZID_A, 1).offer(suites=(), secure_signalling=False)
    answerer = exchange(ZID_B, 2).answer(
        [("zrtp-hash", "x")], suites=(), secure_signalling=False, leg_state=leg_state
    )
    assert answerer is not None
    offerer.remote_sdp_attributes(answerer.local_sdp_attributes())
    stranger = exchange(b"C" * 12, 2).offer(suites=(), secure_signalling=False)
    stranger.remote_sdp_attributes(answerer.local_sdp_attributes())

    def we_initiate_and_stay_unsecured(sender: str, packet: bytes) -> bytes | None:
        # The stranger never sees our HelloACK (so never commits: we do) nor we its Conf2ACK.
        kind = packet[16:24]
        if (sender, kind) in (("b", p.HELLO_ACK), ("a", p.CONF2_ACK)):
            return None
        return packet

    link = Link(
        stranger,
        answerer,
        sources={"a": STRANGER, "b": PEER},
        alter=we_initiate_and_stay_unsecured,
    )
    link.run(until=0.5)
    session = leg_state["session"]
    assert isinstance(session, ZrtpLegSession)
    assert answerer.initiator and answerer.state == "confirm2 sent"
    assert session.peer_zid == b"C" * 12 and session.sas is not None and not session.secure
    assert answerer.restart_handshake(now=0.5) is True
    assert session.dh_stream is None and session.sas is None
    assert session.session_key(b"C" * 12) is None
    Link(offerer, answerer, sources=FROM_PEER, now=0.5).run()
    _, sas = assert_completed(offerer, answerer)
    assert session.dh_stream is answerer and session.peer_zid == ZID_A and session.secure
    assert session.sas == sas


def test_restart_with_a_bound_hello_changes_nothing() -> None:
    """§8.1: with a binding, the stranger's Hello was never taken; the peer's, from a phone
    behind a NAT, is kept whoever speaks later."""
    a, b = offer_answer()
    hello_of(a)
    a.receive_packet_from(hello_of(b), source=STRANGER, now=0.0)
    (ack,) = a.packets_to_send(now=0.0)
    assert ack[16:24] == p.HELLO_ACK
    assert a.restart_handshake(now=0.1) is False  # nothing to undo: the core logs nothing
    assert a.packets_to_send(now=0.1) == [] and a.zrtp_peer_client == "voipgw"
    Link(a, b, sources={"a": PEER, "b": STRANGER}).run()
    assert_completed(a, b)


def test_equal_zids_fail_with_error_0x90() -> None:
    a, b = offer_answer(exchange(ZID_A, 1), exchange(ZID_A, 2))
    link = Link(a, b)
    link.run()
    for side, name in ((a, "a"), (b, "b")):
        assert "ZID" in failure_of(side)
        assert error_codes(link, name) == [0x90]


# -- re-INVITE ------------------------------------------------------------------------------------


def test_a_re_offer_and_re_answer_keep_the_exchange_and_its_keys() -> None:
    exchange_a, exchange_b = exchange(ZID_A, 1), exchange(ZID_B, 2)
    a, b = offer_answer(exchange_a, exchange_b)
    Link(a, b).run()
    keys, _ = assert_completed(a, b)
    again = exchange_a.offer(suites=(), secure_signalling=False, previous=a)
    assert again is a
    answer = exchange_b.answer(
        again.local_sdp_attributes(), suites=(), secure_signalling=False, previous=b
    )
    assert answer is b
    a.remote_sdp_attributes(answer.local_sdp_attributes())
    assert a.keys == keys and a.state == b.state == "secure"
    assert events(a) == [] and events(b) == []
    assert a.get_timer() is None and a.packets_to_send(now=10.0) == []
    # An offer that does not name a=zrtp-hash at all is the same peer too (§8.1: optional).
    unbound = exchange_b.answer(
        [("zrtp-hash", "x")], suites=(), secure_signalling=False, previous=b
    )
    assert unbound is b


def test_a_re_key_or_a_new_peer_hello_starts_a_new_exchange() -> None:
    exchange_a, exchange_b = exchange(ZID_A, 1), exchange(ZID_B, 2)
    a, b = offer_answer(exchange_a, exchange_b)
    Link(a, b).run()
    assert_completed(a, b)
    rekeyed = exchange_a.offer(suites=(), secure_signalling=False, previous=a, rekey=True)
    assert rekeyed is not a and rekeyed.local_sdp_attributes() != a.local_sdp_attributes()
    other = exchange(ZID_A, 9).offer(suites=(), secure_signalling=False)
    answer = exchange_b.answer(
        other.local_sdp_attributes(), suites=(), secure_signalling=False, previous=b
    )
    assert answer is not None and answer is not b


def test_a_failed_exchange_is_not_kept() -> None:
    exchange_a = exchange(ZID_A, 1)
    failed = exchange_a.offer(suites=("AEAD_AES_128_GCM",), secure_signalling=False)
    assert failed.failure is not None
    again = exchange_a.offer(suites=(), secure_signalling=False, previous=failed)
    assert again is not failed and again.failure is None


# -- secrets --------------------------------------------------------------------------------------


def forms(secret: bytes) -> list[str]:
    """How a secret could leak into text."""
    return [
        secret.hex(),
        secret.hex().upper(),
        secret[:8].hex(),
        base64.b64encode(secret).decode(),
        repr(secret)[2:-1][:24],
    ]


def assert_no_secrets(texts: Iterable[str], secrets: Iterable[bytes]) -> None:
    for text in texts:
        for secret in secrets:
            for form in forms(secret):
                assert form not in text


def test_keys_never_appear_in_repr_str_or_reasons() -> None:
    a, b = offer_answer()
    link = Link(a, b)
    link.run()
    ready_a, sas_a = events(a)
    ready_b, _ = events(b)
    assert isinstance(ready_a, KeysReady)
    keys = ready_a.keys
    secrets = [keys.local_key, keys.remote_key, keys.local_key[:16], keys.remote_key[:16]]
    texts = [
        repr(a),
        str(a),
        repr(b),
        repr(keys),
        str(keys),
        repr(ready_a),
        repr(ready_b),
        repr(sas_a),
        repr(a.statistics()),
    ]
    assert_no_secrets(texts, secrets)
    # Failure reasons (a man in the middle, a timeout) name what failed, never a value: no run
    # of hex digits or base64 long enough to be a key, a salt, a hash or an hvi.
    reasons = []
    for alter in (flip(p.CONFIRM1, 12 + 30), flip(p.DH_PART2, 12 + 64 + 5)):
        x, y = offer_answer()
        Link(x, y, alter=alter).run()
        reasons += [failure_of(x), failure_of(y)]
    timing = ZrtpTiming(handshake_timeout=1.0)
    x, _ = offer_answer(exchange(ZID_A, 1, timing=timing))
    drive_alone(x, start=0.0)
    reasons.append(failure_of(x))
    for reason in reasons:
        assert reason.startswith("ZRTP: ") and len(reason) < 200
        assert not re.search(r"[0-9a-fA-F]{12}|[A-Za-z0-9+/]{20}", reason)


# -- the transcript, checked from the RFC alone ---------------------------------------------------

MODP_2048 = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74"
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437"
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05"
    "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB"
    "9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B"
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF695581718"
    "3995497CEA956AE515D2261898FA051015728E5A8AACAA68FFFFFFFFFFFFFFFF",
    16,
)  # RFC 3526 §3


class RecordingRandom:
    def __init__(self, seed: int) -> None:
        self._random = random.Random(seed)
        self.draws: list[bytes] = []

    def __call__(self, n: int) -> bytes:
        self.draws.append(self._random.randbytes(n))
        return self.draws[-1]


def rfc_kdf(key: bytes, label: bytes, context: bytes, bits: int) -> bytes:
    data = b"\0\0\0\1" + label + b"\0" + context + struct.pack("!I", bits)
    return hmac.new(key, data, hashlib.sha256).digest()[: bits // 8]


def test_the_transcript_checks_out_by_the_rfc() -> None:
    """Recompute the keys, SAS and Confirms of one of our DH2k exchanges from its packets and
    one side's exponent, with hashlib, hmac and the formulas of §4.4.1.4, §4.5 and §5.7."""
    source = RecordingRandom(1)
    settings = {"key_agreements": ("DH2k",), "ciphers": ("AES3",)}
    a, b = offer_answer(
        ZrtpKeyExchange(zid=lambda: ZID_A, random_bytes=source, **settings),  # type: ignore[arg-type]
        exchange(ZID_B, 2, **settings),
    )
    link = Link(a, b)
    link.run()
    keys_a, sas = assert_completed(a, b)
    i, r = ("a", "b") if a.initiator else ("b", "a")
    zid_i, zid_r = (ZID_A, ZID_B) if a.initiator else (ZID_B, ZID_A)
    (hello_r,) = set(link.messages(r, p.HELLO))
    (commit,) = link.messages(i, p.COMMIT)
    (dh_part1,) = link.messages(r, p.DH_PART1)
    (dh_part2,) = link.messages(i, p.DH_PART2)
    (confirm1,) = link.messages(r, p.CONFIRM1)
    (confirm2,) = link.messages(i, p.CONFIRM2)
    # a's exponent: one of its 64-octet draws (§5.1.5: 512 bits), the one behind its pv.
    pv_a = (dh_part2 if i == "a" else dh_part1)[76:-8]
    pv_b = (dh_part1 if i == "a" else dh_part2)[76:-8]
    (exponent,) = {
        x
        for draw in source.draws
        if len(draw) == 64
        for x in (int.from_bytes(draw, "big"), int.from_bytes(draw, "big") | 1 << 511)
        if pow(2, x, MODP_2048).to_bytes(256, "big") == pv_a
    }
    dh_result = pow(int.from_bytes(pv_b, "big"), exponent, MODP_2048).to_bytes(256, "big")
    # §4.4.1.1: hvi commits the initiator to its DHPart2 and the responder's Hello.
    assert commit[-40:-8] == hashlib.sha256(dh_part2 + hello_r).digest()
    # §4.4.1.4: s0 with three null secrets (we keep no cache).
    total_hash = hashlib.sha256(hello_r + commit + dh_part1 + dh_part2).digest()
    context = zid_i + zid_r + total_hash
    s0 = hashlib.sha256(
        b"\0\0\0\1" + dh_result + b"ZRTP-HMAC-KDF" + zid_i + zid_r + total_hash + bytes(12)
    ).digest()
    # §4.5.3: AES3 keys of 256 bits, salts of 112; each side sends with its role's key.
    key_i = rfc_kdf(s0, b"Initiator SRTP master key", context, 256)
    key_i += rfc_kdf(s0, b"Initiator SRTP master salt", context, 112)
    key_r = rfc_kdf(s0, b"Responder SRTP master key", context, 256)
    key_r += rfc_kdf(s0, b"Responder SRTP master salt", context, 112)
    assert keys_a.suite == CM256_80
    assert (keys_a.local_key, keys_a.remote_key) == ((key_i, key_r) if i == "a" else (key_r, key_i))
    # §5.1.6: B32 of the leftmost 20 bits of the sashash.
    sasvalue = int.from_bytes(rfc_kdf(s0, b"SAS", context, 256)[:4], "big")
    alphabet = "ybndrfg8ejkmcpqxot1uwisza345h769"
    assert sas == "".join(alphabet[(sasvalue >> (27 - 5 * n)) & 31] for n in range(4))
    # §5.7: each Confirm is MACed and encrypted with its sender's role keys and carries H0,
    # no flags and a cache expiration of 0 (we keep no secrets).
    for confirm, dh_part, role in (
        (confirm1, dh_part1, b"Responder"),
        (confirm2, dh_part2, b"Initiator"),
    ):
        mac_key = rfc_kdf(s0, role + b" HMAC key", context, 256)
        zrtp_key = rfc_kdf(s0, role + b" ZRTP key", context, 256)
        iv, encrypted = confirm[20:36], confirm[36:]
        assert confirm[12:20] == hmac.new(mac_key, encrypted, hashlib.sha256).digest()[:8]
        decryptor = Cipher(algorithms.AES(zrtp_key), CFB(iv)).decryptor()
        plaintext = decryptor.update(encrypted) + decryptor.finalize()
        h0, flags_and_expiry = plaintext[:32], plaintext[32:]
        assert flags_and_expiry == bytes(8)
        h1 = hashlib.sha256(h0).digest()
        assert dh_part[12:44] == h1  # H1 in the DHPart, H0 opens its MAC
        assert dh_part[-8:] == hmac.new(h0, dh_part[:-8], hashlib.sha256).digest()[:8]
        h2 = hashlib.sha256(h1).digest()
        hello = set(link.messages(r if role == b"Responder" else i, p.HELLO)).pop()
        assert hello[-8:] == hmac.new(h2, hello[:-8], hashlib.sha256).digest()[:8]
        assert hello[32:64] == hashlib.sha256(h2).digest()  # H3


def test_dh3k_is_always_accepted_even_when_not_configured() -> None:
    # We offer X255 only; the phone offers DH3k only. Our Hello implies DH3k (§5.2), so
    # whoever commits, DH3k is common and must be chosen.
    a, b = offer_answer(
        exchange(ZID_A, 1, key_agreements=("X255",)), exchange(ZID_B, 2, key_agreements=("DH3k",))
    )
    Link(a, b).run()
    assert_completed(a, b)
    assert a.zrtp_key_agreement == "DH3k"


# -- session 40: what the core reads of who the peer is, and what the gateway counts -------------


def test_an_exchange_proves_its_peer_only_where_the_peers_sdp_binds_its_hello() -> None:
    """``proves_peer`` (read by the core, docs/plugin_hooks.md): only an exchange that tells the
    peer from a stranger (§8.1: a readable a=zrtp-hash) is handed other sources' ZRTP beside a
    latch nothing proved. Without one, a stranger's Hello handed on would bind the exchange
    (session 39's relay did so beside a NAT'd phone's latch): the relay keeps to the latch."""
    bound, answerer = offer_answer()
    assert bound.proves_peer and answerer.proves_peer
    unbound = exchange(ZID_B, 2).answer(
        [("zrtp-hash", "1.10 unreadable")], suites=(), secure_signalling=False
    )
    assert unbound is not None and not unbound.proves_peer
    offered = exchange(ZID_A, 1).offer(suites=(), secure_signalling=False)
    assert not offered.proves_peer  # before the answer: nothing bound yet
    offered.remote_sdp_attributes([("zrtp-hash", "1.10 unreadable")])
    assert not offered.proves_peer


def test_without_a_binding_what_answers_the_hello_taken_is_not_copied_to_the_sdp_address() -> None:
    """``answers_only`` (docs/media_security.md, "Forged handshakes"): without a readable
    a=zrtp-hash the first Hello taken binds the exchange, maybe a stranger's that reached the
    port first. Our Hello goes to the SDP address too; our HelloACK, Commit, DHPart and
    Confirm answer that Hello only: copied, they reached the phone at the SDP address, which
    never sent it (its Hello's retransmissions stopped by our HelloACK, §6; our Commit's H2
    checks against our Hello's H3, §9). With a binding they answer the peer: copied, as
    before. After a restart our Hello goes to both again."""
    answerer = exchange(ZID_B, 2).answer([("zrtp-hash", "x")], suites=(), secure_signalling=False)
    assert answerer is not None
    hello_of(answerer)
    assert answerer.answers_only is False  # our Hello: to the SDP address too
    answerer.receive_packet_from(forged_hello(), source=STRANGER, now=0.0)
    assert answerer.answers_only is True
    answerer.restart_handshake(now=0.5)
    assert answerer.answers_only is False
    bound, _ = offer_answer()
    hello_of(bound)
    bound.receive_packet_from(forged_hello(), source=STRANGER, now=0.0)  # matches nothing
    assert bound.answers_only is False


def test_the_gateways_zrtp_totals_sum_every_exchanges_drops() -> None:
    """The metrics plugin's voipgw_zrtp_discarded_total and voipgw_zrtp_hello_mismatches_total
    (docs/metrics.md): each exchange's statistics() summed over every leg and stream of the
    gateway (the ZrtpKeyExchange's counters()), ended exchanges included."""
    gateway = exchange(ZID_A, 1)
    assert gateway.counters() == (("discarded", 0), ("hello_mismatches", 0))
    first, _ = offer_answer(gateway)
    second, _ = offer_answer(gateway)
    for negotiation in (first, second):
        hello_of(negotiation)
        negotiation.receive_packet_from(forged_hello(), source=STRANGER, now=0.0)
    first.receive_packet_from(b"\x10garbage", source=STRANGER, now=0.0)
    assert first.statistics().discarded == 2 and first.statistics().hello_mismatches == 1
    assert dict(gateway.counters()) == {"discarded": 3, "hello_mismatches": 2}
    other = exchange(ZID_B, 2)
    assert dict(other.counters()) == {"discarded": 0, "hello_mismatches": 0}
