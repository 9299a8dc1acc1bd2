"""In-dialog failures and a 2xx nobody ACKs, with real peers (sipp as the calling trunk and as
alice's phone, over UDP):

- ``[sip] in_dialog_failures = "strict"`` (RFC 5057 §5.1): alice answers the trunk's re-INVITE
  404 Not Found; the trunk gets 500 with a Warning naming the 404 and then a BYE with
  ``Reason: SIP;cause=404``, alice no BYE (her dialog is broken: the BYE would only fail), and
  the call ends saying why. The default keeps such a call (the component tests).
- Our 200 to the trunk's INVITE never ACKed: re-sent, then 64*T1 later the call is ended with
  BYEs and the WARNING ``no-ack-2xx`` of docs/operations.md names the call and the leg
  (T1 = 0.1 s here: 6.4 s)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.interop.harness import GatewayProcess, SippUas
from tests.interop.sipp_calls import ACCOUNTS, header, inbound_trunk, register, trunk_call

pytestmark = pytest.mark.interop

# docs/operations.md, no-ack-2xx, at T1 = 0.1 s.
NO_ACK_WARNING = (
    r"call (\S+): no ACK from the A leg for our 2xx within 6\.4 s \(64\*T1, RFC 3261 "
    r"§13\.3\.1\.4\): ending the call"
)


def test_strict_a_reinvite_answered_404_ends_the_call_without_a_bye_into_the_broken_dialog(
    tmp_path: Path,
) -> None:
    with GatewayProcess(
        tmp_path,
        accounts=ACCOUNTS,
        extra_toml=inbound_trunk(),
        settings={"sip": {"in_dialog_failures": "strict"}},
    ) as gw:
        alice = SippUas("calls/uas_answer_reinvite_404.xml", workdir=tmp_path)
        register(gw, tmp_path, "udp", alice.port)
        with alice:
            caller = trunk_call(
                "calls/uac_reinvite_refused_then_byed.xml", gw, tmp_path, call_duration_ms=200
            )
            caller.check()  # 500 naming the 404, then the BYE with cause=404
            callee = alice.wait(timeout=15)
            callee.check()  # no BYE came in its 2 s after the 404's ACK
        ended = gw.wait_for_log(r"call (\S+) ended: (.*)")
        log = gw.log_text()

    assert ended[2] == "re-INVITE to the B leg answered 404 Not Found: its dialog is gone", log
    [refused] = [m for m in caller.received("SIP/2.0 500") if "INVITE" in header(m, "CSeq")]
    assert "the B leg answered 404 Not Found" in header(refused, "Warning"), refused
    [bye] = caller.received("BYE ")
    assert header(bye, "Reason").startswith("SIP;cause=404;"), bye
    assert [m.split()[0] for m in callee.received("") if not m.startswith("SIP/")] == [
        "INVITE",
        "ACK",
        "INVITE",
        "ACK",
    ]
    assert "Traceback" not in log, log


def test_a_200_never_acked_ends_the_call_with_the_documented_warning(tmp_path: Path) -> None:
    with GatewayProcess(
        tmp_path,
        accounts=ACCOUNTS,
        extra_toml=inbound_trunk(),
        settings={"sip": {"t1": 0.1}},
        allowed_warnings=[NO_ACK_WARNING],
    ) as gw:
        alice = SippUas("uas_answer.xml", workdir=tmp_path)
        register(gw, tmp_path, "udp", alice.port)
        with alice:
            caller = trunk_call("calls/uac_call_never_acks.xml", gw, tmp_path, timeout=30)
            caller.check()  # the 200 and its copies, then the gateway's BYE
            callee = alice.wait(timeout=15)
            callee.check()  # answered, ACKed by the gateway, then BYEd
        warning = gw.wait_for_log(r"WARNING gateway\.core\.calls\.call: " + NO_ACK_WARNING)
        log = gw.log_text()

    [bye] = caller.received("BYE ")
    assert warning[1] == header(bye, "Call-ID"), (warning[0], bye)
    assert "no ACK from A leg" in header(bye, "Reason"), bye
    # Our 200 was re-sent meanwhile (T1, 2*T1, 4*T1 ... up to T2), then given up.
    assert len(caller.received("SIP/2.0 200", retransmissions=True)) >= 5
    assert re.search(rf"call {re.escape(warning[1])} ended: no ACK from A leg", log), log
    assert "Traceback" not in log, log
