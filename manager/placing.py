"""Where a create goes: the scheduler's view of the cluster (every node with its containers,
in-flight creates included) and classic Swarm's choice on it. Used by `POST /containers/create`
and by the rescheduler."""

from __future__ import annotations

import contextlib
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
    """What placement needs before the schedule lock is taken (no lock is ever held across an
    etcd read or a call to an agent)."""

    pins: dict[str, str]  # dependency reference -> container ID


async def survey(cluster: Cluster, body: dict[str, Any]) -> Survey:
    """What placing `body` (hints already in its labels) needs: its dependencies resolved, and
    the nodes' images caught up with any image change made through this manager."""
    try:
        refs = build_request(body).dependencies()
    except SchedulingError:
        refs = []  # a bad expression: choose_node raises Swarm's error for it
    await cluster.node_images.catch_up_after_writes()
    return Survey(pins=await pin_dependencies(cluster, refs))


def choose_node(
    cluster: Cluster, scheduler: Scheduler, body: dict[str, Any], seen: Survey
) -> NodeRecord:
    """Classic Swarm's placement of a create body whose hints are already in its labels
    (parse_placement); DockerError with Swarm's words when no node fits. No I/O: call it
    under the schedule lock and reserve the choice (Cluster.add_pending) before releasing it."""
    try:
        infos = node_infos(cluster)
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


def node_infos(cluster: Cluster) -> list[NodeInfo]:
    """The scheduler's view: every node with its containers (pending creates included) and
    its images, from the records (manager/scheduler_view.py)."""
    return cluster.scheduler_view.infos()
