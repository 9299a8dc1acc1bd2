"""The RFC 5769 STUN test vectors: moved here from test_stun_codec.py so that no test module
imports another."""

from __future__ import annotations

# RFC 5769 §2.1: sample request (SOFTWARE, PRIORITY, ICE-CONTROLLED, USERNAME "evtj:h6vY",
# MESSAGE-INTEGRITY and FINGERPRINT), password "VOkJxbRl1RmTxUk/WvJxBt".
RFC5769_REQUEST = bytes.fromhex(
    "000100582112a442b7e7a701bc34d686fa87dfae"
    "802200105354554e207465737420636c69656e74"
    "002400046e0001ff"
    "80290008932ff9b151263b36"
    "000600096576746a3a68367659202020"
    "000800149aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a2"
    "80280004e57a3bcf"
)
# RFC 5769 §2.2: sample IPv4 response (SOFTWARE "test vector", XOR-MAPPED-ADDRESS
# 192.0.2.1:32853, MESSAGE-INTEGRITY, FINGERPRINT), same password.
RFC5769_RESPONSE = bytes.fromhex(
    "0101003c2112a442b7e7a701bc34d686fa87dfae"
    "8022000b7465737420766563746f7220"
    "002000080001a147e112a643"
    "000800142b91f599fd9e90c38c7489f92af9ba53f06be7d7"
    "80280004c07d4c96"
)
