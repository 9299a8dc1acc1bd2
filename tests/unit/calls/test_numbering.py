"""Numbering plans (gateway/core/calls/numbering.py): numbers read as E.164 and written for a
trunk, by the rules of specs/pstn.md §3, for the plans operators run: Germany (open plan,
national prefix 0, international 00), the NANP (1 and 011, 10-digit dialling), Italy (closed:
no national prefix), the UK."""

from __future__ import annotations

import pytest

from gateway.core.calls.numbering import (
    DEFAULT_SHORT_CODES,
    NumberingPlan,
    read_number,
    split_phone_context,
)

BERLIN = NumberingPlan(country_code="49", area_code="30")
NEW_YORK = NumberingPlan(
    country_code="1",
    area_code="212",
    international_prefix="011",
    national_prefix="1",
    national_number_length=10,
    short_codes=("911", "x11"),
)
ITALY = NumberingPlan(country_code="39", national_prefix="")
UK = NumberingPlan(country_code="44")
NO_PLAN = NumberingPlan()


@pytest.mark.parametrize(
    ("plan", "dialled", "e164"),
    [
        # Germany, in Berlin: national, international, subscriber, already E.164.
        (BERLIN, "030123456", "+4930123456"),
        (BERLIN, "08912345", "+498912345"),
        (BERLIN, "004420794601", "+4420794601"),
        (BERLIN, "123456", "+4930123456"),
        (BERLIN, "+4930123456", "+4930123456"),
        (BERLIN, "+12125551234", "+12125551234"),
        # NANP: 1 + 10 digits, 10 digits, 7 digits in the area, 011 international.
        (NEW_YORK, "12125551234", "+12125551234"),
        (NEW_YORK, "4155551234", "+14155551234"),
        (NEW_YORK, "5551234", "+12125551234"),
        (NEW_YORK, "011493012345", "+493012345"),
        # A closed plan: every number dialled in full, the 0 is part of it.
        (ITALY, "0612345678", "+390612345678"),
        (ITALY, "3331234567", "+393331234567"),
        (ITALY, "0044207946", "+44207946"),
        # No area code: a subscriber number cannot be read.
        (UK, "02079460000", "+442079460000"),
        (UK, "79460000", "79460000"),
    ],
)
def test_numbers_are_read_as_e164_by_the_plan(plan: NumberingPlan, dialled: str, e164: str) -> None:
    assert plan.to_e164(dialled) == e164


@pytest.mark.parametrize(
    ("plan", "number"),
    [
        (BERLIN, "112"),  # not +4930112: the carrier must see an emergency call
        (BERLIN, "110"),
        (BERLIN, "116117"),  # 116xxx, EU harmonised services
        (NEW_YORK, "911"),
        (NEW_YORK, "411"),  # x11 in this plan's short codes
        (UK, "999"),
        (BERLIN, "*21#"),  # a service code with * or #
        (BERLIN, "#31#0301234"),
    ],
)
def test_short_and_service_codes_stay_as_dialled(plan: NumberingPlan, number: str) -> None:
    assert plan.to_e164(number) == number


def test_a_short_code_pattern_matches_whole_numbers_only() -> None:
    assert BERLIN.is_short_code("116000")
    assert not BERLIN.is_short_code("1160001")  # longer: a subscriber number
    assert not BERLIN.is_short_code("11600")
    assert BERLIN.to_e164("1160001") == "+49301160001"


def test_without_a_country_code_numbers_stay_as_they_come() -> None:
    for number in ("030123456", "004930123456", "123456", "+4930123456", "112"):
        assert NO_PLAN.to_e164(number) == number


def test_a_global_phone_context_completes_a_local_number_even_without_a_plan() -> None:
    # RFC 3966 §5.1.5: the context's digits go in front of the local number.
    assert NO_PLAN.to_e164("7042", context="+4930") == "+49307042"
    assert BERLIN.to_e164("7042", context="+1212") == "+12127042"
    # A domain name says nothing about digits: the plan reads the number.
    assert NO_PLAN.to_e164("7042", context="example.com") == "7042"
    assert BERLIN.to_e164("7042", context="example.com") == "+49307042"
    # A short code stays one in any context.
    assert BERLIN.to_e164("112", context="+49") == "112"


def test_a_reading_past_fifteen_digits_or_an_empty_rest_is_not_made_up() -> None:
    assert BERLIN.to_e164("0" + "1" * 16) == "0" + "1" * 16
    assert BERLIN.to_e164("00") == "00"
    assert BERLIN.to_e164("0") == "0"


@pytest.mark.parametrize(
    ("plan", "number", "number_format", "written"),
    [
        (BERLIN, "+4930123456", "e164", "+4930123456"),
        (BERLIN, "+4930123456", "international", "004930123456"),
        (BERLIN, "+4930123456", "national", "030123456"),
        (BERLIN, "+4420794601", "national", "004420794601"),  # another country: international
        (NEW_YORK, "+12125551234", "national", "12125551234"),
        (NEW_YORK, "+493012345", "national", "011493012345"),
        (ITALY, "+390612345678", "national", "0612345678"),
        (BERLIN, "112", "national", "112"),  # not E.164: as it is
        (BERLIN, "030123", "international", "030123"),
        (NO_PLAN, "+4930123456", "national", "004930123456"),  # no country: international
    ],
)
def test_e164_numbers_are_written_in_the_trunks_format(
    plan: NumberingPlan, number: str, number_format: str, written: str
) -> None:
    assert plan.written_as(number, number_format) == written  # type: ignore[arg-type]


def test_reading_and_writing_back_gives_the_national_number_dialled() -> None:
    for dialled in ("030123456", "08912345", "0172123456"):
        assert BERLIN.written_as(BERLIN.to_e164(dialled), "national") == dialled


def test_read_number_takes_user_parts_as_they_come_in_uris() -> None:
    assert read_number(BERLIN, "030 12-34.56") == "+4930123456"
    assert read_number(BERLIN, "7042;phone-context=+49-30") == "+49307042"
    assert read_number(BERLIN, "(030) 123456;isub=12") == "+4930123456"
    assert read_number(BERLIN, "alice") == "alice"  # a user name is not a number
    assert read_number(BERLIN, "anonymous") == "anonymous"
    assert read_number(NO_PLAN, "030-123") == "030123"  # a dial string without separators


def test_split_phone_context() -> None:
    assert split_phone_context("7042;phone-context=+49-30") == ("7042", "+4930")
    assert split_phone_context("7042;Phone-Context=example.com;foo=1") == ("7042", "example.com")
    assert split_phone_context("+49 30 123") == ("+4930123", None)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"country_code": "049"}, "country_code: expected 1 to 3 digits"),
        ({"country_code": "1234"}, "country_code: expected 1 to 3 digits"),
        ({"country_code": "+49"}, "country_code: expected 1 to 3 digits"),
        ({"country_code": "49", "area_code": "030"}, "area_code: without the national prefix"),
        ({"area_code": "30"}, "area_code: a subscriber's area needs a country_code"),
        (
            {"country_code": "39", "national_prefix": "", "area_code": "6"},
            "area_code: a plan without a national prefix",
        ),
        ({"international_prefix": "0-0"}, "international_prefix: expected digits"),
        ({"national_prefix": "00"}, "national_prefix: must not start with the international"),
        ({"national_number_length": 16}, "national_number_length: expected 0 (none) to 15"),
        ({"short_codes": ("11a",)}, "short_codes: expected digits, x for any digit"),
    ],
)
def test_a_plan_that_cannot_be_read_is_refused_naming_its_key(
    fields: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        NumberingPlan(**fields)  # type: ignore[arg-type]


def test_the_default_short_codes_are_the_emergency_numbers_of_the_spec() -> None:
    for number in ("110", "112", "911", "999", "116006"):
        assert NumberingPlan(country_code="49", area_code="30").is_short_code(number)
    assert "116xxx" in DEFAULT_SHORT_CODES


def test_readings_that_cannot_be_a_number_are_not_made() -> None:
    assert BERLIN.to_e164("0000123") == "0000123"  # not +00123: no country code starts with 0
    assert BERLIN.to_e164("1") == "1"  # not +49301
    assert BERLIN.to_e164("11") == "11"
    assert NEW_YORK.to_e164("12") == "12"  # not +12
    assert BERLIN.to_e164("0123") == "0123"  # +49123: too short for anyone's number


def test_emergency_numbers_are_short_codes_and_can_be_set() -> None:
    assert BERLIN.is_emergency("112") and BERLIN.is_emergency("110")
    assert not BERLIN.is_emergency("116117")  # a service number, not an emergency one
    plan = NumberingPlan(country_code="49", short_codes=(), emergency_numbers=("112", "115"))
    assert plan.is_short_code("115") and plan.to_e164("115") == "115"
    assert not plan.is_emergency("110")
    with pytest.raises(ValueError, match="emergency_numbers: expected digits"):
        NumberingPlan(emergency_numbers=("11a",))
