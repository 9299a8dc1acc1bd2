"""The log lines docs/operations.md lists as an interface ("Log lines watchers match") are the
lines the gateway writes: fail2ban filters, alerting rules and runbooks match them, and session
37 found four of them changed by an internal type's change with nothing failing.

Each row of the page's table becomes a regular expression (its text escaped, each ``<name>`` a
value of any length, but not one in quotes where the page shows none) that the record's whole
message must match, with the row's logger and level. Most rows are driven: the gateway's own
code writes the line (a registration service, the endpoint's and a call's handlers called on
stand-ins of what they read, the trunk health table, the store outage logs, a media worker
pool's supervision). The rest, marked *source* on the page, sit deep in a running gateway (a
TLS handshake, a CRL fetch, overload of the endpoint's queue, an abandoned SIPREC INVITE, a
call's end): their row must equal, value for value, the format string of a log call of that
logger and level in the code (its ``%s``, ``%d``... for the row's ``<name>``s, a ``%r`` or
``%X`` only where ``CONVERSIONS`` says the page says so), at as many sites as ``SITES`` says,
so a reworded line, a value written another way or a moved level fails too. A row that is in
neither list fails, as does a listed line the page no longer has."""

from __future__ import annotations

import argparse
import ast
import logging
import re
import sys
import time
import types
from collections.abc import Callable
from functools import cache
from pathlib import Path

import pytest
import trio

from gateway.core.auth.client import authorize
from gateway.core.auth.digest import AuthKind
from gateway.core.auth.failures import FailurePolicy
from gateway.core.calls.media_keys import CallMediaKeys
from gateway.core.calls.records import CallRecordBook
from gateway.core.calls.trunk_health import TrunkHealth
from gateway.core.config import PortRange
from gateway.core.endpoint import SipEndpoint
from gateway.core.logs import LineFormatter
from gateway.core.media import remote_relay
from gateway.core.media import worker as media_worker
from gateway.core.media.errors import LocalMediaError
from gateway.core.media.remote_relay import WorkerPool, _Worker
from gateway.core.media.security import KeyExchangeFailed
from gateway.core.media.worker_protocol import PROTOCOL_VERSION, Hello, encode
from gateway.core.registration import RegistrationService
from gateway.core.sip.message import Request, Response
from gateway.core.sip.transaction import (
    TransactionKey,
    TransactionTimeout,
    TransportFailed,
    server_key,
)
from gateway.core.store.sqlite import SqliteStore
from gateway.core.transport.flows import Flow, FlowKey
from gateway.plugins.metrics import MetricsConfig, MetricsExporter
from gateway.plugins.transports.tls import TlsConfig, TlsTransport
from tests.fail2ban_regex import (
    FAIL2BAN_HOST,
    as_fail2ban_reads,
    as_fail2ban_reads_from_journal,
    as_fail2ban_reads_from_syslog,
)
from tests.interop.harness.pki import TestPki
from tests.unit.sip.sip_builders import request

ROOT = Path(__file__).parent.parent
OPERATIONS = ROOT / "docs" / "operations.md"
CONFIGURATION = ROOT / "docs" / "configuration.md"

# How the page writes a transaction's key (gateway/core/sip/transaction.py, key_text), in rows
# as one value: `<key>`.
KEY = "TransactionKey(method='<method>', branch='<branch>', sent_by=<sent-by>, legacy=<legacy>)"
_PLACEHOLDER = re.compile(r"<[a-z][a-z0-9-]*>")
_LEVELS = {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


@cache
def documented() -> dict[str, tuple[str, str, str, bool]]:
    """name -> (logger, level, text, checked in the source) of the table under "Log lines
    watchers match" in docs/operations.md."""
    text = OPERATIONS.read_text("utf-8")
    section = text.split("## Log lines watchers match", 1)[1].split("\n#", 1)[0]
    rows: dict[str, tuple[str, str, str, bool]] = {}
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        name, logger, level, line_text, when = _cells(line)
        assert level in _LEVELS, line
        codes = [re.fullmatch(r"`([^`]+)`", cell) for cell in (name, logger, line_text)]
        assert all(codes), line
        name, logger, line_text = (code[1] for code in codes if code is not None)
        assert name not in rows, name
        rows[name] = (logger, level, line_text.replace("<key>", KEY), when.endswith("*source*"))
    return rows


def line_regex(text: str) -> re.Pattern[str]:
    """A documented line's text as a regular expression: literal but for its ``<name>``s, each
    a group."""
    parts = _PLACEHOLDER.split(text)
    return re.compile("(.*?)".join(re.escape(part) for part in parts), re.DOTALL)


# The values the page says are written quoted, as Python quotes a string (%r): the user name
# the client sent, and a transaction key's sent-by. Any other value written in quotes is a
# changed line (a %s become %r: watchers' patterns no longer match it), though every <name>
# takes any text.
QUOTED = {"<user>", "<sent-by>"}


def quoted_values(text: str, line: str) -> list[str]:
    """The ``<name>``s of ``text`` that ``line`` writes in quotes and the page does not."""
    match = line_regex(text).fullmatch(line)
    assert match is not None, (text, line)
    # <name>s with nothing between them (<user><prefix>) are one value: where one ends is not
    # known.
    runs: list[tuple[set[str], str]] = []
    joined = False
    literals = _PLACEHOLDER.split(text)[1:]  # the text after each <name>
    for name, value, after in zip(
        _PLACEHOLDER.findall(text), match.groups(), literals, strict=True
    ):
        if joined:
            runs[-1] = (runs[-1][0] | {name}, runs[-1][1] + value)
        else:
            runs.append(({name}, value))
        joined = after == ""
    return [
        " ".join(sorted(names))
        for names, value in runs
        if not names & QUOTED and re.fullmatch(r"'.*'|\".*\"", value, re.DOTALL)
    ]


# -- driven rows -------------------------------------------------------------------------------

GUESSER = ("192.0.2.66", 5060)


async def _send(data: bytes) -> None:
    raise AssertionError("nothing is sent")


def _flow(address: tuple[str, int]) -> Flow:
    return Flow(FlowKey("udp", ("127.0.0.1", 5060), address), _send, reliable=False)


def _registration(tmp_path: Path, policy: FailurePolicy) -> RegistrationService:
    store = SqliteStore.open(tmp_path / "state")
    store.accounts_add("1000", "secret1000", "voipgw.local")
    return RegistrationService(
        store,
        realm="voipgw.local",
        domains=frozenset({"127.0.0.1:5060"}),
        new_tag=lambda: "t",
        clock=lambda: 1000.0,
        failure_policy=policy,
    )


def _guesses(tmp_path: Path, policy: FailurePolicy, address: tuple[str, int] = GUESSER) -> None:
    """Three wrong passwords from ``address`` (the third blocks it), then one more REGISTER
    (refused: blocked)."""
    service = _registration(tmp_path, policy)
    host = f"[{address[0]}]" if ":" in address[0] else address[0]
    register = request("REGISTER", uri="sip:127.0.0.1:5060", sent_by=f"{host}:{address[1]}")
    challenge = service.authenticate(register, _flow(address), AuthKind.WWW)
    assert isinstance(challenge, Response) and challenge.status == 401
    wrong = authorize(register, challenge, username="1000", password="guess", cnonce="c1")
    assert wrong is not None
    for _ in range(3):
        service.authenticate(wrong, _flow(address), AuthKind.WWW)
    answer = service.authenticate(register, _flow(address), AuthKind.WWW)
    assert isinstance(answer, Response) and answer.status == 403


def _auth_lines(tmp_path: Path) -> None:
    _guesses(tmp_path / "v4", FailurePolicy(max_failures=3, window=5.0))
    _guesses(
        tmp_path / "v6",
        FailurePolicy(max_failures=3, window=5.0, block_time=600, ipv6_prefix_length=64),
        ("2001:db8:1:2::66", 5060),
    )


class _Transaction:
    """What the endpoint reads of a transaction that failed: its key (and its identity)."""

    def __init__(self, key: TransactionKey) -> None:
        self.key = key


def _transaction(timer: str | None) -> Callable[[Path], None]:
    """A transaction's failure (a timeout of ``timer``, else a transport failure) handed to the
    endpoint's handler, on an endpoint whose client requests do not hold it (nobody waits for
    it any more)."""

    def drive(tmp_path: Path) -> None:
        invite = request("INVITE", uri="sip:1000@127.0.0.1:5060", sent_by="192.0.2.66:5060")
        transaction = _Transaction(server_key(invite))
        endpoint = types.SimpleNamespace(_client_requests={})
        failure: TransactionTimeout | TransportFailed
        if timer is None:
            failure = TransportFailed(transaction)  # type: ignore[arg-type]
        else:
            failure = TransactionTimeout(transaction, timer)  # type: ignore[arg-type]
        SipEndpoint._fail_client(endpoint, failure)  # type: ignore[arg-type]

    return drive


def _call() -> types.SimpleNamespace:
    """What a call's key and media handlers read of their call."""
    return types.SimpleNamespace(
        id="a84b4c76e66710@192.0.2.4",
        keying=types.SimpleNamespace(block_all=lambda: None),
        post=lambda event: None,
    )


def _key_exchange_failed(tmp_path: Path) -> None:
    reason = "the peer's DTLS certificate does not match the SDP fingerprint"
    CallMediaKeys._handshake_failed(_call(), "b", reason)  # type: ignore[arg-type]


def _key_exchange_plugin_failed(tmp_path: Path) -> None:
    failed = KeyExchangeFailed("sdes", ValueError("the text is withheld"))
    CallMediaKeys._answer_failed(_call(), failed, "answer")  # type: ignore[arg-type]


def _media_lost(tmp_path: Path) -> None:
    CallMediaKeys._media_lost(_call(), "media worker exited")  # type: ignore[arg-type]


def _trunk_down_and_up(tmp_path: Path) -> None:
    health = TrunkHealth(["carrier"])
    for _ in range(3):
        health.probe_failed("carrier", "no answer to OPTIONS within 32 s")
    assert not health.is_up("carrier")
    health.answered("carrier")
    assert health.is_up("carrier")


def _registration_store(tmp_path: Path) -> None:
    service = _registration(tmp_path, FailurePolicy())
    why = "PostgreSQL host=db: connection lost (no answer within 1.5 s)"
    service.store_failures.failed(why, now=1000.0)
    service.store_failures.failed(why, now=1100.0)
    service.store_failures.failed(why, now=1400.0)
    service.store_failures.answered(now=1500.0)


def _records_store(tmp_path: Path) -> None:
    book = CallRecordBook(SqliteStore.open(tmp_path / "state"))
    book.busy.failed("it is busy (database is locked)", now=1000.0)


def _worker_exits(tmp_path: Path) -> None:
    """A pool's worker that exits (a crash) and, started again, says it speaks another
    protocol version: the pool's own supervision, with a stand-in for the worker process that
    sends the Hello of the next version and exits as a real worker does on a mismatch
    (tests/integration/media/test_media_workers.py runs the real worker)."""
    hello = encode(Hello(PROTOCOL_VERSION + 1)).hex()
    _worker_restarted_as(
        f"import os, sys; os.write(int(sys.argv[1]), bytes.fromhex('{hello}')); sys.exit(78)"
    )


def _worker_command_line_refused(tmp_path: Path) -> None:
    """A pool's worker that exits (a crash) and, started again, refuses its command line as an
    older worker's argparse does (status 2, nothing on its channel; the integration tests run
    one that parses the real command line)."""
    _worker_restarted_as("import sys; sys.exit(2)")


def _worker_restarted_as(stand_in: str) -> None:
    """A one-worker pool's supervision whose first worker is up, then dies; the one started
    again is the Python program ``stand_in`` (given the channel's descriptor), which must get
    its slot stopped."""
    starts = _supervise_a_worker_that_dies(
        lambda fd: [sys.executable, "-I", "-S", "-c", stand_in, str(fd)],
        done=lambda pool, worker: worker.stopped is not None,
    )
    assert starts == 2


def _worker_not_started(tmp_path: Path) -> None:
    """A one-worker pool's supervision whose first worker is up, then dies, and whose next
    process cannot be made (its program is gone, as after an upgrade that removed the
    interpreter): said, and tried again with back-off."""
    states: list[str] = []

    def tried_twice(pool: WorkerPool, worker: _Worker) -> bool:
        states[:] = pool.worker_states()
        return pool.worker_restarts()["not_started"] >= 2

    _supervise_a_worker_that_dies(lambda fd: [str(tmp_path / "no-such-python")], done=tried_twice)
    assert states == ["restarting"]


def _supervise_a_worker_that_dies(
    command_line: Callable[[int], list[str]], *, done: Callable[[WorkerPool, _Worker], bool]
) -> int:
    """A one-worker pool's own supervision: its first worker is up, then dies (-9); every
    process started after it runs ``command_line(channel descriptor)``. Supervised until
    ``done(pool, worker)``, within 20 s; how many times a worker was started."""
    pool = WorkerPool("127.0.0.1", PortRange.parse("40000-40009"), 1, restart_delay=0.01)
    (worker,) = pool._workers

    def command(worker: object, fd: int) -> list[str]:
        return command_line(fd)

    pool._command = command  # type: ignore[method-assign]
    run_once = pool._run_once
    starts = 0

    async def crash_first(worker: object, task_status: trio.TaskStatus[None] | None) -> int | None:
        nonlocal starts
        starts += 1
        if starts == 1:  # the first worker is up, then dies
            assert task_status is not None
            task_status.started()
            return -9
        return await run_once(worker, task_status)  # type: ignore[arg-type]

    pool._run_once = crash_first  # type: ignore[method-assign]

    async def supervise() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(pool._supervise, worker)
            with trio.fail_after(20):
                while not done(pool, worker):
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()

    trio.run(supervise)
    return starts


def _worker_not_ready(tmp_path: Path) -> None:
    """A pool's worker that never says it is ready, at start-up: a stand-in that writes nothing,
    given 0.2 s to be ready (60 s) and 0.1 s to exit (2 s) before it is killed."""
    pool = WorkerPool("127.0.0.1", PortRange.parse("40000-40009"), 1, ready_within=0.2)

    def command(worker: object, fd: int) -> list[str]:
        return [sys.executable, "-I", "-S", "-c", "import time; time.sleep(60)"]

    pool._command = command  # type: ignore[method-assign]
    grace = remote_relay.STOP_GRACE

    async def start() -> None:
        with trio.fail_after(20):
            await pool.serve()

    remote_relay.STOP_GRACE = 0.1
    try:
        with pytest.raises(LocalMediaError, match=r"did not say it was ready within 0\.2 s"):
            trio.run(start)
    finally:
        remote_relay.STOP_GRACE = grace


def _worker_protocol_refused(tmp_path: Path) -> None:
    """A worker started by a gateway process of the previous protocol version (no channel to
    tell: it only logs)."""
    first = argparse.Namespace(index="0", protocol_version=str(PROTOCOL_VERSION - 1), fd=None)
    media_worker._refuse_protocol(first)


def _tls_certificate_expiring(tmp_path: Path) -> None:
    """A tls transport serving a certificate that ends in 10 days, as its daily look finds
    it (tests/component/transports/test_tls_certificate_expiry.py drives the days)."""
    pair = TestPki(tmp_path).ca("CA").issue("gateway", days=10)
    config = TlsConfig(certificate=str(pair.certificate), private_key=str(pair.key))
    TlsTransport(config).warn_if_expiring(now=time.time())


def _metrics_certificate_expiring(tmp_path: Path) -> None:
    """The metrics exporter serving a certificate that ends in 10 days, as its daily look
    finds it (tests/component/metrics/test_metrics_certificate_expiry.py drives the days)."""
    pair = TestPki(tmp_path).ca("CA").issue("metrics", days=10)
    config = MetricsConfig(tls_certificate=str(pair.certificate), tls_private_key=str(pair.key))
    exporter = MetricsExporter(config)
    exporter.reload_certificates()  # what run() loads, without its socket
    exporter.warn_if_expiring(now=time.time())


DRIVEN: dict[str, Callable[[Path], None]] = {
    "auth-failed": _auth_lines,
    "auth-blocked": _auth_lines,
    "auth-refused": _auth_lines,
    "transaction-timeout": _transaction("B"),
    "transaction-transport-failed": _transaction(None),
    "timer-h": _transaction("H"),
    "key-exchange-failed": _key_exchange_failed,
    "key-exchange-plugin-failed": _key_exchange_plugin_failed,
    "media-lost": _media_lost,
    "trunk-down": _trunk_down_and_up,
    "trunk-up": _trunk_down_and_up,
    "store-failing": _registration_store,
    "store-still-failing": _registration_store,
    "store-answers": _registration_store,
    "records-busy": _records_store,
    "worker-exited": _worker_exits,
    "worker-command-line-refused": _worker_command_line_refused,
    "worker-not-ready": _worker_not_ready,
    "worker-not-started": _worker_not_started,
    "worker-protocol-mismatch": _worker_exits,
    "worker-protocol-refused": _worker_protocol_refused,
    "tls-certificate-expiring": _tls_certificate_expiring,
    "metrics-certificate-expiring": _metrics_certificate_expiring,
}


def test_every_documented_line_is_checked_here() -> None:
    rows = documented()
    assert len(rows) >= 20
    driven = {name for name, row in rows.items() if not row[3]}
    assert driven == set(DRIVEN), "a driven row without its driver here, or a driver too many"
    for name, (logger, _, text, _) in rows.items():
        assert logger.startswith("gateway."), name
        assert _PLACEHOLDER.sub("", text).strip(), name


@pytest.mark.parametrize("name", sorted(DRIVEN))
def test_the_gateway_writes_the_documented_line(
    name: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    logger, level, text, _ = documented()[name]
    caplog.set_level(logging.DEBUG, logger)
    DRIVEN[name](tmp_path)
    written = [
        record.getMessage()
        for record in caplog.records
        if record.name == logger and record.levelname == level
    ]
    regex = line_regex(text)
    matching = [line for line in written if regex.fullmatch(line)]
    assert matching, (text, written)
    for line in matching:
        assert quoted_values(text, line) == [], (text, line)


# -- rows checked in the source -----------------------------------------------------------------

_SPEC = re.compile(r"%[-#0 +]*\d*(?:\.\d+)?[sdirgfXxo]")


def _module_name(path: Path) -> str:
    """The module's ``__name__``: a package's ``__init__.py`` is the package."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


_GET_LOGGER = re.compile(r'^log = logging\.getLogger\((__name__|"[\w.]+")\)$', re.MULTILINE)
_IMPORTS = re.compile(r"^from ([\w.]+) import (\([^)]*\)|.*)$", re.MULTILINE)


@cache
def _loggers() -> dict[str, str]:
    """Module name -> the name of the logger its ``log`` is, for every module of the gateway
    that has one: ``logging.getLogger(__name__)``, ``logging.getLogger("name")``, or ``log``
    imported from a module that has one (gateway/core/calls/*.py log as the call). Read from
    the text (parsing every module took seconds)."""
    loggers: dict[str, str] = {}
    imported: dict[str, str] = {}
    for path in GATEWAY_FILES:
        module, text = _module_name(path), path.read_text("utf-8")
        if match := _GET_LOGGER.search(text):
            loggers[module] = module if match[1] == "__name__" else match[1].strip('"')
        for source, names in _IMPORTS.findall(text):
            if "log" in re.findall(r"\w+", names):
                imported[module] = source
    for module, source in imported.items():
        if source in loggers:
            loggers[module] = loggers[source]
    return loggers


GATEWAY_FILES = sorted((ROOT / "gateway").rglob("*.py"))


@cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text("utf-8"))


@cache
def _log_calls(logger: str) -> list[tuple[str, str, list[ast.expr]]]:
    """(level, format, arguments) of every ``log.<level>("format", ...)``,
    ``log.log(<level>, "format", ...)`` (once for each ``logging.<LEVEL>`` its level
    expression names) and ``log_exception(log, "format", ...)`` (ERROR, or the ``level`` it is
    given) in the modules whose ``log`` is ``logger``."""
    calls = []
    for path in GATEWAY_FILES:
        if _loggers().get(_module_name(path)) != logger:
            continue
        for node in ast.walk(_tree(path)):
            if not isinstance(node, ast.Call):
                continue
            function = ast.unparse(node.func)
            levels: list[str]
            if function == "log.log" and node.args:
                # log.log(logging.WARNING if first else logging.DEBUG, ...): each level named
                levels = [n.attr for n in ast.walk(node.args[0]) if isinstance(n, ast.Attribute)]
                arguments = node.args[1:]
            elif isinstance(node.func, ast.Attribute) and function.startswith("log."):
                levels, arguments = [node.func.attr.upper()], node.args
            elif function == "log_exception" and node.args and ast.unparse(node.args[0]) == "log":
                given = {k.arg: ast.unparse(k.value) for k in node.keywords}
                levels = [given.get("level", "logging.ERROR").removeprefix("logging.")]
                arguments = node.args[1:]
            else:
                continue
            first = arguments[0] if arguments else None
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                for level in levels:
                    if level in _LEVELS:
                        calls.append((level, first.value, arguments[1:]))
    return calls


# Rows written by more than one log call, each of which must keep the text: how many.
SITES = {
    # A CRL out of date when read (start-up, reload) and when its next update passes.
    "crl-expired": 2,
    # A pause asked after the answer, and one asked before it as it applies at the answer.
    "recording-paused": 2,
    "recording-pause-not-recorded": 2,
}

SOURCE_ONLY = sorted(name for name, row in documented().items() if row[3])


# Conversions that change how a value reads, which the page says in words: %r quotes a string
# (and escapes what is not printable), %X and %x write a number in hexadecimal. Every other
# <name> of a row checked in the source is written with %s, %d, %i, %f or %g (%.0f...).
CONVERSIONS = {
    # <user>: quoted as Python quotes a string, as in auth-failed (the client's to choose).
    ("auth-credentials-not-taken", "<user>"): "r",
    ("tls-revoked", "<serial>"): "X",
    ("tls-ocsp-revoked", "<serial>"): "X",
}


@pytest.mark.parametrize("name", SOURCE_ONLY)
def test_the_documented_line_is_the_format_in_the_code(name: str) -> None:
    logger, level, text, _ = documented()[name]
    documented_form = _PLACEHOLDER.sub("\0", text.replace(KEY, "<key>"))
    found = [
        (written, arguments)
        for called_at, written, arguments in _log_calls(logger)
        if called_at == level and _SPEC.sub("\0", written) == documented_form
    ]
    assert len(found) == SITES.get(name, 1), (text, [w for _, w, _ in _log_calls(logger)])
    names = _PLACEHOLDER.findall(text.replace(KEY, "<key>"))
    expected = [CONVERSIONS.get((name, placeholder), "sdifg") for placeholder in names]
    for written, _ in found:
        conversions = [spec[-1] for spec in _SPEC.findall(written)]
        assert len(conversions) == len(expected), written
        assert all(c in e for c, e in zip(conversions, expected, strict=True)), (written, names)
    if KEY in text:  # the key is written by key_text, as the driven transaction lines show
        ((_, arguments),) = found
        index = text.replace(KEY, "<key>").index("<key>")
        position = len(_PLACEHOLDER.findall(text.replace(KEY, "<key>")[:index]))
        argument = arguments[position]
        assert isinstance(argument, ast.Call) and ast.unparse(argument.func) == "key_text"


def test_a_row_s_text_fails_a_changed_line() -> None:
    """The checks above can fail: a line with a word changed, or with text added at an end,
    matches no row."""
    regex = line_regex(documented()["trunk-down"][2])
    assert regex.fullmatch("trunk carrier is down: no answer; its calls go to the next trunk")
    assert not regex.fullmatch("trunk carrier is down: no answer; its calls go to another trunk")
    assert not regex.fullmatch("trunk carrier went down: no answer; its calls go to the next trunk")
    assert not regex.fullmatch("trunk carrier is down: no answer; its calls go to the next trunk.")


# -- fail2ban --------------------------------------------------------------------------------


def _configuration_failregexes() -> list[str]:
    """The failregexes docs/configuration.md gives fail2ban for the failures' and the
    refusals' lines (auth_ipv6_prefix_length's row), as written."""
    text = CONFIGURATION.read_text("utf-8")
    (row,) = [line for line in text.splitlines() if line.startswith("| `auth_ipv6_prefix_length`")]
    codes = re.findall(r"`([^`]*)`", row)
    return [code for code in codes if "<HOST>" in code and code.startswith("^")]


def _operations_failregexes() -> list[str]:
    """The failregex lines of docs/operations.md's filter file."""
    text = OPERATIONS.read_text("utf-8")
    block = text.split("```ini\n", 1)[1].split("```", 1)[0]
    return [
        line.removeprefix("failregex =").strip()
        for line in block.splitlines()
        if line.startswith(("failregex =", " "))
    ]


def test_the_filter_file_is_the_configuration_pages_filters() -> None:
    regexes = _configuration_failregexes()
    prefix = r"^\s*(?:\S+ \S+: \d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} )?WARNING "
    assert len(regexes) == 2 and all(regex.startswith(prefix) for regex in regexes)
    assert "..." not in "".join(regexes)  # literal regexes, no placeholders to fill in
    assert _operations_failregexes() == regexes


def _failure_regex() -> str:
    (regex,) = [code for code in _configuration_failregexes() if "authentication failed" in code]
    return regex.replace("<HOST>", FAIL2BAN_HOST)


def _refusals_regex() -> str:
    (regex,) = [code for code in _configuration_failregexes() if "refused: too many" in code]
    return regex.replace("<HOST>", FAIL2BAN_HOST)


# How fail2ban may read a line: from a file the gateway's standard error goes to, from the
# journal (the README's systemd unit), from a syslog file (docs/operations.md's "fail2ban").
READINGS = {
    "file": as_fail2ban_reads,
    "journal": as_fail2ban_reads_from_journal,
    "syslog": as_fail2ban_reads_from_syslog,
}


@pytest.mark.parametrize("reading", sorted(READINGS))
@pytest.mark.parametrize(
    ("address", "policy"),
    [
        (GUESSER, FailurePolicy(max_failures=3, window=5.0)),
        (GUESSER, FailurePolicy(max_failures=3, window=5.0, block_time=600)),
        (("2001:db8:1:2::66", 5060), FailurePolicy(max_failures=3, window=5.0)),
        (
            ("2001:db8:1:2::66", 5060),
            FailurePolicy(max_failures=3, window=5.0, block_time=600, ipv6_prefix_length=64),
        ),
        (("::ffff:192.0.2.66", 5060), FailurePolicy(max_failures=3, window=5.0)),
    ],
)
def test_the_documented_failures_filter_takes_each_failures_address(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    address: tuple[str, int],
    policy: FailurePolicy,
    reading: str,
) -> None:
    """The failregexes docs/configuration.md (and docs/operations.md's filter file) give,
    matched as fail2ban matches a line (from a file: its date cut; from the journal or a syslog
    file: what they put before it, and the gateway's date), take the address of every
    failure's line, the blocking one included, and of the refusals' line, each its own."""
    reads = READINGS[reading]
    caplog.set_level(logging.WARNING, "gateway.core.registration")
    _guesses(tmp_path, policy, address)
    failures = [r for r in caplog.records if "authentication failed" in r.getMessage()]
    assert len(failures) == 3
    for record in failures:
        match = re.search(_failure_regex(), reads(record, LineFormatter()))
        assert match is not None, reads(record, LineFormatter())
        assert (match["ip4"] or match["ip6"]) == address[0].removeprefix("::ffff:")
        assert re.search(_refusals_regex(), reads(record, LineFormatter())) is None
    (refusal,) = [r for r in caplog.records if "refused: too many" in r.getMessage()]
    assert re.search(_failure_regex(), reads(refusal, LineFormatter())) is None
    match = re.search(_refusals_regex(), reads(refusal, LineFormatter()))
    assert match is not None, reads(refusal, LineFormatter())
    assert (match["ip4"] or match["ip6"]) == address[0].removeprefix("::ffff:")


@pytest.mark.parametrize("reading", sorted(READINGS))
def test_the_documented_failures_filter_takes_no_address_from_a_user_name(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, reading: str
) -> None:
    """A guesser's user name holding a failure line's text with another's address (logged
    within the line, after the guesser's own): the filter, anchored at the line's start, takes
    the guesser's address only; one that lets the line's start run (``.*`` before ``from``, as
    filters written for other programs' lines do) takes the victim's."""
    caplog.set_level(logging.WARNING, "gateway.core.registration")
    service = _registration(tmp_path, FailurePolicy(max_failures=3, window=5.0))
    injected = "x' INVITE from 203.0.113.9:5060: authentication failed for user 'y"
    register = request("REGISTER", uri="sip:127.0.0.1:5060", sent_by="192.0.2.66:5060")
    challenge = service.authenticate(register, _flow(GUESSER), AuthKind.WWW)
    assert isinstance(challenge, Response)
    wrong = authorize(register, challenge, username=injected, password="x", cnonce="c")
    assert isinstance(wrong, Request)
    service.authenticate(wrong, _flow(GUESSER), AuthKind.WWW)
    (record,) = [r for r in caplog.records if "authentication failed" in r.getMessage()]
    line = READINGS[reading](record, LineFormatter())
    assert [m["ip4"] for m in re.finditer(_failure_regex(), line)] == ["192.0.2.66"]
    loose = _failure_regex().replace(r"(?:REGISTER|INVITE) from ", r".*(?:REGISTER|INVITE) from ")
    match = re.search(loose, line)
    assert match is not None and match["ip4"] == "203.0.113.9"
