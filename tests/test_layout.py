"""Test modules need unique file names: tests/ has no __init__.py files, so pytest imports each
test module by its base name and two files with the same name break collection."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

ROOT = Path(__file__).parent


def test_test_module_names_are_unique() -> None:
    names = Counter(path.name for path in ROOT.rglob("test_*.py"))
    duplicates = sorted(name for name, count in names.items() if count > 1)
    assert names, "no test modules found"
    assert duplicates == [], f"rename so each is unique: {duplicates}"
