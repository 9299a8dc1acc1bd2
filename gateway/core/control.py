"""The control socket: what a running gateway answers ``voipgw calls``, ``voipgw trunks``,
``voipgw media-workers`` and ``voipgw recording`` on its own host.

Theory of operation
-------------------
The store holds what a call negotiated, saved as it changes (``calls/records.py``); what changes
all the time, a live call's RTCP figures, is asked of the gateway instead, when an operator looks.
The gateway listens on a Unix stream socket in its state directory, :data:`SOCKET_NAME` (mode
0600, in a directory of mode 0700: only the gateway's own user, who can read the store anyway,
may ask; ``control_server.py``). A client sends one request, a JSON object on one line::

    {"query": "live_quality"}

and reads one JSON object back, until the gateway closes the connection. Queries:

- ``live_quality``: ``{"calls": {RECORD_ID: {"a": LEG, "b": LEG}}}``, per live call (keyed as its
  call record, ``call_id`` there) each leg it has so far: its RTCP figures now
  (``media.quality.LegQuality.live``: the call record's figures and the ages in seconds of the
  leg's last report block and last RTCP) or null while its phone has sent no RTCP. Calls whose
  quality is not read (``[media] rtcp_quality = false``) are left out.
- ``trunks``: ``{"trunks": [TRUNK, ...]}``, each trunk of the configuration as
  ``Gateway.trunks_status`` describes it (``voipgw trunks``): name, address, enabled, up and why
  not, registered, and for a trunk named by DNS its resolved targets and when it was resolved
  and is resolved next.
- ``media_workers``: ``{"workers": [WORKER, ...] | null, "address": ADDRESS | null}``, each media
  worker slot as ``WorkerPool.describe_workers`` describes it (``voipgw media-workers``): its
  port slice, state, process id, open streams, restarts by reason, why it is stopped and its
  process's resident memory; null when the relay runs inside the gateway's process (``[media]
  workers = 1``).
- ``recording``, with ``"action"`` (``"pause"`` or ``"resume"``), ``"call_id"`` (a live call's
  record id, ``Call-ID;tag`` as ``voipgw calls`` shows it, or its SIP Call-ID as log lines name
  it) and ``"by"`` (who asks, at most :data:`MAX_BY` printable characters, for the log and the
  call record): pause or resume the recordings of that call (``CallManager.pause_recording``;
  an interception is never paused). ``{"call_id": RECORD_ID, "paused": BOOL, "changed": BOOL,
  "recordings": [NAME, ...]}`` (with ``"paused_by_preference": [NAME, ...]`` when recordings
  stay paused for a party's ``a=recordpref``, ``[plugins.siprec] recordpref = "pause"``); a
  call that is not live, or not recorded, is an error.

Anything else is answered ``{"error": REASON}``. Nothing is worked out until asked: a gateway
that no one asks pays for one listening socket, and a call for nothing.

Bounds: a request is at most :data:`MAX_REQUEST` octets and must arrive within
``control_server.REQUEST_TIMEOUT``; the client reads at most :data:`MAX_ANSWER` octets and waits
:data:`ASK_TIMEOUT` for them. This module imports no trio (the CLI uses it); the protocol part
(:func:`parse_request_untrusted`, :func:`respond`) is sans-IO.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from gateway.core.logs import log_exception

log = logging.getLogger(__name__)

SOCKET_NAME = "control.sock"
"""The control socket's name in the state directory (``[gateway] state_dir``)."""

MAX_PATH = 107
"""The longest socket path (octets) Linux binds: ``sun_path`` is 108 octets with its NUL."""

MAX_REQUEST = 1024
"""The longest request line, its newline included."""

MAX_ANSWER = 64 * 1024 * 1024
"""The longest answer the client reads: some 500 octets per live call."""

ASK_TIMEOUT = 10.0
"""Seconds the client waits for the whole answer (the gateway walks its live calls for it)."""

QUERIES = ("live_quality", "trunks", "media_workers", "recording")

RECORDING_ACTIONS = ("pause", "resume")
"""The ``recording`` query's actions."""

MAX_BY = 64
"""The longest ``by`` of a ``recording`` request (characters): who paused, as logged."""

MAX_CALL_ID = 256
"""The longest ``call_id`` of a ``recording`` request (characters)."""


class ControlError(Exception):
    """A request the gateway does not take (the text says why, and is what it answers), or a
    client's failure to get an answer (no gateway running, a refusal, a broken answer)."""


def socket_path(state_dir: str | Path) -> Path:
    """Where the gateway whose state directory is ``state_dir`` listens."""
    return Path(state_dir) / SOCKET_NAME


def parse_request_untrusted(data: bytes) -> str:
    """The query of one request line (see the module docstring), or :class:`ControlError`."""
    return _parse_untrusted(data)[0]


def _parse_untrusted(data: bytes) -> tuple[str, dict[str, str]]:
    """The query of one request line and its arguments (``recording``'s), or
    :class:`ControlError`."""
    if len(data) > MAX_REQUEST:
        raise ControlError(f"request longer than {MAX_REQUEST} octets")
    line, newline, _ = data.partition(b"\n")
    if not newline:
        raise ControlError("request not ended by a newline")
    try:
        request = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ControlError("request is not JSON") from None
    query = request.get("query") if isinstance(request, dict) else None
    if not isinstance(query, str):
        raise ControlError('request is not an object with a "query" string')
    if query not in QUERIES:
        raise ControlError(f"unknown query {query[:40]!r}; known: {', '.join(QUERIES)}")
    if query != "recording":
        return query, {}
    assert isinstance(request, dict)
    return query, recording_arguments_untrusted(request)


def recording_arguments_untrusted(request: Mapping[str, object]) -> dict[str, str]:
    """The ``recording`` request's action, call id and who asks, checked (bounded, no control
    characters: ``by`` goes into log lines and the call record), or :class:`ControlError`."""
    action, call_id, by = request.get("action"), request.get("call_id"), request.get("by")
    if action not in RECORDING_ACTIONS:
        raise ControlError(f'recording: "action" must be one of {", ".join(RECORDING_ACTIONS)}')
    if not isinstance(call_id, str) or not 0 < len(call_id) <= MAX_CALL_ID:
        raise ControlError(
            f'recording: "call_id" must be a call id of 1 to {MAX_CALL_ID} characters'
        )
    if not isinstance(by, str) or not 0 < len(by) <= MAX_BY or not by.isprintable():
        raise ControlError(f'recording: "by" must say who asks, 1 to {MAX_BY} printable characters')
    if not call_id.isprintable():
        raise ControlError('recording: "call_id" has characters a call id never has')
    return {"action": str(action), "call_id": call_id, "by": by}


def respond(data: bytes, answer: Callable[..., Mapping[str, object]]) -> bytes:
    """The octets that answer the request ``data``: ``answer(query)`` (``answer(query,
    arguments)`` for a query that takes arguments: ``recording``) as one JSON line, or an
    error object. Never raises: an ``answer`` that fails is logged and answered as an error,
    one that raises :class:`ControlError` (a request it does not take: an unknown call) with
    its text."""
    try:
        query, arguments = _parse_untrusted(data)
    except ControlError as exc:
        return _encode({"error": str(exc)})
    try:
        return _encode(answer(query, arguments) if arguments else answer(query))
    except ControlError as exc:
        return _encode({"error": str(exc)})
    except Exception:
        log_exception(log, "control socket: answering %r failed", query)
        return _encode({"error": f"the gateway failed to answer {query!r} (logged)"})


def _encode(answer: Mapping[str, object]) -> bytes:
    return json.dumps(answer, separators=(",", ":")).encode() + b"\n"


def ask(
    path: Path,
    query: str,
    *,
    timeout: float = ASK_TIMEOUT,
    arguments: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Ask the gateway listening at ``path`` (blocking: for the CLI), with the query's
    ``arguments`` if it takes any. :class:`ControlError` says why there is no answer."""
    if len(bytes(path)) > MAX_PATH:
        raise ControlError(f"{path} is longer than a Unix socket path may be ({MAX_PATH} octets)")
    chunks: list[bytes] = []
    size = 0
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
            sock.sendall(_encode({"query": query, **(arguments or {})}))
            while chunk := sock.recv(65536):
                size += len(chunk)
                if size > MAX_ANSWER:
                    raise ControlError(f"answer longer than {MAX_ANSWER} octets")
                chunks.append(chunk)
        except FileNotFoundError:
            raise ControlError(f"no gateway running here ({path} does not exist)") from None
        except ConnectionRefusedError:
            raise ControlError(f"no gateway answers on {path}") from None
        except TimeoutError:
            raise ControlError(f"the gateway did not answer within {timeout:g} s") from None
        except OSError as exc:
            raise ControlError(f"{path}: {exc.strerror or exc}") from None
    try:
        answer = json.loads(b"".join(chunks))
    except (UnicodeDecodeError, ValueError):
        raise ControlError("the gateway's answer is not JSON") from None
    if not isinstance(answer, dict):
        raise ControlError("the gateway's answer is not a JSON object")
    if "error" in answer:
        raise ControlError(f"the gateway answered: {answer['error']}")
    return answer
