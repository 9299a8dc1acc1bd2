"""Mutated SIP and media thrown at a gateway while a call is up (the robustness rule: bad input
gets a clear answer and loses nothing; nothing from the network ends another call).

A call trunk -> alice is established, its media on real sockets (127.0.0.1) as in
test_b2bua_rtcp_quality. A stranger at 127.0.0.9 then sends a seeded stream of mutated requests
and responses (tests/unit/fuzz/mutator.py) to the gateway, one at a time. What each should get
is worked out with the gateway's own parser: a request it refuses gets exactly the status it
names (400 with the reason, 505, 416, 513) when a Via can be salvaged and nothing otherwise; a
request it accepts gets a final response (ACK none); responses are dropped or absorbed. The
trunk's address then offers mutated SDP in INVITEs to a number nobody has: what the SDP parser
refuses gets 488 with a Warning, anything else a final answer. Then mutated RTP, RTCP and STUN
go to the call's media ports, from the phones' own addresses and
from a stranger's. At the end the gateway still answers OPTIONS, the call's media still flows
both ways, it hangs up cleanly, and nothing was logged at error level (no "internal error").

VOIPGW_FUZZ_EXAMPLES (docs/testing.md) scales the number of mutated messages and packets (a
tenth of it each: 100 in CI) and offers (a twentieth: 50).
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

import pytest
import trio

from gateway.core.sdp.errors import SdpError
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.core.sip.errors import SipParseError
from gateway.core.sip.message import Response
from gateway.core.sip.parser import parse_message_untrusted, salvage_request_headers
from gateway.testing.network import CapturedDatagram
from gateway.testing.sip_agent import simple_sdp
from tests.component.calls.b2bua_env import ALICE_DID, GW, T1, TRUNK, eventually, start_b2bua
from tests.component.calls.dtls_phone import bind
from tests.component.calls.recorder_calls import rtp
from tests.component.calls.rtcp_reports import rtcp_port, sender_report
from tests.port_blocks import port_bases
from tests.unit.fuzz.mutator import examples, inputs
from tests.unit.media.stun_vectors import RFC5769_REQUEST
from tests.unit.sdp.sdp_samples import BARESIP_SDES, LINPHONE_SRTP, SIPP_UAC, crlf

STRANGER = ("127.0.0.9", 5060)
CALLER_PORT, CALLEE_PORT = port_bases(2)  # this process's own ports (tests/port_blocks.py)
MAX_UDP = 65507  # the largest UDP payload over IPv4
SDP = simple_sdp("127.0.0.9", 30900).replace(b"\n", b"\r\n").replace(b"\r\r\n", b"\r\n")


SDP_OFFERS = [crlf(text) for text in (BARESIP_SDES, LINPHONE_SRTP, SIPP_UAC)]


def _request(method: str, uri: str, extra: str = "", body: bytes = b"") -> bytes:
    head = (
        f"{method} {uri} SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.9:5060;branch=z9hG4bKfuzz;rport\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:mallory@127.0.0.9>;tag=fz1\r\n"
        "To: <sip:+4930123456@127.0.0.1>\r\n"
        "Call-ID: fuzz@127.0.0.9\r\n"
        f"CSeq: 7 {method}\r\n"
        "Contact: <sip:mallory@127.0.0.9:5060>\r\n"
        f"{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _response(status: str, call_id: str, method: str = "INVITE", extra: str = "") -> bytes:
    return (
        f"SIP/2.0 {status}\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKgw1\r\n"
        "From: <sip:+15550100@127.0.0.2>;tag=a1\r\n"
        "To: <sip:alice@127.0.0.3>;tag=b2\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: 1 {method}\r\n"
        "Contact: <sip:alice@127.0.0.3:5060>\r\n"
        f"{extra}"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def _seeds(call_id: str) -> list[bytes]:
    did = f"sip:{ALICE_DID}@127.0.0.1:5060"
    return [
        _request("OPTIONS", "sip:127.0.0.1:5060", "Accept: application/sdp\r\n"),
        _request("INVITE", did, "Content-Type: application/sdp\r\n", SDP),
        _request(
            "INVITE",
            did,
            "Supported: timer, 100rel\r\nSession-Expires: 90;refresher=uac\r\n"
            "Identity: a.b.c;info=<https://cert.example.org/x.pem>;alg=ES256;ppt=shaken\r\n"
            'Content-Type: multipart/mixed;boundary="b1"\r\n',
            b"--b1\r\nContent-Type: application/sdp\r\n\r\n" + SDP + b"\r\n--b1--\r\n",
        ),
        _request("REGISTER", "sip:127.0.0.1", "Expires: 3600\r\n"),
        _request(
            "REGISTER",
            "sip:127.0.0.1",
            'Authorization: Digest username="alice", realm="voipgw.local", nonce="abc", '
            'uri="sip:127.0.0.1", response="00112233445566778899aabbccddeeff", qop=auth, '
            'nc=00000001, cnonce="x"\r\n',
        ),
        _request("SUBSCRIBE", "sip:alice@127.0.0.1", "Event: dialog\r\nExpires: 60\r\n"),
        _request("NOTIFY", "sip:127.0.0.1", "Event: refer\r\nSubscription-State: active\r\n"),
        _request("MESSAGE", "sip:alice@127.0.0.1", "Content-Type: text/plain\r\n", b"hello"),
        _request("BYE", "sip:127.0.0.1", "Reason: Q.850;cause=16\r\n"),
        _request("CANCEL", did),
        _request("PRACK", "sip:127.0.0.1", "RAck: 1 7 INVITE\r\n"),
        _request("REFER", "sip:127.0.0.1", "Refer-To: <sip:bob@127.0.0.1>\r\n"),
        _request("ACK", did),
        # Stray responses, some with the established call's Call-ID.
        _response("200 OK", call_id, extra="Content-Type: application/sdp\r\n"),
        _response("180 Ringing", call_id, extra="Require: 100rel\r\nRSeq: 5\r\n"),
        _response("481 Call Does Not Exist", "other@127.0.0.9", method="BYE"),
        _response(
            "401 Unauthorized",
            "reg@127.0.0.1",
            method="REGISTER",
            extra='WWW-Authenticate: Digest realm="x", nonce="y", qop="auth"\r\n',
        ),
    ]


def _trunk_invite(body: bytes) -> bytes:
    """An INVITE from the trunk's address to a number no one has, offering ``body``."""
    return (
        "INVITE sip:+4930000001@127.0.0.1:5060 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.2:5071;branch=z9hG4bKfuzz;rport\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:+15550100@127.0.0.2>;tag=fz2\r\n"
        "To: <sip:+4930000001@127.0.0.1>\r\n"
        "Call-ID: fuzz@127.0.0.9\r\n"
        "CSeq: 1 INVITE\r\n"
        "Contact: <sip:+15550100@127.0.0.2:5071>\r\n"
        "Content-Type: application/sdp\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def _unique(data: bytes, number: int) -> bytes:
    """Each message its own transaction and Call-ID, so every answer is told apart."""
    return data.replace(b"z9hG4bKfuzz", b"z9hG4bKfuzz%d" % number).replace(
        b"fuzz@127.0.0.9", b"fuzz%d@127.0.0.9" % number
    )


def _expected(data: bytes) -> str:
    """What the gateway owes the sender of ``data``: "none", "final" or a status number."""
    try:
        message = parse_message_untrusted(data)
    except SipParseError as err:
        if err.status is None or salvage_request_headers(data) is None:
            return "none"
        if data.lstrip(b"\r\n").startswith(b"ACK "):
            return "none"  # a malformed ACK is not answered either (RFC 3261 §8.2.7)
        return str(err.status)
    if isinstance(message, Response) or message.method == "ACK":
        return "none"
    return "final"


# Long enough for every retransmission a message causes to be over before the next is sent: an
# INVITE's non-2xx final response is sent again until ACKed or Timer H (64*T1) fires (RFC 3261
# §17.2.1), and the stranger never ACKs. Virtual time: it costs nothing.
WINDOW = 64 * T1 + 1.0


def _answers(capture: list[CapturedDatagram], start: int, *, to: str = STRANGER[0]) -> list[bytes]:
    """The gateway's distinct responses to host ``to`` since ``start``, in order."""
    found: list[bytes] = []
    for datagram in capture[start:]:
        data = datagram.data
        to_stranger = datagram.src == GW and datagram.dst == (to, datagram.dst[1])
        to_stranger = to_stranger and (to != TRUNK[0] or datagram.dst[1] == 5071)
        if to_stranger and data.startswith(b"SIP/") and data not in found:
            found.append(data)
    return found


async def test_mutated_sip_and_media_do_not_hurt_an_established_call(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    # The stream takes hours of virtual time: no timeout may end the call meanwhile.
    env = await start_b2bua(
        nursery,
        tmp_path,
        voipgw_seed,
        alice_auto=None,
        inactivity_timeout=10**7,
        hold_timeout=10**7,
    )
    call = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=simple_sdp("127.0.0.1", CALLER_PORT))
    leg_b = await env.alice.next_call()
    offered = parse_sdp_untrusted(leg_b.invite.body).media[0]
    await leg_b.answer(200, sdp=simple_sdp("127.0.0.1", CALLEE_PORT))
    final = await call.final()
    assert final.status == 200
    answered = parse_sdp_untrusted(final.body).media[0]
    sockets = [await bind(port) for port in (CALLER_PORT, CALLER_PORT + 1)]
    sockets += [await bind(port) for port in (CALLEE_PORT, CALLEE_PORT + 1)]
    caller, caller_rtcp, callee, callee_rtcp = sockets
    stranger_media = await bind(0)
    sockets.append(stranger_media)
    to_a = ("127.0.0.1", answered.port)  # the gateway's RTP port facing the caller
    to_b = ("127.0.0.1", offered.port)
    try:
        await _media_flows(caller, callee, to_a, to_b, first_seq=1)

        # -- SIP ------------------------------------------------------------------------------
        stranger = env.network.bind(STRANGER)
        seeds = _seeds(call.call_id)
        mutated = inputs("component sip", seeds, max(60, examples() // 10))
        outcomes: dict[str, int] = {}
        for number, raw in enumerate(mutated):
            data = _unique(raw, number)[:MAX_UDP]
            expected = _expected(data)
            start = len(env.network.capture)
            await stranger.sendto(data, GW)
            await trio.sleep(WINDOW)
            answers = _answers(env.network.capture, start)
            statuses = [int(answer[8:11]) for answer in answers]
            finals = [status for status in statuses if status >= 200]
            where = f"message {number}: {data[:3000]!r} got {statuses}"
            if expected == "none":
                # A response, an ACK, or a request with no Via to answer: dropped or absorbed.
                # (A response may make the gateway act, but never answer to the stranger.)
                assert statuses == [], where
            elif expected == "final":
                assert len(finals) == 1, where
            else:
                assert finals == [int(expected)], where
                reason = answers[-1].split(b"\r\n", 1)[0][12:]
                assert reason.strip(), where  # the status line names the defect
            key = expected if expected != "final" else f"final {finals[0]}"
            outcomes[key] = outcomes.get(key, 0) + 1
        assert outcomes.get("400", 0) > len(mutated) // 10, outcomes  # the mutations bit
        print("component sip outcomes:", outcomes)

        # -- SDP: a trunk's INVITEs with mutated offers, to a number nobody has ------------------
        # The trunk is known by its address and is not challenged, so the offer is read: one
        # our SDP parser refuses must get 488 with the reason, any other a final answer.
        trunk_side = env.network.bind((TRUNK[0], 5071))
        offers = inputs("component sdp", [SDP, *SDP_OFFERS], max(30, examples() // 20))
        sdp_outcomes: dict[str, int] = {}
        for number, offer in enumerate(offers):
            body = offer[: MAX_UDP - 1000]  # room for the headers in one datagram
            data = _unique(_trunk_invite(body), number)
            try:
                parse_sdp_untrusted(body)
            except SdpError:
                expected = "488"
            else:
                expected = "final"
            start = len(env.network.capture)
            await trunk_side.sendto(data, GW)
            await trio.sleep(WINDOW)
            answers = _answers(env.network.capture, start, to=TRUNK[0])
            finals = [int(answer[8:11]) for answer in answers if answer[8:9] != b"1"]
            where = f"offer {number}: {body[:3000]!r} got {finals}"
            assert len(finals) == 1, where
            if expected == "488":
                assert finals == [488], where
                assert b"\r\nWarning: 399 " in answers[-1], where  # the reason, RFC 3261 §20.43
            key = "488" if expected == "488" else f"final {finals[0]}"
            sdp_outcomes[key] = sdp_outcomes.get(key, 0) + 1
        assert sdp_outcomes.get("488", 0) > len(offers) // 10, sdp_outcomes
        print("component sdp outcomes:", sdp_outcomes)

        # -- media: mutated RTP, RTCP and STUN at the call's ports ------------------------------
        packets = [rtp(1, 0x55, 0xA), sender_report(0xA, 10), RFC5769_REQUEST]
        garbage = inputs("component media", packets, max(60, examples() // 10))
        rng = random.Random(voipgw_seed)
        targets = [
            to_a,
            to_b,
            ("127.0.0.1", rtcp_port(answered)),
            ("127.0.0.1", rtcp_port(offered)),
        ]
        phones = (caller, callee, caller_rtcp, callee_rtcp)
        for number, packet in enumerate(garbage):
            sender = rng.choice((*phones, stranger_media))
            await sender.sendto(packet[:MAX_UDP], rng.choice(targets))
            if number % 20 == 19:
                # Paced, and what was relayed to the phones read, so that no socket buffer
                # overflows: a datagram the kernel drops would prove nothing.
                await trio.sleep(0.02)
                await _drain(phones)
        await trio.sleep(1.0)
        await _drain(phones)

        # -- the gateway still serves, the call still carries media and hangs up cleanly --------
        options = _request("OPTIONS", "sip:127.0.0.1:5060")
        start = len(env.network.capture)
        await stranger.sendto(_unique(options, 10**6), GW)
        await trio.sleep(1.0)
        answers = _answers(env.network.capture, start)
        assert [answer[:15] for answer in answers] == [b"SIP/2.0 200 OK\r"]
        await _media_flows(caller, callee, to_a, to_b, first_seq=1000)
        assert env.calls == 1
        assert (await call.bye()).status == 200
        await eventually(lambda: env.calls == 0)
    finally:
        for sock in sockets:
            sock.close()
    assert env.gateway.endpoint.statistics.internal_errors == 0
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []


async def _drain(sockets: tuple[trio.socket.SocketType, ...]) -> None:
    """Read whatever is queued on ``sockets``."""
    for sock in sockets:
        with trio.move_on_after(0.01):  # virtual time: passes once nothing is left to read
            while True:
                await sock.recv(65536)


async def _media_flows(
    caller: trio.socket.SocketType,
    callee: trio.socket.SocketType,
    to_a: tuple[str, int],
    to_b: tuple[str, int],
    *,
    first_seq: int,
) -> None:
    """RTP from each phone reaches the other through the gateway (earlier datagrams that are
    still queued, garbage relayed as it came, are skipped)."""
    for sender, receiver, target, ssrc in (
        (caller, callee, to_a, 0xA),
        (callee, caller, to_b, 0xB),
    ):
        wanted = {rtp(seq, 0x11, ssrc) for seq in range(first_seq, first_seq + 3)}
        for packet in sorted(wanted):
            await sender.sendto(packet, target)
        with trio.fail_after(5):
            while wanted:
                wanted.discard(await receiver.recv(2048))
