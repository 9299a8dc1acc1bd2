"""A call transfer the B2BUA carries out for a REFER (RFC 3515): its parties and progress.

The gateway terminates REFER instead of passing it to the other leg (specs/sip-robustness.md:
"terminate transfers in the B2BUA"): carriers do not take REFER, and the new leg must go
through the gateway's routing, limits, media relay and keys like any other. Who is who (RFC
5589 §2): the **transferor** sent the REFER, the **transferee** is the party it talks to (the
call's other leg), the **target** is whom the transferee talks to afterwards.

How (:class:`gateway.core.calls.call.Call` "transfers", gateway/core/calls/transferring.py):

1. The REFER is answered 202 and a NOTIFY says ``SIP/2.0 100 Trying`` (RFC 3515 §2.4.4-2.4.5).
2. The target is routed as a call the transferor places (its routing, its limits, its number
   towards a trunk), and called with an INVITE **without SDP**; every device it rings gets one
   (a user's several phones), ``Referred-By`` naming the transferor (RFC 3892). For an
   attended transfer the target is the peer of the dialog the Replaces names, called with a
   Replaces for our own dialog with it (RFC 3891), so the target drops that call itself; if
   that call still rings (a semi-attended transfer), its ringing is stopped and the target is
   called as in a blind transfer. A trunk takes no Replaces: when the consultation call went
   to a trunk (or came from one), its trunk leg is taken over into this call (the consultation
   call ends, BYE to the transferor only) and re-INVITEd without SDP, whose 2xx brings its
   offer.
3. The target's 2xx brings its offer. It goes to the transferee in a re-INVITE (which also
   takes it off hold), through both legs' keys, as a re-offer from the transferor's side: the
   target takes over the transferor's side of the media session, ports and all.
4. The transferee's answer goes back in our ACK to the target. The target's leg replaces the
   transferor's; the last NOTIFY says ``SIP/2.0 200 OK``. The transferor's dialog is left for
   it to BYE (RFC 5589 §6), and BYEd by us after 64*T1 if it does not.

A blind transfer to a number fails over to the next trunk serving it as a call does: on a
``[sip] failover_statuses`` failure, or when the trunk has not responded at all within its
``response_timeout``.

A failure at any step (no route, the target busy or not answering within ``[sip]
ring_timeout``, an unusable offer, the transferee refusing the re-INVITE) goes to the transferor
as the final NOTIFY's status line; the call goes on as before (the transferor takes the
transferee off hold itself). A transferor that hung up before the end (phones doing "blind"
transfers BYE right after the 202) leaves the transfer to finish; if it then fails the call
ends.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

import attrs

from gateway.core.calls.leg import BLeg, Leg, Side
from gateway.core.interfaces import RouteTarget
from gateway.core.sdp.model import SessionDescription
from gateway.core.sip.refer import Replaces

if TYPE_CHECKING:
    from gateway.core.calls.events import InDialogRequest


@attrs.define(eq=False)
class Transfer:
    """One REFER being carried out."""

    transferor: Leg  # the leg the REFER came on; leaves the call when the transfer succeeds
    refer_cseq: int  # the REFER's CSeq: the ``id`` of its NOTIFYs' Event (RFC 3515 §2.4.6)
    notify: bool  # False: ``Refer-Sub: false`` (RFC 4488), no NOTIFYs
    target: str  # the Refer-To URI, for the log and the call record
    # When the implicit subscription (RFC 3515 §2.4.4) runs out: SUBSCRIPTION_SECONDS after
    # the REFER, or after the transferor's last refreshing SUBSCRIBE (RFC 6665 §4.1.2.2). Each
    # NOTIFY's Subscription-State says what is left of it.
    subscribed_until: float
    replaces: Replaces | None = None  # what our INVITE to the target replaces (attended)
    legs: list[BLeg] = attrs.Factory(list)  # our INVITEs to the target's devices
    answered: BLeg | None = None  # the device that answered first
    # Our re-INVITE to the transferee with the target's offer, once sent; the offer waits
    # (``deferred``) while another re-INVITE of the call is in progress.
    reinvite: InDialogRequest | None = None
    deferred: bool = False
    # An attended transfer to a trunk's call: our re-INVITE without SDP to the target's leg,
    # taken over from the consultation call (its 2xx brings the offer, as a target's 2xx does).
    join: InDialogRequest | None = None
    # The SDP (plain) the consultation call last sent in that leg's dialog: ours there
    # continues its o= line, the same session to the carrier (RFC 3264 §8).
    joined_sent: SessionDescription | None = None
    # The carrier refused that re-INVITE without SDP: our re-INVITE to it with an offer of the
    # call's media as its side had it (transferring.py, ``_join_with_our_offer``), once sent.
    join_offer: InDialogRequest | None = None
    # Once that carrier's answer joined it: our re-INVITE taking the held transferee off hold
    # (the transferee gets no offer of the carrier's, so nothing else would), once sent.
    join_resume: InDialogRequest | None = None
    # The trunk whose count that leg brought to this call (it counted only in the consultation
    # call): given back if the transfer fails and the leg is hung up.
    moved_count: tuple[str, str] | None = None
    deadline: float = math.inf  # while ringing: [sip] ring_timeout; then 64*T1 for the re-INVITE
    # Our re-INVITE (``reinvite`` or ``join``) met glare (491, RFC 3261 §14.1): sent again at
    # this time, at most ``GLARE_RETRIES`` times (gateway.core.calls.transferring).
    glare_retry: str = ""  # "transfer", "join" or "join-offer": which to send again
    glare_retry_at: float = math.inf
    glare_retries: int = 0
    notified: int = 0  # the last status a NOTIFY reported
    notified_reason: str = ""  # and its reason phrase (a refreshing SUBSCRIBE's NOTIFY repeats it)
    transferor_left: bool = False  # it sent BYE before the transfer ended
    # The ringing tone the transferee hears while the target rings (transferring.py,
    # media/tones.py): None before the target's first 1xx; "playing"; "waiting" while the
    # target rings but the transferee's SDP in force lets no tone play (a hold that says
    # inactive, no G.711), tried again each time a relayed re-INVITE changes it; "over" once
    # the target answered or the transfer failed.
    ringing_tone: Literal["playing", "waiting", "over"] | None = None
    # A blind transfer to a number several trunks serve: the trunks still to try, one at a
    # time, when the one called fails with a failover status (RouteDecision.alternates), and
    # the headers each of our INVITEs to the target carries (Referred-By).
    alternates: list[RouteTarget] = attrs.Factory(list)
    target_headers: tuple[tuple[str, str], ...] = ()

    @property
    def side(self) -> Side:
        """The side of the call the target takes over."""
        return self.transferor.side

    def still_calling(self, leg: BLeg) -> bool:
        """Whether our INVITE to ``leg`` is still wanted: nobody answered yet, and it was not
        given up for want of any response (its late 2xx is hung up, its 1xx CANCELled)."""
        return self.answered is None and leg in self.legs and leg.given_up is None
