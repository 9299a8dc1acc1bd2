from __future__ import annotations

import types

import attrs
import pytest

from gateway.core.config import ConfigError, from_mapping
from gateway.core.hookspecs import hookimpl
from gateway.core.interfaces import DeviceProfile
from gateway.core.plugins import (
    DiscoveredPlugin,
    PluginError,
    discover,
    load_plugins,
    separate_implementations,
)


def make_plugin(**hooks: object) -> types.SimpleNamespace:
    return types.SimpleNamespace(**{name: hookimpl(fn) for name, fn in hooks.items()})


def config_enabling(*names: str, tables: dict[str, dict[str, object]] | None = None):  # type: ignore[no-untyped-def]
    return from_mapping({"plugins": {"enable": list(names), **(tables or {})}})


def test_builtins_come_from_entry_points_of_the_voipgw_distribution() -> None:
    installed = discover()
    assert {"udp", "tcp"} <= set(installed)
    assert installed["udp"].distribution == "voipgw"
    assert installed["udp"].value == "gateway.plugins.transports.udp"


def test_default_config_loads_the_builtin_transports() -> None:
    plugins = load_plugins(from_mapping({}))
    assert sorted(plugins.transports.names()) == ["tcp", "tls", "udp"]
    assert plugins.key_exchanges.names() == ["sdes", "dtls"]
    assert plugins.transports.owner("udp") == "udp"
    assert plugins.registered_by("tcp") == {"transports": ["tcp"]}


def test_each_gateway_gets_its_own_plugin_manager() -> None:
    a = load_plugins(from_mapping({}))
    b = load_plugins(from_mapping({}))
    assert a.pm is not b.pm
    assert a.transports.get("udp") is not b.transports.get("udp")


def test_only_enabled_entry_points_are_imported() -> None:
    imported: list[str] = []
    installed = {
        "udp": DiscoveredPlugin("udp", "gateway.plugins.transports.udp", "voipgw", "0"),
        "evil": DiscoveredPlugin("evil", "no_such_module_anywhere", "evil", "6.6.6"),
    }
    plugins = load_plugins(config_enabling("udp"), installed=installed)
    imported.extend(plugins.names)
    assert imported == ["udp"]


def test_enabled_but_not_installed_names_it_and_lists_installed() -> None:
    with pytest.raises(ConfigError) as info:
        load_plugins(config_enabling("udp", "zrtp-typo"))
    message = str(info.value)
    assert "'zrtp-typo' is not installed" in message
    assert "udp" in message and "tcp" in message
    assert info.value.table == "plugins" and info.value.key == "enable"


def test_misspelled_hookimpl_fails_loudly() -> None:
    typo = make_plugin(gateway_register_transport=lambda registry: None)
    with pytest.raises(PluginError, match="typo"):
        load_plugins(config_enabling("typo"), extra=[("typo", typo)], installed={})


def test_a_hook_without_its_hookimpl_mark_fails_loudly() -> None:
    # pluggy passes over an unmarked function: the plugin would load and never be called.
    def register(registry):  # type: ignore[no-untyped-def]
        registry.add("phone", DeviceProfile(name="phone"))

    forgot = types.SimpleNamespace(
        gateway_register_device_profiles=register,
        gateway_call_event=hookimpl(lambda event: None),
        gateway_helper=lambda: None,  # not a hook's name: none of the core's business
    )
    with pytest.raises(PluginError) as info:
        load_plugins(config_enabling("forgot"), extra=[("forgot", forgot)], installed={})
    message = str(info.value)
    assert "plugin 'forgot': gateway_register_device_profiles not marked" in message
    assert "@hookimpl" in message and "gateway_call_event" not in message


def test_the_hook_specifications_imported_by_a_plugin_are_not_unmarked_hooks() -> None:
    # ``from gateway.core.hookspecs import *`` (for hookimpl; the module has no __all__) puts
    # every specification in the plugin's namespace: not implementations, as pluggy knows.
    plugin = types.ModuleType("star")
    exec("from gateway.core.hookspecs import *", plugin.__dict__)
    plugin.gateway_call_event = hookimpl(lambda event: None)
    plugins = load_plugins(config_enabling("star"), extra=[("star", plugin)], installed={})
    assert plugins.implemented("gateway_call_event") is not None
    assert plugins.implemented("gateway_route_call") is None


def test_unknown_hook_argument_fails_loudly() -> None:
    bad = make_plugin(gateway_register_transports=lambda registry, nonsense: None)
    with pytest.raises(PluginError, match="bad"):
        load_plugins(config_enabling("bad"), extra=[("bad", bad)], installed={})


def test_duplicate_registration_names_both_plugins() -> None:
    def register_one(registry):  # type: ignore[no-untyped-def]
        registry.add("phone", DeviceProfile(name="phone"))

    def register_two(registry):  # type: ignore[no-untyped-def]
        registry.add("phone", DeviceProfile(name="phone"))

    one = make_plugin(gateway_register_device_profiles=register_one)
    two = make_plugin(gateway_register_device_profiles=register_two)
    with pytest.raises(PluginError, match="'one' and plugin 'two'"):
        load_plugins(
            config_enabling("one", "two"), extra=[("one", one), ("two", two)], installed={}
        )


def test_plugin_config_table_is_structured_and_passed_to_its_hooks() -> None:
    @attrs.frozen
    class Settings:
        prefix: str
        count: int = 1

    seen: list[object] = []
    plugin = make_plugin(
        gateway_plugin_config=lambda: Settings,
        gateway_register_device_profiles=lambda registry, config: seen.append(config),
    )
    load_plugins(
        config_enabling("p", tables={"p": {"prefix": "Acme"}}), extra=[("p", plugin)], installed={}
    )
    assert seen == [Settings(prefix="Acme", count=1)]


def test_plugin_config_errors_name_the_plugin_table() -> None:
    @attrs.frozen
    class Settings:
        prefix: str

    plugin = make_plugin(gateway_plugin_config=lambda: Settings)
    with pytest.raises(ConfigError) as info:
        load_plugins(config_enabling("p", tables={"p": {}}), extra=[("p", plugin)], installed={})
    assert info.value.table == "plugins.p" and info.value.key == "prefix"
    assert "missing" in str(info.value)


def test_table_for_a_plugin_without_settings_is_refused() -> None:
    plugin = make_plugin(gateway_call_event=lambda event: None)
    with pytest.raises(ConfigError, match="takes no configuration"):
        load_plugins(
            config_enabling("p", tables={"p": {"x": 1}}), extra=[("p", plugin)], installed={}
        )


def test_exception_in_a_registration_hook_names_the_plugin() -> None:
    def explode(registry):  # type: ignore[no-untyped-def]
        raise RuntimeError("boom")

    plugin = make_plugin(gateway_register_media_taps=explode)
    with pytest.raises(PluginError, match="'boomer' failed in gateway_register_media_taps"):
        load_plugins(config_enabling("boomer"), extra=[("boomer", plugin)], installed={})


def test_gateway_configure_gets_the_table_before_any_registration() -> None:
    # The supported way for decision hooks to read settings (docs/plugin_hooks.md, "Settings
    # in decision hooks"): an object keeps what gateway_configure gave it.
    @attrs.frozen
    class Settings:
        prefix: str

    order: list[str] = []

    class Router:
        def __init__(self) -> None:
            self.settings: Settings | None = None

        @hookimpl
        def gateway_plugin_config(self) -> type:
            return Settings

        @hookimpl
        def gateway_configure(self, config: Settings) -> None:
            order.append("configure")
            self.settings = config

        @hookimpl
        def gateway_register_transports(self, registry: object) -> None:
            order.append("register")
            assert self.settings is not None  # already there

    bare = make_plugin(gateway_configure=lambda config: order.append(f"bare {config}"))
    router = Router()
    load_plugins(
        config_enabling("bare", "router", tables={"router": {"prefix": "+49"}}),
        extra=[("bare", bare), ("router", router)],
        installed={},
    )
    assert router.settings == Settings(prefix="+49")
    # Oldest first, as registrations; a plugin without a table gets None.
    assert order == ["bare None", "configure", "register"]


def test_gateway_configure_errors_name_the_plugin_or_keep_the_operators_text() -> None:
    def explode(config):  # type: ignore[no-untyped-def]
        raise RuntimeError("boom")

    def refuse(config):  # type: ignore[no-untyped-def]
        raise PluginError("[plugins.picky] codes: '*' is not CODE=ACCOUNT")

    with pytest.raises(PluginError, match="'boomer' failed in gateway_configure: RuntimeError"):
        load_plugins(
            config_enabling("boomer"),
            extra=[("boomer", make_plugin(gateway_configure=explode))],
            installed={},
        )
    with pytest.raises(PluginError) as info:
        load_plugins(
            config_enabling("picky"),
            extra=[("picky", make_plugin(gateway_configure=refuse))],
            installed={},
        )
    assert str(info.value) == "[plugins.picky] codes: '*' is not CODE=ACCOUNT"
    assert info.value.plugin == "picky"  # `voipgw plugins` lists the others without it


def test_firstresult_decision_hook_later_plugin_wins() -> None:
    first = make_plugin(gateway_identify_device=lambda request: DeviceProfile(name="first"))
    second = make_plugin(gateway_identify_device=lambda request: DeviceProfile(name="second"))
    plugins = load_plugins(
        config_enabling("first", "second"),
        extra=[("first", first), ("second", second)],
        installed={},
    )
    result = plugins.hook.gateway_identify_device(request=None, flow=None)
    assert result.name == "second"


def test_separate_implementations_newest_first_or_pluggys_call_with_a_wrapper() -> None:
    # Observers are called one by one (one that raises stops no other), newest-enabled first as
    # pluggy asks them; a hook wrapper only runs in pluggy's own call, which is then the one.
    first = make_plugin(gateway_call_event=lambda event: None)
    second = make_plugin(gateway_call_event=lambda: None)
    plugins = load_plugins(
        config_enabling("first", "second"),
        extra=[("first", first), ("second", second)],
        installed={},
    )
    caller = plugins.implemented("gateway_call_event")
    assert [(name, *takes) for name, _, *takes in separate_implementations(caller)] == [
        ("second", (), ()),
        ("first", ("event",), ()),
    ]
    assert separate_implementations(None) == ()

    def wrapping():  # type: ignore[no-untyped-def]
        yield

    wrapper = types.SimpleNamespace(
        gateway_call_event=hookimpl(hookwrapper=True)(wrapping),
    )
    wrapped = load_plugins(
        config_enabling("first", "wrapper"),
        extra=[("first", first), ("wrapper", wrapper)],
        installed={},
    )
    caller = wrapped.implemented("gateway_call_event")
    assert separate_implementations(caller) == ((None, caller, None, None),)


def test_collecting_failures_leaves_out_each_failing_plugin_and_loads_the_others() -> None:
    # `voipgw plugins`: a misspelled hook (check_pending), a raising gateway_configure and a
    # plugin error in a registration hook are each noted by plugin; the others load, once.
    configured: list[str] = []
    good = make_plugin(gateway_configure=lambda: configured.append("good"))
    typo = make_plugin(gateway_register_media_tap=lambda registry: None)

    def refuse():  # type: ignore[no-untyped-def]
        raise ConfigError("voipgw.toml", "plugins.picky", "codes", "'*' is not CODE=ACCOUNT")

    picky = make_plugin(gateway_configure=refuse)
    failed: dict[str, PluginError] = {}
    plugins = load_plugins(
        config_enabling("typo", "picky", "good"),
        extra=[("typo", typo), ("picky", picky), ("good", good)],
        installed={},
        failed=failed,
    )
    assert plugins.names == ["good"]
    assert configured == ["good"]
    assert sorted(failed) == ["picky", "typo"]
    assert "unknown hook 'gateway_register_media_tap'" in str(failed["typo"])
    assert str(failed["picky"]) == (
        "voipgw.toml: [plugins.picky] codes: '*' is not CODE=ACCOUNT (plugin 'picky')"
    )
    # Without collecting, the same ConfigError stops loading: a ConfigError still, and a
    # PluginError naming the plugin.
    with pytest.raises(ConfigError) as info:
        load_plugins(config_enabling("picky"), extra=[("picky", picky)], installed={})
    assert isinstance(info.value, PluginError) and info.value.plugin == "picky"
    assert info.value.table == "plugins.picky" and info.value.key == "codes"
