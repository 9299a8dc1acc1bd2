"""Small builders of parsed SIP messages for the transaction, dialog and Via tests."""

from __future__ import annotations

from gateway.core.sip.message import Request, Response, make_response
from gateway.core.sip.parser import parse_message_untrusted
from gateway.core.sip.via import Hop

UDP_PEER = Hop("UDP", "192.0.2.10", 5060)
TCP_PEER = Hop("TCP", "192.0.2.10", 5060)


def parse_request(text: str) -> Request:
    message = parse_message_untrusted(text.replace("\n", "\r\n").encode())
    assert isinstance(message, Request)
    return message


def request(
    method: str = "INVITE",
    *,
    branch: str | None = "z9hG4bKtx1",
    transport: str = "UDP",
    sent_by: str = "client.example.com:5060",
    uri: str = "sip:bob@gw.example.net",
    call_id: str = "call-1@client.example.com",
    cseq: int = 1,
    cseq_method: str | None = None,
    from_tag: str | None = "ft1",
    to_tag: str | None = None,
    routes: tuple[str, ...] = (),
    record_routes: tuple[str, ...] = (),
    contact: str | None = "<sip:alice@client.example.com>",
    extra: tuple[str, ...] = (),
) -> Request:
    via = f"Via: SIP/2.0/{transport} {sent_by}"
    if branch is not None:
        via += f";branch={branch}"
    lines = [
        f"{method} {uri} SIP/2.0",
        via,
        "Max-Forwards: 70",
        *(f"Route: {route}" for route in routes),
        *(f"Record-Route: {rr}" for rr in record_routes),
        "From: <sip:alice@client.example.com>" + (f";tag={from_tag}" if from_tag else ""),
        "To: <sip:bob@gw.example.net>" + (f";tag={to_tag}" if to_tag else ""),
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {cseq_method or method}",
        *([f"Contact: {contact}"] if contact else []),
        *extra,
        "Content-Length: 0",
        "",
        "",
    ]
    return parse_request("\n".join(lines))


def response(
    req: Request,
    status: int,
    *,
    to_tag: str | None = "tt1",
    extra: tuple[tuple[str, str], ...] = (),
) -> Response:
    """A response as the peer would send it (To tag added on everything but 100)."""
    return make_response(req, status, to_tag=None if status == 100 else to_tag, extra=extra)


def ack_for(invite: Request, resp: Response, *, branch: str | None = None) -> Request:
    """ACK as the peer sends it: same branch for a non-2xx, a new one for a 2xx."""
    to = resp.headers.get("To")
    assert to is not None
    via = invite.top_via
    if branch is not None:
        via = via.with_param("branch", branch)
    lines = [
        f"ACK {invite.uri} SIP/2.0",
        f"Via: {via}",
        "Max-Forwards: 70",
        f"From: {invite.headers.get('From')}",
        f"To: {to}",
        f"Call-ID: {invite.call_id}",
        f"CSeq: {invite.cseq.number} ACK",
        "Content-Length: 0",
        "",
        "",
    ]
    return parse_request("\n".join(lines))
