from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio
import voipgw_example_calls as plugin

from gateway.core.config import ConfigError, from_mapping, from_toml
from gateway.core.gateway import Gateway
from gateway.core.interfaces import Caller, RouteTarget, TappedCall
from gateway.core.plugins import load_plugins
from gateway.core.sip.message import Headers, Request
from gateway.core.sip.uri import SipUri


def _load(table: dict[str, object]):  # type: ignore[no-untyped-def]
    config = from_mapping({"plugins": {"enable": ["example-calls"], "example-calls": table}})
    # Registered as an object rather than through its entry point, so the test needs no install;
    # a fresh instance per gateway, as each keeps its own settings.
    return load_plugins(config, extra=[("example-calls", plugin.ExampleCalls())], installed={})


def _load_file(path: Path):  # type: ignore[no-untyped-def]
    # As voipgw run and check-config read it: the plugin's table is built with the file's name.
    return load_plugins(
        from_toml(path), extra=[("example-calls", plugin.ExampleCalls())], installed={}
    )


class Phones:
    """A Directory with one registered phone for reception and none for anybody else."""

    def contacts(self, account: str) -> list[RouteTarget]:
        if account == "reception":
            return [RouteTarget(uri="sip:reception@192.0.2.7:5060", account="reception")]
        return []


def _invite(user: str) -> Request:
    return Request("INVITE", SipUri("sip", "gw.example", user=user), Headers.of([]))


ALICE = Caller(kind="account", name="alice")


def test_the_tap_is_registered_with_its_file_in_the_state_directory(tmp_path: Path) -> None:
    plugins = _load({"state_dir": str(tmp_path)})
    tap = plugins.media_taps.get("example-calls")
    assert isinstance(tap, plugin.CallLog)
    assert tap.path == str(tmp_path / "calls.log")


def test_a_short_code_rings_the_account_it_names() -> None:
    plugins = _load({"short_codes": ["*1=reception", "*2=nobody"]})
    route = plugins.hook.gateway_route_call
    decision = route(request=_invite("*1"), caller=ALICE, directory=Phones())
    assert [target.uri for target in decision.targets] == ["sip:reception@192.0.2.7:5060"]
    refused = route(request=_invite("*2"), caller=ALICE, directory=Phones())
    assert refused.reject_status == 480
    # Other numbers, and short codes from a trunk, are left to the core's routing.
    assert route(request=_invite("bob"), caller=ALICE, directory=Phones()) is None
    trunk = Caller(kind="trunk", name="carrier")
    assert route(request=_invite("*1"), caller=trunk, directory=Phones()) is None


def test_each_gateway_keeps_its_own_settings() -> None:
    # The settings live on the plugin object gateway_configure was given, not in the module:
    # two gateways in one process (tests, an embedding) route by their own tables.
    first = _load({"short_codes": ["*1=reception"]})
    second = _load({"short_codes": ["*1=nobody"]})
    decision = first.hook.gateway_route_call(
        request=_invite("*1"), caller=ALICE, directory=Phones()
    )
    assert decision.targets[0].account == "reception"
    refused = second.hook.gateway_route_call(
        request=_invite("*1"), caller=ALICE, directory=Phones()
    )
    assert refused.reject_status == 480
    # The object the entry point names is the one `voipgw run` uses.
    assert isinstance(plugin.plugin, plugin.ExampleCalls)


@pytest.mark.parametrize("entry", ["*1", "*1=", "=reception"])
def test_a_short_code_without_an_account_names_the_file_table_and_key(
    tmp_path: Path, entry: str
) -> None:
    """As the core's own errors do: the operator reads where to look and what to change, and
    voipgw check-config says it without loading the plugin."""
    path = tmp_path / "voipgw.toml"
    path.write_text(
        '[plugins]\nenable = ["example-calls"]\n\n'
        f'[plugins.example-calls]\nshort_codes = ["*2=reception", "{entry}"]\n'
    )
    with pytest.raises(ConfigError) as raised:
        _load_file(path)
    error = raised.value
    assert (error.file, error.table, error.key) == (
        str(path),
        "plugins.example-calls",
        "short_codes",
    )
    assert str(error) == (
        f"{path}: [plugins.example-calls] short_codes: {entry!r} is not CODE=ACCOUNT"
    )


def test_the_sink_writes_one_line_when_the_call_ends(tmp_path: Path) -> None:
    path = tmp_path / "calls.log"
    call = TappedCall(
        call_id="c1",
        from_uri="sip:alice@gw.example",
        to_uri="sip:*1@gw.example",
        caller_kind="account",
        caller_name="alice",
        callee_kind="account",
        callee_name="reception",
    )

    tap = plugin.CallLog(str(path))
    assert tap.counters() == (("calls", 0), ("lines_written", 0), ("write_failures", 0))

    async def main() -> None:
        sink = tap.sink_for_call(call)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sink.run)
            for _ in range(3):
                sink.packet("0", "a_to_b", b"\x80" * 12, now=0.0)
            sink.packet("0", "b_to_a", b"\x80" * 12, now=0.0)
            await trio.sleep(0)
            assert not path.exists()  # nothing until the call ends
            sink.close()

    trio.run(main)
    (line,) = path.read_text().splitlines()
    assert " c1 from account:alice (sip:alice@gw.example) to account:reception " in line
    assert line.endswith(" packets 3/1")
    assert tap.counters() == (("calls", 1), ("lines_written", 1), ("write_failures", 0))


def test_a_line_that_cannot_be_written_is_counted(tmp_path: Path) -> None:
    call = TappedCall("c1", "sip:a@gw.example", "sip:b@gw.example", "account", "a", "", None)
    tap = plugin.CallLog(str(tmp_path / "missing" / "calls.log"))  # no such directory

    async def main() -> None:
        sink = tap.sink_for_call(call)
        sink.close()
        with pytest.raises(OSError):
            await sink.run()

    trio.run(main)
    assert tap.counters() == (("calls", 1), ("lines_written", 0), ("write_failures", 1))


def test_a_call_log_the_gateway_may_not_append_to_is_found_at_start_up(tmp_path: Path) -> None:
    """written_directories() names the log: `voipgw run` refuses to start when the log is
    there and this user may not write it (before, the first call's line was lost in a
    worker thread's error). Root may write any file: `voipgw check-config` as root warns
    when the state_dir's owner (the user the service runs as, most likely) may not."""
    log = tmp_path / "calls.log"
    log.write_text("")
    log.chmod(0o444)
    config = from_mapping(
        {
            "gateway": {"state_dir": str(tmp_path)},
            "sip": {"listen": []},
            "plugins": {"enable": ["example-calls"], "example-calls": {}},
        }
    )
    plugins = load_plugins(config, extra=[("example-calls", plugin.ExampleCalls())], installed={})
    gateway = Gateway(config, plugins)
    if os.geteuid() != 0:
        with pytest.raises(ConfigError, match=r"the call log .* cannot be written"):
            gateway.check()
        return
    os.chown(tmp_path, 65534, 65534)  # the service's user's, root checking
    gateway.check(as_service=False)
    (warning,) = gateway.access_warnings
    assert f"state_dir: {log} can be written by root, who runs check-config, but not" in str(
        warning
    )
