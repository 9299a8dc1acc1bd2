"""A trunk's DTLS-SRTP phone calling alice through the B2BUA, answered: shared by the DTLS call
tests and the call-freed tests; moved here from test_b2bua_dtls.py so that no test module imports
another."""

from __future__ import annotations

import attrs
import trio

from gateway.core.sdp.model import MediaDescription
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.plugins.keyexchange.dtls_srtp import DtlsKeyExchange
from gateway.testing.sip_agent import Call
from tests.component.calls.b2bua_env import ALICE_DID, B2bua
from tests.component.calls.dtls_pairs import pairs
from tests.component.calls.dtls_phone import PHONE_ID, Phone, bind, dtls_sdp


@attrs.define
class DtlsCaller:
    env: B2bua
    exchange: DtlsKeyExchange
    phone: Phone
    call: Call
    answered_at: float
    answer: MediaDescription
    """The gateway's answer to the phone (a=fingerprint, a=setup, a=tls-id)."""


async def dtls_caller(
    nursery: trio.Nursery,
    env: B2bua,
    *,
    fingerprint: str | None = None,
    run_phone: bool = True,
    setup: str = "actpass",
) -> DtlsCaller:
    """The trunk calls alice from a DTLS phone; the call is answered (alice answers at once).
    ``setup``: the phone's a=setup; ``active`` makes the gateway the DTLS server."""
    exchange = DtlsKeyExchange(identity=lambda: PHONE_ID)
    negotiation = exchange.offer(suites=[], secure_signalling=False)
    call = await env.trunk.invite(
        env.did_uri(ALICE_DID), sdp=dtls_sdp(negotiation, fingerprint=fingerprint, setup=setup)
    )
    final = await call.final()
    assert final.status == 200, final.reason
    answered_at = trio.current_time()
    answer = parse_sdp_untrusted(final.body)
    media = answer.media[0]
    assert media.proto == "UDP/TLS/RTP/SAVP"
    assert media.attributes.get("setup") == ("passive" if setup == "active" else "active")
    negotiation.remote_sdp_attributes(pairs(answer, media))
    # The callee got plain RTP and none of the caller's DTLS attributes.
    leg_b = await env.alice.next_call()
    assert leg_b.incoming is not None
    offer_b = leg_b.incoming.request.body
    assert b"RTP/AVP" in offer_b
    assert b"fingerprint" not in offer_b and b"setup" not in offer_b and b"SAVP" not in offer_b
    phone = Phone(negotiation, await bind(), ("127.0.0.1", media.port))
    if run_phone:
        nursery.start_soon(phone.run)
    return DtlsCaller(env, exchange, phone, call, answered_at, media)
