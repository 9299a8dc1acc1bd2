"""The Gateway: the top nursery that owns every socket and task.

Start-up order: state directory, transports' listeners (each reports its bound address), then the
SIP endpoint that consumes what they deliver. Shutdown is the reverse, by cancellation of the one
nursery. Nothing from the network may end this nursery: transports and the endpoint contain their
own failures (ARCHITECTURE.md, STYLE.md habit 6).
"""

from __future__ import annotations

import contextlib
import errno
import inspect
import logging
import os
import random
import signal
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import trio

from gateway.core.auth.failures import FailurePolicy
from gateway.core.auth.proxied_source import AuthProxies
from gateway.core.calls.call import Call
from gateway.core.calls.dialog_events import DialogEvents
from gateway.core.calls.manager import CallManager
from gateway.core.calls.messages import Messages
from gateway.core.calls.presence import Presence
from gateway.core.calls.records import (
    CallRecordBook,
    RetentionCounts,
    expire_call_records,
    expiry_failures,
)
from gateway.core.calls.routing import GatewayDirectory, TrunkMatcher, default_route, route_call
from gateway.core.calls.subscriptions import Subscriptions
from gateway.core.calls.trunk_dns import (
    TRANSPORT_ORDER,
    DnsPythonResolver,
    Resolution,
    Resolver,
    TrunkDnsStatus,
    TrunkHop,
    TrunkTargets,
    named_uri_address,
)
from gateway.core.calls.trunk_health import TrunkHealth, TrunkProber
from gateway.core.calls.trunk_registration import TrunkRegistration, registering
from gateway.core.config import (
    GATEWAY_STATE_DIR,
    WARN_ONLY,
    ConfigError,
    GatewayConfig,
    ListenSpec,
    TrunkAddress,
    did_warnings,
    directory_access_problem,
    directory_problem,
    may_open,
    may_read_as,
    on_read_only_file_system,
    owner_may_not_write,
    owner_name,
    read_only_remedy,
    shown_path,
    unknown_trunk_names,
    user_name,
    value_warnings,
    written_directory_problem,
)
from gateway.core.control import socket_path
from gateway.core.control_server import serve_control
from gateway.core.devices import DeviceIdentifier, check_profiles
from gateway.core.endpoint import SipEndpoint
from gateway.core.ids import IdSource, RandomIds
from gateway.core.interfaces import (
    Caller,
    GatewayStatus,
    Listener,
    RouteDecision,
    Transport,
    TransportLimits,
)
from gateway.core.logs import log_exception, startup_error_text, transport_error_text
from gateway.core.media import relay as relay_module
from gateway.core.media import srtp as srtp_module
from gateway.core.media.policy import all_policies
from gateway.core.media.ports import PortAllocator
from gateway.core.media.quality import CallQuality
from gateway.core.media.relay import MediaRelay
from gateway.core.media.relay_api import Relay
from gateway.core.media.remote_relay import WorkerPool
from gateway.core.media.session import MediaSession
from gateway.core.media.tones import prepare_tone_frames, ringback_summary
from gateway.core.nat_keepalive import NatKeepalive
from gateway.core.plugins import PluginError, Plugins
from gateway.core.registration import RegistrationService, local_domains
from gateway.core.reload import CertificateReloads, ReloadReport
from gateway.core.sip.message import Request
from gateway.core.sip.uri import redact_password
from gateway.core.status import CallStatistics, StatusView
from gateway.core.store.backends import (
    SQLITE_GATEWAY_BUSY_TIMEOUT,
    check_store,
    node_name,
    open_store,
)
from gateway.core.store.errors import StoreBusy, StoreError
from gateway.core.store.interface import (
    EXPIRE_CHUNK,
    Binding,
    BindingFlow,
    SharedCallLimits,
    Store,
)
from gateway.core.store.sqlite import DB_FILENAME, DEFAULT_BUSY_TIMEOUT
from gateway.core.systemd_notify import SystemdNotifier
from gateway.core.transport.flows import Flow, FlowTable, format_address
from gateway.core.transport.inbound import InboundQueue, kernel_receive_drops

log = logging.getLogger(__name__)

NAME_CHECK_BEATS = 2
"""Heartbeat intervals a starting node watches another instance's recent heartbeat under its
``[store] node`` name for a move (a running process) before taking it for its own previous run
(:meth:`Gateway._check_node_name`)."""

STOP_TIMEOUT = 2.0  # what before_stop may take: a carrier's answer to our REGISTER removal

# Messages waiting for the SIP endpoint. Past this new datagrams are dropped (and counted); UDP
# peers retransmit, TCP peers see no reply and retry. The endpoint's overload guard refuses new
# calls long before a steady overload fills it (gateway/core/sip/overload.py).
INBOUND_QUEUE = 1024

HOUSEKEEPING_INTERVAL = 30.0
# The store is used from the event loop, which also relays media: how it is opened for that is
# in gateway/core/store/backends.py.
STORE_BUSY_TIMEOUT = SQLITE_GATEWAY_BUSY_TIMEOUT
# A UDP flow idle this long is forgotten; NATed phones send a REGISTER or keep-alive well within.
UDP_FLOW_IDLE = 300.0


LAST_WRITES_WAIT = DEFAULT_BUSY_TIMEOUT
"""Seconds the gateway's stop gives its last writes to the store (the call records of the calls
it ended, the removal of its call-limit holds): as long as the CLI waits for a busy store."""

LAST_WRITES_GRACE = 1.0
"""Seconds the stop waits for the last writes once the store is closed (a statement the close
cut short fails at once)."""


def close_store(
    store: Store, records: CallRecordBook | None, shared: SharedCallLimits | None
) -> None:
    """The gateway's last writes, then the store's close, bounded even when the store's server
    stops answering: a stop that overruns systemd's stop timeout is killed, and the records
    not written yet with it.

    The writes run in a thread of their own (the store serves one caller at a time; nothing
    else uses it any more), given :data:`LAST_WRITES_WAIT`: the records ``records`` still has
    (a busy store's refusals retried meanwhile), then ``shared``'s holds and heartbeat. Then
    the store is closed, which cuts short a statement still waiting for a server that does not
    answer (PostgresStore.close: at most its CLOSE_WAIT), and the thread is waited for a
    moment more. The changes not saved are counted in one WARNING, as records.py counts those
    a store failure lost; the holds not removed go at the next start or age out."""
    outcome: list[str] = []

    def last_writes() -> None:
        deadline = time.monotonic() + LAST_WRITES_WAIT
        if records is not None:
            records.flush()  # never raises
            while records.pending and time.monotonic() < deadline:
                time.sleep(STORE_BUSY_TIMEOUT)
                records.flush()
        outcome.append("records")
        if shared is not None:
            try:
                shared.stop()  # no calls left: this node's holds and heartbeat go
            except StoreError as exc:
                # Its next start drops the holds; until then its heartbeat ages out.
                log.warning("call limits: this node's holds not removed: %s", exc)
            except Exception:  # a bug: logged as the gateway logs one, the stop goes on
                log_exception(log, "call limits: removing this node's holds failed")

    writer = threading.Thread(target=last_writes, name="store last writes", daemon=True)
    writer.start()
    writer.join(LAST_WRITES_WAIT)
    store.close()
    writer.join(LAST_WRITES_GRACE)
    if records is None:
        return
    if not outcome:
        # Still in a store call the close did not end (not known to happen): what it holds is
        # not known to be saved either.
        log.warning(
            "%d call record change(s) not kept, and the save in progress may not have been: the"
            " store did not answer within %g s of the stop",
            records.pending,
            LAST_WRITES_WAIT,
        )
    elif records.pending:
        log.warning(
            "%d call record change(s) not kept: the store did not take them within %g s of the"
            " stop (see its messages above)",
            records.pending,
            LAST_WRITES_WAIT,
        )


def relay_build() -> str:
    """Whether the relay's per-packet modules run compiled (setup.py, VOIPGW_USE_MYPYC=1)."""
    compiled = [m.__name__ for m in (relay_module, srtp_module) if m.COMPILED]
    if len(compiled) == 2:
        return "compiled with mypyc"
    if compiled:
        return f"only {compiled[0]} compiled with mypyc: reinstall"
    return "pure Python (an install with VOIPGW_USE_MYPYC=1 compiles it, docs/benchmarks.md)"


@attrs.define
class TransportStatistics:
    delivered: int = 0
    dropped_queue_full: int = 0
    flows_closed: int = 0


class Gateway:
    """One gateway instance: config, its own plugins, flows, listeners and the SIP endpoint."""

    def __init__(
        self,
        config: GatewayConfig,
        plugins: Plugins,
        *,
        ids: IdSource | None = None,
        dns_resolver: Resolver | None = None,
        dns_rng: random.Random | None = None,
    ) -> None:
        """``dns_resolver`` and ``dns_rng`` resolve the trunks named by DNS and draw their SRV
        weights (tests inject fakes and a seeded generator); None: dnspython with
        ``[dns] servers``, and a generator seeded by the system."""
        self.config = config
        self.plugins = plugins
        # Warnings of media taps about this node among others (check): tap name -> lines.
        self.node_warnings: dict[str, list[str]] = {}
        # Plugin keys naming trunks that no [[trunks]] table has (check): errors to
        # check-config, warnings at start-up (config.unknown_trunk_names).
        self.name_errors: list[ConfigError] = []
        # Values an earlier version ran with that do nothing or harm (config.value_warnings):
        # the same, errors to check-config, warnings at run; and a plugin's own, by plugin
        # (its config's config_warnings()), warned of on the plugin's logger.
        self.value_errors: list[ConfigError] = []
        self.plugin_value_errors: dict[str, list[ConfigError]] = {}
        # A plugin's choices that work but cost something an operator should know (its
        # config's config_notes()): warnings of check-config and at run, never errors.
        self.plugin_value_notes: dict[str, list[ConfigError]] = {}
        # State directories this process's user may not create, found by check(as_service=
        # False): warnings of check-config, which may run as another user than the service.
        self.access_warnings: list[ConfigError] = []
        self.ids = ids or RandomIds()
        self.flows = FlowTable()
        self.limits = TransportLimits(
            max_message_size=config.sip.max_message_size, max_headers=config.sip.max_headers
        )
        self.listeners: list[Listener] = []
        self.statistics = TransportStatistics()
        # Each message with the time it arrived (queued, or earlier in a socket buffer): the
        # endpoint judges overload by how long messages wait.
        self._inbound = InboundQueue(INBOUND_QUEUE)
        self.registration: RegistrationService | None = None
        self.store: Store | None = None
        self._call_record_expiry_failures = expiry_failures()
        self.call_record_retention = RetentionCounts()  # for monitoring (status.py)
        # Whether this run counts call limits for the cluster (its node name checked, its
        # heartbeat written): only then does its stop drop the name's holds and heartbeat.
        self._counting_shared = False
        self.relay: MediaRelay | None = None  # [media] workers = 1
        self.media_workers: WorkerPool | None = None  # [media] workers >= 2
        self.directory: GatewayDirectory | None = None
        self.nat_keepalive: NatKeepalive | None = None  # [sip] nat_keepalive_interval
        self.trunk_registrations: dict[str, TrunkRegistration] = {}  # [[trunks]] register
        self.calls: CallManager | None = None
        self.draining = False
        """Stopping gracefully (drain): new calls and other requests outside dialogs are
        answered 503."""
        self.subscriptions: Subscriptions | None = None  # message-summary, to the voicemail trunk
        self.dialog_events: DialogEvents | None = None  # dialog (BLF), our accounts' calls
        self.presence: Presence | None = None  # PUBLISH of presence, with [presence] allow
        self.messages: Messages | None = None  # out-of-dialog MESSAGE, unsolicited NOTIFY
        # Only a gateway with a monitoring service counts calls for one (gateway/core/status.py).
        self.call_statistics = CallStatistics() if len(plugins.services) else None
        self.status: GatewayStatus | None = (
            StatusView(self, self.call_statistics) if self.call_statistics is not None else None
        )
        self._trunks = TrunkMatcher(config.trunks)
        # Trunks named by DNS (trunk_dns.py): kept resolved from start-up on; None without any.
        self.trunk_targets: TrunkTargets | None = None
        self.session_targets: TrunkTargets | None = None
        """The SIP URIs named by DNS that media taps open sessions to (a SIPREC recorder)."""
        self._dns_resolver = dns_resolver
        self._dns_rng = dns_rng
        # (IP, port) of a target of a trunk named by DNS -> the trunk's domain: the name its
        # TLS certificate must carry and our SNI (RFC 5922 §4; TransportHost.peer_name).
        self._peer_names: dict[tuple[str, int], str] = {}
        self._trunk_hops: dict[str, tuple[TrunkHop, ...]] = {}
        # The same for the session targets named by DNS (a recorder's URI -> its targets).
        self._session_hops: dict[str, tuple[TrunkHop, ...]] = {}
        self.trunk_health = TrunkHealth(
            t.name for t in config.trunks if t.enabled and t.options_interval > 0
        )
        try:
            self.media_policies = all_policies(plugins.media_policies.items())
        except ValueError as exc:
            raise PluginError(str(exc)) from None
        profiles = plugins.device_profiles
        check_profiles(
            ((name, profile, profiles.owner(name)) for name, profile in profiles.items()),
            self.media_policies,
            plugins.key_exchanges.names(),
        )
        self.devices = DeviceIdentifier(
            profiles.items(),
            plugins.implemented("gateway_identify_device"),
            clock=time.monotonic,
            # A profile the hook makes on the spot is checked as registered ones were above.
            policies=self.media_policies,
            key_exchanges=plugins.key_exchanges.names(),
        )
        self.endpoint = SipEndpoint(self)
        # The plugins' objects that hold certificates (tls, wss, metrics), for SIGHUP.
        self.certificate_reloads = CertificateReloads(plugins)

    # -- validation (no sockets) -----------------------------------------------------------

    def transport_for(self, spec: ListenSpec) -> Transport:
        transport = self.plugins.transports.get(spec.transport)
        if transport is None:
            available = ", ".join(self.plugins.transports.names()) or "(none)"
            raise ConfigError(
                self.config.source,
                "sip",
                "listen",
                f"{spec}: no enabled plugin provides transport {spec.transport!r}; "
                f"enabled transports: {available}",
            )
        return transport  # type: ignore[no-any-return]

    def check(self, *, as_service: bool = True) -> None:
        """Everything ``voipgw check-config`` verifies beyond the file itself.
        ``as_service=False`` (check-config): this process's user may not be the service's, so
        what only its permissions forbid goes to :attr:`access_warnings`."""
        for spec in self.config.listen_specs:
            self.transport_for(spec)
        for name, transport in self.plugins.transports.items():
            # A transport whose table names listeners (tls: listener_modes) checks them
            # against its [sip] listen entries; the error names its table and key.
            check_listeners = getattr(transport, "check_listeners", None)
            if check_listeners is None:
                continue
            specs = [spec for spec in self.config.listen_specs if spec.transport == name]
            try:
                check_listeners(specs)
            except ValueError as exc:
                key, _, message = str(exc).partition(": ")
                raise ConfigError(self.config.source, f"plugins.{name}", key, message) from None
        self.name_errors = unknown_trunk_names(self.config, self.plugins.configs)
        self.value_errors = value_warnings(self.config)
        self.plugin_value_errors = {}
        self.plugin_value_notes = {}
        for name, value in self.plugins.configs.items():
            # A plugin's table says its own ("KEY: why", as its checks that refuse a value).
            config_warnings = getattr(value, "config_warnings", None)
            for warning in config_warnings() if callable(config_warnings) else ():
                key, _, message = warning.partition(": ")
                self.plugin_value_errors.setdefault(name, []).append(
                    ConfigError(self.config.source, f"plugins.{name}", key, message)
                )
            config_notes = getattr(value, "config_notes", None)
            for note in config_notes() if callable(config_notes) else ():
                key, _, message = note.partition(": ")
                self.plugin_value_notes.setdefault(name, []).append(
                    ConfigError(self.config.source, f"plugins.{name}", key, message)
                )
        self._check_state_dirs(as_service=as_service)
        self.node_warnings = {}
        for name, tap in self.plugins.media_taps.items():
            # A tap whose settings should differ between the nodes of a cluster (intercept:
            # ne_identifier) checks them knowing whether this node shares its store with others
            # and which keys its table writes. Warnings, not errors: an upgraded cluster keeps
            # carrying calls. The tap's own logger says them (serve), and `check-config` only
            # with --intercept: an interception's settings stay out of the core's lines.
            check_nodes = getattr(tap, "check_nodes", None)
            if check_nodes is None:
                continue
            warnings = check_nodes(
                shared_store=self.config.store.backend == "postgresql",
                written=frozenset(self.config.plugin_tables.get(name, {})),
            )
            if warnings:
                self.node_warnings[name] = list(warnings)
        for index, trunk in enumerate(self.config.trunks):
            if trunk.media_policy not in self.media_policies:
                known = ", ".join(sorted(self.media_policies))
                raise ConfigError(
                    self.config.source,
                    f"trunks.{trunk.name or index}",
                    "media_policy",
                    f"unknown media policy {trunk.media_policy!r}; known: {known}",
                )
            if trunk.interworking and trunk.interworking not in self.plugins.interworking:
                known = ", ".join(self.plugins.interworking.names()) or "(none: enable pstn)"
                raise ConfigError(
                    self.config.source,
                    f"trunks.{trunk.name or index}",
                    "interworking",
                    f"unknown interworking {trunk.interworking!r}; known: {known}",
                )
            if trunk.address_parts.by_naptr:
                # RFC 3263 §4.1: the DNS chooses among the transports we can use.
                if not self.dns_transports():
                    raise ConfigError(
                        self.config.source,
                        f"trunks.{trunk.name or index}",
                        "address",
                        f"{trunk.address!r} lets the DNS choose udp, tcp or tls (NAPTR), but "
                        "none of them is enabled with a [sip] listen entry",
                    )
                continue
            transport = trunk.address_parts.transport
            if transport not in self.plugins.transports:
                raise ConfigError(
                    self.config.source,
                    f"trunks.{trunk.name or index}",
                    "address",
                    f"transport {transport!r} is not provided by an enabled plugin",
                )
            if transport not in {spec.transport for spec in self.config.listen_specs}:
                # Our requests to it carry a Via and Contact of our listener on its transport.
                raise ConfigError(
                    self.config.source,
                    f"trunks.{trunk.name or index}",
                    "address",
                    f"no [sip] listen entry for {transport}, which requests to the trunk need "
                    "(their Via and Contact name our listener on its transport)",
                )
        check_store(self.config)

    @property
    def check_errors(self) -> list[ConfigError]:
        """What :meth:`check` found that ``voipgw check-config`` refuses and ``voipgw run``
        starts with, as warnings: :attr:`name_errors`, :attr:`value_errors` and
        :attr:`plugin_value_errors`."""
        plugins = [error for errors in self.plugin_value_errors.values() for error in errors]
        return [*self.name_errors, *self.value_errors, *plugins]

    def _check_state_dirs(self, *, as_service: bool) -> None:
        """``[gateway] state_dir`` and the plugins' ``state_dir`` keys: a directory, or one that
        ``voipgw run`` can create (it does, mode 0700, with its parents). Otherwise start-up
        failed at the first file written there, with an error that named no key. Not
        ``as_service`` (``voipgw check-config``, run by an operator as themselves, not as the
        service's user): a parent this user may not write in is :attr:`access_warnings`, not an
        error; what the service's user may do is not this process's to know.

        The SQLite store's directory (``[gateway] state_dir`` unless ``[store]`` names
        PostgreSQL) that exists must be writable too: the store cannot open without creating
        its file and its WAL beside it. One on a read-only file system is an error of both (no
        user may write there); one this user may not write in is ``run``'s error, naming the
        key (it stopped on the store's file), and check-config's warning, naming this user and
        the directory's owner. Elsewhere (PostgreSQL's state_dir holds only the control
        socket, which the gateway runs without, warned of) nothing new is said: earlier
        releases ran with such directories.

        The directories the plugins write in (``written_directories()`` of their table: dtls,
        zrtp, mikey, intercept, recorder) and the database files there and in the SQLite
        store's directory are held to the same rules (:meth:`_check_written_directory`,
        :meth:`_check_written_files`)."""
        self.access_warnings = []
        dirs = [("gateway", self.config.gateway.state_dir)]
        for name, value in self.plugins.configs.items():
            if value is not None and isinstance(getattr(value, "state_dir", None), str):
                dirs.append((f"plugins.{name}", value.state_dir))
        for table, text in dirs:
            self._check_directory(table, "state_dir", Path(text), as_service=as_service)
        if self.config.store.backend == "sqlite":
            self._check_written_files(
                "gateway",
                "state_dir",
                Path(self.config.gateway.state_dir),
                [f"{DB_FILENAME}{suffix}" for suffix in ("", "-wal", "-shm")],
                "the SQLite store",
                as_service=as_service,
            )
            checked = {os.path.realpath(self.config.gateway.state_dir)}
        else:
            checked = set()
        kept: dict[str, list[tuple[str, str, str, Path, str, Sequence[str], Path]]] = {}
        for name, value in self.plugins.configs.items():
            # The directories an enabled plugin writes in (dtls, zrtp, mikey and intercept:
            # their own under their state_dir; the recorder's recordings): one this user may
            # not write in passed check-config and `voipgw run`, and failed the first call
            # that needed it (a DTLS offer, a recording), naming neither table nor key.
            written = getattr(value, "written_directories", None)
            for entry in written() if callable(written) else ():
                key, directory, what, files, warn_only = _written_entry(name, entry)
                table = f"plugins.{name}"
                key_value: Any = getattr(value, key, None)
                if key == GATEWAY_STATE_DIR:
                    # A plugin without a state_dir of its own (tls): under the gateway's,
                    # checked above, and the key the messages name.
                    table, key, key_value = "gateway", "state_dir", self.config.gateway.state_dir
                    directory = Path(key_value, directory)
                if not isinstance(key_value, str):
                    # A third-party plugin's mistake: said as the plugin's, not a traceback.
                    raise PluginError(
                        f"plugin {name!r}: written_directories() names {key!r}, which is not "
                        f"a directory key of its [{table}] table"
                    )
                configured = Path(os.path.abspath(key_value))
                if key != "state_dir":
                    # Not a state_dir (those are checked above): may it be made?
                    self._check_directory(table, key, configured, as_service=as_service)
                if warn_only:
                    # Checked once all are known: one line per directory, however many
                    # entries (of one plugin or several) name it.
                    same = os.path.realpath(os.path.abspath(directory))
                    kept.setdefault(same, []).append(
                        (name, table, key, directory, what, files, configured)
                    )
                    continue
                # What is written in first: the directory, or the nearest part of it that
                # exists, where the plugin makes the rest (mkdir with parents). Judged where
                # the kernel takes it (os.access, stat and statvfs follow symbolic links); a
                # link to nothing on the way (a volume not mounted yet) cannot be made through:
                # mkdir fails there with EEXIST, whatever the permissions where it points.
                existing = Path(os.path.abspath(directory))
                while not os.path.exists(existing) and existing != existing.parent:
                    if os.path.islink(existing):
                        break
                    existing = existing.parent
                if not existing.is_relative_to(configured):
                    continue  # the key's own directory is missing: said above
                if os.path.islink(existing) and not os.path.exists(existing):
                    self._dangling_link_warning(table, key, existing, what)
                    continue
                if not os.path.isdir(existing):
                    continue
                if existing == Path(os.path.abspath(directory)) and _holds_every_file(
                    existing, files, configured
                ):
                    # Every file the plugin writes there is there and writable (a WAL
                    # database, its -wal and -shm): it creates nothing in the directory, which
                    # may be read-only (root's), as the SQLite store's state_dir may
                    # (_store_files_writable). Such a directory ran before this check.
                    checked.add(os.path.realpath(existing))
                if os.path.realpath(existing) not in checked:
                    checked.add(os.path.realpath(existing))
                    self._check_written_directory(
                        table,
                        key,
                        existing,
                        what,
                        configured,
                        as_service=as_service,
                        made=existing == Path(os.path.abspath(directory)),
                    )
                if existing == Path(os.path.abspath(directory)):
                    self._check_written_files(
                        table, key, directory, files, what, as_service=as_service
                    )
        for entries in kept.values():
            # Named by the first entry's table and key; what each writes there, and every
            # plugin whose entries name it.
            name, table, key, directory, _, _, configured = entries[0]
            what = " and ".join(dict.fromkeys(entry[4] for entry in entries))
            plugins = list(dict.fromkeys(entry[0] for entry in entries))
            if len(plugins) > 1:
                what += f" (written_directories() of the {' and '.join(plugins)} plugins)"
            files = list(dict.fromkeys(file for entry in entries for file in entry[5]))
            self._check_kept_directory(
                table, key, directory, what, files, configured, as_service=as_service
            )
        self._check_generated_certificates(checked, as_service=as_service)
        for name, value in self.plugins.configs.items():
            # The files a plugin reads back from where it wrote them (dtls: its certificate
            # and key; zrtp: its ZID; tls: its saved CRLs): one a `voipgw run` as root left
            # root's, mode 0600, failed the first call that needed it, at any hour.
            read = getattr(value, "read_files", None)
            for entry in read() if callable(read) else ():
                key, file, what, warn_only = _read_entry(name, entry)
                table = f"plugins.{name}"
                key_value = getattr(value, key, None)
                if key == GATEWAY_STATE_DIR:
                    # A plugin without a state_dir of its own (tls), as in written_directories().
                    table, key, key_value = "gateway", "state_dir", self.config.gateway.state_dir
                    file = Path(key_value, file)
                if not isinstance(key_value, str):
                    raise PluginError(
                        f"plugin {name!r}: read_files() names {key!r}, which is not a "
                        f"directory key of its [{table}] table"
                    )
                configured = Path(os.path.abspath(key_value))
                # A "*" in the last part (the tls plugin's "*.crl": one file per CRL URL): each
                # file there that the pattern matches (Path.glob).
                matched = [file]
                if "*" in file.name:
                    matched = sorted(file.parent.glob(file.name))
                for each in matched:
                    self._check_read_file(
                        table,
                        key,
                        each,
                        what,
                        configured,
                        as_service=as_service,
                        warn_only=warn_only,
                    )

    def _check_generated_certificates(self, checked: set[str], *, as_service: bool) -> None:
        """The certificate a TLS listener without one of its own takes from ``[gateway]
        state_dir`` (the tls and wss transports' ``generated_certificate()``: ``<state_dir>/
        tls/gateway.crt`` and ``gateway.key``), made there when the listener first starts.
        Both there: each must be readable (:meth:`_check_read_file`), the directory need not
        be writable (nothing is written). Otherwise the directory, or the nearest part of it
        that exists, must be writable, as a plugin's (:meth:`_check_written_directory`), and
        ``run`` refuses one it may not write in: the listener makes the pair at start-up, not
        at a first call that may never come. Before, check-config said nothing and ``run``
        stopped at the listener's start, after the store had opened."""
        takers: dict[tuple[Path, Path], list[str]] = {}
        for name, transport in self.plugins.transports.items():
            generated = getattr(transport, "generated_certificate", None)
            if generated is None:
                continue
            listens = [spec for spec in self.config.listen_specs if spec.transport == name]
            paths = generated(listens)
            if paths is not None:
                takers.setdefault((Path(paths[0]), Path(paths[1])), []).append(name)
        state = Path(os.path.abspath(self.config.gateway.state_dir))
        for (certificate, key), names in takers.items():
            certificate, key = state / certificate, state / key
            what = f"the generated certificate of the {' and '.join(names)} listeners"
            if not (certificate.is_file() and key.is_file()):
                self._check_made_directory(certificate.parent, what, state, checked, as_service)
            self._check_read_file(
                "gateway", "state_dir", certificate, what, state, as_service=as_service
            )
            self._check_read_file(
                "gateway", "state_dir", key, f"the key of {what}", state, as_service=as_service
            )

    def _check_made_directory(
        self, directory: Path, what: str, state: Path, checked: set[str], as_service: bool
    ) -> None:
        """``directory`` under ``[gateway] state_dir`` (``state``), which is made (or
        written in) at start-up: the nearest part of it that exists must be writable."""
        existing = Path(os.path.abspath(directory))
        while not os.path.exists(existing) and existing != existing.parent:
            if os.path.islink(existing):
                break
            existing = existing.parent
        if not existing.is_relative_to(state):
            return  # state_dir itself is missing: said by its own check
        if os.path.islink(existing) and not os.path.exists(existing):
            self._dangling_link_warning("gateway", "state_dir", existing, what)
            return
        if not os.path.isdir(existing) or os.path.realpath(existing) in checked:
            return
        checked.add(os.path.realpath(existing))
        self._check_written_directory(
            "gateway", "state_dir", existing, what, state, as_service=as_service
        )

    def _check_read_file(
        self,
        table: str,
        key: str,
        path: Path,
        what: str,
        configured: Path,
        *,
        as_service: bool,
        warn_only: bool = False,
    ) -> None:
        """A file the gateway reads back from ``[table] key``'s directory (``configured``)
        when it is there: one left by a `voipgw run` as root (owner root, mode 0600) is
        ``run``'s error, with the remedy (``... is owned by root and not readable by voipgw:
        chown it to voipgw or remove it``). ``check-config`` says it too: as another user, an
        error when the mode keeps the directory's owner (the service's user, most likely) from
        reading it as well, else a warning; as root (which reads any file), a warning naming
        that owner. Its contents are never read here (a key's never shown).

        ``warn_only`` (a :data:`WARN_ONLY` entry: the tls plugin's saved CRLs, which it fetches
        again when it cannot read them): the same words, each a warning of ``run`` (logged)
        and ``check-config``, saying that ``run`` starts without it."""

        def refuse(message: str) -> None:
            if not warn_only:
                raise ConfigError(self.config.source, table, key, message)
            self.access_warnings.append(
                ConfigError(self.config.source, table, key, f"{message}; {_RUNS_WITHOUT_IT}")
            )

        if not os.path.isfile(path):
            return
        shown, owner = shown_path(path), owner_name(path) or "?"
        uid = os.geteuid()
        if as_service:
            if uid == 0 or may_open(path, os.O_RDONLY):
                return
            refuse(_unread_message(shown, owner, user_name(), what))
            return
        try:
            service_uid = os.stat(configured).st_uid
        except OSError:
            service_uid = 0
        service = owner_name(configured) or "?"
        service_may_not = service_uid != 0 and may_read_as(path, service_uid) is False
        of_state_dir = (
            f"{service}, the owner of {configured} (the user `voipgw run` created it as, "
            "most likely)"
        )
        if uid == 0:
            if service_may_not:
                run = (
                    _RUNS_WITHOUT_IT if warn_only else f"`voipgw run` as {service} refuses to start"
                )
                self.access_warnings.append(
                    ConfigError(
                        self.config.source,
                        table,
                        key,
                        _unread_message(shown, owner, of_state_dir, what, service) + f"; {run}",
                    )
                )
            return
        if may_open(path, os.O_RDONLY):
            return
        if service_uid == uid:
            # The state_dir's owner checking (sudo -u voipgw voipgw check-config): the
            # service's own answer, as `run`'s.
            refuse(_unread_message(shown, owner, user_name(), what))
            return
        if service_may_not:
            # `check-config && systemctl reload` must not go on to the service's refusal.
            refuse(
                _unread_message(
                    shown,
                    owner,
                    f"{user_name()}, who runs check-config, nor by {of_state_dir}",
                    what,
                    service,
                )
            )
            return
        problem = f"{shown} is owned by {owner} and not readable by this user ({user_name()})"
        # The service's user may read it (its own file, mode 0600 under a umask of 077): a
        # warning that says so, never that `run` goes without it.
        self._access_warning(
            table,
            key,
            problem,
            f"{what} cannot be read",
            path,
            refusal="`voipgw run` as a user who is not starts, and runs without it"
            if warn_only
            else None,
        )

    def _check_kept_directory(
        self,
        table: str,
        key: str,
        directory: Path,
        what: str,
        files: Sequence[str],
        configured: Path,
        *,
        as_service: bool,
    ) -> None:
        """A plugin's directory whose ``written_directories()`` entry is :data:`WARN_ONLY`
        (the tls transport's fetched CRLs, kept for a start without network): the gateway runs
        without what it writes there, at any hour, and each failed write is logged then. Said
        at start-up instead: a warning of ``voipgw run`` (logged) and ``check-config``, never
        a refusal, for the directory (or the nearest part of it that exists, where the plugin
        makes the rest) and each of ``files`` there, by the same rules as
        :meth:`_check_written_directory`'s (a read-only file system, this user's permission;
        as root, the mode for the owner of the key's directory)."""
        existing = Path(os.path.abspath(directory))
        while not os.path.exists(existing) and existing != existing.parent:
            if os.path.islink(existing):
                break
            existing = existing.parent
        if not existing.is_relative_to(configured):
            return
        if os.path.islink(existing) and not os.path.exists(existing):
            self._dangling_link_warning(table, key, existing, what, warn_only=True)
            return
        if not os.path.isdir(existing):
            return
        made = existing == Path(os.path.abspath(directory))
        paths = [existing / name for name in files if made and (existing / name).is_file()]
        for path in [existing, *paths]:
            problem = self._kept_path_problem(path, configured, as_service=as_service)
            if problem is not None:
                self.access_warnings.append(
                    ConfigError(
                        self.config.source,
                        table,
                        key,
                        f"{problem}: {what} cannot be written there; `voipgw run` starts, "
                        "and runs without it",
                    )
                )
                return

    def _kept_path_problem(self, path: Path, configured: Path, *, as_service: bool) -> str | None:
        """Why ``path`` (a directory of :meth:`_check_kept_directory`, or a file in it) may not
        be written, or None."""
        shown = shown_path(path)
        if on_read_only_file_system(path):
            return f"{shown} is on a read-only file system ({read_only_remedy(path)})"
        checking = "" if as_service else ", who runs check-config"
        if os.geteuid() == 0:
            # Root writes anywhere: as the service (run) nothing to say; as check-config, the
            # mode for the owner of the key's directory (the service's user, most likely).
            owner = None if as_service else _owner_may_not_write_file(path, configured)
            if owner is None:
                return None
            return (
                f"{shown} can be written by root{checking}, but not by {owner}, the owner of "
                f"{configured} (the user `voipgw run` created it as, most likely): "
                f"{_describe_file(path)}"
            )
        if path.is_dir():
            writable = os.access(path, os.W_OK | os.X_OK) or (
                as_service and _creates_a_file_in(path)
            )
        else:
            writable = may_open(path, os.O_WRONLY)
        if writable:
            return None
        problem = f"{shown} is not writable by this user ({user_name()}){checking}"
        if not as_service:
            problem += " (the service's user may be allowed to: check it as that user)"
        return problem

    def _dangling_link_warning(
        self, table: str, key: str, link: Path, what: str, *, warn_only: bool = False
    ) -> None:
        """A plugin's directory (or a part of it still to be made) that is a symbolic link to
        nothing: the plugin's mkdir fails there (EEXIST) for every user, at the first write,
        which may never come (dtls, enabled by default: the first DTLS offer). A warning of
        run (logged at start-up) and check-config: such a gateway ran before this check.
        ``warn_only`` (a :data:`WARN_ONLY` entry): nothing fails, the gateway runs without what
        it would have written there (the tls plugin's fetched CRLs are used unsaved), said as
        the entry's other warnings end."""
        if warn_only:
            tail = f"{what} cannot be written there; `voipgw run` starts, and runs without it"
        else:
            tail = (
                f"{what} cannot be made there; `voipgw run` starts, and what needs it fails "
                "until it exists"
            )
        self.access_warnings.append(
            ConfigError(
                self.config.source,
                table,
                key,
                f"{link} is a symbolic link to {os.readlink(link)}, which does not exist: "
                f"{tail} (a file system not mounted yet?)",
            )
        )

    def _check_directory(self, table: str, key: str, path: Path, *, as_service: bool) -> None:
        """A directory ``[table] key`` names: one, or one ``voipgw run`` can create (with its
        parents); as check-config, a parent this user may not write in is a warning."""
        problem = directory_problem(path, check_access=as_service)
        if problem is None and table == "gateway" and self.config.store.backend == "sqlite":
            problem = self._store_directory_problem(path, as_service=as_service)
        if problem is not None:
            raise ConfigError(self.config.source, table, key, problem)
        access = None if as_service else directory_access_problem(path)
        if access is not None:
            self.access_warnings.append(
                ConfigError(
                    self.config.source,
                    table,
                    key,
                    f"{access}, who runs check-config: the service's user may be allowed "
                    "to; `voipgw run` as a user who is not refuses to start (check it as "
                    "that user: sudo -u USER voipgw check-config FILE)",
                )
            )

    def _access_warning(
        self,
        table: str,
        key: str,
        problem: str,
        what: str,
        path: Path,
        *,
        refusal: str | None = None,
    ) -> None:
        """check-config's warning of a directory or file this user may not write in (session
        35's state_dir warning): its owner, unless this user, most likely the service's.
        ``refusal``: what `run` as a user who may not does, when it is not a refusal to start
        (a :data:`WARN_ONLY` file)."""
        owner = owner_name(path)
        if owner in (user_name(), "root"):
            # Root's: left by a `voipgw run` as root, most likely, not the service's user.
            owner = None
        who = f"its owner, {owner}, " if owner is not None else "the service's user "
        self.access_warnings.append(
            ConfigError(
                self.config.source,
                table,
                key,
                f"{problem}, who runs check-config: {what} by this user; {who}may be "
                f"allowed to; {refusal or '`voipgw run` as a user who is not refuses to start'} "
                f"(check it as that user: sudo -u {owner or 'USER'} voipgw check-config FILE)",
            )
        )

    def _check_written_directory(
        self,
        table: str,
        key: str,
        directory: Path,
        what: str,
        configured: Path,
        *,
        as_service: bool,
        made: bool = True,
    ) -> None:
        """A plugin's existing directory ``directory`` (``[table] key``'s), which it writes
        ``what`` in: ``voipgw run`` refuses one it may not write in (a file created there,
        tried, before refusing: os.access answers for the real user by this host's mode
        bits); check-config warns, naming this user and the directory's owner, and as root
        warns of one whose owner may not write in it.

        Not ``made``: ``directory`` is the nearest existing part of the plugin's directory,
        which the plugin makes at its first write, and that may never come (dtls, enabled by
        default, at the first DTLS offer): a PostgreSQL gateway's state_dir of root's, or on a
        read-only file system, ran so before, and still does; check-config warns."""
        cannot = f"{what} cannot be written there"
        shown = shown_path(directory)
        real = Path(os.path.realpath(directory))
        problem = written_directory_problem(directory, shown=shown)
        if not made:
            if problem is not None and not as_service:
                self.access_warnings.append(
                    ConfigError(
                        self.config.source,
                        table,
                        key,
                        f"{problem}, who runs check-config: {what} cannot be made there by "
                        "this user; `voipgw run` starts, and what needs it fails if the "
                        "service's user may not either",
                    )
                )
            return
        if problem is not None and as_service and _creates_a_file_in(directory):
            return
        if problem is not None and (as_service or on_read_only_file_system(directory)):
            raise ConfigError(self.config.source, table, key, f"{problem}: {cannot}")
        if as_service:
            return
        if problem is not None:
            self._access_warning(table, key, problem, cannot, directory)
        elif directory != configured and (
            owner := _owner_may_not_write_file(directory, configured)
        ):
            # Made inside the key's directory by a `voipgw run` as root, most likely: root's,
            # where the directory's owner (the service's user, most likely) may not write.
            self.access_warnings.append(
                ConfigError(
                    self.config.source,
                    table,
                    key,
                    f"{shown} can be written in by root, who runs check-config, but not by "
                    f"{owner}, the owner of {configured} (the user `voipgw run` created it as, "
                    f"most likely): {_describe_file(directory)}; so {cannot} as {owner}; "
                    f"`voipgw run` as {owner} refuses to start (chown {owner} {real})",
                )
            )
        elif (owner := owner_may_not_write(directory)) is not None:
            mode = stat.S_IMODE(os.stat(directory).st_mode)
            self.access_warnings.append(
                ConfigError(
                    self.config.source,
                    table,
                    key,
                    f"{shown} is writable by root only (mode {mode:04o}): its owner, "
                    f"{owner}, may not write in it, so {cannot} as {owner}; `voipgw run` as "
                    f"{owner} refuses to start (chmod u+wx {real}, or check it as the "
                    "service's user: sudo -u USER voipgw check-config FILE)",
                )
            )

    def _check_written_files(
        self,
        table: str,
        key: str,
        directory: Path,
        names: Sequence[str],
        what: str,
        *,
        as_service: bool,
    ) -> None:
        """The files named ``names`` in ``directory`` that exist and that the gateway writes
        (a SQLite database, its -wal and -shm): one this user may not open for writing (left
        by `voipgw run` as root: owner root, mode 0644) opened read-only, and the first write
        failed ("attempt to write a readonly database"), the gateway running until then.
        ``voipgw run`` refuses it (open(2) for writing tried, which changes nothing);
        check-config warns, naming this user and the file's owner; as root (which may write
        any file) it warns of a file the directory's owner may not write. One on a read-only
        file system (statvfs ST_RDONLY) is an error of both, whose remedy is the mount's."""
        for name in names:
            path = directory / name
            if not path.is_file():
                continue
            if on_read_only_file_system(path):
                # No user may write it, root included (EROFS), and no chown or chmod changes
                # that: a file bind-mounted read-only on its own (a container's volume with
                # :ro), where the directory's check passed. An error of check-config too.
                raise ConfigError(
                    self.config.source,
                    table,
                    key,
                    f"{shown_path(path)} is on a read-only file system: {what} cannot be written "
                    f"({read_only_remedy(path)})",
                )
            if os.geteuid() == 0:
                if as_service:
                    continue
                owner = _owner_may_not_write_file(path, directory)
                if owner is not None:
                    self.access_warnings.append(
                        ConfigError(
                            self.config.source,
                            table,
                            key,
                            f"{shown_path(path)} can be written by root, who runs check-config, "
                            "but not "
                            f"by {owner}, the owner of {directory} (the user `voipgw run` "
                            f"created it as, most likely): {_describe_file(path)}; `voipgw "
                            f"run` as {owner} refuses to start "
                            f"({_write_remedy(path, os.stat(directory).st_uid, owner)})",
                        )
                    )
                continue
            if may_open(path, os.O_WRONLY):
                continue
            problem = (
                f"{shown_path(path)} is not writable by this user ({user_name()}) "
                f"({_describe_file(path)})"
            )
            # The directory's owner checking (`sudo -u voipgw voipgw check-config FILE`, what
            # the warnings advise): the service's own answer, an error as `run`'s, not a
            # warning that "the service's user may be allowed to".
            if as_service or on_read_only_file_system(directory) or _owned_by_me(directory):
                raise ConfigError(
                    self.config.source,
                    table,
                    key,
                    f"{problem}: {what} cannot be written "
                    f"({_write_remedy(path, os.geteuid(), user_name())})",
                )
            self._access_warning(table, key, problem, f"{what} cannot be written", path)

    def _store_directory_problem(self, path: Path, *, as_service: bool) -> str | None:
        """The error of an existing SQLite store directory the gateway may not write in, or
        None; as check-config (not ``as_service``) a permission is :attr:`access_warnings`."""
        store = f"the SQLite store ({path / DB_FILENAME}) cannot be opened"
        if _store_files_writable(path):
            # SQLite opens it without creating a file in the directory (its WAL, which it
            # cannot remove there, stays): a state_dir of root's holding the service user's
            # store ran before this check, and still does.
            return None
        problem = written_directory_problem(path)
        if problem is not None and as_service and _creates_a_file_in(path):
            # access(2) said no where a write succeeds (NFS mapping users, a capability it
            # ignores for a user other than root): the service ran so before this check.
            return None
        if problem is not None and (as_service or on_read_only_file_system(path)):
            # A read-only file system: no user may write there, the service's nor root.
            return f"{problem}: {store}"
        if as_service:
            return None
        owner = owner_name(path)
        if problem is not None:
            # Its owner, unless this user, is most likely the service's user (`voipgw run`
            # created it so): the one to check as.
            if owner == user_name():
                owner = None
            who = f"its owner, {owner}, " if owner is not None else "the service's user "
            self.access_warnings.append(
                ConfigError(
                    self.config.source,
                    "gateway",
                    "state_dir",
                    f"{problem}, who runs check-config: {store} by this user; {who}may be "
                    "allowed to; `voipgw run` as a user who is not refuses to start (check it "
                    f"as that user: sudo -u {owner or 'USER'} voipgw check-config FILE)",
                )
            )
        elif (owner := owner_may_not_write(path)) is not None:
            # Root may write anywhere: its own answer says nothing of the service's user, but
            # the mode says the owner (most likely who `voipgw run` created it as) may not.
            mode = stat.S_IMODE(os.stat(path).st_mode)
            self.access_warnings.append(
                ConfigError(
                    self.config.source,
                    "gateway",
                    "state_dir",
                    f"{path} is writable by root only (mode {mode:04o}): its owner, {owner}, "
                    f"may not write in it, so {store} as {owner}; `voipgw run` as {owner} "
                    f"refuses to start (chmod u+wx {path}, or check it as the service's user: "
                    "sudo -u USER voipgw check-config FILE)",
                )
            )
        return None

    def session_target_names(self) -> dict[str, TrunkAddress]:
        """The SIP URIs media taps open sessions to (``MediaTap.sip_targets``) whose host is
        a name, with the look-up each asks for (RFC 3263 §4.1, §4.2)."""
        named: dict[str, TrunkAddress] = {}
        for _, tap in self.plugins.media_taps.items():
            for uri in getattr(tap, "sip_targets", ()):
                address = named_uri_address(uri)
                if address is not None:
                    named[uri] = address
        return named

    def dns_transports(self) -> tuple[str, ...]:
        """The transports a trunk named without one may use (RFC 3263 §4.1: NAPTR services of
        these only): udp, tcp and tls where a plugin provides them and ``[sip] listen`` has a
        listener for them (our Via and Contact name it); tls thus only with the TLS plugin."""
        listening = {spec.transport for spec in self.config.listen_specs}
        return tuple(
            transport
            for transport in TRANSPORT_ORDER
            if transport in self.plugins.transports and transport in listening
        )

    def _bindings_on_our_listeners(self) -> list[Binding]:
        """The unexpired bindings registered over one of our listeners (a store shared by
        several gateways holds the others' too, whose NATs only they reach)."""
        assert self.store is not None
        ours = {format_address(listener.address) for listener in self.listeners}
        now = time.time()
        return [
            binding
            for account in self.store.accounts_list()
            for binding in self.store.bindings_for_account(account.name, now=now)
            if binding.flow.local in ours
        ]

    def _on_registered_callback(self) -> Callable[[str, tuple[Binding, ...]], None] | None:
        """What the registration service tells of each accepted REGISTER: the NAT keepalive
        (``[sip] nat_keepalive_interval``) and presence from registration (``[presence]
        from_registration``), each only when configured; None (no call per REGISTER) when
        neither is."""
        keepalive = self.nat_keepalive
        presence = self.config.presence
        if presence.allow == "none" or not presence.from_registration:
            return keepalive.registered if keepalive is not None else None

        def registered(aor: str, bindings: tuple[Binding, ...]) -> None:
            if keepalive is not None:
                keepalive.registered(aor, bindings)
            if self.presence is not None:
                try:
                    self.presence.registered(aor, bindings)
                except Exception:  # the REGISTER is answered all the same (STYLE.md habit 6)
                    log_exception(log, "presence from the registration of %s", redact_password(aor))

        return registered

    async def _housekeeping(self) -> None:
        """Periodic clean-up: expired registrations (and presence publications) and call
        records past ``[store] call_record_days`` out of the store, idle UDP flows out of the
        flow table (all would otherwise only grow)."""
        while True:
            await trio.sleep(HOUSEKEEPING_INTERVAL)
            removed = await self._expire_bindings()
            if removed:
                log.info("%d registration(s) expired", removed)
            if self.presence is not None:
                await self._expire_publications()
            assert self.store is not None
            await expire_call_records(
                self.store,
                days=self.config.store.call_record_days,
                now=time.time(),
                failures=self._call_record_expiry_failures,
                counts=self.call_record_retention,
            )
            self.flows.expire_datagram_flows(now=trio.current_time(), idle=UDP_FLOW_IDLE)

    async def _expire_bindings(self) -> int:
        """Expired registrations out of the store, :data:`EXPIRE_CHUNK` per statement with a
        checkpoint between: thousands expire at once after an outage longer than the
        registrations, and one statement for all of them held the event loop for 100 ms or
        more (docs/benchmarks.md, "Periodic work at scale"). How many went."""
        assert self.store is not None
        now = time.time()
        removed = 0
        while True:
            try:
                expired = self.store.expire_bindings(now, most=EXPIRE_CHUNK)
            except StoreBusy as exc:
                log.warning("expired registrations left for the next round: %s", exc)
                return removed
            except Exception:
                log_exception(log, "expiring registrations failed")
                return removed
            removed += len(expired)
            if len(expired) < EXPIRE_CHUNK:
                return removed
            await trio.lowlevel.checkpoint()

    async def _expire_publications(self) -> None:
        """Expired presence publications out of the store (every node's memory forgets them
        at their time), :data:`EXPIRE_CHUNK` per statement as for bindings."""
        assert self.store is not None and self.dialog_events is not None
        now = self.dialog_events.wall_clock()  # the clock they were written on
        while True:
            try:
                removed = self.store.expire_publications(now, most=EXPIRE_CHUNK)
            except StoreBusy as exc:
                log.warning("expired presence publications left for the next round: %s", exc)
                return
            except Exception:
                log_exception(log, "expiring presence publications failed")
                return
            if removed < EXPIRE_CHUNK:
                return
            await trio.lowlevel.checkpoint()

    # -- what calls need ----------------------------------------------------------------------

    def _trunk_resolved(self, name: str, resolution: Resolution) -> None:
        """A trunk named by DNS has a new answer: its addresses recognise its requests (when it
        has no ``allowed_sources``), and its targets' TLS certificates must name its domain."""
        trunk = self.config.trunk(name)
        assert trunk is not None
        hops = resolution.hops
        if trunk.allowed_sources is None:
            self._trunks.set_resolved(name, [hop.host for hop in hops])
        self._trunk_hops[name] = hops
        self._name_peers()

    def _session_target_resolved(self, uri: str, resolution: Resolution) -> None:
        """A session target's name (a SIPREC recorder's URI) has a new answer: its targets'
        TLS certificates must name the URI's host (RFC 5922 §4), as a trunk's name its domain."""
        self._session_hops[uri] = resolution.hops
        self._name_peers()

    def _name_peers(self) -> None:
        # Rebuilt whole (a few names, at a refresh): a target a name no longer has is not
        # named after it any more. A trunk's domain wins over a recorder's at one address.
        peer_names: dict[tuple[str, int], str] = {}
        for trunk_name, trunk_hops in self._trunk_hops.items():
            named = self.config.trunk(trunk_name)
            assert named is not None
            for hop in trunk_hops:
                peer_names.setdefault((hop.host, hop.port), named.address_parts.host)
        sessions = self.session_targets
        for uri, session_hops in self._session_hops.items():
            assert sessions is not None
            for hop in session_hops:
                peer_names.setdefault((hop.host, hop.port), sessions.named[uri].host)
        self._peer_names = peer_names

    def peer_name(self, remote: tuple[str, int]) -> str | None:
        """The host name a trunk at ``remote`` is known by: the domain of a trunk named by DNS
        whose target it is (RFC 5922 §4: not the SRV target's name), else None."""
        return self._peer_names.get(remote)

    def is_trunk_address(self, address: str) -> bool:
        """Whether ``address`` is in some enabled trunk's ``allowed_sources`` (with or without
        ``auth_by_source``): a carrier's requests are never dropped for their User-Agent."""
        return self._trunks.identify(address) is not None

    def trunk_for_source(self, address: str) -> str | None:
        """The trunk a request from ``address`` comes from, if it is accepted by source."""
        trunk = self._trunks.identify(address)
        if trunk is None or not trunk.auth_by_source:
            return None
        return trunk.name

    def route(self, request: Request, caller: Caller) -> RouteDecision:
        assert self.directory is not None
        if self.plugins.implemented("gateway_route_call") is None:
            # No plugin routes: what route_call does then, without pluggy's empty hook call.
            return default_route(request, caller, self.directory)
        return route_call(self.plugins.hook, request, caller, self.directory)

    def new_media_session(self, on_lost: Callable[[str], None] | None = None) -> MediaSession:
        """A call's media. ``on_lost(reason)`` is called when its streams stop being relayed
        (only with media workers: the worker exited)."""
        relay: Relay
        if self.media_workers is not None:
            relay = self.media_workers.for_call(on_lost)
        else:
            assert self.relay is not None
            relay = self.relay
        quality = CallQuality(trio.current_time) if self.config.media.rtcp_quality else None
        return MediaSession(
            relay,
            media_address=self.config.media.address,
            quality=quality,
            dtmf_interworking=self.config.media.dtmf_interworking,
            log_dtmf_digits=self.config.gateway.log_dtmf_digits,
            g711_transcoding=self.config.media.g711_transcoding,
            clock=trio.current_time,
        )

    def control_answer(
        self, query: str, arguments: Mapping[str, str] | None = None
    ) -> dict[str, object]:
        """The answer to a control socket query (gateway/core/control.py): ``live_quality``,
        per live call whose quality is read, each leg's RTCP figures now; ``trunks``;
        ``media_workers``; ``recording`` (``arguments``: pause or resume a call's recordings,
        ``CallManager.pause_recording``). Walks the live calls when asked, never otherwise."""
        if query == "recording":
            from gateway.core.control import ControlError

            if self.calls is None or arguments is None:
                raise ControlError("no calls are taken yet")
            return self.calls.pause_recording(
                arguments["call_id"], arguments["action"] == "pause", by=arguments["by"]
            )
        if query == "trunks":
            return {
                "trunks": self.trunks_status(),
                "session_targets": self.session_targets_status(),
            }
        if query == "media_workers":
            pool = self.media_workers
            if pool is None:
                return {"workers": None, "address": None}
            return {"workers": pool.describe_workers(trio.current_time()), "address": pool.address}
        calls: dict[str, object] = {}
        if query == "live_quality" and self.calls is not None:
            for call in self.calls.calls:
                quality = call.media.quality if call.media is not None else None
                if quality is not None:
                    # The callee's leg once answered (or sending RTCP with early media).
                    answered = call.b is not None or "b" in quality.legs
                    sides = ("a", "b") if answered else ("a",)
                    calls[call.record_id] = quality.live(sides)
        return {"calls": calls}

    def trunks_status(self) -> list[dict[str, object]]:
        """Every trunk as ``voipgw trunks`` shows it (``kind`` ``"trunk"``): its address,
        whether it is enabled and up (down: why), registered (None: it does not register), and
        for a trunk named by DNS (``dns``, else None) the targets of its last good answer in
        priority order, when that came and when the name is asked next (Unix time), the TTL,
        and why the last resolution failed (None: it did not)."""
        now, wall = trio.current_time(), time.time()
        down = self.trunk_health.down
        found: list[dict[str, object]] = []
        for trunk in self.config.trunks:
            registration = self.trunk_registrations.get(trunk.name)
            entry: dict[str, object] = {
                "kind": "trunk",
                "name": trunk.name,
                "address": str(trunk.address_parts),
                "enabled": trunk.enabled,
                "up": trunk.enabled and trunk.name not in down,
                "down_reason": down.get(trunk.name),
                "registered": registration.registered if registration is not None else None,
                "dns": None,
            }
            status = self.trunk_targets.status(trunk.name) if self.trunk_targets else None
            if status is not None:
                entry["dns"] = _dns_status(status, now, wall)
            found.append(entry)
        return found

    def session_targets_status(self) -> list[dict[str, object]]:
        """Every SIP URI the gateway opens sessions to whose host is a name (a SIPREC
        recorder's: ``kind`` ``"session target"``, ``name`` the URI, ``address`` the look-up
        it asks for), with ``dns`` as :meth:`trunks_status` has it for a trunk named by DNS;
        empty without one."""
        named = self.session_targets
        if named is None:
            return []
        now, wall = trio.current_time(), time.time()
        found: list[dict[str, object]] = []
        for uri in named.named:
            status = named.status(uri)
            assert status is not None
            found.append(
                {
                    "kind": "session target",
                    "name": redact_password(uri),  # RFC 3261 §19.1.1: a password, never shown
                    "address": status.address,
                    "dns": _dns_status(status, now, wall),
                }
            )
        return found

    # -- TransportHost ----------------------------------------------------------------------

    @property
    def state_dir(self) -> Path:
        return Path(self.config.gateway.state_dir)

    def deliver(self, data: bytes, flow: Flow, *, waited: float = 0.0) -> None:
        if not self._inbound.put((data, flow, trio.current_time() - waited)):
            self.statistics.dropped_queue_full += 1
            if self.statistics.dropped_queue_full % 100 == 1:
                log.warning(
                    "SIP inbound queue full (%d): dropping messages (%d dropped so far)",
                    INBOUND_QUEUE,
                    self.statistics.dropped_queue_full,
                )
            return
        self.statistics.delivered += 1

    async def serve_datagrams(self, fd: int, read: Callable[[int], bool]) -> None:
        self._inbound.add_source(fd, read)
        try:
            await trio.sleep_forever()
        finally:
            self._inbound.remove_source(fd)

    def datagram_receive_drops(self) -> int:
        """Datagrams the kernel dropped at the sockets :meth:`serve_datagrams` serves (their
        receive buffers full): a UDP backlog waits there, not in the inbound queue."""
        return kernel_receive_drops(self._inbound.source_fds())

    def flow_closed(self, flow: Flow) -> None:
        self.statistics.flows_closed += 1
        self.endpoint.flow_closed(flow)

    async def flow_revoked(self, flow: Flow, reason: str) -> None:
        """The peer's certificate on ``flow`` was revoked (a CRL reload; the transport logged
        it and closes the connection when this returns). Its registrations (RFC 5626 flows:
        the binding's flow is gone for good, and the phone cannot make a new one) are removed,
        so a call to the account fails at once instead of ringing a dead flow until the
        binding expires; calls on it end with ``reason`` (BYE, ``Reason: SIP;cause=503``), sent
        over it before it closes. An emergency call on it is not cut, as a drain does not cut
        one: the connection stays up, carrying that call's signalling, until the call ends.
        Rare (reloads), so walking the accounts' bindings is fine."""
        self._remove_bindings_over(flow)
        calls = self.calls
        if calls is None:
            return
        on_flow = [
            call
            for call in calls.calls
            if call.a.flow is flow or any(leg.flow is flow for leg in call.b_legs)
        ]
        kept = [call for call in on_flow if _is_emergency(calls, call)]
        ending = [call for call in on_flow if call not in kept]
        for call in ending:
            call.end_by_gateway(reason)
        if ending:
            # Their BYEs still go over this connection (the phone hears why, RFC 3326), and the
            # other leg's BYE is not held up behind an attempt to reconnect to a phone that is
            # gone (connect_timeout). At most STOP_TIMEOUT, as when the gateway stops.
            with trio.move_on_after(STOP_TIMEOUT):
                await calls.until_ended(ending)
        if kept:
            log.warning(
                "emergency call(s) %s over %s, whose certificate is revoked, go on: the "
                "connection closes when they end",
                ", ".join(call.id for call in kept),
                format_address(flow.remote),
            )
            await calls.until_ended(kept)
        if on_flow:
            self._remove_bindings_over(flow)  # any the phone registered meanwhile

    def _remove_bindings_over(self, flow: Flow) -> None:
        store = self.store
        if store is None:
            return
        over = BindingFlow(flow.transport, format_address(flow.local), format_address(flow.remote))
        try:
            bindings = [
                binding
                for account in store.accounts_list()
                for binding in store.bindings_for_account(account.name)
                if binding.flow == over
            ]
            for binding in bindings:
                store.remove_binding(binding.aor, binding.key)
        except StoreBusy as exc:
            log.warning(
                "registrations over %s (certificate revoked) left to expire: %s",
                format_address(flow.remote),
                exc,
            )
            return
        for binding in bindings:
            log.warning(
                "registration of %s at %s removed: its TLS certificate is revoked",
                redact_password(binding.aor),
                redact_password(binding.contact),
            )
        if self.presence is not None:
            # Its watchers see it closed now, not at the next look at the store.
            for account in {binding.account for binding in bindings}:
                self.presence.bindings_changed(account)

    # -- running ----------------------------------------------------------------------------

    async def serve(
        self, *, task_status: trio.TaskStatus[list[Listener]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run until cancelled. ``task_status.started`` reports the bound listeners."""
        self.check()
        for warning in did_warnings(self.config):
            log.warning("configuration: %s", warning)
        for error in self.access_warnings:
            # What the service may not write but runs without (a symbolic link to nothing
            # where a plugin makes its directory, a directory written in only now and then).
            log.warning("configuration: %s", error)
        for error in (*self.name_errors, *self.value_errors):
            # A warning, not a refusal: a gateway upgraded with such a name in its file keeps
            # carrying calls (`voipgw check-config` refuses the file).
            log.warning("configuration: %s", error)
        for name, errors in self.plugin_value_errors.items():
            # On the plugin's own logger: an interception's settings stay out of the core's.
            plugin_log = logging.getLogger(type(self.plugins.configs[name]).__module__)
            for error in errors:
                plugin_log.warning("configuration: %s", error)
        for name, notes in self.plugin_value_notes.items():
            plugin_log = logging.getLogger(type(self.plugins.configs[name]).__module__)
            for note in notes:
                plugin_log.warning("configuration: %s", note)
        for name, tap in self.plugins.media_taps.items():
            for warning in self.node_warnings.get(name, []):
                # On the tap's own logger: an interception's settings stay out of the core's.
                logging.getLogger(type(tap).__module__).warning("[plugins.%s] %s", name, warning)
        self.store = open_store(self.config, gateway=True)
        try:
            shared = self.store.shared_call_limits()
            if shared is not None:
                await self._check_node_name(shared)  # a ConfigError, before anything started
            async with trio.open_nursery() as nursery:
                await self._start(nursery)
                task_status.started(list(self.listeners))
        finally:
            # Every call has ended by now (their tasks were in the nursery): the last records.
            shared = self.store.shared_call_limits()
            close_store(
                self.store,
                self.calls.records if self.calls is not None else None,
                shared if self._counting_shared else None,
            )

    async def _check_node_name(self, shared: SharedCallLimits) -> None:
        """Refuse to start under a ``[store] node`` name another running process uses: it and
        this node would drop each other's call-limit holds and count each other's calls as
        their own. A heartbeat under the name from another instance, younger than the time
        after which a node is taken for dead, is that process's or this node's previous run's
        (killed moments ago); only a live process's moves, so it is watched for up to two
        heartbeat intervals (one may come late)."""
        seen = shared.other_instance()
        if seen is None:
            return
        name = node_name(self.config)
        wait = NAME_CHECK_BEATS * shared.heartbeat_interval
        log.info(
            "call limits: node %r has a recent heartbeat from another instance (%s): waiting "
            "up to %g s to tell a running process from this node's previous run",
            name,
            seen[0],
            wait,
        )
        deadline = trio.current_time() + wait
        while trio.current_time() < deadline:
            await trio.sleep(shared.heartbeat_interval / 4)
            now = shared.other_instance()
            if now is None:
                # Its heartbeat went (a clean stop) or aged out (a previous run killed nearly
                # node_timeout ago, or a process stalled that long, which the cluster already
                # counts as dead): no live process has the name. Said, so that the wait
                # announced above has an outcome in the log.
                log.info(
                    "call limits: node %r: the heartbeat of instance %s went or aged out while "
                    "watched: no running process has the name, it is this node's",
                    name,
                    seen[0],
                )
                return
            if now != seen:
                default = (
                    ""
                    if self.config.store.node
                    else " (unset, it defaults to this host's name and the first [sip] listen)"
                )
                other = now[0] or "of an older voipgw"
                raise ConfigError(
                    self.config.source,
                    "store",
                    "node",
                    f"{name!r}{default} is the name of another running gateway (instance "
                    f"{other}, whose heartbeat in the shared database went on while this one "
                    "waited): two nodes with one name would drop each other's call-limit holds "
                    "and count each other's calls as their own. Give each node a distinct "
                    "[store] node, or stop the other one",
                )
        log.warning(
            "call limits: node %r: the heartbeat of instance %s did not move in %g s: taken "
            "for this node's previous run (killed), whose holds are dropped",
            name,
            seen[0],
            wait,
        )

    def _prepare_tones(self) -> str:
        """Make the ringing tone's frames and say which codecs it plays them in: the start-up
        line's words. This process plays them when no media workers do; with workers it makes
        them all the same, to learn which codecs' libraries fail as each worker's will (the
        same libraries on the same host): a codec that fails is then never chosen for a
        ringback, which a worker would decline, leaving the transferee with the transferor's
        media. Before any listener is bound: it holds the event loop 0.1-0.3 s (AMR-WB's
        frames the most) and finds bcg729, libopus and opencore-amr through ldconfig, and a
        request that waited meanwhile in a socket buffer would be answered late (an OPTIONS
        probe's 200 after its sender gave up, session 62's CI) or taken for an overload
        backlog ([sip] overload_queue_delay)."""
        media = self.config.media
        failures = prepare_tone_frames(media.ringback_tone)
        for encoding, why in failures.items():
            log.warning(
                "transfer ringing tone: its %s frames could not be made (%s): never played"
                " in %s; a line that takes no other tone codec hears nothing while a"
                " transfer's target rings",
                encoding,
                why,
                encoding,
            )
        return ringback_summary(media.ringback_tone)

    async def _start(self, nursery: trio.Nursery) -> None:
        assert self.store is not None
        media = self.config.media
        tone_summary = self._prepare_tones()
        # Calls a previous run left "live" (it was killed) ended when it did.
        ended = self.store.call_records_end_unfinished(time.time(), "gateway stopped")
        if ended:
            log.info("%d call(s) left up by the previous run marked ended", ended)
        shared = self.store.shared_call_limits()
        if shared is not None:
            # Likewise their holds on the cluster's call limits (PostgreSQL): they ended too.
            shared.start()
            self._counting_shared = True
        for spec in self.config.listen_specs:
            transport = self.transport_for(spec)
            try:
                listener: Listener = await nursery.start(transport.serve, spec, self)
            except OSError as exc:
                # run_until_signal prints it as the one line saying why the gateway stops:
                # which listener, and, for a port taken, how to listen elsewhere.
                raise listen_error(spec, exc) from None
            self.listeners.append(listener)
        domains = local_domains(self.listeners, self.config.gateway.domains)
        sip = self.config.sip
        if sip.nat_keepalive_interval > 0:
            self.nat_keepalive = NatKeepalive(
                self.endpoint,
                self.store,
                self.ids,
                interval=sip.nat_keepalive_interval,
                t1=sip.t1,
                user_agent=sip.user_agent,
                clock=time.time,
            )
            self.nat_keepalive.load(self._bindings_on_our_listeners())
        self.registration = RegistrationService(
            self.store,
            realm=self.config.gateway.realm,
            algorithms=self.config.gateway.digest_algorithms,
            domains=domains,
            new_tag=self.ids.new_tag,
            on_registered=self._on_registered_callback(),
            failure_policy=FailurePolicy(
                max_failures=self.config.gateway.auth_max_failures,
                window=self.config.gateway.auth_failure_window,
                block_time=self.config.gateway.auth_block_time,
                ipv6_prefix_length=self.config.gateway.auth_ipv6_prefix_length,
            ),
            # Monotonic: a ban of auth_block_time lasts that long whatever NTP does.
            failure_clock=trio.current_time,
            auth_proxies=AuthProxies(self.config.gateway.auth_proxies),
            limits=self.config.registrar,
        )
        if any(trunk.enabled and trunk.by_name for trunk in self.config.trunks):
            dns = self.config.dns
            self.trunk_targets = TrunkTargets(
                self.config.trunks,
                dns,
                self._dns_resolver or DnsPythonResolver(dns.servers, dns.timeout),
                rng=self._dns_rng or random.Random(),
                on_unresolved=self.trunk_health.unresolved,
                on_resolved=self.trunk_health.resolved,
                on_change=self._trunk_resolved,
                transports=self.dns_transports(),
            )
            # Resolved before calls are taken; start-up waits at most [dns] timeout for it.
            await nursery.start(self.trunk_targets.serve)
        named_sessions = self.session_target_names()
        if named_sessions:
            dns = self.config.dns
            self.session_targets = TrunkTargets(
                (),
                dns,
                self._dns_resolver or DnsPythonResolver(dns.servers, dns.timeout),
                rng=self._dns_rng or random.Random(),
                on_unresolved=_nothing_to_mark,
                on_resolved=_nothing_to_mark,
                on_change=self._session_target_resolved,
                transports=self.dns_transports(),
                named=named_sessions,
                what="session target",
            )
            # As the trunks': resolved (at most [dns] timeout) before calls are taken; a name
            # that does not resolve then is logged and its sessions refused until it does.
            await nursery.start(self.session_targets.serve)
        self.directory = GatewayDirectory(
            self.store,
            self.flows,
            self.config.trunks,
            domains,
            now=time.time,
            numbering=self.config.numbering,
            trunk_up=self.trunk_health.is_up,
            trunk_targets=self.trunk_targets,
        )
        if media.workers > 1:
            self.media_workers = WorkerPool(
                media.address,
                self.config.media_ports,
                media.workers,
                log_level=self.config.gateway.log_level,
                plugin_exception_text=self.config.gateway.log_plugin_exception_text,
                ready_within=media.worker_ready_timeout,
                ringback_tone=media.ringback_tone,
            )
            await nursery.start(self.media_workers.serve)
        else:
            self.relay = MediaRelay(PortAllocator(media.address, self.config.media_ports))
            await nursery.start(self.relay.serve)
        nursery.start_soon(self._housekeeping)
        await self._start_plugin_tasks(nursery)
        self.calls = CallManager(self, nursery)
        self.endpoint.calls = self.calls
        self.dialog_events = DialogEvents(self, nursery)
        self.calls.dialog_events = self.dialog_events
        if self.config.presence.allow != "none":
            self.presence = Presence(self, nursery, self.dialog_events)
            self.endpoint.presence = self.presence
            nursery.start_soon(self.presence.run)
            if self.dialog_events.registrations is not None or self.store is not None:
                nursery.start_soon(self.presence.follow_store)
        self.subscriptions = Subscriptions(self, nursery)
        self.endpoint.subscriptions = self.subscriptions
        nursery.start_soon(self.subscriptions.run)
        self.messages = Messages(self, nursery)
        self.endpoint.messages = self.messages
        await nursery.start(self.endpoint.run, self._inbound)
        prober = TrunkProber(
            self.config.trunks,
            self.trunk_health,
            self.endpoint,
            self.ids,
            t1=self.config.sip.t1,
            user_agent=self.config.sip.user_agent,
            targets=self.trunk_targets,
        )
        if prober.trunks:
            nursery.start_soon(prober.run)
        if self.nat_keepalive is not None:
            nursery.start_soon(self.nat_keepalive.run)
        for trunk in registering(self.config.trunks):
            registration = TrunkRegistration(
                trunk,
                self.endpoint,
                self.ids,
                t1=self.config.sip.t1,
                user_agent=self.config.sip.user_agent,
                targets=self.trunk_targets,
            )
            self.trunk_registrations[trunk.name] = registration
            nursery.start_soon(registration.run, name=f"registration with {trunk.name}")
        # What `voipgw calls` asks a running gateway: its live calls' quality now.
        await nursery.start(serve_control, socket_path(self.state_dir), self.control_answer)
        # Before "ready", which operators' scripts and our tests wait for: finding the tone's
        # codec libraries runs ldconfig (ctypes.util.find_library), a child process nobody
        # expects once the gateway says it is up (they were found before the listeners).
        log.info("media relay: %s", relay_build())
        log.info("transfer ringing tone: %s", tone_summary)
        log.info("voipgw ready: %s", self.listening())

    def listening(self) -> str:
        """The listeners, as the ready line says them: ``udp:127.0.0.1:5060, ...``."""
        return ", ".join(f"{lst.transport}:{format_address(lst.address)}" for lst in self.listeners)

    async def drain(self, timeout: float) -> None:
        """Stop taking calls and wait, at most ``timeout`` seconds, for those in progress to end
        (``[gateway] drain_timeout``: a restart for an upgrade without cutting calls). From now
        on a new INVITE (but to an emergency number) is answered ``503 Service Unavailable``,
        which a trunk's proxy takes as "try the next gateway" (RFC 3261 §21.5.4, no
        Retry-After: only that call), and so is an OPTIONS, whose answer must be the one an
        INVITE would get (§11.2): the proxies' health checks (Kamailio's dispatcher, OpenSIPS'
        load balancer) take the gateway out of rotation. Every other new request outside a
        dialog (REGISTER but one that only removes bindings, SUBSCRIBE, MESSAGE, NOTIFY, ...)
        gets that 503 too, so that phones and trunks move to another node (RFC 3263 §4.3);
        requests within calls, ACK and CANCEL are served (SipEndpoint._dispatch). Registrations
        with carriers are removed at once, so they stop sending calls, and subscriptions are
        ended at once (:meth:`end_subscriptions`), so that their phones subscribe again on
        another node. Calls still up when ``timeout`` runs out are ended as the gateway's
        doing: BYE on both legs with ``Reason: SIP;cause=503``, or 503 to a caller still
        ringing; but calls to emergency numbers, which a planned stop must not cut, are still
        waited for (a second signal stops at once)."""
        self.draining = True
        calls = self.calls
        live = len(calls.calls) if calls is not None else 0
        log.info(
            "draining: new calls and other requests outside calls refused (503); waiting up "
            "to %g s for %d call(s) in progress to end (signal again to stop at once)",
            timeout,
            live,
        )
        with trio.move_on_after(timeout):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._remove_trunk_registrations)
                nursery.start_soon(self.end_subscriptions)
                if calls is not None:
                    nursery.start_soon(calls.until_no_calls)
        if calls is None or not calls.calls:
            log.info("drained: no calls in progress")
            return
        log.warning("drain_timeout reached: ending %d call(s)", len(calls.calls))
        await self.end_calls(spare_emergency=True)
        if calls.calls:
            log.warning(
                "draining: %d emergency call(s) still up; the gateway stops when they end "
                "(signal again to stop at once)",
                len(calls.calls),
            )
            await calls.until_no_calls()

    async def end_calls(
        self, timeout: float = STOP_TIMEOUT, *, spare_emergency: bool = False
    ) -> None:
        """End every call in progress as the gateway's doing (it stops): BYE on both legs with
        ``Reason: SIP;cause=503``, or 503 to a caller still ringing, so that phones and
        carriers do not hold a call whose media is gone until their own timers notice. At most
        ``timeout`` seconds: a leg that does not answer its BYE is not waited for. With
        ``spare_emergency``, calls whose caller dialled an emergency number go on."""
        calls = self.calls
        if calls is None or not calls.calls:
            return
        ending = [
            call for call in calls.calls if not (spare_emergency and _is_emergency(calls, call))
        ]
        for call in ending:
            call.end_by_gateway("gateway shutting down")
        with trio.move_on_after(timeout):
            await calls.until_ended(ending)

    async def _remove_trunk_registrations(self) -> None:
        with trio.move_on_after(STOP_TIMEOUT):
            async with trio.open_nursery() as nursery:
                for registration in self.trunk_registrations.values():
                    nursery.start_soon(registration.remove)

    def reload_certificates(self) -> list[ReloadReport]:
        """Have every plugin that holds certificates read its files again (SIGHUP): new
        handshakes use what loaded, connections up keep theirs; a plugin whose new files fail
        keeps its previous ones (logged with the file and the reason). The config file is not
        read again. Runs on the event loop: plugins read a few files each."""
        return self.certificate_reloads.reload()

    async def reload_certificates_async(self) -> list[ReloadReport]:
        """:meth:`reload_certificates` as SIGHUP runs it: a plugin with slow parts (the ``tls``
        transport's contexts with a CRL of some MiB) runs them off the event loop, so calls
        go on meanwhile (gateway/core/reload.py)."""
        return await self.certificate_reloads.reload_async()

    async def before_stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """What must happen while everything still runs, before the gateway is cancelled: the
        registrations with carriers are removed (their REGISTER with Expires: 0 answered,
        challenge included), so a carrier stops sending calls at once instead of when the
        registration runs out; subscriptions are ended (:meth:`end_subscriptions`). At most
        ``timeout`` seconds."""
        with trio.move_on_after(timeout):
            async with trio.open_nursery() as nursery:
                for registration in self.trunk_registrations.values():
                    nursery.start_soon(registration.remove)
                nursery.start_soon(self.end_subscriptions, timeout)

    async def end_subscriptions(self, timeout: float = STOP_TIMEOUT) -> None:
        """End every subscription (the gateway drains or stops), each with a final NOTIFY
        ``Subscription-State: terminated;reason=deactivated`` (RFC 6665 §4.2.2: subscribe again
        at once, which finds another node or this one restarted): dialog (BLF) and presence
        subscriptions, and message-summary ones, which are unsubscribed at the voicemail trunk
        too (§4.1.2.3). At most ``timeout`` seconds: a phone that does not answer its NOTIFY is
        not waited for. From now on new subscriptions get 503."""
        with trio.move_on_after(timeout):
            async with trio.open_nursery() as nursery:
                if self.subscriptions is not None:
                    nursery.start_soon(self.subscriptions.stop)
                if self.dialog_events is not None:
                    nursery.start_soon(self.dialog_events.stop)

    async def _start_plugin_tasks(self, nursery: trio.Nursery) -> None:
        """The tasks of capture agents, media taps (HEP's sender, interception's X1 server
        and delivery links), monitoring services (the metrics exporter) and caller-identity
        services (STIR/SHAKEN's certificate fetches), each object's once.
        A ``run`` that takes ``task_status`` is waited for: until it says it started, a failure
        (the X1 or metrics port taken) stops the gateway's start-up like a listener's would;
        after, a failure is logged and the gateway goes on. Services get the status view."""
        runners: dict[int, tuple[str, Any, tuple[object, ...]]] = {}
        for capture in self.endpoint.captures:
            runners[id(capture)] = (str(getattr(capture, "name", capture)), capture, ())
        for name, tap in self.plugins.media_taps.items():
            if callable(getattr(tap, "run", None)):
                runners.setdefault(id(tap), (name, tap, ()))
        for name, service in self.plugins.services.items():
            runners.setdefault(id(service), (name, service, (self.status,)))
        for name, identity in self.plugins.caller_identity.items():
            # STIR/SHAKEN's: the nursery its certificate fetches run in, whichever call waits.
            # Optional in this protocol since session 38 only: an ``async def run`` is taken
            # for it, not any ``run`` a service written before (a plain method) happens to have.
            if inspect.iscoroutinefunction(getattr(identity, "run", None)):
                runners.setdefault(id(identity), (name, identity, ()))
        for name, runner, args in runners.values():
            if "task_status" in inspect.signature(runner.run).parameters:
                await nursery.start(_run_plugin_task, name, runner, args)
            else:
                nursery.start_soon(_run_plugin_task, name, runner, args)


def run_until_signal(gateway: Gateway) -> int:
    """Run ``gateway`` until SIGINT or SIGTERM; returns the process exit code. With
    ``[gateway] drain_timeout``, the first signal drains (:meth:`Gateway.drain`) and the gateway
    stops once no call is left or the time ran out; a second signal stops it at once. Calls
    still up are ended with BYE (:meth:`Gateway.end_calls`) before the gateway stops. SIGHUP
    reloads the plugins' certificates (systemd's ``ExecReload=/bin/kill -HUP $MAINPID``) and
    never stops the gateway, nor starts or ends a drain. Under systemd each of these is told to
    it too (systemd_notify.py: ready, reloading, stopping, and the watchdog's pings)."""

    drain_timeout = gateway.config.gateway.drain_timeout
    systemd = SystemdNotifier()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
                await nursery.start(gateway.serve)
                systemd.ready(f"ready: {gateway.listening()}")
                nursery.start_soon(systemd.run_watchdog)
                stop = trio.Event()

                async def drain_then_stop() -> None:
                    await gateway.drain(drain_timeout)
                    stop.set()

                async def on_signals() -> None:
                    # A SIGHUP that came during start-up waited here: it reloads once started.
                    async for signum in signals:
                        name = signal.Signals(signum).name
                        if signum == signal.SIGHUP:
                            log.info(
                                "received SIGHUP: reloading certificates (not the config file)"
                            )
                            # A draining gateway told systemd it stops: not "reloading".
                            # (Signals are taken one at a time: no drain starts meanwhile.)
                            serving = not gateway.draining
                            if serving:
                                systemd.reloading()
                            # Awaited: a second SIGHUP reloads after this one ended.
                            await gateway.reload_certificates_async()
                            if serving:
                                systemd.ready(f"ready: {gateway.listening()}")
                            continue
                        if drain_timeout and not gateway.draining:
                            log.info("received %s: draining before the stop", name)
                            systemd.stopping(f"draining, up to {drain_timeout:g} s")
                            nursery.start_soon(drain_then_stop)
                            continue
                        log.info("received %s: shutting down", name)
                        systemd.stopping("stopping")
                        stop.set()
                        return

                nursery.start_soon(on_signals)
                await stop.wait()
                await gateway.end_calls()
                await gateway.before_stop()
                nursery.cancel_scope.cancel()

    # SIGHUP's default action ends the process: ignored outside the receiver above too (while
    # the nursery winds down, the store flushes its last call records).
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        trio.run(main)
    except (OSError, StoreError, ExceptionGroup) as exc:
        # A port taken, an address not ours, a database that cannot be reached: said in one
        # line, whichever nursery it came through (trio groups what a nursery's tasks raise);
        # a configuration mistake found at start-up ([store] node) goes to the CLI, which
        # says it as any other; anything else is a bug's traceback.
        if isinstance(exc, OSError | StoreError):
            errors: list[BaseException] = [exc]
        else:
            matched, rest = exc.split((OSError, StoreError, ConfigError))
            if matched is None or rest is not None:
                raise
            errors = _leaves(matched)
            for error in errors:
                if isinstance(error, ConfigError):
                    raise error from None
        for error in errors:
            # A plugin's OSError may carry any text it had in hand: a third-party plugin's
            # only as the errno's name and the system's words (logs.startup_error_text).
            text = startup_error_text(error) if isinstance(error, OSError) else str(error)
            log.error("cannot run: %s", text)
        return 1
    finally:
        signal.signal(signal.SIGHUP, previous)
    return 0


def listen_error(spec: ListenSpec, exc: OSError) -> OSError:
    """``exc``, raised opening the SIP listener ``spec``, as an operator reads it: the
    listener, the system's reason and, for an address in use (another voipgw, or another SIP
    server, on the default 5060), what to change. The reason is the operating system's text
    for the errno (``os.strerror``), never the exception's ``strerror``, which a third-party
    transport may set to anything it had in hand (logs.transport_error_text's rule)."""
    reason = os.strerror(exc.errno) if exc.errno else transport_error_text(exc)
    text = f"cannot listen on {spec}: {reason}"
    if exc.errno == errno.EADDRINUSE:
        text += (
            " (another program listens there: stop it, or give voipgw other ports with "
            "--listen or [sip] listen)"
        )
    if exc.errno is None:
        return OSError(text)  # not "[Errno None] cannot listen on ..."
    return OSError(exc.errno, text)


def _dns_status(status: TrunkDnsStatus, now: float, wall: float) -> dict[str, object]:
    """A name's DNS status for the control socket, its times in Unix time (``now`` the trio
    clock's reading at ``wall``)."""
    return {
        "targets": [str(hop) for hop in status.targets],
        "resolved_at": None if status.resolved_at is None else wall + status.resolved_at - now,
        "next_resolution_at": None if status.next_at is None else wall + status.next_at - now,
        "ttl": status.ttl,
        "error": status.error,
    }


def _nothing_to_mark(*_: object) -> None:
    """A session target's name (re)solved or not: nothing to mark, unlike a trunk's health;
    trunk_dns.py logs it."""


def _is_emergency(calls: CallManager, call: Call) -> bool:
    """A call to an emergency number, or a PSAP's callback: what a drain and a revoked
    certificate leave up."""
    invite = call.a.invite
    return invite is not None and (call.psap_callback or calls.calls_emergency_number(invite))


def _leaves(group: BaseExceptionGroup[Any]) -> list[BaseException]:
    found: list[BaseException] = []
    for exc in group.exceptions:
        found += _leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc]
    return found


async def _run_plugin_task(
    name: str,
    runner: Any,
    args: tuple[object, ...],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """A plugin's own task (a capture agent's sender, a tap's X1 server, a service), ``run``
    called with ``args``. Started with ``task_status`` when its ``run`` takes one: a failure
    before it started is the start-up's; any other failure is logged, never the gateway's
    end."""
    started = False

    class _Started:
        def started(self, value: object = None) -> None:
            nonlocal started
            started = True
            task_status.started()

    try:
        if "task_status" in inspect.signature(runner.run).parameters:
            await runner.run(*args, task_status=_Started())
        else:
            task_status.started()
            started = True
            await runner.run(*args)
    except Exception:
        if not started:
            raise
        log_exception(log, "plugin task %s stopped with an error", name)


def _store_files_writable(path: Path) -> bool:
    """Whether the SQLite store in ``path`` (its file, ``-wal`` and ``-shm``) exists and this
    process's user may write each: then it opens without writing in the directory. As root
    (which may write any file), whether the directory's owner may: each file its, ``u+w``."""
    files = [path / f"{DB_FILENAME}{suffix}" for suffix in ("", "-wal", "-shm")]
    if not all(os.access(file, os.W_OK) for file in files):
        return False
    if os.geteuid() != 0:
        return True
    try:
        owner = os.stat(path).st_uid
        infos = [os.stat(file) for file in files]
    except OSError:
        return False
    return all(info.st_uid == owner and info.st_mode & stat.S_IWUSR for info in infos)


def _written_entry(name: str, entry: Any) -> tuple[str, Path, str, Sequence[str], bool]:
    """A plugin's ``written_directories()`` entry: ``(KEY, DIRECTORY, WHAT, FILES)``, or with
    :data:`WARN_ONLY` as a fifth element; (key, directory, what, files, warn only). Another
    shape is the plugin's error, naming it, and so is a KEY that is not a text or a DIRECTORY
    that is not a path (getattr and Path raised TypeError, a traceback). A list is taken as a
    tuple (the entries were unpacked, which took either)."""
    if isinstance(entry, list | tuple) and (len(entry) == 4 or tuple(entry[4:]) == (WARN_ONLY,)):
        key, directory, what, files = entry[:4]
        if isinstance(key, str) and isinstance(directory, str | os.PathLike):
            if not isinstance(files, list | tuple) or not all(isinstance(n, str) for n in files):
                # "a.db" for ("a.db",) was checked letter by letter (files a, ., d, b), and
                # the file meant never.
                hint = f" (one name is written ({files!r},))" if isinstance(files, str) else ""
                raise PluginError(
                    f"plugin {name!r}: written_directories() gives {entry!r}: FILES "
                    f"must be a tuple of file names, got {files!r}{hint}"
                )
            return key, Path(directory), what, files, len(entry) == 5
    raise PluginError(
        f"plugin {name!r}: written_directories() gives {entry!r}: expected (KEY, DIRECTORY, "
        f"WHAT, FILES), or with {WARN_ONLY!r} as a fifth element"
    )


def _owned_by_me(path: Path) -> bool:
    """Whether this process's effective user owns ``path`` (False when it cannot be stat'ed)."""
    try:
        return os.stat(path).st_uid == os.geteuid()
    except OSError:
        return False


#: How a :data:`WARN_ONLY` entry's warnings end: what ``voipgw run`` does about it.
_RUNS_WITHOUT_IT = "`voipgw run` starts, and runs without it"


def _unread_message(
    shown: str, owner: str, reader: str, what: str, chown_to: str | None = None
) -> str:
    """``PATH is owned by OWNER and not readable by READER: chown it to USER or remove it
    (WHAT)``; ``chmod u+r`` when the file is the reader's own already."""
    user = chown_to or reader
    remedy = "chmod u+r it" if owner == user else f"chown it to {user}"
    return (
        f"{shown} is owned by {owner} and not readable by {reader}: {remedy} or remove it ({what})"
    )


def _read_entry(name: str, entry: Any) -> tuple[str, Path, str, bool]:
    """A plugin's ``read_files()`` entry ``(KEY, PATH, WHAT)``, or with :data:`WARN_ONLY` as a
    fourth element (then True); another shape is the plugin's error, naming it and the
    entry."""
    if isinstance(entry, list | tuple) and (len(entry) == 3 or tuple(entry[3:]) == (WARN_ONLY,)):
        key, path, what = entry[:3]
        if isinstance(key, str) and isinstance(path, str | os.PathLike) and isinstance(what, str):
            return key, Path(path), what, len(entry) == 4
    raise PluginError(
        f"plugin {name!r}: read_files() gives {entry!r}: expected (KEY, PATH, WHAT), or "
        f"with {WARN_ONLY!r} as a fourth element"
    )


def _holds_every_file(directory: Path, names: Sequence[str], configured: Path) -> bool:
    """Whether every file named ``names`` (all a plugin writes in ``directory``:
    ``written_directories()``) is in ``directory`` and may be written, on a file system that
    is not read-only: tried (open(2) for writing) as this user; as root, which may write any
    file, by the mode for the owner of ``configured`` (:func:`_owner_may_not_write_file`)."""
    if not names or on_read_only_file_system(directory):
        return False
    for name in names:
        path = directory / name
        if not path.is_file():
            return False
        if os.geteuid() == 0:
            if _owner_may_not_write_file(path, configured) is not None:
                return False
        elif not may_open(path, os.O_WRONLY):
            return False
    return True


def _describe_file(path: Path) -> str:
    try:
        info = os.stat(path)
    except OSError:
        return "its mode cannot be read"
    return f"mode {stat.S_IMODE(info.st_mode):04o}, owner {owner_name(path)}"


def _owner_may_not_write_file(path: Path, directory: Path) -> str | None:
    """For root: the owner of ``directory`` (a state directory: most likely the user
    ``voipgw run`` created it as) when the mode of the file ``path`` keeps that user from
    writing it, else None (it may, root owns the directory, or it cannot be told: an ACL)."""
    try:
        info, owner = os.stat(path), os.stat(directory).st_uid
    except OSError:
        return None
    if owner == 0:
        return None
    try:
        if os.getxattr(path, "system.posix_acl_access"):
            return None
    except (AttributeError, OSError):
        pass  # none (ENODATA), or no xattrs here: the mode says it
    if info.st_uid == owner:
        may = bool(info.st_mode & stat.S_IWUSR)
    else:
        may = bool(info.st_mode & (stat.S_IWGRP | stat.S_IWOTH))  # a group's: not told
    return None if may else owner_name(directory)


def _write_remedy(path: Path, uid: int, user: str) -> str:
    """What lets ``user`` (``uid``) write the file ``path``: ``chmod u+w`` when the file is
    its already (a chown to its owner changes nothing), else ``chown``."""
    try:
        owned = os.stat(path).st_uid == uid
    except OSError:
        owned = False
    return f"chmod u+w {path}" if owned else f"chown {user} {path}"


def _creates_a_file_in(path: Path) -> bool:
    """Whether this process creates a file in the directory ``path``, tried (and removed):
    what ``os.access`` answers is the real user's permission bits as this host sees them,
    which a network file system or a capability may overrule."""
    try:
        fd, name = tempfile.mkstemp(prefix=".voipgw-check-", dir=path)
    except OSError:
        return False
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(name)
    return True
