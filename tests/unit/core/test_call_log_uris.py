"""No log line of the core or of the bundled plugins shows a URI whole: a target's URI (a
registered Contact, a route), a request's, an address-of-record or a URL (a CRL's, an OCSP
responder's) may carry a password (RFC 3261 §19.1.1 allows one in a SIP URI, and deprecates
it; RFC 3986 §3.2.1 in a URL), so each is passed through gateway.core.sip.uri.redact_password
first.

A source scan, not a proof: it finds a log call (``log.info(...)``, ``logger.warning(...)``,
``log_exception(log, ...)``) given, outside ``redact_password(...)``, a value named like a URI
(``x.uri``, ``contact``, ``request_uri``, ``target``, ``refer_to``, a Record-Route...: any
name of :data:`URI_NAMES`, but not a field of one, ``target.trunk``) or a header of
:data:`URI_HEADERS` read from a message (``request.headers.get("Contact")``)."""

from __future__ import annotations

import ast
from pathlib import Path

import gateway.core
import gateway.plugins

LOG_METHODS = {"debug", "info", "warning", "error", "exception", "critical", "log"}
LOGGERS = {"log", "logger"}
URI_NAMES = {
    "uri",
    "uris",
    "contact",
    "contacts",
    "request_uri",
    "aor",
    "aors",
    "url",
    "urls",
    "target",
    "remote_target",
    "refer_to",
    "referred_by",
    "record_route",
    "record_routes",
    "route",
    "route_set",
    "service_route",
    "to_uri",
    "from_uri",
}
"""Names of values that are, or show, a SIP URI or a URL (RFC 3261 §19.1.1 userinfo, RFC 3986
§3.2.1): a Request-URI, a Contact or address-of-record, a route's or transfer's target, a
Refer-To, a Record-Route or Route set, a CRL's or OCSP responder's URL. ("path" is not one:
file paths are; a Path header's URIs, RFC 3327, are read with headers.get, below.)"""
# Headers whose values hold URIs (RFC 3261 §20, RFC 3327 Path, RFC 3515 Refer-To, RFC 3892
# Referred-By, RFC 3325 P-Asserted-Identity, RFC 7044 History-Info, RFC 5806 Diversion).
URI_HEADERS = {
    "contact",
    "m",
    "from",
    "f",
    "to",
    "t",
    "refer-to",
    "r",
    "referred-by",
    "b",
    "record-route",
    "route",
    "path",
    "service-route",
    "p-asserted-identity",
    "p-preferred-identity",
    "remote-party-id",
    "history-info",
    "diversion",
}


def _log_arguments(node: ast.Call) -> list[ast.expr]:
    """The arguments a log call formats into its message (none if ``node`` is no log call)."""
    func = node.func
    if (
        isinstance(func, ast.Attribute)
        and func.attr in LOG_METHODS
        and isinstance(func.value, ast.Name)
        and func.value.id in LOGGERS
    ):
        return node.args[2:] if func.attr == "log" else node.args[1:]
    if isinstance(func, ast.Name) and func.id == "log_exception":
        return node.args[2:]
    return []


def _uri_named(node: ast.AST) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr in URI_NAMES) or (
        isinstance(node, ast.Name) and node.id in URI_NAMES
    )


# Functions that pass what they show through redact_password: itself, and the stir_shaken
# plugin's shown_url (fetch.py: redacted, then escaped as peer text; test_sti_certificates.py
# checks that it redacts).
REDACTING = {"redact_password", "shown_url"}


def _bare_uris(argument: ast.AST) -> list[int]:
    """Lines where ``argument`` uses a URI-named value outside redact_password(...) (a
    comparison, as in ``"" if url is None else ...``, shows nothing)."""
    if isinstance(argument, ast.Compare):
        return []
    if (
        isinstance(argument, ast.Call)
        and isinstance(argument.func, ast.Name)
        and argument.func.id in REDACTING
    ):
        return []
    if (isinstance(argument, ast.Attribute) and argument.attr in URI_NAMES) or (
        isinstance(argument, ast.Name) and argument.id in URI_NAMES
    ):
        return [argument.lineno]
    if isinstance(argument, ast.Attribute) and _uri_named(argument.value):
        return []  # a field of a URI-named value (target.trunk, failed.target.trunk)
    if (
        isinstance(argument, ast.Call)
        and isinstance(argument.func, ast.Attribute)
        and _uri_named(argument.func.value)
    ):
        return [argument.lineno]  # a URI-named value's method: a URI or its text
    if (
        isinstance(argument, ast.Call)
        and isinstance(argument.func, ast.Attribute)
        and argument.func.attr in ("get", "get_all")
        and (
            (
                isinstance(argument.func.value, ast.Attribute)
                and argument.func.value.attr == "headers"
            )
            or (isinstance(argument.func.value, ast.Name) and argument.func.value.id == "headers")
        )
        and argument.args
        and isinstance(argument.args[0], ast.Constant)
        and isinstance(argument.args[0].value, str)
        and argument.args[0].value.lower() in URI_HEADERS
    ):
        return [argument.lineno]
    return [line for child in ast.iter_child_nodes(argument) for line in _bare_uris(child)]


def unredacted(source: str, filename: str = "<source>") -> list[int]:
    """Lines of the log calls in ``source`` that format a URI unredacted."""
    return [
        line
        for node in ast.walk(ast.parse(source, filename))
        if isinstance(node, ast.Call)
        for argument in _log_arguments(node)
        for line in _bare_uris(argument)
    ]


def test_the_scan_finds_what_it_is_for() -> None:
    assert unredacted('log.info("to %s", target.uri)') == [1]
    assert unredacted('log.warning("at %s", contact)') == [1]
    assert unredacted('logger.debug("%s", request.request_uri)') == [1]
    assert unredacted('log_exception(log, "from %s", binding.aor)') == [1]
    assert unredacted('log.info("%s", "" if url is None else f" of {url}")') == [1]
    assert unredacted('log.info("to %s", redact_password(str(target.uri)))') == []
    assert unredacted('log.info("fetch of %s", shown_url(url))') == []
    assert unredacted('log.info("%s", "" if url is None else "x")') == []
    assert unredacted('log.info("to %s", transfer.target)') == [1]
    assert unredacted('log.info("to %s", refer_to)') == [1]
    assert unredacted('log.info("via %s", dialog.route_set)') == [1]
    assert unredacted('log.info("%s", request.headers.get("Contact"))') == [1]
    assert unredacted('log.info("%s", request.headers.get_all("Record-Route"))') == [1]
    assert unredacted('log.info("%s", str(target.uri.with_param("lr", None)))') == [1]
    assert unredacted('log.info("%s", redact_password(request.headers.get("Path") or ""))') == []
    assert unredacted('log.info("trunk %s", target.trunk)') == []
    assert unredacted('log.info("trunk %s", failed.target.trunk)') == []
    assert unredacted('log.info("to %s", entry.get("to", "-"))') == []
    assert unredacted('log.info("%s", request.headers.get("Subscription-State"))') == []


def test_no_log_line_shows_a_uri_unredacted() -> None:
    found = {
        f"{path.relative_to(Path(gateway.core.__file__).parent.parent)}:{line}"
        for package in (gateway.core, gateway.plugins)
        for path in sorted(Path(package.__file__).parent.rglob("*.py"))
        for line in unredacted(path.read_text(), str(path))
    }
    assert found == set(), "pass these URIs through redact_password"
