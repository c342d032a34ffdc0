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

One task makes every transition. The failed marks of a pass are written in a few
transactions; then every record goes its own way concurrently (bounded): its choice is made
under the schedule lock (one at a time, reserved as an in-flight create), written, and the
agent calls (list, create and start in one) run outside the lock, each with its deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

from manager.cluster import Cluster, channel_closed, placement_from_body
from manager.cluster_records import created_puts
from manager.create_intent import SETTLE_NS, resolve
from manager.logical import body_of, is_create_intent, with_generation
from manager.manager_events import mark
from manager.metrics import Metrics
from manager.placing import choose_node, survey
from manager.reschedule_agent import create_or_find
from manager.scheduler import Scheduler
from proto.docker.errors import DockerError
from proto.kv import KVError, ModRevisionIs
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
T = TypeVar("T")

DEFAULT_MARGIN_S = 0.25
RETRY_S = 2.0  # pending records and failed attempts are retried this often
# Test hook: seconds to pause right after a record is written `placing` (the window in which a
# manager crash must neither lose nor double the container). Unset in production.
PAUSE_ENV = "FLOTILLA_TEST_PAUSE_AFTER_PLACING_S"
# etcd transactions (or agent calls) of one pass in flight at once: 100 failed nodes' 3,000
# containers move in seconds, without 3,000 calls opened at the same moment.
PASS_CONCURRENCY = 64
NOTHING_WRITTEN = -1  # a phase's answer for a record it left as it was
# How long a pass waits for the watched logical/ records to show the newest write under
# logical/ before it reads them all from etcd instead.
WATCH_LAG_S = 2.0


async def bounded(calls: Iterable[Awaitable[T]], limit: int = PASS_CONCURRENCY) -> list[T]:
    """Run `calls` with at most `limit` at once; their results in order."""
    gate = asyncio.Semaphore(limit)

    async def one(call: Awaitable[T]) -> T:
        async with gate:
            return await call

    return list(await asyncio.gather(*(one(c) for c in calls)))


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
        # (swarm id, generation) this manager chose and has not asked any node to create yet:
        # no copy of it can exist, so its target is not listed first (one call less per move).
        self.unattempted: set[tuple[str, int]] = set()
        self.intent_settle_ns = SETTLE_NS  # before an intent its node never acted on is dropped
        # A swap lost (someone else wrote), or an intent was resolved: the next pass reads
        # etcd rather than the watched records.
        self.reread = False

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
        (None: nothing unsettled, wait for a node to come or go).

        Each phase goes on from what the one before wrote (a record whose swap lost is left
        to the next pass, which comes at once)."""
        records = await self._records()
        now = time.time_ns()
        lost = False
        failing = [
            (rec, rev)
            for rec, rev in records.values()
            if rec.state == PLACED and rec.reschedule and rec.node_id not in self.cluster.nodes
        ]
        for rec, _ in failing:
            self._mark_failed(rec, now)
        for (rec, _), revision in zip(
            failing, await self.cluster.logical.swap_all(failing), strict=True
        ):
            if revision:
                log.info(
                    "node %s failed: %s (%s) will be rescheduled",
                    rec.previous_node_id,
                    rec.name,
                    rec.swarm_id[:12],
                )
            lost = self._update(records, rec, revision) or lost
        next_due = RETRY_S
        # Each record goes its whole way (choice, its write, the agent calls) beside the
        # others, PASS_CONCURRENCY at a time: the containers of a failed node move in
        # parallel, and the first are created while the last are still being chosen (one
        # at a time under the lock, each seeing the ones before it).
        work: list[tuple[LogicalContainer, Awaitable[int]]] = []
        for rec, rev in list(records.values()):
            if rec.state == PLACING:
                work.append((rec, self._finish(rec, rev)))
            elif rec.state == PENDING:
                work.append((rec, self._place(rec, rev)))
            elif rec.state == FAILED:
                due = rec.node_failed_at_ns + self.margin_ns
                if time.time_ns() < due:
                    next_due = min(next_due, (due - time.time_ns()) / 1e9)
                else:
                    work.append((rec, self._place(rec, rev)))
        for (rec, _), revision in zip(work, await bounded(call for _, call in work), strict=True):
            lost = self._update(records, rec, revision) or lost
        if self.metrics is not None:
            self.metrics.pending.set(sum(1 for r, _ in records.values() if r.state == PENDING))
        if lost:
            return 0.0
        return next_due if any(r.state in UNSETTLED for r, _ in records.values()) else None

    async def _records(self) -> dict[str, tuple[LogicalContainer, int]]:
        """The records a pass works on, as copies (the phases change them): the unsettled
        ones, and the placed ones whose node is gone. From the watched records once they
        show the newest write under `logical/` (one key read, no values); otherwise (a swap
        lost, or the watch is behind) all of `logical/` read from etcd, which at 30,000
        containers costs more than the rest of a pass."""
        cluster = self.cluster
        watched = False
        if not self.reread:
            newest = await cluster.kv.latest_revision(cluster.keys.logical_prefix())
            watched = await cluster.logical_caught_up(newest, WATCH_LAG_S)
        if not watched:
            self.reread = False
            return {rec.swarm_id: (rec, rev) for rec, rev in await cluster.logical.all()}
        out = {}
        for sid, rec in cluster.logical_records.items():
            if rec.state == PLACED and (not rec.reschedule or rec.node_id in cluster.nodes):
                continue
            copy = cluster.logical_copy(sid)
            if copy is not None:
                out[sid] = copy
        return out

    def _update(
        self, records: dict[str, tuple[LogicalContainer, int]], rec: LogicalContainer, revision: int
    ) -> bool:
        """Keep what a phase wrote (`revision` > 0), or forget a record whose swap lost
        (revision 0: it changed under us). -1: nothing written. True when a swap lost."""
        if revision > 0:
            records[rec.swarm_id] = (rec, revision)
        elif revision == 0:
            records.pop(rec.swarm_id, None)
            self.reread = True
            return True
        return False

    def _mark_failed(self, rec: LogicalContainer, now: int) -> None:
        """placed -> failed (in `rec`; the caller writes it), its node having no live key."""
        rec.state = FAILED
        rec.previous_node_id = rec.node_id
        rec.previous_container_id = rec.container_id
        # The record names no copy any more, only the one it moves from: a node that comes
        # back before the move claims that copy back (agent side, by its own swap on this
        # record); after it, the copy there is stale and removed.
        rec.node_id = ""
        rec.container_id = ""
        rec.node_failed_at_ns = self.failed_nodes.get(rec.previous_node_id, now)
        # `start` is the intent kept by start/stop/kill, not the last status: an agent that
        # stops fences its containers (they exit) before its lease goes.

    async def _place(self, rec: LogicalContainer, rev: int) -> int:
        """A failed (margin passed) or pending record's way: chosen, the choice written, and
        placed when a node fits. The last revision written; 0: a swap lost; NOTHING_WRITTEN."""
        choice = await self._choose(rec)
        if choice is False:
            return NOTHING_WRITTEN
        revision = await self._record_choice(rec, rev, choice)
        if not revision or rec.state != PLACING:
            return revision
        if self.pause_s:
            await asyncio.sleep(self.pause_s)
        finished = await self._finish(rec, revision)
        return revision if finished == NOTHING_WRITTEN else finished

    async def _choose(self, rec: LogicalContainer) -> int | None | bool:
        """The scheduler's choice for a failed or pending record, made on `rec`: placing on
        a node, reserved as an in-flight create (its token), or pending (None) when no node
        fits; False when nothing is to be written (pending and still fitting nowhere)."""
        body = with_generation(body_of(rec), rec.generation + 1)
        seen = await survey(self.cluster, body)  # before the lock
        async with self.cluster.schedule_lock:
            try:
                target = choose_node(self.cluster, self.scheduler(), body, seen).id
            except DockerError as e:
                if rec.state == PENDING:
                    return False
                rec.state = PENDING
                log.info("%s fits nowhere now (%s): pending", rec.name, e.message)
                return None
            rec.state = PLACING
            rec.node_id = target
            rec.container_id = ""
            rec.generation += 1
            rec.create_json = _dumps(body)
            return self.cluster.add_pending(placement_from_body(target, rec.name, body))

    async def _record_choice(self, rec: LogicalContainer, rev: int, token: int | None) -> int:
        """Write the choice; the revision written (0: changed under us, re-read next time)."""
        revision = await self.cluster.logical.swap(rec, rev)
        if token is None:
            return revision
        if not revision:
            self.cluster.pending.pop(token, None)
            return 0  # removed, or another pass: re-read next time
        # Counted by the scheduler as an in-flight create until the container exists.
        self.reserved[rec.swarm_id] = token
        self.unattempted.add((rec.swarm_id, rec.generation))
        log.info("rescheduling %s to %s (generation %d)", rec.name, rec.node_id, rec.generation)
        return revision

    async def _finish(self, rec: LogicalContainer, rev: int) -> int:
        """placing -> placed: the container on the target (created unless it exists). The
        revision written; 0: the record changed under us; NOTHING_WRITTEN."""
        if rec.state != PLACING:
            return NOTHING_WRITTEN
        if is_create_intent(rec):
            # A `docker create` this manager is not finishing: adopted or dropped, never made.
            if rec.swarm_id not in self.cluster.creating:
                await resolve(self.cluster, rec, rev, self.intent_settle_ns)
                self.reread = True  # it may have written
            return NOTHING_WRITTEN
        if rec.node_id not in self.cluster.nodes:
            # The target died too, maybe with a copy already made there: choose again after
            # the margin counted from this failure, as for any failed node.
            self.cluster.pending.pop(self.reserved.pop(rec.swarm_id, -1), None)
            self.unattempted.discard((rec.swarm_id, rec.generation))
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
            revision = await self.cluster.logical.swap(rec, rev)
            if revision:
                log.info(
                    "%s: its target %s failed too: will be rescheduled",
                    rec.name,
                    rec.previous_node_id,
                )
                self.wake.set()
            return revision
        body = body_of(rec)
        try:
            fresh = (rec.swarm_id, rec.generation) in self.unattempted
            self.unattempted.discard((rec.swarm_id, rec.generation))
            cid = await create_or_find(
                self.cluster, rec, body, look_first=not fresh, start=rec.start
            )
        except DockerError as e:
            log.warning("cannot place %s on %s: %s (retrying)", rec.name, rec.node_id, e.message)
            return NOTHING_WRITTEN
        finally:
            self.cluster.pending.pop(self.reserved.pop(rec.swarm_id, -1), None)
        placement = placement_from_body(rec.node_id, rec.name, body)
        self.cluster.created(placement, cid)
        keys = self.cluster.keys
        old_status = ""
        if rec.previous_node_id and rec.previous_container_id:
            old_status = keys.status(rec.previous_node_id, rec.previous_container_id)
        from_node = rec.previous_node_id
        old_cid = rec.previous_container_id
        failed_at = rec.node_failed_at_ns
        rec.state = PLACED
        rec.container_id = cid
        rec.previous_node_id = ""
        rec.previous_container_id = ""
        rec.node_failed_at_ns = 0
        # One transaction, while the record is still this plan: the name and the desired
        # record move to the copy, the old copy's status and desired record go, the record
        # says `placed` (so the status deletion asks nothing more: Cluster._apply_status).
        puts = created_puts(keys, cid, rec.name, rec.node_id, body)
        puts.append(self.cluster.logical.put_of(rec))
        revision = await self.cluster.kv.txn(
            [ModRevisionIs(keys.logical(rec.swarm_id), rev)],
            puts,
            [old_status, keys.container(old_cid)] if old_status else [],
        )
        if not revision:
            # The record changed under us (removed, or another pass): the copy made is a
            # container all the same, recorded as any other; the record is re-read next time.
            await self.cluster.record_created(cid, rec.name, rec.node_id, body)
            if old_status:
                await self.cluster.kv.delete(old_status)
            return 0
        log.info("rescheduled %s from %s to %s as %s", rec.name, from_node, rec.node_id, cid[:12])
        self.cluster.events.publish(reschedule_event(self.cluster, rec, cid, from_node, old_cid))
        if self.metrics is not None:
            self.metrics.reschedules.inc()
            if failed_at:
                self.metrics.time_to_reschedule.observe(max(time.time_ns() - failed_at, 0) / 1e9)
        return revision


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
