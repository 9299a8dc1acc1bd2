"""Alice's SDP answers and the SDES crypto line of the in-memory answer protocol tests: moved here
from test_b2bua_answer_proto.py so that no test module imports another."""

from __future__ import annotations

from gateway.testing.sip_agent import simple_sdp
from tests.component.calls.b2bua_env import (
    ALICE,
)

CRYPTO = "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz"


def alice_answer(proto: str, *extra: str, version: int = 1, direction: str = "sendrecv") -> bytes:
    """alice's answer to the gateway's RTP/AVP offer, in ``proto`` with ``extra`` lines."""
    sdp = simple_sdp(ALICE[0], 30000, version=version, direction=direction)
    lines = sdp.decode().split("\r\n")
    lines = [line.replace(" RTP/AVP ", f" {proto} ") for line in lines if line]
    return ("\r\n".join([*lines, *extra]) + "\r\n").encode()
