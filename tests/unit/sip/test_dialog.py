"""Dialogs (RFC 3261 §12, §13.2.2.4, §15)."""

from __future__ import annotations

import pytest

from gateway.core.sip.dialog import (
    Dialog,
    DialogId,
    DialogState,
    OutOfOrderRequest,
    contact_must_be_sips,
    creates_dialog,
    glare_wait,
    is_sips,
    uac_dialog_id,
    uas_dialog_id,
)
from gateway.core.sip.errors import LocalSipError, RemoteSipError
from gateway.core.sip.grammar import parse_name_addr_untrusted, parse_uri_untrusted
from gateway.core.sip.message import Request, Response, make_response
from gateway.core.sip.parser import parse_message_untrusted
from gateway.core.sip.serializer import serialize_message
from gateway.core.sip.via import make_via
from tests.unit.sip.sip_builders import request

VIA = make_via("UDP", "gw.example.net", 5060, branch="z9hG4bKnext")
OUR_CONTACT = parse_name_addr_untrusted("<sip:gw@gw.example.net;transport=udp>")


def answer(
    req: Request,
    status: int,
    *,
    to_tag: str | None = "callee",
    contact: str | None = "<sip:bob@192.0.2.20:5070>",
    record_routes: tuple[str, ...] = (),
) -> Response:
    extra = [("Record-Route", rr) for rr in record_routes]
    if contact is not None:
        extra.append(("Contact", contact))
    return make_response(req, status, to_tag=to_tag, extra=extra)


def reparse(req: Request) -> Request:
    """Serialize and parse again: what we build must be valid on the wire."""
    parsed = parse_message_untrusted(serialize_message(req))
    assert isinstance(parsed, Request)
    return parsed


def uac_dialog(**kwargs: object) -> tuple[Request, Dialog]:
    invite = request(cseq=10, from_tag="caller")
    ok = answer(invite, 200, **kwargs)  # type: ignore[arg-type]
    return invite, Dialog.create_uac(invite, ok)


def in_dialog_request(
    dialog: Dialog, method: str, cseq: int, *, contact: str | None = None
) -> Request:
    """A request the peer sends us in ``dialog``."""
    return request(
        method,
        branch=f"z9hG4bKpeer{cseq}",
        call_id=dialog.call_id,
        cseq=cseq,
        from_tag=dialog.remote_tag,
        to_tag=dialog.local_tag,
        contact=contact,
    )


# --- ids -----------------------------------------------------------------------------------------


def test_dialog_ids_from_both_sides() -> None:
    invite = request(from_tag="caller")
    ok = answer(invite, 200)
    assert uac_dialog_id(ok) == DialogId("call-1@client.example.com", "caller", "callee")
    bye = request("BYE", from_tag="callee", to_tag="caller")
    assert uas_dialog_id(bye) == DialogId("call-1@client.example.com", "caller", "callee")
    assert uas_dialog_id(request()) is None  # no To tag: not in a dialog


@pytest.mark.parametrize(
    ("call_id", "from_tag", "to_tag"),
    [
        ("call-1@client.example.com", "callee", "caller"),  # the dialog's own
        ("call-2@client.example.com", "callee", "caller"),
        ("call-1@client.example.com", "other", "caller"),
        ("call-1@client.example.com", "callee", "other"),
        ("call-1@client.example.com", "callee", None),  # no To tag: outside any dialog
        ("call-1@client.example.com", None, "caller"),  # an RFC 2543 peer's missing From tag
        ("call-1@client.example.com", "Callee", "caller"),  # tags compare case-sensitively
    ],
)
def test_holds_request_is_the_dialog_id_comparison(
    call_id: str, from_tag: str | None, to_tag: str | None
) -> None:
    # RFC 3261 §12.2.2: Call-ID, To tag (ours) and From tag (the peer's) name the dialog. The
    # call and the dialog both test a received request with holds_request: it must answer as
    # comparing the ids did, and receive_request must still refuse a request it does not hold.
    _, dialog = uac_dialog()
    bye = request("BYE", call_id=call_id, from_tag=from_tag, to_tag=to_tag)
    assert dialog.holds_request(bye) == (uas_dialog_id(bye) == dialog.id)
    if not dialog.holds_request(bye):
        with pytest.raises(LocalSipError, match="does not belong to this dialog"):
            dialog.receive_request(bye)
    _, rfc2543 = uac_dialog()
    rfc2543.remote_tag = None
    assert rfc2543.holds_request(bye) == (uas_dialog_id(bye) == rfc2543.id)


@pytest.mark.parametrize(
    ("status", "tag", "expected"),
    [(100, None, False), (180, None, False), (180, "t", True), (200, "t", True), (200, None, True)],
)
def test_creates_dialog(status: int, tag: str | None, expected: bool) -> None:
    invite = request()
    assert creates_dialog(make_response(invite, status, to_tag=tag)) is expected
    assert not creates_dialog(make_response(invite, 486, to_tag="t"))


# --- UAC -----------------------------------------------------------------------------------------


def test_uac_early_dialog_from_provisional_response() -> None:
    invite = request(cseq=10, from_tag="caller")
    ringing = answer(
        invite, 180, record_routes=("<sip:p2.example.net;lr>", "<sip:p1.example.net;lr>")
    )
    dialog = Dialog.create_uac(invite, ringing)
    assert dialog.state is DialogState.EARLY
    assert dialog.id == DialogId("call-1@client.example.com", "caller", "callee")
    # §12.1.2: the UAC reverses Record-Route.
    assert [str(r) for r in dialog.route_set] == [
        "<sip:p1.example.net;lr>",
        "<sip:p2.example.net;lr>",
    ]
    assert dialog.remote_target == parse_uri_untrusted("sip:bob@192.0.2.20:5070")
    assert dialog.local_seq == 10
    assert dialog.remote_seq is None
    assert str(dialog.local_uri) == "<sip:alice@client.example.com>"
    assert str(dialog.remote_uri) == "<sip:bob@gw.example.net>"
    assert not dialog.secure


def test_2xx_confirms_and_recomputes_the_route_set() -> None:
    invite = request(cseq=10, from_tag="caller")
    dialog = Dialog.create_uac(invite, answer(invite, 180, record_routes=("<sip:old;lr>",)))
    ok = answer(
        invite,
        200,
        contact="<sip:bob@192.0.2.21>",
        record_routes=("<sip:p2.example.net;lr>", "<sip:p1.example.net;lr>"),
    )
    dialog.receive_response(ok)
    assert dialog.state is DialogState.CONFIRMED
    assert [str(r.uri) for r in dialog.route_set] == [
        "sip:p1.example.net;lr",
        "sip:p2.example.net;lr",
    ]
    assert dialog.remote_target == parse_uri_untrusted("sip:bob@192.0.2.21")


def test_later_provisional_response_refreshes_the_early_target() -> None:
    invite = request(from_tag="caller")
    dialog = Dialog.create_uac(invite, answer(invite, 180, contact=None))
    assert dialog.remote_target == invite.uri  # no Contact: fall back to the Request-URI
    dialog.receive_response(answer(invite, 183, contact="<sip:bob@192.0.2.30>"))
    assert dialog.remote_target == parse_uri_untrusted("sip:bob@192.0.2.30")
    assert dialog.state is DialogState.EARLY


def test_non_2xx_final_response_ends_an_early_dialog() -> None:
    invite = request(from_tag="caller")
    dialog = Dialog.create_uac(invite, answer(invite, 180))
    dialog.receive_response(answer(invite, 486))
    assert dialog.state is DialogState.TERMINATED


def test_uac_dialog_straight_from_2xx() -> None:
    _, dialog = uac_dialog()
    assert dialog.state is DialogState.CONFIRMED


def test_uac_dialog_needs_a_dialog_creating_response() -> None:
    invite = request(from_tag="caller")
    with pytest.raises(LocalSipError):
        Dialog.create_uac(invite, make_response(invite, 180))  # no To tag
    with pytest.raises(LocalSipError):
        Dialog.create_uac(invite, answer(invite, 404))


def test_rfc2543_2xx_without_to_tag() -> None:
    invite = request(from_tag="caller")
    dialog = Dialog.create_uac(invite, answer(invite, 200, to_tag=None))
    assert dialog.remote_tag is None
    bye = reparse(dialog.create_request("BYE", via=VIA))
    assert bye.to.tag is None


def test_secure_flag_needs_sips_and_tls() -> None:
    invite = request(uri="sips:bob@gw.example.net", from_tag="caller", transport="TLS")
    assert Dialog.create_uac(invite, answer(invite, 200), over_tls=True).secure
    assert not Dialog.create_uac(invite, answer(invite, 200), over_tls=False).secure
    plain = request(from_tag="caller", transport="TLS")
    assert not Dialog.create_uac(plain, answer(plain, 200), over_tls=True).secure


# --- requests we send ----------------------------------------------------------------------------


def test_in_dialog_request_with_loose_routing() -> None:
    _, dialog = uac_dialog(record_routes=("<sip:p2.example.net;lr>", "<sip:p1.example.net;lr>"))
    bye = reparse(dialog.create_request("BYE", via=VIA))
    assert bye.method == "BYE"
    assert bye.uri == dialog.remote_target  # §12.2.1.1: loose routing keeps the remote target
    assert bye.headers.get_all("Route") == ("<sip:p1.example.net;lr>", "<sip:p2.example.net;lr>")
    assert bye.headers.get_all("Via") == (str(VIA),)
    assert (bye.cseq.number, bye.cseq.method) == (11, "BYE")  # INVITE was 10
    assert bye.call_id == dialog.call_id
    assert bye.from_.tag == "caller" and bye.to.tag == "callee"
    assert str(bye.from_.uri) == "sip:alice@client.example.com"
    assert str(bye.to.uri) == "sip:bob@gw.example.net"
    assert bye.max_forwards == 70
    assert bye.headers.get("Contact") is None
    assert dialog.local_seq == 11
    info = reparse(dialog.create_request("INFO", via=VIA))
    assert info.cseq.number == 12


def test_in_dialog_request_without_route_set() -> None:
    _, dialog = uac_dialog()
    req = dialog.create_request("OPTIONS", via=VIA)
    assert req.uri == parse_uri_untrusted("sip:bob@192.0.2.20:5070")
    assert req.headers.get("Route") is None
    assert dialog.next_hop_uri() == req.uri


def test_in_dialog_request_with_strict_router() -> None:
    # §12.2.1.1: first route without ;lr -> it becomes the Request-URI (minus the method
    # parameter), and the remote target is appended to Route.
    _, dialog = uac_dialog(
        record_routes=(
            "<sip:p2.example.net;lr>",
            "<sip:p1.example.net;method=INVITE;maddr=10.1.1.1>",
        )
    )
    req = reparse(dialog.create_request("BYE", via=VIA))
    assert req.uri == parse_uri_untrusted("sip:p1.example.net;maddr=10.1.1.1")
    assert req.headers.get_all("Route") == (
        "<sip:p2.example.net;lr>",
        "<sip:bob@192.0.2.20:5070>",
    )
    assert str(dialog.next_hop_uri()) == "sip:p1.example.net;method=INVITE;maddr=10.1.1.1"


def test_target_refresh_request_carries_our_contact_and_body() -> None:
    _, dialog = uac_dialog()
    reinvite = reparse(
        dialog.create_request(
            "INVITE",
            via=VIA,
            contact=OUR_CONTACT,
            extra=[("Supported", "timer"), ("session-expires", "1800")],
            body=b"v=0\r\n",
            content_type="application/sdp",
        )
    )
    assert reinvite.headers.get("Contact") == str(OUR_CONTACT)
    assert reinvite.headers.get("Session-Expires") == "1800"
    assert reinvite.content_type == "application/sdp"
    assert reinvite.body == b"v=0\r\n"


def test_ack_for_2xx_reuses_the_invite_cseq() -> None:
    invite, dialog = uac_dialog()
    ack = reparse(dialog.create_ack(invite.cseq.number, via=VIA))
    assert (ack.method, ack.cseq.number, ack.cseq.method) == ("ACK", 10, "ACK")
    assert dialog.local_seq == 10  # ACK does not consume a CSeq
    dialog.terminate()
    assert dialog.create_ack(10, via=VIA).method == "ACK"  # a late 2xx is still ACKed


def test_create_request_refuses_ack_cancel_and_terminated_dialogs() -> None:
    _, dialog = uac_dialog()
    for method in ("ACK", "CANCEL"):
        with pytest.raises(LocalSipError):
            dialog.create_request(method, via=VIA)
    dialog.terminate()
    with pytest.raises(LocalSipError, match="terminated"):
        dialog.create_request("BYE", via=VIA)


def test_local_cseq_stays_below_2_31() -> None:
    _, dialog = uac_dialog()
    dialog.local_seq = 2**31 - 2
    assert dialog.create_request("INFO", via=VIA).cseq.number == 2**31 - 1
    with pytest.raises(LocalSipError, match="exhausted"):
        dialog.create_request("INFO", via=VIA)


# --- UAS -----------------------------------------------------------------------------------------


def uas_dialog(status: int = 200) -> tuple[Request, Dialog]:
    invite = request(
        cseq=314,
        from_tag="caller",
        record_routes=("<sip:p1.example.net;lr>", "<sip:p2.example.net;lr>"),
        contact="<sip:alice@198.51.100.7:5062>",
    )
    resp = make_response(invite, status, to_tag="gw-tag", extra=[("Contact", str(OUR_CONTACT))])
    return invite, Dialog.create_uas(invite, resp)


def test_uas_dialog_from_request() -> None:
    _, dialog = uas_dialog()
    assert dialog.state is DialogState.CONFIRMED
    assert dialog.id == DialogId("call-1@client.example.com", "gw-tag", "caller")
    # §12.1.1: the UAS keeps Record-Route in order.
    assert [str(r) for r in dialog.route_set] == [
        "<sip:p1.example.net;lr>",
        "<sip:p2.example.net;lr>",
    ]
    assert dialog.remote_target == parse_uri_untrusted("sip:alice@198.51.100.7:5062")
    assert dialog.remote_seq == 314
    assert dialog.local_seq is None
    assert str(dialog.local_uri) == "<sip:bob@gw.example.net>"
    assert str(dialog.remote_uri) == "<sip:alice@client.example.com>"
    bye = reparse(dialog.create_request("BYE", via=VIA))
    assert bye.cseq.number == 1  # empty local CSeq: start anywhere (§8.1.1.5)
    assert bye.from_.tag == "gw-tag" and bye.to.tag == "caller"
    assert bye.headers.get_all("Route") == ("<sip:p1.example.net;lr>", "<sip:p2.example.net;lr>")


def test_uas_early_dialog_confirmed_by_our_2xx() -> None:
    invite, dialog = uas_dialog(183)
    assert dialog.state is DialogState.EARLY
    dialog.send_response(make_response(invite, 200, to_tag="gw-tag"))
    assert dialog.state is DialogState.CONFIRMED


def test_uas_early_dialog_ended_by_our_rejection() -> None:
    invite, dialog = uas_dialog(180)
    dialog.send_response(make_response(invite, 487, to_tag="gw-tag"))
    assert dialog.state is DialogState.TERMINATED


def test_uas_needs_contact_and_our_tag() -> None:
    invite = request(contact=None)
    with pytest.raises(RemoteSipError) as info:
        Dialog.create_uas(invite, make_response(invite, 200, to_tag="gw-tag"))
    assert info.value.status == 400
    with pytest.raises(LocalSipError):
        Dialog.create_uas(request(), make_response(request(), 200))


def test_rfc2543_request_without_from_tag() -> None:
    invite = request(from_tag=None)
    dialog = Dialog.create_uas(invite, make_response(invite, 200, to_tag="gw-tag"))
    assert dialog.remote_tag is None
    bye = reparse(dialog.create_request("BYE", via=VIA))
    assert bye.to.tag is None


# --- requests we receive -------------------------------------------------------------------------


def test_remote_cseq_order() -> None:
    _, dialog = uas_dialog()
    dialog.receive_request(in_dialog_request(dialog, "INFO", 315))
    assert dialog.remote_seq == 315
    dialog.receive_request(in_dialog_request(dialog, "INFO", 315))  # not lower: accepted
    with pytest.raises(OutOfOrderRequest) as info:
        dialog.receive_request(in_dialog_request(dialog, "INFO", 314))
    assert info.value.status == 500
    assert dialog.remote_seq == 315
    # ACK and CANCEL carry their INVITE's number and are not ordered.
    dialog.receive_request(in_dialog_request(dialog, "ACK", 314))
    assert dialog.remote_seq == 315


def test_first_request_from_the_callee_sets_the_remote_cseq() -> None:
    _, dialog = uac_dialog()
    assert dialog.remote_seq is None
    dialog.receive_request(in_dialog_request(dialog, "INFO", 7))
    assert dialog.remote_seq == 7


def test_target_refresh_on_received_reinvite_and_update_only() -> None:
    _, dialog = uas_dialog()
    dialog.receive_request(in_dialog_request(dialog, "INFO", 400, contact="<sip:x@192.0.2.99>"))
    assert dialog.remote_target == parse_uri_untrusted("sip:alice@198.51.100.7:5062")
    dialog.receive_request(in_dialog_request(dialog, "INVITE", 401, contact="<sip:a@192.0.2.50>"))
    assert dialog.remote_target == parse_uri_untrusted("sip:a@192.0.2.50")
    dialog.receive_request(in_dialog_request(dialog, "UPDATE", 402, contact="<sip:a@192.0.2.51>"))
    assert dialog.remote_target == parse_uri_untrusted("sip:a@192.0.2.51")
    dialog.receive_request(in_dialog_request(dialog, "INVITE", 403))  # no Contact: unchanged
    assert dialog.remote_target == parse_uri_untrusted("sip:a@192.0.2.51")


def test_request_of_another_dialog_is_refused() -> None:
    _, dialog = uas_dialog()
    stranger = request("BYE", call_id=dialog.call_id, from_tag="caller", to_tag="other")
    with pytest.raises(LocalSipError):
        dialog.receive_request(stranger)


def test_terminated_dialog_answers_481() -> None:
    _, dialog = uas_dialog()
    dialog.terminate()
    with pytest.raises(RemoteSipError) as info:
        dialog.receive_request(in_dialog_request(dialog, "INFO", 400))
    assert info.value.status == 481


# --- responses -----------------------------------------------------------------------------------


def test_2xx_to_reinvite_refreshes_target_but_not_routes() -> None:
    _, dialog = uac_dialog(record_routes=("<sip:p1.example.net;lr>",))
    reinvite = dialog.create_request("INVITE", via=VIA, contact=OUR_CONTACT)
    ok = answer(reinvite, 200, contact="<sip:bob@192.0.2.77>", record_routes=("<sip:x;lr>",))
    dialog.receive_response(ok)
    assert dialog.remote_target == parse_uri_untrusted("sip:bob@192.0.2.77")
    assert [str(r) for r in dialog.route_set] == ["<sip:p1.example.net;lr>"]


def test_failed_reinvite_keeps_the_dialog() -> None:
    _, dialog = uac_dialog()
    reinvite = dialog.create_request("INVITE", via=VIA)
    dialog.receive_response(answer(reinvite, 491))
    assert dialog.state is DialogState.CONFIRMED


@pytest.mark.parametrize("status", [408, 481])
def test_408_and_481_end_the_dialog(status: int) -> None:
    _, dialog = uac_dialog()
    info = dialog.create_request("INFO", via=VIA)
    dialog.receive_response(answer(info, status))
    assert dialog.state is DialogState.TERMINATED


def test_bye_ends_the_dialog_both_ways() -> None:
    _, ours = uac_dialog()
    bye = ours.create_request("BYE", via=VIA)
    ours.receive_response(answer(bye, 200))
    assert ours.state is DialogState.TERMINATED
    _, theirs = uas_dialog()
    their_bye = in_dialog_request(theirs, "BYE", 400)
    theirs.receive_request(their_bye)
    assert theirs.state is DialogState.CONFIRMED
    theirs.send_response(make_response(their_bye, 200))
    assert theirs.state is DialogState.TERMINATED


def test_response_of_another_dialog_is_refused() -> None:
    invite, dialog = uac_dialog()
    with pytest.raises(LocalSipError):
        dialog.receive_response(answer(invite, 200, to_tag="another-fork"))


def test_the_ack_for_a_2xx_nobody_holds_is_the_one_its_dialog_would_send() -> None:
    # §13.2.2.4: a 2xx whose call has gone is ACKed from the 2xx alone, exactly as the dialog
    # made from our INVITE and that 2xx would ACK it.
    rr = ("<sip:p2.example.com;lr>", "<sip:p1.example.com;lr>")
    invite = request(cseq=10, from_tag="caller")
    ok = answer(invite, 200, record_routes=rr)
    orphan = Dialog.from_our_2xx(ok)
    assert orphan is not None
    expected = Dialog.create_uac(invite, ok).create_ack(10, via=VIA)
    assert orphan.create_ack(10, via=VIA) == expected
    assert reparse(expected).uri == parse_uri_untrusted("sip:bob@192.0.2.20:5070")
    # Nothing to send it to without a Contact, or to match without the tags.
    assert Dialog.from_our_2xx(answer(invite, 200, contact=None)) is None
    assert Dialog.from_our_2xx(answer(invite, 200, to_tag=None)) is None


def test_the_wait_after_glare_follows_rfc_3261_section_14_1() -> None:
    # 2.1-4 s for the owner of the Call-ID, 0-2 s for the other side, in units of 10 ms.
    owner = {glare_wait(True, draw) for draw in range(1000)}
    other = {glare_wait(False, draw) for draw in range(1000)}
    assert min(owner) == 2.1 and max(owner) == 4.0 and len(owner) == 191
    assert min(other) == 0.0 and max(other) == 2.0 and len(other) == 201
    assert all(abs(round(wait * 100) - wait * 100) < 1e-9 for wait in owner | other)


def test_only_a_dialog_our_request_made_owns_its_call_id() -> None:
    assert uac_dialog()[1].owns_call_id
    assert not uas_dialog()[1].owns_call_id


@pytest.mark.parametrize(
    ("uri", "record_routes", "contact", "sips"),
    [
        # RFC 3261 §12.1.1: a SIPS Request-URI, else the top Record-Route, else (with no
        # Record-Route) the Contact decides whether our Contact must be SIPS.
        ("sips:bob@gw.example.net", (), "<sip:alice@client.example.com>", True),
        ("SIPS:bob@gw.example.net", (), "<sip:alice@client.example.com>", True),
        ("sip:bob@gw.example.net", ("<sips:p1.example.net;lr>",), "<sip:a@c.example>", True),
        ("sip:bob@gw.example.net", ("<sip:p1.example.net;lr>",), "<sips:a@c.example>", False),
        ("sip:bob@gw.example.net", (), "<sips:alice@client.example.com>", True),
        ("sip:bob@gw.example.net;transport=tls", (), "<sip:alice@c.example;transport=tls>", False),
        ("tel:+4930123456", (), "<sip:alice@client.example.com>", False),
    ],
)
def test_when_our_contact_must_be_sips(
    uri: str, record_routes: tuple[str, ...], contact: str, sips: bool
) -> None:
    invite = request(uri=uri, record_routes=record_routes, contact=contact)
    assert contact_must_be_sips(invite) is sips


def test_a_malformed_record_route_does_not_decide_the_contact_scheme() -> None:
    invite = request(uri="sip:bob@gw.example.net", contact="<sips:alice@client.example.com>")
    assert contact_must_be_sips(invite) is True
    broken = invite.with_headers(invite.headers.set("Record-Route", "<sips:@@>"))
    assert contact_must_be_sips(broken) is False


def test_is_sips() -> None:
    assert is_sips(parse_uri_untrusted("sips:bob@gw.example.net"))
    assert not is_sips(parse_uri_untrusted("sip:bob@gw.example.net;transport=tls"))
    assert not is_sips(parse_uri_untrusted("tel:+4930123456"))
    assert not is_sips(None)
