"""G.711 transcoding between the two legs of a call: the offer/answer part. Sans-IO.

Theory of operation
-------------------
A leg that speaks only PCMU and one that speaks only PCMA share no codec: relayed as they are,
the answerer rejects the offer (488). With ``[media] g711_transcoding`` on (docs/architecture.md
"G.711 transcoding") the gateway offers the answerer the other law too, as rtpengine's
``codec-transcode`` and every SBC do:

- **Offer** (:func:`with_other_law`): on the call's first audio line, when the offerer's line
  has exactly one G.711 law, the other law is added AFTER all the offerer's own formats (its
  static number, 0 or 8, with an a=rtpmap): an answerer that shares any codec with the offerer
  prefers it (RFC 3264 §6.1: formats in order of preference) and nothing is transcoded. The
  number must be free on the line and not another codec's on the leg (the SDP we last sent
  there: a number may not change its codec within a session, RFC 3264 §8.3.2); otherwise
  nothing is added and the call goes on as without transcoding.
- **Answer** (:func:`plan_for_answer`): when the answer keeps the added law and not the
  offerer's, the stream is transcoded both ways (:class:`TranscodingPlan`: the offerer's
  law and number, the answerer's number for the other law); otherwise not.
- **Our answer to the offerer** (:func:`answer_in_offerers_law`): the added law was never the
  offerer's (RFC 3264 §6.1: an answer lists only offered formats): with a plan it becomes the
  offerer's law at the offerer's number, in its place; without one it is removed.

Payload type numbers (RFC 3264 §5.1, §6.1): each peer receives, and sends, a codec with the
number its own SDP gives it (the model of
:func:`~gateway.core.sdp.offer_answer.payload_type_map`). A converted packet leaves with the
number the receiving peer declared for the law it receives; the relay converts first and then
renumbers in the sender's numbers, so where the receiver's number for its law is one the
sender gives another codec that is renumbered (an answerer numbering PCMA 96 where the
offerer's telephone-event is 96 and the answerer's is 101), the direction keeps the sender's
number on conversion and its renumbering carries it to the receiver's
(:func:`through_renumbering`). Two cases are ambiguous and the stream is not transcoded (the
answer goes on as without transcoding, :func:`number_clash`): the answerer numbers the added
law with a number our offer gave another codec (its packets of that number could be either),
or gives the number we offered the law to another codec.

Everything else on the line (telephone-event, CN 13, RTCP) passes as without transcoding:
G.711 has one octet a sample in both laws at 8000 Hz (RFC 3551 §4.5.14), so timestamps,
sizes and RTCP octet counts are the same. The relay does the per-packet part
(:mod:`gateway.core.media.g711`, ``DirectionControl.transcoding``).
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from gateway.core.media.g711 import PCMA_PAYLOAD_TYPE, PCMU_PAYLOAD_TYPE, G711Transcoding, Law
from gateway.core.sdp.errors import SdpError
from gateway.core.sdp.model import STATIC_PAYLOAD_TYPES, MediaDescription, RtpMap
from gateway.core.sdp.offer_answer import codecs_by_format

STATIC_NUMBER = {Law.PCMU: PCMU_PAYLOAD_TYPE, Law.PCMA: PCMA_PAYLOAD_TYPE}
"""RFC 3551 §6: the number the gateway gives the law it adds."""


@attrs.frozen
class AddedLaw:
    """The G.711 law we added to the offer we sent: on m= line ``index``, as ``payload_type``;
    the offerer's own law and number on that line are ``offerer_law`` and
    ``offerer_payload_type``."""

    index: int
    offerer_law: Law
    offerer_payload_type: int
    payload_type: int


@attrs.frozen
class TranscodingPlan:
    """A transcoded stream (m= line ``index``): leg A speaks ``a_law`` with ``a_payload_type``,
    leg B the other law with ``b_payload_type`` (each by its own SDP, RFC 3264 §5.1).
    ``a_to_b_renumbered``/``b_to_a_renumbered``: that direction converts keeping the sender's
    number, which its payload type renumbering turns into the receiver's
    (:func:`through_renumbering`)."""

    index: int
    a_law: Law
    a_payload_type: int
    b_payload_type: int
    a_to_b_renumbered: bool = False
    b_to_a_renumbered: bool = False

    @property
    def a_to_b(self) -> G711Transcoding:
        to = self.a_payload_type if self.a_to_b_renumbered else self.b_payload_type
        return G711Transcoding(self.a_law, self.a_payload_type, to)

    @property
    def b_to_a(self) -> G711Transcoding:
        to = self.b_payload_type if self.b_to_a_renumbered else self.a_payload_type
        return G711Transcoding(self.a_law.other, self.b_payload_type, to)

    def describe(self) -> str:
        """``PCMU <-> PCMA transcoded``: leg A's law first."""
        return self.a_to_b.describe()


def g711_laws(media: MediaDescription) -> dict[Law, int]:
    """The G.711 laws among ``media``'s formats (8000 Hz, one channel) and the first number
    each has, by a=rtpmap or RFC 3551 static number; empty when its rtpmaps cannot be read."""
    try:
        formats = codecs_by_format(media)
    except SdpError:
        return {}
    found: dict[Law, int] = {}
    for payload_type, rtpmap in formats.items():
        law = _law_of(rtpmap)
        if law is not None:
            found.setdefault(law, payload_type)
    return found


def _law_of(rtpmap: RtpMap | None) -> Law | None:
    if rtpmap is None or rtpmap.codec_key[1:] != (8000, 1):
        return None
    name = rtpmap.encoding.upper()
    return Law.PCMU if name == "PCMU" else Law.PCMA if name == "PCMA" else None


def with_other_law(
    index: int, offered: MediaDescription, ours: MediaDescription, last: MediaDescription | None
) -> tuple[MediaDescription, AddedLaw] | None:
    """``ours`` (the offer we are about to send for the offerer's line ``offered``) with the
    other G.711 law added after every format, and what was added; None when the offerer's line
    has no G.711 law or both, or the static number is taken on the line or known on the leg
    (``last``, the SDP we last sent there) as another codec."""
    if not offered.is_rtp:
        return None
    laws = g711_laws(offered)
    if len(laws) != 1:
        return None
    ((law, payload_type),) = laws.items()
    added = law.other
    number = STATIC_NUMBER[added]
    if str(number) in ours.formats:
        return None  # our offer numbers it already (renumbered): not ours to add
    if last is not None and not last.is_rejected and str(number) in last.formats:
        known = g711_laws(last)
        if known.get(added) != number:
            return None  # the leg knows the number as another codec (RFC 3264 §8.3.2)
    media = attrs.evolve(
        ours,
        formats=(*ours.formats, str(number)),
        attributes=ours.attributes.add("rtpmap", f"{number} {added.value}/8000"),
    )
    return media, AddedLaw(index, law, payload_type, number)


def plan_for_answer(
    added: AddedLaw, offerer_is_a: bool, answered: MediaDescription
) -> TranscodingPlan | None:
    """The transcoding the answerer's line ``answered`` makes, in its own numbers: when it
    keeps the added law and not the offerer's; None otherwise (rejected, or a shared codec)."""
    if answered.is_rejected:
        return None
    laws = g711_laws(answered)
    if added.offerer_law in laws:
        return None
    theirs = laws.get(added.offerer_law.other)
    if theirs is None:
        return None
    if offerer_is_a:
        return TranscodingPlan(added.index, added.offerer_law, added.offerer_payload_type, theirs)
    return TranscodingPlan(added.index, added.offerer_law.other, theirs, added.offerer_payload_type)


def answer_in_offerers_law(
    added: AddedLaw, transcoded: bool, answer: MediaDescription
) -> MediaDescription:
    """Our answer to the offerer (``answer``, made from the answerer's) without the law we
    added: in its place the offerer's own law at its number when the stream is
    ``transcoded``, else nothing (the answer shares another codec); as it is when removing it
    would leave no format (not ours to repair)."""
    try:
        rtpmaps = answer.rtpmaps()
        payload_types = answer.payload_types
    except SdpError:
        return answer
    numbers = [
        pt
        for pt in payload_types
        if _law_of(rtpmaps.get(pt) or STATIC_PAYLOAD_TYPES.get(pt)) is added.offerer_law.other
    ]
    if not numbers:
        return answer
    gone = {str(pt) for pt in numbers}
    own = str(added.offerer_payload_type)
    formats: list[str] = []
    for fmt in answer.formats:
        if fmt in gone:
            if transcoded and own not in formats:
                formats.append(own)
        elif fmt != own or not transcoded:
            formats.append(fmt)
    if not formats:
        return answer
    attributes = answer.attributes.remove_if(
        lambda a: (
            a.name.lower() in ("rtpmap", "fmtp", "rtcp-fb")
            and (a.value or "").partition(" ")[0] in gone
        )
    )
    if transcoded:
        attributes = attributes.add("rtpmap", f"{own} {added.offerer_law.value}/8000")
    return attrs.evolve(answer, formats=tuple(formats), attributes=attributes)


def number_clash(added: AddedLaw, sent: MediaDescription, answered: MediaDescription) -> str | None:
    """Why the answerer's numbers make transcoding line ``added.index`` ambiguous, or None.
    ``sent``: our offer to the answerer; ``answered``: the answerer's own SDP for the line.

    Our offer gave the added law ``added.payload_type``; an answer may number it otherwise
    (RFC 3264 §6.1 only says SHOULD). Packets the answerer sends are then numbered by its own
    SDP (or, by the letter of §5.1, by ours): a number that one of the two SDPs gives the law
    and the other gives another codec could be either, and converting it would turn that
    codec into noise, or leave the law unconverted."""
    laws = g711_laws(answered)
    theirs = laws.get(added.offerer_law.other)
    if theirs is None or theirs == added.payload_type:
        return None
    law = added.offerer_law.other.value
    ours = _codec_names(sent)
    if theirs in ours:
        return (
            f"the answer numbers {law} {theirs}, which our offer gave {ours[theirs]}: "
            f"its packets numbered {theirs} could be either"
        )
    own = _codec_names(answered)
    if added.payload_type in own:
        return (
            f"the answer gives {added.payload_type}, the number we offered {law} at, to "
            f"{own[added.payload_type]} and numbers {law} {theirs}"
        )
    return None


def _codec_names(media: MediaDescription) -> dict[int, str]:
    """``media``'s payload types and their codecs (``name/rate``), as far as they are known."""
    try:
        rtpmaps = media.rtpmaps()
        payload_types = media.payload_types
    except SdpError:
        return {}
    names: dict[int, str] = {}
    for payload_type in payload_types:
        rtpmap = rtpmaps.get(payload_type) or STATIC_PAYLOAD_TYPES.get(payload_type)
        names[payload_type] = (
            f"{rtpmap.encoding}/{rtpmap.clock_rate}" if rtpmap is not None else "an unknown codec"
        )
    return names


def through_renumbering(
    transcoding: G711Transcoding, renumbered: Mapping[int, int], red: bool
) -> tuple[bool, dict[int, int]] | str:
    """One direction's transcoding and its payload type renumbering (the sender's numbers ->
    the receiver's, :func:`~gateway.core.sdp.offer_answer.payload_type_map`) made to agree:
    the relay converts first (the packet then has ``transcoding.to_payload_type``) and
    renumbers after, so a receiver's number that is a sender's number of another codec would
    be renumbered again. Returns whether the direction must convert keeping the sender's
    number, and the renumbering (with the sender's number of the law -> the receiver's
    number in that case); or why it cannot (a string): the sender's law number renumbered
    already, or RED (RFC 2198) whose blocks the renumbering rewrites but the conversion does
    not touch (its G.711 blocks would be named the other law)."""
    out = transcoding.to_payload_type
    if renumbered.get(out, out) == out:
        return False, dict(renumbered)
    sent = transcoding.payload_type
    if sent in renumbered:
        return f"payload type {sent} ({transcoding.law.value}) is renumbered already"
    if red:
        return f"the sender's RED blocks would name {transcoding.law.value} samples {out}"
    return True, {**renumbered, sent: out}
