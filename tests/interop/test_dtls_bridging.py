"""DTLS-SRTP legs bridged to other kinds of leg, with real peers (issue #6).

- baresip with ``mediaenc=dtls_srtp`` over UDP (account policy ``dtls``) calls baresip
  registered over TLS with ``mediaenc=srtp-mand`` (account policy ``sdes``): the caller's leg is
  keyed by a DTLS handshake on the media port, the callee's by a=crypto over TLS; the relay
  decrypts with one leg's keys and encrypts with the other's, and each phone hears the other's
  tone (alice 1000 Hz, bob 440 Hz). baresip's dtls_srtp offers UDP/TLS/RTP/SAVPF; the gateway
  offers bob the plain profile RTP/SAVP (``[media] offer_rtcp_feedback`` is false by default),
  which ``srtp-mand`` requires (it answers RTP/SAVPF with 488).
- linphonec with mandatory ``media_encryption=dtls`` calls a sipp trunk that speaks plain RTP
  and echoes it: the call connects, a capture shows SRTP between the gateway and linphone and
  the plain PCMU tone between the gateway and the trunk, and linphone hears its own tone.
  linphone does not use rtcp-mux, so its RTCP port runs a DTLS handshake of its own with the
  gateway's (RFC 5764 §4.1), and `voipgw calls` says the RTCP port is keyed by it.

baresip 1.0.0 answers only MD5 digest challenges, so the gateway offers MD5 alone; ``[gateway]
domains`` makes 127.0.0.1 ours on every port (linphonec registers its identity without one).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.interop.harness import (
    LOOPBACK,
    Baresip,
    Capture,
    SippUas,
    analyse_tone,
    tone_wav,
    udp_filter,
)
from tests.interop.harness.audio import ToneReport, g711_wav
from tests.interop.harness.capture import Address, _tshark_fields, one_flow
from tests.interop.harness.linphone import Linphone, LinphoneAccount
from tests.interop.harness.sip_text import audio_media_line
from tests.interop.harness.tls_gateway import TlsGatewayProcess

pytestmark = pytest.mark.interop

PASSWORDS = {"alice": "wonderland-b41d", "bob": "builder-7e2c"}
TONES = {"alice": 1000.0, "bob": 440.0}
#: A number the trunk serves (prefix +49) and no account is named like.
TRUNK_NUMBER = "+4989555"
# One second of audio: two of sox's 4096-sample analysis windows at 8000 Hz.
AUDIO_SECONDS = 1.0
# Phones send a 20 ms packet 50 times a second; a capture cut at either edge of a one-second
# stretch still holds 40.
MIN_PACKETS = 40
PCMU_PAYLOAD = 160  # 20 ms of G.711 at 8000 Hz
# DTLS-SRTP profiles a phone may pick (RFC 5764 §4.1.2): AES-CM with an 80- or 32-bit
# HMAC-SHA1 tag, or AES-GCM with a 16-octet tag (RFC 7714 §14.2).
SRTP_TAG_LENGTHS = (4, 10, 16)


def _gateway(workdir: Path, accounts: dict[str, str], extra_toml: str = "") -> TlsGatewayProcess:
    """A gateway with UDP, TCP and TLS listeners and the sdes and dtls key exchanges."""
    return TlsGatewayProcess(
        workdir,
        plugins=("udp", "tcp", "tls", "sdes", "dtls"),
        accounts=accounts,
        digest_algorithms=("MD5",),
        settings={"gateway": {"log_level": "debug", "domains": [LOOPBACK]}},
        extra_toml=extra_toml,
    )


def _assert_tone(report: ToneReport, frequency: float, *, share: float = 0.9) -> None:
    assert report.dominant_frequency == pytest.approx(frequency, abs=3)
    assert report.power_share > share
    assert report.seconds >= 0.8 * AUDIO_SECONDS


def _payloads_by_seq(
    pcap: Path, ports: list[int]
) -> dict[tuple[Address, Address], dict[int, bytes]]:
    """The payload of every RTP or SRTP packet on ``ports`` per (source, destination) and
    sequence number, SRTP's encrypted payload followed by its authentication tag.

    tshark knows the flows keyed by the DTLS handshake it saw (use_srtp, RFC 5764 §4.1) for
    SRTP and shows their payload as srtp.enc_payload and srtp.auth_tag, not rtp.payload.
    Packets without payload (linphone's RTP keep-alives before media flows, whose sequence
    numbers repeat those of the first audio packets) are left out.
    """
    fields = ["ip.src", "udp.srcport", "ip.dst", "udp.dstport", "rtp.seq"]
    fields += ["rtp.payload", "srtp.enc_payload", "srtp.auth_tag"]
    flows: dict[tuple[Address, Address], dict[int, bytes]] = {}
    for src, sport, dst, dport, seq, *parts in _tshark_fields(
        pcap, ports, fields, "rtp.version == 2 && !stun"
    ):
        payload = bytes.fromhex("".join(parts).replace(":", ""))
        if payload:
            flow = flows.setdefault(((src, int(sport)), (dst, int(dport))), {})
            flow.setdefault(int(seq), payload)
    return flows


def _assert_srtp_of(srtp: dict[int, bytes], plain: dict[int, bytes]) -> None:
    """``srtp`` carries the same packets as ``plain`` (same sequence numbers: the relay keeps
    the RTP header), each encrypted and followed by an SRTP authentication tag."""
    common = sorted(srtp.keys() & plain.keys())
    assert len(common) >= MIN_PACKETS, (len(srtp), len(plain), len(common))
    for seq in common:
        assert len(plain[seq]) == PCMU_PAYLOAD, seq
        assert len(srtp[seq]) - PCMU_PAYLOAD in SRTP_TAG_LENGTHS, (seq, len(srtp[seq]))
        # Encrypted: AES-CM and GCM are stream ciphers, a cleartext payload would show up byte
        # for byte.
        assert srtp[seq][:PCMU_PAYLOAD] != plain[seq], seq
        assert plain[seq][40:80] not in srtp[seq], seq


# --- 1. DTLS phone over UDP <-> SDES phone over TLS ------------------------------------------


def test_dtls_phone_over_udp_calls_an_sdes_phone_over_tls(tmp_path: Path) -> None:
    with (
        _gateway(tmp_path / "gw", PASSWORDS) as gw,
        Baresip(
            tmp_path,
            "alice",
            source=tone_wav(tmp_path / "alice.wav", TONES["alice"]),
            mediaenc="dtls_srtp",
            sip_trace=True,
        ) as alice,
        Baresip(
            tmp_path,
            "bob",
            source=tone_wav(tmp_path / "bob.wav", TONES["bob"]),
            mediaenc="srtp-mand",
            sip_trace=True,
        ) as bob,
    ):
        gw.cli("accounts", "set", "alice", "--media-policy", "dtls")
        gw.cli("accounts", "set", "bob", "--media-policy", "sdes")
        alice.register(gw.uri("alice"), PASSWORDS["alice"], mediaenc="dtls_srtp")
        bob.register_over_tls(LOOPBACK, gw.tls_port, PASSWORDS[bob.name], mediaenc="srtp-mand")

        alice.dial(gw.uri("bob"))
        alice.wait_established()
        bob.wait_established()
        alice.wait_audio(AUDIO_SECONDS, timeout=20)
        bob.wait_audio(AUDIO_SECONDS, timeout=20)
        alice.hangup()
        alice.wait_closed()
        bob.wait_closed()

    # alice's leg: the gateway answered her DTLS offer with its own fingerprint.
    answer = alice.answer_to_invite()
    assert answer.transport == "UDP"
    assert re.match(r"m=audio \d+ UDP/TLS/RTP/SAVPF ", audio_media_line(answer.message))
    assert re.search(r"^a=fingerprint:sha-256 ", answer.message, re.MULTILINE)
    assert re.search(r"^a=setup:(active|passive)", answer.message, re.MULTILINE)
    assert "a=crypto" not in answer.message
    # bob's leg: offered over TLS as RTP/SAVP (no feedback profile, no a=rtcp-fb) with
    # a=crypto and nothing of DTLS.
    (offer,) = bob.sip_messages("INVITE ")
    assert offer.transport == "TLS"
    assert audio_media_line(offer.message).split()[2] == "RTP/SAVP"
    assert "a=rtcp-fb" not in offer.message
    assert re.search(r"^a=crypto:\d+ \S+ inline:", offer.message, re.MULTILINE)
    assert "a=fingerprint" not in offer.message
    bob.wait_for(r"srtp: audio: SRTP is Enabled")
    # Audio both ways: each phone decrypted the other's tone, re-encrypted by the gateway.
    _assert_tone(analyse_tone(alice.received_audio()), TONES["bob"])
    _assert_tone(analyse_tone(bob.received_audio()), TONES["alice"])


# --- 2. linphonec with mandatory DTLS <-> plain RTP trunk ------------------------------------


def test_linphone_with_mandatory_dtls_calls_a_plain_rtp_trunk(tmp_path: Path) -> None:
    with SippUas("uas_answer.xml", workdir=tmp_path, rtp_echo=True) as trunk:
        trunks = (
            "[[trunks]]\n"
            'name = "carrier"\n'
            f'address = "{trunk.config_address}"\n'
            'prefixes = ["+49"]\n'
            "allowed_sources = []\n"
            'media_policy = "rtp-only"\n'
        )
        with _gateway(tmp_path / "gw", {"alice": PASSWORDS["alice"]}, trunks) as gw:
            gw.cli("accounts", "set", "alice", "--media-policy", "dtls")
            account = LinphoneAccount(
                f"sip:{LOOPBACK}:{gw.port}", f"sip:alice@{LOOPBACK}", PASSWORDS["alice"]
            )
            with Linphone(
                tmp_path,
                "alice",
                account=account,
                source=tone_wav(tmp_path / "alice.wav", TONES["alice"]),
                media_encryption="dtls",
            ) as alice:
                trunk_media = (trunk.media_port, trunk.media_port)
                media = udp_filter(
                    gw.media_ports, alice.rtp_ports, (trunk.media_port, trunk.media_port + 1)
                )
                with Capture(tmp_path / "media.pcap", media) as capture:
                    alice.call(gw.uri(TRUNK_NUMBER))
                    alice.wait_connected(timeout=20)
                    alice.wait_audio(AUDIO_SECONDS, timeout=20)
                    alice.terminate()
                    alice.wait_ended()
            calls = gw.cli_until(lambda out: "ended (" in out, "calls", "--recent", "1")
        result = trunk.wait()
    result.check()

    # The trunk's leg: plain RTP/AVP, nothing of DTLS or SDES.
    (invite,) = result.received("INVITE ")
    assert audio_media_line(invite).split()[2] == "RTP/AVP"
    for attribute in ("a=fingerprint", "a=setup", "a=tls-id", "a=crypto"):
        assert attribute not in invite
    # linphone's leg: it negotiated DTLS-SRTP with the gateway (its log holds both SDPs).
    alice_log = alice.log_path.read_text(errors="replace")
    assert re.search(r"m=audio \d+ UDP/TLS/RTP/SAVPF? ", alice_log)
    # linphone writes the hash name in capitals (RFC 8122 §5: case-insensitive).
    fingerprints = re.findall(r"a=fingerprint:sha-256 (\S+)", alice_log, re.IGNORECASE)
    assert len({value.upper() for value in fingerprints}) == 2, fingerprints
    assert "Negotiated media encryption is LinphoneMediaEncryptionDTLS" in alice_log
    if re.search(r"DTLS start stream .*RTCP mux is enabled", alice_log):
        # linphonec 5.3 (Debian 13) offers a=rtcp-mux and the gateway accepts it (RFC 5761):
        # one handshake keys SRTP and SRTCP on the one port (RFC 5764 §4.1).
        assert len(re.findall(r"^a=rtcp-mux", alice_log, re.MULTILINE)) >= 2  # offer, answer
        assert "RTCP on its own port" not in calls, calls
    else:
        # linphonec 5.1 (Debian 12) does not mux RTCP: its RTCP port ran a DTLS handshake of
        # its own with the gateway's RTCP port (RFC 5764 §4.1), and both ends keyed SRTCP from
        # it.
        assert "RTCP mux is disabled" in alice_log
        assert "DTLS RTCP Handshake successful" in alice_log
        assert "RTCP on its own port, keyed by its own handshake" in calls, calls

    # The same packets on both sides of the relay: SRTP on linphone's, the plain tone on the
    # trunk's, in both directions (the trunk echoes what it gets). Only even ports are decoded
    # as RTP, which keeps (S)RTCP on the odd ones out (RFC 3550 §11).
    ports = [
        *range(gw.media_ports[0] + gw.media_ports[0] % 2, gw.media_ports[1] + 1, 2),
        alice.rtp_port,
        trunk.media_port,
    ]
    flows = _payloads_by_seq(capture.path, ports)
    alice_rtp = (alice.rtp_port, alice.rtp_port)
    phone_to_gw = one_flow(flows, alice_rtp, gw.media_ports)
    gw_to_trunk = one_flow(flows, gw.media_ports, trunk_media)
    trunk_to_gw = one_flow(flows, trunk_media, gw.media_ports)
    gw_to_phone = one_flow(flows, gw.media_ports, alice_rtp)
    _assert_srtp_of(phone_to_gw, gw_to_trunk)
    _assert_srtp_of(gw_to_phone, trunk_to_gw)
    for name, plain in (("to-trunk", gw_to_trunk), ("from-trunk", trunk_to_gw)):
        payload = b"".join(plain[seq] for seq in sorted(plain))
        _assert_tone(analyse_tone(g711_wav(payload, tmp_path / f"{name}.wav")), TONES["alice"])
    # linphone decrypted what came back: its own tone, echoed by the trunk.
    _assert_tone(analyse_tone(alice.received_audio()), TONES["alice"], share=0.85)
