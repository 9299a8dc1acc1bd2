"""Presence (RFC 3856) for the gateway's own accounts, on the in-memory network in virtual time:
bob (an account, a phone at 127.0.0.4) subscribes to alice's presence; alice's phone (at
127.0.0.3) publishes it (RFC 3903). Every Allow the gateway sends outside a dialog (OPTIONS,
405) lists PUBLISH exactly while presence is on; the log names a subscription's package."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from gateway.core.sip.dialog import Dialog
from gateway.core.sip.message import Request, Response
from gateway.core.status import CallStatistics, StatusView
from gateway.plugins.metrics.collect import render
from gateway.testing.sip_agent import SipAgent
from tests.component.calls.b2bua_env import GW, B2bua, eventually, next_within
from tests.component.calls.presence_subscriptions import (
    ALICE_URI,
    NS,
    basic,
    follow_virtual_time,
    next_document,
    pidf,
    publish,
    publish_request,
    start,
    subscribe,
    subscribe_request,
)


async def subscribe_dialog(phone: SipAgent) -> None:
    request = phone.new_request(
        "SUBSCRIBE", ALICE_URI, extra=[("Event", "dialog"), ("Expires", "600")]
    )
    sent, final = await phone.send_authenticated(request)
    assert final.status == 200, final.reason
    phone.add_dialog(Dialog.create_uac(sent, final))
    notify = (await phone.next_request("NOTIFY")).request
    assert notify.content_type == "application/dialog-info+xml"


def count(env: B2bua) -> int:
    assert env.gateway.dialog_events is not None
    return len(env.gateway.dialog_events)


async def test_bob_sees_alice_publish_modify_and_remove(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, bob = await start(nursery, tmp_path, voipgw_seed)
    dialog = await subscribe(bob)
    notify, first = await next_document(bob)
    # RFC 6665 §4.2.1.1: the current state at once; nothing published: neutral and closed.
    assert notify.call_id == dialog.call_id
    assert (notify.headers.get("Subscription-State") or "").startswith("active;expires=")
    assert first.get("entity") == ALICE_URI and basic(first) == ["closed"]

    published = await publish(env.alice, pidf("open", note="at my desk"))
    assert published.status == 200 and published.headers.get("Expires") == "600"
    etag = published.headers.get("SIP-ETag")
    assert etag
    notify, _ = await next_document(bob)
    assert notify.body == pidf("open", note="at my desk")  # passed on as published
    # bob also watches alice's calls: the metrics tell the packages apart.
    await subscribe_dialog(bob)
    view = StatusView(env.gateway, CallStatistics())
    status = view.sip()
    assert status.presence_subscriptions == 1 and status.presence_publications == 1
    assert status.dialog_subscriptions == 1
    scraped = render(view).decode()
    assert 'voipgw_subscriptions{package="presence"} 1\n' in scraped
    assert 'voipgw_subscriptions{package="dialog"} 1\n' in scraped
    assert "voipgw_presence_publications 1\n" in scraped

    # A refresh: a new tag, no NOTIFY (nothing changed).
    refreshed = await publish(env.alice, None, etag=etag)
    assert refreshed.status == 200
    new_etag = refreshed.headers.get("SIP-ETag")
    assert new_etag and new_etag != etag
    assert await next_within(bob, "NOTIFY", 5) is None
    # The old tag no longer matches (RFC 3903 §6 step 7); an unknown one neither.
    assert (await publish(env.alice, pidf("closed"), etag=etag)).status == 412
    assert (await publish(env.alice, pidf("closed"), etag="nonsense")).status == 412

    modified = await publish(env.alice, pidf("closed", note="gone home"), etag=new_etag)
    assert modified.status == 200
    _, document = await next_document(bob)
    assert basic(document) == ["closed"] and document.findtext(f".//{NS}note") == "gone home"

    removed = await publish(env.alice, None, etag=modified.headers.get("SIP-ETag"), expires=0)
    assert removed.status == 200 and removed.headers.get("Expires") == "0"
    _, document = await next_document(bob)
    assert basic(document) == ["closed"] and document.find(f"{NS}tuple[@id='gw']") is not None


async def test_publication_and_subscription_expire(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger="gateway.core.calls.dialog_events")
    env, bob = await start(nursery, tmp_path, voipgw_seed)
    follow_virtual_time(env)
    await subscribe(bob, expires=300)
    await next_document(bob)
    assert (await publish(env.alice, pidf("open"), expires=60)).status == 200
    _, document = await next_document(bob)
    assert basic(document) == ["open"]
    published = trio.current_time()
    # Not refreshed: forgotten after its 60 s, and bob is told (RFC 3903 §6).
    _, document = await next_document(bob, timeout=120)
    assert 60 <= trio.current_time() - published < 62
    assert basic(document) == ["closed"]
    # bob's subscription runs out in its turn (RFC 6665 §4.2.2).
    notify, _ = await next_document(bob, timeout=400)
    assert notify.headers.get("Subscription-State") == "terminated;reason=timeout"
    await eventually(lambda: count(env) == 0)
    # The log names the package: a presence subscription, not a dialog one.
    said = [r.getMessage() for r in caplog.records if "expired" in r.getMessage()]
    assert said == ["presence subscription of bob to alice expired"]


async def test_refusals(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, bob = await start(
        nursery, tmp_path, voipgw_seed, groups=[{"name": "g", "accounts": ["bob"]}]
    )

    async def status_of(request: Request, phone: SipAgent = bob) -> Response:
        return (await phone.send_authenticated(request))[1]

    # alice shares no group with bob: 403; oneself is always allowed.
    assert (await status_of(subscribe_request(bob))).status == 403
    await subscribe(bob, "bob")
    assert count(env) == 1
    xml_only = subscribe_request(bob, "bob")
    xml_only = xml_only.with_headers(xml_only.headers.set("Accept", "application/dialog-info+xml"))
    assert (await status_of(xml_only)).status == 406
    # PUBLISH for someone else, by URI or by entity: 403.
    assert (await publish(bob, pidf("open"), target="alice")).status == 403
    assert (await publish(bob, pidf("open", entity=ALICE_URI), target="bob")).status == 403
    brief = await publish(bob, pidf("open", entity="sip:bob@127.0.0.1"), target="bob", expires=5)
    assert brief.status == 423 and brief.headers.get("Min-Expires") == "60"
    bad_event = await publish(bob, pidf("open", entity="sip:bob@x"), target="bob", event="dialog")
    assert bad_event.status == 489 and bad_event.headers.get("Allow-Events") == "presence"
    as_text = await publish(bob, b"open", target="bob", content_type="text/plain")
    assert as_text.status == 415 and as_text.headers.get("Accept") == "application/pidf+xml"
    malformed = await publish(bob, b"<presence", target="bob")
    assert malformed.status == 400 and "well-formed" in malformed.reason
    assert (await publish(bob, None, target="bob")).status == 400  # initial without a body
    # No Expires: an hour (RFC 3903 §4.1: the compositor's choice).
    default = publish_request(bob, pidf("open", entity="sip:bob@127.0.0.1"), target="bob")
    default = default.with_headers(default.headers.remove("Expires"))
    hour = (await bob.send_authenticated(default))[1]
    assert hour.status == 200 and hour.headers.get("Expires") == "3600"
    # Not authenticated: challenged; a trunk: 403.
    unauthenticated = await (await bob.send(publish_request(bob, pidf("open")))).final()
    assert unauthenticated.status == 407
    trunk = await (await env.trunk.send(publish_request(env.trunk, pidf("open")))).final()
    assert trunk.status == 403
    # OPTIONS lists presence and PUBLISH.
    options = env.trunk.new_request("OPTIONS", "sip:127.0.0.1:5060")
    answer = await (await env.trunk.send(options, GW)).final()
    assert answer.headers.get_all("Allow-Events") == ("message-summary", "dialog", "presence")
    allow = answer.headers.get_all("Allow")
    assert "PUBLISH" in allow
    # A method we do not take outside a dialog: its 405 lists what OPTIONS does (RFC 3261
    # §20.5), PUBLISH included.
    info = env.trunk.new_request("INFO", "sip:127.0.0.1:5060")
    refused = await (await env.trunk.send(info, GW)).final()
    assert refused.status == 405 and refused.headers.get_all("Allow") == allow


async def test_all_accounts_needs_no_group(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    _, bob = await start(nursery, tmp_path, voipgw_seed, allow="all-accounts", groups=())
    await subscribe(bob)  # no group needed
    _, document = await next_document(bob)
    assert basic(document) == ["closed"]


async def test_off_by_default(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    _, bob = await start(nursery, tmp_path, voipgw_seed, allow="none")
    refused = (await bob.send_authenticated(subscribe_request(bob)))[1]
    assert refused.status == 489
    assert refused.headers.get_all("Allow-Events") == ("message-summary", "dialog")
    publish_refused = await (await bob.send(publish_request(bob, pidf("open")))).final()
    assert publish_refused.status == 405
    allow = publish_refused.headers.get_all("Allow")
    assert "PUBLISH" not in allow and "SUBSCRIBE" in allow
    options = bob.new_request("OPTIONS", "sip:127.0.0.1:5060")
    assert (await (await bob.send(options, GW)).final()).headers.get_all("Allow") == allow
