"""PSTN interworking (``interfaces.Interworking``, registered as ``rfc3398``): ISUP release causes
(ITU-T Q.850) and SIP status codes mapped as RFC 3398 tabulates them, and dial strings read in an
RFC 3966 context. Sans-IO: numbers in, numbers out.

Where the core uses it (``[[trunks]] interworking = "rfc3398"``): a carrier that interworks with
ISUP takes the release cause of a call from a Q.850 ``Reason`` header when there is one (RFC
3326; in a failure response, RFC 6432) and maps the SIP status itself otherwise. The gateway
adds that ``Reason`` to what it sends such a trunk: its failure responses (RFC 3398 §8.2.6.1,
SIP status to cause) and its BYEs (16 "normal call clearing" for a hang-up, the mapped cause
when the gateway ends a call for a reason of its own), unless the other side gave a Q.850 cause,
which goes on as it came (specs/pstn.md: prefer an explicit cause to the table).

The tables are data (specs/pstn.md §1-2, cross-checked copies of RFC 3398 §7.2.4.1 and
§8.2.6.1). ``[plugins.pstn]`` may override entries: ``q850_for_status = { 480 = 20 }`` says
"subscriber absent" for a 480, which the RFC maps to 18 "no user responding".
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

from gateway.core.hookspecs import hookimpl

if TYPE_CHECKING:
    from gateway.core.interfaces import Interworking
    from gateway.core.plugins import Registry

NAME = "rfc3398"

# RFC 3398 §7.2.4.1: ISUP cause -> SIP status. 29 "facility rejected" is printed as 510, an
# evident typo: implementations use 501 (specs/pstn.md §1).
STATUS_FOR_Q850: Mapping[int, int] = {
    1: 404, 2: 404, 3: 404, 17: 486, 18: 408, 19: 480, 20: 480, 21: 403, 22: 410, 23: 410,
    26: 404, 27: 502, 28: 484, 29: 501, 31: 480, 34: 503, 38: 503, 41: 503, 42: 503, 47: 503,
    55: 403, 57: 403, 58: 503, 65: 488, 70: 488, 79: 501, 87: 403, 88: 503, 102: 504, 111: 500,
    127: 500,
}  # fmt: skip

# RFC 3398 §8.2.6.1: SIP status -> ISUP cause. 487 has none (it answers our own CANCEL); 488
# and 606 go by their Warning in the RFC, 127 "interworking, unspecified" here.
Q850_FOR_STATUS: Mapping[int, int] = {
    400: 41, 401: 21, 402: 21, 403: 21, 404: 1, 405: 63, 406: 79, 407: 21, 408: 102, 410: 22,
    413: 127, 414: 127, 415: 79, 416: 127, 420: 127, 421: 127, 423: 127, 480: 18, 481: 41,
    482: 25, 483: 25, 484: 28, 485: 1, 486: 17, 488: 127, 500: 41, 501: 79, 502: 38, 503: 41,
    504: 102, 505: 127, 513: 127, 600: 17, 603: 21, 604: 1, 606: 127,
}  # fmt: skip

NORMAL_CLEARING = 16

# Q.850's names of the causes the tables use, for the Reason header's text (RFC 3326 §2).
CAUSE_TEXT: Mapping[int, str] = {
    1: "Unallocated number", 2: "No route to network", 3: "No route to destination",
    16: "Normal call clearing", 17: "User busy", 18: "No user responding",
    19: "No answer from user", 20: "Subscriber absent", 21: "Call rejected",
    22: "Number changed", 23: "Redirection to new destination", 25: "Exchange routing error",
    26: "Non-selected user clearing", 27: "Destination out of order",
    28: "Invalid number format", 29: "Facility rejected", 31: "Normal, unspecified",
    34: "No circuit/channel available", 38: "Network out of order", 41: "Temporary failure",
    42: "Switching equipment congestion", 47: "Resource unavailable, unspecified",
    55: "Incoming calls barred within CUG", 57: "Bearer capability not authorized",
    58: "Bearer capability not presently available",
    63: "Service or option not available, unspecified",
    65: "Bearer capability not implemented", 70: "Only restricted digital information available",
    79: "Service or option not implemented, unspecified", 87: "User not member of CUG",
    88: "Incompatible destination", 102: "Recovery on timer expiry", 111: "Protocol error",
    127: "Interworking, unspecified",
}  # fmt: skip

_VISUAL_SEPARATORS = re.compile(r"[-.()\s]")
_GLOBAL_NUMBER = re.compile(r"\+[0-9]+")


def status_for_q850(cause: int, overrides: Mapping[int, int] | None = None) -> int:
    """The SIP status for an ISUP release cause (RFC 3398 §7.2.4.1); by Q.850 class for the
    causes the table leaves out: 480 for 1-31, 503 for 34-63, 501 for 65-79, 500 otherwise."""
    if overrides and cause in overrides:
        return overrides[cause]
    if cause in STATUS_FOR_Q850:
        return STATUS_FOR_Q850[cause]
    if 1 <= cause <= 31:
        return 480
    if 34 <= cause <= 63:
        return 503
    if 65 <= cause <= 79:
        return 501
    return 500


def q850_for_status(status: int, overrides: Mapping[int, int] | None = None) -> int | None:
    """The ISUP cause for a SIP final status (RFC 3398 §8.2.6.1); None for a 2xx, a 3xx
    (followed, not mapped) and 487 (the answer to our own CANCEL). Other codes by class: 4xx
    127, 5xx 41, 6xx 21."""
    if overrides and status in overrides:
        return overrides[status]
    if status < 400 or status == 487:
        return None
    if status in Q850_FOR_STATUS:
        return Q850_FOR_STATUS[status]
    return 127 if status < 500 else 41 if status < 600 else 21


def q850_reason(cause: int) -> str:
    """A ``Reason`` header value for ``cause`` (RFC 3326)."""
    text = CAUSE_TEXT.get(cause)
    return f'Q.850;cause={cause};text="{text}"' if text else f"Q.850;cause={cause}"


def normalize_number(number: str, *, context: str) -> str:
    """``number`` read as RFC 3966 reads a telephone-subscriber: visual separators (``-.()``
    and blanks) removed; a global number (``+`` digits) stays as it is; a local number in a
    global context (``context`` = ``+`` digits, its ``phone-context``) becomes that context's
    digits followed by its own. Anything else (a local number without a global context, a
    short code in one that is not, text) is returned without separators, unchanged otherwise.
    A national trunk prefix ("0" in "030 ...") is a dial plan's business, not RFC 3966's: a
    local number never has one, and none is stripped here."""
    bare = _VISUAL_SEPARATORS.sub("", number)
    if _GLOBAL_NUMBER.fullmatch(bare):
        return bare
    prefix = _VISUAL_SEPARATORS.sub("", context)
    if _GLOBAL_NUMBER.fullmatch(prefix) and bare.isdigit():
        return prefix + bare
    return bare


@attrs.frozen
class PstnConfig:
    """``[plugins.pstn]``: entries that replace RFC 3398's (docs/configuration.md)."""

    q850_for_status: Mapping[str, int] = attrs.field(factory=dict)
    status_for_q850: Mapping[str, int] = attrs.field(factory=dict)

    def __attrs_post_init__(self) -> None:
        # structure() reports a ValueError as a config error of this table; say which key.
        for key, value in self.q850_for_status.items():
            if not (key.isdigit() and 400 <= int(key) <= 699):
                raise ValueError(f"q850_for_status: {key!r} is not a SIP status 400-699")
            if not (isinstance(value, int) and 1 <= value <= 127):
                raise ValueError(f"q850_for_status: {key} = {value!r}: expected a cause 1-127")
        for key, value in self.status_for_q850.items():
            if not (key.isdigit() and 1 <= int(key) <= 127):
                raise ValueError(f"status_for_q850: {key!r} is not a Q.850 cause 1-127")
            if not (isinstance(value, int) and 400 <= value <= 699):
                raise ValueError(f"status_for_q850: {key} = {value!r}: expected a status 400-699")


@attrs.define
class Rfc3398:
    """The ``rfc3398`` interworking, with the operator's overrides."""

    q850_overrides: Mapping[int, int] = attrs.field(factory=dict)
    status_overrides: Mapping[int, int] = attrs.field(factory=dict)
    name: str = NAME

    def normalize_number(self, number: str, *, context: str) -> str:
        return normalize_number(number, context=context)

    def sip_status_for_q850(self, cause: int) -> int:
        return status_for_q850(cause, self.status_overrides)

    def q850_for_sip_status(self, status: int) -> int | None:
        return q850_for_status(status, self.q850_overrides)


@hookimpl
def gateway_plugin_config() -> type:
    return PstnConfig


@hookimpl
def gateway_register_interworking(registry: Registry[Any], config: PstnConfig | None) -> None:
    config = config if config is not None else PstnConfig()
    registry.add(
        NAME,
        Rfc3398(
            q850_overrides={int(k): v for k, v in config.q850_for_status.items()},
            status_overrides={int(k): v for k, v in config.status_for_q850.items()},
        ),
    )


if TYPE_CHECKING:
    # mypy checks that the class satisfies the interface it is registered as.
    def _conforms(interworking: Rfc3398) -> None:
        _interworking: Interworking = interworking
