"""The manager's containers (status records, its own placements, creates in flight) with the
lookups every request needs, kept up to date on each change instead of scanned per request:
containers by node, by name and by Swarm ID, and which nodes changed since the scheduler last
looked. At 30,000 containers a scan per create or per name lookup is what made a create cost
O(containers); with these indexes it costs what its own node costs. It also counts each node's
containers by state (`docker info`), so the agents need not write counts into their node
records on every container change.

`statuses`, `placements` and `pending` are dicts that report every assignment and removal to
the index, so no caller can forget to; a Placement or status changed in place is reported with
`ContainerIndex.changed(cid)`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from proto.logical import SWARM_ID_LABEL
from proto.records_pb2 import ContainerStatus

if TYPE_CHECKING:
    from manager.cluster import Placement

K = TypeVar("K")
V = TypeVar("V")
SHORT_ID_LEN = 12


@dataclass(frozen=True, slots=True)
class StateCounts:
    """A node's containers as dockerd's `docker info` counts them: a state other than running
    or paused (created, restarting, exited, dead) counts as stopped."""

    total: int = 0
    running: int = 0
    paused: int = 0

    @property
    def stopped(self) -> int:
        return self.total - self.running - self.paused

    def __add__(self, other: StateCounts) -> StateCounts:
        return StateCounts(
            self.total + other.total, self.running + other.running, self.paused + other.paused
        )


class TrackedDict(dict[K, V], Generic[K, V]):
    """A dict that calls `on_change(key)` after every change to a key."""

    def __init__(self, on_change: Callable[[K], None]) -> None:
        super().__init__()
        self._on_change = on_change

    def __setitem__(self, key: K, value: V) -> None:
        super().__setitem__(key, value)
        self._on_change(key)

    def __delitem__(self, key: K) -> None:
        super().__delitem__(key)
        self._on_change(key)

    def pop(self, key: K, *default: Any) -> Any:
        had = key in self
        value = super().pop(key, *default)
        if had:
            self._on_change(key)
        return value

    def popitem(self) -> tuple[K, V]:
        key, value = super().popitem()
        self._on_change(key)
        return key, value

    def setdefault(self, key: K, default: Any = None) -> Any:
        if key in self:
            return self[key]
        self[key] = default
        return default

    def update(self, *args: Any, **kwargs: Any) -> None:
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def clear(self) -> None:
        keys = list(self)
        super().clear()
        for key in keys:
            self._on_change(key)


def _add(index: dict[str, dict[Any, None]], key: str, member: Any) -> None:
    if key:
        index.setdefault(key, {})[member] = None


def _discard(index: dict[str, dict[Any, None]], key: str, member: Any) -> None:
    members = index.get(key)
    if members is not None:
        members.pop(member, None)
        if not members:
            del index[key]


class ContainerIndex:
    def __init__(self) -> None:
        self.statuses: TrackedDict[str, ContainerStatus] = TrackedDict(self.changed)
        self.placements: TrackedDict[str, Placement] = TrackedDict(self.changed)
        # In-flight creates by token: counted by the scheduler, not yet containers.
        self.pending: TrackedDict[int, Placement] = TrackedDict(self._pending_changed)
        # What each container is indexed under now: (node, names, swarm id).
        self._indexed: dict[str, tuple[str, tuple[str, ...], str]] = {}
        self._by_node: dict[str, dict[str, None]] = {}
        self._by_name: dict[str, dict[str, None]] = {}
        self._by_swarm: dict[str, dict[str, None]] = {}
        self._by_short_swarm: dict[str, dict[str, None]] = {}
        self._pending_indexed: dict[int, str] = {}
        self._pending_by_node: dict[str, dict[int, None]] = {}
        # Each status record's (node, state) as counted, and the counts per node and state.
        self._counted: dict[str, tuple[str, str]] = {}
        self._states: dict[str, dict[str, int]] = {}
        # Nodes whose containers or record changed since `take_changed_nodes` was last called,
        # and the containers that changed since `take_changed_ids`.
        self._changed_nodes: set[str] = set()
        self._changed_ids: set[str] = set()

    # ----------------------------------------------------------------- upkeep
    def changed(self, cid: str) -> None:
        """Re-index `cid` after its status or placement was set, changed in place or dropped."""
        self._changed_ids.add(cid)
        st = self.statuses.get(cid)
        self._count(cid, st)
        placed = self.placements.get(cid)
        new = None
        if st is not None:
            names = (st.name,) if not placed or placed.name in ("", st.name) else None
            if names is None:
                names = tuple(n for n in (st.name, placed.name) if n)  # type: ignore[union-attr]
            new = (st.node_id, names, st.labels.get(SWARM_ID_LABEL, ""))
        elif placed is not None:
            new = (placed.node_id, (placed.name,), placed.labels.get(SWARM_ID_LABEL, ""))
        old = self._indexed.get(cid)
        if old == new:
            if new is not None:
                self._changed_nodes.add(new[0])  # same keys, but what the node counts changed
            return
        if old is not None:
            del self._indexed[cid]
            node, names, swarm_id = old
            _discard(self._by_node, node, cid)
            for name in names:
                _discard(self._by_name, name, cid)
            _discard(self._by_swarm, swarm_id, cid)
            _discard(self._by_short_swarm, swarm_id[:SHORT_ID_LEN], cid)
            self._changed_nodes.add(node)
        if new is None:
            return
        node, names, swarm_id = new
        self._indexed[cid] = new
        _add(self._by_node, node, cid)
        for name in names:
            _add(self._by_name, name, cid)
        _add(self._by_swarm, swarm_id, cid)
        _add(self._by_short_swarm, swarm_id[:SHORT_ID_LEN], cid)
        self._changed_nodes.add(node)

    def _count(self, cid: str, st: ContainerStatus | None) -> None:
        new = (st.node_id, st.state) if st is not None else None
        old = self._counted.get(cid)
        if old == new:
            return
        if old is not None:
            states = self._states[old[0]]
            states[old[1]] -= 1
            if not states[old[1]]:
                del states[old[1]]
                if not states:
                    del self._states[old[0]]
            del self._counted[cid]
        if new is not None:
            states = self._states.setdefault(new[0], {})
            states[new[1]] = states.get(new[1], 0) + 1
            self._counted[cid] = new

    def _pending_changed(self, token: int) -> None:
        old = self._pending_indexed.pop(token, None)
        if old is not None:
            _discard(self._pending_by_node, old, token)
            self._changed_nodes.add(old)
        placed = self.pending.get(token)
        if placed is not None:
            self._pending_indexed[token] = placed.node_id
            _add(self._pending_by_node, placed.node_id, token)
            self._changed_nodes.add(placed.node_id)

    def node_changed(self, node_id: str) -> None:
        """The node's own record changed (the scheduler's view re-reads it)."""
        self._changed_nodes.add(node_id)

    def take_changed_ids(self) -> set[str]:
        """The containers whose status or placement changed since the last call."""
        changed, self._changed_ids = self._changed_ids, set()
        return changed

    def take_changed_nodes(self) -> set[str]:
        """The nodes whose containers changed since the last call (the scheduler's view)."""
        changed, self._changed_nodes = self._changed_nodes, set()
        return changed

    # ----------------------------------------------------------------- lookups
    def ids_on(self, node_id: str) -> Iterable[str]:
        """Containers on the node: its status records', and our creates not yet reported."""
        return tuple(self._by_node.get(node_id, ()))

    def state_counts(self, node_id: str) -> StateCounts:
        """The node's containers that its status records report, by state."""
        states = self._states.get(node_id, {})
        return StateCounts(sum(states.values()), states.get("running", 0), states.get("paused", 0))

    def pending_on(self, node_id: str) -> list[tuple[int, Placement]]:
        return [(t, self.pending[t]) for t in self._pending_by_node.get(node_id, ())]

    def ids_named(self, name: str) -> tuple[str, ...]:
        return tuple(self._by_name.get(name, ()))

    def ids_with_swarm_id(self, swarm_id: str) -> tuple[str, ...]:
        """Containers labelled with exactly this Swarm ID."""
        return tuple(self._by_swarm.get(swarm_id, ()))

    def ids_with_short_swarm_id(self, short: str) -> tuple[str, ...]:
        """Containers whose Swarm ID starts with `short` (Swarm's 12-character form)."""
        return tuple(self._by_short_swarm.get(short, ())) if len(short) == SHORT_ID_LEN else ()
