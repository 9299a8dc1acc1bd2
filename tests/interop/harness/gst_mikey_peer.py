"""A GStreamer GstMIKEY peer, run by the *system* python (``/usr/bin/python3`` with
``gi.repository.GstSdp``, Debian ``python3-gi gir1.2-gst-plugins-base-1.0``) as a subprocess of
the interop tests. It imports nothing of the gateway. Two commands, one JSON line out:

``parse <base64 I_MSG>``
    ``gst_mikey_message_new_from_data`` then ``gst_mikey_message_to_caps``: what GStreamer makes
    of our message (srtp-key, ciphers, auths, number of crypto sessions). The parse goes through
    ctypes into libgstsdp: PyGObject cannot build the ``GstMIKEYDecryptInfo`` argument (an
    opaque struct), and ``gst_sdp_message_parse_keymgmt``'s binding fails on its return value;
    passing NULL is what GStreamer's own SDP code does.
``build <hex master key||salt> <srtp-cipher> <srtp-auth> <ssrc>``
    ``gst_mikey_message_new_from_caps`` with an ``application/x-srtp`` caps, then
    ``gst_mikey_message_add_cs_srtp(0, ssrc, 0)`` as rtspsrc does: the base64 I_MSG.

Never give it messages with DH, SIGN, ID, CERT, CHASH, V, ERR or general extension payloads: its
parser loops forever on them (specs/mikey.md §6). The tests run it under a timeout anyway.
"""

import ctypes
import json
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstSdp", "1.0")
from gi.repository import Gst, GstSdp  # noqa: E402


def parse(b64):
    import base64

    data = base64.b64decode(b64)
    sdp = ctypes.CDLL("libgstsdp-1.0.so.0")
    gst = ctypes.CDLL("libgstreamer-1.0.so.0")
    sdp.gst_mikey_message_new_from_data.restype = ctypes.c_void_p
    sdp.gst_mikey_message_new_from_data.argtypes = [
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.c_void_p,
        ctypes.c_void_p,
    ]
    sdp.gst_mikey_message_to_caps.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    sdp.gst_mikey_message_get_n_cs.argtypes = [ctypes.c_void_p]
    sdp.gst_mikey_message_get_n_payloads.argtypes = [ctypes.c_void_p]
    gst.gst_caps_new_empty_simple.restype = ctypes.c_void_p
    gst.gst_caps_new_empty_simple.argtypes = [ctypes.c_char_p]
    gst.gst_caps_to_string.restype = ctypes.c_void_p
    gst.gst_caps_to_string.argtypes = [ctypes.c_void_p]
    msg = sdp.gst_mikey_message_new_from_data(data, len(data), None, None)
    if not msg:
        return {"parsed": False}
    caps = gst.gst_caps_new_empty_simple(b"application/x-srtp")
    ok = bool(sdp.gst_mikey_message_to_caps(msg, caps))
    text = ctypes.string_at(gst.gst_caps_to_string(caps)).decode()
    structure = Gst.Caps.from_string(text).get_structure(0)
    result = {
        "parsed": True,
        "to_caps": ok,
        "n_cs": sdp.gst_mikey_message_get_n_cs(msg),
        "n_payloads": sdp.gst_mikey_message_get_n_payloads(msg),
    }
    for name in ("srtp-cipher", "srtp-auth", "srtcp-cipher", "srtcp-auth"):
        result[name] = structure.get_string(name)
    key = structure.get_value("srtp-key")
    if key is not None:
        ok, info = key.map(Gst.MapFlags.READ)
        result["srtp-key"] = bytes(info.data).hex()
        key.unmap(info)
    return result


def build(key_hex, cipher, auth, ssrc):
    caps = Gst.Caps.from_string(
        f"application/x-srtp, srtp-key=(buffer){key_hex}, srtp-cipher=(string){cipher}, "
        f"srtp-auth=(string){auth}, srtcp-cipher=(string){cipher}, srtcp-auth=(string){auth}"
    )
    msg = GstSdp.MIKEYMessage.new_from_caps(caps)
    msg.add_cs_srtp(0, int(ssrc), 0)
    return {"message": msg.base64_encode(), "version": Gst.version_string()}


def main():
    Gst.init(None)
    command, *args = sys.argv[1:]
    result = parse(*args) if command == "parse" else build(*args)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
