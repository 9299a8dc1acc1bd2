"""Lawful interception with real peers (the ``intercept`` tap).

An ADMF (curl, with a client certificate) provisions the gateway over X1; a mediation function
takes the X2/X3 PDUs. baresip, SRTP mandatory over TLS (SDES) and the target, calls a sipp trunk
that answers in plain RTP and echoes the media.

1. Delivery over mutual TLS to ``openssl s_server -Verify 1`` (it requires and checks our
   client certificate): the PDUs it wrote hold baresip's registration (the REGISTER we accepted
   and our 200), then the call's SIP on both legs, the INVITE baresip sent first, and the phone's
   audio decrypted (its 1000 Hz tone) though the phone's leg is SRTP on the wire; ``voipgw
   calls`` does not name the tap. X1 without a client certificate is refused at the TLS
   handshake. The same with ``[media] workers = 2``: the media is decrypted in a worker process,
   which sends the copies to the SIP process.
2. Delivery over plain TCP (a lab set-up) to socat: tshark's "5G Lawful Interception"
   dissector (TS 103 221-2, Wireshark 4.0) reads every PDU socat received, each as one TCP
   segment of a pcap made with text2pcap (the 4.0 dissector reads one PDU per segment, and
   Linux coalesces writes), with its type, format, direction, XID and target the same as
   ours, the configured interception point ID (attribute 7), and the SIP and RTP (PCMU, in
   clear) inside.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from gateway.plugins.taps.intercept import pdu
from tests.conftest import require_peer
from tests.interop.harness import (
    LOOPBACK,
    Baresip,
    SippUas,
    TestCa,
    TestPki,
    analyse_tone,
    free_port,
    tone_wav,
    wait_listening,
)
from tests.interop.harness.processes import die_with_parent, stop_process
from tests.interop.harness.tls_gateway import TlsGatewayProcess
from tests.unit.taps.x1_structure import check

pytestmark = pytest.mark.interop

PASSWORD = "wonderland-8e21"
TONE = 1000.0
TRUNK_NUMBER = "+4989555"
TARGET = f"sip:alice@{LOOPBACK}"
XID = uuid.UUID("11111111-2222-4333-8444-555555555555")
DID = uuid.UUID("aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee")


def x1_document(*messages: str) -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<X1Request xmlns="http://uri.etsi.org/03221/X1/2017/10" '
        'xmlns:c="http://uri.etsi.org/03280/common/2017/07" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        + "".join(messages)
        + "</X1Request>"
    )


def x1_message(kind: str, body: str) -> str:
    return (
        f'<x1RequestMessage xsi:type="{kind}"><admfIdentifier>admf-1</admfIdentifier>'
        "<neIdentifier>gw-interop</neIdentifier>"
        "<messageTimestamp>2026-11-29T10:00:00.000000Z</messageTimestamp>"
        f"<version>v1.23.1</version><x1TransactionId>{uuid.uuid4()}</x1TransactionId>"
        f"{body}</x1RequestMessage>"
    )


def provisioning(mdf_port: int) -> str:
    return x1_document(
        x1_message(
            "CreateDestinationRequest",
            f"<destinationDetails><dId>{DID}</dId><friendlyName>mdf</friendlyName>"
            "<deliveryType>X2andX3</deliveryType><deliveryAddress><ipAddressAndPort>"
            f"<c:address><c:IPv4Address>{LOOPBACK}</c:IPv4Address></c:address>"
            f"<c:port><c:TCPPort>{mdf_port}</c:TCPPort></c:port></ipAddressAndPort>"
            "</deliveryAddress>"
            "</destinationDetails>",
        ),
        x1_message(
            "ActivateTaskRequest",
            f"<taskDetails><xId>{XID}</xId><targetIdentifiers><targetIdentifier>"
            f"<sipUri>{TARGET}</sipUri></targetIdentifier></targetIdentifiers>"
            f"<deliveryType>X2andX3</deliveryType><listOfDIDs><dId>{DID}</dId></listOfDIDs>"
            "</taskDetails>",
        ),
    )


class Pki:
    def __init__(self, directory: Path) -> None:
        test_pki = TestPki(directory)
        self.ca: TestCa = test_pki.ca("Interception CA")
        self.gateway = self.ca.issue("gw-interop")
        self.admf = self.ca.issue("admf-1")
        self.mdf = self.ca.issue("mdf")


def curl_x1(
    pki: Pki, port: int, document: str, *, certificate: bool = True
) -> subprocess.CompletedProcess[str]:
    command = [
        require_peer("curl"),
        "--silent",
        "--show-error",
        "--max-time",
        "10",
        "--cacert",
        str(pki.ca.certificate),
        "-H",
        "Content-Type: application/xml",
        "--data-binary",
        "@-",
        f"https://{LOOPBACK}:{port}/X1",
    ]
    if certificate:
        command[1:1] = ["--cert", str(pki.admf.certificate), "--key", str(pki.admf.key)]
    return subprocess.run(command, input=document, capture_output=True, text=True, timeout=20)


def gateway(
    workdir: Path,
    trunk: SippUas,
    pki: Pki,
    x1_port: int,
    *,
    tls_delivery: bool,
    workers: int = 1,
    more: str = "",
    allowed: Sequence[str] = (),
) -> TlsGatewayProcess:
    table = (
        "[plugins.intercept]\n"
        f'x1_listen = "{LOOPBACK}:{x1_port}"\n'
        f'x1_certificate = "{pki.gateway.certificate}"\n'
        f'x1_private_key = "{pki.gateway.key}"\n'
        f'x1_ca = "{pki.ca.certificate}"\n'
        'ne_identifier = "gw-interop"\n' + more
    )
    if tls_delivery:
        table += (
            f'delivery_certificate = "{pki.gateway.certificate}"\n'
            f'delivery_private_key = "{pki.gateway.key}"\n'
            f'delivery_ca = "{pki.ca.certificate}"\n'
        )
    else:
        table += "delivery_tls = false\n"
    return TlsGatewayProcess(
        workdir,
        plugins=("udp", "tcp", "tls", "sdes", "intercept"),
        # Plain TCP delivery (tshark reads the PDUs) is warned of on purpose: a lab only.
        allowed_warnings=[
            *allowed,
            *(() if tls_delivery else [r"over plain TCP \(delivery_tls = false\)"]),
        ],
        accounts={"alice": PASSWORD},
        digest_algorithms=("MD5",),  # baresip 1.0.0 answers MD5 only
        settings={
            "gateway": {"log_level": "debug", "domains": [LOOPBACK]},
            "media": {"workers": workers},
        },
        extra_toml=trunk.trunk_toml() + table,
    )


@contextmanager
def mediation(workdir: Path, pki: Pki, *, tls: bool) -> Iterator[tuple[int, Path]]:
    """A mediation function writing what it receives to a file: ``openssl s_server`` demanding
    a client certificate our CA issued, or socat on plain TCP. Both relay the connection to
    their standard input and output, where :func:`answer_keepalives` keeps what arrives and
    acknowledges each keepalive (TS 103 221-2 types 3/4): the gateway counts a connection as
    working only once one is answered."""
    port = free_port("tcp")
    received = workdir / "mdf.bin"
    if tls:
        command = [
            require_peer("openssl"), "s_server", "-quiet", "-naccept", "1",
            "-accept", f"{LOOPBACK}:{port}", "-cert", str(pki.mdf.certificate),
            "-key", str(pki.mdf.key), "-CAfile", str(pki.ca.certificate),
            "-Verify", "1", "-verify_return_error",
        ]  # fmt: skip
    else:
        command = [
            require_peer("socat"), f"TCP-LISTEN:{port},bind={LOOPBACK},reuseaddr", "STDIO",
        ]  # fmt: skip
    log = workdir / "mdf.log"
    # s_server writes what it receives to stdout and sends its stdin to the client (so does
    # socat's STDIO), and stops at EOF on stdin: a pipe kept open.
    errors = log.open("wb")
    process = subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=errors,
        start_new_session=True,
        preexec_fn=die_with_parent,  # a session of its own: no group signal reaches it
    )
    answering = threading.Thread(target=answer_keepalives, args=(process, received), daemon=True)
    answering.start()
    try:
        wait_listening(port, "tcp", timeout=10, process=process)  # type: ignore[arg-type]
        yield port, received
    finally:
        stop_process(process, timeout=2.0)  # type: ignore[arg-type]
        answering.join(timeout=5)
        # Ours to close (the process has exited, the thread read its output to the end).
        errors.close()
        assert process.stdin is not None and process.stdout is not None
        with suppress(OSError):  # an acknowledgement it could not take
            process.stdin.close()
        if not answering.is_alive():
            process.stdout.close()


def answer_keepalives(process: subprocess.Popen[bytes], received: Path) -> None:
    """What the mediation function ``process`` writes out (what it received) goes to
    ``received``; each keepalive in it is acknowledged through its standard input."""
    assert process.stdout is not None and process.stdin is not None
    reader = pdu.PduReader()
    with received.open("wb") as out:
        while data := process.stdout.read1(65536):
            out.write(data)
            out.flush()
            for item in reader.feed(data):
                if item.pdu_type == pdu.KEEPALIVE and item.sequence is not None:
                    ack = pdu.keepalive(item.sequence, version=item.version, acknowledgement=True)
                    try:
                        process.stdin.write(ack)
                        process.stdin.flush()
                    except OSError:
                        return  # it stopped


def pdus(path: Path) -> list[pdu.Pdu]:
    return pdu.PduReader().feed(path.read_bytes())


def audio_of(packets: list[bytes], workdir: Path, name: str) -> Path:
    """The PCMU payloads of RTP packets, as a WAV for sox to analyse."""
    raw = workdir / f"{name}.ul"
    with raw.open("wb") as out:
        for packet in packets:
            assert packet[0] >> 6 == 2 and packet[1] & 0x7F == 0, "RTP version 2, PCMU"
            header = 12 + 4 * (packet[0] & 0x0F)
            out.write(packet[header:])
    wav = workdir / f"{name}.wav"
    subprocess.run(
        [
            require_peer("sox"),
            *("-t", "ul", "-r", "8000", "-c", "1", str(raw)),
            *("-e", "signed-integer", "-b", "16", str(wav)),
        ],
        check=True,
    )
    return wav


def call_through(gw: TlsGatewayProcess, tmp_path: Path) -> dict[str, object]:
    with Baresip(
        tmp_path, "alice", source=tone_wav(tmp_path / "alice.wav", TONE), mediaenc="srtp-mand"
    ) as alice:
        alice.register_over_tls(LOOPBACK, gw.tls_port, PASSWORD, mediaenc="srtp-mand")
        alice.dial(f"sip:{TRUNK_NUMBER}@{LOOPBACK}:{gw.tls_port};transport=tls")
        call = alice.wait_established()
        out = gw.cli_until(lambda text: '"security"' in text, "calls", "--json")
        alice.wait_audio(2.0)
        alice.hangup()
        alice.wait_closed()
        gw.wait_for_log(rf"call {re.escape(str(call['id']))}\S* ended")
    (record,) = json.loads(out)
    return dict(record["security"])


@pytest.mark.parametrize("workers", [1, 2], ids=["in-process-relay", "two-media-workers"])
def test_a_targets_call_is_delivered_over_mutual_tls_with_its_media_decrypted(
    tmp_path: Path, workers: int
) -> None:
    pki = Pki(tmp_path / "pki")
    x1_port = free_port("tcp")
    with (
        mediation(tmp_path, pki, tls=True) as (mdf_port, received),
        SippUas("uas_answer.xml", workdir=tmp_path, rtp_echo=True) as trunk,
        gateway(
            tmp_path / "gw",
            trunk,
            pki,
            x1_port,
            tls_delivery=True,
            workers=workers,
            # The X1 request without a client certificate below, refused on purpose.
            allowed=[r"X1 TLS handshake with \S+ failed: .*PEER_DID_NOT_RETURN_A_CERTIFICATE"],
        ) as gw,
    ):
        wait_listening(x1_port, "tcp", timeout=10)
        refused = curl_x1(pki, x1_port, provisioning(mdf_port), certificate=False)
        assert refused.returncode != 0  # no client certificate: no X1
        answer = curl_x1(pki, x1_port, provisioning(mdf_port))
        assert answer.returncode == 0, answer.stderr
        assert answer.stdout.count("<oK>AcknowledgedAndCompleted</oK>") == 2, answer.stdout
        check(provisioning(mdf_port).encode())  # curl sent what the TS 103 221-1 XSD allows
        check(answer.stdout.encode())  # and so is the gateway's answer
        gw.wait_for_log(rf"intercept: connected to destination {DID}")
        security = call_through(gw, tmp_path)
        gw.wait_for_log(r"intercept: call matched task\(s\) " + str(XID))
        trunk.wait().check()
        log = gw.log_text()

    assert security["a"]["streams"][0]["key_exchange"] == "sdes"  # type: ignore[index]
    assert "taps" not in security  # covert: the record does not name it
    assert "alice@" not in "".join(line for line in log.splitlines() if "intercept" in line)
    delivered = pdus(received)
    # The connection began with our keepalive, which the mediation function acknowledged
    # (the gateway logged it connected only then); the rest is what was intercepted.
    assert delivered[0].pdu_type == pdu.KEEPALIVE
    delivered = [p for p in delivered if p.pdu_type in (pdu.X2, pdu.X3)]
    # First her registration (over TLS, challenged, then accepted), under its own correlation.
    registering = [p for p in delivered if p.correlation == delivered[0].correlation]
    first_words = [
        p.payload.split(b" ", 2)[1 if p.payload.startswith(b"SIP/") else 0] for p in registering
    ]
    # Only registrations we accepted (its REGISTER with credentials, our 200), not challenges.
    assert first_words[:2] == [b"REGISTER", b"200"]
    assert set(first_words) == {b"REGISTER", b"200"}  # baresip may register again
    assert {p.direction for p in registering if p.payload.startswith(b"REGISTER")} == {3}
    assert {p.direction for p in registering if p.payload.startswith(b"SIP/")} == {2}
    # Then the call.
    delivered = [p for p in delivered if p not in registering]
    x2 = [p for p in delivered if p.pdu_type == pdu.X2]
    x3 = [p for p in delivered if p.pdu_type == pdu.X3]
    assert x2[0].payload.startswith(b"INVITE sip:+4989555@")  # baresip's, over TLS
    assert x2[0].direction == pdu.FROM_TARGET
    assert x2[0].attribute(pdu.IP_PROTOCOL) == b"\x06"
    assert x2[0].attribute(pdu.MATCHED_TARGET) == TARGET.encode()
    invites = [p.payload.split(b"\r\n", 1)[0] for p in x2 if p.payload.startswith(b"INVITE ")]
    assert any(line.startswith(b"INVITE sip:+4989555@127.0.0.1:") for line in invites[1:])
    assert sum(p.payload.startswith(b"BYE ") for p in x2) == 2  # both legs
    assert len({p.correlation for p in delivered}) == 1 and {p.xid for p in delivered} == {XID}
    spoken = audio_of([p.payload for p in x3 if p.direction == pdu.FROM_TARGET], tmp_path, "spoken")
    heard = audio_of([p.payload for p in x3 if p.direction == pdu.TO_TARGET], tmp_path, "heard")
    for wav in (spoken, heard):
        tone = analyse_tone(wav)
        assert tone.dominant_frequency == pytest.approx(TONE, abs=3), wav
        assert tone.power_share > 0.9, wav


def pcap_of(pdus_received: list[bytes], path: Path, port: int) -> Path:
    """A pcap with one TCP segment per PDU (text2pcap), to port ``port``: tshark 4.0's
    dissector reads only the first PDU of a segment, and Linux coalesces our writes."""
    dump = path.with_suffix(".txt")
    with dump.open("w") as out:
        for data in pdus_received:
            for offset in range(0, len(data), 16):
                out.write(f"{offset:06x} {data[offset : offset + 16].hex(' ')}\n")
    subprocess.run(
        [require_peer("text2pcap"), "-q", "-T", f"40000,{port}", str(dump), str(path)],
        check=True,
        capture_output=True,
    )
    return path


def li_dissector() -> str:
    """tshark's name for its ETSI TS 103 221-2 (X2/X3) dissector, for ``-d``: ``5gli`` in
    tshark 4.0 (Debian 12), ``li5g`` in 4.4 (Debian 13); its fields are ``li5g.*`` in both."""
    listing = subprocess.run(
        [require_peer("tshark"), "-G", "protocols"], capture_output=True, text=True, check=True
    ).stdout
    rows = [line.split("\t") for line in listing.splitlines()]
    names = {row[2] for row in rows if len(row) > 2}  # name, short name, filter name, ...
    return "li5g" if "li5g" in names else "5gli"


def octets_shown(value: str) -> str:
    """The target identifier as tshark shows it: hex octets in 4.0, the text itself in 4.4."""
    try:
        return bytes.fromhex(value).decode()
    except ValueError:
        return value


def test_tshark_reads_every_pdu_with_the_sip_and_rtp_inside(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    x1_port = free_port("tcp")
    with (
        mediation(tmp_path, pki, tls=False) as (mdf_port, received),
        SippUas("uas_answer.xml", workdir=tmp_path, rtp_echo=True) as trunk,
        gateway(
            tmp_path / "gw",
            trunk,
            pki,
            x1_port,
            tls_delivery=False,
            more='interception_point_id = "fra-1/b2bua"\n',
        ) as gw,
    ):
        wait_listening(x1_port, "tcp", timeout=10)
        assert curl_x1(pki, x1_port, provisioning(mdf_port)).returncode == 0
        gw.wait_for_log(rf"intercept: connected to destination {DID}")
        call_through(gw, tmp_path)
        trunk.wait().check()
    stream = received.read_bytes()
    delivered = pdus(received)
    sizes = [40 + sum(4 + len(v) for _, v in p.attributes) + len(p.payload) for p in delivered]
    assert sum(sizes) == len(stream)  # socat received whole PDUs and nothing else
    offsets = [sum(sizes[:n]) for n in range(len(sizes) + 1)]
    # The keepalive the connection began with (acknowledged: the gateway logged it connected
    # only then) is left out: the rows below are checked against what was intercepted.
    assert delivered[0].pdu_type == pdu.KEEPALIVE
    segments = [stream[a:b] for a, b in itertools.pairwise(offsets)]
    copies = [(segment, p) for segment, p in zip(segments, delivered, strict=True)]
    copies = [(segment, p) for segment, p in copies if p.pdu_type in (pdu.X2, pdu.X3)]
    delivered = [p for _, p in copies]
    pcap = pcap_of([segment for segment, _ in copies], tmp_path / "x2x3.pcap", mdf_port)
    wanted = ["li5g.type", "li5g.pf", "li5g.pd", "li5g.xid", "li5g.sq", "li5g.mti", "li5g.nfid"]
    wanted += ["li5g.ipid", "sip.Method", "sip.Status-Code", "rtp.p_type"]
    fields = subprocess.run(
        [
            require_peer("tshark"),
            *("-r", str(pcap), "-d", f"tcp.port=={mdf_port},{li_dissector()}", "-T", "fields"),
            *(arg for field in wanted for arg in ("-e", field)),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = [line.split("\t") for line in fields.splitlines()]
    assert len(rows) == len(delivered)
    for row, ours in zip(rows, delivered, strict=True):
        kind, fmt, direction, xid, _sequence, target, nfid, ipid, method, status, rtp_type = row
        assert (int(kind), int(fmt), int(direction)) == (
            ours.pdu_type,
            ours.payload_format,
            ours.direction,
        )
        assert xid == str(XID)
        assert octets_shown(target.split(",")[0]) == TARGET
        # ne_identifier, as the Network Function ID (4.0 lists each octets attribute twice)
        assert {bytes.fromhex(value).decode() for value in nfid.split(",")} == {"gw-interop"}
        # interception_point_id, as the Interception Point ID (attribute 7)
        assert {bytes.fromhex(value).decode() for value in ipid.split(",")} == {"fra-1/b2bua"}
        if ours.pdu_type == pdu.X2:  # tshark found the SIP message inside
            assert method or status, row
        else:  # and the RTP: PCMU, in clear
            assert rtp_type == "0", row
    methods = {row[8] for row in rows}
    assert {"INVITE", "ACK", "BYE"} <= methods
