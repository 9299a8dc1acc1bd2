"""Plugin discovery and loading: a fresh pluggy PluginManager per Gateway.

Only the entry points (group ``voipgw.plugins``) that ``[plugins] enable`` names are imported: an
SBC must not run whatever happens to be installed. Built-in plugins are entry points of the voipgw
distribution itself and load through exactly the same path as third-party ones.
"""

from __future__ import annotations

import importlib.metadata
import logging
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Generic, TypeVar

import attrs
import pluggy

from gateway.core import hookspecs
from gateway.core.config import ConfigError, GatewayConfig, structure
from gateway.core.interfaces import ReloadError
from gateway.core.logs import WITHHELD, describe_exception, log_exception

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "voipgw.plugins"

T = TypeVar("T")

# The registries every Gateway has, by hook name: (registry attribute, what it holds).
REGISTRY_HOOKS: dict[str, str] = {
    "gateway_register_transports": "transports",
    "gateway_register_key_exchanges": "key_exchanges",
    "gateway_register_media_policies": "media_policies",
    "gateway_register_media_taps": "media_taps",
    "gateway_register_sip_captures": "sip_captures",
    "gateway_register_device_profiles": "device_profiles",
    "gateway_register_interworking": "interworking",
    "gateway_register_services": "services",
    "gateway_register_caller_identity": "caller_identity",
}


class PluginError(Exception):
    """A plugin could not be loaded or misbehaved at start-up. The message says which and why:
    for an exception the plugin raised, its type and file and line, not its text unless the
    operator asked for plugin exception texts (:func:`failure`). ``plugin``: the enabled name
    of the plugin at fault, where one is (``voipgw plugins`` lists the others without it)."""

    def __init__(self, message: str, *, plugin: str | None = None) -> None:
        super().__init__(message)
        self.plugin = plugin


class DuplicateName(PluginError):
    """Two plugins registered one name: neither alone is at fault (the message names both)."""


class PluginHookError(PluginError):
    """A plugin's hook raised while the gateway ran (``gateway_route_call``): its text (ours)
    names the plugin, the exception's type and the hook; the plugin's exception is its cause,
    whose text the log withholds by the usual rule (docs/architecture.md "Logged
    exceptions")."""

    def __init__(self, plugin: str | None, hook: str, exc: BaseException) -> None:
        self.hook = hook
        who = f"plugin {plugin!r}" if plugin is not None else "a plugin"
        super().__init__(f"{who} raised {type(exc).__name__} in {hook}", plugin=plugin)
        # pluggy's hook call keeps the plugin's exception in a local of its frame, which the
        # exception's traceback holds: a reference cycle through every frame the exception
        # left, the caller's among them (a call's setup: the whole call), that only the
        # cyclic collector frees. Those frames have returned; their locals go, the traceback
        # (code and line numbers, all the log renders) stays. The frame raising this one is
        # still running and is left as it is.
        traceback.clear_frames(exc.__traceback__)


class PluginConfigError(ConfigError, PluginError):
    """A :class:`ConfigError` a plugin raised in ``gateway_configure`` or a registration hook
    (a setting it refuses): the same error, still a ConfigError to whoever catches one, its
    text (the plugin's, for the operator) as every configuration error's, ``FILE: [TABLE] KEY:
    ...``, the plugin's name after it (operators' scripts match the line's start: it stays what
    it was before plugins were named); and a PluginError whose ``plugin`` is that plugin, so
    ``voipgw plugins`` lists the others. ``named=False``: the text is the error's own, for a
    ``[plugins.NAME]`` table the plugin's declared class refuses (its table names it, and
    ``voipgw run`` says that line as it always has)."""

    def __init__(self, plugin: str, error: ConfigError, *, named: bool = True) -> None:
        Exception.__init__(self, f"{error} (plugin {plugin!r})" if named else str(error))
        self.file, self.table, self.key = error.file, error.table, error.key
        self.message = error.message
        self.plugin = plugin


def raising_plugin(caller: Any, exc: BaseException) -> str | None:
    """The name of the plugin whose implementation of ``caller`` (a pluggy hook caller) raised
    ``exc``: the innermost frame of its traceback that is one of the implementations (pluggy's
    own call says nobody; a hook wrapper the exception passed through on its way out is an
    outer frame, not the one that raised). None when no frame is (an exception pluggy raised
    itself), or when ``caller`` is no hook caller (a plain function standing in for one)."""
    impls = getattr(caller, "get_hookimpls", None)
    if impls is None:
        return None
    codes: dict[object, str] = {
        getattr(impl.function, "__code__", None): impl.plugin_name for impl in impls()
    }
    found = None
    tb = exc.__traceback__
    while tb is not None:
        found = codes.get(tb.tb_frame.f_code, found)
        tb = tb.tb_next
    return found


Implementation = tuple[
    str | None, Callable[..., Any], tuple[str, ...] | None, tuple[str, ...] | None
]
"""One plugin's implementation of a hook: (its plugin's name, its function, the arguments it
takes by position, those it takes by keyword), to be called as pluggy calls it
(pluggy/_callers.py): a required argument by position, one with a default by keyword when the
hook is given it (a decorator that passes ``*args`` on, an ``event=None``, work as under
pluggy); for pluggy's own call of the hook, (None, the hook caller, None, None: every argument
by keyword)."""


def separate_implementations(caller: Any) -> tuple[Implementation, ...]:
    """``caller``'s (a pluggy hook caller) implementations, newest-registered first as pluggy
    orders them, each to be called on its own: one that raises then stops neither the others
    nor the call, and its failure is put down to its plugin. When a hook wrapper (a generator
    around the others) implements the hook, only pluggy's own call runs it: then the one entry
    is ``caller`` itself, named None, its failures named from their traceback
    (:func:`raising_plugin`). Empty for None (no plugin implements the hook). A plain function
    standing in for a caller (tests) is that one entry too."""
    if caller is None:
        return ()
    impls = getattr(caller, "get_hookimpls", None)
    found = impls() if impls is not None else None
    if found is None or any(impl.hookwrapper or getattr(impl, "wrapper", False) for impl in found):
        return ((None, caller, None, None),)
    return tuple(
        (impl.plugin_name, impl.function, tuple(impl.argnames), tuple(impl.kwargnames))
        for impl in reversed(found)
    )


class HookFailures:
    """The log of one hook's failures at run time, at most one line a minute per plugin (an
    ERROR line, with the traceback for an exception; the next line says how many went unlogged
    in between): a hook that raises on every message or call event must not flood the log.
    The gateway's one such limiter: the raising ``gateway_outbound_message`` hooks
    (gateway/core/endpoint.py), the failing ``gateway_call_event`` observers
    (gateway/core/calls/manager.py), the ``gateway_inbound_message`` changes dropped
    (gateway/core/inbound.py) and the failing or wrong ``gateway_identify_device`` answers
    (gateway/core/devices.py) each keep one."""

    INTERVAL = 60.0

    def __init__(self, logger: logging.Logger, clock: Callable[[], float]) -> None:
        self._log = logger
        self._clock = clock
        self._logged_at: dict[str | None, float] = {}
        self._unlogged: dict[str | None, int] = {}

    def failed(
        self, plugin: str | None, exc: BaseException | None, msg: str, *args: object
    ) -> None:
        """Log ``msg % args`` (with ``exc``'s traceback, its text withheld by the usual rule,
        docs/architecture.md "Logged exceptions"; without one when ``exc`` is None) unless
        ``plugin``'s last such line is less than a minute old. ``msg`` ends with ``%s`` for
        the count of those left unlogged."""
        now = self._clock()
        last = self._logged_at.get(plugin)
        if last is not None and now - last < self.INTERVAL:
            self._unlogged[plugin] = self._unlogged.get(plugin, 0) + 1
            return
        self._logged_at[plugin] = now
        unlogged = self._unlogged.pop(plugin, 0)
        more = f" ({unlogged} more since the last such line)" if unlogged else ""
        if exc is None:
            self._log.error(msg, *args, more)
        else:
            log_exception(self._log, msg, *args, more, exc=exc)


def who(plugin: str | None) -> str:
    """How a log line names a plugin: ``plugin 'NAME'``, or ``a plugin`` when unknown."""
    return f"plugin {plugin!r}" if plugin is not None else "a plugin"


SHOW_TEXT_HINT = (
    "(the text of exceptions raised in plugin code is withheld, as it may hold keys or "
    "passwords; --plugin-exception-text or [gateway] log_plugin_exception_text = true shows it)"
)


def failure(exc: BaseException) -> str:
    """What a start-up error may say of ``exc``, an exception a plugin raised: its type, the
    file and line it was raised at, and its text only when it may be shown
    (:func:`gateway.core.logs.describe_exception`), else how to show it. The core's errors
    whose message is written for the operator keep it, as at a reload (gateway/core/reload.py):
    :class:`ConfigError`, :class:`PluginError` and :class:`~gateway.core.interfaces.ReloadError`
    and their subclasses (the TLS plugins' CertificateError: "ca.key holds no PEM")."""
    described = describe_exception(exc, shown=(ConfigError, PluginError, ReloadError))
    return f"{described} {SHOW_TEXT_HINT}" if described.endswith(WITHHELD) else described


def hook_failed(plugin: str, hook: str, exc: Exception) -> PluginError:
    """The start-up error of ``plugin`` whose ``hook`` (``gateway_plugin_config``,
    ``gateway_configure``, a registration hook) raised ``exc``, its cause: a
    :class:`PluginError` as it is, written for the operator (named ``plugin`` unless it names
    one, or none is at fault: :class:`DuplicateName`); a :class:`ConfigError` (a setting the
    plugin refuses) as every configuration error, ``FILE: [TABLE] KEY: ...``, naming the
    plugin at its end (:class:`PluginConfigError`); anything else ``plugin 'NAME' failed in
    HOOK: TYPE at FILE:LINE ...`` (:func:`failure`)."""
    if isinstance(exc, PluginError):
        if exc.plugin is None and not isinstance(exc, DuplicateName):
            exc.plugin = plugin  # its text is the plugin's, for the operator
        return exc
    error = (
        PluginConfigError(plugin, exc)
        if isinstance(exc, ConfigError)
        else PluginError(f"plugin {plugin!r} failed in {hook}: {failure(exc)}", plugin=plugin)
    )
    error.__cause__ = exc
    return error


@attrs.frozen
class DiscoveredPlugin:
    """An entry point in the ``voipgw.plugins`` group, before (or without) loading it."""

    name: str
    value: str
    distribution: str
    version: str


def discover() -> dict[str, DiscoveredPlugin]:
    """Every installed plugin entry point, by name (without importing any of them)."""
    found: dict[str, DiscoveredPlugin] = {}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist
        found.setdefault(
            ep.name,
            DiscoveredPlugin(
                name=ep.name,
                value=ep.value,
                distribution=dist.name if dist is not None else "?",
                version=dist.version if dist is not None else "?",
            ),
        )
    return found


class Registry(Generic[T]):
    """Named things plugins register (transports, key exchanges, ...). Remembers which plugin
    added each name; a name added twice is a start-up error naming both plugins."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._owners: dict[str, str] = {}
        self._current_plugin = "<core>"

    def add(self, name: str, item: T) -> None:
        if name in self._items:
            raise DuplicateName(
                f"{self.kind} {name!r} is registered by both plugin {self._owners[name]!r} "
                f"and plugin {self._current_plugin!r}"
            )
        self._items[name] = item
        self._owners[name] = self._current_plugin

    def get(self, name: str) -> T | None:
        return self._items.get(name)

    def owner(self, name: str) -> str:
        return self._owners[name]

    def names(self) -> list[str]:
        return list(self._items)

    def items(self) -> list[tuple[str, T]]:
        return list(self._items.items())

    def registered_by(self, plugin: str) -> list[str]:
        return [name for name, owner in self._owners.items() if owner == plugin]

    def _forget(self, plugin: str) -> None:
        """Take out what ``plugin`` registered (a plugin left out of ``voipgw plugins``)."""
        for name in self.registered_by(plugin):
            del self._items[name]
            del self._owners[name]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[T]:
        return iter(list(self._items.values()))

    def __len__(self) -> int:
        return len(self._items)


class Plugins:
    """The plugins one Gateway runs: its own PluginManager, the structured per-plugin configs and
    the registries they filled."""

    def __init__(self, pm: pluggy.PluginManager, configs: Mapping[str, Any]) -> None:
        self.pm = pm
        self.configs = dict(configs)
        self.transports: Registry[Any] = Registry("transport")
        self.key_exchanges: Registry[Any] = Registry("key exchange")
        self.media_policies: Registry[Any] = Registry("media policy")
        self.media_taps: Registry[Any] = Registry("media tap")
        self.sip_captures: Registry[Any] = Registry("SIP capture")
        self.device_profiles: Registry[Any] = Registry("device profile")
        self.interworking: Registry[Any] = Registry("interworking")
        self.services: Registry[Any] = Registry("service")
        self.caller_identity: Registry[Any] = Registry("caller identity")

    @property
    def hook(self) -> Any:
        return self.pm.hook

    def implemented(self, hook_name: str) -> Any | None:
        """The hook caller of ``hook_name`` when some plugin implements it, else None.

        For hooks the core calls on every message or call event: a pluggy call costs several
        Python calls even with no implementation, and most gateways implement none of these.
        """
        caller = getattr(self.pm.hook, hook_name)
        return caller if caller.get_hookimpls() else None

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.pm.list_name_plugin() if name is not None]

    def registry(self, attribute: str) -> Registry[Any]:
        registry: Registry[Any] = getattr(self, attribute)
        return registry

    def run_configure(self, failed: dict[str, PluginError] | None = None) -> None:
        """Call every ``gateway_configure`` hook once, oldest registration first (built-ins
        first), with the plugin's own structured table: the settings its decision hooks keep.
        ``failed``: as :func:`load_plugins`'."""
        for impl in self.pm.hook.gateway_configure.get_hookimpls():
            available = {"config": self.configs.get(impl.plugin_name)}
            try:
                impl.function(**{arg: available[arg] for arg in impl.argnames})
            except Exception as exc:
                self._leave_out(hook_failed(impl.plugin_name, "gateway_configure", exc), failed)

    def run_registrations(self, failed: dict[str, PluginError] | None = None) -> None:
        """Call every ``gateway_register_*`` hook once per plugin, telling each registry who is
        registering so duplicates and ``voipgw plugins`` can name the plugin. ``failed``: as
        :func:`load_plugins`'."""
        for hook_name, attribute in REGISTRY_HOOKS.items():
            registry = self.registry(attribute)
            caller = getattr(self.pm.hook, hook_name)
            # Oldest registration first, so built-ins register before the plugins that extend them.
            for impl in caller.get_hookimpls():
                registry._current_plugin = impl.plugin_name
                available = {"registry": registry, "config": self.configs.get(impl.plugin_name)}
                try:
                    impl.function(**{arg: available[arg] for arg in impl.argnames})
                except Exception as exc:
                    self._leave_out(hook_failed(impl.plugin_name, hook_name, exc), failed)
                finally:
                    registry._current_plugin = "<core>"

    def _leave_out(self, error: PluginError, failed: dict[str, PluginError] | None) -> None:
        """Raise ``error``; or, collecting ``failed`` (``voipgw plugins``), note it under its
        plugin and go on without that plugin: unregistered, its table and what it registered
        forgotten. An error no one plugin is at fault for (two registering one name) is
        raised all the same."""
        _leave_out(self.pm, error, failed)
        name = error.plugin
        assert name is not None
        self.configs.pop(name, None)
        for attribute in REGISTRY_HOOKS.values():
            self.registry(attribute)._forget(name)

    def registered_by(self, plugin: str) -> dict[str, list[str]]:
        """What ``plugin`` registered, by registry attribute (only non-empty ones)."""
        out: dict[str, list[str]] = {}
        for attribute in REGISTRY_HOOKS.values():
            names = self.registry(attribute).registered_by(plugin)
            if names:
                out[attribute] = names
        return out

    def hooks_implemented_by(self, plugin: str) -> list[str]:
        obj = self.pm.get_plugin(plugin)
        if obj is None:
            return []
        return sorted(caller.name for caller in self.pm.get_hookcallers(obj) or [])


def new_plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    return pm


def load_plugins(
    config: GatewayConfig,
    *,
    extra: Sequence[tuple[str, object]] = (),
    installed: Mapping[str, DiscoveredPlugin] | None = None,
    failed: dict[str, PluginError] | None = None,
) -> Plugins:
    """Import the enabled plugins, structure their config tables, run their registrations.

    ``extra`` supplies already-imported plugin objects by name (tests, embedding); an enabled name
    found there is not looked up among the entry points. Raises
    :class:`PluginError` naming an enabled plugin that is not installed (and listing those that
    are) and :class:`ConfigError` for a bad ``[plugins.NAME]`` table.

    ``failed`` (``voipgw plugins``, which lists what loads): a :class:`PluginError` that one
    enabled plugin is at fault for is put there, by the plugin's name, instead of
    raised, and the others load without that plugin (nor its table); each plugin is imported
    once, and one there already is not loaded. A ``[plugins.NAME]`` table its plugin refuses
    is that plugin's error. Errors that are not one plugin's (a name two plugins register)
    are raised as without it.
    """
    pm = new_plugin_manager()
    installed = discover() if installed is None else installed
    extra_names = {name for name, _ in extra}
    missing = [
        name for name in config.plugins.enable if name not in installed and name not in extra_names
    ]
    if missing:
        listing = ", ".join(sorted(installed)) or "(none)"
        raise ConfigError(
            config.source,
            "plugins",
            "enable",
            f"plugin {missing[0]!r} is not installed; installed plugins: {listing}",
        )
    for name in config.plugins.enable:
        if name in extra_names or (failed is not None and name in failed):
            continue  # one failed already (its settings misplaced: voipgw plugins) is not loaded
        plugin = installed[name]
        try:
            obj = _load_entry_point(plugin)
        except Exception as exc:
            # A ConfigError its module raised as it imported (a setting it reads there, e.g.
            # an environment variable or a file it names) is a configuration error, said as
            # one, ``FILE: [TABLE] KEY: ... (plugin 'NAME')``, as from its hooks
            # (hook_failed); it read "failed to import: ConfigError at FILE:LINE: ...", and
            # `voipgw plugins` sent the operator to a plugin error. Anything else: its type.
            error = (
                PluginConfigError(name, exc)
                if isinstance(exc, ConfigError)
                else PluginError(
                    f"plugin {name!r} ({plugin.value} from {plugin.distribution}"
                    f" {plugin.version}) failed to import: {failure(exc)}",
                    plugin=name,
                )
            )
            _leave_out(pm, error, failed, cause=exc)
            continue
        _register(pm, obj, name, failed)
    for name, obj in extra:
        _register(pm, obj, name, failed)
    # A hookimpl whose name or arguments match no hookspec is a typo: fail loudly now.
    while True:
        try:
            pm.check_pending()
            break
        except pluggy.PluginValidationError as exc:
            registered = pm.get_name(exc.plugin)
            name = registered or repr(exc.plugin)
            error = PluginError(f"plugin {name!r}: {exc}", plugin=name)
            if registered is None:  # nothing to leave out: raised however it is called
                raise error from exc
            _leave_out(pm, error, failed, cause=exc)
    configs = _plugin_configs(pm, config, failed)
    plugins = Plugins(pm, configs)
    plugins.run_configure(failed)
    plugins.run_registrations(failed)
    return plugins


def _leave_out(
    pm: pluggy.PluginManager,
    error: PluginError,
    failed: dict[str, PluginError] | None,
    *,
    cause: BaseException | None = None,
) -> None:
    """Raise ``error`` (from ``cause``, when given), unless ``failed`` collects errors
    (:func:`load_plugins`) and ``error`` is one registered plugin's: then it is noted under
    that plugin's name and the plugin unregistered (its hooks are not called again)."""
    if cause is not None:
        error.__cause__ = cause
    name = error.plugin
    if failed is None or name is None or isinstance(error, DuplicateName):
        raise error
    failed[name] = error
    if pm.has_plugin(name):
        pm.unregister(name=name)


def _load_entry_point(plugin: DiscoveredPlugin) -> object:
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP, name=plugin.name):
        if ep.value == plugin.value:
            return ep.load()
    raise PluginError(f"entry point {plugin.name!r} vanished while loading")


# Every hook's name: a plugin's function of one of these names is meant as its implementation.
HOOK_NAMES = tuple(sorted(name for name in vars(hookspecs) if name.startswith("gateway_")))


def _register(
    pm: pluggy.PluginManager, obj: object, name: str, failed: dict[str, PluginError] | None = None
) -> None:
    try:
        pm.register(obj, name=name)
    except (pluggy.PluginValidationError, ValueError) as exc:
        error = (
            PluginError(f"plugin {name!r}: {exc}", plugin=name)
            if isinstance(exc, pluggy.PluginValidationError)
            else PluginError(f"plugin {name!r} could not be registered: {exc}", plugin=name)
        )
        _leave_out(pm, error, failed, cause=exc)
        return
    # pluggy passes over a function without the @hookimpl mark: the plugin would load and never
    # be called, and nothing would say why. Fail as for a misspelled hook (check_pending). The
    # specification itself is no attempt at an implementation: a plugin that imported it
    # (``from gateway.core.hookspecs import *`` for hookimpl: that module has no __all__).
    unmarked = [
        hook
        for hook in HOOK_NAMES
        if callable(found := getattr(obj, hook, None))
        and found is not getattr(hookspecs, hook)
        and pm.parse_hookimpl_opts(obj, hook) is None
    ]
    if unmarked:
        _leave_out(
            pm,
            PluginError(
                f"plugin {name!r}: {', '.join(unmarked)} not marked as a hook implementation, "
                "so it would never be called: decorate it with @hookimpl "
                "(from gateway.core.hookspecs import hookimpl)",
                plugin=name,
            ),
            failed,
        )


def _plugin_configs(
    pm: pluggy.PluginManager, config: GatewayConfig, failed: dict[str, PluginError] | None = None
) -> dict[str, Any]:
    configs: dict[str, Any] = {}
    declared: set[str] = set()
    for impl in pm.hook.gateway_plugin_config.get_hookimpls():
        name = impl.plugin_name
        try:
            cls = impl.function()
        except Exception as exc:
            _leave_out(pm, hook_failed(name, "gateway_plugin_config", exc), failed)
            continue
        if cls is None:
            continue
        if not isinstance(cls, type) or not attrs.has(cls):
            _leave_out(
                pm,
                PluginError(
                    f"plugin {name!r}: gateway_plugin_config must return an attrs class",
                    plugin=name,
                ),
                failed,
            )
            continue
        declared.add(name)
        table = dict(config.plugin_tables.get(name, {}))
        if "state_dir" in attrs.fields_dict(cls) and "state_dir" not in table:
            # A plugin that keeps state (the dtls certificate) keeps it in the gateway's state
            # directory unless its own table says otherwise.
            table["state_dir"] = config.gateway.state_dir
        try:
            configs[name] = structure(cls, table, file=config.source, table_name=f"plugins.{name}")
        except ConfigError as exc:
            _refuse_table(pm, name, exc, failed)
    for name in config.plugin_tables:
        if name not in declared and (failed is None or name not in failed):
            error = ConfigError(
                config.source,
                f"plugins.{name}",
                None,
                f"plugin {name!r} takes no configuration table",
            )
            _refuse_table(pm, name, error, failed)
    return configs


def _refuse_table(
    pm: pluggy.PluginManager, name: str, error: ConfigError, failed: dict[str, PluginError] | None
) -> None:
    """Raise ``error``, a ``[plugins.NAME]`` table its plugin refuses (unknown, missing or
    mistyped keys, or a table for a plugin that declares none), as ``voipgw run`` always has;
    or, collecting ``failed`` (``voipgw plugins``) of a registered plugin, leave that plugin
    out with it, the same line."""
    if failed is None or not pm.has_plugin(name):
        raise error
    _leave_out(pm, PluginConfigError(name, error, named=False), failed, cause=error)
