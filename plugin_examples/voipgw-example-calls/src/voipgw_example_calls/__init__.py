"""Example voipgw plugin: a call log written by a media tap, and short codes routed to accounts.

Shows a tap (a sink per answered call, whose ``run`` task writes the file off the event loop)
and a decision hook that needs the plugin's configuration. Decision hooks get no ``config``:
the plugin is an object (its entry point names ``plugin``, an instance of
:class:`ExampleCalls`), whose ``gateway_configure`` hook, called once at start-up before any
registration and any call, keeps the settings on the instance for ``gateway_route_call``
(docs/plugin_hooks.md, "Settings in decision hooks").
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import attrs
import trio

from gateway.core.hookspecs import hookimpl
from gateway.core.interfaces import Caller, Directory, MediaTap, RouteDecision, TappedCall
from gateway.core.plugins import Registry
from gateway.core.sip.message import Request


@attrs.frozen
class ExampleCallsConfig:
    """``[plugins.example-calls]``."""

    # The call log; relative to state_dir. A field named state_dir gets the gateway's
    # [gateway] state_dir when the table leaves it out.
    log_file: str = "calls.log"
    state_dir: str = "."
    # Short codes an account may dial, each "CODE=ACCOUNT": "*1=reception" rings reception's
    # registered phones.
    short_codes: tuple[str, ...] = ()

    def written_directories(self) -> list[tuple[str, Path, str, tuple[str, ...]]]:
        """Where this plugin writes, for ``voipgw check-config`` and ``voipgw run`` to check
        before any call (docs/plugin_hooks.md, "Directories a plugin writes in"): the call
        log's directory, checked against the key ``state_dir`` names, and the log itself,
        which is appended to in place. A log outside state_dir (an absolute ``log_file``
        elsewhere) is not checked."""
        log = Path(self.state_dir, self.log_file)
        return [("state_dir", log.parent, "the call log (example-calls plugin)", (log.name,))]

    def __attrs_post_init__(self) -> None:
        # Checked here, as the core's plugins check their tables: voipgw builds this class from
        # the table, and a ValueError whose text starts with "KEY: " becomes its ConfigError,
        # "voipgw.toml: [plugins.example-calls] short_codes: ...", naming the file, the table
        # and the key; voipgw check-config says it without starting anything.
        for entry in self.short_codes:
            code, _, account = entry.partition("=")
            if not code or not account:
                raise ValueError(f"short_codes: {entry!r} is not CODE=ACCOUNT")

    def codes(self) -> dict[str, str]:
        """The short codes, code to account (the last entry for a code wins)."""
        return dict(entry.partition("=")[::2] for entry in self.short_codes)


def _no_counts() -> dict[str, int]:
    return dict.fromkeys(COUNTERS, 0)


COUNTERS = ("calls", "lines_written", "write_failures")
"""What the tap counts (its ``counters()``): calls it logs, lines written, writes that failed."""


@attrs.define(eq=False)
class CallLogSink:
    """One answered call: counts its packets, and writes its line once the call ended."""

    call: TappedCall
    path: str
    packets: dict[str, int] = attrs.field(factory=lambda: {"a_to_b": 0, "b_to_a": 0})
    # The tap's counts, shared by its sinks; changed on the event loop only.
    counts: dict[str, int] = attrs.field(factory=_no_counts)
    _ended: trio.Event = attrs.field(factory=trio.Event)

    def packet(self, stream_id: str, direction: str, rtp: bytes, *, now: float) -> None:
        # Called for every packet the relay forwards: count, never block.
        self.packets[direction] = self.packets.get(direction, 0) + 1

    def close(self) -> None:
        self._ended.set()

    async def run(self) -> None:
        try:
            await self._ended.wait()
        finally:
            # Also when the gateway stops (this task is cancelled then): shielded, and in a
            # worker thread, as a file write must not hold up the event loop.
            with trio.CancelScope(shield=True):
                try:
                    await trio.to_thread.run_sync(self._write)
                except OSError:
                    self.counts["write_failures"] += 1
                    raise  # the gateway logs it: "media tap example-calls stopped with ..."
                self.counts["lines_written"] += 1

    def line(self) -> str:
        call = self.call
        return (
            f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {call.call_id}"
            f" from {call.caller_kind}:{call.caller_name or '-'} ({call.from_uri})"
            f" to {call.callee_kind}:{call.callee_name or '-'}"
            f" answered_by {call.answered_by or '-'}"
            f" packets {self.packets['a_to_b']}/{self.packets['b_to_a']}\n"
        )

    def _write(self) -> None:
        with open(self.path, "a", encoding="utf-8") as log_file:
            log_file.write(self.line())


@attrs.define(eq=False)
class CallLog:
    """The media tap: every answered call gets a sink."""

    path: str
    name: str = "example-calls"
    counts: dict[str, int] = attrs.field(factory=_no_counts)

    def sink_for_call(self, call: TappedCall) -> CallLogSink:
        self.counts["calls"] += 1
        return CallLogSink(call, self.path, counts=self.counts)

    def counters(self) -> tuple[tuple[str, int], ...]:
        """Counts since the start, each name present from the start (docs/plugin_hooks.md,
        media taps): the ``metrics`` plugin shows them as
        ``voipgw_plugin_counters_total{kind="media_tap",plugin="example-calls",counter=...}``,
        read at each scrape; never blocks."""
        return tuple(self.counts.items())


class ExampleCalls:
    """The plugin: one instance per gateway (the entry point's ``plugin`` for ``voipgw run``;
    a test makes its own), holding the settings its decision hook needs."""

    def __init__(self) -> None:
        self.short_codes: dict[str, str] = {}

    @hookimpl
    def gateway_plugin_config(self) -> type:
        return ExampleCallsConfig

    @hookimpl
    def gateway_configure(self, config: ExampleCallsConfig) -> None:
        # The table was checked when voipgw built it (ExampleCallsConfig): nothing to refuse.
        self.short_codes = config.codes()

    @hookimpl
    def gateway_register_media_taps(
        self, registry: Registry[MediaTap], config: ExampleCallsConfig
    ) -> None:
        registry.add("example-calls", CallLog(os.path.join(config.state_dir, config.log_file)))

    @hookimpl
    def gateway_route_call(
        self, request: Request, caller: Caller, directory: Directory
    ) -> RouteDecision | None:
        """A short code dialled by one of our accounts rings the account it names."""
        if caller.kind != "account":
            return None
        user = getattr(request.uri, "user", None)
        account = self.short_codes.get(user or "")
        if account is None:
            return None  # not ours: the next plugin's, or the core's routing
        contacts = tuple(directory.contacts(account))
        if not contacts:
            return RouteDecision.reject(480, "Temporarily Unavailable")
        return RouteDecision(targets=contacts)


# What the entry point names ("voipgw_example_calls:plugin", pyproject.toml).
plugin = ExampleCalls()
