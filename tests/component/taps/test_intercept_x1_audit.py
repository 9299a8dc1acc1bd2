"""An ADMF's audit of the point of interception after it restarted (TS 103 221-1 §6.4.6-6.4.8):
the start-up report tells the ADMF the element restarted, ListAllDetails answers every XID and
DID the store restored, GetAllTaskDetails / GetAllDestinationDetails their details and state,
and the ADMF reconciles what differs from its own records with ordinary requests. Every
request and answer is checked against the XSD's structure (x1() in the reports' test)."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import trio

from gateway.plugins.taps.intercept import InterceptConfig, Interception
from tests.component.taps.admf import FakeAdmf
from tests.component.taps.admf_reports import (
    DID,
    NE,
    XID,
    admf_context,
    message,
    pki,  # noqa: F401 - the fixture
    provision,
    until,
    x1,
)
from tests.component.taps.mediation import Mediation
from tests.interop.harness.pki import Issued, TestCa

STALE = uuid.UUID("33333333-4444-4555-8666-777777777777")


def config(
    tmp_path: Path, issued: tuple[TestCa, Issued, Issued], admf_port: int
) -> InterceptConfig:
    ca, gateway, _ = issued
    return InterceptConfig(
        x1_listen="127.0.0.1:0",
        x1_certificate=str(gateway.certificate),
        x1_private_key=str(gateway.key),
        x1_ca=str(ca.certificate),
        ne_identifier="gw-test",
        delivery_tls=False,
        keepalive_interval=600.0,
        report_url=f"https://127.0.0.1:{admf_port}/X1",
        report_admf_identifier="admf-1",
        state_dir=str(tmp_path / "state"),  # the store survives the restart
    )


def listed(answer: str, element: str) -> list[str]:
    """The identifiers in ListAllDetailsResponse's ``element`` (ListOfXIDs, ListOfDIDs)."""
    found = re.search(rf"<{element}>(.*?)</{element}>|<{element} ?/>", answer)
    assert found is not None, answer
    return re.findall(r"<[xd]Id>([0-9a-f-]+)</[xd]Id>", found.group(1) or "")


async def test_an_admf_audits_and_reconciles_the_element_after_it_restarted(
    nursery: trio.Nursery,
    autojump_clock: trio.abc.Clock,
    tmp_path: Path,
    pki: tuple[TestCa, Issued, Issued],  # noqa: F811
) -> None:
    admf = FakeAdmf(admf_context(pki))
    await nursery.start(admf.serve)
    mediation = Mediation()
    port = await nursery.start(mediation.serve)

    async with trio.open_nursery() as first_life:
        before = Interception(config(tmp_path, pki, admf.port))
        await first_life.start(before.run)
        x1(before, *provision(port))
        stale = provision(port)[1].replace(str(XID), str(STALE))
        x1(before, stale)  # a task the ADMF deactivates while the element is down
        await until(lambda: before.links[DID].state == "connected")
        first_life.cancel_scope.cancel()  # the element stops
    before.provisioning.close()

    after = Interception(config(tmp_path, pki, admf.port))
    await nursery.start(after.run)
    # What makes the ADMF audit: the start-up Warning, with what the store restored.
    await until(lambda: len(admf.of(NE)) == 2)
    assert admf.of(NE) == ["Warning", "Warning"]
    assert "2 task(s) and 1 destination(s) restored" in admf.reports[-1].fields["description"]

    inventory = x1(after, message("ListAllDetailsRequest", ""))
    assert sorted(listed(inventory, "ListOfXIDs")) == sorted([str(XID), str(STALE)])
    assert listed(inventory, "ListOfDIDs") == [str(DID)]
    assert "ListOfGenericObjectIDs" not in inventory  # no Generic Objects here

    await until(lambda: after.links[DID].state == "connected")  # delivery resumed by itself
    destinations = x1(after, message("GetAllDestinationDetailsRequest", ""))
    assert destinations.count("<destinationResponseDetails>") == 1
    assert f"<dId>{DID}</dId>" in destinations
    assert f"<c:TCPPort>{port}</c:TCPPort>" in destinations
    assert "<destinationDeliveryStatus>activeAndWorking</destinationDeliveryStatus>" in (
        destinations
    )
    tasks = x1(after, message("GetAllTaskDetailsRequest", ""))
    assert tasks.count("<taskResponseDetails>") == 2
    assert tasks.count("<sipUri>sip:alice@example.com</sipUri>") == 2
    assert tasks.count("<provisioningStatus>complete</provisioningStatus>") == 2

    # The ADMF's records say STALE was deactivated while the element was down: it says so.
    x1(after, message("DeactivateTaskRequest", f"<xId>{STALE}</xId>"))
    inventory = x1(after, message("ListAllDetailsRequest", ""))
    assert listed(inventory, "ListOfXIDs") == [str(XID)]
    everything = x1(after, message("GetAllDetailsRequest", ""))
    assert everything.count("<taskResponseDetails>") == 1 and "<neStatus>OK</neStatus>" in (
        everything
    )
