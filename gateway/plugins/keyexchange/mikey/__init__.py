"""The ``mikey`` key exchange: MIKEY (RFC 3830) in SDP ``a=key-mgmt`` (RFC 4567), for phones
and media servers that key SRTP that way.

Modes (see :mod:`~gateway.plugins.keyexchange.mikey.engine` for the messages):

- ``null``: PSK_INIT with NULL KEMAC encryption and NULL MAC, MIKEY as a mere container whose
  confidentiality is the TLS signalling, exactly like SDES: only ever sent or accepted on a leg
  whose signalling is TLS. GStreamer's GstMIKEY speaks this mode only.
- ``psk``: the KEMAC encrypted (AES-CM-128 or AES-KW-128) and authenticated (HMAC-SHA-1) with
  keys derived from a pre-shared key per account or trunk; T within the clock skew and not
  replayed; the answer verifies itself (V payload) when the offer asks.
- ``dh-hmac``: Diffie-Hellman (RFC 4650) authenticated by the pre-shared key's HMAC: the keys
  come from the DH secret (forward secrecy); the pre-shared key only authenticates.

Public-key (PK), DH-sign and RSA-R modes are refused (488, saying so). Which modes we offer, in
which order, and which we accept is configuration (``[plugins.mikey]``, docs/configuration.md):
by default we offer only ``null``, on TLS legs, and accept every mode enabled. The pre-shared
keys are in ``psk_file`` (see :mod:`~gateway.plugins.keyexchange.mikey.psk`); the exchange learns
which account or trunk a leg belongs to through the core's ``leg=`` argument (``wants_leg``).
"""

from __future__ import annotations

import contextlib
import math
import os
import stat
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from gateway.core.config import unreadable_here
from gateway.core.hookspecs import hookimpl
from gateway.core.interfaces import MediaPolicy
from gateway.plugins.keyexchange.mikey.engine import (
    DEFAULT_OFFER_SUITES,
    MODES,
    TLS_REQUIRED_REASON,
    MikeyNegotiation,
    MikeySettings,
    allowed_suites,
    mikey_message_of,
)
from gateway.plugins.keyexchange.mikey.payloads import (
    ENCR_AES_CM_128,
    ENCR_AES_KW_128,
    MikeyError,
)
from gateway.plugins.keyexchange.mikey.policy import POLICY_STYLES
from gateway.plugins.keyexchange.mikey.psk import PskError, PskStore
from gateway.plugins.keyexchange.mikey.replay import ReplayCache, ReplayJournal
from gateway.plugins.keyexchange.mikey.replay_store import DIRECTORY as REPLAY_DIRECTORY
from gateway.plugins.keyexchange.mikey.replay_store import FILE as REPLAY_FILE
from gateway.plugins.keyexchange.mikey.replay_store import ReplayStore

if TYPE_CHECKING:
    from gateway.core.interfaces import KeyExchange, KeyNegotiation, LegInfo
    from gateway.core.plugins import Registry

__all__ = ["MikeyConfig", "MikeyKeyExchange", "MikeyNegotiation"]

RandomBytes = Callable[[int], bytes]
KEMAC_ENCRYPTIONS = {"aes-cm": ENCR_AES_CM_128, "aes-kw": ENCR_AES_KW_128}
DH_GROUPS = {"OAKLEY5": 0, "OAKLEY1": 1, "OAKLEY2": 2}
# The least max_clock_skew (s): a message is checked after its T was stamped, the SDP carrying
# it sent in a SIP message, received and parsed (about 14 us for an INVITE alone, and two
# system calls and a wake-up on the way): under this no message of any peer was ever fresh,
# as with 0 (RFC 3830 §5.4: the skew allowed covers the transit and the clocks apart).
MIN_CLOCK_SKEW = 1e-5
# Under a second only peers on the host, or on a LAN with clocks kept within milliseconds
# (NTP on the LAN), are fresh: allowed, and said by check-config (config_warnings).
WARN_CLOCK_SKEW = 1.0


class MikeyKeyExchange:
    """The ``mikey`` key exchange (``interfaces.KeyExchange``): one :class:`MikeyNegotiation`
    per stream and leg. ``clock`` is the wall clock (Unix seconds: MIKEY's T is NTP-UTC);
    ``random_bytes`` a CSPRNG; ``psks`` the pre-shared keys (psk and dh-hmac modes). The replay
    caches (one per account or trunk, and ``replay`` for legs nobody named) keep what they see
    in ``replay``'s journal, when it has one, under a scope per account or trunk."""

    name = "mikey"
    media_path = False
    profile = "sdp"
    sdp_attribute = "key-mgmt"
    wants_leg = True
    """The core passes ``leg=LegInfo`` to offer() and answer(): the pre-shared key is the
    leg's account's or trunk's."""

    def __init__(
        self,
        *,
        settings: MikeySettings | None = None,
        psks: PskStore | None = None,
        clock: Callable[[], float] = time.time,
        random_bytes: RandomBytes = os.urandom,
        replay: ReplayCache | None = None,
    ) -> None:
        self.settings = settings if settings is not None else MikeySettings()
        self.psks = psks if psks is not None else PskStore({})
        self._clock = clock
        self._random_bytes = random_bytes
        self.replay = replay if replay is not None else ReplayCache()
        self._replays: dict[tuple[str, str], ReplayCache] = {}

    def __repr__(self) -> str:
        return f"<MikeyKeyExchange offer={','.join(self.settings.offer_modes)} {self.psks!r}>"

    def _new(self, role: str, leg: LegInfo | None) -> MikeyNegotiation:
        return MikeyNegotiation(
            role, self.settings, self._random_bytes, self._clock, self._replay_for(leg)
        )

    def _replay_for(self, leg: LegInfo | None) -> ReplayCache:
        """The replay cache of the leg's account or trunk: a peer holding one pre-shared key
        that fills its cache (and raises its floor) refuses only its own messages, never
        another account's (``replay``, the shared one, serves legs nobody named)."""
        if leg is None or leg.name is None:
            return self.replay
        key = (leg.kind, leg.name)
        cache = self._replays.get(key)
        if cache is None:
            cache = ReplayCache(
                max_skew=self.replay.max_skew,
                max_entries=self.replay.max_entries,
                journal=self.replay.journal,
                scope=f"{leg.kind}:{leg.name}",
            )
            self._replays[key] = cache
        return cache

    def _psk_lookup(self, leg: LegInfo | None) -> Callable[[], tuple[bytes | None, str]]:
        def lookup() -> tuple[bytes | None, str]:
            if leg is None:
                return None, "this leg (the core did not say whose it is)"
            who = f"{leg.kind} {leg.name}" if leg.name else f"this {leg.kind or 'unknown'} leg"
            return self.psks.key_for(leg.kind, leg.name), who

        return lookup

    def offer(
        self,
        *,
        suites: Sequence[str],
        secure_signalling: bool,
        previous: KeyNegotiation | None = None,
        rekey: bool = False,
        leg: LegInfo | None = None,
    ) -> MikeyNegotiation:
        """Our offer for one stream, in the first configured offer mode this leg can take
        (``null``: TLS signalling; ``psk``/``dh-hmac``: a pre-shared key for the leg), for the
        first suite of the leg's policy. A re-offer keeps a ``previous`` exchange in force
        (the same I_MSG) unless ``rekey``. Fails at once (no key made) when no mode applies."""
        negotiation = self._new("offerer", leg)
        offerable = allowed_suites(suites) if suites else DEFAULT_OFFER_SUITES
        if not offerable:
            negotiation._fail("no suite of the leg's policy is supported by MIKEY here")
            return negotiation
        if (
            not rekey
            and isinstance(previous, MikeyNegotiation)
            and previous.role == "offerer"
            and previous.failure is None
            and previous.keys is not None
            and previous.suite in offerable
            and previous.mode in self.settings.offer_modes
            and (previous.mode != "null" or secure_signalling)
        ):
            negotiation.repeat_offer(previous)
            return negotiation
        if isinstance(previous, MikeyNegotiation) and previous.keys is not None:
            negotiation._keys = previous.keys  # in force until the answer says otherwise
        reasons: list[str] = []
        lookup = self._psk_lookup(leg)
        for mode in self.settings.offer_modes:
            psk: bytes | None = None
            if mode == "null":
                if not secure_signalling:
                    reasons.append(TLS_REQUIRED_REASON)
                    continue
            else:
                psk, who = lookup()
                if psk is None:
                    reasons.append(f"{mode}: no pre-shared key for {who}")
                    continue
            negotiation.start_offer(mode, offerable[0], psk)
            return negotiation
        negotiation._fail("; ".join(reasons) or "no MIKEY mode is configured to offer")
        return negotiation

    def answer(
        self,
        remote_attributes: Iterable[tuple[str, str | None]],
        *,
        suites: Sequence[str],
        secure_signalling: bool,
        previous: KeyNegotiation | None = None,
        leg: LegInfo | None = None,
    ) -> MikeyNegotiation | None:
        """Our answer to an offered stream with ``a=key-mgmt:mikey`` (None without one: MIKEY
        does not apply). The result has ``KeysReady`` queued, or has failed (488) with the
        reason: a mode not accepted, NULL mode without TLS, no pre-shared key for the leg, a
        wrong MAC, a stale or replayed T, a policy outside the leg's suites."""
        try:
            received = mikey_message_of(remote_attributes)
        except MikeyError as exc:
            negotiation = self._new("answerer", leg)
            negotiation._fail(exc.reason)
            return negotiation
        if received is None:
            return None
        negotiation = self._new("answerer", leg)
        negotiation.take_offer(
            received,
            secure_signalling=secure_signalling,
            allowed=allowed_suites(suites),
            psk_for_leg=self._psk_lookup(leg),
            previous=previous if isinstance(previous, MikeyNegotiation) else None,
        )
        return negotiation


# --------------------------------------------------------------------------------------------
# Plugin configuration and registration (entry point ``mikey`` in the group ``voipgw.plugins``)


def _modes(key: str, names: Sequence[str], *, empty_ok: bool) -> None:
    if not names and not empty_ok:
        raise ValueError(f"{key}: expected at least one of {', '.join(MODES)}")
    for name in names:
        if name not in MODES:
            raise ValueError(f"{key}: unknown mode {name!r}; known: {', '.join(MODES)}")
    if len(set(names)) != len(names):
        raise ValueError(f"{key}: a mode is listed twice")


@attrs.frozen
class MikeyConfig:
    """``[plugins.mikey]``. See docs/configuration.md."""

    offer_modes: tuple[str, ...] = ("null",)
    accept_modes: tuple[str, ...] = MODES
    psk_file: str = ""
    kemac_encryption: str = "aes-cm"
    request_verification: bool = True
    dh_group: str = "OAKLEY5"
    style: str = "standard"
    max_clock_skew: float = 120.0
    replay_cache_size: int = 10_000
    state_dir: str = "./voipgw-state"

    def __attrs_post_init__(self) -> None:
        # structure() reports a ValueError as a config error of this table; say which key.
        _modes("offer_modes", self.offer_modes, empty_ok=True)
        _modes("accept_modes", self.accept_modes, empty_ok=False)
        if self.kemac_encryption not in KEMAC_ENCRYPTIONS:
            raise ValueError(f"kemac_encryption: expected one of {', '.join(KEMAC_ENCRYPTIONS)}")
        if self.dh_group not in DH_GROUPS:
            raise ValueError(f"dh_group: expected one of {', '.join(DH_GROUPS)}")
        if self.style not in POLICY_STYLES:
            raise ValueError(f"style: expected one of {', '.join(POLICY_STYLES)}")
        if not (math.isfinite(self.max_clock_skew) and self.max_clock_skew >= MIN_CLOCK_SKEW):
            # RFC 3830 §5.4: the skew allowed covers clocks apart and the message's transit.
            raise ValueError(
                f"max_clock_skew: expected a positive number of seconds, "
                f"at least {MIN_CLOCK_SKEW:.5f} (the message's "
                f"transit and the peers' clocks apart, RFC 3830 §5.4), got "
                f"{self.max_clock_skew:g}"
            )
        if self.replay_cache_size < 1:
            raise ValueError(
                f"replay_cache_size: expected a positive number, got {self.replay_cache_size}"
            )
        needs_keys = {"psk", "dh-hmac"} & set(self.offer_modes)
        if needs_keys and not self.psk_file:
            raise ValueError(
                f"psk_file: offer_modes lists {', '.join(sorted(needs_keys))}, which needs "
                "pre-shared keys"
            )
        if self.psk_file:
            try:
                self.psk_store()
            except PskError as exc:
                # "psk_file PATH: why" named no key: structure() reads the key before ": ".
                reason = str(exc).removeprefix("psk_file ")
                raise ValueError(f"psk_file: {reason}") from None

    def config_warnings(self) -> list[str]:
        """``"KEY: why"`` for values the gateway runs with that fail where the network is
        not a LAN: errors of ``voipgw check-config``, warnings of ``voipgw run``."""
        if self.max_clock_skew < WARN_CLOCK_SKEW:
            return [
                f"max_clock_skew: {self.max_clock_skew:g} s works only for peers on the host or "
                f"with clocks kept within milliseconds of ours: under {WARN_CLOCK_SKEW:g} s "
                "the messages of peers whose clocks NTP keeps across a WAN (tens of ms apart "
                "and more) are refused as not fresh, and their calls fail (RFC 3830 §5.4)"
            ]
        return []

    def trunk_names(self) -> dict[str, tuple[str, ...]]:
        """The trunks ``psk_file``'s ``[trunks]`` table has keys for, checked against the
        ``[[trunks]]`` tables (config.unknown_trunk_names): a misspelt one is never used."""
        return {"psk_file": self.psk_store().names("trunk")}

    def psk_store(self) -> PskStore:
        """The pre-shared keys (an empty store without ``psk_file``). Raises
        :class:`~gateway.plugins.keyexchange.mikey.psk.PskError`."""
        if not self.psk_file:
            return PskStore({})
        if unreadable_here(Path(self.psk_file), "psk_file"):
            # voipgw check-config run as another user than the service's, who may not read
            # it (mode 600, the service's): its warning; the keys are left unchecked, its mode
            # not (from_file refuses one group or others may access before reading it).
            with contextlib.suppress(OSError):
                if Path(self.psk_file).stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                    return PskStore.from_file(self.psk_file)
            return PskStore({})
        return PskStore.from_file(self.psk_file)

    def written_directories(self) -> list[tuple[str, Path, str, tuple[str, ...]]]:
        """What ``voipgw check-config`` and ``run`` check this user may write (Gateway.check):
        ``(key, directory, what, files)``, ``files`` every file written there. The journal
        is in WAL mode (replay_store): with the database, its -wal and -shm there and writable,
        nothing is created in the directory, which may then be read-only."""
        files = tuple(f"{REPLAY_FILE}{suffix}" for suffix in ("", "-wal", "-shm"))
        directory = Path(self.state_dir) / REPLAY_DIRECTORY
        return [("state_dir", directory, "the MIKEY replay journal (mikey plugin)", files)]

    def replay_journal(self) -> ReplayJournal:
        """The replay caches' journal, ``<state_dir>/mikey/replay.sqlite`` (opened at first
        use): a restart does not reopen the replay window (RFC 3830 §5.4)."""
        return ReplayStore(Path(self.state_dir) / REPLAY_DIRECTORY / REPLAY_FILE)

    def settings(self) -> MikeySettings:
        return MikeySettings(
            offer_modes=self.offer_modes,
            accept_modes=self.accept_modes,
            kemac_encryption=KEMAC_ENCRYPTIONS[self.kemac_encryption],
            request_verification=self.request_verification,
            dh_group=DH_GROUPS[self.dh_group],
            style=self.style,
        )


@hookimpl
def gateway_plugin_config() -> type:
    return MikeyConfig


@hookimpl
def gateway_register_key_exchanges(registry: Registry[Any], config: MikeyConfig | None) -> None:
    """Register the ``mikey`` key exchange with the wall clock and the OS CSPRNG. The
    pre-shared key file is read (and its permissions checked) here: a bad one stops start-up."""
    config = config if config is not None else MikeyConfig()
    exchange = MikeyKeyExchange(
        settings=config.settings(),
        psks=config.psk_store(),
        clock=time.time,
        random_bytes=os.urandom,
        replay=ReplayCache(
            max_skew=config.max_clock_skew,
            max_entries=config.replay_cache_size,
            journal=config.replay_journal(),
        ),
    )
    registry.add(MikeyKeyExchange.name, exchange)


@hookimpl
def gateway_register_media_policies(registry: Registry[Any], config: MikeyConfig | None) -> None:
    """The ``mikey`` policy: MIKEY only, never cleartext (for accounts and trunks of phones
    that key SRTP with MIKEY)."""
    registry.add(
        "mikey",
        MediaPolicy(
            name="mikey",
            key_exchanges=("mikey",),
            allow_cleartext=False,
            description="MIKEY (RFC 3830/4567) only; never cleartext",
        ),
    )


if TYPE_CHECKING:
    # mypy checks that the classes satisfy the interfaces they are registered as.
    def _conforms(exchange: MikeyKeyExchange, negotiation: MikeyNegotiation) -> None:
        _exchange: KeyExchange = exchange
        _negotiation: KeyNegotiation = negotiation
