"""Where a create goes: the scheduler's view of the cluster (every node with its containers,
in-flight creates included) and classic Swarm's choice on it. Used by `POST /containers/create`
and by the rescheduler."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from typing import Any

from manager.cluster import Cluster
from manager.scheduler import (
    NodeInfo,
    Scheduler,
    SchedulingError,
    build_request,
    with_image_affinity,
)
from proto import agent_pb2 as pb
from proto.docker.errors import DockerError, NotFound
from proto.records_pb2 import NodeRecord

# A hung agent must not hold up every create: its images count as unknown after this long.
IMAGE_LIST_TIMEOUT_S = 3.0


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
        body = with_image_affinity(body, infos, cluster.scheduler_view.nodes_with_image)
        chosen = scheduler.select(infos, body, seen.pins)
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
    """Each node's image IDs and tags; a node that does not answer in time has none."""
    images: dict[str, set[str]] = {}
    results = await cluster.fan_out(
        lambda s: s.ImageList(pb.ImageListRequest()), timeout=IMAGE_LIST_TIMEOUT_S
    )
    for rec, result in results:
        names: set[str] = set()
        if not isinstance(result, BaseException):
            for img in json.loads(result.json) or []:
                names.add(str(img.get("Id", "")))
                names.update(img.get("RepoTags") or [])
        images[rec.id] = names
    return images


async def node_infos(cluster: Cluster) -> list[NodeInfo]:
    """The scheduler's view: every node with its containers, pending creates included."""
    return build_infos(cluster, await image_lists(cluster))


def build_infos(cluster: Cluster, images: dict[str, set[str]]) -> list[NodeInfo]:
    return cluster.scheduler_view.infos(images)
