"""SIP header-value grammar (RFC 3261 §25.1, RFC 3966, RFC 5118): URIs, Via, name-addr, CSeq.

Every function here takes text that came from the network and either returns a frozen value from
:mod:`gateway.core.sip.uri` / :mod:`gateway.core.sip.headers` or raises :class:`SipParseError`
(status 400) with a reason phrase that names the defect. Reasons never quote the peer's bytes: they
end up in the status line of a response we send.

Values are kept as written on the wire: URI components stay %-escaped, parameter values keep their
quotes, a quoted display name keeps its quotes and backslashes. Serializing a parsed value therefore
reproduces an equivalent wire form.

Linear white space: header values handed to this module have normally been unfolded by the parser
(RFC 3261 §7.3.1); :func:`unfold` is applied again on entry so that hand-built values with folding
are accepted too. After unfolding, LWS is SP or HTAB.

Memoized parsing: a message's From, To, Via and CSeq values are parsed by the parser's checks,
then again by every layer that reads them (transactions, dialogs, the B2BUA). The values are
frozen, so each ``parse_*_untrusted`` below keeps its most recent results in a bounded LRU cache
keyed by the text (:data:`PARSE_CACHE_ENTRIES` values each, only for texts up to
:data:`PARSE_CACHE_MAX_TEXT` characters, so a peer sending long values cannot make it hold more
than a few MB). Failures are not cached: a bad value raises the same error every time.

This module does not depend on :mod:`gateway.core.sip.message` (which imports it).
"""

from __future__ import annotations

import functools
import ipaddress
import re
import string
from collections.abc import Callable
from typing import NoReturn, TypeVar, cast

from gateway.core.sip.errors import SipParseError
from gateway.core.sip.headers import CSeq, NameAddr, Via
from gateway.core.sip.uri import AbsoluteUri, Params, SipUri, TelUri, Uri

__all__ = [
    "TOKEN_CHARS",
    "SipParseError",
    "is_call_id",
    "is_token",
    "is_valid_host",
    "parse_cseq_untrusted",
    "parse_name_addr_untrusted",
    "parse_uint_untrusted",
    "parse_uri_untrusted",
    "parse_via_untrusted",
    "quote",
    "split_list_untrusted",
    "unfold",
    "unquote",
]

PARSE_CACHE_ENTRIES = 1024
"""Results each memoized parser keeps: the values a transaction reads again arrive within
milliseconds, and every entry is an object the cyclic garbage collector walks, so no more."""
PARSE_CACHE_MAX_TEXT = 512
"""Longer texts are parsed every time and never held by a cache."""

_T = TypeVar("_T")


# Each memoized parser's LRU cache by the parser's name (the cached forms below).
_LRU_CACHES: dict[str, Callable[[str], object]] = {}


def _memoized(
    parse: Callable[[str], _T], written: dict[str, _T] | None = None
) -> Callable[[str], _T]:
    """``parse`` with a bounded LRU cache for short texts (see the module docstring); with
    ``written``, the values this gateway wrote itself are looked up there first (via_text)."""
    cached = functools.lru_cache(maxsize=PARSE_CACHE_ENTRIES)(parse)
    _LRU_CACHES[parse.__name__] = cached

    def parse_memoized(text: str) -> _T:
        if len(text) > PARSE_CACHE_MAX_TEXT:
            return parse(text)
        return cached(text)

    if written is not None:

        def parse_memoized_or_written(text: str) -> _T:
            value = written.get(text)
            if value is not None:
                return value
            if len(text) > PARSE_CACHE_MAX_TEXT:
                return parse(text)
            return cached(text)

        parse_memoized = parse_memoized_or_written

    parse_memoized.__doc__ = parse.__doc__
    parse_memoized.__name__ = parse.__name__
    return parse_memoized


# RFC 3261 §25.1 character classes.
_ALPHA = frozenset(string.ascii_letters)
_DIGIT = frozenset(string.digits)
_HEXDIG = frozenset(string.hexdigits)
_ALPHANUM = _ALPHA | _DIGIT
_MARK = frozenset("-_.!~*'()")
_UNRESERVED = _ALPHANUM | _MARK
_RESERVED = frozenset(";/?:@&=+$,")
TOKEN_CHARS: frozenset[str] = _ALPHANUM | frozenset("-.!%*_+`'~")
"""RFC 3261 §25.1 ``token`` characters (also Method, header names, tags, branches)."""
_WORD_CHARS = TOKEN_CHARS | frozenset('()<>:\\"/[]?{}')
_USER_CHARS = _UNRESERVED | frozenset("&=+$,;?/")
_PASSWORD_CHARS = _UNRESERVED | frozenset("&=+$,")
_PARAM_CHARS = _UNRESERVED | frozenset("[]/:&+$")
_HNV_CHARS = _UNRESERVED | frozenset("[]/?:+$")
_HOST_CHARS = _ALPHANUM | frozenset("-.")
_SCHEME_CHARS = _ALPHANUM | frozenset("+-.")
# absoluteURI (RFC 2396 uric) plus "[" "]" for IPv6 literals (RFC 3986) and "#" for fragments.
_URIC = _RESERVED | _UNRESERVED | frozenset("[]#")
# gen-value = token / host / quoted-string: a host adds ":" "[" "]" for IPv6 references.
_GEN_VALUE_CHARS = TOKEN_CHARS | frozenset(":[]")
_WSP = frozenset(" \t")
# RFC 3966 §3: visual separators and the digits of local numbers.
_VISUAL_SEPARATORS = frozenset("-.()")
_TEL_PNAME_CHARS = _ALPHANUM | frozenset("-")

_MAX_CSEQ = 2**31 - 1  # RFC 3261 §8.1.1.5: the sequence number MUST be less than 2**31
_FOLD = re.compile(r"\r?\n(?=[ \t])")
_SIP_SCHEMES = frozenset({"sip", "sips"})


def unfold(text: str) -> str:
    """Remove header folding (RFC 3261 §7.3.1): CRLF followed by SP/HTAB becomes that SP/HTAB."""
    if "\n" not in text:
        return text
    return _FOLD.sub("", text)


_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")


def is_token(text: str) -> bool:
    """True when ``text`` is a non-empty RFC 3261 ``token``."""
    return _TOKEN.fullmatch(text) is not None


def quote(text: str) -> str:
    """Write ``text`` as a quoted-string (RFC 3261 §25.1), escaping ``"`` and ``\\``."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def unquote(text: str) -> str:
    """Content of a quoted-string with its quoted-pairs resolved; other text is returned as is.

    Apply it to values that came out of this module's parsers (display names, parameter values).
    """
    if len(text) < 2 or not (text.startswith('"') and text.endswith('"')):
        return text
    out: list[str] = []
    body = text[1:-1]
    i = 0
    while i < len(body):
        if body[i] == "\\" and i + 1 < len(body):
            out.append(body[i + 1])
            i += 2
        else:
            out.append(body[i])
            i += 1
    return "".join(out)


# A character class as a compiled run: the cursor's loops ran per character in Python, over
# every new branch, tag and Call-ID of every message. Keyed by the (hashable) character sets of
# this module, so it holds a dozen entries.
_RUNS: dict[frozenset[str], re.Pattern[str]] = {}
_WSP_RUN = re.compile("[ \t]*")


def _run_of(allowed: frozenset[str]) -> re.Pattern[str]:
    pattern = _RUNS.get(allowed)
    if pattern is None:
        pattern = re.compile("[" + "".join(re.escape(c) for c in sorted(allowed)) + "]*")
        _RUNS[allowed] = pattern
    return pattern


# 1*DIGIT with the LWS around it (after unfolding); DIGIT is ASCII only, as in RFC 5234.
_UINT = re.compile("[ \t]*([0-9]+)[ \t]*")
_WORD = "[" + "".join(re.escape(c) for c in sorted(_WORD_CHARS)) + "]+"
_CALL_ID = re.compile(f"{_WORD}(?:@{_WORD})?")
# What may follow a parameter: the next parameter, header value or URI header, white space, the
# end (peek() gives ""). A value that is empty before anything else starts with a bad character.
_VALUE_ENDS = frozenset({"", ";", ",", "?", " ", "\t", "\r", "\n"})


class _Cursor:
    """A position in a header value, with the small steps the §25 grammar needs."""

    def __init__(self, text: str, what: str) -> None:
        self.text = text
        self.pos = 0
        self.what = what

    def fail(self, detail: str) -> NoReturn:
        raise SipParseError(f"bad {self.what}: {detail}")

    def fail_value(self, what: str) -> NoReturn:
        """A parameter's value is empty where one was expected: say whether it was left out or
        begins with a character the grammar does not allow (``rport=²``), which is what the
        sender needs to know to fix it."""
        if self.peek() in _VALUE_ENDS:
            self.fail(f"{what} with an empty value")
        self.fail(f"invalid character in {what} value")

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def advance(self) -> None:
        self.pos += 1

    def skip_ws(self) -> bool:
        """Skip SP/HTAB; True when at least one was skipped."""
        start = self.pos
        if start >= len(self.text) or self.text[start] not in " \t":
            return False  # the usual case, without a regex call
        match = _WSP_RUN.match(self.text, start)
        assert match is not None  # a ``*`` run always matches
        self.pos = match.end()
        return self.pos > start

    def expect(self, char: str, detail: str) -> None:
        if self.peek() != char:
            self.fail(detail)
        self.pos += 1

    def take(self, allowed: frozenset[str]) -> str:
        """The longest run of ``allowed`` characters at the cursor (may be empty)."""
        start = self.pos
        match = _run_of(allowed).match(self.text, start)
        assert match is not None  # a ``*`` run always matches
        self.pos = match.end()
        return self.text[start : self.pos]

    def take_escaped(self, allowed: frozenset[str]) -> str:
        """Characters from ``allowed`` and ``%`` HEX HEX escapes (RFC 3261 §25.1 ``escaped``)."""
        start = self.pos
        text = self.text
        while self.pos < len(text):
            char = text[self.pos]
            if char == "%":
                if (
                    self.pos + 2 < len(text)
                    and text[self.pos + 1] in _HEXDIG
                    and text[self.pos + 2] in _HEXDIG
                ):
                    self.pos += 3
                    continue
                self.fail("'%' not followed by two hex digits")
            if char not in allowed:
                break
            self.pos += 1
        return text[start : self.pos]

    def quoted_string(self) -> str:
        """A quoted-string starting at the cursor, returned with its quotes and backslashes."""
        start = self.pos
        self.expect('"', "expected a quoted string")
        text = self.text
        while self.pos < len(text):
            char = text[self.pos]
            if char == '"':
                self.pos += 1
                return text[start : self.pos]
            if char == "\\":
                # quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F)
                if self.pos + 1 >= len(text):
                    break
                escaped = text[self.pos + 1]
                if escaped in "\r\n" or ord(escaped) > 0x7F:
                    self.fail("invalid quoted-pair")
                self.pos += 2
                continue
            # qdtext = LWS / %x21 / %x23-5B / %x5D-7E / UTF8-NONASCII
            if (ord(char) < 0x20 and char != "\t") or char == "\x7f":
                self.fail("control character in quoted string")
            self.pos += 1
        self.fail("unterminated quoted string")

    def params(self) -> Params:
        """``*( SEMI generic-param )`` with generic-param = token [ EQUAL gen-value ]."""
        params: list[tuple[str, str | None]] = []
        while True:
            mark = self.pos
            self.skip_ws()
            if self.peek() != ";":
                self.pos = mark
                return tuple(params)
            self.advance()
            self.skip_ws()
            name = self.take(TOKEN_CHARS)
            if not name:
                self.fail("empty or invalid parameter name")
            mark = self.pos
            self.skip_ws()
            value: str | None = None
            if self.peek() == "=":
                self.advance()
                self.skip_ws()
                value = self.quoted_string() if self.peek() == '"' else self.take(_GEN_VALUE_CHARS)
                if not value:
                    self.fail_value("parameter")
            else:
                self.pos = mark
            params.append((name, value))

    def end(self) -> None:
        self.skip_ws()
        if not self.at_end():
            self.fail("unexpected characters")


# --- hosts -----------------------------------------------------------------------------------


_IPV4 = re.compile(r"([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})")


def _is_ipv4(text: str) -> bool:
    match = _IPV4.fullmatch(text)
    return match is not None and max(map(int, match.groups())) <= 255


def _is_ipv6(text: str) -> bool:
    # RFC 5118 §4: IPv6address per RFC 3261 §25.1; no zone identifiers.
    if not text or "%" in text or any(c not in _HEXDIG and c not in ":." for c in text):
        return False
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _is_hostname(text: str) -> bool:
    # hostname = *( domainlabel "." ) toplabel [ "." ]; toplabel starts with ALPHA.
    labels = text[:-1].split(".") if text.endswith(".") else text.split(".")
    for label in labels:
        if not label or label[0] == "-" or label[-1] == "-":
            return False
        if any(c not in _HOST_CHARS or c == "." for c in label):
            return False
    return labels[-1][0] in _ALPHA


@functools.lru_cache(maxsize=PARSE_CACHE_ENTRIES)
def is_valid_host(text: str) -> bool:
    """True for a hostname, an IPv4 address or an IPv6 reference in brackets (RFC 3261 §25.1)."""
    if text.startswith("["):
        return text.endswith("]") and _is_ipv6(text[1:-1])
    if not text:
        return False
    if all(c in _DIGIT or c == "." for c in text):
        return _is_ipv4(text)
    return _is_hostname(text)


def _host(cur: _Cursor) -> str:
    if cur.peek() == "[":
        end = cur.text.find("]", cur.pos)
        if end < 0:
            cur.fail("unterminated IPv6 reference")
        host = cur.text[cur.pos : end + 1]
        cur.pos = end + 1
    else:
        host = cur.take(_HOST_CHARS)
    if not is_valid_host(host):
        cur.fail("invalid host")
    return host


def _port(cur: _Cursor) -> int:
    digits = cur.take(_DIGIT)
    if not digits or len(digits) > 5 or int(digits) > 65535:
        cur.fail("invalid port")
    return int(digits)


# --- URIs ------------------------------------------------------------------------------------


_URI_SPACE = re.compile("[ \t\r\n]")


@_memoized
def parse_uri_untrusted(text: str) -> Uri:
    """Parse a SIP/SIPS (RFC 3261 §19.1), TEL (RFC 3966) or other absolute URI.

    Components are kept escaped as on the wire. IPv6 hosts keep their brackets (RFC 5118).
    Any scheme other than sip, sips and tel gives an :class:`AbsoluteUri`.
    """
    cur = _Cursor(text, "URI")
    if _URI_SPACE.search(text) is not None:
        cur.fail("whitespace inside a URI")
    colon = text.find(":")
    scheme = text[:colon] if colon > 0 else ""
    if not scheme or scheme[0] not in _ALPHA or any(c not in _SCHEME_CHARS for c in scheme):
        cur.fail("missing or invalid scheme")
    lower = scheme.lower()
    if lower in _SIP_SCHEMES:
        return _sip_uri(scheme, text, colon + 1)
    if lower == "tel":
        return _tel_uri(text, colon + 1)
    cur.pos = colon + 1
    opaque = cur.take_escaped(_URIC)
    if not opaque or not cur.at_end():
        cur.fail("invalid characters")
    return AbsoluteUri(scheme=scheme, opaque=opaque)


def _sip_uri(scheme: str, text: str, start: int) -> SipUri:
    cur = _Cursor(text, "SIP URI")
    cur.pos = start
    user: str | None = None
    password: str | None = None
    # userinfo cannot contain an unescaped "@", so the first "@" ends it (RFC 3261 §19.1.1).
    if "@" in text[start:]:
        user = cur.take_escaped(_USER_CHARS)
        if not user:
            cur.fail("empty user part")
        if cur.peek() == ":":
            cur.advance()
            password = cur.take_escaped(_PASSWORD_CHARS)
        cur.expect("@", "invalid character in user part")
    host = _host(cur)
    port: int | None = None
    if cur.peek() == ":":
        cur.advance()
        port = _port(cur)
    params: list[tuple[str, str | None]] = []
    while cur.peek() == ";":
        cur.advance()
        name = cur.take_escaped(_PARAM_CHARS)
        if not name:
            cur.fail("empty URI parameter")
        value: str | None = None
        if cur.peek() == "=":
            cur.advance()
            value = cur.take_escaped(_PARAM_CHARS)
            if not value:
                cur.fail_value("URI parameter")
        params.append((name, value))
    headers: list[tuple[str, str]] = []
    if cur.peek() == "?":
        while True:
            cur.advance()
            hname = cur.take_escaped(_HNV_CHARS)
            if not hname:
                cur.fail("empty URI header name")
            cur.expect("=", "URI header without '='")
            headers.append((hname, cur.take_escaped(_HNV_CHARS)))
            if cur.peek() != "&":
                break
    if not cur.at_end():
        cur.fail("invalid characters")
    return SipUri(
        scheme=scheme,
        host=host,
        user=user,
        password=password,
        port=port,
        params=tuple(params),
        headers=tuple(headers),
    )


def _tel_uri(text: str, start: int) -> TelUri:
    # RFC 3966 §3. A local number should carry phone-context (§5.1.5); peers often omit it, and
    # routing treats such numbers as dial strings anyway, so its absence is accepted.
    cur = _Cursor(text, "tel URI")
    cur.pos = start
    if cur.peek() == "+":
        cur.advance()
        digits = cur.take(_DIGIT | _VISUAL_SEPARATORS)
        if not any(c in _DIGIT for c in digits):
            cur.fail("global number without digits")
    else:
        digits = cur.take(_HEXDIG | _VISUAL_SEPARATORS | frozenset("*#"))
        if not any(c in _HEXDIG or c in "*#" for c in digits):
            cur.fail("missing number")
    number = text[start : cur.pos]
    params: list[tuple[str, str | None]] = []
    while cur.peek() == ";":
        cur.advance()
        name = cur.take(_TEL_PNAME_CHARS)
        if not name:
            cur.fail("empty parameter")
        value: str | None = None
        if cur.peek() == "=":
            cur.advance()
            value = cur.take_escaped(_PARAM_CHARS)
            if not value:
                cur.fail_value("parameter")
        params.append((name, value))
    if not cur.at_end():
        cur.fail("invalid characters")
    return TelUri(number=number, params=tuple(params))


# --- Via -------------------------------------------------------------------------------------


# The form nearly every Via takes on the wire, as one regular expression: "SIP/2.0/UDP", one
# space, a host without brackets or an IPv6 reference, an optional port, then ";name" or
# ";name=token" parameters, with no other white space. A value in this form is parsed by the
# expression and the same host, port and parameter checks as the general parser below (a
# property test holds the two to the same result); any other form, and every error, goes through
# the general parser, which names the defect. Every new branch makes a cache miss, so this runs
# for about half the messages of a call.
_TOKEN_RUN = _TOKEN.pattern
_PLAIN_PARAMS = rf"(?:;{_TOKEN_RUN}(?:={_TOKEN_RUN})?)*"
_PLAIN_VIA = re.compile(
    rf"SIP/2\.0/({_TOKEN_RUN}) ([A-Za-z0-9\-.]+|\[[0-9A-Fa-f:.]+\])(?::([0-9]{{1,5}}))?"
    rf"({_PLAIN_PARAMS})"
)


def _plain_params(text: str) -> Params:
    """``;a=1;b`` (already matched by ``_PLAIN_PARAMS``) as ``(("a", "1"), ("b", None))``."""
    params: list[tuple[str, str | None]] = []
    for param in text.split(";")[1:]:
        name, equals, value = param.partition("=")
        params.append((name, value if equals else None))
    return tuple(params)


def _plain_via(text: str) -> Via | None:
    """The Via in ``text`` when it has the plain form (see ``_PLAIN_VIA``) and is valid, else
    None (the general parser decides)."""
    match = _PLAIN_VIA.fullmatch(text)
    if match is None:
        return None
    transport, host, port_text, params_text = match.groups()
    if not is_valid_host(host):
        return None
    port = None if port_text is None else int(port_text)
    if port is not None and port > 65535:
        return None
    params = _plain_params(params_text)
    for name, value in params:
        if _via_param_problem(name.lower(), value):
            return None
    return Via(transport=transport, host=host, port=port, params=params, protocol="SIP/2.0")


# Via texts this gateway wrote from a Via it holds (via_text) -> that Via. Each carries a fresh
# branch (our own Via on a request we send) or a new stamp (a received request's top Via with
# received and rport), so the memoized parser missed on every one and parsed again what we had
# just written: five Via parses per call. Bounded like the caches, and only short texts.
_WRITTEN_VIAS: dict[str, Via] = {}


def via_text(via: Via) -> str:
    """``str(via)``, for a Via this gateway puts in a message; parse_via_untrusted of that text
    returns ``via`` itself from then on (the text is written from it: parsing gives an equal
    value, which tests/unit/sip/test_sip_grammar.py checks)."""
    text = str(via)
    if len(text) <= PARSE_CACHE_MAX_TEXT:
        if len(_WRITTEN_VIAS) >= PARSE_CACHE_ENTRIES:
            _WRITTEN_VIAS.clear()
        _WRITTEN_VIAS[text] = via
    return text


@functools.partial(_memoized, written=_WRITTEN_VIAS)
def parse_via_untrusted(text: str) -> Via:
    """Parse one via-parm (RFC 3261 §20.42, §25.1; RFC 3581 rport).

    Whitespace is allowed around the ``/`` of sent-protocol and around ``:``, ``;`` and ``=``
    (RFC 3261 §25.1 SLASH, COLON, SEMI, EQUAL). ``protocol`` is normalized to ``name/version``.
    """
    plain = _plain_via(text)
    return plain if plain is not None else _general_via(text)


def _general_via(text: str) -> Via:
    cur = _Cursor(unfold(text), "Via")
    cur.skip_ws()
    name = cur.take(TOKEN_CHARS)
    if not name:
        cur.fail("missing protocol name")
    cur.skip_ws()
    cur.expect("/", "expected '/' after protocol name")
    cur.skip_ws()
    version = cur.take(TOKEN_CHARS)
    if not version:
        cur.fail("missing protocol version")
    cur.skip_ws()
    cur.expect("/", "expected '/' after protocol version")
    cur.skip_ws()
    transport = cur.take(TOKEN_CHARS)
    if not transport:
        cur.fail("missing transport")
    if not cur.skip_ws():
        cur.fail("expected whitespace before sent-by")
    host = _host(cur)
    port: int | None = None
    mark = cur.pos
    cur.skip_ws()
    if cur.peek() == ":":
        cur.advance()
        cur.skip_ws()
        port = _port(cur)
    else:
        cur.pos = mark
    params = cur.params()
    cur.end()
    for pname, value in params:
        problem = _via_param_problem(pname.lower(), value)
        if problem is not None:
            cur.fail(problem)
    return Via(
        transport=transport, host=host, port=port, params=params, protocol=f"{name}/{version}"
    )


def _via_param_problem(name: str, value: str | None) -> str | None:
    """What is wrong with via-param ``name`` (lower case) = ``value``, or None.
    RFC 3261 §25.1 via-params; RFC 3581 §3 rport."""
    if name == "branch" and (value is None or not is_token(value)):
        return "branch must be a token"
    if name == "received" and (
        value is None or not (_is_ipv4(value) or _is_ipv6(value.strip("[]")))
    ):
        return "received must be an IP address"
    if name == "ttl" and (
        value is None or not value.isdigit() or len(value) > 3 or int(value) > 255
    ):
        return "ttl must be 0..255"
    if name == "maddr" and (value is None or not is_valid_host(value)):
        return "maddr must be a host"
    if (
        name == "rport"
        and value is not None
        and (not value.isdigit() or len(value) > 5 or int(value) > 65535)
    ):
        return "rport must be a port number"
    return None


# --- name-addr -------------------------------------------------------------------------------


# The forms From, To, Contact and Route values nearly always take: an optional display name
# (tokens separated by single spaces, or a quoted string without backslashes) and one space, the
# URI in <>, then plain parameters, with no other white space. Held to the general parser's
# result by a property test, like _PLAIN_VIA; any other form, and every error, goes through it.
_PLAIN_NAME_ADDR = re.compile(
    rf'(?:({_TOKEN_RUN}(?: {_TOKEN_RUN})*|"[^"\\\x00-\x08\x0a-\x1f\x7f]*") ?)?'
    rf"<([^>\s]*)>({_PLAIN_PARAMS})"
)


def _plain_name_addr(text: str) -> NameAddr | None:
    match = _PLAIN_NAME_ADDR.fullmatch(text)
    if match is None:
        return None
    display, uri_text, params_text = match.groups()
    try:
        uri = parse_uri_untrusted(uri_text)
    except SipParseError:
        return None
    return NameAddr(uri=uri, display_name=display, params=_plain_params(params_text))


@_memoized
def parse_name_addr_untrusted(text: str) -> NameAddr:
    """Parse ``(name-addr / addr-spec) *(SEMI generic-param)`` (RFC 3261 §20.10, §25.1).

    Used for From, To, Contact, Route, Record-Route, Reply-To, P-Asserted-Identity ... values.
    In the addr-spec form (no ``<>``) every ``;`` parameter belongs to the header, not the URI, and
    the URI may contain neither ``,`` nor ``?`` (RFC 3261 §20.10). The display name is kept as
    written (quotes included). ``*`` (with optional parameters) is the Contact wildcard
    (RFC 3261 §10.2.2); callers reject it where it is not allowed.
    """
    plain = _plain_name_addr(text)
    return plain if plain is not None else _general_name_addr(text)


parse_name_addr_cached = cast("Callable[[str], NameAddr]", _LRU_CACHES["parse_name_addr_untrusted"])
"""The LRU cache behind :func:`parse_name_addr_untrusted`, without its Python wrapper: for a
caller that reads a value many times per message (the From and To accessors of
:mod:`gateway.core.sip.message`) and itself sends texts longer than
:data:`PARSE_CACHE_MAX_TEXT` to :func:`parse_name_addr_untrusted`, never here."""


def _general_name_addr(text: str) -> NameAddr:
    text = unfold(text)
    cur = _Cursor(text, "name-addr")
    cur.skip_ws()
    if cur.peek() == "*":
        mark = cur.pos
        cur.advance()
        after = cur.pos
        cur.skip_ws()
        if cur.at_end() or cur.peek() == ";":
            cur.pos = after
            params = cur.params()
            cur.end()
            return NameAddr(uri=None, params=params, wildcard=True)
        cur.pos = mark
    display: str | None = None
    if cur.peek() == '"':
        display = cur.quoted_string()
        cur.skip_ws()
        if cur.peek() != "<":
            cur.fail("quoted display name not followed by '<'")
    elif cur.peek() != "<":
        # display-name = *(token LWS): tokens, then "<". Otherwise this is an addr-spec.
        start = cur.pos
        end = start
        while True:
            word = cur.take(TOKEN_CHARS)
            if not word:
                break
            end = cur.pos
            cur.skip_ws()
        if cur.peek() == "<" and end > start:
            display = text[start:end]
        else:
            cur.pos = start
    if cur.peek() == "<":
        cur.advance()
        close = text.find(">", cur.pos)
        if close < 0:
            cur.fail("missing '>'")
        uri = _uri_in(cur, text[cur.pos : close])
        cur.pos = close + 1
    else:
        start = cur.pos
        while not cur.at_end() and cur.peek() not in " \t;":
            cur.advance()
        spec = text[start : cur.pos]
        if "<" in text[cur.pos :] or "<" in spec or '"' in spec:
            cur.fail("display name is neither a token list nor a quoted string")
        if "?" in spec or "," in spec:
            # RFC 3261 §20.10: such URIs MUST be enclosed in <>.
            cur.fail("URI with '?' or ',' must be enclosed in '<>'")
        uri = _uri_in(cur, spec)
    params = cur.params()
    cur.end()
    return NameAddr(uri=uri, display_name=display, params=params)


def _uri_in(cur: _Cursor, text: str) -> Uri:
    try:
        return parse_uri_untrusted(text)
    except SipParseError as err:
        cur.fail(err.reason)


# --- scalars ---------------------------------------------------------------------------------


@_memoized
def parse_cseq_untrusted(text: str) -> CSeq:
    """Parse CSeq = 1*DIGIT LWS Method (RFC 3261 §20.16); the number must be below 2**31."""
    cur = _Cursor(unfold(text), "CSeq")
    cur.skip_ws()
    digits = cur.take(_DIGIT)
    if not digits:
        cur.fail("missing sequence number")
    # Leading zeros are 1*DIGIT too, and int() refuses over 4300 digits (CPython's limit on
    # decimal conversion): converted without them, or a CSeq of 5000 zeros was an internal
    # error with a traceback, and no 400, per datagram (fuzz seed 6306).
    significant = digits.lstrip("0") or "0"
    if len(significant) > 10 or int(significant) > _MAX_CSEQ:
        cur.fail("sequence number must be below 2**31")
    if not cur.skip_ws():
        cur.fail("expected whitespace after the sequence number")
    method = cur.take(TOKEN_CHARS)
    if not method:
        cur.fail("missing method")
    cur.end()
    return CSeq(number=int(significant), method=method)


parse_cseq_cached = cast("Callable[[str], CSeq]", _LRU_CACHES["parse_cseq_untrusted"])
"""The LRU cache behind :func:`parse_cseq_untrusted`, as :data:`parse_name_addr_cached` is."""


def parse_uint_untrusted(text: str, name: str, maximum: int) -> int:
    """Parse ``1*DIGIT`` (surrounding LWS allowed) no larger than ``maximum``.

    For Max-Forwards (255), Content-Length, Expires (delta-seconds, 2**32-1) and the like.
    ``name`` is the header or parameter name used in the error reason.
    """
    match = _UINT.fullmatch(unfold(text))
    if match is None:
        raise SipParseError(f"bad {name}: not a decimal number")
    significant = match[1].lstrip("0") or "0"  # as parse_cseq_untrusted: int() of few digits
    if len(significant) > len(str(maximum)) or int(significant) > maximum:
        raise SipParseError(f"bad {name}: larger than {maximum}")
    return int(significant)


def is_call_id(text: str) -> bool:
    """True when ``text`` is ``word ["@" word]`` (RFC 3261 §25.1 callid)."""
    return _CALL_ID.fullmatch(text) is not None


# --- lists -----------------------------------------------------------------------------------


def split_list_untrusted(text: str) -> list[str]:
    """Split a comma-separated header value (RFC 3261 §7.3.1) into stripped elements.

    Commas inside quoted strings and inside ``<...>`` do not split. Blank text gives ``[]``;
    an empty element (``a,,b``) or an unterminated quoted string raises :class:`SipParseError`.
    """
    text = unfold(text)
    if not text.strip(" \t"):
        return []
    if '"' not in text and ("," not in text or "<" not in text):
        # Nothing that protects a comma (most Via, Allow, Supported values): plain split.
        elements = [element.strip(" \t") for element in text.split(",")]
    else:
        elements = _split_protected(text)
    if "" in elements:
        raise SipParseError("bad header list: empty element")
    return elements


def _split_protected(text: str) -> list[str]:
    """:func:`split_list_untrusted`'s split when quoted strings or ``<...>`` may hold commas."""
    elements: list[str] = []
    start = 0
    in_quote = False
    in_angle = False
    i = 0
    while i < len(text):
        char = text[i]
        if in_quote:
            if char == "\\":
                i += 1
            elif char == '"':
                in_quote = False
        elif char == '"':
            in_quote = True
        elif char == "<":
            in_angle = True
        elif char == ">":
            in_angle = False
        elif char == "," and not in_angle:
            elements.append(text[start:i].strip(" \t"))
            start = i + 1
        i += 1
    if in_quote:
        raise SipParseError("bad header list: unterminated quoted string")
    elements.append(text[start:].strip(" \t"))
    return elements
