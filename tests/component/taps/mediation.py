"""A mediation function for tests: takes X2/X3 PDUs over TCP or TLS on 127.0.0.1 and keeps them,
acknowledging keepalives unless told not to (or that long after they came: ``ack_delay``)."""

from __future__ import annotations

import ssl

import attrs
import trio

from gateway.plugins.taps.intercept import pdu


@attrs.define
class Mediation:
    port: int = 0
    received: list[pdu.Pdu] = attrs.field(factory=list)
    connections: int = 0
    acknowledge: bool = True
    ack_delay: float = 0.0
    ssl_context: ssl.SSLContext | None = None
    peer_certificates: list[dict[str, object]] = attrs.field(factory=list)
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        with self.scope:
            listeners = await trio.open_tcp_listeners(self.port, host="127.0.0.1")
            self.port = listeners[0].socket.getsockname()[1]
            task_status.started(self.port)
            await trio.serve_listeners(self._connection, listeners)

    def stop(self) -> None:
        self.scope.cancel()

    def of_type(self, kind: int) -> list[pdu.Pdu]:
        return [p for p in self.received if p.pdu_type == kind]

    def copies(self) -> list[pdu.Pdu]:
        """What was intercepted (X2 and X3), without the keepalives every connection begins
        with."""
        return [p for p in self.received if p.pdu_type in (pdu.X2, pdu.X3)]

    async def _connection(self, tcp: trio.SocketStream) -> None:
        self.connections += 1
        stream: trio.abc.Stream = tcp
        if self.ssl_context is not None:
            tls = trio.SSLStream(tcp, self.ssl_context, server_side=True)
            try:
                await tls.do_handshake()
            except trio.BrokenResourceError:
                await trio.aclose_forcefully(tcp)
                return
            self.peer_certificates.append(tls.getpeercert() or {})
            stream = tls
        reader = pdu.PduReader()
        async with stream:
            while True:
                try:
                    data = await stream.receive_some(65536)
                except trio.BrokenResourceError:
                    return
                if not data:
                    return
                for item in reader.feed(bytes(data)):
                    self.received.append(item)
                    if item.pdu_type == pdu.KEEPALIVE and self.acknowledge:
                        assert item.sequence is not None
                        await trio.sleep(self.ack_delay)
                        await stream.send_all(
                            pdu.keepalive(item.sequence, version=item.version, acknowledgement=True)
                        )
