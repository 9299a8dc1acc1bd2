"""A subscriber told when ``voipgw run`` stops (RFC 6665 §4.2.2), against sipp: bob's phone (a
sipp, digest-authenticated) watches alice's presence; alice registered (a sipp that then exits)
and never publishes, so the first NOTIFY says ``open`` from her registration ([presence]
from_registration, on by default). SIGTERM, with or without ``[gateway] drain_timeout``: the last
NOTIFY the watcher gets is ``terminated;reason=deactivated`` (with a drain, as it starts), and
the gateway still exits 0 at once (no call to wait for).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.interop.harness import GatewayProcess, run_sipp_uac
from tests.interop.harness.ports import free_port_pair
from tests.interop.sipp_calls import ACCOUNTS, BOB, register

pytestmark = pytest.mark.interop

SCENARIO = "calls/uac_subscribe_presence_stop.xml"


def wait_for_first_notify(workdir: Path, timeout: float = 10.0) -> None:
    """Poll the watcher's message trace until it has answered its first NOTIFY."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for trace in workdir.glob("sipp-*-uac-uac_subscribe_presence_stop/messages.log"):
            text = trace.read_text(errors="replace")
            if "NOTIFY sip:" in text and text.count("SIP/2.0 200 OK") >= 2:
                return  # the gateway's 200 to the SUBSCRIBE, then sipp's to the NOTIFY
        time.sleep(0.05)
    raise AssertionError("the watcher got no NOTIFY")


@pytest.mark.parametrize("drain_timeout", [0, 30], ids=["stop", "drain"])
def test_a_watcher_gets_deactivated_when_the_gateway_stops(
    tmp_path: Path, drain_timeout: int
) -> None:
    gw = GatewayProcess(
        tmp_path,
        accounts=ACCOUNTS,
        settings={"gateway": {"drain_timeout": drain_timeout}},
        extra_toml='[presence]\nallow = "all-accounts"\n',
    )
    with gw, ThreadPoolExecutor(max_workers=1) as pool:
        register(gw, tmp_path, "udp", free_port_pair())
        watching = pool.submit(
            run_sipp_uac,
            SCENARIO,
            gw.address,
            workdir=tmp_path,
            service="alice",
            caller="bob",
            auth=BOB,
            timeout=20,
        )
        gw.wait_for_log(r"bob watches the presence of alice for 600 s")
        wait_for_first_notify(tmp_path)
        stopping = time.monotonic()
        assert gw.stop() == 0
        assert time.monotonic() - stopping < 5  # the stop waits at most 2 s for the answers
        watcher = watching.result(timeout=30)
    watcher.check()
    notifies = watcher.received("NOTIFY ")
    assert len(notifies) == 2, watcher.describe()
    assert "<basic>open</basic>" in notifies[0]
    assert "Subscription-State: terminated;reason=deactivated\n" in notifies[1]
    log = gw.log_text()
    assert "ending 1 dialog and presence subscription(s)" in log
    assert ("draining:" in log) == bool(drain_timeout)
    if drain_timeout:  # ended as the drain starts, not once it is over
        assert log.index("ending 1 dialog and presence") < log.index("drained: no calls")
