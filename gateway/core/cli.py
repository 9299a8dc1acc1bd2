"""The ``voipgw`` command.

Exit codes (issue #2): 0 ok, 2 usage or configuration error, 1 runtime failure.
"""

from __future__ import annotations

import argparse
import contextvars
import gc
import logging
import os
import sys
import textwrap
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from gateway import __version__
from gateway.core import config as config_mod
from gateway.core import open_files
from gateway.core.calls.protection import describe_auth, describe_leg
from gateway.core.config import ConfigError, GatewayConfig, TrunkAddress
from gateway.core.interfaces import MediaPolicy
from gateway.core.logs import LineFormatter, log_exception, show_plugin_exception_text
from gateway.core.media.policy import BUILTIN_POLICIES, DEFAULT_POLICY, all_policies
from gateway.core.plugins import (
    DiscoveredPlugin,
    PluginConfigError,
    PluginError,
    Plugins,
    discover,
    load_plugins,
)
from gateway.core.store.errors import StoreError

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
"""A one-shot command stopped by SIGINT (Ctrl-C) before it was done: 128 + SIGINT, the
shell's status for a command a SIGINT ended, so ``voipgw migrate-store && start`` does not go
on. ``run`` is stopped by SIGINT as by SIGTERM, and that stop is its success: 0."""
MIGRATE_WAIT = 600.0
"""Seconds ``voipgw migrate-store`` waits for another session's build of the retention index by
default: a node that started first builds it in minutes on tens of millions of records, and an
upgrade script's next step (starting this node) should not fail for that."""
LOG_LEVEL_WORDS = {
    "debug": "everything, with the details a fault is found by: each SIP message received and "
    "sent (its first line, Call-ID and CSeq), TLS handshakes, connections closing (verbose: "
    "not for production)",
    "info": "what the gateway does (start-up, calls, peers coming and going), and what follows",
    "warning": "what is wrong but goes on (a failing peer, a refused handshake), and errors",
    "error": "only what fails",
}
"""``--log-level``'s words for each of :data:`config.LOG_LEVELS` (a test checks it says each
one and no other)."""
MAX_CALLS_HELP = (
    "calls in progress from or to the account at once (0: no limit); past it a call from it "
    "gets 403, a call to it 486"
)

log = logging.getLogger("gateway")


def _seconds(text: str) -> float:
    """A non-negative number of seconds (argparse type: anything else is a usage error)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"not a number of seconds, 0 or more: {text!r}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on usage errors already; keep the message on stderr and that code."""


class _ListFormatter(argparse.HelpFormatter):
    """Help texts wrapped as argparse does, except that a line break in one is kept: a list of
    names, one per line, each with its words (``--media-policy``, ``--log-level``). Hyphens do
    not break a line: ``best-effort`` is a name to type whole."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return [
            wrapped
            for line in text.splitlines()
            for wrapped in textwrap.wrap(
                " ".join(line.split()),
                width,
                subsequent_indent="    " if line.startswith("- ") else "",
                break_on_hyphens=False,
            )
        ]


def name_list(items: Iterable[tuple[str, str]]) -> str:
    """Names and their words as :class:`_ListFormatter` shows them: one per line."""
    return "".join(f"\n- {name}: {words}" for name, words in items)


def media_policy_help(policies: Mapping[str, MediaPolicy], *, default: str | None) -> str:
    """``--media-policy``'s help: each name ``policies`` holds (what the option accepts) with
    its description."""
    said = f" (default: {default})" if default is not None else ""
    listed = name_list((name, policy.description) for name, policy in policies.items())
    return f"the account's media security policy{said}, one of:{listed}"


def listen_help(transports: Iterable[tuple[str, Any]]) -> str:
    """``--listen``'s help: each transport name the plugins registered (what a listener may
    name, :meth:`Gateway.transport_for`), with what it is. A third-party transport whose
    ``reliable`` or ``secure`` raises (a property with a bug) is listed all the same, what it
    is said as not known, and the error said once at WARNING with its traceback (its text
    withheld, as any plugin code's), as the metrics scrape says it (status._plugin_figures);
    this help ran into it unguarded and ended in a traceback instead."""
    rows = []
    for name, transport in transports:
        try:
            carries = "connections" if transport.reliable else "datagrams"
            guards = "encrypted (TLS)" if transport.secure else "not encrypted"
        except Exception as exc:
            log_exception(
                log,
                "the transport plugin %s raised reading its reliable/secure: listed in"
                " --listen's help as not known",
                name,
                exc=exc,
                level=logging.WARNING,
            )
            rows.append((name, f"not known: the plugin raised {type(exc).__name__}"))
            continue
        rows.append((name, f"{carries}, {guards}"))
    return (
        "SIP listener, e.g. udp:127.0.0.1:5060 (repeatable; replaces [sip] listen); TRANSPORT "
        f"is one of the enabled transports:{name_list(rows)}"
    )


class _ConfigHelp(argparse.Action):
    """``-h``/``--help`` of the commands whose options take names the configuration decides:
    ``accounts add`` and ``accounts set`` (``--media-policy``: the built-in policies and those
    the enabled plugins register, the list :func:`_check_media_policy` checks a name against)
    and ``run`` (``--listen``: the enabled transport plugins, the list a listener is checked
    against). The configuration is ``--config``'s wherever it is on the command line (the
    last one, as argparse takes it; argparse stops at ``--help``, so one after it is looked
    for in the arguments :func:`main` was given), else the embedded defaults; one that cannot
    be read leaves the embedded defaults' names, said as such."""

    HELP = (
        "show this help message and exit (with --config FILE, before or after it: with the "
        "names that configuration's plugins provide)"
    )

    def __init__(self, option_strings: Sequence[str], dest: str, help: str | None = None) -> None:
        super().__init__(
            option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, nargs=0, help=help
        )

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        path = _config_in(parser, _ARGV.get()) or getattr(namespace, "config", None)
        note = ""
        try:
            plugins = _load_plugins(_load_config(path), None)
        except (ConfigError, PluginError, OSError) as exc:
            plugins = _load_plugins(config_mod.embedded_defaults(), None)
            note = f"\n(the embedded defaults' names: {exc})"
        for action in parser._actions:
            if "--media-policy" in action.option_strings:
                default = action.default if isinstance(action.default, str) else None
                policies = all_policies(plugins.media_policies.items())
                action.help = media_policy_help(policies, default=default) + note
            elif "--listen" in action.option_strings:
                action.help = listen_help(plugins.transports.items()) + note
        parser.print_help()
        parser.exit()


_ARGV: contextvars.ContextVar[Sequence[str]] = contextvars.ContextVar("argv", default=())
"""The arguments :func:`main` parses, for :class:`_ConfigHelp` (argparse hands an action
only its own values)."""


def _config_in(parser: argparse.ArgumentParser, argv: Sequence[str]) -> str | None:
    """The last ``--config`` value in ``argv`` as ``parser`` reads it: ``--config FILE``,
    ``--config=FILE`` or an abbreviation argparse takes (``--conf``, when no other option of
    ``parser`` starts so); none after ``--`` (positional arguments from there)."""
    path = None
    index = 0
    while index < len(argv):
        token = argv[index]
        if token == "--":
            break
        name, equals, value = token.partition("=")
        if name.startswith("--") and len(name) > 2 and "--config".startswith(name):
            options = [o for o in parser._option_string_actions if o.startswith(name)]
            if options == ["--config"]:
                if equals:
                    path = value
                elif index + 1 < len(argv):
                    path = argv[index + 1]
                    index += 1
        index += 1
    return path


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="voipgw",
        description="Secure SIP media gateway: terminates each call leg with the encryption that "
        "device supports and bridges media between legs.",
    )
    parser.add_argument("--version", action="version", version=f"voipgw {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = sub.add_parser(
        "run",
        formatter_class=_ListFormatter,
        add_help=False,
        help="run the gateway",
        description="Run the gateway. With no --config it runs on the embedded defaults: SIP on "
        "127.0.0.1:5060 over UDP and TCP and 5061 over TLS, media on 127.0.0.1 ports "
        "30000-30999, state in ./voipgw-state. SIGINT or SIGTERM stops it; SIGHUP reloads "
        "the TLS certificates, keys and CA files (not the config file), calls going on.",
    )
    run.add_argument("-h", "--help", action=_ConfigHelp, help=_ConfigHelp.HELP)
    run.add_argument("--config", metavar="FILE", help="TOML configuration file")
    run.add_argument(
        "--listen",
        metavar="TRANSPORT:HOST:PORT",
        action="append",
        help="SIP listener, e.g. udp:127.0.0.1:5060 (repeatable; replaces [sip] listen); "
        "TRANSPORT: an enabled transport plugin's name (--help lists them)",
    )
    run.add_argument(
        "--state-dir", metavar="DIR", help="state directory (replaces [gateway] state_dir)"
    )
    run.add_argument("--media-address", metavar="IP", help="media relay address ([media] address)")
    run.add_argument("--media-ports", metavar="LOW-HIGH", help="media port range ([media] ports)")
    run.add_argument(
        "--log-level",
        choices=config_mod.LOG_LEVELS,  # what [gateway] log_level takes
        metavar="LEVEL",
        help="the least severe messages logged (default: [gateway] log_level, info unless set), "
        "one of:" + name_list((level, LOG_LEVEL_WORDS[level]) for level in config_mod.LOG_LEVELS),
    )
    _plugin_text_option(run)

    plugins = sub.add_parser(
        "plugins",
        help="list installed plugins",
        description="List every installed voipgw plugin (entry point group voipgw.plugins): name, "
        "distribution and version, whether the configuration enables it, and what it registers.",
    )
    plugins.add_argument("--config", metavar="FILE", help="TOML configuration file")
    _plugin_text_option(plugins)

    check = sub.add_parser(
        "check-config",
        help="validate a configuration file",
        description="Validate FILE and the plugin tables it enables without opening a socket.",
    )
    check.add_argument("file", metavar="FILE")
    check.add_argument(
        "--resolve",
        action="store_true",
        help="also resolve each trunk named by DNS once, as [dns] says (the gateway does so at "
        "start-up), and print its targets in the order calls try them, or why it fails",
    )
    check.add_argument(
        "--intercept",
        action="store_true",
        help="also report the validity of the [plugins.intercept] certificates (for those "
        "cleared for lawful interception; without it nothing is said of them)",
    )
    _plugin_text_option(check)

    sub.add_parser(
        "metrics-password",
        help="hash a password for [plugins.metrics] basic_auth_users",
        description="Print the scrypt hash (scrypt$N$r$p$SALT$HASH) of a password, to put in "
        "[plugins.metrics] basic_auth_users: the gateway stores and reads only the hash. The "
        "password is the first line of standard input, or asked twice without echo when "
        "standard input is a terminal.",
    )

    migrate = sub.add_parser(
        "migrate-store",
        help="bring the store's schema up to date",
        description="Bring the store's schema up to this voipgw's version and, for PostgreSQL, "
        "build call record retention's index (CREATE INDEX CONCURRENTLY: call records are "
        "saved meanwhile; minutes on tens of millions of records), then exit. Every voipgw "
        "command migrates; this one says to which version, and builds the index whatever the "
        "table's size. Run it with a config whose [store] dsn names the role that owns the "
        "tables when the nodes' role may only read and write them (they cannot migrate).",
        epilog="Exit status: 0 the schema is at this voipgw's version and the index is built; "
        "1 it is not: the database could not be reached, a migration failed or was refused "
        "(a newer schema, a privilege missing), or the index is not built (another session's "
        "build still going after --wait, a build that failed, a role that may not build it); "
        "2 a usage or configuration error; 130 interrupted (SIGINT, Ctrl-C), its --wait "
        "included. Progress goes to standard error.",
    )
    migrate.add_argument("--config", metavar="FILE", help="TOML configuration file")
    migrate.add_argument("--state-dir", metavar="DIR", help="state directory (default: as run)")
    migrate.add_argument(
        "--wait",
        metavar="SECONDS",
        type=_seconds,
        default=MIGRATE_WAIT,
        help="PostgreSQL: how long to wait for another session's build of the index (a node "
        "starting, or a CREATE INDEX CONCURRENTLY run by hand) to end, then build it if that "
        f"build did not (default: {MIGRATE_WAIT:g}; 0: do not wait)",
    )

    trunks = sub.add_parser(
        "trunks",
        help="show the trunks of the running gateway",
        description="Show each trunk of the running gateway (asked over "
        "<state_dir>/control.sock): its address, whether it is up (and why not) and registered, "
        "and for a trunk named by DNS the targets its name resolved to (RFC 3263: in priority "
        "order), when that answer came, when the name is asked next, and why the last "
        "resolution failed, if it did; then the same for each session target named by DNS (a "
        'SIPREC recorder\'s URI). With --json, one list: each entry\'s "kind" is "trunk" '
        'or "session target".',
    )
    trunks.add_argument("--config", metavar="FILE", help="read [gateway] state_dir here")
    trunks.add_argument("--state-dir", metavar="DIR", help="state directory (default: as run)")
    trunks.add_argument("--json", action="store_true", help="machine-readable output")

    calls = sub.add_parser(
        "calls",
        help="list calls and how each leg is protected",
        description="List live calls (or recent ones with --recent) from the gateway's store, "
        "with each leg's signalling transport, key exchange and SRTP suite, and for live calls "
        "each leg's quality now by its phone's RTCP reports (loss, jitter, RTT, MOS, and how old "
        "the last report is), asked of the running gateway over <state_dir>/control.sock.",
    )
    calls.add_argument("--config", metavar="FILE", help="read [gateway] state_dir here")
    calls.add_argument("--state-dir", metavar="DIR", help="state directory (default: as run)")
    calls.add_argument("--recent", type=int, metavar="N", help="show the last N calls, ended too")
    calls.add_argument("--json", action="store_true", help="machine-readable output")
    calls.add_argument(
        "--call-id",
        metavar="ID",
        help="only the calls with this SIP Call-ID, as log lines name a call ('call ID: ...'), "
        "live or ended, among every call the store keeps (with --recent N, the newest N of "
        "them; else at most 1000); a call's id as this command shows it (Call-ID;tag) is "
        "taken too",
    )

    workers = sub.add_parser(
        "media-workers",
        help="show the media worker processes of the running gateway",
        description="Show each media worker process of the running gateway ([media] workers >= "
        "2; asked over <state_dir>/control.sock): its port slice, whether it is running, "
        "starting, restarting or stopped (and why), its process id, how long it has run, the "
        "streams it relays, the port pairs it has ready for new calls, its restarts by "
        "reason and its process's resident memory. Exit status 0 when the gateway answered, "
        "whatever the workers' states (read the states, or --json, to alert).",
    )
    workers.add_argument("--config", metavar="FILE", help="read [gateway] state_dir here")
    workers.add_argument("--state-dir", metavar="DIR", help="state directory (default: as run)")
    workers.add_argument("--json", action="store_true", help="machine-readable output")

    _add_recording_parser(sub)

    registrations = sub.add_parser(
        "registrations",
        help="list registered devices",
        description="List the unexpired registrations (bindings) in the store, of every "
        "account or of ACCOUNT: the contact, the transport and address the REGISTER came from, "
        "the seconds left, the User-Agent and the device profile it matches, and whether the "
        "phone is behind a NAT (its REGISTER came from another address than its Contact).",
    )
    registrations.add_argument("account", metavar="ACCOUNT", nargs="?", help="only this one")
    registrations.add_argument("--config", metavar="FILE", help="TOML configuration file")
    registrations.add_argument(
        "--state-dir", metavar="DIR", help="state directory (default: as run)"
    )
    registrations.add_argument("--json", action="store_true", help="machine-readable output")

    route = sub.add_parser(
        "route",
        help="show where a call to a number would go",
        description="Show how a call to NUMBER (or a user name) would be routed, without "
        "placing it: the number as the numbering plan reads it, the account it rings or the "
        "trunks it goes to in failover order with the number as each is sent it, or the "
        "refusal. Uses the configuration, the store's accounts and registrations and the "
        "routing plugins the configuration enables; a running gateway may also skip trunks "
        "its OPTIONS probes found down.",
    )
    route.add_argument("number", metavar="NUMBER", help="what is dialled (a number or a user)")
    caller = route.add_mutually_exclusive_group()
    caller.add_argument(
        "--from-account", metavar="NAME", help="an account dials it (the default: any account)"
    )
    caller.add_argument("--from-trunk", metavar="NAME", help="the trunk NAME delivers it")
    route.add_argument("--config", metavar="FILE", help="TOML configuration file")
    route.add_argument("--state-dir", metavar="DIR", help="state directory (default: as run)")

    accounts = sub.add_parser(
        "accounts",
        help="manage SIP accounts",
        description="Manage the accounts hosted users register with. Only HA1 digests per realm "
        "and algorithm (MD5, SHA-256, SHA-512-256) are stored, never the password.",
    )
    acc_sub = accounts.add_subparsers(dest="accounts_command", metavar="ACTION", required=True)

    def state_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", metavar="FILE", help="read [gateway] state_dir and realm here")
        p.add_argument(
            "--state-dir", metavar="DIR", help="state directory (default: as voipgw run)"
        )

    add = acc_sub.add_parser(
        "add",
        help="add an account",
        description="Add an account.",
        add_help=False,
        formatter_class=_ListFormatter,
    )
    add.add_argument("-h", "--help", action=_ConfigHelp, help=_ConfigHelp.HELP)
    add.add_argument("name", metavar="NAME")
    add.add_argument("--password", metavar="PW", required=True)
    add.add_argument("--display-name", metavar="TEXT")
    add.add_argument(
        "--media-policy",
        metavar="NAME",
        default=DEFAULT_POLICY,
        help=media_policy_help(BUILTIN_POLICIES, default=DEFAULT_POLICY),
    )
    add.add_argument("--max-calls", metavar="N", type=int, default=0, help=MAX_CALLS_HELP)
    add.add_argument("--realm", metavar="REALM", help="digest realm (default: [gateway] realm)")
    state_options(add)

    lst = acc_sub.add_parser("list", help="list accounts", description="List accounts.")
    state_options(lst)

    remove = acc_sub.add_parser(
        "remove", help="remove an account", description="Remove an account and its bindings."
    )
    remove.add_argument("name", metavar="NAME")
    state_options(remove)

    set_ = acc_sub.add_parser(
        "set",
        help="change an account",
        description="Change fields of an account.",
        add_help=False,
        formatter_class=_ListFormatter,
    )
    set_.add_argument("-h", "--help", action=_ConfigHelp, help=_ConfigHelp.HELP)
    set_.add_argument("name", metavar="NAME")
    set_.add_argument("--password", metavar="PW")
    set_.add_argument("--display-name", metavar="TEXT")
    set_.add_argument(
        "--media-policy", metavar="NAME", help=media_policy_help(BUILTIN_POLICIES, default=None)
    )
    set_.add_argument("--max-calls", metavar="N", type=int, help=MAX_CALLS_HELP)
    enabled = set_.add_mutually_exclusive_group()
    enabled.add_argument("--enable", dest="enabled", action="store_true", default=None)
    enabled.add_argument("--disable", dest="enabled", action="store_false")
    tls = set_.add_mutually_exclusive_group()
    tls.add_argument(
        "--require-tls",
        dest="require_tls",
        action="store_true",
        default=None,
        help="refuse this account on any connection that is not TLS",
    )
    tls.add_argument("--no-require-tls", dest="require_tls", action="store_false")
    set_.add_argument(
        "--bind-cert",
        metavar="FILE|SHA256",
        action="append",
        default=[],
        help="bind the account to a device certificate: a PEM/DER file or its SHA-256 "
        "fingerprint (repeatable; adds to existing bindings)",
    )
    set_.add_argument(
        "--bind-subject",
        metavar="SUBJECT[|ISSUER]",
        action="append",
        default=[],
        help="bind to any CA-verified certificate whose subject CN or subjectAltName is SUBJECT "
        "(and whose issuer CN is ISSUER, if given); e.g. the MAC address a vendor puts in the CN",
    )
    set_.add_argument(
        "--unbind-certs", action="store_true", help="remove every certificate binding first"
    )
    state_options(set_)
    return parser


def _load_config(path: str | None) -> GatewayConfig:
    return config_mod.from_toml(path) if path else config_mod.embedded_defaults()


def _plugin_text_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--plugin-exception-text",
        action="store_true",
        help="show the text of exceptions raised in plugin code (a plugin that fails to load, "
        "logged tracebacks), as [gateway] log_plugin_exception_text = true does: to debug a "
        "plugin only, as that text may hold keys or passwords",
    )


def _load_plugins(config: GatewayConfig, args: argparse.Namespace | None, **kwargs: Any) -> Plugins:
    """:func:`load_plugins`, its errors saying the text of a plugin's exception only when
    ``[gateway] log_plugin_exception_text`` or ``--plugin-exception-text`` asks for it (they
    always say the plugin, its module, the exception's type and where it was raised)."""
    show_plugin_exception_text(
        config.gateway.log_plugin_exception_text
        or bool(getattr(args, "plugin_exception_text", False))
    )
    return load_plugins(config, **kwargs)


def _apply_run_overrides(config: GatewayConfig, args: argparse.Namespace) -> GatewayConfig:
    data: dict[str, dict[str, object]] = {}
    if args.listen:
        data["sip"] = {"listen": tuple(args.listen)}
    gateway_over: dict[str, object] = {}
    if args.state_dir:
        gateway_over["state_dir"] = args.state_dir
    if args.log_level:
        gateway_over["log_level"] = args.log_level
    if args.plugin_exception_text:  # for the media workers too
        gateway_over["log_plugin_exception_text"] = True
    if gateway_over:
        data["gateway"] = gateway_over
    media_over: dict[str, object] = {}
    if args.media_address:
        media_over["address"] = args.media_address
    if args.media_ports:
        media_over["ports"] = args.media_ports
    if media_over:
        data["media"] = media_over
    return config_mod.with_overrides(config, data, origin="command line")


def cmd_run(args: argparse.Namespace) -> int:
    from gateway.core.gateway import Gateway, run_until_signal

    config = _apply_run_overrides(_load_config(args.config), args)
    handler = logging.StreamHandler()
    handler.setFormatter(LineFormatter())  # "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=config.gateway.log_level.upper(), handlers=[handler])
    open_files.apply(config)  # before any socket or media worker
    plugins = _load_plugins(config, args)
    for warning in config_mod.listener_warnings(config, plugins.transports.names()):
        log.warning("configuration: %s", warning)
    gateway = Gateway(config, plugins)
    _tune_garbage_collector(config.gateway.gc_thresholds)
    try:
        return run_until_signal(gateway)
    except (ConfigError, PluginError, StoreError, OSError):
        raise  # said in one line by main()
    except Exception:
        # A bug nothing handled: its traceback through log_exception like every other, not
        # printed whole by the interpreter, which would show the text of a plugin's exception
        # (a key in a start-up error). The exit status is the interpreter's for an uncaught
        # exception.
        log_exception(log, "voipgw stopped on an unexpected error")
        return EXIT_RUNTIME


def _tune_garbage_collector(thresholds: Sequence[int]) -> None:
    """Freeze what start-up made and collect the young generation less often.

    A gateway under load holds tens of thousands of long-lived objects (every transaction lives
    32 s after its call: RFC 3261 Timers J, L and M), and each full pass of the cyclic collector
    walks all of them while the process stands still. Frozen start-up objects (modules, config,
    plugins) are never walked again, and fewer young collections mean fewer promotions into the
    generations that full passes walk. Measured with benchmarks/sip_calls.py at 200 calls/s,
    interleaved with the defaults: set-up p99 92 -> 12 ms without digest and 280 -> 28 ms with
    it, about 10 % less CPU per call (``[gateway] gc_thresholds``, default 10000, 10, 10). Only
    the ``run`` command does this: the process is ours.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*thresholds)


def cmd_plugins(args: argparse.Namespace) -> int:
    # A value where an enabled plugin's table goes ([plugins] acme = 3) is that plugin's
    # error here, not the whole listing's: `run` stops on it as before.
    misplaced: dict[str, ConfigError] = {}
    config = (
        config_mod.from_toml(args.config, misplaced=misplaced)
        if args.config
        else config_mod.embedded_defaults()
    )
    installed = discover()
    enabled = set(config.plugins.enable)
    loaded, failed = (
        _load_plugins_listing(config, args, installed, misplaced) if enabled else (None, {})
    )
    width = max((len(n) for n in installed), default=4)
    # A third-party distribution's name is often longer than the built-ins': keep the columns.
    dists = {name: f"{p.distribution} {p.version}" for name, p in installed.items()}
    dist_width = max([20, *(len(d) for d in dists.values())])
    print(f"{'NAME':<{width}}  {'STATE':<8}  {'DISTRIBUTION':<{dist_width}}  REGISTERS")
    for name in sorted(installed):
        dist = dists[name]
        if name in failed:
            # A setting refused (its table, a value where it goes, or a ConfigError from its
            # hooks): the gateway would not run with this configuration.
            registers = (
                "(its configuration refused: see the configuration error below)"
                if isinstance(failed[name], ConfigError)
                else "(not loaded: see the plugin error below)"
            )
            state = "FAILED"
        elif loaded is not None and name in enabled:
            parts = [
                f"{kind}: {', '.join(items)}" for kind, items in loaded.registered_by(name).items()
            ]
            hooks = [
                h
                for h in loaded.hooks_implemented_by(name)
                if not h.startswith("gateway_register_")
                and h not in ("gateway_plugin_config", "gateway_configure")
            ]
            if hooks:
                parts.append("hooks: " + ", ".join(hooks))
            registers = "; ".join(parts) or "(nothing)"
            state = "enabled"
        else:
            registers = "(not loaded: disabled)"
            state = "disabled"
        print(f"{name:<{width}}  {state:<8}  {dist:<{dist_width}}  {registers}")
    unknown = sorted(enabled - set(installed))
    for name in unknown:
        print(f"{name:<{width}}  MISSING   (enabled in config but not installed)")
    for error in failed.values():
        # The line `voipgw run` and `check-config` stop on (main()): neither runs with this
        # config. A setting a plugin refuses (PluginConfigError) is a configuration error.
        kind = "configuration error" if isinstance(error, ConfigError) else "plugin error"
        print(f"voipgw: {kind}: {error}", file=sys.stderr)
    return EXIT_USAGE if failed else EXIT_OK


def _load_plugins_listing(
    config: GatewayConfig,
    args: argparse.Namespace,
    installed: Mapping[str, DiscoveredPlugin],
    misplaced: Mapping[str, ConfigError],
) -> tuple[Plugins, dict[str, PluginError]]:
    """The enabled plugins for ``voipgw plugins``: those that load, and the error of each that
    does not (by name). ``voipgw run`` stops on the first such error (docs/plugin_hooks.md);
    the listing goes on without that plugin (and its ``[plugins.NAME]`` table) to show the
    others, and says the error as ``run`` would. Each plugin is loaded once, however many
    fail. An error no single plugin is at fault for (two registering one name) is raised as
    ``run`` raises it. ``misplaced``: the errors of values written where an enabled plugin's
    table goes (``config_mod.from_toml``), each that plugin's, which is then not loaded."""
    failed: dict[str, PluginError] = {
        name: PluginConfigError(name, error, named=False) for name, error in misplaced.items()
    }
    return _load_plugins(config, args, installed=installed, failed=failed), failed


def cmd_check_config(args: argparse.Namespace) -> int:
    # Operators run check-config as themselves before `systemctl reload`, not as the service's
    # user (it cannot tell which that is): a file the service reads that this user may not (a
    # key of mode 600) and a state_dir only this user's permissions forbid are warnings naming
    # this user, not errors that would be false (config.reading_as_checker). `voipgw run`, the
    # service, refuses them.
    with config_mod.reading_as_checker() as unread:
        errors: list[ConfigError] = []
        gateway = None
        loaded: GatewayConfig | None = None
        try:
            config = loaded = config_mod.from_toml(args.file)
            plugins = _load_plugins(config, args)
            from gateway.core.gateway import Gateway

            gateway = Gateway(config, plugins)
            gateway.check(as_service=False)
        except ConfigError as exc:
            # The one that stops the check (a value no gateway can run with): said with the
            # warnings found before it, so that a run shows every problem it reached.
            errors.append(exc)
        if loaded is not None:
            # As root, which reads any file: one the service's user may not read, said.
            unread.extend(config_mod.root_read_warnings(Path(loaded.gateway.state_dir)))
    expiring: list[ConfigError] = []
    if gateway is not None:
        # Every one, not the first: `voipgw run` starts with these as warnings (an upgraded
        # gateway keeps carrying calls); here, before a deployment, they are errors.
        errors[:0] = gateway.check_errors
        # Our own certificates (tls, wss, the metrics exporter's): one out of its validity
        # period is refused by every peer (an error here; `run` starts with it, warning), one
        # expiring within 14 days is a warning, as `run` logs it at start-up and daily.
        now = time.time()
        reports: list[tuple[str, list[tuple[bool, str]]]] = []
        for name, transport in plugins.transports.items():
            report = getattr(transport, "expiry_report", None)
            if callable(report):
                # Its listeners: without one, nothing presents its certificate.
                listens = [spec for spec in config.listen_specs if spec.transport == name]
                reports.append((name, report(now=now, listens=listens)))
        for name, service in plugins.services.items():
            report = getattr(service, "expiry_report", None)
            if callable(report):
                reports.append((name, report(now=now)))
        for name, report_lines in reports:
            for is_error, text in report_lines:
                key, _, message = text.partition(": ")
                said = ConfigError(config.source, f"plugins.{name}", key, message)
                (errors if is_error else expiring).append(said)
    if loaded is not None:
        # What the service's user (the state_dir's owner, most likely) may not read either
        # stays an error: `check-config && systemctl reload` must not go on to a refusal.
        for note in list(unread):
            error = config_mod.unread_by_service(note, Path(loaded.gateway.state_dir))
            if error is not None:
                unread.remove(note)
                errors.append(error)
    for error in errors:
        print(f"voipgw: configuration error: {error}", file=sys.stderr)
    if gateway is not None:
        # After the errors, not instead of them: an operator fixing a file one run at a time
        # sees every problem in one run (the exit status stays the errors').
        listeners = config_mod.listener_warnings(config, plugins.transports.names())
        for warning in (*listeners, *config_mod.did_warnings(config)):
            print(f"{args.file}: warning: {warning}", file=sys.stderr)
    for error in (*unread, *(gateway.access_warnings if gateway is not None else ()), *expiring):
        print(f"voipgw: warning: {error}", file=sys.stderr)
    if gateway is not None:
        # A plugin's choice that works but has a cost (stir_shaken: verification without
        # certificate_hosts): a warning here as at run, never an error (a default must pass).
        for notes in gateway.plugin_value_notes.values():
            for note in notes:
                print(f"voipgw: warning: {note}", file=sys.stderr)
    if errors:
        return EXIT_USAGE
    assert gateway is not None
    if args.intercept:
        # Only on request: the interception's certificates are not in the metrics or the
        # core's log lines either (docs/lawful_intercept.md, "Keeping it covert").
        tap = plugins.media_taps.get("intercept")
        report = getattr(tap, "certificate_report", None)
        if report is None:
            print(
                f"{args.file}: --intercept: the configuration does not enable the intercept plugin",
                file=sys.stderr,
            )
            return EXIT_USAGE
        for warn, line in report(now=time.time()):
            if warn:
                print(f"{args.file}: warning: {line}", file=sys.stderr)
            else:
                print(f"{args.file}: {line}")
        for line in gateway.node_warnings.get("intercept", []):
            print(f"{args.file}: warning: [plugins.intercept] {line}", file=sys.stderr)
    if args.resolve:
        sessions = gateway.session_target_names()
        for line in _resolve_named_trunks(config, gateway.dns_transports(), sessions):
            print(f"{args.file}: {line}")
    print(f"{args.file}: OK ({len(plugins.names)} plugins: {', '.join(plugins.names)})")
    return EXIT_OK


def _resolve_named_trunks(
    config: GatewayConfig,
    transports: Sequence[str],
    sessions: Mapping[str, TrunkAddress] | None = None,
) -> list[str]:
    """One line per enabled trunk named by DNS, then per session target named by DNS
    (``sessions``: a SIPREC recorder's URI and its look-up, ``Gateway.session_target_names``):
    what its name resolves to now (``[dns]`` servers and timeout; a bare name over
    ``transports``, RFC 3263 §4.1), or why not. What the gateway will find at start-up, for an
    operator to check before it runs."""
    import trio

    from gateway.core.calls.trunk_dns import DnsError, DnsPythonResolver, resolve
    from gateway.core.sip.uri import redact_password

    named = [
        (f"trunk {trunk.name}", trunk.address_parts)
        for trunk in config.trunks
        if trunk.enabled and trunk.by_name
    ]
    if not named and not sessions:
        return ["no trunk is named by DNS: nothing to resolve"]
    named += [
        (f"session target {redact_password(uri)}", address)
        for uri, address in (sessions or {}).items()
    ]
    dns = config.dns

    async def main() -> list[str]:
        resolver = DnsPythonResolver(dns.servers, dns.timeout)
        lines = []
        for what, address in named:
            found = None
            why = f"no answer within {dns.timeout:g} s"
            with trio.move_on_after(dns.timeout):
                try:
                    found = await resolve(address, resolver, transports)
                except DnsError as exc:
                    why = str(exc)
            if found is None:
                lines.append(f"{what}: {address} does not resolve: {why}")
                continue
            shown = ", ".join(str(hop) for hop in found.hops)
            lines.append(f"{what}: {address} resolves to {shown} (TTL {found.ttl:g} s)")
        return lines

    return trio.run(main)


def ask_gateway(
    args: argparse.Namespace,
    query: str,
    *,
    config: GatewayConfig | None = None,
    arguments: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The running gateway's answer to ``query`` (gateway/core/control.py's queries, with its
    ``arguments`` if it takes any), asked over its control socket, ``<state_dir>/control.sock``
    (``--state-dir``, else ``[gateway] state_dir`` of ``--config``). Raises
    :class:`~gateway.core.control.ControlError` saying why there is none (no gateway running,
    none answering, a refusal, a broken answer)."""
    from gateway.core.control import ask, socket_path

    if config is None:
        config = _load_config(args.config)
    path = socket_path(args.state_dir or config.gateway.state_dir)
    if arguments is None:
        return ask(path, query)
    return ask(path, query, arguments=arguments)


def ask_gateway_for(
    args: argparse.Namespace,
    command: str,
    query: str,
    *,
    arguments: Mapping[str, str] | None = None,
) -> dict[str, Any] | None:
    """:func:`ask_gateway` for ``voipgw COMMAND``, which needs the answer: None when there is
    none, said on stderr as ``voipgw: COMMAND: why`` (the command then exits
    :data:`EXIT_RUNTIME`)."""
    from gateway.core.control import ControlError

    try:
        return ask_gateway(args, query, arguments=arguments)
    except ControlError as exc:
        print(f"voipgw: {command}: {exc}", file=sys.stderr)
        return None


def cmd_trunks(args: argparse.Namespace) -> int:
    import json

    answer = ask_gateway_for(args, "trunks", "trunks")
    if answer is None:
        return EXIT_RUNTIME
    trunks = answer.get("trunks")
    if not isinstance(trunks, list):
        print("voipgw: trunks: the gateway's answer has no trunk list", file=sys.stderr)
        return EXIT_RUNTIME
    sessions = answer.get("session_targets")
    if not isinstance(sessions, list):
        sessions = []  # a gateway from before they were shown
    if args.json:
        # One list, as before: the trunks first (kind "trunk"), then the session targets.
        print(json.dumps(trunks + sessions, indent=2))
        return EXIT_OK
    if not trunks:
        print("no trunks")
    now = time.time()
    for trunk in trunks:
        print("\n".join(describe_trunk(trunk, now)))
    if sessions:
        print("session targets (named by DNS):")
        for target in sessions:
            print("\n".join(describe_session_target(target, now)))
    return EXIT_OK


def cmd_media_workers(args: argparse.Namespace) -> int:
    import json

    answer = ask_gateway_for(args, "media-workers", "media_workers")
    if answer is None:
        return EXIT_RUNTIME
    workers = answer.get("workers")
    if workers is not None and not isinstance(workers, list):
        print("voipgw: media-workers: the gateway's answer has no worker list", file=sys.stderr)
        return EXIT_RUNTIME
    if args.json:
        print(json.dumps(answer, indent=2))
        return EXIT_OK
    if workers is None:
        print("no media workers: the gateway relays media in its own process ([media] workers = 1)")
        return EXIT_OK
    states = [str(worker.get("state")) for worker in workers if isinstance(worker, dict)]
    running = states.count("running")
    print(f"{len(workers)} media workers on {answer.get('address')}, {running} running")
    for worker in workers:
        if isinstance(worker, dict):
            print(describe_media_worker(worker))
    return EXIT_OK


def _add_recording_parser(sub: Any) -> None:
    """``voipgw recording pause|resume CALL-ID``."""
    recording = sub.add_parser(
        "recording",
        help="pause or resume the recording of a live call",
        description="Pause or resume the recordings of a live call of the running gateway "
        "(asked over <state_dir>/control.sock): while paused, no copy of its media is "
        "recorded ([plugins.recorder] writes nothing, [plugins.siprec] sends nothing and "
        "re-INVITEs its recorder with the streams a=inactive, RFC 7866 §7.1.1), e.g. while a "
        "customer reads out card digits (PCI DSS). A lawful interception is never paused. "
        "The gateway logs who paused and resumed, and `voipgw calls` shows it. A pause of a "
        "call not answered yet is kept for its recording, which then starts paused. Exit "
        "status: 0 the call is paused (resumed), also when it already was; 1 no gateway "
        "answers, the call is not live on it, or it is not recorded; 2 a usage error.",
    )
    recording.add_argument("action", choices=("pause", "resume"))
    recording.add_argument(
        "call_id",
        metavar="CALL-ID",
        help="the call: its id as `voipgw calls` shows it (Call-ID;tag), or its SIP Call-ID "
        "as log lines name it",
    )
    recording.add_argument(
        "--by",
        metavar="NAME",
        help="who asks, for the log and the call record, at most 64 printable characters "
        "(default: the user running the command)",
    )
    recording.add_argument("--config", metavar="FILE", help="read [gateway] state_dir here")
    recording.add_argument("--state-dir", metavar="DIR", help="state directory (default: as run)")
    recording.add_argument("--json", action="store_true", help="machine-readable output")


def cmd_recording(args: argparse.Namespace) -> int:
    import getpass
    import json

    from gateway.core.control import MAX_BY

    by = args.by if args.by is not None else os.environ.get("SUDO_USER") or getpass.getuser()
    if not 0 < len(by) <= MAX_BY or not by.isprintable():
        print(
            f"voipgw: recording: --by must be 1 to {MAX_BY} printable characters",
            file=sys.stderr,
        )
        return EXIT_USAGE
    answer = ask_gateway_for(
        args,
        f"recording {args.action}",
        "recording",
        arguments={"action": args.action, "call_id": args.call_id, "by": by},
    )
    if answer is None:
        return EXIT_RUNTIME
    if args.json:
        print(json.dumps(answer, indent=2))
        return EXIT_OK
    state = "paused" if answer.get("paused") else "recorded"
    if answer.get("pending"):
        # Asked before the call's recording started (it is not answered yet): kept for it.
        kept = "it starts paused" if answer.get("paused") else "no pause kept"
        already = "" if answer.get("changed") else "already; "
        print(f"call {answer.get('call_id')}: {state} ({already}not recording yet: {kept})")
        return EXIT_OK
    names = ", ".join(str(name) for name in answer.get("recordings") or ())
    if answer.get("paused_by_preference") and not answer.get("paused"):
        # Resumed by the operator, still paused while a party prefers it ([plugins.siprec]
        # recordpref = "pause", RFC 7866 §7.2): not "recorded".
        state = "resumed, but still paused for a party's recording preference"
    already = "" if answer.get("changed") else " (already)"
    print(f"call {answer.get('call_id')}: {state}{already} ({names})")
    return EXIT_OK


def describe_media_worker(worker: dict[str, Any]) -> str:
    """A worker of the control socket's ``media_workers`` answer on one line, in plain words."""
    state = worker.get("state")
    pid = worker.get("pid")
    if state == "running":
        running_for = worker.get("running_for")
        shown = f"running, pid {pid}"
        if isinstance(running_for, (int, float)):
            shown += f", for {_duration(running_for)}"
    elif state == "starting":
        shown = f"starting, pid {pid}"
    elif state == "stopped":
        shown = f"stopped until the service restarts: {worker.get('stopped')}"
    else:
        shown = f"{state}"
        if worker.get("last_ended"):
            shown += f" (its last process: {worker['last_ended']})"
    restarts = worker.get("restarts")
    counted = (
        [f"{reason} {count}" for reason, count in restarts.items() if count]
        if isinstance(restarts, dict)
        else []
    )
    resident = worker.get("resident_bytes")
    # Last, after what the line said before it (scripts may read the line up to its restarts).
    memory = f"  memory {resident / 1048576:.1f} MiB" if isinstance(resident, int) else ""
    return (
        f"worker {worker.get('index')}  ports {worker.get('ports')}  {shown}  "
        f"streams {worker.get('streams')}  ready port pairs {worker.get('ready_pairs')}  "
        f"restarts: {', '.join(counted) if counted else 'none'}{memory}"
    )


def _duration(seconds: float) -> str:
    """``45 s``, ``12 min``, ``3 h 5 min``, ``2 d 4 h``: how long, to the unit that matters."""
    whole = int(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, hours, days = whole // 60 % 60, whole // 3600 % 24, whole // 86_400
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min"


def describe_trunk(trunk: dict[str, Any], now: float) -> list[str]:
    """A trunk of the control socket's ``trunks`` answer, in plain words (``now``: Unix time,
    for how long ago and how soon)."""
    if not trunk.get("enabled"):
        state = "disabled"
    elif trunk.get("up"):
        state = "up"
    else:
        state = f"down ({trunk.get('down_reason')})"
    registered = trunk.get("registered")
    if registered is not None:
        state += ", registered" if registered else ", not registered"
    lines = [f"{trunk.get('name')}  {trunk.get('address')}  [{state}]"]
    dns = trunk.get("dns")
    if isinstance(dns, dict):
        lines += _describe_dns(dns, now)
    return lines


def describe_session_target(target: dict[str, Any], now: float) -> list[str]:
    """A session target of the control socket's ``trunks`` answer (a SIPREC recorder's URI
    named by DNS), in plain words, as :func:`describe_trunk` shows a trunk's name."""
    dns = target.get("dns")
    resolved = isinstance(dns, dict) and bool(dns.get("targets"))
    lines = [
        f"{target.get('name')}  {target.get('address')}  "
        f"[{'resolved' if resolved else 'not resolved: no session goes to it'}]"
    ]
    if isinstance(dns, dict):
        lines += _describe_dns(dns, now)
    return lines


def _describe_dns(dns: dict[str, Any], now: float) -> list[str]:
    """The DNS lines of :func:`describe_trunk` and :func:`describe_session_target`."""
    lines = []
    targets = dns.get("targets") or []
    resolved_at, next_at = dns.get("resolved_at"), dns.get("next_resolution_at")
    if isinstance(resolved_at, (int, float)):
        ttl = dns.get("ttl")
        when = f"resolved {_utc(resolved_at)} ({max(now - resolved_at, 0):.0f} s ago"
        when += f", TTL {ttl:g} s)" if isinstance(ttl, (int, float)) else ")"
    else:
        when = "not resolved yet"
    if isinstance(next_at, (int, float)):
        when += f"; next look-up {_utc(next_at)} (in {max(next_at - now, 0):.0f} s)"
    lines.append(f"  DNS: {when}")
    lines.append(f"  targets: {', '.join(map(str, targets)) if targets else '(none)'}")
    if dns.get("error"):
        kept = "; the targets above are kept" if targets else ""
        lines.append(f"  last look-up failed: {dns['error']}{kept}")
    return lines


def _utc(stamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(stamp))


def cmd_metrics_password(args: argparse.Namespace) -> int:
    import getpass

    from gateway.plugins.metrics.auth import PasswordHash

    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            print("voipgw: the two passwords differ", file=sys.stderr)
            return EXIT_USAGE
    else:
        password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    if not password:
        print("voipgw: the password is empty", file=sys.stderr)
        return EXIT_USAGE
    print(PasswordHash.make(password).encode())
    return EXIT_OK


class NoStore(Exception):
    """A command that reads the gateway's store found none where it looked."""


def _open_store(args: argparse.Namespace, *, create: bool = False) -> tuple[Any, GatewayConfig]:
    """The store ``[store]`` names (SQLite in the state directory, or PostgreSQL). A SQLite
    store that does not exist yet is created only when ``create`` (``accounts add``,
    ``migrate-store``): a command that reads it, run from another directory than ``voipgw
    run`` (the default state directory is relative), would otherwise create an empty one there
    and answer "no live calls" while the gateway has calls."""
    from gateway.core.store.backends import open_store
    from gateway.core.store.sqlite import DB_FILENAME

    config = _load_config(args.config)
    if not create and config.store.backend == "sqlite":
        directory = Path(args.state_dir or config.gateway.state_dir)
        if not (directory / DB_FILENAME).exists():
            seen = "" if directory.is_absolute() else f" (seen from {Path.cwd()})"
            raise NoStore(
                f"no voipgw store in {directory}{seen}: run this in the directory `voipgw run` "
                "was started in, or give it the same --state-dir or --config"
            )
    return open_store(config, gateway=False, state_dir=args.state_dir), config


def describe_quality(figures: dict[str, Any]) -> str:
    """One line, in plain words, of a leg's call quality from its phone's RTCP reports
    (gateway/core/media/quality.py): what that leg received."""
    words = []
    if figures.get("fraction_lost") is not None:
        lost = f"{figures['fraction_lost'] * 100:.1f} % lost"
        if figures.get("lost") is not None:
            lost += f" ({figures['lost']} packets lost in all)"
        worst = figures.get("worst_fraction_lost")
        if worst is not None and worst > figures["fraction_lost"]:
            lost += f", worst {worst * 100:.1f} %"
        words.append(lost)
    if figures.get("jitter_ms") is not None:
        jitter = f"jitter {figures['jitter_ms']:.0f} ms"
        worst = figures.get("worst_jitter_ms")
        if worst is not None and round(worst) > round(figures["jitter_ms"]):
            jitter += f" (worst {worst:.0f} ms)"
        words.append(jitter)
    if figures.get("rtt_ms") is not None:
        words.append(f"RTT {figures['rtt_ms']:.0f} ms")
    if figures.get("mos") is not None:
        mos = f"MOS {figures['mos']:.1f}"
        worst = figures.get("worst_mos")
        if worst is not None and round(worst, 1) < round(figures["mos"], 1):
            mos += f" (worst {worst:.1f})"
        words.append(mos)
    if figures.get("xr_mos") is not None:
        words.append(f"phone's own MOS {figures['xr_mos']:.1f}")
    if not words:
        words.append("no reports in its RTCP")
    if figures.get("packets") is not None:
        words.append(f"its phone sent {figures['packets']} packets")
    if figures.get("rtcp_malformed"):
        words.append(f"{figures['rtcp_malformed']} malformed RTCP packets")
    return ", ".join(words)


def describe_live_quality(figures: dict[str, Any] | None) -> str:
    """One line, in plain words, of a live leg's quality now (the control socket's
    ``live_quality``): :func:`describe_quality` and how old its last report is; stale past
    ``quality.STALE_AFTER``. None: its phone has sent no RTCP yet."""
    from gateway.core.media.quality import STALE_AFTER

    if figures is None:
        return "no RTCP from its phone yet"
    report, rtcp = figures.get("last_report_age"), figures.get("last_rtcp_age")
    if report is None:  # RTCP without report blocks so far (an SR of a phone hearing nothing)
        age = f"last RTCP {rtcp:.0f} s ago" if rtcp is not None else "no RTCP"
        if rtcp is not None and rtcp > STALE_AFTER:
            age += " (STALE: no RTCP from its phone since)"
        return f"{describe_quality(figures)}; {age}"
    age = f"last report {report:.0f} s ago"
    if report > STALE_AFTER:
        if rtcp is not None and rtcp <= STALE_AFTER:
            # RFC 3550 §6.4: a report block only for a source heard since the last report.
            age += (
                f" (STALE: its phone's RTCP since, {rtcp:.0f} s ago, has no report: "
                "it receives no media)"
            )
        else:
            age += " (STALE: no RTCP from its phone since)"
    return f"{describe_quality(figures)}; {age}"


def _live_quality(args: argparse.Namespace, config: GatewayConfig) -> dict[str, Any] | None:
    """Per live call (record id), each leg's quality now, from the running gateway's control
    socket (gateway/core/control.py); None, with a note on stderr, when it does not answer."""
    from gateway.core.control import ControlError

    try:
        calls = ask_gateway(args, "live_quality", config=config).get("calls")
    except ControlError as exc:
        print(
            f"note: live call quality not available ({exc}): shown as of each call's last change",
            file=sys.stderr,
        )
        return None
    return calls if isinstance(calls, dict) else None


def cmd_calls(args: argparse.Namespace) -> int:
    import json

    store, config = _open_store(args)
    try:
        if args.call_id is not None:
            # Log lines name a call by its Call-ID; a record by the Call-ID and the caller
            # leg's tag (a caller retrying with one Call-ID makes a new record): either is
            # taken, among every record the store keeps (an index on the id answers).
            records = store.call_records_of_call_id(args.call_id, args.recent or 1000)
            _say_call_id_read_whole(store)
        else:
            records = store.call_records_recent(args.recent or 1000)
    finally:
        store.close()
    if args.call_id is None and not args.recent:
        records = tuple(r for r in records if r.ended_at is None)
    # Figures that change all the time are asked of the gateway, only for calls that are up.
    live = _live_quality(args, config) if any(r.ended_at is None for r in records) else None

    def live_of(record: Any) -> dict[str, Any] | None:
        if live is None or record.ended_at is not None:
            return None
        figures = live.get(record.call_id)
        return figures if isinstance(figures, dict) else None

    if args.json:
        print(
            json.dumps(
                [
                    {
                        "call_id": r.call_id,
                        "sip_call_id": sip_call_id(r.call_id),
                        "from": r.from_uri,
                        "to": r.to_uri,
                        "started_at": r.started_at,
                        "answered_at": r.answered_at,
                        "ended_at": r.ended_at,
                        "end_reason": r.end_reason,
                        "security": r.security,
                        **({} if r.ended_at is not None else {"live_quality": live_of(r)}),
                    }
                    for r in records
                ],
                indent=2,
            )
        )
        return EXIT_OK
    if not records:
        if args.call_id is not None:
            # Every record was looked at: retention ([store] call_record_days) may have
            # deleted an old call's.
            print(f"no call with Call-ID {args.call_id} in the store")
        else:
            print("no live calls" if not args.recent else "no calls")
        return EXIT_OK
    for record in records:
        state = "live" if record.ended_at is None else f"ended ({record.end_reason})"
        print(f"{record.call_id}  {record.from_uri} -> {record.to_uri}  [{state}]")
        security = record.security or {}
        for label in ("a", "b"):
            leg = security.get(label)
            if leg:
                name = "caller leg" if label == "a" else "callee leg"
                print(f"  {name}: {describe_leg(leg)}")
        for label in ("a", "b"):
            auth = describe_auth(security.get(label) or {})
            if auth is not None:  # a leg whose party sent us its INVITE (a caller, a picker)
                name = "caller" if label == "a" else "callee (picked up)"
                print(f"  {name} authenticated: {auth}")
        now = live_of(record)
        if now is not None:
            for label, figures in now.items():
                name = "caller leg" if label == "a" else "callee leg"
                print(f"  {name} quality now (what it received): {describe_live_quality(figures)}")
        else:
            for label, figures in (security.get("quality") or {}).items():
                name = "caller leg" if label == "a" else "callee leg"
                print(f"  {name} quality (what it received): {describe_quality(figures)}")
        for transfer in security.get("transfers", ()):
            print(f"  {describe_transfer(transfer)}")
        for failover in security.get("failovers", ()):
            print(f"  {describe_failover(failover)}")
        dns = (security.get("b") or {}).get("dns")
        if dns:  # a trunk named by DNS: which of its targets took the call
            print(
                f"  trunk {dns.get('name')} reached at {dns.get('target')} "
                f"(DNS target {dns.get('attempt')})"
            )
        for redirect in security.get("redirects", ()):
            print(f"  {describe_redirect(redirect)}")
        if security.get("transcoding"):
            print(f"  {describe_transcoding(security['transcoding'])}")
        if security.get("taps"):
            print(f"  {describe_taps(security['taps'])}")
        recording_parties = describe_recording_parties(security)
        if recording_parties:
            print(f"  {recording_parties}")
        if security.get("location"):
            print(f"  {describe_location(security['location'])}")
        for described in security.get("caller_identity", ()):
            print(f"  {described}")  # STIR/SHAKEN: "caller number verified (attestation A)"
    return EXIT_OK


def _say_call_id_read_whole(store: Any) -> None:
    """A note on standard error when ``voipgw calls --call-id`` read without an index on
    call_id COLLATE "C" (PostgreSQL, a collation not in code point order: the index not built
    yet, or ``[store] call_id_index = false``): the newest records, then the whole table."""
    from gateway.core.store.postgresql import (
        CALL_ID_INDEX,
        CALL_ID_NEWEST_FIRST,
        PostgresStore,
    )

    if not isinstance(store, PostgresStore) or store.call_id_read_whole is None:
        return
    print(
        f'note: no index on call_id COLLATE "C" ({CALL_ID_INDEX}:'
        f" {store.call_id_read_whole}): read the newest call records (at least"
        f" {CALL_ID_NEWEST_FIRST}), then, if the call was not among them, the whole table"
        " (seconds on millions of records)",
        file=sys.stderr,
    )


def sip_call_id(record_id: str) -> str:
    """The SIP Call-ID of a call record's id (``Call-ID;tag``, calls/base.py): what the log lines
    name the call by: what comes before the last ``;`` (the tag is ours and holds none)."""
    return record_id.rpartition(";")[0] or record_id


def describe_location(location: dict[str, Any]) -> str:
    """How the caller's location (RFC 6442) was conveyed and where it went; never where the
    caller is (the record does not hold it)."""
    line = f"caller location conveyed {location.get('conveyed')}"
    passed, dropped = location.get("passed_to") or [], location.get("dropped_for") or []
    if passed:
        line += ", passed to " + ", ".join(str(name) for name in passed)
    if dropped:
        line += ", not passed to " + ", ".join(str(name) for name in dropped) + " (policy)"
    if location.get("updates"):
        line += f", updated {location['updates']} time(s) during the call"
    for error in location.get("errors") or ():
        if "unanswered_after" in error:
            # Our location UPDATE got no answer in time: the caller's was answered 200.
            line += (
                f", location update unanswered by {error.get('from')} after "
                f"{error['unanswered_after']:g} s (not delivered)"
            )
            continue
        # RFC 6442 §4.3: what the trunk said of it (relayed to the caller, unless it came
        # after the caller's request was answered without it: recorded only).
        line += (
            f", Geolocation-Error {error.get('code')} from {error.get('from')}"
            f" ({error.get('status')})"
        )
    return line


def describe_transcoding(transcoding: dict[str, Any]) -> str:
    """The call's G.711 transcoding (docs/architecture.md "G.711 transcoding"): which law
    each leg speaks and the packets converted each way."""
    line = f"media line {transcoding.get('line')}: {transcoding.get('described')}"
    if not transcoding.get("now", True):
        line += " (until a re-INVITE)"
    return (
        f"{line}, {transcoding.get('a_to_b_packets', 0)} packets caller -> callee, "
        f"{transcoding.get('b_to_a_packets', 0)} callee -> caller"
    )


def describe_taps(taps: dict[str, Any]) -> str:
    """Who gets a copy of the call's media (recording, interception), and what they miss."""
    line = "media copied to: " + ", ".join(str(name) for name in taps.get("names", ()))
    untapped = taps.get("untapped_streams") or []
    if untapped:
        streams = ", ".join(str(index) for index in untapped)
        line += f" (NOT stream {streams}: in a media worker, which taps cannot reach)"
    for pause in taps.get("pauses") or ():
        # voipgw recording pause|resume: when and by whom (UTC).
        line += f"; recording paused {_utc(pause.get('paused_at', 0))} by {pause.get('paused_by')}"
        if "resumed_at" in pause:
            line += f", resumed {_utc(pause['resumed_at'])} by {pause.get('resumed_by')}"
    if taps.get("paused"):
        line += " (paused now)"
    return line


def describe_recording_parties(security: dict[str, Any]) -> str:
    """What the recording-aware parties were told of the call's recording (RFC 7866 §7.1.1,
    ``a=record``) and the recording preferences the parties stated (§7.2, ``a=recordpref``);
    "" when neither."""
    told = security.get("recording_indication") or {}
    parts = []
    for side, party in (("a", "caller"), ("b", "callee")):
        leg = security.get(side) or {}
        if side in told:
            parts.append(f"{party} told recording {told[side]}")
        if leg.get("recordpref"):
            parts.append(f"{party} prefers recording {leg['recordpref']}")
    return "recording-aware: " + ", ".join(parts) if parts else ""


def describe_failover(failover: dict[str, Any]) -> str:
    """One trunk (or one DNS target of a trunk, RFC 3263 §4.3) a call left for the next, in
    words."""
    trunk, to = f"trunk {failover.get('trunk')}", f"trunk {failover.get('to')}"
    if failover.get("target"):
        trunk += f" (target {failover['target']})"
    if failover.get("to_target"):
        to += f" (target {failover['to_target']})"
    outcome = f"{failover.get('status')} {failover.get('reason')}"
    return f"{trunk} answered {outcome}: failed over to {to}"


def describe_redirect(redirect: dict[str, Any]) -> str:
    """One redirect (3xx) of a call record, in words: who forwarded the call where and who
    took it, or why it was not followed."""
    by, status, to = redirect.get("by"), redirect.get("status"), redirect.get("to")
    if redirect.get("refused"):
        where = f" to {to}" if to else ""
        return f"redirect by {by} ({status}){where} not followed: {redirect['refused']}"
    return (
        f"forwarded by {by} ({status}, {redirect.get('reason')}) to {to}: "
        f"taken by {redirect.get('via')}"
    )


def describe_transfer(transfer: dict[str, Any]) -> str:
    """One transfer of a call record, in words: which side's party moved it where, and how it
    ended (the final status of the transfer, RFC 3515 NOTIFY)."""
    side = "caller" if transfer.get("by") == "a" else "callee"
    kind = "attended" if transfer.get("attended") else "blind"
    status = transfer.get("status")
    outcome = "done" if status == 200 else f"failed ({status})"
    return f"{kind} transfer by the {side} to {transfer.get('to')}: {outcome}"


def cmd_accounts(args: argparse.Namespace) -> int:
    from gateway.core.store.errors import AccountExists, StoreError

    store, config = _open_store(args, create=args.accounts_command == "add")
    try:
        action = args.accounts_command
        policy = getattr(args, "media_policy", None)
        if policy is not None:
            _check_media_policy(policy, config)
        if action == "add":
            account = store.accounts_add(
                args.name,
                args.password,
                args.realm or config.gateway.realm,
                display_name=args.display_name,
                media_policy=args.media_policy,
                max_calls=args.max_calls,
            )
            print(f"added {account.name} (realm {', '.join(account.realms)})")
        elif action == "list":
            print(
                f"{'NAME':<20} {'ENABLED':<8} {'POLICY':<16} {'TLS':<9} {'DEVICES':<8} "
                f"{'CALLS':<6} REALMS"
            )
            for account in store.accounts_list():
                print(
                    f"{account.name:<20} {'yes' if account.enabled else 'no':<8} "
                    f"{account.media_policy:<16} "
                    f"{'required' if account.require_tls else '-':<9} "
                    f"{len(account.certificate_matches) or '-'!s:<8} "
                    f"{account.max_calls or '-'!s:<6} "
                    f"{', '.join(account.realms)}"
                )
        elif action == "remove":
            store.accounts_remove(args.name)
            print(f"removed {args.name}")
        elif action == "set":
            fields = {
                key: value
                for key, value in (
                    ("password", args.password),
                    ("display_name", args.display_name),
                    ("media_policy", args.media_policy),
                    ("enabled", args.enabled),
                    ("require_tls", args.require_tls),
                    ("max_calls", args.max_calls),
                )
                if value is not None
            }
            if args.bind_cert or args.bind_subject or args.unbind_certs:
                current = store.get_account(args.name)
                existing = (
                    []
                    if current is None or args.unbind_certs
                    else [(m.kind, m.value) for m in current.certificate_matches]
                )
                new = [("fingerprint", _fingerprint_of(item)) for item in args.bind_cert]
                new += [("subject", item) for item in args.bind_subject]
                fields["certificate_matches"] = existing + new
            if not fields:
                print("voipgw: accounts set: nothing to change", file=sys.stderr)
                return EXIT_USAGE
            store.accounts_set(args.name, **fields)
            print(f"updated {args.name}: {', '.join(sorted(fields))}")
    except AccountExists as exc:
        print(
            f"voipgw: accounts add: {exc}; `voipgw accounts set {args.name} --password PW` "
            "changes its password",
            file=sys.stderr,
        )
        return EXIT_USAGE
    except StoreError as exc:
        print(f"voipgw: accounts {args.accounts_command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        store.close()
    return EXIT_OK


def cmd_migrate_store(args: argparse.Namespace) -> int:
    from gateway.core.store.postgresql import CALL_ID_INDEX, RETENTION_INDEX, PostgresStore

    # The store says at INFO what it does (the index's build: minutes on a big table) and why it
    # did not build it ("another node builds the index"), the message the error below points
    # to: the other commands' default (WARNING and up, Python's last-resort handler) drops them.
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    store, _ = _open_store(args, create=True)  # opening it migrates
    try:
        print(f"store: schema version {store.schema_version()}")
        if isinstance(store, PostgresStore):
            wanted = store.wanted_indexes()
            try:
                built = store.build_indexes(wait=args.wait)
            except KeyboardInterrupt:
                # 130, as every one-shot command interrupted (main), never 0, which says the
                # index is built: a shell script goes on after a child that exits 0 on SIGINT
                # (`migrate-store && systemctl start voipgw`). Said here with what is not done.
                # A build of ours cut short leaves an invalid index, which the next build drops.
                missing = store.missing_indexes(ask=False)
                if missing:
                    said = f"{_not_built(missing)}; {_without(missing)}"
                elif store.stale_call_id_index:
                    # Every index built; its drop of the invalid leftover (which waits for the
                    # transactions open on call_records) was under way.
                    said = (
                        f"the invalid index {CALL_ID_INDEX} is not dropped (it answers nothing;"
                        " every call record save keeps it up): a node's next start, or"
                        " migrate-store run again, drops it"
                    )
                else:
                    said = "the indexes are built"
                print(f"voipgw: migrate-store: interrupted: {said}", file=sys.stderr)
                return EXIT_INTERRUPTED
            missing = [] if built else store.missing_indexes()
            if missing and RETENTION_INDEX not in missing:
                # Only the Call-ID index (a database not ordered by code point): without it
                # `voipgw calls --call-id` is slower, nothing is lost, and the nodes build it
                # (or the one building it now finishes it). Said, but exit 0: an upgrade
                # script (`migrate-store && systemctl start voipgw`) that passed before
                # session 42 must not stop for it.
                other = store.index_left_to
                why = f"left to {other}" if other is not None else "see the message above"
                for name in wanted:
                    if name not in missing:
                        print(f"store: the index {name} is built")
                print(
                    f"voipgw: migrate-store: warning: {_not_built(missing)} ({why});"
                    f" {_without(missing)} (the nodes build it: docs/operations.md, 'Calls and"
                    " log lines')",
                    file=sys.stderr,
                )
                return EXIT_OK
            if missing:
                other = store.index_left_to
                if other is not None:
                    waited = f"waited {args.wait:g} s for" if args.wait else "not waited for"
                    print(
                        f"voipgw: migrate-store: {_not_built(missing, yet=True)}: {waited}"
                        f" {other}; {_without(missing)} (run migrate-store again to wait on,"
                        " with --wait SECONDS)",
                        file=sys.stderr,
                    )
                    return EXIT_RUNTIME
                print(
                    f"voipgw: migrate-store: {_not_built(missing)} (see the message above);"
                    f" {_without(missing)}",
                    file=sys.stderr,
                )
                return EXIT_RUNTIME
            for name in wanted:
                print(f"store: the index {name} is built")
    finally:
        store.close()
    return EXIT_OK


# What is not done without each index voipgw builds apart from the migrations (PostgreSQL).
_WITHOUT_INDEX = {
    "call_records_kept_by": "call records are not deleted until it is",
    "call_records_call_id_c": "`voipgw calls --call-id` reads the whole table until it is",
}


def _not_built(names: list[str], *, yet: bool = False) -> str:
    """``the index NAME is not built`` (the first of ``names``: one at a time, as built)."""
    return f"the index {names[0] if names else '?'} is not built{' yet' if yet else ''}"


def _without(names: list[str]) -> str:
    return _WITHOUT_INDEX.get(names[0] if names else "", "it is needed")


def _media_policies(config: GatewayConfig) -> dict[str, MediaPolicy]:
    """The media policies ``config`` accepts: the built-in ones and those its enabled plugins
    register (what ``--media-policy`` takes, and what its help lists)."""
    return all_policies(_load_plugins(config, None).media_policies.items())


def _check_media_policy(name: str, config: GatewayConfig) -> None:
    """A policy name must be built in or registered by an enabled plugin: a typo would leave
    the account on a policy nobody knows (the gateway then refuses cleartext on its legs)."""
    known = _media_policies(config)
    if name not in known:
        raise ConfigError(
            "--media-policy",
            "",
            None,
            f"unknown media policy {name!r}; known: {', '.join(sorted(known))}",
        )


def _fingerprint_of(item: str) -> str:
    """SHA-256 fingerprint (hex) of a certificate file, or ``item`` itself when it already is
    one (64 hex digits, colons allowed)."""
    digits = item.replace(":", "")
    if len(digits) == 64 and all(c in "0123456789abcdefABCDEF" for c in digits):
        return digits.lower()
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    path = Path(item)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(item, "", None, f"cannot read certificate: {exc.strerror}") from None
    try:
        cert = (
            x509.load_pem_x509_certificate(data)
            if b"-----BEGIN" in data
            else x509.load_der_x509_certificate(data)
        )
    except ValueError:
        raise ConfigError(item, "", None, "not a PEM or DER X.509 certificate") from None
    return cert.fingerprint(hashes.SHA256()).hex()


def cmd_registrations(args: argparse.Namespace) -> int:
    import json

    from gateway.core.devices import DeviceIdentifier
    from gateway.core.nat_keepalive import is_behind_nat

    store, config = _open_store(args)
    try:
        plugins = _load_plugins(config, args)
        devices = DeviceIdentifier(plugins.device_profiles.items(), None, clock=time.monotonic)
        now = time.time()
        names = [args.account] if args.account else [a.name for a in store.accounts_list()]
        rows = []
        for name in names:
            for binding in store.bindings_for_account(name, now=now):
                device = devices.of_user_agent(binding.user_agent)
                rows.append(
                    {
                        "account": name,
                        "contact": binding.contact,
                        "transport": binding.flow.transport,
                        "source": binding.flow.remote,
                        "expires_in": binding.remaining(now),
                        "user_agent": binding.user_agent,
                        "device": device.name if device is not None else None,
                        "behind_nat": is_behind_nat(binding),
                        # RFC 3327: registered through an edge proxy, which calls reach first.
                        "path": list(binding.path),
                    }
                )
    finally:
        store.close()
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    if not rows:
        print("no registrations")
        return EXIT_OK
    for row in rows:
        extra = f"  device {row['device']}" if row["device"] else ""
        nat = "  behind NAT" if row["behind_nat"] else ""
        path = f"  via {', '.join(row['path'])}" if row["path"] else ""
        print(
            f"{row['account']}  {row['contact']}  from {row['transport']} {row['source']}  "
            f"{row['expires_in']} s left  {row['user_agent'] or '(no User-Agent)'}{extra}{nat}"
            f"{path}"
        )
    return EXIT_OK


def cmd_route(args: argparse.Namespace) -> int:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="voipgw-route-") as scratch:
        try:
            store, config = _open_store(args)
        except NoStore as exc:
            # A routing check of a config before its gateway ever ran (a config-CI script):
            # the config's trunks and numbering decide alone, said so, and nothing is created
            # where the store was looked for.
            print(
                f"voipgw: route: {exc}; routed with no accounts or registrations",
                file=sys.stderr,
            )
            args.state_dir = scratch
            store, config = _open_store(args, create=True)
        return _route(args, store, config)


def _route(args: argparse.Namespace, store: Any, config: GatewayConfig) -> int:
    from urllib.parse import quote

    from gateway.core.calls.routing import GatewayDirectory, route_call
    from gateway.core.interfaces import Caller
    from gateway.core.sip.grammar import parse_uri_untrusted
    from gateway.core.sip.message import Request
    from gateway.core.transport.flows import FlowTable

    try:
        plugins = _load_plugins(config, args)
        if args.from_trunk is not None:
            if config.trunk(args.from_trunk) is None:
                known = ", ".join(t.name for t in config.trunks) or "(none)"
                print(f"voipgw: no trunk {args.from_trunk!r}; trunks: {known}", file=sys.stderr)
                return EXIT_USAGE
            caller = Caller(kind="trunk", name=args.from_trunk)
            who = f"delivered by trunk {args.from_trunk}"
        else:
            caller = Caller(kind="account", name=args.from_account or "(any account)")
            who = f"dialled by account {args.from_account}" if args.from_account else "dialled"
        directory = GatewayDirectory(
            store,
            FlowTable(),
            config.trunks,
            frozenset(config.gateway.domains),
            now=time.time,
            numbering=config.numbering,
        )
        user = quote(args.number, safe="+*;=-.()")
        request = Request("INVITE", parse_uri_untrusted(f"sip:{user}@voipgw.invalid"))
        number = directory.to_e164(args.number, trunk=args.from_trunk)
        print(f"{args.number} {who}", end="")
        print(f": read as {number}" if number != args.number else "")
        decision = route_call(plugins.hook, request, caller, directory)
        if decision.reject_status is not None:
            print(f"refused: {decision.reject_status} {decision.reject_reason}")
            return EXIT_OK
        for index, target in enumerate((*decision.targets, *decision.alternates)):
            if index == len(decision.targets):
                print("if that fails (a failover status), one at a time:")
            if target.trunk is not None:
                print(f"  trunk {target.trunk}: {target.uri}")
            else:
                print(f"  account {target.account}: {target.uri}")
    finally:
        store.close()
    return EXIT_OK


COMMANDS = {
    "accounts": cmd_accounts,
    "route": cmd_route,
    "registrations": cmd_registrations,
    "calls": cmd_calls,
    "trunks": cmd_trunks,
    "media-workers": cmd_media_workers,
    "recording": cmd_recording,
    "run": cmd_run,
    "plugins": cmd_plugins,
    "check-config": cmd_check_config,
    "migrate-store": cmd_migrate_store,
    "metrics-password": cmd_metrics_password,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    token = _ARGV.set(sys.argv[1:] if argv is None else list(argv))
    try:
        args = parser.parse_args(argv)
    finally:
        _ARGV.reset(token)
    try:
        return COMMANDS[args.command](args)
    except ConfigError as exc:
        print(f"voipgw: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except PluginError as exc:
        print(f"voipgw: plugin error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except StoreError as exc:  # the store could not be opened (a database down, a newer schema)
        print(f"voipgw: store: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    except NoStore as exc:
        print(f"voipgw: {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        if args.command == "run":
            return EXIT_OK  # a stop asked for (before its signal handling was set up)
        print(f"voipgw: {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as exc:
        print(f"voipgw: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    except Exception:
        # A bug, or a plugin's code that raised (check-config builds the gateway, which asks
        # the plugins): logged as the gateway logs one, not printed whole by the interpreter,
        # which would show the text of a plugin's exception. `run` logs its own (cmd_run).
        log_exception(log, "voipgw %s stopped on an unexpected error", args.command)
        return EXIT_RUNTIME


if __name__ == "__main__":
    sys.exit(main())
