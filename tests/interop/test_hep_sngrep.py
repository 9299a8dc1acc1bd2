"""SIP capture in HEP3 (the ``hep`` plugin) with a real collector: sngrep listening for HEP
(``sngrep -N -q -L udp:...``) and writing what it decodes to a pcap.

sipp registers through the gateway (REGISTER, 401, REGISTER with credentials, 200) and probes it
with OPTIONS. sngrep's pcap, read by tshark, holds every one of those messages, each with the
addresses and ports it really had (sipp's and the gateway's), the way it went, and its Call-ID:
sngrep decoded our HEP3 chunks. The REGISTER's digest response is not in it (starred).

Over UDP a slow peer sees requests sent again, and answers them again (RFC 3261 §17.1.2.2,
§17.2.2): the gateway captures each copy, so a copy equal to one already read in the same
direction is a retransmission and is read once; a second, distinct message still counts.
"""

from __future__ import annotations

import errno
import re
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import require_peer
from tests.interop.harness import LOOPBACK, GatewayProcess, run_sipp_uac
from tests.interop.harness.capture import _tshark_fields
from tests.interop.harness.ports import free_port
from tests.interop.harness.processes import start_process, stop_process, tail

pytestmark = pytest.mark.interop


def _listening(port: int) -> bool:
    """Whether something holds UDP ``port`` on the loopback (binding it fails)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((LOOPBACK, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


@contextmanager
def sngrep_collector(workdir: Path) -> Iterator[tuple[int, Path]]:
    """sngrep as a HEP collector on a free UDP port; yields (port, the pcap it writes)."""
    port = free_port("udp")
    pcap = workdir / "hep.pcap"
    log = workdir / "sngrep.log"
    process = start_process(
        [require_peer("sngrep"), "-N", "-q", "-F", "-L", f"udp:{LOOPBACK}:{port}", "-O", str(pcap)],
        log=log,
    )
    try:
        deadline = time.monotonic() + 10
        while not _listening(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sngrep is not listening on {port}:\n{tail(log)}")
            time.sleep(0.05)
        yield port, pcap
    finally:
        stop_process(process)


def test_sngrep_decodes_every_message_the_gateway_captured(tmp_path: Path) -> None:
    with (
        sngrep_collector(tmp_path) as (port, pcap),
        GatewayProcess(
            tmp_path / "gw",
            accounts={"alice": "wonderland"},
            settings={"plugins": {"enable": ["udp", "tcp", "hep"]}},
            extra_toml=f'[plugins.hep]\ncollector = "udp:{LOOPBACK}:{port}"\ncapture_id = 11\n',
        ) as gw,
    ):
        sipp_port = free_port("udp")
        registered = run_sipp_uac(
            "register_auth.xml",
            gw.address,
            workdir=tmp_path,
            service="alice",
            auth=("alice", "wonderland"),
            port=sipp_port,
        )
        registered.check()
        run_sipp_uac("options.xml", gw.address, workdir=tmp_path, port=sipp_port).check()
        # sngrep writes as it decodes; poll its file until the last message, the 200 to
        # sipp's OPTIONS, is in it (the readiness probe's OPTIONS is there long before).
        deadline = time.monotonic() + 10
        while not _answered_options(pcap, sipp_port) and time.monotonic() < deadline:
            time.sleep(0.1)

    # (The harness's readiness probe, an OPTIONS from another port, is captured too.)
    rows = _rows(pcap)
    sipp, gateway = (LOOPBACK, sipp_port), (LOOPBACK, gw.port)
    sent_by_sipp = [r["what"] for r in rows if r["src"] == sipp and r["dst"] == gateway]
    sent_to_sipp = [r["what"] for r in rows if r["src"] == gateway and r["dst"] == sipp]
    assert sent_by_sipp == ["REGISTER", "REGISTER", "OPTIONS"], rows
    assert sent_to_sipp == ["401", "200", "200"], rows
    assert all(sipp in (r["src"], r["dst"]) or "ready" in str(r["call_id"]) for r in rows)
    # A request and its response carry the same Call-ID (Homer's correlation).
    register_ids = {r["call_id"] for r in rows if r["cseq"].endswith("REGISTER")}
    assert len(register_ids) == 1 and "" not in register_ids
    # The digest response left as many stars as it had hex digits (redact_credentials).
    authorizations = [str(r["authorization"]) for r in rows if r["authorization"]]
    assert len(authorizations) == 1, authorizations
    assert 'username="alice"' in authorizations[0], authorizations
    assert re.search(r'response="\*{32}(\*{32})?"', authorizations[0]), authorizations


def _rows(pcap: Path) -> list[dict[str, object]]:
    """The SIP messages in ``pcap``, in order, each retransmission left out: a message whose
    addresses and bytes equal an earlier one's is that message sent again (a new request has
    a new branch or CSeq, a new response answers another transaction or differs). tshark finds
    SIP by its heuristic dissector: no port is decoded as RTP, which made tshark 4.4 (Debian
    13) read sipp's OPTIONS to the gateway's port as RTP."""
    fields = ["ip.src", "udp.srcport", "ip.dst", "udp.dstport", "sip.Method"]
    fields += ["sip.Status-Code", "sip.Call-ID", "sip.CSeq", "sip.Authorization", "udp.payload"]
    rows = []
    seen = set()
    for row in _tshark_fields(pcap, [], fields, "sip"):
        src, sport, dst, dport, method, status, call_id, cseq, authorization, payload = row
        if (src, sport, dst, dport, payload) in seen:
            continue
        seen.add((src, sport, dst, dport, payload))
        rows.append(
            {
                "src": (src, int(sport)),
                "dst": (dst, int(dport)),
                "what": method or status,
                "call_id": call_id,
                "cseq": cseq,
                "authorization": authorization,
            }
        )
    return rows


def _answered_options(pcap: Path, sipp_port: int) -> bool:
    """Whether sngrep's pcap has the gateway's answer to sipp's OPTIONS yet."""
    if not pcap.exists():
        return False
    try:
        rows = _rows(pcap)
    except RuntimeError:
        return False  # tshark read the file as sngrep was writing a packet: read it again
    return any(r["dst"] == (LOOPBACK, sipp_port) and r["cseq"] == "1 OPTIONS" for r in rows)
