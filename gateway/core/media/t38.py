"""T.38 fax passthrough: which m= lines are T.38 over UDPTL, and whether they can be relayed.

Theory of operation
-------------------
A T.38 fax stream is ``m=image <port> udptl t38`` (ITU-T T.38 Annex D.2.2; RFC 3362 registers
``image/t38``), usually brought in by a re-INVITE that replaces ``m=audio`` at the same index
once a fax tone was heard (T.38 Annex D.2.3.2), or offered alongside audio set to port 0. Its
parameters are ``a=T38FaxVersion``, ``a=T38MaxBitRate``, ``a=T38FaxFillBitRemoval``,
``a=T38FaxTranscodingMMR``, ``a=T38FaxTranscodingJBIG``, ``a=T38FaxRateManagement``,
``a=T38FaxMaxBuffer``, ``a=T38FaxMaxDatagram`` and ``a=T38FaxUdpEC`` (Annex D.2.3, Table D.1),
plus whatever else a vendor adds.

The gateway passes T.38 through, it does not terminate it: the relay carries the UDPTL datagrams
between the legs unparsed (:meth:`~gateway.core.media.relay.MediaStream.set_opaque`), and the
attributes go to the other leg unchanged, so the two fax endpoints negotiate with each other.
There is no T.38 <-> G.711 gateway, and UDPTL is never encrypted by us: a leg whose media policy
requires encryption gets the stream refused (port 0; see
:mod:`gateway.core.media.security`), and the devices fall back to G.711 fax over the encrypted
audio.

Not relayed (port 0, as any stream the relay cannot carry): T.38 over TCP (``m=image ... TCP
t38``, Annex D TPKT framing) and over DTLS (``UDP/TLS/UDPTL``, RFC 7345), which would need a
DTLS association per leg.

The attributes of an m= line from a peer are untrusted: :func:`t38_problem_untrusted` checks the
ones whose syntax Annex D fixes, with explicit bounds, so that a malformed one is refused (that
stream at port 0, or 488 when nothing else is relayable) instead of being passed to the other
leg.
"""

from __future__ import annotations

from gateway.core.sdp.model import MediaDescription

UDPTL_PROTO = "UDPTL"
"""T.38 Annex D.2.2: ``udptl`` (matched case-insensitively: both spellings are in use)."""

T38_FORMAT = "t38"

# Annex D.2.3 Table D.1: parameters with an integer value. Bounds are ours: no sane value has
# more digits (a MaxBitRate of 33600, buffers and datagrams of a few thousand octets).
_INTEGER_ATTRIBUTES = frozenset(
    {"t38faxversion", "t38maxbitrate", "t38faxmaxbuffer", "t38faxmaxdatagram"}
)
_MOST_DIGITS = 9
# Boolean parameters: present (true) or absent; T.38 (2002) and later also allow ":0"/":1".
_BOOLEAN_ATTRIBUTES = frozenset(
    {"t38faxfillbitremoval", "t38faxtranscodingmmr", "t38faxtranscodingjbig"}
)
# Parameters whose value is one token (localTCF / transferredTCF; t38UDPFEC / t38UDPRedundancy;
# vendors add others, which the far end judges).
_TOKEN_ATTRIBUTES = frozenset({"t38faxratemanagement", "t38faxudpec"})
_MOST_TOKEN_LENGTH = 64
_MOST_T38_ATTRIBUTES = 32


def is_t38(media: MediaDescription) -> bool:
    """Whether ``media`` is a T.38 fax stream (``m=image``, format ``t38``), in any transport."""
    return media.media.lower() == "image" and any(f.lower() == T38_FORMAT for f in media.formats)


def is_udptl_t38(media: MediaDescription) -> bool:
    """Whether ``media`` is T.38 over UDPTL, the one fax transport the relay carries."""
    return is_t38(media) and media.proto.upper() == UDPTL_PROTO


def t38_problem_untrusted(media: MediaDescription) -> str | None:
    """What is wrong with a T.38 m= line's T.38 attributes (Annex D.2.3), or None when they are
    well formed. Unknown attributes are not judged: they go to the other leg unchanged."""
    seen: set[str] = set()
    count = 0
    for name, value in media.attributes:
        lowered = name.lower()
        if not lowered.startswith("t38"):
            continue
        count += 1
        if count > _MOST_T38_ATTRIBUTES:
            return f"more than {_MOST_T38_ATTRIBUTES} T.38 attributes"
        if lowered in seen and (lowered in _INTEGER_ATTRIBUTES | _TOKEN_ATTRIBUTES):
            return f"a={name} given twice"
        seen.add(lowered)
        if lowered in _INTEGER_ATTRIBUTES:
            if value is None or not value.isascii() or not value.isdigit():
                return f"a={name} needs an integer value (T.38 Annex D.2.3)"
            if len(value) > _MOST_DIGITS:
                return f"a={name} value is out of range"
            if lowered == "t38faxmaxdatagram" and int(value) == 0:
                return f"a={name}:0"
        elif lowered in _BOOLEAN_ATTRIBUTES:
            if value is not None and value not in ("0", "1"):
                return f"a={name} takes no value, 0 or 1 (T.38 Annex D.2.3)"
        elif lowered in _TOKEN_ATTRIBUTES and (
            value is None
            or not value
            or len(value) > _MOST_TOKEN_LENGTH
            or not value.isascii()
            or not value.isprintable()
            or " " in value
        ):
            return f"a={name} needs one token as its value (T.38 Annex D.2.3)"
    return None
