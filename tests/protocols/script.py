"""A tiny playbook for sans-IO engines: ``Script(engine).recv(b"...").expect(b"reply", Event(...))``.

Each step feeds input (``recv``) or makes a driver call (``do``), then drains
every event and all output.  ``expect`` compares what accumulated since the
last ``expect``: the bytes items, concatenated, must equal the output exactly,
and the event items must equal the events, in order.
"""

from __future__ import annotations

from typing import Any, Protocol

from proxyd.protocols.events import NEED_DATA


class Engine(Protocol):
    def receive_data(self, data: bytes) -> None: ...
    def next_event(self) -> Any: ...
    def data_to_send(self) -> bytes: ...


class Script:
    """Drive an engine step by step and check output and events."""

    def __init__(self, engine: Engine, *, keep_greeting: bool = False) -> None:
        self.engine = engine
        self.output = b""
        self.events: list[Any] = []
        self._pump()
        if not keep_greeting:
            self.output = b""

    def _pump(self) -> None:
        while (event := self.engine.next_event()) is not NEED_DATA:
            self.events.append(event)
        self.output += self.engine.data_to_send()

    def recv(self, *chunks: bytes) -> Script:
        """Feed each chunk as one read (``b""`` is EOF), draining after each."""
        for chunk in chunks:
            self.engine.receive_data(chunk)
            self._pump()
        return self

    def do(self, method: str, *args: Any, **kwargs: Any) -> Script:
        """Call a driver method on the engine, then drain."""
        getattr(self.engine, method)(*args, **kwargs)
        self._pump()
        return self

    def expect(self, *items: Any) -> Script:
        """Output (bytes items, joined) and events (other items) since the last expect."""
        want_output = b"".join(item for item in items if isinstance(item, bytes))
        want_events = [item for item in items if not isinstance(item, bytes)]
        output, events = self.output, self.events
        self.output, self.events = b"", []
        assert output == want_output, f"output {output!r} != {want_output!r}"
        assert events == want_events, f"events {events!r} != {want_events!r}"
        return self

    def take(self) -> tuple[bytes, list[Any]]:
        """Return and clear what accumulated, without checking it."""
        output, events = self.output, self.events
        self.output, self.events = b"", []
        return output, events
