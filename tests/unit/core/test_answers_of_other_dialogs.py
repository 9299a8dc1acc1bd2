"""ClientRequest._another_dialog and _nobodys_answer: which 2xx to an INVITE outside a dialog
the endpoint ACKs and BYEs itself rather than its owner.

RFC 3261 §13.2.2.4, §16.7: a forking proxy downstream may pass on the 2xx of several targets;
the owner keeps the first dialog, every other one is ACKed in its own right and BYEd once
(§15), its copies ACKed again. A first 2xx its owner was gone for is nobody's session: BYEd
once too. A re-INVITE's 2xx is its owner's, always.
"""

from __future__ import annotations

from typing import Any, cast

import attrs

from gateway.core.endpoint import MAX_LATE_ANSWERS, ClientRequest
from gateway.core.sip.message import Request, make_response
from gateway.core.sip.transaction import TransactionTable
from gateway.core.transport.flows import Flow
from tests.unit.sip.sip_builders import UDP_PEER, request, response

FLOW = cast(Flow, cast(Any, object()))  # never used by the methods under test


def sent(invite: Request) -> ClientRequest:
    table = TransactionTable()
    txn, _ = table.send_request(invite, peer=UDP_PEER, now=0.0)
    return ClientRequest(txn, FLOW)


def test_the_first_dialogs_2xx_is_the_owners_every_other_dialog_is_byed_once() -> None:
    invite = request(branch="z9hG4bKforks")
    client = sent(invite)
    first = response(invite, 200, to_tag="a")
    assert client._another_dialog(first) is None
    assert client._another_dialog(first) is None  # its copies: the owner re-ACKs
    assert client._another_dialog(response(invite, 200, to_tag="b")) is True
    assert client._another_dialog(response(invite, 200, to_tag="b")) is False  # ACK only
    assert client._another_dialog(response(invite, 200, to_tag="c")) is True
    assert client._another_dialog(response(invite, 486, to_tag="d")) is None


def test_a_proxy_inventing_tags_gets_a_bounded_number_of_byes() -> None:
    invite = request(branch="z9hG4bKmany")
    client = sent(invite)
    assert client._another_dialog(response(invite, 200, to_tag="first")) is None
    byes = [client._another_dialog(response(invite, 200, to_tag=f"t{n}")) for n in range(30)]
    assert byes == [True] * MAX_LATE_ANSWERS + [False] * (30 - MAX_LATE_ANSWERS)


def test_a_2xx_of_another_call_or_a_reinvites_is_left_to_the_owner() -> None:
    invite = request(branch="z9hG4bKother")
    client = sent(invite)
    assert client._another_dialog(response(invite, 200, to_tag="a")) is None
    stray = make_response(
        request(branch="z9hG4bKother", call_id="another@example.com"), 200, to_tag="b"
    )
    assert client._another_dialog(stray) is None  # no dialog of ours (§12.1.2)
    reinvite = request(branch="z9hG4bKre", to_tag="a", cseq=2)
    in_dialog = sent(reinvite)
    assert in_dialog._another_dialog(response(reinvite, 200, to_tag="a")) is None
    assert in_dialog._another_dialog(response(reinvite, 200, to_tag="b")) is None
    assert not in_dialog._nobodys_answer(response(reinvite, 200, to_tag="a"), delivered=False)


def test_a_first_2xx_nobody_took_is_byed_once_one_the_owner_took_never() -> None:
    invite = request(branch="z9hG4bKnobody")
    client = sent(invite)
    ok = response(invite, 200, to_tag="a")
    assert client._another_dialog(ok) is None
    assert client._nobodys_answer(ok, delivered=False)
    assert not client._nobodys_answer(ok, delivered=False)  # a copy: ACK only
    taken = sent(request(branch="z9hG4bKtaken"))
    ok = response(taken.request, 200, to_tag="a")
    assert not taken._nobodys_answer(ok, delivered=True)
    taken._owner_acked("a")
    assert not taken._nobodys_answer(ok, delivered=False)  # the owner ended since: it BYEd


def test_a_first_2xx_handed_over_but_never_acked_is_byed_once() -> None:
    """Handed to the owner is not held: a 2xx queued behind a refusal the call ended on was
    never read, and its copies, finding nobody, are the endpoint's to BYE (once)."""
    unread = sent(request(branch="z9hG4bKunread"))
    ok = response(unread.request, 200, to_tag="a")
    assert not unread._nobodys_answer(ok, delivered=True)
    assert unread._nobodys_answer(ok, delivered=False)
    assert not unread._nobodys_answer(ok, delivered=False)


def test_an_invite_without_sdp_is_a_late_offer() -> None:
    assert sent(request(branch="z9hG4bKlate"))._late_offer
    with_sdp = attrs.evolve(request(branch="z9hG4bKearly"), body=b"v=0\r\n")
    assert not sent(with_sdp)._late_offer


def test_an_invites_dialog_is_read_from_its_from_when_asked() -> None:
    """The Call-ID and From tag of an INVITE outside a dialog, from its headers as sent (not
    parsed for every INVITE: read when first asked). A re-INVITE has none; nor has an INVITE
    whose To holds "tag" outside a tag parameter is still outside a dialog."""
    assert sent(request(branch="z9hG4bKids"))._dialog_of == ("call-1@client.example.com", "ft1")
    assert sent(request(branch="z9hG4bKre", to_tag="tt"))._dialog_of is None
    assert sent(request(branch="z9hG4bKTAG", to_tag="TAG"))._dialog_of is None
    tagged_user = request(branch="z9hG4bKuser", uri="sip:tagline@gw.example.net")
    headers = tagged_user.headers.set("To", "<sip:tagline@gw.example.net;user=phone>")
    assert sent(tagged_user.with_headers(headers))._dialog_of is not None
    assert sent(request("BYE", branch="z9hG4bKbye", to_tag="tt"))._dialog_of is None
