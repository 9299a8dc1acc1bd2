"""Reports from this point of interception to the ADMF over X1 (ETSI TS 103 221-1 §6.5).

The POI is the HTTP client here: it POSTs an ``X1Request`` holding one report to the ADMF's X1
endpoint (``report_url``, mutual TLS) and reads the ``X1Response``. Three reports, one per scope:

- ``ReportDestinationIssueRequest`` (§6.5.3): a destination's delivery fails (cannot connect,
  connection lost, TLS refused, PDUs dropped for a full queue: :attr:`DeliveryLink.fault`), and
  ``AllClear`` once it works again;
- ``ReportTaskIssueRequest`` (§6.5.2): every destination of a task is faulty, so none of its
  PDUs reach a mediation function (they wait in the queues, or are dropped), and ``AllClear``
  once one works again;
- ``ReportNEIssueRequest`` (§6.5.4): at start-up, a ``Warning`` that the element (re)started
  (PDUs queued at the stop are lost; what the store restored); a ``FaultReport`` while every
  destination a task uses is faulty (the element delivers nothing at all), ``FaultCleared`` after.

Element names, order and enumerations: the TS 103 221-1 XSD v1.23.1 (``TS_103_221_01.xsd``
as bundled by siphon-project/siphon-sip, schemas/etsi/), whose sequences are: ReportTaskIssue
``xId, taskReportType, taskIssueErrorCode?, taskIssueDetails?``; ReportDestinationIssue ``dId,
destinationReportType, destinationIssueErrorCode?, destinationIssueDetails?`` (its type is
TaskReportType: ``AllClear``, ``Warning``, ``NonTerminatingFault``, ``TerminatingFault``,
``ImplicitDeactivation``, ``FullyActioned...``); ReportNEIssue ``typeOfNeIssueMessage
(Warning | FaultCleared | FaultReport | Alert), description, issueCode?``; each answered by a
``Report...Response`` holding ``oK``. Two independent implementations emit the same: the Go X1
reporter of omec-project/li (Forsway, its package x1: ``NonTerminatingFault`` for an unreachable
mediation function, ``AllClear`` when it clears, 9020 as the non-terminating fault code of TS
103 221-1 table 6.7-3) and siphon's Rust X1 codec. A fault here is ``NonTerminatingFault``: the
task stays active and PDUs flow again when the mediation function is back.

Coalescing (so a flapping mediation function does not flood the ADMF): what is kept is the
*state* of each destination, task and the element, and what the ADMF was last told of it, not a
queue of events. A report is due when the two differ, and at most one per subject is sent every
``report_interval`` seconds: a destination that fails and recovers ten times within that interval
is reported faulty once and clear once. The documents are built when they are sent, from the
state then; one that became true again while the ADMF was unreachable is not sent at all. The
start-up report is the only event, kept in a bounded queue (:data:`MAX_EVENTS`).

Delivery: one trio task (:meth:`Reporter.run`) sends one report at a time; a transport failure,
a non-200 answer or an answer that is not X1 is tried again after 1, 2, 4 ... 60 s. Nothing
piles up meanwhile: the report tried again is the one due then, built from the state then (as
above: a fault that cleared while the ADMF was unreachable is never reported), and only the
start-up report waits in its queue. An X1 answer that refuses the report (``ErrorResponse``,
``X1TopLevelErrorResponse``) is logged and not sent again (the same document would be refused
again). The call path never waits for any of it: a link's change of health sets an event
(:meth:`Reporter.notify`).

Log (gateway/core/failure_log.py, :attr:`Reporter.failures`): an ADMF that cannot be reached is
one WARNING with the reason and what happens to the reports meanwhile, a summary every 300 s
while it lasts, and one INFO when it answers again (acknowledging or refusing a report), rather
than a line per attempt.

Covert: the reports name DIDs and XIDs and the mediation function's address, never a target;
log lines go to the plugin's logger only (docs/lawful_intercept.md "Keeping it covert").
"""

from __future__ import annotations

import datetime
import logging
import math
import ssl
import uuid
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import Callable
from urllib.parse import urlsplit
from xml.sax.saxutils import escape

import attrs
import h11
import trio

from gateway.core.failure_log import FailureLog
from gateway.core.logs import log_exception, system_error_text
from gateway.core.sip.uri import redact_password
from gateway.core.transport.flows import format_host_port
from gateway.plugins.taps.intercept.x1 import (
    MAX_DOCUMENT,
    NE_NOT_CERTIFICATE,
    NON_TERMINATING_FAULT,
    SYNTAX_SCHEMA_ERROR,
    UNEXPECTED_NE,
    VERSION,
    X1_NAMESPACE,
    XSI_NAMESPACE,
    X1Error,
    _child,
    _children,
    _local,
    _message_type,
    _text,
    read_xml_untrusted,
)

log = logging.getLogger(__name__)

MAX_EVENTS = 16  # start-up reports waiting to be sent
MAX_BACKOFF = 60.0
REQUEST_TIMEOUT = 10.0  # connect, TLS, request and answer of one POST

TASK_REPORT_TYPES = (
    "AllClear",
    "Warning",
    "NonTerminatingFault",
    "TerminatingFault",
    "ImplicitDeactivation",
    "FullyActionedAndSuccessful",
    "FullyActionedAndUnsuccessful",
)
NE_ISSUE_TYPES = ("Warning", "FaultCleared", "FaultReport", "Alert")


# -- the documents ------------------------------------------------------------------------------


@attrs.frozen
class Header:
    """The fields every X1 message starts with (§6.1), in the XSD's order."""

    admf_identifier: str
    ne_identifier: str
    timestamp: float
    transaction: uuid.UUID

    def xml(self) -> str:
        at = datetime.datetime.fromtimestamp(self.timestamp, tz=datetime.UTC)
        return (
            f"<admfIdentifier>{escape(self.admf_identifier)}</admfIdentifier>"
            f"<neIdentifier>{escape(self.ne_identifier)}</neIdentifier>"
            f"<messageTimestamp>{at.strftime('%Y-%m-%dT%H:%M:%S.%fZ')}</messageTimestamp>"
            f"<version>{VERSION}</version>"
            f"<x1TransactionId>{self.transaction}</x1TransactionId>"
        )


def _request(kind: str, header: Header, body: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<X1Request xmlns="{X1_NAMESPACE}" xmlns:xsi="{XSI_NAMESPACE}">'
        f'<x1RequestMessage xsi:type="{kind}">{header.xml()}{body}</x1RequestMessage>'
        "</X1Request>"
    ).encode()


def _code_and_details(prefix: str, report_type: str, details: str) -> str:
    """The optional error code (faults only: an all-clear has none) and details elements."""
    code = (
        f"<{prefix}ErrorCode>{NON_TERMINATING_FAULT}</{prefix}ErrorCode>"
        if report_type == "NonTerminatingFault"
        else ""
    )
    text = f"<{prefix}Details>{escape(details)}</{prefix}Details>" if details else ""
    return code + text


def task_issue(header: Header, xid: uuid.UUID, report_type: str, details: str = "") -> bytes:
    """A ``ReportTaskIssueRequest`` (§6.5.2)."""
    assert report_type in TASK_REPORT_TYPES
    return _request(
        "ReportTaskIssueRequest",
        header,
        f"<xId>{xid}</xId><taskReportType>{report_type}</taskReportType>"
        + _code_and_details("taskIssue", report_type, details),
    )


def destination_issue(header: Header, did: uuid.UUID, report_type: str, details: str = "") -> bytes:
    """A ``ReportDestinationIssueRequest`` (§6.5.3)."""
    assert report_type in TASK_REPORT_TYPES
    return _request(
        "ReportDestinationIssueRequest",
        header,
        f"<dId>{did}</dId><destinationReportType>{report_type}</destinationReportType>"
        + _code_and_details("destinationIssue", report_type, details),
    )


def ne_issue(header: Header, issue_type: str, description: str) -> bytes:
    """A ``ReportNEIssueRequest`` (§6.5.4); ``issueCode`` with a fault report only."""
    assert issue_type in NE_ISSUE_TYPES
    code = f"<issueCode>{NON_TERMINATING_FAULT}</issueCode>" if issue_type == "FaultReport" else ""
    return _request(
        "ReportNEIssueRequest",
        header,
        f"<typeOfNeIssueMessage>{issue_type}</typeOfNeIssueMessage>"
        f"<description>{escape(description)}</description>{code}",
    )


@attrs.frozen
class Answer:
    """What the ADMF said to one report: ``ok``, or why not (``description``; ``code``: the
    ErrorResponse's errorCode, None for any other refusal)."""

    ok: bool
    description: str
    code: int | None = None


def refusal(answer: Answer, kind: str, ne_identifier: str) -> str:
    """The log line of a report the ADMF refused. An ADMF that does not take our
    ``neIdentifier`` (1050: not the identity it binds to our client certificate, TS 103 221-1
    §8.2.4; 1060: not an NE it knows) refuses every report alike: say which keys to compare."""
    line = f"intercept: the ADMF refused a {kind}: {answer.description}"
    if answer.code in (NE_NOT_CERTIFICATE, UNEXPECTED_NE):
        line += (
            f" (the ADMF does not take our neIdentifier {ne_identifier!r} from this client: "
            "compare [plugins.intercept] ne_identifier with the NE identifier the ADMF has for "
            "report_certificate, x1_certificate unless set; every report is refused until they "
            "agree)"
        )
    return line


def read_answer_untrusted(body: bytes, kind: str, transaction: uuid.UUID) -> Answer:
    """The ADMF's ``X1Response`` to our report of ``kind`` ("ReportTaskIssue" ...) with
    ``transaction``. Raises :class:`X1Error` for what is not an X1 answer at all (tried again);
    an ErrorResponse, a top-level error or an answer to another transaction is an Answer that is
    not ok (not tried again). Bounded like the X1 server's input: :data:`MAX_DOCUMENT` octets,
    UTF-8, no DTD."""
    root = read_xml_untrusted(body, "answer")
    if _local(root.tag) == "X1TopLevelErrorResponse":
        # The XSD gives it the header fields only: the ADMF could not read our document.
        return Answer(
            False, "top-level error (X1TopLevelErrorResponse): the ADMF could not read it"
        )
    if _local(root.tag) != "X1Response":
        raise X1Error(SYNTAX_SCHEMA_ERROR, f"answer's root element {_local(root.tag)[:40]!r}")
    messages = _children(root, "x1ResponseMessage")
    if len(messages) != 1:
        raise X1Error(SYNTAX_SCHEMA_ERROR, f"{len(messages)} x1ResponseMessages answer one request")
    (message,) = messages
    answered = _text(message, "x1TransactionId", required=False)
    if answered != str(transaction):
        return Answer(False, f"answers transaction {answered[:40]!r}, not {transaction}")
    response_type = _message_type(message)
    if response_type == "ErrorResponse":
        information = _child(message, "errorInformation")
        code = _text(information, "errorCode", required=False) if information is not None else ""
        number = int(code) if code.isascii() and code.isdigit() and len(code) <= 9 else None
        return Answer(False, _error_text(message), number)
    ok = _text(message, "oK", required=False)
    if response_type != f"{kind}Response" or ok not in ("AcknowledgedAndCompleted", "Acknowledged"):
        return Answer(False, f"unexpected answer {response_type[:40]!r} ({ok[:40]!r})")
    return Answer(True, ok)


def _error_text(element: ET.Element) -> str:
    information = _child(element, "errorInformation")
    if information is None:
        return "no errorInformation"
    code = _text(information, "errorCode", required=False)
    description = _text(information, "errorDescription", required=False)
    return f"{code[:20]} {description[:200]!r}"


# -- the configuration of the client ------------------------------------------------------------


@attrs.frozen
class Endpoint:
    """Where reports go: ``report_url`` read."""

    host: str
    port: int
    path: str

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        """``https://HOST[:PORT][/PATH]``; ValueError naming what is wrong."""
        try:
            parts = urlsplit(url)
            port = parts.port or 443
        except ValueError:
            parts, port = None, 0
        if parts is None or parts.scheme != "https" or not parts.hostname or not port:
            raise ValueError(f"expected https://HOST[:PORT][/PATH], not {redact_password(url)!r}")
        if parts.username or parts.password or parts.query or parts.fragment:
            raise ValueError(f"no user, password, query or fragment: {redact_password(url)!r}")
        return cls(parts.hostname, port, parts.path or "/")


# -- the state behind the reports, and the task that sends them ---------------------------------


@attrs.define
class _Subject:
    """A destination, a task or the element: its fault now, and what the ADMF was told."""

    fault: str | None = None
    told_faulty: bool = False  # the ADMF acknowledged a fault report and no all-clear since
    last_sent: float = -math.inf  # trio time of the last report the ADMF answered

    def due(self, now: float, interval: float) -> bool:
        return (self.fault is not None) != self.told_faulty and now >= self.last_sent + interval

    def due_at(self, interval: float) -> float:
        return (
            self.last_sent + interval if (self.fault is not None) != self.told_faulty else math.inf
        )


Faults = Callable[[], dict[uuid.UUID, str | None]]


class Reporter:
    """Sends the reports (module docstring). ``destination_faults()`` / ``task_faults()``: each
    provisioned destination's and task's fault now (None: it works); ``ne_fault()``: the
    element's. Asked again whenever :meth:`notify` is called, and at each report due."""

    def __init__(
        self,
        endpoint: Endpoint,
        ssl_context: ssl.SSLContext,
        *,
        admf_identifier: str,
        ne_identifier: str,
        interval: float,
        destination_faults: Faults,
        task_faults: Faults,
        ne_fault: Callable[[], str | None],
        wall_clock: Callable[[], float],
    ) -> None:
        self.endpoint = endpoint
        self.ssl_context = ssl_context  # read at each report's connection (SIGHUP swaps it)
        self._admf_identifier = admf_identifier
        self._ne_identifier = ne_identifier
        self._interval = interval
        self._destination_faults = destination_faults
        self._task_faults = task_faults
        self._ne_fault = ne_fault
        self._wall_clock = wall_clock
        self._destinations: dict[uuid.UUID, _Subject] = {}
        self._tasks: dict[uuid.UUID, _Subject] = {}
        self._ne = _Subject()
        self._events: deque[tuple[str, str]] = deque(maxlen=MAX_EVENTS)
        self._wake = trio.Event()
        self.sent = 0  # reports the ADMF acknowledged
        self.refused = 0  # reports the ADMF answered with an error
        self.attempts = 0  # POSTs tried, whatever came of them
        self.failures = FailureLog(
            log,
            f"intercept: the ADMF at {format_host_port(endpoint.host, endpoint.port)}",
            "report attempts",
            "reports are not queued: the state of each destination, task and the element is "
            "kept, and each report due is built from it when the ADMF answers (a fault that "
            "cleared meanwhile is never reported; the start-up report waits); trying again "
            f"after 1, 2, 4 ... {MAX_BACKOFF:g} s; interception and delivery go on",
        )
        """The ADMF's outage: logged once, summarized, once more when it answers."""

    def notify(self) -> None:
        """Something changed (a link's health, X1 provisioning): look again. Never waits."""
        self._wake.set()

    def started(self, tasks: int, destinations: int) -> None:
        """The start-up ``Warning`` (§6.5.4): the element (re)started."""
        if tasks or destinations:
            description = (
                f"started: {tasks} task(s) and {destinations} destination(s) restored from the "
                "store; PDUs still queued for delivery when the element stopped, if any, were lost"
            )
        else:
            description = "started with no task or destination stored"
        self._events.append(("Warning", description))
        self.notify()

    async def run(self) -> None:
        backoff = 1.0
        while True:
            self._wake = trio.Event()  # before looking: a notify() from now on wakes us
            now = trio.current_time()
            self._refresh()
            report = self._next(now)
            if report is None:
                with trio.move_on_at(self._next_due()):
                    await self._wake.wait()
                continue
            kind, build, done = report
            try:
                answer = await self._post(kind, build)
            except Exception as exc:
                # Whatever the ADMF or the network did (refused, TLS, a timeout, an answer that
                # is not X1), or a bug here: this try failed, the next one comes after the
                # backoff, and interception goes on (STYLE.md habit 6).
                if isinstance(exc, trio.TooSlowError):
                    why = f"no answer within {REQUEST_TIMEOUT:g} s"
                elif isinstance(exc, OSError | trio.BrokenResourceError):
                    # Refused, unreachable, a TLS certificate refused: in the system's and
                    # OpenSSL's words only, never the socket error's own text.
                    why = system_error_text(exc)
                elif isinstance(exc, _EXPECTED):
                    why = str(exc) or type(exc).__name__
                else:
                    log_exception(log, "intercept: a report to the ADMF failed")
                    why = f"{type(exc).__name__} (logged)"
                self.failures.failed(f"cannot report a {kind}: {why}", now=self._wall_clock())
                await trio.sleep(backoff)
                backoff = min(MAX_BACKOFF, backoff * 2)
                continue
            backoff = 1.0
            self.failures.answered(
                now=self._wall_clock(),
                outcome=f"it {'acknowledged' if answer.ok else 'refused'} a {kind}; "
                "any other report due follows",
            )
            if answer.ok:
                self.sent += 1
                log.debug("intercept: the ADMF acknowledged a %s", kind)
            else:
                self.refused += 1
                log.warning("%s", refusal(answer, kind, self._ne_identifier))
            done(trio.current_time())  # refused too: the same document would be refused again

    def _refresh(self) -> None:
        """Take each subject's fault now; forget destinations and tasks X1 removed (the ADMF
        knows they are gone: no all-clear for them)."""
        for subjects, faults in (
            (self._destinations, self._destination_faults()),
            (self._tasks, self._task_faults()),
        ):
            for ident in [ident for ident in subjects if ident not in faults]:
                del subjects[ident]
            for ident, fault in faults.items():
                subjects.setdefault(ident, _Subject()).fault = fault
        self._ne.fault = self._ne_fault()

    def _next(
        self, now: float
    ) -> tuple[str, Callable[[Header], bytes], Callable[[float], None]] | None:
        """The next report due: the start-up event first, then destinations, tasks, the
        element. ``(kind, build(header) -> document, done(now))``."""
        if self._events:
            issue_type, description = self._events[0]

            def event_done(at: float) -> None:
                self._events.popleft()

            return (
                "ReportNEIssue",
                lambda header: ne_issue(header, issue_type, description),
                event_done,
            )
        for did, subject in self._destinations.items():
            if subject.due(now, self._interval):
                return self._state_report("ReportDestinationIssue", subject, did)
        for xid, subject in self._tasks.items():
            if subject.due(now, self._interval):
                return self._state_report("ReportTaskIssue", subject, xid)
        if self._ne.due(now, self._interval):
            return self._state_report("ReportNEIssue", self._ne, None)
        return None

    def _state_report(
        self, kind: str, subject: _Subject, ident: uuid.UUID | None
    ) -> tuple[str, Callable[[Header], bytes], Callable[[float], None]]:
        faulty = subject.fault is not None
        reason = subject.fault or ""

        def build(header: Header) -> bytes:
            if kind == "ReportNEIssue":
                if faulty:
                    return ne_issue(header, "FaultReport", reason)
                return ne_issue(header, "FaultCleared", "delivering again")
            assert ident is not None
            report_type = "NonTerminatingFault" if faulty else "AllClear"
            if kind == "ReportDestinationIssue":
                return destination_issue(header, ident, report_type, reason)
            return task_issue(header, ident, report_type, reason)

        def done(at: float) -> None:
            subject.told_faulty = faulty
            subject.last_sent = at

        return kind, build, done

    def _next_due(self) -> float:
        subjects = [*self._destinations.values(), *self._tasks.values(), self._ne]
        return min((s.due_at(self._interval) for s in subjects), default=math.inf)

    async def _post(self, kind: str, build: Callable[[Header], bytes]) -> Answer:
        """POST one report (a new transaction id each try) and read the answer."""
        self.attempts += 1
        transaction = uuid.uuid4()
        header = Header(self._admf_identifier, self._ne_identifier, self._wall_clock(), transaction)
        body = build(header)
        endpoint = self.endpoint
        with trio.fail_after(REQUEST_TIMEOUT):
            stream = await trio.open_ssl_over_tcp_stream(
                endpoint.host, endpoint.port, ssl_context=self.ssl_context
            )
            try:
                status, answer = await _exchange(stream, endpoint, body)
            finally:
                await trio.aclose_forcefully(stream)
        if status != 200:
            raise _HttpStatus(f"HTTP {status}")
        return read_answer_untrusted(answer, kind, transaction)


class _HttpStatus(Exception):
    """The ADMF answered the POST with another status than 200, or closed the connection
    before answering (tried again)."""


_EXPECTED = (
    OSError,
    trio.BrokenResourceError,
    trio.TooSlowError,
    X1Error,
    h11.ProtocolError,
    _HttpStatus,
)


async def _exchange(stream: trio.abc.Stream, endpoint: Endpoint, body: bytes) -> tuple[int, bytes]:
    """One HTTP/1.1 POST and its answer (h11, sans-IO), the answer at most MAX_DOCUMENT."""
    connection = h11.Connection(h11.CLIENT, max_incomplete_event_size=16_384)
    # RFC 9110 §7.2: Host is the authority, the port left out when it is the scheme's default.
    port = None if endpoint.port == 443 else endpoint.port
    request = h11.Request(
        method="POST",
        target=endpoint.path,
        headers=[
            ("host", format_host_port(endpoint.host, port)),
            ("content-type", "application/xml"),
            ("content-length", str(len(body))),
            ("connection", "close"),
        ],
    )
    data = connection.send(request) or b""
    data += connection.send(h11.Data(data=body)) or b""
    data += connection.send(h11.EndOfMessage()) or b""
    await stream.send_all(data)
    status = 0
    answer = bytearray()
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            chunk = await stream.receive_some(65_536)
            connection.receive_data(bytes(chunk))  # b"" at the end: h11 says what it means
        elif isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            answer += event.data
            if len(answer) > MAX_DOCUMENT:
                raise X1Error(SYNTAX_SCHEMA_ERROR, f"answer larger than {MAX_DOCUMENT} octets")
        elif isinstance(event, h11.EndOfMessage):
            return status, bytes(answer)
        elif isinstance(event, h11.ConnectionClosed):
            raise _HttpStatus("the ADMF closed the connection before answering")
