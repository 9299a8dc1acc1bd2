"""The ``pstn`` plugin's ``rfc3398`` interworking: RFC 3398's cause tables as specs/pstn.md §1-2
copies them (known answers, both directions), the class fallbacks, the operator's overrides, RFC
3966 context reading, and its registration and settings."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from gateway.core.config import ConfigError, from_mapping
from gateway.core.plugins import load_plugins
from gateway.plugins.pstn import rfc3398
from gateway.plugins.pstn.rfc3398 import (
    Rfc3398,
    normalize_number,
    q850_for_status,
    q850_reason,
    status_for_q850,
)

ROOT = Path(__file__).parents[3]


@pytest.mark.parametrize(
    ("cause", "status"),
    [
        (1, 404),
        (3, 404),
        (17, 486),
        (18, 408),
        (19, 480),
        (21, 403),
        (22, 410),
        (27, 502),
        (28, 484),
        (29, 501),  # printed as 510 in the RFC, a typo (specs/pstn.md §1)
        (31, 480),
        (34, 503),
        (65, 488),
        (102, 504),
        (111, 500),
        (127, 500),
        # not in the table: by Q.850 class
        (5, 480),
        (44, 503),
        (69, 501),
        (95, 500),
    ],
)
def test_isup_causes_to_sip_status(cause: int, status: int) -> None:
    assert status_for_q850(cause) == status


@pytest.mark.parametrize(
    ("status", "cause"),
    [
        (400, 41),
        (401, 21),
        (403, 21),
        (404, 1),
        (405, 63),
        (408, 102),
        (410, 22),
        (480, 18),
        (481, 41),
        (482, 25),
        (484, 28),
        (485, 1),
        (486, 17),
        (488, 127),
        (500, 41),
        (501, 79),
        (502, 38),
        (503, 41),
        (504, 102),
        (600, 17),
        (603, 21),
        (604, 1),
        # not in the table: by class
        (422, 127),
        (580, 41),
        (699, 21),
        # none: a success, a redirect (followed, not mapped), our own CANCEL's answer
        (200, None),
        (302, None),
        (487, None),
    ],
)
def test_sip_status_to_isup_causes(status: int, cause: int | None) -> None:
    assert q850_for_status(status) == cause


def test_overrides_replace_single_entries() -> None:
    interworking = Rfc3398(q850_overrides={480: 20}, status_overrides={17: 600})
    assert interworking.q850_for_sip_status(480) == 20
    assert interworking.q850_for_sip_status(486) == 17  # the rest stays RFC 3398's
    assert interworking.sip_status_for_q850(17) == 600
    assert interworking.sip_status_for_q850(1) == 404
    assert interworking.name == "rfc3398"


def test_reason_values_name_the_cause() -> None:
    assert q850_reason(17) == 'Q.850;cause=17;text="User busy"'
    assert q850_reason(99) == "Q.850;cause=99"


@pytest.mark.parametrize(
    ("number", "context", "normalized"),
    [
        ("+49 30 123456", "", "+4930123456"),  # global: separators dropped
        ("+1-212-555-7042", "+49", "+12125557042"),
        ("7042", "+1-212-555", "+12125557042"),  # RFC 3966 §5.1.5 style local number
        ("(30) 123456", "+49", "+4930123456"),
        ("7042", "example.com", "7042"),  # a domain context: nothing to prepend
        ("*21#", "+49", "*21#"),  # a service code stays as it is
        ("alice", "+49", "alice"),
    ],
)
def test_numbers_are_read_in_their_rfc3966_context(
    number: str, context: str, normalized: str
) -> None:
    assert normalize_number(number, context=context) == normalized


def test_entry_point_and_registration() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["entry-points"]["voipgw.plugins"]["pstn"] == (
        "gateway.plugins.pstn.rfc3398"
    )
    config = from_mapping(
        {"plugins": {"enable": ["pstn"], "pstn": {"q850_for_status": {"480": 20}}}}
    )
    plugins = load_plugins(config, extra=[("pstn", rfc3398)], installed={})
    interworking = plugins.interworking.get("rfc3398")
    assert isinstance(interworking, Rfc3398)
    assert interworking.q850_for_sip_status(480) == 20
    assert plugins.registered_by("pstn") == {"interworking": ["rfc3398"]}


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"q850_for_status": {"200": 16}}, "'200' is not a SIP status 400-699"),
        ({"q850_for_status": {"480": 300}}, "expected a cause 1-127"),
        ({"status_for_q850": {"x": 486}}, "'x' is not a Q.850 cause 1-127"),
        ({"status_for_q850": {"17": 200}}, "expected a status 400-699"),
    ],
)
def test_bad_overrides_name_the_table_and_key(table: dict[str, object], message: str) -> None:
    config = from_mapping({"plugins": {"enable": ["pstn"], "pstn": table}})
    with pytest.raises(ConfigError, match=message) as refused:
        load_plugins(config, extra=[("pstn", rfc3398)], installed={})
    assert "plugins.pstn" in str(refused.value)
