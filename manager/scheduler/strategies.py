"""Swarm's placement strategies: spread, binpack (weighted by reservations) and random."""

from __future__ import annotations

import random

from .model import NANOS_PER_CPU, NodeInfo, SchedulingError
from .placement import Request

STRATEGIES = ("spread", "binpack", "random")
NO_RESOURCES = "no resources available to schedule container"


def pick(
    strategy: str,
    req: Request,
    nodes: list[NodeInfo],
    overcommit_pct: int,
    rng: random.Random,
) -> NodeInfo:
    """The node the strategy places the container on; SchedulingError if none fits.

    Ties beyond (weight, number of containers) keep the first node in the caller's order
    (Swarm's sort is unstable, so any choice is faithful; this one is deterministic).
    """
    if not nodes:
        raise SchedulingError(NO_RESOURCES)
    if strategy == "random":
        return rng.choice(nodes)
    binpack = strategy == "binpack"
    if req.cpu <= 0 and req.memory <= 0:
        # Every node scores 100 + 100 (+ the health term), so only health and the container
        # count decide; this path skips the reservation sums, which plain creates never need.
        if binpack:
            return max(nodes, key=lambda n: (n.healthy, len(n.containers)))
        return min(nodes, key=lambda n: (not n.healthy, len(n.containers)))
    return _pick_weighted(binpack, req, nodes, overcommit_pct)


def _pick_weighted(
    binpack: bool, req: Request, nodes: list[NodeInfo], overcommit_pct: int
) -> NodeInfo:
    health_factor = 10 if binpack else -10
    req_cpu, req_mem = req.cpu, req.memory
    best: NodeInfo | None = None
    best_key: tuple[int, int] | None = None
    for node in nodes:
        mem = node.memory
        total_mem = mem + mem * overcommit_pct // 100
        cpus = node.ncpu
        total_cpu = (cpus + cpus * overcommit_pct // 100) * NANOS_PER_CPU
        if total_mem < req_mem or total_cpu < req_cpu:
            continue
        usage = node.usage()
        cpu_score = (usage.cpu + req_cpu) * 100 // total_cpu if req_cpu > 0 else 100
        if cpu_score > 100:
            continue
        mem_score = (usage.memory + req_mem) * 100 // total_mem if req_mem > 0 else 100
        if mem_score > 100:
            continue
        weight = cpu_score + mem_score + health_factor * (100 if node.healthy else 0)
        key = (weight, usage.count)
        if best_key is None or (key > best_key if binpack else key < best_key):
            best, best_key = node, key
    if best is None:
        raise SchedulingError(NO_RESOURCES)
    return best
