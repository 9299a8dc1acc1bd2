"""The ``mikey`` plugin: its entry point, ``[plugins.mikey]`` (errors name file, table and key),
the pre-shared key file (owner-only, never quoted), what it registers, and the core passing the
leg's identity only to exchanges that want it."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from gateway.core.config import ConfigError, from_mapping
from gateway.core.interfaces import LegInfo
from gateway.core.media.policy import BUILTIN_POLICIES
from gateway.core.media.security import KeyExchangeFailed, LegSecurity
from gateway.core.plugins import load_plugins
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.plugins.keyexchange import mikey
from gateway.plugins.keyexchange.mikey import MikeyKeyExchange
from gateway.plugins.keyexchange.mikey.psk import PskError, PskStore

ROOT = Path(__file__).parents[3]
KEY_HEX = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"


def psk_file(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "mikey-keys.toml"
    path.write_text(text)
    path.chmod(mode)
    return path


def load(**table: object) -> MikeyKeyExchange:
    config = from_mapping({"plugins": {"enable": ["mikey"], "mikey": table}})
    plugins = load_plugins(config, extra=[("mikey", mikey)], installed={})
    exchange = plugins.key_exchanges.get("mikey")
    assert isinstance(exchange, MikeyKeyExchange)
    assert plugins.registered_by("mikey") == {
        "key_exchanges": ["mikey"],
        "media_policies": ["mikey"],
    }
    return exchange


def test_entry_point_is_declared_like_any_plugin() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    entry_points = project["project"]["entry-points"]["voipgw.plugins"]
    assert entry_points["mikey"] == "gateway.plugins.keyexchange.mikey"


def test_registers_an_sdp_exchange_with_the_defaults() -> None:
    exchange = load()
    assert (exchange.name, exchange.media_path, exchange.profile) == ("mikey", False, "sdp")
    assert exchange.sdp_attribute == "key-mgmt" and exchange.wants_leg is True
    settings = exchange.settings
    assert settings.offer_modes == ("null",)
    assert settings.accept_modes == ("null", "psk", "dh-hmac")
    assert (settings.kemac_encryption, settings.dh_group, settings.style) == (1, 0, "standard")
    assert exchange.replay.max_skew == 120 and exchange.replay.max_entries == 10_000
    assert len(exchange.psks) == 0


def test_the_table_sets_modes_keys_and_bounds(tmp_path: Path) -> None:
    path = psk_file(tmp_path, f'[accounts]\nalice = "{KEY_HEX}"\n[trunks]\ncarrier = "{KEY_HEX}"\n')
    exchange = load(
        offer_modes=["dh-hmac", "psk"],
        accept_modes=["psk"],
        psk_file=str(path),
        kemac_encryption="aes-kw",
        dh_group="OAKLEY2",
        style="gstreamer",
        max_clock_skew=30.0,
        replay_cache_size=50,
    )
    assert exchange.settings.offer_modes == ("dh-hmac", "psk")
    assert (exchange.settings.kemac_encryption, exchange.settings.dh_group) == (2, 2)
    assert exchange.replay.max_skew == 30 and exchange.replay.max_entries == 50
    assert exchange.psks.key_for("account", "alice") == bytes.fromhex(KEY_HEX)
    assert exchange.psks.key_for("trunk", "carrier") == bytes.fromhex(KEY_HEX)
    assert exchange.psks.key_for("account", "carrier") is None
    assert KEY_HEX not in repr(exchange) and KEY_HEX not in repr(exchange.psks)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"offer_modes": ["pk"]}, "offer_modes: unknown mode 'pk'"),
        ({"accept_modes": []}, "accept_modes: expected at least one"),
        ({"accept_modes": ["null", "null"]}, "accept_modes: a mode is listed twice"),
        ({"kemac_encryption": "des"}, "kemac_encryption: expected one of aes-cm, aes-kw"),
        ({"dh_group": "MODP14"}, "dh_group: expected one of OAKLEY5, OAKLEY1, OAKLEY2"),
        ({"style": "minisip"}, "style: expected one of standard, gstreamer"),
        ({"max_clock_skew": 0}, "max_clock_skew: expected a positive"),
        ({"replay_cache_size": 0}, "replay_cache_size: expected a positive"),
        ({"offer_modes": ["psk"]}, "psk_file: offer_modes lists psk"),
        ({"colour": "blue"}, "unknown key"),
    ],
)
def test_bad_settings_name_the_file_table_and_key(table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=r"\[plugins\.mikey\]") as info:
        load(**table)
    assert message in str(info.value)


def test_a_psk_file_readable_by_others_stops_start_up_and_names_the_file(tmp_path: Path) -> None:
    path = psk_file(tmp_path, f'[accounts]\nalice = "{KEY_HEX}"\n', mode=0o640)
    with pytest.raises(ConfigError) as info:
        load(psk_file=str(path))
    text = str(info.value)
    assert str(path) in text and "group or others" in text and "chmod 600" in text
    assert KEY_HEX not in text
    path.chmod(0o604)
    with pytest.raises(PskError, match="group or others"):
        PskStore.from_file(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[accounts]\nalice = "abcd"\n', "[accounts] alice: expected 32 to 128 hexadecimal"),
        ("[accounts]\nalice = 12\n", "[accounts] alice: expected"),
        (f'[phones]\nx = "{KEY_HEX}"\n', "unknown table [phones]"),
        (f'[accounts]\nalice = "{KEY_HEX}\n', "not valid TOML"),
    ],
)
def test_a_malformed_psk_file_is_refused_without_quoting_keys(
    tmp_path: Path, text: str, message: str
) -> None:
    path = psk_file(tmp_path, text)
    with pytest.raises(PskError) as info:
        PskStore.from_file(path)
    assert message in str(info.value) and str(path) in str(info.value)
    assert KEY_HEX not in str(info.value)


def test_a_missing_psk_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"\[plugins.mikey\] psk_file: .*nope\.toml: cannot read it"
    ):
        load(psk_file=str(tmp_path / "nope.toml"))


def test_the_mikey_policy_is_mikey_only_and_never_cleartext() -> None:
    config = from_mapping({"plugins": {"enable": ["mikey"]}})
    plugins = load_plugins(config, extra=[("mikey", mikey)], installed={})
    policy = plugins.media_policies.get("mikey")
    assert policy is not None and policy.key_exchanges == ("mikey",)
    assert policy.allow_cleartext is False


class LegRecorder:
    """A key exchange of another plugin, without ``wants_leg``: offer() takes no ``leg``."""

    name = "sdes"
    media_path = False

    def __init__(self) -> None:
        self.calls = 0

    def offer(
        self,
        *,
        suites: object,
        secure_signalling: bool,
        previous: object = None,
        rekey: bool = False,
    ) -> object:
        self.calls += 1
        raise RuntimeError("stop here")


SDP = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 20000 RTP/AVP 0\r\n"
)


def test_the_core_passes_the_leg_only_to_exchanges_that_want_it(tmp_path: Path) -> None:
    path = psk_file(tmp_path, f'[trunks]\ncarrier = "{KEY_HEX}"\n')
    exchange = MikeyKeyExchange(
        settings=mikey.MikeySettings(offer_modes=("psk",)), psks=PskStore.from_file(path)
    )
    info = LegInfo(call_id="c", side="b", kind="trunk", name="carrier", secure_signalling=False)
    security = LegSecurity(
        side="b",
        policy=BUILTIN_POLICIES["encrypted-only"],
        secure_signalling=False,
        key_exchanges={"mikey": exchange},
        signalling="udp",
        leg=info,
    )
    offer = security.make_offer(parse_sdp_untrusted(SDP.encode()))
    media = offer.media[0]
    assert media.proto == "RTP/SAVP" and media.attributes.has("key-mgmt")
    assert security.streams == [] and security._offered[0].negotiation is not None
    recorder = LegRecorder()
    plain = LegSecurity(
        side="b",
        policy=BUILTIN_POLICIES["encrypted-only"],
        secure_signalling=True,
        key_exchanges={"sdes": recorder},  # type: ignore[dict-item]
        signalling="tls",
        leg=info,
    )
    # The recorder's exception, as LegSecurity names a plugin's (KeyExchangeFailed): called
    # without leg=, so "stop here" and no TypeError.
    with pytest.raises(KeyExchangeFailed) as failed:
        plain.make_offer(parse_sdp_untrusted(SDP.encode()))
    cause = failed.value.__cause__
    assert isinstance(cause, RuntimeError) and str(cause) == "stop here"
    assert recorder.calls == 1
