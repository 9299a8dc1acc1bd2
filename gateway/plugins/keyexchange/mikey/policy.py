"""SRTP security policies (RFC 3830 §6.10.1) and the gateway's suite names.

A MIKEY initiator states one policy per crypto session; the responder accepts it or refuses the
whole message (there is no choosing among alternatives as in SDES). :func:`suite_of_policy` maps
a received SP payload to one of ``srtp.SUITES`` or says why it cannot; :func:`policy_for_suite`
writes ours, in one of two styles:

- ``"standard"``: every parameter of §6.10.1 spelled out (as minisip sends them), parameter 3 the
  20-octet HMAC key and parameter 11 the tag length; AES-GCM (RFC 7714) with encryption
  algorithm 6, a 12-octet salt and parameter 20, the AEAD tag length;
- ``"gstreamer"``: what GStreamer's ``gst_mikey_message_new_from_caps`` writes and its
  ``to_caps`` reads: parameters 0, 1, 2, 3, 7, 8, 10 only, with **parameter 3 holding the tag
  length** (10 or 4; 0 for GCM) — a misreading of §6.10.1 we must write for GStreamer to pick
  the right tag.

When reading, a missing parameter takes the §6.10.1 default, and a parameter 3 of 4 or 10 with
HMAC-SHA-1 and no parameter 11 is read GStreamer's way (a tag length: the RFC meaning, the HMAC
key length, is always 20 for HMAC-SHA-1). Every parameter that would weaken or change SRTP
from what the gateway runs (NULL or F8 encryption, SRTP/SRTCP encryption or authentication off,
a key derivation rate, an SRTP prefix, FEC other than FEC-SRTP) makes the policy unacceptable.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.core.media.srtp import SUITES
from gateway.plugins.keyexchange.mikey.payloads import SecurityPolicy

__all__ = ["POLICY_STYLES", "policy_for_suite", "suite_of_policy"]

POLICY_STYLES = ("standard", "gstreamer")
PROT_SRTP = 0

# §6.10.1 parameter types
ENC_ALG, ENC_KEY_LEN, AUTH_ALG, AUTH_KEY_LEN, SALT_LEN, SRTP_PRF, KDR = 0, 1, 2, 3, 4, 5, 6
SRTP_ENC, SRTCP_ENC, FEC_ORDER, SRTP_AUTH, TAG_LEN, PREFIX_LEN = 7, 8, 9, 10, 11, 12
AEAD_TAG_LEN = 20  # RFC 7714 §14.1 (the digest's reading)
_KNOWN_PARAMS = frozenset(range(13)) | {AEAD_TAG_LEN}

ENC_NULL, ENC_AES_CM, ENC_AES_F8, ENC_AES_GCM = 0, 1, 2, 6
AUTH_NULL, AUTH_HMAC_SHA1 = 0, 1

# §6.10.1 defaults: the AES_CM_128_HMAC_SHA1_80 profile.
_DEFAULTS = {
    ENC_ALG: ENC_AES_CM,
    ENC_KEY_LEN: 16,
    AUTH_ALG: AUTH_HMAC_SHA1,
    AUTH_KEY_LEN: 20,
    SRTP_PRF: 0,
    KDR: 0,
    SRTP_ENC: 1,
    SRTCP_ENC: 1,
    FEC_ORDER: 0,
    SRTP_AUTH: 1,
    TAG_LEN: 10,
    PREFIX_LEN: 0,
}


def _p(kind: int, value: int, length: int = 1) -> tuple[int, bytes]:
    return kind, value.to_bytes(length, "big")


def policy_for_suite(
    suite_name: str, policy_no: int = 0, style: str = "standard"
) -> SecurityPolicy:
    """Our SP payload for ``suite_name`` (one of ``srtp.SUITES``)."""
    suite = SUITES[suite_name]
    gcm = suite_name.startswith("AEAD_")
    if style == "gstreamer":
        params = [
            _p(ENC_ALG, ENC_AES_GCM if gcm else ENC_AES_CM),
            _p(ENC_KEY_LEN, suite.master_key_length),
            _p(AUTH_ALG, AUTH_NULL if gcm else AUTH_HMAC_SHA1),
            _p(AUTH_KEY_LEN, 0 if gcm else suite.rtp_tag_length),  # GStreamer: the tag length
            _p(SRTP_ENC, 1),
            _p(SRTCP_ENC, 1),
            _p(SRTP_AUTH, 1),
        ]
    elif gcm:
        params = [
            _p(ENC_ALG, ENC_AES_GCM),
            _p(ENC_KEY_LEN, suite.master_key_length),
            _p(AUTH_ALG, AUTH_NULL),
            _p(SALT_LEN, suite.master_salt_length),
            _p(SRTP_PRF, 0),
            _p(KDR, 0, 4),
            _p(SRTP_ENC, 1),
            _p(SRTCP_ENC, 1),
            _p(FEC_ORDER, 0),
            _p(SRTP_AUTH, 1),
            _p(PREFIX_LEN, 0),
            _p(AEAD_TAG_LEN, suite.rtp_tag_length),
        ]
    else:
        params = [
            _p(ENC_ALG, ENC_AES_CM),
            _p(ENC_KEY_LEN, suite.master_key_length),
            _p(AUTH_ALG, AUTH_HMAC_SHA1),
            _p(AUTH_KEY_LEN, 20),
            _p(SALT_LEN, suite.master_salt_length),
            _p(SRTP_PRF, 0),
            _p(KDR, 0, 4),
            _p(SRTP_ENC, 1),
            _p(SRTCP_ENC, 1),
            _p(FEC_ORDER, 0),
            _p(SRTP_AUTH, 1),
            _p(TAG_LEN, suite.rtp_tag_length),
            _p(PREFIX_LEN, 0),
        ]
    return SecurityPolicy(policy_no, PROT_SRTP, tuple(params))


def suite_of_policy(policy: SecurityPolicy, allowed: Sequence[str]) -> tuple[str | None, str]:
    """The suite a received SP payload describes and that ``allowed`` lists, or (None, why
    not). The reason quotes parameter numbers and values, which are never secret."""
    if policy.prot_type != PROT_SRTP:
        return None, f"SP protocol type {policy.prot_type} is not SRTP"
    values: dict[int, int] = {}
    for kind, raw in policy.params:
        if kind not in _KNOWN_PARAMS:
            return None, f"SP parameter type {kind} is unknown"
        if kind in values:
            return None, f"SP parameter {kind} is repeated"
        if not 1 <= len(raw) <= 4:
            return None, f"SP parameter {kind} has a length of {len(raw)} octets"
        values[kind] = int.from_bytes(raw, "big")
    get = {**_DEFAULTS, **values}.get
    enc = get(ENC_ALG)
    gcm = enc == ENC_AES_GCM
    if enc not in (ENC_AES_CM, ENC_AES_GCM):
        names = {ENC_NULL: "NULL", ENC_AES_F8: "AES-F8"}
        return None, f"SRTP encryption {names.get(enc or 0, str(enc))} is not supported"
    key_length = get(ENC_KEY_LEN)
    for kind, wanted, what in (
        (SRTP_PRF, 0, "an SRTP PRF other than AES-CM"),
        (KDR, 0, "a key derivation rate other than 0"),
        (SRTP_ENC, 1, "SRTP encryption off"),
        (SRTCP_ENC, 1, "SRTCP encryption off"),
        (FEC_ORDER, 0, "an FEC order other than FEC-SRTP"),
        (SRTP_AUTH, 1, "SRTP authentication off"),
        (PREFIX_LEN, 0, "an SRTP prefix"),
    ):
        if get(kind) != wanted:
            return None, f"{what} is not supported"
    if gcm:
        if values.get(AUTH_ALG, AUTH_NULL) != AUTH_NULL:
            return None, "AES-GCM with a separate authentication algorithm is not supported"
        if values.get(AEAD_TAG_LEN, 16) != 16:
            return None, "an AEAD tag other than 16 octets is not supported"
        name = {16: "AEAD_AES_128_GCM", 32: "AEAD_AES_256_GCM"}.get(key_length or 0)
    else:
        if get(AUTH_ALG) != AUTH_HMAC_SHA1:
            return None, "SRTP authentication other than HMAC-SHA-1 is not supported"
        tag = get(TAG_LEN)
        auth_key = get(AUTH_KEY_LEN)
        if TAG_LEN not in values and auth_key in (4, 10):
            tag = auth_key  # GStreamer writes the tag length in parameter 3
        elif auth_key != 20:
            return None, f"an HMAC-SHA-1 key of {auth_key} octets is not supported"
        bits = {10: "80", 4: "32"}.get(tag or 0)
        if bits is None:
            return None, f"an authentication tag of {tag} octets is not supported"
        prefix = {16: "AES_CM_128", 24: "AES_192_CM", 32: "AES_256_CM"}.get(key_length or 0)
        name = f"{prefix}_HMAC_SHA1_{bits}" if prefix else None
    if name is None or name not in SUITES:
        return None, f"an SRTP key of {key_length} octets is not supported"
    salt = values.get(SALT_LEN, SUITES[name].master_salt_length)
    if salt != SUITES[name].master_salt_length:
        return None, f"a master salt of {salt} octets is not supported with {name}"
    if name not in allowed:
        return None, f"suite {name} is not allowed on this leg"
    return name, ""
