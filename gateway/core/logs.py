"""Logging an exception plugin code may have raised: its traceback, never its text.

Theory of operation. The project's rule is that secrets (SRTP keys, DTLS private keys,
passwords, digest HA1) never reach a log. The core keeps it for the messages it writes; it
cannot for the text of an exception a plugin raises: a key-exchange plugin for a new phone model
that writes ``raise ValueError(f"bad key {key!r}")`` would put the leg's SRTP master key in the
gateway's log through a plain ``log.exception``. So every site of the core and of the built-in
plugins that logs an exception goes through :func:`log_exception` (any plugin may import it),
which renders the traceback itself (:func:`format_exception`): each frame's file, line and
function, and the type of every exception of the chain
(``__cause__``, ``__context__``, the members of an exception group), which is what an operator
needs to report the bug, but the text (message and notes) of an exception only when the core
wrote it: when every frame its traceback passed through is the core's (``gateway.core``) or a
library the core calls (the standard library, trio, pluggy, attrs). A frame anywhere else (a
plugin, built-in or installed, a test's fake), or no traceback at all, makes it plugin code's
exception and its text is withheld, unless the operator turns it on to debug a plugin (``[gateway]
log_plugin_exception_text``, :func:`show_plugin_exception_text`). Source lines are left out too:
the file and line number find them.

The rendering goes in the record's ``exc_text``, with no ``exc_info``: every
:class:`logging.Formatter` appends it as it would a traceback, and none can render the
exception's own text from the record.

A line that names a transport's exception in its message (``cannot send ACK: %s``) goes through
:func:`transport_error_text`, by the same rule with the built-in transports counted as the
core: their own text, else what the operating system says of the errno, else the type. The line
a failed start ends with (``cannot run: %s``) goes through :func:`startup_error_text`, the same
with every built-in plugin counted as the core.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import socket
import ssl
import sys
import time
import types

_show_plugin_text = False

# Libraries whose frames an exception of the core's passes through without making it plugin
# code's: they raise with what the core handed them. By top-level module name.
_LIBRARIES = frozenset(sys.stdlib_module_names) | {
    "trio",
    "outcome",
    "sniffio",
    "pluggy",
    "attr",
    "attrs",
    "exceptiongroup",
}
_CORE = "gateway.core"
# Whose texts transport_error_text shows: the core's and the built-in transports' (their
# OSErrors name an address, a timeout, a missing listener: written here, reviewed as the
# core's), never a third-party transport's.
_TRANSPORT_TEXT = (_CORE, "gateway.plugins.transports")
# Whose texts startup_error_text shows: the core's and every built-in plugin's (a listener's
# "metrics: cannot listen on 127.0.0.1:9464: ...", a certificate file ssl could not read: written
# for the operator and reviewed with the core), never a third-party plugin's.
_BUILT_IN_TEXT = (_CORE, "gateway.plugins")

WITHHELD = "<text withheld: raised in plugin code>"
"""What stands for the text of a plugin code's exception."""

_FOOTNOTE = (
    "(the text of exceptions raised in plugin code is withheld, as it may hold keys or "
    "passwords; [gateway] log_plugin_exception_text = true shows it)"
)


def show_plugin_exception_text(show: bool) -> None:
    """Whether :func:`format_exception` shows the text of exceptions raised in plugin code
    (``[gateway] log_plugin_exception_text``): for debugging a plugin only, as that text may
    hold keys. Process-wide, like logging's own set-up."""
    global _show_plugin_text
    _show_plugin_text = show


def raised_in_plugin_code(exc: BaseException) -> bool:
    """Whether ``exc``'s traceback passed through a frame that is neither the core's nor a
    library's the core calls (see the module's docstring): then its text may be anybody's. So
    is the text of an exception never raised (no traceback: made and chained by anyone)."""
    return _raised_outside(exc, (_CORE,))


def _raised_outside(exc: BaseException, ours: tuple[str, ...]) -> bool:
    """Whether ``exc``'s traceback passed through a frame neither of a package of ``ours`` nor
    of a library (or it has none)."""
    tb = exc.__traceback__
    if tb is None:
        return True
    while tb is not None:
        module = tb.tb_frame.f_globals.get("__name__")
        if not isinstance(module, str) or not (
            any(module == package or module.startswith(package + ".") for package in ours)
            or module.partition(".")[0] in _LIBRARIES
        ):
            return True
        tb = tb.tb_next
    return False


def shown_text(text: str, limit: int) -> str:
    """Text from the network (a decoded user part, a host name a PASSporT's x5u names) fit for a
    log line, a reason phrase or a call's record: anything but printable ASCII (a control
    character, CR and LF that would start a forged log line, DEL, a non-ASCII letter that looks
    like another) becomes ``?``, and past ``limit`` characters it is cut short with ``...``."""
    if not (text.isascii() and text.isprintable()):
        text = "".join(c if " " <= c <= "~" else "?" for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def exception_text(exc: BaseException) -> str:
    """``str(exc)`` when it may be logged, else :data:`WITHHELD` (for a line that names an
    exception without its traceback)."""
    if _show_plugin_text or not raised_in_plugin_code(exc):
        return str(exc)
    return WITHHELD


def describe_exception(exc: BaseException, *, shown: tuple[type[BaseException], ...] = ()) -> str:
    """``exc`` in one line, for where no traceback is shown (a plugin that failed to load, in
    the command's error line): its type, where it was raised, and its text as
    :func:`exception_text` allows, e.g. ``ValueError at /opt/acme/keys.py:12:
    <text withheld: raised in plugin code>``. An exception of one of the ``shown`` types keeps
    its text wherever it was raised: the caller's contract with plugins says its message is
    written for the operator (names a file and a reason, never key bytes).

    Where: the innermost frame of its traceback that is not a library's (the plugin's line
    that imported a missing module, not importlib's), or a SyntaxError's own file and line.
    A ModuleNotFoundError also names the module it did not find (``exc.name``: what the import
    system looked for, not a text anybody wrote), the usual reason a plugin cannot load."""
    name = _type_name(exc)
    where = _where(exc)
    if where:
        name = f"{name} at {where}"
    if isinstance(exc, ModuleNotFoundError) and isinstance(exc.name, str):
        name = f"{name} (no module named {exc.name!r})"
    show = _show_plugin_text or isinstance(exc, shown) or not raised_in_plugin_code(exc)
    text = _safe_str(exc) if show else WITHHELD
    return f"{name}: {text}" if text else name


def transport_error_text(exc: BaseException) -> str:
    """``exc``, raised by a transport's send, connect or listen (an OSError, trio's
    BrokenResourceError or ClosedResourceError...), as text for a log line or a call's end
    reason (``cannot send ACK: %s``). A transport is a plugin, and a third-party one may raise
    any text, a password or key it had in hand included, so the text shown is one nobody but
    the core, the built-in transports or the operating system wrote:

    - the exception's own text when the core or a built-in transport raised it (every frame
      the core's, ``gateway.plugins.transports``' or a library's, as for
      :func:`raised_in_plugin_code`: ``transport 'ws' is not enabled``, ``no tls listener is
      running to own outbound connections``, ``tcp: no connection to 192.0.2.1:5060 within 10
      s``; a third-party transport's frame on the way, one subclassing a built-in, makes it
      plugin text), or when the operator asked for plugin exception texts (``[gateway]
      log_plugin_exception_text``); trio's ``all attempts to connect to ... failed`` followed
      by the reasons of the group it was raised from (below);
    - an OSError's errno name and the operating system's own text for it (``os.strerror``,
      never the exception's ``strerror``, which anybody may set): ``ECONNREFUSED (Connection
      refused)``; a resolver error's ``EAI_*`` name; an :class:`ssl.SSLError`'s OpenSSL
      reason code (``CERTIFICATE_VERIFY_FAILED``), and for a certificate refused, OpenSSL's
      words for its X.509 verify code (``(hostname mismatch)``, ``(certificate has expired)``);
    - otherwise its type's name, followed by what its direct cause (``raise ... from``) gives
      by the rules above when that is an OSError: trio's ``BrokenResourceError
      (ECONNRESET (Connection reset by peer))``, or those of the OSErrors of a group it was
      raised from: trio's "all attempts to connect" ``OSError (ECONNREFUSED (Connection
      refused))``."""
    return _error_text(exc, _TRANSPORT_TEXT)


def startup_error_text(exc: BaseException) -> str:
    """``exc``, an OSError that stopped the gateway's start (``cannot run: %s``: a port in
    use, an address not ours, a file a plugin could not open), as text for that line. By
    :func:`transport_error_text`'s rule with every built-in plugin counted as the core: the
    text of the core's and the built-in plugins' own exceptions (``[Errno 98] cannot listen
    on tcp:127.0.0.1:5060: Address already in use (another program listens there: ...)``,
    ``metrics: cannot listen on ...``), and of the standard library's they let through; a
    third-party plugin's (a frame of its code on the way) only as the errno name and the
    operating system's text for it (``EADDRINUSE (Address already in use)``), else its type."""
    return _error_text(exc, _BUILT_IN_TEXT)


def system_error_text(exc: BaseException) -> str:
    """``exc``, a socket's, TLS's or resolver's exception met by a built-in plugin's own client
    (a certificate, OCSP answer, CRL or ADMF report it fetches), in the words the operating
    system and OpenSSL have for it and nobody else's, whoever raised it: the rendering
    :func:`transport_error_text` gives a third-party transport's exception (``ECONNREFUSED
    (Connection refused)``, ``SSLError CERTIFICATE_VERIFY_FAILED (certificate has expired)``,
    ``EAI_NONAME (name resolution failed)``, ``trio.BrokenResourceError (ECONNRESET
    (Connection reset by peer))``, trio's "all attempts to connect" as ``OSError
    (ECONNREFUSED (Connection refused))``, else the type). The line says what failed, where,
    in its own words; this says why. Never the exception's text: a library's may name a URL,
    and a URL may hold a password."""
    try:
        return _system_text(exc, _group_reasons(exc))
    except Exception:  # pragma: no cover - a property of an exception that raises
        return type(exc).__qualname__


def _error_text(exc: BaseException, ours: tuple[str, ...]) -> str:
    """:func:`transport_error_text`'s rule, with the text shown of exceptions whose frames are
    all of the packages ``ours`` or libraries."""
    try:
        # trio.open_tcp_stream's "all attempts to connect to ... failed" (no errno) is raised
        # from a group of each address's OSError: theirs say why (refused, unreachable).
        why = _group_reasons(exc)
        if _show_plugin_text or not _raised_outside(exc, ours):
            text = _safe_str(exc)
            return f"{text} ({why})" if why else text
        return _system_text(exc, why)
    except Exception:  # pragma: no cover - a property of a plugin's exception that raises
        return type(exc).__qualname__


def _system_text(exc: BaseException, why: str) -> str:
    """What the system says of ``exc`` (``why``: of the group it was raised from), else its
    type with what the system says of its direct cause."""
    known = _os_error_text(exc)
    if known is not None:
        return known
    name = _type_name(exc)
    cause = exc.__cause__
    if isinstance(cause, OSError):
        known = _os_error_text(cause)
        if known is not None:
            return f"{name} ({known})"
    return f"{name} ({why})" if why else name


def _group_reasons(exc: BaseException) -> str:
    """What the operating system says of the OSErrors of the group ``exc`` was raised from
    (distinct, in order), or ""."""
    cause = exc.__cause__
    if not isinstance(cause, BaseExceptionGroup):
        return ""
    found: list[str] = []
    for member in cause.exceptions:
        known = _os_error_text(member)
        if known is not None and known not in found:
            found.append(known)
    return "; ".join(found[:_MAX_CAUSES])


_SSL_REASON = re.compile(r"[A-Z0-9_]{1,80}")
_RESOLVER_ERRORS = {getattr(socket, name): name for name in dir(socket) if name.startswith("EAI_")}
_MAX_CAUSES = 4  # distinct reasons of a group shown (one per address family, in practice)
# X509_V_ERR_* codes (OpenSSL's x509_vfy.h) and X509_verify_cert_error_string's text for each:
# the ones a peer's or an ADMF's certificate meets in practice.
_X509_VERIFY_ERRORS = {
    2: "unable to get issuer certificate",
    3: "unable to get certificate CRL",
    7: "certificate signature failure",
    9: "certificate is not yet valid",
    10: "certificate has expired",
    12: "CRL has expired",
    18: "self-signed certificate",
    19: "self-signed certificate in certificate chain",
    20: "unable to get local issuer certificate",
    21: "unable to verify the first certificate",
    22: "certificate chain too long",
    23: "certificate revoked",
    26: "unsuitable certificate purpose",
    27: "certificate not trusted",
    28: "certificate rejected",
    62: "hostname mismatch",
    64: "IP address mismatch",
}


def _os_error_text(exc: BaseException) -> str | None:
    """Text the operating system or OpenSSL wrote for ``exc``, whoever raised it; None for
    an exception with none (no errno)."""
    if isinstance(exc, ssl.SSLError):
        # SSLError's errno is OpenSSL's error class, not an errno: its reason code is
        # OpenSSL's (set by the ssl module only; an SSLError a plugin made has none).
        reason = getattr(exc, "reason", None)
        if isinstance(reason, str) and _SSL_REASON.fullmatch(reason):
            # Why a certificate was refused (expired, a host name it does not cover, an
            # issuer we do not trust) is what the operator must act on: by its X.509 verify
            # code, in OpenSSL's words from a fixed table (the exception's verify_message,
            # which anybody may set, is not shown).
            code = getattr(exc, "verify_code", None)
            if isinstance(exc, ssl.SSLCertVerificationError) and type(code) is int:
                verify = _X509_VERIFY_ERRORS.get(code)
                if verify is not None:
                    return f"SSLError {reason} ({verify})"
            return f"SSLError {reason}"
        return None
    if not isinstance(exc, OSError):
        return None
    code = exc.errno
    if type(code) is not int:
        return None
    if isinstance(exc, socket.gaierror):
        name = _RESOLVER_ERRORS.get(code)
        return f"{name} (name resolution failed)" if name is not None else None
    name = errno.errorcode.get(code)
    if name is None:
        return None
    return f"{name} ({os.strerror(code)})"


def _type_name(exc: BaseException) -> str:
    kind = type(exc)
    if kind.__module__ in ("builtins", "__main__"):
        return kind.__qualname__
    return f"{kind.__module__}.{kind.__qualname__}"


def _where(exc: BaseException) -> str:
    if isinstance(exc, SyntaxError) and exc.filename and exc.lineno:
        return f"{exc.filename}:{exc.lineno}"
    found = ""
    tb = exc.__traceback__
    while tb is not None:
        module = tb.tb_frame.f_globals.get("__name__")
        if not isinstance(module, str) or module.partition(".")[0] not in _LIBRARIES:
            found = f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}"
        tb = tb.tb_next
    return found


def format_exception(exc: BaseException) -> str:
    """``exc``'s traceback as Python prints it (causes and contexts first, exception groups
    with their members), frames as file, line and function without source lines, and the text
    of exceptions raised in plugin code withheld (:func:`exception_text`). No trailing newline.

    Bounded as :mod:`traceback` is, since it runs at the site that logs, outside logging's own
    guard: at most :data:`MAX_CHAIN` exceptions deep (a chain or nesting deeper than the stack
    would otherwise raise RecursionError; the newest are shown), :data:`MAX_GROUP_DEPTH` nested
    exception groups and :data:`MAX_GROUP_WIDTH` members of each; an exception whose text or
    notes cannot be had says so."""
    lines: list[str] = []
    withheld = _format(exc, lines, "", set(), 0, 0)
    if withheld:
        lines.append(_FOOTNOTE)
    return "\n".join(lines)


MAX_CHAIN = 100
"""Exceptions rendered one inside another (causes, contexts, group members): the newest."""
MAX_GROUP_DEPTH = 10
"""Exception groups rendered one inside another (traceback's ``max_group_depth``)."""
MAX_GROUP_WIDTH = 15
"""Members rendered of one exception group (traceback's ``max_group_width``)."""


def _safe_str(value: object) -> str:
    try:
        return str(value)
    except Exception:
        return "<exception str() failed>"


def _format(
    exc: BaseException,
    lines: list[str],
    prefix: str,
    seen: set[int],
    depth: int,
    groups: int,
) -> bool:
    """Appends ``exc``'s chain to ``lines``; whether any text was withheld. ``depth``: how many
    exceptions this one is inside (its recursion depth), ``groups``: how many groups."""
    seen.add(id(exc))
    withheld = False
    earlier: BaseException | None = None
    heading = ""
    if exc.__cause__ is not None and id(exc.__cause__) not in seen:
        earlier = exc.__cause__
        heading = "The above exception was the direct cause of the following exception:"
    elif (
        exc.__context__ is not None
        and not exc.__suppress_context__
        and id(exc.__context__) not in seen
    ):
        earlier = exc.__context__
        heading = "During handling of the above exception, another exception occurred:"
    if earlier is not None:
        if depth + 1 >= MAX_CHAIN:
            lines.append(f"{prefix}(older exceptions of the chain not shown)")
        else:
            withheld |= _format(earlier, lines, prefix, seen, depth + 1, groups)
            lines += [prefix, prefix + heading, prefix]
    if exc.__traceback__ is not None:
        lines.append(prefix + "Traceback (most recent call last):")
        tb: types.TracebackType | None = exc.__traceback__
        while tb is not None:
            code = tb.tb_frame.f_code
            lines.append(
                f'{prefix}  File "{code.co_filename}", line {tb.tb_lineno}, in {code.co_name}'
            )
            tb = tb.tb_next
    name = _type_name(exc)
    show = _show_plugin_text or not raised_in_plugin_code(exc)
    text = _safe_str(exc) if show else WITHHELD
    withheld |= not show
    lines.append(f"{prefix}{name}: {text}" if text else prefix + name)
    lines += _notes(exc, prefix, show)
    if isinstance(exc, BaseExceptionGroup):
        members = exc.exceptions
        if groups + 1 > MAX_GROUP_DEPTH or depth + 1 >= MAX_CHAIN:
            lines.append(f"{prefix}| (more nested exception groups not shown)")
            return withheld
        for number, member in enumerate(members[:MAX_GROUP_WIDTH], 1):
            lines.append(f"{prefix}+---- {number} of {len(members)} ----")
            if id(member) in seen:
                lines.append(f"{prefix}| (seen above: {type(member).__qualname__})")
                continue
            withheld |= _format(member, lines, prefix + "| ", seen, depth + 1, groups + 1)
        if len(members) > MAX_GROUP_WIDTH:
            lines.append(f"{prefix}+---- and {len(members) - MAX_GROUP_WIDTH} more exceptions ----")
        lines.append(f"{prefix}+------------------")
    return withheld


def _notes(exc: BaseException, prefix: str, show: bool) -> list[str]:
    """The lines of ``exc``'s notes, as traceback renders them: any ``__notes__`` a plugin set
    (a property that raises, a number) is rendered, not raised."""
    try:
        notes = getattr(exc, "__notes__", None)
    except Exception:
        return [f"{prefix}(its notes could not be read)"]
    if notes is None:
        return []
    if not show:
        if isinstance(notes, (list, tuple)):
            return [f"{prefix}({len(notes)} note(s) withheld)"] if notes else []
        return [f"{prefix}(notes withheld)"]
    if isinstance(notes, (str, bytes)) or not isinstance(notes, (list, tuple)):
        return [prefix + _safe_str(notes)]
    return [prefix + _safe_str(note) for note in notes]


class LineFormatter(logging.Formatter):
    """The gateway's log line, ``%(asctime)s %(levelname)s %(name)s: %(message)s`` (a media
    worker's with ``media-worker-N`` before the logger's name: ``source``), byte for byte as
    :class:`logging.Formatter` writes it, for less work per line.

    An answered call writes two lines as it ends ("ended", "protection"), ~80,000 instructions
    each from ``log.info`` to the write; the stock formatter spends ~14,000 of them on what this
    one does once a second or not at all (docs/benchmarks.md, session 33): the date and
    time formatted anew for every record (``time.localtime`` and ``strftime``), kept here for
    the second it is in (a local time offset is a whole number of seconds, so the whole second
    of ``created`` decides the text), and the format string applied through its style object
    (a look-up of ``asctime`` per record to decide whether to format the time, the
    ``%``-formatting of a dictionary) where an f-string of the four fields gives the same
    text. ``format`` itself is the stock one: exception and stack text appended as before.
    """

    def __init__(self, source: str = "") -> None:
        self._source = f"{source} " if source else ""
        super().__init__(f"%(asctime)s %(levelname)s {self._source}%(name)s: %(message)s")
        self._second: tuple[int, str] = (-1, "")  # one tuple: read and replaced whole

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt:
            return super().formatTime(record, datefmt)
        whole = int(record.created)
        second, text = self._second
        if whole != second:
            text = time.strftime(self.default_time_format, self.converter(record.created))
            self._second = (whole, text)
        return f"{text},{int(record.msecs):03d}"  # the stock default_msec_format, "%s,%03d"

    def usesTime(self) -> bool:
        return True

    def formatMessage(self, record: logging.LogRecord) -> str:
        return f"{record.asctime} {record.levelname} {self._source}{record.name}: {record.message}"


def log_exception(
    logger: logging.Logger,
    msg: str,
    *args: object,
    exc: BaseException | None = None,
    level: int = logging.ERROR,
) -> None:
    """``logger.exception(msg, *args)`` (or ``logger.log(level, msg, *args, exc_info=exc)``)
    for an exception that plugin code may have raised: the traceback rendered by
    :func:`format_exception` goes in the record's ``exc_text``, the exception itself nowhere in
    it. ``exc`` defaults to the exception being handled. The record names the caller's file
    and line, as ``logger.exception``'s does."""
    if not logger.isEnabledFor(level):
        return
    if exc is None:
        exc = sys.exc_info()[1]
    try:
        fn, lno, func, _ = logger.findCaller(False, 2)
    except ValueError:  # pragma: no cover - no Python frames (logging's own fallback)
        fn, lno, func = "(unknown file)", 0, "(unknown function)"
    record = logger.makeRecord(logger.name, level, fn, lno, msg, args, None, func)
    if exc is not None:
        try:
            record.exc_text = format_exception(exc)
        except Exception as failure:
            # Never out of the except block that logs: the failure logged goes unlogged.
            record.exc_text = (
                f"{type(exc).__qualname__} (its traceback could not be rendered: "
                f"{type(failure).__name__})"
            )
    logger.handle(record)
