"""Gateway configuration: one TOML file parsed into frozen attrs values.

Every table is an ``@attrs.frozen`` class whose fields say the key names, their types and defaults;
:func:`structure` turns a TOML table into such a class and every mistake it finds names the
file, the table and the key, and says what was expected. Plugins declare their own table
(``[plugins.NAME]``) the same way through the ``gateway_plugin_config`` hook, so their errors
read the same.

The file layout::

    [gateway]   state_dir, realm, domains, log_level
    [sip]       listen, user_agent, timers, message limits, session timers
    [media]     address, ports, inactivity_timeout, hold_timeout, workers, worker_ready_timeout,
                ringback_tone
    [store]     backend (sqlite, postgresql), dsn, password_file, timeouts
    [dns]       how trunks named by DNS are resolved: servers, timeout, TTL clamps
    [plugins]   enable = [...]; one [plugins.NAME] table per enabled plugin
    [[trunks]]  one table per SIP trunk (carrier or PBX): address, prefixes, DIDs, credentials
    [[dialog_watch_groups]]  accounts whose phones may watch each other's calls (BLF)
    [feature_codes]  what phones dial for the gateway's own features (call pickup)
    [presence]  who may see whose presence (PUBLISH/SUBSCRIBE presence, RFC 3856)
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import ipaddress
import math
import os
import re
import stat
import tomllib
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import attrs

from gateway.core.calls.location import LocationPolicy
from gateway.core.calls.numbering import (
    NumberFormat,
    NumberingPlan,
    read_number,
    split_phone_context,
)
from gateway.core.calls.redirect import DiversionPolicy
from gateway.core.sip import session_timer
from gateway.core.sip.errors import RemoteSipError
from gateway.core.sip.grammar import parse_uri_untrusted
from gateway.core.sip.uri import SipUri
from gateway.core.transport.flows import format_host_port

T = TypeVar("T")

# User-Agents SIP scanners announce themselves with: SIPVicious' svmap, svwar and svcrack
# ("friendly-scanner"; "sipvicious" in forks), sipcli, and the "VaxSIPUserAgent", "pplsip" and
# "sundayddr" of scanning campaigns: what Kamailio and OpenSIPS operators commonly drop with
# `if ($ua =~ "friendly-scanner|sipcli|...") drop;`. No phone sends them.
DEFAULT_DROP_USER_AGENTS: tuple[str, ...] = (
    "friendly-scanner",
    # sipcli sends "sipcli/v1.8"; the slash keeps softphones called "...SipClient" out.
    "sipcli/",
    "sipvicious",
    "VaxSIPUserAgent",
    "pplsip",
    "sundayddr",
)

#: The KEY of a plugin's ``written_directories()`` entry for a directory under ``[gateway]
#: state_dir`` (its DIRECTORY relative to it), for a plugin whose table has no state_dir of its
#: own: the tls transport's fetched CRLs (docs/plugin_hooks.md). Messages name that key.
GATEWAY_STATE_DIR = "[gateway] state_dir"
#: The optional fifth element of a ``written_directories()`` entry: what is written there the
#: gateway runs without (a copy kept for the next start), so what cannot be written there is a
#: warning of ``voipgw run`` and ``check-config``, never a refusal.
WARN_ONLY = "warn"

DEFAULT_PLUGINS: tuple[str, ...] = ("udp", "tcp", "tls", "sdes", "dtls")
DEFAULT_LISTEN: tuple[str, ...] = (
    "udp:127.0.0.1:5060",
    "tcp:127.0.0.1:5060",
    "tls:127.0.0.1:5061",
    # SIP over WebSocket (RFC 7118 sets no port): FreeSWITCH's and the JsSIP examples' 5066
    # and 7443, which no web server on the same host is likely to hold already.
    "ws:127.0.0.1:5066",
    "wss:127.0.0.1:7443",
)


class ConfigError(Exception):
    """A configuration mistake. ``str()`` names the file, the table and the key."""

    def __init__(self, file: str, table: str, key: str | None, message: str) -> None:
        where = f"{file}: [{table}]" if table else file
        if key is not None:
            where += f" {key}"
        # One line, whatever the file held: a value echoed with a CR or LF in it (a path a
        # plugin could not open) split the error, and could forge lines of a log.
        super().__init__(_one_line(f"{where}: {message}"))
        self.file = file
        self.table = table
        self.key = key
        self.message = message


def _is_decimal(text: str) -> bool:
    # str.isdigit() is true of "\u0663" (ARABIC-INDIC DIGIT THREE), which int() reads as 3, and
    # of "\u00b2" (SUPERSCRIPT TWO), which int() refuses with a bare "invalid literal".
    return text.isascii() and text.isdigit()


def _one_line(text: str) -> str:
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


@attrs.frozen
class ListenSpec:
    """``transport:host:port`` as written in ``[sip] listen`` or ``--listen``."""

    transport: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> ListenSpec:
        """Parse ``udp:127.0.0.1:5060`` or ``tls:[::1]:5061``; raises ValueError with the reason."""
        transport, sep, rest = text.partition(":")
        if not sep or not transport:
            raise ValueError(f"expected TRANSPORT:HOST:PORT, got {text!r}")
        if rest.startswith("["):
            host, bracket, tail = rest[1:].partition("]")
            if not bracket or not tail.startswith(":"):
                raise ValueError(f"expected TRANSPORT:[IPV6]:PORT, got {text!r}")
            port_text = tail[1:]
        else:
            host, sep, port_text = rest.rpartition(":")
            if not sep:
                raise ValueError(f"expected TRANSPORT:HOST:PORT, got {text!r}")
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"listen address must be an IP address, got {host!r}") from None
        if not _is_decimal(port_text) or not 0 <= int(port_text) <= 65535:
            raise ValueError(f"port must be 0-65535, got {port_text!r}")
        return cls(transport.lower(), host, int(port_text))

    def __str__(self) -> str:
        return f"{self.transport}:{format_host_port(self.host, self.port)}"


# RFC 1035 §2.3.1 / RFC 1123 §2.1: a host name of labels (letters, digits, inner hyphens),
# at most 63 characters each and 253 in all. Lower-cased before use: DNS names are not
# case-sensitive, and the name is compared with certificates (RFC 5922 §7.2).
_HOST_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def _is_host_name(text: str) -> bool:
    labels = text.rstrip(".").split(".")
    return (
        0 < len(text) <= 253
        and len(labels) >= 2  # a bare "carrier" would depend on the resolver's search list
        and all(_HOST_LABEL.fullmatch(label) for label in labels)
        and not labels[-1].isdigit()  # "1.2.3.999" is a bad address, not a name
    )


@attrs.frozen
class TrunkAddress:
    """A trunk's ``address``: ``TRANSPORT:IP:PORT`` as ever, ``TRANSPORT:NAME[:PORT]`` for a
    trunk named by DNS (RFC 3263 §4.2: with a port only its A/AAAA records count, without one
    the SRV records of its transport), or a bare ``NAME``, whose transport the DNS chooses
    (RFC 3263 §4.1: NAPTR, else SRV per transport, else A/AAAA). ``host`` is an IP address
    without brackets, or a lower-case host name without a trailing dot; ``port`` is None for
    SRV and NAPTR; ``transport`` is ``""`` for NAPTR (:attr:`by_naptr`)."""

    transport: str
    host: str
    port: int | None
    is_name: bool

    @classmethod
    def parse(cls, text: str) -> TrunkAddress:
        """Parse ``udp:192.0.2.10:5060``, ``tls:sip.carrier.example``,
        ``udp:sip.carrier.example:5080`` or ``sip.carrier.example``; raises ValueError with the
        reason."""
        transport, sep, rest = text.partition(":")
        if not sep and _is_host_name(text.lower().rstrip(".")):
            # RFC 3263 §4.1: no transport and no port: NAPTR chooses (trunk_dns.py).
            return cls("", text.lower().rstrip("."), None, True)
        if (
            sep
            and _is_decimal(rest)
            and any(c.isalpha() for c in transport)
            and _is_host_name(transport.lower().rstrip("."))
        ):
            # RFC 3263 §4.1 would send NAME:PORT over UDP without asking NAPTR; an operator
            # says which transport rather than leave it to a default.
            raise ValueError(
                f"name the transport (udp:, tcp: or tls:) of {text!r}, or leave out the port "
                "to have the DNS choose it (NAPTR, RFC 3263 §4.1)"
            )
        host, colon, port_text = rest.partition(":")
        # An IP address has no letters, an IPv6 one several colons or brackets: those go to
        # ListenSpec as before, with its errors.
        if sep and transport and ":" not in port_text and any(c.isalpha() for c in host):
            name = host.lower().rstrip(".")
            if not _is_host_name(name):
                raise ValueError(
                    f"expected TRANSPORT:NAME[:PORT] with a host name of two labels or more "
                    f"(letters, digits, inner hyphens), got {text!r}"
                )
            port: int | None = None
            if colon:
                if not _is_decimal(port_text) or not 1 <= int(port_text) <= 65535:
                    raise ValueError(f"a trunk needs a port 1-65535, got {text!r}")
                port = int(port_text)
            return cls(transport.lower(), name, port, True)
        spec = ListenSpec.parse(text)
        return cls(spec.transport, spec.host, spec.port, False)

    @property
    def by_naptr(self) -> bool:
        """Whether the DNS chooses the transport (a bare name, RFC 3263 §4.1)."""
        return not self.transport

    @property
    def uri_host(self) -> str:
        """``host`` as a SIP URI writes it (an IPv6 address in brackets)."""
        return f"[{self.host}]" if ":" in self.host else self.host

    def __str__(self) -> str:
        if not self.transport:
            return self.host
        port = "" if self.port is None else f":{self.port}"
        return f"{self.transport}:{self.uri_host}{port}"


@functools.lru_cache(maxsize=1024)
def _trunk_address(text: str) -> TrunkAddress:
    # Cached: a frozen value of a string from the configuration (a bad one raises every time).
    return TrunkAddress.parse(text)


@attrs.frozen
class PortRange:
    low: int
    high: int

    @classmethod
    def parse(cls, text: str) -> PortRange:
        low, sep, high = text.partition("-")
        if not sep or not _is_decimal(low) or not _is_decimal(high):
            raise ValueError(f"expected LOW-HIGH, got {text!r}")
        lo, hi = int(low), int(high)
        if not 1024 <= lo < hi <= 65535:
            raise ValueError(f"expected 1024 <= LOW < HIGH <= 65535, got {text!r}")
        # RTP on an even port, RTCP on the next one (RFC 3550 §11): a call needs a pair per leg.
        first_even = lo + lo % 2
        if (hi - first_even + 1) // 2 < 2:
            raise ValueError(f"range {text!r} holds fewer than two RTP/RTCP port pairs (one call)")
        return cls(lo, hi)

    def __str__(self) -> str:
        return f"{self.low}-{self.high}"


LogLevel = Literal["debug", "info", "warning", "error"]
"""``[gateway] log_level`` and ``voipgw run --log-level``: the one list both take."""
LOG_LEVELS: tuple[str, ...] = typing.get_args(LogLevel)


@attrs.frozen
class GatewaySection:
    state_dir: str = "./voipgw-state"
    realm: str = "voipgw.local"
    domains: tuple[str, ...] = ()
    digest_algorithms: tuple[Literal["SHA-256", "SHA-512-256", "MD5"], ...] = ("SHA-256", "MD5")
    log_level: LogLevel = "info"
    # Whether logged tracebacks show the text of exceptions raised in plugin code (it may hold
    # keys: gateway/core/logs.py); for debugging a plugin only. Read at start-up.
    log_plugin_exception_text: bool = False
    # Whether log lines at INFO and above name the DTMF digit they are about (a card number's
    # or a PIN's, PCI DSS 3.3): off, they say `withheld`. For troubleshooting only.
    log_dtmf_digits: bool = False
    gc_thresholds: tuple[int, ...] = (10_000, 10, 10)
    # Seconds SIGTERM/SIGINT waits for calls in progress to end while refusing new ones
    # (Gateway.drain); 0 stops at once.
    drain_timeout: float = 0.0
    # Online password guessing (gateway/core/auth/failures.py): this many failed digest
    # attempts from one source address within auth_failure_window seconds get it 403.
    auth_max_failures: int = 5
    auth_failure_window: float = 60.0
    # Seconds a source that reached auth_max_failures stays blocked, from the failure that
    # blocked it; 0: only while its failures lie in the window (a rate, not a ban).
    auth_block_time: float = 0.0
    # IPv6 sources' failures and bans are counted per prefix of this many bits (128: per
    # address, as before the key); IPv4 per address. A guesser holds a /64 at least.
    auth_ipv6_prefix_length: int = 128
    # Edge proxies (addresses or CIDRs) whose relayed requests' failures count against the
    # address the proxy received them from (its Via below), not the proxy's
    # (gateway/core/auth/proxied_source.py).
    auth_proxies: tuple[str, ...] = ()
    # RFC 7090 PSAP callbacks (gateway/core/calls/psap_callback.py): how long after an
    # emergency call a marked call to the number it presented is served like one; 0: never.
    psap_callback_window: float = 1800.0


@attrs.frozen
class SipSection:
    # None: the default listeners of the enabled transports (DEFAULT_LISTEN).
    listen: tuple[str, ...] | None = None
    user_agent: str = "voipgw"
    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    max_message_size: int = 65535
    max_headers: int = 200
    # Overload: a new INVITE or REGISTER that waited longer than this (s) to be read gets 503
    # (gateway/core/sip/overload.py); 0 never refuses.
    overload_queue_delay: float = 0.3
    overload_retry_after: int = 0  # seconds in the 503's Retry-After; 0: no Retry-After
    # Timer C (RFC 3261 §16.6 step 11): an unanswered call is given up after this long (s).
    ring_timeout: float = 180.0
    # Session timers (RFC 4028, gateway/core/sip/session_timer.py): the interval (s) we ask each
    # leg for (0: ask for none, only honour a caller's own), and the least we accept (Min-SE).
    session_expires: int = 1800
    min_se: int = 90
    # A call that got one of these from every trunk it was sent to tries the next trunk that
    # serves the number (gateway/core/calls/routing.py). Not the callee's own answers (404,
    # 486, 6xx): another carrier reaches the same callee.
    failover_statuses: tuple[int, ...] = (408, 500, 502, 503, 504)
    # Seconds between OPTIONS to each phone registered from behind a NAT (0: none), which keep
    # its NAT mapping open and find phones that are gone (gateway/core/nat_keepalive.py).
    nat_keepalive_interval: float = 0.0
    # Requests whose User-Agent contains one of these (case-insensitive) are dropped without
    # an answer, unless they come from a trunk's address (gateway/core/sip/scanners.py).
    drop_user_agents: tuple[str, ...] = DEFAULT_DROP_USER_AGENTS
    # Call forwarding by redirect (gateway/core/calls/redirect.py): how many 3xx one call
    # follows at most (0: none), and what a redirect to another domain's host does: its user
    # part routed like a dialled number ("route-user"), or the redirect refused ("refuse").
    max_redirects: int = 5
    foreign_redirects: Literal["route-user", "refuse"] = "route-user"
    # What failure answer to a re-INVITE, UPDATE, INFO ... inside a call ends the call
    # (gateway/core/sip/usages.py): "lenient" 481 and 408 only (RFC 3261 §12.2.1.2), "strict"
    # RFC 5057 §5.1's table too (404, 410, 416, 480, 482-485, 502, 604 ...).
    in_dialog_failures: Literal["lenient", "strict"] = "lenient"


@attrs.frozen
class MediaSection:
    address: str = "127.0.0.1"
    ports: str = "30000-30999"
    inactivity_timeout: float = 60.0
    # A call on hold (no stream sendrecv) may be silent this long instead: held phones often
    # send no RTCP either (rtpengine's --silent-timeout, one hour there too).
    hold_timeout: float = 3600.0
    workers: int = 1
    # Seconds a media worker (workers >= 2) has to say it is ready once started (at start-up or
    # again after it exited) before it is taken as hung (remote_relay.READY_WITHIN).
    worker_ready_timeout: float = 60.0
    offer_rtcp_feedback: bool = False
    # Read the legs' RTCP for call quality (gateway/core/media/quality.py); RTP is never read.
    rtcp_quality: bool = True
    # RFC 4733 <-> SIP INFO digits between a leg with telephone-event and one without
    # (docs/architecture.md "DTMF interworking"); in process or in the media workers.
    dtmf_interworking: bool = True
    # G.711 A-law <-> mu-law between a PCMU-only leg and a PCMA-only leg (docs/architecture.md
    # "G.711 transcoding"); off: legs without a common codec fail as ever (488).
    g711_transcoding: bool = False
    # The ringing tone a transferee hears while a transfer's target rings (docs/transfers.md
    # "Media", gateway/core/media/tones.py): a national plan, or "none" for silence.
    ringback_tone: Literal["us", "uk", "eu", "fr", "none"] = "us"


@attrs.frozen
class StoreSection:
    """Where accounts, registrations and call records live: SQLite in ``[gateway] state_dir``
    (one node), or a PostgreSQL database several nodes share (docs/architecture.md "Scale")."""

    backend: Literal["sqlite", "postgresql"] = "sqlite"
    # A libpq connection string or URI, which may hold the password: never shown.
    dsn: str = attrs.field(default="", repr=False)
    # A file holding only the password (first line), so the TOML need not.
    password_file: str = ""
    connect_timeout: int = 5
    statement_timeout: float = 0.5
    # The name this node's call records carry (PostgreSQL), so that a node ending the calls
    # its killed previous run left up ends only its own; "": the host name and first listener.
    node: str = ""
    # Whose a trunk's max_cps is (PostgreSQL): each node's ("node"), or the cluster's, each
    # node pacing max_cps / the live nodes its heartbeat counts ("cluster").
    max_cps_scope: Literal["node", "cluster"] = "node"
    # Days call records are kept, counted from their end (from their start for a record
    # without one); older ones are deleted by the housekeeping, in slices. 0: kept for ever.
    call_record_days: float = 0.0  # kept for ever unless set: upgrading deletes nothing
    # Whether the nodes build call_records_call_id_c (call_id COLLATE "C", for `voipgw calls
    # --call-id`) in a PostgreSQL database whose collation is not code point order, as they
    # have since session 42; false: never built (one already there is left alone), and a
    # look-up by Call-ID reads the newest records, then the whole table.
    call_id_index: bool = True


# libpq's least connect_timeout (PostgreSQL docs §34.1.2); a statement_timeout past this would
# let one write hold the event loop, which relays media, for longer than any phone waits.
MIN_CONNECT_TIMEOUT = 2
MAX_STATEMENT_TIMEOUT = 10.0
# PostgreSQL's statement_timeout is whole milliseconds, and the store rounds to them: less than
# half of one is 0 ms, which PostgreSQL reads as no timeout at all (its docs, §20.11), so a
# 1e-9 s meant to be short took the protection away.
MIN_STATEMENT_TIMEOUT = 0.001
# A century: a bound that catches a typo (days given in seconds), not a policy.
MAX_CALL_RECORD_DAYS = 36500.0

MAX_MEDIA_WORKERS = 64
# [media] worker_ready_timeout: a worker imports the media stack before it is ready (about a
# second on an idle machine, tens of seconds at a high load): below 5 s a busy moment at start-up
# fails it. Past an hour a hung worker goes unnoticed for longer than anyone waits on a restart.
MIN_WORKER_READY_TIMEOUT = 5.0
MAX_WORKER_READY_TIMEOUT = 3600.0
# A queue delay longer than T1 (0.5 s) means UACs retransmit before the gateway sees their
# INVITEs: overload control that waits that long comes too late to help.
MAX_OVERLOAD_QUEUE_DELAY = 0.5
# A day: longer than any call an operator would wait for before an upgrade.
MAX_DRAIN_TIMEOUT = 86_400.0
# A call follows at most this many redirections (a chain of forwards; RFC 5806 counter).
MAX_REDIRECTS = 20
# A day: a source blocked for longer is better refused by a firewall. Bounds
# auth_block_time too.
MAX_AUTH_FAILURE_WINDOW = 86_400.0
# [gateway] auth_ipv6_prefix_length bounds. 128: one address. 64: one subnet, what a customer
# or a host holds at least (64-bit interface IDs, RFC 4291 §2.5.1); 48: the largest end-site
# assignment (RFC 6177 §2: a /48 to a /64). Shorter would ban other customers' phones too.
MIN_AUTH_IPV6_PREFIX_LENGTH = 48
MAX_AUTH_IPV6_PREFIX_LENGTH = 128
# Under this auth_failure_window the limit never blocks: a source is blocked while its last
# auth_max_failures failures lie within the window, and the gateway takes longer than this to
# read one request (about 14 us to parse an INVITE, more for a digest check), so no two
# failures, nor a failure and the next request, ever fall within one window (1e-9 turned it
# off without a word). Not a floor: earlier releases loaded any window above 0, and with no
# other way to turn the limit off (a gateway behind a proxy whose address every request has)
# an operator may have meant it; the loader allows it and check-config says so (value_warnings).
MIN_AUTH_FAILURE_WINDOW = 1e-5
# Under a second the limit still blocks, but lets a guesser auth_max_failures guesses every
# second (432,000 a day at the default 5): it works as a brake on a flood only, so the loader
# allows it and check-config says so (value_warnings).
WARN_AUTH_FAILURE_WINDOW = 1.0
# A day: a callback later than that is a new call, not the end of an emergency call.
MAX_PSAP_CALLBACK_WINDOW = 86_400.0
# [sip] max_message_size bounds: at least an Ethernet frame's worth (below it an ordinary INVITE
# with its SDP is refused; RFC 3261 §18.1.1 wants up to 65535 bytes taken over UDP), at most
# 1 MiB, which each stream connection may buffer while a message arrives.
MIN_MESSAGE_SIZE = 1_500
MAX_MESSAGE_SIZE = 1 << 20
# [sip] max_headers bounds, in header entries after list headers are split (an Allow with twelve
# methods is twelve): an ordinary INVITE through a proxy or two has 30 to 50 of them, so below 64
# the gateway would refuse phones; above 10,000 the limit no longer bounds anything that
# max_message_size does not.
MIN_HEADERS = 64
MAX_HEADERS = 10_000
MAX_TRUNK_CPS = 10_000.0
# Registrations with trunks: RFC 3261 §10.2.1 suggests no less than a minute (registrars ask
# for more with 423); a day is as long as a carrier would keep one.
MIN_REGISTER_EXPIRES = 60
MAX_REGISTER_EXPIRES = 86400
# RFC 3261 §25.1 user (unreserved and user-unreserved characters, no escapes).
_CONTACT_USER = re.compile(r"[A-Za-z0-9\-_.!~*'()&=+$,]+")
# OPTIONS probes: more often than every few seconds is a flood towards a carrier; less often
# than an hour finds a dead trunk too late to matter.
MIN_OPTIONS_INTERVAL = 5.0
MAX_OPTIONS_INTERVAL = 3600.0
# The user part of a From: a number as carriers take it (E.164 with +, or national digits).
CALLER_ID = re.compile(r"\+?[0-9*#]{1,32}")
MIN_SESSION_INTERVAL = session_timer.MIN_INTERVAL
MAX_SESSION_INTERVAL = session_timer.MAX_INTERVAL
# RFC 3261 §17.1.1.1 timers. T1 is the round-trip estimate (500 ms by default) that Timers A,
# B, E, F, G, H and J scale with. At least 10 ms: Timers B and F (64*T1) are then 640 ms, still
# time for a 100 Trying across a LAN; below it every INVITE gives up at once (1e-9: 64 ns). At
# most 4 s: two geostationary satellite hops round-trip in about 1.2 s, and past 4 s every
# completed transaction is kept more than four minutes (Timer J, 64*T1: 1e300 kept them for
# ever, and the memory with them).
MIN_T1 = 0.01
MAX_T1 = 4.0
# T2 caps the retransmit interval of non-INVITE requests and INVITE responses (4 s, §17.1.2.2):
# not below T1, where the intervals start (they double up to T2; below T1 they would shrink);
# at most a minute, past Timer F at the default T1 (32 s), where the cap changes nothing (a
# larger value is milliseconds written for seconds).
MAX_T2 = 60.0
# T4, how long a message may stay in the network (5 s, §17.1.2.2): Timers I and K keep a
# completed transaction that long. A minute is twelve times the default. No floor but above 0:
# Timers I and K absorb retransmissions only, and on reliable transports they are 0 (§17.1.2.2,
# §17.2.1), so a tiny T4 ends UDP transactions as TCP ones end: a retransmission arriving
# after is a stray, dropped, and the exchange has already completed.
MAX_T4 = 60.0
# [media] hold_timeout: a held call's phones may send nothing but RTCP, at least every 5 s,
# randomised up to 7.5 s (RFC 3550 §6.2): a shorter timeout ends every held call that is up.
MIN_MEDIA_TIMEOUT = 10.0
# [media] inactivity_timeout: under a second, a burst of loss or one late packet ends a call that
# is up (1e-9 ended every call at once). Between that and 10 s it works only where media never
# pauses (trunks sending RTP all along): a phone silent under voice activity detection (RFC 3551
# §4.1) sends only RTCP, every 2.5-7.5 s; docs/configuration.md says so, the loader allows it.
MIN_INACTIVITY_TIMEOUT = 1.0
# [sip] ring_timeout (Timer C): under a second no person can answer: every call would end
# unanswered.
MIN_RING_TIMEOUT = 1.0
# [[trunks]] response_timeout: a server transaction may wait 200 ms before its 100 Trying (RFC 3261
# §17.2.1): below that a trunk working as the RFC allows would see every call given up before
# its answer. Above it a trunk on a LAN (a round trip of milliseconds) is answered in time; how
# much more a WAN needs is the operator's choice (docs/configuration.md).
MIN_RESPONSE_TIMEOUT = 0.2


@attrs.frozen
class PluginsSection:
    enable: tuple[str, ...] = DEFAULT_PLUGINS


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Prefixes and dial strings: an optional "+" then digits, "*" and "#" (RFC 3966 §3 phonedigit
# without visual separators, which routing removes before it compares).
_DIAL_PREFIX = re.compile(r"\+?[0-9*#]*")
DEFAULT_ROUTE_PREFIXES = frozenset({"", "*"})
_TRANSPORT_NAME = re.compile(r"[a-z][a-z0-9-]*")


def _read_only(mapping: Mapping[str, str]) -> Mapping[str, str]:
    return types.MappingProxyType(dict(mapping))


DtmfMode = Literal["rfc4733", "info"]
"""How a peer sends DTMF: as its SDP negotiates (RFC 4733 events when both legs have
telephone-event), or by SIP INFO only (``[[trunks]] dtmf``, ``DeviceProfile.dtmf``)."""
DTMF_MODES: tuple[DtmfMode, ...] = ("rfc4733", "info")


@attrs.frozen
class TrunkConfig:
    """One ``[[trunks]]`` table: a SIP trunk (a carrier or a PBX) we send calls to and accept
    calls from.

    ``address`` is where requests to the trunk go (``TRANSPORT:IP:PORT``). ``prefixes`` are the
    number prefixes it serves (``""`` or ``"*"`` is the default route); the longest matching
    prefix among enabled trunks wins. Before sending, ``strip_prefix`` leading characters are
    removed from the number and ``add_prefix`` is put in front. A request whose source address is
    in ``allowed_sources`` (default: the host of ``address``; ``[]``: none) is recognised as this
    trunk, without digest authentication when ``auth_by_source``. ``username``/``password`` are
    what we answer the trunk's own challenges with; the password never appears in a repr.
    ``dids`` maps a number the trunk delivers to the account that takes the call; an account
    calling out through the trunk is presented by the first of its numbers there (From and
    P-Asserted-Identity), else by ``caller_id``, else by its name. ``max_calls`` (0: none) bounds
    the calls in progress through the trunk, both ways together, and ``max_cps`` (0: none) the
    calls per second sent to it.
    ``interworking`` names a PSTN interworking (``gateway_register_interworking``, e.g. the
    ``pstn`` plugin's ``rfc3398``) that adds Q.850 release causes to what we send the trunk;
    ``""``: none.
    ``offer_rtcp_feedback`` overrides ``[media] offer_rtcp_feedback`` for calls to the trunk,
    ``g711_transcoding`` ``[media] g711_transcoding`` for calls to and from it
    (:meth:`GatewayConfig.g711_transcoding_for`).
    ``number_format`` is how E.164 numbers are written towards the trunk (the called number
    before ``strip_prefix``/``add_prefix``, our calling number); ``country_code`` ...
    ``national_number_length`` replace ``[numbering]``'s for numbers the trunk sends and for
    writing numbers to it (a carrier in another country); None: ``[numbering]``'s
    (:meth:`GatewayConfig.numbering_of`). ``options_interval`` (s, 0: none) probes the trunk
    with OPTIONS, and routing skips it while it does not answer; ``response_timeout`` (s, 0:
    Timer B) gives up an INVITE the trunk has not responded to at all, for the next trunk
    serving the number (gateway/core/calls/trunk_health.py). ``register`` keeps a
    registration with the trunk (``register_domain``, ``register_expires``, ``contact_user``;
    gateway/core/calls/trunk_registration.py). ``voicemail`` makes the trunk the voicemail
    service of the accounts it has DIDs for: their message-summary subscriptions go to it
    (gateway/core/calls/subscriptions.py); at most one trunk sets it. ``location`` is when a
    caller's location (RFC 6442) goes to the trunk: ``"emergency"`` only on calls to
    ``[numbering] emergency_numbers``, ``"all"``, ``"never"`` (gateway/core/calls/location.py).
    ``dtmf`` is how the trunk's peer sends DTMF: ``"rfc4733"`` as its SDP negotiates (events,
    or in-band without telephone-event), ``"info"`` by SIP INFO only: its offers without
    telephone-event get one towards the other leg, and the digits are interworked
    (docs/architecture.md "DTMF interworking").
    """

    name: str
    address: str
    prefixes: tuple[str, ...] = ()
    strip_prefix: int = 0
    add_prefix: str = ""
    allowed_sources: tuple[str, ...] | None = None
    auth_by_source: bool = True
    username: str | None = None
    password: str | None = attrs.field(default=None, repr=False)
    # Read-only, and hash=False: a mapping is not hashable (it still takes part in ==).
    dids: Mapping[str, str] = attrs.field(factory=dict, converter=_read_only, hash=False)
    media_policy: str = "best-effort"
    offer_rtcp_feedback: bool | None = None
    g711_transcoding: bool | None = None
    caller_id: str | None = None
    max_calls: int = 0
    max_cps: float = 0.0
    interworking: str = ""
    enabled: bool = True
    number_format: NumberFormat = "e164"
    # Seconds between OPTIONS probes (0: none); a trunk that stops answering is skipped.
    options_interval: float = 0.0
    # Seconds an INVITE to the trunk may go without any response before the next trunk is
    # tried (0: Timer B, 64*T1).
    response_timeout: float = 0.0
    # Keep a registration with the trunk (gateway/core/calls/trunk_registration.py): the
    # registrar's domain (host[:port], default: the address's), the expiry asked for, and the
    # user part of our Contact, where its calls come to (default: username).
    register: bool = False
    register_domain: str | None = None
    register_expires: int = 600
    contact_user: str | None = None
    country_code: str | None = None
    area_code: str | None = None
    international_prefix: str | None = None
    national_prefix: str | None = None
    national_number_length: int | None = None
    voicemail: bool = False
    location: LocationPolicy = "emergency"
    dtmf: DtmfMode = "rfc4733"
    # Who diverted a forwarded call, in our INVITEs to the trunk (RFC 5806 / RFC 7044), and
    # whether a 3xx from the trunk is followed (gateway/core/calls/redirect.py).
    diversion: DiversionPolicy = "diversion"
    follow_redirects: bool = False

    @property
    def registered_contact_user(self) -> str:
        """The user part of our Contact in the registration with this trunk."""
        return self.contact_user or self.username or "voipgw"

    @property
    def address_spec(self) -> ListenSpec:
        """``address`` parsed (transport, host, port); raises ValueError if it does not parse
        or names a host (:attr:`address_parts` reads both)."""
        return ListenSpec.parse(self.address)

    @property
    def address_parts(self) -> TrunkAddress:
        """``address`` parsed, an IP address or a host name (RFC 3263); raises ValueError if it
        does not parse. Parsed once per address (routing reads it per call)."""
        return _trunk_address(self.address)

    @property
    def by_name(self) -> bool:
        """Whether ``address`` names a host, resolved by DNS (calls/trunk_dns.py)."""
        return self.address_parts.is_name

    @property
    def sources(self) -> tuple[str, ...]:
        """The effective ``allowed_sources``: as configured, else the host of ``address``; for
        a trunk named by DNS none here: the addresses its name resolves to are added while the
        gateway runs (:class:`~gateway.core.calls.routing.TrunkMatcher`)."""
        if self.allowed_sources is None:
            parts = self.address_parts
            return () if parts.is_name else (parts.host,)
        return self.allowed_sources

    @property
    def source_networks(self) -> tuple[IPNetwork, ...]:
        """:attr:`sources` as networks (a bare address is a /32 or /128)."""
        return tuple(ipaddress.ip_network(text) for text in self.sources)

    @property
    def is_default_route(self) -> bool:
        return any(prefix in DEFAULT_ROUTE_PREFIXES for prefix in self.prefixes)


_FEATURE_CODE = re.compile(r"[0-9*#]{1,16}")


@attrs.frozen
class FeatureCodes:
    """``[feature_codes]``: dial strings the gateway answers itself instead of routing them.
    ``pickup`` picks up a call ringing any account the caller may pick up from (a
    ``[[dialog_watch_groups]]`` group with ``pickup``); ``directed_pickup`` followed by an
    account's name picks up a call ringing that account (gateway/core/calls/pickup.py). Only
    while some group has ``pickup``; ``""`` turns a code off."""

    pickup: str = "*8"
    directed_pickup: str = "**"

    def __attrs_post_init__(self) -> None:
        for key in ("pickup", "directed_pickup"):
            value = getattr(self, key)
            if value and not _FEATURE_CODE.fullmatch(value):
                raise ValueError(f'{key}: expected 1 to 16 of 0-9, * and #, or "" for none')
        if self.pickup and self.pickup == self.directed_pickup:
            raise ValueError("pickup: must differ from directed_pickup")


@attrs.frozen
class DialogWatchGroup:
    """One ``[[dialog_watch_groups]]`` table: accounts whose phones may watch each other's
    calls (busy lamp fields: ``SUBSCRIBE`` with ``Event: dialog``, RFC 4235;
    gateway/core/calls/dialog_events.py). Nobody else may: an account is watched only by the
    members of its groups (and itself). ``show_parties`` lets the members see who an account
    talks to (RFC 4235 §4.1.6 identities); without it they see only that it is ringing or busy,
    and which way the call goes. ``pickup`` lets the members pick up each other's ringing calls:
    the early dialog of a call to an account carries the Call-ID and tags a phone needs for its
    ``Replaces`` (RFC 4235 §4.1, RFC 3891)."""

    name: str
    accounts: tuple[str, ...]
    show_parties: bool = False
    pickup: bool = False


# Transports a trunk named by DNS may use: the ones RFC 3263 §4.1 has SRV services for.
DNS_TRANSPORTS = frozenset({"udp", "tcp", "tls"})
MAX_DNS_TARGETS = 16
# The least [dns] timeout: one resolution is a round trip to the resolver per query, two at the
# least (A and AAAA) and up to NAPTR, SRV and A/AAAA in turn (RFC 3263 §4); with 1e-9 every
# trunk named by DNS stayed unresolved, so no call reached it. Two queries to a resolver on
# the loopback took 0.63 ms at the least (dnspython, the 2-vCPU test host): the floor is a
# power of ten under half that, so a resolver on the host or the LAN is never refused.
MIN_DNS_TIMEOUT = 1e-4
# Under half a second a resolver across a WAN, or one query lost and asked again, exceeds the
# timeout: the loader allows it (a resolver on the LAN answers in milliseconds) and
# check-config says so (value_warnings).
WARN_DNS_TIMEOUT = 0.5


@attrs.frozen
class DnsSection:
    """``[dns]``: how trunks named by DNS are resolved (gateway/core/calls/trunk_dns.py).
    ``servers`` (``IP`` or ``IP:PORT``; ``[]``: /etc/resolv.conf's) are asked; ``timeout`` bounds
    one resolution of a trunk (its start-up one included); the answers are kept for their TTL,
    clamped to ``min_ttl`` ... ``max_ttl``, and resolved again ``retry_interval`` after a failure
    (the last good answer kept meanwhile); a call tries at most ``max_targets`` of a trunk's
    targets (RFC 3263 §4.3 failover)."""

    servers: tuple[str, ...] = ()
    timeout: float = 5.0
    min_ttl: float = 30.0
    max_ttl: float = 3600.0
    retry_interval: float = 30.0
    max_targets: int = 4

    def __attrs_post_init__(self) -> None:
        # from_mapping names the key before the first ": ".
        for server in self.servers:
            try:
                dns_server(server)
            except ValueError as exc:
                raise ValueError(f"servers: {exc}") from None
        if not MIN_DNS_TIMEOUT <= self.timeout <= 60:
            raise ValueError(
                f"timeout: expected a positive number of seconds, "
                f"at least {MIN_DNS_TIMEOUT:.4f} (a resolution is two to "
                f"three queries in turn, NAPTR, SRV and A/AAAA, RFC 3263 §4) and at most 60, "
                f"got {self.timeout:g}"
            )
        if not 1 <= self.min_ttl <= self.max_ttl:
            raise ValueError(
                f"min_ttl: expected 1 s or more, and at most max_ttl ({self.max_ttl:g}), "
                f"got {self.min_ttl:g}"
            )
        if self.max_ttl > 86400:
            raise ValueError(f"max_ttl: expected at most 86400 s (a day), got {self.max_ttl:g}")
        if not 1 <= self.retry_interval <= 3600:
            raise ValueError(f"retry_interval: expected 1 to 3600 s, got {self.retry_interval:g}")
        if not 1 <= self.max_targets <= MAX_DNS_TARGETS:
            raise ValueError(
                f"max_targets: expected 1 to {MAX_DNS_TARGETS}, got {self.max_targets}"
            )


def dns_server(text: str) -> tuple[str, int]:
    """``"127.0.0.1"``, ``"127.0.0.1:5353"`` or ``"[::1]:5353"`` as (address, port); port 53
    when none is given. Raises ValueError with the reason."""
    host, port_text = text, "53"
    if text.startswith("["):
        host, bracket, tail = text[1:].partition("]")
        if not bracket or (tail and not tail.startswith(":")):
            raise ValueError(f"expected IP, IP:PORT or [IPV6]:PORT, got {text!r}")
        port_text = tail[1:] if tail else "53"
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"expected an IP address (and :PORT), got {text!r}") from None
    if not _is_decimal(port_text) or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"expected a port 1-65535, got {text!r}")
    return host, int(port_text)


PresenceAllow = Literal["none", "same-group", "all-accounts"]


@attrs.frozen
class PresenceSection:
    """``[presence]``: the gateway as presence server of its own accounts (RFC 3856: phones
    PUBLISH their status, RFC 3903, and subscribe to their buddies', gateway/core/sip/presence.py
    and gateway/core/calls/dialog_events.py). ``allow`` says who may watch whom: ``"none"`` (no
    presence service: PUBLISH and ``Event: presence`` are refused as before), ``"same-group"``
    (accounts that share a ``[[dialog_watch_groups]]`` group) or ``"all-accounts"`` (any account
    of the gateway any other). An account may always watch itself. ``from_registration``: an
    account that published nothing (or whose publications ran out) is ``open`` while it has a
    live registration binding and ``closed`` once its last one goes, as FreeSWITCH and Asterisk
    derive presence from registration (most desk phones never PUBLISH)."""

    allow: PresenceAllow = "none"
    from_registration: bool = True


# [registrar]: what a phone's REGISTER may ask. A week bounds how long a phone that vanished
# without removing its binding (unplugged, its address given to another device) keeps being
# rung; 10000 contacts bound what one account can hold in the store.
MAX_REGISTRAR_EXPIRES = 604800
MAX_REGISTRAR_BINDINGS = 10000
DEFAULT_REGISTRAR_EXPIRES = 3600


@attrs.frozen
class RegistrarSection:
    """``[registrar]``: the expiries the registrar grants phones (RFC 3261 §10.3 steps 6-7): a
    REGISTER without an expiry gets :attr:`default`, one asking less than ``min_expires``
    (but 0, a removal) gets ``423 Interval Too Brief`` with that ``Min-Expires``, one asking
    more than ``max_expires`` is granted ``max_expires``; at most ``max_bindings`` contacts per
    account (403 past it). The defaults are what the registrar always granted."""

    min_expires: int = 60
    default_expires: int | None = None
    """None: :data:`DEFAULT_REGISTRAR_EXPIRES`, or the nearer bound when it lies outside them."""
    max_expires: int = 7200
    max_bindings: int = 10

    def __attrs_post_init__(self) -> None:
        # from_mapping names the key before the first ": ".
        for key in ("min_expires", "default_expires", "max_expires"):
            value = getattr(self, key)
            if value is not None and not 1 <= value <= MAX_REGISTRAR_EXPIRES:
                raise ValueError(
                    f"{key}: expected 1 to {MAX_REGISTRAR_EXPIRES} s (a week), got {value}"
                )
        if self.min_expires > self.max_expires:
            raise ValueError(
                f"min_expires: expected at most max_expires ({self.max_expires}), "
                f"got {self.min_expires}"
            )
        if self.default_expires is not None and not (
            self.min_expires <= self.default_expires <= self.max_expires
        ):
            raise ValueError(
                f"default_expires: expected from min_expires ({self.min_expires}) to "
                f"max_expires ({self.max_expires}), got {self.default_expires}"
            )
        if not 1 <= self.max_bindings <= MAX_REGISTRAR_BINDINGS:
            raise ValueError(
                f"max_bindings: expected 1 to {MAX_REGISTRAR_BINDINGS}, got {self.max_bindings}"
            )

    @property
    def default(self) -> int:
        """The expiry granted to a REGISTER that asks none."""
        if self.default_expires is not None:
            return self.default_expires
        return min(max(DEFAULT_REGISTRAR_EXPIRES, self.min_expires), self.max_expires)


@attrs.frozen
class GatewayConfig:
    """The whole configuration. ``plugin_tables`` holds the raw ``[plugins.NAME]`` tables until
    the plugin manager structures them with each plugin's declared class."""

    gateway: GatewaySection = GatewaySection()
    sip: SipSection = SipSection()
    media: MediaSection = MediaSection()
    store: StoreSection = StoreSection()
    plugins: PluginsSection = PluginsSection()
    numbering: NumberingPlan = attrs.field(factory=NumberingPlan)
    dns: DnsSection = DnsSection()
    trunks: tuple[TrunkConfig, ...] = ()
    dialog_watch_groups: tuple[DialogWatchGroup, ...] = ()
    feature_codes: FeatureCodes = FeatureCodes()
    presence: PresenceSection = PresenceSection()
    registrar: RegistrarSection = RegistrarSection()
    plugin_tables: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)
    source: str = "<embedded defaults>"

    @property
    def listen(self) -> tuple[str, ...]:
        """``[sip] listen``, or the default listeners of the enabled transports."""
        if self.sip.listen is not None:
            return self.sip.listen
        enabled = set(self.plugins.enable)
        return tuple(t for t in DEFAULT_LISTEN if t.partition(":")[0] in enabled)

    @property
    def listen_specs(self) -> tuple[ListenSpec, ...]:
        return tuple(ListenSpec.parse(text) for text in self.listen)

    @property
    def media_ports(self) -> PortRange:
        return PortRange.parse(self.media.ports)

    def trunk(self, name: str) -> TrunkConfig | None:
        """The trunk called ``name`` (enabled or not), or None."""
        for trunk in self.trunks:
            if trunk.name == name:
                return trunk
        return None

    @property
    def voicemail_trunk(self) -> TrunkConfig | None:
        """The trunk with ``voicemail = true`` (at most one), or None."""
        for trunk in self.trunks:
            if trunk.voicemail:
                return trunk
        return None

    def numbering_of(self, trunk: TrunkConfig) -> NumberingPlan:
        """The numbering plan of ``trunk``: ``[numbering]`` with the keys the trunk sets."""
        return trunk_numbering(self.numbering, trunk)

    def g711_transcoding_for(self, trunks: typing.Iterable[str]) -> bool:
        """Whether a call from or to the trunks named ``trunks`` (its caller's, the ones it is
        routed to and may fail over to) may be G.711 transcoded: ``false`` on any of them
        wins (a trunk whose calls must never be transcoded), else ``true`` on any of them
        (the one carrier that speaks only PCMA), else ``[media] g711_transcoding``."""
        settings = set()
        for name in trunks:
            trunk = self.trunk(name)
            if trunk is not None and trunk.g711_transcoding is not None:
                settings.add(trunk.g711_transcoding)
        if settings:
            return False not in settings
        return self.media.g711_transcoding


_PLAN_OVERRIDES = (
    "country_code",
    "area_code",
    "international_prefix",
    "national_prefix",
    "national_number_length",
)


def trunk_numbering(numbering: NumberingPlan, trunk: TrunkConfig) -> NumberingPlan:
    """``numbering`` with the numbering keys ``trunk`` sets (a trunk that names another
    country's code has no area code unless it names one too)."""
    changes = {key: getattr(trunk, key) for key in _PLAN_OVERRIDES}
    changes = {key: value for key, value in changes.items() if value is not None}
    if not changes:
        return numbering
    if "country_code" in changes and "area_code" not in changes:
        changes["area_code"] = ""  # another country's plan: our area code is not its own
    return attrs.evolve(numbering, **changes)


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is tuple:
        item = typing.get_args(tp)[0]
        plural = {str: "strings", int: "integers", float: "numbers", bool: "booleans"}
        return f"a list of {plural.get(item, _describe(item))}"
    if origin is Mapping:
        value = typing.get_args(tp)[1]
        plural = {str: "strings", int: "integers", float: "numbers", bool: "booleans"}
        return f"a table of {plural.get(value, _describe(value))}"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp) if a is not type(None))
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _convert(value: Any, tp: Any, fail: typing.Callable[[str], Exception]) -> Any:
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise fail(f"expected {_describe(tp)}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        others = [arg for arg in args if arg is not type(None)]
        if len(others) == 1:
            # ``str | None``: the one type's own message says what is wrong with the value.
            return _convert(value, others[0], fail)
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, fail)
            except ConfigError:
                continue
        raise fail(f"expected {_describe(tp)}, got {value!r}")
    if origin is tuple:
        if not isinstance(value, list):
            raise fail(f"expected {_describe(tp)}, got {value!r}")
        item_tp = typing.get_args(tp)[0]
        return tuple(_convert(item, item_tp, fail) for item in value)
    if origin is Mapping:
        # A TOML table of values (``dids = {"+4930123456" = "alice"}``); keys are always strings.
        if not isinstance(value, dict):
            raise fail(f"expected {_describe(tp)}, got {value!r}")
        value_tp = typing.get_args(tp)[1]
        out: dict[str, Any] = {}
        for key, item in value.items():

            def entry_fail(message: str, _key: str = key) -> Exception:
                return fail(f"entry {_key!r}: {message}")

            out[key] = _convert(item, value_tp, entry_fail)
        return out
    if attrs.has(tp):
        if not isinstance(value, dict):
            raise fail(f"expected a table, got {value!r}")
        return value  # nested tables are structured by the caller with their own name
    if tp is bool:
        if not isinstance(value, bool):
            raise fail(f"expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail(f"expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise fail(f"expected a number, got {value!r}")
        if not math.isfinite(value):
            # TOML has nan and inf; no key means either (a NaN timeout passes every range
            # check written "x <= 0" and then fails the first timer that reads it).
            raise fail(f"expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise fail(f"expected a string, got {value!r}")
        if "\x00" in value:
            # No name, path, address or URI holds one; a path with one made os.stat() raise a
            # bare "embedded null byte" that named no key.
            raise fail("expected text without NUL characters")
        return value
    if tp is Any:
        return value
    raise TypeError(f"config field type {tp!r} is not supported")


# The file and table structure() is building: what unreadable_here names.
_BUILDING: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar(
    "voipgw_config_building", default=None
)
# While `voipgw check-config` runs (reading_as_checker): the files it could not read as its
# user, as warnings. None otherwise (`voipgw run`, the service: the same file is an error).
_UNREAD: contextvars.ContextVar[list[ConfigError] | None] = contextvars.ContextVar(
    "voipgw_config_unread", default=None
)


# While `voipgw check-config` runs as root: the files it read (which root may, whatever their
# mode), by path: (key, file, table), for root_read_warnings.
_READ_AS_ROOT: contextvars.ContextVar[dict[Path, tuple[str, str, str]] | None] = (
    contextvars.ContextVar("voipgw_config_read_as_root", default=None)
)


@contextlib.contextmanager
def reading_as_checker() -> Iterator[list[ConfigError]]:
    """What ``voipgw check-config`` checks within: a file a key names that exists but that
    this user may not read (a TLS key or PostgreSQL password file of mode 600 owned by the
    service's user, an operator checking as themselves) is not refused but noted, in the list
    yielded, as a warning naming the user, the key and the file (:func:`unreadable_here`): the
    service's user's permissions are not check-config's to know, and a false error is worse
    than a warning. ``voipgw run`` does not use it: the service refuses such a file."""
    token = _UNREAD.set([])
    read = _READ_AS_ROOT.set({} if os.geteuid() == 0 else None)
    try:
        notes = _UNREAD.get()
        assert notes is not None
        yield notes
    finally:
        _READ_AS_ROOT.reset(read)
        _UNREAD.reset(token)


def unreadable_here(
    path: Path, key: str, *, file: str | None = None, table: str | None = None
) -> bool:
    """Whether the caller should leave ``path`` (the file ``key`` names) unchecked: it exists
    but this user may not read it, and ``voipgw check-config`` is checking
    (:func:`reading_as_checker`), which then has a warning saying so. False otherwise: the
    caller reads the file and refuses what it finds, an unreadable file too. ``file`` and
    ``table`` default to what :func:`structure` is building (a plugin's table)."""
    notes = _UNREAD.get()
    if notes is None:
        return False
    if file is None or table is None:
        file, table = _BUILDING.get() or ("<configuration>", "")
    closed = unentered_directory(path)
    if closed is not None:
        # stat(2) fails with EACCES, not ENOENT: the file may well be there (/etc/voipgw of
        # mode 0750 root:voipgw, an operator in neither), in a directory this user may not
        # enter. Not "does not exist": which directory, and whether another user could.
        if not any(getattr(note, "path", None) == path for note in notes):
            notes.append(_unentered_note(path, closed, key, file, table))
        return True
    if not os.path.exists(path):
        return False
    if may_open(path, os.O_RDONLY):
        read = _READ_AS_ROOT.get()
        if read is not None:
            read.setdefault(path, (key, file, table))
        return False
    if any(note.message.startswith(f"{path} cannot be read by this user") for note in notes):
        return True  # said once (wss builds the tls transport's table again from its own)
    me, owner = user_name(), owner_name(path)
    # Its owner is most likely the service's user (a key: owner that user, mode 600).
    other = owner if owner is not None and owner != me else None
    who = f"the service's user (its owner, {other}, most likely)" if other else "the service's user"
    notes.append(
        UnreadFile(
            file,
            table,
            key,
            f"{path} cannot be read by this user ({me}), who runs check-config, so it was not "
            f"checked: {who} may be allowed to; `voipgw run` as a user who may not refuses to "
            f"start (check it as that user: sudo -u {other or 'USER'} voipgw check-config FILE)",
            path=path,
        )
    )
    return True


class UnreadFile(ConfigError):
    """The warning of :func:`unreadable_here`, with the file's ``path``."""

    def __init__(self, file: str, table: str, key: str | None, message: str, *, path: Path) -> None:
        super().__init__(file, table, key, message)
        self.path = path


class UnenteredDirectory(UnreadFile):
    """The note of :func:`unreadable_here` for a file in a directory (``directory``) this
    user may not enter; ``root_only``: its mode lets no user but root enter it, an error."""

    def __init__(
        self,
        file: str,
        table: str,
        key: str | None,
        message: str,
        *,
        path: Path,
        directory: Path,
        root_only: bool,
    ) -> None:
        super().__init__(file, table, key, message, path=path)
        self.directory = directory
        self.root_only = root_only


def may_open(path: Path, flags: int) -> bool:
    """Whether this process may open the file ``path`` with ``flags`` (``os.O_RDONLY`` or
    ``os.O_WRONLY``), tried: open(2) answers for the effective user and every capability, ACL
    and network file system's mapping, where access(2) answers for the real user by the mode
    bits this host sees. Nothing is created, truncated or written (neither O_CREAT nor
    O_TRUNC; O_NONBLOCK: a FIFO does not block the check).

    A file this process holds open already is not opened again: closing a descriptor drops
    every POSIX advisory lock the process holds on the file, those of the descriptors it did
    not close too, so a check that opened and closed a SQLite database a plugin holds open (the
    intercept plugin's tasks, opened at its registration) would take away its connection's
    locks while another process may write the file (https://www.sqlite.org/howtocorrupt.html
    §2.2). The descriptors held answer instead (SQLite writes through its own, opened for
    writing if it could, whatever the file's mode says now); one held for reading only, when
    writing is asked, and every file where this process's descriptors cannot be listed (no
    /proc/self/fd), are answered by access(2) for the effective user."""
    held = _held_descriptors(path)
    if held is None or held:
        if held and any(mode in _ACCESS_MODES_ALLOWING[flags] for mode in held):
            return True
        effective = os.access in os.supports_effective_ids
        return os.access(path, _ACCESS_CHECKED[flags], effective_ids=effective)
    try:
        descriptor = os.open(path, flags | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return False
    os.close(descriptor)
    return True


# may_open's flags -> the access modes of a held descriptor that answer yes, and access(2)'s.
_ACCESS_MODES_ALLOWING = {
    os.O_RDONLY: (os.O_RDONLY, os.O_RDWR),
    os.O_WRONLY: (os.O_WRONLY, os.O_RDWR),
}
_ACCESS_CHECKED = {os.O_RDONLY: os.R_OK, os.O_WRONLY: os.W_OK}


def _held_descriptors(path: Path) -> list[int] | None:
    """The access modes (``os.O_RDONLY``, ``os.O_WRONLY``, ``os.O_RDWR``) of the descriptors
    this process holds of the file ``path`` (the same device and inode), none if it does not
    exist; None when they cannot be told (no /proc/self/fd to list them)."""
    try:
        info = os.stat(path)
    except OSError:
        return []
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return None
    import fcntl  # here: a system with /proc/self/fd has it (config.py imports anywhere)

    modes = []
    for name in names:
        try:
            descriptor = int(name)
            held = os.fstat(descriptor)
            if (held.st_dev, held.st_ino) == (info.st_dev, info.st_ino):
                flags = fcntl.fcntl(descriptor, fcntl.F_GETFL)
                if flags & getattr(os, "O_PATH", 0):
                    continue  # reads and writes nothing (its access mode reads as O_RDONLY)
                modes.append(flags & os.O_ACCMODE)
        except (OSError, ValueError):
            continue  # closed since (listdir's own), or not a number
    return modes


def unentered_directory(path: Path) -> Path | None:
    """The directory on the way to ``path`` this user may not enter (search, the x bit), when
    that is why stat(2) of ``path`` fails (EACCES, where a missing file is ENOENT), or None.
    Found by trying: stat(2) of each part of the path in turn, from the root."""
    try:
        os.stat(path)
        return None
    except PermissionError:
        pass
    except (OSError, ValueError):
        return None
    absolute = Path(os.path.abspath(path))
    for directory in reversed(absolute.parents):
        try:
            os.stat(directory)
        except PermissionError:
            return directory.parent
        except OSError:
            return None
    return absolute.parent


def unentered_problem(path: Path) -> str | None:
    """``PATH cannot be reached by this user (NAME): it may not enter DIR (mode 0750, owner
    root, group voipgw)``, or None: what to say instead of "does not exist" of a file in a
    directory this user may not enter (``voipgw run``'s error names the key before it)."""
    directory = unentered_directory(path)
    if directory is None:
        return None
    return (
        f"{path} cannot be reached by this user ({user_name()}): it may not enter "
        f"{directory} ({_describe_directory(directory)})"
    )


def _describe_directory(directory: Path) -> str:
    try:
        info = os.stat(directory)
    except OSError:
        return "its mode cannot be read"
    return (
        f"mode {stat.S_IMODE(info.st_mode):04o}, owner {owner_name(directory)}, "
        f"group {_group_name(info.st_gid)}"
    )


def _group_name(gid: int) -> str:
    try:
        import grp

        return grp.getgrgid(gid).gr_name
    except (ImportError, KeyError):
        return f"gid {gid}"


def _only_root_enters(directory: Path) -> bool:
    """Whether the mode of ``directory`` lets no user but root enter it: no x bit but root's
    own (0700 root:root, 0600 of anyone's). False when it cannot be told (an ACL)."""
    try:
        info = os.stat(directory)
    except OSError:
        return False
    try:
        if os.getxattr(directory, "system.posix_acl_access"):
            return False
    except (AttributeError, OSError):
        pass  # none (ENODATA), or no xattrs here: the mode says it
    mode = info.st_mode
    owner_enters = info.st_uid != 0 and mode & stat.S_IXUSR
    return not (owner_enters or mode & stat.S_IXGRP or mode & stat.S_IXOTH)


def _unentered_note(path: Path, directory: Path, key: str, file: str, table: str) -> UnreadFile:
    reached = f"{path} cannot be reached by this user ({user_name()}), who runs check-config"
    described = _describe_directory(directory)
    if _only_root_enters(directory):
        message = (
            f"{reached}, nor by any user but root: {directory} ({described}) lets no other "
            f"user enter it; `voipgw run` as any user but root refuses to start (let the "
            f"service's user enter it: chgrp SERVICE-GROUP {directory} && chmod g+x {directory})"
        )
        root_only = True
    else:
        message = (
            f"{reached}: it may not enter {directory} ({described}), so {path} was not "
            "checked: the service's user may be allowed to; `voipgw run` as a user who may "
            "not refuses to start (check it as that user: sudo -u USER voipgw check-config "
            "FILE)"
        )
        root_only = False
    return UnenteredDirectory(
        file, table, key, message, path=path, directory=directory, root_only=root_only
    )


def unread_by_service(note: ConfigError, state_dir: Path) -> ConfigError | None:
    """For ``voipgw check-config``: the error of a file it could not read (``note``, from
    :func:`unreadable_here`) whose mode keeps the owner of the existing ``state_dir`` from
    reading it too, or None. That owner is the user ``voipgw run`` created the directory as,
    most likely the service's (the same guess as a state_dir's warning): a key of mode 600 of
    root's (copied with sudo) cannot be read by the service either, which check-config said
    (exit 2) before such files became warnings, and a deploy script's ``check-config &&
    systemctl reload`` relies on. None when it cannot be told: no such directory, one of
    root's (root reads anything), an ACL on the file, a user without a passwd entry."""
    if isinstance(note, UnenteredDirectory):
        # A directory no user but root may enter: the service's user may not either, unless
        # it is root, as it most likely is when the state_dir is root's (or cannot be told:
        # not there yet), which runs as it did (a warning, as of a file the owner may read).
        if not note.root_only:
            return None
        try:
            owner = os.stat(state_dir)
        except OSError:
            return None
        if owner.st_uid == 0 or not stat.S_ISDIR(owner.st_mode):
            return None
        return ConfigError(note.file, note.table, note.key, note.message)
    if not isinstance(note, UnreadFile):
        return None
    unread = _unread_by_owner(note.path, state_dir)
    if unread is None:
        return None
    return ConfigError(
        note.file,
        note.table,
        note.key,
        f"{note.path} cannot be read by this user ({user_name()}), who runs check-config, nor "
        f"by {unread}",
    )


def root_read_warnings(state_dir: Path) -> list[ConfigError]:
    """For ``voipgw check-config`` run as root (a deploy script), within
    :func:`reading_as_checker`: a warning for each file it read whose mode keeps the owner of
    the existing ``state_dir`` (most likely the service's user, as :func:`unread_by_service`
    guesses) from reading it. Root reads any file, so check-config passed a key of mode 600 of
    root's that ``voipgw run`` as the service's user refuses; a warning, not an error: such a
    configuration passed check-config before (the service may run as root)."""
    warnings = []
    for path, (key, file, table) in (_READ_AS_ROOT.get() or {}).items():
        unread = _unread_by_owner(path, state_dir)
        if unread is not None:
            warnings.append(
                ConfigError(
                    file,
                    table,
                    key,
                    f"{path} can be read by root, who runs check-config, but not by {unread}",
                )
            )
    return warnings


def _unread_by_owner(path: Path, state_dir: Path) -> str | None:
    """Why the owner of the existing directory ``state_dir`` may not read the file ``path``,
    by its mode bits (``voipgw, the owner of the state_dir ...: its mode is 0600, its owner
    root; ...``), or None when that owner may or it cannot be told (no such directory, one of
    root's, an ACL, a user without a passwd entry)."""
    try:
        directory, info = os.stat(state_dir), os.stat(path)
    except OSError:
        return None
    if directory.st_uid == 0 or not stat.S_ISDIR(directory.st_mode):
        return None
    if _may_read(path, info, directory.st_uid) is not False:
        return None
    service = owner_name(state_dir)
    return (
        f"{service}, the owner of the state_dir {state_dir} (the user `voipgw run` created it "
        f"as, most likely): its mode is {stat.S_IMODE(info.st_mode):04o}, its owner "
        f"{owner_name(path)}; `voipgw run` as {service} refuses to start"
    )


def may_read_as(path: Path, uid: int) -> bool | None:
    """Whether the user ``uid`` may read the file ``path`` by its mode bits, or None when they
    do not tell (no such file, an ACL, a user without a passwd entry)."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return _may_read(path, info, uid)


def _may_read(path: Path, info: os.stat_result, uid: int) -> bool | None:
    """Whether the user ``uid`` may read the file ``path`` (``info``: its stat) by its mode
    bits, or None when they do not tell (an ACL, a user without a passwd entry)."""
    try:
        if os.getxattr(path, "system.posix_acl_access"):
            return None
    except (AttributeError, OSError):
        pass  # none (ENODATA), or no xattrs here: the mode says it
    mode = info.st_mode
    if info.st_uid == uid:
        return bool(mode & stat.S_IRUSR)
    if mode & stat.S_IROTH:
        return True
    if not mode & stat.S_IRGRP:
        return False
    try:
        import pwd

        entry = pwd.getpwuid(uid)
        return info.st_gid in os.getgrouplist(entry.pw_name, entry.pw_gid)
    except (ImportError, KeyError, OSError):
        return None


def structure(cls: type[T], table: Mapping[str, Any], *, file: str, table_name: str) -> T:
    """Build ``cls`` (an attrs class) from a TOML table; unknown, missing or mistyped keys raise
    :class:`ConfigError` naming ``file``, ``table_name`` and the key."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in attrs.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(table) - set(fields))
    if unknown:
        known = ", ".join(sorted(fields)) or "(none)"
        raise ConfigError(file, table_name, unknown[0], f"unknown key; known keys: {known}")
    values: dict[str, Any] = {}
    for name, field in fields.items():
        if name not in table:
            if field.default is attrs.NOTHING:
                raise ConfigError(
                    file, table_name, name, f"missing; expected {_describe(hints[name])}"
                )
            continue

        def fail(message: str, _name: str = name, _secret: bool = not field.repr) -> ConfigError:
            if _secret:
                # A secret (repr=False, e.g. a password): say what was expected, never echo
                # what was written.
                message = f"expected {_describe(hints[_name])}"
            return ConfigError(file, table_name, _name, message)

        values[name] = _convert(table[name], hints[name], fail)
    token = _BUILDING.set((file, table_name))
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        # A class's own checks (__attrs_post_init__: a plugin's table, [dns], [numbering])
        # start their message with the key they find wrong: name it as the key, as the type
        # checks above do, so that every error reads "[TABLE] KEY: ...".
        key, sep, message = str(exc).partition(": ")
        # "a, b, c: ..." names keys checked together (the intercept plugin's report_* files).
        if sep and all(name in fields for name in key.split(", ")):
            raise ConfigError(file, table_name, key, message) from None
        raise ConfigError(file, table_name, None, str(exc)) from None
    finally:
        _BUILDING.reset(token)


def _validate(config: GatewayConfig, file: str) -> None:
    for text in config.listen:
        try:
            ListenSpec.parse(text)
        except ValueError as exc:
            raise ConfigError(file, "sip", "listen", str(exc)) from None
    try:
        config.media_ports  # noqa: B018 - parse for validation
    except ValueError as exc:
        raise ConfigError(file, "media", "ports", str(exc)) from None
    try:
        media_address = ipaddress.ip_address(config.media.address)
    except ValueError:
        raise ConfigError(
            file, "media", "address", f"expected an IP address, got {config.media.address!r}"
        ) from None
    if media_address.is_unspecified or media_address.is_multicast:
        # The address goes into every SDP c= line we send (RFC 4566 §5.7): no phone can send
        # media to 0.0.0.0 or ::, which RFC 3264 §8.4 reads as "on hold", nor answer from a
        # group address.
        raise ConfigError(
            file,
            "media",
            "address",
            "expected the unicast address phones send media to (it goes into SDP c= lines, "
            f"RFC 4566 §5.7; 0.0.0.0 there means hold, RFC 3264 §8.4), got "
            f"{config.media.address!r}",
        )
    thresholds = config.gateway.gc_thresholds
    if len(thresholds) != 3 or thresholds[0] < 1 or min(thresholds) < 0:
        raise ConfigError(
            file,
            "gateway",
            "gc_thresholds",
            f"expected three integers, the first positive, got {list(thresholds)}",
        )
    if not 0 <= config.gateway.drain_timeout <= MAX_DRAIN_TIMEOUT:
        raise ConfigError(
            file,
            "gateway",
            "drain_timeout",
            f"expected 0 (stop at once) to {MAX_DRAIN_TIMEOUT:g} seconds, "
            f"got {config.gateway.drain_timeout:g}",
        )
    if config.gateway.auth_max_failures < 1:
        raise ConfigError(
            file,
            "gateway",
            "auth_max_failures",
            f"expected a positive number of failures, got {config.gateway.auth_max_failures}",
        )
    window = config.gateway.auth_failure_window
    if not 0 < window <= MAX_AUTH_FAILURE_WINDOW:
        raise ConfigError(
            file,
            "gateway",
            "auth_failure_window",
            f"expected seconds above 0, up to {MAX_AUTH_FAILURE_WINDOW:g}, got {window:g}",
        )
    block_time = config.gateway.auth_block_time
    if not 0 <= block_time <= MAX_AUTH_FAILURE_WINDOW:
        raise ConfigError(
            file,
            "gateway",
            "auth_block_time",
            f"expected seconds from 0 (blocked only while the failures lie within "
            f"auth_failure_window) to {MAX_AUTH_FAILURE_WINDOW:g}, got {block_time:g}",
        )
    prefix_length = config.gateway.auth_ipv6_prefix_length
    if not MIN_AUTH_IPV6_PREFIX_LENGTH <= prefix_length <= MAX_AUTH_IPV6_PREFIX_LENGTH:
        raise ConfigError(
            file,
            "gateway",
            "auth_ipv6_prefix_length",
            f"expected an IPv6 prefix length from {MIN_AUTH_IPV6_PREFIX_LENGTH} (a site) to "
            f"{MAX_AUTH_IPV6_PREFIX_LENGTH} (one address), got {prefix_length}",
        )
    for proxy in config.gateway.auth_proxies:
        try:
            # strict: "192.0.2.10/24" is refused rather than silently widened to a /24.
            network = ipaddress.ip_network(proxy, strict=True)
        except ValueError as exc:
            raise ConfigError(
                file, "gateway", "auth_proxies", f"expected IP addresses or CIDRs: {exc}"
            ) from None
        # Whoever is listed is believed about who sent what: a network as wide as the
        # internet's would let any guesser have its failures counted against an address of
        # its choosing (another phone's, to block it).
        widest = 8 if network.version == 4 else 32
        if network.prefixlen < widest:
            raise ConfigError(
                file,
                "gateway",
                "auth_proxies",
                f"{proxy} is wider than any proxy farm (/{widest} at most): every address in it"
                " would be believed about which phone sent a request",
            )
    if not 0 <= config.gateway.psap_callback_window <= MAX_PSAP_CALLBACK_WINDOW:
        raise ConfigError(
            file,
            "gateway",
            "psap_callback_window",
            f"expected seconds from 0 (no callbacks recognised) to {MAX_PSAP_CALLBACK_WINDOW:g}, "
            f"got {config.gateway.psap_callback_window:g}",
        )
    for fragment in config.sip.drop_user_agents:
        if not fragment.strip():
            # An empty fragment is contained in every User-Agent: every phone would be dropped.
            raise ConfigError(
                file, "sip", "drop_user_agents", 'expected non-empty strings ("" matches all)'
            )
    seen: set[tuple[str, str, int]] = set()
    for spec in config.listen_specs:
        # Two listeners on one port: the second bind failed at start-up, after the first.
        where = (spec.transport, str(ipaddress.ip_address(spec.host)), spec.port)
        if spec.port and where in seen:
            raise ConfigError(file, "sip", "listen", f"lists {spec} more than once")
        seen.add(where)
    # Both go into every message as they are: a CR or LF would end the header there (and what
    # follows be read as headers of its own), a '"' or '\\' would end the realm's quoted-string
    # (RFC 3261 §25.1 quoted-string, §20.35 Server: TEXT-UTF8 without control characters).
    if not config.sip.user_agent.strip() or not config.sip.user_agent.isprintable():
        raise ConfigError(
            file, "sip", "user_agent", "expected printable text (no control characters)"
        )
    realm = config.gateway.realm
    if not realm.strip() or not realm.isprintable() or '"' in realm or "\\" in realm:
        raise ConfigError(file, "gateway", "realm", 'expected printable text without " or \\')
    for key in ("t1", "t2", "t4"):
        if getattr(config.sip, key) <= 0:
            # The transaction layer refused it later with a bare ValueError (a traceback).
            raise ConfigError(
                file,
                "sip",
                key,
                f"expected a positive number of seconds, got {getattr(config.sip, key):g}",
            )
    _validate_timers(config.sip, file)
    if not MIN_MESSAGE_SIZE <= config.sip.max_message_size <= MAX_MESSAGE_SIZE:
        # A size of 0 or less made every WebSocket connection fail at its first message.
        raise ConfigError(
            file,
            "sip",
            "max_message_size",
            f"expected bytes from {MIN_MESSAGE_SIZE} to {MAX_MESSAGE_SIZE}, "
            f"got {config.sip.max_message_size}",
        )
    if not MIN_HEADERS <= config.sip.max_headers <= MAX_HEADERS:
        # 0 or a handful refused every request with 513: the gateway looked up and answered
        # nothing.
        raise ConfigError(
            file,
            "sip",
            "max_headers",
            f"expected header fields from {MIN_HEADERS} to {MAX_HEADERS}, "
            f"got {config.sip.max_headers}",
        )
    if not 0 <= config.sip.overload_queue_delay <= MAX_OVERLOAD_QUEUE_DELAY:
        raise ConfigError(
            file,
            "sip",
            "overload_queue_delay",
            f"expected a number of seconds from 0 (never refuse) to {MAX_OVERLOAD_QUEUE_DELAY}, "
            f"got {config.sip.overload_queue_delay:g}",
        )
    if config.sip.overload_retry_after < 0:
        raise ConfigError(
            file,
            "sip",
            "overload_retry_after",
            f"expected 0 (no Retry-After) or more seconds, got {config.sip.overload_retry_after}",
        )
    if config.sip.ring_timeout < MIN_RING_TIMEOUT:
        raise ConfigError(
            file,
            "sip",
            "ring_timeout",
            f"expected a positive number of seconds, at least {MIN_RING_TIMEOUT:g} (no one "
            f"answers sooner), got {config.sip.ring_timeout:g}",
        )
    if not 0 <= config.sip.max_redirects <= MAX_REDIRECTS:
        raise ConfigError(
            file,
            "sip",
            "max_redirects",
            f"expected 0 (follow none) to {MAX_REDIRECTS}, got {config.sip.max_redirects}",
        )
    if not MIN_SESSION_INTERVAL <= config.sip.min_se <= MAX_SESSION_INTERVAL:
        raise ConfigError(
            file,
            "sip",
            "min_se",
            f"expected seconds from {MIN_SESSION_INTERVAL} (RFC 4028 §5) to "
            f"{MAX_SESSION_INTERVAL}, got {config.sip.min_se}",
        )
    if config.sip.session_expires != 0 and not (
        config.sip.min_se <= config.sip.session_expires <= MAX_SESSION_INTERVAL
    ):
        raise ConfigError(
            file,
            "sip",
            "session_expires",
            f"expected 0 (ask for no session timer) or seconds from min_se "
            f"({config.sip.min_se}) to {MAX_SESSION_INTERVAL}, got {config.sip.session_expires}",
        )
    keepalive = config.sip.nat_keepalive_interval
    if keepalive != 0 and not MIN_OPTIONS_INTERVAL <= keepalive <= MAX_OPTIONS_INTERVAL:
        raise ConfigError(
            file,
            "sip",
            "nat_keepalive_interval",
            f"expected 0 (no keepalives) or {MIN_OPTIONS_INTERVAL:g} to "
            f"{MAX_OPTIONS_INTERVAL:g} seconds, got {keepalive:g}",
        )
    for status in config.sip.failover_statuses:
        if not 400 <= status <= 599 or status in (401, 407):
            raise ConfigError(
                file,
                "sip",
                "failover_statuses",
                f"expected 4xx and 5xx statuses but 401 and 407 (answered with credentials), "
                f"got {status}",
            )
    if config.media.inactivity_timeout < MIN_INACTIVITY_TIMEOUT:
        raise ConfigError(
            file,
            "media",
            "inactivity_timeout",
            f"expected a positive number of seconds, at least {MIN_INACTIVITY_TIMEOUT:g} (a "
            f"burst of loss would end calls that are up), got "
            f"{config.media.inactivity_timeout:g}",
        )
    if config.media.hold_timeout < MIN_MEDIA_TIMEOUT:
        raise ConfigError(
            file,
            "media",
            "hold_timeout",
            f"expected a positive number of seconds, at least {MIN_MEDIA_TIMEOUT:g} (a held "
            f"phone may send only RTCP, every 5 to 7.5 s, RFC 3550 §6.2), got "
            f"{config.media.hold_timeout:g}",
        )
    if not 1 <= config.media.workers <= MAX_MEDIA_WORKERS:
        raise ConfigError(
            file,
            "media",
            "workers",
            f"expected an integer from 1 to {MAX_MEDIA_WORKERS}, got {config.media.workers}",
        )
    ready = config.media.worker_ready_timeout
    if not MIN_WORKER_READY_TIMEOUT <= ready <= MAX_WORKER_READY_TIMEOUT:
        raise ConfigError(
            file,
            "media",
            "worker_ready_timeout",
            f"expected seconds from {MIN_WORKER_READY_TIMEOUT:g} (a media worker imports the "
            f"media stack before it is ready) to {MAX_WORKER_READY_TIMEOUT:g}, got {ready:g}",
        )
    # Each worker relays on its own slice of the range: at least two pairs (one stream) each.
    pairs = len(
        range(config.media_ports.low + config.media_ports.low % 2, config.media_ports.high, 2)
    )
    if config.media.workers > 1 and pairs < 2 * config.media.workers:
        raise ConfigError(
            file,
            "media",
            "workers",
            f"{config.media.workers} workers need at least {2 * config.media.workers} RTP/RTCP "
            f"port pairs; ports {config.media_ports} hold {pairs}",
        )
    _validate_store(config.store, file)
    if not config.gateway.digest_algorithms:
        raise ConfigError(file, "gateway", "digest_algorithms", "expected at least one algorithm")
    if len(set(config.plugins.enable)) != len(config.plugins.enable):
        raise ConfigError(file, "plugins", "enable", "lists a plugin more than once")
    for name in config.plugin_tables:
        if name not in config.plugins.enable:
            raise ConfigError(
                file,
                f"plugins.{name}",
                None,
                f"table for plugin {name!r}, which is not in [plugins] enable",
            )


def _validate_timers(sip: SipSection, file: str) -> None:
    """RFC 3261 §17.1.1.1 T1, T2 and T4 within the bounds a real network could want
    (:data:`MIN_T1` ... :data:`MAX_T4`), and T2 not below T1."""
    if not MIN_T1 <= sip.t1 <= MAX_T1:
        raise ConfigError(
            file,
            "sip",
            "t1",
            f"expected seconds from {MIN_T1:g} to {MAX_T1:g} (the round-trip estimate, RFC 3261 "
            f"§17.1.1.1; Timers B and F are 64*T1), got {sip.t1:g}",
        )
    if not sip.t1 <= sip.t2 <= MAX_T2:
        raise ConfigError(
            file,
            "sip",
            "t2",
            f"expected seconds from t1 ({sip.t1:g}) to {MAX_T2:g} (the cap of retransmit "
            f"intervals, which start at T1 and double, RFC 3261 §17.1.2.2), got {sip.t2:g}",
        )
    if sip.t4 > MAX_T4:
        raise ConfigError(
            file,
            "sip",
            "t4",
            f"expected seconds above 0, at most {MAX_T4:g} (how long a message may stay in "
            f"the network, RFC 3261 §17.1.2.2), got {sip.t4:g}",
        )


def _validate_store(store: StoreSection, file: str) -> None:
    if store.backend == "postgresql" and not store.dsn.strip():
        raise ConfigError(
            file, "store", "dsn", 'expected a libpq connection string with backend = "postgresql"'
        )
    if store.backend == "sqlite":
        for key in ("dsn", "password_file", "node"):
            if getattr(store, key):
                raise ConfigError(
                    file, "store", key, 'only used with backend = "postgresql" (SQLite is a file)'
                )
        if not store.call_id_index:
            raise ConfigError(
                file,
                "store",
                "call_id_index",
                'only used with backend = "postgresql" (SQLite compares Call-IDs byte by byte,'
                " through the index it always has on them)",
            )
        if store.max_cps_scope == "cluster":
            # Nodes on SQLite share nothing: each would pace the whole max_cps, which is what
            # "cluster" is written to prevent. A lone node leaves the key out.
            raise ConfigError(
                file,
                "store",
                "max_cps_scope",
                '"cluster" needs backend = "postgresql" (the nodes count each other in the '
                "shared database); a SQLite node paces each trunk's whole max_cps",
            )
    if store.connect_timeout < MIN_CONNECT_TIMEOUT:
        raise ConfigError(
            file,
            "store",
            "connect_timeout",
            f"expected whole seconds, at least {MIN_CONNECT_TIMEOUT} (libpq's least), "
            f"got {store.connect_timeout}",
        )
    if not MIN_STATEMENT_TIMEOUT <= store.statement_timeout <= MAX_STATEMENT_TIMEOUT:
        raise ConfigError(
            file,
            "store",
            "statement_timeout",
            f"expected a positive number of seconds, "
            f"at least {MIN_STATEMENT_TIMEOUT:g} (PostgreSQL's unit is the "
            f"millisecond; 0 ms is no timeout at all) and at most {MAX_STATEMENT_TIMEOUT:g}, "
            f"got {store.statement_timeout:g}",
        )
    if not 0 <= store.call_record_days <= MAX_CALL_RECORD_DAYS:  # NaN fails too
        raise ConfigError(
            file,
            "store",
            "call_record_days",
            f"expected days, at least 0 (0: kept for ever) and at most {MAX_CALL_RECORD_DAYS:g}, "
            f"got {store.call_record_days:g}",
        )


def _structure_trunks(value: Any, file: str) -> tuple[TrunkConfig, ...]:
    """Structure the ``[[trunks]]`` array of tables. Errors name the table ``trunks[INDEX]``,
    or ``trunks.NAME`` once the entry has a name."""
    if not isinstance(value, list):
        raise ConfigError(file, "trunks", None, "expected an array of tables: [[trunks]]")
    trunks: list[TrunkConfig] = []
    seen: set[str] = set()
    voicemail: str | None = None
    for index, table in enumerate(value):
        table_name = f"trunks[{index}]"
        if not isinstance(table, dict):
            raise ConfigError(file, table_name, None, f"expected a table, got {table!r}")
        name = table.get("name")
        if isinstance(name, str) and name.strip() and name.isprintable():
            # Not a name with control characters (a NUL): the error about it would name a
            # table "[trunks.a\x00b]" no editor finds; "[trunks[1]]" is found by counting.
            table_name = f"trunks.{name}"
        trunk = structure(TrunkConfig, table, file=file, table_name=table_name)
        _validate_trunk(trunk, file, table_name)
        if trunk.name in seen:
            raise ConfigError(
                file, table_name, "name", f"another trunk is already called {trunk.name!r}"
            )
        seen.add(trunk.name)
        if trunk.voicemail:
            if voicemail is not None:
                raise ConfigError(
                    file,
                    table_name,
                    "voicemail",
                    f"trunk {voicemail!r} is the voicemail service already (at most one trunk)",
                )
            voicemail = trunk.name
        trunks.append(trunk)
    return tuple(trunks)


def _structure_watch_groups(value: Any, file: str) -> tuple[DialogWatchGroup, ...]:
    """Structure the ``[[dialog_watch_groups]]`` array of tables. Errors name the table
    ``dialog_watch_groups[INDEX]``, or ``dialog_watch_groups.NAME`` once it has a name."""
    what = "dialog_watch_groups"
    if not isinstance(value, list):
        raise ConfigError(file, what, None, f"expected an array of tables: [[{what}]]")
    groups: list[DialogWatchGroup] = []
    seen: set[str] = set()
    for index, table in enumerate(value):
        table_name = f"{what}[{index}]"
        if not isinstance(table, dict):
            raise ConfigError(file, table_name, None, f"expected a table, got {table!r}")
        name = table.get("name")
        if isinstance(name, str) and name.strip() and name.isprintable():  # as a trunk's
            table_name = f"{what}.{name}"
        group = structure(DialogWatchGroup, table, file=file, table_name=table_name)
        if not group.name.strip() or group.name != group.name.strip():
            raise ConfigError(
                file,
                table_name,
                "name",
                f"expected a non-empty name without surrounding spaces, got {group.name!r}",
            )
        if group.name in seen:
            raise ConfigError(
                file, table_name, "name", f"another group is already called {group.name!r}"
            )
        seen.add(group.name)
        if not group.accounts:
            raise ConfigError(file, table_name, "accounts", "expected at least one account name")
        for account in group.accounts:
            if not account.strip() or account != account.strip():
                raise ConfigError(
                    file,
                    table_name,
                    "accounts",
                    f"expected account names without surrounding spaces, got {account!r}",
                )
        if len(set(group.accounts)) != len(group.accounts):
            twice = next(a for a in group.accounts if group.accounts.count(a) > 1)
            raise ConfigError(file, table_name, "accounts", f"{twice!r} is listed twice")
        groups.append(group)
    return tuple(groups)


def _validate_trunk(trunk: TrunkConfig, file: str, table: str) -> None:
    def fail(key: str, message: str) -> ConfigError:
        return ConfigError(file, table, key, message)

    if not trunk.name.strip() or trunk.name != trunk.name.strip():
        raise fail(
            "name", f"expected a non-empty name without surrounding spaces, got {trunk.name!r}"
        )
    try:
        spec = trunk.address_parts
    except ValueError as exc:
        raise fail("address", str(exc)) from None
    if not spec.by_naptr and not _TRANSPORT_NAME.fullmatch(spec.transport):
        raise fail(
            "address", f"expected a transport name before the address, got {spec.transport!r}"
        )
    if spec.port == 0:
        raise fail("address", f"a trunk needs a port 1-65535, got {trunk.address!r}")
    if spec.is_name and not spec.by_naptr and spec.transport not in DNS_TRANSPORTS:
        # RFC 3263 §4.1 knows SRV services for these only (_sip._udp, _sip._tcp, _sips._tcp).
        raise fail(
            "address",
            f"a trunk named by DNS goes over udp, tcp or tls, got {spec.transport!r}",
        )
    for prefix in trunk.prefixes:
        if prefix not in DEFAULT_ROUTE_PREFIXES and not _DIAL_PREFIX.fullmatch(prefix):
            raise fail(
                "prefixes",
                f'expected "+" and digits (or "" / "*" for the default route), got {prefix!r}',
            )
    if trunk.strip_prefix < 0:
        raise fail("strip_prefix", f"expected 0 or more, got {trunk.strip_prefix}")
    if not _DIAL_PREFIX.fullmatch(trunk.add_prefix):
        raise fail("add_prefix", f'expected "+" and digits, got {trunk.add_prefix!r}')
    for source in trunk.sources:
        try:
            # strict: "192.0.2.10/24" is refused rather than silently widened to a /24.
            ipaddress.ip_network(source, strict=True)
        except ValueError as exc:
            raise fail("allowed_sources", f"expected IP addresses or CIDRs: {exc}") from None
    if (trunk.username is None) != (trunk.password is None):
        raise fail(
            "username" if trunk.username is None else "password",
            "username and password go together (the credentials we answer the trunk's "
            "challenges with)",
        )
    for number, account in trunk.dids.items():
        if not number:
            raise fail("dids", "a DID number must not be empty")
        if not account.strip():
            raise fail("dids", f"entry {number!r}: expected an account name, got {account!r}")
    if not trunk.media_policy:
        raise fail("media_policy", "expected a policy name")
    if trunk.max_calls < 0:
        raise fail(
            "max_calls", f"expected 0 (no limit) or a number of calls, got {trunk.max_calls}"
        )
    if not 0 <= trunk.max_cps <= MAX_TRUNK_CPS:
        raise fail(
            "max_cps",
            f"expected 0 (no limit) to {MAX_TRUNK_CPS} calls per second, got {trunk.max_cps:g}",
        )
    if trunk.options_interval != 0 and not (
        MIN_OPTIONS_INTERVAL <= trunk.options_interval <= MAX_OPTIONS_INTERVAL
    ):
        raise fail(
            "options_interval",
            f"expected 0 (no probing) or {MIN_OPTIONS_INTERVAL:g} to "
            f"{MAX_OPTIONS_INTERVAL:g} seconds, got {trunk.options_interval:g}",
        )
    if trunk.response_timeout != 0 and not trunk.response_timeout >= MIN_RESPONSE_TIMEOUT:
        raise fail(
            "response_timeout",
            f"expected 0 (Timer B) or seconds from {MIN_RESPONSE_TIMEOUT:g} (a 100 Trying may "
            f"wait 200 ms, RFC 3261 §17.2.1), got "
            f"{trunk.response_timeout:g}",
        )
    if trunk.register and (trunk.username is None or trunk.password is None):
        raise fail("register", "a registration needs the trunk's username and password")
    if not MIN_REGISTER_EXPIRES <= trunk.register_expires <= MAX_REGISTER_EXPIRES:
        raise fail(
            "register_expires",
            f"expected {MIN_REGISTER_EXPIRES} to {MAX_REGISTER_EXPIRES} seconds, "
            f"got {trunk.register_expires}",
        )
    if trunk.register_domain is not None:
        try:
            registrar = parse_uri_untrusted(f"sip:{trunk.register_domain}")
        except RemoteSipError:
            registrar = None
        if not isinstance(registrar, SipUri) or registrar.user or registrar.params:
            raise fail(
                "register_domain",
                f"expected a host name or address with an optional :port, "
                f"got {trunk.register_domain!r}",
            )
    if trunk.contact_user is not None and not _CONTACT_USER.fullmatch(trunk.contact_user):
        raise fail("contact_user", "expected letters, digits and -_.!~*'()+ (a SIP user part)")
    if trunk.caller_id is not None and not CALLER_ID.fullmatch(trunk.caller_id):
        raise fail("caller_id", "expected a number: an optional + and 1 to 32 digits, * or #")


def directory_problem(path: Path, *, check_access: bool = True) -> str | None:
    """Why ``path`` cannot be a state directory, or None: it is a directory, or the nearest
    part of it that exists is one the gateway may create the rest in (``voipgw run`` does,
    mode 0700, parents too). ``check_access=False`` leaves out whether this process's user
    may write there (:func:`directory_access_problem` says it): what another user, the
    service's, may do is not this process's to know."""
    # os.path: False for a name too long (Path.exists raised OSError, a bare error).
    if os.path.isdir(path):
        return None
    if os.path.exists(path):
        return f"{path} is not a directory"
    if any(len(os.fsencode(part)) > 255 for part in path.parts):
        return f"{path} cannot be created: a name in it is longer than 255 bytes"
    parent = path.absolute()
    while not os.path.exists(parent) and parent != parent.parent:
        if os.path.islink(parent):
            # A link to nothing (a volume not mounted yet): mkdir says "File exists" there.
            return (
                f"{path} cannot be created: {parent} is a symbolic link to "
                f"{os.readlink(parent)}, which does not exist"
            )
        parent = parent.parent
    if not os.path.isdir(parent):
        return f"{path} cannot be created: {parent} is not a directory"
    if on_read_only_file_system(parent):
        # No user may create it, the service's nor root: an error of check-config too (a
        # container's read-only root file system), not the checking user's permission.
        return (
            f"{path} cannot be created: {parent} is on a read-only file system "
            f"({read_only_remedy(parent)})"
        )
    if check_access:
        return directory_access_problem(path)
    return None


def on_read_only_file_system(directory: Path) -> bool:
    """Whether ``directory`` is on a file system mounted read-only (statvfs ST_RDONLY)."""
    try:
        return bool(os.statvfs(directory).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # AttributeError: no statvfs (Windows)
        return False


def mount_point(path: Path) -> Path | None:
    """The mount point of the file system ``path`` is on, as this process sees its mounts
    (/proc/self/mountinfo: the longest mount point ``path``'s real path lies under, a file
    bind-mounted on its own included), or None where they cannot be read (no /proc)."""
    real = Path(os.path.realpath(path))
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as lines:
            # Field 5 is the mount point, with space, tab, newline and backslash escaped in
            # octal (proc(5)): "/srv/voipgw\040state".
            points = [_unescape_mount(line.split()[4]) for line in lines if line.count(" ") >= 4]
    except OSError:
        return None
    under = [point for point in points if real == point or real.is_relative_to(point)]
    return max(under, key=lambda point: len(point.parts), default=None)


def _unescape_mount(text: str) -> Path:
    return Path(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text))


def read_only_remedy(path: Path) -> str:
    """What lets the gateway write ``path`` on a read-only file system: no chown or chmod
    does (EROFS: root may not either), only mounting it read-write: ``mount /srv read-write``
    naming its mount point (a container's volume mounted ``:ro``, a bind mount of one file)."""
    point = mount_point(path)
    if point is None:
        return "mount its file system read-write"
    return f"mount {point} read-write"


def directory_access_problem(path: Path) -> str | None:
    """Why this process's user may not create the state directory ``path``, or None (it is
    a directory already, or the nearest part of it that exists is writable by this user).
    A permission, so the user's: ``voipgw check-config`` run by an operator as themselves
    sees their own, which is not the service's (it warns); ``voipgw run`` is the service."""
    if os.path.isdir(path):
        return None
    parent = path.absolute()
    while not os.path.exists(parent) and parent != parent.parent:
        parent = parent.parent
    if os.path.isdir(parent) and not os.access(parent, os.W_OK | os.X_OK):
        return f"{path} cannot be created: {parent} is not writable by this user ({user_name()})"
    return None


def written_directory_problem(path: Path, *, shown: str | None = None) -> str | None:
    """Why the gateway may not write in ``path``, a directory that exists, or None: a read-only
    file system (no user may, root included: the same for every user) or this process's user's
    permission (``... is not writable by this user (NAME)``: the user's own, which may not be
    the service's). Not a directory, or one that does not exist: None (:func:`directory_problem`
    says those). ``shown``: how the message names ``path`` (:func:`shown_path`)."""
    if not os.path.isdir(path):
        return None
    name = shown or str(path)
    if on_read_only_file_system(path):
        # The mount to make read-write, as a file's message names it: no chown or chmod helps.
        return f"{name} is on a read-only file system ({read_only_remedy(path)})"
    if not os.access(path, os.W_OK | os.X_OK):
        return f"{name} is not writable by this user ({user_name()})"
    return None


def shown_path(path: Path) -> str:
    """``path`` as a message names it: with the path the kernel takes when symbolic links lead
    elsewhere (``/var/lib/voipgw/recordings (a symbolic link to /mnt/recordings)``), since what
    is checked (and what a chown or chmod changes) is there, not at the name."""
    real = os.path.realpath(path)
    if real == os.path.abspath(path):
        return str(path)
    if os.path.islink(path):
        return f"{path} (a symbolic link to {real})"
    return f"{path} ({real}, through a symbolic link)"


def owner_name(path: Path) -> str | None:
    """The user owning ``path`` (``voipgw``, or ``uid 998``), or None when it cannot be told.
    An existing state directory's owner is, most likely, the user ``voipgw run`` created it
    as: the one to check the configuration as."""
    try:
        uid = os.stat(path).st_uid
    except OSError:
        return None
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        return f"uid {uid}"


def owner_may_not_write(path: Path) -> str | None:
    """For root (which may write anywhere on a writable file system, so its own answer says
    nothing of the service's user): the owner of the directory ``path`` when its mode keeps that
    owner from writing in it (``chmod 500``), else None. Other users than the owner: not
    root's to know (groups, ACLs)."""
    if os.geteuid() != 0 or not os.path.isdir(path):
        return None
    try:
        info = os.stat(path)
    except OSError:
        return None
    if info.st_uid == 0 or (info.st_mode & 0o300) == 0o300:
        return None
    return owner_name(path)


def user_name() -> str:
    """This process's user, as a permission error names it (``alice``, or ``uid 1000``)."""
    uid = os.geteuid()
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        return f"uid {uid}"


def listener_warnings(config: GatewayConfig, transports: Sequence[str] = ()) -> list[str]:
    """A gateway with no SIP listener runs, but no phone or trunk can reach it: what a
    newcomer gets by enabling one plugin (``enable = ["metrics"]``), since ``[plugins] enable``
    replaces the default list instead of adding to it. ``transports``: the names the enabled
    plugins registered transports under; a third-party one has no default listener
    (DEFAULT_LISTEN), only what ``[sip] listen`` names."""
    if config.listen:
        return []
    if config.sip.listen is not None:
        return ["[sip] listen is empty: no phone or trunk can reach the gateway"]
    built_in = {text.partition(":")[0] for text in DEFAULT_LISTEN}
    others = [name for name in transports if name not in built_in]
    if others:
        return [
            f"no SIP listener: transport {', '.join(others)} (a plugin's) has no default "
            "listener and [sip] listen names none, so no phone or trunk can reach the gateway: "
            f'name one, e.g. [sip] listen = ["{others[0]}:127.0.0.1:PORT"]'
        ]
    names = dict.fromkeys((*DEFAULT_PLUGINS, *config.plugins.enable))
    suggested = ", ".join(f'"{name}"' for name in names)
    return [
        "no SIP listener: [plugins] enable names no SIP transport (udp, tcp, tls, ws, wss), so "
        "no phone or trunk can reach the gateway; enable replaces the default list, so keep "
        f"the transports beside what you add: enable = [{suggested}]"
    ]


def did_warnings(config: GatewayConfig) -> list[str]:
    """One number, by the numbering plans, that different trunks deliver to different
    accounts: allowed (each trunk's calls find their own), but which account "the number" is
    becomes ambiguous wherever numbers are compared across trunks (lawful interception matches
    a target's number against every account it reaches)."""
    owners: dict[str, dict[str, str]] = {}  # E.164 -> account -> "trunk NAME"
    for trunk in config.trunks:
        plan = config.numbering_of(trunk)
        for number, account in trunk.dids.items():
            owners.setdefault(read_number(plan, number), {}).setdefault(
                account, f"trunk {trunk.name}"
            )
    return [
        f"DID {number} reaches "
        + " and ".join(f"{account} through {where}" for account, where in accounts.items())
        for number, accounts in owners.items()
        if len(accounts) > 1
    ]


# A DID as a trunk delivers it: an optional "+" and digits, "*" or "#" once RFC 3966 visual
# separators and a phone-context are read (calls/numbering.py read_number).
_DID_NUMBER = re.compile(r"\+?[0-9*#]+")


def _is_host_port(text: str) -> bool:
    # RFC 3261 §25.1 hostport: a host name, an IPv4 address or a bracketed IPv6 reference,
    # with an optional port; a bare IPv6 address too (as an operator writes it).
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        pass
    try:
        uri = parse_uri_untrusted(f"sip:{text}")
    except RemoteSipError:
        return False
    return isinstance(uri, SipUri) and not (uri.user or uri.params or uri.headers)


def value_warnings(config: GatewayConfig) -> list[ConfigError]:
    """One error per value of the core tables that a gateway of an earlier version ran with,
    but that does nothing or does harm: a ``[gateway] domains`` entry that is no host name or
    address (no request names it: RFC 3261 §25.1 hostname), a ``[[trunks]] dids`` key that is
    no number (it presents the account as a caller ID no carrier takes), a ``[dns] timeout``
    or ``[gateway] auth_failure_window`` in the band that works on a LAN only, or weakens the
    password-guessing limit to a brake on floods (docs/configuration.md, "Floors"). As
    :func:`unknown_trunk_names`: errors to ``voipgw check-config`` (exit 2), warnings to
    ``voipgw run``, which keeps an upgraded gateway carrying calls."""
    file = config.source
    errors = []
    if config.dns.timeout < WARN_DNS_TIMEOUT:
        errors.append(
            ConfigError(
                file,
                "dns",
                "timeout",
                f"{config.dns.timeout:g} s works only with a resolver on the host or the LAN: "
                f"under {WARN_DNS_TIMEOUT:g} s a resolver across a WAN, or one query lost and "
                "asked again, leaves the trunk unresolved and its calls with nowhere to go",
            )
        )
    window = config.gateway.auth_failure_window
    max_failures = config.gateway.auth_max_failures
    banned = config.gateway.auth_block_time > 0
    # What one guesser is counted as (auth_ipv6_prefix_length): below 128, a whole IPv6 prefix.
    prefix_length = config.gateway.auth_ipv6_prefix_length
    guesser = (
        "one address"
        if prefix_length >= MAX_AUTH_IPV6_PREFIX_LENGTH
        else f"one IPv4 address or IPv6 /{prefix_length} prefix"
    )
    if banned and max_failures == 1:
        pass  # each failure bans its source at once: the window decides nothing
    elif window < MIN_AUTH_FAILURE_WINDOW:
        errors.append(
            ConfigError(
                file,
                "gateway",
                "auth_failure_window",
                f"{window:g} s is shorter than the gateway takes to read one request: no two "
                "failures ever fall within it, so the password-guessing limit never blocks; "
                f"{WARN_AUTH_FAILURE_WINDOW:g} s or more makes it one against guessing",
            )
        )
    elif window < WARN_AUTH_FAILURE_WINDOW and banned:
        # A ban begins only when the window blocks: auth_max_failures failures within it. A
        # guesser spacing its guesses window / (auth_max_failures - 1) apart or more never has
        # them, so it is never banned and guesses at that rate for ever (8 a second at 0.5 s
        # and 5 failures): the ban stops floods, not a guesser that paces itself.
        guesses = (max_failures - 1) / window
        errors.append(
            ConfigError(
                file,
                "gateway",
                "auth_failure_window",
                f"{window:g} s lets a password guesser {guesses:.3g} guesses a second from "
                f"{guesser} ({guesses * 86400:.3g} a day) that auth_block_time never bans: a ban "
                f"begins only at {max_failures} failures within the window; "
                f"{WARN_AUTH_FAILURE_WINDOW:g} s or more makes the ban one against guessing",
            )
        )
    elif window < WARN_AUTH_FAILURE_WINDOW:
        guesses = max_failures / window
        errors.append(
            ConfigError(
                file,
                "gateway",
                "auth_failure_window",
                f"{window:g} s lets a password guesser {guesses:.3g} guesses a second from "
                f"{guesser} ({guesses * 86400:.3g} a day): the limit brakes a flood only; "
                f"{WARN_AUTH_FAILURE_WINDOW:g} s or more makes it one against guessing",
            )
        )
    for domain in config.gateway.domains:
        if not _is_host_port(domain):
            errors.append(
                ConfigError(
                    file,
                    "gateway",
                    "domains",
                    f"expected host names or IP addresses (RFC 3261 §25.1 hostport: letters, "
                    f"digits, inner hyphens and dots; an optional :PORT), got {domain!r}: no "
                    "request names it",
                )
            )
    for trunk in config.trunks:
        for number in trunk.dids:
            digits, _ = split_phone_context(number)
            if not _DID_NUMBER.fullmatch(digits):
                errors.append(
                    ConfigError(
                        file,
                        f"trunks.{trunk.name}",
                        "dids",
                        f'expected numbers ("+" and digits, "*" or "#"; separators " -.()" are '
                        f"read), got {number!r}: calls out through the trunk would present it "
                        "as their caller ID",
                    )
                )
    return errors


# A plugin configuration key whose values name ``[[trunks]]`` tables (stir_shaken
# ``sign_trunks``, the recorder's ``trunks``): its attrs field carries this metadata, and
# :func:`unknown_trunk_names` looks each name up. A misspelt name is otherwise silent: the key
# does nothing for that trunk (its calls go unsigned, unrecorded) and nobody is told. Keys that
# name accounts are not checked: accounts live in the store and change while the gateway runs.
NAMES_TRUNKS: Mapping[str, str] = types.MappingProxyType({"voipgw.names": "trunks"})
KNOWN_LISTED = 10  # an error lists the trunks there are up to this many


def unknown_trunk_names(
    config: GatewayConfig, plugin_configs: Mapping[str, Any]
) -> list[ConfigError]:
    """One error per name that a plugin key marked :data:`NAMES_TRUNKS` lists, or a plugin
    config's ``trunk_names()`` says a key's file lists (``{key: names}``: the MIKEY
    ``psk_file``'s ``[trunks]``), but no ``[[trunks]]`` table has (a disabled trunk is known:
    it is configured). Errors to
    ``voipgw check-config`` (exit 2), warnings to ``voipgw run`` (an upgraded gateway whose file
    carried such a name keeps carrying calls): the callers decide."""
    known = [trunk.name for trunk in config.trunks]
    if not known:
        listed = "none (no [[trunks]] table)"
    elif len(known) <= KNOWN_LISTED:
        listed = ", ".join(sorted(known))
    else:
        listed = f"{len(known)} trunks"
    errors = []
    for plugin, value in plugin_configs.items():
        if value is None or not attrs.has(type(value)):
            continue
        named: list[tuple[str, str, str]] = []  # key, name, what the name does not reach
        for field in attrs.fields(type(value)):
            if field.metadata.get("voipgw.names") == "trunks":
                names = getattr(value, field.name)
                for name in [names] if isinstance(names, str) else names:
                    named.append((field.name, name, "this key does nothing for it"))
        # Names in a file a key names (the MIKEY psk_file's [trunks] table): the plugin's
        # config lists them by key (``trunk_names()``).
        trunk_names = getattr(value, "trunk_names", None)
        if callable(trunk_names):
            for key, names in trunk_names().items():
                for name in names:
                    named.append((key, name, "what the file holds for it is never used"))
        for key, name, unused in named:
            if name not in known:
                where = "" if unused.startswith("this key") else " (in the file it names)"
                errors.append(
                    ConfigError(
                        config.source,
                        f"plugins.{plugin}",
                        key,
                        f"unknown trunk {name!r}{where}: no [[trunks]] table has that name, so "
                        f"{unused}; known: {listed}",
                    )
                )
    return errors


def _validate_trunk_plan(numbering: NumberingPlan, trunk: TrunkConfig, file: str) -> None:
    """The trunk's own numbering keys, on top of ``[numbering]``, must make a plan: the
    error names the trunk's key (``NumberingPlan`` starts its messages with the key)."""
    try:
        plan = trunk_numbering(numbering, trunk)
    except ValueError as exc:
        key, _, message = str(exc).partition(": ")
        if key not in _PLAN_OVERRIDES:
            key, message = "country_code", str(exc)
        raise ConfigError(file, f"trunks.{trunk.name}", key, message) from None
    # Two DIDs that the plan reads as one number must not name two accounts: which one a call
    # to it reaches would depend on the order of the table.
    owners: dict[str, tuple[str, str]] = {}
    for number, account in trunk.dids.items():
        e164 = read_number(plan, number)
        first = owners.setdefault(e164, (number, account))
        if first[1] != account:
            raise ConfigError(
                file,
                f"trunks.{trunk.name}",
                "dids",
                f"{first[0]!r} ({first[1]}) and {number!r} ({account}) are the same number, "
                f"{e164}, by the numbering plan",
            )


def from_mapping(
    data: Mapping[str, Any],
    *,
    file: str = "<embedded defaults>",
    misplaced: dict[str, ConfigError] | None = None,
) -> GatewayConfig:
    """Structure an already-parsed TOML document. ``misplaced`` (``voipgw plugins``, which
    lists every plugin whatever their settings): the error of a value written under
    ``[plugins]`` where an enabled plugin's table goes (``[plugins] acme = 3``) is put there,
    by the plugin's name, and the value left out, instead of raised."""
    sections: dict[str, type[Any]] = {
        "gateway": GatewaySection,
        "sip": SipSection,
        "media": MediaSection,
        "numbering": NumberingPlan,
        "store": StoreSection,
        "feature_codes": FeatureCodes,
        "dns": DnsSection,
        "presence": PresenceSection,
        "registrar": RegistrarSection,
    }
    unknown = sorted(set(data) - set(sections) - {"plugins", "trunks", "dialog_watch_groups"})
    if unknown:
        raise ConfigError(
            file,
            unknown[0],
            None,
            "unknown table; known tables: gateway, sip, media, numbering, store, dns, "
            "plugins, trunks, dialog_watch_groups, feature_codes, presence, registrar",
        )
    values: dict[str, Any] = {}
    for name, cls in sections.items():
        table = data.get(name, {})
        if not isinstance(table, dict):
            raise ConfigError(file, name, None, "expected a table")
        try:
            values[name] = structure(cls, table, file=file, table_name=name)
        except ConfigError as exc:
            # NumberingPlan's, FeatureCodes', DnsSection's and RegistrarSection's own checks
            # start their message with the key: name it as such.
            key, _, message = exc.message.partition(": ")
            if exc.key is not None or key not in table:
                raise
            raise ConfigError(file, name, key, message) from None
    plugins_table = data.get("plugins", {})
    if not isinstance(plugins_table, dict):
        # `plugins = [...]` for `[plugins] enable = [...]`: dict() of it raised a bare
        # TypeError or ValueError, a traceback instead of this line.
        raise ConfigError(file, "plugins", None, "expected a table: [plugins] enable = [...]")
    plugin_tables = {k: v for k, v in plugins_table.items() if isinstance(v, dict)}
    plain = {k: v for k, v in plugins_table.items() if not isinstance(v, dict)}
    # Enabled: those `enable` names, or the defaults when it is left out ([plugins] tls = 3
    # alone is tls's settings misplaced too). `enable` itself is never a plugin's settings,
    # even for a plugin of that name (a config that always loaded it).
    enable = plain.get("enable", list(DEFAULT_PLUGINS))
    for name in [k for k in plain if k != "enable" and isinstance(enable, list) and k in enable]:
        # An enabled plugin's name with a value, not a table: its settings, misplaced. The
        # line "unknown key" always said, and where they go.
        error = ConfigError(
            file,
            "plugins",
            name,
            f"unknown key; known keys: enable (the settings of plugin {name!r} go in its own "
            f"table, [plugins.{name}])",
        )
        if misplaced is None:
            raise error
        misplaced[name] = error
        del plain[name]
    values["plugins"] = structure(PluginsSection, plain, file=file, table_name="plugins")
    values["trunks"] = _structure_trunks(data.get("trunks", []), file)
    for trunk in values["trunks"]:
        _validate_trunk_plan(values["numbering"], trunk, file)
    values["dialog_watch_groups"] = _structure_watch_groups(
        data.get("dialog_watch_groups", []), file
    )
    config = GatewayConfig(**values, plugin_tables=plugin_tables, source=file)
    _validate(config, file)
    return config


def from_toml(
    path: str | Path, *, misplaced: dict[str, ConfigError] | None = None
) -> GatewayConfig:
    """Read and validate a configuration file. Errors name the file, the table and the key.
    ``misplaced``: as :func:`from_mapping`'s."""
    file = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(file, "", None, f"cannot read: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        # Where, as tomllib says where a syntax error is: an editor finds the line.
        line = raw.count(b"\n", 0, exc.start) + 1
        # Characters, as tomllib counts them: what precedes the bad byte on its line decoded.
        column = len(raw[raw.rfind(b"\n", 0, exc.start) + 1 : exc.start].decode()) + 1
        raise ConfigError(
            file, "", None, f"not UTF-8 text (at line {line}, column {column})"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        if message.endswith(" (at end of document)"):
            # tomllib names no line where the text ran out inside something left open (an
            # array, an inline table): the last line that has anything is where to look.
            last = raw.rstrip().count(b"\n") + 1
            message = message.removesuffix(")") + f", after line {last})"
        raise ConfigError(file, "", None, f"not valid TOML: {message}") from None
    return from_mapping(data, file=file, misplaced=misplaced)


def embedded_defaults() -> GatewayConfig:
    """What ``voipgw run`` uses with no ``--config``."""
    return from_mapping({})


def with_overrides(
    config: GatewayConfig, data: Mapping[str, Mapping[str, Any]], *, origin: str
) -> GatewayConfig:
    """Replace keys of the core tables (``--listen``, ``--state-dir`` ...).

    Errors name ``origin`` instead of a file."""
    if not data:
        return config
    sections = {
        "gateway": GatewaySection,
        "sip": SipSection,
        "media": MediaSection,
        "store": StoreSection,
    }
    changes: dict[str, Any] = {}
    for name, overrides in data.items():
        current = getattr(config, name)
        merged = {
            f.name: list(v) if isinstance(v := getattr(current, f.name), tuple) else v
            for f in attrs.fields(type(current))
        }
        merged.update({k: list(v) if isinstance(v, tuple) else v for k, v in overrides.items()})
        changes[name] = structure(sections[name], merged, file=origin, table_name=name)
    updated = attrs.evolve(config, **changes)
    _validate(updated, origin)
    return updated
