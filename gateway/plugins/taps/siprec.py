"""The ``siprec`` media tap: a SIPREC Session Recording Client (RFC 7866, metadata RFC 7865) that
sends the calls it is told to record to a recorder (a Session Recording Server, SRS).

Theory of operation. When a selected call is answered its sink opens a *recording session* to
the SRS through the core (``TappedCall.sessions``: the core runs the SIP transactions and the
dialog): an INVITE with ``Require: siprec``, our Contact marked ``+sip.src`` (RFC 7866 §6.1.1)
and a multipart/mixed body (§8) of

- an SDP offer with two m= lines per audio stream of the call, what the caller sent
  (``a=label`` 2i+1) and what the callee sent (2i+2), each ``a=sendonly``, with the call's
  codecs (RFC 7866 §8.1.1: one stream per direction; the labels are RFC 4574's), and
- the metadata (``application/rs-metadata+xml``, ``Content-Disposition: recording-session``,
  RFC 7865): the communication session, its two participants (the caller's From and request
  URIs), the streams by label, and who sends and receives which.

Once the SRS answers 2xx (its SDP says where each labelled stream goes: a=label, else the m=
line order; port 0 declines one), the sink sends each packet the call's relay forwards, as
plain RTP (the copy is taken after SRTP was removed; the recording network is trusted), from a
socket of its own per m= line to the SRS's address for it. RTCP is not forwarded. Packets that
arrive before the answer wait in the sink's bounded queue (a full queue drops and counts). When
the call ends the sink sends BYE; an SRS that ends the session (its BYE) stops the copies and the
call goes on. When the call is held or resumed, or its codecs change, the sink re-INVITEs the SRS
with the streams' new state (held: ``a=inactive``, RFC 7866 §8.1.2; a line that turned to T.38
fax, which is passed through and never recorded: ``a=inactive`` too, its m= line still audio,
until the call goes back to audio). An SRS that refuses or does
not answer (Timer B: 32 s over UDP) is followed by the
next of ``fallbacks``, in order; when none takes the call it goes on unrecorded, logged as a
warning (recording is not mandatory here: the call is never ended for it).

Not done: streams the call adds after its answer, and a transfer's new party in the metadata (the
copies go on as they are); pause/resume on the operator's request; SRTP towards the SRS; the
``a=record`` indication to recording-aware phones (RFC 7866 §7).
"""

from __future__ import annotations

import base64
import logging
import socket
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import escape, quoteattr

import attrs
import trio

from gateway.core.hookspecs import hookimpl
from gateway.core.interfaces import OutboundSession, TappedCall, TappedMedia
from gateway.core.sdp.body import sdp_of
from gateway.core.sdp.errors import SdpError
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.core.sip.errors import RemoteSipError
from gateway.core.sip.grammar import parse_uri_untrusted
from gateway.plugins.taps.queue import CopyQueue
from gateway.plugins.taps.recorder import rtp_fields
from gateway.plugins.taps.selection import NOTHING_SELECTED, CallSelection

if TYPE_CHECKING:
    from gateway.core.interfaces import MediaTap, TapSink
    from gateway.core.plugins import Registry

log = logging.getLogger(__name__)

METADATA_TYPE = "application/rs-metadata+xml"
NAMESPACE = "urn:ietf:params:xml:ns:recording:1"
DIRECTIONS = ("a_to_b", "b_to_a")


def _identifier() -> str:
    """A metadata identifier: a UUID as the base64 of its 16 octets (RFC 7865 §6)."""
    return base64.b64encode(uuid.uuid4().bytes).decode("ascii")


@attrs.frozen
class RecordedStream:
    """One m= line of the recording session: a call stream's direction and its label."""

    index: int
    direction: str
    label: str
    media: TappedMedia
    stream_id: str = attrs.field(factory=_identifier)


def recorded_streams(media: Sequence[TappedMedia]) -> list[RecordedStream]:
    """Two per audio stream of the call, labelled 1, 2, 3...: the caller's, then the callee's."""
    streams: list[RecordedStream] = []
    for stream in media:
        if stream.media != "audio":
            continue
        for direction in DIRECTIONS:
            streams.append(RecordedStream(stream.index, direction, str(len(streams) + 1), stream))
    return streams


def _recorded_now(recorded: TappedMedia, now: TappedMedia | None) -> TappedMedia:
    """What a recorded audio stream is now: the call's stream at its index, or, while that line
    carries something else (T.38 fax after a re-INVITE, passed through, never recorded), the
    audio as it was, inactive: the SRS is told no audio flows, and its m= line stays audio."""
    if now is None:
        return recorded
    if now.media != "audio":
        return attrs.evolve(recorded, direction="inactive")
    return now


def offer_sdp(
    streams: Sequence[RecordedStream],
    address: str,
    ports: Sequence[int],
    *,
    session_id: int,
    version: int,
) -> bytes:
    """The recording session's SDP offer (RFC 7866 §8.1.1): one m= line per stream, sendonly,
    or inactive while the call's stream is on hold (RFC 7866 §8.1.2: the SRC tells the SRS)."""
    lines = [
        "v=0",
        f"o=voipgw {session_id} {version} IN IP4 {address}",
        "s=-",
        f"c=IN IP4 {address}",
        "t=0 0",
    ]
    for stream, port in zip(streams, ports, strict=True):
        lines.append(f"m=audio {port} RTP/AVP {' '.join(stream.media.formats)}")
        lines += [f"a=rtpmap:{value}" for value in stream.media.rtpmaps]
        lines += [f"a=fmtp:{value}" for value in stream.media.fmtps]
        direction = "sendonly" if stream.media.direction == "sendrecv" else "inactive"
        lines += [f"a=label:{stream.label}", f"a={direction}"]
    return ("\r\n".join(lines) + "\r\n").encode()


def metadata_xml(call: TappedCall, streams: Sequence[RecordedStream], at: float) -> bytes:
    """The complete metadata (RFC 7865 §8, RFC 7866 §12): one communication session, its two
    participants, the streams and who sends and receives each."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))
    session_id, caller_id, callee_id = _identifier(), _identifier(), _identifier()
    sent = {"a_to_b": caller_id, "b_to_a": callee_id}
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f"<recording xmlns={quoteattr(NAMESPACE)}>",
        "<datamode>complete</datamode>",
        f"<session session_id={quoteattr(session_id)}>",
        f"<sipSessionID>{escape(call.call_id)}</sipSessionID>",
        "</session>",
    ]
    for participant_id, aor in ((caller_id, call.from_uri), (callee_id, call.to_uri)):
        out += [
            f"<participant participant_id={quoteattr(participant_id)}>",
            f"<nameID aor={quoteattr(aor)}/>",
            "</participant>",
        ]
    for stream in streams:
        out += [
            f"<stream stream_id={quoteattr(stream.stream_id)} session_id={quoteattr(session_id)}>",
            f"<label>{stream.label}</label>",
            "</stream>",
        ]
    out += [
        f"<sessionrecordingassoc session_id={quoteattr(session_id)}>",
        f"<associate-time>{stamp}</associate-time>",
        "</sessionrecordingassoc>",
    ]
    for participant_id in (caller_id, callee_id):
        out += [
            f"<participantsessionassoc participant_id={quoteattr(participant_id)} "
            f"session_id={quoteattr(session_id)}>",
            f"<associate-time>{stamp}</associate-time>",
            "</participantsessionassoc>",
        ]
    for participant_id in (caller_id, callee_id):
        out.append(f"<participantstreamassoc participant_id={quoteattr(participant_id)}>")
        for stream in streams:
            kind = "send" if sent[stream.direction] == participant_id else "recv"
            out.append(f"<{kind}>{stream.stream_id}</{kind}>")
        out.append("</participantstreamassoc>")
    out.append("</recording>")
    return ("\r\n".join(out) + "\r\n").encode()


def multipart(parts: Sequence[tuple[Sequence[tuple[str, str]], bytes]]) -> tuple[str, bytes]:
    """A multipart/mixed body (RFC 2046 §5.1) of ``parts`` (headers, body); its content type."""
    boundary = f"voipgw-{uuid.uuid4().hex}"
    body = b""
    for headers, content in parts:
        body += f"--{boundary}\r\n".encode()
        body += "".join(f"{name}: {value}\r\n" for name, value in headers).encode()
        body += b"\r\n" + content + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return f"multipart/mixed;boundary={boundary}", body


def srs_destinations(
    answer_type: str | None, answer: bytes, streams: Sequence[RecordedStream]
) -> dict[tuple[int, str], tuple[str, int]]:
    """Where the SRS wants each stream (its answer's m= lines, matched by a=label, else by
    order; port 0 declines it). Raises SdpError for an unusable answer."""
    sdp = parse_sdp_untrusted(srs_sdp(answer_type, answer))
    by_label = {stream.label: stream for stream in streams}
    found: dict[tuple[int, str], tuple[str, int]] = {}
    for position, media in enumerate(sdp.media):
        label = media.attributes.get("label")
        stream = by_label.get(label) if label else None
        if stream is None and position < len(streams):
            stream = streams[position]
        if stream is None or media.port == 0:
            continue
        connection = media.connection or sdp.connection
        if connection is None:
            raise SdpError("the SRS answer has no c= line")
        found[(stream.index, stream.direction)] = (connection.address, media.port)
    return found


def srs_sdp(content_type: str | None, body: bytes) -> bytes:
    """The SDP of the SRS's answer: the body, or its application/sdp part. The SRS may put
    metadata beside it (RFC 7866 §9.2), which the core's reader refuses as a required part it
    does not handle; here it is simply not read."""
    media_type, _, parameters = (content_type or "").partition(";")
    if media_type.strip().lower() != "multipart/mixed":
        return sdp_of(content_type, body)
    boundary = ""
    for parameter in parameters.split(";"):
        name, _, value = parameter.strip().partition("=")
        if name.lower() == "boundary":
            boundary = value.strip().strip('"')
    if not boundary:
        raise SdpError("multipart answer without a boundary")
    for part in body.split(b"--" + boundary.encode())[1:]:
        headers, _, content = part.partition(b"\r\n\r\n")
        if b"application/sdp" in headers.lower():
            return content.rstrip(b"\r\n") + b"\r\n"
    raise SdpError("the SRS answer has no SDP")


# -- the sink -------------------------------------------------------------------------------------


@attrs.define
class SiprecCounts:
    packets: int = 0
    sent: int = 0
    dropped: int = 0
    not_sent: int = 0
    """Packets of declined streams, after the SRS ended the session, or when it could not open."""


class SiprecSink:
    """``interfaces.TapSink`` of one call: its recording session and the copies it sends."""

    def __init__(self, call: TappedCall, config: SiprecConfig) -> None:
        self.call = call
        self._config = config
        self._queue = CopyQueue(config.queue)
        self.counts = SiprecCounts()
        self.session: OutboundSession | None = None
        self._media = call.media
        self._changed = trio.Event()
        self._sdp_session_id = int(time.time())
        self._sdp_version = self._sdp_session_id

    def packet(self, stream_id: str, direction: str, rtp: bytes, *, now: float) -> None:
        self._queue.put(stream_id, direction, rtp, now)

    def close(self) -> None:
        self._queue.close()

    def streams_changed(self, media: tuple[TappedMedia, ...]) -> None:
        """The call was held, resumed or its codecs changed: re-INVITE the SRS (its task)."""
        self._media = media
        self._changed.set()

    async def run(self) -> None:
        streams = recorded_streams(self.call.media)
        sockets: list[trio.socket.SocketType] = []
        session: OutboundSession | None = None
        try:
            async with self._queue.receive, trio.open_nursery() as nursery:
                destinations: dict[tuple[int, str], tuple[str, int]] = {}
                if not streams:
                    log.warning("SIPREC: call %s has no audio to record", self.call.call_id)
                elif self.call.sessions is None:
                    log.error("SIPREC: call %s: the core lent no SIP sessions", self.call.call_id)
                else:
                    sockets = [await self._bind() for _ in streams]
                    session, destinations = await self._open(streams, sockets)
                    self.session = session
                if session is not None:
                    nursery.start_soon(self._follow_changes, session, streams, sockets)
                by_stream = {
                    (s.index, s.direction): sock for s, sock in zip(streams, sockets, strict=False)
                }
                async for stream_id, direction, rtp, _ in self._queue.receive:
                    await self._forward(session, destinations, by_stream, stream_id, direction, rtp)
                nursery.cancel_scope.cancel()  # the call is over: no more re-INVITEs
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(self._config.bye_timeout):
                if session is not None:
                    await session.close()
            for sock in sockets:
                sock.close()
            counts = self.counts
            counts.dropped = self._queue.dropped
            log.info(
                "SIPREC: call %s: %d packets, %d sent to the SRS, %d dropped, %d not sent",
                self.call.call_id,
                counts.packets,
                counts.sent,
                counts.dropped,
                counts.not_sent,
            )

    async def _follow_changes(
        self,
        session: OutboundSession,
        streams: list[RecordedStream],
        sockets: list[trio.socket.SocketType],
    ) -> None:
        """Re-INVITE the SRS after each change of the call's streams (RFC 7866 §8.1.2): held
        streams inactive, resumed ones sendonly again, new codecs declared. Streams the call
        adds later are not recorded."""
        ports = [sock.getsockname()[1] for sock in sockets]
        while not session.ended.is_set():
            await self._changed.wait()
            self._changed = trio.Event()
            latest = {media.index: media for media in self._media}
            current = [
                attrs.evolve(stream, media=_recorded_now(stream.media, latest.get(stream.index)))
                for stream in streams
            ]
            self._sdp_version += 1
            offer = offer_sdp(
                current,
                self._address,
                ports,
                session_id=self._sdp_session_id,
                version=self._sdp_version,
            )
            status = await session.update(offer, "application/sdp")
            if status is None or not 200 <= status < 300:
                log.warning(
                    "SIPREC: call %s: the SRS refused an update (%s)", self.call.call_id, status
                )

    async def _bind(self) -> trio.socket.SocketType:
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        await sock.bind((self._config.media_address, 0))
        return sock

    async def _open(
        self, streams: list[RecordedStream], sockets: list[trio.socket.SocketType]
    ) -> tuple[OutboundSession | None, dict[tuple[int, str], tuple[str, int]]]:
        assert self.call.sessions is not None
        ports = [sock.getsockname()[1] for sock in sockets]
        content_type, body = multipart(
            [
                (
                    [("Content-Type", "application/sdp")],
                    offer_sdp(
                        streams,
                        self._address,
                        ports,
                        session_id=self._sdp_session_id,
                        version=self._sdp_version,
                    ),
                ),
                (
                    [
                        ("Content-Type", METADATA_TYPE),
                        ("Content-Disposition", "recording-session"),
                    ],
                    metadata_xml(self.call, streams, time.time()),
                ),
            ]
        )
        session = None
        for target in (self._config.srs, *self._config.fallbacks):
            try:
                session = await self.call.sessions.open_session(
                    target,
                    body=body,
                    content_type=content_type,
                    headers=[
                        ("Require", "siprec"),
                        ("Accept", f"application/sdp, {METADATA_TYPE}"),
                    ],
                    contact_parameters=("+sip.src",),
                )
                break
            except Exception as exc:
                log.warning("SIPREC: call %s: %s", self.call.call_id, exc)
        if session is None:
            log.warning("SIPREC: call %s not recorded: no SRS took it", self.call.call_id)
            return None, {}
        try:
            destinations = srs_destinations(session.answer_type, session.answer_body, streams)
        except SdpError as exc:
            log.warning("SIPREC: call %s: unusable SRS answer: %s", self.call.call_id, exc)
            return session, {}
        return session, destinations

    @property
    def _address(self) -> str:
        return self._config.media_address

    async def _forward(
        self,
        session: OutboundSession | None,
        destinations: dict[tuple[int, str], tuple[str, int]],
        sockets: dict[tuple[int, str], trio.socket.SocketType],
        stream_id: str,
        direction: str,
        rtp: bytes,
    ) -> None:
        self.counts.packets += 1
        if rtp_fields(rtp) is None:
            return  # RTCP (and anything that is not RTP): not forwarded
        key = (int(stream_id), direction)
        destination = destinations.get(key)
        sock = sockets.get(key)
        if session is None or session.ended.is_set() or destination is None or sock is None:
            self.counts.not_sent += 1
            return
        try:
            await sock.sendto(rtp, destination)
            self.counts.sent += 1
        except OSError:
            self.counts.not_sent += 1


class SiprecClient:
    """The ``siprec`` media tap (``interfaces.MediaTap``)."""

    name = "siprec"

    def __init__(self, config: SiprecConfig) -> None:
        self.config = config

    def sink_for_call(self, call: TappedCall) -> SiprecSink | None:
        if not self.config.selection.wants(call):
            return None
        return SiprecSink(call, self.config)


# -- plugin configuration and registration (entry point ``siprec``) -------------------------------


@attrs.frozen
class SiprecConfig:
    """``[plugins.siprec]``. See docs/configuration.md."""

    srs: str = ""
    fallbacks: tuple[str, ...] = ()
    all_calls: bool = False
    accounts: tuple[str, ...] = ()
    trunks: tuple[str, ...] = ()
    media_address: str = "127.0.0.1"
    queue: int = 2000
    bye_timeout: float = 5.0

    def __attrs_post_init__(self) -> None:
        # structure() reports a ValueError as a config error of this table; say which key.
        _check_srs("srs", self.srs)
        for fallback in self.fallbacks:
            _check_srs("fallbacks", fallback)
        try:
            socket.inet_aton(self.media_address)
        except OSError:
            raise ValueError(
                f"media_address: expected an IPv4 address, not {self.media_address!r}"
            ) from None
        if not 10 <= self.queue <= 1_000_000:
            raise ValueError("queue: expected 10 to 1000000 packets")
        if self.selection.empty:
            raise ValueError(NOTHING_SELECTED)

    @property
    def selection(self) -> CallSelection:
        return CallSelection(self.all_calls, self.accounts, self.trunks)


def _check_srs(key: str, uri: str) -> None:
    try:
        parse_uri_untrusted(uri)
    except RemoteSipError:
        raise ValueError(
            f"{key}: expected a recorder's SIP URI (e.g. sip:srs@192.0.2.50:5060), not {uri!r}"
        ) from None
    if not uri.lower().startswith(("sip:", "sips:")):
        raise ValueError(f"{key}: expected a sip: or sips: URI, not {uri!r}")


@hookimpl
def gateway_plugin_config() -> type:
    return SiprecConfig


@hookimpl
def gateway_register_media_taps(registry: Registry[Any], config: SiprecConfig | None) -> None:
    """Register the ``siprec`` tap (its table names the SRS and the calls: no defaults)."""
    if config is not None:
        registry.add(SiprecClient.name, SiprecClient(config))


if TYPE_CHECKING:

    def _conforms(tap: SiprecClient, sink: SiprecSink) -> None:
        _tap: MediaTap = tap
        _sink: TapSink = sink
