"""T.38 fax through ``voipgw run`` between sipp peers: a re-INVITE to T.38, UDPTL replayed by
sipp (``play_pcap_image``), decoded by tshark where it arrives.

The calling trunk (sipp on 127.0.0.2, a fax ATA or a carrier after CED) re-INVITEs an answered
call to ``m=image udptl t38``; alice (a sipp UAS) must get the same offer from the gateway with
the T.38 attributes unchanged, and answers with T.38. sipp then replays a pcap of UDPTL packets
that this test writes (T.38 §9.1 framing; sequence numbers from 0x8000, so every first octet
looks like RTP version 2). A capture on the loopback interface, decoded with tshark as T.38
(``-d udp.port==N,t38``: this tshark names the dissector ``t38``, not ``udptl``), shows what
reached alice: every packet, in order, byte for byte, from the gateway's relay port.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import require_peer
from tests.interop.harness import (
    LOOPBACK,
    Capture,
    GatewayProcess,
    SippUas,
    run_sipp_uac,
    udp_filter,
)
from tests.interop.sipp_calls import (
    ACCOUNTS,
    DID,
    TRUNK_IP,
    assert_relayed_invite,
    in_range,
    inbound_trunk,
    register,
)
from tests.interop.t38_pcaps import FIRST_SEQUENCE, PACKETS, pcap_of

pytestmark = pytest.mark.interop


def t38_received(pcap: Path, port: int) -> list[list[str]]:
    """What arrived at ``port``, decoded as T.38: source, source port, UDP payload (hex),
    sequence number, T.30 indicator."""
    args = [require_peer("tshark"), "-n", "-r", str(pcap), "-d", f"udp.port=={port},t38"]
    args += ["-Y", f"udp.dstport == {port}", "-T", "fields"]
    for field in ("ip.src", "udp.srcport", "udp.payload", "t38.seq_number", "t38.t30_indicator"):
        args += ["-e", field]
    result = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return [line.split("\t") for line in result.stdout.splitlines() if line]


def test_a_trunks_reinvite_to_t38_reaches_the_callee_and_its_fax_arrives(tmp_path: Path) -> None:
    with GatewayProcess(tmp_path, accounts=ACCOUNTS, extra_toml=inbound_trunk()) as gw:
        alice = SippUas("calls/uas_answer_t38.xml", workdir=tmp_path)
        register(gw, tmp_path, "udp", alice.port)
        with alice, Capture(tmp_path / "t38.pcap", udp_filter(alice.media_port)) as capture:
            # The calling trunk on 127.0.0.2, as test_calls_sipp.trunk_call, with the pcap.
            caller = run_sipp_uac(
                "calls/uac_call_t38.xml",
                gw.address,
                workdir=tmp_path,
                service=DID,
                caller="+4940777",
                local_ip=TRUNK_IP,
                call_duration_ms=1000,
                files={"t38.pcap": pcap_of(PACKETS)},
            )
            caller.check()  # the 200 to its re-INVITE accepted T.38
            callee = alice.wait(timeout=10)
            callee.check()  # the re-INVITE offered T.38 with the caller's attributes
            capture.stop()
        log = gw.log_text()

    _, reinvite = callee.received("INVITE ")
    assert_relayed_invite(reinvite.replace("m=image", "m=audio"), gw, not_ports={caller.media_port})
    for attribute in ("a=T38FaxRateManagement:transferredTCF", "a=T38FaxUdpEC:t38UDPRedundancy"):
        assert attribute in reinvite, reinvite
    answers = [m for m in caller.received("SIP/2.0 200") if "2 INVITE" in m]
    (answer,) = answers
    # In the offerer's spelling of the proto (RFC 3264 §6: the answer's is the offer's).
    image = re.search(r"^m=image (\d+) udptl t38$", answer, re.MULTILINE)
    assert image is not None and in_range(int(image[1]), gw.media_ports), answer
    assert "a=T38FaxMaxDatagram:320" in answer

    received = t38_received(capture.path, alice.media_port)
    assert [row[2] for row in received] == [packet.hex() for packet in PACKETS]
    assert [int(row[3]) for row in received] == [FIRST_SEQUENCE + n for n in range(4)]
    assert [row[4] for row in received] == ["1", "2", "3", "0"]
    for source, source_port, *_ in received:
        assert source == LOOPBACK and in_range(int(source_port), gw.media_ports)
    assert "Traceback" not in log
