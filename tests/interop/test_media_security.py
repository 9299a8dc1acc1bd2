"""Per-leg media security with real peers (issue #5 item 8): every leg negotiates on its own and
the relay decrypts with one leg's keys and encrypts with the other's.

- baresip with ``mediaenc=srtp-mand`` registered over TLS calls a sipp trunk that speaks plain
  RTP over UDP and echoes it: the phone's leg is RTP/SAVP with a=crypto, the trunk's RTP/AVP
  without; a capture shows, for the same sequence numbers, SRTP towards the phone and the plain
  PCMU tone towards the trunk; the phone hears its own tone come back.
- linphonec offering only AES_256_CM_HMAC_SHA1_80 calls baresip, which answers the gateway's
  offer with AEAD_AES_256_GCM: two SDES legs with different suites, audio both ways, and
  ``voipgw calls`` names both suites.
- SDES keys over UDP signalling: refused with 488 and a Warning naming TLS, unless the policy
  allows cleartext and the phone does too (baresip ``srtp``, RTP/AVP with a=crypto), when the
  call goes on in plain RTP.
- A caller whose every a=crypto line is unusable gets 488, and the gateway sends no media at all.
- ``voipgw calls`` says in plain words how each leg of an SDES<->RTP call is protected.

SDES keys travel in the SDP, so the gateway only sends and accepts them over TLS (RFC 4568 §8.1);
the phones reach the gateway over TLS and ``[gateway] domains`` makes 127.0.0.1 ours on every
port (linphonec registers its identity without the port). baresip 1.0.0 answers only MD5 digest
challenges, so every gateway here offers MD5 alone.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.interop.harness import (
    LOOPBACK,
    Baresip,
    Capture,
    SippUas,
    analyse_tone,
    run_sipp_uac,
    tone_ulaw,
    tone_wav,
    udp_filter,
    udp_flows,
)
from tests.interop.harness.audio import ToneReport, g711_wav
from tests.interop.harness.capture import even_ports, inside, one_flow, rtp_payloads_by_seq
from tests.interop.harness.linphone import Linphone, LinphoneAccount
from tests.interop.harness.pki import TestPki
from tests.interop.harness.ports import free_port
from tests.interop.harness.sip_text import audio_media_line
from tests.interop.harness.sipp import RTP_STREAM_FILE
from tests.interop.harness.stunnel import StunnelClient, StunnelServer
from tests.interop.harness.tls_gateway import TlsGatewayProcess
from tests.interop.sdes_tls_trunk import tls_trunk_toml

pytestmark = pytest.mark.interop

PASSWORDS = {"alice": "wonderland-5e1f", "bob": "builder-0c7d", "carol": "carpenter-9a2b"}
TONES = {"alice": 1000.0, "bob": 1000.0, "carol": 440.0}
#: A number the trunk serves (prefix +49) and no account is named like.
TRUNK_NUMBER = "+4989555"
# One second of audio: two of sox's 4096-sample analysis windows at 8000 Hz.
AUDIO_SECONDS = 1.0
# baresip and linphonec send a 20 ms packet 50 times a second; a capture cut at either edge of
# a one-second stretch still holds 40.
MIN_PACKETS = 40
# What SRTP adds after the payload (RFC 3711 §3.1, RFC 7714 §7): the HMAC-SHA1-80 tag is
# 10 octets, the AES-GCM tag 16.
TAG_LENGTH = {"AES_CM_128_HMAC_SHA1_80": 10, "AES_256_CM_HMAC_SHA1_80": 10, "AEAD_AES_256_GCM": 16}
PCMU_PAYLOAD = 160  # 20 ms of G.711 at 8000 Hz


# -- set-up ----------------------------------------------------------------------------------


def _gateway(
    workdir: Path, accounts: dict[str, str], *, trunk: SippUas | None = None, policy: str = ""
) -> TlsGatewayProcess:
    """A gateway with UDP, TCP, TLS and SDES; ``trunk`` (if any) serves +49 numbers over UDP
    with the media policy ``policy``."""
    extra = ""
    if trunk is not None:
        extra = (
            "[[trunks]]\n"
            'name = "carrier"\n'
            f'address = "{trunk.config_address}"\n'
            'prefixes = ["+49"]\n'
            "allowed_sources = []\n"
            f'media_policy = "{policy}"\n'
        )
    return TlsGatewayProcess(
        workdir,
        plugins=("udp", "tcp", "tls", "sdes"),
        accounts=accounts,
        digest_algorithms=("MD5",),
        settings={"gateway": {"log_level": "debug", "domains": [LOOPBACK]}},
        extra_toml=extra,
    )


def _echo_trunk(workdir: Path) -> SippUas:
    """A trunk over UDP that answers one call with plain RTP/AVP PCMU and echoes the media."""
    return SippUas("uas_answer.xml", workdir=workdir, rtp_echo=True)


def _baresip(workdir: Path, name: str, mediaenc: str) -> Baresip:
    source = tone_wav(workdir / f"{name}.wav", TONES[name])
    return Baresip(workdir, name, source=source, mediaenc=mediaenc, sip_trace=True)


def _tls_uri(gw: TlsGatewayProcess, user: str) -> str:
    return f"sip:{user}@{LOOPBACK}:{gw.tls_port};transport=tls"


# -- reading what happened -------------------------------------------------------------------


def _assert_tone(report: ToneReport, frequency: float, *, share: float = 0.9) -> None:
    assert report.dominant_frequency == pytest.approx(frequency, abs=3)
    assert report.power_share > share
    assert report.seconds >= 0.8 * AUDIO_SECONDS


def _assert_srtp_of(srtp: dict[int, bytes], plain: dict[int, bytes], suite: str) -> int:
    """``srtp`` carries the same packets as ``plain`` (same sequence numbers, RTP header kept by
    the relay), each encrypted and followed by ``suite``'s authentication tag; the number of
    packets compared."""
    common = sorted(srtp.keys() & plain.keys())
    assert len(common) >= MIN_PACKETS, (len(srtp), len(plain), len(common))
    for seq in common:
        assert len(plain[seq]) == PCMU_PAYLOAD, seq
        assert len(srtp[seq]) == PCMU_PAYLOAD + TAG_LENGTH[suite], seq
        # Encrypted: not the plain payload, nor any long stretch of it (AES-CM and GCM are
        # stream ciphers: a cleartext payload would show up byte for byte).
        assert srtp[seq][:PCMU_PAYLOAD] != plain[seq], seq
        assert plain[seq][40:80] not in srtp[seq], seq
    return len(common)


def _assert_rekeyed(
    incoming: dict[int, bytes], in_suite: str, outgoing: dict[int, bytes], out_suite: str
) -> None:
    """The relay decrypted ``incoming`` (``in_suite``) and re-encrypted the same packets (same
    sequence numbers) with the other leg's keys in ``out_suite``: each side's payloads carry
    its suite's tag, and no payload went through unchanged."""
    common = sorted(incoming.keys() & outgoing.keys())
    assert len(common) >= MIN_PACKETS, (len(incoming), len(outgoing), len(common))
    for seq in common:
        assert len(incoming[seq]) == PCMU_PAYLOAD + TAG_LENGTH[in_suite], seq
        assert len(outgoing[seq]) == PCMU_PAYLOAD + TAG_LENGTH[out_suite], seq
        assert incoming[seq][:PCMU_PAYLOAD] != outgoing[seq][:PCMU_PAYLOAD], seq


def _assert_plain_tone(
    tmp_path: Path, name: str, plain: dict[int, bytes], frequency: float
) -> None:
    """``plain`` (payloads by sequence number) is G.711 PCMU audio holding ``frequency``."""
    payload = b"".join(plain[seq] for seq in sorted(plain))
    _assert_tone(analyse_tone(g711_wav(payload, tmp_path / f"{name}.wav")), frequency)


def _leg_lines(text: str) -> dict[str, str]:
    """``voipgw calls`` output: the description of the caller's and the callee's leg."""
    lines = dict(re.findall(r"^\s+(caller leg|callee leg): (.*)$", text, re.MULTILINE))
    assert set(lines) == {"caller leg", "callee leg"}, text
    return lines


# --- 1. SRTP phone over TLS <-> plain RTP trunk over UDP -------------------------------------


@contextmanager
def _srtp_phone_calling_rtp_trunk(
    tmp_path: Path, trunk_policy: str
) -> Iterator[tuple[TlsGatewayProcess, Baresip, SippUas]]:
    """alice (baresip, srtp-mand, TLS) has called the echoing trunk; the call is up."""
    with (
        _echo_trunk(tmp_path) as trunk,
        _gateway(
            tmp_path / "gw", {"alice": PASSWORDS["alice"]}, trunk=trunk, policy=trunk_policy
        ) as gw,
        _baresip(tmp_path, "alice", "srtp-mand") as alice,
    ):
        alice.register_over_tls(LOOPBACK, gw.tls_port, PASSWORDS[alice.name], mediaenc="srtp-mand")
        yield gw, alice, trunk


@pytest.mark.parametrize("trunk_policy", ["rtp-only", "best-effort"])
def test_srtp_phone_over_tls_calls_a_plain_rtp_trunk(tmp_path: Path, trunk_policy: str) -> None:
    with _srtp_phone_calling_rtp_trunk(tmp_path, trunk_policy) as (gw, alice, trunk):
        trunk_media = (trunk.media_port, trunk.media_port)
        media = udp_filter(
            gw.media_ports, alice.rtp_ports, (trunk.media_port, trunk.media_port + 1)
        )
        with Capture(tmp_path / "media.pcap", media) as capture:
            alice.dial(_tls_uri(gw, TRUNK_NUMBER))
            alice.wait_established()
            alice.wait_audio(AUDIO_SECONDS)
            alice.hangup()
            alice.wait_closed()
        result = trunk.wait()
    result.check()

    # The trunk's leg: plain RTP/AVP, and no key of any leg reached it (UDP signalling).
    (invite,) = result.received("INVITE ")
    assert audio_media_line(invite).split()[2] == "RTP/AVP"
    assert "a=crypto" not in invite
    assert "inline:" not in invite
    # The phone's leg: the gateway answered its RTP/SAVP offer with its own a=crypto line, and
    # the phone switched SRTP on with that suite.
    answer = alice.answer_to_invite()
    assert answer.transport == "TLS"
    assert audio_media_line(answer.message).split()[2] == "RTP/SAVP"
    assert re.search(r"^a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:", answer.message, re.M)
    alice.wait_for(r"srtp: audio: SRTP is Enabled \(cryptosuite=AES_CM_128_HMAC_SHA1_80\)")

    # The same packets on both sides of the relay: SRTP on the phone's, the plain tone on the
    # trunk's, in both directions (the trunk echoes what it gets).
    flows = rtp_payloads_by_seq(
        capture.path, [*even_ports(gw.media_ports, alice.rtp_ports), trunk.media_port]
    )
    phone_to_gw = one_flow(flows, alice.rtp_ports, gw.media_ports)
    gw_to_trunk = one_flow(flows, gw.media_ports, trunk_media)
    trunk_to_gw = one_flow(flows, trunk_media, gw.media_ports)
    gw_to_phone = one_flow(flows, gw.media_ports, alice.rtp_ports)
    _assert_srtp_of(phone_to_gw, gw_to_trunk, "AES_CM_128_HMAC_SHA1_80")
    _assert_srtp_of(gw_to_phone, trunk_to_gw, "AES_CM_128_HMAC_SHA1_80")
    _assert_plain_tone(tmp_path, "to-trunk", gw_to_trunk, TONES["alice"])
    _assert_plain_tone(tmp_path, "from-trunk", trunk_to_gw, TONES["alice"])
    # The phone decrypted what came back: its own tone, echoed.
    _assert_tone(analyse_tone(alice.received_audio()), TONES["alice"])


# --- 5. voipgw calls, in plain words ---------------------------------------------------------


def test_voipgw_calls_says_how_each_leg_of_an_sdes_to_rtp_call_is_protected(
    tmp_path: Path,
) -> None:
    with _srtp_phone_calling_rtp_trunk(tmp_path, "rtp-only") as (gw, alice, trunk):
        alice.dial(_tls_uri(gw, TRUNK_NUMBER))
        call = alice.wait_established()
        live = gw.cli_until(lambda out: "callee leg:" in out, "calls")
        live_json = json.loads(gw.cli_until(lambda out: '"b"' in out, "calls", "--json"))
        alice.hangup()
        alice.wait_closed()
        gw.wait_for_log(rf"call {re.escape(call['id'])}\S* ended")
        after = gw.cli_until(lambda out: out.strip() == "no live calls", "calls")
        recent = gw.cli_until(lambda out: "ended (" in out, "calls", "--recent", "1")
        trunk.wait().check()

    assert "[live]" in live, live
    legs = _leg_lines(live)
    # A phone registered over TLS without a client certificate: digest only (the leg says so,
    # keeping "signalling TLS" first for those who grep it).
    assert legs["caller leg"] == (
        "signalling TLS (phone not authenticated by certificate); "
        "media SRTP AES_CM_128_HMAC_SHA1_80 keyed by sdes"
    ), live
    assert legs["callee leg"] == "signalling UDP; media RTP, not encrypted", live
    # The same record, as data.
    (record,) = live_json
    caller, callee = record["security"]["a"], record["security"]["b"]
    assert caller["signalling"] == "tls" and caller["signalling_secure"] is True
    assert caller["tls"] == {"opened_by": "peer", "server_name": None}
    assert caller["peer_certificate"] is None and caller["peer_kind"] == "account"
    assert caller["streams"] == [
        {
            "encrypted": True,
            "key_exchange": "sdes",
            "keys_held_by": "gateway",
            "suite": "AES_CM_128_HMAC_SHA1_80",
        }
    ]
    assert callee["policy"] == "rtp-only" and callee["signalling"] == "udp"
    assert callee["streams"] == [
        {"encrypted": False, "key_exchange": "none", "keys_held_by": None, "suite": None}
    ]
    # How alice proved who she is (baresip 1.0 answers MD5 only), and that the trunk, called by
    # us, proved nothing: in the record and in the words.
    assert caller["auth"]["method"] == "digest" and caller["auth"]["algorithm"] == "MD5"
    assert caller["auth"]["device_certificate"] is False and callee["auth"] is None
    assert re.search(
        r"^  caller authenticated: account alice by digest \(realm \S+, MD5", live, re.M
    )
    # Over, it is no longer live, and the record of the ended call still says the same.
    assert after.strip() == "no live calls"
    assert "ended (" in recent, recent
    assert _leg_lines(recent) == legs


# --- 2. SDES <-> SDES with different suites: linphonec <-> baresip ---------------------------


def test_linphone_aes256_cm_to_baresip_aead_gcm_carries_audio_both_ways(tmp_path: Path) -> None:
    with _gateway(tmp_path / "gw", {"bob": PASSWORDS["bob"], "carol": PASSWORDS["carol"]}) as gw:
        # Both phones require SRTP: their accounts must never get cleartext (RTP/SAVP offers;
        # best effort would offer RTP/AVP with a=crypto, which baresip's srtp-mand refuses).
        for name in ("bob", "carol"):
            gw.cli("accounts", "set", name, "--media-policy", "sdes")
        account = LinphoneAccount(
            f"sip:{LOOPBACK}:{gw.tls_port};transport=tls",
            f"sip:bob@{LOOPBACK}",
            PASSWORDS["bob"],
        )
        with (
            Linphone(
                tmp_path,
                "bob",
                account=account,
                source=tone_wav(tmp_path / "bob.wav", TONES["bob"]),
                media_encryption="srtp",
                srtp_suites=("AES_256_CM_HMAC_SHA1_80",),
            ) as bob,
            _baresip(tmp_path, "carol", "srtp-mand") as carol,
        ):
            bob.wait_registered()
            carol.register_over_tls(
                LOOPBACK, gw.tls_port, PASSWORDS[carol.name], mediaenc="srtp-mand"
            )
            media = udp_filter(gw.media_ports, bob.rtp_ports, carol.rtp_ports)
            with Capture(tmp_path / "media.pcap", media) as capture:
                bob.call(_tls_uri(gw, "carol"))
                carol.wait_established()
                bob.wait_connected()
                carol.wait_audio(AUDIO_SECONDS)
                bob.wait_audio(AUDIO_SECONDS)
                live = gw.cli_until(lambda out: "callee leg:" in out, "calls")
                bob.terminate()
                carol.wait_closed()
                bob.wait_ended()

    legs = _leg_lines(live)
    bare = "signalling TLS (phone not authenticated by certificate); media SRTP"
    assert legs["caller leg"] == f"{bare} AES_256_CM_HMAC_SHA1_80 keyed by sdes"
    assert legs["callee leg"] == f"{bare} AEAD_AES_256_GCM keyed by sdes"
    # Each phone saw only its own leg's suite: linphone offered AES-256-CM alone, carol was
    # offered the gateway's list (GCM first) and answered AEAD_AES_256_GCM.
    (offer,) = carol.sip_messages("INVITE ")
    assert audio_media_line(offer.message).split()[2] == "RTP/SAVP"
    assert re.search(r"^a=crypto:1 AEAD_AES_256_GCM inline:", offer.message, re.M)
    carol.wait_for(r"srtp: audio: SRTP is Enabled \(cryptosuite=AEAD_AES_256_GCM\)")
    # linphone's log holds its offer and the gateway's answer: one suite, two different keys
    # (each side's own, RFC 4568 §6.1), and SRTP switched on.
    bob_log = bob.log_path.read_text(errors="replace")
    assert set(re.findall(r"a=crypto:\d+ (\S+) ", bob_log)) == {"AES_256_CM_HMAC_SHA1_80"}
    assert len(set(re.findall(r"a=crypto:\d+ \S+ inline:(\S+)", bob_log))) == 2
    assert "Negotiated media encryption is LinphoneMediaEncryptionSRTP" in bob_log

    # Audio both ways: each phone decrypted the other's tone, re-encrypted by the gateway.
    _assert_tone(analyse_tone(carol.received_audio()), TONES["bob"])
    _assert_tone(analyse_tone(bob.received_audio()), TONES["carol"], share=0.85)

    # On the wire: SRTP on both legs, each with its own suite's tag, neither the same bytes.
    flows = rtp_payloads_by_seq(
        capture.path, even_ports(gw.media_ports, bob.rtp_ports, carol.rtp_ports)
    )
    bob_to_gw = one_flow(flows, bob.rtp_ports, gw.media_ports)
    gw_to_carol = one_flow(flows, gw.media_ports, carol.rtp_ports)
    carol_to_gw = one_flow(flows, carol.rtp_ports, gw.media_ports)
    gw_to_bob = one_flow(flows, gw.media_ports, bob.rtp_ports)
    _assert_rekeyed(bob_to_gw, "AES_256_CM_HMAC_SHA1_80", gw_to_carol, "AEAD_AES_256_GCM")
    _assert_rekeyed(carol_to_gw, "AEAD_AES_256_GCM", gw_to_bob, "AES_256_CM_HMAC_SHA1_80")


def test_linphone_listing_the_32_bit_tag_first_is_answered_with_its_80_bit_line(
    tmp_path: Path,
) -> None:
    """RFC 4568 §7.1.1: the answerer picks among acceptable lines. linphone offers
    AES_CM_128_HMAC_SHA1_32 as tag 1 and _80 as tag 2; the gateway answers tag 2 (the leg
    policy's order, strongest first) and linphone takes that answer: audio both ways."""
    with _gateway(tmp_path / "gw", {"bob": PASSWORDS["bob"], "carol": PASSWORDS["carol"]}) as gw:
        for name in ("bob", "carol"):
            gw.cli("accounts", "set", name, "--media-policy", "sdes")
        account = LinphoneAccount(
            f"sip:{LOOPBACK}:{gw.tls_port};transport=tls",
            f"sip:bob@{LOOPBACK}",
            PASSWORDS["bob"],
        )
        with (
            Linphone(
                tmp_path,
                "bob",
                account=account,
                source=tone_wav(tmp_path / "bob.wav", TONES["bob"]),
                media_encryption="srtp",
                srtp_suites=("AES_CM_128_HMAC_SHA1_32", "AES_CM_128_HMAC_SHA1_80"),
            ) as bob,
            _baresip(tmp_path, "carol", "srtp-mand") as carol,
        ):
            bob.wait_registered()
            carol.register_over_tls(
                LOOPBACK, gw.tls_port, PASSWORDS[carol.name], mediaenc="srtp-mand"
            )
            bob.call(_tls_uri(gw, "carol"))
            carol.wait_established()
            bob.wait_connected()
            carol.wait_audio(AUDIO_SECONDS)
            bob.wait_audio(AUDIO_SECONDS)
            live = gw.cli_until(lambda out: '"b"' in out, "calls", "--json")
            bob.terminate()
            carol.wait_closed()
            bob.wait_ended()

    bob_log = bob.log_path.read_text(errors="replace")
    # linphone's offer lists the 32-bit tag first; the gateway's answer is its tag 2 alone.
    assert re.search(r"a=crypto:1 AES_CM_128_HMAC_SHA1_32 inline:", bob_log)
    assert re.search(r"a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:", bob_log)
    assert "Negotiated media encryption is LinphoneMediaEncryptionSRTP" in bob_log
    (record,) = json.loads(live)
    (stream,) = record["security"]["a"]["streams"]
    assert stream["suite"] == "AES_CM_128_HMAC_SHA1_80"
    assert stream["sdes_answer_choice"] == (
        "tag 2 AES_CM_128_HMAC_SHA1_80, first in the leg's policy order, over the offer's "
        "first acceptable line, tag 1 AES_CM_128_HMAC_SHA1_32"
    )
    _assert_tone(analyse_tone(carol.received_audio()), TONES["bob"])
    _assert_tone(analyse_tone(bob.received_audio()), TONES["carol"], share=0.85)


# --- 3. SDES keys over UDP signalling ---------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "mediaenc"),
    [("sdes", "srtp-mand"), ("sdes", "srtp"), ("best-effort", "srtp-mand")],
)
def test_sdes_over_udp_signalling_is_refused_with_a_warning_naming_tls(
    tmp_path: Path, policy: str, mediaenc: str
) -> None:
    with (
        _echo_trunk(tmp_path) as trunk,
        _gateway(
            tmp_path / "gw", {"alice": PASSWORDS["alice"]}, trunk=trunk, policy="rtp-only"
        ) as gw,
        _baresip(tmp_path, "alice", mediaenc) as alice,
    ):
        gw.cli("accounts", "set", "alice", "--media-policy", policy)
        alice.register(gw.uri("alice"), PASSWORDS["alice"], mediaenc=mediaenc)
        alice.dial(gw.uri(TRUNK_NUMBER))
        closed = alice.wait_closed()
        assert not [e for e in alice.events if e.get("type") == "CALL_ESTABLISHED"]
    assert trunk.result().received("INVITE ") == []  # the call never left the gateway

    (refusal,) = alice.sip_messages("SIP/2.0 488 ")
    assert refusal.transport == "UDP"
    warning = re.search(r"^Warning: 399 voipgw \"(.*)\"$", refusal.message, re.MULTILINE)
    assert warning is not None, refusal.message
    assert "TLS" in warning[1], warning[1]
    assert "488" in closed.get("param", ""), closed
    # The phone offered its key; the gateway sent none back (a 488 has no SDP at all).
    (invite, *_) = alice.sip_messages("INVITE ")
    assert "a=crypto" in invite.message
    assert "inline:" not in refusal.message


def test_best_effort_over_udp_goes_on_in_plain_rtp_when_the_phone_allows_it(
    tmp_path: Path,
) -> None:
    with (
        _echo_trunk(tmp_path) as trunk,
        _gateway(
            tmp_path / "gw", {"alice": PASSWORDS["alice"]}, trunk=trunk, policy="rtp-only"
        ) as gw,
        _baresip(tmp_path, "alice", "srtp") as alice,
    ):
        alice.register(gw.uri("alice"), PASSWORDS["alice"], mediaenc="srtp")
        media = udp_filter(gw.media_ports, alice.rtp_ports)
        with Capture(tmp_path / "media.pcap", media) as capture:
            alice.dial(gw.uri(TRUNK_NUMBER))
            alice.wait_established()
            alice.wait_audio(AUDIO_SECONDS)
            alice.hangup()
            alice.wait_closed()
        result = trunk.wait()
    result.check()

    # baresip's best effort offers RTP/AVP with a=crypto; over UDP the gateway ignores the key
    # and answers RTP/AVP without one, so both sides send plain RTP.
    (invite, *_) = alice.sip_messages("INVITE ")
    assert audio_media_line(invite.message).split()[2] == "RTP/AVP"
    assert "a=crypto" in invite.message
    answer = alice.answer_to_invite()
    assert answer.transport == "UDP"
    assert audio_media_line(answer.message).split()[2] == "RTP/AVP"
    assert "a=crypto" not in answer.message
    assert "SRTP is Enabled" not in alice.output()
    flows = rtp_payloads_by_seq(capture.path, even_ports(gw.media_ports, alice.rtp_ports))
    to_phone = one_flow(flows, gw.media_ports, alice.rtp_ports)
    assert len(to_phone) >= MIN_PACKETS
    assert {len(payload) for payload in to_phone.values()} == {PCMU_PAYLOAD}
    _assert_plain_tone(tmp_path, "to-phone", to_phone, TONES["alice"])
    _assert_tone(analyse_tone(alice.received_audio()), TONES["alice"])


# --- 4. a key exchange that fails sends no media ---------------------------------------------


def test_caller_with_only_unusable_crypto_lines_gets_488_and_no_media(tmp_path: Path) -> None:
    with (
        _echo_trunk(tmp_path) as trunk,
        _gateway(
            tmp_path / "gw", {"alice": PASSWORDS["alice"]}, trunk=trunk, policy="rtp-only"
        ) as gw,
    ):
        # The gateway's media ports and the trunk's, RTP and RTCP.
        everything = udp_filter(gw.media_ports, (trunk.media_port, trunk.media_port + 1))
        trust = gw.generated_certificate  # self-signed, naming 127.0.0.1
        with (
            StunnelClient(gw.tls_address, workdir=tmp_path, trust=trust) as tunnel,
            Capture(tmp_path / "media.pcap", everything) as capture,
        ):
            result = run_sipp_uac(
                "calls/uac_savp_unusable_crypto_auth.xml",
                tunnel.address,
                workdir=tmp_path,
                transport="tcp",
                service=TRUNK_NUMBER,
                caller="alice",
                auth=("alice", PASSWORDS["alice"]),
                timeout=10,
            )
        log = gw.log_text()
    result.check()
    (refusal,) = result.received("SIP/2.0 488")
    warning = re.search(r"^Warning: 399 voipgw \"(.*)\"$", refusal, re.MULTILINE)
    assert warning is not None, refusal
    assert "RTP/SAVP" in warning[1], warning[1]
    assert "2 master keys in one line are not supported" in warning[1], warning[1]
    assert trunk.result().received("INVITE ") == []
    assert "488 Not Acceptable Here" in log
    # No packet at all to or from the gateway's media ports, nor the trunk's.
    assert udp_flows(capture.path) == {}


@pytest.mark.parametrize("caller_policy", ["sdes", "best-effort"])
def test_callee_whose_keys_fail_after_early_media_gets_no_media_through(
    tmp_path: Path, caller_policy: str
) -> None:
    """A TLS trunk (policy sdes) sends RTP as soon as it has the gateway's offer, then answers
    with an a=crypto line the gateway cannot use. Its leg never gets keys, so the gateway must
    forward none of that media (ARCHITECTURE.md: no media is forwarded on a leg whose policy
    requires encryption until its keys are ready; issue #5 item 6), and alice, who offered
    RTP/SAVP, must not receive cleartext: not one packet leaves the gateway's media ports.
    The caller gets 488 and the trunk a BYE."""
    pki = TestPki(tmp_path / "pki")
    ca = pki.ca("Carrier CA")
    trunk_certificate = ca.issue("trunk.carrier.test")  # names 127.0.0.1
    tunnel_port = free_port("tcp")
    trunk = SippUas(
        "calls/uas_early_rtp_unusable_crypto.xml",
        workdir=tmp_path,
        transport="tcp",
        call_duration_ms=1000,  # the media it sends before answering
        keys={"contact_port": str(tunnel_port)},
    )
    tone_ulaw(trunk.rundir / RTP_STREAM_FILE, TONES["carol"], seconds=2.0)
    gateway = TlsGatewayProcess(
        tmp_path / "gw",
        plugins=("udp", "tcp", "tls", "sdes"),
        tls={"ca_bundles": [str(ca.certificate)]},
        accounts={"alice": PASSWORDS["alice"]},
        digest_algorithms=("MD5",),
        settings={"gateway": {"log_level": "debug", "domains": [LOOPBACK]}},
        extra_toml=tls_trunk_toml(tunnel_port, "sdes"),
    )
    with (
        trunk,
        StunnelServer(
            trunk.address, workdir=tmp_path, certificate=trunk_certificate, port=tunnel_port
        ),
        gateway as gw,
        _baresip(tmp_path, "alice", "srtp-mand") as alice,
    ):
        gw.cli("accounts", "set", "alice", "--media-policy", caller_policy)
        alice.register_over_tls(LOOPBACK, gw.tls_port, PASSWORDS[alice.name], mediaenc="srtp-mand")
        trunk_media = (trunk.media_port, trunk.media_port + 1)
        media = udp_filter(gw.media_ports, alice.rtp_ports, trunk_media)
        with Capture(tmp_path / "media.pcap", media) as capture:
            alice.dial(_tls_uri(gw, TRUNK_NUMBER))
            closed = alice.wait_closed(timeout=15)
            result = trunk.wait(timeout=10)
        log = gw.log_text()
    result.check()  # it got its ACK and its BYE
    assert "488" in closed.get("param", ""), closed
    assert not [e for e in alice.events if e.get("type") == "CALL_ESTABLISHED"]
    # The call's end says what failed, as its record does (docs/architecture.md, call failures).
    ended = r"ended: bad SDP answer: the answer's keys are unusable.* tag 99 was not offered"
    assert re.search(ended, log), log

    flows = udp_flows(capture.path)
    # The trunk did send its early media to the gateway (the test is not vacuous) ...
    early = sum(n for (src, dst), n in flows.items() if inside(src, trunk_media))
    assert early >= MIN_PACKETS, flows
    # ... and none of it, nor anything else, left the gateway's media ports.
    sent = {flow: n for flow, n in flows.items() if inside(flow[0], gw.media_ports)}
    payload_sizes = {
        flow: sorted({len(payload) for payload in packets.values()})
        for flow, packets in rtp_payloads_by_seq(
            capture.path, even_ports(gw.media_ports, alice.rtp_ports)
        ).items()
        if inside(flow[0], gw.media_ports)
    }
    assert sent == {}, f"{sent}; RTP payload sizes {payload_sizes} (160: plain PCMU)"
