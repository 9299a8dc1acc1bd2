"""MIKEY messages on the wire (RFC 3830 §6): the common header and every payload a PSK or a
DH-HMAC (RFC 4650) exchange uses, encoded and parsed.

A message is the common header HDR (§6.1) followed by a chain of payloads, each starting with
the type of the *next* one (0: none follows). The header's third octet is the type of the first
payload. KEMAC (§6.2) carries a second chain inside its (possibly encrypted) data: Key-data
sub-payloads (§6.13), parsed separately with :func:`parse_key_data_untrusted` once decrypted.

Parsing is of untrusted bytes (STYLE.md habit 5): every length is checked against what is left
and against explicit bounds (``MAX_*`` and the keyword arguments), and every defect is a
:class:`MikeyError` (the peer's fault, 488) whose reason names the payload and the defect and
never contains key material. Payloads no PSK or DH-HMAC exchange needs (PKE, SIGN, CERT, CHASH:
the public-key modes, which we refuse) are refused by name, not skipped: a SIGN has no
next-payload octet, so nothing after an unparsed payload could be trusted anyway.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Sequence
from typing import TypeVar

import attrs

from gateway.core.sdp.errors import SdpError

__all__ = [
    "MAX_CS",
    "MAX_KEY_DATA",
    "MAX_MESSAGE_SIZE",
    "MAX_PAYLOADS",
    "MAX_SP_PARAMS",
    "DataType",
    "DhValue",
    "ErrorPayload",
    "GeneralExtension",
    "Header",
    "Identity",
    "Kemac",
    "KeyData",
    "LocalMikeyError",
    "Message",
    "MikeyError",
    "Payload",
    "PayloadType",
    "Rand",
    "SecurityPolicy",
    "SrtpCs",
    "Timestamp",
    "Verification",
    "encode_key_data",
    "encode_message",
    "parse_key_data_untrusted",
    "parse_message_untrusted",
]

MAX_MESSAGE_SIZE = 4096
"""Largest MIKEY message we parse (a PSK I_MSG is about 150 octets, a DH-HMAC one with the
1536-bit group under 300)."""
MAX_PAYLOADS = 32
"""Most payloads in one message."""
MAX_CS = 16
"""Most crypto sessions in a CS ID map."""
MAX_SP_PARAMS = 32
"""Most parameters in one SP payload."""
MAX_KEY_DATA = 8
"""Most Key-data sub-payloads in one KEMAC."""

VERSION = 1  # RFC 3830 §6.1
CS_MAP_SRTP_ID = 0  # §6.1.1
CS_MAP_EMPTY = 1  # RFC 6043 §6.1.1
PRF_MIKEY_1 = 0  # §6.1

# §6.2 KEMAC encryption and MAC algorithms (the V payload uses the MAC table too, §6.9).
ENCR_NULL, ENCR_AES_CM_128, ENCR_AES_KW_128 = 0, 1, 2
MAC_NULL, MAC_HMAC_SHA1_160 = 0, 1
MAC_LENGTHS = {MAC_NULL: 0, MAC_HMAC_SHA1_160: 20}

# §6.6 timestamp types and their value lengths.
TS_NTP_UTC, TS_NTP, TS_COUNTER = 0, 1, 2
_TS_LENGTHS = {TS_NTP_UTC: 8, TS_NTP: 8, TS_COUNTER: 4}

# §6.13 key data types (bit 0: a salt follows; bit 1: TEK rather than TGK) and KV types.
KEY_TGK, KEY_TGK_SALT, KEY_TEK, KEY_TEK_SALT = 0, 1, 2, 3
KV_NULL, KV_SPI, KV_INTERVAL = 0, 1, 2

# §6.4 DH groups: the value is exactly as long as the group's prime.
DH_GROUP_LENGTHS = {0: 192, 1: 96, 2: 128}  # OAKLEY 5 (1536 bit), OAKLEY 1 (768), OAKLEY 2 (1024)


class DataType(enum.IntEnum):
    """HDR data type (RFC 3830 §6.1; RFC 4650 §5; RFC 4738 §5)."""

    PSK_INIT = 0
    PSK_RESP = 1
    PK_INIT = 2
    PK_RESP = 3
    DH_INIT = 4
    DH_RESP = 5
    ERROR = 6
    DHHMAC_INIT = 7
    DHHMAC_RESP = 8
    RSA_R_INIT = 9
    RSA_R_RESP = 10


class PayloadType(enum.IntEnum):
    """Next-payload values (RFC 3830 §6.1)."""

    LAST = 0
    KEMAC = 1
    PKE = 2
    DH = 3
    SIGN = 4
    T = 5
    ID = 6
    CERT = 7
    CHASH = 8
    V = 9
    SP = 10
    RAND = 11
    ERR = 12
    KEY_DATA = 20
    GENERAL_EXT = 21


# --------------------------------------------------------------------------------------------
# Errors


class MikeyError(SdpError):
    """The peer's MIKEY message is malformed or unacceptable: answer 488 with ``reason``. The
    reason never contains key material. ``error_no`` is the MIKEY error number (§6.12) that
    fits, when one does."""

    def __init__(self, reason: str, *, error_no: int | None = None) -> None:
        super().__init__(reason)
        self.error_no = error_no


class LocalMikeyError(Exception):
    """The gateway misused this package (a bug, never the peer's fault): a value that cannot
    be encoded, a random source returning the wrong length, a call out of turn."""


def _redacted(_: object) -> str:
    return "<redacted>"


# --------------------------------------------------------------------------------------------
# Values


@attrs.frozen
class SrtpCs:
    """One crypto session of an SRTP-ID map (§6.1.1): the SP policy it uses, its SSRC and ROC
    (0 when not known in advance)."""

    policy_no: int
    ssrc: int = 0
    roc: int = 0


@attrs.frozen
class Header:
    """The common header HDR (§6.1). ``cs`` is the CS ID map (SRTP-ID map type); a cs_id in key
    derivation is a crypto session's 1-based position in it."""

    data_type: int
    csb_id: int
    cs: tuple[SrtpCs, ...] = ()
    v: bool = False
    prf: int = PRF_MIKEY_1
    version: int = VERSION
    map_type: int = CS_MAP_SRTP_ID


@attrs.frozen
class Timestamp:
    """T (§6.6): ``value`` is 8 octets of NTP time for types 0 and 1, a 4-octet counter for 2."""

    ts_type: int
    value: bytes

    @classmethod
    def ntp_utc(cls, unix_time: float) -> Timestamp:
        """T of type NTP-UTC for a Unix time (RFC 5905 era 0: seconds since 1900)."""
        seconds = int(unix_time) + 2_208_988_800
        fraction = int((unix_time - int(unix_time)) * (1 << 32)) & 0xFFFFFFFF
        return cls(TS_NTP_UTC, struct.pack("!II", seconds & 0xFFFFFFFF, fraction))

    def unix_time(self) -> float | None:
        """The Unix time of an NTP timestamp, None for a counter."""
        if self.ts_type not in (TS_NTP_UTC, TS_NTP):
            return None
        seconds = int.from_bytes(self.value[:4], "big")
        fraction = int.from_bytes(self.value[4:], "big")
        return seconds - 2_208_988_800 + fraction / (1 << 32)


@attrs.frozen
class Rand:
    """RAND (§6.11): the initiator's fresh random value, an input of every key derivation."""

    value: bytes


@attrs.frozen
class SecurityPolicy:
    """SP (§6.10): policy number, protocol type (0 SRTP) and parameters (type, value) in the
    order sent."""

    policy_no: int
    prot_type: int
    params: tuple[tuple[int, bytes], ...]

    def param(self, param_type: int) -> int | None:
        """The integer value of parameter ``param_type`` (first occurrence), or None."""
        for kind, value in self.params:
            if kind == param_type:
                return int.from_bytes(value, "big")
        return None


@attrs.frozen
class KeyData:
    """A Key-data sub-payload (§6.13): type (TGK, TGK+SALT, TEK, TEK+SALT), the key, the salt
    when the type has one, and the key validity (KV: an SPI/MKI, or an SRTP index interval
    ``kv_data`` = (from, to))."""

    key_type: int
    key: bytes = attrs.field(repr=_redacted)
    salt: bytes | None = attrs.field(default=None, repr=_redacted)
    kv_type: int = KV_NULL
    kv_data: tuple[bytes, ...] = ()


@attrs.frozen
class Kemac:
    """KEMAC (§6.2): the encryption algorithm, the (encrypted) Key-data chain and the MAC."""

    encr_alg: int
    encr_data: bytes = attrs.field(repr=_redacted)
    mac_alg: int
    mac: bytes = b""


@attrs.frozen
class DhValue:
    """DH (§6.4): group (0 OAKLEY 5, 1 OAKLEY 1, 2 OAKLEY 2), the public value g^x, KV."""

    group: int
    value: bytes
    kv_type: int = KV_NULL
    kv_data: tuple[bytes, ...] = ()


@attrs.frozen
class Identity:
    """ID (§6.7): type (0 NAI, 1 URI) and the identity."""

    id_type: int
    data: bytes


@attrs.frozen
class Verification:
    """V (§6.9): the MAC algorithm and the verification MAC."""

    alg: int
    mac: bytes = b""


@attrs.frozen
class ErrorPayload:
    """ERR (§6.12): the error number."""

    error_no: int


@attrs.frozen
class GeneralExtension:
    """General extension (§6.15): type (0 vendor ID, 1 SDP IDs) and data."""

    ext_type: int
    data: bytes


Payload = (
    Timestamp
    | Rand
    | SecurityPolicy
    | Kemac
    | DhValue
    | Identity
    | Verification
    | ErrorPayload
    | GeneralExtension
)
P = TypeVar("P")


@attrs.frozen
class Message:
    """A parsed MIKEY message: its header, its payloads in order, and the bytes it came from
    (what a MAC covers)."""

    header: Header
    payloads: tuple[Payload, ...]
    raw: bytes = attrs.field(default=b"", eq=False, repr=False)

    def first(self, kind: type[P]) -> P | None:
        """The first payload of class ``kind``, or None."""
        return next((p for p in self.payloads if isinstance(p, kind)), None)

    def all(self, kind: type[P]) -> list[P]:
        return [p for p in self.payloads if isinstance(p, kind)]


# --------------------------------------------------------------------------------------------
# Encoding


def _u8(value: int, what: str) -> bytes:
    if not 0 <= value <= 0xFF:
        raise LocalMikeyError(f"{what} does not fit one octet")
    return bytes([value])


def _u16(value: int, what: str) -> bytes:
    if not 0 <= value <= 0xFFFF:
        raise LocalMikeyError(f"{what} does not fit two octets")
    return value.to_bytes(2, "big")


def _kv_bytes(kv_type: int, kv_data: tuple[bytes, ...]) -> bytes:
    if kv_type == KV_NULL:
        return b""
    if kv_type == KV_SPI and len(kv_data) == 1:
        return _u8(len(kv_data[0]), "SPI length") + kv_data[0]
    if kv_type == KV_INTERVAL and len(kv_data) == 2:
        return b"".join(_u8(len(part), "KV interval length") + part for part in kv_data)
    raise LocalMikeyError("key validity data does not match its KV type")


def _payload_type(payload: Payload) -> PayloadType:
    return _TYPE_OF[type(payload)]


def _payload_body(payload: Payload) -> bytes:
    """The payload without its next-payload octet."""
    if isinstance(payload, Timestamp):
        if _TS_LENGTHS.get(payload.ts_type) != len(payload.value):
            raise LocalMikeyError("a T value does not match its type")
        return _u8(payload.ts_type, "TS type") + payload.value
    if isinstance(payload, Rand):
        return _u8(len(payload.value), "RAND length") + payload.value
    if isinstance(payload, SecurityPolicy):
        params = b"".join(
            _u8(kind, "SP parameter type") + _u8(len(value), "SP parameter length") + value
            for kind, value in payload.params
        )
        return (
            _u8(payload.policy_no, "policy number")
            + _u8(payload.prot_type, "protocol type")
            + _u16(len(params), "SP parameters length")
            + params
        )
    if isinstance(payload, Kemac):
        if MAC_LENGTHS.get(payload.mac_alg) != len(payload.mac):
            raise LocalMikeyError("a KEMAC MAC does not match its algorithm")
        return (
            _u8(payload.encr_alg, "encryption algorithm")
            + _u16(len(payload.encr_data), "KEMAC data length")
            + payload.encr_data
            + _u8(payload.mac_alg, "MAC algorithm")
            + payload.mac
        )
    if isinstance(payload, DhValue):
        if DH_GROUP_LENGTHS.get(payload.group) != len(payload.value):
            raise LocalMikeyError("a DH value does not match its group")
        return (
            _u8(payload.group, "DH group")
            + payload.value
            + _u8(payload.kv_type & 0x0F, "KV type")
            + _kv_bytes(payload.kv_type, payload.kv_data)
        )
    if isinstance(payload, Identity):
        return _u8(payload.id_type, "ID type") + _u16(len(payload.data), "ID length") + payload.data
    if isinstance(payload, Verification):
        if MAC_LENGTHS.get(payload.alg) != len(payload.mac):
            raise LocalMikeyError("a V MAC does not match its algorithm")
        return _u8(payload.alg, "V algorithm") + payload.mac
    if isinstance(payload, ErrorPayload):
        return _u8(payload.error_no, "error number") + b"\x00\x00"
    if isinstance(payload, GeneralExtension):
        return (
            _u8(payload.ext_type, "extension type")
            + _u16(len(payload.data), "extension length")
            + payload.data
        )
    raise LocalMikeyError(f"cannot encode {type(payload).__name__}")


def encode_message(header: Header, payloads: Sequence[Payload]) -> bytes:
    """The bytes of a MIKEY message: HDR (§6.1) then ``payloads`` chained by their
    next-payload octets. A MAC is part of the KEMAC or V payload as given; to compute one,
    encode with a zero MAC of the right length and replace the last octets."""
    types = [_payload_type(p) for p in payloads] + [PayloadType.LAST]
    out = bytearray()
    out += _u8(header.version, "version")
    out += _u8(header.data_type, "data type")
    out += _u8(types[0], "next payload")
    if not 0 <= header.prf <= 0x7F:
        raise LocalMikeyError("the PRF number does not fit seven bits")
    out += bytes([(0x80 if header.v else 0) | header.prf])
    if not 0 <= header.csb_id <= 0xFFFFFFFF:
        raise LocalMikeyError("the CSB ID does not fit four octets")
    out += header.csb_id.to_bytes(4, "big")
    out += _u8(len(header.cs), "number of crypto sessions")
    out += _u8(header.map_type, "CS ID map type")
    for cs in header.cs:
        out += _u8(cs.policy_no, "policy number")
        out += struct.pack("!II", cs.ssrc, cs.roc)
    for payload, next_type in zip(payloads, types[1:], strict=True):
        out += _u8(next_type, "next payload") + _payload_body(payload)
    return bytes(out)


def encode_key_data(keys: Sequence[KeyData]) -> bytes:
    """The Key-data sub-payload chain of a KEMAC (§6.13), before encryption."""
    out = bytearray()
    for index, key in enumerate(keys):
        last = index == len(keys) - 1
        out += _u8(PayloadType.LAST if last else PayloadType.KEY_DATA, "next payload")
        if not (0 <= key.key_type <= 0x0F and 0 <= key.kv_type <= 0x0F):
            raise LocalMikeyError("key data type or KV type does not fit four bits")
        out += bytes([(key.key_type << 4) | key.kv_type])
        out += _u16(len(key.key), "key data length") + key.key
        if key.key_type & 1:
            if key.salt is None:
                raise LocalMikeyError("a key data type with SALT needs a salt")
            out += _u16(len(key.salt), "salt length") + key.salt
        elif key.salt is not None:
            raise LocalMikeyError("a salt needs a key data type with SALT")
        out += _kv_bytes(key.kv_type, key.kv_data)
    return bytes(out)


# --------------------------------------------------------------------------------------------
# Parsing


class _Reader:
    """Bounded reads from untrusted bytes; running short is a MikeyError naming ``what``."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0

    @property
    def left(self) -> int:
        return len(self.data) - self.offset

    def take(self, count: int, what: str) -> bytes:
        if count > self.left:
            raise MikeyError(f"MIKEY {what} is truncated")
        chunk = self.data[self.offset : self.offset + count]
        self.offset += count
        return chunk

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def u16(self, what: str) -> int:
        return int.from_bytes(self.take(2, what), "big")


def _parse_kv(reader: _Reader, kv_type: int, what: str) -> tuple[bytes, ...]:
    if kv_type == KV_NULL:
        return ()
    if kv_type == KV_SPI:
        return (reader.take(reader.u8(what), what),)
    if kv_type == KV_INTERVAL:
        valid_from = reader.take(reader.u8(what), what)
        return (valid_from, reader.take(reader.u8(what), what))
    raise MikeyError(f"MIKEY {what} has an unknown KV type {kv_type}")


_UNSUPPORTED = {
    PayloadType.PKE: "PKE (public-key envelope)",
    PayloadType.SIGN: "SIGN (signature)",
    PayloadType.CERT: "CERT (certificate)",
    PayloadType.CHASH: "CHASH (certificate hash)",
    PayloadType.KEY_DATA: "Key data outside a KEMAC",
}


def _parse_payload(kind: int, reader: _Reader) -> Payload:
    if kind == PayloadType.T:
        ts_type = reader.u8("T payload")
        length = _TS_LENGTHS.get(ts_type)
        if length is None:
            raise MikeyError(f"MIKEY T payload has an unknown TS type {ts_type}", error_no=1)
        return Timestamp(ts_type, reader.take(length, "T payload"))
    if kind == PayloadType.RAND:
        length = reader.u8("RAND payload")
        if length == 0:
            raise MikeyError("MIKEY RAND payload is empty")
        return Rand(reader.take(length, "RAND payload"))
    if kind == PayloadType.SP:
        policy_no, prot_type = reader.u8("SP payload"), reader.u8("SP payload")
        params = _Reader(reader.take(reader.u16("SP payload"), "SP payload"))
        found: list[tuple[int, bytes]] = []
        while params.left:
            if len(found) == MAX_SP_PARAMS:
                raise MikeyError(f"MIKEY SP payload has more than {MAX_SP_PARAMS} parameters")
            param_type = params.u8("SP parameter")
            found.append((param_type, params.take(params.u8("SP parameter"), "SP parameter")))
        return SecurityPolicy(policy_no, prot_type, tuple(found))
    if kind == PayloadType.KEMAC:
        encr_alg = reader.u8("KEMAC payload")
        encr_data = reader.take(reader.u16("KEMAC payload"), "KEMAC payload")
        mac_alg = reader.u8("KEMAC payload")
        mac_length = MAC_LENGTHS.get(mac_alg)
        if mac_length is None:
            raise MikeyError(f"MIKEY KEMAC has an unknown MAC algorithm {mac_alg}", error_no=5)
        return Kemac(encr_alg, encr_data, mac_alg, reader.take(mac_length, "KEMAC MAC"))
    if kind == PayloadType.DH:
        group = reader.u8("DH payload")
        length = DH_GROUP_LENGTHS.get(group)
        if length is None:
            raise MikeyError(f"MIKEY DH payload has an unknown group {group}", error_no=6)
        value = reader.take(length, "DH payload")
        kv_type = reader.u8("DH payload") & 0x0F
        return DhValue(group, value, kv_type, _parse_kv(reader, kv_type, "DH payload"))
    if kind == PayloadType.ID:
        id_type = reader.u8("ID payload")
        return Identity(id_type, reader.take(reader.u16("ID payload"), "ID payload"))
    if kind == PayloadType.V:
        alg = reader.u8("V payload")
        mac_length = MAC_LENGTHS.get(alg)
        if mac_length is None:
            raise MikeyError(f"MIKEY V payload has an unknown MAC algorithm {alg}", error_no=5)
        return Verification(alg, reader.take(mac_length, "V payload"))
    if kind == PayloadType.ERR:
        error_no = reader.u8("ERR payload")
        reader.take(2, "ERR payload")
        return ErrorPayload(error_no)
    if kind == PayloadType.GENERAL_EXT:
        ext_type = reader.u8("general extension")
        return GeneralExtension(
            ext_type, reader.take(reader.u16("general extension"), "general extension")
        )
    if kind in _UNSUPPORTED:
        raise MikeyError(f"MIKEY payload {_UNSUPPORTED[PayloadType(kind)]} is not supported")
    raise MikeyError(f"MIKEY payload type {kind} is unknown")


def parse_message_untrusted(
    data: bytes,
    *,
    max_length: int = MAX_MESSAGE_SIZE,
    max_payloads: int = MAX_PAYLOADS,
    max_cs: int = MAX_CS,
) -> Message:
    """Parse one MIKEY message from the peer (RFC 3830 §6). Checks the version (1), the PRF
    (MIKEY-1), the CS ID map (SRTP-ID, or RFC 6043's empty map), every payload's length, and
    that nothing follows the last payload. Raises :class:`MikeyError` on any defect."""
    if len(data) > max_length:
        raise MikeyError(f"MIKEY message is longer than {max_length} octets")
    reader = _Reader(data)
    version = reader.u8("header")
    if version != VERSION:
        raise MikeyError(f"MIKEY version {version} is not supported (only 1)")
    data_type, next_type, v_prf = reader.u8("header"), reader.u8("header"), reader.u8("header")
    prf = v_prf & 0x7F
    if prf != PRF_MIKEY_1:
        raise MikeyError(f"MIKEY PRF {prf} is unknown (only MIKEY-1)", error_no=2)
    csb_id = int.from_bytes(reader.take(4, "header"), "big")
    count, map_type = reader.u8("header"), reader.u8("header")
    if count > max_cs:
        raise MikeyError(f"MIKEY message has more than {max_cs} crypto sessions")
    cs: list[SrtpCs] = []
    if map_type == CS_MAP_SRTP_ID:
        for _ in range(count):
            policy_no = reader.u8("CS ID map")
            ssrc, roc = struct.unpack("!II", reader.take(8, "CS ID map"))
            cs.append(SrtpCs(policy_no, ssrc, roc))
    elif map_type != CS_MAP_EMPTY or count:
        raise MikeyError(f"MIKEY CS ID map type {map_type} is not supported (only SRTP-ID)")
    header = Header(data_type, csb_id, tuple(cs), bool(v_prf & 0x80), prf, version, map_type)
    payloads: list[Payload] = []
    while next_type != PayloadType.LAST:
        if len(payloads) == max_payloads:
            raise MikeyError(f"MIKEY message has more than {max_payloads} payloads")
        kind = next_type
        next_type = reader.u8("payload")
        payloads.append(_parse_payload(kind, reader))
    if reader.left:
        raise MikeyError("MIKEY message has octets after its last payload")
    return Message(header, tuple(payloads), data)


def parse_key_data_untrusted(data: bytes, *, max_keys: int = MAX_KEY_DATA) -> tuple[KeyData, ...]:
    """Parse a KEMAC's decrypted Key-data chain (§6.13). Octets after the last sub-payload
    are allowed only as zero padding (an AES-KW block, see ``crypto``). Raises
    :class:`MikeyError`; the reason never contains the keys."""
    reader = _Reader(data)
    keys: list[KeyData] = []
    next_type: int = PayloadType.KEY_DATA
    while next_type != PayloadType.LAST:
        if next_type != PayloadType.KEY_DATA:
            raise MikeyError(f"MIKEY KEMAC holds payload type {next_type}, not Key data")
        if len(keys) == max_keys:
            raise MikeyError(f"MIKEY KEMAC holds more than {max_keys} keys")
        next_type = reader.u8("Key data")
        type_kv = reader.u8("Key data")
        key_type, kv_type = type_kv >> 4, type_kv & 0x0F
        if key_type > KEY_TEK_SALT:
            raise MikeyError(f"MIKEY Key data type {key_type} is unknown")
        key = reader.take(reader.u16("Key data"), "Key data")
        salt = reader.take(reader.u16("Key data salt"), "Key data salt") if key_type & 1 else None
        keys.append(KeyData(key_type, key, salt, kv_type, _parse_kv(reader, kv_type, "Key data")))
    if any(reader.take(reader.left, "Key data")):
        raise MikeyError("MIKEY KEMAC has octets after its last Key data")
    return tuple(keys)


_TYPE_OF: dict[type, PayloadType] = {
    Timestamp: PayloadType.T,
    Rand: PayloadType.RAND,
    SecurityPolicy: PayloadType.SP,
    Kemac: PayloadType.KEMAC,
    DhValue: PayloadType.DH,
    Identity: PayloadType.ID,
    Verification: PayloadType.V,
    ErrorPayload: PayloadType.ERR,
    GeneralExtension: PayloadType.GENERAL_EXT,
}
