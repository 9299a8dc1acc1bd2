"""The lawful-intercept environment, PKI, activation and intercepted call of the in-memory
intercept tests: moved here from test_b2bua_intercept.py so that no test module imports another."""

from __future__ import annotations

import ssl
import uuid
from pathlib import Path
from typing import Any

import attrs
import h11
import pytest
import trio

import gateway.plugins.taps.intercept as intercept_plugin
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.plugins.taps.intercept import Interception, pdu
from gateway.testing.sip_agent import simple_sdp
from tests.component.calls.b2bua_env import ALICE_DID, B2bua, eventually, start_b2bua
from tests.component.calls.dtls_phone import bind
from tests.component.calls.recorder_calls import rtp
from tests.component.taps.mediation import Mediation
from tests.interop.harness.pki import Issued, TestCa, TestPki
from tests.port_blocks import port_bases
from tests.unit.taps.x1_structure import check

CALLER_PORT, CALLEE_PORT = port_bases(2)  # this process's own ports (tests/port_blocks.py)
XID = uuid.UUID("11111111-2222-4333-8444-555555555555")
DID = uuid.UUID("aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee")
NS = "http://uri.etsi.org/03221/X1/2017/10"
COMMON = "http://uri.etsi.org/03280/common/2017/07"  # TS 103 280: address, port


class Admf:
    """The operator's administration function: POSTs X1 documents over mutual TLS."""

    def __init__(self, ca: TestCa, client: Issued | None) -> None:
        self.context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca.certificate)
        if client is not None:
            self.context.load_cert_chain(client.certificate, client.key)

    async def post(self, address: tuple[str, int], *messages: str) -> tuple[int, str]:
        """POST an X1Request of ``messages``: the HTTP status and the body."""
        body = (
            f'<X1Request xmlns="{NS}" xmlns:c="{COMMON}" '
            'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
            + "".join(messages)
            + "</X1Request>"
        ).encode()
        check(body)  # what we send is what the TS 103 221-1 XSD allows
        stream = await trio.open_ssl_over_tcp_stream(*address, ssl_context=self.context)
        async with stream:
            client = h11.Connection(h11.CLIENT)
            request = h11.Request(
                method="POST",
                target="/X1",
                headers=[
                    ("host", "gw"),
                    ("content-type", "application/xml"),
                    ("content-length", str(len(body))),
                ],
            )
            await stream.send_all(
                client.send(request)
                + client.send(h11.Data(data=body))
                + client.send(h11.EndOfMessage())
            )
            answer, status = b"", 0
            while True:
                event = client.next_event()
                if event is h11.NEED_DATA:
                    client.receive_data(await stream.receive_some(65536))
                elif isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.Data):
                    answer += event.data
                elif isinstance(event, h11.EndOfMessage):
                    return status, answer.decode()


def message(kind: str, body: str) -> str:
    return (
        f'<x1RequestMessage xsi:type="{kind}"><admfIdentifier>admf-1</admfIdentifier>'
        "<neIdentifier>gw-test</neIdentifier><messageTimestamp>2026-11-29T10:00:00.000000Z"
        "</messageTimestamp><version>v1.23.1</version>"
        f"<x1TransactionId>{uuid.uuid4()}</x1TransactionId>{body}</x1RequestMessage>"
    )


def create_destination(port: int) -> str:
    return message(
        "CreateDestinationRequest",
        f"<destinationDetails><dId>{DID}</dId><friendlyName>mdf</friendlyName>"
        "<deliveryType>X2andX3</deliveryType><deliveryAddress><ipAddressAndPort><c:address>"
        "<c:IPv4Address>127.0.0.1</c:IPv4Address></c:address>"
        f"<c:port><c:TCPPort>{port}</c:TCPPort></c:port>"
        "</ipAddressAndPort></deliveryAddress></destinationDetails>",
    )


def activate(target: str, *, delivery: str = "X2andX3", xid: uuid.UUID = XID) -> str:
    return message(
        "ActivateTaskRequest",
        f"<taskDetails><xId>{xid}</xId><targetIdentifiers><targetIdentifier>{target}"
        f"</targetIdentifier></targetIdentifiers><deliveryType>{delivery}</deliveryType>"
        f"<listOfDIDs><dId>{DID}</dId></listOfDIDs></taskDetails>",
    )


class Env:
    def __init__(self, b2bua: B2bua, mediation: Mediation, admf: Admf, tap: Interception) -> None:
        self.b2bua, self.mediation, self.admf, self.tap = b2bua, mediation, admf, tap

    async def x1(self, *messages: str) -> str:
        assert self.tap.x1_server is not None and self.tap.x1_server.address is not None
        status, answer = await self.admf.post(self.tap.x1_server.address, *messages)
        assert status == 200 and "ErrorResponse" not in answer, answer
        check(answer.encode())
        return answer

    async def provision(self, *tasks: str) -> None:
        await self.x1(create_destination(self.mediation.port), *tasks)
        await eventually(
            lambda: self.tap.links.get(DID) is not None and self.tap.links[DID].state == "connected"
        )

    async def trunk_calls_alice(self) -> tuple[Any, Any]:
        """The trunk calls alice's number (RTP from CALLER_PORT); alice's leg, unanswered."""
        b2bua = self.b2bua
        call = await b2bua.trunk.invite(
            b2bua.did_uri(ALICE_DID), sdp=simple_sdp("127.0.0.1", CALLER_PORT)
        )
        return call, await b2bua.alice.next_call()

    def x2(self) -> list[pdu.Pdu]:
        return self.mediation.of_type(pdu.X2)

    def x3(self) -> list[pdu.Pdu]:
        return self.mediation.of_type(pdu.X3)


@attrs.define
class Talk:
    """The two ends of an answered call's media on real sockets: the trunk's (CALLER_PORT)
    and alice's (CALLEE_PORT), each sending to its side of the gateway's relay."""

    caller: trio.socket.SocketType
    callee: trio.socket.SocketType
    caller_to: tuple[str, int]
    callee_to: tuple[str, int]

    async def packets(self, first: int, count: int = 10) -> None:
        """``count`` packets each way, 20 ms apart, sequence numbers from ``first``."""
        for seq in range(first, first + count):
            await self.caller.sendto(rtp(seq, 0x00, 0x1111), self.caller_to)
            await self.callee.sendto(rtp(seq, 0x80, 0x2222), self.callee_to)
            await trio.sleep(0.02)  # the pace of 20 ms packets, in virtual time

    def close(self) -> None:
        self.caller.close()
        self.callee.close()


async def answered_with_media(env: Env, *, ring: bool = False) -> tuple[Any, Talk]:
    """The trunk calls alice, she answers (ringing first if ``ring``); the call and its
    media ends."""
    call, leg_b = await env.trunk_calls_alice()
    offered = parse_sdp_untrusted(leg_b.invite.body).media[0]
    if ring:
        await leg_b.ring()
    await leg_b.answer(200, sdp=simple_sdp("127.0.0.1", CALLEE_PORT))
    final = await call.final()
    assert final.status == 200
    answered = parse_sdp_untrusted(final.body).media[0]
    talk = Talk(
        await bind(CALLER_PORT),
        await bind(CALLEE_PORT),
        ("127.0.0.1", answered.port),
        ("127.0.0.1", offered.port),
    )
    return call, talk


@pytest.fixture
def pki(tmp_path: Path) -> tuple[TestCa, Issued, Issued]:
    test_pki = TestPki(tmp_path / "pki")
    ca = test_pki.ca("X1 CA")
    return ca, ca.issue("gw-test"), ca.issue("admf-1")


async def intercept_env(
    nursery: trio.Nursery,
    tmp_path: Path,
    seed: int,
    pki: tuple[TestCa, Issued, Issued],
    *,
    numbering: dict[str, Any] | None = None,
    table: dict[str, Any] | None = None,
    plugins: tuple[tuple[str, object], ...] = (),
    tables: dict[str, Any] | None = None,
    media_table: dict[str, Any] | None = None,
) -> Env:
    """``plugins`` and their ``tables`` (name -> table) beside the intercept's: each is
    enabled too; ``media_table``: the gateway's ``[media]``."""
    ca, server, client = pki
    mediation = Mediation()
    await nursery.start(mediation.serve)
    b2bua = await start_b2bua(
        nursery,
        tmp_path,
        seed,
        plugins=[("intercept", intercept_plugin), *plugins],
        plugin_tables={
            "enable": ["intercept", *(tables or {})],
            **(tables or {}),
            "intercept": {
                "x1_listen": "127.0.0.1:0",
                "x1_certificate": str(server.certificate),
                "x1_private_key": str(server.key),
                "x1_ca": str(ca.certificate),
                "ne_identifier": "gw-test",
                "delivery_tls": False,
                "keepalive_interval": 600.0,
                **(table or {}),
            },
        },
        alice_auto=None,
        numbering=numbering,
        media_table=media_table,
    )
    tap = b2bua.gateway.plugins.media_taps.get("intercept")
    assert isinstance(tap, Interception)
    await eventually(lambda: tap.x1_server is not None and tap.x1_server.address is not None)
    return Env(b2bua, mediation, Admf(ca, client), tap)
