"""A key-exchange plugin that puts the leg's real SRTP master keys in the text of what it
raises does not get them into the gateway's log: the core logs the traceback's frames and the
exception's type, naming the plugin, but withholds the text of exceptions raised in plugin code
(gateway/core/logs.py) unless ``[gateway] log_plugin_exception_text`` asks for it. The caller's
INVITE offers SDES over (stand-in) TLS; the ``sdes`` key exchange here is the real one, which
makes the keys, then raises ValueError holding both, in base64 and hex. Signalling on the
in-memory network, virtual time."""

from __future__ import annotations

import base64
import logging
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest
import trio

from gateway.core import logs
from gateway.core.hookspecs import hookimpl
from gateway.core.interfaces import KeyNegotiation, SrtpKeys
from gateway.plugins.keyexchange.sdes import SdesKeyExchange, SdesNegotiation
from tests.component.calls.b2bua_env import ALICE_DID, eventually, start_b2bua
from tests.component.calls.secure_signalling import tls_signalling  # noqa: F401 (a fixture)
from tests.unit.keyexchange.key_material_checks import assert_hidden

CALLER_KEY = bytes(range(0x51, 0x6F))  # 30 octets: AES_CM_128 master key and salt
CALLER_SDP = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 41000 RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" + base64.b64encode(CALLER_KEY).decode() + "\r\n"
).encode()


class LeakingSdes(SdesKeyExchange):
    """The real ``sdes`` key exchange, whose answer then raises with the keys it agreed."""

    def __init__(self) -> None:
        super().__init__()
        self.leaked: list[SrtpKeys] = []
        self.raised_at = 0

    def answer(
        self,
        remote_attributes: Iterable[tuple[str, str | None]],
        *,
        suites: Sequence[str],
        secure_signalling: bool,
        previous: KeyNegotiation | None = None,
    ) -> SdesNegotiation | None:
        negotiation = super().answer(
            remote_attributes, suites=suites, secure_signalling=secure_signalling
        )
        assert negotiation is not None and negotiation.keys is not None
        keys = negotiation.keys
        self.leaked.append(keys)
        self.raised_at = sys._getframe().f_lineno + 1
        raise ValueError(f"{_forms(keys.local_key)}; the peer's: {_forms(keys.remote_key)}")


def _forms(key: bytes) -> str:
    return f"{base64.b64encode(key).decode()} {key.hex()} {key!r}"


class LeakingPlugin:
    def __init__(self) -> None:
        self.exchange = LeakingSdes()

    @hookimpl
    def gateway_register_key_exchanges(self, registry: Any, config: Any) -> None:
        registry.add("sdes", self.exchange)


async def leaking_call(
    nursery: trio.Nursery, tmp_path: Path, seed: int, caplog: pytest.LogCaptureFixture
) -> LeakingSdes:
    """The caller's SDES offer, answered 500 as the plugin raises; the plugin."""
    caplog.set_level(logging.DEBUG)  # every level of every logger
    plugin = LeakingPlugin()
    env = await start_b2bua(nursery, tmp_path, seed, plugins=[("sdes", plugin)])
    call = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=CALLER_SDP)
    final = await call.final()
    assert (final.status, final.headers.get("Warning")) == (500, '399 voipgw "key exchange failed"')
    await eventually(lambda: env.calls == 0)
    (keys,) = plugin.exchange.leaked
    assert keys.remote_key == CALLER_KEY and len(keys.local_key) == 30
    return plugin.exchange


async def test_a_plugins_exception_holding_the_legs_keys_is_logged_without_them(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
    tls_signalling: None,  # noqa: F811
) -> None:
    exchange = await leaking_call(nursery, tmp_path, voipgw_seed, caplog)
    (keys,) = exchange.leaked
    assert_hidden([caplog.text], [keys.local_key, keys.remote_key])
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is None  # the exception is not in the record
    logged = errors[0].getMessage() + "\n" + (errors[0].exc_text or "")
    # What the operator reports: the plugin, each exception's type, the file and line it raised.
    assert "the sdes key exchange raised ValueError" in logged
    assert "\nValueError: " + logs.WITHHELD in logged
    assert "\ngateway.core.media.security.KeyExchangeFailed: " in logged
    assert f'File "{__file__}", line {exchange.raised_at}, in answer' in logged


async def test_the_operator_may_turn_the_text_on_to_debug_a_plugin(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
    tls_signalling: None,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``[gateway] log_plugin_exception_text = true`` (what `voipgw run` hands to
    logs.show_plugin_exception_text): the text is there, keys and all."""
    monkeypatch.setattr(logs, "_show_plugin_text", True)
    exchange = await leaking_call(nursery, tmp_path, voipgw_seed, caplog)
    (keys,) = exchange.leaked
    assert f"ValueError: {_forms(keys.local_key)}" in caplog.text
