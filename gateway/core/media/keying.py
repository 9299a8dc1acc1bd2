"""Apply each leg's negotiated SRTP keys to the relay streams of a call.

For stream *i*, direction A→B unprotects with leg A's keys (what A sent) and protects with leg
B's keys (what B will receive); B→A the other way round. A direction is *blocked* — nothing is
forwarded, not even in clear — while a leg whose policy requires encryption has no keys yet, and
after its key exchange failed (no media before keys; the bug to avoid is Asterisk issue #1260).

A DTLS-SRTP leg without rtcp-mux has a second SRTP session for its RTCP port, keyed by that
port's own handshake (RFC 5764 §4.1); its RTCP is dropped until then.

SRTP sessions are kept while a leg's keys do not change (a re-INVITE that keeps the keys keeps
the crypto context, RFC 4568 §7.1.4) and closed when they do or when the call ends.
"""

from __future__ import annotations

from gateway.core.interfaces import SrtpKeys
from gateway.core.media.relay import Transform, Transforms
from gateway.core.media.security import LegSecurity
from gateway.core.media.session import MediaSession
from gateway.core.media.srtp import SrtpSession


def _drop(packet: bytes) -> None:
    """SRTCP of a leg whose RTCP port has not finished its own handshake: dropped (counted)."""
    return None


class CallKeying:
    def __init__(self, session: MediaSession) -> None:
        self._session = session
        self._srtp: dict[tuple[str, int, str], tuple[SrtpKeys, SrtpSession]] = {}

    def apply(self, a: LegSecurity | None, b: LegSecurity | None) -> None:
        """Set transforms and block flags on every open stream from the legs' current keys."""
        for index, stream in enumerate(self._session.streams_by_index()):
            if stream is None:
                continue
            a_srtp = self._srtp_for(("a", index, "rtp"), a.keys(index) if a else None)
            b_srtp = self._srtp_for(("b", index, "rtp"), b.keys(index) if b else None)
            a_rtcp = self._rtcp_for("a", index, a, a_srtp)
            b_rtcp = self._rtcp_for("b", index, b, b_srtp)
            # Nothing flows until both legs have settled their media (no B leg has answered:
            # media from a ringing leg is not forwarded; early media comes with its answer).
            # A leg is blocked without keys when its policy needs them or its peer asked for
            # SRTP: such a peer must never receive cleartext.
            blocked = (
                a is None
                or b is None
                or (a_srtp is None and (a.requires_encryption or a.expects_srtp(index)))
                or (b_srtp is None and (b.requires_encryption or b.expects_srtp(index)))
            )
            stream.a_to_b.transforms = Transforms(
                rtp_in=a_srtp.unprotect_rtp if a_srtp else None,
                rtcp_in=a_rtcp[0],
                rtp_out=b_srtp.protect_rtp if b_srtp else None,
                rtcp_out=b_rtcp[1],
            )
            stream.b_to_a.transforms = Transforms(
                rtp_in=b_srtp.unprotect_rtp if b_srtp else None,
                rtcp_in=b_rtcp[0],
                rtp_out=a_srtp.protect_rtp if a_srtp else None,
                rtcp_out=a_rtcp[1],
            )
            stream.a_to_b.blocked = blocked
            stream.b_to_a.blocked = blocked

    def _rtcp_for(
        self, side: str, index: int, leg: LegSecurity | None, rtp: SrtpSession | None
    ) -> tuple[Transform | None, Transform | None]:
        """(unprotect, protect) for leg ``side``'s SRTCP on stream ``index``.

        Without a handshake of its own, SRTCP uses the stream's SRTP session (one master key,
        RFC 3711 §4.3). A DTLS-SRTP leg without rtcp-mux keys its RTCP port separately (RFC
        5764 §4.1): until that handshake is done its RTCP is dropped both ways, never sent in
        clear nor under the RTP port's keys."""
        if leg is None or not leg.separate_rtcp(index):
            self._srtp_for((side, index, "rtcp"), None)
            if rtp is None:
                return None, None
            return rtp.unprotect_rtcp, rtp.protect_rtcp
        session = self._srtp_for((side, index, "rtcp"), leg.rtcp_keys(index))
        if session is None:
            return _drop, _drop
        return session.unprotect_rtcp, session.protect_rtcp

    def block_all(self) -> None:
        """Forward nothing at all (a key exchange failed; the call is ending)."""
        for stream in self._session.streams:
            stream.a_to_b.blocked = True
            stream.b_to_a.blocked = True

    def _srtp_for(self, slot: tuple[str, int, str], keys: SrtpKeys | None) -> SrtpSession | None:
        """The SRTP session of ``slot`` (side, stream index, "rtp" or "rtcp") for ``keys``:
        kept while the keys stay the same, replaced when they change, closed when None."""
        current = self._srtp.get(slot)
        if keys is None:
            if current is not None:
                current[1].close()
                del self._srtp[slot]
            return None
        if current is not None and current[0] == keys:
            return current[1]
        if current is not None:
            current[1].close()
        session = SrtpSession(keys)
        self._srtp[slot] = (keys, session)
        return session

    def statistics(self) -> dict[str, dict[str, int]]:
        """SRTP counters per leg ("a", "b"), summed over its streams (current keys only)."""
        totals: dict[str, dict[str, int]] = {}
        for (side, _, _), (_, session) in self._srtp.items():
            stats = session.statistics()
            leg = totals.setdefault(
                side,
                {"protected": 0, "unprotected": 0, "auth_failures": 0, "replays": 0, "dropped": 0},
            )
            leg["protected"] += stats.protected
            leg["unprotected"] += stats.unprotected
            leg["auth_failures"] += stats.auth_failures
            leg["replays"] += stats.replays
            leg["dropped"] += stats.dropped
        return totals

    def close(self) -> None:
        for _, session in self._srtp.values():
            session.close()
        self._srtp.clear()
