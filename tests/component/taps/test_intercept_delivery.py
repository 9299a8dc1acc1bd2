"""Delivery links (intercept/delivery.py) against a mediation function on 127.0.0.1, in virtual
time: PDUs queued while it is down arrive once it is up, a full queue drops and counts, idle
links send keepalives and make the connection again when one goes unanswered, TLS is mutual; a
destination that keeps failing is logged once, summarized, and once more when it works, with no
target or content in the lines, and one that drops each connection at once is backed off."""

from __future__ import annotations

import logging
import re
import ssl
import uuid
from pathlib import Path

import pytest
import trio
import trio.testing

from gateway.plugins.taps.intercept import InterceptConfig, Interception, pdu
from gateway.plugins.taps.intercept.delivery import STATES, DeliveryLink
from gateway.plugins.taps.intercept.tasks import Destination, Provisioning
from tests.component.taps.admf_reports import DID, pki, provision, x1  # noqa: F401 (pki)
from tests.component.taps.mediation import Mediation
from tests.interop.harness.pki import Issued, TestCa, TestPki
from tests.port_blocks import PortLease

XID = uuid.UUID("11111111-2222-4333-8444-555555555555")


def x2(n: int) -> bytes:
    return pdu.encode_pdu(
        pdu.Pdu(
            pdu.X2,
            pdu.FORMAT_SIP,
            pdu.TO_TARGET,
            XID,
            7,
            (pdu.sequence_attribute(n),),
            b"SIP %d" % n,
        )
    )


def link_to(
    port: int, *, queue: int = 100, keepalive: float = 30.0, context: ssl.SSLContext | None = None
) -> DeliveryLink:
    return DeliveryLink(
        Destination(uuid.uuid4(), ("127.0.0.1", port)),
        ssl_context=context,
        queue=queue,
        keepalive_interval=keepalive,
        version=5,
    )


def free_port(lease: PortLease) -> int:
    """A port nobody listens on now, where a mediation function comes up later: one of this
    process's (tests/port_blocks.py), which no other test or test run is given meanwhile (a
    port-0 listener's, closed, could be anyone's outgoing connection's by then), leased: given
    back when the test ends."""
    return lease.block(1, even=False)[0]


async def test_pdus_queued_while_the_mediation_function_is_down_arrive_in_order_once_it_is_up(
    port_lease: PortLease, nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    port = free_port(port_lease)
    link = link_to(port)
    nursery.start_soon(link.run)
    for n in range(5):
        link.send(x2(n))
    await trio.sleep(10)  # tries at 0, 1, 3, 7 s: all refused
    assert link.state == "notConnected"
    mediation = Mediation(port=port)
    await nursery.start(mediation.serve)
    await trio.sleep(20)  # the next try (15 s) connects
    assert link.state == "connected"
    # A keepalive first (the connection ends an outage once it is answered), then the PDUs.
    assert [p.pdu_type for p in mediation.received] == [pdu.KEEPALIVE] + [pdu.X2] * 5
    assert [p.sequence for p in mediation.of_type(pdu.X2)] == [0, 1, 2, 3, 4]
    assert mediation.of_type(pdu.X2)[0].payload == b"SIP 0"
    assert link.sent == 5 and link.dropped == 0


async def test_a_full_queue_drops_and_counts_and_never_waits(
    port_lease: PortLease, nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    port = free_port(port_lease)
    link = link_to(port, queue=10)
    nursery.start_soon(link.run)
    for n in range(25):
        link.send(x2(n))  # returns at once whatever the queue holds
    assert link.dropped == 15
    mediation = Mediation(port=port)
    await nursery.start(mediation.serve)
    await trio.sleep(40)
    assert [p.sequence for p in mediation.of_type(pdu.X2)] == list(range(10))


async def test_an_idle_link_sends_keepalives_and_reconnects_when_one_is_not_acknowledged(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    mediation = Mediation()
    port = await nursery.start(mediation.serve)
    link = link_to(port, keepalive=5.0)
    nursery.start_soon(link.run)
    await trio.sleep(12)
    keepalives = mediation.of_type(pdu.KEEPALIVE)
    # The connection's first (its confirmation), then at 5 s and 10 s: all acknowledged.
    assert [k.sequence for k in keepalives] == [1, 2, 3]
    assert mediation.connections == 1
    mediation.acknowledge = False
    await trio.sleep(11)  # 15 s: sent, unacknowledged; 20 s: the link gives the connection up
    assert mediation.connections == 2
    assert link.connections == 2


async def test_the_mediation_functions_keepalive_is_acknowledged(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    acknowledged: list[pdu.Pdu] = []
    done = trio.Event()

    async def mediation_that_pings(stream: trio.SocketStream) -> None:
        await stream.send_all(pdu.keepalive(41, version=5))
        reader = pdu.PduReader()
        while data := await stream.receive_some(4096):
            acknowledged.extend(reader.feed(bytes(data)))
            if any(p.pdu_type == pdu.KEEPALIVE_ACK for p in acknowledged):
                done.set()

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    nursery.start_soon(trio.serve_listeners, mediation_that_pings, listeners)
    link = link_to(listeners[0].socket.getsockname()[1])
    nursery.start_soon(link.run)
    with trio.fail_after(5):
        await done.wait()
    # Beside the keepalive the connection begins with (ours: sequence 1), the acknowledgement.
    (ack,) = [p for p in acknowledged if p.pdu_type != pdu.KEEPALIVE]
    assert (ack.pdu_type, ack.sequence) == (pdu.KEEPALIVE_ACK, 41)


async def test_closing_a_link_sends_what_it_holds_then_ends(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    mediation = Mediation()
    port = await nursery.start(mediation.serve)
    link = link_to(port)
    for n in range(3):
        link.send(x2(n))
    link.close()
    link.send(x2(3))  # after the close: dropped
    with trio.fail_after(5):
        await link.run()
    await trio.sleep(1)
    assert [p.sequence for p in mediation.copies()] == [0, 1, 2]
    assert link.dropped == 1


async def test_tls_links_are_mutually_authenticated(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    test_pki = TestPki(tmp_path)
    ca, other = test_pki.ca("Mediation CA"), test_pki.ca("Some Other CA")
    mdf, gateway = ca.issue("mdf.example.net"), ca.issue("gateway.example.net")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=ca.certificate)
    server.load_cert_chain(mdf.certificate, mdf.key)
    server.verify_mode = ssl.CERT_REQUIRED
    mediation = Mediation(ssl_context=server)
    port = await nursery.start(mediation.serve)

    def client(trusted: Path) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=trusted)
        context.load_cert_chain(gateway.certificate, gateway.key)
        return context

    good = link_to(port, context=client(ca.certificate))
    nursery.start_soon(good.run)
    good.send(x2(0))
    await trio.sleep(1)
    assert [p.payload for p in mediation.copies()] == [b"SIP 0"]
    subject = dict(item for rdn in mediation.peer_certificates[0]["subject"] for item in rdn)  # type: ignore[attr-defined]
    assert subject["commonName"] == "gateway.example.net"
    # A mediation function whose certificate our CA did not sign gets nothing.
    wrong_ca = link_to(port, context=client(other.certificate))
    nursery.start_soon(wrong_ca.run)
    wrong_ca.send(x2(1))
    await trio.sleep(5)
    assert wrong_ca.state == "notConnected"
    assert len(mediation.copies()) == 1


async def test_a_mediation_function_that_stops_reading_loses_the_connection_not_the_link(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    accepted: list[trio.SocketStream] = []

    async def never_reads(stream: trio.SocketStream) -> None:
        accepted.append(stream)
        await trio.sleep_forever()

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    nursery.start_soon(trio.serve_listeners, never_reads, listeners)
    link = link_to(listeners[0].socket.getsockname()[1], queue=400, keepalive=2.0)
    nursery.start_soon(link.run)
    big = pdu.encode_pdu(pdu.Pdu(pdu.X3, pdu.FORMAT_RTP, 2, XID, 1, (), bytes(60_000)))
    for _ in range(400):  # 24 MB: more than the socket buffers on both ends hold
        link.send(big)
    with trio.fail_after(30):
        while link.connections < 2:
            await trio.sleep(0.5)
    assert len(accepted) >= 2  # it gave the stuck connection up and made a new one


async def test_an_address_no_socket_takes_fails_that_link_only(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    link = DeliveryLink(
        Destination(uuid.uuid4(), ("fe80::1%\u2488", 5500)),
        ssl_context=None,
        queue=10,
        keepalive_interval=30.0,
        version=5,
    )
    nursery.start_soon(link.run)  # a ValueError from the resolver must not escape the link
    await trio.sleep(5)
    assert link.state == "notConnected"


async def test_a_links_fault_says_why_delivery_fails_until_it_works_again(
    port_lease: PortLease, nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    port = free_port(port_lease)
    link = link_to(port, queue=10)
    changes: list[str | None] = []
    link.on_fault = lambda link: changes.append(link.fault)
    nursery.start_soon(link.run)
    await trio.sleep(0.5)
    assert link.fault is not None and link.fault.startswith(f"cannot connect to 127.0.0.1:{port}")
    for n in range(25):
        link.send(x2(n))  # 15 dropped: the reason changes, the link was faulty already
    assert link.fault == "queue full (10 PDUs): PDUs dropped"
    mediation = Mediation(port=port)
    await nursery.start(mediation.serve)
    await trio.sleep(20)  # connected, the backlog written: working again
    assert link.state == "connected" and link.fault is None
    assert len(mediation.of_type(pdu.X2)) == 10
    assert [change is None for change in changes] == [False, True]  # one fault, one recovery
    mediation.stop()
    await trio.sleep(0.5)
    assert link.fault is not None and link.fault.startswith(("connection lost", "cannot connect"))
    assert [change is None for change in changes] == [False, True, False]


TARGET = b"sip:+4930123456@target.example"  # what the log must never name


def secret_x2(n: int) -> bytes:
    """An X2 PDU as a call's sink writes it: the matched target and the SIP message inside."""
    return pdu.encode_pdu(
        pdu.Pdu(
            pdu.X2,
            pdu.FORMAT_SIP,
            pdu.TO_TARGET,
            XID,
            7,
            (pdu.sequence_attribute(n), (pdu.MATCHED_TARGET, TARGET)),
            b"INVITE " + TARGET + b" SIP/2.0",
        )
    )


def delivery_log(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("gateway.plugins.taps.intercept")]


async def test_a_destination_that_stays_down_is_logged_once_summarized_and_once_more_when_it_works(
    port_lease: PortLease,
    nursery: trio.Nursery,
    autojump_clock: trio.abc.Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.plugins.taps.intercept")
    port = free_port(port_lease)
    link = link_to(port, queue=10)
    link.wall_clock = lambda: 1.8e9 + trio.current_time()
    nursery.start_soon(link.run)
    for n in range(12):
        link.send(secret_x2(n))  # 2 dropped: the queue holds 10
    await trio.sleep(400)  # tries at 0, 1, 3, 7, 15, 31, 61, 91 ... s: all refused
    warnings = [r.getMessage() for r in delivery_log(caplog)]
    assert len(warnings) == 2, warnings  # one line, one summary: not one per attempt
    did, where = link.destination.did, f"127.0.0.1:{port}"
    assert warnings[0].startswith(f"intercept: destination {did} ({where}) is failing: ")
    assert "cannot connect: " in warnings[0]
    assert "its PDUs wait in its queue (at most 10), and past that are dropped" in warnings[0]
    assert re.search(
        r"still failing: \d+ failed connections in the last 30\d(\.\d+)? s", warnings[1]
    )
    mediation = Mediation(port=port)
    await nursery.start(mediation.serve)
    await trio.sleep(30 + 10)  # the next try connects, and the connection holds 10 s
    records = delivery_log(caplog)
    assert len(records) == 3, [r.getMessage() for r in records]
    assert [r.levelno for r in records] == [logging.WARNING, logging.WARNING, logging.INFO]
    assert re.fullmatch(
        rf"intercept: destination {did} \({where}\) answers again, after \d+ failed connections "
        r"in [\d.]+ s; connected 10 s ago, 0 PDUs queued",
        records[2].getMessage(),
    ), records[2].getMessage()
    assert len(mediation.of_type(pdu.X2)) == 10 and link.dropped == 2
    assert TARGET.decode() not in caplog.text and "INVITE" not in caplog.text


async def test_a_mediation_function_that_drops_each_connection_is_backed_off_and_logged_once(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    # What one that refuses our certificate after a TLS 1.3 handshake looks like to us.
    caplog.set_level(logging.INFO, logger="gateway.plugins.taps.intercept")
    accepted = 0

    async def drops(stream: trio.SocketStream) -> None:
        nonlocal accepted
        accepted += 1
        await stream.aclose()
        # Without a back-off the link reconnects in a loop that lets no virtual time pass.
        assert accepted <= 12, "reconnecting in a loop"

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    nursery.start_soon(trio.serve_listeners, drops, listeners)
    link = link_to(listeners[0].socket.getsockname()[1])
    link.wall_clock = lambda: 1.8e9 + trio.current_time()
    nursery.start_soon(link.run)
    link.send(secret_x2(0))
    await trio.sleep(120)
    # Connected at 0 s and lost before its keepalive was answered: never working, so connected
    # again after 1, 2, 4, 8, 16, 30, 30, 30 s.
    assert 5 <= accepted <= 12, accepted
    records = delivery_log(caplog)
    assert [r.levelno for r in records] == [logging.WARNING], [r.getMessage() for r in records]
    assert "is failing: connection lost: " in records[0].getMessage()
    assert TARGET.decode() not in caplog.text and "INVITE" not in caplog.text


async def test_a_mediation_function_that_accepts_but_never_reads_stays_failing_until_it_answers(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    # keepalive_interval above the 10 s a connection made during an outage must hold: each
    # new connection held 10 s before its keepalive went unanswered, and the link logged
    # "answers again" and "is failing" in turn, a WARNING and an INFO a minute.
    caplog.set_level(logging.INFO, logger="gateway.plugins.taps.intercept")
    answering = Mediation()
    behaves = False

    async def mdf(stream: trio.SocketStream) -> None:
        if behaves:
            await answering._connection(stream)
        else:
            await trio.sleep_forever()  # accepted, never read, never answered

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    nursery.start_soon(trio.serve_listeners, mdf, listeners)
    link = link_to(listeners[0].socket.getsockname()[1], keepalive=30.0)
    link.wall_clock = lambda: 1.8e9 + trio.current_time()
    faults: list[str | None] = []
    link.on_fault = lambda link: faults.append(link.fault)
    nursery.start_soon(link.run)
    link.send(secret_x2(0))
    await trio.sleep(700)
    records = delivery_log(caplog)
    messages = [r.getMessage() for r in records]
    # Its first connection never answered: failing from the start, never "connected".
    assert all(r.levelno == logging.WARNING for r in records), messages
    assert "is failing: connection lost: no keepalive acknowledgement" in messages[0]
    assert all("is still failing: " in line for line in messages[1:]), messages
    assert 2 <= len(records) <= 3, messages  # one WARNING, a summary every 300 s
    assert link.fault is not None and len(faults) == 1  # faulty since, not back and forth
    behaves = True  # it reads and answers from its next connection on
    await trio.sleep(60 + 30)  # the next attempt (at most 30 s), its keepalive answered, 10 s
    records = delivery_log(caplog)[len(records) :]
    assert [r.levelno for r in records] == [logging.INFO], [r.getMessage() for r in records]
    assert " answers again, after " in records[0].getMessage()
    assert link.fault is None and [fault is None for fault in faults] == [False, True]
    assert answering.of_type(pdu.KEEPALIVE)  # it answered one
    assert TARGET.decode() not in caplog.text and "INVITE" not in caplog.text


async def test_the_links_of_a_tap_log_on_the_taps_wall_clock(
    port_lease: PortLease,
    nursery: trio.Nursery,
    autojump_clock: trio.abc.Clock,
    tmp_path: Path,
    pki: tuple[TestCa, Issued, Issued],  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The clock the plugin is given (X1 timestamps, X3 capture times) is the one its delivery
    # links log by: under autojump_clock a summary names a time the test decided.
    caplog.set_level(logging.INFO, logger="gateway.plugins.taps.intercept")
    ca, gateway, _ = pki
    config = InterceptConfig(
        x1_listen="127.0.0.1:0",
        x1_certificate=str(gateway.certificate),
        x1_private_key=str(gateway.key),
        x1_ca=str(ca.certificate),
        ne_identifier="gw-test",
        delivery_tls=False,
        state_dir=str(tmp_path / "state"),
    )
    tap = Interception(
        config, provisioning=Provisioning(None), wall_clock=lambda: 2e9 + trio.current_time()
    )
    await nursery.start(tap.run)
    x1(tap, *provision(free_port(port_lease)))  # a destination nobody listens on
    started = trio.current_time()
    await trio.sleep(400)
    link = tap.links[DID]
    assert link.failures.since is not None
    assert link.failures.since - 2e9 == pytest.approx(started, abs=1.0)
    (summary,) = [r.getMessage() for r in delivery_log(caplog) if "still failing" in r.getMessage()]
    assert " since 2033-05-18 03:33:2" in summary, summary  # 2e9 s


async def test_a_first_connection_works_only_once_the_mediation_function_answers_its_keepalive(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.plugins.taps.intercept")
    answering = Mediation()
    accepted: list[trio.SocketStream] = []
    answers = False

    async def mdf(stream: trio.SocketStream) -> None:
        accepted.append(stream)
        if answers:
            await answering._connection(stream)
        else:
            await trio.sleep_forever()  # takes TCP, never reads, never answers

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    nursery.start_soon(trio.serve_listeners, mdf, listeners)
    link = link_to(listeners[0].socket.getsockname()[1], keepalive=30.0)
    assert link.fault is not None and "not confirmed yet" in link.fault  # before it connects
    assert link.pending and link.reported_fault is None  # nothing to report to the ADMF yet
    nursery.start_soon(link.run)
    link.send(x2(0))
    await trio.sleep(20)  # connected, its keepalive unanswered
    assert len(accepted) == 1 and link.state == "confirming"
    assert link.fault == (
        f"connected to 127.0.0.1:{listeners[0].socket.getsockname()[1]}: not confirmed yet "
        "(the mediation function has not answered a keepalive on this connection)"
    )
    assert link.reported_fault is None
    assert not delivery_log(caplog)  # not "connected"
    await trio.sleep(10.5)  # 30 s: the keepalive went unanswered
    assert link.fault == "connection lost: no keepalive acknowledgement"
    assert not link.pending and link.reported_fault == link.fault
    (failing,) = delivery_log(caplog)
    assert failing.levelno == logging.WARNING
    assert "is failing: connection lost: no keepalive acknowledgement" in failing.getMessage()
    answers = True
    await trio.sleep(20)  # the next attempt (at 31 s) answers; in an outage: held 10 s too
    assert link.state == "connected" and link.fault is None
    assert " answers again, after 1 failed connections" in delivery_log(caplog)[-1].getMessage()
    assert [p.payload for p in answering.copies()] == [b"SIP 0"]


async def test_a_links_state_and_fault_never_contradict_each_other(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    # "connected" only once the mediation function answered (and an outage held 10 s), and
    # no fault then; every other state has a fault saying why delivery does not work.
    seen: list[tuple[str, str | None]] = []

    async def watch(link: DeliveryLink) -> None:
        while True:
            seen.append((link.state, link.fault))
            await trio.sleep(0.25)

    mediation = Mediation()
    port = await nursery.start(mediation.serve)
    link = link_to(port, keepalive=30.0)
    nursery.start_soon(watch, link)
    nursery.start_soon(link.run)
    await trio.sleep(5)
    assert link.state == "connected" and link.fault is None
    mediation.stop()
    await trio.sleep(10)  # lost, refused again and again
    assert link.state != "connected" and link.fault is not None
    again = Mediation(port=port)
    await nursery.start(again.serve)
    await trio.sleep(20)  # reconnected, answered, held 10 s
    assert link.state == "connected" and link.fault is None
    contradictions = [
        (state, fault) for state, fault in seen if (state == "connected") != (fault is None)
    ]
    assert contradictions == []
    states = {state for state, _ in seen}
    assert states <= set(STATES) and {"confirming", "connected", "notConnected"} <= states


async def test_a_closed_link_whose_mediation_function_never_answers_ends(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    # Removed by X1 while its mediation function takes TCP and never answers: the queue is not
    # written to a connection nobody confirmed, and the link does not try again for ever.
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    nursery.start_soon(trio.serve_listeners, lambda stream: trio.sleep_forever(), listeners)
    link = link_to(listeners[0].socket.getsockname()[1], keepalive=5.0)
    for n in range(3):
        link.send(x2(n))
    link.close()
    with trio.fail_after(10):
        await link.run()
    assert link.connections == 1 and link.sent == 0 and link.dropped == 3


async def test_a_pdu_whose_write_the_connection_failed_is_counted_dropped_not_sent(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    # TCP has no per-PDU acknowledgement: a PDU taken off the queue and then not written (the
    # connection broke under it) is lost. It was counted sent before its write.
    link = link_to(9, keepalive=2.0)
    ours, theirs = trio.testing.memory_stream_pair()
    connects = 0

    async def connect(host: str, port: int) -> trio.abc.Stream:
        nonlocal connects
        connects += 1
        if connects > 1:
            await trio.sleep_forever()  # one connection is all this test needs
        return ours

    link._connect = connect  # type: ignore[method-assign]
    nursery.start_soon(link.run)
    reader = pdu.PduReader(max_payload_length=0)
    keepalives: list[pdu.Pdu] = []
    while not keepalives:
        keepalives += reader.feed(bytes(await theirs.receive_some(4096)))
    assert keepalives[0].pdu_type == pdu.KEEPALIVE
    ack = pdu.keepalive(keepalives[0].sequence or 0, version=5, acknowledgement=True)
    await theirs.send_all(ack)
    while link.state != "connected":
        await trio.sleep(0.1)

    async def broken(data: bytes) -> None:
        raise trio.BrokenResourceError("connection reset")  # the next write breaks

    ours.send_stream.send_all = broken  # type: ignore[method-assign]
    link.send(pdu.encode_pdu(pdu.Pdu(pdu.X3, pdu.FORMAT_RTP, 2, XID, 1, (), b"rtp")))
    while link.state == "connected":
        await trio.sleep(0.1)
    assert (link.sent, link.dropped) == (0, 1)
