"""RFC 5057 §5.1's table of what a failure response inside a dialog ends (gateway.core.sip.usages),
every (method, status) pair a B2BUA meets checked against it."""

from __future__ import annotations

import pytest

from gateway.core.sip.usages import Effect, dialog_lost, ends_session, response_effect, usage_of

METHODS = ("INVITE", "UPDATE", "INFO", "MESSAGE", "OPTIONS", "BYE", "PRACK", "NOTIFY", "REFER")
OPTIONAL = ("INFO", "MESSAGE", "OPTIONS", "NOTIFY")  # the session does without them
SESSION = ("INVITE", "UPDATE", "PRACK", "BYE")  # the session's own requests


@pytest.mark.parametrize("status", [404, 410, 416, 482, 485, 502, 604])
@pytest.mark.parametrize("method", METHODS)
def test_a_broken_target_or_route_ends_the_whole_dialog(method: str, status: int) -> None:
    assert response_effect(method, status) is Effect.DIALOG
    # ... but the gateway ends no call for it (test_only_481_or_408_ends_the_call).
    assert not ends_session(method, status)
    assert dialog_lost(method, status)


def test_484_ends_the_dialog_except_to_a_refer() -> None:
    assert response_effect("INFO", 484) is Effect.DIALOG
    assert response_effect("REFER", 484) is Effect.TRANSACTION  # a Refer-To a PBX cannot dial


@pytest.mark.parametrize("status", [408, 480, 481])
@pytest.mark.parametrize("method", METHODS)
def test_481_408_and_480_end_the_usage_of_the_request(method: str, status: int) -> None:
    assert response_effect(method, status) is Effect.USAGE
    # ... which is the call's own for every request but a subscription's; a 480 ends no call
    # (test_only_481_or_408_ends_the_call).
    ends = method not in ("NOTIFY", "REFER") and status != 480
    assert ends_session(method, status) is ends
    assert dialog_lost(method, status) is (status == 481)  # 408, 480: the peer may be there


@pytest.mark.parametrize(
    ("method", "status", "effect"),
    [
        ("INVITE", 405, Effect.USAGE),
        ("NOTIFY", 405, Effect.USAGE),
        ("SUBSCRIBE", 405, Effect.USAGE),
        ("INFO", 405, Effect.TRANSACTION),
        ("NOTIFY", 489, Effect.USAGE),
        ("SUBSCRIBE", 489, Effect.USAGE),
        ("INFO", 489, Effect.TRANSACTION),
    ],
)
def test_405_and_489_end_only_the_usage_their_request_holds(
    method: str, status: int, effect: Effect
) -> None:
    assert response_effect(method, status) is effect


TRANSACTION_ONLY = (
    *(200, 202, 300, 302, 400, 401, 403, 406, 407, 413, 415, 420, 422, 423, 428, 483, 486, 487),
    *(488, 491, 493, 494, 500, 501, 503, 504, 505, 513, 580, 600, 603, 606, 699),
)


@pytest.mark.parametrize("status", TRANSACTION_ONLY)
@pytest.mark.parametrize("method", METHODS)
def test_everything_else_fails_only_the_transaction(method: str, status: int) -> None:
    """Re-INVITE glare (491) and a refused offer (488, 500) keep the session (RFC 3261 §14.1)."""
    assert response_effect(method, status) is Effect.TRANSACTION
    assert not ends_session(method, status)
    assert not dialog_lost(method, status)


def test_subscription_requests_belong_to_their_subscription() -> None:
    assert [usage_of(m) for m in ("NOTIFY", "SUBSCRIBE", "REFER")] == ["subscription"] * 3
    assert {usage_of(m) for m in ("INVITE", "UPDATE", "INFO", "MESSAGE", "BYE")} == {"invite"}


@pytest.mark.parametrize("status", [404, 405, 410, 416, 480, 482, 484, 485, 489, 502, 604])
@pytest.mark.parametrize("method", OPTIONAL + SESSION)
def test_only_481_or_408_ends_the_call(method: str, status: int) -> None:
    """A request of the session, a re-INVITE or refresh as much as an INFO, ends the call on RFC
    3261 §12.2.1.2's pair only (481: no dialog at the peer; 408 or no answer: no peer), a NOTIFY
    never (its usage is a subscription). The table's other endings pass on to the requester and
    the call goes on: §14.1 keeps the session after any other failed re-INVITE, and deployed
    agents answer 404 or 480 for reasons that say nothing about the session (Asterisk answers
    an in-dialog MESSAGE 404 while its session has no channel)."""
    assert not ends_session(method, status)
    assert ends_session(method, 481) is (method != "NOTIFY")
    assert ends_session(method, 408) is (method != "NOTIFY")


# -- [sip] in_dialog_failures = "strict": RFC 5057 §5.1's table as it stands -------------------


@pytest.mark.parametrize("status", [404, 410, 416, 480, 482, 483, 484, 485, 502, 604])
@pytest.mark.parametrize("method", OPTIONAL + SESSION)
def test_strict_ends_the_call_on_every_ending_of_the_table(method: str, status: int) -> None:
    """Read strictly, every status that ends the dialog or the invite usage ends the call, 483
    too (§5.1: unless retried with a larger Max-Forwards, which the gateway never does); a
    NOTIFY's never does (its usage is a subscription)."""
    assert ends_session(method, status, strict=True) is (method != "NOTIFY")


def test_strict_ends_the_call_on_405_to_a_reinvite_only() -> None:
    """405 ends the usage its request holds (§5.1): a re-INVITE's, not an INFO's."""
    assert ends_session("INVITE", 405, strict=True)
    assert not ends_session("INFO", 405, strict=True)
    assert not ends_session("UPDATE", 405, strict=True)


@pytest.mark.parametrize("status", [s for s in TRANSACTION_ONLY if s != 483])
@pytest.mark.parametrize("method", METHODS)
def test_strict_keeps_the_call_on_transaction_failures(method: str, status: int) -> None:
    """Glare (491), a refused offer (488, 500), a challenge ... fail the request only, strict or
    not (RFC 3261 §14.1)."""
    assert not ends_session(method, status, strict=True)


def test_strict_reads_483_as_a_broken_route() -> None:
    """§5.1: 483 destroys the dialog as 482 does when the request is not retried with a larger
    Max-Forwards (the gateway never retries): read strictly, the peer that answered it gets no
    BYE along the same route, which would run out of hops the same way; lenient, a 483 ends
    nothing and the table keeps it a transaction failure."""
    assert dialog_lost("INVITE", 483, strict=True)
    assert dialog_lost("INFO", 483, strict=True)
    assert not dialog_lost("INVITE", 483)
    assert not dialog_lost("INVITE", 480, strict=True)  # the peer may be there: it gets a BYE


@pytest.mark.parametrize("method", ["NOTIFY", "REFER", "SUBSCRIBE"])
def test_strict_leaves_subscriptions_alone(method: str) -> None:
    assert not any(ends_session(method, s, strict=True) for s in (404, 481, 483, 502, 604))
