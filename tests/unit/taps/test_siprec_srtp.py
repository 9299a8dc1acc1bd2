"""SRTP towards the SRS (``[plugins.siprec] media_security = "sdes"``), without sockets: the
recording session's SDP offer with a=crypto, the SRS's answer turned into each stream's keys (and
the answers that must be refused), the re-offer that keeps the keys (RFC 4568 §7.1.4), the
outbound-only SRTP context the copies go through, and the configuration errors."""

from __future__ import annotations

import base64
import random
import struct

import pylibsrtp
import pytest
import trio

from gateway.core.config import ConfigError, from_mapping
from gateway.core.interfaces import SrtpKeys, TappedCall, TappedMedia
from gateway.core.media.errors import LocalMediaError
from gateway.core.media.srtp import SUITES, OutboundSrtpSession, SrtpSession
from gateway.core.plugins import load_plugins
from gateway.core.sdp.errors import SdpError
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.plugins.keyexchange.sdes import SdesKeyExchange, parse_crypto_untrusted
from gateway.plugins.taps import siprec as siprec_plugin
from gateway.plugins.taps.siprec import (
    SiprecClient,
    SiprecConfig,
    SiprecSink,
    offer_sdp,
    recorded_streams,
    srs_srtp_keys,
)

AUDIO = TappedMedia(0, "audio", ("0",), ("0 PCMU/8000",))
CALL = TappedCall("rec-2", "sip:a@gw", "sip:b@gw", "trunk", "carrier", "account", "alice", (AUDIO,))
SRS_KEY_1 = bytes(range(30))
SRS_KEY_2 = bytes(range(100, 130))
SDES_SRS = "sips:srs@192.0.2.50"


def keying(seed: int = 1) -> SdesKeyExchange:
    return SdesKeyExchange(random_bytes=random.Random(seed).randbytes)


def offered(
    seed: int = 1,
    suites: tuple[str, ...] = ("AES_CM_128_HMAC_SHA1_80",),
    exchange: SdesKeyExchange | None = None,
) -> tuple:
    exchange = exchange or keying(seed)
    streams = recorded_streams(CALL.media)
    negotiations = [exchange.offer(suites=suites, secure_signalling=True) for _ in streams]
    crypto = [n.local_sdp_attributes() for n in negotiations]
    sdp = offer_sdp(streams, "192.0.2.10", [4000, 4002], session_id=1, version=1, crypto=crypto)
    return streams, negotiations, parse_sdp_untrusted(sdp)


def answer(
    *lines: tuple[str, int, str | None], connection: str = "c=IN IP4 192.0.2.50\r\n"
) -> bytes:
    """An SRS answer: per stream (proto, port, crypto value or None), labels 1, 2 ..."""
    text = f"v=0\r\no=srs 1 1 IN IP4 192.0.2.50\r\ns=-\r\n{connection}t=0 0\r\n"
    for label, (proto, port, crypto) in enumerate(lines, start=1):
        text += f"m=audio {port} {proto} 0\r\na=label:{label}\r\na=recvonly\r\n"
        if crypto is not None:
            text += f"a=crypto:{crypto}\r\n"
    return text.encode()


def crypto_line(tag: int, key: bytes, suite: str = "AES_CM_128_HMAC_SHA1_80") -> str:
    return f"{tag} {suite} inline:{base64.b64encode(key).decode()}"


def test_the_offer_is_savp_with_a_fresh_key_per_stream_and_per_session() -> None:
    exchange = keying(1)  # one plugin's random source, for every recording session
    _, _, sdp = offered(exchange=exchange)
    assert [m.proto for m in sdp.media] == ["RTP/SAVP", "RTP/SAVP"]
    lines = [[parse_crypto_untrusted(v) for v in m.attributes.values("crypto")] for m in sdp.media]
    assert [[(c.tag, c.suite) for c in m] for m in lines] == [
        [(1, "AES_CM_128_HMAC_SHA1_80")],
        [(1, "AES_CM_128_HMAC_SHA1_80")],
    ]
    keys = [m[0].keys[0].key_salt for m in lines]
    assert len(keys[0]) == 30 and keys[0] != keys[1]  # caller's and callee's copies apart
    _, _, again = offered(exchange=exchange)  # another recording session
    assert set(again.media[0].attributes.values("crypto")).isdisjoint(
        v for m in sdp.media for v in m.attributes.values("crypto")
    )


def test_without_crypto_the_offer_stays_plain_rtp() -> None:
    streams = recorded_streams(CALL.media)
    sdp = parse_sdp_untrusted(offer_sdp(streams, "192.0.2.10", [1, 3], session_id=1, version=1))
    assert [m.proto for m in sdp.media] == ["RTP/AVP", "RTP/AVP"]
    assert not any(m.attributes.has("crypto") for m in sdp.media)


def test_one_crypto_line_per_configured_suite_in_order() -> None:
    _, _, sdp = offered(suites=("AES_256_CM_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_80"))
    lines = [parse_crypto_untrusted(v) for v in sdp.media[0].attributes.values("crypto")]
    assert [(c.tag, c.suite) for c in lines] == [
        (1, "AES_256_CM_HMAC_SHA1_80"),
        (2, "AES_CM_128_HMAC_SHA1_80"),
    ]


def test_the_srs_answer_gives_each_stream_our_key_and_its_own() -> None:
    streams, negotiations, sdp = offered()
    ours = [parse_crypto_untrusted(m.attributes.values("crypto")[0]) for m in sdp.media]
    body = answer(
        ("RTP/SAVP", 6000, crypto_line(1, SRS_KEY_1)), ("RTP/SAVP", 6002, crypto_line(1, SRS_KEY_2))
    )
    keys = srs_srtp_keys("application/sdp", body, streams, negotiations)
    assert set(keys) == {(0, "a_to_b"), (0, "b_to_a")}
    assert keys[(0, "a_to_b")].local_key == ours[0].keys[0].key_salt
    assert keys[(0, "a_to_b")].remote_key == SRS_KEY_1
    assert keys[(0, "b_to_a")].local_key == ours[1].keys[0].key_salt
    assert keys[(0, "b_to_a")].suite == "AES_CM_128_HMAC_SHA1_80"


def test_a_declined_stream_needs_no_keys() -> None:
    streams, negotiations, _ = offered()
    body = answer(("RTP/SAVP", 6000, crypto_line(1, SRS_KEY_1)), ("RTP/SAVP", 0, None))
    assert set(srs_srtp_keys("application/sdp", body, streams, negotiations)) == {(0, "a_to_b")}


@pytest.mark.parametrize(
    ("second", "reason"),
    [
        (("RTP/AVP", 6002, None), "not RTP/SAVP"),
        (("RTP/AVP", 6002, crypto_line(1, SRS_KEY_2)), "not RTP/SAVP"),
        (("RTP/SAVP", 6002, None), "no a=crypto"),
        (("RTP/SAVP", 6002, crypto_line(7, SRS_KEY_2)), "tag 7 was not offered"),
        (
            ("RTP/SAVP", 6002, crypto_line(1, bytes(46), "AES_256_CM_HMAC_SHA1_80")),
            "changes the crypto-suite",
        ),
        (("RTP/SAVP", 6002, crypto_line(1, bytes(20))), "30-octet key"),
    ],
)
def test_an_answer_that_does_not_take_srtp_is_refused_without_showing_keys(
    second: tuple[str, int, str | None], reason: str
) -> None:
    streams, negotiations, sdp = offered()
    body = answer(("RTP/SAVP", 6000, crypto_line(1, SRS_KEY_1)), second)
    with pytest.raises(SdpError, match=reason) as refused:
        srs_srtp_keys("application/sdp", body, streams, negotiations)
    text = str(refused.value)
    secrets = [base64.b64encode(SRS_KEY_1).decode(), base64.b64encode(SRS_KEY_2).decode()]
    secrets += [v.split("inline:")[1] for m in sdp.media for v in m.attributes.values("crypto")]
    assert not any(secret[:16] in text for secret in secrets)


def test_a_re_offer_repeats_each_line_in_force_and_keeps_the_contexts() -> None:
    # RFC 4568 §7.1.4: same tag, suite and key again, so the SRTP context goes on.
    client = SiprecClient(
        SiprecConfig(srs=SDES_SRS, all_calls=True, media_security="sdes"),
        random_bytes=random.Random(3).randbytes,
    )
    sink = client.sink_for_call(CALL)
    assert isinstance(sink, SiprecSink)
    first = sink._reoffer(2)
    assert first is not None
    streams = recorded_streams(CALL.media)
    body = answer(
        ("RTP/SAVP", 6000, crypto_line(1, SRS_KEY_1)), ("RTP/SAVP", 6002, crypto_line(1, SRS_KEY_2))
    )

    class Answered:
        answer_type = "application/sdp"
        answer_body = body

    async def take(negotiations: list) -> bool:
        return await sink._keys_answered(Answered(), streams, negotiations)  # type: ignore[arg-type]

    assert trio.run(take, first)
    contexts = dict(sink._srtp)
    again = sink._reoffer(2)
    assert again is not None
    assert [n.local_sdp_attributes() for n in again] == [n.local_sdp_attributes() for n in first]
    # The SRS renews its own key (§7.1.4 allows it): ours stays, so do the contexts.
    Answered.answer_body = answer(
        ("RTP/SAVP", 6000, crypto_line(1, SRS_KEY_2)), ("RTP/SAVP", 6002, crypto_line(1, SRS_KEY_1))
    )
    assert trio.run(take, again)
    assert sink._srtp == contexts and all(not c.closed for c in contexts.values())
    # A stream whose key is no longer in force (a fresh offer) gets a new context.
    sink._negotiations = []
    fresh = sink._reoffer(2)
    assert fresh is not None
    assert fresh[0].local_sdp_attributes() != first[0].local_sdp_attributes()
    assert trio.run(take, fresh)
    assert all(sink._srtp[key] is not contexts[key] for key in contexts)
    assert all(c.closed for c in contexts.values())


def test_the_outbound_context_protects_what_libsrtp_decrypts_and_never_an_index_twice() -> None:
    key = bytes(range(30))
    context = OutboundSrtpSession("AES_CM_128_HMAC_SHA1_80", key)
    rtp = struct.pack("!BBHII", 0x80, 0, 7, 1120, 0x1234) + b"\x55" * 160
    protected = context.protect_rtp(rtp)
    assert protected is not None and len(protected) == len(rtp) + 10
    assert b"\x55" * 16 not in protected  # the payload is encrypted
    checker = pylibsrtp.Session(
        pylibsrtp.Policy(
            key=key,
            ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND,
            srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
        )
    )
    assert checker.unprotect(protected) == rtp
    assert context.protect_rtp(rtp) is None  # RFC 3711 §9.1: no index twice
    assert context.statistics().replays == 1 and context.statistics().protected == 1
    assert key.hex() not in repr(context) and base64.b64encode(key).decode() not in repr(context)
    context.close()
    assert context.closed and context.protect_rtp(rtp[:2] + b"\x00\x08" + rtp[4:]) is None
    with pytest.raises(LocalMediaError, match="30-octet"):
        OutboundSrtpSession("AES_CM_128_HMAC_SHA1_80", key[:20])


def test_plain_rtp_by_default_and_sdes_over_a_tls_uri() -> None:
    assert SiprecConfig(srs="sip:srs@192.0.2.50", all_calls=True).media_security == "none"
    for uri in (SDES_SRS, "sip:srs@192.0.2.50;transport=tls", "sip:srs@192.0.2.50;transport=TLS"):
        config = SiprecConfig(srs=uri, all_calls=True, media_security="sdes")
        assert config.srtp_suites == ("AES_CM_128_HMAC_SHA1_80",)


@pytest.mark.parametrize(
    ("table", "key", "why"),
    [
        ({"media_security": "srtp"}, "media_security", '"none" or "sdes"'),
        ({"media_security": "sdes"}, "srs", "RFC 4568 §8.3"),
        (
            {"media_security": "sdes", "srs": "sip:srs@192.0.2.50;transport=tcp"},
            "srs",
            "sips: URI",
        ),
        (
            {"media_security": "sdes", "srs": SDES_SRS, "fallbacks": ["sip:srs@192.0.2.51"]},
            "fallbacks",
            "TLS",
        ),
        ({"srtp_suites": ["AES_CM_128_NULL_AUTH"]}, "srtp_suites", "AES_CM_128_HMAC_SHA1_80"),
        ({"srtp_suites": []}, "srtp_suites", "at least one"),
    ],
)
def test_config_errors_name_the_key_and_say_why(
    table: dict[str, object], key: str, why: str
) -> None:
    table = {"srs": "sip:srs@192.0.2.50", "all_calls": True, **table}
    config = from_mapping({"plugins": {"enable": ["siprec"], "siprec": table}})
    with pytest.raises(ConfigError, match=r"plugins.siprec") as refused:
        load_plugins(config, extra=[("siprec", siprec_plugin)], installed={})
    assert f"{key}:" in str(refused.value) and why in str(refused.value)


@pytest.mark.parametrize(
    "suite", ["AES_CM_128_HMAC_SHA1_80", "AES_192_CM_HMAC_SHA1_80", "AEAD_AES_256_GCM"]
)
def test_the_outbound_context_of_each_suite_is_what_a_full_session_decrypts(suite: str) -> None:
    # AES-192 runs in Python (srtp.PYTHON_SUITES), the others in libsrtp: both paths.
    length = SUITES[suite].key_salt_length
    key = bytes(range(length))
    context = OutboundSrtpSession(suite, key)
    receiver = SrtpSession(SrtpKeys(suite, local_key=bytes(length), remote_key=key))
    rtp = struct.pack("!BBHII", 0x80, 0, 9, 1440, 0x4321) + b"\x33" * 160
    protected = context.protect_rtp(rtp)
    assert protected is not None and protected != rtp
    assert receiver.unprotect_rtp(protected) == rtp


def test_the_keys_from_a_toml_table() -> None:
    table = {
        "srs": "sip:srs@192.0.2.50:5061;transport=tls",
        "all_calls": True,
        "media_security": "sdes",
        "srtp_suites": ["AES_256_CM_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_80"],
    }
    config = from_mapping({"plugins": {"enable": ["siprec"], "siprec": table}})
    plugins = load_plugins(config, extra=[("siprec", siprec_plugin)], installed={})
    (tap,) = [tap for name, tap in plugins.media_taps.items() if name == "siprec"]
    assert tap.config.media_security == "sdes"
    assert tap.config.srtp_suites == ("AES_256_CM_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_80")
