"""Call pickup from busy lamp fields: an account's phone takes a call ringing a colleague.

Theory of operation. A BLF phone watching a colleague (gateway/core/calls/dialog_events.py)
gets, when a ``[[dialog_watch_groups]]`` group with ``pickup`` allows it, the Call-ID and tags
of our early dialog with the colleague's ringing phone (RFC 4235 §4.1). Pressing the key sends
an INVITE with ``Replaces: <call-id>;to-tag=<our tag>;from-tag=<the phone's tag>;early-only``
(RFC 3891). The dialog named is one the gateway initiated (our INVITE to the ringing phone), so
§3 lets us replace it while it is early: the ringing call answers its caller with the picker's
phone (``Call._picked_up``), and CANCELs the phones that rang with "Call completed elsewhere".

Who may (this module, sans-IO): the picker must be an account in a group with ``pickup``
(403 before any lookup otherwise, so nothing is learnt about dialogs), and the dialog must be
an early dialog of ours with a phone of an account a group lets it pick up. Anything else is
481, the answer §3 gives for a dialog that does not exist: a dialog of an account the picker
may not pick up is not told apart from none. A dialog its phone has answered already is 486
(§3: ``early-only`` and a confirmed dialog; without ``early-only`` too: the gateway does not
take over answered calls). Without ``early-only`` an early dialog is picked up all the same
(§3 allows replacing an early dialog its UAC initiated; some phones leave the flag out). A
dialog whose phone stopped ringing (refused) while another phone of the same account still
rings the call is picked up there: the BLF key is for the call, not for one of its phones.

Phones without a BLF key dial a feature code instead (``[feature_codes]``): ``pickup`` (``*8``)
takes the call that came in first of those ringing an account the picker may pick up;
``directed_pickup`` and an account's name (``**alice``, ``**201``) a call ringing that
account. The gateway answers that INVITE itself as it answers one with Replaces (the same call
path takes it from there); with nothing the picker may pick up ringing it gets 480 "no call to
pick up", whether nothing rings or what rings is not the picker's to take (as with 481 above,
nothing is learnt about other accounts' calls). Finding the call walks the calls in progress:
a cost of dialled pickups alone.

INVITEs with Replaces are looked at only while some group allows pickup
(``CallManager.pickup_enabled``: otherwise every INVITE pays a truth test and one with Replaces
is routed as a new call, as before); a trunk's then gets 403 (only accounts pick up calls), and
phones may send ``Require: replaces`` (the endpoint takes it then).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from gateway.core.calls.leg import BLeg, Side
from gateway.core.sip.dialog_info import WatchRules
from gateway.core.sip.errors import RemoteSipError
from gateway.core.sip.refer import Replaces, parse_replaces

if TYPE_CHECKING:
    from gateway.core.calls.call import Call

NOT_ALLOWED = (403, "Forbidden (not allowed to pick up calls)")
NO_SUCH_DIALOG = (481, "Call/Transaction Does Not Exist")
ANSWERED = (486, "Busy Here (answered already)")
NO_CALL_TO_PICK_UP = (480, "Temporarily Unavailable (no call to pick up)")
ANY_ACCOUNT = ""
"""What :func:`dialled_pickup` returns for the group pickup code."""


def dialled_pickup(pickup_code: str, directed_prefix: str, user: str) -> str | None:
    """What a dialled user part asks to pick up: :data:`ANY_ACCOUNT` for the pickup code, the
    account named after the directed pickup prefix, None for neither (a call to route)."""
    if pickup_code and user == pickup_code:
        return ANY_ACCOUNT
    if directed_prefix and user.startswith(directed_prefix) and len(user) > len(directed_prefix):
        return user[len(directed_prefix) :]
    return None


def ringing_call_to_pick_up(
    rules: WatchRules, picker: str, account: str, calls: Iterable[Call]
) -> tuple[Call, BLeg] | tuple[int, str]:
    """The call and ringing leg a dialled pickup by ``picker`` takes: of the calls ringing
    ``account`` (:data:`ANY_ACCOUNT`: any account ``picker`` may pick up), the one that came
    in first; else the status and reason to refuse the INVITE with (module docstring)."""
    if picker not in rules.pickers:
        return NOT_ALLOWED
    found: tuple[Call, BLeg] | None = None
    for call in calls:
        if call.state != "ringing" or call.b is not None:
            continue
        if call.a.peer_kind == "account" and call.a.peer_name == picker:
            continue  # its own outgoing call
        if found is not None and found[0].started_at <= call.started_at:
            continue
        for leg in call.b_legs:
            name = leg.peer_name
            if (
                leg.peer_kind == "account"
                and name is not None
                and (account == ANY_ACCOUNT or name == account)
                and leg.last_provisional is not None
                and leg.invite is not None
                and not leg.finished
                and rules.may_pick_up(picker, name)
            ):
                found = (call, leg)
                break
    return found if found is not None else NO_CALL_TO_PICK_UP


def parse_pickup_replaces_untrusted(value: str) -> Replaces:
    """The INVITE's ``Replaces`` (RFC 3891 §6.1): a Call-ID and both tags. Raises
    :class:`RemoteSipError` (400) otherwise."""
    if len(value) > 1024:
        raise RemoteSipError("Replaces too long", status=400)
    try:
        return parse_replaces(value)
    except RemoteSipError:
        raise RemoteSipError("unreadable Replaces (needs Call-ID, to-tag, from-tag)") from None


def ringing_leg_to_pick_up(
    rules: WatchRules,
    picker: str,
    replaces: Replaces,
    found: tuple[Call, Side] | None,
) -> BLeg | tuple[int, str]:
    """The B leg ``picker`` picks up with ``replaces``, or the status and reason to refuse
    its INVITE with (see the module docstring). ``found``: the call and side of our dialog
    with ``replaces``' Call-ID and our tag (``to-tag``: ours, as the INVITE's recipient
    sees it, §3), from ``CallManager.find_dialog``."""
    if picker not in rules.pickers:
        return NOT_ALLOWED
    if found is None or found[1] is not Side.B:
        return NO_SUCH_DIALOG
    call = found[0]
    leg = next(
        (
            leg
            for leg in call.b_legs
            if leg.invite is not None
            and leg.invite.call_id == replaces.call_id
            and leg.invite.from_.tag == replaces.to_tag
        ),
        None,
    )
    if (
        leg is None
        or leg.peer_kind != "account"
        or leg.peer_name is None
        or not rules.may_pick_up(picker, leg.peer_name)
        or (call.a.peer_kind == "account" and call.a.peer_name == picker)  # its own call
    ):
        return NO_SUCH_DIALOG
    if call.b is leg:
        dialog = leg.dialog
        if dialog is not None and dialog.remote_tag == replaces.from_tag:
            return ANSWERED
        return NO_SUCH_DIALOG
    ringing = leg.last_provisional
    if (
        call.state != "ringing"
        or call.b is not None
        or ringing is None
        or ringing.to.tag != replaces.from_tag
    ):
        return NO_SUCH_DIALOG
    if leg.finished:
        # That phone has stopped ringing (its user refused the call) while another phone of
        # the same account rings on: the NOTIFY named the first to ring, the user presses the
        # key for the call, so that one is picked up. None left: the call is gone (481).
        return next(
            (
                other
                for other in call.b_legs
                if other.peer_kind == "account"
                and other.peer_name == leg.peer_name
                and other.last_provisional is not None
                and not other.finished
            ),
            NO_SUCH_DIALOG,
        )
    return leg
