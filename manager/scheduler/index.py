"""The strategy's ranking of the nodes, kept up to date incrementally.

For each request shape (CPU, memory) a heap holds every eligible node's strategy key (health,
container slots and resource fit decide eligibility). A node's entries go stale when its
version changes (see model.NodeInfo); only nodes in the change log are re-scored, and stale
entries are dropped lazily when they reach the top. Other filters are tested node by node
while walking the heap in order, so a typical create looks at a handful of nodes, not 1,000.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from operator import is_

from .filters import has_free_slot
from .model import CHANGES, NANOS_PER_CPU, NodeInfo

MAX_SHAPES = 16

# (weight, containers, position, version); binpack negates the first two.
Entry = tuple[int, int, int, int]


class RankIndex:
    def __init__(self, binpack: bool, overcommit_pct: int, health: bool, slots: bool) -> None:
        self._binpack = binpack
        self._pct = overcommit_pct
        self._health = health  # the health filter is configured
        self._slots = slots  # the containerslots filter is configured
        self._nodes: list[NodeInfo] = []
        self._positions: dict[int, int] = {}  # id(node) -> position; _nodes keeps ids unique
        self._log_position = 0
        self._heaps: dict[tuple[int, int], list[Entry]] = {}

    def pick(
        self,
        nodes: list[NodeInfo],
        cpu: int,
        memory: int,
        accepts: Callable[[NodeInfo], bool] | None = None,
        limit: int = 64,
    ) -> NodeInfo | None:
        """The strategy's best node for a request of this shape that `accepts` (the other
        filters, all per-node predicates) takes, looking at no more than `limit` nodes.

        None if none qualified within the limit: the caller then runs the full pipeline,
        which also produces Swarm's exact error."""
        self._sync(nodes)
        shape = (cpu, memory)
        heap = self._heaps.get(shape)
        if heap is None:
            if len(self._heaps) >= MAX_SHAPES:
                self._heaps.pop(next(iter(self._heaps)))
            heap = [e for i in range(len(nodes)) if (e := self._entry(i, cpu, memory))]
            heapq.heapify(heap)
            self._heaps[shape] = heap
        else:
            self._heaps[shape] = self._heaps.pop(shape)  # most recently used last
        own = self._nodes
        if accepts is None:
            while heap:
                top = heap[0]
                if own[top[2]]._version == top[3]:
                    return own[top[2]]
                heapq.heappop(heap)
            return None
        # Walk in strategy order: pop valid entries aside and push them back afterwards.
        aside: list[Entry] = []
        found = None
        try:
            while heap and len(aside) < limit:
                top = heapq.heappop(heap)
                node = own[top[2]]
                if node._version != top[3]:
                    continue
                aside.append(top)
                if accepts(node):
                    found = node
                    break
        finally:
            for e in aside:
                heapq.heappush(heap, e)
        return found

    def exists(self, cpu: int, memory: int, accepts: Callable[[NodeInfo], bool]) -> bool:
        """Whether any node ranked for this shape (by the last `pick`) passes `accepts`."""
        own = self._nodes
        return any(
            own[e[2]]._version == e[3] and accepts(own[e[2]])
            for e in self._heaps.get((cpu, memory), ())
        )

    def _sync(self, nodes: list[NodeInfo]) -> None:
        """Re-score, in every cached shape, the nodes that changed since the last call."""
        own = self._nodes
        changed_nodes = CHANGES.since(self._log_position)
        self._log_position = CHANGES.end()
        if len(nodes) != len(own) or not all(map(is_, nodes, own)) or changed_nodes is None:
            self._nodes = list(nodes)
            self._positions = {id(n): i for i, n in enumerate(nodes)}
            self._heaps.clear()
            return
        positions = self._positions
        changed = {positions[k] for n in changed_nodes if (k := id(n)) in positions}
        if not changed:
            return
        limit = 3 * len(nodes) + 64
        for (cpu, memory), heap in list(self._heaps.items()):
            if len(heap) > limit:  # too many stale entries: rebuild from scratch
                heap[:] = [e for i in range(len(nodes)) if (e := self._entry(i, cpu, memory))]
                heapq.heapify(heap)
                continue
            for i in changed:
                e = self._entry(i, cpu, memory)
                if e is not None:
                    heapq.heappush(heap, e)

    def _entry(self, i: int, req_cpu: int, req_mem: int) -> Entry | None:
        node = self._nodes[i]
        if self._health and not node.healthy:
            return None
        if self._slots and not has_free_slot(node):
            return None
        count = len(node.containers)
        pct = self._pct
        total_mem = node.memory + node.memory * pct // 100
        total_cpu = (node.ncpu + node.ncpu * pct // 100) * NANOS_PER_CPU
        if total_mem < req_mem or total_cpu < req_cpu:
            return None
        cpu_score = mem_score = 100
        if req_cpu > 0 or req_mem > 0:
            usage = node.usage()
            if req_cpu > 0:
                cpu_score = (usage.cpu + req_cpu) * 100 // total_cpu
            if req_mem > 0:
                mem_score = (usage.memory + req_mem) * 100 // total_mem
            if cpu_score > 100 or mem_score > 100:
                return None
        health = 100 if node.healthy else 0
        if self._binpack:
            return (-(cpu_score + mem_score + 10 * health), -count, i, node._version)
        return (cpu_score + mem_score - 10 * health, count, i, node._version)
