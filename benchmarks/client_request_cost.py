"""What the endpoint's bookkeeping of sessions nobody holds costs each request it sends.

Run from the repository root (a few seconds)::

    python benchmarks/client_request_cost.py

Figures, in ns, the best of ``--rounds`` runs of ``--number`` each:

- **ClientRequest(), INVITE / BYE**: making the endpoint's record of a client transaction
  (``gateway.core.endpoint.ClientRequest``) for a new INVITE and for a BYE in a dialog. The
  orphan-BYE work (session 29) read the INVITE's To and From there (two header parses).
- **send_request, INVITE / BYE / BYE of the INVITE's call**: ``SipEndpoint.send_request`` with
  the flow given and nothing acted on (the transaction layer's work included, the network's
  not): the INVITE is indexed by the endpoint, a BYE of another call is looked up in that
  index, and a BYE of that INVITE's call (its transaction still alive) is noted on it.
"""

from __future__ import annotations

import argparse
import sys
import timeit
from pathlib import Path
from typing import Any

import trio

# This checkout's gateway, not the one installed in the virtualenv.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.core.endpoint import ClientRequest, SipEndpoint
from gateway.core.sip.message import Request
from gateway.core.sip.parser import parse_message_untrusted
from gateway.core.sip.transaction import TransactionTable
from gateway.core.sip.via import Hop
from gateway.core.transport.flows import Flow, FlowKey

INVITE = (
    "INVITE sip:+4930123456@192.0.2.10:5060 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK{n}\r\n"
    "Max-Forwards: 70\r\n"
    'From: "Alice" <sip:+4930999@192.0.2.1>;tag=fromtag1\r\n'
    "To: <sip:+4930123456@192.0.2.10>\r\n"
    "Call-ID: {call}@192.0.2.1\r\n"
    "CSeq: 1 INVITE\r\n"
    "Contact: <sip:gw@192.0.2.1:5060>\r\n"
    "Content-Length: 0\r\n\r\n"
)
BYE = (
    INVITE.replace("INVITE sip", "BYE sip", 1)
    .replace("CSeq: 1 INVITE", "CSeq: 2 BYE")
    .replace("To: <sip:+4930123456@192.0.2.10>", "To: <sip:+4930123456@192.0.2.10>;tag=totag9")
)
FLOW = Flow(
    key=FlowKey("udp", ("192.0.2.1", 5060), ("192.0.2.10", 5060)), send=None, reliable=False
)  # type: ignore[arg-type]


def request(template: str, n: int, call: str = "call1") -> Request:
    message = parse_message_untrusted(template.format(n=n, call=call).encode())
    assert isinstance(message, Request)
    return message


def construct(template: str, number: int, rounds: int) -> float:
    table = TransactionTable()
    txn, _ = table.send_request(request(template, 0), peer=Hop("UDP", "192.0.2.10", 5060), now=0.0)
    best = min(timeit.repeat(lambda: ClientRequest(txn, FLOW), number=number, repeat=rounds))
    return best / number * 1e9


def endpoint() -> Any:
    ep = SipEndpoint.__new__(SipEndpoint)
    ep.transactions = TransactionTable()
    ep._client_requests = {}
    ep._invites = {}

    async def flow_to(_transport: str, _address: object, flow: Flow | None = None) -> Flow:
        assert flow is not None
        return flow

    async def act(_outputs: object, _arrival: object = None) -> None:
        return None

    ep.flow_to = flow_to
    ep._act = act
    return ep


async def sending(number: int, rounds: int) -> dict[str, float]:
    figures: dict[str, float] = {}
    for name in ("INVITE", "BYE", "BYE of the INVITE's call"):
        best = float("inf")
        for _ in range(rounds):
            ep = endpoint()
            await ep.send_request(
                request(INVITE, 10**9, "call1"), transport="udp", address=FLOW.remote, flow=FLOW
            )
            if name == "INVITE":
                made = [request(INVITE, n, f"c{n}") for n in range(number)]
            elif name == "BYE":
                made = [request(BYE, n, f"c{n}") for n in range(number)]
            else:
                made = [request(BYE, n, "call1") for n in range(number)]
            start = timeit.default_timer()
            for r in made:
                await ep.send_request(r, transport="udp", address=FLOW.remote, flow=FLOW)
            best = min(best, timeit.default_timer() - start)
        figures[name] = best / number * 1e9
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    print(f"ClientRequest(), INVITE: {construct(INVITE, args.number, args.rounds):7.0f} ns")
    print(f"ClientRequest(), BYE:    {construct(BYE, args.number, args.rounds):7.0f} ns")
    for name, ns in trio.run(sending, args.number, args.rounds).items():
        print(f"send_request, {name}: {ns:7.0f} ns")


if __name__ == "__main__":
    main()
