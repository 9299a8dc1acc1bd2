"""Logging an exception without the text of what plugin code raised (gateway/core/logs.py):
every exception of the chain shows its frames (file, line, function) and type; its text only
when the core raised it, or when the operator turned plugin texts on."""

from __future__ import annotations

import ast
import logging
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from gateway.core import logs
from gateway.core.logs import (
    WITHHELD,
    format_exception,
    log_exception,
    raised_in_plugin_code,
    show_plugin_exception_text,
)

SECRET = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9"  # stands for a key in a plugin's exception


def module(name: str, source: str) -> dict[str, Any]:
    """The globals of ``source`` run as module ``name`` (its frames say so), file ``<name>``."""
    namespace: dict[str, Any] = {"__name__": name, "trio": trio}
    exec(compile(textwrap.dedent(source), f"<{name}>", "exec"), namespace)
    return namespace


CORE = module(
    "gateway.core.example",
    """
    class CoreError(Exception):
        pass

    def call_plugin(hook):
        try:
            hook()
        except ValueError as exc:
            raise CoreError("the core's own words") from exc

    def handle(hook):
        try:
            raise CoreError("the core failed first")
        except CoreError:
            hook()

    def fail():
        raise CoreError("the core's own words")

    def swallow(hook):
        try:
            hook()
        except ValueError:
            raise CoreError("replaced") from None

    async def fail_later():
        fail()

    def catch(action, *args):
        try:
            action(*args)
        except BaseException as exc:
            return exc
        raise AssertionError("nothing raised")

    async def run_tasks(*tasks):
        async with trio.open_nursery() as nursery:
            for task in tasks:
                nursery.start_soon(task)
    """,
)
PLUGIN = module(
    "voipgw_phone_plugin.keys",
    f"""
    def leak():
        raise ValueError("bad key {SECRET}")

    def call_core(core):
        core()

    async def leak_later():
        leak()

    async def inner_nursery():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(leak_later)
    """,
)


@pytest.fixture(autouse=True)
def withheld() -> Iterator[None]:
    show_plugin_exception_text(False)
    yield
    show_plugin_exception_text(False)


def caught(action: Callable[..., object], *args: object) -> BaseException:
    """What ``action(*args)`` raised, caught in the core as the core catches what it logs."""
    exc = CORE["catch"](action, *args)
    assert isinstance(exc, BaseException)
    return exc


def test_a_cause_raised_in_plugin_code_shows_its_frames_and_type_not_its_text() -> None:
    exc = caught(CORE["call_plugin"], PLUGIN["leak"])
    text = format_exception(exc)
    assert SECRET not in text
    assert text.splitlines() == [
        "Traceback (most recent call last):",
        '  File "<gateway.core.example>", line 7, in call_plugin',
        '  File "<voipgw_phone_plugin.keys>", line 3, in leak',
        f"ValueError: {WITHHELD}",
        "",
        "The above exception was the direct cause of the following exception:",
        "",
        "Traceback (most recent call last):",
        '  File "<gateway.core.example>", line 31, in catch',
        '  File "<gateway.core.example>", line 9, in call_plugin',
        "gateway.core.example.CoreError: the core's own words",  # the core's: shown
        logs._FOOTNOTE,
    ]


def test_the_core_keeps_its_own_words_and_the_plugins_context_is_withheld() -> None:
    exc = caught(CORE["handle"], PLUGIN["leak"])
    assert raised_in_plugin_code(exc)
    assert not raised_in_plugin_code(exc.__context__)  # type: ignore[arg-type]
    text = format_exception(exc)
    assert SECRET not in text
    assert "gateway.core.example.CoreError: the core failed first\n" in text
    assert "During handling of the above exception, another exception occurred:" in text
    assert text.endswith(f"ValueError: {WITHHELD}\n{logs._FOOTNOTE}")
    # Chained from an exception the core raised alone: its text is shown.
    core_only = caught(CORE["fail"])
    assert not raised_in_plugin_code(core_only)
    assert format_exception(core_only).endswith("CoreError: the core's own words")


def test_a_suppressed_context_is_not_shown() -> None:
    exc = caught(CORE["swallow"], PLUGIN["leak"])
    text = format_exception(exc)
    assert "ValueError" not in text and "During handling" not in text


def test_a_core_exception_raised_while_plugin_code_calls_the_core_is_plugin_codes() -> None:
    exc = caught(PLUGIN["call_core"], CORE["fail"])
    assert raised_in_plugin_code(exc)  # the core may have raised with what the plugin passed
    assert f"CoreError: {WITHHELD}" in format_exception(exc)


def test_an_exception_never_raised_is_anybodys() -> None:
    made = ValueError(f"bad key {SECRET}")  # a plugin's, chained by whoever made it
    assert raised_in_plugin_code(made)
    assert format_exception(made) == f"ValueError: {WITHHELD}\n{logs._FOOTNOTE}"


def test_notes_of_plugin_code_are_withheld_too() -> None:
    exc = caught(PLUGIN["leak"])
    exc.add_note(f"key {SECRET}")
    text = format_exception(exc)
    assert SECRET not in text and "(1 note(s) withheld)" in text


def test_exception_groups_from_trio_nurseries_show_each_member() -> None:
    tasks = (PLUGIN["leak_later"], PLUGIN["inner_nursery"], CORE["fail_later"])
    group = caught(trio.run, CORE["run_tasks"], *tasks)
    assert isinstance(group, BaseExceptionGroup)
    text = format_exception(group)
    assert SECRET not in text
    lines = text.splitlines()
    # The core's nursery (trio's words); a plugin task; a plugin's own nursery, whose group is
    # its own; the core's task, its words shown.
    assert "ExceptionGroup: Exceptions from Trio nursery (3 sub-exceptions)" in lines
    assert lines.count("+---- 1 of 3 ----") == 1 and lines.count("+---- 3 of 3 ----") == 1
    assert lines.count(f"| ValueError: {WITHHELD}") == 1
    assert lines.count(f"| ExceptionGroup: {WITHHELD}") == 1
    assert lines.count("| +---- 1 of 1 ----") == 1
    assert lines.count(f"| | ValueError: {WITHHELD}") == 1
    assert "| gateway.core.example.CoreError: the core's own words" in lines
    assert lines.count('|   File "<voipgw_phone_plugin.keys>", line 3, in leak') == 1
    assert lines.count('| |   File "<voipgw_phone_plugin.keys>", line 3, in leak') == 1
    assert lines[-1] == logs._FOOTNOTE


def test_a_cycle_in_the_chain_ends() -> None:
    exc = caught(PLUGIN["leak"])
    other = caught(CORE["fail"])
    exc.__context__, other.__context__ = other, exc
    assert format_exception(exc).count("CoreError") == 1


def test_the_operator_may_show_plugin_texts() -> None:
    show_plugin_exception_text(True)
    text = format_exception(caught(CORE["call_plugin"], PLUGIN["leak"]))
    assert f"ValueError: bad key {SECRET}\n" in text and logs._FOOTNOTE not in text


def test_log_exception_logs_the_rendering_and_not_the_exception(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="test.logs")
    log = logging.getLogger("test.logs")
    try:
        CORE["call_plugin"](PLUGIN["leak"])
    except Exception:
        log_exception(log, "call %s: it failed", "c1")  # the exception being handled
    failed = caught(CORE["call_plugin"], PLUGIN["leak"])
    log_exception(log, "again", exc=failed, level=logging.WARNING)
    log_exception(log, "no exception at all")
    first, second, third = caplog.records
    assert (first.levelno, first.getMessage()) == (logging.ERROR, "call c1: it failed")
    assert (second.levelno, second.getMessage()) == (logging.WARNING, "again")
    assert first.exc_info is None and second.exc_info is None
    assert "in call_plugin\n" in (first.exc_text or "")
    assert second.exc_text == format_exception(failed)
    assert third.exc_text is None
    # The caller's file, line and function, as log.exception's records have.
    assert first.pathname == __file__
    assert first.funcName == "test_log_exception_logs_the_rendering_and_not_the_exception"
    assert SECRET not in caplog.text
    assert f"ValueError: {WITHHELD}" in caplog.text


def test_nothing_is_rendered_for_a_level_that_is_off(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.ERROR, logger="test.logs")
    rendered: list[BaseException] = []
    monkeypatch.setattr(logs, "format_exception", rendered.append)
    log_exception(logging.getLogger("test.logs"), "x", exc=ValueError(), level=logging.INFO)
    assert rendered == [] and caplog.records == []


def test_the_gateway_logs_exceptions_only_through_log_exception() -> None:
    """No ``log.exception(...)`` nor ``exc_info=`` in the gateway package (the core, the
    built-in plugins, the testing kit) but logs.py: either would hand a formatter the exception
    itself, and it prints the text. Built-in plugins are plugin code by log_exception's rule
    (their frames are not ``gateway.core``'s): the text of what they raise is withheld too."""
    package = Path(logs.__file__).parent.parent
    found = []
    for path in sorted(package.rglob("*.py")):
        if path == Path(logs.__file__):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            attribute = node.func.attr if isinstance(node.func, ast.Attribute) else None
            if attribute == "exception" or any(k.arg == "exc_info" for k in node.keywords):
                found.append(f"{path.relative_to(package)}:{node.lineno}")
    assert found == []
    assert {"core", "plugins", "testing"} <= {p.name for p in package.iterdir()}


# Rendering runs at the logging site, outside logging's own guard (Handler.handleError): an
# exception it raised would leave the except block that logs, turning a logged failure into
# the failure of the task that logged it. Whatever the exception is made of, it renders.


def chained(depth: int) -> BaseException:
    """An exception with ``depth`` exceptions before it in its ``__context__`` chain (a retry
    that calls itself from its except block), every one raised in plugin code."""
    exc = caught(PLUGIN["leak"])
    for _ in range(depth):
        newer = caught(PLUGIN["leak"])
        newer.__context__ = exc
        exc = newer
    return exc


def test_a_chain_deeper_than_the_stack_renders_its_newest_exceptions() -> None:
    text = format_exception(chained(5000))
    lines = text.splitlines()
    assert lines[-2] == f"ValueError: {WITHHELD}" and lines[-1] == logs._FOOTNOTE
    assert "older exceptions of the chain not shown" in lines[0]
    assert lines.count(f"ValueError: {WITHHELD}") == logs.MAX_CHAIN


def test_nested_exception_groups_deeper_than_the_stack_render() -> None:
    group: BaseException = caught(PLUGIN["leak"])
    for _ in range(5000):
        group = ExceptionGroup("g", [group])
    text = format_exception(group)
    assert "more nested exception groups not shown" in text
    assert text.count("ExceptionGroup") == logs.MAX_GROUP_DEPTH + 1


def test_a_wide_exception_group_shows_its_first_members_and_counts_the_rest() -> None:
    group = ExceptionGroup("g", [caught(PLUGIN["leak"]) for _ in range(1000)])
    lines = format_exception(group).splitlines()
    assert lines.count(f"| ValueError: {WITHHELD}") == logs.MAX_GROUP_WIDTH
    assert f"+---- and {1000 - logs.MAX_GROUP_WIDTH} more exceptions ----" in lines


class BrokenStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text")


class BrokenNotes(Exception):
    @property
    def __notes__(self) -> list[str]:  # type: ignore[override]
        raise RuntimeError("no notes")


def test_an_exception_whose_text_or_notes_cannot_be_had_still_renders() -> None:
    show_plugin_exception_text(True)  # the debugging switch is where str() gets called
    broken = caught(_raise, BrokenStr())
    assert format_exception(broken).endswith("BrokenStr: <exception str() failed>")
    odd = caught(_raise, ValueError("odd"))
    odd.__notes__ = 5  # type: ignore[attr-defined]
    assert format_exception(odd).endswith("ValueError: odd\n5")
    assert "BrokenNotes" in format_exception(caught(_raise, BrokenNotes()))
    show_plugin_exception_text(False)
    odd_withheld = caught(PLUGIN["leak"])
    odd_withheld.__notes__ = 5  # type: ignore[attr-defined]
    assert format_exception(odd_withheld).endswith(f"(notes withheld)\n{logs._FOOTNOTE}")


def _raise(exc: BaseException) -> None:
    raise exc


def test_log_exception_never_raises_out_of_the_site_that_logs(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.DEBUG, logger="test.logs")

    def broken(exc: BaseException) -> str:
        raise MemoryError

    monkeypatch.setattr(logs, "format_exception", broken)
    log_exception(logging.getLogger("test.logs"), "it failed", exc=caught(PLUGIN["leak"]))
    (record,) = caplog.records
    assert record.getMessage() == "it failed"
    assert record.exc_text == "ValueError (its traceback could not be rendered: MemoryError)"
