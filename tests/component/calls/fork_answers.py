"""A fork's answer and the checks of its dialog, of the in-memory forked 2xx tests: moved here from
test_b2bua_fork_2xx.py so that no test module imports another."""

from __future__ import annotations

import trio

from gateway.core.sip.message import Request
from gateway.core.sip.parser import parse_message_untrusted
from gateway.testing.network import CapturedDatagram
from gateway.testing.sip_agent import Call, SipAgent
from tests.component.calls.b2bua_env import (
    B2bua,
)

FORK_TAG = "fork2"
FORK_CONTACT = "<sip:alice-desk@127.0.0.9:5070>"
FORK_ROUTE = "<sip:127.0.0.8:5060;lr>"


def to_phone(env: B2bua, phone: SipAgent, method: str, tag: str) -> list[Request]:
    """The ``method`` requests that reached ``phone`` on the wire in the dialog whose remote
    (the phone's) tag is ``tag``; a request's retransmissions are each counted."""
    found = []
    for d in env.network.deliveries:
        if d.dst != phone.address or not d.data.startswith(method.encode() + b" "):
            continue
        message = parse_message_untrusted(d.data)
        if isinstance(message, Request) and message.to.tag == tag:
            found.append(message)
    return found


def last_2xx(env: B2bua, phone: SipAgent, leg: Call) -> CapturedDatagram:
    """The phone's last 200 to the INVITE of ``leg``, as it went on the wire."""
    return [
        d
        for d in env.network.capture
        if d.src == phone.address
        and d.data.startswith(b"SIP/2.0 200 ")
        and (response := parse_message_untrusted(d.data)).cseq.method == "INVITE"
        and response.to.tag == leg.local_tag
    ][-1]


async def fork_answers(env: B2bua, phone: SipAgent, leg: Call, tag: str = FORK_TAG) -> None:
    """A forking proxy between the gateway and ``phone`` passes on a second 2xx to the
    INVITE of ``leg``, from another of its targets (RFC 3261 §16.7): the phone's last 200
    with that target's To tag and Contact, and a Record-Route of the proxy. (The in-memory
    network has no proxy: the gateway sends to the leg's address, where the phone is.)"""
    sent = last_2xx(env, phone, leg)
    data = sent.data.replace(f";tag={leg.local_tag}".encode(), f";tag={tag}".encode())
    contact = str(phone.contact).encode()
    assert contact in data
    data = data.replace(contact, FORK_CONTACT.encode())
    data = data.replace(b"\r\n\r\n", f"\r\nRecord-Route: {FORK_ROUTE}\r\n\r\n".encode(), 1)
    await phone.socket.sendto(data, sent.dst)
    await trio.sleep(1)


def assert_in_the_forks_dialog(request: Request, leg: Call) -> None:
    """``request`` (our ACK or BYE) belongs to the second fork's dialog (RFC 3261 §12.2.1.1):
    its To tag, its Contact as Request-URI, its Route set, the INVITE's Call-ID and From."""
    assert request.to.tag == FORK_TAG
    assert str(request.uri) == FORK_CONTACT.strip("<>")
    assert list(request.headers.get_all("Route")) == [FORK_ROUTE]
    assert request.call_id == leg.call_id
    assert request.from_.tag == leg.invite.from_.tag
