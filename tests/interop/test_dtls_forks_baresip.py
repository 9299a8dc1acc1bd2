"""A call forked to two DTLS-SRTP phones of one account (docs/media_security.md, "Forked
callees"): two baresips with ``mediaenc=dtls_srtp`` registered as bob, both left ringing
(``answermode=manual``); the second one answers. Our one offer went to both (RFC 3261 §16.7),
so they share the gateway's B ports. baresip 1.0 starts its handshakes (it answers
``a=setup:active``, RFC 5763 §5: it is the DTLS client) as it answers, so its ClientHellos reach
the gateway with its 200, often before the call has read it: while both phones still ring.
They were dropped then (no leg to give them to), and the handshakes waited for their resend, 1 s
(RFC 6347 §4.2.4.1). Now they are kept apart by source and fed to the answering phone's
handshakes once its answer gives its address: one ClientHello per port, none resent, and audio
both ways; with media workers too. (A phone that begins its handshake while it rings, before
another fork answers, is the component tests' case: baresip does not.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.interop.harness import Baresip, GatewayProcess, tone_wav
from tests.interop.harness.capture import Capture, _tshark_fields, udp_filter

pytestmark = pytest.mark.interop

PASSWORDS = {"alice": "wonderland-f0rk", "bob": "builder-f0rk"}


def client_hello_ports(pcap: Path) -> list[int]:
    """The UDP source port of every datagram starting a DTLS handshake (ClientHello, RFC 6347
    §4.2: handshake type 1), in capture order."""
    rows = _tshark_fields(
        pcap, [], ["udp.srcport"], "dtls.handshake.type == 1", heuristics_first=True
    )
    return [int(port) for (port,) in rows]


def within(port: int, phone: Baresip) -> bool:
    return phone.rtp_ports[0] <= port <= phone.rtp_ports[1]


@pytest.mark.parametrize("workers", [0, 2], ids=["in-process", "media-workers"])
def test_the_fork_that_answers_is_keyed_by_its_first_client_hellos(
    tmp_path: Path, workers: int
) -> None:
    media = {"media": {"workers": workers}} if workers else {}
    with (
        GatewayProcess(
            tmp_path / "gw",
            accounts=PASSWORDS,
            digest_algorithms=("MD5",),  # baresip 1.0.0 fails on SHA-256 challenges
            settings=media,
        ) as gw,
        Baresip(
            tmp_path, "alice", source=tone_wav(tmp_path / "alice.wav", 1000.0), mediaenc="dtls_srtp"
        ) as alice,
        Baresip(
            tmp_path, "bob1", source=tone_wav(tmp_path / "bob1.wav", 440.0), mediaenc="dtls_srtp"
        ) as bob1,
        Baresip(
            tmp_path, "bob2", source=tone_wav(tmp_path / "bob2.wav", 440.0), mediaenc="dtls_srtp"
        ) as bob2,
        Capture(tmp_path / "forks.pcap", udp_filter(bob1.rtp_ports, bob2.rtp_ports)) as capture,
    ):
        for name in PASSWORDS:
            gw.cli("accounts", "set", name, "--media-policy", "dtls")
        alice.register(gw.uri("alice"), PASSWORDS["alice"], mediaenc="dtls_srtp")
        for phone in (bob1, bob2):
            phone.register(
                gw.uri("bob"), PASSWORDS["bob"], mediaenc="dtls_srtp", answermode="manual"
            )
        alice.dial(gw.uri("bob"))
        for phone in (bob1, bob2):
            phone.wait_event("CALL_INCOMING", timeout=10)
        bob2.accept()
        alice.wait_established(timeout=10)
        bob2.wait_established(timeout=10)
        bob1.wait_closed(timeout=10)  # CANCELled
        alice.wait_audio(1.0, timeout=20)
        bob2.wait_audio(1.0, timeout=20)
        alice.hangup()
        alice.wait_closed()
        bob2.wait_closed()
        capture.stop()
        hellos = [port for port in client_hello_ports(capture.path) if within(port, bob2)]

    # One ClientHello per port (RTP and RTCP: no rtcp-mux, RFC 5764 §4.1), none resent.
    assert len(hellos) == 2 and len(set(hellos)) == 2, hellos
