"""How each leg of a call is protected, in plain words: the line ``voipgw calls`` shows per leg
and the gateway logs when an answered call ends, from the leg's security record
(:meth:`gateway.core.calls.media_keys.CallMediaKeys.security_record`, ARCHITECTURE.md "Security
state is data"). Never a key: suites, key exchanges, the ZRTP SAS (which the phone shows its
user) and ICE ufrags (never the pwd)."""

from __future__ import annotations

from typing import Any

# Key continuity with a ZRTP phone (RFC 6189 §4.3, §4.9), in words.
_ZRTP_CACHE_WORDS = {
    "new": "; first ZRTP call with this phone",
    "match": "; key continuity with its earlier calls (ZRTP cache matched)",
    "mismatch": (
        "; ZRTP CACHE MISMATCH: the secret kept from this phone's earlier calls did not "
        "match: a possible man in the middle, or the phone lost its cache; have the user "
        "compare the SAS"
    ),
}


# Who a leg is with, by the record's "peer_kind" (the Leg's), as the words say it.
_PEER_WORDS = {"account": "phone", "trunk": "trunk"}


def describe_signalling(leg: dict[str, Any]) -> str:
    """How a leg's signalling is protected, after the word "signalling": the transport and, for
    TLS, who was authenticated by a certificate. The transport comes first, so that "signalling
    TLS" stays the start of every TLS leg's line (operators grep it).

    A connection the peer opened (a phone registered over TLS): its client certificate verified
    against the CAs (mutual TLS, or one offered in server-only mode), presented but not
    verified, or none: the phone then is not authenticated by a certificate, only by what SIP
    asks of it (digest), over a TLS connection that authenticated the gateway alone. A
    connection the gateway opened (to a trunk): whether the trunk's certificate was verified,
    chain and name (RFC 5922 §4: the name it had to carry, said). A record stored before the
    ``tls`` field (session 32) does not say who opened the connection: said as it was then."""
    signalling = str(leg.get("signalling", "?")).upper()
    if not leg.get("signalling_secure"):
        return signalling
    cert = leg.get("peer_certificate") or {}
    tls = leg.get("tls")
    if not isinstance(tls, dict):
        return f"{signalling} (peer certificate verified)" if cert.get("verified") else signalling
    who = _PEER_WORDS.get(str(leg.get("peer_kind")), "peer")
    if tls.get("opened_by") == "gateway":
        name = tls.get("server_name")
        to = f"{who} {leg['peer_name']}" if leg.get("peer_name") else who
        if cert.get("verified"):
            return f"{signalling} to {to}, certificate verified for {name}"
        # Only with verification off (mode "encryption-only", verify_peers = false): otherwise
        # such a handshake fails.
        return f"{signalling} to {to}, certificate NOT verified for {name} (encrypted only)"
    if not cert:
        return f"{signalling} ({who} not authenticated by certificate)"
    if cert.get("verified"):
        return f"{signalling}, {who}'s certificate verified"
    return f"{signalling}, {who}'s certificate presented but NOT verified against our CAs"


# Transports that carry SIP encrypted (RFC 3261 §26.2.1; RFC 7118 §5 for WSS).
_ENCRYPTED_TRANSPORTS = ("tls", "wss")


def describe_relay(leg: dict[str, Any]) -> str | None:
    """How a leg's request reached the listed edge proxies it came through (the record's
    ``relayed_by``, nearest first), or for a leg we called through a registered Path that
    its phone is beyond it, after the signalling's words; None when neither. The leg's own
    transport is the last proxy's hop to us: a phone that sent its INVITE, and the SDES keys
    in it, over UDP to kamailio is on a "TLS" leg when kamailio talks TLS to the node, and
    this says so."""
    path = leg.get("registered_path")
    if isinstance(path, list) and path:
        # A leg we called through the Path its phone registered with (RFC 3327 §5.3): the
        # proxies' hops to the phone never reach us, so nothing can be said of them.
        return (
            f"through edge proxy {path[0]} (its registered Path), whose hop to the phone the "
            "gateway does not see"
        )
    hops = leg.get("relayed_by")
    if not isinstance(hops, list) or not hops:
        return None
    words = f"relayed by edge proxy {hops[0].get('proxy')}"
    for hop in hops:
        transport = str(hop.get("transport", "?"))
        over = transport.upper()
        if transport not in _ENCRYPTED_TRANSPORTS:
            over += " (NOT encrypted)"
        words += f", which received it over {over} from {hop.get('from')}"
    return words


def _sdes_over_clear_relay(leg: dict[str, Any]) -> bool:
    """An SDES-keyed stream whose keys crossed an unencrypted hop below an edge proxy."""
    hops = leg.get("relayed_by") or []
    clear = any(str(hop.get("transport")) not in _ENCRYPTED_TRANSPORTS for hop in hops)
    sdes = any(
        stream.get("encrypted") and stream.get("key_exchange") == "sdes"
        for stream in leg.get("streams") or []
    )
    return clear and sdes


def describe_auth(leg: dict[str, Any]) -> str | None:
    """How the party of a leg that sent us its INVITE proved who it is (the record's ``auth``,
    interfaces.CallerAuth), after "authenticated:"; None for a leg we called and for records
    stored before the field. Never a secret: the record holds none."""
    auth = leg.get("auth")
    if not isinstance(auth, dict):
        return None
    name = leg.get("peer_name")
    if auth.get("method") == "source":
        who = f"trunk {name}" if name else "a trunk"
        return f"{who} by its source address {auth.get('source')} (no credentials asked)"
    if auth.get("method") == "digest":
        details = [f"realm {auth.get('realm')}", str(auth.get("algorithm"))]
        if auth.get("qop"):
            details.append(f"qop {auth['qop']}")
        words = f"account {name} by digest ({', '.join(details)})"
        if auth.get("device_certificate"):
            words += " and by its bound device certificate"
        return words
    return str(auth.get("method"))


def describe_leg(leg: dict[str, Any]) -> str:
    """One line, in plain words, of how a leg is protected."""
    signalling = describe_signalling(leg)
    relay = describe_relay(leg)
    if relay is not None:
        signalling += f", {relay}"
    streams = leg.get("streams") or []
    media = []
    for stream in streams:
        if stream.get("media") == "t38":
            refused = stream.get("refused")
            media.append(
                f"fax (T.38) refused: {refused}" if refused else "fax (T.38 UDPTL), NOT encrypted"
            )
        elif stream.get("encrypted"):
            words = f"SRTP {stream.get('suite')} keyed by {stream.get('key_exchange')}"
            if "our_mki" in stream or "peer_mki" in stream:
                # RFC 3711 §3.1: the MKI in each direction's packets (what a carrier's SBC
                # sends and expects), "none" for a direction whose packets carry none.
                words += (
                    f" (MKI: the peer's {stream.get('peer_mki') or 'none'}, "
                    f"ours {stream.get('our_mki') or 'none'})"
                )
            if "rtcp_port_keyed" in stream:
                words += (
                    " (RTCP on its own port, keyed by its own handshake)"
                    if stream["rtcp_port_keyed"]
                    else " (RTCP on its own port, not keyed yet: RTCP dropped)"
                )
            if stream.get("zrtp_sas"):
                # RFC 6189 §10: the gateway is the phone's ZRTP peer; the SAS proves that link.
                words += (
                    f" (ZRTP SAS {stream['zrtp_sas']!r}: the phone shows it for its link to "
                    "this gateway, not to the other party)"
                )
                words += _ZRTP_CACHE_WORDS.get(str(stream.get("zrtp_cache")), "")
            if stream.get("dtls_rekeyed_by_peer"):
                # RFC 6347 §4.2.8: the phone restarted its DTLS on the same address; the
                # new handshake's certificate matched its a=fingerprint before it took over.
                words += (
                    f" (re-keyed {stream['dtls_rekeyed_by_peer']} time(s) by the phone's new "
                    "DTLS handshake on the same address, its certificate checked)"
                )
            if stream.get("mikey_mode"):
                # The MIKEY mode says what protected the keys: TLS, a pre-shared key, DH.
                words += f" ({stream['mikey_mode']})"
            media.append(words)
        elif stream.get("key_exchange") not in (None, "none"):
            # Keys agreed on the media path (DTLS-SRTP, ZRTP) that never came, a handshake that
            # failed: the stream stays blocked both ways (keying.py StreamKeys.of_legs, a peer
            # that asked for SRTP never gets cleartext), so nothing went unencrypted.
            media.append(
                f"SRTP by {stream['key_exchange']} not keyed (its handshake unfinished or "
                "failed): its media dropped, none unencrypted"
            )
        else:
            media.append("RTP, not encrypted")
    line = f"signalling {signalling}; media " + (", ".join(media) or "none")
    if _sdes_over_clear_relay(leg):
        # RFC 4568 §8.3: SDES keys are only as secret as every hop of the SDP that carries them.
        line += "; its SDES keys crossed an unencrypted hop before the edge proxy"
    if leg.get("fax_t38") and not any(s.get("media") == "t38" for s in streams):
        # The call went back to audio after a fax: its fax was still not encrypted.
        line += "; its fax (T.38) was passed through NOT encrypted"
    if leg.get("ice"):
        # ICE-lite towards a WebRTC peer: the ufrags tell its checks apart (never the pwd).
        line += f"; ICE-lite (our ufrag {leg.get('ice_ufrag')}, peer's {leg.get('ice_peer_ufrag')})"
    rekey = leg.get("fork_rekey")
    if rekey:
        # A forking proxy gave our offer's SDP key to more than one phone (fork_rekey.py).
        shared = "our offer's SRTP key, which another forked phone got too,"
        line += (
            f"; {shared} replaced by a re-INVITE"
            if rekey == "re-keyed"
            else f"; {shared} NOT replaced ({rekey})"
        )
    if leg.get("device"):
        line = f"device {leg['device']}; {line}"
    srtp = leg.get("srtp") or {}
    if srtp.get("auth_failures") or srtp.get("replays"):
        line += (
            f" ({srtp.get('auth_failures', 0)} packets failed SRTP authentication, "
            f"{srtp.get('replays', 0)} replays dropped)"
        )
    return line
