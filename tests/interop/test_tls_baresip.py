"""baresip registered over TLS calls a user on UDP through the gateway, and is called back over
the connection it registered on (issue #4 item 6, first bullet; item 4).

alice's baresip registers with ``;transport=tls`` and presents a device certificate; bob's
registers over UDP. Each phone sends a tone (alice 1000 Hz, bob 440 Hz) and records what it
receives: a call passes when each heard the other's tone. The gateway's debug log shows exactly
one TLS handshake, the one alice opened, and a capture of the call to alice shows TLS records
from the gateway's TLS port and no INVITE in clear to any of her ports: the call went back over
her registration's connection (phones behind NAT accept no inbound TLS), not over a new one.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import require_peer
from tests.interop.harness import Baresip, Capture, analyse_tone, tone_wav
from tests.interop.harness.capture import sip_requests
from tests.interop.harness.pki import TestPki
from tests.interop.harness.tls_gateway import TlsGatewayProcess

pytestmark = pytest.mark.interop

PASSWORDS = {"alice": "wonderland-tls", "bob": "builder-udp"}
TONES = {"alice": 1000.0, "bob": 440.0}
AUDIO_SECONDS = 1.0


def assert_heard(phone: Baresip, frequency: float) -> None:
    report = analyse_tone(phone.received_audio())
    assert report.dominant_frequency == pytest.approx(frequency, abs=3)
    assert report.power_share > 0.9
    assert report.seconds >= 0.8 * AUDIO_SECONDS


def tls_records_from(pcap: Path, port: int) -> int:
    """TLS application-data records sent from TCP ``port`` in ``pcap``."""
    result = subprocess.run(
        [
            require_peer("tshark"),
            "-n",
            "-r",
            str(pcap),
            "-d",
            f"tcp.port=={port},tls",
            "-Y",
            f"tcp.srcport == {port} && tls.record.content_type == 23",
            "-T",
            "fields",
            "-e",
            "frame.number",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return len(result.stdout.split())


def test_tls_phone_calls_a_udp_phone_and_is_called_back_over_its_connection(
    tmp_path: Path,
) -> None:
    device = TestPki(tmp_path / "pki").ca("Phone Vendor CA").issue("0004f2aabbcc")
    with (
        TlsGatewayProcess(
            tmp_path / "gw",
            accounts=PASSWORDS,
            digest_algorithms=("MD5",),  # baresip 1.0.0 fails on SHA-256 challenges
            settings={"gateway": {"log_level": "debug"}},
        ) as gateway,
        Baresip(
            tmp_path,
            "alice",
            source=tone_wav(tmp_path / "alice.wav", TONES["alice"]),
            tls_certificate=device.combined,
        ) as alice,
        Baresip(tmp_path, "bob", source=tone_wav(tmp_path / "bob.wav", TONES["bob"])) as bob,
    ):
        alice.register_over_tls("127.0.0.1", gateway.tls_port, PASSWORDS[alice.name])
        gateway.wait_for_log(r"registered: 1 binding\(s\) for sip:alice@\S+ via tls:")
        bob.register(gateway.uri("bob"), PASSWORDS["bob"])

        # Everything to or from alice's own SIP ports (UDP/TCP, TLS) and the gateway's TLS port,
        # started before the first call so it is surely capturing by the second.
        alice_ports = (alice.sip_port, alice.sip_port + 1)
        capture_filter = f"tcp port {gateway.tls_port} or " + " or ".join(
            f"port {port}" for port in alice_ports
        )
        with Capture(tmp_path / "calls.pcap", capture_filter) as capture:
            # alice (TLS) calls bob (UDP).
            alice.dial(f"sip:bob@127.0.0.1:{gateway.tls_port};transport=tls")
            alice.wait_established()
            bob.wait_established()
            alice.wait_audio(AUDIO_SECONDS)
            bob.wait_audio(AUDIO_SECONDS)
            alice.hangup()
            alice.wait_closed()
            bob.wait_closed()
            assert_heard(alice, TONES["bob"])
            assert_heard(bob, TONES["alice"])

            # bob (UDP) calls alice: the INVITE reaches her over the connection she registered on.
            bob.dial(gateway.uri("alice"))
            incoming = alice.wait_established()
            bob.wait_established()
            assert incoming["peeruri"].startswith("sip:bob@")
            bob.hangup()
            bob.wait_closed()
            alice.wait_closed()
        # No request reached alice in clear; the capture did see the TLS traffic.
        assert sip_requests(capture.path, alice_ports, "INVITE") == {}
        assert tls_records_from(capture.path, gateway.tls_port) > 0

    log = gateway.log_text()
    handshakes = re.findall(r"tls: (from|to) 127\.0\.0\.1:\d+: TLSv1\.[23] \S+, peer cert.*", log)
    assert len(handshakes) == 1, handshakes
    assert handshakes[0] == "from"
    assert f"peer certificate sha256 {device.fingerprint}" in log
