"""The key handshakes of one call that run on the media path (DTLS-SRTP, ZRTP), driven from one
task.

Theory of operation. A key exchange with ``media_path`` (``dtls``, ``zrtp``) is a sans-IO engine:
it never touches a socket nor a clock. :class:`CallHandshakes` is the call's task that moves its
datagrams and time (RFC 5764 §5.1.2 and RFC 6189 §5: both share the 5-tuple of RTP):

- the relay hands every datagram that is not RTP/RTCP arriving on a leg's RTP socket (or RTCP
  socket) to :meth:`CallHandshakes.deliver`, which puts it on a bounded queue, fair between the
  sources that are neither a leg's SDP address nor its proven peer (full: the newest datagram
  of the source with the most waiting is dropped and counted; handshakes retransmit), those
  an engine says returned its cookie first (:data:`QUEUE_VERIFIED_FIRST`); the
  stream's negotiation takes it if it claims the first byte's range (RFC 7983: DTLS 20..63,
  ZRTP 16..19), else it is counted as unclaimed;
- the task waits until the earliest ``get_timer()`` of the streams or a datagram, then for every
  stream: ``handle_timer(now=)`` when due, the datagram to its stream with ``receive_packet``,
  ``packets_to_send(now=)`` out of the leg's RTP socket to the leg's media address, and the
  events: ``KeysReady`` sets the stream's keys and calls ``on_keys`` (the call re-applies
  :class:`~gateway.core.media.keying.CallKeying`, which unblocks the stream);
  ``SasReady`` (ZRTP) is logged, the SAS itself is in the stream's record;
  ``NegotiationFailed`` calls ``on_failure`` (the call ends: 488, or BYE with a Reason);
- a leg without rtcp-mux runs a second handshake on its RTCP port (RFC 5764 §4.1): the stream's
  negotiation gives it (``rtcp_component()``), its datagrams go in and out of the RTCP socket,
  its ``KeysReady`` sets the stream's SRTCP keys (RTCP is dropped until then) and its failure
  ends the call like the RTP port's. A leg we offered to has no such handshake before its
  answer (our role is not known yet), but a callee that answers ``a=setup:active`` starts both
  ports' handshakes as it answers, or as it rings (baresip), and its ClientHellos may come
  before its answer (RFC 5763 §5). So the RTCP socket of a leg that may need one takes such
  datagrams from the start: up to :data:`EARLY_RTCP_DATAGRAMS` are held and handed to the
  RTCP port's handshake once it exists (the RTP port's engine holds its own, until the answer).
  Dropped, the ClientHello waited for its retransmission (1 s, RFC 6347 §4.2.4.1), and SRTCP
  was dropped both ways until then;
- a side can be held (:meth:`CallHandshakes.hold`, :meth:`CallHandshakes.release`): while
  our SDP answer to that leg is not sent yet, its handshakes neither start nor send (the DTLS
  client's ClientHello, its timers) and datagrams from its peer are kept (up to
  :data:`HELD_DATAGRAMS` per port, :data:`HELD_PER_SOURCE` of them from any one source other
  than the SDP address) until the release. The answer carries our fingerprint, which
  the peer needs to check our certificate (RFC 5763 §5): a phone given our ClientHello before
  our 200 ignores it (baresip does) and the handshake waits for its retransmission, 1 s (RFC
  6347 §4.2.4.1), the call's media with it. With media workers the 200 waits for the workers'
  ``MediaSession.applied()`` round trip, during which this task ran first;
- before a callee's SDP gave its address (our offer waits for its answer), what its side's
  sockets hand on is kept apart by source (:meth:`CallHandshakes._keep_unanswered`, at most
  :data:`FORK_SOURCES` sources per port): our one offer may have gone to several forks (RFC
  3261 §16.7), which share those sockets and may each start a handshake as they ring (RFC 5763
  §5). At the answer, the datagrams from its address go to its handshake and the others are
  dropped (:meth:`CallHandshakes._settle_unanswered`): the fingerprint check of the answering
  fork's handshake would fail on another fork's ClientHello and end the call, and a forged one
  from a stranger must not take the callee's place either. One B leg whose engine keeps other
  phones' handshakes (the dtls engine's ``keeps_other_phones``: a proxy downstream may have
  forked our offer) is the exception: its engine takes the other sources' datagrams too, after
  the answer's own, each with its source, and keeps them for another phone's answer (session
  55). An early answer (a 183 with SDP) is not the last word while another fork rings (RFC 3261
  §12.1.2): the other sources' datagrams stay kept until a final answer
  (:meth:`CallHandshakes._settle_early`), so a fork answering after another's early media has
  its ClientHellos too. The relay hands such datagrams on from every source while that side
  has no address (relay.py, ``_hand_on``);
- which streams are driven is read afresh from each leg's
  :meth:`~gateway.core.media.security.LegSecurity.media_path_streams` on every round, so a
  re-INVITE's new negotiation is picked up; the call calls :meth:`poke` after SDP changes.

``now`` is ``trio.current_time()``: the virtual clock in component tests, so retransmission and
the handshake timeout are tested without sleeping.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol, runtime_checkable

import trio

from gateway.core.interfaces import (
    KeyNegotiation,
    KeysReady,
    NegotiationFailed,
    SasReady,
    SrtpKeys,
)
from gateway.core.ip import source_key
from gateway.core.logs import log_exception
from gateway.core.media.relay_api import Address, RelaySide, RelayStream
from gateway.core.media.security import LegSecurity, StreamSecurity
from gateway.core.media.session import MediaSession
from gateway.core.transport.flows import format_host_port

log = logging.getLogger(__name__)

INTERNAL_ERROR_REASON = "internal error in the media-path key exchange"

QUEUE = 64
"""Datagrams waiting for the task; more are dropped (a handshake flight is a few datagrams)."""

QUEUE_PER_SOURCE = 16
"""Of :data:`QUEUE`, datagrams waiting from one source (host and port) that is neither the
leg's SDP address nor the peer its key exchange proved; more from it are dropped (``blocked``):
a stranger's burst (forged ZRTP Hellos, ClientHellos) filled the queue the whole call shares,
and the phone's Hello was dropped with it. As many as a held port keeps (:data:`HELD_DATAGRAMS`)."""

QUEUE_KEPT_FOR_PEERS = 16
"""Of :data:`QUEUE`, room that only datagrams from a leg's SDP address or proven peer (the
source whose ZRTP Hello matched the peer's a=zrtp-hash, RFC 6189 §8.1) take: other sources
together (a stranger sending from many ports) fill at most the rest. That rest is shared
fairly (session 42): when it is full, a datagram from a source with fewer waiting than the
source with the most (by two or more) takes the place of that source's newest, which is
dropped (``blocked``; longest-queue drop). So a phone behind a NAT (such a source until its
exchange proved it) is no longer pushed out by a flood from a few sources (one host sending
from a few ports, spoofed or not): before, three sources' 16 each filled the 48 and the
phone's ClientHello or Hello was dropped until its resend. A flood from 48 sources or more,
each with one datagram waiting, leaves the phone an equal chance with each, no more."""

QUEUE_VERIFIED_FIRST = 24
"""Of the room of :data:`QUEUE_KEPT_FOR_PEERS`'s other sources (48), how many datagrams from
sources whose ClientHello returned our DTLS cookie (RFC 6347 §4.2.1: they receive at their
host; the engine's optional ``verified_sources``) go first (session 43): while fewer of theirs
wait, one of theirs takes the place of the newest datagram of the source that did not with the
most waiting, whatever its count, and theirs are never dropped for another's. So a flood from
48 spoofed sources or more, one datagram each, which gave a phone behind a NAT an equal chance
for every datagram of its handshake, gives it one only for its first ClientHello: the one that
returns our cookie is told before it is queued (the engine's optional
``returns_cookie_untrusted``, :meth:`CallHandshakes._returns_cookie`), and the rest of its
handshake comes from a verified source. Past it they share the room as every other source
does (a sender that can receive, verified from a few ports, does not keep a phone's first
ClientHello out)."""

EARLY_RTCP_DATAGRAMS = 16
"""Datagrams held per stream and leg that came on its RTCP port before that port's handshake
exists (the answer we wait for decides our role); more are dropped and counted (``dropped``).
As many as the DTLS engine holds on the RTP port (its ``MAX_EARLY_DATAGRAMS``)."""

HELD_DATAGRAMS = EARLY_RTCP_DATAGRAMS
"""Datagrams kept per side, stream and port while that side is held (:meth:`CallHandshakes.hold`);
more are dropped and counted (``dropped``)."""

HELD_PER_SOURCE = HELD_DATAGRAMS // 2
"""Of :data:`HELD_DATAGRAMS`, datagrams kept from one source (host and port) that is neither the
leg's SDP address nor the peer its key exchange proved; more from it are dropped (``blocked``),
the rest of the port's room is for other sources (a phone behind a NAT): a stranger's 16 forged
Hellos filled a held port and the phone's Hello was dropped until its resend after our answer
(as :data:`QUEUE_PER_SOURCE` bounds the queue)."""

FORK_SOURCES = 4
"""Sources whose datagrams are kept apart per port of a callee's stream while our offer waits
for its answer (forks, :meth:`CallHandshakes._keep_unanswered`); datagrams from more are dropped
and counted (``blocked``). Each keeps at most :data:`HELD_DATAGRAMS`."""

_Item = tuple[str, int, bool, bytes, Address | None] | None
"""(side, stream index, on the RTCP port, datagram, its source), or None: look again."""

_Kept = tuple[bytes, Address | None]
"""A datagram kept for later and its source (None: not known), fed with it."""


def _no_legs() -> Mapping[str, LegSecurity | None]:
    return {}


def _nothing() -> None:
    pass


def _no_failure(side: str, reason: str) -> None:
    pass


def _no_forks() -> Sequence[LegSecurity]:
    return ()


def _starts_handshake(packet: bytes) -> bool:
    """A DTLS handshake record of epoch 0 (RFC 6347 §4.1: content type 22, the epoch in octets
    3 and 4): a ClientHello, or the first flight answering one; never a record of an
    association whose handshake finished (encrypted, epoch 1 on)."""
    return len(packet) >= 13 and packet[0] == 22 and packet[3] == 0 and packet[4] == 0


_NAMES_NONE = object()


class _Engine:
    """The association of an engine that names none (no ``tls_id`` attribute): the engine
    object itself, by identity (held here, so its id is never another's)."""

    __slots__ = ("negotiation",)

    def __init__(self, negotiation: object) -> None:
        self.negotiation = negotiation

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Engine) and other.negotiation is self.negotiation

    def __hash__(self) -> int:
        return id(self.negotiation)


def _association(
    negotiation: KeyNegotiation | None, unnamed_engines: set[type]
) -> str | _Engine | None:
    """The association ``negotiation`` belongs to, for :meth:`CallHandshakes.hold`: the
    ``dtls`` engine's ``tls_id`` (our ``a=tls-id``, RFC 8842 §4: kept by a re-offer or
    re-answer that keeps the association, new for a new one). None for an engine that says
    it has none (``tls_id = None``: ZRTP, whose Hello needs no fingerprint of ours): held only
    until its side's first release. An engine without the attribute (a third-party engine
    written before it was documented) may start a new association at any re-offer, which we
    cannot tell: the engine object stands for its association, so a new engine is held until
    our answer goes as the first was (its ClientHello after our fingerprint, RFC 5763 §5), and
    the same engine is not held again; said in the log once per engine type of
    ``unnamed_engines`` (the gateway's, :class:`CallHandshakes`), which it adds the type to.
    A ``tls_id`` that is neither a str nor None is its plugin's bug, taken as none and said
    as such (an ERROR, once per type all the same). Read as an attribute, not by isinstance
    against a runtime-checkable Protocol: this runs per stream and round."""
    tls_id = getattr(negotiation, "tls_id", _NAMES_NONE)
    if tls_id is None or isinstance(tls_id, str):
        return tls_id
    if negotiation is None:
        return None
    kind = type(negotiation)
    if kind not in unnamed_engines:
        unnamed_engines.add(kind)
        taken = (
            "each new engine object is taken for a new association, held until our answer "
            "to its peer goes"
        )
        if tls_id is _NAMES_NONE:
            log.warning(
                "media-path key exchange engine %s.%s has no tls_id (docs/plugin_hooks.md, "
                '"Media-path engines"): %s',
                kind.__module__,
                kind.__qualname__,
                taken,
            )
        else:  # the type only: a plugin's value may be anything, a key among others
            log.error(
                "media-path key exchange engine %s.%s has a tls_id of type %s, neither a str "
                'nor None: a bug of its plugin (docs/plugin_hooks.md, "Media-path engines"); '
                "%s",
                kind.__module__,
                kind.__qualname__,
                type(tls_id).__name__,
                taken,
            )
    return _Engine(negotiation)


@runtime_checkable
class HasRtcpComponent(Protocol):
    """A media-path negotiation that keys a separate RTCP port with a handshake of its own (RFC
    5764 §4.1; the ``dtls`` engine): None while it cannot start yet (our role not known)."""

    def rtcp_component(self) -> KeyNegotiation | None: ...


class CallHandshakes:
    """The media-path key exchanges of one call. ``legs()`` gives each side's ("a", "b")
    :class:`LegSecurity` (None while a side has none settled); ``on_keys()`` is called when a
    stream got keys; ``on_failure(side, reason)`` when a stream's handshake failed."""

    def __init__(
        self,
        session: MediaSession,
        legs: Callable[[], Mapping[str, LegSecurity | None]],
        *,
        on_keys: Callable[[], None],
        on_failure: Callable[[str, str], None],
        forks: Callable[[], Sequence[LegSecurity]] = _no_forks,
        unnamed_engines: set[type] | None = None,
    ) -> None:
        self._session = session
        self._unnamed_engines: set[type] = set() if unnamed_engines is None else unnamed_engines
        """Engine types without a usable ``tls_id`` already said in the log
        (:func:`_association`): the gateway's (its CallManager's), so once per type and
        gateway; without it, this call's own."""
        self._legs = legs
        self._forks = forks
        """The securities of the B legs still ringing while no final answer chose B (parallel
        forks, RFC 3261 §16.7: our one offer went to each), also once ``legs()`` gives B the
        fork whose provisional answer (a 183 with SDP) gave its address early: another fork's
        200 may still win (RFC 3261 §12.1.2 allows several early dialogs)."""
        self._on_keys = on_keys
        self._on_failure = on_failure
        self._queue: deque[tuple[_Item, tuple[str, int] | None]] = deque()
        """Datagrams waiting for the task, oldest first (at most :data:`QUEUE`), each with
        its source (host, port) when it is counted against :data:`QUEUE_PER_SOURCE`, else
        None (:meth:`deliver`)."""
        self._waiting_from: dict[tuple[str, int], int] = {}
        """Datagrams waiting in the queue per such source."""
        self._verified: frozenset[tuple[str, int]] = frozenset()
        """The sources (host, port) the call's engines said returned a cookie of theirs
        (``verified_sources``), as read at the end of the last round: their datagrams go
        first (:data:`QUEUE_VERIFIED_FIRST`)."""
        self._returned_cookie: set[tuple[str, int]] = set()
        """Sources with datagrams waiting that were queued because they returned a cookie
        (:meth:`_returns_cookie`) though no engine named them: counted in
        :data:`QUEUE_VERIFIED_FIRST`'s share as :attr:`_verified`'s are (the ``dtls``
        engine's cookie is the host's: one returned from ever new ports of that host must
        not take the whole room). Forgotten with their last waiting datagram."""
        self._cookie_checks: dict[tuple[str, int, bool], Callable[..., object]] = {}
        """Per port (side, stream, RTCP port) its engine's optional
        ``returns_cookie_untrusted``, as read in the last round (:meth:`_returns_cookie`)."""
        self._cookie_checks_failed: set[tuple[str, int, bool]] = set()
        """Ports whose ``returns_cookie_untrusted`` raised: not asked again."""
        self._wakeup = trio.Event()
        """Set when a datagram was queued or :meth:`poke` asked for a round."""
        self._closed = False
        """The task ended: nothing is queued any more."""
        self._hooked: dict[tuple[str, int, bool], tuple[RelayStream, bool, bool, bool, bool]] = {}
        """The relay streams whose sockets hand on to this task, per (side, stream, RTCP port),
        whether that socket takes only the SDP address before keys and whether its engine
        proves its peer (:meth:`_hook`)."""
        self._rtcp_keys: dict[tuple[str, int], tuple[KeyNegotiation, SrtpKeys | None]] = {}
        """The RTCP component last driven per (side, stream) and the keys it agreed: a
        re-INVITE's new StreamSecurity gets the same component (the association goes on) and
        its keys, whose KeysReady the earlier StreamSecurity took."""
        self._early_rtcp: dict[tuple[str, int], list[_Kept]] = {}
        """Datagrams that came on a leg's RTCP port before its handshake there existed."""
        self._held: set[str] = set()
        """Sides whose handshakes wait for our SDP answer to be sent (:meth:`hold`)."""
        self._released: set[tuple[str, str | _Engine | None]] = set()
        """(side, association) driven unheld or released: that peer has our fingerprint for it
        (our offer or answer went), no hold again (:meth:`hold`)."""
        self._held_datagrams: dict[tuple[str, int, bool], list[_Kept]] = {}
        """Datagrams from a held side's peer, per (side, stream, RTCP port), fed at release."""
        self.dropped = 0
        """Datagrams dropped here, each also counted in the media session's drops of its
        direction by reason (``count_dropped``): ``blocked`` because the queue was full, or
        beyond :data:`EARLY_RTCP_DATAGRAMS` before the RTCP port's handshake existed, or
        beyond :data:`HELD_DATAGRAMS` while their side was held, or kept for a stream no
        longer driven or when the call ended; ``malformed``: those of :attr:`unclaimed`."""
        self.unclaimed = 0
        """Datagrams no negotiation of their stream and port claimed (RFC 7983 demux), or
        that came for a stream and port no handshake is driven on."""
        self._item_taken = True
        """Whether the round's datagram went somewhere (fed, kept, or counted)."""
        self._unanswered: dict[tuple[int, bool], dict[Address, list[bytes]]] = {}
        """Datagrams from B's side per (stream, RTCP port) and source while B's SDP has given
        no address yet (:meth:`_keep_unanswered`)."""
        self._addressed: set[int] = set()
        """Streams whose B leg's SDP gave an address: nothing kept apart for them any more."""
        self._forked = False
        """Several forks rang at once on this call (:meth:`_settle_unanswered`)."""
        self._losers: dict[tuple[int, bool], set[Address]] = {}
        """Per port of a forked stream, the sources of the forks that did not answer."""
        self._losers_of: LegSecurity | None = None
        """The B leg whose answer made :attr:`_losers` (another B leg forgets them)."""
        self._early_losers: dict[tuple[int, bool], dict[Address, list[bytes]]] = {}
        self._strangers_fed: set[tuple[str, int, bool]] = set()
        """Ports (side, stream, RTCP port) whose handshake was fed, before keys, datagrams from
        a source other than the leg's SDP address (a peer behind a NAT, or a stranger): when
        the SDP address speaks, that handshake starts afresh (:meth:`_feed_item`)."""
        self._held_strangers: set[tuple[str, int, bool]] = set()
        """Ports whose datagrams kept while held (:meth:`hold`) came from such a source."""
        self._proven: dict[tuple[str, int, bool], tuple[KeyNegotiation, Address]] = {}
        """The engine of each port and the source it proved to be its peer, as last told to
        the relay (:meth:`_latch_proven_peer`): a new engine (a re-INVITE's) tells it again."""
        self._rekeys_seen: dict[tuple[str, int, bool, object], int] = {}
        """Per port and association (the engine's ``tls_id``: a re-INVITE's new association
        counts afresh), the engine's ``peer_rekeys`` as last said in the log (:meth:`_events`)."""
        self._rekeyed: dict[tuple[str, int, bool], int] = {}
        """Per port, how often its peer re-keyed it so in this call (the INFO line's count)."""
        self._refused: set[tuple[str, int, bool]] = set()
        """Ports that refused another source's datagrams (``sdp_address_only``): said in the
        log once each, and in the reason if their handshake fails."""
        """Per port of a forked stream whose B leg answered early (a 183 with SDP), what the
        other sources sent, kept while another fork still rings (:meth:`_settle_early`)."""

    # -- from the relay and the call --------------------------------------------------------------

    def deliver(
        self,
        side: str,
        index: int,
        packet: bytes,
        *,
        rtcp: bool = False,
        source: Address | None = None,
    ) -> None:
        """A key-exchange datagram (DTLS, ZRTP) from leg ``side``'s peer at ``source`` on stream
        ``index``'s RTP port (``rtcp``: its RTCP port); the relay's hook. Queued for the task
        within :data:`QUEUE`, and, from a source that is neither the leg's SDP address nor its
        proven peer, within :data:`QUEUE_PER_SOURCE` and :data:`QUEUE_KEPT_FOR_PEERS`, that
        room shared fairly between such sources (it may take the place of the newest datagram
        of the source with the most waiting); else dropped (``blocked``): handshakes
        retransmit."""
        if self._closed:
            self._drop(side, "blocked")
            return
        counted = self._counted_source(side, index, rtcp, source)
        if counted is not None:
            waiting = self._waiting_from.get(counted, 0)
            if waiting >= QUEUE_PER_SOURCE:
                self._drop(side, "blocked")
                return
            if sum(self._waiting_from.values()) >= QUEUE - QUEUE_KEPT_FOR_PEERS:
                returned = (
                    counted not in self._verified
                    and bool(self._cookie_checks)
                    and self._returns_cookie(side, index, rtcp, packet, counted)
                )
                if not self._make_room_for(waiting, returned or counted in self._verified):
                    self._drop(side, "blocked")
                    return
                if returned:
                    self._returned_cookie.add(counted)
        if len(self._queue) >= QUEUE:
            self._drop(side, "blocked")
            return
        self._queue.append(((side, index, rtcp, packet, source), counted))
        if counted is not None:
            self._waiting_from[counted] = self._waiting_from.get(counted, 0) + 1
        self._wakeup.set()

    def _returns_cookie(
        self, side: str, index: int, rtcp: bool, packet: bytes, source: tuple[str, int]
    ) -> bool:
        """Whether the port's engine says ``packet`` returns its cookie (its optional
        ``returns_cookie_untrusted``, read at the end of the last round): asked only of a
        handshake record (RFC 6347 §4.1: content type 22) that the full room would drop, so
        a flood costs it a first-octet check, and a ClientHello at most its HMACs."""
        if not packet or packet[0] != 22:
            return False
        port = (side, index, rtcp)
        check = self._cookie_checks.get(port)
        if check is None:
            return False
        try:
            return check(packet, source, now=trio.current_time()) is True
        except Exception:
            # A plugin's bug set off by a datagram from the network, in the relay's hand-on:
            # never the relay's end. Not asked again on that port; logged once.
            del self._cookie_checks[port]
            self._cookie_checks_failed.add(port)
            log_exception(log, "leg %s stream %d: returns_cookie_untrusted failed", side, index)
            return False

    def _make_room_for(self, waiting: int, verified: bool) -> bool:
        """The room of other sources than the SDP addresses and proven peers is full: drop
        the newest datagram of the source with the most waiting, when it has two or more than
        the source that would take its place (``waiting``), and say whether one was dropped
        (longest-queue drop, :data:`QUEUE_KEPT_FOR_PEERS`): a source with as many waiting as
        the longest, or one fewer, gains nothing from the swap. While fewer than
        :data:`QUEUE_VERIFIED_FIRST` datagrams of sources that returned a cookie wait
        (``verified``: the newcomer is one), theirs are never dropped so, and a newcomer of
        theirs takes the place of any other source's, its count whatever."""
        counts = self._waiting_from
        if self._verified or self._returned_cookie:
            first = sum(c for key, c in counts.items() if self._is_verified(key))
            if first < QUEUE_VERIFIED_FIRST:
                counts = {k: c for k, c in counts.items() if not self._is_verified(k)}
            else:
                verified = False  # past their share: as every other source
        if verified and counts:
            waiting = -2  # any other source's newest gives way
        if not counts:
            return False
        most = max(counts.values())
        if most < waiting + 2:
            return False  # the flood's usual case, ever new sources: no key sought
        # The newest datagram of a source with that many waiting: of sources tied at one each
        # (a flood's), the burst's last, not the oldest (the task's next, such
        # as a phone's ClientHello that came before the flood).
        for at in range(len(self._queue) - 1, -1, -1):
            item, counted = self._queue[at]
            if counted is not None and counts.get(counted) == most:
                del self._queue[at]
                self._forget_waiting(counted)
                assert item is not None  # counted ones are datagrams
                self._drop(item[0], "blocked")
                return True
        return False  # not reached: the counts are the queue's

    def _counted_source(
        self, side: str, index: int, rtcp: bool, source: Address | None
    ) -> tuple[str, int] | None:
        """``source`` (host, port) when its datagrams count against :data:`QUEUE_PER_SOURCE`:
        neither the leg's SDP address for that port nor the peer its engine proved; None when
        they do not (or no source is known)."""
        if source is None:
            return None
        address = (str(source[0]), int(source[1]))
        if address == self._session.peer_address(index, side, rtcp=rtcp):
            return None
        proven = self._proven.get((side, index, rtcp))
        if proven is not None and proven[1][:2] == address:
            return None
        # Keyed as the engines key their sources and cookies (a link-local host with its zone,
        # RFC 4007 §6): an engine's verified_sources then match (session 44).
        return source_key(source)

    def _take(self) -> _Item:
        """The queue's oldest datagram, taken for the task's round (:meth:`deliver`'s count)."""
        item, counted = self._queue.popleft()
        if counted is not None:
            self._forget_waiting(counted)
        return item

    def _is_verified(self, counted: tuple[str, int]) -> bool:
        """Whether ``counted``'s waiting datagrams are in :data:`QUEUE_VERIFIED_FIRST`'s share."""
        return counted in self._verified or counted in self._returned_cookie

    def _forget_waiting(self, counted: tuple[str, int]) -> None:
        left = self._waiting_from[counted] - 1
        if left:
            self._waiting_from[counted] = left
        else:
            del self._waiting_from[counted]
            self._returned_cookie.discard(counted)

    def poke(self) -> None:
        """The legs' SDP changed: look at the streams again (new negotiations, new streams).

        The sockets of the streams' handshakes take their datagrams from now on, before the
        task's next round: a callee may begin its handshake as soon as it has our offer
        (baresip does as it rings), and its first datagram, read by the relay before the
        round, was dropped as malformed (the handshake then waited for its retransmission,
        1 s, and the call's media with it). Call this before the SDP goes out."""
        self._hook_streams()
        self._wakeup.set()

    def hold(self, side: str) -> None:
        """Our SDP answer to leg ``side`` is made but not sent yet: its handshakes wait (no
        ClientHello, no timer) until :meth:`release`, and what its peer sends is kept. Call it
        before the next checkpoint after the answer was made (the task runs at any), for every
        answer we make: the caller's (a 183's, a 200's), a call picker's, a transfer's new
        leg's, a re-INVITE's or UPDATE's, the answer in our ACK to a callee that offered in its
        200.

        Only the streams whose association (:func:`_association`, RFC 8842 §5) was neither
        released nor driven unheld (our offer to that peer carried our fingerprint): a later
        answer that keeps it (our 200 after a 183
        with SDP, RFC 3262 §5; a re-INVITE that keeps the tls-id) carries the fingerprint the
        peer already has, and holding again would pause a handshake under way until that
        answer goes (with 100rel, until the 183's PRACK). A new association (a re-INVITE with a
        new tls-id) starts a new handshake whose ClientHello, ours, must follow our answer as
        the first one did."""
        self._held.add(side)

    @property
    def held_datagrams(self) -> int:
        """Datagrams from held sides' peers kept for their release (:meth:`hold`)."""
        return sum(len(kept) for kept in self._held_datagrams.values())

    def release(self, side: str) -> None:
        """Our answer went to leg ``side``: its handshakes start (and take what was kept)."""
        self._released.add((side, None))
        security = self._legs().get(side)
        if security is not None:
            for stream in security.media_path_streams().values():
                self._released.add((side, _association(stream.negotiation, self._unnamed_engines)))
        if side in self._held:
            self._held.discard(side)
            self.poke()

    def _is_held(self, side: str, stream: StreamSecurity) -> bool:
        """Whether ``stream`` of leg ``side`` waits for our answer to go (:meth:`hold`)."""
        if side not in self._held:
            return False
        return (side, _association(stream.negotiation, self._unnamed_engines)) not in self._released

    # -- the task -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Drive the handshakes until cancelled (at the call's end: calls/manager.py,
        CallChildren)."""
        try:
            item: _Item = None
            while True:
                now = trio.current_time()
                try:
                    self._round(item, now)
                    deadline = self._next_timer(now)
                except Exception:
                    # A bug in a key-exchange plugin or in keying, maybe set off by a datagram
                    # from the network: it ends this call with a stated reason, never the
                    # gateway nor another call (the exception would otherwise end the call as an
                    # internal error, without the handshake's reason). Engines keep secrets out
                    # of exceptions.
                    log_exception(log, "media-path key exchange failed")
                    self._on_failure("a/b", INTERNAL_ERROR_REASON)
                    return
                item = None
                if self._queue:
                    await trio.lowlevel.checkpoint()
                else:
                    with trio.move_on_at(deadline):
                        await self._wakeup.wait()
                if self._wakeup.is_set():
                    # The round that follows looks at every stream and takes the next datagram:
                    # whatever set the Event (a datagram queued, a poke) is seen by it. Left set
                    # while a burst was taken one per round, it woke the task once more after
                    # the queue emptied, for a round with nothing to do (session 43).
                    self._wakeup = trio.Event()
                if self._queue:
                    item = self._take()
        finally:
            # What is still kept will never be fed: the call ended before the answer that held
            # it went (or before the RTCP port's handshake existed). Dropped, so counted.
            for (side, _, _), kept in self._held_datagrams.items():
                self._drop(side, "blocked", len(kept))
            for (side, _), kept in self._early_rtcp.items():
                self._drop(side, "blocked", len(kept))
            for by_source in [*self._unanswered.values(), *self._early_losers.values()]:
                self._drop("b", "blocked", sum(len(kept) for kept in by_source.values()))
            # So are the datagrams still waiting in the queue (a burst the call's end came
            # before the task took): they vanished uncounted with the queue before.
            for side in ("a", "b"):
                waiting = sum(1 for item, _ in self._queue if item is not None and item[0] == side)
                self._drop(side, "blocked", waiting)
            self._held_datagrams.clear()
            self._early_rtcp.clear()
            self._unanswered.clear()
            self._early_losers.clear()
            self._proven.clear()
            self._cookie_checks = {}
            self._unhook()
            self._closed = True
            self._queue.clear()
            self._waiting_from.clear()
            self._returned_cookie.clear()
            # legs, on_keys and on_failure are the call's bound methods, and the call holds
            # this object: kept, they made every ended DTLS-SRTP (and ZRTP) call, its legs,
            # dialogs, messages, media session, task and nursery (~250 objects), cyclic garbage
            # that only the collector could free (docs/benchmarks.md, session 29).
            self._legs = _no_legs
            self._forks = _no_forks
            self._on_keys = _nothing
            self._on_failure = _no_failure

    def _round(self, item: _Item, now: float) -> None:
        keys_changed = False
        verified: set[tuple[str, int]] = set()
        checks: dict[tuple[str, int, bool], Callable[..., object]] = {}
        self._item_taken = item is None
        all_streams = self._streams()
        offered = self._offered_new()
        self._settle_unanswered(all_streams)
        if item is not None and (self._keep_unanswered(item) or self._from_loser(item)):
            item = None
        if item is not None and self._keep_for_offer(item, offered, all_streams):
            item = None
        for side, streams in all_streams.items():
            for index, stream in streams.items():
                keys_changed |= self._attach_rtcp(side, index, stream)
                if stream.rtcp_negotiation is None:
                    self._before_rtcp_handshake(side, index, stream, item)
                if self._is_held(side, stream):
                    self._keep_while_held(side, index, stream, item)
                    continue
                # Driven: its peer has what it needs (our offer, or our answer, went); a later
                # hold of this side leaves it alone.
                self._released.add((side, _association(stream.negotiation, self._unnamed_engines)))
                # What is kept for a pending offer's new association is not this one's.
                kept_for_offer = index in offered.get(side, {})
                for rtcp, negotiation in self._negotiations(stream):
                    self._hook(side, index, rtcp)
                    if not kept_for_offer:
                        held = self._held_datagrams.pop((side, index, rtcp), ())
                        if held and (side, index, rtcp) in self._held_strangers:
                            # Kept from a source other than the SDP address, which has not
                            # spoken since (a peer behind a NAT): fed, as they come after.
                            self._strangers_fed.add((side, index, rtcp))
                        self._held_strangers.discard((side, index, rtcp))
                        for packet, source in held:
                            self._feed(side, index, rtcp, negotiation, packet, now, source)
                    timer = negotiation.get_timer()
                    if timer is not None and timer <= now:
                        negotiation.handle_timer(now=now)
                    if rtcp:
                        for packet, source in self._early_rtcp.pop((side, index), ()):
                            self._feed(side, index, True, negotiation, packet, now, source)
                    if item is not None and item[:3] == (side, index, rtcp):
                        self._item_taken = True
                        self._feed_item(stream, negotiation, item, now)
                    relay_side = self._side(side, index)
                    if relay_side is not None:
                        self._latch_proven_peer(side, index, rtcp, negotiation, relay_side, now)
                    # What answers its peer only (our DTLS server flight) never goes to the
                    # SDP address as well (relay.StreamSide.send): it answers the source that
                    # holds the port, maybe a stranger's ClientHello.
                    copy = getattr(negotiation, "answers_only", False) is not True
                    for packet in negotiation.packets_to_send(now=now):
                        if relay_side is None or not relay_side.send(
                            packet, rtcp=rtcp, copy_to_sdp_address=copy
                        ):
                            self._not_sent(side, index, rtcp)
                    # An engine that runs a handshake per source answers each at its address
                    # (the dtls engine, docs/media_security.md "Forged handshakes").
                    addressed = getattr(negotiation, "addressed_packets_to_send", None)
                    if addressed is not None:
                        for packet, destination in addressed(now=now):
                            if relay_side is None or not relay_side.send_to(
                                packet, destination, rtcp=rtcp
                            ):
                                self._not_sent(side, index, rtcp)
                    keys_changed |= self._events(side, index, stream, negotiation, rtcp)
                    # Optional (docs/plugin_hooks.md, "Media-path engines"): the dtls
                    # engine's sources that returned its cookie, queued first.
                    sources = getattr(negotiation, "verified_sources", None)
                    if sources:
                        verified.update((str(s[0]), int(s[1])) for s in sources)
                    check = getattr(negotiation, "returns_cookie_untrusted", None)
                    if check is not None and (side, index, rtcp) not in self._cookie_checks_failed:
                        checks[(side, index, rtcp)] = check
        if verified != self._verified:
            self._verified = frozenset(verified)
        self._cookie_checks = checks
        if item is not None and not self._item_taken:
            # No stream of that side and index drives a handshake on that port. Every drop
            # counts: before the side has a leg (two forks ring, and either may answer; the
            # handshake of the one that does waits for its resend, docs/architecture.md)
            # like the media of a fork, "blocked"; else (a stream a re-INVITE removed, a leg
            # whose negotiation is gone) nobody's, "malformed".
            if self._legs().get(item[0]) is None:
                self._drop(item[0], "blocked")
            else:
                self.unclaimed += 1
                self._drop(item[0], "malformed")
        for side, streams in offered.items():
            for index in streams:
                all_streams.setdefault(side, {}).setdefault(index, streams[index])
        self._forget_gone(all_streams)
        if keys_changed:
            self._on_keys()

    @staticmethod
    def _not_sent(side: str, index: int, rtcp: bool) -> None:
        port = "RTCP" if rtcp else "RTP"
        log.debug("key-exchange datagram for leg %s stream %d %s port not sent", side, index, port)

    def _offered_new(self) -> dict[str, dict[int, StreamSecurity]]:
        """The streams of a peer's offer still waiting for our answer whose association is not
        the one in force at their index (a new tls-id, RFC 8842 §5; or a new stream)."""
        found: dict[str, dict[int, StreamSecurity]] = {}
        for side, security in self._legs().items():
            if security is None:
                continue
            offered = security.offered_media_path_streams()
            if not offered:
                continue
            in_force = security.media_path_streams()
            for index, stream in offered.items():
                current = in_force.get(index)
                if current is None or _association(
                    current.negotiation, self._unnamed_engines
                ) != _association(stream.negotiation, self._unnamed_engines):
                    found.setdefault(side, {})[index] = stream
        return found

    def _keep_for_offer(
        self,
        item: tuple[str, int, bool, bytes, Address | None],
        offered: Mapping[str, Mapping[int, StreamSecurity]],
        streams: Mapping[str, Mapping[int, StreamSecurity]],
    ) -> bool:
        """Keep ``item`` for the new association of a peer's offer we have not answered yet
        (:meth:`_offered_new`): its handshake, begun by a peer that offered ``active`` (RFC
        5763 §5), is driven once our answer is made and went (:meth:`hold`), and its first
        ClientHello, fed to the association in force, was lost there (the peer resends it
        after 1 s, RFC 6347 §4.2.4.1). On a stream that has an association in force only a
        new handshake's records (epoch 0, RFC 6347 §4.1) are the new one's; the rest (its
        alerts, a retransmitted Finished) stay with the one in force."""
        side, index, rtcp, packet, source = item
        if index not in offered.get(side, {}):
            return False
        if index in streams.get(side, {}) and not _starts_handshake(packet):
            return False
        self._item_taken = True
        counted = self._counted_source(side, index, rtcp, source)
        self._keep_held(side, (side, index, rtcp), packet, source, counted)
        return True

    def _keep_unanswered(self, item: tuple[str, int, bool, bytes, Address | None]) -> bool:
        """Keep ``item`` apart by its source when it comes from B's side before B's SDP gave an
        address (RFC 5763 §5: a callee answering ``active`` may start its handshake as it rings,
        before its answer reaches us). Our offer may have gone to several forks (RFC 3261
        §16.7), which share B's sockets and each start a handshake of their own, and the fork
        that answers need not be the first that sent: fed to the answering fork's engine,
        another fork's ClientHello fails its fingerprint check (RFC 5763 §5) and ends the call;
        dropped, the answering fork's handshake waits for its retransmission (1 s, then 2 s, 4
        s... after a long ringing, RFC 6347 §4.2.4.1). Also a forged datagram from a stranger
        before the answer is kept apart from the callee's own. :meth:`_settle_unanswered`
        decides once the answer's address is known."""
        side, index, rtcp, packet, source = item
        if side != "b" or source is None or index in self._addressed:
            return False
        if self._session.peer_address(index, "b") is not None:
            self._addressed.add(index)
            return False
        self._item_taken = True
        by_source = self._unanswered.setdefault((index, rtcp), {})
        kept = by_source.get(source)
        if kept is None:
            if len(by_source) >= FORK_SOURCES:
                self._drop("b", "blocked")
                return True
            kept = by_source[source] = []
        if len(kept) < HELD_DATAGRAMS:
            kept.append(packet)
        else:
            self._drop("b", "blocked")
        return True

    def _settle_unanswered(self, streams: Mapping[str, Mapping[int, StreamSecurity]]) -> None:
        """B has a leg whose SDP gave its address: of what :meth:`_keep_unanswered` kept for a
        port, the datagrams from that address (RFC 4961 symmetric RTP: a peer sends from where
        it receives; RFC 5764 §5.1.2: DTLS on the media's 5-tuple) go to its handshake, in the
        order they came, as if they had just arrived; the others are dropped and counted
        ``blocked`` (a fork's media) and, of a forked call, their sources are not fed to that
        handshake later either (a fork not CANCELled yet resending). With no source from that
        address (a callee behind a NAT), a lone callee's first source is taken, as the first
        source latched the socket before; of several forks none is (which fork sent is not
        known: the wrong one's ClientHello would fail the fingerprint check and end the call),
        and the answering fork's handshake begins at its retransmission: no source is kept
        out of it then (any may be its own)."""
        if self._legs().get("b") is None:
            if len(self._forks()) >= 2:
                self._forked = True
            return
        if "b" not in streams:
            return
        for index in streams["b"]:
            # Answered once: no longer a callee our offer waits for, also while a later SDP
            # holds it with no address (c=0.0.0.0), as the relay's StreamSide._addressed.
            if index not in self._addressed and self._session.peer_address(index, "b"):
                self._addressed.add(index)
        if not self._unanswered:
            self._settle_early()
            return
        for index, rtcp in list(self._unanswered):
            address = self._session.peer_address(index, "b", rtcp=rtcp)
            if address is None:
                continue  # a lone callee still ringing: its answer decides
            self._addressed.add(index)
            by_source = self._unanswered.pop((index, rtcp))
            chosen = next((s for s in by_source if s[:2] == address), None)
            if chosen is None and not self._forked:
                chosen = next(iter(by_source), None)
            # Another fork still ringing may yet answer with a 200 (this answer was early,
            # a 183 with SDP): what the other sources sent is kept for that answer.
            rivals = self._forked and self._rivals_ring()
            # One B leg whose engine keeps other phones' handshakes (a proxy downstream may
            # have forked our offer, RFC 3261 §16.7; the dtls engine's keeps_other_phones):
            # it takes the other sources' datagrams too, after the answer's own, each with
            # its source, and keeps them for another phone's answer (session 55: dropped,
            # the answering phone's handshake waited for its resend, 1 s of audio).
            to_engine = not self._forked and self._b_keeps_other_phones(streams, index)
            given = [(packet, chosen) for packet in by_source[chosen]] if chosen else []
            for source, kept in by_source.items():
                if source != chosen:
                    if rivals:
                        self._early_losers.setdefault((index, rtcp), {})[source] = kept
                    elif to_engine:
                        given += [(packet, source) for packet in kept]
                    else:
                        self._drop("b", "blocked", len(kept))
                    if self._forked and chosen is not None:
                        # Only where the answer's source is known: behind a NAT any of them
                        # may be the answering fork's, and its resends must reach it.
                        self._losers.setdefault((index, rtcp), set()).add(source)
                        self._losers_of = self._legs().get("b")
            self._give_b(index, rtcp, given)
        self._settle_early()

    @staticmethod
    def _b_keeps_other_phones(
        streams: Mapping[str, Mapping[int, StreamSecurity]], index: int
    ) -> bool:
        """Whether B's stream ``index`` has an engine that keeps other phones' handshakes for
        another phone's answer to our offer (``keeps_other_phones``, optional: the dtls
        engine's, docs/plugin_hooks.md "Media-path engines")."""
        stream = streams.get("b", {}).get(index)
        negotiation = stream.negotiation if stream is not None else None
        return getattr(negotiation, "keeps_other_phones", False) is True

    def _give_b(self, index: int, rtcp: bool, given: list[tuple[bytes, Address]]) -> None:
        """Datagrams kept from B's sources: to its handshake before anything newer, in the
        order given (the RTCP port's waits for that port's handshake to exist)."""
        if not given:
            return
        if rtcp:
            early = self._early_rtcp.setdefault(("b", index), [])
            early[:0] = given
        else:
            held = self._held_datagrams.setdefault(("b", index, False), [])
            held[:0] = given

    def _rivals_ring(self) -> bool:
        """Whether a fork other than B's leg still rings (no final answer chose B yet)."""
        b = self._legs().get("b")
        return any(fork is not b for fork in self._forks())

    def _settle_early(self) -> None:
        """A fork's early answer (a 183 with SDP, RFC 3262) gave B's address first, and what
        other sources sent was kept (:attr:`_early_losers`): another fork may still answer
        with its 200 (RFC 3261 §12.1.2: several early dialogs), and its handshake began as it
        rang (RFC 5763 §5). When another leg is B, the datagrams from its answer's address go
        to its handshake (dropped, it waited for its resend: 1 s, doubling, tens of seconds
        after a long ringing, RFC 6347 §4.2.4.1). Once no other fork rings (the final answer
        decided), what is left is dropped and counted ``blocked``, a losing fork's media."""
        if not self._early_losers:
            return
        b = self._legs().get("b")
        if b is not None and b is not self._losers_of:
            losers, self._losers = self._losers, {}
            for (index, rtcp), by_source in self._early_losers.items():
                address = self._session.peer_address(index, "b", rtcp=rtcp)
                chosen = next((s for s in by_source if s[:2] == address), None)
                if chosen is None:
                    # Behind a NAT: which source is this fork's is not known; none is kept
                    # out of its handshake (as _from_loser does for another B leg).
                    continue
                self._give_b(index, rtcp, [(packet, chosen) for packet in by_source.pop(chosen)])
                # The other sources lost to this answer as they did to the first.
                self._losers[(index, rtcp)] = losers.get((index, rtcp), set()) - {chosen}
            self._losers_of = b
        if not self._rivals_ring():
            for by_source in self._early_losers.values():
                self._drop("b", "blocked", sum(len(kept) for kept in by_source.values()))
            self._early_losers.clear()

    def _from_loser(self, item: tuple[str, int, bool, bytes, Address | None]) -> bool:
        """Whether ``item`` comes from a fork that did not answer (:meth:`_settle_unanswered`):
        dropped (``blocked``, a fork's media), never fed to the answering fork's handshake."""
        side, index, rtcp, packet, source = item
        if side != "b" or source is None or source not in self._losers.get((index, rtcp), ()):
            return False
        if self._legs().get("b") is not self._losers_of:
            # Another fork is B now (the one whose 183 gave its answer early failed, and
            # another answered): the sources that lost to the first may be this one's.
            self._losers.clear()
            return False
        self._item_taken = True
        early = self._early_losers.get((index, rtcp), {}).get(source)
        if early is not None and len(early) < HELD_DATAGRAMS:
            early.append(packet)  # another fork may still answer (_settle_early)
        else:
            self._drop("b", "blocked")
        return True

    def _drop(self, side: str, reason: str, count: int = 1) -> None:
        """``count`` datagrams from leg ``side``'s peer dropped here: in the call's media
        counters under ``reason`` (relay.DROP_REASONS; docs/metrics.md)."""
        if count:
            self.dropped += count
            self._session.count_dropped(side, reason, count)

    def _forget_gone(self, streams: Mapping[str, Mapping[int, StreamSecurity]]) -> None:
        """Datagrams kept for a stream no longer driven (a re-INVITE removed it, or gave it
        another key exchange) will never be fed: dropped and counted, not kept until the
        call ends."""
        for key in [k for k in self._held_datagrams if k[1] not in streams.get(k[0], {})]:
            self._drop(key[0], "blocked", len(self._held_datagrams.pop(key)))
        for side, index in [k for k in self._early_rtcp if k[1] not in streams.get(k[0], {})]:
            self._drop(side, "blocked", len(self._early_rtcp.pop((side, index))))

    def _hook_streams(self) -> None:
        if self._legs().get("b") is None:
            # Several forks ring: B's sockets take their handshakes' datagrams, kept apart by
            # source until one answers (_keep_unanswered).
            for security in self._forks():
                for index in security.media_path_streams():
                    self._hook("b", index, False)
                    relay_side = self._side("b", index)
                    if relay_side is not None and not relay_side.rtcp_mux:
                        self._hook("b", index, True)
        for side, streams in self._streams().items():
            for index, stream in streams.items():
                for rtcp, _ in self._negotiations(stream):
                    self._hook(side, index, rtcp)
                if stream.rtcp_negotiation is None:
                    self._before_rtcp_handshake(side, index, stream, None)
        for side, streams in self._offered_new().items():
            for index in streams:
                self._hook(side, index, False)
                relay_side = self._side(side, index)
                if relay_side is not None and not relay_side.rtcp_mux:
                    self._hook(side, index, True)

    def _keep_while_held(self, side: str, index: int, stream: StreamSecurity, item: _Item) -> None:
        """A held side's stream (:meth:`hold`): its sockets take key-exchange datagrams, kept
        for the release; its negotiations are not driven. The SDP address first, as when
        driven (:meth:`_feed_item`): what another source sent is dropped when the SDP address
        speaks before the release."""
        for rtcp, negotiation in self._negotiations(stream):
            self._hook(side, index, rtcp)
            if item is not None and item[:3] == (side, index, rtcp):
                self._item_taken = True
                port = (side, index, rtcp)
                from_sdp = self._from_sdp_address(stream, item)
                if from_sdp is False:
                    if self._refuses(negotiation, item):
                        continue
                    self._held_strangers.add(port)
                elif from_sdp and port in self._held_strangers:
                    self._held_strangers.discard(port)
                    self._drop(side, "unlatched_source", len(self._held_datagrams.pop(port, ())))
                counted = None
                if from_sdp is False:
                    counted = self._counted_source(side, index, rtcp, item[4])
                self._keep_held(side, port, item[3], item[4], counted)

    def _keep_held(
        self,
        side: str,
        port: tuple[str, int, bool],
        packet: bytes,
        source: Address | None,
        counted: tuple[str, int] | None,
    ) -> None:
        """Keep ``packet`` for ``port``'s release within :data:`HELD_DATAGRAMS`, and within
        :data:`HELD_PER_SOURCE` from ``counted`` (its source, when that is neither the SDP
        address nor the proven peer: :meth:`_counted_source`); else dropped (``blocked``)."""
        held = self._held_datagrams.setdefault(port, [])
        if len(held) >= HELD_DATAGRAMS or (
            counted is not None
            and sum(1 for _, kept in held if kept is not None and kept[:2] == counted)
            >= HELD_PER_SOURCE
        ):
            self._drop(side, "blocked")
        else:
            held.append((packet, source))

    def _feed_item(
        self,
        stream: StreamSecurity,
        negotiation: KeyNegotiation,
        item: tuple[str, int, bool, bytes, Address | None],
        now: float,
    ) -> None:
        """The round's datagram to its port's negotiation: "the SDP address first, another
        source only until the SDP address speaks" (docs/media_security.md, "Forged
        handshakes"). Before keys, a datagram from another source (a peer behind a NAT, or a
        stranger: nothing in a handshake of epoch 0 is authenticated, RFC 5763 §5) is fed, and
        the relay latches that source without connecting its socket; when the SDP address
        speaks after such a datagram was fed, the relay gives it the socket and the port's
        handshake starts afresh for it (the engine's optional ``restart_handshake``,
        docs/plugin_hooks.md "Media-path engines"): the stranger's ClientHello is in the old
        association's state. With ``sdp_address_only`` another source is refused instead."""
        side, index, rtcp, packet, source = item
        from_sdp = self._from_sdp_address(stream, item)
        port = (side, index, rtcp)
        if from_sdp is False:
            if self._refuses(negotiation, item):
                return
            self._strangers_fed.add(port)
        if from_sdp and port in self._strangers_fed:
            self._strangers_fed.discard(port)
            restart = getattr(negotiation, "restart_handshake", None)
            # False: the engine had nothing to start afresh (the zrtp engine whose peer's Hello
            # is bound by a=zrtp-hash never took the other source's; the dtls engine, which
            # runs a handshake per source); None or anything else: it did.
            if restart is not None and restart(now=now) is not False:
                log.info(
                    "leg %s stream %d %s port: the SDP address spoke after another source's "
                    "handshake datagrams and before keys: handshake started afresh for it",
                    side,
                    index,
                    "RTCP" if rtcp else "RTP",
                )
        self._feed(side, index, rtcp, negotiation, packet, now, source)

    def _from_sdp_address(
        self, stream: StreamSecurity, item: tuple[str, int, bool, bytes, Address | None]
    ) -> bool | None:
        """Whether ``item`` came from the address its leg's SDP gave for its port; None when
        that does not apply: no source known, no SDP address (our offer waits for its answer,
        or on hold), keys agreed already (the socket is connected to its source), or an ICE
        leg (checks select the source, RFC 8445)."""
        side, index, rtcp, _, source = item
        if source is None or (stream.rtcp_keys if rtcp else stream.keys) is not None:
            return None
        address = self._session.peer_address(index, side, rtcp=rtcp)
        if address is None:
            return None
        security = self._legs().get(side)
        if security is not None and security.ice.responders(index)[0] is not None:
            return None
        return source[:2] == address

    def _latch_proven_peer(
        self,
        side: str,
        index: int,
        rtcp: bool,
        negotiation: KeyNegotiation,
        relay_side: RelaySide,
        now: float,
    ) -> None:
        """Give the port's latch to the source its engine proved to be the peer before keys
        (the engine's optional ``peer_source``: the ``zrtp`` engine's, the source whose Hello
        matched the peer's a=zrtp-hash, RFC 6189 §8.1), before anything is sent that answers
        it: a stranger that reached the port first held the latch, and a phone behind a NAT
        was kept out (docs/media_security.md, "Forged handshakes"). Said to the relay once per
        source, engine and port."""
        proven = getattr(negotiation, "peer_source", None)
        if proven is None:
            return
        port = (side, index, rtcp)
        told = self._proven.get(port)
        if told is not None and told[0] is negotiation and told[1] == proven:
            return
        self._proven[port] = (negotiation, proven)
        relay_side.latch_peer(proven, rtcp=rtcp, now=now)

    def _refuses(
        self, negotiation: KeyNegotiation, item: tuple[str, int, bool, bytes, Address | None]
    ) -> bool:
        """Whether ``item``, from a source other than its leg's SDP address before keys, is
        refused because the engine takes only the SDP address (``sdp_address_only``, e.g.
        ``[plugins.dtls] sdp_address_only``): dropped, counted ``unlatched_source``, said in
        the log once per port and in the reason should its handshake fail."""
        if getattr(negotiation, "sdp_address_only", False) is not True:
            return False
        side, index, rtcp, _, source = item
        port = (side, index, rtcp)
        if port not in self._refused:
            self._refused.add(port)
            log.warning(
                "leg %s stream %d %s port: key-exchange datagram from %s refused: not the "
                "address %s the leg's SDP gave (sdp_address_only; a peer behind a NAT is "
                "refused so)",
                side,
                index,
                "RTCP" if rtcp else "RTP",
                _address_text(source),
                _address_text(self._session.peer_address(index, side, rtcp=rtcp)),
            )
        self._drop(side, "unlatched_source")
        return True

    def _feed(
        self,
        side: str,
        index: int,
        rtcp: bool,
        negotiation: KeyNegotiation,
        packet: bytes,
        now: float,
        source: Address | None,
    ) -> None:
        """``packet`` from ``source`` (None: not known) to ``negotiation``; with its source
        where the engine takes it (its optional ``receive_packet_from``, docs/plugin_hooks.md
        "Media-path engines": the ``zrtp`` engine tells the peer from a stranger by the source
        whose Hello matched the peer's a=zrtp-hash, RFC 6189 §8.1; the ``dtls`` engine runs a
        handshake per source). Not to an engine that runs a handshake per source on an ICE
        leg: checks select the peer's address (RFC 8445 §12), which may move while the
        handshake runs (a better pair nominated), and the one handshake goes on there."""
        if (
            source is not None
            and getattr(negotiation, "handshake_per_source", False) is True
            and self._ice_leg(side, index)
        ):
            source = None
        if source is not None and source[:2] == self._session.peer_address(index, side, rtcp=rtcp):
            # An engine that runs a handshake per source never drops the SDP address's for its
            # cap, never asks it for a cookie, and takes its failure as the leg's (the dtls
            # engine's note_sdp_address). Told here, for each datagram fed from there: those
            # kept while our answer was on its way too (before session 41, only those fed as
            # they came, and the kept ones were a stranger's to the engine).
            note = getattr(negotiation, "note_sdp_address", None)
            if note is not None:
                note(source)
        # RFC 7983: each engine claims its range of first bytes (DTLS 20..63, ZRTP 16..19).
        if negotiation.claims_packet(packet[0], packet):
            receive_from = getattr(negotiation, "receive_packet_from", None)
            if receive_from is not None:
                receive_from(packet, source=source, now=now)
            else:
                negotiation.receive_packet(packet, now=now)
        else:
            self.unclaimed += 1
            self._drop(side, "malformed")

    def _ice_leg(self, side: str, index: int) -> bool:
        security = self._legs().get(side)
        return security is not None and security.ice.responders(index)[0] is not None

    def _before_rtcp_handshake(
        self, side: str, index: int, stream: StreamSecurity, item: _Item
    ) -> None:
        """A stream whose leg has no RTCP port handshake (yet): while one may come (a
        negotiation that keys a separate RTCP port, on a leg not known to mux), its RTCP socket
        takes key-exchange datagrams and this holds them (module docstring); a leg that muxes
        needs none, and what was held goes."""
        relay_side = self._side(side, index)
        if relay_side is None or relay_side.rtcp_mux:
            # Never fed: the leg muxes (RFC 5761), its RTCP port's handshake will not come.
            self._drop(side, "blocked", len(self._early_rtcp.pop((side, index), ())))
            if item is not None and item[:3] == (side, index, True):
                self._item_taken = True
                self.unclaimed += 1  # on the RTCP port of a leg that muxes: nobody's
                self._drop(side, "malformed")
            return
        if not isinstance(stream.negotiation, HasRtcpComponent):
            return
        self._hook(side, index, True)
        if item is not None and item[:3] == (side, index, True):
            self._item_taken = True
            held = self._early_rtcp.setdefault((side, index), [])
            if len(held) < EARLY_RTCP_DATAGRAMS:
                held.append((item[3], item[4]))
            else:
                self._drop(side, "blocked")

    @staticmethod
    def _negotiations(stream: StreamSecurity) -> list[tuple[bool, KeyNegotiation]]:
        found: list[tuple[bool, KeyNegotiation]] = []
        if stream.negotiation is not None:
            found.append((False, stream.negotiation))
        if stream.rtcp_negotiation is not None:
            found.append((True, stream.rtcp_negotiation))
        return found

    def _attach_rtcp(self, side: str, index: int, stream: StreamSecurity) -> bool:
        """Give the stream its RTCP port's negotiation when the leg does not use rtcp-mux (RFC
        5764 §4.1), or take it away when it does; True when the stream's SRTCP keys changed."""
        relay_side = self._side(side, index)
        separate = relay_side is not None and not relay_side.rtcp_mux
        component: KeyNegotiation | None = None
        if separate and isinstance(stream.negotiation, HasRtcpComponent):
            component = stream.negotiation.rtcp_component()
        if component is stream.rtcp_negotiation:
            return False
        stream.rtcp_negotiation = component
        if component is None:
            stream.rtcp_keys = None
            self._rtcp_keys.pop((side, index), None)
            return True
        previous = self._rtcp_keys.get((side, index))
        stream.rtcp_keys = previous[1] if previous and previous[0] is component else None
        self._rtcp_keys[(side, index)] = (component, stream.rtcp_keys)
        return True

    def _events(
        self,
        side: str,
        index: int,
        stream: StreamSecurity,
        negotiation: KeyNegotiation,
        rtcp: bool,
    ) -> bool:
        changed = False
        while (event := negotiation.next_event()) is not None:
            if isinstance(event, KeysReady):
                if rtcp:
                    stream.rtcp_keys = event.keys
                    self._rtcp_keys[(side, index)] = (negotiation, event.keys)
                else:
                    stream.keys = event.keys
                changed = True
                self._say_rekeyed(side, index, rtcp, negotiation)
            elif isinstance(event, SasReady):
                # Not a secret: the SAS is read aloud by the users (RFC 6189 §7).
                log.info("leg %s stream %d: ZRTP SAS %s", side, index, event.sas)
                if event.alarm is not None:
                    log.warning("leg %s stream %d: %s", side, index, event.alarm)
                changed = True
            elif isinstance(event, NegotiationFailed):
                reason = f"{event.reason} (RTCP port)" if rtcp else event.reason
                if (side, index, rtcp) in self._refused:
                    reason += (
                        " (datagrams from a source other than the SDP address refused: "
                        "sdp_address_only)"
                    )
                if rtcp:
                    stream.rtcp_keys = None
                else:
                    stream.keys = None
                stream.failure = reason
                leg = self._legs().get(side)
                if leg is not None:
                    leg.failed(stream.key_exchange)
                self._on_failure(side, reason)
        return changed

    def _say_rekeyed(self, side: str, index: int, rtcp: bool, negotiation: KeyNegotiation) -> None:
        """The INFO line of a port whose peer re-keyed it by a new handshake on the same
        address (the engine's optional ``peer_rekeys``, docs/plugin_hooks.md "Media-path
        engines"; the dtls engine's RFC 6347 §4.2.8 candidate): the call's SRTP of that leg
        changed keys without any SDP saying so, which an operator tracing lost media needs."""
        rekeys = getattr(negotiation, "peer_rekeys", 0)
        port = (side, index, rtcp)
        seen = (side, index, rtcp, getattr(negotiation, "tls_id", None))
        if not isinstance(rekeys, int) or rekeys <= self._rekeys_seen.get(seen, 0):
            return
        self._rekeys_seen[seen] = rekeys
        self._rekeyed[port] = self._rekeyed.get(port, 0) + 1
        peer = getattr(negotiation, "peer_source", None)
        if not isinstance(peer, tuple):
            peer = self._session.peer_address(index, side, rtcp=rtcp)
        log.info(
            "leg %s stream %d %s port: re-keyed by the peer's new DTLS handshake from %s "
            "(RFC 6347 §4.2.8; %d time(s) in this call): new SRTP contexts both ways",
            side,
            index,
            "RTCP" if rtcp else "RTP",
            _address_text(peer),
            self._rekeyed[port],
        )

    def _next_timer(self, now: float) -> float:
        deadline = math.inf
        for side, streams in self._streams().items():
            for stream in streams.values():
                if self._is_held(side, stream):
                    continue  # nothing of a held stream is due before its release
                for _, negotiation in self._negotiations(stream):
                    timer = negotiation.get_timer()
                    if timer is not None:
                        deadline = min(deadline, timer)
        # A timer already due was handled in this round; never spin on one that stays due.
        return deadline if deadline > now else now + 0.001

    def _streams(self) -> dict[str, dict[int, StreamSecurity]]:
        found: dict[str, dict[int, StreamSecurity]] = {}
        for side, security in self._legs().items():
            if security is not None:
                found[side] = security.media_path_streams()
        return found

    # -- the relay's hooks ----------------------------------------------------------------------

    def _side(self, side: str, index: int) -> RelaySide | None:
        stream = self._session.stream_at(index)
        if stream is None:
            return None
        return stream.a if side == "a" else stream.b

    def _hook(self, side: str, index: int, rtcp: bool) -> None:
        stream = self._session.stream_at(index)
        if stream is None:
            return
        # The relay takes no source but the SDP address before keys when the port's engine
        # asks so (sdp_address_only, read as tls_id is: optional). Not while the side has no
        # negotiation yet (forks ring): the answer's address is not known.
        security = self._legs().get(side)
        found = security.media_path_streams().get(index) if security is not None else None
        engines = self._negotiations(found) if found is not None else ()
        strict = any(getattr(n, "sdp_address_only", False) is True for _, n in engines)
        # Other sources' ZRTP beside a latch nothing proved goes to the engine only when it
        # tells its peer from a stranger (proves_peer, optional: the zrtp engine whose peer's
        # SDP binds its Hello, RFC 6189 §8.1); without, the latch is the rule (relay.py).
        proves = any(getattr(n, "proves_peer", False) is True for _, n in engines)
        # The engine runs a handshake per source (the dtls engine): the relay hands it DTLS
        # from every source before keys, not only the latched one and the SDP address.
        per_source = not strict and any(
            getattr(n, "handshake_per_source", False) is True for _, n in engines
        )
        # The engine keeps other phones' handshakes for another phone's answer to our offer,
        # which a proxy downstream may have forked (the dtls engine's keeps_other_phones,
        # optional; RFC 3261 §16.7): the callee's socket, keyed by the early answer's phone,
        # hands it other sources' DTLS and is not connected until a 2xx confirms the answer.
        other_phones = (
            side == "b"
            and per_source
            and any(getattr(n, "keeps_other_phones", False) is True for _, n in engines)
        )
        hooked = self._hooked.get((side, index, rtcp))
        if (
            hooked is not None
            and hooked[0] is stream
            and hooked[1:] == (strict, proves, per_source, other_phones)
        ):
            return
        relay_side = stream.a if side == "a" else stream.b

        def handler(packet: bytes, source: Address) -> None:
            self.deliver(side, index, packet, rtcp=rtcp, source=source)

        relay_side.set_non_rtp_handler(
            handler,
            rtcp=rtcp,
            sdp_address_only=strict,
            proves_peer=proves,
            handshake_per_source=per_source,
            other_phones=other_phones,
        )
        self._hooked[(side, index, rtcp)] = (stream, strict, proves, per_source, other_phones)

    def _unhook(self) -> None:
        streams = self._streams()
        for (side, index, rtcp), (stream, *_) in self._hooked.items():
            if not stream.closed:
                found = streams.get(side, {}).get(index)
                engines = () if found is None else tuple(n for _, n in self._negotiations(found))
                handler = _after_handshakes(self._session, side, engines)
                (stream.a if side == "a" else stream.b).set_non_rtp_handler(handler, rtcp=rtcp)
        self._hooked.clear()


def _address_text(address: Address | None) -> str:
    """An address for the log (IPv6 in brackets, RFC 3986 §3.2.2)."""
    return "none" if address is None else format_host_port(str(address[0]), int(address[1]))


def _after_handshakes(
    session: MediaSession, side: str, engines: Sequence[KeyNegotiation] = ()
) -> Callable[[bytes, Address], None]:
    """What a socket the call's handshakes took does with what is not RTP once they ended,
    until the call's streams close: the key exchange's own traffic, ended with the call, is
    not media, so neither forwarded nor a drop. A DTLS record (RFC 7983 §7: 20..63) is the
    association's own end, the peer's close_notify alert as it hangs up (RFC 5246 §7.2.1), or
    the last retransmission of a flight; a packet one of the stream's ``engines`` claims
    (``claims_packet``, docs/plugin_hooks.md "Media-path engines") is that engine's peer's
    last word on an exchange that was over: ZRTP's a Confirm2 or Conf2ACK sent again (RFC 6189
    §5.8, §6), a GoClear (§5.14, refused with Error 0x100 while the call was up) or an Error,
    and a plugin engine's likewise. While the call was up the engine took (and answered)
    them; counted ``malformed`` here, every ZRTP hang-up raised an operator's alert on
    ``malformed`` for nothing. Anything else is counted ``malformed``, as on a socket nobody
    handshakes on (docs/metrics.md). The engine is only asked, never fed: it has ended. An
    engine whose ``claims_packet`` raises (a plugin's bug, set off by a datagram from the
    network) has not claimed it: counted ``malformed``, logged once per socket (raised, it was
    logged with its traceback for every such datagram when the relay runs in media workers)."""
    failed = False

    def handler(packet: bytes, source: Address) -> None:
        nonlocal failed
        if not packet or 20 <= packet[0] <= 63:
            return
        for engine in engines:
            try:
                if engine.claims_packet(packet[0], packet):
                    return
            except Exception:
                if not failed:
                    failed = True
                    log_exception(
                        log,
                        "leg %s: claims_packet of %s failed after the handshakes (logged once "
                        "per socket)",
                        side,
                        type(engine).__qualname__,
                    )
        session.count_dropped(side, "malformed")

    return handler
