"""A SIP user agent over WebSocket (RFC 7118) for tests, on the ``websockets`` package.

No WebSocket SIP user agent is packaged in Debian, so this plays the browser softphone: the
WebSocket handshake and framing are the independent ``websockets`` implementation's (sync API),
the SIP is written out by hand the way JsSIP writes it (Via ``SIP/2.0/WS <random>.invalid``,
Contact ``sip:user@<random>.invalid;transport=ws``), and digest answers are computed here with
hashlib (RFC 2617 / RFC 3261 §22.4, MD5, qop=auth), not with the gateway's code.

    with WsSipClient.connect(f"ws://127.0.0.1:{port}") as alice:
        alice.register("alice", "wonderland", domain=f"127.0.0.1:{udp_port}")
"""

from __future__ import annotations

import hashlib
import re
import secrets
import ssl
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import attrs
from websockets.sync.client import ClientConnection, connect

SDP = (
    "v=0\r\n"
    "o=ws 1 1 IN IP4 127.0.0.1\r\n"
    "s=-\r\n"
    "c=IN IP4 127.0.0.1\r\n"
    "t=0 0\r\n"
    "m=audio {port} RTP/AVP 0\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
    "a=sendrecv\r\n"
)


@attrs.frozen
class SipText:
    """A received SIP message, read just enough for tests."""

    first_line: str
    headers: tuple[tuple[str, str], ...]
    body: str

    @classmethod
    def parse(cls, text: str) -> SipText:
        head, _, body = text.partition("\r\n\r\n")
        lines = head.split("\r\n")
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
        return cls(lines[0], tuple(headers), body)

    @property
    def status(self) -> int | None:
        if not self.first_line.startswith("SIP/2.0 "):
            return None
        return int(self.first_line.split()[1])

    @property
    def method(self) -> str | None:
        return None if self.status is not None else self.first_line.split()[0]

    def get(self, name: str) -> str | None:
        values = self.get_all(name)
        return values[0] if values else None

    def get_all(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]

    @property
    def cseq_method(self) -> str:
        return (self.get("CSeq") or " ").split()[1]


def digest_authorization(challenge: str, *, method: str, uri: str, user: str, password: str) -> str:
    """An ``Authorization``/``Proxy-Authorization`` value answering an MD5 challenge."""
    params = dict(re.findall(r'(\w+)="?([^",]+)"?', challenge))
    realm, nonce = params["realm"], params["nonce"]
    ha1 = hashlib.md5(f"{user}:{realm}:{password}".encode()).hexdigest()
    ha2 = hashlib.md5(f"{method}:{uri}".encode()).hexdigest()
    cnonce, nc = secrets.token_hex(4), "00000001"
    response = hashlib.md5(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}".encode()).hexdigest()
    value = (
        f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
        f'response="{response}", algorithm=MD5, qop=auth, nc={nc}, cnonce="{cnonce}"'
    )
    if "opaque" in params:
        value += f', opaque="{params["opaque"]}"'
    return value


class WsSipClient:
    """One WebSocket connection carrying SIP, as a browser softphone opens it."""

    def __init__(self, connection: ClientConnection, *, transport: str) -> None:
        self.connection = connection
        self.transport = transport.upper()  # the Via token, WS or WSS
        self.host = f"{secrets.token_hex(6)}.invalid"  # RFC 7118 §5: JsSIP's random host
        self.call_id = secrets.token_hex(8)
        self.tag = secrets.token_hex(4)
        self.cseq = 0
        self.aor = ""
        self.domain = ""

    @classmethod
    def connect(
        cls,
        url: str,
        *,
        subprotocols: Sequence[str] = ("sip",),
        origin: str | None = "https://phone.example",
        ssl_context: ssl.SSLContext | None = None,
        max_size: int | None = 2**20,
    ) -> WsSipClient:
        # Entered at once: the connection is closed by close() (websockets 17 warns about a
        # connect() used without its context manager; before 17, connect() was a function).
        opener: Any = connect(
            url,
            subprotocols=list(subprotocols),  # type: ignore[arg-type]
            origin=origin,  # type: ignore[arg-type]
            ssl=ssl_context,
            open_timeout=5,
            max_size=max_size,
            compression=None,
        )
        connection: ClientConnection = opener.__enter__()
        return cls(connection, transport="wss" if url.startswith("wss:") else "ws")

    # -- messages -----------------------------------------------------------------------------

    def send(self, text: str) -> None:
        self.connection.send(text)

    def recv(self, timeout: float = 5.0) -> SipText:
        data = self.connection.recv(timeout=timeout)
        text = data if isinstance(data, str) else data.decode()
        return SipText.parse(text)

    def final(self, timeout: float = 10.0) -> SipText:
        """The next final response (provisional ones are skipped)."""
        while True:
            message = self.recv(timeout)
            if message.status is not None and message.status >= 200:
                return message

    def via(self, branch: str | None = None) -> str:
        return (
            f"SIP/2.0/{self.transport} {self.host};branch=z9hG4bK{branch or secrets.token_hex(6)}"
        )

    def contact(self, user: str) -> str:
        return f"<sip:{user}@{self.host};transport={self.transport.lower()}>"

    def request(
        self,
        method: str,
        uri: str,
        *,
        to: str,
        call_id: str | None = None,
        from_tag: str | None = None,
        cseq: int | None = None,
        extra: Sequence[tuple[str, str]] = (),
        body: str = "",
        branch: str | None = None,
        to_tag: str | None = None,
    ) -> str:
        if cseq is None:
            self.cseq += 1
            cseq = self.cseq
        lines = [
            f"{method} {uri} SIP/2.0",
            f"Via: {self.via(branch)}",
            "Max-Forwards: 70",
            f"To: <{to}>" + (f";tag={to_tag}" if to_tag else ""),
            f"From: <{self.aor}>;tag={from_tag or self.tag}",
            f"Call-ID: {call_id or self.call_id}",
            f"CSeq: {cseq} {method}",
            *(f"{name}: {value}" for name, value in extra),
        ]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body.encode())}")
        text = "\r\n".join(lines) + "\r\n\r\n" + body
        self.send(text)
        return text

    def respond(self, request: SipText, status: int, reason: str, *, body: str = "") -> None:
        """A response to ``request`` (its Via, From, To with our tag, Call-ID, CSeq)."""
        to = request.get("To") or ""
        if ";tag=" not in to and status > 100:
            to += f";tag={self.tag}"
        lines = [f"SIP/2.0 {status} {reason}"]
        lines += [f"Via: {via}" for via in request.get_all("Via")]
        lines += [
            f"From: {request.get('From')}",
            f"To: {to}",
            f"Call-ID: {request.get('Call-ID')}",
            f"CSeq: {request.get('CSeq')}",
        ]
        if status < 300 and request.method == "INVITE":
            lines.append(f"Contact: {self.contact(self.aor.split(':')[1].split('@')[0])}")
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body.encode())}")
        self.send("\r\n".join(lines) + "\r\n\r\n" + body)

    # -- REGISTER -----------------------------------------------------------------------------

    def register(self, user: str, password: str, *, domain: str, expires: int = 300) -> SipText:
        """REGISTER ``user`` at ``domain`` (``IP:PORT``), answering the digest challenge; the
        final response."""
        self.aor = f"sip:{user}@{domain}"
        self.domain = domain
        uri = f"sip:{domain}"
        call_id = secrets.token_hex(8)
        extra = [("Contact", f"{self.contact(user)};expires={expires}"), ("Expires", str(expires))]
        self.request("REGISTER", uri, to=self.aor, call_id=call_id, extra=extra)
        response = self.final()
        if response.status == 401:
            challenge = response.get("WWW-Authenticate") or ""
            auth = digest_authorization(
                challenge,
                method="REGISTER",
                uri=uri,
                user=user,
                password=password,
            )
            self.request(
                "REGISTER",
                uri,
                to=self.aor,
                call_id=call_id,
                extra=[*extra, ("Authorization", auth)],
            )
            response = self.final()
        return response

    # -- calls --------------------------------------------------------------------------------

    def invite(self, user: str, password: str, *, callee: str, sdp_port: int = 40000) -> SipText:
        """INVITE ``callee`` at our registration's domain as ``user``, answering the 407; the
        final response (a 2xx is not ACKed yet: :meth:`ack`)."""
        uri = f"sip:{callee}@{self.domain}"
        self.dialog_call_id = secrets.token_hex(8)
        self.dialog_cseq = 1
        self.dialog_uri = uri
        self.dialog_to = uri
        contact = [("Contact", self.contact(user))]
        body = SDP.format(port=sdp_port)
        branch = secrets.token_hex(6)
        call = {"to": uri, "call_id": self.dialog_call_id, "body": body}
        self.request("INVITE", uri, cseq=1, branch=branch, extra=contact, **call)
        response = self.final(timeout=15)
        if response.status == 407:
            to_tag = _tag(response.get("To") or "")
            # RFC 3261 §17.1.1.3: the ACK of a non-2xx final response is in its transaction.
            self.request(
                "ACK",
                uri,
                to=uri,
                call_id=self.dialog_call_id,
                cseq=1,
                branch=branch,
                to_tag=to_tag,
            )
            auth = digest_authorization(
                response.get("Proxy-Authenticate") or "",
                method="INVITE",
                uri=uri,
                user=user,
                password=password,
            )
            self.dialog_cseq = 2
            extra = [*contact, ("Proxy-Authorization", auth)]
            self.request("INVITE", uri, cseq=2, extra=extra, **call)
            response = self.final(timeout=15)
        if response.status is not None and response.status < 300:
            self.dialog_to_tag = _tag(response.get("To") or "")
            contact_uri = re.search(r"<([^>]+)>", response.get("Contact") or "")
            self.dialog_uri = contact_uri.group(1) if contact_uri else uri
        return response

    def ack(self) -> None:
        """ACK the 2xx of :meth:`invite` (a transaction of its own, RFC 3261 §13.2.2.4)."""
        self.request(
            "ACK",
            self.dialog_uri,
            to=self.dialog_to,
            call_id=self.dialog_call_id,
            cseq=self.dialog_cseq,
            to_tag=self.dialog_to_tag,
        )

    def bye(self) -> SipText:
        """End the call of :meth:`invite`; the BYE's final response."""
        self.dialog_cseq += 1
        self.request(
            "BYE",
            self.dialog_uri,
            to=self.dialog_to,
            call_id=self.dialog_call_id,
            cseq=self.dialog_cseq,
            to_tag=self.dialog_to_tag,
        )
        return self.final()

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> WsSipClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _tag(value: str) -> str | None:
    match = re.search(r";\s*tag=([^;\s]+)", value)
    return match.group(1) if match else None
