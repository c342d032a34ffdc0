"""Logical containers in etcd (`logical/<swarm-id>`, LogicalContainer): one per container made
through the manager, whatever its reschedule policy, so agents can always tell a stale copy from
the live one. Written only by the manager, each change a compare-and-swap on the key's mod
revision (docs/failover.md, "Manager side")."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from proto.keys import Keys
from proto.kv import KV, KVError, ModRevisionIs, Put
from proto.logical import FIRST_GENERATION, GENERATION_LABEL, PLACING
from proto.records_pb2 import LogicalContainer

log = logging.getLogger(__name__)

POLICY_LABEL = "com.docker.swarm.reschedule-policies"
ON_NODE_FAILURE = "on-node-failure"
CAS_ATTEMPTS = 20
# swap_all's transactions: etcd takes 128 operations and 1.5 MiB per request by default.
SWAP_BATCH = 64
SWAP_BATCH_BYTES = 512 * 1024


def is_reschedulable(labels: dict[str, str]) -> bool:
    """Swarm's HasReschedulePolicy("on-node-failure"), read from the stored label (the env form
    was moved there at create, as Swarm does)."""
    try:
        policies = json.loads(labels.get(POLICY_LABEL) or "[]")
    except ValueError:
        return False
    return isinstance(policies, list) and ON_NODE_FAILURE in policies


def with_generation(body: dict[str, Any], generation: int) -> dict[str, Any]:
    labels = dict(body.get("Labels") or {})
    labels[GENERATION_LABEL] = str(generation)
    return {**body, "Labels": labels}


def is_create_intent(rec: LogicalContainer) -> bool:
    """A `placing` record written by `docker create` before the node was asked (its intent,
    manager/create_intent.py), not by a reschedule: a reschedule places generation 2 or later
    and remembers the node it moves from."""
    return (
        rec.state == PLACING
        and rec.generation == FIRST_GENERATION
        and not rec.previous_node_id
        and not rec.container_id
    )


def holds_identity(rec: LogicalContainer, live: Callable[[str], bool]) -> bool:
    """Whether a create carrying this record's swarm id (set by the client) must leave it alone:
    it names another live container (the older container stays the one identity) or a create of
    it is under way. A record of a container gone is taken over."""
    if rec.container_id:
        return live(rec.container_id)
    return rec.state == PLACING


def body_of(rec: LogicalContainer) -> dict[str, Any]:
    try:
        body = json.loads(rec.create_json or b"{}")
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


class LogicalStore:
    """CRUD over `logical/` with optimistic concurrency; KVError propagates to the caller."""

    def __init__(
        self,
        kv: KV,
        keys: Keys,
        known: Callable[[str], tuple[LogicalContainer, int] | None] | None = None,
    ) -> None:
        self.kv = kv
        self.keys = keys
        # The watched copy of a record and its revision (the cluster view's): `update` tries it
        # first and reads etcd only when its swap loses, one round trip less per start/stop.
        self.known = known

    async def get(self, swarm_id: str) -> tuple[LogicalContainer, int] | None:
        entry = await self.kv.get(self.keys.logical(swarm_id))
        if entry is None:
            return None
        rec = LogicalContainer()
        rec.ParseFromString(entry.value)
        return rec, entry.mod_revision

    async def all(self) -> list[tuple[LogicalContainer, int]]:
        out = []
        for entry in await self.kv.get_prefix(self.keys.logical_prefix()):
            rec = LogicalContainer()
            try:
                rec.ParseFromString(entry.value)
            except Exception:  # noqa: BLE001 - a corrupt record must not hide the others
                log.warning("unreadable logical record %s", entry.key)
                continue
            out.append((rec, entry.mod_revision))
        return out

    def put_of(self, rec: LogicalContainer, now_ns: int | None = None) -> Put:
        """The write of `rec`, stamped with the time it is written (`updated_at_ns`)."""
        rec.updated_at_ns = time.time_ns() if now_ns is None else now_ns
        return Put(self.keys.logical(rec.swarm_id), rec.SerializeToString())

    async def swap(self, rec: LogicalContainer, mod_revision: int) -> int:
        """Write `rec` if its key is still at `mod_revision` (0: only if absent). The revision
        written, 0 when the key had changed (nothing written)."""
        put = self.put_of(rec)
        return await self.kv.txn([ModRevisionIs(put.key, mod_revision)], [put])

    async def swap_all(self, items: Sequence[tuple[LogicalContainer, int]]) -> list[int]:
        """`swap` of every (record, mod revision), a batch of records per transaction (a
        mass failover marks a thousand records at once): the revision each was written at,
        0 where its key had changed. A batch whose compares do not all hold is done again
        one record at a time, so only the records that changed lose."""
        now = time.time_ns()
        batches: list[list[tuple[LogicalContainer, int, Put]]] = [[]]
        size = 0
        for rec, rev in items:
            put = self.put_of(rec, now)
            if batches[-1] and (
                len(batches[-1]) >= SWAP_BATCH or size + len(put.value) > SWAP_BATCH_BYTES
            ):
                batches.append([])
                size = 0
            batches[-1].append((rec, rev, put))
            size += len(put.value)

        async def one(batch: list[tuple[LogicalContainer, int, Put]]) -> list[int]:
            compares = [ModRevisionIs(put.key, rev) for _, rev, put in batch]
            revision = await self.kv.txn(compares, [put for _, _, put in batch])
            if revision:
                return [revision] * len(batch)
            alone = (self.kv.txn([ModRevisionIs(put.key, rev)], [put]) for _, rev, put in batch)
            return list(await asyncio.gather(*alone))

        done = await asyncio.gather(*(one(b) for b in batches if b))
        return [revision for batch in done for revision in batch]

    async def update(
        self, swarm_id: str, change: Callable[[LogicalContainer], bool]
    ) -> LogicalContainer | None:
        """Apply `change` (returns False: nothing to write) until the swap wins; the record
        written, or None when there is none or nothing changed."""
        guess = self.known(swarm_id) if self.known is not None else None
        for _ in range(CAS_ATTEMPTS):
            found = guess if guess is not None else await self.get(swarm_id)
            if found is None:
                return None
            rec, rev = found
            if not change(rec):
                if guess is not None:
                    guess = None  # the watched copy may be behind: only etcd's says "nothing"
                    continue
                return None
            guess = None
            if await self.swap(rec, rev):
                return rec
        raise KVError(f"logical/{swarm_id}: too much contention")

    async def delete(self, swarm_id: str, container_id: str = "") -> None:
        """Drop the record (only while it still names `container_id`, when given)."""
        found = await self.get(swarm_id)
        if found is None:
            return
        rec, rev = found
        if container_id and rec.container_id != container_id:
            return  # already replaced by a reschedule: that copy is the live one
        if await self.kv.compare_and_delete(self.keys.logical(swarm_id), rev):
            # The overlay addresses it last had (docs/networking.md); a crash right here
            # leaves a few bytes no container will ask for.
            await self.kv.delete_prefix(self.keys.last_addresses_prefix(swarm_id))

    async def set_start(self, swarm_id: str, cid: str, start: bool) -> None:
        """Whether the container is meant to run (docker start/stop/kill/restart)."""
        await self._set_field(swarm_id, cid, "start", start, "run state")

    async def set_name(self, swarm_id: str, cid: str, name: str) -> None:
        await self._set_field(swarm_id, cid, "name", name, "new name")

    async def _set_field(
        self, swarm_id: str, cid: str, field: str, value: object, what: str
    ) -> None:
        """Set one field of the record while it still names container `cid`."""

        def change(rec: LogicalContainer) -> bool:
            if rec.container_id != cid or getattr(rec, field) == value:
                return False
            setattr(rec, field, value)
            return True

        try:
            await self.update(swarm_id, change)
        except KVError as e:
            log.warning("cannot record the %s of %s: %s", what, swarm_id, e)

    async def forget(self, swarm_id: str, cid: str) -> None:
        try:
            await self.delete(swarm_id, cid)
        except KVError as e:
            log.warning("cannot delete logical container %s: %s", swarm_id, e)
