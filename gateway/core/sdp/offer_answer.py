"""RFC 3264 offer/answer rules a B2BUA needs, as pure functions over frozen descriptions.

Theory of operation. Each leg of a call runs its own offer/answer exchange; the gateway is the
answerer on the leg an offer arrives on and the offerer on the other. Streams are matched by
position (§6: the answer has exactly the offer's m= lines, in order, of the same media type). A
stream is rejected, never removed, by answering port 0 (§6) and stays in every later offer (§8.2).
Direction (§6.1) is read from each side's own view, so an answer may only send what the offer
receives and receive what the offer sends (:data:`ANSWER_DIRECTION`). For RTP, codecs are matched
by encoding name, clock rate and channels (RFC 3551 static payload types need no a=rtpmap) and the
answer reuses the offer's payload type numbers (§6.1). Hold is a direction (sendonly/inactive,
§8.4); RFC 2543's c=0.0.0.0 is still recognized. A re-offer keeps the o= session id and bumps its
version by one when anything changed (§8).

Errors are :class:`SdpError` (488 when we are answering; for an answer we received, the caller
ends the dialog instead). Misuse of these helpers raises :class:`LocalSdpError`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Literal

import attrs

from gateway.core.sdp.errors import LocalSdpError, SdpError
from gateway.core.sdp.model import (
    STATIC_PAYLOAD_TYPES,
    Attribute,
    Attributes,
    Connection,
    Direction,
    MediaDescription,
    Origin,
    RtpMap,
    SessionDescription,
)

Preference = Literal["offerer", "local"]

# RFC 3264 §6.1: (offered direction, what we want) -> what the answer says. An answer may only
# send if the offer receives, and only receive if the offer sends.
ANSWER_DIRECTION: Mapping[tuple[Direction, Direction], Direction] = {
    (Direction.SENDRECV, Direction.SENDRECV): Direction.SENDRECV,
    (Direction.SENDRECV, Direction.SENDONLY): Direction.SENDONLY,
    (Direction.SENDRECV, Direction.RECVONLY): Direction.RECVONLY,
    (Direction.SENDRECV, Direction.INACTIVE): Direction.INACTIVE,
    (Direction.SENDONLY, Direction.SENDRECV): Direction.RECVONLY,
    (Direction.SENDONLY, Direction.SENDONLY): Direction.INACTIVE,
    (Direction.SENDONLY, Direction.RECVONLY): Direction.RECVONLY,
    (Direction.SENDONLY, Direction.INACTIVE): Direction.INACTIVE,
    (Direction.RECVONLY, Direction.SENDRECV): Direction.SENDONLY,
    (Direction.RECVONLY, Direction.SENDONLY): Direction.SENDONLY,
    (Direction.RECVONLY, Direction.RECVONLY): Direction.INACTIVE,
    (Direction.RECVONLY, Direction.INACTIVE): Direction.INACTIVE,
    (Direction.INACTIVE, Direction.SENDRECV): Direction.INACTIVE,
    (Direction.INACTIVE, Direction.SENDONLY): Direction.INACTIVE,
    (Direction.INACTIVE, Direction.RECVONLY): Direction.INACTIVE,
    (Direction.INACTIVE, Direction.INACTIVE): Direction.INACTIVE,
}

# Read at run time as a module name (EnumType's __getattr__ hook: docs/benchmarks.md, session 45).
_INACTIVE = Direction.INACTIVE

# Payload formats that ride along with a codec but are not one: an answer holding only these has
# no common codec (RFC 4733 telephone-event, RFC 3389 CN, RFC 2198 RED, RFC 5109 ulpfec,
# RFC 8627 flexfec, RFC 4588 rtx).
AUXILIARY_ENCODINGS = frozenset({"telephone-event", "cn", "red", "ulpfec", "flexfec", "rtx"})


@attrs.frozen
class Codec:
    """A codec we can receive and send, as listed in ``local_caps``.

    ``fmtp`` is what we put in our answer for it; None echoes the offerer's parameters.
    """

    encoding: str
    clock_rate: int
    channels: int = 1
    fmtp: str | None = None

    @property
    def codec_key(self) -> tuple[str, int, int]:
        return (self.encoding.lower(), self.clock_rate, self.channels)


@attrs.frozen
class NegotiatedFormat:
    """One format of an answer: the offer's payload type and rtpmap, and the fmtp to answer."""

    rtpmap: RtpMap
    fmtp: str | None = None

    @property
    def payload_type(self) -> int:
        return self.rtpmap.payload_type

    @property
    def is_auxiliary(self) -> bool:
        return self.rtpmap.encoding.lower() in AUXILIARY_ENCODINGS


# -- direction and hold ---------------------------------------------------------------------------


def answer_direction(offered: Direction, wanted: Direction = Direction.SENDRECV) -> Direction:
    """The direction to answer an ``offered`` stream with, given what we want (RFC 3264 §6.1)."""
    return ANSWER_DIRECTION[(offered, wanted)]


def direction_allowed(offered: Direction, answered: Direction) -> bool:
    """Whether ``answered`` is a legal answer to ``offered`` (RFC 3264 §6.1)."""
    return (not answered.sends or offered.receives) and (not answered.receives or offered.sends)


def hold_direction(current: Direction) -> Direction:
    """The direction of a re-offer that puts the peer on hold (RFC 3264 §8.4)."""
    return Direction.from_flags(sends=current.sends, receives=False)


def offered_direction(sd: SessionDescription, media: MediaDescription) -> Direction:
    """The stream's direction as an answerer must read it.

    The media- or session-level attribute (default sendrecv), minus receiving when the stream's
    connection address is 0.0.0.0: RFC 2543 hold, "send no RTP or RTCP here" (RFC 3264 §8.4).
    Not so for a stream using ICE: there 0.0.0.0 (with port 9) is the placeholder of an offer
    sent before any candidate was gathered (RFC 8840 §4.1.1) and media goes to the candidates.
    """
    direction = sd.effective_direction(media)
    connection = sd.effective_connection(media)
    uses_ice = media.attributes.has("ice-ufrag") or sd.attributes.has("ice-ufrag")
    if connection is not None and connection.is_null and not uses_ice:
        return Direction.from_flags(sends=direction.sends, receives=False)
    return direction


def is_hold(sd: SessionDescription, media: MediaDescription) -> bool:
    """True when ``sd`` puts this stream on hold: sendonly, inactive or c=0.0.0.0 (§8.4)."""
    return not media.is_rejected and not offered_direction(sd, media).receives


# -- codecs ---------------------------------------------------------------------------------------


def offered_formats(media: MediaDescription) -> tuple[RtpMap, ...]:
    """The RTP formats of ``media`` in m= line order with their codecs; unknown ones skipped.

    A dynamic payload type without a=rtpmap, or an unassigned static one, names no codec we could
    match, so it is left out rather than guessed.
    """
    return tuple(r for r in codecs_by_format(media).values() if r is not None)


@attrs.frozen
class CodecChange:
    """What a peer's answer to our re-offer of a stream changes in the codecs it uses there
    (:func:`codec_change`). ``described``: the two lists in words ("0 PCMU/8000, 101
    telephone-event/8000 -> 0 PCMU/8000"). ``refused``: why the answer cannot be taken on
    that leg alone, or None for a narrowing that keeps the codec in use (``dropped``: the
    formats it leaves out in words, as the peer numbers them)."""

    described: str
    refused: str | None
    dropped: str = ""
    added: str = ""
    """The formats it adds that the other leg takes (``codec_change``'s ``receivable``), in
    words, as the peer numbers them; empty when it adds none."""
    added_payload_types: tuple[int, ...] = ()
    """Those formats' payload types, as the peer numbers them."""


# Formats that never carry the stream's media themselves (RFC 4733 events, RFC 3389 comfort
# noise): listed first, they are still not the codec in use (codec_change).
_NEVER_IN_USE = frozenset({"telephone-event", "cn"})


def codec_change(
    offered: MediaDescription,
    before: MediaDescription,
    after: MediaDescription,
    *,
    receivable: Collection[tuple[str, int, int]] = frozenset(),
) -> CodecChange | None:
    """What ``after``, a peer's answer to our re-offer ``offered`` of a stream whose SDP from
    that peer was ``before``, changes in the codecs the peer uses on it: None when the two
    give every payload type of the offer the same codec (name, rate, channels; order and fmtp
    aside). ``receivable``: the codecs (``RtpMap.codec_key``) the other leg takes on that
    stream, which its own SDP in force lists (RFC 3264 §5.1, §6.1: an SDP lists the formats
    its author is willing to receive). Formats whose codec the offer lacks do not count: a
    peer's own earlier offer listed more than we answered, and the peer sends only what both
    listed (RFC 3264 §6.1). A codec of the offer that the peer answered under another number
    (§6.1 asks it to keep the offer's, SHOULD; the relay renumbers then,
    :func:`payload_type_map`) counts under the peer's number, as the relay uses it.

    A narrowing (formats left out, none given another codec) that keeps the codec in use is
    not refused (RFC 3264 §6.1 lets an answer list any subset of the offer; phones
    answer a re-INVITE with only the codec they use, or without telephone-event). The codec in
    use is the first format of ``before``'s (of those the offer has) that is not
    telephone-event or comfort noise, with those listed before it (RED or FEC wrapping it): the
    other peer sends it (RFC 3264 §7: the offerer sends the answer's first format; §6.1: the
    answerer the offer's first that it answered), and it stays agreed on that leg. Refused: a
    payload type given another codec, the codec in use left out, a codec added that the offer
    does not list (a payload type of the offer answered with another codec), a codec added
    that the other leg does not take (the G.711 law we added for transcoding, say): the peer
    may send a codec of the offer that its answer lists (RFC 3264 §6.1), and the other leg
    could not play it. A codec added that the other leg takes is not refused (``added``: RFC
    3264 §6.1 lets the answer list any of the offer's formats, §8.3.2 a re-offer's answer
    change the set). Raises :class:`SdpError` for an unreadable a=rtpmap or payload type."""
    if not offered.is_rtp or not before.is_rtp or not after.is_rtp:
        return None
    offered_codecs = codecs_by_format(offered)
    ours = set(offered_codecs)
    our_codecs = {c.codec_key for c in offered_codecs.values() if c is not None}

    def answered(media: MediaDescription) -> dict[int, RtpMap | None]:
        # The offer's formats by number, and its codecs the peer gave a number of its own.
        return {
            pt: c
            for pt, c in codecs_by_format(media).items()
            if pt in ours or (c is not None and c.codec_key in our_codecs)
        }

    was, now = answered(before), answered(after)
    was_keys, now_keys = _codec_keys(was), _codec_keys(now)
    if was_keys == now_keys:
        return None
    described = f"{_codec_words(was)} -> {_codec_words(now)}"
    other = sorted(pt for pt, key in now_keys.items() if pt in was_keys and was_keys[pt] != key)
    if other:
        return CodecChange(described, f"payload type {other[0]} given another codec")
    gone_in_use = [pt for pt in _in_use(was) if pt not in now_keys]
    if gone_in_use:
        words = _codec_words({pt: was[pt] for pt in gone_in_use})
        return CodecChange(described, f"the codec in use, {words}, left out")
    added = sorted(pt for pt in now_keys if pt not in was_keys)
    # A payload type of the offer answered with a codec the offer does not list (our Opus's
    # 96 answered AMR-WB): not a format of the offer (RFC 3264 §6.1, an answer lists the
    # offer's formats and keeps a number's codec), never taken, whatever the other leg takes.
    unoffered = [pt for pt in added if now_keys[pt] not in our_codecs]
    if unoffered:
        words = _codec_words({pt: now[pt] for pt in unoffered})
        return CodecChange(described, f"{words} added, which our offer did not list")
    unplayable = [pt for pt in added if now_keys[pt] not in receivable]
    if unplayable:
        words = _codec_words({pt: now[pt] for pt in unplayable})
        return CodecChange(described, f"{words} added, which the other leg does not take")
    dropped = [pt for pt in was if pt not in now_keys]
    return CodecChange(
        described,
        None,
        _codec_words({pt: was[pt] for pt in dropped}) if dropped else "",
        _codec_words({pt: now[pt] for pt in added}) if added else "",
        tuple(added),
    )


def _in_use(codecs: Mapping[int, RtpMap | None]) -> list[int]:
    # The formats up to the first one that carries media of its own (codec_change), in the
    # peer's order: RED or FEC listed first wrap it, telephone-event and CN never carry it.
    found: list[int] = []
    for pt, codec in codecs.items():
        name = "" if codec is None else codec.encoding.lower()
        if name in _NEVER_IN_USE:
            continue
        found.append(pt)
        if name not in AUXILIARY_ENCODINGS:
            break
    return found


def _codec_keys(codecs: Mapping[int, RtpMap | None]) -> dict[int, tuple[str, int, int] | None]:
    return {pt: None if c is None else c.codec_key for pt, c in codecs.items()}


def _codec_words(codecs: Mapping[int, RtpMap | None]) -> str:
    if not codecs:
        return "none"
    return ", ".join(str(pt) if c is None else str(c) for pt, c in sorted(codecs.items()))


def codecs_by_format(media: MediaDescription) -> dict[int, RtpMap | None]:
    """Payload type -> codec (explicit a=rtpmap, else RFC 3551 static, else None), in m= line
    order. Raises :class:`SdpError` when the line's rtpmaps or formats cannot be read."""
    rtpmaps = media.rtpmaps()
    return {pt: rtpmaps.get(pt) or STATIC_PAYLOAD_TYPES.get(pt) for pt in media.payload_types}


# Formats that carry no audio of their own: RFC 4733 events and RFC 3389 comfort noise (with
# RFC 2198 redundancy, which wraps another format). An audio line left with only these has
# nothing a phone could play (only_codecs).
AUXILIARY_FORMATS = frozenset({"TELEPHONE-EVENT", "CN", "RED"})
# Those of them that run on the clock of the codec they go with.
_CLOCKED_BY_CODEC = frozenset({"TELEPHONE-EVENT", "CN"})


def only_codecs(
    media: MediaDescription, codecs: Sequence[str], *, reorder: bool
) -> MediaDescription | None:
    """``media`` (an audio RTP line) with only the formats whose encoding name is one of
    ``codecs`` (case-insensitive), their a=rtpmap, a=fmtp and a=rtcp-fb lines with them;
    ``reorder``: in the order of ``codecs`` (our offer: RFC 3264 §5.1, the formats are in order
    of preference), else in the line's own (a peer's offer: its preference is its own).
    telephone-event and CN are kept only when ``codecs`` names them, and only at the clock rate
    of a codec kept.
    None when no format is left but those of :data:`AUXILIARY_FORMATS` (nothing to play). Any
    other line (video, T.38, rejected) is returned as it is. A format without a known codec (a
    dynamic number without a=rtpmap) names none of ``codecs`` and goes."""
    if media.media != "audio" or media.is_rejected or not media.is_rtp:
        return media
    rank = {name.upper(): order for order, name in enumerate(codecs)}
    kept: list[tuple[int, int, int]] = []  # (rank, position, payload type)
    clocked: list[tuple[int, int, int, int]] = []  # telephone-event and CN, with clock rate
    rates: set[int] = set()  # the clock rates of the codecs kept
    for position, (pt, rtpmap) in enumerate(codecs_by_format(media).items()):
        if rtpmap is None:
            continue
        name = rtpmap.encoding.upper()
        if name in rank:
            entry = (rank[name] if reorder else 0, position, pt)
            if name in _CLOCKED_BY_CODEC:
                clocked.append((*entry, rtpmap.clock_rate))
            else:
                kept.append(entry)
                if name != "RED":
                    rates.add(rtpmap.clock_rate)
    if not rates:
        return None
    # telephone-event and CN share the RTP clock of the audio they go with (RFC 4733 §2.1,
    # RFC 3389 §5): one whose rate no kept codec has (telephone-event/48000 left without Opus)
    # would be taken with the wrong clock, by the phone and by our own DTMF interworking, which
    # reads the line's first telephone-event.
    kept += [(order, position, pt) for order, position, pt, rate in clocked if rate in rates]
    if len(kept) == len(media.formats) and not reorder:
        return media
    kept.sort()
    numbers = {str(pt) for _, _, pt in kept}

    def other_format(attribute: Attribute) -> bool:
        if attribute.name not in ("rtpmap", "fmtp", "rtcp-fb"):
            return False
        fmt = (attribute.value or "").split(" ", 1)[0]
        return fmt != "*" and fmt not in numbers

    return media.with_formats(str(pt) for _, _, pt in kept).with_attributes(
        media.attributes.remove_if(other_format)
    )


def codec_in_use_only(offered: MediaDescription, before: MediaDescription) -> MediaDescription:
    """``offered``, a re-offer of ours on a stream whose SDP in force from its peer is
    ``before``, with only the codec in use there (:func:`codec_change`'s: ``before``'s first
    format of the offer's that carries media, with RED or FEC listed before it wrapping it),
    and telephone-event and CN at its clock rate, their attribute lines with them
    (:func:`only_codecs`): an answer to it keeps that codec or refuses the offer (RFC 3264
    §6.1: an answer lists formats of the offer; §8.3.2: a re-offer may change the set).
    ``offered`` as it is where no codec in use can be told (not RTP, rejected, an a=rtpmap
    unread, none of ``before``'s codecs in it)."""
    if offered.is_rejected or not offered.is_rtp or not before.is_rtp:
        return offered
    try:
        ours = codecs_by_format(offered)
        keys = {codec.codec_key for codec in ours.values() if codec is not None}
        theirs = {
            pt: codec
            for pt, codec in codecs_by_format(before).items()
            if pt in ours or (codec is not None and codec.codec_key in keys)
        }
    except SdpError:
        return offered
    names = [codec.encoding for pt in _in_use(theirs) if (codec := theirs[pt]) is not None]
    if not names:
        return offered
    return only_codecs(offered, [*names, "telephone-event", "CN"], reorder=False) or offered


def intersect_codecs(
    offered: MediaDescription, local_caps: Sequence[Codec], *, prefer: Preference = "offerer"
) -> tuple[NegotiatedFormat, ...]:
    """The offered RTP formats we support, with the offer's payload type numbers (RFC 3264 §6.1).

    ``prefer="offerer"`` keeps the offer's order (RFC 3264 §6.1 recommends it); ``"local"``
    orders by ``local_caps``. telephone-event and the other :data:`AUXILIARY_ENCODINGS` are kept
    when listed in ``local_caps``; callers decide with :func:`has_common_codec` whether a real
    codec is among the result. An empty tuple means nothing matched.
    """
    formats = offered_formats(offered)
    result: list[NegotiatedFormat] = []
    used: set[int] = set()
    if prefer == "offerer":
        caps = {cap.codec_key: cap for cap in reversed(local_caps)}  # first listed wins
        for rtpmap in formats:
            cap = caps.get(rtpmap.codec_key)
            if cap is not None and rtpmap.payload_type not in used:
                used.add(rtpmap.payload_type)
                result.append(_negotiated(offered, rtpmap, cap))
    else:
        for cap in local_caps:
            for rtpmap in formats:
                if rtpmap.codec_key == cap.codec_key and rtpmap.payload_type not in used:
                    used.add(rtpmap.payload_type)
                    result.append(_negotiated(offered, rtpmap, cap))
    return tuple(result)


def _negotiated(offered: MediaDescription, rtpmap: RtpMap, cap: Codec) -> NegotiatedFormat:
    fmtp = cap.fmtp if cap.fmtp is not None else offered.fmtp(rtpmap.payload_type)
    return NegotiatedFormat(rtpmap, fmtp or None)


def has_common_codec(formats: Sequence[NegotiatedFormat]) -> bool:
    """True when ``formats`` holds a real codec, not only telephone-event, CN and the like."""
    return any(not f.is_auxiliary for f in formats)


def _shares_format(offer: MediaDescription, answer: MediaDescription) -> bool:
    if not offer.is_rtp:
        return bool(set(offer.formats) & set(answer.formats))
    offered = codecs_by_format(offer)
    # Both sections' a=rtpmap lines are parsed whole first, so that a malformed one is refused
    # whichever format matches. The answer's formats are then looked at in order, each against
    # the offer's format of its own number first: an answer reuses the offer's numbers (RFC 3264
    # §6.1), so its first format usually matches there, and the offer's codecs by name, rate
    # and channels are gathered only for an answer that renumbered.
    answered = answer.rtpmaps()
    offered_keys: set[tuple[str, int, int]] | None = None
    for payload_type in answer.payload_types:
        rtpmap = answered.get(payload_type) or STATIC_PAYLOAD_TYPES.get(payload_type)
        if rtpmap is None:
            # A format neither side names a codec for matches by number.
            if payload_type in offered and offered[payload_type] is None:
                return True
            continue
        same_number = offered.get(payload_type)
        if same_number is not None and same_number.codec_key == rtpmap.codec_key:
            return True
        if offered_keys is None:
            offered_keys = {r.codec_key for r in offered.values() if r is not None}
        if rtpmap.codec_key in offered_keys:
            return True
    return False


# -- payload type numbers across the two legs ----------------------------------------------------


def numbered_alike(wider: MediaDescription, narrower: MediaDescription) -> bool:
    """True when every format of ``narrower`` is one of ``wider`` with the same a=rtpmap text
    (or without one in ``narrower``): the usual answer to an offer (RFC 3264 §6.1), or a
    re-offer in the numbers of before. Nothing is renumbered then (:func:`payload_type_map`
    and :func:`keep_leg_numbers` would find nothing); decided on the text, so that every call
    pays a few string comparisons per stream and no parsing."""
    if not set(wider.formats).issuperset(narrower.formats):
        return False
    theirs = {v.partition(" ")[0]: v.lower() for v in wider.attributes.values("rtpmap")}
    return all(
        theirs.get(v.partition(" ")[0]) == v.lower() for v in narrower.attributes.values("rtpmap")
    )


def payload_type_map(sender: MediaDescription, receiver: MediaDescription) -> dict[int, int]:
    """How to renumber RTP from the peer that wrote ``sender`` for the peer that wrote
    ``receiver``: payload type as sent -> payload type the receiver expects; empty when the
    two agree (the common case: the gateway passes one leg's numbers to the other).

    Each peer sends and receives a codec with the number its own SDP gives it (RFC 3264 §5.1:
    the offer's numbers are what the offerer expects to receive and would prefer to send; §6.1:
    the answer reuses them). Two legs negotiated apart (call pickup, a transfer's new party, a
    peer that keeps its numbers across a re-offer as §8.3.2 asks) can give one codec two
    numbers, e.g. telephone-event 101 on one leg and 96 on the other (RFC 4733 events would
    then be ignored or misread). Codecs match by name, clock rate and channels (RFC 3551
    static types included); a sender's number whose codec the receiver lacks is not mapped
    (it passes unchanged), nor one the receiver gives the same codec. Where the receiver lists
    a codec more than once, the number with the same fmtp is preferred, else the first.
    Raises :class:`SdpError` for an unreadable a=rtpmap or payload type."""
    if not sender.is_rtp or not receiver.is_rtp:
        return {}
    theirs = codecs_by_format(receiver)
    by_codec: dict[tuple[str, int, int], list[int]] = {}
    for payload_type, rtpmap in theirs.items():
        if rtpmap is not None:
            by_codec.setdefault(rtpmap.codec_key, []).append(payload_type)
    renumbered: dict[int, int] = {}
    for payload_type, rtpmap in codecs_by_format(sender).items():
        if rtpmap is None:
            continue
        candidates = by_codec.get(rtpmap.codec_key)
        if not candidates or payload_type in candidates:
            continue
        fmtp = sender.fmtp(payload_type)
        same_fmtp = [pt for pt in candidates if receiver.fmtp(pt) == fmtp]
        renumbered[payload_type] = (same_fmtp or candidates)[0]
    return renumbered


def keep_leg_numbers(previous: MediaDescription, offer: MediaDescription) -> dict[int, int]:
    """How to renumber ``offer``, a stream we are about to re-offer on a leg, so that every
    codec keeps the number ``previous`` (the last SDP we sent on that leg) gave it: RFC 3264
    §8.3.2 lets no payload type number change its codec for the duration of a session, and a
    B2BUA whose leg now carries another party's offer (a transfer's target, a codec change by
    the other side) must not let that party's numbering leak in. A codec new to the leg keeps
    its number unless the leg knows that number as another codec; then it gets a dynamic
    number (96-127) the leg has not used. Empty when nothing moves, when either is not RTP, and
    when no such number is left (the relay renumbers then).
    Raises :class:`SdpError` for an unreadable a=rtpmap or payload type."""
    if not previous.is_rtp or not offer.is_rtp or previous.is_rejected:
        return {}
    known = {
        pt: None if rtpmap is None else rtpmap.codec_key
        for pt, rtpmap in codecs_by_format(previous).items()
    }
    numbers_of: dict[tuple[str, int, int], list[int]] = {}
    for payload_type, known_key in known.items():
        if known_key is not None:
            numbers_of.setdefault(known_key, []).append(payload_type)
    offered = codecs_by_format(offer)
    targets: dict[int, int | None] = {}
    taken: set[int] = set()
    for payload_type, rtpmap in offered.items():
        key = None if rtpmap is None else rtpmap.codec_key
        free = [n for n in numbers_of.get(key, ()) if n not in taken] if key is not None else []
        target: int | None
        if payload_type in free:
            target = payload_type  # the leg knows it as this codec already
        elif free:
            target = free[0]  # the leg's own number for this codec
        elif (payload_type in known and known[payload_type] != key) or payload_type in taken:
            target = None  # the leg knows this number as another codec: a fresh one below
        else:
            target = payload_type
        targets[payload_type] = target
        if target is not None:
            taken.add(target)
    fresh = (n for n in range(96, 128) if n not in known and n not in taken)
    renumbered: dict[int, int] = {}
    for payload_type, target in targets.items():
        if target is None:
            target = next(fresh, None)
            if target is None:
                return {}
        if target != payload_type:
            renumbered[payload_type] = target
    return renumbered


_NUMBERED_ATTRIBUTES = frozenset({"rtpmap", "fmtp", "rtcp-fb"})
"""Attributes whose value starts with the payload type they describe (RFC 8866 §6.6, §6.15;
RFC 4585 §4.2)."""


def renumbered_media(media: MediaDescription, renumbering: Mapping[int, int]) -> MediaDescription:
    """``media`` with its payload types renumbered (the m= line's formats and the a=rtpmap,
    a=fmtp and a=rtcp-fb lines of each, and the redundant encodings an RFC 2198 RED format's
    a=fmtp lists); formats not in ``renumbering`` stay as they are."""
    if not renumbering:
        return media
    formats = tuple(
        str(renumbering.get(int(f), int(f))) if f.isdigit() else f for f in media.formats
    )
    red = _red_formats(media)
    attributes: list[Attribute] = []
    for attribute in media.attributes:
        value = attribute.value
        name = attribute.name.lower()
        if name in _NUMBERED_ATTRIBUTES and value is not None:
            number, space, rest = value.partition(" ")
            if name == "fmtp" and number in red:
                rest = _renumbered_red_fmtp(rest, renumbering)
            if number.isdigit() and int(number) in renumbering:
                number = str(renumbering[int(number)])
            value = f"{number}{space}{rest}"
        attributes.append(Attribute(attribute.name, value))
    return attrs.evolve(media, formats=formats, attributes=Attributes(tuple(attributes)))


def red_payload_types(media: MediaDescription) -> tuple[int, ...]:
    """The payload types ``media`` gives RFC 2198 RED (a=rtpmap ``red/<clock rate>``), in
    ascending order; numbers outside 0..127 are left out (they name no RTP payload type)."""
    return tuple(sorted(int(n) for n in _red_formats(media) if n.isdigit() and int(n) <= 127))


def _red_formats(media: MediaDescription) -> frozenset[str]:
    """The formats ``media``'s a=rtpmap lines name RFC 2198 RED (``red/<clock rate>``)."""
    return frozenset(
        number
        for number, _, encoding in (v.partition(" ") for v in media.attributes.values("rtpmap"))
        if encoding.partition("/")[0].strip().lower() == "red"
    )


def _renumbered_red_fmtp(parameters: str, renumbering: Mapping[int, int]) -> str:
    """A RED format's a=fmtp parameters with the payload types they list renumbered: RFC 2198
    §5 lists the redundant encodings' numbers, primary first, separated by "/" (WebRTC's
    ``111/111``: Opus with one redundant copy); each names the sender's number for a codec of
    the same m= line, so it must change with that codec's. Anything not of that form (no
    parameters, other ones) is left as it is."""
    numbers = parameters.strip().split("/")
    if not all(n.isdigit() and len(n) <= 3 for n in numbers):
        return parameters
    return "/".join(str(renumbering.get(int(n), int(n))) for n in numbers)


# -- building and checking answers ---------------------------------------------------------------


def rejected_media(offered: MediaDescription) -> MediaDescription:
    """The answer's m= line rejecting ``offered``: port 0, same media, proto and formats (§6).

    RFC 3264 §6: the formats of a rejected stream are ignored but at least one must be listed.
    """
    return MediaDescription(
        media=offered.media,
        port=0,
        proto=offered.proto,
        formats=offered.formats or ("0",),
    )


def refusing_answer(
    offer: SessionDescription, *, username: str, address: str
) -> SessionDescription:
    """An answer rejecting every stream of ``offer`` (RFC 3264 §6: port 0), our origin
    ``username`` at ``address``: for the ACK of a 2xx that offered (to an INVITE without SDP)
    and is BYEd at once, an ACK that must carry an answer all the same (RFC 3261 §13.2.2.4,
    RFC 3264 §4)."""
    origin = attrs.evolve(offer.origin, username=username, address=address)
    return attrs.evolve(offer, origin=origin, media=tuple(rejected_media(m) for m in offer.media))


def make_answer(
    offer: SessionDescription,
    local_caps: Mapping[str, Sequence[Codec]],
    *,
    origin: Origin,
    connection: Connection,
    ports: Sequence[int],
    direction: Direction = Direction.SENDRECV,
    prefer: Preference = "offerer",
    protos: Collection[str] | None = None,
    rtcp_mux: bool = True,
    session_name: str = "-",
) -> SessionDescription:
    """An answer skeleton for ``offer`` (RFC 3264 §6): m= lines, codecs and directions.

    ``local_caps`` maps a media type ("audio", "video") to the codecs we support, in our order of
    preference; other media types are rejected. ``ports`` gives our port for each offered m= line
    (0 rejects that stream; the caller allocates them, this module does no I/O). ``protos``
    limits the accepted transport protocols (None: any RTP profile). ``direction`` is what we
    want; each stream answers :func:`answer_direction` of what was offered. a=rtcp-mux is echoed
    when offered and ``rtcp_mux`` is true. Key exchange attributes (a=crypto, a=fingerprint ...)
    are the key-exchange plugin's to add.

    Raises :class:`SdpError` "no common codec" when every offered stream that was not already
    rejected had to be rejected and at least one of them for want of a common codec, and "no
    acceptable media stream" when all were rejected for other reasons. An offer with no active
    stream gets an answer with none.
    """
    if len(ports) != len(offer.media):
        raise LocalSdpError("make_answer needs one port per offered m= line")
    wanted_protos = None if protos is None else {p.upper() for p in protos}
    answered: list[MediaDescription] = []
    active = accepted = 0
    codec_failure = False
    for offered, port in zip(offer.media, ports, strict=True):
        if offered.is_rejected:
            answered.append(rejected_media(offered))
            continue
        active += 1
        caps = local_caps.get(offered.media, ())
        proto_ok = offered.is_rtp and (
            wanted_protos is None or offered.proto.upper() in wanted_protos
        )
        if port == 0 or not caps or not proto_ok:
            answered.append(rejected_media(offered))
            continue
        formats = intersect_codecs(offered, caps, prefer=prefer)
        if not has_common_codec(formats):
            codec_failure = True
            answered.append(rejected_media(offered))
            continue
        accepted += 1
        answered.append(
            _accepted_media(
                offered,
                formats,
                port=port,
                direction=answer_direction(offered_direction(offer, offered), direction),
                rtcp_mux=rtcp_mux and offered.rtcp_mux,
            )
        )
    if active and not accepted:
        raise SdpError("no common codec" if codec_failure else "no acceptable media stream")
    return SessionDescription(
        origin=origin,
        session_name=session_name,
        connection=connection,
        times=offer.times,  # RFC 3264 §6: the answer's t= equals the offer's
        media=tuple(answered),
    )


def _accepted_media(
    offered: MediaDescription,
    formats: Sequence[NegotiatedFormat],
    *,
    port: int,
    direction: Direction,
    rtcp_mux: bool,
) -> MediaDescription:
    attributes: list[Attribute] = []
    for f in formats:
        attributes.append(Attribute("rtpmap", str(f.rtpmap)))
        if f.fmtp is not None:
            attributes.append(Attribute("fmtp", f"{f.payload_type} {f.fmtp}"))
    attributes.append(Attribute(direction.value))
    if rtcp_mux:
        attributes.append(Attribute("rtcp-mux"))
    return MediaDescription(
        media=offered.media,
        port=port,
        proto=offered.proto,
        formats=tuple(str(f.payload_type) for f in formats),
        attributes=Attributes(tuple(attributes)),
    )


def match_media(
    offer: SessionDescription, answer: SessionDescription
) -> tuple[tuple[MediaDescription, MediaDescription], ...]:
    """Pair each offered m= line with the answer's at the same position (RFC 3264 §6).

    Raises :class:`SdpError` when the counts differ or a pair's media types differ.
    """
    if len(answer.media) != len(offer.media):
        raise SdpError(
            f"answer has {len(answer.media)} m= lines, offer has {len(offer.media)} (RFC 3264 §6)"
        )
    for index, (offered, answered) in enumerate(zip(offer.media, answer.media, strict=True), 1):
        if offered.media.lower() != answered.media.lower():
            raise SdpError(f"m= line {index}: answer media type differs from the offer's")
    return tuple(zip(offer.media, answer.media, strict=True))


def validate_answer(offer: SessionDescription, answer: SessionDescription) -> None:
    """Check a received answer against the offer we sent (RFC 3264 §6, §6.1, §8.2).

    Same m= lines in the same order; a stream the offer removed (port 0) stays rejected; an
    accepted stream keeps the offer's transport protocol, a unicast offer gets a unicast answer,
    at least one offered codec is kept unless the stream is inactive, and the answered direction
    is one the offered direction allows.

    In the B2BUA both SDPs are plain (RTP/AVP(F), UDPTL): whether a peer's answer keeps the
    security of our offer on its leg (no silent SRTP downgrade) is checked before, by that leg's
    :meth:`~gateway.core.media.security.LegSecurity.take_answer`, which refuses an answer whose
    profile leaves the offer's security family.
    """
    for index, (offered, answered) in enumerate(match_media(offer, answer), start=1):
        where = f"m= line {index}"
        if offered.is_rejected:
            if not answered.is_rejected:
                raise SdpError(
                    f"{where}: answer accepts a stream the offer removed (RFC 3264 §8.2)"
                )
            continue
        if answered.is_rejected:
            continue
        if answered.proto.upper() != offered.proto.upper():
            raise SdpError(f"{where}: answer changes the transport protocol")
        offered_connection = offer.effective_connection(offered)
        answered_connection = answer.effective_connection(answered)
        if (
            offered_connection is not None
            and answered_connection is not None
            and not offered_connection.is_multicast
            and answered_connection.is_multicast
        ):
            raise SdpError(f"{where}: multicast answer to a unicast offer (RFC 3264 §6.1)")
        offered_dir = offer.effective_direction(offered)
        answered_dir = answer.effective_direction(answered)
        if not direction_allowed(offered_dir, answered_dir):
            raise SdpError(
                f"{where}: answer direction {answered_dir.value} not allowed for offered "
                f"{offered_dir.value} (RFC 3264 §6.1)"
            )
        if answered_dir is not _INACTIVE and not _shares_format(offered, answered):
            raise SdpError(f"{where}: answer has no format from the offer (RFC 3264 §6.1)")


# -- o= versions across re-offers ---------------------------------------------------------------


def apply_version_rule(
    previous: SessionDescription | None, new: SessionDescription
) -> SessionDescription:
    """What to send on a leg where we last sent ``previous`` (RFC 3264 §8).

    The o= line stays ``previous``'s; its version is unchanged when nothing else changed and goes
    up by one when anything did. With no previous description, ``new`` is returned as is.
    """
    if previous is None:
        return new
    unchanged = attrs.evolve(new, origin=previous.origin)
    if unchanged == previous:
        return previous
    return attrs.evolve(new, origin=previous.origin.bumped())


def check_version_rule(previous: SessionDescription, new: SessionDescription) -> bool:
    """Whether a peer's ``new`` description declares a change from ``previous`` (RFC 3264 §8).

    Returns False for the same version (then the content must be identical), True for a higher
    one. Raises :class:`SdpError` when the o= username, session id or network type changed (a
    different session, not a modification), when the version went down, or when the content
    changed without a new version. The address in o= may change (a phone that moved from IPv4 to
    IPv6) and a version that rises by more than one is tolerated: neither can mislead us.
    """
    old, cur = previous.origin, new.origin
    if (old.username, old.session_id, old.nettype) != (cur.username, cur.session_id, cur.nettype):
        raise SdpError("o= line names a different session (RFC 3264 §8)")
    if cur.session_version < old.session_version:
        raise SdpError("o= version went backwards (RFC 3264 §8)")
    if cur.session_version == old.session_version:
        if attrs.evolve(new, origin=old) != previous:
            raise SdpError("SDP changed without a new o= version (RFC 3264 §8)")
        return False
    return True


def answer_with(offer: SessionDescription, other: SessionDescription) -> SessionDescription:
    """An answer to ``offer`` that says what ``other``, an offer made elsewhere, says: its
    address, its ports line by line and its codecs (RFC 3264 §6: ``offer``'s payload type
    numbers, directions answered sendrecv). For joining two parties that each made an offer
    (call pickup: the caller's offer went to the ringing phone, the picker's phone offers in
    its INVITE): each one's offer is answered with the other's. A line ``other`` lacks, of
    another media type or with a codec in common with none, is rejected.

    Raises :class:`SdpError` as :func:`make_answer`, and when ``other`` has no c= line."""
    connection = other.connection or next(
        (m.connection for m in other.media if m.connection is not None), None
    )
    if connection is None:
        raise SdpError("no connection address to answer with")
    caps: dict[str, list[Codec]] = {}
    ports: list[int] = []
    for index, offered in enumerate(offer.media):
        theirs = other.media[index] if index < len(other.media) else None
        usable = (
            theirs is not None
            and not theirs.is_rejected
            and theirs.is_rtp
            and theirs.media.lower() == offered.media.lower()
        )
        ports.append(theirs.port if usable and theirs is not None else 0)
        if usable and theirs is not None:
            known = caps.setdefault(offered.media, [])
            for rtpmap in offered_formats(theirs):
                codec = Codec(rtpmap.encoding, rtpmap.clock_rate, rtpmap.channels or 1)
                if codec not in known:
                    known.append(codec)
    return make_answer(
        offer,
        caps,
        origin=other.origin,
        connection=connection,
        ports=ports,
        rtcp_mux=any(m.rtcp_mux for m in other.media),
        session_name=other.session_name,
    )
