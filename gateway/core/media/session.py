"""The media side of one call: its relay streams, and the SDP each leg sees (all media via us).

Theory of operation
-------------------
A B2BUA runs one RFC 3264 offer/answer exchange per leg. A :class:`MediaSession` joins them: an
offer arriving on one leg (side ``"a"`` or ``"b"``) becomes an offer we send on the other leg, and
the answer we get there becomes the answer we send back. Streams are matched by position (RFC 3264
§6), so m= line *i* of either leg is relay stream *i*: its side A faces leg A, its side B leg B.

What each leg sees is ours, never the other peer's transport:

- our own o= line per leg (username ``voipgw``, a session id from ``session_id_source``, a version
  that goes up by one whenever what we send on that leg changes, RFC 3264 §8);
- ``c=`` is ``media_address``, every m= port is the relay port facing that leg, ``a=rtcp`` (RFC
  3605) names our RTCP port unless the leg muxes (RFC 5761);
- codecs, payload types, fmtp, ptime, bandwidth, direction and unknown attributes go through
  unchanged, except payload type numbers that would change on a leg: a re-offer keeps the
  numbers we last sent on the answerer's leg (RFC 3264 §8.3.2, ``keep_leg_numbers``), and the
  answer we send is in the offerer's numbers (§6.1). Where the two peers still number a codec
  differently, each stream direction gets a renumbering for the relay
  (``RelayDirection.payload_types``, from both peers' own SDP when the answer arrives, with
  the sender's RFC 2198 RED numbers, ``red_payload_types``, whose blocks it rewrites too;
  restored with the rest when an offer is abandoned; docs/architecture.md "Payload type
  numbers");
  attributes that describe the other peer's transport or keys are removed (ICE
  candidates and credentials, a=crypto, a=fingerprint, a=setup, a=tls-id, a=zrtp-hash,
  a=key-mgmt, BUNDLE grouping). Keys are per leg: until a leg negotiates its own, legs are plain
  RTP/AVP(F), and an offer with only encrypted streams is refused
  (:class:`EncryptedMediaNotSupported`, 488).
- Streams the relay cannot carry (encrypted, non-RTP such as MSRP, RTP over TCP, T.38 over TCP
  or DTLS, multicast) are offered to the other leg with port 0 and answered with port 0 (RFC
  3264 §6, §8.2).
- T.38 fax over UDPTL (``m=image <port> udptl t38``, :mod:`gateway.core.media.t38`) is passed
  through: its attributes go to the other leg unchanged (no a=rtcp, no rtcp-mux: UDPTL has one
  port), and its stream relays opaque datagrams (:meth:`RelayStream.set_opaque`). A re-INVITE
  that turns an audio line into T.38 (or back) keeps the line's stream and ports and switches the
  stream's mode when the answer accepts it, so RTP in flight until then is still relayed as RTP.
  A malformed T.38 line gets port 0 for that line (488 when nothing else is relayable),
  logged; so would a T.38 line on a relay without an opaque mode (``Relay.carries_opaque``:
  the in-process relay and the media workers both have one).
- G.711 transcoding (``g711_transcoding``, :mod:`gateway.core.media.transcoding`,
  docs/architecture.md "G.711 transcoding"): an offerer with one G.711 law gets the other
  added after its own formats in the offer we send; an answer that keeps only the added law
  makes the stream transcoded both ways (:attr:`MediaSession.transcoding`), and our answer
  names the offerer's law. Decided at every answer, restored when an offer is abandoned.
  Converted packets carry the number the receiver's own SDP gave its law, through the
  stream's renumbering where the conversion alone cannot (``through_renumbering``); an
  answer whose numbers make that ambiguous (``number_clash``) is not transcoded (one
  WARNING per call). Allowed by ``[media]``, or by the call's trunks (the call sets
  :attr:`MediaSession.g711_transcoding`).
- Hold passes through: a=sendonly/inactive as written, and c=0.0.0.0 (RFC 3264 §8.4) as a
  media-level c= line; the relay then has no destination for that leg.
- rtcp-mux is settled per leg (the relay demultiplexes per side): the offerer gets a=rtcp-mux in
  our answer whenever it offered it, the answerer gets it offered when the offerer offered it.

Every SDP is rebuilt with :mod:`gateway.core.sdp.model` values and written by the serializer,
which refuses line breaks inside fields; nothing from a peer reaches the other leg as raw lines.

Life of an exchange: :meth:`MediaSession.offer_from` opens streams for new m= lines and sets the
offerer's remote addresses at once (RFC 3264 §8.3.1: it must receive at the new address as soon
as it has sent the offer). :meth:`MediaSession.answer_from` may be called more than once for one
offer (an answer in a 183, a different one in the 200 of another fork): the latest wins. The
exchange ends with :meth:`MediaSession.settle` (2xx or ACK with the final answer; also implied by
the next offer and by :meth:`MediaSession.close`), which closes the streams the final answer left
at port 0. :meth:`MediaSession.abandon_offer` (the offer got an error response) closes the streams
the offer opened and restores the remote addresses of before, so the call goes on as it was.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Literal

import attrs
import trio

from gateway.core.ids import RandomIds
from gateway.core.ip import ip_facts
from gateway.core.media.dtmf import Digit, EventDetector
from gateway.core.media.errors import LocalMediaError
from gateway.core.media.quality import CallQuality
from gateway.core.media.relay import DROP_REASONS, DtmfInterworking
from gateway.core.media.relay_api import (
    COUNTERS_NO_ANSWER,
    COUNTERS_POOL_STOPPED,
    Relay,
    RelaySide,
    RelayStream,
)
from gateway.core.media.t38 import is_udptl_t38, t38_problem_untrusted
from gateway.core.media.tones import (
    Tone,
    ToneCodec,
    amr_not_taken,
    tone_codec_names,
    tone_codecs,
)
from gateway.core.media.transcoding import (
    AddedLaw,
    TranscodingPlan,
    answer_in_offerers_law,
    number_clash,
    plan_for_answer,
    through_renumbering,
    with_other_law,
)
from gateway.core.sdp.errors import SdpError
from gateway.core.sdp.model import (
    RTP_PROTOS,
    STATIC_PAYLOAD_TYPES,
    Attribute,
    Attributes,
    Connection,
    Direction,
    MediaDescription,
    Origin,
    SessionDescription,
    TimeDescription,
    parse_rtpmap_untrusted,
)
from gateway.core.sdp.offer_answer import (
    CodecChange,
    apply_version_rule,
    codec_change,
    codec_in_use_only,
    keep_leg_numbers,
    numbered_alike,
    offered_formats,
    payload_type_map,
    red_payload_types,
    rejected_media,
    renumbered_media,
    validate_answer,
)

log = logging.getLogger(__name__)

DTMF_COUNTS = ("taken", "injected", "ended_at_change", "passed", "end_copies_dropped")
"""The event packet counters of a call's DTMF interworking (:meth:`MediaSession.
dtmf_statistics`): the call record's ``dtmf.packets``, the media summary's ``dtmf_*`` and
``voipgw_media_dtmf_event_packets_total{action=...}``."""

FINAL_COUNTERS_WAIT = 0.5
"""Seconds a call's end waits for its streams' counters to be brought up to date
(:meth:`MediaSession.final_counters`) before its record is written with the last known ones,
said partial: a media worker answers within a round trip (well under a millisecond); one that
does not is stuck or gone, and must not hold the call's end."""


def _counters_partial_why(missing: Mapping[int, str]) -> str:
    """What :attr:`MediaSession.counters_partial_why` says: each worker's reason, a worker
    asked and not answered within the bound as ``timed out after 0.5 s``."""
    timed_out = f"timed out after {FINAL_COUNTERS_WAIT:g} s"
    return (
        "; ".join(
            f"media worker {index}: {timed_out if why == COUNTERS_NO_ANSWER else why}"
            for index, why in missing.items()
        )
        or timed_out
    )


DIGIT_WITHHELD = "withheld"
"""What log lines at INFO and above say in place of a DTMF digit (it may be a card number's or
a PIN's, PCI DSS requirement 3.3) unless ``[gateway] log_dtmf_digits`` is on."""

Side = Literal["a", "b"]
"""A leg of the call: ``"a"`` faces the caller (stream side A), ``"b"`` the callee."""

_SIDES: tuple[Side, Side] = ("a", "b")
_DIRECTION_NAMES = frozenset(d.value for d in Direction)  # RFC 8866 §6.7: lower case
_Renumbering = tuple[dict[int, int], tuple[int, ...]]
"""A stream direction's payload type renumbering and its sender's RED payload types."""

ORIGIN_USERNAME = "voipgw"
SESSION_NAME = "-"

# What the relay carries: RTP and RTCP over UDP, unencrypted until a leg negotiates keys.
PLAIN_RTP_PROTOS = frozenset({"RTP/AVP", "RTP/AVPF"})  # RFC 3551, RFC 4585

# Attributes that describe one peer's transport or keys. Passing them to the other leg would make
# it talk ICE/DTLS/SRTP to the wrong party or leak keys. ICE: RFC 8839 (a=ice-* by prefix);
# SDES: RFC 4568; DTLS: RFC 8122, RFC 4145, RFC 8842; ZRTP: RFC 6189; MIKEY: RFC 4567;
# TCP connection reuse: RFC 4145; RTCP port and muxing are rewritten for each leg (RFC 3605,
# RFC 5761, RFC 8858); BUNDLE (RFC 9143) would put several of our streams on one port.
LEG_SPECIFIC_ATTRIBUTES = frozenset(
    {
        "candidate",
        "end-of-candidates",
        "remote-candidates",
        "crypto",
        "fingerprint",
        "setup",
        "tls-id",
        "zrtp-hash",
        "key-mgmt",
        "connection",
        "rtcp",
        "rtcp-mux",
        "rtcp-mux-only",
        "bundle-only",
    }
)


def is_leg_specific(attribute: Attribute) -> bool:
    """True for an attribute that must not be copied from one leg's SDP to the other's
    (:func:`_relayed_attributes` repeats this rule inline: keep the two alike)."""
    name = attribute.name.lower()
    if name in LEG_SPECIFIC_ATTRIBUTES or name.startswith("ice-"):
        return True
    if name == "group":  # RFC 5888 a=group:<semantics> <mid>...: only BUNDLE is transport
        return (attribute.value or "").split()[:1] == ["BUNDLE"]
    return False


class EncryptedMediaNotSupported(SdpError):
    """Every offered stream is SRTP (RTP/SAVP, DTLS-SRTP ...), which the legs cannot carry yet.

    The B2BUA answers 488 with ``reason`` as the Warning text.
    """


def _random_session_id() -> int:
    # 56 bits: fits the signed 64-bit integers some stacks parse o= numbers into.
    return int(RandomIds().token_hex(7), 16)


@attrs.frozen
class _Remote:
    """What we told the relay about one side of one stream (kept to undo an abandoned offer)."""

    rtp: tuple[str, int] | None = None
    rtcp: tuple[str, int] | None = None
    rtcp_mux: bool = False

    def apply(self, side: RelaySide) -> None:
        side.set_remote(self.rtp, rtcp=self.rtcp, rtcp_mux=self.rtcp_mux)


_NO_REMOTE = _Remote()


@attrs.frozen
class DtmfPlan:
    """DTMF interworking on a call (docs/architecture.md "DTMF interworking"): the leg that
    negotiated telephone-event (``rfc4733_side``, with its number and clock rate, the same both
    ways: a peer sends and receives with its own SDP's numbers, RFC 3264 §5.1) and the leg that
    did not (``info_side``: its digits travel as SIP INFO), on m= line ``index``."""

    index: int
    rfc4733_side: Side
    info_side: Side
    payload_type: int
    clock_rate: int
    red: tuple[int, ...] = ()
    """The RFC 4733 leg's RFC 2198 RED numbers on that line (its own SDP's), when the answer
    kept RED: events may come inside RED (RFC 4733 §2.5.1.5), which the relay then reads too."""


DtmfDigitHandler = Callable[[Side, Digit], None]
"""Takes a digit that ``side``'s peer sent as RFC 4733 events (for the other leg, as INFO).
Called in the relay's loop: must not block."""


@attrs.define
class _Exchange:
    """One offer/answer exchange in progress."""

    offerer: Side
    offer: SessionDescription
    """As the offerer sent it."""
    sent_offer: SessionDescription
    """What we sent to the answerer."""
    sent_before: SessionDescription | None
    """The SDP last sent to the answerer before this offer (:meth:`MediaSession.withdraw_offer`
    makes it the last one again)."""
    offerer_remotes: dict[int, _Remote]
    """The offerer's addresses of the streams we relay, by m= line."""
    offered_lines: int
    """The m= lines of the offer as its peer sent it: ``offer`` has the call's lines beyond
    them at port 0 (:meth:`MediaSession._padded`)."""
    opened: tuple[int, ...]
    """m= lines whose stream this offer opened."""
    slot_count_before: int
    remotes_before: dict[tuple[int, Side], _Remote]
    opaque_before: dict[int, bool]
    """Whether each stream open before the offer relayed opaque datagrams (T.38)."""
    renumbered_before: dict[tuple[int, str], _Renumbering]
    """The payload type renumbering of each stream direction before the offer."""
    dtmf_before: DtmfPlan | None = None
    """The DTMF interworking before the offer."""
    receiver_events_before: dict[tuple[int, str], tuple[int, int]] = attrs.field(factory=dict)
    """What the streams of the DTMF lines were told of their receivers' telephone-event
    before the offer (:meth:`MediaSession._tell_receiver_events`)."""
    added_event: tuple[int, int] | None = None
    """(m= line, payload type) of the telephone-event we added to the offer we sent for an
    offerer declared to do DTMF by SIP INFO (:func:`with_telephone_event`); None: none."""
    transcoding_before: TranscodingPlan | None = None
    """The G.711 transcoding before the offer."""
    added_law: AddedLaw | None = None
    """The G.711 law we added to the offer we sent (:func:`with_other_law`); None: none."""
    offerer_dialog_sent: SessionDescription | None = None
    """The SDP we last sent in the offerer's dialog before this call had that dialog (a joined
    carrier's: what the consultation call sent there), which our answer's o= line continues;
    None once an answer went, or for a dialog whose SDP of ours was this call's."""
    answer: SessionDescription | None = None
    """The latest answer received."""
    answer_own: SessionDescription | None = None
    """The latest answer in the numbers its peer really uses (``answer_from``'s
    ``numbering``, else the answer)."""


@attrs.frozen
class _RepeatedOffer:
    """A side's latest :meth:`MediaSession.repeat_offer`, to withdraw it."""

    previous: SessionDescription
    """The SDP sent on that side before it."""
    repeated: SessionDescription
    elsewhere: bool
    """Sent in another dialog (``dialog_sent``), which took a version of that dialog only."""
    slot_count_before: int
    """The m= lines the session had: the other dialog's lines beyond them grew it."""


@attrs.frozen
class _ClosedCounts:
    """What a closed stream adds to a call's counters: :class:`_Totals`' per direction, and
    those of the DTMF interworking and G.711 transcoding of a line that had them."""

    totals: tuple[tuple[str, tuple[int, int, int]], ...]
    dropped_by_reason: tuple[tuple[str, tuple[int, ...]], ...]
    udptl: dict[str, int] | None
    dtmf: tuple[tuple[str, int], ...]
    transcoded: tuple[tuple[str, int], ...]
    last_activity: float

    @classmethod
    def of(cls, stream: RelayStream, *, faxed: bool, dtmf: bool, transcoded: bool) -> _ClosedCounts:
        """``stream``'s counters now; UDPTL ones for a call that had fax (``faxed``), DTMF
        and transcoding ones for a line that had them."""
        directions = (("a_to_b", stream.a_to_b), ("b_to_a", stream.b_to_a))
        udptl = None
        if faxed:
            udptl = dict.fromkeys(_UDPTL_KEYS, 0)
            _add_udptl(udptl, stream)
        return cls(
            totals=tuple(_direction_statistics(stream)),
            dropped_by_reason=tuple(
                (name, tuple(control.dropped_by_reason())) for name, control in directions
            ),
            udptl=udptl,
            dtmf=tuple(_dtmf_counts(stream).items()) if dtmf else (),
            transcoded=tuple(
                (name, control.statistics().transcoded_packets) for name, control in directions
            )
            if transcoded
            else (),
            last_activity=stream.last_activity,
        )


@attrs.define
class _Totals:
    """Counters of the streams closed so far (an open stream keeps its own)."""

    packets: dict[str, int] = attrs.Factory(lambda: {"a_to_b": 0, "b_to_a": 0})
    bytes: dict[str, int] = attrs.Factory(lambda: {"a_to_b": 0, "b_to_a": 0})
    dropped: dict[str, int] = attrs.Factory(lambda: {"a_to_b": 0, "b_to_a": 0})
    # The same drops per reason (relay.DROP_REASONS order), per direction.
    dropped_by_reason: dict[str, list[int]] = attrs.Factory(
        lambda: {"a_to_b": [0] * len(DROP_REASONS), "b_to_a": [0] * len(DROP_REASONS)}
    )
    last_activity: float | None = None
    # T.38 UDPTL datagrams and bytes per direction ("a_to_b_udptl_packets" ...), made when the
    # first stream of a call that had fax closes: calls without fax never have one.
    udptl: dict[str, int] | None = None


class MediaSession:
    """The relay streams of one call and the SDP rewriting between its two legs.

    ``relay`` opens the streams; ``media_address`` is the address written in every c= and o= line
    we send (the relay's bound address, or the public one in front of it). ``session_id_source``
    gives the o= session id of each leg (called once per leg, at its first SDP); the default
    draws from the OS CSPRNG.

    Errors: :class:`SdpError` (answer 488; for a received answer, end the dialog) when a peer's
    SDP cannot be relayed, :class:`EncryptedMediaNotSupported` (488) for SRTP-only offers,
    :class:`~gateway.core.media.errors.PortsExhausted` (503) when no ports are free, and
    :class:`~gateway.core.media.errors.LocalMediaError` for calls in the wrong order. A failed
    call leaves the session as it was.
    """

    def __init__(
        self,
        relay: Relay,
        *,
        media_address: str,
        session_id_source: Callable[[], int] | None = None,
        quality: CallQuality | None = None,
        dtmf_interworking: bool = False,
        clock: Callable[[], float] | None = None,
        g711_transcoding: bool = False,
        log_dtmf_digits: bool = False,
    ) -> None:
        try:
            address = ip_facts(media_address)
        except ValueError:
            raise LocalMediaError(f"media address {media_address!r} is not an IP address") from None
        self._relay = relay
        self._media_address = address.text
        self._connection = Connection.for_address(self._media_address)
        self._ip_version = ip_facts(relay.allocator.address).version
        self._session_id_source = session_id_source or _random_session_id
        self._slots: list[RelayStream | None] = []
        self._remotes: dict[tuple[int, Side], _Remote] = {}
        # (m= line, "a_to_b"/"b_to_a") -> the relay's payload type renumbering; only non-empty
        # ones are kept, so a call whose legs agree never touches its streams' settings.
        self._renumbered: dict[tuple[int, str], _Renumbering] = {}
        self._sent: dict[Side, SessionDescription] = {}
        # The SDP each leg's peer last settled on, as it numbers its codecs (its offer or its
        # answer): what a repeated offer's answer must keep (answer_to_repeated_offer).
        self._received: dict[Side, SessionDescription] = {}
        # The m= lines of each leg's dialog in force (RFC 3264 §8: its offers keep as many),
        # set as an exchange settles; a transfer target's dialog may have fewer than the call.
        self._dialog_lines: dict[Side, int] = {}
        self._repeated: dict[Side, _RepeatedOffer] = {}
        # RFC 7866 §7.1.1: the recording indication (on, off, paused) our SDP to a
        # recording-aware party carries (recording_indication.py); no entry: its SDP is as
        # ever (a=record from the other party passed on as any attribute).
        self._record_indication: dict[Side, str] = {}
        # The SDPs sent on each side with the indication we wrote in (the last two: a
        # withdrawn offer gives the one before it back), and what each said: what a party was
        # told is what the SDP last sent there says only if it is one of them (an a=record
        # the other party's SDP brought, passed on, is not ours).
        self._told: dict[Side, tuple[tuple[SessionDescription, str], ...]] = {}
        self._exchange: _Exchange | None = None
        self._totals = _Totals()
        self._closed = False
        self.counters_partial = False
        """The counters of the call's end could not all be brought up to date
        (:meth:`final_counters`): they are the last a media worker pushed, up to about a
        second old."""
        self.counters_partial_why: str | None = None
        """Why they could not, per media worker (``media worker 0: timed out after 0.5 s;
        media worker 1: worker exited``) when :attr:`counters_partial`: the call's
        ``media-counters-partial`` line (docs/operations.md). None otherwise."""
        self.counters_partial_at_stop = False
        """:attr:`counters_partial` only because the gateway is stopping (every worker's reason
        ``stopped with the gateway``): expected then, one per call still up, so the call says
        it at INFO (``media-counters-partial-at-stop``), not as a WARNING to alert on."""
        self._faxed = False  # a stream went T.38 (UDPTL): statistics() count its datagrams
        # DTMF interworking (docs/architecture.md "DTMF interworking"): on, when the relay can.
        self._interworks_dtmf = dtmf_interworking and relay.interworks_dtmf
        # Digits pressed in a call are card numbers and PINs (PCI DSS requirement 3.3: no
        # sensitive authentication data kept after authorisation, and a log is kept): the INFO
        # lines below name the event, never the digit, unless [gateway] log_dtmf_digits.
        self._log_dtmf_digits = log_dtmf_digits
        self.dtmf: DtmfPlan | None = None
        """The call's DTMF interworking, decided by each answer; None: none (both legs carry
        DTMF alike, or it is off)."""
        self.on_dtmf_digit: DtmfDigitHandler | None = None
        """Gets the digits the RFC 4733 leg sends while :attr:`dtmf` is set (the call)."""
        self._dtmf_detector: EventDetector | None = None
        # Arrival times for the detector's end timeout (RFC 4733 §2.5.2.2); None: no timeout.
        self._clock = clock
        self.on_dtmf_timer: Callable[[], None] | None = None
        """Called (in the relay's loop) when an RFC 4733 event begins, which arms
        :meth:`dtmf_timer`: the owner calls :meth:`dtmf_timeout` when that comes."""
        self.dtmf_timeouts = 0
        """Events ended by the timeout so far (their end packets were all lost)."""
        self.g711_transcoding = g711_transcoding
        """Whether offers may get the other G.711 law added (docs/architecture.md "G.711
        transcoding"): ``[media] g711_transcoding``, or the call's trunks' own setting (the
        call sets it before the first offer); a transcoding already set stays until the next
        answer."""
        self.transcoding: TranscodingPlan | None = None
        """The call's G.711 transcoding, decided by each answer; None: none."""
        # Packets transcoded by the streams closed so far, and the open streams that have
        # transcoded (a stream's counter runs on across its transcodings).
        self._transcoded_closed = {"a_to_b": 0, "b_to_a": 0}
        # DTMF interworking's event packets (DtmfCounts keys) of the lines it ran on, closed
        # streams included: for the call record and the metrics, whatever plans came and went.
        self._dtmf_lines: set[int] = set()
        self._dtmf_closed = dict.fromkeys(DTMF_COUNTS, 0)
        # (m= line, direction) -> the receiving leg's telephone-event in force ((-1, 0): none)
        # as told to the stream of each line in _dtmf_lines (_tell_receiver_events).
        self._receiver_events: dict[tuple[int, str], tuple[int, int]] = {}
        self._transcoded_lines: set[int] = set()
        self._transcoded_last: TranscodingPlan | None = None  # the latest plan, for the record
        self._clash_warned = False  # a number clash stopped a transcoding: WARNING once
        # The ringing tone a leg hears in place of the other's media (play_ringback): that
        # leg, the plan and what it plays as there (_ringback_choice: m= line, codec, payload
        # type), which replan_ringback compares the leg's SDP in force against; None: none.
        self._ringback: tuple[Side, str, tuple[int, ToneCodec, int]] | None = None
        self.quality = quality
        """Reads the legs' RTCP (:mod:`gateway.core.media.quality`) when given: every stream's
        RTCP observers feed it. None: RTCP is only relayed."""

    def __repr__(self) -> str:
        offer = "none" if self._exchange is None else f"from {self._exchange.offerer}"
        return (
            f"<MediaSession {self._media_address} streams={len(self.streams)} "
            f"pending_offer={offer}{' closed' if self._closed else ''}>"
        )

    # -- reading -------------------------------------------------------------------------------

    @property
    def streams(self) -> tuple[RelayStream, ...]:
        """The open relay streams, in m= line order."""
        return tuple(s for s in self._slots if s is not None)

    def streams_by_index(self) -> tuple[RelayStream | None, ...]:
        """The stream of every m= line index (None where that line has no stream)."""
        return tuple(self._slots)

    def stream_at(self, index: int) -> RelayStream | None:
        """The stream of m= line ``index`` (from 0), or None when that line has none."""
        if 0 <= index < len(self._slots):
            return self._slots[index]
        return None

    def peer_address(self, index: int, side: str, *, rtcp: bool = False) -> tuple[str, int] | None:
        """Where leg ``side``'s SDP ("a", "b") says its peer sends stream ``index``'s media from
        (RFC 4961 symmetric RTP): its RTP address, or with ``rtcp`` its RTCP one (RFC 3605
        a=rtcp, else RTP port + 1; RFC 5761 rtcp-mux: the RTP address). None while that leg's
        SDP has not given one (our offer waits for its answer) or it is on hold (c=0.0.0.0)."""
        remote = self._remotes.get((index, "a" if side == "a" else "b"))
        if remote is None or remote.rtp is None:
            return None
        if not rtcp or remote.rtcp_mux:
            return remote.rtp
        return remote.rtcp or (remote.rtp[0], remote.rtp[1] + 1)

    def count_dropped(self, side: str, reason: str, count: int = 1) -> None:
        """``count`` datagrams from leg ``side``'s peer ("a", "b") dropped outside the relay, by
        the call's key-exchange task (:mod:`~gateway.core.media.handshakes`: a handshake
        datagram no stream takes, one kept past its bound or still kept when the call ends):
        counted with the relay's drops of that direction under ``reason`` (one of
        relay.DROP_REASONS), so that every drop is in the call's record and in
        ``voipgw_media_dropped_packets_by_reason_total`` (docs/metrics.md)."""
        name = "a_to_b" if side == "a" else "b_to_a"
        self._totals.dropped[name] += count
        self._totals.dropped_by_reason[name][DROP_REASONS.index(reason)] += count

    @property
    def offerer(self) -> Side | None:
        """The side whose offer is in progress (not yet settled or abandoned), or None."""
        return None if self._exchange is None else self._exchange.offerer

    @property
    def closed(self) -> bool:
        return self._closed

    def last_sent(self, side: Side) -> SessionDescription | None:
        """The SDP we last sent on ``side``'s leg (to repeat it, e.g. in a session refresh)."""
        return self._sent.get(_check_side(side))

    def sent_elsewhere(self, side: Side, sdp: SessionDescription) -> None:
        """Record ``sdp``, plain, as the SDP last sent on ``side``'s leg when the call made it
        itself (a pickup's answer to the picker, ``answer_with``): later offers on that leg
        keep its payload type numbers (RFC 3264 §8.3.2) and its o= line (§8)."""
        self._check_open()
        self._sent[_check_side(side)] = sdp

    def repeat_offer(
        self,
        side: Side,
        *,
        direction: Direction | None = None,
        dialog_sent: SessionDescription | None = None,
        keep_codec_in_use: bool = False,
    ) -> SessionDescription:
        """The SDP last sent on ``side``'s leg again, with the next o= version (RFC 3264 §8:
        the re-offer changes the session there, its keys if nothing else), recorded as sent:
        a re-offer of ours that changes nothing the session holds (a re-key, whose keys the
        leg's security adds). Its answer is :meth:`answer_to_repeated_offer`'s. With
        ``direction``, every line in use says that instead (RFC 3264 §8.4: ``sendrecv`` takes
        a held party off hold; a joined carrier's leg is offered the call un-held).

        ``dialog_sent``: the offer goes in another dialog than the one ``side``'s SDP went in
        so far, where we last sent that (a carrier's leg joined from a consultation call,
        which sent it): the offer has its o= line, one version on (§8: the same session to
        that peer), and its m= lines beyond the call's at port 0 (§8: no fewer). Refused
        there (:meth:`repeated_offer_refused`), the SDP last sent on ``side`` is the one before
        again: the leg's own dialog never saw the offer.

        ``keep_codec_in_use``: each line the relay carries lists only the codec in use on it
        (:func:`codec_in_use_only`, as the leg's SDP in force has it), so that an answer
        (:meth:`answer_to_repeated_offer`) keeps it: for a peer that had another session
        before (a joined carrier), whose choice among the call's codecs could fall on one the
        other leg does not send.

        Raises :class:`LocalMediaError` when nothing was sent on that leg yet or an offer is
        in progress (one offer at a time, RFC 3264 §4)."""
        self._check_open()
        side = _check_side(side)
        if self._exchange is not None:
            raise LocalMediaError("an offer is in progress")
        previous = self._sent.get(side)
        if previous is None:
            raise LocalMediaError(f"nothing was sent on side {side} yet")
        origin = (dialog_sent if dialog_sent is not None else previous).origin
        repeated = attrs.evolve(previous, origin=origin.bumped())
        if direction is not None:
            repeated = attrs.evolve(
                repeated,
                media=tuple(
                    media if media.port == 0 else media.with_direction(direction)
                    for media in repeated.media
                ),
            )
        theirs = self._received.get(side)
        if keep_codec_in_use and theirs is not None:
            repeated = attrs.evolve(
                repeated,
                media=tuple(
                    codec_in_use_only(media, theirs.media[index])
                    if self.stream_at(index) is not None and index < len(theirs.media)
                    else media
                    for index, media in enumerate(repeated.media)
                ),
            )
        slot_count_before = len(self._slots)
        if dialog_sent is not None and len(dialog_sent.media) > len(repeated.media):
            # That dialog's SDP had lines beyond the call's (a consultation call with video
            # joined to an audio call): an offer there keeps every one (RFC 3264 §8), these at
            # port 0 (§8.2: removed, with their media type), and so do the call's later offers
            # there (_padded), as lines of closed streams.
            removed = dialog_sent.media[len(repeated.media) :]
            repeated = attrs.evolve(
                repeated, media=repeated.media + tuple(rejected_media(m) for m in removed)
            )
            self._slots.extend([None] * (len(repeated.media) - slot_count_before))
        indication = self._record_indication.get(side)
        if indication is not None:
            repeated = with_record_indication(repeated, indication)
            self._wrote_indication(side, repeated, indication)
        self._sent[side] = repeated
        self._repeated[side] = _RepeatedOffer(
            previous, repeated, dialog_sent is not None, slot_count_before
        )
        return repeated

    def _take_back_repeated(self, made: _RepeatedOffer, side: Side) -> None:
        """``made`` never changed ``side``'s dialog: the SDP sent before it is the last one
        there again, and the lines it added for another dialog are gone (all closed)."""
        if self._sent.get(side) is made.repeated:
            self._sent[side] = made.previous
            last_open = max(self._open_lines(), default=-1)
            del self._slots[max(made.slot_count_before, last_open + 1) :]

    def indicate_recording(self, side: Side, indication: str | None) -> None:
        """``side``'s party is recording-aware and is to be told ``indication`` (RFC 7866
        §7.1.1: ``on``, ``off``, ``paused``) on each of its streams in every SDP we send it from
        now on, relayed offers and answers as our own; None: nothing added (its SDP as ever)."""
        side = _check_side(side)
        if indication is None:
            self._record_indication.pop(side, None)
        else:
            self._record_indication[side] = indication

    def recording_indication(self, side: Side) -> str | None:
        """What the SDP last sent on ``side``'s leg told its party of the recording: the
        ``a=record`` we wrote in (:meth:`indicate_recording`); None: we wrote none there (an
        ``a=record`` the other party's SDP brought and we passed on is not ours)."""
        side = _check_side(side)
        sent = self._sent.get(side)
        for sdp, said in self._told.get(side, ()):
            if sdp is sent:
                return said
        return None

    def recording_indicated(self, side: Side) -> bool:
        """Whether the SDP last sent on ``side``'s leg says the indication it is to be told
        (:meth:`indicate_recording`), written by us; True when it is to be told nothing or
        nothing was sent."""
        side = _check_side(side)
        indication = self._record_indication.get(side)
        if indication is None or side not in self._sent:
            return True
        return self.recording_indication(side) == indication

    def _wrote_indication(self, side: Side, sdp: SessionDescription, indication: str) -> None:
        self._told[side] = (*self._told.get(side, ())[-1:], (sdp, indication))

    def withdraw_repeated_offer(self, side: Side) -> None:
        """The re-offer :meth:`repeat_offer` just made for ``side`` was not sent after all
        (the leg's security could not add its keys, the leg cannot be reached): the SDP sent
        before it is the last one sent again, so the next SDP on that leg has the version
        after it (RFC 3264 §8: one more than the previous SDP sent; a version skipped tells
        the peer of a change it never saw). No-op when another SDP was recorded as sent
        there since."""
        side = _check_side(side)
        made = self._repeated.pop(side, None)
        if made is not None:
            self._take_back_repeated(made, side)

    def repeated_offer_refused(self, side: Side) -> None:
        """The re-offer :meth:`repeat_offer` made for ``side`` was sent and refused (an error
        response, RFC 3261 §14.1): the session stays as it was, and the re-offer's o= version
        stays taken (RFC 3264 §8), so no later :meth:`withdraw_repeated_offer` gives it back.
        One sent in another dialog (``dialog_sent``) took a version of that dialog only: the
        SDP sent on ``side`` before it is the last one there again."""
        side = _check_side(side)
        made = self._repeated.pop(side, None)
        if made is not None and made.elsewhere:
            self._take_back_repeated(made, side)

    def answer_to_repeated_offer(
        self, side: Side, answer: SessionDescription, *, rtcp_mux_offered: bool = False
    ) -> None:
        """``side``'s answer, plain, to :meth:`repeat_offer`: checked against that offer (RFC
        3264 §6) and the relay pointed at its addresses, which an answer may move (§8.3.1).
        The other leg hears of nothing: its session did not change. ``answer`` is the peer's
        own SDP (numbers as it uses them).

        An answer may list fewer of the offer's formats than the peer's SDP in force did (RFC
        3264 §6.1; :func:`codec_change`): taken when it keeps the codec in use with its number,
        which the other leg still sends. What it leaves out stays as the other leg agreed it,
        but for telephone-event: its RFC 4733 events go to that peer as SIP INFO from then on
        (the DTMF interworking of a leg that never had telephone-event, when it is on), or a
        peer that had taken the telephone-event we added for the other leg's INFO gets those
        digits as INFO again (docs/media_security.md "Forked SDES callees").

        An answer may also list formats of the offer that the peer's SDP in force did not (RFC
        3264 §6.1, §8.3.2): taken when the other leg takes each of them, its own SDP in force
        listing the codec (§5.1), the relay renumbering it both ways where the legs number it
        apart; a telephone-event added on the DTMF line changes the interworking as an answer
        with it would at the first exchange (:meth:`_dtmf_after_adding`).

        Raises :class:`SdpError` for an answer that does not fit the offer, or one that rejects
        (port 0) a stream the relay carries, or leaves out the codec in use, adds a codec the
        other leg does not take (or one to renumber on a G.711-transcoded line) or gives a
        payload type of the offer another codec than the peer's SDP in force did: a
        change of the session that only a new exchange on both legs could make (the other leg
        agreed on the codecs, payload numbers, G.711 transcoding and DTMF interworking the
        relay applies), and the caller ends the call, as for any answer to a re-INVITE it
        cannot apply. A refused answer changes nothing."""
        self._check_open()
        side = _check_side(side)
        offer = self._sent[side]
        validate_answer(offer, answer)
        before = self._received.get(side)
        other = _other(side)
        theirs = self._received.get(other)
        dtmf_line = self._dtmf_line(offer)
        remotes: dict[int, _Remote] = {}
        narrowed: dict[int, CodecChange] = {}
        renumbering: dict[tuple[int, str], _Renumbering] = {}
        for index, (offered, answered) in enumerate(zip(offer.media, answer.media, strict=True)):
            stream = self._slots[index] if index < len(self._slots) else None
            if stream is None or offered.is_rejected:
                continue
            if answered.is_rejected:
                raise SdpError(
                    f"m= line {index + 1}: the answer to our re-key re-offer rejects the stream"
                )
            theirs_line = (
                theirs.media[index] if theirs is not None and index < len(theirs.media) else None
            )
            changed = (
                codec_change(
                    offered,
                    before.media[index],
                    answered,
                    receivable=self._receivable(theirs_line, answered, index == dtmf_line),
                )
                if before is not None and index < len(before.media)
                else None
            )
            if changed is not None and changed.refused is not None:
                # A re-key changes keys only; the caller's leg and the relay's renumbering,
                # transcoding and DTMF plan were agreed on the codecs before (RFC 3264 §8.3.2).
                raise SdpError(
                    f"m= line {index + 1}: the answer to our re-key re-offer changes the "
                    f"stream's codecs ({changed.described}), which the other leg did not "
                    f"agree to ({changed.refused})"
                )
            if changed is not None:
                narrowed[index] = changed
                if changed.added_payload_types and theirs_line is not None:
                    renumbering.update(
                        self._added_renumbered(index, side, changed, answered, theirs_line)
                    )
            mux_offered = _rtcp_mux(offered) or (rtcp_mux_offered and not is_udptl_t38(offered))
            remotes[index] = self._remote_of(
                answer, answered, index, rtcp_mux=mux_offered and _rtcp_mux(answered)
            )
        dtmf = self._dtmf_after_narrowing(side, offer, before, answer)
        # Both legs had telephone-event, relayed as it came, until this answer made one leg
        # the INFO leg: an event in progress began towards it (DtmfInterworking). A plan
        # whose RFC 4733 leg is this phone (it added the telephone-event we had offered for
        # the other leg's INFO) starts with nothing of its in progress.
        relayed = self.dtmf is None and dtmf is not None and dtmf.rfc4733_side != side
        for index, remote in remotes.items():  # all checked first: a refusal changes nothing
            if self._remotes.get((index, side)) != remote:
                self._set_remote(index, side, remote)
        for (index, direction), (table, red) in renumbering.items():
            self._set_renumbered(index, direction, table, red)
        for index, changed in narrowed.items():
            if changed.dropped:
                log.info(
                    "m= line %d: the answer to our re-key re-offer on leg %s leaves out %s and "
                    "keeps the codec in use: taken (the other leg's codecs stay as agreed)",
                    index + 1,
                    side,
                    changed.dropped,
                )
            if changed.added:
                log.info(
                    "m= line %d: the answer to our re-key re-offer on leg %s adds %s, which leg "
                    "%s takes too: taken (the other leg's codecs stay as agreed)",
                    index + 1,
                    side,
                    changed.added,
                    other,
                )
        self._set_dtmf(dtmf, relayed_until_now=relayed)
        towards = "b_to_a" if side == "a" else "a_to_b"
        for index in self._dtmf_lines:
            if index in remotes:  # what this peer takes now, in its numbers
                self._tell_receiver_event(
                    index, towards, _telephone_event_in_force(answer.media[index])
                )
        self._repeated.pop(side, None)
        self._received[side] = answer
        # Its dialog's SDP in force now: a joined carrier's has the lines of its own.
        self._dialog_lines[side] = len(offer.media)

    def _dtmf_after_narrowing(
        self,
        side: Side,
        offer: SessionDescription,
        before: SessionDescription | None,
        answer: SessionDescription,
    ) -> DtmfPlan | None:
        """The DTMF interworking once ``side``'s ``answer`` to our repeated ``offer`` is
        taken, its SDP in force having been ``before``: as it is, unless the answer left out
        the telephone-event of the DTMF line (the first relayed audio line, RFC 4733 §2.1).
        Then, as an answer without it would at the first exchange (:meth:`_plan_dtmf`): a
        peer whose events were relayed as they came (both legs had telephone-event) becomes
        the SIP INFO leg of the other's events; a peer that was the RFC 4733 leg of the
        other's INFO (it took the telephone-event we added) has none any more (the other's
        INFO are relayed as INFO, as when it is declined at the first answer)."""
        plan = self.dtmf
        if not self._interworks_dtmf or before is None:
            return plan
        index = plan.index if plan is not None else _first_audio(offer, self._open_lines())
        if index is None or index >= len(before.media) or index >= len(answer.media):
            return plan
        had = _offered_event(offer.media[index], before.media[index])
        has = _offered_event(offer.media[index], answer.media[index])
        if had == has or (had is not None and has is not None):
            # Unchanged; or a telephone-event at another clock rate kept (dropping the one at
            # 8000 beside Opus's at 48000): both legs still have one, relayed as it comes.
            return plan
        if has is not None:
            return self._dtmf_after_adding(side, index, answer, plan)
        if plan is not None:
            # The peer was the RFC 4733 leg of the other's INFO, or the INFO leg already.
            return None if plan.rfc4733_side == side else plan
        other = _other(side)
        theirs = self._received.get(other)
        if theirs is None or index >= len(theirs.media):
            return None
        event = telephone_event(theirs.media[index])
        if event is None:
            return None  # neither leg has one: relayed as ever
        # The other peer may send its events inside RED only if what it agreed to kept RED
        # (RFC 4733 §2.5.1.5, RFC 3264 §6.1): this peer's SDP in force said so.
        red = red_payload_types(theirs.media[index])
        red = red if red_payload_types(before.media[index]) else ()
        return DtmfPlan(index, other, side, *event, red)

    def _dtmf_after_adding(
        self, side: Side, index: int, answer: SessionDescription, plan: DtmfPlan | None
    ) -> DtmfPlan | None:
        """:meth:`_dtmf_after_narrowing` for an answer that adds telephone-event on the DTMF
        line (RFC 3264 §6.1: an answer may list any of the offer's formats), as an answer
        with it would at the first exchange (:meth:`_plan_dtmf`): where the other leg has one
        too, both do now and events are relayed as they come (a phone that was the INFO leg is
        no longer); where it has none (the one we added for its INFO), this phone becomes the
        RFC 4733 leg of its digits, with the number and clock rate of its own answer."""
        other = _other(side)
        theirs = self._received.get(other)
        if (
            theirs is not None
            and index < len(theirs.media)
            and telephone_event(theirs.media[index]) is not None
        ):
            return None if plan is not None and plan.info_side == side else plan
        if plan is not None:
            return plan
        event = telephone_event(answer.media[index])
        if event is None:
            return None
        return DtmfPlan(index, side, other, *event, red_payload_types(answer.media[index]))

    def _dtmf_line(self, offer: SessionDescription) -> int | None:
        """The m= line DTMF interworking reads (RFC 4733 §2.1: the first relayed audio line),
        when it is on; None otherwise."""
        if not self._interworks_dtmf:
            return None
        plan = self.dtmf
        return plan.index if plan is not None else _first_audio(offer, self._open_lines())

    @staticmethod
    def _receivable(
        theirs: MediaDescription | None, answered: MediaDescription, dtmf_line: bool
    ) -> frozenset[tuple[str, int, int]]:
        """The codecs the other leg takes on a line (``codec_change``'s ``receivable``): those
        its own SDP in force lists (``theirs``; RFC 3264 §5.1, §6.1), and on the DTMF line with
        the interworking on the answer's telephone-event too: a telephone-event the other leg
        lacks (the one we added for its INFO) makes this phone the RFC 4733 leg of its digits
        (``_dtmf_after_narrowing``), as at a first answer."""
        found = {codec.codec_key for codec in offered_formats(theirs)} if theirs else set()
        if dtmf_line:
            found.update(
                codec.codec_key
                for codec in offered_formats(answered)
                if codec.encoding.lower() == "telephone-event"
            )
        return frozenset(found)

    def _added_renumbered(
        self,
        index: int,
        side: Side,
        changed: CodecChange,
        answered: MediaDescription,
        theirs: MediaDescription,
    ) -> dict[tuple[int, str], _Renumbering]:
        """The renumbering of line ``index``, by direction, once ``side``'s phone takes the
        codecs it added (``changed.added_payload_types``) where the other leg numbers them
        otherwise: each peer sends and receives a codec with its own SDP's number (RFC 3264
        §5.1; :func:`payload_type_map`), both ways (the other leg sends telephone-event to a
        phone that adds it, relayed once neither is the INFO leg); empty when nothing changes.
        Raises :class:`SdpError` when that line is G.711-transcoded (its renumbering agrees with
        the transcoding, made for the codecs both legs agreed: ``through_renumbering``)."""
        codecs = answered.rtpmaps()
        keys = {
            codec.codec_key
            for pt in changed.added_payload_types
            if (codec := codecs.get(pt) or STATIC_PAYLOAD_TYPES.get(pt)) is not None
        }
        theirs_codecs = theirs.rtpmaps()
        tables: dict[tuple[int, str], _Renumbering] = {}
        for direction, sender, receiver, numbers in (
            (_direction_from(side), answered, theirs, codecs),
            (_direction_from(_other(side)), theirs, answered, theirs_codecs),
        ):
            current, red = self._renumbered.get((index, direction), ({}, ()))
            added = {
                pt: to
                for pt, to in payload_type_map(sender, receiver).items()
                if (codec := numbers.get(pt) or STATIC_PAYLOAD_TYPES.get(pt)) is not None
                and codec.codec_key in keys
                and current.get(pt) != to
            }
            if added:
                tables[(index, direction)] = (
                    {**current, **added},
                    red or red_payload_types(sender),
                )
        if tables and self.transcoding is not None and self.transcoding.index == index:
            raise SdpError(
                f"m= line {index + 1}: the answer to our re-key re-offer adds {changed.added}, "
                "which the relay would renumber on a G.711-transcoded stream"
            )
        return tables

    def _open_lines(self) -> dict[int, RelayStream]:
        """The m= lines that have a stream, and their streams."""
        return {index: stream for index, stream in enumerate(self._slots) if stream is not None}

    @property
    def on_hold(self) -> bool:
        """Whether the call is on hold: in the SDP last sent on each leg no stream is meant to
        carry media both ways (each is rejected, sendonly, recvonly or inactive; RFC 3264 §8.4).
        A held phone may send nothing at all, RTCP included (RFC 3264 only says it should)."""
        sent = list(self._sent.values())
        return bool(sent) and all(
            media.port == 0 or sd.effective_direction(media) is not Direction.SENDRECV
            for sd in sent
            for media in sd.media
        )

    @property
    def last_activity(self) -> float | None:
        """When a packet last arrived on any stream of the call, closed ones included (a stream
        counts from its opening); None before the first stream was opened."""
        times = [s.last_activity for s in self.streams]
        if self._totals.last_activity is not None:
            times.append(self._totals.last_activity)
        return max(times, default=None)

    def statistics(self) -> dict[str, int | float | None]:
        """A summary for ``voipgw calls``: open streams, and per direction the packets and bytes
        forwarded and packets dropped by every stream of the call, closed ones included. The
        packets are RTP and RTCP; a call that had fax also has its T.38 UDPTL datagrams and
        bytes per direction apart (``a_to_b_udptl_packets`` ...): UDPTL is not RTP. A call
        that transcoded G.711 has the RTP packets transcoded per direction too
        (``a_to_b_transcoded_packets`` ...)."""
        packets = dict(self._totals.packets)
        octets = dict(self._totals.bytes)
        dropped = dict(self._totals.dropped)
        for stream in self.streams:
            for name, counters in _direction_statistics(stream):
                packets[name] += counters[0]
                octets[name] += counters[1]
                dropped[name] += counters[2]
        summary: dict[str, int | float | None] = {
            "streams": len(self.streams),
            "a_to_b_packets": packets["a_to_b"],
            "a_to_b_bytes": octets["a_to_b"],
            "a_to_b_dropped": dropped["a_to_b"],
            "b_to_a_packets": packets["b_to_a"],
            "b_to_a_bytes": octets["b_to_a"],
            "b_to_a_dropped": dropped["b_to_a"],
            "last_activity": self.last_activity,
        }
        if dropped["a_to_b"] or dropped["b_to_a"]:
            # Why (relay.DROP_REASONS): "a_to_b_dropped_blocked" ..., the reasons that
            # dropped something only; they add up to the direction's "..._dropped".
            for name, reasons in self._dropped_by_reason().items():
                for key, count in zip(_DROP_KEYS[name], reasons, strict=True):
                    if count:
                        summary[key] = count
        if self._faxed:
            summary.update(self._udptl_statistics())
        if self._transcoded_last is not None:  # a call that transcoded G.711: each way
            counts = self._transcoded_counts()
            summary["a_to_b_transcoded_packets"] = counts["a_to_b"]
            summary["b_to_a_transcoded_packets"] = counts["b_to_a"]
        if self._dtmf_lines or any(self._dtmf_closed.values()):  # a call that interworked DTMF
            for name, count in self.dtmf_statistics().items():
                summary[f"dtmf_{name}"] = count
        if self.counters_partial:  # final_counters gave up: a media worker stuck or gone
            summary["counters_partial"] = True
        return summary

    def _dropped_by_reason(self) -> dict[str, list[int]]:
        """Each direction's drops by reason (relay.DROP_REASONS order), closed streams
        included."""
        closed = self._totals.dropped_by_reason
        found = {"a_to_b": list(closed["a_to_b"]), "b_to_a": list(closed["b_to_a"])}
        for stream in self.streams:
            _add_drop_reasons(found, stream)
        return found

    def _udptl_statistics(self) -> dict[str, int]:
        """The T.38 UDPTL datagrams and bytes each direction forwarded, closed streams
        included."""
        counts = dict(self._totals.udptl or dict.fromkeys(_UDPTL_KEYS, 0))
        for stream in self.streams:
            _add_udptl(counts, stream)
        return counts

    # -- the A -> B names of the general form --------------------------------------------------

    def offer_to_b(self, offer_from_a: SessionDescription) -> SessionDescription:
        """The offer to send to leg B for leg A's offer: ``offer_from("a", offer_from_a)``."""
        return self.offer_from("a", offer_from_a)

    def answer_from_b(self, answer: SessionDescription) -> SessionDescription:
        """The answer to send to leg A for leg B's answer: ``answer_from("b", answer)``."""
        return self.answer_from("b", answer)

    # -- offer/answer --------------------------------------------------------------------------

    def offer_from(
        self,
        side: Side,
        offer: SessionDescription,
        *,
        dtmf_info: bool = False,
        new_dialog: bool = False,
        dialog_sent: SessionDescription | None = None,
    ) -> SessionDescription:
        """Relay an offer received on ``side``'s leg; returns the offer for the other leg.

        ``dtmf_info``: ``side``'s peer is declared to send and expect DTMF as SIP INFO (its
        trunk's or account's ``dtmf = "info"``, its device profile's). When its offer has no
        telephone-event, the offer we send gets one on the first audio line, so that an
        answerer that accepts it gets the peer's digits as RFC 4733 events (docs/architecture.md
        "DTMF interworking"); our answer to the peer leaves it out again.

        Opens a stream for each new m= line the relay can carry (RFC 3264 §8.3: a re-offer keeps
        the stream at each position and may add lines), and points the offerer's side of every
        relayed stream at the addresses in ``offer``. A previous exchange that has an answer is
        settled first (:meth:`settle`).

        ``new_dialog``: ``side``'s peer is a new party in a dialog of its own (a transfer
        target's 2xx offering), whose first SDP may have fewer m= lines than the call (a video
        call transferred to a phone without video). RFC 3264 §8 counts m= lines per dialog:
        an offer needs as many as its dialog's SDP in force, and no more. Lines the call
        has beyond the offer's are offered to the other leg at port 0 (§8.2: removed) and left
        out of the answer to ``side`` (§6: as many m= lines as its offer). ``dialog_sent``
        (with ``new_dialog``): that dialog is not new to us but to this call (a carrier's leg
        joined from a consultation call), and the SDP we last sent in it was that: our
        answer continues its o= line, one version on (§8: the same session to that peer),
        not the o= line ``side``'s SDP had in the dialog this call had there before.

        Raises :class:`SdpError` (488) when the offer cannot be relayed (fewer m= lines than
        its dialog's SDP in force, no usable c= line, a host name or an address of the wrong
        family, nothing relayable), :class:`EncryptedMediaNotSupported` (488) when only SRTP
        is offered,
        ``PortsExhausted`` (503), and :class:`LocalMediaError` when an earlier offer still awaits
        its answer.
        """
        offerer = _check_side(side)
        answerer = _other(offerer)
        self._check_open()
        if self._exchange is not None:
            if self._exchange.answer is None:
                raise LocalMediaError("an offer is still waiting for its answer")
            self.settle()
        if dialog_sent is not None and not new_dialog:
            raise LocalMediaError("dialog_sent names a dialog new to the call: new_dialog too")
        in_force = 0 if new_dialog else self._dialog_lines.get(offerer, 0)
        if len(offer.media) < in_force:
            raise SdpError(
                f"offer has {len(offer.media)} m= lines, the session has {in_force} (RFC 3264 §8)"
            )
        offered_lines = len(offer.media)
        if offered_lines < len(self._slots):
            offer = self._padded(offer, answerer)

        # Decide everything before changing anything, so a refused offer changes nothing.
        relayed: dict[int, _Remote] = {}
        active = 0
        encrypted: str | None = None
        fax_refusals: list[str] = []
        for index, media in enumerate(offer.media):
            if media.is_rejected:
                continue
            active += 1
            problem = _unrelayable(offer, media)
            if problem is None and is_udptl_t38(media):
                refusal = self._t38_refusal(media)
                if refusal is not None:
                    fax_refusals.append(f"m= line {index + 1}: {refusal}")
                    log.info("T.38 stream (m= line %d) not relayed: %s", index + 1, refusal)
                    problem = "transport"
            if problem is None:
                relayed[index] = self._remote_of(offer, media, index, rtcp_mux=_rtcp_mux(media))
            elif problem != "transport" and encrypted is None:
                encrypted = problem
        if active and not relayed:
            if encrypted is not None:
                raise EncryptedMediaNotSupported(
                    f"encrypted media ({encrypted}) is not supported on this leg yet"
                )
            if fax_refusals:
                raise SdpError("; ".join(fax_refusals))
            raise SdpError(
                "no media stream the gateway can relay (RTP/AVP or RTP/AVPF over UDP, "
                "T.38 over UDPTL)"
            )

        slot_count_before = len(self._slots)
        remotes_before = dict(self._remotes)
        opaque_before = {
            index: stream.opaque for index, stream in enumerate(self._slots) if stream is not None
        }
        opened = self._open_streams(len(offer.media), relayed)
        if self.quality is not None:
            self._observe_rtcp(self.quality, offer, relayed, opened)
        for index in opened:
            # A new line's stream starts in its own mode; an existing one switches with the
            # answer (answer_from).
            self._set_opaque(index, is_udptl_t38(offer.media[index]))
        for index, stream in enumerate(self._slots):
            if stream is not None:
                self._set_remote(index, offerer, relayed.get(index, _NO_REMOTE))

        previous = self._sent.get(answerer)
        media_out: list[MediaDescription] = []
        for index, media in enumerate(offer.media):
            stream = self._slots[index]
            if index in relayed and stream is not None:
                rewritten = _rewritten_media(
                    offer, media, _side(stream, answerer), rtcp_mux=_rtcp_mux(media)
                )
                if (
                    previous is not None
                    and index < len(previous.media)
                    and not numbered_alike(previous.media[index], media)
                ):
                    # A re-offer on a leg keeps the numbers it gave each codec (§8.3.2).
                    numbers = keep_leg_numbers(previous.media[index], media)
                    rewritten = renumbered_media(rewritten, numbers)
                media_out.append(rewritten)
            else:
                media_out.append(rejected_media(media))
        added_law: AddedLaw | None = None
        if self.g711_transcoding:
            # Before telephone-event is added: that one must stay the line's last format.
            added_law = self._add_other_law(offer, relayed, previous, media_out)
        added_event: tuple[int, int] | None = None
        if dtmf_info and self._interworks_dtmf:
            added_event = self._add_telephone_event(offer, relayed, previous, media_out)
        sent = self._send(answerer, offer, media_out, times=offer.times)
        self._exchange = _Exchange(
            offerer=offerer,
            offer=offer,
            offered_lines=offered_lines,
            sent_offer=sent,
            sent_before=previous,
            offerer_remotes=relayed,
            opened=opened,
            slot_count_before=slot_count_before,
            remotes_before=remotes_before,
            opaque_before=opaque_before,
            renumbered_before=dict(self._renumbered),
            dtmf_before=self.dtmf,
            receiver_events_before=dict(self._receiver_events),
            added_event=added_event,
            transcoding_before=self.transcoding,
            added_law=added_law,
            offerer_dialog_sent=dialog_sent,
        )
        return sent

    def answer_from(
        self,
        side: Side,
        answer: SessionDescription,
        *,
        numbering: SessionDescription | None = None,
        rtcp_mux_offered: bool = False,
    ) -> SessionDescription:
        """Relay the answer received on ``side``'s leg; returns the answer for the offerer's leg.

        Where the two peers number a codec differently (each by its own SDP: the offer and
        ``answer``), the stream's directions renumber RTP payload types
        (:func:`~gateway.core.sdp.offer_answer.payload_type_map`). ``numbering``: the SDP whose
        numbers ``side``'s peer really uses when ``answer`` is not its own (call pickup: an
        answer the gateway made up from the picker's offer, which it answered elsewhere with
        the picker's own numbers); its m= lines match the offer's by position.

        ``rtcp_mux_offered``: our offer on that leg carried a=rtcp-mux on every RTP line
        whatever our offer here said (its :class:`~gateway.core.media.security.LegSecurity`
        added it: a browser's leg, ``offers_rtcp_mux``), so the answer's a=rtcp-mux counts
        there too; otherwise an answer's a=rtcp-mux to an offer without it is ignored (RFC 5761
        §5.1.1: the answerer may only accept it).

        ``answer`` is checked against the offer we sent (RFC 3264 §6, :func:`validate_answer`);
        the answerer's side of every accepted stream is pointed at its addresses; a stream it
        rejected (port 0) gets no destination on either side and is closed by :meth:`settle`.
        May be called again for the same offer (early media, then another fork's 200): the
        latest answer wins.

        Raises :class:`SdpError` when the answer does not fit the offer or cannot be relayed (the
        caller ends the dialog), :class:`LocalMediaError` when no offer from the other side is
        in progress.
        """
        answerer = _check_side(side)
        self._check_open()
        exchange = self._exchange
        if exchange is None or exchange.offerer == answerer:
            raise LocalMediaError(f"no offer to side {answerer} is waiting for an answer")
        offerer = exchange.offerer
        validate_answer(exchange.sent_offer, answer)

        accepted: dict[int, _Remote] = {}
        for index, (offered, answered) in enumerate(
            zip(exchange.sent_offer.media, answer.media, strict=True)
        ):
            if offered.is_rejected or answered.is_rejected:
                continue
            mux_offered = _rtcp_mux(offered) or (rtcp_mux_offered and not is_udptl_t38(offered))
            accepted[index] = self._remote_of(
                answer, answered, index, rtcp_mux=mux_offered and _rtcp_mux(answered)
            )

        # Streams whose answer numbers every codec as the offer does (the usual case): nothing
        # to renumber in the relay or in our answer, found without parsing a=rtpmap.
        alike = {
            index
            for index in accepted
            if numbered_alike(exchange.offer.media[index], answer.media[index])
        }
        added_law = exchange.added_law
        transcoding: TranscodingPlan | None = None
        if added_law is not None and added_law.index in accepted:
            own = numbering or answer
            if added_law.index < len(own.media):
                answered_own = own.media[added_law.index]
                transcoding = plan_for_answer(added_law, offerer == "a", answered_own)
                clash = None
                if transcoding is not None:
                    sent_line = exchange.sent_offer.media[added_law.index]
                    clash = number_clash(added_law, sent_line, answered_own)
                if clash is not None:
                    self._not_transcoded(added_law.index, clash)
                    transcoding = None
        # The renumbering carries transcoded packets to the receiver's number where the
        # conversion alone cannot (through_renumbering); None when it cannot at all.
        transcoding, renumbering = self._renumbering(
            exchange.offer,
            offerer,
            numbering or answer,
            accepted,
            set() if numbering else alike,
            transcoding,
        )
        plan = self._plan_dtmf(exchange, numbering or answer, accepted)
        added = exchange.added_event

        media_out: list[MediaDescription] = []
        for index, (offered, answered) in enumerate(
            zip(exchange.offer.media, answer.media, strict=True)
        ):
            stream = self._slots[index]
            if index in accepted and stream is not None:
                rewritten = _rewritten_media(
                    answer,
                    answered,
                    _side(stream, offerer),
                    rtcp_mux=_rtcp_mux(offered),  # RFC 5761 §5.1.1: we can always mux
                )
                if added is not None and added[0] == index:
                    # The offerer never offered telephone-event: it may not be answered to it
                    # (RFC 3264 §6.1); its digits travel as INFO.
                    rewritten = _without_telephone_event(rewritten)
                # In the offerer's numbers, which an answer reuses (§6.1): the answerer's
                # leg may number a codec otherwise (our re-offer kept its numbers, §8.3.2).
                if index not in alike:
                    offered_own = exchange.offer.media[index]
                    rewritten = _in_numbers_of(offered_own, answered, rewritten)
                if added_law is not None and added_law.index == index:
                    # The law we added is not the offerer's (RFC 3264 §6.1): its own instead.
                    rewritten = answer_in_offerers_law(
                        added_law, transcoding is not None, rewritten
                    )
                if plan is not None and plan.index == index:
                    rewritten = _dtmf_answer(plan, offerer, offered, rewritten)
                media_out.append(rewritten)
            else:
                media_out.append(rejected_media(offered))
        # All or nothing: everything above only reads; the relay and the session change from
        # here, once nothing can raise (an answer refused half way, a fork's 183 whose second
        # line cannot be relayed, leaves the early media of before as it was).
        for index, stream in enumerate(self._slots):
            if stream is None:
                continue
            if index in accepted:
                # The answer settles what the line carries: RTP, or T.38 datagrams.
                self._set_opaque(index, is_udptl_t38(exchange.sent_offer.media[index]))
                self._set_remote(index, answerer, accepted[index])
                self._set_remote(index, offerer, exchange.offerer_remotes[index])
            else:
                self._set_remote(index, answerer, _NO_REMOTE)
                self._set_remote(index, offerer, _NO_REMOTE)
        for (index, direction), (table, red) in renumbering.items():
            self._set_renumbered(index, direction, table, red)
        self._set_dtmf(plan, relayed_until_now=self._events_relayed(plan))
        own = numbering or answer
        forward = "a_to_b" if offerer == "a" else "b_to_a"
        backward = "b_to_a" if offerer == "a" else "a_to_b"
        for index in self._dtmf_lines:
            # The answerer takes what its own SDP lists (in its numbers); the offerer what our
            # answer to it keeps, in the offerer's numbers (RFC 3264 §6.1).
            relayed_line = index in accepted and index < len(own.media)
            answerer_line = own.media[index] if relayed_line else None
            offerer_line = media_out[index] if relayed_line else None
            self._tell_receiver_event(index, forward, _telephone_event_in_force(answerer_line))
            self._tell_receiver_event(index, backward, _telephone_event_in_force(offerer_line))
        self._set_transcoding(transcoding)
        # RFC 3264 §6: the answer's t= line is the offer's.
        # As many m= lines as the offer its peer sent (RFC 3264 §6): the call's lines beyond
        # them went to the answerer at port 0 (_padded), and are rejected in its answer.
        del media_out[exchange.offered_lines :]
        sent = self._send(
            offerer,
            answer,
            media_out,
            times=exchange.offer.times,
            after=exchange.offerer_dialog_sent,
        )
        exchange.offerer_dialog_sent = None  # sent: the next answer goes on from this one
        exchange.answer = answer
        exchange.answer_own = numbering or answer
        return sent

    async def final_counters(self) -> None:
        """Bring the counters of the call's open streams up to date before its record and
        metrics read them (:meth:`gateway.core.media.relay_api.Relay.final_counters`): at once
        in process; a media worker pushes its counters about once a second, and is asked for
        them now (a round trip). At most :data:`FINAL_COUNTERS_WAIT` seconds: a worker that is
        stuck or gone leaves the last counters it pushed, and :attr:`counters_partial` set
        (``statistics()`` says ``counters_partial``). Shielded from cancellation (a shutdown
        still gets the counters of its calls' ends), hence the bound. In process it returns
        at once, without a checkpoint or a cancel scope (a call's end is a hot path)."""
        if self._closed or not self._relay.counters_pushed:
            return
        complete = False
        with trio.CancelScope(deadline=trio.current_time() + FINAL_COUNTERS_WAIT, shield=True):
            complete = await self._relay.final_counters()
        if not complete:
            self.counters_partial = True
            missing = self._relay.counters_missing
            self.counters_partial_why = _counters_partial_why(missing)
            self.counters_partial_at_stop = bool(missing) and all(
                why == COUNTERS_POOL_STOPPED for why in missing.values()
            )

    async def applied(self) -> None:
        """Return once the relay applies every change made so far (the latest answer's remote
        addresses, transcoding, renumbering; the keys set since) to the next packet that
        arrives (:meth:`gateway.core.media.relay_api.Relay.applied`): at once in process, a
        round trip to a media worker. Await it before letting a peer send."""
        await self._relay.applied()

    def settle(self) -> None:
        """End the exchange in progress: its latest answer is final (the 2xx, or the ACK that
        carried it). Closes the streams that answer left at port 0. Nothing in progress: no-op.

        Raises :class:`LocalMediaError` when the offer has no answer yet (see
        :meth:`abandon_offer`).
        """
        exchange = self._exchange
        if exchange is None:
            return
        if exchange.answer is None:
            raise LocalMediaError("the offer has no answer yet; abandon_offer() it instead")
        for index, (offered, answered) in enumerate(
            zip(exchange.sent_offer.media, exchange.answer.media, strict=True)
        ):
            if offered.is_rejected or answered.is_rejected:
                self._close_slot(index)
        self._received[exchange.offerer] = exchange.offer
        if exchange.answer_own is not None:
            self._received[_other(exchange.offerer)] = exchange.answer_own
        self._dialog_lines[exchange.offerer] = exchange.offered_lines
        # The answerer's own SDP: a picker's is its INVITE's offer (answer_from's
        # ``numbering``), whose lines may be fewer than the call's (a phone without video).
        answerers_own = exchange.answer_own or exchange.answer
        self._dialog_lines[_other(exchange.offerer)] = len(answerers_own.media)
        self._exchange = None

    def abandon_offer(self) -> None:
        """The offer in progress failed (an error response, a timeout): close the streams it
        opened and restore every remote address of before it, so media goes on as before the
        offer. Nothing in progress: no-op.

        The SDP we sent stays sent: the next one on that leg still gets a higher o= version.
        """
        exchange = self._exchange
        if exchange is None:
            return
        self._exchange = None
        for index in exchange.opened:
            self._close_slot(index)
        del self._slots[exchange.slot_count_before :]
        for index, stream in enumerate(self._slots):
            if stream is not None:
                self._set_opaque(index, exchange.opaque_before.get(index, False))
                for name in ("a_to_b", "b_to_a"):
                    before, red = exchange.renumbered_before.get((index, name), ({}, ()))
                    self._set_renumbered(index, name, before, red)
        self._set_dtmf(exchange.dtmf_before)
        for index, direction in list(self._receiver_events):
            told = exchange.receiver_events_before.get((index, direction))
            self._tell_receiver_event(index, direction, told)
        self._set_transcoding(exchange.transcoding_before)
        for index, stream in enumerate(self._slots):
            if stream is not None:
                for side in _SIDES:
                    self._set_remote(
                        index, side, exchange.remotes_before.get((index, side), _NO_REMOTE)
                    )

    def withdraw_offer(self) -> None:
        """The offer in progress was never sent to the answerer (that leg's security refused
        it, or the leg cannot be reached): abandoned as by :meth:`abandon_offer`, and the SDP
        sent there before it is the last one sent again, so the next SDP on that leg has the
        version after it (RFC 3264 §8: one more than the previous SDP sent; a skipped version
        tells the peer of a change it never saw) and keeps its payload numbers (§8.3.2).
        Nothing in progress: no-op."""
        exchange = self._exchange
        if exchange is None:
            return
        self.abandon_offer()
        answerer = _other(exchange.offerer)
        if exchange.answer is not None or self._sent.get(answerer) is not exchange.sent_offer:
            return  # answered: it was sent after all
        if exchange.sent_before is None:
            del self._sent[answerer]
        else:
            self._sent[answerer] = exchange.sent_before

    def close(self) -> None:
        """Close every stream of the call (releasing its ports). Closing twice is harmless."""
        if self._closed:
            return
        self._closed = True
        self._exchange = None
        for index in range(len(self._slots)):
            self._close_slot(index, final_counters_later=False)
        if self.quality is not None:
            self.quality.listeners = ()  # they may hold the call: no cycle left behind
        # The call's DTMF handlers are its bound methods, and the call holds this session:
        # kept, they made every ended call (~180 objects: legs, dialogs, requests, SDPs, this
        # session, its task and nursery) cyclic garbage that only the collector could free.
        self.on_dtmf_digit = None
        self.on_dtmf_timer = None
        self._relay.session_closed()  # a worker pool's CallRelay holds the call's on_lost

    # -- helpers -------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise LocalMediaError("the media session is closed")

    def _t38_refusal(self, media: MediaDescription) -> str | None:
        """Why a T.38 UDPTL line cannot be relayed here, or None when it can."""
        if not self._relay.carries_opaque:
            return "the media relay has no opaque (T.38 datagram) mode"
        problem = t38_problem_untrusted(media)
        return None if problem is None else f"malformed T.38 attributes: {problem}"

    def _set_opaque(self, index: int, opaque: bool) -> None:
        """Put stream ``index`` in T.38 datagram mode (``opaque``) or RTP mode."""
        stream = self._slots[index]
        if stream is None or stream.opaque == opaque:
            return
        stream.set_opaque(opaque)
        self._faxed = self._faxed or opaque

    def _remote_of(
        self, sd: SessionDescription, media: MediaDescription, index: int, *, rtcp_mux: bool
    ) -> _Remote:
        """The relay's view of where a peer receives one stream (RFC 8866 §5.7, RFC 3605)."""
        where = f"m= line {index + 1}"
        connection = sd.effective_connection(media)
        if connection is None:
            raise SdpError(f"{where}: no c= line (RFC 8866 §5.7)")
        host = self._ip_literal(connection, where)
        if host is None:  # RFC 3264 §8.4: c=0.0.0.0, send nothing there
            return _Remote(rtcp_mux=rtcp_mux)
        if is_udptl_t38(media):  # T.38 Annex D: one port, no RTCP
            return _Remote((host, media.port))
        rtcp = None
        attribute = media.rtcp  # raises SdpError when malformed
        if attribute is not None and not rtcp_mux:
            rtcp_host: str | None = host
            if attribute.connection is not None:
                rtcp_host = self._ip_literal(attribute.connection, f"{where} a=rtcp")
            if attribute.port == 0:
                raise SdpError(f"{where}: a=rtcp port 0")
            if rtcp_host is not None:  # an unspecified RTCP address: RTP port + 1 it is
                rtcp = (rtcp_host, attribute.port)
        return _Remote((host, media.port), rtcp, rtcp_mux)

    def _ip_literal(self, connection: Connection, where: str) -> str | None:
        """The address as the relay needs it: an IP literal of its family; None when the
        address is the unspecified one (hold)."""
        if connection.nettype.upper() != "IN" or connection.addrtype.upper() not in ("IP4", "IP6"):
            raise SdpError(f"{where}: not an Internet address (RFC 8866 §5.7)")
        try:
            ip = ip_facts(connection.address)
        except ValueError:
            # RFC 8866 allows a host name; the relay resolves nothing per packet or per call.
            raise SdpError(f"{where}: media address is not an IP address") from None
        if ip.unspecified:
            return None
        if ip.version != self._ip_version:
            raise SdpError(
                f"{where}: IPv{ip.version} media address, the relay serves IPv{self._ip_version}"
            )
        if ip.multicast:
            raise SdpError(f"{where}: multicast media address")
        return ip.text

    def _open_streams(self, count: int, relayed: dict[int, _Remote]) -> tuple[int, ...]:
        """Grow the slots to ``count`` m= lines and open a stream for each relayed line that has
        none. All or nothing: on an error the streams opened here are closed again."""
        before = len(self._slots)
        self._slots.extend([None] * (count - before))
        opened: list[int] = []
        try:
            for index in sorted(relayed):
                if self._slots[index] is None:
                    self._slots[index] = self._relay.open_stream()
                    opened.append(index)
        except BaseException:
            for index in opened:
                stream = self._slots[index]
                self._slots[index] = None
                if stream is not None:
                    stream.close()
            del self._slots[before:]
            raise
        return tuple(opened)

    def rtcp_addresses(
        self, index: int, side: Side
    ) -> tuple[tuple[str, int], tuple[str, int]] | None:
        """Where ``side``'s leg sends stream ``index``'s RTCP from and to, as its SDP and ours
        say (RFC 3605 a=rtcp, else RTP port + 1; RFC 5761 rtcp-mux: the RTP ports); None when
        not known. For captures (HEP), not for sending."""
        remote = self._remotes.get((index, side))
        stream = self.stream_at(index)
        if remote is None or remote.rtp is None or stream is None:
            return None
        ports = _side(stream, side).ports
        if remote.rtcp_mux:
            return remote.rtp, (self._media_address, ports.rtp_port)
        source = remote.rtcp or (remote.rtp[0], remote.rtp[1] + 1)
        return source, (self._media_address, ports.rtcp_port)

    def _observe_rtcp(
        self,
        quality: CallQuality,
        offer: SessionDescription,
        relayed: dict[int, _Remote],
        opened: tuple[int, ...],
    ) -> None:
        """Feed the RTCP of the streams just opened to ``quality``; tell it each relayed line's
        codecs (for the clock rate of its jitter)."""
        for index in relayed:
            quality.set_media(index, offer.media[index])
        for index in opened:
            stream = self._slots[index]
            if stream is not None:
                stream.a_to_b.rtcp_observer = quality.observer("a", index)
                stream.b_to_a.rtcp_observer = quality.observer("b", index)

    def _renumbering(
        self,
        offer: SessionDescription,
        offerer: Side,
        answer: SessionDescription,
        accepted: dict[int, _Remote],
        alike: set[int],
        transcoding: TranscodingPlan | None = None,
    ) -> tuple[TranscodingPlan | None, dict[tuple[int, str], _Renumbering]]:
        """Each accepted RTP stream's payload type renumbering, by (m= line, direction), from
        the offerer's own SDP and the answerer's (RFC 3264 §5.1: a peer receives, and prefers
        to send, a codec with the number its own SDP gives it). Passing one leg's SDP to the
        other, as every plain call does, leaves nothing to renumber: the streams in ``alike``
        (``numbered_alike``).

        ``transcoding``: the G.711 transcoding the answer makes; its stream's renumbering is
        made to agree with it (:func:`through_renumbering`). Returns it as the relay must run
        it, or None when the two cannot agree (logged: the stream is not transcoded), with the
        renumbering. Changes nothing (``answer_from`` sets it once nothing can raise)."""
        forward = "a_to_b" if offerer == "a" else "b_to_a"
        backward = "b_to_a" if offerer == "a" else "a_to_b"
        found: dict[tuple[int, str], _Renumbering] = {}
        for index in accepted:
            offered = offer.media[index]
            answered = answer.media[index] if index < len(answer.media) else None
            there: dict[int, int] = {}
            back: dict[int, int] = {}
            there_red: tuple[int, ...] = ()
            back_red: tuple[int, ...] = ()
            if answered is not None and index not in alike:
                # validate_answer has read every a=rtpmap of both: no SdpError from here.
                there = payload_type_map(offered, answered)
                back = payload_type_map(answered, offered)
                # RFC 2198 RED names a payload type per block inside the packet: where a
                # direction renumbers, the relay must know the sender's RED numbers too.
                there_red = red_payload_types(offered) if there else ()
                back_red = red_payload_types(answered) if back else ()
            if transcoding is not None and transcoding.index == index:
                tables = {forward: (there, there_red), backward: (back, back_red)}
                agreed = _transcoding_renumbered(transcoding, tables)
                if isinstance(agreed, str):
                    self._not_transcoded(index, agreed)
                    transcoding = None
                else:
                    transcoding, there, back = agreed[0], agreed[1][forward], agreed[1][backward]
            found[(index, forward)] = (there, there_red)
            found[(index, backward)] = (back, back_red)
        return transcoding, found

    def _set_renumbered(
        self, index: int, direction: str, renumbered: dict[int, int], red: tuple[int, ...] = ()
    ) -> None:
        """Give stream ``index``'s ``direction`` this renumbering and these RED payload types
        of its sender, if they are not its own yet."""
        key = (index, direction)
        if self._renumbered.get(key, ({}, ())) == (renumbered, red):
            return
        stream = self._slots[index]
        if stream is None:
            return
        control = stream.a_to_b if direction == "a_to_b" else stream.b_to_a
        previous_red = self._renumbered.get(key, ({}, ()))[1]
        control.payload_types = renumbered
        if red != previous_red:
            control.red_payload_types = red
        if renumbered:
            self._renumbered[key] = (renumbered, red)
            log.info(
                "m= line %d %s: payload types renumbered %s%s",
                index + 1,
                direction,
                renumbered,
                f" (RED {list(red)} blocks too)" if red else "",
            )
        else:
            self._renumbered.pop(key, None)

    # -- G.711 transcoding ---------------------------------------------------------------------

    def _add_other_law(
        self,
        offer: SessionDescription,
        relayed: Mapping[int, object],
        previous: SessionDescription | None,
        media_out: list[MediaDescription],
    ) -> AddedLaw | None:
        """Add the other G.711 law to our offer's first audio line (in ``media_out``) when the
        offerer's line has one law only (:func:`with_other_law`); what was added, or None."""
        index = _first_audio(offer, relayed)
        if index is None:
            return None
        last = None
        if previous is not None and index < len(previous.media):
            last = previous.media[index]
        added = with_other_law(index, offer.media[index], media_out[index], last)
        if added is None:
            return None
        media_out[index], law = added
        log.info(
            "m= line %d: %s %d offered for transcoding from %s",
            index + 1,
            law.offerer_law.other.value,
            law.payload_type,
            law.offerer_law.value,
        )
        return law

    def _not_transcoded(self, index: int, why: str) -> None:
        """Log once per call (WARNING) that line ``index`` is not transcoded, and why: the
        answer goes on as without transcoding rather than with misnumbered packets."""
        if self._clash_warned:
            log.info("m= line %d: not transcoded: %s", index + 1, why)
            return
        self._clash_warned = True
        log.warning(
            "m= line %d: G.711 not transcoded, payload type numbers clash: %s", index + 1, why
        )

    def _set_transcoding(self, plan: TranscodingPlan | None) -> None:
        """Give the streams ``plan``'s transcoding (None: none), if it is not theirs yet."""
        old = self.transcoding
        if plan == old:
            return
        if old is not None:
            stream = self._slots[old.index] if old.index < len(self._slots) else None
            if stream is not None:
                stream.a_to_b.transcoding = None
                stream.b_to_a.transcoding = None
        self.transcoding = plan
        if plan is None:
            return
        stream = self._slots[plan.index]
        if stream is None:
            self.transcoding = None
            return
        self._transcoded_lines.add(plan.index)
        self._transcoded_last = plan
        stream.a_to_b.transcoding = plan.a_to_b
        stream.b_to_a.transcoding = plan.b_to_a
        log.info("m= line %d: %s", plan.index + 1, plan.describe())

    def transcoding_record(self) -> dict[str, object] | None:
        """For the call record and ``voipgw calls``: the stream transcoded last (``line``,
        from 1, and ``described``, e.g. ``PCMU <-> PCMA transcoded``), whether it still is
        (``now``), and the packets transcoded each way by the call so far; None when the call
        never transcoded."""
        plan = self._transcoded_last
        if plan is None:
            return None
        counts = self._transcoded_counts()
        return {
            "line": plan.index + 1,
            "described": plan.describe(),
            "now": self.transcoding is not None,
            "a_to_b_packets": counts["a_to_b"],
            "b_to_a_packets": counts["b_to_a"],
        }

    def _transcoded_counts(self) -> dict[str, int]:
        """RTP packets transcoded each way by the call so far, closed streams included."""
        counts = dict(self._transcoded_closed)
        for index in self._transcoded_lines:
            stream = self.stream_at(index)
            if stream is not None:
                counts["a_to_b"] += stream.a_to_b.statistics().transcoded_packets
                counts["b_to_a"] += stream.b_to_a.statistics().transcoded_packets
        return counts

    # -- DTMF interworking ---------------------------------------------------------------------

    def _plan_dtmf(
        self,
        exchange: _Exchange,
        answer: SessionDescription,
        accepted: dict[int, _Remote],
    ) -> DtmfPlan | None:
        """The interworking the answer makes, on the first accepted audio line: the offerer
        with telephone-event and the answerer without (an answerer cannot have it unless it
        was offered, RFC 3264 §6.1); or the offerer without, declared to do INFO, and the
        answerer accepting the telephone-event we added for it (``exchange.added_event``)."""
        if not self._interworks_dtmf:
            return None
        offer, offerer = exchange.offer, exchange.offerer
        index = _first_audio(offer, accepted)
        if index is None or index >= len(answer.media):
            return None
        offered = telephone_event(offer.media[index])
        if offered is None:
            added = exchange.added_event
            if added is None or added[0] != index:
                return None  # neither has it: relayed as ever
            answered = telephone_event(answer.media[index])
            if answered is None:
                return None  # declined: nothing changes
            # The answerer sends and receives events with its own SDP's number (§5.1).
            red = red_payload_types(answer.media[index])
            return DtmfPlan(index, _other(offerer), offerer, *answered, red)
        if telephone_event(answer.media[index]) is not None:
            return None  # both: relayed as ever
        # The offerer may send RED only if the answer it gets keeps RED (RFC 3264 §6.1), with
        # its own numbers (our answer to it keeps them, "Payload type numbers").
        red = red_payload_types(offer.media[index])
        red = red if red_payload_types(answer.media[index]) else ()
        return DtmfPlan(index, offerer, _other(offerer), *offered, red)

    def _add_telephone_event(
        self,
        offer: SessionDescription,
        relayed: Mapping[int, object],
        previous: SessionDescription | None,
        media_out: list[MediaDescription],
    ) -> tuple[int, int] | None:
        """Add telephone-event to our offer's first audio line (in ``media_out``) for an
        offerer declared to do DTMF by INFO whose offer has none; (m= line, payload type), or
        None when nothing was added (it has one, no audio line, no free number)."""
        index = _first_audio(offer, relayed)
        if index is None or telephone_event(offer.media[index]) is not None:
            return None
        last = None
        if previous is not None and index < len(previous.media):
            last = previous.media[index]
        media = with_telephone_event(media_out[index], last)
        if media is None:
            log.info("m= line %d: no free payload type for telephone-event", index + 1)
            return None
        media_out[index] = media
        payload_type = int(media.formats[-1])
        log.info(
            "m= line %d: telephone-event %d offered for a leg that does DTMF by SIP INFO",
            index + 1,
            payload_type,
        )
        return index, payload_type

    def _events_relayed(self, plan: DtmfPlan | None) -> bool:
        """Whether ``plan`` (new: no plan is in force) begins where both legs' SDP in force
        had telephone-event on its line, so the RFC 4733 leg's events went to the other as
        they came until now (a re-INVITE whose answer leaves it out)."""
        if plan is None or self.dtmf is not None:
            return False
        for side in ("a", "b"):
            sdp = self._received.get(side)
            if sdp is None or plan.index >= len(sdp.media):
                return False
            if telephone_event(sdp.media[plan.index]) is None:
                return False
        return True

    def _set_dtmf(self, plan: DtmfPlan | None, *, relayed_until_now: bool = False) -> None:
        """Give the streams ``plan``'s interworking (None: none), if it is not theirs yet.
        A plan replaced on the same m= line (the 200 after early media with other numbers or
        the other way round, a re-INVITE) continues each direction's sequence numbering
        (:meth:`DtmfInterworking.carry_on_from`): the receivers hear one stream; so does a
        plan removed (the offset stays, RFC 3711 §3.3.2). What is in progress is finished
        first (RFC 4733 §2.5.1.4, §2.5.2): an event the old plan was reading is reported
        once with the duration known (to :attr:`on_dtmf_digit`, while :attr:`dtmf` is still
        the old plan), an event it was injecting is ended by the relay with end packets.
        ``relayed_until_now``: the RFC 4733 leg's events reached the other leg as they came
        until this plan (``DtmfInterworking.relayed_until_now``)."""
        old = self.dtmf
        if plan == old:
            return
        detector, handler = self._dtmf_detector, self.on_dtmf_digit
        if old is not None and detector is not None:
            for digit in detector.end_unfinished():
                log.info(
                    "m= line %d: DTMF event %s from leg %s ended as its interworking changed",
                    old.index + 1,
                    self._logged_digit(digit),
                    old.rfc4733_side,
                )
                if handler is not None:
                    handler(old.rfc4733_side, digit)
        if old is not None and (plan is None or plan.index != old.index):
            stream = self._slots[old.index] if old.index < len(self._slots) else None
            if stream is not None:
                stream.a_to_b.dtmf = None
                stream.b_to_a.dtmf = None
        if old is not None and (
            plan is None or (plan.index, plan.rfc4733_side) != (old.index, old.rfc4733_side)
        ):
            log.info(
                "m= line %d: DTMF interworking ended, leg %s RFC 4733 (payload type %d/%d), "
                "leg %s SIP INFO",
                old.index + 1,
                old.rfc4733_side,
                old.payload_type,
                old.clock_rate,
                old.info_side,
            )
        self.dtmf = plan
        self._dtmf_detector = None
        if plan is None:
            return
        stream = self._slots[plan.index]
        if stream is None:
            self.dtmf = None
            return
        self._dtmf_lines.add(plan.index)
        fresh = EventDetector(plan.clock_rate)
        if detector is not None and old is not None and old.rfc4733_side == plan.rfc4733_side:
            fresh.follow(detector)  # the same sender: what ended stays ended
        detector = self._dtmf_detector = fresh
        rfc4733 = plan.rfc4733_side
        clock = self._clock

        def on_event(packet: bytes) -> None:
            handler = self.on_dtmf_digit
            if clock is None:
                digits = detector.feed(packet)
            else:
                idle = detector.get_timer() is None
                digits = detector.feed(packet, now=clock())
                if idle and detector.get_timer() is not None and self.on_dtmf_timer is not None:
                    self.on_dtmf_timer()  # an event began: its end may have to be timed out
            for digit in digits:
                if handler is not None:
                    handler(rfc4733, digit)

        from_x, to_x = (
            (stream.a_to_b, stream.b_to_a) if rfc4733 == "a" else (stream.b_to_a, stream.a_to_b)
        )
        from_x.dtmf = DtmfInterworking(
            take_payload_type=plan.payload_type,
            on_event=on_event,
            red_payload_types=plan.red,
            relayed_until_now=relayed_until_now,
        )
        to_x.dtmf = DtmfInterworking(
            inject_payload_type=plan.payload_type,
            inject_clock_rate=plan.clock_rate,
            ssrc=_random_ssrc(),
        )
        log.info(
            "m= line %d: DTMF interworking, leg %s RFC 4733 (payload type %d/%d), leg %s SIP INFO",
            plan.index + 1,
            rfc4733,
            plan.payload_type,
            plan.clock_rate,
            plan.info_side,
        )

    def _padded(self, offer: SessionDescription, answerer: Side) -> SessionDescription:
        """``offer`` from a new dialog's peer with the m= lines beyond its own that the last
        SDP sent to ``answerer`` has, at port 0 (RFC 3264 §8: that dialog's offers keep every
        line; §8.2: a stream removed keeps its m= line, with its media type). The call's lines
        beyond both are closed streams of dialogs that are gone (both parties transferred to
        phones with fewer lines): left out. Raises :class:`SdpError` when one of those is
        still open (never for a call's own legs)."""
        last = self._sent.get(answerer)
        sent = last.media if last is not None else ()
        count = min(len(self._slots), max(len(sent), len(offer.media)))
        if any(stream is not None for stream in self._slots[count:]):
            raise SdpError(
                f"offer has {len(offer.media)} m= lines, the session has "
                f"{len(self._slots)} (RFC 3264 §8)"
            )
        removed = tuple(rejected_media(media) for media in sent[len(offer.media) : count])
        return attrs.evolve(offer, media=offer.media + removed)

    def _tell_receiver_event(
        self, index: int, direction: str, event: tuple[int, int] | None
    ) -> None:
        """Tell stream ``index``'s ``direction`` the receiving leg's telephone-event in force
        (``RelayDirection.receiver_telephone_event``; None: not told), if it is not what it
        was told already: the delayed end copies of an event a change ended (RFC 4733
        §2.5.1.4) take its number, or are dropped when the receiver takes none any more (a
        change that ended the interworking, or moved the line to T.38)."""
        key = (index, direction)
        if self._receiver_events.get(key) == event:
            return
        stream = self._slots[index] if index < len(self._slots) else None
        if stream is None:
            return
        control = stream.a_to_b if direction == "a_to_b" else stream.b_to_a
        control.receiver_telephone_event = event
        if event is None:
            self._receiver_events.pop(key, None)
        else:
            self._receiver_events[key] = event

    def _logged_digit(self, digit: Digit) -> str:
        """What a log line says for ``digit``: :data:`DIGIT_WITHHELD` unless the operator
        asked for digits in the log (``[gateway] log_dtmf_digits``)."""
        return digit.digit if self._log_dtmf_digits else DIGIT_WITHHELD

    def dtmf_timer(self) -> float | None:
        """When an RFC 4733 event of :attr:`dtmf` that has not ended times out (none of its
        end packets came, RFC 4733 §2.5.2.2: :meth:`dtmf_timeout` then); None: nothing to
        time."""
        detector = self._dtmf_detector
        return None if detector is None else detector.get_timer()

    def dtmf_timeout(self, now: float) -> None:
        """End an event whose timer is due: its digit goes to :attr:`on_dtmf_digit` as if
        its end packet had come (once; its late packets are ignored)."""
        detector, plan = self._dtmf_detector, self.dtmf
        if detector is None or plan is None:
            return
        digits = detector.handle_timer(now=now)
        handler = self.on_dtmf_digit
        for digit in digits:
            self.dtmf_timeouts += 1
            log.info(
                "m= line %d: DTMF event %s from leg %s ended by timeout (end packets lost)",
                plan.index + 1,
                self._logged_digit(digit),
                plan.rfc4733_side,
            )
            if handler is not None:
                handler(plan.rfc4733_side, digit)

    def send_dtmf_event(self, payload: bytes, *, marker: bool, start: bool) -> bool:
        """Send one RFC 4733 event packet towards the RFC 4733 leg of :attr:`dtmf` (a digit
        the other leg sent as SIP INFO); False when it could not go (no interworking, no keys
        or address yet). :meth:`RelayStream.send_telephone_event`."""
        plan = self.dtmf
        if plan is None or self._closed:
            return False
        stream = self._slots[plan.index]
        if stream is None:
            return False
        direction = "b_to_a" if plan.rfc4733_side == "a" else "a_to_b"
        return stream.send_telephone_event(direction, payload, marker=marker, start=start)

    def play_ringback(self, side: str, plan: str) -> str | None:
        """Play the ringing tone ``plan`` (:data:`gateway.core.media.tones.RINGBACK_PLANS`) to
        leg ``side`` in place of the other leg's media, on its first audio line (a transferee
        while the target rings: docs/transfers.md "Media"); None when it plays, else why not,
        for the log. It goes in the first of PCMU, PCMA, G722, G729 (where bcg729 is installed)
        and opus (where libopus is) the leg's SDP in force lists,
        with its number (RFC 3264 §5.1: the numbers a party writes are those it receives), and
        only where that SDP and ours let the leg receive (sendrecv or recvonly on its side, RFC
        3264 §6.1: a held party that said inactive must get no media). One tone at a time:
        another replaces it."""
        to = _check_side(side)
        self.stop_tone()
        if self._closed:
            return "the call's media is closed"
        choice = self._ringback_choice(to)
        if isinstance(choice, str):
            return choice
        index, codec, payload_type = choice
        stream = self.stream_at(index)
        direction = "b_to_a" if to == "a" else "a_to_b"
        if stream is None or not stream.play_tone(direction, Tone(plan, codec, payload_type)):
            return "the relay cannot play it"
        self._ringback = (to, plan, choice)
        return None

    def _ringback_choice(self, to: Side) -> tuple[int, ToneCodec, int] | str:
        """Where and how a ringing tone to leg ``to`` plays as the SDP in force with it says
        (:meth:`play_ringback`): its m= line, codec and payload type; else why it cannot."""
        theirs, ours = self._received.get(to), self._sent.get(to)
        if theirs is None or ours is None:
            return "no SDP in force with that leg"
        for index, media in enumerate(theirs.media):
            if media.media.lower() != "audio" or media.port == 0 or not media.is_rtp:
                continue
            stream = self.stream_at(index)
            if stream is None or stream.opaque or index >= len(ours.media):
                continue
            if theirs.effective_direction(media) not in _RECEIVING:
                return f"its SDP says {theirs.effective_direction(media).value}"
            if ours.effective_direction(ours.media[index]) not in _SENDING:
                return f"our SDP to it says {ours.effective_direction(ours.media[index]).value}"
            codecs = tone_codecs(media)
            if not codecs and amr_not_taken(media):
                return (
                    "it takes none of " + tone_codec_names() + " (its AMR asks for CRCs, robust"
                    " sorting, interleaving or a mode-set without the tone's mode, RFC 4867 §8.1)"
                )
            if not codecs:
                return "it takes none of " + tone_codec_names()
            codec, payload_type = next(iter(codecs.items()))
            return index, codec, payload_type
        return "no audio line to play it on"

    def replan_ringback(self) -> tuple[bool, str | None]:
        """An exchange settled while a ringing tone plays (:meth:`play_ringback`): the SDP in
        force with its leg may say otherwise now (a hold that says inactive, another law or
        number, RFC 3264 §8). (changed, why not): (False, None) when it plays on as it was, or
        none plays; (True, None) when it plays again as that SDP says (a new RTP stream); (True,
        why) when it stopped, the other leg's media relayed to that leg again."""
        if self._ringback is None:
            return False, None
        to, plan, choice = self._ringback
        if self._ringback_choice(to) == choice:
            return False, None
        return True, self.play_ringback(to, plan)

    def stop_tone(self) -> bool:
        """Stop the tone :meth:`play_ringback` started, if any: the other leg's media is
        relayed to that leg again. True when one was playing."""
        ringback, self._ringback = self._ringback, None
        if ringback is None:
            return False
        to, _, (index, _, _) = ringback
        direction = "b_to_a" if to == "a" else "a_to_b"
        stream = self.stream_at(index)
        if stream is not None and not stream.closed:
            stream.play_tone(direction, None)
        return True

    @property
    def playing_tone(self) -> bool:
        """Whether a tone plays (:meth:`play_ringback`)."""
        return self._ringback is not None

    def dtmf_statistics(self) -> dict[str, int]:
        """The event packets of every DTMF interworking the call had (:data:`DTMF_COUNTS`),
        both directions, closed streams included: taken for SIP INFO, injected from it (end
        copies included), end packets sent when a change cut an injected event short, and
        packets of an event begun before the interworking relayed on to its end. Read from
        the relay's counters (``DirectionStatistics.dtmf_*``; a media worker's as it last
        pushed them, at most about a second old); empty for a call that never interworked."""
        if not self._dtmf_lines and not any(self._dtmf_closed.values()):
            return {}
        counts = dict(self._dtmf_closed)
        for index in self._dtmf_lines:
            stream = self.stream_at(index)
            if stream is not None:
                for name, count in _dtmf_counts(stream).items():
                    counts[name] += count
        return counts

    def _set_remote(self, index: int, side: Side, remote: _Remote) -> None:
        stream = self._slots[index]
        assert stream is not None
        remote.apply(_side(stream, side))
        self._remotes[(index, side)] = remote

    def _close_slot(self, index: int, *, final_counters_later: bool = True) -> None:
        """Close stream ``index``, its counters added to the call's (:class:`_Totals`).
        ``final_counters_later``: a media worker sends the stream's last counters as it
        closes it, which then replace those added now (a stream a re-INVITE removed: else
        the call's totals missed up to its last second, the worker's push interval); False
        at the call's end, whose counters were asked for first (:meth:`final_counters`)."""
        stream = self._slots[index]
        if stream is None:
            return
        self._slots[index] = None
        for side in _SIDES:
            self._remotes.pop((index, side), None)
        self._renumbered.pop((index, "a_to_b"), None)
        self._renumbered.pop((index, "b_to_a"), None)
        if self.dtmf is not None and self.dtmf.index == index:
            self.dtmf = self._dtmf_detector = None
        self._receiver_events.pop((index, "a_to_b"), None)
        self._receiver_events.pop((index, "b_to_a"), None)
        dtmf, transcoded = index in self._dtmf_lines, index in self._transcoded_lines
        self._dtmf_lines.discard(index)
        self._transcoded_lines.discard(index)
        if self.transcoding is not None and self.transcoding.index == index:
            self.transcoding = None
        faxed = self._faxed
        counts = _ClosedCounts.of(stream, faxed=faxed, dtmf=dtmf, transcoded=transcoded)
        self._add_closed(counts, 1)
        if not final_counters_later or not self._relay.counters_pushed:
            stream.close()  # in process: final now
            return

        def final_counters() -> None:
            # A media worker's last counters of the stream (up to a second newer than those
            # added above): they replace them.
            final = _ClosedCounts.of(stream, faxed=faxed, dtmf=dtmf, transcoded=transcoded)
            self._add_closed(counts, -1)
            self._add_closed(final, 1)

        stream.close(on_final_counters=final_counters)

    def _add_closed(self, counts: _ClosedCounts, sign: int) -> None:
        """Add (``sign`` 1) or take back (-1) a closed stream's counters to the call's."""
        totals = self._totals
        for name, (packets, octets, dropped) in counts.totals:
            totals.packets[name] += sign * packets
            totals.bytes[name] += sign * octets
            totals.dropped[name] += sign * dropped
        for name, reasons in counts.dropped_by_reason:
            found = totals.dropped_by_reason[name]
            for i, count in enumerate(reasons):
                found[i] += sign * count
        if counts.udptl is not None:
            if totals.udptl is None:
                totals.udptl = dict.fromkeys(_UDPTL_KEYS, 0)
            for key, count in counts.udptl.items():
                totals.udptl[key] += sign * count
        for key, count in counts.dtmf:
            self._dtmf_closed[key] += sign * count
        for name, count in counts.transcoded:
            self._transcoded_closed[name] += sign * count
        activity = counts.last_activity
        if totals.last_activity is None or activity > totals.last_activity:
            totals.last_activity = activity

    def _send(
        self,
        side: Side,
        source: SessionDescription,
        media: list[MediaDescription],
        *,
        times: tuple[TimeDescription, ...],
        after: SessionDescription | None = None,
    ) -> SessionDescription:
        """Our SDP for ``side``'s leg, built from ``source``'s session level, with our o= line
        and the version rule of RFC 3264 §8; recorded as the last SDP sent on that leg.
        ``after``: what we last sent in that leg's dialog, when not the SDP last sent on
        ``side`` (a dialog this call took over)."""
        previous = after if after is not None else self._sent.get(side)
        if previous is None:
            session_id = self._session_id_source()
            origin = Origin(
                username=ORIGIN_USERNAME,
                session_id=session_id,
                session_version=session_id,
                nettype=self._connection.nettype,
                addrtype=self._connection.addrtype,
                address=self._media_address,
            )
        else:
            origin = previous.origin
        new = SessionDescription(
            origin=origin,
            session_name=SESSION_NAME,
            connection=self._connection,
            bandwidths=source.bandwidths,
            # r= and z= lines are not carried: SIP uses t=0 0 (RFC 3264 §5).
            times=_without_repeats(times),
            # The session-level direction is written on every m= line instead; leg-specific
            # attributes dropped (one pass: remove_if(is_leg_specific).with_direction(None)).
            attributes=_relayed_attributes(source.attributes, None, None),
            media=tuple(media),
        )
        indication = self._record_indication.get(side)
        if indication is not None:
            new = with_record_indication(new, indication)
        sent = apply_version_rule(previous, new)
        if indication is not None:
            self._wrote_indication(side, sent, indication)
        self._sent[side] = sent
        return sent


def with_record_indication(sdp: SessionDescription, indication: str) -> SessionDescription:
    """``sdp`` telling a recording-aware party ``indication`` (RFC 7866 §7.1.1): an
    ``a=record`` line on each stream in use (port 0 ones are left as they are), in place of any
    the other party's SDP brought (a recording of its own that is not ours to pass on as if it
    were: the party hears the state of the recording the gateway makes) and of one at the
    session level."""
    media = tuple(
        m
        if m.is_rejected
        else attrs.evolve(m, attributes=m.attributes.remove("record").add("record", indication))
        for m in sdp.media
    )
    return attrs.evolve(sdp, attributes=sdp.attributes.remove("record"), media=media)


def record_indication_of(sdp: SessionDescription) -> str | None:
    """The ``a=record`` value of ``sdp``'s first stream in use (as :func:`with_record_indication`
    writes it), None when it has none."""
    for m in sdp.media:
        if not m.is_rejected:
            return m.attributes.get("record")
    return None


def _without_repeats(times: tuple[TimeDescription, ...]) -> tuple[TimeDescription, ...]:
    """``times`` without their r= and z= lines: the tuple itself when none has any (a SIP
    peer's t=0 0, every call), else each time description made again with its t= values."""
    for t in times:
        if t.repeats or t.zone is not None:
            return tuple([TimeDescription(t.start, t.stop) for t in times])
    return times


_RECEIVING = frozenset({Direction.SENDRECV, Direction.RECVONLY})
_SENDING = frozenset({Direction.SENDRECV, Direction.SENDONLY})


def _check_side(side: str) -> Side:
    if side == "a":
        return "a"
    if side == "b":
        return "b"
    raise LocalMediaError(f"side must be 'a' or 'b', not {side!r}")


def _direction_from(side: Side) -> str:
    """The relay direction of the packets ``side``'s peer sends."""
    return "a_to_b" if side == "a" else "b_to_a"


def _other(side: Side) -> Side:
    return "b" if side == "a" else "a"


def _side(stream: RelayStream, side: Side) -> RelaySide:
    return stream.a if side == "a" else stream.b


def _direction_statistics(stream: RelayStream) -> list[tuple[str, tuple[int, int, int]]]:
    found = []
    for name, control in (("a_to_b", stream.a_to_b), ("b_to_a", stream.b_to_a)):
        found.append((name, control.totals()))
    return found


_DROP_KEYS = {
    name: tuple(f"{name}_dropped_{reason}" for reason in DROP_REASONS)
    for name in ("a_to_b", "b_to_a")
}
"""The summary's keys of each direction's drops by reason, in DROP_REASONS order."""


def _add_drop_reasons(found: dict[str, list[int]], stream: RelayStream) -> None:
    """Add ``stream``'s drops by reason to ``found`` (per direction, relay.DROP_REASONS order)."""
    for name, control in (("a_to_b", stream.a_to_b), ("b_to_a", stream.b_to_a)):
        counts = found[name]
        for i, count in enumerate(control.dropped_by_reason()):
            counts[i] += count


_UDPTL_KEYS = (
    "a_to_b_udptl_packets",
    "a_to_b_udptl_bytes",
    "b_to_a_udptl_packets",
    "b_to_a_udptl_bytes",
)


def _add_udptl(counts: dict[str, int], stream: RelayStream) -> None:
    """Add ``stream``'s T.38 UDPTL counters to ``counts`` (keyed as :data:`_UDPTL_KEYS`)."""
    for name, control in (("a_to_b", stream.a_to_b), ("b_to_a", stream.b_to_a)):
        stats = control.statistics()
        counts[f"{name}_udptl_packets"] += stats.udptl_packets
        counts[f"{name}_udptl_bytes"] += stats.udptl_bytes


def _rtcp_mux(media: MediaDescription) -> bool:
    """Whether ``media`` muxes RTCP (RFC 5761); never a T.38 UDPTL line, which has no RTCP."""
    return media.rtcp_mux and not is_udptl_t38(media)


def _unrelayable(sd: SessionDescription, media: MediaDescription) -> str | None:
    """Why the relay cannot carry this stream: the SRTP profile's name, "transport" (not RTP or
    T.38 over UDP: RTP over TCP, T.38 over TCP or DTLS, MSRP ...; or multicast), or None when it
    can."""
    proto = media.proto.upper()
    if proto in PLAIN_RTP_PROTOS or is_udptl_t38(media):
        connection = sd.effective_connection(media)
        if connection is not None and connection.is_multicast:
            return "transport"
        return None
    if "SAVP" in proto:  # RTP/SAVP(F), UDP/TLS/RTP/SAVP(F), TCP/... (RFC 3711, 5124, 5764, 7850)
        return proto if proto in RTP_PROTOS else "SRTP"
    return "transport"


def _rewritten_media(
    source: SessionDescription, media: MediaDescription, ours: RelaySide, *, rtcp_mux: bool
) -> MediaDescription:
    """``media`` as we describe it to a leg: our port, our RTCP port or rtcp-mux, the direction
    written out, the other peer's transport and key attributes removed. A T.38 UDPTL line keeps
    its attributes (T38Fax*, unknown ones) as they are; it has no RTCP, and its direction is
    written only when it is not the default sendrecv (fax devices rarely expect one)."""
    direction = source.effective_direction(media)
    if is_udptl_t38(media):
        fax_direction = None if direction is Direction.SENDRECV else direction
        attributes = _relayed_attributes(media.attributes, fax_direction, None)
    elif rtcp_mux:
        attributes = _relayed_attributes(media.attributes, direction, _RTCP_MUX)  # RFC 5761 §5.1.1
    else:
        rtcp = Attribute("rtcp", str(ours.ports.rtcp_port))  # RFC 3605 §2.1
        attributes = _relayed_attributes(media.attributes, direction, rtcp)
    connection = source.effective_connection(media)
    connections: tuple[Connection, ...] = ()
    if connection is not None and _is_unspecified(connection.address):
        # RFC 3264 §8.4 hold: pass "send nothing here" on, without the peer's other text.
        connections = (Connection(connection.nettype, connection.addrtype, connection.address),)
    return MediaDescription(
        media=media.media,
        port=ours.ports.rtp_port,
        proto=media.proto,
        formats=media.formats,
        connections=connections,
        bandwidths=media.bandwidths,
        attributes=attributes,
    )


_DIRECTION_ATTRIBUTES: dict[Direction, Attribute] = {d: Attribute(d.value) for d in Direction}
_RTCP_MUX = Attribute("rtcp-mux")


def _relayed_attributes(
    attributes: Attributes, direction: Direction | None, last: Attribute | None
) -> Attributes:
    """``attributes`` as we pass them on: the leg-specific ones dropped (:func:`is_leg_specific`,
    whose rule this repeats), every direction attribute replaced by ``direction`` at the first
    one's place (appended where there was none; None: all dropped), ``last`` appended. What
    ``remove_if(is_leg_specific).with_direction(direction).add(*last)`` makes, in one pass that
    lowers each name once and builds one ``Attributes`` instead of three (four sections per
    call; docs/benchmarks.md, session 40)."""
    new = None if direction is None else _DIRECTION_ATTRIBUTES[direction]
    out: list[Attribute] = []
    placed = False
    for attribute in attributes.items:
        name = attribute.name.lower()
        if name in _DIRECTION_NAMES:
            if not placed:
                if new is not None:
                    out.append(new)
                placed = True
            continue
        if name in LEG_SPECIFIC_ATTRIBUTES or name.startswith("ice-"):
            continue
        if name == "group" and (attribute.value or "").split()[:1] == ["BUNDLE"]:
            continue
        out.append(attribute)
    if not placed and new is not None:
        out.append(new)
    if last is not None:
        out.append(last)
    return Attributes(tuple(out))


def _transcoding_renumbered(
    plan: TranscodingPlan, tables: dict[str, tuple[dict[int, int], tuple[int, ...]]]
) -> tuple[TranscodingPlan, dict[str, dict[int, int]]] | str:
    """``plan`` and each direction's renumbering (``tables``: ``"a_to_b"``/``"b_to_a"`` ->
    renumbering, sender's RED payload types) made to agree (:func:`through_renumbering`);
    or why they cannot."""
    out: dict[str, dict[int, int]] = {}
    keeps: dict[str, bool] = {}
    for direction, transcoding in (("a_to_b", plan.a_to_b), ("b_to_a", plan.b_to_a)):
        renumbered, red = tables[direction]
        agreed = through_renumbering(transcoding, renumbered, bool(red))
        if isinstance(agreed, str):
            return agreed
        keeps[direction], out[direction] = agreed
    plan = attrs.evolve(plan, a_to_b_renumbered=keeps["a_to_b"], b_to_a_renumbered=keeps["b_to_a"])
    return plan, out


def _in_numbers_of(
    offered: MediaDescription, answered: MediaDescription, rewritten: MediaDescription
) -> MediaDescription:
    """``rewritten`` (our answer made from ``answered``) with each codec numbered as
    ``offered`` numbers it (RFC 3264 §6.1); as it is when that would give one number to two
    formats (an answer with a codec the offer lacks, on a number the offer uses)."""
    numbers = payload_type_map(answered, offered)
    if not numbers:
        return rewritten
    renumbered = renumbered_media(rewritten, numbers)
    if len(set(renumbered.formats)) != len(renumbered.formats):
        return rewritten
    return renumbered


def _is_unspecified(address: str) -> bool:
    try:
        return ip_facts(address).unspecified
    except ValueError:
        return False


def _first_audio(offer: SessionDescription, relayed: Mapping[int, object]) -> int | None:
    """The first relayed RTP audio line: where the call's DTMF goes (RFC 4733 §2.1)."""
    for index in sorted(relayed):
        media = offer.media[index]
        if media.media.lower() == "audio" and media.is_rtp and not is_udptl_t38(media):
            return index
    return None


def telephone_event(media: MediaDescription) -> tuple[int, int] | None:
    """(payload type, clock rate) of the line's telephone-event (RFC 4733 §7.1.1), if it has
    one among its formats; None otherwise, or when its rtpmaps cannot be read. Asked at every
    answer: a line without the name in any a=rtpmap is decided without parsing one."""
    for value in media.attributes.values("rtpmap"):
        if "telephone-event" not in value.lower():
            continue
        try:
            rtpmap = parse_rtpmap_untrusted(value)
            if rtpmap.encoding.lower() != "telephone-event":
                continue
            if str(rtpmap.payload_type) in media.formats:
                return rtpmap.payload_type, rtpmap.clock_rate
        except SdpError:
            return None
    return None


def _telephone_event_in_force(media: MediaDescription | None) -> tuple[int, int]:
    """(payload type, clock rate) of the telephone-event a peer takes on a line whose SDP in
    force is ``media`` (None: the line is not relayed); (-1, 0) when none (a T.38 line has
    none)."""
    if media is None or media.is_rejected:
        return (-1, 0)
    event = telephone_event(media)
    return (-1, 0) if event is None else event


def _dtmf_answer(
    plan: DtmfPlan, offerer: Side, offered: MediaDescription, answer: MediaDescription
) -> MediaDescription:
    """Our answer to the offerer on the interworking line, with the offerer's telephone-event
    (its events reach us, and we send it the INFO leg's digits as events): an answer may keep
    any offered format (RFC 3264 §6.1), whatever the other leg answered."""
    if plan.rfc4733_side != offerer or telephone_event(answer) is not None:
        return answer
    extra: list[tuple[str, str | None]] = [
        ("rtpmap", f"{plan.payload_type} telephone-event/{plan.clock_rate}")
    ]
    fmtp = offered.fmtp(plan.payload_type)
    if fmtp is not None:
        extra.append(("fmtp", f"{plan.payload_type} {fmtp}"))
    return attrs.evolve(
        answer,
        formats=(*answer.formats, str(plan.payload_type)),
        attributes=answer.attributes.extend(extra),
    )


ADDED_EVENT_PAYLOAD_TYPE = 101
"""The number we give the telephone-event we add when it is free (the usual one: Asterisk,
FreeSWITCH and most phones offer 101)."""
ADDED_EVENT_RTPMAP = "telephone-event/8000"
ADDED_EVENT_FMTP = "0-16"
"""Events 0-15 are the DTMF digits, 16 flash-hook (RFC 4733 §3.2; the fmtp of §2.4.1)."""


def with_telephone_event(
    media: MediaDescription, last: MediaDescription | None
) -> MediaDescription | None:
    """``media`` (an offer we are about to send, without telephone-event) with
    telephone-event/8000 and ``a=fmtp:<pt> 0-16`` added as its last format, numbered as the
    leg knows it: the number ``last`` (the SDP we last sent on that leg) gave telephone-event
    (RFC 3264 §8.3.2: a re-offer keeps its numbers), else 101, else the lowest dynamic number
    (96-127) neither ``media`` nor ``last`` uses (a number may not change its codec within a
    session; docs/architecture.md "Payload type numbers"). None when no number is free."""
    used = set(media.formats)
    known: set[str] = set()
    kept: int | None = None
    if last is not None and not last.is_rejected:
        known = set(last.formats)
        before = telephone_event(last)
        if before is not None and before[1] == 8000:
            kept = before[0]
    candidates = [kept] if kept is not None else []
    candidates += [ADDED_EVENT_PAYLOAD_TYPE, *range(96, 128)]
    for payload_type in candidates:
        number = str(payload_type)
        if number in used or (number in known and payload_type != kept):
            continue
        return attrs.evolve(
            media,
            formats=(*media.formats, number),
            attributes=media.attributes.extend(
                [
                    ("rtpmap", f"{number} {ADDED_EVENT_RTPMAP}"),
                    ("fmtp", f"{number} {ADDED_EVENT_FMTP}"),
                ]
            ),
        )
    return None


def _without_telephone_event(media: MediaDescription) -> MediaDescription:
    """``media`` (our answer to an offerer that offered no telephone-event) without the
    answerer's telephone-event; as it is when that would leave no format (an answerer that
    accepted nothing else: not ours to repair)."""
    found = telephone_event(media)
    if found is None:
        return media
    number = str(found[0])
    formats = tuple(f for f in media.formats if f != number)
    if not formats:
        return media
    return attrs.evolve(
        media,
        formats=formats,
        attributes=media.attributes.remove_if(
            lambda a: (
                a.name.lower() in ("rtpmap", "fmtp", "rtcp-fb")
                and (a.value or "").partition(" ")[0] == number
            )
        ),
    )


def _offered_event(offered: MediaDescription, media: MediaDescription) -> tuple[int, int] | None:
    """``media``'s telephone-event (:func:`telephone_event`) when ``offered`` (our offer it
    answers, or answered) lists its number too, or one at its clock rate (a peer that answered
    ours under a number of its own, RFC 3264 §6.1 SHOULD; the relay renumbers); None
    otherwise."""
    event = telephone_event(media)
    if event is None:
        return None
    if str(event[0]) in offered.formats:
        return event
    ours = telephone_event(offered)
    return event if ours is not None and ours[1] == event[1] else None


def _dtmf_counts(stream: RelayStream) -> dict[str, int]:
    """The DTMF interworking counters of ``stream``'s two directions, added up."""
    a_to_b, b_to_a = stream.a_to_b.statistics(), stream.b_to_a.statistics()
    return {
        "taken": a_to_b.dtmf_taken + b_to_a.dtmf_taken,
        "injected": a_to_b.dtmf_injected + b_to_a.dtmf_injected,
        "ended_at_change": a_to_b.dtmf_ended_at_change + b_to_a.dtmf_ended_at_change,
        "passed": a_to_b.dtmf_passed + b_to_a.dtmf_passed,
        "end_copies_dropped": a_to_b.dtmf_end_copies_dropped + b_to_a.dtmf_end_copies_dropped,
    }


def _random_ssrc() -> int:
    """An SSRC for events injected before any media was relayed (RFC 3550 §8.1: random)."""
    return int(RandomIds().token_hex(4), 16)
