"""docs/plugin_hooks.md documents every hook and every argument (STYLE.md habit 8)."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from gateway.core import hookspecs

DOC = (Path(__file__).parents[3] / "docs" / "plugin_hooks.md").read_text()
HOOKS = [
    (name, fn)
    for name, fn in vars(hookspecs).items()
    if name.startswith("gateway_") and callable(fn)
]


def _section(name: str) -> str:
    start = DOC.index(f"### `{name}(")
    end = DOC.find("\n### ", start + 1)
    return DOC[start : end if end != -1 else len(DOC)]


def test_there_are_hooks() -> None:
    assert len(HOOKS) >= 11


@pytest.mark.parametrize(("name", "fn"), HOOKS, ids=[n for n, _ in HOOKS])
def test_hook_is_documented_with_every_argument(name: str, fn: object) -> None:
    assert f"### `{name}(" in DOC, f"{name} has no section in docs/plugin_hooks.md"
    section = _section(name)
    args = list(inspect.signature(fn).parameters)  # type: ignore[arg-type]
    heading = section.splitlines()[0]
    for arg in args:
        assert arg in heading, f"{name}: argument {arg!r} missing from the heading"
        # registration hooks share a description of registry/config above them
        if not name.startswith("gateway_register_"):
            assert f"`{arg}`" in section, f"{name}: argument {arg!r} is not described"
    assert fn.__doc__, f"{name} has no docstring"  # type: ignore[attr-defined]


def test_every_documented_hook_exists() -> None:
    documented = {
        line.split("`")[1].split("(")[0] for line in DOC.splitlines() if line.startswith("### `")
    }
    assert documented == {name for name, _ in HOOKS}
