"""LegSecurity with the media-path key exchanges when our one offer is answered by several
forked phones (RFC 3261 §16.7, §12.1.2): an answer refused before it is applied (a fork's 183
that the media session refuses, or one refused at another line) binds nothing, so another
fork's answer to the same offer is read on its own merits (docs/media_security.md, "Forked
SDES callees"). Sans-IO, the real DTLS and ZRTP engines."""

from __future__ import annotations

import datetime
import os

import pytest

from gateway.core.interfaces import KeysReady
from gateway.core.media.policy import BUILTIN_POLICIES
from gateway.core.media.security import LegSecurity, MediaSecurityRefused
from gateway.core.sdp.model import SessionDescription
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.plugins.keyexchange.dtls_certificates import generate_identity
from gateway.plugins.keyexchange.dtls_srtp import DtlsKeyExchange, DtlsNegotiation, LocalDtlsError
from gateway.plugins.keyexchange.sdes import SdesKeyExchange
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


def best_effort_leg() -> LegSecurity:
    """A best-effort B leg over TLS: RTP/AVP offering SDES's a=crypto beside ZRTP's
    a=zrtp-hash (RFC 8643), cleartext taken from a phone that can do neither."""
    return LegSecurity(
        side="b",
        policy=BUILTIN_POLICIES["best-effort"],
        secure_signalling=True,
        key_exchanges={
            "sdes": SdesKeyExchange(random_bytes=os.urandom),
            "zrtp": ZrtpKeyExchange(zid=lambda: bytes(range(12))),
        },
        signalling="tls",
    )


def sdes_phones_answer(offer: SessionDescription, *, port: int) -> SessionDescription:
    """A phone's answer taking our offer's SDES keys and giving its own (a gateway leg over
    TLS plays it), at ``port``."""
    phone = LegSecurity(
        side="a",
        policy=BUILTIN_POLICIES["sdes"],
        secure_signalling=True,
        key_exchanges={"sdes": SdesKeyExchange(random_bytes=os.urandom)},
        signalling="tls",
    )
    phone.take_offer(offer)
    answer = phone.make_answer(sdp(PLAIN.replace("m=audio 40000", f"m=audio {port}")))
    assert answer.media[0].crypto
    return answer


def in_clear(*, port: int) -> SessionDescription:
    return sdp(PLAIN.replace("m=audio 40000", f"m=audio {port}"))


def early_answer(security: LegSecurity, answer: SessionDescription) -> None:
    """An early answer (a 183's) taken as CallMediaKeys takes it: read, then applied."""
    security.apply_answer(security.read_answer(answer, final=False))


def test_another_phones_final_zrtp_answer_after_an_early_answer_in_clear_is_keyed_by_zrtp() -> None:
    """Best effort, a proxy downstream forks our offer: one phone's 183 answers in clear
    (taken: the early media is cleartext), then another phone's 200 with its a=zrtp-hash
    (``another_phone``): the line takes up the ZRTP exchange our offer made, bound to that
    phone's Hello hash (RFC 6189 §8.1), on the media path, no keys until it completes; the
    leg's record says zrtp. Before session 53 the early answer had dropped the offer's
    exchanges and the 200 was read as cleartext: a phone that speaks ZRTP, offered it,
    answering with it, and a call in clear."""
    security = zrtp_leg()
    security.make_offer(sdp(PLAIN))
    hashes, answers = zrtp_phones_answers(port=40002)
    early_answer(security, in_clear(port=40004))
    (stream,) = security.streams
    assert stream.negotiation is None and stream.key_exchange is None
    assert security.record()["streams"][0]["key_exchange"] == "none"

    security.apply_answer(security.read_answer(answers[1], another_phone=True))
    security.answer_confirmed()
    assert isinstance(stream.negotiation, ZrtpNegotiation) and stream.key_exchange == "zrtp"
    assert stream.negotiation.same_peer({hashes[1]}) and not stream.negotiation.same_peer(
        {hashes[0]}
    )
    assert security.media_path_streams() == {0: stream}
    assert security.keys(0) is None
    assert security.record()["streams"][0]["key_exchange"] == "zrtp"
    assert stream.declined == []  # the offer's negotiations are not kept past it


def test_the_same_phones_final_answer_in_clear_keeps_the_line_in_clear() -> None:
    """The early phone's own 200 in clear leaves the line as it was, and nothing of the
    offer's exchanges is kept after it."""
    security = zrtp_leg()
    security.make_offer(sdp(PLAIN))
    early_answer(security, in_clear(port=40004))
    (stream,) = security.streams
    assert [name for name, _ in stream.declined] == ["zrtp"]
    security.take_answer(in_clear(port=40004))
    assert stream.negotiation is None and stream.declined == []
    assert security.media_path_streams() == {}


def test_another_phones_final_sdes_answer_after_an_early_answer_in_clear_is_keyed_by_sdes() -> None:
    """The same with SDES (our offer's a=crypto beside a=zrtp-hash): the 200's a=crypto keys
    the line with that phone's key and ours as offered."""
    security = best_effort_leg()
    offer = security.make_offer(sdp(PLAIN))
    assert offer.media[0].proto == "RTP/AVP" and offer.media[0].crypto
    assert offer.media[0].attributes.has("zrtp-hash")
    early_answer(security, in_clear(port=40004))
    assert security.keys(0) is None
    answer = sdes_phones_answer(offer, port=40002)

    security.apply_answer(security.read_answer(answer, another_phone=True))
    security.answer_confirmed()
    (stream,) = security.streams
    assert stream.key_exchange == "sdes" and not stream.media_path
    keys = security.keys(0)
    assert keys is not None
    assert security.record()["streams"][0]["key_exchange"] == "sdes"
    assert security.record()["streams"][0]["encrypted"] is True


def test_another_phones_final_answer_in_clear_after_a_keyed_early_answer_drops_its_keys() -> None:
    """The other way round: one phone's 183 with a=crypto keys the early media, then another
    phone answers 200 in clear. The line is cleartext and holds no key: before session 53 the
    early phone's keys stayed in force, the relay protecting for a phone that sends and
    expects RTP (a call up, no audio either way, and a record saying cleartext)."""
    security = best_effort_leg()
    offer = security.make_offer(sdp(PLAIN))
    early_answer(security, sdes_phones_answer(offer, port=40002))
    assert security.keys(0) is not None

    security.apply_answer(security.read_answer(in_clear(port=40004), another_phone=True))
    security.answer_confirmed()
    (stream,) = security.streams
    assert stream.negotiation is None
    assert security.keys(0) is None and security.rtcp_keys(0) is None
    assert security.record()["streams"][0]["encrypted"] is False


def test_the_same_dialogs_final_answer_with_zrtp_after_its_early_answer_in_clear_is_keyed() -> None:
    """A PBX's 183 in clear (its own media server's early media), then its 200 with its
    phone's a=zrtp-hash in the same dialog (RFC 3261 §13.2.1 wants the two answers the same;
    the 2xx's is the one the phone uses): the line takes up the exchange our offer made,
    bound to that Hello hash. Before session 53 the line stayed in clear, with a phone that
    speaks ZRTP answering with it."""
    security = zrtp_leg()
    security.make_offer(sdp(PLAIN))
    hashes, answers = zrtp_phones_answers(port=40002)
    early_answer(security, in_clear(port=40004))
    (stream,) = security.streams
    declined = stream.declined[0][1]
    security.take_answer(answers[0])
    assert stream.negotiation is declined and stream.key_exchange == "zrtp"
    assert isinstance(declined, ZrtpNegotiation) and declined.same_peer({hashes[0]})
    assert security.media_path_streams() == {0: stream}


def test_an_early_answer_with_keys_after_one_in_clear_is_refused() -> None:
    """Only the final answer takes up what an early answer in clear declined: a second 183
    (another phone's, or the same dialog's) with keys is refused, so ignored (the early
    media stays in clear), as another fork's 183 leaves the early media with the first
    phone's keys. Read as cleartext, its phone's SRTP would reach the caller as RTP. The
    final answer still takes the keys up; a second 183 in clear is taken as before."""
    security = best_effort_leg()
    offer = security.make_offer(sdp(PLAIN))
    early_answer(security, in_clear(port=40004))
    with pytest.raises(MediaSecurityRefused, match="the keys are taken from the final answer"):
        early_answer(security, sdes_phones_answer(offer, port=40002))
    (stream,) = security.streams
    assert stream.negotiation is None and security.keys(0) is None
    assert sorted(name for name, _ in stream.declined) == ["sdes", "zrtp"]
    early_answer(security, in_clear(port=40006))
    security.take_answer(sdes_phones_answer(offer, port=40002))
    assert stream.key_exchange == "sdes" and security.keys(0) is not None
    assert stream.declined == []


def test_a_re_offer_answered_in_clear_drops_the_keys_the_line_had() -> None:
    """Best effort, no fork: a line keyed by SDES, then our re-offer (a hold relayed, say)
    answered in clear (the peer's device behind a PBX changed to one without SRTP, RFC 8643
    lets an answer decline the keys). The line holds no key from then on: before session 53
    the keys of the first answer stayed in force, the relay protecting for a peer that now
    sends and expects RTP."""
    security = best_effort_leg()
    offer = security.make_offer(sdp(PLAIN))
    security.take_answer(sdes_phones_answer(offer, port=40002))
    assert security.keys(0) is not None
    assert security.make_offer(sdp(PLAIN)).media[0].crypto  # still offered
    security.take_answer(in_clear(port=40002))
    assert security.keys(0) is None and security.rtcp_keys(0) is None
    assert security.record()["streams"][0]["encrypted"] is False


def test_the_early_phones_200_after_another_phones_183_in_clear_has_its_keys_again() -> None:
    """Phone 1's 183 keys the early media (SDES), phone 2's 183 in clear takes it over (the
    latest early answer, cleartext), then phone 1 answers 200 repeating its 183: the line has
    phone 1's keys again. Its SDES negotiation reports nothing anew for a repeated answer, so
    before this the line was taken keyless (SDES, no key: nothing relayed). Another phone's
    200 with a key of its own gets that key, not phone 1's."""
    security = best_effort_leg()
    offer = security.make_offer(sdp(PLAIN))
    phone1 = sdes_phones_answer(offer, port=40002)
    early_answer(security, phone1)
    phone1_keys = security.keys(0)
    assert phone1_keys is not None
    early_answer(security, in_clear(port=40004))
    assert security.keys(0) is None
    security.apply_answer(security.read_answer(phone1, another_phone=True))
    assert security.keys(0) == phone1_keys
    (stream,) = security.streams
    assert stream.declined == [] and stream.declined_keys is None

    security = best_effort_leg()
    offer = security.make_offer(sdp(PLAIN))
    early_answer(security, sdes_phones_answer(offer, port=40002))
    phone1_keys = security.keys(0)
    early_answer(security, in_clear(port=40004))
    security.apply_answer(
        security.read_answer(sdes_phones_answer(offer, port=40006), another_phone=True)
    )
    keys = security.keys(0)
    assert keys is not None and phone1_keys is not None
    assert keys.remote_key != phone1_keys.remote_key  # phone 3's own key
