"""The ``gateway_inbound_message`` hooks: device plugins fixing up what the gateway receives.

Theory of operation. The endpoint (gateway/core/endpoint.py) parses every message as untrusted
input and answers or drops a malformed one (RFC 3261 §18.1.2, §21.4.1) before anything else:
a plugin sees only well-formed messages. It then hands each one to these hooks, just before
the transaction layer takes it (a request after its Via is stamped with where it came from,
RFC 3261 §18.2.1, and after overload control, which must stay cheap), so a plugin can make a
quirky peer's message into the one the core expects: a ``Remote-Party-ID`` into a
``P-Asserted-Identity``, a carrier's ``Diversion`` into ``History-Info``, a ``c=`` line that
names a private address, a ``Reason`` in a trunk's own words.

What a plugin may not change, and why. The core matches every message to its transaction and
dialog by fields the peer chose; a message whose fields no longer match would be another
message to it (a retransmission taken for a new request, a response for nobody's request, a
BYE for no dialog):

- ``Via`` (every one, as received and stamped): a request's server transaction and a
  response's client transaction are found by the top Via's branch and sent-by (RFC 3261
  §17.2.3, §17.1.3), and responses go back along the request's Vias (§18.2.2);
- ``Call-ID`` and ``CSeq`` (number and method): transaction matching (§17.1.3, §17.2.3: the
  CSeq method) and dialog identification and ordering (§12.2.2);
- the ``From`` and ``To`` tags: the dialog's identity (§12), and whether a request is new;
- a request's method and Request-URI: its transaction (§17.2.3) and what a CANCEL or an ACK
  names (§9.2, §17.2.3); where a call goes is ``gateway_route_call``'s decision;
- a response's status class (1xx, 2xx, 300-699): it drives the client transaction
  (§17.1.1.2) and a 2xx makes a dialog and is ACKed end to end (§13.2.2.4). Another status
  of the same class (a trunk's 480 for busy made a 486) is allowed;
- a request's ``Max-Forwards`` may be lowered, not raised or removed: it stops a request
  looping between gateways and proxies (RFC 3261 §8.1.1.6, §16.3 step 2), and our INVITE
  onwards carries it less one. Not matching, but a plugin that rebuilds a message could
  otherwise reset it at every pass of a loop.

Everything else may change: other headers, the body (SDP), a response's reason phrase. A
replaced message is serialized and parsed again as untrusted input (the size and header limits
included): a plugin cannot make a message the parser would have refused. A plugin whose change
breaks a rule, or whose hook raises, is logged (naming it and the hook, at most once a minute
per plugin) and its change is dropped: the message goes on as the plugin before it left it. A
call never fails for it.

Each plugin's implementation is called on its own (not through pluggy's hook call) so that a
failure is put down to the right plugin and the others' changes are kept; newest-registered
first, as pluggy orders them. None of this runs while no plugin implements the hook: the
endpoint keeps :func:`inbound_hooks`' answer, None then, and tests it per message.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from gateway.core.interfaces import DeviceProfile, InboundMessage, LegInfo
from gateway.core.plugins import HookFailures
from gateway.core.sip.errors import SipError
from gateway.core.sip.message import Request, Response
from gateway.core.sip.parser import parse_message_untrusted
from gateway.core.sip.serializer import serialize_message
from gateway.core.transport.flows import Flow

log = logging.getLogger(__name__)

HOOK = "gateway_inbound_message"


class InboundHooks:
    """The ``gateway_inbound_message`` implementations of one gateway, each with its plugin's
    name, newest-registered first; see the module docstring."""

    def __init__(
        self,
        impls: Sequence[tuple[str, Callable[..., Any], bool]],
        *,
        max_size: int,
        max_headers: int,
        clock: Callable[[], float],
    ) -> None:
        self._impls = tuple(impls)
        self._max_size = max_size
        self._max_headers = max_headers
        # A plugin whose hook keeps failing is logged once a minute, not once per message.
        self._failures = HookFailures(log, clock)
        self.refused = 0
        """Changes dropped (a hook that raised or broke a rule), since the start."""

    @property
    def plugins(self) -> tuple[str, ...]:
        return tuple(name for name, _, _ in self._impls)

    def apply(
        self,
        message: Request | Response,
        flow: Flow,
        *,
        leg: LegInfo | None,
        device: DeviceProfile | None,
    ) -> Request | Response:
        """``message`` as the plugins leave it: each sees the one the plugin before it left
        (``InboundMessage``) and may replace it within the rules."""
        inbound = InboundMessage(message=message, flow=flow, leg=leg, device=device)
        current = message
        for plugin, function, wants in self._impls:
            try:
                function(**{"inbound": inbound} if wants else {})
            except Exception as exc:
                self._refuse(plugin, current, flow, "raised", exc)
                inbound.message = current
                continue
            changed = inbound.message
            if changed is current:
                continue
            try:
                why = changed_what_it_may_not(current, changed)
                if why is None:
                    changed = self._well_formed(changed)
                    # Again on what the parser made of it: a field the plugin wrote under a
                    # compact name ("v", "i": RFC 3261 §7.3.3) is a Via or Call-ID only now.
                    why = changed_what_it_may_not(current, changed)
            except SipError as exc:
                why = f"made it malformed ({exc})"
            except Exception as exc:
                why = f"left a message the core cannot read ({type(exc).__name__})"
            if why is not None:
                self._refuse(plugin, current, flow, why, None)
                inbound.message = current
                continue
            assert isinstance(changed, Request | Response)
            current = inbound.message = changed
        return current

    def _well_formed(self, message: object) -> Request | Response:
        """``message`` written and parsed again as a peer's would be (RFC 3261 §7, the
        endpoint's size and header limits): what the core acts on is what the parser took."""
        if not isinstance(message, Request | Response):
            raise SipError(f"it is a {type(message).__name__}, not a Request or Response")
        data = serialize_message(message)
        return parse_message_untrusted(data, max_size=self._max_size, max_headers=self._max_headers)

    def _refuse(
        self,
        plugin: str,
        message: Request | Response,
        flow: Flow,
        why: str,
        exc: BaseException | None,
    ) -> None:
        self.refused += 1
        what = (
            message.method
            if isinstance(message, Request)
            else f"{message.status} to {message.cseq.method}"
        )
        if exc is not None:
            # The plugin's text is withheld by the usual rule (docs/architecture.md "Logged
            # exceptions"); its name, the hook and the message are ours.
            self._failures.failed(
                plugin,
                exc,
                "plugin %r: %s raised on %s from %s; the message goes on unchanged%s",
                plugin,
                HOOK,
                what,
                flow.key,
            )
        else:
            self._failures.failed(
                plugin,
                None,
                "plugin %r: %s %s on %s from %s; its change is dropped, the message goes on "
                "unchanged%s",
                plugin,
                HOOK,
                why,
                what,
                flow.key,
            )


def changed_what_it_may_not(before: Request | Response, after: object) -> str | None:
    """What ``after``, a hook's replacement of ``before``, changed that it may not (the module
    docstring says why), or None."""
    if isinstance(before, Request):
        if not isinstance(after, Request):
            return f"replaced a request with a {type(after).__name__}"
        if after.method != before.method:
            return "changed the method"
        if after.uri != before.uri:
            return "changed the Request-URI"
        hops = before.max_forwards
        if hops is not None and (after.max_forwards is None or after.max_forwards > hops):
            return "raised or removed Max-Forwards"
    else:
        if not isinstance(after, Response):
            return f"replaced a response with a {type(after).__name__}"
        if _status_class(after.status) != _status_class(before.status):
            return f"changed the status class ({before.status} to {after.status})"
    old, new = before.headers, after.headers
    for name in ("Via", "Call-ID", "CSeq"):
        if old.get_all(name) != new.get_all(name):
            return f"changed {name}"
    try:
        if after.from_.tag != before.from_.tag:
            return "changed the From tag"
        if after.to.tag != before.to.tag:
            return "changed the To tag"
    except SipError as exc:
        return f"made From or To unreadable ({exc})"
    return None


def _status_class(status: int) -> int:
    """1, 2, or 3 for every final non-2xx (RFC 3261 §17.1.1.2 treats 300-699 alike)."""
    return status // 100 if status < 300 else 3


def inbound_hooks(
    pm: Any, *, max_size: int, max_headers: int, clock: Callable[[], float]
) -> InboundHooks | None:
    """The gateway's :class:`InboundHooks`, or None when no plugin implements the hook (then
    the endpoint does nothing more per message than test that None)."""
    caller = getattr(pm.hook, HOOK)
    impls = [
        (impl.plugin_name, impl.function, "inbound" in impl.argnames)
        # pluggy's order: newest first. A hook wrapper (a generator) is not called: the hook
        # has nothing to wrap (docs/plugin_hooks.md).
        for impl in reversed(caller.get_hookimpls())
        if not (impl.hookwrapper or getattr(impl, "wrapper", False))
    ]
    if not impls:
        return None
    return InboundHooks(impls, max_size=max_size, max_headers=max_headers, clock=clock)
