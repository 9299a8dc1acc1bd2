"""The sans-IO rule of ARCHITECTURE.md: protocol packages import no trio, socket, time or random.

Walks the AST of every module in those packages, so an import hidden in a function fails too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[3] / "gateway"
SANS_IO_PACKAGES = ["core/sip", "core/sdp", "core/auth"]
# Pure modules inside packages that also hold I/O code.
SANS_IO_MODULES = [
    "core/media/rtp.py",
    "core/media/dtmf.py",
    "core/media/srtp.py",
    "core/media/srtp_python.py",
    "core/media/worker_protocol.py",
    "core/media/stun.py",
    "core/media/ice.py",
    "core/registrar.py",
    "plugins/taps/g722.py",
]
FORBIDDEN = {"trio", "socket", "time", "random", "asyncio", "threading", "select", "os", "secrets"}


def _modules() -> list[Path]:
    paths: list[Path] = []
    for package in SANS_IO_PACKAGES:
        paths.extend(sorted((ROOT / package).rglob("*.py")))
    paths.extend(ROOT / module for module in SANS_IO_MODULES if (ROOT / module).exists())
    return paths


def _imported_roots(tree: ast.AST) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "__import__"
        ):
            roots.add("__import__")
    return roots


def test_there_is_something_to_check() -> None:
    assert len(_modules()) >= 5


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_module_imports_no_io(path: Path) -> None:
    roots = _imported_roots(ast.parse(path.read_text(), filename=str(path)))
    bad = sorted(roots & (FORBIDDEN | {"__import__"}))
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}: sans-IO code takes now= and ids"


def test_the_checker_catches_a_hidden_import() -> None:
    tree = ast.parse("def f():\n    import time\n    from trio import sleep\n")
    assert _imported_roots(tree) == {"time", "trio"}
