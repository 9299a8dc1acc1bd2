"""Where a new connection goes to a leg's party once the connection it opened is closed
(``routing.reconnect_destination``; the trunk's address, ``GatewayDirectory.trunk_hop``, is
tested in test_trunk_dns_naptr.py): never back to the port the party's connection came from,
which takes no connections. The interop tests with kamailio
(tests/interop/test_kamailio_dispatcher.py) are where the reason shows."""

from __future__ import annotations

import pytest

from gateway.core.calls.routing import Destination, reconnect_destination, subscriber_destination
from gateway.core.sip.dialog import Dialog, DialogState
from gateway.core.sip.grammar import parse_name_addr_untrusted, parse_uri_untrusted
from gateway.core.sip.uri import Uri
from gateway.core.transport.flows import Flow, FlowKey

#: Where the party's connection came from: an ephemeral port of its own.
SOURCE = ("192.0.2.3", 41234)
EDGE_TLS = Destination("tls", "192.0.2.3", 5061)


def uri(text: str) -> Uri:
    return parse_uri_untrusted(text)


def test_a_trunk_is_reached_at_its_address_over_the_legs_transport() -> None:
    assert reconnect_destination(
        "tls", SOURCE, trunk=EDGE_TLS, next_hop=uri("sip:192.0.2.99:5071;transport=tls;lr")
    ) == ("tls", ("192.0.2.3", 5061))


def test_a_trunk_configured_over_another_transport_is_reached_at_its_record_route() -> None:
    """kamailio as a UDP trunk that relays over TCP: its Record-Route names its TCP side."""
    udp_trunk = Destination("udp", "192.0.2.3", 5060)
    assert reconnect_destination(
        "tcp", SOURCE, trunk=udp_trunk, next_hop=uri("sip:192.0.2.3:5060;transport=tcp;r2=on;lr")
    ) == ("tcp", ("192.0.2.3", 5060))


@pytest.mark.parametrize(
    ("transport", "next_hop", "expected"),
    [
        # The dialog's next hop over the leg's transport, its default port (RFC 3263 §4.2).
        ("tcp", "sip:alice@198.51.100.20:5070;transport=tcp", ("198.51.100.20", 5070)),
        ("tls", "sips:alice@198.51.100.20", ("198.51.100.20", 5061)),
        ("tls", "sip:[2001:db8::7];transport=tls;lr", ("2001:db8::7", 5061)),
        # A name is not looked up on the call path: the leg's address, as before.
        ("tcp", "sip:alice@pbx.example;transport=tcp", SOURCE),
        # Another transport than the leg's: a leg keeps its own (TLS above all).
        ("tls", "sip:alice@198.51.100.20:5060;transport=tcp", SOURCE),
        ("tcp", "sip:alice@198.51.100.20:5060", SOURCE),
        # Nothing to send to.
        ("tcp", "tel:+4930123456", SOURCE),
    ],
)
def test_any_other_party_is_reached_at_the_dialogs_next_hop_when_it_is_an_ip_address(
    transport: str, next_hop: str, expected: tuple[str, int]
) -> None:
    assert reconnect_destination(transport, SOURCE, trunk=None, next_hop=uri(next_hop)) == (
        transport,
        expected,
    )


@pytest.mark.parametrize("transport", ["udp", "ws", "wss"])
def test_only_tcp_and_tls_legs_are_reconnected_elsewhere(transport: str) -> None:
    """UDP has no connection to lose; a browser takes no connections."""
    hop = uri(f"sip:198.51.100.20:5070;transport={transport}")
    trunk = Destination(transport, "192.0.2.3", 5070)
    assert reconnect_destination(transport, SOURCE, trunk=trunk, next_hop=hop) == (
        transport,
        SOURCE,
    )


def test_without_a_dialog_the_leg_keeps_its_address() -> None:
    assert reconnect_destination("tcp", SOURCE, trunk=None, next_hop=None) == ("tcp", SOURCE)


async def _never_sent(data: bytes) -> None:
    raise AssertionError("nothing is sent here")


def subscription_dialog(route: str | None) -> Dialog:
    """A watcher's subscription dialog, its SUBSCRIBE Record-Routed by ``route`` (or none)."""
    return Dialog(
        call_id="sub-1",
        local_tag="ours",
        remote_tag="theirs",
        local_uri=parse_name_addr_untrusted("<sip:alice@gw.example>"),
        remote_uri=parse_name_addr_untrusted("<sip:bob@gw.example>"),
        remote_target=uri("sip:bob@10.0.0.7:5060;transport=tcp"),
        route_set=() if route is None else (parse_name_addr_untrusted(route),),
        local_seq=None,
        remote_seq=1,
        secure=False,
        state=DialogState.CONFIRMED,
    )


def test_a_notify_goes_over_the_subscribers_flow_while_it_is_open() -> None:
    flow = Flow(FlowKey("tcp", ("192.0.2.1", 5060), SOURCE), _never_sent, reliable=True)
    route = "<sip:192.0.2.3:5060;transport=tcp;lr>"
    destination = subscriber_destination(flow, subscription_dialog(route))
    assert destination.address == SOURCE and destination.flow is flow
    # A closed UDP flow is only an address: the same address, as ever.
    udp = Flow(FlowKey("udp", ("192.0.2.1", 5060), SOURCE), _never_sent, reliable=False)
    udp.closed = True
    assert subscriber_destination(udp, subscription_dialog(route)).address == SOURCE


def test_a_notify_after_the_edges_connection_closed_goes_to_its_record_route() -> None:
    flow = Flow(FlowKey("tcp", ("192.0.2.1", 5060), SOURCE), _never_sent, reliable=True)
    flow.closed = True
    route = "<sip:192.0.2.3:5060;transport=tcp;lr>"
    destination = subscriber_destination(flow, subscription_dialog(route))
    assert destination == Destination("tcp", "192.0.2.3", 5060) and destination.flow is None
    # Without a Record-Route: the subscriber's Contact.
    assert subscriber_destination(flow, subscription_dialog(None)).address == ("10.0.0.7", 5060)
