"""The one line a start that failed ends with (``cannot run: %s``, gateway.run_until_signal):
the core's and the built-in plugins' own texts as they wrote them (the listener in use with what
to change, the metrics port), a third-party plugin's OSError only as the errno's name and the
operating system's words for it (logs.startup_error_text), never the text it carried."""

from __future__ import annotations

import errno
import logging
import textwrap
from types import SimpleNamespace
from typing import Any

import pytest
import trio

from gateway.core import gateway as gateway_module
from gateway.core.config import ListenSpec
from gateway.core.logs import startup_error_text

SECRET = "psk=s3cr3t-of-the-plugin"


def module(name: str, source: str) -> dict[str, Any]:
    """The globals of ``source`` run as module ``name`` (its frames say so)."""
    namespace: dict[str, Any] = {"__name__": name, "trio": trio}
    exec(compile(textwrap.dedent(source), f"<{name}>", "exec"), namespace)
    return namespace


SOURCE = """
import errno
from gateway.core.config import ListenSpec
from gateway.core.gateway import listen_error

async def serve(task_status=None):
    raise OSError(errno.EADDRINUSE, "bind failed, " + SECRET)

async def serve_no_errno(task_status=None):
    raise OSError("bind failed, " + SECRET)

async def listen(task_status=None):
    spec = ListenSpec.parse("tcp:127.0.0.1:5070")
    raise listen_error(spec, OSError(errno.EADDRINUSE, "whatever")) from None

async def metrics(task_status=None):
    raise OSError(errno.EADDRINUSE, "metrics: cannot listen on 127.0.0.1:9464: in use")
"""
THIRD_PARTY = module("acme_plugin.server", f"SECRET = {SECRET!r}\n" + textwrap.dedent(SOURCE))
CORE = module("gateway.core.example", f"SECRET = {SECRET!r}\n" + textwrap.dedent(SOURCE))
BUILT_IN = module("gateway.plugins.metrics.example", f"SECRET = {SECRET!r}\n" + SOURCE)


def cannot_run(serve: Any, caplog: pytest.LogCaptureFixture) -> list[str]:
    """The ERROR lines of run_until_signal for a gateway whose start raises from ``serve``."""
    fake = SimpleNamespace(config=SimpleNamespace(gateway=SimpleNamespace(drain_timeout=0)))
    fake.serve = serve
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="gateway.core.gateway"):
        assert gateway_module.run_until_signal(fake) == 1  # type: ignore[arg-type]
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_third_party_plugins_start_up_oserror_shows_only_what_the_system_says(
    caplog: pytest.LogCaptureFixture,
) -> None:
    lines = cannot_run(THIRD_PARTY["serve"], caplog)
    assert lines == ["cannot run: EADDRINUSE (Address already in use)"]
    lines = cannot_run(THIRD_PARTY["serve_no_errno"], caplog)
    assert lines == ["cannot run: OSError"]


def test_the_listener_in_use_stays_readable_with_what_to_change(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The core's listen_error, raised where the core raises it (gateway.core.gateway).
    lines = cannot_run(CORE["listen"], caplog)
    assert lines == [
        "cannot run: [Errno 98] cannot listen on tcp:127.0.0.1:5070: Address already in use "
        "(another program listens there: stop it, or give voipgw other ports with --listen or "
        "[sip] listen)"
    ]


def test_a_built_in_plugins_own_text_is_shown(caplog: pytest.LogCaptureFixture) -> None:
    lines = cannot_run(BUILT_IN["metrics"], caplog)
    assert lines == [
        "cannot run: [Errno 98] metrics: cannot listen on 127.0.0.1:9464: in use",
    ]


def test_the_same_text_raised_outside_the_core_is_not_shown() -> None:
    # The traceback decides, not the text: the core's message raised from a frame that is
    # neither the core's nor a built-in plugin's (this test's) is anybody's.
    spec = ListenSpec.parse("udp:127.0.0.1:5060")
    try:
        raise gateway_module.listen_error(spec, OSError(errno.EADDRINUSE, "x"))
    except OSError as exc:
        assert startup_error_text(exc) == "EADDRINUSE (Address already in use)"
