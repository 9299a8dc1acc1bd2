"""Call transfers between real phones through the gateway (RFC 3515 REFER, terminated in the
gateway; attended with Replaces, RFC 3891).

1. Blind: alice (baresip, 1000 Hz) calls bob (baresip, 440 Hz); bob transfers her to carol
   (baresip, 700 Hz) with baresip's ``transfer`` command. The gateway answers bob's REFER 202,
   calls carol, re-INVITEs alice with carol's media and tells bob how it went in NOTIFYs; bob
   leaves. Passes when carol hears alice's tone and alice, on the same call as before, hears
   carol's: both through the relay, measured in a capture of what the gateway sends each phone.
2. Attended: carol (baresip, 700 Hz) calls alice (linphonec, 1000 Hz); alice holds her, consults
   bob (linphonec, 440 Hz) and transfers with linphonec's ``transfer 1 --to-call 2``: a REFER
   whose Refer-To names the consultation call in a Replaces. The gateway calls bob's phone with a
   Replaces for its own dialog with bob, bob's phone swaps the consultation call for it and hangs
   that one up, and what the gateway sends bob's new call is carol's tone.
3. Attended, to a carrier's call: a sipp trunk calls alice (linphonec); alice holds it, calls an
   outside number through a second sipp trunk and transfers. Carriers take no Replaces: the
   gateway joins the consultation's trunk leg to the first call (a re-INVITE without SDP to the
   carrier, its offer in a re-INVITE to the caller, the answer in the ACK), and the calling
   trunk's BYE reaches the carrier on the consultation's dialog.
"""

from __future__ import annotations

import itertools
import re
import time
import wave
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest

from gateway.core.media.amr import (
    AMR,
    AMR_WB,
    AmrCodec,
    AmrDecoder,
    load_decoder,
    load_encoder,
    storage_frame,
)
from gateway.core.media.g729 import Bcg729Decoder, load_bcg729
from gateway.core.media.gsm import GsmDecoder, load_libgsm
from gateway.core.media.opus import OpusDecoder, load_libopus
from gateway.plugins.taps.g722 import G722Decoder
from tests.conftest import missing
from tests.interop.harness import LOOPBACK, Baresip, Capture, GatewayProcess, analyse_tone, tone_wav
from tests.interop.harness.audio import g711_wav, tone_share_per_window
from tests.interop.harness.baresip import CODEC_CHANNELS, CODEC_RATES
from tests.interop.harness.capture import (
    even_ports,
    inside,
    rtp_packets,
    rtp_payloads,
    rtp_payloads_by_seq,
    rtp_streams,
    sip_requests,
    udp_filter,
)
from tests.interop.harness.linphone import Linphone, LinphoneAccount
from tests.interop.harness.sipp import SippResult, SippUas, run_sipp_uac

REALM = "interop.voipgw.test"
PASSWORDS = {"alice": "wonderland-7f3a", "bob": "builder-c29e", "carol": "carolling-81d0"}
TONES = {"alice": 1000.0, "bob": 440.0, "carol": 700.0}
AUDIO_SECONDS = 1.0
PCMU = 0
G722 = 9
GSM = 3
G729 = 18


@contextmanager
def three_phones(
    tmp_path: Path,
    media: dict[str, object],
    *,
    codec: str = "g711",
    talking: tuple[str, ...] = tuple(TONES),
) -> Iterator[tuple[GatewayProcess, Baresip, Baresip, Baresip]]:
    """The gateway with ``media`` as its ``[media]`` table, and alice, bob and carol (baresip
    offering ``codec`` alone, one of its modules; those in ``talking`` each sending its tone of
    TONES, the others silence), not yet registered."""
    rate, channels = CODEC_RATES[codec], CODEC_CHANNELS.get(codec, 1)
    tones = {
        name: tone_wav(tmp_path / f"{name}.wav", TONES[name], rate=rate, channels=channels)
        for name in talking
    }
    with (
        GatewayProcess(
            tmp_path,
            accounts=PASSWORDS,
            digest_algorithms=("MD5",),  # baresip 1.0.0 answers MD5 only
            settings={"gateway": {"realm": REALM, "log_level": "debug"}, "media": media},
        ) as gw,
        Baresip(tmp_path, "alice", source=tones.get("alice"), codecs=(codec,)) as alice,
        Baresip(tmp_path, "bob", source=tones.get("bob"), codecs=(codec,)) as bob,
        Baresip(tmp_path, "carol", source=tones.get("carol"), codecs=(codec,)) as carol,
    ):
        yield gw, alice, bob, carol


@pytest.mark.interop
@pytest.mark.parametrize("workers", [1, 2], ids=["in-process-relay", "two-media-workers"])
def test_a_blind_transfer_puts_the_caller_through_to_the_target_with_media_both_ways(
    tmp_path: Path, workers: int
) -> None:
    # With [media] workers = 2 the call's streams live in a worker process: the transfer's
    # re-pointing of the transferor's side crosses the process boundary (worker_protocol).
    with three_phones(tmp_path, {"workers": workers}) as (gw, alice, bob, carol):
        for phone in (alice, bob, carol):
            phone.register(gw.uri(phone.name), PASSWORDS[phone.name])
        ports = [gw.media_ports, alice.rtp_ports, bob.rtp_ports, carol.rtp_ports]
        media = udp_filter(*ports)
        with Capture(tmp_path / "signalling.pcap", f"port {gw.port}") as signalling:
            alice.dial(gw.uri("bob"))
            call = alice.wait_established()
            bob.wait_established()
            alice.wait_audio(AUDIO_SECONDS)

            bob.command("transfer", gw.uri("carol"))
            incoming = carol.wait_established()
            gw.wait_for_log(rf"call {re.escape(call['id'])}: transfer of the B leg to .*: 200 OK")
            bob.wait_closed(timeout=40)  # it hangs up on the final NOTIFY (or our BYE, 64*T1)
            with Capture(tmp_path / "transferred.pcap", media) as transferred:
                carol.wait_audio(AUDIO_SECONDS)
            alice.hangup()
            alice.wait_closed()
            carol.wait_closed()
        gw.wait_for_log(rf"call {re.escape(call['id'])} ended: BYE from A leg")
        # carol sees the party she talks to calling: alice's account.
        assert incoming["peeruri"].startswith("sip:alice@")
        heard_by_carol = analyse_tone(carol.received_audio())
        assert heard_by_carol.dominant_frequency == pytest.approx(TONES["alice"], abs=3)

    # The REFER got 202, and bob heard of the outcome in NOTIFYs with sipfrag bodies.
    refers = sip_requests(signalling.path, [gw.port], "REFER")
    notifies = sip_requests(signalling.path, [gw.port], "NOTIFY")
    assert sum(refers.values()) == 1, refers
    assert sum(notifies.values()) >= 2, notifies  # 100 Trying ... 200 OK

    # After the transfer, what the gateway sends alice is carol's tone, and carol's alice's.
    even = even_ports(*ports)
    streams = rtp_streams(transferred.path, even)
    for phone, far_end in ((alice, "carol"), (carol, "alice")):
        [(source, destination)] = [
            (src, dst)
            for src, dst in streams
            if inside(src, gw.media_ports) and inside(dst, phone.rtp_ports)
        ]
        payload = rtp_payloads(transferred.path, even, source, destination)[PCMU]
        heard = analyse_tone(g711_wav(payload, tmp_path / f"{phone.name}-transferred.wav"))
        assert heard.dominant_frequency == pytest.approx(TONES[far_end], abs=3)
        assert heard.power_share > 0.9
    # bob is out of the media path: nothing went to him in that window.
    assert not [s for s in streams if inside(s[1], bob.rtp_ports)], streams


def gateway_to(
    phone: Baresip | Linphone, gw: GatewayProcess, pcap: Path, ports: list[int]
) -> tuple[tuple[str, int], tuple[str, int]]:
    """The one RTP flow from the gateway to ``phone`` in ``pcap``."""
    [flow] = [
        (src, dst)
        for src, dst in rtp_streams(pcap, ports)
        if inside(src, gw.media_ports) and inside(dst, phone.rtp_ports)
    ]
    return flow


def capture_a_second_of_ringing(
    tmp_path: Path,
    gw: GatewayProcess,
    transferee: Baresip | Linphone,
    ports: list[tuple[int, int]],
    even: list[int],
) -> Path:
    """A capture of the calls' media (``ports``) from now, once the tone plays, until it holds
    a second of the ringing tone's burst (the eu plan, 1 s on, 4 s off): 50 RTP packets from
    the gateway to ``transferee`` on the ``even`` ports, polled for. Only those count: the
    other phones' packets in the capture would end it after half a second of tone or less,
    and the transferee's own recording of it with it."""
    with Capture(tmp_path / "ringing.pcap", udp_filter(*ports)) as ringing:
        deadline = time.monotonic() + 10
        while True:
            streams = rtp_streams(ringing.path, even)
            heard = sum(
                count
                for (source, destination), count in streams.items()
                if inside(source, gw.media_ports) and inside(destination, transferee.rtp_ports)
            )
            if heard >= 50:
                return ringing.path
            assert time.monotonic() < deadline, f"no second of tone reached the capture: {streams}"


def ring_through_a_transfer(
    tmp_path: Path, gw: GatewayProcess, alice: Baresip, bob: Baresip, carol: Baresip
) -> tuple[Path, tuple[str, int], tuple[str, int], list[int]]:
    """alice calls bob, bob transfers her to carol, whose phone rings until carol accepts
    after a second of the ringing tone's burst (the eu plan, 1 s on); then all hang up. The
    capture of the ringing, what sent the gateway's media to alice (source, destination) and
    the even ports of the calls' media."""
    alice.register(gw.uri("alice"), PASSWORDS["alice"])
    bob.register(gw.uri("bob"), PASSWORDS["bob"])
    carol.register(gw.uri("carol"), PASSWORDS["carol"], answermode="manual")
    ports = [gw.media_ports, alice.rtp_ports, bob.rtp_ports, carol.rtp_ports]
    even = even_ports(*ports)
    alice.dial(gw.uri("bob"))
    call = alice.wait_established()
    bob.wait_established()
    alice.wait_audio(AUDIO_SECONDS)

    bob.command("transfer", gw.uri("carol"))
    carol.wait_event("CALL_INCOMING", timeout=10)
    gw.wait_for_log(rf"call {re.escape(call['id'])}: ringing tone \(eu\) to the A leg")
    ringing = capture_a_second_of_ringing(tmp_path, gw, alice, ports, even)
    carol.accept()
    carol.wait_established()
    gw.wait_for_log(rf"call {re.escape(call['id'])}: transfer of the B leg to .*: 200 OK")
    bob.wait_closed(timeout=40)
    alice.hangup()
    alice.wait_closed()
    carol.wait_closed()
    source, destination = gateway_to(alice, gw, ringing, even)
    # One stream of the gateway's own: not bob's, relayed.
    ssrcs = {
        packet["ssrc"]
        for packet in rtp_packets(ringing, even)
        if (packet["src"], int(packet["srcport"])) == source
        and (packet["dst"], int(packet["dstport"])) == destination
    }
    assert len(ssrcs) == 1, ssrcs
    return ringing, source, destination, even


@pytest.mark.interop
@pytest.mark.parametrize("workers", [1, 2], ids=["in-process-relay", "two-media-workers"])
def test_the_caller_hears_the_ringing_tone_while_a_blind_transfers_target_rings(
    tmp_path: Path, workers: int
) -> None:
    # alice calls bob, bob transfers her to carol, whose phone rings until the test answers.
    # Until then alice hears the gateway's ringing tone (the eu plan: 425 Hz), not bob's
    # 440 Hz; with two media workers the tone is paced by the worker that relays the call.
    with three_phones(tmp_path, {"workers": workers, "ringback_tone": "eu"}) as phones:
        ringing, source, destination, even = ring_through_a_transfer(tmp_path, *phones)
    payload = rtp_payloads(ringing, even, source, destination)[PCMU]
    heard = analyse_tone(g711_wav(payload, tmp_path / "alice-ringing.wav"))
    assert heard.dominant_frequency == pytest.approx(425.0, abs=3)
    assert heard.power_share > 0.9


def ring_baresip_through_a_transfer(
    tmp_path: Path, codec: str
) -> tuple[Path, tuple[str, int], tuple[str, int], list[int], list[Path]]:
    """:func:`ring_through_a_transfer` with three baresip phones offering ``codec`` alone (a
    module of theirs), the tone the eu plan, played by a media worker (the tone's codec crosses
    worker_protocol's PlayTone): its results, and the recordings of what alice's phone
    decoded. bob and carol send silence, so what alice decoded while carol rang is the tone."""
    media = {"workers": 2, "ringback_tone": "eu"}
    with three_phones(tmp_path, media, codec=codec, talking=("alice",)) as phones:
        ringing, source, destination, even = ring_through_a_transfer(tmp_path, *phones)
        alice = phones[1]
        alice.received_audio()  # the newest finished
        recordings = alice.recordings("dec")
    return ringing, source, destination, even, recordings


def the_eu_tone(pcm: bytes, rate: int, tmp_path: Path) -> Path:
    """``pcm`` (16-bit mono at ``rate``: what the capture shows the gateway sent, decoded) as
    a WAV, which must be the eu plan's 425 Hz with over 80 % of its power. The WAV's path."""
    captured = tmp_path / "alice-ringing.wav"
    with wave.open(str(captured), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm)
    heard = analyse_tone(captured)
    assert heard.dominant_frequency == pytest.approx(425.0, abs=3)
    assert heard.power_share > 0.8
    return captured


def one_holds_the_eu_tone(recordings: list[Path]) -> None:
    """What the transferee's phone decoded and recorded itself holds at least half a second
    of the eu plan's 425 Hz, clean, in one of ``recordings``. A phone's recordings run across
    the call: bob's silence, the tone, carol's stream, with its decoder's transients where one
    stream gives way to another (one in a CI run held half the file's power), and a stream
    restarted by the re-INVITE may open a file of its own; so a window at a time."""
    shares = [tone_share_per_window(path, 425.0) for path in recordings]
    assert any(len([share for share in each if share > 0.9]) >= 5 for each in shares), shares


@pytest.mark.interop
def test_an_hd_caller_hears_the_ringing_tone_in_g722(tmp_path: Path) -> None:
    # The three phones offer G.722 only (baresip's g722 module, RFC 3551 payload type 9): the
    # ringing tone goes to alice as G.722 (before session 55 she heard silence). What alice's
    # baresip decoded and recorded (its own G.722 decoder, 16 kHz) is the tone; and the
    # captured payloads decode to it with the recorder's decoder too.
    ringing, source, destination, even, recordings = ring_baresip_through_a_transfer(
        tmp_path, "g722"
    )
    payloads = rtp_payloads(ringing, even, source, destination)
    assert set(payloads) == {G722}, set(payloads)
    captured = the_eu_tone(G722Decoder().decode(payloads[G722]), 16000, tmp_path)
    for path in (captured, *recordings):
        with wave.open(str(path)) as wav:
            assert wav.getframerate() == 16000, path  # wideband: G.722, not G.711
    one_holds_the_eu_tone(recordings)


def dynamic_tone_packets(
    ringing: Path,
    even: list[int],
    source: tuple[str, int],
    destination: tuple[str, int],
    *,
    step: int,
) -> list[dict[str, str]]:
    """The tone's packets the capture shows the gateway sent (``source`` to ``destination``):
    one dynamic payload type (the number alice's SDP gave the codec), and timestamps stepping
    ``step`` a packet (the codec's RTP clock / 50)."""
    tone = [
        packet
        for packet in rtp_packets(ringing, even)
        if (packet["src"], int(packet["srcport"])) == source
        and (packet["dst"], int(packet["dstport"])) == destination
    ]
    [payload_type] = {int(packet["payload_type"]) for packet in tone}
    assert payload_type >= 96
    stamps = [int(packet["timestamp"]) for packet in tone]
    steps = {(later - earlier) % 2**32 for earlier, later in itertools.pairwise(stamps)}
    assert steps == {step}, steps
    return tone


@pytest.mark.interop
def test_an_opus_caller_hears_the_ringing_tone_in_opus(tmp_path: Path) -> None:
    # The three phones offer Opus alone (baresip's opus module, opus/48000/2, RFC 7587), as a
    # WebRTC client narrowed to it: the ringing tone goes to alice as Opus (before session 57
    # she heard silence), on Opus's 48 kHz RTP clock (960 a packet, RFC 7587 §4.1), paced by a
    # media worker (the codec crosses worker_protocol's PlayTone). What the capture shows the
    # gateway sent her decodes to the tone (libopus), and so does what her own baresip decoded
    # and recorded (its opus module, at 48 kHz in stereo).
    libopus = load_libopus()
    if libopus is None:
        missing("libopus is not installed (apt-get install libopus0)")
    ringing, source, destination, even, recordings = ring_baresip_through_a_transfer(
        tmp_path, "opus"
    )
    tone = dynamic_tone_packets(ringing, even, source, destination, step=960)
    payloads = rtp_payloads_by_seq(ringing, even)[(source, destination)]
    # Decoded at 8 kHz (any rate decodes any Opus packet, RFC 6716 §2): sox's 4096-point
    # spectra then have 2 Hz bins, at 48 kHz 12 Hz, where even a pure 425 Hz sine puts a
    # fifth of its power more than analyse_tone's 10 Hz from its peak.
    decoder = OpusDecoder(libopus, 8000)
    pcm = b"".join(decoder.decode(payloads[int(packet["seq"])]) for packet in tone)
    the_eu_tone(pcm, 8000, tmp_path)
    for path in recordings:
        with wave.open(str(path)) as wav:
            assert wav.getframerate() == 48000, path  # Opus, not G.711
    one_holds_the_eu_tone(recordings)


@pytest.mark.interop
@pytest.mark.parametrize(
    ("module", "codec", "octets"),
    [("amr", AMR, 1 + 1 + 31), ("amr-wb", AMR_WB, 1 + 1 + 32)],
    ids=["amr", "amr-wb"],
)
def test_an_amr_caller_hears_the_ringing_tone_in_amr(
    tmp_path: Path, module: str, codec: AmrCodec, octets: int
) -> None:
    # The three phones offer AMR (or AMR-WB) alone (baresip's amr module, with octet-align=1,
    # the only packing it takes), as a mobile operator's line: the ringing tone goes to alice
    # as AMR at 12.2 kbit/s (AMR-WB at 12.65), octet-aligned as her fmtp asks (RFC 4867 §4.4;
    # before session 62 she heard silence), on the codec's RTP clock (§4.1: 160 or 320 a
    # packet), paced by a media worker (the codec crosses worker_protocol's PlayTone). What
    # the capture shows the gateway sent her decodes to the tone (opencore-amr), and so does
    # what her own baresip decoded and recorded (its amr module).
    decoder_library = load_decoder(codec)
    if load_encoder(codec) is None or decoder_library is None:
        missing(f"{codec.name} is not installed (libopencore-amrnb0, libvo-amrwbenc0, ...)")
    ringing, source, destination, even, recordings = ring_baresip_through_a_transfer(
        tmp_path, module
    )
    tone = dynamic_tone_packets(ringing, even, source, destination, step=codec.frame_samples)
    payloads = rtp_payloads_by_seq(ringing, even)[(source, destination)]
    # Octet-aligned: the CMR octet, the table of contents entry (FT, Q = 1), the speech octets.
    assert {len(payloads[int(packet["seq"])]) for packet in tone} == {octets}
    decoder = AmrDecoder(decoder_library)
    pcm = b"".join(
        decoder.decode(storage_frame(codec, payloads[int(packet["seq"])], octet_aligned=True))
        for packet in tone
    )
    the_eu_tone(pcm, codec.sample_rate, tmp_path)
    for path in recordings:
        with wave.open(str(path)) as wav:
            assert wav.getframerate() == codec.sample_rate, path
    one_holds_the_eu_tone(recordings)


@pytest.mark.interop
def test_a_gsm_caller_hears_the_ringing_tone_in_gsm(tmp_path: Path) -> None:
    # The three phones offer GSM alone (baresip's gsm module, RFC 3551 payload type 3), as an
    # older PBX or PSTN gateway: the ringing tone goes to alice as GSM full rate, a 33-octet
    # frame a packet (RFC 3551 §4.5.8; before session 63 she heard silence), paced by a media
    # worker (the codec crosses worker_protocol's PlayTone). What the capture shows the gateway
    # sent her decodes to the tone (libgsm, the recorder's decoder), and so does what her own
    # baresip decoded and recorded (its gsm module, libgsm too).
    libgsm = load_libgsm()
    if libgsm is None:
        missing("libgsm is not installed (apt-get install libgsm1)")
    ringing, source, destination, even, recordings = ring_baresip_through_a_transfer(
        tmp_path, "gsm"
    )
    payloads = rtp_payloads(ringing, even, source, destination)
    assert set(payloads) == {GSM}, set(payloads)
    the_eu_tone(GsmDecoder(libgsm).decode(payloads[GSM]), 8000, tmp_path)
    for path in recordings:
        with wave.open(str(path)) as wav:
            assert wav.getframerate() == 8000, path
    one_holds_the_eu_tone(recordings)


@pytest.mark.interop
def test_a_g729_caller_hears_the_ringing_tone_in_g729(tmp_path: Path) -> None:
    # alice, bob and carol are linphonec with G.729 alone (mediastreamer2's, bcg729): a
    # low-bandwidth line. bob transfers alice to carol, whose phone rings; meanwhile the
    # ringing tone goes to alice as G.729, two 10-octet frames a packet (RFC 3551 §4.5.6;
    # before session 56 she heard silence), in the G.729 her phone's SDP offered with
    # linphone's own fmtp (annexb=yes). What the capture shows the gateway sent her decodes to
    # the tone (bcg729, the recorder's decoder), and so does what her phone decoded and
    # recorded itself (mediastreamer2's G.729).
    bcg729 = load_bcg729()
    if bcg729 is None:
        missing("libbcg729 is not installed (apt-get install libbcg729-0)")
    settings = {
        # linphonec drops the port from its identity: 127.0.0.1 must be one of our domains.
        "gateway": {"realm": REALM, "domains": [LOOPBACK]},
        "media": {"ringback_tone": "eu"},
    }
    with GatewayProcess(
        tmp_path, accounts=PASSWORDS, digest_algorithms=("MD5",), settings=settings
    ) as gw:

        def phone(name: str, **options: bool) -> Linphone:
            account = LinphoneAccount(
                f"sip:{LOOPBACK}:{gw.port}", f"sip:{name}@{LOOPBACK}", PASSWORDS[name]
            )
            # Unencrypted media allowed: with media_encryption none made mandatory, linphonec
            # neither sends nor takes any RTP.
            return Linphone(
                tmp_path,
                name,
                account=account,
                codecs=(("G729", 8000),),
                mandatory=False,
                **options,
            )

        with (
            phone("alice") as alice,
            phone("bob", auto_answer=True) as bob,
            phone("carol") as carol,
        ):
            for each in (alice, bob, carol):
                each.wait_registered()
            ports = [gw.media_ports, alice.rtp_ports, bob.rtp_ports, carol.rtp_ports]
            even = even_ports(*ports)
            alice.call(gw.uri("bob"))
            alice.wait_connected()
            bob.wait_connected()
            bob.command(f"transfer 1 {gw.uri('carol')}")
            gw.wait_for_log(r"ringing tone \(eu\) to the A leg", timeout=15)
            ringing = capture_a_second_of_ringing(tmp_path, gw, alice, ports, even)
            alice.terminate()
            alice.wait_ended()
        recorded = alice.received_audio()
    source, destination = gateway_to(alice, gw, ringing, even)
    payloads = rtp_payloads(ringing, even, source, destination)
    assert set(payloads) == {G729}, set(payloads)
    the_eu_tone(Bcg729Decoder(bcg729).decode(payloads[G729]), 8000, tmp_path)
    assert len(payloads[G729]) % 20 == 0  # two 10-octet frames a packet, no SID frame
    one_holds_the_eu_tone([recorded])


@pytest.mark.interop
def test_an_attended_transfer_replaces_the_consultation_call_at_the_target(
    tmp_path: Path,
) -> None:
    tones = {name: tone_wav(tmp_path / f"{name}.wav", hz) for name, hz in TONES.items()}
    with GatewayProcess(
        tmp_path,
        accounts=PASSWORDS,
        digest_algorithms=("MD5",),  # baresip 1.0.0 answers MD5 only
        # linphonec drops the port from its identity: 127.0.0.1 must be one of our domains.
        settings={"gateway": {"realm": REALM, "log_level": "debug", "domains": [LOOPBACK]}},
    ) as gw:

        def account(name: str) -> LinphoneAccount:
            return LinphoneAccount(
                f"sip:{LOOPBACK}:{gw.port}", f"sip:{name}@{LOOPBACK}", PASSWORDS[name]
            )

        with (
            Linphone(
                tmp_path, "alice", account=account("alice"), source=tones["alice"], auto_answer=True
            ) as alice,
            Linphone(
                tmp_path, "bob", account=account("bob"), source=tones["bob"], auto_answer=True
            ) as bob,
            Baresip(tmp_path, "carol", source=tones["carol"]) as carol,
        ):
            carol.register(gw.uri("carol"), PASSWORDS["carol"])
            carol.dial(gw.uri("alice"))
            call = carol.wait_established()
            alice.wait_connected()
            # alice holds carol (a=sendonly) and consults bob.
            alice.command("pause 1", expect=r"is now paused")
            alice.command(f"call {gw.uri('bob')}", expect=r"assigned id 2")
            bob.wait_connected()
            alice.wait_output(r"Media streams established with \S+ for call 2")
            alice.command("transfer 1 --to-call 2", expect=r"attended transfer of call 1")
            gw.wait_for_log(
                rf"call {re.escape(call['id'])}: transfer of the B leg to .*: 200 OK", timeout=15
            )
            # bob's phone hung up the replaced consultation call: the gateway ended it.
            gw.wait_for_log(r"ended: BYE from B leg", timeout=15)
            bob.wait_output(r"Media streams established with \S+ for call 2")
            ports = [gw.media_ports, alice.rtp_ports, bob.rtp_ports, carol.rtp_ports]
            with Capture(tmp_path / "transferred.pcap", udp_filter(*ports)) as transferred:
                # baresip 1.0.0 records no received audio after a hold: let a second of the
                # call pass by its own sending clock, and measure what it got in the capture.
                sent = carol.recorded_seconds("enc")
                carol.wait_audio(sent + AUDIO_SECONDS, timeout=15, kind="enc")
            carol.hangup()
            carol.wait_closed()
        gw.wait_for_log(rf"call {re.escape(call['id'])} ended: BYE from A leg")
        log = gw.log_text()
        assert "(attended)" in log

    even = even_ports(*ports)
    streams = rtp_streams(transferred.path, even)
    # What the gateway sends bob's phone on its new call (a port of its own, not the one of its
    # first call) is carol's tone. The other way is not measured: linphonec 5.1.65 sends no RTP
    # on a call that replaced another (its RTCP reaches the gateway, no RTP leaves the phone:
    # the capture is taken on the loopback, before any relay could drop anything).
    [(source, destination)] = [
        (src, dst)
        for src, dst in streams
        if inside(src, gw.media_ports)
        and not inside(dst, gw.media_ports)
        and not inside(dst, carol.rtp_ports)
    ]
    payload = rtp_payloads(transferred.path, even, source, destination)[PCMU]
    heard = analyse_tone(g711_wav(payload, tmp_path / "to-bob-transferred.wav"))
    assert heard.dominant_frequency == pytest.approx(TONES["carol"], abs=3)
    assert heard.power_share > 0.9
    # alice is out of the media path.
    assert not [s for s in streams if inside(s[1], alice.rtp_ports)], streams


def attended_transfer_to_a_carriers_call(
    tmp_path: Path, carrier_scenario: str
) -> tuple[SippResult, SippResult, str]:
    """A sipp trunk calls alice (linphonec); alice holds it, calls an outside number through a
    second sipp trunk (``carrier_scenario``) and transfers: the carrier's and the transferee's
    sipp runs, checked, and the gateway's log."""
    did, outside = "+4930123456", "+4989555"
    with SippUas(carrier_scenario, workdir=tmp_path) as carrier:
        trunks = (
            "[[trunks]]\n"
            'name = "pbx"\n'
            'address = "udp:127.0.0.2:5060"\n'
            'allowed_sources = ["127.0.0.2"]\n'
            f'dids = {{"{did}" = "alice"}}\n'
            "[[trunks]]\n"
            'name = "carrier"\n'
            f'address = "{carrier.config_address}"\n'
            'prefixes = ["+49"]\n'
            "allowed_sources = []\n"
        )
        with GatewayProcess(
            tmp_path,
            accounts={"alice": PASSWORDS["alice"]},
            digest_algorithms=("MD5",),
            settings={"gateway": {"realm": REALM, "log_level": "debug", "domains": [LOOPBACK]}},
            extra_toml=trunks,
        ) as gw:
            account = LinphoneAccount(
                f"sip:{LOOPBACK}:{gw.port}", f"sip:alice@{LOOPBACK}", PASSWORDS["alice"]
            )
            with (
                Linphone(tmp_path, "alice", account=account, auto_answer=True) as alice,
                ThreadPoolExecutor(1) as pool,
            ):
                caller = pool.submit(
                    run_sipp_uac,
                    "calls/uac_call_reinvited.xml",
                    gw.address,
                    workdir=tmp_path,
                    service=did,
                    caller="+4940777",
                    local_ip="127.0.0.2",
                    call_duration_ms=1000,
                    timeout=40,
                )
                alice.wait_connected(timeout=15)
                alice.command("pause 1", expect=r"is now paused")
                alice.command(f"call sip:{outside}@{LOOPBACK}:{gw.port}", expect=r"assigned id 2")
                alice.wait_output(r"Media streams established with \S+ for call 2", timeout=15)
                alice.command("transfer 1 --to-call 2", expect=r"attended transfer of call 1")
                gw.wait_for_log(r"transfer of the B leg to .*: 200 OK", timeout=15)
                transferee = caller.result(timeout=60)
            transferee.check()
            joined = carrier.wait(timeout=15)
            joined.check()
            return joined, transferee, gw.log_text()


@pytest.mark.interop
def test_an_attended_transfer_to_a_carriers_call_joins_the_carrier_leg(tmp_path: Path) -> None:
    joined, transferee, log = attended_transfer_to_a_carriers_call(
        tmp_path, "calls/uas_answer_late_reinvite.xml"
    )
    assert "transferred: the callee joined the transferred call" in log
    # The carrier saw one call: its INVITE, the join's re-INVITE without SDP (checked by its
    # scenario), the ACK with the transferee's answer, and the transferee's BYE.
    assert len(joined.received("INVITE ")) == 2
    assert len(joined.received("BYE ")) == 1
    (reoffer,) = [m for m in transferee.received("INVITE ") if "a=sendrecv" in m]
    assert "m=audio" in reoffer


@pytest.mark.interop
def test_a_carrier_that_refuses_a_late_offer_is_joined_with_our_offer(tmp_path: Path) -> None:
    # Session 52: the carrier answers the join's re-INVITE without SDP 488 (its scenario
    # checks it had none); the gateway re-INVITEs it with an offer of its own, sendrecv (the
    # scenario checks m=audio and a=sendrecv), whose answer joins it; the transferee, held by
    # alice while she consulted, is taken off hold by a re-INVITE of the gateway's, sendrecv.
    joined, transferee, log = attended_transfer_to_a_carriers_call(
        tmp_path, "calls/uas_answer_refuse_late_reinvite.xml"
    )
    assert "refused our re-INVITE without SDP (488 Not Acceptable Here)" in log
    assert len(joined.received("INVITE ")) == 3
    assert len(joined.received("BYE ")) == 1
    (resume,) = [m for m in transferee.received("INVITE ") if "a=sendrecv" in m]
    assert "m=audio" in resume


@pytest.mark.interop
def test_a_video_call_is_transferred_to_a_phone_without_video(tmp_path: Path) -> None:
    """A carrier's call with audio and video (sipp) to alice (baresip, no video: she answers
    the video line at port 0), transferred by alice to carol (baresip), whose 200 offers one
    m= line. RFC 3264 §8 counts m= lines per dialog, and carol's dialog is her own: the
    carrier is re-INVITEd with carol's audio and the video line at port 0 (its scenario
    checks it), carol gets an answer of her one line. Before session 50 carol's offer was
    refused for having fewer m= lines than the call (488 in alice's NOTIFY)."""
    did = "+4930123456"
    trunk = (
        "[[trunks]]\n"
        'name = "pbx"\n'
        'address = "udp:127.0.0.2:5060"\n'
        'allowed_sources = ["127.0.0.2"]\n'
        f'dids = {{"{did}" = "alice"}}\n'
    )
    accounts = {name: PASSWORDS[name] for name in ("alice", "carol")}
    with (
        GatewayProcess(
            tmp_path,
            accounts=accounts,
            digest_algorithms=("MD5",),  # baresip 1.0.0 answers MD5 only
            settings={"gateway": {"realm": REALM, "log_level": "debug"}},
            extra_toml=trunk,
        ) as gw,
        Baresip(tmp_path, "alice") as alice,
        Baresip(tmp_path, "carol") as carol,
        ThreadPoolExecutor(1) as pool,
    ):
        for phone in (alice, carol):
            phone.register(gw.uri(phone.name), PASSWORDS[phone.name])
        caller = pool.submit(
            run_sipp_uac,
            "calls/uac_video_call_transferred.xml",
            gw.address,
            workdir=tmp_path,
            service=did,
            caller="+4940777",
            local_ip="127.0.0.2",
            call_duration_ms=2000,
            timeout=40,
        )
        alice.wait_established()
        alice.command("transfer", gw.uri("carol"))
        carol.wait_established()
        gw.wait_for_log(r"transfer of the B leg to .*: 200 OK", timeout=15)
        transferee = caller.result(timeout=60)
        transferee.check()
        carol.wait_closed(timeout=15)
    (reoffer,) = transferee.received("INVITE ")  # the transfer's re-INVITE
    assert "m=video 0 " in reoffer
