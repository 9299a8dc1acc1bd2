"""The sipp scenarios of scenarios/calls/ proven against sipp counterparts, without the gateway.

test_calls_sipp.py relies on them to fail when the gateway misbehaves, so each check they make
is shown to fail here too: the hold/resume pair refuses a wrong direction, the refused-call
scenario reports the refusal it got. Also the harness's ``local_ip`` (a peer on 127.0.0.2) and
its reading of sipp's message trace.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.interop.harness import SCENARIOS, SippUas, run_sipp_uac, tone_ulaw
from tests.interop.scenario_credentials import CREDENTIALS
from tests.interop.t38_pcaps import pcap_of

pytestmark = pytest.mark.interop


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_hold_resume_pair_on_a_second_loopback_address(tmp_path: Path, transport: str) -> None:
    with SippUas(
        "calls/uas_answer_reinvite.xml", workdir=tmp_path, transport=transport, local_ip="127.0.0.2"
    ) as callee:
        assert callee.address == f"127.0.0.2:{callee.port}"
        assert callee.config_address == f"{transport}:127.0.0.2:{callee.port}"
        caller = run_sipp_uac(
            "calls/uac_hold_resume.xml",
            callee.address,
            workdir=tmp_path,
            transport=transport,
            service="bob",
            call_duration_ms=100,
        )
        caller.check()
        answered = callee.wait(timeout=10)
        answered.check()
    invites = answered.received("INVITE ")
    assert [("a=sendonly" in m, "a=sendrecv" in m) for m in invites] == [
        (False, True),
        (True, False),
        (False, True),
    ]
    assert invites[0].startswith(f"INVITE sip:bob@127.0.0.2:{callee.port} ")
    # The trace reader keeps sent and received apart: the UAS sent 100, 180, a 200 for each
    # INVITE and one for the BYE.
    statuses = [(m.split()[1], _cseq(m)) for m in answered.sent("SIP/2.0 ")]
    assert statuses == [
        ("100", "1 INVITE"),
        ("180", "1 INVITE"),
        ("200", "1 INVITE"),
        ("200", "2 INVITE"),
        ("200", "3 INVITE"),
        ("200", "4 BYE"),
    ]
    assert len(caller.sent("INVITE ")) == 3


def test_peers_stay_on_loopback(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a loopback address"):
        SippUas("uas_answer.xml", workdir=tmp_path, local_ip="192.0.2.1")
    with pytest.raises(ValueError, match="not a loopback address"):
        run_sipp_uac("uac_call.xml", "127.0.0.1:9", workdir=tmp_path, local_ip="192.0.2.1")


def test_hold_offer_with_another_direction_fails_the_uas(tmp_path: Path) -> None:
    original = (SCENARIOS / "calls" / "uac_hold_resume.xml").read_text()
    inactive = tmp_path / "uac_hold_inactive.xml"
    inactive.write_text(original.replace("a=sendonly", "a=inactive"))
    with SippUas("calls/uas_answer_reinvite.xml", workdir=tmp_path, timeout=5) as callee:
        run_sipp_uac(inactive, callee.address, workdir=tmp_path, call_duration_ms=100, timeout=4)
        answered = callee.wait(timeout=10)
    assert not answered.ok
    assert "a=sendonly" in answered.error_log.read_text()


def test_hold_answer_with_another_direction_fails_the_uac(tmp_path: Path) -> None:
    original = (SCENARIOS / "calls" / "uas_answer_reinvite.xml").read_text()
    inactive = tmp_path / "uas_answer_reinvite_inactive.xml"
    inactive.write_text(original.replace("a=recvonly", "a=inactive"))
    with SippUas(inactive, workdir=tmp_path, timeout=5) as callee:
        caller = run_sipp_uac(
            "calls/uac_hold_resume.xml",
            callee.address,
            workdir=tmp_path,
            call_duration_ms=100,
            timeout=4,
        )
    assert not caller.ok
    assert "a=recvonly" in caller.error_log.read_text()


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_late_reinvite_pair(tmp_path: Path, transport: str) -> None:
    with SippUas(
        "calls/uas_answer_late_reinvite.xml", workdir=tmp_path, transport=transport
    ) as callee:
        caller = run_sipp_uac(
            "calls/uac_late_reinvite.xml",
            callee.address,
            workdir=tmp_path,
            transport=transport,
            service="bob",
            call_duration_ms=100,
        )
        caller.check()
        answered = callee.wait(timeout=10)
        answered.check()
    reinvite = answered.received("INVITE ")[1]
    assert "Content-Length: 0" in reinvite and "m=audio" not in reinvite
    acks = answered.received("ACK ")
    assert ["m=audio" in ack for ack in acks] == [False, True]


def test_a_reinvite_with_sdp_fails_the_late_reinvite_uas(tmp_path: Path) -> None:
    with SippUas("calls/uas_answer_late_reinvite.xml", workdir=tmp_path, timeout=5) as callee:
        run_sipp_uac(
            "calls/uac_hold_resume.xml",
            callee.address,
            workdir=tmp_path,
            call_duration_ms=100,
            timeout=4,
        )
        answered = callee.wait(timeout=10)
    assert not answered.ok
    assert "m=" in answered.error_log.read_text()


def test_an_ack_without_the_answer_fails_the_late_reinvite_uas(tmp_path: Path) -> None:
    original = (SCENARIOS / "calls" / "uac_late_reinvite.xml").read_text()
    head, _, tail = original.partition("CSeq: 2 ACK")
    no_answer = tmp_path / "uac_late_reinvite_no_answer.xml"
    body_start = tail.index("Content-Type: application/sdp")
    body_end = tail.index("]]>")
    no_answer.write_text(
        head + "CSeq: 2 ACK" + tail[:body_start] + "Content-Length: 0\n\n    " + tail[body_end:]
    )
    with SippUas("calls/uas_answer_late_reinvite.xml", workdir=tmp_path, timeout=5) as callee:
        run_sipp_uac(no_answer, callee.address, workdir=tmp_path, call_duration_ms=100, timeout=4)
        answered = callee.wait(timeout=10)
    assert not answered.ok
    assert "m=audio" in answered.error_log.read_text()


def test_late_offer_call_with_rtp_against_an_echoing_uas(tmp_path: Path) -> None:
    tone = tone_ulaw(tmp_path / "tone.ulaw", 1000, seconds=1)
    with SippUas("uas_answer.xml", workdir=tmp_path, rtp_echo=True) as callee:
        caller = run_sipp_uac(
            "calls/uac_call_late_offer_rtp.xml",
            callee.address,
            workdir=tmp_path,
            service="bob",
            rtp_file=tone,
        )
        caller.check()
        answered = callee.wait(timeout=10)
        answered.check()
    (ack,) = answered.received("ACK ")
    assert f"m=audio {caller.media_port} RTP/AVP 0" in ack  # our answer, in the ACK


def test_ring_pause_answer_uas_answers_after_its_pause(tmp_path: Path) -> None:
    with SippUas(
        "calls/uas_ring_pause_answer.xml", workdir=tmp_path, call_duration_ms=400
    ) as callee:
        caller = run_sipp_uac("uac_call.xml", callee.address, workdir=tmp_path, service="bob")
        caller.check()
        answered = callee.wait(timeout=10)
        answered.check()
    assert [m.split()[1] for m in answered.sent("SIP/2.0 ")][:3] == ["100", "180", "200"]


def test_the_100rel_caller_fails_on_a_180_without_rseq(tmp_path: Path) -> None:
    with SippUas("calls/uas_ring_pause_answer.xml", workdir=tmp_path, timeout=5) as callee:
        caller = run_sipp_uac(
            "calls/uac_call_100rel.xml",
            callee.address,
            workdir=tmp_path,
            service="bob",
            call_duration_ms=100,
            timeout=4,
        )
    assert not caller.ok
    assert "RSeq" in caller.error_log.read_text()
    (invite,) = caller.sent("INVITE ")
    assert "Require: 100rel" in invite


def test_the_answer_in_183_uas_fails_an_invite_without_supported_100rel(tmp_path: Path) -> None:
    # test_calls_sipp.py relies on it to fail when the gateway does not offer 100rel to the
    # callee (it would then have no right to answer in a reliable 183, RFC 3262 §3).
    with SippUas("calls/uas_answer_in_reliable_183.xml", workdir=tmp_path, timeout=3) as callee:
        caller = run_sipp_uac(
            "uac_call.xml", callee.address, workdir=tmp_path, service="bob", timeout=2
        )
        answered = callee.wait(timeout=10)
    assert not caller.ok
    assert not answered.ok
    assert "Supported: 100rel" in answered.error_log.read_text()


def test_sip_i_call_against_a_plain_uas(tmp_path: Path) -> None:
    with SippUas("uas_answer.xml", workdir=tmp_path) as callee:
        caller = run_sipp_uac(
            "calls/uac_call_sip_i.xml", callee.address, workdir=tmp_path, service="bob"
        )
        caller.check()
        answered = callee.wait(timeout=10)
        answered.check()
    (invite,) = answered.received("INVITE ")
    assert "Content-Type: multipart/mixed;boundary=sip-i-boundary-7" in invite
    assert "Content-Disposition: signal;handling=optional" in invite
    assert invite.rstrip().endswith("--sip-i-boundary-7--")


def test_call_with_auth_and_rtp_against_a_challenging_uas(tmp_path: Path) -> None:
    tone = tone_ulaw(tmp_path / "tone.ulaw", 1000, seconds=1)
    with SippUas(
        "uas_auth_answer.xml", workdir=tmp_path, rtp_echo=True, keys=CREDENTIALS
    ) as callee:
        caller = run_sipp_uac(
            "calls/uac_call_auth_rtp.xml",
            callee.address,
            workdir=tmp_path,
            service="bob",
            caller="alice",
            auth=("alice", "s3cret"),
            rtp_file=tone,
        )
        caller.check()
        callee.wait(timeout=10).check()
    assert len(caller.sent("INVITE ")) == 2
    assert 'Authorization: Digest username="alice"' in caller.sent("INVITE ")[1]


def test_refused_call_scenario_reports_the_refusal(tmp_path: Path) -> None:
    with SippUas("uas_auth_answer.xml", workdir=tmp_path, keys=CREDENTIALS) as callee:
        caller = run_sipp_uac(
            "calls/uac_auth_refused.xml",
            callee.address,
            workdir=tmp_path,
            service="bob",
            caller="alice",
            auth=("alice", "guess"),
        )
        caller.check()  # the 403 is one of the refusals it accepts; the UAS fails on it
        assert not callee.wait(timeout=10).ok
    (refusal,) = caller.received("SIP/2.0 403")
    assert "CSeq: 2 INVITE" in refusal
    (ack,) = [m for m in caller.sent("ACK ") if "CSeq: 2 ACK" in m]
    # The ACK for a non-2xx final response has the INVITE's branch (RFC 3261 §17.1.1.3).
    second_invite = caller.sent("INVITE ")[1]
    assert _via_branch(ack) == _via_branch(second_invite)


def test_refused_call_scenario_fails_when_the_call_is_answered(tmp_path: Path) -> None:
    with SippUas("uas_auth_answer.xml", workdir=tmp_path, keys=CREDENTIALS, timeout=5) as callee:
        caller = run_sipp_uac(
            "calls/uac_auth_refused.xml",
            callee.address,
            workdir=tmp_path,
            service="bob",
            caller="alice",
            auth=("alice", "s3cret"),
            timeout=4,
        )
    assert not caller.ok
    assert caller.received("SIP/2.0 200")


def _cseq(message: str) -> str:
    return next(line[5:].strip() for line in message.splitlines() if line.startswith("CSeq:"))


def _via_branch(message: str) -> str:
    for line in message.splitlines():
        if line.startswith("Via:"):
            return line.split("branch=")[1].split(";")[0]
    raise AssertionError(f"no Via in:\n{message}")


def test_the_srs_fails_an_invite_that_is_no_recording_session(tmp_path: Path) -> None:
    """calls/uas_siprec_srs.xml (test_siprec.py's recorder) checks what makes an INVITE a
    SIPREC recording session: a plain call's INVITE (no Require: siprec, no +sip.src, no
    metadata) fails it."""
    with SippUas("calls/uas_siprec_srs.xml", workdir=tmp_path, timeout=5) as srs:
        run_sipp_uac("uac_call.xml", srs.address, workdir=tmp_path, service="srs", timeout=4)
        answered = srs.wait(timeout=10)
    assert not answered.ok
    assert "Failed regexp match: header Require:" in answered.error_log.read_text()


# A caller that sends its key press as an INFO with the body given (``{body}``), answers the
# callee's INFO and hangs up: the counterpart of calls/uas_answer_info_dtmf.xml, whose INFO check
# the DTMF interworking test (test_dtmf_interworking_sipp.py) relies on.
INFO_CALLER = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="uac call sending an INFO">
  <send retrans="500">
    <![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:caller@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:caller@[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=sipp 1 1 IN IP[local_ip_type] [media_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000

    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="200" rrs="true"/>
  <send>
    <![CDATA[
      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:caller@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <send retrans="500">
    <![CDATA[
      INFO [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:caller@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 INFO
      Max-Forwards: 70
      Content-Type: {content_type}
      Content-Length: [len]

      {body}

    ]]>
  </send>
  <recv response="200"/>
  <recv request="INFO"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
  <send retrans="500">
    <![CDATA[
      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:caller@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 3 BYE
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200"/>
</scenario>
"""


@pytest.mark.parametrize(
    ("content_type", "body", "ok"),
    [
        ("application/dtmf-relay", "Signal=5\nDuration=160", True),
        ("application/dtmf-relay", "Signal=9\nDuration=160", False),
        ("application/dtmf", "5", False),
    ],
    ids=["digit-5", "another-digit", "another-body-type"],
)
def test_the_info_dtmf_uas_checks_the_info_it_gets(
    tmp_path: Path, content_type: str, body: str, ok: bool
) -> None:
    caller_scenario = tmp_path / "uac_call_send_info.xml"
    caller_scenario.write_text(INFO_CALLER.format(content_type=content_type, body=body))
    callee = SippUas("calls/uas_answer_info_dtmf.xml", workdir=tmp_path, timeout=5)
    (callee.rundir / "alice_audio.pcap").write_bytes(pcap_of([b"\x80\x00" + bytes(170)]))
    with callee:
        run_sipp_uac(caller_scenario, callee.address, workdir=tmp_path, service="alice", timeout=4)
        answered = callee.wait(timeout=10)
    assert answered.ok is ok, answered.describe()
    if not ok:
        assert "Failed regexp match" in answered.error_log.read_text()


# A callee answering with the formats given (``{formats}``, ``{rtpmaps}``), that sends a key
# press (200 ms after the ACK, as a person would) as an INFO with the body given (``{body}``),
# takes the caller's INFO and the BYE: the counterpart of calls/uac_call_info_dtmf.xml, whose
# answer and INFO checks the INFO-trunk test (test_dtmf_info_declared_sipp.py) relies on.
INFO_CALLEE = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="uas answer sending an INFO">
  <recv request="INVITE" crlf="true" rrs="true">
    <action>
      <ereg regexp="[^ \\t].*" search_in="hdr" header="From:" check_it="true" assign_to="caller"/>
    </action>
  </recv>
  <send retrans="500">
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=sipp 1 1 IN IP[local_ip_type] [media_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP {formats}
{rtpmaps}
    ]]>
  </send>
  <recv request="ACK" crlf="true">
    <action>
      <ereg regexp="[^ \\t].*" search_in="hdr" header="To:" check_it="true" assign_to="callee"/>
    </action>
  </recv>
  <pause milliseconds="200"/>
  <send retrans="500">
    <![CDATA[
      INFO [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: [$callee]
      To: [$caller]
      Call-ID: [call_id]
      CSeq: 1 INFO
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
      Content-Type: application/dtmf-relay
      Content-Length: [len]

      {body}

    ]]>
  </send>
  <recv response="200"/>
  <recv request="INFO"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
  <recv request="BYE"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
</scenario>
"""

PCMU_ONLY = ("0", "      a=rtpmap:0 PCMU/8000")
WITH_EVENTS = (
    "0 101",
    "      a=rtpmap:0 PCMU/8000\n      a=rtpmap:101 telephone-event/8000\n      a=fmtp:101 0-16",
)


@pytest.mark.parametrize(
    ("answer", "body", "ok"),
    [
        (PCMU_ONLY, "Signal=5\nDuration=160", True),
        (WITH_EVENTS, "Signal=5\nDuration=160", False),
        (PCMU_ONLY, "Signal=9\nDuration=160", False),
    ],
    ids=["no-telephone-event-digit-5", "answered-with-telephone-event", "another-digit"],
)
def test_the_info_dtmf_uac_checks_the_answer_and_the_info_it_gets(
    tmp_path: Path, answer: tuple[str, str], body: str, ok: bool
) -> None:
    callee_scenario = tmp_path / "uas_answer_send_info.xml"
    formats, rtpmaps = answer
    callee_scenario.write_text(INFO_CALLEE.format(formats=formats, rtpmaps=rtpmaps, body=body))
    with SippUas(callee_scenario, workdir=tmp_path, timeout=5) as callee:
        caller = run_sipp_uac(
            "calls/uac_call_info_dtmf.xml",
            callee.address,
            workdir=tmp_path,
            service="alice",
            call_duration_ms=100,
            files={"caller_audio.pcap": pcap_of([b"\x80\x00" + bytes(170)])},
            timeout=4,
        )
        callee.wait(timeout=10)
    assert caller.ok is ok, caller.describe()
    if not ok:
        errors = caller.error_log.read_text()
        # check_it_inverse (no telephone-event in the answer) says it in other words.
        assert "Failed regexp match" in errors or "Regexp matched but should not" in errors


@pytest.mark.parametrize(
    ("caller_scenario", "ok"),
    [("calls/uac_call_dtmf.xml", True), ("calls/uac_call_info_dtmf.xml", False)],
    ids=["offered-telephone-event-101", "offered-none"],
)
def test_the_rfc4733_dtmf_uas_checks_the_offer_it_gets(
    tmp_path: Path, caller_scenario: str, ok: bool
) -> None:
    callee = SippUas("calls/uas_answer_rfc4733_dtmf.xml", workdir=tmp_path, timeout=5)
    (callee.rundir / "dtmf101.pcap").write_bytes(pcap_of([b"\x80\x00" + bytes(170)]))
    audio = pcap_of([b"\x80\x00" + bytes(170)])
    with callee:
        run_sipp_uac(
            caller_scenario,
            callee.address,
            workdir=tmp_path,
            service="alice",
            call_duration_ms=100,
            files={"dtmf101.pcap": audio, "caller_audio.pcap": audio},
            timeout=4,
        )
        answered = callee.wait(timeout=10)
    assert answered.ok is ok, answered.describe()
    if not ok:
        assert "Failed regexp match" in answered.error_log.read_text()


# A recording client (SRC) as calls/uas_siprec_srs.xml expects one: the recording INVITE (Require:
# siprec, +sip.src, a multipart body with RFC 7865 metadata), its ACK, then ``{final}`` (the final
# snapshot, a re-INVITE, or nothing) and the BYE.
SIPREC_SRC = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="uac siprec src">
  <send retrans="500">
    <![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:src@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:src@[local_ip]:[local_port];transport=[transport]>;+sip.src
      Require: siprec
      Max-Forwards: 70
      Content-Type: multipart/mixed;boundary=b1
      Content-Length: [len]

{body}
    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="200" rrs="true"/>
  <send>
    <![CDATA[
      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:src@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
{final}
  <send retrans="500">
    <![CDATA[
      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:src@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 3 BYE
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200"/>
</scenario>
"""
SIPREC_FINAL = """  <send retrans="500">
    <![CDATA[
      INVITE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:src@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 INVITE
      Contact: <sip:src@[local_ip]:[local_port];transport=[transport]>;+sip.src
      Max-Forwards: 70
      Content-Type: multipart/mixed;boundary=b1
      Content-Length: [len]

{body}
    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="200"/>
  <send>
    <![CDATA[
      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:src@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>"""


def siprec_body(direction: str, recording_ends: bool) -> str:
    """The multipart body of a recording (re-)INVITE: two labelled streams ``direction``, and
    metadata whose recording association ends (a disassociate-time) when ``recording_ends``."""
    stop = "<disassociate-time>2026-01-01T10:05:00Z</disassociate-time>" if recording_ends else ""
    lines = [
        "--b1",
        "Content-Type: application/sdp",
        "",
        "v=0",
        "o=src 1 1 IN IP[local_ip_type] [media_ip]",
        "s=-",
        "c=IN IP[media_ip_type] [media_ip]",
        "t=0 0",
        "m=audio [media_port] RTP/AVP 0",
        "a=label:1",
        f"a={direction}",
        "m=audio [media_port+2] RTP/AVP 0",
        "a=label:2",
        f"a={direction}",
        "--b1",
        "Content-Type: application/rs-metadata+xml",
        "Content-Disposition: recording-session",
        "",
        "<?xml version='1.0' encoding='UTF-8'?>",
        "<recording xmlns='urn:ietf:params:xml:ns:recording:1'>",
        "<sessionrecordingassoc session_id='cw=='>",
        "<associate-time>2026-01-01T10:00:00Z</associate-time>",
        stop,
        "</sessionrecordingassoc>",
        "<participantstreamassoc participant_id='cA=='><send>cw==</send></participantstreamassoc>",
        "</recording>",
        "--b1--",
    ]
    return "\n".join(line for line in lines if line)


@pytest.mark.parametrize(
    ("final", "error"),
    [
        (SIPREC_FINAL.format(body=siprec_body("inactive", recording_ends=True)), None),
        ("", "unexpected BYE"),
        (
            SIPREC_FINAL.format(body=siprec_body("inactive", recording_ends=False)),
            "Failed regexp match",
        ),
        (
            SIPREC_FINAL.format(body=siprec_body("sendonly", recording_ends=True)),
            "Failed regexp match",
        ),
    ],
    ids=["final-snapshot", "bye-alone", "recording-not-ended", "streams-not-inactive"],
)
def test_the_srs_expects_the_final_snapshot_before_the_bye(
    tmp_path: Path, final: str, error: str | None
) -> None:
    """calls/uas_siprec_srs.xml wants, after the recording INVITE, a re-INVITE whose metadata
    ends the recording (a disassociate-time in sessionrecordingassoc) and whose streams are
    inactive, then the BYE: test_siprec.py's proof that the gateway sends the final snapshot."""
    src = tmp_path / "uac_siprec_src.xml"
    src.write_text(
        SIPREC_SRC.format(body=siprec_body("sendonly", recording_ends=False), final=final)
    )
    with SippUas("calls/uas_siprec_srs.xml", workdir=tmp_path, timeout=5) as srs:
        run_sipp_uac(src, srs.address, workdir=tmp_path, service="srs", timeout=4)
        answered = srs.wait(timeout=10)
    assert answered.ok is (error is None), answered.describe()
    if error is not None:
        assert error in answered.error_log.read_text(), answered.error_log.read_text()


# A caller that sends its key press as an INFO with the body given (``{body}``) in the early
# dialog of the callee's 183 (100 ms after it, as a person at a prompt would, and once the
# callee's prompt plays), then takes the 200, ACKs and hangs up: the
# counterpart of calls/uas_early_media_info_dtmf.xml, whose checks the early-media DTMF test
# (test_dtmf_interworking_sipp.py) relies on.
EARLY_INFO_CALLER = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="uac call sending an INFO in early media">
  <send retrans="500">
    <![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:caller@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:caller@[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=sipp 1 1 IN IP[local_ip_type] [media_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000

    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="183" rrs="true"/>
  <pause milliseconds="100"/>
  <send retrans="500">
    <![CDATA[
      INFO [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:caller@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 INFO
      Max-Forwards: 70
      Content-Type: application/dtmf-relay
      Content-Length: [len]

      {body}

    ]]>
  </send>
  <recv response="200"/>
  <recv response="200" rrs="true"/>
  <send>
    <![CDATA[
      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:caller@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <send retrans="500">
    <![CDATA[
      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:caller@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 3 BYE
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200"/>
</scenario>
"""


@pytest.mark.parametrize(
    ("body", "ok"),
    [("Signal=5\nDuration=160", True), ("Signal=9\nDuration=160", False)],
    ids=["digit-5", "another-digit"],
)
def test_the_early_media_info_uas_checks_the_info_it_gets_before_answering(
    tmp_path: Path, body: str, ok: bool
) -> None:
    caller_scenario = tmp_path / "uac_call_send_early_info.xml"
    caller_scenario.write_text(EARLY_INFO_CALLER.format(body=body))
    callee = SippUas("calls/uas_early_media_info_dtmf.xml", workdir=tmp_path, timeout=5)
    (callee.rundir / "alice_audio.pcap").write_bytes(pcap_of([b"\x80\x00" + bytes(170)]))
    with callee:
        run_sipp_uac(caller_scenario, callee.address, workdir=tmp_path, service="alice", timeout=4)
        answered = callee.wait(timeout=10)
    assert answered.ok is ok, answered.describe()
    if ok:  # the INFO came and went before the INVITE's 200
        sent = [
            m.split()[1] + " " + m.split("CSeq:")[1].split()[1] for m in answered.sent("SIP/2.0 ")
        ]
        assert sent[:4] == ["100 INVITE", "183 INVITE", "200 INFO", "200 INVITE"]
    else:
        assert "Failed regexp match" in answered.error_log.read_text()


def test_the_early_media_dtmf_uac_checks_the_183_it_gets(tmp_path: Path) -> None:
    """Against the IVR scenario directly, whose 183 has no telephone-event: the caller's check
    of the 183 fails (through the gateway, the caller's telephone-event is kept)."""
    callee = SippUas("calls/uas_early_media_info_dtmf.xml", workdir=tmp_path, timeout=3)
    audio = pcap_of([b"\x80\x00" + bytes(170)])
    (callee.rundir / "alice_audio.pcap").write_bytes(audio)
    with callee:
        caller = run_sipp_uac(
            "calls/uac_call_dtmf_early.xml",
            callee.address,
            workdir=tmp_path,
            service="alice",
            files={"dtmf101.pcap": audio},
            timeout=3,
        )
        callee.wait(timeout=10)
    assert not caller.ok
    assert "Failed regexp match" in caller.error_log.read_text()
