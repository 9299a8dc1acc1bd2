"""Apply each leg's negotiated SRTP keys to the relay streams of a call.

For stream *i*, direction A→B unprotects with leg A's keys (what A sent) and protects with leg
B's keys (what B will receive); B→A the other way round. A direction is *blocked* — nothing is
forwarded, not even in clear — while a leg whose policy requires encryption has no keys yet, and
after its key exchange failed (no media before keys; the bug to avoid is Asterisk issue #1260).

A DTLS-SRTP leg without rtcp-mux has a second SRTP session for its RTCP port, keyed by that
port's own handshake (RFC 5764 §4.1); its RTCP is dropped until then.

What a stream should do is a value, :class:`StreamKeys` (each leg's keys and the block flag),
because Python callables cannot cross to a media worker process. :class:`StreamSrtp` turns it
into SRTP sessions and relay transforms: in this process for the in-process relay, in the worker
(gateway/core/media/worker.py) for a worker's stream, which receives the value over its control
channel (:meth:`~gateway.core.media.remote_relay.RemoteStream.apply_keys`).

SRTP sessions are kept while a leg's keys do not change (a re-INVITE that keeps the keys keeps
the crypto context, RFC 4568 §7.1.4), set aside while the leg goes plain (keys that come back
take their contexts back: no index restarts under a key already used, RFC 3711 §9.1) and
closed when the call ends. When a leg's keys change, each direction is judged on its own
(:meth:`SrtpSession.rekey`): a master key that stays keeps its context, roll-over counter and
index included, also when only its MKI changed (RFC 3711 §3.3.1); only a new key gets a new
context. Rebuilding both, as before session
35, lost the peer's audio after its next sequence wrap (the ROC back to 0 under a key the peer
goes on using) and, for our own key kept by a re-offer the peer answered with a new key,
protected packets again under indices already used: the same keystream twice (RFC 3711 §9.1).
"""

from __future__ import annotations

import attrs

from gateway.core.interfaces import SrtpKeys
from gateway.core.media.relay import (
    NO_TRANSFORMS,
    MediaStream,
    StreamSide,
    Transform,
    Transforms,
    drop_until_keyed,
)
from gateway.core.media.remote_relay import RemoteSide, RemoteStream
from gateway.core.media.security import LegSecurity
from gateway.core.media.session import MediaSession
from gateway.core.media.srtp import SrtpSession, SrtpStatistics


@attrs.frozen
class StreamKeys:
    """What one relay stream applies: leg A's and leg B's SRTP keys (None: that leg is plain
    RTP) and whether both directions are blocked. ``repr`` shows no key material.

    ``a_separate_rtcp`` (``b_…``): the leg keys its RTCP port with a handshake of its own (DTLS
    without rtcp-mux, RFC 5764 §4.1), whose keys are ``a_rtcp`` (None: not yet, RTCP dropped);
    otherwise SRTCP uses the leg's RTP keys (RFC 3711 §4.3)."""

    a: SrtpKeys | None
    b: SrtpKeys | None
    blocked: bool
    a_separate_rtcp: bool = False
    a_rtcp: SrtpKeys | None = None
    b_separate_rtcp: bool = False
    b_rtcp: SrtpKeys | None = None

    @classmethod
    def of_legs(cls, a: LegSecurity | None, b: LegSecurity | None, index: int) -> StreamKeys:
        """Stream ``index``'s keys from the legs' negotiations (None: the leg has not settled)."""
        a_keys = a.keys(index) if a else None
        b_keys = b.keys(index) if b else None
        # Nothing flows until both legs have settled their media (no B leg has answered:
        # media from a ringing leg is not forwarded; early media comes with its answer).
        # A leg is blocked without keys when its policy needs them or its peer asked for
        # SRTP: such a peer must never receive cleartext.
        blocked = (
            a is None
            or b is None
            or (a_keys is None and (a.requires_encryption or a.expects_srtp(index)))
            or (b_keys is None and (b.requires_encryption or b.expects_srtp(index)))
        )
        a_separate = a is not None and a.separate_rtcp(index)
        b_separate = b is not None and b.separate_rtcp(index)
        return cls(
            a_keys,
            b_keys,
            blocked,
            a_separate,
            a.rtcp_keys(index) if a is not None and a_separate else None,
            b_separate,
            b.rtcp_keys(index) if b is not None and b_separate else None,
        )


def _transforms(
    rtp_in: Transform | None,
    rtcp_in: Transform | None,
    rtp_out: Transform | None,
    rtcp_out: Transform | None,
) -> Transforms:
    """A direction's transforms; the shared :data:`NO_TRANSFORMS` for plain RTP both ways (the
    usual call: six key applications per call, each a new frozen attrs instance otherwise)."""
    if rtp_in is None and rtcp_in is None and rtp_out is None and rtcp_out is None:
        return NO_TRANSFORMS
    return Transforms(rtp_in=rtp_in, rtp_out=rtp_out, rtcp_in=rtcp_in, rtcp_out=rtcp_out)


class StreamSrtp:
    """The SRTP sessions of one relay stream, kept while the keys stay the same.

    Raises :class:`~gateway.core.media.errors.LocalMediaError` from :meth:`apply` when a key
    cannot be used (unknown suite, wrong length); the stream is blocked then.
    """

    def __init__(self) -> None:
        self._sessions: dict[tuple[str, str], tuple[SrtpKeys, SrtpSession]] = {}
        # Sessions of slots whose leg went plain (a re-INVITE to RTP/AVP), kept with the keys
        # they last had: keys that come back take their contexts back (_session).
        self._plain: dict[tuple[str, str], tuple[SrtpKeys, SrtpSession]] = {}
        # A session is never freed before close(), so the stream's totals never go backwards
        # on a re-key or a plain stretch (monitoring sums them, gateway/core/status.py).

    def apply(self, stream: MediaStream, keys: StreamKeys) -> None:
        """Set ``stream``'s transforms and block flags from ``keys``."""
        try:
            a = self._session(("a", "rtp"), keys.a)
            b = self._session(("b", "rtp"), keys.b)
            a_rtcp = self._rtcp("a", keys.a_separate_rtcp, keys.a_rtcp, a)
            b_rtcp = self._rtcp("b", keys.b_separate_rtcp, keys.b_rtcp, b)
        except BaseException:
            stream.a_to_b.blocked = True
            stream.b_to_a.blocked = True
            raise
        stream.a_to_b.transforms = _transforms(
            a.unprotect_rtp if a else None, a_rtcp[0], b.protect_rtp if b else None, b_rtcp[1]
        )
        stream.b_to_a.transforms = _transforms(
            b.unprotect_rtp if b else None, b_rtcp[0], a.protect_rtp if a else None, a_rtcp[1]
        )
        stream.a_to_b.blocked = keys.blocked
        stream.b_to_a.blocked = keys.blocked

    def statistics(self) -> dict[str, SrtpStatistics]:
        """SRTP counters of each leg ("a", "b") that has had a session (RTP and RTCP ports
        summed, sessions its earlier keys had included)."""
        totals: dict[str, SrtpStatistics] = {}
        for (side, _), (_, session) in [*self._sessions.items(), *self._plain.items()]:
            stats = session.statistics()
            before = totals.get(side)
            totals[side] = stats if before is None else _sum(before, stats)
        return totals

    def close(self) -> None:
        for _, session in [*self._sessions.values(), *self._plain.values()]:
            session.close()
        self._sessions.clear()
        self._plain.clear()

    def _rtcp(
        self, side: str, separate: bool, keys: SrtpKeys | None, rtp: SrtpSession | None
    ) -> tuple[Transform | None, Transform | None]:
        """(unprotect, protect) for leg ``side``'s SRTCP.

        Without a handshake of its own, SRTCP uses the stream's SRTP session (one master key,
        RFC 3711 §4.3). A DTLS-SRTP leg without rtcp-mux keys its RTCP port separately (RFC
        5764 §4.1): until that handshake is done its RTCP is dropped both ways, never sent in
        clear nor under the RTP port's keys."""
        if not separate:
            self._session((side, "rtcp"), None)
            if rtp is None:
                return None, None
            return rtp.unprotect_rtcp, rtp.protect_rtcp
        session = self._session((side, "rtcp"), keys)
        if session is None:
            return drop_until_keyed, drop_until_keyed
        return session.unprotect_rtcp, session.protect_rtcp

    def _session(self, slot: tuple[str, str], keys: SrtpKeys | None) -> SrtpSession | None:
        """The SRTP session of ``slot`` (side, "rtp" or "rtcp") for ``keys``: kept while the
        keys stay the same, re-keyed when they change (each direction's context kept while its
        master key is), set aside when None (the leg went plain) and taken back when keys come
        again.

        A stream that goes plain and back (a re-INVITE to RTP/AVP, another back to RTP/SAVP)
        is one SRTP session to the peers: a peer that brings back the key it had goes on with
        its context (RFC 3711 §3.3.1: the ROC is never reset while the master key is in use),
        so a new context at ROC 0 would fail its packets after its next sequence wrap, and for
        a key of ours brought back it would protect packets again under indices already used:
        the same keystream twice (RFC 3711 §9.1). So the session is never freed while the call
        lasts (:meth:`close` frees it): a key it knew, in force or parked, takes its own
        context back (:meth:`SrtpSession.rekey`), as rtpengine keeps its per-SSRC index for
        the call. A new key still gets a new context."""
        current = self._sessions.get(slot)
        if current is not None and current[0] == keys:
            return current[1]
        if current is not None and keys is not None:
            # New keys for a leg that had some: the session keeps the context of a direction
            # whose master key stays (ROC and index go on, RFC 4568 §7.1.4, RFC 3711 §3.3.1),
            # an MKI change included, and replaces the other's (SrtpSession.rekey).
            current[1].rekey(current[0], keys)
            self._sessions[slot] = (keys, current[1])
            return current[1]
        if current is not None:
            # Plain now: set aside, contexts and counters kept, for keys that come back.
            self._plain[slot] = current
            del self._sessions[slot]
        if keys is None:
            return None
        set_aside = self._plain.get(slot)
        if set_aside is not None:
            # Keys again after a plain stretch: the contexts of keys the session knew go on;
            # unusable keys raise and change nothing (the session stays set aside).
            set_aside[1].rekey(set_aside[0], keys)
            del self._plain[slot]
            self._sessions[slot] = (keys, set_aside[1])
            return set_aside[1]
        session = SrtpSession(keys)
        self._sessions[slot] = (keys, session)
        return session


def _sum(a: SrtpStatistics, b: SrtpStatistics) -> SrtpStatistics:
    return SrtpStatistics(
        *(getattr(a, f.name) + getattr(b, f.name) for f in attrs.fields(SrtpStatistics))
    )


_SRTP_TOTALS = ("protected", "unprotected", "auth_failures", "replays", "dropped")


def _apply_ice(
    stream: MediaStream | RemoteStream, a: LegSecurity | None, b: LegSecurity | None, index: int
) -> None:
    """Put each leg's ICE-lite responders (gateway/core/media/ice.py) on its side's sockets;
    none on a leg that does no ICE. A worker's stream gets their credentials over its channel
    and runs responders of its own."""
    sides: tuple[tuple[LegSecurity | None, StreamSide | RemoteSide], ...] = (
        (a, stream.a),
        (b, stream.b),
    )
    for leg, side in sides:
        rtp, rtcp = leg.ice.responders(index) if leg is not None else (None, None)
        side.set_ice_handler(rtp)
        side.set_ice_handler(rtcp, rtcp=True)


class CallKeying:
    def __init__(self, session: MediaSession) -> None:
        self._session = session
        self._srtp: dict[int, StreamSrtp] = {}  # in-process streams, by m= line
        self._remote: dict[int, RemoteStream] = {}  # worker streams (their worker keeps SRTP)

    def apply(self, a: LegSecurity | None, b: LegSecurity | None) -> None:
        """Set transforms and block flags on every open stream from the legs' current keys."""
        for index, stream in enumerate(self._session.streams_by_index()):
            if stream is None:
                continue
            keys = StreamKeys.of_legs(a, b, index)
            if isinstance(stream, MediaStream):
                self._srtp.setdefault(index, StreamSrtp()).apply(stream, keys)
                _apply_ice(stream, a, b, index)
            elif isinstance(stream, RemoteStream):
                stream.apply_keys(keys)  # the worker builds the SRTP sessions
                _apply_ice(stream, a, b, index)
                self._remote[index] = stream
            else:
                raise TypeError(f"cannot key a {type(stream).__name__}")

    def block_all(self) -> None:
        """Forward nothing at all (a key exchange failed; the call is ending)."""
        for stream in self._session.streams:
            stream.a_to_b.blocked = True
            stream.b_to_a.blocked = True

    def statistics(self) -> dict[str, dict[str, int]]:
        """SRTP counters per leg ("a", "b"), summed over its streams and its keys so far."""
        per_stream = [srtp.statistics() for srtp in self._srtp.values()]
        per_stream += [stream.srtp_statistics() for stream in self._remote.values()]
        totals: dict[str, dict[str, int]] = {}
        for sides in per_stream:
            for side, stats in sides.items():
                leg = totals.setdefault(side, dict.fromkeys(_SRTP_TOTALS, 0))
                leg["protected"] += stats.protected
                leg["unprotected"] += stats.unprotected
                leg["auth_failures"] += stats.auth_failures
                leg["replays"] += stats.replays
                leg["dropped"] += stats.dropped
        return totals

    def close(self) -> None:
        for srtp in self._srtp.values():
            srtp.close()
        self._srtp.clear()
        self._remote.clear()
