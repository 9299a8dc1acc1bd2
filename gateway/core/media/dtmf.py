"""DTMF interworking: RFC 4733 telephone-events <-> SIP INFO digits. Sans-IO.

Theory of operation
-------------------
Two legs of one call may carry DTMF differently: one negotiated ``telephone-event`` (RFC 4733
events in its RTP), the other did not (an older PBX or phone that sends and expects digits in
SIP INFO: ``application/dtmf-relay``, Cisco's de-facto ``Signal=5\\r\\nDuration=160``, or
``application/dtmf``, a bare ``5``). A B2BUA relaying each unchanged loses every digit. This
module holds the protocol parts of the gateway's interworking (docs/architecture.md "DTMF
interworking"), as FreeSWITCH's and rtpengine's DTMF interworking do:

- :class:`EventDetector` reads the event packets of one RTP stream (RFC 4733 §2.3: event,
  E bit, volume, duration; every packet of one event has the event's timestamp, §2.5.1.1) and
  says once per event, when its end packet arrives, which digit it was and how long
  (§2.5.1.4: the end packet is sent three times; the copies carry the same timestamp and are
  ignored). A new event that begins while the previous one never ended (all three end
  packets lost) ends the previous one with the last duration seen; so does a timeout
  (§2.5.2.2: the receiver ends an event on its own when no packet of it arrives any more):
  fed with arrival times, the detector has a timer (:meth:`EventDetector.get_timer`,
  :meth:`EventDetector.handle_timer`, the aioquic shape), :data:`END_TIMEOUT` after the last
  packet of an unfinished event. Either way the event is reported once: later packets of
  it (late copies, late end packets) and of older events of the same source are ignored.
- :func:`event_packets` plans the packets of one digit to send (§2.5.1.2-§2.5.1.4): the first
  with the marker bit, one update every :data:`UPDATE_INTERVAL` with the duration so far, and
  the final duration in three end packets. Sequence numbers, timestamp and SSRC are the
  relay's business (they must continue the stream the receiver already hears).
- :func:`parse_dtmf_info_untrusted` reads a SIP INFO body; :func:`dtmf_relay_body` writes one.

Only DTMF events 0-15 (RFC 4733 §3.2: 0-9, ``*``, ``#``, A-D) are digits; other events
(flash-hook 16, ...) are not carried by INFO and are ignored.
"""

from __future__ import annotations

import attrs

from gateway.core.media.errors import RtpParseError
from gateway.core.media.rtp import parse_rtp_header_untrusted

DIGITS = "0123456789*#ABCD"
"""RFC 4733 §3.2 table 1: events 0-15 are these digits, in this order."""

DTMF_RELAY = "application/dtmf-relay"
DTMF = "application/dtmf"
INFO_CONTENT_TYPES = frozenset({DTMF_RELAY, DTMF})
"""The INFO bodies read as digits (compared in lower case, parameters dropped)."""

DEFAULT_DURATION_MS = 160
"""An INFO digit's duration when its body gives none (``application/dtmf`` never does)."""
MIN_DURATION_MS = 40
MAX_DURATION_MS = 5000
"""INFO durations are clamped to this range: a receiver needs ~40 ms to detect a digit (ITU-T
Q.24), and a stuck or hostile ``Duration=`` must not hold the stream's injection for long."""
MAX_INFO_BODY = 256
"""Longest INFO body read as a digit; longer is not a DTMF body."""

UPDATE_INTERVAL = 0.05
"""Seconds between the packets of a digit we send (RFC 4733 §2.5.1.2 leaves it to the sender;
50 ms is what Asterisk and FreeSWITCH use)."""
END_REPEAT_INTERVAL = 0.02
"""Seconds between the three copies of the end packet (§2.5.1.4)."""
END_PACKETS = 3
EVENT_VOLUME = 10
"""The volume field of events we send: -10 dBm0 (§2.3.2: 0-63, positive = below 0 dBm0)."""
END_TIMEOUT = 0.5
"""Seconds without a packet after which an unfinished event counts as ended (its end packets
were all lost, RFC 4733 §2.5.2.2). A sender repeats an event's packet at least every 50 ms or
so (§2.5.1.2, updates), so ten intervals of silence mean it stopped; a longer gap inside an
event (a burst of loss) ends it early, still once, with a shorter duration."""


class DtmfError(ValueError):
    """A peer's DTMF (an event payload, an INFO body) is malformed. ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@attrs.frozen
class Digit:
    """One DTMF digit: ``digit`` from :data:`DIGITS`, and how long it lasted."""

    digit: str
    duration_ms: int


@attrs.frozen
class TelephoneEvent:
    """The payload of one RFC 4733 event packet (§2.3)."""

    event: int
    end: bool
    volume: int
    duration: int
    """In timestamp units of the stream's clock (8000 per second for telephone-event/8000)."""


def parse_event_untrusted(payload: bytes | bytearray | memoryview) -> TelephoneEvent:
    """The first event of an RFC 4733 payload (§2.3: event, E|R|volume, duration; 4 octets).
    More than one event in a packet (redundancy, RFC 2198) is not read. Raises
    :class:`DtmfError` for a payload shorter than 4 octets."""
    if len(payload) < 4:
        raise DtmfError(f"telephone-event payload of {len(payload)} octets is shorter than 4")
    return TelephoneEvent(
        event=payload[0],
        end=bool(payload[1] & 0x80),
        volume=payload[1] & 0x3F,
        duration=(payload[2] << 8) | payload[3],
    )


def event_payload(event: int, *, end: bool, duration: int, volume: int = EVENT_VOLUME) -> bytes:
    """The 4 octets of an RFC 4733 event payload (§2.3); ``duration`` is capped at 0xFFFF."""
    return bytes(
        (
            event & 0xFF,
            (0x80 if end else 0) | (volume & 0x3F),
            (min(duration, 0xFFFF) >> 8) & 0xFF,
            min(duration, 0xFFFF) & 0xFF,
        )
    )


class EventDetector:
    """Turns one stream's RFC 4733 packets into digits, one per event (module docstring).

    ``clock_rate``: the telephone-event clock of the sender's SDP (``a=rtpmap:101
    telephone-event/8000``), to turn durations into milliseconds. ``end_timeout``: seconds
    without a packet after which an unfinished event is ended (:data:`END_TIMEOUT`); it runs
    only for packets fed with ``now``.
    """

    def __init__(self, clock_rate: int, *, end_timeout: float = END_TIMEOUT) -> None:
        if clock_rate <= 0:
            raise ValueError(f"telephone-event clock rate {clock_rate} is not positive")
        if end_timeout <= 0:
            raise ValueError(f"DTMF end timeout {end_timeout} is not positive")
        self.clock_rate = clock_rate
        self.end_timeout = end_timeout
        self._current: tuple[int, int, int] | None = None  # (timestamp, event, duration)
        # Arrival times of the current event's first and latest packets (None: fed without).
        self._first_seen: float | None = None
        self._last_seen: float | None = None
        self._first_duration = 0
        # The last event that ended: (SSRC, timestamp). RTP timestamps are per source
        # (RFC 3550 §5.1), so a packet of another source never counts as old.
        self._ended: tuple[int, int] | None = None
        self._ssrc = 0  # of the current event
        self.malformed = 0
        self.timed_out = 0
        """Events ended by the timeout (none of their end packets arrived in time)."""

    def feed(
        self, packet: bytes | bytearray | memoryview, *, now: float | None = None
    ) -> list[Digit]:
        """Read one telephone-event RTP packet (plain: after SRTP unprotect); returns the
        digits that ended with it (usually none or one; two when it begins an event while the
        previous never ended). ``now``: when it arrived, which arms the end timeout
        (:meth:`get_timer`). A malformed packet is counted in :attr:`malformed`."""
        try:
            header = parse_rtp_header_untrusted(packet)
            payload_end = len(packet) - (packet[-1] if header.padding else 0)
            event = parse_event_untrusted(packet[header.header_length : payload_end])
        except (RtpParseError, DtmfError):
            self.malformed += 1
            return []
        timestamp = header.timestamp
        ended = self._ended
        if ended is not None and ended[0] == header.ssrc:
            # §2.5.1.4: a copy of the end packet, or a late packet of an event that ended (by
            # its end packet, a newer event or the timeout): events of one source follow in
            # timestamp order, compared modulo 2**32 (RFC 3550 §5.1 wraps around).
            since = (timestamp - ended[1]) & 0xFFFFFFFF
            if since == 0 or since >= 0x80000000:
                return []
        digits: list[Digit] = []
        current = self._current
        if current is not None and current[0] != timestamp:
            # A new event while the previous never ended (its end packets were all lost).
            digits.extend(self._end(self._ssrc, current))
            current = None
        if current is None:
            current = (timestamp, event.event, event.duration)
            self._ssrc = header.ssrc
            self._first_seen = now
            self._first_duration = event.duration
        else:
            current = (timestamp, current[1], max(current[2], event.duration))
        if event.end:
            digits.extend(self._end(header.ssrc, current))
        else:
            self._current = current
            self._last_seen = now
        return digits

    def get_timer(self) -> float | None:
        """When the unfinished event times out (its last packet's arrival plus
        ``end_timeout``); None: no event is unfinished, or it was fed without times."""
        if self._current is None or self._last_seen is None:
            return None
        return self._last_seen + self.end_timeout

    def handle_timer(self, *, now: float) -> list[Digit]:
        """End the unfinished event if its timer is due (RFC 4733 §2.5.2.2): its digit (if it
        is one), with the duration estimated from what was seen (the longest duration a
        packet gave, or the time its packets spanned if longer). Before the timer: nothing."""
        timer = self.get_timer()
        if timer is None or now < timer:
            return []
        self.timed_out += 1
        return self.end_unfinished()

    def end_unfinished(self) -> list[Digit]:
        """End the event that has not ended, now (the interworking that reads it is replaced
        or removed mid-event: its later packets, end packets included, will not come here):
        its digit (if it is one), once, with the duration known as :meth:`handle_timer`
        estimates it. Nothing when no event is unfinished."""
        current = self._current
        if current is None:
            return []
        first, last = self._first_seen, self._last_seen
        duration = current[2]
        if first is not None and last is not None:
            spanned = self._first_duration + int((last - first) * self.clock_rate)
            duration = max(duration, spanned)
        return self._end(self._ssrc, (current[0], current[1], duration))

    def follow(self, earlier: EventDetector) -> None:
        """Read on from ``earlier``, which read the same sender's events under the plan this
        detector's replaces: the event it ended last stays ended, so its later packets (its
        other end copies, §2.5.1.4; copies a media worker took under the old plan) are not
        read as a new event whose start was lost, a second digit."""
        self._ended = earlier._ended

    def _end(self, ssrc: int, event: tuple[int, int, int]) -> list[Digit]:
        """``event`` (timestamp, event, duration) of source ``ssrc`` is over: its digit."""
        self._current = None
        self._first_seen = self._last_seen = None
        self._ended = (ssrc, event[0])
        if event[1] >= len(DIGITS):
            return []  # not DTMF (flash-hook, tones): INFO carries digits only
        return [Digit(DIGITS[event[1]], event[2] * 1000 // self.clock_rate)]


@attrs.frozen
class PlannedPacket:
    """One packet of a digit we send: ``at`` seconds after the digit began, the marker bit,
    the RFC 4733 payload."""

    at: float
    marker: bool
    payload: bytes


def event_packets(digit: Digit, *, clock_rate: int) -> tuple[PlannedPacket, ...]:
    """The packets that send ``digit`` as an RFC 4733 event (module docstring): the first with
    the marker bit (§2.5.1.2), an update every :data:`UPDATE_INTERVAL` whose duration counts
    from the event's start to the end of that update's interval (at most the digit's), and
    the final duration three times with the E bit (§2.5.1.4). All carry one timestamp."""
    event = DIGITS.index(digit.digit)
    total = digit.duration_ms * clock_rate // 1000
    step = round(UPDATE_INTERVAL * clock_rate)
    packets: list[PlannedPacket] = []
    at = 0.0
    duration = 0
    while True:
        duration = min(duration + step, total)
        if duration >= total:
            break
        packets.append(
            PlannedPacket(at, not packets, event_payload(event, end=False, duration=duration))
        )
        at += UPDATE_INTERVAL
    end_at = digit.duration_ms / 1000
    if not packets:
        # A digit shorter than one interval: its first packet is the start and the end.
        end_at = 0.0
    for repeat in range(END_PACKETS):
        packets.append(
            PlannedPacket(
                end_at + repeat * END_REPEAT_INTERVAL,
                not packets,
                event_payload(event, end=True, duration=total),
            )
        )
    return tuple(packets)


def is_dtmf_info(content_type: str | None) -> bool:
    """Whether an INFO with this Content-Type carries a digit we read (parameters ignored)."""
    if content_type is None:
        return False
    return content_type.partition(";")[0].strip().lower() in INFO_CONTENT_TYPES


def parse_dtmf_info_untrusted(content_type: str, body: bytes) -> Digit:
    """The digit of a SIP INFO body: ``application/dtmf-relay`` (``Signal=5`` and an optional
    ``Duration=160`` in ms, one per line, CRLF or LF, keys in any case) or ``application/dtmf``
    (the digit alone). ``Signal=10``/``11`` are read as ``*``/``#`` (some older gateways).
    Durations are clamped to :data:`MIN_DURATION_MS`..:data:`MAX_DURATION_MS`. Raises
    :class:`DtmfError` (answer 400) when the body is no digit."""
    if len(body) > MAX_INFO_BODY:
        raise DtmfError(f"DTMF body of {len(body)} octets is longer than {MAX_INFO_BODY}")
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        raise DtmfError("DTMF body is not ASCII") from None
    kind = content_type.partition(";")[0].strip().lower()
    signal: str | None = None
    duration = DEFAULT_DURATION_MS
    if kind == DTMF:
        signal = text.strip()
    elif kind == DTMF_RELAY:
        for line in text.splitlines():
            key, equals, value = line.partition("=")
            if not equals:
                continue
            key, value = key.strip().lower(), value.strip()
            if key == "signal":
                signal = value
            elif key == "duration":
                if not value.isdigit() or len(value) > 6:
                    # Its length, not its text: the reason is the 400's phrase (SIP trace, and
                    # back on the wire), and a misformatted body may carry a card number here
                    # as in Signal= (PCI DSS 3.3).
                    raise DtmfError(f"DTMF duration is not a number ({len(value)} characters)")
                duration = int(value)
    else:
        raise DtmfError(f"{kind!r} is not a DTMF body")
    if signal is None:
        raise DtmfError("DTMF body has no Signal")
    signal = {"10": "*", "11": "#"}.get(signal, signal.upper())
    if len(signal) != 1 or signal not in DIGITS:
        # Not echoed: the reason is the 400's phrase, which the SIP trace logs, and a Signal of
        # several digits may be a whole PIN or card number (PCI DSS 3.3).
        raise DtmfError(f"DTMF signal is not a digit ({len(signal)} characters)")
    return Digit(signal, max(MIN_DURATION_MS, min(duration, MAX_DURATION_MS)))


def dtmf_relay_body(digit: Digit) -> bytes:
    """The ``application/dtmf-relay`` body of ``digit`` (the de-facto Cisco form, CRLF lines,
    as FreeSWITCH and Asterisk send it)."""
    return f"Signal={digit.digit}\r\nDuration={digit.duration_ms}\r\n".encode("ascii")
