"""``gateway_inbound_message`` (gateway/core/inbound.py), without a gateway: what a plugin may
change in a message we received, and what happens to a change it may not make, a malformed
one and a hook that raises (logged naming the plugin and the hook, the message unchanged, the
other plugins' changes kept)."""

from __future__ import annotations

import logging
from typing import Any

import pluggy
import pytest

from gateway.core.hookspecs import hookimpl
from gateway.core.inbound import InboundHooks, changed_what_it_may_not, inbound_hooks
from gateway.core.interfaces import DeviceProfile, InboundMessage
from gateway.core.logs import WITHHELD, show_plugin_exception_text
from gateway.core.plugins import new_plugin_manager
from gateway.core.sip.message import Headers, Request, Response
from gateway.core.sip.parser import parse_message_untrusted
from gateway.core.transport.flows import Flow, FlowKey


async def _send(data: bytes) -> None:
    return None


FLOW = Flow(FlowKey("udp", ("127.0.0.1", 5060), ("127.0.0.1", 40000)), _send, reliable=False)

INVITE = (
    b"INVITE sip:+4930123456@gw.example SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bK-1;rport=40000;received=127.0.0.1\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: <sip:+15551234@carrier.example>;tag=c1\r\n"
    b"To: <sip:+4930123456@gw.example>\r\n"
    b"Call-ID: call-1@carrier\r\n"
    b"CSeq: 1 INVITE\r\n"
    b'Remote-Party-ID: "Alice" <sip:+15551234@carrier.example>;party=calling;screen=yes\r\n'
    b"User-Agent: Acme-Trunk 1.0\r\n"
    b"Content-Length: 0\r\n\r\n"
)
RINGING = (
    b"SIP/2.0 480 Temporarily Unavailable\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-2\r\n"
    b"From: <sip:gw@gw.example>;tag=g1\r\n"
    b"To: <sip:alice@gw.example>;tag=a1\r\n"
    b"Call-ID: call-2@gw\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Reason: cause=17\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def request() -> Request:
    message = parse_message_untrusted(INVITE)
    assert isinstance(message, Request)
    return message


def response() -> Response:
    message = parse_message_untrusted(RINGING)
    assert isinstance(message, Response)
    return message


def rpid_to_pai(message: Request) -> Request:
    """The quirk fix of the hook's docs: a phone's Remote-Party-ID as P-Asserted-Identity."""
    rpid = message.headers.get("Remote-Party-ID")
    assert rpid is not None
    identity = rpid.split(";", 1)[0]
    headers = message.headers.remove("Remote-Party-ID").add("P-Asserted-Identity", identity)
    return message.with_headers(headers)


def with_header(message: Any, name: str, value: str) -> Any:
    return message.with_headers(message.headers.set(name, value))


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda m: with_header(m, "Call-ID", "other@x"), "changed Call-ID"),
        (lambda m: with_header(m, "CSeq", "2 INVITE"), "changed CSeq"),
        (
            lambda m: m.with_headers(m.headers.prepend("Via", "SIP/2.0/UDP x;branch=z9hG4bK-9")),
            "changed Via",
        ),
        (lambda m: with_header(m, "From", "<sip:+15551234@carrier.example>;tag=c2"), "From tag"),
        (lambda m: with_header(m, "To", "<sip:+4930123456@gw.example>;tag=t1"), "To tag"),
        (lambda m: Request("OPTIONS", m.uri, m.headers), "changed the method"),
        (lambda m: Request(m.method, response().to.uri, m.headers), "Request-URI"),
        (lambda m: response(), "replaced a request with a Response"),
        # RFC 3261 §16.3 step 2: what stops a loop; a plugin rebuilding a message must not
        # reset it at every pass.
        (lambda m: with_header(m, "Max-Forwards", "71"), "raised or removed Max-Forwards"),
        (lambda m: m.with_headers(m.headers.remove("Max-Forwards")), "Max-Forwards"),
    ],
)
def test_what_a_plugin_may_not_change_in_a_request(change: Any, why: str) -> None:
    found = changed_what_it_may_not(request(), change(request()))
    assert found is not None and why in found


def test_what_a_plugin_may_change() -> None:
    invite = request()
    assert changed_what_it_may_not(invite, rpid_to_pai(invite)) is None
    # The From's URI and display name (not its tag), the body, any other header.
    assert (
        changed_what_it_may_not(
            invite, with_header(invite, "From", '"A" <sip:alice@carrier.example>;tag=c1')
        )
        is None
    )
    assert changed_what_it_may_not(invite, invite.with_body(b"v=0\r\n", "application/sdp")) is None
    assert changed_what_it_may_not(invite, with_header(invite, "Max-Forwards", "69")) is None
    # A response: another status of the same class, another reason phrase.
    ringing = response()
    busy = Response(486, "Busy Here", ringing.headers)
    assert changed_what_it_may_not(ringing, busy) is None
    ok = Response(200, "OK", ringing.headers)
    assert "status class (480 to 200)" in (changed_what_it_may_not(ringing, ok) or "")
    trying = Response(183, "Session Progress", ringing.headers)
    assert "status class" in (changed_what_it_may_not(ringing, trying) or "")


class Plugin:
    def __init__(self, change: Any) -> None:
        self.change = change
        self.seen: list[InboundMessage] = []
        self.given: list[object] = []

    @hookimpl
    def gateway_inbound_message(self, inbound: InboundMessage) -> None:
        self.seen.append(inbound)
        self.given.append(inbound.message)
        inbound.message = self.change(inbound.message)


class Raising:
    @hookimpl
    def gateway_inbound_message(self, inbound: InboundMessage) -> None:
        inbound.message = with_header(inbound.message, "X-Half-Done", "1")
        raise ValueError("secret-key-material")


def hooks_of(*plugins: tuple[str, object], clock: list[float] | None = None) -> InboundHooks:
    pm: pluggy.PluginManager = new_plugin_manager()
    for name, plugin in plugins:
        pm.register(plugin, name=name)
    now = clock if clock is not None else [0.0]
    found = inbound_hooks(pm, max_size=65535, max_headers=200, clock=lambda: now[0])
    assert found is not None
    return found


def test_no_implementation_no_hooks() -> None:
    assert inbound_hooks(new_plugin_manager(), max_size=1, max_headers=1, clock=lambda: 0) is None


def test_a_change_is_parsed_again_and_handed_on_with_the_leg_and_device() -> None:
    fixer = Plugin(rpid_to_pai)
    device = DeviceProfile(name="acme-trunk")
    out = hooks_of(("fixer", fixer)).apply(request(), FLOW, leg=None, device=device)
    assert isinstance(out, Request)
    assert out.headers.get("Remote-Party-ID") is None
    assert out.headers.get("P-Asserted-Identity") == '"Alice" <sip:+15551234@carrier.example>'
    (seen,) = fixer.seen
    assert seen.flow is FLOW and seen.device is device and seen.leg is None


def test_plugins_run_newest_first_each_seeing_the_last_change() -> None:
    order: list[str] = []

    def tagging(name: str) -> Any:
        def change(message: Any) -> Any:
            order.append(name)
            return with_header(message, "X-Seen", ",".join(order))

        return change

    hooks = hooks_of(("first", Plugin(tagging("first"))), ("second", Plugin(tagging("second"))))
    out = hooks.apply(request(), FLOW, leg=None, device=None)
    assert order == ["second", "first"]
    assert out.headers.get("X-Seen") == "second,first"


@pytest.mark.parametrize(
    ("plugin", "logged"),
    [
        (Plugin(lambda m: with_header(m, "Call-ID", "x@y")), "changed Call-ID"),
        (Plugin(lambda m: m.with_headers(m.headers.remove("To"))), "missing To header"),
        (Plugin(lambda m: "INVITE sip:x SIP/2.0"), "replaced a request with a str"),
        (Plugin(lambda m: with_header(m, "Max-Forwards", "lots")), "made it malformed"),
        (Raising(), "raised on INVITE"),
    ],
)
def test_a_change_that_breaks_a_rule_or_a_raising_hook_is_dropped_and_logged(
    plugin: object, logged: str, caplog: pytest.LogCaptureFixture
) -> None:
    show_plugin_exception_text(False)
    fixer = Plugin(rpid_to_pai)
    # "bad" is newer: it runs first, and the fixer after it sees the message unchanged.
    hooks = hooks_of(("fixer", fixer), ("bad", plugin))
    invite = request()
    with caplog.at_level(logging.ERROR, logger="gateway.core.inbound"):
        out = hooks.apply(invite, FLOW, leg=None, device=None)
    assert out.headers.get("P-Asserted-Identity") is not None  # the fixer's change is kept
    assert out.headers.get("X-Half-Done") is None
    assert out.call_id == invite.call_id and out.headers.get("To") == invite.headers.get("To")
    assert fixer.given == [invite]  # handed on as the bad plugin got it
    (record,) = caplog.records
    message = record.getMessage()
    assert "plugin 'bad': gateway_inbound_message" in message and logged in message
    assert "udp:127.0.0.1:5060<->127.0.0.1:40000" in message
    assert "secret-key-material" not in caplog.text
    if isinstance(plugin, Raising):
        assert f"ValueError: {WITHHELD}" in caplog.text
    assert hooks.refused == 1


def test_a_failing_plugin_is_logged_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    clock = [0.0]
    hooks = hooks_of(("bad", Raising()), clock=clock)
    with caplog.at_level(logging.ERROR, logger="gateway.core.inbound"):
        for at in (0.0, 10.0, 59.0, 61.0):
            clock[0] = at
            hooks.apply(response(), FLOW, leg=None, device=None)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "raised on 480 to INVITE" in messages[0]
    assert "(2 more since the last such line)" in messages[1]
    assert hooks.refused == 4


def test_an_implementation_without_arguments_is_called_too() -> None:
    called: list[bool] = []

    class Counting:
        @hookimpl
        def gateway_inbound_message(self) -> None:
            called.append(True)

    hooks_of(("counting", Counting())).apply(request(), FLOW, leg=None, device=None)
    assert called == [True]


def test_a_field_under_a_compact_name_is_checked_as_what_it_parses_to(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Headers built directly keep the name as written: "v" is no Via to a lookup, but the
    # parser reads it as one (RFC 3261 §7.3.3). On top, it would take the response elsewhere.
    def compact_via(m: Any) -> Any:
        evil = ("v", "SIP/2.0/UDP 192.0.2.66:5060;branch=z9hG4bK-elsewhere")
        return m.with_headers(Headers((evil, *m.headers.fields)))

    invite = request()
    with caplog.at_level(logging.ERROR, logger="gateway.core.inbound"):
        out = hooks_of(("bad", Plugin(compact_via))).apply(invite, FLOW, leg=None, device=None)
    assert out.headers.get_all("Via") == invite.headers.get_all("Via")
    assert "changed Via" in caplog.text
