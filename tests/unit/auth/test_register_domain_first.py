"""RFC 3261 §10.3: a REGISTER's domain is checked (step 1) before its credentials (step 3).
svcrack, guessing passwords at ``sip:1000@127.0.0.1`` against a gateway listening on another
port, got 401/403 for a wrong password and 404 for the right one: the answer told it when it
had guessed right. Now every REGISTER to a domain we do not serve gets the same 404, with no
challenge and nothing counted against the source."""

from __future__ import annotations

from pathlib import Path

from gateway.core.auth.client import authorize
from gateway.core.registration import RegistrationService
from gateway.core.sip.message import Request
from gateway.core.sip.parser import parse_message_untrusted
from gateway.core.store.sqlite import SqliteStore
from gateway.core.transport.flows import Flow, FlowKey

PHONE = ("192.0.2.66", 5060)


async def _send(data: bytes) -> None:
    raise AssertionError("nothing is sent")


def _service(tmp_path: Path) -> RegistrationService:
    store = SqliteStore.open(tmp_path / "state")
    store.accounts_add("1000", "secret1000", "voipgw.local")
    return RegistrationService(
        store,
        realm="voipgw.local",
        domains=frozenset({"127.0.0.1:5080"}),
        new_tag=lambda: "t",
        clock=lambda: 1000.0,
    )


def _register(uri: str) -> Request:
    host = uri.removeprefix("sip:")
    text = (
        f"REGISTER {uri} SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.0.2.66:5060;branch=z9hG4bKreg1\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:1000@{host}>;tag=ph1\r\n"
        f"To: <sip:1000@{host}>\r\n"
        "Call-ID: reg-1@192.0.2.66\r\n"
        "CSeq: 1 REGISTER\r\n"
        "Contact: <sip:1000@192.0.2.66:5060>\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    message = parse_message_untrusted(text.encode())
    assert isinstance(message, Request)
    return message


FLOW = Flow(FlowKey("udp", ("127.0.0.1", 5080), PHONE), _send, reliable=False)


def test_the_domain_is_checked_before_the_credentials(tmp_path: Path) -> None:
    service = _service(tmp_path)
    # Our domain: challenged, and the right password registers.
    ours = _register("sip:127.0.0.1:5080")
    challenge = service.handle(ours, FLOW)
    assert challenge.status == 401
    right = authorize(ours, challenge, username="1000", password="secret1000", cnonce="c1")
    assert right is not None
    assert service.handle(right, FLOW).status == 200
    # Another domain (the scanner's "127.0.0.1", port 5060): 404 without a challenge, and 404
    # whatever the credentials, right or wrong: nothing tells them apart.
    foreign = _register("sip:127.0.0.1")
    answer = service.handle(foreign, FLOW)
    assert (answer.status, answer.reason) == (404, "Domain Not Served Here")
    assert answer.headers.get("WWW-Authenticate") is None
    for password in ("secret1000", "wrong"):
        guess = authorize(foreign, challenge, username="1000", password=password, cnonce="c2")
        assert guess is not None
        assert service.handle(guess, FLOW).status == 404
    assert not service.failures.is_blocked(PHONE[0], now=1000.0)
