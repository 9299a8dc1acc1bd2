"""MIKEY against third-party implementations (no SIP phone here speaks MIKEY, ../shared/peers.md
§9): GStreamer's GstMIKEY and Wireshark's MIKEY dissector.

1. GStreamer 1.22 (system python with gi.repository.GstSdp, ``harness/gst_mikey_peer.py`` in a
   subprocess under a timeout) parses our NULL-container I_MSG (``style = "gstreamer"``) and
   its caps carry exactly the master key and salt we send with, and the cipher and tag of the
   suite; and it builds I_MSGs from caps (as rtspsrc does) that our answer() accepts with the
   same key. Only PSK_INIT with NULL KEMAC goes to it: its parser spins forever on DH, SIGN,
   ID, V, ERR and extension payloads (specs/mikey.md §6).
2. tshark dissects our messages inside SIP/SDP a=key-mgmt (RFC 4567): header, CS ID map, SP
   parameters by name, KEMAC algorithms, key data types, DH groups and the V payload, for
   PSK-NULL, PSK with an encrypted KEMAC, and DH-HMAC offers and answers.
"""

from __future__ import annotations

import base64
import json
import os
import struct
import subprocess
from pathlib import Path

import pytest

from gateway.core.interfaces import KeysReady, LegInfo, SrtpKeys
from gateway.plugins.keyexchange.mikey import MikeyKeyExchange
from gateway.plugins.keyexchange.mikey.engine import MikeyNegotiation, MikeySettings
from gateway.plugins.keyexchange.mikey.psk import PskStore
from tests.conftest import require_peer
from tests.interop.harness.capture import tshark_rows

pytestmark = pytest.mark.interop

PEER = Path(__file__).parent / "harness" / "gst_mikey_peer.py"
SYSTEM_PYTHON = "/usr/bin/python3"
GST_TIMEOUT = 20
# Our suite -> GStreamer's srtp-cipher / srtp-auth caps values.
GST_NAMES = {
    "AES_CM_128_HMAC_SHA1_80": ("aes-128-icm", "hmac-sha1-80"),
    "AES_CM_128_HMAC_SHA1_32": ("aes-128-icm", "hmac-sha1-32"),
    "AES_256_CM_HMAC_SHA1_80": ("aes-256-icm", "hmac-sha1-80"),
    "AES_256_CM_HMAC_SHA1_32": ("aes-256-icm", "hmac-sha1-32"),
    "AEAD_AES_128_GCM": ("aes-128-gcm", "null"),
    "AEAD_AES_256_GCM": ("aes-256-gcm", "null"),
}
PSK = bytes(range(0x20, 0x40))
LEG = LegInfo(call_id="c", side="a", kind="trunk", name="carrier", secure_signalling=False)


@pytest.fixture(scope="module")
def gstreamer() -> str:
    """The system python, checked to have GstSdp; skip locally, fail with
    VOIPGW_REQUIRE_PEERS=1, when it does not."""
    problem = None
    if not Path(SYSTEM_PYTHON).exists():
        problem = f"{SYSTEM_PYTHON} is not installed"
    else:
        probe = subprocess.run(
            [
                SYSTEM_PYTHON,
                "-c",
                "import gi; gi.require_version('GstSdp', '1.0'); from gi.repository import GstSdp",
            ],
            capture_output=True,
            text=True,
            timeout=GST_TIMEOUT,
        )
        if probe.returncode != 0:
            problem = "GstSdp is not importable: " + probe.stderr.strip().splitlines()[-1]
    if problem is not None:
        message = (
            f"GStreamer peer: {problem} (apt-get install python3-gi gir1.2-gst-plugins-base-1.0)"
        )
        if os.environ.get("VOIPGW_REQUIRE_PEERS") == "1":
            pytest.fail(message + "; VOIPGW_REQUIRE_PEERS=1 requires every peer")
        pytest.skip(message)
    return SYSTEM_PYTHON


def gst(python: str, *args: str) -> dict[str, object]:
    result = subprocess.run(
        [python, str(PEER), *args], capture_output=True, text=True, timeout=GST_TIMEOUT
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout.strip().splitlines()[-1])
    assert isinstance(data, dict)
    return data


def keys_of(negotiation: MikeyNegotiation) -> SrtpKeys:
    event = negotiation.next_event()
    assert isinstance(event, KeysReady), event
    return event.keys


def base64_of(negotiation: MikeyNegotiation) -> str:
    ((name, value),) = negotiation.local_sdp_attributes()
    assert name == "key-mgmt" and value is not None and value.startswith("mikey ")
    return value.split()[1]


@pytest.mark.parametrize("suite", list(GST_NAMES))
def test_gstreamer_reads_our_null_container_offer(gstreamer: str, suite: str) -> None:
    exchange = MikeyKeyExchange(settings=MikeySettings(style="gstreamer"))
    offer = exchange.offer(suites=[suite], secure_signalling=True)
    parsed = gst(gstreamer, "parse", base64_of(offer))
    offer.remote_sdp_attributes([])  # V=0: no response
    keys = keys_of(offer)
    assert parsed["parsed"] is True and parsed["to_caps"] is True
    assert parsed["n_cs"] == 2 and parsed["n_payloads"] == 4  # T, RAND, SP, KEMAC
    # GStreamer keys with the first TEK: what we (the offerer, cs_id 1) send.
    assert parsed["srtp-key"] == keys.local_key.hex()
    assert (parsed["srtp-cipher"], parsed["srtp-auth"]) == GST_NAMES[suite]


def test_gstreamer_takes_a_standard_offers_tgk_for_a_key(gstreamer: str) -> None:
    """Why ``style = "gstreamer"`` exists: a standard offer (a TGK for the PRF) parses, but
    GStreamer uses the TGK itself as its SRTP key, which is not what we send with."""
    offer = MikeyKeyExchange().offer(suites=[], secure_signalling=True)
    parsed = gst(gstreamer, "parse", base64_of(offer))
    offer.remote_sdp_attributes([])
    keys = keys_of(offer)
    assert parsed["parsed"] is True and parsed["srtp-auth"] == "hmac-sha1-80"
    assert len(str(parsed["srtp-key"])) == 64 and parsed["srtp-key"] != keys.local_key.hex()


@pytest.mark.parametrize(
    ("suite", "length"),
    [
        ("AES_CM_128_HMAC_SHA1_80", 30),
        ("AES_CM_128_HMAC_SHA1_32", 30),
        ("AES_256_CM_HMAC_SHA1_80", 46),
        ("AEAD_AES_128_GCM", 28),
    ],
)
def test_we_answer_gstreamers_offer_with_its_key(gstreamer: str, suite: str, length: int) -> None:
    key = bytes((0x5A + 3 * i) & 0xFF for i in range(length))
    cipher, auth = GST_NAMES[suite]
    built = gst(gstreamer, "build", key.hex(), cipher, auth, "305419896")
    assert str(built["version"]).startswith("GStreamer 1.")
    answer = MikeyKeyExchange().answer(
        [("key-mgmt", f"mikey {built['message']}")], suites=[], secure_signalling=True
    )
    assert answer is not None
    assert keys_of(answer) == SrtpKeys(suite, local_key=key, remote_key=key)
    assert answer.local_sdp_attributes() == []  # its V bit is clear
    assert answer.security_record() == {"mikey_mode": "mikey-null (keys protected by TLS)"}
    # And never without TLS.
    refused = MikeyKeyExchange().answer(
        [("key-mgmt", f"mikey {built['message']}")], suites=[], secure_signalling=False
    )
    assert refused is not None and refused.failure is not None


# -- tshark --------------------------------------------------------------------------------------


def udp_packet(payload: bytes, *, port: int) -> bytes:
    udp = struct.pack("!HHHH", 40000, port, 8 + len(payload), 0) + payload
    loopback = bytes([127, 0, 0, 1])
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, loopback, loopback
    )
    return header + udp


def sip_packet(sdp: str, *, request: bool) -> bytes:
    start = "INVITE sip:bob@127.0.0.1 SIP/2.0" if request else "SIP/2.0 200 OK"
    body = sdp.encode()
    headers = (
        f"{start}\r\nVia: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK1\r\n"
        "From: <sip:alice@127.0.0.1>;tag=1\r\nTo: <sip:bob@127.0.0.1>\r\n"
        "Call-ID: mikey-interop\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@127.0.0.1:5062>\r\n"
        f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    return udp_packet(headers + body, port=5060)


def mikey_packet(negotiation: MikeyNegotiation) -> bytes:
    """The negotiation's MIKEY message alone, in a datagram to MIKEY's port (2269)."""
    return udp_packet(base64.b64decode(base64_of(negotiation)), port=2269)


def write_pcap(path: Path, packets: list[bytes]) -> None:
    out = struct.pack("!IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101)  # LINKTYPE_RAW (IPv4)
    for number, packet in enumerate(packets):
        out += struct.pack("!IIII", 1_800_000_000 + number, 0, len(packet), len(packet)) + packet
    path.write_bytes(out)


def session_level_sdp(negotiation: MikeyNegotiation) -> str:
    """SDP with the message at session level (RFC 4567 §4): tshark 4.0 decodes a=key-mgmt
    there, not in a media section."""
    ((name, value),) = negotiation.local_sdp_attributes()
    return (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"a={name}:{value}\r\nm=audio 40000 RTP/SAVP 0\r\n"
    )


FIELDS = [
    "mikey.type",
    "mikey.v.set",
    "mikey.csb_id",
    "mikey.cs_count",
    "mikey.srtp_id.ssrc",
    "mikey.sp.encr_alg",
    "mikey.sp.encr_len",
    "mikey.sp.auth_key_len",
    "mikey.sp.auth_tag_len",
    "mikey.kemac.encr_alg",
    "mikey.kemac.mac_alg",
    "mikey.key.type",
    "mikey.dh.group",
    "mikey.v.auth_alg",
]


def tshark_mikey(tmp_path: Path, packets: list[bytes]) -> list[dict[str, str]]:
    pcap = tmp_path / "mikey.pcap"
    write_pcap(pcap, packets)
    args = [require_peer("tshark"), "-n", "-r", str(pcap), "-Y", "mikey", "-T", "fields"]
    args += ["-E", "separator=|", "-E", "occurrence=a", "-E", "aggregator=,"]
    for field in FIELDS:
        args += ["-e", field]
    result = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [dict(zip(FIELDS, row, strict=True)) for row in tshark_rows(result.stdout, "|")]


def exchange(**settings: object) -> MikeyKeyExchange:
    return MikeyKeyExchange(
        settings=MikeySettings(**settings),  # type: ignore[arg-type]
        psks=PskStore({("trunk", "carrier"): PSK}),
    )


def test_tshark_dissects_a_psk_null_offer(tmp_path: Path) -> None:
    offer = exchange().offer(suites=["AES_CM_128_HMAC_SHA1_32"], secure_signalling=True)
    rows = tshark_mikey(
        tmp_path, [mikey_packet(offer), sip_packet(session_level_sdp(offer), request=True)]
    )
    assert len(rows) == 2 and rows[0] == rows[1]  # the same alone and inside SIP/SDP
    row = rows[0]
    csb = offer._context.csb_id if offer._context else None
    assert row["mikey.type"] == "0" and row["mikey.v.set"] == "0"
    assert int(row["mikey.csb_id"], 0) == csb
    assert row["mikey.cs_count"] == "2" and row["mikey.srtp_id.ssrc"] == "0x00000000,0x00000000"
    # SP by name: AES-CM, 16-octet key, 20-octet HMAC key, 4-octet tag.
    assert (row["mikey.sp.encr_alg"], row["mikey.sp.encr_len"]) == ("1", "16")
    assert (row["mikey.sp.auth_key_len"], row["mikey.sp.auth_tag_len"]) == ("20", "4")
    assert (row["mikey.kemac.encr_alg"], row["mikey.kemac.mac_alg"]) == ("0", "0")
    assert row["mikey.key.type"] == "0"  # TGK


@pytest.mark.parametrize(("encryption", "name"), [(1, "aes-cm"), (2, "aes-kw")])
def test_tshark_dissects_a_psk_offer_and_its_verification(
    tmp_path: Path, encryption: int, name: str
) -> None:
    offer = exchange(offer_modes=("psk",), kemac_encryption=encryption).offer(
        suites=[], secure_signalling=False, leg=LEG
    )
    answer = exchange().answer(
        offer.local_sdp_attributes(), suites=[], secure_signalling=False, leg=LEG
    )
    assert answer is not None and isinstance(answer.next_event(), KeysReady)
    rows = tshark_mikey(
        tmp_path,
        [mikey_packet(offer), mikey_packet(answer)],
    )
    assert [row["mikey.type"] for row in rows] == ["0", "1"]  # PSK init, PSK verify
    assert rows[0]["mikey.v.set"] == "1" and rows[0]["mikey.csb_id"] == rows[1]["mikey.csb_id"]
    assert (rows[0]["mikey.kemac.encr_alg"], rows[0]["mikey.kemac.mac_alg"]) == (
        str(encryption),
        "1",
    )
    assert rows[0]["mikey.key.type"] == ""  # encrypted: tshark cannot see the key data
    assert rows[1]["mikey.v.auth_alg"] == "1"


def test_tshark_dissects_a_dh_hmac_offer_and_answer(tmp_path: Path) -> None:
    offer = exchange(offer_modes=("dh-hmac",), dh_group=2).offer(
        suites=["AES_256_CM_HMAC_SHA1_80"], secure_signalling=False, leg=LEG
    )
    answer = exchange(dh_group=2).answer(
        offer.local_sdp_attributes(), suites=[], secure_signalling=False, leg=LEG
    )
    assert answer is not None and isinstance(answer.next_event(), KeysReady)
    rows = tshark_mikey(
        tmp_path,
        [mikey_packet(offer), mikey_packet(answer)],
    )
    assert [row["mikey.type"] for row in rows] == ["7", "8"]  # DHHMAC init, DHHMAC resp
    assert rows[0]["mikey.dh.group"] == "2" and rows[1]["mikey.dh.group"] == "2,2"
    assert rows[0]["mikey.sp.encr_len"] == "32"
    assert (rows[0]["mikey.kemac.encr_alg"], rows[0]["mikey.kemac.mac_alg"]) == ("0", "1")
    assert (rows[1]["mikey.kemac.encr_alg"], rows[1]["mikey.kemac.mac_alg"]) == ("0", "1")


def test_the_peer_script_stays_out_of_the_gateway() -> None:
    # It runs under the system python, which has no gateway installed.
    code = PEER.read_text().split('"""', 2)[2]
    assert "gateway" not in code and "import gi" in code
