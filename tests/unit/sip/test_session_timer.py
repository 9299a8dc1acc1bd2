"""Session timers (RFC 4028): header values, the UAS's choice (§9, Table 2), the UAC's reading
of a 2xx and a 422 (§7), and a leg's deadlines (§10)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.core.sip.errors import RemoteSipError
from gateway.core.sip.message import Headers
from gateway.core.sip.parser import parse_message_untrusted
from gateway.core.sip.session_timer import (
    MAX_INTERVAL,
    IntervalTooSmall,
    LegTimer,
    SessionExpires,
    UasAnswer,
    allows_update,
    answer_as_uas,
    expires_in_2xx,
    leg_timer,
    min_se_of_422,
    parse_min_se,
    parse_session_expires,
    request_headers,
    supports_timer,
)


def headers(*pairs: tuple[str, str]) -> Headers:
    return Headers.of(list(pairs))


def uas(*pairs: tuple[str, str], wanted: int = 1800, min_se: int = 90, can_refresh: bool = True):
    return answer_as_uas(headers(*pairs), wanted=wanted, min_se=min_se, can_refresh=can_refresh)


# -- header values (§4, §5) ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1800", SessionExpires(1800)),
        ("4000;refresher=uac", SessionExpires(4000, "uac")),  # the example of RFC 4028 §4
        ("  90 ; refresher = UAS ", SessionExpires(90, "uas")),
        ("600;foo=bar;refresher=uas", SessionExpires(600, "uas")),
        ("600;foo", SessionExpires(600)),
        ("99999999999"[:10], SessionExpires(MAX_INTERVAL)),  # bounded, not refused
    ],
)
def test_session_expires_values(value: str, expected: SessionExpires) -> None:
    assert parse_session_expires(value) == expected


@pytest.mark.parametrize(
    "value", ["", "abc", "-5", "1.5", "0", "12345678901", "90;refresher=proxy", "٣٠٠"]
)
def test_unreadable_session_expires_is_a_400(value: str) -> None:
    with pytest.raises(RemoteSipError) as caught:
        parse_session_expires(value)
    assert caught.value.status == 400
    assert "Session-Expires" in caught.value.reason


def test_min_se_values() -> None:
    assert parse_min_se("90") == 90
    assert parse_min_se("3600;lr") == 3600
    with pytest.raises(RemoteSipError):
        parse_min_se("soon")


def test_session_expires_is_written_back_as_read() -> None:
    assert str(SessionExpires(1800, "uac")) == "1800;refresher=uac"
    assert str(SessionExpires(90)) == "90"


def test_the_compact_form_is_read() -> None:
    raw = (
        b"UPDATE sip:gw@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.2;branch=z9hG4bK1\r\n"
        b"Max-Forwards: 70\r\nFrom: <sip:a@192.0.2.2>;tag=1\r\nTo: <sip:gw@192.0.2.1>;tag=2\r\n"
        b"Call-ID: c1\r\nCSeq: 2 UPDATE\r\nk: timer\r\nx: 300;refresher=uac\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    message = parse_message_untrusted(raw)
    answer = answer_as_uas(message.headers, wanted=1800, min_se=90, can_refresh=True)
    assert answer == UasAnswer(SessionExpires(300, "uac"), require=True)


def test_support_and_update_are_read_from_option_tags_and_allow() -> None:
    assert supports_timer(headers(("Supported", "100rel, Timer")))
    assert supports_timer(headers(("Require", "timer")))
    assert not supports_timer(headers(("Supported", "100rel, timers")))
    assert allows_update(headers(("Allow", "INVITE, ACK"), ("Allow", "BYE, update")))
    assert not allows_update(headers(("Allow", "INVITE, ACK, BYE, UPDATES")))
    assert not allows_update(headers())


# -- the UAS (§9) ------------------------------------------------------------------------------


def test_table_2_uac_without_support_makes_the_uas_refresh() -> None:
    # A Session-Expires a proxy put in (no Supported: timer): refresher uas, no Require.
    assert uas(("Session-Expires", "1800")) == UasAnswer(SessionExpires(1800, "uas"), False)


def test_table_2_uac_with_support_and_no_refresher_refreshes_itself() -> None:
    answer = uas(("Supported", "timer"), ("Session-Expires", "1800"))
    assert answer == UasAnswer(SessionExpires(1800, "uac"), require=True)
    assert answer.headers() == [
        ("Session-Expires", "1800;refresher=uac"),
        ("Require", "timer"),
    ]
    assert not answer.we_refresh


@pytest.mark.parametrize("refresher", ["uac", "uas"])
def test_table_2_the_requested_refresher_is_kept(refresher: str) -> None:
    answer = uas(("Supported", "timer"), ("Session-Expires", f"1800;refresher={refresher}"))
    assert answer == UasAnswer(SessionExpires(1800, refresher), require=True)
    assert answer.we_refresh is (refresher == "uas")


def test_the_uas_lowers_a_long_interval_to_its_own_but_not_below_min_se() -> None:
    asked = (("Supported", "timer"), ("Session-Expires", "7200"))
    assert uas(*asked, wanted=1800).expires == SessionExpires(1800, "uac")
    with_floor = (*asked, ("Min-SE", "3600"))
    assert uas(*with_floor, wanted=1800).expires == SessionExpires(3600, "uac")


def test_the_uas_never_raises_an_interval_it_accepts() -> None:
    assert uas(("Supported", "timer"), ("Session-Expires", "120"), wanted=1800).expires == (
        SessionExpires(120, "uac")
    )


def test_too_small_an_interval_from_a_uac_with_support_gets_422_with_our_min_se() -> None:
    assert uas(("Supported", "timer"), ("Session-Expires", "100"), min_se=300) == (
        IntervalTooSmall(300)
    )
    # The request's own Min-SE, if larger, is what it must ask with next (§9 keeps the larger).
    assert uas(
        ("Supported", "timer"), ("Session-Expires", "100"), ("Min-SE", "400"), min_se=300
    ) == IntervalTooSmall(400)


def test_too_small_an_interval_from_a_uac_without_support_is_raised_instead() -> None:
    # Errata 1687: a 422 to a UAC that does not know session timers would only fail the call.
    assert uas(("Session-Expires", "100"), min_se=300) == UasAnswer(
        SessionExpires(300, "uas"), require=False
    )


def test_without_a_session_expires_the_uas_asks_for_its_own_interval() -> None:
    assert uas(("Supported", "timer"), wanted=1800) == UasAnswer(
        SessionExpires(1800, "uac"), require=True
    )
    # A UAC without support can only be refreshed by us.
    assert uas(wanted=1800) == UasAnswer(SessionExpires(1800, "uas"), require=False)
    assert uas(("Min-SE", "2000"), ("Supported", "timer"), wanted=1800).expires == (
        SessionExpires(2000, "uac")
    )


def test_with_timers_off_only_the_requesters_own_timer_is_honoured() -> None:
    assert uas(("Supported", "timer"), wanted=0) == UasAnswer(None, require=False)
    assert uas(("Supported", "timer"), ("Session-Expires", "600"), wanted=0).expires == (
        SessionExpires(600, "uac")
    )


def test_a_peer_without_update_is_never_refreshed_by_us() -> None:
    # We would have to refresh (Table 2 says uas) but refresh only with UPDATE: no timer.
    for asked in [
        (("Supported", "timer"), ("Session-Expires", "1800;refresher=uas")),
        (("Session-Expires", "1800"),),
        (),
    ]:
        answer = uas(*asked, can_refresh=False)
        assert answer == UasAnswer(None, require=False)
        assert answer.headers() == []
    # ... while the UAC refreshing itself needs nothing from us.
    answer = uas(("Supported", "timer"), ("Session-Expires", "600"), can_refresh=False)
    assert answer.expires == SessionExpires(600, "uac")


@pytest.mark.parametrize(
    "pairs",
    [(("Session-Expires", "soon"),), (("Session-Expires", "600"), ("Min-SE", "x1"))],
)
def test_an_unreadable_request_is_a_400(pairs: tuple[tuple[str, str], ...]) -> None:
    with pytest.raises(RemoteSipError):
        uas(*pairs)


@given(
    asked=st.one_of(st.none(), st.integers(1, 10**6)),
    floor=st.one_of(st.none(), st.integers(0, 10**6)),
    refresher=st.sampled_from([None, "uac", "uas"]),
    supported=st.booleans(),
    wanted=st.sampled_from([0, 90, 1800, 7200]),
    min_se=st.sampled_from([90, 300, 1800]),
    can_refresh=st.booleans(),
)
def test_any_answer_keeps_rfc_4028s_bounds(
    asked: int | None,
    floor: int | None,
    refresher: str | None,
    supported: bool,
    wanted: int,
    min_se: int,
    can_refresh: bool,
) -> None:
    pairs: list[tuple[str, str]] = [("Supported", "timer")] if supported else []
    if asked is not None:
        pairs.append(("Session-Expires", str(SessionExpires(asked, refresher))))
    if floor is not None:
        pairs.append(("Min-SE", str(floor)))
    answer = uas(*pairs, wanted=wanted, min_se=min_se, can_refresh=can_refresh)
    if isinstance(answer, IntervalTooSmall):
        assert supported and asked is not None and asked < min_se <= answer.min_se
        return
    if answer.expires is None:
        return
    seconds = answer.expires.seconds
    floor = min(floor or 0, MAX_INTERVAL)  # a larger Min-SE reads as a week
    assert seconds >= max(90, min_se, floor)  # never below anyone's minimum
    if asked is not None and asked >= max(min_se, floor, 90):
        assert seconds <= asked  # never above what was asked for, once that was acceptable
    assert answer.expires.refresher in ("uac", "uas")
    if not supported:
        assert answer.expires.refresher == "uas" and not answer.require
    elif refresher is not None and asked is not None:
        assert answer.expires.refresher == refresher
    if answer.expires.refresher == "uas":
        assert can_refresh


# -- the UAC (§7) ------------------------------------------------------------------------------


def test_request_headers_ask_for_an_interval_and_a_refresher() -> None:
    assert request_headers(1800, refresher="uas", min_se=90) == [
        ("Session-Expires", "1800;refresher=uas"),
        ("Min-SE", "90"),
    ]


def test_a_2xx_sets_the_timer_or_none() -> None:
    assert expires_in_2xx(headers(("Session-Expires", "900;refresher=uas"))) == (
        SessionExpires(900, "uas")
    )
    assert expires_in_2xx(headers()) is None  # §7.2: no session expiration
    assert expires_in_2xx(headers(("Session-Expires", "never"))) is None  # cannot refuse a 2xx
    # No refresher parameter in a 2xx: the UAC refreshes.
    assert expires_in_2xx(headers(("Session-Expires", "900"))) == SessionExpires(900, "uac")


def test_a_422_says_what_to_ask_for_next() -> None:
    assert min_se_of_422(headers(("Min-SE", "1200"))) == 1200
    assert min_se_of_422(headers(("Min-SE", "10"))) == 90
    assert min_se_of_422(headers()) is None
    assert min_se_of_422(headers(("Min-SE", "lots"))) is None


# -- a leg's deadlines (§10) ----------------------------------------------------------------------


def test_who_refreshes_follows_the_refresher_and_our_role() -> None:
    assert leg_timer(SessionExpires(600, "uac"), we_are_uac=True, now=0.0).we_refresh  # type: ignore[union-attr]
    assert not leg_timer(SessionExpires(600, "uac"), we_are_uac=False, now=0.0).we_refresh  # type: ignore[union-attr]
    assert leg_timer(SessionExpires(600, "uas"), we_are_uac=False, now=0.0).we_refresh  # type: ignore[union-attr]
    assert leg_timer(None, we_are_uac=True, now=0.0) is None


def test_the_refresher_refreshes_at_half_the_interval() -> None:
    timer = LegTimer(1800, we_refresh=True, refreshed_at=100.0)
    assert timer.due == 1000.0
    timer.refreshing = True
    assert timer.due == math.inf


def test_the_other_side_gives_up_before_the_expiry() -> None:
    # min(32 s, interval / 3) before it: 32 s for 1800, 30 s for 90.
    assert LegTimer(1800, we_refresh=False, refreshed_at=0.0).due == 1768.0
    assert LegTimer(90, we_refresh=False, refreshed_at=0.0).due == 60.0


def test_a_refresh_that_could_not_be_sent_is_tried_again_halfway_to_the_expiry() -> None:
    timer = LegTimer(1800, we_refresh=True, refreshed_at=0.0, refreshing=True)
    timer.refresh_failed(900.0)
    assert timer.due == 1350.0
    timer.refresh_failed(1796.0)  # 4 s left: no time for another try
    assert timer.due == 1800.0 == timer.expires_at
