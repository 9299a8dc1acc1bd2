"""SRTP and SRTCP with AES counter mode and HMAC-SHA1 in Python (RFC 3711, RFC 6188).

:mod:`gateway.core.media.srtp` uses this module for the suites the bundled libsrtp gets wrong:
AES_192_CM_HMAC_SHA1_80 and AES_192_CM_HMAC_SHA1_32 (libsrtp <= 2.7.0 derives AES-192 session
keys with its AES-256 key derivation, cisco/libsrtp issue 763). The code is the same for every
AES key length (16, 24 or 32 octets), which lets the tests check it against libsrtp for AES-128
and AES-256 too. Sans-IO: bytes in, bytes out; no clock, no randomness.

Theory of operation
-------------------
A master key (and salt) gives six session keys (RFC 3711 §4.3.1, key derivation rate 0):
encryption key, authentication key and salt for SRTP (labels 0, 1, 2) and for SRTCP (3, 4, 5).
The PRF is AES in counter mode under the master key (RFC 3711 §4.3.3, which already allows
128-, 192- and 256-bit master keys); RFC 6188 §3 names it AES_192_CM_PRF and AES_256_CM_PRF for
the longer keys. The keystream simply runs the counter past one block for a 24- or 32-octet
session key. RFC 6188 §7.3/§7.4 give the
AES-192 known answers the tests check.

Packets (RFC 3711 §3.1, §3.4, §4.1.1, §4.2)::

    SRTP:  RTP header | payload XOR keystream                      | tag (10 or 4 octets)
    SRTCP: first 8 octets | rest XOR keystream | E=1 || index (31) | tag (10 octets)

- Keystream: AES-CM with IV = (k_s * 2^16) XOR (SSRC * 2^64) XOR (i * 2^16), i the 48-bit SRTP
  index or the 31-bit SRTCP index. We make it by encrypting the counter blocks IV, IV+1, ...
  with one AES-ECB context per session key, so the AES key schedule is computed once per key,
  not once per packet (the IV's low 16 bits are zero, so the block counter never carries).
- Tag: HMAC-SHA1 with the session authentication key over the authenticated portion (header
  and encrypted payload) followed by the 32-bit ROC for SRTP; over the packet including the
  E||index word for SRTCP. Truncated to the suite's length; SRTCP always keeps 80 bits
  (RFC 3711 §5.2, RFC 4568 §6.2.2). Tags are compared in constant time.
- Index (RFC 3711 §3.3.1, Appendix A): per SSRC the highest index authenticated so far (ROC and
  s_l together). A packet's index is guessed from its sequence number as ROC - 1, ROC or ROC + 1;
  ROC - 1 is not guessed before the first wrap (there is no ROC -1), which is also what libsrtp
  does. A new SSRC starts at ROC 0 with its first sequence number (the SDES assumption).
- Replay list (RFC 3711 §3.3.2): per SSRC a bit mask of the ``replay_window`` indexes up to the
  highest. Checked before the HMAC is computed, updated only after the tag verified.
  SRTCP keeps its own list on the SRTCP index, with the same window size (libsrtp fixes it at
  128 entries; the default here is the same).

The sender keeps the same per-SSRC state as a receiver, as libsrtp does: the gateway relays
packets whose sequence numbers it did not choose, so it guesses the ROC from them, protects
packets that arrive out of order within the window, and refuses to protect an index a second
time (a duplicate would reuse keystream). The SRTCP index is the sender's own counter per SSRC,
first packet 1 (as libsrtp), E bit set.

Results are the new packet or a :class:`Drop` reason; a drop raises no exception (a flood of
forged packets costs the HMAC, nothing more). Bounds: at most ``max_ssrcs`` SSRCs per context
(an SSRC gets state only once one of its packets passed), packets up to
:data:`MAX_PACKET_LENGTH` octets.

An MKI (RFC 3711 §3.1) never reaches this module: :class:`gateway.core.media.srtp.MkiTransform`
checks and removes it before unprotecting and inserts it after protecting, for both paths.

Not implemented (the SDES plugin refuses them): several master keys per direction, key
derivation rate other than 0, UNENCRYPTED_SRTP, UNENCRYPTED_SRTCP, UNAUTHENTICATED_SRTP; SRTCP
packets with E = 0 are dropped.

Keys: the contexts derive the session encryption and authentication keys into bytearrays and
zero them once ``cryptography``'s AES and HMAC contexts (OpenSSL memory) hold them; the master
key is only read through a view of the caller's bytes. ``close()`` releases the contexts. The
session salt stays a Python int (RFC 3711 §9.2: the salt must be random but may be public).
:func:`derive_session_key` returns bytes and is meant for known-answer tests. Nothing here has
key material in a repr or an error message.
"""

from __future__ import annotations

import enum
import hmac

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from gateway.core.media.errors import LocalMediaError

__all__ = [
    "MAX_PACKET_LENGTH",
    "Drop",
    "SrtpReceiver",
    "SrtpSender",
    "aes_cm_keystream",
    "derive_session_key",
]

MAX_PACKET_LENGTH = 65536
"""Longest packet (octets) a context takes; longer ones are dropped as :attr:`Drop.MALFORMED`."""

MASTER_SALT_LENGTH = 14
"""Octets of an AES-CM master salt (RFC 3711 §8.2: 112 bits; the same for RFC 6188)."""

SRTCP_TAG_LENGTH = 10
"""SRTCP always carries the 80-bit HMAC-SHA1 tag (RFC 3711 §5.2, RFC 4568 §6.2.2)."""

_AES_KEY_LENGTHS = (16, 24, 32)
_RTP_TAG_LENGTHS = (4, 10)  # HMAC_SHA1_32 and HMAC_SHA1_80
_AUTH_KEY_LENGTH = 20  # RFC 3711 §8.2: n_a = 160 bits for HMAC-SHA1
_MIN_REPLAY_WINDOW = 64  # RFC 3711 §3.3.2: at least 64
_MAX_REPLAY_WINDOW = 0x7FFF  # as libsrtp, so every suite takes the same windows

# RFC 3711 §4.3.1, §4.3.2 key derivation labels: encryption key, then + 1 the authentication
# key and + 2 the salt.
_SRTP_LABELS, _SRTCP_LABELS = 0, 3

_MAX_SRTP_INDEX = (1 << 48) - 1  # RFC 3711 §3.3.1: 48-bit index (32-bit ROC, 16-bit SEQ)
_MAX_SRTCP_INDEX = (1 << 31) - 1  # RFC 3711 §3.4: 31-bit index; §9.2: re-key before it wraps
_E_BIT = 0x80000000

# Counter blocks are IV_prefix (14 octets) || block counter (2 octets). Keystream input for n
# blocks is prefix.join(_COUNTERS[: n + 1]): "" + prefix + c0 + prefix + c1 + ... This table
# covers the longest packet.
_MAX_BLOCKS = MAX_PACKET_LENGTH // 16
_COUNTERS = (b"", *(block.to_bytes(2, "big") for block in range(_MAX_BLOCKS)))


class Drop(enum.IntEnum):
    """Why a context did not return a packet."""

    MALFORMED = 1
    """Too short for its RTP header and tag, too long, SRTCP with E = 0 (UNENCRYPTED_SRTCP was
    not negotiated), an index past the 2^48 (SRTP) or 2^31 (SRTCP) limit, or a closed context."""
    AUTH_FAILURE = 2
    """The tag did not verify (tampered, another key, not SRTP at all)."""
    REPLAY = 3
    """The index was already received or protected, or is older than the replay window."""
    SSRC_LIMIT = 4
    """A new SSRC while the context already holds ``max_ssrcs``."""


def aes_cm_keystream(key: bytes, iv: bytes, length: int) -> bytes:
    """``length`` octets of AES counter-mode keystream (RFC 3711 §4.1.1) for a 16-octet IV.

    For known-answer tests and key derivation; packets use the contexts' ECB encryptors.
    """
    encryptor = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
    return encryptor.update(bytes(length)) + encryptor.finalize()


def derive_session_key(master_key: bytes, master_salt: bytes, label: int, length: int) -> bytes:
    """RFC 3711 §4.3.1 with key derivation rate 0: ``length`` octets of the session key
    ``label`` (0..5), by the AES-CM PRF of §4.3.3 keyed with the 16-, 24- or 32-octet master key
    (RFC 6188 §3 for 192 and 256 bits).

    key_id = label || r with r = 0 (7 octets); x = key_id XOR master_salt (14 octets, both
    right-aligned); the session key is the keystream for IV = x * 2^16, truncated.
    """
    derived = _derive(master_key, master_salt, label, length)
    try:
        return bytes(derived)
    finally:
        _wipe(derived)


def _derive(
    master_key: bytes | memoryview, master_salt: bytes, label: int, length: int
) -> bytearray:
    """:func:`derive_session_key` into a bytearray, for the caller to wipe."""
    if len(master_salt) != MASTER_SALT_LENGTH:
        raise LocalMediaError(f"an AES-CM master salt has {MASTER_SALT_LENGTH} octets")
    x = int.from_bytes(master_salt, "big") ^ (label << 48)
    iv = x.to_bytes(14, "big") + b"\0\0"
    encryptor = Cipher(algorithms.AES(master_key), modes.CTR(iv)).encryptor()
    # update_into wants room for one block more than it writes; the keystream of zeros is
    # written straight into memory we can wipe.
    derived = bytearray(length + 15)
    encryptor.update_into(bytes(length), derived)
    del derived[length:]
    return derived


def _wipe(secret: bytearray) -> None:
    secret[:] = bytes(len(secret))


class _SessionKeys:
    """The encryption context, keyed HMAC and salt for SRTP or for SRTCP. Hot-path state."""

    __slots__ = ("_ecb", "_hmac", "_salt")

    def __init__(self, master_key: memoryview, master_salt: bytes, labels: int) -> None:
        encryption_key = _derive(master_key, master_salt, labels, len(master_key))
        auth_key = _derive(master_key, master_salt, labels + 1, _AUTH_KEY_LENGTH)
        try:
            self._ecb = Cipher(algorithms.AES(encryption_key), modes.ECB()).encryptor()
            self._hmac = crypto_hmac.HMAC(auth_key, hashes.SHA1())
        finally:
            # OpenSSL holds its own copies (the AES key schedule, the HMAC state) from here on.
            _wipe(encryption_key)
            _wipe(auth_key)
        # The session salt is no secret (RFC 3711 §9.2 allows a public master salt); it stays
        # an int for the IV arithmetic.
        salt = _derive(master_key, master_salt, labels + 2, MASTER_SALT_LENGTH)
        self._salt = int.from_bytes(salt, "big")
        _wipe(salt)

    def crypt(self, ssrc: int, index: int, data: bytes) -> bytes:
        """Encrypt or decrypt ``data`` (at most MAX_PACKET_LENGTH octets) for this SSRC and
        index (RFC 3711 §4.1.1)."""
        # The 14 high octets of IV = (k_s * 2^16) XOR (SSRC * 2^64) XOR (i * 2^16); the low two
        # are the block counter.
        prefix = (self._salt ^ (ssrc << 48) ^ index).to_bytes(14, "big")
        size = len(data)
        keystream = self._ecb.update(prefix.join(_COUNTERS[: ((size + 15) >> 4) + 1]))
        result = int.from_bytes(data, "big") ^ int.from_bytes(keystream[:size], "big")
        return result.to_bytes(size, "big")

    def tag(self, authenticated: bytes, roc: bytes) -> bytes:
        """The full 20-octet HMAC-SHA1 of ``authenticated || roc`` (RFC 3711 §4.2.1)."""
        mac = self._hmac.copy()
        mac.update(authenticated)
        mac.update(roc)
        return mac.finalize()


class _ReplayWindow:
    """RFC 3711 §3.3.2 replay list: the highest index passed so far and a bit mask of the
    window up to it (bit k set: index ``highest - k`` passed)."""

    __slots__ = ("highest", "mask")

    def __init__(self, index: int) -> None:
        self.highest = index
        self.mask = 1

    def seen(self, index: int, size: int) -> bool:
        """Whether ``index`` passed already or lies before the window."""
        behind = self.highest - index
        if behind < 0:
            return False
        return behind >= size or bool(self.mask >> behind & 1)

    def add(self, index: int, size: int) -> None:
        ahead = index - self.highest
        if ahead > 0:
            # Never shift by more than the window (an index may jump far ahead).
            self.mask = 1 if ahead >= size else (self.mask << ahead | 1) & ((1 << size) - 1)
            self.highest = index
        else:
            self.mask |= 1 << -ahead


class _Stream:
    """One SSRC's state in one context: the SRTP replay list (with the ROC in its highest
    index) and, on the sending side, the last SRTCP index or, on the receiving side, the SRTCP
    replay list."""

    __slots__ = ("rtcp", "rtcp_index", "rtp")

    def __init__(self) -> None:
        self.rtp: _ReplayWindow | None = None
        self.rtcp: _ReplayWindow | None = None
        self.rtcp_index = 0


def _estimate_index(highest: int, sequence: int) -> int:
    """RFC 3711 Appendix A: the index of a packet with ``sequence`` given the highest index so
    far (ROC * 2^16 + s_l): the guess v in {ROC - 1, ROC, ROC + 1} closest to s_l."""
    roc, s_l = highest >> 16, highest & 0xFFFF
    if s_l < 0x8000:
        if sequence - s_l > 0x8000 and roc > 0:
            roc -= 1
    elif s_l - 0x8000 > sequence:
        roc += 1
    return roc << 16 | sequence


def _rtp_header_length(packet: bytes, size: int) -> int:
    """Octets of the RTP header with CSRCs and header extension (RFC 3550 §5.1, §5.3.1), or 0
    when ``packet`` is too short to hold it."""
    if size < 12:
        return 0
    length = 12 + 4 * (packet[0] & 0x0F)
    if packet[0] & 0x10:
        if size < length + 4:
            return 0
        length += 4 + 4 * (packet[length + 2] << 8 | packet[length + 3])
    return length if size >= length else 0


class _Context:
    """What a sender and a receiver share: one master key's session keys and per-SSRC state."""

    __slots__ = ("_rtcp_keys", "_rtp_keys", "_streams", "max_ssrcs", "replay_window", "tag_length")

    def __init__(
        self,
        key_salt: bytes,
        *,
        master_key_length: int,
        rtp_tag_length: int,
        replay_window: int = 128,
        max_ssrcs: int = 32,
    ) -> None:
        if master_key_length not in _AES_KEY_LENGTHS:
            raise LocalMediaError(
                f"AES-CM takes a 16-, 24- or 32-octet key, not {master_key_length}"
            )
        if len(key_salt) != master_key_length + MASTER_SALT_LENGTH:
            raise LocalMediaError(
                f"expected a {master_key_length + MASTER_SALT_LENGTH}-octet master key and salt, "
                f"got {len(key_salt)} octets"
            )
        if rtp_tag_length not in _RTP_TAG_LENGTHS:
            raise LocalMediaError(f"HMAC-SHA1 tags have 4 or 10 octets, not {rtp_tag_length}")
        if not _MIN_REPLAY_WINDOW <= replay_window <= _MAX_REPLAY_WINDOW:
            raise LocalMediaError(
                f"replay window {replay_window} is outside "
                f"{_MIN_REPLAY_WINDOW}..{_MAX_REPLAY_WINDOW}"
            )
        if max_ssrcs < 1:
            raise LocalMediaError("max_ssrcs must be at least 1")
        # A view, not a copy: no second Python object holds the master key.
        master_key = memoryview(key_salt)[:master_key_length]
        master_salt = key_salt[master_key_length:]
        self._rtp_keys: _SessionKeys | None = _SessionKeys(master_key, master_salt, _SRTP_LABELS)
        self._rtcp_keys: _SessionKeys | None = _SessionKeys(master_key, master_salt, _SRTCP_LABELS)
        self._streams: dict[bytes, _Stream] = {}
        self.tag_length = rtp_tag_length  # SRTP; SRTCP always has SRTCP_TAG_LENGTH
        self.replay_window = replay_window
        self.max_ssrcs = max_ssrcs

    @property
    def ssrc_count(self) -> int:
        """SSRCs this context holds state for."""
        return len(self._streams)

    @property
    def closed(self) -> bool:
        return self._rtp_keys is None

    def close(self) -> None:
        """Release the session keys and every SSRC's state; later packets are
        :attr:`Drop.MALFORMED`. Closing twice is harmless."""
        self._rtp_keys = self._rtcp_keys = None
        self._streams.clear()

    def _stream_for(self, ssrc: bytes) -> _Stream | None:
        """The SSRC's state, a new one if there is room, or None at the SSRC limit. A new
        stream is stored by the caller once its first packet passed."""
        stream = self._streams.get(ssrc)
        if stream is None and len(self._streams) < self.max_ssrcs:
            return _Stream()
        return stream


class SrtpSender(_Context):
    """Protects what the gateway sends under one master key (``key_salt`` = master key then
    the 14-octet master salt): any number of SSRCs up to ``max_ssrcs``. Raises
    :class:`~gateway.core.media.errors.LocalMediaError` for a wrong key or tag length, a replay
    window outside 64..32767 or ``max_ssrcs`` < 1 (messages never contain key material)."""

    __slots__ = ()

    def protect_rtp(self, packet: bytes) -> bytes | Drop:
        """RTP -> SRTP (RFC 3711 §3.3), or why not."""
        keys = self._rtp_keys
        size = len(packet)
        header_length = _rtp_header_length(packet, size)
        if keys is None or not header_length or size > MAX_PACKET_LENGTH:
            return Drop.MALFORMED
        ssrc = packet[8:12]
        stream = self._stream_for(ssrc)
        if stream is None:
            return Drop.SSRC_LIMIT
        sequence = packet[2] << 8 | packet[3]
        window = stream.rtp
        if window is None:
            index = sequence  # RFC 3711 §3.3.1: the ROC starts at 0
        else:
            index = _estimate_index(window.highest, sequence)
            if index > _MAX_SRTP_INDEX:
                return Drop.MALFORMED
            if window.seen(index, self.replay_window):
                return Drop.REPLAY  # never encrypt twice with the same keystream
        body = packet[:header_length] + keys.crypt(
            int.from_bytes(ssrc, "big"), index, packet[header_length:]
        )
        tag = keys.tag(body, (index >> 16).to_bytes(4, "big"))
        if window is None:
            stream.rtp = _ReplayWindow(index)
            self._streams[ssrc] = stream
        else:
            window.add(index, self.replay_window)
        return body + tag[: self.tag_length]

    def protect_rtcp(self, packet: bytes) -> bytes | Drop:
        """RTCP (a compound packet) -> SRTCP (RFC 3711 §3.4): encrypted from octet 8, then
        E = 1 and the next SRTCP index of its SSRC, then the 80-bit tag."""
        keys = self._rtcp_keys
        size = len(packet)
        if keys is None or not 8 <= size <= MAX_PACKET_LENGTH:
            return Drop.MALFORMED
        ssrc = packet[4:8]  # the sender SSRC of the first RTCP packet (RFC 3550 §6.4.1)
        stream = self._stream_for(ssrc)
        if stream is None:
            return Drop.SSRC_LIMIT
        index = stream.rtcp_index + 1
        if index > _MAX_SRTCP_INDEX:
            return Drop.MALFORMED  # RFC 3711 §9.2: the master key must be changed first
        body = (
            packet[:8]
            + keys.crypt(int.from_bytes(ssrc, "big"), index, packet[8:])
            + (_E_BIT | index).to_bytes(4, "big")
        )
        stream.rtcp_index = index
        self._streams[ssrc] = stream
        return body + keys.tag(body, b"")[:SRTCP_TAG_LENGTH]


class SrtpReceiver(_Context):
    """Authenticates and decrypts what a peer sends under its master key (``key_salt`` =
    master key then the 14-octet master salt); an SSRC gets state once one of its packets
    authenticated. Raises :class:`~gateway.core.media.errors.LocalMediaError` like
    :class:`SrtpSender`."""

    __slots__ = ()

    def unprotect_rtp(self, packet: bytes) -> bytes | Drop:
        """SRTP -> RTP, or why not (RFC 3711 §3.3: index, replay check, tag, then decrypt)."""
        keys = self._rtp_keys
        size = len(packet)
        header_length = _rtp_header_length(packet, size)
        end = size - self.tag_length
        if keys is None or not header_length or end < header_length or size > MAX_PACKET_LENGTH:
            return Drop.MALFORMED
        ssrc = packet[8:12]
        stream = self._stream_for(ssrc)
        if stream is None:
            return Drop.SSRC_LIMIT
        sequence = packet[2] << 8 | packet[3]
        window = stream.rtp
        if window is None:
            index = sequence  # a new SSRC: ROC 0, s_l = its first sequence number
        else:
            index = _estimate_index(window.highest, sequence)
            if index > _MAX_SRTP_INDEX:
                return Drop.MALFORMED
            if window.seen(index, self.replay_window):
                return Drop.REPLAY
        authenticated = packet[:end]
        tag = keys.tag(authenticated, (index >> 16).to_bytes(4, "big"))
        if not hmac.compare_digest(tag[: self.tag_length], packet[end:]):
            return Drop.AUTH_FAILURE
        # RFC 3711 §3.3.1: ROC and s_l move only now that the packet authenticated.
        if window is None:
            stream.rtp = _ReplayWindow(index)
            self._streams[ssrc] = stream
        else:
            window.add(index, self.replay_window)
        return packet[:header_length] + keys.crypt(
            int.from_bytes(ssrc, "big"), index, packet[header_length:end]
        )

    def unprotect_rtcp(self, packet: bytes) -> bytes | Drop:
        """SRTCP -> RTCP, or why not (RFC 3711 §3.4)."""
        keys = self._rtcp_keys
        size = len(packet)
        end = size - SRTCP_TAG_LENGTH  # the E||index word ends here
        if keys is None or end < 12 or size > MAX_PACKET_LENGTH:
            return Drop.MALFORMED
        word = int.from_bytes(packet[end - 4 : end], "big")
        if not word & _E_BIT:
            return Drop.MALFORMED  # unencrypted SRTCP was not negotiated
        index = word & _MAX_SRTCP_INDEX
        ssrc = packet[4:8]
        stream = self._stream_for(ssrc)
        if stream is None:
            return Drop.SSRC_LIMIT
        window = stream.rtcp
        if window is not None and window.seen(index, self.replay_window):
            return Drop.REPLAY
        authenticated = packet[:end]
        if not hmac.compare_digest(keys.tag(authenticated, b"")[:SRTCP_TAG_LENGTH], packet[end:]):
            return Drop.AUTH_FAILURE
        if window is None:
            stream.rtcp = _ReplayWindow(index)
            self._streams[ssrc] = stream
        else:
            window.add(index, self.replay_window)
        return packet[:8] + keys.crypt(int.from_bytes(ssrc, "big"), index, packet[8 : end - 4])
