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

Everything else on the line (telephone-event, CN 13, RTCP) passes as without transcoding:
G.711 has one octet a sample in both laws at 8000 Hz (RFC 3551 §4.5.14), so timestamps,
sizes and RTCP octet counts are the same. The relay does the per-packet part
(:mod:`gateway.core.media.g711`, ``DirectionControl.transcoding``).
"""

from __future__ import annotations

import attrs

from gateway.core.media.g711 import PCMA_PAYLOAD_TYPE, PCMU_PAYLOAD_TYPE, G711Transcoding, Law
from gateway.core.sdp.errors import SdpError
from gateway.core.sdp.model import STATIC_PAYLOAD_TYPES, MediaDescription, RtpMap

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
    leg B the other law with ``b_payload_type`` (each by its own SDP, RFC 3264 §5.1)."""

    index: int
    a_law: Law
    a_payload_type: int
    b_payload_type: int

    @property
    def a_to_b(self) -> G711Transcoding:
        return G711Transcoding(self.a_law, self.a_payload_type, self.b_payload_type)

    @property
    def b_to_a(self) -> G711Transcoding:
        return G711Transcoding(self.a_law.other, self.b_payload_type, self.a_payload_type)

    def describe(self) -> str:
        """``PCMU <-> PCMA transcoded``: leg A's law first."""
        return self.a_to_b.describe()


def g711_laws(media: MediaDescription) -> dict[Law, int]:
    """The G.711 laws among ``media``'s formats (8000 Hz, one channel) and the first number
    each has, by a=rtpmap or RFC 3551 static number; empty when its rtpmaps cannot be read."""
    try:
        rtpmaps = media.rtpmaps()
        payload_types = media.payload_types
    except SdpError:
        return {}
    found: dict[Law, int] = {}
    for payload_type in payload_types:
        rtpmap = rtpmaps.get(payload_type) or STATIC_PAYLOAD_TYPES.get(payload_type)
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
