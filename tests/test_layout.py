"""Test modules need unique file names: tests/ has no __init__.py files, so pytest imports each
test module by its base name and two files with the same name break collection.

And no module under tests/ imports a test module: what tests share (phones, scenarios, fixtures,
checks) lives in plainly named helper modules beside them (tests/interop/sipp_calls.py,
tests/component/calls/b2bua_env.py, ...). A test module imported elsewhere is loaded twice, under
its base name by pytest and under its package path by the import, so its module state and any
fixture imported from it exist twice; and renaming or deleting that test breaks other modules."""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).parent


def test_test_module_names_are_unique() -> None:
    names = Counter(path.name for path in ROOT.rglob("test_*.py"))
    duplicates = sorted(name for name, count in names.items() if count > 1)
    assert names, "no test modules found"
    assert duplicates == [], f"rename so each is unique: {duplicates}"


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, dotted name) of every module path imports, at any depth (a function's imports
    too), relative imports resolved; for ``from a import b`` both ``a`` and ``a.b``, since b
    may be a module."""
    package = path.parent.relative_to(ROOT.parent).parts
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package[: len(package) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def test_no_module_imports_a_test_module() -> None:
    test_modules = {path.stem for path in ROOT.rglob("test_*.py")}
    offences = [
        f"{path.relative_to(ROOT.parent)}:{line} imports {name}"
        for path in sorted(ROOT.rglob("*.py"))
        for line, name in imported_modules(path)
        if name.rsplit(".", 1)[-1] in test_modules
    ]
    assert len(list(ROOT.rglob("*.py"))) > 100, "tests/ not found"
    assert offences == [], "move what is shared into a helper module:\n" + "\n".join(offences)
