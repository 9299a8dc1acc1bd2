"""SIPREC (RFC 7866) across a blind transfer, with a real SRS: sipp as the recorder.

alice (baresip) calls bob (baresip); every call is recorded to a sipp SRS
(``scenarios/calls/uas_siprec_srs_transfer.xml``). bob transfers alice to carol (baresip's
``transfer``). The SRS must get a re-INVITE in its recording dialog whose RFC 7865 metadata
names carol and gives the party who left a disassociate-time (the scenario's regexp; it answers
streams-only re-INVITEs and waits for that one), then the final snapshot and the BYE when
alice hangs up. Here the same re-INVITE, from sipp's message trace, is read as XML: the session
and the stream ids and the two first participants' ids are those of the recording INVITE; the
final snapshot keeps them, bob's disassociate-time of the transfer too, and disassociates
alice, carol and the recording.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from gateway.plugins.taps.siprec import NAMESPACE
from tests.interop.harness import LOOPBACK, Baresip, GatewayProcess, tone_wav
from tests.interop.harness.sipp import SippUas

pytestmark = pytest.mark.interop

REALM = "interop.voipgw.test"
PASSWORDS = {"alice": "wonderland-3d91", "bob": "builder-a7e2", "carol": "carolling-58b4"}
TONES = {"alice": 1000.0, "bob": 440.0, "carol": 700.0}
NS = {"r": NAMESPACE}


def metadata(message: str) -> ET.Element:
    found = re.search(r"<\?xml.*</recording>", message, re.DOTALL)
    assert found is not None, message
    return ET.fromstring(found.group(0))


def ids(root: ET.Element, path: str, attribute: str) -> list[str | None]:
    return [element.get(attribute) for element in root.findall(path, NS)]


def test_a_blind_transfer_re_invites_the_srs_with_metadata_naming_the_target(
    tmp_path: Path,
) -> None:
    tones = {name: tone_wav(tmp_path / f"{name}.wav", hz) for name, hz in TONES.items()}
    with SippUas("calls/uas_siprec_srs_transfer.xml", workdir=tmp_path / "srs", timeout=120) as srs:
        extra = (
            "[plugins.siprec]\n"
            f'srs = "sip:srs@{srs.address}"\n'
            "all_calls = true\n"
            f'media_address = "{LOOPBACK}"\n'
        )
        with (
            GatewayProcess(
                tmp_path,
                accounts=PASSWORDS,
                digest_algorithms=("MD5",),  # baresip 1.0.0 answers MD5 only
                settings={
                    "gateway": {"realm": REALM, "log_level": "debug"},
                    "plugins": {"enable": ["udp", "tcp", "siprec"]},
                },
                extra_toml=extra,
            ) as gw,
            Baresip(tmp_path, "alice", source=tones["alice"]) as alice,
            Baresip(tmp_path, "bob", source=tones["bob"]) as bob,
            Baresip(tmp_path, "carol", source=tones["carol"]) as carol,
        ):
            for phone in (alice, bob, carol):
                phone.register(gw.uri(phone.name), PASSWORDS[phone.name])
            alice.dial(gw.uri("bob"))
            call = alice.wait_established()
            bob.wait_established()
            alice.wait_audio(0.5)
            bob.command("transfer", gw.uri("carol"))
            carol.wait_established()
            gw.wait_for_log(rf"call {re.escape(call['id'])}: transfer of the B leg to .*: 200 OK")
            bob.wait_closed(timeout=40)
            carol.wait_audio(0.5)
            alice.hangup()
            alice.wait_closed()
            carol.wait_closed()
            gw.wait_for_log(r"SIPREC: call \S+: \d+ packets, \d+ sent to the SRS")
            log = gw.log_text()
        answered = srs.wait()
    answered.check()  # the recording INVITE's checks, the re-INVITE's regexp, the BYE

    invites = answered.received("INVITE ")
    assert len(invites) >= 3, invites
    # The last re-INVITE is the final snapshot of the call's end; the transfer's is before it.
    first, update, final = (metadata(invites[i]) for i in (0, -2, -1))
    assert update.tag == f"{{{NAMESPACE}}}recording"
    assert ids(update, "r:session", "session_id") == ids(first, "r:session", "session_id")
    assert ids(update, "r:stream", "stream_id") == ids(first, "r:stream", "stream_id")
    caller, callee = ids(first, "r:participant", "participant_id")
    participants = ids(update, "r:participant", "participant_id")
    assert participants[:2] == [caller, callee] and len(participants) == 3
    aors = [n.get("aor") for n in update.findall("r:participant/r:nameID", NS)]
    assert str(aors[1]).startswith("sip:bob@") and str(aors[2]).startswith("sip:carol@"), aors
    left = {
        a.get("participant_id"): a.findtext("r:disassociate-time", namespaces=NS)
        for a in update.findall("r:participantsessionassoc", NS)
    }
    assert left[caller] is None and left[participants[2]] is None and left[callee], left
    assert final.findtext("r:sessionrecordingassoc/r:disassociate-time", namespaces=NS)
    assert ids(final, "r:participant", "participant_id") == participants
    ended = {
        a.get("participant_id"): a.findtext("r:disassociate-time", namespaces=NS)
        for a in final.findall("r:participantsessionassoc", NS)
    }
    assert ended[callee] == left[callee] and ended[caller] and ended[participants[2]], ended
    # The stream associations end with them (RFC 7865 §6.8): bob's at the transfer.
    for snapshot, times in ((update, left), (final, ended)):
        assert {
            a.get("participant_id"): a.findtext("r:disassociate-time", namespaces=NS)
            for a in snapshot.findall("r:participantstreamassoc", NS)
        } == times
    sent = re.search(r"SIPREC: call \S+: \d+ packets, (\d+) sent to the SRS", log)
    assert sent is not None and int(sent.group(1)) > 0, log[-2000:]
