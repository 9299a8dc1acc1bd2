"""What a log line says of a transport's exception (gateway.core.logs.transport_error_text).

A transport is a plugin, and a third-party one may raise any text: a password or a key it had in
hand included. The core's lines (``call %s: cannot send ACK: %s``) and a call's end reason show
an OSError's errno name and the operating system's own text for it, an ssl.SSLError's OpenSSL
reason code, the core's own text for what the core raised, and otherwise only the exception's
type, never what the transport wrote.

A source scan, not a proof, keeps it so: a log call of gateway/core or gateway/plugins inside an
``except`` of OSError (or trio's BrokenResourceError, ClosedResourceError) fails the test when it
formats the exception caught there other than through transport_error_text (``exc.errno`` and
``type(exc)`` say nothing a plugin wrote)."""

from __future__ import annotations

import ast
import ssl
import textwrap
from pathlib import Path
from typing import Any

import pytest
import trio

import gateway.core
import gateway.plugins
from gateway.core import logs
from gateway.core.logs import transport_error_text
from tests.interop.harness.pki import TestPki

SECRET = "hunter2-sip-password"


def module(name: str, source: str) -> dict[str, Any]:
    """The globals of ``source`` run as module ``name`` (its frames say so), as in
    test_logs.py."""
    namespace: dict[str, Any] = {"__name__": name, "trio": trio}
    exec(compile(textwrap.dedent(source), f"<{name}>", "exec"), namespace)
    return namespace


TRANSPORT = module(
    "acme_transport.flows",
    """
    import errno, socket, ssl

    def refused(secret):
        raise ConnectionRefusedError(errno.ECONNREFUSED, f"cannot connect with {secret}")

    def no_errno(secret):
        raise OSError(f"login {secret} rejected")

    def unknown_errno(secret):
        raise OSError(99999, secret)

    def broken(secret):
        try:
            raise ConnectionResetError(errno.ECONNRESET, secret)
        except OSError as exc:
            raise trio.BrokenResourceError(secret) from exc

    def broken_by(cause):
        raise trio.BrokenResourceError("by the plugin") from cause

    def closed(secret):
        raise trio.ClosedResourceError(secret)

    def made_ssl_error(secret):
        raise ssl.SSLError(1, secret)

    def resolver(secret):
        raise socket.gaierror(socket.EAI_NONAME, secret)

    def all_attempts_failed(secret):
        # What trio.open_tcp_stream raises, reached through a transport's open_flow: no errno
        # of its own, raised from the group of each address's error.
        group = ExceptionGroup(secret, [
            ConnectionRefusedError(errno.ECONNREFUSED, secret),
            ConnectionRefusedError(errno.ECONNREFUSED, secret),
            OSError(errno.ENETUNREACH, secret),
            OSError(secret),
        ])
        raise OSError(f"all attempts to connect to {secret} failed") from group
    """,
)

CORE = module(
    "gateway.core.example",
    """
    def no_listener():
        try:
            raise OSError("no tcp listener")
        except OSError as exc:
            return exc
    """,
)


def raised(function: Any, *args: object) -> BaseException:
    try:
        function(*args)
    except BaseException as exc:
        return exc
    raise AssertionError("did not raise")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("refused", "ECONNREFUSED (Connection refused)"),
        ("no_errno", "OSError"),
        ("unknown_errno", "OSError"),
        ("broken", "trio.BrokenResourceError (ECONNRESET (Connection reset by peer))"),
        ("closed", "trio.ClosedResourceError"),
        ("made_ssl_error", "ssl.SSLError"),
        ("resolver", "EAI_NONAME (name resolution failed)"),
        (
            "all_attempts_failed",
            "OSError (ECONNREFUSED (Connection refused); ENETUNREACH (Network is unreachable))",
        ),
    ],
)
def test_a_transports_exception_shows_what_the_system_says_never_its_text(
    name: str, expected: str
) -> None:
    exc = raised(TRANSPORT[name], SECRET)
    assert transport_error_text(exc) == expected
    assert SECRET not in transport_error_text(exc)


def test_an_openssl_error_shows_openssls_reason_code() -> None:
    context = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="example.test")
    incoming.write(b"\x15\x03\x03\x00\x02\x02\x28" * 4)  # not a ServerHello: a fatal alert
    exc = raised(tls.do_handshake)
    assert isinstance(exc, ssl.SSLError)
    text = transport_error_text(exc)
    assert text.startswith("SSLError ") and text[9:].replace("_", "").isalnum(), text


def test_a_refused_certificate_says_why(tmp_path: Path) -> None:
    # A peer's certificate for another host: OpenSSL's verify code says so (the operator must
    # tell a host name mismatch from an expired or untrusted certificate), in OpenSSL's words.
    pki = TestPki(tmp_path)
    ca = pki.ca("Example CA")
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(ca.issue("peer", hosts=["peer.example.test"]).combined)
    client = ssl.create_default_context(cafile=str(ca.certificate))
    exc = handshake_failure(client, server, "other.example.test")
    assert isinstance(exc, ssl.SSLCertVerificationError)
    wrapped = raised(TRANSPORT["broken_by"], exc)
    assert transport_error_text(wrapped) == (
        "trio.BrokenResourceError (SSLError CERTIFICATE_VERIFY_FAILED (hostname mismatch))"
    )
    untrusted = ssl.create_default_context()  # the system's CAs: not ours
    exc = handshake_failure(untrusted, server, "peer.example.test")
    assert transport_error_text(raised(TRANSPORT["broken_by"], exc)) == (
        "trio.BrokenResourceError "
        "(SSLError CERTIFICATE_VERIFY_FAILED (unable to get local issuer certificate))"
    )


def handshake_failure(
    client: ssl.SSLContext, server: ssl.SSLContext, hostname: str
) -> BaseException:
    """What the client's handshake raises, over memory BIOs."""
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    ours = client.wrap_bio(to_client, to_server, server_hostname=hostname)
    theirs = server.wrap_bio(to_server, to_client, server_side=True)
    for _ in range(10):
        for side in (ours, theirs):
            try:
                side.do_handshake()
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError as exc:
                if side is ours:
                    return exc
    raise AssertionError("the handshake did not fail")


def test_the_cores_own_transport_errors_keep_their_words() -> None:
    # Caught in the core, as the core's own lines catch it: no plugin frame on its way.
    assert transport_error_text(CORE["no_listener"]()) == "no tcp listener"


BUILT_IN = module(
    "gateway.plugins.transports.example",
    """
    import errno

    def no_listener():
        raise OSError("no tcp listener is running to own outbound connections")

    def all_attempts_failed():
        group = ExceptionGroup("", [ConnectionRefusedError(errno.ECONNREFUSED, "refused")])
        raise OSError("all attempts to connect to 192.0.2.1:5060 failed") from group

    def through(function, *args):
        return function(*args)
    """,
)
CALLER = module(
    "gateway.core.example_caller",
    """
    def caught(function, *args):
        try:
            function(*args)
        except OSError as exc:
            return exc
        raise AssertionError("did not raise")
    """,
)


def test_a_built_in_transports_own_text_is_shown_a_third_partys_through_it_is_not() -> None:
    # The built-in transports (gateway/plugins/transports) are the project's code: what they
    # raise names an address, a listener or a timeout, and the operator needs it. A frame of a
    # third-party transport on the way (one subclassing a built-in) makes it plugin text.
    caught = CALLER["caught"]
    assert transport_error_text(caught(BUILT_IN["no_listener"])) == (
        "no tcp listener is running to own outbound connections"
    )
    assert transport_error_text(caught(BUILT_IN["all_attempts_failed"])) == (
        "all attempts to connect to 192.0.2.1:5060 failed (ECONNREFUSED (Connection refused))"
    )
    through = caught(BUILT_IN["through"], TRANSPORT["no_errno"], SECRET)
    assert transport_error_text(through) == "OSError"


def test_the_operator_may_show_the_transports_text(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs, "_show_plugin_text", True)
    assert SECRET in transport_error_text(raised(TRANSPORT["no_errno"], SECRET))


def test_strerror_set_by_a_plugin_is_not_the_systems() -> None:
    exc = raised(TRANSPORT["refused"], SECRET)
    assert isinstance(exc, OSError)
    assert exc.strerror is not None and SECRET in exc.strerror
    assert transport_error_text(exc) == "ECONNREFUSED (Connection refused)"


# -- the source scan ------------------------------------------------------------------------

LOG_METHODS = {"debug", "info", "warning", "error", "exception", "critical", "log"}
LOGGERS = {"log", "logger"}
# What a send, a connect or a listen over a transport raises.
TRANSPORT_ERRORS = {
    "OSError",
    "ConnectionError",
    "ConnectionResetError",
    "ConnectionRefusedError",
    "BrokenPipeError",
    "TimeoutError",
    "BrokenResourceError",
    "ClosedResourceError",
    "SSLError",
    "gaierror",
}
# Handlers of a plugin's own file operations (the operating system's text about a file the
# operator named, which the line names too), not of a transport: (module, function).
FILE_OPERATIONS = {
    ("gateway/plugins/keyexchange/mikey/replay_store.py", "load"),
    ("gateway/plugins/keyexchange/mikey/replay_store.py", "_write"),
    ("gateway/plugins/keyexchange/zrtp/cache.py", "lookup"),
    ("gateway/plugins/keyexchange/zrtp/cache.py", "store"),
    ("gateway/plugins/taps/recorder.py", "run"),
}


def _log_arguments(node: ast.Call) -> list[ast.expr]:
    func = node.func
    if (
        isinstance(func, ast.Attribute)
        and func.attr in LOG_METHODS
        and isinstance(func.value, ast.Name)
        and func.value.id in LOGGERS
    ):
        return node.args[2:] if func.attr == "log" else node.args[1:]
    if isinstance(func, ast.Name) and func.id == "log_exception":
        return node.args[2:]
    return []


def _catches_transport_errors(handler: ast.ExceptHandler) -> bool:
    kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(
        (isinstance(kind, ast.Name) and kind.id in TRANSPORT_ERRORS)
        or (isinstance(kind, ast.Attribute) and kind.attr in TRANSPORT_ERRORS)
        for kind in kinds
    )


def _bare(argument: ast.AST, name: str) -> list[int]:
    """Lines where ``argument`` shows the exception ``name`` other than through
    transport_error_text(...), ``name.errno`` or ``type(name)``."""
    if (
        isinstance(argument, ast.Call)
        and isinstance(argument.func, ast.Name)
        and argument.func.id in ("transport_error_text", "type")
    ):
        return []
    if (
        isinstance(argument, ast.Attribute)
        and argument.attr == "errno"
        and isinstance(argument.value, ast.Name)
    ):
        return []
    if isinstance(argument, ast.Name) and argument.id == name:
        return [argument.lineno]
    return [line for child in ast.iter_child_nodes(argument) for line in _bare(child, name)]


def bare_exceptions(source: str, filename: str = "<source>") -> list[tuple[str, int]]:
    """(function, line) of each log call in ``source`` that formats a transport's exception
    unchecked."""
    found = []
    for function in ast.walk(ast.parse(source, filename)):
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for handler in ast.walk(function):
            if not (
                isinstance(handler, ast.ExceptHandler)
                and handler.name is not None
                and handler.type is not None
                and _catches_transport_errors(handler)
            ):
                continue
            for node in ast.walk(ast.Module(body=handler.body, type_ignores=[])):
                if isinstance(node, ast.Call):
                    for argument in _log_arguments(node):
                        for line in _bare(argument, handler.name):
                            found.append((function.name, line))
    return sorted(set(found))


def test_the_scan_finds_what_it_is_for() -> None:
    def scan(body: str, caught: str = "OSError") -> list[int]:
        source = f"def f():\n    try:\n        send()\n    except {caught} as exc:\n{body}"
        return [line for _, line in bare_exceptions(source)]

    assert scan('        log.info("cannot send ACK: %s", exc)\n') == [5]
    assert scan('        log.info("x %s", exc)\n', "(trio.BrokenResourceError, ValueError)") == [5]
    assert scan('        logger.warning("x %s", f"why: {exc}")\n', "ssl.SSLError") == [5]
    assert scan('        log.info("x %s", exc.strerror or exc)\n') == [5]
    assert scan('        log_exception(log, "x %s", str(exc), level=1)\n') == [5]
    assert scan('        log.info("x %s", transport_error_text(exc))\n') == []
    assert scan('        log.info("x %s %s", exc.errno, type(exc).__name__)\n') == []
    assert scan('        log_exception(log, "x", exc=exc)\n') == []
    assert scan('        log.info("x %s", exc)\n', "ValueError") == []


def test_no_log_line_shows_a_transports_exception_unchecked() -> None:
    root = Path(gateway.core.__file__).parent.parent.parent
    found = set()
    scanned = set()
    for package in (gateway.core, gateway.plugins):
        for path in sorted(Path(package.__file__).parent.rglob("*.py")):
            name = path.relative_to(root).as_posix()
            for function, line in bare_exceptions(path.read_text(), str(path)):
                if (name, function) in FILE_OPERATIONS:
                    scanned.add((name, function))
                else:
                    found.add(f"{name}:{line}")
    assert found == set(), "pass these exceptions through transport_error_text"
    assert scanned == FILE_OPERATIONS, "a file operation listed here is gone: unlist it"
