"""SIPREC with SRTP towards the recorder (``[plugins.siprec] media_security = "sdes"``) on
127.0.0.1, over a real TLS connection.

baresip, SRTP mandatory over TLS (SDES), calls a sipp trunk that answers in plain RTP and echoes
the media. The trunk's calls are recorded to a small SRS written here (:class:`TlsSrs`: the
stdlib ``ssl`` module for SIP over TLS with a certificate from the test CA the gateway trusts,
plain sockets for the media, pylibsrtp's own ``Session`` to decrypt; sipp cannot decrypt SRTP).
It answers the recording INVITE with RTP/SAVP and a crypto line of its own per stream.

Checked: the INVITE came over TLS and offered RTP/SAVP with a key per stream; every copy the SRS
received decrypts, under the key the offer gave its label, to the RTP packet the call carried at
that sequence number (label 1: what the gateway sent the trunk, the phone's decrypted tone;
label 2: the trunk's echo), as tshark saw them on the trunk's plain side; tshark on the
recording ports sees only SRTP (each payload the 160 octets of PCMU encrypted plus the 10-octet
tag, never the call's plain payload); the BYE came; no key is in the gateway's log.
"""

from __future__ import annotations

import base64
import os
import re
import select
import socket
import ssl
import struct
import threading
from pathlib import Path

import pylibsrtp
import pytest

from tests.interop.harness import LOOPBACK, Baresip, Capture, SippUas, TestPki, tone_wav
from tests.interop.harness.capture import rtp_payloads_by_seq, udp_filter
from tests.interop.harness.pki import Issued
from tests.interop.harness.tls_gateway import TlsGatewayProcess

pytestmark = pytest.mark.interop

PASSWORD = "wonderland-7d2e"
TONE = 1000.0
AUDIO_SECONDS = 2.0
PCMU_PAYLOAD = 160
TAG = 10  # AES_CM_128_HMAC_SHA1_80's SRTP tag (RFC 4568 §6.2.1)
COMPACT = {"v": "via", "f": "from", "t": "to", "i": "call-id", "l": "content-length"}


class TlsSrs:
    """A recorder on 127.0.0.1: SIP over TLS (one connection, the gateway's) and two UDP media
    ports; answers INVITEs with SRTP, BYE with 200, and keeps what it received. A thread."""

    def __init__(self, certificate: Issued) -> None:
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(certificate.certificate, certificate.key)
        self.listener = socket.create_server((LOOPBACK, 0))
        self.port = self.listener.getsockname()[1]
        self.media = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
        for sock in self.media:
            sock.bind((LOOPBACK, 0))
        self.media_ports = [sock.getsockname()[1] for sock in self.media]
        self.requests: list[tuple[str, dict[str, list[str]], bytes]] = []
        self.received: dict[int, list[bytes]] = {port: [] for port in self.media_ports}
        self.offered_keys: dict[str, bytes] = {}  # by label: the gateway's key
        self.own_keys = [os.urandom(30), os.urandom(30)]
        self.tls_version = ""
        self.bye = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TlsSrs:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.listener.close()
        for sock in self.media:
            sock.close()

    def _run(self) -> None:
        connection: ssl.SSLSocket | None = None
        buffer = b""
        while not self._stop.is_set():
            watched: list[socket.socket] = [*self.media, connection or self.listener]
            ready, _, _ = select.select(watched, [], [], 0.05)
            for sock in ready:
                if sock is self.listener:
                    raw, _ = self.listener.accept()
                    connection = self._context.wrap_socket(raw, server_side=True)
                    self.tls_version = connection.version() or ""
                elif sock is connection:
                    data = connection.recv(65536)
                    if not data:
                        connection = None
                        continue
                    buffer += data
                    while (message := _next_message(buffer)) is not None:
                        (start, headers, body), buffer = message
                        self.requests.append((start, headers, body))
                        response = self._answer(start, headers, body)
                        if response:
                            connection.sendall(response)
                else:
                    data, _ = sock.recvfrom(4096)
                    self.received[sock.getsockname()[1]].append(data)

    def _answer(self, start: str, headers: dict[str, list[str]], body: bytes) -> bytes:
        method = start.split(" ", 1)[0]
        if method == "ACK":
            return b""
        sdp = b""
        if method == "INVITE":
            sdp = self._sdp_answer(body)
        if method == "BYE":
            self.bye.set()
        to = headers["to"][0] + ("" if ";tag=" in headers["to"][0] else ";tag=srs-1")
        lines = ["SIP/2.0 200 OK"]
        lines += [f"Via: {via}" for via in headers["via"]]
        lines += [f"From: {headers['from'][0]}", f"To: {to}"]
        lines += [f"Call-ID: {headers['call-id'][0]}", f"CSeq: {headers['cseq'][0]}"]
        if method == "INVITE":
            lines += [
                f"Contact: <sip:srs@{LOOPBACK}:{self.port};transport=tls>;+sip.srs",
                "Content-Type: application/sdp",
            ]
        lines.append(f"Content-Length: {len(sdp)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + sdp

    def _sdp_answer(self, body: bytes) -> bytes:
        """RTP/SAVP per offered stream, to our ports, with the tag and suite of the offer's
        first crypto line and our own key (RFC 4568 §5.1.2)."""
        offer = body.split(b"Content-Type: application/sdp", 1)[1].split(b"\r\n--", 1)[0]
        sections = offer.decode().split("\r\nm=")[1:]
        lines = ["v=0", f"o=srs 1 1 IN IP4 {LOOPBACK}", "s=-", f"c=IN IP4 {LOOPBACK}", "t=0 0"]
        for number, section in enumerate(sections):
            proto = section.split(" ")[2]
            label = re.search(r"a=label:(\S+)", section)[1]  # type: ignore[index]
            tag, suite, key = re.search(r"a=crypto:(\d+) (\S+) inline:(\S+)", section).groups()  # type: ignore[union-attr]
            self.offered_keys[label] = base64.b64decode(key)
            own = base64.b64encode(self.own_keys[number]).decode()
            lines += [
                f"m=audio {self.media_ports[number]} {proto} 0",
                f"a=label:{label}",
                "a=recvonly",
                f"a=crypto:{tag} {suite} inline:{own}",
            ]
        return ("\r\n".join(lines) + "\r\n").encode()


def _next_message(
    buffer: bytes,
) -> tuple[tuple[str, dict[str, list[str]], bytes], bytes] | None:
    """One SIP message off the front of a stream (RFC 3261 §18.3: Content-Length frames it)."""
    buffer = buffer.lstrip(b"\r\n")  # RFC 5626 keep-alives
    head, separator, rest = buffer.partition(b"\r\n\r\n")
    if not separator:
        return None
    start, *fields = head.decode().split("\r\n")
    headers: dict[str, list[str]] = {}
    for field in fields:
        name, _, value = field.partition(":")
        name = COMPACT.get(name.strip().lower(), name.strip().lower())
        headers.setdefault(name, []).extend(
            part.strip() for part in (value.split(",") if name == "via" else [value])
        )
    length = int(headers.get("content-length", ["0"])[0])
    if len(rest) < length:
        return None
    return (start, headers, rest[:length]), rest[length:]


def rtp_payload(packet: bytes) -> tuple[int, bytes]:
    """(sequence number, payload) of an RTP packet (RFC 3550 §5.1: CSRCs, extension)."""
    first, _, seq = struct.unpack("!BBH", packet[:4])
    offset = 12 + 4 * (first & 0x0F)
    if first & 0x10:
        offset += 4 + 4 * struct.unpack("!H", packet[offset + 2 : offset + 4])[0]
    return seq, packet[offset:]


def test_an_srtp_call_is_recorded_over_tls_as_srtp_that_decrypts_to_what_it_carried(
    tmp_path: Path,
) -> None:
    pki = TestPki(tmp_path / "pki")
    ca = pki.ca("Recording CA")
    srs_certificate = ca.issue("srs.recording.example", hosts=["srs.recording.example", LOOPBACK])
    with (
        SippUas("uas_answer.xml", workdir=tmp_path / "trunk", rtp_echo=True) as trunk,
        TlsSrs(srs_certificate) as srs,
    ):
        extra = trunk.trunk_toml() + (
            "[plugins.siprec]\n"
            f'srs = "sips:srs@{LOOPBACK}:{srs.port}"\n'
            'trunks = ["carrier"]\n'
            f'media_address = "{LOOPBACK}"\n'
            'media_security = "sdes"\n'
        )
        ports = [*srs.media_ports, trunk.media_port]
        with (
            TlsGatewayProcess(
                tmp_path / "gw",
                plugins=("udp", "tcp", "tls", "sdes", "siprec"),
                tls={"ca_bundles": [str(ca.certificate)], "system_ca_for_trunks": False},
                accounts={"alice": PASSWORD},
                digest_algorithms=("MD5",),  # baresip 1.0.0 answers MD5 only
                settings={"gateway": {"log_level": "debug", "domains": [LOOPBACK]}},
                extra_toml=extra,
            ) as gw,
            Baresip(
                tmp_path,
                "alice",
                source=tone_wav(tmp_path / "alice.wav", TONE),
                mediaenc="srtp-mand",
            ) as alice,
        ):
            alice.register_over_tls(LOOPBACK, gw.tls_port, PASSWORD, mediaenc="srtp-mand")
            with Capture(tmp_path / "media.pcap", udp_filter(*ports)) as capture:
                alice.dial(f"sip:+4989555@{LOOPBACK}:{gw.tls_port};transport=tls")
                alice.wait_established()
                alice.wait_audio(AUDIO_SECONDS)
                alice.hangup()
                alice.wait_closed()
                gw.wait_for_log(r"SIPREC: call \S+: \d+ packets, \d+ sent to the SRS over SRTP")
            log = gw.log_text()
        trunk.wait().check()
        assert srs.bye.wait(5), "no BYE reached the SRS"

    methods = [start.split(" ", 1)[0] for start, _, _ in srs.requests]
    assert methods[:2] == ["INVITE", "ACK"] and methods[-1] == "BYE", methods
    assert srs.tls_version.startswith("TLSv1.")
    invite = srs.requests[0]
    assert invite[1]["require"] == ["siprec"]
    # RFC 3261 §12.1.1: the INVITE to a sips: SRS carries a sips: Contact (at our TLS listener).
    assert invite[1]["contact"][0].startswith(f"<sips:voipgw@{LOOPBACK}:{gw.tls_port}>"), invite[1]
    assert invite[2].count(b"RTP/SAVP") == 2
    assert set(srs.offered_keys) == {"1", "2"}
    assert srs.offered_keys["1"] != srs.offered_keys["2"]

    # The call as it was on the trunk's side, in clear: what the gateway sent the trunk (the
    # phone's decrypted tone) and what the trunk echoed.
    flows = rtp_payloads_by_seq(capture.path, ports)
    to_trunk = next(p for (_, dst), p in flows.items() if dst[1] == trunk.media_port)
    from_trunk = next(p for (src, _), p in flows.items() if src[1] == trunk.media_port)
    for label, port, carried in (
        ("1", srs.media_ports[0], to_trunk),
        ("2", srs.media_ports[1], from_trunk),
    ):
        checker = pylibsrtp.Session(
            pylibsrtp.Policy(
                key=srs.offered_keys[label],
                ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND,
                srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
            )
        )
        copies = dict(rtp_payload(checker.unprotect(packet)) for packet in srs.received[port])
        assert len(copies) >= 40 * AUDIO_SECONDS, (label, len(copies))
        assert all(len(payload) == PCMU_PAYLOAD for payload in copies.values())
        # dumpcap may miss a few packets around its start and stop: compare those it saw.
        compared = [seq for seq in copies if seq in carried]
        assert len(compared) >= 40 * AUDIO_SECONDS, (label, len(compared), len(copies))
        assert all(copies[seq] == carried[seq] for seq in compared), label

        # On the wire towards the SRS: SRTP only, never the call's payload in clear.
        seen = next(p for (_, dst), p in flows.items() if dst[1] == port)
        assert len(seen) >= 40 * AUDIO_SECONDS, label
        assert all(len(payload) == PCMU_PAYLOAD + TAG for payload in seen.values()), label
        assert not any(seen[seq][:PCMU_PAYLOAD] == copies.get(seq) for seq in seen), label

    keys = [*srs.offered_keys.values(), *srs.own_keys]
    assert not any(base64.b64encode(key).decode()[:20] in log for key in keys)
    assert "not recorded" not in log and "does not take SRTP" not in log
