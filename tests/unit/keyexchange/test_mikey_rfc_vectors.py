"""MIKEY known-answer checks against RFC 3830 (and RFC 4650 for DH-HMAC) written out by hand.

Every expected value here comes from the RFC's formulas computed in this file: the messages are
assembled byte by byte from the §6 layouts (never with ``encode_message``), the keys with a
reference MIKEY-1 PRF (§4.1.2) and the labels of §4.1.3/§4.1.4, the KEMAC with AES in counter
mode and the IV of §4.2.3, the MACs with HMAC-SHA-1 over the bytes §5.2 names. The gateway's
exchange is then fed those bytes (or made to produce its own) and must agree to the octet.
RFC 3830 gives no test vectors of its own, so these are the closest thing: any change to a
constant, a label's layout, a length or what a MAC covers fails here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from gateway.core.interfaces import KeysReady, LegInfo, NegotiationFailed
from gateway.plugins.keyexchange.mikey import MikeyKeyExchange
from gateway.plugins.keyexchange.mikey.crypto import DH_GROUPS
from gateway.plugins.keyexchange.mikey.engine import MikeyNegotiation, MikeySettings
from gateway.plugins.keyexchange.mikey.psk import PskStore

NOW = 1_800_000_000.0
PSK = bytes(range(0x40, 0x60))
CSB = bytes.fromhex("a1b2c3d4")
RAND = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
TGK = bytes(range(0x80, 0xA0))
ALICE = LegInfo(call_id="v1", side="a", kind="account", name="alice", secure_signalling=False)

# RFC 3830 §4.1.3 (from the TGK) and §4.1.4 (from the pre-shared key) constants.
TEK, SALT = bytes.fromhex("2ad01c64"), bytes.fromhex("39a2c14b")
KEMAC_ENCR, KEMAC_AUTH = bytes.fromhex("150533e1"), bytes.fromhex("2d22ac75")
KEMAC_SALT = bytes.fromhex("29b88916")

# The AES_CM_128_HMAC_SHA1_80 policy, every §6.10.1 parameter spelled out (type, length, value).
SP_80 = bytes.fromhex("00010101011002010103011404010e050100060400000000")
SP_80 += bytes.fromhex("0701010801010901000a01010b010a0c0100")


def hmac_sha1(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha1).digest()


def mikey_prf(inkey: bytes, label: bytes, octets: int) -> bytes:
    """§4.1.2: inkey cut into 256-bit pieces s_1..s_n; each gives P(s, label, m) =
    HMAC(s, A_1 || label) || ... || HMAC(s, A_m || label), A_0 = label, A_i = HMAC(s, A_i-1),
    m = ceil(outkey bits / 160); the P's XORed and cut to the output length."""
    m = -(-octets * 8 // 160)
    out = bytearray(20 * m)
    for start in range(0, len(inkey), 32):
        s = inkey[start : start + 32]
        a, p = label, b""
        for _ in range(m):
            a = hmac_sha1(s, a)
            p += hmac_sha1(s, a + label)
        out = bytearray(x ^ y for x, y in zip(out, p, strict=True))
    return bytes(out[:octets])


def srtp_master(tgk: bytes, cs_id: int, key_octets: int = 16, salt_octets: int = 14) -> bytes:
    """§4.1.3: TEK and salting key of crypto session cs_id; label constant || cs_id || CSB ID
    || RAND. SRTP's master key || master salt."""
    tail = bytes([cs_id]) + CSB + RAND
    return mikey_prf(tgk, TEK + tail, key_octets) + mikey_prf(tgk, SALT + tail, salt_octets)


def kemac_keys() -> tuple[bytes, bytes, bytes]:
    """§4.1.4: encr_key (128 bits), auth_key (160 bits), salt (112 bits); cs_id octet 0xFF."""
    tail = b"\xff" + CSB + RAND
    return (
        mikey_prf(PSK, KEMAC_ENCR + tail, 16),
        mikey_prf(PSK, KEMAC_AUTH + tail, 20),
        mikey_prf(PSK, KEMAC_SALT + tail, 14),
    )


def aes_cm(key: bytes, salt: bytes, timestamp: bytes, data: bytes) -> bytes:
    """§4.2.3: IV = (S XOR (0x0000 || CSB ID || T)) || 0x0000."""
    mixed = bytes(2) + CSB + timestamp
    iv = bytes(a ^ b for a, b in zip(salt, mixed, strict=True)) + bytes(2)
    encryptor = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
    return encryptor.update(data) + encryptor.finalize()


def ntp(unix_time: float) -> bytes:
    """§6.6 NTP-UTC: 32-bit seconds since 1900 || 32-bit fraction."""
    seconds = int(unix_time) + 70 * 365 * 86400 + 17 * 86400  # 1900 -> 1970: 17 leap days
    return struct.pack("!II", seconds, int((unix_time % 1) * 2**32))


def answerer(**settings: object) -> MikeyKeyExchange:
    return MikeyKeyExchange(
        settings=MikeySettings(**settings),  # type: ignore[arg-type]
        psks=PskStore({("account", "alice"): PSK}),
        clock=lambda: NOW,
        random_bytes=lambda n: bytes((0x31 + 7 * i) & 0xFF for i in range(n)),
    )


def answer(message: bytes, *, tls: bool = False, **settings: object) -> MikeyNegotiation:
    value = "mikey " + base64.b64encode(message).decode("ascii")
    negotiation = answerer(**settings).answer(
        [("key-mgmt", value)], suites=(), secure_signalling=tls, leg=ALICE
    )
    assert negotiation is not None
    return negotiation


def only_event(negotiation: MikeyNegotiation) -> object:
    event = negotiation.next_event()
    assert negotiation.next_event() is None
    return event


def answer_message(negotiation: MikeyNegotiation) -> bytes:
    ((name, value),) = negotiation.local_sdp_attributes()
    assert name == "key-mgmt" and value is not None and value.startswith("mikey ")
    return base64.b64decode(value[6:])


def psk_offer(*, v: bool = True, rand: bytes = RAND, roc: int = 0, ssrc: int = 0x11223344) -> bytes:
    """A PSK I_MSG (§3.1: HDR, T, RAND, SP, KEMAC) with an AES-CM-128 KEMAC holding one TGK and
    an HMAC-SHA-1-160 MAC, one crypto session, assembled from the §6 layouts."""
    stamp = ntp(NOW)
    hdr = bytes([1, 0, 5, (0x80 if v else 0) | 0]) + CSB + bytes([1, 0])  # ver, PSK, ->T, V|PRF
    hdr += b"\x00" + struct.pack("!II", ssrc, roc)  # §6.1.1: policy 0, SSRC, ROC
    t = bytes([11, 0]) + stamp  # -> RAND, NTP-UTC
    r = bytes([10, len(rand)]) + rand  # -> SP
    sp = bytes([1, 0, 0]) + len(SP_80).to_bytes(2, "big") + SP_80  # -> KEMAC, policy 0, SRTP
    key_data = bytes([0, 0x00]) + len(TGK).to_bytes(2, "big") + TGK  # last, TGK | KV NULL
    encr_key, auth_key, salt = kemac_keys()
    encrypted = aes_cm(encr_key, salt, stamp, key_data)
    kemac = bytes([0, 1]) + len(encrypted).to_bytes(2, "big") + encrypted + b"\x01"
    unsigned = hdr + t + r + sp + kemac
    return unsigned + hmac_sha1(auth_key, unsigned)  # §5.2: MAC over all up to the MAC


def test_a_psk_offer_built_from_the_rfc_gives_the_rfcs_srtp_keys() -> None:
    negotiation = answer(psk_offer())
    event = only_event(negotiation)
    assert isinstance(event, KeysReady), event
    master = srtp_master(TGK, 1)  # one crypto session keys both directions
    assert event.keys.suite == "AES_CM_128_HMAC_SHA1_80"
    assert (event.keys.local_key, event.keys.remote_key) == (master, master)


def test_the_verification_message_is_hdr_t_v_with_the_mac_over_it_and_the_offers_t() -> None:
    reply = answer_message(answer(psk_offer()))
    _, auth_key, _ = kemac_keys()
    hdr = bytes([1, 1, 5, 0]) + CSB + bytes([1, 0, 0]) + struct.pack("!II", 0x11223344, 0)
    t = bytes([9, 0]) + ntp(NOW)  # -> V, NTP-UTC
    v = bytes([0, 1])  # last, HMAC-SHA-1-160
    unsigned = hdr + t + v
    # The V MAC covers the response up to the MAC, then the T value of the I_MSG: the reading
    # of §5.2 that minisip implements (the identities are not added: see docs/media_security).
    assert reply == unsigned + hmac_sha1(auth_key, unsigned + ntp(NOW))


def test_no_verification_message_when_the_offer_leaves_v_clear() -> None:
    negotiation = answer(psk_offer(v=False))
    assert isinstance(only_event(negotiation), KeysReady)
    assert negotiation.local_sdp_attributes() == []


def test_the_mac_covers_every_octet_before_it() -> None:
    offer = psk_offer()
    for index in (3, 9, 20, len(offer) - 21):  # V bit, CS map, RAND, the MAC algorithm
        mangled = bytearray(offer)
        mangled[index] ^= 0x01
        event = only_event(answer(bytes(mangled)))
        assert isinstance(event, NegotiationFailed), index
        assert event.sip_status == 488


def test_a_rand_shorter_than_128_bits_is_refused() -> None:
    event = only_event(answer(psk_offer(rand=RAND[:15])))
    assert isinstance(event, NegotiationFailed)
    assert event.sip_status == 488
    assert "RAND is 15 octets" in event.reason and "6.11" in event.reason


def test_a_crypto_session_past_a_rollover_is_refused_not_keyed_at_roc_0() -> None:
    event = only_event(answer(psk_offer(roc=3)))
    assert isinstance(event, NegotiationFailed)
    assert event.sip_status == 488
    assert "rollover counter 3" in event.reason


def test_our_psk_offer_decodes_by_the_rfc_layouts_to_the_keys_we_use() -> None:
    offerer = MikeyKeyExchange(
        settings=MikeySettings(offer_modes=("psk",), kemac_encryption=1),
        psks=PskStore({("account", "alice"): PSK}),
        clock=lambda: NOW + 0.5,
        random_bytes=lambda n: {4: CSB, 16: RAND, 32: TGK}[n],
    )
    negotiation = offerer.offer(suites=(), secure_signalling=False, leg=ALICE)
    ((_, value),) = negotiation.local_sdp_attributes()
    assert value is not None
    offer = base64.b64decode(value.split(" ", 1)[1])
    stamp = ntp(NOW + 0.5)
    assert stamp[4:] == b"\x80\x00\x00\x00"  # half a second
    # HDR: version 1, PSK init, next T, V set, PRF MIKEY-1; CSB ID; 2 crypto sessions, SRTP-ID
    # map of (policy 0, SSRC 0, ROC 0) each (§6.1, §6.1.1).
    hdr = bytes([1, 0, 5, 0x80]) + CSB + bytes([2, 0]) + bytes(9) * 2
    head = hdr + bytes([11, 0]) + stamp + bytes([10, 16]) + RAND
    head += bytes([1, 0, 0]) + len(SP_80).to_bytes(2, "big") + SP_80
    assert offer.startswith(head)
    kemac = offer[len(head) :]
    assert kemac[:2] == bytes([0, 1])  # last payload, AES-CM-128
    length = int.from_bytes(kemac[2:4], "big")
    assert kemac[4 + length :][:1] == b"\x01" and len(kemac) == 4 + length + 1 + 20
    encr_key, auth_key, salt = kemac_keys()
    assert offer[-20:] == hmac_sha1(auth_key, offer[:-20])
    assert aes_cm(encr_key, salt, stamp, kemac[4 : 4 + length]) == b"\x00\x00\x00\x20" + TGK
    # cs_id 1 keys what the offerer sends, cs_id 2 what it receives.
    negotiation.remote_sdp_attributes(answer(offer).local_sdp_attributes())
    event = only_event(negotiation)
    assert isinstance(event, KeysReady), event
    assert event.keys.local_key == srtp_master(TGK, 1)
    assert event.keys.remote_key == srtp_master(TGK, 2)


def test_a_dh_hmac_offer_built_from_rfc_4650_gives_the_dh_secrets_keys() -> None:
    prime, x = DH_GROUPS[1], 0x1234567890ABCDEF  # OAKLEY 1 (RFC 2409 §6.1), 96 octets
    gx = pow(2, x, prime).to_bytes(96, "big")
    hdr = bytes([1, 7, 5, 0]) + CSB + bytes([2, 0]) + bytes(9) * 2  # DHHMAC init, 2 CS
    body = bytes([11, 0]) + ntp(NOW) + bytes([10, 16]) + RAND
    body += bytes([3, 0, 0]) + len(SP_80).to_bytes(2, "big") + SP_80  # -> DH
    body += bytes([1, 1]) + gx + b"\x00"  # -> KEMAC, group 1, DHi, KV NULL
    body += bytes([0, 0, 0, 0, 1])  # last, NULL encryption, no data, HMAC-SHA-1-160
    _, auth_key, _ = kemac_keys()
    unsigned = hdr + body
    negotiation = answer(unsigned + hmac_sha1(auth_key, unsigned), dh_group=1)
    event = only_event(negotiation)
    assert isinstance(event, KeysReady), event
    reply = answer_message(negotiation)
    # R_MSG (RFC 4650 §3): HDR (DHHMAC resp), T, DHr, DHi, KEMAC with the MAC over the rest.
    assert reply[:19] == bytes([1, 8, 5, 0]) + CSB + bytes([2, 0]) + bytes(9)
    assert reply[19:28] == bytes(9)
    tail = 28 + 2 + 8
    assert reply[28:tail] == bytes([3, 0]) + ntp(NOW)
    assert reply[tail : tail + 2] == bytes([3, 1])
    gy = reply[tail + 2 : tail + 98]
    assert reply[tail + 98 : tail + 101] == bytes([0, 1, 1])  # KV NULL; DHi: -> KEMAC, group 1
    assert reply[tail + 101 : tail + 197] == gx
    assert reply[tail + 197 : -20] == bytes([0, 0, 0, 0, 0, 1])  # KV; last, NULL, 0, HMAC
    assert reply[-20:] == hmac_sha1(auth_key, reply[:-20])
    tgk = pow(int.from_bytes(gy, "big"), x, prime).to_bytes(96, "big")  # TGK = g^(xi*xr)
    # The answerer sends with cs_id 2 and receives with cs_id 1.
    assert event.keys.local_key == srtp_master(tgk, 2)
    assert event.keys.remote_key == srtp_master(tgk, 1)


def test_ntp_utc_timestamps_are_seconds_since_1900() -> None:
    assert ntp(0.0) == bytes.fromhex("83aa7e8000000000")  # RFC 5905 §6: 2,208,988,800 s
    negotiation = answer(psk_offer())
    assert answer_message(negotiation)[21:29] == ntp(NOW)
