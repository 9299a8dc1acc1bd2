"""Structured header values: Via, name-addr (From/To/Contact/Route/Record-Route) and CSeq.

Values only; parsing is ``parse_*_untrusted`` in :mod:`gateway.core.sip.grammar`. ``str()`` gives
the wire form.
"""

from __future__ import annotations

import attrs

from gateway.core.sip.uri import Params, Uri, format_params, get_param, has_param, set_param

MAGIC_COOKIE = "z9hG4bK"  # RFC 3261 §8.1.1.7: branch prefix of RFC 3261-compliant elements

# RFC 3261 §7.3.3 compact forms, and RFC 3515/3841/4028/6086 ones a gateway meets in practice.
COMPACT_FORMS: dict[str, str] = {
    "i": "Call-ID",
    "m": "Contact",
    "e": "Content-Encoding",
    "l": "Content-Length",
    "c": "Content-Type",
    "f": "From",
    "s": "Subject",
    "k": "Supported",
    "t": "To",
    "v": "Via",
    "r": "Refer-To",
    "b": "Referred-By",
    "o": "Event",
    "u": "Allow-Events",
    "x": "Session-Expires",
    "a": "Accept-Contact",
    "j": "Reject-Contact",
    "d": "Request-Disposition",
    "y": "Identity",
}

# fmt: off
_CANONICAL: dict[str, str] = {
    name.lower(): name
    for name in (
        "Accept", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow", "Allow-Events",
        "Authentication-Info", "Authorization", "Call-ID", "Call-Info", "Contact",
        "Content-Disposition", "Content-Encoding", "Content-Language", "Content-Length",
        "Content-Type", "CSeq", "Date", "Error-Info", "Event", "Expires", "From", "In-Reply-To",
        "Max-Forwards", "Min-Expires", "Min-SE", "MIME-Version", "Organization",
        "P-Asserted-Identity", "P-Preferred-Identity", "Path", "Priority", "Privacy",
        "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Require", "RAck", "Reason",
        "Record-Route", "Refer-To", "Referred-By", "Reply-To", "Require", "Retry-After", "Route",
        "RSeq", "Server", "Service-Route", "Session-Expires", "SIP-ETag", "SIP-If-Match",
        "Subject", "Subscription-State", "Supported", "Timestamp", "To", "Unsupported",
        "User-Agent", "Via", "Warning", "WWW-Authenticate", "Identity",
        "Accept-Contact", "Reject-Contact", "Request-Disposition",
    )
}
# fmt: on

# Headers whose grammar is a comma-separated list (RFC 3261 §7.3.1): the parser splits them into one
# entry per element so that ``Headers.get_all`` sees one value each. WWW-Authenticate & co. are
# *not* lists even though they contain commas.
# fmt: off
LIST_HEADERS: frozenset[str] = frozenset(
    {
        "Via", "Contact", "Route", "Record-Route", "Path", "Service-Route", "Allow", "Supported",
        "Require", "Proxy-Require", "Unsupported", "Accept", "Accept-Encoding", "Accept-Language",
        "Content-Encoding", "Content-Language", "Allow-Events", "Alert-Info", "Call-Info",
        "Error-Info", "In-Reply-To", "Warning", "Reason", "P-Asserted-Identity", "Privacy",
    }
)
# fmt: on


def canonical_name(name: str) -> str:
    """Canonical spelling of a header name: expands compact forms, fixes case of known names."""
    if len(name) == 1:
        full = COMPACT_FORMS.get(name.lower())
        if full is not None:
            return full
    return _CANONICAL.get(name.lower(), name)


@attrs.frozen
class Via:
    """One Via header value (RFC 3261 §20.42, §18.2.1; RFC 3581 rport)."""

    transport: str
    host: str
    port: int | None = None
    params: Params = ()
    protocol: str = "SIP/2.0"

    @property
    def branch(self) -> str | None:
        return get_param(self.params, "branch")

    @property
    def received(self) -> str | None:
        return get_param(self.params, "received")

    @property
    def has_rport(self) -> bool:
        return has_param(self.params, "rport")

    @property
    def rport(self) -> int | None:
        value = get_param(self.params, "rport")
        return int(value) if value is not None and value.isdigit() else None

    @property
    def maddr(self) -> str | None:
        return get_param(self.params, "maddr")

    @property
    def rfc3261_branch(self) -> bool:
        branch = self.branch
        return branch is not None and branch.startswith(MAGIC_COOKIE)

    def sent_by(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def with_params(self, params: Params) -> Via:
        # Built directly: attrs.evolve reads every field by name, several times per message.
        return Via(self.transport, self.host, self.port, params, self.protocol)

    def with_param(self, name: str, value: str | None = None) -> Via:
        return self.with_params(set_param(self.params, name, value))

    def __str__(self) -> str:
        return f"{self.protocol}/{self.transport} {self.sent_by()}{format_params(self.params)}"


@attrs.frozen
class NameAddr:
    """name-addr / addr-spec with header parameters: From, To, Contact, Route, Record-Route, ...

    ``display_name`` is stored as written, including its quotes if it was quoted, so serialization
    reproduces it. ``wildcard`` is the ``Contact: *`` form of REGISTER (RFC 3261 §10.2.2).
    """

    uri: Uri | None
    display_name: str | None = None
    params: Params = ()
    wildcard: bool = False

    @property
    def tag(self) -> str | None:
        return get_param(self.params, "tag")

    def param(self, name: str) -> str | None:
        return get_param(self.params, name)

    def with_params(self, params: Params) -> NameAddr:
        return NameAddr(self.uri, self.display_name, params, self.wildcard)

    def with_param(self, name: str, value: str | None = None) -> NameAddr:
        return self.with_params(set_param(self.params, name, value))

    def with_tag(self, tag: str) -> NameAddr:
        return self.with_param("tag", tag)

    def __str__(self) -> str:
        if self.wildcard:
            return "*" + format_params(self.params)
        # Always use the <> form: it is never ambiguous (RFC 3261 §20.10 note on ; and ? in URIs).
        prefix = f"{self.display_name} " if self.display_name else ""
        return f"{prefix}<{self.uri}>{format_params(self.params)}"


@attrs.frozen
class CSeq:
    """CSeq (RFC 3261 §20.16): sequence number below 2**31 and a method."""

    number: int
    method: str

    def __str__(self) -> str:
        return f"{self.number} {self.method}"
