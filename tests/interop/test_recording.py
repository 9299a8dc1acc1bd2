"""Call recording with real peers (the ``recorder`` tap).

1. baresip, SRTP mandatory over TLS (SDES), calls a sipp trunk that answers in plain RTP and
   echoes the media; the trunk's calls are recorded. The phone's leg is encrypted on the wire;
   the recording holds the audio in clear: the phone's 1000 Hz tone in the caller's file and
   the trunk's echo of it in the callee's, each lasting about as long as the call, and
   ``voipgw calls`` names the tap on the call.
2. The same call with ``[media] workers = 2``: the streams live in a worker process, which
   sends the decrypted copies to the SIP process over its control channel; the files are the
   same.
"""

from __future__ import annotations

import json
import re
import wave
from pathlib import Path

import pytest

from tests.interop.harness import LOOPBACK, Baresip, SippUas, analyse_tone, tone_wav
from tests.interop.harness.tls_gateway import TlsGatewayProcess

pytestmark = pytest.mark.interop

PASSWORD = "wonderland-8e21"
TONE = 1000.0
TRUNK_NUMBER = "+4989555"
AUDIO_SECONDS = 2.0


def _gateway(workdir: Path, trunk: SippUas, *, workers: int = 1) -> TlsGatewayProcess:
    extra = trunk.trunk_toml() + (
        f'[plugins.recorder]\ndirectory = "{workdir / "recordings"}"\ntrunks = ["carrier"]\n'
        # Whatever the test machine's free disk: min_free_mb has unit tests of its own.
        "min_free_mb = 0\n"
    )
    return TlsGatewayProcess(
        workdir,
        plugins=("udp", "tcp", "tls", "sdes", "recorder"),
        accounts={"alice": PASSWORD},
        digest_algorithms=("MD5",),  # baresip 1.0.0 answers MD5 only
        settings={
            "gateway": {"log_level": "debug", "domains": [LOOPBACK]},
            "media": {"workers": workers},
        },
        extra_toml=extra,
    )


def _record_of_call(gw: TlsGatewayProcess) -> dict[str, object]:
    out = gw.cli_until(lambda text: '"taps"' in text, "calls", "--json")
    (record,) = json.loads(out)
    return dict(record["security"])


@pytest.mark.parametrize("workers", [1, 2], ids=["in-process-relay", "two-media-workers"])
def test_an_srtp_phones_call_to_a_recorded_trunk_is_recorded_in_clear(
    tmp_path: Path, workers: int
) -> None:
    with (
        SippUas("uas_answer.xml", workdir=tmp_path, rtp_echo=True) as trunk,
        _gateway(tmp_path / "gw", trunk, workers=workers) as gw,
        Baresip(
            tmp_path,
            "alice",
            source=tone_wav(tmp_path / "alice.wav", TONE),
            mediaenc="srtp-mand",
        ) as alice,
    ):
        alice.register_over_tls(LOOPBACK, gw.tls_port, PASSWORD, mediaenc="srtp-mand")
        alice.dial(f"sip:{TRUNK_NUMBER}@{LOOPBACK}:{gw.tls_port};transport=tls")
        call = alice.wait_established()
        security = _record_of_call(gw)
        alice.wait_audio(AUDIO_SECONDS)
        alice.hangup()
        alice.wait_closed()
        gw.wait_for_log(rf"call {re.escape(call['id'])}\S* ended")
        gw.wait_for_log(r"recording of call \S+: ")
        log = gw.log_text()
        trunk.wait().check()

    assert security["a"]["streams"][0]["key_exchange"] == "sdes"  # type: ignore[index]
    files = sorted((tmp_path / "gw" / "recordings").glob("*/*.wav"))
    assert security["taps"] == {"names": ["recorder"], "untapped_streams": []}
    assert [path.name.split("-", 1)[1] for path in files] == ["0-callee.wav", "0-caller.wav"]
    for path in files:
        heard = analyse_tone(path)
        assert heard.dominant_frequency == pytest.approx(TONE, abs=3), path
        assert heard.power_share > 0.9, path
        with wave.open(str(path)) as wav:
            assert wav.getframerate() == 8000 and wav.getnchannels() == 1
            assert wav.getnframes() >= AUDIO_SECONDS * 8000
    assert re.search(r"recording of call \S+: .*\(\d+ packets; 0 dropped, \d+ late", log)
