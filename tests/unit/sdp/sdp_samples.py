"""Session descriptions seen from real peers, written out as text (LF; ``crlf()`` gives wire bytes).

BARESIP_*, LINPHONE_SRTP and SIPP_UAC were captured on 127.0.0.1 from baresip 1.0.0, linphonec
5.1.65 and sipp 3.6.1 (its built-in uac scenario) calling a sipp UAS (see /work/shared/peers.md);
the SDES keys were then replaced by made-up ones of the same length. RTPENGINE_SRTP_OFFER follows
the shape of rtpengine 10.5's SDES offer (peers.md §4: twelve a=crypto lines, a=setup and a
fingerprint); WEBRTC_OFFER the shape of a browser's bundled DTLS-SRTP offer. RFC8866_EXAMPLE is
the example of RFC 8866 §5. All keys here are fake.
"""

from __future__ import annotations


def crlf(text: str) -> bytes:
    """The sample as it travels: CRLF line ends, one after the last line."""
    return text.strip("\n").replace("\n", "\r\n").encode() + b"\r\n"


SDES_KEY_80 = "XHiTXxObmp1LJ5nQapVzkuwoaidT7uibEpVsGo1l"
SDES_KEY_256 = "wRci8OYUp2TCKaAVaHFNoilH67kCzVogXlVXZQ/j6pjBFyLw5hSnZMIpoBVocQ=="
FINGERPRINT = (
    "sha-256 06:29:84:32:E8:06:6B:29:E2:22:3B:CC:23:AA:95:04:B5:6A:E5:08:FA:BF:34:35:50:88:69"
    ":B9:C3:19:0E:22"
)

BARESIP_PLAIN = """
v=0
o=- 3877100932 1999646198 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
a=tool:baresip 1.0.0
m=audio 20102 RTP/AVP 0 8 96 101
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:96 opus/48000/2
a=fmtp:96 stereo=1;sprop-stereo=1
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=sendrecv
a=label:1
a=rtcp-rsize
a=ssrc:3104204325 cname:sip:a@127.0.0.1:5381
a=minptime:20
a=ptime:20
"""

BARESIP_SDES = f"""
v=0
o=- 1074491509 1209983671 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
a=tool:baresip 1.0.0
m=audio 20164 RTP/SAVP 0 8 96 101
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:96 opus/48000/2
a=fmtp:96 stereo=1;sprop-stereo=1
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=sendrecv
a=label:1
a=rtcp-rsize
a=ssrc:1552487922 cname:sip:a@127.0.0.1:5381
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{SDES_KEY_80}
a=minptime:20
a=ptime:20
"""

# baresip puts a=setup and a=fingerprint at session level.
BARESIP_FINGERPRINT = (
    "SHA-256 A5:34:AC:1C:1C:E9:9E:B3:7C:AD:8F:83:34:54:74:FF:BA:C1:92:70:48:3D:01:15:38:FD:74:AF:E5"
    ":AE:02:E6"
)
BARESIP_DTLS = f"""
v=0
o=- 3151477298 1801633935 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
a=tool:baresip 1.0.0
a=setup:actpass
a=fingerprint:{BARESIP_FINGERPRINT}
m=audio 20150 UDP/TLS/RTP/SAVPF 0 8 96 101
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:96 opus/48000/2
a=fmtp:96 stereo=1;sprop-stereo=1
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=sendrecv
a=label:1
a=rtcp-rsize
a=ssrc:2221651845 cname:sip:a@127.0.0.1:5381
a=minptime:20
a=ptime:20
"""

# linphone: a=fmtp for static PT 18 without a=rtpmap; telephone-event at three clock rates.
LINPHONE_SRTP = f"""
v=0
o=a 3724 2681 IN IP4 127.0.0.1
s=Talk
c=IN IP4 127.0.0.1
t=0 0
a=rtcp-xr:rcvr-rtt=all:10000 stat-summary=loss,dup,jitt,TTL voip-metrics
m=audio 7278 RTP/SAVP 96 97 98 0 8 18 99 100 101
a=rtpmap:96 opus/48000/2
a=fmtp:96 useinbandfec=1
a=rtpmap:97 speex/16000
a=fmtp:97 vbr=on
a=rtpmap:98 speex/8000
a=fmtp:98 vbr=on
a=fmtp:18 annexb=yes
a=rtpmap:99 telephone-event/48000
a=rtpmap:100 telephone-event/16000
a=rtpmap:101 telephone-event/8000
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:DAeaFT4mlR/NoPoShKaLKdwGCLmU4t3nbt+BZd3a
a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:dCNOmK/nSY+12vHzasLXiswzlGT5UHA7jAGYkvmC
a=crypto:3 AES_256_CM_HMAC_SHA1_80 inline:{SDES_KEY_256}
a=crypto:4 AES_256_CM_HMAC_SHA1_32 inline:{SDES_KEY_256}
a=rtcp-fb:* trr-int 5000
a=rtcp-fb:* ccm tmmbr
"""

# sipp -sn uac, its [local_ip]/[media_ip]/[media_port] filled in as sipp does on 127.0.0.1.
SIPP_UAC = """
v=0
o=user1 53655765 2353687637 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio 6000 RTP/AVP 0
a=rtpmap:0 PCMU/8000
"""

RTPENGINE_SRTP_OFFER = f"""
v=0
o=- 1545997027 1 IN IP4 127.0.0.1
s=tester
t=0 0
m=audio 31004 RTP/SAVP 0 8 101
c=IN IP4 127.0.0.1
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=sendrecv
a=rtcp:31005
a=crypto:1 AEAD_AES_256_GCM inline:R7zCJRv9M586CeKfkwgvPcQLw4AU5Vt/UaNye0pyyHdHvMIlG/0znzoJ4p8=
a=crypto:2 AEAD_AES_128_GCM inline:7FUAjp1Ldtwvd4daXWrETHEcfPoaiREl/iKdoQ==
a=crypto:3 AES_256_CM_HMAC_SHA1_80 inline:{SDES_KEY_256}
a=crypto:4 AES_256_CM_HMAC_SHA1_32 inline:{SDES_KEY_256}
a=crypto:5 AES_192_CM_HMAC_SHA1_80 inline:+wGBBI00DqffuzGJYbnYQ5LjPW8na1dzuj0zM83QLsL7AYEEjTQ=
a=crypto:6 AES_192_CM_HMAC_SHA1_32 inline:+wGBBI00DqffuzGJYbnYQ5LjPW8na1dzuj0zM83QLsL7AYEEjTQ=
a=crypto:7 AES_CM_128_HMAC_SHA1_80 inline:XHiTXxObmp1LJ5nQapVzkuwoaidT7uibEpVsGo1l
a=crypto:8 AES_CM_128_HMAC_SHA1_32 inline:XHiTXxObmp1LJ5nQapVzkuwoaidT7uibEpVsGo1l
a=crypto:9 F8_128_HMAC_SHA1_80 inline:DAeaFT4mlR/NoPoShKaLKdwGCLmU4t3nbt+BZd3a
a=crypto:10 F8_128_HMAC_SHA1_32 inline:DAeaFT4mlR/NoPoShKaLKdwGCLmU4t3nbt+BZd3a
a=crypto:11 NULL_HMAC_SHA1_80 inline:dCNOmK/nSY+12vHzasLXiswzlGT5UHA7jAGYkvmC
a=crypto:12 NULL_HMAC_SHA1_32 inline:dCNOmK/nSY+12vHzasLXiswzlGT5UHA7jAGYkvmC
a=setup:actpass
a=fingerprint:{FINGERPRINT}
a=tls-id:8d2a6a0d8e1ed2e3a5e4f1b2c3d4e5f6
a=ptime:20
"""

WEBRTC_ICE_PWD = "asd88fgpdd777uzjYhagZg3s"
# Trickle ICE (RFC 8840 §4.1.1): port 9 and c=IN IP4 0.0.0.0 are placeholders, not hold.
WEBRTC_OFFER = f"""
v=0
o=- 4611731400430051336 2 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0 1
a=extmap-allow-mixed
a=msid-semantic: WMS stream0
m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126
c=IN IP4 0.0.0.0
a=rtcp:9 IN IP4 0.0.0.0
a=ice-ufrag:8hhY
a=ice-pwd:{WEBRTC_ICE_PWD}
a=ice-options:trickle
a=fingerprint:{FINGERPRINT}
a=setup:actpass
a=mid:0
a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level
a=sendrecv
a=msid:stream0 track0
a=rtcp-mux
a=rtcp-rsize
a=rtpmap:111 opus/48000/2
a=rtcp-fb:111 transport-cc
a=fmtp:111 minptime=10;useinbandfec=1
a=rtpmap:63 red/48000/2
a=fmtp:63 111/111
a=rtpmap:9 G722/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:13 CN/8000
a=rtpmap:110 telephone-event/48000
a=rtpmap:126 telephone-event/8000
a=ssrc:3735928559 cname:4TOk42mSjXCkVIa6
m=video 9 UDP/TLS/RTP/SAVPF 96 97
c=IN IP4 0.0.0.0
a=rtcp:9 IN IP4 0.0.0.0
a=ice-ufrag:8hhY
a=ice-pwd:{WEBRTC_ICE_PWD}
a=ice-options:trickle
a=fingerprint:{FINGERPRINT}
a=setup:actpass
a=mid:1
a=sendrecv
a=rtcp-mux
a=rtcp-rsize
a=rtpmap:96 VP8/90000
a=rtcp-fb:96 nack
a=rtcp-fb:96 nack pli
a=rtpmap:97 rtx/90000
a=fmtp:97 apt=96
"""

# Desk phones and SBCs add attributes nobody registered; they must survive a relay in order.
UNKNOWN_ATTRIBUTES = """
v=0
o=CiscoSystemsSIP-GW-UserAgent 8270 2206 IN IP4 192.0.2.44
s=SIP Call
c=IN IP4 192.0.2.44
t=0 0
a=X-nat:0
m=audio 17044 RTP/AVP 18 101 19
c=IN IP4 192.0.2.44
a=rtpmap:18 G729/8000
a=fmtp:18 annexb=no
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=rtpmap:19 CN/8000
a=silenceSupp:off - - - -
a=x-custom-thing
a=X-cdsc: 1 audio RTP/AVP 0 18
a=ptime:20
a=sendrecv
"""

IPV6 = """
v=0
o=alice 2890844526 2890844526 IN IP6 2001:db8::10
s=-
c=IN IP6 2001:db8::10
t=0 0
m=audio 49170 RTP/AVP 0 8
a=rtcp:49171 IN IP6 2001:db8::11
a=recvonly
"""

# RFC 8866 §5, with every optional session line, and a media-level c= overriding the session's.
RFC8866_EXAMPLE = """
v=0
o=jdoe 3724394400 3724394405 IN IP4 198.51.100.1
s=Call to John Smith
i=SDP Offer #1
u=http://www.jdoe.example.com/home.html
e=Jane Doe <jane@jdoe.example.com>
p=+1 617 555-6011
c=IN IP4 198.51.100.1
t=0 0
m=audio 49170 RTP/AVP 0
m=audio 49180 RTP/AVP 0
m=video 51372 RTP/AVP 99
c=IN IP6 2001:db8::2
a=rtpmap:99 h263-1998/90000
"""

# RFC 8866 §5.7, §5.9-§5.12 forms: multicast TTL/count, repeats, zone offsets, k=, b=.
MULTICAST_SCHEDULE = """
v=0
o=mhandley 2890844526 2890842807 IN IP4 192.0.2.1
s=SDP Seminar
i=A Seminar on the session description protocol
c=IN IP4 233.252.0.1/127/3
b=CT:128
t=3724394400 3724398000
r=604800 3600 0 90000
r=7d 1h 0 25h
z=2882844526 -1h 2898848070 0
t=3725000000 3725003600
k=prompt
a=recvonly
m=audio 49170/2 RTP/AVP 0
b=AS:64
m=video 51372 RTP/AVP 99
c=IN IP6 ff1e:db8::1/3
a=rtpmap:99 h263-1998/90000
"""

ALL_SAMPLES = {
    "baresip_plain": BARESIP_PLAIN,
    "baresip_sdes": BARESIP_SDES,
    "baresip_dtls": BARESIP_DTLS,
    "linphone_srtp": LINPHONE_SRTP,
    "sipp_uac": SIPP_UAC,
    "rtpengine_srtp_offer": RTPENGINE_SRTP_OFFER,
    "webrtc_offer": WEBRTC_OFFER,
    "unknown_attributes": UNKNOWN_ATTRIBUTES,
    "ipv6": IPV6,
    "rfc8866_example": RFC8866_EXAMPLE,
    "multicast_schedule": MULTICAST_SCHEDULE,
}
