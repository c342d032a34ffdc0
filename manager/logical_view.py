"""What the cluster view shows of logical containers (docs/failover.md, "What `docker` shows"),
from the `logical/` records kept in memory (read once, then watched, like `nodes/` and
`status/`): a copy its record says was replaced is neither listed nor resolved, and a container
being rescheduled that no copy stands for any more (its old copy's status record is gone) is
still listed and resolved, from the record itself."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import TYPE_CHECKING

from proto.keys import Keys
from proto.kv import WatchEvent
from proto.logical import SWARM_ID_LABEL, UNSETTLED, is_stale
from proto.records_pb2 import ContainerStatus, LogicalContainer

if TYPE_CHECKING:
    from manager.cluster import Placement

SHORT_SWARM_ID_LEN = 12  # Swarm's truncated form of its ID


def unplaced_id(rec: LogicalContainer) -> str:
    """The ID a container without a copy is listed under: its old copy's, else its swarm id."""
    return rec.previous_container_id or rec.swarm_id


class LogicalView:
    """Mixed into Cluster, which provides the records below and the container lookups."""

    keys: Keys
    statuses: dict[str, ContainerStatus]
    placements: dict[str, Placement]
    logical_records: dict[str, LogicalContainer]  # swarm id -> record
    logical_revisions: dict[str, int]  # swarm id -> its record's mod revision
    # Swarm ids of the records being rescheduled (unsettled, with a node they move from),
    # kept on every change: a create's name check must not scan 30,000 records.
    moving: set[str]
    logical_seen: int  # the highest revision applied (events come in revision order)
    logical_advanced: asyncio.Event  # set on every event applied

    def _labels_of(self, cid: str) -> Mapping[str, str]:
        raise NotImplementedError

    if TYPE_CHECKING:  # ContainerIndex's, mixed into Cluster beside this class

        def ids_with_swarm_id(self, swarm_id: str) -> tuple[str, ...]: ...

    def _apply_logical(self, event: WatchEvent) -> None:
        swarm_id = self.keys.swarm_id(event.key)
        self.logical_seen = max(self.logical_seen, event.mod_revision)
        self.logical_advanced.set()
        self.moving.discard(swarm_id)
        if event.kind == "delete":
            self.logical_records.pop(swarm_id, None)
            self.logical_revisions.pop(swarm_id, None)
            return
        rec = LogicalContainer()
        rec.ParseFromString(event.value)
        self.logical_records[swarm_id] = rec
        self.logical_revisions[swarm_id] = event.mod_revision
        if rec.state in UNSETTLED and rec.previous_node_id:
            self.moving.add(swarm_id)

    def logical_copy(self, swarm_id: str) -> tuple[LogicalContainer, int] | None:
        """A copy of the watched record and its revision (a guess: etcd may be ahead)."""
        rec = self.logical_records.get(swarm_id)
        rev = self.logical_revisions.get(swarm_id)
        if rec is None or not rev:
            return None
        copy = LogicalContainer()
        copy.CopyFrom(rec)
        return copy, rev

    async def logical_caught_up(self, revision: int, timeout: float) -> bool:
        """Wait until the watched records include every write up to `revision` (a write
        under logical/: it comes back as an event of that revision or a later one); False
        when the watch is still behind after `timeout` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.logical_seen < revision:
            self.logical_advanced.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.logical_advanced.wait(), remaining)
        return True

    def is_stale_copy(self, node_id: str, cid: str, labels: Mapping[str, str]) -> bool:
        """A copy its logical record says was replaced, by the agents' own rule (the manager
        cannot tell a fenced copy, so a copy without a record is kept). The old copy of a
        container being rescheduled is not: it is that container's row (`Host Down`,
        `Pending reschedule`) until the replacement exists."""
        swarm_id = labels.get(SWARM_ID_LABEL)
        rec = self.logical_records.get(swarm_id) if swarm_id else None
        if rec is None or not is_stale(rec, node_id, cid):
            return False
        return not (rec.state in UNSETTLED and cid == rec.previous_container_id)

    def shown(self, cid: str) -> bool:
        """Known to the view (status record, else our own create) and not a stale copy."""
        st = self.statuses.get(cid)
        if st is not None:
            return not self.is_stale_copy(st.node_id, cid, st.labels)
        placed = self.placements.get(cid)
        return placed is not None and not self.is_stale_copy(placed.node_id, cid, placed.labels)

    def unplaced(self) -> dict[str, LogicalContainer]:
        """Row ID -> record of every container being rescheduled (failed, placing, pending:
        it has a node it moves from, unlike a `docker create` in flight) that no shown copy
        carries the swarm id of."""
        moving = [
            rec
            for sid in self.moving
            if (rec := self.logical_records.get(sid)) is not None
            and rec.state in UNSETTLED
            and rec.previous_node_id
        ]
        return {
            unplaced_id(rec): rec
            for rec in moving
            if not any(self.shown(cid) for cid in self.ids_with_swarm_id(rec.swarm_id))
        }

    def unplaced_ref(self, ref: str) -> tuple[str, str] | None:
        """(old node, row ID) of the one unplaced container `ref` names: by its row ID, swarm
        id (full or truncated), name, or a prefix of its row ID; None when none or several."""
        rows = self.unplaced()
        found = {
            rid
            for rid, rec in rows.items()
            if ref in (rid, rec.swarm_id, rec.name)
            or (len(ref) == SHORT_SWARM_ID_LEN and rec.swarm_id[:SHORT_SWARM_ID_LEN] == ref)
        }
        if not found and ref:
            found = {rid for rid in rows if rid.startswith(ref)}
        if len(found) != 1:
            return None
        rid = found.pop()
        return rows[rid].previous_node_id, rid
