"""The ``zrtp`` key exchange: ZRTP (RFC 6189) with phones that speak it, keys agreed on the media
path and authenticated by the short authentication string (SAS) the user reads off the phone.

The gateway terminates ZRTP on the leg of a phone that asks for it (RFC 6189 §10, the gateway as
an endpoint on behalf of the other side): each leg is keyed on its own, as with SDES and DTLS.
The SAS a phone shows therefore protects the phone-to-gateway link; the call record and
``voipgw calls`` show it (``zrtp_sas``) so an operator or support desk can read it back to the
user. See :mod:`~gateway.plugins.keyexchange.zrtp.engine` for the exchange itself.

SDP (RFC 6189 §8): a ZRTP stream is plain ``RTP/AVP`` (or ``RTP/AVPF``) with
``a=zrtp-hash:1.10 <SHA-256 of our Hello>``. We answer ZRTP when an offered stream carries
a=zrtp-hash (and the leg's policy lists ``zrtp``); we offer it, next to SDES's a=crypto where
the leg can take that too, and the answer's a=zrtp-hash picks it. A ZRTP phone that does not put
a=zrtp-hash in its SDP is treated as one without ZRTP.

Our ZID (§4.9) is one per installation, made at first use in ``<state_dir>/zrtp/zid`` (24 hex
digits); the secrets retained with each phone (key continuity, §4.9) are in
``<state_dir>/zrtp/cache.sqlite`` (:mod:`~gateway.plugins.keyexchange.zrtp.cache`).
Configuration: ``[plugins.zrtp]``, see docs/configuration.md.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from gateway.core.hookspecs import hookimpl
from gateway.plugins.keyexchange.zrtp.cache import FILE as CACHE_FILE
from gateway.plugins.keyexchange.zrtp.cache import SecretCache
from gateway.plugins.keyexchange.zrtp.crypto import CIPHER_KEY_BITS, KEY_AGREEMENTS
from gateway.plugins.keyexchange.zrtp.engine import (
    ZrtpLegSession,
    ZrtpNegotiation,
    ZrtpSettings,
    ZrtpTiming,
    ZrtpTotals,
    has_zrtp_hash,
    parse_hello_hashes_untrusted,
)

if TYPE_CHECKING:
    from gateway.core.interfaces import KeyExchange, KeyNegotiation
    from gateway.core.plugins import Registry

RandomBytes = Callable[[int], bytes]

DIRECTORY = "zrtp"
ZID_FILE = "zid"
AUTH_TAGS = ("HS80", "HS32")
SAS_TYPES = ("B32", "B256")
# handshake_timeout at least this: with 1e-9 every call failed before its first Hello was out.
# The exchange is four round trips and a Diffie-Hellman key agreement (RFC 6189 §4), more than
# a TLS handshake's two, which took 0.77 ms at the least on the loopback (the 2-vCPU test
# host): the floor is a power of ten under half that.
MIN_HANDSHAKE_TIMEOUT = 1e-4
# Under a second one lost message, sent again after 150 ms doubling to 1.2 s (RFC 6189 §6),
# or a peer across a WAN fails the call: allowed (a LAN peer takes milliseconds), and said by
# check-config (config_warnings).
WARN_HANDSHAKE_TIMEOUT = 1.0


class LocalZrtpError(Exception):
    """Our own ZRTP set-up is broken (an unreadable ZID file): not the peer's fault."""


class ZidStore:
    """The gateway's ZID (RFC 6189 §4.9: 96 random bits, one per installation, kept for good so
    phones with a cache know us again), read from or made in ``directory``/zid at first use."""

    def __init__(self, directory: Path, *, random_bytes: RandomBytes = os.urandom) -> None:
        self.directory = directory
        self._random_bytes = random_bytes
        self._zid: bytes | None = None

    @property
    def path(self) -> Path:
        return self.directory / ZID_FILE

    def current(self) -> bytes:
        if self._zid is None:
            self._zid = self._load() or self._make()
        return self._zid

    def _load(self) -> bytes | None:
        try:
            text = self.path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise LocalZrtpError(f"cannot read the ZRTP ZID {self.path}: {exc}") from None
        if not re.fullmatch(r"[0-9a-fA-F]{24}", text):
            raise LocalZrtpError(f"{self.path}: expected 24 hexadecimal digits (a 96-bit ZID)")
        return bytes.fromhex(text)

    def _make(self) -> bytes:
        zid = self._random_bytes(12)
        if len(zid) != 12 or not any(zid):
            raise LocalZrtpError("the random source did not give a usable ZID")
        self.directory.mkdir(parents=True, exist_ok=True)
        temporary = self.directory / f"{ZID_FILE}.{os.getpid()}.new"
        temporary.write_text(zid.hex() + "\n", encoding="ascii")
        # Two gateways started together on one state directory must end with one ZID: the
        # first link wins and the other reads it.
        try:
            os.link(temporary, self.path)
        except FileExistsError:
            loaded = self._load()
            assert loaded is not None
            return loaded
        finally:
            temporary.unlink()
        return zid


class ZrtpKeyExchange:
    """The ``zrtp`` key exchange (``interfaces.KeyExchange``): one :class:`ZrtpNegotiation` per
    stream and leg. A re-offer or re-answer that keeps the peer keeps the exchange, and with it
    the keys in force (no second exchange on the same stream)."""

    name = "zrtp"
    media_path = True
    profile = "rtp"
    """Offered and answered in plain RTP/AVP(F): the keys are agreed in the media (§8)."""
    sdp_attribute = "zrtp-hash"
    """The attribute of an answer that says it took ZRTP."""
    wants_leg_state = True
    """The core passes ``leg_state=``, one dict per leg: the leg's streams share a
    :class:`ZrtpLegSession` there, so its second and later streams (video) are keyed in
    Multistream mode from the first one's ZRTP session key (RFC 6189 §4.4.3)."""

    def __init__(
        self,
        *,
        zid: Callable[[], bytes],
        random_bytes: RandomBytes = os.urandom,
        ciphers: Sequence[str] = ("AES1", "AES3"),
        auth_tags: Sequence[str] = AUTH_TAGS,
        key_agreements: Sequence[str] = ("X255", "DH3k"),
        sas_types: Sequence[str] = SAS_TYPES,
        timing: ZrtpTiming | None = None,
        cache: SecretCache | None = None,
        disclosure: bool = False,
    ) -> None:
        self._zid = zid
        self._random_bytes = random_bytes
        self.ciphers = tuple(ciphers)
        self.auth_tags = tuple(auth_tags)
        self.key_agreements = tuple(key_agreements)
        self.sas_types = tuple(name.ljust(4) for name in sas_types)
        self.timing = timing if timing is not None else ZrtpTiming()
        self.cache = cache
        self.disclosure = disclosure
        self.totals = ZrtpTotals()
        """What this gateway's exchanges dropped since the start (:meth:`counters`)."""

    def __repr__(self) -> str:
        return f"<ZrtpKeyExchange key agreements={','.join(self.key_agreements)}>"

    def counters(self) -> tuple[tuple[str, int], ...]:
        """What every exchange dropped since the start, by counter (the optional ``counters``
        of a key exchange, docs/plugin_hooks.md: the metrics plugin's
        ``voipgw_zrtp_discarded_total`` and ``voipgw_zrtp_hello_mismatches_total``)."""
        return (
            ("discarded", self.totals.discarded),
            ("hello_mismatches", self.totals.hello_mismatches),
        )

    def offer(
        self,
        *,
        suites: Sequence[str],
        secure_signalling: bool,
        previous: KeyNegotiation | None = None,
        rekey: bool = False,
        leg_state: dict[str, Any] | None = None,
    ) -> ZrtpNegotiation:
        """Our offer for one stream: a=zrtp-hash of a new Hello; nothing is sent before the
        answer. A re-offer keeps a ``previous`` exchange that has not failed (its Hello, its
        keys) unless ``rekey``."""
        if not rekey and isinstance(previous, ZrtpNegotiation) and previous.failure is None:
            return previous
        return self._negotiation("offerer", suites, secure_signalling, leg_state)

    def answer(
        self,
        remote_attributes: Iterable[tuple[str, str | None]],
        *,
        suites: Sequence[str],
        secure_signalling: bool,
        previous: KeyNegotiation | None = None,
        leg_state: dict[str, Any] | None = None,
    ) -> ZrtpNegotiation | None:
        """Our answer to an offered stream with a=zrtp-hash (None without it). An offer from
        the same peer Hello as ``previous`` (a re-INVITE) keeps that exchange."""
        attributes = list(remote_attributes)
        if not has_zrtp_hash(attributes):
            return None
        if (
            isinstance(previous, ZrtpNegotiation)
            and previous.failure is None
            and previous.same_peer(parse_hello_hashes_untrusted(attributes))
        ):
            return previous
        negotiation = self._negotiation("answerer", suites, secure_signalling, leg_state)
        negotiation.bind_peer_hello(attributes)
        negotiation.start()
        return negotiation

    def _negotiation(
        self,
        sdp_role: str,
        suites: Sequence[str],
        secure_signalling: bool,
        leg_state: dict[str, Any] | None,
    ) -> ZrtpNegotiation:
        settings = ZrtpSettings(
            zid=self._zid(),
            ciphers=self.ciphers,
            auth_tags=self.auth_tags,
            key_agreements=self.key_agreements,
            sas_types=self.sas_types,
            timing=self.timing,
            cache=self.cache,
            disclosure=self.disclosure,
            totals=self.totals,
        )
        return ZrtpNegotiation(
            sdp_role,
            settings,
            random_bytes=self._random_bytes,
            suites=suites,
            secure_signalling=secure_signalling,
            session=_leg_session(leg_state),
        )


def _leg_session(leg_state: dict[str, Any] | None) -> ZrtpLegSession | None:
    """The ZRTP session the leg's streams share, made at the leg's first ZRTP stream (None
    without ``leg_state``: the stream is on its own and cannot use Multistream mode)."""
    if leg_state is None:
        return None
    session = leg_state.get("session")
    if not isinstance(session, ZrtpLegSession):
        session = leg_state["session"] = ZrtpLegSession()
    return session


# --------------------------------------------------------------------------------------------
# Plugin configuration and registration (entry point ``zrtp`` in the group ``voipgw.plugins``)


def _names(kind: str, names: Sequence[str], known: Iterable[str]) -> None:
    known = tuple(known)
    if not names:
        raise ValueError(f"{kind}: expected at least one")
    for name in names:
        if name not in known:
            raise ValueError(f"{kind}: unknown {name!r}; known: {', '.join(known)}")
    if len(set(names)) != len(names):
        raise ValueError(f"{kind}: a name is listed twice")


@attrs.frozen
class ZrtpConfig:
    """``[plugins.zrtp]``. See docs/configuration.md."""

    state_dir: str = "./voipgw-state"
    key_agreements: tuple[str, ...] = ("X255", "DH3k")
    ciphers: tuple[str, ...] = ("AES1", "AES3")
    auth_tags: tuple[str, ...] = AUTH_TAGS
    sas_types: tuple[str, ...] = SAS_TYPES
    handshake_timeout: float = 20.0
    cache: bool = True
    disclosure: bool = False

    def __attrs_post_init__(self) -> None:
        # structure() reports a ValueError as a config error of this table; say which key.
        _names("key_agreements", self.key_agreements, KEY_AGREEMENTS)
        _names("ciphers", self.ciphers, CIPHER_KEY_BITS)
        _names("auth_tags", self.auth_tags, AUTH_TAGS)
        _names("sas_types", self.sas_types, SAS_TYPES)
        if not (
            math.isfinite(self.handshake_timeout)
            and self.handshake_timeout >= MIN_HANDSHAKE_TIMEOUT
        ):
            raise ValueError(
                f"handshake_timeout: expected a positive number of seconds, "
                f"at least {MIN_HANDSHAKE_TIMEOUT:.4f} (the "
                f"exchange is four round trips, Hello to Confirm2, RFC 6189 §4, its messages "
                f"sent again after 150 ms to 1.2 s, §6), got {self.handshake_timeout:g}"
            )

    def config_warnings(self) -> list[str]:
        """``"KEY: why"`` for values the gateway runs with that fail where the network is
        not a LAN: errors of ``voipgw check-config``, warnings of ``voipgw run``."""
        if self.handshake_timeout < WARN_HANDSHAKE_TIMEOUT:
            return [
                f"handshake_timeout: {self.handshake_timeout:g} s works only for peers on the "
                f"host or the LAN: under {WARN_HANDSHAKE_TIMEOUT:g} s one lost message (sent "
                "again after 150 ms to 1.2 s, RFC 6189 §6) or a peer across a WAN fails the call"
            ]
        return []

    def zid_store(self) -> ZidStore:
        return ZidStore(Path(self.state_dir) / DIRECTORY)

    def secret_cache(self) -> SecretCache | None:
        """The retained-secret cache, ``<state_dir>/zrtp/cache.sqlite`` (opened at first use),
        or None when ``cache = false``."""
        if not self.cache:
            return None
        return SecretCache(Path(self.state_dir) / DIRECTORY / CACHE_FILE)

    def written_directories(self) -> list[tuple[str, Path, str, tuple[str, ...]]]:
        """What ``voipgw check-config`` and ``run`` check this user may write (Gateway.check):
        ``(key, directory, what, files)``, ``files`` every file written there. The cache's
        rollback journal is made in the directory at each write, so it must be writable; without
        the cache, once the ZID is there nothing is written (it is only read)."""
        files = tuple(f"{CACHE_FILE}{suffix}" for suffix in ("", "-wal", "-shm", "-journal"))
        directory = Path(self.state_dir) / DIRECTORY
        if not self.cache and os.path.isfile(directory / ZID_FILE):
            return []
        return [("state_dir", directory, "the ZRTP ZID and secrets cache (zrtp plugin)", files)]

    def read_files(self) -> list[tuple[str, Path, str]]:
        """What ``voipgw check-config`` and ``run`` check this user may read where it is
        (Gateway.check): the ZID, read back at the first ZRTP call."""
        return [
            ("state_dir", Path(self.state_dir) / DIRECTORY / ZID_FILE, "the ZRTP ZID (zrtp plugin)")
        ]


@hookimpl
def gateway_plugin_config() -> type:
    return ZrtpConfig


@hookimpl
def gateway_register_key_exchanges(registry: Registry[Any], config: ZrtpConfig | None) -> None:
    """Register the ``zrtp`` key exchange. The ZID is read (or made) at its first use, not
    here, so ``voipgw check-config`` writes nothing."""
    config = config if config is not None else ZrtpConfig()
    exchange = ZrtpKeyExchange(
        zid=config.zid_store().current,
        key_agreements=config.key_agreements,
        ciphers=config.ciphers,
        auth_tags=config.auth_tags,
        sas_types=config.sas_types,
        timing=ZrtpTiming(handshake_timeout=config.handshake_timeout),
        cache=config.secret_cache(),
        disclosure=config.disclosure,
    )
    registry.add(ZrtpKeyExchange.name, exchange)


if TYPE_CHECKING:
    # mypy checks that the classes satisfy the interfaces they are registered as.
    def _conforms(exchange: ZrtpKeyExchange, negotiation: ZrtpNegotiation) -> None:
        _exchange: KeyExchange = exchange
        _negotiation: KeyNegotiation = negotiation
