"""ICE-lite (RFC 8445 §2.5) on a leg's media ports: SDP attributes and connectivity checks, sans-IO.

Theory of operation
-------------------
The gateway sits on a public address, so towards a peer that does ICE (browsers, JsSIP/SIP.js,
baresip with its ``ice`` module) it is a *lite* agent: it gathers nothing but one host
candidate per component (its relay port; RTP and RTCP, or RTP alone with rtcp-mux), sends no
checks of its own and is always the controlled agent (§6.1.1: a full agent facing a lite one
takes the controlling role). The peer's checks arrive on our media ports as STUN Binding
requests (told apart from RTP and DTLS by the first octet, RFC 7983) and are answered here:

- :class:`LegIce` decides which legs do ICE (the peer's SDP carries a=ice-ufrag and a=ice-pwd,
  RFC 8839 §5.4; or our offer's m= line goes out UDP/TLS/RTP/SAVPF, the WebRTC profile, see
  :meth:`LegIce.wants_offer`), mints our ice-ufrag/ice-pwd per leg from the injected CSPRNG
  source (RFC 8445 §5.3: at least 24 and 128 bits of randomness), and writes our SDP attributes
  (a=ice-lite at session level, §5.1; a=ice-ufrag, a=ice-pwd, host candidates and
  a=end-of-candidates per m= line, RFC 8839 §5.1, RFC 8840 §8.2). A leg whose peer does not do
  ICE gets none of it and its SDP is as before.
- ICE restart (RFC 8445 §9): the peer's SDP with a new ufrag or pwd makes us mint new ones too;
  the agents made from the old credentials are dropped, so checks with them fail (401).
- :class:`IceLiteResponder` answers one component's checks (§7.3): a request must carry USERNAME
  ``<our ufrag>:<their ufrag>`` and MESSAGE-INTEGRITY under our ice-pwd, and a FINGERPRINT
  (RFC 8445 §7.2.2; a wrong FINGERPRINT is not STUN and is dropped); missing USERNAME or
  MESSAGE-INTEGRITY is 400, a wrong one 401 (RFC 8489 §9.1.3), unknown comprehension-required
  attributes 420. A request with ICE-CONTROLLED (the peer thinks it is controlled too) is a role
  conflict (§7.3.1.1): a lite agent never changes role, which is what a tie-breaker of 2^64-1
  gives, so it is answered 487. Success responses carry XOR-MAPPED-ADDRESS (the request's
  source), MESSAGE-INTEGRITY and FINGERPRINT.
- What a check means for media (:class:`CheckResult`): a valid check proves its source knows
  our ice-pwd; the relay sends this leg's media there if nothing is selected yet
  (``VALID``), and a check with USE-CANDIDATE nominates its source (``NOMINATED``, §7.3.1.5 as
  a lite agent reads it): the relay moves this leg's media to it, also away from an earlier
  nomination (the peer's network changed). Until then the relay latches nothing else on an ICE
  leg's sockets, so an unauthenticated source cannot take the leg's media.

Credentials are secrets: ``repr`` hides every ice-pwd and only ufrags are logged.
"""

from __future__ import annotations

import enum
import logging
import string
from collections.abc import Callable, Iterable

import attrs

from gateway.core.media import stun
from gateway.core.sdp.model import MediaDescription, SessionDescription

log = logging.getLogger(__name__)

UFRAG_OCTETS = 4
"""Random octets in our ice-ufrag: 8 hex characters, 32 bits (RFC 8445 §5.3: at least 24)."""
PWD_OCTETS = 16
"""Random octets in our ice-pwd: 32 hex characters, 128 bits (RFC 8445 §5.3: at least 128)."""

_ICE_CHARS = frozenset(string.ascii_letters + string.digits + "+/")  # RFC 8839 §5.4 ice-char
MAX_CREDENTIAL_LENGTH = 256  # RFC 8839 §5.4: ice-ufrag 4..256, ice-pwd 22..256 characters

HOST_TYPE_PREFERENCE = 126  # RFC 8445 §5.1.2.2
LOCAL_PREFERENCE = 65535  # one address per component: the highest (§5.1.2.1)
FOUNDATION = "1"  # every candidate of ours is a host candidate on one address (§5.1.1.3)

# What the responder understands; other comprehension-required attributes (type < 0x8000) are
# answered 420 (RFC 8489 §7.3.1).
_KNOWN_REQUIRED = frozenset(
    {
        stun.USERNAME,
        stun.MESSAGE_INTEGRITY,
        stun.PRIORITY,
        stun.USE_CANDIDATE,
        stun.XOR_MAPPED_ADDRESS,
        stun.MAPPED_ADDRESS,
    }
)


def candidate_priority(component: int) -> int:
    """A host candidate's priority (RFC 8445 §5.1.2.1)."""
    return (2**24) * HOST_TYPE_PREFERENCE + (2**8) * LOCAL_PREFERENCE + (256 - component)


@attrs.frozen
class IceCredentials:
    """An agent's ice-ufrag and ice-pwd (RFC 8839 §5.4). ``repr`` hides the password."""

    ufrag: str
    pwd: str = attrs.field(repr=False)


def _valid(value: str | None, minimum: int) -> bool:
    return (
        value is not None
        and minimum <= len(value) <= MAX_CREDENTIAL_LENGTH
        and all(c in _ICE_CHARS for c in value)
    )


def remote_credentials_untrusted(
    sd: SessionDescription, media: MediaDescription
) -> IceCredentials | None:
    """The peer's ICE credentials for ``media``: media-level a=ice-ufrag/a=ice-pwd, else the
    session-level ones (RFC 8839 §5.4). None when it has none, or when they are not valid
    ice-chars of the allowed lengths (the leg then does no ICE, as for a peer without it)."""
    ufrag = media.attributes.get("ice-ufrag") or sd.attributes.get("ice-ufrag")
    pwd = media.attributes.get("ice-pwd") or sd.attributes.get("ice-pwd")
    if ufrag is None and pwd is None:
        return None
    if not (_valid(ufrag, 4) and _valid(pwd, 22)):
        log.info("ICE credentials in the peer's SDP are malformed: the leg does no ICE")
        return None
    assert ufrag is not None and pwd is not None
    return IceCredentials(ufrag, pwd)


class CheckResult(enum.IntEnum):
    """What a connectivity check means for the leg's media (see the module docstring)."""

    NONE = 0
    """Not a valid check (answered with an error, or dropped): media does not move."""
    VALID = 1
    """An authenticated check: its source may take the leg's media if nothing is selected."""
    NOMINATED = 2
    """USE-CANDIDATE: the leg's media goes to its source from now on."""


class IceLiteResponder:
    """Answers the connectivity checks of one component of one stream of one leg (RFC 8445
    §7.3). Call it with each STUN datagram and its source; it returns the datagram to send back
    to that source (None: drop) and what the check means (:class:`CheckResult`). Never raises
    for the peer's bytes."""

    def __init__(self, local: IceCredentials, remote: IceCredentials | None) -> None:
        self.local = local
        self.remote = remote
        self._key = local.pwd.encode("ascii")
        self.checks = 0
        """Requests answered with success."""
        self.refused = 0
        """Requests answered with an error or dropped."""
        self.nominations = 0

    def __repr__(self) -> str:
        return f"<IceLiteResponder ufrag={self.local.ufrag} checks={self.checks}>"

    def __call__(self, packet: bytes, source: tuple[str, int]) -> tuple[bytes | None, int]:
        try:
            message = stun.parse_stun_untrusted(packet)
        except stun.StunError:
            self.refused += 1
            return None, CheckResult.NONE
        if message.message_type != stun.BINDING_REQUEST:
            # Indications (keepalives, RFC 8445 §11) and responses to checks we never send.
            return None, CheckResult.NONE
        response, result = self._answer(message, source)
        if result is CheckResult.NONE:
            self.refused += 1
        else:
            self.checks += 1
        return response, result

    def _answer(self, message: stun.StunMessage, source: tuple[str, int]) -> tuple[bytes, int]:
        username = message.get(stun.USERNAME)
        if username is None or message.integrity_at is None:
            return self._error(message, 400, "Bad Request"), CheckResult.NONE
        if not stun.integrity_ok(message, self._key) or not self._username_ok(username):
            return self._error(message, 401, "Unauthorized"), CheckResult.NONE
        unknown = [
            kind for kind, _ in message.attributes if kind < 0x8000 and kind not in _KNOWN_REQUIRED
        ]
        if unknown:
            attributes = [
                (stun.ERROR_CODE, stun.error_code(420, "Unknown Attribute")),
                (stun.UNKNOWN_ATTRIBUTES, b"".join(k.to_bytes(2, "big") for k in unknown[:8])),
            ]
            return self._response(message, stun.BINDING_ERROR, attributes), CheckResult.NONE
        if message.has(stun.ICE_CONTROLLED):
            # RFC 8445 §7.3.1.1: both think they are controlled. Ours is the larger tie-breaker
            # (a lite agent keeps its role), so the peer must switch: 487, authenticated.
            attributes = [(stun.ERROR_CODE, stun.error_code(487, "Role Conflict"))]
            return self._response(message, stun.BINDING_ERROR, attributes), CheckResult.NONE
        mapped = stun.xor_address(source[0], source[1], message.transaction_id)
        response = self._response(
            message, stun.BINDING_SUCCESS, [(stun.XOR_MAPPED_ADDRESS, mapped)]
        )
        if message.has(stun.USE_CANDIDATE):
            self.nominations += 1
            return response, CheckResult.NOMINATED
        return response, CheckResult.VALID

    def _username_ok(self, username: bytes) -> bool:
        """RFC 8445 §7.3: our ufrag on the left; the peer's on the right once we know it (a
        check may come before its SDP: RFC 8445 §7.3 lets us answer it then)."""
        local, colon, remote = username.partition(b":")
        if not colon or local != self.local.ufrag.encode("ascii"):
            return False
        return self.remote is None or remote == self.remote.ufrag.encode("ascii")

    def _response(
        self, request: stun.StunMessage, kind: int, attributes: list[tuple[int, bytes]]
    ) -> bytes:
        return stun.encode_stun(
            kind, request.transaction_id, attributes, integrity_key=self._key, fingerprint=True
        )

    def _error(self, request: stun.StunMessage, code: int, reason: str) -> bytes:
        """400/401 without MESSAGE-INTEGRITY: the request did not prove the key (RFC 8489
        §9.1.3), so the response cannot be tied to it."""
        return stun.encode_stun(
            stun.BINDING_ERROR,
            request.transaction_id,
            [(stun.ERROR_CODE, stun.error_code(code, reason))],
            fingerprint=True,
        )


@attrs.define
class _StreamIce:
    remote: IceCredentials
    rtp: IceLiteResponder
    rtcp: IceLiteResponder


class LegIce:
    """The ICE state of one leg: our credentials, the peer's per stream, and the responders the
    relay runs on the leg's sockets. ``token_hex(n)`` gives n random octets as hex (the OS
    CSPRNG in production, :class:`~gateway.core.ids.RandomIds`). ``enabled`` False (a relay
    without ICE support) makes the leg behave as if no peer did ICE. The in-process relay and
    the media workers both answer checks (a worker gets the credentials as values)."""

    def __init__(
        self, token_hex: Callable[[int], str], *, enabled: bool = True, browser: bool = False
    ) -> None:
        self._token_hex = token_hex
        self.enabled = enabled
        self.browser = browser
        """The leg's signalling is SIP over WebSocket (RFC 7118): a browser, which takes no
        offer without ICE (JSEP, RFC 8829, has no mode without it), so our offers carry it."""
        self.local: IceCredentials | None = None
        self._streams: dict[int, _StreamIce] = {}
        self._offered: tuple[IceCredentials | None, dict[int, IceCredentials]] | None = None
        """A peer's offer not answered yet: our credentials for the answer and its per stream.
        They come into force with our answer (:meth:`add_to_answer`), so an offer refused
        (488) changes nothing."""
        self._peer_does_ice = False

    def __repr__(self) -> str:
        ufrag = None if self.local is None else self.local.ufrag
        return f"<LegIce ufrag={ufrag} streams={sorted(self._streams)}>"

    @property
    def active(self) -> bool:
        """Whether the leg does ICE (its peer's latest SDP had credentials)."""
        return bool(self._streams)

    def take_remote(self, sd: SessionDescription, *, offer: bool) -> None:
        """The peer's ``offer`` (else answer) on this leg: note its credentials per m= line.
        New ones in an offer on a stream we already run ICE on are an ICE restart (RFC 8445
        §9): ours change too (the old ones stop working). An answer never changes ours: our
        offer has gone out with them.

        A peer that is ICE-lite itself (a=ice-lite) is treated as one without ICE: between two
        lite agents nobody checks and media goes to the default candidates (RFC 8445 §6.1.1),
        which is plain latching."""
        if not self.enabled:
            return
        found = self.read_remote(sd)
        if not offer:
            self.take_answer(found)
            return
        restart = any(
            index in self._streams and self._streams[index].remote != credentials
            for index, credentials in found.items()
        )
        local = self.local
        if found and (local is None or restart):
            local = self._mint()
            if restart:
                log.info("ICE restart by the peer: new local ufrag %s", local.ufrag)
        self._offered = (local, found)

    def read_remote(self, sd: SessionDescription) -> dict[int, IceCredentials]:
        """The peer's credentials per m= line of ``sd``, changing nothing (:meth:`take_remote`'s
        reading: an answer read first and taken once the rest of it passed, ``LegSecurity``).
        Raises :class:`~gateway.core.sdp.errors.SdpError` for unreadable ones."""
        found: dict[int, IceCredentials] = {}
        if not self.enabled:
            return found
        session_ice = sd.attributes.has("ice-ufrag") or sd.attributes.has("ice-pwd")
        if not sd.attributes.has("ice-lite"):
            for index, media in enumerate(sd.media):
                if media.port == 0 or not (session_ice or media.attributes.has("ice-ufrag")):
                    continue  # the common case, a phone without ICE: two lookups per line
                credentials = remote_credentials_untrusted(sd, media)
                if credentials is not None:
                    found[index] = credentials
        return found

    def take_answer(self, found: dict[int, IceCredentials]) -> None:
        """The peer's answer's credentials (:meth:`read_remote`) in force."""
        if not self.enabled:
            return
        if self.local is None:
            found = {}  # ICE in an answer to an offer without it: not ours to start
        self._settle(self.local, found)

    def wants_offer(self, offer: SessionDescription) -> bool:
        """Whether our offer on this leg carries ICE: the peer did ICE in its latest SDP (a
        re-offer to a WebRTC peer), the leg is a browser's (SIP over WebSocket), or an m= line
        goes out UDP/TLS/RTP/SAVPF, the profile every WebRTC endpoint speaks and SIP phones
        hardly ever ask for (RFC 8827 §6.5 makes ICE mandatory with it). Phones and trunks
        offered anything else see no ICE."""
        if not self.enabled:
            return False
        if self._peer_does_ice or self.browser:
            return True
        return any(m.port != 0 and m.proto.upper() == "UDP/TLS/RTP/SAVPF" for m in offer.media)

    def add_to_offer(self, offer: SessionDescription) -> SessionDescription:
        """Our offer with our ICE attributes (if :meth:`wants_offer`); minting credentials on
        the first."""
        if not self.wants_offer(offer):
            return offer
        if self.local is None:
            self.local = self._mint()
        return self._with_attributes(offer, range(len(offer.media)))

    def add_to_answer(self, answer: SessionDescription) -> SessionDescription:
        """Our answer with ICE attributes on the streams whose offer had them; the offer's
        credentials (and a restart's new ones of ours) come into force now."""
        if self._offered is not None:
            local, found = self._offered
            self._offered = None
            self._settle(local, found)
        if not self._streams or self.local is None:
            return answer
        return self._with_attributes(answer, self._streams)

    def responders(self, index: int) -> tuple[IceLiteResponder | None, IceLiteResponder | None]:
        """The responders for stream ``index``'s RTP and RTCP sockets, or (None, None) when the
        stream does no ICE. The same objects until the credentials change."""
        stream = self._streams.get(index)
        if stream is None:
            return None, None
        return stream.rtp, stream.rtcp

    def record(self) -> dict[str, str]:
        """For ``voipgw calls``: the ufrags (never a password)."""
        if not self._streams or self.local is None:
            return {}
        remote = next(iter(self._streams.values())).remote
        return {"ice": "lite", "ice_ufrag": self.local.ufrag, "ice_peer_ufrag": remote.ufrag}

    def _mint(self) -> IceCredentials:
        return IceCredentials(self._token_hex(UFRAG_OCTETS), self._token_hex(PWD_OCTETS))

    def _settle(self, local: IceCredentials | None, found: dict[int, IceCredentials]) -> None:
        """Put ``local`` and the peer's ``found`` credentials in force: responders for the
        streams whose peer does ICE, the same objects while nothing changed."""
        self.local = local
        self._peer_does_ice = bool(found)
        streams: dict[int, _StreamIce] = {}
        if local is not None:
            for index, remote in found.items():
                current = self._streams.get(index)
                if current is not None and current.remote == remote and current.rtp.local == local:
                    streams[index] = current
                else:
                    streams[index] = _StreamIce(
                        remote, IceLiteResponder(local, remote), IceLiteResponder(local, remote)
                    )
        self._streams = streams

    def _with_attributes(
        self, sd: SessionDescription, indexes: Iterable[int]
    ) -> SessionDescription:
        local = self.local
        assert local is not None
        wanted = set(indexes)
        media_out: list[MediaDescription] = []
        for index, media in enumerate(sd.media):
            if index not in wanted or media.port == 0:
                media_out.append(media)
                continue
            media_out.append(_media_with_ice(sd, media, local))
        # RFC 8839 §5.3: a=ice-lite at session level.
        attributes: list[tuple[str, str | None]] = [("ice-lite", None)]
        attributes += [(a.name, a.value) for a in sd.attributes if a.name.lower() != "ice-lite"]
        return sd.with_attributes(attributes).with_media(media_out)


def _media_with_ice(
    sd: SessionDescription, media: MediaDescription, local: IceCredentials
) -> MediaDescription:
    """``media`` with our credentials and host candidates (RFC 8839 §5.1): component 1 on the
    m= port, component 2 on the a=rtcp port unless the line muxes RTCP (RFC 5761 §5.1.3)."""
    connection = sd.connection or sd.effective_connection(media)
    address = connection.address if connection is not None else None
    attributes: list[tuple[str, str | None]] = [
        (name, value) for name, value in media.attributes if not name.lower().startswith("ice-")
    ]
    attributes += [("ice-ufrag", local.ufrag), ("ice-pwd", local.pwd)]
    if address is not None:
        ports = [(1, media.port)]
        rtcp = media.rtcp
        if not media.rtcp_mux:
            ports.append((2, rtcp.port if rtcp is not None else media.port + 1))
        for component, port in ports:
            attributes.append(
                (
                    "candidate",
                    f"{FOUNDATION} {component} UDP {candidate_priority(component)} "
                    f"{address} {port} typ host",
                )
            )
    attributes.append(("end-of-candidates", None))  # RFC 8840 §8.2: we gather no more
    return media.with_attributes(attributes)
