"""A real browser through the gateway: headless Chromium with WebRTC, SIP over WebSocket.

The softphone is tests/interop/browser/softphone.js, a small SIP-over-WebSocket user agent
(RFC 7118) in plain JavaScript (no JsSIP: no npm here), with Chromium's own RTCPeerConnection
for the media: its offer or answer goes into the SDP untouched, so the gateway sees what
Chrome sends (BUNDLE, msid, extmap, rtcp-fb, opus and a dozen other codecs, host candidates)
and Chrome sees the gateway's answer or offer as a browser must accept it. The page registers
with SHA-256 digest (RFC 8760; WebCrypto has no MD5), then calls or answers.

Both directions: Chrome calls a plain-RTP sipp trunk (the gateway answers Chrome's offer),
sipp calls Chrome (the gateway offers to Chrome), and Chrome calls Chrome (both). And more
roles: Chrome picks up a trunk's call ringing a sipp phone (BLF: dialog package, Replaces;
and by dialling *8); Chrome is the target of a blind transfer (an INVITE without SDP: Chrome
offers), and the transferee of one (re-INVITEd with the new party's offer, which it answers).
Media is checked from both ends: Chrome's getStats() counts RTP it received and decrypted
(inbound-rtp) and sent (outbound-rtp) after ICE (the gateway as ICE-lite agent, RFC 8445 §2.5) and
DTLS-SRTP (RFC 5763/5764) completed; the trunk echoes what it receives (-rtp_echo), so
packets coming back to Chrome went through the trunk and back; when sipp calls, a capture
shows Chrome's RTP reaching sipp, decrypted. The caller hangs up, and both legs end. Consent
freshness (RFC 7675) over 30 s is tested in virtual time instead
(tests/component/calls/test_b2bua_ice.py).
"""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.interop.harness import (
    Capture,
    GatewayProcess,
    SippUas,
    TestPki,
    free_port_pair,
    rtp_streams,
    run_sipp_uac,
    tone_ulaw,
    udp_filter,
)
from tests.interop.harness.chromium import Chromium, PageServer, chromium_binary, page_port
from tests.interop.harness.ports import LOOPBACK
from tests.interop.pickup_sipp import _until_ringing as until_ringing
from tests.interop.sipp_calls import header

pytestmark = pytest.mark.interop

ALICE = ("alice", "wonderland-webrtc")  # the browser
BOB = ("bob", "builder-sipp")  # sipp calling the browser
TRUNK_NUMBER = "+4989555"
#: RTP packets each way (20 ms each) before the page hangs up: a second of audio.
PACKETS = 50


def browser_gateway(
    workdir: Path,
    *pages: PageServer,
    accounts: dict[str, str],
    transport: str = "ws",
    digest_algorithms: tuple[str, ...] = ("SHA-256",),
    extra_toml: str = "",
) -> tuple[GatewayProcess, str]:
    """A gateway with a ``transport`` (ws or wss) listener that accepts the pages' origins; and
    that listener's URL. wss has a certificate of a test CA, which Chromium is told to accept
    (``--ignore-certificate-errors``): a browser's trust store is not the test's business."""
    ws_port = page_port()
    port = free_port_pair()
    listen = [
        f"udp:{LOOPBACK}:{port}",
        f"tcp:{LOOPBACK}:{port}",
        f"{transport}:{LOOPBACK}:{ws_port}",
    ]
    origins = ", ".join(f'"{page.origin}"' for page in pages)
    table = f"[plugins.{transport}]\nallowed_origins = [{origins}]\n"
    if transport == "wss":
        ca = TestPki(workdir / "pki").ca("Test CA")
        issued = ca.issue("gateway", hosts=[LOOPBACK])
        table += f'certificate = "{issued.certificate}"\nprivate_key = "{issued.key}"\n'
    gw = GatewayProcess(
        workdir,
        accounts=accounts,
        port=port,
        digest_algorithms=digest_algorithms,
        settings={
            "sip": {"listen": listen},
            "plugins": {"enable": ["udp", "tcp", transport, "dtls"]},
        },
        extra_toml=f"{table}\n{extra_toml}",
    )
    return gw, f"{transport}://{LOOPBACK}:{ws_port}/"


def page_query(gw: GatewayProcess, url: str, **query: str | int) -> dict[str, str | int]:
    """The softphone page's settings (tests/interop/browser/softphone.js)."""
    return {
        "ws": url,
        "domain": gw.address,
        "user": ALICE[0],
        "password": ALICE[1],
        "packets": PACKETS,
        **query,
    }


def trunk_toml(trunk: SippUas) -> str:
    return (
        "[[trunks]]\n"
        'name = "carrier"\n'
        f'address = "{trunk.config_address}"\n'
        'prefixes = ["+49"]\n'
        "allowed_sources = []\n"
        'media_policy = "rtp-only"\n'
    )


def assert_media_flowed(media: dict[str, Any]) -> None:
    """ICE and DTLS completed with the gateway, and SRTP flowed both ways: Chrome decrypted
    ``PACKETS`` packets of PCMU (the only codec sipp takes) and sent as many."""
    assert media["ice"] in ("connected", "completed"), media
    assert media["connection"] == "connected", media
    assert media["dtls"] == "connected", media
    assert media["inbound"] >= PACKETS and media["outbound"] >= PACKETS, media
    assert media["codec"] == "audio/PCMU", media


def media_until_bye(page: PageServer, timeout: float) -> dict[str, Any]:
    """The page's media figures in a call the other side hangs up, once its BYE came: the
    "media" report (``PACKETS`` counted each way), or the counts at the BYE ("media-at-bye")
    when the BYE came first: it comes after those packets (sipp's tones run on past them), but
    on a loaded machine the page's 100 ms poll may not have run since. The counts at the BYE
    are later, so they hold at least as many packets as "media" would have."""
    page.wait_for("bye-received", timeout=timeout)
    return (page.of_kind("media") or page.of_kind("media-at-bye"))[0]


def assert_browser_sdp(sdp: str) -> None:
    """Our SDP towards Chrome: ICE-lite, DTLS-SRTP with feedback, rtcp-mux (RFC 8829)."""
    for line in (r"^a=ice-lite\r?$", r"^m=audio \d+ UDP/TLS/RTP/SAVPF ", r"^a=rtcp-mux\r?$"):
        assert re.search(line, sdp, re.M), sdp


def assert_plain_rtp_sdp(message: str) -> None:
    """Our SDP towards a sipp trunk or phone: plain RTP/AVP, none of Chrome's ICE or DTLS."""
    for attribute in ("a=ice-", "a=candidate", "a=fingerprint", "a=setup"):
        assert attribute not in message, message
    assert re.search(r"^m=audio \d+ RTP/AVP ", message, re.M), message


def rtp_packets_to(pcap: Path, port: int) -> int:
    """RTP packets the capture saw sent to ``port`` on the loopback."""
    streams = rtp_streams(pcap, [port])
    return sum(n for (_, (_, to_port)), n in streams.items() if to_port == port)


def register_sipp_phone(gw: GatewayProcess, workdir: Path, phone: SippUas) -> None:
    """carol's sipp phone (``PHONE``) registers from its UAS port, through the challenge."""
    run_sipp_uac(
        "register_auth.xml",
        gw.address,
        workdir=workdir,
        service=PHONE[0],
        auth=PHONE,
        port=phone.port,
    ).check()


@pytest.mark.parametrize("transport", ["ws", "wss"])
def test_chromium_calls_a_plain_rtp_trunk_over_websocket(tmp_path: Path, transport: str) -> None:
    chromium_binary()
    started = time.monotonic()
    with (
        SippUas("uas_answer.xml", workdir=tmp_path, rtp_echo=True) as trunk,
        PageServer() as page,
    ):
        gw, url = browser_gateway(
            tmp_path / "gw",
            page,
            accounts=dict([ALICE]),
            transport=transport,
            extra_toml=trunk_toml(trunk),
        )
        with gw:
            query = page_query(gw, url, mode="call", target=TRUNK_NUMBER)
            flags = ("--ignore-certificate-errors",) if transport == "wss" else ()
            with Chromium(tmp_path, page.url("softphone.html", query), flags) as browser:
                registered = page.wait_for("registered", timeout=30)
                media = page.wait_for("media", timeout=20)
                bye = page.wait_for("bye-final", timeout=10)
                result = trunk.wait(timeout=10)
            gw.wait_for_log(r"call \S+ ended")
        print(browser.version(), f"{time.monotonic() - started:.1f} s")
    result.check()
    assert registered["status"] == 200  # SHA-256 digest (RFC 8760), the only one offered
    # What came back to Chrome went through the trunk's echo: both directions work.
    assert_media_flowed(media)
    assert bye["status"] == 200
    # The trunk got neither ICE nor DTLS nor Chrome's BUNDLE: a plain RTP/AVP offer.
    (invite,) = result.received("INVITE ")
    assert_plain_rtp_sdp(invite)
    assert "a=group:BUNDLE" not in invite
    assert result.received("BYE ")
    # Our answer to Chrome: ice-lite with credentials, a host candidate, DTLS, rtcp-mux.
    answer = page.wait_for("invite-final")["sdp"]
    assert_browser_sdp(answer)
    assert re.search(r"^a=fingerprint:sha-256 ", answer, re.M), answer
    assert re.search(r"^a=candidate:\S+ 1 UDP \d+ 127\.0\.0\.1 \d+ typ host", answer, re.M)


def test_chromium_holds_and_resumes_a_call_to_a_trunk(tmp_path: Path) -> None:
    """Hold and resume the way a browser softphone does them: the same RTCPeerConnection
    re-offers (a=sendonly, then a=sendrecv; same ICE credentials and DTLS fingerprint, so
    the same association, RFC 8842 §5), in re-INVITEs the gateway relays to the trunk (which
    answers a=recvonly, then a=sendrecv); media goes on after the resume."""
    chromium_binary()
    with (
        SippUas("calls/uas_answer_reinvite.xml", workdir=tmp_path, rtp_echo=True) as trunk,
        PageServer() as page,
    ):
        gw, url = browser_gateway(
            tmp_path / "gw", page, accounts=dict([ALICE]), extra_toml=trunk_toml(trunk)
        )
        with gw:
            query = page_query(gw, url, mode="call", target=TRUNK_NUMBER, hold=1)
            with Chromium(tmp_path, page.url("softphone.html", query)):
                bye = page.wait_for("bye-final", timeout=30)
                result = trunk.wait(timeout=10)
            gw.wait_for_log(r"call \S+ ended")
    result.check()  # the trunk got a=sendonly, then a=sendrecv, in two re-INVITEs
    assert bye["status"] == 200
    hold, resume = page.of_kind("reinvite-final")
    assert hold["status"] == resume["status"] == 200
    assert re.search(r"^a=recvonly\r?$", hold["sdp"], re.M), hold["sdp"]
    assert re.search(r"^a=sendrecv\r?$", resume["sdp"], re.M), resume["sdp"]
    first, on_hold, resumed = page.of_kind("media")
    assert on_hold["outbound"] >= first["outbound"] + PACKETS  # Chrome kept sending, held
    assert_media_flowed(resumed)
    assert resumed["inbound"] >= on_hold["inbound"] + PACKETS, (on_hold, resumed)


def test_sipp_calls_chromium_which_answers_over_websocket(tmp_path: Path) -> None:
    chromium_binary()
    started = time.monotonic()
    tone = tone_ulaw(tmp_path / "tone.ulaw", 440.0, seconds=3.0)
    with PageServer() as page:
        # sipp 3.6 answers only the first challenge and knows only MD5; the page takes SHA-256.
        gw, url = browser_gateway(
            tmp_path / "gw",
            page,
            accounts=dict([ALICE, BOB]),
            digest_algorithms=("MD5", "SHA-256"),
        )
        with gw:
            # A browser takes only DTLS-SRTP (RFC 8827 §6.5): its account's policy says so.
            gw.cli("accounts", "set", ALICE[0], "--media-policy", "dtls")
            query = page_query(gw, url, mode="answer")
            with Chromium(tmp_path, page.url("softphone.html", query)) as browser:
                page.wait_for("registered", timeout=30)
                with Capture(tmp_path / "call.pcap", udp_filter(gw.media_ports)) as capture:
                    caller = run_sipp_uac(
                        "calls/uac_call_auth_rtp.xml",
                        gw.address,
                        workdir=tmp_path,
                        service=ALICE[0],
                        caller=BOB[0],
                        auth=BOB,
                        rtp_file=tone,
                    )
                    media = media_until_bye(page, timeout=20)
            gw.wait_for_log(r"call \S+ ended")
        print(browser.version(), f"{time.monotonic() - started:.1f} s")
    caller.check()
    assert_media_flowed(media)
    # Chrome's RTP reached sipp's media port through the relay, decrypted.
    assert rtp_packets_to(capture.path, caller.media_port) >= PACKETS
    # Our offer to Chrome: ICE-lite, DTLS with actpass, rtcp-mux, the WebRTC profile.
    offer = page.wait_for("offer")["sdp"]
    assert re.search(r"^a=ice-lite\r?$", offer, re.M), offer
    assert re.search(r"^a=setup:actpass\r?$", offer, re.M), offer
    assert re.search(r"^a=rtcp-mux\r?$", offer, re.M), offer


def test_chromium_calls_chromium_through_the_gateway(tmp_path: Path) -> None:
    """Two browsers, as two JsSIP users calling each other: each leg is WebRTC (ICE-lite, its
    own DTLS association), the gateway relays and re-keys between them, and Chrome's codecs
    pass through (opus both ways)."""
    chromium_binary()
    started = time.monotonic()
    with PageServer() as alice_page, PageServer() as bob_page:
        gw, url = browser_gateway(
            tmp_path / "gw", alice_page, bob_page, accounts=dict([ALICE, BOB])
        )
        with gw:
            gw.cli("accounts", "set", BOB[0], "--media-policy", "dtls")
            bob_query = page_query(gw, url, mode="answer", user=BOB[0], password=BOB[1])
            with Chromium(tmp_path / "bob", bob_page.url("softphone.html", bob_query)):
                bob_page.wait_for("registered", timeout=30)
                alice_query = page_query(gw, url, mode="call", target=BOB[0])
                with Chromium(tmp_path / "alice", alice_page.url("softphone.html", alice_query)):
                    alice_media = alice_page.wait_for("media", timeout=30)
                    bye = alice_page.wait_for("bye-final", timeout=10)
                    # Alice hangs up once she has counted PACKETS each way; Bob's 100 ms poll
                    # may not have counted his yet (it failed so on a loaded machine).
                    bob_media = media_until_bye(bob_page, timeout=10)
            gw.wait_for_log(r"call \S+ ended")
        print(f"{time.monotonic() - started:.1f} s")
    assert bye["status"] == 200
    for media in (alice_media, bob_media):
        assert media["ice"] in ("connected", "completed"), media
        assert media["dtls"] == "connected", media
        assert media["inbound"] >= PACKETS and media["outbound"] >= PACKETS, media
        assert media["codec"] == "audio/opus", media


# -- call pickup: Chrome takes a call ringing another account ---------------------------------

#: The sipp phone whose ringing call Chrome picks up (MD5 digest: sipp knows no other).
PHONE = ("carol", "carol-sipp-phone")
#: The calling trunk: another loopback address, known to the gateway by source address.
CALLER_IP = "127.0.0.2"
DID = "+4930123456"


def calling_trunk_toml() -> str:
    """The trunk calling in from CALLER_IP; its DID rings the sipp phone's account."""
    return (
        "[[trunks]]\n"
        'name = "pbx"\n'
        f'address = "udp:{CALLER_IP}:5060"\n'
        f'allowed_sources = ["{CALLER_IP}"]\n'
        f'dids = {{"{DID}" = "{PHONE[0]}"}}\n'
        'media_policy = "rtp-only"\n'
    )


def pickup_toml() -> str:
    """The calling trunk, and a BLF group in which alice (Chrome) may pick up carol's calls."""
    return calling_trunk_toml() + (
        "[[dialog_watch_groups]]\n"
        'name = "office"\n'
        f'accounts = ["{ALICE[0]}", "{PHONE[0]}"]\n'
        "pickup = true\n"
    )


@pytest.mark.parametrize(
    "trunk_scenario",
    [
        "uac_call_rtp.xml",  # the caller offers PCMU without rtcp-mux
        "calls/uac_call_late_offer_rtp.xml",  # it offers nothing: Chrome's offer goes to it
    ],
)
def test_chromium_picks_up_a_trunk_call_ringing_another_account(
    tmp_path: Path, trunk_scenario: str
) -> None:
    """A browser's BLF key: the page watches carol's calls (SUBSCRIBE, RFC 4235 dialog
    package), and when the trunk's call rings her sipp phone it builds a Replaces (RFC 3891)
    from the NOTIFY's early dialog and picks the call up. Our 200 to Chrome has a=rtcp-mux
    although the trunk offered none (Chrome requires it, RFC 8829 §4.1.1; the relay muxes on
    Chrome's leg alone); media flows both ways, decrypted; carol's phone is CANCELled; the
    trunk hangs up."""
    chromium_binary()
    tone = tone_ulaw(tmp_path / "tone.ulaw", 440.0, seconds=4.0)
    with PageServer() as page:
        gw, url = browser_gateway(
            tmp_path / "gw",
            page,
            accounts=dict([ALICE, PHONE]),
            digest_algorithms=("MD5", "SHA-256"),
            extra_toml=pickup_toml(),
        )
        with gw:
            gw.cli("accounts", "set", ALICE[0], "--media-policy", "dtls")
            phone = SippUas("calls/uas_ring_until_answered_elsewhere.xml", workdir=tmp_path)
            register_sipp_phone(gw, tmp_path, phone)
            query = page_query(gw, url, mode="pickup", watch=PHONE[0])
            with phone, Chromium(tmp_path, page.url("softphone.html", query)):
                assert page.wait_for("subscribed", timeout=30)["status"] == 200
                with Capture(tmp_path / "call.pcap", udp_filter(gw.media_ports)) as capture:
                    caller = run_sipp_uac(
                        trunk_scenario,
                        gw.address,
                        workdir=tmp_path,
                        service=DID,
                        caller="+4940777",
                        local_ip=CALLER_IP,
                        rtp_file=tone,
                        timeout=30,
                    )
                    media = media_until_bye(page, timeout=20)
                rang = phone.wait(timeout=10)
            gw.wait_for_log(rf"{ALICE[0]} picks up the call ringing {PHONE[0]}")
            gw.wait_for_log(r"call \S+ ended")
    caller.check()
    rang.check()  # CANCELled, "Call completed elsewhere"
    assert_media_flowed(media)
    replaces = page.wait_for("pickup")["replaces"]
    (invite,) = rang.received("INVITE ")
    assert replaces.startswith(header(invite, "Call-ID") + ";"), (replaces, invite)
    # Our answer (or offer's answer) to Chrome: ICE-lite, DTLS, rtcp-mux on its leg...
    answer = page.wait_for("invite-final")["sdp"]
    assert_browser_sdp(answer)
    assert re.search(r"^a=candidate:\S+ 1 UDP ", answer, re.M), answer
    assert not re.search(r"^a=candidate:\S+ 2 UDP ", answer, re.M), answer
    # ... and plain RTP on the trunk's, without Chrome's ICE or DTLS.
    (ok,) = [m for m in caller.received("SIP/2.0 200 ") if "INVITE" in header(m, "CSeq")]
    assert_plain_rtp_sdp(ok)
    # Chrome's RTP reached the trunk's media port through the relay, decrypted.
    assert rtp_packets_to(capture.path, caller.media_port) >= PACKETS


def test_chromium_picks_up_by_dialling_the_feature_code(tmp_path: Path) -> None:
    """As a phone without a BLF key does ([feature_codes]): once carol's phone rings, Chrome
    dials *8 and the gateway answers its INVITE with the ringing call; a=rtcp-mux on Chrome's
    leg as for a pickup by Replaces, media both ways."""
    chromium_binary()
    tone = tone_ulaw(tmp_path / "tone.ulaw", 440.0, seconds=5.0)
    with PageServer() as page:
        gw, url = browser_gateway(
            tmp_path / "gw",
            page,
            accounts=dict([ALICE, PHONE]),
            digest_algorithms=("MD5", "SHA-256"),
            extra_toml=pickup_toml(),
        )
        with gw:
            gw.cli("accounts", "set", ALICE[0], "--media-policy", "dtls")
            phone = SippUas("calls/uas_ring_until_answered_elsewhere.xml", workdir=tmp_path)
            register_sipp_phone(gw, tmp_path, phone)
            with phone, ThreadPoolExecutor(max_workers=1) as pool:
                calling = pool.submit(
                    run_sipp_uac,
                    "uac_call_rtp.xml",
                    gw.address,
                    workdir=tmp_path,
                    service=DID,
                    caller="+4940777",
                    local_ip=CALLER_IP,
                    rtp_file=tone,
                    timeout=40,
                )
                until_ringing(phone)
                query = page_query(gw, url, mode="call", target="*8", hangup="remote")
                with Chromium(tmp_path, page.url("softphone.html", query)):
                    media = media_until_bye(page, timeout=45)
                caller = calling.result(timeout=30)
                rang = phone.wait(timeout=10)
            gw.wait_for_log(rf"{ALICE[0]} picks up the call ringing {PHONE[0]}")
    caller.check()
    rang.check()
    assert_media_flowed(media)
    assert_browser_sdp(page.wait_for("invite-final")["sdp"])


# -- blind transfer: Chrome is the target -------------------------------------------------------


def test_chromium_is_the_target_of_a_blind_transfer(tmp_path: Path) -> None:
    """A sipp trunk calls carol's sipp phone, which answers and transfers the caller to alice
    (Chrome) with a REFER (RFC 3515; Refer-Sub: false, and it hangs up at once). The gateway
    calls Chrome with an INVITE without SDP (docs/transfers.md): Chrome's offer is in its 200
    (ICE, DTLS-SRTP, rtcp-mux, opus and more), the trunk is re-INVITEd with it and answers
    PCMU, and the answer reaches Chrome in our ACK: ice-lite, rtcp-mux, DTLS. Media flows both
    ways, decrypted, and the trunk's port gets Chrome's RTP; the trunk hangs up."""
    chromium_binary()
    tone = tone_ulaw(tmp_path / "tone.ulaw", 440.0, seconds=6.0)
    with PageServer() as page:
        gw, url = browser_gateway(
            tmp_path / "gw",
            page,
            accounts=dict([ALICE, PHONE]),
            digest_algorithms=("MD5", "SHA-256"),
            extra_toml=calling_trunk_toml(),
        )
        with gw:
            target = gw.uri(ALICE[0])
            phone = SippUas(
                "calls/uas_answer_refer_blind.xml",
                workdir=tmp_path,
                call_duration_ms=500,  # the call before its REFER
                keys={"target": target},
            )
            register_sipp_phone(gw, tmp_path, phone)
            query = page_query(gw, url, mode="answer")
            with phone, Chromium(tmp_path, page.url("softphone.html", query)):
                page.wait_for("registered", timeout=30)
                with Capture(tmp_path / "call.pcap", udp_filter(gw.media_ports)) as capture:
                    caller = run_sipp_uac(
                        "calls/uac_call_rtp_transferred.xml",
                        gw.address,
                        workdir=tmp_path,
                        service=DID,
                        caller="+4940777",
                        local_ip=CALLER_IP,
                        rtp_file=tone,
                        timeout=40,
                    )
                    media = media_until_bye(page, timeout=20)
                transferor = phone.wait(timeout=10)
            gw.wait_for_log(rf"transfer of the B leg to {re.escape(target)}: 200 OK")
            gw.wait_for_log(r"call \S+ ended")
    caller.check()  # answered, re-INVITEd with Chrome's media, ACKed
    transferor.check()  # 202 with Refer-Sub: false
    assert_media_flowed(media)
    assert page.wait_for("invite-without-offer")
    offer = page.wait_for("offer-in-200")["sdp"]
    assert re.search(r"^a=rtcp-mux\r?$", offer, re.M), offer
    # Our answer to Chrome's offer, in the ACK: ICE-lite, DTLS, rtcp-mux.
    answer = page.wait_for("answer-in-ack")["sdp"]
    assert_browser_sdp(answer)
    assert re.search(r"^a=setup:(active|passive)\r?$", answer, re.M), answer
    # The trunk's re-INVITE: plain RTP, without Chrome's ICE or DTLS.
    reinvites = [m for m in caller.received("INVITE ")]
    assert len(reinvites) == 1, reinvites
    assert_plain_rtp_sdp(reinvites[0])
    # Chrome's RTP reached the trunk's media port through the relay, decrypted.
    assert rtp_packets_to(capture.path, caller.media_port) >= PACKETS


# The default policy of a new account, and the one docs/media_security.md advises for browsers.
@pytest.mark.parametrize("policy", ["best-effort", "dtls"])
def test_chromium_is_transferred_by_the_phone_it_called(tmp_path: Path, policy: str) -> None:
    """Chrome calls carol's sipp phone, which transfers Chrome to a trunk number (REFER,
    Refer-Sub: false, then BYE). The gateway calls the trunk with an INVITE without SDP, and
    re-INVITEs Chrome with the trunk's offer: our re-offer on Chrome's leg keeps ICE, the
    DTLS association (also under best-effort, which makes no first offer with DTLS-SRTP) and
    rtcp-mux, and Chrome answers it from the same RTCPeerConnection. Then media flows between
    Chrome and the trunk (which echoes it)."""
    chromium_binary()
    with (
        SippUas("uas_answer.xml", workdir=tmp_path, rtp_echo=True) as trunk,
        PageServer() as page,
    ):
        gw, url = browser_gateway(
            tmp_path / "gw",
            page,
            accounts=dict([ALICE, PHONE]),
            digest_algorithms=("MD5", "SHA-256"),
            extra_toml=trunk_toml(trunk),
        )
        with gw:
            gw.cli("accounts", "set", ALICE[0], "--media-policy", policy)
            target = gw.uri(TRUNK_NUMBER)
            phone = SippUas(
                "calls/uas_answer_refer_blind.xml",
                workdir=tmp_path,
                call_duration_ms=500,
                keys={"target": target},
            )
            register_sipp_phone(gw, tmp_path, phone)
            query = page_query(gw, url, mode="call", target=PHONE[0], reoffer=1)
            with phone, Chromium(tmp_path, page.url("softphone.html", query)):
                media = page.wait_for("media", timeout=40)
                bye = page.wait_for("bye-final", timeout=10)
                transferor = phone.wait(timeout=10)
                result = trunk.wait(timeout=10)
            gw.wait_for_log(rf"transfer of the B leg to {re.escape(target)}: 200 OK")
            gw.wait_for_log(r"call \S+ ended")
    transferor.check()
    result.check()  # called without SDP, offered in its 200, BYE from Chrome's hang-up
    assert bye["status"] == 200
    assert_media_flowed(media)
    # Our re-offer keeps the DTLS association (RFC 8842 §5: the same fingerprint, Chrome sends
    # no tls-id; the role already settled, as JSEP writes it, RFC 8829 §5.2.2): Chrome takes it.
    reoffer = page.wait_for("reinvite-offer")["sdp"]
    first = page.wait_for("invite-final")["sdp"]
    kept = re.search(r"^a=fingerprint:(.+?)\r?$", first, re.M)
    assert kept is not None and f"a=fingerprint:{kept[1]}" in reoffer, (first, reoffer)
    assert re.search(r"^a=setup:active\r?$", reoffer, re.M), reoffer
    assert re.search(r"^a=rtcp-mux\r?$", reoffer, re.M), reoffer
    assert re.search(r"^a=ice-lite\r?$", reoffer, re.M), reoffer
    (invite,) = result.received("INVITE ")
    assert "m=audio" not in invite  # the transfer's INVITE to the target has no offer
