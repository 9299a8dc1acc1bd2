"""SRTP and SRTCP protection for one leg of a media stream (RFC 3711, 6188, 7714): libsrtp, and
our own Python code for the AES-192 suites while libsrtp derives their keys wrongly.

Theory of operation
-------------------
SDES (RFC 4568 §5) gives each leg two master keys: ours (``SrtpKeys.local_key``, protects what
the gateway sends to the leg) and the peer's (``SrtpKeys.remote_key``, authenticates and decrypts
what the leg sends us). Each key is the master key followed by the master salt, exactly the bytes
of an ``inline:`` key-salt. An :class:`SrtpSession` holds one libsrtp context per key:

- inbound, ``ssrc_any_inbound``: any SSRC the peer sends under its key is accepted once its first
  packet authenticates; libsrtp then gives that SSRC its own state (ROC 0, s_l = the first
  sequence number, replay window; RFC 3711 §3.3.1 and the SDES assumption of ROC 0);
- outbound, ``ssrc_any_outbound``: each SSRC the relay forwards to the leg gets its own state
  (ROC, SRTCP index) on its first packet.

The relay wires a leg's session into the :class:`~gateway.core.media.relay.Transforms` of both
directions of the stream: what arrives from leg A is unprotected with A's session, what leaves
towards leg B is protected with B's session::

    stream.a_to_b.transforms = Transforms(
        rtp_in=leg_a.unprotect_rtp, rtcp_in=leg_a.unprotect_rtcp,
        rtp_out=leg_b.protect_rtp, rtcp_out=leg_b.protect_rtcp,
    )

A plain RTP leg simply has no session (``None`` transforms). Every transform returns the new
packet, or ``None`` to drop it; drops are counted by reason in :meth:`SrtpSession.statistics`.

What libsrtp does for us, per SSRC (the tests check each of these):

- roll-over counter across the sequence wrap 65535 -> 0, on both sides (RFC 3711 §3.3.1);
- replay protection (RFC 3711 §3.3.2): a sliding window over the SRTP index, 128 packets by
  default, configurable (``replay_window``, 64..32767: libsrtp 2.7's bounds); SRTCP keeps its own
  fixed 128-entry window on the SRTCP index (libsrtp's ``srtp_rdb_t``, not configurable);
- the SRTCP index: explicit, 31 bits, first packet 1, E bit set (RFC 3711 §3.4);
- SRTCP always carries an 80-bit HMAC-SHA1 tag, also for the ``_32`` suites (RFC 3711 §5.2,
  RFC 4568 §6.2.2): we give the RTCP half of the policy libsrtp's ``_80`` setter, as libsrtp's
  own ``srtp_crypto_policy_set_from_profile_for_rtcp`` does for ``aes128_cm_sha1_32``;
- a sender never reuses an index: protecting a second packet with the same SSRC and sequence
  number fails (libsrtp's ``allow_repeat_tx`` stays off), so a duplicate arriving from the other
  leg is dropped (counted as a replay) instead of being encrypted again under the same keystream.

Bounds (STYLE.md habit 5): libsrtp allocates per-SSRC state for every new SSRC, so each direction
accepts at most ``max_ssrcs`` SSRCs; packets of further SSRCs are dropped and counted
(``ssrc_limit``). Inbound, an SSRC only counts once one of its packets has authenticated.
Packets longer than :data:`MAX_PACKET_LENGTH` are dropped (``other_errors``).

The Python path (:mod:`gateway.core.media.srtp_python`, see "AES-192" below) does all of the
above the same way, with two differences: its SRTCP replay window has ``replay_window`` entries
too (the default is libsrtp's 128), and its window is exactly that many packets (libsrtp rounds
up to a multiple of 32).

MKI (RFC 3711 §3.1, §3.4; RFC 4568 §6.1): one master key per direction, whose packets may carry
a master key identifier (``SrtpKeys.local_mki``/``remote_mki``). The MKI is not authenticated
and sits, for the HMAC-SHA1 suites, just before the tag: after the encrypted payload in SRTP,
after the E flag and SRTCP index in SRTCP. For the AEAD suites, whose tag is part of the
ciphertext, it ends the packet (after the SRTCP trailer): libsrtp's layout
(``srtp_get_session_keys_for_packet`` looks there). With one key per direction the MKI selects
nothing, so neither libsrtp nor the Python path is told of it: :class:`MkiTransform` wraps a
direction's two transforms, checks a received MKI against the expected value and takes it out
before unprotecting (a packet with another MKI, or too short for one, is dropped and counted
as ``mki_mismatches``), and puts ours in after protecting. Streams without MKI keep their
transforms untouched (no per-packet cost); a direction with an MKI runs the same libsrtp step in
the same buffer plus two small slice moves.

New keys on a re-INVITE or UPDATE (:meth:`SrtpSession.rekey`): each direction keeps its context
while its master key (suite and key) stays, so its ROC, SRTCP index, replay window and SSRC state
go on (RFC 4568 §7.1.4, RFC 3711 §3.3.1); an MKI change only re-wraps its transforms. A new key
gets a new context. Never a new context under a key already used: it would restart the index, and
protecting the same index twice under one key repeats the keystream (RFC 3711 §9.1).

Not supported (the SDES plugin must not accept them): several master keys per direction (MKI
switching), a key derivation rate other than 0 (libsrtp 2.x derives once),
``UNENCRYPTED_SRTP``/``UNENCRYPTED_SRTCP``/``UNAUTHENTICATED_SRTP``.

Reaching libsrtp, and why pylibsrtp is pinned
---------------------------------------------
pylibsrtp 1.0.0 (``pyproject.toml`` pins ``==1.0.0``) bundles libsrtp 2.7.0 linked with OpenSSL
3.5, and its cffi binding ``pylibsrtp._binding`` declares the libsrtp 2.x API this module calls:
``srtp_create``/``srtp_dealloc``, the in-place ``srtp_protect(ctx, void *, int *)`` family and
``srtp_policy_t`` with the fields ``ssrc``, ``rtp``, ``rtcp``, ``key``, ``window_size`` and
``allow_repeat_tx`` (the cdef ends the struct with ``...;``, so cffi took the real offsets from
libsrtp's header when pylibsrtp was built; ``srtp_crypto_policy_t`` is opaque there, 24 bytes).
pylibsrtp names protection profiles only for AES-128-CM and AES-GCM, and libsrtp's
``srtp_profile_t`` has no AES-192/256-CM profile at all, so we call libsrtp's own crypto-policy
setters (``srtp_crypto_policy_set_aes_cm_256_hmac_sha1_80`` and friends, RFC 6188) on the
``rtp``/``rtcp`` members of a cffi-allocated ``srtp_policy_t``. The bundled library exports them
but the cdef does not declare them, so they are looked up with ctypes in the very shared object
pylibsrtp loaded. We never write the opaque struct ourselves; only libsrtp does. Every suite goes
through the setters, also those pylibsrtp names (the tests compare the results byte for byte with
``srtp_crypto_policy_set_from_profile_for_rtp``/``_rtcp``). A pylibsrtp upgrade must re-check
the cdef, the exported setters and the error numbers below, then move the pin.

AES-192: libsrtp 2.7.0 gets the key derivation wrong, so Python does it
----------------------------------------------------------------------
libsrtp up to 2.7.0 runs its AES-256 key derivation for every master key longer than 30 octets,
widening an AES-192 key and salt with zeros (cisco/libsrtp issue 763, fixed after 2.7.0). Its
AES_192_CM suites therefore derive other session keys than RFC 6188 §7.4 and every conforming
peer: not one packet would authenticate. An import-time known-answer check finds out; while it
fails, both AES_192_CM suites are listed in :data:`PYTHON_SUITES` (with the reason) and
:class:`SrtpSession` protects them with :mod:`gateway.core.media.srtp_python` (AES-CM and
HMAC-SHA1 over the ``cryptography`` package, RFC 3711 with RFC 6188's 192-bit key derivation).
A pylibsrtp with a fixed libsrtp passes the check, and libsrtp takes the suites back by itself.
Every suite is provided one way or the other: :data:`UNSUPPORTED_SUITES` is empty.

Speed
-----
The four transforms are :class:`SrtpTransform` objects. Called with ``bytes`` (the relay's
``Transform`` contract) they copy the packet into a buffer of their own, let libsrtp work there
in place and return a ``bytes`` copy. The relay does better: :meth:`SrtpTransform.in_buffer`
gives it a function that runs libsrtp directly on the relay's receive buffer, so a packet is
received, unprotected, protected and sent from the same memory, with no copy made in Python.
Either way libsrtp is called through pylibsrtp's cffi ``lib`` with a reused length cell (not
``pylibsrtp.Session``, which allocates per packet and raises an exception with a message on
every failure): a drop is a status number, counted, and costs no exception.
``benchmarks/srtp_protect.py`` prints the cost per packet and suite.

Memory: a session holds its two libsrtp contexts (plus libsrtp's per-SSRC state). The copy
buffer of the ``bytes`` path is allocated on first use, as long as the largest packet so far:
sessions used only by the relay never allocate it.

Keys are copied into C memory only for ``srtp_create``, which derives the session keys; the copy
is then zeroed. No key material is kept in Python objects, logged or shown in a repr. (The
Python path keeps its session keys in ``cryptography``'s OpenSSL contexts; see its module.)
"""

from __future__ import annotations

import ctypes
import hashlib
import struct
from collections.abc import Callable, Mapping
from importlib.machinery import EXTENSION_SUFFIXES
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import attrs
import pylibsrtp  # importing it runs srtp_init() once per process
from pylibsrtp import _binding

from gateway.core.media.errors import LocalMediaError
from gateway.core.media.srtp_python import Drop, SrtpReceiver, SrtpSender

if TYPE_CHECKING:
    from gateway.core.interfaces import SrtpKeys

COMPILED = __file__.endswith(tuple(EXTENSION_SUFFIXES))
"""True when this module runs compiled by mypyc, with the relay (gateway.core.media.relay)."""

_ffi: Any = _binding.ffi
_lib: Any = _binding.lib

__all__ = [
    "DEFAULT_REPLAY_WINDOW",
    "MAX_MKI_LENGTH",
    "MAX_PACKET_LENGTH",
    "PYTHON_SUITES",
    "SUITES",
    "SUPPORTED_SUITES",
    "UNSUPPORTED_SUITES",
    "MkiTransform",
    "OutboundSrtpSession",
    "SrtpSession",
    "SrtpStatistics",
    "SrtpSuite",
    "SrtpTransform",
    "libsrtp_version",
]


@attrs.frozen
class SrtpSuite:
    """One SDES crypto-suite (RFC 4568 §6.2, RFC 6188 §3, RFC 7714 §14.2) and how libsrtp
    provides it (or would: see :data:`PYTHON_SUITES`)."""

    name: str
    master_key_length: int
    """Octets of the master key (the AES key size)."""
    master_salt_length: int
    """Octets of the master salt: 14 for AES-CM, 12 for AES-GCM."""
    rtp_tag_length: int
    """Octets of the SRTP authentication tag (HMAC-SHA1 truncated to 80 or 32 bits; GCM 16)."""
    rtcp_tag_length: int
    """Octets of the SRTCP tag: 10 for every HMAC-SHA1 suite (RFC 3711 §5.2), 16 for GCM."""
    rtp_policy: str
    """The libsrtp function that fills the RTP crypto policy, without its
    ``srtp_crypto_policy_set_`` prefix."""
    rtcp_policy: str
    """The same for the RTCP crypto policy."""

    @property
    def key_salt_length(self) -> int:
        """Octets of master key plus master salt: the length of each ``SrtpKeys`` key."""
        return self.master_key_length + self.master_salt_length

    @property
    def aead(self) -> bool:
        """True for the AES-GCM suites (RFC 7714): the tag is part of the ciphertext, and an MKI
        follows it (and the SRTCP trailer) instead of preceding it."""
        return self.name.startswith("AEAD_")


# libsrtp's crypto-policy setters, without their "srtp_crypto_policy_set_" prefix. libsrtp 2.7
# has no function for AES_CM_128_HMAC_SHA1_80: srtp.h makes
# srtp_crypto_policy_set_aes_cm_128_hmac_sha1_80 a macro for the RTP default, which is that suite;
# the RTCP default is the same transform for SRTCP.
_CM128_80, _CM128_RTCP, _CM128_32 = "rtp_default", "rtcp_default", "aes_cm_128_hmac_sha1_32"
_CM192_80, _CM192_32 = "aes_cm_192_hmac_sha1_80", "aes_cm_192_hmac_sha1_32"
_CM256_80, _CM256_32 = "aes_cm_256_hmac_sha1_80", "aes_cm_256_hmac_sha1_32"
_GCM128, _GCM256 = "aes_gcm_128_16_auth", "aes_gcm_256_16_auth"

# fmt: off
_SUITE_TABLE = (
    #          name                      key salt  tag: RTP RTCP  policy: RTP  RTCP
    # RFC 4568 §6.2.1, §6.2.2
    SrtpSuite("AES_CM_128_HMAC_SHA1_80", 16, 14,        10, 10,   _CM128_80, _CM128_RTCP),
    SrtpSuite("AES_CM_128_HMAC_SHA1_32", 16, 14,         4, 10,   _CM128_32, _CM128_RTCP),
    # RFC 6188 §3
    SrtpSuite("AES_192_CM_HMAC_SHA1_80", 24, 14,        10, 10,   _CM192_80, _CM192_80),
    SrtpSuite("AES_192_CM_HMAC_SHA1_32", 24, 14,         4, 10,   _CM192_32, _CM192_80),
    SrtpSuite("AES_256_CM_HMAC_SHA1_80", 32, 14,        10, 10,   _CM256_80, _CM256_80),
    SrtpSuite("AES_256_CM_HMAC_SHA1_32", 32, 14,         4, 10,   _CM256_32, _CM256_80),
    # RFC 7714 §14.2: the 16-octet GCM tag on SRTP and SRTCP
    SrtpSuite("AEAD_AES_128_GCM",        16, 12,        16, 16,   _GCM128,   _GCM128),
    SrtpSuite("AEAD_AES_256_GCM",        32, 12,        16, 16,   _GCM256,   _GCM256),
)
# fmt: on

SUITES: Mapping[str, SrtpSuite] = MappingProxyType({suite.name: suite for suite in _SUITE_TABLE})
"""Every suite the gateway can protect media with, by SDES name."""

DEFAULT_REPLAY_WINDOW = 128
"""libsrtp's default SRTP replay window (RFC 3711 §3.3.2 asks for at least 64)."""

_MIN_REPLAY_WINDOW = 64  # libsrtp 2.7 srtp_stream_init: 64 <= window_size < 0x8000
_MAX_REPLAY_WINDOW = 0x7FFF

DEFAULT_MAX_SSRCS = 32
"""SSRCs per direction of a session; more are dropped (libsrtp keeps state for each)."""

MAX_PACKET_LENGTH = 65536
"""Longest packet a session accepts: the relay's receive buffer."""

MAX_MKI_LENGTH = 128
"""Longest MKI in octets (RFC 4568 §6.1: 1..128; libsrtp's SRTP_MAX_MKI_LEN)."""

MAX_PARKED_CONTEXTS = 4
"""Contexts a session keeps after :meth:`SrtpSession.rekey` replaced them, for their keys'
return (forks answering in turn); beyond this one is freed (libsrtp zeroes its keys): the
oldest of the peer's, else the oldest of ours."""

MAX_FREED_LOCAL_KEYS = 64
"""Keys of ours whose outbound context a session freed, remembered (as digests, never the
keys) so that their return is refused rather than restarting their packet index under them
(RFC 3711 §9.1); the oldest beyond this is forgotten."""

# SRTCP adds the E flag and index word, then the tag (and MKI, unused here): libsrtp needs room
# after the packet (pylibsrtp's SRTP_MAX_SRTCP_TRAILER_LEN: index + 16 tag + 128 MKI).
TRAILER_ROOM = pylibsrtp.SRTP_MAX_SRTCP_TRAILER_LEN
"""Octets a buffer given to :meth:`SrtpTransform.in_buffer` must have free after the longest
packet it will hold: protection appends a tag (SRTCP also its index)."""
_MIN_COPY_BUFFER = 2048  # the bytes path's first buffer: any RTP packet of a voice call

_unpack_ssrc = struct.Struct("!I").unpack_from
_NO_SSRC = -1  # the key of packets too short to carry one (libsrtp refuses them anyway)

# srtp_err_status_t of libsrtp 2.7.0 (srtp.h); pylibsrtp.ERRORS lists the messages in this
# order, which a test checks.
_ERR_AUTH_FAIL = 7
_ERR_REPLAY_FAIL = 9  # index already seen
_ERR_REPLAY_OLD = 10  # index older than the window
_REPLAY_ERRORS = (_ERR_REPLAY_FAIL, _ERR_REPLAY_OLD)

_protect = _lib.srtp_protect
_protect_rtcp = _lib.srtp_protect_rtcp
_unprotect = _lib.srtp_unprotect
_unprotect_rtcp = _lib.srtp_unprotect_rtcp


def _load_policy_setters() -> dict[str, Any]:
    """Find libsrtp's crypto-policy setters in the shared object pylibsrtp loaded.

    dlopen() of an object that is already loaded returns that same instance (a test checks that
    the setters' addresses lie in the mapping of pylibsrtp's binding). The setters only write
    constants into the struct they are given; contexts are made by pylibsrtp's binding.
    """
    library = ctypes.CDLL(_binding.__file__)
    setters: dict[str, Any] = {}
    names = {n for suite in SUITES.values() for n in (suite.rtp_policy, suite.rtcp_policy)}
    for name in sorted(names):
        try:
            setter = getattr(library, "srtp_crypto_policy_set_" + name)
        except AttributeError:
            raise ImportError(
                f"the libsrtp bundled with pylibsrtp {pylibsrtp.__version__} does not export "
                f"srtp_crypto_policy_set_{name} (this module was checked against 1.0.0)"
            ) from None
        setter.argtypes = [ctypes.c_void_p]
        setter.restype = None
        setters[name] = setter
    return setters


_POLICY_SETTERS = _load_policy_setters()


def libsrtp_version() -> str:
    """The version string of the libsrtp in use, e.g. ``"libsrtp2 2.7.0"`` (for diagnostics)."""
    version = ctypes.CDLL(_binding.__file__).srtp_get_version_string
    version.restype = ctypes.c_char_p
    result: bytes = version()
    return result.decode("ascii", "replace")


@attrs.frozen
class SrtpStatistics:
    """Counters of one :class:`SrtpSession` since it was made (RTP and RTCP together)."""

    protected: int
    """Packets protected for sending to the leg."""
    unprotected: int
    """Packets from the leg that authenticated and were decrypted."""
    auth_failures: int
    """Packets from the leg whose tag did not verify (tampered, wrong key, not SRTP at all)."""
    replays: int
    """Packets from the leg already received or older than the replay window, and packets
    towards the leg that would repeat an SRTP index already sent (a duplicate)."""
    ssrc_limit: int
    """Packets of an SSRC beyond ``max_ssrcs`` in their direction."""
    other_errors: int
    """Everything else libsrtp refused (e.g. a packet too short for its header or tag, an
    oversized packet) and packets after :meth:`SrtpSession.close`."""
    mki_mismatches: int = 0
    """Packets from the leg whose MKI was not the one its key was given with, or that were too
    short to carry one (only on a key with an MKI, RFC 3711 §3.1)."""

    @property
    def dropped(self) -> int:
        """Packets dropped for any reason."""
        return (
            self.auth_failures
            + self.replays
            + self.ssrc_limit
            + self.other_errors
            + self.mki_mismatches
        )


class _Context:
    """One context (one master key, one direction) and its counters. Hot-path state.

    ``ctx`` is a libsrtp ``srtp_t`` or, for :data:`PYTHON_SUITES`, an ``SrtpSender`` or
    ``SrtpReceiver`` (which keeps its own SSRC set, so ``ssrcs`` stays empty)."""

    __slots__ = (
        "auth_failures",
        "ctx",
        "mki_mismatches",
        "other_errors",
        "passed",
        "replays",
        "ssrc_limit",
        "ssrcs",
    )

    def __init__(self, ctx: Any) -> None:
        self.ctx: Any = ctx  # None once closed
        self.ssrcs: set[int] = set()  # SSRCs libsrtp holds state for
        self.passed = 0
        self.auth_failures = 0
        self.replays = 0
        self.ssrc_limit = 0
        self.other_errors = 0
        self.mki_mismatches = 0


def _create_context(suite: SrtpSuite, key_salt: bytes, ssrc_type: int, replay_window: int) -> Any:
    """A libsrtp context for one master key; its key copy is zeroed before returning."""
    policy = _ffi.new("srtp_policy_t *")
    for setter, member in ((suite.rtp_policy, policy.rtp), (suite.rtcp_policy, policy.rtcp)):
        _POLICY_SETTERS[setter](int(_ffi.cast("uintptr_t", _ffi.addressof(member))))
    policy.ssrc.type = ssrc_type
    policy.window_size = replay_window
    policy.allow_repeat_tx = 0
    key = _ffi.new("unsigned char[]", len(key_salt))
    _ffi.memmove(key, key_salt, len(key_salt))
    policy.key = key
    session = _ffi.new("srtp_t *")
    try:
        status = _lib.srtp_create(session, policy)
    finally:
        _ffi.memmove(key, bytes(len(key_salt)), len(key_salt))
        policy.key = _ffi.NULL
    if status != _lib.srtp_err_status_ok:
        reason = pylibsrtp.ERRORS[status] if status < len(pylibsrtp.ERRORS) else str(status)
        raise LocalMediaError(f"libsrtp refused a {suite.name} context: {reason}")
    return _ffi.gc(session[0], _lib.srtp_dealloc)


# RFC 6188 §7.4's master key and salt, libsrtp's test packet (spec §6.5) and the SRTP packet
# that RFC 6188's key derivation gives for them (from the independent reference implementation in
# tests/unit/media/test_srtp_vectors.py, which checks this constant against the RFC's vectors).
_AES192_CHECK_KEY = bytes.fromhex(
    "73edc66c4fa15776fb57f9505c17136550ffda71f3e8e5f1c8522f3acd4ce86d5add78edbb11"
)
_AES192_CHECK_RTP = bytes.fromhex("800f1234decafbadcafebabe") + b"\xab" * 16
_AES192_CHECK_SRTP = bytes.fromhex(
    "800f1234decafbadcafebabe1e84e1395a55cc6cd7b80db939a83a78e3e7e10bf579c261e5c6"
)


def _libsrtp_aes192_follows_rfc6188() -> bool:
    """Protect one packet with AES_192_CM_HMAC_SHA1_80 and compare with RFC 6188's result
    (libsrtp <= 2.7.0 fails: see "AES-192" in the module docstring; the fix is libsrtp pull
    requests 765 and 770)."""
    suite = SUITES["AES_192_CM_HMAC_SHA1_80"]
    ctx = _create_context(suite, _AES192_CHECK_KEY, _lib.ssrc_any_outbound, DEFAULT_REPLAY_WINDOW)
    try:
        size = len(_AES192_CHECK_RTP)
        packet = _ffi.new("unsigned char[]", size + suite.rtp_tag_length)
        _ffi.memmove(packet, _AES192_CHECK_RTP, size)
        length = _ffi.new("int *", size)
        status = _protect(ctx, packet, length)
        protected: bytes = _ffi.buffer(packet, length[0])[:]
        return status == 0 and protected == _AES192_CHECK_SRTP
    finally:
        _ffi.release(ctx)


_AES192_REASON = (
    "the libsrtp bundled with pylibsrtp derives AES-192 session keys with its AES-256 key "
    "derivation (cisco/libsrtp issue 763, fixed after libsrtp 2.7.0), so no RFC 6188 peer could "
    "decrypt or authenticate what it protects"
)

PYTHON_SUITES: Mapping[str, str] = MappingProxyType(
    {}
    if _libsrtp_aes192_follows_rfc6188()
    else {name: _AES192_REASON for name in SUITES if name.startswith("AES_192_")}
)
"""Suites of :data:`SUITES` that :class:`SrtpSession` protects with
:mod:`gateway.core.media.srtp_python` instead of libsrtp, with the reason (libsrtp gets them
wrong). Empty once the bundled libsrtp passes the import-time AES-192 check."""

UNSUPPORTED_SUITES: Mapping[str, str] = MappingProxyType({})
"""Suites of :data:`SUITES` that cannot be provided correctly, with the reason:
:class:`SrtpSession` refuses them and key exchanges must neither offer nor accept them. Empty:
the AES-192 suites libsrtp gets wrong are provided in Python (:data:`PYTHON_SUITES`)."""

SUPPORTED_SUITES: tuple[str, ...] = tuple(n for n in SUITES if n not in UNSUPPORTED_SUITES)
"""Names of the suites :class:`SrtpSession` provides, in :data:`SUITES` order."""


_Step = Callable[[int], int]


def _count_failure(context: _Context, status: int) -> None:
    if status == _ERR_AUTH_FAIL:
        context.auth_failures += 1
    elif status in _REPLAY_ERRORS:
        context.replays += 1
    else:
        context.other_errors += 1


class _BufferCells:
    """A buffer's C view and one length cell: shared by every step on that buffer (all of a
    relay's transforms), so the hot path touches one of each, not one per transform."""

    __slots__ = ("buffer", "cdata", "length")

    def __init__(self, buffer: bytearray) -> None:
        self.buffer = buffer
        self.cdata = _ffi.from_buffer("unsigned char[]", buffer, require_writable=True)
        self.length = _ffi.new("int *")


_last_cells: _BufferCells | None = None  # the relay's buffer: every in_buffer() call names it


def _cells_for(buffer: bytearray) -> _BufferCells:
    global _last_cells
    if _last_cells is None or _last_cells.buffer is not buffer:
        _last_cells = _BufferCells(buffer)
    return _last_cells


class _LibsrtpStep:
    """libsrtp's ``function`` (srtp_protect & co.) in place on a buffer; :meth:`run` takes the
    length of the packet at its start, leaves the result there and returns its length, or -1
    when the packet is dropped (counted on ``context``). The per-packet path of every libsrtp
    suite; one object, so the hot path finds all it needs in a cache line or two."""

    __slots__ = (
        "buffer",
        "cdata",
        "context",
        "function",
        "has_ssrc",
        "length",
        "limit",
        "max_ssrcs",
        "ssrc_at",
        "ssrcs",
    )

    def __init__(
        self, context: _Context, function: Any, buffer: bytearray, ssrc_at: int, max_ssrcs: int
    ) -> None:
        cells = _cells_for(buffer)
        self.buffer = buffer
        self.cdata = cells.cdata
        self.length = cells.length
        self.context = context
        self.function = function
        self.limit = min(MAX_PACKET_LENGTH, len(buffer) - TRAILER_ROOM)
        self.ssrc_at = ssrc_at
        # The SSRC sits at octet 8 in RTP (RFC 3550 §5.1), 4 in RTCP (§6.4.1).
        self.has_ssrc = ssrc_at + 4
        self.ssrcs = context.ssrcs
        self.max_ssrcs = max_ssrcs

    def run(self, size: int) -> int:
        context = self.context
        ctx = context.ctx
        if ctx is None or size > self.limit:
            context.other_errors += 1
            return -1
        ssrcs = self.ssrcs
        ssrc = _unpack_ssrc(self.buffer, self.ssrc_at)[0] if size >= self.has_ssrc else _NO_SSRC
        known = ssrc in ssrcs
        if not known and len(ssrcs) >= self.max_ssrcs:
            context.ssrc_limit += 1
            return -1
        length = self.length
        length[0] = size
        function = self.function  # a slot load, not a method lookup (see relay._relay_ready)
        status = function(ctx, self.cdata, length)
        if status:
            _count_failure(context, status)
            return -1
        if not known:
            ssrcs.add(ssrc)
        context.passed += 1
        result: int = length[0]
        return result


class _LibsrtpPairStep:
    """Two libsrtp steps on the same buffer in one call: SRTP->SRTP bridging, unprotect with
    one leg's key then protect with the other's. The same as calling ``first.run`` then
    ``second.run`` (same checks, same counters), minus a Python call, and the SSRC is read once:
    unprotecting leaves the header, so the second step sees the same SSRC at the same offset."""

    __slots__ = ("first", "second")

    def __init__(self, first: _LibsrtpStep, second: _LibsrtpStep) -> None:
        self.first = first
        self.second = second

    def run(self, size: int) -> int:
        step = self.first
        context = step.context
        ctx = context.ctx
        if ctx is None or size > step.limit:
            context.other_errors += 1
            return -1
        ssrc = _unpack_ssrc(step.buffer, step.ssrc_at)[0] if size >= step.has_ssrc else _NO_SSRC
        ssrcs = step.ssrcs
        known = ssrc in ssrcs
        if not known and len(ssrcs) >= step.max_ssrcs:
            context.ssrc_limit += 1
            return -1
        length = step.length
        length[0] = size
        function = step.function  # a slot load, not a method lookup (see relay._relay_ready)
        status = function(ctx, step.cdata, length)
        if status:
            _count_failure(context, status)
            return -1
        if not known:
            ssrcs.add(ssrc)
        context.passed += 1
        # The second step, on what the first left in the buffer and in the shared length cell.
        step = self.second
        size = length[0]
        context = step.context
        ctx = context.ctx
        if ctx is None or size > step.limit:
            context.other_errors += 1
            return -1
        if size < step.has_ssrc:
            ssrc = _NO_SSRC
        ssrcs = step.ssrcs
        known = ssrc in ssrcs
        if not known and len(ssrcs) >= step.max_ssrcs:
            context.ssrc_limit += 1
            return -1
        function = step.function  # a slot load, not a method lookup (see relay._relay_ready)
        status = function(ctx, step.cdata, length)
        if status:
            _count_failure(context, status)
            return -1
        if not known:
            ssrcs.add(ssrc)
        context.passed += 1
        result: int = length[0]
        return result


def _libsrtp_step(
    context: _Context, function: Any, buffer: bytearray, ssrc_at: int, max_ssrcs: int
) -> _Step:
    return _LibsrtpStep(context, function, buffer, ssrc_at, max_ssrcs).run


class SrtpTransform:
    """One of the four transforms of an :class:`SrtpSession` (a relay ``Transform``).

    Call it with a packet: it returns the protected (unprotected) packet, or None when the
    packet is dropped (counted by reason in :meth:`SrtpSession.statistics`). The relay runs it
    in its own receive buffer instead (:meth:`in_buffer`).
    """

    __slots__ = (
        "_bound",
        "_bound_step",
        "_context",
        "_copy",
        "_copy_step",
        "_function",
        "_max_ssrcs",
        "_python",
        "_ssrc_at",
    )

    def __init__(
        self,
        context: _Context,
        function: Any,
        python: Callable[[Any, bytes], bytes | Drop],
        ssrc_at: int,
        max_ssrcs: int,
        *,
        use_python: bool,
    ) -> None:
        self._context = context
        self._function = function  # libsrtp's srtp_protect & co.
        self._python = python if use_python else None  # srtp_python's, for PYTHON_SUITES
        self._ssrc_at = ssrc_at
        self._max_ssrcs = max_ssrcs
        self._copy: bytearray | None = None  # the bytes path's buffer, made on first use
        self._copy_step: _Step | None = None
        self._bound: bytearray | None = None  # the buffer of the last in_buffer() call
        self._bound_step: _LibsrtpStep | None = None

    def __call__(self, packet: bytes) -> bytes | None:
        context = self._context
        size = len(packet)
        if self._python is not None:
            return _process_python(context, self._python, packet)
        if context.ctx is None or size > MAX_PACKET_LENGTH:
            context.other_errors += 1
            return None
        copy, step = self._copy, self._copy_step
        if copy is None or step is None or len(copy) < size + TRAILER_ROOM:
            copy = self._copy = bytearray(max(_MIN_COPY_BUFFER, size + TRAILER_ROOM))
            step = self._copy_step = _libsrtp_step(
                context, self._function, copy, self._ssrc_at, self._max_ssrcs
            )
        copy[:size] = packet
        size = step(size)
        if size < 0:
            return None
        with memoryview(copy) as view:
            return view[:size].tobytes()

    def in_buffer(self, buffer: bytearray) -> Callable[[int], int] | None:
        """This transform working in place on ``buffer`` (the relay's receive buffer, never
        resized): the returned function takes the length of the packet at the start of
        ``buffer``, leaves the result there and returns its length, or -1 when the packet is
        dropped (counted as by a call). ``buffer`` must keep :data:`TRAILER_ROOM` octets free
        after the longest packet; longer ones are dropped. None for the :data:`PYTHON_SUITES`,
        which only work on ``bytes``."""
        step = self._step_on(buffer)
        return None if step is None else step.run

    def in_buffer_then(self, then: object, buffer: bytearray) -> Callable[[int], int] | None:
        """This transform and then ``then`` (another :class:`SrtpTransform` of the same packet
        kind, RTP or RTCP) in place on ``buffer``, in one call: what the relay runs for an
        SRTP->SRTP direction. It counts and drops exactly as :meth:`in_buffer` of each, one
        after the other. None when either cannot work in place."""
        if not isinstance(then, SrtpTransform) or then._ssrc_at != self._ssrc_at:
            return None
        first, second = self._step_on(buffer), then._step_on(buffer)
        if first is None or second is None:
            return None
        return _LibsrtpPairStep(first, second).run

    def _step_on(self, buffer: bytearray) -> _LibsrtpStep | None:
        if self._python is not None:
            return None
        if self._bound is not buffer or self._bound_step is None:
            self._bound_step = _LibsrtpStep(
                self._context, self._function, buffer, self._ssrc_at, self._max_ssrcs
            )
            self._bound = buffer
        return self._bound_step


def _process_python(
    context: _Context, function: Callable[[Any, bytes], bytes | Drop], packet: bytes
) -> bytes | None:
    # The same counting for the Python path; srtp_python bounds the SSRCs itself.
    ctx = context.ctx
    if ctx is None or len(packet) > MAX_PACKET_LENGTH:
        context.other_errors += 1
        return None
    result = function(ctx, packet)
    if isinstance(result, bytes):
        context.passed += 1
        return result
    if result is Drop.AUTH_FAILURE:
        context.auth_failures += 1
    elif result is Drop.REPLAY:
        context.replays += 1
    elif result is Drop.SSRC_LIMIT:
        context.ssrc_limit += 1
    else:
        context.other_errors += 1
    return None


class MkiTransform:
    """An :class:`SrtpTransform` of a key whose packets carry an MKI (RFC 3711 §3.1, §3.4).

    ``insert`` False (unprotecting): the packet's MKI, ``tail`` octets before its end (the tag
    for HMAC-SHA1 suites, 0 for AEAD), must equal ``mki``; it is taken out and the rest goes to
    ``inner``. Another MKI, or a packet too short for MKI and tail, is dropped and counted as
    ``mki_mismatches``. ``insert`` True (protecting): ``inner`` protects, then ``mki`` is put
    ``tail`` octets before the end. A relay ``Transform``, with :meth:`in_buffer` as
    :class:`SrtpTransform`'s (never fused with the other direction: no ``in_buffer_then``).
    """

    __slots__ = ("_context", "_inner", "_insert", "_mki", "_tail")

    def __init__(self, inner: SrtpTransform, mki: bytes, tail: int, *, insert: bool) -> None:
        self._inner = inner
        self._context = inner._context
        self._mki = bytes(mki)
        self._tail = tail
        self._insert = insert

    def __call__(self, packet: bytes) -> bytes | None:
        mki, tail = self._mki, self._tail
        size = len(packet)
        if self._insert:
            result = self._inner(packet)
            if result is None:
                return None
            end = len(result) - tail
            return result[:end] + mki + result[end:]
        start = size - tail - len(mki)
        if start < 0 or packet[start : start + len(mki)] != mki:
            self._context.mki_mismatches += 1
            return None
        return self._inner(packet[:start] + packet[size - tail :])

    def in_buffer(self, buffer: bytearray) -> Callable[[int], int] | None:
        """As :meth:`SrtpTransform.in_buffer`: the MKI is checked and taken out (or put in) in
        ``buffer`` around the inner step. None when the inner transform cannot work in place."""
        step = self._inner.in_buffer(buffer)
        if step is None:
            return None
        return _MkiStep(self._context, step, buffer, self._mki, self._tail, self._insert).run


class _MkiStep:
    """:meth:`MkiTransform.in_buffer`'s step: the MKI in and out of the relay's buffer."""

    __slots__ = ("buffer", "context", "insert", "mki", "size", "step", "tail")

    def __init__(
        self,
        context: _Context,
        step: Callable[[int], int],
        buffer: bytearray,
        mki: bytes,
        tail: int,
        insert: bool,
    ) -> None:
        self.context = context
        self.step = step
        self.buffer = buffer
        self.mki = mki
        self.size = len(mki)
        self.tail = tail
        self.insert = insert

    def run(self, size: int) -> int:
        buffer, tail, length = self.buffer, self.tail, self.size
        if self.insert:
            # The inner step's limit leaves TRAILER_ROOM (tag, SRTCP index and a 128-octet MKI)
            # free after the packet, so the protected packet and the MKI fit.
            size = self.step(size)
            if size < 0:
                return -1
            end = size - tail
            buffer[end + length : size + length] = buffer[end:size]
            buffer[end : end + length] = self.mki
            return size + length
        start = size - tail - length
        if start < 0 or buffer[start : start + length] != self.mki:
            self.context.mki_mismatches += 1
            return -1
        # RFC 3711 §3.1: the MKI is not authenticated; libsrtp sees the packet without it.
        buffer[start : start + tail] = buffer[start + length : size]
        return self.step(size - length)


def _with_mki(
    transform: SrtpTransform, mki: bytes | None, tail: int, *, insert: bool
) -> SrtpTransform | MkiTransform:
    return transform if mki is None else MkiTransform(transform, mki, tail, insert=insert)


def _mki_tails(suite: SrtpSuite) -> tuple[int, int]:
    """Octets after the MKI in SRTP and in SRTCP: the tag, or nothing for AEAD (RFC 3711 §3.1
    and §3.4; RFC 7714 puts the tag inside the ciphertext, libsrtp the MKI at the end)."""
    if suite.aead:
        return 0, 0
    return suite.rtp_tag_length, suite.rtcp_tag_length


def _check_mki(which: str, mki: bytes | None) -> None:
    if mki is not None and not 1 <= len(mki) <= MAX_MKI_LENGTH:
        raise LocalMediaError(f"the {which} MKI must be 1..{MAX_MKI_LENGTH} octets")


@attrs.define(eq=False, init=False)
class SrtpSession:
    """SRTP/SRTCP protection of one media stream on one leg: the four relay transforms.

    ``keys.local_key`` protects what the gateway sends to the leg, ``keys.remote_key``
    authenticates what the leg sends; each is master key then master salt, as long as the suite
    says (:attr:`SrtpSuite.key_salt_length`). Raises
    :class:`~gateway.core.media.errors.LocalMediaError` for an unknown suite, a wrong key length
    or a replay window outside 64..32767; the messages never contain key material.

    Single-threaded, like the relay: call it from one thread only. Close it (or use it as a
    context manager) when the leg ends, to free libsrtp's state and its session keys at once.

    :attr:`implementation` says who does the cryptography: ``"libsrtp"``, or ``"python"`` for
    the suites of :data:`PYTHON_SUITES`. Both behave the same towards the relay.
    """

    suite: SrtpSuite
    implementation: str
    replay_window: int
    max_ssrcs: int
    protect_rtp: SrtpTransform | MkiTransform = attrs.field(repr=False)
    """RTP -> SRTP with the local key (RFC 3711 §3.3), or None when dropped (counted)."""
    protect_rtcp: SrtpTransform | MkiTransform = attrs.field(repr=False)
    """RTCP -> SRTCP with the local key (RFC 3711 §3.4), or None when dropped (counted)."""
    unprotect_rtp: SrtpTransform | MkiTransform = attrs.field(repr=False)
    """SRTP from the leg -> RTP with the remote key, or None when it fails authentication, is a
    replay, or is otherwise refused (counted by reason)."""
    unprotect_rtcp: SrtpTransform | MkiTransform = attrs.field(repr=False)
    """SRTCP from the leg -> RTCP with the remote key, or None (counted by reason)."""
    _inbound: _Context = attrs.field(repr=False)
    _outbound: _Context = attrs.field(repr=False)
    _raw_in: tuple[SrtpTransform, SrtpTransform] = attrs.field(repr=False)
    """The inbound (RTP, RTCP) transforms without MKI, kept while the peer's key is."""
    _raw_out: tuple[SrtpTransform, SrtpTransform] = attrs.field(repr=False)
    """The outbound ones, kept while our key is."""
    _retired: SrtpStatistics | None = attrs.field(repr=False)
    """What contexts freed after :meth:`rekey` replaced them had counted (None: none yet)."""
    _parked: dict[tuple[bool, str, bytes], tuple[_Context, tuple[SrtpTransform, SrtpTransform]]] = (
        attrs.field(repr=False)  # its keys hold master keys: never in a repr
    )
    """Contexts :meth:`rekey` replaced, by (inbound, suite, key), at most
    :data:`MAX_PARKED_CONTEXTS`, oldest first: a key that comes back takes its own again."""
    _freed_local: dict[bytes, None] = attrs.field(repr=False)
    """Digests of (suite, key) of our keys whose parked outbound context was freed, oldest
    first, at most :data:`MAX_FREED_LOCAL_KEYS`."""

    def __init__(
        self,
        keys: SrtpKeys,
        *,
        replay_window: int = DEFAULT_REPLAY_WINDOW,
        max_ssrcs: int = DEFAULT_MAX_SSRCS,
    ) -> None:
        suite = _available_suite(keys.suite)
        for which, key in (("local", keys.local_key), ("remote", keys.remote_key)):
            _check_key_length(suite, which, key)
        _check_mki("local", keys.local_mki)
        _check_mki("remote", keys.remote_mki)
        if not _MIN_REPLAY_WINDOW <= replay_window <= _MAX_REPLAY_WINDOW:
            raise LocalMediaError(
                f"replay window {replay_window} is outside "
                f"{_MIN_REPLAY_WINDOW}..{_MAX_REPLAY_WINDOW} (libsrtp's limits)"
            )
        if max_ssrcs < 1:
            raise LocalMediaError("max_ssrcs must be at least 1")
        self.suite = suite
        self.replay_window = replay_window
        self.max_ssrcs = max_ssrcs
        self.implementation = "python" if suite.name in PYTHON_SUITES else "libsrtp"
        self._retired = None
        self._parked = {}
        self._freed_local = {}
        self._inbound, self._raw_in = self._direction(suite, keys.remote_key, inbound=True)
        self._outbound, self._raw_out = self._direction(suite, keys.local_key, inbound=False)
        self._wrap(keys.local_mki, keys.remote_mki)

    def _direction(
        self, suite: SrtpSuite, key_salt: bytes, *, inbound: bool
    ) -> tuple[_Context, tuple[SrtpTransform, SrtpTransform]]:
        """A new context for one master key and its (RTP, RTCP) transforms, without MKI."""
        python = suite.name in PYTHON_SUITES
        window, max_ssrcs = self.replay_window, self.max_ssrcs
        if python:
            options = {
                "master_key_length": suite.master_key_length,
                "rtp_tag_length": suite.rtp_tag_length,
                "replay_window": window,
                "max_ssrcs": max_ssrcs,
            }
            ctx: Any = (
                SrtpReceiver(key_salt, **options) if inbound else SrtpSender(key_salt, **options)
            )
        else:
            ssrc_type = _lib.ssrc_any_inbound if inbound else _lib.ssrc_any_outbound
            ctx = _create_context(suite, key_salt, ssrc_type, window)
        context = _Context(ctx)
        if inbound:
            rtp = SrtpTransform(
                context, _unprotect, SrtpReceiver.unprotect_rtp, 8, max_ssrcs, use_python=python
            )
            rtcp = SrtpTransform(
                context,
                _unprotect_rtcp,
                SrtpReceiver.unprotect_rtcp,
                4,
                max_ssrcs,
                use_python=python,
            )
        else:
            rtp = SrtpTransform(
                context, _protect, SrtpSender.protect_rtp, 8, max_ssrcs, use_python=python
            )
            rtcp = SrtpTransform(
                context, _protect_rtcp, SrtpSender.protect_rtcp, 4, max_ssrcs, use_python=python
            )
        return context, (rtp, rtcp)

    def _wrap(self, local_mki: bytes | None, remote_mki: bytes | None) -> None:
        """Set the four public transforms: each direction's own, wrapped when its key has an
        MKI (plain otherwise: no per-packet cost)."""
        rtp_tail, rtcp_tail = _mki_tails(self.suite)
        self.protect_rtp = _with_mki(self._raw_out[0], local_mki, rtp_tail, insert=True)
        self.protect_rtcp = _with_mki(self._raw_out[1], local_mki, rtcp_tail, insert=True)
        self.unprotect_rtp = _with_mki(self._raw_in[0], remote_mki, rtp_tail, insert=False)
        self.unprotect_rtcp = _with_mki(self._raw_in[1], remote_mki, rtcp_tail, insert=False)

    def rekey(self, previous: SrtpKeys, keys: SrtpKeys) -> None:
        """Take ``keys`` in place of ``previous`` (the keys the session was made or last
        re-keyed with; a re-INVITE's or UPDATE's new negotiation), then read the transforms
        again: they may be new objects.

        A direction whose master key stays the same (same suite, same key) keeps its context:
        its roll-over counter, SRTCP index, replay window and SSRC state go on, only its MKI is
        the new one (RFC 4568 §7.1.4: a key kept keeps its crypto context; RFC 3711 §3.3.1: the
        ROC continues while the master key does). Restarting it would lose the peer's audio
        after its next sequence wrap and, for our own key, protect packets again under indices
        already used: the same keystream twice (RFC 3711 §9.1). A direction whose key changes
        gets a new context, or the one its key had before a re-key replaced it (parked, at
        most :data:`MAX_PARKED_CONTEXTS`, then freed; forks answering in turn bring keys
        back); the counters of every context stay in :meth:`statistics`. Raises
        :class:`~gateway.core.media.errors.LocalMediaError` as the constructor does, and then
        changes nothing."""
        suite = _available_suite(keys.suite)
        for which, key in (("local", keys.local_key), ("remote", keys.remote_key)):
            _check_key_length(suite, which, key)
        _check_mki("local", keys.local_mki)
        _check_mki("remote", keys.remote_mki)
        same_suite = previous.suite == keys.suite
        keep_in = same_suite and previous.remote_key == keys.remote_key
        keep_out = same_suite and previous.local_key == keys.local_key
        # A key whose context an earlier re-key replaced takes it back (parked, not freed): the
        # first fork's 200 after another fork's 183 (RFC 3261 §12.1.2) brings back keys that
        # carried its early media, and a new context would restart their index at ROC 0.
        in_slot = (True, keys.suite, keys.remote_key)
        out_slot = (False, keys.suite, keys.local_key)
        if (
            not keep_out
            and out_slot not in self._parked
            and _key_digest(keys.suite, keys.local_key) in self._freed_local
        ):
            # Its context is gone: a new one would protect from index 0 again under a key
            # that protected those indices already, the same keystream twice (RFC 3711 §9.1).
            # No key exchange of ours brings a key back after so many others; refused.
            raise LocalMediaError(
                "a key of ours came back after its SRTP context was freed: a new context "
                "would use its packet indices again (RFC 3711 §9.1)"
            )
        inbound = None if keep_in else self._parked.get(in_slot)
        if not keep_in and inbound is None:
            inbound = self._direction(suite, keys.remote_key, inbound=True)
        try:
            outbound = None if keep_out else self._parked.get(out_slot)
            if not keep_out and outbound is None:
                outbound = self._direction(suite, keys.local_key, inbound=False)
        except BaseException:
            if inbound is not None and in_slot not in self._parked:
                _free(inbound[0])
            raise
        # Both taken out before either old one is parked: parking may free the oldest.
        if inbound is not None:
            self._parked.pop(in_slot, None)
        if outbound is not None:
            self._parked.pop(out_slot, None)
        if inbound is not None:
            self._park((True, previous.suite, previous.remote_key), (self._inbound, self._raw_in))
            self._inbound, self._raw_in = inbound
        if outbound is not None:
            self._park((False, previous.suite, previous.local_key), (self._outbound, self._raw_out))
            self._outbound, self._raw_out = outbound
        self.suite = suite
        self.implementation = "python" if suite.name in PYTHON_SUITES else "libsrtp"
        self._wrap(keys.local_mki, keys.remote_mki)

    # -- state -----------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._outbound.ctx is None

    def _park(
        self,
        slot: tuple[bool, str, bytes],
        entry: tuple[_Context, tuple[SrtpTransform, SrtpTransform]],
    ) -> None:
        """Keep a replaced context for its key's return; beyond the bound one is freed, its
        counters kept in the totals (they never go backwards): the peer's oldest, whose loss
        costs at most its packets after a sequence wrap, before any of ours, whose key is
        then remembered so that it never gets a new context (:meth:`rekey`)."""
        self._parked[slot] = entry
        while len(self._parked) > MAX_PARKED_CONTEXTS:
            oldest = next((s for s in self._parked if s[0]), next(iter(self._parked)))
            inbound, context = oldest[0], self._parked.pop(oldest)[0]
            if not inbound:
                self._freed_local[_key_digest(oldest[1], oldest[2])] = None
                while len(self._freed_local) > MAX_FREED_LOCAL_KEYS:
                    del self._freed_local[next(iter(self._freed_local))]
            freed = _statistics_of(context if inbound else None, None if inbound else context)
            self._retired = freed if self._retired is None else _plus(self._retired, freed)
            _free(context)

    def statistics(self) -> SrtpStatistics:
        current = _statistics_of(self._inbound, self._outbound)
        for (inbound, _, _), (context, _) in self._parked.items():
            parked = _statistics_of(context if inbound else None, None if inbound else context)
            current = _plus(current, parked)
        retired = self._retired
        return current if retired is None else _plus(retired, current)

    def close(self) -> None:
        """Free both contexts now (libsrtp zeroes the session keys; the Python path drops its
        OpenSSL contexts). Packets given to the transforms afterwards are dropped and counted as
        ``other_errors``. Closing twice is harmless."""
        _free(self._inbound)
        _free(self._outbound)
        for context, _ in self._parked.values():
            _free(context)

    def __enter__(self) -> SrtpSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _key_digest(suite: str, key: bytes) -> bytes:
    """What a session remembers of a key of ours it no longer has a context for."""
    return hashlib.blake2b(suite.encode() + b"\0" + key, digest_size=16).digest()


def _available_suite(name: str) -> SrtpSuite:
    suite = SUITES.get(name)
    if suite is None:
        raise LocalMediaError(f"unknown SRTP suite {name!r}")
    if suite.name in UNSUPPORTED_SUITES:
        raise LocalMediaError(
            f"SRTP suite {suite.name} is not available: {UNSUPPORTED_SUITES[suite.name]}"
        )
    return suite


def _check_key_length(suite: SrtpSuite, which: str, key: bytes) -> None:
    if len(key) != suite.key_salt_length:
        raise LocalMediaError(
            f"{suite.name} needs a {suite.key_salt_length}-octet {which} key and salt, "
            f"got {len(key)} octets"
        )


def _free(context: _Context) -> None:
    """Free a context's libsrtp or Python state now; later packets count as other_errors."""
    ctx, context.ctx = context.ctx, None
    if isinstance(ctx, SrtpSender | SrtpReceiver):
        ctx.close()
    elif ctx is not None:
        _ffi.release(ctx)  # runs srtp_dealloc now instead of at garbage collection


def _statistics_of(inbound: _Context | None, outbound: _Context | None) -> SrtpStatistics:
    """The counters of a session's inbound and outbound contexts (either may be left out)."""
    contexts = [c for c in (inbound, outbound) if c is not None]
    return SrtpStatistics(
        protected=outbound.passed if outbound is not None else 0,
        unprotected=inbound.passed if inbound is not None else 0,
        auth_failures=sum(c.auth_failures for c in contexts),
        replays=sum(c.replays for c in contexts),
        ssrc_limit=sum(c.ssrc_limit for c in contexts),
        other_errors=sum(c.other_errors for c in contexts),
        mki_mismatches=inbound.mki_mismatches if inbound is not None else 0,
    )


def _plus(a: SrtpStatistics, b: SrtpStatistics) -> SrtpStatistics:
    return SrtpStatistics(
        *(getattr(a, f.name) + getattr(b, f.name) for f in attrs.fields(SrtpStatistics))
    )


@attrs.define(eq=False, init=False)
class OutboundSrtpSession:
    """SRTP/SRTCP protection of what the gateway sends on one stream, under one master key, with
    no inbound context: for media that flows one way only, such as the copies a SIPREC client
    sends its recorder (RFC 7866 §8.1.1: every stream of a recording session is sendonly).

    ``key_salt`` is our master key then master salt (an SDES ``inline:`` key). The outbound
    context is the one :class:`SrtpSession` makes (``ssrc_any_outbound``, never an index twice,
    at most ``max_ssrcs`` SSRCs), with the same errors, counters and key hygiene; close it when
    the stream ends.
    """

    suite: SrtpSuite
    implementation: str
    max_ssrcs: int
    protect_rtp: SrtpTransform = attrs.field(repr=False)
    """RTP -> SRTP (RFC 3711 §3.3), or None when dropped (counted)."""
    protect_rtcp: SrtpTransform = attrs.field(repr=False)
    """RTCP -> SRTCP (RFC 3711 §3.4), or None when dropped (counted)."""
    _outbound: _Context = attrs.field(repr=False)

    def __init__(
        self, suite_name: str, key_salt: bytes, *, max_ssrcs: int = DEFAULT_MAX_SSRCS
    ) -> None:
        suite = _available_suite(suite_name)
        _check_key_length(suite, "local", key_salt)
        if max_ssrcs < 1:
            raise LocalMediaError("max_ssrcs must be at least 1")
        self.suite = suite
        self.max_ssrcs = max_ssrcs
        python = suite.name in PYTHON_SUITES
        if python:
            self.implementation = "python"
            self._outbound = _Context(
                SrtpSender(
                    key_salt,
                    master_key_length=suite.master_key_length,
                    rtp_tag_length=suite.rtp_tag_length,
                    replay_window=DEFAULT_REPLAY_WINDOW,
                    max_ssrcs=max_ssrcs,
                )
            )
        else:
            self.implementation = "libsrtp"
            self._outbound = _Context(
                _create_context(suite, key_salt, _lib.ssrc_any_outbound, DEFAULT_REPLAY_WINDOW)
            )
        outbound = self._outbound
        self.protect_rtp = SrtpTransform(
            outbound, _protect, SrtpSender.protect_rtp, 8, max_ssrcs, use_python=python
        )
        self.protect_rtcp = SrtpTransform(
            outbound, _protect_rtcp, SrtpSender.protect_rtcp, 4, max_ssrcs, use_python=python
        )

    @property
    def closed(self) -> bool:
        return self._outbound.ctx is None

    def statistics(self) -> SrtpStatistics:
        outbound = self._outbound
        return SrtpStatistics(
            protected=outbound.passed,
            unprotected=0,
            auth_failures=outbound.auth_failures,
            replays=outbound.replays,
            ssrc_limit=outbound.ssrc_limit,
            other_errors=outbound.other_errors,
        )

    def close(self) -> None:
        """Free the context now (libsrtp zeroes the session keys); packets given afterwards are
        dropped and counted as ``other_errors``. Closing twice is harmless."""
        ctx, self._outbound.ctx = self._outbound.ctx, None
        if isinstance(ctx, SrtpSender):
            ctx.close()
        elif ctx is not None:
            _ffi.release(ctx)
