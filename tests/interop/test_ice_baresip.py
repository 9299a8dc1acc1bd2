"""ICE-lite with a real full ICE agent: baresip 1.0.0 with its ``ice`` module
(``;medianat=ice``) and DTLS-SRTP (``;mediaenc=dtls_srtp``, UDP/TLS/RTP/SAVPF) calls a sipp
trunk that speaks plain RTP and echoes it. With rtcp-mux (WebRTC's way) and without (RTCP
is ICE component 2), and with the relay in media worker processes (a worker answers the checks).

baresip is the controlling agent: it runs connectivity checks against the host candidates of
our ice-lite answer, nominates a pair, then runs DTLS on it; the gateway answers the checks,
sends the leg's media to the nominated address and keys the leg from the handshake. The
evidence: baresip's log says its checks completed, the capture shows our STUN success
responses, the DTLS handshake and SRTP both ways between baresip and the gateway, and baresip
hears its own tone come back through the relay and the trunk.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from tests.interop.harness import (
    Baresip,
    Capture,
    GatewayProcess,
    SippUas,
    analyse_tone,
    tone_wav,
    udp_filter,
)
from tests.interop.harness.capture import _tshark_fields

pytestmark = pytest.mark.interop

PASSWORD = "wonderland-1ce"
TONE = 1000.0
TRUNK_NUMBER = "+4989555"
ICE_MODULE = Path("/usr/lib/baresip/modules/ice.so")

Address = tuple[str, int]


def _stun(pcap: Path) -> Counter[tuple[Address, Address, str]]:
    """STUN messages per (source, destination, message type) in ``pcap``."""
    rows = _tshark_fields(
        pcap,
        [],
        ["ip.src", "udp.srcport", "ip.dst", "udp.dstport", "stun.type"],
        "stun",
        heuristics_first=True,
    )
    return Counter(((s, int(sp)), (d, int(dp)), kind) for s, sp, d, dp, kind in rows)


def _flows(pcap: Path, display_filter: str) -> Counter[tuple[Address, Address]]:
    rows = _tshark_fields(
        pcap,
        [],
        ["ip.src", "udp.srcport", "ip.dst", "udp.dstport"],
        display_filter,
        heuristics_first=True,
    )
    return Counter(((s, int(sp)), (d, int(dp))) for s, sp, d, dp in rows)


def _inside(address: Address, ports: tuple[int, int]) -> bool:
    return ports[0] <= address[1] <= ports[1]


@pytest.mark.skipif(not ICE_MODULE.exists(), reason="baresip's ice module is not installed")
@pytest.mark.parametrize(
    ("rtcp_mux", "workers"),
    [(True, 1), (False, 1), (True, 2)],
    ids=["rtcp-mux", "rtcp-port", "rtcp-mux-media-workers"],
)
def test_baresip_with_ice_and_dtls_gets_media_through_an_ice_lite_gateway(
    tmp_path: Path, rtcp_mux: bool, workers: int
) -> None:
    with SippUas("calls/uas_answer_one_reinvite.xml", workdir=tmp_path, rtp_echo=True) as trunk:
        trunks = (
            "[[trunks]]\n"
            'name = "carrier"\n'
            f'address = "{trunk.config_address}"\n'
            'prefixes = ["+49"]\n'
            "allowed_sources = []\n"
            'media_policy = "rtp-only"\n'
        )
        with (
            GatewayProcess(
                tmp_path / "gw",
                accounts={"alice": PASSWORD},
                digest_algorithms=("MD5",),
                settings={"gateway": {"log_level": "debug"}, "media": {"workers": workers}},
                extra_toml=trunks,
            ) as gw,
            Baresip(
                tmp_path,
                "alice",
                source=tone_wav(tmp_path / "alice.wav", TONE),
                mediaenc="dtls_srtp",
                extra_config="module\t\tice.so\n",
                sip_trace=True,
                rtcp_mux=rtcp_mux,
            ) as alice,
        ):
            alice.register(gw.uri("alice"), PASSWORD, mediaenc="dtls_srtp", params=";medianat=ice")
            media = udp_filter(gw.media_ports, alice.rtp_ports)
            with Capture(tmp_path / "ice.pcap", media) as capture:
                alice.dial(gw.uri(TRUNK_NUMBER))
                alice.wait_established()
                alice.wait_for(r"connectivity check is complete", timeout=20)
                alice.wait_audio(1.0, timeout=20)
                alice.hangup()
                alice.wait_closed()
        result = trunk.wait()
    result.check()

    # The trunk saw neither ICE nor DTLS, also in the re-INVITE baresip sent once its checks
    # were done (RFC 8445 §8.1.2: updated default candidates), which the gateway relays.
    invites = result.received("INVITE ")
    assert len(invites) == 2
    for invite in invites:
        for attribute in ("a=ice-", "a=candidate", "a=remote-candidates", "a=fingerprint"):
            assert attribute not in invite
    # Our answer to baresip: ice-lite, our credentials, host candidates, DTLS.
    answers = [
        entry.message
        for entry in alice.sip_messages("SIP/2.0 200 ")
        if re.search(r"^CSeq: \d+ INVITE$", entry.message, re.MULTILINE)
    ]
    assert answers, "baresip got no 200 to its INVITE"
    answer = answers[0]
    assert re.search(r"^a=ice-lite\r?$", answer, re.MULTILINE)
    ufrag = re.search(r"^a=ice-ufrag:(\S+)", answer, re.MULTILINE)
    pwd = re.search(r"^a=ice-pwd:(\S+)", answer, re.MULTILINE)
    assert ufrag is not None and len(ufrag[1]) >= 4
    assert pwd is not None and len(pwd[1]) >= 22
    assert re.search(r"^a=candidate:1 1 UDP 2130706431 127\.0\.0\.1 \d+ typ host", answer, re.M)
    # One component with rtcp-mux (RFC 5761 §5.1.3), the RTCP port as component 2 without.
    assert bool(re.search(r"^a=rtcp-mux\r?$", answer, re.M)) == rtcp_mux
    assert bool(re.search(r"^a=candidate:1 2 UDP ", answer, re.M)) != rtcp_mux
    assert re.search(r"^m=audio \d+ UDP/TLS/RTP/SAVPF ", answer, re.MULTILINE)
    # The ice-pwd is a credential: never in the gateway's log.
    assert pwd[1] not in gw.log_text()

    # baresip's side: its checks succeeded (libre's ICE log line).
    assert re.search(r"ice: \S+: connectivity check is complete", alice.output())
    # On the wire: baresip's checks and our success responses (0x0101) on the gateway's ports,
    # a DTLS handshake, and SRTP both ways.
    stun = _stun(capture.path)
    responses = [
        (src, dst)
        for (src, dst, kind), n in stun.items()
        if kind == "0x0101" and _inside(src, gw.media_ports) and _inside(dst, alice.rtp_ports)
    ]
    assert responses, stun
    dtls = _flows(capture.path, "dtls.handshake")
    assert any(_inside(src, gw.media_ports) for src, _ in dtls), dtls
    assert any(_inside(src, alice.rtp_ports) for src, _ in dtls), dtls
    flows = _flows(capture.path, "udp and not stun and not dtls")
    to_gateway = sum(
        n
        for (src, dst), n in flows.items()
        if _inside(src, alice.rtp_ports) and _inside(dst, gw.media_ports)
    )
    to_alice = sum(
        n
        for (src, dst), n in flows.items()
        if _inside(src, gw.media_ports) and _inside(dst, alice.rtp_ports)
    )
    assert to_gateway >= 40 and to_alice >= 40, flows
    # Nothing went to baresip's SDP address (its default candidate on another interface)
    # before its checks selected 127.0.0.1: media, DTLS and all, only to checked addresses.
    everything = _flows(capture.path, "udp")
    assert all(dst[0] == "127.0.0.1" for src, dst in everything if _inside(src, gw.media_ports))
    # The phone decrypted what came back: its own tone, echoed by the trunk.
    report = analyse_tone(alice.received_audio())
    assert report.dominant_frequency == pytest.approx(TONE, abs=3)
    assert report.power_share > 0.9
