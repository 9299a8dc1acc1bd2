"""The scanner requests of the in-memory scanner user-agent tests: moved here from
test_scanner_user_agents.py so that no test module imports another."""

from __future__ import annotations

SCANNER = ("192.0.2.66", 5060)


def request(method: str, user: str, *, user_agent: str | None, number: int) -> bytes:
    """A request as svwar sends it (sipvicious 0.3.3): to an extension, User-Agent last."""
    lines = [
        f"{method} sip:{user}@127.0.0.1 SIP/2.0",
        f"Via: SIP/2.0/UDP {SCANNER[0]}:{SCANNER[1]};branch=z9hG4bK-{number};rport",
        "Max-Forwards: 70",
        f'From: "{user}"<sip:{user}@127.0.0.1>;tag={number}',
        f'To: "{user}"<sip:{user}@127.0.0.1>',
        f"Call-ID: scan{number}",
        f"CSeq: 1 {method}",
        f"Contact: <sip:{user}@{SCANNER[0]}:{SCANNER[1]}>",
        "Accept: application/sdp",
    ]
    if user_agent is not None:
        lines.append(f"User-Agent: {user_agent}")
    lines += ["Content-Length: 0", "", ""]
    return "\r\n".join(lines).encode()
