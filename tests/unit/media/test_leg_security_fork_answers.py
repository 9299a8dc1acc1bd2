"""LegSecurity with the media-path key exchanges when our one offer is answered by several
forked phones (RFC 3261 §16.7, §12.1.2): an answer refused before it is applied (a fork's 183
that the media session refuses, or one refused at another line) binds nothing, so another
fork's answer to the same offer is read on its own merits (docs/media_security.md, "Forked
SDES callees"). Sans-IO, the real DTLS and ZRTP engines."""

from __future__ import annotations

import datetime

import pytest

from gateway.core.interfaces import KeysReady
from gateway.core.media.policy import BUILTIN_POLICIES
from gateway.core.media.security import LegSecurity, MediaSecurityRefused
from gateway.core.sdp.model import SessionDescription
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.plugins.keyexchange.dtls_certificates import generate_identity
from gateway.plugins.keyexchange.dtls_srtp import DtlsKeyExchange, DtlsNegotiation, LocalDtlsError
from gateway.plugins.keyexchange.zrtp import ZrtpKeyExchange
from gateway.plugins.keyexchange.zrtp.engine import ZrtpNegotiation

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
MONTH = datetime.timedelta(days=30)
GATEWAY_ID = generate_identity(now=NOW, max_age=MONTH)
PHONE_IDS = [generate_identity(now=NOW, max_age=MONTH) for _ in range(2)]

PLAIN = """v=0
o=- 1 1 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio 40000 RTP/AVP 0
a=rtpmap:0 PCMU/8000
a=rtcp-mux
a=sendrecv
"""


def sdp(text: str) -> SessionDescription:
    return parse_sdp_untrusted(text.replace("\n", "\r\n").encode())


def dtls_leg() -> LegSecurity:
    return LegSecurity(
        side="b",
        policy=BUILTIN_POLICIES["dtls"],
        secure_signalling=False,
        key_exchanges={"dtls": DtlsKeyExchange(identity=lambda: GATEWAY_ID)},
        signalling="udp",
    )


def dtls_phones(offer: SessionDescription) -> list[DtlsNegotiation]:
    """Two forked phones' answering negotiations, each with its own certificate."""
    attributes = [(a.name, a.value) for a in offer.media[0].attributes]
    phones = []
    for identity in PHONE_IDS:
        phone = DtlsKeyExchange(identity=lambda identity=identity: identity).answer(
            attributes, suites=[], secure_signalling=False
        )
        assert phone is not None
        phones.append(phone)
    return phones


def dtls_answer(phone: DtlsNegotiation, *, fingerprint: str | None = None) -> SessionDescription:
    ours = dict(phone.local_sdp_attributes())
    return sdp(
        "v=0\no=- 1 1 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\n"
        "m=audio 20000 UDP/TLS/RTP/SAVP 0\na=rtpmap:0 PCMU/8000\na=rtcp-mux\n"
        f"a=fingerprint:{fingerprint or ours['fingerprint']}\na=setup:{ours['setup']}\n"
        f"a=tls-id:{ours['tls-id']}\na=sendrecv\n"
    )


def zrtp_leg() -> LegSecurity:
    return LegSecurity(
        side="b",
        policy=BUILTIN_POLICIES["best-effort"],
        secure_signalling=False,
        key_exchanges={"zrtp": ZrtpKeyExchange(zid=lambda: bytes(range(12)))},
        signalling="udp",
    )


def zrtp_phones_answers(*, port: int) -> tuple[list[bytes], list[SessionDescription]]:
    """Two forked ZRTP phones' Hello hashes and their answers at ``port``, each with its own
    a=zrtp-hash (RFC 6189 §8.1)."""
    hashes, answers = [], []
    for zid in (b"\x01" * 12, b"\x02" * 12):
        phone = ZrtpKeyExchange(zid=lambda zid=zid: zid).offer(suites=(), secure_signalling=False)
        ((_, value),) = phone.local_sdp_attributes()
        assert value is not None
        hashes.append(bytes.fromhex(value.split()[1]))
        answers.append(
            sdp(PLAIN.replace("m=audio 40000", f"m=audio {port}") + f"a=zrtp-hash:{value}\n")
        )
    return hashes, answers


def drive(gateway: LegSecurity, phone: DtlsNegotiation) -> None:
    """Datagrams both ways as the call's handshake task moves them; KeysReady into the stream."""
    for _ in range(20):
        (stream,) = gateway.media_path_streams().values()
        negotiation = stream.negotiation
        assert negotiation is not None
        moved = False
        for datagram in negotiation.packets_to_send(now=0.0):
            phone.receive_packet(datagram, now=0.0)
            moved = True
        for datagram in phone.packets_to_send(now=0.0):
            negotiation.receive_packet(datagram, now=0.0)
            moved = True
        while (event := negotiation.next_event()) is not None:
            if isinstance(event, KeysReady):
                stream.keys = event.keys
        if not moved:
            return


def test_a_forks_answer_refused_after_it_was_read_binds_no_dtls_parameters() -> None:
    """Fork 2's 183 is read, then refused by the next step (the media session: CallMediaKeys
    reads, the session refuses, nothing is applied). Fork 1's 200, another certificate, is
    taken and its handshake keys the leg. Before session 46 fork 2's read had bound the
    line's DTLS negotiation to its fingerprint: fork 1's answer failed with "a second answer
    changes the DTLS parameters", 488 to the caller, BYE to the phone that answered."""
    security = dtls_leg()
    phones = dtls_phones(security.make_offer(sdp(PLAIN)))
    security.read_answer(dtls_answer(phones[1]))  # never applied
    security.take_answer(dtls_answer(phones[0]))
    drive(security, phones[0])
    assert security.keys(0) is not None
    assert phones[0].keys is not None and phones[0].keys.remote_key == security.keys(0).local_key


def test_a_forks_answer_refused_for_its_fingerprint_binds_nothing() -> None:
    """Fork 2's 183 names its fingerprint with a hash function the engine does not take: it is
    refused saying why, and the negotiation stays as it was (not failed) for fork 1's 200."""
    security = dtls_leg()
    phones = dtls_phones(security.make_offer(sdp(PLAIN)))
    with pytest.raises(MediaSecurityRefused, match="the answer's keys are unusable"):
        security.take_answer(dtls_answer(phones[1], fingerprint="md2 00:11"))
    security.take_answer(dtls_answer(phones[0]))
    drive(security, phones[0])
    assert security.keys(0) is not None


def test_a_taken_early_answer_then_another_forks_certificate_is_still_refused() -> None:
    """A fork's early answer TAKEN (its early media keyed by its handshake), then another
    fork's early answer (a 183: not ``another_phone``, which only a final answer is) with
    another certificate: refused ("a second answer changes the DTLS parameters",
    docs/media_security.md "Forked callees"); the early media stays with the first phone.
    That refusal binds nothing either: the early fork's negotiation goes on, not failed."""
    security = dtls_leg()
    phones = dtls_phones(security.make_offer(sdp(PLAIN)))
    security.take_answer(dtls_answer(phones[0]))
    with pytest.raises(MediaSecurityRefused, match="a second answer changes the DTLS"):
        security.take_answer(dtls_answer(phones[1]))
    drive(security, phones[0])
    assert security.keys(0) is not None


def test_another_phones_final_answer_after_a_taken_early_one_gets_a_fresh_dtls_negotiation() -> (
    None
):
    """A fork's early answer taken and keyed by its handshake, then another phone's 2xx
    (``another_phone``: another early dialog's final answer): the line gets a fresh
    negotiation of the same offer (our certificate, a=setup, a=tls-id as offered), no keys
    until its own handshake, which keys the leg with that phone's keys, not the early
    phone's. Before session 51 that answer was refused ("a second answer changes the DTLS
    parameters")."""
    security = dtls_leg()
    phones = dtls_phones(security.make_offer(sdp(PLAIN)))
    security.take_answer(dtls_answer(phones[0]))
    drive(security, phones[0])
    early_keys = security.keys(0)
    assert early_keys is not None
    (stream,) = security.streams
    early = stream.negotiation
    assert early is not None

    read = security.read_answer(dtls_answer(phones[1]), another_phone=True)
    assert stream.negotiation is early and security.keys(0) == early_keys  # read, not applied
    security.apply_answer(read)
    fresh = stream.negotiation
    assert isinstance(fresh, DtlsNegotiation) and fresh is not early
    assert fresh.local_sdp_attributes() == early.local_sdp_attributes()
    assert security.keys(0) is None and stream.rtcp_keys is None
    drive(security, phones[1])
    keys = security.keys(0)
    assert keys is not None and keys != early_keys
    assert phones[1].keys is not None and phones[1].keys.remote_key == keys.local_key
    assert fresh.peer_certificate_sha256 == PHONE_IDS[1].sha256_hex()


def test_a_fresh_dtls_negotiation_for_another_phone_is_an_offerers_only() -> None:
    """An answering negotiation (the peer's offer taken) has no offer for another phone."""
    security = dtls_leg()
    (phone, _) = dtls_phones(security.make_offer(sdp(PLAIN)))
    with pytest.raises(LocalDtlsError, match="only an offering DTLS negotiation"):
        phone.for_another_phone()


def test_a_forks_answer_refused_after_it_was_read_binds_no_zrtp_hello_hash() -> None:
    """ZRTP binds the peer's Hello to the answer's a=zrtp-hash (RFC 6189 §8.1): fork 2's 183,
    read then refused, must not bind its hash, or fork 1's Hello (the phone that answered)
    would not match it. Before session 46 the read bound it, and fork 1's 200 (a "repeated
    answer" to the engine) left it bound."""
    security = zrtp_leg()
    offer = security.make_offer(sdp(PLAIN))
    hashes, answers = zrtp_phones_answers(port=offer.media[0].port + 2)
    security.read_answer(answers[1])  # never applied
    security.take_answer(answers[0])
    (stream,) = security.streams
    assert isinstance(stream.negotiation, ZrtpNegotiation)
    assert stream.negotiation.same_peer({hashes[0]})
    assert not stream.negotiation.same_peer({hashes[1]})


def test_another_phones_final_answer_gets_a_fresh_zrtp_exchange_with_the_offered_hello() -> None:
    """A fork's early answer taken (its a=zrtp-hash bound, RFC 6189 §8.1), then another phone's
    2xx (``another_phone``): the line gets a fresh exchange, bound to the answering phone's
    Hello hash, whose Hello is the one our offer's a=zrtp-hash names (a new one would not
    match it), and whose leg session is not the early exchange's. Before session 51 the 2xx
    was "a repeated answer" to the early exchange, bound to the early phone's Hello."""
    security = zrtp_leg()
    security.make_offer(sdp(PLAIN))
    hashes, answers = zrtp_phones_answers(port=40000)
    security.take_answer(answers[0])
    (stream,) = security.streams
    early = stream.negotiation
    assert isinstance(early, ZrtpNegotiation) and early.same_peer({hashes[0]})

    security.apply_answer(security.read_answer(answers[1], another_phone=True))
    fresh = stream.negotiation
    assert isinstance(fresh, ZrtpNegotiation) and fresh is not early
    assert fresh.local_sdp_attributes() == early.local_sdp_attributes()
    assert fresh.same_peer({hashes[1]}) and not fresh.same_peer({hashes[0]})
    assert early.same_peer({hashes[0]})  # the early exchange is as it was, never driven again
    assert fresh._session is not early._session
    assert security.keys(0) is None
