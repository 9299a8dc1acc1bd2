"""Calls through ``voipgw run`` between sipp peers: accounts, trunks, media, the ends of a call.

Every peer is on loopback. The gateway tells a trunk by its source address, so a trunk that
calls in runs on 127.0.0.2 (``allowed_sources = ["127.0.0.2"]``); a trunk the gateway only calls
out to recognises nobody (``allowed_sources = []``) and listens on 127.0.0.1. Accounts calling
in must answer a 407 digest challenge (RFC 3261 §22.3); trunks are not challenged.

The gateway is a B2BUA with a media relay: every SDP a peer receives names the gateway's media
address and a port of its range, never the other peer's, and every RTP packet goes through that
port (checked with a capture). Each test asserts on what the far peer received, not only on the
caller's exit code, so a gateway that answered the caller itself would fail.

Scenarios that only make sense with the gateway in the middle (a digest challenge followed by a
trunk's behaviour) and the hold/resume pair are in ``scenarios/calls/``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.interop.harness import (
    LOOPBACK,
    Capture,
    GatewayProcess,
    SippUas,
    rtp_packets,
    rtp_streams,
    run_sipp_uac,
    tone_ulaw,
    udp_filter,
)
from tests.interop.sipp_calls import (
    ACCOUNTS,
    ALICE,
    BOB,
    CALLER_ID,
    DID,
    TRUNK_IP,
    account_call,
    assert_relayed_invite,
    final_status_line,
    header,
    in_range,
    inbound_trunk,
    outbound_trunk,
    register,
    sdp_connection,
    trunk_call,
)

pytestmark = pytest.mark.interop

TRANSPORTS = pytest.mark.parametrize("transport", ["udp", "tcp"])

#: A number the outbound trunk serves (prefix +49) and no account is named like.
TRUNK_NUMBER = "+4989555"
GUESS = "not-the-password"


# -- configuration --------------------------------------------------------------------------


# -- reading what the peers saw ---------------------------------------------------------------


def origin(message: str) -> tuple[str, str, int]:
    """(username, session id, session version) of the o= line of a message's SDP."""
    match = re.search(r"^o=(\S+) (\S+) (\d+) IN IP4 ", message, re.MULTILINE)
    assert match is not None, f"no o= line in:\n{message}"
    return match[1], match[2], int(match[3])


# -- 1. account -> trunk, with RTP through the relay -------------------------------------------


@TRANSPORTS
def test_account_calls_a_trunk_and_rtp_goes_through_the_relay(
    tmp_path: Path, transport: str
) -> None:
    tone = tone_ulaw(tmp_path / "tone.ulaw", 1000, seconds=2)  # 100 packets of 20 ms
    with (
        SippUas("uas_answer.xml", workdir=tmp_path, transport=transport, rtp_echo=True) as trunk,
        GatewayProcess(tmp_path, accounts=ACCOUNTS, extra_toml=outbound_trunk(trunk)) as gw,
    ):
        # The trunk's media port is in the filter so RTP that bypassed the relay is seen too.
        media = udp_filter(gw.media_ports, trunk.media_port)
        with Capture(tmp_path / "call.pcap", media) as capture:
            caller = account_call(
                "calls/uac_call_auth_rtp.xml",
                gw,
                tmp_path,
                service=TRUNK_NUMBER,
                transport=transport,
                rtp_file=tone,
            )
        caller.check()
        callee = trunk.wait(timeout=10)
        callee.check()

    # Signalling: the caller was challenged (407, RFC 3261 §22.3), the trunk was not asked for
    # credentials and got the number in the Request-URI over the trunk's transport.
    assert len(caller.received("SIP/2.0 407")) == 1
    (invite,) = callee.received("INVITE ")
    assert invite.startswith(f"INVITE sip:{TRUNK_NUMBER}@"), invite
    assert f"SIP/2.0/{transport.upper()} " in invite
    # The account is presented by the trunk's caller_id (it has no DID there), also asserted.
    assert header(invite, "From").startswith(f"<sip:{CALLER_ID}@"), invite
    assert header(invite, "P-Asserted-Identity").startswith(f"<sip:{CALLER_ID}@"), invite
    assert_relayed_invite(invite, gw, not_ports={caller.media_port})
    (answer,) = [m for m in caller.received("SIP/2.0 200") if header(m, "CSeq") == "2 INVITE"]
    a_address, a_port = sdp_connection(answer)
    assert a_address == LOOPBACK
    assert in_range(a_port, gw.media_ports) and a_port != trunk.media_port, answer
    _, b_port = sdp_connection(invite)

    # Media: caller -> gateway (a_port) -> trunk, echoed trunk -> gateway (b_port) -> caller.
    caller_media = (LOOPBACK, caller.media_port)
    trunk_media = (LOOPBACK, trunk.media_port)
    ports = [caller.media_port, trunk.media_port, *range(gw.media_ports[0], gw.media_ports[1] + 1)]
    streams = rtp_streams(capture.path, ports)
    a_relay, b_relay = (LOOPBACK, a_port), (LOOPBACK, b_port)
    expected = {
        (caller_media, a_relay),
        (b_relay, trunk_media),
        (trunk_media, b_relay),
        (a_relay, caller_media),
    }
    assert set(streams) == expected, streams  # nothing direct, nothing from other ports
    sent = streams[(caller_media, a_relay)]
    assert 95 <= sent <= 100
    for flow in expected:
        assert abs(streams[flow] - sent) <= 3, streams  # a few percent either way
    # Plain RTP on both legs: the relay forwards each packet as it is, SSRC and sequence numbers
    # included (RFC 3550 §7.1: a forwarder that is not a mixer keeps them).
    packets = rtp_packets(capture.path, ports)
    hop_in = [(p["ssrc"], p["seq"]) for p in packets if int(p["srcport"]) == caller.media_port]
    hop_out = [(p["ssrc"], p["seq"]) for p in packets if int(p["dstport"]) == trunk.media_port]
    assert hop_in == hop_out


# -- 1a. a numbering plan: national numbers both ways ---------------------------------------


def test_a_numbering_plan_reads_and_writes_national_numbers(tmp_path: Path) -> None:
    """With ``[numbering]`` for Berlin, alice dials a national number and the carrier, which
    takes national numbers, gets it and her number that way; a PBX trunk delivering national
    numbers reaches her DID (written E.164) and her phone sees the caller in E.164."""
    numbering = '[numbering]\ncountry_code = "49"\narea_code = "30"\n\n'
    alice = SippUas("uas_answer.xml", workdir=tmp_path)
    with (
        SippUas("uas_answer.xml", workdir=tmp_path) as carrier,
        GatewayProcess(
            tmp_path,
            accounts=ACCOUNTS,
            extra_toml=numbering
            + outbound_trunk(carrier, number_format="national")
            + inbound_trunk(),
        ) as gw,
    ):
        caller = account_call("uac_call_auth.xml", gw, tmp_path, service="089555")
        caller.check()
        callee = carrier.wait(timeout=10)
        callee.check()
        (invite,) = callee.received("INVITE ")
        register(gw, tmp_path, "udp", alice.port)
        with alice:
            run_sipp_uac(
                "uac_call.xml",
                gw.address,
                workdir=tmp_path,
                service="030123456",  # alice's DID, +4930123456, as the PBX writes it
                caller="0301111111",
                local_ip=TRUNK_IP,
            ).check()
            (phone_invite,) = alice.wait(timeout=10).received("INVITE ")

    assert invite.startswith("INVITE sip:089555@"), invite
    assert header(invite, "From").startswith("<sip:040123450@"), invite  # CALLER_ID, national
    assert header(invite, "P-Asserted-Identity").startswith("<sip:040123450@"), invite
    assert phone_invite.startswith(f"INVITE sip:alice@{LOOPBACK}:{alice.port}"), phone_invite
    assert "<sip:+49301111111@" in header(phone_invite, "From"), phone_invite


# -- 1a'. failover between trunks --------------------------------------------------------------


def test_a_carriers_503_sends_the_call_to_the_next_trunk(tmp_path: Path) -> None:
    """Two trunks serve +49: the first (sipp answering 503) is tried, then the second (sipp
    answering 200) gets the same call, and alice's call is connected through it."""
    first = SippUas("calls/uas_unavailable.xml", workdir=tmp_path)
    second = SippUas("uas_answer.xml", workdir=tmp_path)
    with first, second:
        toml = outbound_trunk(first) + outbound_trunk(second).replace(
            'name = "carrier"', 'name = "backup"'
        )
        with GatewayProcess(tmp_path, accounts=ACCOUNTS, extra_toml=toml) as gw:
            caller = account_call("uac_call_auth.xml", gw, tmp_path, service=TRUNK_NUMBER)
            caller.check()
            refused, answered = first.wait(timeout=10), second.wait(timeout=10)
            refused.check()
            answered.check()
            log = gw.log_text()
            calls = gw.cli_until(lambda out: "failed over" in out, "calls", "--recent", "5")

    (refused_invite,) = refused.received("INVITE ")
    (answered_invite,) = answered.received("INVITE ")
    assert refused_invite.startswith(f"INVITE sip:{TRUNK_NUMBER}@"), refused_invite
    assert answered_invite.startswith(f"INVITE sip:{TRUNK_NUMBER}@"), answered_invite
    # One call: the same caller, a new dialog towards the second trunk.
    assert header(refused_invite, "Call-ID") != header(answered_invite, "Call-ID")
    assert len(caller.received("SIP/2.0 200")) >= 2  # the INVITE's and the BYE's
    assert "carrier answered 503; failing over to trunk backup" in log
    assert "trunk carrier answered 503 Service Unavailable: failed over to trunk backup" in calls


# -- 1a''. call forwarding by redirect ---------------------------------------------------------


def test_a_phones_302_forwards_a_trunks_call_to_the_carrier_with_diversion(
    tmp_path: Path,
) -> None:
    """The PBX trunk calls alice's DID; alice's phone (sipp) forwards it with 302 to +4989555,
    at its own host; the gateway routes that number as alice's call, to the carrier (sipp),
    whose INVITE has the original caller's From and a Diversion naming alice's number there
    (the trunk's caller_id, alice having no DID on it); the call is connected."""
    phone = SippUas("calls/uas_redirect.xml", workdir=tmp_path)
    with SippUas("uas_answer.xml", workdir=tmp_path) as carrier:
        toml = outbound_trunk(carrier) + inbound_trunk()
        with GatewayProcess(tmp_path, accounts=ACCOUNTS, extra_toml=toml) as gw:
            register(gw, tmp_path, "udp", phone.port)
            with phone:
                caller = trunk_call("uac_call.xml", gw, tmp_path)
                caller.check()
                phone.wait(timeout=10).check()
                answered = carrier.wait(timeout=10)
                answered.check()
            calls = gw.cli_until(lambda out: "forwarded by" in out, "calls", "--recent", "5")

    (invite,) = answered.received("INVITE ")
    assert invite.startswith("INVITE sip:+4989555@"), invite
    assert "<sip:+4940777@" in header(invite, "From"), invite  # the PBX's caller, not alice
    diversion = header(invite, "Diversion")
    assert diversion.startswith(f"<sip:{CALLER_ID}@"), invite
    assert diversion.endswith(";reason=unconditional;counter=1"), invite
    assert "forwarded by alice (302, unconditional) to +4989555: taken by trunk carrier" in calls


# -- 1b. a trunk that challenges our INVITE --------------------------------------------------


def test_a_trunk_that_challenges_gets_the_trunks_credentials(tmp_path: Path) -> None:
    """The trunk (sipp) answers our INVITE with 401 and checks the digest of the next one with
    sipp's verifyauth (RFC 3261 §22.2): the gateway answers with the trunk's configured
    username and password, and the call connects; a wrong password would get 403."""
    keys = {"user": "voipgw-1", "password": "carrier-secret-7"}
    with SippUas("uas_auth_answer.xml", workdir=tmp_path, keys=keys) as trunk:
        trunks = outbound_trunk(trunk) + ('username = "voipgw-1"\npassword = "carrier-secret-7"\n')
        with GatewayProcess(tmp_path, accounts=ACCOUNTS, extra_toml=trunks) as gw:
            caller = account_call("uac_call_auth.xml", gw, tmp_path, service=TRUNK_NUMBER)
            caller.check()
            callee = trunk.wait(timeout=10)
            callee.check()
            log = gw.log_text()
    first, second = callee.received("INVITE ")
    assert not re.search(r"^Authorization:", first, re.MULTILINE | re.IGNORECASE)
    assert 'username="voipgw-1"' in header(second, "Authorization")
    assert header(first, "Call-ID") == header(second, "Call-ID")
    assert header(second, "CSeq") == "2 INVITE"
    # The password is in no log line (only that the challenge was answered).
    assert "carrier-secret-7" not in log
    assert "answered trunk carrier's 401 challenge" in log


def test_a_trunk_that_challenges_our_bye_gets_the_trunks_credentials(tmp_path: Path) -> None:
    """The trunk (sipp) answers the call, then challenges the BYE with 401 and checks the next
    BYE's digest with verifyauth: the gateway sends the BYE again with the dialog's next CSeq and
    the trunk's credentials, so the trunk ends the call too (it fails the scenario otherwise)."""
    keys = {"user": "voipgw-1", "password": "carrier-secret-7"}
    with SippUas("uas_answer_bye_auth.xml", workdir=tmp_path, keys=keys) as trunk:
        trunks = outbound_trunk(trunk) + ('username = "voipgw-1"\npassword = "carrier-secret-7"\n')
        with GatewayProcess(tmp_path, accounts=ACCOUNTS, extra_toml=trunks) as gw:
            caller = account_call("uac_call_auth.xml", gw, tmp_path, service=TRUNK_NUMBER)
            caller.check()
            callee = trunk.wait(timeout=10)
            callee.check()
            gw.wait_for_log(r"answered trunk carrier's challenge to our BYE")
            log = gw.log_text()
    first, second = callee.received("BYE ")
    assert not re.search(r"^Authorization:", first, re.MULTILINE | re.IGNORECASE)
    assert 'username="voipgw-1"' in header(second, "Authorization")
    assert header(first, "Call-ID") == header(second, "Call-ID")
    first_cseq = int(header(first, "CSeq").split()[0])
    assert header(second, "CSeq") == f"{first_cseq + 1} BYE"
    assert "carrier-secret-7" not in log


# -- 2. trunk -> registered account, no digest -----------------------------------------------


@TRANSPORTS
def test_trunk_calls_a_registered_account_without_digest(tmp_path: Path, transport: str) -> None:
    with GatewayProcess(tmp_path, accounts=ACCOUNTS, extra_toml=inbound_trunk()) as gw:
        alice = SippUas("uas_answer.xml", workdir=tmp_path, transport=transport)
        register(gw, tmp_path, transport, alice.port)
        with alice:
            caller = trunk_call("uac_call.xml", gw, tmp_path, transport=transport)
            caller.check()
            callee = alice.wait(timeout=10)
            callee.check()

    assert not caller.received("SIP/2.0 401") and not caller.received("SIP/2.0 407")
    (invite,) = callee.received("INVITE ")
    # The DID went to alice's registered Contact (RFC 3261 §10.3: the binding's URI).
    assert invite.startswith(f"INVITE sip:alice@{LOOPBACK}:{alice.port}"), invite
    assert_relayed_invite(invite, gw, not_ports={caller.media_port})
    answer = caller.received("SIP/2.0 200")[0]
    address, port = sdp_connection(answer)
    assert address == LOOPBACK != TRUNK_IP
    assert in_range(port, gw.media_ports) and port != alice.media_port


@TRANSPORTS
def test_a_late_offer_from_a_trunk_is_answered_in_the_acks(tmp_path: Path, transport: str) -> None:
    """An INVITE without SDP (RFC 3261 §13.2.1), as PBXs and carriers send with "delayed
    offer": the callee's 200 makes the offer, the caller's ACK answers it, each rewritten."""
    with GatewayProcess(tmp_path, accounts=ACCOUNTS, extra_toml=inbound_trunk()) as gw:
        alice = SippUas("uas_answer.xml", workdir=tmp_path, transport=transport)
        register(gw, tmp_path, transport, alice.port)
        with alice:
            caller = trunk_call("uac_call_late_offer.xml", gw, tmp_path, transport=transport)
            caller.check()
            callee = alice.wait(timeout=10)
            callee.check()

    (invite,) = callee.received("INVITE ")
    assert header(invite, "Content-Length") == "0", invite
    assert "\nv=0" not in invite, invite
    # The callee's offer reached the caller rewritten to the relay ...
    ok = caller.received("SIP/2.0 200")[0]  # to the INVITE (the next is to the BYE)
    address, port = sdp_connection(ok)
    assert address == LOOPBACK != TRUNK_IP
    assert in_range(port, gw.media_ports) and port != alice.media_port
    # ... and the caller's answer reached the callee in its ACK, rewritten the same way.
    (ack,) = callee.received("ACK ")
    assert header(ack, "Content-Type") == "application/sdp", ack
    address, ack_port = sdp_connection(ack)
    assert address == LOOPBACK
    assert in_range(ack_port, gw.media_ports) and ack_port not in (port, caller.media_port)


def test_rtp_flows_through_the_relay_after_a_late_offer(tmp_path: Path) -> None:
    """The relay's two sides are set the other way round (the callee's offer, then the caller's
    answer from its ACK): RTP goes caller -> relay -> callee and back, through the relay only."""
    tone = tone_ulaw(tmp_path / "tone.ulaw", 1000, seconds=2)  # 100 packets of 20 ms
    with GatewayProcess(tmp_path, accounts=ACCOUNTS, extra_toml=inbound_trunk()) as gw:
        alice = SippUas("uas_answer.xml", workdir=tmp_path, rtp_echo=True)
        register(gw, tmp_path, "udp", alice.port)
        with alice:
            media = udp_filter(gw.media_ports, alice.media_port)
            with Capture(tmp_path / "call.pcap", media) as capture:
                caller = run_sipp_uac(
                    "calls/uac_call_late_offer_rtp.xml",
                    gw.address,
                    workdir=tmp_path,
                    service=DID,
                    caller="+4940777",
                    local_ip=TRUNK_IP,
                    rtp_file=tone,
                )
            caller.check()
            callee = alice.wait(timeout=10)
            callee.check()

    offer = caller.received("SIP/2.0 200")[0]  # the callee's offer, rewritten for the caller
    (ack,) = callee.received("ACK ")  # the caller's answer, rewritten for the callee
    _, a_port = sdp_connection(offer)
    _, b_port = sdp_connection(ack)
    caller_media = (TRUNK_IP, caller.media_port)
    alice_media = (LOOPBACK, alice.media_port)
    ports = [caller.media_port, alice.media_port, *range(gw.media_ports[0], gw.media_ports[1] + 1)]
    streams = rtp_streams(capture.path, ports)
    a_relay, b_relay = (LOOPBACK, a_port), (LOOPBACK, b_port)
    expected = {
        (caller_media, a_relay),
        (b_relay, alice_media),
        (alice_media, b_relay),
        (a_relay, caller_media),
    }
    assert set(streams) == expected, streams
    sent = streams[(caller_media, a_relay)]
    assert 95 <= sent <= 100
    for flow in expected:
        assert abs(streams[flow] - sent) <= 3, streams


def test_a_trunk_that_requires_100rel_gets_a_reliable_180_and_its_prack_answered(
    tmp_path: Path,
) -> None:
    """RFC 3262 towards a caller that requires it (some carrier and IMS interconnects): the
    180 carries Require: 100rel and an RSeq, the caller's PRACK gets 200, the call goes on. The
    phone's leg is told we support reliable responses, not required to send them; this phone's
    180 is an ordinary one, so nothing is PRACKed there."""
    with GatewayProcess(tmp_path, accounts=ACCOUNTS, extra_toml=inbound_trunk()) as gw:
        alice = SippUas("calls/uas_ring_pause_answer.xml", workdir=tmp_path, call_duration_ms=500)
        register(gw, tmp_path, "udp", alice.port)
        with alice:
            caller = trunk_call("calls/uac_call_100rel.xml", gw, tmp_path, call_duration_ms=200)
            caller.check()  # the 180 had an RSeq; the PRACK's 200 came before the INVITE's
            callee = alice.wait(timeout=10)
            callee.check()

    ringing = caller.received("SIP/2.0 180")[0]
    assert header(ringing, "Require") == "100rel"
    assert 1 <= int(header(ringing, "RSeq")) <= 2**31 - 1
    (prack,) = caller.sent("PRACK ")
    assert header(prack, "RAck") == f"{header(ringing, 'RSeq')} 1 INVITE"
    (invite,) = callee.received("INVITE ")
    assert header(invite, "Supported") == "100rel, timer"
    assert "Require:" not in invite
    assert not callee.received("PRACK ")


def test_a_phone_that_sends_reliable_ringing_is_pracked_by_the_gateway(tmp_path: Path) -> None:
    """RFC 3262 on the callee's leg (specs/sip-robustness.md: the B2BUA PRACKs leg B itself):
    the phone's reliable 180 gets the gateway's PRACK, the trunk that asked for nothing gets
    an ordinary 180, and the call goes on; the BYE continues the early dialog's CSeq."""
    with GatewayProcess(tmp_path, accounts=ACCOUNTS, extra_toml=inbound_trunk()) as gw:
        alice = SippUas("calls/uas_reliable_ringing.xml", workdir=tmp_path)
        register(gw, tmp_path, "udp", alice.port)
        with alice:
            caller = trunk_call("uac_call.xml", gw, tmp_path)
            caller.check()
            callee = alice.wait(timeout=10)
            callee.check()  # Supported: 100rel in the INVITE, RAck: 1 1 INVITE in the PRACK

    (prack,) = callee.received("PRACK ")
    assert header(prack, "CSeq") == "2 PRACK"
    assert header(callee.received("BYE ")[0], "CSeq") == "3 BYE"
    ringing = caller.received("SIP/2.0 180")[0]
    assert "RSeq:" not in ringing and "Require:" not in ringing
    assert not caller.received("PRACK ") and not caller.sent("PRACK ")


def test_a_200_without_sdp_after_an_answer_in_a_reliable_183_completes_the_call(
    tmp_path: Path,
) -> None:
    """RFC 3262 §5 as carriers use it: the phone answers in a reliable 183 (PRACKed by the
    gateway) and sends its 200 without SDP. The call is answered, not ended for a "2xx without
    SDP answer"; the trunk, which used no 100rel, gets the answer in its 200 as in its 183."""
    with GatewayProcess(tmp_path, accounts=ACCOUNTS, extra_toml=inbound_trunk()) as gw:
        alice = SippUas("calls/uas_answer_in_reliable_183.xml", workdir=tmp_path)
        register(gw, tmp_path, "udp", alice.port)
        with alice:
            caller = trunk_call("uac_call.xml", gw, tmp_path, call_duration_ms=200)
            caller.check()
            callee = alice.wait(timeout=10)
            callee.check()  # Supported: 100rel in the INVITE, RAck: 1 1 INVITE in the PRACK

    (ok,) = [m for m in callee.sent("SIP/2.0 200") if "INVITE" in header(m, "CSeq")]
    assert header(ok, "Content-Length") == "0"
    early = caller.received("SIP/2.0 183")[0]
    answer = caller.received("SIP/2.0 200")[0]
    assert "RSeq:" not in early
    assert "m=audio" in answer
    assert answer[answer.index("v=0") :] == early[early.index("v=0") :]  # the same SDP
    assert callee.received("BYE ")


def test_session_timers_a_trunk_asks_the_gateway_to_refresh_and_it_does_with_update(
    tmp_path: Path,
) -> None:
    """RFC 4028 in real time (about 46 s): a trunk whose INVITE asks the gateway to refresh a
    90 s session gets that in the 200, refreshes once itself with an UPDATE answered on its own
    leg, and then gets the gateway's UPDATE at half the interval; the phone's leg has its own
    timer, asked for in its INVITE."""
    with GatewayProcess(tmp_path, accounts=ACCOUNTS, extra_toml=inbound_trunk()) as gw:
        alice = SippUas("uas_answer.xml", workdir=tmp_path, timeout=90)
        register(gw, tmp_path, "udp", alice.port)
        with alice:
            caller = trunk_call("calls/uac_call_session_timer.xml", gw, tmp_path, timeout=80)
            caller.check()  # the 200s stated the timer; our UPDATE came within 60 s
            callee = alice.wait(timeout=10)
            callee.check()

    (ours,) = caller.received("UPDATE ")
    assert header(ours, "Session-Expires") == "90;refresher=uac"
    assert header(ours, "Content-Length") == "0"
    assert re.search(r"^Contact: ", ours, re.M), ours
    (invite,) = callee.received("INVITE ")
    assert header(invite, "Supported") == "100rel, timer"
    assert header(invite, "Session-Expires") == "1800;refresher=uas"
    # The trunk's UPDATE stayed on its leg.
    assert not callee.received("UPDATE ")


def test_a_sip_i_trunk_call_reaches_the_phone_with_plain_sdp(tmp_path: Path) -> None:
    """A PSTN gateway's INVITE with SDP and ISUP in multipart/mixed (RFC 5621): the phone gets
    the gateway's SDP alone; the ISUP part (handling=optional) stays on the trunk's leg."""
    with GatewayProcess(tmp_path, accounts=ACCOUNTS, extra_toml=inbound_trunk()) as gw:
        alice = SippUas("uas_answer.xml", workdir=tmp_path)
        register(gw, tmp_path, "udp", alice.port)
        with alice:
            caller = trunk_call("calls/uac_call_sip_i.xml", gw, tmp_path)
            caller.check()
            callee = alice.wait(timeout=10)
            callee.check()

    (invite,) = callee.received("INVITE ")
    assert header(invite, "Content-Type") == "application/sdp", invite
    assert "ISUP" not in invite and "sip-i-boundary" not in invite
    assert_relayed_invite(invite, gw, not_ports={caller.media_port})
    answer = caller.received("SIP/2.0 200")[0]
    assert header(answer, "Content-Type") == "application/sdp"
    address, port = sdp_connection(answer)
    assert address == LOOPBACK and in_range(port, gw.media_ports)


# -- 3. refusals: wrong password, unknown user, no binding -----------------------------------


def test_wrong_password_is_challenged_again_and_logged_without_it(tmp_path: Path) -> None:
    # uac_call_auth.xml cannot end on a second 407 (sipp takes it for a retransmission of the
    # first one and ACKs it with the wrong branch until its timeout); uac_auth_refused.xml
    # accepts it as the final answer to the second INVITE and ACKs it properly.
    # The wrong password's warning is what the test provokes (and reads).
    allowed = [r"authentication failed for user 'alice'"]
    with GatewayProcess(tmp_path, accounts=ACCOUNTS, allowed_warnings=allowed) as gw:
        caller = account_call(
            "calls/uac_auth_refused.xml", gw, tmp_path, service="bob", account=(ALICE[0], GUESS)
        )
        match = gw.wait_for_log(
            r"INVITE from (127\.0\.0\.1:\d+): authentication failed for user 'alice'"
        )
    caller.check()
    first, again = caller.received("SIP/2.0 407")
    assert "CSeq: 1 INVITE" in first
    assert "CSeq: 2 INVITE" in again  # the INVITE with the wrong credentials, challenged again
    assert "Proxy-Authenticate: Digest" in again
    assert final_status_line(caller).startswith("SIP/2.0 407 ")
    assert match[1] == f"{LOOPBACK}:{caller.port}"  # the source, as the peer sent from it
    log_text = gw.log_text()
    assert GUESS not in log_text
    assert ALICE[1] not in log_text


def test_unknown_user_gets_404_saying_why(tmp_path: Path) -> None:
    with GatewayProcess(tmp_path, accounts=ACCOUNTS) as gw:
        caller = account_call("calls/uac_auth_refused.xml", gw, tmp_path, service="nobody")
    caller.check()
    status = final_status_line(caller)
    assert status.startswith("SIP/2.0 404 "), status
    assert "nobody" in status, status  # the reason phrase names what was not found


def test_account_without_binding_gets_480(tmp_path: Path) -> None:
    with GatewayProcess(tmp_path, accounts=ACCOUNTS) as gw:
        caller = account_call(
            "calls/uac_auth_refused.xml", gw, tmp_path, service="alice", account=BOB
        )
    caller.check()
    status = final_status_line(caller)
    assert status.startswith("SIP/2.0 480 "), status  # RFC 3261 §21.4.18
    assert "alice" in status, status


def test_a_trunk_with_interworking_gets_the_release_cause_of_its_refused_call(
    tmp_path: Path,
) -> None:
    # [[trunks]] interworking = "rfc3398" (the pstn plugin): the DID's account has no phone
    # registered; the carrier's 480 carries the ISUP cause RFC 3398 maps it to (RFC 6432).
    interworking = inbound_trunk() + 'interworking = "rfc3398"\n'
    with GatewayProcess(
        tmp_path,
        accounts=ACCOUNTS,
        settings={"plugins": {"enable": ["udp", "tcp", "pstn"]}},
        extra_toml=interworking,
    ) as gw:
        caller = trunk_call("calls/uac_refused.xml", gw, tmp_path)
    caller.check()
    refused = caller.received("SIP/2.0 480")[0]
    assert header(refused, "Reason") == "Q.850;cause=18", refused


# -- 4. busy and CANCEL ----------------------------------------------------------------------


def test_busy_trunk_gives_the_caller_486(tmp_path: Path) -> None:
    with (
        SippUas("uas_busy.xml", workdir=tmp_path) as trunk,
        GatewayProcess(tmp_path, accounts=ACCOUNTS, extra_toml=outbound_trunk(trunk)) as gw,
    ):
        caller = account_call("calls/uac_auth_refused.xml", gw, tmp_path, service=TRUNK_NUMBER)
        caller.check()
        callee = trunk.wait(timeout=10)
        callee.check()  # the gateway ACKed the 486 (RFC 3261 §17.1.1.3)
    assert final_status_line(caller).startswith("SIP/2.0 486 ")
    # The trunk's release cause reaches the caller (RFC 3326).
    busy = caller.received("SIP/2.0 486")[0]
    assert header(busy, "Reason") == 'Q.850;cause=17;text="User busy"', busy
    assert len(callee.received("INVITE ")) == 1
    assert len(callee.received("ACK ")) == 1


def test_a_trunk_that_rings_forever_is_given_up_after_the_ring_timeout(tmp_path: Path) -> None:
    """Timer C (RFC 3261 §16.6 step 11, [sip] ring_timeout): the trunk (sipp) rings and never
    answers; the gateway CANCELs it (the scenario needs the CANCEL to finish) and gives the
    caller 408."""
    with (
        SippUas("uas_ring_forever.xml", workdir=tmp_path) as trunk,
        GatewayProcess(
            tmp_path,
            accounts=ACCOUNTS,
            settings={"sip": {"ring_timeout": 2}},
            extra_toml=outbound_trunk(trunk),
        ) as gw,
    ):
        caller = account_call("calls/uac_auth_refused.xml", gw, tmp_path, service=TRUNK_NUMBER)
        caller.check()
        callee = trunk.wait(timeout=10)
        callee.check()  # got the CANCEL, answered 487, got the ACK
        gw.wait_for_log(r"ended: no answer within 2 s")
    assert final_status_line(caller).startswith("SIP/2.0 408 ")
    assert len(callee.received("CANCEL ")) == 1


def test_cancel_reaches_the_ringing_trunk(tmp_path: Path) -> None:
    with (
        SippUas("uas_ring_forever.xml", workdir=tmp_path) as trunk,
        GatewayProcess(tmp_path, accounts=ACCOUNTS, extra_toml=outbound_trunk(trunk)) as gw,
    ):
        caller = account_call("calls/uac_cancel_auth.xml", gw, tmp_path, service=TRUNK_NUMBER)
        caller.check()  # 200 for the CANCEL and 487 for the INVITE (RFC 3261 §9.2)
        callee = trunk.wait(timeout=10)
        callee.check()  # got the CANCEL, answered 487, got the ACK
    (invite,) = callee.received("INVITE ")
    (cancel,) = callee.received("CANCEL ")
    # RFC 3261 §9.1: the CANCEL matches the INVITE's Request-URI, Call-ID and CSeq number.
    assert cancel.split(" ", 2)[1] == invite.split(" ", 2)[1]
    assert header(cancel, "Call-ID") == header(invite, "Call-ID")
    assert header(cancel, "CSeq").split()[0] == header(invite, "CSeq").split()[0]
    assert len(caller.received("SIP/2.0 487")) == 1
    assert [header(m, "CSeq") for m in caller.received("SIP/2.0 200")] == ["2 CANCEL"]


def test_a_trunk_refusing_after_the_cancel_give_up_has_each_copy_acked(tmp_path: Path) -> None:
    """A trunk (sipp) that ignores our CANCEL and refuses 2 s later, after the gateway gave its
    INVITE up (RFC 3261 §9.1, 64*T1 with T1 = 20 ms): its 486 and the copy of it are each ACKed
    (§17.1.1.3); unACKed, the trunk would re-send the 486 until its Timer H."""
    with (
        SippUas("calls/uas_ignore_cancel_refuse_late.xml", workdir=tmp_path) as trunk,
        GatewayProcess(
            tmp_path,
            accounts=ACCOUNTS,
            settings={"sip": {"t1": 0.02}},
            extra_toml=outbound_trunk(trunk),
        ) as gw,
    ):
        caller = account_call("calls/uac_cancel_auth.xml", gw, tmp_path, service=TRUNK_NUMBER)
        caller.check()
        callee = trunk.wait(timeout=15)
        callee.check()  # got the CANCEL, sent the 486 twice, got an ACK for each
    (invite,) = callee.received("INVITE ")
    acks = callee.received("ACK ", retransmissions=True)
    assert len(acks) == 2, callee.describe()
    assert header(acks[0], "CSeq") == f"{header(invite, 'CSeq').split()[0]} ACK"
    assert header(acks[0], "Via") == header(invite, "Via")  # hop by hop: the INVITE's Via
    assert callee.received("BYE ") == []


def test_a_second_forks_200_is_acked_in_its_dialog_and_byed_once(tmp_path: Path) -> None:
    """A trunk (sipp) answers with two 200s of different To tags, as a forking proxy whose
    two targets answered passes on (RFC 3261 §16.7). The call keeps the first dialog; the
    second gets its own ACK and a BYE (§13.2.2.4, §15), each to its Contact with its To tag,
    and the caller's hang-up ends the first."""
    with (
        SippUas("calls/uas_answer_forked_twice.xml", workdir=tmp_path) as trunk,
        GatewayProcess(tmp_path, accounts=ACCOUNTS, extra_toml=outbound_trunk(trunk)) as gw,
    ):
        # The caller hangs up after 3 s: dialog 2's ACK and BYE come well before its BYE,
        # which sipp (strict about order) would otherwise take for unexpected.
        caller = run_sipp_uac(
            "uac_call_auth.xml",
            gw.address,
            workdir=tmp_path,
            service=TRUNK_NUMBER,
            caller=ALICE[0],
            auth=ALICE,
            call_duration_ms=3000,
        )
        caller.check()
        callee = trunk.wait(timeout=15)
        callee.check()  # ACK, ACK, the BYE of dialog 2, the BYE of dialog 1

    def dialog(message: str) -> tuple[str, bool]:
        """Which 200 a request belongs to (its To tag) and whether it went to fork2."""
        tag = header(message, "To").rsplit("tag=", 1)[1].split(";")[0]
        return tag.split("SIPpTag")[1][:2], message.split(" ", 2)[1].startswith("sip:fork2@")

    # The ACKs in order (sipp sends the second 200 once the first is ACKed), then the BYEs.
    assert [dialog(m) for m in callee.received("ACK ")] == [("01", False), ("02", True)]
    assert [dialog(m) for m in callee.received("BYE ")] == [("02", True), ("01", False)]


# -- 5. BYE from each side -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uac", "uas", "hangs_up"),
    [
        ("uac_call.xml", "uas_answer.xml", "caller"),
        ("uac_call_remote_bye.xml", "uas_bye_first.xml", "callee"),
    ],
    ids=["caller-hangs-up", "callee-hangs-up"],
)
def test_bye_from_either_side_ends_both_legs(
    tmp_path: Path, uac: str, uas: str, hangs_up: str
) -> None:
    with GatewayProcess(tmp_path, accounts=ACCOUNTS, extra_toml=inbound_trunk()) as gw:
        alice = SippUas(uas, workdir=tmp_path, call_duration_ms=300)
        register(gw, tmp_path, "udp", alice.port)
        with alice:
            caller = trunk_call(uac, gw, tmp_path)
            caller.check()
            callee = alice.wait(timeout=10)
            callee.check()
        leg = "A" if hangs_up == "caller" else "B"
        gw.wait_for_log(rf"call \S+ ended: BYE from {leg} leg")
    # The side that did not hang up got exactly one BYE, from the gateway, and answered it 200.
    told = callee if hangs_up == "caller" else caller
    hung_up = caller if hangs_up == "caller" else callee
    (bye,) = told.received("BYE ")
    assert re.search(rf"^Via: SIP/2.0/UDP {re.escape(LOOPBACK)}:{gw.port}\b", bye, re.M), bye
    assert not hung_up.received("BYE ")
    assert len(hung_up.received("SIP/2.0 200")) >= 1


# -- 6. hold and resume ------------------------------------------------------------------------


def test_hold_and_resume_re_invites_pass_through(tmp_path: Path) -> None:
    with GatewayProcess(tmp_path, accounts=ACCOUNTS, extra_toml=inbound_trunk()) as gw:
        alice = SippUas("calls/uas_answer_reinvite.xml", workdir=tmp_path)
        register(gw, tmp_path, "udp", alice.port)
        with alice:
            caller = trunk_call("calls/uac_hold_resume.xml", gw, tmp_path, call_duration_ms=200)
            caller.check()  # the answers were recvonly, then sendrecv
            callee = alice.wait(timeout=10)
            callee.check()  # the offers were sendonly, then sendrecv

    invite, hold, resume = callee.received("INVITE ")
    for offer, direction in ((hold, "sendonly"), (resume, "sendrecv")):
        assert f"a={direction}" in offer, offer
        assert_relayed_invite(offer, gw, not_ports={caller.media_port})
        # The same relay port as in the initial offer: hold is not a new call.
        assert sdp_connection(offer) == sdp_connection(invite)
    answers = [m for m in caller.received("SIP/2.0 200") if "INVITE" in header(m, "CSeq")]
    assert len(answers) == 3
    for answer, direction in zip(answers, ("sendrecv", "recvonly", "sendrecv"), strict=True):
        assert f"a={direction}" in answer, answer
        address, port = sdp_connection(answer)
        assert address == LOOPBACK != TRUNK_IP
        assert in_range(port, gw.media_ports) and port != callee.media_port
    # RFC 3264 §8: each new SDP of a session keeps the o= line and adds one to its version.
    for sdps in ((invite, hold, resume), answers):
        origins = [origin(sdp) for sdp in sdps]
        assert len({(username, session) for username, session, _ in origins}) == 1, origins
        first_version = origins[0][2]
        assert [version for _, _, version in origins] == [first_version + i for i in range(3)]


# -- 7. registrations survive a restart --------------------------------------------------------


def test_a_reinvite_without_sdp_passes_through_as_a_late_offer(tmp_path: Path) -> None:
    """A PBX's re-INVITE without SDP (RFC 3261 §14.1): the callee's 200 offers, the caller's ACK
    answers; both reach the other side rewritten to the relay's port of this call."""
    with GatewayProcess(tmp_path, accounts=ACCOUNTS, extra_toml=inbound_trunk()) as gw:
        alice = SippUas("calls/uas_answer_late_reinvite.xml", workdir=tmp_path)
        register(gw, tmp_path, "udp", alice.port)
        with alice:
            caller = trunk_call("calls/uac_late_reinvite.xml", gw, tmp_path, call_duration_ms=200)
            caller.check()  # the 200 to its re-INVITE offered
            callee = alice.wait(timeout=10)
            callee.check()  # the re-INVITE had no SDP, the ACK an answer

    invite, reinvite = callee.received("INVITE ")
    assert header(reinvite, "Content-Length") == "0", reinvite
    answers = [m for m in caller.received("SIP/2.0 200") if "INVITE" in header(m, "CSeq")]
    offer = answers[1]  # the 200 to the re-INVITE
    assert sdp_connection(offer) == sdp_connection(answers[0])  # the same relay port
    (ack,) = [m for m in callee.received("ACK ") if header(m, "CSeq") == "2 ACK"]
    assert header(ack, "Content-Type") == "application/sdp", ack
    assert sdp_connection(ack) == sdp_connection(invite)  # the callee's side of the relay
    address, port = sdp_connection(ack)
    assert address == LOOPBACK and in_range(port, gw.media_ports)


@TRANSPORTS
def test_registration_survives_a_gateway_restart(tmp_path: Path, transport: str) -> None:
    first = GatewayProcess(tmp_path / "first", accounts=ACCOUNTS, extra_toml=inbound_trunk())
    alice = SippUas("uas_answer.xml", workdir=tmp_path, transport=transport)
    with first:
        register(first, tmp_path, transport, alice.port)
    # A new process on the same port and store: the binding is only in the store now.
    second = GatewayProcess(
        tmp_path / "second",
        port=first.port,
        state_dir=first.state_dir,
        extra_toml=inbound_trunk(),
    )
    with second, alice:
        caller = trunk_call("uac_call.xml", second, tmp_path, transport=transport)
        caller.check()
        callee = alice.wait(timeout=10)
        callee.check()
    assert "registered" not in second.log_text()  # nobody registered with the second one
    (invite,) = callee.received("INVITE ")
    assert invite.startswith(f"INVITE sip:alice@{LOOPBACK}:{alice.port}"), invite
    assert_relayed_invite(invite, second, not_ports={caller.media_port})
