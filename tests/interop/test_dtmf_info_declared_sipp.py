"""A trunk declared ``dtmf = "info"`` through ``voipgw run`` against sipp (the opposite of
test_dtmf_interworking_sipp.py): the calling trunk (sipp on 127.0.0.2, calls/
uac_call_info_dtmf.xml) is an old PBX that offers PCMU only and does DTMF by SIP INFO; alice's
phone (sipp, calls/uas_answer_rfc4733_dtmf.xml) must be offered telephone-event 101 with
``a=fmtp:101 0-16`` (her scenario checks), answers with it and replays a key press (5) as RFC
4733 events from a pcap. The trunk's answer must have no telephone-event, and it must get one
INFO ``Signal=5`` (its scenario checks); its own INFO (Signal=7) must be answered 200 and reach
alice as RFC 4733 events, read off a capture by tshark: the marker on the first, one timestamp,
the E bit on the last three, the trunk's audio SSRC, sequence numbers on from its audio's.
The trunk never gets alice's event packets. With ``[media] workers = 2`` the same happens in
a media worker. Without the declaration alice would be offered no telephone-event (her
scenario fails) and the trunk would get no INFO."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from tests.interop.dtmf_digits import assert_digits_crossed
from tests.interop.harness import (
    Capture,
    GatewayProcess,
    SippUas,
    run_sipp_uac,
    udp_filter,
)
from tests.interop.pickup_key_press import key_press
from tests.interop.sipp_calls import ACCOUNTS, DID, TRUNK_IP, inbound_trunk, register
from tests.interop.t38_pcaps import pcap_of

pytestmark = pytest.mark.interop

TRUNK_SSRC, ALICE_SSRC = 0x7A0C0202, 0xA11CE111
TRUNK_AUDIO = 5


def trunk_audio() -> list[bytes]:
    return [
        struct.pack("!BBHII", 0x80, 0, seq, 160 * seq, TRUNK_SSRC) + b"\xff" * 160
        for seq in range(TRUNK_AUDIO)
    ]


@pytest.mark.parametrize("workers", [1, 2], ids=["in-process", "media-workers"])
def test_an_info_trunk_and_an_rfc4733_phone_exchange_digits(tmp_path: Path, workers: int) -> None:
    with GatewayProcess(
        tmp_path,
        accounts=ACCOUNTS,
        extra_toml=inbound_trunk() + 'dtmf = "info"\n',
        settings={"media": {"workers": workers}},
    ) as gw:
        alice = SippUas("calls/uas_answer_rfc4733_dtmf.xml", workdir=tmp_path, timeout=20)
        (alice.rundir / "dtmf101.pcap").write_bytes(pcap_of(key_press(101, ALICE_SSRC)))
        register(gw, tmp_path, "udp", alice.port)
        with alice, Capture(tmp_path / "dtmf.pcap", udp_filter(gw.media_ports)) as capture:
            caller = run_sipp_uac(
                "calls/uac_call_info_dtmf.xml",
                gw.address,
                workdir=tmp_path,
                service=DID,
                caller="+4940777",
                local_ip=TRUNK_IP,
                call_duration_ms=1500,
                files={"caller_audio.pcap": pcap_of(trunk_audio())},
            )
            caller.check()  # no telephone-event in its answer, got INFO Signal=5, its INFO 200
            answered = alice.wait(timeout=15)
            answered.check()  # offered telephone-event 101 with a=fmtp:101 0-16
            capture.stop()
        log = gw.log_text()

    (info,) = caller.received("INFO ")
    low, high = gw.media_ports
    ports = [*range(low, high + 1), caller.media_port, answered.media_port]
    # Alice's digit reached the trunk as INFO, the trunk's INFO digit alice as events.
    assert_digits_crossed(
        capture.path,
        ports,
        info,
        info_port=caller.media_port,
        event_ssrc=ALICE_SSRC,
        events_port=answered.media_port,
        info_ssrc=TRUNK_SSRC,
    )
    assert "telephone-event 101 offered for a leg that does DTMF by SIP INFO" in log
    assert "DTMF interworking, leg b RFC 4733 (payload type 101/8000), leg a SIP INFO" in log
    assert "Traceback" not in log
