"""The seams between the core and its plugins, as typing.Protocols and frozen values.

Plugins hand the core objects that satisfy these protocols (through the ``gateway_register_*``
hooks); the core hands plugins the host objects defined here. Nothing in this module does I/O.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import attrs
import trio

from gateway.core.config import DtmfMode, ListenSpec
from gateway.core.transport.flows import Address, Flow, FlowTable

if TYPE_CHECKING:
    from gateway.core.sip.message import Request
    from gateway.core.sip.session_timer import LegTimer

# --------------------------------------------------------------------------------------------
# Signalling transports (udp, tcp, tls)


@attrs.frozen
class Listener:
    """A bound signalling listener, as reported by a transport's ``serve``."""

    transport: str
    address: Address


@attrs.frozen
class TransportLimits:
    """Bounds every transport enforces on what peers send (STYLE.md habit 5)."""

    max_message_size: int = 65535
    max_headers: int = 200
    max_connections_per_source: int = 32
    idle_timeout: float = 300.0
    connect_timeout: float = 10.0


class TransportHost(Protocol):
    """What the core gives a transport plugin."""

    @property
    def flows(self) -> FlowTable: ...

    @property
    def limits(self) -> TransportLimits: ...

    @property
    def state_dir(self) -> Path:
        """The gateway's state directory (generated certificates and keys live here)."""

    def deliver(self, data: bytes, flow: Flow, *, waited: float = 0.0) -> None:
        """Hand one complete SIP message (a datagram, or a frame cut by stream framing) to the
        SIP core. Never blocks; the core bounds its own queue and drops (with a count) if full.

        ``waited``: seconds the message had already waited before the transport read it (in the
        socket's receive buffer, when the transport can tell): overload control counts it."""

    async def serve_datagrams(self, fd: int, read: Callable[[int], bool]) -> None:
        """Have the SIP endpoint's task read the datagram socket ``fd`` whenever it is
        readable, until cancelled (then the socket may be closed): ``read(limit)`` reads up to
        ``limit`` ready datagrams, :meth:`deliver`-ing each, and says True when the socket had
        no more (``BlockingIOError``), False when it stopped at the limit. It runs in the
        endpoint's task, so it never blocks (gateway/core/transport/inbound.py)."""

    def flow_closed(self, flow: Flow) -> None:
        """Tell the core a connection-oriented flow has ended."""

    async def flow_revoked(self, flow: Flow, reason: str) -> None:
        """Tell the core that ``flow``'s peer certificate was revoked (``tls``, a reloaded CRL):
        the registrations made over it go and the calls on it end with ``reason``. Returns
        when the transport may close it: at once, or once the emergency calls over it ended
        (they are not cut). :meth:`flow_closed` follows as usual."""

    def peer_name(self, remote: Address) -> str | None:
        """The host name the peer at ``remote`` is known by, when the core reached it through
        DNS (a target of a trunk named by DNS: the trunk's domain, RFC 5922 §4), else None.
        TLS verifies the peer's certificate against it and sends it as SNI."""


@runtime_checkable
class Transport(Protocol):
    """A signalling transport registered by a plugin under ``name`` (the ``--listen`` prefix and
    the Via transport token, RFC 3261 §18)."""

    name: str
    reliable: bool
    secure: bool

    async def serve(
        self,
        listen: ListenSpec,
        host: TransportHost,
        *,
        task_status: trio.TaskStatus[Listener] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Bind ``listen``, call ``task_status.started(Listener(...))`` with the bound address, then
        receive until cancelled, delivering every message through ``host.deliver``."""

    async def open_flow(self, remote: Address, host: TransportHost) -> Flow:
        """Return a flow to ``remote``: an existing connection if one is up, else a new one
        (from a listener's socket for datagram transports). Raises OSError when unreachable."""


# --------------------------------------------------------------------------------------------
# Media key exchange (SDES, DTLS-SRTP, ZRTP, MIKEY)


@attrs.frozen(repr=False)
class SrtpKeys:
    """Master keys for one leg, one per direction. The core builds pylibsrtp contexts from them.
    ``repr`` never shows key material.

    ``local_mki``/``remote_mki``: the master key identifier (RFC 3711 §3.1, RFC 4568 §6.1) that
    every packet protected with that key carries, exactly as many octets as the MKI length, or
    None when that direction's packets carry no MKI (the usual case; only SDES sets them)."""

    suite: str
    local_key: bytes
    remote_key: bytes
    local_mki: bytes | None = None
    remote_mki: bytes | None = None

    def __repr__(self) -> str:
        mki = ""
        if self.local_mki is not None or self.remote_mki is not None:
            lengths = [len(m) if m is not None else 0 for m in (self.local_mki, self.remote_mki)]
            mki = f", mki_lengths={tuple(lengths)}"
        return f"SrtpKeys(suite={self.suite!r}, keys=<redacted>{mki})"


@attrs.frozen
class KeysReady:
    keys: SrtpKeys


@attrs.frozen
class SasReady:
    """ZRTP short authentication string for the user to compare (RFC 6189 §7). ``alarm``: a
    reason to doubt it that the operator must hear of (a ZRTP cache mismatch, §4.3.2)."""

    sas: str
    verified: bool
    alarm: str | None = None


@attrs.frozen
class NegotiationFailed:
    """The key exchange failed; the call ends with ``reason`` (and ``sip_status`` if it is still
    being set up)."""

    reason: str
    sip_status: int = 488


KeyNegotiationEvent = KeysReady | SasReady | NegotiationFailed


class KeyNegotiation(Protocol):
    """One media stream's key exchange on one leg: sans-IO, driven by the core."""

    def local_sdp_attributes(self) -> Sequence[tuple[str, str | None]]:
        """Attributes (a=...) for this leg's offer or answer of this stream."""

    def remote_sdp_attributes(self, attributes: Iterable[tuple[str, str | None]]) -> None:
        """The peer's answer for this stream (offerer only: the answerer gets the offer in
        ``KeyExchange.answer``). An unacceptable answer queues ``NegotiationFailed`` (and may
        also raise an ``SdpError`` with the same reason)."""

    def claims_packet(self, first_byte: int, packet: bytes) -> bool:
        """Whether a packet on the media port belongs to this engine (RFC 7983 demux)."""

    def receive_packet(self, packet: bytes, *, now: float) -> None: ...

    def packets_to_send(self, *, now: float) -> list[bytes]: ...

    def get_timer(self) -> float | None: ...

    def handle_timer(self, *, now: float) -> None: ...

    def next_event(self) -> KeyNegotiationEvent | None: ...

    # Optional: ``security_record() -> Mapping[str, str | None]``, what the leg's security record
    # (the call record, ``voipgw calls``) should say of this exchange beyond its name and suite:
    # ``dtls_role`` and ``peer_certificate_sha256`` (dtls), ``zrtp_sas``, ``zrtp_cache`` ... (zrtp).
    # Values that are None are left out.
    #
    # Optional: ``check_remote_sdp_attributes(attributes) -> str | None``, for an offerer's
    # negotiation: the reason ``remote_sdp_attributes`` would refuse the same answer, or None,
    # changing nothing. The core then checks each line of an answer with it and gives the answer
    # to ``remote_sdp_attributes`` only once it took the whole answer, so a refused answer (a
    # forked phone's 183) binds nothing for another phone's answer to the same offer
    # (docs/plugin_hooks.md). Without it the answer is given as it is read, as before.
    #
    # Optional: ``abandon() -> None``, for a negotiation answering the peer's offer: that offer
    # was refused (an error response to it, RFC 3261 §14.1), and the stream goes on with the
    # negotiation in force; this one is never driven again (``LegSecurity.peer_offer_refused``;
    # the dtls engine gives back a held handshake the offer took, docs/media_security.md).
    #
    # Optional: ``for_another_phone() -> KeyNegotiation``, for an offerer's negotiation on the
    # media path: a fresh negotiation of the same offer (the same local SDP attributes) holding
    # nothing of the answer in force, for another phone's 2xx after an early answer was taken
    # (a proxy downstream forked our offer; ``LegSecurity.read_answer``'s ``another_phone``).
    #
    # Optional: ``answer_confirmed() -> None``, for an offerer's negotiation: a 2xx made the call
    # with the answer in force, and no other phone's answer to our offer is taken from now on
    # (``LegSecurity.answer_confirmed``; the dtls engine drops what it kept for one). Idempotent.


class KeyExchange(Protocol):
    """A key-exchange method registered under ``name`` (``sdes``, ``dtls``, ``zrtp``, ``mikey``).

    Two optional class attributes tell the core how the method appears in SDP (read with
    ``getattr``, so plugins written before them keep working):

    - ``profile``: ``"sdp"`` (keys in SDP: RTP/SAVP(F), or RTP/AVP(F) offered best effort;
      the default when ``media_path`` is False), ``"dtls"`` (UDP/TLS/RTP/SAVP(F), RFC 5764 §8;
      the default when it is True) or ``"rtp"`` (plain RTP/AVP(F), keys agreed in the media:
      ZRTP, RFC 6189 §8);
    - ``sdp_attribute``: the attribute an answer carries when it took this method (``crypto``,
      ``fingerprint``, ``zrtp-hash``): when an offer's m= line carries several methods, the
      answer's attributes say which one the peer chose;
    - ``wants_leg``: True when ``offer()`` and ``answer()`` take a keyword ``leg: LegInfo | None``
      (whose leg it is: MIKEY picks the account's or trunk's pre-shared key by it). The core
      passes ``leg=`` only to exchanges that declare it, so the others keep their signatures.
    - ``wants_leg_state``: True when ``offer()`` and ``answer()`` take a keyword
      ``leg_state: dict[str, Any]``: one dict per leg and key exchange, the same for all the
      leg's streams and re-INVITEs, gone with the leg, for state the streams share (ZRTP keeps
      the leg's ZRTP session key there for Multistream mode, RFC 6189 §4.4.3). Passed only to
      exchanges that declare it.
    """

    name: str
    media_path: bool  # True: handshakes on the media port (DTLS, ZRTP); False: keys in SDP

    def offer(
        self,
        *,
        suites: Sequence[str],
        secure_signalling: bool,
        previous: KeyNegotiation | None = None,
        rekey: bool = False,
    ) -> KeyNegotiation:
        """Our offer for one stream. ``previous`` is the stream's negotiation before this
        re-offer: keys in force are kept unless ``rekey``; ``KeysReady`` is queued only when the
        keys change. A negotiation that cannot even start is returned already failed."""

    def answer(
        self,
        remote_attributes: Iterable[tuple[str, str | None]],
        *,
        suites: Sequence[str],
        secure_signalling: bool,
        previous: KeyNegotiation | None = None,
    ) -> KeyNegotiation | None:
        """A negotiation answering the peer's offer, or None if this method does not apply.
        ``previous`` as for ``offer``."""


@attrs.frozen
class MediaPolicy:
    """What a leg accepts (ARCHITECTURE.md "Key exchange"): ordered key exchanges, cleartext."""

    name: str
    key_exchanges: tuple[str, ...]
    allow_cleartext: bool
    suites: tuple[str, ...] = ()
    description: str = ""


# --------------------------------------------------------------------------------------------
# Media taps (recording, SIPREC, lawful intercept)


@attrs.frozen
class TappedMedia:
    """One stream of a tapped call as negotiated at its answer: the m= line's media type, its
    payload formats, and their a=rtpmap / a=fmtp values (what a recorder must declare)."""

    index: int
    media: str
    formats: tuple[str, ...]
    rtpmaps: tuple[str, ...] = ()
    fmtps: tuple[str, ...] = ()
    direction: str = "sendrecv"
    """As the gateway last offered or answered it to the caller: anything but "sendrecv" means
    the call is on hold one way or both (RFC 3264 §8.4)."""


@attrs.frozen
class SessionAnswer:
    """A plugin's answer to the far end's re-INVITE or UPDATE with a body in its session
    (``OutboundSession.on_request``): the status (2xx: taken, the timer refreshed; else the
    refusal, e.g. 488 for an offer it cannot take, RFC 3264 §6, and the session stays as it
    was), its reason phrase, extra header fields (e.g. a 415's Accept), and the body: the SDP
    answer to an offer (``application/sdp``), which a later re-INVITE without an offer is
    answered with too (RFC 3264 §8), or none (b"": a re-INVITE is then answered with the SDP
    in force, its 2xx then the offer, RFC 3261 §14.2)."""

    status: int
    reason: str = ""
    body: bytes = b""
    content_type: str | None = None
    headers: tuple[tuple[str, str], ...] = ()


class OutboundSession(Protocol):
    """An INVITE session the gateway opened for a plugin (``OutboundSessionHost``)."""

    on_request: Callable[[str, str | None, bytes], SessionAnswer] | None
    """Set by the plugin to read what the far end's re-INVITE or UPDATE carries: called with
    the method, the Content-Type and the body of each one that has a body (and is not refused
    first: 491 while our re-INVITE is out, 422), synchronously; what it returns is the answer.
    None (the default): an offer is answered with the SDP of our last offer it took."""

    on_ack_answer: Callable[[str | None, bytes], None] | None
    """Set by the plugin to read the answer in the far end's ACK (RFC 3261 §14.2,
    §13.2.2.4): where its re-INVITE had no offer, our 2xx offered the SDP in force and the ACK
    answers it; called with the ACK's Content-Type and body, synchronously, once per such
    re-INVITE. An ACK cannot be refused: an answer the plugin cannot use it logs, and the
    session goes on as it was. None (the default): the answer is not read."""

    answer_body: bytes
    answer_type: str | None
    ended: trio.Event
    """Set when the far end ended the session (its BYE, or a 481 to our re-INVITE: it no
    longer knows the dialog, RFC 5057 §5.1)."""
    retry_after: int | None
    """The Retry-After (seconds) of the far end's last refusal of a re-INVITE, if any."""
    timer: LegTimer | None
    """The session timer in force (RFC 4028), None without one: ``due`` says when the plugin
    must act, ``we_refresh`` whether that is a refresh (:meth:`refresh` or :meth:`update`) or,
    the far end having failed to refresh, the session's end (§10). The core keeps it from each
    2xx and from the far end's own refreshes, which it answers."""
    allows_update: bool
    """The far end allows UPDATE (RFC 3311): :meth:`refresh` may be used."""

    @property
    def call_id(self) -> str:
        """The Call-ID of the session's dialog (for logs: which recording session)."""

    async def update(
        self, body: bytes, content_type: str, *, secure_only: bool = False, sdp: bytes = b""
    ) -> int | None:
        """A re-INVITE with a new offer: the far end's final status (its 2xx ACKed, its answer
        then in ``answer_body`` and ``answer_type``), None when the session is over or the
        request could not be sent (``secure_only``, for a body with keys: not over TLS).
        ``sdp``: the offer's SDP, what the far end's own re-INVITE is answered with once this
        offer is taken. It refreshes the session timer; a 422 is asked again at its Min-SE.
        Cancelled while waiting, the core CANCELs it after a provisional response and ACKs a
        2xx that comes later (RFC 3261 §9.1, §13.2.2.4)."""

    async def refresh(self) -> int | None:
        """A session refresh without an offer: UPDATE without a body (RFC 4028 §10, RFC 3311),
        for a far end that ``allows_update``; the final status or None as :meth:`update`."""

    async def probe(self) -> int | None:
        """An OPTIONS in the dialog (RFC 3261 §11): is the far end still there, where no
        session timer runs? Its final status (a 481 ends the session as for :meth:`update`),
        or None without one. Not a refresh."""

    async def close(self) -> None:
        """End the session (BYE) unless the far end did."""


class OutboundSessionHost(Protocol):
    """What the core lends a plugin to open an INVITE session of its own (a SIPREC recording
    session to a recorder): the core runs the transactions and the dialog."""

    async def open_session(
        self,
        target: str,
        *,
        body: bytes,
        content_type: str,
        headers: Sequence[tuple[str, str]] = (),
        contact_parameters: Sequence[str] = (),
        secure_only: bool = False,
        session_expires: int = 0,
        sdp: bytes = b"",
    ) -> OutboundSession:
        """INVITE ``target`` with ``body``; the session once answered 2xx. ``secure_only``: the
        body carries keys (SDES), so it goes over TLS or not at all (RFC 4568 §8.3).
        ``session_expires``: ask for an RFC 4028 session timer of that many seconds, we the
        refresher (0: none); a 422 is asked again at its Min-SE. ``sdp``: the offer's SDP (see
        ``OutboundSession.update``). Cancelled while waiting, the core CANCELs the INVITE after
        a provisional response, and ACKs and BYEs a 2xx that comes anyway (RFC 3261 §15).
        Raises an exception whose text says why when it is refused or unreachable."""


@attrs.frozen
class TappedCall:
    """What a tap is told of a call when its media starts (its answer), or when its INVITE
    arrives for a tap that decides then (``MediaTap.sink_for_call_start``): the gateway's call
    id (the call record's), the caller's From and request URIs, the To URI and the
    P-Asserted-Identity URIs of the caller's INVITE, who is on each side ("account" or "trunk"
    and its name; "" and None: unknown, as the callee always is at the start), its streams, and
    the sessions host for a tap that sends the media on over SIP (None where there is none, e.g.
    in unit tests)."""

    call_id: str
    from_uri: str
    to_uri: str
    caller_kind: str
    caller_name: str | None
    callee_kind: str
    callee_name: str | None
    media: tuple[TappedMedia, ...] = ()
    sessions: OutboundSessionHost | None = attrs.field(default=None, eq=False, repr=False)
    to_header_uri: str = ""
    asserted_uris: tuple[str, ...] = ()
    caller_uris: tuple[str, ...] = ()
    """Who the gateway itself knows the caller to be, whatever its INVITE claims: for an
    account its address of record in each of our domains and, as tel URIs, the numbers that
    reach it (the trunks' ``dids``, also as E.164 where the trunk's numbering plan reads them
    so); for a trunk (whose From and P-Asserted-Identity are the identities, RFC 3325 trust)
    the numbers of those as E.164 by the trunk's numbering plan, where that differs from how
    they are written."""
    callee_uris: tuple[str, ...] = ()
    """The number called (Request-URI and To) as E.164 by the caller's numbering plan, where
    that differs from how it is written; once routed, also the identities of the accounts the
    call was routed to (a tap deciding at the start is asked again then, when the routing named
    accounts: a call to a DID reaches an account whose address of record the INVITE does not
    carry); and, asked again when a callee's 3xx is followed (or the call fails over to an
    account), the URI the forward was routed as, its number as E.164 and the accounts it
    reaches."""
    answered_by: str = ""
    """At the answer, the URI of the party who answered (its dialog's remote URI) where that
    party is not the one the call was sent to: the phone that picked the ringing call up
    (RFC 3891 Replaces or a pickup code, ``core/calls/pickup.py``). "" otherwise, and at the
    start."""
    indicate_recording: Callable[[str], None] | None = attrs.field(
        default=None, eq=False, repr=False
    )
    """For a recording (a tap asked at the answer; never at the start, where interceptions
    decide): tell the call's recording-aware parties the recording's state, ``"on"`` (the
    recorder takes the copies), ``"paused"`` or ``"off"`` (ended for good) (RFC 7866 §7.1.1:
    ``a=record`` in the SDP they get, a re-INVITE at each change; core/calls/
    recording_indication.py). Callable from any task; repeats are free. A covert sink's word
    is ignored. None: nobody to tell (unit tests)."""


class TapSink(Protocol):
    """Receives copies of one call's decrypted media. ``packet`` must never block: a sink drops
    and counts when it cannot keep up (STYLE.md habit 7).

    ``packet`` gets every packet the relay forwards on stream ``stream_id`` (the m= line index,
    "0", "1", ...) in ``direction`` ("a_to_b": what the caller sent, "b_to_a": what the callee
    sent), RTP and RTCP alike, as plain (decrypted) packets, header included; ``now`` is the
    gateway's monotonic clock (trio's)."""

    def packet(self, stream_id: str, direction: str, rtp: bytes, *, now: float) -> None: ...

    async def run(self) -> None:
        """The sink's own task (writing files, sending to a recorder), started in a nursery that
        outlives the call; it returns once ``close`` was called and its work is done."""

    def close(self) -> None:
        """The call ended: no more packets; ``run`` finishes what it has and returns."""

    # Optional: ``streams_changed(media: tuple[TappedMedia, ...]) -> None``, called (from the
    # call's task, must not block) when the call's streams change after the answer: a hold or
    # resume, a codec change, a stream added (a SIPREC client re-INVITEs its recorder).
    #
    # Optional, for sinks made at the call's start (lawful intercept): ``sip_message(data, *,
    # leg, inbound, transport, source, destination, at) -> None`` gets a copy of every SIP
    # message of the call on any of its legs as bytes on the wire (``leg`` "a": the caller's
    # dialog, "b": a callee's; ``inbound``: received by the gateway; ``at``: Unix time), from
    # the SIP stack's task, so it must never block.
    #
    # Optional: ``leg_replaced(side) -> None``: a transfer put another party on ``side``
    # ("a": the caller's, "b": the callee's) of the call; whoever was there has left it.
    #
    # Optional: ``party_replaced(side, uri) -> None``: the same, with the new party's URI (its
    # dialog's remote URI: the To of our INVITE to it); a SIPREC client re-INVITEs its recorder
    # with metadata naming it (RFC 7866 §9). A sink may have both; each is called.
    #
    # Optional: ``set_paused(paused: bool, *, by: str) -> None``: the sink is a recording that
    # an operator may pause (``voipgw recording pause``, PCI DSS: card digits never recorded)
    # and resume; ``by`` says who asked. Called on the event loop (the control socket's task,
    # or the call's for a sink that joins a paused call), must not block. While paused
    # ``packet`` is still called: the sink drops what it gets (a SIPREC client also re-INVITEs
    # its recorder with its streams a=inactive, RFC 7866 §7.1.1). Never called on a covert
    # sink: an interception is never paused.
    #
    # Optional: ``covert = True``: the sink is never named in the call's record, in ``voipgw
    # calls`` or in the core's log lines (an interception must not show to whoever reads them).
    #
    # Optional: ``datagram(stream_id, direction, data, *, now, source, destination) -> None``
    # gets every datagram the relay forwards on a T.38 fax stream (UDPTL, ITU-T T.38 Annex D:
    # not RTP, never encrypted), as it arrived: ``source`` the sending peer's (host, port),
    # ``destination`` the gateway's. Must never block. A sink without it (a recorder) gets no
    # fax: ``packet`` only ever sees RTP and RTCP, and the core logs once per call that the
    # fax period is not copied to it.


class MediaTap(Protocol):
    name: str

    def sink_for_call(self, call: TappedCall) -> TapSink | None:
        """A sink for this call, or None when the tap does not apply to it."""

    # Optional: ``sink_for_call_start(call: TappedCall) -> TapSink | None``. A tap that has it
    # is asked when the caller's INVITE is accepted as a call (before routing, before any
    # answer), not at the answer: its sink sees the whole call, call attempts that fail
    # included, early media, and (with ``sip_message``) its signalling on every leg.
    #
    # Optional, with ``sink_for_call_start``: ``wants_calls`` (a bool, read per new call):
    # False spares building what the tap would be told (an interception with no task).
    #
    # Optional, with ``sink_for_call_start``: ``bind_calls_in_progress(ask_again)``: the core
    # hands the tap a function that asks it again about every call in progress (its targets
    # changed); a call it then returns a sink for gets it from that moment on (its SIP and
    # media from then, nothing before). Called from the tap's own task, never blocking.
    #
    # Optional: ``async run() -> None``, the tap's own long-running task (lawful intercept: its
    # X1 provisioning server and its delivery connections), started once the gateway's
    # listeners are up and cancelled when it stops; its failure is logged, never the gateway's.
    # A ``run(*, task_status)`` is waited for until it calls ``task_status.started()``: a
    # failure before that (its port taken) stops the gateway's start-up, as a listener's does.
    #
    # Optional: ``message(data, *, transport, source, destination, at)``: the tap is a
    # ``SipCapture`` too and gets every SIP message the gateway sends or receives (interception
    # reports a target's REGISTERs, which belong to no call).
    #
    # Optional: ``sip_targets`` (a sequence of SIP URIs, read once at start-up): where the
    # tap's ``TappedCall.sessions.open_session`` will go. Those whose host is a name are
    # resolved by the gateway's DNS machinery before calls are taken and kept resolved off the
    # call path (RFC 3263, as trunks named by DNS); a session to one tries its targets in turn.
    #
    # Optional: ``update_failures`` (a mapping of reason to count, every reason present from
    # the start): updates of recording sessions the tap gave up on (SIPREC: a re-INVITE the
    # recorder kept refusing, or a recording session it no longer knew). Read at a scrape
    # (``GatewayStatus.recording_update_failures``), summed over the taps that have it.
    #
    # Optional: ``streams_unrecorded`` (a mapping of reason to count, every reason present from
    # the start): streams of calls the tap records that it left out of the recording (SIPREC:
    # no local port for the copies, or too many m= lines). Read at a scrape
    # (``GatewayStatus.recording_streams_unrecorded``), summed over the taps that have it.


class SipCapture(Protocol):
    """A capture agent (HEP to a Homer collector): a copy of every SIP message the gateway
    receives or sends, as bytes on the wire (after ``gateway_outbound_message`` hooks), with the
    transport and the addresses, and the wall-clock time ``at`` (Unix seconds). ``message`` is
    called from the SIP stack's task and must never block: queue, drop and count past a bound.
    ``run`` is the agent's own task, started with the gateway's listeners and cancelled when the
    gateway stops."""

    name: str

    def message(
        self, data: bytes, *, transport: str, source: Address, destination: Address, at: float
    ) -> None: ...

    async def run(self) -> None: ...


class RtcpCapture(Protocol):
    """Optional part of a :class:`SipCapture`: when ``rtcp_enabled`` is true (read once, at
    start-up), ``rtcp_report`` gets every RTCP report a call's leg sends (the JSON of its SR or
    RR, :func:`gateway.core.media.rtcp.report_json`; HEP protocol type 5), with that leg's RTCP
    addresses and its Call-ID as ``correlation``. Called from the media relay's task: never
    block."""

    @property
    def rtcp_enabled(self) -> bool: ...

    def rtcp_report(
        self,
        report: bytes,
        *,
        source: Address,
        destination: Address,
        at: float,
        correlation: bytes,
    ) -> None: ...


# --------------------------------------------------------------------------------------------
# Devices and PSTN interworking


@attrs.frozen
class DeviceProfile:
    """A phone model's known capabilities and quirks, matched on User-Agent (the longest of
    ``user_agent_prefixes`` among registered profiles wins) or named by a plugin's
    ``gateway_identify_device``. On that device's legs (gateway/core/devices.py):
    ``media_policy`` replaces the policy of an account or trunk at ``best-effort`` (the default,
    set or not; any other is kept); ``key_exchanges`` and ``suites`` narrow the leg's policy to
    the key exchanges (``"sdes"``, ``"dtls"``, ``"zrtp"``, ``"mikey"``) and SRTP suites (SDES
    names) the model takes; None: no limit. ``dtmf``: ``"info"`` for a model that sends and
    expects DTMF only as SIP INFO (its offers without telephone-event get one towards the other
    leg, and the digits are interworked: docs/architecture.md "DTMF interworking"), else
    ``"rfc4733"`` (as its SDP negotiates). ``codecs``: the audio codecs the model decodes, by
    rtpmap encoding name in its order of preference (``("G722", "PCMU", "PCMA",
    "telephone-event")``); offers sent to it keep only these, in that order, and its own offers
    are narrowed to them before the other leg sees them, so the answers it gets hold only these;
    telephone-event and CN are kept only when listed, and at a kept codec's clock rate; an offer
    left with no audio codec is refused (488); video and T.38 lines are left alone; None: no
    limit. ``notes`` is for people (``voipgw plugins`` lists profiles)."""

    name: str
    user_agent_prefixes: tuple[str, ...] = ()
    media_policy: str | None = None
    notes: str = ""
    key_exchanges: tuple[str, ...] | None = None
    suites: tuple[str, ...] | None = None
    dtmf: DtmfMode = "rfc4733"
    codecs: tuple[str, ...] | None = None

    def matches(self, user_agent: str) -> bool:
        return any(user_agent.startswith(prefix) for prefix in self.user_agent_prefixes)


class Interworking(Protocol):
    """PSTN interworking: number normalisation and cause mapping for one trunk kind."""

    name: str

    def normalize_number(self, number: str, *, context: str) -> str: ...

    def sip_status_for_q850(self, cause: int) -> int: ...

    def q850_for_sip_status(self, status: int) -> int | None:
        """The cause for a final status; None where none applies (2xx, 3xx, 487)."""
        ...


# --------------------------------------------------------------------------------------------
# Decisions and observations


@attrs.frozen
class CallerAuth:
    """How the sender of a new request proved who it is, for the call record (``auth``, per
    leg): ``method`` ``"digest"``: an account's digest credentials (RFC 3261 §22.2), with the
    ``realm``, ``algorithm`` and ``qop`` its answer used, and whether the account is bound to
    device certificates of which the connection presented one (``device_certificate``);
    ``"source"``: a trunk accepted by the address it sent from (``auth_by_source``), ``source``.
    Never a secret: no HA1, password, nonce or digest response."""

    method: str  # "digest" | "source"
    realm: str | None = None
    algorithm: str | None = None
    qop: str | None = None
    device_certificate: bool = False
    source: str | None = None

    def record(self) -> dict[str, object]:
        """The call record's ``auth`` of a leg (docs/media_security.md)."""
        if self.method == "source":
            return {"method": "source", "source": self.source}
        return {
            "method": self.method,
            "realm": self.realm,
            "algorithm": self.algorithm,
            "qop": self.qop,
            "device_certificate": self.device_certificate,
        }


@attrs.frozen
class Caller:
    """Who sent a new request: an authenticated account, a trunk matched by source or
    credentials, or nobody yet (``kind="unknown"``). ``auth``: how it proved it (None for a
    caller the core made up, a transferor placing a call through us)."""

    kind: str  # "account" | "trunk" | "unknown"
    name: str | None
    flow: Flow | None = attrs.field(default=None, eq=False)
    device: DeviceProfile | None = None
    auth: CallerAuth | None = None


@attrs.frozen
class RouteTarget:
    """One destination of a call leg: a SIP URI, and optionally the flow to send it over (a
    registered contact behind NAT) and the trunk it belongs to."""

    uri: str
    flow: Flow | None = attrs.field(default=None, eq=False)
    trunk: str | None = None
    account: str | None = None


@attrs.frozen
class RouteDecision:
    """Where a call goes: every target is rung in parallel (RFC 3261 §16.6 style forking by the
    B2BUA), or the call is rejected with ``reject_status`` and a reason phrase saying why.
    ``alternates`` are tried one after another, in order, when every target failed with one of
    ``[sip] failover_statuses`` (a carrier's 503, a trunk that did not answer): serial failover
    between trunks, never ringing two at once."""

    targets: tuple[RouteTarget, ...] = ()
    reject_status: int | None = None
    reject_reason: str | None = None
    alternates: tuple[RouteTarget, ...] = ()

    @classmethod
    def reject(cls, status: int, reason: str) -> RouteDecision:
        return cls(reject_status=status, reject_reason=reason)


class Directory(Protocol):
    """Read-only view of accounts, registrations and trunks handed to routing hooks."""

    def is_local_domain(self, host: str) -> bool: ...

    def account_exists(self, name: str) -> bool: ...

    def contacts(self, account: str) -> Sequence[RouteTarget]: ...

    def trunk_for_number(self, number: str) -> str | None: ...

    def trunks_for_number(self, number: str) -> tuple[str, ...]:
        """Every enabled trunk that serves ``number`` and is not down (``options_interval``
        probing), longest prefix first, then as listed: the first and its failover order."""
        ...

    def trunk_target(self, trunk: str, number: str) -> RouteTarget | None:
        """Where a call to ``number`` over ``trunk`` goes first (for a trunk named by DNS its
        first target in this call's order), or None (unknown or disabled trunk, not a dial
        string, a name not resolved yet)."""
        ...

    def trunk_targets(self, trunk: str, number: str) -> Sequence[RouteTarget]:
        """Every target of a call to ``number`` over ``trunk``, in the order the call tries
        them: for a trunk named by DNS one per resolved target (RFC 3263 §4.3, RFC 2782
        weights drawn afresh at each call of this), else :meth:`trunk_target` alone; empty
        where that is None."""
        ...

    def to_e164(self, number: str, *, trunk: str | None = None) -> str:
        """``number`` as E.164 by the numbering plan of ``trunk`` (None: how accounts dial),
        or as it is where the plan cannot read it (docs/configuration.md ``[numbering]``)."""
        ...

    def written_for(self, trunk: str, number: str) -> str:
        """An E.164 ``number`` in the ``number_format`` of ``trunk``."""
        ...


@attrs.frozen
class LegInfo:
    """What a media-security policy decision may look at for one call leg."""

    call_id: str
    side: str  # "a" (the leg that called us) | "b" (the leg we called)
    kind: str  # "account" | "trunk"
    name: str | None
    secure_signalling: bool
    device: DeviceProfile | None = None
    configured_policy: str | None = None


@attrs.frozen
class TrunkCall:
    """A call to or from a trunk as a caller-identity plugin sees it (STIR/SHAKEN,
    ``gateway_register_caller_identity``). Numbers are E.164 (``+`` and digits), read by the
    trunk's numbering plan; a number the plan cannot read is as the trunk wrote it."""

    call_id: str
    trunk: str  # the trunk called (signing) or calling (verification)
    caller_kind: str  # "account" | "trunk"
    caller_name: str | None
    # The caller's numbers: the one presented (P-Asserted-Identity, else From) when we call a
    # trunk; the From's and then each P-Asserted-Identity's when a trunk calls us.
    calling: tuple[str, ...]
    called: str | None  # the Request-URI's number
    own_number: bool = False  # an account presents one of its own DIDs on this trunk
    at: float = 0.0  # Unix time
    # Signing a call passed on from a trunk: the Identity headers (RFC 8224) its INVITE had.
    received_identity: tuple[str, ...] = ()
    # Verifying: the INVITE calls one of ``[numbering] emergency_numbers``. No outcome may
    # refuse such a call (caller authentication never stands between a caller and the
    # emergency services); the core drops a refusal a plugin returns for one all the same.
    emergency: bool = False
    # Verifying: an emergency service calling back one of our emergency callers (RFC 7090,
    # ``[gateway] psap_callback_window``; often unsigned). Never refused either, the same way.
    psap_callback: bool = False


@attrs.frozen
class IdentityOutcome:
    """What a caller-identity plugin made of a call (signed it, verified the caller's number),
    for the call's record, the metrics and the callee."""

    outcome: str  # a label from a small fixed set (metrics): "signed", "passed", "failed", ...
    described: str  # plain words for ``voipgw calls``: "caller number verified (attestation A)"
    # Our INVITE to a trunk: headers to add (Identity). A trunk's call to accounts: tel URI
    # parameters put on the caller's number in the From towards the phones (verstat).
    headers: tuple[tuple[str, str], ...] = ()
    caller_parameters: tuple[tuple[str, str], ...] = ()
    reject: tuple[int, str] | None = None  # refuse the trunk's INVITE with this status


class IdentityCheck(Protocol):
    """A check of an INVITE from a trunk that may need the network (fetching a certificate).
    The call's task awaits ``run``; it must return within its own configured timeout."""

    async def run(self) -> IdentityOutcome: ...


class CallerIdentity(Protocol):
    """Signs calls to trunks and verifies calls from trunks (STIR/SHAKEN: RFC 8224, 8588),
    registered by ``gateway_register_caller_identity``. Both are asked only while one is
    registered; each returns None for a trunk it does not handle.

    Optional: ``async run()`` (with ``task_status`` if it must say when it started), the
    service's own task from the gateway's start to its stop (STIR/SHAKEN's certificate fetches,
    which outlive the call that asked first)."""

    def sign(self, call: TrunkCall) -> IdentityOutcome | None:
        """Headers for our INVITE to ``call.trunk`` (an account's call, or one passed on)."""
        ...

    def check(self, call: TrunkCall, request: Request) -> IdentityCheck | None:
        """A check of ``request``, the INVITE ``call.trunk`` sent us."""
        ...


@attrs.define(eq=False)
class OutboundMessage:
    """A message about to be sent. ``gateway_outbound_message`` hooks may replace ``message``."""

    message: object  # gateway.core.sip.message.Request | Response
    flow: Flow | None
    leg: LegInfo | None = None


@attrs.define(eq=False)
class InboundMessage:
    """A message just received, parsed and found well-formed, before the core acts on it.
    ``gateway_inbound_message`` hooks may replace ``message`` within the rules of
    gateway/core/inbound.py (not its Via, Call-ID, CSeq, tags, method, Request-URI or status
    class; a request's Max-Forwards only lower). ``leg``: the call leg it came from (our tag in
    its dialog), None for a message outside a call and for a new call's INVITE; ``device``: the
    leg's phone profile, else for a request the registered profile its User-Agent matches, else
    None."""

    message: object  # gateway.core.sip.message.Request | Response
    flow: Flow
    leg: LegInfo | None = None
    device: DeviceProfile | None = None


@attrs.frozen
class CallEvent:
    """Something that happened to a call, for observers (CDR writers, metrics, taps)."""

    # "started" | "ringing" | "answered" | "transferred" | "transfer-failed" | "ended" | ...
    kind: str
    call_id: str
    at: float
    reason: str | None = None
    detail: tuple[tuple[str, str], ...] = ()


# --------------------------------------------------------------------------------------------
# Monitoring (a Prometheus exporter, an SNMP agent)


@attrs.frozen
class Histogram:
    """Observations counted into buckets, the way Prometheus exposes a histogram: ``counts[i]``
    is how many were at most ``bounds[i]`` (cumulative), ``count`` how many there were in all
    (the ``+Inf`` bucket) and ``total`` their sum."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    count: int
    total: float


@attrs.frozen
class CallCounts:
    """Calls since the gateway started. ``ended`` counts them by outcome: "answered" (ended
    after an answer), "cancelled" (the caller gave up), "no_answer" (the ring timeout),
    "rejected" (a final failure status to the caller: refused, busy, unreachable),
    "transferred" (replaced by a transfer before an answer), "error" (a network error or a bug
    ended it). ``setup_seconds``: from the caller's INVITE becoming a call to its answer."""

    in_progress: int
    started: int
    answered: int
    ended: tuple[tuple[str, int], ...]
    setup_seconds: Histogram
    # Stopping gracefully ([gateway] drain_timeout): new calls are refused with 503.
    draining: bool = False
    # With a store shared by several nodes (PostgreSQL): heartbeats of this node that found
    # another running process's under its [store] node name. None: no shared store.
    node_name_conflicts: int | None = None
    # With a shared store: the nodes alive, this one included, as its last heartbeat counted.
    live_nodes: int | None = None
    # With a store and [gateway] psap_callback_window: PSAP callbacks recognised from the store
    # only (another node's emergency call, or this node's before a restart), and the store's
    # writes and reads of those numbers that failed or timed out. None: no store, or no window.
    psap_callbacks_from_store: int | None = None
    psap_callback_store_failures: int | None = None


@attrs.frozen
class CallRecordRetention:
    """Call record retention (``[store] call_record_days``): the window in days (0: records
    kept for ever, nothing deleted), the records this node's housekeeping deleted since the
    start, and its passes a store failure ended (each retried by the next, 30 s later)."""

    days: float
    expired: int
    failed_passes: int


@attrs.frozen
class MediaCounts:
    """Media relayed since the gateway started, ended calls and live ones together, both
    directions summed: packets (RTP and RTCP) and bytes forwarded, packets dropped for any
    reason, SRTP/SRTCP packets that failed authentication and replays refused (RFC 3711
    §3.3.2, §3.3.3). ``streams``: relay streams open now."""

    streams: int
    packets: int
    bytes: int
    dropped: int
    srtp_auth_failures: int
    srtp_replays: int
    rtcp_reports: int = 0
    """RTCP datagrams read for call quality (``[media] rtcp_quality``)."""
    rtcp_malformed: int = 0
    """RTCP datagrams that could not be read (relayed unchanged all the same)."""
    call_mos: Histogram | None = None
    """At call end, per leg whose phone sent RTCP reports: the lowest estimated MOS it reached
    (:mod:`gateway.core.media.quality`). None: not counted."""
    call_jitter_seconds: Histogram | None = None
    """At call end, per leg whose phone sent RTCP reports: the highest jitter it reported."""
    udptl_packets: int = 0
    """T.38 fax datagrams (UDPTL) relayed, both directions: not RTP, not in ``packets``."""
    udptl_bytes: int = 0
    """Their bytes (UDP payload), not in ``bytes``."""
    transcoded_packets: int = 0
    """RTP packets whose G.711 law was converted (``[media] g711_transcoding``), both
    directions; also in ``packets``."""
    dropped_by_reason: tuple[tuple[str, int], ...] = ()
    """``dropped`` split by reason: (reason, packets) for each of
    :data:`gateway.core.media.relay.DROP_REASONS`, in that order (docs/metrics.md)."""
    dtmf_event_packets: tuple[tuple[str, int], ...] = ()
    """DTMF interworking's RFC 4733 event packets: (action, packets) for each of
    :data:`gateway.core.media.session.DTMF_COUNTS` (``taken`` for SIP INFO, ``injected`` from
    it, ``ended_at_change``, ``passed``, ``end_copies_dropped``), both directions
    (docs/metrics.md)."""


@attrs.frozen
class MediaWorkerCounts:
    """The media worker processes (``[media] workers`` >= 2) now and since the start:
    ``states``, (state, workers) for each of ``running``, ``starting``, ``restarting`` and
    ``stopped`` (:data:`gateway.core.media.remote_relay.WORKER_STATES`), 0 included;
    ``restarts``, (reason, processes started again) for each of ``exited``, ``not_ready``,
    ``channel_error`` and ``not_started``
    (:data:`gateway.core.media.remote_relay.RESTART_REASONS`); by worker index, each worker's
    open ``streams``, its process's ``resident_bytes`` (None without a process) and the
    entries of its internal ``tables`` as (table, entries) it last reported (empty when not
    running)."""

    states: tuple[tuple[str, int], ...]
    restarts: tuple[tuple[str, int], ...]
    streams: tuple[int, ...] = ()
    resident_bytes: tuple[int | None, ...] = ()
    tables: tuple[tuple[tuple[str, int], ...], ...] = ()


@attrs.frozen
class TrunkCounts:
    """One configured trunk: its calls in progress, its ``max_calls`` (0: none) and the calls
    refused since the start because it was at its ``max_calls`` or its ``max_cps``; whether its
    OPTIONS probes find it up (None: not probed), whether the gateway is registered with it
    (None: it does not register), and the calls that failed on it and went to the next trunk.
    With a store shared by several nodes, ``calls_in_progress`` is this node's, and
    ``counted_alone`` the calls this node counted against ``max_calls`` by itself because the
    database did not answer (the cluster's count is in the database). ``paced_cps``: the new
    calls a second this node sends to it at most now, its ``max_cps`` (0: none) or, with
    ``[store] max_cps_scope = "cluster"``, this node's share of it. For a trunk named by DNS
    (else None): ``dns_targets``, the targets of its name's last answer (0 before the first),
    and ``dns_resolved_at``, when that answer came (seconds since the epoch; None before)."""

    name: str
    calls_in_progress: int
    max_calls: int
    refused_call_limit: int
    refused_call_rate: int
    up: bool | None = None
    registered: bool | None = None
    failovers: int = 0
    counted_alone: int = 0
    paced_cps: float = 0.0
    dns_targets: int | None = None
    dns_resolved_at: float | None = None


@attrs.frozen
class SessionTargetDns:
    """One SIP URI the gateway opens sessions to whose host is a name (a SIPREC recorder's,
    ``MediaTap.sip_targets``), kept resolved as trunks named by DNS are: ``dns_targets``, the
    targets of its name's last answer (0 before the first), ``dns_resolved_at``, when that
    answer came (seconds since the epoch; None before)."""

    uri: str
    dns_targets: int
    dns_resolved_at: float | None = None


@attrs.frozen
class SipCounts:
    """SIP messages since the start: received (parsed, from any transport), sent, new
    INVITEs and REGISTERs refused with 503 for overload (gateway/core/sip/overload.py),
    requests refused as malformed (400), and messages dropped because the inbound queue was
    full."""

    received: int
    sent: int
    rejected_overload: int
    rejected_malformed: int
    dropped_queue_full: int
    # Datagrams the kernel dropped at the UDP sockets, their receive buffers full (a UDP
    # backlog waits there, not in the inbound queue: gateway/core/transport/inbound.py).
    udp_receive_dropped: int = 0
    # Late INVITEs to an emergency number served all the same (gateway/core/endpoint.py).
    emergency_overload_passes: int = 0
    # New requests answered 482 as merged (RFC 3261 §8.2.2.2: one request that reached us
    # along two paths), and internal errors (bugs) of the SIP endpoint: a request whose handler
    # failed (answered 500), one no handler ever answered, a failed output (endpoint.py).
    merged_requests: int = 0
    internal_errors: int = 0
    # gateway_inbound_message changes dropped (a hook that raised or broke a rule, each
    # plugin's logged at most once a minute: gateway/core/inbound.py).
    inbound_hook_refused: int = 0
    # UDP requests whose answer would not fit a datagram: refused with 513, or dropped when not
    # even that fits (gateway/core/endpoint.py).
    rejected_too_large: int = 0
    # Requests dropped unanswered for a scanner's User-Agent ([sip] drop_user_agents).
    dropped_user_agent: int = 0
    # Digest authentication (gateway/core/registration.py): failed attempts (a wrong password
    # or an unknown user), requests refused 403 because their source was blocked, and the
    # sources (addresses, or IPv6 prefixes) banned now ([gateway] auth_block_time).
    auth_failures: int = 0
    auth_blocked: int = 0
    auth_banned_sources: int = 0
    # NAT keepalives ([sip] nat_keepalive_interval; None: off): the registered contacts they
    # keep alive, and those removed for not answering, since the start.
    nat_keepalive_contacts: int | None = None
    nat_keepalive_removed: int = 0
    # message-summary subscriptions relayed to the voicemail trunk now, those refused for a
    # limit, and out-of-dialog MESSAGE/NOTIFY relayed (calls/subscriptions.py, messages.py).
    subscriptions: int = 0
    subscriptions_refused: int = 0
    messages_relayed: int = 0
    # dialog (busy lamp field) subscriptions the gateway notifies itself now, and those refused
    # for a limit (calls/dialog_events.py).
    dialog_subscriptions: int = 0
    dialog_subscriptions_refused: int = 0
    # presence subscriptions and publications now ([presence] allow; calls/dialog_events.py,
    # calls/presence.py); refusals for a limit count with the dialog ones (a shared limit).
    presence_subscriptions: int = 0
    presence_publications: int = 0
    # Open SIP connections by connection transport (tcp, tls, ws, wss: every enabled one).
    connections: tuple[tuple[str, int], ...] = ()


class GatewayStatus(Protocol):
    """A read-only view of a running gateway, for monitoring services
    (``gateway_register_services``). Every method reads the counters when called, walking the
    live calls and streams, so ask it when a monitor asks (a scrape), not per packet or per
    call. Counters never go backwards while the gateway runs."""

    @property
    def version(self) -> str:
        """voipgw's version."""

    @property
    def started_at(self) -> float:
        """When the gateway started, Unix time."""

    def calls(self) -> CallCounts: ...

    def media(self) -> MediaCounts:
        """The media counters, walking every live call at once (about 12 µs each)."""

    async def media_in_steps(self) -> MediaCounts:
        """:meth:`media`, walking the live calls a few hundred at a time with a checkpoint in
        between, so that a scrape does not hold the event loop long at 10 000 calls."""

    def media_workers(self) -> MediaWorkerCounts | None:
        """The media worker processes' states and restarts; None when the relay runs in the
        gateway's own process (``[media] workers = 1``)."""

    def sip(self) -> SipCounts: ...

    def trunks(self) -> tuple[TrunkCounts, ...]: ...

    def session_targets(self) -> tuple[SessionTargetDns, ...]:
        """The session targets named by DNS (a SIPREC recorder's URI), as :meth:`trunks`
        shows the trunks' names; empty without one."""

    def registrations(self) -> int:
        """Unexpired registration bindings in the store (with a shared store: of every node)."""

    def call_record_retention(self) -> CallRecordRetention:
        """What call record retention did since the start (no store access)."""

    def oldest_call_record(self) -> float | None:
        """When the oldest call record in the store (of every node, with a shared store) ended,
        or started if it has no end, Unix time; None when there is none. Asks the store (one
        indexed read): a store that fails raises."""

    def tables(self) -> tuple[tuple[str, int], ...]:
        """Entries of the gateway's internal tables and caches now, by name (calls, SIP
        transactions, flows, media ports, trio tasks, ...; docs/metrics.md lists them): each
        returns to its idle size once calls end, or stops at its bound. For leak hunting."""

    def key_exchange_failures(self) -> tuple[tuple[str, int], ...]:
        """Key negotiations that failed since the start, by key exchange (``sdes``, ``dtls``,
        ``zrtp``, ``mikey``): an answer or offer whose keys could not be used, a failed
        DTLS or ZRTP handshake."""

    def key_exchange_counters(self) -> tuple[tuple[str, str, int], ...]:
        """(key exchange, counter, count) since the start, from each key exchange plugin
        that keeps counters (its optional ``counters()``, docs/plugin_hooks.md): ``zrtp``'s
        ``discarded`` and ``hello_mismatches``, summed over every leg and stream."""

    def media_tap_counters(self) -> tuple[tuple[str, str, int], ...]:
        """(media tap, counter, count) since the start, from each media tap that keeps
        counters (its optional ``counters()``, docs/plugin_hooks.md), never a covert one's;
        empty without such a tap (session 42)."""

    def caller_identity(self) -> tuple[tuple[str, int], ...]:
        """Calls signed and checked by caller-identity services (STIR/SHAKEN) since the start,
        by outcome (``signed``, ``passed``, ``failed``, ``no_identity``, ...)."""

    def caller_identity_refetches(self) -> tuple[tuple[str, int], ...]:
        """Certificates fetched again since the start because a signature did not verify with
        the cached one (a signer's key rotation, or a forgery), by result, summed over the
        caller-identity services that count them (``certificate_refetches``: STIR/SHAKEN's
        ``replaced``, ``unchanged``, ``failed``); empty without one."""

    def recording_update_failures(self) -> tuple[tuple[str, int], ...]:
        """Updates of recording sessions given up since the start, by reason, summed over the
        media taps that count them (``MediaTap.update_failures``, SIPREC); empty without one."""

    def recording_streams_unrecorded(self) -> tuple[tuple[str, int], ...]:
        """Streams of recorded calls left out of their recording since the start, by reason,
        summed over the media taps that count them (``MediaTap.streams_unrecorded``, SIPREC:
        ``no_port``, ``too_many_lines``); empty without one."""

    def recording_pauses(self) -> tuple[tuple[str, int], ...]:
        """Recordings paused and resumed since the start: on request (``voipgw recording``),
        (``"pause"``, count) and (``"resume"``, count), and for the parties' recording
        preferences (RFC 7866 §7.2), (``"preference_pause"``, count) and
        (``"preference_resume"``, count); empty without a media tap that is not covert
        (nothing to pause) and before calls are taken."""

    def recordings_paused(self) -> int:
        """The live calls whose recording is paused now (on request or for a preference)."""

    def certificate_reloads(self) -> tuple[tuple[str, str, int], ...]:
        """Certificate reloads (SIGHUP) since the start: (plugin, outcome, count) for every
        plugin that holds certificates, outcomes ``reloaded`` and ``failed``."""

    def tls_certificates(self) -> tuple[tuple[str, LoadedCertificate], ...]:
        """The certificates plugins serve now: (plugin, certificate), in plugin order."""

    def tls_handshake_failures(self) -> tuple[tuple[str, str, int], ...]:
        """Failed TLS handshakes of SIP transports (``tls``, ``wss``) since the start:
        (transport, reason, count), reasons ``revoked`` (the peer's certificate is revoked),
        ``crl`` (the CRL of its CA could not be used: expired ...) and ``other``."""

    def tls_connections_revoked(self) -> tuple[tuple[str, int], ...]:
        """TLS connections of SIP transports closed because a reloaded CRL revoked the peer's
        certificate, since the start: (transport, count)."""

    def tls_ocsp_queries(self) -> tuple[tuple[str, str, int], ...]:
        """OCSP queries of SIP transports' responders since the start (``[plugins.tls]
        ocsp``): (transport, result, count), results ``good``, ``revoked``, ``unknown``,
        ``failed``; empty when no transport checks by OCSP."""

    def tls_ocsp_stapled(self) -> tuple[tuple[str, str, int], ...]:
        """OCSP answers trunks stapled to their handshakes (RFC 6066 §8) since the start, with
        ``[plugins.tls] ocsp``: (transport, result, count), results ``good``, ``revoked``,
        ``unknown``, ``invalid`` (failed a check, ignored); empty with ``ocsp`` off."""

    def tls_crls(self) -> tuple[tuple[str, str, float], ...]:
        """The CRLs SIP transports check peers' certificates against now (``[plugins.tls]
        crl_files``): (transport, file, nextUpdate as Unix time)."""

    def plugin_figures_failures(self) -> tuple[tuple[str, str, str, int], ...]:
        """Reads of a plugin's own figures that raised since the start: (kind, plugin, figures,
        count), kind ``key_exchange`` (``counters``), ``transport`` (``handshake_failures``,
        ``connections_revoked``, ``ocsp``, ``loaded_crls``, ``reliable``), ``caller_identity``
        (``certificate_refetches``) or ``media_tap`` (``update_failures``); and a certificate
        holder's ``loaded_certificates`` (:meth:`tls_certificates`), under the kind of the
        registry it is in (``transport``, ``service`` ...). Such a plugin's rows are left out
        of the answer that read them; the rest is answered."""


# --------------------------------------------------------------------------------------------
# Certificate reload (SIGHUP)


@attrs.frozen
class LoadedCertificate:
    """A certificate a plugin serves with, as start-up and reload log it and the metrics show
    it: the leaf of the chain in ``path`` (a PEM file)."""

    path: str
    subject: str  # RFC 4514
    sha256_fingerprint: str  # lowercase hex, no colons
    not_before: float  # Unix time
    not_after: float  # Unix time

    def describe(self) -> str:
        """One log line's words: file, subject, fingerprint, expiry (never key material)."""
        expires = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.not_after))
        return (
            f"{self.path}: subject {self.subject or '(empty)'}, sha256 "
            f"{self.sha256_fingerprint}, not after {expires}"
        )


class ReloadError(Exception):
    """A plugin refused new certificate files and kept its previous contexts. The message names
    the file and the reason, never key bytes."""


class ReloadableCertificates(Protocol):
    """An object a plugin registered (a transport, a service, ...) that serves TLS with
    certificates read from files. On SIGHUP the core calls ``reload_certificates()`` on each
    such object, on the event loop; reading and parsing a few files is fine there. An object
    whose reload is slower (contexts with a CRL of some MiB) may also have
    ``async def reload_certificates_async()``, with the same contract, which SIGHUP awaits
    instead: it does the slow part in a worker thread and swaps on the loop. All or nothing:
    it reads and checks every file first and either swaps in new contexts for new handshakes
    (connections already up keep theirs) and returns what it loaded, or raises
    :class:`ReloadError` and keeps everything it had. ``loaded_certificates()`` says what it
    serves now (read at each scrape: return a kept value). Optional: ``covert = True`` (an
    interception) keeps it out of the counts, the metrics and the core's log lines; its
    outcome is logged on its own module's logger (gateway/core/reload.py)."""

    def reload_certificates(self) -> tuple[LoadedCertificate, ...]: ...

    def loaded_certificates(self) -> tuple[LoadedCertificate, ...]: ...


class Service(Protocol):
    """A plugin's long-running service that watches the gateway (a metrics exporter, an SNMP
    agent), registered by ``gateway_register_services``. The core starts ``run`` once the
    listeners are up and cancels it when the gateway stops. ``run`` calls
    ``task_status.started()`` once it serves (its port bound): a failure before that stops the
    gateway's start-up, as a listener's does; a failure after is logged, never the gateway's
    end."""

    name: str

    async def run(
        self,
        status: GatewayStatus,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None: ...
