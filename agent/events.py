"""Docker events of one node: built from the runtime's callbacks, kept briefly, fanned out."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

log = logging.getLogger(__name__)

HISTORY = 1000
QUEUE_LIMIT = 4096

_END: dict[str, Any] = {}  # sentinel closing a subscriber that fell too far behind


class EventBus:
    """Publish/subscribe of Docker event JSON; usable as `Runtime(events=bus)`.

    Call it from the event loop's thread (the runtime does; the agent's service publishes image
    and volume events after their worker threads return).
    """

    def __init__(self, history: int = HISTORY) -> None:
        self._history: deque[dict[str, Any]] = deque(maxlen=history)
        self._subscribers: set[asyncio.Queue[dict[str, Any]]] = set()
        # Called with every event as it is published: parts of the agent that follow changes
        # the events already announce (the node's images record, agent/image_records.py).
        self.listeners: list[Callable[[dict[str, Any]], None]] = []

    def __call__(self, type: str, action: str, id: str, attrs: dict[str, str]) -> None:
        self.publish(type, action, id, attrs)

    def publish(
        self, type: str, action: str, id: str, attrs: dict[str, str] | None = None
    ) -> dict[str, Any]:
        event = make_event(type, action, id, attrs or {})
        self._history.append(event)
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:  # noqa: BLE001 - a listener's bug must not lose the event
                log.exception("event listener failed on %s %s", type, action)
        for queue in list(self._subscribers):
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                # A stuck reader must not grow memory without bound: end its stream, it can
                # re-subscribe with `since` (Docker drops slow event listeners too).
                self._subscribers.discard(queue)
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
                queue.put_nowait(_END)
        return event

    def history(self, since_ns: int = 0, until_ns: int = 0) -> list[dict[str, Any]]:
        return [e for e in self._history if _in_window(e, since_ns, until_ns)]

    async def subscribe(
        self, since_ns: int = 0, until_ns: int = 0
    ) -> AsyncIterator[dict[str, Any]]:
        """Past events from `since_ns` (if given), then live ones until `until_ns` (if given)."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE_LIMIT)
        # Registering and snapshotting in one synchronous step: no event is lost or doubled.
        self._subscribers.add(queue)
        past = self.history(since_ns, until_ns) if since_ns else []
        try:
            for event in past:
                yield event
            while True:
                if until_ns and time.time_ns() >= until_ns:
                    return
                timeout = (until_ns - time.time_ns()) / 1e9 if until_ns else None
                try:
                    event = await asyncio.wait_for(queue.get(), timeout)
                except TimeoutError:
                    return
                if event is _END:
                    return
                if _in_window(event, since_ns, until_ns):
                    yield event
        finally:
            self._subscribers.discard(queue)


def _in_window(event: dict[str, Any], since_ns: int, until_ns: int) -> bool:
    t = int(event["timeNano"])
    return (not since_ns or t >= since_ns) and (not until_ns or t <= until_ns)


def make_event(type: str, action: str, id: str, attrs: dict[str, str]) -> dict[str, Any]:
    """Docker's events.Message, key order as dockerd marshals it."""
    ns = time.time_ns()
    event: dict[str, Any] = {}
    # Legacy fields (API < 1.22 clients) exist for container and image events only.
    if type == "container":
        event["status"] = action
        event["id"] = id
        if attrs.get("image"):
            event["from"] = attrs["image"]
    elif type == "image":
        event["status"] = action
        event["id"] = id
    event.update(
        {
            "Type": type,
            "Action": action,
            "Actor": {"ID": id, "Attributes": dict(sorted(attrs.items()))},
            "scope": "local",
            "time": ns // 1_000_000_000,
            "timeNano": ns,
        }
    )
    return event
