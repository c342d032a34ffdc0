"""GET /events: every node's agent event stream merged, each event marked with its node.

As in classic Swarm, each event gets a top-level `node` {Name, Id, Addr, Ip}, `node.*` actor
attributes and ` node:<name>` appended to `from`; nodes joining or leaving the cluster view are
reported as `swarm` events `engine_connect` / `engine_disconnect`. Unlike classic Swarm, `since`
(history replay from each agent) and `filters` are honoured; `until` ends the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from datetime import datetime
from typing import Any

import grpc
from aiohttp import web

from manager.api.filters import request_filters
from manager.api.system import CLUSTER_KEY
from manager.cluster import Cluster, channel_closed
from manager.manager_events import mark
from manager.versioning import versioned
from proto import agent_pb2 as pb
from proto.docker.errors import DockerError, InvalidParameter
from proto.records_pb2 import NodeRecord

POLL_S = 0.5  # how often the cluster view is checked for nodes joining or leaving
RETRY_S = 1.0  # a node's stream that broke while the node is still listed is reopened
REPLAY_TIMEOUT_S = 10.0  # a node that cannot replay its history in time is left out
FILTERS = ("type", "event", "container", "image", "label", "node", "volume", "network", "scope")


def parse_time(value: str, name: str) -> int:
    """Docker's `since`/`until`: unix seconds with optional fraction, or RFC 3339; as ns."""
    text = value.strip()
    try:
        if "." in text:
            sec, _, frac = text.partition(".")
            return int(sec) * 1_000_000_000 + int((frac + "000000000")[:9])
        return int(text) * 1_000_000_000
    except ValueError:
        pass
    try:
        return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1e9)
    except ValueError:
        raise InvalidParameter(f"invalid value for {name}: {value!r}") from None


def _fuzzy(values: list[str], *candidates: str) -> bool:
    """dockerd's FuzzyMatch: an exact value or a prefix of the candidate."""
    return any(c and (c == v or c.startswith(v)) for v in values for c in candidates)


def matches(event: dict[str, Any], filters: dict[str, list[str]]) -> bool:
    type_ = str(event.get("Type", ""))
    action = str(event.get("Action", ""))
    actor = event.get("Actor") or {}
    actor_id = str(actor.get("ID", ""))
    attrs: dict[str, str] = actor.get("Attributes") or {}
    node = event.get("node") or {}

    def typed(key: str, kind: str, *candidates: str) -> bool:
        values = filters.get(key)
        return not values or (type_ == kind and _fuzzy(values, *candidates))

    if filters.get("type") and type_ not in filters["type"]:
        return False
    if filters.get("event"):
        # `exec_create: sh -c …` matches `exec_create`, as dockerd compares the verb only.
        verb = action.partition(":")[0]
        if action not in filters["event"] and verb not in filters["event"]:
            return False
    if filters.get("scope") and event.get("scope") not in filters["scope"]:
        return False
    if filters.get("node") and not ({node.get("Name"), node.get("Id")} & set(filters["node"])):
        return False
    if filters.get("label"):
        for want in filters["label"]:
            key, eq, val = want.partition("=")
            if key not in attrs or (eq and attrs[key] != val):
                return False
    if filters.get("image"):
        image = attrs.get("image", "") if type_ == "container" else ""
        names = (actor_id, attrs.get("name", "")) if type_ == "image" else ()
        if not _fuzzy(filters["image"], image, image.partition(":")[0], *names):
            return False
    return (
        typed("container", "container", actor_id, attrs.get("name", ""))
        and typed("volume", "volume", actor_id)
        and typed("network", "network", actor_id, attrs.get("name", ""))
    )


class Merger:
    """One task per node feeding a shared queue; nodes come and go with the cluster view."""

    def __init__(self, cluster: Cluster, since_ns: int, until_ns: int) -> None:
        self.cluster = cluster
        self.since_ns = since_ns
        self.until_ns = until_ns
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(10_000)
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.known: dict[str, NodeRecord] = {}

    def start(self) -> None:
        # The manager's own events (reschedules): its history for `since`, then live.
        if self.since_ns:
            for event in self.cluster.events.since(self.since_ns, self.until_ns):
                self.queue.put_nowait(event)
        self.cluster.events.listeners.add(self.queue)
        for rec in self.cluster.sorted_nodes():
            self.known[rec.id] = rec
            self.tasks[rec.id] = asyncio.create_task(self._follow(rec, self.since_ns))

    async def _follow(self, rec: NodeRecord, since_ns: int) -> None:
        req = pb.EventsRequest(since_ns=since_ns, until_ns=self.until_ns)
        while rec.id in self.cluster.nodes:
            last = since_ns
            try:
                async for msg in self.cluster.stub(rec.id).Events(req):
                    event = json.loads(msg.json)
                    last = int(event.get("timeNano") or last)
                    await self.queue.put(mark(event, self.cluster.nodes.get(rec.id, rec)))
                return  # ended by `until`
            except (grpc.RpcError, OSError, DockerError, asyncio.CancelledError) as e:
                if isinstance(e, asyncio.CancelledError) and not channel_closed():
                    raise
                if self.until_ns and time.time_ns() >= self.until_ns:
                    return
                await asyncio.sleep(RETRY_S)
                # Reopen just after the last event seen so nothing is doubled.
                req = pb.EventsRequest(since_ns=last + 1 if last else 0, until_ns=self.until_ns)

    async def watch_nodes(self) -> None:
        """Follow nodes as they join and leave (their engine_connect / engine_disconnect come
        from the cluster view through the manager's own events)."""
        while True:
            await asyncio.sleep(POLL_S)
            now = dict(self.cluster.nodes)
            for node_id, rec in now.items():
                if node_id not in self.known:
                    self.known[node_id] = rec
                    self.tasks[node_id] = asyncio.create_task(self._follow(rec, time.time_ns()))
            for node_id in [n for n in self.known if n not in now]:
                self.known.pop(node_id)
                task = self.tasks.pop(node_id, None)
                if task is not None:
                    task.cancel()

    async def close(self) -> None:
        self.cluster.events.listeners.discard(self.queue)
        for task in self.tasks.values():
            task.cancel()
        for task in self.tasks.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def events(request: web.Request) -> web.StreamResponse:
    cluster = request.app[CLUSTER_KEY]
    since = request.query.get("since", "")
    until = request.query.get("until", "")
    since_ns = parse_time(since, "since") if since else 0
    until_ns = parse_time(until, "until") if until else 0
    filters = request_filters(request, FILTERS)
    if until_ns and since_ns and until_ns < since_ns:
        raise InvalidParameter("`since` time cannot be after `until` time")

    merger = Merger(cluster, since_ns, until_ns)
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    merger.start()
    watcher = asyncio.create_task(merger.watch_nodes())
    try:
        if until_ns and until_ns <= time.time_ns():
            await _replay(response, merger, filters)
        else:
            await _live(response, merger, filters, until_ns)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await merger.close()
    with contextlib.suppress(ConnectionResetError):
        await response.write_eof()
    return response


async def _replay(
    response: web.StreamResponse, merger: Merger, filters: dict[str, list[str]]
) -> None:
    # A window wholly in the past: every node's history, merged in time order.
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(REPLAY_TIMEOUT_S):
            await asyncio.gather(*list(merger.tasks.values()), return_exceptions=True)
    found: list[dict[str, Any]] = []
    while not merger.queue.empty():
        found.append(merger.queue.get_nowait())
    found.sort(key=lambda e: int(e.get("timeNano") or 0))
    for event in found:
        if matches(event, filters):
            await response.write(_line(event))


async def _live(
    response: web.StreamResponse,
    merger: Merger,
    filters: dict[str, list[str]],
    until_ns: int,
) -> None:
    while True:
        timeout = None
        if until_ns:
            timeout = (until_ns - time.time_ns()) / 1e9
            if timeout <= 0:
                break
        try:
            event = await asyncio.wait_for(merger.queue.get(), timeout)
        except TimeoutError:
            break
        if matches(event, filters):
            await response.write(_line(event))
    # Events stamped before `until` may still be in flight from a node: give them a moment.
    while True:
        try:
            event = await asyncio.wait_for(merger.queue.get(), 0.2)
        except TimeoutError:
            return
        if int(event.get("timeNano") or 0) <= until_ns and matches(event, filters):
            await response.write(_line(event))


def _line(event: dict[str, Any]) -> bytes:
    return (json.dumps(event, separators=(",", ":")) + "\n").encode()


def add_routes(app: web.Application) -> None:
    for p in versioned("/events"):
        app.router.add_route("GET", p, events)
