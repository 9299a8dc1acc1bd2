"""Requests for dialogs the gateway does not know, from a real peer (sipp as a trunk): after a
call's BYE was answered, a BYE again, an INFO, an in-dialog OPTIONS and a re-INVITE of that
call; then a BYE of a dialog that never was and a CANCEL matching no transaction. Each gets 481
Call/Transaction Does Not Exist (RFC 3261 §12.2.2, §9.2), none reaches the callee, none creates
a call, and the gateway logs no error for any of them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.interop.harness import GatewayProcess, SippUas
from tests.interop.sipp_calls import ACCOUNTS, inbound_trunk, register, trunk_call

pytestmark = pytest.mark.interop


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_requests_of_an_ended_or_unknown_dialog_get_481_and_go_nowhere(
    tmp_path: Path, transport: str
) -> None:
    with GatewayProcess(tmp_path, accounts=ACCOUNTS, extra_toml=inbound_trunk()) as gw:
        alice = SippUas("uas_answer.xml", workdir=tmp_path, transport=transport)
        register(gw, tmp_path, transport, alice.port)
        with alice:
            caller = trunk_call(
                "calls/uac_call_then_orphans.xml",
                gw,
                tmp_path,
                transport=transport,
                call_duration_ms=200,
            )
            caller.check()  # every 481 the scenario waits for came
            callee = alice.wait(timeout=10)
            callee.check()
            never = trunk_call("calls/uac_orphans.xml", gw, tmp_path, transport=transport)
            never.check()  # a BYE of a dialog that never was, a CANCEL of no INVITE: 481
        log = gw.log_text()

    statuses = [int(m.split()[1]) for m in caller.received("SIP/2.0 ")]
    # 200 to the INVITE and to the BYE, then a 481 for each orphan ("Call Has Ended" from a
    # call still finishing, "Call/Transaction Does Not Exist" once it is gone: §12.2.2 both).
    assert [status for status in statuses if status >= 200] == [200, 200, 481, 481, 481, 481]
    # A re-INVITE's 100 Trying, if any, came before its 481, never after it (RFC 3261 §17.2.1).
    invite_answers = [m.splitlines()[0] for m in caller.received("SIP/2.0 ") if "6 INVITE" in m]
    assert invite_answers[-1].startswith("SIP/2.0 481"), invite_answers
    # The callee saw its call and nothing after it: no orphan was relayed.
    assert [m.split()[0] for m in callee.received("")] == ["INVITE", "ACK", "BYE"]
    # One call, the real one, ended once; the orphans created nothing and raised nothing.
    assert len(re.findall(r"call \S+ ended: ", log)) == 1, log
    assert "Traceback" not in log and "internal error" not in log, log
