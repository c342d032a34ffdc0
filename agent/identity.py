"""Logical containers on this node (docs/failover.md): which local container is which logical
container (label `com.docker.swarm.id`) at which generation (`com.docker.swarm.generation`), a
create the manager repeats after a crash (idempotent by the two labels), and the stale copies
an agent removes when it (re)registers, decided by the manager's `logical/<swarm-id>` record.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from proto.docker.errors import DockerError
from proto.keys import Keys
from proto.kv import KV
from proto.records_pb2 import LogicalContainer

log = logging.getLogger(__name__)

SWARM_ID_LABEL = "com.docker.swarm.id"
GENERATION_LABEL = "com.docker.swarm.generation"


class _Runtime(Protocol):
    def list(self) -> list[Any]: ...

    async def remove(self, ref: str, force: bool = False, volumes: bool = False) -> None: ...


def labels_of(rec: Any) -> dict[str, str]:
    body = rec.body if isinstance(rec.body, dict) else {}
    labels = body.get("Labels") or {}
    return labels if isinstance(labels, dict) else {}


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


def is_stale(
    logical: LogicalContainer | None, node_id: str, cid: str, fenced: bool = False
) -> bool:
    """Whether the local container `cid` is a stale copy: its logical record names another node
    or another container. No record: a fenced copy is stale (the manager deleted the record when
    the moved container was removed while this node was away); any other is not ours to judge
    (not made by a manager)."""
    if logical is None:
        return fenced
    if logical.node_id != node_id:
        return True
    # Placing here with the create not yet recorded: this may be that very create.
    return bool(logical.container_id) and logical.container_id != cid


async def remove_stale_copies(runtime: _Runtime, kv: KV, keys: Keys, node_id: str) -> list[str]:
    """Force-remove every local container whose logical record names another copy, and its
    status key. Raises KVError when etcd cannot be read (nothing is guessed). Returns the IDs
    removed."""
    removed: list[str] = []
    for rec in runtime.list():
        swarm_id = labels_of(rec).get(SWARM_ID_LABEL)
        if not swarm_id:
            continue
        entry = await kv.get(keys.logical(swarm_id))
        logical = None
        if entry is not None:
            logical = LogicalContainer()
            logical.ParseFromString(entry.value)
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
