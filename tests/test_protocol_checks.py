"""No ``isinstance`` against a ``@runtime_checkable`` Protocol, except where listed.

In Python 3.11 such a check walks the protocol's members on every call (``typing`` looks each
one up with ``hasattr``): a few of them per offer and answer cost 4.7 % of a plain call's
instructions in session 18 (docs/benchmarks.md, "Machine"), on the path issue 7 measures in
calls per second. Ask the object (an attribute, a method every implementation has) instead.
"""

from __future__ import annotations

import ast
from pathlib import Path

GATEWAY = Path(__file__).parent.parent / "gateway"

# (module, protocol): checks that stay, and why they are off the per-call path.
ALLOWED = {
    # Once per stream when a DTLS-SRTP or ZRTP leg attaches its RTCP port's negotiation.
    ("core/media/handshakes.py", "HasRtcpComponent"),
}


def _runtime_checkable(tree: ast.Module) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for decorator in node.decorator_list:
                name = decorator.attr if isinstance(decorator, ast.Attribute) else None
                if isinstance(decorator, ast.Name):
                    name = decorator.id
                if name == "runtime_checkable":
                    names.add(node.name)
    return names


def _isinstance_targets(tree: ast.Module) -> set[str]:
    """Class names given as the second argument of ``isinstance`` (alone or in a tuple)."""
    found = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "isinstance"
            and len(node.args) == 2
        ):
            second = node.args[1]
            elements = second.elts if isinstance(second, ast.Tuple) else [second]
            for element in elements:
                if isinstance(element, ast.Name):
                    found.add(element.id)
                elif isinstance(element, ast.Attribute):
                    found.add(element.attr)
    return found


def test_no_isinstance_against_runtime_checkable_protocols() -> None:
    trees = {
        path.relative_to(GATEWAY).as_posix(): ast.parse(path.read_text(), str(path))
        for path in GATEWAY.rglob("*.py")
    }
    protocols = set().union(*(_runtime_checkable(tree) for tree in trees.values()))
    assert "HasRtcpComponent" in protocols  # the scan sees the decorator at all
    checks = {
        (module, name)
        for module, tree in trees.items()
        for name in _isinstance_targets(tree) & protocols
    }
    assert ("core/media/handshakes.py", "HasRtcpComponent") in checks  # and the call
    assert checks - ALLOWED == set(), (
        "isinstance against a runtime_checkable Protocol (slow: walks its members per call); "
        "ask the object instead, or add it to ALLOWED with why it is off the call path"
    )
