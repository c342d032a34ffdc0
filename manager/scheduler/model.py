"""What the scheduler sees of the cluster: nodes, the containers on them, and its error type."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, SupportsIndex

NANOS_PER_CPU = 1_000_000_000
# Host IPs that mean "every interface": a binding there clashes with any other IP (Swarm's rule).
ALL_INTERFACES = frozenset({"", "0.0.0.0", "::"})


def cpu_nanos(cpu_shares: int, nano_cpus: int) -> int:
    """CPU reservation in billionths of a CPU.

    Classic Swarm reads `CpuShares` as a number of whole CPUs to reserve; `NanoCpus` (`--cpus`,
    newer than Swarm) is taken literally and wins when both are set.
    """
    if nano_cpus > 0:
        return nano_cpus
    return max(cpu_shares, 0) * NANOS_PER_CPU


@dataclass
class ContainerInfo:
    """A container already placed (or pending) on a node; treat it as immutable once listed."""

    id: str
    name: str
    image: str
    image_id: str
    labels: dict[str, str]
    running: bool
    cpu_shares: int
    nano_cpus: int
    memory: int
    host_ports: list[tuple[str, int, str]]  # (host ip, port, "tcp"/"udp") bound on the node
    network_mode: str = ""


class NodeUsage:
    """Per-node sums the strategies and the port filter need, kept up to date incrementally.

    The caller appends pending containers to `NodeInfo.containers` between decisions; re-summing
    30 containers on 1,000 nodes per decision would blow the latency budget, so the sums follow
    the list and are rebuilt only when it changed other than by appending.
    """

    __slots__ = ("containers", "count", "last", "cpu", "memory", "ports", "_idents", "_labels")

    def __init__(self, containers: list[ContainerInfo]) -> None:
        self.containers = containers
        self.count = 0
        self.last: ContainerInfo | None = None
        self.cpu = 0
        self.memory = 0
        self.ports: dict[tuple[int, str], list[str]] = {}
        self._idents: set[str] | None = None
        self._labels: dict[str, set[str]] = {}
        self.add(containers)

    def add(self, new: list[ContainerInfo]) -> None:
        for c in new:
            self.cpu += cpu_nanos(c.cpu_shares, c.nano_cpus)
            self.memory += max(c.memory, 0)
            for ip, port, proto in c.host_ports:
                self.ports.setdefault((port, proto), []).append(ip)
            if self._idents is not None:
                self._idents.add(c.id)
                self._idents.add(c.name.lstrip("/"))
            for key, values in self._labels.items():
                values.add(c.labels.get(key, ""))
        self.count += len(new)
        if new:
            self.last = new[-1]

    def label_values(self, key: str) -> set[str]:
        """Distinct values of one container label across the node ("" where missing)."""
        values = self._labels.get(key)
        if values is None:
            values = {c.labels.get(key, "") for c in self.containers}
            self._labels[key] = values
        return values

    def idents(self) -> set[str]:
        """Full IDs and names (without `/`) of every container: what `affinity:container` sees."""
        if self._idents is None:
            self._idents = {c.id for c in self.containers}
            self._idents.update(c.name.lstrip("/") for c in self.containers)
        return self._idents


# Versions come from one global clock, so a version is never reused by another node object.
_clock = itertools.count(1)


class ChangeLog:
    """Nodes in the order they changed, so an index can refresh exactly the nodes touched
    since it last looked instead of checking all of them."""

    KEEP = 100_000

    def __init__(self) -> None:
        self.base = 0  # absolute position of entries[0]
        self.entries: list[NodeInfo] = []

    def record(self, node: NodeInfo) -> None:
        self.entries.append(node)
        if len(self.entries) > self.KEEP:
            drop = self.KEEP // 2
            del self.entries[:drop]
            self.base += drop

    def end(self) -> int:
        return self.base + len(self.entries)

    def since(self, position: int) -> list[NodeInfo] | None:
        """Nodes changed since `position` (repeats possible); None if already forgotten."""
        if position < self.base:
            return None
        return self.entries[position - self.base :]


CHANGES = ChangeLog()


class ContainerList(list):  # type: ignore[type-arg]
    """A node's container list that stamps the node with a new version on every mutation,
    so the scheduler's index refreshes only nodes that changed."""

    __slots__ = ("_node",)

    def _bump(self) -> None:
        node = getattr(self, "_node", None)
        if node is not None:
            node.touch(containers_changed=False)

    def append(self, item: Any) -> None:
        super().append(item)
        self._bump()

    def extend(self, items: Iterable[Any]) -> None:
        super().extend(items)
        self._bump()

    def insert(self, index: SupportsIndex, item: Any) -> None:
        super().insert(index, item)
        self._bump()

    def remove(self, item: Any) -> None:
        super().remove(item)
        self._bump()

    def pop(self, index: SupportsIndex = -1) -> Any:
        item = super().pop(index)
        self._bump()
        return item

    def clear(self) -> None:
        super().clear()
        self._bump()

    def sort(self, *args: Any, **kwargs: Any) -> None:
        super().sort(*args, **kwargs)
        self._bump()

    def reverse(self) -> None:
        super().reverse()
        self._bump()

    def __setitem__(self, index: Any, value: Any) -> None:
        super().__setitem__(index, value)
        self._bump()

    def __delitem__(self, index: Any) -> None:
        super().__delitem__(index)
        self._bump()

    def __iadd__(self, items: Iterable[Any]) -> ContainerList:  # type: ignore[override]
        super().__iadd__(items)
        self._bump()
        return self

    def __imul__(self, n: SupportsIndex) -> ContainerList:  # type: ignore[override]
        super().__imul__(n)
        self._bump()
        return self


@dataclass
class NodeInfo:
    """One node as the scheduler sees it.

    `containers` is copied into a ContainerList: mutate `node.containers` (append, remove, ...),
    not the list passed in. Assigning any attribute or mutating `node.containers` is noticed;
    after changing something in place (a label dict, a listed ContainerInfo) call `touch()`.
    """

    id: str
    name: str
    addr: str
    labels: dict[str, str]
    healthy: bool
    ncpu: int
    memory: int
    kernel_version: str
    operating_system: str
    os_type: str
    storage_driver: str
    images: set[str]  # image ids and repo:tag names present on the node
    containers: list[ContainerInfo]
    _usage: NodeUsage | None = field(default=None, init=False, repr=False, compare=False)
    _images_seen: set[str] | None = field(default=None, init=False, repr=False, compare=False)
    _images_len: int = field(default=-1, init=False, repr=False, compare=False)
    _image_names: set[str] = field(default_factory=set, init=False, repr=False, compare=False)
    _version: int = field(default=0, init=False, repr=False, compare=False)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "containers" and not (
            isinstance(value, ContainerList) and getattr(value, "_node", None) is self
        ):
            value = ContainerList(value)
            value._node = self
        object.__setattr__(self, name, value)
        if name[0] != "_":
            self.touch(containers_changed=name == "containers")

    def __post_init__(self) -> None:
        self.touch()  # a version no other node object ever had

    def touch(self, containers_changed: bool = True) -> None:
        """Mark the node changed (call after in-place edits the node cannot see)."""
        object.__setattr__(self, "_version", next(_clock))
        CHANGES.record(self)
        if containers_changed:
            object.__setattr__(self, "_usage", None)

    def image_names(self) -> set[str]:
        """Image IDs, repo:tags and bare repositories: what `affinity:image` matches."""
        images = self.images
        if self._images_seen is not images or self._images_len != len(images):
            self._image_names = image_names(images)
            self._images_seen = images
            self._images_len = len(images)
        return self._image_names

    def usage(self) -> NodeUsage:
        """Current reservation sums (all containers, any state, pending included)."""
        u = self._usage
        cs = self.containers
        n = len(cs)
        if u is not None and u.containers is cs:
            if u.count == n and (n == 0 or cs[-1] is u.last):
                return u
            if n > u.count and (u.count == 0 or cs[u.count - 1] is u.last):
                u.add(cs[u.count :])
                return u
        u = NodeUsage(cs)
        self._usage = u
        return u

    def invalidate(self) -> None:
        """Same as touch()."""
        self.touch()

    def reserved_cpus(self) -> float:
        """Reserved CPUs, for `docker info`'s `└ Reserved CPUs` row."""
        return self.usage().cpu / NANOS_PER_CPU

    def reserved_memory(self) -> int:
        """Reserved memory in bytes, for `docker info`'s `└ Reserved Memory` row."""
        return self.usage().memory


def image_names(images: set[str]) -> set[str]:
    """Add each tag's repository alone, so `redis` matches `redis:latest` (Swarm's rule)."""
    names = set(images)
    for ref in images:
        if ref.startswith("sha256:"):
            continue
        repo = ref.split("@", 1)[0]
        colon = repo.rfind(":")
        if colon > repo.rfind("/"):
            repo = repo[:colon]
        names.add(repo)
    return names


class SchedulingError(Exception):
    """A create that cannot be placed; classic Swarm answers all of these with HTTP 500."""

    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
