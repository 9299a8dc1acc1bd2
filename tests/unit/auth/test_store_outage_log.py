"""REGISTERs the store cannot take (busy, out of reach, a PostgreSQL server that stopped
answering and was cut by the store's watchdog) are answered 503 with Retry-After; each was
logged at WARNING, hundreds a minute while every phone of the node retried. The outage is
logged once, summarized every 300 s, and once more when a REGISTER is taken again."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from gateway.core.auth.client import authorize
from gateway.core.failure_log import SUMMARY_INTERVAL
from gateway.core.registration import RegistrationService
from gateway.core.sip.message import Request
from gateway.core.sip.parser import parse_message_untrusted
from gateway.core.store.errors import StoreUnavailable
from gateway.core.store.sqlite import SqliteStore
from gateway.core.transport.flows import Flow, FlowKey

PHONE = ("192.0.2.66", 5060)


class FlakyStore(SqliteStore):
    down = False

    def apply_binding_changes(self, *args: Any, **kwargs: Any) -> Any:
        if self.down:
            raise StoreUnavailable("PostgreSQL host=db: connection lost (no answer within 1.5 s)")
        return super().apply_binding_changes(*args, **kwargs)


async def _send(data: bytes) -> None:
    raise AssertionError("nothing is sent")


def _register(cseq: int) -> Request:
    text = (
        "REGISTER sip:127.0.0.1:5080 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 192.0.2.66:5060;branch=z9hG4bKreg{cseq}\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:1000@127.0.0.1:5080>;tag=ph1\r\n"
        "To: <sip:1000@127.0.0.1:5080>\r\n"
        "Call-ID: reg-1@192.0.2.66\r\n"
        f"CSeq: {cseq} REGISTER\r\n"
        "Contact: <sip:1000@192.0.2.66:5060>\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    message = parse_message_untrusted(text.encode())
    assert isinstance(message, Request)
    return message


FLOW = Flow(FlowKey("udp", ("127.0.0.1", 5080), PHONE), _send, reliable=False)


def test_a_store_outage_is_logged_once_summarized_and_once_more_when_it_answers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = FlakyStore.open(tmp_path / "state")
    store.accounts_add("1000", "secret1000", "voipgw.local")
    clock = [1000.0]
    service = RegistrationService(
        store,
        realm="voipgw.local",
        domains=frozenset({"127.0.0.1:5080"}),
        new_tag=lambda: "t",
        clock=lambda: clock[0],
    )
    caplog.set_level(logging.INFO, "gateway.core.registration")
    cseq = [0]

    def status() -> int:
        cseq[0] += 1
        register = _register(cseq[0])
        challenge = service.handle(register, FLOW)
        assert challenge.status == 401
        signed = authorize(register, challenge, username="1000", password="secret1000", cnonce="c")
        assert signed is not None
        answer = service.handle(signed, FLOW)
        if answer.status == 503:
            assert answer.headers.get("Retry-After") == "5"
        return answer.status

    assert status() == 200
    store.down = True
    for number in range(100):
        clock[0] = 1000.0 + number
        assert status() == 503
    clock[0] = 1000.0 + SUMMARY_INTERVAL
    assert status() == 503
    store.down = False
    assert status() == 200
    lines = [(r.levelname, r.getMessage()) for r in caplog.records if "the store" in r.getMessage()]
    assert [level for level, _ in lines] == ["WARNING", "WARNING", "INFO"], lines
    assert lines[0][1].startswith(
        "registrations: the store is failing: REGISTER refused with 503: PostgreSQL host=db:"
        " connection lost"
    )
    assert "101 since" in lines[1][1]
    assert "answers again, after 101 failed requests" in lines[2][1]
