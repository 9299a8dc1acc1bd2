"""The SRTP SIPREC environment and answered call of the in-memory SIPREC SRTP tests: moved here
from test_b2bua_siprec_srtp.py so that no test module imports another."""

from __future__ import annotations

import base64
from pathlib import Path

import trio

import gateway.plugins.taps.siprec as siprec_plugin
from gateway.core.ids import SeededIds
from gateway.core.sdp.model import SessionDescription
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.core.sip.headers import NameAddr
from gateway.plugins.keyexchange.sdes import parse_crypto_untrusted
from gateway.testing.sip_agent import AutoAnswer, SipAgent, simple_sdp
from tests.component.calls.b2bua_env import ALICE_DID, GW, B2bua, start_b2bua
from tests.port_blocks import port_bases

SRS = ("127.0.0.9", 5061)
GW_TLS = ("127.0.0.1", 5061)
CALLER_PORT, SRS_PORT = port_bases(2)  # this process's own ports (tests/port_blocks.py)
# Alice's phone answers by itself (the call, and the re-INVITEs of a hold) from CALLEE_PORT.
(CALLEE_PORT,) = port_bases(1)
SRS_KEYS = (bytes(range(30)), bytes(range(40, 70)))


class TlsSrs(SipAgent):
    """The recorder, whose Contact says ``transport=tls`` (so the dialog stays on TLS)."""

    tls_contact = True

    @property
    def contact(self) -> NameAddr:
        contact = super().contact
        return NameAddr(contact.uri.with_param("transport", "tls")) if self.tls_contact else contact  # type: ignore[union-attr]


def srtp_answer(
    offer: SessionDescription, *, proto: str = "RTP/SAVP", crypto: bool = True
) -> bytes:
    """The SRS's answer: per offered label, its port, recvonly, and (``crypto``) a crypto line
    with the tag and suite of our first one and the SRS's own key."""
    lines = ["v=0", "o=srs 1 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0"]
    for number, media in enumerate(offer.media):
        lines += [
            f"m=audio {SRS_PORT + 2 * number} {proto} 0",
            f"a=label:{media.attributes.get('label')}",
            "a=recvonly",
        ]
        if crypto:
            ours = parse_crypto_untrusted(media.attributes.values("crypto")[0])
            key = base64.b64encode(SRS_KEYS[number]).decode()
            lines.append(f"a=crypto:{ours.tag} {ours.suite} inline:{key}")
    return ("\r\n".join(lines) + "\r\n").encode()


async def srtp_env(
    nursery: trio.Nursery, tmp_path: Path, seed: int, **table: object
) -> tuple[B2bua, TlsSrs]:
    env = await start_b2bua(
        nursery,
        tmp_path,
        seed,
        plugins=[("siprec", siprec_plugin)],
        plugin_tables={
            "enable": ["siprec"],
            "siprec": {
                "srs": "sip:srs@127.0.0.9:5061;transport=tls",
                "trunks": ["carrier"],
                "media_security": "sdes",
                **table,
            },
        },
        sip={"listen": ["udp:127.0.0.1:5060", "tls:127.0.0.1:5061"]},
        alice_auto=AutoAnswer(),
        alice_media_port=CALLEE_PORT,
        tls_stand_in=True,
    )
    srs = TlsSrs(env.network, SRS, ids=SeededIds(seed + 9), user="srs", proxy=GW, auto=None)
    await nursery.start(srs.serve)
    return env, srs


async def answered_call(env: B2bua) -> tuple[object, tuple[str, int], tuple[str, int]]:
    call = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=simple_sdp("127.0.0.1", CALLER_PORT))
    final = await call.final()
    assert final.status == 200
    offered = parse_sdp_untrusted(env.alice.calls[-1].invite.body).media[0]
    answered = parse_sdp_untrusted(final.body).media[0]
    return call, ("127.0.0.1", answered.port), ("127.0.0.1", offered.port)
