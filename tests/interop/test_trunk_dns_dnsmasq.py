"""A trunk named by DNS against a real DNS server: ``voipgw run`` resolves ``tcp:carrier.test``
(and the bare ``carrier.test``, whose NAPTR records choose the transport, RFC 3263 §4.1)
through dnsmasq on loopback (``[dns] servers``) with dnspython, and fails over between the SRV
targets (RFC 3263 §4.3).

dnsmasq answers only what its command line holds (``--no-resolv --no-hosts``, no config file):
``_sip._tcp.carrier.test`` names ``dead.carrier.test`` (priority 10: a port where nothing
listens) and ``live.carrier.test`` (priority 20: sipp answering), both at 127.0.0.1;
``carrier.test`` has NAPTR records ``SIP+D2T`` (preference 10, to ``_sip._tcp.carrier.test``)
and ``SIP+D2U`` (preference 20, to ``_sip._udp.carrier.test``, one more target). alice
(sipp) calls a number the trunk serves: the gateway's connection to the first target is
refused, and the INVITE goes to the second, whose Request-URI names the trunk's domain, not
the target. The same name as a voicemail trunk: alice's message-summary SUBSCRIBE goes to the
second target too, and ``voipgw trunks`` and ``check-config --resolve`` show the targets (a
SIPREC recorder's too).
A SIPREC recorder named the same way (``sip:srs@recorder.test;transport=tcp``) is resolved
through the same server, and the recording INVITE leaves the refused first target for the SRS.
Nothing waits on a clock: dnsmasq is polled until it answers, sipp until it listens.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import pytest
import trio

from gateway.core.calls.trunk_dns import DnsError, DnsPythonResolver, NaptrRecord, resolve
from gateway.core.config import TrunkAddress
from tests.conftest import require_peer
from tests.interop.harness import LOOPBACK, GatewayProcess, SippUas, run_sipp_uac
from tests.interop.harness.gateway import REPO_ROOT
from tests.interop.harness.ports import free_port
from tests.interop.harness.processes import start_process, stop_process, tail

pytestmark = pytest.mark.interop

ALICE = ("alice", "wonderland")
NUMBER = "+4989555"
DOMAIN = "carrier.test"  # RFC 2606: a name no real DNS answers
UDP_TARGET = 5999  # the SRV target of the NAPTR record for UDP, after the TCP ones


def _answers(port: int) -> bool:
    """Whether the DNS server on ``port`` answers a query for a name it holds."""
    query = dns.message.make_query(f"live.{DOMAIN}", "A")
    try:
        dns.query.udp(query, LOOPBACK, port=port, timeout=0.2)
    except (OSError, dns.exception.Timeout):
        return False
    return True


@contextlib.contextmanager
def dnsmasq(workdir: Path, *, dead: int, live: int, records: Sequence[str] = ()) -> Iterator[int]:
    """dnsmasq on 127.0.0.1 at a free port (yielded) holding the carrier's records: SRV
    targets at ``dead`` (priority 10) and ``live`` (priority 20), TTL 60 s; ``records`` more
    of dnsmasq's options."""
    binary = require_peer("dnsmasq")
    port = free_port("udp")
    process = start_process(
        [
            binary,
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            f"--port={port}",
            f"--listen-address={LOOPBACK}",
            "--bind-interfaces",
            "--pid-file=",
            *(["--user=root"] if os.geteuid() == 0 else []),
            "--local-ttl=60",
            f"--srv-host=_sip._tcp.{DOMAIN},dead.{DOMAIN},{dead},10,0",
            f"--srv-host=_sip._tcp.{DOMAIN},live.{DOMAIN},{live},20,0",
            f"--host-record=dead.{DOMAIN},{LOOPBACK}",
            f"--host-record=live.{DOMAIN},{LOOPBACK}",
            # RFC 3263 §4.1: TCP preferred, then UDP (flag S: the replacement is an SRV name).
            f"--naptr-record={DOMAIN},10,20,S,SIP+D2U,,_sip._udp.{DOMAIN}",
            f"--naptr-record={DOMAIN},10,10,S,SIP+D2T,,_sip._tcp.{DOMAIN}",
            f"--srv-host=_sip._udp.{DOMAIN},live.{DOMAIN},{UDP_TARGET},10,0",
            *records,
        ],
        log=workdir / "dnsmasq.log",
        cwd=workdir,
    )
    try:
        deadline = time.monotonic() + 10
        while not _answers(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dnsmasq did not answer:\n{tail(workdir / 'dnsmasq.log')}")
        yield port
    finally:
        stop_process(process, timeout=3.0)


@pytest.mark.parametrize("address", [f"tcp:{DOMAIN}", DOMAIN], ids=["srv", "naptr"])
def test_a_named_trunk_fails_over_from_a_dead_target_to_the_next(
    tmp_path: Path, address: str
) -> None:
    callee = SippUas("uas_answer.xml", workdir=tmp_path, transport="tcp")
    dead = free_port("tcp")  # nothing listens there: the connection is refused
    trunk = (
        "[[trunks]]\n"
        'name = "carrier"\n'
        f'address = "{address}"\n'
        'prefixes = ["+49"]\n'
        # alice's sipp is on 127.0.0.1 too: the trunk's resolved address must not claim it.
        "allowed_sources = []\n"
    )
    with (
        callee,
        dnsmasq(tmp_path, dead=dead, live=callee.port) as dns_port,
        GatewayProcess(
            tmp_path,
            accounts=dict([ALICE]),
            settings={"dns": {"servers": [f"{LOOPBACK}:{dns_port}"]}},
            extra_toml=trunk,
            # The first target is dead on purpose: the attempt on it is logged, then failover.
            allowed_warnings=[r"cannot reach sip:\S+: all attempts to connect to \S+ failed"],
        ) as gw,
    ):
        caller = run_sipp_uac(
            "uac_call_auth.xml",
            gw.address,
            workdir=tmp_path,
            service=NUMBER,
            caller=ALICE[0],
            auth=ALICE,
        )
        caller.check()
        answered = callee.wait(timeout=10)
        answered.check()
        log = gw.log_text()
        calls = gw.cli_until(lambda out: "reached at" in out, "calls", "--recent", "5")

    targets = f"tcp:{LOOPBACK}:{dead}, tcp:{LOOPBACK}:{callee.port}"
    if address == DOMAIN:  # NAPTR: the UDP record's target after the TCP record's
        targets += f", udp:{LOOPBACK}:{UDP_TARGET}"
    assert f"trunk carrier: {address} resolves to {targets}" in log
    assert "answered 503; failing over to trunk carrier" in log
    # The call record says which target failed and which took the call.
    dead_target, live_target = f"tcp:{LOOPBACK}:{dead}", f"tcp:{LOOPBACK}:{callee.port}"
    assert (
        f"trunk carrier (target {dead_target}) answered 503 Service Unavailable: "
        f"failed over to trunk carrier (target {live_target})"
    ) in calls
    assert f"trunk {DOMAIN} reached at {live_target} (DNS target 2)" in calls
    (invite,) = answered.received("INVITE ")
    # RFC 3263 §4.2: the Request-URI keeps the domain; only the next hop is the SRV target.
    # A bare domain's URI names no transport (§4.1: the NAPTR record chose it).
    uri = f"sip:{NUMBER}@{DOMAIN}" if address == DOMAIN else f"sip:{NUMBER}@{DOMAIN};transport=tcp"
    assert invite.startswith(f"INVITE {uri} SIP/2.0"), invite


def test_a_siprec_recorder_named_by_dns_fails_over_to_its_next_target(tmp_path: Path) -> None:
    """The recorder is ``sip:srs@recorder.test;transport=tcp``: its SRV records name a refused
    port first, then the SRS (sipp, ``calls/uas_siprec_srs.xml``, over TCP). A call to the
    carrier (an address) is recorded there; the Request-URI keeps the recorder's name."""
    callee = SippUas("uas_answer.xml", workdir=tmp_path / "carrier")
    srs = SippUas("calls/uas_siprec_srs.xml", workdir=tmp_path / "srs", transport="tcp")
    dead = free_port("tcp")  # nothing listens there: the connection is refused
    recorder = "recorder.test"
    extra = callee.trunk_toml() + (
        "[plugins.siprec]\n"
        f'srs = "sip:srs@{recorder};transport=tcp"\n'
        'trunks = ["carrier"]\n'
        f'media_address = "{LOOPBACK}"\n'
    )
    with (
        callee,
        srs,
        dnsmasq(
            tmp_path,
            dead=dead,
            live=callee.port,
            records=[
                f"--srv-host=_sip._tcp.{recorder},dead.{DOMAIN},{dead},10,0",
                f"--srv-host=_sip._tcp.{recorder},live.{DOMAIN},{srs.port},20,0",
            ],
        ) as dns_port,
        GatewayProcess(
            tmp_path / "gw",
            accounts=dict([ALICE]),
            settings={
                "dns": {"servers": [f"{LOOPBACK}:{dns_port}"]},
                "plugins": {"enable": ["udp", "tcp", "siprec"]},
            },
            extra_toml=extra,
        ) as gw,
    ):
        caller = run_sipp_uac(
            "uac_call_auth.xml",
            gw.address,
            workdir=tmp_path,
            service=NUMBER,
            caller=ALICE[0],
            auth=ALICE,
        )
        caller.check()
        callee.wait(timeout=10).check()
        recorded = srs.wait(timeout=10)
        log = gw.log_text()
        trunks = gw.cli("trunks").stdout
        checked = subprocess.run(
            [sys.executable, "-m", "gateway", "check-config", str(gw.config_path), "--resolve"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    recorded.check()  # the INVITE's checks passed, the final snapshot and the BYE came
    uri = f"sip:srs@{recorder};transport=tcp"
    live = f"tcp:{LOOPBACK}:{srs.port}"
    resolved = f"tcp:{recorder} resolves to tcp:{LOOPBACK}:{dead}, {live}"
    assert f"session target {uri}: {resolved}" in log
    # What the operator sees of the recorder's name: after the trunks, and before a start.
    assert "session targets (named by DNS):" in trunks
    assert f"{uri}  tcp:{recorder}  [resolved]" in trunks
    assert f"  targets: tcp:{LOOPBACK}:{dead}, {live}" in trunks
    assert checked.returncode == 0, checked.stderr
    assert f"session target {uri}: {resolved} (TTL" in checked.stdout
    assert f"session to {uri}: target tcp:{LOOPBACK}:{dead} failed" in log
    invite = recorded.received("INVITE ")[0]
    assert invite.startswith(f"INVITE {uri} SIP/2.0"), invite  # RFC 3263 §4.2


def test_mwi_through_a_voicemail_trunk_named_by_dns(tmp_path: Path) -> None:
    """alice (sipp) subscribes to her mailbox; the voicemail trunk is ``tcp:carrier.test``:
    the gateway's SUBSCRIBE finds the first SRV target refused and goes to the second, the
    voicemail platform (sipp over TCP), whose NOTIFYs reach alice. ``voipgw trunks`` shows
    the targets the name resolved to, and ``voipgw check-config --resolve`` resolves the name
    as the gateway will, through the same server."""
    platform = SippUas("calls/uas_voicemail.xml", workdir=tmp_path, transport="tcp")
    dead = free_port("tcp")  # nothing listens there: the connection is refused
    mailbox = "+4989111"
    trunk = (
        "[[trunks]]\n"
        'name = "voicemail"\n'
        f'address = "tcp:{DOMAIN}"\n'
        "allowed_sources = []\n"  # alice's sipp is on 127.0.0.1 too
        "voicemail = true\n"
        f'dids = {{"{mailbox}" = "alice"}}\n'
    )
    with (
        platform,
        dnsmasq(tmp_path, dead=dead, live=platform.port) as dns_port,
        GatewayProcess(
            tmp_path,
            accounts=dict([ALICE]),
            settings={"dns": {"servers": [f"{LOOPBACK}:{dns_port}"]}},
            extra_toml=trunk,
        ) as gw,
    ):
        phone = run_sipp_uac(
            "calls/uac_subscribe_mwi.xml", gw.address, workdir=tmp_path, service="alice", auth=ALICE
        )
        phone.check()
        served = platform.wait(timeout=10)
        trunks = gw.cli("trunks").stdout
        checked = subprocess.run(
            [sys.executable, "-m", "gateway", "check-config", str(gw.config_path), "--resolve"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        log = gw.log_text()
    served.check()
    dead_target, live_target = f"tcp:{LOOPBACK}:{dead}", f"tcp:{LOOPBACK}:{platform.port}"
    assert f"target tcp:{LOOPBACK}:{dead} answered 503; trying {live_target}" in log
    subscribe, unsubscribe = served.received("SUBSCRIBE ")
    # RFC 3263 §4.2: the Request-URI names the trunk's domain; the SRV target is the next hop.
    assert subscribe.startswith(f"SUBSCRIBE sip:{mailbox}@{DOMAIN};transport=tcp SIP/2.0")
    assert "Expires: 0" in unsubscribe
    first, last = phone.received("NOTIFY ")
    assert "Messages-Waiting: yes" in first
    assert "Subscription-State: terminated" in last
    assert f"voicemail  tcp:{DOMAIN}  [up]" in trunks
    assert f"  targets: {dead_target}, {live_target}" in trunks
    assert "TTL 60 s" in trunks
    assert checked.returncode == 0, checked.stderr
    assert f"trunk voicemail: tcp:{DOMAIN} resolves to {dead_target}, {live_target}" in (
        checked.stdout
    )


def test_the_resolver_reads_dnsmasqs_records(tmp_path: Path) -> None:
    """The gateway's resolver against the same server: the SRV targets by priority with the
    TTL, and a name dnsmasq does not hold (REFUSED: it has no upstream) as a DNS failure; the
    NAPTR records as dnspython reads them, and a bare domain over them: TCP's targets, then
    UDP's, or UDP's alone for a gateway without TCP."""

    async def main() -> tuple[str, str, list[NaptrRecord], str, str]:
        resolver = DnsPythonResolver([f"{LOOPBACK}:{port}"], 2.0)
        found = await resolve(TrunkAddress.parse(f"tcp:{DOMAIN}"), resolver)
        hops = " ".join(str(hop) for hop in found.hops)
        naptr, _ = await resolver.naptr(DOMAIN)
        both = await resolve(TrunkAddress.parse(DOMAIN), resolver, ("udp", "tcp", "tls"))
        udp = await resolve(TrunkAddress.parse(DOMAIN), resolver, ("udp",))
        chosen = " ".join(str(hop) for hop in both.hops), " ".join(str(h) for h in udp.hops)
        try:
            await resolver.addresses(f"nothing.{DOMAIN}")
        except DnsError:
            return hops, f"failed, ttl {found.ttl:g}", naptr, *chosen
        return hops, "answered", naptr, *chosen

    with dnsmasq(tmp_path, dead=5070, live=5080) as port:
        hops, missing, naptr, both, udp = trio.run(main)
    assert hops == f"tcp:{LOOPBACK}:5070 tcp:{LOOPBACK}:5080"
    assert missing == "failed, ttl 60"
    assert sorted(naptr, key=lambda record: record.preference) == [
        NaptrRecord(10, 10, "S", "SIP+D2T", "", f"_sip._tcp.{DOMAIN}"),
        NaptrRecord(10, 20, "S", "SIP+D2U", "", f"_sip._udp.{DOMAIN}"),
    ]
    assert both == f"tcp:{LOOPBACK}:5070 tcp:{LOOPBACK}:5080 udp:{LOOPBACK}:{UDP_TARGET}"
    assert udp == f"udp:{LOOPBACK}:{UDP_TARGET}"
