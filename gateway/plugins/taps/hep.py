"""The ``hep`` SIP capture agent: a copy of every SIP message the gateway sends or receives, in
HEP version 3, to a Homer collector (heplify-server, sipcapture) or ``sngrep -L``.

Theory of operation. The SIP stack hands the agent each message as bytes on the wire, with its
transport and addresses (``interfaces.SipCapture``); the agent encodes one HEP3 packet per message
(HEP3 rev. 37: the "HEP3" id, the total length, then chunks of vendor id, type id, length
including the chunk's 6-octet header, value) and queues it. Its own task sends the queue to the
collector, one packet per UDP datagram. The queue is bounded: a collector that cannot keep up
loses copies, counted, never the SIP stack's time.

Chunks sent (generic vendor 0), in this order: 1 IP family (2 IPv4, 10 IPv6), 2 IP protocol (17
UDP; 6 for TCP and TLS: the payload is the decrypted message), 3/4 or 5/6 the addresses, 7/8 the
ports, 9/10 the time (seconds and microseconds), 11 protocol type 1 (SIP), 12 capture agent id,
14 the collector's password (if configured; never logged), 15 the message, 17 the correlation id
(the message's Call-ID: Homer ties a call's messages with it), 19 the agent's name.

RTCP (``rtcp = true``, the default): each RTCP datagram a call's leg sends (read for call quality,
``[media] rtcp_quality``) goes as protocol type 5 with its first SR or RR as the JSON object
heplify-server and captagent use (``type``, ``ssrc``, ``report_count``, ``sender_information``,
``report_blocks``), from the leg's RTCP address in its SDP to our RTCP port, correlated with that
leg's Call-ID: Homer shows it beside the call's SIP. Compounds with neither SR nor RR are not
sent.

Keys (``redact_keys = true``, the default): a copy is a log of the call's signalling, sent in
clear over UDP to a collector that many people read, so the media keys an SDP carries are
overwritten before it is queued: the key-salt of every ``inline:`` key-params of an
``a=crypto`` line (SDES, RFC 4568 §9.1) and the MIKEY message of an ``a=key-mgmt:mikey`` line
(RFC 4567 §3: in MIKEY's ``null`` mode it holds the TGK in clear). Each is replaced by as many
``*`` as it had characters, so Content-Length and every offset stay right and the line still
shows which suite, lifetime and MKI were offered. Messages without either attribute are
passed unchanged after one substring test each.

Credentials (``redact_credentials = true``, the default): the ``response`` of a digest
``Authorization`` or ``Proxy-Authorization`` header (RFC 3261 §22.4, RFC 7616 §3.4) is a hash of
the password with values the same message shows in clear (username, realm, nonce, cnonce, nc, qop,
method, uri): whoever reads the copy can try a dictionary against it offline, at the speed of their
own hardware, where the gateway's failure limits cannot see them; so can a carrier's ``rspauth``
(``Authentication-Info``, RFC 7616 §3.5). Each is overwritten the same way (as many ``*``), so
the collector still shows who authenticated, with which algorithm and nonce.

DTMF digits (``redact_dtmf_digits = true``, the default): a digit sent as SIP INFO (ours when
the call interworks DTMF, or a phone's: ``application/dtmf-relay``'s ``Signal=5``, or the bare
digit of ``application/dtmf``) is often a payment card number's or a PIN's, which PCI DSS
requirement 3.3 forbids keeping after authorisation; the log already withholds it (``[gateway]
log_dtmf_digits``), and a collector's database is a log kept for weeks. Each digit is overwritten
by as many ``x`` (not ``*``: that is a DTMF key), so the collector still shows that a digit went,
when, which way, and its ``Duration``.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
import struct
from typing import TYPE_CHECKING, Any

import attrs
import trio

from gateway.core.hookspecs import hookimpl
from gateway.core.logs import transport_error_text
from gateway.core.transport.flows import Address, format_host_port

if TYPE_CHECKING:
    from gateway.core.interfaces import SipCapture
    from gateway.core.plugins import Registry

log = logging.getLogger(__name__)

SIP = 1  # HEP protocol types (chunk 0x0b)
RTCP_JSON = 5  # an RTCP report as JSON (captagent's and heplify's field names: rtcp.report_json)
DEFAULT_PORT = 9060
_CALL_ID = re.compile(rb"\r\n(?:Call-ID|i)[ \t]*:[ \t]*([^\r\n]+)", re.IGNORECASE)
# RFC 4568 §9.1: "inline:" key-salt ["|" lifetime] ["|" mki ":" length], base64 key-salt.
_CRYPTO_LINE = re.compile(rb"^a=crypto:[^\r\n]*", re.MULTILINE)
_INLINE_KEY = re.compile(rb"(?<=inline:)[A-Za-z0-9+/=]+")
# RFC 4567 §3.1: "a=key-mgmt:" prtcl-id SP keymgmt-data (base64); prtcl-id "mikey".
_MIKEY_LINE = re.compile(
    rb"^(a=key-mgmt:[ \t]*mikey[ \t]+)([A-Za-z0-9+/=]+)", re.MULTILINE | re.IGNORECASE
)
# RFC 3261 §7.3.1: header names are case-insensitive and a header may continue on lines that
# start with white space (obsolete folding, still accepted).
_DIGEST_HEADER = re.compile(
    rb"^(?:Proxy-)?(?:Authorization|Authentication-Info)[ \t]*:[^\r\n]*(?:\r?\n[ \t][^\r\n]*)*",
    re.MULTILINE | re.IGNORECASE,
)
# RFC 3261 §25.1, RFC 7616 §3.4-3.5: "response" (the client's proof) and "rspauth" (the server's,
# in Authentication-Info) are quoted hashes of the password. The look-behind keeps a longer
# parameter name that ends the same way from matching.
_DIGEST_PROOF = re.compile(
    rb'(?<![A-Za-z0-9_.!%*+`\'~-])(?:response|rspauth)[ \t]*=[ \t]*"([^"\r\n]*)"', re.IGNORECASE
)

# RFC 3261 §7.3.1, §20.15: Content-Type, or "c" in compact form, any case; a parameter may follow.
_DTMF_CONTENT_TYPE = re.compile(
    rb"^(?:Content-Type|c)[ \t]*:[ \t]*application/(dtmf-relay|dtmf)[ \t]*(?:;[^\r\n]*)?\r?$",
    re.MULTILINE | re.IGNORECASE,
)
# The de-facto application/dtmf-relay body (Cisco's, as FreeSWITCH and Asterisk send it): one
# "key=value" a line, keys in any case; only Signal's value is the digit.
_DTMF_SIGNAL = re.compile(rb"^([ \t]*signal[ \t]*=)([^\r\n]*)", re.MULTILINE | re.IGNORECASE)
_NOT_BLANK = re.compile(rb"[^ \t\r\n]")


def _chunk(kind: int, value: bytes) -> bytes:
    return struct.pack("!HHH", 0, kind, 6 + len(value)) + value


@attrs.frozen
class HepAgent:
    """Who the packets say captured them."""

    capture_id: int = 0
    name: str = ""
    password: str = attrs.field(default="", repr=False)


def encode_hep3(
    payload: bytes,
    *,
    source: Address,
    destination: Address,
    transport: str,
    at: float,
    agent: HepAgent,
    correlation: bytes = b"",
    protocol: int = SIP,
) -> bytes:
    """One HEP3 packet carrying ``payload``: a SIP message, or (``protocol`` 5) an RTCP report
    as JSON."""
    src, dst = ipaddress.ip_address(source[0]), ipaddress.ip_address(destination[0])
    if src.version != dst.version:
        raise ValueError("source and destination of different IP versions")
    v4 = src.version == 4
    seconds = int(at)
    chunks = [
        _chunk(0x01, bytes([2 if v4 else 10])),
        _chunk(0x02, bytes([17 if transport == "udp" else 6])),
        _chunk(0x03 if v4 else 0x05, src.packed),
        _chunk(0x04 if v4 else 0x06, dst.packed),
        _chunk(0x07, struct.pack("!H", source[1])),
        _chunk(0x08, struct.pack("!H", destination[1])),
        _chunk(0x09, struct.pack("!I", seconds)),
        _chunk(0x0A, struct.pack("!I", min(999_999, round((at - seconds) * 1_000_000)))),
        _chunk(0x0B, bytes([protocol])),
        _chunk(0x0C, struct.pack("!I", agent.capture_id)),
    ]
    if agent.password:
        chunks.append(_chunk(0x0E, agent.password.encode()))
    chunks.append(_chunk(0x0F, payload))
    if correlation:
        chunks.append(_chunk(0x11, correlation))
    if agent.name:
        chunks.append(_chunk(0x13, agent.name.encode()))
    body = b"".join(chunks)
    if 6 + len(body) > 0xFFFF:
        raise ValueError("message too large for one HEP packet")
    return b"HEP3" + struct.pack("!H", 6 + len(body)) + body


def call_id_of(message: bytes) -> bytes:
    """The Call-ID of a SIP message's bytes (b"" when there is none): its correlation id."""
    found = _CALL_ID.search(message)
    return found.group(1).strip() if found else b""


def _stars(found: re.Match[bytes]) -> bytes:
    return b"*" * (found.end() - found.start())


def _redact_crypto_line(line: re.Match[bytes]) -> bytes:
    return _INLINE_KEY.sub(_stars, line.group(0))


def _redact_mikey_line(line: re.Match[bytes]) -> bytes:
    return line.group(1) + b"*" * len(line.group(2))


def redact_keys(message: bytes) -> bytes:
    """``message`` with the SDES keys and MIKEY messages of its SDP overwritten (same length)."""
    if b"a=crypto:" in message:
        message = _CRYPTO_LINE.sub(_redact_crypto_line, message)
    if b"a=key-mgmt:" in message:
        message = _MIKEY_LINE.sub(_redact_mikey_line, message)
    return message


def _redact_proof(found: re.Match[bytes]) -> bytes:
    start, end = found.span(1)
    whole = found.group(0)
    offset = found.start()
    return whole[: start - offset] + b"*" * (end - start) + whole[end - offset :]


def _redact_digest_header(header: re.Match[bytes]) -> bytes:
    return _DIGEST_PROOF.sub(_redact_proof, header.group(0))


def redact_credentials(message: bytes) -> bytes:
    """``message`` with the digest ``response`` of its Authorization and Proxy-Authorization
    headers and the ``rspauth`` of its Authentication-Info headers overwritten (same length).
    Only the header section is searched: a body (a MESSAGE's text, say) is left as it was."""
    head_end = message.find(b"\r\n\r\n")
    head = message if head_end < 0 else message[:head_end]
    redacted = _DIGEST_HEADER.sub(_redact_digest_header, head)
    if redacted == head:
        return message
    return redacted if head_end < 0 else redacted + message[head_end:]


def _exes(found: re.Match[bytes]) -> bytes:
    return b"x" * (found.end() - found.start())


def _redact_signal(line: re.Match[bytes]) -> bytes:
    return line.group(1) + _NOT_BLANK.sub(_exes, line.group(2))


def redact_dtmf_digits(message: bytes) -> bytes:
    """``message`` with the DTMF digit of its body overwritten by ``x`` (same length) when its
    Content-Type is ``application/dtmf-relay`` (the value of each ``Signal=`` line) or
    ``application/dtmf`` (every character of the body but white space). Other messages, a
    multipart body included, are returned as they were."""
    head_end, body_start = message.find(b"\r\n\r\n"), 4
    if head_end < 0:
        # Bare LF line ends: the parser answers such a message 400, but the copy is taken as
        # it came, and its digit is no less a card number's.
        head_end, body_start = message.find(b"\n\n"), 2
        if head_end < 0:
            return message
    head = message[:head_end]
    # One substring test for the messages without (every one but a DTMF INFO).
    content_type = _DTMF_CONTENT_TYPE.search(head) if b"dtmf" in head.lower() else None
    if content_type is None:
        return message
    body_start += head_end
    body = message[body_start:]
    if content_type.group(1).lower() == b"dtmf-relay":
        redacted = _DTMF_SIGNAL.sub(_redact_signal, body)
    else:
        redacted = _NOT_BLANK.sub(_exes, body)
    return message[:body_start] + redacted


class HepCapture:
    """``interfaces.SipCapture``: encodes each message, queues it, and sends it from its task."""

    name = "hep"

    def __init__(self, config: HepConfig) -> None:
        self.config = config
        self._agent = HepAgent(config.capture_id, config.agent_name, config.password)
        self._send, self._receive = trio.open_memory_channel[bytes](config.queue)
        self.dropped = 0
        """Messages not sent: the queue was full, or one did not fit a HEP packet."""
        self.sent = 0

    def message(
        self, data: bytes, *, transport: str, source: Address, destination: Address, at: float
    ) -> None:
        if self.config.redact_keys:
            data = redact_keys(data)
        if self.config.redact_credentials:
            data = redact_credentials(data)
        if self.config.redact_dtmf_digits:
            data = redact_dtmf_digits(data)
        try:
            packet = encode_hep3(
                data,
                source=source,
                destination=destination,
                transport=transport,
                at=at,
                agent=self._agent,
                correlation=call_id_of(data),
            )
            self._send.send_nowait(packet)
        except (ValueError, trio.WouldBlock, trio.ClosedResourceError):
            self.dropped += 1

    @property
    def rtcp_enabled(self) -> bool:
        """Whether calls hand this agent their RTCP reports (``rtcp`` key): the core looks
        at it once, at start-up."""
        return self.config.rtcp

    def rtcp_report(
        self,
        report: bytes,
        *,
        source: Address,
        destination: Address,
        at: float,
        correlation: bytes,
    ) -> None:
        """One RTCP report of a call's leg (its JSON, :func:`gateway.core.media.rtcp.report_json`)
        as HEP protocol type 5, correlated with the leg's Call-ID as its SIP is. Queued and
        dropped when full, like SIP."""
        try:
            packet = encode_hep3(
                report,
                source=source,
                destination=destination,
                transport="udp",
                at=at,
                agent=self._agent,
                correlation=correlation,
                protocol=RTCP_JSON,
            )
            self._send.send_nowait(packet)
        except (ValueError, trio.WouldBlock, trio.ClosedResourceError):
            self.dropped += 1

    async def run(self) -> None:
        host, port = self.config.collector_address
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with trio.socket.socket(family, socket.SOCK_DGRAM) as sock:
            async with self._receive:
                async for packet in self._receive:
                    try:
                        await sock.sendto(packet, (host, port))
                        self.sent += 1
                    except OSError as exc:
                        self.dropped += 1
                        if self.dropped == 1:
                            where = format_host_port(host, port)
                            log.warning(
                                "HEP: cannot send to %s: %s", where, transport_error_text(exc)
                            )


# -- plugin configuration and registration (entry point ``hep``) ---------------------------------


@attrs.frozen
class HepConfig:
    """``[plugins.hep]``. See docs/configuration.md."""

    collector: str = ""
    capture_id: int = 0
    agent_name: str = "voipgw"
    password: str = attrs.field(default="", repr=False)
    queue: int = 10_000
    rtcp: bool = True
    redact_keys: bool = True
    redact_credentials: bool = True
    redact_dtmf_digits: bool = True

    def __attrs_post_init__(self) -> None:
        # structure() reports a ValueError as a config error of this table; say which key.
        self.collector_address  # noqa: B018 - checks it
        if not 0 <= self.capture_id <= 0xFFFFFFFF:
            raise ValueError(f"capture_id: expected 0 to 4294967295, got {self.capture_id}")
        if not 10 <= self.queue <= 1_000_000:
            raise ValueError(f"queue: expected 10 to 1000000 messages, got {self.queue}")

    @property
    def collector_address(self) -> tuple[str, int]:
        """``udp:HOST[:PORT]`` (an IP literal, IPv6 in brackets; port 9060 by default) as
        (host, port)."""
        transport, _, rest = self.collector.partition(":")
        if rest.startswith("["):
            host, _, after = rest[1:].partition("]")
            port_text = after.removeprefix(":")
        elif rest.count(":") == 1:
            host, _, port_text = rest.partition(":")
        else:
            host, port_text = rest, ""
        try:
            if transport != "udp":
                raise ValueError
            ipaddress.ip_address(host)
            port = int(port_text or DEFAULT_PORT)
            if not 0 < port < 65536:
                raise ValueError
        except ValueError:
            raise ValueError(
                f"collector: expected udp:ADDRESS:PORT (e.g. udp:192.0.2.30:9060), "
                f"not {self.collector!r}"
            ) from None
        return host, port


@hookimpl
def gateway_plugin_config() -> type:
    return HepConfig


@hookimpl
def gateway_register_sip_captures(registry: Registry[Any], config: HepConfig | None) -> None:
    """Register the ``hep`` agent (its table names the collector: there is no default)."""
    if config is not None:
        registry.add(HepCapture.name, HepCapture(config))


if TYPE_CHECKING:

    def _conforms(capture: HepCapture) -> None:
        _capture: SipCapture = capture
