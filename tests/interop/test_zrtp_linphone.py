"""ZRTP with a real ZRTP phone: linphonec 5.1 (bzrtp) and the gateway's ``zrtp`` plugin.

The gateway is the phone's ZRTP peer (RFC 6189 §10): it answers the phone's a=zrtp-hash with its
own, runs the exchange on the media port, and relays the media decrypted to the other leg,
which is keyed on its own (here: none, a plain-RTP trunk; or ZRTP again, another phone).

1. bob (linphonec, ZRTP mandatory, default algorithms: DH3k; then X25519) calls a sipp trunk
   that answers in plain RTP and echoes the media. bob's phone says "fully encrypted" with a
   SAS, and ``voipgw calls`` shows the same SAS for bob's leg; a capture shows the ZRTP
   exchange and then SRTP between bob and the gateway, the plain tone between the gateway and
   the trunk, and bob hears his own tone come back.
2. alice and bob (both linphonec with ZRTP) call each other through the gateway: each phone
   shows the SAS of its own link to the gateway; the two differ (two exchanges, RFC 6189 §10:
   the gateway is no trusted MiTM), both match what ``voipgw calls`` shows, and each phone
   hears the other's tone. Also with the media in a worker process (``[media] workers = 2``):
   the ZRTP packets cross the process boundary to the call's handshake task and back.
3. alice and bob with video too: on each leg one DH exchange (audio) and the video stream keyed
   in Multistream mode from its ZRTP session key (RFC 6189 §4.4.3), one SAS per leg.
4. Over TLS, a ZRTP phone calls an SDES phone: the gateway offers the callee SDES and ZRTP in
   one RTP/AVP line, the callee's answer (a=crypto from a phone set to SRTP, a=zrtp-hash from
   one set to ZRTP) picks the method, and the tones cross between the two kinds of keys.
"""

from __future__ import annotations

import json
import re
import subprocess
import wave
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.interop.harness import (
    LOOPBACK,
    Baresip,
    Capture,
    GatewayProcess,
    analyse_tone,
    tone_wav,
)
from tests.interop.harness.audio import g711_wav
from tests.interop.harness.capture import one_flow, rtp_payloads_by_seq, udp_filter
from tests.interop.harness.linphone import Linphone, LinphoneAccount
from tests.interop.harness.sipp import SippUas
from tests.interop.harness.tls_gateway import TlsGatewayProcess

pytestmark = pytest.mark.interop

REALM = "interop.voipgw.test"
PASSWORDS = {"alice": "wonderland-3c41", "bob": "builder-e85a"}
TONES = {"alice": 1000.0, "bob": 440.0}
TRUNK_NUMBER = "+4989555"
AUDIO_SECONDS = 1.0
PCMU_PAYLOAD = 160
# What SRTP adds after the payload (RFC 3711 §3.1): an HMAC-SHA1 tag of 10 (HS80) or 4 (HS32).
TAG_LENGTHS = {10, 4}
SAS_LINE = r"Call \d+ is fully encrypted and auth token is (\S+?)\.?\s*$"


def _gateway(workdir: Path, *, trunk: SippUas | None = None, workers: int = 1) -> GatewayProcess:
    extra = trunk.trunk_toml() if trunk is not None else ""
    return GatewayProcess(
        workdir,
        accounts=PASSWORDS,
        settings={
            "gateway": {"realm": REALM, "log_level": "debug", "domains": [LOOPBACK]},
            "plugins": {"enable": ["udp", "tcp", "zrtp"]},
            "media": {"workers": workers},
        },
        extra_toml=extra,
    )


def _phone(workdir: Path, gw: GatewayProcess, name: str, **kwargs: object) -> Linphone:
    account = LinphoneAccount(
        f"sip:{LOOPBACK}:{gw.port}", f"sip:{name}@{LOOPBACK}", PASSWORDS[name]
    )
    return Linphone(
        workdir,
        name,
        account=account,
        source=tone_wav(workdir / f"{name}.wav", TONES[name]),
        media_encryption="zrtp",
        **kwargs,  # type: ignore[arg-type]
    )


def _zrtp_messages(pcap: Path, ports: list[int]) -> list[str]:
    """The ZRTP message types in a capture, in order (tshark decodes ZRTP only when the ports
    are decoded as RTP, see peers.md)."""
    command = ["tshark", "-r", str(pcap), "-Y", "zrtp", "-T", "fields", "-e", "zrtp.type"]
    for port in ports:
        command[3:3] = ["-d", f"udp.port=={port},rtp"]
    out = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def _calls_json(gw: GatewayProcess, legs: str, *, streams: int = 1) -> dict[str, object]:
    """The live call's record once the first ``streams`` streams of the legs named in ``legs``
    ("a", "ab") are encrypted and show a SAS."""

    def done(out: str) -> bool:
        records = json.loads(out or "[]")
        if not records:
            return False
        for leg in legs:
            found = (records[0]["security"].get(leg) or {}).get("streams", [])
            if len(found) < streams or not all(
                s.get("zrtp_sas") and s.get("encrypted") for s in found[:streams]
            ):
                return False
        return True

    (record,) = json.loads(gw.cli_until(done, "calls", "--json"))
    return dict(record["security"])


@pytest.mark.parametrize("key_agreements", [(), ("X255", "DH3k")], ids=["DH3k", "X25519"])
def test_a_zrtp_phone_calls_a_plain_trunk_and_shows_the_gateways_sas(
    tmp_path: Path, key_agreements: tuple[str, ...]
) -> None:
    with (
        SippUas("uas_answer.xml", workdir=tmp_path, rtp_echo=True) as trunk,
        _gateway(tmp_path / "gw", trunk=trunk) as gw,
        _phone(tmp_path, gw, "bob", zrtp_key_agreements=key_agreements) as bob,
    ):
        bob.wait_registered()
        trunk_ports = (trunk.media_port, trunk.media_port + 1)
        media = udp_filter(gw.media_ports, bob.rtp_ports, trunk_ports)
        with Capture(tmp_path / "media.pcap", media) as capture:
            bob.call(gw.uri(TRUNK_NUMBER))
            bob.wait_connected()
            sas = bob.wait_output(SAS_LINE, timeout=10).group(1)
            security = _calls_json(gw, "a")
            # Counted from here, where both ends of bob's leg hold keys: linphonec's recording
            # grows from the answer on (0.5-0.8 s of it while DH3k ran, on a loaded machine),
            # and none of that crossed the relay, which the 40 packets below must have.
            bob.wait_audio(bob.recorded_seconds() + AUDIO_SECONDS)
            bob.terminate()
            bob.wait_ended()
        trunk.wait().check()

    caller, callee = security["a"], security["b"]
    assert isinstance(caller, dict) and isinstance(callee, dict)
    (stream,) = caller["streams"]
    assert stream["key_exchange"] == "zrtp" and stream["encrypted"] is True
    assert stream["zrtp_sas"] == sas  # what bob reads is what the operator sees
    assert stream["zrtp_key_agreement"] == ("X255" if key_agreements else "DH3k")
    assert stream["zrtp_peer_client"].startswith("BZRTP")
    assert callee["streams"][0]["key_exchange"] == "none"
    # The exchange ran between bob and the gateway, Hello to Conf2ACK.
    messages = _zrtp_messages(capture.path, [bob.rtp_port, *range(*gw.media_ports)])
    for message in ("Hello", "HelloACK", "Commit", "DHPart1", "DHPart2", "Confirm1", "Confirm2"):
        assert any(m.startswith(message) for m in messages), messages
    # SRTP between bob and the gateway, the plain tone between the gateway and the trunk: the
    # same packets (sequence numbers) on both sides of the relay.
    even = [p for low, high in (gw.media_ports, bob.rtp_ports) for p in range(low, high + 1)]
    flows = rtp_payloads_by_seq(capture.path, [*[p for p in even if p % 2 == 0], trunk_ports[0]])
    phone_to_gw = one_flow(flows, bob.rtp_ports, gw.media_ports)
    gw_to_trunk = one_flow(flows, gw.media_ports, trunk_ports)
    common = sorted(phone_to_gw.keys() & gw_to_trunk.keys())
    assert len(common) >= 40, (len(phone_to_gw), len(gw_to_trunk))
    for seq in common:
        assert len(gw_to_trunk[seq]) == PCMU_PAYLOAD
        assert len(phone_to_gw[seq]) - PCMU_PAYLOAD in TAG_LENGTHS
        assert gw_to_trunk[seq][40:80] not in phone_to_gw[seq]
    plain = b"".join(gw_to_trunk[seq] for seq in sorted(gw_to_trunk))
    sent = analyse_tone(g711_wav(plain, tmp_path / "to-trunk.wav"))
    assert sent.dominant_frequency == pytest.approx(TONES["bob"], abs=3)
    # bob decrypted what came back: his own tone, echoed by the trunk.
    heard = analyse_tone(bob.received_audio())
    assert heard.dominant_frequency == pytest.approx(TONES["bob"], abs=3)


@pytest.mark.parametrize("workers", [1, 2], ids=["in-process-relay", "two-media-workers"])
def test_two_zrtp_phones_each_see_the_sas_of_their_own_link(tmp_path: Path, workers: int) -> None:
    with (
        _gateway(tmp_path / "gw", workers=workers) as gw,
        _phone(tmp_path, gw, "alice") as alice,
        _phone(tmp_path, gw, "bob", auto_answer=True) as bob,
    ):
        alice.wait_registered()
        bob.wait_registered()
        alice.call(gw.uri("bob"))
        alice.wait_connected()
        bob.wait_connected()
        alice_sas = alice.wait_output(SAS_LINE, timeout=10).group(1)
        bob_sas = bob.wait_output(SAS_LINE, timeout=10).group(1)
        security = _calls_json(gw, "ab")
        alice.wait_audio(AUDIO_SECONDS)
        bob.wait_audio(AUDIO_SECONDS)
        alice.terminate()
        alice.wait_ended()
        bob.wait_ended()
        calls = re.findall(
            r"ZRTP SAS '(\w+)'",
            gw.cli_until(lambda out: "ended" in out, "calls", "--recent", "1").replace('"', "'"),
        )

    caller, callee = security["a"], security["b"]
    assert isinstance(caller, dict) and isinstance(callee, dict)
    assert caller["streams"][0]["zrtp_sas"] == alice_sas
    assert callee["streams"][0]["zrtp_sas"] == bob_sas
    # Two exchanges, two SASes: each is the phone's link to the gateway.
    assert alice_sas != bob_sas
    assert calls == [alice_sas, bob_sas]
    for phone, far_end in ((alice, "bob"), (bob, "alice")):
        heard = analyse_tone(phone.received_audio())
        assert heard.dominant_frequency == pytest.approx(TONES[far_end], abs=3)


def test_two_zrtp_phones_with_video_key_it_in_multistream_mode(tmp_path: Path) -> None:
    """alice and bob (linphonec with a VP8 video stream from a static picture) call each other
    through the gateway: on each leg the audio stream runs the DH exchange and bzrtp keys the
    video stream in Multistream mode from its ZRTPSess (RFC 6189 §4.4.3), which it does only
    if the gateway's Hello lists Mult; one SAS per leg."""
    with (
        _gateway(tmp_path / "gw") as gw,
        _phone(tmp_path, gw, "alice", video=True) as alice,
        _phone(tmp_path, gw, "bob", video=True, auto_answer=True) as bob,
    ):
        alice.wait_registered()
        bob.wait_registered()
        alice.call(gw.uri("bob"))
        for phone in (alice, bob):
            phone.wait_output(r"Media streams established with \S+ for call \d+ \(video\)")
            # liblinphone says so once every stream of the call is keyed (video included).
            phone.wait_log(r"All streams are encrypted, key exchanged using ZRTP", timeout=15)
        alice_sas = alice.wait_output(SAS_LINE, timeout=10).group(1)
        bob_sas = bob.wait_output(SAS_LINE, timeout=10).group(1)
        security = _calls_json(gw, "ab", streams=2)
        alice.terminate()
        alice.wait_ended()
        bob.wait_ended()

    for leg, sas in (("a", alice_sas), ("b", bob_sas)):
        record = security[leg]
        assert isinstance(record, dict)
        streams = record["streams"]
        assert [s["key_exchange"] for s in streams] == ["zrtp", "zrtp"]
        assert all(s["encrypted"] is True for s in streams)
        assert [s["zrtp_key_agreement"] for s in streams] == ["DH3k", "Mult"]
        assert streams[0]["zrtp_sas"] == streams[1]["zrtp_sas"] == sas
    for phone in (alice, bob):
        # mediastreamer installed SRTP keys from ZRTP on both streams, audio and video.
        log = phone.log_path.read_text(errors="replace")
        assert log.count("ZRTP secrets are ready for sender") == 2


class _TlsCallee:
    """bob over TLS, answering at once: baresip or linphonec, seen the same way by the test."""

    def __init__(self, phone: Baresip | Linphone) -> None:
        self.phone = phone

    def wait_audio(self, seconds: float) -> None:
        self.phone.wait_audio(seconds)

    def received_audio(self) -> Path:
        return self.phone.received_audio()

    def offer_received(self) -> str:
        """The SDP offer of the INVITE the gateway sent."""
        if isinstance(self.phone, Baresip):
            (invite, *_) = self.phone.sip_messages("INVITE ")
            return invite.message
        log = self.phone.log_path.read_text(errors="replace")
        return log[log.index("INVITE sip:bob") :]


@contextmanager
def _tls_callee(
    workdir: Path, gw: TlsGatewayProcess, kind: str, source: Path
) -> Iterator[_TlsCallee]:
    if kind == "baresip-sdes":
        with Baresip(workdir, "bob", source=source, mediaenc="srtp", sip_trace=True) as baresip:
            baresip.register_over_tls(LOOPBACK, gw.tls_port, PASSWORDS["bob"], mediaenc="srtp")
            yield _TlsCallee(baresip)
        return
    account = LinphoneAccount(
        f"sip:{LOOPBACK}:{gw.tls_port};transport=tls", f"sip:bob@{LOOPBACK}", PASSWORDS["bob"]
    )
    with Linphone(
        workdir, "bob", account=account, source=source, media_encryption="zrtp", auto_answer=True
    ) as linphone:
        linphone.wait_registered()
        yield _TlsCallee(linphone)


@pytest.mark.parametrize("callee", ["baresip-sdes", "linphone-zrtp"])
def test_over_tls_the_callees_answer_picks_sdes_or_zrtp_from_one_offer(
    tmp_path: Path, callee: str
) -> None:
    """alice (linphonec, ZRTP) calls bob over TLS. bob is baresip with ``mediaenc=srtp`` (SDES
    where offered, no ZRTP: it answers a=crypto), or linphonec, which answers a=zrtp-hash (even
    set to SRTP: it prefers ZRTP when offered both)."""
    with TlsGatewayProcess(
        tmp_path / "gw",
        plugins=("udp", "tcp", "tls", "sdes", "zrtp"),
        accounts=PASSWORDS,
        digest_algorithms=("MD5",),  # baresip 1.0.0 answers MD5 only
        settings={"gateway": {"realm": REALM, "log_level": "debug", "domains": [LOOPBACK]}},
    ) as gw:
        alice_account = LinphoneAccount(
            f"sip:{LOOPBACK}:{gw.tls_port};transport=tls",
            f"sip:alice@{LOOPBACK}",
            PASSWORDS["alice"],
        )
        tones = {name: tone_wav(tmp_path / f"{name}.wav", hz) for name, hz in TONES.items()}
        with (
            Linphone(
                tmp_path,
                "alice",
                account=alice_account,
                source=tones["alice"],
                media_encryption="zrtp",
            ) as alice,
            _tls_callee(tmp_path, gw, callee, tones["bob"]) as bob,
        ):
            alice.wait_registered()
            alice.call(f"sip:bob@{LOOPBACK}:{gw.tls_port};transport=tls")
            alice.wait_connected()
            security = _calls_json(gw, "a")
            alice.wait_audio(AUDIO_SECONDS)
            bob.wait_audio(AUDIO_SECONDS)
            alice.terminate()
            alice.wait_ended()
            offer = bob.offer_received()

    caller, callee_leg = security["a"], security["b"]
    assert isinstance(caller, dict) and isinstance(callee_leg, dict)
    assert caller["streams"][0]["key_exchange"] == "zrtp"
    (stream,) = callee_leg["streams"]
    assert stream["key_exchange"] == callee.split("-")[1] and stream["encrypted"] is True
    # The gateway's offer to bob carried both methods in one RTP/AVP line.
    assert re.search(r"m=audio \d+ RTP/AVP ", offer), offer
    assert "a=zrtp-hash:1.10 " in offer and "a=crypto:" in offer, offer
    heard_by_alice = analyse_tone(alice.received_audio())
    assert heard_by_alice.dominant_frequency == pytest.approx(TONES["bob"], abs=3)
    heard_by_bob = analyse_tone(bob.received_audio())
    assert heard_by_bob.dominant_frequency == pytest.approx(TONES["alice"], abs=3)


def test_the_second_call_of_each_phone_has_key_continuity_with_its_first(tmp_path: Path) -> None:
    """RFC 6189 §4.9: both ends keep a secret after the first call and mix it into the second's
    keys. bzrtp keeps its cache in linphone's database in the phone's HOME; the gateway in
    ``<state_dir>/zrtp/cache.sqlite``. A wrong s0 on either side would fail the Confirm MACs."""
    caches: list[tuple[object, object]] = []
    with (
        _gateway(tmp_path / "gw") as gw,
        _phone(tmp_path, gw, "alice") as alice,
        _phone(tmp_path, gw, "bob", auto_answer=True) as bob,
    ):
        alice.wait_registered()
        bob.wait_registered()
        for number in (1, 2):
            alice.call(gw.uri("bob"))
            alice.wait_output(rf"Media streams established with \S+ for call {number}")
            bob.wait_output(rf"Media streams established with \S+ for call {number}")
            security = _calls_json(gw, "ab")
            caches.append(
                (
                    security["a"]["streams"][0]["zrtp_cache"],
                    security["b"]["streams"][0]["zrtp_cache"],
                )  # type: ignore[index]
            )
            alice.terminate()
            alice.wait_output(rf"Call {number} with \S+ ended")
            gw.cli_until(lambda out: out.strip() == "no live calls", "calls")
        live = gw.log_text()

    assert caches == [("new", "new"), ("match", "match")], caches
    assert "ZRTP cache mismatch" not in live
    assert (tmp_path / "gw" / "state" / "zrtp" / "cache.sqlite").exists()


def test_a_zrtp_call_held_and_resumed_keeps_its_exchange_and_audio(tmp_path: Path) -> None:
    """linphonec's pause/resume re-INVITEs (a=sendonly, then sendrecv) keep the phone's Hello:
    the gateway keeps the exchange, its keys and its SAS (no new ZRTP exchange), and audio
    comes back after the resume."""
    with (
        _gateway(tmp_path / "gw") as gw,
        _phone(tmp_path, gw, "alice") as alice,
        _phone(tmp_path, gw, "bob", auto_answer=True) as bob,
    ):
        alice.wait_registered()
        bob.wait_registered()
        alice.call(gw.uri("bob"))
        alice.wait_connected()
        bob.wait_connected()
        before = _calls_json(gw, "ab")
        alice.command("pause 1", expect=r"is now paused")
        mark = len(alice.output())
        alice.command("resume 1")
        alice.wait_output(r"Media streams established with \S+ for call 1", after=mark)
        heard_before = bob.recorded_seconds()
        bob.wait_audio(heard_before + AUDIO_SECONDS)
        after = _calls_json(gw, "ab")
        alice.terminate()
        alice.wait_ended()
        log = gw.log_text()

    for leg in ("a", "b"):
        assert after[leg]["streams"][0]["zrtp_sas"] == before[leg]["streams"][0]["zrtp_sas"]  # type: ignore[index]
    # What bob heard after the resume is alice's tone (decrypted with the same keys).
    resumed = _tail(bob.received_audio(), heard_before, tmp_path / "bob-resumed.wav")
    assert analyse_tone(resumed).dominant_frequency == pytest.approx(TONES["alice"], abs=3)
    # One exchange per leg for the whole call: two exchanges' SAS lines in the log, not four
    # (the call's protection line at its end names each leg's SAS too).
    exchanges = re.findall(r"stream \d+: ZRTP SAS \S+", log)
    assert len(exchanges) == 2, exchanges


def _tail(path: Path, seconds: float, out: Path) -> Path:
    """The part of a 16-bit mono WAV after its first ``seconds``, as a file of its own."""
    with wave.open(str(path)) as wav:
        rate = wav.getframerate()
        wav.setpos(min(wav.getnframes(), int(seconds * rate)))
        frames = wav.readframes(wav.getnframes())
    with wave.open(str(out), "wb") as tail_wav:
        tail_wav.setnchannels(1)
        tail_wav.setsampwidth(2)
        tail_wav.setframerate(rate)
        tail_wav.writeframes(frames)
    return out
