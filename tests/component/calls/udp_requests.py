"""The SIP request builder of the in-memory UDP answer size tests: moved here from
test_endpoint_udp_answer_size.py so that no test module imports another."""

from __future__ import annotations

from tests.component.calls.b2bua_env import TRUNK

SOURCE = (TRUNK[0], 5071)  # the carrier's address, another port than its agent's
VIA_LINE = 8000  # under the parser's 8192 per header line


def request(method: str, uri: str, *, echoed: int, padding: int = 0, number: int = 1) -> bytes:
    """A request of ``method`` whose Via stack (echoed in every response) is about ``echoed``
    bytes long, with ``padding`` more bytes in X-Padding fields, which no response echoes."""
    vias = [f"Via: SIP/2.0/UDP {SOURCE[0]}:{SOURCE[1]};branch=z9hG4bKbig{number};rport"]
    vias += _filler("Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKhop;x=", echoed - len(vias[0]))
    pads = _filler("X-Padding: ", padding)
    text = "\r\n".join(
        [
            f"{method} {uri} SIP/2.0",
            *vias,
            "Max-Forwards: 70",
            f"From: <sip:+15550100@{TRUNK[0]}>;tag=big{number}",
            f"To: <{uri}>",
            f"Call-ID: big{number}@{TRUNK[0]}",
            f"CSeq: 1 {method}",
            *([f"Contact: <sip:+15550100@{SOURCE[0]}:{SOURCE[1]}>"] if method == "INVITE" else []),
            *pads,
            "Content-Length: 0",
            "",
            "",
        ]
    )
    return text.encode()


def _filler(start: str, size: int) -> list[str]:
    """Header lines beginning ``start``, at most VIA_LINE long, of ``size`` bytes in all."""
    lines: list[str] = []
    while (left := size - sum(len(line) + 2 for line in lines)) > 0:
        if lines and left < 200:
            lines[-1] += "a" * left
        else:
            lines.append(start + "a" * max(1, min(VIA_LINE, left - 2) - len(start)))
    return lines
