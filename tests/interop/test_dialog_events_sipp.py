"""Busy lamp fields through ``voipgw run`` against sipp (RFC 4235 dialog package, RFC 6665):
bob's phone (a sipp, digest-authenticated) watches alice while a trunk (sipp on 127.0.0.2)
calls her DID and alice's phone (a sipp) rings, answers and is hung up on. The watcher's
scenario checks every NOTIFY's headers and body with regexps; here the bodies are parsed as XML
as well.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.interop.dialog_event_bodies import NS, body_of
from tests.interop.harness import GatewayProcess, SippUas, run_sipp_uac
from tests.interop.sipp_calls import ACCOUNTS, BOB, inbound_trunk, register, trunk_call

pytestmark = pytest.mark.interop

OFFICE = '[[dialog_watch_groups]]\nname = "office"\naccounts = ["alice", "bob"]\n'


def test_a_phone_watches_an_account_ring_answer_and_hang_up(tmp_path: Path) -> None:
    with GatewayProcess(tmp_path, accounts=ACCOUNTS, extra_toml=inbound_trunk() + OFFICE) as gw:
        alice = SippUas("calls/uas_ring_pause_answer.xml", workdir=tmp_path, call_duration_ms=500)
        register(gw, tmp_path, "udp", alice.port)
        with alice, ThreadPoolExecutor(max_workers=1) as pool:
            watching = pool.submit(
                run_sipp_uac,
                "calls/uac_subscribe_dialog.xml",
                gw.address,
                workdir=tmp_path,
                service="alice",
                caller="bob",
                auth=BOB,
                timeout=30,
            )
            gw.wait_for_log(r"bob watches the calls of alice for 600 s")
            trunk_call("uac_call.xml", gw, tmp_path, call_duration_ms=300).check()
            alice.wait(timeout=10).check()
            watcher = watching.result(timeout=60)
        watcher.check()

    notifies = watcher.received("NOTIFY ")
    assert len(notifies) == 5, watcher.describe()
    documents = [body_of(notify) for notify in notifies]
    assert [int(doc.get("version") or -1) for doc in documents] == [0, 1, 2, 3, 4]
    assert {doc.get("entity") for doc in documents} == {f"sip:alice@127.0.0.1:{gw.port}"}
    states = [[d.findtext(f"{NS}state") for d in doc.findall(f"{NS}dialog")] for doc in documents]
    assert states == [[], ["early"], ["confirmed"], ["terminated"], []]
    ids = {d.get("id") for doc in documents for d in doc.findall(f"{NS}dialog")}
    assert len(ids) == 1  # one call, one stable opaque id
    # The NOTIFYs came to the flow the SUBSCRIBE came on: sipp's own port.
    for notify in notifies:
        assert re.match(rf"NOTIFY sip:bob@127\.0\.0\.1:{watcher.port};transport=", notify), notify
