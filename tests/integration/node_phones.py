"""The phones and the carrier of the multi-node tests (test_postgresql_nodes.py,
test_call_limits_nodes.py, test_psap_callback_nodes.py): blocking UDP sockets on 127.0.0.1 that
register with digest (RFC 3261 §22), send requests and answer INVITEs; and a look at the shared
store's call-limit holds. Helpers only: no test is collected from this module."""

from __future__ import annotations

import re
import socket

from pgcluster import Cluster

from gateway.core.auth.algorithms import DigestAlgorithm, compute_ha1, compute_response
from gateway.core.sip.message import Request, Response, make_response
from gateway.core.sip.parser import parse_message_untrusted
from gateway.core.sip.serializer import serialize_message
from tests.interop.harness import GatewayProcess

REALM = "voipgw.local"
ACCOUNTS = {"alice": "alice-wonderland", "bob": "bob-builder", "carol": "carol-singer"}


def udp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5.0)
    return sock


def port_of(sock: socket.socket) -> int:
    return int(sock.getsockname()[1])


def receive(sock: socket.socket) -> tuple[Request | Response, tuple[str, int]]:
    data, source = sock.recvfrom(65535)
    return parse_message_untrusted(data), source


def final_response(sock: socket.socket) -> Response:
    while True:
        message, _ = receive(sock)
        if isinstance(message, Response) and message.status >= 200:
            return message


def digest(challenge: str, user: str, method: str, uri: str) -> str:
    params = dict(re.findall(r'(\w+)="?([^",]+)"?', challenge))
    algorithm = DigestAlgorithm.from_token(params.get("algorithm", "MD5"))
    assert algorithm is not None
    ha1 = compute_ha1(algorithm, user, REALM, ACCOUNTS[user])
    response = compute_response(
        algorithm,
        ha1,
        method=method,
        uri=uri,
        nonce=params["nonce"],
        qop="auth",
        nc="00000001",
        cnonce="c0ffee",
    )
    return (
        f'Digest username="{user}", realm="{REALM}", nonce="{params["nonce"]}", uri="{uri}", '
        f'response="{response}", algorithm={params.get("algorithm", "MD5")}, qop=auth, '
        f'nc=00000001, cnonce="c0ffee", opaque="{params.get("opaque", "")}"'
    )


def request(
    method: str,
    uri: str,
    sock: socket.socket,
    user: str,
    cseq: int,
    *extra: str,
    body: bytes = b"",
    content_type: str = "application/sdp",
) -> bytes:
    here = f"127.0.0.1:{port_of(sock)}"
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: SIP/2.0/UDP {here};branch=z9hG4bK{method.lower()}{cseq};rport",
        "Max-Forwards: 70",
        f"From: <sip:{user}@127.0.0.1>;tag={user}-tag",
        # A REGISTER's To is the address-of-record, in a domain of the node (RFC 3261 §10.2).
        f"To: <{uri}>" if method != "REGISTER" else f"To: <{uri.replace('sip:', f'sip:{user}@')}>",
        f"Call-ID: {method.lower()}-{user}@127.0.0.1",
        f"CSeq: {cseq} {method}",
        f"Contact: <sip:{user}@{here}>",
        *extra,
    ]
    if body:
        lines.append(f"Content-Type: {content_type}")
    return ("\r\n".join(lines) + f"\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


def address_of(node: GatewayProcess) -> tuple[str, int]:
    return ("127.0.0.1", node.port)


def ack_for(response: Response, uri: str) -> bytes:
    """The ACK of a non-2xx final response to our INVITE (RFC 3261 §17.1.1.3)."""
    headers = response.headers
    lines = [
        f"ACK {uri} SIP/2.0",
        f"Via: {headers.get('Via')}",
        "Max-Forwards: 70",
        f"From: {headers.get('From')}",
        f"To: {headers.get('To')}",
        f"Call-ID: {headers.get('Call-ID')}",
        f"CSeq: {response.cseq.number} ACK",
    ]
    return ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()


def register_status(
    node: GatewayProcess, phone: socket.socket, cseq: int, user: str = "alice"
) -> int:
    """The final status of one REGISTER of ``user``'s (answering the challenge, if any)."""
    registrar = f"sip:127.0.0.1:{node.port}"
    phone.sendto(request("REGISTER", registrar, phone, user, cseq), address_of(node))
    challenge = final_response(phone)
    if challenge.status != 401:
        return challenge.status
    auth = digest(challenge.headers.get_all("WWW-Authenticate")[0], user, "REGISTER", registrar)
    phone.sendto(
        request("REGISTER", registrar, phone, user, cseq + 1, f"Authorization: {auth}"),
        address_of(node),
    )
    return final_response(phone).status


def rung(phone: socket.socket) -> tuple[Request, tuple[str, int]]:
    """The next INVITE the phone gets, answered 180 Ringing."""
    while True:
        message, source = receive(phone)
        if isinstance(message, Request) and message.method == "INVITE":
            ringing = make_response(message, 180, "Ringing", to_tag="phone")
            phone.sendto(serialize_message(ringing), source)
            return message, source


def busy(phone: socket.socket, invite: Request, source: tuple[str, int]) -> None:
    phone.sendto(serialize_message(make_response(invite, 486, "Busy Here", to_tag="phone")), source)


def holds(cluster: Cluster, database: str) -> list[tuple[object, ...]]:
    return cluster.admin("SELECT node, kind, name FROM call_limit_holds ORDER BY node", database)
