"""ICE-lite through the B2BUA: signalling on the in-memory network, media on real 127.0.0.1
sockets to the gateway's relay, in virtual time.

- a caller offering ICE gets an ice-lite answer with our credentials and one host candidate
  (rtcp-mux); the callee, a SIP phone, sees no ICE at all;
- its connectivity checks are answered (success with XOR-MAPPED-ADDRESS and integrity; 401 for
  a wrong password, 487 for a peer that thinks it is controlled too);
- the callee's media goes to the checked source, and moves to a source nominated later
  (USE-CANDIDATE); nobody else can take the leg's media by sending first;
- RTCP of the muxing caller reaches the callee's RTCP port and back;
- an ICE restart (re-INVITE with new credentials) gives new credentials; the old ones fail;
- a caller without ICE: the answer is as before;
- a browser's DTLS-SRTP caller: our ClientHello goes out as soon as a check selects its
  address, and its consent checks (RFC 7675) on the keyed leg are answered past 30 s.
"""

from __future__ import annotations

import socket
import struct
from pathlib import Path

import trio

import gateway.plugins.keyexchange.dtls_srtp as dtls_plugin
from gateway.core.media import stun
from gateway.core.sdp.model import MediaDescription
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.plugins.keyexchange.dtls_srtp import DtlsKeyExchange, DtlsNegotiation
from gateway.testing.sip_agent import Call
from tests.component.calls.b2bua_env import ALICE, ALICE_DID, B2bua, start_b2bua
from tests.component.calls.dtls_phone import OTHER_ID, PHONE_ID, Phone
from tests.port_blocks import port_bases

CALLER_HOST = "127.0.0.2"
CALLER_BASE, ALICE_MEDIA = port_bases(2)  # this process's own ports (tests/port_blocks.py)
CALLER_PORTS = (CALLER_BASE, CALLER_BASE + 1, CALLER_BASE + 2)  # real sockets
SDP_PORT = CALLER_PORTS[2]  # the caller's m= port: media goes there only if ICE says so
# ALICE_MEDIA: alice's answer (b2bua_env's alice_media_port): RTP, RTCP next, no rtcp-mux
PEER_UFRAG = "brwsr1"
PEER_PWD = "browserpassword0123456789"


def ice_offer(ufrag: str = PEER_UFRAG, pwd: str = PEER_PWD, version: int = 1) -> bytes:
    port = SDP_PORT
    return (
        f"v=0\r\no=- 7 {version} IN IP4 {CALLER_HOST}\r\ns=-\r\nc=IN IP4 {CALLER_HOST}\r\n"
        "t=0 0\r\na=ice-options:trickle\r\n"
        f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=rtcp-mux\r\n"
        f"a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\n"
        f"a=candidate:1 1 UDP 2130706431 {CALLER_HOST} {CALLER_PORTS[0]} typ host\r\n"
        f"a=candidate:2 1 UDP 2130706175 {CALLER_HOST} {CALLER_PORTS[1]} typ host\r\n"
        "a=sendrecv\r\n"
    ).encode()


def check(
    media: MediaDescription,
    *,
    pwd: str | None = None,
    use_candidate: bool = False,
    role: int = stun.ICE_CONTROLLING,
    tid: bytes = b"ice-check-01",
) -> bytes:
    ours = media.attributes.get("ice-ufrag")
    key = pwd if pwd is not None else media.attributes.get("ice-pwd")
    assert ours is not None and key is not None
    attributes = [
        (stun.USERNAME, f"{ours}:{PEER_UFRAG}".encode()),
        (stun.PRIORITY, struct.pack("!I", 1845501695)),
        (role, bytes(8)),
    ]
    if use_candidate:
        attributes.append((stun.USE_CANDIDATE, b""))
    return stun.encode_stun(stun.BINDING_REQUEST, tid, attributes, integrity_key=key.encode())


def rtp(seq: int) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq, seq * 160, 0x1234) + b"\xff" * 160


def rtcp() -> bytes:
    return struct.pack("!BBHI", 0x80, 200, 6, 0x1234) + bytes(20)  # an SR


async def bind(host: str, port: int) -> trio.socket.SocketType:
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await sock.bind((host, port))
    return sock


async def receive(sock: trio.socket.SocketType, seconds: float = 1.0) -> bytes | None:
    with trio.move_on_after(seconds):
        data, _ = await sock.recvfrom(4096)
        return data
    return None


async def drain(sock: trio.socket.SocketType) -> None:
    while await receive(sock, 0.2) is not None:
        pass


async def ask(sock: trio.socket.SocketType, gateway: tuple[str, int], request: bytes) -> bytes:
    """Send a check and return its response (skipping media that arrives meanwhile)."""
    await sock.sendto(request, gateway)
    with trio.fail_after(5):
        while True:
            data, _ = await sock.recvfrom(4096)
            if data[0] < 4:
                return data


def success_address(response: bytes, key: str) -> tuple[str, int]:
    message = stun.parse_stun_untrusted(response)
    assert message.message_type == stun.BINDING_SUCCESS
    assert stun.integrity_ok(message, key.encode())
    value = message.get(stun.XOR_MAPPED_ADDRESS)
    assert value is not None
    return stun.parse_xor_address_untrusted(value, message.transaction_id)


def error(response: bytes) -> int:
    message = stun.parse_stun_untrusted(response)
    assert message.message_type == stun.BINDING_ERROR
    value = message.get(stun.ERROR_CODE)
    assert value is not None
    return stun.parse_error_code_untrusted(value)


async def ice_call(env: B2bua, offer: bytes) -> tuple[Call, MediaDescription, bytes, int]:
    """The trunk calls alice with ``offer``: (call, our answer's m= line, the answer, the
    gateway's port towards alice)."""
    call = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=offer)
    final = await call.final()
    assert final.status == 200, final.reason
    answer = parse_sdp_untrusted(final.body)
    leg_b = await env.alice.next_call()
    assert leg_b.incoming is not None
    offer_b = leg_b.incoming.request.body
    port_b = parse_sdp_untrusted(offer_b).media[0].port
    # The SIP phone's leg sees no ICE (and no rtcp-mux it did not ask for... it was offered
    # one because the caller offered it: RFC 5761 §5.1.1 lets the answerer decline).
    assert b"ice-" not in offer_b and b"candidate" not in offer_b
    return call, answer.media[0], final.body, port_b


async def test_an_ice_caller_gets_ice_lite_and_its_nominated_source_gets_the_media(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_media_port=ALICE_MEDIA)
    call, media, body, port_b = await ice_call(env, ice_offer())
    assert b"a=ice-lite\r\n" in body
    ufrag = media.attributes.get("ice-ufrag")
    pwd = media.attributes.get("ice-pwd")
    assert ufrag is not None and len(ufrag) >= 4
    assert pwd is not None and len(pwd) >= 22
    assert media.rtcp_mux
    assert media.attributes.values("candidate") == (
        f"1 1 UDP 2130706431 127.0.0.1 {media.port} typ host",
    )
    assert media.attributes.has("end-of-candidates")
    assert PEER_PWD.encode() not in body  # the peer's credentials stay on its leg

    gateway_a = ("127.0.0.1", media.port)
    gateway_b = ("127.0.0.1", port_b)
    first, second, stranger = [await bind(CALLER_HOST, port) for port in CALLER_PORTS]
    alice_rtp = await bind(ALICE[0], ALICE_MEDIA)
    alice_rtcp = await bind(ALICE[0], ALICE_MEDIA + 1)

    # Bad checks: answered with errors, select nothing.
    assert error(await ask(first, gateway_a, check(media, pwd="x" * 24))) == 401
    assert error(await ask(first, gateway_a, check(media, role=stun.ICE_CONTROLLED))) == 487
    await alice_rtp.sendto(rtp(1), gateway_b)
    # No source selected: nothing goes to the caller, not even to its SDP address (RFC 8445 §12).
    assert await receive(stranger) is None
    assert await receive(first, 0.2) is None
    # Nobody takes the leg by sending first: the stranger's RTP is not relayed.
    await stranger.sendto(rtp(2), gateway_a)
    assert await receive(alice_rtp) is None

    # A valid check selects its source; media from alice goes there.
    response = await ask(first, gateway_a, check(media))
    assert success_address(response, pwd) == (CALLER_HOST, CALLER_PORTS[0])
    await alice_rtp.sendto(rtp(3), gateway_b)
    assert await receive(first) == rtp(3)
    await first.sendto(rtp(4), gateway_a)
    assert await receive(alice_rtp) == rtp(4)

    # rtcp-mux on the caller's leg, not on alice's: RTCP crosses between the two ports.
    await first.sendto(rtcp(), gateway_a)
    assert await receive(alice_rtcp) == rtcp()
    await alice_rtcp.sendto(rtcp(), ("127.0.0.1", port_b + 1))
    assert await receive(first) == rtcp()

    # A nomination from another candidate moves the media (RFC 8445 §7.3.1.5).
    response = await ask(second, gateway_a, check(media, use_candidate=True, tid=b"ice-check-02"))
    assert success_address(response, pwd) == (CALLER_HOST, CALLER_PORTS[1])
    await alice_rtp.sendto(rtp(5), gateway_b)
    assert await receive(second) == rtp(5)
    assert await receive(first, 0.3) is None
    await second.sendto(rtp(6), gateway_a)
    assert await receive(alice_rtp) == rtp(6)
    # The first source is no longer the leg's: its media is dropped.
    await first.sendto(rtp(7), gateway_a)
    assert await receive(alice_rtp, 0.3) is None
    # A valid check without USE-CANDIDATE does not move a selected source.
    await ask(first, gateway_a, check(media, tid=b"ice-check-03"))
    await alice_rtp.sendto(rtp(8), gateway_b)
    assert await receive(second) == rtp(8)

    # ICE restart: new credentials both ways; the old ones stop working.
    restart = ice_offer("brwsr2", "restartpassword0123456789", version=2)
    final = await call.reinvite(restart)
    assert final.status == 200, final.reason
    restarted = parse_sdp_untrusted(final.body).media[0]
    new_ufrag = restarted.attributes.get("ice-ufrag")
    new_pwd = restarted.attributes.get("ice-pwd")
    assert new_ufrag not in (None, ufrag) and new_pwd not in (None, pwd)
    reinvite_b = await env.alice.next_request("INVITE")  # the re-INVITE relayed to alice
    assert b"ice-" not in reinvite_b.request.body
    assert parse_sdp_untrusted(reinvite_b.request.body).media[0].port == port_b
    assert error(await ask(second, gateway_a, check(media, tid=b"ice-check-04"))) == 401
    restart_check = stun.encode_stun(
        stun.BINDING_REQUEST,
        b"ice-check-05",
        [
            (stun.USERNAME, f"{new_ufrag}:brwsr2".encode()),
            (stun.ICE_CONTROLLING, bytes(8)),
            (stun.USE_CANDIDATE, b""),
        ],
        integrity_key=(new_pwd or "").encode(),
    )
    assert new_pwd is not None
    assert success_address(await ask(first, gateway_a, restart_check), new_pwd) == (
        CALLER_HOST,
        CALLER_PORTS[0],
    )
    await alice_rtp.sendto(rtp(9), gateway_b)  # a re-INVITE keeps the stream's ports
    assert await receive(first) == rtp(9)

    assert env.gateway.calls is not None
    (gateway_call,) = env.gateway.calls.calls
    record = gateway_call.security_record()["a"]
    assert record["ice"] == "lite" and record["ice_ufrag"] == new_ufrag
    assert new_pwd not in str(gateway_call.security_record())
    for sock in (first, second, stranger, alice_rtp, alice_rtcp):
        sock.close()


async def test_a_caller_without_ice_gets_no_ice(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    final = await call.final()
    assert final.status == 200, final.reason
    assert b"ice" not in final.body and b"candidate" not in final.body
    leg_b = await env.alice.next_call()
    assert leg_b.incoming is not None and b"ice" not in leg_b.incoming.request.body
    assert env.gateway.calls is not None
    (gateway_call,) = env.gateway.calls.calls
    assert "ice" not in gateway_call.security_record()["a"]
    # A STUN check on its port is not answered (no ICE handler; dropped as before).
    media = parse_sdp_untrusted(final.body).media[0]
    sock = await bind(CALLER_HOST, CALLER_PORTS[2])
    request = stun.encode_stun(
        stun.BINDING_REQUEST, b"ice-check-06", [(stun.USERNAME, b"x:y")], integrity_key=b"k" * 22
    )
    await sock.sendto(request, ("127.0.0.1", media.port))
    assert await receive(sock) is None
    sock.close()


AVPF_OFFER = (
    b"v=0\r\no=- 3 1 IN IP4 127.0.0.3\r\ns=-\r\nc=IN IP4 127.0.0.3\r\nt=0 0\r\n"
    b"m=audio 30000 RTP/AVPF 0\r\na=rtpmap:0 PCMU/8000\r\na=rtcp-mux\r\na=sendrecv\r\n"
)


async def test_a_savpf_callee_is_offered_ice_and_its_checks_are_answered(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """Our offer carries ICE when its line goes out UDP/TLS/RTP/SAVPF (the WebRTC profile):
    here a trunk set to DTLS with the caller's feedback profile passed on."""
    env = await start_b2bua(
        nursery,
        tmp_path,
        voipgw_seed,
        plugins=[("dtls", dtls_plugin)],
        carrier={"media_policy": "dtls", "offer_rtcp_feedback": True},
    )
    call = await env.alice.invite("sip:+15551234@127.0.0.1:5060", sdp=AVPF_OFFER)
    assert (await call.final()).status == 407
    await call.authenticate()
    leg_b = await env.trunk.next_call(timeout=5)
    offer = parse_sdp_untrusted(leg_b.invite.body)
    offered = offer.media[0]
    assert offered.proto == "UDP/TLS/RTP/SAVPF"
    assert offer.attributes.has("ice-lite")
    ufrag = offered.attributes.get("ice-ufrag")
    pwd = offered.attributes.get("ice-pwd")
    assert ufrag is not None and pwd is not None
    assert offered.attributes.values("candidate") == (
        f"1 1 UDP 2130706431 127.0.0.1 {offered.port} typ host",
    )
    # The callee answers with ICE and DTLS (its handshake is not run here: checks are).
    negotiation = DtlsKeyExchange(identity=lambda: PHONE_ID).answer(
        [(a[0], a[1]) for a in offered.attributes], suites=[], secure_signalling=False
    )
    assert negotiation is not None
    theirs = dict(negotiation.local_sdp_attributes())
    answer = (
        "v=0\r\no=- 9 1 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\n"
        f"m=audio {SDP_PORT} UDP/TLS/RTP/SAVPF 0\r\na=rtpmap:0 PCMU/8000\r\na=rtcp-mux\r\n"
        f"a=ice-ufrag:{PEER_UFRAG}\r\na=ice-pwd:{PEER_PWD}\r\n"
        f"a=candidate:1 1 UDP 2130706431 {CALLER_HOST} {CALLER_PORTS[0]} typ host\r\n"
        f"a=fingerprint:{theirs['fingerprint']}\r\na=setup:{theirs['setup']}\r\n"
        f"a=tls-id:{theirs['tls-id']}\r\n"
    ).encode()
    await leg_b.answer(200, sdp=answer)
    final = await call.final()
    assert final.status == 200, final.reason
    assert b"ice" not in final.body  # alice, the caller, did not offer ICE
    sock = await bind(CALLER_HOST, CALLER_PORTS[0])
    response = await ask(sock, ("127.0.0.1", offered.port), check(offered, use_candidate=True))
    assert success_address(response, pwd) == (CALLER_HOST, CALLER_PORTS[0])
    sock.close()


async def test_our_dtls_handshake_starts_as_soon_as_a_check_selects_the_address(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """A browser's offer (ICE, DTLS-SRTP with a=setup:actpass) gets a=setup:active: the gateway
    is the DTLS client (RFC 5763 §5) and its engine makes the ClientHello at once, but nothing
    may go to an ICE leg before a check selects an address (RFC 8445 §12). The relay holds that
    flight and sends it when the first valid check selects one, not a retransmission timeout
    later (1 s, RFC 6347 §4.2.4.1): Chromium's connection waited a second for it."""
    env = await start_b2bua(
        nursery,
        tmp_path,
        voipgw_seed,
        plugins=[("dtls", dtls_plugin)],
        carrier={"media_policy": "dtls"},
    )
    _, media, _, _ = await ice_call(env, browser_offer(browser_dtls()))
    assert media.attributes.get("setup") == "active"
    first = await bind(CALLER_HOST, CALLER_PORTS[0])
    # Nothing before a check, not even to the SDP address: the ClientHello is held.
    assert await receive(first, 0.3) is None
    response = await ask(first, ("127.0.0.1", media.port), check(media, use_candidate=True))
    assert stun.parse_stun_untrusted(response).message_type == stun.BINDING_SUCCESS
    hello = await receive(first, 0.2)
    assert hello is not None and hello[0] == 22  # a DTLS handshake record (RFC 6347 §4.1)
    first.close()


def browser_dtls() -> DtlsNegotiation:
    """A browser's DTLS-SRTP offer (a=setup:actpass), the gateway's own engine."""
    return DtlsKeyExchange(identity=lambda: PHONE_ID).offer(suites=[], secure_signalling=False)


def browser_offer(negotiation: DtlsNegotiation) -> bytes:
    """What a browser offers: ICE and DTLS-SRTP in UDP/TLS/RTP/SAVPF, rtcp-mux."""
    ours = dict(negotiation.local_sdp_attributes())
    return (
        ice_offer().replace(b"RTP/AVP 0", b"UDP/TLS/RTP/SAVPF 0")
        + (
            f"a=fingerprint:{ours['fingerprint']}\r\na=setup:actpass\r\n"
            f"a=tls-id:{ours['tls-id']}\r\n"
        ).encode()
    )


async def test_consent_checks_on_an_established_dtls_leg_are_answered(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """A browser keeps checking consent on the selected pair once media flows: a STUN Binding
    request every 5 s or so (RFC 7675 §5.1), and it stops sending after 30 s without an answer
    (§5.1: consent expires). On a leg that is keyed and relaying SRTP every one is answered
    (success, with our integrity), and the media stays where it was, for longer than 30 s."""
    env = await start_b2bua(
        nursery,
        tmp_path,
        voipgw_seed,
        plugins=[("dtls", dtls_plugin)],
        carrier={"media_policy": "dtls"},
        alice_media_port=ALICE_MEDIA,
    )
    negotiation = browser_dtls()
    _, media, body, port_b = await ice_call(env, browser_offer(negotiation))
    answer = parse_sdp_untrusted(body)
    negotiation.remote_sdp_attributes(
        [(a.name, a.value) for a in media.attributes]
        + [(a.name, a.value) for a in answer.attributes]
    )
    pwd = media.attributes.get("ice-pwd")
    assert pwd is not None
    gateway_a = ("127.0.0.1", media.port)
    sock = await bind(CALLER_HOST, CALLER_PORTS[0])
    nominated = await ask(sock, gateway_a, check(media, use_candidate=True, tid=b"nominate-001"))
    assert success_address(nominated, pwd) == (CALLER_HOST, CALLER_PORTS[0])
    browser = Phone(negotiation, sock, gateway_a)
    nursery.start_soon(browser.run)
    with trio.fail_after(5):
        await browser.keyed.wait()
    alice_rtp = await bind(ALICE[0], ALICE_MEDIA)

    for n in range(8):  # 40 s of consent checks, 5 s apart
        await trio.sleep(5)
        tid = f"consent-{n:04d}".encode()
        await sock.sendto(check(media, tid=tid), gateway_a)
        await alice_rtp.sendto(rtp(100 + n), ("127.0.0.1", port_b))
        with trio.fail_after(1):
            while not answered_and_relayed(browser, tid, n + 1):
                await trio.sleep(0.01)
    responses = stuns(browser)
    assert len(responses) == 8
    for message in responses:
        assert message.message_type == stun.BINDING_SUCCESS
        assert stun.integrity_ok(message, pwd.encode())
    # SRTP from alice still reaches the browser's selected address: a packet after each check.
    assert len(srtp(browser)) == 8
    assert env.gateway.calls is not None and len(env.gateway.calls.calls) == 1
    alice_rtp.close()


def stuns(phone: Phone) -> list[stun.StunMessage]:
    """The STUN messages among what the phone received that its DTLS did not take."""
    return [stun.parse_stun_untrusted(m) for m in phone.media if m and m[0] < 4]


def srtp(phone: Phone) -> list[bytes]:
    """The SRTP packets the phone received (SRTP keeps RTP's first octet, RFC 3711 §3.1)."""
    return [m for m in phone.media if m and m[0] & 0xC0 == 0x80]


def answered_and_relayed(phone: Phone, tid: bytes, packets: int) -> bool:
    """The phone got the response to check ``tid``, and ``packets`` SRTP packets in all."""
    answered = tid in [message.transaction_id for message in stuns(phone)]
    return answered and len(srtp(phone)) >= packets


async def test_a_client_hello_forged_with_the_selected_pair_is_asked_for_a_cookie(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """Session 45: on an ICE leg where the gateway is the DTLS server (the caller offered
    a=setup:active), a ClientHello forged with the selected pair's address on the established
    association is asked for our cookie (RFC 6347 §4.2.1): one 60-octet HelloVerifyRequest to
    the browser, which discards it (another epoch, RFC 6347 §4.1.2.7), and nothing else.
    Before, no cookie could be asked there (the port takes DTLS from the selected pair only,
    fed without its source): the forged ClientHello started a candidate whose ~1 KB flight
    went to the browser, resent until handshake_timeout."""
    env = await start_b2bua(
        nursery,
        tmp_path,
        voipgw_seed,
        plugins=[("dtls", dtls_plugin)],
        carrier={"media_policy": "dtls"},
    )
    negotiation = browser_dtls()
    offer = browser_offer(negotiation).replace(b"a=setup:actpass", b"a=setup:active")
    _, media, body, _ = await ice_call(env, offer)
    assert media.attributes.get("setup") == "passive"
    answer = parse_sdp_untrusted(body)
    answered = [(a.name, a.value) for a in media.attributes]
    negotiation.remote_sdp_attributes(answered + [(a.name, a.value) for a in answer.attributes])
    assert negotiation.dtls_role == "client"
    gateway_a = ("127.0.0.1", media.port)
    sock = await bind(CALLER_HOST, CALLER_PORTS[0])
    await ask(sock, gateway_a, check(media, use_candidate=True, tid=b"nominate-002"))
    browser = Phone(negotiation, sock, gateway_a)
    nursery.start_soon(browser.run)
    with trio.fail_after(5):
        await browser.keyed.wait()
    await trio.sleep(1)
    before = browser.dtls_received
    forger = DtlsKeyExchange(identity=lambda: OTHER_ID).answer(
        answered, suites=[], secure_signalling=False
    )
    assert forger is not None and forger.dtls_role == "client"
    for datagram in forger.packets_to_send(now=trio.current_time()):
        await sock.sendto(datagram, gateway_a)  # the selected pair's address, as forged
    await trio.sleep(30)  # past handshake_timeout: every resend a candidate would make
    assert browser.dtls_received - before == 1  # our HelloVerifyRequest, once
    assert browser.keys is not None and browser.failure is None
