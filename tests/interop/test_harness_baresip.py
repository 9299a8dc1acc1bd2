"""The baresip driver and the tone helpers of the interop harness.

Two baresip instances call each other directly (no gateway): each sends its own tone and
records what it hears, and each must hear the other's tone. Then baresip registers to a
GatewayProcess with digest authentication (REGISTER is already implemented in the gateway).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest

from tests.interop.harness import (
    Baresip,
    BaresipError,
    GatewayProcess,
    analyse_tone,
    dominant_frequency,
    tone_wav,
)


@pytest.mark.interop
@pytest.mark.parametrize("frequency", [440.0, 1000.0, 1234.5])
def test_dominant_frequency_of_a_generated_tone(tmp_path: Path, frequency: float) -> None:
    path = tone_wav(tmp_path / "tone.wav", frequency, seconds=1)
    assert dominant_frequency(path) == pytest.approx(frequency, abs=1.0)


@pytest.mark.interop
def test_analyse_tone_tells_a_tone_from_a_mixture(tmp_path: Path) -> None:
    pure = analyse_tone(tone_wav(tmp_path / "pure.wav", 1000, seconds=1))
    assert pure.power_share > 0.95
    assert pure.rms == pytest.approx(0.3536, abs=0.01)  # half-scale sine: 0.5 / sqrt(2)
    assert pure.seconds == pytest.approx(1.0)
    mixed = tmp_path / "mixed.wav"
    a, b = tone_wav(tmp_path / "a.wav", 440, 1), tone_wav(tmp_path / "b.wav", 1000, 1)
    subprocess.run(["sox", "-m", str(a), str(b), str(mixed)], check=True, timeout=30)
    assert analyse_tone(mixed).power_share < 0.6


@pytest.mark.interop
def test_the_sip_trace_lists_each_message_once_without_its_retransmissions() -> None:
    """A 200 sent again until its ACK came (RFC 3261 §13.3.1.4) is one 200; a 200 to another
    request (another CSeq) is another."""

    def entry(message: str) -> str:
        return f"\x1b[36;1m#\nUDP 127.0.0.1:5060 -> 127.0.0.1:5070\n{message}\x1b[;m\n"

    ok = "SIP/2.0 200 OK\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    trace = entry(ok) + entry(ok) + entry(ok.replace("1 INVITE", "2 BYE"))
    # The trace reader alone: a phone that is never started holds no ports to give back.
    phone = cast(Baresip, SimpleNamespace(output=lambda: trace))
    listed = Baresip.sip_messages(phone, "SIP/2.0 200")
    assert [e.message.splitlines()[1] for e in listed] == ["CSeq: 1 INVITE", "CSeq: 2 BYE"]
    assert len(Baresip.sip_messages(phone, "SIP/2.0 200", retransmissions=True)) == 3


@pytest.mark.interop
def test_direct_call_carries_each_tone_to_the_other_side(tmp_path: Path) -> None:
    high = tone_wav(tmp_path / "1000.wav", 1000)
    low = tone_wav(tmp_path / "440.wav", 440)
    with Baresip(tmp_path, "a", source=high) as a, Baresip(tmp_path, "b", source=low) as b:
        a.dial(b.local_aor)
        a.wait_established()
        b.wait_established()
        a.wait_audio(2.0)
        b.wait_audio(2.0)
        a.hangup()
        a.wait_closed()
        b.wait_closed()
        a_heard, b_heard = analyse_tone(a.received_audio()), analyse_tone(b.received_audio())
        a_sent, b_sent = analyse_tone(a.sent_audio()), analyse_tone(b.sent_audio())
    assert a_heard.dominant_frequency == pytest.approx(440, abs=2)
    assert b_heard.dominant_frequency == pytest.approx(1000, abs=2)
    assert a_sent.dominant_frequency == pytest.approx(1000, abs=2)
    assert b_sent.dominant_frequency == pytest.approx(440, abs=2)
    for heard in (a_heard, b_heard):
        assert heard.power_share > 0.9
        assert heard.seconds >= 2.0
        assert heard.rms > 0.2


@pytest.mark.interop
def test_baresip_registers_to_the_gateway(tmp_path: Path) -> None:
    # baresip 1.0.0 (libre 1.1.0) gives up on a 401 that offers any SHA-256 challenge, even
    # next to an MD5 one ("Register: Function not implemented"): offer MD5 only.
    with (
        GatewayProcess(tmp_path, accounts={"alice": "wonderland"}, digest_algorithms=["MD5"]) as gw,
        Baresip(tmp_path, "alice") as phone,
    ):
        event = phone.register(gw.uri("alice"), "wonderland")
        assert event["accountaor"] == gw.uri("alice")
        gw.wait_for_log(rf"registered: 1 binding\(s\) for {gw.uri('alice')} .*{phone.sip_port}")
    assert "wonderland" not in gw.log_text()


@pytest.mark.interop
def test_baresip_with_a_wrong_password_is_refused(tmp_path: Path) -> None:
    with (
        GatewayProcess(
            tmp_path,
            accounts={"alice": "wonderland"},
            digest_algorithms=["MD5"],
            # The wrong password the test gives, and baresip's retries of it (blocked).
            allowed_warnings=[r"authentication failed for user 'alice'"],
        ) as gw,
        Baresip(tmp_path, "alice") as phone,
    ):
        with pytest.raises(BaresipError, match="REGISTER_FAIL"):
            phone.register(gw.uri("alice"), "guess")
        gw.wait_for_log("authentication failed for user 'alice'")
