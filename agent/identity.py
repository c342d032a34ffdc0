"""Logical containers on this node (docs/failover.md): which local container is which logical
container (label `com.docker.swarm.id`) at which generation (`com.docker.swarm.generation`), a
create the manager repeats after a crash (idempotent by the two labels), and, decided by the
manager's `logical/<swarm-id>` record when the agent (re)registers, the copies it keeps (not
replaced yet) and the stale copies it removes.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Protocol

from proto import logical
from proto.docker.errors import DockerError
from proto.keys import Keys
from proto.kv import KV
from proto.logical import (
    GENERATION_LABEL,
    PLACED,
    SWARM_ID_LABEL,
    is_stale,
    names_copy,
)
from proto.records_pb2 import LogicalContainer

log = logging.getLogger(__name__)


class _Runtime(Protocol):
    def list(self) -> list[Any]: ...

    async def start(self, ref: str) -> None: ...

    async def remove(self, ref: str, force: bool = False, volumes: bool = False) -> None: ...


def labels_of(rec: Any) -> dict[str, str]:
    body = rec.body if isinstance(rec.body, dict) else {}
    labels = body.get("Labels") or {}
    return labels if isinstance(labels, dict) else {}


def is_replacement(rec: Any) -> bool:
    """Made by a reschedule (generation past the first): an older copy existed elsewhere."""
    return logical.is_replacement(labels_of(rec))


def same_generation(runtime: _Runtime, body: dict[str, Any]) -> str | None:
    """The ID of a local container made by the same create (same swarm id and generation), so a
    repeated create returns it instead of making a second copy; None when there is none."""
    labels = body.get("Labels")
    if not isinstance(labels, dict):
        return None
    swarm_id, generation = labels.get(SWARM_ID_LABEL), labels.get(GENERATION_LABEL)
    if not swarm_id or generation is None:
        return None
    for rec in runtime.list():
        have = labels_of(rec)
        if have.get(SWARM_ID_LABEL) == swarm_id and have.get(GENERATION_LABEL) == generation:
            return str(rec.id)
    return None


async def _logical(kv: KV, keys: Keys, swarm_id: str) -> tuple[LogicalContainer | None, int]:
    """The logical record and its mod revision (None, 0 when there is none)."""
    entry = await kv.get(keys.logical(swarm_id))
    if entry is None:
        return None, 0
    logical = LogicalContainer()
    logical.ParseFromString(entry.value)
    return logical, entry.mod_revision


async def remove_stale_copies(runtime: _Runtime, kv: KV, keys: Keys, node_id: str) -> list[str]:
    """Force-remove every local container whose logical record names another copy, and its
    status key. Raises KVError when etcd cannot be read (nothing is guessed). Returns the IDs
    removed."""
    removed: list[str] = []
    for rec in runtime.list():
        swarm_id = labels_of(rec).get(SWARM_ID_LABEL)
        if not swarm_id:
            continue
        logical, _ = await _logical(kv, keys, swarm_id)
        if not is_stale(logical, node_id, rec.id, fenced=bool(getattr(rec, "fenced", False))):
            continue
        if logical is None:
            log.warning("removing stale copy %s of %s (removed while away)", rec.id[:12], swarm_id)
        else:
            log.warning(
                "removing stale copy %s of %s (now %s on node %s, generation %d)",
                rec.id[:12],
                swarm_id,
                logical.container_id[:12] or "-",
                logical.node_id,
                logical.generation,
            )
        try:
            await runtime.remove(rec.id, force=True)
        except DockerError as e:
            log.warning("could not remove stale copy %s: %s", rec.id[:12], e)
            continue
        await kv.delete(keys.status(node_id, rec.id))
        removed.append(rec.id)
    return removed


async def reclaim_copies(runtime: _Runtime, kv: KV, keys: Keys, node_id: str) -> list[str]:
    """Keep the local copies a reschedule has not replaced yet, rather than have them replaced:
    a running copy whose record is being rescheduled (its lease ran out while etcd was down
    for every agent but not for the manager, so nothing fenced it) goes back to placed here; a
    copy the fence killed while the record still names it (a blip longer than the deadline
    allows, or the node came back before the manager moved it) is placed here again and
    started if it is meant to run. The record is rewritten only while its mod revision is the
    one read, so the manager's own compare-and-swap (to place it elsewhere) and this claim
    cannot both succeed. Raises KVError when etcd cannot be read. Returns the IDs kept."""
    kept: list[str] = []
    for rec in runtime.list():
        swarm_id = labels_of(rec).get(SWARM_ID_LABEL)
        if not swarm_id:
            continue
        fenced = bool(getattr(rec, "fenced", False)) and not rec.running
        if not rec.running and not fenced:
            continue
        logical, rev = await _logical(kv, keys, swarm_id)
        if logical is None or not names_copy(logical, node_id, rec.id):
            continue
        if logical.state == PLACED and not (fenced and logical.start):
            continue  # placed here and fine, or stopped on purpose
        logical.state = PLACED
        logical.node_id, logical.container_id = node_id, rec.id
        logical.previous_node_id = logical.previous_container_id = ""
        logical.node_failed_at_ns = 0
        logical.updated_at_ns = time.time_ns()
        if not await kv.compare_and_swap(keys.logical(swarm_id), logical.SerializeToString(), rev):
            log.info("%s of %s changed meanwhile: left to the manager", rec.id[:12], swarm_id)
            continue
        if fenced and logical.start:
            try:
                await runtime.start(rec.id)
            except DockerError as e:
                log.warning("could not start fenced %s again: %s", rec.id[:12], e)
                continue
        log.warning("kept %s of %s here: not replaced yet", rec.id[:12], swarm_id)
        kept.append(rec.id)
    return kept
