"""Rescheduling on node failure (classic Swarm's `reschedule:on-node-failure`), driven from the
logical records in etcd so a restarted manager resumes wherever the last one stopped.

States of `logical/<swarm-id>` (docs/failover.md, "Manager side"):
  placed  -> failed   its node's `nodes/` key went (lease expired or revoked)
  failed  -> placing  the margin passed and the scheduler chose a node (generation + 1)
  failed  -> pending  no node fits now
  pending -> placing  a node fits (checked on every node join and every RETRY_S)
  placing -> placed   created (or found: same swarm id + generation) and started on the target
A `docker create` left `placing` by a crashed manager (its intent: generation 1, no node it moves
from) is never created here: adopted if its node made it, else dropped (manager/create_intent.py).

One task makes every transition. Choices are made one record at a time under the schedule
lock (and reserved as in-flight creates); the agent calls (list, create, start) of all records
being placed then run concurrently outside it, each with its deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable

from manager.cluster import Cluster, channel_closed, placement_from_body
from manager.create_intent import SETTLE_NS, resolve
from manager.logical import body_of, is_create_intent, with_generation
from manager.manager_events import mark
from manager.metrics import Metrics
from manager.placing import choose_node, image_lists, survey
from manager.reschedule_agent import create_or_find, start_quietly
from manager.scheduler import Scheduler
from proto.docker.errors import DockerError
from proto.kv import KVError
from proto.logical import (
    FAILED,
    GENERATION_LABEL,
    PENDING,
    PLACED,
    PLACING,
    SWARM_ID_LABEL,
    UNSETTLED,
)
from proto.records_pb2 import LogicalContainer

log = logging.getLogger(__name__)

DEFAULT_MARGIN_S = 0.25
RETRY_S = 2.0  # pending records and failed attempts are retried this often
# Test hook: seconds to pause right after a record is written `placing` (the window in which a
# manager crash must neither lose nor double the container). Unset in production.
PAUSE_ENV = "FLOTILLA_TEST_PAUSE_AFTER_PLACING_S"


class Rescheduler:
    def __init__(
        self,
        cluster: Cluster,
        scheduler: Callable[[], Scheduler],
        margin_s: float = DEFAULT_MARGIN_S,
        metrics: Metrics | None = None,
    ) -> None:
        self.cluster = cluster
        self.scheduler = scheduler
        self.margin_ns = int(margin_s * 1e9)
        self.metrics = metrics
        self.failed_nodes: dict[str, int] = {}  # node id -> Unix ns its key was seen deleted
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.pause_s = float(os.environ.get(PAUSE_ENV) or 0)
        self.reserved: dict[str, int] = {}  # swarm id -> in-flight token of a `placing` record
        self.intent_settle_ns = SETTLE_NS  # before an intent its node never acted on is dropped

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> None:
        self.cluster.node_listeners.append(self._on_node)
        self.cluster.intent_left = self.wake.set
        self.task = asyncio.create_task(self._run(), name="rescheduler")

    async def close(self) -> None:
        with contextlib.suppress(ValueError):
            self.cluster.node_listeners.remove(self._on_node)
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task

    def _on_node(self, kind: str, node_id: str) -> None:
        if kind == "delete":
            self.failed_nodes[node_id] = time.time_ns()
        self.wake.set()  # a node that joins may fit a pending container

    async def _run(self) -> None:
        # The first pass also fails the records of nodes that died while no manager watched.
        while True:
            self.wake.clear()
            delay: float | None = RETRY_S
            try:
                delay = await self.step()
            except (KVError, DockerError) as e:
                log.warning("rescheduler: %s (retrying)", e)
            except Exception:  # noqa: BLE001 - the loop must outlive one bad record
                log.exception("rescheduler pass failed")
            except asyncio.CancelledError:
                if not channel_closed():
                    raise  # the manager is stopping
                log.warning("rescheduler: an agent call was cut off by its node leaving (retrying)")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self.wake.wait(), None if delay is None else max(delay, 0.01)
                )

    # ----------------------------------------------------------------- one pass
    async def step(self) -> float | None:
        """Advance every record as far as it can go now; seconds until the next due time
        (None: nothing unsettled, wait for a node to come or go)."""
        records = await self.cluster.logical.all()
        now = time.time_ns()
        await self._mark_failed(records, now)
        records = await self.cluster.logical.all()
        next_due = RETRY_S
        # Choices one at a time (each sees the ones before it), then the agent calls of every
        # record being placed at once: ten containers of a failed node move in parallel.
        chosen = False
        images: dict[str, set[str]] | None = None  # asked once per pass, when first needed
        for rec, rev in records:
            if rec.state == FAILED:
                due = rec.node_failed_at_ns + self.margin_ns
                if time.time_ns() < due:
                    next_due = min(next_due, (due - time.time_ns()) / 1e9)
                    continue
                images = images if images is not None else await image_lists(self.cluster)
                chosen = await self._place(rec, rev, images) or chosen
            elif rec.state == PENDING:
                images = images if images is not None else await image_lists(self.cluster)
                chosen = await self._place(rec, rev, images) or chosen
        if chosen and self.pause_s:
            await asyncio.sleep(self.pause_s)
        records = await self.cluster.logical.all()
        await asyncio.gather(*(self._finish(r, v) for r, v in records if r.state == PLACING))
        records = await self.cluster.logical.all()
        if self.metrics is not None:
            self.metrics.pending.set(sum(1 for r, _ in records if r.state == PENDING))
        return next_due if any(r.state in UNSETTLED for r, _ in records) else None

    async def _mark_failed(self, records: list[tuple[LogicalContainer, int]], now: int) -> None:
        """placed -> failed for every reschedulable record whose node has no live key."""
        for rec, rev in records:
            if rec.state != PLACED or not rec.reschedule or rec.node_id in self.cluster.nodes:
                continue
            seen = self.failed_nodes.get(rec.node_id, now)
            rec.state = FAILED
            rec.previous_node_id = rec.node_id
            rec.previous_container_id = rec.container_id
            # The record names no copy any more, only the one it moves from: a node that comes
            # back before the move claims that copy back (agent side, by its own swap on this
            # record); after it, the copy there is stale and removed.
            rec.node_id = ""
            rec.container_id = ""
            rec.node_failed_at_ns = seen
            # `start` is the intent kept by start/stop/kill, not the last status: an agent that
            # stops fences its containers (they exit) before its lease goes.
            if await self.cluster.logical.swap(rec, rev):
                log.info(
                    "node %s failed: %s (%s) will be rescheduled",
                    rec.previous_node_id,
                    rec.name,
                    rec.swarm_id[:12],
                )

    async def _place(
        self, rec: LogicalContainer, rev: int, images: dict[str, set[str]] | None = None
    ) -> bool:
        """failed|pending -> placing on the node the scheduler picks (True), or -> pending."""
        body = body_of(rec)
        generation = rec.generation + 1
        body = with_generation(body, generation)
        seen = await survey(self.cluster, body, images)  # the agents' answers, before the lock
        async with self.cluster.schedule_lock:
            try:
                target = choose_node(self.cluster, self.scheduler(), body, seen).id
            except DockerError as e:
                if rec.state != PENDING:
                    rec.state = PENDING
                    if await self.cluster.logical.swap(rec, rev):
                        log.info("%s fits nowhere now (%s): pending", rec.name, e.message)
                return False
            rec.state = PLACING
            rec.node_id = target
            rec.container_id = ""
            rec.generation = generation
            rec.create_json = _dumps(body)
            token = self.cluster.add_pending(placement_from_body(target, rec.name, body))
        if not await self.cluster.logical.swap(rec, rev):
            self.cluster.pending.pop(token, None)
            return False  # changed under us (removed, or another pass): re-read next time
        # Counted by the scheduler as an in-flight create until the container exists.
        self.reserved[rec.swarm_id] = token
        log.info("rescheduling %s to %s (generation %d)", rec.name, target, generation)
        return True

    async def _finish(self, rec: LogicalContainer, rev: int) -> None:
        """placing -> placed: the container on the target (created unless it exists)."""
        if rec.state != PLACING:
            return
        if is_create_intent(rec):
            # A `docker create` this manager is not finishing: adopted or dropped, never made.
            await resolve(self.cluster, rec, rev, self.intent_settle_ns)
            return
        if rec.node_id not in self.cluster.nodes:
            # The target died too, maybe with a copy already made there: choose again after
            # the margin counted from this failure, as for any failed node.
            self.cluster.pending.pop(self.reserved.pop(rec.swarm_id, -1), None)
            if rec.previous_node_id and rec.previous_container_id:
                old_status = self.cluster.keys.status(
                    rec.previous_node_id, rec.previous_container_id
                )
                await self.cluster.kv.delete(old_status)
            rec.state = FAILED
            rec.previous_node_id = rec.node_id
            rec.previous_container_id = ""
            rec.node_id = ""
            rec.node_failed_at_ns = self.failed_nodes.get(rec.previous_node_id, time.time_ns())
            if await self.cluster.logical.swap(rec, rev):
                log.info(
                    "%s: its target %s failed too: will be rescheduled",
                    rec.name,
                    rec.previous_node_id,
                )
                self.wake.set()
            return
        body = body_of(rec)
        try:
            cid = await create_or_find(self.cluster, rec, body)
            if rec.start:
                await start_quietly(self.cluster, rec.node_id, cid)
        except DockerError as e:
            log.warning("cannot place %s on %s: %s (retrying)", rec.name, rec.node_id, e.message)
            return
        finally:
            self.cluster.pending.pop(self.reserved.pop(rec.swarm_id, -1), None)
        placement = placement_from_body(rec.node_id, rec.name, body)
        self.cluster.created(placement, cid)
        # The name and the desired record move first, then the old status record goes: a crash
        # in between repeats these idempotent steps from the `placing` record.
        await self.cluster.record_created(cid, rec.name, rec.node_id, body)
        if rec.previous_node_id and rec.previous_container_id:
            old_status = self.cluster.keys.status(rec.previous_node_id, rec.previous_container_id)
            await self.cluster.kv.delete(old_status)
        from_node = rec.previous_node_id
        old_cid = rec.previous_container_id
        failed_at = rec.node_failed_at_ns
        rec.state = PLACED
        rec.container_id = cid
        rec.previous_node_id = ""
        rec.previous_container_id = ""
        rec.node_failed_at_ns = 0
        if not await self.cluster.logical.swap(rec, rev):
            return
        log.info("rescheduled %s from %s to %s as %s", rec.name, from_node, rec.node_id, cid[:12])
        self.cluster.events.publish(reschedule_event(self.cluster, rec, cid, from_node, old_cid))
        if self.metrics is not None:
            self.metrics.reschedules.inc()
            if failed_at:
                self.metrics.time_to_reschedule.observe(max(time.time_ns() - failed_at, 0) / 1e9)


def _dumps(body: dict) -> bytes:
    return json.dumps(body).encode()


def reschedule_event(
    cluster: Cluster, rec: LogicalContainer, cid: str, from_node: str, old_cid: str
) -> dict:
    """One `container` event per rescheduled container, marked with its new node."""
    ns = time.time_ns()
    body = body_of(rec)
    image = str(body.get("Image") or "")
    attrs = {
        "name": rec.name,
        "image": image,
        SWARM_ID_LABEL: rec.swarm_id,
        GENERATION_LABEL: str(rec.generation),
        "from_node": cluster.node_names.get(from_node, from_node),
        "to_node": cluster.node_names.get(rec.node_id, rec.node_id),
        "previous_id": old_cid,
    }
    event = {
        "status": "reschedule",
        "id": cid,
        "from": image,
        "Type": "container",
        "Action": "reschedule",
        "Actor": {"ID": cid, "Attributes": attrs},
        "scope": "local",
        "time": ns // 1_000_000_000,
        "timeNano": ns,
    }
    node = cluster.nodes.get(rec.node_id)
    return mark(event, node) if node is not None else event
