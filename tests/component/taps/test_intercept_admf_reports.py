"""Reports to the ADMF (intercept/reports.py) from a running tap, in virtual time: a fake ADMF
over mutual TLS and a mediation function on 127.0.0.1.

- a mediation function that goes away and comes back: one fault and one all-clear report per
  scope (destination, task, element), and GetDestinationDetails says deliveryFault meanwhile;
- one that flaps within ``report_interval``: still one fault and one all-clear;
- an ADMF that is unreachable: tried again with backoff, delivery goes on, and the reports
  arrive once it is up; one that refuses: logged on the plugin's logger, not sent again;
- an ADMF unreachable for minutes: one WARNING saying what happens to the reports meanwhile, a
  summary every 300 s, one INFO when it answers (FailureLog), no target in any line; a fault
  that cleared meanwhile is never reported.
"""

from __future__ import annotations

import logging
import re
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from gateway.plugins.taps.intercept import InterceptConfig, Interception, pdu
from gateway.plugins.taps.intercept.tasks import Provisioning
from tests.component.taps.admf import FakeAdmf
from tests.component.taps.admf_reports import (
    DESTINATION,
    DID,
    NE,
    TASK,
    XID,
    admf_context,
    message,
    pki,  # noqa: F401 (the fixture)
    provision,
    until,
    x1,
)
from tests.component.taps.mediation import Mediation
from tests.interop.harness.pki import Issued, TestCa, TestPki


def delivery_status(tap: Interception) -> str:
    answer = x1(tap, message("GetDestinationDetailsRequest", f"<dId>{DID}</dId>"))
    start = answer.index("<destinationDeliveryStatus>") + len("<destinationDeliveryStatus>")
    return answer[start : answer.index("<", start)]


def tap_config(
    tmp_path: Path,
    pki: tuple[TestCa, Issued, Issued],  # noqa: F811
    admf_port: int,
    **table: Any,
) -> InterceptConfig:
    """The tap's table: X1 on a free port with the PKI's certificates, plain TCP to mediation
    functions, reports to the fake ADMF at ``admf_port``, state in ``tmp_path``; ``table``
    replaces any of these."""
    ca, gateway, _ = pki
    return InterceptConfig(
        **{
            "x1_listen": "127.0.0.1:0",
            "x1_certificate": str(gateway.certificate),
            "x1_private_key": str(gateway.key),
            "x1_ca": str(ca.certificate),
            "ne_identifier": "gw-test",
            "delivery_tls": False,
            "report_url": f"https://127.0.0.1:{admf_port}/X1",
            "report_admf_identifier": "admf-1",
            "state_dir": str(tmp_path / "state"),
            **table,
        }
    )


async def start_tap(
    nursery: trio.Nursery,
    tmp_path: Path,
    pki: tuple[TestCa, Issued, Issued],  # noqa: F811
    admf_port: int,
    wall_clock: Callable[[], float] | None = None,
    **table: Any,
) -> Interception:
    config = tap_config(tmp_path, pki, admf_port, **{"keepalive_interval": 600.0, **table})
    if wall_clock is None:
        tap = Interception(config, provisioning=Provisioning(None))
    else:
        tap = Interception(config, provisioning=Provisioning(None), wall_clock=wall_clock)
    await nursery.start(tap.run)
    return tap


async def test_a_mediation_function_that_goes_away_and_comes_back_is_reported_once_each_way(
    nursery: trio.Nursery,
    autojump_clock: trio.abc.Clock,
    tmp_path: Path,
    pki: tuple[TestCa, Issued, Issued],  # noqa: F811
) -> None:
    admf = FakeAdmf(admf_context(pki))
    await nursery.start(admf.serve)
    mediation = Mediation()
    port = await nursery.start(mediation.serve)
    tap = await start_tap(nursery, tmp_path, pki, admf.port)
    await until(lambda: admf.of(NE) == ["Warning"])  # the start-up report
    assert "started with no task or destination stored" in admf.reports[0].fields["description"]
    subject = dict(item for rdn in admf.peer_certificates[0]["subject"] for item in rdn)  # type: ignore[attr-defined]
    assert subject["commonName"] == "gw-test"  # our client certificate (mutual TLS)
    x1(tap, *provision(port))
    await until(lambda: tap.links[DID].state == "connected")
    assert delivery_status(tap) == "activeAndWorking"
    await trio.sleep(60)
    assert len(admf.reports) == 1  # a working destination is not reported

    mediation.stop()
    await until(lambda: admf.of(DESTINATION) == ["NonTerminatingFault"])
    fault = next(r for r in admf.reports if r.kind == DESTINATION)
    assert fault.fields["dId"] == str(DID)
    assert fault.fields["destinationIssueErrorCode"] == "9020"
    assert fault.fields["destinationIssueDetails"].startswith(("connection lost", "cannot connect"))
    assert delivery_status(tap) == "deliveryFault"  # what was reported is what X1 answers
    await until(lambda: admf.of(TASK, str(XID)) == ["NonTerminatingFault"])
    await until(lambda: admf.of(NE) == ["Warning", "FaultReport"])
    assert "<neStatus>Faults</neStatus>" in x1(tap, message("GetNEStatusRequest", ""))
    link = tap.links[DID]
    link.send(b"queued while the MDF is away")  # delivery goes on queueing

    again = Mediation(port=port)
    await nursery.start(again.serve)
    await until(lambda: link.state == "confirming")
    # Faulty still: the outage ends once the connection answered a keepalive and held 10 s;
    # the link's state says so too (confirming, not connected), and so does the fault X1 shows.
    assert delivery_status(tap) == "deliveryFault"
    assert "; connected again to 127.0.0.1:" in delivery_faults(tap)
    assert ": not confirmed yet (the mediation function has not answered" in delivery_faults(tap)
    await until(lambda: delivery_status(tap) == "activeAndWorking")
    assert link.state == "connected"
    await until(lambda: admf.of(DESTINATION) == ["NonTerminatingFault", "AllClear"])
    await until(lambda: admf.of(TASK) == ["NonTerminatingFault", "AllClear"])
    await until(lambda: admf.of(NE) == ["Warning", "FaultReport", "FaultCleared"])
    await trio.sleep(300)
    assert len(admf.reports) == 7  # nothing more while it works
    assert "<neStatus>OK</neStatus>" in x1(tap, message("GetNEStatusRequest", ""))


async def test_a_flapping_mediation_function_is_reported_faulty_once_and_clear_once(
    nursery: trio.Nursery,
    autojump_clock: trio.abc.Clock,
    tmp_path: Path,
    pki: tuple[TestCa, Issued, Issued],  # noqa: F811
) -> None:
    admf = FakeAdmf(admf_context(pki))
    await nursery.start(admf.serve)
    mediation = Mediation()
    port = await nursery.start(mediation.serve)
    tap = await start_tap(nursery, tmp_path, pki, admf.port, report_interval=120.0)
    x1(tap, *provision(port))
    await until(lambda: tap.links[DID].state == "connected")
    link = tap.links[DID]
    for _ in range(3):  # down and up three times within the interval
        connections = link.connections
        mediation.stop()
        await until(lambda: link.fault is not None)
        mediation = Mediation(port=port)
        await nursery.start(mediation.serve)
        await until(lambda before=connections: link.connections > before)
    assert admf.of(DESTINATION) == ["NonTerminatingFault"]
    await trio.sleep(200)
    assert admf.of(DESTINATION) == ["NonTerminatingFault", "AllClear"]


async def test_an_unreachable_admf_is_tried_again_and_delivery_goes_on(
    nursery: trio.Nursery,
    autojump_clock: trio.abc.Clock,
    tmp_path: Path,
    pki: tuple[TestCa, Issued, Issued],  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    closed = FakeAdmf(admf_context(pki))
    admf_port = await nursery.start(closed.serve)
    closed.stop()  # nobody listens there now
    mediation = Mediation()
    port = await nursery.start(mediation.serve)
    tap = await start_tap(nursery, tmp_path, pki, admf_port)
    assert tap.reports is not None
    x1(tap, *provision(port))
    await until(lambda: tap.links[DID].state == "connected")
    await trio.sleep(40)
    # Tried at 0, 1, 3, 7, 15, 31 s (backoff 1, 2, 4 ... 60 s), never acknowledged.
    assert 5 <= tap.reports.attempts <= 7 and tap.reports.sent == 0
    link = tap.links[DID]
    link.send(pdu.keepalive(7, version=5))  # a PDU of a call: it does not wait for the ADMF
    await until(lambda: any(p.sequence == 7 for p in mediation.of_type(pdu.KEEPALIVE)))
    attempts = tap.reports.attempts

    admf = FakeAdmf(admf_context(pki), port=admf_port)
    await nursery.start(admf.serve)
    await until(lambda: admf.of(NE) == ["Warning"], 120)
    assert tap.reports.attempts == attempts + 1
    assert "started with no task" in admf.reports[0].fields["description"]
    unreachable = [r for r in caplog.records if "cannot report a " in r.getMessage()]
    assert unreachable and all(
        r.name == "gateway.plugins.taps.intercept.reports" for r in unreachable
    )
    assert len(unreachable) == 1  # the first failure; a summary would come after 300 s


REPORTS_LOG = "gateway.plugins.taps.intercept.reports"


async def test_an_admf_unreachable_for_minutes_is_logged_once_summarized_and_once_on_its_return(
    nursery: trio.Nursery,
    autojump_clock: trio.abc.Clock,
    tmp_path: Path,
    pki: tuple[TestCa, Issued, Issued],  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="gateway.plugins.taps.intercept")
    started = trio.current_time()
    closed = FakeAdmf(admf_context(pki))
    admf_port = await nursery.start(closed.serve)
    closed.stop()  # nobody listens there now
    mediation = Mediation()
    port = await nursery.start(mediation.serve)
    tap = await start_tap(
        nursery, tmp_path, pki, admf_port, wall_clock=lambda: 1.8e9 + trio.current_time()
    )
    x1(tap, *provision(port))  # a task on sip:alice@example.com: never in the log
    link = tap.links[DID]
    await until(lambda: link.state == "connected")
    # The mediation function goes away and comes back while the ADMF is unreachable.
    await trio.sleep(10)
    mediation.stop()
    await until(lambda: link.fault is not None)
    await trio.sleep(60)
    again = Mediation(port=port)
    await nursery.start(again.serve)
    await until(lambda: link.state == "connected" and link.fault is None)
    await trio.sleep(started + 400 - trio.current_time())
    # Tried at 0, 1, 3, 7, 15, 31, 63, 123 ... s (back-off 1, 2, 4 ... 60 s): one line when
    # it started, one summary once 300 s passed, not a line per attempt.
    lines = [r for r in caplog.records if r.name == REPORTS_LOG]
    assert [r.levelno for r in lines] == [logging.WARNING, logging.WARNING], [
        r.getMessage() for r in lines
    ]
    where = f"127.0.0.1:{admf_port}"
    first, summary = (r.getMessage() for r in lines)
    assert first.startswith(
        f"intercept: the ADMF at {where} is failing: cannot report a ReportNEIssue: "
        # Why in the system's words only (logs.system_error_text), never the socket error's
        # text: trio's "all attempts to connect to ... failed" names no errno.
        "OSError (ECONNREFUSED (Connection refused)); "
    ), first
    # What happens to the reports meanwhile.
    assert "reports are not queued: the state of each destination, task and the element" in first
    assert "a fault that cleared meanwhile is never reported" in first
    assert "trying again after 1, 2, 4 ... 60 s; interception and delivery go on" in first
    assert re.match(
        rf"intercept: the ADMF at {re.escape(where)} is still failing: \d+ failed report "
        r"attempts in the last 3\d\d(\.\d+)? s, \d+ since 2027-01-15 \d\d:\d\d:\d\d UTC; the last: "
        "cannot report a ReportNEIssue: ",
        summary,
    ), summary

    admf = FakeAdmf(admf_context(pki), port=admf_port)
    await nursery.start(admf.serve)
    await until(lambda: admf.of(NE) == ["Warning"], 120)
    lines = [r for r in caplog.records if r.name == REPORTS_LOG and r.levelno >= logging.INFO]
    assert [r.levelno for r in lines] == [logging.WARNING, logging.WARNING, logging.INFO]
    assert re.fullmatch(
        rf"intercept: the ADMF at {re.escape(where)} answers again, after \d+ failed report "
        r"attempts in [\d.]+ s; it acknowledged a ReportNEIssue; any other report due follows",
        lines[2].getMessage(),
    ), lines[2].getMessage()
    await trio.sleep(120)
    # The destination's fault cleared before the ADMF could be told: never reported.
    assert [r.kind for r in admf.reports] == [NE]
    assert "alice" not in caplog.text and "sip:" not in caplog.text


async def test_a_report_the_admf_refuses_is_logged_on_the_plugins_logger_and_not_sent_again(
    nursery: trio.Nursery,
    autojump_clock: trio.abc.Clock,
    tmp_path: Path,
    pki: tuple[TestCa, Issued, Issued],  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    admf = FakeAdmf(admf_context(pki), refuse=True)
    await nursery.start(admf.serve)
    tap = await start_tap(nursery, tmp_path, pki, admf.port)
    assert tap.reports is not None
    await until(lambda: tap.reports is not None and tap.reports.refused == 1)
    await trio.sleep(300)
    assert len(admf.reports) == 1 and tap.reports.attempts == 1
    (refusal,) = [r for r in caplog.records if "refused" in r.getMessage()]
    assert refusal.name == "gateway.plugins.taps.intercept.reports"
    assert "1080 'not now'" in refusal.getMessage()
    assert not [
        r
        for r in caplog.records
        if not r.name.startswith("gateway.plugins.taps.intercept") and "report" in r.getMessage()
    ]


async def test_an_admf_that_does_not_take_our_ne_identifier_is_told_apart_in_the_log(
    nursery: trio.Nursery,
    autojump_clock: trio.abc.Clock,
    tmp_path: Path,
    pki: tuple[TestCa, Issued, Issued],  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An ADMF that binds another NE identifier to our client certificate (TS 103 221-1
    §8.2.4) answers every report 1050: the plugin's log line says which keys to compare."""
    caplog.set_level(logging.DEBUG)
    admf = FakeAdmf(admf_context(pki), refuse=True, error_code=1050)
    await nursery.start(admf.serve)
    tap = await start_tap(nursery, tmp_path, pki, admf.port, ne_identifier="gw-renamed")
    await until(lambda: tap.reports is not None and tap.reports.refused == 1)
    (report,) = admf.reports
    assert report.fields["neIdentifier"] == "gw-renamed"  # who the certificate is not
    (refusal,) = [r for r in caplog.records if "refused" in r.getMessage()]
    assert refusal.name == "gateway.plugins.taps.intercept.reports"
    assert refusal.getMessage().startswith(
        "intercept: the ADMF refused a ReportNEIssue: 1050 'not now' (the ADMF does not take "
        "our neIdentifier 'gw-renamed' from this client: compare [plugins.intercept] "
        "ne_identifier with the NE identifier the ADMF has for report_certificate"
    )


async def test_an_admf_whose_certificate_our_ca_did_not_issue_gets_no_report(
    nursery: trio.Nursery,
    autojump_clock: trio.abc.Clock,
    tmp_path: Path,
    pki: tuple[TestCa, Issued, Issued],  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger=REPORTS_LOG)
    ca, _, _ = pki
    impostor = TestPki(tmp_path / "other").ca("Other CA").issue("admf-1")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=ca.certificate)
    context.load_cert_chain(impostor.certificate, impostor.key)
    admf = FakeAdmf(context)
    await nursery.start(admf.serve)
    tap = await start_tap(nursery, tmp_path, pki, admf.port)
    assert tap.reports is not None
    await trio.sleep(20)
    assert tap.reports.attempts >= 3  # refused at our end of the handshake, tried again
    assert admf.reports == [] and tap.reports.sent == 0
    # OpenSSL's reason and verify text, not the exception's.
    (line,) = [r.getMessage() for r in caplog.records if r.name == REPORTS_LOG]
    assert (
        "is failing: cannot report a ReportNEIssue: trio.BrokenResourceError (SSLError "
        "CERTIFICATE_VERIFY_FAILED (unable to get local issuer certificate)); "
    ) in line, line


async def test_a_restart_is_reported_with_what_the_store_restored(
    nursery: trio.Nursery,
    autojump_clock: trio.abc.Clock,
    tmp_path: Path,
    pki: tuple[TestCa, Issued, Issued],  # noqa: F811
) -> None:
    admf = FakeAdmf(admf_context(pki))
    await nursery.start(admf.serve)
    mediation = Mediation()
    port = await nursery.start(mediation.serve)
    config = tap_config(tmp_path, pki, admf.port)  # its state kept in tasks.sqlite
    for _ in range(2):  # the first run is provisioned, the second restores it
        tap = Interception(config)
        reports = tap.reports
        assert reports is not None
        with trio.CancelScope() as running:
            async with trio.open_nursery() as inner:
                await inner.start(tap.run)
                if not tap.provisioning.tasks:
                    x1(tap, *provision(port))
                await until(lambda reports=reports: reports.sent >= 1)
                running.cancel()
        tap.provisioning.close()
    first, second = (r.fields["description"] for r in admf.reports if r.kind == NE)
    assert first == "started with no task or destination stored"
    assert second.startswith("started: 1 task(s) and 1 destination(s) restored from the store")
    assert [r.kind for r in admf.reports] == [NE, NE]  # the restored destination works


def delivery_faults(tap: Interception) -> str:
    answer = x1(tap, message("GetDestinationDetailsRequest", f"<dId>{DID}</dId>"))
    return answer[answer.index("<listOfFaults") : answer.index("</destinationStatus>")]


async def test_a_first_connection_the_mediation_function_never_answers_is_never_reported_working(
    nursery: trio.Nursery,
    autojump_clock: trio.abc.Clock,
    tmp_path: Path,
    pki: tuple[TestCa, Issued, Issued],  # noqa: F811
) -> None:
    # It accepts TCP and never reads or answers: the link's first connection is not confirmed,
    # so X1 never says it works; the ADMF is told nothing while it is being confirmed, and a
    # fault once its keepalive went unanswered (keepalive_interval), not later.
    admf = FakeAdmf(admf_context(pki))
    await nursery.start(admf.serve)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    nursery.start_soon(trio.serve_listeners, lambda stream: trio.sleep_forever(), listeners)
    tap = await start_tap(nursery, tmp_path, pki, admf.port, keepalive_interval=60.0)
    await until(lambda: admf.of(NE) == ["Warning"])
    x1(tap, *provision(listeners[0].socket.getsockname()[1]))
    link = tap.links[DID]
    await until(lambda: link.connections == 1)
    await trio.sleep(30)
    assert delivery_status(tap) == "deliveryFault"
    assert "not confirmed yet (the mediation function has not answered a keepalive" in (
        delivery_faults(tap)
    )
    # Nothing has failed yet: the element is not faulty (GetNEStatus and the reports agree).
    assert ne_status(tap) == "<neStatus>OK</neStatus><listOfFaults/>"
    assert admf.of(DESTINATION) == [] and admf.of(TASK) == []  # nothing to report yet
    assert link.state == "confirming"
    await until(lambda: admf.of(DESTINATION) == ["NonTerminatingFault"], 60)
    fault = next(r for r in admf.reports if r.kind == DESTINATION)
    details = fault.fields["destinationIssueDetails"]
    assert details == "connection lost: no keepalive acknowledgement"
    assert trio.current_time() < 120  # within a keepalive interval of its connection
    assert delivery_status(tap) == "deliveryFault"
    await until(lambda: admf.of(TASK) == ["NonTerminatingFault"])
    # Its confirmation failed (the keepalive's deadline): now the element is faulty.
    assert ne_status(tap).startswith("<neStatus>Faults</neStatus>")
    assert "no mediation function is reachable" in ne_status(tap)


def ne_status(tap: Interception) -> str:
    answer = x1(tap, message("GetNEStatusRequest", ""))
    start = answer.index("<neStatusDetails>") + len("<neStatusDetails>")
    return answer[start : answer.index("</neStatusDetails>")]


async def restarted_with_a_slow_mediation_function(
    nursery: trio.Nursery,
    tmp_path: Path,
    pki: tuple[TestCa, Issued, Issued],  # noqa: F811
    ack_delay: float = 40.0,
) -> tuple[FakeAdmf, Interception]:
    """A tap provisioned with one task and its destination, stopped and started again from its
    store (a restart), whose mediation function answers the first keepalive ``ack_delay``
    seconds late: the link stays confirming meanwhile (the keepalive interval is 60 s)."""
    admf = FakeAdmf(admf_context(pki))
    await nursery.start(admf.serve)
    mediation = Mediation()
    port = await nursery.start(mediation.serve)
    # Its state kept in tasks.sqlite, for the restart.
    config = tap_config(tmp_path, pki, admf.port, keepalive_interval=60.0)
    first = Interception(config)
    with trio.CancelScope() as running:
        async with trio.open_nursery() as inner:
            await inner.start(first.run)
            x1(first, *provision(port))
            await until(lambda: first.links[DID].state == "connected")
            running.cancel()
    first.provisioning.close()

    mediation.ack_delay = ack_delay
    tap = Interception(config)
    await nursery.start(tap.run)
    return admf, tap


async def test_get_ne_status_at_start_up_is_ok_while_the_destinations_are_being_confirmed(
    nursery: trio.Nursery,
    autojump_clock: trio.abc.Clock,
    tmp_path: Path,
    pki: tuple[TestCa, Issued, Issued],  # noqa: F811
) -> None:
    # A restart with a destination stored whose mediation function answers the first keepalive
    # late (a slow MDF, a long round trip): an ADMF polling GetNEStatus meanwhile must not read
    # Faults, as no destination has failed; the destination itself says it is not confirmed.
    admf, tap = await restarted_with_a_slow_mediation_function(nursery, tmp_path, pki)
    link = tap.links[DID]  # restored from the store
    assert link.state in ("connecting", "confirming")
    assert ne_status(tap) == "<neStatus>OK</neStatus><listOfFaults/>"
    await until(lambda: link.state == "confirming")
    await trio.sleep(30)  # its acknowledgement is 40 s away
    assert link.state == "confirming"
    assert delivery_status(tap) == "deliveryFault"
    assert "not confirmed yet" in delivery_faults(tap)
    assert ne_status(tap) == "<neStatus>OK</neStatus><listOfFaults/>"
    await until(lambda: link.state == "connected", 30)
    assert ne_status(tap) == "<neStatus>OK</neStatus><listOfFaults/>"
    assert delivery_status(tap) == "activeAndWorking"
    assert admf.of(DESTINATION) == [] and admf.of(TASK) == []  # never faulty: nothing reported
    tap.provisioning.close()


def task_status(tap: Interception, kind: str = "GetTaskDetailsRequest") -> str:
    """The task's ``taskStatus`` in the answer to ``kind`` (one naming the task, or one of the
    GetAll* requests that list every task)."""
    body = f"<xId>{XID}</xId>" if kind == "GetTaskDetailsRequest" else ""
    answer = x1(tap, message(kind, body))
    assert f"<xId>{XID}</xId>" in answer, answer  # the task is listed
    start = answer.index("<taskStatus>") + len("<taskStatus>")
    return answer[start : answer.index("</taskStatus>", start)]


async def test_get_task_details_at_start_up_lists_the_task_without_a_fault_while_confirming(
    nursery: trio.Nursery,
    autojump_clock: trio.abc.Clock,
    tmp_path: Path,
    pki: tuple[TestCa, Issued, Issued],  # noqa: F811
) -> None:
    # An ADMF auditing the element right after its restart (docs/lawful_intercept.md: the
    # start-up report invites it) asks for the tasks while their destinations are still being
    # confirmed: nothing has failed, so the tasks carry no fault, as GetNEStatus says OK (the
    # destination's own status says "not confirmed yet"). A fault comes once the confirmation
    # fails, the moment the reports say so too.
    admf, tap = await restarted_with_a_slow_mediation_function(
        nursery, tmp_path, pki, ack_delay=1000.0
    )
    link = tap.links[DID]
    assert link.state in ("connecting", "confirming")
    no_fault = "<provisioningStatus>complete</provisioningStatus><listOfFaults/>"
    kinds = ("GetTaskDetailsRequest", "GetAllTaskDetailsRequest", "GetAllDetailsRequest")
    for kind in kinds:
        assert task_status(tap, kind) == no_fault
    await until(lambda: link.state == "confirming")
    await trio.sleep(30)
    assert link.state == "confirming"
    assert "not confirmed yet" in delivery_faults(tap)
    for kind in kinds:
        assert task_status(tap, kind) == no_fault
    # The keepalive's deadline passes unanswered: now the task has a fault, as reported.
    await until(lambda: admf.of(TASK) == ["NonTerminatingFault"], 120)
    for kind in kinds:
        status = task_status(tap, kind)
        assert "<unresolvedFault>" in status
        assert "no destination of the task is delivering" in status
        assert "no keepalive acknowledgement" in status
    tap.provisioning.close()
