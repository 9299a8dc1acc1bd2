"""The T.38 sipp pair of scenarios/calls/ (uac_call_t38.xml, uas_answer_t38.xml) proven against
each other without the gateway, and each of their checks shown to fail: test_t38_sipp.py relies
on them to fail when the gateway misbehaves."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.interop.harness import SCENARIOS, SippUas, run_sipp_uac
from tests.interop.t38_pcaps import PACKETS, pcap_of

pytestmark = pytest.mark.interop

FILES = {"t38.pcap": pcap_of(PACKETS)}


def test_t38_pair(tmp_path: Path) -> None:
    with SippUas("calls/uas_answer_t38.xml", workdir=tmp_path) as callee:
        caller = run_sipp_uac(
            "calls/uac_call_t38.xml",
            callee.address,
            workdir=tmp_path,
            call_duration_ms=300,
            files=FILES,
        )
        caller.check()
        callee.wait(timeout=10).check()


def test_a_t38_offer_with_changed_attributes_fails_the_uas(tmp_path: Path) -> None:
    original = (SCENARIOS / "calls" / "uac_call_t38.xml").read_text()
    changed = tmp_path / "uac_call_t38_changed.xml"
    changed.write_text(original.replace("a=T38FaxMaxDatagram:400", "a=T38FaxMaxDatagram:72"))
    with SippUas("calls/uas_answer_t38.xml", workdir=tmp_path, timeout=5) as callee:
        run_sipp_uac(
            changed, callee.address, workdir=tmp_path, call_duration_ms=100, timeout=4, files=FILES
        )
        answered = callee.wait(timeout=10)
    assert not answered.ok
    assert "T38FaxMaxDatagram:400" in answered.error_log.read_text()


def test_a_t38_answer_at_port_0_fails_the_uac(tmp_path: Path) -> None:
    original = (SCENARIOS / "calls" / "uas_answer_t38.xml").read_text()
    refusing = tmp_path / "uas_answer_t38_refusing.xml"
    refusing.write_text(original.replace("m=image [media_port] UDPTL", "m=image 0 UDPTL"))
    with SippUas(refusing, workdir=tmp_path, timeout=5) as callee:
        caller = run_sipp_uac(
            "calls/uac_call_t38.xml",
            callee.address,
            workdir=tmp_path,
            call_duration_ms=100,
            timeout=4,
            files=FILES,
        )
    assert not caller.ok
    assert "m=image" in caller.error_log.read_text()
