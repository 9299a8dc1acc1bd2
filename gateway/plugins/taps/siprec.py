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
  URIs; for a call another phone picked up, that phone's URI instead of the request URI), the
  streams by label, and who sends and receives which.

Once the SRS answers 2xx (its SDP says where each labelled stream goes: a=label, else the m=
line order; port 0 declines one), the sink sends each packet the call's relay forwards, as
plain RTP (the copy is taken after SRTP was removed) where the recording network is trusted
or, with ``media_security = "sdes"``, as SRTP under keys of its own (below), from a
socket of its own per m= line to the SRS's address for it. RTCP is not forwarded. Packets that
arrive before the answer wait in the sink's bounded queue (a full queue drops and counts). An
SRS that ends the session (its BYE) stops the copies and the call goes on. When the call is held
or resumed, or its codecs change, the sink re-INVITEs the SRS with the streams' new state (held:
``a=inactive``, RFC 7866 §8.1.2; a line that turned to T.38 fax, which is passed through and never
recorded: ``a=inactive`` too, its m= line still audio, until the call goes back to audio). An SRS
that refuses or does not answer (Timer B: 32 s over UDP) is followed by the next of
``fallbacks``, in order (a recorder named by DNS, ``sip_targets``: the core first tries its
next target after a transport error, no answer, 408 or 503, RFC 3263 §4.3); when none takes
the call it goes on unrecorded, logged as a warning (recording is not mandatory here: the call
is never ended for it).

Updates that fail. One re-INVITE at a time (RFC 3261 §14.1), always the call as it is when it
goes, so a change that comes while another is refused or under way is never lost and no state in
between is sent. 491: RFC 3261 §14.1's wait. A refusal that may pass (408, 480, most 5xx, no
answer) goes again after a randomized back-off or the refusal's Retry-After
(:func:`update_retry`); past three resends, or after a refusal that will not pass, the update
is given up until the call changes again: a warning naming the call and the status, counted by
reason (``SiprecClient.update_failures``, the metric ``voipgw_recording_update_failures_total``).
A 481 says the SRS no longer knows the recording session (it restarted): the core ends the dialog
without a BYE (RFC 5057 §5.1) and the sink opens a new recording session for the rest of the call
(:meth:`SiprecSink._reopen`): the SRS then the fallbacks, up to three rounds apart by
:func:`reopen_wait`; the metadata names the same communication session, participants and
streams (RFC 7865 §6), the SDP the streams as they are now, from the same sockets, SDES with
fresh keys; the copies wait (not sent) and resume to the new answer's addresses. Counted as
``session_reopened``, or ``session_gone`` when none took it (the call goes on unrecorded). An
SRS's BYE is a deliberate end (RFC 3261 §15.1.2), never re-invited.

Session timers (RFC 4028, ``session_expires``). A call that never changes sends no update, so
an SRS that died would never be noticed: the recording INVITE offers a timer with us the
refresher (the core's ``OutboundSession`` runs it by the call legs' rules,
``core/sip/session_timer.py``). When the SRS's 2xx leaves the refreshes to us, the sink
refreshes at half the interval: an UPDATE without a body where the SRS allows UPDATE (RFC
3311), else a re-INVITE of the streams as they are, as any update. A refresh answered 408 or
481 or not at all, or an interval that runs out (the SRS was the refresher and did not refresh,
§10, or our refreshes kept failing), means the SRS is gone: BYE and a new recording session, as
after a 481 (:meth:`SiprecSink._lost`). An SRS whose 2xx has no Session-Expires runs no timer
(§7.2): it gets an OPTIONS in the dialog (RFC 3261 §11) when we would have refreshed, and one
that answers it 408, 481 or not at all is gone, as above.

The end of the call. The call's legs are released first (this sink's task outlives the call).
Then, with ``final_metadata`` and the SRS in step with us (no update refused or under way), the
sink re-INVITEs it once with the final snapshot: every stream inactive, every participant on the
call and the recording of the session disassociated at the end (RFC 7865's disassociate-times;
RFC 7866 §9: metadata goes whenever it changes), and the session's ``stop-time`` (RFC 7865
§6.3; every snapshot carries its ``start-time``, the answer), within ``bye_timeout``; then the
BYE, without a body, within ``bye_timeout`` again, whatever the answer.

SRTP towards the SRS (``media_security = "sdes"``). The recording session is then keyed like any
SDES leg, by the gateway's SDES engine (``keyexchange/sdes.py``), the gateway as offerer: each
m= line is ``RTP/SAVP`` with one a=crypto line per configured suite (``srtp_suites``), a fresh
key each, per recording session, per SRS tried and per stream (RFC 4568 §5.1.1, §6.1). The SRS
answers each line it accepts with one crypto line of its own (same tag and suite, its key,
§5.1.2); the copies of that stream are then protected under our key, one outbound-only SRTP
context per stream (``srtp.OutboundSrtpSession``: the streams are sendonly, nothing comes back
to decrypt; caller and callee may use one SSRC, separate keys keep their keystreams apart). An
answer that does not take SRTP (an ``RTP/AVP`` line, no or an unusable crypto line) ends the
recording session with a warning and the call goes on unrecorded: the copies are never sent in
clear to an SRS that was offered SRTP. Re-INVITEs repeat each stream's crypto line in force (same
tag, suite and key, RFC 4568 §7.1.4), so the contexts and their packet indexes go on; a stream
whose key did change (never after our own re-offer) gets a new context. The keys only travel
over TLS (§8.3): the configuration requires ``srs`` and ``fallbacks`` to be ``sips:`` or
``;transport=tls``, and the core sends such INVITEs and re-INVITEs only over a secure flow.
RTCP is not forwarded, so there is no SRTCP. Keys are never logged, never in an error's text
and never in the call record.

A transfer (REFER, blind or attended) that puts another party on one side of the call re-INVITEs
the SRS with the streams as they are and the metadata again (a complete snapshot, RFC 7866 §9):
the party who left keeps its id and gains a disassociate-time (in its session association and
in its stream association, which still names the streams it sent and received: RFC 7865 §6.8),
the new one (the URI of its dialog) joins with an id of its own, and sends and receives what its
side does, from its associate-time; the session and
stream ids never change (RFC 7865 §6). The copies go on as they are.

What the SRS asks (its re-INVITE or UPDATE with a body, :meth:`SiprecSink._srs_request`; the
core answers its session timer). A new offer (RFC 3264 §8: the recording moved to another media
server) is answered line for line by :func:`answer_srs_offer`, our labels, ports and sendonly
kept, with SDES one a=crypto line per m= line (RFC 4568 §6.1); the copies go to its new
addresses from then on. One we cannot answer gets 488 and nothing changes. Its answers to our
re-offers are followed the same way, and so is the answer in its ACK where its re-INVITE had no
offer and our 200 offered (RFC 3261 §14.2; :meth:`SiprecSink._srs_ack_answer`): an unusable one
is logged and the copies go on where they went. A metadata snapshot request
(``application/rs-metadata-request``, RFC 7866 §9) is answered 200 and followed by a re-INVITE
with the complete metadata beside an SDP offer, as any update.

Streams the call adds or removes after its answer (its re-INVITE or UPDATE;
:meth:`SiprecSink._follow_streams`). An added stream of a recorded type (audio; video with
``record_video``) gets two new m= lines after ours (RFC 3264 §8.1), one per direction, the next
unused labels and new stream ids (RFC 7866 §8.1.1, RFC 7865 §6), sockets of their own and, with
SDES, fresh keys; the re-INVITE carries the metadata with them, and their copies go once the SRS
answers. A removed stream (port 0, RFC 3264 §8.2) stays in our offers at port 0, and in the
metadata, no longer sent nor received by the parties on the call; an SRS that answers its line
at a port is not followed there (nor asked for keys for it): it stays removed. The update is
sent, retried and given up as any other.

Pause and resume on request (``set_paused``: ``voipgw recording pause|resume``, the core's
``CallTaps.pause_recording``; PCI DSS: no card digits recorded). While paused no copy is sent
(packets are counted as paused, not queued) and the SRS is re-INVITEd with every stream
``a=inactive``, the metadata unchanged (RFC 7866 §7.1.1); the resume re-INVITEs it with the
streams as they are (sendonly, or inactive where the call holds them; with SDES fresh keys).
Both go as any update. The copies wait for the SRS's answer to the resume (not sent, counted
so, as a stream it has not answered): it took the streams inactive, and RFC 3264 §8 changes
nothing until the answer; with SDES it has no keys for them before. A resume given up is sent
again RESUME_AGAIN_AFTER later (or the SRS's Retry-After), until the SRS takes it.

Not done: DTLS-SRTP towards the SRS; the ``a=record`` indication to recording-aware phones
(RFC 7866 §7); with SDES, another crypto suite the SRS's answer in an ACK picks than the one
in force (the addresses are followed, the keys in force kept).
"""

from __future__ import annotations

import base64
import ipaddress
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import escape, quoteattr

import attrs
import trio

from gateway.core.config import NAMES_TRUNKS
from gateway.core.hookspecs import hookimpl
from gateway.core.interfaces import (
    OutboundSession,
    SessionAnswer,
    SrtpKeys,
    TappedCall,
    TappedMedia,
)
from gateway.core.logs import log_exception
from gateway.core.media.srtp import SUPPORTED_SUITES, OutboundSrtpSession
from gateway.core.sdp.body import body_parts_untrusted, sdp_of
from gateway.core.sdp.errors import SdpError
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.core.sip.dialog import glare_wait
from gateway.core.sip.errors import RemoteSipError
from gateway.core.sip.grammar import parse_uri_untrusted
from gateway.core.sip.session_timer import MAX_INTERVAL, MIN_INTERVAL
from gateway.core.sip.uri import SipUri, redact_password
from gateway.plugins.keyexchange.sdes import (
    ANSWER_SUITE_CHOICES,
    SdesKeyExchange,
    SdesNegotiation,
)
from gateway.plugins.taps.queue import CopyQueue
from gateway.plugins.taps.recorder import rtp_fields
from gateway.plugins.taps.selection import NOTHING_SELECTED, CallSelection

if TYPE_CHECKING:
    from gateway.core.interfaces import MediaTap, TapSink
    from gateway.core.plugins import Registry
    from gateway.core.sdp.model import MediaDescription

log = logging.getLogger(__name__)

METADATA_TYPE = "application/rs-metadata+xml"
MEDIA_SECURITY = ("none", "sdes")
"""``media_security``: plain RTP towards the SRS, or SRTP keyed by SDES (RFC 4568)."""
NAMESPACE = "urn:ietf:params:xml:ns:recording:1"
DIRECTIONS = ("a_to_b", "b_to_a")
# How many times in a row an update the SRS answered 491 is sent again (RFC 3261 §14.1).
GLARE_RETRIES = 3
# An update the SRS refused for a while (a 500, a 503, a 408, no answer at all) is sent again,
# the call's streams and parties as they are then, after 2 s, 4 s, 8 s (each up to half again
# longer at random: RFC 3261 §14 wants automatic re-INVITEs after a randomized interval), or
# after the refusal's Retry-After (RFC 3261 §20.33) when it gave one, up to MAX_RETRY_AFTER.
UPDATE_RETRIES = 3
UPDATE_BACKOFF = 2.0
MAX_RETRY_AFTER = 60
# An update the SRS answered 100 Trying and then nothing: an INVITE client transaction past its
# 1xx has no Timer B (RFC 3261 §17.1.1.2), so the wait for a final answer is bounded here, as
# long as Timer B (64*T1) would have waited without one; then it counts as no answer.
UPDATE_TIMEOUT = 32.0
# The least bye_timeout: the BYE (and the final snapshot before it) is a transaction with the SRS,
# a round trip and its retransmissions at T1 (RFC 3261 §17.1.2.2); with 1e-9 no recording
# session was ever ended by its BYE, the SRS kept each until its own timers.
MIN_BYE_TIMEOUT = 0.5
UPDATE_FAILURE_REASONS = ("refused", "no_answer", "session_gone", "session_reopened")
"""Why an update was given up (``voipgw_recording_update_failures_total``): the SRS refused
it for good or past the retries, it never answered, or it no longer knew the session (481):
then ``session_reopened`` when a new recording session took the rest of the call,
``session_gone`` when none did."""
# After a 481 (the SRS lost the recording session: it restarted), a new recording session for
# the same call: the SRS then each fallback, in rounds; between rounds 2 s, then 4 s (each up
# to half again longer at random, as the update back-off).
REOPEN_ROUNDS = 3
REOPEN_BACKOFF = 2.0
RESUME_AGAIN_AFTER = 60.0
"""A resume given up (its re-INVITE refused past the retries, or not answered) is sent again
after this many seconds, or the SRS's Retry-After if longer, until the SRS takes it: no copy
goes before it does (RFC 3264 §8), so a resume left given up until the call's next change
would leave the rest of the call unrecorded."""

MAX_RECORDED_LINES = 32
"""The most m= lines a recording session offers (two per recorded stream of the call, removed
ones included): a call that keeps adding and removing streams costs sockets and SDP without
bound otherwise. The SRS's answers and offers are read up to as many (the SDP reader's default
bound, 16, is a phone's)."""
UNRECORDED_REASONS = ("no_port", "too_many_lines")
"""Why a stream of a recorded call was left out of its recording
(``voipgw_recording_streams_unrecorded_total``): no local port could be had for its copies,
or the recording session had MAX_RECORDED_LINES m= lines already."""


RECORDPREF_POLICIES = ("ignore", "pause")
"""``recordpref``: what a party's ``a=recordpref:off`` or ``pause`` (RFC 7866 §7.2, a
preference: the SRC decides) does. ``ignore``: logged and shown, the recording goes on (a
compliance recording must not stop at a party's word); ``pause``: the recording pauses as an
operator's pause does until no party on the call prefers it off or paused."""

PAUSING_PREFERENCES = frozenset({"off", "pause"})


def update_retry(
    status: int | None, attempt: int, retry_after: int | None, fraction: float
) -> float | None:
    """Seconds to wait before sending again, as resend number ``attempt`` (1, 2, ...), an
    update the SRS answered ``status`` (None: no final answer, Timer B), or None to give up: a
    refusal that waiting does not change (a 4xx other than 408 and 480, a 6xx, 501 Not
    Implemented, 505, 513), the retries used up, or a Retry-After past MAX_RETRY_AFTER.
    ``fraction`` (0 to 1, random) spreads the back-off."""
    if attempt > UPDATE_RETRIES or not _transient(status):
        return None
    if retry_after is not None:
        # RFC 3261 §21.5.1, §21.5.4: not before the time the SRS gave.
        return float(retry_after) if retry_after <= MAX_RETRY_AFTER else None
    return UPDATE_BACKOFF * float(2 ** (attempt - 1)) * (1 + fraction / 2)


def reopen_wait(round_: int, fraction: float) -> float | None:
    """Seconds to wait before round ``round_`` (1, 2, ...) of opening a new recording session
    after the SRS lost ours (0 for the first, at once), or None past REOPEN_ROUNDS.
    ``fraction`` (0 to 1, random) spreads the back-off, so that the calls an SRS lost in one
    restart do not all come back in the same instant."""
    if round_ > REOPEN_ROUNDS:
        return None
    if round_ == 1:
        return 0.0
    return REOPEN_BACKOFF * float(2 ** (round_ - 2)) * (1 + fraction / 2)


def _transient(status: int | None) -> bool:
    if status is None or status in (408, 480):
        return True
    return 500 <= status <= 599 and status not in (501, 505, 513)


def failure_reason(status: int | None) -> str:
    """The metric's reason for an update given up after ``status``."""
    if status == 481:
        return "session_gone"
    return "no_answer" if status is None or status == 408 else "refused"


def _identifier() -> str:
    """A metadata identifier: a UUID as the base64 of its 16 octets (RFC 7865 §6)."""
    return base64.b64encode(uuid.uuid4().bytes).decode("ascii")


@attrs.frozen
class RecordedStream:
    """One m= line of the recording session: a call stream's direction and its label.
    ``added``: when a stream the call added after its answer joined the recording (None: from
    the start); ``removed``: when the call removed it (its m= line port 0, RFC 3264 §8.2), after
    which its m= line stays in our offers at port 0 and its label is never used again."""

    index: int
    direction: str
    label: str
    media: TappedMedia
    stream_id: str = attrs.field(factory=_identifier)
    added: float | None = None
    removed: float | None = None


RECORDED_MEDIA = ("audio",)
"""The media types recorded by default; ``record_video`` adds ``video``."""


def recorded_streams(
    media: Sequence[TappedMedia],
    *,
    kinds: Sequence[str] = RECORDED_MEDIA,
    first_label: int = 1,
    added: float | None = None,
) -> list[RecordedStream]:
    """Two per recorded stream of the call (audio; video too where ``kinds`` has it), labelled
    1, 2, 3... (from ``first_label``: a stream added later takes the next unused labels, RFC
    7866 §8.1.1, a label never names another stream): the caller's, then the callee's."""
    streams: list[RecordedStream] = []
    for stream in media:
        if stream.media not in kinds:
            continue
        for direction in DIRECTIONS:
            label = str(first_label + len(streams))
            streams.append(RecordedStream(stream.index, direction, label, stream, added=added))
    return streams


def _recorded_now(recorded: TappedMedia, now: TappedMedia | None) -> TappedMedia:
    """What a recorded stream is now: the call's stream at its index, or, while that line
    carries something else (T.38 fax after a re-INVITE, passed through, never recorded), the
    stream as it was, inactive: the SRS is told no media flows, and its m= line keeps its
    type."""
    if now is None:
        return recorded
    if now.media != recorded.media:
        return attrs.evolve(recorded, direction="inactive")
    return now


def offer_sdp(
    streams: Sequence[RecordedStream],
    address: str,
    ports: Sequence[int],
    *,
    session_id: int,
    version: int,
    crypto: Sequence[Sequence[tuple[str, str | None]]] | None = None,
) -> bytes:
    """The recording session's SDP offer (RFC 7866 §8.1.1): one m= line per stream, sendonly,
    or inactive while the call's stream is on hold (RFC 7866 §8.1.2: the SRC tells the SRS).
    With ``crypto`` (each stream's a=crypto attributes, from its SDES negotiation) the lines are
    ``RTP/SAVP`` (RFC 4568 §3.1.4: SDES keys SRTP, whose profile is SAVP, RFC 3711 §12)."""
    proto = "RTP/AVP" if crypto is None else "RTP/SAVP"
    lines = [
        "v=0",
        f"o=voipgw {session_id} {version} IN IP4 {address}",
        "s=-",
        f"c=IN IP4 {address}",
        "t=0 0",
    ]
    for number, (stream, port) in enumerate(zip(streams, ports, strict=True)):
        kind, formats = stream.media.media, " ".join(stream.media.formats)
        if stream.removed is not None:
            # RFC 3264 §8.2: the call removed the stream; its line stays, at port 0, so that
            # the lines after it keep their places (§8: never fewer m= lines than before).
            lines += [f"m={kind} 0 {proto} {formats}", f"a=label:{stream.label}", "a=inactive"]
            continue
        lines.append(f"m={kind} {port} {proto} {formats}")
        lines += [f"a=rtpmap:{value}" for value in stream.media.rtpmaps]
        lines += [f"a=fmtp:{value}" for value in stream.media.fmtps]
        direction = "sendonly" if stream.media.direction == "sendrecv" else "inactive"
        lines += [f"a=label:{stream.label}", f"a={direction}"]
        if crypto is not None:
            lines += [f"a={name}:{value}" for name, value in crypto[number]]
    return ("\r\n".join(lines) + "\r\n").encode()


@attrs.frozen
class Participant:
    """One participant of the recorded session (RFC 7865's ``participant``): its URI, the side
    of the call it is on ("a": the caller's, sends ``a_to_b``; "b": the callee's), when it joined
    and, once a transfer replaced it, when it left. Its metadata id is made once and kept in
    every update (RFC 7865 §6: an id names the same participant for the recording's whole
    life)."""

    side: str
    aor: str
    joined: float
    left: float | None = None
    participant_id: str = attrs.field(factory=_identifier)


SENDS = {"a": "a_to_b", "b": "b_to_a"}
"""What each side's participant sends (the other side's direction it receives)."""


def call_participants(call: TappedCall, at: float) -> tuple[Participant, ...]:
    """The recorded call's two parties: the caller's From URI and the request URI, or the
    phone that picked the call up (``answered_by``: the recording starts at the answer, after
    the pickup, so the phone that only rang never took part in the session)."""
    return (
        Participant("a", call.from_uri, at),
        Participant("b", call.answered_by or call.to_uri, at),
    )


def ended_participants(participants: Sequence[Participant], at: float) -> tuple[Participant, ...]:
    """The participants when the call ended at ``at``: every one still on it left then."""
    return tuple(
        party if party.left is not None else attrs.evolve(party, left=at) for party in participants
    )


def replaced_party(
    participants: Sequence[Participant], side: str, uri: str, at: float
) -> tuple[Participant, ...]:
    """The participants after a transfer put ``uri`` on ``side`` at ``at``: whoever was there
    left then (a disassociate-time in RFC 7865's ``participantsessionassoc`` and
    ``participantstreamassoc``), ``uri`` joined
    then, under a new id; the others are unchanged, ids and all. The one who left stays in the
    metadata, so the recording says who spoke before the transfer."""
    kept = [
        attrs.evolve(party, left=at) if party.side == side and party.left is None else party
        for party in participants
    ]
    return (*kept, Participant(side, uri, at))


def metadata_xml(
    call_id: str,
    session_id: str,
    participants: Sequence[Participant],
    streams: Sequence[RecordedStream],
    started: float,
    stopped: float | None = None,
    *,
    call_started: float | None = None,
) -> bytes:
    """The complete metadata (RFC 7865 §8, RFC 7866 §12): one communication session, its
    participants, the streams and who sends and receives each. Sent whole at the start and again
    after a transfer (a complete snapshot, RFC 7866 §9), with the same ids for the session,
    the streams and every participant still known: a participant who left keeps its
    associate-times and gains disassociate-times, in its ``participantsessionassoc`` and in
    its ``participantstreamassoc`` (which still names the streams it sent and received).
    ``started``: the recording of the session began then (``sessionrecordingassoc``'s
    associate-time); ``call_started``: the communication session began then (its
    ``start-time``; ``started`` when not given). ``stopped``: the call ended then, and its
    recording with it: the session's ``stop-time`` and the disassociate-time of its
    ``sessionrecordingassoc`` (the final snapshot, sent before the BYE).

    Element order is the schema's (RFC 7865 §11, the IANA ``recording:1`` XSD, a sequence):
    ``recording`` holds datamode, session, participant, stream, sessionrecordingassoc,
    participantsessionassoc, participantstreamassoc; ``session`` holds sipSessionID, (reason,
    group-ref, not sent), start-time, stop-time; ``participantstreamassoc`` holds send, recv,
    associate-time, disassociate-time. ``stream`` has no times: when a stream is no longer
    sent is its m= line (``a=inactive``) and, for who sent it, the disassociate-time of the
    participant's ``participantstreamassoc``."""
    # RFC 7865 §6.3: the communication session's start-time and, once it ended, stop-time.
    began = started if call_started is None else call_started
    times = [f"<start-time>{_stamp(began)}</start-time>"]
    if stopped is not None:
        times.append(f"<stop-time>{_stamp(stopped)}</stop-time>")
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f"<recording xmlns={quoteattr(NAMESPACE)}>",
        "<datamode>complete</datamode>",
        f"<session session_id={quoteattr(session_id)}>",
        f"<sipSessionID>{escape(call_id)}</sipSessionID>",
        *times,
        "</session>",
    ]
    for party in participants:
        out += [
            f"<participant participant_id={quoteattr(party.participant_id)}>",
            f"<nameID aor={quoteattr(party.aor)}/>",
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
        f"<associate-time>{_stamp(started)}</associate-time>",
    ]
    if stopped is not None:
        out.append(f"<disassociate-time>{_stamp(stopped)}</disassociate-time>")
    out.append("</sessionrecordingassoc>")
    for party in participants:
        out += [
            f"<participantsessionassoc participant_id={quoteattr(party.participant_id)} "
            f"session_id={quoteattr(session_id)}>",
            f"<associate-time>{_stamp(party.joined)}</associate-time>",
        ]
        if party.left is not None:
            out.append(f"<disassociate-time>{_stamp(party.left)}</disassociate-time>")
        out.append("</participantsessionassoc>")
    for party in participants:
        # RFC 7865 §6.8 (the XSD's participantstreamassoc: send*, recv*, associate-time?,
        # disassociate-time?, in that order): the streams a participant sends and receives,
        # and when it started and, once it left, stopped (a transfer, the call's end): the
        # SRS learns when a party stopped sending from its disassociate-time.
        taken = [s for s in streams if _took_part(party, s)]
        sends = [s.stream_id for s in taken if s.direction == SENDS[party.side]]
        receives = [s.stream_id for s in taken if s.direction != SENDS[party.side]]
        out += [
            f"<participantstreamassoc participant_id={quoteattr(party.participant_id)}>",
            *(f"<send>{stream_id}</send>" for stream_id in sends),
            *(f"<recv>{stream_id}</recv>" for stream_id in receives),
            f"<associate-time>{_stamp(party.joined)}</associate-time>",
        ]
        if party.left is not None:
            out.append(f"<disassociate-time>{_stamp(party.left)}</disassociate-time>")
        out.append("</participantstreamassoc>")
    out.append("</recording>")
    return ("\r\n".join(out) + "\r\n").encode()


def _took_part(party: Participant, stream: RecordedStream) -> bool:
    """Whether ``party`` sent or received ``stream`` (RFC 7865 §6.8, a complete snapshot): a
    party still on the call, the streams the call has now (one it removed is no longer sent
    nor received by anyone); a party who left, those the call had while it was on."""
    if party.left is None:
        return stream.removed is None
    if stream.added is not None and stream.added > party.left:
        return False  # added after it left
    return stream.removed is None or stream.removed > party.joined


def _stamp(at: float) -> str:
    """An XML dateTime in UTC (xs:dateTime, RFC 7865 §6: start-time, stop-time,
    associate-time and disassociate-time)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


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
    return {
        (stream.index, stream.direction): destination
        for stream, destination, _ in _answered(answer_type, answer, streams)
    }


def srs_srtp_keys(
    answer_type: str | None,
    answer: bytes,
    streams: Sequence[RecordedStream],
    negotiations: Sequence[SdesNegotiation],
) -> dict[tuple[int, str], SrtpKeys]:
    """The SRTP keys of each stream the SRS accepted, from its answer's a=crypto lines and our
    offer's (``negotiations``, one per stream, in ``streams`` order). Every accepted line must
    be ``RTP/SAVP`` with exactly one acceptable a=crypto line answering one of ours (RFC 4568
    §5.1.2: same tag and suite, the SRS's own key); anything else raises SdpError (an SdesError
    for the crypto line), whose text never holds key material. Declined lines need no keys."""
    negotiation_of = {
        (stream.index, stream.direction): negotiation
        for stream, negotiation in zip(streams, negotiations, strict=True)
    }
    keys: dict[tuple[int, str], SrtpKeys] = {}
    for stream, _, media in _answered(answer_type, answer, streams):
        if media.proto.upper() != "RTP/SAVP":
            raise SdpError(
                f"the SRS answered stream {stream.label} with {media.proto[:32]!r}, "
                "not RTP/SAVP: it does not take SRTP"
            )
        negotiation = negotiation_of[(stream.index, stream.direction)]
        negotiation.remote_sdp_attributes(media.attributes)  # raises SdesError
        if negotiation.keys is None:
            raise SdpError(f"the SRS's crypto line of stream {stream.label} gave no keys")
        keys[(stream.index, stream.direction)] = negotiation.keys
    return keys


def _answered(
    answer_type: str | None, answer: bytes, streams: Sequence[RecordedStream]
) -> list[tuple[RecordedStream, tuple[str, int], MediaDescription]]:
    """The streams the SRS accepted: each with its address and its m= line. A stream the call
    removed is never among them, whatever port the SRS answers its line with: RFC 3264 §8.2,
    a line offered at port 0 stays removed (its copies go nowhere, and with SDES its line has
    no crypto to answer), so an SRS that answers it at a port is not followed there."""
    sdp = parse_sdp_untrusted(srs_sdp(answer_type, answer), max_media=MAX_RECORDED_LINES)
    by_label = {stream.label: stream for stream in streams}
    found: list[tuple[RecordedStream, tuple[str, int], MediaDescription]] = []
    for position, media in enumerate(sdp.media):
        label = media.attributes.get("label")
        stream = by_label.get(label) if label else None
        if stream is None and position < len(streams):
            stream = streams[position]
        if stream is None or stream.removed is not None or media.port == 0:
            continue
        connection = media.connection or sdp.connection
        if connection is None:
            raise SdpError("the SRS answer has no c= line")
        found.append((stream, (connection.address, media.port), media))
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


# -- what the SRS asks of us (its re-INVITE or UPDATE with a body) -------------------------------

METADATA_REQUEST_TYPE = "application/rs-metadata-request"
"""An SRS's request for a complete metadata snapshot (RFC 7866 §9): a re-INVITE or UPDATE
carrying a body of this type (a free-text reason), usually without an SDP offer."""
SRS_REQUEST_TYPES = f"application/sdp, multipart/mixed, {METADATA_REQUEST_TYPE}"
"""What an SRS's request may carry (a 415's Accept, RFC 3261 §21.4.13)."""


@attrs.frozen
class SrsRequest:
    """What an SRS's re-INVITE or UPDATE carries: an SDP offer (b"": none) and whether it asks
    for a metadata snapshot."""

    offer: bytes
    metadata_requested: bool


class UnsupportedSrsBody(SdpError):
    """A part we do not read that the SRS did not mark optional: 415 (RFC 3261 §21.4.13)."""


def srs_request_untrusted(content_type: str | None, body: bytes) -> SrsRequest:
    """Read an SRS's request body (bounded: ``body_parts_untrusted``): application/sdp (an
    offer), application/rs-metadata-request, or a multipart/mixed of those; metadata of its own
    (application/rs-metadata+xml, RFC 7866 §9.2 lets an SRS send none we need) and any other
    part are passed over. Raises :class:`UnsupportedSrsBody` for a body that is none of these,
    SdpError for a malformed one."""
    parts = body_parts_untrusted(content_type, body)
    offer = b""
    requested = False
    read = False
    for media_type, content in parts:
        if media_type == "application/sdp":
            if offer:
                raise SdpError("more than one application/sdp part")
            offer, read = content, True
        elif media_type == METADATA_REQUEST_TYPE:
            requested = read = True
        elif media_type == METADATA_TYPE:
            read = True
    if not read:
        raise UnsupportedSrsBody(f"a body of {(content_type or '(none)')[:64]!r}")
    return SrsRequest(offer, requested)


class OfferRefused(SdpError):
    """An SRS's offer we cannot answer (RFC 3264 §6): 488, the session left as it was."""


@attrs.frozen
class SrsOfferAnswer:
    """Our answer to an SRS's offer: its SDP, where each stream's copies now go (streams it
    declined, or will not receive, are absent), and each stream's SDES negotiation (in
    ``streams`` order; the previous one where the stream was declined), None without SDES."""

    sdp: bytes
    destinations: dict[tuple[int, str], tuple[str, int]]
    negotiations: list[SdesNegotiation | None] | None


def answer_srs_offer(
    offer: bytes,
    streams: Sequence[RecordedStream],
    ports: Sequence[int],
    *,
    address: str,
    session_id: int,
    version: int,
    keying: SdesKeyExchange | None = None,
    suites: Sequence[str] = (),
    previous: Sequence[SdesNegotiation | None] = (),
) -> SrsOfferAnswer:
    """Answer an SRS's offer of the recording session (RFC 3264 §6, §8: a re-INVITE or UPDATE
    that moves its ports or addresses, a media server change behind one SIP address): one m=
    line per offered line, in its order. A line matched to one of our streams (by a=label, else
    by position, as its first answer) keeps that stream's label and our port, its codecs that
    the call has (the copies are the call's packets, never transcoded: same payload types),
    and sends only (``a=sendonly``; ``a=inactive`` where the call holds it or the SRS does not
    receive it, §6.1); with SDES (``keying``) one a=crypto line, chosen among those whose suite
    is in ``suites`` by the rule of call legs (RFC 4568 §6.1, §7.1.1, §7.1.2): the one whose
    suite comes first in ``suites``, or the offer's first with ``keying.answer_suite =
    "offer-order"``; our key kept where its suite and key are unchanged (§7.1.4). A line it
    set to port 0, one that names no stream of ours or one the call removed, and one of
    another media type than its stream, are declined (port 0, §6).
    Raises :class:`OfferRefused` (SdpError: a malformed SDP) for an offer that cannot be
    answered: another transport profile than ours, no codec of the call, no usable crypto line,
    a c= line that is not IPv4; its text holds no key."""
    sdp = parse_sdp_untrusted(offer, max_media=MAX_RECORDED_LINES)
    proto = "RTP/AVP" if keying is None else "RTP/SAVP"
    by_label = {stream.label: stream for stream in streams}
    number_of = {(s.index, s.direction): n for n, s in enumerate(streams)}
    negotiations: list[SdesNegotiation | None] | None = None
    if keying is not None:
        negotiations = [*previous] + [None] * (len(streams) - len(previous))
    destinations: dict[tuple[int, str], tuple[str, int]] = {}
    taken: set[str] = set()
    lines = [
        "v=0",
        f"o=voipgw {session_id} {version} IN IP4 {address}",
        "s=-",
        f"c=IN IP4 {address}",
        "t=0 0",
    ]
    for position, media in enumerate(sdp.media):
        label = media.attributes.get("label")
        stream = by_label.get(label) if label else None
        if stream is None and not label and position < len(streams):
            stream = streams[position]
        if (
            stream is None
            or stream.label in taken
            or media.port == 0
            or stream.removed is not None
            or media.media.lower() != stream.media.media
        ):
            # RFC 3264 §6: a stream we reject is answered with port 0 (and its formats).
            lines.append(f"m={media.media} 0 {media.proto} {' '.join(media.formats)}")
            continue
        taken.add(stream.label)
        if media.proto.upper() != proto:
            raise OfferRefused(
                f"stream {stream.label} offered over {media.proto[:32]!r}, we send {proto}"
            )
        formats = _common_formats(media, stream.media)
        if not formats:
            raise OfferRefused(f"stream {stream.label}: none of the call's codecs offered")
        connection = media.connection or sdp.connection
        if connection is None:
            raise OfferRefused(f"stream {stream.label} has no c= line")
        if connection.addrtype.upper() != "IP4":
            raise OfferRefused(f"stream {stream.label}: the copies are sent over IPv4")
        receives = sdp.effective_direction(media).receives and connection.address != "0.0.0.0"
        sending = receives and stream.media.direction == "sendrecv"
        crypto: list[tuple[str, str | None]] = []
        number = number_of[(stream.index, stream.direction)]
        if keying is not None and negotiations is not None:
            negotiation = keying.answer(
                media.attributes,
                suites=suites,
                secure_signalling=True,
                previous=negotiations[number],
            )
            if negotiation is None:
                raise OfferRefused(f"stream {stream.label}: no a=crypto line (RFC 4568)")
            if negotiation.failure is not None or negotiation.keys is None:
                raise OfferRefused(f"stream {stream.label}: no acceptable a=crypto line")
            negotiations[number] = negotiation
            crypto = negotiation.local_sdp_attributes()  # one line: the chosen suite
        port = ports[number]
        lines.append(f"m={stream.media.media} {port} {proto} {' '.join(formats)}")
        lines += [f"a=rtpmap:{v}" for v in stream.media.rtpmaps if v.split(" ", 1)[0] in formats]
        lines += [f"a=fmtp:{v}" for v in stream.media.fmtps if v.split(" ", 1)[0] in formats]
        lines += [f"a=label:{stream.label}", "a=sendonly" if sending else "a=inactive"]
        lines += [f"a={name}:{value}" for name, value in crypto]
        if receives:
            destinations[(stream.index, stream.direction)] = (connection.address, media.port)
    return SrsOfferAnswer(("\r\n".join(lines) + "\r\n").encode(), destinations, negotiations)


def _common_formats(offered: MediaDescription, ours: TappedMedia) -> list[str]:
    """The formats of ``ours`` that the SRS offered, in its order: the same payload type and,
    for one our rtpmap names, the same encoding and clock rate (RFC 3264 §6.1)."""
    names = {
        value.split(" ", 1)[0]: value.split(" ", 1)[1].lower()
        for value in ours.rtpmaps
        if " " in value
    }
    common: list[str] = []
    for fmt in offered.formats:
        if fmt not in ours.formats:
            continue
        name = names.get(fmt)  # e.g. "telephone-event/8000"
        if name is not None and fmt.isdigit():
            rtpmap = offered.rtpmap(int(fmt))
            if rtpmap is not None and name.split("/")[:2] != [
                rtpmap.encoding.lower(),
                str(rtpmap.clock_rate),
            ]:
                continue
        common.append(fmt)
    return common


# -- the sink -------------------------------------------------------------------------------------


@attrs.define
class SiprecCounts:
    packets: int = 0
    sent: int = 0
    dropped: int = 0
    not_sent: int = 0
    """Packets of declined streams, after the SRS ended the session, or when it could not open."""
    paused: int = 0
    """Packets not recorded while the recording was paused on request."""


class SiprecSink:
    """``interfaces.TapSink`` of one call: its recording session and the copies it sends.
    ``keying`` (``media_security = "sdes"``) makes the session SRTP, keyed by SDES."""

    def __init__(
        self,
        call: TappedCall,
        config: SiprecConfig,
        keying: SdesKeyExchange | None = None,
        failures: dict[str, int] | None = None,
        streams_unrecorded: dict[str, int] | None = None,
    ) -> None:
        self.call = call
        # The tap's counts of updates given up (UPDATE_FAILURE_REASONS) and of streams not
        # recorded (UNRECORDED_REASONS), shared by its sinks.
        self._failures = failures if failures is not None else {}
        self._streams_unrecorded = streams_unrecorded if streams_unrecorded is not None else {}
        self._config = config
        self._keying = keying
        self._queue = CopyQueue(config.queue)
        self.counts = SiprecCounts()
        self.session: OutboundSession | None = None
        """The recording session in force: a new one after the SRS lost the first (481)."""
        # Where the SRS in force wants each stream; what the copies read, packet by packet.
        self._destinations: dict[tuple[int, str], tuple[str, int]] = {}
        self._media = call.media
        self._changed = trio.Event()
        self._sdp_session_id = int(time.time())
        self._sdp_version = self._sdp_session_id
        # SDES only: each stream's negotiation in force (in recorded_streams order) and the
        # outbound SRTP context of each stream the SRS accepted.
        self._negotiations: list[SdesNegotiation | None] = []
        self._srtp: dict[tuple[int, str], OutboundSrtpSession] = {}
        # The metadata's ids and parties, kept for every update (RFC 7865 §6); a transfer
        # changes the parties and makes the next re-INVITE carry the metadata again.
        self._started = time.time()
        # The communication session's start-time (RFC 7865 §6.3): the sink is made when the
        # call is answered. Kept when a new recording session replaces a lost one (_reopen),
        # which restarts only the recording's association (_started).
        self._call_started = self._started
        self._metadata_session_id = _identifier()
        self._participants = call_participants(call, self._started)
        self._metadata_changed = False
        self._stopped: float | None = None  # when the call ended: the final snapshot
        # The recorded streams and our port for each, once bound: what an SRS's offer is
        # answered with (:meth:`_srs_request`).
        self._streams: list[RecordedStream] = []
        self._ports: list[int] = []
        # The media types recorded, and each recorded stream's socket by (index, direction):
        # streams the call adds after its answer join both (:meth:`_follow_streams`).
        self._kinds = ("audio", "video") if config.record_video else RECORDED_MEDIA
        self._by_stream: dict[tuple[int, str], trio.socket.SocketType] = {}
        self._unrecorded: set[int] = set()  # the call's streams said not to be recorded
        self._no_port: set[int] = set()  # streams added that no local port could be had for
        self._paused = False  # voipgw recording pause: no copies, the SRS's streams inactive
        # Who paused it: an operator (set_paused), the parties' preferences (recordpref_changed
        # with recordpref = "pause"); _paused is either.
        self._operator_paused = False
        self._preferences: dict[str, str] = {}  # each side's last a=recordpref (RFC 7866 §7.2)
        self._preference_paused = False
        # What the call's recording-aware parties were last told (RFC 7866 §7.1.1: on, paused,
        # off; None: nothing yet), whether a new recording session is being opened (the state
        # is then left as it was), and whether the call ended (nothing more to tell).
        self._told: str | None = None
        self._reopening = False
        self._closing = False
        self._offering = False  # the first INVITE is made: a change needs a re-INVITE
        # Resumes so far, and how many of them the SRS has taken an offer made after: until it
        # takes the resume's (sendonly; with SDES fresh keys, _reoffer) the copies wait.
        self._resumes = self._answered_resumes = 0
        # When a given-up resume goes again (trio time; None: none is due) and whether the task
        # that sends it runs (_resume_again).
        self._resume_again_at: float | None = None
        self._resume_again_running = False
        # True while the SRS has taken our last offer and no re-INVITE is under way: only then
        # does the call's end send the final snapshot (one re-INVITE at a time, RFC 3261 §14.1).
        self._settled = True

    def packet(self, stream_id: str, direction: str, rtp: bytes, *, now: float) -> None:
        if self._paused:
            self.counts.paused += 1  # PCI DSS: nothing of a paused call leaves the gateway
            return
        self._queue.put(stream_id, direction, rtp, now)

    def set_paused(self, paused: bool, *, by: str) -> None:
        """An operator paused or resumed the recording (``interfaces.TapSink``; the core logs
        who): no copies while paused, and the SRS re-INVITEd with every stream a=inactive
        (RFC 7866 §7.1.1: the SRC pauses by making the recorded streams inactive; the
        metadata does not change), sendonly again at the resume; the update is sent, retried
        and given up as any other (one re-INVITE at a time, the state as it is then)."""
        self._operator_paused = paused
        self._pause(self._operator_paused or self._preference_paused)

    def recordpref_changed(self, side: str, preference: str) -> None:
        """The party on ``side`` stated ``a=recordpref:<preference>`` (RFC 7866 §7.2; the core
        logs it). A preference: with ``recordpref = "ignore"`` nothing changes; with
        ``"pause"`` the recording pauses while any party on the call prefers ``off`` or
        ``pause``, as an operator's pause does, and resumes when none does (unless an operator
        paused it too)."""
        self._preferences[side] = preference
        if self._config.recordpref != "pause":
            return
        held = any(p in PAUSING_PREFERENCES for p in self._preferences.values())
        if held != self._preference_paused:
            self._preference_paused = held
            log.info(
                "SIPREC: call %s: recording %s for the parties' preference (a=recordpref:%s, "
                'recordpref = "pause")',
                self.call.call_id,
                "paused" if held else "resumed",
                preference,
            )
        self._pause(self._operator_paused or self._preference_paused)

    @property
    def paused_by_preference(self) -> bool:
        """Paused for a party's ``a=recordpref`` (``recordpref = "pause"``), whatever an
        operator asked: ``voipgw recording resume`` says so rather than "recorded"."""
        return self._preference_paused

    def _pause(self, paused: bool) -> None:
        if paused == self._paused:
            return
        self._paused = paused
        if not paused:
            # No copy goes until the SRS answers the resume's re-INVITE (the run loop reads
            # _waits_for_resume): the streams it took last are inactive (RFC 3264 §8: a
            # re-offer changes nothing until answered) and, with SDES, the resume's offer
            # carries fresh keys (_reoffer) that the old contexts must not stand in for.
            self._resumes += 1
        if self._offering:
            self._changed.set()  # else the first INVITE, not made yet, says it (run)
        self._tell_state()

    def _recording_state(self) -> str | None:
        """The recording's state for the call's recording-aware parties (RFC 7866 §7.1.1):
        ``on`` while the SRS in force has answered and copies go to it, ``paused`` while
        paused or until the SRS has taken the resume, ``off`` when no recording session is up
        (it ended, or none took the call); None while a new one is being opened."""
        if self._reopening:
            return None
        session = self.session
        if session is None or session.ended.is_set():
            return "off"
        if self._paused or self._waits_for_resume:
            return "paused"
        return "on" if self._destinations else "off"

    def _tell_state(self) -> None:
        """Tell the call the recording's state when it changed (``TappedCall
        .indicate_recording``): never ``off`` before anything else was told, nothing once the
        call ended."""
        state = self._recording_state()
        tell = self.call.indicate_recording if self._config.record_indication else None
        if (
            state is None
            or state == self._told
            or tell is None
            or self._closing
            or (state == "off" and self._told is None)
        ):
            return
        self._told = state
        try:
            tell(state)
        except Exception:
            log_exception(log, "SIPREC: call %s: telling the recording state", self.call.call_id)

    @property
    def _waits_for_resume(self) -> bool:
        """The recording was resumed and the SRS has not yet taken an offer made after it."""
        return self._resumes != self._answered_resumes

    def close(self) -> None:
        self._closing = True
        self._queue.close()

    def streams_changed(self, media: tuple[TappedMedia, ...]) -> None:
        """The call was held, resumed or its codecs changed: re-INVITE the SRS (its task)."""
        self._media = media
        self._changed.set()

    def party_replaced(self, side: str, uri: str) -> None:
        """A transfer put ``uri`` on ``side`` of the call: re-INVITE the SRS with metadata that
        says the party there left now and ``uri`` joined (RFC 7866 §9; RFC 7865's
        ``participantsessionassoc``); the streams, and the copies, go on as they are."""
        self._participants = replaced_party(self._participants, side, uri, time.time())
        self._metadata_changed = True
        self._changed.set()

    async def run(self) -> None:
        streams = self._within_line_cap(recorded_streams(self.call.media, kinds=self._kinds))
        self._note_unrecorded(self.call.media, streams)
        sockets: list[trio.socket.SocketType | None] = []
        # Chosen once: plain copies keep the path they always had, nothing added per packet.
        forward = self._forward if self._keying is None else self._forward_srtp
        try:
            async with self._queue.receive, trio.open_nursery() as nursery:
                if not streams:
                    log.warning(
                        "SIPREC: call %s has no %s to record",
                        self.call.call_id,
                        " or ".join(self._kinds),
                    )
                elif self.call.sessions is None:
                    log.error("SIPREC: call %s: the core lent no SIP sessions", self.call.call_id)
                else:
                    lines: list[RecordedStream] = []
                    for first in range(0, len(streams), len(DIRECTIONS)):
                        pair, bound = await self._bind_lines(
                            streams[first : first + len(DIRECTIONS)], added=False
                        )
                        lines += pair
                        sockets += bound
                    streams = lines
                    self._streams = streams
                    self._ports = [0 if sock is None else sock.getsockname()[1] for sock in sockets]
                    if all(sock is None for sock in sockets):
                        log.warning(
                            "SIPREC: call %s not recorded: no local port for any of its streams",
                            self.call.call_id,
                        )
                    else:
                        # A recording that starts paused (a pause asked before the call's
                        # answer) offers its streams inactive from the first INVITE (RFC 7866
                        # §7.1.1).
                        self._offering = True
                        self.session, self._destinations = await self._open(
                            self._current(streams), sockets
                        )
                        self._tell_state()
                if self.session is not None:
                    nursery.start_soon(self._follow_changes, streams, sockets, nursery)
                self._by_stream = {
                    (s.index, s.direction): sock
                    for s, sock in zip(streams, sockets, strict=False)
                    if sock is not None
                }
                async for stream_id, direction, rtp, _ in self._queue.receive:
                    # Read per packet: a new recording session changes both (_reopen), a
                    # stream the call adds joins _by_stream (_follow_streams). A resume the
                    # SRS has not answered has nowhere to send yet, as a stream it has not
                    # answered (not sent, counted so).
                    destinations = {} if self._waits_for_resume else self._destinations
                    await forward(
                        self.session, destinations, self._by_stream, stream_id, direction, rtp
                    )
                nursery.cancel_scope.cancel()  # the call is over: no more re-INVITEs
            session = self.session
            # The call's legs are gone already (this task outlives the call): the final
            # snapshot only delays our BYE, within bye_timeout.
            if (
                session is not None
                and not session.ended.is_set()
                and self._config.final_metadata
                and self._settled
            ):
                with trio.move_on_after(self._config.bye_timeout):
                    await self._final_update(session, streams, sockets)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(self._config.bye_timeout):
                if self.session is not None:
                    await self.session.close()
            for sock in sockets:
                if sock is not None:
                    sock.close()
            for context in self._srtp.values():
                context.close()  # libsrtp zeroes the session keys
            counts = self.counts
            counts.dropped = self._queue.dropped
            log.info(
                "SIPREC: call %s: %d packets, %d sent to the SRS%s, %d dropped, %d not sent%s",
                self.call.call_id,
                counts.packets,
                counts.sent,
                "" if self._keying is None else " over SRTP",
                counts.dropped,
                counts.not_sent,
                f", {counts.paused} paused" if counts.paused else "",
            )

    async def _follow_changes(
        self,
        streams: list[RecordedStream],
        sockets: list[trio.socket.SocketType | None],
        nursery: trio.Nursery,
    ) -> None:
        """Re-INVITE the SRS after each change of the call's streams (RFC 7866 §8.1.2): held
        streams inactive, resumed ones sendonly again, new codecs declared; after a transfer,
        with the metadata naming the new party beside the SDP (RFC 7866 §9). Streams the call
        adds get new m= lines and labels, streams it removes go to port 0, the metadata saying
        both (:meth:`_follow_streams`).

        An update the SRS refuses is sent again, each time with the call as it is then (the
        latest state, never the states in between): after 491, RFC 3261 §14.1's wait; after a
        refusal that may pass (:func:`update_retry`: 408, 480, most 5xx, no answer), a
        back-off or its Retry-After. Past the retries, or after a refusal that will not pass,
        it is given up (a warning, counted) until the next change of the call, which sends the
        streams and the parties as they are then. A 481 says the SRS no longer knows the
        recording session (RFC 5057 §5.1: it restarted): a new one carries the rest of the call
        (:meth:`_reopen`); when none can be opened the call goes on unrecorded. An SRS that
        hangs up (its BYE) ended the recording on purpose (RFC 3261 §15.1.2): never re-invited.

        The session timer (RFC 4028, ``session_expires``; the core keeps it from each 2xx and
        answers the SRS's own refreshes): at half the interval, when we refresh, an UPDATE
        without a body where the SRS allows UPDATE, else a re-INVITE of the streams as they
        are (a change that comes first refreshes it as well). A refresh that gets 408, 481 or
        no answer, or an interval that runs out (the SRS was to refresh and did not, or our
        refreshes kept failing), means the SRS is gone: BYE (§10) and a new recording session
        (:meth:`_lost`)."""
        try:
            await self._follow_session(streams, sockets, nursery)
        finally:
            # The recording session is over for good (the SRS hung up, none could be opened
            # again, its answer took no SRTP) or the call ended: the parties are told "off"
            # (RFC 7866 §7.1.1; not once the call ended, _closing).
            self._tell_state()

    async def _wake_on_end(self, session: OutboundSession) -> None:
        """The SRS ended ``session`` (its BYE): the update loop wakes to see it. Not for a
        session a 481 or a lost session timer ended: the loop is replacing it already
        (:meth:`_reopen`), and a wake then would re-INVITE the new one for nothing."""
        await session.ended.wait()
        if self.session is session:
            self._changed.set()

    async def _follow_session(
        self,
        streams: list[RecordedStream],
        sockets: list[trio.socket.SocketType | None],
        nursery: trio.Nursery,
    ) -> None:
        """:meth:`_follow_changes`' loop."""
        glare_retries = 0
        retries = 0
        session = self.session
        watched: OutboundSession | None = None
        while session is not None and not session.ended.is_set():
            if session is not watched:
                watched = session
                nursery.start_soon(self._wake_on_end, session)
            refresh = False
            timer = session.timer
            if timer is None and self._config.session_expires:
                # No session timer (the SRS's 2xx had no Session-Expires, RFC 4028 §7.2): an
                # OPTIONS in the dialog (RFC 3261 §11) when we would have refreshed instead.
                with trio.move_on_after(self._config.session_expires / 2):
                    await self._changed.wait()
                if not self._changed.is_set():
                    if session.timer is not None:
                        continue  # a refresh of the SRS's started one meanwhile
                    status = await self._probe(session)
                    if status in (None, 408, 481):
                        why = f"did not answer an OPTIONS probe ({status or 'no answer'})"
                        session = await self._lost(session, streams, sockets, nursery, why)
                        glare_retries = retries = 0
                    continue
            elif timer is None:
                await self._changed.wait()
            else:
                with trio.move_on_at(timer.due):
                    await self._changed.wait()
            if session.ended.is_set():
                break  # the SRS hung up (RFC 3261 §15.1.2): the recording is over
            if not self._changed.is_set():
                # The session timer is due (a refresh of the SRS's may have moved it since).
                timer = session.timer
                now = trio.current_time()
                if timer is None or now < timer.due:
                    continue
                if not timer.we_refresh or now >= timer.expires_at:
                    why = (
                        "did not refresh" if not timer.we_refresh else "took none of our refreshes"
                    )
                    session = await self._lost(session, streams, sockets, nursery, why)
                    glare_retries = retries = 0
                    continue
                if session.allows_update:
                    status = await self._refresh(session)
                    if status in (None, 408, 481):
                        why = f"did not answer a session refresh ({status or 'no answer'})"
                        session = await self._lost(session, streams, sockets, nursery, why)
                        glare_retries = retries = 0
                    continue  # a refusal: the core tries again halfway to the expiry
                refresh = True  # RFC 4028 §10: a re-INVITE refreshes as well
            self._changed = trio.Event()
            if await self._follow_streams(streams, sockets):
                self._metadata_changed = True  # RFC 7866 §9: new or removed stream elements
            current = self._current(streams)
            resumes = self._resumes
            negotiations = self._reoffer(len(current))
            with_metadata, self._metadata_changed = self._metadata_changed, False
            self._settled = False
            self._resume_again_at = None  # this update carries a resume that waits, if any
            status = await self._update(
                session, current, list(self._ports), negotiations, with_metadata
            )
            if status is not None and 200 <= status < 300:
                self._settled = True
                glare_retries = retries = 0
                if negotiations is not None and not await self._keys_answered(
                    session, current, negotiations
                ):
                    return
                self._answered_resumes = resumes
                self._follow_answer(session, current)
                self._tell_state()  # a resume the SRS took: on again
                continue
            # The parties changed all the same: the next re-INVITE says so again.
            self._metadata_changed = self._metadata_changed or with_metadata
            # RFC 3264 §8: a failed re-offer leaves the session, and its keys, as they were.
            if status == 481:
                # RFC 5057 §5.1: the SRS no longer knows the dialog (the core ended it, no BYE).
                # Compliance recording must not lose the rest of the call: a new recording
                # session, the same communication session in its metadata.
                log.warning(
                    "SIPREC: call %s: the SRS answered an update 481, it no longer knows the "
                    "recording session; opening a new one",
                    self.call.call_id,
                )
                session = await self._reopen(streams, sockets)
                glare_retries = retries = 0
                continue
            if refresh and status in (None, 408):
                why = f"did not answer a session refresh ({status or 'no answer'})"
                session = await self._lost(session, streams, sockets, nursery, why)
                glare_retries = retries = 0
                continue
            if status == 491 and glare_retries < GLARE_RETRIES:
                # §14.1: the SRS's re-INVITE crossed ours; we chose the Call-ID, so we wait
                # the longer 2.1-4 s and offer the streams as they are then.
                glare_retries += 1
                await trio.sleep(glare_wait(True, int.from_bytes(os.urandom(2))))
                self._changed.set()
                continue
            glare_retries = 0
            fraction = int.from_bytes(os.urandom(2)) / 0xFFFF
            delay = update_retry(status, retries + 1, session.retry_after, fraction)
            if delay is not None:
                retries += 1
                await trio.sleep(delay)
                self._changed.set()  # whatever changed meanwhile goes in this one
                continue
            self._count_failure(status)
            log.warning(
                "SIPREC: call %s: the SRS refused an update (%s%s), given up until the call "
                "changes again",
                self.call.call_id,
                "no answer" if status is None else status,
                f", tried {retries + 1} times" if retries else "",
            )
            retries = 0
            if self._waits_for_resume:
                # The copies wait for the SRS to take the resume: it goes again a while later,
                # whether or not the call changes meanwhile (one task, one time due).
                wait = max(RESUME_AGAIN_AFTER, float(session.retry_after or 0))
                self._resume_again_at = trio.current_time() + wait
                if not self._resume_again_running:
                    self._resume_again_running = True
                    nursery.start_soon(self._resume_again)

    async def _resume_again(self) -> None:
        """Send a given-up resume again when due (``_resume_again_at``), unless an update went
        meanwhile (a change of the call, an offer of the SRS: its own answer decides), the SRS
        took one made after the resume (a new recording session), or the recording was paused
        again (its own re-INVITE says inactive)."""
        while (due := self._resume_again_at) is not None:
            await trio.sleep_until(due)
            if self._resume_again_at == due:
                self._resume_again_at = None
                if self._waits_for_resume and not self._paused:
                    self._changed.set()
        self._resume_again_running = False

    async def _follow_streams(
        self, streams: list[RecordedStream], sockets: list[trio.socket.SocketType | None]
    ) -> bool:
        """Take in the streams the call added or removed since the last update (a re-INVITE or
        UPDATE of the call after its answer): True when there were any, and the next re-INVITE
        of the SRS carries the metadata. A stream the call added (a recorded media type at an
        index no live recorded stream has, a port-0 line the call used again included) gets
        two new m= lines, one per direction as the first streams (RFC 7866 §8.1.1), with the
        next unused labels and new stream ids, and sockets of their own; its copies go once
        the SRS's answer says where. A stream the call removed (its line at port 0, RFC 3264
        §8.2) stays in our offers at port 0 and in the metadata, no longer sent nor received
        by the parties on the call (:func:`_took_part`); its sockets are closed. Past
        MAX_RECORDED_LINES lines (a call adding and removing streams without end) a new stream
        is not recorded, with a warning. A new stream no local port can be had for (the
        gateway out of file descriptors or ports) is not recorded either, the rest of the
        recording going on: its two lines are offered at port 0 (RFC 3264 §5.1: offered, not
        to be used), so that the metadata still names it and the SRS knows the recording is
        partial, with a warning; it is not tried again while the call has it."""
        now = time.time()
        present = {media.index for media in self._media}
        self._no_port &= present  # a stream the call removed: its line may be used again
        changed = False
        for number, stream in enumerate(streams):
            if stream.removed is None and stream.index not in present:
                streams[number] = attrs.evolve(stream, removed=now)
                sock = self._by_stream.get((stream.index, stream.direction))
                if sock is not None and sock is sockets[number]:
                    del self._by_stream[(stream.index, stream.direction)]
                    sock.close()
                # Nowhere to send it any more, even before the SRS answers (a stream the call
                # adds on this line again must not go to the removed one's address, or under
                # its keys, until the SRS's answer says where its new labels go).
                self._destinations.pop((stream.index, stream.direction), None)
                context = self._srtp.pop((stream.index, stream.direction), None)
                if context is not None:
                    context.close()
                changed = True
                log.info(
                    "SIPREC: call %s: stream %d removed by the call, label %s now port 0",
                    self.call.call_id,
                    stream.index,
                    stream.label,
                )
        live = {stream.index for stream in streams if stream.removed is None}
        self._note_unrecorded(self._media, streams)
        new = [
            m
            for m in self._media
            if m.index not in live and m.media in self._kinds and m.index not in self._no_port
        ]
        for media in new:
            if len(streams) + len(DIRECTIONS) > MAX_RECORDED_LINES:
                if media.index not in self._unrecorded:
                    self._unrecorded.add(media.index)
                    self._count_unrecorded("too_many_lines")
                    log.warning(
                        "SIPREC: call %s: stream %d (%s) the call added is not recorded: the "
                        "recording session has %d m= lines, the most it is given",
                        self.call.call_id,
                        media.index,
                        media.media,
                        len(streams),
                    )
                continue
            added = recorded_streams(
                [media], kinds=self._kinds, first_label=len(streams) + 1, added=now
            )
            added, bound = await self._bind_lines(added, added=True)
            changed = True
            for stream, sock in zip(added, bound, strict=True):
                streams.append(stream)
                sockets.append(sock)
                self._ports.append(0 if sock is None else sock.getsockname()[1])
                if sock is not None:
                    self._by_stream[(stream.index, stream.direction)] = sock
            if media.index in self._no_port:
                continue  # offered at port 0, said so (_bind_lines)
            self._unrecorded.discard(media.index)
            log.info(
                "SIPREC: call %s: stream %d (%s) added by the call, offered to the SRS as "
                "labels %s",
                self.call.call_id,
                media.index,
                media.media,
                ", ".join(stream.label for stream in added),
            )
        return changed

    async def _bind_lines(
        self, lines: list[RecordedStream], *, added: bool
    ) -> tuple[list[RecordedStream], list[trio.socket.SocketType | None]]:
        """A socket for each recorded line of one call stream (its two directions). When no
        local port can be had (the gateway out of file descriptors or ports: the OSError of
        socket() or bind()), only that stream goes unrecorded: its lines are offered at port
        0 (RFC 3264 §5.1: offered, not to be used), marked removed from the start so that no
        party sends or receives them in the metadata, which still names them (the recording
        is known to be partial), with a warning, counted (``no_port``), and not tried again
        while the call has the stream. ``added``: the call added it after its answer."""
        bound: list[trio.socket.SocketType] = []
        try:
            for _ in lines:
                bound.append(await self._bind())
        except OSError as exc:
            for sock in bound:
                sock.close()
            now = time.time()
            index, kind = lines[0].index, lines[0].media.media
            self._no_port.add(index)
            self._count_unrecorded("no_port")
            labels = ", ".join(line.label for line in lines)
            why = exc.strerror or type(exc).__name__
            if added:
                log.warning(
                    "SIPREC: call %s: stream %d (%s) the call added is not recorded: no local "
                    "port for its copies (%s); offered to the SRS at port 0 as labels %s",
                    self.call.call_id,
                    index,
                    kind,
                    why,
                    labels,
                )
            else:
                log.warning(
                    "SIPREC: call %s: stream %d (%s) is not recorded: no local port for its "
                    "copies (%s); labels %s at port 0",
                    self.call.call_id,
                    index,
                    kind,
                    why,
                    labels,
                )
            return [attrs.evolve(line, removed=now) for line in lines], [None for _ in lines]
        return lines, [*bound]

    def _within_line_cap(self, streams: list[RecordedStream]) -> list[RecordedStream]:
        """The first INVITE's streams, at most MAX_RECORDED_LINES m= lines: those of the
        call's first streams (two lines each, so whole streams); each stream past them is not
        recorded, with a warning and counted, as one the call adds past the cap
        (:meth:`_follow_streams`). The core reads at most 16 m= lines of a phone's SDP, so a
        call's answer has at most 32 recorded lines today; this holds whatever that bound."""
        if len(streams) <= MAX_RECORDED_LINES:
            return streams
        for stream in streams[MAX_RECORDED_LINES :: len(DIRECTIONS)]:
            self._unrecorded.add(stream.index)
            self._count_unrecorded("too_many_lines")
            log.warning(
                "SIPREC: call %s: stream %d (%s) is not recorded: the recording session has "
                "%d m= lines, the most it is given",
                self.call.call_id,
                stream.index,
                stream.media.media,
                MAX_RECORDED_LINES,
            )
        return streams[:MAX_RECORDED_LINES]

    def _note_unrecorded(
        self, media: Sequence[TappedMedia], streams: Sequence[RecordedStream]
    ) -> None:
        """Say once per stream of the call that is not recorded (video without
        ``record_video``, a text stream ...), so that a recording known to be partial never
        looks whole. A T.38 line that was audio is the audio stream, inactive meanwhile."""
        recorded = {stream.index for stream in streams if stream.removed is None}
        for stream in media:
            if stream.index in recorded or stream.index in self._unrecorded:
                continue
            if stream.media in self._kinds:
                continue
            self._unrecorded.add(stream.index)
            log.info(
                "SIPREC: call %s: stream %d (%s) is not recorded%s",
                self.call.call_id,
                stream.index,
                stream.media,
                " (record_video = false)" if stream.media == "video" else "",
            )

    def _follow_answer(self, session: OutboundSession, current: list[RecordedStream]) -> None:
        """The SRS's answer to our re-offer says where each stream goes now (RFC 3264 §8.3.1:
        it may move them); an answer we cannot read leaves them where they were."""
        try:
            self._destinations = srs_destinations(session.answer_type, session.answer_body, current)
        except SdpError as exc:
            log.warning(
                "SIPREC: call %s: the SRS's answer to an update is unusable, the copies go on "
                "where they went: %s",
                self.call.call_id,
                exc,
            )

    def _srs_request(self, method: str, content_type: str | None, body: bytes) -> SessionAnswer:
        """The SRS's re-INVITE or UPDATE with a body (the core answered its session timer and
        refuses it 491 while our re-INVITE is out). A new offer (RFC 3264 §8: the SRS moved
        the recording to other ports or another media server) is answered by
        :func:`answer_srs_offer` and the copies go to its new addresses from now on; one we
        cannot answer gets 488 and the recording goes on as it was (§8: a refused offer changes
        nothing). A metadata snapshot request (RFC 7866 §9) is answered 200 (to a re-INVITE,
        with our SDP as it stands: its 2xx must offer, RFC 3261 §14.2) and the complete
        metadata follows in a re-INVITE of ours beside an SDP offer, as every update."""
        try:
            request = srs_request_untrusted(content_type, body)
            answer = self._answer_offer(request.offer) if request.offer else b""
        except UnsupportedSrsBody as exc:
            log.warning("SIPREC: call %s: the SRS's %s has %s", self.call.call_id, method, exc)
            return SessionAnswer(
                415, "Unsupported Media Type", headers=(("Accept", SRS_REQUEST_TYPES),)
            )
        except SdpError as exc:
            log.warning(
                "SIPREC: call %s: the SRS's offer is refused (488), the recording goes on as it "
                "was: %s",
                self.call.call_id,
                exc,
            )
            return SessionAnswer(488, "Not Acceptable Here")
        if request.metadata_requested:
            log.info("SIPREC: call %s: the SRS asked for a metadata snapshot", self.call.call_id)
            self._metadata_changed = True
            self._changed.set()
        if not answer:
            return SessionAnswer(200)
        return SessionAnswer(200, body=answer, content_type="application/sdp")

    def _srs_ack_answer(self, content_type: str | None, body: bytes) -> None:
        """The SRS's answer in its ACK, to the SDP in force that our 2xx offered because its
        re-INVITE had none (RFC 3261 §14.2): the copies go where it says from now on (RFC
        3264 §8.3.1: it may move them). With SDES each accepted line must still be RTP/SAVP;
        our offer was the keys in force, which stay. An ACK cannot be refused: an answer we
        cannot use is logged and the copies go on where they went (no BYE: the SDP we offered
        was what the session already had, and the SRS, which MUST answer validly and BYE
        itself if it cannot take our offer, §13.2.2.4, still has the recording). A resume
        given up waiting goes again after it, as after an SRS offer: the SRS is there."""
        current = self._current(self._streams)
        try:
            answered = _answered(content_type, body, current)
            if self._keying is not None:
                for stream, _, media in answered:
                    if media.proto.upper() != "RTP/SAVP":
                        raise SdpError(
                            f"it answered stream {stream.label} with {media.proto[:32]!r}, "
                            "not RTP/SAVP"
                        )
        except SdpError as exc:
            log.warning(
                "SIPREC: call %s: the SRS's answer in its ACK is unusable, the copies go on "
                "where they went: %s",
                self.call.call_id,
                exc,
            )
            return
        self._destinations = {
            (stream.index, stream.direction): destination for stream, destination, _ in answered
        }
        log.info(
            "SIPREC: call %s: the SRS's answer in its ACK taken, %d of %d streams sent to it",
            self.call.call_id,
            len(answered),
            len(current),
        )
        if self._waits_for_resume:  # the SRS is there: the given-up resume goes again now
            self._changed.set()

    def _answer_offer(self, offer: bytes) -> bytes:
        """Our answer to the SRS's offer, and what it changes: where the copies go, with SDES
        the streams' keys and SRTP contexts. Raises SdpError (OfferRefused) with nothing
        changed. While a resume waits for the SRS (its re-INVITE given up), the streams are
        answered inactive, as the SRS last took them (our answer keeps the keys in force,
        which the resume's offer replaces, _reoffer), and the resume's re-INVITE goes again
        after it: the SRS is there."""
        waits = self._waits_for_resume
        current = self._current(self._streams, paused=self._paused or waits)
        version = self._sdp_version + 1  # RFC 3264 §8: our description changes
        answered = answer_srs_offer(
            offer,
            current,
            self._ports,
            address=self._address,
            session_id=self._sdp_session_id,
            version=version,
            keying=self._keying,
            suites=self._config.srtp_suites,
            previous=self._negotiations,
        )
        self._sdp_version = version
        if answered.negotiations is not None:
            in_force = {
                (stream.index, stream.direction): negotiation.keys
                for stream, negotiation in zip(current, self._negotiations, strict=False)
                if negotiation is not None
            }
            keys = {
                (stream.index, stream.direction): negotiation.keys
                for stream, negotiation in zip(current, answered.negotiations, strict=True)
                if negotiation is not None and negotiation.keys is not None
            }
            self._use_keys(keys, in_force)
            self._negotiations = answered.negotiations
        self._destinations = answered.destinations
        log.info(
            "SIPREC: call %s: the SRS's new offer taken, %d of %d streams sent to it",
            self.call.call_id,
            len(answered.destinations),
            len(current),
        )
        if waits:
            self._changed.set()
        return answered.sdp

    async def _probe(self, session: OutboundSession) -> int | None:
        """One OPTIONS liveness probe (RFC 3261 §11), within UPDATE_TIMEOUT."""
        with trio.move_on_after(UPDATE_TIMEOUT):
            return await session.probe()
        return None

    async def _refresh(self, session: OutboundSession) -> int | None:
        """One session refresh by UPDATE (RFC 4028 §10), within UPDATE_TIMEOUT."""
        with trio.move_on_after(UPDATE_TIMEOUT):
            return await session.refresh()
        return None

    async def _lost(
        self,
        session: OutboundSession,
        streams: list[RecordedStream],
        sockets: list[trio.socket.SocketType | None],
        nursery: trio.Nursery,
        why: str,
    ) -> OutboundSession | None:
        """The session timer says the SRS is gone (RFC 4028 §10): BYE the recording session
        (its answer not awaited: the SRS is most likely not there) and open a new one for the
        rest of the call, as after a 481 (:meth:`_reopen`)."""
        log.warning(
            "SIPREC: call %s: recording session %s: the SRS %s; opening a new one",
            self.call.call_id,
            session.call_id,
            why,
        )
        nursery.start_soon(session.close)
        return await self._reopen(streams, sockets)

    def _count_failure(self, status: int | None) -> None:
        self._count(failure_reason(status))

    def _count(self, reason: str) -> None:
        self._failures[reason] = self._failures.get(reason, 0) + 1

    def _count_unrecorded(self, reason: str) -> None:
        self._streams_unrecorded[reason] = self._streams_unrecorded.get(reason, 0) + 1

    def _current(
        self, streams: list[RecordedStream], *, paused: bool | None = None
    ) -> list[RecordedStream]:
        """The recorded streams as the call has them now (held, resumed, new codecs), all
        inactive while the recording is paused (``paused``: as if it were, or not)."""
        latest = {media.index: media for media in self._media}
        current = [
            stream
            if stream.removed is not None  # port 0 from now on, as it last was
            else attrs.evolve(stream, media=_recorded_now(stream.media, latest.get(stream.index)))
            for stream in streams
        ]
        if self._paused if paused is None else paused:
            # RFC 7866 §7.1.1: a paused recording's streams are inactive.
            current = [
                attrs.evolve(stream, media=attrs.evolve(stream.media, direction="inactive"))
                for stream in current
            ]
        return current

    async def _reopen(
        self, streams: list[RecordedStream], sockets: list[trio.socket.SocketType | None]
    ) -> OutboundSession | None:
        """A new recording session for the rest of the call, after the SRS lost ours (481):
        the SRS then each fallback (:meth:`_open`), up to REOPEN_ROUNDS rounds apart by
        :func:`reopen_wait`. The metadata names the same communication session, participants
        and streams, ids and all (RFC 7865 §6: an id names one object for its whole life; the
        recording session is the new dialog), and the recording of the session associated
        from now; the SDP offers the streams as they are now, from the same sockets; with
        SDES, fresh keys (a new session, RFC 4568 §6.1), new SRTP contexts. Copies are not
        sent until one takes the call; then they go to its addresses. Counted either way:
        ``session_reopened`` or ``session_gone`` (none took the call: it goes on
        unrecorded)."""
        self._reopening = True
        try:
            return await self._reopen_rounds(streams, sockets)
        finally:
            self._reopening = False
            self._tell_state()  # on (or paused) in the new session, or off: none took it

    async def _reopen_rounds(
        self, streams: list[RecordedStream], sockets: list[trio.socket.SocketType | None]
    ) -> OutboundSession | None:
        self.session, self._destinations = None, {}
        self._forget_keys()
        round_ = 1
        fraction = int.from_bytes(os.urandom(2)) / 0xFFFF
        while (wait := reopen_wait(round_, fraction)) is not None:
            await trio.sleep(wait)
            round_ += 1
            # This INVITE says all there is: the streams as they are now, the metadata whole.
            self._changed = trio.Event()
            self._metadata_changed = False
            self._started = time.time()
            # A stream the call added or removed since the update the SRS lost (while the
            # last round's INVITE was out or this round waited) is in this INVITE: the event
            # that said so was just reset.
            await self._follow_streams(streams, sockets)
            # A resume while this INVITE is out is not in it: the copies wait for the
            # re-INVITE that follows (its event is set).
            resumes = self._resumes
            session, destinations = await self._open(self._current(streams), sockets)
            if session is not None:
                self.session, self._destinations = session, destinations
                self._settled = True
                self._answered_resumes = resumes  # keyed afresh: no pause behind them
                self._count("session_reopened")
                log.warning(
                    "SIPREC: call %s: recording goes on in a new recording session (%s)",
                    self.call.call_id,
                    session.call_id,
                )
                return session
            self._forget_keys()
        self._count("session_gone")
        log.warning(
            "SIPREC: call %s: recording ended: the SRS lost the recording session and no new "
            "one could be opened (%d rounds); the call goes on unrecorded",
            self.call.call_id,
            REOPEN_ROUNDS,
        )
        return None

    def _forget_keys(self) -> None:
        """Drop the SRTP contexts and SDES negotiations of a recording session that is over
        (libsrtp zeroes the keys): the next one is keyed afresh."""
        for context in self._srtp.values():
            context.close()
        self._srtp.clear()
        self._negotiations = []

    async def _update(
        self,
        session: OutboundSession,
        current: list[RecordedStream],
        ports: list[int],
        negotiations: list[SdesNegotiation] | None,
        with_metadata: bool,
    ) -> int | None:
        """One re-INVITE of the recording session: the SDP of ``current`` and, when the
        parties changed (or the call ended), the metadata as it stands beside it."""
        self._sdp_version += 1
        offer = offer_sdp(
            current,
            self._address,
            ports,
            session_id=self._sdp_session_id,
            version=self._sdp_version,
            crypto=_crypto_of(negotiations),
        )
        content_type, body = "application/sdp", offer
        if with_metadata:
            content_type, body = self._with_metadata(offer, current)
        with trio.move_on_after(UPDATE_TIMEOUT):
            return await session.update(
                body, content_type, secure_only=negotiations is not None, sdp=offer
            )
        return None

    async def _final_update(
        self,
        session: OutboundSession,
        streams: list[RecordedStream],
        sockets: list[trio.socket.SocketType | None],
    ) -> None:
        """The final snapshot, before the BYE (RFC 7866 §9: the SRC sends metadata whenever it
        changes; RFC 7865 §6: the end of an association is its disassociate-time): every
        stream inactive (no more media), every participant still on the call disassociated
        now, the recording of the session with them, and the session's stop-time (RFC 7865
        §6.3: the communication session ended). In a re-INVITE beside the SDP, as every
        metadata update, never in the BYE (RFC 7866 §9 sends metadata in an INVITE, re-INVITE
        or UPDATE; an SRS need not read a BYE's body). Sent once, whatever the SRS
        answers: the BYE follows anyway."""
        ended = time.time()
        self._participants = ended_participants(self._participants, ended)
        self._stopped = ended
        current = [
            attrs.evolve(stream, media=attrs.evolve(stream.media, direction="inactive"))
            for stream in self._current(streams)
        ]
        status = await self._update(
            session, current, list(self._ports), self._reoffer(len(current)), with_metadata=True
        )
        if status is None or not 200 <= status < 300:
            log.info(
                "SIPREC: call %s: the SRS refused the final metadata (%s)",
                self.call.call_id,
                "no answer" if status is None else status,
            )

    def _reoffer(self, count: int) -> list[SdesNegotiation] | None:
        """SDES re-offers for a re-INVITE (RFC 4568 §7.1.4): each stream's line in force again,
        same tag, suite and key, so the SRS's unchanged answer keeps every SRTP context and
        its packet indexes going on (a new key would only be needed for a new SSRC or an
        exhausted key, neither of which a re-INVITE of ours brings); a stream without keys in
        force (declined) gets a fresh offer. None without SDES."""
        if self._keying is None:
            return None
        suites = self._config.srtp_suites
        previous: list[SdesNegotiation | None] = [*self._negotiations]
        previous += [None] * (count - len(previous))
        if self._waits_for_resume:
            # After a pause: fresh keys for every stream (RFC 4568 §7.1.4 allows a new key in
            # a re-offer). The phones' RTP sequence numbers went on while no copy was sent;
            # past 2^15 of them SRTP's index guess (RFC 3711 §3.3.1) would take the resumed
            # packets for old ones, on our side and the SRS's: a new context starts afresh.
            previous = [None] * count
        return [
            self._keying.offer(suites=suites, secure_signalling=True, previous=negotiation)
            for negotiation in previous
        ]

    async def _keys_answered(
        self,
        session: OutboundSession,
        streams: list[RecordedStream],
        negotiations: list[SdesNegotiation],
    ) -> bool:
        """Take the SRS's answer to an SDES offer: the outbound SRTP context of each accepted
        stream, kept while our key is the one in force, a new one (and the old one freed) when
        our key changed. An answer that does not take SRTP ends the recording session: False."""
        try:
            keys = srs_srtp_keys(session.answer_type, session.answer_body, streams, negotiations)
        except SdpError as exc:
            log.warning(
                "SIPREC: call %s: recording ended, the SRS's answer does not take SRTP: %s",
                self.call.call_id,
                exc,
            )
            await session.close()
            return False
        in_force = {
            (stream.index, stream.direction): negotiation.keys
            for stream, negotiation in zip(streams, self._negotiations, strict=False)
            if negotiation is not None
        }
        self._use_keys(keys, in_force)
        self._negotiations = [*negotiations]
        return True

    def _use_keys(
        self,
        keys: dict[tuple[int, str], SrtpKeys],
        in_force: dict[tuple[int, str], SrtpKeys | None],
    ) -> None:
        """Each stream's outbound SRTP context for ``keys``: kept while our key is the one in
        force, a new one (and the old one freed) when our key changed."""
        for key, new in keys.items():
            context = self._srtp.get(key)
            old = in_force.get(key)
            if context is not None and old is not None and _same_sender(old, new):
                continue  # RFC 4568 §7.1.4: our key unchanged, the context goes on
            if context is not None:
                context.close()
            self._srtp[key] = OutboundSrtpSession(new.suite, new.local_key)

    async def _bind(self) -> trio.socket.SocketType:
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            await sock.bind((self._config.media_address, 0))
        except BaseException:
            sock.close()  # no port: the descriptor is not kept
            raise
        return sock

    def _body(
        self,
        streams: list[RecordedStream],
        ports: list[int],
        negotiations: list[SdesNegotiation] | None,
    ) -> tuple[str, bytes, bytes]:
        """The INVITE's body and its content type, and the SDP offer in it."""
        offer = offer_sdp(
            streams,
            self._address,
            ports,
            session_id=self._sdp_session_id,
            version=self._sdp_version,
            crypto=_crypto_of(negotiations),
        )
        return (*self._with_metadata(offer, streams), offer)

    def _with_metadata(self, offer: bytes, streams: list[RecordedStream]) -> tuple[str, bytes]:
        """The SDP offer and the metadata as it stands, in one multipart body (RFC 7866 §8)."""
        metadata = metadata_xml(
            self.call.call_id,
            self._metadata_session_id,
            self._participants,
            streams,
            self._started,
            self._stopped,
            call_started=self._call_started,
        )
        return multipart(
            [
                ([("Content-Type", "application/sdp")], offer),
                (
                    [
                        ("Content-Type", METADATA_TYPE),
                        ("Content-Disposition", "recording-session"),
                    ],
                    metadata,
                ),
            ]
        )

    async def _open(
        self, streams: list[RecordedStream], sockets: list[trio.socket.SocketType | None]
    ) -> tuple[OutboundSession | None, dict[tuple[int, str], tuple[str, int]]]:
        assert self.call.sessions is not None
        ports = list(self._ports)
        keying = self._keying
        negotiations: list[SdesNegotiation] | None = None
        if keying is None:
            content_type, body, offer = self._body(streams, ports, None)
        session = None
        for target in (self._config.srs, *self._config.fallbacks):
            if keying is not None:
                # Fresh keys per SRS tried: one that refused has seen the keys it was offered.
                suites = self._config.srtp_suites
                negotiations = [
                    keying.offer(suites=suites, secure_signalling=True) for _ in streams
                ]
                content_type, body, offer = self._body(streams, ports, negotiations)
            try:
                session = await self.call.sessions.open_session(
                    target,
                    body=body,
                    content_type=content_type,
                    headers=[
                        ("Require", "siprec"),
                        # RFC 7866 §9: the SRS may ask us for a metadata snapshot.
                        ("Accept", f"application/sdp, {METADATA_TYPE}, {METADATA_REQUEST_TYPE}"),
                    ],
                    contact_parameters=("+sip.src",),
                    secure_only=keying is not None,
                    session_expires=self._config.session_expires,
                    sdp=offer,
                )
                session.on_request = self._srs_request
                session.on_ack_answer = self._srs_ack_answer
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
            return session, {}  # nothing is sent; a re-INVITE makes fresh SDES offers
        if negotiations is not None and not await self._keys_answered(
            session, streams, negotiations
        ):
            # RFC 4568 §5.1.2: an SRS that answers without SRTP (plain RTP/AVP, no crypto
            # line, one we cannot use) is not sent the copies in clear; the call goes on.
            return None, {}
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

    async def _forward_srtp(
        self,
        session: OutboundSession | None,
        destinations: dict[tuple[int, str], tuple[str, int]],
        sockets: dict[tuple[int, str], trio.socket.SocketType],
        stream_id: str,
        direction: str,
        rtp: bytes,
    ) -> None:
        """:meth:`_forward` with SRTP: each stream's copy protected under its own key (RFC 3711
        §3.3). A packet SRTP refuses (an index already sent: a duplicate, RFC 3711 §9.1; an
        SSRC past the limit) is not sent."""
        self.counts.packets += 1
        if rtp_fields(rtp) is None:
            return  # RTCP (and anything that is not RTP): not forwarded
        key = (int(stream_id), direction)
        destination = destinations.get(key)
        sock = sockets.get(key)
        context = self._srtp.get(key)
        if (
            session is None
            or session.ended.is_set()
            or destination is None
            or sock is None
            or context is None
        ):
            self.counts.not_sent += 1
            return
        packet = context.protect_rtp(rtp)
        if packet is None:
            self.counts.not_sent += 1
            return
        try:
            await sock.sendto(packet, destination)
            self.counts.sent += 1
        except OSError:
            self.counts.not_sent += 1


def _same_sender(old: SrtpKeys, new: SrtpKeys) -> bool:
    """Whether our sending key (and suite) stayed: the SRS's key protects nothing we use."""
    return old.suite == new.suite and old.local_key == new.local_key


def _crypto_of(
    negotiations: Sequence[SdesNegotiation] | None,
) -> list[list[tuple[str, str | None]]] | None:
    """Each stream's a=crypto attributes for the offer, or None (plain RTP)."""
    if negotiations is None:
        return None
    return [negotiation.local_sdp_attributes() for negotiation in negotiations]


class SiprecClient:
    """The ``siprec`` media tap (``interfaces.MediaTap``). ``random_bytes`` (a CSPRNG) makes the
    SDES keys of ``media_security = "sdes"``: fresh ones per recording session and stream."""

    name = "siprec"

    def __init__(
        self, config: SiprecConfig, *, random_bytes: Callable[[int], bytes] = os.urandom
    ) -> None:
        self.config = config
        self.update_failures = dict.fromkeys(UPDATE_FAILURE_REASONS, 0)
        """Updates given up, by reason (``MediaTap.update_failures``: the metrics read it)."""
        self.streams_unrecorded = dict.fromkeys(UNRECORDED_REASONS, 0)
        """Streams of recorded calls left out of their recording, by reason
        (``MediaTap.streams_unrecorded``: the metrics read it)."""
        # The copies are sendonly (RFC 7866 §8.1.1): the SRS's MKI, if it gives one, marks
        # packets it never sends us, and OutboundSrtpSession puts no MKI in ours, so our lines
        # never carry one ("receive-only"). An SRS's offer is answered by the rule of call
        # legs, srtp_suites standing for the leg's policy (answer_suite).
        self._keying = (
            SdesKeyExchange(
                random_bytes=random_bytes,
                answer_suite=config.answer_suite,
                mki="receive-only",
            )
            if config.media_security == "sdes"
            else None
        )

    @property
    def sip_targets(self) -> tuple[str, ...]:
        """The recorders (``MediaTap.sip_targets``): the gateway keeps those named by DNS
        resolved, and each recording session tries a recorder's targets in turn."""
        return (self.config.srs, *self.config.fallbacks)

    def sink_for_call(self, call: TappedCall) -> SiprecSink | None:
        if not self.config.selection.wants(call):
            return None
        return SiprecSink(
            call, self.config, self._keying, self.update_failures, self.streams_unrecorded
        )


# -- plugin configuration and registration (entry point ``siprec``) -------------------------------


@attrs.frozen
class SiprecConfig:
    """``[plugins.siprec]``. See docs/configuration.md."""

    srs: str = ""
    fallbacks: tuple[str, ...] = ()
    all_calls: bool = False
    accounts: tuple[str, ...] = ()
    trunks: tuple[str, ...] = attrs.field(default=(), metadata=NAMES_TRUNKS)
    media_address: str = "127.0.0.1"
    queue: int = 2000
    bye_timeout: float = 5.0
    final_metadata: bool = True
    media_security: str = "none"
    srtp_suites: tuple[str, ...] = ("AES_CM_128_HMAC_SHA1_80",)
    answer_suite: str = "policy-order"
    session_expires: int = 1800
    record_video: bool = False
    recordpref: str = "ignore"
    record_indication: bool = True

    def __attrs_post_init__(self) -> None:
        # structure() reports a ValueError as a config error of this table; say which key.
        _check_srs("srs", self.srs)
        for fallback in self.fallbacks:
            _check_srs("fallbacks", fallback)
        if self.media_security not in MEDIA_SECURITY:
            raise ValueError(
                f'media_security: expected "none" or "sdes", not {self.media_security!r}'
            )
        if not self.srtp_suites:
            raise ValueError("srtp_suites: expected at least one SRTP crypto-suite")
        for suite in self.srtp_suites:
            if suite not in SUPPORTED_SUITES:
                raise ValueError(
                    f"srtp_suites: {suite!r} is not one of {', '.join(SUPPORTED_SUITES)}"
                )
        if self.answer_suite not in ANSWER_SUITE_CHOICES:
            raise ValueError(
                f"answer_suite: expected one of {', '.join(map(repr, ANSWER_SUITE_CHOICES))}"
            )
        if self.media_security == "sdes":
            _check_tls("srs", self.srs)
            for fallback in self.fallbacks:
                _check_tls("fallbacks", fallback)
        try:
            packed = socket.inet_aton(self.media_address)
        except OSError:
            raise ValueError(
                f"media_address: expected an IPv4 address, not {self.media_address!r}"
            ) from None
        address = ipaddress.IPv4Address(packed)
        if address.is_unspecified or address.is_multicast:
            # It goes into the c= line of our offers to the SRS (RFC 4566 §5.7), as [media]
            # address into the phones': 0.0.0.0 there means hold (RFC 3264 §8.4).
            raise ValueError(
                "media_address: expected the unicast address the SRS reaches us at (it goes "
                f"into SDP c= lines, RFC 4566 §5.7), not {self.media_address!r}"
            )
        if not 10 <= self.queue <= 1_000_000:
            raise ValueError(f"queue: expected 10 to 1000000 packets, got {self.queue}")
        if not self.bye_timeout >= MIN_BYE_TIMEOUT:
            raise ValueError(
                f"bye_timeout: expected a positive number of seconds, "
                f"at least {MIN_BYE_TIMEOUT:g} (a round trip to "
                f"the SRS and a retransmission, RFC 3261 §17.1.2.2), got {self.bye_timeout:g}"
            )
        if self.session_expires != 0 and not (MIN_INTERVAL <= self.session_expires <= MAX_INTERVAL):
            # RFC 4028 §4: no session interval below 90 s.
            raise ValueError(
                f"session_expires: expected 0 (no session timer) or {MIN_INTERVAL} to "
                f"{MAX_INTERVAL} seconds, got {self.session_expires}"
            )
        if self.recordpref not in RECORDPREF_POLICIES:
            raise ValueError(
                f"recordpref: expected one of {', '.join(map(repr, RECORDPREF_POLICIES))}, "
                f"got {self.recordpref!r}"
            )
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
            f"{key}: expected a recorder's SIP URI (e.g. sip:srs@192.0.2.50:5060), "
            f"not {redact_password(uri)!r}"
        ) from None
    if not uri.lower().startswith(("sip:", "sips:")):
        raise ValueError(f"{key}: expected a sip: or sips: URI, not {redact_password(uri)!r}")


def _check_tls(key: str, uri: str) -> None:
    # RFC 4568 §8.3: SDES keys are in the SDP in clear, so the SIP carrying it must be protected
    # hop by hop (TLS); a sips: URI or ;transport=tls makes the core open a TLS connection.
    parsed = parse_uri_untrusted(uri)
    if isinstance(parsed, SipUri) and (parsed.secure or parsed.transport == "tls"):
        return
    raise ValueError(
        f'{key}: media_security = "sdes" sends the SRTP keys in the recording session\'s SDP, '
        f"which may only travel over TLS (RFC 4568 §8.3): make {redact_password(uri)!r} a sips: "
        "URI or add ;transport=tls"
    )


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
