"""The words of a leg's protection (``voipgw calls`` and the line logged as an answered call
ends, gateway/core/calls/protection.py) for a stream whose keys come on the media path."""

from __future__ import annotations

from gateway.core.calls.protection import describe_auth, describe_leg


def leg(stream: dict[str, object]) -> dict[str, object]:
    """A leg's security record as LegSecurity.record makes it (media/security.py)."""
    return {
        "policy": "require",
        "signalling": "udp",
        "signalling_secure": False,
        "streams": [stream],
    }


def test_a_stream_whose_handshake_never_keyed_it_is_not_called_unencrypted() -> None:
    # A DTLS-SRTP (or ZRTP) stream whose handshake failed or never finished: no keys, so the
    # relay kept it blocked both ways (keying.py StreamKeys.of_legs): not one packet in clear.
    for exchange in ("dtls", "zrtp"):
        record = {"key_exchange": exchange, "suite": None, "encrypted": False, "keys_held_by": None}
        line = describe_leg(leg(record))
        assert "not encrypted" not in line
        assert line == (
            f"signalling UDP; media SRTP by {exchange} not keyed (its handshake unfinished or "
            "failed): its media dropped, none unencrypted"
        )


def test_a_stream_without_a_key_exchange_is_plain_rtp() -> None:
    record = {"key_exchange": "none", "suite": None, "encrypted": False, "keys_held_by": None}
    assert describe_leg(leg(record)) == "signalling UDP; media RTP, not encrypted"


# --- What a TLS leg's signalling says of who was authenticated (describe_signalling) ----------


def tls_leg(
    *,
    opened_by: str | None,
    certificate: dict[str, object] | None,
    kind: str | None = "account",
    name: str | None = "alice",
    server_name: str | None = None,
) -> dict[str, object]:
    """A TLS leg's record as CallMediaKeys.security_record makes it (media_keys.py);
    ``opened_by`` None: a record stored before the ``tls`` field."""
    record: dict[str, object] = {
        "policy": "sdes",
        "signalling": "tls",
        "signalling_secure": True,
        "streams": [],
        "peer_certificate": certificate,
    }
    if opened_by is not None:
        record["tls"] = {"opened_by": opened_by, "server_name": server_name}
        record["peer_kind"] = kind
        record["peer_name"] = name
    return record


VERIFIED = {"subject": "CN=x", "issuer": "CN=ca", "verified": True, "sha256": "ab"}
UNVERIFIED = {**VERIFIED, "verified": False}


def test_a_phone_without_a_client_certificate_is_said_not_authenticated_by_one() -> None:
    line = describe_leg(tls_leg(opened_by="peer", certificate=None))
    assert line == "signalling TLS (phone not authenticated by certificate); media none"


def test_a_phones_verified_client_certificate_is_said_verified() -> None:
    line = describe_leg(tls_leg(opened_by="peer", certificate=VERIFIED))
    assert line == "signalling TLS, phone's certificate verified; media none"


def test_a_phones_unverified_client_certificate_is_said_not_verified() -> None:
    line = describe_leg(tls_leg(opened_by="peer", certificate=UNVERIFIED))
    assert line == (
        "signalling TLS, phone's certificate presented but NOT verified against our CAs; media none"
    )


def test_a_trunk_that_connected_to_us_is_called_a_trunk() -> None:
    line = describe_leg(tls_leg(opened_by="peer", certificate=None, kind="trunk", name="c"))
    assert line.startswith("signalling TLS (trunk not authenticated by certificate);")
    unknown = describe_leg(tls_leg(opened_by="peer", certificate=None, kind=None, name=None))
    assert unknown.startswith("signalling TLS (peer not authenticated by certificate);")


def test_a_connection_we_opened_to_a_trunk_says_whether_its_certificate_names_it() -> None:
    verified = tls_leg(
        opened_by="gateway",
        certificate=VERIFIED,
        kind="trunk",
        name="carrier",
        server_name="sip.carrier.example",
    )
    assert describe_leg(verified) == (
        "signalling TLS to trunk carrier, certificate verified for sip.carrier.example; media none"
    )
    lax = {**verified, "peer_certificate": UNVERIFIED}
    assert describe_leg(lax) == (
        "signalling TLS to trunk carrier, certificate NOT verified for sip.carrier.example "
        "(encrypted only); media none"
    )


def test_every_tls_line_begins_with_the_words_operators_grep() -> None:
    for opened_by in ("peer", "gateway"):
        for certificate in (None, VERIFIED, UNVERIFIED):
            record = tls_leg(opened_by=opened_by, certificate=certificate, server_name="x")
            assert describe_leg(record).startswith("signalling TLS")


def test_a_record_stored_before_the_tls_field_reads_as_it_did() -> None:
    # Records in the store from before session 32: no "tls", "peer_kind" or "peer_name".
    assert describe_leg(tls_leg(opened_by=None, certificate=VERIFIED)) == (
        "signalling TLS (peer certificate verified); media none"
    )
    assert describe_leg(tls_leg(opened_by=None, certificate=None)) == ("signalling TLS; media none")
    assert describe_leg(tls_leg(opened_by=None, certificate=UNVERIFIED)) == (
        "signalling TLS; media none"
    )


# --- How the party of a leg authenticated (describe_auth, the record's "auth") -----------------


def test_a_digest_caller_is_named_with_realm_algorithm_and_qop() -> None:
    auth = {
        "method": "digest",
        "realm": "voipgw.local",
        "algorithm": "SHA-256",
        "qop": "auth",
        "device_certificate": False,
    }
    record = {"peer_kind": "account", "peer_name": "alice", "auth": auth}
    assert (
        describe_auth(record) == "account alice by digest (realm voipgw.local, SHA-256, qop auth)"
    )
    bound = {**record, "auth": {**auth, "qop": None, "device_certificate": True}}
    assert describe_auth(bound) == (
        "account alice by digest (realm voipgw.local, SHA-256) and by its bound device certificate"
    )


def test_a_trunk_accepted_by_source_is_named_with_the_address() -> None:
    record = {
        "peer_kind": "trunk",
        "peer_name": "carrier",
        "auth": {"method": "source", "source": "192.0.2.10"},
    }
    assert describe_auth(record) == (
        "trunk carrier by its source address 192.0.2.10 (no credentials asked)"
    )


def test_a_leg_we_called_and_an_older_record_say_nothing() -> None:
    assert describe_auth({"peer_kind": "trunk", "peer_name": "carrier", "auth": None}) is None
    assert describe_auth({"peer_kind": "account", "peer_name": "alice"}) is None


# --- A forked callee's re-key (gateway/core/calls/fork_rekey.py) ------------------------------


def test_the_words_say_whether_a_forked_callees_shared_key_was_replaced() -> None:
    """``voipgw calls`` and the protection log line say what the record's ``fork_rekey`` says:
    a key another forked phone got too that is still in force is the operator's business."""
    stream = {"key_exchange": "sdes", "suite": "AES_CM_128_HMAC_SHA1_80", "encrypted": True}
    plain = describe_leg(leg(stream))
    assert describe_leg({**leg(stream), "fork_rekey": "re-keyed"}) == (
        f"{plain}; our offer's SRTP key, which another forked phone got too, replaced by a "
        "re-INVITE"
    )
    refused = {**leg(stream), "fork_rekey": "refused: 488 Not Acceptable Here"}
    assert describe_leg(refused) == (
        f"{plain}; our offer's SRTP key, which another forked phone got too, NOT replaced "
        "(refused: 488 Not Acceptable Here)"
    )


def test_a_dtls_stream_rekeyed_by_the_phones_new_handshake_says_so() -> None:
    # RFC 6347 §4.2.8 (session 44): the phone restarted its DTLS on the same address and the
    # leg took its new keys after the certificate check; a record without the field as before.
    stream = {
        "key_exchange": "dtls",
        "suite": "AES_CM_128_HMAC_SHA1_80",
        "encrypted": True,
        "dtls_role": "server",
    }
    leg = {"signalling": "udp", "streams": [stream]}
    assert "re-keyed" not in describe_leg(leg)
    leg["streams"] = [dict(stream, dtls_rekeyed_by_peer="2")]
    assert describe_leg(leg) == (
        "signalling UDP; media SRTP AES_CM_128_HMAC_SHA1_80 keyed by dtls "
        "(re-keyed 2 time(s) by the phone's new DTLS handshake on the same address, its "
        "certificate checked)"
    )


# --- A leg relayed by listed edge proxies (describe_relay) -------------------------------------


def relayed(record: dict[str, object], *hops: tuple[str, str, str]) -> dict[str, object]:
    """``record`` with the ``relayed_by`` hops (proxy, transport, from), the nearest first."""
    record["relayed_by"] = [
        {"proxy": proxy, "transport": transport, "from": source}
        for proxy, transport, source in hops
    ]
    return record


def srtp(key_exchange: str, suite: str) -> dict[str, object]:
    return {"key_exchange": key_exchange, "suite": suite, "encrypted": True}


def test_a_leg_relayed_by_an_edge_proxy_says_the_phones_own_hop() -> None:
    # kamailio talks TLS to the node, the phone talked UDP to kamailio: its SDES keys crossed
    # that hop in clear, which the leg's own "signalling TLS" does not show.
    record = tls_leg(opened_by="peer", certificate=None, kind="trunk", name="edge")
    record["streams"] = [srtp("sdes", "AES_CM_128_HMAC_SHA1_80")]
    relayed(record, ("192.0.2.1:5061", "udp", "198.51.100.7:40001"))
    assert describe_leg(record) == (
        "signalling TLS (trunk not authenticated by certificate), relayed by edge proxy "
        "192.0.2.1:5061, which received it over UDP (NOT encrypted) from 198.51.100.7:40001; "
        "media SRTP AES_CM_128_HMAC_SHA1_80 keyed by sdes; its SDES keys crossed an "
        "unencrypted hop before the edge proxy"
    )


def test_a_chain_of_edge_proxies_is_said_hop_by_hop_and_tls_all_the_way_is_not_flagged() -> None:
    record = relayed(
        leg(srtp("sdes", "AEAD_AES_128_GCM")),
        ("192.0.2.1:5060", "tls", "192.0.2.2:5061"),
        ("192.0.2.2:5061", "wss", "[2001:db8::7]:443"),
    )
    assert describe_leg(record) == (
        "signalling UDP, relayed by edge proxy 192.0.2.1:5060, which received it over TLS from "
        "192.0.2.2:5061, which received it over WSS from [2001:db8::7]:443; media SRTP "
        "AEAD_AES_128_GCM keyed by sdes"
    )


def test_a_relayed_leg_keyed_on_the_media_path_has_no_sdes_warning() -> None:
    record = relayed(
        leg(srtp("dtls", "AEAD_AES_128_GCM")), ("192.0.2.1:5060", "udp", "198.51.100.7:5060")
    )
    line = describe_leg(record)
    assert line.startswith(
        "signalling UDP, relayed by edge proxy 192.0.2.1:5060, which received it over UDP "
        "(NOT encrypted) from 198.51.100.7:5060; media SRTP AEAD_AES_128_GCM keyed by dtls"
    )
    assert "SDES" not in line


def test_a_leg_called_through_a_registered_path_says_the_phones_hop_is_unseen() -> None:
    record = leg(srtp("sdes", "AES_CM_128_HMAC_SHA1_80"))
    record["registered_path"] = ["<sip:192.0.2.1:5060;lr;received=sip:198.51.100.7:40001>"]
    assert describe_leg(record) == (
        "signalling UDP, through edge proxy <sip:192.0.2.1:5060;lr;received=sip:"
        "198.51.100.7:40001> (its registered Path), whose hop to the phone the gateway does not "
        "see; media SRTP AES_CM_128_HMAC_SHA1_80 keyed by sdes"
    )
