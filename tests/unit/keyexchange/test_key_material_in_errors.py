"""No key material in what a key-exchange plugin raises or reports. A plugin's exception ends
up in the call's ERROR line with its traceback (the core wraps anything but SdpError in
security.KeyExchangeFailed ``from`` it, and every chained exception's text is printed), an
SdpError's reason goes into a 488's Warning and the call record, a NegotiationFailed's into
the record. So for malformed peer input built around real keys (SDES inline keys, MIKEY
messages in each mode, ZRTP packets): neither the full formatted chain nor any reason may show
any 6 octets of a key or of the message that carries it, in hex, base64 or escaped bytes.
DTLS-SRTP puts no key in SDP (a fingerprint is public) and says why a handshake failed in
OpenSSL's fixed reason text only (dtls_srtp._openssl_reason): nothing to feed it here."""

from __future__ import annotations

import base64
import os
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from gateway.core.interfaces import NegotiationFailed
from gateway.core.media.security import KeyExchangeFailed
from gateway.plugins.keyexchange.mikey.engine import keymgmt_value
from gateway.plugins.keyexchange.sdes import SdesKeyExchange, parse_crypto_untrusted
from gateway.plugins.keyexchange.zrtp import packets as p
from tests.unit.keyexchange.key_material_checks import assert_hidden
from tests.unit.keyexchange.mikey_exchanges import (
    ALICE,
    CARRIER,
    PSK,
    events,
    exchange,
    message,
)
from tests.unit.keyexchange.zrtp_vectors import (
    MAC_KEY_I,
    MAC_KEY_R,
    PACKETS,
    ZRTP_KEY_I,
    ZRTP_KEY_R,
)


def chain(exc: Exception) -> str:
    """What the ERROR line shows for ``exc`` raised by a plugin: KeyExchangeFailed's
    traceback with every exception chained to it, their texts included."""
    try:
        raise KeyExchangeFailed("plugin", exc) from exc
    except KeyExchangeFailed as wrapped:
        return "".join(traceback.format_exception(wrapped))


def reasons_and_errors(step: Callable[..., object], *args: object, **kwargs: object) -> list[str]:
    """The chain of what ``step(*args, **kwargs)`` raised, or the reasons of the
    NegotiationFailed queued by the negotiation it returned."""
    try:
        made = step(*args, **kwargs)
    except Exception as exc:
        return [chain(exc)]
    return failures(made) if hasattr(made, "next_event") else []


def failures(negotiation: Any) -> list[str]:
    return [e.reason for e in events(negotiation) if isinstance(e, NegotiationFailed)]


def mutations(valid: bytes) -> Iterator[bytes]:
    """Every truncation of ``valid`` and every one-octet change of it."""
    for cut in range(len(valid)):
        yield valid[:cut]
    for at in range(len(valid)):
        yield valid[:at] + bytes([valid[at] ^ 0xFF]) + valid[at + 1 :]


# -- SDES (RFC 4568): the key is in the a=crypto line --------------------------------------

KEY = bytes(range(0xA0, 0xBE))  # 30 octets: AES_CM_128 key and salt
INLINE = base64.b64encode(KEY).decode("ascii")
SUITE = "AES_CM_128_HMAC_SHA1_80"
VALID_LINE = f"1 {SUITE} inline:{INLINE}"
BAD_LINES = [
    f"1 {SUITE} inline:{INLINE}|2^20|1:4;inline:{INLINE}|2:4",  # two keys with MKIs
    f"1 {SUITE} inline:{INLINE}|2^99",
    f"1 {SUITE} inline:{INLINE}|1:4|2^20",
    f"1 {SUITE} inline:{INLINE[:-1]}",
    f"1 {SUITE} inline:{INLINE}A",
    f"1 {SUITE} inline:{INLINE}==",
    f"1 {SUITE} inline:{INLINE[:10]}!{INLINE[11:]}",
    f"1 AES_256_CM_HMAC_SHA1_80 inline:{INLINE}",  # the wrong length for the suite
    f"1 NO_SUCH_SUITE inline:{INLINE}",
    f"1 {SUITE} inline:{INLINE} KDR=x",
    f"1 {SUITE} inline:{INLINE} KDR=1 KDR=1",
    f"1 {SUITE} inline:{INLINE} WSH=1",
    f"1 {SUITE} inline:{INLINE} UNENCRYPTED_SRTP=1",
    f"1 {SUITE} inline:{INLINE} FEC_KEY=inline:{INLINE}|x|y|z",
    f"1 {SUITE} inline:{INLINE};inline:{INLINE}",
    f"1 {SUITE} inline:{INLINE}\x00",
    f"x {SUITE} inline:{INLINE}",
    f"1 {SUITE} uri:{INLINE}",
    f"1 {SUITE} inline:{INLINE} {'A' * 5000}",
]


def sdes_lines() -> Iterator[str]:
    yield from BAD_LINES
    for mutated in mutations(VALID_LINE.encode("ascii")):
        yield mutated.decode("latin-1")


def test_sdes_never_shows_an_inline_key_it_refuses() -> None:
    sdes = SdesKeyExchange(random_bytes=os.urandom)
    texts: list[str] = []
    for value in sdes_lines():
        attributes = [("crypto", value)]
        texts += reasons_and_errors(parse_crypto_untrusted, value)
        # As an offer we answer, and as the answer to our offer (whose line 1 is this suite).
        texts += reasons_and_errors(sdes.answer, attributes, suites=[SUITE], secure_signalling=True)
        offer = sdes.offer(suites=[SUITE], secure_signalling=True)
        texts += reasons_and_errors(offer.remote_sdp_attributes, attributes)
        texts += failures(offer)
    assert any("inline key" in text for text in texts)  # the refusals were reached
    assert_hidden(texts, [KEY])


# -- MIKEY (RFC 3830, RFC 4567): the keys travel in the message, encrypted or not ----------


@pytest.mark.parametrize("mode", ["null", "psk", "dh-hmac"])
def test_mikey_never_shows_its_keys_or_the_message_it_refuses(mode: str) -> None:
    offer = exchange(1, offer_modes=(mode,)).offer(suites=[], secure_signalling=True, leg=ALICE)
    valid = message(offer)
    texts: list[str] = []
    for mutated in mutations(valid):
        texts += reasons_and_errors(
            exchange(2).answer,
            [("key-mgmt", keymgmt_value(mutated))],
            suites=[],
            secure_signalling=True,
            leg=CARRIER,
        )
    assert any("MIKEY" in text for text in texts)
    # The pre-shared key, and the message (with the TGK in the clear in the NULL mode).
    assert_hidden(texts, [PSK, valid])


def test_mikey_never_shows_the_answer_it_refuses() -> None:
    texts: list[str] = []
    offerer = exchange(1, offer_modes=("psk",))
    first = offerer.offer(suites=[], secure_signalling=True, leg=ALICE)
    answered = exchange(2).answer(
        first.local_sdp_attributes(), suites=[], secure_signalling=True, leg=CARRIER
    )
    assert answered is not None
    valid = message(answered)
    for mutated in list(mutations(valid))[::3]:  # a third of them: each needs a fresh offer
        offer = offerer.offer(suites=[], secure_signalling=True, leg=ALICE)
        attributes = [("key-mgmt", keymgmt_value(mutated))]
        texts += reasons_and_errors(offer.remote_sdp_attributes, attributes)
        texts += failures(offer)
    assert any("MIKEY" in text for text in texts)
    assert_hidden(texts, [PSK, valid])


# -- ZRTP (RFC 6189): keys are agreed in the media path; its packets carry hash images --------

PARSERS: list[Callable[[bytes, bytes], object]] = [
    lambda raw, _: p.parse_hello_untrusted(raw),
    lambda raw, _: p.parse_commit_untrusted(raw),
    p.parse_dh_part_untrusted,
    p.parse_confirm_untrusted,
    lambda raw, _: p.parse_error_untrusted(raw),
    lambda raw, _: p.parse_ping_untrusted(raw),
]


@pytest.mark.parametrize("valid", PACKETS, ids=range(len(PACKETS)))
def test_zrtp_never_shows_the_packet_it_refuses(valid: bytes) -> None:
    texts: list[str] = []
    message_type = p.parse_packet_untrusted(valid).message_type
    header = valid[:12]
    for mutated in mutations(valid[12:-4]):
        # Framed again with a good CRC: a bad one is all a change would meet otherwise.
        framed = header + mutated + p.crc32c(header + mutated).to_bytes(4, "little")
        texts += reasons_and_errors(p.parse_packet_untrusted, framed)
        for parse in PARSERS:
            texts += reasons_and_errors(parse, mutated, message_type)
    assert texts
    assert_hidden(texts, [valid, MAC_KEY_I, MAC_KEY_R, ZRTP_KEY_I, ZRTP_KEY_R])
