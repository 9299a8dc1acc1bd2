"""The ``dialog`` event package's body (RFC 4235 ``application/dialog-info+xml``) and what one
watcher's subscription still has to send; who may watch whom.

Theory of operation. The gateway is the notifier for its own accounts' calls
(gateway/core/calls/dialog_events.py). Each call of a watched account is one <dialog> of that
account (RFC 4235 §4.1.1), in one of the states of §3.7.1's state machine as the B2BUA sees the
account's leg: ``trying`` (its INVITE is out or in), ``early`` (a 1xx with a tag: ringing),
``confirmed`` (answered) and ``terminated`` (ended, answered elsewhere, failed). ``direction``
says who called: ``initiator`` when the account did, ``recipient`` when it was called.

Every NOTIFY carries the full state (``state="full"``, §4.1: a notifier may always send full
state) with a ``version`` one more than the last one this subscription sent, starting at 0
(§4.1.2), so a phone that missed one loses nothing. A dialog's ``id`` is an opaque token per
call. Call-ID and tags let a watcher address the dialog, so they are sent only to watchers the
operator lets pick up the watched account's calls (``pickup``), only for a call ringing the
account (``early``, ``recipient``): they are those of our dialog with its ringing phone as that
phone sees it (§4.1: ``local-tag`` its own tag, ``remote-tag`` ours), from which a BLF phone
builds ``Replaces: <call-id>;to-tag=<remote-tag>;from-tag=<local-tag>;early-only`` (RFC 3891).
Identities (§4.1.6) are sent only when the operator allows it (``show_parties``): who talks to
whom is the watched account's business.

Bursts are coalesced (RFC 6665 §4.2.2 allows a notifier to rate-limit): a subscription sends one
NOTIFY at a time, and the states changed meanwhile wait in :class:`Notifications`. A waiting
document is replaced by a newer one only when every dialog shows the same state in both, so a
phone sees each call's early and confirmed even when they come within one round trip; at most
:data:`MAX_WAITING` documents wait (beyond, the newest replaces the last waiting).

Sans-IO: values in, bytes out. The body is built with :mod:`xml.etree.ElementTree`, which
escapes markup; characters XML 1.0 cannot carry (controls in a display name a carrier sent)
are dropped first.
"""

from __future__ import annotations

import enum
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence

import attrs

CONTENT_TYPE = "application/dialog-info+xml"  # RFC 4235 §4
NAMESPACE = "urn:ietf:params:xml:ns:dialog-info"
MAX_WAITING = 8
"""Documents one subscription keeps waiting while its NOTIFY is out."""
MAX_DIALOGS = 8
"""Dialogs in one document at most: a lamp shows one state, and eight dialogs with identities
still fit a UDP datagram (RFC 3261 §18.1.1). Past it the ringing ones are kept first (what a
watcher acts on), then the newest (:func:`full_state`)."""

# XML 1.0 §2.2 Char: tab, newline, carriage return and everything from U+0020 but the
# surrogates and U+FFFE/U+FFFF.
_NOT_XML_CHAR = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_MAX_TEXT = 256  # a display name or URI longer than this is cut: a lamp needs none of it


class Phase(enum.Enum):
    """A dialog's state (RFC 4235 §3.7.1)."""

    TRYING = "trying"
    PROCEEDING = "proceeding"
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


class Direction(enum.Enum):
    """Who sent the INVITE, seen from the watched account (RFC 4235 §4.1.1)."""

    INITIATOR = "initiator"
    RECIPIENT = "recipient"


@attrs.frozen
class Party:
    """One end's identity (RFC 4235 §4.1.6.1): a URI and the display name it came with."""

    uri: str
    display: str | None = None


@attrs.frozen
class DialogIds:
    """The SIP dialog behind a <dialog> as the watched account's phone sees it (RFC 4235 §4.1:
    ``call-id``, ``local-tag``, ``remote-tag``)."""

    call_id: str
    local_tag: str
    """The phone's own tag (the To tag of its 1xx to us)."""
    remote_tag: str
    """Ours (the From tag of our INVITE to it)."""


@attrs.frozen
class DialogEntry:
    """One call of the watched account, as a <dialog> element. ``ids``: the dialog to pick up
    (a call ringing the account), sent only to watchers allowed to pick it up."""

    id: str
    phase: Phase
    direction: Direction
    local: Party | None = None
    remote: Party | None = None
    ids: DialogIds | None = None


def dialog_info_body(
    entity: str,
    version: int,
    dialogs: Iterable[DialogEntry],
    *,
    show_parties: bool,
    pickup: bool = False,
) -> bytes:
    """An ``application/dialog-info+xml`` document with the full state of ``entity``'s
    ``dialogs`` (RFC 4235 §4.1); identities only when ``show_parties``; the Call-ID and tags of
    a ringing call to ``entity`` only when ``pickup``."""
    root = ET.Element(
        "dialog-info",
        {"xmlns": NAMESPACE, "version": str(version), "state": "full", "entity": _text(entity)},
    )
    for entry in dialogs:
        attributes = {"id": _text(entry.id)}
        ids = entry.ids
        if (
            pickup
            and ids is not None
            and entry.phase is Phase.EARLY
            and entry.direction is Direction.RECIPIENT
        ):
            attributes["call-id"] = _text(ids.call_id)
            attributes["local-tag"] = _text(ids.local_tag)
            attributes["remote-tag"] = _text(ids.remote_tag)
        attributes["direction"] = entry.direction.value
        dialog = ET.SubElement(root, "dialog", attributes)
        ET.SubElement(dialog, "state").text = entry.phase.value
        if not show_parties:
            continue
        # RFC 4235 §4.1.6: <local> and <remote>, in this order after <state>.
        for name, party in (("local", entry.local), ("remote", entry.remote)):
            if party is None:
                continue
            element = ET.SubElement(dialog, name)
            identity = ET.SubElement(element, "identity")
            if party.display:
                identity.set("display", _text(party.display))
            identity.text = _text(party.uri)
    text = ET.tostring(root, encoding="unicode")
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + text.encode("utf-8")


def _text(value: str) -> str:
    return _NOT_XML_CHAR.sub("", value)[:_MAX_TEXT]


# -- one subscription's NOTIFYs ----------------------------------------------------------------

Snapshot = tuple[DialogEntry, ...]

_KEPT_FIRST = {Phase.EARLY: 0, Phase.PROCEEDING: 1, Phase.TRYING: 2, Phase.CONFIRMED: 3}


def full_state(entries: Sequence[DialogEntry]) -> Snapshot:
    """The dialogs of one document, oldest first: all of them, or past :data:`MAX_DIALOGS`
    those ringing, then the newest others. A dialog left out of a full document has ended as
    far as the watcher knows (RFC 4235 §4.1), which for a lamp is the least harm."""
    if len(entries) <= MAX_DIALOGS:
        return tuple(entries)
    order = sorted(
        range(len(entries)),
        key=lambda i: (_KEPT_FIRST.get(entries[i].phase, 4), -i),
    )
    kept = sorted(order[:MAX_DIALOGS])
    return tuple(entries[i] for i in kept)


def _phases(snapshot: Snapshot) -> dict[str, Phase]:
    return {entry.id: entry.phase for entry in snapshot}


@attrs.define
class Notifications:
    """What one subscription still has to send, and the ``version`` of its next document."""

    version: int = 0
    waiting: list[Snapshot] = attrs.field(factory=list)

    def push(self, snapshot: Snapshot) -> None:
        """A new state of the watched account's dialogs to send (see the module docstring)."""
        if self.waiting and _phases(self.waiting[-1]) == _phases(snapshot):
            self.waiting[-1] = snapshot  # nothing a lamp shows is lost: only the newest
        elif len(self.waiting) >= MAX_WAITING:
            self.waiting[-1] = snapshot
        else:
            self.waiting.append(snapshot)

    def take(self) -> tuple[int, Snapshot] | None:
        """The next document to send and its version (each one more, RFC 4235 §4.1.2);
        None when nothing waits."""
        if not self.waiting:
            return None
        snapshot = self.waiting.pop(0)
        version = self.version
        self.version += 1
        return version, snapshot


# -- who may watch whom ------------------------------------------------------------------------


@attrs.frozen
class WatchRules:
    """The operator's ``[[dialog_watch_groups]]``: members of a group watch each other; with
    ``show_parties`` in any group they share, the watcher sees identities; with ``pickup`` in
    any group they share, the watcher may pick up the watched account's ringing calls."""

    allowed: dict[tuple[str, str], bool] = attrs.field(factory=dict)
    """(watcher, watched) -> show_parties, for every pair a group allows."""
    pickup: frozenset[tuple[str, str]] = frozenset()
    """(picker, ringing account) pairs a group with ``pickup`` allows."""
    pickers: frozenset[str] = frozenset()
    """The accounts in some group with ``pickup``."""

    @classmethod
    def of(
        cls,
        groups: Sequence[tuple[Sequence[str], bool]],
        pickup: Sequence[Sequence[str]] = (),
    ) -> WatchRules:
        """From ``(accounts, show_parties)`` per group, and the accounts of each group with
        ``pickup``."""
        allowed: dict[tuple[str, str], bool] = {}
        for accounts, show_parties in groups:
            for watcher in accounts:
                for watched in accounts:
                    pair = (watcher, watched)
                    allowed[pair] = allowed.get(pair, False) or show_parties
        pairs = {
            (picker, ringing) for accounts in pickup for picker in accounts for ringing in accounts
        }
        return cls(allowed, frozenset(pairs), frozenset(picker for picker, _ in pairs))

    def may_pick_up(self, picker: str, ringing: str) -> bool:
        """Whether ``picker``'s phones may pick up calls ringing ``ringing`` (a group with
        ``pickup`` holds both; an account in one may also pick up its own calls on another of
        its phones). Default deny."""
        return (picker, ringing) in self.pickup

    def may_watch(self, watcher: str, watched: str) -> bool | None:
        """None when ``watcher`` may not watch ``watched`` (default deny), else whether it sees
        identities. An account always watches itself, parties shown: they are its own calls,
        which its phones show anyway."""
        if watcher == watched:
            return True
        return self.allowed.get((watcher, watched))
