"""Numbering plans: the numbers people dial and carriers send, read as E.164, and E.164 numbers
written the way a carrier wants them (specs/pstn.md §3).

Theory of operation. A number is routed and compared in one form, E.164 with a ``+``
(``+4930123456``: country code and national significant number, at most 15 digits, ITU-T E.164
§6). What arrives is often something else: a phone dials ``030 123456`` or ``123456`` or
``004930123456``, a carrier delivers ``030123456`` in the Request-URI and ``0301234567`` in the
From. A :class:`NumberingPlan` says how to read those: the international access prefix (``00``
in most of the world, ``011`` in the NANP) stands for ``+``; the national trunk prefix (``0`` in
most of Europe, ``1`` in the NANP) stands for ``+`` and the country code; a number with neither
is a subscriber number in the plan's area, or a national number where ``national_number_length``
says so (10-digit dialling in the NANP) or the plan has no national prefix (a closed plan:
Italy, Spain, Denmark dial every number in full). Emergency and short service
codes (112, 110, 911, 116xxx ...) are never rewritten: ``112`` is not ``+4930112`` (a carrier
would route that to a subscriber, not to the emergency service).

An E.164 number goes to a trunk in the trunk's ``number_format``: ``e164`` as it is,
``international`` with the international prefix instead of ``+``, ``national`` with the national
prefix instead of ``+`` and the country code (a number of another country goes international).

A plan without a ``country_code`` rewrites nothing but what RFC 3966 defines without a plan: a
local number with a global ``phone-context`` (``7042;phone-context=+4930`` is ``+49307042``,
§5.1.5). That keeps a configuration without ``[numbering]`` routing exactly as written.

Sans-IO and synchronous: strings in, strings out.
"""

from __future__ import annotations

import re
from typing import Literal

import attrs

NumberFormat = Literal["e164", "international", "national"]
NUMBER_FORMATS: tuple[NumberFormat, ...] = ("e164", "international", "national")

DEFAULT_EMERGENCY_NUMBERS: tuple[str, ...] = ("110", "112", "911", "999")
"""Emergency numbers unless ``emergency_numbers`` says otherwise: 112 (Europe, GSM), 110
(police, Germany), 911 (NANP), 999 (UK). Calls to them are short codes (never rewritten) and
are exempt from every call limit (an account's or a trunk's max_calls and max_cps): a service
restriction must not stand between a caller and the emergency services."""

DEFAULT_SHORT_CODES: tuple[str, ...] = ("110", "112", "116xxx", "911", "999")
"""Short codes left as they are unless ``short_codes`` says otherwise: the emergency numbers of
specs/pstn.md §3 (112 in Europe and GSM, 110 police in Germany, 911 NANP, 999 UK) and the EU's
harmonised 116xxx services. An operator adds their country's others (115, 118xx, N11 ...)."""

E164_MAX_DIGITS = 15  # ITU-T E.164 §6: country code and national significant number together
# Fewer digits than this is no subscriber's number anywhere (Niue's +683 and four digits is the
# shortest there is): "1" dialled is not +49301, "12" in the NANP not +12.
MIN_E164_DIGITS = 7
MIN_SUBSCRIBER_DIGITS = 3
MAX_COUNTRY_CODE_DIGITS = 3

_DIGITS = re.compile(r"[0-9]+")
_SHORT_CODE = re.compile(r"[0-9xX]+")
_DIAL_STRING = re.compile(r"\+?[0-9*#]+")
# RFC 3966 §5.1.1 visual separators (and the blanks some peers put in user parts).
_VISUAL_SEPARATORS = re.compile(r"[-.()\s]")
# RFC 3966 §3: a global number is "+" and digits (visual separators removed before this).
_GLOBAL = re.compile(r"\+[0-9]+")


def _digits_or_empty(text: str) -> bool:
    return text == "" or _DIGITS.fullmatch(text) is not None


@attrs.frozen
class NumberingPlan:
    """How numbers are written where a party dials or a trunk sends them (see the module
    docstring). ``country_code`` ``""`` turns the plan off: numbers stay as they come."""

    country_code: str = ""
    area_code: str = ""
    international_prefix: str = "00"
    national_prefix: str = "0"
    national_number_length: int = 0
    short_codes: tuple[str, ...] = DEFAULT_SHORT_CODES
    emergency_numbers: tuple[str, ...] = DEFAULT_EMERGENCY_NUMBERS

    def __attrs_post_init__(self) -> None:
        # structure() reports a ValueError as a config error of the table; the message names
        # the key.
        if not _digits_or_empty(self.country_code) or (
            len(self.country_code) > MAX_COUNTRY_CODE_DIGITS or self.country_code.startswith("0")
        ):
            raise ValueError(
                f"country_code: expected 1 to 3 digits without a leading 0 (49, 1, 353) or "
                f'"" for no numbering plan, got {self.country_code!r}'
            )
        for key in ("area_code", "international_prefix", "national_prefix"):
            if not _digits_or_empty(getattr(self, key)):
                raise ValueError(f"{key}: expected digits, got {getattr(self, key)!r}")
        if self.area_code and not self.country_code:
            raise ValueError("area_code: a subscriber's area needs a country_code")
        if self.area_code and not self.national_prefix:
            raise ValueError(
                "area_code: a plan without a national prefix dials every number in full "
                "(no subscriber numbers to put an area in front of)"
            )
        if self.national_prefix and self.area_code.startswith(self.national_prefix):
            raise ValueError(
                f"area_code: without the national prefix {self.national_prefix!r} "
                f"(30 for Berlin, not 030), got {self.area_code!r}"
            )
        if (
            self.international_prefix
            and self.national_prefix
            and self.national_prefix.startswith(self.international_prefix)
        ):
            raise ValueError(
                "national_prefix: must not start with the international prefix "
                f"{self.international_prefix!r} (it would never be read as national)"
            )
        if not 0 <= self.national_number_length <= E164_MAX_DIGITS:
            raise ValueError(
                f"national_number_length: expected 0 (none) to {E164_MAX_DIGITS}, "
                f"got {self.national_number_length}"
            )
        for key in ("short_codes", "emergency_numbers"):
            for code in getattr(self, key):
                if not _SHORT_CODE.fullmatch(code):
                    raise ValueError(
                        f"{key}: expected digits, x for any digit (116xxx), got {code!r}"
                    )

    @property
    def enabled(self) -> bool:
        return bool(self.country_code)

    def is_short_code(self, number: str) -> bool:
        """Whether ``number`` (digits) is one of ``short_codes`` or ``emergency_numbers``
        (``x`` matches any digit, the length must be the same)."""
        return self.is_emergency(number) or any(
            _matches_short_code(number, code) for code in self.short_codes
        )

    def is_emergency(self, number: str) -> bool:
        """Whether ``number`` (digits, separators removed) is one of ``emergency_numbers``."""
        return any(_matches_short_code(number, code) for code in self.emergency_numbers)

    def to_e164(self, number: str, *, context: str | None = None) -> str:
        """``number`` (a dial string: ``+``, digits, ``*``, ``#``, separators already removed)
        as ``+`` and digits, or unchanged when the plan cannot say: a service code with ``*``
        or ``#``, a short code, a number the plan does not read (no ``country_code``, no area
        for a subscriber number), or a result past E.164's 15 digits. ``context`` is the
        number's RFC 3966 ``phone-context``: a global one (``+4930``) is put in front of a local
        number (§5.1.5); a domain name says nothing about digits and is ignored."""
        if number.startswith("+"):
            return number
        if not _DIGITS.fullmatch(number) or self.is_short_code(number):
            return number
        if context is not None and _GLOBAL.fullmatch(context):
            return _checked(context + number, number)
        if not self.country_code:
            return number
        if self.international_prefix and number.startswith(self.international_prefix):
            rest = number[len(self.international_prefix) :]
            return _checked("+" + rest, number) if rest else number
        if self.national_prefix and number.startswith(self.national_prefix):
            rest = number[len(self.national_prefix) :]
            return _checked("+" + self.country_code + rest, number) if rest else number
        if (self.national_number_length and len(number) == self.national_number_length) or (
            not self.national_prefix
        ):
            # A closed plan (no national prefix: Italy, Spain, Denmark ...) dials every number
            # in full, so a number without the international prefix is a national one.
            return _checked("+" + self.country_code + number, number)
        if self.area_code and len(number) >= MIN_SUBSCRIBER_DIGITS:
            return _checked("+" + self.country_code + self.area_code + number, number)
        return number

    def written_as(self, number: str, number_format: NumberFormat) -> str:
        """An E.164 ``number`` written in ``number_format`` for a trunk: ``e164`` as it is,
        ``international`` with the international prefix for ``+``, ``national`` with the
        national prefix for ``+`` and our country code (another country's number goes
        international). Anything not E.164 (a short code, a number the plan could not read)
        goes as it is."""
        if number_format == "e164" or not _GLOBAL.fullmatch(number):
            return number
        digits = number[1:]
        if (
            number_format == "national"
            and self.country_code
            and digits.startswith(self.country_code)
            and len(digits) > len(self.country_code)
        ):
            return self.national_prefix + digits[len(self.country_code) :]
        if not self.international_prefix:
            return number  # a plan without an international prefix cannot write one
        return self.international_prefix + digits


def _matches_short_code(number: str, code: str) -> bool:
    if len(number) != len(code):
        return False
    return all(c in "xX" or c == n for n, c in zip(number, code, strict=True))


def _checked(e164: str, original: str) -> str:
    """``e164`` when it is a plausible E.164 number, else ``original`` (a number read with the
    wrong plan must not be sent on as a longer, wrong one): at most 15 digits, a country code
    not starting with 0 (E.164 §6.2.1), and more than a country code's worth of digits."""
    digits = len(e164) - 1
    if not MIN_E164_DIGITS <= digits <= E164_MAX_DIGITS or e164.startswith("+0"):
        return original
    return e164


def read_number(plan: NumberingPlan, text: str) -> str:
    """``text`` (a SIP URI's user part, a tel URI's number: separators and a ``phone-context``
    are read) as E.164 by ``plan``, or as a dial string where the plan cannot read it (a short
    code, no plan), or unchanged when it is not a number at all (a user name, ``anonymous``)."""
    number, context = split_phone_context(text)
    if not _DIAL_STRING.fullmatch(number):
        return text
    return plan.to_e164(number, context=context)


def split_phone_context(user: str) -> tuple[str, str | None]:
    """A SIP URI's user part or a tel URI's number as the number and its ``phone-context``
    (RFC 3966 §3 ``par``, RFC 3261 §19.1.6): ``7042;phone-context=+49-30`` is ``("7042",
    "+4930")``. Visual separators are removed from both; the other parameters are dropped."""
    number, _, params = user.partition(";")
    context: str | None = None
    for param in params.split(";") if params else ():
        name, _, value = param.partition("=")
        if name.strip().lower() == "phone-context" and value:
            context = value.strip()
    if context is not None and context.startswith("+"):
        context = _VISUAL_SEPARATORS.sub("", context)
    return _VISUAL_SEPARATORS.sub("", number), context
