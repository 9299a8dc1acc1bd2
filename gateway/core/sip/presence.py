"""Presence (RFC 3856) for the gateway's own accounts: PIDF documents (RFC 3863) and the event
state compositor of their publications (PUBLISH, RFC 3903).

Theory of operation. An account's phone publishes its presence (``PUBLISH``, ``Event:
presence``, an ``application/pidf+xml`` body) for its own address of record; its buddies'
phones subscribe to it (``SUBSCRIBE``, ``Event: presence``) and get a NOTIFY with the current
document on each change (gateway/core/calls/dialog_events.py, the same notifier as the BLF's
``dialog`` package). This module keeps the publications, sans-IO:

* Each successful PUBLISH without ``SIP-If-Match`` creates a publication with a fresh entity
  tag (RFC 3903 §6 step 7). One with ``SIP-If-Match`` names a publication of the same account:
  an unknown (or expired, or another account's) tag is 412 Conditional Request Failed (§6
  step 2); with a body it modifies the document, without one it refreshes it, with ``Expires:
  0`` it removes it (§4.2 ... §4.5). Each success gives the publication a new entity tag (§6
  step 7: the old one stops matching), returned in ``SIP-ETag`` with the ``Expires`` granted.
* Expires is bounded as for subscriptions (gateway/core/sip/events.py: 423 below a minute, at
  most an hour, an hour when absent: RFC 3903 §5 lets the compositor choose).
* Composition (RFC 3903 §6: the compositor's policy): an account keeps at most
  :data:`MAX_PER_ACCOUNT` publications (its phones), a new one past it replaces the one that
  expires first (a rebooted phone forgot its tag and stopped refreshing it). Watchers get one
  document: the one most recently published or modified (the user's latest action: a
  softphone set to "away" shows away, whatever the desk phone said earlier; refreshes do not
  count) of those that say ``open`` or ``closed``; one that says neither (baresip's
  ``unknown``) only when none does. Not "the latest open one": a phone that raced itself into
  two publications (baresip 1.0 publishes on start and again on registering, both before its
  first answer brings a tag) could then never show closed. Tuples are not merged: documents
  from different clients rarely agree on tuple ids or extensions, and a watcher shows one
  status anyway.
* Shared (``[store]``, gateway/core/calls/presence.py): each publication remembers the entity
  tag under which the store last saved it (:attr:`Publication.saved_etag`; None: not saved).
  :meth:`Publications.reconcile` makes an account's publications what the store holds, keeping
  those this node could not save: an entity tag names one version of a publication (a new one
  on every success), so a tag both sides know needs no comparison; a saved tag the store no
  longer has was refreshed, modified, removed or replaced on another node, and a tag only the
  store has is another node's publication (or version). Watchers are told only when the
  document they see changes (its bytes: a refresh elsewhere changes nothing they see).
* Nothing published (or everything expired or removed): a document of the gateway's with one
  tuple (RFC 3863 §4.1.4): ``open`` while the account is registered (``[presence]
  from_registration``, :class:`Registrations`: most desk phones never publish), else
  ``closed``, so a buddy shows offline rather than stale.

Untrusted input (STYLE.md habit 5): a document is at most :data:`MAX_DOCUMENT` octets, UTF-8,
carries no DTD (no ``<!DOCTYPE``: no entity can be declared, expanded or fetched, as the X1
parser of gateway/plugins/taps/intercept/x1.py), is well-formed, its root ``<presence>`` in
the PIDF namespace with an ``entity`` naming the publishing account, and at most
:data:`MAX_TUPLES` tuples, each with an ``id`` and a ``<status>`` whose ``<basic>``, if
present, is a short lower-case word: ``open`` or ``closed`` by RFC 3863 §4.1.4, and anything
else (baresip's ``unknown``) taken as not open. Anything else is 400 with a reason. The
document is passed on as published, extensions (RPID notes and activities) included: they are
what buddy lists show.

Sans-IO: bytes, strings and ``now`` in, values out; entity tags come from the caller (an
injected id source).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator, Sequence
from urllib.parse import unquote

import attrs

from gateway.core.sip.errors import RemoteSipError
from gateway.core.sip.events import IntervalTooBrief, bounded_expires

CONTENT_TYPE = "application/pidf+xml"  # RFC 3863 §4
NAMESPACE = "urn:ietf:params:xml:ns:pidf"
MAX_DOCUMENT = 8192
"""A published document's size at most (octets): a few tuples with notes fit in 2 KB; a
NOTIFY carrying it still fits a UDP datagram at its fragmentation limit."""
MAX_TUPLES = 16
"""Tuples in one published document at most."""
MAX_PER_ACCOUNT = 4
"""Publications of one account kept at once (its phones); a new one replaces the one that
expires first."""
MAX_PUBLICATIONS = 20_000
"""Publications kept in all; a new one past it gets 503."""
MAX_ETAG = 64
"""An entity tag longer than this in SIP-If-Match is none of ours (412 without a lookup)."""

_P = f"{{{NAMESPACE}}}"
_BASIC = re.compile(r"[a-z]{1,16}")
_ENTITY = re.compile(r"(?:pres|sips?):([^@;?>]{1,128})@[^\s]{1,256}", re.IGNORECASE)


@attrs.frozen
class Pidf:
    """A published document as the gateway keeps it: its bytes (what watchers get), its
    overall status (``open`` when any tuple is open, RFC 3863 §4.1.4) and whether it says
    anything (some tuple's basic is ``open`` or ``closed``)."""

    body: bytes
    open: bool
    definite: bool = True


def parse_pidf_untrusted(body: bytes, *, account: str, max_size: int = MAX_DOCUMENT) -> Pidf:
    """A PUBLISH body from ``account``'s phone (see the module docstring for the checks);
    :class:`RemoteSipError` 400 with a reason when one fails (413-like sizes are 400 too: RFC
    3903 §6 step 4 has the ESC refuse a body it cannot process)."""
    if len(body) > max_size:
        raise RemoteSipError(f"Bad Request (presence document over {max_size} octets)")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise RemoteSipError("Bad Request (presence document not UTF-8)") from None
    if "<!DOCTYPE" in text or "<!ENTITY" in text:
        raise RemoteSipError("Bad Request (a DTD is not accepted)")
    try:
        root = ET.fromstring(text)
    except ET.ParseError:
        raise RemoteSipError("Bad Request (presence document not well-formed)") from None
    if root.tag != f"{_P}presence":
        raise RemoteSipError("Bad Request (not a PIDF presence document)")
    entity = _ENTITY.fullmatch(root.get("entity") or "")
    if entity is None or unquote(entity.group(1)) != account:
        # RFC 3903 §6 step 3 ... RFC 3856 §6.5: an account publishes for itself only.
        raise RemoteSipError("Bad Request (entity is not the publisher's address)", status=403)
    tuples = root.findall(f"{_P}tuple")
    if len(tuples) > MAX_TUPLES:
        raise RemoteSipError(f"Bad Request (more than {MAX_TUPLES} tuples)")
    is_open = definite = False
    for element in tuples:
        status = element.find(f"{_P}status")
        if not element.get("id") or status is None:
            raise RemoteSipError("Bad Request (a tuple without id or status)")
        basic = status.findtext(f"{_P}basic")
        if basic is None:
            continue  # RFC 3863 §4.1.4: <basic> is optional (extensions carry the status)
        basic = basic.strip()
        if not _BASIC.fullmatch(basic):
            raise RemoteSipError("Bad Request (malformed basic status)")
        # RFC 3863 §4.1.4 knows open and closed; baresip 1.0 publishes "unknown" before its
        # user set a status: passed on, not open (watchers show it as offline).
        is_open = is_open or basic == "open"
        definite = definite or basic in ("open", "closed")
    return Pidf(body, is_open, definite)


def closed_document(entity: str) -> bytes:
    """The neutral document of an account that published nothing (RFC 3863 §4.1.4: one tuple,
    ``closed``): offline, for all its watchers know."""
    return _gateway_document(entity, "closed")


def open_document(entity: str) -> bytes:
    """The document of an account that published nothing but is registered (``[presence]
    from_registration``): one tuple, ``open`` (RFC 3863 §4.1.4: reachable for communication)."""
    return _gateway_document(entity, "open")


def _gateway_document(entity: str, basic: str) -> bytes:
    root = ET.Element("presence", {"xmlns": NAMESPACE, "entity": entity})
    status = ET.SubElement(ET.SubElement(root, "tuple", {"id": "gw"}), "status")
    ET.SubElement(status, "basic").text = basic
    text = ET.tostring(root, encoding="unicode")
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + text.encode("utf-8")


# -- the publications (RFC 3903 §6) -------------------------------------------------------------


@attrs.define(eq=False)
class Publication:
    """One phone's published state: its document until ``expires_at`` (caller's clock);
    ``saved_etag``: the entity tag the shared store holds it under (None: not in the store)."""

    account: str
    etag: str
    document: Pidf
    expires_at: float
    published_at: float
    saved_etag: str | None = None
    unsaved: bool = False
    """This version could not be written (the store did not answer): the store's version
    (``saved_etag``) is older and may run out or be deleted first; :meth:`Publications.reconcile`
    keeps this one all the same, until a save succeeds or says it was superseded."""


@attrs.frozen
class Published:
    """A successful PUBLISH: answer 200 with ``SIP-ETag: etag`` (None after a removal) and
    ``Expires: expires``; ``changed`` when watchers see another document now. For the store:
    ``publication`` is the one made, refreshed or modified (None after a removal), ``dropped``
    those removed (the removal's, one a new publication replaced)."""

    etag: str | None
    expires: int
    changed: bool
    publication: Publication | None = attrs.field(default=None, eq=False, repr=False)
    dropped: tuple[Publication, ...] = attrs.field(default=(), eq=False, repr=False)


@attrs.frozen
class Refused:
    """Answer ``status`` (412, 423, 400, 503) with ``reason``; ``min_expires`` for a 423."""

    status: int
    reason: str | None = None
    min_expires: int | None = None


class Publications:
    """Every account's publications and the document each account's watchers get."""

    def __init__(
        self, *, max_per_account: int = MAX_PER_ACCOUNT, limit: int = MAX_PUBLICATIONS
    ) -> None:
        self._by_etag: dict[str, Publication] = {}
        self._by_account: dict[str, list[Publication]] = {}
        self._max_per_account = max_per_account
        self._limit = limit
        self.taken = 0
        """Publications :meth:`reconcile` took from the store, since the start (their expiries
        are new to the caller's timer when this moves)."""

    def __len__(self) -> int:
        return len(self._by_etag)

    def publish(
        self,
        account: str,
        *,
        if_match: str | None,
        expires: int,
        document: Pidf | None,
        new_etag: str,
        now: float,
    ) -> Published | Refused:
        """Apply one PUBLISH of ``account`` (RFC 3903 §6): ``if_match`` its SIP-If-Match,
        ``expires`` what it asked (absent: the caller passes the default), ``document`` its
        parsed body or None, ``new_etag`` the tag to give the publication on success."""
        before = self.document(account)
        asked = bounded_expires(expires)
        if isinstance(asked, IntervalTooBrief):
            return Refused(423, min_expires=asked.min_expires)
        if if_match is None:
            if document is None:
                # §6 step 4: an initial PUBLISH must carry a body.
                return Refused(400, "Bad Request (initial PUBLISH without a body)")
            if asked == 0:
                return Published(None, 0, False)  # nothing to keep
            mine = self._by_account.get(account, [])
            dropped: tuple[Publication, ...] = ()
            if len(mine) >= self._max_per_account:
                # The one expiring first: a rebooted phone's forgotten, unrefreshed one.
                oldest = min(mine, key=lambda p: p.expires_at)
                self._remove(oldest)
                dropped = (oldest,)
            elif len(self._by_etag) >= self._limit:
                return Refused(503, "Service Unavailable (publication limit)")
            publication = Publication(account, new_etag, document, now + asked, now)
            self._by_etag[new_etag] = publication
            self._by_account.setdefault(account, []).append(publication)
            changed = self.document(account) is not before
            return Published(new_etag, asked, changed, publication, dropped)
        found = self.find(account, if_match, now=now)
        if found is None:
            # §6 step 2: an unknown or expired tag (another account's is none of its own).
            return Refused(412)
        if asked == 0:
            self._remove(found)  # §4.5: removal
            return Published(None, 0, self.document(account) is not before, None, (found,))
        del self._by_etag[found.etag]
        found.etag = new_etag  # §6 step 7: a new tag on every success
        self._by_etag[new_etag] = found
        found.expires_at = now + asked
        if document is not None:  # a modification (§4.4); else a refresh (§4.3)
            found.document = document
            found.published_at = now
        changed = self.document(account) is not before
        return Published(new_etag, asked, changed, found)

    def find(self, account: str, if_match: str, *, now: float) -> Publication | None:
        """``account``'s unexpired publication whose entity tag is ``if_match`` (a
        SIP-If-Match), else None."""
        if len(if_match) > MAX_ETAG:
            return None
        found = self._by_etag.get(if_match.strip())
        if found is None or found.account != account or found.expires_at <= now:
            return None
        return found

    def reconcile(self, account: str, stored: Sequence[Publication], *, now: float) -> bool:
        """Make ``account``'s publications what the shared store holds (``stored``: its
        unexpired ones, each with :attr:`Publication.saved_etag` its entity tag, times on the
        caller's clock), keeping those this node has not saved; True when the document its
        watchers get changed (its bytes)."""
        before = self.document(account)
        mine = list(self._by_account.get(account, ()))
        in_store = {publication.etag for publication in stored}
        for publication in mine:
            if (
                publication.saved_etag is not None
                and not publication.unsaved
                and publication.saved_etag not in in_store
            ):
                # Refreshed, modified, removed or replaced on another node, or expired.
                self._remove(publication)
        known = {p.etag for p in mine} | {p.saved_etag for p in mine if p.saved_etag}
        for publication in stored:
            if (
                publication.etag in known
                or publication.etag in self._by_etag
                or publication.account != account
                or publication.expires_at <= now
                or len(self._by_etag) >= self._limit
            ):
                continue
            self._by_etag[publication.etag] = publication
            self._by_account.setdefault(account, []).append(publication)
            self.taken += 1
        kept = self._by_account.get(account, [])
        while len(kept) > self._max_per_account:
            self._remove(min(kept, key=lambda p: p.expires_at))
        after = self.document(account)
        return (before.body if before else None) != (after.body if after else None)

    def due(self, *, now: float) -> list[str]:
        """The accounts with a saved publication that ran out by ``now``: the caller looks
        them up in the store before :meth:`handle_timer` (another node may have refreshed it
        under a new entity tag this node has not polled yet)."""
        return list(
            dict.fromkeys(
                p.account
                for p in self._by_etag.values()
                if p.expires_at <= now and p.saved_etag is not None
            )
        )

    def document(self, account: str) -> Pidf | None:
        """The document ``account``'s watchers get: the latest published or modified of those
        saying open or closed, else the latest; None when there is none (the caller sends
        :func:`closed_document`)."""
        mine = self._by_account.get(account)
        if not mine:
            return None
        return max(mine, key=lambda p: (p.document.definite, p.published_at)).document

    def get_timer(self) -> float | None:
        """When the next publication runs out; None when there is none."""
        return min((p.expires_at for p in self._by_etag.values()), default=None)

    def handle_timer(self, *, now: float) -> set[str]:
        """Remove the publications that ran out by ``now`` (§6: the compositor forgets them);
        the accounts whose document changed."""
        changed: set[str] = set()
        for publication in [p for p in self._by_etag.values() if p.expires_at <= now]:
            before = self.document(publication.account)
            self._remove(publication)
            if self.document(publication.account) is not before:
                changed.add(publication.account)
        return changed

    def _remove(self, publication: Publication) -> None:
        self._by_etag.pop(publication.etag, None)
        mine = self._by_account.get(publication.account, [])
        if publication in mine:
            mine.remove(publication)
        if not mine:
            self._by_account.pop(publication.account, None)


# -- presence derived from registration ([presence] from_registration) -------------------------


class Registrations:
    """Whether each watched account is registered: ``open`` while it has a binding that has
    not expired, as FreeSWITCH and Asterisk derive presence from registration. Only accounts
    someone watches are kept (:meth:`watch` ... :meth:`forget`); the caller feeds each one's
    binding expiries (wall-clock seconds, the registrar's clock) as it learns them: from a
    REGISTER it handled, from the store at a binding's expiry (it may have been refreshed on
    another node sharing the store) and from a periodic look at the store (removals by another
    node, ``voipgw accounts remove``, a revoked certificate)."""

    def __init__(self) -> None:
        self._until: dict[str, float] = {}
        """Watched account -> its latest binding's expiry (0.0: not registered)."""

    def __contains__(self, account: object) -> bool:
        return account in self._until

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._until))

    def __len__(self) -> int:
        return len(self._until)

    def watch(self, account: str, expiries: Iterable[float], *, now: float) -> None:
        """Start keeping ``account``'s state, from its bindings' expiries."""
        self._until[account] = _latest(expiries, now)

    def forget(self, account: str) -> None:
        """Nobody watches ``account`` any more."""
        self._until.pop(account, None)

    def is_open(self, account: str) -> bool:
        """Whether ``account`` was registered when last told (False when not watched)."""
        return self._until.get(account, 0.0) > 0.0

    def update(self, account: str, expiries: Iterable[float], *, now: float) -> bool:
        """``account``'s bindings now; True when it went from registered to not or back (its
        watchers get a NOTIFY), False for a refresh or an account nobody watches."""
        before = self._until.get(account)
        if before is None:
            return False
        until = self._until[account] = _latest(expiries, now)
        return (until > 0.0) != (before > 0.0)

    def get_timer(self) -> float | None:
        """When the next registered account's last binding runs out; None when none is."""
        return min((until for until in self._until.values() if until > 0.0), default=None)

    def due(self, *, now: float) -> list[str]:
        """The registered accounts whose last known binding ran out by ``now``: the caller
        looks them up again (a refresh elsewhere) and :meth:`update` s them."""
        return [account for account, until in self._until.items() if 0.0 < until <= now]

    def postpone(self, account: str, until: float) -> None:
        """Keep ``account`` registered until ``until`` (its store could not be read: asked
        again then, not in a loop)."""
        if self._until.get(account, 0.0) > 0.0:
            self._until[account] = until


def _latest(expiries: Iterable[float], now: float) -> float:
    return max((expiry for expiry in expiries if expiry > now), default=0.0)
