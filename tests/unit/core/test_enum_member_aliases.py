"""Module-level names for enum members (``_S_TERMINATED = State.TERMINATED``, ``_SENDRECV =
Direction.SENDRECV``): CPython 3.11 reads a member from its class through EnumType's hook, so
code read on every call takes a module name instead (docs/benchmarks.md, sessions 44 and 45). A
name bound to another member than the one it says would send a transaction or a stream down
another branch, and read as right. Every such name in gateway/, found in the source (so a new one
is checked the day it is written), is the member its name spells: ``_<MEMBER>``, or
``_<initial of the enum>_<MEMBER>`` (State, Input, Effect in sip/transaction.py)."""

from __future__ import annotations

import ast
import enum
import importlib
import re
from pathlib import Path

import pytest

import gateway

_ALIAS = re.compile(r"_(?:(?P<initial>[A-Z])_)?(?P<member>[A-Z][A-Z0-9_]*)")


def _module_name(path: Path) -> str:
    root = Path(gateway.__file__).parent
    return ".".join(("gateway", *path.relative_to(root).with_suffix("").parts))


def _aliases() -> list[tuple[str, str, str, str]]:
    """(module, name, enum's name as written, member as written) for every module-level
    ``_NAME = Enum.MEMBER`` in gateway/."""
    found = []
    for path in sorted(Path(gateway.__file__).parent.rglob("*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if not isinstance(node, ast.Assign | ast.AnnAssign) or node.value is None:
                continue
            value = node.value
            if not (isinstance(value, ast.Attribute) and isinstance(value.value, ast.Name)):
                continue
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name) and _ALIAS.fullmatch(target.id):
                    found.append((_module_name(path), target.id, value.value.id, value.attr))
    return found


ALIASES = [alias for alias in _aliases() if alias[3].isupper()]


def test_the_session_44_aliases_are_found() -> None:
    modules = {module for module, *_ in ALIASES}
    assert {"gateway.core.sip.transaction", "gateway.core.sdp.model"} <= modules
    assert sum(module == "gateway.core.sip.transaction" for module, *_ in ALIASES) >= 40


def test_the_session_45_aliases_are_found() -> None:
    """The dialogs' states, the call legs' sides and the relay's directions (session 45)."""
    found = {(module, name) for module, name, *_ in ALIASES}
    assert {
        ("gateway.core.sip.dialog", "_D_TERMINATED"),
        ("gateway.core.calls.leg", "_S_B"),
        ("gateway.core.calls.base", "_S_A"),
        ("gateway.core.calls.call", "_S_B"),
        ("gateway.core.media.relay", "_A_TO_B"),
        ("gateway.core.sdp.offer_answer", "_INACTIVE"),
    } <= found


@pytest.mark.parametrize(
    ("module", "name", "enum_name", "member"), ALIASES, ids=[f"{m}.{n}" for m, n, *_ in ALIASES]
)
def test_each_alias_is_the_member_its_name_says(
    module: str, name: str, enum_name: str, member: str
) -> None:
    loaded = importlib.import_module(module)
    value = getattr(loaded, name)
    if not isinstance(value, enum.Enum):
        return  # a constant of another kind (`_E_BIT = 0x80000000`), not an enum's member
    spelled = _ALIAS.fullmatch(name)
    assert spelled is not None
    initial, said = spelled["initial"], spelled["member"]
    cls = type(value)
    if initial is not None and initial != cls.__name__[0]:
        said = name[1:]  # no initial of this enum's (`_S_GIVEN_UP = Input.GIVEN_UP` fails)
    assert said == member, f"{name} = {enum_name}.{member}: the name says {said}"
    assert value is cls[said], f"{name} is {value!r}, not {cls.__name__}.{said}"
    assert value is getattr(getattr(loaded, enum_name), member)
