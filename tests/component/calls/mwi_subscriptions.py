"""The voicemail server and message-summary subscriptions of the in-memory MWI tests: moved here
from test_subscriptions_memory.py so that no test module imports another."""

from __future__ import annotations

import trio

from gateway.core.sip.dialog import Dialog
from gateway.core.sip.message import Request, Response
from gateway.testing.sip_agent import Received, SipAgent
from tests.component.calls.b2bua_env import (
    GW,
    B2bua,
)

SUMMARY = b"Messages-Waiting: yes\r\nVoice-Message: 2/8 (0/2)\r\n"
SUMMARY_TYPE = "application/simple-message-summary"
SUMMARY_READ = b"Messages-Waiting: no\r\nVoice-Message: 0/10 (0/2)\r\n"


def subscribe_request(
    phone: SipAgent, *, expires: int = 600, event: str = "message-summary", uri: str | None = None
) -> Request:
    return phone.new_request(
        "SUBSCRIBE",
        uri or f"sip:{phone.user}@127.0.0.1:5060",
        to=phone.aor,
        extra=[("Event", event), ("Expires", str(expires)), ("Accept", SUMMARY_TYPE)],
    )


class Voicemail:
    """The carrier as a voicemail server: answers SUBSCRIBE (new ones and refreshes) with
    ``status``, keeping the dialog, and NOTIFYs on demand."""

    def __init__(
        self, agent: SipAgent, status: int = 200, *, final_notify: trio.Nursery | None = None
    ) -> None:
        self.agent = agent
        self.status = status
        self.dialog: Dialog | None = None
        self.dialogs: dict[str, Dialog] = {}  # by Call-ID: each subscription's
        self.subscribes: list[Request] = []
        # With a nursery: after its 200 to an unsubscribe, the final NOTIFY a voicemail server
        # sends (RFC 6665 §4.1.2.3), its answer kept in ``final_answers``.
        self._final_notify = final_notify
        self.final_answers: list[int] = []
        agent.out_of_dialog = self._out_of_dialog
        agent.in_dialog = self._in_dialog

    async def _out_of_dialog(self, received: Received) -> bool:
        if received.request.method != "SUBSCRIBE":
            return False
        self.subscribes.append(received.request)
        expires = received.request.headers.get("Expires") or "3600"
        response = await self.agent.respond(received, self.status, extra=[("Expires", expires)])
        if self.status < 300:
            self.dialog = Dialog.create_uas(received.request, response)
            self.dialogs[received.request.call_id] = self.dialog
            self.agent.add_dialog(self.dialog)
        return True

    async def _in_dialog(self, received: Received) -> bool:
        if received.request.method != "SUBSCRIBE":
            return False
        self.subscribes.append(received.request)
        expires = received.request.headers.get("Expires") or "3600"
        await self.agent.respond(received, 200, extra=[("Expires", expires)])
        if expires == "0" and self._final_notify is not None:
            dialog = self.dialogs.get(received.request.call_id, self.dialog)
            self._final_notify.start_soon(self._send_final_notify, dialog)
        return True

    async def _send_final_notify(self, dialog: Dialog | None) -> None:
        final = await self.notify("terminated;reason=timeout", SUMMARY_READ, dialog=dialog)
        self.final_answers.append(final.status)

    async def notify(
        self,
        state: str = "active;expires=500",
        body: bytes = SUMMARY,
        *,
        dialog: Dialog | None = None,
    ) -> Response:
        """A NOTIFY in ``dialog`` (default: the latest subscription's)."""
        dialog = dialog or self.dialog
        assert dialog is not None
        request = dialog.create_request(
            "NOTIFY",
            via=self.agent.new_via(),
            contact=self.agent.contact,
            extra=[("Event", "message-summary"), ("Subscription-State", state)],
            body=body,
            content_type=SUMMARY_TYPE if body else None,
        )
        return await (await self.agent.send(request, GW)).final()


async def subscribed(env: B2bua, voicemail: Voicemail, *, expires: int = 600) -> Dialog:
    """alice subscribes (answering our 407); her side of the dialog."""
    sent, final = await env.alice.send_authenticated(subscribe_request(env.alice, expires=expires))
    assert final.status == 200, final.reason
    dialog = Dialog.create_uac(sent, final)
    env.alice.add_dialog(dialog)
    return dialog
