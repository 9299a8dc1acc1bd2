"""What the recorder (SRS) itself asks of the recording session, through the B2BUA: the SRS is a
SIP agent on the in-memory network; the call's RTP and the copies run on real 127.0.0.1 sockets,
in virtual time.

- an SRS that re-offers other ports (a recording moved to another media server, RFC 3264 §8)
  is answered with our labels, ports and sendonly, line for line, and the copies arrive at its
  new ports from then on, none at the old ones;
- with SDES, its re-offer of two suites per line is answered with one a=crypto line per m= line
  (RFC 4568 §6.1), by the rule of call legs: the suite first in our srtp_suites, or with
  ``answer_suite = "offer-order"`` the first of its lines we allow; the copies at the new ports
  decrypt under the key our answer gave;
- an offer we cannot answer (no codec of the call; SRTP where we send RTP) gets 488 and the
  copies go on to the old ports; another body gets 415, and a plugin that fails on the request
  a 500 from the core, the recording going on;
- its metadata snapshot request (RFC 7866 §9), by UPDATE and by re-INVITE (whose 200 then offers
  our SDP), is answered 200 and followed by a re-INVITE of ours with the complete metadata
  beside an SDP offer, every id as before;
- an SRS whose answer to our re-INVITE gives other ports gets the copies there too;
- our re-INVITE waits for the SRS's ACK of our 2xx to its own re-INVITE (RFC 3261 §14.1: no
  new INVITE transaction while one is in progress): its ACKs lost, the snapshot is held, and
  goes once an ACK of our re-sent 200 arrives;
- an SRS whose re-INVITE has no offer gets ours in the 200 (the SDP in force, RFC 3261 §14.2)
  and the answer in its ACK moves the copies; an ACK whose answer is unusable, or missing, is
  logged and the copies go on where they went (an ACK cannot be refused), the session kept;
- an SRS that runs no session timer (its 2xx without Session-Expires) is probed with an
  in-dialog OPTIONS at half the interval (RFC 3261 §11); one that stops answering is BYEd and
  the rest of the call goes in a new recording session.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pylibsrtp
import pytest
import trio

import gateway.plugins.taps.siprec as siprec_plugin
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.plugins.keyexchange.sdes import parse_crypto_untrusted
from gateway.plugins.taps.siprec import METADATA_REQUEST_TYPE, srs_sdp
from gateway.testing.sip_agent import Received
from tests.component.calls.b2bua_env import GW, eventually, next_within, sent
from tests.component.calls.dtls_phone import bind
from tests.component.calls.siprec_calls import (
    CALLEE_PORT,
    CALLER_PORT,
    SRS,
    SRS_PORT,
    answered_call,
    rtp,
    siprec_env,
    srs_answer,
)
from tests.component.calls.siprec_counts import counted
from tests.component.calls.siprec_srtp_calls import (
    CALLEE_PORT as SRTP_CALLEE_PORT,
)
from tests.component.calls.siprec_srtp_calls import (
    CALLER_PORT as SRTP_CALLER_PORT,
)
from tests.component.calls.siprec_srtp_calls import (
    GW_TLS,
    srtp_answer,
    srtp_env,
)
from tests.component.calls.siprec_srtp_calls import (
    answered_call as srtp_call,
)
from tests.component.calls.siprec_timed_env import take, timed_env
from tests.port_blocks import port_bases

(NEW_PORT,) = port_bases(1)  # the media server the SRS moves the recording to (our own port)
OLD = (SRS_PORT, SRS_PORT + 2)
NEW = (NEW_PORT, NEW_PORT + 2)


async def copies(
    to_caller_side: tuple[str, int],
    to_callee_side: tuple[str, int],
    seqs: range,
    *,
    caller_port: int = CALLER_PORT,
    callee_port: int = CALLEE_PORT,
) -> dict[int, list[bytes]]:
    """Send ``seqs`` both ways through the call; what each of the SRS's ports, old and new,
    receives."""
    got: dict[int, list[bytes]] = {port: [] for port in (*OLD, *NEW)}
    with (
        await bind(caller_port) as caller,
        await bind(callee_port) as callee,
        await bind(OLD[0]) as old_a,
        await bind(OLD[1]) as old_b,
        await bind(NEW[0]) as new_a,
        await bind(NEW[1]) as new_b,
    ):
        for seq in seqs:
            await caller.sendto(rtp(seq, 0x11, 0x1111), to_caller_side)
            await callee.sendto(rtp(seq, 0x22, 0x2222), to_callee_side)
            await trio.sleep(0.02)
        for port, sock in zip((*OLD, *NEW), (old_a, old_b, new_a, new_b), strict=True):
            with trio.move_on_after(1):
                while True:
                    data, _ = await sock.recvfrom(2048)
                    got[port].append(data)
    return got


async def recorded(nursery: trio.Nursery, tmp_path: Path, seed: int) -> tuple:
    env, srs = await siprec_env(nursery, tmp_path, seed)
    call, to_caller_side, to_callee_side = await answered_call(env)
    recording = await srs.next_call()
    await recording.answer(200, sdp=srs_answer())
    await srs.next_request("ACK", timeout=5)
    return env, srs, call, recording, to_caller_side, to_callee_side


async def test_an_srs_re_offering_new_ports_gets_the_copies_there(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, srs, call, recording, to_caller, to_callee = await recorded(nursery, tmp_path, voipgw_seed)
    before = await copies(to_caller, to_callee, range(5))
    assert before[OLD[0]] == [rtp(s, 0x11, 0x1111) for s in range(5)]

    # The SRS moves the recording: a re-INVITE offering new ports (labels in reverse order).
    exchange = await recording.request(
        "INVITE", body=srs_answer(ports=NEW), content_type="application/sdp"
    )
    answer = await exchange.final()
    assert answer.status == 200
    ours = parse_sdp_untrusted(answer.body)
    assert [m.attributes.get("label") for m in ours.media] == ["2", "1"]  # its order
    assert all(m.attributes.has("sendonly") and m.port != 0 for m in ours.media)
    invite = parse_sdp_untrusted(
        srs_sdp(recording.invite.headers.get("Content-Type"), recording.invite.body)
    )
    first_ports = {m.attributes.get("label"): m.port for m in invite.media}
    assert {m.attributes.get("label"): m.port for m in ours.media} == first_ports  # our ports
    assert ours.origin.session_version > invite.origin.session_version  # RFC 3264 §8

    after = await copies(to_caller, to_callee, range(5, 10))
    assert after[NEW[0]] == [rtp(s, 0x11, 0x1111) for s in range(5, 10)]
    assert after[NEW[1]] == [rtp(s, 0x22, 0x2222) for s in range(5, 10)]
    assert after[OLD[0]] == [] and after[OLD[1]] == []
    await call.bye()  # type: ignore[attr-defined]
    await srs.next_request("BYE", timeout=20)
    await eventually(lambda: env.calls == 0)


async def test_an_offer_we_cannot_answer_gets_488_and_the_recording_goes_on_unchanged(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, _, call, recording, to_caller, to_callee = await recorded(nursery, tmp_path, voipgw_seed)
    g722_only = srs_answer(ports=NEW).replace(b"RTP/AVP 0", b"RTP/AVP 9")  # not the call's
    srtp = srs_answer(ports=NEW).replace(b"RTP/AVP", b"RTP/SAVP")
    for offer in (g722_only, srtp):
        exchange = await recording.request("INVITE", body=offer, content_type="application/sdp")
        assert (await exchange.final()).status == 488
    exchange = await recording.request("UPDATE", body=g722_only, content_type="application/sdp")
    assert (await exchange.final()).status == 488

    after = await copies(to_caller, to_callee, range(5))
    assert after[OLD[0]] == [rtp(s, 0x11, 0x1111) for s in range(5)]
    assert after[OLD[1]] == [rtp(s, 0x22, 0x2222) for s in range(5)]
    assert after[NEW[0]] == [] and after[NEW[1]] == []
    assert env.calls == 1
    await call.bye()  # type: ignore[attr-defined]


def session_ids(body: bytes) -> list[str]:
    return re.findall(r'session_id="([^"]+)"', body.decode())


async def test_a_metadata_request_is_answered_with_a_complete_snapshot(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, srs, call, recording, _, _ = await recorded(nursery, tmp_path, voipgw_seed)
    invite = recording.invite
    assert METADATA_REQUEST_TYPE in invite.headers.get_all("Accept")
    first_ids = session_ids(invite.body)

    # By UPDATE (RFC 7866 §9): 200 without a body, then our re-INVITE with the snapshot.
    exchange = await recording.request(
        "UPDATE", body=b"SRS internal error", content_type=METADATA_REQUEST_TYPE
    )
    answer = await exchange.final()
    assert answer.status == 200 and answer.body == b""
    snapshot = await srs.next_request("INVITE", timeout=10)
    content_type = snapshot.request.headers.get("Content-Type") or ""
    assert content_type.startswith("multipart/mixed")
    body = snapshot.request.body.decode()
    assert "<datamode>complete</datamode>" in body and body.count("<participant ") == 2
    assert session_ids(snapshot.request.body) == first_ids  # the same session and streams
    offer = parse_sdp_untrusted(srs_sdp(content_type, snapshot.request.body))
    assert [m.attributes.get("label") for m in offer.media] == ["1", "2"]
    await srs.respond(snapshot, 200, body=srs_answer(), content_type="application/sdp")
    await trio.sleep(1)

    # By re-INVITE: its 200 must offer (RFC 3261 §14.2): our SDP; after the ACK, the snapshot.
    exchange = await recording.request(
        "INVITE", body=b"lost it", content_type=METADATA_REQUEST_TYPE
    )
    answer = await exchange.final()
    assert answer.status == 200
    assert [m.attributes.get("label") for m in parse_sdp_untrusted(answer.body).media] == [
        "1",
        "2",
    ]
    snapshot = await srs.next_request("INVITE", timeout=10)
    assert "<datamode>complete</datamode>" in snapshot.request.body.decode()
    await srs.respond(snapshot, 200, body=srs_answer(), content_type="application/sdp")
    assert env.calls == 1
    await call.bye()  # type: ignore[attr-defined]


async def test_our_re_invite_waits_for_the_srss_ack_of_our_2xx_to_its_re_invite(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """The SRS asks for a snapshot by re-INVITE; its ACKs of our 200 are lost for 10 s. Our
    snapshot re-INVITE is not sent meanwhile (RFC 3261 §14.1: the SRS's INVITE transaction is
    not over until that ACK, §13.3.1.4), only our 200 again; once an ACK gets through, the
    snapshot follows it."""
    env, srs, call, recording, _, _ = await recorded(nursery, tmp_path, voipgw_seed)
    exchange = await recording.request(
        "INVITE", body=b"lost it", content_type=METADATA_REQUEST_TYPE
    )
    env.network.set_link(SRS, GW, drop=1.0)  # the re-INVITE is on its way; what follows is lost
    assert (await exchange.final()).status == 200
    assert await next_within(srs, "INVITE", 10) is None  # waiting for the ACK, not for the timer
    oks = [d for d in sent(env.network.capture, GW, SRS, b"SIP/2.0 200 ") if b" INVITE" in d.data]
    assert len(oks) >= 4  # our 200 re-sent at T1, 2*T1, 4*T1 ... for the ACK it waits for
    env.network.clear_link(SRS, GW)
    cleared = trio.current_time()
    snapshot = await srs.next_request("INVITE", timeout=10)
    assert "<datamode>complete</datamode>" in snapshot.request.body.decode()
    [first_ack, *_] = [d for d in sent(env.network.capture, SRS, GW, b"ACK ") if d.time >= cleared]
    snapshot_sent = sent(env.network.capture, GW, SRS, b"INVITE ")[-1]
    assert snapshot_sent.time >= first_ack.time  # after the ACK arrived, not before
    await srs.respond(snapshot, 200, body=srs_answer(), content_type="application/sdp")
    assert env.calls == 1
    await call.bye()  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("answer_suite", "chosen"),
    [
        (None, (2, "AES_CM_128_HMAC_SHA1_80")),  # the default: our srtp_suites order
        ("policy-order", (2, "AES_CM_128_HMAC_SHA1_80")),
        ("offer-order", (1, "AES_CM_128_HMAC_SHA1_32")),  # the SRS's first we allow
    ],
)
async def test_an_sdes_re_offer_of_two_suites_is_answered_with_one_and_the_copies_follow(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    answer_suite: str | None,
    chosen: tuple[int, str],
) -> None:
    table: dict[str, object] = {} if answer_suite is None else {"answer_suite": answer_suite}
    env, srs = await srtp_env(
        nursery,
        tmp_path,
        voipgw_seed,
        srtp_suites=["AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32"],
        **table,
    )
    call, to_caller, to_callee = await srtp_call(env)
    recording = await srs.next_call()
    invite = recording.invite
    offer = parse_sdp_untrusted(srs_sdp(invite.headers.get("Content-Type"), invite.body))
    assert [len(m.attributes.values("crypto")) for m in offer.media] == [2, 2]
    await recording.answer(200, sdp=srtp_answer(offer))
    await srs.next_request("ACK", timeout=5)

    # The SRS re-offers new ports with two suites per line, the 32-bit tag first.
    srs_key = base64.b64encode(bytes(range(30))).decode()
    lines = ["v=0", "o=srs 1 2 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0"]
    for label, port in (("1", NEW[0]), ("2", NEW[1])):
        lines += [
            f"m=audio {port} RTP/SAVP 0",
            f"a=label:{label}",
            "a=recvonly",
            f"a=crypto:1 AES_CM_128_HMAC_SHA1_32 inline:{srs_key}",
            f"a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:{srs_key}",
        ]
    exchange = await recording.request(
        "INVITE", body=("\r\n".join(lines) + "\r\n").encode(), content_type="application/sdp"
    )
    answer = await exchange.final()
    assert answer.status == 200
    ours = parse_sdp_untrusted(answer.body)
    checkers = []
    for media in ours.media:
        (crypto,) = media.attributes.values("crypto")  # one line per m= line
        line = parse_crypto_untrusted(crypto)
        # Our srtp_suites order (_80 first) picks the line, not the SRS's (RFC 4568 §7.1.1),
        # unless answer_suite asks for the offer's order, as on call legs.
        assert (line.tag, line.suite) == chosen
        profile = (
            pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80
            if line.suite.endswith("_80")
            else pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32
        )
        policy = pylibsrtp.Policy(
            key=line.keys[0].key_salt,
            ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND,
            srtp_profile=profile,
        )
        checkers.append(pylibsrtp.Session(policy))
    assert srs_key not in answer.body.decode()

    got = await copies(
        to_caller,
        to_callee,
        range(5),
        caller_port=SRTP_CALLER_PORT,
        callee_port=SRTP_CALLEE_PORT,
    )
    assert got[OLD[0]] == [] and got[OLD[1]] == []
    assert [checkers[0].unprotect(p) for p in got[NEW[0]]] == [
        rtp(s, 0x11, 0x1111) for s in range(5)
    ]
    assert [checkers[1].unprotect(p) for p in got[NEW[1]]] == [
        rtp(s, 0x22, 0x2222) for s in range(5)
    ]
    await call.bye()  # type: ignore[attr-defined]
    bye = await srs.next_request("BYE", timeout=20)
    assert bye.source == GW_TLS


async def test_an_srs_answering_our_re_invite_with_new_ports_gets_the_copies_there(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, srs, call, recording, to_caller, to_callee = await recorded(nursery, tmp_path, voipgw_seed)
    exchange = await recording.request("UPDATE", body=b"moving", content_type=METADATA_REQUEST_TYPE)
    assert (await exchange.final()).status == 200
    update = await srs.next_request("INVITE", timeout=10)
    # RFC 3264 §8.3.1: its answer may move the streams too.
    await srs.respond(update, 200, body=srs_answer(ports=NEW), content_type="application/sdp")
    await srs.next_request("ACK", timeout=5)
    after = await copies(to_caller, to_callee, range(5))
    assert after[NEW[0]] == [rtp(s, 0x11, 0x1111) for s in range(5)]
    assert after[NEW[1]] == [rtp(s, 0x22, 0x2222) for s in range(5)]
    assert after[OLD[0]] == [] and after[OLD[1]] == []
    assert env.calls == 1
    await call.bye()  # type: ignore[attr-defined]


async def test_the_answer_in_the_srss_ack_moves_the_copies_and_a_bad_one_changes_nothing(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    env, srs, call, recording, to_caller, to_callee = await recorded(nursery, tmp_path, voipgw_seed)
    # A re-INVITE without an offer: our 200 offers the SDP in force, its ACK answers it.
    recording.ack_answer = srs_answer(ports=NEW)
    answer = await recording.reinvite(b"")
    assert answer.status == 200
    assert [m.attributes.get("label") for m in parse_sdp_untrusted(answer.body).media] == [
        "1",
        "2",
    ]
    await trio.sleep(0.1)  # the ACK crosses the in-memory network
    after = await copies(to_caller, to_callee, range(5))
    assert after[NEW[0]] == [rtp(s, 0x11, 0x1111) for s in range(5)]
    assert after[NEW[1]] == [rtp(s, 0x22, 0x2222) for s in range(5)]
    assert after[OLD[0]] == [] and after[OLD[1]] == []

    # An answer without a c= line, then none at all: logged, the copies stay where they went.
    for bad, said in (
        (srs_answer().replace(b"c=IN IP4 127.0.0.1\r\n", b""), "answer in its ACK is unusable"),
        (b"", "has no answer"),
    ):
        recording.ack_answer = bad
        assert (await recording.reinvite(b"")).status == 200
        await trio.sleep(0.1)
        assert any(said in r.getMessage() for r in caplog.records)
        after = await copies(to_caller, to_callee, range(5, 10))
        assert after[NEW[0]] == [rtp(s, 0x11, 0x1111) for s in range(5, 10)]
        assert after[OLD[0]] == [] and after[OLD[1]] == []
    assert env.calls == 1
    assert srs.requests("BYE") == []  # no BYE for the bad answer: the recording goes on
    await call.bye()  # type: ignore[attr-defined]


async def test_an_srs_without_a_session_timer_is_probed_with_options_and_replaced_when_gone(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, srs, call = await timed_env(nursery, tmp_path, voipgw_seed)  # session_expires = 90
    recording = await srs.next_call()
    await take(srs, recording)  # no Session-Expires: no timer (RFC 4028 §7.2)
    answered = trio.current_time()

    probe = await srs.next_request("OPTIONS", timeout=60)
    assert probe.request.call_id == recording.invite.call_id  # in the dialog (RFC 3261 §11)
    assert 44 <= probe.at - answered <= 46  # when we would have refreshed
    assert probe.request.headers.get("Session-Expires") is None  # not a refresh
    # The agent answered it 200: still there. Now it dies: OPTIONS are never answered.

    async def dead(received: Received) -> bool:
        return received.request.method == "OPTIONS"

    srs.in_dialog = dead
    again = await srs.next_request("OPTIONS", timeout=60)
    assert 44 <= again.at - probe.at <= 46
    bye = await srs.next_request("BYE", timeout=40)  # Timer F: gone; BYE and a new session
    assert bye.request.call_id == recording.invite.call_id
    reopened = await srs.next_call(timeout=5)
    assert reopened.invite.call_id != recording.invite.call_id
    await take(srs, reopened)
    await eventually(lambda: counted(env, "session_reopened", 1))
    assert env.calls == 1
    assert srs.requests("UPDATE") == []
    await call.bye()  # type: ignore[attr-defined]


async def test_another_body_is_415_and_a_failing_plugin_500_and_the_recording_goes_on(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env, _, call, recording, to_caller, to_callee = await recorded(nursery, tmp_path, voipgw_seed)
    exchange = await recording.request("UPDATE", body=b"hello", content_type="text/plain")
    refused = await exchange.final()
    assert refused.status == 415
    assert METADATA_REQUEST_TYPE in refused.headers.get_all("Accept")

    def broken(self: object, offer: bytes) -> bytes:
        raise RuntimeError("a bug in the plugin")

    # Nothing from the network may end the gateway or the call: the core answers 500.
    monkeypatch.setattr(siprec_plugin.SiprecSink, "_answer_offer", broken)
    exchange = await recording.request(
        "INVITE", body=srs_answer(ports=NEW), content_type="application/sdp"
    )
    assert (await exchange.final()).status == 500
    after = await copies(to_caller, to_callee, range(5))
    assert after[OLD[0]] == [rtp(s, 0x11, 0x1111) for s in range(5)]
    assert after[NEW[0]] == []
    assert env.calls == 1
    await call.bye()  # type: ignore[attr-defined]
