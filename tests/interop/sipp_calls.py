"""The gateway configuration, accounts, trunks and checks that the sipp call tests share: moved
here from test_calls_sipp.py so that no test module imports another."""

from __future__ import annotations

import re
from pathlib import Path

from tests.interop.harness import (
    LOOPBACK,
    GatewayProcess,
    SippResult,
    SippUas,
    run_sipp_uac,
)

ALICE = ("alice", "wonderland")
BOB = ("bob", "builder")
ACCOUNTS = dict([ALICE, BOB])
#: The address a calling trunk uses: another loopback address, so the gateway can tell it from
#: the accounts' phones on 127.0.0.1 by source address.
TRUNK_IP = "127.0.0.2"
#: The number the calling trunk delivers; its ``dids`` map it to alice.
DID = "+4930123456"

#: The number accounts calling out through ``outbound_trunk`` are presented by.
CALLER_ID = "+4940123450"


def outbound_trunk(trunk: SippUas, *, number_format: str = "e164") -> str:
    """A trunk the gateway calls for +49 numbers over the trunk's transport; it never calls in."""
    return (
        "[[trunks]]\n"
        'name = "carrier"\n'
        f'address = "{trunk.config_address}"\n'
        'prefixes = ["+49"]\n'
        "allowed_sources = []\n"
        f'caller_id = "{CALLER_ID}"\n'
        f'number_format = "{number_format}"\n'
    )


def inbound_trunk() -> str:
    """A trunk calling in from 127.0.0.2 whose DID goes to alice; it serves no prefix, so the
    gateway never calls it (its address is never used)."""
    return (
        "[[trunks]]\n"
        'name = "pbx"\n'
        f'address = "udp:{TRUNK_IP}:5060"\n'
        f'allowed_sources = ["{TRUNK_IP}"]\n'
        f'dids = {{"{DID}" = "alice"}}\n'
    )


# -- reading what the peers saw ---------------------------------------------------------------


def sdp_connection(message: str) -> tuple[str, int]:
    """The (c= address, first m=audio port) of the SDP body of a SIP message."""
    address = re.search(r"^c=IN IP4 (\S+)$", message, re.MULTILINE)
    port = re.search(r"^m=audio (\d+) ", message, re.MULTILINE)
    assert address is not None and port is not None, f"no SDP in:\n{message}"
    return address[1], int(port[1])


def header(message: str, name: str) -> str:
    """The value of the first ``name`` header of a SIP message (long form only)."""
    match = re.search(rf"^{name}:\s*(.*)$", message, re.MULTILINE | re.IGNORECASE)
    assert match is not None, f"no {name} in:\n{message}"
    return match[1].strip()


def in_range(port: int, ports: tuple[int, int]) -> bool:
    return ports[0] <= port <= ports[1]


def final_status_line(result: SippResult) -> str:
    """The status line of the last final (>= 300) response sipp received."""
    finals = [
        message.splitlines()[0]
        for message in result.received("SIP/2.0 ")
        if int(message.split()[1]) >= 300
    ]
    assert finals, result.describe()
    return finals[-1]


def register(gw: GatewayProcess, workdir: Path, transport: str, port: int) -> None:
    """REGISTER alice with her Contact on ``port`` (where her ``SippUas`` will answer), from a
    sipp that then exits: the UAS bound to that port after it is what the gateway reaches."""
    result = run_sipp_uac(
        "register_auth.xml",
        gw.address,
        workdir=workdir,
        transport=transport,
        service="alice",
        auth=ALICE,
        port=port,
    )
    result.check()
    contact = re.escape(gw.uri("alice"))
    gw.wait_for_log(rf"registered: 1 binding\(s\) for {contact} via {transport}:")


def account_call(
    scenario: str,
    gw: GatewayProcess,
    workdir: Path,
    *,
    service: str,
    account: tuple[str, str] = ALICE,
    transport: str = "udp",
    rtp_file: Path | None = None,
) -> SippResult:
    """sipp calling ``service`` as ``account``, answering the gateway's digest challenge."""
    return run_sipp_uac(
        scenario,
        gw.address,
        workdir=workdir,
        transport=transport,
        service=service,
        caller=account[0],
        auth=account,
        rtp_file=rtp_file,
    )


def trunk_call(
    scenario: str,
    gw: GatewayProcess,
    workdir: Path,
    *,
    transport: str = "udp",
    call_duration_ms: int | None = None,
    timeout: float = 15.0,
) -> SippResult:
    """sipp on 127.0.0.2 (the calling trunk) calling the DID, without credentials."""
    return run_sipp_uac(
        scenario,
        gw.address,
        workdir=workdir,
        transport=transport,
        service=DID,
        caller="+4940777",
        local_ip=TRUNK_IP,
        call_duration_ms=call_duration_ms,
        timeout=timeout,
    )


def assert_relayed_invite(invite: str, gw: GatewayProcess, *, not_ports: set[int]) -> None:
    """The INVITE a callee got came from the gateway and offers the gateway's media."""
    assert re.search(rf"^Via: SIP/2.0/\S+ {re.escape(LOOPBACK)}:{gw.port}\b", invite, re.M), invite
    address, port = sdp_connection(invite)
    assert address == LOOPBACK, invite
    assert in_range(port, gw.media_ports), (port, gw.media_ports, invite)
    assert port not in not_ports, invite
