"""SIP, SIPS and TEL URIs (RFC 3261 §19.1, RFC 3966) as frozen values.

Parsing lives in :mod:`gateway.core.sip.grammar` (``parse_uri_untrusted``); this module only holds
the values and writes them back out. Components are kept as they were on the wire (escaped), so a
parsed message serializes to the same URI; comparison helpers unescape where RFC 3261 §19.1.4
says so.
"""

from __future__ import annotations

import re

import attrs

Params = tuple[tuple[str, str | None], ...]
"""Ordered ``;name=value`` parameters; a flag parameter (``;lr``) has the value None."""


# RFC 3261 §19.1.1 / §25.1: userinfo = user [ ":" password ] "@"; user may hold ";?/&=+$,",
# password only unreserved, escaped and "&=+$,". Anchored on "sip:"/"sips:" so a host:port
# (no "@" after it) is never taken for a user and password. The URIs the log quotes are often
# the ones that did not parse: a password holding what its grammar does not ("/", "#", "@"
# unescaped) is hidden too, up to the userinfo's last "@", unless what follows the ":" is a
# port (digits, then ";", "?", ">", "/", ",", a space or the end). The text may be a peer's
# (a Contact): the password's scan stops at the next "sip:" and after 256 characters, so that a
# line of many "sip:a:" costs a pass over it, not one per URI (a 64 KB one took 34 s).
_PASSWORD_IN_URI = re.compile(
    r"(?i)\b(sips?:[A-Za-z0-9\-_.!~*'()%&=+$,;?/]*):(?!\d*(?:[;?>/,\s]|$))"
    r"(?:(?!sips?:)[^\s@<>\"]){0,256}(?:@(?:(?!sips?:)[^\s@<>\";?/]){0,256}){0,8}@"
)
# RFC 3986 §3.2.1: a URL's authority (http://, https://, ws://, postgresql:// ...) may begin
# with userinfo "user:password@". The password runs to the last "@" of the authority: a
# malformed "u:p@ss@host" hides "p@ss". It may hold the "/", "?" and "#" that end an authority
# (RFC 3986 wants them escaped there; a password pasted as it is keeps them: base64's "/"), and
# a URL quoted in an error is the malformed one: so everything up to an "@" is taken for the
# password, unless what follows the ":" is a port (digits, then "/", "?", "#" or the end). As
# above, the scan stops at the next "://" and after 256 characters.
_PASSWORD_IN_URL = re.compile(
    r"(?i)\b([a-z][a-z0-9+.\-]*://[^\s/?#@:\[\]]*):(?!\d*(?:[/?#\s]|$))"
    r"(?:(?!://)[^\s@]){0,256}(?:@(?:(?!://)[^\s@/?#]){0,256}){0,8}@"
)
REDACTED = "***"


def redact_password(text: str) -> str:
    """``text`` (a SIP URI or a URL, or a line naming some) with the password of each
    ``sip:`` or ``sips:`` URI's userinfo, and of each ``scheme://user:password@host`` URL's,
    replaced by ``***``: for logs, error messages, ``voipgw trunks`` and metric labels (RFC 3261
    §19.1.1 deprecates the password, but a configured URI may still carry one; an HTTPS URL in
    a plugin's table may carry one too). Nothing else changes; text without a password comes
    back as it is."""
    if "@" not in text:
        return text
    text = _PASSWORD_IN_URI.sub(rf"\1:{REDACTED}@", text)
    return _PASSWORD_IN_URL.sub(rf"\1:{REDACTED}@", text)


def get_param(params: Params, name: str) -> str | None:
    """Value of the first parameter called ``name`` (case-insensitive); None if absent or a flag."""
    lname = name.lower()
    for key, value in params:
        # Parameter names are nearly always written in lower case: compare before lowering.
        if key == lname or key.lower() == lname:
            return value
    return None


def has_param(params: Params, name: str) -> bool:
    lname = name.lower()
    # A loop, not any() over a generator (a frame and a resumption per item): asked for every
    # Via and URI.
    for key, _ in params:  # noqa: SIM110
        if key.lower() == lname:
            return True
    return False


def set_param(params: Params, name: str, value: str | None) -> Params:
    """Replace the first parameter called ``name`` (keeping its position) or append it."""
    lname = name.lower()
    out = list(params)
    for i, (key, _) in enumerate(out):
        if key.lower() == lname:
            out[i] = (key, value)
            return tuple(out)
    out.append((name, value))
    return tuple(out)


def remove_param(params: Params, name: str) -> Params:
    lname = name.lower()
    return tuple((k, v) for k, v in params if k.lower() != lname)


def format_params(params: Params) -> str:
    if not params:
        return ""
    # A list, not a generator: join makes one anyway, and this runs ~30 times per call.
    return "".join([f";{k}" if v is None else f";{k}={v}" for k, v in params])


@attrs.frozen
class SipUri:
    """``sip:`` or ``sips:`` URI. ``host`` keeps IPv6 references in brackets (RFC 5118)."""

    scheme: str
    host: str
    user: str | None = None
    password: str | None = None
    port: int | None = None
    params: Params = ()
    headers: tuple[tuple[str, str], ...] = ()

    @property
    def secure(self) -> bool:
        return self.scheme.lower() == "sips"

    @property
    def transport(self) -> str | None:
        value = get_param(self.params, "transport")
        return value.lower() if value is not None else None

    @property
    def lr(self) -> bool:
        return has_param(self.params, "lr")

    def param(self, name: str) -> str | None:
        return get_param(self.params, name)

    def with_param(self, name: str, value: str | None = None) -> SipUri:
        return attrs.evolve(self, params=set_param(self.params, name, value))

    def host_port(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def __str__(self) -> str:
        userinfo = ""
        if self.user is not None:
            userinfo = self.user
            if self.password is not None:
                userinfo += ":" + self.password
            userinfo += "@"
        out = f"{self.scheme}:{userinfo}{self.host_port()}{format_params(self.params)}"
        if self.headers:
            out += "?" + "&".join(f"{k}={v}" for k, v in self.headers)
        return out


@attrs.frozen
class TelUri:
    """``tel:`` URI (RFC 3966): a global (``+``) or local number plus parameters."""

    number: str
    params: Params = ()

    @property
    def is_global(self) -> bool:
        return self.number.startswith("+")

    def __str__(self) -> str:
        return f"tel:{self.number}{format_params(self.params)}"


@attrs.frozen
class AbsoluteUri:
    """Any other scheme (RFC 3261 §25.1 absoluteURI), kept opaque."""

    scheme: str
    opaque: str

    def __str__(self) -> str:
        return f"{self.scheme}:{self.opaque}"


Uri = SipUri | TelUri | AbsoluteUri
