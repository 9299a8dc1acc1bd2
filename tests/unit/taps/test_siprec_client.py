"""The ``siprec`` tap's pieces, without sockets: the recording streams and their labels, the SDP
offer, the RFC 7865 metadata (well-formed XML in the recording namespace, escaped), the
multipart body, the SRS answer's destinations, the configuration, when a refused update goes
again (and the Retry-After it honours), and the final snapshot's metadata."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import attrs
import pytest

from gateway.core.calls.outbound import retry_after_untrusted
from gateway.core.config import ConfigError, from_mapping
from gateway.core.interfaces import TappedCall, TappedMedia
from gateway.core.plugins import load_plugins
from gateway.core.sdp.errors import SdpError
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.plugins.taps import siprec as siprec_plugin
from gateway.plugins.taps.siprec import (
    NAMESPACE,
    UPDATE_FAILURE_REASONS,
    SiprecClient,
    SiprecConfig,
    answer_srs_offer,
    call_participants,
    ended_participants,
    failure_reason,
    metadata_xml,
    multipart,
    offer_sdp,
    recorded_streams,
    reopen_wait,
    replaced_party,
    srs_destinations,
    srs_sdp,
    update_retry,
)

AUDIO = TappedMedia(
    0, "audio", ("0", "101"), ("0 PCMU/8000", "101 telephone-event/8000"), ("101 0-16",)
)
VIDEO = TappedMedia(1, "video", ("96",), ("96 H264/90000",))
AUDIO2 = TappedMedia(2, "audio", ("8",), ("8 PCMA/8000",))
CALL = TappedCall(
    "rec-1",
    'sip:"o\'neil"&<co>@gw',
    "sip:+4930@gw",
    "trunk",
    "carrier",
    "account",
    "alice",
    (AUDIO, VIDEO, AUDIO2),
)
NS = {"r": NAMESPACE}


def test_two_labelled_streams_per_audio_stream_and_none_for_video() -> None:
    streams = recorded_streams(CALL.media)
    assert [(s.index, s.direction, s.label) for s in streams] == [
        (0, "a_to_b", "1"),
        (0, "b_to_a", "2"),
        (2, "a_to_b", "3"),
        (2, "b_to_a", "4"),
    ]
    assert len({s.stream_id for s in streams}) == 4


def test_the_offer_is_sendonly_with_the_calls_codecs_and_labels() -> None:
    streams = recorded_streams(CALL.media)
    sdp = parse_sdp_untrusted(
        offer_sdp(streams, "192.0.2.10", [4000, 4002, 4004, 4006], session_id=7, version=9)
    )
    assert (sdp.origin.session_id, sdp.origin.session_version) == (7, 9)
    assert [m.port for m in sdp.media] == [4000, 4002, 4004, 4006]
    assert [m.attributes.get("label") for m in sdp.media] == ["1", "2", "3", "4"]
    assert all(m.attributes.has("sendonly") for m in sdp.media)
    assert sdp.media[0].formats == ("0", "101")
    assert sdp.media[0].attributes.values("fmtp") == ("101 0-16",)
    assert sdp.media[2].attributes.values("rtpmap") == ("8 PCMA/8000",)


def test_the_metadata_is_well_formed_and_says_who_sends_what() -> None:
    streams = recorded_streams(CALL.media)
    parties = call_participants(CALL, 1_700_000_000.0)
    root = ET.fromstring(metadata_xml(CALL.call_id, "c2Vzc2lvbg==", parties, streams, 1.7e9))
    assert root.tag == f"{{{NAMESPACE}}}recording"
    assert root.findtext("r:datamode", namespaces=NS) == "complete"
    aors = [n.get("aor") for n in root.findall("r:participant/r:nameID", NS)]
    assert aors == [CALL.from_uri, CALL.to_uri]  # escaped in the XML, intact when read
    assert root.findtext("r:session/r:sipSessionID", namespaces=NS) == "rec-1"
    labels = {
        s.get("stream_id"): s.findtext("r:label", namespaces=NS)
        for s in root.findall("r:stream", NS)
    }
    assert sorted(labels.values()) == ["1", "2", "3", "4"]
    caller, callee = root.findall("r:participantstreamassoc", NS)
    assert sorted(labels[e.text] for e in caller.findall("r:send", NS)) == ["1", "3"]
    assert sorted(labels[e.text] for e in caller.findall("r:recv", NS)) == ["2", "4"]
    assert sorted(labels[e.text] for e in callee.findall("r:send", NS)) == ["2", "4"]
    assert root.findtext("r:sessionrecordingassoc/r:associate-time", namespaces=NS) == (
        "2023-11-14T22:13:20Z"
    )
    # RFC 7865 §6.8, the XSD's sequence: send*, recv*, associate-time?, disassociate-time?;
    # both parties associated since the start, neither disassociated.
    for assoc in (caller, callee):
        tags = [child.tag.split("}")[1] for child in assoc]
        assert tags == ["send", "send", "recv", "recv", "associate-time"], tags
        assert assoc.findtext("r:associate-time", namespaces=NS) == "2023-11-14T22:13:20Z"


def _stream_associations(root: ET.Element) -> dict[str, tuple[str | None, str | None]]:
    """Each participant's stream association's (associate-time, disassociate-time), by id."""
    return {
        str(assoc.get("participant_id")): (
            assoc.findtext("r:associate-time", namespaces=NS),
            assoc.findtext("r:disassociate-time", namespaces=NS),
        )
        for assoc in root.findall("r:participantstreamassoc", NS)
    }


def _associations(root: ET.Element) -> dict[str, tuple[str | None, str | None]]:
    """Each participant's (associate-time, disassociate-time), by its id."""
    return {
        str(assoc.get("participant_id")): (
            assoc.findtext("r:associate-time", namespaces=NS),
            assoc.findtext("r:disassociate-time", namespaces=NS),
        )
        for assoc in root.findall("r:participantsessionassoc", NS)
    }


def test_after_a_transfer_the_metadata_keeps_its_ids_and_names_who_left_and_who_joined() -> None:
    streams = recorded_streams((AUDIO,))
    before = call_participants(CALL, 1_700_000_000.0)
    # The callee's side is transferred to bob 90 s later.
    after = replaced_party(before, "b", "sip:bob&co@gw", 1_700_000_090.0)
    assert after[:1] == before[:1]  # the caller is untouched, id and all
    assert after[1].participant_id == before[1].participant_id and after[1].left == 1_700_000_090.0
    assert after[2].participant_id not in {p.participant_id for p in before}
    first = ET.fromstring(metadata_xml(CALL.call_id, "c2Vzc2lvbg==", before, streams, 1.7e9))
    update = ET.fromstring(metadata_xml(CALL.call_id, "c2Vzc2lvbg==", after, streams, 1.7e9))
    assert update.tag == f"{{{NAMESPACE}}}recording"  # well-formed, in the RFC 7865 namespace
    assert update.findtext("r:datamode", namespaces=NS) == "complete"

    def ids(root: ET.Element, path: str, attribute: str) -> list[str | None]:
        return [element.get(attribute) for element in root.findall(path, NS)]

    # The session and the streams keep their ids; the known participants keep theirs.
    assert ids(update, "r:session", "session_id") == ids(first, "r:session", "session_id")
    assert ids(update, "r:stream", "stream_id") == ids(first, "r:stream", "stream_id")
    assert set(ids(update, "r:stream", "session_id")) == {"c2Vzc2lvbg=="}
    caller_id, callee_id = ids(first, "r:participant", "participant_id")
    new_id = after[2].participant_id
    assert ids(update, "r:participant", "participant_id") == [caller_id, callee_id, new_id]
    aors = [n.get("aor") for n in update.findall("r:participant/r:nameID", NS)]
    assert aors == [CALL.from_uri, CALL.to_uri, "sip:bob&co@gw"]
    # The callee left at the transfer, bob joined then; the caller is associated throughout.
    assert _associations(first) == {
        caller_id: ("2023-11-14T22:13:20Z", None),
        callee_id: ("2023-11-14T22:13:20Z", None),
    }
    assert _associations(update) == {
        caller_id: ("2023-11-14T22:13:20Z", None),
        callee_id: ("2023-11-14T22:13:20Z", "2023-11-14T22:14:50Z"),
        new_id: ("2023-11-14T22:14:50Z", None),
    }
    # bob sends what the callee's side sends (label 2) and receives the caller's (label 1);
    # the callee who left keeps its association with the streams it sent and received, which
    # ended at the transfer (RFC 7865 §6.8: the SRS learns when it stopped sending).
    labels = {
        s.get("stream_id"): s.findtext("r:label", namespaces=NS)
        for s in update.findall("r:stream", NS)
    }
    relations = {
        assoc.get("participant_id"): (
            [labels[e.text] for e in assoc.findall("r:send", NS)],
            [labels[e.text] for e in assoc.findall("r:recv", NS)],
        )
        for assoc in update.findall("r:participantstreamassoc", NS)
    }
    assert relations == {
        caller_id: (["1"], ["2"]),
        callee_id: (["2"], ["1"]),
        new_id: (["2"], ["1"]),
    }
    assert _stream_associations(update) == _associations(update)
    assert _stream_associations(first) == _associations(first)


def test_a_second_transfer_of_the_same_side_disassociates_only_the_party_there() -> None:
    first = replaced_party(call_participants(CALL, 100.0), "b", "sip:bob@gw", 200.0)
    second = replaced_party(first, "b", "sip:carol@gw", 300.0)
    assert [(p.aor, p.left) for p in second] == [
        (CALL.from_uri, None),
        (CALL.to_uri, 200.0),  # left at the first transfer, not again
        ("sip:bob@gw", 300.0),
        ("sip:carol@gw", None),
    ]
    assert [p.participant_id for p in second[:3]] == [p.participant_id for p in first]


def test_the_multipart_body_carries_both_parts_and_the_sdp_is_found_again() -> None:
    content_type, body = multipart(
        [
            ([("Content-Type", "application/sdp")], b"v=0\r\n"),
            (
                [
                    ("Content-Type", "application/rs-metadata+xml"),
                    ("Content-Disposition", "recording-session"),
                ],
                b"<x/>",
            ),
        ]
    )
    boundary = content_type.split("boundary=")[1]
    assert body.startswith(f"--{boundary}\r\n".encode())
    assert body.endswith(f"--{boundary}--\r\n".encode())
    assert b"Content-Disposition: recording-session\r\n\r\n<x/>" in body
    assert srs_sdp(content_type, body) == b"v=0\r\n"
    with pytest.raises(SdpError):
        srs_sdp("multipart/mixed", body)


def test_the_srs_answer_is_matched_by_label_then_order_and_port_0_declines() -> None:
    streams = recorded_streams((AUDIO,))
    by_label = (
        b"v=0\r\no=s 1 1 IN IP4 192.0.2.50\r\ns=-\r\nc=IN IP4 192.0.2.50\r\nt=0 0\r\n"
        b"m=audio 6002 RTP/AVP 0\r\na=label:2\r\nm=audio 6000 RTP/AVP 0\r\na=label:1\r\n"
    )
    assert srs_destinations("application/sdp", by_label, streams) == {
        (0, "a_to_b"): ("192.0.2.50", 6000),
        (0, "b_to_a"): ("192.0.2.50", 6002),
    }
    by_order = (
        b"v=0\r\no=s 1 1 IN IP4 192.0.2.50\r\ns=-\r\nt=0 0\r\n"
        b"m=audio 7000 RTP/AVP 0\r\nc=IN IP4 192.0.2.51\r\nm=audio 0 RTP/AVP 0\r\n"
    )
    assert srs_destinations("application/sdp", by_order, streams) == {
        (0, "a_to_b"): ("192.0.2.51", 7000)
    }
    no_address = b"v=0\r\no=s 1 1 IN IP4 192.0.2.50\r\ns=-\r\nt=0 0\r\nm=audio 7000 RTP/AVP 0\r\n"
    with pytest.raises(SdpError, match="c= line"):
        srs_destinations("application/sdp", no_address, streams)


def test_calls_are_selected_as_configured() -> None:
    def client(**keys: object) -> SiprecClient:
        return SiprecClient(SiprecConfig(srs="sip:srs@192.0.2.50", **keys))  # type: ignore[arg-type]

    assert client(trunks=("carrier",)).sink_for_call(CALL) is not None
    assert client(accounts=("alice",)).sink_for_call(CALL) is not None
    assert client(accounts=("bob",)).sink_for_call(CALL) is None


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ({"trunks": ["carrier"]}, "srs"),
        ({"srs": "http://recorder", "trunks": ["carrier"]}, "srs"),
        ({"srs": "sip:srs@192.0.2.50"}, "all_calls, accounts, trunks"),
        (
            {"srs": "sip:srs@192.0.2.50", "all_calls": True, "media_address": "recorder"},
            "media_address",
        ),
        # It goes into our offers' c= lines: 0.0.0.0 there is hold (RFC 3264 §8.4).
        (
            {"srs": "sip:srs@192.0.2.50", "all_calls": True, "media_address": "0.0.0.0"},
            "media_address: expected the unicast address the SRS reaches us at",
        ),
        (
            {"srs": "sip:srs@192.0.2.50", "all_calls": True, "media_address": "239.1.2.3"},
            "media_address: expected the unicast address",
        ),
        ({"srs": "sip:srs@192.0.2.50", "all_calls": True, "queue": 1}, "queue"),
        ({"srs": "sip:srs@192.0.2.50", "all_calls": True, "fallbacks": ["tel:+1"]}, "fallbacks"),
        (
            {"srs": "sip:srs@192.0.2.50", "all_calls": True, "final_metadata": "yes"},
            "final_metadata",
        ),
        # RFC 4028 §4: no session interval below 90 s.
        (
            {"srs": "sip:srs@192.0.2.50", "all_calls": True, "session_expires": 89},
            "session_expires",
        ),
        (
            {"srs": "sip:srs@192.0.2.50", "all_calls": True, "session_expires": -1},
            "session_expires",
        ),
    ],
)
def test_config_errors_name_the_key(table: dict[str, object], key: str) -> None:
    config = from_mapping({"plugins": {"enable": ["siprec"], "siprec": table}})
    with pytest.raises(ConfigError, match=r"plugins.siprec") as refused:
        load_plugins(config, extra=[("siprec", siprec_plugin)], installed={})
    assert key in str(refused.value)


@pytest.mark.parametrize(
    ("table", "expected"), [({}, 1800), ({"session_expires": 0}, 0), ({"session_expires": 90}, 90)]
)
def test_the_session_interval_defaults_to_half_an_hour_and_0_turns_it_off(
    table: dict[str, object], expected: int
) -> None:
    config = SiprecConfig(srs="sip:srs@192.0.2.50", all_calls=True, **table)  # type: ignore[arg-type]
    assert config.session_expires == expected


def test_a_held_stream_is_offered_inactive() -> None:
    held = TappedMedia(0, "audio", ("0",), ("0 PCMU/8000",), (), "sendonly")
    streams = recorded_streams((held, AUDIO2))
    sdp = parse_sdp_untrusted(
        offer_sdp(streams, "192.0.2.10", [1, 3, 5, 7], session_id=1, version=2)
    )
    assert [m.attributes.direction().value for m in sdp.media] == [  # type: ignore[union-attr]
        "inactive",
        "inactive",
        "sendonly",
        "sendonly",
    ]


@pytest.mark.parametrize("status", [None, 408, 480, 500, 503, 504, 580])
def test_a_refusal_that_may_pass_goes_again_after_a_growing_randomized_wait(
    status: int | None,
) -> None:
    assert update_retry(status, 1, None, 0.0) == 2.0
    assert update_retry(status, 2, None, 0.0) == 4.0
    assert update_retry(status, 3, None, 1.0) == 12.0  # 8 s, half again at most
    assert update_retry(status, 4, None, 0.0) is None  # three resends, then given up


@pytest.mark.parametrize("status", [400, 403, 404, 481, 488, 491, 501, 505, 513, 603])
def test_a_refusal_that_will_not_pass_is_given_up_at_once(status: int) -> None:
    assert update_retry(status, 1, None, 0.5) is None
    assert update_retry(status, 1, 5, 0.5) is None


def test_a_lost_recording_session_is_reopened_at_once_then_twice_after_a_growing_wait() -> None:
    assert reopen_wait(1, 0.9) == 0.0  # the SRS said it lost the session: no reason to wait
    assert reopen_wait(2, 0.0) == 2.0
    assert reopen_wait(2, 1.0) == 3.0  # up to half again, so lost calls do not come back at once
    assert reopen_wait(3, 0.5) == 5.0
    assert reopen_wait(4, 0.0) is None  # three rounds, then the call goes on unrecorded


def test_the_retry_after_of_a_refusal_is_honoured_up_to_a_minute() -> None:
    assert update_retry(503, 1, 30, 0.9) == 30.0
    assert update_retry(500, 2, 0, 0.9) == 0.0
    assert update_retry(503, 1, 60, 0.0) == 60.0
    assert update_retry(503, 1, 61, 0.0) is None  # not waited for: given up
    assert update_retry(503, 4, 1, 0.0) is None


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("30", 30),
        (" 18000;duration=3600", 18000),
        ("120 (I'm in a meeting)", 120),
        ("0", 0),
        (None, None),
        ("", None),
        ("soon", None),
        ("-5", None),
        ("١٢", None),  # digits, but not ASCII ones
        ("9" * 11, None),  # past the bound: no huge integer from the network
    ],
)
def test_retry_after_is_read_as_rfc_3261_delta_seconds(
    value: str | None, seconds: int | None
) -> None:
    assert retry_after_untrusted(value) == seconds


def test_each_given_up_update_has_a_reason_from_a_small_set() -> None:
    assert failure_reason(481) == "session_gone"
    assert failure_reason(None) == failure_reason(408) == "no_answer"
    assert failure_reason(503) == failure_reason(488) == "refused"
    tap = SiprecClient(SiprecConfig(srs="sip:srs@192.0.2.50", all_calls=True))
    assert tap.update_failures == dict.fromkeys(UPDATE_FAILURE_REASONS, 0)
    assert "session_reopened" in tap.update_failures  # exposed at 0 before any restart


def test_the_final_snapshot_disassociates_everyone_and_stops_the_recording() -> None:
    streams = recorded_streams((AUDIO,))
    joined, moved, ended = 1_700_000_000.0, 1_700_000_060.0, 1_700_000_120.0
    before = call_participants(CALL, joined)
    transferred = replaced_party(before, "b", "sip:carol@gw", moved)
    final = ended_participants(transferred, ended)
    assert [p.participant_id for p in final] == [p.participant_id for p in transferred]
    assert [p.left for p in final] == [ended, moved, ended]  # who left before keeps its time
    root = ET.fromstring(metadata_xml("rec-1", "c2Vzc2lvbg==", final, streams, joined, ended))
    recording = root.find("r:sessionrecordingassoc", NS)
    assert recording is not None
    assert recording.findtext("r:associate-time", namespaces=NS) == "2023-11-14T22:13:20Z"
    assert recording.findtext("r:disassociate-time", namespaces=NS) == "2023-11-14T22:15:20Z"
    times = _associations(root)
    assert sorted(left for _, left in times.values()) == [
        "2023-11-14T22:14:20Z",
        "2023-11-14T22:15:20Z",
        "2023-11-14T22:15:20Z",
    ]
    # Nobody sends any more: every stream association ended, each when its party left.
    assert _stream_associations(root) == times
    assert all(
        a.find("r:send", NS) is not None and a.find("r:recv", NS) is not None
        for a in root.findall("r:participantstreamassoc", NS)
    )
    assert len(root.findall("r:stream", NS)) == 2  # the streams stay described, ids and all
    ongoing = ET.fromstring(metadata_xml("rec-1", "c2Vzc2lvbg==", before, streams, joined))
    assert ongoing.find("r:sessionrecordingassoc/r:disassociate-time", NS) is None


def test_the_session_says_when_the_call_started_and_once_it_ended_when_it_stopped() -> None:
    """RFC 7865 §6.3: the communication session's start-time and stop-time (xs:dateTime, UTC),
    in the schema's order (§11: sipSessionID, reason, group-ref, start-time, stop-time); the
    recording's association has its own times (a new recording session after a restart
    associates later than the call started)."""
    streams = recorded_streams((AUDIO,))
    answered, reopened, ended = 1_700_000_000.0, 1_700_000_030.0, 1_700_000_120.0
    parties = call_participants(CALL, answered)
    ongoing = ET.fromstring(
        metadata_xml("rec-1", "c2Vzc2lvbg==", parties, streams, reopened, call_started=answered)
    )
    session = ongoing.find("r:session", NS)
    assert session is not None
    assert [child.tag.split("}")[1] for child in session] == ["sipSessionID", "start-time"]
    assert session.findtext("r:start-time", namespaces=NS) == "2023-11-14T22:13:20Z"
    assert ongoing.findtext("r:sessionrecordingassoc/r:associate-time", namespaces=NS) == (
        "2023-11-14T22:13:50Z"
    )
    final = ET.fromstring(
        metadata_xml(
            "rec-1",
            "c2Vzc2lvbg==",
            ended_participants(parties, ended),
            streams,
            reopened,
            ended,
            call_started=answered,
        )
    )
    session = final.find("r:session", NS)
    assert session is not None
    assert [child.tag.split("}")[1] for child in session] == [
        "sipSessionID",
        "start-time",
        "stop-time",
    ]
    assert session.findtext("r:start-time", namespaces=NS) == "2023-11-14T22:13:20Z"
    assert session.findtext("r:stop-time", namespaces=NS) == "2023-11-14T22:15:20Z"
    # The recording element's children in the schema's sequence.
    order = [
        "datamode",
        "session",
        "participant",
        "stream",
        "sessionrecordingassoc",
        "participantsessionassoc",
        "participantstreamassoc",
    ]
    tags = [child.tag.split("}")[1] for child in final]
    assert sorted(tags, key=order.index) == tags
    # Without call_started, the recording's start is the call's.
    plain = ET.fromstring(metadata_xml("rec-1", "c2Vzc2lvbg==", parties, streams, answered))
    assert plain.findtext("r:session/r:start-time", namespaces=NS) == "2023-11-14T22:13:20Z"
    assert plain.find("r:session/r:stop-time", NS) is None


def test_a_picked_up_call_names_the_picker_not_the_phone_that_rang() -> None:
    """The recording starts at the answer, after a pickup (RFC 3891): the participants are
    the caller and the phone that answered (``answered_by``); without one, the request URI."""
    picked = attrs.evolve(CALL, answered_by="sip:bob@gw")
    assert [p.aor for p in call_participants(picked, 1.7e9)] == [CALL.from_uri, "sip:bob@gw"]
    assert [p.aor for p in call_participants(CALL, 1.7e9)] == [CALL.from_uri, CALL.to_uri]


def test_an_srs_answer_of_as_many_lines_as_a_recording_session_offers_is_read() -> None:
    # 16 streams of the call, 32 m= lines (the cap): the core's bound for a phone's SDP (16
    # m= lines) must not refuse the SRS's answer to them.
    media = [TappedMedia(index, "audio", ("0",), ("0 PCMU/8000",)) for index in range(16)]
    streams = recorded_streams(media)
    assert len(streams) == siprec_plugin.MAX_RECORDED_LINES
    lines = ["v=0", "o=s 1 1 IN IP4 192.0.2.50", "s=-", "c=IN IP4 192.0.2.50", "t=0 0"]
    for number, stream in enumerate(streams):
        lines += [f"m=audio {6000 + 2 * number} RTP/AVP 0", f"a=label:{stream.label}"]
    answer = ("\r\n".join(lines) + "\r\n").encode()
    found = srs_destinations("application/sdp", answer, streams)
    assert len(found) == 32
    assert found[(15, "b_to_a")] == ("192.0.2.50", 6062)
    offered = answer_srs_offer(
        answer, streams, list(range(4000, 4064, 2)), address="192.0.2.1", session_id=1, version=2
    )
    assert len(offered.destinations) == 32
    too_many = answer.replace(b"t=0 0\r\n", b"t=0 0\r\nm=audio 5000 RTP/AVP 0\r\n")
    with pytest.raises(SdpError, match="more than 32 m= lines"):
        srs_destinations("application/sdp", too_many, streams)
