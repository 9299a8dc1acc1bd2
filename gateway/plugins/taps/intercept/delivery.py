"""Delivery links: X2/X3 PDUs to one mediation function (an X1 destination) over TCP or TLS.

Theory of operation. Each destination has one :class:`DeliveryLink`: a bounded queue that call
sinks put whole PDUs into without ever waiting (a call, and the SIP stack's task that copies
its signalling, must not slow down for a mediation function: STYLE.md habit 7), and a task that
keeps one connection open and writes the queue to it. While the link is down the queue keeps
what fits (``queue`` PDUs) and the rest is dropped and counted; the sequence numbers of the PDUs
(per task, per destination) let the mediation function see the gap.

TLS (the default; TS 103 221-2 expects a mutually authenticated channel): we present our
certificate and check the mediation function's against the configured CA, and its name against
the destination's address (the ADMF gives an address, not a name, so the certificate must carry
that IP address as a subjectAltName). Plain TCP exists for lab use only and is logged as such.

Keepalives (§5.2.2 types 3/4): after ``keepalive_interval`` seconds without a PDU to send we
send a keepalive; if the acknowledgement (which echoes its sequence number) has not come after
another interval the connection is taken as dead and is made again. The mediation function's own
keepalives are acknowledged. A link that cannot connect tries again after 1, 2, 4 ... up to 30
seconds; a working connection lost is made again at once; one lost before it was confirmed
(below) is one more failure, with the same back-off.

Confirmation: one rule for every connection. A connection that is made says little: a
mediation function that refuses our certificate after a TLS 1.3 handshake, or one that accepts
and never reads (TCP buffers our PDUs for a while), both "connect". So every connection begins
with a keepalive, and counts as working only once that keepalive is acknowledged (the mediation
function reads what we send and answers), within ``keepalive_interval``; otherwise it is lost
("no keepalive acknowledgement"). PDUs are written from that acknowledgement on, not before:
what TCP would take from a mediation function that never reads would be lost with the
connection, while in the queue it waits for the next one (one round trip's delay). A connection
made during an outage must also have held :data:`STABLE` seconds, whichever comes last, before
the outage is over, so that one that drops us at once does not end it. Without the first
keepalive, a link's first connection was "working" from the TCP handshake until an idle
keepalive went unanswered (two intervals, a minute by default), and a link whose
``keepalive_interval`` exceeds :data:`STABLE` told the log (and the ADMF) "working" and
"failing" in turn, once a cycle, for a mediation function that never answered at all.

State (:attr:`DeliveryLink.state`, one of :data:`STATES`): ``connecting`` (TCP and TLS under
way), ``confirming`` (connected, the first keepalive not answered yet or, after an outage, the
:data:`STABLE` seconds not held yet), ``connected`` (confirmed: working), ``notConnected``
(an attempt failed or the connection was lost; waiting to try again). It never contradicts the
health below: ``connected`` is the only state in which :attr:`DeliveryLink.fault` may be None,
and there a fault means PDUs were dropped for a full queue (said as such).

Log (gateway/core/failure_log.py, :attr:`DeliveryLink.failures`): a destination that keeps
failing is one WARNING with the reason and what happens to its PDUs meanwhile, a summary every
300 s, and one INFO once the outage is over (above), rather than a line per attempt; a link's
first confirmed connection is one INFO. The lines name the destination's DID and address,
never a target or what was intercepted (the plugin's rule, lawful_intercept.md "Keeping it
covert"). Their times come from ``wall_clock``, the plugin's own (the one its X1 answers and X3
capture times use), so a test in virtual time decides them.

Health (:attr:`DeliveryLink.fault`): why delivery does not work now, or None while it works:
from the link's start until its first connection is confirmed ("not confirmed yet",
:attr:`DeliveryLink.pending`), from a failed connection attempt (refused, TLS, timeout) or a
lost connection until a connection is confirmed (above: the log and the health say the same),
and from a PDU dropped because the queue was full until the queue is empty again. That one
value answers GetDestinationDetails and decides the reports to the ADMF (:mod:`.reports`), so
the two cannot disagree; the reports leave out a link that is :attr:`DeliveryLink.pending`
(its first connection not yet confirmed, and no failure yet: there is nothing to report until
it fails, which it does within ``keepalive_interval`` or a connection timeout). ``on_fault``
(set only when reports are sent) hears each change of what the reports would say.
"""

from __future__ import annotations

import logging
import ssl
import time
import uuid
from collections.abc import Callable

import trio

from gateway.core.failure_log import FailureLog
from gateway.core.logs import log_exception, system_error_text
from gateway.core.transport.flows import format_host_port
from gateway.plugins.taps.intercept.pdu import (
    KEEPALIVE,
    KEEPALIVE_ACK,
    PduError,
    PduReader,
    keepalive,
)
from gateway.plugins.taps.intercept.tasks import Destination

log = logging.getLogger(__name__)

MAX_BACKOFF = 30.0
CONNECT_TIMEOUT = 10.0
STABLE = 10.0
"""Seconds a connection made during an outage must hold (its first keepalive acknowledged)
before the outage is over."""
STATES = ("connecting", "confirming", "connected", "notConnected")
"""The values of :attr:`DeliveryLink.state` (module docstring); "confirming" came last, so the
other names are unchanged."""


class DeliveryLink:
    def __init__(
        self,
        destination: Destination,
        *,
        ssl_context: ssl.SSLContext | None,
        queue: int,
        keepalive_interval: float,
        version: int,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.destination = destination
        self.ssl_context = ssl_context  # read at each connect: a SIGHUP reload swaps it
        self._keepalive_interval = keepalive_interval
        self.version = version
        self._send, self._receive = trio.open_memory_channel[bytes](queue)
        self.sequences: dict[uuid.UUID, int] = {}
        """The next sequence number of each task's PDUs on this destination."""
        self.state = "connecting"
        """One of :data:`STATES` (module docstring)."""
        self.sent = 0
        self.dropped = 0
        self.connections = 0
        self._keepalive_sequence = 0
        self._awaiting_ack: int | None = None
        self._acknowledged = trio.Event()  # the awaited keepalive was acknowledged
        self._closed = False
        self._where = format_host_port(*destination.address)
        self.fault: str | None = self._unconfirmed("connecting to")
        """Why delivery does not work now (None: it works); see the module docstring."""
        self.pending = True
        """No verdict yet: the link's first connection is not confirmed, and nothing failed.
        The reports to the ADMF leave such a link out (:attr:`reported_fault`)."""
        self.on_fault: Callable[[DeliveryLink], object] | None = None
        """Told when :attr:`reported_fault` turns from None to a reason or back (reports to
        the ADMF)."""
        self._overflow = False  # a PDU was dropped for a full queue, and it has not emptied since
        self.wall_clock = wall_clock
        """Unix time, for the log's lines: the plugin's clock (``Interception(wall_clock=)``)."""
        self.failures = FailureLog(
            log,
            f"intercept: destination {destination.did} ({self._where})",
            "connections",
            f"its PDUs wait in its queue (at most {queue}), and past that are dropped, counted "
            "(the sequence numbers show the mediation function the gap); connecting again after "
            f"1, 2, 4 ... {MAX_BACKOFF:g} s",
        )
        """The destination's outage: logged once, summarized, once more when it is over."""
        self._backoff = 1.0

    def next_sequence(self, xid: uuid.UUID) -> int:
        """The sequence number of the next PDU of task ``xid`` on this link."""
        sequence = self.sequences.get(xid, 0)
        self.sequences[xid] = (sequence + 1) & 0xFFFFFFFF
        return sequence

    def send(self, pdu: bytes) -> None:
        """Queue an encoded PDU; never waits (a full queue or a closed link drops it,
        counted)."""
        try:
            self._send.send_nowait(pdu)
        except trio.WouldBlock:
            self.dropped += 1
            if not self._overflow:  # once per overflow, not per PDU dropped
                self._overflow = True
                self._set_fault(self._overflow_reason())
        except trio.ClosedResourceError:
            self.dropped += 1  # removed by X1: nothing to report about a destination now gone

    def _overflow_reason(self) -> str:
        return f"queue full ({self._send.statistics().max_buffer_size} PDUs): PDUs dropped"

    @property
    def reported_fault(self) -> str | None:
        """:attr:`fault` as the reports to the ADMF see it: None while :attr:`pending` (a link
        still confirming its first connection has nothing to report yet)."""
        return None if self.pending else self.fault

    def _unconfirmed(self, doing: str) -> str:
        return (
            f"{doing} {self._where}: not confirmed yet (the mediation function has not "
            "answered a keepalive on this connection)"
        )

    def _set_fault(self, reason: str | None, *, pending: bool = False) -> None:
        """Record why delivery does not work now (None: it works) and whether that is only the
        first connection not confirmed yet (``pending``); tell ``on_fault`` of a change between
        working and faulty as the reports see it (a new reason for a link already faulty is no
        news)."""
        before = self.reported_fault is None
        self.fault = reason
        self.pending = pending
        changed = before != (self.reported_fault is None)
        if changed and self.on_fault is not None and not self._closed:
            self.on_fault(self)

    def close(self) -> None:
        """The destination was removed or changed: no more PDUs. :meth:`run` sends what the
        queue holds (trying once more to connect if it must) and returns; a connection attempt
        or a connection that fails first (its mediation function never answered) ends it too,
        what the queue holds counted as dropped."""
        self._closed = True
        self._send.close()

    async def run(self) -> None:
        host, port = self.destination.address
        while True:
            self.state = "connecting"
            if self.pending:
                self._set_fault(self._unconfirmed("connecting to"), pending=True)
            try:
                with trio.fail_after(CONNECT_TIMEOUT):
                    stream = await self._connect(host, port)
            except Exception as exc:
                # Whatever the destination's address or peer does (refused, a certificate we
                # do not trust, an address no socket takes), this link fails and tries again;
                # the X1 server and the other links go on (each link its own boundary).
                self.state = "notConnected"
                why = _why(exc, f"no connection within {CONNECT_TIMEOUT:g} s")
                self._set_fault(f"cannot connect to {format_host_port(host, port)}: {why}")
                self.failures.failed(f"cannot connect: {why}", now=self.wall_clock())
                if self._closed:
                    # Removed while unreachable: what it still holds is lost, and counted.
                    self.dropped += self._receive.statistics().current_buffer_used
                    return
                await self._back_off()
                continue
            self.connections += 1
            # Not working until the mediation function answers (module docstring): during an
            # outage its fault stays; a first connection says it is not confirmed yet.
            self.state = "confirming"
            if self.pending:
                self._set_fault(self._unconfirmed("connected to"), pending=True)
            elif self.fault is not None and not self._overflow:
                # The outage's reason stays, and says a connection is being confirmed (what
                # the X1 status answers show of the state).
                self._set_fault(f"{self.fault}; {self._unconfirmed('connected again to')}")
            outage = self.failures.failing
            confirmed = False

            def working(outage: bool = outage) -> None:
                nonlocal confirmed
                confirmed = True
                self._confirmed(outage)

            connected_at = trio.current_time()
            try:
                await self._serve(stream, working, hold=STABLE if outage else 0.0)
            except _EndOfQueue:
                await trio.aclose_forcefully(stream)
                return
            except (
                OSError,
                trio.BrokenResourceError,
                trio.ClosedResourceError,
                trio.TooSlowError,
                PduError,
            ) as exc:
                why = f"connection lost: {_why(exc, 'the mediation function reads nothing')}"
                self._set_fault(why)
            except Exception:
                log_exception(log, "intercept: destination %s failed", self.destination.did)
                why = "connection failed (logged)"
                self._set_fault("connection failed")
            await trio.aclose_forcefully(stream)
            self.state = "notConnected"
            if self._closed:
                # Removed, and this connection failed before its queue was written (its
                # mediation function never answered): what it holds is lost, and counted.
                self.dropped += self._receive.statistics().current_buffer_used
                return
            held = trio.current_time() - connected_at
            if self.failures.failing:
                # Made during the outage and lost before it was over (held, its keepalive
                # answered): the outage goes on, and so does its back-off (no reconnection
                # loop with a peer that drops us at once).
                self.failures.failed(f"{why} after {held:.3g} s", now=self.wall_clock())
                await self._back_off()
            elif not confirmed:
                # A first connection that never answered: an outage from now on, backed off.
                self.failures.failed(why, now=self.wall_clock())
                await self._back_off()
            else:
                self.failures.failed(why, now=self.wall_clock())

    async def _back_off(self) -> None:
        await trio.sleep(self._backoff)
        self._backoff = min(MAX_BACKOFF, self._backoff * 2)

    def _confirmed(self, outage: bool) -> None:
        """The connection's first keepalive was acknowledged (and, made during an outage, it
        held :data:`STABLE` seconds): it works, and an outage is over."""
        self.state = "connected"
        self._backoff = 1.0
        self._set_fault(self._overflow_reason() if self._overflow else None)
        if outage:
            self.failures.answered(
                now=self.wall_clock(),
                outcome=f"connected {STABLE:g} s ago, "
                f"{self._receive.statistics().current_buffer_used} PDUs queued",
            )
        else:
            log.info("intercept: connected to destination %s", self.destination.did)

    async def _connect(self, host: str, port: int) -> trio.abc.Stream:
        tcp = await trio.open_tcp_stream(host, port)
        if self.ssl_context is None:
            return tcp
        tls = trio.SSLStream(tcp, self.ssl_context, server_hostname=host)
        try:
            await tls.do_handshake()
        except BaseException:
            await trio.aclose_forcefully(tcp)
            raise
        return tls

    async def _serve(
        self, stream: trio.abc.Stream, confirmed: Callable[[], object], *, hold: float
    ) -> None:
        """Write the queue and read acknowledgements until either side fails; raises what
        ended it (exception groups kept out: one link, one cause). A keepalive goes first, the
        queue once it is acknowledged, and ``confirmed`` is called once the connection has also
        held ``hold`` seconds (module docstring, "Confirmation")."""
        self._awaiting_ack = None
        self._acknowledged = trio.Event()
        lock = trio.Lock()  # the writer and the reader's acknowledgements share the stream
        failures: list[Exception] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._read, stream, lock, failures, nursery.cancel_scope)
            try:
                await self._send_within(stream, lock, self._next_keepalive())
                nursery.start_soon(self._confirm, confirmed, hold, failures, nursery.cancel_scope)
                # PDUs only to a mediation function that reads: until it answers, they wait in
                # the queue (for the next connection, should this one never answer).
                await self._acknowledged.wait()
                await self._write(stream, lock)
            except (
                OSError,
                trio.BrokenResourceError,
                trio.ClosedResourceError,
                trio.TooSlowError,
                PduError,
                _EndOfQueue,
            ) as exc:
                failures.append(exc)
            nursery.cancel_scope.cancel()
        if failures:
            raise failures[0]

    async def _write(self, stream: trio.abc.Stream, lock: trio.Lock) -> None:
        interval = self._keepalive_interval
        while True:
            with trio.move_on_after(interval) as idle:
                try:
                    data = await self._receive.receive()
                except trio.EndOfChannel:
                    raise _EndOfQueue from None
            if idle.cancelled_caught:
                if self._awaiting_ack is not None:
                    raise PduError(_NO_ACKNOWLEDGEMENT)
                await self._send_within(stream, lock, self._next_keepalive())
            else:
                try:
                    await self._send_within(stream, lock, data)
                except BaseException:
                    # Taken off the queue and not (wholly) written: the connection's failure
                    # (or the link's end) loses it. TCP has no per-PDU acknowledgement, so a
                    # PDU is counted sent once written, and this one dropped.
                    self.dropped += 1
                    raise
                self.sent += 1
            if self._overflow and self._receive.statistics().current_buffer_used == 0:
                # The backlog is written: PDUs flow again, with a gap the sequence numbers show
                # (a connection not confirmed yet keeps its fault until it is: _confirmed()).
                self._overflow = False
                if self.state == "connected":
                    self._set_fault(None)

    def _next_keepalive(self) -> bytes:
        """A keepalive whose acknowledgement is awaited from now on."""
        self._keepalive_sequence = (self._keepalive_sequence + 1) & 0xFFFFFFFF
        self._awaiting_ack = self._keepalive_sequence
        return keepalive(self._keepalive_sequence, version=self.version)

    async def _confirm(
        self,
        confirmed: Callable[[], object],
        hold: float,
        failures: list[Exception],
        scope: trio.CancelScope,
    ) -> None:
        """The confirmation of a connection (module docstring): its first keepalive
        acknowledged within a keepalive interval, and ``hold`` seconds held."""
        deadline = trio.current_time() + hold
        with trio.move_on_after(self._keepalive_interval):
            await self._acknowledged.wait()
        if not self._acknowledged.is_set():
            failures.append(PduError(_NO_ACKNOWLEDGEMENT))
            scope.cancel()
            return
        await trio.sleep_until(deadline)
        confirmed()

    async def _read(
        self,
        stream: trio.abc.Stream,
        lock: trio.Lock,
        failures: list[Exception],
        scope: trio.CancelScope,
    ) -> None:
        reader = PduReader(max_payload_length=0)  # the peer sends us keepalives only
        try:
            while True:
                data = await stream.receive_some(4096)
                if not data:
                    raise _ClosedByMdf
                for pdu in reader.feed(bytes(data)):
                    if pdu.pdu_type == KEEPALIVE_ACK and pdu.sequence == self._awaiting_ack:
                        self._awaiting_ack = None
                        self._acknowledged.set()
                    elif pdu.pdu_type == KEEPALIVE and pdu.sequence is not None:
                        ack = keepalive(pdu.sequence, version=self.version, acknowledgement=True)
                        await self._send_within(stream, lock, ack)
        except (
            OSError,
            trio.BrokenResourceError,
            trio.ClosedResourceError,
            trio.TooSlowError,
            PduError,
        ) as exc:
            failures.append(exc)
            scope.cancel()

    async def _send_within(self, stream: trio.abc.Stream, lock: trio.Lock, data: bytes) -> None:
        """Send ``data``, or give the connection up (TooSlowError) when the mediation function
        has not taken it within a keepalive interval: one that stopped reading would otherwise
        hold the link "connected" for ever while its queue overflows."""
        with trio.fail_after(self._keepalive_interval):
            async with lock:
                await stream.send_all(data)


_NO_ACKNOWLEDGEMENT = "no keepalive acknowledgement"


class _EndOfQueue(Exception):
    """The link was closed: its queue has ended."""


class _ClosedByMdf(trio.BrokenResourceError):
    """The mediation function closed the connection (its end of the stream came): a broken
    connection whose reason is no socket's error, said in its own words (:func:`_why`)."""


def _why(exc: BaseException, too_slow: str) -> str:
    """Why a link failed, for its fault (the ADMF reads it) and the log: a socket's or TLS's
    exception in the system's and OpenSSL's words only (logs.system_error_text), never its own
    text; a time-out as ``too_slow``; our own errors' words (a PDU refused) as they are."""
    if isinstance(exc, trio.TooSlowError):
        return too_slow
    if isinstance(exc, _ClosedByMdf):
        return "the MDF closed the connection"  # (no errno: system_error_text says only the type)
    if isinstance(exc, OSError | trio.BrokenResourceError | trio.ClosedResourceError):
        return system_error_text(exc)
    return str(exc) or type(exc).__name__
