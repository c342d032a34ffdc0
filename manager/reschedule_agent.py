"""The rescheduler's calls to the target agent, idempotent so a resumed `placing` record never
makes a second copy: a container with the record's swarm id and generation is the one."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable
from typing import Any

from manager.cluster import Cluster
from proto import agent_pb2 as pb
from proto.agent_pb2_grpc import AgentStub
from proto.docker.errors import DockerError
from proto.logical import GENERATION_LABEL, SWARM_ID_LABEL
from proto.records_pb2 import LogicalContainer

log = logging.getLogger(__name__)


def create_call(stub: AgentStub, request: pb.ContainerCreateRequest) -> Awaitable[Any]:
    """ContainerCreate, waiting for a channel that is still connecting (or reconnecting after
    a failed handshake) up to the call's deadline instead of failing at once: nothing has been
    sent yet, and the scheduler would choose the same least-loaded node for the next create
    too (a fill of 30,000 once met 31 503s in a row that way)."""
    return stub.ContainerCreate(request, wait_for_ready=True)


async def _rows(cluster: Cluster, node_id: str) -> list[dict[str, Any]]:
    reply = await cluster.call(
        node_id, lambda s: s.ContainerList(pb.ContainerListRequest(all=True))
    )
    return [json.loads(raw) for raw in reply.rows]


def _generation(row: dict[str, Any]) -> int:
    text = str((row.get("Labels") or {}).get(GENERATION_LABEL) or "0")
    return int(text) if text.isdigit() else 0


async def find(cluster: Cluster, rec: LogicalContainer) -> str | None:
    """The container of this swarm id and generation on the record's node, if made already."""
    for row in await _rows(cluster, rec.node_id):
        labels = row.get("Labels") or {}
        if labels.get(SWARM_ID_LABEL) == rec.swarm_id and _generation(row) == rec.generation:
            return str(row["Id"])
    return None


async def _remove_stale_namesakes(cluster: Cluster, rec: LogicalContainer) -> bool:
    """Older generations of this logical container on the target that hold its name (the node
    came back before fencing removed them): stale by the logical record, so they go."""
    removed = False
    for row in await _rows(cluster, rec.node_id):
        labels = row.get("Labels") or {}
        names = [n.lstrip("/") for n in row.get("Names") or []]
        if (
            labels.get(SWARM_ID_LABEL) == rec.swarm_id
            and _generation(row) < rec.generation
            and rec.name in names
        ):
            cid = str(row["Id"])
            log.info("removing stale copy %s of %s on %s", cid[:12], rec.name, rec.node_id)
            await cluster.call(
                rec.node_id,
                lambda s, cid=cid: s.ContainerRemove(pb.ContainerRemoveRequest(id=cid, force=True)),
            )
            removed = True
    return removed


async def create_or_find(
    cluster: Cluster,
    rec: LogicalContainer,
    body: dict[str, Any],
    look_first: bool = True,
    start: bool = False,
) -> str:
    """The container ID of `rec` on its target node, created there unless it exists, and with
    `start` running. `look_first` False: no create of this generation was ever asked for, so
    none is looked for."""
    found = await find(cluster, rec) if look_first else None
    if found is not None:
        if start:
            await start_quietly(cluster, rec.node_id, found)
        return found
    # Created and started in one call (a mass failover makes a thousand of them).
    request = pb.ContainerCreateRequest(json=json.dumps(body).encode(), name=rec.name, start=start)
    try:
        reply = await cluster.call(rec.node_id, lambda s: create_call(s, request))
    except DockerError as e:
        if e.status != 409 or not await _remove_stale_namesakes(cluster, rec):
            raise
        reply = await cluster.call(rec.node_id, lambda s: create_call(s, request))
    if start and not reply.started:  # an agent that does not know `start` yet
        await start_quietly(cluster, rec.node_id, str(reply.id))
    return str(reply.id)


async def start_quietly(cluster: Cluster, node_id: str, cid: str) -> None:
    """Start it; one already running (a resumed record) is what we wanted."""
    try:
        await cluster.call(node_id, lambda s: s.ContainerStart(pb.ContainerStartRequest(id=cid)))
    except DockerError as e:
        if e.status != 304 and "already" not in e.message:
            raise
