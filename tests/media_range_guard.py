"""No gateway a test starts binds its media ports from the default ``[media] ports`` range.

A gateway binds its media ports call by call, long after it started. The default range
(30000-30999, gateway/core/config.py) is the same for every gateway whose config names none: two
test runs on one machine (helpers run several at once), or a test run and a developer's gateway,
would share it. tests/port_blocks.py hands out no port in it (``GATEWAY_DEFAULT_MEDIA``), so a
test's gateway takes its range from there instead: ``port_block_text`` or the interop harness's
``free_port_block`` (``GatewayProcess`` does).

Loaded by tests/conftest.py for every test, this plugin fails the test that starts a gateway whose
media range meets the default, where the range is decided: a media relay made in the test's own
process (``PortAllocator``, ``WorkerPool``: ``Gateway.serve``, a test's relay), and a ``gateway
run`` / ``voipgw run`` child process (its ``--media-ports``, else its ``--config`` file's
``[media] ports``, else the default). tests/test_media_range_guard.py checks that it does, and
that the default stays outside the ports the tests hand out.
"""

from __future__ import annotations

import subprocess
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from gateway.core.config import MediaSection, PortRange
from gateway.core.media import ports as media_ports
from gateway.core.media import remote_relay

DEFAULT = PortRange.parse(MediaSection().ports)

ADVICE = (
    "take the range from tests/port_blocks.py (port_block_text) or the interop harness's "
    "free_port_block: another test run's gateway, or a developer's, binds the default"
)


def meets_default(ports: PortRange) -> bool:
    return ports.low <= DEFAULT.high and DEFAULT.low <= ports.high


def check_range(ports: PortRange, what: str) -> None:
    if meets_default(ports):
        pytest.fail(
            f"{what}: media ports {ports.low}-{ports.high} meet the gateway's default "
            f"[media] ports {DEFAULT.low}-{DEFAULT.high}; {ADVICE}",
            pytrace=False,
        )


def _option(args: Sequence[str], name: str) -> str | None:
    """The last value of ``--name VALUE`` or ``--name=VALUE`` in ``args`` (argparse's rule)."""
    value = None
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(name + "="):
            value = arg[len(name) + 1 :]
    return value


def gateway_run_arguments(args: object) -> list[str] | None:
    """The arguments after ``run`` when ``args`` (a Popen argument) starts a gateway, else None."""
    if isinstance(args, str | bytes) or not isinstance(args, Sequence):
        return None  # a shell line or a lone program: no test starts a gateway so
    words = [str(arg) for arg in args]
    for i, word in enumerate(words):
        if words[i : i + 3] == ["-m", "gateway", "run"]:
            return words[i + 3 :]
        if Path(word).name == "voipgw" and words[i + 1 : i + 2] == ["run"]:
            return words[i + 2 :]
    return None


def command_media_range(args: Sequence[str], cwd: object = None) -> PortRange | None:
    """The media range a ``gateway run`` with ``args`` (in ``cwd``) binds from; None when it
    refuses to start for another reason first (a config that does not parse: the test is about
    that)."""
    if "--help" in args or "-h" in args:
        return None  # prints its usage and starts nothing
    given = _option(args, "--media-ports")
    config = _option(args, "--config")
    try:
        if given is not None:
            return PortRange.parse(given)
        if config is None:
            return DEFAULT  # the embedded defaults
        path = Path(config) if cwd is None else Path(str(cwd), config)
        media = tomllib.loads(path.read_text()).get("media", {})
        ports = media.get("ports", MediaSection().ports) if isinstance(media, dict) else None
        return PortRange.parse(ports) if isinstance(ports, str) else None
    except (OSError, ValueError):  # tomllib.TOMLDecodeError is a ValueError
        return None


def check_command(args: object, cwd: object = None) -> None:
    arguments = gateway_run_arguments(args)
    if arguments is None:
        return
    ports = command_media_range(arguments, cwd)
    if ports is not None:
        check_range(ports, f"gateway run {' '.join(arguments)}")


def _guarded(init: Callable[..., None], check: Callable[..., None]) -> Callable[..., None]:
    def __init__(self: object, *args: Any, **kwargs: Any) -> None:
        check(*args, **kwargs)
        init(self, *args, **kwargs)

    return __init__


def _check_relay(address: str, ports: PortRange, *_: object, **__: object) -> None:
    check_range(ports, f"a media relay on {address}")


def _check_popen(args: object, *_: object, cwd: object = None, **__: object) -> None:
    check_command(args, cwd)


def pytest_configure(config: pytest.Config) -> None:
    # Class attributes, so the check holds however a module imported the class.
    for cls in (media_ports.PortAllocator, remote_relay.WorkerPool):
        cls.__init__ = _guarded(cls.__init__, _check_relay)  # type: ignore[method-assign]
    subprocess.Popen.__init__ = _guarded(  # type: ignore[method-assign]
        subprocess.Popen.__init__, _check_popen
    )
