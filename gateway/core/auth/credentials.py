"""Authorization / Proxy-Authorization header values: parsing untrusted credentials.

Grammar (RFC 3261 §25.1, RFC 7616 §3.4, RFC 7235 §2.1)::

    credentials    = "Digest" LWS digest-response *(COMMA digest-response)
    digest-response = token EQUAL ( token / quoted-string )

Parsing is lenient where real phones are sloppy (any amount of whitespace around ``=`` and ``,``,
empty list elements, quoted values where the RFC wants tokens such as ``qop="auth"``) and strict
where a lax reading could be abused: bounded length and parameter count, no duplicate parameters,
no unterminated quoted strings, no control characters. The result is a value; checking it against a
challenge is :mod:`gateway.core.auth.digest`'s job.
"""

from __future__ import annotations

import attrs

from gateway.core.sip.errors import RemoteSipError

MAX_CREDENTIALS_LENGTH = 4096
"""Default bound on one credentials header value, in characters."""

MAX_CREDENTIALS_PARAMS = 32
"""Default bound on the number of auth-params in one credentials value."""

_WS = " \t\r\n"
# RFC 3261 §25.1 token characters.
_TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~")


class MalformedCredentials(RemoteSipError):
    """The peer's credentials do not follow the grammar. The message never echoes the value."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"malformed credentials: {reason}", status=400)


@attrs.frozen
class DigestCredentials:
    """One ``Digest`` credentials value (RFC 7616 §3.4).

    ``response`` is kept out of the repr: with the nonce and cnonce it allows an offline guess of
    the password. ``nc`` is the nonce-count exactly as sent (it enters the hash as text) and
    ``nc_value`` its number; both are None when the client used no qop (RFC 2069 style).
    ``params`` holds every parameter as received (lower-case names), for diagnostics of the
    non-secret ones and for extensions.
    """

    username: str
    realm: str
    nonce: str
    uri: str
    response: str = attrs.field(repr=False)
    algorithm: str | None = None
    qop: str | None = None
    cnonce: str | None = None
    nc: str | None = None
    nc_value: int | None = None
    opaque: str | None = None
    userhash: bool = False
    params: tuple[tuple[str, str], ...] = attrs.field(default=(), repr=False)


def parse_credentials_untrusted(
    value: str,
    *,
    max_length: int = MAX_CREDENTIALS_LENGTH,
    max_params: int = MAX_CREDENTIALS_PARAMS,
) -> DigestCredentials | None:
    """Parse one Authorization or Proxy-Authorization header value from the network.

    Returns None when the scheme is not ``Digest`` (the caller ignores such credentials and
    challenges, RFC 4475 §3.3.7). Raises :class:`MalformedCredentials` when a Digest value breaks
    the grammar, exceeds a limit, repeats a parameter, or lacks one of username, realm, nonce, uri
    and response (or cnonce/nc when qop is present, RFC 7616 §3.4).
    """
    if len(value) > max_length:
        raise MalformedCredentials(f"longer than {max_length} characters")
    text = value.strip(_WS)
    scheme_end = 0
    while scheme_end < len(text) and text[scheme_end] in _TOKEN_CHARS:
        scheme_end += 1
    scheme = text[:scheme_end]
    if not scheme:
        raise MalformedCredentials("missing auth scheme")
    if scheme.lower() != "digest":
        return None
    if scheme_end < len(text) and text[scheme_end] not in _WS:
        raise MalformedCredentials("no whitespace after the auth scheme")
    params = _parse_params(text, scheme_end, max_params)
    return _build(params)


def _parse_params(text: str, pos: int, max_params: int) -> dict[str, str]:
    params: dict[str, str] = {}
    end = len(text)
    while True:
        # Skip whitespace and empty list elements (RFC 7230 §7 #rule tolerance).
        while pos < end and (text[pos] in _WS or text[pos] == ","):
            pos += 1
        if pos >= end:
            return params
        start = pos
        while pos < end and text[pos] in _TOKEN_CHARS:
            pos += 1
        name = text[start:pos].lower()
        if not name:
            raise MalformedCredentials("expected a parameter name")
        pos = _skip_ws(text, pos)
        if pos >= end or text[pos] != "=":
            raise MalformedCredentials(f"parameter {name!r} has no value")
        pos = _skip_ws(text, pos + 1)
        if pos < end and text[pos] == '"':
            param_value, pos = _quoted_string(text, pos)
        else:
            # Lenient: an unquoted value is any run of visible characters up to the next
            # separator, so ``uri=sip:host`` or an unquoted base64 nonce still parse.
            start = pos
            while pos < end and _is_bare(text[pos]):
                pos += 1
            param_value = text[start:pos]
            if not param_value:
                raise MalformedCredentials(f"parameter {name!r} has an empty or invalid value")
        if name in params:
            # RFC 7235 §2.1: each parameter name occurs at most once per credentials.
            raise MalformedCredentials(f"parameter {name!r} repeated")
        if len(params) >= max_params:
            raise MalformedCredentials(f"more than {max_params} parameters")
        params[name] = param_value
        pos = _skip_ws(text, pos)
        if pos < end and text[pos] != ",":
            raise MalformedCredentials(f"expected ',' after parameter {name!r}")


def _is_bare(char: str) -> bool:
    """A character of an unquoted value: visible, not a separator, not a quote."""
    return ord(char) > 0x20 and char not in ',"\x7f'


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _WS:
        pos += 1
    return pos


def _quoted_string(text: str, pos: int) -> tuple[str, int]:
    """Unescape the quoted-string starting at ``text[pos] == '"'``; returns (value, next pos)."""
    out: list[str] = []
    pos += 1
    end = len(text)
    while pos < end:
        char = text[pos]
        if char == '"':
            return "".join(out), pos + 1
        if char == "\\":
            # RFC 3261 §25.1 quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F)
            if pos + 1 >= end or text[pos + 1] in "\r\n":
                raise MalformedCredentials("bad escape in a quoted string")
            out.append(text[pos + 1])
            pos += 2
            continue
        if ord(char) < 0x20 and char not in "\t":
            raise MalformedCredentials("control character in a quoted string")
        out.append(char)
        pos += 1
    raise MalformedCredentials("unterminated quoted string")


def _build(params: dict[str, str]) -> DigestCredentials:
    missing = [n for n in ("username", "realm", "nonce", "uri", "response") if n not in params]
    qop = params.get("qop")
    nc = params.get("nc")
    nc_value: int | None = None
    if qop is not None:
        missing += [n for n in ("cnonce", "nc") if n not in params]
    if missing:
        raise MalformedCredentials("missing " + ", ".join(missing))
    if nc is not None:
        # RFC 7616 §3.4: nc-value = 8LHEX. Accept 1-8 hex digits of either case.
        if not 1 <= len(nc) <= 8 or any(c not in "0123456789abcdefABCDEF" for c in nc):
            raise MalformedCredentials("nc is not 1-8 hex digits")
        nc_value = int(nc, 16)
    userhash = params.get("userhash", "false").lower()
    if userhash not in ("true", "false"):
        raise MalformedCredentials("userhash is neither true nor false")
    return DigestCredentials(
        username=params["username"],
        realm=params["realm"],
        nonce=params["nonce"],
        uri=params["uri"],
        response=params["response"],
        algorithm=params.get("algorithm"),
        qop=qop,
        cnonce=params.get("cnonce"),
        nc=nc,
        nc_value=nc_value,
        opaque=params.get("opaque"),
        userhash=userhash == "true",
        params=tuple(params.items()),
    )


def quote(value: str) -> str:
    """``value`` as a quoted-string (RFC 3261 §25.1), escaping ``"`` and ``\\``."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
