"""LegSecurity: per-leg SDES negotiation under each built-in policy, without sockets."""

from __future__ import annotations

import base64
import collections
import os

import pytest

from gateway.core.interfaces import MediaPolicy
from gateway.core.media.policy import BUILTIN_POLICIES
from gateway.core.media.security import KeyExchangeFailed, LegSecurity, MediaSecurityRefused
from gateway.core.sdp.errors import SdpError
from gateway.core.sdp.model import SessionDescription
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.core.sdp.serializer import serialize_sdp
from gateway.plugins.keyexchange.sdes import SdesError, SdesKeyExchange, SdesNegotiation

PLAIN = """v=0
o=- 1 1 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio 20000 RTP/AVP 0
a=rtpmap:0 PCMU/8000
a=sendrecv
"""


def sdp(text: str) -> SessionDescription:
    return parse_sdp_untrusted(text.replace("\n", "\r\n").encode())


def leg(
    policy: str | MediaPolicy,
    *,
    tls: bool,
    side: str = "b",
    failures: collections.Counter[str] | None = None,
) -> LegSecurity:
    chosen = BUILTIN_POLICIES[policy] if isinstance(policy, str) else policy
    return LegSecurity(
        side=side,
        failures=failures,
        policy=chosen,
        secure_signalling=tls,
        key_exchanges={"sdes": SdesKeyExchange(random_bytes=os.urandom)},
        signalling="tls" if tls else "udp",
    )


def offer_between(offerer: LegSecurity, answerer: LegSecurity) -> None:
    """offerer makes an offer on its leg; the answerer leg (another gateway leg playing the
    peer) answers it; the answer goes back to the offerer leg."""
    offered = offerer.make_offer(sdp(PLAIN))
    answerer.take_offer(offered)
    answered = answerer.make_answer(sdp(PLAIN))
    offerer.take_answer(answered)


def test_sdes_policy_over_tls_offers_savp_with_keys() -> None:
    offered = leg("sdes", tls=True).make_offer(sdp(PLAIN))
    media = offered.media[0]
    assert media.proto == "RTP/SAVP"
    assert len(media.crypto) >= 1
    assert b"inline:" in serialize_sdp(offered)


def test_best_effort_over_tls_offers_avp_with_keys() -> None:
    offered = leg("best-effort", tls=True).make_offer(sdp(PLAIN))
    assert offered.media[0].proto == "RTP/AVP"
    assert offered.media[0].crypto


def test_no_keys_ever_offered_over_plain_signalling() -> None:
    offered = leg("best-effort", tls=False).make_offer(sdp(PLAIN))
    assert offered.media[0].proto == "RTP/AVP" and not offered.media[0].crypto
    with pytest.raises(MediaSecurityRefused, match="TLS"):
        leg("sdes", tls=False).make_offer(sdp(PLAIN))


def test_rtp_only_offers_plain_and_refuses_srtp_only_offers() -> None:
    assert not leg("rtp-only", tls=True).make_offer(sdp(PLAIN)).media[0].crypto
    srtp_offer = leg("sdes", tls=True).make_offer(sdp(PLAIN))
    with pytest.raises(MediaSecurityRefused, match="encrypted media"):
        leg("rtp-only", tls=True, side="a").take_offer(srtp_offer)


def test_cleartext_offer_refused_where_policy_needs_encryption() -> None:
    with pytest.raises(MediaSecurityRefused, match="requires encrypted media"):
        leg("encrypted-only", tls=True, side="a").take_offer(sdp(PLAIN))


def test_sdes_offer_over_udp_is_refused_naming_tls() -> None:
    srtp_offer = leg("sdes", tls=True).make_offer(sdp(PLAIN))
    with pytest.raises(MediaSecurityRefused, match="TLS"):
        leg("best-effort", tls=False, side="a").take_offer(srtp_offer)


def test_best_effort_avp_with_crypto_over_udp_falls_back_to_cleartext() -> None:
    best_effort_offer = leg("best-effort", tls=True).make_offer(sdp(PLAIN))
    a = leg("best-effort", tls=False, side="a")
    plain = a.take_offer(best_effort_offer)
    assert not plain.media[0].crypto
    answer = a.make_answer(sdp(PLAIN))
    assert answer.media[0].proto == "RTP/AVP" and not answer.media[0].crypto
    assert a.keys(0) is None


def test_negotiated_keys_mirror_each_other() -> None:
    ours, peer = leg("sdes", tls=True), leg("sdes", tls=True, side="a")
    offer_between(ours, peer)
    k1, k2 = ours.keys(0), peer.keys(0)
    assert k1 is not None and k2 is not None
    assert k1.suite == k2.suite
    assert k1.local_key == k2.remote_key and k1.remote_key == k2.local_key
    record = ours.record()
    assert record["policy"] == "sdes" and record["streams"][0]["encrypted"]
    assert record["streams"][0]["suite"] == k1.suite
    assert "inline" not in repr(record) and k1.local_key.hex() not in repr(record)


def test_the_answer_read_and_its_streams_show_no_key_in_their_repr() -> None:
    # The answer's a=crypto carries the peer's master key: kept to tell whether a fork's answer
    # repeats the one in force (StreamSecurity.answered_with) and for the negotiations to take
    # once the whole answer is (AnswerRead.binds), never shown by a repr (a log, an exception).
    ours, peer = leg("sdes", tls=True), leg("sdes", tls=True, side="a")
    peer.take_offer(ours.make_offer(sdp(PLAIN)))
    answer = peer.make_answer(sdp(PLAIN))
    inline = answer.media[0].crypto[0].split("inline:")[1].split("|")[0]
    read = ours.read_answer(answer)
    assert inline not in repr(read) and "inline" not in repr(read)
    ours.apply_answer(read)
    assert ours.streams[0].answered_with is not None
    shown = repr(ours.streams[0])
    assert inline not in shown and "inline" not in shown


def test_answer_declining_keys_is_refused_when_encryption_is_required() -> None:
    ours = leg("sdes", tls=True)
    ours.make_offer(sdp(PLAIN))
    # RTP/AVP to our RTP/SAVP: refused for the profile before its (absent) keys are read.
    with pytest.raises(MediaSecurityRefused, match=r"RTP/AVP \(RTP\) is not the offer's RTP/SAVP"):
        ours.take_answer(sdp(PLAIN))
    ours.make_offer(sdp(PLAIN))
    with pytest.raises(MediaSecurityRefused, match="no a=crypto"):
        ours.take_answer(sdp(PLAIN.replace("RTP/AVP", "RTP/SAVP")))


def test_an_unusable_answer_key_is_the_peers_fault_and_never_shown() -> None:
    ours, peer = leg("sdes", tls=True), leg("sdes", tls=True, side="a")
    offered = ours.make_offer(sdp(PLAIN))
    peer.take_offer(offered)
    answer = serialize_sdp(peer.make_answer(sdp(PLAIN))).decode()
    key = answer.split("inline:")[1].split()[0]
    two_keys = answer.replace(f"inline:{key}", f"inline:{key}|2^20|1:4;inline:{key}|2:4")
    with pytest.raises(MediaSecurityRefused, match="2 master keys in one line") as refused:
        ours.take_answer(parse_sdp_untrusted(two_keys.encode()))
    assert key not in refused.value.reason


def test_a_plugin_raising_anything_else_on_the_answer_is_its_bug_not_the_peers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Not an SdpError (no 488 blaming the peer): KeyExchangeFailed, naming the plugin and
    the exception's type but not its text (the call answers 500 for it)."""
    ours, peer = leg("sdes", tls=True), leg("sdes", tls=True, side="a")
    offered = ours.make_offer(sdp(PLAIN))
    peer.take_offer(offered)
    answered = peer.make_answer(sdp(PLAIN))

    def broken(self: SdesNegotiation, attributes: object) -> None:
        raise ValueError("inline:c2VjcmV0")

    monkeypatch.setattr(SdesNegotiation, "remote_sdp_attributes", broken)
    with pytest.raises(KeyExchangeFailed) as failed:
        ours.take_answer(answered)
    assert not isinstance(failed.value, MediaSecurityRefused)
    assert failed.value.reason == "the sdes key exchange raised ValueError"
    assert isinstance(failed.value.__cause__, ValueError)


def _broken(*args: object, **kwargs: object) -> None:
    raise ValueError("inline:c2VjcmV0")


@pytest.mark.parametrize(
    ("owner", "method", "step"),
    [
        (SdesKeyExchange, "offer", "make_offer"),
        (SdesNegotiation, "local_sdp_attributes", "make_offer"),
        (SdesKeyExchange, "answer", "take_offer"),
        (SdesNegotiation, "next_event", "take_offer"),
        (SdesNegotiation, "local_sdp_attributes", "make_answer"),
    ],
)
def test_a_plugin_raising_in_any_sdp_step_is_its_bug_named_as_such(
    monkeypatch: pytest.MonkeyPatch, owner: type, method: str, step: str
) -> None:
    """Not only on the answer (above): a plugin raising from offer(), answer(),
    local_sdp_attributes() or next_event() while we offer, take an offer or answer is
    KeyExchangeFailed naming it, counted as its failure; never its text."""
    failures: collections.Counter[str] = collections.Counter()
    ours = leg("sdes", tls=True, failures=failures)
    peer = leg("sdes", tls=True, side="a")
    if step != "make_offer":
        offered = peer.make_offer(sdp(PLAIN))
    monkeypatch.setattr(owner, method, _broken)
    with pytest.raises(KeyExchangeFailed) as failed:
        if step == "make_offer":
            ours.make_offer(sdp(PLAIN))
        elif step == "take_offer":
            ours.take_offer(offered)
        else:
            monkeypatch.undo()
            ours.take_offer(offered)
            monkeypatch.setattr(owner, method, _broken)
            ours.make_answer(sdp(PLAIN))
    assert failed.value.reason == "the sdes key exchange raised ValueError"
    assert "c2VjcmV0" not in str(failed.value)
    assert failures == {"sdes": 1}


def test_a_plugins_sdp_error_on_an_offer_stays_the_peers_fault(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An SdpError the plugin raises taking an offer is bad peer input (488), not its bug."""
    ours, peer = leg("sdes", tls=True), leg("sdes", tls=True, side="a")
    offered = peer.make_offer(sdp(PLAIN))

    def refusing(*args: object, **kwargs: object) -> None:
        raise SdesError("key parameters we do not take")

    monkeypatch.setattr(SdesKeyExchange, "answer", refusing)
    with pytest.raises(SdpError, match="key parameters") as refused:
        ours.take_offer(offered)
    assert not isinstance(refused.value, KeyExchangeFailed)


def test_answer_declining_keys_is_cleartext_under_best_effort() -> None:
    ours = leg("best-effort", tls=True)
    ours.make_offer(sdp(PLAIN))
    ours.take_answer(sdp(PLAIN))
    assert ours.keys(0) is None
    assert ours.record()["streams"][0]["key_exchange"] == "none"


def test_policy_suites_restrict_the_offer() -> None:
    gcm_only = MediaPolicy(
        name="gcm", key_exchanges=("sdes",), allow_cleartext=False, suites=("AEAD_AES_128_GCM",)
    )
    offered = leg(gcm_only, tls=True).make_offer(sdp(PLAIN))
    assert [c.split()[1] for c in offered.media[0].crypto] == ["AEAD_AES_128_GCM"]


def test_reoffer_keeps_keys_in_force() -> None:
    ours, peer = leg("sdes", tls=True), leg("sdes", tls=True, side="a")
    offer_between(ours, peer)
    before = ours.keys(0)
    offer_between(ours, peer)
    assert ours.keys(0) == before


PEER_KEY = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNk"  # 30 octets, base64


def peer_offer(port: int) -> SessionDescription:
    """A phone's offer of one SDES line, always with the same key (RFC 4568 §7.1.4 lets a
    re-offer keep it)."""
    return sdp(
        PLAIN.replace("20000 RTP/AVP", f"{port} RTP/SAVP")
        + f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{PEER_KEY}\n"
    )


def test_a_line_we_rejected_comes_back_under_a_new_key_of_ours() -> None:
    # Our answer put the line at port 0 (the other leg rejected it): it ended there and its
    # relay stream closed. The phone's next offer brings it back with its key unchanged: the
    # relay's new ports need a new key of ours (RFC 4568 §7.1.4), never the old one, whose
    # context a media worker would restart at ROC 0 (RFC 3711 §9.1).
    ours = leg("sdes", tls=True, side="a")
    ours.take_offer(peer_offer(20000))
    ours.make_answer(sdp(PLAIN.replace("20000", "30000")))
    first = ours.keys(0)
    assert first is not None
    ours.take_offer(peer_offer(20000))
    ours.make_answer(sdp(PLAIN.replace("20000", "0")))
    ours.take_offer(peer_offer(20002))
    ours.make_answer(sdp(PLAIN.replace("20000", "30002")))
    again = ours.keys(0)
    assert again is not None and again.remote_key == first.remote_key
    assert again.local_key != first.local_key


def test_a_line_one_answer_rejected_and_the_next_took_keeps_its_keys() -> None:
    # Two answers to one offer (a fork's 183 without the line, the 200 with it): the latest
    # decides, so the line is in force and a re-offer keeping the phone's key keeps ours.
    ours = leg("sdes", tls=True, side="a")
    ours.take_offer(peer_offer(20000))
    ours.make_answer(sdp(PLAIN.replace("20000", "0")))
    ours.make_answer(sdp(PLAIN.replace("20000", "30000")))
    first = ours.keys(0)
    ours.take_offer(peer_offer(20000))
    ours.make_answer(sdp(PLAIN.replace("20000", "30000")))
    assert first is not None and ours.keys(0) == first


FEEDBACK = PLAIN.replace("RTP/AVP 0", "RTP/AVPF 0") + "a=rtcp-fb:* nack\n"


@pytest.mark.parametrize(
    ("policy", "tls", "plain_profile", "feedback_profile"),
    [
        ("sdes", True, "RTP/SAVP", "RTP/SAVPF"),
        ("rtp-only", False, "RTP/AVP", "RTP/AVPF"),
        ("best-effort", True, "RTP/AVP", "RTP/AVPF"),
    ],
)
def test_a_feedback_profile_reaches_the_called_leg_only_when_configured(
    policy: str, tls: bool, plain_profile: str, feedback_profile: str
) -> None:
    # RFC 4585: a device that knows only the plain profile answers RTP/(S)AVPF with 488, so by
    # default the called leg gets the plain profile and no a=rtcp-fb (RFC 4585 §4.2).
    called = leg(policy, tls=tls)
    offered = called.make_offer(sdp(FEEDBACK))
    plain = offered.media[0]
    assert plain.proto == plain_profile
    assert not plain.attributes.has("rtcp-fb")
    assert plain.attributes.get("rtpmap") == "0 PCMU/8000"
    # The called leg answers in the profile it was offered; the session gets the answer back
    # in the profile it offered (it checks that an answer keeps the offer's, RFC 3264 §6).
    answerer = leg(policy, tls=tls, side="a")
    answerer.take_offer(offered)
    answer = answerer.make_answer(sdp(PLAIN))
    assert answer.media[0].proto == plain_profile
    assert called.take_answer(answer).media[0].proto == "RTP/AVPF"
    chosen = BUILTIN_POLICIES[policy]
    with_feedback = LegSecurity(
        side="b",
        policy=chosen,
        secure_signalling=tls,
        key_exchanges={"sdes": SdesKeyExchange(random_bytes=os.urandom)},
        signalling="tls" if tls else "udp",
        offer_feedback=True,
    )
    kept = with_feedback.make_offer(sdp(FEEDBACK)).media[0]
    assert kept.proto == feedback_profile
    assert kept.attributes.get("rtcp-fb") == "* nack"


def test_our_answer_keeps_the_feedback_profile_the_peer_offered() -> None:
    phone_offer = serialize_sdp(leg("sdes", tls=True).make_offer(sdp(PLAIN))).decode()
    caller = leg("sdes", tls=True, side="a")
    caller.take_offer(sdp(phone_offer.replace("RTP/SAVP", "RTP/SAVPF").replace("\r\n", "\n")))
    # The session's plain answer (the called leg answered RTP/AVP) goes back to the caller in
    # the profile it offered (RFC 3264 §6), whatever the called leg was offered.
    answer = caller.make_answer(sdp(PLAIN)).media[0]
    assert answer.proto == "RTP/SAVPF"
    assert answer.crypto


def inline_keys(offer: SessionDescription) -> list[bytes]:
    """The key and salt of each a=crypto line of the offer's first m= line."""
    return [
        base64.b64decode(line.split()[2].removeprefix("inline:").split("|")[0])
        for line in offer.media[0].crypto
    ]


def test_a_rekey_offer_hands_out_a_new_sdes_key_of_ours() -> None:
    """``make_offer(rekey=True)`` (a forked callee's answer re-keyed, fork_rekey.py): new keys
    of ours on every line, where an ordinary re-offer repeats the key in force (RFC 4568
    §7.1.4); the peer's answer to it puts our new key in force."""
    ours, peer = leg("sdes", tls=True), leg("sdes", tls=True, side="a")
    offer_between(ours, peer)
    first = ours.keys(0)
    assert first is not None and ours.keys_handed_out_in_sdp() == [0]
    repeated = ours.make_offer(sdp(PLAIN))
    assert inline_keys(repeated) == [first.local_key]
    rekeyed = ours.make_offer(sdp(PLAIN), rekey=True)
    offered_keys = inline_keys(rekeyed)
    assert len(offered_keys) > 1 and first.local_key not in offered_keys
    peer.take_offer(rekeyed)
    ours.take_answer(peer.make_answer(sdp(PLAIN)))
    now = ours.keys(0)
    assert now is not None and now.local_key in offered_keys


def test_our_answer_with_a_new_key_has_the_next_o_version_though_the_session_kept_its_own() -> None:
    """RFC 3264 §8: an SDP that differs from the last one sent on the leg has the next o=
    version. The session's version rule (MediaSession) sees only the plain SDP: a peer's
    re-offer with a new key of its own (SDES, RFC 4568 §7.1.4) leaves that unchanged, while
    our answer carries a new key of ours; sent under the old version, a peer that checks the
    rule (as we do, check_version_rule) would take it for the SDP it had and keep our old
    key. An answer that changes nothing keeps its version."""
    ours, peer = leg("sdes", tls=True), leg("sdes", tls=True, side="a")
    ours.take_offer(peer.make_offer(sdp(PLAIN)))
    first = ours.make_answer(sdp(PLAIN))
    peer.take_answer(first)
    ours.take_offer(peer.make_offer(sdp(PLAIN.replace(" 1 1 ", " 1 2 ")), rekey=True))
    second = ours.make_answer(sdp(PLAIN))  # the session's plain answer: unchanged
    assert inline_keys(second) != inline_keys(first)
    assert second.origin == first.origin.bumped()
    peer.take_answer(second)
    ours.take_offer(peer.make_offer(sdp(PLAIN.replace(" 1 1 ", " 1 3 "))))
    third = ours.make_answer(sdp(PLAIN))  # keys kept (§7.1.4): the same SDP, the same version
    assert third == second
    # The session's own change goes on from the version the peer last saw.
    peer.take_answer(third)
    ours.take_offer(peer.make_offer(sdp(PLAIN.replace(" 1 1 ", " 1 4 "))))
    moved = ours.make_answer(sdp(PLAIN.replace(" 1 1 ", " 1 2 ").replace("20000", "20002")))
    assert moved.origin == second.origin.bumped()


def test_a_rekey_offer_of_an_unchanged_session_has_the_next_o_version() -> None:
    """RFC 3264 §8 for our offers: new keys of ours on an SDP the session did not change
    (``rekey=True``, or any change only this leg's security makes) bump the version."""
    ours, peer = leg("sdes", tls=True), leg("sdes", tls=True, side="a")
    offer_between(ours, peer)
    first = ours.make_offer(sdp(PLAIN))
    rekeyed = ours.make_offer(sdp(PLAIN), rekey=True)
    assert inline_keys(rekeyed) != inline_keys(first)
    assert rekeyed.origin == first.origin.bumped()


def test_a_rekey_offer_withdrawn_takes_no_version_and_hands_out_no_key() -> None:
    """A re-key offer that could not be sent (fork_rekey.py: its leg cannot be reached) is
    withdrawn: the next offer has the o= version after the last one sent (RFC 3264 §8) and
    repeats our key in force (RFC 4568 §7.1.4), as if the re-key had never been made."""
    ours, peer = leg("sdes", tls=True), leg("sdes", tls=True, side="a")
    offer_between(ours, peer)
    in_force = ours.keys(0)
    assert in_force is not None
    first = ours.make_offer(sdp(PLAIN))
    ours.make_offer(sdp(PLAIN), rekey=True)
    ours.withdraw_offer()
    ours.withdraw_offer()  # twice: nothing more
    moved = ours.make_offer(sdp(PLAIN.replace(" 1 1 ", " 1 2 ").replace("20000", "20002")))
    assert moved.origin == first.origin.bumped()
    assert inline_keys(moved) == [in_force.local_key]


def test_a_rekey_offer_sent_and_refused_can_no_longer_be_withdrawn() -> None:
    """Our re-key offer went and the phone refused it (488, RFC 3261 §14.1): its o= version
    was taken on the wire. A withdrawal after that (no fresh make_offer since) must give back
    nothing: the next offer has the version after the refused one (RFC 3264 §8), not the
    refused one's again, and repeats the key in force. Before session 43 the refused offer's
    state stayed kept for a withdrawal, which rolled back past it."""
    ours, peer = leg("sdes", tls=True), leg("sdes", tls=True, side="a")
    offer_between(ours, peer)
    in_force = ours.keys(0)
    assert in_force is not None
    refused = ours.make_offer(sdp(PLAIN), rekey=True)
    ours.offer_refused()
    ours.withdraw_offer()
    moved = ours.make_offer(sdp(PLAIN.replace(" 1 1 ", " 1 2 ").replace("20000", "20002")))
    assert moved.origin == refused.origin.bumped()
    assert inline_keys(moved) == [in_force.local_key]


def test_the_peers_offer_ends_what_a_withdrawal_could_give_back() -> None:
    """Our offer went and was refused (a 491: the peer's own re-INVITE crossed it); the peer's
    offer is then answered on the leg. A withdrawal now would put back the o= version from
    before our refused offer, under the version of our answer: the next SDP would go back
    (RFC 3264 §8). It is a no-op once the peer offered."""
    ours, peer = leg("sdes", tls=True), leg("sdes", tls=True, side="a")
    offer_between(ours, peer)
    ours.make_offer(sdp(PLAIN.replace(" 1 1 ", " 1 2 ")))
    ours.take_offer(peer.make_offer(sdp(PLAIN)))
    answer = ours.make_answer(sdp(PLAIN.replace(" 1 1 ", " 1 3 ")))
    peer.take_answer(answer)
    ours.withdraw_offer()
    # A re-key on the session's SDP as it is: the version goes up by this leg's change alone.
    after = ours.make_offer(sdp(PLAIN.replace(" 1 1 ", " 1 3 ")), rekey=True)
    assert after.origin == answer.origin.bumped()


@pytest.mark.parametrize("step", ["add_to_offer", "_version_of"])
def test_an_offer_that_fails_at_its_last_step_changes_nothing(
    monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    """make_offer is all or nothing: a re-key offer whose ICE step or o= versioning raises
    (our bug: fork_rekey.py sends nothing, the call goes on under its keys) leaves the offer
    in force, its keys and the o= version last made. Before session 43 the failed offer's
    streams (new keys of ours) had replaced the offered ones, and a withdrawal was armed for
    them."""
    ours, peer = leg("sdes", tls=True), leg("sdes", tls=True, side="a")
    offer_between(ours, peer)
    in_force = ours.keys(0)
    assert in_force is not None
    first = ours.make_offer(sdp(PLAIN))
    offered = ours._offered

    def broken(*args: object) -> None:
        raise RuntimeError("our bug")

    target = ours.ice if step == "add_to_offer" else ours
    with monkeypatch.context() as patched:
        patched.setattr(target, step, broken)
        with pytest.raises(RuntimeError):
            ours.make_offer(sdp(PLAIN), rekey=True)
    assert ours._offered is offered
    ours.withdraw_offer()  # takes back the first offer, which was made (and not sent)
    again = ours.make_offer(sdp(PLAIN))
    assert again == first  # the version and key of the last offer made, nothing skipped
    assert inline_keys(again) == [in_force.local_key]
    assert ours.keys(0) == in_force


TWO_LINES = PLAIN + "m=audio 20002 RTP/AVP 0\na=rtpmap:0 PCMU/8000\n"


def _forked_answers() -> tuple[LegSecurity, SessionDescription, SessionDescription]:
    """Our SDES offer of two lines, answered by two forked phones (each its own key)."""
    ours = leg("sdes", tls=True)
    offered = ours.make_offer(sdp(TWO_LINES))
    answers = []
    for _ in range(2):
        phone = leg("sdes", tls=True, side="a")
        phone.take_offer(offered)
        answers.append(phone.make_answer(sdp(TWO_LINES)))
    return ours, answers[0], answers[1]


def _second_line_plain(answer: SessionDescription) -> SessionDescription:
    """``answer`` with its second line answered RTP/AVP without keys: refused (RFC 3264 §6)."""
    text = serialize_sdp(answer).decode()
    head, _, second = text.rpartition("m=audio")
    second = second.replace("RTP/SAVP", "RTP/AVP")
    second = "\r\n".join(line for line in second.split("\r\n") if "crypto" not in line)
    return parse_sdp_untrusted((head + "m=audio" + second).encode())


def test_an_answer_refused_at_its_second_line_leaves_the_keys_in_force() -> None:
    """take_answer is all or nothing: a fork's 183 whose first line took the phone's key and
    whose second line is then refused (CallRinging ignores it, the call goes on with the early
    media it had) leaves the first fork's keys, profiles and record in force. Before session 45
    the refused fork's key had replaced the first fork's on line 1 (the stream objects are the
    ones in force after a first answer), and the next keying of the relay (the first fork's
    200, our ACK) would have used it."""
    ours, first, second = _forked_answers()
    ours.take_answer(first)
    in_force = [ours.keys(0), ours.keys(1)]
    record = ours.record()
    with pytest.raises(MediaSecurityRefused, match="m= line 2"):
        ours.take_answer(_second_line_plain(second))
    assert [ours.keys(0), ours.keys(1)] == in_force
    assert ours.record() == record
    assert [s.peer_proto for s in ours.streams] == ["RTP/SAVP", "RTP/SAVP"]
    ours.take_answer(first)  # the first fork's 200 repeating its answer: as before
    assert [ours.keys(0), ours.keys(1)] == in_force


def test_a_first_answer_refused_half_way_keys_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same for the first answer to an offer, and for its last step (the ICE step): the
    offered streams keep no key of the refused answer, the leg's streams stay those of
    before."""
    ours, first, second = _forked_answers()
    before = ours.streams
    with pytest.raises(MediaSecurityRefused):
        ours.take_answer(_second_line_plain(second))
    assert ours.streams is before
    assert [s.keys for s in ours._offered] == [None, None]
    assert [s.rejected for s in ours._offered] == [False, False]

    def broken(*args: object, **kwargs: object) -> None:
        raise SdpError("unreadable ICE credentials")

    with monkeypatch.context() as patched:
        patched.setattr(ours.ice, "read_remote", broken)
        with pytest.raises(SdpError):
            ours.take_answer(first)
    assert ours.streams is before
    assert [s.keys for s in ours._offered] == [None, None]
    ours.take_answer(first)
    assert ours.keys(0) is not None and ours.keys(1) is not None


def test_our_answer_that_fails_half_way_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """make_answer is all or nothing: a key exchange plugin raising on the second line (our
    answer to the phone's re-offer, line 1 rejected) leaves the streams in force, their
    rejected flags and the o= version last made as they were."""
    ours, peer = leg("sdes", tls=True, side="a"), leg("sdes", tls=True)
    offered = peer.make_offer(sdp(TWO_LINES))
    ours.take_offer(offered)
    first = ours.make_answer(sdp(TWO_LINES))
    in_force = ours.streams
    keys = [ours.keys(0), ours.keys(1)]
    ours.take_offer(peer.make_offer(sdp(TWO_LINES.replace(" 1 1 ", " 1 2 "))))
    offered_streams = list(ours._offered)

    def broken(self: SdesNegotiation) -> list[tuple[str, str | None]]:
        raise RuntimeError("plugin bug")

    monkeypatch.setattr(SdesNegotiation, "local_sdp_attributes", broken)
    answer = sdp(TWO_LINES.replace(" 1 1 ", " 1 2 ").replace("20000 RTP", "0 RTP"))
    with pytest.raises(KeyExchangeFailed):
        ours.make_answer(answer)
    assert ours.streams is in_force
    assert [ours.keys(0), ours.keys(1)] == keys
    assert [s.rejected for s in offered_streams] == [False, False]
    assert ours._last_made is not None and ours._last_made[0].origin == first.origin


def test_the_refused_forks_next_answer_takes_its_key() -> None:
    """After the refused 183, the same fork's 200 answers with its line 1 as before (the SDES
    negotiation, which read it then, reports nothing new for it) and a usable line 2: its
    line 1 key is the one in force, not the first fork's."""
    ours, first, second = _forked_answers()
    ours.take_answer(first)
    firsts = [ours.keys(0), ours.keys(1)]
    with pytest.raises(MediaSecurityRefused):
        ours.take_answer(_second_line_plain(second))
    ours.take_answer(second)
    keys = [ours.keys(0), ours.keys(1)]
    assert keys[0] is not None and keys[1] is not None
    assert keys[0].remote_key == inline_keys(second)[0]
    assert keys[0] != firsts[0] and keys[1] != firsts[1]


def test_an_answer_read_but_not_applied_changes_nothing() -> None:
    """read_answer changes nothing of the leg: an early answer whose next step (the media
    session) refuses it is never applied, and the keys in force stay; the plugin's keys for
    it are kept aside for an answer repeating it."""
    ours, first, second = _forked_answers()
    ours.take_answer(first)
    in_force = [ours.keys(0), ours.keys(1)]
    read = ours.read_answer(second)
    assert read.plain.media[0].proto == "RTP/AVP" and not read.plain.media[0].crypto
    assert [ours.keys(0), ours.keys(1)] == in_force
    ours.apply_answer(ours.read_answer(second))  # its 200, the same answer: its keys
    keys = ours.keys(0)
    assert keys is not None and keys.remote_key == inline_keys(second)[0]


def _second_line_copying_our_key(
    ours: LegSecurity, answer: SessionDescription
) -> SessionDescription:
    """``answer`` with its second line's a=crypto carrying our own key back (a peer bug the
    SDES negotiation refuses, RFC 4568 §5.1.2): that line's negotiation fails, and stays failed."""
    negotiation = ours._offered[1].negotiation
    assert negotiation is not None
    our_key = str(negotiation.local_sdp_attributes()[0][1]).split()[2]
    text = serialize_sdp(answer).decode()
    head, _, second = text.rpartition("m=audio")
    lines = [
        " ".join([*line.split()[:2], our_key]) if line.startswith("a=crypto:") else line
        for line in second.split("\r\n")
    ]
    return parse_sdp_untrusted((head + "m=audio" + "\r\n".join(lines)).encode())


def _answer_keys(answer: SessionDescription) -> list[bytes]:
    """The key and salt of the a=crypto line of each m= line of an answer."""
    return [
        base64.b64decode(media.crypto[0].split()[2].removeprefix("inline:").split("|")[0])
        for media in answer.media
    ]


def test_another_forks_answer_after_a_refused_one_is_read_on_its_own_merits() -> None:
    """A fork's 183 whose line 2 copies our key back is refused, and binds nothing: the SDES
    negotiation only checked it (``check_remote_sdp_attributes``). The other fork's 200,
    with good keys, is taken and keys both lines with its own keys. Before session 46 the
    refused 183 failed line 2's negotiation for the whole offer: the 200 was taken with line
    2 silent (session 45), then refused, 488 (session 46's review)."""
    failures: collections.Counter[str] = collections.Counter()
    ours, first, second = _forked_answers()
    ours.failures = failures
    with pytest.raises(MediaSecurityRefused, match="copied the key"):
        ours.take_answer(_second_line_copying_our_key(ours, second))
    assert failures == {"sdes": 1}  # the refused answer is counted, as before
    ours.take_answer(first)
    keys = [ours.keys(0), ours.keys(1)]
    assert keys[0] is not None and keys[1] is not None
    assert [k.remote_key for k in keys] == _answer_keys(first)


def test_a_plugin_without_the_check_keeps_refusing_the_other_forks_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A key exchange plugin without ``check_remote_sdp_attributes`` (written before it): its
    negotiation fails on the refused 183 and stays failed (plugins keep no undo), so it has
    nothing for the other fork's 200, which is refused saying why (session 46's review: a
    stated end of the call, never a line left silent)."""
    monkeypatch.delattr(SdesNegotiation, "check_remote_sdp_attributes")
    ours, first, second = _forked_answers()
    with pytest.raises(MediaSecurityRefused, match="copied the key"):
        ours.take_answer(_second_line_copying_our_key(ours, second))
    with pytest.raises(MediaSecurityRefused) as refused:
        ours.take_answer(first)
    assert "m= line 2's sdes key exchange failed on an earlier answer" in refused.value.reason
    assert "copied the key" in refused.value.reason
    assert ours.keys(0) is None and ours.keys(1) is None
    # The next offer's negotiations are new: nothing of the failure is left.
    phone = leg("sdes", tls=True, side="a")
    phone.take_offer(ours.make_offer(sdp(TWO_LINES)))
    ours.take_answer(phone.make_answer(sdp(TWO_LINES)))
    assert ours.keys(0) is not None and ours.keys(1) is not None


def _third_fork(ours: LegSecurity) -> SessionDescription:
    """A third forked phone's answer to our offer in progress (its own keys)."""
    offered = ours._last_made
    assert offered is not None
    phone = leg("sdes", tls=True, side="a")
    phone.take_offer(offered[0])
    return phone.make_answer(sdp(TWO_LINES))


def test_a_third_forks_answer_after_a_refused_one_is_keyed_with_its_own_keys() -> None:
    """Fork 1's 183 keyed both lines; fork 2's 183 (our key copied back on line 2) is
    refused; fork 3's 200 comes with keys of its own: both lines take its keys. Before
    session 46 line 2, whose negotiation fork 2 had failed, kept fork 1's keys, which fork 3
    does not have: its SRTP failed to authenticate, the line silent, nothing said."""
    ours, first, second = _forked_answers()
    third = _third_fork(ours)
    ours.take_answer(first)
    with pytest.raises(MediaSecurityRefused, match="copied the key"):
        ours.take_answer(_second_line_copying_our_key(ours, second))
    ours.take_answer(third)
    keys = [ours.keys(0), ours.keys(1)]
    assert keys[0] is not None and keys[1] is not None
    assert [k.remote_key for k in keys] == _answer_keys(third)


def test_without_the_check_a_third_forks_new_keys_are_refused_not_taken_with_old_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same with a plugin without ``check_remote_sdp_attributes``: line 2's failed
    negotiation cannot take fork 3's keys, and keeping fork 1's would leave fork 3's line
    silent; so fork 3's answer is refused saying why. Fork 1's own 200, repeating the answer
    in force, is still taken."""
    monkeypatch.delattr(SdesNegotiation, "check_remote_sdp_attributes")
    ours, first, second = _forked_answers()
    third = _third_fork(ours)
    ours.take_answer(first)
    in_force = [ours.keys(0), ours.keys(1)]
    with pytest.raises(MediaSecurityRefused, match="copied the key"):
        ours.take_answer(_second_line_copying_our_key(ours, second))
    with pytest.raises(MediaSecurityRefused) as refused:
        ours.take_answer(third)
    assert "m= line 2's sdes key exchange failed on an earlier answer" in refused.value.reason
    assert [ours.keys(0), ours.keys(1)] == in_force
    ours.take_answer(first)
    assert [ours.keys(0), ours.keys(1)] == in_force


def test_a_plugin_whose_check_took_what_it_then_refuses_is_its_bug(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``check_remote_sdp_attributes`` said the answer was good and ``remote_sdp_attributes``
    refused it: the plugin's bug (500, KeyExchangeFailed), not the peer's; nothing of the
    leg changed."""
    monkeypatch.setattr(SdesNegotiation, "check_remote_sdp_attributes", lambda self, a: None)
    ours, _, second = _forked_answers()
    before = ours.streams
    with pytest.raises(KeyExchangeFailed, match="the sdes key exchange raised SdesError"):
        ours.take_answer(_second_line_copying_our_key(ours, second))
    assert ours.streams is before and [s.keys for s in ours._offered] == [None, None]


def test_a_fork_whose_keys_are_in_force_repeats_its_answer_after_another_failed() -> None:
    """The first fork's 183 keyed both lines; another fork's 183 then failed line 2's
    negotiation. The first fork's 200, repeating its answer, keeps the keys in force: taken
    (refusing it would end a call whose media flows)."""
    ours, first, second = _forked_answers()
    ours.take_answer(first)
    in_force = [ours.keys(0), ours.keys(1)]
    with pytest.raises(MediaSecurityRefused, match="copied the key"):
        ours.take_answer(_second_line_copying_our_key(ours, second))
    ours.take_answer(first)
    assert [ours.keys(0), ours.keys(1)] == in_force
