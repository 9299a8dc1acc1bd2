"""Keepalives to a phone behind NAT against sipp (``[sip] nat_keepalive_interval``): sipp
registers alice with a Contact naming a private address (10.0.0.7), as phones behind NAT do,
and a sipp UAS on the port the REGISTER came from (the NAT's address, here) answers the
gateway's OPTIONS: they must reach it there, not at the private address. Once it is gone the
keepalives go unanswered and, after three, the gateway removes the registration and says so.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.interop.harness import GatewayProcess, SippUas, run_sipp_uac

pytestmark = pytest.mark.interop

INTERVAL = 5.0  # the shortest allowed


def test_a_phone_behind_nat_is_kept_reachable_then_removed_when_gone(tmp_path: Path) -> None:
    with GatewayProcess(
        tmp_path,
        accounts={"alice": "wonderland"},
        settings={"sip": {"nat_keepalive_interval": INTERVAL}},
        # The phone goes away on purpose: its registration's removal is what the test reads.
        allowed_warnings=[r"removed: no answer to \d+ keepalives \(OPTIONS\) in a row"],
    ) as gw:
        phone = SippUas("calls/uas_answer_options.xml", workdir=tmp_path, calls=2)
        run_sipp_uac(
            "calls/uac_register_behind_nat.xml",
            gw.address,
            workdir=tmp_path,
            service="alice",
            auth=("alice", "wonderland"),
            port=phone.port,
        ).check()
        with phone:
            answered = phone.wait(timeout=3 * INTERVAL + 5)
        answered.check()  # two keepalives, each answered
        options = answered.received("OPTIONS ")
        assert len(options) == 2
        assert options[0].startswith("OPTIONS sip:alice@10.0.0.7:5060 SIP/2.0"), options[0]
        assert "removed" not in gw.log_text()
        # The phone is gone: three keepalives without an answer, then its registration goes.
        gw.wait_for_log(
            r"registration of sip:alice@\S+ at sip:alice@10\.0\.0\.7:5060 removed: "
            r"no answer to 3 keepalives \(OPTIONS\) in a row",
            timeout=6 * INTERVAL + 10,
        )
