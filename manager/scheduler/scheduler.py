"""The scheduler: Swarm's filters, then its strategy, with the soft-expression retry."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping

from .expressions import ExpressionError
from .filters import DEFAULT_FILTERS, FILTERS, Filter, FilterError, HealthFilter
from .index import RankIndex
from .model import NodeInfo, SchedulingError
from .placement import Request, build_request
from .strategies import STRATEGIES, pick

COMPOSITE = "Unable to find a node that satisfies the following conditions "
NO_NODES = "No nodes available in the cluster"
MEMO_SIGNATURES = 16


class Scheduler:
    """Picks a node for a container create. Pure: no I/O, no locking (the caller serialises
    decisions and adds each pending container to the chosen node before the next one)."""

    def __init__(
        self,
        strategy: str = "spread",
        filters: list[str] | None = None,
        *,
        overcommit: float = 0.05,
        rng: random.Random | None = None,
    ) -> None:
        if strategy not in STRATEGIES:
            raise ValueError("strategy not supported")
        names = DEFAULT_FILTERS if filters is None else list(filters)
        if any(name not in FILTERS for name in names):
            raise ValueError("filter not supported")
        self.strategy = strategy
        self.filters = names
        self._filters: list[Filter] = [FILTERS[name] for name in names]
        self._overcommit_pct = int(overcommit * 100)
        self._rng = rng or random.Random()
        self._verdicts: dict[tuple, dict[int, tuple[tuple[int, int], bool]]] = {}
        self._index = RankIndex(
            binpack=strategy == "binpack",
            overcommit_pct=self._overcommit_pct,
            health="health" in names,
            slots="containerslots" in names,
        )

    def select(
        self, nodes: list[NodeInfo], body: dict, pins: Mapping[str, str] | None = None
    ) -> NodeInfo:
        """The node to create `body` (a Docker create JSON, hints in Env or labels) on.

        `pins` maps dependency references (`--link`, `--volumes-from`, `--net container:`) to
        the container IDs the caller resolved cluster-wide, so a name held on one node beats an
        ID prefix on another. Raises SchedulingError with Swarm's message.
        """
        if not nodes:
            raise SchedulingError(NO_NODES)
        req = build_request(body, pins)
        if self.strategy != "random":
            node = self._fast_select(nodes, req)
            if node is not None:
                return node
            # Nothing found quickly: the full pipeline decides, with Swarm's errors.
        return self.pipeline(nodes, body, pins)

    def pipeline(
        self, nodes: list[NodeInfo], body: dict, pins: Mapping[str, str] | None = None
    ) -> NodeInfo:
        """Swarm's algorithm step by step (filters over all nodes, then the strategy), with
        no index; `select` gives the same answers faster. Kept public for tests."""
        if not nodes:
            raise SchedulingError(NO_NODES)
        req = build_request(body, pins)
        if req.has_soft():
            try:
                return self._select(nodes, req, soft=True)
            except SchedulingError:
                pass  # Swarm retries without the soft expressions and reports that error
        return self._select(nodes, req, soft=False)

    def eligible(self, nodes: list[NodeInfo], body: dict) -> list[NodeInfo]:
        """Every node that passes the filters (Swarm's SelectNodesForContainer without the
        ranking, used to place volumes, which reserve nothing); SchedulingError if none."""
        if not nodes:
            raise SchedulingError(NO_NODES)
        req = build_request(body)
        if req.has_soft():
            try:
                return self._filtered(nodes, req, soft=True)
            except SchedulingError:
                pass  # as for containers: retried without the soft expressions
        return self._filtered(nodes, req, soft=False)

    def _fast_select(self, nodes: list[NodeInfo], req: Request) -> NodeInfo | None:
        """Walk the strategy's ranking until a node passes every filter. The same answer as
        the full pipeline: every filter is a per-node predicate, so the best-ranked node that
        passes them all is what filtering then ranking would pick."""
        if _strategy_only(req):
            return self._index.pick(nodes, req.cpu, req.memory)
        index = self._index
        try:
            # Health and container slots are part of the index's ranking already.
            others = [f for f in self._filters if f.name not in ("health", "containerslots")]
            hard_checks = [c for f in others for _, c in f.conditions(req, False)]
            # Soft conditions first: when none can be met, the scan below fails fast per node.
            soft_checks = [c for f in others for _, c in f.conditions(req, True, True)]
            soft_checks += hard_checks

            def hard(node: NodeInfo) -> bool:
                return all(c(node) for c in hard_checks)

            def soft(node: NodeInfo) -> bool:
                return all(c(node) for c in soft_checks)

            if not req.has_soft():
                return index.pick(nodes, req.cpu, req.memory, hard)
            node = index.pick(nodes, req.cpu, req.memory, soft)
            if node is not None or index.exists(req.cpu, req.memory, self._memo(req, soft)):
                return node
            # No node satisfies the soft expressions: Swarm's retry without them.
            return index.pick(nodes, req.cpu, req.memory, hard)
        except ExpressionError:
            return None

    def _memo(self, req: Request, check: Callable[[NodeInfo], bool]) -> Callable[[NodeInfo], bool]:
        """`check` with its verdicts remembered per node until the node changes, so repeated
        creates with the same soft hints (compose scale) do not re-check every node."""
        key = req.signature()
        verdicts = self._verdicts.pop(key, None)
        if verdicts is None:
            verdicts = {}
            if len(self._verdicts) >= MEMO_SIGNATURES:
                self._verdicts.pop(next(iter(self._verdicts)))
        self._verdicts[key] = verdicts  # most recently used last

        def remembered(node: NodeInfo) -> bool:
            # Images are often updated in place, so their size is part of the key.
            stamp = (node._version, len(node.images))
            seen = verdicts.get(id(node))
            if seen is not None and seen[0] == stamp:
                return seen[1]
            verdict = check(node)
            verdicts[id(node)] = (stamp, verdict)
            return verdict

        return remembered

    def _select(self, nodes: list[NodeInfo], req: Request, soft: bool) -> NodeInfo:
        candidates = self._filtered(nodes, req, soft)
        return pick(self.strategy, req, candidates, self._overcommit_pct, self._rng)

    def _filtered(self, nodes: list[NodeInfo], req: Request, soft: bool) -> list[NodeInfo]:
        candidates = nodes
        for f in self._filters:
            try:
                candidates = f.apply(req, candidates, soft)
            except FilterError as e:
                if isinstance(f, HealthFilter):
                    raise SchedulingError(str(e)) from None
                raise SchedulingError(self._composite(req, f)) from None
            except ExpressionError as e:
                raise SchedulingError(self._composite(req, f, e)) from None
        return candidates

    def _composite(self, req: Request, failed: Filter, error: Exception | None = None) -> str:
        """Swarm's message: each filter's conditions up to the failing one, one `[...]` line
        each (Go's %v of a string slice)."""
        text = COMPOSITE
        for f in self._filters:
            try:
                conditions = f.describe(req)
            except ExpressionError as e:
                conditions = []
                if f is failed and error is None:
                    error = e
            if conditions:
                text += "\n[" + " ".join(conditions) + "]"
            if f is failed:
                break
        if error is not None:
            text += f"\nerror from {failed.name} filter: {error}"
        return text


def _strategy_only(req: Request) -> bool:
    """True when the port, dependency, affinity, constraint and whitelist filters cannot
    remove any node, so only health, container slots and the strategy decide."""
    return (
        all(p.port is None for p in req.bridge_ports)
        and all(port is None for _, port, _ in req.host_ports)
        and not req.dependencies()
        and not any(req.hints.get(kind) for kind in ("affinity", "constraint", "whitelist"))
    )
