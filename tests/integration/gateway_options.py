"""The OPTIONS request and port lookup of the gateway socket tests: moved here from
test_gateway_sockets.py so that no test module imports another."""

from __future__ import annotations

from gateway.core.gateway import Gateway


def options(transport: str, port: int, branch: str = "z9hG4bKopt1") -> bytes:
    return (
        f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} 127.0.0.1:5999;branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:probe@127.0.0.1>;tag=probe1\r\n"
        f"To: <sip:127.0.0.1:{port}>\r\n"
        "Call-ID: options-1@127.0.0.1\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def port_of(gw: Gateway, transport: str) -> int:
    return next(lst.address[1] for lst in gw.listeners if lst.transport == transport)
