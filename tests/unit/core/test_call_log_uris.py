"""The call layer's log lines never show a URI whole: a target's URI (a registered Contact, a
route) or a request's may carry a password (RFC 3261 §19.1.1 allows one, and deprecates it),
so each is passed through gateway.core.sip.uri.redact_password first."""

from __future__ import annotations

import ast
from pathlib import Path

import gateway.core.calls

LOG_METHODS = {"debug", "info", "warning", "error", "exception", "critical"}


def _bare_uris(tree: ast.AST) -> list[int]:
    """Lines of log calls with a ``something.uri`` argument not inside redact_password(...)."""
    lines = []
    for node in ast.walk(tree):
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in LOG_METHODS
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "log"
        ):
            continue
        for argument in node.args[1:]:
            if isinstance(argument, ast.Attribute) and argument.attr == "uri":
                lines.append(argument.lineno)
    return lines


def test_no_call_log_line_shows_a_uri_unredacted() -> None:
    package = Path(gateway.core.calls.__file__).parent
    found = {
        f"{path.name}:{line}"
        for path in sorted(package.glob("*.py"))
        for line in _bare_uris(ast.parse(path.read_text(), str(path)))
    }
    assert found == set(), "pass these URIs through redact_password"
