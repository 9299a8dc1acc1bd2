"""Best effort behind a forking proxy, with real peers on loopback (docs/media_security.md "One
phone in clear, another encrypted"): baresip (``srtp-mand``, over TLS) calls a TLS trunk whose
media policy is ``best-effort``, so the gateway offers it RTP/AVP with a=crypto (RFC 8643). A
sipp UAS behind stunnel stands for a forking proxy and two phones (RFC 3261 §16.7): phone 1
answers early, phone 2 answers 200 in another early dialog (§12.1.2), one of them in clear and
the other with a=crypto. Debian's sipp sends no media and has no SRTP, so each phone's media
2's RTP port is a socket of this test: what the relay sends there, baresip's tone relayed,
must be as phone 2's answer says, SRTP under our offer's key or plain RTP.

Before session 53 the answer in clear kept the line as the early answer left it: phone 2,
answering with a key after phone 1's 183 in clear, was sent RTP (and its SRTP passed to the
caller as RTP); answering in clear after phone 1's keyed 183, it was sent SRTP under the early
phone's context.
"""

from __future__ import annotations

import base64
import re
import socket
import struct
import time
from pathlib import Path

import pylibsrtp
import pytest

from tests.interop.harness import LOOPBACK
from tests.interop.harness.ports import free_port_block
from tests.interop.sdes_tls_trunk import alice_calls_the_tls_trunk

pytestmark = pytest.mark.interop

SUITE = "AES_CM_128_HMAC_SHA1_80"
PCMU_PAYLOAD = 160  # 20 ms of G.711 (baresip's ptime)
TAG = 10  # AES_CM_128_HMAC_SHA1_80's authentication tag (RFC 4568 §6.2)
PACKETS = 25  # half a second of audio


def offered_key(invite: str) -> bytes:
    """The key and salt of our INVITE's a=crypto line of :data:`SUITE`."""
    found = re.search(rf"^a=crypto:\d+ {SUITE} inline:([A-Za-z0-9+/=]+)", invite, re.MULTILINE)
    assert found is not None, invite
    return base64.b64decode(found.group(1))


def media_socket(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((LOOPBACK, port))
    return sock


def received(sock: socket.socket, count: int, timeout: float) -> list[bytes]:
    """Up to ``count`` datagrams that reach ``sock`` within ``timeout`` seconds."""
    got: list[bytes] = []
    deadline = time.monotonic() + timeout
    while len(got) < count and (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            got.append(sock.recv(2048))
        except TimeoutError:
            break
    return got


@pytest.mark.parametrize(
    ("scenario", "phone2_encrypted"),
    [("calls/uas_fork_clear_then_sdes.xml", True), ("calls/uas_fork_sdes_then_clear.xml", False)],
    ids=["clear-then-sdes", "sdes-then-clear"],
)
def test_the_phone_that_answers_200_gets_media_as_its_own_answer_says(
    tmp_path: Path, scenario: str, phone2_encrypted: bool
) -> None:
    # Each phone's RTP port and the RTCP port after it (RFC 3605 §2.1: neither answer has
    # rtcp-mux or a=rtcp): phone 1's early RTCP must not reach phone 2's RTP socket.
    phones = free_port_block(4)
    ports = {"phone1_port": str(phones), "phone2_port": str(phones + 2)}
    with (
        media_socket(phones + 2) as phone2,
        alice_calls_the_tls_trunk(tmp_path, scenario, media_policy="best-effort", keys=ports) as (
            gw,
            alice,
            trunk,
        ),
    ):
        to_phone2 = received(phone2, PACKETS, timeout=10)
        alice.hangup()
        alice.wait_closed()
        result = trunk.wait(timeout=15)
        log = gw.log_text()
    result.check()  # phone 2's 200 was ACKed, then the caller's BYE came
    (invite,) = result.received("INVITE ")
    assert " RTP/AVP " in invite and f" {SUITE} " in invite  # best effort: RFC 8643's offer
    assert len(to_phone2) == PACKETS, (len(to_phone2), log[-3000:])
    if phone2_encrypted:
        checker = pylibsrtp.Session(
            pylibsrtp.Policy(
                key=offered_key(invite),
                ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND,
                srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
            )
        )
        for packet in to_phone2:
            assert len(packet) == 12 + PCMU_PAYLOAD + TAG
            plain = checker.unprotect(packet)  # raises unless under our offer's key
            assert len(plain) == 12 + PCMU_PAYLOAD
    else:
        for packet in to_phone2:
            # Plain RTP (RFC 3550 §5.1): version 2, PCMU, the tone's 20 ms, no SRTP tag.
            first, payload_type = struct.unpack_from("!BB", packet)
            assert first >> 6 == 2 and payload_type & 0x7F == 0
            assert len(packet) == 12 + PCMU_PAYLOAD, len(packet)
