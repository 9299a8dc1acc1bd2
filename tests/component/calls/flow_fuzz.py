"""A structure-aware mutator for whole SIP messages and the interceptor that puts one mutated
message in place of a real peer's own, for test_b2bua_fuzzed_call_flows.py.

The mutator knows what a header and a body are: it gives one header an edge value (empty, huge,
non-ASCII, bad UTF-8, another type: a CSeq naming another method, a RAck, Session-Expires and
Min-SE out of range, Replaces, Refer-To with embedded headers, Reason, Geolocation ...), puts
Content-Length one off the body, or rewrites the body the way a confused peer would (SDP with
odd m= lines, port zero, a=crypto garbage, no c=, many streams; multipart bodies with a wrong,
empty or missing boundary, parts without headers, nested multiparts, a PIDF-LO the Geolocation
header points at). The rest of its draws go to tests/component/calls/fuzz_checks.py's
mutate_message (one field, the whole message as bytes, or nothing).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable

from gateway.core.sip.message import Request, Response
from gateway.core.sip.serializer import serialize_message
from gateway.testing.network import Address
from gateway.testing.sip_agent import SipAgent
from tests.component.calls.fuzz_checks import MAX_UDP, mutate_message

# What any header may be given: empty, blank, huge, non-ASCII, bad UTF-8, control octets.
EDGE = [
    b"",
    b" ",
    b"x" * 9000,
    b"a," * 2000,
    "\u00dcn\u00efc\u00f8d\u00e9 \u2603 \u202e".encode(),
    "\u0663\u00b2".encode(),  # digits str.isdigit() takes and int() may refuse
    b"\xff\xfe\xc3\x28",
    b"\x01\x7f",
    b"<" * 300,
    b'"unterminated',
    b"-1",
    b"0",
    b"4294967296",
    b"18446744073709551616",
    b"1e9",
    b";;;;",
    b"*",
]
# Per header: values of the wrong type or out of range, and valid ones in odd places.
TYPED: dict[str, list[bytes]] = {
    "CSeq": [
        b"1",
        b"1 ",
        b" INVITE",
        b"x INVITE",
        b"2147483648 INVITE",
        b"-1 INVITE",
        b"1 BYE",
        b"1 ACK",
        b"1 CANCEL",
        b"1 PRACK",
        b"1 invite",
        b"1 INVITE INVITE",
        b"\xd9\xa3 INVITE",
        b"99999999999999999999 INVITE",
    ],
    "RAck": [
        b"1 1 INVITE",
        b"0 0 INVITE",
        b"1 1",
        b"1 1 BYE",
        b"x y z",
        b"4294967296 1 INVITE",
        b"1 2147483648 INVITE",
        b"",
        b"1 1 INVITE;x",
    ],
    "RSeq": [b"0", b"1", b"4294967295", b"4294967296", b"-1", b"x", b"1 2"],
    "Session-Expires": [
        b"0",
        b"1",
        b"89",
        b"90",
        b"4294967296",
        b"90;refresher=",
        b"90;refresher=x",
        b"x",
        b"-90",
        b"1800;refresher=uac;refresher=uas",
    ],
    "Min-SE": [b"0", b"1", b"90", b"86400", b"4294967296", b"x", b"-1", b"90;x"],
    "Supported": [b"timer", b"100rel", b"replaces", b"timer, 100rel, replaces, norefersub", b",,,"],
    "Require": [b"100rel", b"timer", b"replaces", b"foo", b"100rel, 100rel", b"precondition"],
    "Replaces": [
        b"x;to-tag=a;from-tag=b",
        b";to-tag=;from-tag=",
        b"x;early-only",
        b"x",
        b"x;to-tag=a",
        b"%00;to-tag=a;from-tag=b",
    ],
    "Refer-To": [
        b"<sip:+15550199@127.0.0.1:5060>",
        b"<sip:+15550199@127.0.0.1?Replaces=x%3Bto-tag%3Da%3Bfrom-tag%3Db>",
        b"<sip:a@127.0.0.1?Replaces=%3B%3B&Require=replaces&Call-ID=x&Via=x>",
        b"<sip:a@127.0.0.1?Replaces=%ZZ>",
        b"<sip:a@127.0.0.1?body=BYE&Content-Type=a%2Fb&Route=%3Csip%3Ax%3E>",
        b"<sip:a@127.0.0.1?" + b"X=y&" * 500 + b">",
        b"<tel:+15550199>",
        b"<urn:service:sos>",
        b"<cid:x@y>",
        b"sip:a@b, sip:c@d",
    ],
    "Referred-By": [b"<sip:>", b"<sip:a@b>;cid=x", b"<sip:a@b>" * 100],
    "Reason": [
        b"Q.850;cause=16",
        b"Q.850;cause=0",
        b"Q.850;cause=4294967296",
        b"Q.850;cause=x",
        b'SIP;cause=200;text="x',
        b"SIP;cause=999",
        b"Q.850",
        b"FOO;cause=1",
        b"Q.850;cause=16, SIP;cause=487, Q.850;cause=1",
        b'SIP;text="' + b"\xff" * 40,
    ],
    "Geolocation": [
        b"<cid:loc@127.0.0.2>",
        b"<cid:>",
        b"<https://127.0.0.9/loc>",
        b"<>",
        b"<cid:a@b>, <cid:c@d>, <sip:x@y>",
        b"<cid:missing@x>;inserted-by=x",
        b"<cid:" + b"x" * 3000 + b">",
    ],
    "Geolocation-Routing": [b"yes", b"no", b"maybe", b""],
    "Content-Type": [
        b"application/sdp",
        b"multipart/mixed;boundary=unique-boundary-1",
        b"multipart/mixed",
        b"multipart/mixed;boundary=",
        b"multipart/alternative;boundary=x",
        b"application/pidf+xml",
        b"application/isup;version=itu-t92+",
        b"text/plain",
        b"application/sdp;charset=utf-16",
        b"/",
        b"application/",
    ],
    "Content-Disposition": [b"session", b"session;handling=required", b"render;handling=x", b""],
    "Event": [b"refer", b"refer;id=1", b"refer;id=x", b"talk", b"dialog", b""],
    "Subscription-State": [b"active", b"terminated;reason=noresource", b"active;expires=x", b""],
    "Expires": [b"0", b"-1", b"4294967296", b"x"],
    "Max-Forwards": [b"0", b"1", b"-1", b"256", b"x"],
    "Contact": [
        b"*",
        b"<sip:evil@127.0.0.9:5060>",
        b"<sips:a@127.0.0.2>",
        b"<sip:[::1]:5060>",
        b"<tel:+1>",
        b"<sip:a@b>;expires=x",
        b"<sip:a@127.0.0.2;transport=tcp>",
    ],
    "Record-Route": [b"<sip:127.0.0.9;lr>", b"<sip:127.0.0.2>", b"<>", b"x"],
    "Route": [b"<sip:127.0.0.1;lr>", b"<sip:127.0.0.9;lr>", b"<sip:127.0.0.1:5060;lr>, <x>"],
    "P-Asserted-Identity": [b"<sip:+15550100@127.0.0.2>", b"<tel:+>", b"<sip:>"],
    "Privacy": [b"id", b"header;user", b"none", b"x"],
    "Accept": [b"application/sdp", b"*/*", b""],
    "Allow": [b"INVITE", b"", b"UPDATE, INFO, PRACK"],
}
HEADER_NAMES = list(TYPED)

CRYPTO_JUNK = [
    b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:!!!!",
    b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:",
    b"a=crypto:x AES_CM_128_HMAC_SHA1_80 inline:AAAA",
    b"a=crypto:1 FOO inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz",
    b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^99|1:9",
    b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz;x=y",
    b"a=crypto:4294967296 AES_256_CM_HMAC_SHA1_80 inline:" + b"A" * 3000,
    b"a=crypto:",
]
SDP_LINES = [
    b"a=rtpmap:96",
    b"a=rtpmap:0 PCMU/0",
    b"a=rtpmap:x y/z/w",
    b"a=fmtp:101 0-99999",
    b"a=rtcp:0",
    b"a=rtcp:70000 IN IP4 x",
    b"a=rtcp-mux",
    b"a=ptime:0",
    b"a=ptime:-1",
    b"a=sendonly",
    b"a=inactive",
    b"a=recvonly",
    b"a=group:BUNDLE 0 1 2",
    b"a=mid:",
    b"a=fingerprint:sha-256 ZZ",
    b"a=setup:x",
    b"a=ice-ufrag:",
    b"a=candidate:1 1 UDP x",
    b"a=key-mgmt:mikey !!!",
    b"a=zrtp-hash:1.10 x",
    b"a=T38FaxVersion:x",
    b"b=AS:-1",
    b"b=AS:99999999999999999999",
    b"c=IN IP4 0.0.0.0",
    b"c=IN IP6 ::1",
    b"c=IN IP4 ",
    b"c=IN IP4 256.1.1.1",
    b"c=IN IP4 224.2.1.1/127/3",
    b"k=clear:x",
    b"a=label:1",
]
ODD_M = [
    b"m=audio 0 RTP/AVP 0",
    b"m=audio 70000 RTP/AVP 0",
    b"m=audio 1000/2 RTP/AVP 0 8",
    b"m=audio 1000 RTP/AVP",
    b"m=audio 1000 RTP/AVP 128 -1 x",
    b"m=audio 1000 RTP/SAVP 0",
    b"m=audio 9 UDP/TLS/RTP/SAVPF 0",
    b"m=audio 1000 RTP/SAVPF 0 8 101",
    b"m=video 1000 RTP/AVP 96",
    b"m=image 1000 udptl t38",
    b"m=image 0 udptl t38",
    b"m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
    b"m=text 1000 RTP/AVP 98",
    b"m=message 1000 TCP/MSRP *",
    b"m=audio x RTP/AVP 0",
    b"m=",
]
PIDF = (
    b'<?xml version="1.0"?><presence xmlns="urn:ietf:params:xml:ns:pidf" '
    b'xmlns:gp="urn:ietf:params:xml:ns:pidf:geopriv10" entity="sip:+15550100@127.0.0.2">'
    b'<tuple id="t"><status><gp:geopriv><gp:location-info/></gp:geopriv></status></tuple>'
    b"</presence>"
)
PIDF_JUNK = [
    PIDF,
    PIDF[:60],
    b"<presence>" * 200,
    b"<?xml ?><!DOCTYPE x [<!ENTITY a 'b'>]><x>&a;</x>",
]


def _head_body(data: bytes) -> tuple[list[bytes], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    return head.split(b"\r\n"), body


def _join(lines: list[bytes], body: bytes, length: int | None = None) -> bytes:
    """The message with Content-Length made to fit ``body`` (or set to ``length``)."""
    kept = [line for line in lines if not line.lower().startswith(b"content-length:")]
    kept.append(b"Content-Length: %d" % (len(body) if length is None else length))
    return b"\r\n".join(kept) + b"\r\n\r\n" + body


def _header_name(line: bytes) -> str:
    return line.partition(b":")[0].strip().decode("latin-1")


def _content_type(lines: list[bytes]) -> bytes:
    for line in lines[1:]:
        if _header_name(line).lower() in ("content-type", "c"):
            return line.partition(b":")[2].strip().lower()
    return b""


def edge_header(data: bytes, rng: random.Random) -> bytes:
    """One header of the message given an edge value, added, or repeated with one."""
    lines, body = _head_body(data)
    present = [i for i in range(1, len(lines)) if _header_name(lines[i]) in TYPED]
    if present and rng.random() < 0.6:
        i = rng.choice(present)
        name = _header_name(lines[i])
    else:
        i, name = 0, rng.choice(HEADER_NAMES)
    value = rng.choice(TYPED[name] * 2 + EDGE)
    if name == "CSeq" and rng.random() < 0.5:  # the right number, another method or none
        number = _cseq_number(lines)
        value = rng.choice(
            [b"%d %s" % (number, m) for m in (b"BYE", b"ACK", b"INVITE", b"FOO", b"")]
        )
    line = name.encode() + b": " + value
    if i == 0:
        lines.insert(rng.randrange(1, len(lines) + 1), line)
    elif rng.random() < 0.2:
        lines.insert(i + 1, line)  # the header twice
    else:
        lines[i] = line
    return _join(lines, body)


def _cseq_number(lines: list[bytes]) -> int:
    for line in lines[1:]:
        if _header_name(line) == "CSeq":
            number = line.partition(b":")[2].split()
            if number and number[0].isdigit():
                return int(number[0])
    return 1


def content_length_off(data: bytes, rng: random.Random) -> bytes:
    """Content-Length one off the body, or zero, or past any datagram, or missing."""
    lines, body = _head_body(data)
    length = rng.choice([len(body) + 1, max(len(body) - 1, 0), 0, 70000, len(body) + 2])
    if rng.random() < 0.15:
        return b"\r\n".join(lines) + b"\r\n\r\n" + body  # no Content-Length at all (UDP: fine)
    return _join(lines, body, length)


def mutate_sdp(sdp: bytes, rng: random.Random) -> bytes:
    """SDP a confused peer might write: odd m= lines, port zero, crypto garbage, no c=, many
    streams, lines dropped or out of order."""
    lines = [line for line in sdp.split(b"\r\n") if line]
    for _ in range(rng.randrange(1, 4)):
        lines = lines or [b"v=0"]
        m_lines = [i for i, line in enumerate(lines) if line.startswith(b"m=")]
        edit = rng.randrange(9)
        if edit == 0 and m_lines:
            lines[rng.choice(m_lines)] = rng.choice(ODD_M)
        elif edit == 1 and m_lines:
            i = rng.choice(m_lines)
            words = lines[i].split(b" ")
            if len(words) > 1:
                words[1] = rng.choice([b"0", b"1", b"65535", b"65536", b""])
                lines[i] = b" ".join(words)
        elif edit == 2:
            lines.insert(rng.randrange(1, len(lines) + 1), rng.choice(CRYPTO_JUNK))
        elif edit == 3:
            lines = [
                line
                for line in lines
                if not line.startswith(rng.choice([b"c=", b"o=", b"v=", b"s=", b"t="]))
            ]
        elif edit == 4:  # many more streams
            lines += [rng.choice([*ODD_M[:3], b"m=audio 2000 RTP/AVP 0"])] * rng.choice(
                [1, 3, 20, 70]
            )
        elif edit == 5:
            lines.insert(rng.randrange(1, len(lines) + 1), rng.choice(SDP_LINES))
        elif edit == 6 and m_lines:  # crypto on an RTP/SAVP stream, keys garbage
            i = rng.choice(m_lines)
            lines[i] = lines[i].replace(b"RTP/AVP", b"RTP/SAVP")
            lines.insert(i + 1, rng.choice(CRYPTO_JUNK))
        elif edit == 7 and len(lines) > 2:
            i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
        else:
            lines.append(lines[-1])
    return b"\r\n".join(lines) + b"\r\n"


def multipart_body(sdp: bytes, rng: random.Random) -> tuple[bytes, bytes]:
    """(Content-Type, body): a multipart/mixed with the SDP and a PIDF-LO, its framing broken
    one way or another (RFC 2046 §5.1.1; RFC 6442 §4.1 for the location part)."""
    boundary = rng.choice([b"unique-boundary-1", b"", b"x" * 80, b"a b", b"--", b'"q"'])
    declared = rng.choice([boundary, boundary, b"other", None])
    parts = [
        (b"Content-Type: application/sdp\r\n", sdp),
        (
            b"Content-Type: application/pidf+xml\r\nContent-ID: <loc@127.0.0.2>\r\n",
            rng.choice(PIDF_JUNK),
        ),
    ]
    edit = rng.randrange(6)
    if edit == 0:
        parts[0] = (b"", sdp)  # a part without headers (text/plain by RFC 2046 §5.1)
    elif edit == 1:
        parts *= rng.choice([5, 40])
    elif edit == 2:
        parts.append((b"Content-Type: multipart/mixed;boundary=inner\r\n", b"--inner\r\n\r\nx\r\n"))
    elif edit == 3:
        parts[1] = (b"Content-Type: application/pidf+xml\r\nContent-Length: 5\r\n", PIDF)
    body = b"".join(
        b"--" + boundary + b"\r\n" + head + b"\r\n" + content + b"\r\n" for head, content in parts
    )
    if edit != 4:
        body += b"--" + boundary + b"--\r\n"  # edit 4: no closing delimiter
    if edit == 5:
        body = body.replace(b"\r\n", b"\n")
    ctype = b"multipart/mixed" + (b"" if declared is None else b";boundary=" + declared)
    return ctype, body


def edge_body(data: bytes, rng: random.Random) -> bytes:
    """The body rewritten (SDP mutated, wrapped in a broken multipart, or swapped for another),
    Content-Type and Content-Length made to match what was written."""
    lines, body = _head_body(data)
    sdp = (
        body
        if b"v=0" in body
        else b"v=0\r\no=- 1 1 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\n"
        b"m=audio 40000 RTP/AVP 0\r\n"
    )
    draw = rng.random()
    if draw < 0.55:
        ctype, body = b"application/sdp", mutate_sdp(sdp, rng)
    elif draw < 0.85:
        ctype, body = multipart_body(mutate_sdp(sdp, rng) if rng.random() < 0.5 else sdp, rng)
        if rng.random() < 0.5:
            lines.append(b"Geolocation: " + rng.choice(TYPED["Geolocation"]))
    else:
        ctype, body = rng.choice(
            [
                (b"application/sdp", b""),
                (b"application/sdp", b"\r\n"),
                (b"application/sdp", b"x" * 20000),
                (b"application/pidf+xml", rng.choice(PIDF_JUNK)),
                (
                    b"message/sipfrag;version=2.0",
                    rng.choice([b"SIP/2.0 200 OK\r\n", b"SIP/2.0 x\r\n", b""]),
                ),
                (
                    b"application/dtmf-relay",
                    rng.choice([b"Signal=5\r\nDuration=160\r\n", b"Signal=\r\nDuration=-1\r\n"]),
                ),
            ]
        )
    lines = [line for line in lines if _header_name(line).lower() not in ("content-type", "c")]
    lines.append(b"Content-Type: " + ctype)
    return _join(lines, body)


def mutate_structured(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    """(how, the mutated message): a header edge value, a body rewrite, Content-Length off, or
    one of fuzz_checks.mutate_message's (one field, as bytes, or the message as it is)."""
    draw = rng.random()
    if draw < 0.4:
        how, out = "header", edge_header(data, rng)
    elif draw < 0.65:
        how, out = "body", edge_body(data, rng)
    elif draw < 0.75:
        how, out = "length", content_length_off(data, rng)
    else:
        how, out = mutate_message(data, rng)
    return how, out[:MAX_UDP]


Match = Callable[[Request | Response], bool]


class Interceptor:
    """Stands between a :class:`SipAgent` and the network: while armed, the first message the
    agent sends that ``match`` takes (a request or response made by its own transactions and
    dialogs, so with every identifier right) goes out mutated instead; the agent knows nothing
    of it, so its retransmissions (a request's Timer A, a 2xx's until the ACK) and the ACKs it
    sends for retransmitted 2xx are the original message, as on a network that corrupted one
    datagram."""

    def __init__(self, agent: SipAgent, rng: random.Random) -> None:
        self.agent = agent
        self.rng = rng
        self.match: Match | None = None
        self.sent: list[tuple[str, bytes, int]] = []  # (how, bytes, capture index before)
        self._send = agent._send_raw
        self.capture_size: Callable[[], int] = lambda: 0
        agent._send_raw = self._send_raw  # type: ignore[method-assign]

    def arm(self, match: Match) -> None:
        self.match = match

    async def _send_raw(self, message: Request | Response, destination: Address) -> None:
        if self.match is None or not self.match(message):
            await self._send(message, destination)
            return
        self.match = None
        how, data = mutate_structured(serialize_message(message), self.rng)
        self.sent.append((how, data, self.capture_size()))
        await self.agent.socket.sendto(data, destination)


def headers_only(data: bytes) -> bytes:
    """The head of a message (for a failure's text)."""
    return re.split(rb"\r\n\r\n", data, maxsplit=1)[0][:3000]
