"""SIP requests and responses as frozen values (RFC 3261 §7).

Header fields are kept in order as ``(canonical name, value)`` pairs, one pair per element of a
comma-separated list header (RFC 3261 §7.3.1), so ``get_all("Via")`` is the Via stack, top first.
Typed accessors (``top_via``, ``cseq``, ``from_`` ...) parse the stored text on demand with the
grammar in :mod:`gateway.core.sip.grammar`; a malformed value raises :class:`SipParseError`.

Build edits with the ``with_*`` methods (they return new values); parse network bytes with
:func:`gateway.core.sip.parser.parse_message_untrusted`; write bytes with
:func:`gateway.core.sip.serializer.serialize_message`.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterable, Mapping

import attrs

from gateway.core.sip import grammar
from gateway.core.sip.grammar import (
    PARSE_CACHE_ENTRIES,
    PARSE_CACHE_MAX_TEXT,
    parse_cseq_cached,
    parse_name_addr_cached,
)
from gateway.core.sip.headers import CSeq, NameAddr, Via, canonical_name
from gateway.core.sip.uri import Uri

SIP_VERSION = "SIP/2.0"


# Header names as code spells them ("Call-ID", "call-id", "i") -> the lower-case canonical name
# a lookup compares with. Bounded: a name taken from the network is looked up, never kept past it.
_LOOKUP_KEYS: dict[str, str] = {}
_LOOKUP_KEYS_MAX = 1024


# Field names as stored (canonical) -> lower case: one shared string per name, not one per
# message (messages live on in transactions for 32 s). Bounded like _LOOKUP_KEYS.
_LOWER_NAMES: dict[str, str] = {}


def _lower(name: str) -> str:
    """A stored (canonical) field name in lower case, shared (see _LOWER_NAMES)."""
    key = _LOWER_NAMES.get(name)
    if key is None:
        key = name.lower()
        if len(_LOWER_NAMES) < _LOOKUP_KEYS_MAX:
            _LOWER_NAMES[name] = key
    return key


def index_key(name: str) -> str:
    """The key of a stored (canonical) field name in :meth:`Headers.by_name`: lower case, one
    shared string per name (for the parser, which builds the index as it reads the fields)."""
    return _lower(name)


def _lookup_key(name: str) -> str:
    key = _LOOKUP_KEYS.get(name)
    if key is None:
        key = canonical_name(name).lower()
        if len(_LOOKUP_KEYS) < _LOOKUP_KEYS_MAX:
            _LOOKUP_KEYS[name] = key
    return key


_NO_TAGS: frozenset[str] = frozenset()
_COMMAS = itertools.repeat(",")


def _option_tags(values: tuple[str, ...]) -> frozenset[str]:
    # RFC 3261 §7.3.1: tokens compare case-insensitively; an empty element (",,") names nothing.
    return frozenset(tag.strip().lower() for value in values for tag in value.split(",")) - {""}


# A message's Supported and Require are asked several times (session timers, 100rel, RFC 7866's
# record-aware), and a party sends the same lists on every INVITE and 2xx: their tags by the
# values as stored, bounded as the grammar's parse caches are (short texts only), and by the
# number of tags: an entry holds a string and a set slot per tag, so 170 two-character tags in
# 512 characters made 1,024 entries 27 MB where the grammar's caches hold a few.
_option_tags_cached = functools.lru_cache(maxsize=PARSE_CACHE_ENTRIES)(_option_tags)
OPTION_TAGS_CACHE_MAX_TAGS = 16
"""Longer lists (elements, empty ones too) are parsed every time and never held by the cache: a
party lists a handful."""


@attrs.frozen
class Headers:
    """Ordered, case-insensitive, multi-valued header fields."""

    fields: tuple[tuple[str, str], ...] = ()
    # Lower-case name -> its value, or its values in order when there are several; made on the
    # first lookup: a message is read about twenty times (parser checks, transactions, dialogs,
    # the B2BUA). Most names have one value, kept as the string itself: no tuple per field, and
    # an index of strings only is a dict the cyclic garbage collector never tracks (messages live
    # on in transactions for 64*T1).
    _index: dict[str, str | tuple[str, ...]] | None = attrs.field(
        default=None, init=False, repr=False, eq=False, hash=False
    )

    @classmethod
    def of(cls, pairs: Iterable[tuple[str, str]]) -> Headers:
        return cls(tuple([(canonical_name(n), v) for n, v in pairs]))

    @classmethod
    def indexed(
        cls, fields: tuple[tuple[str, str], ...], index: dict[str, str | tuple[str, ...]]
    ) -> Headers:
        """Headers with their name index already made: ``index`` must be what :meth:`_values`
        makes of ``fields`` (the parser builds it in the loop that reads the fields, instead
        of a second loop over them at the first look-up, which every received message has)."""
        headers = cls(fields)
        object.__setattr__(headers, "_index", index)
        return headers

    def _values(self) -> dict[str, str | tuple[str, ...]]:
        index = self._index
        if index is None:
            index = {}
            for name, value in self.fields:
                key = _LOWER_NAMES.get(name) or _lower(name)
                seen = index.get(key)
                if seen is None:
                    index[key] = value
                elif isinstance(seen, str):
                    index[key] = (seen, value)
                else:
                    index[key] = (*seen, value)  # bounded by the parser's max_headers
            object.__setattr__(self, "_index", index)
        return index

    def by_name(self) -> Mapping[str, str | tuple[str, ...]]:
        """Every field by lower-case canonical name: the value, or the values in order when
        there are several (for checks that read many names at once)."""
        return self._index or self._values()

    def get(self, name: str) -> str | None:
        """First value of ``name``, or None."""
        # Read some twenty times per message: the index and the key from their dicts first.
        index = self._index or self._values()
        values = index.get(_LOOKUP_KEYS.get(name) or _lookup_key(name))
        if values is None or isinstance(values, str):
            return values
        return values[0]

    def get_all(self, name: str) -> tuple[str, ...]:
        index = self._index or self._values()
        values = index.get(_LOOKUP_KEYS.get(name) or _lookup_key(name))
        if values is None:
            return ()
        if isinstance(values, str):
            return (values,)
        return values

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def count(self, name: str) -> int:
        return len(self.get_all(name))

    def option_tags(self, name: str) -> frozenset[str]:
        """The option tags of every ``name`` field, lower case (Require, Supported: RFC 3261
        §20.32, §19.2; a list header, one or more fields)."""
        values = self.get_all(name)
        if not values:
            return _NO_TAGS
        if (  # a key's size and its tags, bounded (a received list has one element a value)
            len(values) + sum(map(len, values)) > PARSE_CACHE_MAX_TEXT
            or len(values) + sum(map(str.count, values, _COMMAS)) > OPTION_TAGS_CACHE_MAX_TAGS
        ):
            return _option_tags(values)
        return _option_tags_cached(values)

    def lists_option_tag(self, tag: str) -> bool:
        """Whether Supported or Require lists option tag ``tag`` (lower case): what the sender
        requires it supports (RFC 3261 §20.32, §20.37; how session timers and RFC 7866's
        record-aware are told)."""
        return tag in self.option_tags("Supported") or tag in self.option_tags("Require")

    def names(self) -> tuple[str, ...]:
        return tuple(n for n, _ in self.fields)

    def add(self, name: str, value: str) -> Headers:
        """Append a field after all existing ones."""
        return Headers((*self.fields, (canonical_name(name), value)))

    def prepend(self, name: str, value: str) -> Headers:
        """Insert before the first field of the same name (or at the top): a new top Via/Route."""
        cname = canonical_name(name)
        key = cname.lower()
        out = list(self.fields)
        for i, (n, _) in enumerate(out):
            if _lower(n) == key:
                out.insert(i, (cname, value))
                return Headers(tuple(out))
        return Headers(((cname, value), *out))

    def replace_first(self, name: str, value: str) -> Headers:
        """The same fields with the first ``name`` field's value replaced (a received request's
        top Via, stamped); unchanged without one. The name index, when made, is carried over
        rather than made again: only that value differs."""
        key = _lookup_key(name)
        fields = list(self.fields)
        for i, (n, _) in enumerate(fields):
            if _lower(n) == key:
                fields[i] = (n, value)
                break
        else:
            return self
        new = Headers(tuple(fields))
        index = self._index
        if index is not None:
            index = dict(index)
            old = index[key]
            index[key] = value if isinstance(old, str) else (value, *old[1:])
            object.__setattr__(new, "_index", index)
        return new

    def remove(self, name: str) -> Headers:
        key = canonical_name(name).lower()
        return Headers(tuple((n, v) for n, v in self.fields if _lower(n) != key))

    def remove_first(self, name: str) -> Headers:
        key = canonical_name(name).lower()
        out = list(self.fields)
        for i, (n, _) in enumerate(out):
            if _lower(n) == key:
                del out[i]
                break
        return Headers(tuple(out))

    def set(self, name: str, *values: str) -> Headers:
        """Replace every field called ``name`` with ``values``, at the position of the first one."""
        cname = canonical_name(name)
        key = cname.lower()
        out: list[tuple[str, str]] = []
        placed = False
        for n, v in self.fields:
            if _lower(n) == key:
                if not placed:
                    out.extend((cname, value) for value in values)
                    placed = True
                continue
            out.append((n, v))
        if not placed:
            out.extend((cname, value) for value in values)
        return Headers(tuple(out))


class _Common:
    """Accessors shared by requests and responses (they read ``self.headers``).

    ``call_id``, ``cseq``, ``top_via``, ``from_`` and ``to`` are read some 160 times per call (the
    parser's checks, transactions, dialogs, the B2BUA, the records): they take the value from the
    headers' name index themselves, by its lower-case key, rather than through
    :meth:`Headers.get` (a Python call each; docs/benchmarks.md, session 39). CSeq, From and
    To are parsed by their grammar's LRU cache directly when short enough to be held in it, as
    the memoized parser itself does, without its wrapper's call."""

    headers: Headers

    @property
    def call_id(self) -> str:
        headers = self.headers
        value = (headers._index or headers._values()).get("call-id")
        if value is None:
            raise grammar.SipParseError("missing Call-ID header")
        return value if isinstance(value, str) else value[0]

    @property
    def cseq(self) -> CSeq:
        headers = self.headers
        value = (headers._index or headers._values()).get("cseq")
        if value is None:
            raise grammar.SipParseError("missing CSeq header")
        text = value if isinstance(value, str) else value[0]
        if len(text) > PARSE_CACHE_MAX_TEXT:
            return grammar.parse_cseq_untrusted(text)
        return parse_cseq_cached(text)

    @property
    def vias(self) -> tuple[Via, ...]:
        return tuple(grammar.parse_via_untrusted(v) for v in self.headers.get_all("Via"))

    @property
    def top_via(self) -> Via:
        headers = self.headers
        value = (headers._index or headers._values()).get("via")
        if value is None:
            raise grammar.SipParseError("missing Via header")
        return grammar.parse_via_untrusted(value if isinstance(value, str) else value[0])

    @property
    def from_(self) -> NameAddr:
        headers = self.headers
        value = (headers._index or headers._values()).get("from")
        if value is None:
            raise grammar.SipParseError("missing From header")
        text = value if isinstance(value, str) else value[0]
        if len(text) > PARSE_CACHE_MAX_TEXT:
            return grammar.parse_name_addr_untrusted(text)
        return parse_name_addr_cached(text)

    @property
    def to(self) -> NameAddr:
        headers = self.headers
        value = (headers._index or headers._values()).get("to")
        if value is None:
            raise grammar.SipParseError("missing To header")
        text = value if isinstance(value, str) else value[0]
        if len(text) > PARSE_CACHE_MAX_TEXT:
            return grammar.parse_name_addr_untrusted(text)
        return parse_name_addr_cached(text)

    @property
    def contacts(self) -> tuple[NameAddr, ...]:
        return tuple(grammar.parse_name_addr_untrusted(v) for v in self.headers.get_all("Contact"))

    @property
    def routes(self) -> tuple[NameAddr, ...]:
        return tuple(grammar.parse_name_addr_untrusted(v) for v in self.headers.get_all("Route"))

    @property
    def record_routes(self) -> tuple[NameAddr, ...]:
        return tuple(
            grammar.parse_name_addr_untrusted(v) for v in self.headers.get_all("Record-Route")
        )

    @property
    def content_type(self) -> str | None:
        return self.headers.get("Content-Type")


@attrs.frozen
class Request(_Common):
    method: str
    uri: Uri
    headers: Headers = Headers()
    body: bytes = b""
    version: str = SIP_VERSION

    @property
    def max_forwards(self) -> int | None:
        value = self.headers.get("Max-Forwards")
        return None if value is None else grammar.parse_uint_untrusted(value, "Max-Forwards", 255)

    def with_headers(self, headers: Headers) -> Request:
        # Built directly rather than with attrs.evolve, which reads every field by name.
        return Request(self.method, self.uri, headers, self.body, self.version)

    def with_body(self, body: bytes, content_type: str | None = None) -> Request:
        headers = self.headers
        if content_type is not None:
            headers = headers.set("Content-Type", content_type)
        elif not body:
            headers = headers.remove("Content-Type")
        return Request(self.method, self.uri, headers, body, self.version)


@attrs.frozen
class Response(_Common):
    status: int
    reason: str
    headers: Headers = Headers()
    body: bytes = b""
    version: str = SIP_VERSION

    @property
    def is_provisional(self) -> bool:
        return 100 <= self.status < 200

    @property
    def is_success(self) -> bool:
        return 200 <= self.status < 300

    @property
    def is_final(self) -> bool:
        return self.status >= 200

    def with_headers(self, headers: Headers) -> Response:
        return Response(self.status, self.reason, headers, self.body, self.version)

    def with_body(self, body: bytes, content_type: str | None = None) -> Response:
        headers = self.headers
        if content_type is not None:
            headers = headers.set("Content-Type", content_type)
        elif not body:
            headers = headers.remove("Content-Type")
        return Response(self.status, self.reason, headers, body, self.version)


Message = Request | Response

# Headers a UAS copies from a request into a response it builds (RFC 3261 §8.2.6.2), with their
# keys in Headers.by_name().
_COPIED_INTO_RESPONSE = tuple(
    (name, name.lower()) for name in ("Via", "From", "To", "Call-ID", "CSeq")
)


def make_response(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    extra: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    content_type: str | None = None,
) -> Response:
    """Build a response to ``request`` as RFC 3261 §8.2.6.2 says: same Via stack (in order), From,
    Call-ID, CSeq, and To with ``to_tag`` added when given and not already present."""
    fields: list[tuple[str, str]] = []
    by_name = request.headers.by_name()  # read directly: a get_all call per name cost more
    for name, key in _COPIED_INTO_RESPONSE:
        values = by_name.get(key)
        if values is None:
            continue
        for value in (values,) if isinstance(values, str) else values:
            if name == "To" and to_tag is not None:
                to = grammar.parse_name_addr_untrusted(value)
                if to.tag is None:
                    value = str(to.with_tag(to_tag))
            fields.append((name, value))
    fields.extend((canonical_name(n), v) for n, v in extra)
    if content_type is not None:
        fields.append(("Content-Type", content_type))
    return Response(
        status=status,
        reason=reason if reason is not None else default_reason(status),
        headers=Headers(tuple(fields)),
        body=body,
    )


# fmt: off
_REASONS: dict[int, str] = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 199: "Early Dialog Terminated", 200: "OK", 202: "Accepted",
    204: "No Notification", 300: "Multiple Choices", 301: "Moved Permanently",
    302: "Moved Temporarily", 305: "Use Proxy", 380: "Alternative Service", 400: "Bad Request",
    401: "Unauthorized", 402: "Payment Required", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 406: "Not Acceptable", 407: "Proxy Authentication Required",
    408: "Request Timeout", 410: "Gone", 413: "Request Entity Too Large",
    414: "Request-URI Too Long", 415: "Unsupported Media Type", 416: "Unsupported URI Scheme",
    420: "Bad Extension", 421: "Extension Required", 422: "Session Interval Too Small",
    423: "Interval Too Brief", 480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist", 482: "Loop Detected", 483: "Too Many Hops",
    484: "Address Incomplete", 485: "Ambiguous", 486: "Busy Here", 487: "Request Terminated",
    488: "Not Acceptable Here", 489: "Bad Event", 491: "Request Pending", 493: "Undecipherable",
    500: "Server Internal Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Server Time-out", 505: "Version Not Supported",
    513: "Message Too Large", 580: "Precondition Failure", 600: "Busy Everywhere",
    603: "Decline", 604: "Does Not Exist Anywhere", 606: "Not Acceptable",
}
# fmt: on


def default_reason(status: int) -> str:
    """RFC 3261 §21 reason phrase for ``status`` (or a class-level fallback)."""
    reason = _REASONS.get(status)
    if reason is not None:
        return reason
    return {1: "Progress", 2: "OK", 3: "Redirection", 4: "Client Error", 5: "Server Error",
            6: "Global Failure"}.get(status // 100, "Unknown")  # fmt: skip


def cancel_for(invite: Request, reasons: Iterable[str] = ()) -> Request:
    """The CANCEL of ``invite`` as sent (RFC 3261 §9.1): its Request-URI, top Via (the same
    branch), From, To, Call-ID, CSeq number and Route headers; and why (Reason, RFC 3326)."""
    return Request(
        "CANCEL",
        invite.uri,
        Headers.of(
            [
                ("Via", invite.headers.get("Via") or ""),
                ("Max-Forwards", "70"),
                ("From", invite.headers.get("From") or ""),
                ("To", invite.headers.get("To") or ""),
                ("Call-ID", invite.call_id),
                ("CSeq", f"{invite.cseq.number} CANCEL"),
                *(("Route", route) for route in invite.headers.get_all("Route")),
                *(("Reason", reason) for reason in reasons),
            ]
        ),
    )
