"""DTLS-SRTP with a real peer (issue #6): baresip with ``mediaenc=dtls_srtp``, registered over
UDP, calls a sipp trunk that speaks plain RTP and echoes it. The phone's leg is
UDP/TLS/RTP/SAVP keyed by a DTLS handshake on the media port, the trunk's RTP/AVP with no DTLS
attribute; the phone hears its own tone come back through the relay, which decrypts with the
DTLS leg's keys and sends the trunk plain PCMU."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.interop.harness import (
    LOOPBACK,
    Baresip,
    GatewayProcess,
    SippUas,
    analyse_tone,
    tone_wav,
)

pytestmark = pytest.mark.interop

PASSWORD = "wonderland-d71s"
TONE = 1000.0
TRUNK_NUMBER = "+4989555"


@pytest.mark.parametrize(
    ("feedback", "scenario", "trunk_profile"),
    [
        # Default: the trunk is offered the plain profile, which every SIP device takes.
        (None, "uas_answer.xml", "RTP/AVP"),
        # A trunk configured with offer_rtcp_feedback gets the caller's feedback profile.
        (True, "uas_answer_avpf.xml", "RTP/AVPF"),
    ],
)
def test_dtls_phone_over_udp_calls_a_plain_rtp_trunk(
    tmp_path: Path, feedback: bool | None, scenario: str, trunk_profile: str
) -> None:
    with SippUas(scenario, workdir=tmp_path, rtp_echo=True) as trunk:
        trunks = (
            "[[trunks]]\n"
            'name = "carrier"\n'
            f'address = "{trunk.config_address}"\n'
            'prefixes = ["+49"]\n'
            "allowed_sources = []\n"
            'media_policy = "rtp-only"\n'
        )
        if feedback is not None:
            trunks += f"offer_rtcp_feedback = {str(feedback).lower()}\n"
        with (
            GatewayProcess(
                tmp_path / "gw",
                accounts={"alice": PASSWORD},
                digest_algorithms=("MD5",),
                settings={"gateway": {"log_level": "debug", "domains": [LOOPBACK]}},
                extra_toml=trunks,
            ) as gw,
            Baresip(
                tmp_path,
                "alice",
                source=tone_wav(tmp_path / "alice.wav", TONE),
                mediaenc="dtls_srtp",
                sip_trace=True,
            ) as alice,
        ):
            alice.register(gw.uri("alice"), PASSWORD, mediaenc="dtls_srtp")
            alice.dial(gw.uri(TRUNK_NUMBER))
            alice.wait_established()
            alice.wait_audio(1.0, timeout=20)
            alice.hangup()
            alice.wait_closed()
        result = trunk.wait()
    result.check()

    (invite,) = result.received("INVITE ")
    media_line = re.search(r"^m=audio .*$", invite, re.MULTILINE)
    # baresip offered UDP/TLS/RTP/SAVPF; baresip's answer keeps that profile (RFC 3264 §6)
    # whatever the trunk was offered.
    assert media_line is not None and media_line[0].split()[2] == trunk_profile
    for attribute in ("a=fingerprint", "a=setup", "a=tls-id", "a=crypto"):
        assert attribute not in invite
    answers = [
        entry.message
        for entry in alice.sip_messages("SIP/2.0 200 ")
        if re.search(r"^CSeq: \d+ INVITE$", entry.message, re.MULTILINE)
    ]
    assert len(answers) == 1, answers
    assert re.search(r"^m=audio \d+ UDP/TLS/RTP/SAVPF ", answers[0], re.MULTILINE)
    assert re.search(r"^a=fingerprint:sha-256 ", answers[0], re.MULTILINE)
    assert re.search(r"^a=setup:(active|passive)", answers[0], re.MULTILINE)
    # The phone decrypted what came back: its own tone, echoed by the trunk.
    report = analyse_tone(alice.received_audio())
    assert report.dominant_frequency == pytest.approx(TONE, abs=3)
    assert report.power_share > 0.9
