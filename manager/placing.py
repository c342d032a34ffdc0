"""Where a create goes: the scheduler's view of the cluster (every node with its containers,
in-flight creates included) and classic Swarm's choice on it. Used by `POST /containers/create`
and by the rescheduler."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from manager.cluster import Cluster
from manager.scheduler import (
    ContainerInfo,
    NodeInfo,
    Scheduler,
    SchedulingError,
    build_request,
    with_image_affinity,
)
from proto.docker.errors import DockerError, NotFound
from proto.records_pb2 import NodeRecord


def scheduler_for(settings: dict[str, Any]) -> Scheduler:
    scheduler = settings.get("scheduler")
    if not isinstance(scheduler, Scheduler):
        scheduler = Scheduler(settings.get("strategy", "spread"), settings.get("filters"))
        settings["scheduler"] = scheduler
    return scheduler


@dataclass
class Survey:
    """What placement needs from the agents, asked BEFORE the schedule lock is taken: no lock
    is ever held across a call to an agent (a hung one would stall every create)."""

    images: dict[str, set[str]]  # node id -> image IDs and tags
    pins: dict[str, str]  # dependency reference -> container ID


async def survey(
    cluster: Cluster, body: dict[str, Any], images: dict[str, set[str]] | None = None
) -> Survey:
    """The agents' answers for placing `body` (hints already in its labels); `images`: image
    lists already asked for (several placements in a row share one round)."""
    try:
        refs = build_request(body).dependencies()
    except SchedulingError:
        refs = []  # a bad expression: choose_node raises Swarm's error for it
    if images is None:
        images = await image_lists(cluster)
    return Survey(images=images, pins=await pin_dependencies(cluster, refs))


def choose_node(
    cluster: Cluster, scheduler: Scheduler, body: dict[str, Any], seen: Survey
) -> NodeRecord:
    """Classic Swarm's placement of a create body whose hints are already in its labels
    (parse_placement); DockerError with Swarm's words when no node fits. No I/O: call it
    under the schedule lock and reserve the choice (Cluster.add_pending) before releasing it."""
    try:
        infos = build_infos(cluster, seen.images)
        chosen = scheduler.select(infos, with_image_affinity(body, infos), seen.pins)
    except SchedulingError as e:
        raise DockerError(e.message, e.status) from None
    return cluster.nodes[chosen.id]


async def pin_dependencies(cluster: Cluster, refs: list[str]) -> dict[str, str]:
    """Each dependency reference resolved cluster-wide as every other reference is (dockerd's
    order: ID, name, ID prefix); unknown ones are left to the scheduler's error."""
    pins = {}
    for ref in refs:
        with contextlib.suppress(NotFound):
            pins[ref] = (await cluster.resolve(ref))[1]
    return pins


async def image_lists(cluster: Cluster) -> dict[str, set[str]]:
    """Each node's image IDs and tags, from the images records its agent publishes (no node is
    asked); every image write that landed before this call is in."""
    await cluster.node_images.catch_up()
    return {rec.id: cluster.node_images.names_of(rec.id) for rec in cluster.sorted_nodes()}


async def node_infos(cluster: Cluster) -> list[NodeInfo]:
    """The scheduler's view: every node with its containers, pending creates included."""
    return build_infos(cluster, await image_lists(cluster))


def build_infos(cluster: Cluster, images: dict[str, set[str]]) -> list[NodeInfo]:
    infos = []
    for rec in cluster.sorted_nodes():
        containers = []
        for cid, st, placed in cluster.containers_on(rec.id):
            containers.append(
                ContainerInfo(
                    id=cid,
                    name=(st.name if st else placed.name if placed else ""),
                    image=(st.image if st else placed.image if placed else ""),
                    image_id=st.image_id if st else "",
                    labels=dict(st.labels) if st else dict(placed.labels if placed else {}),
                    running=(st.state in ("running", "paused", "restarting")) if st else True,
                    cpu_shares=placed.cpu_shares if placed else 0,
                    nano_cpus=placed.nano_cpus if placed else 0,
                    memory=placed.memory if placed else 0,
                    host_ports=list(placed.host_ports) if placed else [],
                    network_mode=placed.network_mode if placed else "default",
                )
            )
        infos.append(
            NodeInfo(
                id=rec.id,
                name=rec.name,
                addr=rec.addr,
                labels=dict(rec.labels),
                healthy=True,  # a node key exists only while its agent keeps the lease
                ncpu=rec.ncpu,
                memory=rec.memory_bytes,
                kernel_version=rec.kernel_version,
                operating_system=rec.operating_system,
                os_type=rec.os_type or "linux",
                storage_driver=rec.storage_driver,
                images=images.get(rec.id, set()),
                containers=containers,
            )
        )
    return infos
