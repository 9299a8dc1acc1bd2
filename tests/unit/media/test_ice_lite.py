"""ICE-lite (gateway/core/media/ice.py): checks answered per RFC 8445 §7.3, and the ICE
attributes a leg's SDP gets (RFC 8839), through LegIce and LegSecurity, without sockets."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.cli import describe_leg
from gateway.core.ids import SeededIds
from gateway.core.media import stun
from gateway.core.media.ice import (
    CheckResult,
    IceCredentials,
    IceLiteResponder,
    LegIce,
    candidate_priority,
)
from gateway.core.media.policy import BUILTIN_POLICIES
from gateway.core.media.security import LegSecurity
from gateway.core.sdp.model import SessionDescription
from gateway.core.sdp.parser import parse_sdp_untrusted

LOCAL = IceCredentials("gw01", "gatewaypassword0123456789")
REMOTE = IceCredentials("peer", "peerpasswordpeerpassword")
SOURCE = ("198.51.100.7", 50000)
TID = bytes(range(12))

ICE_OFFER = """v=0
o=- 1 1 IN IP4 198.51.100.7
s=-
c=IN IP4 198.51.100.7
t=0 0
a=ice-ufrag:{ufrag}
a=ice-pwd:{pwd}
m=audio 50000 RTP/AVP 0
a=rtpmap:0 PCMU/8000
a=rtcp-mux
a=candidate:1 1 UDP 2130706431 198.51.100.7 50000 typ host
a=sendrecv
"""

PLAIN = """v=0
o=- 1 1 IN IP4 198.51.100.7
s=-
c=IN IP4 198.51.100.7
t=0 0
m=audio 50000 RTP/AVP 0
a=rtpmap:0 PCMU/8000
a=sendrecv
"""

# What the session hands LegSecurity for its answer: our address and port.
OURS = """v=0
o=voipgw 1 1 IN IP4 203.0.113.1
s=-
c=IN IP4 203.0.113.1
t=0 0
m=audio 40000 {proto} 0
a=rtpmap:0 PCMU/8000
{mux}a=sendrecv
"""


def sdp(text: str) -> SessionDescription:
    return parse_sdp_untrusted(text.replace("\n", "\r\n").encode())


def ice_offer(credentials: IceCredentials = REMOTE) -> SessionDescription:
    return sdp(ICE_OFFER.format(ufrag=credentials.ufrag, pwd=credentials.pwd))


def ours(*, mux: bool = True, proto: str = "RTP/AVP") -> SessionDescription:
    return sdp(OURS.format(mux="a=rtcp-mux\n" if mux else "a=rtcp:40001\n", proto=proto))


def check(
    *,
    username: bytes | None = b"gw01:peer",
    key: bytes | None = LOCAL.pwd.encode(),
    use_candidate: bool = False,
    role: int = stun.ICE_CONTROLLING,
    extra: list[tuple[int, bytes]] | None = None,
) -> bytes:
    attributes: list[tuple[int, bytes]] = []
    if username is not None:
        attributes.append((stun.USERNAME, username))
    attributes.append((stun.PRIORITY, struct.pack("!I", 1853824767)))
    attributes.append((role, bytes(8)))
    if use_candidate:
        attributes.append((stun.USE_CANDIDATE, b""))
    attributes += extra or []
    return stun.encode_stun(stun.BINDING_REQUEST, TID, attributes, integrity_key=key)


def error_of(response: bytes | None) -> int:
    assert response is not None
    message = stun.parse_stun_untrusted(response)
    assert message.message_type == stun.BINDING_ERROR
    value = message.get(stun.ERROR_CODE)
    assert value is not None
    return stun.parse_error_code_untrusted(value)


def test_a_valid_check_gets_an_authenticated_success_with_its_source() -> None:
    responder = IceLiteResponder(LOCAL, REMOTE)
    response, result = responder(check(), SOURCE)
    assert result == CheckResult.VALID
    assert response is not None
    message = stun.parse_stun_untrusted(response)
    assert message.message_type == stun.BINDING_SUCCESS
    assert message.transaction_id == TID
    assert message.has_fingerprint
    assert stun.integrity_ok(message, LOCAL.pwd.encode())
    mapped = message.get(stun.XOR_MAPPED_ADDRESS)
    assert mapped is not None
    assert stun.parse_xor_address_untrusted(mapped, TID) == SOURCE
    assert responder.checks == 1


def test_use_candidate_nominates() -> None:
    responder = IceLiteResponder(LOCAL, REMOTE)
    response, result = responder(check(use_candidate=True), SOURCE)
    assert result == CheckResult.NOMINATED
    assert response is not None and stun.parse_stun_untrusted(response).message_type == 0x0101
    assert responder.nominations == 1


@pytest.mark.parametrize(
    ("request_bytes", "code"),
    [
        (check(key=b"not the password at all"), 401),
        (check(username=b"other:peer"), 401),
        (check(username=b"gw01:someoneelse"), 401),
        (check(username=b"gw01peer"), 401),
        (check(username=None), 400),
        (check(key=None), 400),
        (check(role=stun.ICE_CONTROLLED), 487),
        (check(extra=[(0x0030, b"\x00\x00\x00\x00")]), 420),
    ],
)
def test_bad_checks_get_the_rfc_errors_and_select_nothing(request_bytes: bytes, code: int) -> None:
    responder = IceLiteResponder(LOCAL, REMOTE)
    response, result = responder(request_bytes, SOURCE)
    assert result == CheckResult.NONE
    assert error_of(response) == code
    assert responder.refused == 1
    message = stun.parse_stun_untrusted(response or b"")
    # 400/401: the request proved no key, so neither does the answer (RFC 8489 §9.1.3).
    assert (message.integrity_at is not None) == (code in (420, 487))


def test_unknown_comprehension_optional_attributes_are_fine() -> None:
    # Browsers send GOOG-NETWORK-INFO (0xC057): optional, ignored.
    responder = IceLiteResponder(LOCAL, REMOTE)
    _, result = responder(check(extra=[(0xC057, b"\x00\x01\x00\x0a")]), SOURCE)
    assert result == CheckResult.VALID


def test_a_check_before_the_peer_ufrag_is_known_is_answered() -> None:
    _, result = IceLiteResponder(LOCAL, None)(check(username=b"gw01:whoever"), SOURCE)
    assert result == CheckResult.VALID


@pytest.mark.parametrize(
    "datagram",
    [
        b"\x00\x01",  # truncated
        check()[:-1] + bytes([check()[-1] ^ 1]),  # wrong FINGERPRINT: not STUN, dropped
        stun.encode_stun(stun.BINDING_INDICATION, TID, []),  # keepalive: nothing to answer
        stun.encode_stun(stun.BINDING_SUCCESS, TID, []),  # a response: we sent no request
    ],
)
def test_what_is_not_a_request_is_dropped_unanswered(datagram: bytes) -> None:
    response, result = IceLiteResponder(LOCAL, REMOTE)(datagram, SOURCE)
    assert response is None
    assert result == CheckResult.NONE


def test_host_candidate_priorities() -> None:
    assert candidate_priority(1) == 2130706431
    assert candidate_priority(2) == 2130706430


# -- SDP ---------------------------------------------------------------------------------------


def leg_ice() -> LegIce:
    return LegIce(SeededIds(7).token_hex)


def test_an_ice_offer_gets_an_ice_lite_answer() -> None:
    ice = leg_ice()
    ice.take_remote(ice_offer(), offer=True)
    answer = ice.add_to_answer(ours())
    assert ("ice-lite", None) in list(answer.attributes)
    media = answer.media[0]
    ufrag = media.attributes.get("ice-ufrag")
    pwd = media.attributes.get("ice-pwd")
    assert ufrag is not None and len(ufrag) >= 4
    assert pwd is not None and len(pwd) >= 22
    assert media.attributes.values("candidate") == (
        "1 1 UDP 2130706431 203.0.113.1 40000 typ host",
    )
    assert media.attributes.has("end-of-candidates")
    assert media.rtcp_mux
    rtp, rtcp = ice.responders(0)
    assert rtp is not None and rtcp is not None
    assert rtp.local == IceCredentials(ufrag, pwd) and rtp.remote == REMOTE
    assert "pwd" not in repr(rtp.local).replace("ufrag", "")  # the password is not shown
    assert ice.record() == {"ice": "lite", "ice_ufrag": ufrag, "ice_peer_ufrag": "peer"}


def test_without_rtcp_mux_the_rtcp_port_is_component_two() -> None:
    ice = leg_ice()
    ice.take_remote(ice_offer(), offer=True)
    media = ice.add_to_answer(ours(mux=False)).media[0]
    assert media.attributes.values("candidate") == (
        "1 1 UDP 2130706431 203.0.113.1 40000 typ host",
        "1 2 UDP 2130706430 203.0.113.1 40001 typ host",
    )


def test_a_peer_without_ice_sees_none() -> None:
    ice = leg_ice()
    ice.take_remote(sdp(PLAIN), offer=True)
    assert ice.add_to_answer(ours()) == ours()
    assert ice.add_to_offer(ours()) == ours()
    assert ice.responders(0) == (None, None)
    assert ice.record() == {}


def test_malformed_credentials_mean_no_ice() -> None:
    ice = leg_ice()
    ice.take_remote(ice_offer(IceCredentials("ab", "short")), offer=True)
    assert ice.add_to_answer(ours()) == ours()
    assert not ice.active
    ice.take_remote(ice_offer(IceCredentials("good", "bad password with spaces!!")), offer=True)
    assert ice.add_to_answer(ours()) == ours()
    assert not ice.active


def test_an_ice_restart_changes_our_credentials_and_drops_the_old_responders() -> None:
    ice = leg_ice()
    ice.take_remote(ice_offer(), offer=True)
    first = ice.add_to_answer(ours()).media[0]
    old_rtp, _ = ice.responders(0)
    # A re-offer without a restart keeps everything.
    ice.take_remote(ice_offer(), offer=True)
    assert ice.add_to_answer(ours()).media[0].attributes.get("ice-pwd") == first.attributes.get(
        "ice-pwd"
    )
    assert ice.responders(0)[0] is old_rtp
    # RFC 8445 §9: new peer credentials, new ones of ours.
    ice.take_remote(ice_offer(IceCredentials("peer2", "anotherpeerpassword12345")), offer=True)
    second = ice.add_to_answer(ours()).media[0]
    assert second.attributes.get("ice-ufrag") != first.attributes.get("ice-ufrag")
    assert second.attributes.get("ice-pwd") != first.attributes.get("ice-pwd")
    new_rtp, _ = ice.responders(0)
    assert new_rtp is not None and new_rtp is not old_rtp
    old_key = (first.attributes.get("ice-pwd") or "").encode()
    old_check = check(username=f"{first.attributes.get('ice-ufrag')}:peer2".encode(), key=old_key)
    assert error_of(new_rtp(old_check, SOURCE)[0]) == 401


def test_our_offer_carries_ice_for_savpf_or_to_a_peer_that_did_ice() -> None:
    ice = leg_ice()
    assert ice.add_to_offer(ours()) == ours()  # a phone or trunk: unchanged
    offered = ice.add_to_offer(ours(proto="UDP/TLS/RTP/SAVPF"))
    assert offered.attributes.has("ice-lite")
    assert offered.media[0].attributes.has("ice-pwd")
    # The answer with ICE: the leg runs it; without: it does none.
    ice.take_remote(ice_offer(), offer=False)
    assert ice.active
    assert ice.responders(0)[0] is not None
    # Our next offer (a re-INVITE) to that peer carries ICE even in RTP/AVP, same credentials.
    again = ice.add_to_offer(ours())
    assert again.media[0].attributes.get("ice-ufrag") == offered.media[0].attributes.get(
        "ice-ufrag"
    )
    ice.take_remote(sdp(PLAIN), offer=False)
    assert not ice.active


def test_ice_in_an_answer_to_an_offer_without_it_is_ignored() -> None:
    ice = leg_ice()
    ice.add_to_offer(ours())
    ice.take_remote(ice_offer(), offer=False)
    assert not ice.active


def test_a_disabled_leg_never_does_ice() -> None:
    ice = LegIce(SeededIds(7).token_hex, enabled=False)
    ice.take_remote(ice_offer(), offer=True)
    assert ice.add_to_answer(ours()) == ours()
    assert (
        ice.add_to_offer(ours(proto="UDP/TLS/RTP/SAVPF")).media[0].attributes.get("ice-ufrag")
        is None
    )


def test_leg_security_answers_an_ice_offer_with_ours() -> None:
    security = LegSecurity(
        side="a",
        policy=BUILTIN_POLICIES["best-effort"],
        secure_signalling=False,
        key_exchanges={},
        signalling="udp",
    )
    security.take_offer(ice_offer())
    answer = security.make_answer(ours())
    assert answer.attributes.has("ice-lite")
    assert answer.media[0].attributes.get("ice-ufrag") not in (None, "peer")
    assert security.record()["ice"] == "lite"
    assert "ice_pwd" not in str(security.record())


def test_a_refused_restart_offer_changes_nothing() -> None:
    """A re-offer with new credentials that is refused (488, no answer of ours) leaves ICE as
    it was: the peer's checks with the credentials in force still pass."""
    ice = leg_ice()
    ice.take_remote(ice_offer(), offer=True)
    first = ice.add_to_answer(ours()).media[0]
    rtp, _ = ice.responders(0)
    ice.take_remote(ice_offer(IceCredentials("peer2", "anotherpeerpassword12345")), offer=True)
    # ... refused: no add_to_answer. The next offer keeps the old credentials.
    assert ice.responders(0)[0] is rtp
    ice.take_remote(ice_offer(), offer=True)
    again = ice.add_to_answer(ours()).media[0]
    assert again.attributes.get("ice-pwd") == first.attributes.get("ice-pwd")
    assert ice.responders(0)[0] is rtp


def test_voipgw_calls_says_a_leg_runs_ice_lite() -> None:
    ice = leg_ice()
    ice.take_remote(ice_offer(), offer=True)
    ice.add_to_answer(ours())
    assert ice.local is not None
    leg = {"signalling": "udp", "streams": [], **ice.record()}
    line = describe_leg(leg)
    assert f"ICE-lite (our ufrag {ice.local.ufrag}, peer's peer)" in line
    assert ice.local.pwd not in line
    assert "ICE" not in describe_leg({"signalling": "udp", "streams": []})


def test_a_peer_that_is_ice_lite_itself_gets_no_ice() -> None:
    ice = leg_ice()
    lite = ice_offer().with_attributes([("ice-lite", None), *ice_offer().attributes])
    ice.take_remote(lite, offer=True)
    assert ice.add_to_answer(ours()) == ours()
    assert not ice.active


def test_media_level_credentials_win_over_session_level() -> None:
    ice = leg_ice()
    offer = ice_offer()
    media = offer.media[0].with_attributes(
        [
            *offer.media[0].attributes,
            ("ice-ufrag", "mline"),
            ("ice-pwd", "medialevelpassword012345"),
        ]
    )
    ice.take_remote(offer.with_media([media]), offer=True)
    ice.add_to_answer(ours())
    rtp, _ = ice.responders(0)
    assert rtp is not None and rtp.remote == IceCredentials("mline", "medialevelpassword012345")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.integers(min_value=0, max_value=40))
def test_any_datagram_is_answered_or_dropped_never_raises(data: bytes, cut: int) -> None:
    """Nothing from the network may crash the relay: random bytes, and real checks cut short
    or with an octet changed, give a response or None, never an exception."""
    responder = IceLiteResponder(LOCAL, REMOTE)
    for datagram in (data, check()[: len(check()) - cut], _flipped(check(), cut, data)):
        response, result = responder(datagram, SOURCE)
        assert response is None or stun.looks_like_stun(response)
        assert result in (CheckResult.NONE, CheckResult.VALID)


def _flipped(message: bytes, at: int, noise: bytes) -> bytes:
    changed = bytearray(message)
    changed[at % len(changed)] ^= (noise[0] if noise else 0) or 1
    return bytes(changed)


def test_a_browsers_leg_is_offered_ice_whatever_the_profile() -> None:
    """SIP over WebSocket means a browser (RFC 7118), which takes no offer without ICE."""
    browser = LegSecurity(
        side="b",
        policy=BUILTIN_POLICIES["best-effort"],
        secure_signalling=True,
        key_exchanges={},
        signalling="wss",
    )
    offered = browser.make_offer(ours())
    assert offered.attributes.has("ice-lite")
    assert offered.media[0].attributes.has("ice-ufrag")
    phone = LegSecurity(
        side="b",
        policy=BUILTIN_POLICIES["best-effort"],
        secure_signalling=True,
        key_exchanges={},
        signalling="tls",
    )
    assert not phone.make_offer(ours()).attributes.has("ice-lite")


def test_a_browsers_leg_is_offered_rtcp_mux_whatever_the_other_leg_offered() -> None:
    """Chrome refuses an offer without a=rtcp-mux ("RTCP-MUX is not enabled when it is
    required": JSEP's rtcpMuxPolicy "require", RFC 8829 §4.1.1): a caller on plain RTP without
    it calling a browser must not pass its choice on. Then ICE has one component only. Other
    legs are offered what the caller offered."""
    browser = LegSecurity(
        side="b",
        policy=BUILTIN_POLICIES["best-effort"],
        secure_signalling=False,
        key_exchanges={},
        signalling="ws",
    )
    assert browser.offers_rtcp_mux
    (media,) = browser.make_offer(ours(mux=False)).media
    assert media.rtcp_mux
    assert media.attributes.values("candidate") == (
        "1 1 UDP 2130706431 203.0.113.1 40000 typ host",
    )
    phone = LegSecurity(
        side="b",
        policy=BUILTIN_POLICIES["best-effort"],
        secure_signalling=False,
        key_exchanges={},
        signalling="udp",
    )
    assert not phone.offers_rtcp_mux
    assert not phone.make_offer(ours(mux=False)).media[0].rtcp_mux


def test_an_offer_made_for_other_phones_as_a_browsers_leg_would_have_had_it() -> None:
    """A call pickup answers the picker's offer with what the ringing phones were offered
    (answer_with): on a browser's leg that offer gets a=rtcp-mux as our own offers there do, so
    the answer may accept it; on a SIP phone's leg it is the very same object (no copy)."""
    browser = LegSecurity(
        side="b",
        policy=BUILTIN_POLICIES["best-effort"],
        secure_signalling=False,
        key_exchanges={},
        signalling="wss",
    )
    offer = ours(mux=False)
    (media,) = browser.as_offered_here(offer).media
    assert media.rtcp_mux
    assert media.attributes.remove("rtcp-mux") == offer.media[0].attributes
    phone = LegSecurity(
        side="b",
        policy=BUILTIN_POLICIES["best-effort"],
        secure_signalling=False,
        key_exchanges={},
        signalling="udp",
    )
    assert phone.as_offered_here(offer) is offer
